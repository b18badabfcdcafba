import dataclasses
import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from scipy import ndimage as ndi

from synth7t.simulate import demo, checks, measure
from synth7t.data import layout
from synth7t.evaluation import regional
from conftest import COARSE

REQUIRED_LABELS = (17, 53, 18, 54, 4, 43, 3, 42, 2, 41, 8, 47)
CFG = demo.DemoConfig(**COARSE)


def test_parameters_are_deterministic_per_subject():
    a = demo.draw_subject(5, 3)
    assert a == demo.draw_subject(5, 3)
    assert a != demo.draw_subject(6, 3)
    assert a.participant_id == "sub-003"
    # every block of 8 subjects holds each diagnosis group
    dx = [demo.draw_subject(0, i).diagnosis for i in range(1, 9)]
    assert sorted(dx) == sorted(["CN", "CN", "CN", "SCD", "MCI", "MCI", "AD", "AD"])


def test_full_resolution_grids_match_the_paper_voxels():
    (shape7, aff7), (shape3, aff3) = demo.demo_grids()
    assert np.allclose(np.linalg.norm(aff7[:3, :3], axis=0), 0.7)
    assert np.allclose(np.linalg.norm(aff3[:3, :3], axis=0), 1.0)
    # the 7T field of view covers the brain with room for the paper's 288 x 224 axial crop
    assert shape7[0] * 0.7 >= 150 and shape7[1] * 0.7 >= 190 and shape7[2] * 0.7 >= 160


def test_simulation_is_deterministic():
    p = demo.draw_subject(1, 1, CFG)
    a, b = demo.simulate_subject(p, CFG), demo.simulate_subject(p, CFG)
    for k in ("t7", "t3", "labels"):
        np.testing.assert_array_equal(a[k], b[k])
    assert a["artefact_slices"] == b["artefact_slices"]


def _volumes(sim, v):
    lab = sim["labels"]
    return {k: float((lab == k).sum()) * v**3 for k in (17, 18, 53, 54, 4, 43)}


def test_atrophy_follows_diagnosis_on_the_same_anatomy():
    vols = {}
    for dx in ("CN", "MCI", "AD"):
        p = demo.draw_subject(2, 4, CFG, diagnosis=dx, age=70)
        vols[dx] = _volumes(demo.simulate_subject(p, CFG), CFG.voxel_7t)
    for k in (17, 18, 53, 54):  # hippocampus and amygdala shrink
        assert vols["AD"][k] < vols["MCI"][k] < vols["CN"][k]
    for k in (4, 43):  # lateral ventricles widen
        assert vols["AD"][k] > vols["MCI"][k] > vols["CN"][k]
    assert vols["AD"][17] < 0.85 * vols["CN"][17]


def test_cohort_files_layout_and_metadata(coarse_cohort):
    ds = coarse_cohort
    assert len(ds) == 4 and [s.participant_id for s in ds] == [f"sub-00{i}" for i in range(1, 5)]
    root = ds.root
    desc = json.loads((root / "dataset_description.json").read_text())
    assert "Simulated" in desc["Name"] or "simulated" in desc["Name"]
    assert "not real" in desc["Notice"]
    for s in ds:
        t7, t3, lab = (nib.load(str(p)) for p in (s.t7, s.t3, s.t7_labels))
        assert np.allclose(t7.header.get_zooms(), COARSE["voxel_7t"])
        assert np.allclose(t3.header.get_zooms(), COARSE["voxel_3t"])
        assert nib.aff2axcodes(t7.affine) == ("R", "A", "S")
        assert nib.aff2axcodes(t3.affine) == ("L", "I", "A")  # FreeSurfer-conformed orientation
        assert lab.shape == t7.shape and np.allclose(lab.affine, t7.affine)
        present = set(np.unique(np.asarray(lab.dataobj)).tolist())
        assert set(REQUIRED_LABELS) <= present
        m7, m3 = (nib.load(str(p)) for p in (s.t7_mask, s.t3_mask))
        vol7 = np.asarray(m7.dataobj).sum() * np.prod(m7.header.get_zooms())
        vol3 = np.asarray(m3.dataobj).sum() * np.prod(m3.header.get_zooms())
        assert 1.2e6 < vol7 < 2.8e6 and abs(vol3 / vol7 - 1) < 0.1  # mm³ (MNI-sized brains), the same in both members
        side = json.loads(s.t7.with_name(s.t7.name.replace(".nii.gz", ".json")).read_text())
        assert side["Simulated"] is True
        assert 40 <= s.age <= 90 and s.sex in ("F", "M") and s.diagnosis in layout.DIAGNOSES
    lut = pd.read_csv(root / "dseg.tsv", sep="\t")
    assert set(REQUIRED_LABELS) <= set(lut["index"])


