"""Adam and its relatives: AdamW, NAdam, AMSGrad, AdaMax, RAdam and Adam's Sec. 2 form."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from optimizers import _checks
from optimizers._common import abs_sq, debias


class ScaleByAdamState(NamedTuple):
    """Step count ``t``, first moment ``m`` and second moment ``v`` (u for AdaMax)."""

    count: jax.Array
    mu: optax.Updates
    nu: optax.Updates


class ScaleByAmsgradState(NamedTuple):
    """Step count, ``m``, ``v`` and the running maximum ``v_max``."""

    count: jax.Array
    mu: optax.Updates
    nu: optax.Updates
    nu_max: optax.Updates


def _check_moments(b1, b2, eps, eps_root=0.0):
    _checks.decay_rate("b1", b1)
    _checks.decay_rate("b2", b2)
    _checks.non_negative("eps", eps)
    _checks.non_negative("eps_root", eps_root)


def _dtype(dtype):
    return None if dtype is None else jax.dtypes.canonicalize_dtype(dtype)


def _init_moments(params, mu_dtype=None):
    return ScaleByAdamState(
        count=jnp.zeros([], jnp.int32),
        mu=optax.tree.zeros_like(params, dtype=mu_dtype),
        nu=optax.tree.zeros_like(params),
    )


def _update_moments(g, state, b1, b2):
    """``m ← β₁ m + (1 − β₁) g``,  ``v ← β₂ v + (1 − β₂) |g|²``,  ``t ← t + 1``."""
    m = jax.tree.map(lambda g, m: (1 - b1) * g + b1 * m, g, state.mu)
    v = jax.tree.map(lambda g, v: (1 - b2) * abs_sq(g) + b2 * v, g, state.nu)
    return m, v, optax.safe_increment(state.count)


def _first_moment_hat(g, m, b1, t, nesterov):
    """``m̂ = m / (1 − β₁ᵗ)``, or NAdam's ``β₁ m / (1 − β₁ᵗ⁺¹) + (1 − β₁) g / (1 − β₁ᵗ)``."""
    if not nesterov:
        return debias(m, b1, t)
    return jax.tree.map(
        lambda m, g: b1 * m + (1 - b1) * g,
        debias(m, b1, optax.safe_increment(t)),
        debias(g, b1, t),
    )


def _new_state(m, v, t, state):
    mu, nu = optax.tree.cast_like(m, state.mu), optax.tree.cast_like(v, state.nu)
    return ScaleByAdamState(count=t, mu=mu, nu=nu)


def scale_by_adam(
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype: Any | None = None,
    *,
    nesterov: bool = False,
) -> optax.GradientTransformation:
    """Adam's rescaling (Kingma & Ba, Algorithm 1), optionally with Nesterov momentum.

    With gradient ``g`` and step ``t``::

        m ← β₁ m + (1 − β₁) g ;   v ← β₂ v + (1 − β₂) |g|²
        m̂ = m / (1 − β₁ᵗ)     (nesterov: β₁ m / (1 − β₁ᵗ⁺¹) + (1 − β₁) g / (1 − β₁ᵗ))
        v̂ = v / (1 − β₂ᵗ)
        u = m̂ / (√(v̂ + ε_root) + ε)

    Args:
      b1, b2, eps, eps_root, mu_dtype, nesterov: as in ``adam``.

    Returns:
      A transformation with state ``ScaleByAdamState``.
    """
    _check_moments(b1, b2, eps, eps_root)
    mu_dtype = _dtype(mu_dtype)

    def update_fn(updates, state, params=None):
        del params
        m, v, t = _update_moments(updates, state, b1, b2)
        m_hat = _first_moment_hat(updates, m, b1, t, nesterov)
        v_hat = debias(v, b2, t)
        u = jax.tree.map(lambda m, v: m / (jnp.sqrt(v + eps_root) + eps), m_hat, v_hat)
        return optax.tree.cast_like(u, updates), _new_state(m, v, t, state)

    return optax.GradientTransformation(lambda p: _init_moments(p, mu_dtype), update_fn)


