"""Checkpoint and resume a training run with Orbax.

A checkpoint is one Orbax step folder per saved epoch holding two items:

* ``state``: every array leaf of the engine's ``TrainState`` (parameters, model state such
  as BatchNorm statistics, optimizer state, step counter, PRNG key, epochs done). The
  PRNG key also fixes the data order, so an epoch-boundary checkpoint is an exact
  data-order position;
* ``meta`` (JSON): the epoch, the history of the completed epochs, the run's
  *fingerprint* (the configuration that must match to resume: model, optimizer, data,
  training config), the path, shape and dtype of every state leaf, and the ``digest`` of
  the state (:func:`state_digest`: SHA-256 over every leaf's bytes, in leaf order).

Restoring checks the digest of the arrays read back against the saved one. A checkpoint
that cannot be read (a truncated or deleted data file, a flipped byte, metadata missing a
field) is moved aside to ``<dir>/corrupt-<epoch>-<time>`` with a one-line warning naming
the epoch and the reason, and the one before it is restored; the moved step can then be
saved again. If no checkpoint is left, :class:`CheckpointCorruptError` says so in one line.

Orbax writes each step into a temporary folder and renames it when complete, so a crash
or a full disk in the middle of a save leaves the previous checkpoint valid;
``CheckpointManagerOptions(max_to_keep=keep)`` deletes the oldest ones. The temporary
folders of saves that a crash left unfinished are removed when a ``Checkpointer`` opens
the folder, before it returns (Orbax's own clean-up runs in a background thread, which
races with a second manager opened on the same folder or with the next save).

    ckpt = Checkpointer(CheckpointConfig("runs/x/checkpoints", every=1, keep=3))
    ckpt.save(epoch, state, history, fingerprint)                # after each epoch
    restored = ckpt.restore_latest(like_state, fingerprint)      # None if there is none
    if restored is not None:
        state, history, epoch = restored
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import shutil
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from optlab.experiments import parallel

PyTree = Any
STATE, META = "state", "meta"
UNFINISHED_SUFFIX = ".orbax-checkpoint-tmp"
CORRUPT_PREFIX = "corrupt-"
META_KEYS = ("epoch", "history", "fingerprint", "leaves")


class CheckpointMismatchError(ValueError):
    """The checkpoint was written by a run with another configuration."""


class CheckpointCorruptError(ValueError):
    """No checkpoint in the folder could be read back intact."""


class UnreadableCheckpoint(Exception):
    """One checkpoint cannot be used; the message is the one-line reason."""


@dataclasses.dataclass(frozen=True)
class CheckpointConfig:
    """Where and how often to checkpoint.

    Attributes:
      directory: the checkpoint folder (created if missing; must be writable).
      every: save every ``every`` epochs (the final epoch is saved with ``force=True``).
      keep: how many of the most recent checkpoints to keep.
    """

    directory: str | Path
    every: int = 1
    keep: int = 3

    def __post_init__(self):
        for name in ("every", "keep"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"checkpoint {name} must be a positive integer, got {value!r}")


# --------------------------------------------------------------------------- fingerprints


def fingerprint(**parts: Any) -> dict[str, Any]:
    """The JSON form of a run's configuration (what must match to resume).

    Values that JSON cannot hold (dtypes, callables, schedules) are stored by ``repr``.
    """
    return json.loads(json.dumps(parts, sort_keys=True, default=repr))


def diff_fingerprints(saved: Any, current: Any, path: str = "") -> list[str]:
    """Human-readable differences between two fingerprints, one line per differing key."""
    if isinstance(saved, dict) and isinstance(current, dict):
        lines = []
        for key in sorted(set(saved) | set(current), key=str):
            where = f"{path}.{key}" if path else str(key)
            if key not in current:
                lines.append(f"{where}: checkpoint has {saved[key]!r}, this run has no such key")
            elif key not in saved:
                lines.append(f"{where}: checkpoint has no such key, this run has {current[key]!r}")
            else:
                lines += diff_fingerprints(saved[key], current[key], where)
        return lines
    if saved != current:
        return [f"{path or 'value'}: checkpoint has {saved!r}, this run has {current!r}"]
    return []


def _leaf_specs(tree: PyTree) -> list[dict[str, Any]]:
    """Path, shape and dtype of every leaf (PRNG keys by their key data)."""
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    return [
        {"path": jax.tree_util.keystr(path), "shape": list(leaf.shape), "dtype": str(leaf.dtype)}
        for path, leaf in flat
    ]


def state_digest(arrays: list) -> str:
    """SHA-256 (hex) of ``b_1 ‖ b_2 ‖ … ‖ b_n``, ``b_i`` the C-order bytes of leaf ``i`` on
    the host (the leaves as :func:`_to_arrays` lists them, PRNG keys as key data; a leaf
    replicated over several processes' devices by this process's own copy)."""
    digest = hashlib.sha256()
    for leaf in arrays:
        digest.update(np.ascontiguousarray(parallel.host_value(leaf)).tobytes())
    return digest.hexdigest()


def _host_readable(arrays: list) -> bool:
    """Whether this process holds every element of every leaf (a digest needs them all):
    each leaf is on its own devices, or replicated on every device (under several processes,
    a copy on each process)."""
    return all(
        getattr(leaf, "is_fully_addressable", True) or leaf.is_fully_replicated for leaf in arrays
    )


def one_line(err: BaseException, limit: int = 300) -> str:
    """The first line of ``err``'s message, without TensorStore's spec dump, cut to ``limit``."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    text = text.split(" [tensorstore_spec")[0]
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _is_orphaned_read_callback(exc_value) -> bool:
    """A TensorStore read finishing after a failed restore closed Orbax's event loop."""
    return isinstance(exc_value, RuntimeError) and str(exc_value) == "Event loop is closed"


def _quiet_orphaned_read_callbacks() -> None:
    """Drop (only) the "Event loop is closed" reports of reads orphaned by a failed restore.

    When one array of a restore fails, Orbax closes its event loop while TensorStore still
    completes the others; each completion then fails in ``call_soon_threadsafe``. The
    failure arrives late, from TensorStore's threads, through whichever hook the calling
    code reaches (``sys.unraisablehook``, ``sys.excepthook`` via ``PyErr_Print``, or
    ``threading.excepthook``), so all three filter it and stay installed (once).
    """
    if getattr(sys.unraisablehook, "_drops_orphaned_read_callbacks", False):
        return
    previous_unraisable, previous_except = sys.unraisablehook, sys.excepthook
    previous_thread = threading.excepthook

    def unraisable_hook(unraisable):
        if not _is_orphaned_read_callback(unraisable.exc_value):
            previous_unraisable(unraisable)

    def except_hook(exc_type, exc_value, exc_traceback):
        if not _is_orphaned_read_callback(exc_value):
            previous_except(exc_type, exc_value, exc_traceback)

    def thread_hook(args):
        if not _is_orphaned_read_callback(args.exc_value):
            previous_thread(args)

    unraisable_hook._drops_orphaned_read_callbacks = True
    sys.unraisablehook, sys.excepthook = unraisable_hook, except_hook
    threading.excepthook = thread_hook


# --------------------------------------------------------------------------- files


def ensure_writable(directory: str | Path) -> Path:
    """Create ``directory`` if needed and check that a file can be written in it.

    Raises:
      OSError: naming the folder and the reason, before any training starts.
    """
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".write-test-"):
            pass
    except OSError as err:
        raise OSError(
            err.errno,
            f"checkpoint folder {directory} is not writable ({err.strerror or err}); "
            "choose a folder you can write to",
        ) from err
    return directory


