"""The registry, hyperparameter checks and the transformation contract (composition,
inject_hyperparams, schedules, jit/vmap, dtypes, empty pytrees, None leaves, complex)."""

import inspect

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from optlab import optimizers as opt

from tests.optimizers.cases import DEFAULT_CASES, assert_states_match, make_problem, trajectories

COURSE = ["sgd", "sgdm", "momentum", "nesterov", "adagrad", "rmsprop", "adadelta", "adam"]
EXTENDED = ["adamw", "adamax", "nadam", "amsgrad", "lion", "adabelief", "radam", "lamb"]
OPTAX_ALIASES = ["sgd", "adagrad", "rmsprop", "adadelta", "adam"] + EXTENDED


def build(name, **kwargs):
    return opt.get(name, learning_rate=opt.info(name).suggested_learning_rate, **kwargs)


# --- registry -------------------------------------------------------------------------


def test_available_is_sorted_and_holds_the_course_and_extended_sets():
    names = opt.available()
    assert names == sorted(names)
    assert set(COURSE + EXTENDED) <= set(names)


@pytest.mark.parametrize("name", opt.available())
def test_info_describes_the_factory(name):
    info = opt.info(name)
    assert isinstance(info, opt.OptimizerInfo) and info.name == name
    assert info.factory is opt.get_factory(name)
    assert next(iter(inspect.signature(info.factory).parameters)) == "learning_rate"
    assert info.family in {"sgd", "adaptive", "adam", "sign", "layerwise", "parameter-free"}
    assert info.suggested_learning_rate > 0 and info.reference
    # The listed defaults are the factory's own: spelling them out changes no update.
    spelled = {k: v for k, v in info.defaults.items() if k != "learning_rate"}
    lr = info.suggested_learning_rate
    params, grads = {"w": jnp.linspace(-1.0, 1.0, 5)}, {"w": jnp.linspace(2.0, -1.0, 5)}
    implicit, explicit = info.factory(lr), info.factory(lr, **spelled)
    implicit_state, explicit_state = implicit.init(params), explicit.init(params)
    for _ in range(3):
        implicit_updates, implicit_state = implicit.update(grads, implicit_state, params)
        explicit_updates, explicit_state = explicit.update(grads, explicit_state, params)
        chex.assert_trees_all_equal(implicit_updates, explicit_updates)


def test_info_lists_adam_defaults_of_the_paper_and_optax():
    assert opt.info("adam").defaults == {
        "b1": 0.9, "b2": 0.999, "eps": 1e-8, "eps_root": 0.0, "mu_dtype": None, "nesterov": False,
    }  # fmt: skip


@pytest.mark.parametrize("name", OPTAX_ALIASES)
def test_defaults_equal_optax_0_2_8(name):
    ours = opt.info(name).defaults
    theirs = {
        k: p.default
        for k, p in inspect.signature(getattr(optax, name)).parameters.items()
        if p.default is not p.empty
    }
    if name == "adadelta":  # Optax's learning_rate=None climbs; ours descends with 1.0
        assert theirs.pop("learning_rate") is None and ours["learning_rate"] == 1.0
    if name == "nadam":  # optax.nadam is functools.partial(adam, nesterov=True)
        assert theirs.pop("nesterov") is True
    if name == "sgd":  # ours adds nothing; Optax's accumulator_dtype is kept
        assert "accumulator_dtype" in ours
    assert {k: ours[k] for k in theirs} == theirs


def test_momentum_and_nesterov_entries_are_sgd_with_momentum():
    assert opt.info("momentum").defaults == {"momentum": 0.9}
    assert opt.info("nesterov").defaults == {"momentum": 0.9}
    assert opt.info("sgdm").defaults == {"beta": 0.9}


# GaLore's state is r×n (or m×r) Adam moments and an m×r (or n×r) projector per matrix
# (≤ 3 per parameter, at rank = min(m, n) on square matrices); its registry count is that
# of the leaves it does not project (Adam's 2).
LOW_RANK = {"galore"}


