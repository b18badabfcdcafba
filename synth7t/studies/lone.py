"""The paper's downstream studies on lone 3T scans (§2.8.3, §2.8.4): from a folder of 3T images to Dice and volumes.

Both studies start from 3T scans that have no 7T:

1. :func:`lone_inputs` lists the 3T images of a folder with their participants' age, sex and diagnosis and
   (:func:`synth7t.data.layout.exclude_model_participants`) leaves out the participants who built the model;
2. :func:`preprocess_lone_batch` aligns each 3T onto the model's grid with the generalised affine (or the template)
   and normalises it (:func:`synth7t.preprocess.preprocess_lone_3t`), resumably, failures recorded;
3. :func:`predict_lone` runs a model on every aligned 3T (:meth:`synth7t.inference.Predictor.predict`, as every
   prediction of synth7t: a multi-view model fuses its planes; an imported model of the authors aligns the scan to
   its own templates and its output is resampled onto the study's grid), resumably.

Then the amygdala study (§2.8.3) carries the aligned 3T and every synthetic image of a subject into the space of
its reference image with *one* affine registration (estimated on the 3T, applied to the synthetic images, as the
paper did: :func:`align_to_references`), segments each there and scores the reference labels by Dice
(:func:`reference_study_dice`); the diagnosis study (§2.8.4) segments the aligned images and tabulates regional
volumes (:func:`synth7t.segment.segment_batch`, :func:`synth7t.segment.volumes_table`). Chapters 07 and 08 run
these steps through one call, :func:`run_lone_cohort`.
"""

from __future__ import annotations

import json
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional, Sequence, Union

import numpy as np
import pandas as pd

from ..data import io as sio
from ..runtime.batch import LocalExecutor, cores_per_worker, read_json, run_batch, write_json

PathLike = Union[str, Path]

#: the image type of the aligned 3T in the studies' tables
BASELINE = "3T"


def key_of(path: PathLike) -> str:
    """The acquisition key of a BIDS-like 3T file name: ``sub-01_ses-2_acq-3T_T1w.nii.gz`` -> ``sub-01_ses-2``."""
    name = Path(path).name
    return name.split("_acq")[0].split("_T1w")[0].split(".nii")[0]


def lone_inputs(folder: PathLike, *, participants: Optional[PathLike] = None,
                pattern: str = "*_acq-3T_T1w.nii*") -> pd.DataFrame:
    """The 3T images of a folder (recursively) with their participants' demographics.

    Args:
        folder: the dataset folder.
        participants: the participants table; default ``<folder>/participants.tsv``.
        pattern: file-name pattern of the 3T images.

    Returns:
        One row per image: ``key, participant_id, path, mask, age, sex, diagnosis``; ``mask`` is the image's
        ``_desc-brain_mask`` file beside it when there is one (used with ``mask_backend="given"``), else empty.

    Raises:
        ValueError: no image, a duplicated key, or images whose participant has no row in the table.
    """
    from ..data.layout import PARTICIPANTS_FILE, read_participants

    folder = Path(folder)
    paths = sorted(p for p in folder.rglob(pattern) if p.is_file() and "derivatives" not in p.parts
                   and "_desc-" not in p.name)
    if not paths:
        raise ValueError(f"{folder}: no 3T image matches {pattern!r}")
    masks = [p.with_name(p.name.split("_T1w")[0] + "_desc-brain_mask.nii.gz") for p in paths]
    table = pd.DataFrame({"key": [key_of(p) for p in paths], "path": [str(p) for p in paths],
                          "mask": [str(m) if m.is_file() else "" for m in masks]})
    dup = table["key"][table["key"].duplicated()].tolist()
    if dup:
        raise ValueError(f"{folder}: several images share the key(s) {dup}")
    table.insert(1, "participant_id", table["key"].str.split("_").str[0])
    parts = read_participants(Path(participants) if participants else folder / PARTICIPANTS_FILE)
    parts = parts.reset_index() if "participant_id" not in parts.columns else parts
    missing = sorted(set(table["participant_id"]) - set(parts["participant_id"]))
    if missing:
        raise ValueError(f"{len(missing)} participant(s) with images but no row in the participants table: "
                         f"{', '.join(missing[:10])}")
    cols = [c for c in ("age", "sex", "diagnosis") if c in parts.columns]
    return table.merge(parts[["participant_id", *cols]], on="participant_id", how="left")


