"""A parser for the IDX format of MNIST and Fashion-MNIST, safe on corrupted input.

An IDX file is a 4-byte magic number ``0x00 0x00 <dtype code> <ndim>``, then ``ndim``
big-endian uint32 sizes ``d_1 … d_ndim``, then ``d_1 ⋯ d_ndim`` big-endian values. MNIST
labels are ``0x00000801`` (uint8, 1-D) and images ``0x00000803`` (uint8, 3-D).

Every size in a header is checked against the bytes actually present before anything is
allocated, and gzip input is decompressed with a cap, so a corrupted or hostile file raises
``DataError`` instead of exhausting memory.
"""

from __future__ import annotations

import gzip
import io
import math
import zlib
from pathlib import Path

import numpy as np
from optlab.experiments.data.dataset import DataError

# IDX dtype code -> big-endian NumPy dtype.
DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
LABELS_MAGIC = 0x00000801
IMAGES_MAGIC = 0x00000803
# The largest decompressed IDX file accepted (Fashion-MNIST train images are 47 MB).
MAX_DECOMPRESSED_BYTES = 1 << 30


def parse_idx(data: bytes, *, source: str = "<bytes>", magic: int | None = None) -> np.ndarray:
    """Decode IDX bytes into an array (a read-only view of ``data``).

    Args:
      data: the uncompressed file contents.
      source: the file name used in error messages.
      magic: if given, the magic number the file must have (e.g. ``IMAGES_MAGIC``).

    Raises:
      DataError: the magic number, dtype code or sizes are invalid.
    """
    if len(data) < 4:
        raise DataError(f"{source}: {len(data)} bytes is too short for an IDX header (4 bytes)")
    zero, dtype_code, ndim = int.from_bytes(data[:2], "big"), data[2], data[3]
    found = int.from_bytes(data[:4], "big")
    if magic is not None and found != magic:
        raise DataError(
            f"{source}: wrong IDX magic number 0x{found:08x}, expected 0x{magic:08x} "
            f"({_describe(magic)}); is this the right file?"
        )
    if zero != 0:
        raise DataError(f"{source}: not an IDX file (magic 0x{found:08x} must start with 0x0000)")
    if dtype_code not in DTYPES:
        valid = ", ".join(f"0x{code:02x}" for code in DTYPES)
        raise DataError(f"{source}: unknown IDX dtype code 0x{dtype_code:02x}, valid: {valid}")
    header_size = 4 + 4 * ndim
    if len(data) < header_size:
        raise DataError(
            f"{source}: truncated IDX header: {ndim} dimensions need {header_size} bytes, "
            f"the file has {len(data)}"
        )
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = DTYPES[dtype_code]
    expected = header_size + math.prod(shape) * dtype.itemsize
    if len(data) != expected:
        raise DataError(
            f"{source}: IDX header says shape {shape} of {dtype} ({expected} bytes with the "
            f"header), but the file has {len(data)} bytes; the file is truncated or corrupted"
        )
    return np.frombuffer(data, dtype=dtype, offset=header_size).reshape(shape)


def gunzip(raw: bytes, *, source: str, max_bytes: int = MAX_DECOMPRESSED_BYTES) -> bytes:
    """Decompress gzip bytes in 1 MiB chunks, refusing output larger than ``max_bytes``.

    Raises:
      DataError: the bytes are not gzip, are truncated, fail the CRC or inflate too far.
    """
    chunks, size = [], 0
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(raw)) as f:
            while chunk := f.read(1 << 20):
                size += len(chunk)
                if size > max_bytes:
                    raise DataError(
                        f"{source}: decompresses to more than {max_bytes} bytes; not an IDX file"
                    )
                chunks.append(chunk)
    except (OSError, EOFError, zlib.error) as err:
        raise DataError(
            f"{source}: cannot decompress ({type(err).__name__}: {err}); a valid file is a "
            "complete gzip stream, so this one is truncated or corrupted"
        ) from err
    return b"".join(chunks)


def read_idx(path: Path, *, magic: int | None = None) -> np.ndarray:
    """Read an IDX file, gzip-compressed if its name ends in ``.gz``."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise DataError(f"{path}: cannot read ({err})") from err
    data = gunzip(raw, source=str(path)) if path.suffix == ".gz" else raw
    return parse_idx(data, source=str(path), magic=magic)


def _describe(magic: int) -> str:
    return {LABELS_MAGIC: "uint8 labels, 1-D", IMAGES_MAGIC: "uint8 images, 3-D"}.get(magic, "IDX")
