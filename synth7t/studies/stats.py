"""Statistics for the rating study (paper §2.8.2) and paired tests (§2.8.3).

The paper ran "repeated-measure ANOVAs with rank as the dependent variable, image type as the within-subject
effect, and rater as the grouping variable", with Tukey (and Bonferroni-corrected) post-hoc comparisons.
Here the repeated-measures unit is configurable: ``subject="rater_id"`` (each rater's mean rank per image type,
the paper's set-up) or ``subject="query_index"``.

- :func:`rank_summary` and :func:`rank_table`: mean rank ± SD per criterion and image type (Figure 4C's numbers);
- :func:`rm_anova`, and :func:`anova_table` over criteria and units;
- :func:`tukey_table`, :func:`bonferroni_table`, and :func:`posthoc_tables` over criteria (one sign for both);
- :func:`plot_rank_violins` (Figure 4C) and :func:`plot_rater_stacked_ranks` (Figures A.8-A.11);
- :func:`paired_tests` with :func:`benjamini_hochberg` (the segmentation comparison of §2.8.3).
"""

from __future__ import annotations

from itertools import combinations
from typing import Optional, Sequence

import numpy as np
import pandas as pd
from scipy import stats as sps


def rank_summary(ranks: pd.DataFrame, order: Optional[Sequence[str]] = None,
                 criteria: Optional[Sequence[str]] = None) -> pd.DataFrame:
    """Mean and SD of the rank per criterion and variant (1 = best), with the count of rankings.

    Args:
        ranks: tidy table with ``criterion``, ``variant``, ``rank`` (e.g. :func:`synth7t.studies.rating.ranks_table`).
        order: variant order within a criterion (default: by mean rank).
        criteria: criterion order (default: alphabetical).

    Returns:
        One row per (criterion, variant): ``mean_rank``, ``sd``, ``n`` and the text ``mean ± SD``; ``criterion``
        and ``variant`` are plain strings.
    """
    g = ranks.groupby(["criterion", "variant"])["rank"]
    out = pd.DataFrame({"mean_rank": g.mean(), "sd": g.std(ddof=1), "n": g.size()}).reset_index()
    out["mean ± SD"] = [f"{m:.2f} ± {s:.2f}" for m, s in zip(out["mean_rank"], out["sd"])]
    crit_pos = {c: i for i, c in enumerate(criteria or sorted(out["criterion"].unique()))}
    out["_c"] = out["criterion"].map(crit_pos).fillna(len(crit_pos))
    if order is not None:
        var_pos = {v: i for i, v in enumerate(order)}
        out["_v"] = out["variant"].map(var_pos).fillna(len(var_pos))
    else:
        out["_v"] = out["mean_rank"]
    out = out.sort_values(["_c", "_v", "criterion", "variant"], kind="stable")
    return out.drop(columns=["_c", "_v"]).reset_index(drop=True)


def rank_table(summary: pd.DataFrame) -> pd.DataFrame:
    """The rank summary as the paper prints it: one row per image type, a ``mean ± SD`` column per criterion,
    and ``n``, the largest number of rankings of the type over the criteria.

    Args:
        summary: the output of :func:`rank_summary` (its row order gives the table's).
    """
    variants = list(dict.fromkeys(summary["variant"]))
    table = summary.pivot(index="variant", columns="criterion", values="mean ± SD")
    table = table.reindex(index=variants, columns=list(dict.fromkeys(summary["criterion"])))
    table["n"] = summary.groupby("variant")["n"].max().reindex(variants)
    return table.rename_axis(index="image type", columns=None)


def _cell_means(df: pd.DataFrame, dv: str, within: str, subject: str) -> pd.DataFrame:
    wide = df.groupby([subject, within])[dv].mean().unstack(within)
    if wide.isna().any().any():
        incomplete = wide.index[wide.isna().any(axis=1)].tolist()
        raise ValueError(f"every {subject} needs every {within}; incomplete: {incomplete[:5]}")
    return wide