# ------------------------------------------------------------------------------------------- the run


def model_dirs(train_dir: PathLike, names: Sequence[str] = ()) -> dict[str, Path]:
    """The exported model folders of a run's training stage (``<train_dir>/<name>/model``), all or the named ones; a
    name with a ``/`` is a model folder elsewhere (an imported model of the authors, ``synth7t import-model``), named
    by its folder.

    Raises:
        FileNotFoundError: a named model (or, with no names, any model) is missing.
    """
    train_dir = Path(train_dir)
    if names:
        out = {}
        for n in names:
            if "/" in str(n):
                folder = Path(n)
                out[folder.parent.name if folder.name == "model" else folder.name] = folder
            else:
                out[n] = train_dir / n / "model"
    else:
        out = {p.parent.name: p for p in sorted(train_dir.glob("*/model")) if (p / "model.json").is_file()}
    missing = [f"{n} ({d})" for n, d in out.items() if not (d / "model.json").is_file()]
    if missing or not out:
        raise FileNotFoundError("trained model(s) not found: " + (", ".join(missing) or f"none in {train_dir}")
                                + " - run notebook 02 (training) with that model_name")
    return out


def model_reads_diagnosis(model_dir: PathLike) -> bool:
    """Whether a model's output depends on the diagnosis it is given (a U-Net conditioned on it; not the
    ``-nodiag`` variants, whose output provably ignores it, nor the V-Net and WATNet, which take no context)."""
    from ..inference import Predictor

    return Predictor.describe(model_dir).reads_diagnosis


def lone_config(derivatives: PathLike, models: Union[Mapping[str, PathLike], Sequence[PathLike]] = (), **overrides):
    """The lone-3T preprocessing of a study: the paired run's settings (``<derivatives>/config.json``: normalisation,
    brain extraction, registration) with the grid of the study's ``models`` over them (the voxel size, slice size and
    divisor each model was trained on: :attr:`synth7t.inference.Predictor.grid`, the one place a lone grid is read),
    and ``overrides`` (e.g. ``mask_backend``).

    Raises:
        FileNotFoundError: no ``config.json`` (notebook 01 has not run).
        ValueError: models trained on different grids (give each its own study, or retrain).
    """
    from ..inference import Predictor
    from ..preprocess import PreprocessConfig

    path = Path(derivatives) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the run's preprocessing settings are missing (run notebook 01)")
    d = json.loads(path.read_text())
    d.pop("fingerprint", None)
    folders = dict(models) if isinstance(models, Mapping) else {str(m): m for m in models}
    grids = {name: Predictor.describe(folder).grid for name, folder in folders.items()}
    grids = {name: g for name, g in grids.items() if g}  # an imported model aligns to its own templates
    shared = {json.dumps([g.get("target_spacing"), list(g.get("grid_inplane") or [])]) for g in grids.values()}
    if len(shared) > 1:
        raise ValueError("the study's models were trained on different grids: "
                         + "; ".join(f"{n}: {g}" for n, g in grids.items()) + " - run one study per grid")
    grid = {k: v for k, v in next(iter(grids.values()), {}).items() if k != "grid_divisor"}
    divisors = [int(g["grid_divisor"]) for g in grids.values() if g.get("grid_divisor")]
    if divisors:  # a grid every model can take (a U-Net's 2^n; a baseline's 1)
        grid["grid_divisor"] = math.lcm(*divisors)
    return PreprocessConfig.from_dict(d).replace(qc_figure=False, **grid, **overrides)


# ------------------------------------------------------------------------------------- preprocessing


