"""The training engine: learning, population = separate runs, scan = loop, determinism."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from sklearn.datasets import load_digits

from experiments import engine, schedules


class TinyMLP(nnx.Module):
    """64 → hidden → 10 with optional dropout; the models-package call contract."""

    def __init__(self, key, hidden: int = 16, dropout: float = 0.0):
        rngs = nnx.Rngs(key)
        self.hidden = nnx.Linear(64, hidden, rngs=rngs)
        self.head = nnx.Linear(hidden, 10, rngs=rngs)
        self.dropout = nnx.Dropout(dropout)

    def __call__(self, x, train: bool = False, rngs: nnx.Rngs | None = None):
        h = nnx.relu(self.hidden(x.reshape(x.shape[0], -1)))
        return self.head(self.dropout(h, deterministic=not train, rngs=rngs))


@pytest.fixture(scope="module")
def digits():
    bunch = load_digits()
    x = (bunch.images / 16.0).astype(np.float32)[..., None]
    y = bunch.target.astype(np.int32)
    return SimpleNamespace(x_train=x[:1200], y_train=y[:1200], x_test=x[1200:], y_test=y[1200:])


@pytest.fixture(scope="module")
def tiny(digits):
    return SimpleNamespace(
        x_train=digits.x_train[:96],
        y_train=digits.y_train[:96],
        x_test=digits.x_test[:40],
        y_test=digits.y_test[:40],
    )


def model_for(seed: int, **kwargs) -> TinyMLP:
    return TinyMLP(engine.seed_keys(seed)[0], **kwargs)


def without_times(history):
    return [{k: v for k, v in record.items() if not k.endswith("time_s")} for record in history]


def test_fit_learns_digits(digits):
    config = engine.TrainConfig(epochs=4, batch_size=32, seed=0)
    result = engine.fit(model_for(0, hidden=32), optax.adam(1e-2), digits, config)

    losses = [record["train_loss"] for record in result.history]
    assert len(result.history) == 4 and result.steps_per_epoch == 1200 // 32
    assert losses[-1] < 0.5 * losses[0]
    assert result.history[-1]["test_accuracy"] > 0.85  # chance is 0.1
    assert set(result.history[0]) >= {
        "epoch", "train_loss", "train_accuracy", "test_loss", "test_accuracy",
        "epoch_time_s", "step_time_s",
    }  # fmt: skip
    assert result.compile_time_s > 0 and all(r["step_time_s"] > 0 for r in result.history)
    # The returned model is the trained one.
    logits = result.model(jnp.asarray(digits.x_test), train=False)
    accuracy = float(jnp.mean(jnp.argmax(logits, -1) == digits.y_test))
    assert accuracy == pytest.approx(result.history[-1]["test_accuracy"], abs=1e-6)


def test_fit_is_deterministic_and_donation_keeps_the_model_usable(tiny):
    config = engine.TrainConfig(epochs=2, batch_size=16, seed=3, schedule="inverse_sqrt")
    model = model_for(3, dropout=0.3)
    before = model(jnp.asarray(tiny.x_test), train=False)

    def run():
        schedule = config.learning_rate_schedule(0.1, len(tiny.x_train))
        return engine.fit(model, optax.sgd(schedule, momentum=0.9), tiny, config)

    first, second = run(), run()
    assert without_times(first.history) == without_times(second.history)
    assert int(first.state.step) == 12
    # The state fed to the donated epoch was a copy: the input model is untouched.
    np.testing.assert_array_equal(model(jnp.asarray(tiny.x_test), train=False), before)


@pytest.mark.parametrize("batch_size", [1, 32, None])
def test_batch_sizes_sgd_minibatch_and_full_batch(tiny, batch_size):
    config = engine.TrainConfig(epochs=2, batch_size=batch_size, seed=0)
    result = engine.fit(model_for(0), optax.sgd(0.05 if batch_size == 1 else 0.5), tiny, config)
    assert result.steps_per_epoch == 96 // (batch_size or 96)
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]


def test_population_equals_separate_fits_and_marks_divergence(tiny):
    config = engine.TrainConfig(epochs=2, batch_size=32)
    learning_rates, seeds = [0.05, 0.2, 1e30], [0, 1]
    pop = engine.fit_population(
        make_model=TinyMLP,
        make_tx=lambda learning_rate: optax.sgd(learning_rate, momentum=0.9),
        hparams={"learning_rate": learning_rates},
        seeds=seeds,
        data=tiny,
        config=config,
    )
    assert pop.histories["train_loss"].shape == (3, 2, 2)
    assert pop.diverged.tolist() == [[False, False], [False, False], [True, True]]
    assert np.isnan(pop.histories["test_loss"][2, :, -1]).all()
    for p, s in [(0, 0), (1, 1)]:
        single = engine.fit(
            model_for(seeds[s]),
            optax.sgd(learning_rates[p], momentum=0.9),
            tiny,
            dataclasses.replace(config, seed=seeds[s]),
        )
        for metric in ("train_loss", "train_accuracy", "test_loss", "test_accuracy"):
            expected = [record[metric] for record in single.history]
            np.testing.assert_allclose(pop.histories[metric][p, s], expected, rtol=1e-4, atol=1e-5)


def test_scan_epoch_equals_python_loop_of_steps(tiny):
    config = engine.TrainConfig(epochs=1, batch_size=24, l2=1e-3)
    tx = optax.adam(1e-2)
    graphdef, state = engine.init_state(model_for(0), tx, jax.random.key(7))
    epoch = jax.jit(engine.make_train_epoch(graphdef, tx, config, 96))
    scanned, metrics = epoch(state, jnp.asarray(tiny.x_train), jnp.asarray(tiny.y_train))

    step = jax.jit(lambda s, x, y: engine.train_step(s, x, y, graphdef=graphdef, tx=tx, l2=1e-3))
    key, perm_key = jax.random.split(state.key)
    order = np.asarray(jax.random.permutation(perm_key, 96)).reshape(4, 24)
    looped, losses = state._replace(key=key), []
    for batch in order:
        looped, loss, *_ = step(looped, tiny.x_train[batch], tiny.y_train[batch])
        losses.append(loss)
    np.testing.assert_allclose(metrics.losses, losses, rtol=1e-5)
    chex.assert_trees_all_close(scanned.params, looped.params, rtol=1e-5, atol=1e-6)
    assert int(scanned.step) == 4 and int(scanned.epoch) == 1


def poisoned(tiny, index: int = 5):
    """``tiny`` with one finite but huge example: its forward pass overflows to inf/NaN."""
    x_train = tiny.x_train.copy()
    x_train[index] = 3e38
    return SimpleNamespace(**{**vars(tiny), "x_train": x_train})


def test_non_finite_raises_and_keeps_last_good_state(tiny):
    config = engine.TrainConfig(epochs=2, batch_size=8)
    with pytest.raises(engine.NonFiniteError) as info:
        engine.fit(model_for(0), optax.sgd(0.1), poisoned(tiny), config)
    err = info.value
    assert isinstance(err, ValueError) and isinstance(err, FloatingPointError)
    assert err.epoch == 1 and 0 <= err.step < 12
    assert "hidden" in " ".join(err.leaves) and "epoch 1" in str(err)
    assert int(err.state.step) == err.step  # the bad step and those after were not applied
    assert all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax.tree.leaves(err.state.params))


def test_skip_non_finite_skips_the_bad_step_and_counts_it(tiny):
    config = engine.TrainConfig(epochs=3, batch_size=8)
    result = engine.fit(model_for(0), optax.sgd(0.1), poisoned(tiny), config, on_non_finite="skip")
    # One poisoned example, 12 full minibatches an epoch: exactly one skipped step each.
    assert [record["skipped_steps"] for record in result.history] == [1, 1, 1]
    assert int(result.state.opt_state.total_skips) == 3 and int(result.state.step) == 36
    assert all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax.tree.leaves(result.state.params))
    assert result.history[-1]["train_accuracy"] > result.history[0]["train_accuracy"] - 0.1
    assert np.isfinite(result.history[-1]["test_loss"])


def test_skip_gives_up_and_stops_when_every_step_is_bad(tiny):
    """More than ``max_consecutive_errors`` bad steps in a row: the wrapper lets them
    through, the parameters go non-finite, and fit stops there."""
    data = SimpleNamespace(**{**vars(tiny), "x_train": np.full_like(tiny.x_train, 3e38)})
    config = engine.TrainConfig(epochs=1, batch_size=8)
    with pytest.raises(engine.NonFiniteError, match=r"epoch 1, step 5: .*gradients of"):
        engine.fit(model_for(0), optax.sgd(0.1), data, config, on_non_finite="skip")


def _interrupt_after(epoch):
    def on_epoch(record):
        if record["epoch"] == epoch:
            raise KeyboardInterrupt

    return on_epoch


def test_fit_resume_after_interruption_is_bitwise_identical(tiny, tmp_path):
    config = engine.TrainConfig(epochs=3, batch_size=16, seed=1)
    reference = engine.fit(model_for(1, dropout=0.2), optax.adam(1e-2), tiny, config)
    with pytest.raises(KeyboardInterrupt):
        engine.fit(model_for(1, dropout=0.2), optax.adam(1e-2), tiny, config,
                   checkpoint_dir=tmp_path, on_epoch=_interrupt_after(2))  # fmt: skip
    resumed = engine.fit(
        model_for(1, dropout=0.2), optax.adam(1e-2), tiny, config, checkpoint_dir=tmp_path,
        resume=True,
    )  # fmt: skip
    assert without_times(resumed.history) == without_times(reference.history)
    for a, b in zip(jax.tree.leaves(resumed.state), jax.tree.leaves(reference.state), strict=True):
        if jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key):
            a, b = jax.random.key_data(a), jax.random.key_data(b)
        np.testing.assert_array_equal(a, b)  # params, optimizer state, step, key, epoch
    # A finished run resumes to itself without training.
    again = engine.fit(model_for(1, dropout=0.2), optax.adam(1e-2), tiny, config,
                       checkpoint_dir=tmp_path, resume=True)  # fmt: skip
    assert again.compile_time_s == 0 and without_times(again.history) == without_times(
        reference.history
    )


def test_fit_refuses_another_configuration_and_misused_folders(tiny, tmp_path):
    config = engine.TrainConfig(epochs=1, batch_size=16)
    fp = {"optimizer": "adam", "learning_rate": 0.01}
    engine.fit(
        model_for(0), optax.adam(1e-2), tiny, config, checkpoint_dir=tmp_path, fingerprint=fp
    )
    with pytest.raises(ValueError, match=r"already holds checkpoints .*resume=True"):
        engine.fit(model_for(0), optax.adam(1e-2), tiny, config, checkpoint_dir=tmp_path)
    with pytest.raises(
        ValueError, match=r"user.learning_rate: checkpoint has 0.01, this run has 0.1"
    ):
        engine.fit(model_for(0), optax.adam(0.1), tiny, config, checkpoint_dir=tmp_path,
                   resume=True, fingerprint={**fp, "learning_rate": 0.1})  # fmt: skip
    with pytest.raises(ValueError, match=r"train.batch_size: checkpoint has 16, this run has 8"):
        engine.fit(model_for(0), optax.adam(1e-2), tiny, dataclasses.replace(config, batch_size=8),
                   checkpoint_dir=tmp_path, resume=True, fingerprint=fp)  # fmt: skip
    with pytest.raises(ValueError, match=r"resume=True needs a checkpoint_dir"):
        engine.fit(model_for(0), optax.adam(1e-2), tiny, config, resume=True)
    with pytest.raises(ValueError, match=r"on_non_finite must be one of stop, skip"):
        engine.fit(model_for(0), optax.adam(1e-2), tiny, config, on_non_finite="ignore")


def test_non_finite_keeps_the_last_good_checkpoint(tiny, tmp_path):
    """Diverges in epoch 2 (the learning rate jumps after 6 steps): checkpoint 1 survives."""
    config = engine.TrainConfig(epochs=3, batch_size=16)

    def tx():
        return optax.sgd(lambda count: jnp.where(count < 6, 0.1, 1e30))

    with pytest.raises(engine.NonFiniteError, match=r"epoch 2.*last good checkpoint is epoch 1"):
        engine.fit(model_for(0), tx(), tiny, config, checkpoint_dir=tmp_path)
    from experiments.checkpoint import CheckpointConfig, Checkpointer

    assert Checkpointer(CheckpointConfig(tmp_path)).steps() == [1]
    with pytest.raises(engine.NonFiniteError, match=r"epoch 2"):  # resumes at epoch 2
        engine.fit(model_for(0), tx(), tiny, config, checkpoint_dir=tmp_path, resume=True)


def test_population_resume_after_interruption_is_bitwise_identical(tiny, tmp_path):
    config = engine.TrainConfig(epochs=2, batch_size=32)
    kwargs = dict(
        make_model=TinyMLP,
        make_tx=lambda learning_rate: optax.sgd(learning_rate, momentum=0.9),
        hparams={"learning_rate": [0.05, 1e30]},
        seeds=[0],
        data=tiny,
        config=config,
    )
    reference = engine.fit_population(**kwargs)

    def interrupt(epoch):
        if epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        engine.fit_population(**kwargs, checkpoint_dir=tmp_path, on_epoch=interrupt)
    resumed = engine.fit_population(**kwargs, checkpoint_dir=tmp_path, resume=True)
    assert resumed.diverged.tolist() == reference.diverged.tolist() == [[False], [True]]
    for name, values in reference.histories.items():
        np.testing.assert_array_equal(resumed.histories[name], values)
    chex.assert_trees_all_equal(resumed.state.params, reference.state.params)


def test_population_skip_records_skipped_steps(tiny):
    pop = engine.fit_population(
        make_model=TinyMLP,
        make_tx=lambda learning_rate: optax.sgd(learning_rate),
        hparams={"learning_rate": [0.05, 0.1]},
        seeds=[0],
        data=poisoned(tiny),
        config=engine.TrainConfig(epochs=2, batch_size=8),
        on_non_finite="skip",
    )
    assert not pop.diverged.any()
    np.testing.assert_array_equal(pop.histories["skipped_steps"], np.ones((2, 1, 2)))


def test_bfloat16_compute_trains_with_float32_params(tiny):
    config = engine.TrainConfig(epochs=3, batch_size=16, compute_dtype="bfloat16")
    result = engine.fit(model_for(0), optax.adam(1e-2), tiny, config)
    assert {leaf.dtype for leaf in jax.tree.leaves(result.state.params)} == {jnp.dtype("float32")}
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"epochs": 0}, "epochs"),
        ({"batch_size": 0}, "batch_size"),
        ({"l2": -1.0}, "l2"),
        ({"compute_dtype": "float16"}, "bfloat16"),
        ({"schedule": "warmup"}, "inverse_sqrt"),
    ],
)
def test_train_config_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        engine.TrainConfig(**kwargs)


def test_batch_larger_than_dataset_is_a_clear_error(tiny):
    with pytest.raises(ValueError, match="larger than the training set"):
        engine.TrainConfig(batch_size=1000).steps_per_epoch(len(tiny.x_train))


def test_schedules_follow_their_formulas():
    steps = jnp.arange(12)
    np.testing.assert_allclose(schedules.inverse_sqrt(0.1)(steps), 0.1 / np.sqrt(np.arange(1, 13)))
    per_epoch = schedules.build("inverse_sqrt", 0.1, steps_per_epoch=4, total_steps=12, per="epoch")
    np.testing.assert_allclose(per_epoch(steps), 0.1 / np.sqrt(np.arange(12) // 4 + 1), rtol=1e-6)
    decay = schedules.build("step_decay", 1.0, steps_per_epoch=4, total_steps=12, every_epochs=1)
    np.testing.assert_allclose(decay(steps), 0.1 ** (np.arange(12) // 4), rtol=1e-6)
    cosine = schedules.build("cosine", 1.0, steps_per_epoch=4, total_steps=12)
    np.testing.assert_allclose(
        cosine(steps), 0.5 * (1 + np.cos(np.pi * np.arange(12) / 12)), atol=1e-6
    )
    exponential = schedules.build("exponential", 1.0, steps_per_epoch=4, total_steps=12, rate=0.5)
    np.testing.assert_allclose(exponential(steps), 0.5 ** (np.arange(12) / 4), rtol=1e-6)
    assert float(schedules.constant(0.3)(100)) == pytest.approx(0.3)


@pytest.mark.parametrize(
    "call",
    [
        lambda: schedules.constant(-1.0),
        lambda: schedules.inverse_sqrt(0.1, steps_per_unit=0),
        lambda: schedules.step_decay(0.1, every=10, factor=1.5),
        lambda: schedules.cosine(0.1, total_steps=0),
        lambda: schedules.build("inverse_sqrt", 0.1, steps_per_epoch=1, total_steps=1, per="year"),
        lambda: schedules.build("cosine", 0.1, steps_per_epoch=1, total_steps=1, bogus=1),
    ],
)
def test_schedule_arguments_are_validated(call):
    with pytest.raises(ValueError):
        call()


class TinyBatchNormNet(nnx.Module):
    """64 → 16 → BatchNorm → 10: a model whose train step writes non-parameter state."""

    def __init__(self, key):
        rngs = nnx.Rngs(key)
        self.hidden = nnx.Linear(64, 16, rngs=rngs)
        self.norm = nnx.BatchNorm(16, momentum=0.9, rngs=rngs)
        self.head = nnx.Linear(16, 10, rngs=rngs)

    def __call__(self, x, train: bool = False, rngs: nnx.Rngs | None = None):
        h = self.norm(self.hidden(x.reshape(x.shape[0], -1)), use_running_average=not train)
        return self.head(nnx.relu(h))


def test_fit_updates_batchnorm_statistics(tiny):
    """BatchNorm's running averages are state the traced step must write and carry back."""
    model = TinyBatchNormNet(engine.seed_keys(0)[0])
    before = np.asarray(model.norm.mean[...]).copy()
    config = engine.TrainConfig(epochs=2, batch_size=32, seed=0)
    result = engine.fit(model, optax.sgd(0.1), tiny, config)
    after = np.asarray(result.model.norm.mean[...])
    assert np.all(np.isfinite(after))
    assert not np.allclose(before, after)
    assert np.isfinite(result.history[-1]["train_loss"])


