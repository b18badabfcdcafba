"""Diagnosis prediction from regional volumes (paper §2.8.4, Figure 6) and the paired tests of §2.8.3."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from synth7t.studies import diagnosis as dg
from synth7t.studies import stats

# forests small enough for tests; the defaults (100 trees, 10 folds, 1000 repeats) are the paper's scale
FAST = dict(n_splits=5, n_estimators=10, progress=False)


def simulate_cohort(n: int = 60, types=("3T", "unet"), seed: int = 0, effect: float = 1.0,
                    dementia: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A volumes table (key, image_type, regions in mL, Total-Brain) with diagnosis-linked hippocampal volume
    (CN = SCD > MCI > AD, scaled by ``effect``), and its participants table."""
    rng = np.random.default_rng(seed)
    dx = np.array(["CN", "SCD", "MCI", "AD"], dtype=object)[np.arange(n) % 4]
    dx[:dementia] = "dementia"
    part = pd.DataFrame({"participant_id": [f"sub-{i:03d}" for i in range(n)], "age": rng.normal(68, 7, n).round(1),
                         "sex": rng.choice(["F", "M"], n), "diagnosis": dx})
    shift = {"CN": 0.0, "SCD": 0.0, "MCI": -0.6, "AD": -1.2, "dementia": -1.0}
    rows = []
    for t in types:
        for i in range(n):
            icv = rng.normal(1200, 80)
            s = icv / 1200
            hip = (4.0 + effect * shift[dx[i]]) * s + rng.normal(0, 0.2)
            rows.append({"key": f"sub-{i:03d}", "image_type": t,
                         "Left-Hippocampus": hip + rng.normal(0, 0.1), "Right-Hippocampus": hip + rng.normal(0, 0.1),
                         "Left-Amygdala": 1.5 * s + rng.normal(0, 0.1), "Right-Amygdala": 1.5 * s + rng.normal(0, 0.1),
                         "Left-Putamen": 5 * s + rng.normal(0, 0.3), "Total-Brain": icv})
    return pd.DataFrame(rows), part


# --------------------------------------------------------------------------------------------- stats


def test_benjamini_hochberg_matches_statsmodels():
    from statsmodels.stats.multitest import multipletests

    rng = np.random.default_rng(3)
    for p in (rng.uniform(size=25), np.r_[rng.uniform(0, 0.01, 5), rng.uniform(size=10)],
              np.array([0.01, 0.01, 0.04, 0.04, 0.5, 1.0]), np.array([0.2])):
        np.testing.assert_allclose(stats.benjamini_hochberg(p), multipletests(p, method="fdr_bh")[1], rtol=1e-12)
    # NaN stays NaN and does not count as a test
    p = np.array([0.01, np.nan, 0.03, 0.2])
    got = stats.benjamini_hochberg(p)
    assert np.isnan(got[1])
    np.testing.assert_allclose(got[[0, 2, 3]], multipletests(p[[0, 2, 3]], method="fdr_bh")[1])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        stats.benjamini_hochberg([0.5, 1.5])


