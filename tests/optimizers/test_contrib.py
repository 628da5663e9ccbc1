"""Optax contrib's MADGRAD, ACProp, DoG, DoWG, COCOB, D-Adaptation, MoMo and GaLore: what the
generic tests do not reach (donated steps, MoMo's loss value, GaLore's memory and shapes,
hyperparameter checks). Parity with Optax is in the table of cases.py."""

from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from optlab import optimizers as opt

# Their states keep x₀: Optax's hold the caller's arrays, ours copies of them.
KEEP_START = {
    "madgrad": opt.madgrad(0.01),
    "dog": opt.dog(),
    "dowg": opt.dowg(),
    "cocob": opt.cocob(),
}


@pytest.mark.parametrize("name", sorted(KEEP_START))
def test_a_step_donating_params_and_state_equals_an_undonated_one(name):
    tx = KEEP_START[name]

    def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    params, grads = {"w": jnp.linspace(-1.0, 1.0, 5)}, {"w": jnp.linspace(2.0, -1.0, 5)}
    expected = jax.jit(step)(params, tx.init(params), grads)
    fresh = jax.tree.map(jnp.copy, params)
    donated = jax.jit(step, donate_argnums=(0, 1))(fresh, tx.init(fresh), grads)
    chex.assert_trees_all_equal(donated, expected)


def test_momo_is_a_polyak_step_on_its_model_of_the_loss():
    """f(x) = ‖x‖² from x₀ = v = (1, 2, 3), f* = 0, α = 1, β = 0.9 (worked by hand).

    Step 1 (no history): τ = min(α, f/‖g‖²) = 14/56 = ¼, x₁ = x₀ − ¼ · 2x₀ = v/2, f = 3.5.
    Step 2: g = v, d = 0.9 · 2v + 0.1 · v = 1.9 v, f̄ = 0.9 · 14 + 0.1 · 3.5 = 12.95,
    γ = 0.9 · 28 + 0.1 · 7 = 25.9, ⟨d, x₁⟩ = 13.3, so the model's gap is
    12.95 + 13.3 − 25.9 = 0.35 and τ = 0.35/‖d‖² = 0.35/50.54; x₂ = (½ − 1.9 τ) v."""
    f = lambda x: jnp.sum(x**2)  # noqa: E731
    tx, x = opt.momo(1.0), jnp.array([1.0, 2.0, 3.0])
    state, values = tx.init(x), []
    for _ in range(2):
        value, grad = jax.value_and_grad(f)(x)
        updates, state = tx.update(grad, state, x, value=value)
        x = optax.apply_updates(x, updates)
        values.append(float(f(x)))
    tau = 0.35 / (1.9**2 * 14)
    np.testing.assert_allclose(values, [3.5, (0.5 - 1.9 * tau) ** 2 * 14], rtol=1e-5)


@pytest.mark.parametrize("factory", [opt.momo, opt.momo_adam])
def test_momo_without_the_loss_value_is_refused_in_one_line(factory):
    tx = factory()
    x = jnp.ones(3)
    with pytest.raises(ValueError, match=r"^value=None is invalid: MoMo needs the loss") as err:
        tx.update(x, tx.init(x), x)
    assert "\n" not in str(err.value)


def test_galore_state_is_the_low_rank_moments_and_the_projector():
    """A 64 × 32 matrix at rank 4: P is 64 × 4 and Adam's two moments 4 × 32 (512 numbers,
    an eighth of Adam's 4096); a vector goes through Adam whole."""
    params = {"w": jnp.ones((64, 32)), "b": jnp.ones(32)}
    state = opt.galore(1e-3, rank=4).init(params)[0]
    assert state.projector["w"].shape == (64, 4) and state.projector["b"].shape == (0, 0)
    adam = state.base_optimizer_state
    assert adam.mu["w"].shape == adam.nu["w"].shape == (4, 32)
    assert adam.mu["b"].shape == (32,)


def test_galore_projects_wide_matrices_from_the_right_and_keeps_their_update_in_the_span():
    """m < n: P = the first r right singular vectors of G (n × r); the update of the first
    step is scale · (G P)-Adam-normalised · Pᵀ, so it lies in the row space P spans."""
    g = jax.random.normal(jax.random.key(0), (3, 8))
    tx = opt.scale_by_galore(rank=2)
    updates, state = tx.update(g, tx.init(g))
    projector = state.projector
    assert projector.shape == (8, 2)
    np.testing.assert_allclose(projector.T @ projector, np.eye(2), atol=1e-5)
    np.testing.assert_allclose(updates @ projector @ projector.T, updates, atol=1e-5)


