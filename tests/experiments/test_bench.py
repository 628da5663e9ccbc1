"""Tests of ``optlab bench``: the HLO byte counter, state sizes, timing, and every subcommand
in ``--quick`` mode on tiny sizes. No assertion is about speed."""

from __future__ import annotations

import json
import math
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from optlab import models
from optlab import optimizers as opt
from optlab.experiments import cli
from optlab.experiments.bench import population, precision, roofline, step, timing, train
from optlab.experiments.bench.memory import state_bytes_per_param

N = 1000

# A hand-written optimized HLO module: a two-output fusion, a get-tuple-element, a copy.
HLO = """HloModule m

%fused (p0: f32[1000], p1: bf16[1000]) -> (f32[1000], bf16[1000]) {
  ROOT %t = (f32[1000]{0}, bf16[1000]{0}) tuple(%p0, %p1)
}

ENTRY %main.1 (x.1: f32[1000], y.1: bf16[1000], n.1: s32[]) -> (f32[1000], s32[]) {
  %x.1 = f32[1000]{0} parameter(0), metadata={op_name="x"}
  %y.1 = bf16[1000]{0} parameter(1)
  %n.1 = s32[] parameter(2)
  %fusion = (f32[1000]{0}, bf16[1000]{0}) fusion(%x.1, %y.1, %x.1), kind=kLoop, calls=%fused
  %gte = bf16[1000]{0} get-tuple-element(%fusion), index=1
  %copy.1 = bf16[1000]{0} copy(%gte)
  %add_fusion = s32[] fusion(%n.1), kind=kLoop, calls=%fused
  ROOT %tuple = (f32[1000]{0}, s32[]) tuple(%fusion, %add_fusion)
}
"""


def compiled(fn, *args, donate=()):
    return jax.jit(fn, donate_argnums=donate).lower(*args).compile()


def test_entry_kernels_of_handwritten_hlo():
    kernels = {k.name: k for k in roofline.entry_kernels(HLO)}
    assert set(kernels) == {"fusion", "copy.1", "add_fusion"}
    # x read once although passed twice: 4000 + 2000 in, 4000 + 2000 out.
    assert (kernels["fusion"].read_bytes, kernels["fusion"].write_bytes) == (6000, 6000)
    assert (kernels["copy.1"].read_bytes, kernels["copy.1"].write_bytes) == (2000, 2000)
    assert kernels["add_fusion"].scalar and not kernels["fusion"].scalar


@pytest.mark.parametrize("dtype, itemsize", [(jnp.float32, 4), (jnp.bfloat16, 2)])
def test_traffic_of_x_plus_y(dtype, itemsize):
    x = jnp.ones((10, 100), dtype)
    traffic = roofline.hlo_traffic(compiled(lambda a, b: a + b, x, x))
    assert traffic["kernels"] == 1
    assert traffic["bytes"] == 3 * N * itemsize  # read x, y; write the sum


def test_traffic_of_two_unfused_outputs():
    if jax.default_backend() != "cpu":
        pytest.skip("XLA's CPU backend does not fuse sibling outputs; others may")
    x = jnp.ones((N,), jnp.float32)
    traffic = roofline.hlo_traffic(compiled(lambda a, b: (a + b, a * b), x, x))
    assert traffic["fusions"] == 2
    assert traffic["bytes"] == 2 * (8 + 4) * N
    assert traffic["bytes"] == pytest.approx(traffic["xla_bytes_accessed"], rel=1e-3)


def test_adam_step_traffic_matches_xla_and_ideal():
    params = step.random_tree({"w": (10, 100), "b": (100,), "c": (N,)}, jnp.float32)
    tx = optax.adam(1e-3)
    traffic = roofline.hlo_traffic(roofline.compile_step(tx, params, params))
    n = step.count_params(params)
    assert traffic["bytes"] == pytest.approx(traffic["xla_bytes_accessed"], rel=1e-2)
    # Ideal: read p, g, m, v and write p, m, v once, 4 B each: 28 B per parameter.
    assert roofline.ideal_bytes_per_param(tx, params) == pytest.approx(28, abs=1e-2)
    assert traffic["bytes"] / n >= 28
    assert roofline.ideal_bytes_per_param(optax.sgd(1e-3), params) == pytest.approx(12)


