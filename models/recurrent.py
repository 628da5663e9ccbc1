"""A recurrent classifier (LSTM or GRU) that reads an image row by row."""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx
from optlab.models._common import as_shape, check_input

CELLS = {"lstm": nnx.LSTMCell, "gru": nnx.GRUCell}


class RNNClassifier(nnx.Module):
    """LSTM (Hochreiter & Schmidhuber 1997) or GRU (Cho et al. 2014) sequence classifier.

    An image ``(H, W, C)`` is read as a sequence of ``H`` steps of ``W·C`` features, one
    row per step ("sequential MNIST" by rows, Le, Jaitly & Hinton 2015 use pixels); an input
    shape ``(T, F, ...)`` in general is ``T`` steps of ``prod(F, ...)`` features. The last
    layer's final hidden state ``h_T`` goes through dropout to a linear layer for the logits.
    Layers are stacked with ``num_layers``; carries start at zero.

    Args:
      input_shape: ``(H, W, C)`` (or ``(T, F)``).
      num_classes: number of logits.
      cell: ``"lstm"`` or ``"gru"``.
      hidden: hidden state size.
      num_layers: number of stacked recurrent layers.
      dropout: dropout rate on ``h_T``.
      rngs: ``nnx.Rngs`` for the parameters.
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        *,
        cell: str = "lstm",
        hidden: int = 128,
        num_layers: int = 1,
        dropout: float = 0.0,
        rngs: nnx.Rngs,
    ):
        self.input_shape = as_shape(input_shape)
        if len(self.input_shape) < 2:
            raise ValueError(
                f"RNNClassifier needs input_shape (steps, features...), got {self.input_shape}"
            )
        if cell not in CELLS:
            raise ValueError(f"unknown cell {cell!r}; valid: {', '.join(CELLS)}")
        self.num_classes = num_classes
        self.cell_name = cell
        self.hidden = hidden
        sizes = (math.prod(self.input_shape[1:]), *([hidden] * num_layers))
        self.layers = nnx.List(
            nnx.RNN(CELLS[cell](n_in, n_out, rngs=rngs), rngs=False)
            for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=True)
        )
        self.dropout = nnx.Dropout(dropout)
        self.head = nnx.Linear(hidden, num_classes, rngs=rngs)

    def _zero_carry(self, batch: int, dtype) -> jax.Array | tuple[jax.Array, jax.Array]:
        h = jnp.zeros((batch, self.hidden), dtype)
        return (h, h) if self.cell_name == "lstm" else h  # LSTM carries (c, h)

    def __call__(self, x: jax.Array, train: bool = False, rngs: nnx.Rngs | None = None):
        check_input("RNNClassifier", x, self.input_shape)
        h = x.reshape(x.shape[0], self.input_shape[0], -1)  # (N, steps, features)
        for rnn in self.layers:
            h = rnn(h, initial_carry=self._zero_carry(x.shape[0], h.dtype))
        h = self.dropout(h[:, -1], deterministic=not train, rngs=rngs)
        return self.head(h)
