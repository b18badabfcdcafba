"""Multi-view 2.5D: plane reslicing, fusion, the uncertainty map and its writer, the through-plane measure, and
prediction along each plane (tiny arrays and a tiny U-Net; CPU)."""

import itertools

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch

from conftest import design_results

from synth7t import inference
from synth7t.evaluation import multiview_design
from synth7t.data import planes
from synth7t.evaluation import slicing
from synth7t.inference import fusion
from synth7t.models import build_model, get_model_config, make_context

SHAPE = (11, 14, 9)  # (X, Y, Z): odd, unequal sides, so that a wrong transposition cannot pass


@pytest.fixture
def vol():
    return np.random.default_rng(0).random(SHAPE).astype(np.float32)


# ----------------------------------------------------------------------------------------------- reslicing


@pytest.mark.parametrize("plane, expected", [("axial", (9, 14, 11)), ("coronal", (14, 9, 11)),
                                             ("sagittal", (11, 9, 14))])
def test_plane_stacks_have_the_documented_layout(vol, plane, expected):
    s = planes.to_plane_stack(vol, plane)
    assert s.shape == expected
    # slice k of a plane is the grid's slice k along that plane's axis, as (H, W)
    k = 3
    ref = {"axial": vol[:, :, k].T, "coronal": vol[:, k, :].T, "sagittal": vol[k, :, :].T}[plane]
    np.testing.assert_array_equal(s[k], ref)


@pytest.mark.parametrize("pad", [1, 4, 32])
def test_round_trip_through_every_plane_is_exact(vol, pad):
    for plane in planes.PLANES:
        stack = planes.to_plane_stack(vol, plane, pad_multiple=pad)
        if plane != "axial":
            assert stack.shape[1] == planes.padded_height(SHAPE[2], pad) and not stack[:, SHAPE[2]:].any()
        np.testing.assert_array_equal(planes.from_plane_stack(stack, plane, SHAPE), vol)
    # axial <-> coronal <-> sagittal, every ordered pair, exactly
    for a, b in itertools.permutations(planes.PLANES, 2):
        sa = planes.to_plane_stack(vol, a, pad_multiple=pad)
        sb = planes.reslice(sa, a, b, SHAPE, pad_multiple=pad)
        np.testing.assert_array_equal(sb, planes.to_plane_stack(vol, b, pad_multiple=pad))
        np.testing.assert_array_equal(planes.reslice(sb, b, a, SHAPE, pad_multiple=pad), sa)


def test_reslicing_rejects_bad_input(vol):
    with pytest.raises(ValueError, match="unknown plane 'oblique'.*axial, coronal, sagittal"):
        planes.to_plane_stack(vol, "oblique")
    with pytest.raises(ValueError, match="3D grid volume"):
        planes.to_plane_stack(vol[0], "axial")
    with pytest.raises(ValueError, match="smaller than the grid's depth"):
        planes.to_plane_stack(vol, "coronal", height=5)
    with pytest.raises(ValueError, match="coronal stack of a .* has shape"):
        planes.from_plane_stack(planes.to_plane_stack(vol, "coronal"), "coronal", (11, 13, 9))
    with pytest.raises(ValueError, match="pad_multiple"):
        planes.padded_height(9, 0)
    assert planes.check_planes("a, c,sagittal") == ("axial", "coronal", "sagittal")
    with pytest.raises(ValueError, match="listed twice"):
        planes.check_planes(["axial", "a"])


def test_brain_range_per_plane():
    m = np.zeros(SHAPE, bool)
    m[2:7, 4:12, 1:8] = True
    assert planes.brain_range(m, "sagittal") == (2, 6)
    assert planes.brain_range(m, "coronal") == (4, 11)
    assert planes.brain_range(m, "axial") == (1, 7)
    with pytest.raises(ValueError, match="empty"):
        planes.brain_range(np.zeros(SHAPE), "axial")


# ----------------------------------------------------------------------------------------------- fusion