def test_misalignment_between_3t_and_7t(coarse_cohort):
    from synth7t.data import io as sio

    s = coarse_cohort[0]
    t3 = nib.as_closest_canonical(nib.load(str(s.t3)))
    t7 = nib.load(str(s.t7))
    # centres of mass of the head differ by the simulated pose (mm), but not by much
    def com(img):
        d = np.asarray(img.dataobj, np.float32)
        return sio.voxel_to_world(img.affine, np.argwhere(d > np.percentile(d[d > 0], 40)).mean(0))[0]

    shift = np.linalg.norm(com(t3) - com(t7))
    assert 0.3 < shift < 15


def test_artefact_table_matches_images(coarse_cohort):
    ds = coarse_cohort
    art = pd.read_csv(ds.root / "artefacts.tsv", sep="\t")
    params = {s.key: demo.draw_subject(3, int(s.participant_id[-3:]), CFG) for s in ds}
    with_loss = [s for s in ds if params[s.key].artefact]
    without = [s for s in ds if not params[s.key].artefact]
    assert with_loss and without, "seed 3 must give both kinds of subject"
    assert set(art["participant_id"]) == {s.participant_id for s in ds if s.artefact_slices}
    assert set(art["note"]) <= {"simulated cerebellar signal loss", "simulated motion (ghosting and blur)"}

    def cerebellum_ratio(s):
        t7 = np.asarray(nib.load(str(s.t7)).dataobj, np.float32)
        lab = np.asarray(nib.load(str(s.t7_labels)).dataobj)
        cb = np.isin(lab, demo.CEREBELLUM_LABELS)
        wm = np.isin(lab, (2, 41))
        return t7[cb].mean() / t7[wm].mean()

    assert max(cerebellum_ratio(s) for s in with_loss) < min(cerebellum_ratio(s) for s in without)
    # the signal-loss slices are exactly where the simulated loss inside the brain exceeds the threshold
    s = with_loss[0]
    sim = demo.simulate_subject(params[s.key], CFG)
    assert sim["artefact_slices"] == s.artefact_slices
    brain = sim["labels"] > 0
    listed = {k for a, b, note in sim["artefacts"] if "signal loss" in note for k in range(a, b + 1)}
    for k in range(sim["loss"].shape[2]):
        hit = bool(np.any(sim["loss"][:, :, k][brain[:, :, k]] > 0.15))
        assert hit == (k in listed)
    # without the artefact flags the same subject has no listed slices and no loss
    clean = demo.simulate_subject(dataclasses.replace(params[s.key], artefact=False, motion=False), CFG)
    assert clean["artefact_slices"] == [] and not clean["loss"].any()


def test_motion_corrupts_only_its_listed_slab():
    p = dataclasses.replace(demo.draw_subject(1, 1, CFG), artefact=False, motion=False)
    clean = demo.simulate_subject(p, CFG)
    moved = demo.simulate_subject(dataclasses.replace(p, motion=True), CFG)
    (a, b, note), = moved["artefacts"]
    assert "motion" in note and 0 < a <= b < clean["t7"].shape[2] - 1
    differs = np.flatnonzero(np.abs(moved["t7"] - clean["t7"]).max(axis=(0, 1)) > 0.05)
    assert differs.min() >= a and differs.max() <= b and len(differs) > 0.5 * (b - a + 1)
    np.testing.assert_array_equal(moved["t3"], clean["t3"])  # the 3T is untouched


