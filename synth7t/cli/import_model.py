"""``synth7t import-model``: a synth7t model folder from one of the authors' released checkpoints."""

from __future__ import annotations

import argparse


def run(args: argparse.Namespace) -> int:
    """Import, then say in one line what was written and what was dropped."""
    from ..released.importer import import_model

    try:
        out, dropped = import_model(args.checkpoint, args.params, args.output, templates=args.templates,
                                    name=args.name, overwrite=args.overwrite)
    except FileExistsError as exc:  # a one-line error, as every other the user can fix
        raise ValueError(f"{exc} (--overwrite)") from None
    left = "; ".join(dropped) if dropped else "nothing"
    print(f"imported {args.checkpoint} -> {out} (dropped, not tensors: {left})")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``import-model``."""
    p = subparsers.add_parser(
        "import-model", help="import the authors' released checkpoint (their .pt and params*.txt)",
        description="Write a synth7t model folder (safetensors, model.json, model card) from a checkpoint of the "
                    "authors' training script (DeMONLab-BioFINDER/SuperResolutionMalo, models/*.pt with git-lfs) "
                    "and its params file. The checkpoint's pickle is read with tensors and plain containers only: "
                    "nothing else in it is constructed or run (their loss table and test indices are dropped).")
    p.add_argument("checkpoint", help="their checkpoint, e.g. models/my_unet_no_diag.pt")
    p.add_argument("--params", required=True, help="its params file, e.g. models/params_no_diag.txt")
    p.add_argument("--templates", help="folder with template_3T.nii.gz, template_7T.nii.gz and "
                                       "template_3T_to_7T.mat (their models/ folder), copied into the model folder")
    p.add_argument("-o", "--output", required=True, help="the model folder to write")
    p.add_argument("--name", help="the model's name in its card (default: the checkpoint's file name)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing model folder")
    p.set_defaults(func=run)
    return p
