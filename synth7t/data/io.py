"""NIfTI input and output with validation.

Every reader error is a :class:`NiftiError` (a ``ValueError``) whose message names the file and the
problem, so that a batch job can log one line per bad input and go on.

Example:
    >>> vol = load_volume("sub-01_acq-7T_T1w.nii.gz", reorient=True)   # doctest: +SKIP
    >>> vol.data.shape, vol.spacing                                     # doctest: +SKIP
    ((240, 300, 250), (0.7, 0.7, 0.7))
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import nibabel as nib
import numpy as np

PathLike = Union[str, os.PathLike]

NIFTI_SUFFIXES = (".nii", ".nii.gz")


class NiftiError(ValueError):
    """A NIfTI file that cannot be used, with the file and the reason in the message."""


@dataclass
class Volume:
    """A validated 3D image.

    Attributes:
        data: voxel array, shape ``(X, Y, Z)``.
        affine: ``4x4`` voxel-to-world (RAS+, millimetres) matrix.
        header: the NIfTI header the data came with (or a fresh one).
        path: the file it was read from, if any.
    """

    data: np.ndarray
    affine: np.ndarray
    header: Optional[nib.Nifti1Header] = None
    path: Optional[Path] = None

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel sizes in millimetres, from the affine's column norms."""
        return tuple(float(s) for s in np.linalg.norm(self.affine[:3, :3], axis=0))

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.data.shape)

    def to_nifti(self) -> nib.Nifti1Image:
        """A nibabel image carrying this volume's data, affine and header fields."""
        return _make_image(self.data, self.affine, self.header, None)


def is_nifti_path(path: PathLike) -> bool:
    """True when the file name ends in ``.nii`` or ``.nii.gz``."""
    return str(path).lower().endswith(NIFTI_SUFFIXES)


def _fail(path: PathLike, problem: str) -> NiftiError:
    return NiftiError(f"{path}: {problem}")


def read_nifti(path: PathLike, *, reorient: bool = False, check_values: bool = True) -> nib.Nifti1Image:
    """Read and validate a NIfTI image.

    Accepted: a 3D image, or a 4D image holding a single volume (squeezed to 3D). Rejected, each with a
    :class:`NiftiError` naming the file: a missing or unreadable file, a non-NIfTI file, any other
    dimensionality, non-finite voxel values, missing or non-positive spacing, a singular or non-finite affine.

    Args:
        path: a ``.nii`` or ``.nii.gz`` file.
        reorient: reorient the voxel axes to the closest RAS+ orientation (the world coordinates do not change).
        check_values: scan the voxel values for NaN/inf (reads the whole file).

    Returns:
        A 3D ``nibabel.Nifti1Image`` (or ``Nifti2Image``), data not yet loaded when ``check_values`` is False.
    """
    p = Path(path)
    if not p.exists():
        raise _fail(p, "file does not exist")
    if p.is_dir():
        raise _fail(p, "is a folder, not a NIfTI file")
    if not is_nifti_path(p):
        raise _fail(p, "not a NIfTI file (expected a .nii or .nii.gz name)")
    try:
        img = nib.load(str(p))
    except Exception as exc:  # nibabel raises several types for corrupt files
        raise _fail(p, f"unreadable NIfTI ({type(exc).__name__}: {exc})") from None
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise _fail(p, f"not a NIfTI image (nibabel read it as {type(img).__name__})")
    raw_zooms = _raw_zooms(p, img)
    if raw_zooms is not None and not all(np.isfinite(z) and z > 0 for z in raw_zooms):
        # nibabel silently replaces a zero pixdim by 1 on load; a missing spacing must not pass as 1 mm
        raise _fail(p, f"spacing must be 3 positive numbers, got {tuple(float(z) for z in raw_zooms)} in the header")
    img = _validate(img, p, check_values=check_values)
    if reorient:
        img = nib.as_closest_canonical(img)
    return img


def _raw_zooms(p: Path, img) -> Optional[tuple]:
    """Spatial pixdim exactly as stored (before nibabel's automatic fixes)."""
    from nibabel.openers import ImageOpener

    try:
        with ImageOpener(str(p)) as f:
            hdr = type(img.header).from_fileobj(f, check=False)
        ndim = int(hdr["dim"][0])
        return tuple(float(z) for z in hdr["pixdim"][1:1 + min(ndim, 3)])
    except Exception:
        return None


