"""Multiclass logistic regression and the multilayer perceptron."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import jax
from flax import nnx
from optlab.models._common import activation as get_activation
from optlab.models._common import as_shape, check_input


class LogisticRegression(nnx.Module):
    """Multiclass logistic regression: ``logits = x W + b`` on the flattened input.

    The convex baseline of Kingma & Ba 2015 (Adam, Fig. 1: MNIST, 784 → 10; IMDB with 50%
    dropout on the inputs) and DeepOBS ``mnist_logreg`` (Schneider et al. 2019, zero init).

    Args:
      input_shape: one example's shape, e.g. ``(28, 28, 1)``; ``(N, D)`` inputs are also
        accepted, ``D = prod(input_shape)``.
      num_classes: number of logits.
      zero_init: start from ``W = 0`` (DeepOBS); otherwise Flax's default LeCun normal.
      input_dropout: dropout rate on the inputs (the Adam paper's IMDB run uses 0.5).
      rngs: ``nnx.Rngs`` for the parameters.
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        *,
        zero_init: bool = False,
        input_dropout: float = 0.0,
        rngs: nnx.Rngs,
    ):
        self.input_shape = as_shape(input_shape)
        self.num_classes = num_classes
        init = nnx.initializers.zeros_init() if zero_init else nnx.nn.linear.default_kernel_init
        self.linear = nnx.Linear(
            math.prod(self.input_shape), num_classes, kernel_init=init, rngs=rngs
        )
        self.input_dropout = nnx.Dropout(input_dropout)

    def __call__(self, x: jax.Array, train: bool = False, rngs: nnx.Rngs | None = None):
        check_input("LogisticRegression", x, self.input_shape, flat_ok=True)
        x = x.reshape(x.shape[0], -1)
        x = self.input_dropout(x, deterministic=not train, rngs=rngs)
        return self.linear(x)


class MLP(nnx.Module):
    """Multilayer perceptron ``D → widths[0] → … → widths[-1] → num_classes``.

    Each hidden layer is ``h = dropout(activation(h W + b))``; the inputs can have their own
    dropout. The default, one hidden layer of 100 ReLU units (64-100-10 on the embedded
    digits), is the one ``optlab compare`` trains. Covers the nets of
      * Kingma & Ba 2015 (Adam, Fig. 2): 784-1000-1000-10, ReLU, dropout;
      * Zeiler 2012 (ADADELTA, Fig. 1): 784-500-300-10, ReLU (``widths=(500, 300)``);
      * DeepOBS ``mnist_mlp`` (Schneider et al. 2019): 784-1000-500-100-10, ReLU, weights
        truncated normal with std 3e-2 (``widths=(1000, 500, 100), init_std=3e-2``).

    Args:
      input_shape: one example's shape; ``(N, D)`` inputs are accepted too.
      num_classes: number of logits.
      widths: hidden layer widths (default one layer of 100).
      activation: ``"relu"``, ``"tanh"``, ``"sigmoid"``, ``"softplus"``, ``"gelu"``, … or a
        callable.
      dropout: dropout rate after every hidden activation.
      input_dropout: dropout rate on the inputs.
      init_std: ``None`` keeps Flax's defaults (LeCun normal weights, zero biases); a float
        draws every weight from a normal with this std truncated at ±2 std (TensorFlow's
        ``truncated_normal_initializer``, as DeepOBS), biases zero.
      rngs: ``nnx.Rngs`` for the parameters.
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        *,
        widths: Sequence[int] = (100,),
        activation: str | Callable[[jax.Array], jax.Array] = "relu",
        dropout: float = 0.0,
        input_dropout: float = 0.0,
        init_std: float | None = None,
        rngs: nnx.Rngs,
    ):
        self.input_shape = as_shape(input_shape)
        self.num_classes = num_classes
        self.activation = get_activation(activation)
        if init_std is None:
            kernel_init = nnx.nn.linear.default_kernel_init
        else:
            kernel_init = nnx.initializers.truncated_normal(stddev=init_std)
        sizes = (math.prod(self.input_shape), *widths)
        self.hidden = nnx.List(
            nnx.Linear(n_in, n_out, kernel_init=kernel_init, rngs=rngs)
            for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=True)
        )
        self.head = nnx.Linear(sizes[-1], num_classes, kernel_init=kernel_init, rngs=rngs)
        self.input_dropout = nnx.Dropout(input_dropout)
        self.dropout = nnx.Dropout(dropout)

    def __call__(self, x: jax.Array, train: bool = False, rngs: nnx.Rngs | None = None):
        check_input("MLP", x, self.input_shape, flat_ok=True)
        h = x.reshape(x.shape[0], -1)
        h = self.input_dropout(h, deterministic=not train, rngs=rngs)
        for layer in self.hidden:
            h = self.dropout(self.activation(layer(h)), deterministic=not train, rngs=rngs)
        return self.head(h)
