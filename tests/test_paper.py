"""The paper's reported numbers beside a run's tables (synth7t.paper)."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from synth7t import paper


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
