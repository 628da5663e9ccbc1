"""``optlab study NAME``: the command line of the studies (see the package docstring)."""

from __future__ import annotations

import argparse
import inspect

from optlab.experiments.studies import SIZES, STUDIES, load


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = "studies:\n" + "\n".join(
        f"  {name:<17} {description}" for name, (_, description) in STUDIES.items()
    )
    parser.add_argument("name", metavar="NAME", help=f"one of: {', '.join(STUDIES)}")
    parser.add_argument("--quick", action="store_true", help="small sizes (tests, laptops)")
    parser.add_argument("--out", default=None, help="run folder (default runs/study-NAME-<time>)")
    parser.add_argument("--seeds", type=int, default=None, help="seeds for the noisy runs")
    parser.add_argument(
        "--optimizers",
        default=None,
        help="comma-separated registry names or MODULE:FACTORY of your own, added to the "
        "study's set (its verdicts are about its own set)",
    )
    parser.add_argument(
        "--size",
        choices=SIZES,
        default=None,
        help="training studies only: test (tiny, for the test suite), quick (= --quick), "
        "cpu (the largest that fits a few CPU minutes; docs/studies.md) or full (default)",
    )


def run(args: argparse.Namespace) -> int:
    if args.seeds is not None and args.seeds < 1:
        raise ValueError(f"--seeds must be at least 1, got {args.seeds}")
    module = load(args.name)
    sized = {}
    if getattr(args, "size", None) is not None:
        if "size" not in inspect.signature(module.run).parameters:
            raise ValueError(f"study {args.name!r} has no --size; use --quick or nothing")
        sized = {"size": args.size}
    if args.optimizers is not None:
        from optlab import optimizers as opt  # here, not at the top: --help stays JAX-free

        extra = [name.strip() for name in args.optimizers.split(",") if name.strip()]
        if "optimizers" not in inspect.signature(module.run).parameters:
            raise ValueError(f"study {args.name!r} does not compare optimizers; drop --optimizers")
        sized["optimizers"] = opt.resolve(extra)
    result = module.run(out=args.out, quick=args.quick, seeds=args.seeds, **sized)
    print(f"optlab study {args.name}: wrote {result['folder']}")
    return 0
