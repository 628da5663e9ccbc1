"""Tests of every model: shapes, seeds, gradients, dropout, BatchNorm, sizes, vmap."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from optlab import models

MNIST, CIFAR = (28, 28, 1), (32, 32, 3)

# Tiny instances of every model, with dropout wherever the model has it. Equal widths keep
# the number of distinct parameter shapes, hence of XLA compilations, small.
TINY = {
    "logreg": dict(input_dropout=0.5),
    "mlp": dict(widths=(4, 4), dropout=0.5, input_dropout=0.2),
    "adam_cnn": dict(channels=(2, 2, 2), dense=8, dropout=0.5, input_dropout=0.2),
    "cnn_2c2d": dict(channels=(2, 2), dense=8, dropout=0.5),
    "vgg16": dict(widths=(2, 2, 2, 2, 2), head_width=8, dropout=0.5),
    "lstm": dict(hidden=4, dropout=0.5),
    "gru": dict(hidden=4, dropout=0.5),
    "transformer": dict(dim=4, num_heads=2, depth=1, mlp_dim=4, dropout=0.5, pool="cls"),
    "vae": dict(hidden=4, latent_dim=2),
}
WITH_DROPOUT = [name for name in TINY if name != "vae"]
FLAT_OK = ["logreg", "mlp", "vae"]


@functools.cache
def _tiny(name: str, input_shape, seed: int) -> nnx.Module:
    return models.build(name, input_shape, 10, seed=seed, **TINY[name])


def tiny(name: str, input_shape=MNIST, seed: int = 0) -> nnx.Module:
    """A fresh copy of a tiny model (built once per process: building compiles)."""
    return nnx.clone(_tiny(name, input_shape, seed))


@functools.partial(nnx.jit, static_argnames="train")
def apply(model: nnx.Module, x: jax.Array, train: bool = False, key: jax.Array | None = None):
    """`model(x, train=...)` compiled once per model configuration and input shape."""
    return model(x, train=train, rngs=nnx.Rngs(dropout=key) if train else None)


@functools.cache
def images(input_shape=MNIST, batch: int = 3) -> jax.Array:
    return jax.random.uniform(jax.random.key(42), (batch, *input_shape), jnp.float32)


def leaves(model: nnx.Module, kind=nnx.Param) -> list[np.ndarray]:
    return [np.asarray(leaf) for leaf in jax.tree.leaves(nnx.state(model, kind))]


def test_available_names():
    expected = "logreg mlp adam_cnn cnn_2c2d vgg16 lstm gru transformer vae".split()
    assert sorted(models.available()) == sorted(expected)


@pytest.mark.parametrize("name", list(TINY))
def test_output_shape(name):
    x = images(MNIST, batch=2)
    expected = x.shape if name == "vae" else (2, 10)
    assert apply(tiny(name), x).shape == expected
    assert apply(tiny(name), x, train=True, key=jax.random.key(0)).shape == expected


@pytest.mark.parametrize("name", [name for name in TINY if name not in FLAT_OK])
def test_output_shape_cifar(name):  # the flattening models are checked on (N, D) inputs
    x = images(CIFAR, batch=2)
    assert apply(tiny(name, CIFAR), x).shape == (x.shape if name == "vae" else (2, 10))


@pytest.mark.parametrize("name", FLAT_OK)
def test_flat_inputs_equal_images(name):
    model, x = tiny(name), images()
    flat = apply(model, x.reshape(x.shape[0], -1))
    assert flat.shape == ((3, 784) if name == "vae" else (3, 10))
    np.testing.assert_allclose(flat.reshape(-1), apply(model, x).reshape(-1), rtol=1e-6)


@pytest.mark.parametrize("name", list(TINY))
def test_seed_determinism(name):
    first, same, other = tiny(name), models.build(name, MNIST, 10, **TINY[name]), tiny(name, seed=1)
    for a, b in zip(leaves(first), leaves(same), strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(apply(first, images()), apply(same, images()))
    differing = [not np.array_equal(a, b) for a, b in zip(leaves(same), leaves(other), strict=True)]
    assert all(differing[i] for i, a in enumerate(leaves(same)) if np.ptp(a) > 0)
    assert not np.allclose(apply(same, images()), apply(other, images()))


@pytest.mark.parametrize("name", list(TINY))
def test_bad_input_shape_raises(name):
    model = tiny(name)
    with pytest.raises(ValueError, match=r"expected input of shape \(N, 28, 28, 1\).*received"):
        model(jnp.zeros((2, 32, 32, 1)))
    with pytest.raises(ValueError, match=r"received \(28, 28, 1\)"):
        model(jnp.zeros(MNIST))  # no batch axis


@pytest.mark.parametrize("name", WITH_DROPOUT)
def test_dropout_only_in_train_mode(name):
    model, x = tiny(name), images()
    key_0, key_1 = jax.random.key(0), jax.random.key(1)
    evaluation = apply(model, x)
    np.testing.assert_array_equal(evaluation, apply(model, x, train=False))
    train_0 = apply(model, x, train=True, key=key_0)
    np.testing.assert_array_equal(train_0, apply(model, x, train=True, key=key_0))
    assert not np.allclose(train_0, apply(model, x, train=True, key=key_1))
    if name != "vgg16":  # there train mode also switches BatchNorm to batch statistics
        assert not np.allclose(train_0, evaluation)


def test_batchnorm_stats_update_in_train_mode_only():
    model, x = tiny("vgg16"), images()
    before = leaves(model, nnx.BatchStat)
    eval_out = model(x, train=False)
    for s, s_now in zip(before, leaves(model, nnx.BatchStat), strict=True):
        np.testing.assert_array_equal(s, s_now)
    model(x, train=True, rngs=nnx.Rngs(dropout=0))
    # momentum 0.9 from mean 0, variance 1: running = 0.9 · initial + 0.1 · batch statistic
    first_conv = np.asarray(model.convs[0](x), np.float64)
    batch_mean, batch_var = first_conv.mean(axis=(0, 1, 2)), first_conv.var(axis=(0, 1, 2))
    np.testing.assert_allclose(model.norms[0].mean[...], 0.1 * batch_mean, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(model.norms[0].var[...], 0.9 + 0.1 * batch_var, rtol=1e-4)
    after = leaves(model, nnx.BatchStat)
    assert all(not np.array_equal(a, b) for a, b in zip(before, after, strict=True))
    assert not np.allclose(model(x, train=False), eval_out)  # eval now uses the new averages
    without_bn = nnx.eval_shape(lambda: models.build("vgg16", MNIST, 10, batch_norm=False))
    assert not jax.tree.leaves(nnx.state(without_bn, nnx.BatchStat))


@pytest.mark.parametrize("name", list(TINY))
def test_gradients_match_finite_differences(name):
    """Directional derivatives ``⟨∇L, v⟩`` (reverse mode, as training uses) against central
    differences, in float64.

    Train mode, so dropout (with fixed masks) and BatchNorm's batch statistics are in the
    differentiated function too. The parameters get a random offset first: zero-initialised
    biases put ReLUs exactly on their kink wherever dropout zeroes a layer's whole input.
    """
    graphdef, params, rest = nnx.split(tiny(name), nnx.Param, ...)
    with jax.enable_x64(True):
        flat, treedef = jax.tree.flatten(params)
        keys = jax.random.split(jax.random.key(7), len(flat))
        flat = [
            a.astype(jnp.float64) + 0.1 * jax.random.normal(k, a.shape, jnp.float64)
            for k, a in zip(keys, flat, strict=True)
        ]
        params = jax.tree.unflatten(treedef, flat)
        # BatchNorm's running statistics too: it writes float64 batch statistics into them.
        rest = jax.tree.map(
            lambda a: a.astype(jnp.float64) if jnp.issubdtype(a.dtype, jnp.floating) else a, rest
        )
        x = images().astype(jnp.float64)

        def loss(p):
            model = nnx.merge(graphdef, p, rest, copy=True)  # copy: BatchNorm writes its stats
            if name == "vae":
                return model.negative_elbo(x, jax.random.key(2)).mean()
            logits = model(x, train=True, rngs=nnx.Rngs(dropout=3))
            return jnp.mean(jax.nn.logsumexp(logits, axis=-1) - logits[:, 0])

        # A small step for the kinks of ReLUs and max-pools. Attention computes its softmax in
        # float32 (jax.nn.dot_product_attention), so the transformer's differences carry
        # float32 rounding: measured errors up to 4e-4 there; a wrong term gives order one.
        h, rtol = (1e-5, 2e-3) if name == "transformer" else (1e-7, 1e-5)

        @jax.jit
        def derivatives(p, v):
            grads = jax.grad(loss)(p)
            pairs = zip(jax.tree.leaves(grads), jax.tree.leaves(v), strict=True)
            jvp = sum(jnp.vdot(g, d) for g, d in pairs)
            shifted = lambda sign: jax.tree.map(lambda a, b: a + sign * h * b, p, v)  # noqa: E731
            return jvp, (loss(shifted(1)) - loss(shifted(-1))) / (2 * h)

        for seed in range(3):
            keys = jax.random.split(jax.random.key(10 + seed), len(flat))
            v = [jax.random.normal(k, a.shape, a.dtype) for k, a in zip(keys, flat, strict=True)]
            jvp, finite_difference = derivatives(params, jax.tree.unflatten(treedef, v))
            assert abs(jvp) > 1e-6
            np.testing.assert_allclose(jvp, finite_difference, rtol=rtol)


def test_vmap_over_seeds_in_build():
    keys = jax.random.split(jax.random.key(0), 3)
    states = jax.vmap(lambda k: nnx.split(models.build("mlp", (8, 8, 1), 10, seed=k))[1])(keys)
    kernel = states["head"]["kernel"][...]
    assert kernel.shape == (3, 100, 10)  # the default: one hidden layer of 100 units
    assert not np.allclose(kernel[0], kernel[1])
    one = models.build("mlp", (8, 8, 1), 10, seed=keys[1])
    np.testing.assert_allclose(kernel[1], one.head.kernel[...], rtol=1e-6)


@pytest.mark.parametrize("name", ["lstm", "vgg16", "transformer"])  # orthogonal, BN, own Params
def test_build_from_traced_key(name):
    keys = jax.random.split(jax.random.key(0), 2)
    build = functools.partial(models.build, name, MNIST, 10, **TINY[name])
    states = jax.jit(jax.vmap(lambda k: nnx.split(build(seed=k))[1]))(keys)
    one = nnx.split(tiny(name))[1]  # built eagerly from an integer seed
    # The same leaves as one model's, each with a leading axis of 2.
    traced = jax.tree_util.tree_flatten_with_path(states)[0]
    eager = jax.tree_util.tree_flatten_with_path(one)[0]
    assert [path for path, _ in traced] == [path for path, _ in eager]
    for (path, batched), (_, leaf) in zip(traced, eager, strict=True):
        assert batched.shape == (2, *leaf.shape) and batched.dtype == leaf.dtype, path


def test_seed_accepts_numpy_int_and_raw_key():
    a = leaves(models.build("logreg", (4,), 3, seed=np.int64(7)))
    b = leaves(models.build("logreg", (4,), 3, seed=jax.random.key(7)))
    c = leaves(models.build("logreg", (4,), 3, seed=jax.random.PRNGKey(7)))
    for x, y, z in zip(a, b, c, strict=True):
        np.testing.assert_array_equal(x, y)
        np.testing.assert_array_equal(x, z)


def test_unknown_name_and_option_raise():
    with pytest.raises(ValueError, match="unknown model 'resnet'.*logreg, mlp"):
        models.build("resnet", MNIST, 10)
    with pytest.raises(ValueError, match="unknown option.*depth.*valid: widths, activation"):
        models.build("mlp", MNIST, 10, depth=3)
    with pytest.raises(ValueError, match="cell"):
        models.build("lstm", MNIST, 10, cell="gru")  # fixed by the name
    with pytest.raises(ValueError, match="unknown activation 'swishy'"):
        models.build("mlp", MNIST, 10, widths=(3,), activation="swishy")
    with pytest.raises(ValueError, match="patch_size 5 must divide"):
        models.build("transformer", MNIST, 10, patch_size=5)
    with pytest.raises(ValueError, match="needs images"):
        models.build("vgg16", (784,), 10)


def test_truncated_normal_init_option():
    model = models.build("mlp", (100,), 10, widths=(1000,), init_std=3e-2)
    kernel = np.asarray(model.hidden[0].kernel[...])
    assert np.abs(kernel).max() <= 2 * 3e-2  # truncated at two standard deviations
    # std of N(0, σ²) truncated to ±2σ is 0.8796σ
    np.testing.assert_allclose(kernel.std(), 0.8796 * 3e-2, rtol=0.02)
    np.testing.assert_array_equal(model.hidden[0].bias[...], 0.0)
    logreg = models.build("logreg", MNIST, 10, zero_init=True)
    np.testing.assert_array_equal(logreg.linear.kernel[...], 0.0)


def test_vae_negative_elbo():
    model, x = tiny("vae"), images()
    key = jax.random.key(0)
    loss = model.negative_elbo(x, key)
    assert loss.shape == (3,)
    np.testing.assert_array_equal(loss, model.negative_elbo(x, key))
    assert not np.allclose(loss, model.negative_elbo(x, jax.random.key(1)))
    # With zero decoder output logits every pixel costs log 2 whatever z is, so
    # −ELBO = D·log 2 + KL(N(μ, σ²) ‖ N(0, 1)), the KL summed over the latent dimensions.
    model.reconstruction.kernel[...] = jnp.zeros_like(model.reconstruction.kernel[...])
    model.reconstruction.bias[...] = jnp.zeros_like(model.reconstruction.bias[...])
    mean, log_variance = (np.asarray(a, np.float64) for a in model.encode(x))
    variance = np.exp(log_variance)
    kl = 0.5 * np.sum(variance + mean**2 - 1.0 - log_variance, axis=-1)
    np.testing.assert_allclose(model.negative_elbo(x, key), 784 * np.log(2) + kl, rtol=1e-5)


def _linear(n_in: int, n_out: int) -> int:
    return n_in * n_out + n_out


def _conv(k: int, c_in: int, c_out: int) -> int:
    return k * k * c_in * c_out + c_out


def _count(name: str, input_shape, num_classes: int = 10, **kwargs) -> int:
    """Parameter count from shapes alone (`nnx.eval_shape`, nothing allocated or run)."""
    build = functools.partial(models.build, name, input_shape, num_classes, **kwargs)
    return models.count_params(nnx.eval_shape(build))


def test_parameter_counts_of_paper_architectures():
    # Kingma & Ba 2015, Fig. 2: 784-1000-1000-10
    adam_mlp = _linear(784, 1000) + _linear(1000, 1000) + _linear(1000, 10)
    assert adam_mlp == 1_796_010
    assert _count("mlp", MNIST, widths=(1000, 1000)) == adam_mlp
    # Zeiler 2012: 784-500-300-10; DeepOBS mnist_mlp: 784-1000-500-100-10
    assert _count("mlp", MNIST, widths=(500, 300)) == (
        _linear(784, 500) + _linear(500, 300) + _linear(300, 10)
    )
    assert _count("mlp", MNIST, widths=(1000, 500, 100), init_std=3e-2) == (
        _linear(784, 1000) + _linear(1000, 500) + _linear(500, 100) + _linear(100, 10)
    )
    assert _count("logreg", MNIST) == _linear(784, 10) == 7850
    # Adam paper CIFAR-10 CNN: pools 32 → 16 → 8 → 4
    assert _count("adam_cnn", CIFAR) == (
        _conv(5, 3, 64) + _conv(5, 64, 64) + _conv(5, 64, 128)
        + _linear(4 * 4 * 128, 1000) + _linear(1000, 10)
    )  # fmt: skip
    # DeepOBS fmnist_2c2d: 3,274,634 parameters
    fmnist_2c2d = _conv(5, 1, 32) + _conv(5, 32, 64) + _linear(7 * 7 * 64, 1024)
    assert _count("cnn_2c2d", MNIST) == fmnist_2c2d + _linear(1024, 10) == 3_274_634
    # VAE of Adam Fig. 4: 784 → 500 → (50, 50); 50 → 500 → 784
    assert _count("vae", MNIST) == (
        _linear(784, 500) + 2 * _linear(500, 50) + _linear(50, 500) + _linear(500, 784)
    )


@pytest.mark.parametrize("input_shape, batch_norm", [(CIFAR, True), (CIFAR, False), (MNIST, True)])
def test_vgg16_parameter_count(input_shape, batch_norm):
    channels = [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
    sizes = [input_shape[-1], *channels]
    convs = sum(_conv(3, c_in, c_out) for c_in, c_out in zip(sizes[:-1], sizes[1:], strict=True))
    norms = 2 * sum(channels) if batch_norm else 0  # scale and bias per channel
    head = _linear(512, 512) + _linear(512, 512) + _linear(512, 10)  # 1×1×512 features
    assert _count("vgg16", input_shape, batch_norm=batch_norm) == convs + norms + head


def test_recurrent_and_transformer_parameter_counts():
    features, hidden = 28, 128  # sequential MNIST by rows: 28 steps of 28 pixels
    lstm = 4 * (features * hidden + hidden * hidden + hidden)  # Flax: one bias per gate
    gru = 3 * (features * hidden + hidden * hidden + hidden)
    assert _count("lstm", MNIST, hidden=hidden) == lstm + _linear(hidden, 10)
    assert _count("gru", MNIST, hidden=hidden) == gru + _linear(hidden, 10)
    assert _count("lstm", MNIST, hidden=hidden, num_layers=2) == (
        lstm + 4 * (2 * hidden * hidden + hidden) + _linear(hidden, 10)
    )
    dim, mlp_dim, tokens = 64, 128, (28 // 4) ** 2
    block = 2 * (2 * dim) + 4 * _linear(dim, dim) + _linear(dim, mlp_dim) + _linear(mlp_dim, dim)
    vit = _conv(4, 1, dim) + tokens * dim + 2 * block + 2 * dim + _linear(dim, 10)
    assert _count("transformer", MNIST, dim=dim, depth=2, mlp_dim=mlp_dim) == vit
    assert _count("transformer", MNIST, pool="cls") == vit + dim + dim  # [CLS] token + position


def test_count_params_excludes_batch_stats():
    model = tiny("vgg16")
    total = sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(nnx.state(model)))
    stats = sum(leaf.size for leaf in jax.tree.leaves(nnx.state(model, nnx.BatchStat)))
    assert stats > 0 and models.count_params(model) == total - stats


def test_rnn_reads_rows_in_order():
    model, x = tiny("gru"), images()
    flipped = x[:, ::-1]  # same rows, reversed order: a different sequence
    assert not np.allclose(apply(model, x), apply(model, flipped))
    sequences = models.build("gru", (5, 7), 10, hidden=4)  # 5 steps of 7 features
    assert sequences(images((5, 7), batch=2)).shape == (2, 10)
