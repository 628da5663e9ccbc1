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

``--config FILE.json`` (before or after the subcommand) reads option values from a JSON
object whose keys are the subcommand's option names (``"batch_size"`` or
``"batch-size"``); options given on the command line override the file. Unknown keys
are refused with the list of valid ones.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

# subcommand -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "compare": ("experiments.compare", "train every optimizer on one dataset and compare them"),
    "bench": ("experiments.bench.cli", "performance benchmarks: optimizer steps, memory, training"),
    "continual": (
        "experiments.continual.cli",
        "continual learning with validation, canary rollout, monitoring and a model registry",
    ),
    "data": ("experiments.data.cli", "download and verify the datasets (digits, MNIST, CIFAR-10)"),
    "study": ("experiments.studies.cli", "optimizer studies: surfaces, conditioning, ..."),
    "adam-paper": ("experiments.papers.adam", "reproduce Kingma & Ba's Adam paper (Figs. 1-4)"),
    "adadelta-paper": ("experiments.papers.adadelta", "reproduce Zeiler's ADADELTA paper"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="optlab", description="First-order optimizers in JAX: compare, reproduce, study."
    )
    parser.add_argument("--config", metavar="FILE.json", help=CONFIG_HELP)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        sub_parser.add_argument("--config", metavar="FILE.json", help=CONFIG_HELP)
        sub_parser.set_defaults(_module=module_name)
    return parser


CONFIG_HELP = "read option values from a JSON object (command-line options override it)"


def _option_actions(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """The parser's options by destination name (``batch_size``), help and --config left out."""
    return {
        action.dest: action
        for action in parser._actions  # noqa: SLF001
        if action.option_strings and action.dest not in ("help", "config")
    }


def _config_value(key: str, value, action: argparse.Action):
    """``value`` checked (and converted from a string) as the option ``action`` would."""
    flag = action.option_strings[-1]
    if isinstance(action, argparse._StoreTrueAction | argparse._StoreFalseAction):  # noqa: SLF001
        if not isinstance(value, bool):
            raise ValueError(f"config key {key!r} ({flag}) must be true or false, got {value!r}")
        return value
    if isinstance(value, str) and action.type is not None:
        try:
            value = action.type(value)
        except (TypeError, ValueError) as err:
            raise ValueError(f"config key {key!r} ({flag}): {err}") from None
    if action.choices is not None and value not in action.choices:
        choices = ", ".join(map(str, action.choices))
        raise ValueError(f"config key {key!r} ({flag}) must be one of {choices}, got {value!r}")
    return value


def read_config(path: str, parser: argparse.ArgumentParser) -> dict:
    """Option defaults from the JSON object in ``path``, validated against ``parser``.

    Raises:
      OSError: the file cannot be read.
      ValueError: not a JSON object, an unknown key (the valid ones are listed) or a value
        the option does not take.
    """
    try:
        values = json.loads(Path(path).read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"config file {path} is not valid JSON: {err}") from None
    except OSError as err:
        raise OSError(err.errno, f"cannot read config file {path}: {err.strerror}") from None
    if not isinstance(values, dict):
        raise ValueError(f"config file {path} must hold a JSON object of option names to values")
    actions = _option_actions(parser)
    normalised = {str(key).replace("-", "_"): value for key, value in values.items()}
    unknown = sorted(
        key for key, norm in zip(values, normalised, strict=True) if norm not in actions
    )
    if unknown:
        raise ValueError(
            f"config file {path} has unknown key(s) {', '.join(map(repr, unknown))}; valid keys: "
            f"{', '.join(sorted(actions))}"
        )
    return {key: _config_value(key, value, actions[key]) for key, value in normalised.items()}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    pre.add_argument("--config")
    known, rest = pre.parse_known_args(argv)
    # Find the subcommand first, so that its module can add its own options before the
    # real parse (this keeps ``optlab COMMAND --help`` complete).
    command = next((token for token in rest if not token.startswith("-")), None)
    if command in SUBCOMMANDS:
        module = importlib.import_module(SUBCOMMANDS[command][0])
        sub_parser = parser._subparsers._group_actions[0].choices[command]  # noqa: SLF001
        module.configure_parser(sub_parser)
        if known.config is not None:
            try:
                sub_parser.set_defaults(**read_config(known.config, sub_parser))
            except (ValueError, OSError) as err:
                print(f"optlab {command}: error: {err}", file=sys.stderr)
                return 2
    args = parser.parse_args(rest)  # exits with usage for unknown or missing commands
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
