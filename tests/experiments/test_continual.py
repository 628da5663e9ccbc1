"""Unit tests of the continual loop's parts: stream, validation, metrics, canary, triggers,
registry, strategies and training on the engine."""

import jax
import numpy as np
import pytest
from optlab.experiments import engine
from optlab.experiments.continual import canary, metrics, strategies, trainer, triggers, validation
from optlab.experiments.continual.loop import Loop, LoopConfig
from optlab.experiments.continual.registry import Registry, save_npz
from optlab.experiments.continual.stream import (
    Stream,
    Task,
    apply_task,
    corrupt,
    load_arrays,
    make_tasks,
)
from scipy import stats


@pytest.fixture(scope="module")
def digits():
    return load_arrays("digits")


@pytest.fixture(scope="module")
def stream(digits):
    return Stream(
        digits,
        make_tasks("styles", 5, 0),
        users_per_task=2,
        batch_size=100,
        reference_size=300,
        seed=0,
    )


# ----------------------------------------------------------------------------- stream


def test_permute_task_is_a_fixed_pixel_permutation(digits):
    x = digits.x_train[:5]
    task = make_tasks("permuted", 2, seed=0)[1]
    out = apply_task(task, x)
    np.testing.assert_array_equal(np.sort(out.reshape(5, -1), 1), np.sort(x.reshape(5, -1), 1))
    assert not np.array_equal(out, x)
    np.testing.assert_array_equal(out, apply_task(task, x))


def test_styles_change_ink_as_named(digits):
    x = digits.x_train[:50]
    ink = lambda t: apply_task(t, x).mean()  # noqa: E731
    assert ink(Task("thick", "dilate", 2)) > x.mean() > ink(Task("thin", "erode", 2))
    rotated = apply_task(Task("r", "rotate", 90.0), x)
    assert rotated.shape == x.shape and 0.0 <= rotated.min() and rotated.max() <= 1.0


def test_split_preset_is_class_incremental(digits):
    tasks = make_tasks("split", 5, 0)
    assert [t.param for t in tasks] == [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9)]
    s = Stream(digits, tasks, users_per_task=1, batch_size=50, reference_size=200)
    assert set(s.user_batch(2).y) <= {4, 5}
    assert set(s.eval_set(4)[1]) == {8, 9}


def test_user_batches_are_deterministic_and_new_writers_are_held_out(stream):
    a, b = stream.user_batch(3), stream.user_batch(3)
    np.testing.assert_array_equal(a.x, b.x)
    assert a.task == 1 and a.x.shape == (100, 8, 8, 1) and a.y.dtype == np.int32
    assert not set(stream.writers_idx) & (set(stream.pool_idx) | set(stream.reference_idx))
    with pytest.raises(ValueError, match="outside the stream"):
        stream.user_batch(stream.num_users)


def test_new_writers_are_evaluated_on_other_test_images_than_the_original_style(digits):
    """R's new-writers column must not copy the original column: disjoint test slices."""
    tasks = make_tasks("styles", 5, 0)
    s = Stream(digits, tasks, users_per_task=1, batch_size=50, reference_size=200, eval_size=150)
    (x_orig, _), (x_new, _) = s.eval_set(0), s.eval_set(4)
    assert tasks[4].kind == "writers" and len(x_new) == len(x_orig) == 150
    np.testing.assert_array_equal(x_orig, digits.x_test[:150])
    np.testing.assert_array_equal(x_new, digits.x_test[-150:])  # 360 ≥ 2 × 150: no overlap


# ----------------------------------------------------------------------------- validation


def test_clean_batch_from_the_reference_distribution_passes_without_drift(stream):
    ref_x, ref_y = stream.reference()
    batch = stream.user_batch(0)  # same style as the reference
    report = validation.validate(batch.x, batch.y, ref_x, ref_y)
    assert report.passed and not report.drift, report.to_dict()