def _record_path(out_dir: Path, key: str) -> Path:
    return out_dir / key / f"{key}_lone3t.json"


def _preprocess_work(item) -> dict:
    key, path, mask, out_dir, cfg, method, generalised = item
    from ..preprocess import preprocess_lone_3t

    sub = Path(out_dir) / key
    sub.mkdir(parents=True, exist_ok=True)
    if cfg.mask_backend == "given" and not mask:
        raise ValueError(f"{key}: mask_backend='given' but no _desc-brain_mask file beside {path}")
    rec = preprocess_lone_3t(path, sub, cfg, method=method, generalised=generalised, key=key,
                             t3_mask=mask if cfg.mask_backend == "given" else None)
    write_json(_record_path(Path(out_dir), key), rec)  # written last: marks the subject finished
    return {"path": rec["files"]["t3"], "seconds": rec["seconds"]}


def preprocess_lone_batch(inputs: pd.DataFrame, out_dir: PathLike, *, config=None, method: str = "generalised",
                          generalised=None, n_jobs: int = 1, progress: bool = True) -> pd.DataFrame:
    """Align and normalise many lone 3T images onto the model's grid; resumable, failures recorded.

    Args:
        inputs: :func:`lone_inputs` (``key``, ``path``, optionally ``mask``).
        out_dir: one folder per key with the aligned 3T, its brain mask and record; ``status.tsv``.
        config: a :class:`synth7t.preprocess.PreprocessConfig` (its ``target_spacing`` and ``grid_inplane`` must
            be the model's; :func:`lone_config` gives one).
        method, generalised: as :func:`synth7t.preprocess.preprocess_lone_3t`.
        n_jobs: parallel processes (one ITK thread each).

    Returns:
        The status table (``key, status, seconds, path, reason``).
    """
    from ..preprocess import PreprocessConfig

    cfg = config or PreprocessConfig()
    out = Path(out_dir).resolve()  # records name their files by absolute path: readable from any working folder
    out.mkdir(parents=True, exist_ok=True)
    fp = cfg.fingerprint()
    masks = inputs["mask"] if "mask" in inputs.columns else [""] * len(inputs)
    items = [(r.key, r.path, m or "", str(out), cfg, method, generalised)
             for r, m in zip(inputs.itertuples(index=False), masks)]

    def finished(it) -> bool:
        rec = read_json(_record_path(out, it[0])) if _record_path(out, it[0]).is_file() else None
        return bool(rec) and rec.get("config_fingerprint") == fp and Path(rec["files"]["t3"]).is_file()

    status = run_batch(items, _preprocess_work, ids=lambda it: {"key": it[0]}, is_finished=finished,
                       status_file=out / "status.tsv", executor=LocalExecutor(n_jobs, 1), columns=("path",),
                       progress=progress, desc="align lone 3T", unit="scan")
    done = status["status"] == "skipped"
    status.loc[done, "path"] = [read_json(_record_path(out, k))["files"]["t3"] for k in status.loc[done, "key"]]
    return status


def lone_records(out_dir: PathLike) -> dict[str, dict]:
    """The records of :func:`preprocess_lone_batch`, by key."""
    out = {}
    for p in sorted(Path(out_dir).glob("*/*_lone3t.json")):
        rec = read_json(p)
        if rec:
            out[rec["key"]] = rec
    return out


# ----------------------------------------------------------------------------------------- prediction


