"""``load(name)``: find a dataset's files, download them if missing, verify, decode.

Data directory, in order: the ``data_dir`` argument, then ``$OPTLAB_DATA_DIR``, then
``~/.cache/optlab``. A dataset's files sit in ``<dir>/<dataset>/`` (or directly in
``<dir>``). When they are not there, the loader also looks in ``<repo>/../shared/data``,
where this repository's development and CI setting keeps the original MNIST and
Fashion-MNIST files; only then does it download into ``<dir>/<dataset>/``. Every file is
checked against its published SHA-256 before it is decoded.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from optlab.experiments.data import cifar, idx
from optlab.experiments.data.dataset import DataError, Dataset, verify_file
from optlab.experiments.data.download import NoNetworkError
from optlab.experiments.data.download import download as download_file
from optlab.experiments.data.registry import DATASETS, MNIST_FILES, DatasetSpec
from optlab.experiments.data.split import split_validation
from sklearn.datasets import load_digits

ENV_VAR = "OPTLAB_DATA_DIR"
DEFAULT_DATA_DIR = "~/.cache/optlab"
SPLIT_SEED = 0  # the fixed seed of every split made here (digits test set, validation sets)
DIGITS_TEST_SIZE = 360


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """The data directory: ``data_dir``, else ``$OPTLAB_DATA_DIR``, else ``~/.cache/optlab``."""
    if data_dir is None:
        data_dir = os.environ.get(ENV_VAR) or DEFAULT_DATA_DIR
    return Path(data_dir).expanduser()


def shared_data_dir() -> Path | None:
    """``<repo>/../shared/data`` when running from a checkout that has it, else ``None``."""
    repo = Path(__file__).resolve().parents[2]
    shared = repo.parent / "shared" / "data"
    return shared if (repo / "pyproject.toml").is_file() and shared.is_dir() else None


def available() -> list[str]:
    """The names ``load`` accepts."""
    return sorted([*LOADERS, "digits"])


def load(
    name: str,
    *,
    data_dir: str | os.PathLike | None = None,
    download: bool = True,
    validation: int | float | None = None,
) -> Dataset:
    """Load a dataset by name as float32 images in [0, 1] and int32 labels.

    Args:
      name: one of :func:`available` (``digits``, ``mnist``, ``fashion_mnist``, ``cifar10``).
      data_dir: where the files are, or go; see :func:`resolve_data_dir`.
      download: fetch missing files from the dataset's official location. With ``False``
        the network is never touched and missing files raise ``DataError``.
      validation: if given, hold out this many (an int) or this fraction (a float in
        (0, 1)) of the training examples, stratified with a fixed seed, and return them as
        the test split; the official test set is then not returned. Use it to tune
        hyperparameters without looking at the test set.

    Raises:
      DataError: unknown name, missing files (and no network), or a bad file.
    """
    key = name.lower().replace("-", "_")
    if key == "digits":
        ds = load_digits_dataset()
    elif key in LOADERS:
        spec = DATASETS[key]
        ds = LOADERS[key](spec, locate(spec, resolve_data_dir(data_dir), download=download))
    else:
        raise DataError(f"unknown dataset {name!r}; available: {', '.join(available())}")
    return ds if validation is None else hold_out_validation(ds, validation)


def load_digits_dataset() -> Dataset:
    """scikit-learn's 8×8 digits (1797 images, embedded), pixels ``/ 16``, split 1437/360.

    The test set is 360 images held out by :func:`~experiments.data.split.split_validation`
    (stratified, seed 0), so every call gives the same split.
    """
    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[..., None]
    y = digits.target.astype(np.int32)
    x_train, y_train, x_test, y_test = split_validation(x, y, DIGITS_TEST_SIZE, seed=SPLIT_SEED)
    return Dataset(
        "digits",
        x_train,
        y_train,
        x_test,
        y_test,
        num_classes=10,
        meta={
            "source": "sklearn.datasets.load_digits (UCI optical digits, 8x8, 0..16)",
            "files": {},
            "split": f"stratified split of 1797: {len(y_train)} train / "
            f"{len(y_test)} test, random_state={SPLIT_SEED}",
        },
    )


def hold_out_validation(ds: Dataset, size: int | float) -> Dataset:
    """Replace the test split by a validation split of the training set
    (:func:`~experiments.data.split.split_validation`, stratified for classes, seed
    ``SPLIT_SEED``)."""
    n = len(ds.y_train)
    try:
        x_train, y_train, x_val, y_val = split_validation(
            ds.x_train, ds.y_train, size, seed=SPLIT_SEED, stratify=ds.num_classes > 0
        )
    except ValueError as err:
        raise ValueError(f"validation={size!r}: {err}") from None
    split = (
        f"validation: {len(y_val)} of the {n} training examples held out (stratified, "
        f"random_state={SPLIT_SEED}) and returned as the test split; train {len(y_train)}; "
        "the official test set is not used"
    )
    return ds.replace(
        x_train=x_train,
        y_train=y_train,
        x_test=x_val,
        y_test=y_val,
        meta={**ds.meta, "split": split, "test_split": "validation"},
    )


# ------------------------------------------------------------------------ finding files


def _find(names, roots, dataset: str) -> Path | None:
    for root in roots:
        for folder in (root / dataset, root):
            if all((folder / name).is_file() for name in names):
                return folder
    return None


def locate(spec: DatasetSpec, data_dir: Path, *, download: bool = True) -> Path:
    """The folder holding ``spec``'s files (or its extracted files), downloading if needed."""
    roots = [data_dir] + [d for d in [shared_data_dir()] if d is not None and d != data_dir]
    archives = [f.name for f in spec.files]
    extracted = [f"{spec.folder}/{f.name}" for f in spec.extracted]
    for names in (archives, extracted):
        if names and (folder := _find(names, roots, spec.name)):
            return folder
    target = data_dir / spec.name
    folders = [folder for root in roots for folder in (root / spec.name, root)]
    directories = [folder / name for folder in folders for name in (*archives, *extracted)
                   if (folder / name).is_dir()]  # fmt: skip
    if directories:
        raise DataError(
            f"{spec.name}: {directories[0]} is a directory, not a file; remove it so that the "
            "file can be put (or downloaded) there"
        )
    missing = [f for f in spec.files if not (target / f.name).is_file()]
    if not download:
        raise DataError(
            f"{spec.name}: files missing and download=False. " + where_to_put(spec, target)
        )
    try:
        for f in missing:
            download_file(f.url, target / f.name, sha256=f.sha256, md5=f.md5)
    except NoNetworkError as err:
        message = f"no network: cannot download {err.url} ({err.reason}).\n"
        raise NoNetworkError(message + where_to_put(spec, target), url=err.url) from err
    return target


