"""Names → factories with their metadata, so experiments and the CLI enumerate one list."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from optlab.optimizers.acprop import acprop
from optlab.optimizers.adabelief import adabelief
from optlab.optimizers.adadelta import adadelta, adadelta_paper
from optlab.optimizers.adagrad import adagrad, adagrad_paper
from optlab.optimizers.adam import (
    adam,
    adam_efficient,
    adamax,
    adamax_paper,
    adamaxw,
    adamw,
    amsgrad,
    amsgrad_paper,
    nadam,
    nadamw,
    radam,
)
from optlab.optimizers.adan import adan
from optlab.optimizers.ademamix import ademamix, simplified_ademamix
from optlab.optimizers.adopt import adopt
from optlab.optimizers.galore import galore
from optlab.optimizers.lamb import fromage, lamb, lars
from optlab.optimizers.lion import lion
from optlab.optimizers.madgrad import madgrad, madgrad_paper
from optlab.optimizers.muon import muon
from optlab.optimizers.noisy import noisy_sgd
from optlab.optimizers.novograd import novograd
from optlab.optimizers.optimistic import (
    optimistic_adam,
    optimistic_adam_v2,
    optimistic_gradient_descent,
)
from optlab.optimizers.parameter_free import cocob, dadapt_adamw, dog, dowg
from optlab.optimizers.prodigy import prodigy
from optlab.optimizers.rmsprop import rmsprop
from optlab.optimizers.rprop import rprop
from optlab.optimizers.schedule_free import schedule_free_adamw, schedule_free_sgd
from optlab.optimizers.sgd import heavy_ball, nesterov, sgd, sgdm
from optlab.optimizers.sign import sign_sgd, signum
from optlab.optimizers.yogi import yogi

_KINGMA_BA = "Kingma & Ba, Adam: A Method for Stochastic Optimization, ICLR 2015"
_DEFAZIO = "Defazio et al., The Road Less Scheduled, NeurIPS 2024"


class OptimizerInfo(NamedTuple):
    """What the registry knows about one optimizer.

    Attributes:
      name: registry name.
      factory: callable ``factory(learning_rate, **hyperparameters)``.
      defaults: the factory's keyword defaults.
      state_per_param: parameter-sized buffers in the state (Adam: 2, SGD: 0).
      suggested_learning_rate: centre of a sensible learning-rate grid.
      family: ``"sgd"``, ``"adaptive"``, ``"adam"``, ``"sign"``, ``"layerwise"`` or
        ``"parameter-free"`` (its own step size; ``learning_rate`` is a multiplier, 1.0).
      reference: paper citation.
    """

    name: str
    factory: Callable[..., optax.GradientTransformation]
    defaults: dict[str, Any]
    state_per_param: int
    suggested_learning_rate: float
    family: str
    reference: str


# name: (factory, state_per_param, suggested_learning_rate, family, reference)
_TABLE: dict[str, tuple[Callable, int, float, str, str]] = {
    "sgd": (sgd, 0, 0.1, "sgd", "Robbins & Monro, Ann. Math. Stat. 1951"),
    "sgdm": (sgdm, 1, 0.1, "sgd", "EWMA momentum (course-notes form)"),
    "momentum": (heavy_ball, 1, 0.01, "sgd", "Polyak, USSR Comp. Math. 1964"),
    "nesterov": (nesterov, 1, 0.01, "sgd", "Sutskever et al., ICML 2013"),
    "adagrad": (adagrad, 1, 0.01, "adaptive", "Duchi, Hazan & Singer, JMLR 2011"),
    "adagrad_paper": (
        adagrad_paper,
        1,
        0.01,
        "adaptive",
        "Duchi, Hazan & Singer, JMLR 2011",
    ),
    "rmsprop": (rmsprop, 1, 1e-3, "adaptive", "Tieleman & Hinton, lecture 6e, 2012"),
    "adadelta": (adadelta, 2, 1.0, "adaptive", "Zeiler, arXiv:1212.5701, 2012"),
    "adadelta_paper": (
        adadelta_paper,
        2,
        1.0,
        "adaptive",
        "Zeiler, arXiv:1212.5701, 2012",
    ),
    "adam": (adam, 2, 1e-3, "adam", _KINGMA_BA),
    "adam_paper_efficient": (adam_efficient, 2, 1e-3, "adam", _KINGMA_BA + ", Sec. 2"),
    "adamw": (adamw, 2, 1e-3, "adam", "Loshchilov & Hutter, ICLR 2019"),
    "adamax": (adamax, 2, 2e-3, "adam", _KINGMA_BA + ", Sec. 7.1"),
    "adamax_paper": (adamax_paper, 2, 2e-3, "adam", _KINGMA_BA + ", Algorithm 2"),
    "nadam": (nadam, 2, 1e-3, "adam", "Dozat, ICLR workshop 2016"),
    "amsgrad": (amsgrad, 3, 1e-3, "adam", "Reddi, Kale & Kumar, ICLR 2018"),
    "amsgrad_paper": (
        amsgrad_paper,
        3,
        1e-3,
        "adam",
        "Reddi, Kale & Kumar, ICLR 2018, Algorithm 2",
    ),
    "radam": (radam, 2, 1e-3, "adam", "Liu et al., ICLR 2020"),
    "adabelief": (adabelief, 2, 1e-3, "adam", "Zhuang et al., NeurIPS 2020"),
    "lion": (lion, 1, 1e-4, "sign", "Chen et al., NeurIPS 2023"),
    "lamb": (lamb, 2, 1e-3, "layerwise", "You et al., ICLR 2020"),
    # Optax's other main-namespace optimizers (polyak_sgd and lbfgs need the loss in
    # update: factories, not entries).
    "sign_sgd": (sign_sgd, 0, 1e-3, "sign", "Bernstein et al., ICML 2018"),
    "signum": (signum, 1, 1e-3, "sign", "Bernstein et al., ICML 2018"),
    "yogi": (yogi, 2, 1e-2, "adam", "Zaheer et al., NeurIPS 2018"),
    "adamaxw": (adamaxw, 2, 2e-3, "adam", _KINGMA_BA + ", Sec. 7.1, decoupled decay"),
    "nadamw": (nadamw, 2, 1e-3, "adam", "Dozat 2016; Loshchilov & Hutter, ICLR 2019"),
    "adan": (adan, 4, 1e-3, "adam", "Xie et al., arXiv:2208.06677, 2022"),
    "noisy_sgd": (noisy_sgd, 0, 0.1, "sgd", "Neelakantan et al., arXiv:1511.06807, 2015"),
    "optimistic_gradient_descent": (
        optimistic_gradient_descent,
        1,
        0.01,
        "sgd",
        "Daskalakis et al., ICLR 2018; Mokhtari et al., AISTATS 2020",
    ),
    "optimistic_adam": (optimistic_adam, 3, 1e-3, "adam", "Daskalakis et al., ICLR 2018"),
    "optimistic_adam_v2": (optimistic_adam_v2, 3, 1e-3, "adam", "Daskalakis et al., ICLR 2018"),
    "novograd": (novograd, 1, 1e-3, "layerwise", "Ginsburg et al., arXiv:1905.11286, 2019"),
    "lars": (lars, 1, 1.0, "layerwise", "You, Gitman & Ginsburg, arXiv:1708.03888, 2017"),
    "fromage": (fromage, 0, 1e-2, "layerwise", "Bernstein et al., NeurIPS 2020"),
    "rprop": (rprop, 2, 1e-3, "adaptive", "Riedmiller & Braun, ICNN 1993 (iRprop-)"),
    # Muon: 1 buffer on matrices (the count), AdamW's 2 on the other leaves.
    "muon": (muon, 1, 0.02, "layerwise", "Jordan, github.com/KellerJordan/Muon, 2024"),
    # Schedule-Free: z (+ v); the engine evaluates at x = eval_params(state, params).
    "schedule_free_adamw": (schedule_free_adamw, 2, 2.5e-3, "adam", _DEFAZIO),
    "schedule_free_sgd": (schedule_free_sgd, 1, 0.1, "sgd", _DEFAZIO),
    "adopt": (adopt, 2, 1e-3, "adam", "Taniguchi et al., NeurIPS 2024"),
    "ademamix": (ademamix, 3, 1e-3, "adam", "Pagliardini, Ablin & Grangier, ICLR 2025"),
    # simplified AdEMAMix: m is a sum (≈ g / (1 − β₁)), so its rate is ~100× smaller.
    "simplified_ademamix": (simplified_ademamix, 2, 1e-5, "adam", "Morwani et al., 2025"),
    # Prodigy: m, v, s and θ₀; learning_rate multiplies its own estimate d (1.0: none).
    "prodigy": (prodigy, 4, 1.0, "parameter-free", "Mishchenko & Defazio, ICML 2024"),
    # Optax's contrib (MoMo needs the loss value in update: a factory, not an entry).
    "madgrad": (madgrad, 3, 1e-2, "adaptive", "Defazio & Jelassi, JMLR 2022"),
    "madgrad_paper": (madgrad_paper, 3, 1e-2, "adaptive", "Defazio & Jelassi, Algorithm 1"),
    "acprop": (acprop, 2, 1e-3, "adam", "Zhuang et al., NeurIPS 2021"),
    "dog": (dog, 1, 1.0, "parameter-free", "Ivgi, Hinder & Carmon, ICML 2023"),
    "dowg": (dowg, 1, 1.0, "parameter-free", "Khaled, Mishchenko & Jin, NeurIPS 2023"),
    "cocob": (cocob, 5, 1.0, "parameter-free", "Orabona & Tommasi, NeurIPS 2017"),
    "dadapt_adamw": (dadapt_adamw, 3, 1.0, "parameter-free", "Defazio & Mishchenko, ICML 2023"),
    # galore: Adam's 2 on leaves it does not project; on an m × n matrix, r × n moments and
    # an m × r projector (m ≥ n), up to 3 per parameter when r = n = m, ≈ 0.4 at r = 128 on
    # 1000 × 1000.
    "galore": (galore, 2, 1e-3, "adam", "Zhao et al., ICML 2024"),
}


def _defaults(factory: Callable) -> dict[str, Any]:
    return {
        name: p.default
        for name, p in inspect.signature(factory).parameters.items()
        if p.default is not inspect.Parameter.empty
    }


def state_buffers(factory: Callable[..., optax.GradientTransformation], learning_rate) -> int:
    """How many parameter-sized buffers ``factory(learning_rate)``'s state holds, counted on
    a probe parameter of a shape no scalar counter has."""
    probe = jnp.zeros((7, 3))
    state = factory(learning_rate=learning_rate).init({"w": probe})
    return sum(jnp.shape(leaf) == probe.shape for leaf in jax.tree.leaves(state))


def register(
    name: str,
    factory: Callable[..., optax.GradientTransformation],
    *,
    suggested_learning_rate: float = 1e-3,
    family: str = "custom",
    reference: str = "registered by the user",
    state_per_param: int | None = None,
) -> OptimizerInfo:
    """Add a researcher's optimizer to the registry, so every experiment can use it by name.

    ``factory(learning_rate, **hyperparameters)`` returns an ``optax.GradientTransformation``
    (build it from our ``scale_by_*`` blocks and ``optax.chain``). ``state_per_param``, when
    not given, is counted from the state ``factory`` initialises (:func:`state_buffers`).

    Raises:
      ValueError: ``name`` is taken or not a plain name, ``factory`` is not callable or has
        no ``learning_rate`` argument, or ``suggested_learning_rate`` is not positive.
    """
    if not isinstance(name, str) or not name.replace("_", "a").replace("-", "a").isalnum():
        raise ValueError(f"optimizer name must be letters, digits, '_' or '-', got {name!r}")
    if name in _TABLE:
        raise ValueError(f"optimizer {name!r} is already registered; choose another name")
    if not callable(factory):
        raise ValueError(f"factory for {name!r} must be callable, got {type(factory).__name__}")
    if "learning_rate" not in inspect.signature(factory).parameters:
        raise ValueError(f"factory for {name!r} must take a learning_rate argument")
    if not suggested_learning_rate > 0:
        raise ValueError(
            f"suggested_learning_rate must be positive, got {suggested_learning_rate!r}"
        )
    if state_per_param is None:
        state_per_param = state_buffers(factory, suggested_learning_rate)
    _TABLE[name] = (factory, state_per_param, suggested_learning_rate, family, reference)
    return info(name)


def load_factory(spec: str) -> tuple[str, Callable[..., optax.GradientTransformation]]:
    """``(name, factory)`` from ``"module:factory"`` or ``"path/to/file.py:factory"``.

    A module is imported the way ``python -m`` would find it: from the current folder
    first, then ``sys.path``. The name is the factory's attribute name.

    Raises:
      ValueError: the spec is malformed, the module cannot be imported or lacks the factory.
    """
    module_name, _, attribute = spec.rpartition(":")
    if not module_name or not attribute.isidentifier():
        raise ValueError(f"optimizer {spec!r}: expected a name or MODULE:FACTORY")
    try:
        if module_name.endswith(".py"):
            path = Path(module_name)
            loader_spec = importlib.util.spec_from_file_location(path.stem, path)
            if loader_spec is None or not path.is_file():
                raise ImportError(f"no file {path}")
            module = importlib.util.module_from_spec(loader_spec)
            loader_spec.loader.exec_module(module)
        else:
            if "" not in sys.path and str(Path.cwd()) not in sys.path:
                sys.path.insert(0, str(Path.cwd()))
            module = importlib.import_module(module_name)
    except (ImportError, SyntaxError) as err:
        raise ValueError(f"optimizer {spec!r}: cannot import {module_name}: {err}") from None
    factory = getattr(module, attribute, None)
    if factory is None:
        raise ValueError(f"optimizer {spec!r}: {module_name} has no {attribute!r}")
    return attribute, factory


def same_definition(a: Callable, b: Callable) -> bool:
    """Whether ``a`` and ``b`` are one definition (same qualified name in the same source
    file), e.g. a ``path.py:FACTORY`` spec imported twice."""

    def where(f):
        try:
            return getattr(f, "__qualname__", None), Path(inspect.getsourcefile(f)).resolve()
        except TypeError:  # a builtin or a C extension: only the same object is the same
            return id(f), None

    return a is b or where(a) == where(b)


def resolve(names: Iterable[str]) -> list[str]:
    """Registry names for ``names``: each one registered, or a ``MODULE:FACTORY`` spec whose
    factory is imported and registered under its attribute name (:func:`load_factory`).
    Repeats are dropped, order kept.

    Raises:
      ValueError: no names, or an unknown name (listing the valid ones), or a bad spec.
    """
    resolved = []
    for item in names:
        if ":" in item:
            name, factory = load_factory(item)
            if name in _TABLE and same_definition(_TABLE[name][0], factory):
                _TABLE[name] = (factory, *_TABLE[name][1:])  # the same spec loaded again
            else:
                register(name, factory)
            resolved.append(name)
        else:
            _entry(item)
            resolved.append(item)
    if not resolved:
        raise ValueError(f"no optimizer given; valid names: {', '.join(available())}")
    return list(dict.fromkeys(resolved))


def available() -> list[str]:
    """Sorted registry names."""
    return sorted(_TABLE)


def _entry(name: str):
    if name not in _TABLE:
        raise ValueError(f"unknown optimizer {name!r}; valid names: {', '.join(available())}")
    return _TABLE[name]


def info(name: str) -> OptimizerInfo:
    """The ``OptimizerInfo`` of ``name``; ValueError listing the valid names if unknown."""
    factory, state_per_param, lr, family, reference = _entry(name)
    return OptimizerInfo(name, factory, _defaults(factory), state_per_param, lr, family, reference)


def get_factory(name: str) -> Callable[..., optax.GradientTransformation]:
    """The factory of ``name``, e.g. for ``optax.inject_hyperparams(get_factory("adam"))``."""
    return _entry(name)[0]


def get(name: str, **hyperparams) -> optax.GradientTransformation:
    """Build optimizer ``name`` with ``hyperparams`` (``learning_rate`` is required by most).

    Raises:
      ValueError: for an unknown name (listing the valid ones) or unknown hyperparameter
        names (naming them and the accepted ones).
    """
    factory = get_factory(name)
    accepted = inspect.signature(factory).parameters
    unknown = sorted(set(hyperparams) - set(accepted))
    if unknown:
        raise ValueError(
            f"unknown hyperparameter(s) {', '.join(unknown)} for {name!r}; "
            f"accepted: {', '.join(accepted)}"
        )
    return factory(**hyperparams)
