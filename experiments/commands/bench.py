"""``optlab bench BENCHMARK``: its options, one function per benchmark. The benchmarks live
in :mod:`experiments.bench`, imported only when one runs, so ``--help`` and usage errors
answer at once."""

from __future__ import annotations

import argparse
import pathlib

# The benchmarks' names the options list (their modules hold the same; a test keeps them equal).
TREES = ("one", "many", "mlp", "vgg16")  # bench.step.TREES
WORKLOADS = ("mlp", "cnn")  # bench.train.WORKLOADS
PRECISION_OPTIMIZERS = ("adam", "nadam", "adamw")  # bench.precision.DEFAULT_OPTIMIZERS
PRECISION_DATASETS = ("digits", "mnist", "fashion_mnist")  # bench.precision.DATASETS

BENCHMARKS: dict[str, str] = {
    "step": "optimizer step (update + apply_updates) time: ours vs Optax",
    "roofline": "bytes per parameter per step from the compiled HLO, and achieved bandwidth",
    "memory": "optimizer-state bytes per parameter and peak memory of a step",
    "train": "training throughput with our engine vs an equivalent PyTorch loop",
    "population": "P vmapped training runs vs P sequential runs",
    "precision": "bfloat16 vs float32 first moment (mu_dtype): state bytes, step time, accuracy",
    "serve": "optlab serve's /predict under wrk: p50, p99, req/s at 1, 8, 32 clients vs a bare app",
}


def csv_list(text: str) -> list[str]:
    """``"a,b, c"`` -> ``["a", "b", "c"]`` (an argparse ``type``)."""
    return [item.strip() for item in text.split(",") if item.strip()]


def step_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--optimizers",
        type=csv_list,
        help="comma-separated registry names or MODULE:FACTORY (default: all with an Optax "
        "counterpart)",
    )
    parser.add_argument("--trees", type=csv_list, help=f"from {','.join(TREES)}")
    parser.add_argument("--dtypes", type=csv_list, default=["float32", "bfloat16"])
    parser.add_argument("--size", type=float, help="parameters of the one/many trees (10e6)")


def roofline_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--optimizers", type=csv_list, help="comma-separated (default: all)")
    parser.add_argument("--tree", default="one", choices=TREES)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--size", type=float, help="parameters (default 10e6; 100e6 on a GPU)")


def memory_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--optimizers", type=csv_list, help="comma-separated (default: all)")
    parser.add_argument(
        "--widths", type=lambda s: tuple(int(w) for w in csv_list(s)), help="MLP hidden widths"
    )


def train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workloads", type=csv_list, help=f"from {','.join(WORKLOADS)}")
    parser.add_argument("--steps", type=int, help="steps per timed epoch (default: full for mlp)")
    parser.add_argument("--synthetic", action="store_true", help="random data, no files read")
    parser.add_argument(
        "--torch-threads",
        type=int,
        help="torch.set_num_threads(N) (default: torch's own, one per core); 1 avoids "
        "OpenMP's collapse on a CPU shared with other busy processes",
    )


def population_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--sizes", type=lambda s: [int(p) for p in s.split(",")], help="population sizes P"
    )
    parser.add_argument("--steps", type=int, help="minibatches per timed epoch")
    parser.add_argument(
        "--widths", type=lambda s: tuple(int(w) for w in s.split(",")), help="MLP hidden widths"
    )
    parser.add_argument("--synthetic", action="store_true", help="random data, no files read")


def precision_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--optimizers", type=csv_list, help=f"default: {','.join(PRECISION_OPTIMIZERS)}"
    )
    parser.add_argument(
        "--dataset", choices=PRECISION_DATASETS, help="default: mnist (quick: digits)"
    )
    parser.add_argument("--train-size", type=int, help="training examples (default: 10000)")
    parser.add_argument("--epochs", type=int, help="default: 5 (quick: 2)")
    parser.add_argument("--seeds", type=int, help="seeds per population (default: 5; quick: 2)")
    parser.add_argument(
        "--learning-rates",
        type=lambda s: [float(v) for v in csv_list(s)],
        help="the same for both dtypes (default: 1e-3)",
    )
    parser.add_argument(
        "--widths", type=lambda s: tuple(int(w) for w in csv_list(s)), help="MLP hidden widths"
    )


def serve_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seconds", type=float, help="wrk duration per cell (default 5; quick 2)")
    parser.add_argument(
        "--clients", type=lambda t: tuple(int(v) for v in t.split(",")), help="e.g. 1,8,32"
    )
    parser.add_argument("--data-dir", help="MNIST for a 784-100-10 service model")


ARGUMENTS = {
    "step": step_arguments,
    "roofline": roofline_arguments,
    "memory": memory_arguments,
    "train": train_arguments,
    "population": population_arguments,
    "precision": precision_arguments,
    "serve": serve_arguments,
}


def configure_parser(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="benchmark", metavar="BENCHMARK", required=True)
    for name, help_text in BENCHMARKS.items():
        bench_parser = sub.add_parser(name, help=help_text, description=help_text)
        bench_parser.add_argument(
            "--quick", action="store_true", help="small sizes and few repeats (tests, laptops)"
        )
        bench_parser.add_argument("--out", type=pathlib.Path, help="write <benchmark>.json here")
        bench_parser.add_argument("--repeats", type=int, help="timed repeats per candidate")
        ARGUMENTS[name](bench_parser)


def run(args: argparse.Namespace) -> int:
    from optlab.experiments.bench import cli  # here: JAX loads only when a benchmark runs

    return cli.run(args)
