"""Tests for experiments.data: loaders, checksums, bad files, directory resolution, synthetic."""

from __future__ import annotations

import gzip
import json
import os
import pickle
import urllib.request

import numpy as np
import pytest
from optlab.experiments import cli, data
from optlab.experiments.data import cifar, idx, loading, registry

from tests.experiments.data_fixtures import (
    cifar_batch,
    cifar_pickle,
    idx_bytes,
    tiny_mnist_arrays,
    write_tiny_cifar,
    write_tiny_mnist,
)


@pytest.fixture
def no_shared(monkeypatch):
    """Hide ../shared/data and the network, so only the test's own files count."""
    monkeypatch.setattr(loading, "shared_data_dir", lambda: None)

    def no_urlopen(*args, **kwargs):
        raise AssertionError("the network must not be touched")

    monkeypatch.setattr(urllib.request, "urlopen", no_urlopen)


# ---------------------------------------------------------------- digits


def test_digits_shapes_range_and_split():
    ds = data.load("digits")
    assert ds.x_train.shape == (1437, 8, 8, 1) and ds.x_test.shape == (360, 8, 8, 1)
    assert ds.input_shape == (8, 8, 1) and ds.num_classes == 10
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int32
    assert 0.0 <= ds.x_train.min() and ds.x_train.max() == 1.0
    # stratified: every class in the test set with 36 ± 1 examples
    assert np.all(np.abs(np.bincount(ds.y_test, minlength=10) - 36) <= 1)
    assert "random_state=0" in ds.meta["split"]
    json.dumps(ds.meta)  # meta goes into run folders' config.json


def test_digits_split_is_deterministic():
    a, b = data.load("digits"), data.load("digits")
    np.testing.assert_array_equal(a.x_test, b.x_test)
    np.testing.assert_array_equal(a.y_train, b.y_train)


def test_validation_holds_out_part_of_train():
    full = data.load("digits")
    ds = data.load("digits", validation=0.2)
    assert len(ds.y_test) == round(0.2 * 1437) and len(ds.y_train) == 1437 - len(ds.y_test)
    assert ds.meta["test_split"] == "validation"
    # the validation images are training images, none of them official test images
    train_rows = {row.tobytes() for row in full.x_train}
    assert all(row.tobytes() in train_rows for row in ds.x_test)
    with pytest.raises(ValueError, match="validation"):
        data.load("digits", validation=1437)


# ---------------------------------------------------------------- splits


def labelled(counts=(50, 30, 20), seed=1):
    """Examples ``x = 0..n−1`` (so rows are identifiable) with shuffled labels per class."""
    y = np.random.default_rng(seed).permutation(np.repeat(np.arange(len(counts)), counts))
    return np.arange(len(y)), y.astype(np.int32)


def test_split_validation_is_disjoint_stratified_and_seeded():
    x, y = labelled()
    x_train, y_train, x_val, y_val = data.split_validation(x, y, 0.2, seed=3)
    assert len(x_val) == 20 and len(x_train) == 80
    assert sorted([*x_train, *x_val]) == list(range(100))  # a partition of the examples
    np.testing.assert_array_equal(y_train, y[x_train])  # labels travel with their examples
    assert np.bincount(y_val).tolist() == [10, 6, 4]  # 20% of each class of 50, 30, 20
    same = data.split_validation(x, y, 0.2, seed=3)
    np.testing.assert_array_equal(same[2], x_val)
    other = data.split_validation(x, y, 0.2, seed=4)
    assert set(other[2]) != set(x_val)


def test_split_validation_counts_and_fractions():
    x, y = labelled()
    assert len(data.split_validation(x, y, 7)[3]) == 7
    assert len(data.split_validation(x, y, 0.125)[3]) == 12  # round(12.5) to even
    targets = np.linspace(0.0, 1.0, 10, dtype=np.float32)  # regression: no classes
    assert len(data.split_validation(np.arange(10), targets, 3, stratify=False)[1]) == 7


@pytest.mark.parametrize(
    "held_out, message",
    [
        (0, "must leave 1..99"),
        (100, "must leave 1..99"),
        (1.0, r"fraction must be in \(0, 1\)"),
        (True, "an int or a fraction"),
        (2, "at least 3 \\(one per class\\) in each part"),
    ],
)
def test_split_validation_rejects_sizes_that_leave_a_part_empty(held_out, message):
    x, y = labelled()
    with pytest.raises(ValueError, match=message):
        data.split_validation(x, y, held_out)


