"""Command line: ``synth7t <command> ...``.

Each command is a thin wrapper over a library function; errors that a user can fix are printed as one
line on stderr with a non-zero exit status, never as a traceback.
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable, Optional, Sequence

# Modules that contribute commands expose ``add_cli(subparsers)``; each registered parser sets
# ``func`` (called with the parsed namespace, returns an exit status).
_COMMAND_MODULES = (
    "synth7t.demo",
    "synth7t.layout",
    "synth7t.profiles",
    "synth7t.preprocess",
    "synth7t.predict",
    "synth7t.segment",
    "synth7t.models.facts",
    "synth7t.book",
)


def build_parser() -> argparse.ArgumentParser:
    import importlib

    parser = argparse.ArgumentParser(prog="synth7t", description="Synthetic 7T-quality T1w MRI from 3T.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMAND_MODULES:
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name and name.startswith(exc.name):  # a stage not built yet contributes no command
                continue
            raise
        add: Optional[Callable] = getattr(mod, "add_cli", None)
        if add is not None:
            add(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
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


if __name__ == "__main__":
    sys.exit(main())
