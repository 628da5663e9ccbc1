"""``optlab bench train``: training throughput, our engine vs a minimal jax + optax loop and
an equivalent PyTorch loop.

Two workloads of the Adam paper (Kingma & Ba 2015), both with Adam (lr 1e-3) at batch 128:
the MLP 784-1000-1000-10 on MNIST and the CNN c64-c64-c128-1000 on CIFAR-10 shapes. Three
rows per workload:

* ours: the very function ``engine.fit`` compiles for one epoch (``engine.population_epoch``
  of a population of one: the loop over device-resident minibatches, the per-step loss and
  metrics, the loss-finiteness flag and the end-of-epoch state check);
* the minimal jax + optax loop: one ``lax.scan`` over the same minibatch indices (the same
  gather inside the scan) of cross-entropy, ``value_and_grad`` and ``optax.adam``, with no
  metrics and no guard: the floor the engine's bookkeeping is measured against;
* PyTorch: the usual loop (``torch.optim.Adam(foreach=True)``, ``fused=True`` on a GPU) over
  the same arrays, with the same architecture and initial scale (LeCun normal weights, zero
  biases).

Epochs run interleaved (ours, minimal, torch, ours, ...) after one warm-up epoch each
(compilation excluded); the figure is ``examples / median epoch time`` and each row's time
relative to ours. PyTorch is optional (``pip install 'optlab[bench]'``); without it, its
rows are skipped.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from optlab import models
from optlab import optimizers as opt
from optlab.experiments import data, engine
from optlab.experiments.bench import timing

BATCH_SIZE = 128
LEARNING_RATE = 1e-3
TORCH_INSTALL = "pip install 'optlab[bench]'  (or: pip install torch==2.13.0)"

# workload -> (dataset, input shape, model name, model options, quick options, default steps)
WORKLOADS = {
    "mlp": ("mnist", (28, 28, 1), "mlp", {"widths": (1000, 1000)}, {"widths": (100,)}, None),
    "cnn": (
        "cifar10", (32, 32, 3), "adam_cnn", {}, {"channels": (8, 8, 16), "dense": 64}, 40
    ),
}  # fmt: skip


class Candidate(NamedTuple):
    """One framework's training loop on a workload, with state of its own.

    ``run()`` trains one epoch (carrying the weights and optimizer state from call to
    call) and returns something to wait on; ``train_loss()`` is the mean cross-entropy of
    the current weights over the workload's examples, in eval mode.
    """

    run: Callable[[], Any]
    train_loss: Callable[[], float]


def import_torch():
    """``torch``, or None when it is not installed."""
    try:
        import torch
    except ImportError:
        return None
    return torch


def load_data(dataset: str, input_shape, num_examples: int | None, synthetic: bool):
    """``(x, y, source)``: the training split of ``dataset``, or random data of its shape."""
    if not synthetic:
        try:
            ds = data.load(dataset, download=False)
            x, y = ds.x_train[:num_examples], ds.y_train[:num_examples]
            return x.astype(np.float32), y.astype(np.int32), f"{dataset} (train split)"
        except (ImportError, AttributeError, ValueError, OSError) as err:
            reason = f"{type(err).__name__}: {err}"
    else:
        reason = "--synthetic"
    n = num_examples or (60_000 if dataset == "mnist" else 50_000)
    rng = np.random.default_rng(0)
    x = rng.random((n, *input_shape), dtype=np.float32)
    y = rng.integers(0, 10, n).astype(np.int32)
    return x, y, f"synthetic {dataset}-shaped data ({reason.splitlines()[0][:120]})"


def _build(model_name: str, options: dict, input_shape):
    """``(graphdef, params, model_state)`` of the workload's model, initialised compiled
    (much faster than running the initialisers op by op)."""

    def make_model():
        return models.build(model_name, input_shape, 10, seed=0, **options)

    graphdef = engine.split_model(nnx.eval_shape(make_model))[0]
    params, model_state = jax.jit(lambda: engine.split_model(make_model())[1:])()
    return graphdef, params, model_state


def mean_cross_entropy(graphdef, x, y):
    """``(params, model_state) -> −(1/n) Σ_{i<n} log softmax(f_θ(x_i))[y_i]`` in eval mode
    over the first ``n = ⌊N/B⌋·B`` examples, in minibatches of ``B``; jitted."""
    steps = len(x) // BATCH_SIZE
    x = jnp.asarray(x[: steps * BATCH_SIZE]).reshape(steps, BATCH_SIZE, *x.shape[1:])
    y = jnp.asarray(y[: steps * BATCH_SIZE]).reshape(steps, BATCH_SIZE)

    @jax.jit
    def loss(params, model_state):
        model = nnx.merge(graphdef, params, model_state)

        def batch_loss(batch):
            logits = model(batch[0], train=False)
            return optax.softmax_cross_entropy_with_integer_labels(logits, batch[1]).mean()

        return jax.lax.map(batch_loss, (x, y)).mean()

    return lambda params, model_state: float(loss(params, model_state))


def jax_epoch(model_name: str, options: dict, x, y) -> Candidate:
    """One engine epoch of Adam over ``(x, y)``: the very function :func:`engine.fit`
    compiles (metrics, finiteness, state check included), on seed 0's training key."""
    graphdef, params, model_state = _build(model_name, options, x.shape[1:])
    config = engine.TrainConfig(epochs=1, batch_size=BATCH_SIZE)

    def make_tx():
        return opt.adam(LEARNING_RATE)

    _, states = engine.init_population(
        lambda key: models.build(model_name, x.shape[1:], 10, seed=0, **options),
        make_tx, {}, [0], 1,
        engine.WarmStart(params, model_state),
    )  # fmt: skip
    epoch = jax.jit(engine.population_epoch(graphdef, make_tx, config, single=True))
    train = {"x": jnp.asarray(x), "y": jnp.asarray(y)}
    objective = engine.Classification()
    carry = [states]

    def run():
        carry[0], output, finite = epoch(carry[0], {}, train, None, objective)
        return output.loss, finite

    def train_loss():
        state = engine.member(carry[0], 0)
        return loss(state.params, state.model_state)

    loss = mean_cross_entropy(graphdef, x, y)
    return Candidate(run, train_loss)