def test_explicit_3t_settings_win_over_the_derived_ones():
    assert demo.DemoConfig(psf_3t_mm=0.5, noise_3t=0.01).psf_3t() == 0.5
    assert demo.DemoConfig(psf_3t_mm=0.5, noise_3t=0.01).noise_3t_level() == 0.01
    with pytest.raises(ValueError, match="noise_3t"):
        demo.DemoConfig(noise_3t=-1)


@pytest.fixture(scope="module")
def measured(coarse_cohort):
    """Noise, SNR, CNR and edge width of every member of the coarse cohort (4 subjects), measured on its images."""
    return measure.measure_cohort(coarse_cohort)


#: Tolerances of the measured proportions (relative, mean over the cohort's subjects). Every subject draws its own
#: gain per member (SD 6 %) and a 3T bias field, which move one subject's SNR ratio by about 8 % (the cohort mean of
#: 4 subjects by about 4 %); the CNR also carries the 7T's per-subject grey darkening (SD 0.02, about 8 % of the
#: contrast) and the partial volume of the cortex, more of it in the blurrier 3T. Measured on the coarse cohort: SNR
#: per voxel 7T/3T -4 % and CNR +1 % of target; per member SNR -4 to -6 %, CNR +15 to +17 %.
SNR_TOL, CNR_TOL = 0.10, 0.15
MEMBER_SNR_TOL, MEMBER_CNR_TOL = 0.15, 0.25


def test_3t_loses_snr_and_cnr_in_the_published_proportions_measured_on_the_images(measured):
    """The noise SD in white matter, the SNR and the grey/white CNR of each member, measured on the generated
    images with the true labels, against the published proportions (DemoConfig.ratios) within the stated
    tolerances: per voxel the 7T's SNR and CNR are (7/3)^1.65 x the voxel-volume ratio those of the 3T."""
    cfg = demo.DemoConfig(**COARSE)
    assert len(measured) == 8 and set(measured["member"]) == {"7T", "3T"}
    assert (measured[["noise_sd", "snr", "cnr", "edge_fwhm_mm"]] > 0).all().all()
    ratios = measure.measured_ratios(measured, cfg).groupby("quantity")[["measured", "target"]].mean()
    print(ratios.round(3))
    for q, tol in (("snr_per_voxel_7t_over_3t", SNR_TOL), ("snr_per_volume_7t_over_3t", SNR_TOL),
                   ("cnr_per_voxel_7t_over_3t", CNR_TOL)):
        assert ratios.loc[q, "measured"] == pytest.approx(ratios.loc[q, "target"], rel=tol), q
    # the targets are the published proportions: the voxels of the paper's ratio and the B0^1.65 law
    assert ratios.loc["snr_per_volume_7t_over_3t", "target"] == pytest.approx((7 / 3) ** 1.65, rel=1e-6)
    members = measure.member_table(measured, cfg).set_index(["member", "quantity"])
    print(members.round(3))
    for member in ("7T", "3T"):
        assert members.loc[(member, "snr"), "relative_error"] == pytest.approx(0, abs=MEMBER_SNR_TOL), member
        assert members.loc[(member, "cnr"), "relative_error"] == pytest.approx(0, abs=MEMBER_CNR_TOL), member
    table = checks.ratio_table(measured, cfg)
    assert (table["n_subjects"] == 4).all()
    np.testing.assert_allclose(table["simulated"], ratios.loc[[
        "resolution_fwhm_3t_over_7t", "snr_per_volume_7t_over_3t", "snr_per_voxel_7t_over_3t",
        "cnr_per_voxel_7t_over_3t"], "measured"])