def test_paired_tests_match_scipy_and_statsmodels():
    from statsmodels.stats.multitest import multipletests

    rng = np.random.default_rng(0)
    rows = []
    for s in range(12):
        for struct, bump in (("amygdala", 0.03), ("hippocampus", 0.0), ("thalamus", -0.01)):
            base = rng.uniform(0.6, 0.85)
            for cond, extra in (("3T", 0.0), ("unet", bump), ("gan", 2 * bump)):
                rows.append({"key": f"sub-{s:02d}", "structure": struct, "image_type": cond,
                             "dice": base + extra + rng.normal(0, 0.02)})
    df = pd.DataFrame(rows)
    df = df.drop(df[(df["key"] == "sub-00") & (df["image_type"] == "gan") & (df["structure"] == "thalamus")].index)
    out = stats.paired_tests(df, value="dice", condition="image_type", subject="key", baseline="3T", by="structure")
    assert len(out) == 6 and set(out["image_type"]) == {"unet", "gan"}
    for r in out.itertuples():
        sub = df[df["structure"] == r.structure].pivot(index="key", columns="image_type", values="dice")
        sub = sub[[r.image_type, "3T"]].dropna()
        ref = sps.ttest_rel(sub[r.image_type], sub["3T"])
        assert r.n == len(sub) and r.t == pytest.approx(ref.statistic) and r.p == pytest.approx(ref.pvalue)
        assert r.mean_diff == pytest.approx((sub[r.image_type] - sub["3T"]).mean())
    assert out.set_index(["structure", "image_type"]).loc[("thalamus", "gan"), "n"] == 11
    np.testing.assert_allclose(out["p_bh"], multipletests(out["p"], method="fdr_bh")[1])
    amyg = out[(out["structure"] == "amygdala") & (out["image_type"] == "gan")].iloc[0]
    assert amyg["mean_diff"] > 0.04 and amyg["p_bh"] < 0.001
    # without groups: one family over the whole table; constant differences; a missing baseline
    whole = stats.paired_tests(df[df["structure"] == "amygdala"], value="dice", condition="image_type",
                               subject="key", baseline="3T")
    assert list(whole.columns[:2]) == ["image_type", "baseline"] and len(whole) == 2
    const = pd.DataFrame({"key": ["a", "b", "c"] * 2, "c": ["x"] * 3 + ["y"] * 3, "v": [1, 2, 3, 2, 3, 4]})
    r = stats.paired_tests(const, value="v", condition="c", subject="key", baseline="x").iloc[0]
    assert r["t"] == np.inf and r["p"] == 0.0
    with pytest.raises(ValueError, match="baseline 'z'"):
        stats.paired_tests(const, value="v", condition="c", subject="key", baseline="z")
    with pytest.raises(ValueError, match="dice"):
        stats.paired_tests(const, value="dice", condition="c", subject="key", baseline="x")


# ------------------------------------------------------------------------------------------ features


def test_volume_features_classes_normalisation_and_hemispheres(capsys):
    vol, part = simulate_cohort(n=24, dementia=2)
    vol = vol[~((vol["key"] == "sub-005") & (vol["image_type"] == "unet"))]  # a key missing from one type
    fs = dg.volume_features(vol, part, normalise="icv", head_size_feature=True)
    out = capsys.readouterr().out
    assert "dementia 2" in out and "not in classes" in out and "every image type" in out
    assert fs.classes == ["CN", "MCI", "AD"]  # SCD counted as CN, dementia dropped (the paper's classes)
    assert set(fs.table["key"]) == {f"sub-{i:03d}" for i in range(2, 24)} - {"sub-005"}
    assert set(fs.dropped["reason"]) == {"diagnosis not in classes", "key not present in every image type"}
    assert fs.features[-2:] == ["age", "sex_male"] and "Total-Brain" in fs.features and fs.total_column == "Total-Brain"
    row = fs.table[(fs.table["key"] == "sub-007") & (fs.table["image_type"] == "3T")].iloc[0]
    src = vol[(vol["key"] == "sub-007") & (vol["image_type"] == "3T")].iloc[0]
    assert row["Left-Hippocampus"] == pytest.approx(100 * src["Left-Hippocampus"] / src["Total-Brain"])
    assert row["Total-Brain"] == pytest.approx(src["Total-Brain"])
    male = part.set_index("participant_id").loc["sub-007", "sex"] == "M"
    assert row["label"] == "AD" and row["sex_male"] == int(male)
    counts = fs.class_counts()
    assert list(counts.columns) == ["CN", "MCI", "AD", "total"] and (counts["total"] == 21).all()
    X, y = fs.xy("unet")
    assert list(X.index) == sorted(X.index) and list(X.columns) == fs.features and len(y) == 21

    comb = dg.volume_features(vol, part, hemispheres="combine", normalise=None, add_age_sex=False,
                              classes={"unimpaired": ["CN", "SCD"], "impaired": ["MCI", "AD", "dementia"]},
                              verbose=False)
    assert comb.features == ["Hippocampus", "Amygdala", "Left-Putamen"]  # head size set aside by default
    assert comb.classes == ["unimpaired", "impaired"] and len(comb.dropped) == 1  # only the missing unet row
    r = comb.table[(comb.table["key"] == "sub-001") & (comb.table["image_type"] == "3T")].iloc[0]
    s = vol[(vol["key"] == "sub-001") & (vol["image_type"] == "3T")].iloc[0]
    assert r["Hippocampus"] == pytest.approx(s["Left-Hippocampus"] + s["Right-Hippocampus"])
    # other naming schemes pair up too
    _, names = dg.combine_hemispheres(pd.DataFrame(columns=["lh_bankssts_volume", "rh_bankssts_volume",
                                                            "ctx-lh-insula", "ctx-rh-insula", "Left-Only"]),
                                      ["lh_bankssts_volume", "rh_bankssts_volume", "ctx-lh-insula", "ctx-rh-insula",
                                       "Left-Only"])
    assert names == ["bankssts_volume", "ctx-insula", "Left-Only"]


