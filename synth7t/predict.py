"""Prediction: synthetic 7T volumes, slice by slice with the 2.5D context, from a trained model folder.

A model folder (``runs/<run>/02_train/<model_name>/model``, written by :class:`synth7t.train.Trainer`) holds
``generator.safetensors`` and ``model.json`` (the architecture and the training config); it is read without
unpickling anything.

Inputs are 3T volumes on the preprocessing grid (``..._acq-3T_space-7T_desc-preproc_T1w.nii.gz``): every axial
slice is predicted from itself and its neighbours (clamped at the grid's edges), with the subject's age, sex,
diagnosis and the slice location ``(2s - (top + bot)) / (top - bot)``; the slices are batched, reassembled,
clipped to [0, 1], masked by the brain mask when one is given, and written as NIfTI with the grid's affine.
The baselines (V-Net, WATNet; ``model.json`` has an ``inference`` entry) predict by sliding window instead: windows
of their training patch size over the brain's bounding box, blended where they overlap
(:func:`synth7t.patches.sliding_window_predict`); the outputs land in the same files.
:func:`uncrop_to_space` puts a prediction back on the full 7T grid exactly.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import pandas as pd

from . import io as sio
from .io import OUTPUT_DESCRIP, is_synth7t_output  # noqa: F401 (synth7t.predict's API)
from .batch import run_batch
from .model_folder import ModelFolderError, load_model, model_folder  # noqa: F401 (synth7t.predict's API)
from .names import display_name
from .released import is_released, predict_file_released
from .volume_predict import choose_precision, inference_precision
from .volume_predict import (  # noqa: F401 (synth7t.predict's API)
    uses_context, default_batch_size, grid_divisor_of, patch_overlap_of, predict_volume, predict_volume_patches)

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


SPACES = ("grid", "7T", "native")

def prediction_path(out_dir: PathLike, key: str, name: str, space: str = "grid") -> Path:
    """Where :func:`predict_subjects` writes one prediction (``space``: grid, 7T or native)."""
    if space not in SPACES:
        raise ValueError(f"unknown space {space!r}; known: {', '.join(SPACES)}")
    tag = {"grid": "grid", "7T": "7T", "native": "3T"}[space]
    return Path(out_dir) / f"{key}_acq-{name}_space-{tag}_T1w.nii.gz"


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

    Multi-view (beyond the paper; :mod:`synth7t.multiview`): ``views`` (e.g. ``["axial", "coronal", "sagittal"]``;
    default: the planes the model learned, axial for every model before multi-view) are predicted and fused
    (``fusion``: mean or median); ``uncertainty`` writes the SD across the views (and, with ``flips``, their
    left-right mirrored passes) beside each prediction, ``<name>_uncertainty.nii.gz``
    (:func:`synth7t.views.uncertainty_path`), in every space.

    Returns:
        The summary table.
    """
    bad = [sp for sp in spaces if sp not in SPACES]
    if bad or not spaces:
        raise ValueError(f"spaces must be among {', '.join(SPACES)}, got {list(spaces)}")
    from .multiview import check_view_request, predict_grid_volume
    from .views import uncertainty_path, write_uncertainty

    generator, meta = load_model(model_dir, device)
    check_view_request(meta, views, uncertainty=uncertainty, flips=flips)  # before any volume
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
        vol, unc = predict_grid_volume((generator, meta), inp["t3"].data, age=s.age, sex=s.sex, impaired=s.impaired,
                                       bottom=int(rec["bottom_slice"]), top=int(rec["top_slice"]), mask=inp["mask"],
                                       batch_size=batch_size, patch_overlap=patch_overlap_of(meta), views=views,
                                       fusion=fusion, uncertainty=uncertainty, flips=flips)
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

    from .preprocess import load_records

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
    from .preprocess import GridBox, uncrop_from_grid

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

    from .preprocess import to_ants

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


# ------------------------------------------------------------------------------------- lone 3T files


def expand_inputs(inputs: Sequence[PathLike]) -> list[Path]:
    """Files, folders (every ``*.nii``/``*.nii.gz`` inside, recursively) and ``.txt`` lists of paths."""
    out: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            out += sorted(q for q in p.rglob("*") if sio.is_nifti_path(q) and q.is_file())
        elif p.suffix == ".txt" and p.is_file():
            out += [Path(line.strip()) for line in p.read_text().splitlines() if line.strip()]
        else:
            out.append(p)
    if not out:
        raise ValueError(f"no input images found in {', '.join(map(str, inputs))}")
    return out


