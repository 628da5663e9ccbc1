"""Muon: momentum orthogonalised by Newton–Schulz on matrices, AdamW on the other leaves."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from optlab.optimizers import _checks
from optlab.optimizers.adam import _first_moment_hat, adamw

# Jordan's quintic (a, b, c), and Ahn et al.'s (Dion) five per-step triples.
NEWTON_SCHULZ_PRESETS = {
    "standard": (3.4445, -4.7750, 2.0315),
    "dion": (
        (4.0848, -6.8946, 2.9270),
        (3.9505, -6.3029, 2.6377),
        (3.7418, -5.5913, 2.3037),
        (2.8769, -3.1427, 1.2046),
        (2.8366, -3.0525, 1.2012),
    ),
}
PRECONDITIONINGS = ("frobenius", "spectral", "aol", "schatten")


class ScaleByMuonState(NamedTuple):
    """Step count ``t`` and the momentum ``m`` of the matrix leaves."""

    count: jax.Array
    mu: optax.Updates


def newton_schulz_coefficients(ns_coeffs, ns_steps: int) -> np.ndarray:
    """``ns_coeffs`` as an array: one triple ``(a, b, c)`` (used ``ns_steps`` times) or a
    table of one triple per iteration (as many iterations as rows, at most ``ns_steps``,
    as in Optax); a string names a preset of ``NEWTON_SCHULZ_PRESETS``.

    Raises:
      ValueError: an unknown preset, a table not of shape ``(3,)`` or ``(n, 3)``, more
        triples than ``ns_steps``, or ``ns_steps`` not a positive integer (a traced
        ``ns_steps``, as ``optax.inject_hyperparams`` passes it, is not checked).
    """
    if not isinstance(ns_steps, jax.core.Tracer):  # traced by inject_hyperparams' update
        steps = np.asarray(ns_steps)
        if isinstance(ns_steps, bool) or steps.dtype.kind not in "iu" or steps.ndim or steps < 1:
            raise ValueError(f"ns_steps={ns_steps!r} is invalid: ns_steps must be an integer >= 1.")
    if isinstance(ns_coeffs, str):
        if ns_coeffs not in NEWTON_SCHULZ_PRESETS:
            raise ValueError(
                f"ns_coeffs={ns_coeffs!r} is invalid: presets are "
                f"{', '.join(NEWTON_SCHULZ_PRESETS)}."
            )
        ns_coeffs = NEWTON_SCHULZ_PRESETS[ns_coeffs]
    table = np.asarray(ns_coeffs, dtype=np.float64)
    if table.ndim not in (1, 2) or table.shape[-1] != 3:
        raise ValueError(
            f"ns_coeffs={ns_coeffs!r} is invalid: it must have shape (3,) or (n, 3), "
            f"got {table.shape}."
        )
    if table.ndim == 2 and not isinstance(ns_steps, jax.core.Tracer) and table.shape[0] > ns_steps:
        raise ValueError(
            f"ns_coeffs has {table.shape[0]} triples but ns_steps={ns_steps}: "
            "at most one triple per iteration."
        )
    return table


def _quintic(x, a, b, c, gram=None):
    """``a X + (b A + c A²) X`` with ``A = X Xᴴ``."""
    gram = x @ x.T.conj() if gram is None else gram
    return a * x + (b * gram + c * gram @ gram) @ x


def _aol_first(x, a, b, c, eps=1e-8):
    """Boissin et al.'s first step: rows scaled by ``1/√(Σ_j |A_ij|)`` before the quintic."""
    gram = x @ x.T.conj()
    s = jax.lax.rsqrt(jnp.clip(jnp.abs(gram).sum(axis=-1), min=eps))[:, None]
    return _quintic(x * s, a, b, c, gram * s * s.T)


def _schatten_first(x, a, b, c, eps=1e-8):
    """Grishina et al.'s first step: ``X / ‖X Xᵀ‖_F^{1/2}`` before the quintic."""
    gram = x @ x.T
    s = jax.lax.rsqrt(jnp.clip(jnp.linalg.norm(gram, ord="fro"), min=eps))
    return _quintic(x * s, a, b, c, gram * s**2)