@pytest.mark.parametrize(
    "kind, failed",
    [("nan", "finite"), ("range", "range"), ("labels", "label_range"), ("shape", "shape")],
)
def test_corrupted_batches_fail_the_named_check(stream, kind, failed):
    bad = corrupt(stream.user_batch(0), kind)
    report = validation.validate(bad.x, bad.y, *stream.reference())
    assert not report.passed
    assert any(f.startswith(failed) for f in report.failures), report.failures


def test_dtype_check():
    x = np.zeros((4, 8, 8, 1), np.float64)
    checks = {
        c.name: c.passed for c in validation.schema_checks(x, np.zeros(4, int), (8, 8, 1), 10)
    }
    assert checks == {**checks, "dtype": False, "finite": True, "range": True}


@pytest.mark.parametrize("preset", ["permuted", "rotated"])
def test_drift_detected_for_shifted_styles(digits, stream, preset):
    task = make_tasks(preset, 2, seed=0)[1]
    batch = stream.user_batch(0)
    x = apply_task(task, batch.x)
    report = validation.validate(x, batch.y, *stream.reference())
    assert report.passed and report.drift and report.min_p_value < 0.01


def test_holm_matches_the_step_down_definition():
    p = {"a": 0.01, "b": 0.04, "c": 0.03}
    adj = validation.holm(p)
    assert adj == pytest.approx({"a": 0.03, "c": 0.06, "b": 0.06})


# ----------------------------------------------------------------------------- metrics


def test_continual_metrics_on_a_hand_made_matrix():
    R = np.array([[0.9, 0.1, 0.1], [0.6, 0.8, 0.2], [0.5, 0.7, 0.9]])
    assert metrics.average_accuracy(R) == pytest.approx((0.5 + 0.7 + 0.9) / 3)
    assert metrics.backward_transfer(R) == pytest.approx(((0.5 - 0.9) + (0.7 - 0.8)) / 2)
    assert metrics.forgetting(R) == pytest.approx(((0.9 - 0.5) + (0.8 - 0.7)) / 2)
    assert metrics.forgetting(R[:1, :1]) == 0.0


# ----------------------------------------------------------------------------- canary


def test_canary_rejects_a_worse_challenger_and_promotes_a_better_one():
    rng = np.random.default_rng(0)
    champion = rng.random(200) < 0.9
    worse = champion & (rng.random(200) < 0.7)
    d = canary.decide(champion, worse, alpha=0.05)
    b, c = int((champion & ~worse).sum()), 0
    assert not d.promote and (d.b, d.c) == (b, c)
    assert d.p_value == pytest.approx(stats.binomtest(b, b, 0.5, alternative="greater").pvalue)
    better = champion | (rng.random(200) < 0.8)
    assert canary.decide(champion, better).promote
    assert canary.decide(champion, champion).promote  # identical: not worse
    gated = canary.decide(champion, champion, min_gain=0.01)
    assert not gated.promote and "min_gain" in gated.reason


def test_route_takes_the_share():
    mask = canary.route(100, 0.3, seed=1)
    assert mask.sum() == 30
    with pytest.raises(ValueError):
        canary.route(10, 0.0, seed=0)


# ----------------------------------------------------------------------------- triggers


def test_triggers_fire_on_each_rule_and_only_when_selected():
    cfg = triggers.TriggerConfig(("every", "drift", "accuracy"), every_n=3, max_drop=0.05)
    kw = dict(drift=False, accuracy=0.9, deployed_accuracy=0.9)
    assert triggers.check(cfg, users_since_retrain=2, **kw) is None
    assert triggers.check(cfg, users_since_retrain=3, **kw) == "every_3_users"
    assert triggers.check(cfg, users_since_retrain=1, **{**kw, "drift": True}) == "drift"
    assert triggers.check(cfg, users_since_retrain=1, **{**kw, "accuracy": 0.8}).startswith(
        "accuracy_drop"
    )
    only_every = triggers.TriggerConfig(("every",), every_n=3)
    assert triggers.check(only_every, users_since_retrain=1, **{**kw, "drift": True}) is None
    with pytest.raises(ValueError):
        triggers.TriggerConfig(("sometimes",))


