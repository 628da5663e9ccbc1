"""Convolutional classifiers: the Adam paper's CNN, DeepOBS's 2c2d and VGG16.

All pooling uses 'SAME' padding, so a stride-2 pool maps a side of ``s`` pixels to
``⌈s / 2⌉``: for even sides this equals unpadded pooling, and odd sides (MNIST's 7 after
two pools) keep their border pixels instead of dropping them.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import jax
from flax import nnx
from optlab.models._common import as_shape, check_input, pooled
from optlab.models._conv import conv_general_dilated


def _image_shape(model: str, input_shape: Sequence[int]) -> tuple[int, int, int]:
    shape = as_shape(input_shape)
    if len(shape) != 3:
        raise ValueError(f"{model} needs images (H, W, C), got input_shape {shape}")
    return shape


def _conv(c_in: int, c_out: int, size: int, rngs: nnx.Rngs) -> nnx.Conv:
    """A ``size × size`` 'SAME' convolution whose gradients stay fast inside the
    engine's ``lax.scan`` on CPU (see :mod:`models._conv`)."""
    return nnx.Conv(
        c_in, c_out, kernel_size=(size, size), padding="SAME", rngs=rngs,
        conv_general_dilated=conv_general_dilated,
    )  # fmt: skip


def _pool(x: jax.Array, window: int) -> jax.Array:
    """Max pool with a ``window × window`` window, stride 2, 'SAME' padding."""
    return nnx.max_pool(x, (window, window), strides=(2, 2), padding="SAME")


class _ConvPoolDense(nnx.Module):
    """``[dropout] → (conv k×k (SAME) → ReLU → max-pool stride 2) × n → FC → ReLU → dropout →
    FC num_classes``: the shared body of :class:`AdamPaperCNN` and :class:`CNN2C2D`."""

    def __init__(
        self,
        name: str,
        input_shape: Sequence[int],
        num_classes: int,
        *,
        channels: Sequence[int],
        kernel: int,
        pool_window: int,
        dense: int,
        input_dropout: float,
        dropout: float,
        rngs: nnx.Rngs,
    ):
        self.name = name
        self.input_shape = height, width, in_channels = _image_shape(name, input_shape)
        self.num_classes = num_classes
        self.pool_window = pool_window
        sizes = (in_channels, *channels)
        self.convs = nnx.List(
            _conv(c_in, c_out, kernel, rngs)
            for c_in, c_out in zip(sizes[:-1], sizes[1:], strict=True)
        )
        flat = pooled(height, len(channels)) * pooled(width, len(channels)) * sizes[-1]
        self.dense = nnx.Linear(flat, dense, rngs=rngs)
        self.head = nnx.Linear(dense, num_classes, rngs=rngs)
        self.input_dropout = nnx.Dropout(input_dropout)
        self.dropout = nnx.Dropout(dropout)

    def __call__(self, x: jax.Array, train: bool = False, rngs: nnx.Rngs | None = None):
        check_input(self.name, x, self.input_shape)
        h = self.input_dropout(x, deterministic=not train, rngs=rngs)
        for conv in self.convs:
            h = _pool(nnx.relu(conv(h)), window=self.pool_window)
        h = nnx.relu(self.dense(h.reshape(h.shape[0], -1)))
        h = self.dropout(h, deterministic=not train, rngs=rngs)
        return self.head(h)


class AdamPaperCNN(_ConvPoolDense):
    """The CIFAR-10 CNN of Kingma & Ba 2015 (Adam, Sec. 6.3, Fig. 3), "c64-c64-c128-1000".

    Three stages ``conv 5×5 (SAME) → ReLU → max-pool 3×3 stride 2``, with 64, 64 and 128
    channels, then a 1000-unit ReLU layer and the logits; optional dropout on the input and
    on the 1000-unit layer (the paper's "+dropout" runs). On 32×32 images the pools give
    32 → 16 → 8 → 4, so the dense layer sees 4·4·128 = 2048 features.

    Args:
      input_shape: ``(H, W, C)``.
      num_classes: number of logits.
      channels: the three stages' channel counts.
      dense: width of the fully connected hidden layer.
      input_dropout: dropout rate on the input image.
      dropout: dropout rate on the dense hidden layer.
      rngs: ``nnx.Rngs`` for the parameters.
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        *,
        channels: Sequence[int] = (64, 64, 128),
        dense: int = 1000,
        input_dropout: float = 0.0,
        dropout: float = 0.0,
        rngs: nnx.Rngs,
    ):
        super().__init__(
            "AdamPaperCNN", input_shape, num_classes, channels=channels, kernel=5,
            pool_window=3, dense=dense, input_dropout=input_dropout, dropout=dropout, rngs=rngs,
        )  # fmt: skip


class CNN2C2D(_ConvPoolDense):
    """DeepOBS ``fmnist_2c2d`` / ``mnist_2c2d`` (Schneider, Balles & Hennig 2019).

    ``conv 5×5×32 (SAME) → ReLU → max-pool 2 → conv 5×5×64 (SAME) → ReLU → max-pool 2 →
    FC 1024 → ReLU → FC num_classes``. On 28×28×1 inputs: 3,274,634 parameters.
    Flax default initialisation.

    Args:
      input_shape: ``(H, W, C)``.
      num_classes: number of logits.
      channels: the two convolutions' channel counts.
      dense: width of the fully connected hidden layer.
      dropout: dropout rate on the dense hidden layer (DeepOBS uses none).
      rngs: ``nnx.Rngs`` for the parameters.
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        *,
        channels: Sequence[int] = (32, 64),
        dense: int = 1024,
        dropout: float = 0.0,
        rngs: nnx.Rngs,
    ):
        super().__init__(
            "CNN2C2D", input_shape, num_classes, channels=channels, kernel=5, pool_window=2,
            dense=dense, input_dropout=0.0, dropout=dropout, rngs=rngs,
        )  # fmt: skip


