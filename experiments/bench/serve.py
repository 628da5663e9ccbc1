"""``optlab bench serve``: latency and throughput of ``POST /predict`` under ``wrk``.

Two servers run side by side, each one uvicorn worker on 127.0.0.1, and are measured in
turns at every client count (``floor, service, floor, service, ...``), so a busy machine
slows both alike:

* ``floor``   a bare Starlette app around a jitted 784-100-10 MLP (:func:`floor_app`): no
  registry, routing, metrics or logging; ``request.json()``, one device call per request;
* ``service`` ``optlab serve`` on a fresh continual run folder (a 784-100-10 MLP when
  MNIST is at hand, else the 8×8 digits model with 28×28 inputs resized), with a canary at
  25 % of users so that every request is routed by its user's hash, metrics on, feedback
  durable (not exercised here: ``/predict`` only).

The load generator is Debian's ``wrk`` (C, event-driven) with a Lua script that posts the
JSON body of a 28 × 28 drawing (values to 3 decimals, as the drawing page sends) for 64
users in turn. Each cell runs ``--seconds`` with ``c`` connections; wrk reports the
latency percentiles (p50, p99) and the requests per second; the server's CPU time per
request (``/proc/PID/stat`` before and after the cell) is the figure a shared machine
disturbs least.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import jax
import numpy as np
from optlab.experiments.bench import timing
from optlab.experiments.continual import LoopConfig, run_stream
from optlab.experiments.continual.registry import Registry, load_npz, save_npz
from optlab.experiments.data import resolve_data_dir
from optlab.experiments.data.loading import shared_data_dir
from optlab.experiments.serve import rollout
from scipy import ndimage
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

CLIENTS = (1, 8, 32)
USERS = 64
UNITS_S = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}


def floor_app() -> Starlette:
    """The floor: Starlette around a jitted 784-100-10 MLP ``softmax(W₂ relu(W₁ x))``."""
    k1, k2 = jax.random.split(jax.random.key(0))
    w1 = jax.random.normal(k1, (784, 100)) / 28.0
    w2 = jax.random.normal(k2, (100, 10)) / 10.0
    forward = jax.jit(lambda x: jax.nn.softmax(jax.nn.relu(x @ w1) @ w2, axis=-1))
    forward(np.zeros((1, 784), np.float32)).block_until_ready()

    async def predict(request: Request) -> JSONResponse:
        body = await request.json()
        x = np.asarray(body["image"], np.float32).reshape(1, 784)
        p = np.asarray(forward(x))[0]
        return JSONResponse({"digit": int(p.argmax()), "probabilities": p.tolist()})

    return Starlette(routes=[Route("/predict", predict, methods=["POST"])])


def drawing() -> list[list[float]]:
    """A 28 × 28 "7" drawn with a soft pen, to 3 decimals (what the drawing page sends)."""
    image = np.zeros((28, 28), np.float32)
    image[6:8, 6:22] = 1.0
    for i in range(8, 23):
        image[i, 21 - (i - 8) // 2 : 23 - (i - 8) // 2] = 1.0
    image = np.clip(ndimage.gaussian_filter(image, 0.8) * 1.6, 0.0, 1.0)
    return np.round(image, 3).tolist()


def lua_script(image: list[list[float]]) -> str:
    """wrk's script: POST the JSON body of ``image`` for :data:`USERS` users in turn."""
    return "\n".join(
        [
            f"local image = '{json.dumps(image, separators=(',', ':'))}'",
            "local bodies = {}",
            f"for i = 1, {USERS} do",
            "  bodies[i] = '{\"user\":\"bench-' .. i .. '\",\"image\":' .. image .. '}'",
            "end",
            "local n = 0",
            'wrk.method = "POST"',
            'wrk.headers["Content-Type"] = "application/json"',
            "request = function()",
            f"  n = n % {USERS} + 1",
            '  return wrk.format(nil, "/predict", nil, bodies[n])',
            "end",
        ]
    )


