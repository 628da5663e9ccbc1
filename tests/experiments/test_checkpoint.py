"""Checkpoint and resume: atomic saves, retention, fingerprints, SIGKILL-and-resume.

The runs go through ``engine.fit`` and ``engine.fit_population`` with
``checkpoint_dir=..., resume=...``, one checkpoint per epoch.
"""

from __future__ import annotations

import errno
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from etils import epath
from optlab import models
from optlab import optimizers as opt
from optlab.experiments import engine
from optlab.experiments.checkpoint import (
    META,
    STATE,
    CheckpointConfig,
    CheckpointCorruptError,
    Checkpointer,
    CheckpointMismatchError,
    diff_fingerprints,
    fingerprint,
    state_digest,
)
from optlab.experiments.data.synthetic import make_classification

REPO = Path(__file__).resolve().parents[2]
EPOCHS = 6


def _setup(learning_rate=0.05):
    ds = make_classification(80, 8, 3, seed=0)
    model = models.build("mlp", input_shape=ds.input_shape, num_classes=3, seed=0, widths=(16,))
    tx = opt.adam(learning_rate)
    config = engine.TrainConfig(epochs=EPOCHS, batch_size=16)
    fp = fingerprint(model="mlp", widths=[16], optimizer="adam", learning_rate=learning_rate)
    return ds, model, tx, config, fp


def _announcer(announce: bool):
    def on_epoch(report):  # called after the epoch's checkpoint is written
        if announce:
            print(f"saved {report.epoch}", flush=True)

    return on_epoch


def train(directory, *, resume: bool, announce: bool = False, learning_rate=0.05):
    """Train EPOCHS epochs through ``engine.fit`` with a checkpoint after each (keep 2)."""
    ds, model, tx, config, fp = _setup(learning_rate)
    result = engine.fit(
        model, tx, ds, config, on_epoch=_announcer(announce), checkpoint_dir=directory, keep=2,
        resume=resume, fingerprint=fp,
    )  # fmt: skip
    return result.state, result.history


def train_population(directory, *, resume: bool, announce: bool = False):
    """EPOCHS epochs of 2 rates × 2 seeds through ``engine.fit_population`` (keep 2); the
    rate 1e30 diverges, so the frozen members and the divergence marks are saved too."""
    ds = make_classification(80, 8, 3, seed=0)
    result = engine.fit_population(
        lambda key: models.build("mlp", input_shape=ds.input_shape, num_classes=3, seed=key,
                                 widths=(16,)),
        opt.adam, {"learning_rate": [0.05, 1e30]}, [0, 1], ds,
        engine.TrainConfig(epochs=EPOCHS, batch_size=16), on_epoch=_announcer(announce),
        checkpoint_dir=directory, keep=2, resume=resume, fingerprint={"optimizer": "adam"},
    )  # fmt: skip
    return result.state, result.history


RUNS = {"fit": train, "population": train_population}


def _leaves(state):
    return [
        np.asarray(jax.random.key_data(leaf) if _is_key(leaf) else leaf)
        for leaf in jax.tree.leaves(state)
    ]


def _is_key(leaf) -> bool:
    return jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key)


def _worker(directory, run="fit"):  # run in a subprocess by test_sigkill_then_resume_...
    RUNS[run](directory, resume=True, announce=True)


