"""Names → factories with their metadata, so experiments and the CLI enumerate one list."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, NamedTuple

import optax
from optlab.optimizers.adabelief import adabelief
from optlab.optimizers.adadelta import adadelta, adadelta_paper
from optlab.optimizers.adagrad import adagrad, adagrad_paper
from optlab.optimizers.adam import (
    adam,
    adam_efficient,
    adamax,
    adamax_paper,
    adamw,
    amsgrad,
    amsgrad_paper,
    nadam,
    radam,
)
from optlab.optimizers.lamb import lamb
from optlab.optimizers.lion import lion
from optlab.optimizers.rmsprop import rmsprop
from optlab.optimizers.sgd import heavy_ball, nesterov, sgd, sgdm

_KINGMA_BA = "Kingma & Ba, Adam: A Method for Stochastic Optimization, ICLR 2015"


class OptimizerInfo(NamedTuple):
    """What the registry knows about one optimizer.

    Attributes:
      name: registry name.
      factory: callable ``factory(learning_rate, **hyperparameters)``.
      defaults: the factory's keyword defaults.
      state_per_param: parameter-sized buffers in the state (Adam: 2, SGD: 0).
      suggested_learning_rate: centre of a sensible learning-rate grid.
      family: ``"sgd"``, ``"adaptive"``, ``"adam"``, ``"sign"`` or ``"layerwise"``.
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
}


def _defaults(factory: Callable) -> dict[str, Any]:
    return {
        name: p.default
        for name, p in inspect.signature(factory).parameters.items()
        if p.default is not inspect.Parameter.empty
    }


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
