"""A 2-D convolution whose gradients XLA:CPU runs at full speed inside a loop.

XLA's CPU backend runs the weight gradient of a convolution (the convolution JAX's
transpose rule emits, with batch and feature dimensions exchanged) one to two orders
of magnitude slower when it sits in a ``while`` loop body than at the top level
(jax-ml/jax#12868): our training epoch is one ``lax.scan``, so a CNN epoch on CPU took
~40 s per step of the Adam paper's CNN instead of ~0.5 s.

:func:`conv_general_dilated` is ``lax.conv_general_dilated`` with a custom VJP that
writes both gradients as forward convolutions in the canonical ``NHWC``/``HWIO`` layout,
which XLA:CPU runs fast everywhere. For a stride-1, undilated, ungrouped convolution
``y[n,h,w,o] = Σ_{i,j,c} x̃[n, h+i, w+j, c] · k[i,j,c,o]`` (``x̃``: ``x`` padded by
``(p_lo, p_hi)`` per spatial axis, kernel size ``K``):

- ``∂x[n,a,b,c] = Σ_{i,j,o} ∂ỹ[n, a+i, b+j, o] · k[K-1-i, K-1-j, c, o]``: ``∂y`` padded by
  ``(K-1-p_lo, K-1-p_hi)``, correlated with the flipped kernel, channels swapped;
- ``∂k[i,j,c,o] = Σ_{n,h,w} x̃[n, h+i, w+j, c] · ∂y[n,h,w,o]``: ``x`` with batch and channel
  axes exchanged (``C × H × W × N``), correlated with ``∂y`` as a ``H × W × N × O`` kernel.

The values are those of ``lax.conv_general_dilated`` and its gradients (the tests check
them); any other convolution (strides, dilation, groups, other layouts) goes to
``lax.conv_general_dilated`` unchanged, and so does every convolution on GPU and TPU,
whose compilers do not have the problem. Pass it to ``nnx.Conv(conv_general_dilated=...)``.

Limitation: a ``custom_vjp`` function cannot be differentiated in forward mode, so on CPU
``jax.jvp`` (and forward-over-reverse Hessian-vector products) through the CNN models
raise ``TypeError``; reverse mode to any order works (``jax.grad(jax.grad(...))``, and
Hessian-vector products as ``grad`` of ``⟨grad, v⟩``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

NHWC = ("NHWC", "HWIO", "NHWC")
Padding = tuple[tuple[int, int], tuple[int, int]]


def _conv(x: jax.Array, kernel: jax.Array, padding: Padding, precision) -> jax.Array:
    return lax.conv_general_dilated(
        x, kernel, (1, 1), padding, dimension_numbers=NHWC, precision=precision
    )


def _make_conv2d(padding: Padding, precision):
    (p_top, p_bottom), (p_left, p_right) = padding

    @jax.custom_vjp
    def conv2d(x, kernel):
        return _conv(x, kernel, padding, precision)

    def forward(x, kernel):
        return conv2d(x, kernel), (x, kernel)

    def backward(residuals, dy):
        x, kernel = residuals
        kh, kw = kernel.shape[:2]
        flipped = jnp.transpose(kernel[::-1, ::-1], (0, 1, 3, 2))  # (kh, kw, O, C)
        dx_padding = ((kh - 1 - p_top, kh - 1 - p_bottom), (kw - 1 - p_left, kw - 1 - p_right))
        dx = _conv(dy, flipped, dx_padding, precision)
        x_t = jnp.transpose(x, (3, 1, 2, 0))  # (C, H, W, N): batch <-> channels
        dy_t = jnp.transpose(dy, (1, 2, 0, 3))  # (H', W', N, O): a kernel over H' × W'
        dkernel = _conv(x_t, dy_t, padding, precision)  # (C, kh, kw, O)
        return dx.astype(x.dtype), jnp.transpose(dkernel, (1, 2, 0, 3)).astype(kernel.dtype)

    conv2d.defvjp(forward, backward)
    return conv2d


def _is_nhwc(lhs, rhs, dimension_numbers) -> bool:
    if dimension_numbers is None:
        return False
    expected = lax.conv_dimension_numbers(lhs.shape, rhs.shape, NHWC)
    given = lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
    return given == expected


def _all_ones(values) -> bool:
    return values is None or all(v == 1 for v in values)


def conv_general_dilated(
    lhs,
    rhs,
    window_strides,
    padding,
    lhs_dilation=None,
    rhs_dilation=None,
    dimension_numbers=None,
    feature_group_count: int = 1,
    batch_group_count: int = 1,
    precision=None,
    preferred_element_type=None,
    **kwargs,
):
    """``lax.conv_general_dilated`` with loop-friendly gradients for plain NHWC 2-D convs."""
    plain = (
        jax.default_backend() == "cpu"
        and lhs.ndim == 4
        and _all_ones(window_strides)
        and _all_ones(lhs_dilation)
        and _all_ones(rhs_dilation)
        and feature_group_count == 1
        and batch_group_count == 1
        and preferred_element_type is None
        and all(v is None for v in kwargs.values())
        and _is_nhwc(lhs, rhs, dimension_numbers)
    )
    if not plain:
        return lax.conv_general_dilated(
            lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
            feature_group_count, batch_group_count, precision=precision,
            preferred_element_type=preferred_element_type, **kwargs,
        )  # fmt: skip
    if isinstance(padding, str):
        padding = lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], (1, 1), padding)
    padding = tuple((int(lo), int(hi)) for lo, hi in padding)
    return _make_conv2d(padding, precision)(lhs, rhs)
