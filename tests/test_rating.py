import json
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest

from synth7t import rating, stats

VARIANTS = ["3T", "7T", "U-Net", "GAN U-Net", "V-Net", "WATNet"]


@pytest.fixture(autouse=True)
def _close_figures():
    """Figures of one test are closed after it (pyplot keeps every figure open otherwise)."""
    yield
    import matplotlib.pyplot as plt

    plt.close("all")


@pytest.fixture
def session(tmp_path):
    rng = np.random.default_rng(0)
    base = np.zeros((24, 28, 20), np.float32)
    base[4:20, 4:24, 3:17] = 1.0
    vols = {v: {f"sub-{s:02d}": base * (1 + i) + rng.random(base.shape).astype(np.float32) * base
                for s in range(5)} for i, v in enumerate(VARIANTS)}
    return rating.build_session(tmp_path / "session", vols, seed=1)


def test_session_is_blinded_and_keyed(session):
    key = rating.read_key(session.dir)
    assert len(session.queries()) == 5 and len(key) == 5 * 6
    assert all(sorted(g["variant"]) == sorted(VARIANTS) for _, g in key.groupby("query_index"))
    # positions are shuffled per query
    orders = [tuple(g.sort_values("position")["variant"]) for _, g in key.groupby("query_index")]
    assert len(set(orders)) > 1
    # nothing the widget reads names a variant
    visible = (session.dir / "session.json").read_text()
    visible += " ".join(p.name for p in (session.dir / "images").iterdir())
    for v in VARIANTS:
        assert v not in visible
        assert v.encode() not in b"".join(p.read_bytes() for p in (session.dir / "images").iterdir())


def test_record_validates(session):
    with pytest.raises(ValueError, match="exactly once"):
        session.record("r1", 0, "looks_best", list("ABCDE"))
    with pytest.raises(ValueError, match="criterion"):
        session.record("r1", 0, "prettiest", list("ABCDEF"))
    with pytest.raises(ValueError, match="query_index"):
        session.record("r1", 9, "looks_best", list("ABCDEF"))
    with pytest.raises(ValueError, match="rater_id"):
        session.record(" ", 0, "looks_best", list("ABCDEF"))


def test_answers_survive_a_crash_between_answers(session):
    code = textwrap.dedent(f"""
        import os
        from synth7t.rating import RatingStore
        s = RatingStore({str(session.dir)!r})
        s.record("crash", 0, "looks_best", list("ABCDEF"))
        s.record("crash", 0, "most_detailed", list("FEDCBA"))
        s.record("crash", 1, "looks_best", list("BACDEF"))
        os._exit(9)  # dies before answering query 1's second criterion, without any cleanup
    """)
    proc = subprocess.run([sys.executable, "-c", code])
    assert proc.returncode == 9
    ans = session.answers("crash")
    assert len(ans) == 3
    assert ans.set_index(["query_index", "criterion"]).loc[(0, "most_detailed"), "ranking"] == list("FEDCBA")
    assert session.next_unanswered("crash") == 1
    assert session.progress("crash") == (1, 5)


def test_widget_shows_no_variant_and_resumes(session):
    app = rating.RaterApp(session.dir, "r1")
    assert app.current == 0
    text = " ".join(app.visible_text())
    assert "Query 1 of 5" in text
    for v in VARIANTS:
        assert v not in text
    app.answer({"looks_best": list("ABCDEF"), "most_detailed": list("ABCDEF")})
    app.answer({"looks_best": list("FEDCBA"), "most_detailed": list("BADCFE")})
    assert app.current == 2
    # an incomplete ranking is refused, nothing is saved
    app.menus["looks_best"]["A"].value = 1
    app.save_button.click()
    assert "different rank" in app.message.value and app.current == 2
    # a new kernel: the same rater continues at the first unanswered query
    again = rating.RaterApp(session.dir, "r1")
    assert again.current == 2
    assert rating.RaterApp(session.dir, "r2").current == 0
    for _ in range(3):
        again.answer({"looks_best": list("ABCDEF"), "most_detailed": list("ABCDEF")})
    assert again.current is None and again.save_button.disabled