class _LoneWork:
    """The prediction of one aligned lone 3T, in whichever process runs it (picklable: the model's folder travels,
    and a worker process loads the model once, on first use; in the calling process, the copy given)."""

    def __init__(self, model_dir: PathLike, records: Mapping[str, dict], demographics: Mapping[str, dict],
                 out_dir: Path, name: str, device: str, batch_size: Optional[int], config=None, loaded=None,
                 force: bool = False):
        self.model_dir, self.device = str(model_dir), str(device)
        self.records, self.demographics = dict(records), dict(demographics)
        self.out_dir, self.name, self.batch_size, self.config = Path(out_dir), name, batch_size, config
        self.model, self.force = loaded, bool(force)

    def __getstate__(self):
        return {**self.__dict__, "model": None}  # a worker loads its own copy

    def loaded(self):
        from ..inference import Predictor

        return self.model if self.model is not None else \
            Predictor.from_folder(self.model_dir, self.device, once_per_process=True)

    def __call__(self, key: str) -> dict:
        from ..inference import prediction_path
        from ..data.layout import is_impaired

        predictor = self.loaded()
        rec, d = self.records[key], self.demographics[key]
        t3 = sio.load_volume(rec["files"]["t3"])
        mask = sio.load_volume(rec["files"]["mask"], dtype=None).data
        context = dict(age=float(d["age"]), sex=str(d["sex"]), impaired=is_impaired(str(d["diagnosis"])),
                       batch_size=self.batch_size)
        if predictor.kind == "imported":
            vol = _imported_on_study_grid(predictor, rec, t3, mask, self.config, d.get("mask") or None, context,
                                          self.force)
        else:
            vol = predictor.predict(t3.data, mask=mask, axial_range=(int(rec["bottom_slice"]), int(rec["top_slice"])),
                                    **context).image
        p = prediction_path(self.out_dir, key, self.name)
        sio.save_volume(p, vol, t3.affine, dtype=np.float32)
        return {"path": str(p)}


def _imported_on_study_grid(predictor, rec: dict, t3, mask: np.ndarray, config, t3_mask, context: dict,
                            force: bool = False) -> np.ndarray:
    """An imported model's prediction of a lone scan (aligned to its own templates from the scan itself), resampled
    onto the study's aligned grid, so that every image type of a subject shares one grid."""
    from ..inference.files import align_for
    from ..preprocess import resample

    if config is None:
        raise ValueError("an imported model aligns each scan to its own templates: give predict_lone the study's "
                         "preprocessing config (lone_config) for its brain extraction and N4")
    aligned = align_for(predictor, rec["input"], config, t3_mask=t3_mask, force=force)
    pred = predictor.predict(aligned["image"], mask=aligned["mask"], **context)
    # study grid world -> scan world (the study's alignment) -> template grid world (the model's)
    to_template = np.linalg.inv(aligned["world_map"]) @ np.asarray(rec["alignment"]["world_map"], float)
    vol = resample(pred.image, aligned["affine"], t3.data.shape, t3.affine, world_map=to_template, order=1)
    return (vol * (mask > 0)).astype(np.float32)


