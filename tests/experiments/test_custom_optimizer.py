"""A researcher's own optimizer and own packages: ``opt.register``, ``--optimizers
MODULE:FACTORY``, and optlab run from a folder holding its own ``models/`` and
``experiments/`` packages (installed as ``optlab.*``, neither shadows the other)."""

import json
import subprocess
import sys
from pathlib import Path

import optax
import pytest
from optlab import optimizers as opt
from optlab.optimizers import registry

from tests.experiments.test_docs_examples import marked_examples

DOC = Path(__file__).resolve().parents[2] / "docs" / "optimizers.md"
MARKER = "<!-- tested: tests/experiments/test_custom_optimizer.py -->"
OPTLAB = Path(sys.executable).parent / "optlab"  # the console script a user runs


@pytest.fixture
def own_table(monkeypatch):
    """A private copy of the registry table, so registrations do not leak into other tests."""
    monkeypatch.setattr(registry, "_TABLE", dict(registry._TABLE))  # noqa: SLF001


@pytest.fixture
def user_folder(tmp_path) -> Path:
    """A researcher's project: the docs' ``my_optimizers.py`` and their own ``models`` and
    ``experiments`` packages, which have nothing optlab's have."""
    (code,) = marked_examples(DOC, MARKER)
    (tmp_path / "my_optimizers.py").write_text(code + "\n")
    for package in ("models", "experiments"):
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text(f'OWNER = "user {package}"\n')
    return tmp_path


def my_adam_like(learning_rate, b1=0.9):
    return optax.chain(opt.scale_by_adam(b1=b1), optax.scale_by_learning_rate(learning_rate))


def test_register_counts_state_buffers_and_get_builds_it(own_table):
    info = opt.register("my_adam_like", my_adam_like, suggested_learning_rate=3e-4)
    assert info.state_per_param == 2 and info.family == "custom"  # μ and ν, not the count
    assert info.defaults == {"b1": 0.9} and "my_adam_like" in opt.available()
    tx = opt.get("my_adam_like", learning_rate=0.1, b1=0.5)
    params = {"w": optax.tree.zeros_like({"w": [1.0, 2.0]})["w"]}
    updates, _ = tx.update({"w": optax.tree.ones_like(params["w"])}, tx.init(params), params)
    assert abs(float(updates["w"][0]) + 0.1) < 1e-6  # Adam's first step is −η·sign(g)


@pytest.mark.parametrize(
    "name, factory, message",
    [
        ("adam", my_adam_like, "'adam' is already registered"),
        ("my opt", my_adam_like, "letters, digits"),
        ("mine", lambda lr: optax.sgd(lr), "must take a learning_rate argument"),
        ("mine", "adam", "must be callable"),
    ],
)
def test_register_refuses_clearly(own_table, name, factory, message):
    with pytest.raises(ValueError, match=message):
        opt.register(name, factory)
    assert "mine" not in opt.available()


def test_resolve_loads_module_and_file_specs(own_table, user_folder, monkeypatch):
    monkeypatch.chdir(user_folder)
    monkeypatch.syspath_prepend(str(user_folder))
    assert opt.resolve(["sgd", "my_optimizers:my_signum", "sgd"]) == ["sgd", "my_signum"]
    assert opt.info("my_signum").state_per_param == 1
    assert opt.resolve([f"{user_folder / 'my_optimizers.py'}:my_signum"]) == ["my_signum"]
    for spec, message in [
        ("no_such_module:f", "cannot import no_such_module"),
        ("my_optimizers:nothing", "has no 'nothing'"),
        ("my_optimizers:", "expected a name or MODULE:FACTORY"),
        ("nosuch", "unknown optimizer 'nosuch'"),
    ]:
        with pytest.raises(ValueError, match=message):
            opt.resolve([spec])


def run_cli(args, cwd, timeout=600):
    return subprocess.run(
        [str(OPTLAB), *args], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.slow
def test_docs_custom_optimizer_goes_through_compare_from_a_user_project(user_folder):
    """The docs' example, run as printed (the console script, from the user's folder, which
    also holds its own ``models`` and ``experiments``)."""
    out = user_folder / "runs" / "mine"
    done = run_cli(
        ["compare", "--quick", "--optimizers", "sgd,my_optimizers:my_signum", "--epochs", "1",
         "--seeds", "1", "--lr-grid-size", "2", "--out", str(out)],
        cwd=user_folder,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads((out / "config.json").read_text())["optimizers"] == ["sgd", "my_signum"]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert {"sgd", "my_signum"} <= {row.get("optimizer") for row in rows}
    assert "my_signum" in (out / "summary.md").read_text()


def test_bad_spec_on_the_command_line_is_one_line_and_leaves_no_folder(user_folder):
    out = user_folder / "runs" / "bad"
    done = run_cli(["compare", "--quick", "--optimizers", "sgd,nope:f", "--out", str(out)],
                   cwd=user_folder)  # fmt: skip
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().count("\n") == 0 and "cannot import nope" in done.stderr
    assert not out.exists()


def test_user_script_imports_its_own_packages_and_optlab_side_by_side(user_folder):
    script = (
        "import models, experiments\n"
        "from optlab import models as optlab_models, optimizers as opt\n"
        "from optlab.experiments import engine\n"
        "assert models.OWNER == 'user models' and experiments.OWNER == 'user experiments'\n"
        "assert 'mlp' in optlab_models.available() and 'adam' in opt.available()\n"
        "print('ok', engine.TrainConfig.__name__)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=user_folder, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert done.returncode == 0 and done.stdout.strip() == "ok TrainConfig", done.stderr
