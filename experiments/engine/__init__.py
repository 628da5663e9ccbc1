"""The training engine: one loss-generic, jit-compiled core for every experiment.

A model is trained on the pure functional view of an NNX module (``graphdef`` + state
pytrees) by an objective (:mod:`~experiments.engine.objectives`: the classifiers'
cross-entropy + L2, the VAE's ELBO, the continual EWC loss, or a researcher's own
``loss(model, batch, key)``). One epoch is one compiled loop over device-resident
minibatches; a population of hyperparameters × seeds trains under one ``vmap``;
:func:`fit` is a population of one.

Modules: ``config`` (:class:`TrainConfig`), ``objectives``, ``splits`` (the data),
``state`` (:class:`TrainState`, population building), ``step`` (the pure step, epoch
and evaluation), ``loop`` (the host loop: :func:`fit_population`, :func:`fit`),
``history`` (one history format), ``io`` (checkpoint I/O).
"""

from optlab.experiments.engine.config import COMPUTE_DTYPES, NON_FINITE_POLICIES, TrainConfig
from optlab.experiments.engine.history import EpochReport, History, metric_names
from optlab.experiments.engine.loop import (
    FitResult,
    NonFiniteError,
    PopulationResult,
    check_memory,
    fit,
    fit_population,
    population_epoch,
)
from optlab.experiments.engine.objectives import (
    Classification,
    ElasticWeightConsolidation,
    FunctionObjective,
    NegativeELBO,
    Objective,
)
from optlab.experiments.engine.splits import Splits, padded
from optlab.experiments.engine.state import (
    TrainState,
    WarmStart,
    init_population,
    init_state,
    member,
    seed_keys,
    split_model,
)
from optlab.experiments.engine.step import make_epoch, make_evaluate, train_step

__all__ = [
    "COMPUTE_DTYPES",
    "NON_FINITE_POLICIES",
    "Classification",
    "ElasticWeightConsolidation",
    "EpochReport",
    "FitResult",
    "FunctionObjective",
    "History",
    "NegativeELBO",
    "NonFiniteError",
    "Objective",
    "PopulationResult",
    "Splits",
    "TrainConfig",
    "TrainState",
    "WarmStart",
    "check_memory",
    "fit",
    "fit_population",
    "init_population",
    "init_state",
    "make_epoch",
    "make_evaluate",
    "member",
    "metric_names",
    "padded",
    "population_epoch",
    "seed_keys",
    "split_model",
    "train_step",
]
