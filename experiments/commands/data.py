"""``optlab data``: fetch and verify datasets ahead of time, e.g. before going offline.

optlab data                      # every dataset: find or download, verify, decode
optlab data mnist --no-download  # only check what is already on disk
"""

from __future__ import annotations

import argparse

from optlab.experiments.commands import DATASETS


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "names", nargs="*", metavar="NAME", help=f"datasets (default: all of {', '.join(DATASETS)})"
    )
    parser.add_argument(
        "--data-dir", default=None, help="data folder (default: $OPTLAB_DATA_DIR, ~/.cache/optlab)"
    )
    parser.add_argument(
        "--no-download", action="store_true", help="never touch the network; verify only"
    )


def run(args: argparse.Namespace) -> int:
    # here, not at the top: --help stays free of JAX and scikit-learn
    from optlab.experiments.data.dataset import DataError
    from optlab.experiments.data.loading import available, load, resolve_data_dir

    print(f"data directory: {resolve_data_dir(args.data_dir)}")
    failed = []
    for name in args.names or available():
        try:
            ds = load(name, data_dir=args.data_dir, download=not args.no_download)
        except DataError as err:
            failed.append(name)
            print(f"{name}: FAILED: {err}")
            continue
        folders = sorted({str(f["path"]).rsplit("/", 1)[0] for f in ds.meta["files"].values()})
        where = ", ".join(folders) or ds.meta["source"]
        print(
            f"{name}: ok  train {len(ds.y_train)}, test {len(ds.y_test)}, "
            f"input {ds.input_shape}, {len(ds.meta['files'])} file(s) verified  [{where}]"
        )
    if failed:
        raise DataError(f"could not load {', '.join(failed)} (see above)")
    return 0
