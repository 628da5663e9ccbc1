"""Two one-line formulas that several optimizers share."""

from __future__ import annotations

import functools

import jax


def abs_sq(x: jax.Array) -> jax.Array:
    """``|x|²``: ``x²`` for real ``x`` (the same XLA ops), ``x̄ x`` for complex ``x``."""
    return (x.conj() * x).real


@functools.partial(jax.jit, inline=True)
def debias(moment, decay, count):
    """Bias correction of an EWMA started at zero: ``m̂ = m / (1 − decay^count)``.

    ``1 − decay^count`` is computed in the precision of ``count``'s promotion (float32)
    before the cast, so that bfloat16 moments do not round ``decay^count`` to 1. Jitted
    (inlined into any enclosing jit) like Optax's ``tree.bias_correction``, so that eager
    calls round ``decay^count`` the same way as Optax's.
    """
    correction = 1 - decay**count
    return jax.tree.map(lambda m: m / correction.astype(m.dtype), moment)