# ----------------------------------------------------------------------------- registry


def test_registry_transactions_are_atomic_and_survive_reopening(tmp_path):
    reg = Registry(tmp_path)
    save_npz(reg.weights_path(1), {"w": np.ones(3)})
    with reg.transaction():
        reg.add_model(
            1,
            parent=None,
            user=-1,
            status="deployed",
            optimizer="sgd",
            hparams={"learning_rate": 0.1},
            metrics={},
            wall_time_s=0.1,
            peak_memory_mb=1.0,
        )
        reg.ledger_add(0, "pending", 60)
        reg.ledger_add(0, "held_out", 40)
    with pytest.raises(RuntimeError), reg.transaction():
        reg.add_user(0, 0, 100, "validated", 1)
        reg.ledger_move("pending", "trained")
        raise RuntimeError("killed mid-user")
    assert reg.processed_users() == [] and reg.ledger_totals() == {"pending": 60, "held_out": 40}
    with pytest.raises(OSError, match="weights"):
        reg.add_model(
            2,
            parent=1,
            user=0,
            status="candidate",
            optimizer="sgd",
            hparams={},
            metrics={},
            wall_time_s=0,
            peak_memory_mb=0,
        )
    reg.close()
    reg = Registry(tmp_path)
    assert reg.deployed() == 1 and reg.models()[0]["hparams"] == {"learning_rate": 0.1}
    with reg.transaction():
        assert reg.ledger_move("pending", "trained") == 60
    assert reg.ledger_totals() == {"trained": 60, "held_out": 40}


# ----------------------------------------------------------------------------- strategies


def test_reservoir_buffer_is_bounded_and_uniform():
    counts = np.zeros(50)
    for seed in range(200):
        buf = strategies.ReplayBuffer.empty(10, (1,))
        rng = np.random.default_rng(seed)
        for start in range(0, 50, 7):  # arrives in uneven chunks
            items = np.arange(start, min(start + 7, 50))
            buf = buf.add(items[:, None].astype(np.float32), items.astype(np.int32), rng)
        assert len(buf.y) == 10 and buf.seen == 50 and len(set(buf.y)) == 10
        counts[buf.y] += 1
    # each of the 50 items kept with probability 10/50: 200 runs → 40 expected each
    assert stats.chisquare(counts).pvalue > 1e-3


def test_training_set_adds_the_buffer_only_for_replay():
    buf = strategies.ReplayBuffer(np.ones((3, 2), np.float32), np.ones(3, np.int32), 3, 5)
    x, y = np.zeros((4, 2), np.float32), np.zeros(4, np.int32)
    assert len(strategies.training_set("replay", x, y, buf)[1]) == 7
    assert len(strategies.training_set("naive", x, y, buf)[1]) == 4
    with pytest.raises(ValueError):
        strategies.training_set("magic", x, y, buf)


# ----------------------------------------------------------------------------- training


def _fit(model, weights, x, y, *, optimizer="adam", rates=(3e-3,), epochs=5, minimum=64, loss=None):
    """One warm-started population on the engine, as the loop and the study train."""
    return engine.fit_population(
        lambda key: model,
        trainer.make_tx(optimizer),
        {"learning_rate": list(rates)},
        [0],
        engine.padded({"x": x, "y": y}, minimum=minimum),
        trainer.train_config(len(y), 32, epochs),
        loss=loss,
        warm_start=engine.WarmStart(*weights),
    )