def test_defaults_are_the_papers_features_and_an_unweighted_forest():
    """§2.8.4: raw regional volumes (mL) with age and sex into a random forest without class weights; the ICV
    ratios, the head-size feature and balanced class weights are named options."""
    vol, part = simulate_cohort(n=24)
    fs = dg.volume_features(vol, part, verbose=False)
    regions = ["Left-Hippocampus", "Right-Hippocampus", "Left-Amygdala", "Right-Amygdala", "Left-Putamen"]
    assert fs.features == [*regions, "age", "sex_male"] and fs.normalise is None and fs.total_column is None
    X, _ = fs.xy("3T")
    raw = vol[vol["image_type"] == "3T"].set_index("key").loc[X.index, regions]
    pd.testing.assert_frame_equal(X[regions], raw.astype(float), check_names=False)  # volumes as measured, in mL
    # the forest: unweighted by default; on unequal classes, balanced weights change what it learns
    imbalanced, part2 = simulate_cohort(n=80, types=("3T",), effect=0.4)
    keep = part2["diagnosis"].isin(["CN", "SCD"]) | (np.arange(len(part2)) % 12 < 4)  # few MCI and AD
    X, y = dg.volume_features(imbalanced[imbalanced["key"].isin(part2.loc[keep, "participant_id"])], part2[keep],
                              verbose=False).xy("3T")
    default = dg.cross_validated_scores(X, y, n_repeats=2, seed=3, **FAST)
    assert default.settings["class_weight"] is None
    unweighted = dg.cross_validated_scores(X, y, n_repeats=2, seed=3, class_weight=None, **FAST)
    balanced = dg.cross_validated_scores(X, y, n_repeats=2, seed=3, class_weight="balanced", **FAST)
    pd.testing.assert_frame_equal(default.scores, unweighted.scores)
    assert not default.scores.equals(balanced.scores)


