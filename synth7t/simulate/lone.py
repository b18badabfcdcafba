"""Lone-3T demo sets for the paper's two downstream studies, *simulated* like the paired demo cohort.

The paper runs its downstream studies on 3T scans that have no 7T partner (§2.1):

- **the amygdala study** (§2.8.3): twenty 3T scans whose left and right amygdalae were labelled by hand (ASHS
  protocol) on a 3T image resampled to 0.5 × 1 × 0.5 mm; :func:`generate_amygdala_set` simulates such a set: per
  subject a 3T scan (the inference input, in its own head pose) and, in ``derivatives/reference/``, a *second* 3T
  acquisition of the same anatomy resampled onto the finer reference grid with the ground-truth labels drawn on that
  grid (``<key>_T1w.nii.gz``, ``<key>_dseg.nii.gz``). The "manual" labels of the demo are the simulator's exact
  anatomy, so they are better than any rater's;
- **the diagnosis study** (§2.8.4): 3,168 3T scans of participants who did not build the model;
  :func:`generate_lone_cohort` simulates a cohort of 3T scans with ``participants.tsv`` in which some participants
  are re-scans of the paired cohort (new 3T acquisitions of the same anatomy, same ``participant_id``), so that the
  exclusion of the model-building participants (:func:`synth7t.data.layout.exclude_model_participants`) has something to
  exclude, and the others are new subjects.

Both reuse :mod:`synth7t.simulate.demo`'s anatomy, atrophy and 3T simulation (:func:`synth7t.simulate.demo.render_3t`); a lone 3T's
head pose is drawn from its own random stream. Grids scale with ``DemoConfig.voxel_7t`` like the paired cohort's
(the reference grid is the paper's 0.5 × 1 × 0.5 mm times ``voxel_7t / 0.7``). Everything here is simulated and
every sidecar says so.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import pandas as pd
from scipy import ndimage as ndi

from ..data import io as sio
from ..runtime.batch import LocalExecutor, read_json, run_batch, write_json
from .demo import (GENERATOR_VERSION, SIMULATION_NOTICE, DemoConfig, SubjectParams, demo_grids, draw_subject,
    render_3t, render_labels, rigid_pose, subject_anatomy)
from ..data.layout import PARTICIPANTS_FILE
from ..data.templates import LABELS

PathLike = Union[str, Path]

#: the paper's reference grid for the manual amygdala labels (mm, RAS axes: left-right, posterior-anterior,
#: inferior-superior), on its 0.7 mm 7T scale
PAPER_REFERENCE_VOXEL = (0.5, 1.0, 0.5)
#: folder of the reference images and labels inside an amygdala set
REFERENCE_DIR = Path("derivatives") / "reference"
#: first subject index of the simulated lone sets (the paired cohort uses 1..n)
AMYGDALA_FIRST_INDEX = 101
LONE_FIRST_INDEX = 201


def reference_voxel(config: Optional[DemoConfig] = None) -> tuple[float, float, float]:
    """The reference grid's voxel size: the paper's 0.5 × 1 × 0.5 mm scaled like the demo's 7T grid."""
    cfg = config or DemoConfig()
    return tuple(round(v * cfg.voxel_7t / 0.7, 4) for v in PAPER_REFERENCE_VOXEL)


def reference_grid(config: Optional[DemoConfig] = None):
    """``(shape, affine)`` of the reference grid (RAS): the 7T grid's field of view at :func:`reference_voxel`."""
    cfg = config or DemoConfig()
    (shape7, aff7), _ = demo_grids(cfg)
    vox = np.array(reference_voxel(cfg))
    extent = np.array(shape7) * cfg.voxel_7t
    shape = tuple(int(n) for n in np.ceil(extent / vox))
    aff = np.diag([*vox, 1.0])
    aff[:3, 3] = aff7[:3, 3]
    return shape, aff