def _validate(img: nib.Nifti1Image, p: PathLike, *, check_values: bool) -> nib.Nifti1Image:
    shape = img.shape
    if len(shape) == 4 and shape[3] == 1:
        img = img.slicer[..., 0]
        shape = img.shape
    if len(shape) != 3:
        extra = " (a 4D series: pass one volume)" if len(shape) == 4 else ""
        raise _fail(p, f"expected a 3D volume, got shape {tuple(shape)}{extra}")
    if min(shape) < 2:
        raise _fail(p, f"expected a 3D volume, got shape {tuple(shape)} (a 2D image)")
    zooms = img.header.get_zooms()[:3]
    if len(zooms) < 3 or not all(np.isfinite(z) and z > 0 for z in zooms):
        raise _fail(p, f"spacing must be 3 positive numbers, got {tuple(float(z) for z in zooms)}")
    affine = img.affine
    if not np.all(np.isfinite(affine)):
        raise _fail(p, "affine contains non-finite values")
    det = float(np.linalg.det(affine[:3, :3]))
    if abs(det) < 1e-9 * float(np.prod(zooms)) or abs(det) < 1e-12:
        raise _fail(p, f"affine is singular (determinant {det:.3g})")
    if check_values:
        try:
            data = np.asanyarray(img.dataobj)
        except Exception as exc:
            raise _fail(p, f"unreadable voxel data ({type(exc).__name__}: {exc})") from None
        if np.issubdtype(data.dtype, np.floating) or np.issubdtype(data.dtype, np.complexfloating):
            if not np.all(np.isfinite(data)):
                n_bad = int(np.size(data) - np.count_nonzero(np.isfinite(data)))
                raise _fail(p, f"contains {n_bad} non-finite voxel values (NaN or inf)")
    return img


def load_volume(
    path: PathLike, *, reorient: bool = False, dtype: Optional[np.dtype] = np.float32
) -> Volume:
    """Read, validate and load a NIfTI file into memory.

    Args:
        path: a ``.nii`` or ``.nii.gz`` file.
        reorient: reorient to the closest RAS+ orientation.
        dtype: dtype of the returned array (scaling slope/intercept applied); ``None`` keeps the stored type.

    Returns:
        A :class:`Volume` with ``data`` of shape ``(X, Y, Z)``.
    """
    img = read_nifti(path, reorient=reorient, check_values=False)
    try:
        data = img.get_fdata(dtype=dtype) if dtype is not None and np.issubdtype(dtype, np.floating) \
            else np.asanyarray(img.dataobj)
    except Exception as exc:
        raise _fail(path, f"unreadable voxel data ({type(exc).__name__}: {exc})") from None
    if dtype is not None:
        data = np.asarray(data, dtype=dtype)
    if np.issubdtype(data.dtype, np.floating) and not np.all(np.isfinite(data)):
        n_bad = int(data.size - np.count_nonzero(np.isfinite(data)))
        raise _fail(path, f"contains {n_bad} non-finite voxel values (NaN or inf)")
    return Volume(data=np.asarray(data), affine=img.affine.copy(), header=img.header.copy(), path=Path(path))


def _choose_dtype(data: np.ndarray) -> np.dtype:
    """A sensible on-disk dtype: labels stay small integers, images become float32."""
    if data.dtype == bool:
        return np.dtype(np.uint8)
    if np.issubdtype(data.dtype, np.integer):
        lo, hi = (int(data.min()), int(data.max())) if data.size else (0, 0)
        for cand in (np.uint8, np.int16, np.int32):
            info = np.iinfo(cand)
            if info.min <= lo and hi <= info.max:
                return np.dtype(cand)
        return np.dtype(np.int64)
    return np.dtype(np.float32)


