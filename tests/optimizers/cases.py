"""The parity table: each of our factories beside its Optax reference, and a trajectory runner.

Every row is ``Case(name, ours, reference, kwargs, state)``: ``ours(**kwargs)`` must follow
``reference(**kwargs)`` step for step, in its parameters and in its optimizer state. One row
per hyperparameter set: the first row of each optimizer uses its defaults (only the
learning rate given), the others move every hyperparameter away from its default.

The two states are compared leaf by leaf, by path (``jax.tree_util.keystr``, e.g.
``[0].mu['w']``): our state classes are our own NamedTuples, so the trees' types differ even
where their fields agree. ``state`` (a :class:`StateMap`) says where the paths differ.
"""

from __future__ import annotations

import warnings
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from optlab import optimizers as opt

SHAPES = {"scalar": (), "vector": (7,), "matrix": (5, 3), "tensor": (2, 3, 4, 2)}


class StateMap(NamedTuple):
    """Where our optimizer state's leaf paths differ from Optax's.

    ``renames``: ``(our path prefix, Optax's)`` pairs; ``ours_only``: our step counters
    that Optax's state lacks (checked to equal the step number ``t``); ``reference_only``:
    Optax's leaves with no counterpart in ours (not compared).
    """

    renames: tuple[tuple[str, str], ...] = ()
    ours_only: tuple[str, ...] = ()
    reference_only: tuple[str, ...] = ()


SAME_PATHS = StateMap()  # our state's leaf paths are Optax's


class Case(NamedTuple):
    name: str
    ours: Any
    reference: Any
    kwargs: dict
    state: StateMap = SAME_PATHS

    @property
    def id(self) -> str:
        return self.name + ("-" + "-".join(f"{k}={_short(v)}" for k, v in self.kwargs.items()))


def _short(value: Any) -> str:
    """A stable id for a hyperparameter (functions and dtypes by name, an Optax transformation
    by its type name, never by address: pytest-xdist's workers must collect the same ids)."""
    if isinstance(value, optax.GradientTransformation):
        return type(value).__name__
    return getattr(value, "__name__", str(value))


def optax_sgdm(learning_rate, beta=0.9):
    """EWMA momentum in Optax's vocabulary (Optax has no alias for it)."""
    return optax.chain(optax.ema(beta, debias=False), optax.scale_by_learning_rate(learning_rate))


def _decay_matrices(params):
    return jax.tree.map(lambda p: p.ndim > 1, params)


def fed_loss_value(factory):
    """``factory`` whose ``update(g, s, p)`` passes ``value=½‖g‖²`` (MoMo needs the loss; any
    function of the step's inputs gives both implementations the same value)."""

    def build(**kwargs):
        tx = factory(**kwargs)

        def update(updates, state, params=None):
            value = 0.5 * optax.tree.norm(updates, squared=True)
            return tx.update(updates, state, params, value=value)

        return optax.GradientTransformation(tx.init, update)

    build.__name__ = factory.__name__
    return build


def fed_objective(factory):
    """``factory`` whose ``update(g, s, p)`` passes ``obj_fn``: Sophia's Hessian estimate
    differentiates it twice (any fixed function of θ gives both implementations the same;
    this one, ``Σ ½θ² + ¼θ⁴``, has a Hessian diagonal ``1 + 3θ²`` that changes)."""

    def objective(params):
        return sum(jnp.sum(0.5 * p**2 + 0.25 * p**4) for p in jax.tree.leaves(params))

    def build(**kwargs):
        tx = factory(**kwargs)

        def update(updates, state, params=None):
            return tx.update(updates, state, params, obj_fn=objective)

        return optax.GradientTransformation(tx.init, update)

    build.__name__ = factory.__name__
    return build


def sam_sgd(sam, sgd, normalize):
    """The paper's simple SAM in one implementation's pieces: ``sam(sgd(η, momentum),
    chain(normalize(), sgd(ρ)), sync_period, reset_state)``."""

    def build(learning_rate, rho=0.05, momentum=None, sync_period=2, reset_state=True):
        adversarial = optax.chain(normalize(), sgd(rho))
        return sam(sgd(learning_rate, momentum=momentum), adversarial, sync_period, reset_state)

    build.__name__ = sam.__name__
    return build


def _galore_rows_first(params):
    """GaLore's matrix view of every leaf with 2+ axes: axis 0 against all the others."""
    return jax.tree.map(
        lambda p: (
            optax.contrib.GaLoreDimensionNumbers(0, tuple(range(1, p.ndim)))
            if p.ndim >= 2
            else None
        ),
        params,
    )