def predict_lone(model_dir: PathLike, records: Mapping[str, dict], demographics: pd.DataFrame, out_dir: PathLike, *,
                 name: str, device: str = "auto", batch_size: Optional[int] = None, progress: bool = True,
                 n_jobs: int = 1, config=None, force: bool = False) -> pd.DataFrame:
    """Synthetic 7T of every aligned lone 3T with one model; resumable, failures recorded.

    Every kind of model predicts through :class:`synth7t.inference.Predictor`: a multi-view model fuses the planes it
    learned; an imported model of the authors aligns each scan (``records``' ``input``) to its own templates with
    ``config``'s brain extraction and N4 and its output is resampled onto the study's aligned grid.

    Args:
        model_dir: a model folder (:func:`synth7t.inference.load_model`).
        records: :func:`lone_records`.
        demographics: ``key, age, sex, diagnosis`` (:func:`lone_inputs`; its ``mask`` column is the given brain mask
            an imported model's alignment uses with ``mask_backend="given"``); a model conditioned on the diagnosis
            needs it, a ``-nodiag`` model does not read it.
        out_dir: output folder (``predictions.tsv`` and one NIfTI per key,
            :func:`synth7t.inference.prediction_path`).
        name: the image type (model name of the run).
        n_jobs: on a CPU, worker processes that share its threads (each loads its own model copy). Small CPU
            networks use threads poorly: on 2 cores a demo U-Net predicts a slice in 50 ms with 2 threads and 72 ms
            with 1, so two 1-thread workers predict 1.4 times as many volumes per second (worth it for a batch of
            many volumes, not for 3). On a GPU the volumes run in this process, one after the other.
        config: the study's preprocessing (:func:`lone_config`), needed by an imported model.
        force: an imported model's alignment goes on past a refused content check
            (:mod:`synth7t.preprocess.input_checks`).

    Returns:
        The status table (``key, status, seconds, path, reason``).
    """
    from ..inference import Predictor, prediction_path

    if int(n_jobs) < 1:
        raise ValueError(f"n_jobs must be >= 1, got {n_jobs}")
    predictor = Predictor.from_folder(model_dir, device)  # a bad folder fails here, before any volume
    if predictor.kind == "imported" and config is None:
        raise ValueError(f"{model_dir}: an imported model aligns each scan to its own templates; pass the study's "
                         "preprocessing config (config=lone_config(...)) for its brain extraction and N4")
    on_cpu = predictor.device.type == "cpu"
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    demo = demographics.set_index("key")
    keys = sorted(records)
    unknown = [k for k in keys if k not in demo.index]
    if unknown:
        raise ValueError(f"no demographics for {', '.join(unknown[:10])}")
    cols = [c for c in ("age", "sex", "diagnosis", "mask") if c in demo.columns]
    workers = int(n_jobs) > 1 and on_cpu
    work = _LoneWork(model_dir, records, {k: demo.loc[k, cols].to_dict() for k in keys}, out, name, "cpu",
                     batch_size, config, loaded=None if workers else predictor, force=force)
    executor = LocalExecutor(int(n_jobs), cores_per_worker(int(n_jobs))) if workers else None
    table = run_batch(keys, work, ids=lambda k: {"key": k},
                      is_finished=lambda k: prediction_path(out, k, name).is_file(),
                      status_file=out / "predictions.tsv", columns=("path",), progress=progress, executor=executor,
                      desc=f"predict {name}", unit="volume")
    skipped = table["status"] == "skipped"
    table.loc[skipped, "path"] = [str(prediction_path(out, k, name)) for k in table.loc[skipped, "key"]]
    return table


def lone_images(records: Mapping[str, dict], predict_dirs: Mapping[str, PathLike]) -> pd.DataFrame:
    """One row per image of the study: the aligned 3T and each model's prediction (``key, image_type, path``)."""
    from ..inference import prediction_path

    rows = []
    for key in sorted(records):
        rows.append({"key": key, "image_type": BASELINE, "path": str(records[key]["files"]["t3"])})
        for name, folder in predict_dirs.items():
            p = prediction_path(folder, key, name)
            if p.is_file():
                rows.append({"key": key, "image_type": name, "path": str(p)})
    return pd.DataFrame(rows, columns=["key", "image_type", "path"])


# ------------------------------------------------------------------------- the amygdala study (§2.8.3)


def _aligned_path(out_dir: Path, key: str, image_type: str) -> Path:
    return out_dir / image_type / f"{key}_space-reference_T1w.nii.gz"


