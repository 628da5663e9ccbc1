"""The one hyperparameter protocol: grids, the choice rule, the optimizer factory, tune and
its records."""

from __future__ import annotations

from types import SimpleNamespace

import jax.numpy as jnp
import numpy as np
import pytest
from optlab import models
from optlab import optimizers as opt
from optlab.experiments import data, engine, tuning

# --------------------------------------------------------------------------- grids


def test_log_grid_spans_the_decades_around_its_centre():
    np.testing.assert_allclose(tuning.log_grid(1e-3, 3), [1e-4, 1e-3, 1e-2])
    np.testing.assert_allclose(tuning.log_grid(1.0, 5, decades=2.0), [1e-2, 1e-1, 1, 10, 100])
    np.testing.assert_array_equal(tuning.log_grid(0.1, 1), [0.1])
    middle = tuning.suggested_rates("adam", 3)[1]
    assert middle == pytest.approx(opt.info("adam").suggested_learning_rate)
    for size in (0, 2.0):
        with pytest.raises(ValueError, match="grid size must be a positive integer"):
            tuning.log_grid(0.1, size)
    with pytest.raises(ValueError, match="centre must be > 0"):
        tuning.log_grid(0.0, 3)


def test_log_range_includes_both_ends():
    np.testing.assert_allclose(tuning.log_range(1e-4, 1.0, 5), [1e-4, 1e-3, 1e-2, 1e-1, 1.0])
    with pytest.raises(ValueError, match="0 < low <= high"):
        tuning.log_range(1.0, 0.1, 3)


def test_product_grid_varies_the_last_axis_fastest():
    grid = tuning.product_grid(learning_rate=[0.1, 1.0], momentum=[0.0, 0.5, 0.9])
    assert grid["learning_rate"].tolist() == [0.1, 0.1, 0.1, 1.0, 1.0, 1.0]
    assert grid["momentum"].tolist() == [0.0, 0.5, 0.9, 0.0, 0.5, 0.9]
    with pytest.raises(ValueError, match="at least one value"):
        tuning.product_grid(learning_rate=[0.1], momentum=[])


# --------------------------------------------------------------------------- choice


def test_choose_counts_a_diverged_seed_as_the_worst_value():
    final = np.array([[np.nan, 0.1], [0.5, 0.5], [0.3, 0.4]])  # (P=3, S=2)
    assert tuning.choose(final) == 2  # config 0 has the best seed but one diverged
    assert tuning.choose(final, maximise=True) == 1
    assert tuning.choose(np.full((2, 2), np.nan)) == 0  # all diverged: the first


def test_losses_and_errors_are_minimised_accuracies_maximised():
    assert not tuning.higher_is_better("val_loss") and not tuning.higher_is_better("test_error")
    assert tuning.higher_is_better("val_accuracy")


# --------------------------------------------------------------------------- factory


def first_updates(tx, steps: int = 2) -> list[float]:
    """The updates of ``tx`` for a constant gradient 1 on one scalar parameter."""
    params = jnp.zeros(())
    state = tx.init(params)
    updates = []
    for _ in range(steps):
        update, state = tx.update(jnp.ones(()), state, params)
        updates.append(float(update))
    return updates


def test_optimizer_factory_fixes_arguments_and_wraps_the_rate_in_a_schedule():
    make_tx = tuning.optimizer_factory("sgd", momentum=0.5)
    np.testing.assert_allclose(first_updates(make_tx(learning_rate=0.1)), [-0.1, -0.15])
    halving = tuning.optimizer_factory("sgd", schedule=lambda lr: lambda t: lr / (t + 1))
    np.testing.assert_allclose(first_updates(halving(learning_rate=0.1)), [-0.1, -0.05])
    with pytest.raises(ValueError, match="unknown optimizer 'bogus'"):
        tuning.optimizer_factory("bogus")


# --------------------------------------------------------------------------- tune


@pytest.fixture(scope="module")
def tiny_digits():
    ds = data.load("digits")
    x_train, y_train, x_val, y_val = data.split_validation(ds.x_train[:300], ds.y_train[:300], 0.2)
    return SimpleNamespace(x_train=x_train, y_train=y_train, x_val=x_val, y_val=y_val,
                           x_test=ds.x_test[:100], y_test=ds.y_test[:100])  # fmt: skip


def make_logreg(key):
    return models.build("logreg", (8, 8, 1), 10, seed=key)


@pytest.fixture(scope="module")
def tuned(tiny_digits):
    """sgd at 1e-3 (slow), 0.3 (good) and ∞ (diverges), two seeds, test error chosen."""
    config = engine.TrainConfig(epochs=2, batch_size=32)
    grid = {"learning_rate": [1e-3, 0.3, np.inf]}
    return tuning.tune(make_logreg, tuning.optimizer_factory("sgd"), grid, [0, 1], tiny_digits,
                       config, select="test_error", name="sgd")  # fmt: skip


def test_tune_chooses_the_best_finite_configuration_on_the_selected_metric(tuned):
    assert tuned.population.diverged[2].all() and tuned.index == 1
    assert tuned.chosen == {"learning_rate": 0.3}  # the grid as asked for, not float32
    assert not tuned.diverged and not tuned.at_grid_edge()
    accuracy = tuned.population.histories["test_accuracy"]
    np.testing.assert_allclose(tuned.final("test_error"), 100 * (1 - accuracy[1, :, -1]))
    search = tuned.search()
    assert np.isnan(search[2]) and search[1] < search[0]


def test_tune_names_the_metrics_when_select_is_not_one(tiny_digits):
    config = engine.TrainConfig(epochs=1, batch_size=32)
    with pytest.raises(ValueError, match="select 'val_los' is not a metric.*'val_loss'"):
        tuning.tune(make_logreg, tuning.optimizer_factory("sgd"), {"learning_rate": [0.1]}, [0],
                    tiny_digits, config, select="val_los")  # fmt: skip


def test_records_give_one_row_per_configuration_seed_and_epoch(tuned):
    rows = tuning.records(tuned, study="t")
    assert len(rows) == 3 * 2 * 2
    first = rows[0]
    assert (first["study"], first["optimizer"], first["learning_rate"]) == ("t", "sgd", 1e-3)
    assert (first["seed"], first["epoch"], first["selected"]) == (0, 1, False)
    assert {r["learning_rate"] for r in rows if r["selected"]} == {0.3}
    diverged = [r for r in rows if r["learning_rate"] == np.inf]
    assert all(r["diverged"] for r in diverged) and diverged[-1]["train_loss"] is None
    assert {"train_loss", "val_loss", "val_accuracy", "test_error"} <= set(first)
