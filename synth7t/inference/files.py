"""A lone 3T file to its synthetic 7T (``synth7t predict scan.nii.gz -o out.nii.gz``): align it onto the model's
grid, predict, write the output on that grid and, with ``native``, back on the scan's own grid.

The alignment is the one the model needs (:func:`align_for`): synth7t's own models take the lone-3T preprocessing
(:func:`synth7t.preprocess.preprocess_lone_3t`, onto the voxel size and slice size the model was trained on,
:func:`synth7t.inference.model.lone_grid`); an imported model of the authors takes their template alignment
(:func:`synth7t.inference.released.align_to_released_templates`). Both give the aligned 3T, its brain mask and the
world map from the aligned grid to the scan, from which the native output is resampled.
"""

from __future__ import annotations

import tempfile
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np

from ..data import io as sio
from ..runtime.batch import write_json
from .ood import input_features, ood_score, uncertainty_summary, warning_line
from .naming import native_path
from .predictor import Predictor

PathLike = Union[str, Path]

__all__ = ["expand_inputs", "predict_file", "align_for", "lone_preprocess_config", "check_output", "demographics_of"]


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


def lone_preprocess_config(predictor: Predictor, preset="lone", *, t3_mask: Optional[PathLike] = None):
    """The lone-3T preprocessing settings for ``predictor``: a preset name (or a ``PreprocessConfig``, whose
    normalisation and brain extraction are kept) with the model's grid (:attr:`Predictor.grid`) over it; with
    ``t3_mask``, the given mask instead of brain extraction.

    A folder that does not record its grid (exported before synth7t recorded it) keeps the preset's, with a warning.
    """
    from .. import preprocess as pp

    cfg = pp.PreprocessConfig.from_preset(preset, qc_figure=False) if isinstance(preset, str) else preset
    if predictor.kind != "imported":
        if predictor.grid:
            cfg = cfg.replace(**predictor.grid)
        elif isinstance(preset, str):
            warnings.warn("the model folder does not record the voxel size it was trained on (exported before "
                          f"synth7t recorded it); aligning onto the {preset!r} preset's grid instead. "
                          "Pass a PreprocessConfig with the training target_spacing and grid_inplane to be sure.",
                          stacklevel=3)
    if t3_mask is not None:
        cfg = cfg.replace(mask_backend="given")
    return cfg


def align_for(predictor: Predictor, t3_path: PathLike, config, *, method: str = "template", generalised=None,
              t3_mask: Optional[PathLike] = None, work_dir: Optional[PathLike] = None,
              alignment_cache: Optional[PathLike] = None, checks=None, force: bool = False, volume=None) -> dict:
    """A lone 3T on the grid ``predictor`` predicts on, after the content checks of
    :mod:`synth7t.preprocess.input_checks` (``checks``: their limits; ``force``: go on past a refusal); ``volume``:
    the scan already read (:func:`synth7t.preprocess.preprocess_lone_3t`), for synth7t's own models.

    Returns:
        dict with ``image`` and ``mask`` (arrays on that grid), ``affine``, ``world_map`` (aligned-grid world ->
        scan world), ``axial_range`` (first and last brain slice, or None), ``space`` (the grid's name) and ``record``
        (the lone-3T preprocessing record; None for an imported model), ``input_checks`` (the findings as dicts).

    Raises:
        InputRefused: a content check failed (without ``force``).
    """
    from .. import preprocess as pp

    if predictor.kind == "imported":
        from .released import align_to_released_templates, released_templates

        if method != "template" or alignment_cache is not None:
            raise ValueError(f"{'method=' + method if method != 'template' else 'alignment_cache'} not available for "
                             "an imported model of the authors: it is aligned to their own templates")
        a = align_to_released_templates(t3_path, released_templates(predictor.meta), config, t3_mask=t3_mask,
                                        checks=checks, force=force)
        return {"image": a["image"], "mask": a["mask"], "affine": a["affine"], "world_map": a["world_map"],
                "axial_range": None, "space": "released-7T-template", "record": None, "timings": a["timings"],
                "input_checks": a["input_checks"]}

    if alignment_cache is not None:  # the cache holds the aligned 3T as files
        rec = pp.aligned_lone_3t(t3_path, alignment_cache, config, method=method, generalised=generalised,
                                 t3_mask=t3_mask, checks=checks, force=force, volume=volume)
        t3 = sio.load_volume(rec["files"]["t3"])
        image, mask, affine = t3.data, sio.load_volume(rec["files"]["mask"], dtype=None).data, t3.affine
    else:  # a temporary folder for the record; the aligned 3T stays in memory
        with tempfile.TemporaryDirectory(prefix="synth7t-predict-", dir=work_dir) as tmp:
            rec = pp.preprocess_lone_3t(t3_path, tmp, config, method=method, generalised=generalised, t3_mask=t3_mask,
                                        checks=checks, force=force, volume=volume, write_images=False)
        arrays = rec.pop("arrays")
        image, mask, affine = arrays["t3"], arrays["mask"], rec["grid_affine"]
    return {"image": image, "mask": mask, "affine": np.asarray(affine, float),
            "world_map": np.asarray(rec["alignment"]["world_map"], float),
            "axial_range": (int(rec["bottom_slice"]), int(rec["top_slice"])), "space": rec["space"], "record": rec,
            "timings": rec.get("timings", {}), "input_checks": rec.get("input_checks", [])}


