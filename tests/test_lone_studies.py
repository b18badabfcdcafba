"""The lone-3T studies (§2.8.3, §2.8.4): simulated sets, exclusion of model-building participants, alignment to the
model's grid, prediction, registration to the reference, Dice and the BH family."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from conftest import COARSE

from synth7t.simulate import demo
from synth7t.simulate import lone as lone_sets
from synth7t.data import layout
from synth7t.studies import lone, stats
from synth7t.studies import paper as synth7t_paper
from synth7t.data import io as sio


@pytest.fixture(scope="module")
def amygdala_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("amygdala") / "set"
    parts = lone_sets.generate_amygdala_set(root, 2, seed=5, config=demo.DemoConfig(**COARSE), progress=False)
    return root, parts


def test_amygdala_set_has_lone_3t_and_labelled_references_on_the_finer_grid(amygdala_set):
    root, parts = amygdala_set
    cfg = demo.DemoConfig(**COARSE)
    assert list(parts["participant_id"]) == ["sub-101", "sub-102"]
    assert layout.is_simulated(root)
    for key in parts["participant_id"]:
        t3 = sio.read_nifti(root / key / "anat" / f"{key}_acq-3T_T1w.nii.gz")
        assert np.allclose(np.linalg.norm(t3.affine[:3, :3], axis=0), cfg.voxel_3t)  # the 3T's own grid
        ref = sio.load_volume(root / lone_sets.REFERENCE_DIR / f"{key}_T1w.nii.gz")
        lab = sio.load_volume(root / lone_sets.REFERENCE_DIR / f"{key}_dseg.nii.gz", dtype=None)
        # the paper's 0.5 x 1 x 0.5 mm, scaled like the 7T grid (0.7 mm -> voxel_7t)
        assert np.allclose(np.linalg.norm(ref.affine[:3, :3], axis=0), np.array([0.5, 1.0, 0.5]) * cfg.voxel_7t / 0.7,
                           atol=1e-3)
        assert lab.data.shape == ref.data.shape and np.allclose(lab.affine, ref.affine)
        assert {18, 54, 17, 53} <= set(np.unique(lab.data).tolist())
        # the reference image is a 3T of the same anatomy: bright where the labels say white matter
        wm = np.isin(lab.data, (2, 41))
        gm = np.isin(lab.data, (3, 42))
        assert ref.data[wm].mean() > ref.data[gm].mean()
        side = json.loads((root / key / "anat" / f"{key}_acq-3T_T1w.json").read_text())
        assert side["Simulated"] is True
    # a rerun reuses the finished subjects
    stamp = (root / "sub-101" / "anat" / "sub-101_acq-3T_T1w.nii.gz").stat().st_mtime_ns
    lone_sets.generate_amygdala_set(root, 2, seed=5, config=cfg, progress=False)
    assert (root / "sub-101" / "anat" / "sub-101_acq-3T_T1w.nii.gz").stat().st_mtime_ns == stamp
    with pytest.raises(ValueError, match=">= 2"):
        lone_sets.generate_amygdala_set(root, 1, config=cfg, progress=False)


def test_lone_cohort_rescans_keep_the_paired_participants_ids(tmp_path):
    cfg = demo.DemoConfig(**COARSE)
    parts = lone_sets.generate_lone_cohort(tmp_path / "lone", 2, seed=4, config=cfg, rescans=[1, 3], paired_seed=3,
                                           progress=False)
    assert list(parts["participant_id"]) == ["sub-001", "sub-003", "sub-201", "sub-202"]
    paired = demo.draw_subject(3, 1, cfg)
    row = parts.set_index("participant_id").loc["sub-001"]
    assert (row["age"], row["sex"], row["diagnosis"]) == (paired.age, paired.sex, paired.diagnosis)
    table = lone.lone_inputs(tmp_path / "lone")
    assert list(table["key"]) == ["sub-001", "sub-003", "sub-201", "sub-202"]
    assert table["mask"].str.endswith("_acq-3T_desc-brain_mask.nii.gz").all()
    with pytest.raises(ValueError, match="repeat a participant"):
        lone_sets.generate_lone_cohort(tmp_path / "x", 0, config=cfg, rescans=[1, 1], progress=False)


def test_model_building_participants_are_excluded_and_test_participants_kept():
    split = pd.DataFrame({"participant_id": ["sub-001", "sub-002", "sub-003"], "split": ["train", "test", "train"]})
    assert layout.model_building_participants(split) == {"sub-001", "sub-003"}
    # a training cache's volumes.tsv names sessions by key
    vols = pd.DataFrame({"key": ["sub-001_ses-1", "sub-002_ses-1"], "split": ["train", "test"]})
    assert layout.model_building_participants(vols) == {"sub-001"}
    scans = pd.DataFrame({"key": ["sub-001", "sub-002", "sub-201"], "participant_id": ["sub-001", "sub-002", "sub-201"]})
    kept, excluded = layout.exclude_model_participants(scans, {"sub-001", "sub-003"})
    assert list(kept["key"]) == ["sub-002", "sub-201"] and list(excluded["key"]) == ["sub-001"]
    assert excluded["reason"].str.contains("built the model").all()
    with pytest.raises(ValueError, match="no 'subject' column"):
        layout.exclude_model_participants(scans, [], column="subject")


def test_lone_inputs_need_every_participant_in_the_table(tmp_path):
    from conftest import write_nifti

    write_nifti(tmp_path / "sub-01" / "anat" / "sub-01_acq-3T_T1w.nii.gz")
    write_nifti(tmp_path / "sub-02" / "anat" / "sub-02_acq-3T_T1w.nii.gz")
    pd.DataFrame({"participant_id": ["sub-01"], "age": [70], "sex": ["F"], "diagnosis": ["CN"]}).to_csv(
        tmp_path / "participants.tsv", sep="\t", index=False)
    with pytest.raises(ValueError, match="sub-02"):
        lone.lone_inputs(tmp_path)
    with pytest.raises(ValueError, match="no 3T image"):
        lone.lone_inputs(tmp_path / "sub-01" / "anat", pattern="*_acq-7T_*")


def test_the_amygdala_design_end_to_end(amygdala_set, preprocessed_cohort, tmp_path):
    """Lone 3T -> generalised affine onto the model grid -> prediction -> one affine to the reference per subject
    -> Dice of the segmentations against the reference labels; paired tests BH-adjusted over the paper's family."""
    from synth7t import preprocess as pp
    from synth7t.training import slices, trainer
    from synth7t.training.config import TrainConfig

    root, parts = amygdala_set
    derivatives, ds, split_file = preprocessed_cohort
    cfg = pp.PreprocessConfig.from_preset("quick", target_spacing=1.6, grid_inplane=(128, 96), n4_3t=False, qc_figure=False,
                         mask_backend="given")  # the simulated sets carry ground-truth 3T masks, as the cohort does
    inputs = lone.lone_inputs(root)
    status = lone.preprocess_lone_batch(inputs, tmp_path / "aligned", config=cfg,
                                                generalised=pp.estimate_generalised_affine(derivatives),
                                                progress=False)
    assert (status["status"] == "done").all(), status
    records = lone.lone_records(tmp_path / "aligned")
    assert sorted(records) == ["sub-101", "sub-102"]
    again = lone.preprocess_lone_batch(inputs, tmp_path / "aligned", config=cfg,
                                               generalised=pp.estimate_generalised_affine(derivatives), progress=False)
    assert (again["status"] == "skipped").all()

    cache = slices.build_cache(derivatives, tmp_path / "cache", ds, split_file=split_file, progress=False)
    run = tmp_path / "run"
    tcfg = TrainConfig.from_preset("demo-cpu", epochs=1, batch_size=4, samples_per_epoch=8, crop=[64, 64], val_slices=4,
                             lambda_perc=0.0, num_workers=0, device="cpu", seed=0)
    trainer.Trainer(tcfg, cache, run, progress=False).fit()
    pred = lone.predict_lone(run / "model", records, inputs, tmp_path / "pred", name="unet", device="cpu",
                                     progress=False)
    assert (pred["status"] == "done").all(), pred
    # two 1-thread worker processes (the demo's chapter 08 on 2 cores): the same volumes, to float noise
    par = lone.predict_lone(run / "model", records, inputs, tmp_path / "pred2", name="unet", device="cpu",
                                    progress=False, n_jobs=2)
    assert list(par["key"]) == list(pred["key"]) and (par["status"] == "done").all(), par
    for a, b in zip(pred["path"], par["path"]):
        va, vb = sio.load_volume(a), sio.load_volume(b)
        assert np.allclose(va.affine, vb.affine) and np.abs(va.data - vb.data).max() < 1e-4
    with pytest.raises(ValueError, match="n_jobs"):
        lone.predict_lone(run / "model", records, inputs, tmp_path / "pred3", name="unet", n_jobs=0)
    images = lone.lone_images(records, {"unet": tmp_path / "pred"})
    assert sorted(images["image_type"].unique()) == ["3T", "unet"] and len(images) == 4

    refs = {k: (root / lone_sets.REFERENCE_DIR / f"{k}_T1w.nii.gz", root / lone_sets.REFERENCE_DIR / f"{k}_dseg.nii.gz")
            for k in records}
    moved = lone.align_to_references(images, refs, tmp_path / "ref", progress=False)
    for r in moved.itertuples():
        v = sio.load_volume(r.path)
        assert v.data.shape == sio.load_volume(refs[r.key][0]).data.shape
    # the 3T lands on its reference: its brain overlaps the reference labels (the one affine per subject worked)
    t3_ref = sio.load_volume(moved[(moved.key == "sub-101") & (moved.image_type == "3T")].path.iloc[0]).data > 0.05
    lab = sio.load_volume(refs["sub-101"][1], dtype=None).data > 0
    assert 2 * (t3_ref & lab).sum() / (t3_ref.sum() + lab.sum()) > 0.8
    # Dice against the reference: the reference labels themselves as a segmentation score 1
    seg_paths = {("sub-101", "3T"): refs["sub-101"][1], ("sub-102", "3T"): refs["sub-102"][1]}
    structures = {"Left-Amygdala": (18,), "Right-Amygdala": (54,)}
    dice = lone.reference_study_dice(seg_paths, refs, structures)
    assert np.allclose(dice["dice"], 1.0) and len(dice) == 4