def _simulate(session, quality, raters=("r1", "r2", "r3"), seed=0, noise=1.0):
    key = rating.read_key(session.dir)
    rng = np.random.default_rng(seed)
    for r in raters:
        app = rating.RaterApp(session.dir, r)
        while app.current is not None:
            q = key[key.query_index == app.current]
            pos = dict(zip(q["variant"], q["position"]))
            app.answer({c: rating.simulated_ranking(quality, pos, rng, noise) for c in session.criteria})
    return rating.ranks_table(session.dir)


def test_anova_finds_a_planted_effect_and_none_in_noise(tmp_path):
    rng = np.random.default_rng(3)
    base = np.ones((8, 8, 8), np.float32)
    vols = {v: {f"s{i:02d}": base * rng.random() for i in range(12)} for v in VARIANTS}
    planted = rating.build_session(tmp_path / "planted", vols, seed=0)
    ranks = _simulate(planted, {v: 3.0 - i for i, v in enumerate(VARIANTS)}, seed=1)
    one = ranks[ranks.criterion == "looks_best"]
    res = stats.rm_anova(one, subject="rater_id")
    assert res["p"] < 1e-3 and res["df_effect"] == 5 and res["df_error"] == 10
    tk = stats.tukey_table(one)
    # the best and the worst planted variants differ; Tukey sorts pair names alphabetically
    assert bool(tk.loc[(tk.a == "3T") & (tk.b == "WATNet"), "reject"].item())
    summary = stats.rank_summary(ranks, order=VARIANTS)
    lb = summary[summary.criterion == "looks_best"]
    assert lb["mean_rank"].iloc[0] < lb["mean_rank"].iloc[-1]

    null = rating.build_session(tmp_path / "null", vols, seed=0)
    ranks0 = _simulate(null, {v: 0.0 for v in VARIANTS}, seed=2)
    res0 = stats.rm_anova(ranks0[ranks0.criterion == "looks_best"], subject="query_index")
    assert res0["p"] > 0.05


def test_rm_anova_matches_statsmodels():
    from statsmodels.stats.anova import AnovaRM

    rng = np.random.default_rng(0)
    rows = [(s, v, rng.normal(i * 0.3 + s * 0.1, 1.0)) for s in range(6) for i, v in enumerate("abcd")]
    df = pd.DataFrame(rows, columns=["rater_id", "variant", "rank"])
    ours = stats.rm_anova(df)
    ref = AnovaRM(df, "rank", "rater_id", within=["variant"]).fit().anova_table
    assert ours["F"] == pytest.approx(ref["F Value"].iloc[0])
    assert ours["p"] == pytest.approx(ref["Pr > F"].iloc[0])
    bt = stats.bonferroni_table(df)
    assert len(bt) == 6 and (bt["p_bonferroni"] >= bt["p"]).all()


def test_several_slices_per_subject(tmp_path):
    rng = np.random.default_rng(0)
    base = np.zeros((24, 28, 20), np.float32)
    base[4:20, 4:24, 3:17] = 1.0
    vols = {v: {f"sub-{s:02d}": base * (1 + i) + rng.random(base.shape).astype(np.float32) * base
                for s in range(4)} for i, v in enumerate(VARIANTS)}
    store = rating.build_session(tmp_path / "s3", vols, seed=2, slices_per_subject=3)
    key = rating.read_key(store.dir)
    assert store.n_queries == 12 and len(store.queries()) == 12 and len(key) == 12 * 6
    assert json.loads((store.dir / "session.json").read_text())["slices_per_subject"] == 3
    for q, g in key.groupby("query_index"):  # each query: one subject, one plane and slice, every variant
        assert sorted(g["variant"]) == sorted(VARIANTS)
        assert g["subject"].nunique() == g["plane"].nunique() == g["slice_index"].nunique() == 1
    per_query = key.drop_duplicates("query_index")
    assert per_query.groupby("subject").size().tolist() == [3, 3, 3, 3]
    # a subject's slices are distinct draws (never the same plane and slice twice)
    assert not per_query.duplicated(["subject", "plane", "slice_index"]).any()
    assert len(list((store.dir / "images").iterdir())) == 12 * 6
    assert "Query 1 of 12" in " ".join(rating.RaterApp(store.dir, "r1").visible_text())
    # one slice per subject is the default and the paper's set-up
    one = rating.build_session(tmp_path / "s1", vols, seed=2)
    assert one.n_queries == 4
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="slices_per_subject"):
            rating.build_session(tmp_path / "bad", vols, slices_per_subject=bad)
    assert not (tmp_path / "bad").exists()


