"""ANTs and resampling helpers shared by preprocessing, segmentation and regional analysis.

Arrays carry RAS affines (nibabel's convention); ITK stores LPS, so :func:`to_ants` / :func:`from_ants` flip the
first two world axes. :func:`register` drives ``antsRegistration`` with every option explicit (centre-of-mass
start, a linear stage, optionally SyN) from one :class:`synth7t.preprocess.config.RegistrationConfig`.

Reproducibility: ANTs draws the affine stage's metric samples at random (``Regular`` sampling jitters every grid
point), so :class:`~synth7t.preprocess.config.RegistrationConfig` passes a fixed ``--random-seed`` by default; without one ANTs seeds from
the clock. ITK's Mattes mutual information (and N4) sum per-thread partial results, so the bytes written also depend
on the number of ITK threads, and with more than one thread they change from run to run even with a seed. ITK reads
``ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS`` once per process, when the first ANTs image is made; :func:`itk_threads`
fixes it there (1 unless the variable or :func:`set_itk_threads` says otherwise) and reports the count in effect,
which the preprocessing and segmentation records store.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
from scipy import ndimage as ndi

from .config import RegistrationConfig

PathLike = Union[str, os.PathLike]
_F = np.diag([-1.0, -1.0, 1.0, 1.0])  # RAS <-> LPS (ITK's world convention)
ITK_THREADS_ENV = "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"
#: ITK threads of this process once :func:`itk_threads` has fixed them (ITK itself reads the count only once)
_itk_threads: Optional[int] = None


def itk_threads() -> int:
    """ITK's thread count in this process, fixed on the first call (call it before the first ANTs image).

    The count is ``$ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS`` when set (batch workers set it, see
    :func:`synth7t.runtime.batch.init_worker`), else 1, written to that variable, which ITK reads once, when the process
    makes its first image. One thread is the default because ITK's multi-threaded Mattes mutual information
    gives different bytes from run to run. Every ANTs call of this package goes through :func:`to_ants` (or
    :func:`read_affine`), which calls this first; an ANTs image made elsewhere before it leaves ITK at its own
    default (all cores), which this function cannot see.

    Returns:
        The thread count ITK uses for the rest of the process.
    """
    global _itk_threads
    if _itk_threads is None:
        env = os.environ.get(ITK_THREADS_ENV, "").strip()
        _itk_threads = max(1, int(env)) if env.isdigit() else 1
        os.environ[ITK_THREADS_ENV] = str(_itk_threads)
    return _itk_threads


def itk_threads_fixed() -> Optional[int]:
    """The ITK thread count this process is fixed at, or None before its first ANTs call."""
    return _itk_threads


def set_itk_threads(n: int) -> int:
    """Ask for ``n`` ITK threads in this process; returns the count in effect (see :func:`itk_threads`).

    Before the process's first ANTs call this fixes the count; afterwards ITK keeps the count it started with,
    and a different request only warns (the records store the count returned here, the one really used).
    """
    n = max(1, int(n))
    if _itk_threads is None:
        os.environ[ITK_THREADS_ENV] = str(n)
    elif _itk_threads != n:
        warnings.warn(f"ITK already runs with {_itk_threads} thread(s) in this process (fixed by its first ANTs call); "
                      f"the {n} asked for apply only in a new process", RuntimeWarning, stacklevel=2)
    return itk_threads()


class BackgroundImport:
    """ANTsPy imported in a daemon thread while the caller does other work: its import takes about 1.2 s on 2 cores
    (most of it ``ants.learn``'s scikit-learn and ``ants.plotting``'s matplotlib), which a lone 3T's brain extraction
    (torch, outside the GIL for most of its 2 s) can hide. Start it after :func:`set_itk_threads`; :meth:`wait`
    returns when ANTsPy is importable and re-raises what the import raised. Measured on ``synth7t predict``'s path:
    about 0.5 s less in all; started during torch's import or while a gzip file is read it costs time instead.
    """

    def __init__(self):
        import threading

        self.error: Optional[BaseException] = None
        self._thread = threading.Thread(target=self._run, name="synth7t-import-ants", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            import ants  # noqa: F401
        except BaseException as exc:  # surfaced by wait(), in the caller's thread
            self.error = exc

    def wait(self) -> None:
        self._thread.join()
        if self.error is not None:
            raise self.error


def to_ants(data: np.ndarray, affine: np.ndarray):
    """An ANTs image from a RAS-affine array (ITK stores LPS; voxel order is the same as nibabel's)."""
    itk_threads()  # before ITK makes its first image, which fixes its thread count for the process
    import ants

    aff = np.asarray(affine, float)
    spacing = np.linalg.norm(aff[:3, :3], axis=0)
    lps = _F @ aff
    direction = lps[:3, :3] / spacing
    return ants.from_numpy(np.ascontiguousarray(data, dtype=np.float32), origin=tuple(lps[:3, 3].tolist()),
                           spacing=tuple(spacing.tolist()), direction=direction)


def from_ants(img) -> tuple[np.ndarray, np.ndarray]:
    """``(array, RAS affine)`` of an ANTs image."""
    aff = np.eye(4)
    aff[:3, :3] = np.asarray(img.direction) @ np.diag(img.spacing)
    aff[:3, 3] = img.origin
    return img.numpy(), _F @ aff


def resample(data: np.ndarray, affine: np.ndarray, out_shape: Sequence[int], out_affine: np.ndarray, *,
             world_map: Optional[np.ndarray] = None, order: int = 1, cval: float = 0.0) -> np.ndarray:
    """Resample ``data`` onto another grid.

    Args:
        data: input array ``(X, Y, Z)`` with voxel-to-world ``affine``.
        out_shape, out_affine: the output grid.
        world_map: ``4x4`` map from output world points to input world points (RAS mm); identity by default.
        order: 0 nearest, 1 linear.

    Returns:
        float32 array of ``out_shape`` (the input dtype for ``order=0``).
    """
    m = np.linalg.inv(affine) @ (np.eye(4) if world_map is None else world_map) @ out_affine
    out_dtype = data.dtype if order == 0 else np.float32
    src = data if order == 0 else np.asarray(data, np.float32)
    return ndi.affine_transform(src, m[:3, :3], offset=m[:3, 3], output_shape=tuple(int(s) for s in out_shape),
                                order=order, cval=cval, mode="constant", prefilter=False).astype(out_dtype, copy=False)


def coarsen(data: np.ndarray, affine: np.ndarray, spacing: Optional[float], *,
            antialias: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Resample to ``spacing`` mm voxels along every axis finer than that; never upsample.

    Args:
        data: image ``(X, Y, Z)`` with voxel-to-world ``affine``.
        spacing: target voxel size in mm; ``None`` returns the input.
        antialias: Gaussian smoothing before resampling (sigma ``0.5 * sqrt(f^2 - 1)`` input voxels for a size
            factor ``f``), for images whose fine detail would alias (segmentation); registration of smooth brains
            does without.

    Returns:
        ``(array, affine)``; the outer voxel edges stay where they were.
    """
    if spacing is None:
        return data, affine
    cur = np.linalg.norm(affine[:3, :3], axis=0)
    new_sp = np.maximum(cur, float(spacing))
    if np.allclose(new_sp, cur, atol=1e-3):
        return data, affine
    if antialias:
        data = ndi.gaussian_filter(np.asarray(data, np.float32), 0.5 * np.sqrt(np.maximum((new_sp / cur) ** 2 - 1, 0)))
    return _resample_to_spacing(data, affine, new_sp)


def to_spacing(data: np.ndarray, affine: np.ndarray, spacing: Optional[float], order: int = 1
               ) -> tuple[np.ndarray, np.ndarray]:
    """Same field of view and axes with ``spacing`` mm voxels (up or down; no-op when already there)."""
    cur = np.linalg.norm(affine[:3, :3], axis=0)
    if spacing is None or np.allclose(cur, spacing, atol=1e-3):
        return data, affine
    return _resample_to_spacing(data, affine, np.full(3, float(spacing)), order)


def _resample_to_spacing(data, affine, spacing: np.ndarray, order: int = 1):
    cur = np.linalg.norm(affine[:3, :3], axis=0)
    shape = np.maximum(1, np.round(np.array(data.shape) * cur / spacing)).astype(int)
    new = affine.copy()
    new[:3, :3] = affine[:3, :3] / cur * spacing
    # keep the outer voxel edges where they were
    new[:3, 3] = affine[:3, :3] @ np.full(3, -0.5) + affine[:3, 3] - new[:3, :3] @ np.full(3, -0.5)
    return resample(data, affine, shape, new, order=order), new


# ---------------------------------------------------------------------------------------- registration


def register(fixed: np.ndarray, fixed_affine: np.ndarray, moving: np.ndarray, moving_affine: np.ndarray,
             out_prefix: PathLike, settings=None, *, syn: bool = True,
             transform: Optional[str] = None) -> dict:
    """Register ``moving`` to ``fixed`` (ANTs): centre-of-mass start, a linear stage, then SyN.

    Args:
        fixed, moving: images ``(X, Y, Z)`` (brain-extracted) with their RAS affines.
        out_prefix: transforms are written as ``<prefix>0GenericAffine.mat`` and ``<prefix>1Warp.nii.gz``
            (with ``<prefix>1InverseWarp.nii.gz``).
        settings: a :class:`~synth7t.preprocess.config.RegistrationConfig`, or a config that holds one as its
            ``registration`` (``PreprocessConfig``, ``AtlasConfig``); default the paper's. Its ``spacing`` is the
            caller's business (the images come already coarsened).
        syn: False drops the SyN stage (linear only).
        transform: overrides the settings' ``Affine`` / ``Rigid``.

    Returns:
        A dict with ``transforms`` (``[warp, affine]``, ANTs order, fixed-to-moving), ``affine`` (path),
        ``warp`` and ``inverse_warp`` (paths, or None without SyN); ``transforms`` is what
        :func:`apply_transforms` takes.

    Raises:
        RuntimeError: antsRegistration failed or wrote no transform.
    """
    from ants.internal import get_lib_fn, get_pointer_string, process_arguments

    st = settings if isinstance(settings, RegistrationConfig) else (
        settings.registration if settings is not None else RegistrationConfig())
    if not syn:
        st = st.replace(syn_iterations=(), syn_shrink_factors=(), syn_smoothing_sigmas=())
    if transform is not None:
        st = st.replace(transform=transform)
    prefix = str(out_prefix)
    Path(prefix).parent.mkdir(parents=True, exist_ok=True)
    f, m = to_ants(fixed, fixed_affine), to_ants(moving, moving_affine)
    warped, inv_warped = f.clone(), m.clone()
    fs, ms = get_pointer_string(f), get_pointer_string(m)
    args = ["--dimensionality", "3", "--float", "1", "--interpolation", "Linear", "--use-histogram-matching", "0",
            "--initial-moving-transform", f"[{fs},{ms},1]", *st.arguments(fs, ms),
            "--collapse-output-transforms", "1",
            "--output", f"[{prefix},{get_pointer_string(warped)},{get_pointer_string(inv_warped)}]"]
    rc = get_lib_fn("antsRegistration")(process_arguments(args))
    if rc not in (0, None):
        raise RuntimeError(f"antsRegistration failed with exit code {rc}")
    aff = Path(prefix + "0GenericAffine.mat")
    warp = Path(prefix + "1Warp.nii.gz") if st.has_syn else None
    inv = Path(prefix + "1InverseWarp.nii.gz") if st.has_syn else None
    for p in [aff] + ([warp, inv] if st.has_syn else []):
        if not p.exists():
            raise RuntimeError(f"antsRegistration did not write {p}")
    return {"transforms": ([str(warp)] if warp else []) + [str(aff)], "affine": str(aff),
            "warp": str(warp) if warp else None, "inverse_warp": str(inv) if inv else None}


def apply_transforms(moving: np.ndarray, moving_affine: np.ndarray, ref_shape, ref_affine, transforms: Sequence[str],
                     interpolator: str = "linear") -> np.ndarray:
    """Resample ``moving`` onto a reference grid through ANTs transforms (``[warp, affine]``, fixed-to-moving)."""
    import ants

    ref = to_ants(np.zeros(tuple(ref_shape), np.float32), ref_affine)
    out = ants.apply_transforms(fixed=ref, moving=to_ants(moving, moving_affine), transformlist=list(transforms),
                                interpolator=interpolator)
    return out.numpy().astype(np.float32)


def read_affine(path: PathLike) -> np.ndarray:
    """An ANTs affine ``.mat`` as a ``4x4`` RAS matrix mapping fixed-space world points to moving-space points."""
    itk_threads()
    import ants

    tx = ants.read_transform(str(path))
    p = np.asarray(tx.parameters, float)
    c = np.asarray(tx.fixed_parameters, float)
    a = p[:9].reshape(3, 3)
    lps = np.eye(4)
    lps[:3, :3] = a
    lps[:3, 3] = p[9:12] + c - a @ c
    return _F @ lps @ _F