def test_stratified_subset_keeps_proportions_and_everything_when_not_smaller():
    x, y = labelled()
    x_sub, y_sub = data.stratified_subset(x, y, 50, seed=0)
    assert np.bincount(y_sub).tolist() == [25, 15, 10]
    np.testing.assert_array_equal(y_sub, y[x_sub])
    assert data.stratified_subset(x, y, None)[0] is x and data.stratified_subset(x, y, 100)[0] is x
    with pytest.raises(ValueError, match="subset size must be >= 1"):
        data.stratified_subset(x, y, 0)


def test_unknown_name_lists_valid_ones():
    with pytest.raises(data.DataError, match="available: cifar10, digits, fashion_mnist, mnist"):
        data.load("imagenet")
    assert data.available() == ["cifar10", "digits", "fashion_mnist", "mnist"]


# ---------------------------------------------------------------- MNIST, Fashion-MNIST (real)


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_real_idx_datasets_from_shared_data(name):
    shared = loading.shared_data_dir()
    spec = registry.DATASETS[name]
    if shared is None or not all((shared / name / f.name).is_file() for f in spec.files):
        pytest.skip(f"the original {name} files are not in ../shared/data")
    ds = data.load(name, download=False, data_dir=shared)
    assert ds.x_train.shape == (60000, 28, 28, 1) and ds.x_test.shape == (10000, 28, 28, 1)
    assert ds.x_train.dtype == np.float32 and 0.0 == ds.x_train.min() and ds.x_train.max() == 1.0
    assert set(np.unique(ds.y_train)) == set(range(10)) == set(np.unique(ds.y_test))
    for f in spec.files:  # every file was verified and its digest recorded
        assert ds.meta["files"][f.name]["sha256"] == f.sha256
    if name == "fashion_mnist":  # balanced, per SOURCES.md
        assert np.all(np.bincount(ds.y_train) == 6000) and np.all(np.bincount(ds.y_test) == 1000)


# ---------------------------------------------------------------- IDX parser and loader


def test_idx_parser_roundtrip_all_dtypes():
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    np.testing.assert_array_equal(idx.parse_idx(idx_bytes(images), magic=idx.IMAGES_MAGIC), images)
    values = np.array([[1.5, -2.0]], dtype=">f4")
    raw = bytes([0, 0, 0x0D, 2]) + (1).to_bytes(4, "big") + (2).to_bytes(4, "big")
    np.testing.assert_array_equal(idx.parse_idx(raw + values.tobytes()), values)


def test_tiny_mnist_loads_through_load(tmp_path, monkeypatch, no_shared):
    arrays = tiny_mnist_arrays()
    spec = write_tiny_mnist(tmp_path / "mnist", arrays)
    monkeypatch.setitem(registry.DATASETS, "mnist", spec)
    ds = data.load("mnist", data_dir=tmp_path, download=False)
    assert ds.x_train.shape == (6, 28, 28, 1) and ds.x_test.shape == (4, 28, 28, 1)
    np.testing.assert_allclose(ds.x_train[..., 0], arrays["train_images"] / 255, rtol=1e-6)
    np.testing.assert_array_equal(ds.y_test, arrays["test_labels"])
    assert ds.meta["files"]["t10k-labels-idx1-ubyte.gz"]["path"].startswith(str(tmp_path))
    # $OPTLAB_DATA_DIR is used when data_dir is not given; files may sit directly in it too
    monkeypatch.setenv("OPTLAB_DATA_DIR", str(tmp_path / "mnist"))
    assert data.resolve_data_dir() == tmp_path / "mnist"
    assert len(data.load("mnist", download=False).y_train) == 6


def test_resolve_data_dir_order(monkeypatch, tmp_path):
    monkeypatch.delenv("OPTLAB_DATA_DIR", raising=False)
    assert data.resolve_data_dir() == data.resolve_data_dir("~/.cache/optlab")
    assert str(data.resolve_data_dir()).endswith(os.path.join(".cache", "optlab"))
    monkeypatch.setenv("OPTLAB_DATA_DIR", str(tmp_path))
    assert data.resolve_data_dir() == tmp_path
    assert data.resolve_data_dir(tmp_path / "x") == tmp_path / "x"


