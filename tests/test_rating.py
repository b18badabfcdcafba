import json
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest

from synth7t.studies import rating, stats

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
    # the key lives beside the session folder, never in it: the folder holds what the rater app reads, only
    assert sorted(p.name for p in session.dir.iterdir()) == ["answers.sqlite", "images", "session.json"]
    assert rating.key_file(session.dir) == session.dir.parent / "session-key" / "key.sqlite"
    with pytest.raises(ValueError, match="inside the session folder"):
        rating.build_session(session.dir.parent / "s2", {"a": {"x": np.ones((6, 6, 6))}, "b": {"x": np.ones((6, 6, 6))}},
                             key_dir=session.dir.parent / "s2" / "key")
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
    with pytest.raises(ValueError, match="rater_id"):
        session.record("<b>x</b>", 0, "looks_best", list("ABCDEF"))
    # a query's rankings are stored together or not at all
    with pytest.raises(ValueError, match="exactly once"):
        session.record_query("r1", 0, {"looks_best": list("ABCDEF"), "most_detailed": list("ABCDE")})
    assert session.answers().empty


def test_raters_writing_at_the_same_time_lose_nothing(session):
    """Two processes store 5 queries x 2 criteria each as fast as they can into one answers.sqlite."""
    code = textwrap.dedent(f"""
        import sys
        from synth7t.studies.rating import RatingStore
        s = RatingStore({str(session.dir)!r})
        for q in range(5):
            s.record_query(sys.argv[1], q, {{"looks_best": list("ABCDEF"), "most_detailed": list("FEDCBA")}})
    """)
    procs = [subprocess.Popen([sys.executable, "-c", code, r]) for r in ("p1", "p2")]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    ans = session.answers()
    assert len(ans) == 2 * 5 * 2 and session.progress("p1") == session.progress("p2") == (5, 5)


