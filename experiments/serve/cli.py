"""``optlab serve``: serve a continual run folder over HTTP (see the package docstring).

This module imports nothing heavy, so that ``optlab serve --help`` and a mistyped option
answer at once; :func:`run` imports the service (JAX, the registry) when it runs."""

from __future__ import annotations

import argparse
import gc
from pathlib import Path

RETRAIN_MODES = ("auto", "manual")


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", required=True, help="a continual run folder (optlab continual)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on")
    parser.add_argument(
        "--feedback-batch", type=int, default=50, help="feedback samples validated together"
    )
    parser.add_argument(
        "--stage-feedback", type=int, default=50, help="labelled samples that end a rollout stage"
    )
    parser.add_argument("--alpha", type=float, help="McNemar threshold (default: the run's)")
    parser.add_argument(
        "--retrain", choices=RETRAIN_MODES, default="auto",
        help="auto: the run's triggers start retrains; manual: only POST /retrain",
    )  # fmt: skip
    parser.add_argument("--allow-faults", action="store_true", help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int:
    import jax  # noqa: PLC0415 - heavy: only when the command runs
    import uvicorn  # noqa: PLC0415
    from optlab.experiments.report import RunFolderLock  # noqa: PLC0415

    from .app import ServeConfig, Service, build_app  # noqa: PLC0415

    if not 0 < args.port < 65536:
        raise ValueError(f"--port must be in 1..65535, got {args.port}")
    config = ServeConfig(
        run=Path(args.run),
        feedback_batch=args.feedback_batch,
        stage_feedback=args.stage_feedback,
        alpha=args.alpha,
        retrain=args.retrain,
        allow_faults=args.allow_faults,
    )
    if not Path(args.run).is_dir():
        raise OSError(f"--run {args.run}: no such run folder")
    # A request's device call is tiny: running it in the calling thread (no hand-off to
    # XLA's CPU thread pool) costs ~1/3 less CPU per request on CPU backends.
    jax.config.update("jax_cpu_enable_async_dispatch", False)
    with RunFolderLock(args.run):  # one server per run folder
        service = Service(config)
        r = service.rollout
        print(
            f"serving {args.run} at http://{args.host}:{args.port}/ (stable v{r.stable}"
            + (f", canary v{r.canary} at {r.share:.0%}" if r.canary is not None else "")
            + ")",
            flush=True,
        )
        # Everything loaded so far (JAX, the model, the registry) lives until exit: freezing it
        # keeps the garbage collector's full passes from scanning it under load.
        gc.collect()
        gc.freeze()
        uvicorn.run(
            build_app(service), host=args.host, port=args.port, log_level="warning",
            access_log=False, lifespan="on",
        )  # fmt: skip
    return 0
