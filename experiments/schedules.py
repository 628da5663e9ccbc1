"""Learning-rate schedules, each an Optax schedule ``step -> α_step``.

``step`` counts optimizer updates from 0 (Optax's convention).

* ``constant``:      α_t = α
* ``inverse_sqrt``:  α_t = α / √t, the decay used for logistic regression in Kingma & Ba
  (2015), Sec. 6.1. In the paper, t is the timestep of Algorithm 1 (the update count, the
  same t as in the convergence analysis of Sec. 4), so by default ``t = step + 1``. With
  ``per="epoch"`` the rate is held for an epoch, ``t = step // steps_per_epoch + 1``,
  the reading some reproductions use.
* ``step_decay``:    α_t = α · factor^⌊epoch / every⌋
* ``cosine``:        α_t = α · (a + (1 − a) · ½(1 + cos(π · min(t, T) / T))), T = total steps
* ``exponential``:   α_t = α · rate^(t / steps_per_epoch), a smooth decay by ``rate`` per epoch

Arguments are checked when concrete (a traced base rate, as in population training,
skips the check).
"""

from __future__ import annotations

from collections.abc import Callable

import jax.numpy as jnp
import optax


def _check_positive(name: str, value, *, integer: bool = False):
    if isinstance(value, int | float):
        if integer and (not isinstance(value, int) or isinstance(value, bool)):
            raise ValueError(f"{name} must be an integer, got {value!r}")
        if not value > 0:
            raise ValueError(f"{name} must be positive, got {value!r}")


def constant(learning_rate) -> optax.Schedule:
    """α_t = α."""
    _check_positive("learning_rate", learning_rate)
    return optax.constant_schedule(learning_rate)


def inverse_sqrt(learning_rate, *, steps_per_unit: int = 1) -> optax.Schedule:
    """α_t = α / √t with ``t = step // steps_per_unit + 1`` (Kingma & Ba 2015, Sec. 6.1)."""
    _check_positive("learning_rate", learning_rate)
    _check_positive("steps_per_unit", steps_per_unit, integer=True)

    def schedule(step):
        t = jnp.floor_divide(step, steps_per_unit) + 1
        return learning_rate / jnp.sqrt(t.astype(jnp.float32))

    return schedule


def step_decay(learning_rate, *, every: int, factor: float = 0.1) -> optax.Schedule:
    """α_t = α · factor^⌊t / every⌋ (``every`` in steps)."""
    _check_positive("learning_rate", learning_rate)
    _check_positive("every", every, integer=True)
    if not 0 < factor <= 1:
        raise ValueError(f"factor must be in (0, 1], got {factor!r}")
    return optax.exponential_decay(learning_rate, every, factor, staircase=True)


def cosine(learning_rate, *, total_steps: int, alpha: float = 0.0) -> optax.Schedule:
    """Cosine decay from α to ``alpha · α`` over ``total_steps`` (Loshchilov & Hutter 2017)."""
    _check_positive("learning_rate", learning_rate)
    _check_positive("total_steps", total_steps, integer=True)
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")
    return optax.cosine_decay_schedule(learning_rate, total_steps, alpha)


def exponential(learning_rate, *, rate: float, steps_per_unit: int = 1) -> optax.Schedule:
    """α_t = α · rate^(t / steps_per_unit), a smooth decay."""
    _check_positive("learning_rate", learning_rate)
    _check_positive("steps_per_unit", steps_per_unit, integer=True)
    if not 0 < rate <= 1:
        raise ValueError(f"rate must be in (0, 1], got {rate!r}")
    return optax.exponential_decay(learning_rate, steps_per_unit, rate)


SCHEDULES: dict[str, Callable[..., optax.Schedule]] = {
    "constant": constant,
    "inverse_sqrt": inverse_sqrt,
    "step_decay": step_decay,
    "cosine": cosine,
    "exponential": exponential,
}


def available() -> list[str]:
    return sorted(SCHEDULES)


def check_name(name: str) -> None:
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; valid: {', '.join(available())}")


def build(
    name: str, learning_rate, *, steps_per_epoch: int, total_steps: int, **kwargs
) -> optax.Schedule:
    """A schedule from a spec, with epoch-based arguments converted to steps.

    ``inverse_sqrt(per="step"|"epoch")``, ``step_decay(every_epochs, factor)``,
    ``cosine(alpha)`` over the whole run, ``exponential(rate)`` per epoch.
    """
    check_name(name)
    if name == "inverse_sqrt":
        per = kwargs.pop("per", "step")
        if per not in ("step", "epoch"):
            raise ValueError(f"inverse_sqrt: per must be 'step' or 'epoch', got {per!r}")
        kwargs["steps_per_unit"] = steps_per_epoch if per == "epoch" else 1
    elif name == "step_decay":
        if "every_epochs" not in kwargs:
            raise ValueError("schedule 'step_decay' needs every_epochs (epochs between decays)")
        kwargs["every"] = steps_per_epoch * kwargs.pop("every_epochs")
    elif name == "cosine":
        kwargs["total_steps"] = total_steps
    elif name == "exponential":
        kwargs["steps_per_unit"] = steps_per_epoch
    try:
        return SCHEDULES[name](learning_rate, **kwargs)
    except TypeError as err:
        raise ValueError(f"schedule {name!r}: {err}") from None
