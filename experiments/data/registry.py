"""Where each dataset's files come from and what their bytes must hash to.

MNIST and Fashion-MNIST: the SHA-256 and MD5 of the original ``.gz`` files, as published
(tensorflow-datasets and torchvision use the same values) and as checked against the copies in
``../shared/data`` (see its ``SOURCES.md``). MNIST comes from the S3 mirror that torchvision
uses, because ``yann.lecun.com`` no longer serves the files.

CIFAR-10: the official page (https://www.cs.toronto.edu/~kriz/cifar.html) publishes only the
MD5 of ``cifar-10-python.tar.gz``; its SHA-256 is the value Keras pins in
``keras.datasets.cifar10``. Both are verified. For an already extracted
``cifar-10-batches-py`` folder only per-batch MD5s are published (torchvision's values), so
those batches are verified by MD5 alone.
"""

from __future__ import annotations

from typing import NamedTuple


class FileSpec(NamedTuple):
    """One file of a dataset: its name, where to download it and its checksums."""

    name: str
    url: str | None
    sha256: str | None
    md5: str | None = None
    size: int | None = None


class DatasetSpec(NamedTuple):
    """A dataset on disk: the files to fetch, plus alternative (extracted) files if any."""

    name: str
    num_classes: int
    files: tuple[FileSpec, ...]
    extracted: tuple[FileSpec, ...] = ()
    folder: str | None = None  # sub-folder holding the extracted files
    citation: str = ""


MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"
FASHION_MNIST_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/"

MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}


def _idx_files(base_url: str, hashes: dict[str, tuple[str, str, int]]) -> tuple[FileSpec, ...]:
    return tuple(
        FileSpec(name, base_url + name, sha256, md5, size)
        for name, (sha256, md5, size) in hashes.items()
    )


DATASETS: dict[str, DatasetSpec] = {
    "mnist": DatasetSpec(
        name="mnist",
        num_classes=10,
        files=_idx_files(
            MNIST_URL,
            {
                "train-images-idx3-ubyte.gz": (
                    "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
                    "f68b3c2dcbeaaa9fbdd348bbdeb94873",
                    9912422,
                ),
                "train-labels-idx1-ubyte.gz": (
                    "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
                    "d53e105ee54ea40749a09fcbcd1e9432",
                    28881,
                ),
                "t10k-images-idx3-ubyte.gz": (
                    "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
                    "9fb629c4189551a2d022fa330f9573f3",
                    1648877,
                ),
                "t10k-labels-idx1-ubyte.gz": (
                    "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
                    "ec29112dd5afa0611ce80d1b7f02629c",
                    4542,
                ),
            },
        ),
        citation="LeCun, Cortes, Burges: The MNIST database of handwritten digits (1998).",
    ),
    "fashion_mnist": DatasetSpec(
        name="fashion_mnist",
        num_classes=10,
        files=_idx_files(
            FASHION_MNIST_URL,
            {
                "train-images-idx3-ubyte.gz": (
                    "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
                    "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                    26421880,
                ),
                "train-labels-idx1-ubyte.gz": (
                    "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
                    "25c81989df183df01b3e8a0aad5dffbe",
                    29515,
                ),
                "t10k-images-idx3-ubyte.gz": (
                    "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
                    "bef4ecab320f06d8554ea6380940ec79",
                    4422102,
                ),
                "t10k-labels-idx1-ubyte.gz": (
                    "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
                    "bb300cfdad3c16e7a12a480ee83cd310",
                    5148,
                ),
            },
        ),
        citation="Xiao, Rasul, Vollgraf: Fashion-MNIST, arXiv:1708.07747 (2017).",
    ),
    "cifar10": DatasetSpec(
        name="cifar10",
        num_classes=10,
        files=(
            FileSpec(
                "cifar-10-python.tar.gz",
                CIFAR10_URL + "cifar-10-python.tar.gz",
                "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",
                "c58f30108f718f92721af3b95e74349a",
                170498071,
            ),
        ),
        extracted=(
            FileSpec("data_batch_1", None, None, "c99cafc152244af753f735de768cd75f"),
            FileSpec("data_batch_2", None, None, "d4bba439e000b95fd0a9bffe97cbabec"),
            FileSpec("data_batch_3", None, None, "54ebc095f3ab1f0389bbae665268c751"),
            FileSpec("data_batch_4", None, None, "634d18415352ddfa80567beed471001a"),
            FileSpec("data_batch_5", None, None, "482c414d41f54cd18b22e5b47cb7c3cb"),
            FileSpec("test_batch", None, None, "40351d587109b95175f43aff81a1287e"),
        ),
        folder="cifar-10-batches-py",
        citation="Krizhevsky: Learning Multiple Layers of Features from Tiny Images (2009).",
    ),
}
