"""Optimizers with Optax's extra-argument contract (``update(..., value=, grad=, value_fn=)``):
L-BFGS with its line search and Polyak SGD, step for step against Optax on Rosenbrock
(their rows in cases.py cover the rest of the parity protocol)."""

import chex
import jax
import jax.numpy as jnp
import optax
import pytest
from optlab import optimizers as opt


def rosenbrock(x):
    return (1.0 - x[0]) ** 2 + 100.0 * (x[1] - x[0] ** 2) ** 2


def run(tx, steps, *, line_search):
    """Parameters and states after each step on Rosenbrock from (−1, 1), in one jit."""
    value_and_grad = optax.value_and_grad_from_state(rosenbrock)

    def step(carry, _):
        x, state = carry
        if line_search:
            value, grad = value_and_grad(x, state=state)
            extra = dict(value=value, grad=grad, value_fn=rosenbrock)
        else:
            value, grad = jax.value_and_grad(rosenbrock)(x)
            extra = dict(value=value)
        updates, state = tx.update(grad, state, x, **extra)
        x = optax.apply_updates(x, updates)
        return (x, state), (x, state)

    x0 = jnp.array([-1.0, 1.0])
    return jax.jit(lambda x0: jax.lax.scan(step, (x0, tx.init(x0)), length=steps)[1])(x0)


@pytest.mark.parametrize(
    "kwargs", [{}, dict(learning_rate=0.5, memory_size=3, scale_init_precond=False)]
)
def test_lbfgs_with_its_line_search_equals_optax_and_solves_rosenbrock(kwargs):
    (ours, our_states), (theirs, their_states) = (
        run(factory(**kwargs), 40, line_search=True) for factory in (opt.lbfgs, optax.lbfgs)
    )
    chex.assert_trees_all_close(ours, theirs, rtol=1e-6, atol=1e-7)
    chex.assert_trees_all_close(
        jax.tree.leaves(our_states), jax.tree.leaves(their_states), rtol=1e-6, atol=1e-7
    )
    chex.assert_trees_all_close(ours[-1], jnp.ones(2), atol=1e-3)


def test_lbfgs_memory_size_is_checked():
    with pytest.raises(ValueError, match="memory_size=0 is invalid"):
        opt.lbfgs(memory_size=0)


@pytest.mark.parametrize("kwargs", [{}, dict(max_learning_rate=0.01, f_min=-1.0, variant="sps+")])
def test_polyak_sgd_equals_optax_on_rosenbrock(kwargs):
    ours, theirs = (
        run(factory(**kwargs), 200, line_search=False)[0]
        for factory in (opt.polyak_sgd, optax.polyak_sgd)
    )
    chex.assert_trees_all_close(ours, theirs, rtol=1e-6, atol=1e-7)


def test_polyak_sgd_needs_the_loss_value():
    tx = opt.polyak_sgd()
    with pytest.raises(TypeError, match="value"):
        tx.update(jnp.ones(2), tx.init(jnp.zeros(2)), jnp.zeros(2))
