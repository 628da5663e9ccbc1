"""What gets installed: every package folder under ``optlab.*`` (pyproject's explicit list)."""

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TOP_LEVEL = ("optimizers", "models", "experiments")


def package_folders() -> set[str]:
    """``optlab.<dotted path>`` of every folder with an ``__init__.py`` under the three."""
    return {
        "optlab." + ".".join(init.parent.relative_to(ROOT).parts)
        for top in TOP_LEVEL
        for init in (ROOT / top).rglob("__init__.py")
        if "__pycache__" not in init.parts
    }


def test_pyproject_installs_every_package_folder_under_optlab():
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert setuptools["package-dir"] == {f"optlab.{top}": top for top in TOP_LEVEL}
    assert set(setuptools["packages"]) == package_folders()
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["optlab"] == "optlab.experiments.cli:main"