def predict_file(
    t3_path: PathLike, out_path: PathLike, model, *, age: float, sex: str, impaired: Optional[bool],
    method: str = "template", generalised=None, preprocess_preset="lone", work_dir: Optional[PathLike] = None,
    native: bool = False, batch_size: Optional[int] = None, device: str = "cpu",
    t3_mask: Optional[PathLike] = None, views: Optional[Sequence[str]] = None, fusion: str = "mean",
    uncertainty: bool = False, flips: bool = False, alignment_cache: Optional[PathLike] = None,
    precision: str = "auto", checks=None, force: bool = False, reproducible: bool = False, volume=None,
) -> dict:
    """Synthetic 7T from a lone 3T file: aligned onto the model's grid (:func:`align_for`), predicted
    (:meth:`Predictor.predict`), written on that grid (and, with ``native``, resampled back onto the input 3T grid).

    Args:
        model: a :class:`Predictor`, a model folder or a ``(generator, meta)`` pair from
            :func:`synth7t.inference.load_model`.
        method: ``"template"`` (register to the MNI 2009c T1) or ``"generalised"`` (the paper's affine from
            training pairs; pass ``generalised``); an imported model takes its own templates.
        preprocess_preset: a preprocessing preset name or a ``PreprocessConfig`` (:func:`lone_preprocess_config`);
            ``"lone"`` (``PreprocessConfig.PRESETS``): the ``quick`` preset with N4 on every 6th voxel (its field
            interpolated onto the scan's grid) and the template alignment on 2 mm images for fewer iterations.
        t3_mask: a brain mask of the 3T to use instead of the configured brain extraction.
        views, fusion, uncertainty, flips: multi-view prediction (:func:`synth7t.inference.predict_subjects`); the
            uncertainty map goes beside the output (and beside the native output), ``<out>_uncertainty.nii.gz``.
        alignment_cache: keep the aligned 3T in this folder and reuse it for the same scan and settings (another
            model with the same grid: :func:`synth7t.preprocess.aligned_lone_3t`); ``None``: a temporary folder.
        precision: ``"auto"``, ``"fp32"`` or ``"bf16"`` (:func:`synth7t.inference.precision.choose_precision`).
        checks, force: the content checks' limits (:class:`synth7t.preprocess.InputCheckConfig`) and whether to go
            on past a refusal (``--force``).
        reproducible: align with one ITK thread (byte-identical reruns, ``--reproducible``); by default the brain
            extraction, N4 and registration use this process's torch threads (all cores in a lone process, a
            worker's share in a batch): the same result up to float rounding, in about half the time on 2 cores
            (:func:`alignment_threads`).
        volume: ``t3_path`` already read with ``synth7t.data.io.load_volume(t3_path, reorient=True)`` (the CLI reads
            its input once); None reads it here.

    The record is also written beside the output as ``<out>.json`` (:func:`sidecar_path`): the input, the model,
    the findings of the content checks, the out-of-distribution score (:func:`score_input`; one warning line when it
    is above the card's threshold) and the timings.

    Returns:
        A record of what was written: ``output``, ``space``, ``shape``, ``precision``, ``precision_note`` (when
        ``"auto"`` chose bf16), ``input_checks``, ``ood``, ``timings``, ``itk_threads`` (the alignment's; None for
        an imported model), ``sidecar``, and ``uncertainty``, ``native``, ``native_uncertainty`` when written.

    Raises:
        InputRefused: a content check refused the input (and ``force`` is False); nothing is written.
    """
    import time

    from ..preprocess import resample
    from .fusion import write_uncertainty
    from .precision import choose_precision

    t3_path, out_path = Path(t3_path), Path(out_path)
    # one clear error for a bad input before any work; the scan is read once for the whole path
    volume = volume if volume is not None else sio.load_volume(t3_path, reorient=True)
    if not sio.is_nifti_path(out_path):
        raise ValueError(f"{out_path}: output must end in .nii or .nii.gz")
    if sex not in ("F", "M"):
        raise ValueError(f"sex must be F or M, got {sex!r}")
    if not 0 < float(age) < 130:
        raise ValueError(f"age must be in years (0-130), got {age}")
    predictor = Predictor.of(model, device)
    # everything the request cannot do fails here, before the alignment
    predictor.check_request(views, uncertainty=uncertainty, flips=flips, impaired=impaired, check_impaired=True)
    choose_precision(precision, predictor.device, predictor.network, predictor.meta)
    cfg = lone_preprocess_config(predictor, preprocess_preset, t3_mask=t3_mask)
    cfg = replace(cfg, threads_per_job=alignment_threads(reproducible))
    aligned = align_for(predictor, t3_path, cfg, method=method, generalised=generalised, t3_mask=t3_mask,
                        work_dir=work_dir, alignment_cache=alignment_cache, checks=checks, force=force, volume=volume)
    t0 = time.perf_counter()
    pred = predictor.predict(aligned["image"], age=float(age), sex=sex, impaired=impaired, mask=aligned["mask"],
                             axial_range=aligned["axial_range"], batch_size=batch_size, views=views, fusion=fusion,
                             uncertainty=uncertainty, flips=flips, precision=precision)
    timings = {**aligned["timings"], "predict": time.perf_counter() - t0}
    affine, header = aligned["affine"], sio.output_header()
    sio.save_volume(out_path, pred.image, affine, header=header, dtype=np.float32)
    written = {"output": str(out_path), "space": aligned["space"], "shape": list(pred.image.shape),
               "precision": pred.precision, "precision_note": pred.precision_note}
    if pred.uncertainty is not None:
        written["uncertainty"] = str(write_uncertainty(out_path, pred.uncertainty, affine, header))
    if native:
        t0 = time.perf_counter()
        src = sio.read_nifti(t3_path, reorient=True, check_values=False)
        to_grid = np.linalg.inv(aligned["world_map"])  # scan world -> aligned-grid world
        nat = resample(pred.image, affine, src.shape, src.affine, world_map=to_grid, order=1)
        nat_out = native_path(out_path)
        sio.save_volume(nat_out, nat, src.affine, header=header, dtype=np.float32)
        written["native"] = str(nat_out)
        if pred.uncertainty is not None:
            nat_u = resample(pred.uncertainty, affine, src.shape, src.affine, world_map=to_grid, order=1)
            written["native_uncertainty"] = str(write_uncertainty(nat_out, nat_u, src.affine, header))
        timings["native"] = time.perf_counter() - t0
    written["input_checks"] = aligned["input_checks"]
    written["ood"] = score_input(predictor, aligned, pred.uncertainty)
    line = warning_line(written["ood"])
    if line:
        from ..preprocess.input_checks import InputWarning

        warnings.warn(f"{t3_path}: {line}", InputWarning, stacklevel=2)
    written["timings"] = {k: round(float(v), 2) for k, v in timings.items()}
    written["itk_threads"] = (aligned.get("record") or {}).get("threads", {}).get("itk")
    side = sidecar_path(out_path)
    write_json(side, {"input": str(t3_path), "model": str(predictor.meta.get("model_dir", "")), **written})
    written["sidecar"] = str(side)
    return written


