import numpy as np
import pytest

from synth7t.evaluation import metrics


def test_psnr_by_hand():
    a = np.zeros((2, 2, 2))
    b = np.zeros((2, 2, 2))
    b[0, 0, 0] = 0.4  # MSE over 8 voxels = 0.16 / 8 = 0.02
    assert metrics.psnr(a, b) == pytest.approx(-10 * np.log10(0.02))
    assert metrics.psnr(a, a) == float("inf")


def test_global_ssim_by_hand():
    a = np.array([0.1, 0.2, 0.3, 0.4]).reshape(1, 2, 2)
    b = np.array([0.1, 0.1, 0.4, 0.4]).reshape(1, 2, 2)
    ma, mb = 0.25, 0.25
    va, vb = 0.0125, 0.0225
    cov = np.mean((a.ravel() - ma) * (b.ravel() - mb))  # 0.015
    expected = (2 * ma * mb + 1e-4) * (2 * cov + 9e-4) / ((ma**2 + mb**2 + 1e-4) * (va + vb + 9e-4))
    assert metrics.ssim_global(a, b) == pytest.approx(expected)
    assert cov == pytest.approx(0.015)
    assert metrics.ssim_global(a, a) == pytest.approx(1.0)


def test_evaluation_mask_drops_background_and_artefact_slices():
    ref = np.zeros((3, 3, 4))
    ref[1, 1, :] = 1.0
    m = metrics.evaluation_mask(ref, excluded_slices=[0, 3])
    assert m.sum() == 2 and m[1, 1, 1] and m[1, 1, 2] and not m[1, 1, 0]
    pred = ref.copy()
    pred[1, 1, 0] = 0.0  # an error only inside an excluded slice...
    pred[0, 0, 1] = 0.9  # ...and one in the background: neither counts
    out = metrics.image_metrics(ref, pred, excluded_slices=[0, 3])
    assert out["psnr"] == float("inf") and out["n_voxels"] == 2
    with pytest.raises(ValueError, match="excluded slice indices"):
        metrics.evaluation_mask(ref, excluded_slices=[4])
    with pytest.raises(ValueError, match="empty"):
        metrics.psnr(ref, pred, np.zeros_like(ref, bool))
    with pytest.raises(ValueError, match="same shape"):
        metrics.psnr(ref, ref[:2])


def test_dice_per_label_and_mean_without_cerebellum():
    a = np.array([[1, 1, 2, 0], [8, 8, 0, 0]])
    b = np.array([[1, 0, 2, 2], [0, 8, 0, 0]])
    d = metrics.dice(a, b)
    assert d[1] == pytest.approx(2 * 1 / 3)
    assert d[2] == pytest.approx(2 * 1 / 3)
    assert d[8] == pytest.approx(2 * 1 / 3)
    assert np.isnan(metrics.dice(a, b, labels=[5])[5])
    assert metrics.mean_dice({1: 0.5, 2: 1.0, 8: 0.0}) == pytest.approx(0.75)


def test_summary_table_layout():
    import pandas as pd

    t = pd.DataFrame({"image_type": ["3T", "3T", "U-Net", "U-Net"], "psnr": [20.0, 22.0, 25.0, 27.0],
                      "ssim": [0.8, 0.9, 0.9, 0.95]})
    s = metrics.summarise(t, order=["3T", "U-Net"])
    assert list(s.index) == ["3T", "U-Net"] and s.loc["3T", "psnr"] == "21.000 ± 1.414"


def test_score_images_against_each_subjects_7t(tmp_path):
    import pandas as pd

    from conftest import write_nifti

    rng = np.random.default_rng(0)
    ref = rng.random((6, 7, 8)).astype(np.float32) + 0.1
    ref[0, 0, 4] = 0.0  # a brain voxel the clipped normalisation set to 0: "nonzero" drops it, "brain" keeps it
    brain = np.ones(ref.shape, np.uint8)
    brain[5] = 0  # outside the brain
    write_nifti(tmp_path / "der" / "sub-01_mask.nii.gz", brain)
    noisy = ref + rng.normal(0, 0.05, ref.shape).astype(np.float32)
    rows = [{"key": "sub-01", "image_type": t, "name": n, "path": str(write_nifti(tmp_path / f"{t}.nii.gz", d))}
            for t, n, d in (("7T", "7T", ref), ("3T", "3T", noisy), ("unet", "U-Net", ref))]
    # records hold inclusive slice *ranges*: [0, 2] is slices 0, 1 and 2
    records = {"sub-01": {"excluded_slices": [[0, 2]], "files": {"mask": "sub-01_mask.nii.gz"}}}
    table = metrics.score_images(pd.DataFrame(rows), records, derivatives=tmp_path / "der")
    assert list(table["image_type"]) == ["3T", "U-Net"]
    keep = brain.astype(bool)
    keep[:, :, :3] = False
    expected = metrics.image_metrics(ref, noisy, brain_mask=keep)
    assert table.loc[0, "psnr"] == pytest.approx(expected["psnr"]) and table.loc[0, "n_voxels"] == 5 * 7 * 5
    assert table.loc[1, "psnr"] == float("inf")
    old = metrics.score_images(pd.DataFrame(rows), records, mask="nonzero")
    assert old.loc[0, "n_voxels"] == 6 * 7 * 5 - 1
    with pytest.raises(ValueError, match="derivatives"):
        metrics.score_images(pd.DataFrame(rows), records)
    with pytest.raises(ValueError, match="no brain mask"):
        metrics.score_images(pd.DataFrame(rows), {"sub-01": {"excluded_slices": []}}, derivatives=tmp_path)
    with pytest.raises(ValueError, match="mask must be one of"):
        metrics.score_images(pd.DataFrame(rows), records, mask="everything")
    with pytest.raises(ValueError, match="no 7T image"):
        metrics.score_images(pd.DataFrame(rows[1:]), records, derivatives=tmp_path / "der")


def test_slice_indices_expand_inclusive_ranges():
    assert metrics.slice_indices([[3, 5], [9, 9], [4, 6]]) == [3, 4, 5, 6, 9]
    with pytest.raises(ValueError, match="first <= last"):
        metrics.slice_indices([[5, 3]])


def test_margins_over_the_3t_subject_by_subject():
    import pandas as pd

    from synth7t.evaluation.metrics import margins_over

    t = pd.DataFrame({"key": ["a", "b", "a", "b", "a", "b"], "image_type": ["3T", "3T", "M", "M", "N", "N"],
                      "psnr": [20.0, 22.0, 21.0, 22.5, 19.0, 23.0], "ssim": [0.9, 0.8, 0.91, 0.79, 0.95, 0.85]})
    m = margins_over(t).set_index(["image_type", "key"])
    assert m.loc[("M", "a"), "psnr_margin"] == 1.0 and m.loc[("M", "b"), "ssim_margin"] == pytest.approx(-0.01)
    assert list(m["above"]) == [True, False, False, True]
    with pytest.raises(ValueError, match="no 'X' rows"):
        margins_over(t, reference="X")