def align_to_references(images: pd.DataFrame, references: Mapping[str, tuple[PathLike, PathLike]],
                        out_dir: PathLike, *, transform: str = "Affine", registration_spacing: Optional[float] = 2.0,
                        progress: bool = True) -> pd.DataFrame:
    """Carry every image of a subject into its reference image's grid with one affine registration (§2.8.3).

    The subject's :data:`BASELINE` (aligned 3T) image is registered to the reference image (ANTs, ``transform``),
    and the same transform resamples (linear) the 3T and every synthetic image of the subject, which share the 3T's
    grid, onto the reference grid, as the paper applied the 3T's transform to its synthetic 7T images.

    Args:
        images: :func:`lone_images` (``key, image_type, path``); every key needs its :data:`BASELINE` row.
        references: ``{key: (reference image, reference labels)}``.
        out_dir: ``<out_dir>/<image_type>/<key>_space-reference_T1w.nii.gz`` and ``<out_dir>/xfm/<key>_*``;
            finished subjects are reused.
        transform: ``"Affine"`` (the paper's) or ``"Rigid"``.
        registration_spacing: voxel size (mm) the registration runs at (never upsampled).

    Returns:
        ``key, image_type, path`` of the images on the reference grids.
    """
    from ..evaluation.regional import REFERENCE_ALIGNMENT
    from ..preprocess import apply_transforms, coarsen, register

    if transform not in ("Affine", "Rigid"):
        raise ValueError(f"transform must be 'Affine' or 'Rigid', got {transform!r}")
    out = Path(out_dir)
    xfm = out / "xfm"
    xfm.mkdir(parents=True, exist_ok=True)
    cfg = REFERENCE_ALIGNMENT.replace(transform=transform, spacing=registration_spacing)
    rows = []
    keys = list(dict.fromkeys(images["key"]))
    from tqdm.auto import tqdm

    for key in tqdm(keys, desc="align to references", unit="subject", disable=not progress):
        group = images[images["key"] == key]
        if key not in references:
            raise ValueError(f"{key}: no reference image and labels")
        base = group[group["image_type"] == BASELINE]
        if base.empty:
            raise ValueError(f"{key}: no {BASELINE} image to register to the reference")
        ref_img = sio.load_volume(references[key][0])
        mat = xfm / f"{key}_0GenericAffine.mat"
        if not mat.is_file():
            b = sio.load_volume(base["path"].iloc[0])
            fixed, fixed_aff = coarsen(ref_img.data, ref_img.affine, cfg.spacing)
            moving, moving_aff = coarsen(b.data, b.affine, cfg.spacing)
            with tempfile.TemporaryDirectory(prefix="synth7t-ref-") as tmp:
                reg = register(fixed, fixed_aff, moving, moving_aff, Path(tmp) / "reg_", cfg)
                Path(reg["affine"]).replace(mat)
        for r in group.itertuples(index=False):
            dst = _aligned_path(out, key, r.image_type)
            if not dst.is_file():
                v = sio.load_volume(r.path)
                moved = apply_transforms(v.data, v.affine, ref_img.shape, ref_img.affine, [str(mat)], "linear")
                dst.parent.mkdir(parents=True, exist_ok=True)
                sio.save_volume(dst, np.clip(moved, 0, None), ref_img.affine, dtype=np.float32)
            rows.append({"key": key, "image_type": r.image_type, "path": str(dst)})
    return pd.DataFrame(rows, columns=["key", "image_type", "path"])


# ------------------------------------------------------------------------- both studies, in one call


@dataclass
class LoneCohortRun:
    """What :func:`run_lone_cohort` made, step by step (each a status table of its batch, failures recorded with
    their reasons) and the images and label maps the studies read."""

    aligned: pd.DataFrame
    records: dict
    predictions: pd.DataFrame
    images: pd.DataFrame
    segmentations: pd.DataFrame
    seg_dir: Path

    @property
    def failures(self) -> pd.DataFrame:
        """Every failed alignment, prediction and segmentation (the step in ``step``)."""
        parts = [t[t["status"] == "failed"].assign(step=step) for step, t in
                 (("align", self.aligned), ("predict", self.predictions), ("segment", self.segmentations))
                 if len(t) and "status" in t]
        return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["key", "status", "step"])