def test_more_epochs_compile_nothing_more(tiny, caplog):
    """Compilation happens once per fit, not per epoch: 1 and 4 epochs compile the same
    programs (counted from JAX's compile log)."""
    import logging

    def compiles(epochs: int) -> int:
        caplog.clear()
        config = engine.TrainConfig(epochs=epochs, batch_size=32, seed=0)
        tx = optax.inject_hyperparams(optax.adam)(learning_rate=schedules.inverse_sqrt(1e-2))
        with caplog.at_level(logging.WARNING), jax.log_compiles(True):
            engine.fit(model_for(0), tx, tiny, config)
        return sum("Compiling" in record.getMessage() for record in caplog.records)

    compiles(1)  # warm the caches shared by both runs (initialisers, eager ops)
    one, four = compiles(1), compiles(4)
    assert one > 0
    assert four == one


@pytest.mark.parametrize("name", ["lstm"])  # GRU: tests/experiments/test_studies.py
def test_fit_and_population_train_recurrent_models(tiny, name):
    """Recurrent cells hold their own nnx structure: merging them inside the traced epoch
    and evaluation must work (they once failed with a trace-level error)."""
    import models

    config = engine.TrainConfig(epochs=1, batch_size=32, seed=0)
    result = engine.fit(models.build(name, (8, 8, 1), 10, hidden=8), optax.adam(1e-2), tiny, config)
    assert np.isfinite(result.history[-1]["train_loss"])
    pop = engine.fit_population(
        make_model=lambda key: models.build(name, (8, 8, 1), 10, seed=key, hidden=8),
        make_tx=lambda learning_rate: optax.adam(learning_rate),
        hparams={"learning_rate": [1e-3, 1e-2]},
        seeds=[0],
        data=tiny,
        config=config,
    )
    assert pop.histories["train_loss"].shape == (2, 1, 1)
    assert np.all(np.isfinite(pop.histories["train_loss"]))