# dog: Optax marks the first step with a bool ``is_init_step``, ours counts steps.
DOG_STATE = StateMap(ours_only=("[1].count",), reference_only=("[1].is_init_step",))


# sgdm: Optax spells the EWMA ``ema`` and keeps a step count (for debiasing, off here).
SGDM_STATE = StateMap(renames=(("[0].ewma", "[0].ema"),), reference_only=("[0].count",))
# rmsprop, uncentered and without bias correction: Optax's ScaleByRmsState has only ``nu``;
# ours always counts steps (its one state type serves every option).
RMSPROP_STATE = StateMap(ours_only=("[0].count",))


def optax_noisy_sgd(learning_rate, eta=0.01, gamma=0.55, key=0):
    """``optax.noisy_sgd`` with our default key 0 (Optax's None warns, then uses 0)."""
    return optax.noisy_sgd(learning_rate, eta, gamma, key)


def optax_optimistic_adam(learning_rate, **kwargs):
    """``optax.optimistic_adam`` without its DeprecationWarning (0.2.8 prefers ``_v2``)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return optax.optimistic_adam(learning_rate, **kwargs)


def scaling_as_learning_rate(factory):
    """``factory`` (polyak_sgd) called with ``learning_rate`` as its ``scaling``, so that its
    rows run like every other (the first row: defaults, only the learning rate given)."""

    def build(learning_rate, **kwargs):
        return factory(scaling=learning_rate, **kwargs)

    build.__name__ = factory.__name__
    return build


def scalars_as_vectors(factory):
    """``factory`` (sm3) seeing each scalar leaf as a vector of one: Optax's ``scale_by_sm3``
    indexes a per-axis accumulator that a scalar does not have (IndexError)."""

    def build(**kwargs):
        tx = factory(**kwargs)

        def widen(tree):
            return jax.tree.map(lambda x: x.reshape(1) if x.ndim == 0 else x, tree)

        def update(updates, state, params=None):
            widened, state = tx.update(widen(updates), state, widen(params))
            return jax.tree.map(lambda u, g: u.reshape(g.shape), widened, updates), state

        return optax.GradientTransformation(lambda params: tx.init(widen(params)), update)

    build.__name__ = factory.__name__
    return build


# adafactor with momentum, no parameter scale: Optax's ema state (block 3) as sgdm's.
ADAFACTOR_MOMENTUM_STATE = StateMap(
    renames=(("[3].ewma", "[3].ema"),), reference_only=("[3].count",)
)


def without_linesearch(factory):
    """``factory`` (lbfgs) with ``linesearch=None``, so ``update(g, state, params)`` needs no
    loss; the line search itself is Optax's (tests/optimizers/test_extra_args.py)."""

    def build(**kwargs):
        return factory(linesearch=None, **kwargs)

    build.__name__ = factory.__name__
    return build


# signum: Optax's ema state as sgdm's. Optimistic methods: Optax marks the first step with
# a bool ``is_initial_step``, ours counts steps (every state leaf a number of the registry's
# dtypes).
SIGNUM_STATE = SGDM_STATE
OPTIMISTIC_STATE = StateMap(ours_only=("[0].count",), reference_only=("[0].is_initial_step",))
OPTIMISTIC_ADAM_STATE = StateMap(ours_only=("[1].count",), reference_only=("[1].is_initial_step",))

# muon: Optax keeps its constant Newton–Schulz coefficients in the state; ours does not.
MUON_STATE = StateMap(reference_only=(".inner_states['muon'].inner_state[0].ns_coeffs",))


def _adopt_clip(t):
    """A clip value other than ADOPT's t^{1/4}: 0.5 + √t."""
    return 0.5 + t**0.5