def run_lone_cohort(inputs: pd.DataFrame, out_dir: PathLike, model_dirs: Mapping[str, PathLike],
                    derivatives: PathLike, *, mask_backend: str = "deepbet", method: str = "generalised",
                    device: str = "auto", n_jobs: int = 1, seg_backend: str = "atlas",
                    seg_config: Optional[Mapping] = None,
                    references: Optional[Mapping[str, tuple[PathLike, PathLike]]] = None,
                    executor=None) -> LoneCohortRun:
    """A lone 3T cohort through the studies' pipeline: align every scan onto the models' grid, predict it with
    every model, and segment the 3T and each synthesis; with ``references`` (the amygdala study) each subject's
    images are first carried into its reference image's grid (:func:`align_to_references`). Resumable: every step
    reuses what a run with the same settings finished, and a failure is recorded and skipped, never raised
    (:attr:`LoneCohortRun.failures`).

    Args:
        inputs: :func:`lone_inputs` (``key, path, age, sex, diagnosis``, optionally ``mask``).
        out_dir: ``aligned/``, ``predict/<model>/``, ``reference_space/`` and ``segment/<backend>/`` go here.
        model_dirs: ``{name: model folder}`` (:func:`model_dirs`); every model predicts every aligned scan.
        derivatives: the paired dataset's preprocessing outputs: the grid (:func:`lone_config`) and, for
            ``method="generalised"``, the pairs' affines (:func:`synth7t.preprocess.estimate_generalised_affine`).
        mask_backend: brain extraction of the lone 3T (``deepbet``, ``synthstrip`` or ``given``).
        method: ``generalised`` (the paper) or ``template`` (:func:`synth7t.preprocess.preprocess_lone_3t`).
        device: prediction device.
        n_jobs: worker processes of each step.
        seg_backend, seg_config, executor: as :func:`synth7t.segment.segment_batch`.
        references: ``{key: (reference image, reference labels)}``: segment in the references' grids.
    """
    from ..preprocess import estimate_generalised_affine
    from ..segment import segment_batch

    out = Path(out_dir)
    config = lone_config(derivatives, model_dirs, mask_backend=mask_backend)
    generalised = estimate_generalised_affine(derivatives) if method == "generalised" else None
    aligned = preprocess_lone_batch(inputs, out / "aligned", config=config, method=method, generalised=generalised,
                                    n_jobs=n_jobs)
    keys = set(inputs["key"])
    records = {k: r for k, r in lone_records(out / "aligned").items() if k in keys}
    predictions = [predict_lone(d, records, inputs, out / "predict" / m, name=m, device=device, n_jobs=n_jobs,
                                config=config).assign(model=m) for m, d in model_dirs.items()]
    predictions = pd.concat(predictions, ignore_index=True) if predictions else pd.DataFrame(columns=["key", "status"])
    images = lone_images(records, {m: out / "predict" / m for m in model_dirs})
    if references is not None:
        images = align_to_references(images[images["key"].isin(list(references))], references,
                                     out / "reference_space")
    seg_dir = out / "segment" / seg_backend
    seg = segment_batch(images, seg_dir, backend=seg_backend, config=dict(seg_config or {}), n_jobs=n_jobs,
                        executor=executor)
    return LoneCohortRun(aligned, records, predictions, images, seg, seg_dir)


def reference_study_dice(seg_paths: Mapping[tuple[str, str], PathLike],
                         references: Mapping[str, tuple[PathLike, PathLike]],
                         structures: Mapping[str, Sequence[int]]) -> pd.DataFrame:
    """Dice of each structure between every segmentation (on its reference grid) and the reference labels.

    Returns:
        ``key, image_type, structure, dice`` (tidy).
    """
    from ..evaluation.regional import structure_dice

    rows, cache = [], {}
    for (key, image_type), path in sorted(seg_paths.items()):
        if key not in cache:
            cache = {key: sio.load_volume(references[key][1], dtype=None).data}
        ref = cache[key]
        lab = sio.load_volume(path, dtype=None).data
        if lab.shape != ref.shape:
            raise ValueError(f"{key}/{image_type}: segmentation {lab.shape} is not on the reference grid {ref.shape}")
        rows += [{"key": key, "image_type": image_type, "structure": s, "dice": d}
                 for s, d in structure_dice(ref, lab, structures).items()]
    return pd.DataFrame(rows, columns=["key", "image_type", "structure", "dice"])



# ----------------------------------------------------------------------------- the amygdala study's tests