def test_a_failed_build_leaves_no_folder(tmp_path):
    vols = {"3T": {"s1": np.ones((6, 6, 6), np.float32)}, "7T": {"s1": np.ones((6, 6, 7), np.float32)}}
    with pytest.raises(ValueError, match="different grids"):
        rating.build_session(tmp_path / "s", vols)
    assert not (tmp_path / "s").exists()
    vols["7T"]["s1"] = np.ones((6, 6, 6), np.float32)
    assert rating.build_session(tmp_path / "s", vols).n_queries == 1  # the retry is not blocked


# ------------------------------------------------------------------------- running and analysing a session


def _images_table(tmp_path, keys=("sub-01", "sub-02"), types=("3T", "7T", "unet"), missing=()):
    """A collect_images-like table of tiny NIfTI volumes (``missing``: (key, type) pairs without a file)."""
    import nibabel as nib

    base = np.zeros((12, 14, 10), np.float32)
    base[2:10, 3:11, 2:8] = 1.0
    rows = []
    for i, t in enumerate(types):
        for k in keys:
            if (k, t) in missing:
                continue
            p = tmp_path / "images" / f"{k}_{t}.nii.gz"
            p.parent.mkdir(parents=True, exist_ok=True)
            nib.save(nib.Nifti1Image(base * (1 + i), np.eye(4)), str(p))
            rows.append({"key": k, "image_type": t, "name": t, "path": str(p)})
    return pd.DataFrame(rows)


def test_rater_list_and_variant_volumes(tmp_path):
    assert rating.rater_list("alice") == ["alice"]
    assert rating.rater_list(["ab", " cd "]) == ["ab", "cd"]
    for bad in ([], [""], "[]"):
        with pytest.raises(ValueError, match="rater_ids"):
            rating.rater_list(bad)
    images = _images_table(tmp_path, keys=("sub-01", "sub-02", "sub-03"), missing={("sub-02", "unet")})
    volumes, dropped = rating.variant_volumes(images)
    assert list(volumes) == ["3T", "7T", "unet"] and dropped == ["sub-02"]
    assert sorted(volumes["unet"]) == ["sub-01", "sub-03"] and volumes["3T"]["sub-03"].endswith("sub-03_3T.nii.gz")
    volumes, dropped = rating.variant_volumes(images, ["3T", "7T"])  # without the model, sub-02 is complete
    assert list(volumes) == ["3T", "7T"] and dropped == [] and sorted(volumes["7T"]) == ["sub-01", "sub-02", "sub-03"]
    with pytest.raises(ValueError, match="gan-unet"):
        rating.variant_volumes(images, ["3T", "gan-unet"])


def test_open_session_builds_once_reuses_and_moves_aside(tmp_path):
    volumes, _ = rating.variant_volumes(_images_table(tmp_path))
    folder = tmp_path / "run" / "session"
    store, notes = rating.open_session(folder, volumes, seed=3, slices_per_subject=2)
    assert store.n_queries == 4 and notes[0].startswith("built in")
    assert "2 subject(s) x 2 slice(s), 3 variants" in notes[0]
    store.record("r1", 0, "looks_best", ["A", "B", "C"])
    again, notes = rating.open_session(folder, volumes, seed=4, slices_per_subject=2)
    assert len(notes) == 2 and "reusing the session" in notes[0] and "seed 4" in notes[1]
    assert again.meta == store.meta and len(again.answers()) == 1
    fresh, notes = rating.open_session(folder, volumes, seed=4, overwrite=True)
    aside = [p for p in folder.parent.iterdir() if p.name.startswith("session-replaced-")]
    assert len(aside) == 1 and len(rating.RatingStore(aside[0]).answers()) == 1  # the answers are kept aside
    assert fresh.n_queries == 2 and fresh.meta["seed"] == 4 and fresh.answers().empty
    (tmp_path / "junk").mkdir()
    with pytest.raises(RuntimeError, match="not a rating session"):
        rating.open_session(tmp_path / "junk", volumes)
    with pytest.raises(RuntimeError, match="at least 2 image variants"):
        rating.open_session(tmp_path / "one", {"3T": volumes["3T"]})


