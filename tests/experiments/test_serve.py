"""``optlab serve``: unit checks of routing, gates and resizing, then a real server on
127.0.0.1 (a subprocess, as a user runs it) driven by a real HTTP client: predictions,
feedback, bad requests, a forced retrain walking the rollout stages, a deliberately worse
canary rolled back, 32 concurrent clients, and a SIGKILL under load followed by a restart.

The servers serve a tiny continual run (one task, one user, sgd only) made once per module.
"""

import asyncio
import contextlib
import io
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from optlab.experiments.bench import serve as bench_serve
from optlab.experiments.continual import LoopConfig, run_stream
from optlab.experiments.continual.registry import Registry, load_npz, save_npz
from optlab.experiments.continual.stream import load_arrays
from optlab.experiments.serve import app, inputs, rollout, store
from PIL import Image

ALPHA = 0.05
STAGE_FEEDBACK = 20


# ----------------------------------------------------------------------------- units


def test_area_matrix_resizing_is_mean_pooling_on_a_divisible_size():
    rng = np.random.default_rng(0)
    image = rng.random((28, 28)).astype(np.float32)
    resized = inputs.ImageFormat((14, 14, 1)).resize(image)[..., 0]
    pooled = image.reshape(14, 2, 14, 2).mean(axis=(1, 3))
    np.testing.assert_allclose(resized, pooled, rtol=1e-6)
    eight = inputs.area_matrix(28, 8)
    np.testing.assert_allclose(eight.sum(axis=1), 1.0, rtol=1e-6)  # each output is a mean
    assert eight[0, :3].tolist() == pytest.approx([1 / 3.5, 1 / 3.5, 1 / 3.5])
    assert eight[0, 3] == pytest.approx(0.5 / 3.5) and eight[1, 3] == pytest.approx(0.5 / 3.5)


def test_image_checks_refuse_every_non_finite_or_out_of_range_pixel():
    fmt = inputs.ImageFormat((8, 8, 1))
    fine = np.linspace(0, 1, 28 * 28, dtype=np.float32).reshape(28, 28)
    fmt.check(fine, 9)
    for value, failure in ((np.nan, "finite"), (np.inf, "finite"), (-0.01, "range"),
                           (1.01, "range")):  # fmt: skip
        bad = fine.copy()
        bad[5, 7] = value
        with pytest.raises(inputs.BadRequest, match=failure) as refused:
            fmt.check(bad)
        assert refused.value.status == 422


def test_routing_keeps_users_on_their_version_and_widens_monotonically():
    users = [f"user-{i}" for i in range(4000)]
    on_canary = {}
    for stage, share in enumerate(rollout.STAGES[:-1]):
        r = rollout.Rollout(id=7, stable=1, canary=2, stage=stage)
        seen = {u for u in users if rollout.version_for(r, u) == 2}
        assert {u for u in users if rollout.version_for(r, u) == 2} == seen  # repeatable
        assert abs(len(seen) / len(users) - share) < 0.03
        on_canary[stage] = seen
    assert on_canary[0] <= on_canary[1] <= on_canary[2]
    other = rollout.Rollout(id=8, stable=1, canary=2, stage=1)
    assert {u for u in users if rollout.version_for(other, u) == 2} != on_canary[1]
    assert all(rollout.version_for(rollout.Rollout(id=7, stable=1), u) == 1 for u in users)


def test_gate_waits_advances_promotes_and_rolls_back():
    right = np.ones(STAGE_FEEDBACK, bool)
    r = rollout.Rollout(id=3, stable=4, canary=5, stage=0, since=10)
    assert rollout.gate(r, right[:5], right[:5], 15, alpha=ALPHA, min_pairs=20) is None
    advanced = rollout.gate(r, right, right, 30, alpha=ALPHA, min_pairs=20)
    assert advanced.action == "advance" and advanced.after.stage == 1
    assert advanced.after.since == 30 and advanced.after.share == 0.25
    last = rollout.Rollout(id=3, stable=4, canary=5, stage=2, since=30)
    promoted = rollout.gate(last, right, right, 50, alpha=ALPHA, min_pairs=20)
    assert promoted.action == "promote" and promoted.after == rollout.Rollout(3, 5, None, 3, 50)
    worse = right.copy()
    worse[:8] = False  # b = 8 discordant pairs against the canary, c = 0: p = 2^-8
    back = rollout.gate(r, right, worse, 30, alpha=ALPHA, min_pairs=20)
    assert back.action == "rollback" and back.after.canary is None and back.after.stable == 4
    assert back.decision.b == 8 and back.decision.c == 0
    assert back.decision.p_value == pytest.approx(0.5**8)


