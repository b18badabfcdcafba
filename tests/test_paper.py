"""The paper's reported numbers beside a run's tables (synth7t.studies.paper)."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from synth7t.studies import paper


@pytest.fixture(autouse=True)
def _close_figures():
    """Figures of one test are closed after it (pyplot keeps every figure open otherwise)."""
    yield
    import matplotlib.pyplot as plt

    plt.close("all")


def _scores():
    rows = []
    for i, key in enumerate(["sub-001", "sub-002", "sub-003"]):
        rows.append(dict(key=key, image_type="3T", psnr=20.0 + i, ssim=0.90, mean_dice=0.94))
        rows.append(dict(key=key, image_type="unet", psnr=23.0 + i, ssim=0.95, mean_dice=0.93))
        rows.append(dict(key=key, image_type="my-model", psnr=19.0, ssim=0.80, mean_dice=0.95))
        rows.append(dict(key=key, image_type="7T", psnr=np.nan, ssim=np.nan, mean_dice=np.nan))
    return pd.DataFrame(rows)


def test_table1_gains_and_directions():
    t = paper.compare_table1(_scores()).set_index(["metric", "image_type"])
    # the paper's own numbers come through unchanged; gains are against each study's 3T
    assert t.loc[("psnr", "U-Net"), "paper"] == 17.79
    assert t.loc[("psnr", "U-Net"), "paper_gain"] == pytest.approx(17.79 - 16.89)
    assert t.loc[("psnr", "U-Net"), "here"] == pytest.approx(24.0)
    assert t.loc[("psnr", "U-Net"), "here_gain"] == pytest.approx(3.0)
    assert t.loc[("psnr", "U-Net"), "here_n"] == 3
    assert t.loc[("psnr", "U-Net"), "same_direction"] == "yes"
    assert t.loc[("mean_dice", "U-Net"), "same_direction"] == "no"  # the paper gained Dice, this run lost it
    # a type the paper does not have is listed with the run's numbers only; the 7T is not a Table 1 row
    assert np.isnan(t.loc[("ssim", "my-model"), "paper"]) and t.loc[("ssim", "my-model"), "same_direction"] == ""
    assert "7T" not in t.index.get_level_values("image_type")
    # types the run lacks keep the paper's numbers
    assert t.loc[("ssim", "GAN U-Net"), "here_n"] == 0 and np.isnan(t.loc[("ssim", "GAN U-Net"), "here"])
    with pytest.raises(ValueError, match="psnr"):
        paper.compare_table1(_scores().drop(columns="psnr"))


def test_ranks_positions_and_order():
    summary = pd.DataFrame([
        dict(criterion="looks_best", variant="3T", mean_rank=3.0, sd=0.0, n=4),
        dict(criterion="looks_best", variant="unet", mean_rank=1.0, sd=0.0, n=4),
        dict(criterion="looks_best", variant="7T", mean_rank=2.0, sd=0.0, n=4),
        dict(criterion="most_detailed", variant="3T", mean_rank=1.5, sd=0.5, n=4),
        dict(criterion="most_detailed", variant="unet", mean_rank=2.5, sd=0.5, n=4),
        dict(criterion="most_detailed", variant="7T", mean_rank=2.0, sd=0.5, n=4),
    ])
    r = paper.compare_ranks(summary).set_index(["criterion", "image_type"])
    assert r.loc[("looks_best", "U-Net"), "here_position"] == 0.0
    assert r.loc[("looks_best", "7T"), "here_position"] == 0.5
    assert r.loc[("looks_best", "3T"), "here_position"] == 1.0
    assert r.loc[("looks_best", "GAN U-Net"), "paper_position"] == pytest.approx((1.7 - 1) / 5)
    assert np.isnan(r.loc[("looks_best", "V-Net"), "here_rank"])
    agree = paper.rank_order_agreement(paper.compare_ranks(summary)).set_index("criterion")
    # paper, looks best: U-Net 2.5 < 7T 2.8 < 3T 4.4, as here
    assert agree.loc["looks_best", "same_order"] == "yes" and agree.loc["looks_best", "shared"] == 3
    assert agree.loc["looks_best", "here_order"] == "U-Net < 7T < 3T"
    # paper, most detailed: 7T < U-Net < 3T; here the 3T comes first
    assert agree.loc["most_detailed", "same_order"] == "no"


def test_amygdala_gain_is_a_paired_test_of_per_subject_means():
    rng = np.random.default_rng(0)
    rows = []
    keys = [f"sub-{i:03d}" for i in range(6)]
    base = {k: rng.uniform(0.7, 0.8, 2) for k in keys}
    gain = {k: rng.normal(0.02, 0.01, 2) for k in keys}
    for k in keys:
        for j, s in enumerate(["Left-Amygdala", "Right-Amygdala"]):
            rows.append(dict(key=k, image_type="3T", structure=s, dice=base[k][j]))
            rows.append(dict(key=k, image_type="gan-unet", structure=s, dice=base[k][j] + gain[k][j]))
        rows.append(dict(key=k, image_type="3T", structure="Left-Hippocampus", dice=0.1))  # not an amygdala
        rows.append(dict(key=k, image_type="gan-unet", structure="Left-Hippocampus", dice=0.9))
    a = paper.compare_amygdala(pd.DataFrame(rows)).set_index("image_type")
    per_subject = np.array([gain[k].mean() for k in keys])
    t, p = stats.ttest_rel([base[k].mean() + gain[k].mean() for k in keys], [base[k].mean() for k in keys])
    assert a.loc["GAN U-Net", "here_gain"] == pytest.approx(per_subject.mean())
    assert a.loc["GAN U-Net", "here_sd"] == pytest.approx(per_subject.std(ddof=1))
    assert a.loc["GAN U-Net", "here_t"] == pytest.approx(t)
    assert a.loc["GAN U-Net", "here_p_bh"] == pytest.approx(p)  # one test: BH leaves p as it is
    assert a.loc["GAN U-Net", "here_better"] == f"{int((per_subject > 0).sum())} of 6"
    assert a.loc["GAN U-Net", "paper_gain"] == 0.017 and a.loc["GAN U-Net", "same_direction"] == "yes"
    assert a.loc["GAN U-Net", "same_conclusion"] == ("yes" if p < 0.05 else "no")
    # the paper's U-Net row stays, with nothing from this run
    assert a.loc["U-Net", "here_n"] == 0 and a.loc["U-Net", "same_conclusion"] == ""


def test_diagnosis_beside_the_paper_ranges():
    summary = pd.DataFrame([dict(image_type="3T", accuracy_mean=0.6, accuracy_sd=0.1, balanced_accuracy_mean=0.5,
                                 balanced_accuracy_sd=0.1),
                            dict(image_type="unet", accuracy_mean=0.7, accuracy_sd=0.1, balanced_accuracy_mean=0.6,
                                 balanced_accuracy_sd=0.1)])
    comparison = pd.DataFrame([dict(image_type="unet", metric="accuracy", mean_diff=0.1, p_bh=0.4),
                               dict(image_type="unet", metric="balanced_accuracy", mean_diff=0.1, p_bh=0.03)])
    d = paper.compare_diagnosis(summary, comparison).set_index(["metric", "image_type"])
    assert d.loc[("accuracy", "U-Net"), "paper_low"] == 0.55 and d.loc[("accuracy", "U-Net"), "paper_high"] == 0.62
    assert d.loc[("balanced_accuracy", "U-Net"), "here_p_bh"] == 0.03
    assert np.isnan(d.loc[("accuracy", "3T"), "here_diff"])


def _run_tables(root):
    """The six tables of a tiny run, written where chapters 04, 06, 07 and 08 put them."""
    summary = pd.DataFrame([dict(criterion=c, variant=v, mean_rank=r, sd=0.5, n=4)
                            for c in ("looks_best", "most_detailed")
                            for v, r in (("U-Net", 1.5), ("7T", 1.8), ("3T", 2.7))])
    rows = [dict(key=k, image_type=t, structure=s, dice=0.7 + 0.02 * (t == "unet") + 0.01 * i)
            for i, k in enumerate(["sub-001", "sub-002", "sub-003"]) for t in ("3T", "unet")
            for s in ("Left-Amygdala", "Right-Amygdala")]
    tables = {
        "scores": _scores(), "rank_summary": summary,
        "anova": pd.DataFrame([dict(criterion="looks_best", unit="rater_id", n_subjects=3, F=12.5, df_effect=2,
                                    df_error=4, p=0.019), dict(criterion="looks_best", unit="query_index",
                                                               n_subjects=4, F=3.0, df_effect=2, df_error=6, p=0.1)]),
        "structure_dice": pd.DataFrame(rows),
        "score_summary": pd.DataFrame([dict(image_type="3T", accuracy_mean=0.6, accuracy_sd=0.1,
                                            balanced_accuracy_mean=0.5, balanced_accuracy_sd=0.1),
                                       dict(image_type="unet", accuracy_mean=0.65, accuracy_sd=0.1,
                                            balanced_accuracy_mean=0.55, balanced_accuracy_sd=0.1)]),
        "comparison": pd.DataFrame([dict(image_type="unet", metric="accuracy", mean_diff=0.05, p_bh=0.4),
                                    dict(image_type="unet", metric="balanced_accuracy", mean_diff=0.05, p_bh=0.01)]),
    }
    for name, (stage, fname) in paper.RUN_TABLES.items():
        (root / stage).mkdir(parents=True, exist_ok=True)
        tables[name].to_csv(root / stage / fname, sep="\t", index=False)
    return tables


def test_read_run_tables_names_the_missing_chapters(tmp_path):
    written = _run_tables(tmp_path)
    tables = paper.read_run_tables(tmp_path)
    assert list(tables) == list(paper.RUN_TABLES)
    pd.testing.assert_frame_equal(tables["anova"], written["anova"])
    (tmp_path / "07_segmentation" / "structure_dice.tsv").unlink()
    (tmp_path / "08_diagnosis" / "comparison.tsv").unlink()
    with pytest.raises(FileNotFoundError, match=r"structure_dice.tsv \(chapter 07\); .*comparison.tsv \(chapter 08\)"):
        paper.read_run_tables(tmp_path)


def test_table1_text_and_gains_figure():
    import matplotlib

    matplotlib.use("Agg")
    assert paper.mean_sd_text(0.5, 0.01234) == "0.500 ± 0.012" and paper.mean_sd_text(2.0, np.nan, 1) == "2.0"
    assert paper.mean_sd_text(np.nan, 0.1) == ""
    t1 = paper.compare_table1(_scores())
    text = paper.table1_text(t1)
    assert list(text.columns) == ["paper psnr", "paper ssim", "paper mean_dice", "here psnr", "here ssim",
                                  "here mean_dice"]
    assert text.index[0] == "3T" and "my-model" in text.index
    assert text.loc["U-Net", "paper psnr"] == "17.790 ± 0.690" and text.loc["U-Net", "here psnr"] == "24.000 ± 1.000"
    assert text.loc["WATNet", "here ssim"] == "" and text.loc["my-model", "paper ssim"] == ""
    fig = paper.plot_table1_gains(t1, run_label="this run (r1)")
    psnr = fig.axes[0]
    labels = [t.get_text() for t in psnr.get_yticklabels()]
    assert labels[:2] == ["U-Net", "my-model"] and "3T" not in labels  # the run's types first, then the paper's
    here_bars = [b for b in psnr.patches if b.get_facecolor()[:3] == matplotlib.colors.to_rgb("tab:blue")]
    assert here_bars[0].get_width() == pytest.approx(3.0) and here_bars[1].get_width() == pytest.approx(-2.0)
    assert psnr.get_legend().get_texts()[1].get_text() == "this run (r1)"


def test_anova_text_and_rank_figure(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    tables = _run_tables(tmp_path)
    lines = paper.anova_text(tables["anova"])
    assert lines[0].startswith("paper: repeated-measures ANOVA of the 'looks best' ranks F = 31.02")
    assert lines[1:] == ["here:  looks_best: F(2, 4) = 12.50, p = 0.0190 (3 raters)"]  # raters only
    ranks = paper.compare_ranks(tables["rank_summary"])
    fig = paper.plot_rank_positions(ranks)
    assert [ax.get_title() for ax in fig.axes] == ["looks best", "most detailed"]
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert labels[:3] == ["GAN U-Net", "U-Net", "7T"]  # the paper's order, per criterion
    assert [t.get_text() for t in fig.axes[1].get_yticklabels()][:3] == ["GAN U-Net", "7T", "U-Net"]


def test_amygdala_gains_and_figure(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    sd = _run_tables(tmp_path)["structure_dice"]
    gains = paper.amygdala_gains(sd)
    assert list(gains.columns) == ["U-Net"] and np.allclose(gains["U-Net"], 0.02)
    assert paper.amygdala_gains(sd, baseline="7T").empty
    amy = paper.compare_amygdala(sd)
    fig = paper.plot_amygdala_gains(amy, sd)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == list(amy["image_type"])
    (subjects,) = [c for c in ax.collections if isinstance(c, matplotlib.collections.PathCollection)]
    dots = np.asarray(subjects.get_offsets())
    assert np.allclose(dots[:, 0], 0.02) and len(dots) == 3


def test_diagnosis_figure_and_summary_table(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    tables = _run_tables(tmp_path)
    dx = paper.compare_diagnosis(tables["score_summary"], tables["comparison"])
    fig = paper.plot_diagnosis(dx)
    assert [ax.get_xlabel() for ax in fig.axes] == ["accuracy", "balanced accuracy"]
    t1 = paper.compare_table1(tables["scores"])
    ranks = paper.compare_ranks(tables["rank_summary"])
    amy = paper.compare_amygdala(tables["structure_dice"])
    s = paper.summary_table(t1, paper.rank_order_agreement(ranks), amy, dx)
    assert list(s["result"].unique()) == ["Table 1", "survey", "amygdala", "diagnosis"]
    row = s[s.quantity == "psnr gain, U-Net"].iloc[0]
    assert row["paper"] == "+0.900" and row["here"] == "+3.000" and row["agrees"] == "yes"
    assert s[s.quantity == "psnr gain, my-model"].iloc[0]["agrees"] == "not in the paper"
    survey = s[s.result == "survey"].set_index("quantity")
    assert survey.loc["order of 3 shared types, looks_best", "here"] == "U-Net < 7T < 3T"
    amyg = s[s.result == "amygdala"].iloc[0]
    assert amyg["quantity"] == "Dice gain, U-Net" and amyg["here"].startswith("+0.020 (p_BH = ")
    diag = s[s.result == "diagnosis"].set_index("quantity")["agrees"]
    assert diag["accuracy difference, U-Net minus 3T"] == "yes"  # not significant, as in the paper
    assert diag["balanced_accuracy difference, U-Net minus 3T"] == "no"


def test_nodiag_variants_stand_for_the_papers_conditioned_models_only_when_the_run_lacks_those():
    names = paper.match_paper_variants(pd.Series(["3T", "unet-nodiag", "gan-unet-nodiag", "vnet"]))
    assert list(names) == ["3T", "U-Net", "GAN U-Net", "V-Net"]
    both = paper.match_paper_variants(pd.Series(["unet", "unet-nodiag"]))
    assert list(both) == ["U-Net", "U-Net nodiag"]
    summary = pd.DataFrame({"criterion": ["looks_best"] * 3, "variant": ["3T", "7T", "gan-unet-nodiag"],
                            "mean_rank": [2.5, 2.0, 1.5], "sd": [0.5, 0.5, 0.5], "n": [4, 4, 4]})
    r = paper.compare_ranks(summary).set_index(["criterion", "image_type"])
    assert r.loc[("looks_best", "GAN U-Net"), "here_rank"] == 1.5


def test_the_papers_amygdala_numbers_fit_one_mean_per_participant_and_bh_over_three_pairs():
    """t = 0.017 / (0.017 / sqrt(20)) = 4.47 from the printed numbers; 4.56 lies inside what their rounding allows
    with n = 20 (4.22-4.74) and outside with n = 40 sides (5.96-6.71); p(4.56, df 19) = 0.00021 prints as the
    paper's 0.0003 only after BH over three pairs in which U-Net vs GAN U-Net has the smallest p (x 3/2)."""
    t = paper.amygdala_t_check().set_index(["image_type", "n"])
    gan20, gan40 = t.loc[("GAN U-Net", 20)], t.loc[("GAN U-Net", 40)]
    assert gan20["t_rounded"] == pytest.approx(0.017 / (0.017 / np.sqrt(20)))
    assert round(gan20["t_rounded"], 2) == 4.47 and gan20["fits"] and not gan40["fits"]
    assert (round(gan20["t_low"], 2), round(gan20["t_high"], 2)) == (4.22, 4.74)
    assert (round(gan40["t_low"], 2), round(gan40["t_high"], 2)) == (5.96, 6.71)
    assert t.loc[("U-Net", 20), "fits"]
    p = paper.amygdala_p_check()
    assert p["fits"].tolist() == [True, False, False, False]
    assert p.loc[0, "p_gan_unet"] == pytest.approx(1.5 * 2 * stats.t.sf(4.56, 19))
    assert p.loc[0, "p_unet"] == pytest.approx(2 * stats.t.sf(0.56, 19))