def _distance(a, b) -> float:
    return sum(
        float(np.sum((p - q) ** 2))
        for p, q in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


def test_warm_started_fit_learns_and_ewc_anchors_the_weights(digits):
    x, y = digits.x_train[:400], digits.y_train[:400]
    model = trainer.make_model((8, 8, 1), 10, (32,))
    graphdef, weights = engine.split_model(model)[0], trainer.weights_of(model)
    before = trainer.accuracy(graphdef, weights, x, y)
    (learned,) = trainer.members(_fit(model, weights, x, y))
    assert trainer.accuracy(graphdef, learned, x, y) > max(0.7, before + 0.4)
    fisher = jax.tree.map(np.ones_like, weights.params)
    ewc = engine.ElasticWeightConsolidation(fisher, weights.params, np.float32(1e4))
    (anchored,) = trainer.members(_fit(model, weights, x, y, loss=ewc))
    moved = _distance(learned.params, weights.params)
    assert _distance(anchored.params, weights.params) < 0.1 * moved
    restored = trainer.unflatten(weights, trainer.flatten(learned))
    np.testing.assert_array_equal(
        trainer.predict(graphdef, restored, x), trainer.predict(graphdef, learned, x)
    )
    f = trainer.diagonal_fisher(graphdef, learned, x, y)
    assert jax.tree.structure(f) == jax.tree.structure(weights.params)
    assert all(float(leaf.min()) >= 0 for leaf in jax.tree.leaves(f))
    assert any(float(leaf.max()) > 0 for leaf in jax.tree.leaves(f))


def test_a_population_warm_starts_every_learning_rate_from_the_same_weights(digits):
    """Learning rate 0 leaves the deployed weights unchanged; a positive one moves them."""
    x, y = digits.x_train[:100], digits.y_train[:100]
    model = trainer.make_model((8, 8, 1), 10, (16,), seed=3)
    weights = trainer.weights_of(model)
    still, moved = trainer.members(
        _fit(model, weights, x, y, optimizer="sgd", rates=(0.0, 0.1), epochs=1)
    )
    assert _distance(still.params, weights.params) == 0.0
    assert _distance(moved.params, weights.params) > 0.0


def test_sizes_within_one_bucket_share_one_compilation(digits):
    """The training set grows every retrain: sizes padded to one bucket reuse the compiled
    epoch (one make_tx object per optimizer); the next bucket compiles again."""
    assert trainer.make_tx("sgd") is trainer.make_tx("sgd")
    x, y = digits.x_train[:300], digits.y_train[:300]
    model = trainer.make_model((8, 8, 1), 10, (24,), seed=1)  # a width no other test compiles
    weights = trainer.weights_of(model)

    def compile_s(n):
        return _fit(
            model, weights, x[:n], y[:n], optimizer="sgd", rates=(0.1, 0.03), epochs=1, minimum=256
        ).compile_time_s

    compile_s(100)
    assert compile_s(150) == 0.0 and compile_s(256) == 0.0
    assert compile_s(300) > 0.0  # 300 rows: the 512 bucket


def test_search_never_chooses_a_diverged_member(tmp_path):
    """Learning rate ∞ diverges at its first step and is frozen at the deployed weights, as
    learning rate 0 leaves them: equal validation accuracy, the diverged member first, so only
    counting divergence as the worst keeps it from being chosen."""
    loop = Loop(LoopConfig(search={"sgd": [float("inf"), 0.0]}), tmp_path)
    try:
        x, y = loop.reference
        best, writes = loop._search(
            -1,
            loop.init_weights,
            x[:200],
            y[:200],
            x[200:],
            y[200:],
            epochs=1,
            loss=engine.Classification(),
        )
    finally:
        loop.registry.close()
    runs = [args[4] for _, args in writes]
    assert [r["diverged"] for r in runs] == [True, False] and runs[0]["train_loss"] is None
    assert runs[0]["val_accuracy"] == runs[1]["val_accuracy"]
    assert best[2]["learning_rate"] == 0.0


def test_train_config_takes_n_over_b_steps_and_one_batch_below_b():
    assert trainer.train_config(100, 32, 3).steps_per_epoch(100) == 3
    small = trainer.train_config(20, 32, 3)
    assert small.batch_size == 20 and small.steps_per_epoch(20) == 1
    with pytest.raises(ValueError, match="empty"):
        trainer.train_config(0, 32, 3)
