"""Small inputs for batch prediction tests and ``benchmarks/bench_batch_predict.py``: a model folder of the
``demo-cpu`` U-Net (seeded, untrained: the batch machinery is under test, not the model), synthetic 3T scans with a
brain-shaped ellipsoid on a coarse grid, corrupt files of the kinds that reach real batches, and a realistic 1 mm
3T with skull whose pose and bias field are known (:func:`realistic_scan`).

The scans share one grid, so one brain mask serves them all (``t3_mask``), and :func:`fast_options` aligns them
with a generalised affine (no registration) and no N4: a scan costs a fraction of a second on a CPU.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Optional

import nibabel as nib
import numpy as np

#: the synthetic 3T grid: 3 mm voxels, 48 x 56 x 44 (the brain fits the model grid of 32 x 32 slices at 4 mm)
SHAPE, VOXEL = (48, 56, 44), 3.0
MODEL_SPACING, MODEL_INPLANE = 4.0, (32, 32)
CORRUPT_KINDS = ("truncated", "nan", "four_d", "text", "empty")


def write_model_folder(folder: Path, seed: int = 0, *, model: str = "demo-cpu", spacing: Optional[float] = None,
                       inplane: Optional[tuple] = None) -> Path:
    """A model folder (``generator.safetensors`` + ``model.json``) of the seeded, untrained ``model`` U-Net that
    expects ``spacing`` mm voxels and ``inplane`` slices (default :data:`MODEL_SPACING`, :data:`MODEL_INPLANE`)."""
    import torch
    from safetensors.torch import save_file

    from synth7t.models import build_model

    torch.manual_seed(seed)
    g = build_model(model)
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous() for k, v in g.state_dict().items()}, str(folder / "generator.safetensors"))
    meta = {"model_config": g.config.to_dict(), "format": "synth7t-model-1",
            "input": {"spacing_mm": spacing or MODEL_SPACING, "grid_inplane": list(inplane or MODEL_INPLANE)}}
    (folder / "model.json").write_text(json.dumps(meta, indent=2))
    return folder


def brain_mask() -> np.ndarray:
    """The ellipsoid brain (radii 52, 58, 50 mm: about 630 mL) of every synthetic scan, as uint8."""
    idx = np.indices(SHAPE).astype(np.float32)
    centre = (np.asarray(SHAPE, np.float32) - 1) / 2
    radii = np.array([52.0, 58.0, 50.0]) / VOXEL
    r2 = sum(((idx[a] - centre[a]) / radii[a]) ** 2 for a in range(3))
    return (r2 <= 1).astype(np.uint8)


def affine() -> np.ndarray:
    return np.diag([VOXEL, VOXEL, VOXEL, 1.0])


def write_scan(path: Path, seed: int) -> Path:
    """A synthetic 3T T1w: smooth tissue-like texture inside the ellipsoid, dark outside, Rician-like noise."""
    rng = np.random.default_rng(seed)
    from scipy.ndimage import gaussian_filter

    mask = brain_mask().astype(np.float32)
    texture = gaussian_filter(rng.standard_normal(SHAPE).astype(np.float32), 2.0)
    img = mask * (600 + 200 * np.tanh(4 * texture)) + 40 * np.abs(rng.standard_normal(SHAPE)).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(img.astype(np.float32), affine()), str(path))
    return path


def write_corrupt(path: Path, kind: str, seed: int = 0) -> Path:
    """A file that a batch must record as failed: a truncated gzip, NaNs, a 4D series, text, an empty file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "truncated":
        write_scan(path, seed)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 3])
    elif kind == "nan":
        nib.save(nib.Nifti1Image(np.full(SHAPE, np.nan, np.float32), affine()), str(path))
    elif kind == "four_d":
        nib.save(nib.Nifti1Image(np.ones((*SHAPE[:3], 2), np.float32), affine()), str(path))
    elif kind == "text":
        with gzip.open(path, "wt") as f:
            f.write("this is a radiology report, not an image\n")
    elif kind == "empty":
        path.write_bytes(b"")
    else:
        raise ValueError(f"unknown corrupt kind {kind!r}; known: {', '.join(CORRUPT_KINDS)}")
    return path