def scale_by_adam_efficient(
    b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8
) -> optax.GradientTransformation:
    """Adam's "efficient" ordering (Kingma & Ba, Sec. 2): bias correction folded into the step.

    With gradient ``g`` and step ``t``::

        m ← β₁ m + (1 − β₁) g ;   v ← β₂ v + (1 − β₂) |g|²
        u = [√(1 − β₂ᵗ) / (1 − β₁ᵗ)] · m / (√v + ε̂)

    Equal to Algorithm 1 with ``ε = ε̂ / √(1 − β₂ᵗ)``, so only approximately equal for the
    same ε (the two differ where √v̂ is comparable to ε).

    Args:
      b1, b2, eps: β₁, β₂, ε̂ as in ``adam_efficient``.

    Returns:
      A transformation with state ``ScaleByAdamState``.
    """
    _check_moments(b1, b2, eps)

    def update_fn(updates, state, params=None):
        del params
        m, v, t = _update_moments(updates, state, b1, b2)
        step = jnp.sqrt(1 - b2**t) / (1 - b1**t)
        u = jax.tree.map(lambda m, v: step.astype(m.dtype) * m / (jnp.sqrt(v) + eps), m, v)
        return optax.tree.cast_like(u, updates), _new_state(m, v, t, state)

    return optax.GradientTransformation(_init_moments, update_fn)


def scale_by_amsgrad(
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype: Any | None = None,
    bias_correction_mu: bool = True,
    bias_correction_nu: bool = True,
) -> optax.GradientTransformation:
    """AMSGrad: Adam with a non-decreasing second moment (Reddi et al. 2018).

    With gradient ``g`` and step ``t``::

        m ← β₁ m + (1 − β₁) g ;   v ← β₂ v + (1 − β₂) |g|²
        m̂ = m / (1 − β₁ᵗ) ;  v̂ = v / (1 − β₂ᵗ)   (each only if its bias_correction_* is set)
        v_max ← max(v_max, v̂)
        u = m̂ / (√(v_max + ε_root) + ε)

    Args:
      b1, b2, eps, eps_root, mu_dtype, bias_correction_mu, bias_correction_nu: as in
        ``amsgrad``.

    Returns:
      A transformation with state ``ScaleByAmsgradState``.
    """
    _check_moments(b1, b2, eps, eps_root)
    mu_dtype = _dtype(mu_dtype)

    def init_fn(params):
        count, mu, nu = _init_moments(params, mu_dtype)
        return ScaleByAmsgradState(count, mu, nu, nu_max=optax.tree.zeros_like(params))

    def update_fn(updates, state, params=None):
        del params
        m, v, t = _update_moments(updates, state, b1, b2)
        m_hat = debias(m, b1, t) if bias_correction_mu else m
        v_hat = debias(v, b2, t) if bias_correction_nu else v
        v_max = jax.tree.map(jnp.maximum, state.nu_max, v_hat)
        u = jax.tree.map(lambda m, v: m / (jnp.sqrt(v + eps_root) + eps), m_hat, v_max)
        count, mu, nu = _new_state(m, v, t, state)
        v_max = optax.tree.cast_like(v_max, state.nu_max)
        return optax.tree.cast_like(u, updates), ScaleByAmsgradState(count, mu, nu, v_max)

    return optax.GradientTransformation(init_fn, update_fn)


def scale_by_adamax(
    b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8
) -> optax.GradientTransformation:
    """AdaMax: Adam with the infinity norm (Kingma & Ba, Algorithm 2, plus Optax's ε).

    With gradient ``g`` and step ``t``::

        m ← β₁ m + (1 − β₁) g
        u_∞ ← max(β₂ u_∞, |g| + ε)          (the paper: ε = 0)
        u = m / ((1 − β₁ᵗ) u_∞)             (0 where u_∞ = 0, i.e. all past g were 0)

    Args:
      b1, b2, eps: as in ``adamax``.

    Returns:
      A transformation with state ``ScaleByAdamState`` (``nu`` holds ``u_∞``).
    """
    _check_moments(b1, b2, eps)

    def divide(m, u_inf):
        if isinstance(eps, int | float) and eps > 0:
            return m / u_inf  # u_inf ≥ ε > 0 (the guard below would change XLA's rounding)
        # u_inf = 0 only if every past g was 0 (so m = 0) and ε = 0: step 0, not 0/0.
        return jnp.where(u_inf > 0, m / u_inf, 0.0)

    def update_fn(updates, state, params=None):
        del params
        t = optax.safe_increment(state.count)
        m = jax.tree.map(lambda g, m: (1 - b1) * g + b1 * m, updates, state.mu)
        u_inf = jax.tree.map(lambda g, u: jnp.maximum(jnp.abs(g) + eps, b2 * u), updates, state.nu)
        u = jax.tree.map(divide, debias(m, b1, t), u_inf)
        return optax.tree.cast_like(u, updates), _new_state(m, u_inf, t, state)

    return optax.GradientTransformation(_init_moments, update_fn)


