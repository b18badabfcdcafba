"""Statistics and figures of the rating study (synth7t.studies.stats): summaries, ANOVA and post-hoc tables."""

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest

from synth7t.studies import stats


@pytest.fixture(autouse=True)
def _close_figures():
    """Figures of one test are closed after it (pyplot keeps every figure open otherwise)."""
    yield
    import matplotlib.pyplot as plt

    plt.close("all")


def _ranks(n_raters=3, n_queries=4, criteria=("looks_best", "most_detailed"), order=("7T", "U-Net", "3T"), seed=0):
    """Every rater ranks the variants of every query; mostly ``order`` (best first), sometimes the first two swapped."""
    rng = np.random.default_rng(seed)
    rows = []
    for r in range(n_raters):
        for q in range(n_queries):
            for c in criteria:
                ranking = list(order)
                if rng.random() < 0.3:
                    ranking[0], ranking[1] = ranking[1], ranking[0]
                rows += [(f"r{r + 1}", q, c, v, k) for k, v in enumerate(ranking, start=1)]
    return pd.DataFrame(rows, columns=["rater_id", "query_index", "criterion", "variant", "rank"])


def test_rank_summary_orders_criteria_and_variants_and_rank_table():
    ranks = pd.DataFrame([("r1", 0, c, v, k) for c in ("most_detailed", "looks_best")
                          for k, v in enumerate(["7T", "3T", "U-Net"], start=1)] +
                         [("r2", 0, "looks_best", v, k) for k, v in enumerate(["U-Net", "7T", "3T"], start=1)],
                         columns=["rater_id", "query_index", "criterion", "variant", "rank"])
    s = stats.rank_summary(ranks, order=["3T", "U-Net", "7T"], criteria=["most_detailed", "looks_best"])
    assert list(zip(s.criterion, s.variant)) == [("most_detailed", "3T"), ("most_detailed", "U-Net"),
                                                 ("most_detailed", "7T"), ("looks_best", "3T"),
                                                 ("looks_best", "U-Net"), ("looks_best", "7T")]
    lb = s[s.criterion == "looks_best"].set_index("variant")
    assert lb.loc["U-Net", "mean_rank"] == 2.0 and lb.loc["3T", "mean_rank"] == 2.5 and lb.loc["7T", "n"] == 2
    assert lb.loc["U-Net", "mean ± SD"] == "2.00 ± 1.41"
    by_mean = stats.rank_summary(ranks)  # default: criteria alphabetical, variants by mean rank
    assert list(by_mean[by_mean.criterion == "looks_best"].variant) == ["7T", "U-Net", "3T"]
    table = stats.rank_table(s)
    assert list(table.index) == ["3T", "U-Net", "7T"] and list(table.columns) == ["most_detailed", "looks_best", "n"]
    assert table.loc["U-Net", "looks_best"] == "2.00 ± 1.41" and table.loc["U-Net", "n"] == 2
    assert table.index.name == "image type"


def test_anova_table_tests_each_criterion_and_unit():
    ranks = _ranks()
    t = stats.anova_table(ranks, ["most_detailed", "looks_best"])
    assert list(zip(t.criterion, t.unit)) == [("most_detailed", "rater_id"), ("most_detailed", "query_index"),
                                             ("looks_best", "rater_id"), ("looks_best", "query_index")]
    one = stats.rm_anova(ranks[ranks.criterion == "looks_best"], subject="query_index")
    row = t[(t.criterion == "looks_best") & (t.unit == "query_index")].iloc[0]
    assert row["F"] == pytest.approx(one["F"]) and row["p"] == pytest.approx(one["p"]) and row["n_subjects"] == 4
    assert (t["note"] == "").all() and list(t.columns) == stats.ANOVA_COLUMNS
    single = stats.anova_table(ranks[ranks.rater_id == "r1"], ["looks_best"])
    by_rater = single[single.unit == "rater_id"].iloc[0]
    assert by_rater["n_subjects"] == 1 and np.isnan(by_rater["F"])
    assert by_rater["note"] == "needs at least 2 raters with answers, found 1"
    assert single[single.unit == "query_index"]["p"].notna().all()


def test_posthoc_tables_share_one_sign():
    ranks = _ranks(n_raters=4, n_queries=5)
    tukey, bonf, notes = stats.posthoc_tables(ranks, ["looks_best"], alpha=0.05)
    assert notes == [] and set(tukey.criterion) == {"looks_best"} and tukey.columns[0] == "criterion"
    means = ranks[ranks.criterion == "looks_best"].groupby("variant")["rank"].mean()
    for r in tukey.itertuples():  # a - b: negative means a ranks better
        assert r.mean_diff == pytest.approx(means[r.a] - means[r.b], abs=1e-3)
        assert r.ci_low < r.mean_diff < r.ci_high
    raw = stats.tukey_table(ranks[ranks.criterion == "looks_best"])
    assert np.allclose(tukey["ci_low"], -raw["ci_high"]) and np.allclose(tukey["ci_high"], -raw["ci_low"])
    pair = bonf.set_index(["a", "b"]).loc[("3T", "7T")]
    assert pair["unit"] == "rater_id" and pair["mean_diff"] == pytest.approx(means["3T"] - means["7T"])
    assert bool(pair["reject"]) == (pair["p_bonferroni"] < 0.05)
    # one rater: Bonferroni on the queries; one ranking per variant: nothing to test
    _, bonf1, _ = stats.posthoc_tables(ranks[ranks.rater_id == "r1"], ["looks_best"])
    assert set(bonf1["unit"]) == {"query_index"}
    t0, b0, notes0 = stats.posthoc_tables(ranks[(ranks.rater_id == "r1") & (ranks.query_index == 0)], ["looks_best"])
    assert t0.empty and b0.empty and notes0 == ["looks_best: too few rankings for post-hoc tests (3 rank(s))"]


def test_answered_table_counts_queries_per_rater():
    ranks = _ranks(n_raters=2, n_queries=3)
    ranks = ranks[~((ranks.rater_id == "r2") & (ranks.criterion == "most_detailed") & (ranks.query_index == 2))]
    t = stats.answered_table(ranks, ["looks_best", "most_detailed"], n_queries=5)
    assert t.loc["r1"].tolist() == [3, 3, 5] and t.loc["r2"].tolist() == [3, 2, 5]
    empty = stats.answered_table(ranks.iloc[:0], ["looks_best"], n_queries=5)
    assert empty.empty and list(empty.columns) == ["looks_best", "of"]


def test_rating_figures():
    rows = [(r, q, c, v, rank) for r in ("r1", "r2") for q in range(3) for c in ("looks_best", "most_detailed")
            for rank, v in enumerate(["7T", "3T", "GAN"], start=1)]
    ranks = pd.DataFrame(rows, columns=["rater_id", "query_index", "criterion", "variant", "rank"])
    fig = stats.plot_rank_violins(ranks)
    assert len(fig.axes) == 2 and [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["7T", "3T", "GAN"]
    fig = stats.plot_rater_stacked_ranks(ranks, "r1", order=["3T", "7T", "GAN"])
    heights = [p.get_height() for p in fig.axes[0].patches]
    assert sum(heights) == 9  # 3 queries x 3 variants
