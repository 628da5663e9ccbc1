"""``optlab launch``: run an optlab command as one process of a multi-process JAX job.

Run the same command on every host (or several times on one host, over loopback), each
with its own ``--process-id``::

    optlab launch --coordinator host0:1234 --num-processes 2 --process-id 0 -- \\
        compare --dataset mnist --data-parallel --out /shared/runs/mnist-dp

Under SLURM (``srun``) the options may be left out: the process count and id come from
``SLURM_NTASKS`` and ``SLURM_PROCID``, and ``jax.distributed.initialize`` derives the
coordinator from the job's node list.

Two processes per host make this:

* the *worker* (``launch --worker``, started by the launcher) calls
  ``jax.distributed.initialize`` before anything else touches JAX, checks that the job it
  joined has ``--num-processes`` processes, then runs the optlab command. Every process
  trains; process 0 alone writes the run folder's report, and every process writes its
  part of each checkpoint (Orbax). On CPU the collectives go over Gloo.
* the *launcher* passes the worker's output through and turns its end into one line.
  When a peer dies, the coordinator is unreachable or two processes share an id, JAX's
  runtime ends the worker with ``abort()`` and a C++ log dump; the launcher keeps the
  dump off the terminal and names the cause (:func:`diagnose`).

Every wait is bounded: joining the job by ``--init-timeout``, a silent peer (dead,
stopped or unreachable) is noticed within ``--heartbeat-timeout``, and the final barrier
by ``--shutdown-timeout``. A worker whose launcher dies stops within a second.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Mapping
from typing import NamedTuple

from optlab.experiments import cli

# JAX's C++ runtime logs ``F1202 15:46:02.567080  32687 client.h:80] ...`` before abort().
RUNTIME_FATAL = re.compile(rb"F\d{4} \d\d:\d\d:\d\d\.\d+\s+\d+ [\w.]+:\d+\] ")
# Gloo's lines per collective context set up (``[Gloo] Rank 0 is connected to 3 peer ranks.
# Expected number of connected peer ranks is : 3``), written to stdout by several threads at
# once, so a line may hold pieces of several.
GLOO_CONNECTED = re.compile(rb"^[^\n]*(\[Gloo\] Rank|connected peer ranks)[^\n]*\n", re.M)
# Hide the runtime's INFO/WARNING/ERROR logs (its FATAL reason is parsed, see diagnose).
RUNTIME_LOG_LEVEL = "3"
PARENT_POLL_S = 1.0
RESUME = "; restart every process (with --resume to continue from the last checkpoint)"


@dataclasses.dataclass(frozen=True)
class Job:
    """Where this process stands in the job and how long it waits for the others.

    Attributes:
      coordinator: ``HOST:PORT`` of process 0's coordination service, reachable from every
        process (None under SLURM: JAX derives it from the job).
      num_processes: N, the processes of the job.
      process_id: this process, in ``0..N-1``.
      init_timeout: seconds to wait for all N processes to join.
      heartbeat_timeout: seconds after which a silent process is declared dead (and every
        other one stops).
      shutdown_timeout: seconds to wait for the others at the final barrier.
    """

    coordinator: str | None
    num_processes: int
    process_id: int
    init_timeout: int = 300
    heartbeat_timeout: int = 100
    shutdown_timeout: int = 300

    def flags(self) -> list[str]:
        """The launch options that give this job (what the launcher passes its worker)."""
        coordinator = [] if self.coordinator is None else ["--coordinator", self.coordinator]
        return [*coordinator, "--num-processes", str(self.num_processes),
                "--process-id", str(self.process_id), "--init-timeout", str(self.init_timeout),
                "--heartbeat-timeout", str(self.heartbeat_timeout),
                "--shutdown-timeout", str(self.shutdown_timeout)]  # fmt: skip


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--coordinator",
        metavar="HOST:PORT",
        help="process 0's host and a free port, reachable from every process (under SLURM: "
        "derived from the job)",
    )
    parser.add_argument(
        "--num-processes", type=int, help="processes in the job (under SLURM: SLURM_NTASKS)"
    )
    parser.add_argument(
        "--process-id", type=int, help="this process, 0..N-1 (under SLURM: SLURM_PROCID)"
    )
    parser.add_argument(
        "--init-timeout", type=int, default=300, help="seconds to wait for every process to join"
    )
    parser.add_argument(
        "--heartbeat-timeout",
        type=int,
        default=100,
        help="seconds of silence after which a process counts as dead and the others stop",
    )
    parser.add_argument(
        "--shutdown-timeout",
        type=int,
        default=300,
        help="seconds to wait for the other processes at the end",
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "optlab_command",
        metavar="-- COMMAND",
        nargs=argparse.REMAINDER,
        help="the optlab command every process runs, after -- (e.g. -- compare --data-parallel "
        "--out DIR)",
    )


# --------------------------------------------------------------------------- the job


def positive(flag: str, value) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{flag} must be a positive integer, got {value!r}")
    return value


def check_coordinator(address: str) -> str:
    """``HOST:PORT`` with a port in 1..65535, else a one-line ValueError."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(
            f"--coordinator must be HOST:PORT with a port in 1..65535 (e.g. 127.0.0.1:12345), "
            f"got {address!r}"
        )
    return address