def rm_anova(df: pd.DataFrame, *, dv: str = "rank", within: str = "variant", subject: str = "rater_id") -> dict:
    """One-way repeated-measures ANOVA (observations averaged within each subject x level cell).

    Args:
        df: tidy table (one criterion).
        dv: the dependent variable.
        within: the within-subject factor (image type).
        subject: the repeated-measures unit (the paper: the rater).

    Returns:
        ``{"F", "df_effect", "df_error", "p", "n_subjects", "n_levels", "eta_sq_partial"}``.
    """
    wide = _cell_means(df, dv, within, subject)
    y = wide.to_numpy(float)
    n, k = y.shape
    if n < 2 or k < 2:
        raise ValueError(f"need at least 2 {subject}s and 2 levels of {within}, got {n} and {k}")
    grand = y.mean()
    ss_effect = n * ((y.mean(0) - grand) ** 2).sum()
    ss_subject = k * ((y.mean(1) - grand) ** 2).sum()
    ss_total = ((y - grand) ** 2).sum()
    ss_error = ss_total - ss_effect - ss_subject
    df1, df2 = k - 1, (k - 1) * (n - 1)
    if ss_error <= 1e-12 * max(ss_total, 1e-300):
        f = float("inf") if ss_effect > 0 else float("nan")
        p = 0.0 if ss_effect > 0 else float("nan")
    else:
        f = (ss_effect / df1) / (ss_error / df2)
        p = float(sps.f.sf(f, df1, df2))
    return {"F": float(f), "df_effect": int(df1), "df_error": int(df2), "p": p, "n_subjects": int(n),
            "n_levels": int(k), "eta_sq_partial": float(ss_effect / (ss_effect + ss_error)) if ss_error > 0 else 1.0}


def tukey_table(df: pd.DataFrame, *, dv: str = "rank", within: str = "variant", alpha: float = 0.05) -> pd.DataFrame:
    """Tukey HSD on all rankings (statsmodels): mean difference, adjusted p, CI and reject flag per pair."""
    from statsmodels.stats.multicomp import pairwise_tukeyhsd

    res = pairwise_tukeyhsd(df[dv].to_numpy(float), df[within].astype(str).to_numpy(), alpha=alpha)
    t = pd.DataFrame(res.summary().data[1:], columns=res.summary().data[0])
    return t.rename(columns={"group1": "a", "group2": "b", "meandiff": "mean_diff", "p-adj": "p_adj",
                             "lower": "ci_low", "upper": "ci_high"})


def bonferroni_table(df: pd.DataFrame, *, dv: str = "rank", within: str = "variant",
                     subject: str = "rater_id") -> pd.DataFrame:
    """Paired t-tests between every pair of levels on the subject cell means, Bonferroni-adjusted."""
    wide = _cell_means(df, dv, within, subject)
    pairs = list(combinations(wide.columns, 2))
    rows = []
    for a, b in pairs:
        d = wide[a] - wide[b]
        if np.allclose(d, d.iloc[0]):
            t, p = (float("inf") if d.iloc[0] != 0 else float("nan")), (0.0 if d.iloc[0] != 0 else 1.0)
        else:
            t, p = sps.ttest_rel(wide[a], wide[b])
        rows.append({"a": a, "b": b, "mean_diff": float(d.mean()), "t": float(t), "p": float(p),
                     "p_bonferroni": float(min(1.0, p * len(pairs)))})
    out = pd.DataFrame(rows)
    out["reject"] = out["p_bonferroni"] < 0.05
    return out


ANOVA_COLUMNS = ["criterion", "unit", "n_subjects", "n_levels", "F", "df_effect", "df_error", "p", "eta_sq_partial",
                 "note"]


def anova_table(ranks: pd.DataFrame, criteria: Sequence[str],
                units: Sequence[str] = ("rater_id", "query_index")) -> pd.DataFrame:
    """:func:`rm_anova` of the ranks for every criterion and every repeated-measures unit.

    Args:
        ranks: tidy ``rater_id, query_index, criterion, variant, rank``.
        criteria: criteria to test, in table order.
        units: repeated-measures units; ``rater_id`` is the paper's, ``query_index`` works with one rater.

    Returns:
        One row per (criterion, unit) with the columns of :data:`ANOVA_COLUMNS`; a unit with fewer than 2
        members is listed with ``n_subjects`` and a ``note`` instead of a test.
    """
    rows = []
    for crit in criteria:
        sub = ranks[ranks["criterion"] == crit]
        for unit in units:
            n = int(sub[unit].nunique())
            if n < 2:
                what = {"rater_id": "raters", "query_index": "queries"}.get(unit, f"{unit} values")
                rows.append({"criterion": crit, "unit": unit, "n_subjects": n,
                             "note": f"needs at least 2 {what} with answers, found {n}"})
            else:
                rows.append({"criterion": crit, "unit": unit, **rm_anova(sub, subject=unit), "note": ""})
    return pd.DataFrame(rows, columns=ANOVA_COLUMNS)


