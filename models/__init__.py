"""Flax NNX models, all called as ``model(x, train=False)`` or
``model(x, train=True, rngs=nnx.Rngs(dropout=key))`` and returning logits ``(N, classes)``
(the VAE differs: see `VAE`). Build them by name with `build`."""

from optlab.models.cnn import CNN2C2D, VGG16, AdamPaperCNN
from optlab.models.mlp import MLP, LogisticRegression
from optlab.models.recurrent import RNNClassifier
from optlab.models.registry import available, build, count_params, options
from optlab.models.transformer import EncoderBlock, TransformerClassifier
from optlab.models.vae import VAE

__all__ = [
    "MLP",
    "VAE",
    "VGG16",
    "AdamPaperCNN",
    "CNN2C2D",
    "EncoderBlock",
    "LogisticRegression",
    "RNNClassifier",
    "TransformerClassifier",
    "available",
    "build",
    "count_params",
    "options",
]