def minimal_epoch(model_name: str, options: dict, x, y) -> Candidate:
    """The smallest jax + optax epoch over ``(x, y)``: one ``lax.scan`` of cross-entropy,
    ``grad`` and ``optax.adam`` over minibatch indices gathered inside the scan; no
    metrics, no guard. Same initial weights and key (seed 0's training key, split per
    epoch into the permutation's key) as :func:`jax_epoch`, hence the same minibatches."""
    graphdef, params, model_state = _build(model_name, options, x.shape[1:])
    tx = optax.adam(LEARNING_RATE)
    x, y = jnp.asarray(x), jnp.asarray(y)
    steps = len(x) // BATCH_SIZE

    def loss_fn(params, xb, yb, key):
        model = nnx.merge(graphdef, params, model_state)
        logits = model(xb, train=True, rngs=nnx.Rngs(dropout=key))
        return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()

    @jax.jit
    def epoch(params, opt_state, key, step):
        key, perm_key = jax.random.split(key)
        order = jax.random.permutation(perm_key, len(x))[: steps * BATCH_SIZE]

        def body(carry, batch):
            params, opt_state, step = carry
            grads = jax.grad(loss_fn)(params, x[batch], y[batch], jax.random.fold_in(key, step))
            updates, opt_state = tx.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state, step + 1), None

        (params, opt_state, step), _ = jax.lax.scan(
            body, (params, opt_state, step), order.reshape(steps, BATCH_SIZE)
        )
        return params, opt_state, key, step

    carry = [(params, tx.init(params), engine.seed_keys(0)[1], jnp.zeros((), jnp.int32))]

    def run():
        carry[0] = epoch(*carry[0])
        return carry[0]

    loss = mean_cross_entropy(graphdef, x, y)
    return Candidate(run, lambda: loss(carry[0][0], model_state))


def lecun_normal_(torch, module) -> None:
    """Flax's default init on a torch module: truncated normal, variance 1/fan_in; zero bias."""
    for layer in module.modules():
        if isinstance(layer, torch.nn.Linear | torch.nn.Conv2d):
            fan_in = layer.weight[0].numel()
            std = math.sqrt(1 / fan_in) / 0.87962566103423978  # unit std after truncation at 2σ
            torch.nn.init.trunc_normal_(layer.weight, 0.0, std, -2 * std, 2 * std)
            torch.nn.init.zeros_(layer.bias)