def scale_by_radam(
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    threshold: float = 5.0,
    *,
    nesterov: bool = False,
) -> optax.GradientTransformation:
    """Rectified Adam: plain momentum until the variance of v̂ is tractable (Liu et al. 2020).

    With gradient ``g`` and step ``t``, ``ρ_∞ = 2 / (1 − β₂) − 1``::

        m, v, m̂, v̂ as in Adam
        ρ = ρ_∞ − 2 t β₂ᵗ / (1 − β₂ᵗ)
        r = √[(ρ − 4)(ρ − 2) ρ_∞ / ((ρ_∞ − 4)(ρ_∞ − 2) ρ)]
        u = r m̂ / (√(v̂ + ε_root) + ε)   if ρ ≥ threshold   else   u = m̂

    Args:
      b1, b2, eps, eps_root, threshold, nesterov: as in ``radam``.

    Returns:
      A transformation with state ``ScaleByAdamState``.
    """
    _check_moments(b1, b2, eps, eps_root)
    rho_inf = 2.0 / (1.0 - b2) - 1.0

    def update_fn(updates, state, params=None):
        del params
        m, v, t = _update_moments(updates, state, b1, b2)
        b2t = b2**t
        rho = rho_inf - 2 * t * b2t / (1 - b2t)
        r = jnp.sqrt(
            (rho - 4.0) * (rho - 2.0) * rho_inf / ((rho_inf - 4.0) * (rho_inf - 2.0) * rho)
        )
        m_hat = _first_moment_hat(updates, m, b1, t, nesterov)
        v_hat = debias(v, b2, t)
        u = jax.tree.map(
            lambda m, v: jnp.where(
                rho >= threshold, r.astype(m.dtype) * m / (jnp.sqrt(v + eps_root) + eps), m
            ),
            m_hat,
            v_hat,
        )
        return optax.tree.cast_like(u, updates), _new_state(m, v, t, state)

    return optax.GradientTransformation(_init_moments, update_fn)


def adam(
    learning_rate: optax.ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype: Any | None = None,
    *,
    nesterov: bool = False,
) -> optax.GradientTransformation:
    """Adam: momentum divided by a running RMS, both bias-corrected.

    With learning rate ``η``, gradient ``g`` and step ``t``::

        m ← β₁ m + (1 − β₁) g ;   v ← β₂ v + (1 − β₂) |g|²
        m̂ = m / (1 − β₁ᵗ) ;       v̂ = v / (1 − β₂ᵗ)
        θ ← θ − η m̂ / (√(v̂ + ε_root) + ε)

    Defaults equal ``optax.adam`` and the paper's Algorithm 1 (η = 1e-3, β₁ = 0.9,
    β₂ = 0.999, ε = 1e-8 outside the root, ε_root = 0): with these they are the same
    update. The paper's "efficient" Sec. 2 ordering is ``adam_efficient``. State per
    parameter: two buffers ``m`` (dtype ``mu_dtype`` if given) and ``v``, plus a count.

    Args:
      learning_rate: η ≥ 0, a float or an Optax schedule.
      b1: β₁ in [0, 1).
      b2: β₂ in [0, 1).
      eps: ε ≥ 0, outside the root.
      eps_root: ε_root ≥ 0, inside the root (useful when differentiating through Adam).
      mu_dtype: dtype of ``m``; None keeps the parameter dtype.
      nesterov: use NAdam's look-ahead first moment (see ``nadam``).

    Returns:
      An ``optax.GradientTransformation``.

    Reference:
      Kingma & Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015.
    """
    _checks.learning_rate(learning_rate)
    return optax.chain(
        scale_by_adam(b1, b2, eps, eps_root, mu_dtype, nesterov=nesterov),
        optax.scale_by_learning_rate(learning_rate),
    )