def parse_wrk(text: str) -> dict:
    """p50, p99 (ms), requests/s and failures from ``wrk --latency`` output."""
    percentiles = {
        int(p): float(v) * UNITS_S[u]
        for p, v, u in re.findall(r"^\s+(\d+)%\s+([\d.]+)(us|ms|s|m)\s*$", text, re.M)
    }
    rate = re.search(r"Requests/sec:\s+([\d.]+)", text)
    if rate is None or 50 not in percentiles or 99 not in percentiles:
        raise RuntimeError(f"cannot read wrk's output:\n{text}")
    count = re.search(r"(\d+) requests in", text)
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    sockets = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text
    )
    return {
        "requests": int(count.group(1)) if count else 0,
        "requests_per_s": float(rate.group(1)),
        "p50_ms": percentiles[50] * 1e3,
        "p99_ms": percentiles[99] * 1e3,
        "failed": (int(non_2xx.group(1)) if non_2xx else 0)
        + (sum(map(int, sockets.groups())) if sockets else 0),
    }


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` and its waited-for children (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = sum(int(v) for v in fields[11:15])  # utime, stime, cutime, cstime
    return ticks / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def server(cmd: list[str], port: int, log: Path):
    """A server subprocess, once it answers on ``port``; stopped on exit."""
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=out)
    try:
        deadline = time.time() + 300
        while time.time() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{' '.join(cmd)} exited:\n{log.read_text()}")
            with contextlib.suppress(httpx.HTTPError):
                httpx.post(f"http://127.0.0.1:{port}/predict", json={}, timeout=2)
                break
            time.sleep(0.2)
        yield f"http://127.0.0.1:{port}", proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()


def service_run(folder: Path, data_dir: str | None) -> tuple[Path, str]:
    """A fresh continual run to serve, with a canary (a copy of v1) at 25 % of users."""
    run = folder / "run"
    found = [
        d for d in (resolve_data_dir(data_dir), shared_data_dir()) if d and (d / "mnist").is_dir()
    ]
    mnist = found[0] if found else None
    if mnist is not None:
        config = LoopConfig(
            dataset="mnist", data_dir=str(mnist), num_tasks=1, users_per_task=1,
            reference_size=300, eval_size=200, canary_size=100, widths=(100,), epochs=1,
            initial_epochs=2, search={"sgd": [0.1]},
        )  # fmt: skip
        model = "MNIST 784-100-10 MLP"
    else:
        config = LoopConfig(
            num_tasks=1, users_per_task=1, epochs=1, initial_epochs=2, search={"sgd": [0.1]}
        )
        model = "digits 64-64-10 MLP (28×28 inputs resized to 8×8; no MNIST found)"
    run_stream(config, run, log=lambda *_: None)
    reg = Registry(run)
    stable, canary = reg.deployed(), reg.next_version()
    save_npz(reg.weights_path(canary), load_npz(reg.weights_path(stable)))
    with reg.transaction():
        reg.add_model(
            canary, parent=stable, user=None, status="candidate", optimizer="copy",
            hparams={}, metrics={}, wall_time_s=0.0, peak_memory_mb=0.0,
            reason="bench: a canary so that requests are routed",
        )  # fmt: skip
        reg.set_state("rollout", rollout.Rollout(1, stable, canary, stage=1).to_dict())
    reg.close()
    return run, model


def wrk(server: tuple[str, int], clients: int, seconds: float, script: Path) -> dict:
    """One wrk cell against ``server`` (url, pid), with the server's CPU time per request."""
    url, pid = server
    threads = min(clients, 2)
    cmd = ["wrk", f"-t{threads}", f"-c{clients}", f"-d{seconds:g}s", "--latency", "-s"]
    before = cpu_seconds(pid)
    done = subprocess.run([*cmd, str(script), url], capture_output=True, text=True, check=True)
    cell = parse_wrk(done.stdout)
    cell["server_cpu_us"] = (cpu_seconds(pid) - before) / max(cell["requests"], 1) * 1e6
    return cell


def measure(args: argparse.Namespace) -> dict:
    if shutil.which("wrk") is None:
        raise OSError("wrk not found: install it (Debian: apt-get install wrk)")
    seconds = args.seconds or (2.0 if args.quick else 5.0)
    clients = args.clients or CLIENTS
    rounds = args.repeats or 1
    if seconds <= 0 or rounds < 1 or not clients or min(clients) < 1:
        raise ValueError("--seconds, --repeats and --clients must be positive")
    with tempfile.TemporaryDirectory(prefix="optlab-bench-serve-") as tmp:
        tmp = Path(tmp)
        run, model = service_run(tmp, args.data_dir)
        script = tmp / "predict.lua"
        script.write_text(lua_script(drawing()))
        ports = free_port(), free_port()
        floor_cmd = [
            sys.executable, "-m", "uvicorn", "--factory",
            "optlab.experiments.bench.serve:floor_app", "--port", str(ports[0]),
            "--log-level", "warning", "--no-access-log",
        ]  # fmt: skip
        service_cmd = [
            sys.executable, "-m", "optlab.experiments", "serve", "--run", str(run),
            "--port", str(ports[1]), "--retrain", "manual",
        ]  # fmt: skip
        samples: dict[tuple[str, int], list[dict]] = {}
        with (
            server(floor_cmd, ports[0], tmp / "floor.log") as floor,
            server(service_cmd, ports[1], tmp / "service.log") as service,
        ):
            servers = {"floor": floor, "service": service}
            for target in servers.values():  # warm-up
                wrk(target, 8, 1.0, script)
            for _ in range(rounds):
                for c in clients:
                    for name, target in servers.items():
                        cell = wrk(target, c, seconds, script)
                        samples.setdefault((name, c), []).append(cell)
    rows = []
    for (name, c), cells in sorted(samples.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        row = {"app": name, "clients": c}
        for key in ("requests_per_s", "p50_ms", "p99_ms", "server_cpu_us"):
            row[key] = float(np.median([cell[key] for cell in cells]))
        row["failed"] = sum(cell["failed"] for cell in cells)
        rows.append(row)
    notes = [
        f"service model: {model}; floor: jitted 784-100-10 MLP, bare Starlette",
        f"wrk, {seconds:g} s per cell, {rounds} round(s) (median), apps measured in turns",
        "server_cpu_us: the server process's CPU time (user + system, /proc) per request, "
        "which a busy machine disturbs less than latency or throughput",
    ]
    config = {"seconds": seconds, "clients": list(clients), "rounds": rounds, "model": model}
    return {"config": config, "environment": timing.environment(), "rows": rows, "notes": notes}