def orthogonalize(
    x: jax.Array,
    coefficients: np.ndarray,
    ns_steps: int = 5,
    preconditioning: str = "frobenius",
    eps: float = 1e-8,
) -> jax.Array:
    """Newton–Schulz approximation of the orthogonal factor ``U Vᵀ`` of a matrix ``X = U S Vᵀ``.

    With ``X`` transposed to be wide (rows ≤ columns) and, per ``preconditioning``,
    ``X ← X / (‖X‖_F + ε)`` (frobenius) or ``X / (‖X‖₂ + ε)`` (spectral); then for each
    iteration's ``(a, b, c)`` (``coefficients``: one triple ``ns_steps`` times, or one
    row per iteration)::

        A = X Xᴴ ;   X ← a X + (b A + c A²) X

    "aol" and "schatten" rescale inside the first iteration instead, with Optax's fixed
    1e-8 as their floor whatever ``eps``. The quintic's slope at 0 is ``a``: Jordan's
    coefficients push the singular values into roughly [0.7, 1.2] in 5 steps rather than
    exactly to 1. A table runs in a ``lax.scan``, as Optax's does (so it rounds alike).
    """
    wide = x.shape[0] <= x.shape[1]
    x = x if wide else x.T
    if preconditioning == "frobenius":
        x = x / (jnp.linalg.norm(x, ord="fro") + eps)
    elif preconditioning == "spectral":
        x = x / (jnp.linalg.norm(x, ord=2) + eps)
    first = {"aol": _aol_first, "schatten": _schatten_first}.get(preconditioning)
    coefficients = jnp.asarray(coefficients, x.dtype)

    def iteration(i, x, abc):
        if first is None:
            return _quintic(x, *abc)
        return jax.lax.cond(i == 0, lambda x: first(x, *abc), lambda x: _quintic(x, *abc), x)

    if coefficients.ndim == 1:

        def repeated(i, x):
            return iteration(i, x, coefficients)

        x = jax.lax.fori_loop(0, ns_steps, repeated, x, unroll=True)  # unrolled, as Optax's
    else:

        def body(carry, abc):
            i, x = carry
            return (i + 1, iteration(i, x, abc)), None

        (_, x), _ = jax.lax.scan(body, (jnp.asarray(0, jnp.int32), x), coefficients)
    return x if wide else x.T


