"""``optlab COMMAND --help`` and a mistyped option answer at once: the options of every
subcommand come from a module that loads no heavy library (JAX took 3.5-11 s to import).
The names those light modules list are the programs' own (checked equal here)."""

import json
import subprocess
import sys

import pytest
from optlab.experiments import cli, commands
from optlab.experiments.commands import adam_paper, bench, benchmark, continual
from optlab.experiments.commands import compare as compare_command

HEAVY = ("jax", "flax", "optax", "orbax", "matplotlib", "sklearn", "scipy", "torch", "mlflow")
PROBE = """
import json, sys
from optlab.experiments import cli
codes = [cli.main([{command!r}, "--help"]), cli.main([{command!r}, "--no-such-option"])]
heavy = sorted(m for m in {heavy!r} if m in sys.modules)
print(json.dumps({{"codes": codes, "heavy": heavy}}))
"""


@pytest.mark.parametrize("command", list(cli.SUBCOMMANDS))
def test_help_and_a_mistyped_option_load_no_heavy_library(command):
    code = PROBE.format(command=command, heavy=HEAVY)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["codes"] == [0, 2], done.stderr
    assert result["heavy"] == [], f"optlab {command} --help imports {result['heavy']}"
    assert done.stderr.startswith("optlab") and done.stderr.count("\n") == 1  # one line
    assert "error: " in done.stderr and "Traceback" not in done.stderr


def test_the_light_modules_list_the_programs_own_names():
    from optlab.experiments import data, engine
    from optlab.experiments.bench import precision, step, train
    from optlab.experiments.benchmark import problems
    from optlab.experiments.continual import study
    from optlab.experiments.papers import adam

    assert set(commands.DATASETS) == set(data.available())
    assert compare_command.NON_FINITE_POLICIES == engine.NON_FINITE_POLICIES
    assert continual.REGIMES == tuple(study.REGIMES)
    assert adam_paper.FIGURES == adam.FIGURES
    assert bench.TREES == step.TREES and bench.WORKLOADS == tuple(train.WORKLOADS)
    assert bench.PRECISION_OPTIMIZERS == precision.DEFAULT_OPTIMIZERS
    assert bench.PRECISION_DATASETS == precision.DATASETS
    assert set(bench.ARGUMENTS) == set(bench.BENCHMARKS)
    assert benchmark.PROBLEMS == tuple(problems.PROBLEMS)
