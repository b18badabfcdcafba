"""Preprocessing: normalisation, grid, registration, N4, mask backends, the dataset runner, bad inputs, notebook."""

from __future__ import annotations

import os
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy import ndimage as ndi

from synth7t.data import io as sio
from synth7t import preprocess as pp
from synth7t.data.layout import Subject, discover

from conftest import COARSE


def _quick(**kw):
    base = dict(target_spacing=None, mask_backend="given", qc_figure=False)
    base.update(kw)
    return pp.PreprocessConfig.from_preset("quick", **base)


def _tiny(**kw):
    """Far fewer iterations than ``quick``: for tests of the runner (files, skipping, failures), not of accuracy."""
    base = dict(target_spacing=None, mask_backend="given", qc_figure=False, n4_iterations=(10,), n4_tolerance=1e-3,
                registration={"affine_iterations": (100, 30), "affine_shrink_factors": (4, 2),
                              "affine_smoothing_sigmas": (2, 1), "syn_iterations": (5,), "syn_shrink_factors": (4,),
                              "syn_smoothing_sigmas": (2,), "spacing": None})
    base.update(kw)
    return pp.PreprocessConfig.from_preset("quick", **base)


def _rigid(deg_xyz, t_mm, centre):
    """A rigid map about ``centre`` (world mm)."""
    ax, ay, az = np.radians(deg_xyz)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    m = np.eye(4)
    m[:3, :3] = rz @ ry @ rx
    m[:3, 3] = np.asarray(t_mm) + centre - m[:3, :3] @ centre
    return m


# ------------------------------------------------------------------------------------------- config


def test_presets_and_unknown_keys():
    paper = pp.PreprocessConfig.from_preset("paper")
    assert paper.n4_iterations == (150, 150, 150, 150) and paper.n4_tolerance == 1e-7
    assert paper.n4_fwhm == 0.18 and paper.n4_wiener_noise == 0.2
    assert (paper.clip_low_percentile, paper.clip_high_percentile) == (0.0, 99.0)
    assert pp.PreprocessConfig.from_preset("paper-code").clip_low_percentile == 1.0
    quick = pp.PreprocessConfig.from_preset("quick")
    assert sum(quick.registration.syn_iterations) < sum(paper.registration.syn_iterations)
    assert quick.fingerprint() != paper.fingerprint() and quick.preset == "quick"
    # runtime options do not change the fingerprint
    assert pp.PreprocessConfig.from_preset("paper", qc_figure=False, threads_per_job=3).fingerprint() == paper.fingerprint()
    assert pp.PreprocessConfig.from_dict(json.loads(json.dumps(quick.to_dict()))) == quick
    # the registration is one nested config: a mapping changes the settings it names, the preset keeps the rest
    one = pp.PreprocessConfig.from_preset("quick", registration={"seed": 7})
    assert one.registration == quick.registration.replace(seed=7) and one.registration.spacing == 1.0
    assert one.replace(registration={"spacing": None}).registration.affine_iterations == (500, 250, 50)
    assert pp.PreprocessConfig.from_preset("paper").registration == pp.RegistrationConfig()
    # a record written when the settings were flat reads back at their new place
    flat = {k: v for k, v in quick.to_dict().items() if k != "registration"}
    flat.update(aff_iterations=[9, 3], aff_shrink_factors=[2, 1], aff_smoothing_sigmas=[1, 0], registration_seed=4,
                registration_spacing=1.5)
    old = pp.PreprocessConfig.from_dict(flat)
    assert old.registration.affine_iterations == (9, 3) and old.registration.seed == 4
    assert old.registration.spacing == 1.5 and old.registration.syn_iterations == pp.RegistrationConfig().syn_iterations
    # ... but given as a setting it is an error that says where it went
    with pytest.raises(ValueError, match="registration_spacing is now registration.spacing"):
        pp.PreprocessConfig.from_preset("quick", registration_spacing=1.5)
    with pytest.raises(ValueError, match="unknown RegistrationConfig key.*spacng"):
        pp.PreprocessConfig.from_preset("quick", registration={"spacng": 1.5})
    with pytest.raises(ValueError, match="one value per level"):
        quick.replace(registration={"affine_iterations": (10,)})
    with pytest.raises(ValueError, match="unknown PreprocessConfig key.*n4_iters"):
        pp.PreprocessConfig.from_preset("paper", n4_iters=(1,))
    with pytest.raises(ValueError, match="unknown PreprocessConfig preset"):
        pp.PreprocessConfig.from_preset("fast")
    with pytest.raises(ValueError, match="mask_backend"):
        pp.PreprocessConfig.from_preset("paper", mask_backend="bet")
    with pytest.raises(ValueError, match="divisible"):
        pp.PreprocessConfig.from_preset("paper", grid_inplane=(288, 200))
    with pytest.raises(ValueError, match="clip_low_percentile"):
        pp.PreprocessConfig.from_preset("paper", clip_low_percentile=99.5)