def posthoc_tables(ranks: pd.DataFrame, criteria: Sequence[str], *,
                   alpha: float = 0.05) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """Tukey HSD and Bonferroni comparisons of the image types, for every criterion, with one sign convention.

    Tukey (:func:`tukey_table`) runs on all rankings of a criterion; statsmodels reports ``mean_diff`` as b - a,
    which is turned here into a - b (and the CI bounds swapped and negated), the sign of the Bonferroni table:
    negative means a ranks better. Bonferroni (:func:`bonferroni_table`) runs on the raters' mean ranks, or on
    the queries' with a single rater; ``reject`` uses ``alpha``.

    Args:
        ranks: tidy ``rater_id, query_index, criterion, variant, rank``.
        criteria: criteria to compare, in table order.
        alpha: family-wise error rate.

    Returns:
        ``(tukey, bonferroni, notes)``: the two tables with ``criterion`` first (Bonferroni also with its
        ``unit``), empty when nothing could be tested, and one note per criterion that was skipped.
    """
    tukey, bonferroni, notes = [], [], []
    for crit in criteria:
        sub = ranks[ranks["criterion"] == crit]
        if sub["variant"].nunique() < 2 or (sub.groupby("variant").size() < 2).all():
            notes.append(f"{crit}: too few rankings for post-hoc tests ({len(sub)} rank(s))")
            continue
        tk = tukey_table(sub, alpha=alpha)
        tk["mean_diff"], tk["ci_low"], tk["ci_high"] = -tk["mean_diff"], -tk["ci_high"], -tk["ci_low"]
        tukey.append(tk.assign(criterion=crit))
        unit = "rater_id" if sub["rater_id"].nunique() >= 2 else "query_index"
        if sub[unit].nunique() < 2:
            notes.append(f"{crit}: Bonferroni tests need at least 2 raters or 2 queries")
            continue
        bt = bonferroni_table(sub, subject=unit).assign(criterion=crit, unit=unit)
        bt["reject"] = bt["p_bonferroni"] < alpha
        bonferroni.append(bt)

    def tidy(parts: list) -> pd.DataFrame:
        if not parts:
            return pd.DataFrame()
        t = pd.concat(parts, ignore_index=True)
        return t[["criterion", *[c for c in t.columns if c != "criterion"]]]

    return tidy(tukey), tidy(bonferroni), notes


def answered_table(ranks: pd.DataFrame, criteria: Sequence[str], n_queries: int) -> pd.DataFrame:
    """Queries answered per rater (rows) and criterion (columns), with ``of``, the session's number of queries."""
    answered = ranks.drop_duplicates(["rater_id", "query_index", "criterion"])
    table = answered.groupby(["rater_id", "criterion"]).size().unstack("criterion")
    table = table.reindex(columns=list(criteria)).fillna(0).astype(int)
    return table.assign(of=int(n_queries)).rename_axis(columns=None)


# ------------------------------------------------------------------------- figures of the rating study


def plot_rank_violins(ranks, *, order: Optional[Sequence[str]] = None, axes=None):
    """Figure 4C analogue: violins of the ranks given to each image type, one panel per criterion.

    Args:
        ranks: tidy table with ``criterion``, ``variant``, ``rank`` (1 = best).
        order: variant order on the x axis (default: by mean rank).
    """
    import matplotlib.pyplot as plt

    crits = list(dict.fromkeys(ranks["criterion"]))
    if axes is None:
        fig, axes = plt.subplots(1, len(crits), figsize=(4.2 * len(crits), 3.4), squeeze=False)
        axes = axes[0]
    else:
        axes = np.ravel(axes)
        fig = axes[0].figure
    n_pos = int(ranks["rank"].max())
    for ax, crit in zip(axes, crits):
        sub = ranks[ranks["criterion"] == crit]
        names = list(order) if order is not None else list(sub.groupby("variant")["rank"].mean().sort_values().index)
        data = [sub.loc[sub["variant"] == v, "rank"].to_numpy(float) for v in names]
        parts = ax.violinplot([d if len(d) else [np.nan] for d in data], showmeans=True, showextrema=False)
        for body in parts["bodies"]:
            body.set_alpha(0.5)
        ax.set_xticks(range(1, len(names) + 1), names, rotation=30, ha="right", fontsize=8)
        ax.set_yticks(range(1, n_pos + 1))
        ax.invert_yaxis()  # rank 1 (best) on top
        ax.set_ylabel("rank (1 = best)")
        ax.set_title(crit.replace("_", " "))
    fig.tight_layout()
    return fig


