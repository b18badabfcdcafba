"""A lone 3T scan aligned the way an imported model of the authors needs it (``synth7t predict --model IMPORTED``).

Their lone-3T inference (``func/inference/register_to_7T_template.py`` and ``script/processing_subpipeline.sh`` at
the commit :mod:`synth7t.released.importer` follows): skull stripping, N4 with the brain mask, a rigid registration of the
brain to their 3T template, then their template affine (``template_3T_to_7T.mat``) onto their 7T template's grid,
where the network runs (:func:`synth7t.inference.volume.predict_volume_released`). synth7t does the same with its own
steps (the configured brain extraction, N4, ANTs' rigid registration) and one difference: the two maps are
composed and the scan resampled once, where their pipeline interpolates twice. The output is written on their
7T template's grid as stored (its voxel order is the one their slicing axis refers to) and, with ``native``,
resampled back onto the scan's own grid, as every synth7t prediction.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Optional, Union

import numpy as np

from ..data import io as sio

PathLike = Union[str, Path]

__all__ = ["released_templates", "align_to_released_templates"]


def released_templates(meta: dict) -> Path:
    """The ``templates/`` folder of an imported model (``meta`` from :func:`synth7t.inference.load_model`).

    Raises:
        ValueError: the model was imported without ``--templates`` (the message says how to add them).
    """
    from ..released.importer import TEMPLATE_FILES

    model_dir = meta.get("model_dir", "the model folder")
    folder = Path(model_dir) / "templates"
    if not (meta.get("input") or {}).get("templates") or not all((folder / n).is_file() for n in TEMPLATE_FILES):
        raise ValueError(f"{model_dir}: this imported model has no templates, which its lone-3T alignment needs: "
                         "import it again with --templates DIR (their repository's models/ folder: "
                         f"{', '.join(TEMPLATE_FILES)})")
    return folder


def align_to_released_templates(t3_path: PathLike, templates: PathLike, config, *,
                                t3_mask: Optional[PathLike] = None, checks=None, force: bool = False) -> dict:
    """Brain extraction, N4 and their template alignment of one 3T scan, with the content checks of
    :mod:`synth7t.preprocess.input_checks` (``checks``: their limits; ``force``: go on past a refusal).

    Returns:
        dict with ``image`` (the brain on the 7T template's grid, zero outside it, N4-corrected intensities),
        ``mask``, ``affine`` and ``shape`` of that grid, ``world_map`` (template-grid world -> scan world, 4x4 RAS),
        ``timings`` (seconds per step) and ``input_checks`` (the findings, as dicts).
    """
    import nibabel as nib

    from ..preprocess import resample
    from ..preprocess.ants import coarsen, read_affine, register, set_itk_threads
    from ..preprocess import input_checks as ic
    from ..preprocess.steps import brain_mask, load_canonical, n4

    templates = Path(templates)
    timings = {}
    t0 = time.perf_counter()
    set_itk_threads(config.threads_per_job)
    ck, what = checks or ic.InputCheckConfig(), f"3T {t3_path}"
    t3, aff3, _ = load_canonical(t3_path, "3T")
    grid_spacing = float(np.linalg.norm(nib.load(str(templates / "template_7T.nii.gz")).affine[:3, 0]))
    findings = ic.enforce(ic.check_header(aff3, t3.shape, grid_spacing, ck), what, force)
    mask3 = brain_mask(t3, aff3, config.mask_backend, given=t3_mask, threshold=config.mask_threshold, what="3T")
    findings += ic.enforce([ic.check_brain_volume(mask3, aff3, ck)], what, force)
    timings["mask"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    if config.n4_3t:
        t3 = n4(t3, aff3, mask3, config)
    timings["n4"] = time.perf_counter() - t0
    findings += ic.enforce([ic.check_tissue_order(t3, mask3, aff3, ck)], what, force)
    t0 = time.perf_counter()
    tpl3 = sio.load_volume(templates / "template_3T.nii.gz", reorient=True)
    grid = nib.load(str(templates / "template_7T.nii.gz"))  # as stored: their slicing axis counts its voxel order
    fixed, fixed_aff = coarsen(tpl3.data, tpl3.affine, config.registration.spacing)
    with tempfile.TemporaryDirectory(prefix="synth7t-released-") as tmp:
        reg = register(fixed, fixed_aff, t3 * mask3, aff3, Path(tmp) / "rigid_", config, syn=False,
                       transform="Rigid")
        rigid = read_affine(reg["affine"])  # 3T-template world -> scan world
    corr = ic.alignment_correlation(t3 * mask3, aff3, rigid, fixed, fixed_aff, fixed > 0, image_mask=mask3)
    findings += ic.enforce([ic.check_alignment(corr, ck)], what, force)
    template_map = read_affine(templates / "template_3T_to_7T.mat")  # 7T-template world -> 3T-template world
    world_map = rigid @ template_map
    shape, affine = tuple(int(n) for n in grid.shape[:3]), np.asarray(grid.affine, float)
    image = resample(t3, aff3, shape, affine, world_map=world_map, order=1)
    mask = resample(mask3.astype(np.uint8), aff3, shape, affine, world_map=world_map, order=0) > 0
    timings["align"] = time.perf_counter() - t0
    if not mask.any():
        raise ValueError(f"{t3_path}: the brain left their 7T template's field of view after the alignment")
    return {"image": np.where(mask, image, 0).astype(np.float32), "mask": mask, "affine": affine, "shape": shape,
            "world_map": world_map, "timings": timings, "input_checks": [f.to_dict() for f in findings]}