def _is_key(leaf) -> bool:
    return isinstance(leaf, jax.Array) and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key)


def _to_arrays(tree: PyTree) -> list[jax.Array]:
    """The leaves of ``tree`` as plain arrays (typed PRNG keys as their key data)."""
    return [jax.random.key_data(x) if _is_key(x) else x for x in jax.tree.leaves(tree)]


def _from_arrays(arrays: list, like: PyTree) -> PyTree:
    """Inverse of :func:`_to_arrays`, with the tree structure and key types of ``like``."""
    like_leaves, treedef = jax.tree.flatten(like)
    leaves = [
        jax.random.wrap_key_data(a, impl=jax.random.key_impl(ref)) if _is_key(ref) else a
        for a, ref in zip(arrays, like_leaves, strict=True)
    ]
    return jax.tree.unflatten(treedef, leaves)


def remove_unfinished_saves(directory: Path, step: str = "*") -> list[Path]:
    """Delete the temporary folders that interrupted saves of ``step`` left in ``directory``.

    Orbax writes step ``s`` into ``s.orbax-checkpoint-tmp*`` and renames it when complete,
    so such a folder is never a valid checkpoint. Returns the folders removed.
    """
    unfinished = sorted(Path(directory).glob(f"{step}{UNFINISHED_SUFFIX}*"))
    for folder in unfinished:
        shutil.rmtree(folder, ignore_errors=True)
    return unfinished


