"""Adam and its relatives: AdamW, NAdam(W), AMSGrad, AdaMax(W), RAdam, and the papers' own forms."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from optlab.optimizers import _checks
from optlab.optimizers._common import abs_sq, debias


class ScaleByAdamState(NamedTuple):
    """Step count ``t``, first moment ``m`` and second moment ``v`` (u for AdaMax)."""

    count: jax.Array
    mu: optax.Updates
    nu: optax.Updates


class ScaleByNadamState(NamedTuple):
    """Step count ``t``, the product ``Π_{i≤t} μ_i`` of the momentum schedule, ``m`` and ``v``."""

    count: jax.Array
    mu_product: jax.Array
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
        u = m̂ / (√(v_max + ε_root) + ε)     (0 where the denominator is 0: ε = ε_root = 0
                                              and every past g was 0)

    Args:
      b1, b2, eps, eps_root, mu_dtype, bias_correction_mu, bias_correction_nu: as in
        ``amsgrad``.

    Returns:
      A transformation with state ``ScaleByAmsgradState``.
    """
    _check_moments(b1, b2, eps, eps_root)
    mu_dtype = _dtype(mu_dtype)

    def divide(m, v_max):
        denominator = jnp.sqrt(v_max + eps_root) + eps
        if isinstance(eps, int | float) and eps > 0:
            return m / denominator  # > 0 (the guard below would change XLA's rounding)
        # 0 only if ε = ε_root = 0 and every past g was 0 (so m = 0): step 0, not 0/0.
        return jnp.where(denominator > 0, m / denominator, 0.0)

    def init_fn(params):
        count, mu, nu = _init_moments(params, mu_dtype)
        return ScaleByAmsgradState(count, mu, nu, nu_max=optax.tree.zeros_like(params))

    def update_fn(updates, state, params=None):
        del params
        m, v, t = _update_moments(updates, state, b1, b2)
        m_hat = debias(m, b1, t) if bias_correction_mu else m
        v_hat = debias(v, b2, t) if bias_correction_nu else v
        v_max = jax.tree.map(jnp.maximum, state.nu_max, v_hat)
        u = jax.tree.map(divide, m_hat, v_max)
        count, mu, nu = _new_state(m, v, t, state)
        v_max = optax.tree.cast_like(v_max, state.nu_max)
        return optax.tree.cast_like(u, updates), ScaleByAmsgradState(count, mu, nu, v_max)

    return optax.GradientTransformation(init_fn, update_fn)


def momentum_schedule(b1, momentum_decay, t):
    """Dozat's momentum schedule ``μ_t = β₁ (1 − ½ · 0.96^(t ψ))``, ``ψ = momentum_decay``."""
    return b1 * (1 - 0.5 * 0.96 ** (t * momentum_decay))


