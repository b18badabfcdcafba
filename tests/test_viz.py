import matplotlib

matplotlib.use("Agg")

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from synth7t.plots import figures


@pytest.fixture(autouse=True)
def _close_figures():
    """Figures of one test are closed after it (pyplot keeps every figure open otherwise)."""
    yield
    import matplotlib.pyplot as plt

    plt.close("all")


def _img(shape=(20, 24, 18), zoom=1.0, axcodes="RAS"):
    from nibabel import orientations as o

    d = np.zeros(shape, np.float32)
    d[5:15, 6:18, 4:14] = 1.0
    aff = np.diag([zoom, zoom, zoom, 1.0])
    if axcodes != "RAS":
        ornt = o.ornt_transform(o.axcodes2ornt("RAS"), o.axcodes2ornt(axcodes))
        d, aff = o.apply_orientation(d, ornt), aff @ o.inv_ornt_aff(ornt, shape)
    return nib.Nifti1Image(d, aff)


def test_orthoslices_pick_the_same_world_point_across_orientations():
    ras, lia = _img(), _img(axcodes="LIA")
    p = [9.0, 11.0, 8.0]
    a, b = figures.orthoslices(ras, p), figures.orthoslices(lia, p)
    for plane in figures.PLANES:
        np.testing.assert_array_equal(a[plane][0], b[plane][0])
        assert a[plane][1] == b[plane][1]


def test_plot_planes_returns_a_figure_with_a_row_per_image():
    fig = figures.plot_planes({"a": _img(), "b": _img(zoom=0.7)}, labels=nib.Nifti1Image(
        (np.asarray(_img().dataobj) * 17).astype(np.uint8), np.eye(4)), title="t")
    assert len(fig.axes) == 9
    rgba = figures.label_rgb(np.array([[0, 17], [53, 999]]))
    assert rgba[0, 0, 3] == 0 and rgba[0, 1, 3] == 1 and np.allclose(rgba[0, 1], rgba[1, 0])


def test_artefact_and_volume_plots():
    fig = figures.plot_artefact_slices(_img(), [(2, 4)])
    assert fig.axes[0].patches  # the shaded band
    table = pd.DataFrame({"diagnosis": ["CN", "AD", "CN"], "v": [3.0, 2.0, 3.5]})
    fig = figures.plot_volumes_by_group(table, ["v"])
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["CN", "AD"]


def test_slice_viewer_syncs_volumes_and_controls():
    a, b = _img(), _img()
    b = nib.Nifti1Image(np.asarray(b.dataobj) * 2, b.affine)
    v = figures.SliceViewer({"3T": a, "7T": b}, labels=nib.Nifti1Image(np.asarray(a.dataobj).astype(np.uint8), a.affine))
    panel = v.widget
    ctl = v._controls
    ctl["sliders"][2].value = 5
    assert v.cursor[2] == 5
    np.testing.assert_array_equal(v.planes("3T")["axial"], np.asarray(a.dataobj)[:, :, 5].T)
    ctl["zoom"].value = 2.0
    assert v.planes("7T")["axial"].shape[0] < 24
    ctl["show"][0].value = False
    assert v.shown == ["7T"]
    fig = v.figure()
    assert len(fig.axes) == 3
    assert panel is v.widget
    try:
        figures.SliceViewer({"a": _img(), "b": _img(shape=(10, 10, 10))})
    except ValueError as e:
        assert "share one grid" in str(e)
    else:
        raise AssertionError("different grids must be refused")


def test_training_monitor_redraws_from_the_trainers_log_rows():
    mon = figures.TrainingMonitor(every=10, live=False)
    for step in range(1, 26):
        mon("train", {"step": step, "epoch": 0, "total": 1.0 / step})
    assert mon.n_draws == 2  # after rows 10 and 20
    mon("val", {"step": 25, "psnr": 20.0, "psnr_3t": 18.0})
    mon("train", {"step": 26, "epoch": 1, "d_loss": 0.3})  # a critic row carries no generator total
    mon("val", {"step": 30, "psnr": 21.5, "psnr_3t": 18.0})
    assert mon.n_draws == 4
    (loss,) = mon.ax_loss.get_lines()
    np.testing.assert_array_equal(loss.get_xdata(), np.arange(1, 26))
    np.testing.assert_allclose(loss.get_ydata(), 1.0 / np.arange(1, 26))
    assert mon.ax_loss.get_yscale() == "log"
    model, t3 = mon.ax_val.get_lines()
    assert list(model.get_ydata()) == [20.0, 21.5] and list(t3.get_ydata()) == [18.0, 18.0]
    assert list(mon.val["step"]) == [25, 30] and len(mon.train) == 26
    assert mon.close() is mon.figure
    with pytest.raises(ValueError, match="'train' or 'val'"):
        mon("test", {})
    with pytest.raises(ValueError, match="every"):
        figures.TrainingMonitor(every=0, live=False)


