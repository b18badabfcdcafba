"""Notebooks executed through papermill with the smoke profile (tiny cohort, coarse voxels)."""

import json

import nbformat
import pandas as pd
import pytest

from synth7t import profiles


def _errors(nb):
    return [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]


def _images(nb):
    return [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
            if "image/png" in o.get("data", {})]


def test_committed_notebooks_follow_the_skeleton():
    for nb_path in sorted((profiles.REPO_ROOT / "notebooks").glob("*.ipynb")):
        nb = nbformat.read(nb_path, as_version=4)
        assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# "), nb_path.name
        tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1, f"{nb_path.name}: exactly one cell tagged 'parameters'"
        assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), \
            f"{nb_path.name}: committed notebooks carry no outputs"
        assert nb.cells[-1].cell_type == "code" and nb.cells[-2].source.strip() == "## Outputs"
        # papermill silently drops a parameter whose line it cannot parse (e.g. an '=' in its comment)
        assigned = {line.split("=")[0].strip() for line in tagged[0].source.splitlines()
                    if line and not line.startswith((" ", "#")) and "=" in line}
        assert assigned == set(profiles.declared_parameters(nb_path)), nb_path.name


def test_profiles_list_existing_notebooks_with_declared_parameters():
    for name in ("demo", "demo-full", "smoke"):
        prof = profiles.load_profile(name)
        for entry in prof["notebooks"]:
            nb = profiles.REPO_ROOT / entry["notebook"]
            assert nb.is_file()
            declared = profiles.declared_parameters(nb)
            assert set(entry.get("parameters") or {}) <= set(declared)
    with pytest.raises(ValueError, match="not found"):
        profiles.load_profile("no-such-profile")


def test_demo_data_notebook_smoke_run(tmp_path):
    out = tmp_path / "book"
    timings = profiles.run_profile("smoke", stages=["00"], output_dir=out, cwd=tmp_path,
                                   overrides={"data_dir": str(tmp_path / "data")}, progress=False)
    assert list(timings["notebook"]) == ["00_demo_data.ipynb"]
    nb = nbformat.read(out / "00_demo_data.ipynb", as_version=4)
    assert not _errors(nb)
    assert len(_images(nb)) >= 3  # three planes, artefact, volumes
    text = json.dumps(nb.cells[0].source)
    assert "simulated" in text.lower()
    run_dir = tmp_path / "runs" / "smoke" / "00_demo_data"
    assert (run_dir / "cohort_summary.tsv").is_file() and (run_dir / "volumes_by_diagnosis.png").is_file()
    assert (tmp_path / "data" / "participants.tsv").is_file()
    assert (tmp_path / "data" / "split.tsv").is_file()


@pytest.fixture(scope="module")
def smoke_run(preprocessed_cohort, tmp_path_factory):
    """02 trains two batches on the preprocessed coarse cohort and 03 predicts its held-out subject in the three
    spaces, both executed through papermill with the smoke profile; later chapters' tests start from this run."""
    derivatives, ds, _ = preprocessed_cohort
    root = tmp_path_factory.mktemp("smoke_run")
    overrides = {"data_dir": str(ds.root), "derivatives_dir": str(derivatives), "runs_dir": str(root / "runs")}
    timings = profiles.run_profile("smoke", stages=["02", "03"], output_dir=root / "book", cwd=root,
                                   overrides=overrides, progress=False)
    return {"root": root, "runs": root / "runs", "book": root / "book", "overrides": overrides, "timings": timings}


