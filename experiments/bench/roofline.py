"""``optlab bench roofline``: bytes moved per parameter per optimizer step, and bandwidth.

An optimizer step is memory bound: per parameter it reads ``p``, ``g`` and the ``k`` state
buffers and writes ``p`` and the state back, so with ``b`` bytes per element the least
traffic is

    ideal = (3 + 2k) b        (Adam in float32: k = 2, b = 4 -> 28 B/param)

What the compiled program really moves is counted from its optimized HLO: every kernel of
the entry computation (a fusion, a copy, a lone op) reads its operand buffers and writes
its result buffers, so ``traffic = sum over kernels (operand bytes + result bytes)``. If
XLA splits a leaf's update into several kernels, intermediates (``m``, ``v``) are written
by one and read again by the next, which shows up here (Adam on CPU: 40 B/param). The step
time then gives ``achieved = ideal bytes / t``, compared with the bandwidth of a copy
(STREAM's scale ``b <- s b``: 2 b per element) and a triad (``b <- b + s c``: 3 b per
element) of the same size on the same device, updated in place like the parameters.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import re
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from optlab import optimizers as opt
from optlab.experiments.bench import step, timing

ELEMENT_BYTES = {
    "pred": 1, "s4": 0.5, "u4": 0.5, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "s32": 4, "u32": 4,
    "s64": 8, "u64": 8, "f16": 2, "bf16": 2, "f32": 4, "f64": 8, "c64": 8, "c128": 16,
    "f8e4m3fn": 1, "f8e5m2": 1, "f8e4m3": 1, "f8e5m2fnuz": 1, "f8e4m3fnuz": 1, "f8e4m3b11fnuz": 1,
}  # fmt: skip
# Instructions that move no data of their own.
NOT_KERNELS = {
    "parameter", "constant", "tuple", "get-tuple-element", "bitcast", "after-all",
    "partition-id", "replica-id", "opt-barrier",
}  # fmt: skip
_SHAPE = re.compile(r"\b([a-z][a-z0-9]*)\[([0-9,]*)\]")
_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*(.*?)\s([a-z][\w\-]*)\((.*)$")
_OPERAND = re.compile(r"%([\w.\-]+)")


def shape_bytes(type_text: str) -> int:
    """Bytes of every array in an HLO type, e.g. ``(f32[10,20]{1,0}, s32[])`` -> 804."""
    total = 0.0
    for element, dims in _SHAPE.findall(type_text):
        if element in ELEMENT_BYTES:
            total += ELEMENT_BYTES[element] * math.prod(int(d) for d in dims.split(",") if d)
    return int(total)


@dataclasses.dataclass(frozen=True)
class Kernel:
    name: str
    opcode: str
    read_bytes: int
    write_bytes: int
    scalar: bool  # writes only scalars (step counters, bias corrections)


def entry_kernels(hlo_text: str) -> list[Kernel]:
    """The kernels of the ENTRY computation of an optimized HLO module, with their traffic.

    Each kernel reads each distinct operand buffer once and writes its result.
    """
    lines = hlo_text[hlo_text.index("\nENTRY") :].splitlines()[1:]
    sizes: dict[str, int] = {}
    kernels = []
    for line in lines:
        if line.startswith("}"):
            break
        match = _INSTRUCTION.match(line)
        if match is None:
            continue
        name, type_text, opcode, rest = match.groups()
        sizes[name] = shape_bytes(type_text)
        if opcode in NOT_KERNELS:
            continue
        operand_text = rest.split("), ", 1)[0]
        operands = dict.fromkeys(_OPERAND.findall(operand_text))
        read = sum(sizes.get(op, 0) for op in operands)
        scalar = not any(dims for _, dims in _SHAPE.findall(type_text))
        kernels.append(Kernel(name, opcode, read, sizes[name], scalar))
    return kernels


def hlo_traffic(compiled) -> dict:
    """Kernels (all, and those writing arrays), fusions and bytes of a compiled function,
    with XLA's own 'bytes accessed' for comparison."""
    kernels = entry_kernels(compiled.as_text())
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list | tuple) else cost
    return {
        "kernels": len(kernels),
        "array_kernels": sum(not k.scalar for k in kernels),
        "fusions": sum(k.opcode == "fusion" for k in kernels),
        "bytes": sum(k.read_bytes + k.write_bytes for k in kernels),
        "xla_bytes_accessed": (cost or {}).get("bytes accessed"),
    }