def _make_image(data, affine, header, dtype) -> nib.Nifti1Image:
    data = np.asarray(data)
    if data.ndim != 3:
        raise ValueError(f"data must be a 3D array, got shape {data.shape}")
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
        raise ValueError(f"affine must be a finite 4x4 matrix, got shape {affine.shape}")
    if abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise ValueError("affine is singular")
    if np.issubdtype(data.dtype, np.floating) and not np.all(np.isfinite(data)):
        raise ValueError("data contains non-finite values (NaN or inf)")
    out_dtype = np.dtype(dtype) if dtype is not None else _choose_dtype(data)
    if np.issubdtype(out_dtype, np.integer) and np.issubdtype(data.dtype, np.floating):
        info = np.iinfo(out_dtype)
        data = np.clip(np.rint(data), info.min, info.max)
    hdr = header.copy() if header is not None else nib.Nifti1Header()
    img = nib.Nifti1Image(data.astype(out_dtype, copy=False), affine, hdr)
    # keep the codes that say what the world space is; a header without them gets "scanner"/"aligned"
    sform_code = int(hdr["sform_code"]) if header is not None and int(hdr["sform_code"]) > 0 else 1
    qform_code = int(hdr["qform_code"]) if header is not None and int(hdr["qform_code"]) > 0 else 1
    img.set_sform(affine, code=sform_code)
    img.set_qform(affine, code=qform_code)
    img.header.set_data_dtype(out_dtype)
    img.header.set_xyzt_units(xyz="mm", t="sec")
    img.header["scl_slope"] = np.nan  # data are stored unscaled
    img.header["scl_inter"] = np.nan
    return img


def save_volume(
    path: PathLike,
    data: np.ndarray,
    affine: np.ndarray,
    *,
    header: Optional[nib.Nifti1Header] = None,
    dtype: Optional[Union[str, np.dtype]] = None,
) -> Path:
    """Write a 3D array as NIfTI, atomically (a temporary file renamed into place).

    Args:
        path: destination, ``.nii`` or ``.nii.gz``.
        data: array of shape ``(X, Y, Z)``.
        affine: ``4x4`` voxel-to-world matrix.
        header: a header whose qform/sform codes and other fields are kept (e.g. the input's).
        dtype: on-disk dtype; by default ``uint8``/``int16``/``int32`` for integer data (smallest that
            fits), ``uint8`` for booleans, ``float32`` otherwise. Float data written as integers are rounded.

    Returns:
        The path written.
    """
    p = Path(path)
    if not is_nifti_path(p):
        raise ValueError(f"{p}: output must end in .nii or .nii.gz")
    img = _make_image(data, affine, header, dtype)
    p.parent.mkdir(parents=True, exist_ok=True)
    suffix = ".nii.gz" if str(p).endswith(".gz") else ".nii"
    fd, tmp = tempfile.mkstemp(prefix=p.name.split(".")[0] + ".", suffix=".tmp" + suffix, dir=p.parent)
    os.close(fd)
    try:
        nib.save(img, tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file the permissions open() would
        os.replace(tmp, p)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return p


def save_like(path: PathLike, data: np.ndarray, reference: Volume, *, dtype=None) -> Path:
    """Write ``data`` on the grid of ``reference`` (same affine and header fields)."""
    return save_volume(path, data, reference.affine, header=reference.header, dtype=dtype)


def world_to_voxel(affine: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Map world coordinates ``(N, 3)`` (mm) to continuous voxel indices ``(N, 3)``."""
    inv = np.linalg.inv(affine)
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    return pts @ inv[:3, :3].T + inv[:3, 3]


def voxel_to_world(affine: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Map voxel indices ``(N, 3)`` to world coordinates ``(N, 3)`` in mm."""
    idx = np.asarray(index, dtype=np.float64).reshape(-1, 3)
    return idx @ affine[:3, :3].T + affine[:3, 3]


#: ``descrip`` of the NIfTI headers of synth7t's predictions: tells the CLI a synth7t output from a 3T input
OUTPUT_DESCRIP = "synth7t synthetic 7T"


def output_header() -> nib.Nifti1Header:
    """A NIfTI header whose ``descrip`` marks the file as a synth7t prediction (:func:`is_synth7t_output`)."""
    hdr = nib.Nifti1Header()
    hdr["descrip"] = OUTPUT_DESCRIP.encode()
    return hdr


def is_synth7t_output(path: PathLike) -> bool:
    """Whether ``path`` is a NIfTI file synth7t's prediction wrote (its header's ``descrip``)."""
    try:
        descrip = nib.load(str(path)).header["descrip"].item()
    except Exception:  # not a readable NIfTI: not ours
        return False
    return descrip.decode(errors="replace").startswith(OUTPUT_DESCRIP)