def plot_rater_stacked_ranks(ranks, rater_id: str, *, order: Optional[Sequence[str]] = None, axes=None):
    """Figures A.8-A.11 analogue: for one rater, the share of each rank per image type (stacked bars)."""
    import matplotlib.pyplot as plt

    sub = ranks[ranks["rater_id"] == rater_id]
    crits = list(dict.fromkeys(ranks["criterion"]))
    n_pos = int(ranks["rank"].max())
    if axes is None:
        fig, axes = plt.subplots(1, len(crits), figsize=(4.2 * len(crits), 3.2), squeeze=False)
        axes = axes[0]
    else:
        axes = np.ravel(axes)
        fig = axes[0].figure
    colours = plt.get_cmap("RdYlGn_r")(np.linspace(0, 1, n_pos))
    for ax, crit in zip(axes, crits):
        c = sub[sub["criterion"] == crit]
        names = list(order) if order is not None else sorted(set(ranks["variant"]))
        counts = (c.groupby(["variant", "rank"]).size().unstack(fill_value=0)
                  .reindex(index=names, columns=range(1, n_pos + 1), fill_value=0))
        bottom = np.zeros(len(names))
        for r in range(1, n_pos + 1):
            ax.bar(range(len(names)), counts[r].to_numpy(), bottom=bottom, color=colours[r - 1], label=f"rank {r}")
            bottom += counts[r].to_numpy()
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel("queries")
        ax.set_title(f"{rater_id}: {crit.replace('_', ' ')}")
    axes[-1].legend(fontsize=7, bbox_to_anchor=(1.02, 1), loc="upper left")
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------------- paired tests (paper §2.8.3)


def benjamini_hochberg(p) -> np.ndarray:
    """Benjamini–Hochberg adjusted p-values (false discovery rate), in the order given.

    ``p_bh[i] = min over j with rank(p_j) >= rank(p_i) of min(1, p_j * m / rank(p_j))``, where m is the number
    of finite p-values; NaN entries stay NaN and do not count towards m. Equals statsmodels'
    ``multipletests(p, method="fdr_bh")[1]`` (checked in the tests).

    Args:
        p: p-values, any shape (flattened order is kept).

    Returns:
        An array of the same shape with the adjusted p-values.
    """
    arr = np.asarray(p, dtype=float)
    flat = arr.ravel()
    out = np.full(flat.shape, np.nan)
    ok = np.isfinite(flat)
    if (flat[ok] < 0).any() or (flat[ok] > 1).any():
        raise ValueError("p-values must lie in [0, 1]")
    m = int(ok.sum())
    if m:
        vals = flat[ok]
        order = np.argsort(vals, kind="stable")
        scaled = vals[order] * m / np.arange(1, m + 1)
        adj = np.minimum(1.0, np.minimum.accumulate(scaled[::-1])[::-1])
        res = np.empty(m)
        res[order] = adj
        out[ok] = res
    return out.reshape(arr.shape)


def _column(wide: pd.DataFrame, name) -> pd.Series:
    """A condition's column of a subject x condition table (empty when no subject has it)."""
    return wide[name] if name in wide.columns else pd.Series(dtype=float)


