"""The service: a Starlette app over a continual run folder (see the package docstring).

Request path (the event loop): parse and check the body (:mod:`.inputs`), route the user
(:func:`rollout.version_for`), predict through the :class:`~.model.MicroBatcher`, answer.
``/feedback`` additionally scores the image with the stable and the canary version and
hands the row to the :class:`Controller` thread, which commits every queued row in one
transaction (group commit: one ``fsync`` for all the feedback that arrived meanwhile) and
only then lets the request answer: an acknowledged feedback is on disk.

The controller thread owns every write to the registry: after each group commit (and every
``poll_s`` seconds) it validates full feedback batches like the continual stream
(:func:`validation.validate`: schema checks, drift against the reference data; a failing
batch is quarantined), counts them toward the retrain triggers (:func:`triggers.check`),
gates the rollout stage (:func:`rollout.gate`), starts retrain jobs in a separate process
(:func:`retrain.run_job`) and picks up the canary a finished job registered.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import logging
import multiprocessing
import os
import queue
import threading
import time
from pathlib import Path

import numpy as np
import orjson
from optlab.experiments.continual import triggers, validation
from optlab.experiments.continual.loop import Loop, LoopConfig
from optlab.experiments.continual.registry import Registry, load_npz
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from . import inputs, pages, retrain
from . import rollout as rollouts
from .cli import RETRAIN_MODES
from .inputs import BadRequest
from .model import MicroBatcher, Versions
from .store import ServeStore

log = logging.getLogger("optlab.serve")
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


@dataclasses.dataclass(frozen=True)
class ServeConfig:
    """How a run folder is served.

    ``feedback_batch``: feedback samples validated together (a "user" of the continual
    stream, for the drift test and the triggers); ``stage_feedback``: labelled samples that
    end a rollout stage; ``alpha``: the McNemar threshold (default: the run's
    ``canary_alpha``); ``retrain``: ``auto`` (the run's triggers) or ``manual`` (only
    ``POST /retrain``); ``allow_faults``: accept ``POST /retrain {"fault": "random"}``.
    """

    run: Path
    feedback_batch: int = 50
    stage_feedback: int = 50
    alpha: float | None = None
    retrain: str = "auto"
    allow_faults: bool = False
    poll_s: float = 0.25

    def __post_init__(self):
        for name in ("feedback_batch", "stage_feedback"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.alpha is not None and not 0.0 < self.alpha < 1.0:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha!r}")
        if self.retrain not in RETRAIN_MODES:
            raise ValueError(f"retrain must be one of {', '.join(RETRAIN_MODES)}")


class Metrics:
    """The Prometheus series of one service (its own ``CollectorRegistry``)."""

    def __init__(self):
        r = self.registry = CollectorRegistry()
        self.requests = Counter(
            "optlab_serve_requests", "HTTP requests", ["endpoint", "version", "status"], registry=r
        )
        self.latency = Histogram(
            "optlab_serve_predict_latency_seconds", "/predict latency in the app, by version",
            ["version"], buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.accuracy = Gauge(
            "optlab_serve_feedback_accuracy", "accuracy on all feedback, by version", ["version"],
            registry=r,
        )  # fmt: skip
        self.scored = Gauge(
            "optlab_serve_feedback_scored", "feedback samples scored, by version", ["version"],
            registry=r,
        )  # fmt: skip
        self.drift = Gauge(
            "optlab_serve_drift_min_p_value",
            "smallest Holm-corrected p-value of the drift test on the latest feedback batch",
            registry=r,
        )
        self.share = Gauge("optlab_serve_rollout_share", "share of users the canary answers",
                           registry=r)  # fmt: skip
        self.stage = Gauge("optlab_serve_rollout_stage", "rollout stage (index of 5,25,50,100 %)",
                           registry=r)  # fmt: skip
        self.stable = Gauge("optlab_serve_stable_version", "stable model version", registry=r)
        self.canary = Gauge("optlab_serve_canary_version", "canary version (0: none)", registry=r)
        self.retrains = Counter("optlab_serve_retrains", "retrain jobs started", registry=r)
        self.quarantined = Counter(
            "optlab_serve_quarantined_batches", "feedback batches quarantined", registry=r
        )

    def show_rollout(self, r: rollouts.Rollout) -> None:
        self.share.set(r.share)
        self.stage.set(r.stage)
        self.stable.set(r.stable)
        self.canary.set(r.canary or 0)


class Service:
    """Everything one served run folder holds in memory (built before the server starts)."""

    def __init__(self, config: ServeConfig):
        run = Path(config.run)
        if not (run / "config.json").is_file():
            raise OSError(f"{run} is not a continual run folder (config.json missing)")
        Registry.open_existing(run).close()  # RegistryDamagedError (a ValueError) if damaged
        self.config, self.run = config, run
        loop_config = LoopConfig.from_json(run / "config.json")
        self.loop = Loop(loop_config, run)
        self.loop.registry.close()
        self.alpha = config.alpha if config.alpha is not None else loop_config.canary_alpha
        shape = self.loop.reference[0].shape[1:]
        self.format = inputs.ImageFormat(shape)
        self.versions = Versions(self.loop.graphdef, shape, self.loop.load_weights)
        self.batcher = MicroBatcher(self.versions)
        self.metrics = Metrics()
        self.trigger_config = triggers.TriggerConfig(
            loop_config.trigger_rules, loop_config.every_n, loop_config.max_drop
        )
        store = ServeStore(run)
        try:
            self.reference = self._drift_reference(store)
            self.rollout = self._initial_rollout(store)
        finally:
            store.close()
        for version in (self.rollout.stable, self.rollout.canary):
            if version is not None:
                self.versions.ensure(version)
        self.metrics.show_rollout(self.rollout)
        self.controller = Controller(self)

    def _drift_reference(self, store: ServeStore):
        """The continual loop's drift reference (its newest learned batch), else the stream's."""
        checkpoint = store.get_state("checkpoint")
        if checkpoint:
            state = load_npz(self.run / checkpoint["file"])
            if len(state.get("ref_y", ())):
                return state["ref_x"], state["ref_y"]
        return self.loop.reference

    @staticmethod
    def _initial_rollout(store: ServeStore) -> rollouts.Rollout:
        saved = store.get_state("rollout")
        if saved is not None:
            return rollouts.Rollout.from_dict(saved)
        deployed = store.deployed()
        if deployed is None:
            raise ValueError(f"{store.path} holds no deployed model to serve")
        first = rollouts.Rollout(0, deployed)
        with store.transaction():
            store.set_state("rollout", first.to_dict())
        return first


class Controller(threading.Thread):
    """The one thread that writes the registry (see the module docstring)."""

    def __init__(self, service: Service):
        super().__init__(name="optlab-serve-controller", daemon=True)
        self.service, self.inbox = service, queue.Queue()
        self.process: multiprocessing.Process | None = None
        self.stopping = False
        self.last_gauges = 0.0

    # ------------------------------------------------------------------ the request side
    def submit(self, kind: str, payload) -> concurrent.futures.Future:
        future = concurrent.futures.Future()
        self.inbox.put((kind, payload, future))
        return future

    def stop(self) -> None:
        self.stopping = True
        self.inbox.put(None)
        self.join(timeout=10)

    # ------------------------------------------------------------------ the thread
    def run(self) -> None:
        self.store = ServeStore(self.service.run)
        while not self.stopping:
            try:
                first = self.inbox.get(timeout=self.service.config.poll_s)
            except queue.Empty:
                first = None
            items = [first] if first else []
            while True:
                try:
                    items.append(self.inbox.get_nowait())
                except queue.Empty:
                    break
            items = [i for i in items if i is not None]
            self._commit_feedback([i for i in items if i[0] == "feedback"])
            for _, payload, future in (i for i in items if i[0] == "retrain"):
                try:
                    future.set_result(self.start_retrain(**payload))
                except Exception as err:  # noqa: BLE001 - answered to the request
                    future.set_exception(err)
            try:
                self.step()
            except Exception:  # a control step must never stop the thread
                log.exception("control step failed")
        self.store.close()

    def _commit_feedback(self, items) -> None:
        if not items:
            return
        try:
            ids = self.store.add_feedback([payload for _, payload, _ in items])
        except Exception as err:  # noqa: BLE001 - every waiting request gets a 5xx
            for _, _, future in items:
                future.set_exception(err)
            return
        for (_, _, future), row_id in zip(items, ids, strict=True):
            future.set_result(row_id)

    def step(self) -> None:
        self.validate_batches()
        self.sync_rollout()
        self.gate()
        self.watch_job()
        if self.service.config.retrain == "auto":
            self.maybe_trigger()
        if time.monotonic() - self.last_gauges > 1.0:
            self.last_gauges = time.monotonic()
            for version, (right, n) in self.store.accuracy_by_version().items():
                self.service.metrics.accuracy.labels(f"v{version}").set(right / n)
                self.service.metrics.scored.labels(f"v{version}").set(n)

    # ------------------------------------------------------------------ validation
    def validate_batches(self) -> None:
        """Validate every full batch of new feedback (oldest first), as the stream does."""
        size, store = self.service.config.feedback_batch, self.store
        shape = self.service.format.input_shape
        while store.count("new") >= size:
            rows = store.oldest("new", size)
            x = np.stack([np.frombuffer(blob, np.float32).reshape(shape) for _, _, blob, _ in rows])
            y = np.array([label for _, label, _, _ in rows], np.int32)
            report = validation.validate(
                x, y, *self.service.reference, num_classes=inputs.NUM_CLASSES,
                alpha=self.service.loop.config.drift_alpha,
            )  # fmt: skip
            accuracy = float(np.mean([ok for *_, ok in rows]))
            first, last = rows[0][0], rows[-1][0]
            with store.transaction():
                batch = store.next_batch()
                store.add_batch(batch, first, last, report.to_dict(), accuracy)
                status = "validated" if report.passed else "quarantined"
                store.set_feedback_status(first, last, status, old="new", batch=batch)
                if not report.passed:
                    store.add_event(None, "quarantine", {"batch": batch,
                                                         "failures": report.failures})  # fmt: skip
                since = store.get_state("serve_batches_since_retrain", 0) + int(report.passed)
                store.set_state("serve_batches_since_retrain", since)
                store.set_state("serve_last_batch", {"batch": batch, "drift": report.drift,
                                                     "accuracy": accuracy})  # fmt: skip
            self.service.metrics.drift.set(report.min_p_value)
            if not report.passed:
                self.service.metrics.quarantined.inc()

    # ------------------------------------------------------------------ rollout
    def publish(self, rollout: rollouts.Rollout) -> None:
        """Load the versions ``rollout`` needs, then let requests see it."""
        for version in (rollout.stable, rollout.canary):
            if version is not None:
                self.service.versions.ensure(version)
        self.service.rollout = rollout
        self.service.metrics.show_rollout(rollout)

    def sync_rollout(self) -> None:
        """Pick up a rollout another process (a retrain job) committed."""
        saved = rollouts.Rollout.from_dict(self.store.get_state("rollout"))
        if saved != self.service.rollout:
            self.publish(saved)

    def gate(self) -> None:
        r = self.service.rollout
        if r.canary is None:
            return
        stable_ok, canary_ok, last = self.store.pairs(r.id, r.canary, r.since)
        decision = rollouts.gate(
            r, stable_ok, canary_ok, last,
            alpha=self.service.alpha, min_pairs=self.service.config.stage_feedback,
        )  # fmt: skip
        if decision is None:
            return
        d = decision.decision
        with self.store.transaction():
            self.store.add_event(None, "rollout", decision.to_dict())
            if decision.action == "rollback":
                self.store.set_status(r.canary, "rolled_back", d.reason)
            elif decision.action == "promote":
                self.store.set_status(r.stable, "retired", f"replaced by v{r.canary}")
                self.store.set_status(r.canary, "deployed", d.reason)
                self.store.set_state("deployed_accuracy", d.challenger_accuracy)
            self.store.set_state("rollout", decision.after.to_dict())
        log.warning("rollout %s of v%s: %s (%s)", r.id, r.canary, decision.action, d.reason)
        self.publish(decision.after)

    # ------------------------------------------------------------------ retraining
    def job(self) -> dict | None:
        return self.store.get_state("retrain_job")

    def running(self) -> bool:
        job = self.job()
        return job is not None and job["status"] == "running"

    def start_retrain(self, reason: str = "forced", fault: str | None = None) -> dict:
        """Start a retrain job in a new process; 409 while a job or a rollout is running."""
        if self.running():
            raise BadRequest(409, f"retrain job {self.job()['id']} is still running")
        r = self.service.rollout
        if r.canary is not None:
            raise BadRequest(409, f"v{r.canary} is still being rolled out (rollout {r.id})")
        previous = self.job() or {"id": 0}
        job = {
            "id": previous["id"] + 1, "reason": reason, "fault": fault,
            "max_id": self.store.max_feedback_id(), "status": "running", "started": time.time(),
        }  # fmt: skip
        context = multiprocessing.get_context("spawn")
        self.process = context.Process(
            target=retrain.run_job, args=(str(self.service.run), job), daemon=False
        )
        with self.store.transaction():
            self.store.set_state("retrain_job", job)
            self.store.set_state("serve_batches_since_retrain", 0)
            self.store.add_event(None, "trigger", {"reason": reason, "job": job["id"]})
        self.process.start()
        job["pid"] = self.process.pid
        with self.store.transaction():
            self.store.set_state("retrain_job", job)
        self.service.metrics.retrains.inc()
        return job

    def watch_job(self) -> None:
        """Record a job whose worker died without recording its end (killed, crashed)."""
        if self.process is not None:
            if self.process.is_alive():
                return
            self.process.join()
            code, self.process = self.process.exitcode, None
            if code != 0 and self.running():
                self._fail_job(f"worker exited with status {code}")
        elif self.running() and not process_alive(self.job().get("pid")):
            # a job a previous server started: its worker outlives a crash, and is waited for
            self._fail_job("the worker of a previous server is gone")

    def _fail_job(self, error: str) -> None:
        with self.store.transaction():
            job = self.job()
            self.store.set_state("retrain_job", {**job, "status": "failed", "error": error})
            self.store.add_event(None, "retrain_failed", {"job": job["id"], "error": error})

    def maybe_trigger(self) -> None:
        """Start a retrain when the run's trigger rules fire on the feedback batches."""
        if self.running() or self.service.rollout.canary is not None:
            return
        last = self.store.get_state("serve_last_batch")
        if last is None or self.store.count("validated") == 0:
            return
        reason = triggers.check(
            self.service.trigger_config,
            users_since_retrain=self.store.get_state("serve_batches_since_retrain", 0),
            drift=last["drift"],
            accuracy=last["accuracy"],
            deployed_accuracy=self.store.get_state("deployed_accuracy"),
        )
        if reason is not None:
            self.start_retrain(reason)