def test_plot_query_shows_the_letters(session):
    import matplotlib

    matplotlib.use("Agg")
    fig = rating.plot_query(session, 2)
    titled = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in titled] == list("ABCDEF") and all(ax.get_images() for ax in titled)
    assert fig._suptitle.get_text() == "query 3 of 5: rank A-F on each criterion"
    with pytest.raises(ValueError, match="index"):
        rating.plot_query(session, 5)


def test_simulated_raters_answer_everything_through_the_widget(session):
    table = rating.simulate_raters(session.dir, 2, noise=[0.01, 0.01], seed=0)
    assert table.to_dict("records") == [{"rater": "sim1", "noise": 0.01, "new_answers": 5},
                                        {"rater": "sim2", "noise": 0.01, "new_answers": 5}]
    ranks = rating.ranks_table(session.dir)
    assert len(ranks) == 2 * 5 * 2 * 6  # raters x queries x criteria x variants
    # almost no noise: the real 7T always first, the 3T always last, the models between
    assert set(ranks.loc[ranks.variant == "7T", "rank"]) == {1} and set(ranks.loc[ranks.variant == "3T", "rank"]) == {6}
    assert rating.simulate_raters(session.dir, 2, seed=1)["new_answers"].tolist() == [0, 0]  # nothing left to answer
    assert rating.simulate_raters(session.dir, 0).empty
    with pytest.raises(ValueError, match="one value per simulated rater"):
        rating.simulate_raters(session.dir, 2, noise=[1.0])
    progress = rating.progress_table(session, ["rater9"])
    assert progress[["rater", "answered", "total", "done"]].values.tolist() == [
        ["rater9", 0, 5, "0 %"], ["sim1", 5, 5, "100 %"], ["sim2", 5, 5, "100 %"]]
    assert progress.loc[0, "last answer"] == "-" and progress.loc[1, "last answer"] != "-"


def test_analysis_ranks_unblinds_with_display_names(tmp_path):
    images = _images_table(tmp_path, types=("3T", "7T", "unet", "gan-unet"))
    volumes, _ = rating.variant_volumes(images)
    store, _ = rating.open_session(tmp_path / "s", volumes, seed=0)
    rating.simulate_raters(store.dir, 2, seed=0)
    assert rating.variant_order(["unet", "7T", "gan-unet", "3T"]) == ["3T", "gan-unet", "unet", "7T"]
    assert rating.variant_order(["unet", "7T", "3T"], ["7T", "unet", "vnet"]) == ["7T", "unet", "3T"]
    ranks, order, notes = rating.analysis_ranks(store.dir, ["most_detailed"], preferred_order=["unet", "vnet"],
                                                raters=["sim2", "nobody"])
    assert order == ["U-Net", "3T", "GAN U-Net", "7T"]
    assert set(ranks.rater_id) == {"sim2"} and set(ranks.criterion) == {"most_detailed"}
    assert dict(zip(ranks.image_type, ranks.variant)) == {"3T": "3T", "7T": "7T", "unet": "U-Net",
                                                          "gan-unet": "GAN U-Net"}
    assert len(ranks) == 2 * 4  # 2 queries x 4 variants
    text = " | ".join(notes)
    assert "not analysed (not in `criteria`): looks_best" in text
    assert "never shown in this session, left out: vnet" in text
    assert "no answer from: nobody" in text and "Only one rater (sim2)" in text and "sim2: simulated raters" in text
    with pytest.raises(ValueError, match="criteria must be among"):
        rating.analysis_ranks(store.dir, ["sharpest"])
    empty, _, notes = rating.analysis_ranks(store.dir, ["looks_best"], raters=["nobody"])
    assert empty.empty and any(n.startswith("No answers yet") for n in notes)