def test_fusion_mean_median_weighted_and_learned_weights(vol):
    a, b, c = vol, vol * 0.5, vol * 0.5 + 0.4
    v = {"axial": a, "coronal": b, "sagittal": c}
    np.testing.assert_allclose(fusion.fuse_views(v, "mean"), (a + b + c) / 3, rtol=1e-6)
    np.testing.assert_allclose(fusion.fuse_views(v, "median"), np.median([a, b, c], axis=0), rtol=1e-6)
    np.testing.assert_allclose(fusion.fuse_views(v, "weighted", weights={"axial": 3, "coronal": 1, "sagittal": 0}),
                               0.75 * a + 0.25 * b, rtol=1e-6)
    mask = vol > 0.5
    assert not fusion.fuse_views(v, mask=mask)[~mask].any()
    # the learned fusion recovers the weights that made the target
    rng = np.random.default_rng(1)
    subjects = [{p: rng.random(SHAPE) for p in planes.PLANES} for _ in range(2)]
    targets = [0.6 * s["axial"] + 0.4 * s["sagittal"] for s in subjects]
    w = fusion.fit_fusion_weights(subjects, targets, [np.ones(SHAPE)] * 2)
    assert w == pytest.approx({"axial": 0.6, "coronal": 0.0, "sagittal": 0.4}, abs=1e-6)
    with pytest.raises(ValueError, match="unknown fusion 'max'"):
        fusion.fuse_views(v, "max")
    with pytest.raises(ValueError, match="needs weights"):
        fusion.fuse_views(v, "weighted")
    with pytest.raises(ValueError, match="non-negative"):
        fusion.fuse_views([a, b], "weighted", weights=[1, -1])
    with pytest.raises(ValueError, match="one shape"):
        fusion.fuse_views([a, a[:-1]])


def test_uncertainty_is_the_spread_of_the_members(vol):
    members = [vol, vol + 0.1, vol - 0.1]
    u = fusion.view_uncertainty(members)
    np.testing.assert_allclose(u, np.full(SHAPE, np.std([0, 0.1, -0.1])), atol=1e-6)
    assert not fusion.view_uncertainty([vol, vol]).any()
    with pytest.raises(ValueError, match="at least two"):
        fusion.view_uncertainty([vol])


def test_uncertainty_writer_puts_the_map_beside_the_prediction_on_its_grid(tmp_path, vol):
    from synth7t.data import io as sio

    aff = np.diag([0.7, 0.7, 0.7, 1.0])
    aff[:3, 3] = [-10, 5, 3]
    pred = tmp_path / "sub-01_acq-unet_space-grid_T1w.nii.gz"
    sio.save_volume(pred, vol, aff, dtype=np.float32)
    out = fusion.write_uncertainty(pred, vol * 0.1)
    assert out == tmp_path / "sub-01_acq-unet_space-grid_T1w_uncertainty.nii.gz"
    a, b = nib.load(str(pred)), nib.load(str(out))
    np.testing.assert_allclose(b.affine, a.affine)
    assert b.header.get_zooms() == a.header.get_zooms() and b.shape == a.shape
    assert b.header["descrip"].item().decode().startswith("synth7t uncertainty")
    np.testing.assert_allclose(b.get_fdata(), vol * 0.1, rtol=1e-6)
    assert fusion.uncertainty_path(tmp_path / "x.nii") == tmp_path / "x_uncertainty.nii"
    with pytest.raises(ValueError, match="differs from the prediction"):
        fusion.write_uncertainty(pred, vol[:, :, :3])
    with pytest.raises(ValueError, match=".nii"):
        fusion.uncertainty_path("x.mgz")


# ----------------------------------------------------------------------------------------------- measures


def test_second_difference_energy_by_hand():
    v = np.zeros((3, 5, 4))
    v[1, 2, :] = [0, 1, 4, 9]  # quadratic along Z: second difference 2 everywhere
    m = np.zeros(v.shape, bool)
    m[1, 2, :] = True
    assert slicing.second_difference_energy(v, 2, m) == pytest.approx(4.0)
    with pytest.raises(ValueError, match="no run of three"):
        slicing.second_difference_energy(v, 0, m)
    with pytest.raises(ValueError, match="axis"):
        slicing.second_difference_energy(v, 3)


