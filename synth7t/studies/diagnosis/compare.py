"""Comparisons of image types: the corrected repeated k-fold t-test on paired cross-validations, importance
deviations from the baseline (Figure 6C analogue) and score tables.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats as sps

from ..stats import benjamini_hochberg
from .crossval import METRICS, CVResult

_COLUMNS = ["image_type", "baseline", "metric", "mean", "mean_baseline", "mean_diff", "diff_q025", "diff_q975",
            "prop_better", "prop_tied", "prop_worse", "t_corrected", "df", "p_corrected", "n_repeats", "n_splits"]
#: score differences within this are ties
_TIE = 1e-12


def _as_result_map(results: Mapping[str, CVResult], baseline: str) -> dict[str, CVResult]:
    if baseline not in results:
        raise ValueError(f"baseline {baseline!r} not among the image types ({', '.join(results)})")
    return dict(results)


def _corrected_t_test(fold_diffs: np.ndarray, test_train_ratio: float) -> tuple[float, float]:
    """Nadeau-Bengio corrected t statistic and two-sided p-value of per-fold score differences ``(n,)``.

    Degenerate cases: one difference gives NaN for both; differences without spread give ``t = +-inf, p = 0``,
    or ``t = NaN, p = 1`` when they are all 0.
    """
    n = len(fold_diffs)
    if n < 2:
        return float("nan"), float("nan")
    mean, s2 = float(fold_diffs.mean()), float(fold_diffs.var(ddof=1))
    if s2 <= 1e-24:
        if abs(mean) < _TIE:
            return float("nan"), 1.0
        return float(np.sign(mean) * np.inf), 0.0
    t = mean / math.sqrt((1.0 / n + test_train_ratio) * s2)
    return t, float(2 * sps.t.sf(abs(t), n - 1))


def _comparison_row(result: CVResult, base: CVResult, metric: str) -> dict:
    """The scores of :func:`compare_image_types`'s row for ``result`` against ``base`` on one metric."""
    a, b = result.scores[metric].to_numpy(float), base.scores[metric].to_numpy(float)
    d = a - b
    fa = result.fold_scores.sort_values(["repeat", "fold"])
    fb = base.fold_scores.sort_values(["repeat", "fold"])
    fd = fa[metric].to_numpy(float) - fb[metric].to_numpy(float)
    t, p = _corrected_t_test(fd, float(fa["n_test"].mean() / fa["n_train"].mean()))
    return {"metric": metric, "mean": a.mean(), "mean_baseline": b.mean(), "mean_diff": d.mean(),
            "diff_q025": np.quantile(d, 0.025), "diff_q975": np.quantile(d, 0.975),
            "prop_better": float((d > _TIE).mean()), "prop_tied": float((np.abs(d) <= _TIE).mean()),
            "prop_worse": float((d < -_TIE).mean()), "t_corrected": t, "df": len(fd) - 1, "p_corrected": p,
            "n_repeats": result.n_repeats, "n_splits": result.n_splits}


def compare_image_types(scores_by_type: Mapping[str, CVResult], baseline: str = "3T",
                        metrics: Sequence[str] = METRICS) -> pd.DataFrame:
    """Each image type's cross-validated scores against the baseline's, with a corrected paired test.

    **Why not a t-test over the repeats.** The 1000 repeats reuse the same subjects: their scores are strongly
    correlated, and their number is chosen by the analyst, so a t-test (or a Mann–Whitney test) treating them as
    1000 independent samples has a p-value that shrinks towards 0 as repeats are added, whatever the real
    difference. The paper's "did not differ significantly" needs a test whose variance accounts for the overlap
    of training and test sets.

    **The test.** The corrected repeated k-fold t-test (Nadeau & Bengio 2003, *Machine Learning* 52:239; in its
    repeated k-fold form, Bouckaert & Frank 2004, PAKDD): with both types evaluated on the *same* folds (same
    subjects and seed, checked through the split digests), take the per-fold score differences
    ``d_ij`` (repeat i, fold j; n = r·k of them), their mean ``d̄`` and variance ``s²``, and

        t = d̄ / sqrt((1/n + n_test/n_train) · s²),   df = n − 1,

    where the ``n_test/n_train`` term (≈ 1/(k−1)) inflates the naive ``1/n`` for the correlation between
    resamples. It is conservative and its p-value no longer falls just because repeats are added.

    **Effect size and description.** Alongside the test: each type's mean score (per-repeat pooled scores, the
    numbers the boxplots show), the mean per-repeat difference (the effect size, in score units), the 2.5–97.5
    percentiles of the per-repeat differences (how much the difference moves with the partition; not a
    confidence interval for new data), and the proportions of repeats in which the type beats, ties or loses to
    the baseline. BH-adjusted p-values (``p_bh``) run over every row of the table.

    Args:
        scores_by_type: image type -> :class:`CVResult` (from the same subjects and seed).
        baseline: the reference type (``"3T"``).
        metrics: score columns to compare.

    Returns:
        One row per (image type, metric): ``image_type``, ``baseline``, ``metric``, ``mean``, ``mean_baseline``,
        ``mean_diff``, ``diff_q025``, ``diff_q975``, ``prop_better``, ``prop_tied``, ``prop_worse``,
        ``t_corrected``, ``df``, ``p_corrected``, ``p_bh``, ``n_repeats``, ``n_splits``.

    Raises:
        ValueError: the baseline is missing, or a type's folds differ from the baseline's (not paired).
    """
    res = _as_result_map(scores_by_type, baseline)
    base = res[baseline]
    rows = []
    for t, r in res.items():
        if t == baseline:
            continue
        if r.n_repeats != base.n_repeats or r.split_digests != base.split_digests:
            raise ValueError(f"{t} and {baseline} were not cross-validated on the same folds (different subjects, "
                             "seed, n_repeats or n_splits); use volume_features(require_all_types=True) and the same "
                             "seed for every type")
        rows += [{"image_type": t, "baseline": baseline, **_comparison_row(r, base, m)} for m in metrics]
    out = pd.DataFrame(rows, columns=_COLUMNS)
    out.insert(out.columns.get_loc("p_corrected") + 1, "p_bh", benjamini_hochberg(out["p_corrected"].to_numpy(float)))
    return out