def lone_acquisition(params: SubjectParams, config: Optional[DemoConfig] = None, *, session: int = 1,
                     pose: Optional[np.ndarray] = None):
    """One more 3T acquisition of a subject's anatomy: a new head pose (unless ``pose``), bias field and noise.

    Args:
        params: the subject (:func:`synth7t.simulate.demo.draw_subject`).
        session: numbers the acquisition; each session has its own random stream.
        pose: 4x4 head pose (subject frame to scanner frame); default drawn within the config's misalignment.

    Returns:
        ``(image, affine, brain mask, pose)``: the 3T as a scanner stores it (LIA, ``voxel_3t``).
    """
    cfg = config or DemoConfig()
    tpl, warp = subject_anatomy(params, cfg)
    rng = np.random.default_rng([int(params.field_seed), int(session), 17])
    if pose is None:
        pose = rigid_pose(rng.uniform(-cfg.misalignment_deg, cfg.misalignment_deg, 3),
                          rng.uniform(-cfg.misalignment_mm, cfg.misalignment_mm, 3))
    gain = float(rng.normal(1.0, 0.06))
    t3, aff, mask = render_3t(tpl, warp, cfg, gain, pose, rng)
    return t3, aff, mask, pose


def _resample_to(data: np.ndarray, affine: np.ndarray, grid) -> np.ndarray:
    """Trilinear resampling of an image onto ``grid = (shape, affine)`` (world coordinates shared)."""
    shape, aff = grid
    m = np.linalg.inv(affine) @ np.asarray(aff, float)
    return ndi.affine_transform(data, m[:3, :3], offset=m[:3, 3], output_shape=tuple(shape), order=1,
                                mode="constant", cval=0.0).astype(np.float32)


def _sidecar(extra: dict) -> dict:
    return {"MagneticFieldStrength": 3, "Simulated": True, "Notice": SIMULATION_NOTICE, **extra}


def _fingerprint(params: SubjectParams, cfg: DemoConfig, kind: str) -> dict:
    from dataclasses import asdict

    return {"generator_version": GENERATOR_VERSION, "kind": kind, "config": asdict(cfg), "params": asdict(params)}


def _t3_paths(data_dir: Path, key: str) -> dict[str, Path]:
    anat = data_dir / key / "anat"
    return {"t3": anat / f"{key}_acq-3T_T1w.nii.gz", "sidecar": anat / f"{key}_acq-3T_T1w.json",
            "mask": anat / f"{key}_acq-3T_desc-brain_mask.nii.gz"}


def _done(sidecar: Path, fingerprint: dict, *files: Path) -> bool:
    meta = read_json(sidecar) if sidecar.is_file() else None
    return bool(meta) and meta.get("synth7t") == fingerprint and all(f.is_file() for f in files)


def _write_lone_3t(data_dir: Path, key: str, params: SubjectParams, cfg: DemoConfig, kind: str, session: int,
                   extra: Optional[dict] = None) -> np.ndarray:
    paths = _t3_paths(data_dir, key)
    paths["t3"].parent.mkdir(parents=True, exist_ok=True)
    paths["sidecar"].unlink(missing_ok=True)  # written last: marks a complete subject
    t3, aff, mask, pose = lone_acquisition(params, cfg, session=session)
    sio.save_volume(paths["t3"], np.clip(t3 * 1000.0, 0, 32767), aff, dtype=np.int16)
    # the ground-truth brain mask, as the paired cohort has: preprocessing may use it (mask_backend="given")
    sio.save_volume(paths["mask"], mask, aff, dtype=np.uint8)
    write_json(paths["sidecar"], _sidecar({"Session": session, "PoseMatrix": np.round(pose, 6).tolist(),
                                           **(extra or {}), "synth7t": _fingerprint(params, cfg, kind)}))
    return pose


# ------------------------------------------------------------------------------------------ amygdala set