def test_per_side_tests_are_the_secondary_table():
    """Each side of each synthetic type against the 3T, BH over those rows; the hippocampus joins when asked."""
    from statsmodels.stats.multitest import multipletests

    rng = np.random.default_rng(0)
    rows = []
    for k in range(8):
        for s in ("Left-Amygdala", "Right-Amygdala", "Left-Hippocampus"):
            for t, gain in (("3T", 0.0), ("U-Net", 0.005), ("GAN U-Net", 0.02)):
                rows.append({"key": f"s{k}", "structure": s, "image_type": t, "dice": 0.8 + gain + rng.normal(0, 0.01)})
    df = pd.DataFrame(rows)
    tests = lone.amygdala_tests(df, design="per_side")
    assert len(tests) == 4 and set(tests["structure"]) == set(lone.AMYGDALA_SIDES)  # 2 sides x 2 types
    np.testing.assert_allclose(tests["p_bh"], multipletests(tests["p"], method="fdr_bh")[1])
    wider = lone.amygdala_tests(df, design="per_side", structures=[*lone.AMYGDALA_SIDES,
                                                                           "Left-Hippocampus"])
    assert len(wider) == 6 and not np.allclose(wider["p_bh"].iloc[:4], tests["p_bh"])
    with pytest.raises(ValueError, match="design must be 'paper'"):
        lone.amygdala_tests(df, design="per-side")
    with pytest.raises(ValueError, match="holds no Dice of"):
        lone.amygdala_tests(df, structures=["Left-Amygdala", "Right-Hippocampus"])


