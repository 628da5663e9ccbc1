"""GaLore: an inner optimizer run on gradients projected to a low-rank subspace (Zhao et al.)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from optlab.optimizers import _checks
from optlab.optimizers.adam import scale_by_adam


class GaLoreDimensionNumbers(NamedTuple):
    """Which axes of a leaf form the rows (``reduction_axis``) and columns (``output_axis``)
    of the matrix that GaLore projects (e.g. ``(0, (1, 2))`` for ``(embed, heads, head)``)."""

    reduction_axis: Sequence[int] | int = 0
    output_axis: Sequence[int] | int = 1


class ScaleByGaloreState(NamedTuple):
    """Step count, the inner optimizer's state (on projected leaves), the projectors ``P``."""

    count: jax.Array
    base_optimizer_state: optax.OptState
    projector: optax.Updates


def _is_dim_nums(x) -> bool:
    return isinstance(x, GaLoreDimensionNumbers | optax.contrib.GaLoreDimensionNumbers)


def _axes(axis, ndim: int) -> tuple[int, ...]:
    return (axis % ndim,) if isinstance(axis, int) else tuple(a % ndim for a in axis)


def matrix_view(x: jax.Array, dim_nums) -> tuple[Callable, Callable]:
    """``(to_matrix, from_matrix)``: ``x`` as a ``(rows, columns)`` matrix and back.

    Raises:
      ValueError: ``x`` has fewer than 2 axes, or the axes overlap or miss some.
    """
    if x.ndim < 2:
        raise ValueError(f"GaLore projects leaves with 2 or more axes, got shape {x.shape}")
    rows, columns = _axes(dim_nums.reduction_axis, x.ndim), _axes(dim_nums.output_axis, x.ndim)
    if set(rows) & set(columns) or len(set(rows) | set(columns)) != x.ndim:
        raise ValueError(
            f"dim_nums={dim_nums} is invalid for shape {x.shape}: reduction and output axes "
            "must be disjoint and cover every axis."
        )
    order = rows + columns
    inverse = tuple(sorted(range(x.ndim), key=lambda i: order[i]))
    transposed = tuple(x.shape[a] for a in order)
    shape = (math.prod(x.shape[a] for a in rows), math.prod(x.shape[a] for a in columns))
    return (
        lambda y: y.transpose(order).reshape(shape),
        lambda y: y.reshape(transposed).transpose(inverse),
    )