class Checkpointer:
    """Saves and restores ``(train_state, history, epoch)`` under one folder.

    A thin layer over ``ocp.CheckpointManager`` (synchronous saves, atomic step folders,
    ``max_to_keep`` retention) that adds the configuration fingerprint check.
    """

    def __init__(self, config: CheckpointConfig):
        self.config = config
        self.directory = ensure_writable(config.directory).absolute()
        if jax.process_index() == 0:  # one process cleans; Orbax's saves wait for all of them
            remove_unfinished_saves(self.directory)
        options = ocp.CheckpointManagerOptions(
            max_to_keep=config.keep,
            enable_async_checkpointing=False,  # the engine donates the state right after
            cleanup_tmp_directories=False,  # done above, synchronously
            create=True,
        )
        self._manager = ocp.CheckpointManager(
            self.directory, options=options, item_names=(STATE, META)
        )

    def steps(self) -> list[int]:
        """Epochs with a complete checkpoint, oldest first."""
        return sorted(self._manager.all_steps())

    def save(
        self,
        epoch: int,
        train_state: PyTree,
        history: list[dict],
        fingerprint: dict[str, Any],
        *,
        force: bool = False,
    ) -> bool:
        """Checkpoint the state after ``epoch`` if it is a multiple of ``every`` (or ``force``).

        Returns:
          Whether a checkpoint was written.

        Raises:
          OSError: the write failed (e.g. the disk is full); the previous checkpoint is
            left as it was.
        """
        if not force and epoch % self.config.every:
            return False
        arrays = _to_arrays(train_state)
        meta = {
            "epoch": int(epoch),
            "history": history,
            "fingerprint": fingerprint,
            "leaves": _leaf_specs(train_state),
        }
        if _host_readable(arrays):
            meta["digest"] = state_digest(arrays)
        args = ocp.args.Composite(
            **{
                STATE: ocp.args.StandardSave(arrays),
                META: ocp.args.JsonSave(json.loads(json.dumps(meta, default=float))),
            }
        )
        try:
            saved = self._manager.save(int(epoch), args=args, force=True)
            self._manager.wait_until_finished()
        except OSError as err:
            remove_unfinished_saves(self.directory, f"{int(epoch)}")
            previous = self.steps()
            kept = f"epoch {previous[-1]}" if previous else "none"
            raise OSError(
                err.errno or errno.EIO,
                f"could not write the checkpoint of epoch {epoch} to {self.directory} "
                f"({err.strerror or err}); the last complete checkpoint ({kept}) is intact",
            ) from err
        return bool(saved)

    def read_meta(self, epoch: int) -> dict[str, Any]:
        """The JSON metadata of the checkpoint of ``epoch``."""
        restored = self._manager.restore(
            epoch, args=ocp.args.Composite(**{META: ocp.args.JsonRestore()})
        )
        return restored[META]

    def check_compatible(self, meta: dict, like_state: PyTree, fingerprint: dict) -> None:
        """Raise :class:`CheckpointMismatchError` saying what differs from this run."""
        differences = diff_fingerprints(meta["fingerprint"], fingerprint)
        if not differences and meta["leaves"] != _leaf_specs(like_state):
            saved = {leaf["path"]: leaf for leaf in meta["leaves"]}
            current = {leaf["path"]: leaf for leaf in _leaf_specs(like_state)}
            differences = diff_fingerprints(saved, current, "state")
        if differences:
            raise CheckpointMismatchError(
                f"the checkpoint of epoch {meta['epoch']} in {self.directory} was written by "
                f"a different configuration: {'; '.join(differences[:10])}"
                + (f" (and {len(differences) - 10} more)" if len(differences) > 10 else "")
                + "; resume with the original configuration or use another folder"
            )

    def restore_latest(
        self, like_state: PyTree, fingerprint: dict[str, Any]
    ) -> tuple[PyTree, list[dict], int] | None:
        """The latest valid checkpoint as ``(train_state, history, epoch)``; None if none.

        ``like_state`` gives the tree structure, shapes, dtypes and shardings (e.g. the
        freshly initialised state). A checkpoint that cannot be read back intact (a missing
        or truncated file, metadata without a required field, or arrays whose
        :func:`state_digest` differs from the saved one) is moved aside to
        ``corrupt-<epoch>-<time>`` with a one-line warning, in favour of the one before it;
        training then saves that epoch again. A checkpoint written before digests were
        recorded (no ``digest`` in its metadata) is restored without the digest check.

        Raises:
          CheckpointMismatchError: the latest readable checkpoint's fingerprint or state
            layout differs from this run's.
          CheckpointCorruptError: there were checkpoints but none could be read intact.
        """
        unreadable = []
        for epoch in reversed(self.steps()):
            try:
                return self._restore(epoch, like_state, fingerprint)
            except UnreadableCheckpoint as err:
                moved = self._set_aside(epoch)
                unreadable.append(f"epoch {epoch} ({err})")
                warnings.warn(
                    f"skipping unreadable checkpoint of epoch {epoch} in {self.directory}: "
                    f"{err}; moved it to {moved.name}",
                    stacklevel=2,
                )
        if unreadable:
            raise CheckpointCorruptError(
                f"no readable checkpoint in {self.directory}: {'; '.join(unreadable)}; "
                f"each was moved to {CORRUPT_PREFIX}<epoch>-<time>; start afresh or restore "
                "the folder from a backup"
            )
        return None

    def _restore(self, epoch: int, like_state: PyTree, fingerprint: dict) -> tuple:
        """Read and verify one checkpoint; :class:`UnreadableCheckpoint` if it is damaged."""
        try:
            meta = self.read_meta(epoch)
        except (OSError, ValueError) as err:  # TensorStore and JSON errors are ValueErrors
            raise UnreadableCheckpoint(f"metadata unreadable: {one_line(err)}") from err
        missing = [key for key in META_KEYS if not isinstance(meta, dict) or key not in meta]
        if missing:
            raise UnreadableCheckpoint(f"metadata has no {', '.join(missing)}")
        self.check_compatible(meta, like_state, fingerprint)
        template = _to_arrays(like_state)
        try:
            restored = self._manager.restore(
                epoch, args=ocp.args.Composite(**{STATE: ocp.args.StandardRestore(template)})
            )
            arrays = list(restored[STATE])
        except (OSError, ValueError) as err:  # TensorStore raises ValueError for bad files
            _quiet_orphaned_read_callbacks()
            raise UnreadableCheckpoint(f"state unreadable: {one_line(err)}") from err
        if "digest" in meta and _host_readable(arrays) and state_digest(arrays) != meta["digest"]:
            raise UnreadableCheckpoint("state digest differs from the saved one (data changed)")
        return _from_arrays(arrays, like_state), meta["history"], epoch

    def _set_aside(self, epoch: int) -> Path:
        """Move the step folder of ``epoch`` to ``corrupt-<epoch>-<time>`` (so that the
        epoch can be saved again) and return where it went."""
        target = self.directory / f"{CORRUPT_PREFIX}{epoch}-{time.strftime('%Y%m%dT%H%M%S')}"
        if jax.process_index() == 0:
            suffix = 0
            while target.exists():
                suffix += 1
                target = target.with_name(f"{target.name.split('.')[0]}.{suffix}")
            (self.directory / str(epoch)).rename(target)
        self._manager.reload()
        return target

    def close(self) -> None:
        self._manager.close()

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