@pytest.mark.parametrize(
    "name, dtype, expected",
    [
        ("sgd", jnp.float32, 0),
        ("momentum", jnp.float32, 4),
        ("adagrad", jnp.float32, 4),
        ("adam", jnp.float32, 8),
        ("amsgrad", jnp.float32, 12),
        ("adam", jnp.bfloat16, 4),
    ],
)
def test_state_bytes_per_param(name, dtype, expected):
    params = {"w": jnp.zeros((100, 10), dtype), "b": jnp.zeros((N,), dtype)}
    measured = state_bytes_per_param(opt.get(name, learning_rate=1e-3), params)
    # Scalars (step counters) add a few bytes over 2000 parameters.
    assert expected <= measured <= expected + 16 / 2000


# Muon's registry count is its matrices' (a vector leaf gets its AdamW's two buffers).
COUNTED_ON_MATRICES = ("muon",)


def test_state_bytes_agree_with_the_registry():
    vector = {"w": jnp.zeros((N,), jnp.float32)}
    matrix = {"w": jnp.zeros((N // 8, 8), jnp.float32)}
    for name in opt.available():
        params = matrix if name in COUNTED_ON_MATRICES else vector
        measured = state_bytes_per_param(opt.get(name, learning_rate=1e-3), params)
        assert measured == pytest.approx(4 * opt.info(name).state_per_param, abs=0.05), name


def test_interleaved_alternates_and_summarises():
    calls = []
    candidates = {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}
    times = timing.interleaved(candidates, repeats=3, warmup=1)
    assert calls == ["a", "b"] + ["a", "b"] * 3
    for t in times.values():
        assert len(t.samples_s) == 3
        assert t.q1_s <= t.median_s <= t.q3_s and t.iqr_s >= 0
    with pytest.raises(ValueError, match="repeats"):
        timing.interleaved(candidates, repeats=0)


def run_bench(tmp_path, *argv) -> dict:
    assert cli.main(["bench", *argv, "--quick", "--repeats", "1", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / f"{argv[0]}.json").read_text())
    assert {"config", "environment", "rows"} <= set(result)
    assert {"device_kind", "jax", "date_utc"} <= set(result["environment"])
    assert (tmp_path / f"{argv[0]}.md").read_text().startswith(f"# optlab bench {argv[0]}")
    return result


def test_step_command(tmp_path):
    result = run_bench(
        tmp_path, "step", "--optimizers", "adam,sgd", "--trees", "one", "--dtypes", "float32",
        "--size", "1e4",
    )  # fmt: skip
    assert [r["optimizer"] for r in result["rows"]] == ["adam", "sgd"]
    for row in result["rows"]:
        assert row["params"] == 10_000 and row["ours_ms"] > 0 and row["optax_ms"] > 0
        assert row["ours_over_optax"] == pytest.approx(row["ours_ms"] / row["optax_ms"])


def test_roofline_command(tmp_path):
    result = run_bench(tmp_path, "roofline", "--optimizers", "adam,sgd", "--size", "1e4")
    rows = {r["optimizer"]: r for r in result["rows"]}
    assert rows["adam"]["ideal_B_per_param"] == pytest.approx(28, abs=0.01)
    assert rows["sgd"]["hlo_B_per_param"] == pytest.approx(12, abs=0.01)
    assert rows["adam"]["hlo_B_per_param"] >= 28
    assert rows["adam"]["optax_hlo_B_per_param"] >= 28
    assert all(r["triad_GBps"] > 0 and r["pct_of_triad"] > 0 for r in rows.values())
    assert {"copy_GBps", "triad_GBps"} <= set(result["bandwidth"])
    assert {f["formulation"] for f in result["adam_formulations"]} >= {"optax order"}


def test_memory_command(tmp_path):
    result = run_bench(tmp_path, "memory", "--optimizers", "adam", "--widths", "8")
    (row,) = result["rows"]
    assert row["optimizer"] == "adam" and row["state_buffers"] == 2
    assert row["state_B_per_param"] == pytest.approx(8, abs=0.05)
    # Donated: parameters (4 B) and Adam's two moments (8 B) are reused for the outputs.
    assert row["step_alias_B_per_param"] == pytest.approx(12, abs=0.05)
    assert row["step_argument_B_per_param"] > 12  # plus the minibatch
    if jax.default_backend() == "cpu":
        assert row["peak_device_bytes"] == "n/a on CPU"


TRAIN_ARGS = ("train", "--workloads", "mlp", "--steps", "2", "--synthetic")
JAX_ROWS = ["jax (optlab engine)", "jax + optax (minimal scan)"]


def initial_train_loss(widths) -> float:
    """Mean cross-entropy of the untrained ``mlp`` (seed 0) on TRAIN_ARGS' data, in NumPy."""
    x, y, _ = train.load_data("mnist", (28, 28, 1), 2 * train.BATCH_SIZE, synthetic=True)
    model = models.build("mlp", (28, 28, 1), 10, seed=0, widths=widths)
    logits = np.asarray(model(jnp.asarray(x)), np.float64)
    top = logits.max(axis=1)
    log_normaliser = top + np.log(np.exp(logits - top[:, None]).sum(axis=1))
    return float(np.mean(log_normaliser - logits[np.arange(len(y)), y]))


def test_train_command_without_torch(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch -> ImportError
    assert train.import_torch() is None
    result = run_bench(tmp_path, *TRAIN_ARGS)
    assert [r["framework"] for r in result["rows"]] == JAX_ROWS
    assert all(r["examples"] == 2 * train.BATCH_SIZE for r in result["rows"])
    assert "pip install" in capsys.readouterr().out


def test_train_command_compares_like_with_like(tmp_path):
    """Every framework has a row (torch only where it is installed), and the engine and the
    minimal loop train the same model: from the same weights on the same minibatches they
    reach the same loss, well away from the untrained one."""
    result = run_bench(tmp_path, *TRAIN_ARGS)
    rows = {r["framework"]: r for r in result["rows"]}
    assert list(rows) == JAX_ROWS + (["torch"] if train.import_torch() else [])
    for row in rows.values():
        assert 0 < row["epoch_s"] < math.inf and math.isfinite(row["final_train_loss"])
    engine_loss = rows["jax (optlab engine)"]["final_train_loss"]
    minimal_loss = rows["jax + optax (minimal scan)"]["final_train_loss"]
    learned = initial_train_loss(widths=(100,)) - engine_loss
    assert learned > 0.05  # 3 epochs (warm-up + 2 repeats) of 2 Adam steps each
    assert abs(engine_loss - minimal_loss) < 1e-3 * learned


def test_torch_loop_mirrors_our_models():
    torch = pytest.importorskip("torch")
    for name, shape, options in [
        ("mlp", (28, 28, 1), {"widths": (16, 8)}),
        ("adam_cnn", (32, 32, 3), {"channels": (4, 4, 8), "dense": 12}),
    ]:
        theirs = train.torch_model(torch, name, options, shape)
        ours = nnx.eval_shape(lambda: models.build(name, shape, 10, **options))  # noqa: B023
        assert sum(p.numel() for p in theirs.parameters()) == models.count_params(ours)
        x, y, _ = train.load_data("mnist", shape, 2 * train.BATCH_SIZE, synthetic=True)
        before = [p.detach().clone() for p in theirs.parameters()]
        train.torch_epoch(torch, theirs, x, y).run()  # two Adam steps
        after = list(theirs.parameters())
        assert all(not torch.equal(a, b) for a, b in zip(before, after, strict=True))


def test_population_command(tmp_path):
    result = run_bench(
        tmp_path, "population", "--sizes", "3,2", "--steps", "2", "--widths", "8", "--synthetic"
    )
    rows = {r["P"]: r for r in result["rows"]}
    assert sorted(rows) == [1, 2, 3]  # every requested size, and P = 1 (the reference)
    for row in rows.values():
        for key in ("vmapped_s", "sequential_s"):
            assert 0 < row[key] < math.inf and 0 <= row[f"{key[:-2]}_iqr_s"] < math.inf
        # After the warm-up epoch vmapped member p and solo run p differ by rounding only (a
        # member given another's learning rate or weights would be off by order one).
        assert row["relative_param_diff"] < 1e-4


def test_vmapped_member_equals_its_solo_run():
    """Member p of one vmapped epoch of P = 3 Adam members (different initial weights and
    learning rates) gives the loss and parameters of member p trained alone."""
    graphdef, states, learning_rates = population.initial_states(3, (8,))
    x, y, _ = train.load_data("mnist", population.INPUT_SHAPE, 2 * train.BATCH_SIZE, True)
    data = {"x": jnp.asarray(x), "y": jnp.asarray(y)}
    vmapped_epoch = population.population_epoch(graphdef, single=False)
    solo_epoch = population.population_epoch(graphdef, single=True)
    run_all, all_now = population.epoch_runner(vmapped_epoch, states, learning_rates, data)
    losses = np.asarray(run_all())
    assert len(set(losses.tolist())) == 3  # three different members
    initial = jax.tree.leaves(states.params)
    for p in range(3):
        one = population.members(states, p, p + 1)
        run_one, one_now = population.epoch_runner(solo_epoch, one, learning_rates[p : p + 1], data)
        np.testing.assert_allclose(np.asarray(run_one()), losses[p : p + 1], rtol=1e-6)
        together = jax.tree.leaves(all_now().params)
        alone = jax.tree.leaves(one_now().params)
        for before, a, b in zip(initial, together, alone, strict=True):
            np.testing.assert_allclose(a[p], b[0], rtol=1e-5, atol=1e-7)
            assert np.any(np.asarray(a[p]) != np.asarray(before[p]))  # it trained


def test_precision_command(tmp_path):
    result = run_bench(
        tmp_path, "precision", "--optimizers", "adam", "--seeds", "2", "--epochs", "2",
        "--widths", "8", "--learning-rates", "1e-2,1e-3",
    )  # fmt: skip
    rows = {(r["mu_dtype"], r["learning_rate"]): r for r in result["rows"]}
    assert set(rows) == {(d, lr) for d in ("float32", "bfloat16") for lr in (1e-2, 1e-3)}
    full, low = rows[("float32", 1e-2)], rows[("bfloat16", 1e-2)]
    # The first moment really is stored in bfloat16, the second stays float32.
    assert full["state_dtypes"] == "float32" and low["state_dtypes"] == "bfloat16,float32"
    # Adam's state: m (4 B, or 2 B in bfloat16) + v (4 B), plus the step counter.
    assert full["state_B_per_param"] == pytest.approx(8, abs=0.05)
    assert low["state_B_per_param"] == pytest.approx(6, abs=0.05)
    m_saving = np.dtype(np.float32).itemsize - np.dtype(jnp.bfloat16).itemsize  # one buffer
    assert full["state_B_per_param"] - low["state_B_per_param"] == pytest.approx(m_saving)
    # At least the ideal traffic: read p, g and the state, write p and the state.
    assert full["step_hlo_B_per_param"] >= 3 * 4 + 2 * 8 - 0.05
    assert low["step_hlo_B_per_param"] >= 3 * 4 + 2 * 6 - 0.05
    for row in rows.values():
        assert 0 < row["step_ms"] < math.inf and 0 < row["step_over_float32"] < math.inf
        assert row["train_loss"] < math.log(10)  # every population learned in 2 epochs
        assert 0 <= row["test_accuracy"] <= 1 and row["test_accuracy_std"] >= 0
    # Each row holds its own learning rate's population: 1e-2 learns faster than 1e-3.
    for dtype in ("float32", "bfloat16"):
        assert rows[(dtype, 1e-2)]["train_loss"] < rows[(dtype, 1e-3)]["train_loss"]
    # Paired by seed, bfloat16 minus float32 (the sign matters).
    assert low["train_loss_diff"] == pytest.approx(low["train_loss"] - full["train_loss"])
    assert low["test_accuracy_diff"] == pytest.approx(
        low["test_accuracy"] - full["test_accuracy"], abs=1e-6
    )
    assert isinstance(low["test_accuracy_within_seed_noise"], bool)


def test_paired_summary_tells_noise_from_a_shift():
    full = np.array([0.90, 0.92, 0.94, 0.96])
    same = precision.paired_summary(full.copy(), full)
    assert same["diff"] == 0 and same["within_seed_noise"] and math.isnan(same["p_value"])
    jitter = precision.paired_summary(full + np.array([1e-3, -1e-3, 2e-3, -2e-3]), full)
    assert jitter["within_seed_noise"] and jitter["p_value"] > 0.5
    shifted = precision.paired_summary(full - 0.1 + np.array([0, 1e-3, 0, -1e-3]), full)
    assert shifted["diff"] == pytest.approx(-0.1)
    assert not shifted["within_seed_noise"] and shifted["p_value"] < 1e-3


def test_precision_rejects_optimizers_without_mu_dtype():
    assert {"adam", "nadam", "adamw"} <= set(precision.optimizers_with_mu_dtype())
    with pytest.raises(ValueError, match="have no mu_dtype; choose from .*adam"):
        precision.check_optimizers(["adam", "sgd"])


def test_unknown_names_are_user_errors(capsys):
    assert cli.main(["bench", "step", "--quick", "--optimizers", "nope"]) == 2
    assert "unknown optimizer" in capsys.readouterr().err


def test_train_rejects_a_bad_thread_count(capsys):
    assert cli.main(["bench", "train", "--quick", "--synthetic", "--torch-threads", "0"]) == 2
    assert "--torch-threads must be a positive integer" in capsys.readouterr().err
