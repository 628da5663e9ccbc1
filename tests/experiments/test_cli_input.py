"""Option values from ``--config`` and the command line: a value an option does not take is
exit status 2 with one line on stderr naming it, no traceback, and an existing run folder
is left byte-for-byte as it was (issue 10, item 10 and the fuzzing paragraph)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from optlab import models
from optlab import optimizers as opt
from optlab.experiments import cli, compare
from optlab.experiments.commands import compare as compare_command

from tests.experiments.test_run_folder import snapshot

TINY = ["compare", "--quick", "--optimizers", "sgd", "--epochs", "1", "--seeds", "1",
        "--lr-grid-size", "1"]  # fmt: skip
# Every example is refused before any data is loaded or anything trains.
FUZZ = settings(
    max_examples=25,
    deadline=5000,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def refused(capsys, argv: list[str]) -> str:
    """Run ``optlab argv`` in this process; assert exit status 2 and one stderr line without
    a traceback; return the line."""
    status = cli.main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert status == 2, err
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def write_config(folder: Path, values) -> str:
    path = folder / "config-under-test.json"
    path.write_text(json.dumps(values))
    return str(path)


def compare_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    compare_command.configure_parser(parser)
    return parser


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory) -> Path:
    """One finished tiny run (sgd, 1 epoch, 1 seed, 1 rate), never to be changed."""
    out = tmp_path_factory.mktemp("existing") / "run"
    assert cli.main([*TINY, "--out", str(out)]) == 0
    return out


# --------------------------------------------------------------------------- --config types


@pytest.mark.parametrize(
    "values, message",
    [
        ({"epochs": True}, "config key 'epochs' (--epochs) must be an integer, got true"),
        ({"optimizers": 5}, "config key 'optimizers' (--optimizers) must be a string, got 5"),
        ({"batch-size": 1.5}, "config key 'batch_size' (--batch-size) must be an integer, got 1.5"),
        ({"seeds": "two"}, "config key 'seeds' (--seeds) must be an integer, got \"two\""),
        ({"validation": None}, "config key 'validation' (--validation) must be a number, got null"),
        ({"target_loss": [0.1]}, "(--target-loss) must be a number, got [0.1]"),
        ({"quick": 1}, "config key 'quick' (--quick) must be true or false, got 1"),
        ({"out": {"dir": "x"}}, 'config key \'out\' (--out) must be a string, got {"dir": "x"}'),
        ({"on_non_finite": "ignore"}, '(--on-non-finite) must be one of stop, skip, got "ignore"'),
    ],
)
def test_config_values_of_the_wrong_type_are_one_line_naming_key_and_type(
    tmp_path, capsys, values, message
):
    """``{"epochs": true}`` was a TypeError traceback, ``{"optimizers": 5}`` an
    AttributeError; now each is one line naming the key, the flag and the expected type."""
    config = write_config(tmp_path, values)
    line = refused(capsys, ["compare", "--config", config, "--out", str(tmp_path / "run")])
    assert message in line
    assert not (tmp_path / "run").exists()


def test_config_values_the_option_takes_are_converted_as_on_the_command_line(tmp_path):
    config = write_config(
        tmp_path,
        {"epochs": 3.0, "batch-size": "64", "validation": 1, "target_loss": "0.5", "quick": True,
         "optimizers": "sgd,adam", "on_non_finite": "skip"},
    )  # fmt: skip
    values = cli.read_config(config, compare_parser())
    assert values == {"epochs": 3, "batch_size": 64, "validation": 1.0, "target_loss": 0.5,
                      "quick": True, "optimizers": "sgd,adam", "on_non_finite": "skip"}  # fmt: skip
    assert type(values["epochs"]) is int and type(values["batch_size"]) is int
    assert type(values["validation"]) is float


@pytest.mark.parametrize(
    "text",
    ['{"epochs": ' + "9" * 5000 + "}", "[" * 100_000, b"\xff\xfe{}"],
    ids=["integer-too-long", "nested-too-deep", "not-utf8"],
)
def test_config_files_python_cannot_parse_are_one_line(tmp_path, capsys, text):
    path = tmp_path / "c.json"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    line = refused(capsys, ["compare", "--config", str(path)])
    assert f"config file {path} is not valid JSON" in line


# --------------------------------------------------------------------------- command line


@pytest.mark.parametrize(
    "argv, message",
    [
        (["compare", "--epochs=abc"], "optlab compare: error: argument --epochs: invalid int"),
        (["compare", "--on-non-finite=x"], "argument --on-non-finite: invalid choice: 'x'"),
        (["compare", "--epochs"], "argument --epochs: expected one argument"),
        (["--config"], "optlab: error: argument --config: expected one argument"),
        (["nope"], "optlab: error: argument COMMAND: invalid choice: 'nope'"),
    ],
)
def test_usage_errors_are_one_line(capsys, argv, message):
    """argparse printed a usage block of several lines before its error."""
    line = refused(capsys, argv)
    assert message in line and "--help" in line


@pytest.mark.parametrize(
    "line_break, shown", [("\n", "\\n"), ("\x0c", "\\x0c"), ("\u2028", "\\u2028")]
)
def test_a_line_break_in_a_value_stays_one_line(tmp_path, capsys, line_break, shown):
    """A form feed in ``--optimizers`` split the error over two lines (found by the fuzzer)."""
    argv = [*TINY[:2], f"--optimizers=sgd{line_break}bogus", "--out", str(tmp_path / "r")]
    assert f"unknown optimizer 'sgd{shown}bogus';" in refused(capsys, argv)


def test_an_empty_out_is_refused(capsys):
    """``--out ''`` checked the current folder for a run but wrote to a new timestamped one."""
    assert "--out is empty" in refused(capsys, [*TINY, "--out="])


# --------------------------------------------------------------------------- fuzzing


def not_an_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return True
    return False


def not_a_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return True
    return False


NON_INTEGERS = st.one_of(
    st.text(max_size=8).filter(not_an_int),
    st.floats().map(repr),  # 1.0, nan, inf: int() refuses them all
    st.integers(min_value=1, max_value=10**6).map(lambda n: f"{n}e0"),
)
NOT_POSITIVE = st.one_of(st.integers(max_value=0), st.just(-(10**400))).map(str)
OUTSIDE_UNIT = st.floats().filter(lambda v: not 0 < v < 1).map(repr)
UNKNOWN_NAME = st.text(min_size=1, max_size=10).filter(
    lambda name: "," not in name and name.strip() and name.strip() not in opt.available()
)
NOT_A_FLOAT = st.text(max_size=4).filter(not_a_float)
POLICIES = ("stop", "skip")
NO_NAME = st.text(alphabet=", \t", max_size=4)

FLAG_VALUES = st.one_of(
    st.tuples(
        st.sampled_from(["epochs", "seeds", "lr-grid-size", "batch-size", "checkpoint-every"]),
        st.one_of(NOT_POSITIVE, NON_INTEGERS),
    ),
    st.tuples(st.just("validation"), st.one_of(OUTSIDE_UNIT, NOT_A_FLOAT)),
    st.tuples(st.just("optimizers"), st.one_of(UNKNOWN_NAME.map(lambda n: f"sgd,{n}"), NO_NAME)),
    st.tuples(st.just("dataset"), st.text(max_size=8).filter(lambda n: n not in compare.DATASETS)),
    st.tuples(st.just("model"), st.text(max_size=8).filter(lambda n: n not in models.available())),
    st.tuples(st.just("on-non-finite"), st.text(max_size=6).filter(lambda n: n not in POLICIES)),
    st.tuples(st.just("out"), st.just("")),
)


@FUZZ
@given(flag_value=FLAG_VALUES, resume=st.booleans())
def test_fuzzed_option_values_are_refused_leaving_the_run_folder_unchanged(
    run_folder, capsys, flag_value, resume
):
    flag, value = flag_value
    before = snapshot(run_folder)
    out = [] if flag == "out" else ["--out", str(run_folder)]  # --out= is the value drawn
    argv = [*TINY, *out, *(["--resume"] if resume else []), f"--{flag}={value}"]
    line = refused(capsys, argv)
    assert "already holds a run" not in line and "differs" not in line  # the value was refused
    assert snapshot(run_folder) == before


def wrong_json(action: argparse.Action) -> st.SearchStrategy:
    """JSON values ``action``'s option never takes (the wrong type, or not a choice)."""
    others = st.one_of(st.none(), st.lists(st.integers(), max_size=2),
                       st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))  # fmt: skip
    if isinstance(action, argparse._StoreTrueAction):  # noqa: SLF001
        return st.one_of(others, st.integers(), st.floats(), st.text(max_size=5))
    if action.type is int:
        fractions = st.one_of(
            st.integers(-(10**6), 10**6).map(lambda n: n + 0.5),
            st.sampled_from([float("nan"), float("inf"), float("-inf")]),
        )
        return st.one_of(others, st.booleans(), fractions, st.text(max_size=5).filter(not_an_int))
    if action.type is float:
        return st.one_of(others, st.booleans(), st.sampled_from(["", "x", "1,5", "0.1.2"]))
    if action.choices is not None:
        return st.text(max_size=6).filter(lambda v: v not in action.choices)
    return st.one_of(others, st.booleans(), st.integers(), st.floats())


CONFIG_ACTIONS = cli.option_actions(compare_parser())


@st.composite
def wrong_config(draw) -> dict:
    key = draw(st.sampled_from(sorted(CONFIG_ACTIONS)))
    spelling = draw(st.sampled_from([key, key.replace("_", "-")]))
    return {spelling: draw(wrong_json(CONFIG_ACTIONS[key]))}


@FUZZ
@given(values=wrong_config(), resume=st.booleans())
def test_fuzzed_config_files_of_wrong_types_are_refused_leaving_the_run_folder_unchanged(
    run_folder, tmp_path_factory, capsys, values, resume
):
    config = write_config(tmp_path_factory.mktemp("config"), values)
    before = snapshot(run_folder)
    argv = [*TINY, "--out", str(run_folder), *(["--resume"] if resume else [])]
    line = refused(capsys, ["--config", config, *argv])
    (key,) = values
    assert f"config key {key.replace('-', '_')!r}" in line
    assert snapshot(run_folder) == before
