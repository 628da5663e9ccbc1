"""Models by name: `build`, `available`, and `count_params`."""

from __future__ import annotations

import inspect
import math
import operator
from collections.abc import Sequence

import jax
from flax import nnx
from optlab.models.cnn import CNN2C2D, VGG16, AdamPaperCNN
from optlab.models.mlp import MLP, LogisticRegression
from optlab.models.recurrent import RNNClassifier
from optlab.models.transformer import TransformerClassifier
from optlab.models.vae import VAE

# name -> (class, keyword arguments the name fixes)
_REGISTRY: dict[str, tuple[type[nnx.Module], dict]] = {
    "logreg": (LogisticRegression, {}),
    "mlp": (MLP, {}),
    "adam_cnn": (AdamPaperCNN, {}),
    "cnn_2c2d": (CNN2C2D, {}),
    "vgg16": (VGG16, {}),
    "lstm": (RNNClassifier, {"cell": "lstm"}),
    "gru": (RNNClassifier, {"cell": "gru"}),
    "transformer": (TransformerClassifier, {}),
    "vae": (VAE, {}),
}


def available() -> list[str]:
    """Names accepted by `build`, in the registry's order."""
    return list(_REGISTRY)


def options(name: str) -> dict[str, object]:
    """The keyword options `build(name, ...)` accepts, with their defaults."""
    cls, fixed = _lookup(name)
    parameters = inspect.signature(cls.__init__).parameters.values()
    return {
        p.name: p.default
        for p in parameters
        if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name != "rngs" and p.name not in fixed
    }


def build(
    name: str,
    input_shape: Sequence[int],
    num_classes: int,
    *,
    seed: int | jax.Array = 0,
    **kwargs,
) -> nnx.Module:
    """Build model `name` for inputs of shape `(N, *input_shape)`.

    Args:
      name: one of `available()`.
      input_shape: one example's shape, e.g. `(28, 28, 1)`.
      num_classes: number of logits.
      seed: an int or a PRNG key (typed or raw uint32) for the parameters; a traced key
        works, so model creation can be vmapped over keys.
      **kwargs: the model's options (see `options(name)`).

    Raises:
      ValueError: an unknown name or option.
    """
    cls, fixed = _lookup(name)
    unknown = sorted(set(kwargs) - set(options(name)))
    if unknown:
        raise ValueError(
            f"unknown option(s) {', '.join(unknown)} for model {name!r}; "
            f"valid: {', '.join(options(name))}"
        )
    key = seed if isinstance(seed, jax.Array) else operator.index(seed)
    return cls(input_shape, num_classes, rngs=nnx.Rngs(key), **fixed, **kwargs)


def count_params(model: nnx.Module) -> int:
    """Number of trainable scalars: the sizes of the model's `nnx.Param` leaves.

    BatchNorm's running statistics are `nnx.BatchStat`, not counted. Works on abstract
    models from `nnx.eval_shape` too.
    """
    leaves = jax.tree.leaves(nnx.state(model, nnx.Param))
    return sum(math.prod(leaf.shape) for leaf in leaves)


def _lookup(name: str) -> tuple[type[nnx.Module], dict]:
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(_REGISTRY)}")
    return _REGISTRY[name]