def adam_efficient(
    learning_rate: optax.ScalarOrSchedule = 1e-3,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
) -> optax.GradientTransformation:
    """Adam in the paper's efficient Sec. 2 form.

    With learning rate ``α``, gradient ``g`` and step ``t``::

        m ← β₁ m + (1 − β₁) g ;   v ← β₂ v + (1 − β₂) |g|²
        α_t = α √(1 − β₂ᵗ) / (1 − β₁ᵗ)
        θ ← θ − α_t m / (√v + ε̂)

    Equals Algorithm 1 (``adam``) with ε = ε̂ / √(1 − β₂ᵗ); with the same ε the two differ
    only where √v̂ is comparable to ε. State per parameter: ``m`` and ``v``.

    Args:
      learning_rate: α ≥ 0, a float or an Optax schedule.
      b1: β₁ in [0, 1).
      b2: β₂ in [0, 1).
      eps: ε̂ ≥ 0.

    Returns:
      An ``optax.GradientTransformation``.

    Reference:
      Kingma & Ba, ICLR 2015, Sec. 2 (last paragraph).
    """
    _checks.learning_rate(learning_rate)
    return optax.chain(
        scale_by_adam_efficient(b1, b2, eps), optax.scale_by_learning_rate(learning_rate)
    )


def nadam(
    learning_rate: optax.ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype: Any | None = None,
) -> optax.GradientTransformation:
    """NAdam: Adam with a Nesterov look-ahead first moment (``optax.nadam``).

    With learning rate ``η``, gradient ``g`` and step ``t``::

        m ← β₁ m + (1 − β₁) g ;   v ← β₂ v + (1 − β₂) |g|²
        m̂ = β₁ m / (1 − β₁ᵗ⁺¹) + (1 − β₁) g / (1 − β₁ᵗ) ;   v̂ = v / (1 − β₂ᵗ)
        θ ← θ − η m̂ / (√(v̂ + ε_root) + ε)

    Defaults equal ``optax.nadam``. Like Optax it omits the extra β₂ factor of Dozat's
    Algorithm 2. State per parameter: ``m`` and ``v``.

    Args:
      learning_rate: η ≥ 0, a float or an Optax schedule.
      b1, b2, eps, eps_root, mu_dtype: as in ``adam``.

    Returns:
      An ``optax.GradientTransformation``.

    Reference:
      Dozat, "Incorporating Nesterov Momentum into Adam", ICLR workshop 2016.
    """
    return adam(learning_rate, b1, b2, eps, eps_root, mu_dtype, nesterov=True)


def adamw(
    learning_rate: optax.ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype: Any | None = None,
    weight_decay: optax.ScalarOrSchedule = 1e-4,
    mask: Any = None,
    *,
    nesterov: bool = False,
) -> optax.GradientTransformation:
    """AdamW: Adam with weight decay decoupled from the adaptive rescaling.

    With learning rate ``η``, weight decay ``λ``, gradient ``g`` and step ``t``::

        m, v, m̂, v̂ as in Adam
        θ ← θ − η (m̂ / (√(v̂ + ε_root) + ε) + λ θ)

    Defaults equal ``optax.adamw`` (λ = 1e-4; note PyTorch's default is 1e-2). ``mask``
    selects the decayed leaves (a pytree of bools or a callable). State per parameter:
    ``m`` and ``v``.

    Args:
      learning_rate: η ≥ 0, a float or an Optax schedule.
      b1, b2, eps, eps_root, mu_dtype, nesterov: as in ``adam``.
      weight_decay: λ ≥ 0 (or a schedule).
      mask: which leaves to decay.

    Returns:
      An ``optax.GradientTransformation``.

    Reference:
      Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019.
    """
    _checks.learning_rate(learning_rate)
    _checks.non_negative("weight_decay", weight_decay)
    return optax.chain(
        scale_by_adam(b1, b2, eps, eps_root, mu_dtype, nesterov=nesterov),
        optax.add_decayed_weights(weight_decay, mask),
        optax.scale_by_learning_rate(learning_rate),
    )


