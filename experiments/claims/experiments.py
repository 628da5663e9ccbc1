"""The experiments the studies do not run, each a small pure measurement returning arrays,
with its plot:

* :func:`step_cost`: time and working memory of one batch-GD step and one SGD step against
  the data set size N (C2, C3);
* :func:`step_memory`: optimizer state and training-step memory per optimizer (C15, C17);
* :func:`rmsprop_decay`: RMSProp's decay β swept on a noisy ill-conditioned quadratic at a
  fixed learning rate (C14);
* :func:`effective_rates`: Adagrad's and RMSProp's per-coordinate effective rate
  η / √(accumulator) on a stationary gradient stream (C12, C13);
* :func:`double_well`: a tilted double well, where noise (C5) or momentum (C20) may carry a
  run out of the shallow local minimum into the global one;
* :func:`plateaus`: full-batch GD on a small tanh network from a small initialisation, with
  the Hessian's extreme eigenvalues at every checkpoint: is a slow stretch a saddle or a
  minimum (C21)?
* :func:`momentum_map`: steps to the target over the (β, η) grid of the surfaces study's
  ravine sweep (C7).
"""

from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.flatten_util import ravel_pytree
from matplotlib.ticker import NullFormatter
from optlab import models
from optlab import optimizers as opt
from optlab.experiments import data, engine, report, tuning
from optlab.experiments.bench import memory as bench_memory
from optlab.experiments.claims import rules
from optlab.experiments.studies import _common as common
from optlab.experiments.studies import conditioning, surfaces

# ----------------------------------------------------------------------------- C2, C3


def mlp_factory(input_shape, num_classes: int, widths, **options):
    """``make_model(seed)`` of the studies' MLP."""
    return lambda seed=0: models.build(
        "mlp", input_shape, num_classes, seed=seed, widths=widths, **options
    )


def compiled_steps(make_model, x, y, batch_size: int):
    """The engine's SGD training step compiled twice: on the whole resident set (batch GD)
    and on ``batch_size`` examples gathered from it (SGD). Returns ``(state, full, mini)``."""
    tx = opt.sgd(0.01)
    graphdef, state = engine.init_state(make_model(), tx, jax.random.key(0))
    step = functools.partial(
        engine.train_step, graphdef=graphdef, tx=tx, objective=engine.Classification()
    )

    def full(state, x, y):
        return step(state, {"x": x, "y": y})[0]

    def mini(state, x, y, index):
        return step(state, {"x": x[index], "y": y[index]})[0]

    index = jnp.arange(batch_size) % len(y)
    return (
        state,
        jax.jit(full).lower(state, x, y).compile(),
        jax.jit(mini).lower(state, x, y, index).compile(),
        index,
    )


def step_cost(ds, sizes, batch_size: int, widths, repeats: int) -> dict:
    """Median wall time of one step and the compiled working memory (XLA's temporary bytes,
    the resident data set excluded) of batch GD and of SGD with ``batch_size``, per N in
    ``sizes``. The steps of all sizes are timed interleaved (one round of every candidate per
    repeat), so that load from other processes falls on all of them alike."""
    make_model = mlp_factory(ds.x_train.shape[1:], ds.num_classes, widths)
    built = {}
    for n in sizes:
        x, y = jnp.asarray(ds.x_train[:n]), jnp.asarray(ds.y_train[:n])
        state, full, mini, index = compiled_steps(make_model, x, y, batch_size)
        built[n] = dict(args=(state, x, y), full=full, mini=mini, index=index)
    times = {(n, kind): [] for n in sizes for kind in ("full", "mini")}
    for _ in range(repeats + 1):  # the first round warms up
        for n, b in built.items():
            for kind in ("full", "mini"):
                extra = () if kind == "full" else (b["index"],)
                started = time.perf_counter()
                jax.block_until_ready(b[kind](*b["args"], *extra))
                times[(n, kind)].append(time.perf_counter() - started)
    return dict(
        sizes=list(sizes),
        batch_gd_s=[float(np.median(times[(n, "full")][1:])) for n in sizes],
        sgd_s=[float(np.median(times[(n, "mini")][1:])) for n in sizes],
        batch_gd_bytes=[built[n]["full"].memory_analysis().temp_size_in_bytes for n in sizes],
        sgd_bytes=[built[n]["mini"].memory_analysis().temp_size_in_bytes for n in sizes],
        batch_size=batch_size,
    )