# ------------------------------------------------------------------------------------ normalisation


def test_normalise_matches_the_formula():
    data = np.arange(2 * 3 * 20, dtype=np.float32).reshape(2, 3, 20)
    mask = np.zeros(data.shape, bool)
    mask[:, :, 5:] = True  # the background (z < 5) must not count
    v = data[mask].astype(np.float64)
    out, p = pp.normalise(data, mask)
    lo, hi = v.min(), np.percentile(v, 99)
    expected = np.clip((data - lo) / (hi - lo), 0, 1) * mask
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-6)
    assert p["low"] == pytest.approx(lo) and p["high"] == pytest.approx(hi) and p["n_voxels"] == v.size
    assert out.max() == 1.0 and out[~mask].max() == 0.0
    # the paper's saved parameters: percentiles (1, 99)
    out1, p1 = pp.normalise(data, mask, 1, 99)
    assert p1["low"] == pytest.approx(np.percentile(v, 1))
    np.testing.assert_allclose(out1[mask], np.clip((v - p1["low"]) / (p1["high"] - p1["low"]), 0, 1), atol=1e-6)
    with pytest.raises(pp.PreprocessError, match="constant"):
        pp.normalise(np.ones((4, 4, 4)), np.ones((4, 4, 4), bool))
    with pytest.raises(pp.PreprocessError, match="empty"):
        pp.normalise(data, np.zeros(data.shape, bool))


# -------------------------------------------------------------------------------------------- grid


@pytest.mark.parametrize("space_shape, inplane, margin", [
    ((60, 70, 40), (96, 64), 3),    # grid larger than space: pure padding
    ((80, 120, 50), (96, 64), 0),   # in-plane crop and pad
])
def test_crop_then_uncrop_is_exact(space_shape, inplane, margin):
    rng = np.random.default_rng(0)
    data = rng.random(space_shape).astype(np.float32)
    mask = np.zeros(space_shape, bool)
    mask[10:50, 12:60, 5:30] = True
    aff = np.array([[0.7, 0, 0, -40], [0, 0.7, 0, -60], [0, 0, 0.7, -20], [0, 0, 0, 1.0]])
    box = pp.plan_grid(mask, aff, inplane, margin)
    assert box.shape == (inplane[1], inplane[0], 25 + 2 * margin)
    grid = pp.crop_to_grid(data, box)
    back = pp.uncrop_from_grid(grid, box, fill=-1)
    inside = back != -1
    np.testing.assert_array_equal(back[inside], data[inside])  # exact, no interpolation
    assert inside[mask].all()
    # the grid affine maps grid voxels to the world points of the 7T-space voxels they copy
    gi = np.array([[5, 7, 2], [30, 40, 10]])
    si = gi + np.array(box.start)
    np.testing.assert_allclose(sio.voxel_to_world(box.affine, gi), sio.voxel_to_world(aff, si))
    assert pp.GridBox.from_dict(json.loads(json.dumps(box.to_dict()))).start == box.start
    bottom, top = pp.brain_slices(pp.crop_to_grid(mask, box))
    assert (bottom, top) == (margin, margin + 24)
    with pytest.raises(ValueError, match="grid shape"):
        pp.uncrop_from_grid(data, box)


