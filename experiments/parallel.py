"""Data parallelism through JAX's own sharding: one mesh axis ``"data"`` over the devices.

The engine's epoch is unchanged; only where the arrays live changes:

* a 1-D ``Mesh`` over the devices, axis ``"data"`` (``AxisType.Auto``, so XLA's sharding
  propagation partitions the program; ``jax.make_mesh`` defaults to Explicit axes);
* each minibatch ``x[batch]``, ``y[batch]`` is constrained to ``P("data")``: device ``d``
  of ``D`` runs the forward and backward pass of examples ``[d·B/D, (d+1)·B/D)``;
* parameters and optimizer state follow :func:`state_sharding_rule`: replicated by
  default (XLA then all-reduces the gradients, ``g = Σ_d g_d`` of the mean loss), or,
  with ``shard_min_size``, leaves with at least that many elements whose first axis is
  divisible by ``D`` are split over ``"data"`` along that axis (ZeRO/FSDP-style memory
  saving; the result is the same program up to collective placement);
* the training set itself is replicated (the per-epoch permutation indexes all of it).

Under one process the mesh spans ``jax.devices()``; after
``jax.distributed.initialize(...)`` on every process (``optlab launch``,
:mod:`experiments.launch`) it spans every process's devices. Then every process holds the
same host values (same data, same seeds): :func:`place` puts each process's own copy on its
local devices (``jax.make_array_from_process_local_data``, nothing crosses processes), and
:func:`fetch` reads results back, gathering over processes only what is not replicated.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

PyTree = Any
DATA_AXIS = "data"


def data_mesh(num_devices: int | None = None) -> Mesh:
    """A 1-D mesh with axis ``"data"`` over the first ``num_devices`` devices (default all).

    Raises:
      ValueError: ``num_devices`` is not in ``1..len(jax.devices())``.
    """
    available = jax.device_count()
    count = available if num_devices is None else num_devices
    if not isinstance(count, int) or not 1 <= count <= available:
        raise ValueError(
            f"num_devices must be an integer in 1..{available} (the devices JAX sees), "
            f"got {num_devices!r}"
        )
    return jax.make_mesh(
        (count,), (DATA_AXIS,), axis_types=(jax.sharding.AxisType.Auto,),
        devices=jax.devices()[:count],
    )  # fmt: skip


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (example) axis split over ``"data"``, the other axes whole."""
    return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    """A full copy on every device of ``mesh``."""
    return NamedSharding(mesh, P())


def state_sharding_rule(leaf, mesh: Mesh, shard_min_size: int | None = None) -> NamedSharding:
    """Where one parameter or optimizer-state leaf lives.

    Replicated, unless ``shard_min_size`` is set and the leaf has at least that many
    elements and a first axis divisible by the mesh size: then that axis is split over
    ``"data"``. Scalars (step counters, PRNG keys) are always replicated.
    """
    size = mesh.shape[DATA_AXIS]
    shape = np.shape(leaf)
    if (
        shard_min_size is not None
        and len(shape) >= 1
        and int(np.prod(shape)) >= shard_min_size
        and shape[0] % size == 0
    ):
        return NamedSharding(mesh, P(DATA_AXIS))
    return replicated(mesh)


def state_shardings(state: PyTree, mesh: Mesh, shard_min_size: int | None = None) -> PyTree:
    """:func:`state_sharding_rule` applied to every leaf of ``state``."""
    return jax.tree.map(lambda leaf: state_sharding_rule(leaf, mesh, shard_min_size), state)


def check_batch_divisible(batch_size: int, mesh: Mesh) -> None:
    """Each device must get the same number of examples.

    Raises:
      ValueError: naming the batch size, the device count and the nearest valid sizes.
    """
    size = mesh.shape[DATA_AXIS]
    if batch_size % size:
        below, above = batch_size // size * size, (batch_size // size + 1) * size
        raise ValueError(
            f"batch_size {batch_size} is not divisible by the {size} devices of the data-parallel "
            f"mesh; use a multiple of {size} (e.g. {below or above} or {above})"
        )


def shard_batch(x: jax.Array, mesh: Mesh) -> jax.Array:
    """Constrain a minibatch (inside ``jit``) to be split over ``"data"`` by examples."""
    return jax.lax.with_sharding_constraint(x, batch_sharding(mesh))


def place(tree: PyTree, shardings: PyTree) -> PyTree:
    """``tree`` on the devices of ``shardings`` (one sharding per leaf, or one for all).

    Under one process, ``jax.device_put``. Under several, every process passes the same
    values and puts its own copy on its local devices
    (``jax.make_array_from_process_local_data`` with the global shape: each device takes
    its slice), so no data crosses processes and no process checks the others' values.
    PRNG keys travel as their key data.
    """
    if jax.process_count() == 1:
        return jax.device_put(tree, shardings)
    if not isinstance(shardings, jax.sharding.Sharding):
        return jax.tree.map(place_leaf, tree, shardings)
    return jax.tree.map(lambda leaf: place_leaf(leaf, shardings), tree)


def place_leaf(leaf, sharding: jax.sharding.Sharding) -> jax.Array:
    """One leaf placed by :func:`place` under several processes."""
    if isinstance(leaf, jax.Array) and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
        data = place_leaf(jax.random.key_data(leaf), sharding)
        return jax.random.wrap_key_data(data, impl=jax.random.key_impl(leaf))
    host = np.asarray(leaf)
    return jax.make_array_from_process_local_data(sharding, host, host.shape)


def host_value(leaf) -> np.ndarray:
    """The whole of ``leaf`` on this host.

    A leaf that lives on other processes' devices too is read from this process's own
    copy when it is replicated, and gathered from every process otherwise (a collective:
    every process must call it, in the same order).
    """
    if not isinstance(leaf, jax.Array) or leaf.is_fully_addressable:
        return np.asarray(jax.device_get(leaf))
    if leaf.is_fully_replicated:
        return np.asarray(leaf.addressable_data(0))
    return np.asarray(multihost_utils.process_allgather(leaf, tiled=True))


def fetch(tree: PyTree) -> PyTree:
    """:func:`host_value` of every leaf: the results every process reports alike."""
    return jax.tree.map(host_value, tree)
