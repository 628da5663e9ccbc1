"""The catalogue of bad inputs (docs/reliability.md): each raises one clear error, naming
what is wrong, the argument or file, and what would be valid, before any training step.

Data-file corruption at the parser level (truncated or corrupted ``.gz``, wrong IDX magic,
checksum mismatch, malicious pickles) is covered in tests/experiments/test_data.py and
tests/experiments/test_data_fuzz.py; here it is checked end to end through the CLI.
Unwritable folders and a full disk are checked here through the CLI and, for the
checkpointer itself, in tests/experiments/test_checkpoint.py.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from etils import epath
from optlab import models
from optlab import optimizers as opt
from optlab.experiments import cli, compare, data, engine
from optlab.experiments.data.synthetic import make_classification
from optlab.experiments.engine import loop

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "data"


@pytest.mark.parametrize(
    "factory, kwargs, message",
    [
        (opt.adam, {"learning_rate": -1.0}, r"learning_rate=-1.0 is invalid: .* >= 0"),
        (opt.adam, {"learning_rate": 0.1, "b1": 1.0}, r"b1=1.0 is invalid: b1 must be in \[0, 1\)"),
        (opt.rmsprop, {"learning_rate": 0.1, "eps": -1e-8}, r"eps=-1e-08 is invalid"),
        (opt.sgd, {"learning_rate": float("nan")}, r"learning_rate=nan is invalid"),
    ],
)
def test_bad_hyperparameters(factory, kwargs, message):
    with pytest.raises(ValueError, match=message):
        factory(**kwargs)


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(ValueError, match=r"unknown optimizer 'adamm'; valid names: .*adam,"):
        opt.get("adamm", learning_rate=0.1)
    with pytest.raises(ValueError, match=r"unknown hyperparameter\(s\) lr for 'adam'"):
        opt.get("adam", lr=0.1)
    with pytest.raises(ValueError, match=r"mlp"):
        models.build("nope", input_shape=(8,), num_classes=3, seed=0)
    with pytest.raises(ValueError, match=r"digits"):
        data.load("nope")


def _small():
    return make_classification(40, 8, 3, seed=0)


@pytest.fixture
def no_compile(monkeypatch):
    """Fail the test if the engine gets as far as compiling anything (``loop._compiled``
    builds every compiled function of a fit)."""

    def refuse(*args):
        raise AssertionError("the engine compiled before rejecting the input")

    monkeypatch.setattr(loop, "_compiled", refuse)


def test_shapes_that_do_not_fit_the_model_fail_before_training(no_compile):
    ds = _small()
    model = models.build("mlp", input_shape=(9,), num_classes=3, seed=0, widths=(4,))
    with pytest.raises(ValueError, match=r"expected input of shape \(N, 9\), received \(1, 8\)"):
        engine.fit(model, opt.sgd(0.1), ds, engine.TrainConfig(epochs=1, batch_size=8))


def test_labels_out_of_range():
    ds = _small()
    with pytest.raises(
        ValueError, match=r"y_train holds labels in \[1, 7\], valid labels are 0..2"
    ):
        ds.replace(y_train=np.where(ds.y_train == 0, 7, ds.y_train).astype(np.int32))


def test_labels_beyond_the_model_outputs_fail_before_training(no_compile):
    """Data that is not a ``Dataset`` is checked against the model's number of logits."""
    ds = _small()
    data = SimpleNamespace(**{**vars(ds), "y_test": np.full_like(ds.y_test, 5), "num_classes": 0})
    model = models.build("mlp", input_shape=(8,), num_classes=3, seed=0, widths=(4,))
    with pytest.raises(ValueError, match=r"y_test holds labels in \[5, 5\], valid labels are 0..2"):
        engine.fit(model, opt.sgd(0.1), data, engine.TrainConfig(epochs=1, batch_size=8))


@pytest.mark.parametrize("split, value", [("x_train", np.nan), ("x_test", np.inf)])
def test_non_finite_data_fails_before_training_naming_the_array(no_compile, split, value):
    ds = _small()
    x = getattr(ds, split).copy()
    x[3, 1] = value
    model = models.build("mlp", input_shape=(8,), num_classes=3, seed=0, widths=(4,))
    with pytest.raises(ValueError, match=rf"{split} holds 1 NaN or infinite value\(s\) \(first in"
                       r" example 3\)"):  # fmt: skip
        engine.fit(
            model,
            opt.sgd(0.1),
            ds.replace(**{split: x}),
            engine.TrainConfig(epochs=1, batch_size=8),
        )


