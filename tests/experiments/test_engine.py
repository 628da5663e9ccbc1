"""The training engine: learning, any loss, population = separate runs, non-finite values,
warm starts, padded data, compilation reuse, determinism.

Expected values come from code written here (a hand-written jax + optax loop that follows
the engine's documented data order and keys, NumPy), never from the engine itself.
"""

from __future__ import annotations

import dataclasses
import logging
from types import SimpleNamespace

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from optlab import models
from optlab import optimizers as opt
from optlab.experiments import engine, schedules
from optlab.experiments.checkpoint import CheckpointConfig, Checkpointer
from optlab.experiments.engine import loop
from sklearn.datasets import load_digits


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


class Regressor(nnx.Module):
    """5 → 16 → 1 with dropout: a model no built-in objective knows."""

    def __init__(self, key, dropout: float = 0.2):
        rngs = nnx.Rngs(key)
        self.hidden = nnx.Linear(5, 16, rngs=rngs)
        self.out = nnx.Linear(16, 1, rngs=rngs)
        self.dropout = nnx.Dropout(dropout)

    def __call__(self, x, train: bool = False, rngs: nnx.Rngs | None = None):
        h = self.dropout(nnx.tanh(self.hidden(x)), deterministic=not train, rngs=rngs)
        return self.out(h)[:, 0]


class Scalars(nnx.Module):
    """Two scalar parameters ``a`` and ``b``, for losses written by hand."""

    def __init__(self, key=None, a: float = 1.0, b: float = 0.0):
        del key
        self.a = nnx.Param(jnp.asarray(a, jnp.float32))
        self.b = nnx.Param(jnp.asarray(b, jnp.float32))


# --------------------------------------------------------------------------- data


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