def scale_by_galore(
    rank: int = 128,
    update_proj_gap: int = 200,
    scale: float = 1.0,
    base_optimizer: optax.GradientTransformation | None = None,
    weight_dimension_numbers: Any = None,
) -> optax.GradientTransformation:
    """GaLore's projection around an inner optimizer (Zhao et al. 2024, Algorithm 2).

    For each projected leaf, viewed as an ``m × n`` gradient ``G``, ``r = min(rank, m, n)``,
    step count ``t``; every ``update_proj_gap`` steps (from ``t = 0``), in float32::

        P = U[:, :r]   (m ≥ n, from G = U S Vᵀ) ;   P = V[:, :r]  (m < n)

    then ``R = Pᵀ G`` (or ``G P``), ``N = inner(R)`` and ``u = scale · P N`` (or
    ``scale · N Pᵀ``), cast to ``G``'s dtype. Leaves that are not projected go through the
    inner optimizer whole. The inner optimizer must not need ``params`` (it sees the
    projected shapes): ``scale_by_adam`` (the default), ``scale_by_lion``, ...

    Args:
      rank: the projection rank, a positive int.
      update_proj_gap: steps between SVDs, a positive int.
      scale: the paper's α, multiplies the update.
      base_optimizer: the inner optimizer; None for ``scale_by_adam()``.
      weight_dimension_numbers: None (project the 2-D leaves), one
        ``GaLoreDimensionNumbers`` for every leaf with 2 or more axes, a pytree of them
        (None where not projected), or a callable from params to such a pytree.

    Returns:
      A transformation with state ``ScaleByGaloreState``.
    """
    if not isinstance(rank, int) or isinstance(rank, bool) or rank <= 0:
        raise ValueError(f"rank={rank!r} is invalid: rank must be a positive int.")
    if not isinstance(update_proj_gap, int) or update_proj_gap <= 0:
        raise ValueError(
            f"update_proj_gap={update_proj_gap!r} is invalid: it must be a positive int."
        )
    _checks.finite("scale", scale)
    inner = scale_by_adam() if base_optimizer is None else base_optimizer

    def dim_nums_of(params):
        spec = weight_dimension_numbers
        if spec is None:
            return jax.tree.map(lambda p: GaLoreDimensionNumbers() if p.ndim == 2 else None, params)
        if callable(spec) and not _is_dim_nums(spec):
            return spec(params)
        if _is_dim_nums(spec):
            return jax.tree.map(lambda p: spec if p.ndim >= 2 else None, params)
        return spec

    def leaves_and_dim_nums(tree):
        """The leaves of ``tree`` (None skipped), each one's dimension numbers, the treedef."""
        leaves, treedef = jax.tree.flatten(tree)
        return leaves, treedef.flatten_up_to(dim_nums_of(tree)), treedef

    def init_leaf(p, dim_nums):
        """``(P, projected gradient)`` of zeros: ``(m, r), (r, n)`` if m ≥ n, else
        ``(n, r), (m, r)``; ``((0, 0), p)`` for a leaf that is not projected."""
        if dim_nums is None:
            return jnp.zeros((0, 0), p.dtype), jnp.zeros_like(p)
        to_matrix, _ = matrix_view(p, dim_nums)
        m, n = jax.eval_shape(to_matrix, p).shape
        r = min(rank, m, n)
        shapes = ((m, r), (r, n)) if m >= n else ((n, r), (m, r))
        return tuple(jnp.zeros(shape, p.dtype) for shape in shapes)

    def init_fn(params):
        leaves, dim_nums, treedef = leaves_and_dim_nums(params)
        pairs = [init_leaf(p, d) for p, d in zip(leaves, dim_nums, strict=True)]
        projectors = treedef.unflatten([p for p, _ in pairs])
        projected = treedef.unflatten([g for _, g in pairs])
        return ScaleByGaloreState(jnp.zeros([], jnp.int32), inner.init(projected), projectors)

    def update_fn(updates, state, params=None):
        del params
        refresh = (state.count % update_proj_gap) == 0

        def project(g, projector, dim_nums):
            if dim_nums is None:
                return g, projector
            to_matrix, _ = matrix_view(g, dim_nums)
            g2 = to_matrix(g)
            m, n = g2.shape
            r = min(rank, m, n)

            def svd_projector():
                u, _, vh = jnp.linalg.svd(g2.astype(jnp.float32), full_matrices=False)
                basis = u[:, :r] if m >= n else vh[:r, :].T
                return basis.astype(g.dtype)

            projector = jax.lax.cond(refresh, svd_projector, lambda: projector)
            return (projector.T @ g2 if m >= n else g2 @ projector), projector

        def project_back(n_low, projector, g, dim_nums):
            if dim_nums is None:
                return n_low
            to_matrix, from_matrix = matrix_view(g, dim_nums)
            m, n = jax.eval_shape(to_matrix, g).shape
            full = projector @ n_low if m >= n else n_low @ projector.T
            return (scale * from_matrix(full)).astype(g.dtype)

        leaves, dim_nums, treedef = leaves_and_dim_nums(updates)
        old_projectors = treedef.flatten_up_to(state.projector)
        pairs = [project(*args) for args in zip(leaves, old_projectors, dim_nums, strict=True)]
        projectors = [p for _, p in pairs]
        inner_updates, inner_state = inner.update(
            treedef.unflatten([g for g, _ in pairs]), state.base_optimizer_state, None
        )
        u = [
            project_back(*args)
            for args in zip(
                treedef.flatten_up_to(inner_updates), projectors, leaves, dim_nums, strict=True
            )
        ]
        count = optax.safe_int32_increment(state.count)
        return treedef.unflatten(u), ScaleByGaloreState(
            count, inner_state, treedef.unflatten(projectors)
        )

    return optax.GradientTransformation(init_fn, update_fn)


def galore(
    learning_rate: optax.ScalarOrSchedule,
    rank: int = 128,
    update_proj_gap: int = 200,
    scale: float = 1.0,
    base_optimizer: optax.GradientTransformation | None = None,
    weight_decay: optax.ScalarOrSchedule = 0.0,
    mask: Any = None,
    weight_dimension_numbers: Any = None,
) -> optax.GradientTransformation:
    """GaLore: Adam (or another inner optimizer) on low-rank projections of matrix gradients.

    With learning rate ``η``, weight decay ``λ``, for a projected ``m × n`` leaf with
    ``P`` refreshed from the SVD of ``G`` every ``update_proj_gap`` steps::

        R = Pᵀ G   (m ≥ n; else R = G P)
        N = inner(R)                  (Adam by default, state of R's shape)
        θ ← θ − η (scale · P N + λ θ)   (else N Pᵀ)

    and plain ``inner`` (Adam) on the other leaves. Defaults equal
    ``optax.contrib.galore`` (rank 128, gap 200, scale 1; the paper's experiments use
    scale α = 0.25). The inner state of an ``m × n`` leaf is ``r × n`` (or ``m × r``), and
    ``P`` is ``m × r`` (or ``n × r``), so with rank ≥ min(m, n) nothing is saved. State
    per parameter: 2 on unprojected leaves (Adam), less on projected ones.

    Args:
      learning_rate: η ≥ 0, a float or an Optax schedule.
      rank, update_proj_gap, scale, base_optimizer, weight_dimension_numbers: as in
        ``scale_by_galore``.
      weight_decay: λ ≥ 0 (or a schedule), decoupled, in the full space.
      mask: which leaves to decay.

    Returns:
      An ``optax.GradientTransformation``.

    Reference:
      Zhao et al., "GaLore: Memory-Efficient LLM Training by Gradient Low-Rank
      Projection", ICML 2024.
    """
    _checks.learning_rate(learning_rate)
    _checks.non_negative("weight_decay", weight_decay)
    return optax.chain(
        scale_by_galore(rank, update_proj_gap, scale, base_optimizer, weight_dimension_numbers),
        optax.add_decayed_weights(weight_decay, mask),
        optax.scale_by_learning_rate(learning_rate),
    )