@pytest.mark.parametrize("name", opt.available())
def test_state_per_param_counts_parameter_sized_buffers(name):
    # Two matrices (Muon's count is that of its matrices; its vectors go to AdamW); float
    # scalars (Schedule-Free's weight sum, Prodigy's estimate) are not parameter-sized.
    params = {"w": jnp.ones((3, 4)), "b": jnp.ones((1, 4))}
    state = build(name).init(params)
    floats = [x for x in jax.tree.leaves(state) if jnp.issubdtype(x.dtype, jnp.floating) and x.ndim]
    if name in LOW_RANK:  # its state is 36 here (rank ≥ min(m, n)): ≤ 3 per parameter
        assert 16 < sum(x.size for x in floats) <= 3 * 16
        state = build(name).init({"b": jnp.ones(16)})
        floats = [x for x in jax.tree.leaves(state) if jnp.issubdtype(x.dtype, jnp.floating)]
        assert sum(x.size for x in floats if x.ndim) == opt.info(name).state_per_param * 16
        return
    assert sum(x.size for x in floats) == opt.info(name).state_per_param * 16


def test_get_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match="unknown optimizer 'adamm'.*adam, adam_paper"):
        opt.get("adamm", learning_rate=0.1)
    with pytest.raises(ValueError, match="adamm"):
        opt.info("adamm")


def test_get_unknown_hyperparameter_is_named():
    with pytest.raises(ValueError, match=r"unknown hyperparameter\(s\) beta1, lr for 'adam'"):
        opt.get("adam", lr=0.1, beta1=0.9)


def test_get_builds_the_same_transformation_as_the_factory():
    params, grads = {"w": jnp.linspace(-1.0, 1.0, 5)}, {"w": jnp.linspace(1.0, 2.0, 5)}
    by_name = opt.get("nesterov", learning_rate=0.05)
    direct = opt.sgd(0.05, momentum=0.9, nesterov=True)
    state_a, state_b = by_name.init(params), direct.init(params)
    for _ in range(2):
        (updates_a, state_a), (updates_b, state_b) = (
            by_name.update(grads, state_a, params),
            direct.update(grads, state_b, params),
        )
        chex.assert_trees_all_equal(updates_a, updates_b)


# --- hyperparameter checks ------------------------------------------------------------

BAD = [
    (opt.adam, dict(learning_rate=-1e-3), "learning_rate", "-0.001"),
    (opt.adam, dict(learning_rate=1e-3, b1=1.0), "b1", "1.0"),
    (opt.adam, dict(learning_rate=1e-3, b2=-0.1), "b2", "-0.1"),
    (opt.adam, dict(learning_rate=1e-3, eps=-1e-8), "eps", "-1e-08"),
    (opt.adamw, dict(learning_rate=1e-3, weight_decay=-0.1), "weight_decay", "-0.1"),
    (opt.sgd, dict(learning_rate=0.1, momentum=1.5), "momentum", "1.5"),
    (opt.sgdm, dict(learning_rate=0.1, beta=1.0), "beta", "1.0"),
    (opt.rmsprop, dict(learning_rate=0.1, decay=1.0), "decay", "1.0"),
    (opt.adadelta, dict(rho=1.2), "rho", "1.2"),
    (opt.adadelta, dict(learning_rate=None), "learning_rate", "None"),
    (opt.adagrad, dict(learning_rate=0.1, initial_accumulator_value=-1), "initial_acc", "-1"),
    (opt.lion, dict(learning_rate=0.1, b2=1.0), "b2", "1.0"),
    (opt.radam, dict(learning_rate=0.1, threshold=float("nan")), "threshold", "nan"),
    (opt.adam, dict(learning_rate=np.array([1e-3, -1e-3])), "learning_rate", "-0.001"),
]


@pytest.mark.parametrize("factory, kwargs, arg, value", BAD, ids=[f"{a}={v}" for *_, a, v in BAD])
def test_bad_hyperparameter_raises_naming_argument_and_value(factory, kwargs, arg, value):
    with pytest.raises(ValueError) as error:
        factory(**kwargs)
    assert arg in str(error.value) and value in str(error.value)


def test_traced_hyperparameters_and_schedules_are_not_checked():
    g = {"w": jnp.ones(3)}

    @jax.jit
    def update(learning_rate, b1):
        tx = opt.adam(learning_rate, b1=b1)
        return tx.update(g, tx.init(g))[0]

    # -1 would be refused if concrete; traced it cannot be checked and must pass.
    assert update(-1.0, 0.5)["w"].shape == (3,)
    assert jax.vmap(update, in_axes=(0, None))(jnp.array([-1.0, 1.0]), 0.5)["w"].shape == (2, 3)
    opt.adam(lambda count: -1.0)  # schedules are not called at construction


# --- composition, schedules, inject_hyperparams, vmap -----------------------------------


