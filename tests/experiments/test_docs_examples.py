"""The docs' tested code examples run as printed and do what the text says they do.

A tested example is the ```python block right after the line
``<!-- tested: tests/experiments/test_docs_examples.py -->``; it is executed unchanged.
"""

import re
from pathlib import Path

import numpy as np

ARCHITECTURE = Path(__file__).resolve().parents[2] / "docs" / "architecture.md"
MARKER = "<!-- tested: tests/experiments/test_docs_examples.py -->"


def marked_examples(path: Path, marker: str = MARKER) -> list[str]:
    """The code of every ```python block that directly follows ``marker`` in ``path``."""
    pattern = re.escape(marker) + r"\n```python\n(.*?)\n```"
    return re.findall(pattern, path.read_text(encoding="utf-8"), flags=re.DOTALL)


def run_example(code: str, path: Path) -> dict:
    """Execute ``code`` as a script of its own; returns the names it defined."""
    namespace = {"__name__": "docs_example"}
    exec(compile(code, str(path), "exec"), namespace)  # noqa: S102 (our own docs)
    return namespace


def test_architecture_has_one_tested_example():
    assert len(marked_examples(ARCHITECTURE)) == 1


def test_own_model_loss_and_optimizer_example_learns_the_regression(capsys):
    (code,) = marked_examples(ARCHITECTURE)
    example = run_example(code, ARCHITECTURE)

    y_test = example["data"].evals["test"]["y"]
    test_loss = example["result"].history.metrics["test_loss"][0, 0]
    assert np.isfinite(test_loss).all()
    # y = sin(x) + 0.1·noise on [-3, 3]: predicting the mean scores Var(y) ≈ 0.54, the best
    # straight line ≈ 0.16, sin itself 0.011. Learning sin means far below both.
    assert test_loss[-1] < 0.1 * y_test.var()
    printed = capsys.readouterr().out
    assert f"test MSE {test_loss[-1]:.4f}" in printed
