"""The ``optlab`` command line: one subcommand per experiment.

Each subcommand lives in its own module, which exposes two functions::

    configure_parser(parser: argparse.ArgumentParser) -> None
    run(args: argparse.Namespace) -> int | None

Modules are imported only when their subcommand runs, so ``optlab --help`` is fast
and a broken experiment cannot break the others.

Errors a user can fix (bad hyperparameters, unknown names, missing or corrupted data
files, unwritable output folders) are raised as ``ValueError`` or ``OSError``
subclasses; they are printed as one readable line and the command exits with status 2
instead of showing a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "compare": ("experiments.compare", "train every optimizer on one dataset and compare them"),
    "bench": ("experiments.bench", "performance benchmarks: optimizer steps, memory, training"),
    "continual": (
        "experiments.continual",
        "continual learning with validation, canary rollout, monitoring and a model registry",
    ),
    "data": ("experiments.data.cli", "download and verify the datasets (digits, MNIST, CIFAR-10)"),
    "study": ("experiments.studies", "optimizer studies: surfaces, conditioning, ..."),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="optlab", description="First-order optimizers in JAX: compare, reproduce, study."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        sub_parser.set_defaults(_module=module_name)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    # Find the subcommand first, so that its module can add its own options before the
    # real parse (this keeps ``optlab COMMAND --help`` complete).
    command = next((token for token in argv if not token.startswith("-")), None)
    if command in SUBCOMMANDS:
        module = importlib.import_module(SUBCOMMANDS[command][0])
        sub_parser = parser._subparsers._group_actions[0].choices[command]  # noqa: SLF001
        module.configure_parser(sub_parser)
    args = parser.parse_args(argv)  # exits with usage for unknown or missing commands
    module = importlib.import_module(args._module)
    try:
        status = module.run(args)
    except KeyboardInterrupt:
        print("optlab: interrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError) as err:
        print(f"optlab {args.command}: error: {err}", file=sys.stderr)
        return 2
    return int(status or 0)


if __name__ == "__main__":
    sys.exit(main())