def test_volumes_table_errors(tmp_path):
    vol, part = simulate_cohort(n=12)
    with pytest.raises(dg.VolumesTableError, match="missing column.*image_type.*one column per region"):
        dg.volume_features(vol.drop(columns="image_type"), part)
    p = tmp_path / "v.tsv"
    vol.drop(columns="key").to_csv(p, sep="\t", index=False)
    with pytest.raises(dg.VolumesTableError, match=r"v\.tsv: missing column\(s\) key"):
        dg.read_volumes_table(p)
    with pytest.raises(FileNotFoundError, match="volumes table not found"):
        dg.read_volumes_table(tmp_path / "absent.tsv")
    with pytest.raises(dg.VolumesTableError, match="not numeric.*regions="):
        dg.volume_features(vol.assign(status="done"), part)
    # choosing the region columns leaves other columns aside; the head-size column is still found
    some = ["Left-Hippocampus", "Right-Hippocampus"]
    vol.assign(status="done").to_csv(tmp_path / "s.tsv", sep="\t", index=False)
    fs = dg.volume_features(dg.read_volumes_table(tmp_path / "s.tsv", regions=some), part, regions=some,
                            head_size_feature=True, verbose=False)
    assert fs.features == [*some, "Total-Brain", "age", "sex_male"]
    with pytest.raises(dg.VolumesTableError, match="share a key and image_type"):
        dg.volume_features(pd.concat([vol, vol.iloc[:1]]), part)
    with pytest.raises(dg.VolumesTableError, match="head-size column.*normalise=None"):
        dg.volume_features(vol.drop(columns="Total-Brain"), part, normalise="icv")
    with pytest.raises(dg.VolumesTableError, match="head_size_feature=True needs a head-size column"):
        dg.volume_features(vol.drop(columns="Total-Brain"), part, head_size_feature=True)
    with pytest.raises(ValueError, match="1 participant.*no row in the participants table: sub-003"):
        dg.volume_features(vol, part[part["participant_id"] != "sub-003"])
    with pytest.raises(ValueError, match="image_types 7T not in"):
        dg.volume_features(vol, part, image_types=["3T", "7T"])
    with pytest.raises(ValueError, match="SCD is in two classes"):
        dg.volume_features(vol, part, classes={"a": ["CN", "SCD"], "b": ["SCD"]})
    # a CSV keyed by participant_id and session
    csv = tmp_path / "ext.csv"
    ext = vol.assign(participant_id=vol["key"].str[4:], session="1").drop(columns="key")
    ext.to_csv(csv, index=False)
    read = dg.read_volumes_table(csv)
    assert read["key"].iloc[0] == "sub-000_ses-1"
    fs = dg.volume_features(read, part, verbose=False)
    assert set(fs.table["participant_id"]) == set(part["participant_id"])


# ---------------------------------------------------------------------------------- cross-validation


def test_classifier_finds_a_planted_signal_and_sits_at_chance_on_shuffled_labels():
    vol, part = simulate_cohort(n=90, types=("3T",), effect=1.0)
    fs = dg.volume_features(vol, part, verbose=False)
    X, y = fs.xy("3T")
    res = dg.cross_validated_scores(X, y, n_repeats=3, seed=1, **FAST)
    chance = 1 / 3
    assert res.scores["balanced_accuracy"].mean() > chance + 0.3
    top = res.mean_importances().sort_values(ascending=False).index[:2]
    assert set(top) == {"Left-Hippocampus", "Right-Hippocampus"}
    assert len(res.fold_scores) == 3 * 5 and res.importances.shape == (3, len(fs.features))
    np.testing.assert_allclose(res.importances.sum(axis=1), 1.0)
    # shuffled labels: three permutations (one alone can sit a few points off chance), two repeats each
    null = [dg.cross_validated_scores(X, pd.Series(np.random.default_rng(k).permutation(y.to_numpy()), index=y.index),
                                      n_repeats=2, seed=k, **FAST).scores["balanced_accuracy"].mean()
            for k in range(3)]
    assert abs(np.mean(null) - chance) < 0.1


def test_cross_validation_is_deterministic_and_independent_of_n_jobs():
    vol, part = simulate_cohort(n=40, types=("3T",))
    X, y = dg.volume_features(vol, part, verbose=False).xy("3T")
    a = dg.cross_validated_scores(X, y, n_repeats=3, seed=5, permutation=1, **FAST)
    b = dg.cross_validated_scores(X, y, n_repeats=3, seed=5, permutation=1, n_jobs=2, **FAST)
    pd.testing.assert_frame_equal(a.scores, b.scores)
    pd.testing.assert_frame_equal(a.fold_scores, b.fold_scores)
    pd.testing.assert_frame_equal(a.importances, b.importances)
    pd.testing.assert_frame_equal(a.permutation_importances, b.permutation_importances)
    assert a.split_digests == b.split_digests and len(set(a.split_digests)) == 3
    c = dg.cross_validated_scores(X, y, n_repeats=3, seed=6, n_splits=5, n_estimators=2, progress=False)
    assert c.split_digests != a.split_digests


