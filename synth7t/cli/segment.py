"""``synth7t segment INPUT... --output-dir DIR``: FreeSurfer-numbered segmentations, in a resumable batch."""

from __future__ import annotations

import argparse

from .common import add_executor_options, make_executor, report_batch


def run(args: argparse.Namespace) -> int:
    """Segment every input; exit status 1 when any failed (its row says why)."""
    from ..segment import (PROVENANCE_FILE, SEGMENTATIONS_FILE, VOLUMES_FILE, AtlasConfig, SynthSegConfig,
        expand_inputs, provenance_note, segment_batch)
    from ..segment.batch import item_threads

    if args.backend == "synthseg":
        config = SynthSegConfig(v1=True if args.v1 is None else args.v1, parc=args.parc, robust=args.robust,
                                threads=args.threads or 1)
    else:
        for flag, given in (("--v1/--no-v1", args.v1 is not None), ("--robust", args.robust)):
            if given:
                raise ValueError(f"{flag} applies to --backend synthseg (mri_synthseg), not to the atlas backend")
        config = AtlasConfig(threads=args.threads, parc=args.parc)
    executor = make_executor(args, output_dir=args.output_dir, n_jobs=args.n_jobs, threads=item_threads(config),
                             progress=not args.quiet)
    items = expand_inputs(args.inputs, args.image_type)
    status = segment_batch(items, args.output_dir, backend=args.backend, config=config, n_jobs=args.n_jobs,
                           overwrite=args.overwrite, progress=not args.quiet, executor=executor)
    print(status.drop(columns=["path"]).to_string(index=False))
    failed, pending = report_batch(status, args.output_dir, "image")
    if not pending:
        print(f"label maps, {SEGMENTATIONS_FILE}, {VOLUMES_FILE} and {PROVENANCE_FILE} in {args.output_dir}")
        print(provenance_note(args.output_dir))
    return 1 if failed else 0


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``segment`` (its ``--backend`` choices come from :data:`synth7t.segment.BACKENDS`)."""
    from ..segment import BACKENDS

    p = subparsers.add_parser("segment", help="FreeSurfer-numbered brain segmentation (atlas offline, or mri_synthseg)",
                              description="Segment brain-extracted T1w images with FreeSurfer label numbers: "
                                          "atlas label propagation offline, or FreeSurfer's mri_synthseg.")
    p.add_argument("inputs", nargs="+", help="brain-extracted T1w NIfTI files or folders (searched recursively)")
    p.add_argument("--output-dir", required=True, help="writes <dir>/<image_type>/<key>_dseg.nii.gz and the tables")
    p.add_argument("--backend", choices=BACKENDS, default="atlas", help="default: atlas")
    p.add_argument("--image-type", default=None,
                   help="output sub-folder for every input (default: the acq-<x> entity of each name, else image)")
    p.add_argument("--n-jobs", type=int, default=1, help="parallel worker processes")
    p.add_argument("--threads", type=int, default=None, help="threads per worker (ITK, or mri_synthseg --threads)")
    p.add_argument("--v1", action=argparse.BooleanOptionalAction, default=None,
                   help="synthseg backend: SynthSeg 1.0 as in the paper (mri_synthseg --v1; default), an error where "
                        "the installed mri_synthseg lacks it; --no-v1 uses the installed version's own model")
    p.add_argument("--parc", action="store_true",
                   help="cortical parcellation: mri_synthseg --parc (FreeSurfer aparc labels 1000s/2000s), or with "
                        "the atlas backend CerebrA's cortical regions under the same numbers")
    p.add_argument("--robust", action="store_true",
                   help="mri_synthseg --robust (synthseg backend; needs --no-v1: SynthSeg-robust came with 2.0)")
    p.add_argument("--overwrite", action="store_true", help="redo finished images")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_executor_options(p, default_cpus="--threads")
    p.set_defaults(func=run)
    return p
