"""The 7T traits of the simulated demo cohort: bright vessel-like tubes and the local artefacts (cerebellar signal
loss slices, a motion-corrupted slab) whose axial slice ranges go to ``artefacts.tsv``. Used by :mod:`synth7t.simulate.demo`."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from ..data.templates import MTL_LABELS


def paint_vessels(img: np.ndarray, labels: np.ndarray, voxel: float, n: int, rng,
                   clear_mm: float = 10.0) -> int:
    """Add ``n`` thin bright tubes (vessel-like, 7T only) starting on the cortical ribbon at least ``clear_mm``
    from the amygdala and hippocampus: like the other 7T artefacts they stay local, away from the structures the
    premise is checked on (a bright tube beside the amygdala pulls an atlas registration off it)."""
    from scipy.spatial import cKDTree

    cortex = np.argwhere(np.isin(labels, (3, 42)))
    if len(cortex) == 0 or n == 0:
        return 0
    mtl = np.argwhere(np.isin(labels, MTL_LABELS))
    if len(mtl):
        far = cKDTree(mtl[:: max(1, len(mtl) // 4000)]).query(cortex)[0] * voxel > clear_mm
        cortex = cortex[far]
    for start in cortex[rng.choice(len(cortex), size=min(n, len(cortex)), replace=False)]:
        direction = rng.normal(size=3)
        direction /= np.linalg.norm(direction)
        length = rng.uniform(4, 12) / voxel
        radius = rng.uniform(0.3, 0.6) / voxel
        amp = rng.uniform(0.4, 0.9)
        end = start + direction * length
        lo = np.maximum(np.floor(np.minimum(start, end) - 3 * radius).astype(int), 0)
        hi = np.minimum(np.ceil(np.maximum(start, end) + 3 * radius).astype(int) + 1, img.shape)
        if np.any(hi <= lo):
            continue
        ii, jj, kk = np.meshgrid(*[np.arange(a, b) for a, b in zip(lo, hi)], indexing="ij")
        q = np.stack([ii, jj, kk], -1).astype(np.float32) - start
        t = np.clip(q @ direction / length, 0, 1)
        dist = np.linalg.norm(q - t[..., None] * (direction * length), axis=-1)
        img[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] += amp * np.exp(-0.5 * (dist / radius) ** 2)
    return int(min(n, len(cortex)))


def artefact_slice_ranges(loss: np.ndarray, brain: np.ndarray, threshold: float = 0.15) -> list[tuple[int, int]]:
    """Contiguous axial slice ranges where the signal-loss fraction inside the brain exceeds ``threshold``."""
    hit = np.array([bool(np.any(loss[:, :, k][brain[:, :, k]] > threshold)) for k in range(loss.shape[2])])
    ranges, k = [], 0
    while k < len(hit):
        if hit[k]:
            k1 = k
            while k1 + 1 < len(hit) and hit[k1 + 1]:
                k1 += 1
            ranges.append((int(k), int(k1)))
            k = k1 + 1
        else:
            k += 1
    return ranges


def add_motion(img: np.ndarray, brain: np.ndarray, voxel: float, *, centre: float, thickness_mm: float,
               ghost: float) -> tuple[int, int]:
    """Corrupt a slab of axial slices as head motion does: a ghost shifted by a quarter of the field of view along
    the phase-encoding (anterior-posterior) axis and a blur across it. Returns the slab's inclusive slice range.

    ``centre`` (0-1 of the brain's axial extent), ``thickness_mm`` and ``ghost`` (the ghost's weight) are a subject's
    ``motion_*`` draws (:class:`synth7t.simulate.demo.SubjectParams`)."""
    ks = np.flatnonzero(brain.any(axis=(0, 1)))
    lo, hi = (int(ks[0]), int(ks[-1])) if len(ks) else (0, img.shape[2] - 1)
    centre = lo + centre * (hi - lo)
    half = max(1, int(round(thickness_mm / voxel / 2)))
    a, b = max(int(round(centre)) - half, 0), min(int(round(centre)) + half, img.shape[2] - 1)
    slab = img[:, :, a:b + 1]
    shifted = np.roll(slab, img.shape[1] // 4, axis=1)
    blurred = ndi.gaussian_filter1d(slab, 1.5 / voxel, axis=1)
    img[:, :, a:b + 1] = (1 - ghost) * blurred + ghost * shifted
    return a, b