# ---------------------------------------------------------------------------- the app


def process_alive(pid) -> bool:
    """Whether process ``pid`` exists (signal 0 probes without signalling)."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class JSON(Response):
    media_type = "application/json"

    def render(self, content) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


async def read_body(request: Request) -> bytes:
    """The body, refused with a 413 beyond :data:`inputs.MAX_BODY_BYTES` (declared or read)."""
    limit = inputs.MAX_BODY_BYTES
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BadRequest(413, f"the body is larger than {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BadRequest(413, f"the body is larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def json_body(request: Request) -> dict:
    content_type = request.headers.get("content-type", "application/json")
    if not content_type.startswith("application/json"):
        raise BadRequest(415, f"send application/json (or a PNG upload), not {content_type}")
    return inputs.parse_json(await read_body(request))


def build_app(service: Service) -> Starlette:
    """The Starlette app of ``service`` (routes in the module docstring of the package)."""
    fmt, metrics, batcher = service.format, service.metrics, service.batcher

    async def image_request(request: Request) -> tuple[str, np.ndarray]:
        """``(user, raw image)`` from a JSON body or a multipart PNG upload."""
        if request.headers.get("content-type", "").startswith("multipart/form-data"):
            declared = request.headers.get("content-length", "")
            if not declared.isdigit():
                raise BadRequest(411, "a PNG upload must declare its Content-Length")
            if int(declared) > inputs.MAX_BODY_BYTES:
                raise BadRequest(413, f"the body is larger than {inputs.MAX_BODY_BYTES} bytes")
            async with request.form(max_files=1, max_fields=1) as form:
                if "user" not in form or "image" not in form or isinstance(form["image"], str):
                    raise BadRequest(422, "a PNG upload needs the fields 'user' and 'image'")
                return inputs.user_of(form["user"]), fmt.from_png(await form["image"].read())
        obj = await json_body(request)
        inputs.require(obj, "user", "image")
        return inputs.user_of(obj["user"]), fmt.from_json(obj["image"])

    async def predict(request: Request) -> Response:
        start = time.perf_counter()
        user, image = await image_request(request)
        fmt.check(image)
        version = rollouts.version_for(service.rollout, user)
        p = await batcher.predict(version, fmt.resize(image))
        name = f"v{version}"
        metrics.latency.labels(name).observe(time.perf_counter() - start)
        metrics.requests.labels("predict", name, "200").inc()
        return JSON({"digit": int(p.argmax()), "probabilities": p, "version": name})

    async def feedback(request: Request) -> Response:
        obj = await json_body(request)
        inputs.require(obj, "user", "image", "label")
        user, label = inputs.user_of(obj["user"]), inputs.label_of(obj["label"])
        image = fmt.from_json(obj["image"])
        fmt.check(image, label)
        x = fmt.resize(image)
        r = service.rollout
        served = rollouts.version_for(r, user)
        versions = [r.stable] + ([r.canary] if r.canary is not None else [])
        scores = await asyncio.gather(*(batcher.predict(v, x) for v in versions))
        correct = {v: int(s.argmax() == label) for v, s in zip(versions, scores, strict=True)}
        row = {
            "user": user, "label": label, "image": x.astype(np.float32).tobytes(),
            "served": served, "stable": r.stable, "stable_correct": correct[r.stable],
            "canary": r.canary, "canary_correct": correct.get(r.canary), "rollout": r.id,
        }  # fmt: skip
        row_id = await asyncio.wrap_future(service.controller.submit("feedback", row))
        metrics.requests.labels("feedback", f"v{served}", "200").inc()
        digit = int(scores[versions.index(served)].argmax())
        return JSON({"id": row_id, "stored": True, "version": f"v{served}", "digit": digit})

    async def retrain_now(request: Request) -> Response:
        empty = request.headers.get("content-length", "0") == "0"
        obj = {} if empty else await json_body(request)
        fault = obj.get("fault")
        if fault is not None and (fault not in retrain.FAULTS or not service.config.allow_faults):
            raise BadRequest(403, "fault injection is off (optlab serve --allow-faults)")
        reason = obj.get("reason", "forced")
        if not isinstance(reason, str) or not reason:
            raise BadRequest(422, "'reason' must be a non-empty string")
        job = await asyncio.wrap_future(
            service.controller.submit("retrain", {"reason": reason, "fault": fault})
        )
        return JSON({"job": job["id"], "reason": reason, "status": job["status"]}, 202)

    async def healthz(request: Request) -> Response:
        r = service.rollout
        alive = service.controller.is_alive()
        return JSON(
            {
                "status": "ok" if alive else "controller stopped",
                "stable": f"v{r.stable}",
                "canary": None if r.canary is None else f"v{r.canary}",
                "share": r.share,
                "stage": r.stage,
                "rollout": r.id,
            },
            200 if alive else 503,
        )

    async def metrics_page(request: Request) -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def status(request: Request) -> Response:
        return JSON(await asyncio.to_thread(status_snapshot, service))

    async def bad_request(request: Request, err: BadRequest) -> Response:
        endpoint = request.url.path.strip("/") or "index"
        metrics.requests.labels(endpoint, "", str(err.status)).inc()
        return JSON({"error": str(err)}, err.status)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        service.controller.start()
        yield
        service.controller.stop()

    routes = [
        Route("/", lambda r: HTMLResponse(pages.DRAW), methods=["GET"]),
        Route("/dashboard", lambda r: HTMLResponse(pages.DASHBOARD), methods=["GET"]),
        Route("/predict", predict, methods=["POST"]),
        Route("/feedback", feedback, methods=["POST"]),
        Route("/retrain", retrain_now, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metrics", metrics_page, methods=["GET"]),
        Route("/api/status", status, methods=["GET"]),
    ]
    return Starlette(routes=routes, exception_handlers={BadRequest: bad_request}, lifespan=lifespan)


def status_snapshot(service: Service, window: int = 25) -> dict:
    """What the dashboard shows: versions, the rollout, its decisions, accuracy over time."""
    store = ServeStore(service.run)
    try:
        models = [
            {k: m[k] for k in ("version", "parent", "status", "optimizer", "reason", "created")}
            for m in store.models()
        ]
        decisions = [e for e in store.events("rollout")]
        return {
            "rollout": {
                **service.rollout.to_dict(),
                "share": service.rollout.share,
                "stages": rollouts.STAGES,
            },  # fmt: skip
            "models": models,
            "decisions": decisions,
            "accuracy": store.accuracy_over_time(window),
            "feedback": {s: store.count(s) for s in ("new", "validated", "quarantined", "trained")},
            "retrain_job": store.get_state("retrain_job"),
            "window": window,
        }
    finally:
        store.close()