def test_chain_with_clipping_and_schedule_equals_optax():
    schedule = optax.cosine_decay_schedule(0.1, decay_steps=30)
    params, target, noise = make_problem()
    (ours, our_states), (theirs, their_states) = trajectories(
        [
            optax.chain(optax.clip_by_global_norm(1.0), opt.adam(schedule)),
            optax.chain(optax.clip_by_global_norm(1.0), optax.adam(schedule)),
        ],
        params,
        target,
        noise,
        states=True,
    )
    chex.assert_trees_all_close(ours, theirs, rtol=1e-6, atol=0)
    # Leaf paths agree: the Adam moments and count, the schedule's count.
    assert_states_match(our_states, their_states, rtol=1e-6, atol=0)


# rprop's learning rate is the initial step size Δ₀, held in its state from init on (see
# the test below it); every other optimizer scales its step by the learning rate.
INITIAL_STEP_SIZE_ONLY = {"rprop"}


# Shape-setting integers that inject_hyperparams must not trace (as for Optax's galore).
STATIC_ARGS = {"galore": ("rank", "update_proj_gap")}
# Optax's madgrad (and the authors' code) weights its sums by γ + ε, so γ = 0 still moves:
# the first step is −(1 − β) ε g / (ε^⅓ |g|^⅔ + ε), below (1 − β) ε^⅔ |g|^⅓ (β = 0.9, ε = 1e-6).
EPS_IN_LEARNING_RATE = {"madgrad"}


# ADOPT's first gradient only sets its second moment (a zero step at any learning rate);
# contrib_contracts::adopt_learning_rate_is_injected_at_run_time takes two steps.
ZERO_FIRST_STEP = {"adopt"}


def test_inject_hyperparams_changes_learning_rate_at_run_time_without_recompiling():
    names = [n for n in opt.available() if n not in INITIAL_STEP_SIZE_ONLY]
    params = {"w": jnp.linspace(-1.0, 1.0, 6)}
    grads = {"w": jnp.linspace(0.5, -0.5, 6)}
    txs = [
        optax.inject_hyperparams(opt.get_factory(n), static_args=STATIC_ARGS.get(n, ()))(
            learning_rate=opt.info(n).suggested_learning_rate
        )
        for n in names
    ]
    traces = []

    @jax.jit
    def step(states):
        traces.append(1)
        return [tx.update(grads, s, params) for tx, s in zip(txs, states, strict=True)]

    states = [tx.init(params) for tx in txs]
    first = step(states)
    for name, (updates, _) in zip(names, first, strict=True):
        assert bool(jnp.any(updates["w"] != 0)) or name in ZERO_FIRST_STEP, name
    for s in states:
        s.hyperparams["learning_rate"] = jnp.zeros_like(s.hyperparams["learning_rate"])
    second = step(states)
    assert len(traces) == 1
    for name, (updates, _) in zip(names, second, strict=True):
        if name in EPS_IN_LEARNING_RATE:
            # plus a few float32 ulps of |θ| ≤ 1: the step is (1 − β) z + β θ − θ
            bound = 0.1 * 1e-6 ** (2 / 3) * jnp.abs(grads["w"]) ** (1 / 3)
            bound = bound + 4 * jnp.finfo(jnp.float32).eps
            assert bool(jnp.all((updates["w"] != 0) & (jnp.abs(updates["w"]) <= bound))), name
            continue
        chex.assert_trees_all_equal(updates, {"w": jnp.zeros(6)}, custom_message=name)


def test_rprop_learning_rate_is_the_initial_step_size_held_in_the_state():
    tx = optax.inject_hyperparams(opt.rprop)(learning_rate=0.1)
    params, grads = jnp.zeros(3), jnp.array([1.0, -2.0, 0.5])
    state = tx.init(params)
    state.hyperparams["learning_rate"] = jnp.zeros_like(state.hyperparams["learning_rate"])
    first, state = tx.update(grads, state, params)
    second, state = tx.update(grads, state, params)
    # Optax 0.2.8's rprop applies each step one call late: nothing, then Δ₀ sign(g) with
    # Δ₀ = 0.1 from init (the learning rate set to 0 afterwards changes nothing).
    chex.assert_trees_all_equal(first, jnp.zeros(3))
    chex.assert_trees_all_close(second, -0.1 * jnp.sign(grads), rtol=1e-6)


def test_vmap_over_learning_rates_equals_separate_runs():
    params, target, noise = make_problem(steps=10)

    def path(learning_rate):
        return trajectories([opt.adam(learning_rate)], params, target, noise)[0]

    learning_rates = jnp.array([1e-3, 1e-2, 1e-1])
    batched = jax.jit(jax.vmap(path))(learning_rates)
    single = jax.jit(path)  # a traced learning rate, as under vmap, compiled once
    for i, lr in enumerate(learning_rates):
        chex.assert_trees_all_close(
            jax.tree.map(lambda x, i=i: x[i], batched), single(lr), rtol=1e-6, atol=1e-7
        )


