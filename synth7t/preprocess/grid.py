"""The training grid: a box of 7T space with fixed-size axial slices, exact crop and uncrop, brain slices,
artefact slices re-expressed on the grid."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from ..data import io as sio
from .config import PreprocessError

# ---------------------------------------------------------------------------------------------- grid



@dataclass
class GridBox:
    """A box of 7T space: ``grid[i, j, k] = space[start + (i, j, k)]`` (indices outside space are padding).

    Attributes:
        start: first 7T-space voxel index per axis (negative where the grid pads below the 7T volume).
        shape: grid shape ``(left-right, anterior-posterior, axial)``.
        space_shape: shape of 7T space.
        space_affine: voxel-to-world matrix of 7T space (RAS).
    """

    start: tuple
    shape: tuple
    space_shape: tuple
    space_affine: np.ndarray

    @property
    def affine(self) -> np.ndarray:
        """Voxel-to-world matrix of the grid (7T space shifted by ``start``)."""
        a = np.asarray(self.space_affine, float).copy()
        a[:3, 3] = a[:3, :3] @ np.asarray(self.start, float) + a[:3, 3]
        return a

    def to_dict(self) -> dict:
        return {"start": [int(s) for s in self.start], "shape": [int(s) for s in self.shape],
                "space_shape": [int(s) for s in self.space_shape],
                "space_affine": np.asarray(self.space_affine, float).tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> "GridBox":
        return cls(tuple(d["start"]), tuple(d["shape"]), tuple(d["space_shape"]), np.asarray(d["space_affine"]))


def plan_grid(mask: np.ndarray, affine: np.ndarray, inplane: Sequence[int] = (288, 224), axial_margin: int = 8,
              what: str = "mask") -> GridBox:
    """Place the training grid around the brain.

    In-plane the grid is centred on the brain's bounding box; ``inplane = (anterior-posterior, left-right)``
    becomes array axes 1 and 0 of the RAS volume. Axially it holds every brain slice plus ``axial_margin``.

    Args:
        mask: boolean brain mask in 7T space (RAS voxel order).
        affine: 7T-space affine.

    Raises:
        PreprocessError: the brain does not fit in-plane (it would be cut).
    """
    idx = np.argwhere(mask)
    if idx.size == 0:
        raise PreprocessError(f"{what}: empty brain mask, cannot place the grid")
    lo, hi = idx.min(0), idx.max(0)
    n_ap, n_lr = int(inplane[0]), int(inplane[1])
    sizes = [n_lr, n_ap]
    start = []
    for ax in range(2):
        extent = int(hi[ax] - lo[ax] + 1)
        if extent > sizes[ax]:
            name = ("left-right", "anterior-posterior")[ax]
            raise PreprocessError(f"{what}: the brain spans {extent} voxels {name}, more than the grid's {sizes[ax]}; "
                                  "increase grid_inplane (multiples of grid_divisor) or check the brain mask")
        centre = (lo[ax] + hi[ax] + 1) / 2.0
        start.append(int(np.floor(centre - sizes[ax] / 2.0)))
    bot, top = int(lo[2]), int(hi[2])
    start.append(bot - int(axial_margin))
    shape = (n_lr, n_ap, top - bot + 1 + 2 * int(axial_margin))
    return GridBox(tuple(start), shape, tuple(int(s) for s in mask.shape), np.asarray(affine, float))


def _overlap(box: GridBox):
    src, dst = [], []
    for s, n, N in zip(box.start, box.shape, box.space_shape):
        a, b = max(s, 0), min(s + n, N)
        if b <= a:
            raise ValueError(f"grid box {box.start}+{box.shape} does not overlap 7T space {box.space_shape}")
        src.append(slice(a, b))
        dst.append(slice(a - s, b - s))
    return tuple(src), tuple(dst)


def crop_to_grid(data: np.ndarray, box: GridBox, fill: float = 0) -> np.ndarray:
    """Crop and pad a 7T-space array ``box.space_shape`` to the grid ``box.shape`` (pure indexing)."""
    if tuple(data.shape) != tuple(box.space_shape):
        raise ValueError(f"array shape {data.shape} is not the 7T space shape {tuple(box.space_shape)}")
    out = np.full(tuple(box.shape), fill, dtype=data.dtype)
    src, dst = _overlap(box)
    out[dst] = data[src]
    return out


def uncrop_from_grid(data: np.ndarray, box: GridBox, fill: float = 0) -> np.ndarray:
    """Put a grid array back into 7T space (exact inverse of :func:`crop_to_grid` inside the box).

    Args:
        data: ``(X, Y, Z)`` on the grid, e.g. a synthetic 7T predicted slice by slice.
        box: the subject's :class:`GridBox` (``GridBox.from_dict(record["grid"])``).

    Returns:
        Array of ``box.space_shape``; voxels outside the box get ``fill``. Save it with ``box.space_affine``.
    """
    if tuple(data.shape) != tuple(box.shape):
        raise ValueError(f"array shape {data.shape} is not the grid shape {tuple(box.shape)}")
    out = np.full(tuple(box.space_shape), fill, dtype=data.dtype)
    src, dst = _overlap(box)
    out[src] = data[dst]
    return out


def bounding_box(mask: np.ndarray, margin: int = 0) -> tuple[slice, ...]:
    """The index box of ``mask``'s non-zero voxels, ``margin`` voxels wider on each side (within the array)."""
    idx = np.argwhere(mask)
    if idx.size == 0:
        raise ValueError("the mask is empty: no bounding box")
    lo = np.maximum(idx.min(0) - margin, 0)
    hi = np.minimum(idx.max(0) + margin + 1, mask.shape)
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))


