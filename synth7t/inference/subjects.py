"""The preprocessed pairs' synthetic 7T (notebook 03): every held-out subject predicted on its training grid and
written in the spaces asked for.

A model folder (``runs/<run>/02_train/<model_name>/model``, written by :class:`synth7t.training.trainer.Trainer`) holds
``generator.safetensors`` and ``model.json`` (the architecture and the training config); it is read without
unpickling anything.

Inputs are 3T volumes on the preprocessing grid (``..._acq-3T_space-7T_desc-preproc_T1w.nii.gz``): every axial
slice is predicted from itself and its neighbours (clamped at the grid's edges), with the subject's age, sex,
diagnosis and the slice location ``(2s - (top + bot)) / (top - bot)``; the slices are batched, reassembled,
clipped to [0, 1], masked by the brain mask when one is given, and written as NIfTI with the grid's affine.
The baselines (V-Net, WATNet; ``model.json`` has an ``inference`` entry) predict by sliding window instead: windows
of their training patch size over the brain's bounding box, blended where they overlap
(:func:`synth7t.training.patches.sliding_window_predict`); the outputs land in the same files.
:func:`uncrop_to_space` puts a prediction back on the full 7T grid exactly.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import pandas as pd

from ..data import io as sio
from ..runtime.batch import run_batch
from ..data.names import display_name
from .naming import SPACES, prediction_path
from .predictor import Predictor

PathLike = Union[str, Path]


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
    device: str = "auto", batch_size: Optional[int] = None, overwrite: bool = False, progress: bool = True,
    name: str = "synth7t", spaces: Sequence[str] = ("grid",), views: Optional[Sequence[str]] = None,
    fusion: str = "mean", uncertainty: bool = False, flips: bool = False,
):
    """Predict every (or the listed) preprocessed subject; resumable, failures recorded, the batch goes on.

    Writes :func:`prediction_path` files per subject and space: ``grid`` (the cropped training grid, what
    the evaluation compares with the preprocessed 7T), ``7T`` (uncropped onto the subject's full 7T image grid)
    and ``native`` (resampled through the inverse of the 3T-to-7T registration onto the subject's own 3T image
    grid), and ``predictions.tsv`` (key, status, seconds, path, reason). A subject whose files all exist is
    skipped unless ``overwrite``.

    Multi-view (beyond the paper; :mod:`synth7t.inference.views`): ``views`` (e.g. ``["axial", "coronal", "sagittal"]``;
    default: the planes the model learned, axial for every model before multi-view) are predicted and fused
    (``fusion``: mean or median); ``uncertainty`` writes the SD across the views (and, with ``flips``, their
    left-right mirrored passes) beside each prediction, ``<name>_uncertainty.nii.gz``
    (:func:`synth7t.inference.fusion.uncertainty_path`), in every space.

    Returns:
        The summary table.
    """
    bad = [sp for sp in spaces if sp not in SPACES]
    if bad or not spaces:
        raise ValueError(f"spaces must be among {', '.join(SPACES)}, got {list(spaces)}")
    from .fusion import uncertainty_path, write_uncertainty

    predictor = Predictor.of(model_dir, device)
    if predictor.kind == "imported":
        raise ValueError("an imported model of the authors predicts on their 7T template's grid, not on a pair's "
                         "training grid: give it the raw 3T scans (synth7t predict, predict_files)")
    predictor.check_request(views, uncertainty=uncertainty, flips=flips)  # before any volume
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    keys = list(keys) if keys is not None else [s.key for s in dataset]

    def paths_of(key: str) -> dict:
        return {sp: prediction_path(out_dir, key, name, sp) for sp in spaces}

    def files_of(key: str) -> list:
        paths = list(paths_of(key).values())
        return paths + [uncertainty_path(p) for p in paths] if uncertainty else paths

    def work(key: str) -> dict:
        paths = paths_of(key)
        inp = preprocessed_inputs(derivatives, key)
        s = dataset[key]
        rec = inp["record"]
        pred = predictor.predict(inp["t3"].data, age=s.age, sex=s.sex, impaired=s.impaired, mask=inp["mask"],
                                 axial_range=(int(rec["bottom_slice"]), int(rec["top_slice"])), batch_size=batch_size,
                                 views=views, fusion=fusion, uncertainty=uncertainty, flips=flips)
        vol, unc = pred.image, pred.uncertainty
        for image, write in ((vol, sio.save_volume), (unc, None)):
            if image is None:
                continue
            if "grid" in paths:
                _put(write, paths["grid"], image, inp["t3"].affine, inp["t3"].header)
            if "7T" in paths:
                full, aff = uncrop_to_space(image, rec)
                _put(write, paths["7T"], full, aff)
            if "native" in paths:
                nat, aff = to_native_3t(image, rec, derivatives, s.t3)
                _put(write, paths["native"], nat, aff)
        return {"path": str(paths[spaces[0]])}

    def _put(write, path, image, affine, header=None):
        if write is None:  # the uncertainty map beside the prediction, on the same grid
            write_uncertainty(path, image, affine, header)
        else:
            write(path, image, affine, header=header, dtype=np.float32)

    # one model in this process: items run here, one after the other
    table = run_batch(keys, work, ids=lambda k: {"key": k},
                      is_finished=lambda k: all(p.exists() for p in files_of(k)),
                      status_file=out_dir / "predictions.tsv", overwrite=overwrite, columns=("path",),
                      progress=progress, desc=f"predict {name}", unit="volume")
    skipped = table["status"] == "skipped"
    table.loc[skipped, "path"] = [str(paths_of(k)[spaces[0]]) for k in table.loc[skipped, "key"]]
    return table


def collect_images(derivatives: PathLike, predict_dir: Optional[PathLike] = None, *,
                   keys: Optional[Sequence[str]] = None) -> pd.DataFrame:
    """Every image type available per subject, on the preprocessing grid: the preprocessed 3T and 7T and
    each model's predictions (``<predict_dir>/<model_name>/``, written by :func:`predict_subjects`).

    Returns:
        A table ``key, image_type, name, path`` (``name`` is the display name), 3T and 7T first, then the models
        in alphabetical order; only subjects with a finished preprocessing record are listed.
    """
    import pandas as pd

    from ..preprocess import load_records

    recs = [r for r in load_records(derivatives) if r.get("status") == "done" and r.get("mode") == "pair"]
    if keys is not None:
        want = set(keys)
        recs = [r for r in recs if r["key"] in want]
    rows = []
    models = sorted(p.name for p in Path(predict_dir).iterdir() if p.is_dir()) \
        if predict_dir is not None and Path(predict_dir).is_dir() else []
    for r in sorted(recs, key=lambda r: r["key"]):
        rows.append({"key": r["key"], "image_type": "3T", "path": str(Path(derivatives) / r["files"]["t3"])})
        rows.append({"key": r["key"], "image_type": "7T", "path": str(Path(derivatives) / r["files"]["t7"])})
        for m in models:
            p = prediction_path(Path(predict_dir) / m, r["key"], m, "grid")
            if p.is_file():
                rows.append({"key": r["key"], "image_type": m, "path": str(p)})
    table = pd.DataFrame(rows, columns=["key", "image_type", "path"])
    table.insert(2, "name", table["image_type"].map(display_name))
    return table


def uncrop_to_space(prediction: np.ndarray, record: dict) -> tuple[np.ndarray, np.ndarray]:
    """Put a grid-space prediction back on the subject's full 7T grid (exact inverse of the crop).

    Returns:
        ``(volume on the 7T grid, its affine)``.
    """
    from ..preprocess import GridBox, uncrop_from_grid

    box = GridBox.from_dict(record["grid"])
    return uncrop_from_grid(np.asarray(prediction), box), np.asarray(box.space_affine, float)


def to_native_3t(prediction: np.ndarray, record: dict, derivatives: PathLike,
                 t3_path: PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Resample a grid-space prediction onto the subject's own 3T image grid, through the inverse of the
    registration that preprocessing estimated (inverse affine, then the inverse SyN warp; linear interpolation).

    Args:
        prediction: the prediction on the preprocessing grid.
        record: the subject's preprocessing record (``<key>_desc-preproc.json``).
        derivatives: the folder the record's ``files`` are relative to.
        t3_path: the subject's original 3T image (its grid and orientation are kept).

    Returns:
        ``(volume on the 3T image grid, the 3T image's affine)``.
    """
    import ants

    from ..preprocess import to_ants

    files = record.get("files", {})
    if "affine" not in files:
        raise ValueError(f"{record.get('key')}: the record lists no registration (a lone-3T record?); "
                         "native-space output needs a preprocessed pair")
    full, space_affine = uncrop_to_space(prediction, record)
    src = sio.read_nifti(t3_path, check_values=False)
    ref = to_ants(np.zeros(src.shape[:3], np.float32), src.affine)
    tx = [str(Path(derivatives) / files["affine"])]
    invert = [True]
    if files.get("inverse_warp"):
        tx.append(str(Path(derivatives) / files["inverse_warp"]))
        invert.append(False)
    out = ants.apply_transforms(fixed=ref, moving=to_ants(full, space_affine), transformlist=tx,
                                whichtoinvert=invert, interpolator="linear")
    return out.numpy().astype(np.float32), np.asarray(src.affine, float)