def test_a_retrain_worker_is_alive_only_while_its_process_exists():
    done = subprocess.Popen([sys.executable, "-c", "pass"])
    done.wait()
    assert app.process_alive(os.getpid())
    assert not app.process_alive(done.pid)
    assert not app.process_alive(None) and not app.process_alive(-1)


# ----------------------------------------------------------------------------- a server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``optlab serve`` in a subprocess on a free port; its output goes to ``log``."""

    def __init__(self, run: Path, *extra: str):
        self.run, self.port = run, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = run.parent / f"serve-{self.port}.log"
        env = {**os.environ, "JAX_PLATFORMS": "cpu"}
        cmd = [sys.executable, "-m", "optlab.experiments", "serve", "--run", str(run)]
        with open(self.log, "w") as out:
            self.proc = subprocess.Popen(
                [*cmd, "--port", str(self.port), *extra], env=env, stdout=out, stderr=out
            )
        deadline = time.time() + 180
        while time.time() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"optlab serve exited:\n{self.log.read_text()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + "/healthz", timeout=2).status_code == 200:
                    return
            time.sleep(0.2)
        self.stop()
        pytest.fail(f"optlab serve did not answer /healthz:\n{self.log.read_text()}")

    def health(self) -> dict:
        return httpx.get(self.url + "/healthz", timeout=10).json()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("serve") / "run"
    config = LoopConfig(
        num_tasks=1, users_per_task=1, epochs=1, initial_epochs=10, search={"sgd": [0.1]}
    )
    run_stream(config, out, log=lambda *_: None)
    return out


@pytest.fixture(scope="module")
def digits():
    arrays = load_arrays("digits")
    return arrays.x_test[..., 0], arrays.y_test


@pytest.fixture(scope="module")
def server(run_folder):
    s = Server(
        run_folder, "--retrain", "manual", "--allow-faults", "--feedback-batch", "10",
        "--stage-feedback", str(STAGE_FEEDBACK), "--alpha", str(ALPHA),
    )  # fmt: skip
    yield s
    s.stop()


def query(run: Path, sql: str, args=()) -> list[tuple]:
    with contextlib.closing(sqlite3.connect(run / "registry.sqlite", timeout=10)) as conn:
        return conn.execute(sql, args).fetchall()


def drawn_one() -> np.ndarray:
    image = np.zeros((28, 28), np.float32)
    image[4:24, 12:16] = 1.0
    return image


