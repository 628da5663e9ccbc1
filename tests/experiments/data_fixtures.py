"""Tiny dataset files in the real on-disk formats, written by the data tests."""

from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
from optlab.experiments.data.registry import MNIST_FILES, DatasetSpec, FileSpec


def idx_bytes(array: np.ndarray) -> bytes:
    """Encode a uint8 array as IDX: magic ``0x0000 08 <ndim>``, big-endian sizes, data."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(n).to_bytes(4, "big") for n in array.shape
    )
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def md5(path: Path) -> str:
    return hashlib.md5(Path(path).read_bytes()).hexdigest()


def tiny_mnist_arrays(n_train=6, n_test=4, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "train_images": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train_labels": rng.integers(0, 10, n_train, dtype=np.uint8),
        "test_images": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "test_labels": rng.integers(0, 10, n_test, dtype=np.uint8),
    }


def write_tiny_mnist(folder: Path, arrays=None, *, name="mnist", base_url="") -> DatasetSpec:
    """Write four IDX ``.gz`` files; return a spec holding their true checksums."""
    folder.mkdir(parents=True, exist_ok=True)
    arrays = tiny_mnist_arrays() if arrays is None else arrays
    files = []
    for key, file_name in MNIST_FILES.items():
        path = folder / file_name
        path.write_bytes(gzip.compress(idx_bytes(arrays[key]), mtime=0))
        files.append(FileSpec(file_name, base_url + file_name, sha256(path), md5(path)))
    return DatasetSpec(name=name, num_classes=10, files=tuple(files))


def cifar_batch(n: int, seed: int, *, label_offset: int = 0) -> dict:
    """A batch dict as in the CIFAR-10 pickles (bytes keys, uint8 rows of R, G, B planes)."""
    rng = np.random.default_rng(seed)
    return {
        b"batch_label": f"batch {seed}".encode(),
        b"labels": [int(v) + label_offset for v in rng.integers(0, 10, n)],
        b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        b"filenames": [f"img_{seed}_{i}.png".encode() for i in range(n)],
    }


def cifar_pickle(batch: dict) -> bytes:
    return pickle.dumps(batch, protocol=2)  # the original files are protocol-2 pickles


CIFAR_NAMES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",)


def write_tiny_cifar(folder: Path, *, tarball: bool, n=3) -> tuple[DatasetSpec, dict]:
    """Write the six batches under ``folder/cifar-10-batches-py/`` (or as a tarball).

    Returns a spec with the true checksums and the batch dicts.
    """
    batches = {name: cifar_batch(n, seed) for seed, name in enumerate(CIFAR_NAMES)}
    extracted = folder / "cifar-10-batches-py"
    extracted.mkdir(parents=True, exist_ok=True)
    for name, batch in batches.items():
        (extracted / name).write_bytes(cifar_pickle(batch))
    extracted_specs = tuple(FileSpec(name, None, None, md5(extracted / name)) for name in batches)
    archive = folder / "cifar-10-python.tar.gz"
    if tarball:
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
            tar.add(extracted, arcname="cifar-10-batches-py")
        archive.write_bytes(buffer.getvalue())
        for name in batches:
            (extracted / name).unlink()
        extracted.rmdir()
    archive_spec = FileSpec(
        archive.name,
        None,
        sha256(archive) if tarball else "0" * 64,
        md5(archive) if tarball else None,
    )
    spec = DatasetSpec(
        name="cifar10",
        num_classes=10,
        files=(archive_spec,),
        extracted=extracted_specs,
        folder="cifar-10-batches-py",
    )
    return spec, batches