def scale_by_muon(
    ns_coeffs: Any = NEWTON_SCHULZ_PRESETS["standard"],
    ns_steps: int = 5,
    beta: float = 0.95,
    eps: float = 1e-8,
    mu_dtype: Any | None = None,
    *,
    nesterov: bool = True,
    adaptive: bool = False,
    preconditioning: str = "frobenius",
    bias_correction: bool = True,
) -> optax.GradientTransformation:
    """Muon's rescaling of matrix leaves (every leaf must be 2-D; ``muon`` routes the rest).

    With gradient ``G`` and step ``t``::

        M ← β M + (1 − β) G
        M̂ = M / (1 − βᵗ)     (nesterov: β M / (1 − βᵗ⁺¹) + (1 − β) G / (1 − βᵗ))
        O = orthogonalize(M̂)                     (Newton–Schulz, see ``orthogonalize``)
        U = O                 (adaptive: U = ⟨M̂, O⟩ O, Bernstein & Newhouse's dual norm)

    Without ``bias_correction`` (Jordan's Muon) the divisions by ``1 − βᵗ`` and
    ``1 − βᵗ⁺¹`` are dropped.

    Args:
      ns_coeffs, ns_steps, beta, eps, mu_dtype, nesterov, adaptive, preconditioning,
        bias_correction: as in ``muon``.

    Returns:
      A transformation with state ``ScaleByMuonState``.
    """
    coefficients = newton_schulz_coefficients(ns_coeffs, ns_steps)
    _checks.decay_rate("beta", beta)
    _checks.non_negative("eps", eps)
    if preconditioning not in PRECONDITIONINGS:
        raise ValueError(
            f"preconditioning={preconditioning!r} is invalid: choose from "
            f"{', '.join(PRECONDITIONINGS)}."
        )
    mu_dtype = None if mu_dtype is None else jax.dtypes.canonicalize_dtype(mu_dtype)

    def init_fn(params):
        return ScaleByMuonState(
            count=jnp.zeros([], jnp.int32), mu=optax.tree.zeros_like(params, dtype=mu_dtype)
        )

    def direction(m_hat):
        if m_hat.ndim != 2:
            raise ValueError(f"scale_by_muon needs 2-D leaves, got shape {m_hat.shape}.")
        o = orthogonalize(m_hat, coefficients, ns_steps, preconditioning, eps)
        return jnp.sum(m_hat.conj() * o) * o if adaptive else o

    def update_fn(updates, state, params=None):
        del params
        m = jax.tree.map(lambda g, m: (1 - beta) * g + beta * m, updates, state.mu)
        t = optax.safe_increment(state.count)
        if bias_correction:
            m_hat = _first_moment_hat(updates, m, beta, t, nesterov)
        elif nesterov:
            m_hat = jax.tree.map(lambda g, m: beta * m + (1 - beta) * g, updates, m)
        else:
            m_hat = m
        u = optax.tree.cast_like(jax.tree.map(direction, m_hat), updates)
        return u, ScaleByMuonState(count=t, mu=optax.tree.cast(m, mu_dtype))

    return optax.GradientTransformation(init_fn, update_fn)


def scale_by_shape(consistent_rms: float | None = None) -> optax.GradientTransformation:
    """Muon's per-matrix scale, from the shape ``(fan_in, fan_out)`` of each 2-D update ``U``::

    U ← √max(1, fan_out / fan_in) · U               (Jordan's width scaling)
    U ← √max(fan_in, fan_out) · ρ · U               (consistent_rms = ρ, Liu et al. 2025)
    """
    _checks.non_negative("consistent_rms", consistent_rms)

    def scale(u):
        fan_in, fan_out = u.shape
        if consistent_rms is None:  # an empty (0, n) matrix: any scale (Optax divides by 0)
            return jnp.sqrt(jnp.maximum(1, fan_out / max(fan_in, 1))) * u
        return jnp.sqrt(jnp.maximum(fan_in, fan_out)) * consistent_rms * u

    def update_fn(updates, state, params=None):
        del params
        return jax.tree.map(scale, updates), state

    return optax.GradientTransformation(optax.init_empty_state, update_fn)


def _labels(params):
    return jax.tree.map(lambda p: "muon" if p.ndim == 2 else "adam", params)


