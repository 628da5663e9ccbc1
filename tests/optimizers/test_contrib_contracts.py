"""The contracts of the optax.contrib optimizers beyond one ``update(grads, state, params)``:
Schedule-Free's evaluation parameters, ADOPT under ``inject_hyperparams``, Sophia's
objective, SAM's two gradients per step."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from optlab import optimizers as opt
from optlab.optimizers.finite import skip_non_finite


def _two_steps(tx, params, state=None):
    """Parameters and state after two steps (gradients fixed), from ``tx.init`` or ``state``."""
    state = tx.init(params) if state is None else state
    for g in ({"w": jnp.array([1.0, -2.0])}, {"w": jnp.array([0.5, 0.5])}):
        updates, state = tx.update(g, state, params)
        params = optax.apply_updates(params, updates)
    return params, state


def test_schedule_free_eval_params_are_x_and_equal_optax():
    params, state = _two_steps(opt.schedule_free_sgd(0.1, b1=0.8), {"w": jnp.array([1.0, 3.0])})
    x = (np.asarray(params["w"]) - 0.2 * np.asarray(state.z["w"])) / 0.8
    np.testing.assert_allclose(opt.schedule_free_eval_params(state, params)["w"], x, rtol=1e-6)
    theirs, their_state = _two_steps(
        optax.contrib.schedule_free_sgd(0.1, b1=0.8), {"w": jnp.array([1.0, 3.0])}
    )
    chex.assert_trees_all_equal(
        opt.schedule_free_eval_params(state, params),
        optax.contrib.schedule_free_eval_params(their_state, theirs),
    )
    assert not np.allclose(x, params["w"])  # x and y differ after two steps


@pytest.mark.parametrize(
    "wrap",
    [
        lambda: optax.inject_hyperparams(opt.schedule_free_adamw)(learning_rate=0.1),
        lambda: skip_non_finite(opt.schedule_free_adamw(0.1)),
        lambda: optax.chain(optax.clip_by_global_norm(1.0), opt.schedule_free_adamw(0.1)),
    ],
    ids=["inject_hyperparams", "skip_non_finite", "chain"],
)
def test_eval_params_finds_a_nested_schedule_free_state(wrap):
    params, state = _two_steps(wrap(), {"w": jnp.array([1.0, 3.0])})
    inner = next(
        s
        for s in jax.tree.leaves(state, is_leaf=lambda s: isinstance(s, opt.ScheduleFreeState))
        if isinstance(s, opt.ScheduleFreeState)
    )
    chex.assert_trees_all_equal(
        opt.eval_params(state, params), opt.schedule_free_eval_params(inner, params)
    )


def test_eval_params_of_other_optimizers_are_the_parameters():
    params, state = _two_steps(opt.adam(0.1), {"w": jnp.array([1.0, 3.0])})
    assert opt.eval_params(state, params) is params
    with pytest.raises(ValueError, match="needs a ScheduleFreeState, got tuple"):
        opt.schedule_free_eval_params(state, params)


def test_schedule_free_refuses_b1_zero():
    with pytest.raises(ValueError, match=r"b1=0 is invalid"):
        opt.schedule_free_sgd(0.1, b1=0)
    with pytest.raises(ValueError, match=r"warmup_steps=0 is invalid"):
        opt.schedule_free_adamw(0.1, warmup_steps=0)


def test_adopt_learning_rate_is_injected_at_run_time():
    """Under inject_hyperparams the default clip_value_fn (a callable) arrives as its value
    at the wrapper's step count, which is ADOPT's own t: the same updates as without it.
    (Optax 0.2.8's adopt fails there: it calls the value.)"""
    injected = optax.inject_hyperparams(opt.adopt)(learning_rate=0.1)
    params = {"w": jnp.array([1.0, 3.0])}
    chex.assert_trees_all_close(
        _two_steps(injected, params)[0], _two_steps(opt.adopt(0.1), params)[0], rtol=1e-6
    )
    with pytest.raises(TypeError, match="not callable"):
        _two_steps(optax.inject_hyperparams(optax.contrib.adopt)(learning_rate=0.1), params)
    state = injected.init(params)
    state.hyperparams["learning_rate"] = jnp.zeros(())
    chex.assert_trees_all_equal(_two_steps(injected, params, state)[0], params)


def test_sophia_needs_the_objective_and_its_hutchinson_estimate_is_the_exact_diagonal():
    """For a separable f the Hessian is diagonal, so r ⊙ (H r) = diag H for any ±1 probe r:
    f(θ) = Σ θ³ has diag H = 6θ. Without obj_fn the update names what is missing."""
    params = {"w": jnp.array([1.0, -2.0, 0.5])}
    estimator = opt.hutchinson_diagonal_hessian(jax.random.PRNGKey(3))
    diagonal, _ = estimator.update(params, estimator.init(params), params,
                                   obj_fn=lambda p: jnp.sum(p["w"] ** 3))  # fmt: skip
    np.testing.assert_allclose(diagonal["w"], 6 * params["w"], rtol=1e-6)
    tx = opt.sophia(0.1)
    with pytest.raises(ValueError, match="needs params and obj_fn"):
        tx.update(params, tx.init(params), params)


def test_sam_opaque_mode_takes_both_gradients_in_one_call_and_equals_optax():
    """Opaque SAM calls grad_fn for the ascent inside update: one call is one outer step,
    equal to two transparent calls (the outer parameters after each pair) and to Optax's."""
    loss = lambda p: jnp.sum(p["w"] ** 4 + p["w"] ** 2)  # noqa: E731
    grad_fn = jax.grad(lambda p, i: loss(p))

    def outer_steps(tx, params, calls, **kwargs):
        state = tx.init(params)
        for _ in range(calls):
            updates, state = tx.update(jax.grad(loss)(params), state, params, **kwargs)
            params = optax.apply_updates(params, updates)
        return params

    def simple_sam(sam, sgd, normalize, opaque):
        return sam(sgd(0.05), optax.chain(normalize(), sgd(0.1)), opaque_mode=opaque)

    params = {"w": jnp.array([1.0, -0.5, 0.3])}
    opaque = outer_steps(simple_sam(opt.sam, opt.sgd, opt.normalize, True), params, 3,
                         grad_fn=grad_fn)  # fmt: skip
    transparent = outer_steps(simple_sam(opt.sam, opt.sgd, opt.normalize, False), params, 6)
    theirs = outer_steps(
        simple_sam(optax.contrib.sam, optax.sgd, optax.contrib.normalize, True),
        params, 3, grad_fn=grad_fn,
    )  # fmt: skip
    chex.assert_trees_all_close(opaque, transparent, rtol=1e-6)
    chex.assert_trees_all_equal(opaque, theirs)
    assert float(loss(opaque)) < float(loss(params))
    tx = simple_sam(opt.sam, opt.sgd, opt.normalize, True)
    with pytest.raises(ValueError, match="needs grad_fn"):
        tx.update(params, tx.init(params), params)
