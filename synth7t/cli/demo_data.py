"""``synth7t demo-data [DATA_DIR]``: generate the simulated demo cohort (never real 7T data)."""

from __future__ import annotations

import argparse
import time


def run(args: argparse.Namespace) -> int:
    """Generate the cohort, print what it holds and the simulation notice."""
    from ..simulate.demo import SIMULATION_NOTICE, generate_cohort

    t0 = time.perf_counter()
    ds = generate_cohort(args.data_dir, args.n_subjects, args.seed, n_jobs=args.jobs, overwrite=args.overwrite)
    print(ds.describe())
    print(f"done in {time.perf_counter() - t0:.1f} s. {SIMULATION_NOTICE}")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``demo-data``."""
    p = subparsers.add_parser("demo-data", help="generate the simulated demo cohort",
                              description="Generate the simulated paired 3T/7T demo cohort from MNI template "
                                          "anatomy (seeded, resumable). It is never real 7T data.")
    p.add_argument("data_dir", nargs="?", default="data/demo", help="where the cohort goes (default: data/demo)")
    p.add_argument("--n-subjects", type=int, default=12, help="number of subjects (default 12)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--jobs", type=int, default=None, help="parallel worker processes (default: automatic)")
    p.add_argument("--overwrite", action="store_true", help="regenerate subjects that exist")
    p.set_defaults(func=run)
    return p
