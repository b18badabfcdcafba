"""``synth7t preprocess DATA_DIR``: N4, brain extraction, 3T-to-7T registration, normalisation, grid, QC."""

from __future__ import annotations

import argparse

from .common import add_executor_options, make_executor, parse_key_values, report_batch


def run(args: argparse.Namespace) -> int:
    """Preprocess every (or the chosen) subject; exit status 1 when any failed (its row says why)."""
    from ..preprocess import PreprocessConfig, derivatives_dir, preprocess_dataset
    from ..preprocess.config import FAST_SETTINGS

    overrides = parse_key_values(args.set)
    cfg = PreprocessConfig.from_preset(args.preset)
    if args.fast:
        if "threads_per_job" in overrides:
            raise ValueError("--fast sets threads_per_job (the CPUs divided by --jobs); give one or the other")
        from ..runtime.batch import cores_per_worker

        cfg = cfg.replace(threads_per_job=cores_per_worker(args.jobs), **FAST_SETTINGS)
    cfg = cfg.replace(**overrides)  # the settings given win over the preset's and --fast's
    out = derivatives_dir(args.data_dir)
    executor = make_executor(args, output_dir=out, n_jobs=args.jobs, threads=cfg.threads_per_job)
    summary = preprocess_dataset(args.data_dir, cfg, subjects=args.subjects or None, n_jobs=args.jobs,
                                 overwrite=args.overwrite, executor=executor)
    print(summary.to_string(index=False))
    failed, _ = report_batch(summary, out, "subject")
    return 1 if failed else 0


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``preprocess`` (its ``--preset`` choices come from :data:`synth7t.preprocess.PRESETS`)."""
    from ..preprocess import PRESETS

    p = subparsers.add_parser("preprocess", help="N4, brain extraction, 3T-to-7T registration, normalisation, grid",
                              description="Preprocess the paired 3T/7T images of a dataset into "
                                          "<data_dir>/derivatives/synth7t-preproc (resumable; failures are "
                                          "recorded and the batch goes on).")
    p.add_argument("data_dir", help="the dataset's root folder")
    p.add_argument("--preset", default="paper", choices=sorted(PRESETS), help="settings preset (default: paper)")
    p.add_argument("--jobs", "--n-jobs", type=int, default=1, help="parallel worker processes (--executor local)")
    p.add_argument("--subjects", nargs="*", help="participant ids or keys (default all)")
    p.add_argument("--overwrite", action="store_true", help="redo finished subjects")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a config value, e.g. --set mask_backend=given --set 'n4_iterations=[50,50]'")
    p.add_argument("--fast", action="store_true",
                   help="every CPU for each subject (threads_per_job = the CPUs divided by --jobs), N4 on a 6x "
                        "shrunk image and the registration against the 7T at 1 mm (FAST_SETTINGS in "
                        "synth7t.preprocess.config): about 2.5x sooner at the paper preset, the derivatives close to "
                        "but not those of the default, which (one ITK thread per subject) writes identical bytes on "
                        "every run")
    add_executor_options(p, default_cpus="the config's threads_per_job")
    p.set_defaults(func=run)
    return p
