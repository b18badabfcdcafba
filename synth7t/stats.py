"""Statistics for the rating study (paper §2.8.2): rank summaries, repeated-measures ANOVA, post-hoc tests.

The paper ran "repeated-measure ANOVAs with rank as the dependent variable, image type as the within-subject
effect, and rater as the grouping variable", with Tukey (and Bonferroni-corrected) post-hoc comparisons.
Here the repeated-measures unit is configurable: ``subject="rater_id"`` (each rater's mean rank per image type,
the paper's set-up) or ``subject="query_index"``.
"""

from __future__ import annotations

from itertools import combinations
from typing import Optional, Sequence

import numpy as np
import pandas as pd
from scipy import stats as sps


def rank_summary(ranks: pd.DataFrame, order: Optional[Sequence[str]] = None) -> pd.DataFrame:
    """Mean and SD of the rank per criterion and variant (1 = best), with the count of rankings.

    Args:
        ranks: tidy table with ``criterion``, ``variant``, ``rank`` (e.g. :func:`synth7t.rating.ranks_table`).
    """
    g = ranks.groupby(["criterion", "variant"])["rank"]
    out = pd.DataFrame({"mean_rank": g.mean(), "sd": g.std(ddof=1), "n": g.size()}).reset_index()
    out["mean ± SD"] = [f"{m:.2f} ± {s:.2f}" for m, s in zip(out["mean_rank"], out["sd"])]
    if order is not None:
        out["variant"] = pd.Categorical(out["variant"], categories=list(order), ordered=True)
        out = out.sort_values(["criterion", "variant"])
    else:
        out = out.sort_values(["criterion", "mean_rank"])
    return out.reset_index(drop=True)


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
            base = wide[baseline] if baseline in wide.columns else pd.Series(dtype=float)
            cur = wide[c] if c in wide.columns else pd.Series(dtype=float)
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
            rows.append({**dict(zip(by_cols, key)), condition: c, "baseline": baseline, "n": n,
                         "mean": float(pair["c"].mean()) if n else float("nan"),
                         "mean_baseline": float(pair["b"].mean()) if n else float("nan"),
                         "mean_diff": float(d.mean()) if n else float("nan"),
                         "sd_diff": float(d.std(ddof=1)) if n > 1 else float("nan"), "t": t, "p": p})
    cols = [*by_cols, condition, "baseline", "n", "mean", "mean_baseline", "mean_diff", "sd_diff", "t", "p"]
    out = pd.DataFrame(rows, columns=cols)
    out["p_bh"] = benjamini_hochberg(out["p"].to_numpy(float))
    return out