def _paired_t(cur: pd.Series, base: pd.Series) -> dict:
    """Paired t-test of ``cur`` against ``base`` over the subjects (index) that have both values.

    Returns ``n, mean, mean_baseline, mean_diff, sd_diff, t, p``: fewer than 2 pairs give NaN t and p; constant
    non-zero differences give t = ±inf and p = 0; all differences zero give NaN t and p = 1.
    """
    pair = pd.concat([cur.rename("c"), base.rename("b")], axis=1).dropna()
    d = (pair["c"] - pair["b"]).to_numpy(float)
    n = len(d)
    if n < 2:
        t, p = float("nan"), float("nan")
    elif np.allclose(d, d[0]):
        t = float("nan") if d[0] == 0 else float(np.sign(d[0]) * np.inf)
        p = 1.0 if d[0] == 0 else 0.0
    else:
        res = sps.ttest_rel(pair["c"].to_numpy(float), pair["b"].to_numpy(float))
        t, p = float(res.statistic), float(res.pvalue)
    return {"n": n, "mean": float(pair["c"].mean()) if n else float("nan"),
            "mean_baseline": float(pair["b"].mean()) if n else float("nan"),
            "mean_diff": float(d.mean()) if n else float("nan"),
            "sd_diff": float(d.std(ddof=1)) if n > 1 else float("nan"), "t": t, "p": p}


def paired_tests(df: pd.DataFrame, *, value: str, condition: str, subject: str, baseline: str,
                 by=None) -> pd.DataFrame:
    """Paired t-tests of every condition against a baseline condition, optionally per group, BH-adjusted.

    The paper's segmentation comparison (§2.8.3): "paired-samples t-tests with Benjamini-Hochberg correction
    adjusting for the number of tests", e.g. the Dice of each synthetic image type against the 3T's, per
    structure, paired by subject. Each test uses the subjects that have a value for both conditions (several
    values of one subject x condition cell are averaged first). The BH adjustment runs over every row of the
    returned table.

    Args:
        df: tidy table with one row per observation.
        value: the measured column (e.g. ``"dice"``).
        condition: the column naming the condition (e.g. ``"image_type"``).
        subject: the pairing column (e.g. ``"key"``).
        baseline: the condition every other one is compared with (e.g. ``"3T"``).
        by: a column name or list of names; one family of tests per group (e.g. ``"structure"``).

    Returns:
        One row per (group, condition): the ``by`` columns, ``condition``, ``baseline``, ``n`` (pairs),
        ``mean``, ``mean_baseline``, ``mean_diff`` (condition minus baseline), ``sd_diff``, ``t``, ``p``
        (two-sided, :func:`scipy.stats.ttest_rel`) and ``p_bh``. A test with fewer than 2 pairs has NaN t and
        p; with constant non-zero differences t is ±inf and p is 0; with all differences zero t is NaN and p is 1.
    """
    by_cols = [] if by is None else ([by] if isinstance(by, str) else list(by))
    missing = [c for c in [value, condition, subject, *by_cols] if c not in df.columns]
    if missing:
        raise ValueError(f"paired_tests: column(s) {', '.join(missing)} not in the table "
                         f"(has {', '.join(map(str, df.columns))})")
    conds = list(dict.fromkeys(df[condition]))
    if baseline not in conds:
        raise ValueError(f"baseline {baseline!r} is not a value of {condition!r} "
                         f"(values: {', '.join(map(str, conds))})")
    others = [c for c in conds if c != baseline]
    groups = [((), df)] if not by_cols else [
        (k if isinstance(k, tuple) else (k,), g) for k, g in df.groupby(by_cols, sort=False, dropna=False)]
    rows = []
    for key, g in groups:
        wide = g.groupby([subject, condition])[value].mean().unstack(condition)
        for c in others:
            rows.append({**dict(zip(by_cols, key)), condition: c, "baseline": baseline,
                         **_paired_t(_column(wide, c), _column(wide, baseline))})
    cols = [*by_cols, condition, "baseline", "n", "mean", "mean_baseline", "mean_diff", "sd_diff", "t", "p"]
    out = pd.DataFrame(rows, columns=cols)
    out["p_bh"] = benjamini_hochberg(out["p"].to_numpy(float))
    return out