def test_grid_refuses_to_cut_the_brain():
    mask = np.zeros((60, 120, 20), bool)
    mask[5:55, 2:118, 5:15] = True
    with pytest.raises(pp.PreprocessError, match="anterior-posterior.*increase grid_inplane"):
        pp.plan_grid(mask, np.eye(4), (96, 64))


def test_artefact_slices_on_the_grid():
    aff = np.diag([0.7, 0.7, 0.7, 1.0])
    box = pp.GridBox((-10, -20, 4), (64, 96, 40), (50, 60, 50), aff)
    assert pp.artefacts_on_grid([(10, 14), (0, 2), (60, 70)], aff, box) == [[6, 10]]
    # a 7T file at 1.4 mm resampled to 0.7 mm: one input slice covers two grid slices
    orig = np.diag([1.4, 1.4, 1.4, 1.0])
    orig[:3, 3] = 0.35  # outer voxel edges kept: both grids start at -0.35 mm
    assert pp.artefacts_on_grid([(2, 3)], orig, pp.GridBox((0, 0, 0), (8, 8, 12), (8, 8, 12), aff)) == [[4, 7]]


# ------------------------------------------------------------------------------------- registration


def test_registration_recovers_a_known_rigid_transform(coarse_cohort, tmp_path):
    s = coarse_cohort[0]
    vol = sio.load_volume(s.t7, reorient=True)
    brain = sio.load_volume(s.t7_labels, reorient=True).data > 0
    fixed = vol.data * brain
    centre = sio.voxel_to_world(vol.affine, np.array(ndi.center_of_mass(brain)))[0]
    known = _rigid((3.0, -2.0, 5.0), (4.0, -3.0, 5.0), centre)  # moving(y) = fixed(known @ y)
    moving = pp.resample(fixed, vol.affine, vol.shape, vol.affine, world_map=known)
    reg = pp.register(fixed, vol.affine, moving, vol.affine, tmp_path / "reg_", _quick())
    # where each fixed brain voxel lands in the moving image, read through the transforms exactly:
    # warp images of the moving grid's world coordinates (linear interpolation of a linear function is exact)
    idx = np.indices(vol.shape).reshape(3, -1).T
    coords = sio.voxel_to_world(vol.affine, idx).T.reshape(3, *vol.shape)
    mapped = np.stack([pp.apply_transforms(c, vol.affine, vol.shape, vol.affine, reg["transforms"]) for c in coords])
    pts = np.argwhere(ndi.binary_erosion(brain, iterations=3))
    got = mapped[:, pts[:, 0], pts[:, 1], pts[:, 2]].T
    world = sio.voxel_to_world(vol.affine, pts)
    expected = sio.voxel_to_world(np.linalg.inv(known), world)
    err = np.linalg.norm(got - expected, axis=1)
    voxel = vol.spacing[0]
    assert np.median(err) < 0.5 * voxel and np.percentile(err, 95) < voxel, (np.median(err), np.percentile(err, 95))
    # the affine alone, read as a RAS matrix, is close to the inverse of the known map
    lin = pp.read_affine(reg["affine"])
    err_aff = np.linalg.norm(sio.voxel_to_world(lin, world) - expected, axis=1)
    assert np.percentile(err_aff, 95) < 1.5 * voxel


def test_to_ants_round_trip_keeps_world_coordinates(coarse_cohort):
    img = nib.load(str(coarse_cohort[0].t3))  # stored LIA
    data, aff = img.get_fdata(dtype=np.float32), img.affine
    back, aff2 = pp.from_ants(pp.to_ants(data, aff))
    np.testing.assert_allclose(aff2, aff, atol=1e-4)
    np.testing.assert_array_equal(back, data)