def _amygdala_work(item) -> dict:
    data_dir, key, params, cfg = item
    t0 = time.perf_counter()
    ref_dir = data_dir / REFERENCE_DIR
    ref_dir.mkdir(parents=True, exist_ok=True)
    # the reference: a second 3T of the same anatomy in the subject frame, resampled onto the finer grid as the
    # paper's ASHS-preprocessed 3T was, with the exact anatomy as its "manual" labels
    grid = reference_grid(cfg)
    ref3, ref_aff, _, _ = lone_acquisition(params, cfg, session=2, pose=np.eye(4))
    sio.save_volume(ref_dir / f"{key}_T1w.nii.gz", np.clip(_resample_to(ref3, ref_aff, grid) * 1000.0, 0, 32767),
                    grid[1], dtype=np.int16)
    tpl, warp = subject_anatomy(params, cfg)
    sio.save_volume(ref_dir / f"{key}_dseg.nii.gz", render_labels(tpl, warp, grid), grid[1], dtype=np.uint8)
    _write_lone_3t(data_dir, key, params, cfg, "amygdala", session=1,
                   extra={"ReferenceVoxelSizeMm": list(reference_voxel(cfg))})
    return {"seconds": round(time.perf_counter() - t0, 2)}


def generate_amygdala_set(data_dir: PathLike, n_subjects: int = 6, seed: int = 1, *,
                          config: Optional[DemoConfig] = None, n_jobs: int = 1, progress: bool = True) -> pd.DataFrame:
    """Simulate the amygdala study's inputs: lone 3T scans and reference images with labels on a finer grid.

    Args:
        data_dir: output folder: ``sub-1XX/anat/sub-1XX_acq-3T_T1w.nii.gz``, ``participants.tsv`` and
            ``derivatives/reference/sub-1XX_{T1w,dseg}.nii.gz``.
        n_subjects: number of subjects (the paper had 20), indices from :data:`AMYGDALA_FIRST_INDEX` so that they
            never coincide with the paired cohort's.
        seed: anatomy seed of the set (pick one other than the paired cohort's to get new anatomy).
        config: generator settings (voxel sizes; the reference grid follows ``voxel_7t``).
        n_jobs: parallel processes.

    Returns:
        The participants table (``participant_id, age, sex, diagnosis``).
    """
    cfg = config or DemoConfig()
    if not isinstance(n_subjects, (int, np.integer)) or n_subjects < 2:
        raise ValueError(f"n_subjects must be an integer >= 2 (paired tests need two), got {n_subjects!r}")
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    params = [draw_subject(seed, AMYGDALA_FIRST_INDEX + i, cfg) for i in range(n_subjects)]
    items = [(data_dir, p.participant_id, p, cfg) for p in params]

    def finished(it) -> bool:
        _, key, p, c = it
        ref = data_dir / REFERENCE_DIR
        paths = _t3_paths(data_dir, key)
        return _done(paths["sidecar"], _fingerprint(p, c, "amygdala"), paths["t3"], paths["mask"],
                     ref / f"{key}_T1w.nii.gz", ref / f"{key}_dseg.nii.gz")

    status = run_batch(items, _amygdala_work, ids=lambda it: {"participant_id": it[1]},
                       id_columns=("participant_id",), is_finished=finished, executor=LocalExecutor(n_jobs, 1),
                       progress=progress, desc="amygdala set", unit="subject")
    _raise_failed(status)
    return _write_description(data_dir, params, "synth7t demo amygdala set (simulated lone 3T with reference labels)")


# ------------------------------------------------------------------------------------- diagnosis cohort


def _lone_work(item) -> dict:
    data_dir, key, params, cfg, session = item
    t0 = time.perf_counter()
    _write_lone_3t(data_dir, key, params, cfg, "lone", session=session)
    return {"seconds": round(time.perf_counter() - t0, 2)}