def crop_affine(affine: np.ndarray, box: Sequence[slice]) -> np.ndarray:
    """The voxel-to-world matrix of ``array[box]`` (the same world positions, the origin moved to the box's corner)."""
    a = np.asarray(affine, float).copy()
    a[:3, 3] = a[:3, :3] @ np.array([s.start or 0 for s in box], float) + a[:3, 3]
    return a


def crop_to_brain(data: np.ndarray, mask: np.ndarray, affine: np.ndarray,
                  margin_mm: Optional[float]) -> tuple[np.ndarray, np.ndarray]:
    """``data`` cut to ``mask``'s bounding box plus ``margin_mm``, with the box's affine: what a registration needs
    of a brain-extracted image (the far background only costs time; ``PreprocessConfig.registration_crop_mm``).
    ``margin_mm=None`` or an empty mask returns the input."""
    if margin_mm is None or not np.any(mask):
        return data, np.asarray(affine, float)
    vox = float(np.linalg.norm(np.asarray(affine, float)[:3, :3], axis=0).min())
    box = bounding_box(mask, int(np.ceil(margin_mm / vox)))
    return data[box], crop_affine(affine, box)


def brain_slices(mask_grid: np.ndarray) -> tuple[int, int]:
    """``(bottom, top)`` axial grid indices of the lowest and highest slices holding brain."""
    ks = np.flatnonzero(mask_grid.any(axis=(0, 1)))
    if ks.size == 0:
        raise PreprocessError("brain mask on the grid is empty")
    return int(ks[0]), int(ks[-1])


def _ranges(indices: Sequence[int]) -> list[list[int]]:
    idx = sorted(set(int(i) for i in indices))
    out: list[list[int]] = []
    for i in idx:
        if out and i == out[-1][1] + 1:
            out[-1][1] = i
        else:
            out.append([i, i])
    return out


def artefacts_on_grid(ranges: Sequence[Sequence[int]], orig_affine: np.ndarray, box: GridBox) -> list[list[int]]:
    """Re-express inclusive axial slice ranges of the (RAS) 7T file on the grid.

    A grid slice is excluded when its centre falls inside a listed range (slice edges included). Ranges that
    fall outside the grid are dropped.

    Args:
        ranges: ``[(first, last), ...]`` along the RAS 7T's third voxel axis.
        orig_affine: affine of the RAS 7T (before any resampling to 0.7 mm).
        box: the grid box.
    """
    if not ranges:
        return []
    ks = np.arange(box.shape[2])
    centre = np.array([(box.shape[0] - 1) / 2.0, (box.shape[1] - 1) / 2.0])
    pts = np.column_stack([np.full(ks.size, centre[0]), np.full(ks.size, centre[1]), ks])
    world = sio.voxel_to_world(box.affine, pts)
    korig = sio.world_to_voxel(orig_affine, world)[:, 2]
    hit = np.zeros(ks.size, bool)
    for a, b in ranges:
        hit |= (korig >= a - 0.5) & (korig <= b + 0.5)
    return _ranges(ks[hit])
