import dataclasses
import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from synth7t import demo, demo_checks, layout, regional
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
    from synth7t import io as sio

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


def test_3t_loses_resolution_and_snr_in_the_published_proportions():
    paper = demo.DemoConfig()  # the paper's voxels: 0.7 mm (7T), 1 mm (3T)
    r = paper.ratios()
    assert r["resolution_fwhm_3t_over_7t"] == pytest.approx(1 / 0.7, rel=1e-6)
    assert r["snr_per_volume_7t_over_3t"] == pytest.approx((7 / 3) ** 1.65, rel=1e-6)
    assert r["snr_per_voxel_7t_over_3t"] == pytest.approx((7 / 3) ** 1.65 * 0.343, rel=1e-3)
    # the book's demo grid (1.0 / 1.43 mm) keeps every ratio
    scaled = demo.DemoConfig(voxel_7t=1.0, voxel_3t=1.43).ratios()
    for k, v in r.items():
        assert scaled[k] == pytest.approx(v, rel=0.01), k
    # explicit settings win over the derived ones
    assert demo.DemoConfig(psf_3t_mm=0.5, noise_3t=0.01).psf_3t() == 0.5
    with pytest.raises(ValueError, match="noise_3t"):
        demo.DemoConfig(noise_3t=-1)
    table = demo_checks.ratio_table(paper)
    np.testing.assert_allclose(table["published"], table["simulated"], rtol=1e-3)


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
    vols = demo_checks.ground_truth_volumes(coarse_cohort)
    assert len(vols) == 4 and (vols["Left-Hippocampus"] > 1000).all()
    assert {"participant_id", "age", "sex", "diagnosis", "Right-Lateral-Ventricle"} <= set(vols.columns)


def test_aligned_3t_lands_on_the_7t_through_the_known_pose(coarse_cohort):
    from scipy import ndimage as ndi

    s = list(coarse_cohort)[0]
    t3, aff = demo_checks.aligned_3t(s)
    t7 = nib.load(str(s.t7))
    np.testing.assert_allclose(aff, t7.affine)
    t7 = np.asarray(t7.dataobj, np.float32)
    brain = np.asarray(nib.load(str(s.t7_mask)).dataobj) > 0
    r0 = np.corrcoef(t3[brain], t7[brain])[0, 1]
    assert r0 > 0.85
    for shift in ((1, 0, 0), (0, 1, 0), (0, 0, 1), (-1, 0, 0)):  # one voxel off is worse in every direction
        assert np.corrcoef(ndi.shift(t3, shift, order=1)[brain], t7[brain])[0, 1] < r0


def test_truth_dice_leaves_out_artefact_slices_and_margins_compare_members(tmp_path):
    from synth7t import io as sio

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