def generate_lone_cohort(data_dir: PathLike, n_new: int = 30, seed: int = 2, *,
                         config: Optional[DemoConfig] = None, rescans: Sequence[int] = (),
                         paired_seed: int = 0, n_jobs: int = 1, progress: bool = True) -> pd.DataFrame:
    """Simulate a cohort of lone 3T scans for the diagnosis study.

    Args:
        data_dir: output folder (``sub-XXX/anat/sub-XXX_acq-3T_T1w.nii.gz``, ``participants.tsv``).
        n_new: new subjects, indices from :data:`LONE_FIRST_INDEX` (anatomy from ``seed``); diagnoses come in
            blocks of 8 (3 CN, 1 SCD, 2 MCI, 2 AD), as in the paired cohort.
        rescans: indices of paired-cohort subjects (``draw_subject(paired_seed, i)``) that also get a lone 3T, a
            new acquisition of the same anatomy under the same ``participant_id``: the participants who built the
            model must be excluded from the study by their id.
        paired_seed: the paired cohort's seed.
        config: generator settings.
        n_jobs: parallel processes.

    Returns:
        The participants table.
    """
    cfg = config or DemoConfig()
    if not isinstance(n_new, (int, np.integer)) or n_new < 0:
        raise ValueError(f"n_new must be an integer >= 0, got {n_new!r}")
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    params = ([draw_subject(paired_seed, int(i), cfg) for i in rescans]
              + [draw_subject(seed, LONE_FIRST_INDEX + i, cfg) for i in range(n_new)])
    if not params:
        raise ValueError("the lone cohort is empty: give n_new > 0 or rescans")
    ids = [p.participant_id for p in params]
    if len(set(ids)) != len(ids):
        raise ValueError(f"rescans {list(rescans)} repeat a participant")
    items = [(data_dir, p.participant_id, p, cfg, 3) for p in params]  # session 3: not the paired 3T's draw

    def finished(it) -> bool:
        _, key, p, c, _ = it
        paths = _t3_paths(data_dir, key)
        return _done(paths["sidecar"], _fingerprint(p, c, "lone"), paths["t3"], paths["mask"])

    status = run_batch(items, _lone_work, ids=lambda it: {"participant_id": it[1]}, id_columns=("participant_id",),
                       is_finished=finished, executor=LocalExecutor(n_jobs, 1), progress=progress,
                       desc="lone 3T cohort", unit="subject")
    _raise_failed(status)
    return _write_description(data_dir, params, "synth7t demo lone-3T cohort (simulated)")


def _raise_failed(status: pd.DataFrame) -> None:
    failed = status[status["status"] == "failed"]
    if len(failed):
        raise RuntimeError("simulated subjects failed: " + "; ".join(f"{r.participant_id}: {r.reason}"
                                                                   for r in failed.itertuples()))


def _write_description(data_dir: Path, params: Sequence[SubjectParams], name: str) -> pd.DataFrame:
    parts = pd.DataFrame([{"participant_id": p.participant_id, "age": p.age, "sex": p.sex, "diagnosis": p.diagnosis}
                          for p in params])
    # subjects of an earlier, bigger set in this folder would have no participants row: they go
    keep = set(parts["participant_id"])
    for d in data_dir.glob("sub-*"):
        side = _t3_paths(data_dir, d.name)["sidecar"]
        if d.name not in keep and side.is_file() and (read_json(side) or {}).get("Simulated"):
            shutil.rmtree(d)
            for f in (data_dir / REFERENCE_DIR).glob(f"{d.name}_*"):
                f.unlink()
    parts.to_csv(data_dir / PARTICIPANTS_FILE, sep="\t", index=False)
    (data_dir / "dataset_description.json").write_text(json.dumps({
        "Name": name, "BIDSVersion": "1.9.0", "DatasetType": "raw",
        "GeneratedBy": [{"Name": "synth7t.simulate.lone", "Version": GENERATOR_VERSION}],
        "Notice": SIMULATION_NOTICE}, indent=2))
    pd.DataFrame({"index": list(LABELS), "name": list(LABELS.values())}).to_csv(data_dir / "dseg.tsv", sep="\t",
                                                                                index=False)
    (data_dir / "README").write_text(SIMULATION_NOTICE + "\n")
    return parts
