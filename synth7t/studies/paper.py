"""The paper's reported results, and tables that set them beside the same analyses of a run.

Gicquel et al. report four results that this toolkit reproduces as analyses (chapters 04, 06, 07, 08 of the book):

- **Table 1** (§3.1): PSNR, SSIM and mean segmentation Dice of each image type against the real 7T, 28 test
  participants, mean ± SD.
- **The survey** (§3.2, Figure 4C): mean rank ± SD that four raters gave six image types (1 = best), for "looks best"
  and "most detailed".
- **Amygdala segmentation** (§3.3, Figure 5): Dice against manual segmentations of 20 participants; the mean gain of
  each synthetic type over the 3T with its paired t-test.
- **Diagnosis prediction** (§3.4, Figure 6A): accuracy and balanced accuracy of random forests over 1000 repeats,
  reported as ranges over the image types, with no significant difference between types.

The numbers below are transcribed from the paper's text (``PAPER.txt``); they are the paper's, not computed here.
The ``compare_*`` functions take the tables a run writes and return one row per quantity with the paper's value,
the run's value, and whether both point the same way (sign of the gain over the 3T, order of the ranks). Levels are
not comparable across datasets (the paper's 3T SSIM of 0.565 versus about 0.9 on the simulated demo cohort); the
gains and orders are what the comparison is about.
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np
import pandas as pd
from scipy import stats as sps

from ..data.names import display_name
from .stats import paired_tests

#: Table 1 of the paper (28 test participants; mean, SD).
TABLE1 = pd.DataFrame(
    [
        ("3T", 16.89, 0.66, 0.565, 0.025, 0.879, 0.009),
        ("WATNet", 17.87, 0.62, 0.579, 0.023, 0.877, 0.009),
        ("V-Net", 17.75, 0.61, 0.574, 0.024, 0.877, 0.009),
        ("U-Net", 17.79, 0.69, 0.612, 0.025, 0.902, 0.010),
        ("GAN U-Net", 17.44, 0.62, 0.592, 0.025, 0.906, 0.010),
        ("U-Net nodiag", 17.99, 0.71, 0.614, 0.025, 0.904, 0.010),
        ("GAN U-Net nodiag", 17.63, 0.59, 0.598, 0.026, 0.909, 0.010),
    ],
    columns=["image_type", "psnr", "psnr_sd", "ssim", "ssim_sd", "mean_dice", "mean_dice_sd"],
)
TABLE1_N = 28

#: Survey mean ranks (§3.2; 4 raters, 28 queries, 6 image types ranked 1 = best to 6).
RANKS = pd.DataFrame(
    [
        ("looks_best", "GAN U-Net", 1.7, 1.0), ("looks_best", "U-Net", 2.5, 1.2), ("looks_best", "7T", 2.8, 1.4),
        ("looks_best", "3T", 4.4, 1.2), ("looks_best", "WATNet", 4.5, 1.1), ("looks_best", "V-Net", 5.1, 1.1),
        ("most_detailed", "GAN U-Net", 1.8, 0.92), ("most_detailed", "7T", 2.3, 1.5),
        ("most_detailed", "U-Net", 2.8, 1.1), ("most_detailed", "3T", 4.5, 1.2),
        ("most_detailed", "WATNet", 4.6, 1.0), ("most_detailed", "V-Net", 5.2, 1.1),
    ],
    columns=["criterion", "image_type", "mean_rank", "sd"],
)
RANKS_N_TYPES = 6
#: Repeated-measures ANOVA of the "looks best" ranks (§3.2).
RANKS_ANOVA = {"criterion": "looks_best", "F": 31.02, "p": "< 0.0001"}

#: Amygdala Dice gain over the 3T against manual segmentations (§3.3; 20 participants, FDR-corrected paired t-tests).
AMYGDALA = pd.DataFrame(
    [
        ("U-Net", 0.002, 0.018, 0.56, 0.58, "better than the 3T for 9 of 20"),
        ("GAN U-Net", 0.017, 0.017, 4.56, 0.0003, "closest to the manual segmentation for 18 of 20"),
    ],
    columns=["image_type", "mean_gain", "sd_gain", "t", "p", "count"],
)
AMYGDALA_N = 20

#: Where the amygdala t-test's numbers come from: the rounded gains print 3 decimals (0.017 ± 0.017)
AMYGDALA_DECIMALS = 3
#: the designs :func:`amygdala_t_check` tries: one value per participant (both sides averaged) or each side a pair
AMYGDALA_DESIGNS = {"mean of both sides per participant": AMYGDALA_N, "each side a pair": 2 * AMYGDALA_N}

#: Diagnosis prediction (§3.4): ranges over 3T, U-Net and GAN U-Net of the mean scores of 1000 repeats.
DIAGNOSIS = {"accuracy": (0.55, 0.62), "balanced_accuracy": (0.53, 0.55), "n": 3168,
             "difference": "not significant between image types"}


def _sign(x: float) -> int:
    return 0 if not np.isfinite(x) or x == 0 else (1 if x > 0 else -1)


def _require(df: pd.DataFrame, cols, what: str) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise ValueError(f"{what} lacks column(s) {', '.join(missing)} (has {', '.join(map(str, df.columns))})")


def match_paper_variants(image_types: pd.Series) -> pd.Series:
    """Display names of a run's image types as the paper's survey and amygdala study name them.

    Those two studies used the models conditioned on the diagnosis ("U-Net", "GAN U-Net"); a run that trained only
    the ``-nodiag`` variants (the book's demo, because its diagnosis study needs them) is compared through them: a
    run's "U-Net nodiag" stands for "U-Net" when the run has no "U-Net". The paper's Table 1 shows both variants
    scoring alike (§3.1); Table 1 itself keeps the exact rows.
    """
    names = image_types.map(display_name)
    present = set(names)
    return names.map(lambda t: t[: -len(" nodiag")] if t.endswith(" nodiag") and t[: -len(" nodiag")] not in present
                     else t)


def compare_table1(scores: pd.DataFrame) -> pd.DataFrame:
    """Table 1 beside a run's: mean ± SD per image type and each metric's gain over the 3T.

    Args:
        scores: the per-subject table of chapter 04 (``04_evaluate/scores.tsv``: ``key``, ``image_type``,
            ``psnr``, ``ssim``, ``mean_dice``); image types by their display names (``U-Net``) or run names (``unet``).

    Returns:
        One row per (image type, metric) present in the paper or the run: ``paper``, ``paper_sd``,
        ``paper_gain`` (minus the paper's 3T), ``here``, ``here_sd``, ``here_n``, ``here_gain`` (minus the
        run's 3T) and ``same_direction`` (both gains have the same sign; empty where either is missing).
    """
    _require(scores, ["key", "image_type", "psnr", "ssim", "mean_dice"], "scores")
    s = scores.assign(image_type=scores["image_type"].map(display_name))
    rows = []
    types = list(dict.fromkeys([*TABLE1["image_type"], *s["image_type"]]))
    for metric in ("psnr", "ssim", "mean_dice"):
        paper_base = float(TABLE1.set_index("image_type").loc["3T", metric])
        vals = s.dropna(subset=[metric]).groupby("image_type")[metric]
        here_mean, here_sd, here_n = vals.mean(), vals.std(ddof=1), vals.count()
        here_base = float(here_mean.get("3T", np.nan))
        for t in types:
            if t == "7T":
                continue
            p = TABLE1[TABLE1["image_type"] == t]
            paper = float(p[metric].iloc[0]) if len(p) else np.nan
            here = float(here_mean.get(t, np.nan))
            pg = paper - paper_base if t != "3T" else np.nan
            hg = here - here_base if t != "3T" else np.nan
            same = "" if not (np.isfinite(pg) and np.isfinite(hg)) else ("yes" if _sign(pg) == _sign(hg) else "no")
            rows.append(dict(metric=metric, image_type=t, paper=paper,
                             paper_sd=float(p[f"{metric}_sd"].iloc[0]) if len(p) else np.nan,
                             paper_gain=pg, here=here, here_sd=float(here_sd.get(t, np.nan)),
                             here_n=int(here_n.get(t, 0)), here_gain=hg, same_direction=same))
    return pd.DataFrame(rows)


def compare_ranks(rank_summary: pd.DataFrame) -> pd.DataFrame:
    """The survey's mean ranks beside a run's, also as a position from 0 (best) to 1 (worst).

    The paper ranked six image types and a run usually fewer, so a raw mean rank of 2 means different things;
    ``position = (mean rank - 1) / (number of types - 1)`` puts both on one scale.

    Args:
        rank_summary: chapter 06's ``rank_summary.tsv`` (``criterion``, ``variant``, ``mean_rank``, ``sd``, ``n``).

    Returns:
        One row per (criterion, image type) of the paper or the run: ``paper_rank``, ``paper_sd``,
        ``paper_position``, ``here_rank``, ``here_sd``, ``here_position``, ``here_n``.
    """
    _require(rank_summary, ["criterion", "variant", "mean_rank", "sd"], "rank_summary")
    here = rank_summary.assign(image_type=match_paper_variants(rank_summary["variant"]))
    rows = []
    for crit in list(dict.fromkeys([*RANKS["criterion"], *here["criterion"]])):
        h = here[here["criterion"] == crit].set_index("image_type")
        p = RANKS[RANKS["criterion"] == crit].set_index("image_type")
        k_here = len(h)
        for t in list(dict.fromkeys([*p.index, *h.index])):
            pr = float(p["mean_rank"].get(t, np.nan))
            hr = float(h["mean_rank"].get(t, np.nan))
            rows.append(dict(
                criterion=crit, image_type=t, paper_rank=pr, paper_sd=float(p["sd"].get(t, np.nan)),
                paper_position=(pr - 1) / (RANKS_N_TYPES - 1),
                here_rank=hr, here_sd=float(h["sd"].get(t, np.nan)),
                here_position=(hr - 1) / (k_here - 1) if k_here > 1 else np.nan,
                here_n=int(h["n"].get(t, 0)) if "n" in h.columns else np.nan))
    return pd.DataFrame(rows)


def rank_order_agreement(ranks: pd.DataFrame) -> pd.DataFrame:
    """For each criterion, whether the run orders the image types it shares with the paper as the paper does.

    Args:
        ranks: the output of :func:`compare_ranks`.

    Returns:
        One row per criterion: ``shared`` (types ranked in both), ``paper_order``, ``here_order`` (best first)
        and ``same_order``.
    """
    rows = []
    for crit, g in ranks.groupby("criterion", sort=False):
        g = g.dropna(subset=["paper_rank", "here_rank"])
        po = list(g.sort_values("paper_rank")["image_type"])
        ho = list(g.sort_values("here_rank")["image_type"])
        rows.append(dict(criterion=crit, shared=len(g), paper_order=" < ".join(po), here_order=" < ".join(ho),
                         same_order="yes" if po == ho and len(po) > 1 else ("" if len(po) < 2 else "no")))
    return pd.DataFrame(rows)


def compare_amygdala(structure_dice: pd.DataFrame, *, baseline: str = "3T",
                     structures=("Left-Amygdala", "Right-Amygdala")) -> pd.DataFrame:
    """The amygdala Dice gain over the 3T beside the paper's (§3.3).

    The run's tests are the paper's design (:func:`synth7t.studies.lone.amygdala_tests`): per subject the Dice of
    the left and right amygdala are averaged, every pair of image types is tested by a paired t-test (each
    synthetic type against the baseline, and the synthetic types against each other), and Benjamini–Hochberg
    runs over all those pairs. The rows here are the tests against the baseline.

    Args:
        structure_dice: chapter 07's ``structure_dice.tsv`` (``key``, ``image_type``, ``structure``, ``dice``).
        baseline: the image type the gains are measured from.
        structures: the structures averaged per subject.

    Returns:
        One row per synthetic type of the paper or the run: the paper's ``paper_gain``, ``paper_sd``, ``paper_t``,
        ``paper_p``, ``paper_count``; the run's ``here_gain``, ``here_sd``, ``here_t``, ``here_p_bh``, ``here_n``,
        ``here_better`` (subjects whose Dice beats the baseline's); ``same_direction`` (signs of the gains) and
        ``same_conclusion`` (both significant at 0.05 with the same sign, or both not significant).
    """
    from .lone import amygdala_tests

    _require(structure_dice, ["key", "image_type", "structure", "dice"], "structure_dice")
    d = structure_dice[structure_dice["structure"].isin(structures)]
    d = d.assign(image_type=match_paper_variants(d["image_type"]))
    base = display_name(baseline)
    here = pd.DataFrame()
    better = {}
    if len(d) and base in set(d["image_type"]) and d["image_type"].nunique() > 1:
        tests = amygdala_tests(d, baseline=base, structures=list(structures))
        here = tests[tests["baseline"] == base]
        per = d.groupby(["key", "image_type"], as_index=False)["dice"].mean()
        wide = per.pivot(index="key", columns="image_type", values="dice")
        better = {t: int((wide[t] > wide[base]).sum()) for t in wide.columns if t != base}
        here = here.set_index("image_type")
    rows = []
    for t in list(dict.fromkeys([*AMYGDALA["image_type"], *(here.index if len(here) else [])])):
        p = AMYGDALA[AMYGDALA["image_type"] == t]
        h = here.loc[t] if len(here) and t in here.index else None
        pg = float(p["mean_gain"].iloc[0]) if len(p) else np.nan
        hg = float(h["mean_diff"]) if h is not None else np.nan
        same = "" if not (np.isfinite(pg) and np.isfinite(hg)) else ("yes" if _sign(pg) == _sign(hg) else "no")
        conclusion = ""
        if h is not None and len(p) and np.isfinite(h["p_bh"]):
            sig_p, sig_h = float(p["p"].iloc[0]) < 0.05, float(h["p_bh"]) < 0.05
            conclusion = "yes" if (sig_p == sig_h and (not sig_p or same == "yes")) else "no"
        rows.append(dict(
            image_type=t, paper_gain=pg, paper_sd=float(p["sd_gain"].iloc[0]) if len(p) else np.nan,
            paper_t=float(p["t"].iloc[0]) if len(p) else np.nan, paper_p=float(p["p"].iloc[0]) if len(p) else np.nan,
            paper_count=str(p["count"].iloc[0]) if len(p) else "",
            here_gain=hg, here_sd=float(h["sd_diff"]) if h is not None else np.nan,
            here_t=float(h["t"]) if h is not None else np.nan, here_p_bh=float(h["p_bh"]) if h is not None else np.nan,
            here_n=int(h["n"]) if h is not None else 0,
            here_better="" if h is None else f"{better.get(t, 0)} of {int(h['n'])}", same_direction=same,
            same_conclusion=conclusion))
    return pd.DataFrame(rows)


def compare_diagnosis(score_summary: pd.DataFrame, comparison: Optional[pd.DataFrame] = None) -> pd.DataFrame:
    """The diagnosis prediction's accuracies beside the paper's ranges (§3.4).

    Args:
        score_summary: chapter 08's ``score_summary.tsv`` (``image_type``, ``accuracy_mean``,
            ``balanced_accuracy_mean``, ...).
        comparison: chapter 08's ``comparison.tsv`` (``image_type``, ``metric``, ``mean_diff``, ``p_bh``), to
            report whether the run, like the paper, finds no significant difference.

    Returns:
        One row per (metric, image type): ``paper_low``, ``paper_high`` (the paper's range over its three
        image types), ``here``, ``here_sd``, ``here_diff`` (minus the run's baseline) and ``here_p_bh``.
    """
    _require(score_summary, ["image_type", "accuracy_mean", "balanced_accuracy_mean"], "score_summary")
    rows = []
    for metric in ("accuracy", "balanced_accuracy"):
        lo, hi = DIAGNOSIS[metric]
        for _, r in score_summary.iterrows():
            diff = p_bh = np.nan
            if comparison is not None and len(comparison):
                c = comparison[(comparison["image_type"] == r["image_type"]) & (comparison["metric"] == metric)]
                if len(c):
                    diff, p_bh = float(c["mean_diff"].iloc[0]), float(c["p_bh"].iloc[0])
            rows.append(dict(metric=metric, image_type=display_name(r["image_type"]), paper_low=lo, paper_high=hi,
                             here=float(r[f"{metric}_mean"]), here_sd=float(r.get(f"{metric}_sd", math.nan)),
                             here_diff=diff, here_p_bh=p_bh))
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------- a run's tables (chapter 09)

#: the tables of a run that the comparison reads: ``{name: (stage folder, file)}``
RUN_TABLES = {
    "scores": ("04_evaluate", "scores.tsv"),
    "rank_summary": ("06_rating_analysis", "rank_summary.tsv"),
    "anova": ("06_rating_analysis", "anova.tsv"),
    "structure_dice": ("07_segmentation", "structure_dice.tsv"),
    "score_summary": ("08_diagnosis", "score_summary.tsv"),
    "comparison": ("08_diagnosis", "comparison.tsv"),
}


def read_run_tables(run_dir) -> dict[str, pd.DataFrame]:
    """The tables of chapters 04, 06, 07 and 08 of a run (:data:`RUN_TABLES`), by name.

    Raises:
        FileNotFoundError: listing every missing table with the chapter that writes it.
    """
    from pathlib import Path

    paths = {k: Path(run_dir) / stage / name for k, (stage, name) in RUN_TABLES.items()}
    missing = [f"{p} (chapter {RUN_TABLES[k][0][:2]})" for k, p in paths.items() if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"the comparison with the paper reads the outputs of chapters 04, 06, 07 and 08 of "
                                f"{run_dir}; missing: " + "; ".join(missing))
    return {k: pd.read_csv(p, sep="\t") for k, p in paths.items()}


def mean_sd_text(mean: float, sd: float, digits: int = 3) -> str:
    """``"m ± s"``; ``"m"`` without a finite SD; ``""`` without a finite mean."""
    if not np.isfinite(mean):
        return ""
    return f"{mean:.{digits}f} ± {sd:.{digits}f}" if np.isfinite(sd) else f"{mean:.{digits}f}"


def table1_text(table1: pd.DataFrame) -> pd.DataFrame:
    """:func:`compare_table1` as the paper prints it: one row per image type, ``paper <metric>`` and
    ``here <metric>`` columns of ``mean ± SD`` text (empty where a study lacks the type)."""
    t = table1.assign(paper_txt=[mean_sd_text(m, s) for m, s in zip(table1["paper"], table1["paper_sd"])],
                      here_txt=[mean_sd_text(m, s) for m, s in zip(table1["here"], table1["here_sd"])])
    metrics = list(dict.fromkeys(t["metric"]))
    wide = t.pivot(index="image_type", columns="metric", values=["paper_txt", "here_txt"])
    wide = wide.reindex(columns=pd.MultiIndex.from_product([["paper_txt", "here_txt"], metrics]))
    wide.columns = [f"{a.split('_')[0]} {b}" for a, b in wide.columns]
    return wide.reindex(list(dict.fromkeys(t["image_type"]))).fillna("")


def plot_table1_gains(table1: pd.DataFrame, *, baseline: str = "3T", run_label: str = "this run", axes=None):
    """Table 1 as gains over the 3T: one panel per metric, the paper's gain (grey) beside the run's (blue) for
    every image type of either study.

    Args:
        table1: :func:`compare_table1`.
        baseline: the image type the gains are taken from (left out of the figure).
        run_label: the run's name in the legend.
        axes: one matplotlib axis per metric (PSNR, SSIM, mean Dice).

    Returns:
        The matplotlib figure.
    """
    import matplotlib.pyplot as plt

    labels = {"psnr": "PSNR gain (dB)", "ssim": "SSIM gain", "mean_dice": "mean Dice gain"}
    here = table1.dropna(subset=["here"])
    types = list(dict.fromkeys([*[t for t in here["image_type"] if t != baseline],
                                *[t for t in TABLE1["image_type"] if t != baseline]]))
    if axes is None:
        fig, axes = plt.subplots(1, 3, figsize=(13, 0.45 * len(types) + 1.6), sharey=True)
    axes = np.ravel(axes)
    fig = axes[0].figure
    y = np.arange(len(types))
    for ax, (m, label) in zip(axes, labels.items()):
        g = table1[table1["metric"] == m].set_index("image_type").reindex(types)
        ax.barh(y - 0.2, g["paper_gain"], height=0.38, color="0.65", label=f"paper ({TABLE1_N} participants)")
        ax.barh(y + 0.2, g["here_gain"], height=0.38, color="tab:blue", label=run_label)
        ax.axvline(0, color="k", lw=0.8)
        ax.set_xlabel(label)
        ax.set_title(label.replace(" gain", "") + f" minus the {baseline}'s")
    axes[0].set_yticks(y, types)
    axes[0].invert_yaxis()
    axes[0].legend(loc="lower right", fontsize=8)
    fig.suptitle(f"Table 1 as gains over the {baseline}: paper (grey) and this run (blue; missing bar: type not "
                 "trained here)")
    fig.tight_layout()
    return fig


def anova_text(anova: pd.DataFrame) -> list[str]:
    """The paper's repeated-measures ANOVA of the ranks and the run's (over raters), one line each."""
    lines = [f"paper: repeated-measures ANOVA of the 'looks best' ranks F = {RANKS_ANOVA['F']}, p {RANKS_ANOVA['p']} "
             "(4 raters)"]
    an = anova[anova["unit"] == "rater_id"] if "unit" in anova.columns else anova
    an = an.dropna(subset=["F"])
    lines += [f"here:  {r['criterion']}: F({r['df_effect']:.0f}, {r['df_error']:.0f}) = {r['F']:.2f}, "
              f"p = {r['p']:.4f} ({r['n_subjects']:.0f} raters)" for _, r in an.iterrows()]
    return lines


def plot_rank_positions(ranks: pd.DataFrame, *, axes=None):
    """The survey's ranks as positions (0 = best, 1 = worst, ± SD on that scale), paper (grey) beside the run
    (blue), one panel per criterion, image types in the paper's order.

    Args:
        ranks: :func:`compare_ranks`.
        axes: one matplotlib axis per criterion.

    Returns:
        The matplotlib figure.
    """
    import matplotlib.pyplot as plt

    crits = list(dict.fromkeys(ranks["criterion"]))
    if axes is None:
        # not sharey: each criterion orders the types its own way, and shared ticks would carry the last one's
        fig, axes = plt.subplots(1, len(crits), figsize=(6 * len(crits), 3.6))
    axes = np.atleast_1d(axes).ravel()
    fig = axes[0].figure
    for ax, crit in zip(axes, crits):
        g = ranks[ranks["criterion"] == crit].sort_values("paper_position", na_position="last")
        g = g.reset_index(drop=True)
        y = np.arange(len(g))
        ax.errorbar(g["paper_position"], y - 0.12, xerr=g["paper_sd"] / (RANKS_N_TYPES - 1), fmt="o", color="0.55",
                    label="paper")
        k_here = int(g["here_rank"].notna().sum())
        ax.errorbar(g["here_position"], y + 0.12, xerr=g["here_sd"] / max(k_here - 1, 1), fmt="s",
                    color="tab:blue", label=f"this run ({k_here} types)")
        ax.set_yticks(y, g["image_type"])
        ax.set_xlim(-0.35, 1.35)
        ax.set_xlabel("rank position (0 = best, 1 = worst), ± SD")
        ax.set_title(crit.replace("_", " "))
        ax.invert_yaxis()
    axes[0].legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def amygdala_gains(structure_dice: pd.DataFrame, *, baseline: str = "3T",
                   structures=("Left-Amygdala", "Right-Amygdala")) -> pd.DataFrame:
    """Per subject (rows) and image type (columns, display names), the amygdala Dice (left and right averaged)
    minus the baseline's; the baseline's own column is dropped."""
    d = structure_dice[structure_dice["structure"].isin(structures)]
    per = d.groupby(["key", "image_type"])["dice"].mean().unstack("image_type").rename(columns=display_name)
    base = display_name(baseline)
    if base not in per.columns:
        return pd.DataFrame(index=per.index)
    return per.drop(columns=base).sub(per[base], axis=0)


def plot_amygdala_gains(amygdala: pd.DataFrame, structure_dice: pd.DataFrame, *, baseline: str = "3T", ax=None):
    """The amygdala Dice gain over the baseline: the paper's mean ± SD (grey diamonds) beside each of the run's
    subjects (blue dots) and their mean (bar), one row per image type.

    Args:
        amygdala: :func:`compare_amygdala`.
        structure_dice: chapter 07's per-subject table (``key``, ``image_type``, ``structure``, ``dice``).
        baseline: the image type the gains are taken from.
        ax: a matplotlib axis.

    Returns:
        The matplotlib figure.
    """
    import matplotlib.pyplot as plt

    gains = amygdala_gains(structure_dice, baseline=baseline)
    if ax is None:
        fig, ax = plt.subplots(figsize=(10, 0.6 * len(amygdala) + 1.8))
    fig = ax.figure
    amy = amygdala.reset_index(drop=True)
    paper_rows = amy[np.isfinite(amy["paper_gain"].astype(float))]
    ax.errorbar(paper_rows["paper_gain"], paper_rows.index - 0.15, xerr=paper_rows["paper_sd"], fmt="D", color="0.55",
                label=f"paper mean ± SD ({AMYGDALA_N} participants)")
    here = [(i, gains[t].dropna()) for i, t in enumerate(amy["image_type"]) if t in gains.columns]
    if here:
        ax.scatter(np.concatenate([d.to_numpy() for _, d in here]),
                   np.concatenate([np.full(len(d), i + 0.15) for i, d in here]), color="tab:blue", s=18, alpha=0.8,
                   label="this run, one subject")
        ax.vlines([d.mean() for _, d in here], [i + 0.02 for i, _ in here], [i + 0.28 for i, _ in here],
                  color="tab:blue", lw=2.5)
    ax.axvline(0, color="k", lw=0.8)
    ax.set_yticks(range(len(amy)), amy["image_type"])
    ax.invert_yaxis()
    ax.set_xlabel(f"amygdala Dice minus the {baseline}'s (mean of left and right)")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    ax.set_title(f"Amygdala Dice gain over the {baseline} (bar: this run's mean)")
    fig.tight_layout()
    return fig


def plot_diagnosis(diagnosis: pd.DataFrame, *, axes=None):
    """Accuracy and balanced accuracy of the run (mean ± SD per image type) against the paper's range (band).

    Args:
        diagnosis: :func:`compare_diagnosis`.
        axes: two matplotlib axes.

    Returns:
        The matplotlib figure.
    """
    import matplotlib.pyplot as plt

    if axes is None:
        fig, axes = plt.subplots(1, 2, figsize=(10, 2.8), sharey=True)
    axes = np.ravel(axes)
    fig = axes[0].figure
    for ax, m in zip(axes, ["accuracy", "balanced_accuracy"]):
        g = diagnosis[diagnosis["metric"] == m].reset_index(drop=True)
        lo, hi = DIAGNOSIS[m]
        ax.axvspan(lo, hi, color="0.8", label="paper: range over its 3 image types")
        ax.errorbar(g["here"], np.arange(len(g)), xerr=g["here_sd"], fmt="s", color="tab:blue", label="this run ± SD")
        ax.set_yticks(range(len(g)), g["image_type"])
        ax.set_xlim(0, 1)
        ax.set_xlabel(m.replace("_", " "))
    axes[0].invert_yaxis()
    axes[0].legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    return fig


def summary_table(table1: pd.DataFrame, rank_order: pd.DataFrame, amygdala: pd.DataFrame,
                  diagnosis: pd.DataFrame, *, baseline: str = "3T", alpha: float = 0.05) -> pd.DataFrame:
    """One line per comparison with the paper, and whether the run points the same way.

    Table 1 and the survey agree when the gain has the paper's sign or the shared types come in the paper's
    order; the amygdala and diagnosis comparisons agree when the run reaches the paper's conclusion (a significant
    gain of the same sign, or no significant difference; p < ``alpha``).

    Args:
        table1: :func:`compare_table1`.
        rank_order: :func:`rank_order_agreement`.
        amygdala: :func:`compare_amygdala`.
        diagnosis: :func:`compare_diagnosis`.
        baseline: the image type the gains are taken from.
        alpha: significance level.

    Returns:
        ``result, quantity, paper, here, agrees`` (``agrees`` starts with "yes" or "no", or says that the paper
        lacks the quantity).
    """
    def signed(x: float) -> str:
        return "" if not np.isfinite(x) else f"{x:+.3f}"

    gains = table1[table1["image_type"] != display_name(baseline)].dropna(subset=["here_gain"])
    lines = [dict(result="Table 1", quantity=f"{r.metric} gain, {r.image_type}", paper=signed(r.paper_gain),
                  here=signed(r.here_gain), agrees=r.same_direction or "not in the paper")
             for r in gains.itertuples()]
    lines += [dict(result="survey", quantity=f"order of {r.shared} shared types, {r.criterion}",
                   paper=r.paper_order, here=r.here_order, agrees=r.same_order) for r in rank_order.itertuples()]
    lines += [dict(result="amygdala", quantity=f"Dice gain, {r.image_type}",
                   paper=f"{signed(r.paper_gain)} (p = {r.paper_p})" if np.isfinite(r.paper_gain) else "",
                   here=f"{r.here_gain:+.3f} (p_BH = {r.here_p_bh:.2f}, "
                        f"{'significant' if r.here_p_bh < alpha else 'not significant'})",
                   agrees=(f"{r.same_conclusion} (gain sign: {r.same_direction})" if r.same_conclusion
                           else "not in the paper"))
               for r in amygdala[amygdala["here_n"] > 0].itertuples()]
    dx = diagnosis[diagnosis["image_type"] != display_name(baseline)].dropna(subset=["here_diff"])
    lines += [dict(result="diagnosis", quantity=f"{r.metric} difference, {r.image_type} minus {baseline}",
                   paper="not significant", here=f"{r.here_diff:+.3f} (p_BH = {r.here_p_bh:.2f})",
                   agrees="no" if r.here_p_bh < alpha else "yes") for r in dx.itertuples()]
    return pd.DataFrame(lines, columns=["result", "quantity", "paper", "here", "agrees"])


def amygdala_t_check() -> pd.DataFrame:
    """Which design the paper's amygdala t-statistics fit, from its own summary numbers (§3.3).

    The paper prints a gain of 0.017 ± 0.017 (GAN U-Net) and 0.002 ± 0.018 (U-Net) over 20 participants with
    t = 4.56 and 0.56. The rounded numbers give ``t = 0.017 / (0.017 / sqrt(20)) = 4.47``, not 4.56; but the
    unrounded mean and SD may lie anywhere within half a unit of the third decimal, and over that box t spans
    :func:`synth7t.studies.stats.paired_t_bounds` (4.22 to 4.74 for the GAN U-Net with n = 20). A design fits when the
    paper's t lies inside: n = 20 (one mean per participant) fits both rows; n = 40 (each side a pair) puts the GAN
    U-Net's t between 5.97 and 6.71, so it does not fit (the U-Net's small t fits either n).

    Returns:
        One row per (image type, design): ``image_type``, ``design``, ``n``, ``t_rounded`` (from the printed
        numbers), ``t_low``, ``t_high`` (what rounding allows), ``paper_t``, ``fits``.
    """
    from .stats import paired_t_bounds, paired_t_from_summary

    rows = []
    for r in AMYGDALA.itertuples():
        for design, n in AMYGDALA_DESIGNS.items():
            low, high = paired_t_bounds(r.mean_gain, r.sd_gain, n, AMYGDALA_DECIMALS)
            rows.append(dict(image_type=r.image_type, design=design, n=n,
                             t_rounded=paired_t_from_summary(r.mean_gain, r.sd_gain, n)["t"], t_low=low, t_high=high,
                             paper_t=r.t, fits=bool(low <= r.t <= high)))
    return pd.DataFrame(rows)


def amygdala_p_check() -> pd.DataFrame:
    """Which multiple-comparison family the paper's amygdala p-values fit (§3.3).

    The p-values of the paper's t (4.56 and 0.56, 19 degrees of freedom, two-sided) are 0.00021 and 0.58. The
    paper prints 0.0003 and 0.58: Benjamini–Hochberg over the three pairs of image types multiplies the GAN U-Net's
    p by 3/2 when it is the second smallest of the three, i.e. when U-Net vs GAN U-Net has the smallest p (0.00032).
    Without correction (0.0002), over the two tests against the 3T (x 2: 0.0004) or with the GAN U-Net the smallest
    of three (x 3: 0.0006), the printed value would differ.

    Returns:
        One row per family: ``family``, ``p_gan_unet``, ``p_unet`` (adjusted, from the paper's t), and ``fits``
        (both equal the paper's at its printed precision).
    """
    from .stats import benjamini_hochberg

    t = AMYGDALA.set_index("image_type")
    raw = {k: float(2 * sps.t.sf(t.loc[k, "t"], AMYGDALA_N - 1)) for k in ("GAN U-Net", "U-Net")}
    # U-Net vs GAN U-Net: any p below the GAN U-Net's gives the same adjusted values (a tenth of it here)
    families = {
        "three pairs, U-Net vs GAN U-Net the smallest p (the paper's family)":
            benjamini_hochberg([raw["GAN U-Net"], raw["U-Net"], raw["GAN U-Net"] / 10])[:2],
        "three pairs, GAN U-Net vs 3T the smallest p":
            benjamini_hochberg([raw["GAN U-Net"], raw["U-Net"], 0.5 * (raw["GAN U-Net"] + raw["U-Net"])])[:2],
        "two tests against the 3T": benjamini_hochberg([raw["GAN U-Net"], raw["U-Net"]]),
        "no correction": np.array([raw["GAN U-Net"], raw["U-Net"]]),
    }
    rows = []
    for family, (pg, pu) in families.items():
        fits = (_printed(pg, t.loc["GAN U-Net", "p"]) and _printed(pu, t.loc["U-Net", "p"]))
        rows.append(dict(family=family, p_gan_unet=float(pg), p_unet=float(pu), fits=bool(fits)))
    return pd.DataFrame(rows)


def _printed(value: float, printed: float) -> bool:
    """Whether ``value`` rounds to ``printed`` at the precision it was printed with (1 significant digit of
    0.0003, 2 of 0.58)."""
    digits = max(0, -int(math.floor(math.log10(abs(printed))))) + (1 if printed >= 0.01 else 0)
    return round(float(value), digits) == round(float(printed), digits)
