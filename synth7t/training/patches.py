"""Patches for the baselines of §2.6 (V-Net, WATNet), and whole-volume prediction by sliding window.

The paper ran Cui et al.'s (2024) code for its two baselines: the V-Net on 64^3 patches and WATNet-2D on
64 x 64 x 3 patches (three neighbouring axial slices in, the centre slice out), trained with an L1 loss, and
whole volumes predicted patch by patch with overlapping windows (8 voxels) blended together. This module gives
the trainer (:class:`synth7t.training.trainer.Trainer`) those patches from the slice cache and gives the trainer and the
predictor (:func:`synth7t.inference.volume.predict_volume`) the sliding window.

**Where patches come from.** The slice cache (:mod:`synth7t.training.slices`) stores every axial slice of every subject,
subject after subject, as memory-mapped ``(N_slices, H, W)`` arrays; a subject's rows ``offset .. offset +
depth - 1`` are its whole volume in the ``(Z, H, W)`` layout, so a 3D patch is one memory-mapped read of
``P`` consecutive rows cropped in-plane (nothing is copied or rebuilt for the baselines), and a 2D patch is
three rows cropped.

**How patches are drawn.** Patch centres are brain voxels (non-zero voxels of the brain-masked 3T) of *usable*
slices (the cache's samples: brain, not a 7T artefact slice), drawn uniformly over all such voxels of the
training subjects; the patch is placed around its centre and shifted inward at the volume's edges (zero-padded
only where the volume is smaller than a patch). Sample ``i`` of epoch ``e`` uses a generator seeded by
``(seed, e, i)``: the same seed gives the same patches, in any process (what ``torchrun`` ranks need), and a
resumed run replays them. An epoch has as many samples as Cui et al.'s grid sampler gives over each subject's
brain bounding box (cubes with ``overlap`` voxels of overlap; in 2D, 64 x 64 windows with that overlap
in-plane and stacks of 3 slices without overlap along the axis): about as many optimiser steps per epoch as
their code, without their windows of pure background. ``samples_per_epoch`` of the training config shortens it.

**What the loss sees.** Every sample carries a ``mask``: the brain (voxels where the 3T or the 7T is non-zero)
on usable slices. Cui et al. multiply the network's output by the brain mask before the L1 loss; the trainer does
the same and also multiplies the 7T by the mask, so that the 7T artefact slices the U-Net never trains on (they
are not samples) are not targets of a 3D patch either.

**Sliding window.** :func:`sliding_window_predict` wraps MONAI's ``sliding_window_inference`` with windows of
the training patch size and ``overlap`` voxels of overlap (8, as in Cui et al.'s inference). Overlapping windows
are blended with Gaussian weights (``mode="gaussian"``, MONAI's sigma of 1/8 of the window): a window's border
voxels, where its convolutions saw zero padding instead of anatomy, count least, and the weights cross-fade
smoothly over the overlap, like the Hann window of TorchIO's aggregator that Cui et al. used; uniform weights
(``"constant"``) average a window's worst voxels with its neighbour's best and leave seams at window borders.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Optional, Sequence, Union

import numpy as np

__all__ = ["PatchGeometry", "patch_geometry", "grid_positions", "PatchDataset", "sliding_window_predict",
           "nonzero_box", "BLEND_MODE", "DEFAULT_OVERLAP"]

if TYPE_CHECKING:
    from .slices import SliceCache

PathLike = Union[str, Path]

#: MONAI blending of overlapping windows (see the module docstring for why Gaussian)
BLEND_MODE = "gaussian"
#: voxels of overlap between neighbouring windows (Cui et al.: 8 for 64^3 and 64 x 64 patches)
DEFAULT_OVERLAP = 8


@dataclass(frozen=True)
class PatchGeometry:
    """What a patch-trained network reads.

    Attributes:
        spatial_dims: 3 (cubes ``(1, P, P, P)`` in, ``(1, P, P, P)`` out) or 2 (``(n_input_slices, P, P)``
            neighbouring axial slices in, the centre slice ``(1, P, P)`` out).
        size: patch edge ``P`` in voxels (the model config's ``patch_size``).
        n_input_slices: input channels: the neighbouring slices in 2D, 1 in 3D.
    """

    spatial_dims: int
    size: int
    n_input_slices: int = 1


def patch_geometry(model_config: Any) -> Optional[PatchGeometry]:
    """The patch geometry of a model config, or None for a slice model (the U-Net, trained on whole slices).

    Args:
        model_config: a model config object (``synth7t.models``) or its ``to_dict()`` form (with ``kind``).

    Returns:
        :class:`PatchGeometry` for the V-Net (3D) and WATNet (2D or 3D, from ``spatial_dims``), else None.
    """
    if model_config is None:
        return None
    get = model_config.get if isinstance(model_config, Mapping) else lambda k, d=None: getattr(model_config, k, d)
    kind = get("kind")
    if kind == "vnet":
        return PatchGeometry(3, int(get("patch_size")), 1)
    if kind == "watnet":
        dims = int(get("spatial_dims"))
        return PatchGeometry(dims, int(get("patch_size")), int(get("n_input_slices")) if dims == 2 else 1)
    return None


def grid_positions(extent: int, size: int, overlap: int) -> int:
    """Windows of edge ``size`` with ``overlap`` voxels of overlap that a grid sampler places along one axis of
    ``extent`` voxels (the last window is moved back to end at the edge; one window when the axis is shorter).

    Raises:
        ValueError: ``size < 1`` or an overlap outside ``[0, size)``.
    """
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    if not 0 <= overlap < size:
        raise ValueError(f"overlap must be in [0, size={size}), got {overlap}")
    if extent <= size:
        return 1
    return math.ceil((extent - size) / (size - overlap)) + 1


def nonzero_box(a: np.ndarray) -> Optional[tuple]:
    """The bounding box of the non-zero voxels of ``a`` as a tuple of slices, or None when all are zero."""
    nz = np.asarray(a) != 0
    if not nz.any():
        return None
    box = []
    for axis in range(nz.ndim):
        hit = np.flatnonzero(nz.any(axis=tuple(i for i in range(nz.ndim) if i != axis)))
        box.append(slice(int(hit[0]), int(hit[-1]) + 1))
    return tuple(box)


def _pad(a: np.ndarray, pad: tuple) -> np.ndarray:
    """``np.pad`` with zeros at the ends, without a copy when nothing is padded."""
    return np.pad(a, pad) if any(after for _, after in pad) else a


def _window(centre: int, size: int, extent: int) -> tuple[int, int, int]:
    """``(start, stop, pad)``: a window of ``size`` around ``centre`` moved inside ``[0, extent)``; ``pad``
    voxels of zeros complete it when the axis is shorter than the window."""
    start = min(max(int(centre) - size // 2, 0), max(extent - size, 0))
    stop = min(start + size, extent)
    return start, stop, size - (stop - start)


class PatchDataset:
    """Seeded random patches of the training subjects of a slice cache (V-Net, WATNet).

    Args:
        cache: the opened slice cache (or its folder).
        keys: the subjects to draw from: the training side of the split (``Trainer`` passes the training keys
            less the validation ones). Test subjects are refused: they are only ever scored.
        geometry: the network's :class:`PatchGeometry` (:func:`patch_geometry` of its config).
        overlap: window overlap of Cui et al.'s grid sampler, which sizes an epoch (see :attr:`__len__`).
        seed: base seed; sample ``i`` of epoch ``e`` draws from ``(seed, e, i)``.

    Items are dicts of float32 tensors ``x`` (``(1, P, P, P)`` in 3D, ``(n_input_slices, P, P)`` in 2D), ``y``
    and ``mask`` (``(1, P, P, P)`` or ``(1, P, P)``; the mask is 1 on brain voxels of usable slices), ``context``
    (4,) (age, sex, impaired, slice location of the centre slice: the U-Net's conditioning, which the baselines
    ignore), and ``key``, ``z``, ``centre`` (the drawn brain voxel, ``(z, y, x)`` in the volume's ``(Z, H, W)``
    layout) and ``origin`` (the patch's first voxel; in 2D its ``z`` is the centre slice's).

    Raises:
        ValueError: no keys, unknown keys, test subjects, a subject without usable brain slices, or a
            geometry whose patch edge is not positive.
    """

    def __init__(self, cache: Union["SliceCache", PathLike], keys: Sequence[str], *, geometry: PatchGeometry,
                 overlap: int = DEFAULT_OVERLAP, seed: int = 0):
        from .slices import SliceCache  # (imports torch: this module is imported by synth7t.inference)

        self.cache = cache if isinstance(cache, SliceCache) else SliceCache.open(cache)
        if isinstance(keys, str):
            raise ValueError(f"keys must be a list of subject keys, got the string {keys!r}")
        keys = sorted(set(keys))
        if not keys:
            raise ValueError("keys is empty: a patch dataset needs training subjects")
        vols = self.cache.volumes.set_index("key")
        unknown = [k for k in keys if k not in vols.index]
        if unknown:
            raise ValueError(f"keys not in the cache {self.cache.root}: {', '.join(unknown)}")
        test = [k for k in keys if str(vols.loc[k, "split"]) == "test"]
        if test:
            raise ValueError(f"test subjects are only ever scored, never trained on: {', '.join(test)}")
        if geometry.spatial_dims not in (2, 3) or geometry.size < 1:
            raise ValueError(f"geometry must have spatial_dims 2 or 3 and a positive size, got {geometry}")
        if geometry.spatial_dims == 2 and (geometry.n_input_slices < 1 or geometry.n_input_slices % 2 == 0):
            raise ValueError(f"n_input_slices must be a positive odd number, got {geometry.n_input_slices}")
        grid_positions(geometry.size + 1, geometry.size, overlap)  # the overlap's checks
        self.geometry, self.overlap, self.seed = geometry, int(overlap), int(seed)
        self.epoch = 0
        self.keys = keys
        _, self.height, self.width = self.cache.t3.shape
        idx = self.cache.index[self.cache.index["key"].isin(keys)].sort_values("offset").reset_index(drop=True)
        self.usable = np.zeros(self.cache.t3.shape[0], bool)
        self.usable[idx["offset"].to_numpy()] = True
        counts, rows_y, rows_x = self._brain_per_slice(idx["offset"].to_numpy())
        has = counts > 0
        self.index = idx[has].reset_index(drop=True)
        self.counts = counts[has]
        missing = sorted(set(keys) - set(self.index["key"]))
        if missing:
            raise ValueError(f"no usable brain slices (non-zero 3T on a sample slice) for {', '.join(missing)}")
        #: cumulative brain voxels over the usable slices: a uniform draw over it picks a brain voxel
        self.cumulative = np.cumsum(self.counts)
        # per usable slice, as arrays (pandas row access would dominate the time of a batch)
        self._offset = self.index["offset"].to_numpy(np.int64)
        self._z = self.index["z"].to_numpy(np.int64)
        self._key = self.index["key"].astype(str).to_numpy()
        self._context = self.index[["age", "sex", "impaired", "slice_location"]].to_numpy(np.float32)
        self._volume = {k: (int(vols.loc[k, "offset"]), int(vols.loc[k, "depth"])) for k in keys}
        self.n_samples = self._grid_count(idx[has], rows_y[has], rows_x[has])

    # ---------------------------------------------------------------------------------------- setup
    def _brain_per_slice(self, rows: np.ndarray, chunk: int = 64):
        """Brain voxels per cache row, and each row's in-plane extent (first and last row/column with brain),
        read in chunks of consecutive memory-mapped rows."""
        counts = np.zeros(len(rows), np.int64)
        ys = np.zeros((len(rows), 2), np.int64)
        xs = np.zeros((len(rows), 2), np.int64)
        for s in range(0, len(rows), chunk):
            r = rows[s:s + chunk]
            block = np.asarray(self.cache.t3[r]) > 0
            counts[s:s + len(r)] = block.sum(axis=(1, 2))
            for j, b in enumerate(block):
                if counts[s + j]:
                    yy, xx = np.flatnonzero(b.any(1)), np.flatnonzero(b.any(0))
                    ys[s + j], xs[s + j] = (yy[0], yy[-1]), (xx[0], xx[-1])
        return counts, ys, xs

    def _grid_count(self, idx, ys: np.ndarray, xs: np.ndarray) -> int:
        """Samples per epoch: the windows of Cui et al.'s grid sampler over each subject's brain bounding box."""
        g, ov = self.geometry, self.overlap
        total = 0
        for key in self.keys:
            sel = (idx["key"] == key).to_numpy()
            z = idx.loc[sel, "z"].to_numpy()
            ez = int(z.max() - z.min() + 1)
            ey = int(ys[sel, 1].max() - ys[sel, 0].min() + 1)
            ex = int(xs[sel, 1].max() - xs[sel, 0].min() + 1)
            along = (grid_positions(ez, g.size, ov) if g.spatial_dims == 3
                     else grid_positions(ez, g.n_input_slices, 0))
            total += along * grid_positions(ey, g.size, ov) * grid_positions(ex, g.size, ov)
        return total

    # ------------------------------------------------------------------------------------- sampling
    def __len__(self) -> int:
        """Samples per epoch (see the module docstring)."""
        return self.n_samples

    def set_epoch(self, epoch: int) -> None:
        """Draw the patches of another epoch (deterministic per epoch)."""
        self.epoch = int(epoch)

    def centre(self, i: int) -> tuple[int, int, int, int]:
        """``(row of self.index, z, y, x)`` of sample ``i``'s centre: a brain voxel of a usable slice."""
        rng = np.random.default_rng([self.seed, self.epoch, int(i), 23])
        u = int(rng.integers(int(self.cumulative[-1])))
        j = int(np.searchsorted(self.cumulative, u, side="right"))
        k = u - (int(self.cumulative[j - 1]) if j else 0)
        flat = np.flatnonzero(np.asarray(self.cache.t3[int(self._offset[j])]) > 0)[k]
        y, x = divmod(int(flat), self.width)
        return j, int(self._z[j]), y, x

    def __getitem__(self, i: int) -> dict:
        import torch

        if not 0 <= int(i) < len(self):
            raise IndexError(f"sample {i} out of range for {len(self)} samples")
        j, z, yc, xc = self.centre(i)
        key = str(self._key[j])
        offset, depth = self._volume[key]
        P = self.geometry.size
        y0, y1, py = _window(yc, P, self.height)
        x0, x1, px = _window(xc, P, self.width)
        if self.geometry.spatial_dims == 3:
            z0, z1, pz = _window(z, P, depth)
            origin = (z0, y0, x0)
            pad = ((0, pz), (0, py), (0, px))
            x = _pad(np.asarray(self.cache.t3[offset + z0:offset + z1, y0:y1, x0:x1], np.float32), pad)
            y = _pad(np.asarray(self.cache.t7[offset + z0:offset + z1, y0:y1, x0:x1], np.float32), pad)
            usable = np.pad(self.usable[offset + z0:offset + z1], (0, pz))
            mask = ((x > 0) | (y > 0)) & usable[:, None, None]
            x, y, mask = x[None], y[None], mask[None]
        else:
            half = self.geometry.n_input_slices // 2
            origin = (z, y0, x0)
            rows = np.clip(np.arange(z - half, z + half + 1), 0, depth - 1) + offset
            pad = ((0, 0), (0, py), (0, px))
            x = _pad(np.asarray(self.cache.t3[rows, y0:y1, x0:x1], np.float32), pad)
            y = _pad(np.asarray(self.cache.t7[offset + z, y0:y1, x0:x1], np.float32)[None], pad)
            mask = (x[half:half + 1] > 0) | (y > 0)
        return {"x": torch.from_numpy(np.ascontiguousarray(x)), "y": torch.from_numpy(np.ascontiguousarray(y)),
                "mask": torch.from_numpy(mask.astype(np.float32)),
                "context": torch.from_numpy(self._context[j].copy()), "key": key, "z": z, "centre": (z, yc, xc),
                "origin": origin}


# ------------------------------------------------------------------------------------------ sliding window


def _overlap_fraction(size: int, overlap: int) -> float:
    """MONAI's overlap as a fraction of the window; it steps by ``int(size * (1 - fraction))``, so the fraction
    is chosen for that truncation to give exactly ``size - overlap`` voxels whatever the float rounding."""
    frac = overlap / size
    if int(size * (1 - frac)) != size - overlap:
        frac = (overlap - 0.25) / size
    return frac


def sliding_window_predict(generator, x, *, patch_size: int, overlap: int = DEFAULT_OVERLAP,
                           batch_size: int = 4, mode: str = BLEND_MODE, progress: bool = False):
    """Predict whole images with a patch-trained network: MONAI's ``sliding_window_inference`` over windows of
    the training patch size, overlapping by ``overlap`` voxels, blended (``mode``; Gaussian by default, see the
    module docstring). Images smaller than a window are zero-padded, and the padding is cropped away.

    Args:
        generator: the network, ``(B, C, *window) -> (B, 1, *window)``.
        x: ``(B, C, D, H, W)`` volumes (3D networks) or ``(B, C, H, W)`` slice stacks (2D networks), on the
            network's device.
        patch_size: window edge (the model config's ``patch_size``).
        overlap: voxels shared by neighbouring windows (``0 <= overlap < patch_size``).
        batch_size: windows per forward pass.
        mode: ``"gaussian"`` or ``"constant"`` (uniform weights).
        progress: a tqdm bar over the windows.

    Returns:
        ``(B, 1, *spatial)``: the blended prediction (no gradients).

    Raises:
        ValueError: a bad overlap, batch size or mode, or an input that is not 4D or 5D.
    """
    import torch
    from monai.inferers import sliding_window_inference

    if x.ndim not in (4, 5):
        raise ValueError(f"x must be (B, C, H, W) or (B, C, D, H, W), got shape {tuple(x.shape)}")
    if not 0 <= int(overlap) < int(patch_size):
        raise ValueError(f"overlap must be in [0, patch_size={patch_size}) voxels, got {overlap}")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if mode not in ("gaussian", "constant"):
        raise ValueError(f"mode must be 'gaussian' or 'constant', got {mode!r}")
    roi = (int(patch_size),) * (x.ndim - 2)
    with torch.no_grad():
        return sliding_window_inference(x, roi, int(batch_size), generator,
                                        overlap=_overlap_fraction(int(patch_size), int(overlap)), mode=mode,
                                        progress=progress)
