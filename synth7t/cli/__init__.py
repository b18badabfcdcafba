"""Command line: ``synth7t <command> ...`` (also ``python -m synth7t`` and ``python -m synth7t.cli``).

One module per command, each a thin layer over public functions of the library: ``add_parser(subparsers)``
registers the command's options and sets ``func``, which receives the parsed namespace and returns an exit
status. Errors that a user can fix (``ValueError``, ``FileNotFoundError``, ``RuntimeError``) are printed as one
line on stderr with exit status 1, never as a traceback.

Commands, in the order of a study: ``demo-data``, ``discover``, ``split``, ``preprocess``, ``cache``, ``train``,
``import-model`` (the authors' released checkpoints), ``predict``, ``segment``, ``model-facts``, ``run-profile``, ``book``; ``status`` (a batch's progress, SLURM jobs
included), ``rating-session`` (build a blinded rating session, its progress) and ``rate`` (serve it to raters).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Optional, Sequence

#: The modules of :mod:`synth7t.cli` that define commands, in the order ``synth7t --help`` lists them.
COMMAND_MODULES = ("demo_data", "discover", "split", "preprocess", "cache", "train", "import_model", "predict", "segment",
                   "model_facts", "run_profile", "book", "status", "rating_session", "rate")


def build_parser() -> argparse.ArgumentParser:
    """The ``synth7t`` parser with one sub-command per module of :data:`COMMAND_MODULES`."""
    parser = argparse.ArgumentParser(prog="synth7t", description="Synthetic 7T-quality T1w MRI from 3T.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"{__name__}.{name}").add_parser(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run one command; returns its exit status (0 done, 1 a reported error, 2 usage, 130 interrupted).

    Args:
        argv: the arguments after ``synth7t`` (default: ``sys.argv[1:]``).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"synth7t {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"synth7t {args.command}: interrupted", file=sys.stderr)
        return 130