def test_through_plane_ratios_see_slice_jitter_and_not_blur():
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(0)
    ref = gaussian_filter(rng.random((40, 40, 40)), 1.5)
    mask = np.ones(ref.shape, bool)
    same = slicing.through_plane_ratios(ref, ref, mask)
    assert same == pytest.approx({"axial": 1.0, "coronal": 1.0, "sagittal": 1.0})
    assert slicing.artefact_index(same) == pytest.approx(1.0)
    # an offset per axial slice (independent slice-by-slice predictions): only the axial ratio rises
    jitter = ref + rng.normal(0, 0.02, ref.shape[2])[None, None, :]
    r = slicing.through_plane_ratios(jitter, ref, mask)
    assert r["axial"] > 1.5 and r["coronal"] == pytest.approx(1.0) and r["sagittal"] == pytest.approx(1.0)
    assert slicing.artefact_index(r) == pytest.approx(r["axial"])
    # isotropic blur lowers every ratio alike: a small index
    blur = slicing.through_plane_ratios(gaussian_filter(ref, 1.0), ref, mask)
    assert all(v < 0.5 for v in blur.values()) and slicing.artefact_index(blur) < 1.2


def test_uncertainty_calibration_ranks_and_bins():
    rng = np.random.default_rng(0)
    ref = rng.random((20, 20, 20))
    u = rng.random(ref.shape) * 0.1
    pred = ref + u * rng.choice([-1, 1], ref.shape)  # the error is the uncertainty
    mask = np.ones(ref.shape, bool)
    mask[0] = False
    rho, table = slicing.uncertainty_calibration(u, pred, ref, mask)
    assert rho == pytest.approx(1.0, abs=1e-6)
    assert list(table["bin"]) == list(range(1, 11)) and table["n_voxels"].sum() == mask.sum()
    assert table["abs_error"].is_monotonic_increasing and table["u_max"].is_monotonic_increasing
    rho0, _ = slicing.uncertainty_calibration(rng.random(ref.shape), pred, ref, mask, n_bins=4)
    assert abs(rho0) < 0.05
    # regional: means over 2-voxel cubes wholly inside the mask (the first X plane is out: the cubes of X 0..1 too)
    rho_b, cubes = slicing.uncertainty_calibration(u, pred, ref, mask, n_bins=4, block=2)
    assert cubes["n_voxels"].sum() == 9 * 10 * 10 and rho_b == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(ValueError, match="block"):
        slicing.uncertainty_calibration(u, pred, ref, mask, block=0)
    with pytest.raises(ValueError, match="n_bins"):
        slicing.uncertainty_calibration(u, pred, ref, mask, n_bins=1)


# ----------------------------------------------------------------------------------------------- prediction


@pytest.fixture(scope="module")
def mv_model():
    torch.manual_seed(0)
    cfg = get_model_config("demo-cpu-nodiag").replace(plane_condition=True)
    meta = {"model_config": cfg.to_dict(), "planes": ["axial", "coronal", "sagittal"]}
    return build_model(cfg).eval(), meta


def _brain():
    m = np.zeros(SHAPE, bool)
    m[2:9, 3:12, 1:8] = True
    return m


@pytest.mark.parametrize("plane", ["coronal", "sagittal"])
def test_predict_plane_matches_the_network_applied_to_the_planes_slices(mv_model, plane):
    g, _ = mv_model
    shape = (12, 16, 9)  # in-plane sides divisible by 4 as on a real grid; the depth (9) is padded to 12
    mask = np.zeros(shape, bool)
    mask[2:9, 3:12, 1:8] = True
    t3 = np.random.default_rng(2).random(shape).astype(np.float32) * mask
    out = inference.views.predict_plane(g, t3, plane, age=70, sex="F", impaired=None, mask=mask)
    stack = planes.to_plane_stack(t3, plane, pad_multiple=4)  # demo-cpu downsamples twice
    b, t = planes.brain_range(mask, plane)
    manual = np.zeros_like(stack)
    with torch.no_grad():
        for k in range(stack.shape[0]):
            rows = np.clip(np.arange(k - 1, k + 2), 0, stack.shape[0] - 1)
            ctx = make_context(70, "F", None, (2 * k - (t + b)) / (t - b), plane=plane)
            manual[k] = g(torch.from_numpy(stack[rows])[None], ctx)[0, 0].clamp(0, 1).numpy()
    expected = planes.from_plane_stack(manual, plane, shape) * mask
    np.testing.assert_allclose(out, expected, atol=1e-5)