def compile_step(tx: optax.GradientTransformation, params, grads):
    return step.jitted_step(tx).lower(params, tx.init(params), grads).compile()


def tree_bytes(tree) -> int:
    return sum(
        np.dtype(leaf.dtype).itemsize * math.prod(leaf.shape) for leaf in jax.tree.leaves(tree)
    )


def ideal_bytes_per_param(tx: optax.GradientTransformation, params) -> float:
    """``3 b + 2 (state bytes per param)``: read p, g, state; write p, state."""
    n = step.count_params(params)
    state = jax.eval_shape(tx.init, params)
    return 3 * tree_bytes(params) / n + 2 * tree_bytes(state) / n


def scale(b, s):
    """STREAM's scale in place, ``b <- s b`` (read b, write b: the traffic of a copy)."""
    return s * b


def triad(b, c, s):
    """STREAM's triad in place, ``b <- b + s c`` (read b, c; write b)."""
    return b + s * c


def stream_kernels(size: int, dtype) -> dict[str, Callable[[], jax.Array]]:
    """Zero-argument callables running scale (``"copy"``) and triad in place on ``size``.

    Both write into their donated input, as an optimizer step does: a fresh output per
    call would time the allocation's page faults, not the memory (2-3x slower on CPU).
    """
    buffers = {"copy": jnp.ones((size,), dtype), "triad": jnp.ones((size,), dtype)}
    c = jnp.full((size,), 0.5, dtype)
    s = jnp.asarray(1, dtype)  # a traced 1: values stay finite, nothing folds away
    scale_fn = jax.jit(scale, donate_argnums=0)
    triad_fn = jax.jit(triad, donate_argnums=0)

    def run_scale():
        buffers["copy"] = scale_fn(buffers["copy"], s)
        return buffers["copy"]

    def run_triad():
        buffers["triad"] = triad_fn(buffers["triad"], c, s)
        return buffers["triad"]

    return {"copy": run_scale, "triad": run_triad}


STREAM_ELEMENTS = {"copy": 2, "triad": 3}  # elements moved per index


def stream_bandwidth(size: int, dtype, repeats: int) -> dict[str, float]:
    """Measured GB/s of scale (2 elements moved) and triad (3 elements moved)."""
    times = timing.interleaved(stream_kernels(size, dtype), repeats=repeats)
    itemsize = jnp.dtype(dtype).itemsize
    return {
        f"{name}_GBps": STREAM_ELEMENTS[name] * size * itemsize / t.median_s / 1e9
        for name, t in times.items()
    }


# Adam written three ways, to see which XLA compiles into the fewest passes over memory.
def adam_optax(params, mu, nu, grads, count, lr=1e-3, b1=0.9, b2=0.999, eps=1e-8):
    """Optax's order: m, v; then m̂ = m / (1 - b1^t), v̂ = v / (1 - b2^t); p - lr m̂ / (√v̂ + ε)."""
    mu = b1 * mu + (1 - b1) * grads
    nu = b2 * nu + (1 - b2) * grads * grads
    mu_hat = mu / (1 - b1**count)
    nu_hat = nu / (1 - b2**count)
    return params - lr * mu_hat / (jnp.sqrt(nu_hat) + eps), mu, nu


def adam_folded(params, mu, nu, grads, count, lr=1e-3, b1=0.9, b2=0.999, eps=1e-8):
    """The same with the bias corrections folded into scalars: α_t = lr √(1-b2^t) / (1-b1^t),
    ε̂ = ε √(1-b2^t); p - α_t m / (√v + ε̂) (Kingma & Ba, end of Sec. 2)."""
    mu = b1 * mu + (1 - b1) * grads
    nu = b2 * nu + (1 - b2) * grads * grads
    correction = jnp.sqrt(1 - b2**count)
    alpha = lr * correction / (1 - b1**count)
    return params - alpha * mu / (jnp.sqrt(nu) + eps * correction), mu, nu


def adam_stacked(params, moments, grads, count, lr=1e-3, b1=0.9, b2=0.999, eps=1e-8):
    """m and v stacked in one buffer ``moments = [m, v]`` (one state array instead of two)."""
    mu = b1 * moments[0] + (1 - b1) * grads
    nu = b2 * moments[1] + (1 - b2) * grads * grads
    p = params - lr * (mu / (1 - b1**count)) / (jnp.sqrt(nu / (1 - b2**count)) + eps)
    return p, jnp.stack([mu, nu])