def _standardised(z: np.ndarray) -> np.ndarray:
    return (z - z.mean()) / z.std(ddof=1)


def papers_amygdala_dice(seed: int = 0) -> pd.DataFrame:
    """20 participants whose per-participant gains (both sides averaged) have exactly the mean and SD that give the
    paper's t: GAN U-Net 0.017 ± 0.016673 (t = 4.56; printed 0.017 ± 0.017), U-Net 0.00225 ± 0.018 (t = 0.56;
    printed 0.002 ± 0.018). The two sides of a participant differ by a random amount (their mean is exact), and
    the U-Net's and the GAN U-Net's gains move together, so U-Net vs GAN U-Net has the family's smallest p."""
    rng = np.random.default_rng(seed)
    n = 20
    z_gan = _standardised(rng.normal(size=n))
    z_unet = _standardised(z_gan + 0.3 * _standardised(rng.normal(size=n)))
    base = rng.uniform(0.70, 0.80, n)
    means = {"3T": base, "U-Net": base + 0.00225 + 0.018 * z_unet,
             "GAN U-Net": base + 0.017 + 0.017 * np.sqrt(n) / 4.56 * z_gan}
    rows = []
    for t, m in means.items():
        side = rng.normal(0, 0.02, n)  # left above the mean by this much, right below
        for i in range(n):
            for s, sign in (("Left-Amygdala", 1), ("Right-Amygdala", -1)):
                rows.append({"key": f"sub-{i:03d}", "image_type": t, "structure": s, "dice": m[i] + sign * side[i]})
    return pd.DataFrame(rows)