def log_slope(sizes, values) -> float:
    """Least-squares slope of log(values) against log(sizes): 1 linear growth, 0 flat."""
    return float(np.polyfit(np.log(sizes), np.log(np.maximum(values, 1e-12)), 1)[0])


def plot_step_cost(path, cost: dict) -> None:
    figure = report.new_figure((9, 3.8))
    left, right = figure.subplots(1, 2)
    for key, label in (
        ("batch_gd", "batch GD (B = N)"),
        ("sgd", f"SGD (B = {cost['batch_size']})"),
    ):
        left.plot(cost["sizes"], np.array(cost[f"{key}_s"]) * 1e3, "o-", label=label)
        right.plot(cost["sizes"], np.array(cost[f"{key}_bytes"]) / 2**20, "o-", label=label)
    report.style_axes(
        left,
        xlabel="data set size N",
        ylabel="ms per step (median)",
        logx=True,
        logy=True,
        title="time of one step",
    )
    report.style_axes(
        right,
        xlabel="data set size N",
        ylabel="MiB (XLA temporaries)",
        logx=True,
        logy=True,
        title="working memory of one step",
    )
    for ax in (left, right):
        ax.xaxis.set_minor_formatter(NullFormatter())  # no crowded minor labels
    report.save_figure(figure, path, dpi=80)


# ----------------------------------------------------------------------------- C15, C17

MEMORY_OPTIMIZERS = ("sgd", "momentum", "rmsprop", "adam")


def step_memory(settings: dict[str, tuple[tuple[int, ...], int]], input_shape) -> dict:
    """Per setting ``name -> (MLP widths, batch size)`` and optimizer: the bytes of one
    compiled training step (arguments + temporaries, from ``memory_analysis``) and the
    optimizer state's bytes per parameter (both from shapes only: nothing runs)."""
    rows = {}
    for name, (widths, batch) in settings.items():
        x = jnp.zeros((batch, *input_shape), jnp.float32)
        y = jnp.zeros((batch,), jnp.int32)
        make_model = mlp_factory(input_shape, 10, widths)
        rows[name] = {}
        for optimizer in MEMORY_OPTIMIZERS:
            m = bench_memory.step_memory(make_model, opt.get(optimizer, learning_rate=1e-3), x, y)
            rows[name][optimizer] = dict(
                step_bytes=m["argument_bytes"] + m["temp_bytes"],
                state_bytes=m["state_bytes"],
                params=m["params"],
            )
    return rows


def plot_step_memory(path, rows: dict) -> None:
    figure = report.new_figure((4 * len(rows), 3.6))
    axes = figure.subplots(1, len(rows), squeeze=False)[0]
    for ax, (setting, by_opt) in zip(axes, rows.items(), strict=True):
        names = list(by_opt)
        step = np.array([by_opt[n]["step_bytes"] for n in names]) / 2**20
        state = np.array([by_opt[n]["state_bytes"] for n in names]) / 2**20
        ax.bar(names, step, label="training step (args + temporaries)")
        ax.bar(names, state, label="of which optimizer state")
        report.style_axes(ax, xlabel="", ylabel="MiB", title=setting, legend_size=7)
    report.save_figure(figure, path, dpi=80)


# ----------------------------------------------------------------------------- C14


