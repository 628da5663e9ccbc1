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

Usage errors (an option value its type does not parse, an unknown option or choice) are
one line too, ``optlab COMMAND: error: ...``, exit status 2; the usage is in ``--help``.

``--config FILE.json`` (before or after the subcommand) reads option values from a JSON
object whose keys are the subcommand's option names (``"batch_size"`` or
``"batch-size"``); options given on the command line override the file. Unknown keys
are refused with the list of valid ones, and every value is checked against its option
(:func:`config_value`): an integer option takes a JSON integer (a float without a
fraction counts) or a string ``int`` parses, never ``true``/``false``; a float option a
number or a string ``float`` parses; an option without a type a string; an option with
another type a string that type parses; an on/off flag ``true`` or ``false``; an option
with choices one of them.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from pathlib import Path

# subcommand -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "compare": (
        "optlab.experiments.commands.compare",
        "train every optimizer on one dataset and compare them",
    ),
    "bench": (
        "optlab.experiments.commands.bench",
        "performance benchmarks: optimizer steps, memory, training",
    ),
    "continual": (
        "optlab.experiments.commands.continual",
        "continual learning with validation, canary rollout, monitoring and a model registry",
    ),
    "serve": (
        "optlab.experiments.serve.cli",
        "serve a continual run over HTTP: predictions, feedback, staged canary rollout",
    ),
    "data": (
        "optlab.experiments.commands.data",
        "download and verify the datasets (digits, MNIST, CIFAR-10)",
    ),
    "study": ("optlab.experiments.studies.cli", "optimizer studies: surfaces, conditioning, ..."),
    "claims": (
        "optlab.experiments.commands.claims",
        "test every claim of the course notes: experiments, verdicts, a ledger",
    ),
    "benchmark": (
        "optlab.experiments.commands.benchmark",
        "the DeepOBS protocol: tune the learning rate per problem as one vmapped population",
    ),
    "adam-paper": (
        "optlab.experiments.commands.adam_paper",
        "reproduce Kingma & Ba's Adam paper (Figs. 1-4)",
    ),
    "adadelta-paper": (
        "optlab.experiments.commands.adadelta_paper",
        "reproduce Zeiler's ADADELTA paper",
    ),
    "launch": (
        "optlab.experiments.launch",
        "run an optlab command as one process of a multi-process (multi-host) JAX job",
    ),
}


class OneLineErrorParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors are one line on stderr (exit status 2),
    like every other error of the command line; subcommand parsers inherit it."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(
        prog="optlab", description="First-order optimizers in JAX: compare, reproduce, study."
    )
    parser.add_argument("--config", metavar="FILE.json", help=CONFIG_HELP)
    parser.add_argument("--no-compile-cache", action="store_true", help=NO_CACHE_HELP)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        sub_parser.add_argument("--config", metavar="FILE.json", help=CONFIG_HELP)
        sub_parser.add_argument(
            "--no-compile-cache",
            action="store_true",
            default=argparse.SUPPRESS,  # given before the command, it is not reset here
            help=NO_CACHE_HELP,
        )
        sub_parser.set_defaults(_module=module_name)
    return parser


CONFIG_HELP = "read option values from a JSON object (command-line options override it)"
NO_CACHE_HELP = "do not reuse compiled XLA programs across runs (same as OPTLAB_JAX_CACHE=off)"
COMPILE_CACHE_ENV = "OPTLAB_JAX_CACHE"


def compile_cache_folder(environ=os.environ) -> Path | None:
    """Where compiled XLA programs persist between runs, so a second run of the same job
    skips compilation: ``$OPTLAB_JAX_CACHE``, else ``$XDG_CACHE_HOME/optlab/jax`` (default
    ``~/.cache/optlab/jax``); ``None`` when ``OPTLAB_JAX_CACHE`` is ``off``, ``0`` or empty."""
    chosen = environ.get(COMPILE_CACHE_ENV)
    if chosen is not None:
        return None if chosen.strip().lower() in ("", "0", "off", "false", "no") else Path(chosen)
    cache_home = environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache_home) / "optlab" / "jax"


