"""``optlab study NAME``: small, self-contained studies of how optimizers behave.

Each study is one module with ``run(out=None, quick=False, seeds=None) -> dict`` that writes a
run folder (config.json, metrics.jsonl, summary.md, PNG plots) and returns its numbers.
Adding a study is one line in ``STUDIES``.
"""

from __future__ import annotations

import argparse
import importlib
import inspect

SIZES = ("test", "quick", "cpu", "full")  # the training studies' sizes (``--size``)

# study name -> (module, one-line description)
STUDIES: dict[str, tuple[str, str]] = {
    "surfaces": (
        "experiments.studies.surfaces",
        "paths on Rosenbrock, Beale, a saddle and a ravine; momentum and learning rate sweep",
    ),
    "conditioning": (
        "experiments.studies.conditioning",
        "ill-conditioned quadratic, axis-aligned vs rotated: do diagonal preconditioners win?",
    ),
    "noise-redundancy": (
        "experiments.studies.noise_redundancy",
        "label noise and duplicated data: convergence and train-test gap per optimizer",
    ),
    "batch-regimes": (
        "experiments.studies.batch_regimes",
        "batch GD vs SGD vs mini-batches: loss against epochs and against wall time",
    ),
    "lr-sensitivity": (
        "experiments.studies.lr_sensitivity",
        "final loss over a log learning-rate grid: is Adam less sensitive to tuning?",
    ),
    "generalisation": (
        "experiments.studies.generalisation",
        "train-test gap of adaptive methods vs SGD with momentum on MNIST/Fashion-MNIST",
    ),
    "architectures": (
        "experiments.studies.architectures",
        "the optimizer comparison on VGG16, LSTM/GRU (sequential MNIST) and a Transformer",
    ),
}


def load(name: str):
    """The module of study ``name``; ``ValueError`` listing the valid names otherwise."""
    if name not in STUDIES:
        raise ValueError(f"unknown study {name!r}; valid studies: {', '.join(sorted(STUDIES))}")
    return importlib.import_module(STUDIES[name][0])


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = "studies:\n" + "\n".join(
        f"  {name:<17} {description}" for name, (_, description) in STUDIES.items()
    )
    parser.add_argument("name", metavar="NAME", help=f"one of: {', '.join(STUDIES)}")
    parser.add_argument("--quick", action="store_true", help="small sizes (tests, laptops)")
    parser.add_argument("--out", default=None, help="run folder (default runs/study-NAME-<time>)")
    parser.add_argument("--seeds", type=int, default=None, help="seeds for the noisy runs")
    parser.add_argument(
        "--size",
        choices=SIZES,
        default=None,
        help="training studies only: test (tiny, for the test suite), quick (= --quick), "
        "cpu (the largest that fits a few CPU minutes; docs/studies.md) or full (default)",
    )


def run(args: argparse.Namespace) -> int:
    if args.seeds is not None and args.seeds < 1:
        raise ValueError(f"--seeds must be at least 1, got {args.seeds}")
    module = load(args.name)
    sized = {}
    if getattr(args, "size", None) is not None:
        if "size" not in inspect.signature(module.run).parameters:
            raise ValueError(f"study {args.name!r} has no --size; use --quick or nothing")
        sized = {"size": args.size}
    result = module.run(out=args.out, quick=args.quick, seeds=args.seeds, **sized)
    print(f"optlab study {args.name}: wrote {result['folder']}")
    return 0