def pairwise_paired_tests(df: pd.DataFrame, *, value: str, condition: str, subject: str,
                          order: Optional[Sequence[str]] = None) -> pd.DataFrame:
    """Paired t-tests between every pair of conditions, Benjamini–Hochberg-adjusted over all the pairs.

    The paper's amygdala comparison (§2.8.3, §3.3) is this family over three image types: U-Net vs 3T, GAN U-Net
    vs 3T and U-Net vs GAN U-Net, three tests. With ``order = [a, b, c]`` the pairs are ``(b, a)``, ``(c, a)``,
    ``(c, b)``: each condition against every condition before it, the difference taken as the later minus the
    earlier (so a baseline listed first is every pair's reference). Several values of one subject x condition
    cell are averaged first; each test uses the subjects that have both values.

    Args:
        df: tidy table with one row per observation.
        value: the measured column (e.g. ``"dice"``).
        condition: the column naming the condition (e.g. ``"image_type"``).
        subject: the pairing column (e.g. ``"key"``).
        order: the conditions to compare, in order (default: their order of appearance).

    Returns:
        One row per pair: ``condition`` (the later one), ``baseline`` (the earlier one), ``n``, ``mean``,
        ``mean_baseline``, ``mean_diff``, ``sd_diff``, ``t``, ``p`` (two-sided) and ``p_bh`` (over the rows).
    """
    missing = [c for c in (value, condition, subject) if c not in df.columns]
    if missing:
        raise ValueError(f"pairwise_paired_tests: column(s) {', '.join(missing)} not in the table "
                         f"(has {', '.join(map(str, df.columns))})")
    present = list(dict.fromkeys(df[condition]))
    conds = list(order) if order is not None else present
    absent = [c for c in conds if c not in present]
    if absent:
        raise ValueError(f"order names condition(s) {absent} that are not values of {condition!r} "
                         f"(values: {', '.join(map(str, present))})")
    if len(conds) < 2:
        raise ValueError(f"pairwise_paired_tests needs at least 2 conditions, got {conds}")
    wide = df[df[condition].isin(conds)].groupby([subject, condition])[value].mean().unstack(condition)
    rows = [{condition: c, "baseline": b, **_paired_t(wide[c], wide[b])}
            for j, c in enumerate(conds) for b in conds[:j]]
    out = pd.DataFrame(rows, columns=[condition, "baseline", "n", "mean", "mean_baseline", "mean_diff", "sd_diff",
                                      "t", "p"])
    out["p_bh"] = benjamini_hochberg(out["p"].to_numpy(float))
    return out


def paired_t_from_summary(mean_diff: float, sd_diff: float, n: int) -> dict:
    """The paired t-test that a mean difference, its SD and the number of pairs give.

    ``t = mean_diff / (sd_diff / sqrt(n))`` with ``n - 1`` degrees of freedom, two-sided p.

    Args:
        mean_diff: mean of the paired differences.
        sd_diff: their sample SD (``ddof=1``), > 0.
        n: number of pairs, >= 2.

    Returns:
        ``{"t", "df", "p"}``.
    """
    if n < 2:
        raise ValueError(f"n must be at least 2 pairs, got {n}")
    if not sd_diff > 0:
        raise ValueError(f"sd_diff must be > 0, got {sd_diff}")
    t = float(mean_diff) / (float(sd_diff) / np.sqrt(n))
    return {"t": t, "df": int(n - 1), "p": float(2 * sps.t.sf(abs(t), n - 1))}


def paired_t_bounds(mean_diff: float, sd_diff: float, n: int, decimals: int) -> tuple[float, float]:
    """The range of t that a rounded mean difference and SD allow.

    A paper that prints ``0.017 ± 0.017`` rounds both to ``decimals`` places: the unrounded mean lies within half a
    unit of the last place of 0.017, and so does the SD. The t of :func:`paired_t_from_summary` then lies between
    the bounds returned here (smallest mean over largest SD, and the reverse), for a positive mean.

    Args:
        mean_diff: the printed mean difference (> 0).
        sd_diff: the printed SD (> half a unit of its last place).
        n: number of pairs.
        decimals: places printed (3 for 0.017).

    Returns:
        ``(t_low, t_high)``.
    """
    half = 0.5 * 10.0 ** (-int(decimals))
    if not mean_diff > half:
        raise ValueError(f"mean_diff must exceed half a unit of its last place ({half}), got {mean_diff}")
    if not sd_diff > half:
        raise ValueError(f"sd_diff must exceed half a unit of its last place ({half}), got {sd_diff}")
    low = paired_t_from_summary(mean_diff - half, sd_diff + half, n)["t"]
    high = paired_t_from_summary(mean_diff + half, sd_diff - half, n)["t"]
    return low, high
