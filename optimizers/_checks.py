"""Hyperparameter validation at factory-call time.

Concrete numbers (Python scalars, NumPy or concrete JAX arrays) are checked when a factory
is called, so a typo fails at once with a message naming the argument, the value and what
is valid. Traced values (inside ``jit``, ``vmap`` or ``optax.inject_hyperparams``' update)
and schedules (callables) are not checked: their values are unknown at trace time.
"""

from __future__ import annotations

import math

import jax
import numpy as np


def _concrete_values(name: str, value) -> np.ndarray | None:
    """The value as a float array, or None when it is traced, a schedule or None.

    Raises:
      ValueError: ``value`` is not a number (a string, a bool, an object), naming ``name``.
    """
    if value is None or callable(value) or isinstance(value, jax.core.Tracer):
        return None
    try:
        kind = np.asarray(value).dtype.kind
    except (TypeError, jax.errors.ConcretizationTypeError):
        return None
    if kind not in "iuf":
        raise ValueError(
            f"{name}={value!r} is invalid: {name} must be a number (or a schedule), "
            f"got {type(value).__name__}."
        )
    return np.asarray(value, dtype=np.float64)


def _check(name: str, value, ok, valid: str) -> None:
    values = _concrete_values(name, value)
    if values is None:
        return
    if values.size and not all(ok(float(v)) for v in values.ravel()):
        raise ValueError(f"{name}={value!r} is invalid: {name} must be {valid}.")


def non_negative(name: str, value) -> None:
    """Raise ValueError unless ``value`` ≥ 0 (learning rates, ε, weight decay, ...)."""
    _check(name, value, lambda v: math.isfinite(v) and v >= 0.0, "a finite number >= 0")


def positive(name: str, value) -> None:
    """Raise ValueError unless ``value`` > 0 and finite (a scale that is divided by)."""
    _check(name, value, lambda v: math.isfinite(v) and v > 0.0, "a finite number > 0")


def decay_rate(name: str, value) -> None:
    """Raise ValueError unless ``0 ≤ value < 1`` (β, ρ, momentum, decay)."""
    _check(name, value, lambda v: 0.0 <= v < 1.0, "in [0, 1)")


def finite(name: str, value) -> None:
    """Raise ValueError unless ``value`` is a finite number."""
    _check(name, value, math.isfinite, "a finite number")


def learning_rate(value) -> None:
    """Raise ValueError for a negative learning rate or None; schedules pass unchecked."""
    if value is None:
        raise ValueError(
            "learning_rate=None is invalid: pass a number or an Optax schedule "
            "(Optax's adadelta treats None as no scaling, which climbs the gradient)."
        )
    non_negative("learning_rate", value)


def unit_interval(name: str, value) -> None:
    """Raise ValueError unless ``0 ≤ value ≤ 1`` (a decay that may be 1: SM3's β₂)."""
    _check(name, value, lambda v: 0.0 <= v <= 1.0, "in [0, 1]")
