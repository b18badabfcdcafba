"""Structure Dice against a reference, alignment of label maps, best-per-subject counts, Figure 5 plots."""

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage as ndi

from synth7t import regional


def _phantom(shift_mm=(0.0, 0.0, 0.0), spacing=2.0, shape=(48, 56, 48)):
    """An ellipsoidal 'brain' with two off-centre 'amygdalae' (labels 18, 54) and a bright core, sampled on a
    grid whose world origin moves by ``shift_mm`` (the same anatomy seen by a displaced scanner)."""
    aff = np.diag([spacing] * 3 + [1.0])
    aff[:3, 3] = -np.array(shape) * spacing / 2 + np.asarray(shift_mm)
    ijk = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1).astype(float)
    xyz = ijk * spacing + aff[:3, 3]
    r = np.sqrt((xyz[..., 0] / 35) ** 2 + (xyz[..., 1] / 45) ** 2 + (xyz[..., 2] / 35) ** 2)
    img = np.where(r < 1, 0.5 + 0.5 * (r < 0.5), 0.0) + 0.2 * np.sin(xyz[..., 0] / 6) * (r < 1)
    lab = np.zeros(shape, np.int16)
    lab[np.linalg.norm(xyz - [-15, 5, -5], axis=-1) < 7] = 18
    lab[np.linalg.norm(xyz - [15, 5, -5], axis=-1) < 7] = 54
    img = img + 0.3 * (lab > 0)
    return ndi.gaussian_filter(img, 0.7).astype(np.float32), lab, aff


def test_structure_dice_by_hand():
    a = np.zeros((4, 4, 4), np.int16)
    b = np.zeros_like(a)
    a[:2] = 18
    b[1:3] = 18
    a[3, 0, 0] = 54
    d = regional.structure_dice(a, b, {"amygdala": (18,), "right": (54,), "none": (17,)})
    assert d["amygdala"] == pytest.approx(2 * 16 / (32 + 32))
    assert d["right"] == 0.0 and np.isnan(d["none"])
    with pytest.raises(ValueError, match="shape"):
        regional.structure_dice(a, b[:3])


def test_align_labels_undoes_a_displacement():
    ref_img, ref_lab, ref_aff = _phantom()
    # the same anatomy on a grid displaced by 6 mm: labels copied voxel for voxel are off by 3 voxels
    img, lab, aff = _phantom(shift_mm=(6.0, -4.0, 0.0))
    naive = regional.structure_dice(ref_lab, lab)
    out = regional.align_labels((img, aff), (lab, aff), (ref_img, ref_aff), registration_spacing=None)
    aligned = regional.structure_dice(ref_lab, out)
    assert out.shape == ref_lab.shape and out.dtype == np.int16
    assert aligned["Left-Amygdala"] > 0.8 and aligned["Right-Amygdala"] > 0.8, aligned
    assert aligned["Left-Amygdala"] > naive["Left-Amygdala"] + 0.2
    with pytest.raises(ValueError, match="grid"):
        regional.align_labels((img, aff), (lab[:-1], aff), (ref_img, ref_aff))


def test_best_per_subject_and_figure():
    rows = []
    for k, (a, b, c) in {"s1": (0.6, 0.7, 0.65), "s2": (0.5, 0.55, 0.6), "s3": (0.7, 0.7, 0.6)}.items():
        for t, v in zip(("3T", "U-Net", "GAN U-Net"), (a, b, c)):
            rows.append({"key": k, "image_type": t, "structure": "Left-Amygdala", "dice": v})
    table = pd.DataFrame(rows)
    best = regional.best_per_subject(table)
    assert best.loc["Left-Amygdala"].to_dict() == {"3T": 1, "U-Net": 2, "GAN U-Net": 1}  # s3: a tie counts twice
    fig = regional.plot_dice_differences(table)
    assert len(fig.axes) == 2
    with pytest.raises(ValueError, match="baseline"):
        regional.plot_dice_differences(table, baseline="7T")
    ref_img, ref_lab, _ = _phantom()
    fig = regional.plot_outlines(ref_img, ref_lab, {"3T": ref_lab, "U-Net": np.roll(ref_lab, 2, axis=0)})
    assert len(fig.axes) == 2
