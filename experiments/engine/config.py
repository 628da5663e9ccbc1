"""What to train for and how: :class:`TrainConfig`.

What is minimised lives in the objective (:mod:`experiments.engine.objectives`), the
learning-rate schedule in the optimizer (``opt.adam(schedules.build(...))``): the config
holds only what the engine itself applies, and applies all of it.
"""

from __future__ import annotations

import dataclasses

COMPUTE_DTYPES = ("float32", "bfloat16")
NON_FINITE_POLICIES = ("stop", "skip")


def _positive_int(name: str, value) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """What to train for and how.

    Attributes:
      epochs: number of passes over the training set.
      batch_size: minibatch size B; ``None`` means the whole training set (batch GD).
        Each epoch takes ``N // B`` steps and drops the remainder of its permutation.
      seed: seeds the data order and dropout of :func:`~experiments.engine.fit` (a
        population takes its seeds as an argument).
      compute_dtype: ``"float32"`` or ``"bfloat16"``; with bfloat16 the forward and
        backward passes run on bfloat16 copies of the float32 parameters and inputs.
      eval_batch_size: batch size of the (jitted, batched) evaluation.
      eval_train: if True, the ``train_*`` metrics are measured by a full evaluation pass
        over the training set after each epoch (eval mode, no dropout, no penalty);
        otherwise they are the means over the epoch's minibatches.
      data_parallel: split every minibatch over all devices (a ``"data"`` mesh axis,
        parameters and optimizer state replicated; :mod:`experiments.parallel`). Same
        results as one device within float tolerance; ``batch_size`` must be divisible
        by the device count.
    """

    epochs: int = 10
    batch_size: int | None = 128
    seed: int = 0
    compute_dtype: str = "float32"
    eval_batch_size: int = 1000
    eval_train: bool = False
    data_parallel: bool = False

    def __post_init__(self):
        _positive_int("epochs", self.epochs)
        if self.batch_size is not None:
            _positive_int("batch_size", self.batch_size)
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise ValueError(f"seed must be an integer, got {self.seed!r}")
        if self.compute_dtype not in COMPUTE_DTYPES:
            raise ValueError(
                f"compute_dtype must be one of {', '.join(COMPUTE_DTYPES)}, "
                f"got {self.compute_dtype!r}"
            )
        _positive_int("eval_batch_size", self.eval_batch_size)
        for name in ("eval_train", "data_parallel"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")

    def steps_per_epoch(self, num_train: int) -> int:
        """``N // B``: the number of optimizer steps in one epoch."""
        batch_size = self.batch_size or num_train
        if batch_size > num_train:
            raise ValueError(
                f"batch_size {batch_size} is larger than the training set ({num_train} examples)"
            )
        return num_train // batch_size


def check_policy(on_non_finite: str) -> None:
    if on_non_finite not in NON_FINITE_POLICIES:
        raise ValueError(
            f"on_non_finite must be one of {', '.join(NON_FINITE_POLICIES)}, got {on_non_finite!r}"
        )
