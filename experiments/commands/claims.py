"""``optlab claims [--quick] [--out DIR]``: its options. The experiments live in
:mod:`experiments.claims`, imported only when the command runs, so ``--help`` and usage
errors answer at once."""

from __future__ import annotations

import argparse


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--quick", action="store_true", help="small sizes: a few minutes on 2 CPU cores"
    )
    parser.add_argument("--out", default=None, help="run folder (default runs/claims-<time>)")


def run(args: argparse.Namespace) -> int:
    if args.out is not None and not str(args.out).strip():
        raise ValueError("--out must name a folder")
    from optlab.experiments.claims import ledger  # here: JAX loads only when the command runs

    result = ledger.run(out=args.out, quick=args.quick)
    counts = {}
    for entry in result["ledger"]["claims"]:
        counts[entry["verdict"]] = counts.get(entry["verdict"], 0) + 1
    print(
        f"optlab claims: {len(result['ledger']['claims'])} claims "
        f"({', '.join(f'{v} {n}' for v, n in counts.items())}); wrote "
        f"{result['folder'] / 'ledger.md'}"
    )
    return 0
