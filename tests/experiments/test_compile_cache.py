"""The persistent compilation cache: on by default in the user cache folder, off by an
option or an environment variable, and a second run of a job reuses what the first wrote."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from optlab.experiments.cli import compile_cache_folder

HOME = Path.home()


@pytest.mark.parametrize(
    "environ, folder",
    [
        ({}, HOME / ".cache" / "optlab" / "jax"),
        ({"XDG_CACHE_HOME": "/x"}, Path("/x/optlab/jax")),
        ({"OPTLAB_JAX_CACHE": "/y/jax"}, Path("/y/jax")),
        ({"OPTLAB_JAX_CACHE": "off", "XDG_CACHE_HOME": "/x"}, None),
        ({"OPTLAB_JAX_CACHE": "0"}, None),
        ({"OPTLAB_JAX_CACHE": ""}, None),
    ],
)
def test_cache_folder_follows_the_environment(environ, folder):
    assert compile_cache_folder(environ) == folder


def compare(tmp_path: Path, run: str, *extra: str, **environ: str) -> set[Path]:
    """Run a one-optimizer compare with ``XDG_CACHE_HOME`` in ``tmp_path``; the cache's files."""
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache"), **environ}
    env.pop("OPTLAB_JAX_CACHE") if "OPTLAB_JAX_CACHE" not in environ else None
    args = ["compare", "--quick", "--optimizers", "sgd", "--epochs", "1", "--seeds", "1",
            "--lr-grid-size", "2", "--out", str(tmp_path / run), *extra]  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "optlab.experiments", *args],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return {p for p in (tmp_path / "cache" / "optlab").rglob("*") if p.is_file()}


@pytest.mark.slow
def test_a_second_run_reuses_the_first_runs_programs_and_off_writes_none(tmp_path):
    assert compare(tmp_path, "off-flag", "--no-compile-cache") == set()
    first = compare(tmp_path, "cold")
    assert first and all("optlab/jax" in str(p) for p in first)
    assert compare(tmp_path, "warm") == first  # every program was found, none written again