@pytest.mark.parametrize("field", ["bspline", "linear"])
def test_n4_flattens_a_bias_field(field):
    """Both ways of bringing N4's field to the full grid flatten it; the linear one (N4 on every second voxel, its
    log field interpolated) stays within 2 % of ANTs' own B-spline field inside the phantom (measured 0.94 %; the two
    fits see different samples). A field flipped along an axis on its way up breaks that (13 %)."""
    shape = (40, 40, 40)
    zz, yy, xx = np.indices(shape)
    phantom = np.where((xx - 20) ** 2 + (yy - 20) ** 2 + (zz - 20) ** 2 < 15**2, 100.0, 0.0)
    phantom[(xx - 20) ** 2 + (yy - 20) ** 2 + (zz - 20) ** 2 < 7**2] = 60.0
    bias = 1.0 + 0.4 * (xx / 40.0) - 0.2 * (zz / 40.0)
    rng = np.random.default_rng(0)
    img = (phantom * bias + rng.normal(0, 1, shape)).astype(np.float32) + 5
    mask = phantom > 0
    cfg = pp.PreprocessConfig.from_preset("quick", n4_shrink_factor=2)
    out = pp.n4(img, np.eye(4), mask, cfg.replace(n4_field=field))
    outer = phantom == 100
    cv = lambda a: a[outer].std() / a[outer].mean()  # noqa: E731
    assert cv(out) < 0.5 * cv(img)
    if field == "linear":
        ants_field = pp.n4(img, np.eye(4), mask, cfg)
        diff = np.abs(np.log(out[mask] / ants_field[mask])).max()
        assert 1e-4 < diff < 0.02  # not ANTs' own field (a linear path that fell back to it would be), yet close


# ----------------------------------------------------------------------------------- mask backends


@pytest.mark.slow
def test_deepbet_mask_matches_the_ground_truth(coarse_cohort):
    """About 10-20 s on 2 busy cores (deepbet's 256^3 network on CPU)."""
    s = coarse_cohort[0]
    vol = sio.load_volume(s.t7, reorient=True)
    labels = sio.load_volume(s.t7_labels, reorient=True).data > 0
    m = pp.brain_mask(vol.data, vol.affine, "deepbet")
    dice = 2 * (m & labels).sum() / (m.sum() + labels.sum())
    assert dice > 0.85, dice



@pytest.mark.slow
def test_deepbet_mask_is_deepbets_own_mask():
    """synth7t's deepbet glue (no copies, quantiles by selection) gives deepbet's ``run`` mask voxel for voxel on a
    1 mm head with skull (the MNI 2009c T1), and a head in another orientation goes through ``run`` itself. About
    10 s on 2 cores (deepbet's 256^3 network, three times). A quantile off by one rank or a box without deepbet's
    margin changes voxels at the brain's edge."""
    import torch
    from synth7t.data.templates import template_sources
    from synth7t.preprocess.steps import _deepbet_model, _torch_quantile, deepbet_mask

    v = torch.linspace(0, 1, 2_000_003).pow(2)[torch.randperm(2_000_003, generator=torch.Generator().manual_seed(0))]
    for q in (0.005, 0.5, 0.995):
        assert _torch_quantile(v, q) == torch.quantile(v, q)
    vol = sio.load_volume(template_sources()["t1"], reorient=True)
    with torch.no_grad():
        _, ref, _ = _deepbet_model().run(nib.Nifti1Image(vol.data, vol.affine))
    ref = np.asarray(ref.dataobj) > 0
    ours = deepbet_mask(vol.data, vol.affine)
    assert ours.dtype == bool and 1000 < ref.sum() / 1000 < 2000  # mL: a brain
    assert np.array_equal(ours, ref), int((ours != ref).sum())
    flip = np.diag([-1.0, 1, 1, 1])  # left-right flipped voxel order (LAS): deepbet's run reorients it
    flip[0, 3] = vol.data.shape[0] - 1
    las = deepbet_mask(vol.data[::-1].copy(), vol.affine @ flip)
    assert np.array_equal(las[::-1], ref)