def from_slurm(environ: Mapping[str, str], name: str, flag: str) -> int | None:
    value = environ.get(name)
    if value is None:
        return None
    if not value.isdigit():
        raise ValueError(f"{name}={value!r} in the environment is not a number; pass {flag}")
    return int(value)


def resolve_job(args: argparse.Namespace, environ: Mapping[str, str]) -> Job:
    """The :class:`Job` from the options, else (under SLURM) from the job's environment.

    Raises:
      ValueError: a missing or invalid option, naming it.
    """
    slurm = "SLURM_JOB_ID" in environ
    num_processes = args.num_processes
    process_id = args.process_id
    if slurm:
        num_processes = num_processes or from_slurm(environ, "SLURM_NTASKS", "--num-processes")
        if process_id is None:
            process_id = from_slurm(environ, "SLURM_PROCID", "--process-id")
    known = {
        "--coordinator": args.coordinator is not None or slurm,
        "--num-processes": num_processes is not None,
        "--process-id": process_id is not None,
    }
    missing = [flag for flag, given in known.items() if not given]
    if missing or args.coordinator == "":
        raise ValueError(
            f"optlab launch needs {', '.join(missing) or '--coordinator'} (outside SLURM every "
            "process is given --coordinator HOST:PORT, --num-processes N and its --process-id I)"
        )
    positive("--num-processes", num_processes)
    if not isinstance(process_id, int) or not 0 <= process_id < num_processes:
        raise ValueError(
            f"--process-id must be in 0..{num_processes - 1} for --num-processes "
            f"{num_processes}, got {process_id}"
        )
    return Job(
        coordinator=None if args.coordinator is None else check_coordinator(args.coordinator),
        num_processes=num_processes,
        process_id=process_id,
        init_timeout=positive("--init-timeout", args.init_timeout),
        heartbeat_timeout=positive("--heartbeat-timeout", args.heartbeat_timeout),
        shutdown_timeout=positive("--shutdown-timeout", args.shutdown_timeout),
    )


def optlab_command(tokens: list[str]) -> list[str]:
    """The command after ``--``, checked: an optlab subcommand other than launch."""
    command = tokens[1:] if tokens[:1] == ["--"] else list(tokens)
    if not command:
        raise ValueError("optlab launch needs the command to run after --, e.g. -- compare ...")
    if command[0] == "launch":
        raise ValueError("optlab launch runs an optlab command, not another launch")
    return command


# --------------------------------------------------------------------------- the worker


