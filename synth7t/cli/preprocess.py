"""``synth7t preprocess DATA_DIR``: N4, brain extraction, 3T-to-7T registration, normalisation, grid, QC."""

from __future__ import annotations

import argparse

from synth7t.cli.common import parse_key_values


def run(args: argparse.Namespace) -> int:
    """Preprocess every (or the chosen) subject; exit status 1 when any failed (its row says why)."""
    from synth7t.preprocess import derivatives_dir, make_config, preprocess_dataset

    cfg = make_config(args.preset, **parse_key_values(args.set))
    summary = preprocess_dataset(args.data_dir, cfg, subjects=args.subjects or None, n_jobs=args.jobs,
                                 overwrite=args.overwrite)
    print(summary.to_string(index=False))
    failed = int((summary["status"] == "failed").sum())
    print(f"{len(summary) - failed} of {len(summary)} finished; outputs in {derivatives_dir(args.data_dir)}")
    return 1 if failed else 0


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``preprocess`` (its ``--preset`` choices come from :data:`synth7t.preprocess.PRESETS`)."""
    from synth7t.preprocess import PRESETS

    p = subparsers.add_parser("preprocess", help="N4, brain extraction, 3T-to-7T registration, normalisation, grid",
                              description="Preprocess the paired 3T/7T images of a dataset into "
                                          "<data_dir>/derivatives/synth7t-preproc (resumable; failures are "
                                          "recorded and the batch goes on).")
    p.add_argument("data_dir", help="the dataset's root folder")
    p.add_argument("--preset", default="paper", choices=sorted(PRESETS), help="settings preset (default: paper)")
    p.add_argument("--jobs", type=int, default=1, help="parallel worker processes")
    p.add_argument("--subjects", nargs="*", help="participant ids or keys (default all)")
    p.add_argument("--overwrite", action="store_true", help="redo finished subjects")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a config value, e.g. --set mask_backend=given --set 'n4_iterations=[50,50]'")
    p.set_defaults(func=run)
    return p