def test_mask_backends(coarse_cohort, tmp_path, monkeypatch):
    s = coarse_cohort[0]
    vol = sio.load_volume(s.t7, reorient=True)
    labels = sio.load_volume(s.t7_labels, reorient=True).data > 0
    # a given mask on another grid (stored LIA at 2 mm) is resampled by nearest neighbour
    lia = nib.as_closest_canonical(nib.Nifti1Image(labels.astype(np.uint8), vol.affine))
    path = sio.save_volume(tmp_path / "m.nii.gz", np.asarray(lia.dataobj), lia.affine)
    np.testing.assert_array_equal(pp.brain_mask(vol.data, vol.affine, "given", given=path), labels)
    with pytest.raises(pp.PreprocessError, match="no _desc-brain_mask file"):
        pp.brain_mask(vol.data, vol.affine, "given", given=None, what="sub-x 7T")
    empty = sio.save_volume(tmp_path / "e.nii.gz", np.zeros(vol.shape, np.uint8), vol.affine)
    with pytest.raises(pp.PreprocessError, match="empty"):
        pp.brain_mask(vol.data, vol.affine, "given", given=empty)
    monkeypatch.setattr("shutil.which", lambda name: None)
    assert not pp.synthstrip_available()
    with pytest.raises(RuntimeError, match="mri_synthstrip.*FreeSurfer"):
        pp.brain_mask(vol.data, vol.affine, "synthstrip")


# ------------------------------------------------------------------------------------ many subjects


def _copy_with_masks(cohort, root: Path, keys) -> Path:
    """Copy part of the coarse cohort and add brain masks (the 7T ground truth; the 3T one resampled to the 3T
    grid through world coordinates, i.e. off by the simulated misalignment, and dilated to cover it)."""
    src = cohort.root
    root.mkdir(parents=True)
    shutil.copy(src / "participants.tsv", root / "participants.tsv")
    art = pd.read_csv(src / "artefacts.tsv", sep="\t", dtype=str)
    art[art["participant_id"].isin(keys)].to_csv(root / "artefacts.tsv", sep="\t", index=False)
    for k in keys:
        shutil.copytree(src / k, root / k)
        anat = root / k / "anat"
        lab = sio.load_volume(anat / f"{k}_acq-7T_dseg.nii.gz", dtype=None)
        brain = np.asarray(lab.data) > 0
        sio.save_volume(anat / f"{k}_acq-7T_desc-brain_mask.nii.gz", brain.astype(np.uint8), lab.affine)
        t3 = nib.load(str(anat / f"{k}_acq-3T_T1w.nii.gz"))
        m3 = pp.resample(brain.astype(np.uint8), lab.affine, t3.shape, t3.affine, order=0) > 0
        m3 = ndi.binary_dilation(m3, iterations=2)
        sio.save_volume(anat / f"{k}_acq-3T_desc-brain_mask.nii.gz", m3.astype(np.uint8), t3.affine)
    return root


