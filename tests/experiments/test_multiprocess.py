"""Multi-process data parallelism run for real: 2 processes on 127.0.0.1 over JAX's
distributed runtime (Gloo collectives), each with 2 simulated CPU devices, 4 in all.

Every process is a subprocess with a timeout; a test that would hang fails instead. The
processes run on the digits dataset (embedded, no files) with a tiny MLP.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from optlab.experiments import cli, launch

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
       "JAX_PLATFORMS": "cpu", "PYTHONUNBUFFERED": "1"}  # fmt: skip
RUN_TIMEOUT_S = 300  # a whole 2-process run on a loaded 2-core machine
HEARTBEAT_S = 10
ERROR_TIMEOUT_S = 60 + HEARTBEAT_S  # start-up, then the bounded wait
COMPARE = ["compare", "--dataset", "digits", "--model", "mlp", "--optimizers", "sgd",
           "--lr-grid-size", "1", "--seeds", "2", "--batch-size", "256", "--data-parallel",
           "--checkpoint-every", "1"]  # fmt: skip
COMPARE_EPOCHS = 4


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(port: int, process_id: int, command: list[str], num_processes: int = 2,
           init_timeout: int = 60) -> subprocess.Popen:  # fmt: skip
    """``optlab launch ... -- command`` as process ``process_id``, in its own process group
    (its launcher and worker are one "host")."""
    argv = [sys.executable, "-m", "optlab.experiments", "launch",
            "--coordinator", f"127.0.0.1:{port}", "--num-processes", str(num_processes),
            "--process-id", str(process_id), "--init-timeout", str(init_timeout),
            "--heartbeat-timeout", str(HEARTBEAT_S), "--shutdown-timeout", "60", "--",
            *command]  # fmt: skip
    return subprocess.Popen(argv, cwd=REPO, env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)  # fmt: skip


def finish(procs: list[subprocess.Popen], timeout: float) -> list[tuple[int, str, str, float]]:
    """``(returncode, stdout, stderr, seconds)`` of each process, their pipes read side by side
    (a full pipe would stall a process); a process still running after ``timeout`` seconds
    (from now) is killed, with its group, and the test fails."""
    start = time.monotonic()
    results: dict[int, tuple] = {}

    def wait(index, proc):
        out, err = proc.communicate()
        results[index] = (proc.returncode, out, err, time.monotonic() - start)

    threads = [threading.Thread(target=wait, args=item, daemon=True) for item in enumerate(procs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max(0.0, timeout - (time.monotonic() - start)))
    if len(results) < len(procs):
        for proc in procs:
            with_group(proc, signal.SIGKILL)
        hung = [proc.args[-8:] for index, proc in enumerate(procs) if index not in results]
        pytest.fail(f"{len(hung)} process(es) did not stop within {timeout} s (a hang): {hung}")
    return [results[index] for index in range(len(procs))]


def with_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


def last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


# --------------------------------------------------------------------------- fit, population

TRAIN_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from types import SimpleNamespace
    from optlab.experiments import launch
    port, process_id, num_processes = map(int, sys.argv[1:4])
    if num_processes > 1:  # the worker's own join, before anything touches JAX
        launch.join(launch.Job(f"127.0.0.1:{port}", num_processes, process_id, init_timeout=60,
                               heartbeat_timeout=10, shutdown_timeout=60))
    import jax, numpy as np, optax
    from optlab import models
    from optlab.experiments import data, engine, parallel

    full = data.load("digits")
    ds = SimpleNamespace(x_train=full.x_train[:512], y_train=full.y_train[:512],
                         x_test=full.x_test[:200], y_test=full.y_test[:200])

    def make_model(key):
        return models.build("mlp", full.input_shape, full.num_classes, seed=key, widths=(16,))

    config = engine.TrainConfig(epochs=2, batch_size=64, data_parallel=num_processes > 1)
    fit = engine.fit(make_model(engine.seed_keys(0)[0]), optax.adam(1e-2), ds, config)
    pop = engine.fit_population(
        make_model, lambda learning_rate: optax.sgd(learning_rate, momentum=0.9),
        {"learning_rate": [0.05, 0.2]}, [0, 1], ds, config)
    flat = lambda tree: [np.asarray(x).tolist() for x in jax.tree.leaves(parallel.fetch(tree))]
    print("RESULT " + json.dumps({
        "devices": jax.device_count(), "processes": jax.process_count(),
        "fit_params": flat(fit.state.params), "pop_params": flat(pop.state.params),
        "fit_history": {k: v.tolist() for k, v in fit.history.metrics.items()},
        "pop_history": {k: v.tolist() for k, v in pop.histories.items()},
    }))
    """
)