def amsgrad(
    learning_rate: optax.ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype: Any | None = None,
    bias_correction_mu: bool = True,
    bias_correction_nu: bool = True,
) -> optax.GradientTransformation:
    """AMSGrad: Adam whose denominator never decreases.

    With learning rate ``η``, gradient ``g`` and step ``t``::

        m, v, m̂, v̂ as in Adam
        v_max ← max(v_max, v̂)
        θ ← θ − η m̂ / (√(v_max + ε_root) + ε)

    Defaults equal ``optax.amsgrad`` (bias-corrected, so ``v_max`` is the max of ``v̂``;
    Reddi et al.'s Algorithm 2 takes the max of the uncorrected ``v``: pass
    ``bias_correction_nu=False``). State per parameter: ``m``, ``v``, ``v_max``.

    Args:
      learning_rate: η ≥ 0, a float or an Optax schedule.
      b1, b2, eps, eps_root, mu_dtype: as in ``adam``.
      bias_correction_mu: divide ``m`` by ``1 − β₁ᵗ``.
      bias_correction_nu: divide ``v`` by ``1 − β₂ᵗ`` before the max.

    Returns:
      An ``optax.GradientTransformation``.

    Reference:
      Reddi, Kale & Kumar, "On the Convergence of Adam and Beyond", ICLR 2018.
    """
    _checks.learning_rate(learning_rate)
    return optax.chain(
        scale_by_amsgrad(b1, b2, eps, eps_root, mu_dtype, bias_correction_mu, bias_correction_nu),
        optax.scale_by_learning_rate(learning_rate),
    )


def adamax(
    learning_rate: optax.ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
) -> optax.GradientTransformation:
    """AdaMax: Adam with an exponentially weighted infinity norm.

    With learning rate ``α``, gradient ``g`` and step ``t``::

        m ← β₁ m + (1 − β₁) g
        u ← max(β₂ u, |g| + ε)
        θ ← θ − (α / (1 − β₁ᵗ)) m / u

    Defaults equal ``optax.adamax``. The paper's Algorithm 2 has no ε
    (``u ← max(β₂ u, |g|)``) and α = 0.002: ``adamax(0.002, eps=0.0)`` or
    ``adamax_paper``. Without ε a coordinate whose gradients have all been 0 would give
    0/0; it gets a zero step instead (Optax gives NaN there; elsewhere the two agree).
    State per parameter: ``m`` and ``u``.

    Args:
      learning_rate: α ≥ 0, a float or an Optax schedule.
      b1: β₁ in [0, 1).
      b2: β₂ in [0, 1).
      eps: ε ≥ 0, added to |g| (0 for the paper).

    Returns:
      An ``optax.GradientTransformation``.

    Reference:
      Kingma & Ba, ICLR 2015, Sec. 7.1 and Algorithm 2.
    """
    _checks.learning_rate(learning_rate)
    return optax.chain(scale_by_adamax(b1, b2, eps), optax.scale_by_learning_rate(learning_rate))


def adamax_paper(learning_rate: optax.ScalarOrSchedule = 0.002, b1: float = 0.9, b2: float = 0.999):
    """AdaMax as in Kingma & Ba's Algorithm 2: ``u ← max(β₂ u, |g|)`` (no ε), α = 0.002."""
    return adamax(learning_rate, b1, b2, eps=0.0)


def radam(
    learning_rate: optax.ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    threshold: float = 5.0,
    *,
    nesterov: bool = False,
) -> optax.GradientTransformation:
    """RAdam: Adam with a warm-up that the variance of the adaptive term dictates.

    With learning rate ``η``, gradient ``g``, step ``t``, ``ρ_∞ = 2 / (1 − β₂) − 1``::

        m, v, m̂, v̂ as in Adam ;   ρ = ρ_∞ − 2 t β₂ᵗ / (1 − β₂ᵗ)
        r = √[(ρ − 4)(ρ − 2) ρ_∞ / ((ρ_∞ − 4)(ρ_∞ − 2) ρ)]
        θ ← θ − η r m̂ / (√(v̂ + ε_root) + ε)    if ρ ≥ threshold,   else   θ ← θ − η m̂

    Defaults equal ``optax.radam`` (threshold 5; the paper uses 4). State per
    parameter: ``m`` and ``v``.

    Args:
      learning_rate: η ≥ 0, a float or an Optax schedule.
      b1, b2, eps, eps_root, nesterov: as in ``adam``.
      threshold: the ρ from which the adaptive step is used.

    Returns:
      An ``optax.GradientTransformation``.

    Reference:
      Liu et al., "On the Variance of the Adaptive Learning Rate and Beyond", ICLR 2020.
    """
    _checks.learning_rate(learning_rate)
    _checks.finite("threshold", threshold)
    return optax.chain(
        scale_by_radam(b1, b2, eps, eps_root, threshold, nesterov=nesterov),
        optax.scale_by_learning_rate(learning_rate),
    )
