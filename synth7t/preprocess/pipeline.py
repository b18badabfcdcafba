"""Preprocessing of pairs: output names and records, one subject (:func:`preprocess_subject`) and a whole dataset
(:func:`preprocess_dataset`, through :func:`synth7t.runtime.batch.run_batch`).

Each subject runs ITK with ``config.threads_per_job`` threads (in a worker process or in the calling one), and its
record stores the thread counts really used (``threads``), since ITK's results depend on them (see
:mod:`synth7t.preprocess.ants`).
"""

from __future__ import annotations

import shutil
import tempfile
import time
import traceback
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import pandas as pd

from ..data import io as sio
from ..runtime.batch import Executor, LocalExecutor, run_batch, write_json
from ..data.layout import Subject, discover
from .ants import PathLike, apply_transforms, coarsen, read_affine, register, resample, set_itk_threads, to_spacing
from .config import PIPELINE_NAME, PIPELINE_VERSION, PreprocessConfig, PreprocessError
from .grid import artefacts_on_grid, brain_slices, crop_to_brain, crop_to_grid, plan_grid
from .qc import nmi, plot_qc_arrays, qc_table
from .records import derivatives_dir, input_stamp_of, is_done, output_paths, thread_counts
from .steps import StepTimer, brain_mask, check_mask_volume, load_canonical, n4, normalise

# ------------------------------------------------------------------------------------------- outputs


def _percentiles(x: np.ndarray, mask: np.ndarray, prefix: str) -> dict:
    p = np.percentile(x[mask], [1, 50, 99])
    return {f"{prefix}_p01": float(p[0]), f"{prefix}_p50": float(p[1]), f"{prefix}_p99": float(p[2])}


def _mask_and_n4(img: np.ndarray, aff: np.ndarray, given, cfg: PreprocessConfig, tm, stage: str, what: str, *,
                 n4_on: bool, remask: bool) -> tuple[np.ndarray, np.ndarray, float]:
    """Brain mask, N4 inside it, and (``remask``, not with given masks) a new mask of the corrected image.

    Returns:
        ``(image, mask, mask volume in mL)``; every mask is checked for a plausible volume.
    """
    with tm(f"mask_{stage}"):
        mask = brain_mask(img, aff, cfg.mask_backend, given=given, threshold=cfg.mask_threshold, what=what)
        check_mask_volume(mask, aff, cfg, what)
    if n4_on:
        with tm(f"n4_{stage}"):
            img = n4(img, aff, mask, cfg)
        if remask and cfg.mask_backend != "given":
            with tm(f"mask_{stage}"):
                mask = brain_mask(img, aff, cfg.mask_backend, threshold=cfg.mask_threshold, what=what)
    return img, mask, check_mask_volume(mask, aff, cfg, what)


