"""Checks of the continual configs' fields (:class:`~.loop.LoopConfig`,
:class:`~.study.StudyConfig`): each refusal is an :class:`InvalidOption` that names the field,
so that the command line can name its flag instead."""

from __future__ import annotations

import math
import numbers


class InvalidOption(ValueError):
    """``field`` cannot take ``value``: it must be ``requirement``."""

    def __init__(self, field: str, requirement: str, value):
        self.field, self.requirement, self.value = field, requirement, value
        super().__init__(self.named(field))

    def named(self, name: str) -> str:
        return f"{name} must be {self.requirement}, got {self.value!r}"


def is_integer(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def count(field: str, value, minimum: int = 1) -> None:
    """``value`` is an integer ≥ ``minimum``."""
    if not is_integer(value) or value < minimum:
        kind = "a positive integer" if minimum == 1 else f"an integer ≥ {minimum}"
        raise InvalidOption(field, kind, value)


def counts(field: str, values, minimum: int = 1, *, allow_empty: bool = False) -> None:
    """``values`` is a sequence of integers ≥ ``minimum`` (non-empty unless ``allow_empty``)."""
    bad = (not values and not allow_empty) or not all(
        is_integer(v) and v >= minimum for v in values
    )
    if bad:
        kind = "positive integers" if minimum == 1 else f"integers ≥ {minimum}"
        raise InvalidOption(field, ("" if allow_empty else "a non-empty list of ") + kind, values)


def fraction(field: str, value, *, low: float, high: float, closed: str = "") -> None:
    """``low < value < high``; ``closed`` holds "low" and/or "high" to include those ends."""
    ok = (
        isinstance(value, numbers.Real)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and (low <= value if "low" in closed else low < value)
        and (value <= high if "high" in closed else value < high)
    )
    if not ok:
        left, right = "[" if "low" in closed else "(", "]" if "high" in closed else ")"
        raise InvalidOption(field, f"in {left}{low:g}, {high:g}{right}", value)


def names(field: str, values, valid) -> None:
    """``values`` is a non-empty sequence of members of ``valid``."""
    if not values or not set(values) <= set(valid):
        raise InvalidOption(field, f"a non-empty list of {', '.join(valid)}", values)