def test_train_and_predict_notebooks_smoke_run(smoke_run):
    out, runs = smoke_run["book"], smoke_run["runs"]
    assert list(smoke_run["timings"]["notebook"]) == ["02_train.ipynb", "03_predict.ipynb"]
    for name in smoke_run["timings"]["notebook"]:
        nb = nbformat.read(out / name, as_version=4)
        assert not _errors(nb), name
        assert _images(nb), name
    model = runs / "smoke" / "02_train" / "unet" / "model"
    assert (model / "generator.safetensors").is_file() and (model / "model.json").is_file()
    pred = runs / "smoke" / "03_predict" / "unet"
    table = pd.read_csv(pred / "predictions.tsv", sep="\t")
    assert set(table["status"]) == {"done"}
    for space in ("grid", "7T", "3T"):
        assert len(list(pred.glob(f"*_acq-unet_space-{space}_T1w.nii.gz"))) == len(table), space
    quick = pd.read_csv(runs / "smoke" / "03_predict" / "quick_metrics.tsv", sep="\t")
    assert set(quick["image_type"]) == {"3T", "U-Net"} and quick["psnr"].notna().all()


def test_evaluate_and_segmentation_notebooks_smoke_run(smoke_run):
    """04 scores 3T and the smoke U-Net against the 7T (PSNR, SSIM, Dice of atlas segmentations) and draws its
    figures; 07 scores amygdala and hippocampus against the ground-truth labels and writes regional volumes."""
    out, runs = smoke_run["root"] / "book-eval", smoke_run["runs"]
    timings = profiles.run_profile("smoke", stages=["04", "07"], output_dir=out, cwd=smoke_run["root"],
                                   overrides=smoke_run["overrides"], progress=False)
    assert list(timings["notebook"]) == ["04_evaluate.ipynb", "07_segmentation.ipynb"]
    for name in timings["notebook"]:
        nb = nbformat.read(out / name, as_version=4)
        assert not _errors(nb), name
        assert len(_images(nb)) >= 3, name
        assert "simulated" in nb.cells[0].source.lower(), name
    ev = runs / "smoke" / "04_evaluate"
    table1 = pd.read_csv(ev / "table1.tsv", sep="\t", index_col=0)
    # the 7T row carries only its Dice against the simulated ground truth
    assert list(table1.index) == ["3T", "U-Net", "7T"]
    assert {"psnr", "ssim", "mean_dice", "mean_dice_truth"} <= set(table1.columns)
    scores = pd.read_csv(ev / "scores.tsv", sep="\t")
    assert scores.loc[scores.image_type != "7T", ["psnr", "ssim", "mean_dice"]].notna().all().all()
    assert scores["mean_dice_truth"].between(0, 1).all()
    for f in ("figure3_boxplots.png", "figure4_closeups.png", "figure1_3t_vs_7t.png"):
        assert (ev / f).is_file(), f
    seg = runs / "smoke" / "07_segmentation"
    dice = pd.read_csv(seg / "structure_dice.tsv", sep="\t")
    assert set(dice["image_type"]) == {"3T", "U-Net"} and dice["dice"].between(0, 1).all()
    assert set(dice["structure"]) == {"Left-Amygdala", "Right-Amygdala", "Left-Hippocampus", "Right-Hippocampus"}
    volumes = pd.read_csv(seg / "volumes.tsv", sep="\t")
    assert set(volumes["image_type"]) == {"3T", "unet"} and (volumes["Left-Hippocampus"] > 0).all()
    # 07 reused 04's segmentations (shared folder): nothing was segmented twice
    status = pd.read_csv(runs / "smoke" / "segment" / "atlas" / "segmentations.tsv", sep="\t")
    assert set(status["status"]) == {"skipped"}