@pytest.mark.parametrize("run", sorted(RUNS))
def test_sigkill_then_resume_is_bitwise_identical(tmp_path, run):
    reference, reference_history = RUNS[run](tmp_path / "reference", resume=False)
    rng = random.Random()
    kill_after = rng.randint(1, EPOCHS - 2)  # epochs saved before the kill
    delay = rng.uniform(0.0, 0.05)  # then a random moment: mid-epoch or mid-save
    code = (
        "from tests.experiments.test_checkpoint import _worker; "
        f"_worker({str(tmp_path)!r}, {run!r})"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    try:
        for line in proc.stdout:
            if line.strip() == f"saved {kill_after}":
                time.sleep(delay)
                break
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    with Checkpointer(CheckpointConfig(tmp_path)) as ckpt:
        saved = ckpt.steps()
    assert saved and saved[-1] < EPOCHS, f"kill after {kill_after}+{delay:.3f}s: {saved}"

    resumed, history = RUNS[run](tmp_path, resume=True)
    for a, b in zip(_leaves(resumed), _leaves(reference), strict=True):
        np.testing.assert_array_equal(a, b)  # bitwise: params, optimizer state, step, key
    np.testing.assert_array_equal(history.diverged, reference_history.diverged)
    assert history.metrics.keys() == reference_history.metrics.keys()
    for name, values in reference_history.metrics.items():
        np.testing.assert_array_equal(history.metrics[name], values)  # NaN where diverged
    with Checkpointer(CheckpointConfig(tmp_path)) as ckpt:
        assert ckpt.steps() == [EPOCHS - 1, EPOCHS]  # keep=2


def test_a_save_left_unfinished_by_a_kill_is_removed_before_the_folder_is_used(tmp_path):
    # What SIGKILL in the middle of Orbax's save of epoch 2 leaves behind.
    with Checkpointer(CheckpointConfig(tmp_path)) as ckpt:
        ckpt.save(1, {"w": jnp.zeros(3)}, [], fingerprint())
    unfinished = tmp_path / "2.orbax-checkpoint-tmp-1764500000"
    (unfinished / "state").mkdir(parents=True)
    (unfinished / "state" / "half_written").write_bytes(b"\0" * 100)

    first = Checkpointer(CheckpointConfig(tmp_path))  # e.g. a look at the saved steps
    assert not unfinished.exists()  # removed synchronously, not by a background thread
    assert first.steps() == [1]
    assert first.restore_latest({"w": jnp.ones(3)}, fingerprint())[2] == 1
    with Checkpointer(CheckpointConfig(tmp_path)) as second:  # the resumed run
        assert second.save(2, {"w": jnp.ones(3)}, [], fingerprint())
        assert second.steps() == [1, 2]
    first.close()


def test_restore_returns_every_part_of_the_state(tmp_path):
    state, history = train(tmp_path, resume=False)
    ds, model, tx, _, _ = _setup()
    _, fresh = engine.init_state(model, tx, engine.seed_keys(1)[1])
    fresh = jax.tree.map(lambda leaf: leaf[None], fresh)  # the saved population of one
    with Checkpointer(CheckpointConfig(tmp_path)) as ckpt:
        saved_fingerprint = ckpt.read_meta(EPOCHS)["fingerprint"]
        restored, restored_history, epoch = ckpt.restore_latest(fresh, saved_fingerprint)
    assert epoch == EPOCHS
    assert restored_history == history.to_json()
    assert isinstance(restored, engine.TrainState)
    assert int(restored.step[0]) == EPOCHS * (len(ds.x_train) // 16)
    assert int(restored.epoch[0]) == EPOCHS
    for a, b in zip(_leaves(restored), _leaves(state), strict=True):
        np.testing.assert_array_equal(a, b[None])
        assert a.dtype == b.dtype


def test_a_different_configuration_is_refused_saying_what_differs(tmp_path):
    train(tmp_path, resume=False)
    with pytest.raises(
        CheckpointMismatchError, match=r"user.learning_rate: checkpoint has 0.05, this"
    ):
        train(tmp_path, resume=True, learning_rate=0.1)


def test_a_different_state_layout_is_refused(tmp_path):
    ckpt = Checkpointer(CheckpointConfig(tmp_path))
    fp = fingerprint(model="x")
    ckpt.save(1, {"w": jnp.zeros(3)}, [], fp)
    with pytest.raises(CheckpointMismatchError, match=r"state\.\['w'\]\.shape"):
        ckpt.restore_latest({"w": jnp.zeros(4)}, fp)


def test_diff_fingerprints_names_missing_and_changed_keys():
    lines = diff_fingerprints({"a": 1, "b": {"c": 2}}, {"b": {"c": 3}, "d": 4})
    assert lines == [
        "a: checkpoint has 1, this run has no such key",
        "b.c: checkpoint has 2, this run has 3",
        "d: checkpoint has no such key, this run has 4",
    ]


def test_retention_keeps_the_latest_and_every_n(tmp_path):
    ckpt = Checkpointer(CheckpointConfig(tmp_path, every=2, keep=2))
    fp = fingerprint()
    written = [ckpt.save(e, {"w": jnp.full(2, e)}, [], fp) for e in range(1, 8)]
    assert written == [False, True, False, True, False, True, False]
    assert ckpt.steps() == [4, 6]
    assert ckpt.save(7, {"w": jnp.full(2, 7)}, [], fp, force=True)
    assert ckpt.steps() == [6, 7]


def test_disk_full_mid_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    ckpt = Checkpointer(CheckpointConfig(tmp_path))
    fp = fingerprint()
    ckpt.save(1, {"w": jnp.ones(2)}, [{"epoch": 1}], fp)

    def disk_full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(type(epath.Path(tmp_path)), "write_text", disk_full)
    with pytest.raises(OSError, match=r"epoch 2 .*No space left.*checkpoint \(epoch 1\) is intact"):
        ckpt.save(2, {"w": jnp.full(2, 2.0)}, [{"epoch": 2}], fp)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["1"]  # nothing half-written left
    state, history, epoch = Checkpointer(CheckpointConfig(tmp_path)).restore_latest(
        {"w": jnp.zeros(2)}, fp
    )
    assert epoch == 1 and history == [{"epoch": 1}]
    np.testing.assert_array_equal(state["w"], 1.0)


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_folder_is_refused_before_training(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    with pytest.raises(OSError, match="ro is not writable"):
        Checkpointer(CheckpointConfig(folder / "ckpt"))


def test_a_file_in_place_of_the_folder_is_refused(tmp_path):
    (tmp_path / "taken").write_text("")
    with pytest.raises(OSError, match="checkpoint folder .*taken.* is not writable"):
        Checkpointer(CheckpointConfig(tmp_path / "taken" / "ckpt"))


@pytest.mark.parametrize("field", ["every", "keep"])
def test_bad_checkpoint_options(field):
    with pytest.raises(ValueError, match=f"checkpoint {field} must be a positive integer"):
        CheckpointConfig("x", **{field: 0})


# --------------------------------------------------------------------------- damaged checkpoints


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """An uninterrupted EPOCHS-epoch run (keep 2: epochs 5 and 6 kept) and its final state."""
    directory = tmp_path_factory.mktemp("finished")
    state, history = train(directory, resume=False)
    return directory, state, history


def _copy_of(finished_run, tmp_path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(finished_run[0], copy)
    return copy


def _largest_state_files(directory: Path, epoch: int) -> list[Path]:
    """The largest file(s) of the state folder of ``epoch`` (Orbax keeps two equal copies)."""
    files = [p for p in (directory / str(epoch) / STATE).rglob("*") if p.is_file()]
    size = max(p.stat().st_size for p in files)
    return [p for p in files if p.stat().st_size == size]


def _flip_bytes(directory: Path, epoch: int) -> None:
    """XOR 64 bytes in the middle of the largest file(s) of the state of ``epoch``."""
    for path in _largest_state_files(directory, epoch):
        data = bytearray(path.read_bytes())
        middle = len(data) // 2
        data[middle : middle + 64] = bytes(b ^ 0xFF for b in data[middle : middle + 64])
        path.write_bytes(bytes(data))


def _truncate(directory: Path, epoch: int) -> None:
    for path in _largest_state_files(directory, epoch):
        os.truncate(path, path.stat().st_size // 2)


def _edit_meta(directory: Path, epoch: int, edit) -> None:
    path = directory / str(epoch) / META / "metadata"
    meta = json.loads(path.read_text())
    edit(meta)
    path.write_text(json.dumps(meta))


def _assert_resumed_equals(resumed, reference) -> None:
    for a, b in zip(_leaves(resumed), _leaves(reference), strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_byte_flipped_checkpoint_falls_back_and_resumes_bitwise(finished_run, tmp_path, capfd):
    run = _copy_of(finished_run, tmp_path)
    _flip_bytes(run, EPOCHS)
    with pytest.warns(UserWarning, match=rf"unreadable checkpoint of epoch {EPOCHS} .*moved"):
        resumed, history = train(run, resume=True)
    _assert_resumed_equals(resumed, finished_run[1])
    for name, values in finished_run[2].metrics.items():
        np.testing.assert_array_equal(history.metrics[name], values)
    assert [p.name.startswith(f"corrupt-{EPOCHS}-") for p in run.glob("corrupt-*")] == [True]
    with Checkpointer(CheckpointConfig(run)) as ckpt:
        assert ckpt.steps() == [EPOCHS - 1, EPOCHS]  # the bad epoch was saved again
    assert "Traceback" not in capfd.readouterr().err


def test_every_kept_checkpoint_flipped_is_one_clear_error(finished_run, tmp_path):
    run = _copy_of(finished_run, tmp_path)
    for epoch in (EPOCHS - 1, EPOCHS):
        _flip_bytes(run, epoch)
    with (
        pytest.warns(UserWarning),
        pytest.raises(
            CheckpointCorruptError,
            match=rf"no readable checkpoint .*epoch {EPOCHS} \(.*epoch {EPOCHS - 1} \(",
        ),
    ):
        train(run, resume=True)


def test_a_state_whose_digest_differs_is_skipped(tmp_path):
    fp = fingerprint()
    with Checkpointer(CheckpointConfig(tmp_path)) as ckpt:
        ckpt.save(1, {"w": jnp.ones(3)}, [], fp)
        ckpt.save(2, {"w": jnp.full(3, 2.0)}, [], fp)
    _edit_meta(tmp_path, 2, lambda meta: meta.update(digest=state_digest([jnp.zeros(3)])))
    with (
        pytest.warns(UserWarning, match="epoch 2 .*digest differs"),
        Checkpointer(CheckpointConfig(tmp_path)) as ckpt,
    ):
        state, _, epoch = ckpt.restore_latest({"w": jnp.zeros(3)}, fp)
    assert epoch == 1
    np.testing.assert_array_equal(state["w"], 1.0)


def test_a_checkpoint_written_without_a_digest_still_restores(tmp_path):
    fp = fingerprint()
    with Checkpointer(CheckpointConfig(tmp_path)) as ckpt:
        ckpt.save(1, {"w": jnp.full(3, 7.0)}, [], fp)
    _edit_meta(tmp_path, 1, lambda meta: meta.pop("digest"))  # as written before digests
    with Checkpointer(CheckpointConfig(tmp_path)) as ckpt:
        state, _, epoch = ckpt.restore_latest({"w": jnp.zeros(3)}, fp)
    assert epoch == 1
    np.testing.assert_array_equal(state["w"], 7.0)


@pytest.mark.parametrize("which", ["latest", "all"])
def test_a_truncated_data_file_is_an_unreadable_checkpoint(finished_run, tmp_path, which, capfd):
    run = _copy_of(finished_run, tmp_path)
    damaged = [EPOCHS] if which == "latest" else [EPOCHS - 1, EPOCHS]
    for epoch in damaged:
        _truncate(run, epoch)
    if which == "latest":
        with pytest.warns(UserWarning, match=rf"epoch {EPOCHS} .*state unreadable"):
            resumed, _ = train(run, resume=True)
        _assert_resumed_equals(resumed, finished_run[1])
    else:
        with pytest.warns(UserWarning), pytest.raises(CheckpointCorruptError, match="no readable"):
            train(run, resume=True)
    assert "Traceback" not in capfd.readouterr().err


def test_metadata_without_a_fingerprint_is_an_unreadable_checkpoint(finished_run, tmp_path):
    run = _copy_of(finished_run, tmp_path)
    _edit_meta(run, EPOCHS, lambda meta: meta.pop("fingerprint"))
    with pytest.warns(UserWarning, match=rf"epoch {EPOCHS} .*metadata has no fingerprint"):
        resumed, _ = train(run, resume=True)
    _assert_resumed_equals(resumed, finished_run[1])


def test_a_deleted_manifest_falls_back_and_the_epoch_is_saved_again(finished_run, tmp_path):
    run = _copy_of(finished_run, tmp_path)
    (run / str(EPOCHS) / STATE / "manifest.ocdbt").unlink()
    code = f"from tests.experiments.test_checkpoint import _worker; _worker({str(run)!r})"
    resumed = subprocess.run(  # its own process: stderr is what a user sees
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stderr  # it trained epoch 6 and saved it again
    assert re.search(rf"epoch {EPOCHS} .*moved it to corrupt-{EPOCHS}-", resumed.stderr)
    assert "Traceback" not in resumed.stderr and "Event loop is closed" not in resumed.stderr
    with Checkpointer(CheckpointConfig(run)) as ckpt:
        assert ckpt.steps() == [EPOCHS - 1, EPOCHS]