def test_plot_validation_draws_model_and_3t_per_metric():
    val = pd.DataFrame({"step": [10, 20], "psnr": [20.0, 22.0], "psnr_3t": [18.0, 18.0], "ssim": [0.8, 0.85],
                        "ssim_3t": [0.7, 0.7]})
    fig = figures.plot_validation(val)
    assert [ax.get_title() for ax in fig.axes] == ["PSNR", "SSIM"]
    assert list(fig.axes[1].get_lines()[0].get_ydata()) == [0.8, 0.85]
    assert list(fig.axes[1].get_lines()[1].get_ydata()) == [0.7, 0.7]
    with pytest.raises(ValueError, match="ssim_3t"):
        figures.plot_validation(val.drop(columns="ssim_3t"))


def _volumes():
    rng = np.random.default_rng(0)
    ref = np.zeros((12, 14, 10), np.float32)
    ref[2:9, 3:10, 2:7] = rng.uniform(0.2, 1.0, (7, 7, 5))
    return {"3T": ref * 0.8, "U-Net": np.clip(ref + 0.05, 0, 1) * (ref > 0), "7T": ref}


def test_mask_centre_and_prediction_errors():
    vols = _volumes()
    ref = vols["7T"]
    assert list(figures.mask_centre(ref > 0)) == [5, 6, 4]  # centre of [2, 9) x [3, 10) x [2, 7)
    assert list(figures.mask_centre(np.zeros((4, 6, 8), bool))) == [2, 3, 4]
    fig = figures.plot_prediction_errors({"7T": vols["7T"], "U-Net": vols["U-Net"], "3T": vols["3T"]}, title="t")
    axes = np.array(fig.axes).reshape(3, 3)
    assert [ax.get_title() for ax in axes[0]] == ["3T", "U-Net", "7T"]  # 3T, the models, 7T
    err = axes[2, 0].get_images()[0].get_array()
    np.testing.assert_allclose(err, (np.abs(vols["3T"] - ref) * (ref > 0))[:, :, 4].T)
    np.testing.assert_array_equal(axes[1, 2].get_images()[0].get_array(), ref[:, 6, :].T)
    with pytest.raises(ValueError, match="reference"):
        figures.plot_prediction_errors({"3T": ref})
    with pytest.raises(ValueError, match="one grid"):
        figures.plot_prediction_errors({"3T": ref[:-1], "7T": ref})


def test_score_boxes_closeups_and_profiles():
    table = pd.DataFrame({"image_type": ["3T", "3T", "U-Net", "U-Net", "7T"], "psnr": [20.0, 21.0, 23.0, 24.0, np.nan],
                          "ssim": [0.8, 0.81, 0.9, 0.91, np.nan]})
    fig = figures.plot_score_boxes(table, {"psnr": "PSNR (dB)", "ssim": "SSIM"}, order=["3T", "U-Net"])
    assert [ax.get_title() for ax in fig.axes] == ["PSNR (dB)", "SSIM"]
    dots = fig.axes[0].collections[0].get_offsets()
    assert sorted(np.asarray(dots)[:, 1]) == [20.0, 21.0, 23.0, 24.0]
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["3T", "U-Net"]
    with pytest.raises(ValueError, match="mean_dice"):
        figures.plot_score_boxes(table, {"mean_dice": "Dice"}, order=["3T"])

    vols = _volumes()
    fig = figures.plot_closeups(vols, (5, 6, 4), 4)
    axes = np.array(fig.axes).reshape(2, 3)
    np.testing.assert_array_equal(axes[0, 2].get_images()[0].get_array(), vols["7T"][3:7, 4:8, 4].T)
    np.testing.assert_array_equal(axes[1, 0].get_images()[0].get_array(), vols["3T"][3:7, 6, 2:6].T)
    with pytest.raises(ValueError, match="size"):
        figures.plot_closeups(vols, (5, 6, 4), 1)

    fig = figures.plot_3t_vs_7t(vols, (5, 6, 4))
    assert len(fig.axes) == 5 and fig.axes[1].get_title() == "7T axial"
    profiles = {line.get_label(): line.get_ydata() for line in fig.axes[4].get_lines()}
    assert list(profiles) == ["3T", "U-Net", "7T"]
    np.testing.assert_array_equal(profiles["U-Net"], vols["U-Net"][:, 6, 4])
    with pytest.raises(ValueError, match="7T"):
        figures.plot_3t_vs_7t({"3T": vols["3T"]}, (5, 6, 4))
