"""SAM: sharpness-aware minimisation, an adversarial ascent step before each descent step
(Foret et al. 2021).

SAM takes two gradients per outer step. In the default transparent mode each ``update``
call is one of them, so the caller's loop sees the adversarial parameters; the training
engine would report their losses and evaluate them every other step, so ``sam`` is a
factory here, not a registry entry. The opaque mode needs ``grad_fn`` in ``update``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax


class SAMState(NamedTuple):
    """Where SAM is in its cycle and its two optimizers' states.

    Attributes:
      steps_since_sync: adversarial steps since the last outer update (0 … sync_period − 1).
      opt_state: the outer optimizer's state.
      adv_state: the adversarial optimizer's state.
      cache: the outer parameters ``w`` during the adversarial steps (None when opaque).
    """

    steps_since_sync: jax.Array
    opt_state: optax.OptState
    adv_state: optax.OptState
    cache: optax.Params | None


def normalize() -> optax.GradientTransformation:
    """The gradient divided by its global norm: ``u = g / ‖g‖₂`` (over the whole tree)."""

    def update_fn(updates, state, params=None):
        del params
        norm = optax.tree.norm(updates)
        return jax.tree.map(lambda g: g / norm, updates), state

    return optax.GradientTransformation(optax.init_empty_state, update_fn)


def sam(
    optimizer: optax.GradientTransformation,
    adv_optimizer: optax.GradientTransformation,
    sync_period: int = 2,
    reset_state: bool = True,
    opaque_mode: bool = False,
    batch_axis_name: str | None = None,
) -> optax.GradientTransformationExtraArgs:
    """SAM around an outer ``optimizer`` and an adversarial ``adv_optimizer``.

    With the simple SAM of the paper, ``adv_optimizer = chain(normalize(), sgd(ρ))`` and
    ``optimizer = sgd(η)``, sync period 2, each outer step is::

        ε = ρ ∇L(w) / ‖∇L(w)‖ ;   w ← w − η ∇L(w + ε)

    Transparent mode (default): call ``update`` once per gradient. Calls 1 … k − 1 of each
    period of ``k = sync_period`` are adversarial: ``u = −adv_optimizer(g)`` (an ascent
    step; ``w`` is cached on the first); call ``k`` applies ``optimizer`` to its gradient at
    the cached ``w``, and the update takes the parameters back to ``w`` plus that step.
    Opaque mode: one call does the whole period, calling ``grad_fn(params, i)`` for the
    ``k − 1`` adversarial gradients (``update(g, state, params, grad_fn=...)``), so the
    caller only ever sees ``w``. ``reset_state`` re-initialises the adversarial state after
    each outer step. Equal to ``optax.contrib.sam`` (Optax 0.2.8) update for update.

    Args:
      optimizer: the outer (descent) optimizer.
      adv_optimizer: the adversarial optimizer (its update is negated: an ascent).
      sync_period: k ≥ 1, gradients per outer step.
      reset_state: re-initialise ``adv_optimizer``'s state after each outer step.
      opaque_mode: run the adversarial steps inside one ``update`` (needs ``grad_fn``).
      batch_axis_name: opaque mode under ``pmap``: average adversarial gradients over it.

    Returns:
      An ``optax.GradientTransformationExtraArgs`` with state ``SAMState``.

    Reference:
      Foret et al., "Sharpness-Aware Minimization for Efficiently Improving
      Generalization", ICLR 2021.
    """
    if not isinstance(sync_period, int) or isinstance(sync_period, bool) or sync_period < 1:
        raise ValueError(f"sync_period={sync_period!r} is invalid: it must be an integer >= 1.")

    def init_fn(params):
        return SAMState(
            steps_since_sync=jnp.zeros([], jnp.int32),
            opt_state=optimizer.init(params),
            adv_state=adv_optimizer.init(params),
            cache=None if opaque_mode else params,
        )

    def pick(condition, if_true, if_false):
        return jax.tree.map(lambda a, b: condition * a + (1 - condition) * b, if_true, if_false)

    def transparent_update(updates, state, params, *, grad_fn=None):
        del grad_fn
        first = state.steps_since_sync == 0
        last = state.steps_since_sync == sync_period - 1
        ascent, adv_state = adv_optimizer.update(updates, state.adv_state, params)
        ascent = jax.tree.map(lambda x: -x, ascent)
        descent, opt_state = optimizer.update(updates, state.opt_state, state.cache)
        descent = jax.tree.map(lambda w, p, u: w - p + u, state.cache, params, descent)
        if reset_state:
            adv_state = pick(last, adv_optimizer.init(params), adv_state)
        else:
            adv_state = pick(last, state.adv_state, adv_state)
        return pick(last, descent, ascent), SAMState(
            steps_since_sync=(state.steps_since_sync + 1) % sync_period,
            opt_state=pick(last, opt_state, state.opt_state),
            adv_state=adv_state,
            cache=pick(first, params, state.cache),
        )

    def opaque_update(updates, state, params, *, grad_fn: Callable | None = None):
        if grad_fn is None:
            raise ValueError(
                "sam(opaque_mode=True) needs grad_fn in update: "
                "tx.update(g, state, params, grad_fn=lambda p, i: grad(p))."
            )
        adv_params, adv_updates, adv_state = params, updates, state.adv_state
        for i in range(sync_period - 1):
            adv_updates, adv_state = adv_optimizer.update(adv_updates, adv_state, adv_params)
            adv_updates = jax.tree.map(lambda x: -x, adv_updates)
            adv_params = optax.apply_updates(adv_params, adv_updates)
            adv_updates = grad_fn(adv_params, i)
            if batch_axis_name is not None:
                adv_updates = jax.lax.pmean(adv_updates, axis_name=batch_axis_name)
        if reset_state:
            adv_state = adv_optimizer.init(params)
        updates, opt_state = optimizer.update(adv_updates, state.opt_state, params)
        return updates, SAMState(jnp.zeros([], jnp.int32), opt_state, adv_state, None)

    return optax.GradientTransformationExtraArgs(
        init_fn, opaque_update if opaque_mode else transparent_update
    )
