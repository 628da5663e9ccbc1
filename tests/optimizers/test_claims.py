"""Small checks behind the claims in docs/optimizers.md ("what it fixes", "what it costs")."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from optlab import optimizers as opt


def run(tx, grads, params=None):
    """Updates of ``tx`` for the gradient sequence ``grads`` (params fixed), in one jit."""
    grads = jnp.stack(grads)
    params = jnp.ones_like(grads[0]) if params is None else params

    def step(state, g):
        u, state = tx.update(g, state, params)
        return state, u

    return jax.jit(lambda s, gs: jax.lax.scan(step, s, gs)[1])(tx.init(params), grads)


def test_adadelta_default_descends_where_optax_default_climbs():
    loss = lambda p: jnp.sum(p**2)  # noqa: E731
    for tx, direction in ((opt.adadelta(), -1), (optax.adadelta(), +1)):
        p, state = jnp.ones(3), tx.init(jnp.ones(3))
        for _ in range(3):
            u, state = tx.update(jax.grad(loss)(p), state, p)
            p = p + u
        assert np.sign(float(loss(p) - 3.0)) == direction


def test_sgdm_is_heavy_ball_with_learning_rate_scaled_by_one_minus_beta():
    grads = [jnp.array([1.0, -2.0, 0.5]) * (t + 1) for t in range(8)]
    beta, eta = 0.9, 0.01
    np.testing.assert_allclose(
        run(opt.sgdm(eta / (1 - beta), beta), grads),
        run(opt.sgd(eta, momentum=beta), grads),
        rtol=1e-5,
    )


def test_adagrad_step_shrinks_like_one_over_root_t_for_a_constant_gradient():
    grads = [jnp.array([2.0])] * 100
    steps = -run(opt.adagrad_paper(0.1, eps=0.0), grads)[:, 0]
    t = np.arange(1, 101)
    np.testing.assert_allclose(steps, 0.1 / np.sqrt(t), rtol=1e-5)


@pytest.mark.parametrize("scale", [1e-3, 1.0, 1e3])
def test_adam_step_is_invariant_to_gradient_scale(scale):
    grads = [scale * jnp.array([1.0, -3.0, 0.2]) * (1 + 0.1 * t) for t in range(5)]
    reference = run(opt.adam(0.01), [g / scale for g in grads])
    np.testing.assert_allclose(run(opt.adam(0.01), grads), reference, rtol=1e-4)
    assert np.allclose(np.abs(reference[0]), 0.01, rtol=1e-4)  # first step: η·sign(g)


def test_adamax_step_never_exceeds_learning_rate():
    grads = list(10.0 * np.random.default_rng(0).standard_normal((50, 3), np.float32))
    assert float(jnp.max(jnp.abs(run(opt.adamax(0.002), grads)))) <= 0.002 * (1 + 1e-6)


def test_amsgrad_denominator_never_decreases():
    grads = jnp.array([10.0] * 5 + [0.1] * 20)[:, None]
    tx = opt.amsgrad(1e-3)

    def step(state, g):
        _, state = tx.update(g, state)
        return state, state[0].nu_max[0]

    nu_max = jax.jit(lambda s: jax.lax.scan(step, s, grads)[1])(tx.init(jnp.ones(1)))
    assert bool(jnp.all(jnp.diff(nu_max) >= 0)) and float(nu_max[-1]) > float(nu_max[0])


def test_radam_takes_plain_momentum_steps_before_the_variance_is_tractable():
    grads = [jnp.array([4.0, -0.5])] * 3
    # ρ₁..ρ₃ < threshold 5 for β₂ = 0.999, so u = −η m̂ = −η g for a constant g.
    np.testing.assert_allclose(run(opt.radam(0.01), grads), -0.01 * jnp.stack(grads), rtol=1e-5)


def test_lion_moves_every_coordinate_by_exactly_the_learning_rate():
    grads = list(np.random.default_rng(1).standard_normal((10, 3), np.float32))
    np.testing.assert_allclose(np.abs(run(opt.lion(1e-3, weight_decay=0.0), grads)), 1e-3)


def test_lamb_update_norm_per_leaf_is_learning_rate_times_param_norm():
    params = {"w": jnp.full((3, 3), 2.0), "b": jnp.array([3.0, 4.0])}
    grads = {"w": jnp.arange(9.0).reshape(3, 3), "b": jnp.array([1.0, -1.0])}
    tx = opt.lamb(0.01)
    updates, _ = tx.update(grads, tx.init(params), params)
    for key in params:
        norm, param_norm = jnp.linalg.norm(updates[key]), jnp.linalg.norm(params[key])
        np.testing.assert_allclose(norm, 0.01 * param_norm, rtol=1e-5)


def test_adamw_decay_is_decoupled_from_the_adaptive_scaling():
    params = jnp.array([1.0, -2.0, 4.0])
    tx = opt.adamw(0.1, weight_decay=0.5)
    updates, _ = tx.update(jnp.zeros(3), tx.init(params), params)
    np.testing.assert_allclose(updates, -0.1 * 0.5 * params, rtol=1e-6)  # not divided by √v̂


def test_muon_update_of_a_matrix_has_singular_values_near_one():
    """Muon orthogonalises: a gradient whose singular values span 100× gives a first update
    whose singular values lie in [0.6, 1.2] (Jordan's 5 quintic steps, not exactly 1)."""
    rng = np.random.default_rng(0)
    u, _ = np.linalg.qr(rng.standard_normal((8, 4)))
    v, _ = np.linalg.qr(rng.standard_normal((4, 4)))
    grad = jnp.asarray(u @ np.diag(np.geomspace(1.0, 0.01, 4)) @ v.T, jnp.float32)
    tx = opt.muon(0.1)  # an (8, 4) kernel: fan_out < fan_in, so no width scaling
    updates, _ = tx.update({"w": grad}, tx.init({"w": grad}), {"w": grad})
    singular_values = np.linalg.svd(np.asarray(updates["w"]) / -0.1, compute_uv=False)
    assert np.all((singular_values > 0.6) & (singular_values < 1.2)), singular_values
