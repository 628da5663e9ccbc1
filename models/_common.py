"""Helpers shared by the models: input-shape checks, activations, pooled sizes."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import jax

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": jax.nn.relu,
    "tanh": jax.nn.tanh,
    "sigmoid": jax.nn.sigmoid,
    "softplus": jax.nn.softplus,
    "gelu": jax.nn.gelu,
    "elu": jax.nn.elu,
    "leaky_relu": jax.nn.leaky_relu,
}


def as_shape(input_shape: Sequence[int]) -> tuple[int, ...]:
    """`input_shape` as a tuple of positive ints, or a `ValueError`."""
    try:
        shape = tuple(int(d) for d in input_shape)
    except TypeError as err:
        raise ValueError(f"input_shape must be a sequence of ints, got {input_shape!r}") from err
    if not shape or any(d <= 0 for d in shape):
        raise ValueError(f"input_shape must be non-empty positive ints, got {input_shape!r}")
    return shape


def activation(name: str | Callable[[jax.Array], jax.Array]) -> Callable[[jax.Array], jax.Array]:
    """The activation function called `name` (or `name` itself if it is callable)."""
    if callable(name):
        return name
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; valid: {', '.join(sorted(ACTIVATIONS))}")
    return ACTIVATIONS[name]


def check_input(model: str, x: jax.Array, input_shape: tuple[int, ...], *, flat_ok: bool = False):
    """Raise `ValueError` unless `x` is `(N, *input_shape)` (or `(N, D)` with `flat_ok`)."""
    accepted = [input_shape]
    if flat_ok and len(input_shape) > 1:
        accepted.append((math.prod(input_shape),))
    shape = tuple(getattr(x, "shape", ()))
    if len(shape) < 2 or shape[1:] not in accepted:
        expected = " or ".join(str((None, *s)).replace("None", "N") for s in accepted)
        raise ValueError(f"{model} expected input of shape {expected}, received {shape}")


def pooled(size: int, num_pools: int) -> int:
    """Spatial size after `num_pools` stride-2 'SAME' poolings: ⌈size / 2^num_pools⌉."""
    for _ in range(num_pools):
        size = -(-size // 2)
    return size
