"""Unit tests of the continual loop's parts: stream, validation, metrics, canary, triggers,
registry, strategies and the trainer."""

import numpy as np
import pytest
from scipy import stats

from experiments.continual import canary, metrics, strategies, trainer, triggers, validation
from experiments.continual.registry import Registry, save_npz
from experiments.continual.stream import Stream, Task, apply_task, corrupt, load_arrays, make_tasks


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


# ----------------------------------------------------------------------------- trainer


def test_trainer_learns_and_ewc_anchors_the_weights(digits):
    import jax
    import jax.numpy as jnp
    from flax import nnx

    x, y = digits.x_train[:400], digits.y_train[:400]
    graphdef, params = nnx.split(trainer.make_model((8, 8, 1), 10, (32,)))
    before = trainer.accuracy(graphdef, params, x, y)
    learned, _ = trainer.train(
        graphdef, params, "adam", 3e-3, x, y, batch_size=32, epochs=5, seed=0
    )
    assert trainer.accuracy(graphdef, learned, x, y) > max(0.7, before + 0.4)
    fisher = jax.tree.map(jnp.ones_like, params)
    ewc = (fisher, params, jnp.asarray(1e4))
    anchored, _ = trainer.train(
        graphdef, params, "adam", 3e-3, x, y, batch_size=32, epochs=5, seed=0, ewc=ewc
    )

    def dist(p):
        return sum(
            float(jnp.sum((a - b) ** 2))
            for a, b in zip(jax.tree.leaves(p), jax.tree.leaves(params), strict=True)
        )

    assert dist(anchored) < 0.1 * dist(learned)
    flat = trainer.flatten(learned)
    restored = trainer.unflatten(params, flat)
    assert trainer.accuracy(graphdef, restored, x, y) == trainer.accuracy(graphdef, learned, x, y)
    f = trainer.diagonal_fisher(graphdef, learned, x, y)
    assert all(float(leaf.min()) >= 0 for leaf in jax.tree.leaves(f))
