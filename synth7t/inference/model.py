"""A trained model folder (``model.json``, ``generator.safetensors``, the model card): where it is and how it loads.

:func:`load_model` builds the generator, loads its weights (safetensors only, nothing unpickled) and raises the
model card's warnings; :class:`synth7t.inference.Predictor` wraps what it returns. :func:`process_model` loads a
folder once per process (a worker or a cluster job); :func:`lone_grid` is what a lone 3T must be aligned onto.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Union

from ..training.modelcard import ModelCardWarning, model_card_warnings, read_model_card
from ..training.patches import patch_geometry

PathLike = Union[str, Path]

__all__ = ["ModelFolderError", "load_model", "model_folder", "process_model", "lone_grid", "is_imported"]


class ModelFolderError(ValueError):
    """A model folder that is missing, incomplete or incompatible."""


def load_model(model_dir: PathLike, device: str = "cpu"):
    """Build the generator of a model folder and load its weights (safetensors).

    On a CPU the weights are stored channels-last, which oneDNN convolves faster (demo-cpu, 2 slices of
    224 x 160 on 2 idle cores: 0.20-0.22 s per forward pass against 0.22-0.28 s contiguous, same process; a 3D
    network channels-last-3d: vnet-demo, 8 windows of 32^3, 0.56 s against 0.80 s).

    Each warning of the model card is raised as one line (:func:`synth7t.training.modelcard.model_card_warnings`): a model
    trained on simulated data (the demo's: it blurs real scans) and a model that did not beat copying its 3T input
    on its validation slices (it degrades every scan).

    Returns:
        ``(generator in eval mode, model.json as a dict with the model card under "model_card", or None, and the
        folder under "model_dir")``.
    """
    import torch

    from ..models import build_model
    from ..training.runtime import load_weights, resolve_device

    d = model_folder(model_dir)
    meta_path, weights = d / "model.json", d / "generator.safetensors"
    meta = json.loads(meta_path.read_text())
    meta["model_dir"] = str(d)  # where it was loaded from (an imported model's templates/ are there)
    try:
        meta["model_card"] = read_model_card(d)
    except ValueError as exc:
        raise ModelFolderError(str(exc)) from None
    for category, note in model_card_warnings(meta["model_card"]) if meta["model_card"] else ():
        warnings.warn(note, category, stacklevel=2)
    try:
        g = build_model(meta["model_config"])
        load_weights(weights, g)
    except (KeyError, RuntimeError, ValueError) as exc:
        raise ModelFolderError(f"{model_dir}: weights and model.json do not match ({exc})") from None
    dev = resolve_device(device)
    g = g.to(dev).eval()
    if dev.type == "cpu":
        geom = patch_geometry(meta["model_config"])
        three_d = geom is not None and geom.spatial_dims == 3
        g = g.to(memory_format=torch.channels_last_3d if three_d else torch.channels_last)
    return g, meta


def model_folder(model_dir: PathLike) -> Path:
    """The model folder that ``model_dir`` names (itself, or ``model/`` inside a run folder).

    Raises:
        ModelFolderError: no ``model.json`` and ``generator.safetensors`` there.
    """
    d = Path(model_dir)
    if (d / "model").is_dir() and not (d / "model.json").is_file():
        d = d / "model"  # a run folder was given
    if not (d / "model.json").is_file() or not (d / "generator.safetensors").is_file():
        raise ModelFolderError(f"{model_dir}: not a model folder (needs model.json and generator.safetensors; "
                               "train one with notebooks/02_train.ipynb and pass "
                               "runs/<run>/02_train/<model_name>/model)")
    return d


#: the model of each ``(folder, device)`` this process has loaded (a worker process or a job loads it once)
LOADED_MODELS: dict = {}


def process_model(model_dir: PathLike, device: str = "cpu"):
    """The ``(generator, meta)`` of a model folder, loaded once per process (a worker or job) and then kept; its
    model card's warnings are left to the calling process, which said them once already."""
    key = (str(model_dir), str(device))
    if key not in LOADED_MODELS:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ModelCardWarning)
            LOADED_MODELS[key] = load_model(key[0], key[1])
    return LOADED_MODELS[key]


def is_imported(meta: dict) -> bool:
    """Whether a model folder's ``model.json`` is an imported model of the authors (:mod:`synth7t.released.importer`)."""
    return (meta.get("model_config") or {}).get("kind") == "gicquel-unet"


def lone_grid(meta: dict) -> dict:
    """The grid a lone 3T must be aligned onto for a synth7t model: the voxel size and axial slice size it was trained
    on (``model.json`` ``input``), and what the slice sides must divide by: the
    :class:`synth7t.preprocess.PreprocessConfig` fields ``target_spacing``, ``grid_inplane``, ``grid_divisor``. The
    one place the lone grid is read: ``synth7t predict`` and the lone-3T studies take it from here.

    Returns:
        Those fields that the folder records (``{}`` for a folder exported before synth7t recorded them; the caller
        then warns). An imported model of the authors has its own grid (their 7T template): ``{}``.
    """
    if is_imported(meta):
        return {}
    trained_on = meta.get("input") or {}
    grid = {}
    if trained_on.get("spacing_mm"):
        grid["target_spacing"] = float(trained_on["spacing_mm"])
    if trained_on.get("grid_inplane"):
        from .volume import grid_divisor_of

        grid["grid_inplane"] = tuple(int(n) for n in trained_on["grid_inplane"])
        grid["grid_divisor"] = grid_divisor_of(meta)
    return grid