def adam_formulations(size: int, dtype) -> list[dict]:
    """HLO traffic per parameter of each Adam formulation on one leaf of ``size``."""
    x = jnp.ones((size,), dtype)
    count = jnp.asarray(1, jnp.int32)
    candidates = {
        "optax order": (adam_optax, (x, x, x, x, count), (0, 1, 2)),
        "folded bias correction": (adam_folded, (x, x, x, x, count), (0, 1, 2)),
        "stacked moments": (adam_stacked, (x, jnp.stack([x, x]), x, count), (0, 1)),
    }
    rows = []
    for name, (fn, args, donate) in candidates.items():
        traffic = hlo_traffic(jax.jit(fn, donate_argnums=donate).lower(*args).compile())
        rows.append(
            {
                "formulation": name,
                "array_kernels": traffic["array_kernels"],
                "hlo_B_per_param": traffic["bytes"] / size,
                "xla_B_per_param": (traffic["xla_bytes_accessed"] or float("nan")) / size,
            }
        )
    return rows


def measure(args: argparse.Namespace) -> dict:
    size = int(args.size or (1e6 if args.quick else 10e6))
    repeats = args.repeats or (3 if args.quick else 15)
    dtype = jnp.dtype(args.dtype)
    names = step.optimizer_names(args.optimizers, need_counterpart=False)
    shapes = step.tree_shapes(args.tree, size)
    params = step.random_tree(shapes, dtype, seed=0)
    grads = step.random_tree(shapes, dtype, seed=1)
    n = step.count_params(params)
    triad_bytes = STREAM_ELEMENTS["triad"] * n * dtype.itemsize
    triad_kernel = stream_kernels(n, dtype)["triad"]
    rows = []
    for name in names:
        tx = opt.get(name, learning_rate=1e-3)
        traffic = hlo_traffic(compile_step(tx, params, grads))
        optax_bytes = None
        if name in step.OPTAX_COUNTERPARTS:
            optax_tx = step.OPTAX_COUNTERPARTS[name](1e-3)
            optax_bytes = hlo_traffic(compile_step(optax_tx, params, grads))["bytes"] / n
        # The triad runs interleaved with each step, so each row's percentage compares
        # the two under the same load.
        times = timing.interleaved(
            {name: step.stepper(tx, params, grads), "triad": triad_kernel}, repeats
        )
        seconds, triad_GBps = times[name], triad_bytes / times["triad"].median_s / 1e9
        ideal = ideal_bytes_per_param(tx, params)
        achieved = ideal * n / seconds.median_s / 1e9
        xla_bytes = traffic["xla_bytes_accessed"]
        rows.append(
            {
                "optimizer": name,
                "array_kernels_per_leaf": traffic["array_kernels"] / len(shapes),
                "hlo_B_per_param": traffic["bytes"] / n,
                "optax_hlo_B_per_param": optax_bytes,
                "xla_B_per_param": None if xla_bytes is None else xla_bytes / n,
                "ideal_B_per_param": ideal,
                "step_ms": 1e3 * seconds.median_s,
                "step_iqr_ms": 1e3 * seconds.iqr_s,
                "achieved_GBps": achieved,
                "hlo_GBps": traffic["bytes"] / seconds.median_s / 1e9,
                "triad_GBps": triad_GBps,
                "pct_of_triad": 100 * achieved / triad_GBps,
            }
        )
    bandwidth = stream_bandwidth(n, dtype, repeats)
    formulations = adam_formulations(min(n, 1 << 20), dtype)
    config = {"size": n, "tree": args.tree, "dtype": args.dtype, "repeats": repeats}
    notes = [
        f"copy {bandwidth['copy_GBps']:.1f} GB/s, triad {bandwidth['triad_GBps']:.1f} GB/s "
        f"on {n} {args.dtype} elements",
        "achieved_GBps = ideal bytes / median step time; pct_of_triad = achieved / triad_GBps,"
        " the triad timed interleaved with that optimizer's steps",
        *(
            f"Adam as '{f['formulation']}': {f['array_kernels']} array kernels, "
            f"{f['hlo_B_per_param']:.1f} B/param (HLO), {f['xla_B_per_param']:.1f} (XLA)"
            for f in formulations
        ),
    ]
    return {
        "config": config,
        "environment": timing.environment(),
        "bandwidth": bandwidth,
        "adam_formulations": formulations,
        "rows": rows,
        "notes": notes,
    }
