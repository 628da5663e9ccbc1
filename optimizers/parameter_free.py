"""Learning-rate-free methods: DoG, DoWG, COCOB and D-Adaptation (AdamW).

Each estimates its own step size from the distance travelled from ``x₀`` (DoG, DoWG,
D-Adaptation) or from a coin-betting wealth (COCOB); the ``learning_rate`` they take is a
multiplier (a schedule's shape), 1.0 by default. Their scalar state is kept in the lowest
float dtype of the parameters, as in Optax, so that bfloat16 parameters stay bfloat16.
``x₀`` is stored as a copy of the parameters (Optax's state holds the caller's own arrays),
so a step that donates both the parameters and the state does not donate a buffer twice.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from optlab.optimizers import _checks

INIT_STEPS = ("distance", "learning_rate", "heuristic")


class ScaleByDogState(NamedTuple):
    """Step count (Optax keeps a bool "first step" instead), ``x₀``, ``r̄``, ``G = Σ‖g‖²``."""

    count: jax.Array
    init_params: optax.Params
    max_dist: jax.Array
    sum_sq_norm_grads: jax.Array


class ScaleByDowgState(NamedTuple):
    """``x₀``, ``v = Σ r̄² ‖g‖²`` and ``r̄²``."""

    init_params: optax.Params
    weighted_sq_norm_grads: jax.Array
    estim_sq_dist: jax.Array


class ScaleByCocobState(NamedTuple):
    """``x₀``, ``θ = −Σ g``, ``L = max |g|``, ``G = Σ |g|`` and the reward (per coordinate)."""

    init_particles: optax.Params
    cumulative_gradients: optax.Updates
    scale: optax.Updates
    subgradients: optax.Updates
    reward: optax.Updates


class ScaleByDadaptAdamwState(NamedTuple):
    """Adam's ``m`` (scaled by ``d γ``) and ``v``, the weighted sum ``s`` of gradients, ``d``,
    the weighted numerator ``r`` and the step count."""

    exp_avg: optax.Updates
    exp_avg_sq: optax.Updates
    grad_sum: optax.Updates
    estim_lr: jax.Array
    numerator_weighted: jax.Array
    count: jax.Array


def _scalar_dtype(params):
    """The lowest float dtype among the parameters (float32 for an empty tree)."""
    return optax.tree.dtype(params, "lowest")


def _require_params(params):
    if params is None:
        raise ValueError(optax.NO_PARAMS_MSG)


def _distance_from_start(init_params, params, *, squared: bool = False):
    """``‖x − x₀‖`` over the whole tree (``‖x − x₀‖²`` if ``squared``)."""
    return optax.tree.norm(optax.tree.sub(init_params, params), squared=squared)


def _check_init_step(init_step) -> None:
    kind, value = init_step
    if kind not in INIT_STEPS:
        raise ValueError(
            f"init_step={init_step!r} is invalid: its kind must be one of {', '.join(INIT_STEPS)}."
        )
    _checks.non_negative("init_step value", value)


def _decay_then(weight_decay, mask, block, learning_rate):
    """``add_decayed_weights`` (if λ is not None), ``block``, then the learning rate."""
    _checks.learning_rate(learning_rate)
    return optax.chain(
        optax.add_decayed_weights(weight_decay, mask)
        if weight_decay is not None
        else optax.identity(),
        block,
        optax.scale_by_learning_rate(learning_rate),
    )


def scale_by_dog(
    init_step: tuple[str, float] = ("heuristic", 1e-6), eps: float = 1e-8
) -> optax.GradientTransformation:
    """Distance over Gradients: a global step ``r̄ / √G``.

    With gradient ``g`` at ``x`` (whole-tree norms)::

        r̄ ← max(r̄, ‖x − x₀‖) ;   G ← G + ‖g‖²
        η = r̄ / √(G + ε)        (the first step: η₀ where init_step = ("learning_rate", η₀))
        u = η g

    with ``r̄₀ = r_ε`` for ``("distance", r_ε)``, ``α (1 + ‖x₀‖)`` for ``("heuristic", α)``
    and 0 for ``("learning_rate", η₀)``. ``init`` must see the real parameters.

    Args:
      init_step: ``(kind, value)``, kind in ``distance``, ``learning_rate``, ``heuristic``.
      eps: ε ≥ 0 under the root.

    Returns:
      A transformation with state ``ScaleByDogState``.
    """
    _check_init_step(init_step)
    _checks.non_negative("eps", eps)
    kind, value = init_step

    def init_fn(params):
        initial = {"distance": value, "learning_rate": 0.0}.get(kind)
        if kind == "heuristic":
            initial = value * (1 + optax.tree.norm(params))
        dtype = _scalar_dtype(params)
        return ScaleByDogState(
            count=jnp.zeros([], jnp.int32),
            init_params=jax.tree.map(jnp.copy, params),
            max_dist=jnp.asarray(initial, dtype=dtype),
            sum_sq_norm_grads=jnp.asarray(0.0, dtype=dtype),
        )

    def update_fn(updates, state, params=None):
        _require_params(params)
        max_dist = jnp.maximum(state.max_dist, _distance_from_start(state.init_params, params))
        sum_sq = state.sum_sq_norm_grads + optax.tree.norm(updates, squared=True)
        eta = max_dist / jnp.sqrt(sum_sq + eps)
        if kind == "learning_rate":
            eta = jnp.where(state.count == 0, value, eta)
        count = optax.safe_increment(state.count)
        new_state = ScaleByDogState(count, state.init_params, max_dist, sum_sq)
        return optax.tree.scale(eta, updates), new_state

    return optax.GradientTransformation(init_fn, update_fn)


def dog(
    learning_rate: optax.ScalarOrSchedule = 1.0,
    init_step: tuple[str, float] = ("heuristic", 1e-6),
    eps: float = 1e-8,
    weight_decay: float | None = None,
    mask: Any = None,
) -> optax.GradientTransformation:
    """DoG: SGD whose step is the largest distance from ``x₀`` over the root-sum of ‖g‖².

    With multiplier ``c`` (``learning_rate``), weight decay ``λ`` and ``g`` the gradient
    plus ``λ x``::

        r̄ ← max(r̄, ‖x − x₀‖) ;   G ← G + ‖g‖²
        x ← x − c (r̄ / √(G + ε)) g

    Defaults equal ``optax.contrib.dog`` (``r̄₀ = 10⁻⁶ (1 + ‖x₀‖)``). The paper has no ε
    (``η = r̄/√G``); the two differ by ``√(1 + ε/G)``, 1 + 5e-9 at ``G = 1``. The authors
    recommend averaging the iterates. State: ``x₀`` (one buffer per parameter), two scalars
    and a step count (Optax: a bool "first step").

    Args:
      learning_rate: c ≥ 0, multiplies DoG's step (a schedule's shape), default 1.
      init_step: ``(kind, value)``, see ``scale_by_dog``.
      eps: ε ≥ 0 under the root.
      weight_decay: λ ≥ 0 (L2, added to the gradient), or None for none.
      mask: which leaves to decay (pytree of bools or callable).

    Returns:
      An ``optax.GradientTransformation``.

    Reference:
      Ivgi, Hinder & Carmon, "DoG is SGD's Best Friend: A Parameter-Free Dynamic Step
      Size Schedule", ICML 2023.
    """
    _checks.non_negative("weight_decay", weight_decay)
    return _decay_then(weight_decay, mask, scale_by_dog(init_step, eps), learning_rate)


def scale_by_dowg(
    init_estim_sq_dist: float | None = None, eps: float = 1e-4
) -> optax.GradientTransformation:
    """Distance over Weighted Gradients: a global step ``r̄² / √v``.

    With gradient ``g`` at ``x`` (whole-tree norms)::

        r̄² ← max(r̄², ‖x − x₀‖²) ;   v ← v + r̄² ‖g‖²
        u = (r̄² / (√v + ε)) g

    with ``r̄₀² = init_estim_sq_dist``, or ε if it is None.

    Args:
      init_estim_sq_dist: r̄₀² ≥ 0, or None for ε.
      eps: ε ≥ 0.

    Returns:
      A transformation with state ``ScaleByDowgState``.
    """
    _checks.non_negative("init_estim_sq_dist", init_estim_sq_dist)
    _checks.non_negative("eps", eps)

    def init_fn(params):
        dtype = _scalar_dtype(params)
        initial = eps if init_estim_sq_dist is None else init_estim_sq_dist
        return ScaleByDowgState(
            init_params=jax.tree.map(jnp.copy, params),
            weighted_sq_norm_grads=jnp.asarray(0.0, dtype=dtype),
            estim_sq_dist=jnp.asarray(initial, dtype=dtype),
        )

    def update_fn(updates, state, params=None):
        _require_params(params)
        distance = _distance_from_start(state.init_params, params, squared=True)
        sq_dist = jnp.maximum(state.estim_sq_dist, distance)
        v = sq_dist * optax.tree.norm(updates, squared=True) + state.weighted_sq_norm_grads
        eta = sq_dist / (jnp.sqrt(v) + eps)
        new_state = ScaleByDowgState(state.init_params, v, sq_dist)
        return optax.tree.scale(eta, updates), new_state

    return optax.GradientTransformation(init_fn, update_fn)


def dowg(
    learning_rate: optax.ScalarOrSchedule = 1.0,
    init_estim_sq_dist: float | None = None,
    eps: float = 1e-4,
    weight_decay: float | None = None,
    mask: Any = None,
) -> optax.GradientTransformation:
    """DoWG: DoG with gradients weighted by the squared distance in the denominator.

    With multiplier ``c``, weight decay ``λ`` and ``g`` the gradient plus ``λ x``::

        r̄² ← max(r̄², ‖x − x₀‖²) ;   v ← v + r̄² ‖g‖²
        x ← x − c (r̄² / (√v + ε)) g

    Defaults equal ``optax.contrib.dowg`` (``r̄₀² = ε = 10⁻⁴``). The paper's step is
    ``r̄²/√v`` (no ε) with a user-chosen ``r_ε``. State: ``x₀`` (one buffer per parameter)
    and two scalars.

    Args:
      learning_rate: c ≥ 0, multiplies DoWG's step, default 1.
      init_estim_sq_dist: r̄₀² ≥ 0, or None for ε.
      eps: ε ≥ 0.
      weight_decay: λ ≥ 0 (L2, added to the gradient), or None for none.
      mask: which leaves to decay.

    Returns:
      An ``optax.GradientTransformation``.

    Reference:
      Khaled, Mishchenko & Jin, "DoWG Unleashed: An Efficient Universal Parameter-Free
      Gradient Descent Method", NeurIPS 2023.
    """
    _checks.non_negative("weight_decay", weight_decay)
    return _decay_then(weight_decay, mask, scale_by_dowg(init_estim_sq_dist, eps), learning_rate)


def scale_by_cocob(alpha: float = 100.0, eps: float = 1e-8) -> optax.GradientTransformation:
    """COCOB-Backprop's coin betting (Orabona & Tommasi 2017, Algorithm 2), per coordinate.

    With gradient ``g`` at ``x`` (the sign is COCOB's own: the output is the whole step)::

        L ← max(L, |g|) ;   G ← G + |g| ;   R ← max(R − g (x − x₀), 0) ;   θ ← θ − g
        u = x₀ + θ (L + R) / (L max(G + L, α L)) − x

    with ``L₀ = ε`` (the paper: 0) so that a coordinate whose gradients were all 0 stays put.

    Args:
      alpha: α > 0, bounds the bet early on.
      eps: ε ≥ 0, the initial ``L``.

    Returns:
      A transformation with state ``ScaleByCocobState``.
    """
    _checks.non_negative("alpha", alpha)
    _checks.non_negative("eps", eps)

    def init_fn(params):
        return ScaleByCocobState(
            init_particles=jax.tree.map(jnp.copy, params),
            cumulative_gradients=optax.tree.zeros_like(params),
            scale=optax.tree.scale(eps, optax.tree.ones_like(params)),
            subgradients=optax.tree.zeros_like(params),
            reward=optax.tree.zeros_like(params),
        )

    def update_fn(updates, state, params=None):
        _require_params(params)
        x0 = state.init_particles
        big_l = jax.tree.map(lambda big_l, g: jnp.maximum(big_l, jnp.abs(g)), state.scale, updates)
        big_g = jax.tree.map(lambda big_g, g: big_g + jnp.abs(g), state.subgradients, updates)
        reward = jax.tree.map(
            lambda r, g, x, x0: jnp.maximum(r - g * (x - x0), 0), state.reward, updates, params, x0
        )
        theta = jax.tree.map(lambda theta, g: theta - g, state.cumulative_gradients, updates)
        u = jax.tree.map(
            lambda x, x0, theta, big_l, big_g, r: (
                -x
                + (x0 + theta / (big_l * jnp.maximum(big_g + big_l, alpha * big_l)) * (big_l + r))
            ),
            params,
            x0,
            theta,
            big_l,
            big_g,
            reward,
        )
        return u, ScaleByCocobState(x0, theta, big_l, big_g, reward)

    return optax.GradientTransformation(init_fn, update_fn)


def cocob(
    learning_rate: optax.ScalarOrSchedule = 1.0,
    alpha: float = 100.0,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    mask: Any = None,
) -> optax.GradientTransformation:
    """COCOB-Backprop: each coordinate bets a fraction of its wealth; no step size at all.

    With multiplier ``c``, weight decay ``λ`` and ``g = c (∇f(x) + λ x)``, per coordinate::

        L ← max(L, |g|) ;   G ← G + |g| ;   R ← max(R − g (x − x₀), 0) ;   θ ← θ − g
        x ← x₀ + θ (L + R) / (L max(G + L, α L))

    Defaults equal ``optax.contrib.cocob`` (α = 100, ``L₀ = ε = 1e-8``; the paper's
    ``L₀ = 0``, which is the same as soon as some ``|g| ≥ ε``). ``learning_rate`` scales the
    gradient, not the step. State per parameter: ``x₀``, ``θ``, ``L``, ``G``, ``R``.

    Args:
      learning_rate: c ≥ 0, multiplies the gradient, default 1.
      alpha: α > 0.
      eps: ε ≥ 0, the initial ``L``.
      weight_decay: λ ≥ 0 (L2, added to the gradient).
      mask: which leaves to decay.

    Returns:
      An ``optax.GradientTransformation``.

    Reference:
      Orabona & Tommasi, "Training Deep Networks without Learning Rates Through Coin
      Betting", NeurIPS 2017, Algorithm 2.
    """
    _checks.learning_rate(learning_rate)
    _checks.non_negative("weight_decay", weight_decay)
    return optax.chain(
        optax.add_decayed_weights(weight_decay, mask),
        optax.scale_by_learning_rate(learning_rate, flip_sign=False),
        scale_by_cocob(alpha, eps),
    )


def dadapt_adamw(
    learning_rate: optax.ScalarOrSchedule = 1.0,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    estim_lr0: float = 1e-6,
    weight_decay: float = 0.0,
) -> optax.GradientTransformation:
    """D-Adaptation for AdamW: Adam whose step ``d`` is a growing lower bound on ``‖x₀ − x*‖∞``.

    With schedule ``γ_k`` (``learning_rate``), step ``k = 1, 2, ...``, gradient ``g`` and
    ``β̃ = √β₂``, all sums over every coordinate of the tree::

        δ = d γ_k √(1 − β₂ᵏ) / (1 − β₁ᵏ)
        r ← β̃ r + (1 − β̃) δ ⟨g, s / (√v + ε)⟩          (s and v before this step)
        m ← β₁ m + (1 − β₁) δ g ;   v ← β₂ v + (1 − β₂) g²
        s ← β̃ s + (1 − β̃) δ g
        d ← max(d, r / ((1 − β̃) ‖s‖₁))      (d unchanged while ‖s‖₁ = 0)
        x ← x − λ δ x − m / (√v + ε)

    Defaults equal ``optax.contrib.dadapt_adamw`` (``d₀ = 1e-6``, Adam's bias correction
    folded into δ). The step uses ``d`` from before the update. While every gradient has
    been 0, ``‖s‖₁ = 0`` and the estimate is 0/0: ``d`` is kept (Optax's becomes NaN, and
    so does every later step; elsewhere the two agree). State per parameter:
    ``m``, ``v``, ``s``; and the scalars ``d``, ``r``.

    Args:
      learning_rate: γ ≥ 0, a schedule's shape around 1 (the recommended one: linear
        decay to 0 after a warm-up), default 1.
      betas: (β₁, β₂), each in [0, 1).
      eps: ε ≥ 0.
      estim_lr0: d₀ ≥ 0, the initial under-estimate of the distance.
      weight_decay: λ ≥ 0, decoupled and multiplied by δ.

    Returns:
      An ``optax.GradientTransformation``.

    Reference:
      Defazio & Mishchenko, "Learning-Rate-Free Learning by D-Adaptation", ICML 2023.
    """
    _checks.learning_rate(learning_rate)
    b1, b2 = betas
    _checks.decay_rate("b1 (betas[0])", b1)
    _checks.decay_rate("b2 (betas[1])", b2)
    _checks.non_negative("eps", eps)
    _checks.non_negative("estim_lr0", estim_lr0)
    _checks.non_negative("weight_decay", weight_decay)

    def init_fn(params):
        dtype = _scalar_dtype(params)
        return ScaleByDadaptAdamwState(
            exp_avg=optax.tree.zeros_like(params),
            exp_avg_sq=optax.tree.zeros_like(params),
            grad_sum=optax.tree.zeros_like(params),
            estim_lr=jnp.asarray(estim_lr0, dtype=dtype),
            numerator_weighted=jnp.zeros([], dtype=dtype),
            count=jnp.zeros([], jnp.int32),
        )

    def update_fn(updates, state, params=None):
        _require_params(params)
        sb2 = b2**0.5
        gamma = learning_rate(state.count) if callable(learning_rate) else learning_rate
        k = optax.safe_increment(state.count)
        correction = ((1 - b2**k) ** 0.5) / (1 - b1**k)
        delta = (state.estim_lr * gamma * correction).astype(state.numerator_weighted.dtype)
        s_weighted = jax.tree.map(
            lambda s, v: s / (jnp.sqrt(v) + eps), state.grad_sum, state.exp_avg_sq
        )
        numerator = optax.tree.vdot(updates, s_weighted)
        m = jax.tree.map(lambda m, g: b1 * m + (1 - b1) * delta * g, state.exp_avg, updates)
        v = jax.tree.map(lambda v, g: b2 * v + (1 - b2) * g * g, state.exp_avg_sq, updates)
        s = jax.tree.map(lambda s, g: sb2 * s + (1 - sb2) * delta * g, state.grad_sum, updates)
        s_l1 = optax.tree.sum(jax.tree.map(jnp.abs, s))
        r = sb2 * state.numerator_weighted + (1 - sb2) * delta * numerator
        # ‖s‖₁ = 0 (every gradient so far 0): no estimate, d stays (Optax's 0/0 gives d = NaN).
        d_hat = jnp.where(s_l1 > 0, r / ((1 - sb2) * s_l1), state.estim_lr)
        d = jnp.maximum(state.estim_lr, d_hat)
        u = jax.tree.map(
            lambda m, v, x: -weight_decay * delta * x - m / (jnp.sqrt(v) + eps), m, v, params
        )
        return u, ScaleByDadaptAdamwState(m, v, s, d, r, k)

    return optax.GradientTransformationExtraArgs(init_fn, _ignore_extra_args(update_fn))


def _ignore_extra_args(update_fn):
    """``update_fn`` accepting (and ignoring) Optax's extra keyword arguments."""

    def update(updates, state, params=None, **extra_args):
        del extra_args
        return update_fn(updates, state, params)

    return update