def where_to_put(spec: DatasetSpec, target: Path) -> str:
    """Which files to place where, so the loader finds them without a network."""
    lines = [
        f"Put these files in {target}/ (or set ${ENV_VAR} / data_dir= to a folder "
        f"holding a '{spec.name}/' sub-folder with them):"
    ]
    lines += [f"  {f.name}  from {f.url}  sha256 {f.sha256}" for f in spec.files]
    if spec.extracted:
        lines.append(
            f"or the extracted folder {target / spec.folder}/ with "
            + ", ".join(f.name for f in spec.extracted)
        )
    return "\n".join(lines)


def _verified(spec_files, folder: Path, prefix: str = "") -> dict[str, dict]:
    """Verify each file's checksums; return ``{name: {path, sha256|md5}}`` for ``meta``."""
    files = {}
    for f in spec_files:
        path = folder / prefix / f.name
        digests = verify_file(path, f.sha256, f.md5)
        files[f.name] = {"path": str(path), **digests}
    return files


# ------------------------------------------------------------------------ decoding


def _images(raw: np.ndarray) -> np.ndarray:
    """uint8 ``(N, H, W[, C])`` -> float32 ``(N, H, W, C)`` in [0, 1]."""
    x = np.divide(raw, 255, dtype=np.float32)
    return x[..., None] if x.ndim == 3 else x


def _labels(raw: np.ndarray, num_classes: int, source: Path) -> np.ndarray:
    if raw.size and raw.max() >= num_classes:  # uint8: never negative
        raise DataError(
            f"{source}: labels range over [{raw.min()}, {raw.max()}], valid labels are "
            f"0..{num_classes - 1}"
        )
    return raw.astype(np.int32)


def load_idx_dataset(spec: DatasetSpec, folder: Path) -> Dataset:
    """MNIST-style data: four IDX ``.gz`` files in ``folder`` (see ``registry.MNIST_FILES``)."""
    files = _verified(spec.files, folder)
    arrays = {}
    for split in ("train", "test"):
        images_path = folder / MNIST_FILES[f"{split}_images"]
        labels_path = folder / MNIST_FILES[f"{split}_labels"]
        images = idx.read_idx(images_path, magic=idx.IMAGES_MAGIC)
        labels = idx.read_idx(labels_path, magic=idx.LABELS_MAGIC)
        if len(images) != len(labels):
            raise DataError(
                f"{images_path} holds {len(images)} images but {labels_path} holds "
                f"{len(labels)} labels; they must match"
            )
        arrays[split] = _images(images), _labels(labels, spec.num_classes, labels_path)
    return Dataset(
        spec.name,
        *arrays["train"],
        *arrays["test"],
        num_classes=spec.num_classes,
        meta={"source": spec.citation, "files": files, "split": "official train / test files"},
    )


def load_cifar_dataset(spec: DatasetSpec, folder: Path) -> Dataset:
    """CIFAR-10 from ``folder/cifar-10-batches-py/`` or ``folder/cifar-10-python.tar.gz``."""
    names = cifar.TRAIN_BATCHES + cifar.TEST_BATCHES
    extracted = folder / spec.folder
    if all((extracted / name).is_file() for name in names):
        files = _verified(spec.extracted, folder, spec.folder)
        blobs = {name: (extracted / name).read_bytes() for name in names}
        origin = str(extracted)
    else:
        files = _verified(spec.files, folder)
        tarball = folder / spec.files[0].name
        blobs = cifar.read_tarball(tarball, names, folder=spec.folder)
        origin = f"{tarball}:{spec.folder}"
    x_train, y_train = cifar.read_batches(blobs, cifar.TRAIN_BATCHES, origin=origin)
    x_test, y_test = cifar.read_batches(blobs, cifar.TEST_BATCHES, origin=origin)
    return Dataset(
        spec.name,
        _images(x_train),
        y_train,
        _images(x_test),
        y_test,
        num_classes=spec.num_classes,
        meta={"source": spec.citation, "files": files, "split": "official train / test batches"},
    )


LOADERS = {
    "mnist": load_idx_dataset,
    "fashion_mnist": load_idx_dataset,
    "cifar10": load_cifar_dataset,
}
