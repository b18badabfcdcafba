"""Structure Dice against a reference, alignment of label maps, best-per-subject counts, Figure 5 plots."""

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage as ndi

from synth7t.evaluation import regional


@pytest.fixture(autouse=True)
def _close_figures():
    """Figures of one test are closed after it (pyplot keeps every figure open otherwise)."""
    yield
    import matplotlib.pyplot as plt

    plt.close("all")


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


def _save(path, data, affine=np.eye(4)):
    import nibabel as nib

    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(data), affine), str(path))
    return path


def test_structure_labels_and_reference_paths(tmp_path):
    assert regional.structure_labels(["Left-Amygdala", "Right-Hippocampus"]) == {"Left-Amygdala": (18,),
                                                                                 "Right-Hippocampus": (53,)}
    with pytest.raises(ValueError, match="Left-Amygdale"):
        regional.structure_labels(["Left-Amygdale"])
    record = {"key": "sub-01", "files": {"t7": "sub-01/anat/t7.nii.gz", "labels": "sub-01/anat/dseg.nii.gz"}}
    assert regional.reference_paths("sub-01", record, tmp_path / "deriv") == (
        tmp_path / "deriv" / "sub-01/anat/t7.nii.gz", tmp_path / "deriv" / "sub-01/anat/dseg.nii.gz")
    with pytest.raises(FileNotFoundError, match="give reference_dir"):
        regional.reference_paths("sub-01", {"files": {"t7": "t7.nii.gz"}}, tmp_path)
    manual = tmp_path / "manual"
    with pytest.raises(FileNotFoundError, match="sub-01_dseg.nii.gz"):
        regional.reference_paths("sub-01", record, tmp_path, manual)
    _save(manual / "sub-01_T1w.nii.gz", np.zeros((2, 2, 2), np.float32))
    _save(manual / "sub-01_dseg.nii.gz", np.zeros((2, 2, 2), np.int16))
    assert regional.reference_paths("sub-01", None, tmp_path, manual) == (manual / "sub-01_T1w.nii.gz",
                                                                          manual / "sub-01_dseg.nii.gz")


def test_reference_dice_aligns_and_scores_every_image(tmp_path):
    ref_img, ref_lab, aff = _phantom()
    img_s, lab_s, aff_s = _phantom(shift_mm=(4.0, 0.0, 0.0))
    paths = {"ref": _save(tmp_path / "ref.nii.gz", ref_img, aff),
             "ref_lab": _save(tmp_path / "ref_lab.nii.gz", ref_lab, aff),
             "img": _save(tmp_path / "img.nii.gz", img_s, aff_s), "lab": _save(tmp_path / "lab.nii.gz", lab_s, aff_s)}
    bad = lab_s.copy()
    bad[bad == 18] = 0  # this segmentation misses the left amygdala
    paths["bad"] = _save(tmp_path / "bad.nii.gz", bad, aff_s)
    images = pd.DataFrame([{"key": "s1", "image_type": "3T", "name": "3T", "path": str(paths["img"])},
                           {"key": "s1", "image_type": "unet", "name": "U-Net", "path": str(paths["img"])}])
    segs = {("s1", "3T"): paths["bad"], ("s1", "unet"): paths["lab"]}
    dice, aligned = regional.reference_dice(images, segs, {"s1": (paths["ref"], paths["ref_lab"])},
                                            {"Left-Amygdala": (18,), "Right-Amygdala": (54,)},
                                            registration_spacing=None)
    d = dice.set_index(["image_type", "structure"])["dice"]
    assert list(dice.columns) == ["key", "image_type", "structure", "dice"] and len(dice) == 4
    assert d[("U-Net", "Left-Amygdala")] > 0.8 and d[("U-Net", "Right-Amygdala")] > 0.8
    assert d[("3T", "Left-Amygdala")] == 0.0 and d[("3T", "Right-Amygdala")] == pytest.approx(
        d[("U-Net", "Right-Amygdala")])
    assert set(aligned) == {("s1", "3T"), ("s1", "U-Net")} and aligned[("s1", "U-Net")].shape == ref_lab.shape
    summary = regional.dice_summary(dice, order=["U-Net", "3T"])
    assert list(summary.columns.get_level_values(0).unique()) == ["U-Net", "3T"]
    assert summary.loc["Left-Amygdala", ("3T", "mean")] == 0.0 and summary.loc["Left-Amygdala", ("3T", "count")] == 1