def test_3t_edge_is_wider_than_the_7t_edge_by_the_published_ratio(measured):
    """The edge-spread FWHM at the ventricle wall, on the coarse cohort's 1.6 / 2.3 mm grids: wider in every
    subject's 3T than in its 7T, and on average 1/0.7 times within 15 % (measured 1.42; sub-003 1.33, the lowest).
    With generator version 4 (a sampled Gaussian kernel, a 1.21 mm source) the mean was 1.28 and this failed; so it
    does with the 3T's extra blur halved (1.04)."""
    r = measure.measured_ratios(measured, demo.DemoConfig(**COARSE))
    r = r[r["quantity"] == "resolution_fwhm_3t_over_7t"]
    print(r[["key", "measured", "target"]].round(3).to_string())
    assert (r["measured"] > 1.2).all(), r
    assert r["measured"].mean() == pytest.approx(r["target"].iloc[0], rel=0.15)


@pytest.mark.slow
def test_3t_edge_is_wider_by_the_published_ratio(full_size_cohort):
    """The effective resolution at the paper's voxels (7T 0.7 mm, 3T 1 mm): the 3T's edge-spread FWHM at the
    ventricle wall over the 7T's, against 1/0.7 within 15 % (measured: 1.41 on seed 0; with the sampled kernel and
    the 1.21 mm source of generator version 4 it was 1.06, and this test failed)."""
    measured = measure.measure_cohort(full_size_cohort)
    r = measure.measured_ratios(measured, demo.DemoConfig())
    r = r[r["quantity"] == "resolution_fwhm_3t_over_7t"]
    print(measured.round(3).to_string())
    assert r["measured"].mean() == pytest.approx(r["target"].iloc[0], rel=0.15)


def test_edge_and_noise_measurements_recover_known_values():
    """The estimators on a phantom with known answers: a sphere of intensity 1 in 0.2 at 0.7 mm voxels, blurred by a
    Gaussian of FWHM 2.0 mm, with Gaussian noise of SD 0.05: the edge FWHM within 5 %, the noise SD within 5 %."""
    v, fwhm, sd = 0.7, 2.0, 0.05
    n = 80
    ii, jj, kk = np.meshgrid(*[(np.arange(n) - n / 2) * v] * 3, indexing="ij")
    r = np.sqrt(ii ** 2 + jj ** 2 + kk ** 2)
    inside = r < 18.0
    img = ndi.gaussian_filter(np.where(inside, 1.0, 0.2), fwhm / 2.3548 / v)
    img = img + np.random.default_rng(0).normal(0, sd, img.shape)
    dist = r - 18.0  # signed distance to the sphere's surface, negative inside
    near = np.abs(dist) <= 4.0
    assert measure.edge_fwhm(dist[near], img[near]) == pytest.approx(fwhm, rel=0.05)
    core = r < 10.0
    assert measure.noise_sd(img, core) == pytest.approx(sd, rel=0.05)
    with pytest.raises(ValueError, match="one shape"):
        measure.noise_sd(img, core[:-1])


def test_rerun_skips_finished_subjects(coarse_cohort, tmp_path):
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(coarse_cohort.root, root)
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*.nii.gz")}
    demo.generate_cohort(root, 4, seed=3, config=CFG, n_jobs=1, progress=False)
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*.nii.gz")} == before
    # a subject with a missing file is regenerated, the others are not
    victim = root / "sub-002" / "anat" / "sub-002_acq-3T_T1w.nii.gz"
    victim.unlink()
    demo.generate_cohort(root, 4, seed=3, config=CFG, n_jobs=1, progress=False)
    assert victim.exists()
    after = {p: p.stat().st_mtime_ns for p in root.rglob("*.nii.gz") if "sub-002" not in str(p)}
    assert after == {p: t for p, t in before.items() if "sub-002" not in str(p)}
    # shrinking the cohort removes the simulated subjects beyond n
    ds = demo.generate_cohort(root, 2, seed=3, config=CFG, n_jobs=1, progress=False)
    assert len(ds) == 2 and not (root / "sub-004").exists()