def alignment_threads(reproducible: bool = False) -> int:
    """ITK threads for a lone 3T's N4 and registration: 1 when ``reproducible`` (ITK's multi-threaded sums change
    the last bits from run to run), else this process's torch threads. A process whose ITK count is already fixed
    (its first ANTs call set it; ITK reads it once) keeps that count when not ``reproducible``.

    Measured on a 1 mm head (``benchmarks/bench_lone_3t.py``): with 2 threads instead of 1 the N4 output moved by at
    most 2e-6 of its mean and the rigid template map by 0.01 mm.
    """
    import torch

    from ..preprocess import itk_threads_fixed

    if reproducible:
        return 1
    return itk_threads_fixed() or max(1, torch.get_num_threads())


def score_input(predictor: Predictor, aligned: dict, uncertainty=None) -> dict:
    """The out-of-distribution score of an aligned input against the model card's training statistics
    (:mod:`synth7t.inference.ood`), with the uncertainty map's summary inside the brain when there is one."""
    from ..training.modelcard import read_model_card

    stats = None
    feats = {}
    if predictor.kind != "imported":  # an imported model's inputs are raw intensities on their template's grid
        card = read_model_card(predictor.meta["model_dir"]) if predictor.meta.get("model_dir") else None
        stats = (card or {}).get("input_statistics")
        spacing = float(np.linalg.norm(np.asarray(aligned["affine"])[:3, 0]))
        feats = input_features(aligned["image"], aligned["mask"], spacing)
    result = ood_score(feats, stats)
    result["uncertainty"] = uncertainty_summary(uncertainty, aligned["mask"])
    return result