def join(job: Job) -> None:
    """``jax.distributed.initialize`` with the job's timeouts (Gloo collectives on CPU), then
    check that the job has ``num_processes`` processes.

    Raises:
      ValueError: the coordinator's job has another number of processes (the one process 0
        was given wins).
    """
    import jax  # noqa: PLC0415  (see work)

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=job.coordinator,
        num_processes=job.num_processes,
        process_id=job.process_id,
        initialization_timeout=job.init_timeout,
        heartbeat_timeout_seconds=job.heartbeat_timeout,
        shutdown_timeout_seconds=job.shutdown_timeout,
    )
    if jax.process_count() != job.num_processes:
        raise ValueError(
            f"this process was given --num-processes {job.num_processes}, but the job at "
            f"{job.coordinator or 'the coordinator'} has {jax.process_count()} (process 0's); "
            "give every process the "
            "same --num-processes"
        )


def stop_with_launcher(launcher_pid: int) -> None:
    """End this worker within :data:`PARENT_POLL_S` of its launcher's death (a daemon
    thread), so that killing a host's launcher kills its share of the job."""

    def watch():
        while os.getppid() == launcher_pid:
            time.sleep(PARENT_POLL_S)
        os._exit(1)

    threading.Thread(target=watch, name="launcher-watch", daemon=True).start()


def work(job: Job, command: list[str]) -> int:
    """Join the job, run ``command``; leave through the bounded shutdown barrier on success.

    A process that fails leaves at once (``os._exit``, after its error): waiting at the
    barrier for peers that are still training would only delay their own stop, which the
    heartbeat brings within ``heartbeat_timeout``. A collective that fails (a peer died and
    its connection dropped before the heartbeat timed out) is one line, like the runtime's
    own stops (:func:`diagnose`); any other exception keeps its traceback.
    """
    import jax  # noqa: PLC0415  (here, not at the top: the launcher and --help never load JAX)

    stop_with_launcher(os.getppid())
    try:
        join(job)
        status = cli.main(command)
    except (ValueError, OSError) as err:
        print(f"optlab launch: error: {cli.one_line(err)}", file=sys.stderr)
        status = 2
    except jax.errors.JaxRuntimeError as err:
        print(f"optlab launch: error: {collective_failed(err, job)}", file=sys.stderr)
        status = 2
    except Exception:  # a bug: its traceback, then out without waiting at the barrier
        traceback.print_exc()
        status = 1
    sys.stdout.flush()
    sys.stderr.flush()
    if status:
        os._exit(status)
    jax.distributed.shutdown()
    return 0


def collective_failed(err: Exception, job: Job) -> str:
    """One line for a collective that failed under this process (the first line of JAX's
    error, e.g. Gloo's ``Connection reset by peer``)."""
    return (
        f"process {job.process_id} of {job.num_processes} stopped: a collective with the other "
        f"processes failed, so another process died or lost its connection "
        f"({cli.one_line(err)[:300]}){RESUME}"
    )


# --------------------------------------------------------------------------- the launcher


class Forwarded(NamedTuple):
    """What :func:`forward` saw: the runtime's fatal log line and the rest (the reason and
    the C++ stack; None if there was none), and whether the text passed on ended mid-line."""

    fatal: bytes | None
    mid_line: bool


def forward(stream, out) -> Forwarded:
    """Copy a worker's output stream to ``out`` as it arrives, until the runtime's fatal log
    line, which is kept back with everything after it.

    Output is forwarded chunk by chunk (progress bars end in ``\\r``, not ``\\n``); only
    text that may start a runtime line (from the last ``F``, or an unfinished line starting
    with ``F`` or ``[``) is held back until it is complete. Gloo's connection lines are
    dropped.
    """
    pending = b""
    fatal = None
    last = b"\n"
    for chunk in iter(lambda: os.read(stream.fileno(), 1 << 16), b""):
        if fatal is not None:
            fatal += chunk
            continue
        pending += chunk
        found = RUNTIME_FATAL.search(pending)
        if found:
            passed, fatal, pending = pending[: found.start()], pending[found.start() :], b""
        else:
            held = pending.rfind(b"\n") + 1
            if not pending[held:].startswith((b"F", b"[")):
                held = max(held, pending.rfind(b"F") if b"F" in pending[held:] else len(pending))
            passed, pending = pending[:held], pending[held:]
        passed = GLOO_CONNECTED.sub(b"", passed)
        out.write(passed)
        out.flush()
        last = passed[-1:] or last
    out.write(pending)
    out.flush()
    return Forwarded(fatal, (pending[-1:] or last) != b"\n")


