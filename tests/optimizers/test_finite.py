"""Non-finite protection (``skip_non_finite``) and what each optimizer does with zero, huge
and infinite gradients (the tables in docs/reliability.md)."""

from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from optlab import optimizers as opt
from optlab.optimizers.finite import SkipNonFiniteState, all_finite, skip_non_finite

NAN, INF = float("nan"), float("inf")

# --------------------------------------------------------------------------- skip_non_finite


def _gradient_sequence():
    """Finite, NaN, Inf, then 3 bad steps in a row (past max_consecutive_errors=2)."""
    good = {"w": jnp.array([0.5, -1.0, 2.0]), "b": jnp.array(0.3)}
    bad_w = {"w": jnp.array([NAN, 1.0, 1.0]), "b": jnp.array(0.1)}
    bad_b = {"w": jnp.array([1.0, 1.0, 1.0]), "b": jnp.array(INF)}
    return [good, bad_w, good, bad_b, good, bad_w, bad_w, bad_w, good]


@pytest.mark.parametrize("name", ["adam", "sgd", "lion"])
def test_skip_non_finite_equals_optax_apply_if_finite(name):
    inner = opt.get(name, learning_rate=0.1)
    ours, reference = skip_non_finite(inner, 2), optax.apply_if_finite(inner, 2)
    params = {"w": jnp.ones(3), "b": jnp.zeros(())}
    ours_state, ref_state = ours.init(params), reference.init(params)
    ours_update, ref_update = jax.jit(ours.update), jax.jit(reference.update)
    for step, grads in enumerate(_gradient_sequence()):
        u, ours_state = ours_update(grads, ours_state, params)
        r, ref_state = ref_update(grads, ref_state, params)
        chex.assert_trees_all_equal(u, r, custom_message=f"step {step}")
        chex.assert_trees_all_equal(ours_state.inner_state, ref_state.inner_state)
        assert int(ours_state.consecutive_skips) == int(ref_state.notfinite_count)
        assert int(ours_state.total_skips) == int(ref_state.total_notfinite)
        assert bool(ours_state.last_finite) == bool(ref_state.last_finite)
    assert int(ours_state.total_skips) == 5


def test_skipped_step_changes_nothing_and_gives_up_after_max():
    tx = skip_non_finite(opt.adam(0.1), max_consecutive_errors=1)
    params = jnp.ones(2)
    state = tx.init(params)
    _, state = tx.update(jnp.array([1.0, 2.0]), state, params)
    before = state.inner_state
    u, state = tx.update(jnp.array([NAN, 2.0]), state, params)
    assert isinstance(state, SkipNonFiniteState)
    np.testing.assert_array_equal(u, 0.0)
    chex.assert_trees_all_equal(state.inner_state, before)
    assert int(state.consecutive_skips) == 1 and int(state.total_skips) == 1
    u, state = tx.update(jnp.array([NAN, 2.0]), state, params)  # 2nd in a row: gives up
    assert np.isnan(np.asarray(u)[0]) and int(state.inner_state[0].count) == 2


def test_skip_non_finite_under_vmap_and_on_empty_trees():
    tx = skip_non_finite(opt.sgd(1.0))
    grads = jnp.array([[1.0, 2.0], [INF, 0.0]])
    updates, states = jax.vmap(lambda g: tx.update(g, tx.init(g)))(grads)
    np.testing.assert_array_equal(updates, [[-1.0, -2.0], [0.0, 0.0]])
    np.testing.assert_array_equal(states.total_skips, [0, 1])
    assert bool(all_finite({})) and bool(all_finite({"x": None}))
    u, _ = tx.update({}, tx.init({}))
    assert u == {}


def test_skip_non_finite_validates_max_consecutive_errors():
    with pytest.raises(ValueError, match="max_consecutive_errors=-1"):
        skip_non_finite(opt.sgd(0.1), -1)


# --------------------------------------------------------------------------- edge gradients
#
# Documented behaviour (docs/reliability.md, "Optimizers at the edges"). A new optimizer
# must be added here and there.