VGG16_STAGES = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))  # (channels, convs) per stage


class VGG16(nnx.Module):
    """VGG16 (Simonyan & Zisserman 2015, configuration D) for small images.

    Thirteen ``conv 3×3 (SAME) → [BatchNorm] → ReLU`` layers in five stages of 64, 128, 256,
    512, 512 channels (2, 2, 3, 3, 3 convolutions), each stage ending in a 2×2 stride-2 max
    pool, then the classifier ``FC head_width → ReLU → dropout → FC head_width → ReLU →
    dropout → FC num_classes``.

    Small images: the classifier is sized for them (512-512 instead of ImageNet's 4096-4096,
    as in the usual CIFAR-10 VGG16), and pools use 'SAME' padding (⌈s/2⌉), so 32×32 inputs
    go 32 → 16 → 8 → 4 → 2 → 1 exactly as unpadded pooling would, and 28×28 inputs (MNIST,
    Fashion-MNIST) go 28 → 14 → 7 → 4 → 2 → 1: the last odd side is padded, not cropped, and
    both reach a 1×1×512 feature map. With BatchNorm the convolutions keep their biases,
    as in torchvision's ``vgg16_bn``; BatchNorm uses batch statistics when ``train=True``
    and running averages (momentum 0.9, as in Flax's ImageNet example) otherwise.

    Args:
      input_shape: ``(H, W, C)``, e.g. ``(32, 32, 3)`` or ``(28, 28, 1)``.
      num_classes: number of logits.
      batch_norm: BatchNorm after every convolution.
      widths: the five stages' channel counts (shrink them for tests).
      head_width: width of the two hidden classifier layers.
      dropout: dropout rate in the classifier (0.5 as in the VGG paper).
      rngs: ``nnx.Rngs`` for the parameters.
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        *,
        batch_norm: bool = True,
        widths: Sequence[int] = tuple(c for c, _ in VGG16_STAGES),
        head_width: int = 512,
        dropout: float = 0.5,
        rngs: nnx.Rngs,
    ):
        self.input_shape = height, width, in_channels = _image_shape("VGG16", input_shape)
        self.num_classes = num_classes
        if len(widths) != len(VGG16_STAGES):
            raise ValueError(f"VGG16 widths needs {len(VGG16_STAGES)} stages, got {widths}")
        channels = [c for c, (_, n) in zip(widths, VGG16_STAGES, strict=True) for _ in range(n)]
        # index of each stage's last convolution: (1, 3, 6, 9, 12)
        self.pool_after = tuple(n - 1 for n in itertools.accumulate(n for _, n in VGG16_STAGES))
        sizes = (in_channels, *channels)
        self.convs = nnx.List(
            _conv(c_in, c_out, 3, rngs) for c_in, c_out in zip(sizes[:-1], sizes[1:], strict=True)
        )
        self.norms = nnx.List(
            nnx.BatchNorm(c, momentum=0.9, rngs=rngs) for c in (channels if batch_norm else ())
        )
        flat = pooled(height, 5) * pooled(width, 5) * channels[-1]
        self.fc1 = nnx.Linear(flat, head_width, rngs=rngs)
        self.fc2 = nnx.Linear(head_width, head_width, rngs=rngs)
        self.head = nnx.Linear(head_width, num_classes, rngs=rngs)
        self.dropout = nnx.Dropout(dropout)

    def __call__(self, x: jax.Array, train: bool = False, rngs: nnx.Rngs | None = None):
        check_input("VGG16", x, self.input_shape)
        h = x
        for i, conv in enumerate(self.convs):
            h = conv(h)
            if self.norms:
                h = self.norms[i](h, use_running_average=not train)
            h = nnx.relu(h)
            if i in self.pool_after:
                h = _pool(h, window=2)
        h = h.reshape(h.shape[0], -1)
        for fc in (self.fc1, self.fc2):
            h = self.dropout(nnx.relu(fc(h)), deterministic=not train, rngs=rngs)
        return self.head(h)