def test_rating_session_and_analysis_notebooks_smoke_run(smoke_run, preprocessed_cohort, tmp_path):
    """05 builds a blinded session for the held-out subject (3T, real 7T and the smoke run's U-Net prediction,
    2 slices) that 3 simulated raters answer through the widget; 06 unblinds and analyses it; running 05 again
    keeps the session and its answers."""
    import sqlite3

    from synth7t import layout, rating

    derivatives, ds, split_file = preprocessed_cohort
    runs = smoke_run["runs"]
    split = layout.read_split(split_file)
    held_out = set(split.loc[split["split"] == "test", "participant_id"])
    test_keys = [s.key for s in ds if s.participant_id in held_out]

    out = tmp_path / "book"
    overrides = {"data_dir": str(ds.root), "derivatives_dir": str(derivatives), "runs_dir": str(runs)}
    timings = profiles.run_profile("smoke", stages=["05", "06"], output_dir=out, cwd=tmp_path, overrides=overrides,
                                   progress=False)
    assert list(timings["notebook"]) == ["05_rating_session.ipynb", "06_rating_analysis.ipynb"]
    for name in timings["notebook"]:
        nb = nbformat.read(out / name, as_version=4)
        assert not _errors(nb), name
        assert _images(nb), name
        assert "simulated" in nb.cells[0].source.lower(), name

    # the session: every variant in every query, 3 simulated raters x every query x 2 criteria, blinded widget
    session = runs / "smoke" / "05_rating_session" / "session"
    store = rating.RatingStore(session)
    key = rating.read_key(session)
    n_queries = 2 * len(test_keys)
    assert store.n_queries == n_queries and key["query_index"].nunique() == n_queries
    assert all(set(g["variant"]) == {"3T", "7T", "unet"} for _, g in key.groupby("query_index"))
    with sqlite3.connect(session / "answers.sqlite") as conn:
        n_answers = conn.execute("SELECT COUNT(*) FROM answers").fetchone()[0]
    assert n_answers == 3 * n_queries * 2
    assert store.raters() == ["sim1", "sim2", "sim3"]
    nb05 = nbformat.read(out / "05_rating_session.ipynb", as_version=4)
    widget_cell = next(c for c in nb05.cells if "RaterApp(session_dir, rater_ids[0])" in c.source)
    shown = json.dumps(widget_cell.outputs)
    assert "widget-view" in shown and not any(v in shown for v in ("unet", "U-Net"))
    assert (runs / "smoke" / "05_rating_session" / "query_as_shown.png").is_file()

    # the analysis: tables and figures, one ANOVA p-value over raters per criterion
    ana = runs / "smoke" / "06_rating_analysis"
    for f in ("ranks.tsv", "rank_summary.tsv", "anova.tsv", "tukey.tsv", "bonferroni.tsv", "rank_violins.png",
              "stacked_ranks_sim1.png", "stacked_ranks_sim3.png"):
        assert (ana / f).is_file(), f
    summary = pd.read_csv(ana / "rank_summary.tsv", sep="\t")
    assert set(summary["variant"]) == {"3T", "U-Net", "7T"} and (summary["n"] == 3 * n_queries).all()
    anova = pd.read_csv(ana / "anova.tsv", sep="\t")
    by_rater = anova[anova["unit"] == "rater_id"].set_index("criterion")
    assert set(by_rater.index) == {"looks_best", "most_detailed"}
    assert by_rater["p"].between(0, 1).all() and (by_rater["n_subjects"] == 3).all()
    assert set(pd.read_csv(ana / "tukey.tsv", sep="\t")["criterion"]) == {"looks_best", "most_detailed"}

    # running 05 again reuses the session: same build, same images, answers kept, nothing answered twice
    built = (session / "session.json").read_text()
    images = sorted(p.name for p in (session / "images").iterdir())
    profiles.run_profile("smoke", stages=["05"], output_dir=tmp_path / "again", cwd=tmp_path, overrides=overrides,
                         progress=False)
    again = nbformat.read(tmp_path / "again" / "05_rating_session.ipynb", as_version=4)
    assert not _errors(again)
    assert "reusing the session" in json.dumps([c.get("outputs", []) for c in again.cells if c.cell_type == "code"])
    assert (session / "session.json").read_text() == built
    assert sorted(p.name for p in (session / "images").iterdir()) == images
    assert len(rating.RatingStore(session).answers()) == n_answers