#: the structures the paper's amygdala study scores (§2.8.3): left and right amygdala
AMYGDALA_SIDES = ("Left-Amygdala", "Right-Amygdala")


def amygdala_tests(structure_dice: pd.DataFrame, *, baseline: str = BASELINE,
                   structures: Sequence[str] = AMYGDALA_SIDES, order: Optional[Sequence[str]] = None,
                   design: str = "paper") -> pd.DataFrame:
    """The amygdala study's paired t-tests (§2.8.3, §3.3), in the paper's design or per side.

    ``design="paper"`` (the default) is what the paper's numbers fit: per participant the Dice of the ``structures``
    (left and right amygdala) are averaged, one value per participant and image type, and every pair of image types
    is compared by a paired t-test (3T, U-Net, GAN U-Net: U-Net vs 3T, GAN U-Net vs 3T, GAN U-Net vs U-Net), with
    Benjamini–Hochberg over those pairs (:func:`synth7t.studies.stats.pairwise_paired_tests`). The paper's t = 4.56 with
    0.017 ± 0.017 over 20 participants and its p = 0.0003 need n = 20 (one mean per participant, not 40 sides) and
    three tests (see :func:`synth7t.studies.paper.amygdala_t_check`).

    ``design="per_side"`` (a secondary table) tests each structure of each synthetic type against the baseline,
    Benjamini–Hochberg over all those rows (:func:`synth7t.studies.stats.paired_tests`).

    Args:
        structure_dice: ``key, image_type, structure, dice`` (chapter 07's ``structure_dice.tsv``).
        baseline: the image type listed first (every synthetic type's reference).
        structures: the structures averaged per participant (``"paper"``) or tested one by one (``"per_side"``).
        order: the image types after the baseline, in order (default: their order of appearance).
        design: ``"paper"`` or ``"per_side"``.

    Returns:
        ``"paper"``: one row per pair, ``image_type``, ``baseline``, ``n``, ``mean``, ``mean_baseline``,
        ``mean_diff``, ``sd_diff``, ``t``, ``p``, ``p_bh``; a participant lacking a structure's Dice for an image
        type is left out of that type's pairs (not averaged over one side). ``"per_side"``: the same columns with
        ``structure`` first.
    """
    from .stats import paired_tests, pairwise_paired_tests

    if design not in ("paper", "per_side"):
        raise ValueError(f"design must be 'paper' (mean of the sides per participant, all pairs) or 'per_side', "
                         f"got {design!r}")
    missing = [c for c in ("key", "image_type", "structure", "dice") if c not in structure_dice.columns]
    if missing:
        raise ValueError(f"structure_dice lacks column(s) {', '.join(missing)} (has "
                         f"{', '.join(map(str, structure_dice.columns))})")
    d = structure_dice[structure_dice["structure"].isin(list(structures))]
    absent = [s for s in structures if s not in set(d["structure"])]
    if absent:
        raise ValueError(f"structure_dice holds no Dice of {absent}; pass structures= from "
                         f"{sorted(set(structure_dice['structure']))}")
    types = list(dict.fromkeys(d["image_type"]))
    if baseline not in types:
        raise ValueError(f"baseline {baseline!r} is not an image type of the table ({', '.join(map(str, types))})")
    others = list(order) if order is not None else [t for t in types if t != baseline]
    if design == "per_side":
        return paired_tests(d[d["image_type"].isin([baseline, *others])], value="dice", condition="image_type",
                            subject="key", baseline=baseline, by="structure")
    # one value per participant and type: the mean of its sides (NaN when a side is missing, so never one side)
    wide = d.pivot_table(index=["key", "image_type"], columns="structure", values="dice", aggfunc="mean",
                         dropna=False).reindex(columns=list(structures))
    per = wide.mean(axis=1, skipna=False).rename("dice").reset_index().dropna(subset=["dice"])
    return pairwise_paired_tests(per, value="dice", condition="image_type", subject="key",
                                 order=[baseline, *others])