def test_validated_feedback_batches_fire_the_runs_retrain_triggers(run_folder, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(run_folder, run, ignore=shutil.ignore_patterns(".lock", "serve-*.log"))
    service = app.Service(app.ServeConfig(run=run, retrain="auto"))
    controller = service.controller
    controller.store = store.ServeStore(run)
    started = []
    controller.start_retrain = lambda reason: started.append(reason)
    every = service.trigger_config.every_n
    row = {"user": "u", "label": 1, "image": b"", "served": 1, "stable": 1, "stable_correct": 1,
           "rollout": 0}  # fmt: skip
    controller.store.add_feedback([row])
    controller.store.conn.execute("UPDATE feedback SET status = 'validated'")
    for since, drift, fired in ((every - 1, False, None), (every, False, f"every_{every}_users"),
                                (1, True, "drift"), (0, True, None)):  # fmt: skip
        controller.store.set_state("serve_batches_since_retrain", since)
        controller.store.set_state("serve_last_batch", {"batch": 1, "drift": drift,
                                                        "accuracy": 1.0})  # fmt: skip
        started.clear()
        controller.maybe_trigger()
        assert started == ([fired] if fired else []), (since, drift)
    controller.store.close()


def test_predict_and_feedback_round_trip(server):
    stable = server.health()["stable"]
    image = drawn_one().tolist()
    answers = [
        httpx.post(server.url + "/predict", json={"user": "alice", "image": image}).json()
        for _ in range(3)
    ]
    assert answers[0] == answers[1] == answers[2]  # one user, one version, one answer
    assert answers[0]["version"] == stable
    assert 0 <= answers[0]["digit"] <= 9 and len(answers[0]["probabilities"]) == 10
    assert sum(answers[0]["probabilities"]) == pytest.approx(1.0, abs=1e-5)
    assert answers[0]["probabilities"][answers[0]["digit"]] == max(answers[0]["probabilities"])
    png = io.BytesIO()
    Image.fromarray((drawn_one() * 255).astype(np.uint8)).save(png, "PNG")
    upload = httpx.post(
        server.url + "/predict",
        data={"user": "alice"},
        files={"image": ("one.png", png.getvalue(), "image/png")},
    )
    assert upload.status_code == 200, upload.text
    assert upload.json()["digit"] == answers[0]["digit"]  # the same drawing, as a PNG
    stored = httpx.post(server.url + "/feedback", json={"user": "bob", "image": image, "label": 1})
    assert stored.status_code == 200, stored.text
    row_id = stored.json()["id"]
    rows = query(server.run, "SELECT user, label, served FROM feedback WHERE id = ?", (row_id,))
    assert rows == [("bob", 1, int(stable[1:]))]
    text = httpx.get(server.url + "/metrics").text
    assert f'optlab_serve_requests_total{{endpoint="predict",status="200",version="{stable}"}}' in (
        text
    )
    assert f'optlab_serve_predict_latency_seconds_count{{version="{stable}"}}' in text
    assert "optlab_serve_rollout_share 0.0" in text
    assert server.health()["status"] == "ok"


def test_bad_requests_get_a_4xx_json_error_and_nothing_is_stored(server):
    before = query(server.run, "SELECT COUNT(*) FROM feedback")[0][0]
    good = drawn_one().tolist()
    nan = drawn_one()
    nan[3, 3] = np.nan
    cases = [
        ({"user": "u", "image": good}, 422, "missing field(s): label"),
        ({"user": "u", "image": good[:27], "label": 1}, 422, "28×28, got shape [27, 28]"),
        ({"user": "u", "image": [[1, 2], [3]], "label": 1}, 422, "rectangular"),
        ({"user": "u", "image": (drawn_one() * 2).tolist(), "label": 1}, 422, "range"),
        ({"user": "u", "image": good, "label": 10}, 422, "'label'"),
        ({"user": "u", "image": good, "label": True}, 422, "'label'"),
        ({"user": "", "image": good, "label": 1}, 422, "'user'"),
        ({"image": good, "label": 1}, 422, "missing field(s): user"),
        ([1, 2, 3], 422, "JSON object"),
    ]
    for body, status, message in cases:
        answer = httpx.post(server.url + "/feedback", json=body)
        assert answer.status_code == status and message in answer.json()["error"], body
    raw = [
        (b'{"user": "u", "image": ' + str(nan.tolist()).replace("nan", "NaN").encode()
         + b', "label": 1}', 422, "NaN"),
        (b"{not json", 400, "not valid JSON"),
        (b'{"user": "u", "image": [' + b"0," * 200_000 + b"0]}", 413, "larger than"),
    ]  # fmt: skip
    headers = {"content-type": "application/json"}
    for body, status, message in raw:
        answer = httpx.post(server.url + "/feedback", content=body, headers=headers)
        assert answer.status_code == status and message in answer.json()["error"]
    answer = httpx.post(server.url + "/predict", content=b"x", headers={"content-type": "text/a"})
    assert answer.status_code == 415
    upload = httpx.post(
        server.url + "/predict", data={"user": "u"}, files={"image": ("x.png", b"junk")}
    )
    assert upload.status_code == 422 and "PNG" in upload.json()["error"]
    assert query(server.run, "SELECT COUNT(*) FROM feedback")[0][0] == before


def wait_for(condition, what: str, timeout: float = 240):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")


def send_labelled(server, digits, count: int, start: int) -> list[int]:
    x, y = digits
    ids = []
    for i in range(start, start + count):
        body = {"user": f"labeller-{i}", "image": x[i].tolist(), "label": int(y[i])}
        answer = httpx.post(server.url + "/feedback", json=body, timeout=30)
        assert answer.status_code == 200, answer.text
        ids.append(answer.json()["id"])
    return ids


def rollout_events(run: Path, rollout_id: int) -> list[dict]:
    rows = query(run, "SELECT detail FROM events WHERE kind = 'rollout' ORDER BY id")
    return [d for d in map(json.loads, (r[0] for r in rows)) if d["rollout"] == rollout_id]


def test_forced_retrain_walks_every_stage_and_a_worse_canary_rolls_back(server, digits):
    first = server.health()
    forced = httpx.post(server.url + "/retrain", json={"reason": "test"})
    assert forced.status_code == 202, forced.text
    busy = httpx.post(server.url + "/retrain", json={})
    assert busy.status_code == 409  # one job (or one rollout) at a time
    health = wait_for(lambda: (h := server.health())["canary"] and h, "the retrained canary")
    assert health["stable"] == first["stable"] and health["share"] == 0.05
    canary, rid = int(health["canary"][1:]), health["rollout"]
    r = rollout.Rollout(rid, int(first["stable"][1:]), canary, 0)
    canary_user = next(f"u{i}" for i in range(1000) if rollout.version_for(r, f"u{i}") == canary)
    image = drawn_one().tolist()
    seen = httpx.post(server.url + "/predict", json={"user": canary_user, "image": image}).json()
    assert seen["version"] == f"v{canary}"
    shares, sent = [health["share"]], 0
    while server.health()["canary"] is not None and sent < 5 * STAGE_FEEDBACK:
        send_labelled(server, digits, STAGE_FEEDBACK, sent)
        sent += STAGE_FEEDBACK
        wait_for(lambda: server.health()["share"] != shares[-1], "the stage gate")
        shares.append(server.health()["share"])
    events = rollout_events(server.run, rid)
    assert [e["action"] for e in events] == ["start", "advance", "advance", "promote"], events
    assert [e["to_share"] for e in events] == [0.05, 0.25, 0.5, 1.0]
    assert all(e["p_value"] >= ALPHA and e["requests"] == STAGE_FEEDBACK for e in events[1:])
    assert server.health()["stable"] == f"v{canary}"
    statuses = dict(query(server.run, "SELECT version, status FROM models"))
    assert statuses[canary] == "deployed" and statuses[int(first["stable"][1:])] == "retired"

    bad = httpx.post(server.url + "/retrain", json={"reason": "test", "fault": "random"})
    assert bad.status_code == 202, bad.text
    health = wait_for(lambda: (h := server.health())["canary"] and h, "the random canary")
    worse, rid = int(health["canary"][1:]), health["rollout"]
    send_labelled(server, digits, STAGE_FEEDBACK, sent)
    wait_for(lambda: server.health()["canary"] is None, "the rollback")
    events = rollout_events(server.run, rid)
    assert [e["action"] for e in events] == ["start", "rollback"]
    assert events[1]["p_value"] < ALPHA and events[1]["b"] > events[1]["c"]
    assert server.health()["stable"] == f"v{canary}"
    assert dict(query(server.run, "SELECT version, status FROM models"))[worse] == "rolled_back"


BROWSER = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")


@pytest.mark.skipif(
    not (BROWSER and DRIVER),
    reason="no headless Chromium here: apt-get install chromium chromium-driver (.ci/run does)",
)
def test_a_browser_draws_a_digit_reads_the_prediction_and_sends_a_correction(server):
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = BROWSER
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(flag)
    browser = webdriver.Chrome(options=options, service=webdriver.ChromeService(DRIVER))
    try:
        browser.get(server.url + "/")
        pad = browser.find_element(By.ID, "pad")
        stroke = webdriver.ActionChains(browser).move_to_element_with_offset(pad, 0, -100)
        stroke.click_and_hold()
        for _ in range(10):
            stroke.move_by_offset(0, 20)
        stroke.release().perform()
        browser.find_element(By.ID, "predict").click()
        wait = WebDriverWait(browser, 60)
        digit = int(wait.until(lambda b: b.find_element(By.ID, "digit")).text)
        probability = float(browser.find_element(By.ID, "probability").text)
        version = browser.find_element(By.ID, "version").text
        assert 0 <= digit <= 9 and 0.0 < probability <= 1.0
        assert version == server.health()["stable"] or version == server.health()["canary"]
        user = browser.find_element(By.ID, "user").text
        correction = (digit + 1) % 10
        browser.find_element(By.ID, f"label-{correction}").click()
        browser.find_element(By.ID, "send").click()
        saved = wait.until(lambda b: "saved" in (t := b.find_element(By.ID, "saved").text) and t)
        row_id = int(saved.split("#")[1].split()[0])
        row = query(server.run, "SELECT user, label, image FROM feedback WHERE id = ?", (row_id,))
        assert [(u, y) for u, y, _ in row] == [(user, correction)]
        assert np.frombuffer(row[0][2], np.float32).max() > 0.1  # the stroke was drawn
        browser.get(server.url + "/dashboard")
        wait.until(lambda b: "stable v" in b.find_element(By.ID, "summary").text)
        assert "p_value" in browser.find_element(By.ID, "decisions").text
        stable = server.health()["stable"][1:]
        assert f"{stable} " in browser.find_element(By.ID, "models").text + " "
    finally:
        browser.quit()


async def hammer(url: str, clients: int, seconds: float, acked: list, failures: list, halt=None):
    """``clients`` concurrent clients: three predictions, then one feedback, repeatedly, for
    ``seconds`` or until ``halt`` (a ``threading.Event``) is set."""
    image = drawn_one().tolist()
    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:

        async def one_client(k: int):
            stop, n = time.monotonic() + seconds, 0
            while time.monotonic() < stop and not (halt and halt.is_set()):
                n += 1
                user = f"load-{k}-{n % 7}"
                try:
                    if n % 4:
                        answer = await client.post("/predict", json={"user": user, "image": image})
                    else:
                        label = n % 10
                        body = {"user": user, "image": image, "label": label}
                        answer = await client.post("/feedback", json=body)
                        if answer.status_code == 200:
                            acked.append((answer.json()["id"], user, label))
                except httpx.HTTPError as err:
                    failures.append(repr(err))
                    continue
                if answer.status_code != 200:
                    failures.append(f"{answer.status_code} {answer.text}")

        await asyncio.gather(*(one_client(k) for k in range(clients)))


def test_32_concurrent_clients_fail_nothing_and_lose_no_feedback(server):
    acked, failures = [], []
    asyncio.run(hammer(server.url, 32, 6.0, acked, failures))
    assert failures == []
    assert len(acked) > 32
    stored = {i: (u, y) for i, u, y in query(server.run, "SELECT id, user, label FROM feedback")}
    assert all(stored.get(i) == (u, y) for i, u, y in acked)
    # the controller validates every full batch of 10 (schema checks, drift test) off the path
    wait_for(
        lambda: query(server.run, "SELECT COUNT(*) FROM feedback WHERE status = 'new'")[0][0] < 10,
        "the feedback batches to be validated",
    )
    batches = query(server.run, "SELECT first_id, last_id, passed, report FROM feedback_batches")
    assert len(batches) >= len(acked) // 10
    assert all(json.loads(report)["p_values"] for *_, report in batches)
    sizes = query(server.run, "SELECT batch, COUNT(*) FROM feedback GROUP BY batch HAVING batch")
    assert {n for _, n in sizes} == {10}
    assert "optlab_serve_drift_min_p_value" in httpx.get(server.url + "/metrics").text


def test_sigkill_under_load_loses_no_acknowledged_feedback_and_keeps_the_stage(
    run_folder, tmp_path
):
    run = tmp_path / "run"
    shutil.copytree(run_folder, run, ignore=shutil.ignore_patterns(".lock", "serve-*.log"))
    reg = Registry(run)  # a canary at 25 %, as a retrain job and one gate would leave it
    stable, canary = reg.deployed(), reg.next_version()
    save_npz(reg.weights_path(canary), load_npz(reg.weights_path(stable)))
    at_25 = rollout.Rollout(id=1, stable=stable, canary=canary, stage=1)
    with reg.transaction():
        reg.add_model(
            canary, parent=stable, user=None, status="candidate", optimizer="sgd", hparams={},
            metrics={}, wall_time_s=0.0, peak_memory_mb=0.0, reason="test canary",
        )  # fmt: skip
        reg.set_state("rollout", at_25.to_dict())
    reg.close()
    args = ("--retrain", "manual", "--stage-feedback", "1000000", "--feedback-batch", "10")
    server = Server(run, *args)
    before = server.health()
    assert before["canary"] == f"v{canary}" and before["share"] == 0.25
    acked, failures, halt = [], [], threading.Event()
    loader = threading.Thread(
        target=lambda: asyncio.run(hammer(server.url, 8, 30.0, acked, failures, halt)),
        daemon=True,
    )
    loader.start()
    wait_for(lambda: len(acked) >= 40, "acknowledged feedback under load", timeout=60)
    server.proc.send_signal(signal.SIGKILL)
    server.proc.wait()
    halt.set()
    loader.join(60)
    assert not loader.is_alive()
    restarted = Server(run, *args)
    try:
        assert restarted.health() == before  # the same versions, share, stage and rollout
        stored = {i: (u, y) for i, u, y in query(run, "SELECT id, user, label FROM feedback")}
        lost = [(i, u, y) for i, u, y in acked if stored.get(i) != (u, y)]
        assert lost == [] and len(acked) >= 40
        assert query(run, "PRAGMA quick_check") == [("ok",)]
        reg = Registry.open_existing(run)
        assert reg.deployed() == stable
        reg.close()
        image = drawn_one().tolist()
        again = httpx.post(restarted.url + "/predict", json={"user": "after", "image": image})
        assert again.status_code == 200
    finally:
        restarted.stop()


WRK_OUTPUT = """Running 2s test @ http://127.0.0.1:8000
  2 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     9.91ms   20.19ms 167.54ms   92.78%
  Latency Distribution
     50%  616.00us
     75%    8.84ms
     90%   22.07ms
     99%    1.50s
  6413 requests in 2.01s, 2.29MB read
  Non-2xx or 3xx responses: 3
  Socket errors: connect 0, read 1, write 0, timeout 2
Requests/sec:   3190.55
Transfer/sec:      1.14MB
"""


def test_bench_serve_reads_wrk_and_scripts_its_body():
    cell = bench_serve.parse_wrk(WRK_OUTPUT)
    assert cell == {"requests": 6413, "requests_per_s": 3190.55, "p50_ms": pytest.approx(0.616),
                    "p99_ms": pytest.approx(1500.0), "failed": 6}  # fmt: skip
    assert bench_serve.cpu_seconds(os.getpid()) > 0.0
    with pytest.raises(RuntimeError, match="cannot read wrk"):
        bench_serve.parse_wrk("wrk: connection refused")
    image = bench_serve.drawing()
    assert np.asarray(image).shape == (28, 28) and 0 <= np.min(image) <= np.max(image) <= 1
    script = bench_serve.lua_script(image)
    assert f"for i = 1, {bench_serve.USERS} do" in script and '"/predict"' in script
