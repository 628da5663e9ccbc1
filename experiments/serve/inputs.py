"""Request bodies → model inputs, or a :class:`BadRequest` naming what is wrong.

An image arrives as JSON ``{"user": str, "image": H × W numbers}`` with values in [0, 1]
(ink bright, the MNIST convention) at 28 × 28 or at the model's own ``h × w``, or as an
uploaded PNG (grey level / 255, any size up to :data:`MAX_PNG_SIDE`). The raw image goes
through the continual stream's schema checks (:func:`validation.schema_checks`: shape,
finite values, range [0, 1], label in [0, 10)); a failure is a 422 and nothing is stored.

It is then resized to ``h × w`` by area averaging, ``x' = A_h x A_wᵀ`` with
``A[i, j] = |[i s, (i + 1) s] ∩ [j, j + 1]| / s`` and ``s = n_in / n_out``: each output pixel
is the mean of the input area it covers (rows of ``A`` sum to 1).
"""

from __future__ import annotations

import io
import json

import numpy as np
import orjson
from optlab.experiments.continual import validation
from PIL import Image, UnidentifiedImageError

MAX_BODY_BYTES = 256 * 1024
MAX_PNG_SIDE = 1024
DRAWING_SIDE = 28  # what the drawing page sends (MNIST's size)
MAX_USER_CHARS = 128
NUM_CLASSES = 10


class BadRequest(ValueError):
    """A request the service refuses: HTTP ``status`` and a one-line ``message``."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def area_matrix(n_in: int, n_out: int) -> np.ndarray:
    """``A`` (n_out × n_in) of the module docstring: output pixel ``i`` averages the input
    interval ``[i s, (i + 1) s]``, ``s = n_in / n_out``."""
    s = n_in / n_out
    lo = np.arange(n_out)[:, None] * s
    j = np.arange(n_in)[None, :]
    overlap = np.clip(np.minimum(lo + s, j + 1) - np.maximum(lo, j), 0.0, None)
    return (overlap / s).astype(np.float32)


class ImageFormat:
    """The model's input ``(h, w, 1)`` and the resizing of accepted images to it."""

    def __init__(self, input_shape: tuple[int, ...]):
        self.input_shape = tuple(input_shape)
        self.height, self.width = self.input_shape[:2]
        self.sides = sorted({(DRAWING_SIDE, DRAWING_SIDE), (self.height, self.width)})
        self._rows = {n: area_matrix(n, self.height) for n in (DRAWING_SIDE, self.height)}
        self._cols = {n: area_matrix(n, self.width) for n in (DRAWING_SIDE, self.width)}

    def resize(self, image: np.ndarray) -> np.ndarray:
        """A checked 2-D image at one of :attr:`sides` → ``(h, w, 1)`` float32."""
        h, w = image.shape
        if (h, w) == (self.height, self.width):
            return image[..., None]
        return (self._rows[h] @ image @ self._cols[w].T)[..., None]

    def check(self, image: np.ndarray, label: int = 0) -> None:
        """:func:`validation.schema_checks` on the raw image (422 naming every failure).

        Fast path: ``0 ≤ min(x)`` and ``max(x) ≤ 1`` hold only for a finite image in range
        (a NaN makes both comparisons false), so an image that passes them skips the checks'
        messages; any other runs them all."""
        lo, hi = image.min(), image.max()
        if 0.0 <= lo and hi <= 1.0 and 0 <= label < NUM_CLASSES:
            return
        checks = validation.schema_checks(
            image[None, ..., None],
            np.array([label], np.int32),
            (*image.shape, 1),
            NUM_CLASSES,
        )
        failures = [f"{c.name}: {c.detail}" for c in checks if not c.passed]
        if failures:
            raise BadRequest(422, "invalid image: " + "; ".join(failures))

    def from_json(self, value) -> np.ndarray:
        """The ``image`` field of a JSON body → a checked 2-D float32 array."""
        if not isinstance(value, list):
            raise BadRequest(422, "'image' must be a list of rows of numbers")
        try:
            image = np.asarray(value, np.float32)
        except (ValueError, TypeError):
            raise BadRequest(422, "'image' must be a rectangular list of numbers") from None
        if image.shape not in self.sides:
            expected = " or ".join(f"{h}×{w}" for h, w in self.sides)
            raise BadRequest(422, f"'image' must be {expected}, got shape {list(image.shape)}")
        return image

    def from_png(self, data: bytes) -> np.ndarray:
        """A PNG file → a ``(h, w)`` float32 array (grey / 255, resized by box averaging)."""
        try:
            picture = Image.open(io.BytesIO(data))
            if picture.format != "PNG":
                raise BadRequest(415, f"the upload must be a PNG image, got {picture.format}")
            if max(picture.size) > MAX_PNG_SIDE:
                raise BadRequest(413, f"PNG larger than {MAX_PNG_SIDE} pixels a side")
            grey = picture.convert("L").convert("F")
        except (UnidentifiedImageError, OSError, Image.DecompressionBombError):
            raise BadRequest(422, "the upload is not a readable PNG image") from None
        grey = grey.resize((self.width, self.height), Image.Resampling.BOX)
        return np.asarray(grey, np.float32) / 255.0


def parse_json(body: bytes) -> dict:
    """A JSON object from ``body`` (400 if not JSON, 422 if not an object)."""
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError as err:
        try:  # NaN and Infinity are not JSON, but Python's parser reads them: say which
            obj = json.loads(body)
        except (ValueError, RecursionError):
            raise BadRequest(400, f"the body is not valid JSON: {err}") from None
    if not isinstance(obj, dict):
        raise BadRequest(422, "the body must be a JSON object")
    return obj


def require(obj: dict, *fields: str) -> None:
    missing = [f for f in fields if f not in obj]
    if missing:
        raise BadRequest(422, f"missing field(s): {', '.join(missing)}")


def user_of(value) -> str:
    """A user id: a non-empty string of at most :data:`MAX_USER_CHARS` characters."""
    if not isinstance(value, str) or not 0 < len(value) <= MAX_USER_CHARS:
        raise BadRequest(422, f"'user' must be a string of 1 to {MAX_USER_CHARS} characters")
    return value


def label_of(value) -> int:
    """A class label: an integer in [0, 10) (``true``/``false`` are not labels)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < NUM_CLASSES:
        raise BadRequest(422, f"'label' must be an integer from 0 to {NUM_CLASSES - 1}")
    return value