def rmsprop_decay(decays, rates, steps: int, seeds: int, noise_std: float = 0.1) -> dict:
    """RMSProp on the conditioning study's aligned quadratic with gradient noise σQξ, over
    ``decays`` × ``rates`` (one compilation). The rate is the best one for the registry's
    default decay 0.9 (:func:`studies._common.best_rate_index`), then held fixed while β
    changes. Per β: steps after which f stays ≤ 10⁻² f(θ₀) (mean over seeds, None unless
    every seed gets there), the late fluctuation (std of log₁₀ f over the last quarter,
    seed mean) and the late loss (mean of f over the last quarter)."""
    eigenvalues, _ = conditioning.deepobs_spectrum()
    hessian = np.diag(eigenvalues).astype(np.float32)
    theta0 = np.ones(len(eigenvalues), np.float32)
    target = 1e-2 * 0.5 * eigenvalues.sum()
    grid = tuning.product_grid(decay=decays, learning_rate=rates)  # β slowest
    simulate = common.make_simulator(
        conditioning.quadratic, tuning.optimizer_factory("rmsprop"), conditioning.hessian_noise
    )
    xi = common.standard_normal(seeds, steps, len(eigenvalues))
    losses, _ = simulate(hessian[None], theta0[None], np.float32([noise_std]), grid, xi)
    losses = np.asarray(losses[0], np.float64).reshape(len(decays), len(rates), seeds, -1)
    chosen = common.best_rate_index(losses[list(decays).index(0.9)], target)
    at_rate = losses[:, chosen]  # (decays, S, T+1)
    tail = at_rate[..., -(steps // 4) :]
    reached = common.steps_to_target(at_rate, target)  # (decays, S)
    with np.errstate(invalid="ignore", divide="ignore"):
        fluctuation = np.log10(tail).std(axis=-1).mean(axis=-1)
    return dict(
        decays=list(decays),
        rate=float(rates[chosen]),
        target=target,
        steps_to_tol=[float(r.mean()) if (r >= 0).all() else None for r in reached],
        tail_fluctuation=[float(v) if np.isfinite(v) else None for v in fluctuation],
        final_loss=[float(v) if np.isfinite(v) else None for v in tail.mean(axis=(-1, -2))],
        curves=at_rate,
    )


def plot_rmsprop_decay(path, sweep: dict) -> None:
    figure = report.new_figure((7, 4.2))
    ax = figure.add_subplot()
    steps = np.arange(sweep["curves"].shape[-1])
    for decay, curves in zip(sweep["decays"], sweep["curves"], strict=True):
        log_curves = np.log10(np.clip(curves, 1e-12, 1e12))
        ax.plot(steps, 10 ** log_curves.mean(0), lw=1, label=f"β = {decay:g}")
    ax.axhline(sweep["target"], color="k", ls=":", lw=1, label="target 10⁻² f(θ₀)")
    report.style_axes(
        ax,
        xlabel="step",
        ylabel="f(θ) (geometric mean over seeds)",
        logy=True,
        title=f"RMSProp, η = {sweep['rate']:.3g} fixed, decay β swept (noisy quadratic)",
    )
    report.save_figure(figure, path, dpi=80)


# ----------------------------------------------------------------------------- C12, C13

EFFECTIVE_RATE_OPTIMIZERS = ("adagrad", "rmsprop")


def effective_rates(steps: int, dim: int = 100, learning_rate: float = 0.01) -> dict:
    """Median over coordinates of |u_t| / (η |g_t|) — the multiplier η_eff / η — for a
    stationary stream g_t ~ N(0, I) (constant gradient scale, as near a minimum of a noisy
    loss). Adagrad: 1/√(s₀ + Σ g²) shrinks like 1/√t; RMSProp: 1/√(EMA of g²) stays level."""
    grads = jnp.asarray(common.standard_normal(1, steps, dim)[0])
    params = jnp.zeros(dim)
    curves = {}
    for name in EFFECTIVE_RATE_OPTIMIZERS:
        tx = opt.get(name, learning_rate=learning_rate)

        def step(state, g, tx=tx):
            u, state = tx.update(g, state, params)
            return state, jnp.median(jnp.abs(u) / (learning_rate * jnp.abs(g)))

        curves[name] = np.asarray(jax.lax.scan(step, tx.init(params), grads)[1])
    return dict(steps=np.arange(1, steps + 1), curves=curves)


def early_late_ratio(curve: np.ndarray, window: int = 10) -> float:
    """Mean of the last ``window`` values over the mean of steps 10 … 10 + window."""
    return float(curve[-window:].mean() / curve[10 : 10 + window].mean())


def plot_effective_rates(path, rates: dict) -> None:
    figure = report.new_figure((6.5, 4))
    ax = figure.add_subplot()
    for name, curve in rates["curves"].items():
        ax.plot(rates["steps"], curve, label=name)
    report.style_axes(
        ax,
        xlabel="step t",
        ylabel="effective rate / η (median coordinate)",
        logx=True,
        logy=True,
        title="stationary gradients g ~ N(0, I): does the rate shrink?",
    )
    report.save_figure(figure, path, dpi=80)


# ----------------------------------------------------------------------------- C5, C20

TILT = 0.3  # f = (x² − 1)² + TILT x + y²/2: local minimum near x = +0.96, global near −1.04


def double_well_loss(theta, _problem=None):
    """f(x, y) = (x² − 1)² + 0.3 x + y²/2: a shallow minimum at x ≈ 0.96 (f ≈ 0.29) and the
    global one at x ≈ −1.04 (f ≈ −0.31), a barrier near x ≈ 0.07 (f ≈ 1.02)."""
    x, y = theta[0], theta[1]
    return (x**2 - 1.0) ** 2 + TILT * x + 0.5 * y**2


def in_global_basin(paths_x: np.ndarray) -> np.ndarray:
    """A run ended in the global basin if the mean x of its last tenth is negative (the
    barrier is at x ≈ 0.07)."""
    tail = paths_x[..., -max(1, paths_x.shape[-1] // 10) :]
    return tail.mean(axis=-1) < 0


def noisy_escape(noise_stds, learning_rate: float, steps: int, seeds: int) -> dict:
    """SGD from the local minimum (0.96, 0) with gradient noise σξ, per σ (σ = 0 too): the
    share of seeds that end in the global basin, and the mean final loss."""
    stds = np.asarray([0.0, *noise_stds], np.float32)
    simulate = common.make_simulator(
        double_well_loss, tuning.optimizer_factory("sgd"), keep_path=True
    )
    start = np.float32([0.96, 0.0])
    losses, paths = simulate(
        np.zeros(len(stds)),
        np.tile(start, (len(stds), 1)),
        stds,
        {"learning_rate": np.float32([learning_rate])},
        common.standard_normal(seeds, steps, 2),
    )
    escaped = in_global_basin(np.asarray(paths[:, 0, :, :, 0]))  # (σ, S)
    return dict(
        noise_stds=[float(s) for s in noise_stds],
        learning_rate=learning_rate,
        seeds=seeds,
        exact_escape=float(escaped[0].mean()),
        escape_fraction=[float(e) for e in escaped[1:].mean(axis=1)],
        final_loss=np.asarray(losses[:, 0, :, -1]).mean(axis=1).tolist(),
        example_paths=np.asarray(paths[:, 0, 0]),
    )


def momentum_escape(starts_x, rates, steps: int) -> dict:
    """Adam with β₁ = 0.9 and with β₁ = 0 (no momentum), exact gradients, from starts
    (x₀, 0) on the local minimum's side, per learning rate: the share of starts that end
    in the global basin."""
    theta0 = np.stack([np.asarray(starts_x, np.float32), np.zeros(len(starts_x), np.float32)], 1)
    simulate = common.make_simulator(
        double_well_loss, tuning.optimizer_factory("adam"), keep_path=True
    )
    grid = tuning.product_grid(b1=(0.9, 0.0), learning_rate=rates)
    grid = {k: np.asarray(v, np.float32) for k, v in grid.items()}
    _, paths = simulate(
        np.zeros(len(starts_x)),
        theta0,
        np.zeros(len(starts_x), np.float32),
        grid,
        np.zeros((1, steps, 2), np.float32),
    )
    escaped = in_global_basin(np.asarray(paths[:, :, 0, :, 0]))  # (starts, 2·rates)
    share = escaped.mean(axis=0).reshape(2, len(rates))
    return dict(
        rates=[float(r) for r in rates],
        starts=[float(s) for s in starts_x],
        with_momentum=share[0].tolist(),
        without_momentum=share[1].tolist(),
        example_paths=np.asarray(paths[-1, :, 0, :, 0]).reshape(2, len(rates), -1),
    )


def plot_double_well(path, escape: dict, momentum: dict) -> None:
    figure = report.new_figure((11, 3.8))
    left, middle, right = figure.subplots(1, 3)
    xs = np.linspace(-1.8, 1.8, 300)
    left.plot(xs, double_well_loss(np.stack([xs, np.zeros_like(xs)])), "k-")
    report.style_axes(left, xlabel="x", ylabel="f(x, 0)", title="(x²−1)² + 0.3x + y²/2")
    middle.plot(escape["noise_stds"], escape["escape_fraction"], "o-", label="gradient noise σ")
    middle.axhline(escape["exact_escape"], color="k", ls=":", label="exact gradients")
    report.style_axes(
        middle,
        xlabel="σ",
        ylabel="share of seeds in the global basin",
        logx=True,
        title=f"SGD from the local minimum, η={escape['learning_rate']:g}",
    )
    right.plot(momentum["rates"], momentum["with_momentum"], "o-", label="Adam β₁ = 0.9")
    right.plot(momentum["rates"], momentum["without_momentum"], "s--", label="Adam β₁ = 0")
    report.style_axes(
        right,
        xlabel="learning rate η",
        ylabel="share of starts in the global basin",
        logx=True,
        title="exact gradients, starts x₀ ∈ "
        f"[{min(momentum['starts']):g}, {max(momentum['starts']):g}]",
    )
    report.save_figure(figure, path, dpi=80)


# ----------------------------------------------------------------------------- C21


def plateaus(
    ds,
    *,
    num_train: int,
    widths,
    init_std: float,
    learning_rate: float,
    steps: int,
    interval: int,
    seeds,
    max_hessians: int = 4,
) -> dict:
    """Full-batch GD on a tanh MLP (weights N(0, init_std²): near the saddle at the origin)
    over ``num_train`` examples, every seed at once (one ``vmap``). The loss is kept every
    ``interval`` steps; at up to ``max_hessians`` of the plateau checkpoints
    (:func:`plateau_checkpoints`) and at the end, the dense Hessian's extreme eigenvalues
    (the net is small enough for a dense Hessian)."""
    x, y = jnp.asarray(ds.x_train[:num_train]), jnp.asarray(ds.y_train[:num_train])
    objective = engine.Classification()
    starts = []
    for seed in seeds:
        model = models.build(
            "mlp",
            ds.x_train.shape[1:],
            ds.num_classes,
            seed=seed,
            widths=widths,
            activation="tanh",
            init_std=init_std,
        )
        graphdef, params, rest = engine.split_model(model)
        flat, unravel = ravel_pytree(params)
        starts.append(flat)

    def loss(w):
        merged = nnx.merge(graphdef, unravel(w), rest, copy=True)
        return objective.loss(merged, {"x": x, "y": y}, jax.random.key(0))[0]

    gradient = jax.grad(loss)

    def descend(w, _):
        w = jax.lax.fori_loop(0, interval, lambda _, v: v - learning_rate * gradient(v), w)
        return w, (w, loss(w))

    def run(w0):
        _, (ws, values) = jax.lax.scan(descend, w0, None, length=steps // interval)
        return jnp.concatenate([w0[None], ws]), jnp.concatenate([loss(w0)[None], values])

    all_ws, all_losses = jax.jit(jax.vmap(run))(jnp.stack(starts))
    hessian = jax.jit(jax.hessian(loss))

    def extremes(w):
        eigenvalues = np.linalg.eigvalsh(np.asarray(hessian(w), np.float64))
        return float(eigenvalues[0]), float(eigenvalues[-1])

    runs = []
    for seed, ws, values in zip(seeds, all_ws, np.asarray(all_losses, np.float64), strict=True):
        flat_at = plateau_checkpoints(values)
        examined = (
            flat_at[
                np.linspace(0, len(flat_at) - 1, min(max_hessians, len(flat_at)))
                .round()
                .astype(int)
            ]
            if len(flat_at)
            else flat_at
        )
        runs.append(
            dict(
                seed=seed,
                loss=values,
                step=np.arange(len(values)) * interval,
                plateau=flat_at,
                examined=examined,
                curvature=[extremes(ws[k]) for k in examined],
                final_curvature=extremes(ws[-1]),
                params=int(ws.shape[-1]),
            )
        )
    return dict(
        runs=runs,
        learning_rate=learning_rate,
        num_train=num_train,
        widths=widths,
        init_std=init_std,
    )


def plateau_checkpoints(loss: np.ndarray) -> np.ndarray:
    """Indices k (of K+1 checkpoints, the last excluded) with L_k − L_{k+1} < 0.1 · (L_0 −
    L_K) / K and L_k − L_K ≥ 0.25 (L_0 − L_K)."""
    total = loss[0] - loss[-1]
    fall = loss[:-1] - loss[1:]
    slow = fall < 0.1 * total / (len(loss) - 1)
    far = loss[:-1] - loss[-1] >= 0.25 * total
    return np.flatnonzero(slow & far)


def is_saddle(lambda_min: float, lambda_max: float) -> bool:
    """λ_min < −c λ_max (c = ``rules.SADDLE_CURVATURE``): marked negative curvature."""
    return bool(lambda_min < -rules.SADDLE_CURVATURE * lambda_max)


def plot_plateaus(path, result: dict) -> None:
    figure = report.new_figure((7, 4))
    ax = figure.add_subplot()
    for run in result["runs"]:
        (line,) = ax.plot(run["step"], run["loss"], lw=1, label=f"seed {run['seed']}")
        for k, (low, high) in zip(run["examined"], run["curvature"], strict=True):
            ax.plot(
                run["step"][k],
                run["loss"][k],
                "v" if is_saddle(low, high) else "o",
                ms=8,
                color=line.get_color(),
                mfc="none",
            )
            ax.annotate(f"{low / high:.2g}", (run["step"][k], run["loss"][k]), fontsize=6)
    report.style_axes(
        ax,
        xlabel="GD step",
        ylabel="training loss",
        logy=True,
        title="plateaus examined: ▽ saddle, ○ not (labels: λ_min/λ_max)",
    )
    report.save_figure(figure, path, dpi=80)


# ----------------------------------------------------------------------------- C7


def momentum_map(sweep: dict) -> dict:
    """From the surfaces study's ravine sweep (paths over β × η): steps after which the loss
    stays ≤ the ravine's tolerance (-1 never), and which runs diverged."""
    ravine = surfaces.SURFACES[-1]
    paths = np.asarray(sweep["paths"], np.float64)  # (β, η, T+1, 2)
    losses = surfaces.ravine(np.moveaxis(paths, -1, 0))
    steps = common.steps_to_target(losses, ravine.target(noisy=False))
    return dict(
        momenta=list(surfaces.MOMENTA),
        rates=np.asarray(sweep["rates"]),
        steps=steps,
        diverged=surfaces.diverged(sweep["final"], sweep["initial_loss"]),
    )


def plot_momentum_map(path, grid: dict) -> None:
    figure = report.new_figure((9, 3.2))
    ax = figure.add_subplot()
    steps = np.where(grid["steps"] >= 0, grid["steps"], np.nan).astype(float)
    image = ax.imshow(np.log10(steps), aspect="auto", cmap="viridis_r", origin="lower")
    rows, cols = np.nonzero(grid["diverged"])
    ax.plot(cols, rows, "rx", ms=5, label="diverged")
    ax.set_yticks(range(len(grid["momenta"])), [f"{m:g}" for m in grid["momenta"]])
    ticks = np.linspace(0, len(grid["rates"]) - 1, 7).round().astype(int)
    ax.set_xticks(ticks, [f"{grid['rates'][t]:.2g}" for t in ticks])
    figure.colorbar(image, ax=ax, label="log₁₀ steps to f ≤ 10⁻⁴ (blank: never)")
    report.style_axes(
        ax,
        xlabel="learning rate η",
        ylabel="momentum β",
        title="heavy ball in the ravine ½(x² + 100y²): speed over (β, η)",
    )
    report.save_figure(figure, path, dpi=80)


def load_dataset(name: str):
    """``data.load(name)`` (files found as the studies find them)."""
    return data.load(name)
