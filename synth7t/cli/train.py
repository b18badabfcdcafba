"""``synth7t train --cache C --run-dir R [--preset P] [--set KEY=VALUE ...]``: one training run.

This is what ``torchrun`` runs on GPU nodes (every process runs the same command; ``batch_size`` is the global
batch, split across the processes, so the steps per epoch do not depend on their number)::

    torchrun --nproc_per_node=8 -m synth7t train --cache runs/bf2/02_train/cache \\
        --run-dir runs/bf2/02_train/gan-unet --preset paper-gan

GPUs that cannot hold their share (56 / 8 = 7 slices each here) take it in micro-batches:
``--set grad_accumulation=7`` (one slice per forward pass, the same gradient).

The paper's baselines train the same way: ``--preset paper-vnet`` (V-Net on 64^3 patches) or ``--preset
paper-watnet`` (WATNet-2D on 64 x 64 patches of three slices), ``demo-cpu-vnet`` / ``demo-cpu-watnet`` on a CPU.

A run folder that holds checkpoints resumes from the newest one unless ``--no-resume``.
"""

from __future__ import annotations

import argparse
import json
import os

from .common import parse_key_values


def is_main_process() -> bool:
    """Whether this is the process that reports (rank 0 under ``torchrun``, or the only process)."""
    return int(os.environ.get("RANK", "0")) == 0


def run(args: argparse.Namespace) -> int:
    """Resolve the config (preset and overrides), train, and print the final metrics as JSON on rank 0."""
    from ..training.trainer import train
    from ..training.config import TrainConfig

    cfg = TrainConfig.from_preset(args.preset, **parse_key_values(args.set))
    metrics = train(cfg, args.cache, args.run_dir, resume=not args.no_resume)
    if is_main_process():
        print(json.dumps(metrics))
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``train`` (its help lists the presets of :data:`synth7t.training.config.TRAIN_PRESETS`)."""
    from ..training.config import TRAIN_PRESETS

    p = subparsers.add_parser(
        "train", help="train a model on a slice cache (CPU, one GPU, or several under torchrun)",
        description="Train the U-Net or the GAN U-Net on the 2.5D slices of a slice cache (built by `synth7t cache`, "
                    "notebook 02 or synth7t.training.slices.build_cache), or the V-Net and WATNet baselines on patches of it (presets "
                    "paper-vnet, paper-watnet), on a CPU, one GPU, or several GPUs through torchrun "
                    "(torchrun --nproc_per_node=8 -m synth7t train ...). A run folder with checkpoints resumes.")
    p.add_argument("--cache", required=True, help="slice cache folder (`synth7t cache DATA_DIR -o CACHE`)")
    p.add_argument("--run-dir", required=True, help="run folder: config, checkpoints, logs and the model folder")
    p.add_argument("--preset", default="paper-unet",
                   help="training preset (default paper-unet): " + ", ".join(TRAIN_PRESETS))
    p.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                   help="override config fields (JSON values), e.g. --set epochs=2 'crop=[96, 96]' device=cpu")
    p.add_argument("--no-resume", action="store_true", help="start afresh even when the run folder has checkpoints")
    p.set_defaults(func=run)
    return p