def test_bad_train_config():
    with pytest.raises(ValueError, match=r"batch_size must be a positive integer"):
        engine.TrainConfig(batch_size=0)
    with pytest.raises(ValueError, match=r"batch_size 100 is larger than the training set"):
        engine.TrainConfig(batch_size=100).steps_per_epoch(32)


def _mlp(key=0):
    return models.build("mlp", input_shape=(8,), num_classes=3, seed=key, widths=(4,))


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda ds, config: engine.fit_population(_mlp, opt.sgd, {"learning_rate": [0.1, 0.2],
                                                                  "momentum": [0.9]}, [0], ds,
                                                  config),
         r"hparams must map names to 1-D lists of one common length"),
        (lambda ds, config: engine.fit_population(_mlp, opt.sgd, {"learning_rate": [0.1]}, [],
                                                  ds, config),
         r"seeds must not be empty"),
        (lambda ds, config: engine.fit(_mlp(), opt.sgd(0.1), ds, config, loss="mse"),
         r"loss must be an Objective or a function .* got str"),
        (lambda ds, config: engine.fit(_mlp(), opt.sgd(0.1), ds, config, on_non_finite="ignore"),
         r"on_non_finite must be one of stop, skip, got 'ignore'"),
        (lambda ds, config: engine.fit(_mlp(), opt.sgd(0.1), ds, config, resume=True),
         r"resume needs a checkpoint folder"),
        (lambda ds, config: engine.fit(_mlp(), opt.sgd(0.1), engine.padded(
            {"x": ds.x_train, "y": ds.y_train}), dataclasses.replace(config, batch_size=None)),
         r"padded training data \(train_size\) needs a batch_size"),
        (lambda ds, config: engine.fit(_mlp(), opt.sgd(0.1), engine.Splits(
            {"x": ds.x_train, "y": ds.y_train[:-1]}), config),
         r"every array of a split needs the same number of rows"),
        (lambda ds, config: engine.fit(_mlp(), opt.sgd(0.1), ds, config,
                                       loss=lambda model, batch, key: (0.0, {})),
         r"the splits \['test'\] cannot be evaluated: the loss has no per-example metrics"),
    ],
)  # fmt: skip
def test_bad_engine_arguments_fail_before_compiling(no_compile, call, message):
    with pytest.raises(ValueError, match=message):
        call(_small(), engine.TrainConfig(epochs=1, batch_size=8))


def test_a_checkpoint_folder_that_holds_checkpoints_needs_resume_before_compiling(tmp_path):
    ds, config = _small(), engine.TrainConfig(epochs=1, batch_size=8)
    engine.fit(_mlp(), opt.sgd(0.1), ds, config, checkpoint_dir=tmp_path)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(loop, "_compiled", lambda *args: pytest.fail("compiled first"))
        with pytest.raises(ValueError, match=r"already holds checkpoints \(epochs \[1\]\)"):
            engine.fit(_mlp(), opt.sgd(0.1), ds, config, checkpoint_dir=tmp_path)


# --------------------------------------------------------------------------- through the CLI


