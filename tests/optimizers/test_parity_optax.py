"""Every optimizer follows its Optax 0.2.8 reference step for step, in its parameters and
in its optimizer state (the table in cases.py)."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.optimizers.cases import (
    CASES,
    DEFAULT_CASES,
    SAME_PATHS,
    assert_states_match,
    make_problem,
    trajectories,
)

ids = [c.id for c in CASES]
default_ids = [c.id for c in DEFAULT_CASES]


def _ours_and_reference(case, dtype=jnp.float32, *, jit=True, **kwargs):
    """``((our parameters, our states), (Optax's, Optax's))`` after each of 50 steps."""
    params, target, noise = make_problem(dtype)
    kwargs = {**case.kwargs, **kwargs}
    return trajectories(
        [case.ours(**kwargs), case.reference(**kwargs)],
        params, target, noise, jit=jit, states=True,
    )  # fmt: skip


def assert_case_states(case, ours, reference, *, rtol, atol):
    assert_states_match(ours, reference, rtol=rtol, atol=atol, names=case.state, label=case.id)


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_float32_jit_trajectory_equals_optax(case):
    (ours, our_states), (reference, reference_states) = _ours_and_reference(case)
    assert jax.tree.leaves(ours)[0].shape[0] == 50
    chex.assert_trees_all_close(ours, reference, rtol=1e-6, atol=0)
    assert_case_states(case, our_states, reference_states, rtol=1e-6, atol=0)


@pytest.mark.parametrize("name", ["adam", "rmsprop"])  # shared count; count of ours only
def test_state_comparison_catches_one_perturbed_leaf(name):
    """Scaling any one leaf of our states by 1 + 1e-5 (a step counter: adding 1) fails the
    comparison, and so does a leaf without a counterpart that the case does not declare."""
    case = next(c for c in DEFAULT_CASES if c.name == name)
    (_, ours), (_, reference) = _ours_and_reference(case)
    assert_case_states(case, ours, reference, rtol=1e-6, atol=0)
    leaves, treedef = jax.tree.flatten(ours)
    for i, leaf in enumerate(leaves):
        bumped = leaf + 1 if jnp.issubdtype(leaf.dtype, jnp.integer) else leaf * (1 + 1e-5)
        perturbed = jax.tree.unflatten(treedef, [*leaves[:i], bumped, *leaves[i + 1 :]])
        with pytest.raises(AssertionError):
            assert_case_states(case, perturbed, reference, rtol=1e-6, atol=0)
    if case.state.ours_only:
        with pytest.raises(AssertionError):
            assert_states_match(ours, reference, rtol=1, atol=1, names=SAME_PATHS)


# Op by op, Sophia's Hessian estimate and Muon's Newton–Schulz iterations took 95 s and 31 s
# on the CI's 2 cores; their jitted rows (all hyperparameter sets) cover them.
EAGER_CASES = [c for c in DEFAULT_CASES if c.name not in ("sophia", "muon")]


@pytest.mark.parametrize("case", EAGER_CASES, ids=[c.id for c in EAGER_CASES])
def test_float32_eager_trajectory_equals_optax(case):
    # Eager runs cost ~50 ms a step per optimizer on the CI's 2 cores, so only the
    # defaults run eagerly; every hyperparameter set runs under jit above.
    (ours, our_states), (reference, reference_states) = _ours_and_reference(case, jit=False)
    chex.assert_trees_all_close(ours, reference, rtol=1e-6, atol=0)
    assert_case_states(case, our_states, reference_states, rtol=1e-6, atol=0)


@pytest.mark.parametrize("case", DEFAULT_CASES, ids=default_ids)
def test_bfloat16_trajectory_equals_optax(case):
    (ours, our_states), (reference, reference_states) = _ours_and_reference(case, jnp.bfloat16)
    chex.assert_trees_all_equal_dtypes(ours, reference)
    assert jax.tree.leaves(ours)[0].dtype == jnp.bfloat16
    # XLA's CPU backend evaluates chains of bfloat16 elementwise ops in float32 inside a
    # fusion and rounds where the fusion ends; fusion boundaries depend on the whole graph
    # (our casts, Optax's jitted helpers), so the two can round at different points: a
    # few bfloat16 ulps (2^-8 ≈ 4e-3 relative) over 50 steps.
    chex.assert_trees_all_close(
        jax.tree.map(lambda x: x.astype(jnp.float32), ours),
        jax.tree.map(lambda x: x.astype(jnp.float32), reference),
        rtol=3e-2,
        atol=3e-2,
    )
    assert_case_states(case, our_states, reference_states, rtol=3e-2, atol=3e-2)


@pytest.mark.parametrize("case", DEFAULT_CASES, ids=default_ids)
def test_float64_trajectory_equals_optax(case):
    with jax.enable_x64(True):
        (ours, our_states), (reference, reference_states) = _ours_and_reference(case, jnp.float64)
        assert jax.tree.leaves(ours)[0].dtype == jnp.float64
        chex.assert_trees_all_close(ours, reference, rtol=1e-12, atol=0)
        assert_case_states(case, our_states, reference_states, rtol=1e-12, atol=0)


@settings(max_examples=6, deadline=None)
@given(
    case=st.sampled_from(CASES),
    shapes=st.lists(
        st.lists(st.integers(1, 4), min_size=0, max_size=3).map(tuple), min_size=1, max_size=3
    ),
    dtype=st.sampled_from([jnp.float32, jnp.bfloat16]),
    learning_rate=st.floats(1e-4, 0.3),
    seed=st.integers(0, 2**16),
)
def test_property_random_pytrees_dtypes_hyperparameters_equal_optax(
    case, shapes, dtype, learning_rate, seed
):
    rng = np.random.default_rng(seed)

    def tree(*lead, scale=1.0):
        return [jnp.asarray(scale * rng.standard_normal(lead + s), dtype) for s in shapes]

    params, centre, noise = tree(), tree(), tree(5, scale=0.1)
    curvature = [jnp.ones(s, dtype) for s in shapes]
    kwargs = {**case.kwargs, "learning_rate": learning_rate}
    (ours, our_states), (reference, reference_states) = trajectories(
        [case.ours(**kwargs), case.reference(**kwargs)],
        params, (centre, curvature), noise, states=True,
    )  # fmt: skip
    chex.assert_trees_all_equal_dtypes(ours, reference)
    tol = 1e-5 if dtype == jnp.float32 else 3e-2  # bfloat16: see test above
    chex.assert_trees_all_close(
        jax.tree.map(lambda x: x.astype(jnp.float32), ours),
        jax.tree.map(lambda x: x.astype(jnp.float32), reference),
        rtol=tol,
        atol=tol,
    )
    assert_case_states(case, our_states, reference_states, rtol=tol, atol=tol)
