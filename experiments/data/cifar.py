"""CIFAR-10's Python pickles, read with an unpickler that can build nothing but data.

Each batch file (``data_batch_1`` … ``data_batch_5``, ``test_batch``) is a pickled dict::

    {b"batch_label": bytes, b"labels": [int] * n, b"data": uint8 array (n, 3072),
     b"filenames": [bytes] * n}

with each row of ``data`` the 1024 red, then green, then blue pixels of a 32×32 image in
row-major order. A pickle can call any importable function, so the unpickler here resolves
only the globals needed to rebuild a NumPy array (and, for pickles re-saved by Python 3 at
protocol 2, latin-1 ``bytes``); anything else raises ``DataError``. The opcode stream is
scanned with :mod:`pickletools` before unpickling, so a corrupted length field fails
before anything is allocated for it, and deeply nested containers are refused.
"""

from __future__ import annotations

import io
import pickle
import pickletools
import tarfile
import zlib
from pathlib import Path

import numpy as np
from optlab.experiments.data.dataset import DataError

IMAGE_SHAPE = (3, 32, 32)  # as stored: channels first
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCHES = ("test_batch",)


def _reconstruct(cls, shape, dtype):
    """NumPy's ``_reconstruct`` for the empty placeholder it always pickles."""
    if cls is not np.ndarray or tuple(shape) != (0,):
        raise pickle.UnpicklingError(f"refusing _reconstruct({cls!r}, {shape!r}, ...)")
    return np.ndarray.__new__(np.ndarray, (0,), dtype)


def _latin1_bytes(text, encoding):
    """``_codecs.encode`` as Python 3 uses it to pickle ``bytes`` at protocol 2."""
    if encoding != "latin1" or not isinstance(text, str):
        raise pickle.UnpicklingError(f"refusing _codecs.encode(..., {encoding!r})")
    return text.encode("latin1")


SAFE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_bytes,
}


# Tuples and frozensets can be dict keys, and hashing one nested a million deep crashes
# CPython (a 1 MB pickle suffices), so their number is capped; a real batch has about ten.
NESTING_OPCODES = frozenset({"TUPLE", "TUPLE1", "TUPLE2", "TUPLE3", "FROZENSET"})
MAX_HASHABLE_CONTAINERS = 1_000


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only :data:`SAFE_GLOBALS`."""

    def find_class(self, module, name):
        try:
            return SAFE_GLOBALS[(module, name)]
        except KeyError:
            allowed = ", ".join(f"{m}.{n}" for m, n in SAFE_GLOBALS)
            raise pickle.UnpicklingError(
                f"forbidden global {module}.{name} (allowed: {allowed})"
            ) from None


def safe_unpickle(raw: bytes, *, source: str):
    """Unpickle ``raw`` with :class:`RestrictedUnpickler`; any failure is a ``DataError``."""
    try:
        # genops validates every opcode and length before anything is built or allocated.
        opcodes = pickletools.genops(raw)
        hashable_containers = sum(op.name in NESTING_OPCODES for op, _, _ in opcodes)
        if hashable_containers > MAX_HASHABLE_CONTAINERS:
            raise pickle.UnpicklingError(
                f"{hashable_containers} tuples/frozensets (a batch has a handful); deeply "
                "nested keys would overflow the C stack when hashed"
            )
        return RestrictedUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except Exception as err:  # a corrupted pickle can fail in many ways; all mean "bad file"
        raise DataError(
            f"{source}: not a valid CIFAR-10 pickle ({type(err).__name__}: {err})"
        ) from err


def parse_batch(raw: bytes, *, source: str, num_classes: int = 10):
    """Decode one batch file into ``(images uint8 (n, 32, 32, 3), labels int32 (n,))``.

    Raises:
      DataError: the pickle is invalid, uses a forbidden global, lacks a key, or holds
        data of the wrong shape or type, or labels outside ``0..num_classes-1``.
    """
    batch = safe_unpickle(raw, source=source)
    if not isinstance(batch, dict):
        raise DataError(f"{source}: holds a {type(batch).__name__}, a CIFAR batch is a dict")
    batch = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in batch.items()}
    missing = {"data", "labels"} - batch.keys()
    if missing:
        raise DataError(
            f"{source}: missing key(s) {sorted(missing)}; a CIFAR batch has 'data' and "
            f"'labels', found {sorted(k for k in batch if isinstance(k, str))}"
        )
    data, labels = batch["data"], batch["labels"]
    row = int(np.prod(IMAGE_SHAPE))
    if not (
        isinstance(data, np.ndarray)
        and data.dtype == np.uint8
        and data.ndim == 2
        and data.shape[1] == row
    ):
        found = (
            f"{data.dtype} array {data.shape}"
            if isinstance(data, np.ndarray)
            else type(data).__name__
        )
        raise DataError(f"{source}: 'data' is a {found}, expected a uint8 array (n, {row})")
    if isinstance(labels, np.ndarray) and labels.ndim == 1:
        labels = labels.tolist()
    if not (isinstance(labels, list) and len(labels) == len(data)):
        raise DataError(
            f"{source}: 'labels' must be a list of {len(data)} ints (one per row of 'data'), "
            f"found {type(labels).__name__} of length {_safe_len(labels)}"
        )
    for label in labels:
        if not isinstance(label, int) or not 0 <= label < num_classes:
            found = label if isinstance(label, int) else f"a {type(label).__name__}"
            raise DataError(
                f"{source}: label {found} found, valid labels are ints 0..{num_classes - 1}"
            )
    labels = np.asarray(labels, dtype=np.int32)
    images = data.reshape(-1, *IMAGE_SHAPE).transpose(0, 2, 3, 1)
    return images, labels


def read_batches(blobs: dict[str, bytes], names, *, origin: str, num_classes: int = 10):
    """Decode and concatenate the named batches; ``blobs`` maps a batch name to its bytes.

    ``origin`` (the folder or tarball they came from) prefixes the names in error messages.
    """
    parts = [
        parse_batch(blobs[name], source=f"{origin}/{name}", num_classes=num_classes)
        for name in names
    ]
    return np.concatenate([x for x, _ in parts]), np.concatenate([y for _, y in parts])


def read_tarball(path: Path, names, *, folder: str = "cifar-10-batches-py") -> dict[str, bytes]:
    """The bytes of the named batch files inside ``cifar-10-python.tar.gz`` (not extracted)."""
    members = {}
    try:
        with tarfile.open(path, "r:gz") as tar:
            for name in names:
                try:
                    member = tar.getmember(f"{folder}/{name}")
                except KeyError:
                    raise DataError(
                        f"{path}: has no member {folder}/{name}; a CIFAR-10 tarball holds "
                        f"{folder}/data_batch_1..5 and {folder}/test_batch"
                    ) from None
                f = tar.extractfile(member)
                if f is None:
                    raise DataError(f"{path}: {member.name} is not a regular file")
                members[name] = f.read()
    except (tarfile.TarError, OSError, EOFError, zlib.error) as err:
        raise DataError(
            f"{path}: cannot read the tarball ({err}); it is truncated or corrupted"
        ) from err
    return members


def _safe_len(obj) -> str:
    return str(len(obj)) if isinstance(obj, list | tuple | dict | bytes | str) else "n/a"
