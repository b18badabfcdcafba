"""The training loop's runtime pieces: checkpoint files, devices and processes, seeding, batch order and shares.

Split out of :mod:`synth7t.training.trainer`, which re-exports every public name, so that the trainer module holds the loop.
"""

from __future__ import annotations

import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Optional, Union

import numpy as np

from ..runtime.batch import write_json

PathLike = Union[str, Path]


# ----------------------------------------------------------------------------------------- checkpoints


def save_checkpoint(ckpt_dir: PathLike, name: str, *, generator, critic=None, state: dict, meta: dict) -> Path:
    """Write one checkpoint folder atomically and point ``latest.json`` at it."""
    import torch
    from safetensors.torch import save_file

    root = Path(ckpt_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = root / name
    tmp = root / f".{name}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    save_file({k: v.detach().cpu().contiguous() for k, v in generator.state_dict().items()},
              str(tmp / "generator.safetensors"))
    if critic is not None:
        save_file({k: v.detach().cpu().contiguous() for k, v in critic.state_dict().items()},
                  str(tmp / "critic.safetensors"))
    torch.save(state, tmp / "state.pt")
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    write_json(root / "latest.json", {"checkpoint": name, "step": meta.get("step")})
    return final


def latest_checkpoint(ckpt_dir: PathLike) -> Optional[Path]:
    """The folder named by ``latest.json`` (None when there is no complete checkpoint)."""
    p = Path(ckpt_dir) / "latest.json"
    if not p.is_file():
        return None
    d = Path(ckpt_dir) / json.loads(p.read_text())["checkpoint"]
    return d if (d / "meta.json").is_file() else None


def load_weights(path: PathLike, module, *, strict: bool = True) -> None:
    """Load ``.safetensors`` weights into a module (no pickle involved)."""
    from safetensors.torch import load_file

    module.load_state_dict(load_file(str(path)), strict=strict)


def load_state(path: PathLike) -> dict:
    """Read a ``state.pt`` written by this module with the safe loader."""
    import torch

    return torch.load(str(path), map_location="cpu", weights_only=True)


# ------------------------------------------------------------------------------------------- the trainer


def dist_info():
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    return world, rank, local


def resolve_device(name: str = "auto"):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available; use device='cpu' or 'auto'")
    return dev


def seed_everything(seed: int, *, deterministic: bool = True) -> None:
    """Seed Python's, NumPy's and torch's global generators (CPU and every GPU) and choose deterministic kernels.

    Most randomness of a run does not come from these generators (crops, flips, data order and the gradient
    penalty's weights are drawn from generators seeded per sample or per step), but model initialisation and any
    library that draws from a global generator do. ``deterministic`` turns on
    ``torch.use_deterministic_algorithms(True, warn_only=True)`` (process-wide: an op with no deterministic
    version warns instead of failing), turns off cuDNN autotuning and asks cuBLAS for its deterministic workspace
    (``CUBLAS_WORKSPACE_CONFIG``, read when CUDA first initialises cuBLAS in the process).
    """
    import random

    import torch

    random.seed(int(seed))
    np.random.seed(int(seed))
    torch.manual_seed(int(seed))  # also seeds every CUDA device
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The permutation of the training samples for one epoch (the same in every process)."""
    return np.random.default_rng([int(seed), int(epoch), 97]).permutation(n)


def split_batch(batch_size: int, world_size: int = 1, grad_accumulation: int = 1) -> tuple[int, int]:
    """Split the global batch over the processes and each process's share into micro-batches.

    Args:
        batch_size: the global batch (slices per optimiser step, all processes together).
        world_size: number of processes (``torchrun --nproc_per_node``, times the nodes).
        grad_accumulation: micro-batches per process and step.

    Returns:
        ``(per_rank, micro)``: slices each process takes per step, and slices per forward/backward pass.

    Raises:
        ValueError: ``batch_size`` is not a multiple of ``world_size * grad_accumulation``; the message names
            the batch size, the world size, the accumulation and the nearest batch sizes that divide.
    """
    for name, v in (("batch_size", batch_size), ("world_size", world_size), ("grad_accumulation", grad_accumulation)):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    unit = world_size * grad_accumulation
    if batch_size % unit:
        lower, upper = batch_size // unit * unit, (batch_size // unit + 1) * unit
        near = f"{lower} or {upper}" if lower else f"{upper}"
        raise ValueError(
            f"batch_size={batch_size} (the global batch) does not split evenly over world size {world_size} "
            f"x grad_accumulation {grad_accumulation} = {unit} equal micro-batches; the nearest valid batch sizes "
            f"are {near} (or change the number of processes or grad_accumulation)")
    return batch_size // world_size, batch_size // unit


@contextmanager
def frozen(module):
    """Turn off ``requires_grad`` of a module's parameters inside the block (``None``: nothing to do)."""
    params = [] if module is None else [p for p in module.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield module
    finally:
        for p in params:
            p.requires_grad_(True)


def cxx_compiler() -> Optional[str]:
    """Path of the C++ compiler that ``torch.compile`` (inductor) would use on a CPU, or None."""
    for name in (os.environ.get("CXX"), "g++", "clang++", "c++"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def init_generator(generator, model_dir: PathLike, model_config) -> None:
    """Load a model folder's generator weights into ``generator`` (``TrainConfig.init_from``).

    Raises:
        ValueError: no model folder there, or one of another architecture (the differing fields are named).
    """
    d = Path(model_dir)
    if (d / "model").is_dir() and not (d / "model.json").is_file():
        d = d / "model"  # a run folder
    if not (d / "model.json").is_file() or not (d / "generator.safetensors").is_file():
        raise ValueError(f"init_from={str(model_dir)!r} is not a model folder (model.json and generator.safetensors); "
                         "give runs/<run>/02_train/<model_name>/model of a finished run")
    theirs = json.loads((d / "model.json").read_text())["model_config"]
    ours = model_config.to_dict()
    diff = sorted(k for k in set(theirs) | set(ours) if theirs.get(k) != ours.get(k))
    if diff:
        raise ValueError(f"init_from={str(model_dir)!r} holds another architecture than this run's (differs in "
                         f"{', '.join(diff)}); start from a model of the same generator preset and settings")
    load_weights(d / "generator.safetensors", generator)
