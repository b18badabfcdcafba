"""``synth7t split DATA_DIR``: write a train/test split stratified by age bin, sex and impairment."""

from __future__ import annotations

import argparse
from pathlib import Path


def run(args: argparse.Namespace) -> int:
    """Discover the dataset, draw the split and write it (default ``<data_dir>/split.tsv``)."""
    from ..data.layout import SPLIT_FILE, discover, make_split, write_split

    ds = discover(args.data_dir)
    split = make_split(ds, n_test=args.n_test, seed=args.seed)
    out = write_split(split, args.output or Path(args.data_dir) / SPLIT_FILE)
    n_test = int((split["split"] == "test").sum())
    print(f"wrote {out}: {len(split) - n_test} train, {n_test} test (seed {args.seed})")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``split``."""
    p = subparsers.add_parser("split", help="write a stratified train/test split",
                              description="Write a train/test split of the participants, stratified by age bin, "
                                          "sex and impaired/unimpaired (the paper held out 28 of 164 pairs).")
    p.add_argument("data_dir", help="the dataset's root folder")
    p.add_argument("--n-test", type=int, default=None, help="number of test participants")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--output", default=None, help="default: <data_dir>/split.tsv")
    p.set_defaults(func=run)
    return p
