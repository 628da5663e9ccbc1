"""The data the engine trains and evaluates on: pytrees of arrays, one example per row.

:class:`Splits` holds the training pytree (``{"x": images, "y": labels}`` for the
classifiers, ``{"x": images}`` for the VAE, anything for a researcher's own loss) and the
evaluated splits. Training data whose size changes between fits (a stream of users) is
padded to a few bucketed sizes (:func:`padded`) with its real size ``train_size`` passed
to the compiled epoch as a traced number, so it compiles once per bucket, not per size.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

PyTree = Any


class Splits(NamedTuple):
    """Training and evaluation data.

    Attributes:
      train: pytree of arrays with a common leading axis ``N`` (examples).
      evals: split name -> pytree like ``train``; each is evaluated after every epoch
        with the objective's ``metrics`` (``{"test": ..., "val": ...}``).
      train_size: how many leading rows of ``train`` hold examples (the rest is padding,
        never sampled); ``None``: all ``N``.
    """

    train: PyTree
    evals: Mapping[str, PyTree] = {}
    train_size: int | None = None

    @property
    def num_train(self) -> int:
        return self.train_size if self.train_size is not None else num_rows(self.train)


def num_rows(tree: PyTree) -> int:
    """The common leading size of every leaf (ValueError if they disagree)."""
    sizes = {int(np.shape(leaf)[0]) for leaf in jax.tree.leaves(tree)}
    if len(sizes) != 1:
        raise ValueError(f"every array of a split needs the same number of rows, got {sizes}")
    return sizes.pop()


def as_splits(data, eval_train: bool = False) -> Splits:
    """``data`` as :class:`Splits`.

    ``data`` is a :class:`Splits`, or anything with NumPy ``x_train, y_train, x_test,
    y_test`` (and optionally ``x_val, y_val``), e.g. an ``experiments.data.Dataset``:
    then ``train = {"x": x_train, "y": y_train}`` and the splits ``test``, ``val`` (when
    present) and, with ``eval_train``, ``train`` are evaluated.
    """
    if isinstance(data, Splits):
        splits = data
    else:
        evals = {"test": {"x": data.x_test, "y": data.y_test}}
        if getattr(data, "x_val", None) is not None:
            evals["val"] = {"x": data.x_val, "y": data.y_val}
        splits = Splits({"x": data.x_train, "y": data.y_train}, evals)
    if eval_train and "train" not in splits.evals:
        n = splits.num_train
        train = jax.tree.map(lambda a: a[:n], splits.train)
        splits = splits._replace(evals={**splits.evals, "train": train})
    num_rows(splits.train)
    return splits


def check_finite(splits: Splits) -> None:
    """Every floating array of every split is finite, or a ValueError naming it."""
    named = {"train": splits.train, **splits.evals}
    for split, tree in named.items():
        for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
            leaf = np.asarray(leaf)
            if np.issubdtype(leaf.dtype, np.floating) and not np.all(np.isfinite(leaf)):
                bad = int(leaf.size - np.count_nonzero(np.isfinite(leaf)))
                first = int(np.argwhere(~np.isfinite(leaf.reshape(len(leaf), -1)))[0, 0])
                name = jax.tree_util.keystr(path).strip("[]'\"")
                raise ValueError(
                    f"{name}_{split} holds {bad} NaN or infinite value(s) (first in example "
                    f"{first}); inputs must be finite"
                )


def bucket(n: int, minimum: int = 64) -> int:
    """The smallest power of two ≥ max(n, minimum): padded sizes, so few compilations."""
    return 1 << max(0, max(n, minimum) - 1).bit_length()


def pad_rows(tree: PyTree, size: int) -> PyTree:
    """Each leaf zero-padded (or kept) to ``size`` rows."""

    def pad(leaf):
        leaf = np.asarray(leaf)
        out = np.zeros((size, *leaf.shape[1:]), leaf.dtype)
        out[: len(leaf)] = leaf
        return out

    return jax.tree.map(pad, tree)


def padded(train: PyTree, evals: Mapping[str, PyTree] | None = None, minimum: int = 64) -> Splits:
    """:class:`Splits` with ``train`` padded to :func:`bucket` rows: data of a changing
    size trains through one compilation per bucket."""
    n = num_rows(train)
    return Splits(pad_rows(train, bucket(n, minimum)), dict(evals or {}), n)


class EvalData(NamedTuple):
    """A split cut into ``K`` batches of ``b`` rows, padded: leaves ``(K, b, ...)``, mask
    ``(K, b)`` (1 on examples, 0 on the padding)."""

    batches: PyTree
    mask: jax.Array


def eval_batches(tree: PyTree, batch_size: int) -> EvalData:
    """Pad a split to a multiple of ``batch_size`` (mask 0 on the padding), on the device."""
    n = num_rows(tree)
    batch_size = min(batch_size, n)
    num_batches = -(-n // batch_size)
    size = num_batches * batch_size
    mask = (np.arange(size) < n).astype(np.float32).reshape(num_batches, batch_size)
    batches = jax.tree.map(
        lambda a: jnp.asarray(a.reshape(num_batches, batch_size, *a.shape[1:])),
        pad_rows(tree, size),
    )
    return EvalData(batches, jnp.asarray(mask))


def fingerprint(splits: Splits) -> dict[str, str]:
    """Shape, dtype and SHA-256 of every array: resuming on other data is refused."""
    out = {}
    named = {"train": splits.train, **splits.evals}
    for split, tree in named.items():
        for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
            array = np.ascontiguousarray(leaf)
            digest = hashlib.sha256(array.view(np.uint8).reshape(-1)).hexdigest()
            name = f"{split}{jax.tree_util.keystr(path)}"
            out[name] = f"{array.dtype}{list(array.shape)} sha256:{digest[:16]}"
    if splits.train_size is not None:
        out["train_size"] = str(splits.train_size)
    return out