def test_segmentation_dice_against_the_7t_and_the_truth(tmp_path):
    truth = np.zeros((6, 6, 6), np.int16)
    truth[:3] = 17  # left hippocampus
    truth[3:] = 8   # left cerebellum cortex: left out of the mean
    seg7 = truth.copy()
    seg7[0] = 0  # the 7T's segmentation misses one plane of hippocampus
    seg3 = truth.copy()
    seg3[:2] = 0  # the 3T's finds a third of the hippocampus
    files = {n: _save(tmp_path / f"{n}.nii.gz", a) for n, a in (("truth", truth), ("7T", seg7), ("3T", seg3))}
    images = pd.DataFrame([{"key": "s1", "image_type": t, "name": t} for t in ("3T", "7T")])
    scores, per_label = regional.segmentation_dice(images, {("s1", "3T"): files["3T"], ("s1", "7T"): files["7T"]},
                                                   truth={"s1": files["truth"]})
    s = scores.set_index("image_type")
    # 3T vs 7T: hippocampus is one plane in the 3T and two in the 7T, sharing one: 2 * 1 / (1 + 2); the
    # cerebellum, identical, is left out of the mean
    assert s.loc["3T", "mean_dice"] == pytest.approx(2 / 3)
    assert np.isnan(s.loc["7T", "mean_dice"])  # the reference is not scored against itself
    assert s.loc["7T", "mean_dice_truth"] == pytest.approx(2 * 2 / (3 + 2))
    assert s.loc["3T", "mean_dice_truth"] == pytest.approx(2 * 1 / (3 + 1))
    lab = per_label.set_index("region")
    assert list(per_label.columns) == ["key", "image_type", "label", "region", "dice"]
    assert lab.loc["Left-Hippocampus", "dice"] == pytest.approx(2 / 3) and set(per_label.image_type) == {"3T"}
    assert lab.loc["Left-Cerebellum-Cortex", "label"] == 8
    no_truth, _ = regional.segmentation_dice(images, {("s1", "3T"): files["3T"], ("s1", "7T"): files["7T"]})
    assert "mean_dice_truth" not in no_truth


def test_structure_centre_and_volumes_by_diagnosis():
    lab = np.zeros((9, 9, 9), np.int16)
    lab[1:4, 2:7, 5] = 17
    lab[2, 2, 2] = 53  # another structure: not counted
    assert list(regional.structure_centre(lab, (17, 18))) == [2, 4, 5]
    assert list(regional.structure_centre(lab, (99,))) == [4, 4, 4]
    vols = pd.DataFrame({"key": ["sub-01", "sub-02", "sub-03", "sub-01", "sub-02_ses-2"],
                         "image_type": ["3T", "3T", "3T", "unet", "unet"],
                         "Left-Hippocampus": [3.0, 2.5, 2.0, 3.1, 2.6], "Right-Hippocampus": [3.0, 2.5, 2.0, 3.1, 2.6],
                         "Left-Lateral-Ventricle": [8.0, 10.0, 12.0, 8.0, 10.0],
                         "Right-Lateral-Ventricle": [8.0, 10.0, 12.0, 8.0, 10.0]})
    parts = pd.DataFrame({"diagnosis": ["CN", "AD", "MCI"]}, index=pd.Index(["sub-01", "sub-02", "sub-03"],
                                                                             name="participant_id"))
    fig = regional.plot_volumes_by_diagnosis(vols, parts, ["3T", "unet"])
    hip = fig.axes[0]
    assert [t.get_text() for t in hip.get_xticklabels()] == ["CN", "MCI", "AD"]
    three_t, unet = hip.collections
    assert np.asarray(three_t.get_offsets())[:, 1].tolist() == [6.0, 5.0, 4.0]
    assert np.allclose(np.asarray(unet.get_offsets()), [[0.2, 6.2], [2.2, 5.2]])  # CN and AD, shifted right
    assert [t.get_text() for t in hip.get_legend().get_texts()] == ["3T", "U-Net"]
    with pytest.raises(ValueError, match="Left-Amygdala"):
        regional.plot_volumes_by_diagnosis(vols, parts, ["3T"], columns={"Amygdala": ["Left-Amygdala"]})