def predict_file(
    t3_path: PathLike, out_path: PathLike, model, *, age: float, sex: str, impaired: Optional[bool],
    method: str = "template", generalised=None, preprocess_preset="quick", work_dir: Optional[PathLike] = None,
    native: bool = False, batch_size: Optional[int] = None, device: str = "cpu",
    t3_mask: Optional[PathLike] = None, views: Optional[Sequence[str]] = None, fusion: str = "mean",
    uncertainty: bool = False, flips: bool = False, alignment_cache: Optional[PathLike] = None,
    precision: str = "auto",
) -> dict:
    """Synthetic 7T from a lone 3T file: lone-3T preprocessing (template or generalised affine), prediction,
    output on the aligned grid (and, with ``native``, resampled back onto the input 3T grid).

    The aligned grid has the voxel size and axial slice size the model was trained on (``model.json``
    ``input.spacing_mm`` and ``input.grid_inplane``, e.g. 0.7 mm and 288 x 224), so that anatomy reaches the
    network at the scale it learned; a ``PreprocessConfig`` passed as ``preprocess_preset`` is used as given.

    Args:
        model: a model folder or a ``(generator, meta)`` pair from :func:`load_model`.
        method: ``"template"`` (register to the MNI 2009c T1) or ``"generalised"`` (the paper's affine from
            training pairs; pass ``generalised``).
        preprocess_preset: a preprocessing preset name or a ``PreprocessConfig``.
        t3_mask: a brain mask of the 3T to use instead of the configured brain extraction.
        views, fusion, uncertainty, flips: multi-view prediction (see :func:`predict_subjects`); the uncertainty
            map goes beside the output (and beside the native output), ``<out>_uncertainty.nii.gz``.
        alignment_cache: keep the aligned 3T in this folder and reuse it for the same scan and settings (another
            model with the same grid: :func:`synth7t.preprocess.aligned_lone_3t`); ``None``: a temporary folder.
        precision: ``"auto"``, ``"fp32"`` or ``"bf16"`` (autocast of the network's passes;
            :func:`synth7t.volume_predict.choose_precision`). An imported model of the authors goes through
            :func:`synth7t.released.predict_file_released` (their templates and input recipe).

    Returns:
        A record of what was written, with ``precision`` and, when ``"auto"`` chose bf16, ``precision_note``.
    """
    import tempfile

    from . import preprocess as pp

    t3_path, out_path = Path(t3_path), Path(out_path)
    sio.read_nifti(t3_path)  # one clear error for a bad input before any work
    if not sio.is_nifti_path(out_path):
        raise ValueError(f"{out_path}: output must end in .nii or .nii.gz")
    from .multiview import check_view_request, predict_grid_volume
    from .views import write_uncertainty

    if sex not in ("F", "M"):
        raise ValueError(f"sex must be F or M, got {sex!r}")
    if not 0 < float(age) < 130:
        raise ValueError(f"age must be in years (0-130), got {age}")
    generator, meta = load_model(model, device) if not isinstance(model, tuple) else model
    if is_released(meta):  # an imported model of the authors: their template alignment and input recipe
        return _predict_file_released(t3_path, out_path, generator, meta, age=age, sex=sex,
                                      impaired=impaired, preprocess_preset=preprocess_preset, t3_mask=t3_mask,
                                      native=native, batch_size=batch_size, views=views, uncertainty=uncertainty,
                                      flips=flips, alignment_cache=alignment_cache, method=method,
                                      precision=precision)
    check_view_request(meta, views, uncertainty=uncertainty, flips=flips)  # before the preprocessing
    net_device = next(generator.parameters()).device
    chosen, note = choose_precision(precision, net_device, generator, meta)
    uses_dx = meta["model_config"].get("use_diagnosis", True) and uses_context(generator)
    if uses_dx and impaired is None:
        raise ValueError("this model is conditioned on the diagnosis: give --impaired 0 or 1 (or use a -nodiag model)")
    if isinstance(preprocess_preset, str):
        trained_on = meta.get("input", {})
        grid = {}
        if trained_on.get("spacing_mm"):
            grid["target_spacing"] = float(trained_on["spacing_mm"])
        if trained_on.get("grid_inplane"):
            grid["grid_inplane"] = tuple(int(n) for n in trained_on["grid_inplane"])
            grid["grid_divisor"] = grid_divisor_of(meta)
        if "target_spacing" not in grid:
            import warnings

            warnings.warn("the model folder does not record the voxel size it was trained on (exported before "
                          f"synth7t recorded it); aligning onto the {preprocess_preset!r} preset's grid instead. "
                          "Pass a PreprocessConfig with the training target_spacing and grid_inplane to be sure.",
                          stacklevel=2)
        cfg = pp.make_config(preprocess_preset, qc_figure=False, **grid)
    else:
        cfg = preprocess_preset
    if t3_mask is not None:
        cfg = pp.config_from_dict({**cfg.to_dict(), "mask_backend": "given"})
    if alignment_cache is not None:
        rec = pp.aligned_lone_3t(t3_path, alignment_cache, cfg, method=method, generalised=generalised,
                                 t3_mask=t3_mask)
        t3, mask = sio.load_volume(rec["files"]["t3"]), sio.load_volume(rec["files"]["mask"], dtype=None).data
    else:
        with tempfile.TemporaryDirectory(prefix="synth7t-predict-", dir=work_dir) as tmp:
            rec = pp.preprocess_lone_3t(t3_path, tmp, cfg, method=method, generalised=generalised, t3_mask=t3_mask)
            t3, mask = sio.load_volume(rec["files"]["t3"]), sio.load_volume(rec["files"]["mask"], dtype=None).data
    with inference_precision(chosen, net_device):
        vol, unc = predict_grid_volume((generator, meta), t3.data, age=float(age), sex=sex, impaired=impaired,
                                       bottom=int(rec["bottom_slice"]), top=int(rec["top_slice"]), mask=mask,
                                       batch_size=batch_size, patch_overlap=patch_overlap_of(meta), views=views,
                                       fusion=fusion, uncertainty=uncertainty, flips=flips)
    sio.save_volume(out_path, vol, t3.affine, header=sio.output_header(), dtype=np.float32)
    written = {"output": str(out_path), "space": rec["space"], "shape": list(vol.shape), "precision": chosen,
               "precision_note": note}
    if unc is not None:
        written["uncertainty"] = str(write_uncertainty(out_path, unc, t3.affine, sio.output_header()))
    if native:
        src = sio.read_nifti(t3_path, reorient=True, check_values=False)
        world_map = np.asarray(rec["alignment"]["world_map"], float)  # output world -> 3T world
        nat = pp.resample(vol, t3.affine, src.shape, src.affine, world_map=np.linalg.inv(world_map), order=1)
        native_path = out_path.with_name(out_path.name.replace(".nii", "_space-native.nii", 1))
        sio.save_volume(native_path, nat, src.affine, header=sio.output_header(), dtype=np.float32)
        written["native"] = str(native_path)
        if unc is not None:
            nat_u = pp.resample(unc, t3.affine, src.shape, src.affine, world_map=np.linalg.inv(world_map), order=1)
            written["native_uncertainty"] = str(write_uncertainty(native_path, nat_u, src.affine, sio.output_header()))
    return written


