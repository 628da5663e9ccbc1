"""The ``Dataset`` container, the ``DataError`` exception and file checksums."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Any

import numpy as np


class DataError(ValueError):
    """A dataset file is missing, unreadable, corrupted or fails its checksum.

    The message names the file, what is wrong with it and what would be valid.
    """


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """A train/test split held as NumPy arrays.

    Images are float32 in [0, 1] shaped ``(N, H, W, C)``; vector data is ``(N, D)``.
    Labels are int32 class indices in ``[0, num_classes)``. Regression data sets have
    ``num_classes == 0`` and float32 targets.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        splits = (("train", self.x_train, self.y_train), ("test", self.x_test, self.y_test))
        for split, x, y in splits:
            if x.shape[0] != y.shape[0]:
                raise ValueError(
                    f"{self.name}: x_{split} has {x.shape[0]} examples but y_{split} has "
                    f"{y.shape[0]}"
                )
            if x.shape[1:] != self.x_train.shape[1:]:
                raise ValueError(
                    f"{self.name}: x_{split} examples are {x.shape[1:]}, "
                    f"x_train examples are {self.x_train.shape[1:]}"
                )
            if self.num_classes > 0 and y.size and (y.min() < 0 or y.max() >= self.num_classes):
                raise ValueError(
                    f"{self.name}: y_{split} holds labels in [{y.min()}, {y.max()}], "
                    f"valid labels are 0..{self.num_classes - 1}"
                )

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The shape of one example, e.g. ``(28, 28, 1)``."""
        return tuple(self.x_train.shape[1:])

    def replace(self, **changes) -> Dataset:
        """A copy with some fields changed (``dataclasses.replace``)."""
        return dataclasses.replace(self, **changes)

    def __repr__(self) -> str:
        return (
            f"Dataset({self.name!r}, train={self.x_train.shape[0]}, test={self.x_test.shape[0]}, "
            f"input_shape={self.input_shape}, num_classes={self.num_classes})"
        )


def file_digests(path: Path, algorithms: tuple[str, ...], chunk_size: int = 1 << 20) -> dict:
    """Hex digests of a file for several hash algorithms, in one pass over its bytes."""
    digests = {name: hashlib.new(name) for name in algorithms}
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            for digest in digests.values():
                digest.update(chunk)
    return {name: digest.hexdigest() for name, digest in digests.items()}


def verify_file(path: Path, sha256: str | None, md5: str | None = None) -> dict[str, str]:
    """Check a file's SHA-256 (and MD5 where given); return the digests that were checked.

    Raises:
      DataError: naming the file, the expected and the computed digest.
    """
    expected = {name: value.lower() for name, value in (("sha256", sha256), ("md5", md5)) if value}
    actual = file_digests(path, tuple(expected))
    for name, value in expected.items():
        if actual[name] != value:
            raise DataError(
                f"{path}: {name} checksum mismatch: the file hashes to {actual[name]}, the "
                f"original file hashes to {value}. The file is corrupted, truncated or not the "
                "original; delete it and download it again."
            )
    return actual
