"""The image steps of preprocessing: loading with checks, brain extraction, N4 and clipped min-max normalisation."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

import nibabel as nib
import numpy as np

from ..data import io as sio
from .ants import PathLike, resample, to_ants
from .config import MASK_BACKENDS, PreprocessConfig, PreprocessError

def check_image(data: np.ndarray, what: str) -> None:
    """Raise :class:`PreprocessError` for a non-3D or constant image (``what`` names it in the message)."""
    if data.ndim != 3 or min(data.shape) < 2:
        raise PreprocessError(f"{what}: expected a 3D volume, got shape {tuple(data.shape)} (a 2D image?)")
    lo, hi = float(np.min(data)), float(np.max(data))
    if not hi > lo:
        raise PreprocessError(f"{what}: the image is constant (every voxel is {lo:g}); not a brain MRI — "
                              "check the file or remove the subject")


def load_canonical(path: PathLike, what: str) -> tuple[np.ndarray, np.ndarray, nib.Nifti1Header]:
    """``(data, RAS affine, header)`` of an image reoriented to RAS, checked to be a non-constant 3D volume."""
    try:
        vol = sio.load_volume(path, reorient=True)
    except sio.NiftiError as exc:
        raise PreprocessError(f"{what}: {exc}") from None
    check_image(vol.data, f"{what} {path}")
    return vol.data, vol.affine, vol.header


# ----------------------------------------------------------------------------------- brain extraction

_DEEPBET = None


def _deepbet_model():
    global _DEEPBET
    if _DEEPBET is None:
        from deepbet import BrainExtraction

        # the TorchScript weights ship inside the deepbet wheel (site-packages/data/models)
        _DEEPBET = BrainExtraction(no_gpu=True)
    return _DEEPBET


def _torch_quantile(v, q: float):
    """``torch.quantile(v, q)`` of a flat float tensor (linear interpolation between the two neighbouring order
    statistics, the rank computed in ``v``'s dtype as torch does) from two ``kthvalue`` selections instead of a full
    sort: the same value, about 6 times as fast on deepbet's 2 M voxels."""
    import torch

    rank = torch.tensor(q, dtype=v.dtype) * (v.numel() - 1)
    below, above = int(torch.floor(rank)), int(torch.ceil(rank))
    lo = torch.kthvalue(v, below + 1).values
    hi = lo if above == below else torch.kthvalue(v, above + 1).values
    return torch.lerp(lo, hi, rank - below)


def deepbet_mask(data: np.ndarray, affine: np.ndarray, threshold: float = 0.5, what: str = "image") -> np.ndarray:
    """deepbet's brain mask of a T1w volume: the mask ``deepbet.BrainExtraction.run`` gives, by the same models and
    steps, on an image already in RAS orientation without the copies of the input and the masked brain that ``run``
    also makes, and with its two intensity quantiles selected rather than sorted (:func:`_torch_quantile`; 0.36 s of
    its 2.6 s on a 1 mm head). ``tests/test_preprocess.py`` checks it gives ``run``'s mask voxel for voxel. Any other
    orientation goes through ``run`` itself.

    Raises:
        PreprocessError: deepbet finds no head or no brain.
    """
    import torch
    import torch.nn.functional as F
    from deepbet.utils import keep_largest_connected_component, normalize

    model = _deepbet_model()
    if nib.aff2axcodes(affine) != ("R", "A", "S"):
        try:
            with torch.no_grad():
                _, m, _ = model.run(nib.Nifti1Image(np.asarray(data, np.float32), affine), threshold=threshold)
        except (AssertionError, ValueError) as exc:  # deepbet asserts when it finds no head at all
            raise PreprocessError(f"{what}: deepbet found no brain ({exc}); is this a T1w brain MRI?") from None
        return np.asarray(m.dataobj) > 0
    x = torch.nan_to_num(torch.from_numpy(np.asarray(data, np.float32)))
    with torch.no_grad():
        # the head's box from the small model on a 128^3 copy, then the brain from the large one on the box at 256^3
        small = F.interpolate(x[None, None], (128, 128, 128), mode="nearest-exact")[0, 0]
        flat = small.flatten()
        low, high = _torch_quantile(flat, 0.005), _torch_quantile(flat, 0.995)
        head = (model.bbox_model(normalize(small, low, high)[None, None])[0, 1] > 0.5).float().numpy()
        if not head.any():
            raise PreprocessError(f"{what}: deepbet found no head; is this a T1w brain MRI?")
        head = torch.from_numpy(keep_largest_connected_component(head))
        try:
            box = model.get_bbox_with_margin(head, x.shape, 0.1)
        except AssertionError as exc:
            raise PreprocessError(f"{what}: deepbet found no brain ({exc}); is this a T1w brain MRI?") from None
        inside = F.interpolate(x[box][None, None], (256, 256, 256), mode="nearest-exact")
        prob = model.model(normalize(inside[0, 0], low, high)[None, None])[0, 1]
        prob = F.interpolate(prob[None, None], x[box].shape, mode="nearest-exact")[0, 0].numpy()
    mask = np.zeros(x.shape, bool)
    mask[box] = prob > threshold
    if not mask.any():
        raise PreprocessError(f"{what}: deepbet found no brain; is this a T1w brain MRI?")
    model.bbox = box  # deepbet's postprocessing: the largest component inside the box, its holes filled
    return model.postprocess(mask, 0)


def synthstrip_available() -> bool:
    """True when FreeSurfer's ``mri_synthstrip`` is on PATH."""
    return shutil.which("mri_synthstrip") is not None


def brain_mask(data: np.ndarray, affine: np.ndarray, backend: str = "deepbet", *, given: Optional[PathLike] = None,
               threshold: float = 0.5, what: str = "image") -> np.ndarray:
    """Brain mask of a T1w volume, from one of three backends.

    Args:
        data: image ``(X, Y, Z)``; affine: its voxel-to-world matrix.
        backend: ``"deepbet"`` (offline default, weights inside the deepbet wheel), ``"synthstrip"``
            (FreeSurfer's ``mri_synthstrip`` on PATH, the paper's tool) or ``"given"`` (the file ``given``,
            resampled by nearest neighbour onto the image's grid when it sits on another grid).
        given: mask file for ``backend="given"``.
        threshold: deepbet probability threshold.
        what: name of the input for error messages.

    Returns:
        Boolean mask ``(X, Y, Z)`` on the image's grid.

    Raises:
        RuntimeError: ``synthstrip`` asked for and not installed.
        PreprocessError: no mask file for ``given``; an empty mask.
    """
    if backend == "deepbet":
        mask = deepbet_mask(data, affine, threshold, what)
    elif backend == "synthstrip":
        exe = shutil.which("mri_synthstrip")
        if exe is None:
            raise RuntimeError(
                "mask_backend='synthstrip' needs FreeSurfer's mri_synthstrip on PATH, which was not found: install "
                "FreeSurfer >= 7.3 (https://surfer.nmr.mgh.harvard.edu) and source $FREESURFER_HOME/"
                "SetUpFreeSurfer.sh, or use the standalone SynthStrip container (https://w3id.org/synthstrip); "
                "or choose mask_backend='deepbet' (offline default)")
        with tempfile.TemporaryDirectory(prefix="synthstrip-") as tmp:
            src, dst = Path(tmp) / "in.nii.gz", Path(tmp) / "mask.nii.gz"
            sio.save_volume(src, np.asarray(data, np.float32), affine)
            proc = subprocess.run([exe, "-i", str(src), "-m", str(dst)], capture_output=True, text=True)
            if proc.returncode != 0 or not dst.exists():
                raise PreprocessError(f"{what}: mri_synthstrip failed (exit {proc.returncode}): "
                                      f"{(proc.stderr or proc.stdout).strip()[-500:]}")
            m = sio.load_volume(dst)
            mask = resample(m.data > 0.5, m.affine, data.shape, affine, order=0)
    elif backend == "given":
        if given is None:
            raise PreprocessError(f"{what}: mask_backend='given' but no _desc-brain_mask file was found for it; "
                                  "put the mask beside the image (sub-<id>_acq-<3T|7T>_desc-brain_mask.nii.gz) or "
                                  "use mask_backend='deepbet'")
        try:
            m = sio.load_volume(given, reorient=True)
        except sio.NiftiError as exc:
            raise PreprocessError(f"{what}: bad brain mask: {exc}") from None
        same = m.data.shape == data.shape and np.allclose(m.affine, affine, atol=1e-4)
        mask = (m.data > 0.5) if same else resample(m.data > 0.5, m.affine, data.shape, affine, order=0)
        if not mask.any():
            raise PreprocessError(f"{what}: the brain mask {given} is empty (or does not overlap the image); "
                                  "give a non-empty mask on the image's grid")
    else:
        raise ValueError(f"backend must be one of {', '.join(MASK_BACKENDS)}, got {backend!r}")
    if not mask.any():
        raise PreprocessError(f"{what}: empty brain mask from {backend}; is this a T1w brain MRI?")
    return mask.astype(bool)


def check_mask_volume(mask: np.ndarray, affine: np.ndarray, cfg: PreprocessConfig, what: str) -> float:
    """The mask's volume in mL; :class:`PreprocessError` outside ``cfg.min_brain_ml`` .. ``cfg.max_brain_ml``."""
    ml = float(mask.sum() * abs(np.linalg.det(affine[:3, :3])) / 1000.0)
    if not cfg.min_brain_ml <= ml <= cfg.max_brain_ml:
        raise PreprocessError(
            f"{what}: brain mask of {ml:.0f} mL, outside the plausible {cfg.min_brain_ml:.0f}-{cfg.max_brain_ml:.0f} "
            "mL: not a brain T1w, or a failed brain extraction (check the image; another mask_backend; or "
            "min_brain_ml/max_brain_ml for unusual data)")
    return ml


# ------------------------------------------------------------------------------------------------ N4


def n4(data: np.ndarray, affine: np.ndarray, mask: np.ndarray, cfg: Optional[PreprocessConfig] = None) -> np.ndarray:
    """ANTs N4 bias-field correction inside ``mask``, with the histogram-sharpening settings of the paper.

    ANTsPy's ``n4_bias_field_correction`` does not expose N4's histogram sharpening (``-t [FWHM, Wiener
    noise, bins]``), where the paper's "bias field FWHM 0.18" and "Wiener filter noise 0.2" live, so the
    ANTs program is called with every option. With ``cfg.n4_field == "linear"`` N4 fits every
    ``n4_shrink_factor``-th voxel (the sample ITK's shrink takes, block centres) without shrinking further, and its
    log field is interpolated linearly onto the full grid (:func:`upsample_linear`) instead of ANTs evaluating its
    B-spline at every voxel.

    Args:
        data: image ``(X, Y, Z)``; affine: its voxel-to-world matrix; mask: boolean brain mask.
        cfg: settings (``n4_*``); default the paper's.

    Returns:
        The corrected image, float32 ``(X, Y, Z)``.
    """
    cfg = cfg or PreprocessConfig()
    x = np.asarray(data, np.float32)
    inside = x[mask]
    shift = 0.0
    if inside.min() <= 0:  # N4 works on log intensities
        shift = float(1e-3 * (inside.max() - inside.min()) - inside.min())
        x = x + shift
    s = int(cfg.n4_shrink_factor)
    start = (s - 1) // 2
    sample = (slice(start, None, s),) * 3
    if cfg.n4_field == "linear" and s > 1 and np.count_nonzero(mask[sample]) >= 1000:
        small_aff = np.array(affine, float)
        small_aff[:3, 3] += small_aff[:3, :3] @ np.full(3, float(start))
        small_aff[:3, :3] *= s
        _, field = _run_n4(np.ascontiguousarray(x[sample]), small_aff, np.ascontiguousarray(mask[sample]), cfg, 1)
        log_field = upsample_linear(np.log(np.maximum(field, 1e-12)), x.shape, s, start)
        res = x / np.exp(log_field, out=log_field)
    else:
        res, _ = _run_n4(x, affine, mask, cfg, s)
    res = res.astype(np.float32, copy=False)
    return res - shift if shift else res


def _run_n4(x: np.ndarray, affine: np.ndarray, mask: np.ndarray, cfg: PreprocessConfig, shrink: int):
    """ANTs' ``N4BiasFieldCorrection`` on ``x`` (positive inside ``mask``): ``(corrected, bias field)``."""
    from ants.internal import get_lib_fn, get_pointer_string, process_arguments

    img = to_ants(x, affine)
    m = to_ants(mask.astype(np.float32), affine)
    out, bias = img.clone("float"), img.clone("float")
    kwargs = {
        "d": 3, "i": img, "s": str(shrink),
        "c": "[%s,%.10f]" % ("x".join(str(i) for i in cfg.n4_iterations), cfg.n4_tolerance),
        # a bare number would be read as a spline *distance* in mm (1 mm: a huge mesh); "1x1x1" is the mesh size
        "b": "[" + "x".join([str(cfg.n4_spline_mesh)] * 3) + "]",
        "t": f"[{cfg.n4_fwhm},{cfg.n4_wiener_noise},{cfg.n4_histogram_bins}]",
        "x": m, "r": 0, "o": f"[{get_pointer_string(out)},{get_pointer_string(bias)}]", "v": 0,
    }
    rc = get_lib_fn("N4BiasFieldCorrection")(process_arguments(kwargs))
    if rc not in (0, None):
        raise RuntimeError(f"N4BiasFieldCorrection failed with exit code {rc}")
    return out.numpy(), bias.numpy()


def upsample_linear(small: np.ndarray, shape, factor: int, start: int) -> np.ndarray:
    """Separable linear interpolation of ``small`` (the voxels ``start, start + factor, ...`` of a grid of ``shape``)
    onto every voxel of that grid, float32; beyond the first and last samples the nearest sample's value."""
    out = np.asarray(small, np.float32)
    for axis, n in enumerate(shape):
        pos = np.clip((np.arange(n) - start) / factor, 0, out.shape[axis] - 1)
        lo = np.floor(pos).astype(np.intp)
        hi = np.minimum(lo + 1, out.shape[axis] - 1)
        w = (pos - lo).astype(np.float32).reshape([-1 if a == axis else 1 for a in range(3)])
        a = np.take(out, lo, axis=axis)
        a += (np.take(out, hi, axis=axis) - a) * w
        out = a
    return out


# ------------------------------------------------------------------------------------- normalisation


def normalise(data: np.ndarray, mask: np.ndarray, low_percentile: float = 0.0,
              high_percentile: float = 99.0) -> tuple[np.ndarray, dict]:
    """Clipped min-max normalisation inside the brain (the paper, after Meyer et al. 2021).

    ``low`` and ``high`` are the ``low_percentile`` and ``high_percentile`` of the brain voxels (0 = the brain
    minimum, as in the paper's text; 99 drops hyperintense vessels from the maximum);
    ``out = clip((data - low) / (high - low), 0, 1)`` inside the mask and 0 outside.

    Args:
        data: image ``(X, Y, Z)``; mask: boolean brain mask of the same shape.

    Returns:
        ``(out float32, {"low", "high", "low_percentile", "high_percentile", "n_voxels"})``.
    """
    mask = np.asarray(mask, bool)
    if mask.shape != data.shape:
        raise ValueError(f"mask shape {mask.shape} differs from image shape {data.shape}")
    v = np.asarray(data, np.float64)[mask]
    if v.size == 0:
        raise PreprocessError("normalise: the brain mask is empty")
    low = float(np.percentile(v, low_percentile))
    high = float(np.percentile(v, high_percentile))
    if not high > low:
        raise PreprocessError(f"normalise: brain intensities are constant between percentiles {low_percentile} and "
                              f"{high_percentile} (value {low:g}); not a usable T1w image")
    out = np.clip((np.asarray(data, np.float32) - low) / (high - low), 0.0, 1.0).astype(np.float32)
    out[~mask] = 0.0
    return out, {"low": low, "high": high, "low_percentile": float(low_percentile),
                 "high_percentile": float(high_percentile), "n_voxels": int(v.size)}


class StepTimer:
    """Seconds per named step, summed over repeats: ``with timer("n4_7t"): ...``; ``timer.t`` is the dict."""

    def __init__(self):
        self.t: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.t[name] = round(self.t.get(name, 0.0) + time.perf_counter() - t0, 2)