def regression_rows(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """``y = sin(x · w) + 0.1 ε`` with ``x ~ N(0, I₅)``."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 5)).astype(np.float32)
    w = np.linspace(-1.0, 1.0, 5, dtype=np.float32)
    y = (np.sin(x @ w) + 0.1 * rng.normal(size=n)).astype(np.float32)
    return {"x": x, "y": y}


@pytest.fixture(scope="module")
def regression():
    return engine.Splits(regression_rows(100), {"test": regression_rows(30, seed=1)})


def squared_error(model, batch, key):
    """The mean squared error of a minibatch, in train mode, and its mean absolute error."""
    error = model(batch["x"], train=True, rngs=nnx.Rngs(dropout=key)) - batch["y"]
    return jnp.mean(error**2), {"abs_error": jnp.mean(jnp.abs(error))}


def squared_error_per_example(model, batch):
    return {"loss": (model(batch["x"], train=False) - batch["y"]) ** 2}


MSE = engine.FunctionObjective(squared_error, squared_error_per_example)


def cross_entropy(model, batch, key):
    logits = model(batch["x"], train=True, rngs=nnx.Rngs(dropout=key))
    return optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]).mean(), {}


def model_for(seed: int, **kwargs) -> TinyMLP:
    return TinyMLP(engine.seed_keys(seed)[0], **kwargs)


def as_train(data) -> dict[str, np.ndarray]:
    return {"x": data.x_train, "y": data.y_train}


# --------------------------------------------------------------------------- reference loop


def train_key(seed: int) -> jax.Array:
    """The documented key scheme: ``model_key, train_key = split(key(seed))``."""
    return jax.random.split(jax.random.key(seed))[1]


def hand_written_fit(model, tx, train, loss_fn, *, seed, epochs, batch_size, max_steps=None):
    """The engine's documented algorithm, written out with jax + optax.

    Each epoch: ``key, perm_key = split(key)``; ``order = permutation(perm_key, N)``; step
    ``t`` (counted over the whole run) takes rows ``order[iB:(i+1)B]`` for ``i < N // B``
    with dropout key ``fold_in(key, t)``. Returns ``(params, per-epoch mean losses)``.
    """
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    opt_state = tx.init(params)

    @jax.jit
    def step(params, opt_state, batch, key):
        def loss(p):
            return loss_fn(nnx.merge(graphdef, p, rest, copy=True), batch, key)[0]

        value, grads = jax.value_and_grad(loss)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, value

    num_rows = len(train["y"])
    key, t, epoch_losses = train_key(seed), 0, []
    for _ in range(epochs):
        key, perm_key = jax.random.split(key)
        order = np.asarray(jax.random.permutation(perm_key, num_rows))
        losses = []
        for i in range(num_rows // batch_size):
            if t == max_steps:
                return params, epoch_losses
            rows = order[i * batch_size : (i + 1) * batch_size]
            batch = {name: values[rows] for name, values in train.items()}
            params, opt_state, value = step(params, opt_state, batch, jax.random.fold_in(key, t))
            losses.append(float(value))
            t += 1
        epoch_losses.append(np.mean(losses))
    return params, epoch_losses


def leaf_names(tree) -> list[str]:
    return [jax.tree_util.keystr(path) for path, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]


def all_finite(tree) -> bool:
    return all(
        bool(np.all(np.isfinite(leaf)))
        for leaf in jax.tree.leaves(tree)
        if jnp.issubdtype(jnp.result_type(leaf), jnp.inexact)
    )


def assert_bitwise_equal(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            x, y = jax.random.key_data(x), jax.random.key_data(y)
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def without_times(records):
    return [{k: v for k, v in record.items() if not k.endswith("time_s")} for record in records]


def nan_at(step: int, learning_rate: float = 0.1):
    """A learning-rate schedule that is NaN at one step and ``learning_rate`` elsewhere."""
    return lambda t: jnp.where(t == step, jnp.nan, learning_rate)


# --------------------------------------------------------------------------- learning


def test_fit_learns_digits(digits):
    config = engine.TrainConfig(epochs=4, batch_size=32, seed=0)
    result = engine.fit(model_for(0, hidden=32), optax.adam(1e-2), digits, config)

    records = result.history.records()
    losses = [record["train_loss"] for record in records]
    assert len(records) == 4 and result.steps_per_epoch == 1200 // 32
    assert losses[-1] < 0.5 * losses[0]
    assert records[-1]["test_accuracy"] > 0.85  # chance is 0.1
    assert set(records[0]) == {
        "epoch", "train_loss", "train_accuracy", "test_loss", "test_accuracy",
        "epoch_time_s", "step_time_s",
    }  # fmt: skip
    assert result.history.metrics["test_loss"].shape == (1, 1, 4)
    assert result.compile_time_s > 0 and all(r["step_time_s"] > 0 for r in records)
    assert int(result.state.step) == 4 * (1200 // 32) and int(result.state.epoch) == 4
    # The returned model is the trained one; the test metrics are its own.
    logits = np.asarray(result.model(jnp.asarray(digits.x_test), train=False), np.float64)
    accuracy = np.mean(np.argmax(logits, -1) == digits.y_test)
    shifted = logits - logits.max(-1, keepdims=True)
    log_softmax = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    test_loss = -np.mean(log_softmax[np.arange(len(logits)), digits.y_test])
    assert accuracy == pytest.approx(records[-1]["test_accuracy"], abs=1e-6)
    assert test_loss == pytest.approx(records[-1]["test_loss"], rel=1e-4)


def test_any_loss_matches_a_hand_written_optax_loop(regression):
    """A regression MLP with dropout trained on a mean-squared-error function loss: the
    engine's parameters, per-epoch losses and test error equal a hand-written jax + optax
    loop over the documented minibatch order and dropout keys (6 steps an epoch, 4 rows
    of 100 dropped, a different 4 every epoch)."""
    config = engine.TrainConfig(epochs=3, batch_size=16, seed=4)
    model = Regressor(jax.random.key(11))
    tx = optax.adam(1e-2)
    result = engine.fit(model, tx, regression, config, loss=MSE)

    params, losses = hand_written_fit(
        Regressor(jax.random.key(11)), tx, regression.train, squared_error, seed=4, epochs=3,
        batch_size=16,
    )  # fmt: skip
    chex.assert_trees_all_close(result.state.params, params, rtol=1e-5, atol=1e-6)
    history = result.history.metrics
    np.testing.assert_allclose(history["train_loss"][0, 0], losses, rtol=1e-5)
    assert set(history) == {"train_loss", "train_abs_error", "test_loss"}
    test = regression.evals["test"]
    graphdef, _, rest = nnx.split(Regressor(jax.random.key(11)), nnx.Param, ...)
    trained = nnx.merge(graphdef, params, rest)
    error = np.asarray(trained(jnp.asarray(test["x"]))) - test["y"]
    assert history["test_loss"][0, 0, -1] == pytest.approx(np.mean(error**2), rel=1e-4)
    assert int(result.state.step) == 3 * (100 // 16)
    # The dropout keys matter: a loop with other keys ends elsewhere.
    other, _ = hand_written_fit(
        Regressor(jax.random.key(11)), tx, regression.train, squared_error, seed=5, epochs=3,
        batch_size=16,
    )  # fmt: skip
    assert not np.allclose(other["hidden"]["kernel"][...], params["hidden"]["kernel"][...])


def test_classification_loss_is_cross_entropy_plus_half_l2_norm(tiny):
    model = model_for(0)
    batch = {"x": jnp.asarray(tiny.x_train[:8]), "y": jnp.asarray(tiny.y_train[:8])}
    loss, metrics = engine.Classification(l2=0.1).loss(model, batch, jax.random.key(0))

    logits = np.asarray(model(batch["x"]), np.float64)
    shifted = logits - logits.max(-1, keepdims=True)
    log_softmax = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    expected = -np.mean(log_softmax[np.arange(8), tiny.y_train[:8]])
    squared_norm = sum(np.sum(np.asarray(p, np.float64) ** 2)
                       for p in jax.tree.leaves(nnx.state(model, nnx.Param)))  # fmt: skip
    assert float(loss) == pytest.approx(expected + 0.05 * squared_norm, rel=1e-5)
    assert float(metrics["accuracy"]) == np.mean(logits.argmax(-1) == tiny.y_train[:8])
    with pytest.raises(ValueError, match="l2 must be a number >= 0"):
        engine.Classification(l2=-1.0)


def test_fit_is_deterministic_and_leaves_the_input_model_untouched(tiny):
    config = engine.TrainConfig(epochs=2, batch_size=16, seed=3)
    model = model_for(3, dropout=0.3)
    before = model(jnp.asarray(tiny.x_test), train=False)
    schedule = schedules.build("inverse_sqrt", 0.1, steps_per_epoch=6, total_steps=12)
    tx = optax.sgd(schedule, momentum=0.9)

    first, second = (engine.fit(model, tx, tiny, config) for _ in range(2))
    assert without_times(first.history.records()) == without_times(second.history.records())
    assert_bitwise_equal(first.state, second.state)
    assert int(first.state.step) == 12
    np.testing.assert_array_equal(model(jnp.asarray(tiny.x_test), train=False), before)


@pytest.mark.parametrize("batch_size", [1, 32, None])
def test_batch_sizes_sgd_minibatch_and_full_batch(tiny, batch_size):
    config = engine.TrainConfig(epochs=2, batch_size=batch_size, seed=0)
    result = engine.fit(model_for(0), optax.sgd(0.05 if batch_size == 1 else 0.5), tiny, config)
    assert result.steps_per_epoch == 96 // (batch_size or 96)
    assert int(result.state.step) == 2 * result.steps_per_epoch
    losses = result.history.metrics["train_loss"][0, 0]
    assert losses[-1] < losses[0]


def test_epoch_equals_a_python_loop_of_train_steps(tiny):
    """The compiled epoch (``make_epoch``) equals ``train_step`` called in a Python loop
    over the same permutation, with the L2 penalty of the objective."""
    objective = engine.Classification(l2=1e-3)
    tx = optax.adam(1e-2)
    graphdef, state = engine.init_state(model_for(0), tx, jax.random.key(7))
    train = jax.tree.map(jnp.asarray, as_train(tiny))
    epoch = jax.jit(engine.make_epoch(graphdef, tx, batch_size=24))
    epoched, out = epoch(state, train, None, objective)

    step = jax.jit(lambda s, batch: engine.train_step(s, batch, graphdef=graphdef, tx=tx,
                                                      objective=objective))  # fmt: skip
    key, perm_key = jax.random.split(state.key)
    order = np.asarray(jax.random.permutation(perm_key, 96)).reshape(4, 24)
    looped, losses = state._replace(key=key), []
    for rows in order:
        looped, step_out = step(looped, {name: values[rows] for name, values in train.items()})
        losses.append(float(step_out.loss))
    assert float(out.loss) == pytest.approx(np.mean(losses), rel=1e-5)
    chex.assert_trees_all_close(epoched.params, looped.params, rtol=1e-5, atol=1e-6)
    assert int(epoched.step) == 4 and int(epoched.epoch) == 1 and bool(out.losses_finite)


# --------------------------------------------------------------------------- fit and population


def test_fit_is_a_population_of_one_bitwise_and_both_report_epochs_alike(tiny):
    config = engine.TrainConfig(epochs=2, batch_size=16, seed=3)
    tx = optax.sgd(0.1, momentum=0.9)
    fit_reports, population_reports = [], []
    solo = engine.fit(model_for(3, dropout=0.3), tx, tiny, config, on_epoch=fit_reports.append)
    population = engine.fit_population(
        lambda key: TinyMLP(key, dropout=0.3), lambda: tx, {}, [3], tiny, config,
        on_epoch=population_reports.append,
    )  # fmt: skip
    assert_bitwise_equal(solo.state, engine.member(population.state, 0))
    for name, values in population.histories.items():
        np.testing.assert_array_equal(solo.history.metrics[name], values)

    assert [type(r) for r in fit_reports + population_reports] == [engine.EpochReport] * 4
    assert [r.epoch for r in fit_reports] == [r.epoch for r in population_reports] == [1, 2]
    for report, record in zip(fit_reports, solo.history.records(), strict=True):
        assert not report.restored and report.metrics["test_loss"].shape == (1, 1)
        assert report.value("test_loss") == record["test_loss"]
        assert report.epoch_time_s == record["epoch_time_s"] > 0


def test_population_equals_separate_fits_and_marks_divergence(tiny):
    config = engine.TrainConfig(epochs=2, batch_size=32)
    learning_rates, seeds = [0.05, 0.2, 1e30], [0, 1]
    reports = []
    pop = engine.fit_population(
        make_model=TinyMLP,
        make_tx=lambda learning_rate: optax.sgd(learning_rate, momentum=0.9),
        hparams={"learning_rate": learning_rates},
        seeds=seeds,
        data=tiny,
        config=config,
        on_epoch=reports.append,
    )
    assert pop.histories["train_loss"].shape == (3, 2, 2)
    assert reports[0].metrics["train_loss"].shape == (3, 2)
    with pytest.raises(ValueError, match="6 members"):
        reports[0].value("train_loss")
    assert pop.diverged.tolist() == [[False, False], [False, False], [True, True]]
    assert sorted(pop.non_finite) == [4, 5] and "at epoch 1, step" in pop.non_finite[4]
    assert np.isnan(pop.histories["test_loss"][2]).all()
    assert all_finite(pop.state.params)
    np.testing.assert_array_equal(pop.hparams["learning_rate"], np.float32(learning_rates))
    for p, s in [(0, 0), (1, 1)]:
        single = engine.fit(
            model_for(seeds[s]),
            optax.sgd(learning_rates[p], momentum=0.9),
            tiny,
            dataclasses.replace(config, seed=seeds[s]),
        )
        for metric in ("train_loss", "train_accuracy", "test_loss", "test_accuracy"):
            np.testing.assert_allclose(pop.histories[metric][p, s], single.history.metrics[
                metric][0, 0], rtol=1e-4, atol=1e-5)  # fmt: skip
        chex.assert_trees_all_close(engine.member(pop.state, 2 * p + s).params,
                                    single.state.params, rtol=1e-4, atol=1e-6)  # fmt: skip


def test_train_config_has_no_schedule_or_l2_and_step_decay_needs_its_period():
    with pytest.raises(TypeError):
        engine.TrainConfig(schedule="inverse_sqrt")
    with pytest.raises(TypeError):
        engine.TrainConfig(l2=1e-3)
    with pytest.raises(ValueError, match="every_epochs"):
        schedules.build("step_decay", 0.1, steps_per_epoch=10, total_steps=100)


# --------------------------------------------------------------------------- non-finite values


def test_adam_without_epsilon_names_the_leaves_whose_update_is_nan(digits):
    """Adam with ε = 0 divides 0 by 0 wherever a gradient entry is exactly 0 (pixels that
    are 0 in every image, dead units): the first update is NaN there, and only there."""
    config = engine.TrainConfig(epochs=1, batch_size=32, seed=0)
    with pytest.raises(engine.NonFiniteError) as info:
        engine.fit(model_for(0), opt.adam(1e-3, eps=0.0), digits, config)
    err = info.value
    assert isinstance(err, ValueError) and isinstance(err, FloatingPointError)
    assert (err.epoch, err.step, err.what) == (1, 0, "update")
    assert all_finite(err.state) and int(err.state.step) == 0

    # The first minibatch by the documented key scheme, its gradient by hand, and Adam's
    # first update −η m̂/√v̂ = −η g/|g| in NumPy.
    order = np.asarray(jax.random.permutation(jax.random.split(train_key(0))[1], 1200))
    rows = order[:32]
    graphdef, params, rest = nnx.split(model_for(0), nnx.Param, ...)
    batch = {"x": digits.x_train[rows], "y": digits.y_train[rows]}

    def loss(p):
        return cross_entropy(nnx.merge(graphdef, p, rest), batch, jax.random.key(0))[0]

    grads = jax.grad(loss)(params)
    with np.errstate(invalid="ignore", divide="ignore"):
        nan_update = [not np.all(np.isfinite(g / np.sqrt(g * g)))
                      for g in map(np.asarray, jax.tree.leaves(grads))]  # fmt: skip
    expected = [name for name, bad in zip(leaf_names(grads), nan_update, strict=True) if bad]
    assert expected and len(expected) < len(nan_update)  # some leaves, not all
    assert err.leaves == expected
    assert "the update of " + ", ".join(expected) in str(err)


def test_nan_learning_rate_at_step_43_stops_there_keeping_finite_state_and_checkpoint(
    tiny, tmp_path
):
    """12 steps an epoch: global step 43 is step 7 of epoch 4. The state is the one after
    43 good steps (a hand-written loop agrees); checkpoint 3 is the last on disk."""
    config = engine.TrainConfig(epochs=5, batch_size=8, seed=2)
    with pytest.raises(engine.NonFiniteError, match=r"epoch 4, step 7: the update of") as info:
        engine.fit(model_for(2), optax.sgd(nan_at(43)), tiny, config, checkpoint_dir=tmp_path)
    err = info.value
    assert (err.epoch, err.step, err.what) == (4, 7, "update")
    assert err.leaves == leaf_names(err.state.params)  # every leaf: the rate scales them all
    assert "last good checkpoint is epoch 3" in str(err)
    assert all_finite(err.state) and int(err.state.step) == 43
    assert err.history.epochs_done == 3
    expected, _ = hand_written_fit(model_for(2), optax.sgd(0.1), as_train(tiny), cross_entropy,
                                   seed=2, epochs=4, batch_size=8, max_steps=43)  # fmt: skip
    chex.assert_trees_all_close(err.state.params, expected, rtol=1e-5, atol=1e-6)

    with Checkpointer(CheckpointConfig(tmp_path)) as checkpoints:
        assert checkpoints.steps() == [1, 2, 3]
        saved_fingerprint = checkpoints.read_meta(3)["fingerprint"]
        like = jax.tree.map(lambda leaf: leaf[None], err.state)
        saved, _, epoch = checkpoints.restore_latest(like, saved_fingerprint)
    assert epoch == 3 and int(saved.step[0]) == 36 and all_finite(saved)
    with pytest.raises(engine.NonFiniteError, match=r"epoch 4, step 7"):  # resumes at epoch 4
        engine.fit(model_for(2), optax.sgd(nan_at(43)), tiny, config, checkpoint_dir=tmp_path,
                   resume=True)  # fmt: skip


def test_a_loss_that_becomes_nan_is_reported_as_the_loss():
    """L = log a with SGD at rate 0.3 from a = 1: a = 1, 0.7, 0.2714…, −0.834…; the fourth
    loss (step 3) is log of a negative number, NaN, while its gradient 1/a is finite."""
    data = engine.Splits({"x": np.zeros((4, 1), np.float32)})
    config = engine.TrainConfig(epochs=2, batch_size=1)

    def log_a(model, batch, key):
        return jnp.log(model.a[...]), {}

    with pytest.raises(engine.NonFiniteError, match=r"epoch 1, step 3: the loss") as info:
        engine.fit(Scalars(), optax.sgd(0.3), data, config, loss=log_a)
    err = info.value
    assert (err.epoch, err.step, err.what, err.leaves) == (1, 3, "loss", [])
    a = 1.0
    for _ in range(3):
        a -= 0.3 / a
    assert float(err.state.params["a"][...]) == pytest.approx(a, rel=1e-6)
    assert a < 0 and all_finite(err.state)


def test_an_infinite_gradient_with_a_finite_loss_names_its_leaf():
    """L = a² + √b at b = 0: L = 1 is finite, ∂L/∂b = 1/(2√b) = ∞, ∂L/∂a = 2 is finite."""
    data = engine.Splits({"x": np.zeros((4, 1), np.float32)})

    def loss(model, batch, key):
        return model.a[...] ** 2 + jnp.sqrt(model.b[...]), {}

    with pytest.raises(engine.NonFiniteError, match=r"step 0: the gradient of \['b'\]") as info:
        engine.fit(Scalars(), optax.sgd(0.1), data, engine.TrainConfig(epochs=1, batch_size=2),
                   loss=loss)  # fmt: skip
    err = info.value
    assert (err.what, err.leaves) == ("gradient", leaf_names(nnx.state(Scalars(), nnx.Param))[1:])
    assert "['b']" in err.leaves[0] and all_finite(err.state)


def test_non_finite_data_values_name_the_loss(tiny):
    """One finite but huge example overflows the forward pass: the loss is NaN first."""
    x_train = tiny.x_train.copy()
    x_train[5] = 3e38
    data = SimpleNamespace(**{**vars(tiny), "x_train": x_train})
    with pytest.raises(engine.NonFiniteError) as info:
        engine.fit(model_for(0), optax.sgd(0.1), data, engine.TrainConfig(epochs=2, batch_size=8))
    err = info.value
    order = np.asarray(jax.random.permutation(jax.random.split(train_key(0))[1], 96))
    assert (err.epoch, err.step, err.what) == (1, int(np.flatnonzero(order == 5)[0]) // 8, "loss")
    assert int(err.state.step) == err.step and all_finite(err.state)


def test_population_freezes_the_diverging_member_and_leaves_the_others_alone(regression):
    """Configuration 0's rate is NaN at step 43 (6 steps an epoch: epoch 8, step 1); both
    its seeds freeze after 43 good steps (a hand-written loop agrees), NaN from epoch 8;
    configuration 1 equals its solo runs."""
    config = engine.TrainConfig(epochs=9, batch_size=16)

    def make_tx(nan_step):
        return optax.sgd(nan_at(nan_step, 0.05))

    pop = engine.fit_population(Regressor, make_tx, {"nan_step": [43, 10**6]}, [0, 1],
                                regression, config, loss=MSE)  # fmt: skip
    assert pop.diverged.tolist() == [[True, True], [False, False]]
    assert sorted(pop.non_finite) == [0, 1]
    assert "epoch 8, step 1: the update of" in pop.non_finite[0]
    losses = pop.histories["train_loss"]
    assert np.isfinite(losses[0, :, :7]).all() and np.isnan(losses[0, :, 7:]).all()
    assert np.isfinite(losses[1]).all()
    for s, seed in enumerate([0, 1]):
        frozen = engine.member(pop.state, s)
        assert all_finite(frozen) and int(frozen.step) == 43
        expected, _ = hand_written_fit(
            Regressor(engine.seed_keys(seed)[0]), optax.sgd(0.05), regression.train,
            squared_error, seed=seed, epochs=8, batch_size=16, max_steps=43,
        )  # fmt: skip
        chex.assert_trees_all_close(frozen.params, expected, rtol=1e-5, atol=1e-6)

        solo = engine.fit(Regressor(engine.seed_keys(seed)[0]), make_tx(10**6), regression,
                          dataclasses.replace(config, seed=seed), loss=MSE)  # fmt: skip
        chex.assert_trees_all_close(engine.member(pop.state, 2 + s).params, solo.state.params,
                                    rtol=1e-5, atol=1e-7)  # fmt: skip
        np.testing.assert_allclose(losses[1, s], solo.history.metrics["train_loss"][0, 0],
                                   rtol=1e-5)  # fmt: skip


def poisoned(tiny, index: int = 5):
    """``tiny`` with one finite but huge example: its forward pass overflows to inf/NaN."""
    x_train = tiny.x_train.copy()
    x_train[index] = 3e38
    return SimpleNamespace(**{**vars(tiny), "x_train": x_train})


def test_skip_non_finite_skips_the_bad_step_and_counts_it(tiny):
    config = engine.TrainConfig(epochs=3, batch_size=8)
    result = engine.fit(model_for(0), optax.sgd(0.1), poisoned(tiny), config, on_non_finite="skip")
    # One poisoned example, 12 full minibatches an epoch: exactly one skipped step each.
    records = result.history.records()
    assert [record["skipped_steps"] for record in records] == [1, 1, 1]
    assert int(result.state.opt_state.total_skips) == 3 and int(result.state.step) == 36
    assert all_finite(result.state)
    assert records[-1]["train_accuracy"] > records[0]["train_accuracy"] - 0.1
    assert np.isfinite(records[-1]["test_loss"])


def test_skip_gives_up_and_stops_when_every_step_is_bad(tiny):
    """More than ``max_consecutive_errors`` (5) bad gradients in a row: the wrapper lets
    the sixth through, its update is NaN, and fit stops there blaming the gradients."""
    data = SimpleNamespace(**{**vars(tiny), "x_train": np.full_like(tiny.x_train, 3e38)})
    config = engine.TrainConfig(epochs=1, batch_size=8)
    with pytest.raises(
        engine.NonFiniteError,
        match=r"epoch 1, step 5: the update of .*too many non-finite gradients in a row",
    ):
        engine.fit(model_for(0), optax.sgd(0.1), data, config, on_non_finite="skip")


def test_skip_does_not_blame_gradients_that_were_finite(tiny):
    """Under "skip" a NaN learning rate makes a NaN update from a finite gradient: the
    wrapper has nothing to skip, and the message must not blame the gradients."""
    config = engine.TrainConfig(epochs=2, batch_size=8)
    with pytest.raises(engine.NonFiniteError, match=r"epoch 2, step 1: the update of") as info:
        engine.fit(model_for(0), optax.sgd(nan_at(13)), tiny, config, on_non_finite="skip")
    assert info.value.what == "update"
    assert "gradient" not in str(info.value)


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


# --------------------------------------------------------------------------- warm starts, padding


def test_warm_start_params_are_the_starting_point(tiny):
    """At learning rate 0 training changes nothing: the final weights are the warm start's
    (not the model's own), in every member, and the test accuracy is theirs."""
    warm = nnx.state(model_for(1), nnx.Param)
    config = engine.TrainConfig(epochs=1, batch_size=32, seed=0)
    result = engine.fit(model_for(0), optax.sgd(0.0), tiny, config,
                        warm_start=engine.WarmStart(warm))  # fmt: skip
    assert_bitwise_equal(result.state.params, warm)
    logits = np.asarray(model_for(1)(jnp.asarray(tiny.x_test)))
    accuracy = np.mean(np.argmax(logits, -1) == tiny.y_test)
    assert result.history.records()[0]["test_accuracy"] == pytest.approx(accuracy, abs=1e-6)

    pop = engine.fit_population(TinyMLP, lambda learning_rate: optax.sgd(learning_rate),
                                {"learning_rate": [0.0, 0.0]}, [0, 1], tiny, config,
                                warm_start=engine.WarmStart(warm))  # fmt: skip
    for index in range(4):
        assert_bitwise_equal(engine.member(pop.state, index).params, warm)


def test_warm_start_optimizer_state_is_used(tiny):
    """An injected learning rate lives in the optimizer state: a warm start whose state
    holds rate 0 trains nothing, the fresh state (rate 0.1) does."""
    tx = optax.inject_hyperparams(optax.sgd)(learning_rate=0.1)
    model = model_for(0)
    params = nnx.state(model, nnx.Param)
    frozen = tx.init(params)
    frozen.hyperparams["learning_rate"] = jnp.zeros((), jnp.float32)
    config = engine.TrainConfig(epochs=1, batch_size=32, seed=0)

    still = engine.fit(model, tx, tiny, config, warm_start=engine.WarmStart(params, None, frozen))
    assert_bitwise_equal(still.state.params, params)
    assert float(still.state.opt_state.hyperparams["learning_rate"]) == 0.0
    moved = engine.fit(model, tx, tiny, config, warm_start=engine.WarmStart(params))
    assert not np.allclose(moved.state.params["head"]["kernel"][...], params["head"]["kernel"][...])


def test_padded_rows_are_never_trained_on_and_one_bucket_compiles_once(regression):
    """Padded rows hold the target 10⁶: one of them in a minibatch of 10 would make its
    loss ≥ 10¹¹. Sizes 70 and 100 share the bucket 128 (one compilation); 130 does not."""

    def fit_rows(num_rows: int, tx):
        splits = engine.padded(regression_rows(num_rows, seed=num_rows), regression.evals, 64)
        splits.train["y"][num_rows:] = 1e6
        return engine.fit(Regressor(jax.random.key(0)), tx, splits, config, loss=MSE)

    config = engine.TrainConfig(epochs=3, batch_size=10, seed=0)
    tx = optax.adam(1e-2)
    first = fit_rows(70, tx)
    cached = len(loop._COMPILED)
    second = fit_rows(100, tx)
    assert first.compile_time_s > 0 and second.compile_time_s == 0.0
    assert len(loop._COMPILED) == cached
    for result, num_rows in ((first, 70), (second, 100)):
        assert result.steps_per_epoch == num_rows // 10
        assert int(result.state.step) == 3 * (num_rows // 10)
        assert np.max(result.history.metrics["train_loss"]) < 10.0
    assert fit_rows(130, tx).compile_time_s > 0  # the bucket 256


# --------------------------------------------------------------------------- checkpoints


def _interrupt_after(epoch):
    def on_epoch(report):
        if report.epoch == epoch:
            raise KeyboardInterrupt

    return on_epoch


def test_fit_resume_after_interruption_is_bitwise_identical(tiny, tmp_path):
    config = engine.TrainConfig(epochs=3, batch_size=16, seed=1)
    tx = optax.adam(1e-2)
    reference = engine.fit(model_for(1, dropout=0.2), tx, tiny, config)
    with pytest.raises(KeyboardInterrupt):
        engine.fit(model_for(1, dropout=0.2), tx, tiny, config, checkpoint_dir=tmp_path,
                   on_epoch=_interrupt_after(2))  # fmt: skip
    reports = []
    resumed = engine.fit(model_for(1, dropout=0.2), tx, tiny, config, checkpoint_dir=tmp_path,
                         resume=True, on_epoch=reports.append)  # fmt: skip
    assert [(r.epoch, r.restored) for r in reports] == [(1, True), (2, True), (3, False)]
    assert without_times(resumed.history.records()) == without_times(reference.history.records())
    assert_bitwise_equal(resumed.state, reference.state)  # params, opt state, step, key, epoch
    # A finished run resumes to itself without training.
    again = engine.fit(model_for(1, dropout=0.2), tx, tiny, config, checkpoint_dir=tmp_path,
                       resume=True)  # fmt: skip
    assert again.compile_time_s == 0
    assert without_times(again.history.records()) == without_times(reference.history.records())
    assert_bitwise_equal(again.state, reference.state)


def test_fit_refuses_another_configuration_and_misused_folders(tiny, tmp_path):
    config = engine.TrainConfig(epochs=1, batch_size=16)
    fp = {"optimizer": "adam", "learning_rate": 0.01}
    engine.fit(
        model_for(0), optax.adam(1e-2), tiny, config, checkpoint_dir=tmp_path, fingerprint=fp
    )
    with pytest.raises(ValueError, match=r"already holds checkpoints \(epochs \[1\]\); resume"):
        engine.fit(model_for(0), optax.adam(1e-2), tiny, config, checkpoint_dir=tmp_path)
    with pytest.raises(ValueError, match=r"learning_rate: checkpoint has 0.01, this run has 0.1"):
        engine.fit(model_for(0), optax.adam(0.1), tiny, config, checkpoint_dir=tmp_path,
                   resume=True, fingerprint={**fp, "learning_rate": 0.1})  # fmt: skip
    with pytest.raises(ValueError, match=r"train.batch_size: checkpoint has 16, this run has 8"):
        engine.fit(model_for(0), optax.adam(1e-2), tiny, dataclasses.replace(config, batch_size=8),
                   checkpoint_dir=tmp_path, resume=True, fingerprint=fp)  # fmt: skip
    with pytest.raises(ValueError, match=r"l2: checkpoint has 0.0, this run has 0.1"):
        engine.fit(model_for(0), optax.adam(1e-2), tiny, config, checkpoint_dir=tmp_path,
                   resume=True, fingerprint=fp, loss=engine.Classification(l2=0.1))  # fmt: skip
    with pytest.raises(ValueError, match=r"resume needs a checkpoint folder"):
        engine.fit(model_for(0), optax.adam(1e-2), tiny, config, resume=True)
    with pytest.raises(ValueError, match=r"on_non_finite must be one of stop, skip"):
        engine.fit(model_for(0), optax.adam(1e-2), tiny, config, on_non_finite="ignore")


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
    with pytest.raises(KeyboardInterrupt):
        engine.fit_population(**kwargs, checkpoint_dir=tmp_path, on_epoch=_interrupt_after(1))
    resumed = engine.fit_population(**kwargs, checkpoint_dir=tmp_path, resume=True)
    assert resumed.diverged.tolist() == reference.diverged.tolist() == [[False], [True]]
    for name, values in reference.histories.items():
        np.testing.assert_array_equal(resumed.histories[name], values)
    assert_bitwise_equal(resumed.state, reference.state)


# --------------------------------------------------------------------------- models, dtypes


def test_bfloat16_compute_trains_with_float32_params(tiny):
    config = engine.TrainConfig(epochs=3, batch_size=16, compute_dtype="bfloat16")
    result = engine.fit(model_for(0), optax.adam(1e-2), tiny, config)
    assert {leaf.dtype for leaf in jax.tree.leaves(result.state.params)} == {jnp.dtype("float32")}
    losses = result.history.metrics["train_loss"][0, 0]
    assert losses[-1] < losses[0]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"epochs": 0}, "epochs"),
        ({"batch_size": 0}, "batch_size"),
        ({"seed": 1.5}, "seed"),
        ({"compute_dtype": "float16"}, "bfloat16"),
        ({"eval_train": 1}, "eval_train must be True or False"),
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
    """BatchNorm's running averages are state the traced step must write and carry back:
    after one full-batch step from mean 0 they are 0.1 × the batch mean of the features."""
    model = TinyBatchNormNet(engine.seed_keys(0)[0])
    assert not np.any(model.norm.mean[...])
    config = engine.TrainConfig(epochs=1, batch_size=None, seed=0)
    result = engine.fit(model, optax.sgd(0.1), tiny, config)
    features = model.hidden(jnp.asarray(tiny.x_train).reshape(96, -1))
    np.testing.assert_allclose(result.model.norm.mean[...], 0.1 * np.mean(features, 0),
                               rtol=1e-5, atol=1e-7)  # fmt: skip
    assert np.isfinite(result.history.records()[-1]["train_loss"])


def test_more_epochs_compile_nothing_more(tiny, caplog):
    """Compilation happens once per fit, not per epoch: 1 and 4 epochs compile the same
    programs (counted from JAX's compile log)."""

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
    config = engine.TrainConfig(epochs=1, batch_size=32, seed=0)
    result = engine.fit(models.build(name, (8, 8, 1), 10, hidden=8), optax.adam(1e-2), tiny, config)
    assert np.isfinite(result.history.records()[-1]["train_loss"])
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


def _test_loss(model, data) -> float:
    """Mean cross-entropy of ``model`` on the test rows, by optax (not the engine)."""
    logits = model(jnp.asarray(data.x_test), train=False)
    labels = jnp.asarray(data.y_test)
    return float(optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean())


def test_schedule_free_is_evaluated_and_returned_at_its_averaged_parameters(tiny):
    """Schedule-Free's parameters hold y (where gradients are taken); the engine evaluates,
    and ``fit`` returns, x = (y − (1 − β) z) / β, alone and in a population."""
    config = engine.TrainConfig(epochs=3, batch_size=32, seed=0)
    result = engine.fit(model_for(0), opt.schedule_free_sgd(0.2, b1=0.8), tiny, config)
    y, z = result.state.params, result.state.opt_state.z
    x = jax.tree.map(lambda y, z: (np.asarray(y) - 0.2 * np.asarray(z)) / 0.8, y, z)
    chex.assert_trees_all_close(nnx.state(result.model, nnx.Param), x, rtol=1e-5, atol=1e-6)
    graphdef = nnx.graphdef(result.model)
    at_y = nnx.merge(graphdef, y, result.state.model_state)
    recorded = result.history.metrics["test_loss"][0, 0, -1]
    np.testing.assert_allclose(recorded, _test_loss(result.model, tiny), rtol=1e-5)
    assert abs(recorded - _test_loss(at_y, tiny)) > 1e-3  # y is not what was evaluated
    assert result.history.metrics["train_loss"][0, 0, -1] < result.history.metrics[
        "train_loss"][0, 0, 0]  # fmt: skip
    population = engine.fit_population(
        make_model=TinyMLP,
        make_tx=lambda learning_rate: opt.schedule_free_sgd(learning_rate, b1=0.8),
        hparams={"learning_rate": [0.2, 0.05]},
        seeds=[0],
        data=tiny,
        config=config,
    )
    np.testing.assert_allclose(population.histories["test_loss"][0, 0], result.history.metrics[
        "test_loss"][0, 0], rtol=1e-4)  # fmt: skip