def enable_compile_cache(folder: Path) -> None:
    """Turn on JAX's persistent compilation cache in ``folder`` (unless the user's JAX
    configuration already names one), for every compilation, however short, so that what
    a run reuses does not depend on how loaded the machine was when it compiled."""
    import jax  # here, not at the top: ``optlab COMMAND --help`` stays JAX-free

    if not jax.config.jax_compilation_cache_dir:
        jax.config.update("jax_compilation_cache_dir", str(folder))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def option_actions(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """The parser's options by destination name (``batch_size``), without help, --config and
    --no-compile-cache (options of the command line itself, not of the subcommand)."""
    return {
        action.dest: action
        for action in parser._actions  # noqa: SLF001
        if action.option_strings and action.dest not in ("help", "config", "no_compile_cache")
    }


EXPECTED = {int: "an integer", float: "a number", None: "a string"}


def shown(value, limit: int = 60) -> str:
    """``value`` as JSON text, cut to ``limit`` characters (error messages stay one line)."""
    text = json.dumps(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def typed_value(value, option_type):
    """``value`` (from JSON) as ``option_type`` takes it, else ``None``: a string is parsed
    by the type (any type); an ``int`` option also takes an integer or a float without a
    fraction, a ``float`` option any number; ``true``/``false`` are never numbers."""
    if isinstance(value, str):
        return value if option_type is None else option_type(value)
    if isinstance(value, bool):
        return None
    if option_type is int and isinstance(value, int | float):
        return int(value) if isinstance(value, int) or value.is_integer() else None
    if option_type is float and isinstance(value, int | float):
        return float(value)
    return None


def config_value(key: str, value, action: argparse.Action):
    """``value`` checked (and converted) as the option ``action`` would take it on the
    command line, else a one-line ValueError naming ``key``, the flag and the expected type."""
    flag = action.option_strings[-1]
    if isinstance(action, argparse._StoreTrueAction | argparse._StoreFalseAction):  # noqa: SLF001
        expected, converted = "true or false", value if isinstance(value, bool) else None
    else:
        expected = EXPECTED.get(action.type, f"a string that {flag} takes")
        try:
            converted = typed_value(value, action.type)
        except (TypeError, ValueError, ArithmeticError) as err:
            raise ValueError(
                f"config key {key!r} ({flag}) must be {expected}, got {shown(value)} ({err})"
            ) from None
    if converted is None:
        raise ValueError(f"config key {key!r} ({flag}) must be {expected}, got {shown(value)}")
    if action.choices is not None and converted not in action.choices:
        choices = ", ".join(map(str, action.choices))
        raise ValueError(
            f"config key {key!r} ({flag}) must be one of {choices}, got {shown(value)}"
        )
    return converted


def read_config(path: str, parser: argparse.ArgumentParser) -> dict:
    """Option defaults from the JSON object in ``path``, validated against ``parser``.

    Raises:
      OSError: the file cannot be read.
      ValueError: not a JSON object, an unknown key (the valid ones are listed) or a value
        the option does not take.
    """
    try:
        values = json.loads(Path(path).read_text())
    except (ValueError, RecursionError) as err:  # not JSON, not UTF-8, a too long integer
        raise ValueError(f"config file {path} is not valid JSON: {err}") from None
    except OSError as err:
        raise OSError(err.errno, f"cannot read config file {path}: {err.strerror}") from None
    if not isinstance(values, dict):
        raise ValueError(f"config file {path} must hold a JSON object of option names to values")
    actions = option_actions(parser)
    normalised = {str(key).replace("-", "_"): value for key, value in values.items()}
    unknown = sorted(
        key for key, norm in zip(values, normalised, strict=True) if norm not in actions
    )
    if unknown:
        raise ValueError(
            f"config file {path} has unknown key(s) {', '.join(map(repr, unknown))}; valid keys: "
            f"{', '.join(sorted(actions))}"
        )
    return {key: config_value(key, value, actions[key]) for key, value in normalised.items()}


# Every character ``str.splitlines`` breaks a line at.
LINE_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"


# Engine and data messages name keyword arguments; the command line has flags.
FLAG_NAMES = {
    "data_dir=": "--data-dir",
    "resume with the original configuration": "--resume with the original options",
}


def one_line(err: Exception) -> str:
    """The message of ``err`` for the command line: keyword names as the flags a user types
    (:data:`FLAG_NAMES`, e.g. ``data_dir=`` -> ``--data-dir``), and on one line: line breaks
    (from a user's value, e.g. an option holding a newline) shown escaped, as ``\\n``."""
    message = str(err)
    for keyword, flag in FLAG_NAMES.items():
        message = message.replace(keyword, flag)
    return "".join(repr(char)[1:-1] if char in LINE_BREAKS else char for char in message)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    pre = OneLineErrorParser(prog="optlab", add_help=False, allow_abbrev=False)
    pre.add_argument("--config")
    try:
        known, rest = pre.parse_known_args(argv)
    except SystemExit as usage_error:  # ``--config`` without a file name
        return int(usage_error.code or 0)
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
                print(f"optlab {command}: error: {one_line(err)}", file=sys.stderr)
                return 2
    try:
        args = parser.parse_args(rest)
    except SystemExit as stop:  # --help (0), or a one-line usage error (2)
        return int(stop.code or 0)
    module = importlib.import_module(args._module)
    cache = None if args.no_compile_cache else compile_cache_folder()
    if cache is not None:
        enable_compile_cache(cache)
    try:
        status = module.run(args)
    except KeyboardInterrupt:
        print("optlab: interrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError) as err:
        print(f"optlab {args.command}: error: {one_line(err)}", file=sys.stderr)
        return 2
    return int(status or 0)


if __name__ == "__main__":
    sys.exit(main())