def torch_model(torch, model_name: str, options: dict, input_shape):
    """The same architecture as ``models.build(model_name, ...)`` in torch (NCHW)."""
    nn = torch.nn
    height, width, channels = input_shape
    if model_name == "mlp":
        sizes = (height * width * channels, *options["widths"])
        layers = [nn.Flatten()]
        for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=True):
            layers += [nn.Linear(n_in, n_out), nn.ReLU()]
        layers.append(nn.Linear(sizes[-1], 10))
    else:  # adam_cnn: 3 × (conv 5×5 SAME -> ReLU -> max-pool 3×3 stride 2 SAME), dense, head
        sizes = (channels, *options.get("channels", (64, 64, 128)))
        layers = []
        for c_in, c_out in zip(sizes[:-1], sizes[1:], strict=True):
            layers += [nn.Conv2d(c_in, c_out, 5, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2, 1)]
        side = height
        for _ in range(3):
            side = -(-side // 2)
        dense = options.get("dense", 1000)
        layers += [nn.Flatten(), nn.Linear(side * side * sizes[-1], dense), nn.ReLU()]
        layers.append(nn.Linear(dense, 10))
    model = nn.Sequential(*layers)
    lecun_normal_(torch, model)
    return model


def torch_epoch(torch, model, x, y) -> Candidate:
    """One PyTorch epoch of Adam on ``model`` over ``(x, y)`` (NHWC images, as ours; moved
    to NCHW here)."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = model.to(device)
    on_gpu = device.type == "cuda"
    optimizer = torch.optim.Adam(
        model.parameters(), lr=LEARNING_RATE, foreach=not on_gpu, fused=on_gpu or None
    )
    x = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))).to(device)
    y = torch.from_numpy(y.astype(np.int64)).to(device)
    generator = torch.Generator(device="cpu").manual_seed(0)
    steps = len(x) // BATCH_SIZE

    def run():
        order = torch.randperm(len(x), generator=generator)[: steps * BATCH_SIZE].to(device)
        for batch in order.view(steps, BATCH_SIZE):
            loss = torch.nn.functional.cross_entropy(model(x[batch]), y[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        if on_gpu:
            torch.cuda.synchronize()
        return None

    def train_loss():
        model.eval()
        with torch.no_grad():
            losses = [
                torch.nn.functional.cross_entropy(model(x[batch]), y[batch])
                for batch in torch.arange(steps * BATCH_SIZE, device=device).view(steps, -1)
            ]
        model.train()
        return float(torch.stack(losses).mean())

    return Candidate(run, train_loss)


def measure(args: argparse.Namespace) -> dict:
    workloads = args.workloads or list(WORKLOADS)
    unknown = sorted(set(workloads) - set(WORKLOADS))
    if unknown:
        raise ValueError(f"unknown workload(s) {unknown}; choose from {', '.join(WORKLOADS)}")
    repeats = args.repeats or (2 if args.quick else 5)
    if args.torch_threads is not None and args.torch_threads < 1:
        raise ValueError(f"--torch-threads must be a positive integer, got {args.torch_threads}")
    torch = import_torch()
    notes = [] if torch else [f"PyTorch not installed: torch rows skipped ({TORCH_INSTALL})"]
    if torch and args.torch_threads is not None:
        torch.set_num_threads(args.torch_threads)
    if torch:
        notes.append(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    rows = []
    for workload in workloads:
        dataset, input_shape, model_name, options, quick_options, default_steps = WORKLOADS[
            workload
        ]
        options = quick_options if args.quick else options
        steps = args.steps or (4 if args.quick else default_steps)
        num_examples = None if steps is None else steps * BATCH_SIZE
        x, y, source = load_data(dataset, input_shape, num_examples, args.synthetic)
        notes.append(f"{workload}: {source}, {len(x)} examples, {model_name} {options}")
        candidates = {
            "jax (optlab engine)": jax_epoch(model_name, options, x, y),
            "jax + optax (minimal scan)": minimal_epoch(model_name, options, x, y),
        }
        if torch:
            model = torch_model(torch, model_name, options, input_shape)
            candidates["torch"] = torch_epoch(torch, model, x, y)
        times = timing.interleaved(
            {name: candidate.run for name, candidate in candidates.items()}, repeats=repeats
        )
        examples = (len(x) // BATCH_SIZE) * BATCH_SIZE
        for framework, seconds in times.items():
            rows.append(
                {
                    "workload": workload,
                    "framework": framework,
                    "examples": examples,
                    "epoch_s": seconds.median_s,
                    "epoch_iqr_s": seconds.iqr_s,
                    "examples_per_s": examples / seconds.median_s,
                    "relative_to_jax": seconds.median_s / times["jax (optlab engine)"].median_s,
                    "final_train_loss": candidates[framework].train_loss(),
                }
            )
    notes.append(
        f"final_train_loss: mean cross-entropy over the examples after {1 + repeats} epochs "
        "(warm-up + timed); both jax rows start from the same weights and draw the same "
        "minibatches, torch starts from its own random weights"
    )
    config = {
        "batch_size": BATCH_SIZE,
        "learning_rate": LEARNING_RATE,
        "repeats": repeats,
        "torch_threads": torch.get_num_threads() if torch else None,
    }
    return {"config": config, "environment": timing.environment(), "rows": rows, "notes": notes}
