"""A small Vision Transformer classifier: image patches as tokens."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx
from optlab.models._common import as_shape, check_input


class EncoderBlock(nnx.Module):
    """Pre-norm Transformer encoder block (Xiong et al. 2020).

    ``x ← x + dropout(MHSA(LN(x)))``, then ``x ← x + dropout(W₂ gelu(W₁ LN(x)))``.
    """

    def __init__(self, dim: int, num_heads: int, mlp_dim: int, dropout: float, *, rngs):
        self.attention_norm = nnx.LayerNorm(dim, rngs=rngs)
        self.attention = nnx.MultiHeadAttention(
            num_heads=num_heads, in_features=dim, decode=False, keep_rngs=False, rngs=rngs
        )
        self.mlp_norm = nnx.LayerNorm(dim, rngs=rngs)
        self.mlp_in = nnx.Linear(dim, mlp_dim, rngs=rngs)
        self.mlp_out = nnx.Linear(mlp_dim, dim, rngs=rngs)
        self.dropout = nnx.Dropout(dropout)

    def __call__(self, x: jax.Array, train: bool = False, rngs: nnx.Rngs | None = None):
        h = self.attention(self.attention_norm(x), deterministic=True)
        x = x + self.dropout(h, deterministic=not train, rngs=rngs)
        h = self.mlp_out(nnx.gelu(self.mlp_in(self.mlp_norm(x))))
        return x + self.dropout(h, deterministic=not train, rngs=rngs)


class TransformerClassifier(nnx.Module):
    """Vision Transformer (Dosovitskiy et al. 2021, "An image is worth 16x16 words"), small.

    The image is cut into ``patch_size × patch_size`` patches, each linearly embedded to
    ``dim`` (a strided convolution), plus a learned positional embedding (and a learned
    ``[CLS]`` token when ``pool="cls"``); ``depth`` pre-norm encoder blocks; a final
    LayerNorm; the tokens are mean-pooled (``pool="mean"``) or the ``[CLS]`` token is taken;
    a linear layer gives the logits.

    Args:
      input_shape: ``(H, W, C)`` with ``H`` and ``W`` multiples of ``patch_size``.
      num_classes: number of logits.
      patch_size: side of a square patch (4 gives 49 tokens on 28×28, 64 on 32×32).
      dim: token width.
      depth: number of encoder blocks.
      num_heads: attention heads (``dim`` must be a multiple of it).
      mlp_dim: hidden width of each block's MLP (default ``2 · dim``).
      dropout: dropout rate on the embeddings and on each residual branch.
      pool: ``"mean"`` or ``"cls"``.
      rngs: ``nnx.Rngs`` for the parameters.
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        *,
        patch_size: int = 4,
        dim: int = 64,
        depth: int = 2,
        num_heads: int = 4,
        mlp_dim: int | None = None,
        dropout: float = 0.0,
        pool: str = "mean",
        rngs: nnx.Rngs,
    ):
        self.input_shape = as_shape(input_shape)
        if len(self.input_shape) != 3:
            raise ValueError(f"TransformerClassifier needs (H, W, C), got {self.input_shape}")
        height, width, channels = self.input_shape
        if height % patch_size or width % patch_size:
            raise ValueError(
                f"TransformerClassifier: patch_size {patch_size} must divide the image sides "
                f"{height}×{width}"
            )
        if dim % num_heads:
            raise ValueError(f"dim {dim} must be a multiple of num_heads {num_heads}")
        if pool not in ("mean", "cls"):
            raise ValueError(f"unknown pool {pool!r}; valid: mean, cls")
        self.num_classes = num_classes
        self.pool = pool
        self.patch_embedding = nnx.Conv(
            channels,
            dim,
            kernel_size=(patch_size, patch_size),
            strides=patch_size,
            padding="VALID",
            rngs=rngs,
        )
        num_tokens = (height // patch_size) * (width // patch_size) + (pool == "cls")
        init = nnx.initializers.normal(stddev=0.02)
        self.position_embedding = nnx.Param(init(rngs.params(), (1, num_tokens, dim)))
        self.cls_token = nnx.Param(jnp.zeros((1, 1, dim))) if pool == "cls" else None
        self.blocks = nnx.List(
            EncoderBlock(dim, num_heads, mlp_dim or 2 * dim, dropout, rngs=rngs)
            for _ in range(depth)
        )
        self.final_norm = nnx.LayerNorm(dim, rngs=rngs)
        self.head = nnx.Linear(dim, num_classes, rngs=rngs)
        self.dropout = nnx.Dropout(dropout)

    def __call__(self, x: jax.Array, train: bool = False, rngs: nnx.Rngs | None = None):
        check_input("TransformerClassifier", x, self.input_shape)
        tokens = self.patch_embedding(x)
        tokens = tokens.reshape(x.shape[0], -1, tokens.shape[-1])  # (N, T, dim)
        if self.cls_token is not None:
            cls = jnp.broadcast_to(self.cls_token[...], (x.shape[0], 1, tokens.shape[-1]))
            tokens = jnp.concatenate([cls, tokens], axis=1)
        tokens = self.dropout(
            tokens + self.position_embedding[...], deterministic=not train, rngs=rngs
        )
        for block in self.blocks:
            tokens = block(tokens, train=train, rngs=rngs)
        tokens = self.final_norm(tokens)
        pooled = tokens[:, 0] if self.pool == "cls" else tokens.mean(axis=1)
        return self.head(pooled)