def test_bad_arguments():
    with pytest.raises(ValueError, match="n_subjects must be a positive integer"):
        demo.generate_cohort("/tmp/never", 0)
    with pytest.raises(ValueError, match="voxel_7t"):
        demo.DemoConfig(voxel_7t=0.0)
    with pytest.raises(ValueError, match="artefact_fraction"):
        demo.DemoConfig(artefact_fraction=2)


def test_ground_truth_volumes_table(coarse_cohort):
    vols = checks.ground_truth_volumes(coarse_cohort)
    assert len(vols) == 4 and (vols["Left-Hippocampus"] > 1000).all()
    assert {"participant_id", "age", "sex", "diagnosis", "Right-Lateral-Ventricle"} <= set(vols.columns)


def test_aligned_3t_lands_on_the_7t_through_the_known_pose(coarse_cohort):
    from scipy import ndimage as ndi

    s = list(coarse_cohort)[0]
    t3, aff = checks.aligned_3t(s)
    t7 = nib.load(str(s.t7))
    np.testing.assert_allclose(aff, t7.affine)
    t7 = np.asarray(t7.dataobj, np.float32)
    brain = np.asarray(nib.load(str(s.t7_mask)).dataobj) > 0
    r0 = np.corrcoef(t3[brain], t7[brain])[0, 1]
    assert r0 > 0.85
    for shift in ((1, 0, 0), (0, 1, 0), (0, 0, 1), (-1, 0, 0)):  # one voxel off is worse in every direction
        assert np.corrcoef(ndi.shift(t3, shift, order=1)[brain], t7[brain])[0, 1] < r0


def test_truth_dice_leaves_out_artefact_slices_and_margins_compare_members(tmp_path):
    from synth7t.data import io as sio

    truth = np.zeros((6, 6, 6), np.uint8)
    truth[1:5, 1:5, 1:5] = 18  # left amygdala
    good = truth.copy()
    bad = truth.copy()
    bad[:, :, 4] = 0  # wrong only in slice 4
    aff = np.eye(4)
    paths = {}
    for name, lab in (("truth", truth), ("7T", good), ("3T", bad)):
        paths[name] = tmp_path / f"{name}.nii.gz"
        sio.save_volume(paths[name], lab, aff, dtype=np.uint8)
    segs = {("s1", "7T"): paths["7T"], ("s1", "3T"): paths["3T"]}
    scores = regional.truth_dice(segs, {"s1": paths["truth"]})
    assert scores.set_index("image_type").loc["7T", "mean_dice"] == 1.0
    assert scores.set_index("image_type").loc["3T", "amygdala"] == pytest.approx(2 * 48 / (64 + 48))
    cut = regional.truth_dice(segs, {"s1": paths["truth"]}, excluded={"s1": [(4, 5)]})
    assert (cut["mean_dice"] == 1.0).all() and (cut["n_slices"] == 4).all()
    margins = regional.premise_margins(scores)
    assert margins.loc["s1", "amygdala"] > 0 and bool(margins.loc["s1", "holds"]) is False  # no hippocampus: NaN
    with pytest.raises(ValueError, match="no 3T"):
        regional.premise_margins(scores[scores.image_type == "7T"])


def test_margin_summary_gives_mean_spread_and_the_worst_subject():
    margins = pd.DataFrame({"mean_dice": [0.01, 0.03, -0.01], "amygdala": [0.02, 0.02, 0.05],
                            "hippocampus": [0.0, 0.1, 0.2], "holds": [False, True, False]}, index=["a", "b", "c"])
    s = regional.margin_summary(margins)
    assert s.loc["mean_dice", "mean"] == pytest.approx(0.01) and s.loc["mean_dice", "sd"] == pytest.approx(0.02)
    assert s.loc["mean_dice", "min"] == pytest.approx(-0.01) and s.loc["mean_dice", "n_positive"] == 2
    assert s.loc["hippocampus", "n_positive"] == 2 and (s["n"] == 3).all()  # a margin of 0 does not lead
    assert np.isnan(regional.margin_summary(margins.iloc[:1]).loc["amygdala", "sd"])
    with pytest.raises(ValueError, match="no margins"):
        regional.margin_summary(margins.iloc[:0])
