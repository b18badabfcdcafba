"""``synth7t predict INPUT... (-o OUT.nii.gz | --output-dir DIR) --model M``: synthetic 7T from lone 3T images.

One input file and ``-o``: one output (and, with ``--native``, ``<OUT>_space-native.nii.gz``); an error stops it
with one line. Several files, folders (searched recursively) or ``.txt`` lists and ``--output-dir``: a resumable
batch (:func:`synth7t.inference.predict_files`), ``<DIR>/<key>_acq-synth7t_space-grid_T1w.nii.gz`` per input (``<key>``:
the input's name less ``.nii(.gz)``, ``_T1w`` and its ``acq-`` entity; :mod:`synth7t.inference.naming`) and
``<DIR>/predictions.tsv`` with each input's status and error; a failing input is recorded and the batch goes on.
Either way an output that ``synth7t predict`` wrote earlier (its NIfTI header says so) is skipped unless
``--overwrite``, and a file it did not write is never replaced without ``--overwrite``.

A batch runs in this process (one model, loaded once), in ``--n-jobs`` worker processes (a model copy each), as a
SLURM job array (``--executor slurm``, a model copy per job; ``--gpus-per-task 1`` for GPUs), one ``--shard`` of
it, or over the GPUs of one node: ``torchrun --nproc_per_node G -m synth7t predict ... --output-dir DIR`` gives
each GPU every G-th input and merges the ranks' tables into one ``predictions.tsv``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..data import io as sio
from .common import add_executor_options, make_executor, report_batch


def _views(text: str) -> list:
    """``--views a,c,s``: checked plane names (an unknown one is an argparse error naming the known ones)."""
    from ..data.planes import check_planes

    try:
        return list(check_planes(text, "--views"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def check_arguments(args: argparse.Namespace) -> None:
    """The checks that need no file: one way to name outputs, and what each option needs.

    Raises:
        ValueError: both or neither of ``-o`` and ``--output-dir``; ``-o`` with several inputs, a folder or a list;
            ``-o`` without a NIfTI name, or with a batch option; ``--method generalised`` without
            ``--generalised-from``.
    """
    if args.output and args.output_dir:
        raise ValueError("give either -o/--output (one input) or --output-dir (several), not both")
    if not args.output and not args.output_dir:
        raise ValueError("give -o OUT.nii.gz for one input, or --output-dir DIR for several inputs, a folder or "
                         "a .txt list")
    if args.output:
        single = len(args.inputs) == 1 and not Path(args.inputs[0]).is_dir() and Path(args.inputs[0]).suffix != ".txt"
        if not single:
            raise ValueError("-o takes one input file; for several inputs, a folder or a .txt list use --output-dir")
        if not sio.is_nifti_path(args.output):
            raise ValueError(f"{args.output}: the output must end in .nii or .nii.gz")
    if args.output and (args.executor != "local" or args.shard or args.no_wait or args.n_jobs != 1):
        raise ValueError("--n-jobs, --executor, --shard and --no-wait apply to batches (--output-dir), not to -o")
    if args.method == "generalised" and not args.generalised_from:
        raise ValueError("--method generalised needs --generalised-from <derivatives of preprocessed pairs>")


def check_demographics(args: argparse.Namespace) -> None:
    """Age and sex come from the options or from ``--participants``.

    Raises:
        ValueError: neither ``--age`` and ``--sex`` nor ``--participants``.
    """
    if args.participants is None and (args.age is None or args.sex is None):
        raise ValueError("give --age and --sex (and --impaired for a model conditioned on the diagnosis), or "
                         "--participants participants.tsv")


def _options(args: argparse.Namespace) -> dict:
    """What every input shares: alignment, preprocessing preset, outputs, device (for ``predict_file``)."""
    generalised = None
    if args.method == "generalised":
        from ..preprocess import estimate_generalised_affine

        generalised = estimate_generalised_affine(args.generalised_from)
    return dict(method=args.method, generalised=generalised, preprocess_preset=args.preset, native=args.native,
                batch_size=args.batch_size, device=args.device, t3_mask=args.mask, views=args.views,
                fusion=args.fusion, uncertainty=args.uncertainty, flips=args.flips,
                alignment_cache=args.alignment_cache, precision=args.precision, force=args.force,
                reproducible=args.reproducible)


def run(args: argparse.Namespace) -> int:
    """Predict one file (``-o``) or a batch (``--output-dir``); exit status 1 when a batch item failed.

    Each warning of the model's card (trained on simulated data; not better than its 3T input on validation) is said
    once, in one line on stderr, before anything runs."""
    import sys
    import warnings

    from ..training.modelcard import ModelCardWarning, model_card_warnings

    check_arguments(args)
    for _, note in model_card_warnings(args.model) if Path(args.model).exists() else ():
        print(f"synth7t predict: {note}", file=sys.stderr)
    from ..preprocess import InputWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ModelCardWarning)  # said once above
        shown = warnings.showwarning

        def one_line(message, category, *rest, **kw):
            if issubclass(category, InputWarning):
                print(f"synth7t predict: warning: {message}", file=sys.stderr)
            else:
                shown(message, category, *rest, **kw)

        warnings.showwarning = one_line  # restored when the block ends
        return run_single(args) if args.output else run_batch(args)


def run_single(args: argparse.Namespace) -> int:
    """``-o``: one input, one output; any failure is one error line."""
    from .. import inference

    t3, out = Path(args.inputs[0]), Path(args.output)
    volume = sio.load_volume(t3, reorient=True)  # a bad input is named before the model is loaded; read once
    inference.check_output(t3, out, args.overwrite)
    if out.exists() and not args.overwrite:
        print(f"{out} exists: skipped (--overwrite to redo)")
        return 0
    from ..data.layout import read_participants

    model = inference.Predictor.from_folder(args.model, args.device)
    check_demographics(args)
    table = read_participants(args.participants) if args.participants else None
    age, sex, impaired = inference.demographics_of(t3, table, args.age, args.sex,
                                                   None if args.impaired is None else bool(args.impaired),
                                                   str(args.participants))
    try:
        rec = inference.predict_file(t3, out, model, age=age, sex=sex, impaired=impaired, volume=volume,
                                     **_options(args))
    except (ValueError, RuntimeError, FileNotFoundError):
        raise  # already a message for the user
    except Exception as exc:  # e.g. a registration that fails inside ANTs: one line, not a traceback
        raise RuntimeError(f"{t3}: {type(exc).__name__}: {exc}") from None
    if rec.get("precision_note"):
        print(f"synth7t predict: {rec['precision_note']}")
    print(f"wrote {rec['output']}" + (f" and {rec['native']}" if rec.get("native") else ""))
    return 0


def run_batch(args: argparse.Namespace) -> int:
    """``--output-dir``: every input, resumable; failures are rows of ``predictions.tsv``."""
    from .. import inference

    check_demographics(args)
    inputs = inference.expand_inputs(args.inputs)
    if args.mask and len(inputs) > 1:
        raise ValueError(f"--mask is the brain mask of one input, but {len(inputs)} inputs were given")
    from ..runtime.batch import cores_per_worker
    from .. import inference
    from ..inference.batch import distributed_context

    if args.n_jobs < 1:
        raise ValueError(f"--n-jobs must be >= 1, got {args.n_jobs}")
    # a cluster job's CPUs are not this machine's: 4 threads (brain extraction, N4, registration) unless told
    threads = args.threads or (cores_per_worker(args.n_jobs) if args.executor == "local" else 4)
    executor = make_executor(args, output_dir=args.output_dir, n_jobs=args.n_jobs, threads=threads)
    ctx = distributed_context()
    status = inference.predict_files(inputs, args.output_dir, args.model, participants=args.participants,
                                     age=args.age, sex=args.sex,
                                     impaired=None if args.impaired is None else bool(args.impaired),
                                     overwrite=args.overwrite, executor=executor, **_options(args))
    if ctx is None or ctx[0] == 0:  # under torchrun rank 0 speaks for the merged table
        for r in status[status["status"] == "failed"].itertuples():
            print(f"synth7t predict: {r.input}: {r.reason}")
        print(status.to_string(index=False))
        report_batch(status, args.output_dir, "scan")
    return 1 if (status["status"] == "failed").any() else 0


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``predict``."""
    p = subparsers.add_parser(
        "predict", help="synthetic 7T from lone 3T images (-o for one file, --output-dir for many)",
        description="Synthetic 7T from lone 3T T1w images: brain extraction, N4, alignment (MNI template or the "
                    "paper's generalised affine), prediction on the model's training grid. One file: "
                    "synth7t predict in_3t.nii.gz -o out_7t.nii.gz --model M --age 70 --sex F --impaired 0. "
                    "Many (files, folders, .txt lists): --output-dir DIR, a resumable batch with predictions.tsv.")
    p.add_argument("inputs", nargs="+", help="3T NIfTI file(s), folder(s) (searched recursively) or .txt list(s)")
    where = p.add_argument_group("outputs (one of)")
    where.add_argument("-o", "--output", default=None, help="output NIfTI file for a single input")
    where.add_argument("--output-dir", default=None,
                       help="folder for the outputs of several inputs (and predictions.tsv)")
    p.add_argument("--model", required=True,
                   help="model folder (runs/<run>/02_train/<model_name>/model) or its run folder")
    p.add_argument("--age", type=float, default=None, help="age in years (or --participants)")
    p.add_argument("--sex", choices=["F", "M"], default=None, help="F or M (or --participants)")
    p.add_argument("--impaired", type=int, choices=[0, 1], default=None, help="1 MCI/dementia, 0 CN/SCD")
    p.add_argument("--participants", default=None, help="participants.tsv giving age, sex, diagnosis per sub-<id>")
    p.add_argument("--method", choices=["template", "generalised"], default="template",
                   help="alignment of a lone 3T: MNI template registration or the paper's generalised affine")
    p.add_argument("--generalised-from", default=None, help="derivatives folder of preprocessed pairs "
                                                            "(for --method generalised)")
    p.add_argument("--preset", default="lone", help="preprocessing preset: lone (default: N4 and the template "
                   "alignment at the coarser settings a lone scan needs), quick (the demo's pairs), paper")
    p.add_argument("--mask", default=None, help="brain mask of the (single) input 3T instead of brain extraction")
    p.add_argument("--alignment-cache", default=None,
                   help="keep each aligned 3T in this folder and reuse it for the same scan and settings (trying "
                        "several models on one scan aligns it once)")
    p.add_argument("--native", action="store_true", help="also write the prediction resampled to the input 3T grid")
    p.add_argument("--batch-size", type=int, default=None,
                   help="slices (sliding windows, for V-Net and WATNet models) per forward pass (default on CPU: 1 "
                        "slice, 2 V-Net or 64 WATNet windows; 32 on GPU)")
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:1, ...")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"),
                   help="the network's arithmetic: auto (bf16 for an imported full-size model on a CPU with AMX or "
                        "AVX-512 BF16, fp32 otherwise), fp32, bf16")
    p.add_argument("--overwrite", action="store_true", help="redo outputs that exist")
    p.add_argument("--force", action="store_true",
                   help="predict even when a content check refuses the input (not a T1w brain, a sheared header, a "
                        "brain outside the adult volume range, a failed alignment); the refusal stays in the sidecar")
    p.add_argument("--reproducible", action="store_true",
                   help="align with one ITK thread so that reruns give identical bytes (default: the brain "
                        "extraction, N4 and registration use every thread of the process; the same result up to float "
                        "rounding, in about half the time)")
    mv = p.add_argument_group("multi-view and uncertainty (beyond the paper)")
    mv.add_argument("--views", default=None, type=_views,
                    help="planes to predict and fuse, e.g. axial,coronal,sagittal (or a,c,s); default: the planes "
                         "the model learned (axial for the paper's models)")
    mv.add_argument("--fusion", choices=["mean", "median"], default="mean", help="how the views are fused")
    mv.add_argument("--uncertainty", action="store_true",
                    help="also write <output>_uncertainty.nii.gz: the voxel-wise SD across the views (and flips)")
    mv.add_argument("--flips", action="store_true",
                    help="also predict every view from the left-right mirrored 3T (twice the time; more members "
                         "for --uncertainty, which then works with a single view)")
    p.add_argument("--n-jobs", "--jobs", type=int, default=1,
                   help="--output-dir: worker processes, each with its own model copy (default 1: this process)")
    p.add_argument("--threads", type=int, default=None,
                   help="threads per worker process or cluster job (default: the CPUs divided by --n-jobs; 4 in a "
                        "cluster job)")
    add_executor_options(p, default_cpus="--threads, else 4")
    p.set_defaults(func=run)
    return p