def test_predict_multiview_fuses_views_with_uncertainty_and_flips(mv_model, vol):
    mask = _brain()
    t3 = vol * mask
    kw = dict(age=70, sex="F", impaired=None, mask=mask)
    res = inference.views.predict_multiview(mv_model, t3, uncertainty=True, **kw)
    assert set(res.views) == set(planes.PLANES) and res.n_members == 3
    np.testing.assert_allclose(res.prediction, fusion.fuse_views(res.views, "mean", mask=mask), atol=1e-6)
    np.testing.assert_allclose(res.uncertainty, fusion.view_uncertainty(list(res.views.values()), mask=mask),
                               atol=1e-6)
    assert res.uncertainty[mask].max() > 0 and not res.uncertainty[~mask].any()
    med = inference.views.predict_multiview(mv_model, t3, views="a,c,s", fusion="median", **kw)
    np.testing.assert_allclose(med.prediction, np.median(list(med.views.values()), axis=0) * mask, atol=1e-6)
    one = inference.views.predict_multiview(mv_model, t3, views=["coronal"], flips=True, uncertainty=True, **kw)
    assert one.n_members == 2 and list(one.views) == ["coronal"]
    with pytest.raises(ValueError, match="at least two members"):
        inference.views.predict_multiview(mv_model, t3, views=["axial"], uncertainty=True, **kw)
    with pytest.raises(ValueError, match="unknown plane 'oblique'"):
        inference.views.predict_multiview(mv_model, t3, views=["oblique"], **kw)


def test_an_axial_model_predicts_as_before_and_refuses_other_planes():
    from synth7t.inference.volume import predict_volume

    torch.manual_seed(1)
    cfg = get_model_config("demo-cpu-nodiag")
    g = build_model(cfg).eval()
    old_meta = {"model_config": {k: v for k, v in cfg.to_dict().items() if k != "plane_condition"}}  # no planes key
    assert inference.views.model_planes(old_meta) == ("axial",)
    mask = np.zeros((12, 16, 9), bool)
    mask[2:9, 3:12, 1:8] = True
    t3 = np.random.default_rng(3).random(mask.shape).astype(np.float32) * mask
    res = inference.views.predict_multiview((g, old_meta), t3, age=70, sex="F", impaired=None, mask=mask)
    b, t = planes.brain_range(mask, "axial")
    np.testing.assert_array_equal(res.prediction, predict_volume(g, t3, age=70, sex="F", impaired=None, bottom=b,
                                                                  top=t, mask=mask))
    with pytest.raises(ValueError, match="no model learned coronal slices"):
        inference.views.predict_multiview((g, old_meta), t3, views=["axial", "coronal"], age=70, sex="F", impaired=None)
    with pytest.raises(ValueError, match="axial slices only"):
        g.set_plane("sagittal")


def test_figures_of_the_multiview_sections(vol):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from synth7t.plots import multiview

    vols = {"3T": vol, "fused": vol * 0.9, "7T": vol}
    fig = multiview.plot_plane_closeups(vols, (5, 7, 4), 6)
    assert len(fig.axes) == 6 and [a.get_ylabel() for a in fig.axes[::3]] == ["coronal", "sagittal"]
    assert fig.axes[0].images[0].get_array().shape == (6, 6)  # coronal crop: (Z, X) around the voxel
    with pytest.raises(ValueError, match="unknown plane"):
        multiview.plot_plane_closeups(vols, (5, 7, 4), 6, planes=["oblique"])
    fig2 = multiview.plot_uncertainty_vs_error(vol, vol * 0.9, vol * 0.05, (5, 7, 4), mask=vol > 0.2)
    assert len(fig2.axes) >= 6
    rho, cal = slicing.uncertainty_calibration(vol * 0.05, vol * 0.9, vol, vol > 0.2)
    fig3 = multiview.plot_calibration(cal.assign(key="s1", image_type="fused"), rho={"fused": rho})
    assert "rho" in fig3.axes[0].get_legend().get_texts()[0].get_text()
    tp = pd.DataFrame([{"key": "s1", "image_type": "fused", "tp_axial": 1.1, "tp_coronal": 0.9, "tp_sagittal": 1.0}])
    fig4 = multiview.plot_through_plane(tp)
    assert len(fig4.axes[0].patches) == 3
    plt.close("all")


