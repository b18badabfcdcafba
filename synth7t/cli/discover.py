"""``synth7t discover DATA_DIR``: validate a paired 3T/7T dataset and list what it holds."""

from __future__ import annotations

import argparse


def run(args: argparse.Namespace) -> int:
    """Discover the dataset (one clear message per problem) and print its summary."""
    from ..data.layout import discover

    ds = discover(args.data_dir, require_7t=not args.allow_lone_3t)
    print(ds.describe())
    print(ds.summary().to_string(index=False))
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``discover``."""
    p = subparsers.add_parser("discover", help="list and validate a paired 3T/7T dataset",
                              description="Validate a dataset in the synth7t layout (participants.tsv, "
                                          "sub-<id>/[ses-<s>/]anat/*_acq-{3T,7T}_T1w.nii.gz) and list it.")
    p.add_argument("data_dir", help="the dataset's root folder")
    p.add_argument("--allow-lone-3t", action="store_true", help="accept a 3T without its 7T")
    p.set_defaults(func=run)
    return p
