"""``optlab bench``: performance benchmarks.

    optlab bench step        our optimizer steps vs Optax's, side by side
    optlab bench roofline    bytes moved per parameter per step (compiled HLO) vs bandwidth
    optlab bench memory      optimizer-state bytes per parameter, peak memory of a step
    optlab bench train       examples/s of an epoch with our engine vs a PyTorch loop
    optlab bench population  P vmapped training runs vs P sequential runs
    optlab bench precision   bfloat16 vs float32 first moment (mu_dtype): bytes, speed, accuracy

Each benchmark module exposes ``add_arguments(parser)`` and ``measure(args) -> dict`` (a
result with ``rows``, a list of flat dicts, and anything else worth keeping).
:mod:`experiments.bench.cli` prints the rows as a table and, with ``--out DIR``, writes
``DIR/<benchmark>.json`` (rows, configuration, environment) and ``DIR/<benchmark>.md``.
"""