def test_prediction_jobs_of_notebook_03(mv_model):
    _, mv_meta = mv_model
    axial_meta = {"model_config": {}, "planes": ["axial"]}
    metas = {"unet": axial_meta, "unet-mv": mv_meta}
    jobs = inference.views.prediction_jobs(["unet", "unet-mv"], {"unet-mv-axial": {"model": "unet-mv", "views": ["a"]}},
                                     metas, uncertainty=True)
    assert jobs["unet"] == {"model": "unet", "views": None, "uncertainty": False, "flips": False}
    assert jobs["unet-mv"] == {"model": "unet-mv", "views": list(planes.PLANES), "uncertainty": True, "flips": False}
    # one view: no uncertainty map unless flips give it a second member
    assert jobs["unet-mv-axial"]["views"] == ["axial"] and not jobs["unet-mv-axial"]["uncertainty"]
    assert inference.views.prediction_jobs([], {"v": {"model": "unet-mv", "views": ["c"]}}, metas, uncertainty=True,
                                     flips=True)["v"]["uncertainty"]
    with pytest.raises(ValueError, match="learned axial slices only"):
        inference.views.prediction_jobs([], {"v": {"model": "unet", "views": ["axial"]}}, metas)
    with pytest.raises(ValueError, match="name of a model"):
        inference.views.prediction_jobs(["unet"], {"unet": {"model": "unet-mv"}}, metas)
    with pytest.raises(ValueError, match="no model.json for model 'gan'"):
        inference.views.prediction_jobs(["gan"], {}, metas)


# ------------------------------------------------------------------------- the multi-view design study's results


def test_design_summary_is_mean_and_sd_over_seeds(tmp_path):
    path = tmp_path / "design.tsv"
    with pytest.raises(FileNotFoundError, match="python benchmarks/multiview_design.py --seeds 0 1 2"):
        multiview_design.design_summary(path)
    design_results(path)
    summary = multiview_design.design_summary(path)
    assert list(summary.index)[:2] == ["3T", "axial model"] and (summary["n_seeds"] == 3).all()
    assert summary.loc["mv-cond fused mean", "psnr_mean"] == pytest.approx(22.1)
    assert summary.loc["mv-cond fused mean", "psnr_sd"] == pytest.approx(np.std([22.0, 22.1, 22.2], ddof=1))
    glue = multiview_design.design_glue(summary)
    assert glue["mv_psnr_cond"] == "22.10 ± 0.10 dB" and glue["mv_ai_axial"] == "1.70 ± 0.20"
    assert glue["mv_ranking"].startswith("By mean PSNR: three single-plane U-Nets > one U-Net without")
    assert glue["mv_runs"] == "3 seeds, 320 slices per epoch for 3 epochs, 3 held-out subject(s), grid 176x136, 1.2 mm"
    one = tmp_path / "one.tsv"
    design_results(one, seeds=(0,))
    assert multiview_design.design_glue(multiview_design.design_summary(one))["mv_psnr_cond"] == "22.00 dB (one seed)"
    mixed = pd.read_csv(path, sep="\t")
    mixed.loc[0, "grid"] = "224x160, 1.0 mm"
    mixed.to_csv(path, sep="\t", index=False)
    with pytest.raises(ValueError, match="different grid"):
        multiview_design.design_summary(path)
    # results of another simulation (or that predate the column) are refused when the run's version is given
    design_results(path, generator_version=None)
    with pytest.raises(ValueError, match="generator version unrecorded, this run's is 5"):
        multiview_design.design_summary(path, generator_version="5")
    design_results(path, generator_version="5")
    assert multiview_design.design_summary(path, generator_version="5")["n_seeds"].min() == 3
    with pytest.raises(ValueError, match="generator version 5, this run's is 6"):
        multiview_design.design_summary(path, generator_version="6")
