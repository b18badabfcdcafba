import matplotlib

matplotlib.use("Agg")

import nibabel as nib
import numpy as np
import pandas as pd

from synth7t import viz


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
    a, b = viz.orthoslices(ras, p), viz.orthoslices(lia, p)
    for plane in viz.PLANES:
        np.testing.assert_array_equal(a[plane][0], b[plane][0])
        assert a[plane][1] == b[plane][1]


def test_plot_planes_returns_a_figure_with_a_row_per_image():
    fig = viz.plot_planes({"a": _img(), "b": _img(zoom=0.7)}, labels=nib.Nifti1Image(
        (np.asarray(_img().dataobj) * 17).astype(np.uint8), np.eye(4)), title="t")
    assert len(fig.axes) == 9
    rgba = viz.label_rgb(np.array([[0, 17], [53, 999]]))
    assert rgba[0, 0, 3] == 0 and rgba[0, 1, 3] == 1 and np.allclose(rgba[0, 1], rgba[1, 0])


def test_artefact_and_volume_plots():
    fig = viz.plot_artefact_slices(_img(), [(2, 4)])
    assert fig.axes[0].patches  # the shaded band
    table = pd.DataFrame({"diagnosis": ["CN", "AD", "CN"], "v": [3.0, 2.0, 3.5]})
    fig = viz.plot_volumes_by_group(table, ["v"])
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["CN", "AD"]


def test_rating_figures():
    rows = [(r, q, c, v, rank) for r in ("r1", "r2") for q in range(3) for c in ("looks_best", "most_detailed")
            for rank, v in enumerate(["7T", "3T", "GAN"], start=1)]
    ranks = pd.DataFrame(rows, columns=["rater_id", "query_index", "criterion", "variant", "rank"])
    fig = viz.plot_rank_violins(ranks)
    assert len(fig.axes) == 2 and [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["7T", "3T", "GAN"]
    fig = viz.plot_rater_stacked_ranks(ranks, "r1", order=["3T", "7T", "GAN"])
    heights = [p.get_height() for p in fig.axes[0].patches]
    assert sum(heights) == 9  # 3 queries x 3 variants


def test_slice_viewer_syncs_volumes_and_controls():
    a, b = _img(), _img()
    b = nib.Nifti1Image(np.asarray(b.dataobj) * 2, b.affine)
    v = viz.SliceViewer({"3T": a, "7T": b}, labels=nib.Nifti1Image(np.asarray(a.dataobj).astype(np.uint8), a.affine))
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
        viz.SliceViewer({"a": _img(), "b": _img(shape=(10, 10, 10))})
    except ValueError as e:
        assert "share one grid" in str(e)
    else:
        raise AssertionError("different grids must be refused")