def scale_by_nadam_paper(
    b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8, momentum_decay: float = 4e-3
) -> optax.GradientTransformation:
    """NAdam with Dozat's momentum schedule (Dozat 2016, Algorithm 2; PyTorch's ``NAdam``).

    With gradient ``g``, step ``t`` and ``μ_i = β₁ (1 − ½ · 0.96^(i ψ))``::

        m ← β₁ m + (1 − β₁) g ;   v ← β₂ v + (1 − β₂) |g|²
        m̂ = μ_{t+1} m / (1 − Π_{i≤t+1} μ_i) + (1 − μ_t) g / (1 − Π_{i≤t} μ_i)
        v̂ = v / (1 − β₂ᵗ)
        u = m̂ / (√v̂ + ε)

    ``Π_{i≤t} μ_i`` is kept in the state, in float64 where JAX has x64 enabled (else float32).

    Args:
      b1, b2, eps, momentum_decay: as in ``nadam_paper``.

    Returns:
      A transformation with state ``ScaleByNadamState``.
    """
    _check_moments(b1, b2, eps)
    _checks.non_negative("momentum_decay", momentum_decay)

    def init_fn(params):
        count, mu, nu = _init_moments(params)
        product = jnp.ones([], jax.dtypes.canonicalize_dtype(jnp.float64))  # float32 without x64
        return ScaleByNadamState(count, product, mu, nu)

    def update_fn(updates, state, params=None):
        del params
        m, v, t = _update_moments(updates, state, b1, b2)
        step = t.astype(state.mu_product.dtype)
        mu_t = momentum_schedule(b1, momentum_decay, step)
        mu_next = momentum_schedule(b1, momentum_decay, step + 1)
        product = state.mu_product * mu_t
        g_weight = (1 - mu_t) / (1 - product)
        m_weight = mu_next / (1 - product * mu_next)
        u = jax.tree.map(
            lambda g, m, v: (
                (m_weight.astype(m.dtype) * m + g_weight.astype(g.dtype) * g) / (jnp.sqrt(v) + eps)
            ),
            updates,
            m,
            debias(v, b2, t),
        )
        mu, nu = optax.tree.cast_like(m, state.mu), optax.tree.cast_like(v, state.nu)
        return optax.tree.cast_like(u, updates), ScaleByNadamState(t, product, mu, nu)

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

    Defaults equal ``optax.nadam``. Like Optax it uses a constant momentum β₁ where Dozat's
    Algorithm 2 uses the schedule ``μ_t = β₁ (1 − ½ · 0.96^(t ψ))`` and products of the
    ``μ_i`` in its corrections: that form is ``nadam_paper``. State per parameter: ``m``
    and ``v``.

    Args:
      learning_rate: η ≥ 0, a float or an Optax schedule.
      b1, b2, eps, eps_root, mu_dtype: as in ``adam``.

    Returns:
      An ``optax.GradientTransformation``.

    Reference:
      Dozat, "Incorporating Nesterov Momentum into Adam", ICLR workshop 2016.
    """
    return adam(learning_rate, b1, b2, eps, eps_root, mu_dtype, nesterov=True)


def nadam_paper(
    learning_rate: optax.ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    momentum_decay: float = 4e-3,
) -> optax.GradientTransformation:
    """NAdam as in Dozat's Algorithm 2, with its momentum schedule (= ``torch.optim.NAdam``).

    With learning rate ``η``, gradient ``g``, step ``t``, ``ψ = momentum_decay`` and
    ``μ_i = β₁ (1 − ½ · 0.96^(i ψ))``::

        m ← β₁ m + (1 − β₁) g ;   v ← β₂ v + (1 − β₂) |g|²
        m̂ = μ_{t+1} m / (1 − Π_{i≤t+1} μ_i) + (1 − μ_t) g / (1 − Π_{i≤t} μ_i)
        v̂ = v / (1 − β₂ᵗ)
        θ ← θ − η m̂ / (√v̂ + ε)

    Differs from ``nadam`` (Optax's form, constant β₁ in place of ``μ_t`` and ``β₁ᵗ`` in
    place of the products) in the first moment's weights: ``μ_t`` rises from ≈ β₁/2 at the
    first steps towards β₁ (ψ = 4e-3, PyTorch's and Keras's value, takes thousands of
    steps). The running average ``m`` uses the constant β₁, as PyTorch's and Keras's
    implementations do. State per
    parameter: ``m`` and ``v``, plus the scalar ``Π μ_i``.

    Args:
      learning_rate: η ≥ 0, a float or an Optax schedule (PyTorch's default is 2e-3).
      b1: β₁ in [0, 1).
      b2: β₂ in [0, 1).
      eps: ε ≥ 0, outside the root.
      momentum_decay: ψ ≥ 0.

    Returns:
      An ``optax.GradientTransformation``.

    Reference:
      Dozat, "Incorporating Nesterov Momentum into Adam", ICLR workshop 2016.
    """
    _checks.learning_rate(learning_rate)
    return optax.chain(
        scale_by_nadam_paper(b1, b2, eps, momentum_decay),
        optax.scale_by_learning_rate(learning_rate),
    )


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

    Defaults equal ``optax.amsgrad`` (both moments bias-corrected, so ``v_max`` is the max
    of ``v̂``). Reddi et al.'s Algorithm 2 corrects neither and has no ε: that form is
    ``amsgrad_paper``. State per parameter: ``m``, ``v``, ``v_max``.

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


def amsgrad_paper(
    learning_rate: optax.ScalarOrSchedule, b1: float = 0.9, b2: float = 0.999, eps: float = 0.0
) -> optax.GradientTransformation:
    """AMSGrad as in Reddi et al.'s Algorithm 2: no bias correction and no ε.

    With learning rate ``α``, gradient ``g`` and ``v̂₀ = 0``::

        m ← β₁ m + (1 − β₁) g ;   v ← β₂ v + (1 − β₂) |g|²
        v̂ ← max(v̂, v)
        θ ← θ − α m / (√v̂ + ε)       (the paper: ε = 0; a zero step where v̂ = 0,
                                        i.e. where every past g was 0, so m = 0)

    ``amsgrad(α, b1, b2, eps, bias_correction_mu=False, bias_correction_nu=False)``. The
    paper's analysis takes ``α_t = α/√t`` and a decaying β₁ₜ; its experiments, and this
    form, keep β₁ constant (pass a schedule as ``learning_rate`` for ``α_t``). Without the
    corrections the first step is ``α (1 − β₁)/√(1 − β₂) ≈ 3.16 α`` per coordinate
    (``amsgrad``'s is ``α``). State per parameter: ``m``, ``v``, ``v̂``.

    Args:
      learning_rate: α ≥ 0, a float or an Optax schedule.
      b1: β₁ in [0, 1).
      b2: β₂ in [0, 1).
      eps: ε ≥ 0 (0 for the paper).

    Returns:
      An ``optax.GradientTransformation``.

    Reference:
      Reddi, Kale & Kumar, "On the Convergence of Adam and Beyond", ICLR 2018, Algorithm 2.
    """
    return amsgrad(learning_rate, b1, b2, eps, bias_correction_mu=False, bias_correction_nu=False)


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


def nadamw(
    learning_rate: optax.ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype: Any | None = None,
    weight_decay: optax.ScalarOrSchedule = 1e-4,
    mask: Any = None,
    *,
    nesterov: bool = True,
) -> optax.GradientTransformation:
    """NAdamW: NAdam's look-ahead moment with AdamW's decoupled weight decay.

    With learning rate ``η``, weight decay ``λ``, gradient ``g`` and step ``t``::

        m ← β₁ m + (1 − β₁) g ;   v ← β₂ v + (1 − β₂) |g|²
        m̂ = β₁ m / (1 − β₁ᵗ⁺¹) + (1 − β₁) g / (1 − β₁ᵗ) ;   v̂ = v / (1 − β₂ᵗ)
        θ ← θ − η (m̂ / (√(v̂ + ε_root) + ε) + λ θ)

    ``adamw(..., nesterov=True)``; defaults equal ``optax.nadamw`` (λ = 1e-4). State per
    parameter: ``m`` and ``v``.

    Args:
      learning_rate: η ≥ 0, a float or an Optax schedule.
      b1, b2, eps, eps_root, mu_dtype: as in ``adam``.
      weight_decay: λ ≥ 0 (or a schedule).
      mask: which leaves to decay.
      nesterov: False gives ``adamw``.

    Returns:
      An ``optax.GradientTransformation``.

    References:
      Dozat, ICLR workshop 2016; Loshchilov & Hutter, ICLR 2019.
    """
    return adamw(
        learning_rate, b1, b2, eps, eps_root, mu_dtype, weight_decay, mask, nesterov=nesterov
    )


def adamaxw(
    learning_rate: optax.ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: optax.ScalarOrSchedule = 1e-4,
    mask: Any = None,
) -> optax.GradientTransformation:
    """AdaMaxW: AdaMax with AdamW's decoupled weight decay.

    With learning rate ``α``, weight decay ``λ``, gradient ``g`` and step ``t``::

        m ← β₁ m + (1 − β₁) g
        u ← max(β₂ u, |g| + ε)
        θ ← θ − α (m / ((1 − β₁ᵗ) u) + λ θ)

    Defaults equal ``optax.adamaxw`` (λ = 1e-4). State per parameter: ``m`` and ``u``.

    Args:
      learning_rate: α ≥ 0, a float or an Optax schedule.
      b1, b2, eps: as in ``adamax``.
      weight_decay: λ ≥ 0 (or a schedule).
      mask: which leaves to decay.

    Returns:
      An ``optax.GradientTransformation``.

    References:
      Kingma & Ba, ICLR 2015, Sec. 7.1; Loshchilov & Hutter, ICLR 2019.
    """
    _checks.learning_rate(learning_rate)
    _checks.non_negative("weight_decay", weight_decay)
    return optax.chain(
        scale_by_adamax(b1, b2, eps),
        optax.add_decayed_weights(weight_decay, mask),
        optax.scale_by_learning_rate(learning_rate),
    )