def write_cohort(folder: Path, n: int, corrupt_every: int = 0) -> tuple[list[Path], list[Path], Path]:
    """``n`` scans ``sub-NNNN_T1w.nii.gz`` (every ``corrupt_every``-th one corrupt, the kinds in turn) and the shared
    brain mask; returns ``(good, corrupt, mask path)``."""
    good, bad = [], []
    for i in range(n):
        path = Path(folder) / f"sub-{i:04d}_T1w.nii.gz"
        if corrupt_every and i % corrupt_every == corrupt_every - 1:
            bad.append(write_corrupt(path, CORRUPT_KINDS[len(bad) % len(CORRUPT_KINDS)], i))
        else:
            good.append(write_scan(path, i))
    mask = Path(folder).parent / f"{Path(folder).name}_brain_mask.nii.gz"
    nib.save(nib.Nifti1Image(brain_mask(), affine()), str(mask))
    return good, bad, mask


def fast_options(mask: Path) -> dict:
    """:func:`synth7t.inference.predict_file` options for the synthetic scans: the shared mask, no N4, a generalised
    affine (identity, recentred on each brain) onto the model's grid, on the CPU; ``force``: the synthetic scans are
    phantoms, not brains, which the content checks rightly refuse (tests/test_input_checks.py tests those)."""
    from synth7t import preprocess as pp

    cfg = pp.PreprocessConfig.from_preset("quick", target_spacing=MODEL_SPACING, grid_inplane=MODEL_INPLANE, n4_3t=False,
                         mask_backend="given", qc_figure=False, axial_margin=2)
    space = pp.GeneralisedAffine(np.eye(3), np.zeros(3), (100, 120, 100), np.diag([1.4, 1.4, 1.4, 1.0]), 1)
    return dict(method="generalised", generalised=space, preprocess_preset=cfg, t3_mask=str(mask), device="cpu",
                force=True)


#: the realistic scan: its grid, its turn about the left-right axis (degrees) and the shift of its grid (mm)
REALISTIC_SHAPE, REALISTIC_TURN_DEG, REALISTIC_SHIFT_MM = (176, 240, 256), 7.0, (4.0, -6.0, 10.0)


def realistic_turn() -> np.ndarray:
    """The realistic scan's pose: the 4 x 4 map from its world to the template's (a turn about the left-right axis
    through the origin); the true template alignment (template world to scan world) is its inverse."""
    a = np.radians(REALISTIC_TURN_DEG)
    turn = np.eye(4)
    turn[1:3, 1:3] = [[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]
    return turn


#: corners of the brain's box in MNI mm (140 x 160 x 140), where an alignment's error is measured
BRAIN_BOX_CORNERS_MM = [(x, y, z) for x in (-70, 70) for y in (-90, 70) for z in (-60, 80)]


def realistic_pose_error_mm(world_map) -> float:
    """Largest distance (mm) between where a template alignment (4 x 4, template world to scan world) and the true
    pose (the inverse of :func:`realistic_turn`) put the corners of the brain's box."""
    c = np.array([[*p, 1.0] for p in BRAIN_BOX_CORNERS_MM])
    moved = c @ np.asarray(world_map, float).T - c @ np.linalg.inv(realistic_turn()).T
    return float(np.linalg.norm(moved[:, :3], axis=1).max())


def realistic_scan(path: Path, *, bias: bool = True, noise: bool = True) -> Path:
    """A 1 mm T1w like a real 3T acquisition, with skull, made from the MNI 2009c T1: turned
    (:func:`realistic_turn`), on a shifted grid of :data:`REALISTIC_SHAPE`, times a smooth bias field (a factor of
    0.7 to 1.4), plus Rician-like noise; ``bias=False, noise=False`` gives the same anatomy clean (the truth N4 is
    measured against)."""
    from scipy.ndimage import affine_transform

    from synth7t.data.templates import template_sources

    src = nib.as_closest_canonical(nib.load(str(template_sources()["t1"])))
    data = np.asarray(src.dataobj, np.float32)
    shape = REALISTIC_SHAPE
    out_aff = np.eye(4)
    out_aff[:3, 3] = -(np.array(shape) - 1) / 2 + np.array(REALISTIC_SHIFT_MM)
    m = np.linalg.inv(src.affine) @ realistic_turn() @ out_aff  # scan voxel -> template voxel
    img = affine_transform(data, m[:3, :3], m[:3, 3], output_shape=shape, order=1)
    if bias:
        grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij"))
        img = img * np.exp(0.25 * grid[0] - 0.2 * grid[1] ** 2 + 0.15 * grid[2]).astype(np.float32)
    if noise:
        img = img + np.abs(np.random.default_rng(0).normal(0, 2.0, shape)).astype(np.float32)
    nib.save(nib.Nifti1Image(img.astype(np.float32), out_aff), str(path))
    return path