BAD = [
    (functools.partial(opt.madgrad, 0.01), dict(momentum=1.0), "momentum", "1.0"),
    (functools.partial(opt.acprop, 0.01), dict(b2=1.0), "b2", "1.0"),
    (opt.dog, dict(init_step=("distanse", 1e-6)), "init_step", "distanse"),
    (opt.dog, dict(init_step=("distance", -1.0)), "init_step", "-1.0"),
    (opt.dowg, dict(eps=-1e-4), "eps", "-0.0001"),
    (opt.cocob, dict(alpha=-1.0), "alpha", "-1.0"),
    (opt.dadapt_adamw, dict(betas=(1.0, 0.999)), "b1 (betas[0])", "1.0"),
    (opt.dadapt_adamw, dict(estim_lr0=-1.0), "estim_lr0", "-1.0"),
    (opt.momo, dict(beta=1.5), "beta", "1.5"),
    (opt.momo_adam, dict(lower_bound=float("nan")), "lower_bound", "nan"),
    (functools.partial(opt.galore, 1e-3), dict(rank=0), "rank", "0"),
    (functools.partial(opt.galore, 1e-3), dict(rank=2.5), "rank", "2.5"),
    (functools.partial(opt.galore, 1e-3), dict(update_proj_gap=0), "update_proj_gap", "0"),
]


@pytest.mark.parametrize("factory, kwargs, arg, value", BAD, ids=[f"{a}={v}" for *_, a, v in BAD])
def test_bad_hyperparameter_raises_naming_argument_and_value(factory, kwargs, arg, value):
    with pytest.raises(ValueError) as error:
        factory(**kwargs)
    assert arg in str(error.value) and value in str(error.value)


def test_galore_refuses_dimension_numbers_that_do_not_cover_the_leaf():
    tx = opt.galore(1e-3, weight_dimension_numbers=opt.GaLoreDimensionNumbers(0, 1))
    with pytest.raises(ValueError, match=r"invalid for shape \(2, 3, 4\)"):
        tx.init({"w": jnp.ones((2, 3, 4))})


# A hyperparameter besides the learning rate, traced under vmap like it.
VMAPPED = {
    "madgrad": ("momentum", [0.9, 0.5]),
    "acprop": ("b2", [0.999, 0.99]),
    "dog": ("eps", [1e-8, 1e-4]),
    "dowg": ("eps", [1e-4, 1e-2]),
    "cocob": ("alpha", [100.0, 10.0]),
    "dadapt_adamw": ("estim_lr0", [1e-6, 1e-3]),
    "galore": ("scale", [1.0, 0.25]),
}


@pytest.mark.parametrize("name", sorted(VMAPPED))
def test_vmap_over_hyperparameters_equals_separate_runs(name):
    hyperparameter, values = VMAPPED[name]
    learning_rates = [
        opt.info(name).suggested_learning_rate,
        opt.info(name).suggested_learning_rate / 2,
    ]
    params = {"w": jnp.linspace(-1.0, 1.0, 12).reshape(4, 3), "b": jnp.linspace(0.5, 1.5, 3)}

    def final(learning_rate, value):
        tx = opt.get(name, learning_rate=learning_rate, **{hyperparameter: value})

        def step(carry, t):
            p, state = carry
            grads = jax.tree.map(lambda x: 2 * x + jnp.sin(t), p)
            updates, state = tx.update(grads, state, p)
            return (optax.apply_updates(p, updates), state), None

        return jax.lax.scan(step, (params, tx.init(params)), jnp.arange(5.0))[0][0]

    batched = jax.jit(jax.vmap(final))(jnp.array(learning_rates), jnp.array(values))
    single = jax.jit(final)
    for i, (lr, value) in enumerate(zip(learning_rates, values, strict=True)):
        chex.assert_trees_all_close(
            jax.tree.map(lambda x, i=i: x[i], batched), single(lr, value), rtol=1e-5, atol=1e-7
        )