def test_answers_survive_a_crash_between_answers(session):
    code = textwrap.dedent(f"""
        import os
        from synth7t.studies.rating import RatingStore
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
    assert app.current == 2 and "Query 3 of 5" in app.header.value and app.progress.value == 2
    # an incomplete ranking cannot be saved: the button stays disabled, and a click anyway stores nothing
    app.rankers["looks_best"].buttons["A"].click()
    assert app.save_button.disabled
    app.save_button.click()
    assert "Rank every letter" in app.message.value and app.current == 2 and len(session.answers("r1")) == 4
    # a new kernel: the same rater continues at the first unanswered query
    again = rating.RaterApp(session.dir, "r1")
    assert again.current == 2
    assert rating.RaterApp(session.dir, "r2").current == 0
    for _ in range(3):
        again.answer({"looks_best": list("ABCDEF"), "most_detailed": list("ABCDEF")})
    assert again.current is None and again.save_button.disabled and "All 5 queries answered" in again.header.value
    assert session.answers("r1").set_index(["query_index", "criterion"]).loc[(1, "most_detailed"), "ranking"] == \
        list("BADCFE")


def test_ranking_by_clicks_and_by_keyboard(session):
    app = rating.RaterApp(session.dir, "r1")
    lb, md = app.rankers["looks_best"], app.rankers["most_detailed"]
    for p in "CA":
        lb.buttons[p].click()
    lb.buttons["C"].click()  # a letter already ranked: ignored (its button is disabled in the page)
    assert lb.order == ["C", "A"] and lb.field.value == "CA" and lb.buttons["C"].disabled
    assert lb.buttons["A"].description == "A · 2nd" and "still to rank: B, D, E, F" in lb.summary.value
    lb.field.value = "ca b9 x fedd"  # typed: case, spaces, unknown letters and repeats do not matter
    assert lb.order == list("CABFED") and lb.field.value == "ca b9 x fedd" and lb.complete
    assert [b.description for b in lb.buttons.values()][:3] == ["A · 2nd", "B · 3rd", "C · 1st"]
    assert app.save_button.disabled  # the other criterion is not ranked yet
    md.field.value = "fedcba"
    assert not app.save_button.disabled
    md.clear_button.click()
    assert md.order == [] and md.field.value == "" and app.save_button.disabled
    md.field.value = "FEDCBA"
    md.field._handle_custom_msg({"event": "submit"}, [])  # Enter in the field saves
    assert app.current == 1
    assert session.answers("r1")["ranking"].tolist() == [list("CABFED"), list("FEDCBA")]
    assert lb.order == [] and lb.field.value == "" and not any(b.disabled for b in lb.buttons.values())


def test_rater_signs_in_once(session):
    app = rating.RaterApp(session.dir)
    assert app.rater_id is None and app.current is None and app.rating.layout.display == "none"
    app.rater_field.value = "not valid!"
    app.start_button.click()
    assert app.rater_id is None and "rater_id must be" in app.signin_message.value
    app.rater_field.value = " ab "
    assert "You will rate as <b>ab</b>" in app.signin_message.value
    app.start_button.click()
    assert app.rater_id == "ab" and app.current == 0 and app.signin.layout.display == "none"
    with pytest.raises(ValueError, match="this page rates as ab"):
        app.start("cd")
    assert rating.app.link_from_query("x=1&rater=cd&key=k1&key=k2") == ("cd", "k1")
    assert rating.app.link_from_query("") == (None, None) and rating.app.link_from_query("rater=ab&key=") == ("ab", None)


def _planted_ranking(quality, positions_of, rng, noise):
    """A ranking from a planted quality per variant plus Gumbel noise (Plackett-Luce), to test the statistics."""
    scores = {v: q + noise * rng.gumbel() for v, q in quality.items()}
    return [positions_of[v] for v in sorted(scores, key=scores.get, reverse=True)]


def _simulate(session, quality, raters=("r1", "r2", "r3"), seed=0, noise=1.0):
    key = rating.read_key(session.dir)
    rng = np.random.default_rng(seed)
    for r in raters:
        app = rating.RaterApp(session.dir, r)
        while app.current is not None:
            q = key[key.query_index == app.current]
            pos = dict(zip(q["variant"], q["position"]))
            app.answer({c: _planted_ranking(quality, pos, rng, noise) for c in session.criteria})
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


def test_n_queries_take_subjects_in_turn_over_three_planes(tmp_path):
    """The paper's design: every variant and criterion in every query, slices across the three planes, the number
    of queries a parameter (28 in the paper); a small cohort gives each subject several distinct slices."""
    rng = np.random.default_rng(0)
    base = np.zeros((24, 28, 20), np.float32)
    base[4:20, 4:24, 3:17] = 1.0
    vols = {v: {f"sub-{s:02d}": base * (1 + i) + rng.random(base.shape).astype(np.float32) * base
                for s in range(4)} for i, v in enumerate(VARIANTS)}
    store = rating.build_session(tmp_path / "s", vols, seed=2, n_queries=rating.PAPER_N_QUERIES)
    key = rating.read_key(store.dir)
    assert store.n_queries == 28 and len(store.queries()) == 28 and len(key) == 28 * 6
    assert json.loads((store.dir / "session.json").read_text())["n_queries"] == 28
    assert list(store.criteria) == list(rating.CRITERIA)
    for q, g in key.groupby("query_index"):  # each query: one subject, one plane and slice, every variant
        assert sorted(g["variant"]) == sorted(VARIANTS)
        assert g["subject"].nunique() == g["plane"].nunique() == g["slice_index"].nunique() == 1
    per_query = key.drop_duplicates("query_index")
    assert per_query["subject"].tolist() == [f"sub-{q % 4:02d}" for q in range(28)]  # in turn, 7 each
    assert sorted(per_query.groupby("plane").size().tolist()) == [9, 9, 10]  # the planes balanced
    assert not per_query.duplicated(["subject", "plane", "slice_index"]).any()  # distinct slices per subject
    assert len(list((store.dir / "images").iterdir())) == 28 * 6
    assert "Query 1 of 28" in " ".join(rating.RaterApp(store.dir, "r1").visible_text())
    # one query per subject is the default (the paper: 28 test subjects, 28 queries)
    assert rating.build_session(tmp_path / "s1", vols, seed=2).n_queries == 4
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="n_queries"):
            rating.build_session(tmp_path / "bad", vols, n_queries=bad)
    with pytest.raises(ValueError, match="distinct slices"):
        rating.build_session(tmp_path / "bad", vols, n_queries=4 * 3 * 40, central_fraction=0.1)
    assert not (tmp_path / "bad").exists() and not (tmp_path / "bad-key").exists()


def test_a_failed_build_leaves_no_folder(tmp_path):
    vols = {"3T": {"s1": np.ones((6, 6, 6), np.float32)}, "7T": {"s1": np.ones((6, 6, 7), np.float32)}}
    with pytest.raises(ValueError, match="different grids"):
        rating.build_session(tmp_path / "s", vols)
    assert not (tmp_path / "s").exists() and not (tmp_path / "s-key").exists()
    vols["7T"]["s1"] = np.ones((6, 6, 6), np.float32)
    assert rating.build_session(tmp_path / "s", vols).n_queries == 1  # the retry is not blocked


# ------------------------------------------------------------------------- running and analysing a session


def _images_table(tmp_path, keys=("sub-01", "sub-02"), types=("3T", "7T", "unet"), missing=()):
    """A collect_images-like table of tiny textured NIfTI volumes (``missing``: (key, type) pairs without a
    file)."""
    import nibabel as nib

    base = np.zeros((12, 14, 10), np.float32)
    base[2:10, 3:11, 2:8] = 1.0
    base *= 1 + np.random.default_rng(0).random(base.shape).astype(np.float32)
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
    store, notes = rating.open_session(folder, volumes, seed=3, n_queries=4)
    assert store.n_queries == 4 and notes[0].startswith("built in")
    assert "4 queries over 2 subject(s), 3 variants per query; key in" in notes[0]
    store.record("r1", 0, "looks_best", ["A", "B", "C"])
    again, notes = rating.open_session(folder, volumes, seed=4, n_queries=4)
    assert len(notes) == 2 and "reusing the session" in notes[0] and "seed 4" in notes[1]
    assert again.meta == store.meta and len(again.answers()) == 1
    fresh, notes = rating.open_session(folder, volumes, seed=4, overwrite=True)
    aside = [p for p in folder.parent.iterdir() if p.name.startswith("session-replaced-") and p.is_dir()
             and not p.name.endswith("-key")]
    assert len(aside) == 1 and len(rating.RatingStore(aside[0]).answers()) == 1  # the answers are kept aside
    assert len(rating.read_key(aside[0])) == 4 * 3  # with their key
    assert fresh.n_queries == 2 and fresh.meta["seed"] == 4 and fresh.answers().empty
    # a session built when the key sat in its folder: reusing it moves the key out, and only then can it be served
    rating.key_file(fresh.dir).replace(fresh.dir / "key.sqlite")
    rating.key_dir_of(fresh.dir).rmdir()
    with pytest.raises(ValueError, match="move-key"):
        rating.check_servable(fresh.dir)
    _, notes = rating.open_session(folder, volumes, seed=4)
    assert "moved to" in notes[-1] and not (fresh.dir / "key.sqlite").exists()
    with pytest.raises(ValueError, match="no rater .* has an active link.*add-rater"):  # no page would open
        rating.check_servable(fresh.dir)
    rating.add_rater(fresh.dir, "ab")
    assert rating.check_servable(fresh.dir).n_queries == 2 and len(rating.read_key(fresh.dir)) == 2 * 3
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


def phantom_variants(shape=(48, 48, 32), seed=0):
    """A brain-like phantom (white matter 1.0, folded grey-matter bands 0.55 around CSF 0.15, inside an
    ellipsoid) as four image variants with known properties: ``sharp`` (little noise), ``blurred`` (Gaussian
    blur of 1.2 voxels), ``noisy`` (noise SD 0.12) and ``dropout`` (a smooth local signal loss, down to
    15 % at its centre, as the 7T's cerebellar signal loss)."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    x, y, z = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    brain = x ** 2 + y ** 2 + z ** 2 < 0.8
    folds = np.sin(x * 9) + np.sin(y * 9) + np.sin(z * 9)
    tissue = np.select([folds > 1.7, folds > 0.6], [0.15, 0.55], 1.0)
    clean = np.where(brain, tissue, 0.0)

    def finish(img, sd):
        return np.where(brain, np.abs(img + rng.normal(0, sd, shape)), 0.0).astype(np.float32)

    dropout = clean * (1 - 0.85 * np.exp(-((x + 0.3) ** 2 + (y - 0.1) ** 2 + (z + 0.1) ** 2) / (2 * 0.4 ** 2)))
    return {"sharp": finish(clean, 0.01), "blurred": finish(ndimage.gaussian_filter(clean, 1.2), 0.01),
            "noisy": finish(clean, 0.12), "dropout": finish(dropout, 0.01)}


@pytest.fixture
def phantom_session(tmp_path):
    vols = {v: {f"sub-{s}": a for s in range(2)} for v, a in phantom_variants().items()}
    return rating.build_session(tmp_path / "phantom", vols, n_queries=6, seed=0)


def test_the_observer_measures_what_the_images_show(phantom_session):
    """Measured on the rater's PNGs, per query: the blurred image is less sharp and lower in grey/white contrast
    than the sharp one, the noisy one has the most noise, and only the dropout one loses signal."""
    key = rating.read_key(phantom_session.dir)
    m = rating.measure_session(phantom_session.dir).merge(key, on=["query_index", "position"])
    assert len(m) == 6 * 4 and set(m.columns) >= set(rating.MEASURES)
    for _, g in m.groupby("query_index"):
        g = g.set_index("variant")
        assert g.loc["blurred", "sharpness"] < g.loc["sharp", "sharpness"] and g["noise"].idxmax() == "noisy"
        assert g.loc["blurred", "contrast"] < g.loc["sharp", "contrast"]
        assert g.drop("dropout")["signal_loss"].max() < 0.02
    # the signal loss shows where the slice crosses it (and is measured as such); elsewhere the image is normal
    lost = m.loc[m["variant"] == "dropout", "signal_loss"]
    assert (lost > 0.05).sum() >= 2
    with pytest.raises(ValueError, match="no weights for criteria"):
        rating.observer_scores(m, criteria=["prettiest"])
    with pytest.raises(ValueError, match="unknown measures"):
        rating.observer_scores(m, weights={"looks_best": {"beauty": 1.0}})
    with pytest.raises(ValueError, match="share one shape"):
        rating.measure_query({"A": np.ones((9, 9)), "B": np.ones((9, 8))})


def test_simulated_raters_rank_from_the_images_through_the_widget(phantom_session):
    session = phantom_session
    table = rating.simulate_raters(session.dir, 2, noise=[0.0, 0.0], seed=0)
    assert table.to_dict("records") == [{"rater": "sim1", "noise": 0.0, "new_answers": 6},
                                        {"rater": "sim2", "noise": 0.0, "new_answers": 6}]
    ranks = rating.ranks_table(session.dir)
    assert len(ranks) == 2 * 6 * 2 * 4  # raters x queries x criteria x variants
    wide = ranks.pivot_table(index=["rater_id", "query_index", "criterion"], columns="variant", values="rank")
    # without rater noise, what the images show decides: the sharp image is more detailed than the blurred one
    # and looks better than the noisy one and the one with signal loss, in every query
    detailed, looks = wide.xs("most_detailed", level="criterion"), wide.xs("looks_best", level="criterion")
    assert (detailed["sharp"] < detailed["blurred"]).all()
    assert (looks["sharp"] < looks["noisy"]).all()
    measured = rating.measure_session(session.dir).merge(rating.read_key(session.dir), on=["query_index", "position"])
    visible = measured.loc[(measured["variant"] == "dropout") & (measured["signal_loss"] > 0.05), "query_index"]
    assert len(visible) >= 2 and (looks.loc[(slice(None), list(visible)), "sharp"]
                                  < looks.loc[(slice(None), list(visible)), "dropout"]).all()
    observed = rating.observer_table(session.dir).set_index("variant")
    assert observed.loc["blurred", "rank_most_detailed"] > observed.loc["sharp", "rank_most_detailed"]
    assert {"sharpness", "sharpness_sd", "rank_looks_best"} <= set(observed.columns)
    assert rating.simulate_raters(session.dir, 2, seed=1)["new_answers"].tolist() == [0, 0]  # nothing left to answer
    assert rating.simulate_raters(session.dir, 0).empty
    with pytest.raises(ValueError, match="one value per simulated rater"):
        rating.simulate_raters(session.dir, 2, noise=[1.0])
    progress = rating.progress_table(session, ["rater9"])
    assert progress[["rater", "answered", "total", "done"]].values.tolist() == [
        ["rater9", 0, 6, "0 %"], ["sim1", 6, 6, "100 %"], ["sim2", 6, 6, "100 %"]]
    assert progress.loc[0, "last answer"] == "-" and progress.loc[1, "last answer"] != "-"
    # rater noise makes raters disagree
    noisy = rating.build_session(session.dir.parent / "noisy", {v: {"s": a} for v, a in phantom_variants().items()},
                                 n_queries=6)
    rating.simulate_raters(noisy.dir, 2, noise=[3.0, 3.0], seed=0)
    by_rater = rating.RatingStore(noisy.dir).answers().pivot_table(
        index=["query_index", "criterion"], columns="rater_id", values="ranking", aggfunc="first")
    assert (by_rater["sim1"] != by_rater["sim2"]).any()


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