def test_tiny_classes_reduce_the_folds_with_a_warning():
    vol, part = simulate_cohort(n=16, types=("3T",))  # 4 MCI, 4 AD
    X, y = dg.volume_features(vol, part, verbose=False).xy("3T")
    with pytest.warns(UserWarning, match="n_splits reduced from 10 to 4"):
        res = dg.cross_validated_scores(X, y, n_repeats=1, n_estimators=10, progress=False)
    assert res.n_splits == 4
    with pytest.raises(ValueError, match="at least 2"):
        dg.cross_validated_scores(X.iloc[:5], y.iloc[:5], n_repeats=1, progress=False)


def test_sessions_of_one_participant_stay_in_one_fold():
    vol, part = simulate_cohort(n=20, types=("3T",))
    two = pd.concat([vol.assign(key=vol["key"] + "_ses-1"), vol.assign(key=vol["key"] + "_ses-2")])
    fs = dg.volume_features(two, part, verbose=False)
    X, y = fs.xy("3T")
    groups = fs.groups("3T")
    assert groups.nunique() == 20 and len(X) == 40
    res = dg.cross_validated_scores(X, y, groups=groups, n_repeats=1, n_splits=4, n_estimators=10, progress=False)
    assert res.settings["grouped"] and res.n_splits == 4


def test_compare_image_types_and_importance_deviation(tmp_path):
    vol, part = simulate_cohort(n=48, types=("3T", "unet"))
    noisy = vol["image_type"] == "unet"  # the "synthetic" type measures the hippocampus badly
    for c in ("Left-Hippocampus", "Right-Hippocampus"):
        vol.loc[noisy, c] += np.random.default_rng(1).normal(0, 0.8, int(noisy.sum()))
    fs = dg.volume_features(vol, part, verbose=False)
    res = {t: dg.cross_validated_scores(*fs.xy(t), n_repeats=3, seed=0, **FAST) for t in fs.image_types}
    cmp = dg.compare_image_types(res, baseline="3T")
    assert list(cmp["metric"]) == ["accuracy", "balanced_accuracy"] and (cmp["image_type"] == "unet").all()
    r = cmp.set_index("metric").loc["balanced_accuracy"]
    # the corrected statistic by hand: per-fold differences, variance inflated by n_test / n_train
    fa, fb = res["unet"].fold_scores, res["3T"].fold_scores
    d = (fa["balanced_accuracy"] - fb["balanced_accuracy"]).to_numpy()
    ratio = fa["n_test"].mean() / fa["n_train"].mean()
    t = d.mean() / np.sqrt((1 / len(d) + ratio) * d.var(ddof=1))
    assert r["t_corrected"] == pytest.approx(t) and r["df"] == len(d) - 1
    assert r["p_corrected"] == pytest.approx(2 * sps.t.sf(abs(t), len(d) - 1))
    naive = sps.ttest_rel(fa["balanced_accuracy"], fb["balanced_accuracy"]).pvalue
    assert r["p_corrected"] > naive  # the correction is conservative
    assert r["mean_diff"] < 0 and r["prop_better"] + r["prop_tied"] + r["prop_worse"] == pytest.approx(1)
    np.testing.assert_allclose(cmp["p_bh"], stats.benjamini_hochberg(cmp["p_corrected"]))
    # the same result twice: no difference, p = 1
    same = dg.compare_image_types({"3T": res["3T"], "copy": res["3T"]})
    assert (same["p_corrected"] == 1.0).all() and (same["prop_tied"] == 1.0).all()
    # different folds are not paired
    other = dg.cross_validated_scores(*fs.xy("unet"), n_repeats=3, seed=1, **FAST)
    with pytest.raises(ValueError, match="not cross-validated on the same folds"):
        dg.compare_image_types({"3T": res["3T"], "unet": other})
    with pytest.raises(ValueError, match="baseline '7T'"):
        dg.compare_image_types(res, baseline="7T")

    dev = dg.importance_deviation(res, baseline="3T")
    assert len(dev) == 2 * len(fs.features)
    u = dev[dev["image_type"] == "unet"].set_index("feature")
    assert u.loc["Left-Hippocampus", "deviation"] < 0  # the noisy hippocampus loses importance
    assert (u["deviation_q025"] <= u["deviation"] + 1e-12).all()
    assert (u["deviation"] <= u["deviation_q975"] + 1e-12).all()
    assert (dev[dev["image_type"] == "3T"]["deviation"] == 0).all()
    # figures
    import matplotlib

    matplotlib.use("Agg")
    fig = dg.plot_accuracy_distributions(res, majority=0.5)
    assert len(fig.axes) == 2
    fig = dg.plot_importances(res, labels={"unet": "U-Net"})
    assert len(fig.axes) == 2
    # save, load and reuse
    saved, reused = dg.cached_cross_validated_scores(*fs.xy("3T"), tmp_path / "cv", n_repeats=3, seed=0, **FAST)
    assert not reused
    again, reused = dg.cached_cross_validated_scores(*fs.xy("3T"), tmp_path / "cv", n_repeats=3, seed=0, **FAST)
    assert reused
    pd.testing.assert_frame_equal(again.scores, res["3T"].scores)
    pd.testing.assert_frame_equal(again.importances, res["3T"].importances, check_names=False)
    assert again.split_digests == res["3T"].split_digests
    _, reused = dg.cached_cross_validated_scores(*fs.xy("3T"), tmp_path / "cv", n_repeats=2, seed=0, **FAST)
    assert not reused