def test_the_papers_design_reproduces_its_t_and_p_from_its_summary_numbers():
    """The default design (mean of both sides per participant, the three pairs, BH over three) turns data with the
    paper's gains into the paper's printed t, gains and BH p-values. Each side as a pair (n = 40), one side only, or
    a BH family of two (no U-Net vs GAN U-Net test) gives other numbers."""
    df = papers_amygdala_dice()
    tests = lone.amygdala_tests(df, order=["U-Net", "GAN U-Net"])
    assert [(r.image_type, r.baseline) for r in tests.itertuples()] == [
        ("U-Net", "3T"), ("GAN U-Net", "3T"), ("GAN U-Net", "U-Net")]
    t = tests.set_index(["image_type", "baseline"])
    gan, unet = t.loc[("GAN U-Net", "3T")], t.loc[("U-Net", "3T")]
    assert (gan["n"], unet["n"]) == (20, 20)
    # as printed: 0.017 ± 0.017, t = 4.56, p = 0.0003; 0.002 ± 0.018, t = 0.56, p = 0.58
    assert (round(gan["mean_diff"], 3), round(gan["sd_diff"], 3), round(gan["t"], 2)) == (0.017, 0.017, 4.56)
    assert (round(unet["mean_diff"], 3), round(unet["sd_diff"], 3), round(unet["t"], 2)) == (0.002, 0.018, 0.56)
    assert round(gan["p_bh"], 4) == 0.0003 and round(unet["p_bh"], 2) == 0.58
    assert t.loc[("GAN U-Net", "U-Net"), "p"] < gan["p"]  # the ordering that makes BH multiply the GAN's p by 3/2
    # the paper's checks of its own numbers agree with this design
    assert synth7t_paper.amygdala_t_check().query("n == 20")["fits"].all()
    # what the other designs would have printed
    per_side = lone.amygdala_tests(df, design="per_side", order=["U-Net", "GAN U-Net"])
    assert (per_side["n"] == 20).all() and not np.isclose(per_side["t"], 4.56, atol=0.005).any()
    left = lone.amygdala_tests(df, structures=["Left-Amygdala"], order=["U-Net", "GAN U-Net"])
    assert round(left.set_index(["image_type", "baseline"]).loc[("GAN U-Net", "3T"), "t"], 2) != 4.56
    two = stats.paired_tests(df.groupby(["key", "image_type"], as_index=False)["dice"].mean(), value="dice",
                             condition="image_type", subject="key", baseline="3T").set_index("image_type")
    assert round(two.loc["GAN U-Net", "t"], 2) == 4.56 and round(two.loc["GAN U-Net", "p_bh"], 4) == 0.0004