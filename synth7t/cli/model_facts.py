"""``synth7t model-facts``: parameters and forward GFLOP of model presets, measured on PyTorch's meta device."""

from __future__ import annotations

import argparse


def run(args: argparse.Namespace) -> int:
    """Print one row per preset (every preset when none is named)."""
    from ..models.facts import facts_table

    table = facts_table(args.preset or None, height=args.height, width=args.width, patch=args.patch)
    print(table.to_string(index=False))
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``model-facts`` (its help lists the generator and critic presets)."""
    from ..models import DISCRIMINATOR_PRESETS, MODEL_PRESETS
    from ..models.facts import DISCRIMINATOR_PREFIX

    p = subparsers.add_parser(
        "model-facts", help="parameters and forward GFLOP of model presets (meta device, no weights)",
        description="Parameters and forward FLOPs of model presets, computed on PyTorch's meta device. "
                    "2D models: one slice of --height x --width; 3D models: one cubic patch; critics: "
                    "'discriminator:<name>'.")
    p.add_argument("--preset", action="append", metavar="NAME",
                   help="preset to measure (repeatable; default: all). Generators: "
                        + ", ".join(MODEL_PRESETS) + "; critics: "
                        + ", ".join(DISCRIMINATOR_PREFIX + n for n in DISCRIMINATOR_PRESETS))
    p.add_argument("--height", type=int, default=288, help="slice height for 2D models (default 288)")
    p.add_argument("--width", type=int, default=224, help="slice width for 2D models (default 224)")
    p.add_argument("--patch", type=int, default=64, help="cubic patch edge for 3D models (default 64)")
    p.set_defaults(func=run)
    return p