def reachable(coordinator: str | None, timeout_s: float = 2.0) -> bool:
    """Whether something accepts TCP connections at ``coordinator`` (True if unknown)."""
    if coordinator is None:
        return True
    host, _, port = coordinator.rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError:
        return False
    return True


def runtime_status(fatal: bytes) -> str:
    """The status JAX's runtime gave for stopping, on one line."""
    text = fatal.decode(errors="replace")
    reason = text.split("absl::Status:", 1)[-1]
    reason = reason.split("*** Check failure", 1)[0].split("RPC:", 1)[0]
    return " ".join(reason.split())


def diagnose(fatal: bytes | None, returncode: int, job: Job, reachable_now: bool) -> str:
    """One line naming why the worker of ``job`` stopped with ``returncode`` (< 0: a signal).

    ``fatal`` is the runtime's fatal log (None if there was none).
    """
    me = f"process {job.process_id} of {job.num_processes}"
    status = runtime_status(fatal) if fatal else ""
    if "stopped sending heartbeats" in status or "heartbeat timeout" in status:
        dead = re.search(r"heartbeats\):\s*([\d,\s]+?)\s*The tasks|Task (\d+) heartbeat", status)
        who = f"process {dead.group(1) or dead.group(2)}" if dead else "another process"
        return (
            f"{me} stopped: {who} died or stopped answering (no heartbeat for "
            f"{job.heartbeat_timeout} s){RESUME}"
        )
    if "different incarnation" in status or "already in error" in status:
        twice = re.match(r"(\d+) unexpectedly", status.split(": ", 1)[-1])
        which = twice.group(1) if twice else str(job.process_id)
        return (
            f"{me} stopped: two processes were started with --process-id {which}; give each "
            f"process its own id in 0..{job.num_processes - 1}"
        )
    if b"RegisterTask" in (fatal or b""):
        where = job.coordinator or "the coordinator"
        cause = "" if reachable_now else f"; nothing answers at {where}"
        return (
            f"{me} could not join the job at {where} within {job.init_timeout} s (--init-timeout)"
            f"{cause}: check --coordinator, that process 0 runs, that every process has the "
            f"same --num-processes ({job.num_processes}) and its own --process-id"
        )
    if status:
        return f"{me} stopped by the JAX distributed runtime: {status}{RESUME}"
    name = signal.Signals(-returncode).name if -returncode in signal.valid_signals() else ""
    return f"{me} was stopped by signal {name or -returncode}{RESUME}"


def supervise(job: Job, command: list[str]) -> int:
    """Start this host's worker, pass its output through, and return its exit status; a
    worker ended by a signal or by JAX's runtime is one line (ValueError) naming why."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL",
                                                                 RUNTIME_LOG_LEVEL)}  # fmt: skip
    argv = [sys.executable, "-m", "optlab.experiments", "launch", "--worker", *job.flags(),
            "--", *command]  # fmt: skip
    worker = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    previous = signal.signal(signal.SIGTERM, lambda *_: worker.send_signal(signal.SIGTERM))
    stdout = threading.Thread(target=forward, args=(worker.stdout, sys.stdout.buffer),
                              name="worker-stdout", daemon=True)  # fmt: skip
    try:
        stdout.start()
        stderr = forward(worker.stderr, sys.stderr.buffer)
        returncode = worker.wait()
        stdout.join()
    finally:
        signal.signal(signal.SIGTERM, previous)
        if worker.poll() is None:
            worker.kill()
    if stderr.fatal is None and returncode >= 0:
        return returncode
    if stderr.mid_line:  # a progress bar: the error starts its own line
        print(file=sys.stderr)
    raise ValueError(diagnose(stderr.fatal, returncode, job, reachable(job.coordinator)))


def run(args: argparse.Namespace) -> int:
    job = resolve_job(args, os.environ)
    command = optlab_command(args.optlab_command)
    return work(job, command) if args.worker else supervise(job, command)
