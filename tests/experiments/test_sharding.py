"""Data parallelism (experiments/parallel.py) on 4 simulated CPU devices.

XLA's device count is fixed when JAX starts, so the checks run in a subprocess started
with ``XLA_FLAGS=--xla_force_host_platform_device_count=4``; it prints one JSON object
that the test reads. The test is skipped if that subprocess cannot start JAX.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent(
    """
    import json
    import jax, jax.numpy as jnp, numpy as np, optax
    from flax import nnx
    from optlab.experiments import engine, parallel
    from optlab.experiments.data.synthetic import make_classification

    SEEN = []  # shardings of the minibatch entering the model, seen while compiling

    class Probe(nnx.Module):
        def __init__(self, key):
            rngs = nnx.Rngs(key)
            self.hidden = nnx.Linear(8, 16, rngs=rngs)
            self.head = nnx.Linear(16, 3, rngs=rngs)

        def __call__(self, x, train=False, rngs=None):
            if train:
                jax.debug.inspect_array_sharding(x, callback=SEEN.append)
            return self.head(nnx.relu(self.hidden(x)))

    def flat(tree):
        return [np.asarray(leaf).tolist() for leaf in jax.tree.leaves(tree)]

    ds = make_classification(128, 8, 3, seed=0)
    out = {"devices": jax.device_count()}
    for dp in (False, True):
        SEEN.clear()
        config = engine.TrainConfig(epochs=2, batch_size=32, data_parallel=dp)
        fit = engine.fit(Probe(engine.seed_keys(0)[0]), optax.adam(1e-2), ds, config)
        seen_in_fit = list(SEEN)
        pop = engine.fit_population(
            Probe, lambda learning_rate: optax.sgd(learning_rate, momentum=0.9),
            {"learning_rate": [0.05, 0.2]}, [0, 1], ds, config,
        )
        out[str(dp)] = {
            "batch_shard_shapes": [list(s.shard_shape((32, 8))) for s in seen_in_fit],
            "batch_devices": [len(s.device_set) for s in seen_in_fit],
            "param_spec": [str(getattr(leaf.sharding, "spec", None))
                           for leaf in jax.tree.leaves(fit.state.params)],
            "fit_params": flat(fit.state.params),
            "fit_loss": fit.history.metrics["train_loss"][0, 0].tolist(),
            "pop_loss": pop.histories["train_loss"].tolist(),
        }
    mesh = parallel.data_mesh()
    rule = parallel.state_shardings(
        {"big": jnp.zeros((8, 4)), "small": jnp.zeros(3)}, mesh, shard_min_size=16
    )
    out["rule"] = {name: str(s.spec) for name, s in rule.items()}
    errors = []
    for call in (lambda: parallel.data_mesh(5),
                 lambda: engine.fit(Probe(engine.seed_keys(0)[0]), optax.sgd(0.1), ds,
                                    engine.TrainConfig(epochs=1, batch_size=30,
                                                       data_parallel=True))):
        try:
            call()
        except ValueError as err:
            errors.append(str(err))
    out["errors"] = errors
    print("RESULT " + json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def four_devices():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
           "JAX_PLATFORMS": "cpu"}  # fmt: skip
    try:
        proc = subprocess.run(
            [sys.executable, "-c", SCRIPT], cwd=REPO, env=env, capture_output=True, text=True,
            timeout=300,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as err:
        pytest.skip(f"could not run the 4-device subprocess: {err}")
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if (
        proc.returncode != 0
        and "jax" in proc.stderr.lower()
        and "Error" in proc.stderr
        and not lines
    ):
        if "No module named" in proc.stderr:
            pytest.skip(f"the subprocess cannot import JAX: {proc.stderr[-300:]}")
    assert lines, f"subprocess failed (status {proc.returncode}):\n{proc.stderr[-3000:]}"
    result = json.loads(lines[-1][len("RESULT ") :])
    if result["devices"] != 4:
        pytest.skip(f"XLA_FLAGS did not give 4 CPU devices (got {result['devices']})")
    return result


def test_batch_is_split_over_four_devices_and_params_replicated(four_devices):
    parallel_run, single = four_devices["True"], four_devices["False"]
    assert parallel_run["batch_shard_shapes"] and all(
        shape == [8, 8] for shape in parallel_run["batch_shard_shapes"]
    )  # 32 examples / 4 devices
    assert all(n == 4 for n in parallel_run["batch_devices"])
    assert set(parallel_run["param_spec"]) == {"P()"}  # replicated on the mesh
    assert all(shape == [32, 8] for shape in single["batch_shard_shapes"])


def test_data_parallel_equals_one_device_within_float_tolerance(four_devices):
    parallel_run, single = four_devices["True"], four_devices["False"]
    for a, b in zip(parallel_run["fit_params"], single["fit_params"], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(parallel_run["fit_loss"], single["fit_loss"], rtol=1e-5)
    np.testing.assert_allclose(parallel_run["pop_loss"], single["pop_loss"], rtol=1e-5)


def test_sharding_rule_and_errors(four_devices):
    assert four_devices["rule"] == {"big": "P('data',)", "small": "P()"}
    mesh_error, batch_error = four_devices["errors"]
    assert "num_devices must be an integer in 1..4" in mesh_error
    assert "batch_size 30 is not divisible by the 4 devices" in batch_error