CASES = [
    Case("sgd", opt.sgd, optax.sgd, dict(learning_rate=0.05)),
    Case("sgd", opt.sgd, optax.sgd, dict(learning_rate=0.05, momentum=0.9)),
    Case("sgd", opt.sgd, optax.sgd, dict(learning_rate=0.05, momentum=0.8, nesterov=True)),
    Case("sgdm", opt.sgdm, optax_sgdm, dict(learning_rate=0.1), SGDM_STATE),
    Case("sgdm", opt.sgdm, optax_sgdm, dict(learning_rate=0.1, beta=0.5), SGDM_STATE),
    Case("adagrad", opt.adagrad, optax.adagrad, dict(learning_rate=0.1)),
    Case(
        "adagrad",
        opt.adagrad,
        optax.adagrad,
        dict(learning_rate=0.1, initial_accumulator_value=0.0, eps=1e-5),
    ),
    Case("rmsprop", opt.rmsprop, optax.rmsprop, dict(learning_rate=0.01), RMSPROP_STATE),
    Case(
        "rmsprop",
        opt.rmsprop,
        optax.rmsprop,
        dict(learning_rate=0.01, decay=0.8, eps=1e-4, initial_scale=0.1, eps_in_sqrt=False),
        RMSPROP_STATE,
    ),
    Case(
        "rmsprop",
        opt.rmsprop,
        optax.rmsprop,
        dict(learning_rate=0.01, centered=True, momentum=0.9, nesterov=True, bias_correction=True),
    ),
    # Optax's default learning_rate=None climbs (see optimizers/adadelta.py): pass 1.0.
    Case("adadelta", opt.adadelta, optax.adadelta, dict(learning_rate=1.0)),
    Case(
        "adadelta",
        opt.adadelta,
        optax.adadelta,
        dict(learning_rate=0.5, rho=0.95, eps=1e-5, weight_decay=0.01),
    ),
    Case("adam", opt.adam, optax.adam, dict(learning_rate=0.01)),
    Case(
        "adam",
        opt.adam,
        optax.adam,
        dict(learning_rate=0.01, b1=0.8, b2=0.99, eps=1e-6, eps_root=1e-8, nesterov=True),
    ),
    Case("adam", opt.adam, optax.adam, dict(learning_rate=0.01, mu_dtype=jnp.bfloat16)),
    Case("adamw", opt.adamw, optax.adamw, dict(learning_rate=0.01)),
    Case(
        "adamw",
        opt.adamw,
        optax.adamw,
        dict(learning_rate=0.01, b1=0.8, weight_decay=0.1, mask=_decay_matrices),
    ),
    Case("nadam", opt.nadam, optax.nadam, dict(learning_rate=0.01)),
    Case("nadam", opt.nadam, optax.nadam, dict(learning_rate=0.01, b1=0.95, eps_root=1e-8)),
    Case("amsgrad", opt.amsgrad, optax.amsgrad, dict(learning_rate=0.01)),
    Case(
        "amsgrad",
        opt.amsgrad,
        optax.amsgrad,
        dict(learning_rate=0.01, b2=0.99, bias_correction_mu=False, bias_correction_nu=False),
    ),
    Case("adamax", opt.adamax, optax.adamax, dict(learning_rate=0.01)),
    Case("adamax", opt.adamax, optax.adamax, dict(learning_rate=0.01, b1=0.8, b2=0.99, eps=1e-4)),
    Case("lion", opt.lion, optax.lion, dict(learning_rate=1e-3)),
    Case(
        "lion", opt.lion, optax.lion, dict(learning_rate=1e-3, b1=0.95, b2=0.98, weight_decay=0.1)
    ),
    Case("adabelief", opt.adabelief, optax.adabelief, dict(learning_rate=0.01)),
    Case(
        "adabelief",
        opt.adabelief,
        optax.adabelief,
        dict(learning_rate=0.01, b1=0.8, eps=1e-8, eps_root=1e-10, nesterov=True),
    ),
    Case("radam", opt.radam, optax.radam, dict(learning_rate=0.01)),
    Case(
        "radam",
        opt.radam,
        optax.radam,
        dict(learning_rate=0.01, b2=0.99, threshold=4.0, nesterov=True),
    ),
    Case("lamb", opt.lamb, optax.lamb, dict(learning_rate=0.01)),
    Case("lamb", opt.lamb, optax.lamb, dict(learning_rate=0.01, eps=1e-8, weight_decay=0.01)),
    # Optax's other main-namespace optimizers.
    Case("sign_sgd", opt.sign_sgd, optax.sign_sgd, dict(learning_rate=0.01)),
    Case("signum", opt.signum, optax.signum, dict(learning_rate=0.01), SIGNUM_STATE),
    Case(
        "signum",
        opt.signum,
        optax.signum,
        dict(learning_rate=0.01, beta=0.5, accumulator_dtype=jnp.bfloat16),
        SIGNUM_STATE,
    ),
    Case("yogi", opt.yogi, optax.yogi, dict(learning_rate=0.01)),
    Case("yogi", opt.yogi, optax.yogi, dict(learning_rate=0.01, b1=0.8, b2=0.99, eps=1e-4)),
    Case("adamaxw", opt.adamaxw, optax.adamaxw, dict(learning_rate=0.01)),
    Case(
        "adamaxw",
        opt.adamaxw,
        optax.adamaxw,
        dict(learning_rate=0.01, b1=0.8, b2=0.99, eps=1e-4, weight_decay=0.1, mask=_decay_matrices),
    ),
    Case("nadamw", opt.nadamw, optax.nadamw, dict(learning_rate=0.01)),
    Case(
        "nadamw",
        opt.nadamw,
        optax.nadamw,
        dict(
            learning_rate=0.01,
            b1=0.8,
            b2=0.99,
            eps=1e-6,
            eps_root=1e-8,
            weight_decay=0.1,
            mask=_decay_matrices,
            nesterov=False,
        ),
    ),
    Case("noisy_sgd", opt.noisy_sgd, optax_noisy_sgd, dict(learning_rate=0.01)),
    Case(
        "noisy_sgd",
        opt.noisy_sgd,
        optax_noisy_sgd,
        dict(learning_rate=0.01, eta=0.1, gamma=0.3, key=3),
    ),
    Case(
        "optimistic_gradient_descent",
        opt.optimistic_gradient_descent,
        optax.optimistic_gradient_descent,
        dict(learning_rate=0.01),
        OPTIMISTIC_STATE,
    ),
    Case(
        "optimistic_gradient_descent",
        opt.optimistic_gradient_descent,
        optax.optimistic_gradient_descent,
        dict(learning_rate=0.01, alpha=0.7, beta=0.1),
        OPTIMISTIC_STATE,
    ),
    Case(
        "optimistic_adam",
        opt.optimistic_adam,
        optax_optimistic_adam,
        dict(learning_rate=0.01),
        OPTIMISTIC_ADAM_STATE,
    ),
    Case(
        "optimistic_adam",
        opt.optimistic_adam,
        optax_optimistic_adam,
        dict(
            learning_rate=0.01,
            optimism=0.005,
            b1=0.8,
            b2=0.99,
            eps=1e-6,
            eps_root=1e-8,
            nesterov=False,
        ),
        OPTIMISTIC_ADAM_STATE,
    ),
    Case(
        "optimistic_adam_v2",
        opt.optimistic_adam_v2,
        optax.optimistic_adam_v2,
        dict(learning_rate=0.01),
        OPTIMISTIC_ADAM_STATE,
    ),
    Case(
        "optimistic_adam_v2",
        opt.optimistic_adam_v2,
        optax.optimistic_adam_v2,
        dict(learning_rate=0.01, alpha=0.7, beta=0.2, b1=0.8, b2=0.99, eps=1e-6, nesterov=False),
        OPTIMISTIC_ADAM_STATE,
    ),
    Case("lars", opt.lars, optax.lars, dict(learning_rate=0.1)),
    Case(
        "lars",
        opt.lars,
        optax.lars,
        dict(
            learning_rate=0.1,
            weight_decay=0.01,
            weight_decay_mask=_decay_matrices,
            trust_coefficient=0.01,
            eps=1e-8,
            trust_ratio_mask=_decay_matrices,
            momentum=0.8,
            nesterov=True,
        ),
    ),
    Case("fromage", opt.fromage, optax.fromage, dict(learning_rate=0.01)),
    Case("fromage", opt.fromage, optax.fromage, dict(learning_rate=0.05, min_norm=1e-3)),
    Case("novograd", opt.novograd, optax.novograd, dict(learning_rate=0.01)),
    Case(
        "novograd",
        opt.novograd,
        optax.novograd,
        dict(learning_rate=0.01, b1=0.8, b2=0.5, eps=1e-4, eps_root=1e-8, weight_decay=0.01),
    ),
    Case("rprop", opt.rprop, optax.rprop, dict(learning_rate=0.01)),
    Case(
        "rprop",
        opt.rprop,
        optax.rprop,
        dict(
            learning_rate=0.01, eta_minus=0.3, eta_plus=1.5, min_step_size=1e-4, max_step_size=1.0
        ),
    ),
    Case("adan", opt.adan, optax.adan, dict(learning_rate=0.01)),
    Case(
        "adan",
        opt.adan,
        optax.adan,
        dict(
            learning_rate=0.01,
            b1=0.9,
            b2=0.8,
            b3=0.95,
            eps=1e-6,
            eps_root=1e-10,
            weight_decay=0.01,
            mask=_decay_matrices,
        ),
    ),
    Case(
        "polyak_sgd",
        fed_loss_value(scaling_as_learning_rate(opt.polyak_sgd)),
        fed_loss_value(scaling_as_learning_rate(optax.polyak_sgd)),
        dict(learning_rate=1.0),
    ),
    Case(
        "polyak_sgd",
        fed_loss_value(scaling_as_learning_rate(opt.polyak_sgd)),
        fed_loss_value(scaling_as_learning_rate(optax.polyak_sgd)),
        dict(learning_rate=0.5, max_learning_rate=0.4, f_min=0.5, eps=1e-3, variant="sps+"),
    ),
    Case(
        "sm3", scalars_as_vectors(opt.sm3), scalars_as_vectors(optax.sm3), dict(learning_rate=0.1)
    ),
    Case(
        "sm3",
        scalars_as_vectors(opt.sm3),
        scalars_as_vectors(optax.sm3),
        dict(learning_rate=0.1, momentum=0.5),
    ),
    Case("adafactor", opt.adafactor, optax.adafactor, dict(learning_rate=0.01)),
    Case(
        "adafactor",
        opt.adafactor,
        optax.adafactor,
        dict(
            learning_rate=0.01,
            min_dim_size_to_factor=2,
            decay_rate=0.7,
            multiply_by_parameter_scale=False,
            clipping_threshold=0.5,
            momentum=0.9,
            dtype_momentum=jnp.bfloat16,
            weight_decay_rate=0.01,
            eps=1e-20,
            weight_decay_mask=_decay_matrices,
        ),
        ADAFACTOR_MOMENTUM_STATE,
    ),
    Case(
        "adafactor",
        opt.adafactor,
        optax.adafactor,
        dict(learning_rate=0.01, min_dim_size_to_factor=3, factored=True, clipping_threshold=None),
    ),
    Case(
        "lbfgs",
        without_linesearch(opt.lbfgs),
        without_linesearch(optax.lbfgs),
        # memory_size spelled out: not a DEFAULT_CASES row, since eager L-BFGS retraces its
        # two-loop scans at every step (7 minutes on the CI's 2 cores); jit runs only.
        dict(learning_rate=0.1, memory_size=10),
    ),
    Case(
        "lbfgs",
        without_linesearch(opt.lbfgs),
        without_linesearch(optax.lbfgs),
        dict(learning_rate=0.05, memory_size=3, scale_init_precond=False),
    ),
    # Muon: its matrices ((5, 3)) orthogonalised, the other leaves through AdamW.
    Case("muon", opt.muon, optax.contrib.muon, dict(learning_rate=0.02), MUON_STATE),
    Case(
        "muon",
        opt.muon,
        optax.contrib.muon,
        dict(
            learning_rate=0.02,
            ns_coeffs="dion",
            beta=0.9,
            eps=1e-7,
            weight_decay=0.1,
            weight_decay_mask=_decay_matrices,
            nesterov=False,
            adaptive=True,
            preconditioning="aol",
            adam_b1=0.8,
            adam_b2=0.99,
            adam_eps_root=1e-8,
            adam_weight_decay=0.01,
            adam_learning_rate=0.01,
            consistent_rms=0.2,
        ),
        MUON_STATE,
    ),
    Case(
        "muon",
        opt.muon,
        optax.contrib.muon,
        dict(
            learning_rate=0.02,
            ns_coeffs=(3.0, -3.2, 1.2),
            ns_steps=3,
            preconditioning="schatten",
            mu_dtype=jnp.bfloat16,
        ),
        MUON_STATE,
    ),
    # Schedule-Free: the parameters hold y; z and the scalars are in the state.
    Case(
        "schedule_free_adamw",
        opt.schedule_free_adamw,
        optax.contrib.schedule_free_adamw,
        dict(learning_rate=0.01),
    ),
    Case(
        "schedule_free_adamw",
        opt.schedule_free_adamw,
        optax.contrib.schedule_free_adamw,
        dict(
            learning_rate=0.01,
            warmup_steps=10,
            b1=0.8,
            b2=0.99,
            eps=1e-6,
            weight_decay=0.01,
            weight_lr_power=1.0,
            state_dtype=jnp.float32,
        ),
    ),
    Case(
        "schedule_free_sgd",
        opt.schedule_free_sgd,
        optax.contrib.schedule_free_sgd,
        dict(learning_rate=0.05),
    ),
    Case(
        "schedule_free_sgd",
        opt.schedule_free_sgd,
        optax.contrib.schedule_free_sgd,
        dict(
            learning_rate=0.05,
            warmup_steps=5,
            b1=0.95,
            weight_decay=0.01,
            weight_lr_power=3.0,
            state_dtype=jnp.float32,
        ),
    ),
    # ADOPT: its first step only sets v (a zero update).
    Case("adopt", opt.adopt, optax.contrib.adopt, dict(learning_rate=0.01)),
    Case(
        "adopt",
        opt.adopt,
        optax.contrib.adopt,
        dict(
            learning_rate=0.01,
            b1=0.8,
            b2=0.99,
            eps=1e-4,
            mu_dtype=jnp.bfloat16,
            nesterov=True,
            clip_value_fn=_adopt_clip,
        ),
    ),
    Case("adopt", opt.adopt, optax.contrib.adopt, dict(learning_rate=0.01, use_clipping=False)),
    # AdEMAMix (schedules of b3 and alpha: parity_papers; a float32 schedule widens
    # Optax's bfloat16 state) and its simplified form.
    Case("ademamix", opt.ademamix, optax.contrib.ademamix, dict(learning_rate=0.01)),
    Case(
        "ademamix",
        opt.ademamix,
        optax.contrib.ademamix,
        dict(
            learning_rate=0.01,
            b1=0.8,
            b2=0.99,
            b3=0.999,
            alpha=3.0,
            eps=1e-6,
            eps_root=1e-8,
            weight_decay=0.01,
            mask=_decay_matrices,
        ),
    ),
    Case(
        "simplified_ademamix",
        opt.simplified_ademamix,
        optax.contrib.simplified_ademamix,
        dict(learning_rate=1e-4),
    ),
    Case(
        "simplified_ademamix",
        opt.simplified_ademamix,
        optax.contrib.simplified_ademamix,
        dict(
            learning_rate=1e-4,
            b1=0.9,
            b2=0.99,
            alpha=2.0,
            eps=1e-6,
            eps_root=1e-8,
            weight_decay=0.01,
            mask=_decay_matrices,
        ),
    ),
    # Prodigy: learning_rate multiplies its estimate d.
    Case("prodigy", opt.prodigy, optax.contrib.prodigy, dict(learning_rate=1.0)),
    Case(
        "prodigy",
        opt.prodigy,
        optax.contrib.prodigy,
        dict(
            learning_rate=0.5,
            betas=(0.8, 0.99),
            beta3=0.9,
            eps=1e-6,
            estim_lr0=1e-4,
            estim_lr_coef=0.5,
            weight_decay=0.01,
            safeguard_warmup=True,
        ),
    ),
    # Sophia: update(g, s, p, obj_fn=f), f(θ) = Σ ½θ² + ¼θ⁴ (Hessian refreshed every k).
    Case(
        "sophia",
        fed_objective(opt.sophia),
        fed_objective(optax.contrib.sophia),
        dict(learning_rate=0.01),
    ),
    Case(
        "sophia",
        fed_objective(opt.sophia),
        fed_objective(optax.contrib.sophia),
        dict(
            learning_rate=0.01,
            b1=0.9,
            b2=0.95,
            eps=1e-6,
            weight_decay=0.01,
            weight_decay_mask=_decay_matrices,
            gamma=0.05,
            clip_threshold=0.5,
            update_interval=3,
            mu_dtype=jnp.bfloat16,
        ),
    ),
    # SAM (transparent mode: every other call is the adversarial ascent).
    Case(
        "sam",
        sam_sgd(opt.sam, opt.sgd, opt.normalize),
        sam_sgd(optax.contrib.sam, optax.sgd, optax.contrib.normalize),
        dict(learning_rate=0.05),
    ),
    Case(
        "sam",
        sam_sgd(opt.sam, opt.sgd, opt.normalize),
        sam_sgd(optax.contrib.sam, optax.sgd, optax.contrib.normalize),
        dict(learning_rate=0.05, rho=0.1, momentum=0.9, sync_period=3, reset_state=False),
    ),
    # Optax's contrib: MADGRAD, ACProp, the learning-rate-free methods, MoMo, GaLore.
    Case("madgrad", opt.madgrad, optax.contrib.madgrad, dict(learning_rate=0.01)),
    Case(
        "madgrad",
        opt.madgrad,
        optax.contrib.madgrad,
        dict(learning_rate=0.02, momentum=0.5, weight_decay=0.01, eps=1e-4),
    ),
    Case("acprop", opt.acprop, optax.contrib.acprop, dict(learning_rate=0.01)),
    Case(
        "acprop",
        opt.acprop,
        optax.contrib.acprop,
        dict(
            learning_rate=0.01,
            b1=0.8,
            b2=0.99,
            eps=1e-8,
            eps_root=1e-10,
            weight_decay=0.01,
            mask=_decay_matrices,
        ),
    ),
    Case("dog", opt.dog, optax.contrib.dog, dict(learning_rate=1.0), DOG_STATE),
    Case(
        "dog",
        opt.dog,
        optax.contrib.dog,
        dict(
            learning_rate=0.5,
            init_step=("distance", 1e-3),
            eps=1e-6,
            weight_decay=0.01,
            mask=_decay_matrices,
        ),
        DOG_STATE,
    ),
    Case(
        "dog",
        opt.dog,
        optax.contrib.dog,
        dict(learning_rate=0.8, init_step=("learning_rate", 1e-2)),
        DOG_STATE,
    ),
    Case("dowg", opt.dowg, optax.contrib.dowg, dict(learning_rate=1.0)),
    Case(
        "dowg",
        opt.dowg,
        optax.contrib.dowg,
        dict(
            learning_rate=0.5,
            init_estim_sq_dist=1e-3,
            eps=1e-6,
            weight_decay=0.01,
            mask=_decay_matrices,
        ),
    ),
    Case("cocob", opt.cocob, optax.contrib.cocob, dict(learning_rate=1.0)),
    Case(
        "cocob",
        opt.cocob,
        optax.contrib.cocob,
        dict(learning_rate=0.5, alpha=10.0, eps=1e-6, weight_decay=0.01, mask=_decay_matrices),
    ),
    Case("dadapt_adamw", opt.dadapt_adamw, optax.contrib.dadapt_adamw, dict(learning_rate=1.0)),
    Case(
        "dadapt_adamw",
        opt.dadapt_adamw,
        optax.contrib.dadapt_adamw,
        dict(learning_rate=0.5, betas=(0.8, 0.99), eps=1e-6, estim_lr0=1e-4, weight_decay=0.01),
    ),
    Case(
        "momo",
        fed_loss_value(opt.momo),
        fed_loss_value(optax.contrib.momo),
        dict(learning_rate=0.1),
    ),
    Case(
        "momo",
        fed_loss_value(opt.momo),
        fed_loss_value(optax.contrib.momo),
        dict(
            learning_rate=0.1,
            beta=0.8,
            lower_bound=-1.0,
            weight_decay=0.01,
            adapt_lower_bound=True,
        ),
    ),
    Case(
        "momo_adam",
        fed_loss_value(opt.momo_adam),
        fed_loss_value(optax.contrib.momo_adam),
        dict(learning_rate=0.1),
    ),
    Case(
        "momo_adam",
        fed_loss_value(opt.momo_adam),
        fed_loss_value(optax.contrib.momo_adam),
        dict(
            learning_rate=0.1,
            b1=0.8,
            b2=0.99,
            eps=1e-6,
            lower_bound=-1.0,
            weight_decay=0.01,
            adapt_lower_bound=True,
        ),
    ),
    # GaLore: the (5, 3) matrix projected by default; below, every leaf with 2+ axes at rank 2.
    Case("galore", opt.galore, optax.contrib.galore, dict(learning_rate=0.01)),
    Case(
        "galore",
        opt.galore,
        optax.contrib.galore,
        dict(
            learning_rate=0.01,
            rank=2,
            update_proj_gap=7,
            scale=0.25,
            base_optimizer=opt.scale_by_adam(b1=0.8, b2=0.99),
            weight_decay=0.01,
            mask=_decay_matrices,
            weight_dimension_numbers=_galore_rows_first,
        ),
    ),
]
DEFAULT_CASES = [c for c in CASES if set(c.kwargs) == {"learning_rate"}]