DECOUPLED_DECAY = {"adamw", "lion", "adamaxw", "nadamw"}  # move by -lr·λ·θ even when g = 0
# Yogi's moments start at 1e-6 (Optax's), so with g = 0 it still steps by ≈ −lr·1e-6/(1e-3 + ε).
INITIAL_MOMENTS = {"yogi"}
# Fromage shrinks θ by 1/√(1 + lr²) every step: u = (1/√(1 + lr²) − 1) θ where g = 0.
SHRINK = {"fromage"}
# noisy_sgd adds Gaussian noise of standard deviation √(0.01/t^0.55) ≤ 0.1 to the gradient.
NOISE = {"noisy_sgd"}
# MADGRAD's step is x_{k+1} − x_k with x_{k+1} = (1 − β) z + β x_k (Optax's form): where
# g = 0, z = x₀ = x_k and the difference is float32 rounding, below one ulp of θ = 1.
PARAMETER_DIFFERENCE = {"madgrad", "madgrad_paper"}
# Update for one gradient of 1e30 in float32: where g² overflows to +inf the adaptive
# denominators are +inf and the step is 0 (the parameter then stays frozen: v stays inf).
HUGE = {
    "vanishes": {
        "adabelief", "adadelta", "adadelta_paper", "adagrad", "adagrad_paper", "adam",
        "adam_paper_efficient", "adamw", "amsgrad", "amsgrad_paper", "lamb", "nadam", "rmsprop",
        "muon",  # vectors go to its AdamW
        "schedule_free_adamw",
        "madgrad", "madgrad_paper", "dog", "dowg", "cocob", "dadapt_adamw",
        "galore",  # vectors go to its Adam
        "acprop",  # its first step is lr·g (no history yet); then 0
    },
    "bounded by lr": {"adamax", "adamax_paper", "lion", "adopt"},  # adopt: under jit (docs)
    "bounded by lr (no square is taken)": {"sign_sgd", "signum", "adamaxw", "fromage"},
    "Δ sign(g), Δ₀ = lr growing by η⁺ = 1.2 a step (one call late)": {"rprop"},
    "vanishes (an adaptive or per-layer norm is ∞)": {
        "nadamw", "adan", "optimistic_adam", "optimistic_adam_v2", "novograd", "lars",
    },
    "nan (Yogi's v − (1 − β₂) sign(v − g²) g² is ∞ − ∞ from the second step)": {"yogi"},
    "huge, like sgd": {"noisy_sgd", "optimistic_gradient_descent"},
    "vanishes, like adam": {"ademamix", "prodigy"},
    "nan (its second moment is g² + β₂(n − g²) = ∞ − ∞)": {"simplified_ademamix"},
    "huge": {"sgd", "sgdm", "momentum", "nesterov", "radam", "schedule_free_sgd"},
}  # fmt: skip
# Update of the elements where g = ±inf (first step).
INFINITE = {
    "nan": {
        "adabelief", "adadelta", "adadelta_paper", "adagrad", "adagrad_paper", "adam",
        "adam_paper_efficient", "adamw", "amsgrad", "amsgrad_paper", "adamax", "adamax_paper",
        "nadam", "rmsprop",
        "muon",  # vectors go to its AdamW
        "schedule_free_adamw",
        "madgrad", "madgrad_paper", "dog", "dowg", "cocob", "dadapt_adamw", "galore",
    },
    "-inf·sign(g)": {"sgd", "sgdm", "momentum", "nesterov", "radam", "schedule_free_sgd"},
    "-inf·sign(g) (first step: its denominator holds no gradient yet)": {"acprop"},
    "-lr·sign(g)": {"lion", "sign_sgd", "signum"},
    "nan, and 0 in the rest of the leaf (its norm is ∞)": {"novograd", "lars"},
    "-inf·sign(g), like sgd": {"noisy_sgd"},
    "0 (Optax's rprop applies each step one call late)": {"rprop"},
    "nan everywhere (trust ratio)": {"lamb"},
    "0 (the first gradient only sets v)": {"adopt"},
    "nan, like adam": {
        "ademamix", "simplified_ademamix",
        "yogi", "adamaxw", "nadamw", "adan", "optimistic_gradient_descent", "optimistic_adam",
        "optimistic_adam_v2", "fromage",
    },
    "nan everywhere (⟨g, θ₀ − θ⟩ = ∞·0 makes d NaN)": {"prodigy"},
}  # fmt: skip


def _category(table, name):
    found = [category for category, names in table.items() if name in names]
    assert found, f"document {name!r}'s behaviour in docs/reliability.md and in this table"
    return found[0]


EDGE_GRADIENTS = {
    "zero": np.zeros(4),
    "huge": np.full(4, 1e30),
    "infinite": np.array([INF, -INF, 1.0, 0.0]),
    "non-finite": np.array([INF, -INF, 1.0, NAN]),
}


