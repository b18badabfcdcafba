"""``synth7t run-profile PROFILE``: execute a profile's notebooks with papermill (``make demo`` runs ``demo``)."""

from __future__ import annotations

import argparse
import time


def run(args: argparse.Namespace) -> int:
    """Plan the run (every check first), then run the notebooks (one line as each starts and ends) and print the
    timing table; ``--plan`` prints the plan and runs nothing."""
    from ..workflow.profiles import execute_plan, parse_overrides, plan_profile

    plan = plan_profile(args.profile, stages=args.stages or None, overrides=parse_overrides(args.set),
                        output_dir=args.output_dir, root=args.root)
    if args.plan:
        print(f"profile {args.profile}: {len(plan.notebooks)} notebook(s) into {plan.output_dir}; "
              "a step's lanes run side by side")
        print(plan.table().to_string(index=False))
        return 0
    t0 = time.perf_counter()
    df = execute_plan(plan, progress=False if args.no_progress else None)
    print(df.to_string(index=False))
    print(f"profile {args.profile}: {time.perf_counter() - t0:.1f} s in all")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``run-profile``."""
    p = subparsers.add_parser(
        "run-profile", help="execute the notebooks of a profile (demo, smoke, ...) with papermill",
        description="Execute the notebooks of a profile (profiles/<name>.yml) in order with papermill, into "
                    "book/notebooks/ with timings.tsv. Run it from the repository root, or pass --root.")
    p.add_argument("profile", help="profile name in <root>/profiles/ or a YAML path")
    p.add_argument("--stages", nargs="*", help="notebook prefixes to run, e.g. 00 01")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="parameter for every notebook that declares it (YAML value), e.g. --set data_dir=/data/bf2")
    p.add_argument("--output-dir", default=None,
                   help="where the executed notebooks and timings.tsv go (default: <root>/book/notebooks)")
    p.add_argument("--root", default=None,
                   help="project root with profiles/ and notebooks/; the kernels run there "
                        "(default: the current folder)")
    p.add_argument("--plan", action="store_true",
                   help="print what would run (steps, lanes, parameters) after checking the profile; run nothing")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress line while a notebook runs (it shows only on a terminal anyway)")
    p.set_defaults(func=run)
    return p