# --- dtypes, lax.cond, empty pytrees, None leaves, complex ------------------------------


def test_dtypes_follow_params_and_state_types_are_stable_under_cond():
    names = opt.available()
    params = {"w": jnp.ones((2, 3), jnp.bfloat16), "b": jnp.ones(3, jnp.bfloat16)}
    grads = jax.tree.map(lambda x: 0.1 * x, params)
    txs = [build(n) for n in names]

    @jax.jit
    def run():
        out = []
        for tx in txs:
            state = tx.init(params)
            updates, new_state = tx.update(grads, state, params)
            # lax.cond needs both branches to have the same types: a state whose dtype or
            # structure changed after one step would fail to trace here.
            kept = jax.lax.cond(True, lambda s=new_state: s, lambda s=state: s)
            out.append((state, updates, kept))
        return out

    for name, (state, updates, kept) in zip(names, run(), strict=True):
        chex.assert_trees_all_equal_dtypes(updates, grads, custom_message=name)
        chex.assert_trees_all_equal_structs(state, kept)
        chex.assert_trees_all_equal_dtypes(state, kept, custom_message=name)
        for leaf in jax.tree.leaves(state):
            key_data = name == "noisy_sgd" and leaf.dtype == jnp.uint32  # its PRNG key
            assert key_data or leaf.dtype in (jnp.bfloat16, jnp.int32), (name, leaf.dtype)


def test_mu_dtype_sets_first_moment_dtype_only():
    params = {"w": jnp.ones(4, jnp.bfloat16)}
    tx = opt.adam(1e-3, mu_dtype=jnp.float32)
    updates, state = tx.update(params, tx.init(params))
    adam_state = state[0]
    assert adam_state.mu["w"].dtype == jnp.float32 and adam_state.nu["w"].dtype == jnp.bfloat16
    assert updates["w"].dtype == jnp.bfloat16


@pytest.mark.parametrize("name", opt.available())
def test_empty_pytrees_and_none_leaves_pass_through(name):
    tx = build(name)
    assert tx.update({}, tx.init({}), {})[0] == {}
    params = {"w": jnp.ones(3), "frozen": None}
    grads = {"w": jnp.full(3, 0.5), "frozen": None}
    updates, _ = tx.update(grads, tx.init(params), params)
    assert updates["frozen"] is None and updates["w"].shape == (3,)


# Optax 0.2.8's alias test skips these for complex parameters.
REAL_ONLY = {"adadelta", "lion", "adan", "fromage", "noisy_sgd", "optimistic_adam"}
REAL_ONLY |= {"optimistic_gradient_descent", "polyak_sgd", "rprop", "sign_sgd", "signum", "sm3"}
REAL_ONLY |= {"madgrad"}  # its cube root is real only (Optax's too)
REAL_ONLY |= {"adopt", "sophia"}  # they clip (no order on complex numbers); Optax's fail too
COMPLEX_CASES = [c for c in DEFAULT_CASES if c.name not in REAL_ONLY]


def test_complex_params_equal_optax_where_optax_supports_them():
    # Optax's own alias test skips adadelta and lion for complex parameters. One leaf
    # keeps this single compilation of 2 × 14 trajectories affordable.
    key_p, key_c, key_n = jax.random.split(jax.random.key(0), 3)
    params = [jax.random.normal(key_p, (4,), jnp.complex64)]
    centre = [jax.random.normal(key_c, (4,), jnp.complex64)]
    noise = [0.1 * jax.random.normal(key_n, (20, 4), jnp.complex64)]
    txs = [c.ours(**c.kwargs) for c in COMPLEX_CASES]
    txs += [c.reference(**c.kwargs) for c in COMPLEX_CASES]
    paths = trajectories(txs, params, (centre, [jnp.ones(4)]), noise, states=True)
    n = len(COMPLEX_CASES)
    for case, (ours, our_states), (theirs, their_states) in zip(
        COMPLEX_CASES, paths[:n], paths[n:], strict=True
    ):
        assert ours[0].dtype == jnp.complex64 and bool(jnp.all(jnp.isfinite(ours[0])))
        chex.assert_trees_all_close(ours, theirs, rtol=1e-6, atol=1e-7, custom_message=case.id)
        assert_states_match(
            our_states, their_states, rtol=1e-6, atol=1e-7, names=case.state, label=case.id
        )