def test_missing_files_without_download_say_where_to_put_them(tmp_path, no_shared):
    with pytest.raises(data.DataError) as err:
        data.load("fashion_mnist", data_dir=tmp_path, download=False)
    message = str(err.value)
    assert "download=False" in message and str(tmp_path / "fashion_mnist") in message
    for f in registry.DATASETS["fashion_mnist"].files:
        assert f.name in message and f.sha256 in message


def test_gunzip_refuses_output_beyond_the_cap():
    bomb = gzip.compress(bytes(10_000))
    assert idx.gunzip(bomb, source="ok", max_bytes=10_000) == bytes(10_000)
    with pytest.raises(data.DataError, match="bomb.gz: decompresses to more than 9999 bytes"):
        idx.gunzip(bomb, source="bomb.gz", max_bytes=9_999)


def _rewrite(path, transform):
    path.write_bytes(transform(path.read_bytes()))


def _bad_idx_cases():
    labels = "train-labels-idx1-ubyte.gz"
    images = "train-images-idx3-ubyte.gz"

    def regzip(fn):
        return lambda raw: gzip.compress(fn(gzip.decompress(raw)), mtime=0)

    return {
        "truncated gzip": (images, lambda raw: raw[: len(raw) // 2], "cannot decompress"),
        "corrupted gzip bytes": (
            images,
            lambda raw: raw[:20] + bytes(b ^ 0xFF for b in raw[20:40]) + raw[40:],
            "cannot decompress",
        ),
        "wrong magic": (labels, regzip(lambda d: b"\x00\x00\x08\x03" + d[4:]), "0x00000801"),
        "header/size mismatch": (
            images,
            regzip(lambda d: d[:4] + (7).to_bytes(4, "big") + d[8:]),
            r"header says shape \(7, 28, 28\)",
        ),
        "labels out of range": (
            labels,
            regzip(lambda d: d[:-1] + bytes([10])),
            "valid labels are 0..9",
        ),
        "image/label count mismatch": (
            labels,
            regzip(lambda d: d[:4] + (5).to_bytes(4, "big") + d[8:-1]),
            "must match",
        ),
    }


@pytest.mark.parametrize("case", list(_bad_idx_cases()))
def test_bad_idx_files_raise_data_error_naming_the_file(tmp_path, case):
    file_name, transform, expected = _bad_idx_cases()[case]
    spec = write_tiny_mnist(tmp_path)
    _rewrite(tmp_path / file_name, transform)
    unchecked = spec._replace(files=tuple(f._replace(sha256=None, md5=None) for f in spec.files))
    with pytest.raises(data.DataError, match=expected) as err:
        loading.load_idx_dataset(unchecked, tmp_path)
    assert file_name in str(err.value)


def test_checksum_mismatch_names_file_and_both_digests(tmp_path):
    spec = write_tiny_mnist(tmp_path)
    _rewrite(tmp_path / "t10k-images-idx3-ubyte.gz", lambda raw: raw + b"\x00")
    with pytest.raises(data.DataError, match="sha256 checksum mismatch") as err:
        loading.load_idx_dataset(spec, tmp_path)
    message = str(err.value)
    assert "t10k-images-idx3-ubyte.gz" in message and spec.files[2].sha256 in message


# ---------------------------------------------------------------- CIFAR-10


@pytest.mark.parametrize("tarball", [False, True], ids=["extracted", "tarball"])
def test_cifar10_from_real_pickle_format(tmp_path, monkeypatch, no_shared, tarball):
    spec, batches = write_tiny_cifar(tmp_path / "cifar10", tarball=tarball)
    monkeypatch.setitem(registry.DATASETS, "cifar10", spec)
    ds = data.load("cifar10", data_dir=tmp_path, download=False)
    assert ds.x_train.shape == (15, 32, 32, 3) and ds.x_test.shape == (3, 32, 32, 3)
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int32
    # pixel (r, c) of channel ch is row entry ch·1024 + r·32 + c
    rows = batches["data_batch_2"][b"data"]
    np.testing.assert_allclose(ds.x_train[3 + 1, 5, 7, 2], rows[1, 2 * 1024 + 5 * 32 + 7] / 255)
    np.testing.assert_array_equal(ds.y_test, batches["test_batch"][b"labels"])
    assert set(ds.meta["files"]) == (
        {"cifar-10-python.tar.gz"} if tarball else set(cifar.TRAIN_BATCHES + cifar.TEST_BATCHES)
    )


def test_cifar10_corrupted_batch_fails_md5(tmp_path, monkeypatch, no_shared):
    spec, _ = write_tiny_cifar(tmp_path / "cifar10", tarball=False)
    _rewrite(tmp_path / "cifar10" / "cifar-10-batches-py" / "data_batch_3", lambda r: r[:-5])
    monkeypatch.setitem(registry.DATASETS, "cifar10", spec)
    with pytest.raises(data.DataError, match="data_batch_3: md5 checksum mismatch"):
        data.load("cifar10", data_dir=tmp_path, download=False)


def _bad_pickles():
    good = cifar_batch(2, 0)
    return {
        "not a dict": (pickle.dumps([1, 2]), "holds a list"),
        "missing labels": (cifar_pickle({b"data": good[b"data"]}), "missing key"),
        "wrong data shape": (
            cifar_pickle({**good, b"data": good[b"data"][:, :100]}),
            "expected a uint8 array",
        ),
        "label count": (cifar_pickle({**good, b"labels": [1]}), "must be a list of 2 ints"),
        "labels out of range": (
            cifar_pickle(cifar_batch(2, 0, label_offset=10)),
            "valid labels are ints 0..9",
        ),
        "huge label": (cifar_pickle({**good, b"labels": [2**70, 1]}), "label 1180591620717"),
        "nested label": (cifar_pickle({**good, b"labels": [[[1]], 1]}), "label a list found"),
        "0-d labels": (cifar_pickle({**good, b"labels": np.array(5)}), "ndarray of length n/a"),
        "truncated": (cifar_pickle(good)[:-100], "not a valid CIFAR-10 pickle"),
        "forbidden class": (
            pickle.dumps({b"data": __import__("collections").OrderedDict()}),
            "forbidden global collections.OrderedDict",
        ),
    }


@pytest.mark.parametrize("case", list(_bad_pickles()))
def test_bad_cifar_pickles_raise_data_error(case):
    raw, expected = _bad_pickles()[case]
    with pytest.raises(data.DataError, match=expected) as err:
        cifar.parse_batch(raw, source="somewhere/data_batch_1")
    assert "somewhere/data_batch_1" in str(err.value)


class _Exploit:
    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (os.mkdir, (self.path,))


def test_forbidden_global_is_never_called(tmp_path):
    marker = tmp_path / "pwned"
    raw = pickle.dumps({b"data": _Exploit(marker), b"labels": []}, protocol=2)
    with pytest.raises(data.DataError, match=r"forbidden global posix\.mkdir"):
        cifar.parse_batch(raw, source="evil")
    assert not marker.exists()


def test_reconstruct_refuses_a_preallocated_shape():
    # numpy pickles always reconstruct from shape (0,); a huge shape would allocate blindly.
    raw = cifar_pickle(cifar_batch(1, 0)).replace(b"K\x00\x85", b"J\xff\xff\xff\x7f\x85", 1)
    with pytest.raises(data.DataError, match="refusing _reconstruct"):
        cifar.parse_batch(raw, source="big")


def test_deeply_nested_pickle_is_refused_before_it_is_built():
    # A dict keyed by a deeply nested tuple: at 10^6 levels plain pickle.loads segfaults
    # hashing it; the cap refuses far shallower nesting before building anything.
    raw = b"\x80\x02}(" + b")" + b"\x85" * 10**5 + b"K\x01u."
    with pytest.raises(data.DataError, match="100000 tuples/frozensets"):
        cifar.parse_batch(raw, source="deep")


# ---------------------------------------------------------------- synthetic


def test_make_classification_is_deterministic_and_separable():
    a = data.make_classification(400, 5, 3, seed=1, separation=3.0)
    b = data.make_classification(400, 5, 3, seed=1, separation=3.0)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    assert a.x_train.shape == (320, 5) and a.x_test.shape == (80, 5) and a.num_classes == 3
    assert a.x_train.dtype == np.float32 and a.y_train.dtype == np.int32
    # nearest class mean classifies well separated clusters almost perfectly
    means = np.stack([a.x_train[a.y_train == k].mean(0) for k in range(3)])
    predicted = np.argmin(((a.x_test[:, None] - means) ** 2).sum(-1), axis=1)
    assert (predicted == a.y_test).mean() > 0.9
    assert not np.array_equal(a.x_train, data.make_classification(400, 5, 3, seed=2).x_train)


def test_make_regression_recovers_coefficients():
    ds = data.make_regression(300, 4, seed=0, noise=0.01)
    assert ds.num_classes == 0 and ds.y_train.dtype == np.float32
    x = np.c_[ds.x_train, np.ones(len(ds.x_train))]
    w = np.linalg.lstsq(x, ds.y_train, rcond=None)[0]
    np.testing.assert_allclose(w[:4], ds.meta["coef"], rtol=1e-3, atol=1e-3)


def test_ill_conditioned_quadratic_deepobs_spectrum():
    q = data.ill_conditioned_quadratic(100, seed=0)
    eigenvalues = np.sort(np.linalg.eigvalsh(q.hessian.astype(np.float64)))
    assert np.all((eigenvalues[:90] > 0) & (eigenvalues[:90] < 1))
    assert np.all((eigenvalues[90:] > 30 - 1e-3) & (eigenvalues[90:] < 60 + 1e-3))
    np.testing.assert_allclose(eigenvalues, np.sort(q.eigenvalues), rtol=1e-4, atol=1e-4)
    assert np.abs(q.hessian - np.diag(np.diag(q.hessian))).max() > 0.1  # rotated
    k = data.ill_conditioned_quadratic(10, condition=1e3, rotate=False, seed=0)
    np.testing.assert_allclose(k.condition_number, 1e3, rtol=1e-5)
    np.testing.assert_array_equal(k.hessian, np.diag(np.diag(k.hessian)))
    theta = np.ones(10, np.float32)
    np.testing.assert_allclose(k.loss(theta), 0.5 * k.eigenvalues.sum(), rtol=1e-5)


def test_add_label_noise_changes_exactly_the_fraction():
    ds = data.load("digits")
    noisy = data.add_label_noise(ds, 0.25, seed=0)
    changed = noisy.y_train != ds.y_train
    assert changed.sum() == round(0.25 * len(ds.y_train))
    assert noisy.meta["label_noise"] == {"fraction": 0.25, "seed": 0, "changed": changed.sum()}
    np.testing.assert_array_equal(noisy.y_test, ds.y_test)
    assert noisy.y_train.min() >= 0 and noisy.y_train.max() < 10
    np.testing.assert_array_equal(data.add_label_noise(ds, 0.25, seed=0).y_train, noisy.y_train)


def test_duplicate_repeats_every_example():
    ds = data.make_classification(50, 4, 2, seed=0)
    doubled = data.duplicate(ds, 2, seed=0)
    assert len(doubled.y_train) == 2 * len(ds.y_train)
    rows, counts = np.unique(doubled.x_train, axis=0, return_counts=True)
    assert len(rows) == len(ds.x_train) and np.all(counts == 2)
    assert len(data.duplicate(ds, 1.5, seed=0).y_train) == 60
    json.dumps(data.add_label_noise(ds, 0.1, seed=0).meta)
    json.dumps(data.make_regression(20, 2, seed=0).meta)
    with pytest.raises(ValueError, match="2 classes"):
        data.add_label_noise(data.make_regression(20, 2, seed=0), 0.1, seed=0)


# ---------------------------------------------------------------- CLI


def test_cli_data_subcommand(tmp_path, capsys, monkeypatch, no_shared):
    monkeypatch.setitem(registry.DATASETS, "mnist", write_tiny_mnist(tmp_path / "mnist"))
    assert cli.main(["data", "digits", "mnist", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "digits: ok  train 1437, test 360" in out
    assert f"mnist: ok  train 6, test 4, input (28, 28, 1), 4 file(s) verified  [{tmp_path}" in out
    assert cli.main(["data", "fashion_mnist", "--data-dir", str(tmp_path), "--no-download"]) == 2
    assert "fashion_mnist: FAILED" in capsys.readouterr().out
