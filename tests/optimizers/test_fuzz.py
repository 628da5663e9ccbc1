"""Property-based tests: random pytrees and hyperparameters against Optax, and invariants.

Each ``@given`` test draws its cases with Hypothesis (``pytest --hypothesis-show-statistics``
prints how many ran). Example counts are small because every new pytree shape compiles;
``HYPOTHESIS_PROFILE=thorough`` runs many more.
"""

from __future__ import annotations

import functools
import math
import os

import chex
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import HealthCheck, assume, given, settings
from optlab import optimizers as opt

from tests.optimizers.cases import CASES, assert_states_match

settings.register_profile(
    "ci", max_examples=10, deadline=None, suppress_health_check=list(HealthCheck)
)
settings.register_profile(
    "thorough", max_examples=300, deadline=None, suppress_health_check=list(HealthCheck)
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

DTYPES = {"float16": jnp.float16, "bfloat16": jnp.bfloat16, "float32": jnp.float32}
# (rtol, atol) of our updates against Optax's, per dtype.
TOLERANCES = {"float16": (1e-2, 1e-3), "bfloat16": (2e-2, 1e-2), "float32": (1e-5, 1e-7)}
TOLERANCES["float64"] = (1e-10, 1e-14)
STEPS = 3

# --------------------------------------------------------------------------- strategies

shapes = st.lists(st.integers(0, 3), min_size=0, max_size=3).map(tuple)
leaves = st.one_of(shapes, st.none())
# Nested dicts, lists and tuples of shapes (None: an empty subtree, as Optax allows).
tree_shapes = st.recursive(
    leaves,
    lambda children: st.one_of(
        st.dictionaries(st.sampled_from("abcd"), children, min_size=1, max_size=3),
        st.lists(children, min_size=1, max_size=3),
        st.tuples(children, children),
    ),
    max_leaves=6,
).map(lambda tree: {"a": tree} if tree is None else tree)  # params=None means "not given"
# Hyperparameter ranges by name; names not listed keep the case's value.
DECAYS = st.floats(0.0, 0.999)
HYPERPARAMETERS = {
    "learning_rate": st.floats(1e-4, 1.0),
    "momentum": DECAYS,
    "beta": DECAYS,
    "decay": DECAYS,
    "rho": DECAYS,
    "b1": DECAYS,
    "b2": DECAYS,
    "eps": st.floats(1e-8, 1e-2),
    "eps_root": st.floats(0.0, 1e-6),
    "initial_accumulator_value": st.floats(0.0, 1.0),
    "initial_scale": st.floats(0.0, 1.0),
    "weight_decay": st.floats(0.0, 0.1),
    "threshold": st.floats(2.0, 6.0),
}


@st.composite
def cases_with_hyperparameters(draw):
    """A parity row with each numeric hyperparameter redrawn from its valid range."""
    case = draw(st.sampled_from(CASES))
    kwargs = dict(case.kwargs)
    for name, value in case.kwargs.items():
        if name in HYPERPARAMETERS and isinstance(value, float):
            kwargs[name] = draw(HYPERPARAMETERS[name])
    if case.name == "adagrad" and kwargs.get("initial_accumulator_value", 1) == 0:
        kwargs["eps"] = max(kwargs.get("eps", 1e-7), 1e-7)  # √(0 + ε) as the only guard
    return case, kwargs


def make_tree(shape_tree, dtype, seed: int, steps: int = 0):
    """Standard-normal leaves of the given shapes (a leading ``steps`` axis if > 0)."""
    rng = np.random.default_rng(seed)
    lead = (steps,) if steps else ()

    def leaf(shape):
        return jnp.asarray(rng.standard_normal(lead + shape), dtype)

    return jax.tree.map(leaf, shape_tree, is_leaf=lambda x: isinstance(x, tuple) and all(
        isinstance(d, int) for d in x
    ))  # fmt: skip


def run_updates(tx, params, grads):
    """The updates of ``STEPS`` steps (gradients ``grads[t]``), as a list, and the optimizer
    states after each step, stacked on axis 0."""
    state = tx.init(params)
    out, states = [], []
    for t in range(STEPS):
        updates, state = tx.update(jax.tree.map(lambda g, t=t: g[t], grads), state, params)
        params = optax.apply_updates(params, updates)
        out.append(updates)
        states.append(state)
    return out, jax.tree.map(lambda *leaves: jnp.stack(leaves), *states)


def reference_accepts(case, shape_tree) -> bool:
    """Optax's muon divides by a matrix's first dimension: a (0, n) leaf raises
    ZeroDivisionError there (ours returns its empty update); Optax's galore fails on None
    leaves."""
    shapes = jax.tree.leaves(shape_tree, is_leaf=lambda x: isinstance(x, tuple))
    sizes = [math.prod(s) for s in shapes if all(isinstance(d, int) for d in s)]
    if case.name in ("prodigy", "dadapt_adamw"):  # no elements: Optax's d is 0/0 (ours keeps d)
        return any(size > 0 for size in sizes)
    if case.name == "sm3":  # Optax's sm3 takes a max over a zero-size axis (ours starts at 0)
        return all(size > 0 for size in sizes)
    if case.name == "galore":  # Optax's galore reads a None leaf's dtype; ours passes it on
        return None not in jax.tree.leaves(shape_tree, is_leaf=lambda x: x is None)
    return case.name != "muon" or not any(len(s) == 2 and s[0] == 0 for s in shapes)


def assert_parity(case, kwargs, shape_tree, dtype_name, seed):
    assume(reference_accepts(case, shape_tree))
    # float16: Prodigy's d_lr·d·g (≈ 1e-12 at first) underflows, so ‖s‖₁ = 0 (see above)
    assume(case.name != "prodigy" or dtype_name != "float16")
    dtype = jnp.float64 if dtype_name == "float64" else DTYPES[dtype_name]
    params = make_tree(shape_tree, dtype, seed)
    grads = make_tree(shape_tree, dtype, seed + 1, steps=STEPS)
    both = jax.jit(
        lambda p, g: (
            run_updates(case.ours(**kwargs), p, g),
            run_updates(case.reference(**kwargs), p, g),
        )
    )
    (ours, our_states), (reference, reference_states) = both(params, grads)
    rtol, atol = TOLERANCES[dtype_name]
    assert_states_match(
        our_states, reference_states, rtol=rtol, atol=atol, names=case.state, label=case.id
    )
    for step, (u, r) in enumerate(zip(ours, reference, strict=True)):
        chex.assert_trees_all_equal_structs(u, r)
        if kwargs.get("mu_dtype") is not None:
            # Optax's update takes the promoted dtype of g and μ (float16 with a bfloat16 μ
            # gives float32); ours comes back in the gradient's dtype (docs/optimizers.md).
            chex.assert_trees_all_equal_dtypes(u, jax.tree.map(lambda g: g[0], grads))
            r = jax.tree.map(lambda a, b: a.astype(b.dtype), r, u)
        chex.assert_trees_all_equal_dtypes(u, r)
        chex.assert_trees_all_close(
            u, r, rtol=rtol, atol=atol, custom_message=f"{case.id} {kwargs} step {step}"
        )


# --------------------------------------------------------------------------- parity


@given(
    cases_with_hyperparameters(),
    tree_shapes,
    st.sampled_from(sorted(DTYPES)),
    st.integers(0, 2**16),
)
def test_random_pytrees_and_hyperparameters_match_optax(case_kwargs, shape_tree, dtype, seed):
    case, kwargs = case_kwargs
    assert_parity(case, kwargs, shape_tree, dtype, seed)


@settings(max_examples=4)
@given(cases_with_hyperparameters(), tree_shapes, st.integers(0, 2**16))
def test_random_pytrees_match_optax_in_float64(case_kwargs, shape_tree, seed):
    case, kwargs = case_kwargs
    with jax.enable_x64(True):
        assert_parity(case, kwargs, shape_tree, "float64", seed)


# --------------------------------------------------------------------------- invariants

T, N = 8, 16


def _gradients(seed, log_scale):
    """(T, N) gradients spanning several orders of magnitude, some exact zeros."""
    rng = np.random.default_rng(seed)
    g = rng.standard_normal((T, N)) * 10.0 ** rng.uniform(-log_scale, log_scale, (T, N))
    g[rng.random((T, N)) < 0.1] = 0.0
    return jnp.asarray(g, jnp.float32)


@functools.cache
def _compiled_trajectory(make_tx):
    """``(hparams, grads) -> (updates, states)`` of every step, jitted once per ``make_tx``."""

    def run(hparams, grads):
        tx = make_tx(**hparams)
        params = jnp.zeros(grads.shape[1:], grads.dtype)

        def step(state, g):
            updates, state = tx.update(g, state, params)
            return state, (updates, state)

        return jax.lax.scan(step, tx.init(params), grads)[1]

    return jax.jit(run)


def _trajectory(make_tx, hparams, grads):
    """Updates and states of every step; hyperparameters traced (one compilation per test)."""
    hparams = {k: jnp.asarray(v, jnp.float32) for k, v in hparams.items()}
    return _compiled_trajectory(make_tx)(hparams, grads)


def _rss(i, e):
    return opt.scale_by_rss(initial_accumulator_value=i, eps=e)


def _amsgrad(b1, b2):
    return opt.scale_by_amsgrad(b1=b1, b2=b2)


def _adamax(lr, b1, b2):
    return opt.adamax(learning_rate=lr, b1=b1, b2=b2)


def _lion(lr, b1, b2):
    return opt.lion(learning_rate=lr, b1=b1, b2=b2, weight_decay=0.0)


seeds = st.integers(0, 2**16)
log_scales = st.floats(0.0, 6.0)


# Initial values 0 or normal float32 numbers: XLA flushes subnormals to zero (a subnormal
# initial accumulator, 9.8e-42, became 0 where the gradient was 0; found in a test run).
initial_accumulators = st.one_of(st.just(0.0), st.floats(float(np.finfo(np.float32).tiny), 1.0))


@settings(max_examples=40)
@given(seeds, log_scales, initial_accumulators, st.floats(1e-10, 1e-3))
def test_adagrad_accumulator_never_decreases(seed, log_scale, initial, eps):
    _, states = _trajectory(
        _rss,
        {"i": initial, "e": eps},
        _gradients(seed, log_scale),
    )
    s = np.asarray(states.sum_of_squares)
    assert np.all(s[0] >= np.float32(initial)) and np.all(np.diff(s, axis=0) >= 0)


def _debias_tolerance(b2: float) -> np.ndarray:
    """Relative error of float32 ``v / (1 − β₂ᵗ)`` against float64, per step ``t``.

    ``β₂ᵗ`` and ``1 − β₂ᵗ`` are each rounded in float32 (relative error ≤ ε₃₂ = 2⁻²³,
    a few operations); the subtraction turns ``β₂ᵗ``'s absolute error ``ε₃₂·β₂ᵗ`` into
    a relative error ``ε₃₂·β₂ᵗ/(1 − β₂ᵗ)``, which is ≈ 1e-4 for β₂ = 0.999 at t = 1 (so
    a fixed 1e-6 tolerance fails). Four ulps of each kind bound it.
    """
    eps = float(np.finfo(np.float32).eps)
    power = np.float64(np.float32(b2)) ** np.arange(1, T + 1)
    return 4 * eps * (1 + power / np.maximum(1 - power, np.finfo(np.float64).tiny))


@settings(max_examples=40)
@given(seeds, log_scales, DECAYS, DECAYS)
def test_amsgrad_max_never_decreases(seed, log_scale, b1, b2):
    """``v_max_t = max(v_max_{t−1}, v̂_t)``: exactly monotone in the state itself, and
    ``v̂_t ≤ v_max_t`` up to the float32 rounding of the bias correction."""
    _, states = _trajectory(
        _amsgrad,
        {"b1": b1, "b2": b2},
        _gradients(seed, log_scale),
    )
    nu_max = np.asarray(states.nu_max)
    assert np.all(np.diff(nu_max, axis=0) >= 0)  # exact: the state's accumulator
    power = np.float64(np.float32(b2)) ** np.arange(1, T + 1)
    nu_hat = np.asarray(states.nu, np.float64) / (1 - power)[:, None]
    assert np.all(nu_max >= nu_hat * (1 - _debias_tolerance(b2))[:, None])


@settings(max_examples=40)
@given(seeds, log_scales, st.floats(1e-4, 1.0), st.floats(0.0, 0.99), st.floats(0.5, 0.9999))
def test_adamax_step_is_bounded_by_alpha(seed, log_scale, alpha, b1, b2):
    """Kingma & Ba, Sec. 7.1: |Δ| ≤ α. Exactly, from m and u_∞'s definitions::

    |Δ_t| ≤ α (1 − β₁) Σ_{j<t} (β₁/β₂)^j / (1 − β₁ᵗ)

    which is α when β₂ = 1 and at most a factor (1 − β₁)/(1 − β₁/β₂) / (1 − β₁ᵗ)·(...)
    above it otherwise (≈ 1.009 for β₁ = 0.9, β₂ = 0.999).
    """
    updates, _ = _trajectory(
        _adamax,
        {"lr": alpha, "b1": b1, "b2": b2},
        _gradients(seed, log_scale),
    )
    t = np.arange(1, T + 1)
    ratio = b1 / b2
    sums = np.cumsum(ratio ** np.arange(T))
    bound = alpha * (1 - b1) * sums / (1 - b1**t)
    assert np.all(np.abs(np.asarray(updates, np.float64)) <= bound[:, None] * (1 + 1e-5))


@settings(max_examples=40)
@given(seeds, log_scales, st.floats(1e-5, 1.0), DECAYS, DECAYS)
def test_lion_update_magnitude_is_exactly_lr_or_zero(seed, log_scale, lr, b1, b2):
    updates, _ = _trajectory(
        _lion,
        {"lr": lr, "b1": b1, "b2": b2},
        _gradients(seed, log_scale),
    )
    magnitude = np.abs(np.asarray(updates))
    assert np.all((magnitude == np.float32(lr)) | (magnitude == 0))
    assert np.any(magnitude == np.float32(lr))


@pytest.mark.parametrize("name", ["adam", "sgd", "lion"])
def test_zero_size_and_none_leaves_pass_through(name):
    params = {"empty": jnp.zeros((0, 3)), "none": None, "w": jnp.ones(2)}
    tx = opt.get(name, learning_rate=0.1)
    updates, _ = tx.update(params, tx.init(params), params)
    assert updates["none"] is None and updates["empty"].shape == (0, 3)
    assert jnp.all(jnp.isfinite(updates["w"]))