@functools.cache
def _edge_updates(name):
    """lr, and per gradient kind: the updates of 3 steps of ``name`` and of it wrapped in
    ``skip_non_finite`` (one jitted, vmapped function per optimizer), and whether the
    wrapped state stayed unchanged."""
    lr = opt.info(name).suggested_learning_rate
    tx = opt.get(name, learning_rate=lr)
    safe = skip_non_finite(tx)

    def run(tx, g):
        params = jnp.ones(4)
        state = tx.init(params)
        first = state
        out = []
        for _ in range(3):
            u, state = tx.update(g, state, params)
            out.append(u)
        return jnp.stack(out), first, state

    @jax.jit
    def all_kinds(grads):
        plain = jax.vmap(lambda g: run(tx, g)[0])(grads)

        def protected(g):
            u, first, last = run(safe, g)
            same = jax.tree.map(lambda a, b: jnp.all(a == b), first.inner_state, last.inner_state)
            return u, jnp.all(jnp.stack(jax.tree.leaves(same) or [jnp.array(True)]))

        return plain, jax.vmap(protected)(grads)

    kinds = list(EDGE_GRADIENTS)
    grads = jnp.asarray(np.stack([EDGE_GRADIENTS[k] for k in kinds]), jnp.float32)
    plain, (protected, unchanged) = jax.device_get(all_kinds(grads))
    return lr, (
        dict(zip(kinds, plain, strict=True)),
        {k: (protected[i], unchanged[i]) for i, k in enumerate(kinds)},
    )


def _updates(name, kind):
    lr, (plain, _) = _edge_updates(name)
    return lr, plain[kind]


@pytest.mark.parametrize("name", opt.available())
def test_zero_gradients_give_a_zero_finite_step(name):
    """No 0/0: Adagrad, RMSProp, Adam, ... denominators are guarded by ε or a where."""
    _, updates = _updates(name, "zero")
    for u in updates:
        assert np.all(np.isfinite(u))
        if name in DECOUPLED_DECAY or name in INITIAL_MOMENTS:
            assert np.all(np.abs(u) < 1e-5) and np.all(u < 0)  # -lr·λ·θ with θ = 1
        elif name in SHRINK:
            lr = opt.info(name).suggested_learning_rate
            np.testing.assert_allclose(u, 1 / np.sqrt(1 + lr**2) - 1, rtol=1e-2)
        elif name in NOISE:
            lr = opt.info(name).suggested_learning_rate
            assert np.all(np.abs(u) < lr * 0.1 * 6) and np.any(u != 0)
        elif name in PARAMETER_DIFFERENCE:
            assert np.all(np.abs(u) <= np.finfo(np.float32).eps)
        else:
            np.testing.assert_array_equal(u, 0.0)


@pytest.mark.parametrize("name", opt.available())
def test_huge_float32_gradients(name):
    lr, (*_, u) = _updates(name, "huge")  # after 3 steps
    category = _category(HUGE, name)
    if category.startswith("nan"):
        assert np.all(np.isnan(u))
        return
    assert np.all(np.isfinite(u))
    magnitude = np.abs(u)
    if category.startswith("vanishes"):
        assert np.all(magnitude < 1e-6)
    elif category.startswith("Δ sign(g)"):
        assert np.all(magnitude <= lr * 1.2**2 * 1.01) and np.all(magnitude > 0)
    elif category.startswith("bounded by lr"):
        assert np.all(magnitude <= lr * 1.01) and np.all(magnitude > 0)
    else:
        assert np.all(magnitude > 1e20)


@pytest.mark.parametrize("name", opt.available())
def test_infinite_gradients(name):
    lr, (u, *_) = _updates(name, "infinite")
    category = _category(INFINITE, name)
    if category.startswith("nan everywhere"):
        assert np.all(np.isnan(u))
        return
    assert np.all(np.isfinite(u[2:]))  # the finite elements are unaffected (element-wise)
    if category.startswith("nan,") or category == "nan":
        assert np.all(np.isnan(u[:2]))
    elif category.startswith("-inf·sign(g)"):
        np.testing.assert_array_equal(u[:2], [-INF, INF])
    elif category.startswith("0 "):
        np.testing.assert_array_equal(u, 0.0)
    else:
        np.testing.assert_allclose(u[:2], [-lr, lr], rtol=0.01)


@pytest.mark.parametrize("name", opt.available())
def test_skip_non_finite_protects_every_optimizer_from_infinite_gradients(name):
    _, (_, protected) = _edge_updates(name)
    for kind in ("infinite", "non-finite"):
        updates, state_unchanged = protected[kind]
        np.testing.assert_array_equal(updates, 0.0)
        assert state_unchanged
