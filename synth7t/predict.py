"""Prediction: synthetic 7T volumes, slice by slice with the 2.5D context, from a trained model folder.

A model folder (``runs/<run>/02_train/model``, written by :class:`synth7t.train.Trainer`) holds
``generator.safetensors`` and ``model.json`` (the architecture and the training config); it is read without
unpickling anything.

Inputs are 3T volumes on the preprocessing grid (``..._acq-3T_space-7T_desc-preproc_T1w.nii.gz``): every axial
slice is predicted from itself and its neighbours (clamped at the grid's edges), with the subject's age, sex,
diagnosis and the slice location ``(2s - (top + bot)) / (top - bot)``; the slices are batched, reassembled,
clipped to [0, 1], masked by the brain mask when one is given, and written as NIfTI with the grid's affine.
:func:`uncrop_to_space` puts a prediction back on the full 7T grid exactly.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np

from . import io as sio

PathLike = Union[str, Path]


class ModelFolderError(ValueError):
    """A model folder that is missing, incomplete or incompatible."""


def load_model(model_dir: PathLike, device: str = "cpu"):
    """Build the generator of a model folder and load its weights (safetensors).

    Returns:
        ``(generator in eval mode, model.json as a dict)``.
    """
    from .models import build_model
    from .train import load_weights, resolve_device

    d = Path(model_dir)
    if (d / "model").is_dir() and not (d / "model.json").is_file():
        d = d / "model"  # a run folder was given
    meta_path, weights = d / "model.json", d / "generator.safetensors"
    if not meta_path.is_file() or not weights.is_file():
        raise ModelFolderError(f"{model_dir}: not a model folder (needs model.json and generator.safetensors; "
                               "train one with notebooks/02_train.ipynb and pass runs/<run>/02_train/model)")
    meta = json.loads(meta_path.read_text())
    try:
        g = build_model(meta["model_config"])
        load_weights(weights, g)
    except (KeyError, RuntimeError, ValueError) as exc:
        raise ModelFolderError(f"{model_dir}: weights and model.json do not match ({exc})") from None
    return g.to(resolve_device(device)).eval(), meta


def _uses_context(generator) -> bool:
    from .models import ConditionalUNet

    return isinstance(generator, ConditionalUNet)


def predict_volume(
    generator, t3: np.ndarray, *, age: float, sex: str, impaired: Optional[bool], bottom: int, top: int,
    mask: Optional[np.ndarray] = None, batch_size: int = 16, n_input_slices: Optional[int] = None,
    progress: bool = False,
) -> np.ndarray:
    """Predict a synthetic 7T volume from a 3T volume on the preprocessing grid.

    Args:
        generator: a trained 2D generator (see :func:`load_model`).
        t3: normalised 3T volume ``(X, Y, Z)`` on the grid (X left-right, Y anterior-posterior, Z axial).
        age, sex, impaired: the context (``impaired`` may be None only for a ``nodiag`` model).
        bottom, top: lowest and highest axial slices with brain (slice-location condition).
        mask: optional brain mask ``(X, Y, Z)``; the output is zero outside it.
        batch_size: slices per forward pass.
        n_input_slices: neighbouring slices per input (default: the model's).

    Returns:
        float32 ``(X, Y, Z)`` in [0, 1].
    """
    import torch

    from .models import make_context

    t3 = np.asarray(t3, dtype=np.float32)
    if t3.ndim != 3:
        raise ValueError(f"t3 must be a 3D volume, got shape {t3.shape}")
    if not np.all(np.isfinite(t3)):
        raise ValueError("t3 contains non-finite values")
    if top == bottom:
        raise ValueError(f"bottom and top brain slices must differ, got {bottom}")
    n_in = n_input_slices or getattr(getattr(generator, "config", None), "n_input_slices", 3)
    half = n_in // 2
    device = next(generator.parameters()).device
    stack = np.transpose(t3, (2, 1, 0))  # (Z, H=AP, W=LR): the training layout
    depth = stack.shape[0]
    out = np.zeros_like(stack)
    use_ctx = _uses_context(generator)
    from tqdm.auto import tqdm

    with torch.no_grad():
        for z0 in tqdm(range(0, depth, batch_size), desc="slices", disable=not progress, leave=False):
            zs = np.arange(z0, min(depth, z0 + batch_size))
            rows = np.clip(zs[:, None] + np.arange(-half, half + 1)[None], 0, depth - 1)
            x = torch.from_numpy(stack[rows]).to(device)
            if use_ctx:
                loc = (2 * zs - (top + bottom)) / (top - bottom)
                ctx = make_context([age] * len(zs), [sex] * len(zs),
                                   [None if impaired is None else int(bool(impaired))] * len(zs), loc).to(device)
                y = generator(x, ctx)
            else:
                y = generator(x)
            out[zs] = y.float().clamp(0, 1)[:, 0].cpu().numpy()
    vol = np.transpose(out, (2, 1, 0))
    if mask is not None:
        vol = vol * (np.asarray(mask) > 0)
    return np.ascontiguousarray(vol, dtype=np.float32)


def preprocessed_inputs(derivatives: PathLike, key: str) -> dict:
    """The grid-space 3T, mask, record and paths of one preprocessed subject."""
    d = Path(derivatives)
    recs = list(d.glob(f"{key.split('_')[0]}/**/anat/{key}_desc-preproc.json"))
    if not recs:
        raise ValueError(f"{d}: no preprocessed subject {key} (run notebooks/01_preprocess.ipynb)")
    rec = json.loads(recs[0].read_text())
    t3 = sio.load_volume(d / rec["files"]["t3"])
    mask = sio.load_volume(d / rec["files"]["mask"], dtype=None).data if "mask" in rec["files"] else None
    return {"record": rec, "t3": t3, "mask": mask}


def predict_subjects(
    model_dir: PathLike, derivatives: PathLike, dataset, out_dir: PathLike, *, keys: Optional[Sequence[str]] = None,
    device: str = "auto", batch_size: int = 16, overwrite: bool = False, progress: bool = True,
    name: str = "synth7t",
):
    """Predict every (or the listed) preprocessed subject; resumable, failures recorded, the batch goes on.

    Writes ``<out_dir>/<key>_acq-<name>_space-grid_T1w.nii.gz`` per subject and ``predictions.tsv``
    (key, status, seconds, path, reason).

    Returns:
        The summary table.
    """
    import time

    import pandas as pd
    from tqdm.auto import tqdm

    generator, meta = load_model(model_dir, device)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    keys = list(keys) if keys is not None else [s.key for s in dataset]
    rows = []
    for key in tqdm(keys, desc="predict", unit="volume", disable=not progress):
        path = out_dir / f"{key}_acq-{name}_space-grid_T1w.nii.gz"
        if path.exists() and not overwrite:
            rows.append({"key": key, "status": "skipped", "seconds": 0.0, "path": str(path), "reason": ""})
            continue
        t0 = time.perf_counter()
        try:
            inp = preprocessed_inputs(derivatives, key)
            s = dataset[key]
            rec = inp["record"]
            vol = predict_volume(generator, inp["t3"].data, age=s.age, sex=s.sex, impaired=s.impaired,
                                 bottom=int(rec["bottom_slice"]), top=int(rec["top_slice"]), mask=inp["mask"],
                                 batch_size=batch_size)
            sio.save_volume(path, vol, inp["t3"].affine, header=inp["t3"].header, dtype=np.float32)
            rows.append({"key": key, "status": "done", "seconds": round(time.perf_counter() - t0, 2),
                         "path": str(path), "reason": ""})
        except Exception as exc:  # one bad subject must not stop a batch of thousands
            rows.append({"key": key, "status": "failed", "seconds": round(time.perf_counter() - t0, 2),
                         "path": "", "reason": f"{type(exc).__name__}: {exc}"})
    table = pd.DataFrame(rows, columns=["key", "status", "seconds", "path", "reason"])
    table.to_csv(out_dir / "predictions.tsv", sep="\t", index=False)
    return table


def uncrop_to_space(prediction: np.ndarray, record: dict) -> tuple[np.ndarray, np.ndarray]:
    """Put a grid-space prediction back on the subject's full 7T grid (exact inverse of the crop).

    Returns:
        ``(volume on the 7T grid, its affine)``.
    """
    from .preprocess import GridBox, uncrop_from_grid

    box = GridBox.from_dict(record["grid"])
    return uncrop_from_grid(np.asarray(prediction), box), np.asarray(box.space_affine, float)