def sidecar_path(out_path: PathLike) -> Path:
    """``<out>.json`` beside a prediction ``<out>.nii.gz`` (BIDS' sidecar name)."""
    out_path = Path(out_path)
    return out_path.with_name(out_path.name.split(".nii")[0] + ".json")


def check_output(t3_path: PathLike, out_path: PathLike, overwrite: bool = False) -> None:
    """Refuse to write over the input, or over a file that synth7t did not write (unless ``overwrite``).

    Raises:
        ValueError: the output is the input, or a foreign file is in the way.
    """
    out = Path(out_path)
    if Path(t3_path).resolve() == out.resolve():
        raise ValueError(f"{out}: the output would replace its input")
    if out.exists() and not overwrite and not sio.is_synth7t_output(out):
        raise ValueError(f"{out} exists and synth7t did not write it: choose another output or pass --overwrite")


def demographics_of(t3_path: PathLike, participants, age, sex, impaired, source: str = "participants.tsv"):
    """Age, sex and impaired of one input: its ``sub-<id>`` row of ``participants`` (a table from
    :func:`synth7t.data.layout.read_participants`) when given, else the values passed."""
    if participants is None:
        if age is None or sex is None:
            raise ValueError("give --age and --sex (or --participants participants.tsv)")
        return age, sex, impaired
    pid = Path(t3_path).name.split("_")[0]
    if pid not in participants.index:
        raise ValueError(f"{pid} has no row in {source}")
    row = participants.loc[pid]
    return float(row["age"]), str(row["sex"]), bool(row["impaired"])