def preprocess_subject(subject: Subject, out_root: PathLike, config: Optional[PreprocessConfig] = None) -> dict:
    """Preprocess one 3T/7T pair and write its outputs (see the module docstring for the steps and files).

    Args:
        subject: a :class:`synth7t.data.layout.Subject` with ``t3`` and ``t7``.
        out_root: the derivatives folder (``derivatives_dir(data_dir)``).
        config: settings; default the ``paper`` preset.

    Returns:
        The subject's record (also written as ``<key>_desc-preproc.json``, last).

    Raises:
        PreprocessError: a bad input (no 7T, a 2D or constant image, an empty or implausible mask, ...).
    """
    cfg = config or PreprocessConfig()
    key = subject.key
    if subject.t7 is None:
        raise PreprocessError(f"{key}: 3T image {subject.t3} has no 7T partner to register to; for inference on a "
                              "lone 3T use synth7t.preprocess.preprocess_lone_3t (generalised affine or template)")
    if subject.t3 is None:
        raise PreprocessError(f"{key}: 7T image {subject.t7} has no 3T partner")
    paths = output_paths(out_root, key)
    paths["json"].unlink(missing_ok=True)  # written last: a half-written subject is never "finished"
    paths["error"].unlink(missing_ok=True)
    tm = StepTimer()
    t_start = time.perf_counter()
    # fixed before the first ANTs call of the process (a worker's env already says the same)
    itk = set_itk_threads(cfg.threads_per_job)

    # 7T space
    with tm("load"):
        t7_raw, aff7_orig, hdr7 = load_canonical(subject.t7, f"{key} 7T")
        t3, aff3, _ = load_canonical(subject.t3, f"{key} 3T")
        t7, aff7 = to_spacing(t7_raw, aff7_orig, cfg.target_spacing)
        del t7_raw
    # 7T: mask, N4, mask again (the paper's order); 3T: mask, N4 (mask again only if configured)
    t7, mask7, mask_ml = _mask_and_n4(t7, aff7, subject.t7_mask, cfg, tm, "7t", f"{key} 7T",
                                      n4_on=cfg.n4_7t, remask=cfg.remask_7t)
    t3, mask3, _ = _mask_and_n4(t3, aff3, subject.t3_mask, cfg, tm, "3t", f"{key} 3T",
                                n4_on=cfg.n4_3t, remask=cfg.remask_3t)
    # registration of the brain-extracted 3T to the brain-extracted 7T
    with tm("register"):
        # each brain on its bounding box (registration_crop_mm): the transforms live in world coordinates, so the 3T
        # is still resampled onto the whole 7T space; the warp field covers the box (identity beyond, outside the brain)
        f, f_aff = crop_to_brain(t7 * mask7, mask7, aff7, cfg.registration_crop_mm)
        m, m_aff = crop_to_brain(t3 * mask3, mask3, aff3, cfg.registration_crop_mm)
        _register_pair(f, f_aff, m, m_aff, paths, cfg, key)
    with tm("resample"):
        transforms = [str(paths["warp"]), str(paths["affine"])]
        t3w = apply_transforms(t3, aff3, t7.shape, aff7, transforms, "linear")
    # normalisation in the 7T brain mask (one mask for both members of the pair)
    with tm("normalise"):
        n7, p7 = normalise(t7, mask7, cfg.clip_low_percentile, cfg.clip_high_percentile)
        n3, p3 = normalise(t3w, mask7, cfg.clip_low_percentile, cfg.clip_high_percentile)
    # grid
    with tm("grid"):
        box = plan_grid(mask7, aff7, cfg.grid_inplane, cfg.axial_margin, what=f"{key} 7T")
        g7, g3, gm = crop_to_grid(n7, box), crop_to_grid(n3, box), crop_to_grid(mask7.astype(np.uint8), box)
        bottom, top = brain_slices(gm > 0)
        excluded = artefacts_on_grid(subject.artefact_slices, aff7_orig, box)
    with tm("write"):
        gaff = box.affine
        sio.save_volume(paths["t7"], g7, gaff, dtype=np.float32)
        sio.save_volume(paths["t3"], g3, gaff, dtype=np.float32)
        sio.save_volume(paths["mask"], gm, gaff, dtype=np.uint8)
        has_labels = subject.t7_labels is not None
        if has_labels:
            lab = sio.load_volume(subject.t7_labels, reorient=True, dtype=None)
            labs = resample(np.asarray(lab.data), lab.affine, t7.shape, aff7, order=0)
            sio.save_volume(paths["labels"], crop_to_grid(labs, box), gaff)
    with tm("qc"):
        qc = _pair_qc(n3, n7, mask7, t3w, t7, g3, g7, gm, mask_ml, box, paths, cfg, key)
    rel = {k: str(v.relative_to(out_root)) for k, v in paths.items()
           if k not in ("dir", "xfm_prefix", "error", "json") and v.exists()}
    record = {
        "key": key, "participant_id": subject.participant_id, "session": subject.session, "status": "done",
        "mode": "pair", "pipeline": PIPELINE_NAME, "pipeline_version": PIPELINE_VERSION,
        "config_fingerprint": cfg.fingerprint(), "preset": cfg.preset,
        "input_stamp": input_stamp_of(subject),
        "inputs": {"t3": str(subject.t3), "t7": str(subject.t7), "t3_mask": _s(subject.t3_mask),
                   "t7_mask": _s(subject.t7_mask), "t7_labels": _s(subject.t7_labels)},
        "normalisation": {"t3": p3, "t7": p7},
        "grid": box.to_dict(), "grid_affine": gaff.tolist(),
        "space": {"affine": aff7.tolist(), "shape": list(t7.shape), "input_7t_affine_ras": aff7_orig.tolist(),
                  "resampled": not np.allclose(aff7, aff7_orig)},
        "bottom_slice": bottom, "top_slice": top,
        "artefact_slices_input": [list(r) for r in subject.artefact_slices],
        "excluded_slices": excluded,
        "registration": {"affine_ras": read_affine(paths["affine"]).tolist(), "metric": "Mattes MI",
                         "transforms": [str(paths["warp"].relative_to(out_root)),
                                        str(paths["affine"].relative_to(out_root))]},
        "qc": qc, "files": rel, "timings": tm.t, "threads": thread_counts(itk),
        "seconds": round(time.perf_counter() - t_start, 2),
    }
    write_json(paths["json"], record)
    return record


def _register_pair(fixed: np.ndarray, aff7: np.ndarray, moving: np.ndarray, aff3: np.ndarray, paths: dict,
                   cfg: PreprocessConfig, key: str) -> None:
    """Register the brain-extracted 3T to the brain-extracted 7T; keep the transforms under ``paths``."""
    # no "." before the random part of a temporary folder: ITK took ".../x.h5q3/reg_1Warp.nii.gz" for an HDF5 file
    with tempfile.TemporaryDirectory(prefix=f"{key}-reg-") as tmp:
        fixed, fixed_aff = coarsen(fixed, aff7, cfg.registration.spacing)
        reg = register(fixed, fixed_aff, moving, aff3, Path(tmp) / "reg_", cfg)
        paths["affine"].parent.mkdir(parents=True, exist_ok=True)
        for name in ("affine", "warp", "inverse_warp"):
            shutil.copyfile(reg[name], paths[name])


