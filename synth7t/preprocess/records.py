"""Where preprocessing writes (BIDS-derivatives names) and the per-subject JSON records that mark finished work."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import pandas as pd

from ..runtime.batch import input_stamp, read_json
from ..data.layout import Subject
from .ants import PathLike
from .config import PIPELINE_NAME, PreprocessConfig


def derivatives_dir(data_dir: PathLike) -> Path:
    """``<data_dir>/derivatives/synth7t-preproc``."""
    return Path(data_dir) / "derivatives" / PIPELINE_NAME


def output_paths(out_root: PathLike, key: str) -> dict[str, Path]:
    """BIDS-derivatives file names of one acquisition (``key`` = ``sub-<id>`` or ``sub-<id>_ses-<s>``)."""
    sub, _, ses = key.partition("_")
    base = Path(out_root) / sub / (ses if ses else "")
    anat, xfm, fig = base / "anat", base / "xfm", base / "figures"
    return {
        "dir": base,
        "t3": anat / f"{key}_acq-3T_space-7T_desc-preproc_T1w.nii.gz",
        "t7": anat / f"{key}_acq-7T_desc-preproc_T1w.nii.gz",
        "mask": anat / f"{key}_acq-7T_desc-brain_mask.nii.gz",
        "labels": anat / f"{key}_acq-7T_desc-preproc_dseg.nii.gz",
        "xfm_prefix": xfm / f"{key}_from-3T_to-7T_",
        "affine": xfm / f"{key}_from-3T_to-7T_mode-image_desc-affine_xfm.mat",
        "warp": xfm / f"{key}_from-3T_to-7T_mode-image_desc-syn_xfm.nii.gz",
        "inverse_warp": xfm / f"{key}_from-7T_to-3T_mode-image_desc-syn_xfm.nii.gz",
        "qc": fig / f"{key}_desc-registration_qc.png",
        "json": anat / f"{key}_desc-preproc.json",
        "error": base / f"{key}_desc-preproc_error.json",
    }


def thread_counts(itk: int) -> dict:
    """``{"itk": ..., "torch": ...}``: the thread counts that a record stores (results depend on them)."""
    import torch

    return {"itk": int(itk), "torch": int(torch.get_num_threads())}


def load_records(out_root: PathLike) -> list[dict]:
    """Every finished subject's JSON record under a derivatives folder, sorted by key."""
    recs = []
    for p in sorted(Path(out_root).glob("sub-*/**/anat/*_desc-preproc.json")):
        rec = read_json(p)
        if rec is not None:
            recs.append(rec)
    return sorted(recs, key=lambda r: r["key"])


def records_table(out_root: PathLike) -> pd.DataFrame:
    """One row per finished subject: grid shape, bottom/top brain slices, excluded slices, normalisation bounds."""
    rows = []
    for r in load_records(out_root):
        rows.append({
            "key": r["key"], "grid_shape": "x".join(str(v) for v in r["grid"]["shape"]),
            "grid_start": r["grid"]["start"], "bottom_slice": r["bottom_slice"], "top_slice": r["top_slice"],
            "excluded_slices": ";".join(f"{a}-{b}" for a, b in r["excluded_slices"]),
            "t3_low": r["normalisation"]["t3"]["low"], "t3_high": r["normalisation"]["t3"]["high"],
            "t7_low": r["normalisation"]["t7"]["low"], "t7_high": r["normalisation"]["t7"]["high"],
            "seconds": r["seconds"]})
    return pd.DataFrame(rows)


def input_stamp_of(subject: Subject) -> dict:
    """Size and modification time of every input file: a changed input makes a finished subject stale."""
    return input_stamp({name: getattr(subject, name, None)
                        for name in ("t3", "t7", "t3_mask", "t7_mask", "t7_labels")})


def is_done(out_root: PathLike, key: str, cfg: PreprocessConfig, subject: Optional[Subject] = None) -> bool:
    """True when the subject's JSON exists (written last), was made with the same processing settings and,
    when ``subject`` is given, from the same input files (same sizes and modification times)."""
    p = output_paths(out_root, key)["json"]
    if not p.is_file():
        return False
    rec = read_json(p)
    if rec is None:
        return False
    if subject is not None and rec.get("input_stamp") is not None and rec["input_stamp"] != input_stamp_of(subject):
        return False
    return rec.get("config_fingerprint") == cfg.fingerprint() and rec.get("status") == "done"


# ----------------------------------------------------------------------------------------- one subject
