"""models._conv: the loop-friendly convolution equals lax.conv_general_dilated, with gradients."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax
from optlab import models
from optlab.models._conv import NHWC, conv_general_dilated

CASES = [
    ((2, 9, 7, 3), (5, 5, 3, 4), "SAME"),
    ((2, 8, 8, 3), (3, 3, 3, 2), "VALID"),
    ((1, 6, 5, 2), (2, 3, 2, 3), ((1, 0), (2, 1))),  # even kernel, asymmetric padding
    ((3, 7, 7, 1), (4, 4, 1, 2), "SAME"),
]


def _loss(conv, padding, strides=(1, 1)):
    def loss(x, kernel):
        dn = lax.conv_dimension_numbers(x.shape, kernel.shape, NHWC)
        return jnp.sum(jnp.sin(conv(x, kernel, strides, padding, dimension_numbers=dn)))

    return loss


@pytest.mark.parametrize("x_shape, kernel_shape, padding", CASES)
def test_value_and_gradients_equal_lax(x_shape, kernel_shape, padding):
    x = jax.random.normal(jax.random.key(0), x_shape)
    kernel = jax.random.normal(jax.random.key(1), kernel_shape)
    ours = jax.value_and_grad(_loss(conv_general_dilated, padding), (0, 1))(x, kernel)
    reference = jax.value_and_grad(_loss(lax.conv_general_dilated, padding), (0, 1))(x, kernel)
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(reference), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


ON_CPU_ONLY = pytest.mark.skipif(
    jax.default_backend() != "cpu", reason="the custom gradient is used on CPU only"
)


@ON_CPU_ONLY
def test_plain_convolutions_take_the_custom_gradient_and_others_fall_back():
    x, kernel = jnp.ones((2, 8, 8, 3)), jnp.ones((3, 3, 3, 4))
    plain = jax.make_jaxpr(_loss(conv_general_dilated, "SAME"))(x, kernel)
    strided = jax.make_jaxpr(_loss(conv_general_dilated, "SAME", strides=(2, 2)))(x, kernel)
    assert "custom_vjp_call" in str(plain)
    assert "custom_vjp_call" not in str(strided)
    np.testing.assert_allclose(
        jax.grad(_loss(conv_general_dilated, "SAME", (2, 2)), 1)(x, kernel),
        jax.grad(_loss(lax.conv_general_dilated, "SAME", (2, 2)), 1)(x, kernel),
    )


@ON_CPU_ONLY
@pytest.mark.parametrize("name", ["adam_cnn", "cnn_2c2d", "vgg16"])
def test_cnn_models_use_the_loop_friendly_convolution(name):
    model = models.build(name, (28, 28, 1), 10, seed=0)
    jaxpr = jax.make_jaxpr(lambda x: model(x))(jnp.zeros((1, 28, 28, 1)))
    assert "custom_vjp_call" in str(jaxpr)