def make_problem(dtype=jnp.float32, seed: int = 0, steps: int = 50):
    """Random pytree θ₀, the centres ``c`` and curvatures ``a`` of a separable quadratic,
    and per-step gradient noise: ``g_t = a ⊙ (θ − c) + noise_t``."""
    rng = np.random.default_rng(seed)

    def tree(scale=1.0, offset=0.0, lead=()):
        return {
            k: jnp.asarray(offset + scale * rng.standard_normal(lead + s), dtype)
            for k, s in SHAPES.items()
        }

    params = tree()
    centre = tree()
    curvature = jax.tree.map(lambda x: jnp.abs(x) + 0.5, tree())
    noise = tree(scale=0.1, lead=(steps,))
    return params, (centre, curvature), noise


def gradient(params, target, noise):
    centre, curvature = target
    return jax.tree.map(lambda p, c, a, n: a * (p - c) + n, params, centre, curvature, noise)


def _run(tx: optax.GradientTransformation, params, target, noise, scan: bool):
    def step(carry, noise_t):
        params, state = carry
        updates, state = tx.update(gradient(params, target, noise_t), state, params)
        params = optax.apply_updates(params, updates)
        return (params, state), (params, state)

    carry = (params, tx.init(params))
    if scan:
        return jax.lax.scan(step, carry, noise)[1]
    path = []
    for t in range(jax.tree.leaves(noise)[0].shape[0]):
        carry, out = step(carry, jax.tree.map(lambda n, t=t: n[t], noise))
        path.append(out)
    return jax.tree.map(lambda *xs: jnp.stack(xs), *path)