def muon(
    learning_rate: optax.ScalarOrSchedule,
    ns_coeffs: Any = NEWTON_SCHULZ_PRESETS["standard"],
    ns_steps: int = 5,
    beta: float = 0.95,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    weight_decay_mask: Any = None,
    mu_dtype: Any | None = None,
    *,
    nesterov: bool = True,
    adaptive: bool = False,
    preconditioning: str = "frobenius",
    adam_b1: float = 0.9,
    adam_b2: float = 0.999,
    adam_eps_root: float = 0.0,
    adam_weight_decay: float = 0.0,
    adam_learning_rate: optax.ScalarOrSchedule | None = None,
    consistent_rms: float | None = None,
    bias_correction: bool = True,
) -> optax.GradientTransformation:
    """Muon: the momentum of each weight matrix, orthogonalised, with AdamW for the rest.

    With learning rate ``η``, weight decay ``λ``, gradient ``G`` of a 2-D leaf
    ``W ∈ ℝ^{fan_in × fan_out}`` and step ``t``::

        M ← β M + (1 − β) G
        M̂ = β M / (1 − βᵗ⁺¹) + (1 − β) G / (1 − βᵗ)          (nesterov; else M / (1 − βᵗ))
        O = NS₅(M̂)      (X = M̂ / (‖M̂‖_F + ε); 5 × X ← a X + (b X Xᵀ + c (X Xᵀ)²) X)
        W ← W − η (√max(1, fan_out / fan_in) · O + λ W)

    with ``(a, b, c) = (3.4445, −4.7750, 2.0315)``. Every other leaf (vectors, scalars,
    convolution kernels) follows ``adamw(adam_learning_rate or η, adam_b1, adam_b2, eps,
    adam_eps_root, weight_decay=adam_weight_decay)`` with Nesterov momentum if
    ``nesterov``. Defaults and update equal ``optax.contrib.muon`` (Optax 0.2.8); its
    ``muon_weight_dimension_numbers`` (reshaping higher-rank leaves into matrices) is not
    offered: leaves of other ranks go to AdamW. Jordan's Muon differs from Optax's in
    two places: it does not bias-correct ``M`` and its ε is 1e-7, so it is
    ``muon(η, eps=1e-7, bias_correction=False)`` (its PyTorch weights are ``(fan_out,
    fan_in)``, the transpose of a JAX kernel: the same scale). State per parameter: one
    buffer ``M`` on matrices (AdamW's ``m`` and ``v`` on the other leaves).

    Args:
      learning_rate: η ≥ 0, a float or an Optax schedule.
      ns_coeffs: ``(a, b, c)``, a table of one triple per iteration, or a preset
        ("standard", "dion").
      ns_steps: Newton–Schulz iterations (an integer ≥ 1).
      beta: β in [0, 1).
      eps: ε ≥ 0 of the normalisation, and AdamW's ε.
      weight_decay: λ ≥ 0 on the matrices, multiplied by η (as in PyTorch).
      weight_decay_mask: which matrices to decay (pytree of bools or callable).
      mu_dtype: dtype of the momenta; None keeps the parameter dtype.
      nesterov: Nesterov momentum (Muon's and AdamW's).
      adaptive: scale ``O`` by ``⟨M̂, O⟩`` (Bernstein & Newhouse 2024).
      preconditioning: "frobenius", "spectral", "aol" or "schatten" (``orthogonalize``).
      adam_b1, adam_b2, adam_eps_root, adam_weight_decay: AdamW's β₁, β₂, ε_root, λ.
      adam_learning_rate: AdamW's learning rate; None uses η.
      consistent_rms: ρ: scale ``O`` by ``ρ √max(fan_in, fan_out)`` instead (Liu et al.).
      bias_correction: divide ``M`` by ``1 − βᵗ`` as Optax does (False: Jordan's Muon).

    Returns:
      An ``optax.GradientTransformation``.

    References:
      Jordan, "Muon: An optimizer for hidden layers in neural networks", 2024
      (github.com/KellerJordan/Muon); Liu et al., "Muon is Scalable for LLM Training", 2025.
    """
    _checks.learning_rate(learning_rate)
    _checks.non_negative("weight_decay", weight_decay)
    adam_learning_rate = learning_rate if adam_learning_rate is None else adam_learning_rate
    _checks.learning_rate(adam_learning_rate)
    matrices = optax.chain(
        scale_by_muon(
            ns_coeffs,
            ns_steps,
            beta,
            eps,
            mu_dtype,
            nesterov=nesterov,
            adaptive=adaptive,
            preconditioning=preconditioning,
            bias_correction=bias_correction,
        ),
        scale_by_shape(consistent_rms),
        optax.add_decayed_weights(weight_decay, weight_decay_mask),
        optax.scale_by_learning_rate(learning_rate),
    )
    others = adamw(
        adam_learning_rate,
        adam_b1,
        adam_b2,
        eps,
        adam_eps_root,
        mu_dtype,
        weight_decay=adam_weight_decay,
        nesterov=nesterov,
    )
    return optax.partition({"muon": matrices, "adam": others}, _labels)
