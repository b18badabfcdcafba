"""``synth7t cache DATA_DIR --output CACHE``: the slice cache that ``synth7t train`` reads, built from a preprocessed
dataset, so that ``discover -> split -> preprocess -> cache -> train -> predict`` runs from the command line."""

from __future__ import annotations

import argparse
from pathlib import Path


def run(args: argparse.Namespace) -> int:
    """Build (or reuse, or extend by the planes it lacks) the cache of the dataset's preprocessed pairs."""
    from ..data.layout import SPLIT_FILE, discover
    from ..preprocess import derivatives_dir
    from ..training.slices import build_cache

    ds = discover(args.data_dir)
    split = Path(args.split) if args.split else Path(args.data_dir) / SPLIT_FILE
    if args.split and not split.is_file():
        raise FileNotFoundError(f"{split}: split file not found (write one with `synth7t split {args.data_dir}`)")
    planes = [p.strip() for p in args.planes.split(",") if p.strip()]
    out = build_cache(args.derivatives or derivatives_dir(args.data_dir), args.output, ds,
                      split_file=split if split.is_file() else None, allow_unsplit=args.allow_unsplit,
                      planes=planes, progress=not args.quiet)
    print(f"slice cache: {out} (train on it with `synth7t train --cache {out} --run-dir RUN`)")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``cache``."""
    p = subparsers.add_parser(
        "cache", help="build the slice cache that `synth7t train` reads, from preprocessed pairs",
        description="Write the 2.5D slice cache of a dataset's preprocessed pairs (synth7t.training.slices.build_cache): "
                    "every slice of each subject's 3T and 7T on the training grid, with the subject's demographics "
                    "and train/test label from split.tsv (test subjects are never trained on). A cache built from "
                    "the same records is reused; planes it lacks are added.")
    p.add_argument("data_dir", help="the dataset's root folder (preprocessed with `synth7t preprocess`)")
    p.add_argument("--output", "-o", required=True, help="the cache folder, e.g. runs/bf2/02_train/cache")
    p.add_argument("--derivatives", default=None,
                   help="the preprocessing outputs (default: <data_dir>/derivatives/synth7t-preproc)")
    p.add_argument("--split", default=None, help="train/test split file (default: <data_dir>/split.tsv)")
    p.add_argument("--planes", default="axial",
                   help="slicing planes, comma-separated (axial, coronal, sagittal; a multi-view model needs all "
                        "three); default axial")
    p.add_argument("--allow-unsplit", action="store_true",
                   help="build without a split: every subject trainable (only for a model never scored on them)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
    return p