def _cli(*args, cwd=REPO):
    return subprocess.run(
        [sys.executable, "-m", "optlab.experiments", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _assert_one_clean_error(result, *fragments):
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr
    for fragment in fragments:
        assert fragment in result.stderr + result.stdout


@pytest.mark.skipif(not (SHARED / "mnist").is_dir(), reason="needs the shared MNIST files")
def test_cli_corrupted_data_file_is_one_readable_error(tmp_path):
    folder = tmp_path / "mnist"
    shutil.copytree(SHARED / "mnist", folder)
    labels = folder / "t10k-labels-idx1-ubyte.gz"
    labels.write_bytes(labels.read_bytes()[:100])  # truncated download
    result = _cli("data", "mnist", "--data-dir", str(tmp_path), "--no-download")
    _assert_one_clean_error(result, "t10k-labels-idx1-ubyte.gz", "checksum mismatch")


def test_cli_unknown_names_and_bad_options_are_one_readable_error(tmp_path):
    result = _cli("compare", "--quick", "--optimizers", "adamm", "--out", str(tmp_path / "run"))
    _assert_one_clean_error(result, "adamm", "adam")
    assert not (tmp_path / "run").exists()  # nothing half-written
    result = _cli("compare", "--quick", "--dataset", "nope", "--out", str(tmp_path / "run2"))
    _assert_one_clean_error(result, "nope")
    assert not (tmp_path / "run2").exists()


# --------------------------------------------------------------------------- in-process CLI

TINY_COMPARE = ["compare", "--quick", "--optimizers", "sgd", "--epochs", "2", "--seeds", "1",
                "--lr-grid-size", "1", "--batch-size", "64"]  # fmt: skip


def _main(capsys, *args):
    """``optlab ARGS`` in this process: (exit status, stderr)."""
    status = cli.main(list(args))
    return status, capsys.readouterr().err


def _assert_one_line(status, err, *fragments):
    assert status == 2
    progress = "compare:"  # tqdm's bar, redrawn with carriage returns
    lines = [line for line in err.replace("\r", "\n").splitlines() if line.strip()]
    lines = [line for line in lines if not line.startswith(progress)]
    assert len(lines) == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in lines[0]


def test_cli_unwritable_out_folder_is_one_line(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    status, err = _main(capsys, *TINY_COMPARE, "--out", str(tmp_path / "file" / "run"))
    _assert_one_line(status, err, "cannot write the run folder", "file/run")


def test_cli_disk_full_while_checkpointing_is_one_line_and_leaves_no_partial_files(
    tmp_path, capsys, monkeypatch
):
    def disk_full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(type(epath.Path(tmp_path)), "write_text", disk_full)
    run = tmp_path / "run"
    status, err = _main(capsys, *TINY_COMPARE, "--out", str(run), "--checkpoint-every", "1")
    _assert_one_line(status, err, "could not write the checkpoint of epoch 1", "No space left")
    left = [p.name for p in (run / "checkpoints" / "sgd").iterdir()]
    assert left == []  # no half-written checkpoint folder
    assert not (run / "metrics.jsonl").exists() and not (run / "summary.md").exists()


@pytest.mark.parametrize(
    "change, message",
    [
        ({"x_train": lambda x, y: (np.where(np.arange(len(x))[:, None, None, None] == 2, np.nan,
                                            x), y)}, "x_train holds"),
        ({"x_train": lambda x, y: (x, np.where(np.arange(len(y)) == 0, 10, y))},
         "y_train holds labels in [0, 10], valid labels are 0..9"),
    ],
)  # fmt: skip
def test_cli_bad_data_is_one_line_before_any_output(tmp_path, capsys, monkeypatch, change, message):
    real_load = data.load

    def load(name, data_dir=None, validation=None):
        ds = real_load(name, data_dir=data_dir, validation=validation)
        x, y = change["x_train"](ds.x_train, ds.y_train)
        return SimpleNamespace(
            **{f.name: getattr(ds, f.name) for f in ds.__dataclass_fields__.values()}
            | {"x_train": x, "y_train": y, "input_shape": ds.input_shape}
        )

    monkeypatch.setattr(compare.datasets, "load", load)
    status, err = _main(capsys, *TINY_COMPARE, "--out", str(tmp_path / "run"))
    _assert_one_line(status, err, message)
    assert not (tmp_path / "run").exists()


def test_cli_config_file_with_unknown_keys_is_one_line(tmp_path, capsys):
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"quick": True, "batch_sise": 64}))
    status, err = _main(capsys, "--config", str(config), "compare")
    _assert_one_line(status, err, "unknown key(s) 'batch_sise'", "valid keys: batch_size,")
    config.write_text("[1, 2]")
    _assert_one_line(*_main(capsys, "compare", "--config", str(config)), "JSON object")
    config.write_text(json.dumps({"on_non_finite": "ignore"}))
    _assert_one_line(*_main(capsys, "compare", "--config", str(config)), "one of stop, skip")
    _assert_one_line(*_main(capsys, "compare", "--config", str(tmp_path / "nope.json")),
                     "cannot read config file")  # fmt: skip


def test_cli_resume_without_out_is_one_line(capsys):
    _assert_one_line(*_main(capsys, *TINY_COMPARE, "--resume"), "--resume needs --out")


@pytest.mark.parametrize("rates, seeds, epochs", [(100, 10**6, 1), (1, 1, 10**12)])
def test_a_run_too_large_for_memory_is_refused_before_anything_is_allocated(
    no_compile, monkeypatch, rates, seeds, epochs
):
    built = []
    monkeypatch.setattr(loop, "init_population", lambda *a, **k: built.append(1))
    with pytest.raises(ValueError, match=r"^this run needs about [\d,.]+ GiB .* more than"):
        engine.fit_population(
            _mlp, opt.sgd, {"learning_rate": [0.1] * rates}, range(seeds), _small(),
            engine.TrainConfig(epochs=epochs, batch_size=8),
        )  # fmt: skip
    assert built == []


@pytest.mark.parametrize("option", [["--epochs", "1000000000000"], ["--seeds", "10000000"]])
def test_cli_run_too_large_for_memory_is_one_line_and_writes_nothing(tmp_path, capsys, option):
    out = tmp_path / "run"
    assert cli.main(["compare", "--optimizers", "sgd", *option, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "needs about" in err and "GiB" in err and len(err.splitlines()) == 1
    assert not out.exists()