def _predict_file_released(t3_path, out_path, generator, meta, *, age, sex, impaired, preprocess_preset,
                           t3_mask, native, batch_size, views, uncertainty, flips, alignment_cache, method,
                           precision) -> dict:
    """:func:`predict_file` for an imported model (:mod:`synth7t.released`): the options of synth7t's own grids are
    refused rather than ignored."""
    from . import preprocess as pp

    asked = [name for name, value in (("views", views), ("uncertainty", uncertainty), ("flips", flips),
                                      ("alignment_cache", alignment_cache)) if value]
    if asked or method != "template":
        raise ValueError(f"{', '.join(asked) or 'method=' + method} not available for an imported model of the "
                         "authors: it predicts on their 7T template's grid, aligned to their templates")
    if meta["model_config"].get("tokens") and "diagnosis" in meta["model_config"]["tokens"] and impaired is None:
        raise ValueError("this model is conditioned on the diagnosis: give --impaired 0 or 1 (or use a nodiag model)")
    cfg = pp.make_config(preprocess_preset, qc_figure=False) if isinstance(preprocess_preset, str) \
        else preprocess_preset
    if t3_mask is not None:
        cfg = pp.config_from_dict({**cfg.to_dict(), "mask_backend": "given"})
    return predict_file_released(t3_path, out_path, generator, meta, age=age, sex=sex, impaired=impaired,
                                 config=cfg, t3_mask=t3_mask, native=native, batch_size=batch_size,
                                 precision=precision)


def batch_output_path(output_dir: PathLike, t3_path: PathLike) -> Path:
    """Where :func:`synth7t.predict_batch.predict_files` writes the prediction of one input: ``<name>_desc-synth7t_T1w.nii.gz``."""
    name = Path(t3_path).name.split(".nii")[0].replace("_T1w", "")
    return Path(output_dir) / f"{name}_desc-synth7t_T1w.nii.gz"


def check_output(t3_path: PathLike, out_path: PathLike, overwrite: bool = False) -> None:
    """Refuse to write over the input, or over a file that synth7t did not write (unless ``overwrite``).

    Raises:
        ValueError: the output is the input, or a foreign file is in the way.
    """
    out = Path(out_path)
    if Path(t3_path).resolve() == out.resolve():
        raise ValueError(f"{out}: the output would replace its input")
    if out.exists() and not overwrite and not is_synth7t_output(out):
        raise ValueError(f"{out} exists and synth7t did not write it: choose another output or pass --overwrite")


def demographics_of(t3_path: PathLike, participants, age, sex, impaired, source: str = "participants.tsv"):
    """Age, sex and impaired of one input: its ``sub-<id>`` row of ``participants`` (a table from
    :func:`synth7t.layout.read_participants`) when given, else the values passed."""
    if participants is None:
        if age is None or sex is None:
            raise ValueError("give --age and --sex (or --participants participants.tsv)")
        return age, sex, impaired
    pid = Path(t3_path).name.split("_")[0]
    if pid not in participants.index:
        raise ValueError(f"{pid} has no row in {source}")
    row = participants.loc[pid]
    return float(row["age"]), str(row["sex"]), bool(row["impaired"])