def test_dataset_run_skip_and_failure_isolation(coarse_cohort, tmp_path):
    keys = ["sub-001", "sub-002", "sub-003", "sub-004"]
    root = _copy_with_masks(coarse_cohort, tmp_path / "ds", keys)
    t3 = nib.load(str(root / "sub-002/anat/sub-002_acq-3T_T1w.nii.gz"))
    nib.save(nib.Nifti1Image(np.full(t3.shape, 7, np.int16), t3.affine), str(root / "sub-002/anat/sub-002_acq-3T_T1w.nii.gz"))
    (root / "sub-004/anat/sub-004_acq-7T_T1w.nii.gz").unlink()  # a 3T without its 7T
    cfg = _tiny()
    summary = pp.preprocess_dataset(root, cfg, n_jobs=2, progress=False)
    status = dict(zip(summary["key"], summary["status"]))
    assert status == {"sub-001": "done", "sub-002": "failed", "sub-003": "done", "sub-004": "failed"}, summary
    reasons = dict(zip(summary["key"], summary["reason"]))
    assert "constant" in reasons["sub-002"] and "sub-002_acq-3T_T1w" in reasons["sub-002"]
    assert "no 7T partner" in reasons["sub-004"] and "preprocess_lone_3t" in reasons["sub-004"]
    out = pp.derivatives_dir(root)
    assert json.loads((out / "sub-002" / "sub-002_desc-preproc_error.json").read_text())["status"] == "failed"
    assert pp.PreprocessConfig.from_dict({k: v for k, v in json.loads((out / "config.json").read_text()).items()
                                if k != "fingerprint"}) == cfg
    assert (out / "summary.tsv").is_file() and (out / "qc.tsv").is_file()

    # the outputs of a finished subject
    paths = pp.output_paths(out, "sub-001")
    for k in ("t3", "t7", "mask", "labels", "affine", "warp", "inverse_warp", "json"):
        assert paths[k].is_file(), k
    rec = json.loads(paths["json"].read_text())
    t7 = nib.load(str(paths["t7"]))
    assert t7.shape == (224, 288, rec["grid"]["shape"][2])
    a3 = nib.load(str(paths["t3"])).get_fdata()
    assert 0 <= a3.min() and a3.max() <= 1
    assert rec["normalisation"]["t3"]["high_percentile"] == 99.0
    assert rec["bottom_slice"] == cfg.axial_margin and rec["top_slice"] == t7.shape[2] - 1 - cfg.axial_margin
    assert rec["qc"]["correlation"] > 0.7, rec["qc"]
    # the grid maps back onto 7T space exactly
    box = pp.GridBox.from_dict(rec["grid"])
    mask7 = sio.load_volume(root / "sub-001/anat/sub-001_acq-7T_desc-brain_mask.nii.gz", reorient=True).data > 0
    back = pp.uncrop_from_grid(np.asarray(nib.load(str(paths["mask"])).dataobj), box)
    np.testing.assert_array_equal(back > 0, mask7)
    lab_back = pp.uncrop_from_grid(np.asarray(nib.load(str(paths["labels"])).dataobj), box)
    np.testing.assert_array_equal(lab_back, sio.load_volume(coarse_cohort[0].t7_labels, reorient=True, dtype=None).data)
    # artefact ranges move with the grid (no resampling here: a shift by the box start)
    for k in ("sub-001", "sub-003"):
        r = json.loads(pp.output_paths(out, k)["json"].read_text())
        shifted = [[a - r["grid"]["start"][2], b - r["grid"]["start"][2]] for a, b in r["artefact_slices_input"]]
        assert r["excluded_slices"] == [[max(a, 0), min(b, r["grid"]["shape"][2] - 1)] for a, b in shifted]
    qc = pp.qc_table(out)
    assert list(qc["key"]) == ["sub-001", "sub-003"] and {"outlier", "z_nmi", "mask_ml"} <= set(qc.columns)

    # a rerun skips the finished subjects and reports the broken ones again; the CLI does the same
    again = pp.preprocess_dataset(root, cfg, n_jobs=1, progress=False)
    assert dict(zip(again["key"], again["status"])) == {"sub-001": "skipped", "sub-002": "failed",
                                                         "sub-003": "skipped", "sub-004": "failed"}
    # a changed input makes its finished subject stale: only that subject runs again
    t3_path = root / "sub-003/anat/sub-003_acq-3T_T1w.nii.gz"
    os.utime(t3_path, ns=(t3_path.stat().st_atime_ns, t3_path.stat().st_mtime_ns + 10**9))
    third = pp.preprocess_dataset(root, cfg, n_jobs=1, progress=False, subjects=["sub-001", "sub-003"])
    assert dict(zip(third["key"], third["status"])) == {"sub-001": "skipped", "sub-003": "done"}
    from synth7t.cli import main

    assert main(["preprocess", str(root), "--preset", "quick", "--subjects", "sub-001",
                              "--set", "target_spacing=null", "--set", "mask_backend=given", "--set", "qc_figure=false",
                              "--set", "n4_iterations=[10]", "--set", "n4_tolerance=0.001",
                              "--set", "registration.affine_iterations=[100,30]",
                              "--set", "registration.affine_shrink_factors=[4,2]",
                              "--set", "registration.affine_smoothing_sigmas=[2,1]",
                              "--set", "registration.syn_iterations=[5]", "--set", "registration.syn_shrink_factors=[4]",
                              "--set", "registration.syn_smoothing_sigmas=[2]",
                              "--set", "registration.spacing=null"]) == 0

    # a lone 3T through the generalised affine (both recentring modes) and through the template
    ga = pp.estimate_generalised_affine(out)
    assert ga.n_pairs == 2 and np.allclose(ga.linear, np.eye(3), atol=0.1)
    assert not pp.generalised_affine_table(out).empty
    s1 = discover(root, require_7t=False, on_error="skip")["sub-001"]
    for mode in ("always", "if_outside"):
        lone = pp.preprocess_lone_3t(s1.t3, tmp_path / f"lone-{mode}", cfg, generalised=ga, recentre=mode,
                                     t3_mask=s1.t3_mask)
        img = nib.load(lone["files"]["t3"])
        assert img.shape[:2] == (224, 288) and lone["top_slice"] > lone["bottom_slice"]
        assert 0 <= img.get_fdata().min() and img.get_fdata().max() <= 1
    with pytest.raises(pp.PreprocessError, match="generalised affine"):
        pp.preprocess_lone_3t(s1.t3, tmp_path / "x", cfg, generalised=None, t3_mask=s1.t3_mask)