# ------------------------------------------------------------------------------------------- notebook


def test_diagnosis_notebook_on_an_external_volumes_table(tmp_path):
    """08 executed through papermill (an ad hoc profile) on a 60-subject external table with two image types."""
    from synth7t.workflow import profiles

    vol, part = simulate_cohort(n=60, types=("3T", "unet"))
    vol.to_csv(tmp_path / "volumes.tsv", sep="\t", index=False)
    data = tmp_path / "data"
    data.mkdir()
    part.to_csv(data / "participants.tsv", sep="\t", index=False)
    prof = tmp_path / "diag.yml"
    prof.write_text(json.dumps({"common": {"run_name": "t", "runs_dir": str(tmp_path / "runs"), "data_dir": str(data),
                                           "seed": 0},
                                "notebooks": [{"notebook": "notebooks/08_diagnosis.ipynb",
                                               "parameters": {"volumes_table": str(tmp_path / "volumes.tsv"),
                                                              "n_repeats": 5, "n_splits": 5, "n_estimators": 10,
                                                              "n_jobs": 1}}]}))
    out = tmp_path / "book"
    profiles.run_profile(prof, output_dir=out, cwd=tmp_path, progress=False, root=Path(__file__).resolve().parents[1])
    nb = nbformat.read(out / "08_diagnosis.ipynb", as_version=4)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if "image/png" in o.get("data", {})]
    assert len(images) >= 2
    assert "simulated" in nb.cells[0].source.lower()
    run = tmp_path / "runs" / "t" / "08_diagnosis"
    for f in ("class_counts.tsv", "scores.tsv", "score_summary.tsv", "comparison.tsv", "importances.tsv",
              "score_distributions.png", "importances.png", "settings.json"):
        assert (run / f).is_file(), f
    scores = pd.read_csv(run / "scores.tsv", sep="\t")
    assert set(scores["image_type"]) == {"3T", "unet"} and len(scores) == 10
    assert scores["balanced_accuracy"].mean() > 0.5
    cmp = pd.read_csv(run / "comparison.tsv", sep="\t")
    assert set(cmp["image_type"]) == {"unet"} and cmp["p_corrected"].between(0, 1).all()
    assert (run / "cv" / "3T" / "cv.json").is_file()