def _pair_qc(n3, n7, mask7, t3w, t7, g3, g7, gm, mask_ml: float, box, paths: dict, cfg: PreprocessConfig,
             key: str) -> dict:
    """QC metrics of a registered, normalised pair (and the QC figure when configured)."""
    qc = {"mask_ml": round(mask_ml, 2), "nmi": nmi(n3, n7, mask7),
          "correlation": float(np.corrcoef(n3[mask7], n7[mask7])[0, 1]), "n_slices": int(box.shape[2]),
          **_percentiles(t3w, mask7, "t3"), **_percentiles(t7, mask7, "t7")}
    if cfg.qc_figure:
        import matplotlib.pyplot as plt

        fig = plot_qc_arrays(g3, g7, gm > 0, title=f"{key}: warped 3T with 7T edges and brain outline")
        paths["qc"].parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(paths["qc"], dpi=90)
        plt.close(fig)
    return qc


def _s(p) -> Optional[str]:
    return None if p is None else str(p)


# --------------------------------------------------------------------------------------- many subjects


def _work(item) -> dict:
    """One subject in a batch worker; an error JSON beside the outputs records a failure."""
    subject, out_root, cfg = item
    try:
        rec = preprocess_subject(subject, out_root, cfg)
    except Exception as exc:
        write_json(output_paths(out_root, subject.key)["error"],
                   {"key": subject.key, "status": "failed", "reason": f"{type(exc).__name__}: {exc}",
                    "traceback": traceback.format_exc(limit=8)})
        raise
    return {"seconds": rec["seconds"]}


def preprocess_dataset(data_dir: PathLike, config: Optional[PreprocessConfig] = None, *,
                       subjects: Optional[Sequence[str]] = None, n_jobs: int = 1, overwrite: bool = False,
                       progress: bool = True, out_root: Optional[PathLike] = None,
                       executor: Optional[Executor] = None) -> pd.DataFrame:
    """Preprocess every pair of a dataset in the :mod:`synth7t.data.layout` layout.

    Args:
        data_dir: dataset root.
        config: settings (default ``paper``); written resolved as ``config.json`` in the derivatives folder.
        subjects: keys or participant ids to run (default all).
        n_jobs: parallel worker processes (each with ``config.threads_per_job`` threads).
        overwrite: redo finished subjects.
        progress: tqdm progress bar.
        out_root: output folder (default ``<data_dir>/derivatives/synth7t-preproc``).
        executor: where subjects run (default local processes: ``n_jobs`` and ``config.threads_per_job``).

    Returns:
        Summary table ``key, status (done|skipped|failed), seconds, reason`` from :func:`synth7t.runtime.batch.run_batch`,
        written as ``summary.tsv`` as subjects finish (with ``qc.tsv`` from :func:`qc_table` at the end).
    """
    cfg = config or PreprocessConfig()
    out = Path(out_root) if out_root is not None else derivatives_dir(data_dir)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # layout problems become per-subject rows below
        ds = discover(data_dir, require_7t=False, on_error="skip")
    todo = list(ds)
    if subjects:
        wanted = set(subjects)
        todo = [s for s in todo if s.key in wanted or s.participant_id in wanted]
        missing = wanted - {s.key for s in todo} - {s.participant_id for s in todo}
        if missing:
            raise ValueError(f"subjects not found in {data_dir}: {', '.join(sorted(missing))}")
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "config.json", cfg.to_dict() | {"fingerprint": cfg.fingerprint()})
    write_json(out / "dataset_description.json", {
        "Name": "synth7t preprocessing", "BIDSVersion": "1.9.0", "DatasetType": "derivative",
        "GeneratedBy": [{"Name": PIPELINE_NAME, "Version": PIPELINE_VERSION,
                         "Description": "N4, brain extraction, 3T-to-7T ANTs registration, clipped min-max, grid"}],
        "SourceDatasets": [{"URL": str(Path(data_dir).resolve())}]})
    summary = run_batch(
        [(s, str(out), cfg) for s in todo], _work, ids=lambda it: {"key": it[0].key},
        is_finished=lambda it: is_done(out, it[0].key, cfg, it[0]), status_file=out / "summary.tsv",
        executor=executor or LocalExecutor(n_jobs, cfg.threads_per_job), overwrite=overwrite, progress=progress,
        desc="preprocess", unit="subject")
    qc_table(out).to_csv(out / "qc.tsv", sep="\t", index=False)
    return summary