def result_of(stdout: str) -> dict:
    lines = [line for line in stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, f"no RESULT line in:\n{stdout[-2000:]}"
    return json.loads(lines[-1][len("RESULT ") :])


@pytest.fixture(scope="module")
def trained():
    """One training script as 2 processes × 2 devices, and as one process on one device
    (no data parallelism), side by side."""
    port = free_port()
    env = {**ENV, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", TRAIN_SCRIPT, str(port), str(i), str(n)],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )  # fmt: skip
        for i, n in ((0, 2), (1, 2), (0, 1))
    ]
    results = finish(procs, RUN_TIMEOUT_S)
    for returncode, _, err, _ in results:
        assert returncode == 0, err[-3000:]
    return [result_of(out) for _, out, _, _ in results]


@pytest.mark.slow
def test_fit_and_population_over_two_processes_equal_one_process(trained):
    first, second, single = trained
    assert (first["devices"], first["processes"]) == (4, 2)
    assert (single["devices"], single["processes"]) == (2, 1)
    for run in ("fit", "pop"):
        # both processes hold the same (replicated) result
        assert first[f"{run}_params"] == second[f"{run}_params"]
        assert first[f"{run}_history"] == second[f"{run}_history"]
        for a, b in zip(first[f"{run}_params"], single[f"{run}_params"], strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
        assert first[f"{run}_history"].keys() == single[f"{run}_history"].keys()
        for name, values in first[f"{run}_history"].items():
            np.testing.assert_allclose(values, single[f"{run}_history"][name], rtol=1e-5)


# --------------------------------------------------------------------------- compare


def compare(out: Path, *extra: str) -> list[str]:
    return [*COMPARE, "--epochs", str(COMPARE_EPOCHS), "--out", str(out), *extra]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """``optlab launch -- compare`` over 2 processes, run to the end."""
    out = tmp_path_factory.mktemp("uninterrupted") / "run"
    port = free_port()
    results = finish([start(port, i, compare(out)) for i in range(2)], RUN_TIMEOUT_S)
    for returncode, _, err, _ in results:
        assert returncode == 0, err[-3000:]
    return out, results


@pytest.mark.slow
def test_compare_over_two_processes_only_process_0_writes_the_report(uninterrupted):
    out, ((_, stdout0, _, _), (_, stdout1, _, _)) = uninterrupted
    assert "| sgd |" in stdout0 and f"wrote {out}" in stdout0
    assert stdout1.strip() == ""  # process 1 trains, prints and writes nothing of the report
    names = {path.name for path in out.iterdir()}
    assert {"config.json", "metrics.jsonl", "summary.md", "loss.png", "checkpoints"} <= names
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 2 * COMPARE_EPOCHS  # written once (2 seeds × epochs), not twice
    assert json.loads((out / "config.json").read_text())["machine"]["process_count"] == 2


def checkpoint_meta(out: Path, epoch: int) -> dict:
    return json.loads((out / "checkpoints" / "sgd" / str(epoch) / "meta" / "metadata").read_text())


@pytest.mark.slow
def test_a_killed_process_stops_the_other_and_resume_is_bit_identical(tmp_path, uninterrupted):
    reference, _ = uninterrupted
    out = tmp_path / "run"
    port = free_port()
    procs = [start(port, i, compare(out)) for i in range(2)]
    first_checkpoint = out / "checkpoints" / "sgd" / "1"
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while not first_checkpoint.is_dir() and time.monotonic() < deadline:
        if procs[0].poll() is not None or procs[1].poll() is not None:
            pytest.fail(f"a process ended early: {finish(procs, 10)}")
        time.sleep(0.2)
    assert first_checkpoint.is_dir(), "no checkpoint was written"
    with_group(procs[1], signal.SIGKILL)  # host 1 dies: its launcher and worker
    killed = time.monotonic()
    (returncode, _, err, _), _ = finish(procs, ERROR_TIMEOUT_S)
    assert time.monotonic() - killed < ERROR_TIMEOUT_S
    assert returncode == 2
    # the heartbeat's verdict, or a collective's that saw the connection drop first
    line = last_line(err)
    assert line.startswith("optlab launch: error: process 0 of 2 stopped: "), err[-2000:]
    assert "died" in line and line.endswith("(with --resume to continue from the last checkpoint)")
    assert "Check failure" not in err and "absl::Status" not in err  # the C++ dump is kept off
    saved = sorted(int(p.name) for p in (out / "checkpoints" / "sgd").iterdir() if p.name.isdigit())
    assert saved and saved[-1] < COMPARE_EPOCHS, f"the run was not interrupted: {saved}"

    port = free_port()
    results = finish([start(port, i, compare(out, "--resume")) for i in range(2)], RUN_TIMEOUT_S)
    for returncode, _, err, _ in results:
        assert returncode == 0, err[-3000:]
    # bit-identical: the final state's SHA-256 and every recorded metric
    assert (
        checkpoint_meta(out, COMPARE_EPOCHS)["digest"]
        == checkpoint_meta(reference, COMPARE_EPOCHS)["digest"]
    )
    assert (out / "metrics.jsonl").read_text() == (reference / "metrics.jsonl").read_text()


# --------------------------------------------------------------------------- bad jobs


def one_line_error(result, timeout: float) -> str:
    returncode, _, err, seconds = result
    assert returncode == 2, err[-2000:]
    assert seconds < timeout
    line = last_line(err)
    assert line.startswith("optlab launch: error: "), err[-2000:]
    assert "Check failure" not in err and "absl::Status" not in err
    return line


@pytest.mark.slow
def test_a_job_that_cannot_form_stops_with_one_line_within_its_timeout(tmp_path):
    command = [*COMPARE, "--epochs", "30"]  # long enough for the others to notice
    unreachable = [start(free_port(), 1, ["compare", "--help"], init_timeout=5)]
    port_dup = free_port()
    duplicated = [start(port_dup, i, [*command, "--out", str(tmp_path / "duplicated")])
                  for i in (0, 1, 1)]  # fmt: skip
    port_count = free_port()
    miscounted = [
        start(port_count, 0, [*command, "--out", str(tmp_path / "miscounted")], init_timeout=30),
        start(port_count, 1, ["compare", "--help"], num_processes=3, init_timeout=30),
    ]
    results = finish(unreachable + duplicated + miscounted, ERROR_TIMEOUT_S + 30)

    line = one_line_error(results[0], ERROR_TIMEOUT_S)
    assert "process 1 of 2 could not join the job at 127.0.0.1:" in line
    assert "within 5 s (--init-timeout); nothing answers at" in line

    lines = [one_line_error(result, ERROR_TIMEOUT_S + 30) for result in results[1:4]]
    assert any("two processes were started with --process-id 1" in line for line in lines), lines

    wrong, survivor = results[5], results[4]
    assert one_line_error(wrong, ERROR_TIMEOUT_S).endswith(
        "this process was given --num-processes 3, but the job at 127.0.0.1:"
        f"{port_count} has 2 (process 0's); give every process the same --num-processes"
    )
    assert "died" in one_line_error(survivor, ERROR_TIMEOUT_S + 30)


# --------------------------------------------------------------------------- launcher, no JAX


def parsed(*argv: str):
    parser = argparse.ArgumentParser()
    launch.configure_parser(parser)
    return parser.parse_args(argv)


def test_the_job_comes_from_the_options_or_from_slurm():
    job = launch.resolve_job(
        parsed("--coordinator", "10.0.0.1:1234", "--num-processes", "4", "--process-id", "3"), {}
    )
    assert (job.coordinator, job.num_processes, job.process_id) == ("10.0.0.1:1234", 4, 3)
    slurm = {"SLURM_JOB_ID": "77", "SLURM_NTASKS": "8", "SLURM_PROCID": "5"}
    job = launch.resolve_job(parsed(), slurm)
    assert (job.coordinator, job.num_processes, job.process_id) == (None, 8, 5)
    job = launch.resolve_job(parsed("--process-id", "0"), slurm)  # an option wins
    assert job.process_id == 0
    assert launch.resolve_job(parsed(*job.flags()), slurm) == job  # what the worker is given


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--num-processes", "2", "--process-id", "0", "--", "compare"], "needs --coordinator"),
        (["--coordinator", "h:1", "--process-id", "0", "--", "compare"], "needs --num-processes"),
        (
            [
                "--coordinator",
                "h:70000",
                "--num-processes",
                "2",
                "--process-id",
                "0",
                "--",
                "compare",
            ],
            "--coordinator must be HOST:PORT with a port in 1..65535",
        ),  # fmt: skip
        (
            ["--coordinator", "h:1", "--num-processes", "2", "--process-id", "2", "--", "compare"],
            "--process-id must be in 0..1 for --num-processes 2, got 2",
        ),  # fmt: skip
        (
            ["--coordinator", "h:1", "--num-processes", "0", "--process-id", "0", "--", "compare"],
            "--num-processes must be a positive integer, got 0",
        ),  # fmt: skip
        (
            [
                "--coordinator",
                "h:1",
                "--num-processes",
                "2",
                "--process-id",
                "0",
                "--heartbeat-timeout",
                "0",
                "--",
                "compare",
            ],
            "--heartbeat-timeout must be a positive",
        ),
        (
            ["--coordinator", "h:1", "--num-processes", "2", "--process-id", "0"],
            "needs the command to run after --",
        ),  # fmt: skip
        (
            ["--coordinator", "h:1", "--num-processes", "2", "--process-id", "0", "--", "launch"],
            "runs an optlab command, not another launch",
        ),  # fmt: skip
    ],
)
def test_bad_launch_options_are_one_line_before_any_process_starts(argv, message, capsys):
    assert cli.main(["launch", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("optlab launch: error: ") and message in err
    assert err.count("\n") == 1


def forwarded(*chunks: bytes) -> tuple[launch.Forwarded, bytes]:
    read, write = os.pipe()
    for chunk in chunks:
        os.write(write, chunk)
    os.close(write)
    out = io.BytesIO()
    with os.fdopen(read, "rb") as stream:
        return launch.forward(stream, out), out.getvalue()


FATAL = (b"F1202 15:41:56.904614   26309 client.h:80] Terminating process because the JAX "
         b"distributed service detected fatal errors. absl::Status: UNAVAILABLE: The following "
         b"tasks are unhealthy (stopped sending heartbeats):\n1\nThe tasks have crashed.\n\n"
         b"RPC: /xla.coordination.CoordinationService/PollForError\n*** Check failure stack "
         b"trace: ***\n    @     0x7fde84620634  absl::LogMessage::SendToLog()\n")  # fmt: skip


def test_the_worker_output_passes_through_without_the_runtime_dump():
    gloo = b"[Gloo] Rank 0 is connected to 3 peer ranks. Expected number of connected peer ranks\n"
    result, out = forwarded(b"epoch 1\n", gloo, b"\rbar 50%|#", b"#| F", b"ine", FATAL[:30],
                            FATAL[30:])  # fmt: skip
    assert out == b"epoch 1\n\rbar 50%|##| Fine"  # the bar, and an F that starts no log line
    assert result == launch.Forwarded(FATAL, mid_line=True)
    result, out = forwarded(b"all done\n")
    assert (result, out) == (launch.Forwarded(None, mid_line=False), b"all done\n")


def test_the_runtime_reason_becomes_one_line_naming_the_cause():
    job = launch.Job("127.0.0.1:5000", 2, 0, heartbeat_timeout=10, init_timeout=30)
    line = launch.diagnose(FATAL, -6, job, reachable_now=True)
    assert line.startswith("process 0 of 2 stopped: process 1 died or stopped answering (no "
                           "heartbeat for 10 s)")  # fmt: skip
    at_the_end = FATAL.split(b"absl::Status:")[0] + (
        b"absl::Status: INTERNAL: Shutdown barrier has failed. Barrier result: 'INTERNAL: Barrier "
        b"failed because: task is set to ERROR: UNAVAILABLE: Task 1 heartbeat timeout. This "
        b"indicates that the remote task has failed'\n"
    )
    assert launch.diagnose(at_the_end, -6, job, True) == line
    twice = FATAL.replace(
        b"UNAVAILABLE: The following tasks are unhealthy (stopped sending heartbeats):\n1",
        b"ABORTED: 1 unexpectedly tried to connect with a different incarnation.",
    )
    assert "two processes were started with --process-id 1" in launch.diagnose(twice, -6, job, True)
    late = (
        FATAL.split(b"absl::Status:")[0] + b"absl::Status: DEADLINE_EXCEEDED: Deadline "
        b"Exceeded\n\nRPC: /xla.coordination.CoordinationService/RegisterTask\n"
    )
    line = launch.diagnose(late, -6, job, reachable_now=False)
    assert "could not join the job at 127.0.0.1:5000 within 30 s" in line
    assert "nothing answers at 127.0.0.1:5000" in line
    assert "was stopped by signal SIGKILL" in launch.diagnose(None, -9, job, True)
    assert "\n" not in line
