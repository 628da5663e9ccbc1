"""What the engine minimises and what it measures: objectives.

An objective is a pytree (a ``flax.struct.PyTreeNode``) with two methods:

* ``loss(model, batch, key) -> (L, metrics)``: the training loss of one minibatch, a
  scalar, in train mode (``key`` drives dropout or sampling), and auxiliary scalar
  metrics (means over the minibatch, reported as ``train_<name>``);
* ``metrics(model, batch) -> {name: (b,) array}``: per-example values in eval mode; the
  engine reports their mean over every evaluated split as ``<split>_<name>``.

``batch`` is the training data's pytree cut to ``b`` examples (``{"x": ..., "y": ...}``
for the classifiers). Array fields of an objective are pytree leaves: they reach the
compiled step as arguments, so an objective whose arrays change between fits (the EWC
anchor after each task) reuses one compilation. Fields marked ``pytree_node=False`` are
static (they select code).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx, struct

PyTree = Any


class Objective(struct.PyTreeNode):
    """Base class: override :meth:`loss`, and :meth:`metrics` to evaluate held-out splits."""

    def loss(self, model: nnx.Module, batch: PyTree, key: jax.Array):
        raise NotImplementedError

    def metrics(self, model: nnx.Module, batch: PyTree) -> dict[str, jax.Array]:
        """Per-example metrics in eval mode; none by default (no split can be evaluated)."""
        del model, batch
        return {}

    @property
    def evaluates(self) -> bool:
        """Whether :meth:`metrics` is defined (evaluation splits are refused otherwise)."""
        return type(self).metrics is not Objective.metrics

    def check_data(self, model_outputs: Callable, batch: PyTree, split: str) -> None:
        """Reject data this objective cannot train on (host arrays), before compiling.

        ``model_outputs(x)`` is the abstract output (``jax.ShapeDtypeStruct``) of
        ``model(x, train=False)``, computed without running the model.
        """
        del model_outputs, batch, split


def _cross_entropy(logits, labels):
    return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)


class Classification(Objective):
    """Mean softmax cross-entropy on integer labels plus an L2 penalty.

    For a minibatch ``(x, y)`` of size ``B`` and logits ``f_θ(x)``::

        L(θ) = −(1/B) Σ_b log softmax(f_θ(x_b))[y_b]  +  (l2 / 2) ‖θ‖²

    Metrics: ``accuracy`` (train: over the minibatch); eval: ``loss`` (cross-entropy
    alone) and ``accuracy`` per example. ``batch = {"x": images, "y": labels}``.
    """

    l2: float = struct.field(pytree_node=False, default=0.0)

    def __post_init__(self):
        if not (isinstance(self.l2, int | float) and self.l2 >= 0):
            raise ValueError(f"l2 must be a number >= 0, got {self.l2!r}")

    def loss(self, model, batch, key):
        logits = model(batch["x"], train=True, rngs=nnx.Rngs(dropout=key))
        loss = _cross_entropy(logits, batch["y"]).mean()
        if self.l2:
            params = nnx.state(model, nnx.Param)
            loss = loss + 0.5 * self.l2 * optax.tree.norm(params, squared=True)
        return loss, {"accuracy": jnp.mean(jnp.argmax(logits, -1) == batch["y"])}

    def metrics(self, model, batch):
        logits = model(batch["x"], train=False)
        return {
            "loss": _cross_entropy(logits, batch["y"]),
            "accuracy": (jnp.argmax(logits, -1) == batch["y"]).astype(jnp.float32),
        }

    def check_data(self, model_outputs, batch, split):
        check_labels(batch["y"], int(model_outputs(batch["x"][:1]).shape[-1]), split)


class ElasticWeightConsolidation(Objective):
    """Cross-entropy plus the EWC penalty (Kirkpatrick et al. 2017)::

        L(θ) = −(1/B) Σ_b log softmax(f_θ(x_b))[y_b]  +  (λ/2) Σ_k F_k (θ_k − θ*_k)²

    with ``F`` the diagonal Fisher information of an earlier task and ``θ*`` the weights
    learnt on it (``fisher`` and ``anchor``: trees shaped like the model's ``nnx.Param``
    state). ``strength`` is λ; λ = 0 is plain fine-tuning. All three are pytree leaves.
    """

    fisher: PyTree
    anchor: PyTree
    strength: jax.Array

    def loss(self, model, batch, key):
        loss, metrics = Classification().loss(model, batch, key)
        params = nnx.state(model, nnx.Param)
        penalty = sum(
            jnp.sum(f * (p - a) ** 2)
            for f, p, a in zip(*map(jax.tree.leaves, (self.fisher, params, self.anchor)),
                               strict=True)
        )  # fmt: skip
        return loss + 0.5 * self.strength * penalty, metrics

    def metrics(self, model, batch):
        return Classification().metrics(model, batch)

    def check_data(self, model_outputs, batch, split):
        Classification().check_data(model_outputs, batch, split)


class NegativeELBO(Objective):
    """The variational autoencoder's loss: the mean negative ELBO (``models.vae.VAE``).

    Train: ``L = (1/B) Σ_b −ELBO(x_b)`` with one reparameterised sample of ``z`` drawn
    from the step's key. Eval: ``loss`` per example with ``z`` drawn from ``eval_key``
    (fixed, so every epoch's test loss uses the same noise). ``batch = {"x": images}``.
    """

    eval_key: jax.Array

    def loss(self, model, batch, key):
        return model.negative_elbo(batch["x"], key).mean(), {}

    def metrics(self, model, batch):
        return {"loss": model.negative_elbo(batch["x"], self.eval_key)}


class FunctionObjective(Objective):
    """An objective from plain functions: ``loss_fn(model, batch, key) -> (L, metrics)``
    and, optionally, ``metrics_fn(model, batch) -> {name: (b,) array}``."""

    loss_fn: Callable = struct.field(pytree_node=False)
    metrics_fn: Callable | None = struct.field(pytree_node=False, default=None)

    def loss(self, model, batch, key):
        return self.loss_fn(model, batch, key)

    def metrics(self, model, batch):
        return {} if self.metrics_fn is None else self.metrics_fn(model, batch)

    @property
    def evaluates(self) -> bool:
        return self.metrics_fn is not None


def as_objective(loss) -> Objective:
    """``loss`` itself if it is an :class:`Objective`, a :class:`FunctionObjective` around a
    callable, :class:`Classification` for ``None``."""
    if loss is None:
        return Classification()
    if isinstance(loss, Objective):
        return loss
    if callable(loss):
        return FunctionObjective(loss)
    raise ValueError(
        f"loss must be an Objective or a function (model, batch, key) -> (loss, metrics), "
        f"got {type(loss).__name__}"
    )


def check_labels(labels, num_classes: int, split: str) -> None:
    """Integer labels in ``[0, num_classes)``, or a ValueError naming the split."""
    labels = np.asarray(labels)
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"y_{split} must hold integer class labels, got dtype {labels.dtype}")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"y_{split} holds labels in [{labels.min()}, {labels.max()}], "
            f"valid labels are 0..{num_classes - 1}"
        )