def trajectories(txs, params, target, noise, *, jit: bool = True, states: bool = False):
    """For each transformation in ``txs``, the parameters after each step on the noisy
    quadratic, stacked on axis 0 (with ``states``: ``(parameters, optimizer states)``, both
    stacked). ``jit=True`` runs them all in one jitted ``lax.scan`` each (one compilation
    for the lot); ``jit=False`` runs eagerly, op by op."""
    if jit:
        run_all = jax.jit(lambda p, tg, n: tuple(_run(tx, p, tg, n, scan=True) for tx in txs))
        paths = run_all(params, target, noise)
    else:
        paths = tuple(_run(tx, params, target, noise, scan=False) for tx in txs)
    return paths if states else tuple(params for params, _ in paths)


def state_leaves(state, renames=()) -> dict[str, Any]:
    """The leaves of an optimizer state by path, with each ``(prefix, new)`` of ``renames``
    applied to the paths that start with ``prefix``."""
    leaves = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]:
        name = jax.tree_util.keystr(path)
        for prefix, new in renames:
            if name.startswith(prefix):
                name = new + name[len(prefix) :]
        leaves[name] = leaf
    return leaves


def assert_states_match(
    ours, reference, *, rtol: float, atol: float, names: StateMap = SAME_PATHS, label: str = ""
) -> None:
    """Our optimizer states equal Optax's leaf for leaf (``names``: see :class:`StateMap`),
    stacked over steps on axis 0: the same leaf paths, the same dtypes, values within
    ``rtol``/``atol`` (compared in float64); our step counters without a counterpart
    equal ``1, 2, ...``."""
    mine = state_leaves(ours, names.renames)
    theirs = state_leaves(reference)
    assert sorted(set(mine) - set(theirs)) == sorted(names.ours_only), (label, sorted(mine))
    assert sorted(set(theirs) - set(mine)) == sorted(names.reference_only), (label, sorted(theirs))
    for name in names.ours_only:
        steps = np.arange(1, len(mine[name]) + 1)
        np.testing.assert_array_equal(mine[name], steps, err_msg=f"{label} {name}")
    for name in sorted(set(mine) & set(theirs)):
        a, b = mine[name], theirs[name]
        assert _dtype(a) == _dtype(b), (label, name, a.dtype, b.dtype)
        np.testing.assert_allclose(
            _exact(a), _exact(b), rtol=rtol, atol=atol, err_msg=f"{label} state {name}"
        )


def _dtype(x):
    """``x``'s dtype, a typed PRNG key's as that of its key data (noisy_sgd keeps the data
    where Optax keeps the key)."""
    return jax.random.key_data(x).dtype if jnp.issubdtype(x.dtype, jax.dtypes.prng_key) else x.dtype


def _exact(x) -> np.ndarray:
    """``x`` as a NumPy array, real floats widened to float64 (exactly), PRNG keys as their
    key data."""
    if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
        return np.asarray(jax.random.key_data(x))
    return np.asarray(x, np.float64) if jnp.issubdtype(x.dtype, jnp.floating) else np.asarray(x)