def _importance_frames(imp_by_type, kind: str) -> dict[str, pd.DataFrame]:
    out = {}
    for t, v in imp_by_type.items():
        if isinstance(v, CVResult):
            out[t] = v.importance_table(kind)
        elif isinstance(v, pd.Series):
            out[t] = v.to_frame().T
        else:
            out[t] = pd.DataFrame(v)
    return out


def importance_deviation(imp_by_type, baseline: str = "3T", kind: str = "impurity") -> pd.DataFrame:
    """Per feature, each image type's mean importance minus the baseline's (Figure 6C analogue).

    Args:
        imp_by_type: image type -> :class:`CVResult`, or a per-repeat importance table (repeats x features), or a
            Series of mean importances.
        baseline: the reference type.
        kind: ``"impurity"`` (mean decrease in impurity, the paper's) or ``"permutation"``.

    Returns:
        Tidy table, one row per (feature, image type), in the baseline's feature order: ``feature``,
        ``image_type``, ``importance`` (mean over repeats), ``importance_baseline``, ``deviation``
        (``importance - importance_baseline``; 0 for the baseline itself) and, when per-repeat importances of
        equal length exist, ``deviation_q025``/``deviation_q975``: percentiles of the per-repeat differences
        (repeat i of both types used the same folds), a band of how much the deviation moves with the partition.
    """
    frames = _importance_frames(imp_by_type, kind)
    if baseline not in frames:
        raise ValueError(f"baseline {baseline!r} not among the image types ({', '.join(frames)})")
    base = frames[baseline]
    feats = list(base.columns)
    rows = []
    for t, f in frames.items():
        missing = [c for c in feats if c not in f.columns]
        if missing:
            raise ValueError(f"{t} lacks feature(s) {', '.join(missing)} of the baseline")
        paired = len(f) == len(base) and len(f) > 1
        for c in feats:
            a, b = f[c].to_numpy(float), base[c].to_numpy(float)
            row = {"feature": c, "image_type": t, "importance": a.mean(), "importance_baseline": b.mean(),
                   "deviation": a.mean() - b.mean()}
            if paired:
                dd = a - b
                row.update(deviation_q025=np.quantile(dd, 0.025), deviation_q975=np.quantile(dd, 0.975))
            else:
                row.update(deviation_q025=np.nan, deviation_q975=np.nan)
            rows.append(row)
    return pd.DataFrame(rows)


def score_table(scores_by_type: Mapping[str, CVResult]) -> pd.DataFrame:
    """Long table of per-repeat scores: ``image_type``, ``repeat``, ``accuracy``, ``balanced_accuracy``."""
    return pd.concat([r.scores.assign(image_type=t) for t, r in scores_by_type.items()], ignore_index=True)[
        ["image_type", "repeat", *METRICS]]


def summary_table(scores_by_type: Mapping[str, CVResult]) -> pd.DataFrame:
    """One row per image type: :meth:`CVResult.summary` (mean, SD, 2.5/97.5 percentiles per metric)."""
    return pd.DataFrame([{"image_type": t, **r.summary()} for t, r in scores_by_type.items()])