def test_crop_to_brain_keeps_every_voxel_where_it_was():
    """A registration sees only the brain's box plus a margin (clipped at the array's edge); each kept voxel keeps its
    world position, so transforms estimated on the box apply to the whole image."""
    rng = np.random.default_rng(1)
    data = rng.random((40, 50, 30)).astype(np.float32)
    mask = np.zeros(data.shape, bool)
    mask[3:20, 10:45, 12:28] = True
    aff = np.array([[0.0, -1.2, 0, 30], [1.2, 0.0, 0, -50], [0, 0, 1.2, -20], [0, 0, 0, 1.0]])  # turned axes
    out, out_aff = pp.crop_to_brain(data, mask, aff, margin_mm=5.0)  # 5 mm: 5 voxels of 1.2 mm
    assert out.shape == (3 + 17 + 5, 35 + 10, 30 - 7)  # clipped at 0 (x), at 50 (y) and at 30 (z)
    for idx in ([0, 0, 0], [7, 20, 9], list(np.array(out.shape) - 1)):
        start = np.array([0, 5, 7])
        np.testing.assert_allclose(sio.voxel_to_world(out_aff, np.array(idx)),
                                   sio.voxel_to_world(aff, np.array(idx) + start))
        assert out[tuple(idx)] == data[tuple(np.array(idx) + start)]
    for m, margin in ((np.zeros_like(mask), 5.0), (mask, None)):  # nothing to crop to, or no crop: the input back
        same, same_aff = pp.crop_to_brain(data, m, aff, margin)
        assert same is data and np.array_equal(same_aff, aff)


@pytest.mark.slow
def test_lone_3t_template(coarse_cohort, tmp_path):
    """About 20 s on 2 busy cores (a rigid registration to the 1 mm MNI template)."""
    root = _copy_with_masks(coarse_cohort, tmp_path / "ds", ["sub-001"])
    s = discover(root)["sub-001"]
    rec = pp.preprocess_lone_3t(s.t3, tmp_path / "lone", _tiny(registration={**_tiny().registration.to_dict(), "spacing": 2.0}), method="template",
                                t3_mask=s.t3_mask)
    assert rec["space"] == "MNI152NLin2009cSym"
    a = nib.load(rec["files"]["t3"])
    assert a.shape[:2] == (224, 288)
    # the brain now sits on the template's: its centre is near the MNI brain's centre (a few mm)
    m = np.asarray(nib.load(rec["files"]["mask"]).dataobj) > 0
    c = sio.voxel_to_world(a.affine, np.array(ndi.center_of_mass(m)))[0]
    assert np.linalg.norm(c - np.array([0.0, -18.0, 10.0])) < 20, c


def test_the_lone_preset_finds_a_known_pose_on_a_real_sized_scan(tmp_path):
    """``synth7t predict``'s lone preset (N4 on every 6th voxel, the rigid template alignment on both brains at 2 mm
    for 100/50/10 iterations) on a 1 mm scan with skull whose pose is known (the MNI T1 turned by 7 degrees,
    tests/batch_data.py): the alignment puts the corners of the brain's box within 0.3 mm of the truth (measured
    0.23 mm; the quick preset's 0.37 mm, the same levels at 3 mm 0.34 mm, the 8 and 4 mm levels alone 0.46 mm;
    benchmarks/lone_settings.py). About 15 s on one thread."""
    from batch_data import realistic_pose_error_mm, realistic_scan

    cfg = pp.PreprocessConfig.from_preset("lone", target_spacing=1.2, qc_figure=False)
    assert cfg.n4_shrink_factor == 6 and cfg.n4_field == "linear" and cfg.registration.spacing == 2.0
    rec = pp.preprocess_lone_3t(realistic_scan(tmp_path / "sub-01_acq-3T_T1w.nii.gz"), tmp_path / "out", cfg,
                                method="template")
    assert realistic_pose_error_mm(rec["alignment"]["world_map"]) < 0.3
    assert {f["check"]: f["outcome"] for f in rec["input_checks"]}["alignment"] == "ok"


# -------------------------------------------------------------------------------------- bad inputs


def _subject(tmp_path, t3=None, t7=None, t3_mask=None, t7_mask=None):
    return Subject("sub-x", None, t3=t3, t7=t7, t3_mask=t3_mask, t7_mask=t7_mask)


@pytest.mark.parametrize("case, match", [
    ("no_7t", "no 7T partner"),
    ("two_d", "2D image"),
    ("constant", "constant"),
    ("empty_mask", "empty"),
    ("not_a_brain", "outside the plausible"),
])
def test_bad_inputs_give_clear_errors(case, match, coarse_cohort, tmp_path):
    s = coarse_cohort[0]
    aff = np.diag([1.0, 1.0, 1.0, 1.0])
    t3, t7, m3, m7 = s.t3, s.t7, None, None
    if case == "two_d":
        t7 = sio.save_volume(tmp_path / "flat.nii.gz", np.random.default_rng(0).random((40, 50, 1)), aff)
    elif case == "constant":
        t7 = sio.save_volume(tmp_path / "const.nii.gz", np.full((30, 30, 30), 3.0), aff)
    elif case == "empty_mask":
        m7 = sio.save_volume(tmp_path / "m.nii.gz", np.zeros(nib.load(str(s.t7)).shape, np.uint8),
                             nib.load(str(s.t7)).affine)
    elif case == "not_a_brain":  # a small phantom: a "brain mask" of a few mL is no brain
        t7 = sio.save_volume(tmp_path / "ball.nii.gz", np.random.default_rng(0).random((30, 30, 30)), aff)
        m7 = sio.save_volume(tmp_path / "ballmask.nii.gz", np.ones((30, 30, 30), np.uint8), aff)
    if case == "no_7t":
        t7 = None
    with pytest.raises(pp.PreprocessError, match=match) as info:
        pp.preprocess_subject(_subject(tmp_path, t3, t7, m3, m7), tmp_path / "out", _tiny())
    assert "sub-x" in str(info.value)


# ----------------------------------------------------------------------------------------- notebook


@pytest.mark.slow
def test_notebook_smoke_run(tmp_path):
    """About 1.5 min alone on 2 cores (deepbet on 6 images, 2 registrations, 2 lone-3T alignments)."""
    import nbformat
    import papermill as pm

    from synth7t.simulate import demo

    data = tmp_path / "data"
    demo.generate_cohort(data, 2, seed=0, config=demo.DemoConfig(**COARSE), n_jobs=1, progress=False)
    nb_in = Path(__file__).resolve().parents[1] / "notebooks" / "01_preprocess.ipynb"
    out = tmp_path / "01_preprocess.ipynb"
    params = dict(run_name="smoke", runs_dir=str(tmp_path / "runs"), data_dir=str(data), preset="quick", n_jobs=2,
                  target_spacing=None, lone_3t_methods=["generalised", "template"])
    pm.execute_notebook(str(nb_in), str(out), parameters=params, cwd=str(tmp_path), progress_bar=False,
                        kernel_name="python3")
    nb = nbformat.read(out, as_version=4)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if "image/png" in o.get("data", {})]
    assert len(images) >= 3
    assert "simulated" in nb.cells[0].source.lower()
    run_dir = tmp_path / "runs" / "smoke" / "01_preprocess"
    for f in ("config.json", "summary.tsv", "qc.tsv", "grid.tsv", "generalised_affine.json"):
        assert (run_dir / f).is_file(), f
    summary = pd.read_csv(run_dir / "summary.tsv", sep="\t")
    assert set(summary["status"]) == {"done"}
    assert (data / "derivatives" / "synth7t-preproc" / "sub-001" / "anat" / "sub-001_desc-preproc.json").is_file()
