"""Notebooks executed through papermill with the smoke profile (tiny cohort, coarse voxels)."""

import json
import shutil
from pathlib import Path

import nbformat
import pandas as pd
import pytest
import yaml

from conftest import design_results

from synth7t.workflow import profiles

REPO_ROOT = Path(__file__).resolve().parents[1]


def _errors(nb):
    return [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]


def _images(nb):
    return [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
            if "image/png" in o.get("data", {})]


def _code_tree(nb):
    """The notebook's code as one Python module (IPython magics left out)."""
    import ast

    return ast.parse("\n".join("\n".join(line for line in c.source.splitlines() if not line.lstrip().startswith("%"))
                               for c in nb.cells if c.cell_type == "code"))


def _glue_references(nb):
    """The keys that the chapter's opening markdown pastes with {glue:text}`key` (myst-nb)."""
    import re

    return set(re.findall(r"\{glue:text\}`([^`:]+)", nb.cells[0].source))


def _glued(nb):
    """The keys glued by the executed notebook's cells."""
    return {o.metadata["scrapbook"]["name"] for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
            if "scrapbook" in o.get("metadata", {})}


def test_committed_notebooks_follow_the_skeleton():
    for nb_path in sorted((REPO_ROOT / "notebooks").glob("*.ipynb")):
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
        # notebooks orchestrate, the library computes: no function or class, at most one loop
        import ast

        tree = _code_tree(nb)
        defined = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef,
                                                                ast.Lambda))]
        loops = [n for n in ast.walk(tree) if isinstance(n, (ast.For, ast.AsyncFor, ast.While))]
        assert not defined and len(loops) <= 1, f"{nb_path.name}: {len(defined)} definitions, {len(loops)} loops"
        # the book reads as a book: the opening says the key result (glued from the run), boilerplate is collapsed
        assert "**Key result.**" in nb.cells[0].source and _glue_references(nb), nb_path.name
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert all("hide-input" in c.metadata.get("tags", []) for c in (*code[:3], code[-1])), nb_path.name
        assert "from synth7t.workflow.stage import" in code[1].source and "Stage(" in code[2].source, nb_path.name


def test_profiles_list_existing_notebooks_with_declared_parameters():
    for name in ("demo", "demo-full", "smoke", "paper"):
        prof = profiles.load_profile(name)
        for entry in prof["notebooks"]:
            nb = REPO_ROOT / entry["notebook"]
            assert nb.is_file()
            declared = profiles.declared_parameters(nb)
            assert set(entry.get("parameters") or {}) <= set(declared)
    with pytest.raises(ValueError, match="not found"):
        profiles.load_profile("no-such-profile")


def test_demo_data_notebook_smoke_run(tmp_path, smoke_book):
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
    # the 3T/7T proportions measured on the held-out subject's images, beside the published ones
    ratios = pd.read_csv(run_dir / "simulated_vs_published_ratios.tsv", sep="\t")
    assert len(ratios) == 4 and (ratios["n_subjects"] == 1).all() and (ratios["simulated"] > 0).all()
    assert not ratios["simulated"].round(6).isin(ratios["design"].round(6)).any()  # measured, not the formulas
    assert (tmp_path / "data" / "participants.tsv").is_file()
    assert (tmp_path / "data" / "split.tsv").is_file()
    # the premise on the raw images of three subjects, with Table 1's segmentation settings (chapter 04's: the
    # check gets no finer registration of its own): the 7T's Dice against the truth over every label leads on each
    # (measured: +0.027, +0.011, +0.009). The amygdala and hippocampus margins are reported, not asserted: at the smoke
    # grids (1.6 / 2.3 mm) and a 3 mm atlas registration, the AD subject's (sub-003), a few voxels across, fall
    # within the registration's scatter (-0.008 and -0.010; the two others lead by +0.016 to +0.031)
    margins = pd.read_csv(run_dir / "premise_margins.tsv", sep="\t", index_col=0)
    assert len(margins) == 3 and (margins["mean_dice"] > 0).all(), margins.round(4).to_string()
    dice = pd.read_csv(run_dir / "premise_dice.tsv", sep="\t")
    assert set(dice["image_type"]) == {"3T", "7T"} and (dice["n_slices"] > 0).all()
    shutil.copy(out / "00_demo_data.ipynb", smoke_book)


@pytest.fixture(scope="module")
def smoke_book(tmp_path_factory):
    """Where every smoke-run chapter of this module lands; the last test builds a book from them."""
    return tmp_path_factory.mktemp("smoke_book")


@pytest.fixture(scope="module")
def smoke_run(preprocessed_cohort, tmp_path_factory, smoke_book):
    """02 trains two batches on the preprocessed coarse cohort, 03 predicts its held-out subject in the three
    spaces and 10 runs the README's command and the gallery of bad inputs, executed through papermill with the smoke
    profile; later chapters' tests start from this run."""
    derivatives, ds, _ = preprocessed_cohort
    root = tmp_path_factory.mktemp("smoke_run")
    overrides = {"data_dir": str(ds.root), "derivatives_dir": str(derivatives), "runs_dir": str(root / "runs")}
    timings = profiles.run_profile("smoke", stages=["02", "03", "10"], output_dir=smoke_book, cwd=root,
                                   overrides=overrides, progress=False)
    return {"root": root, "runs": root / "runs", "book": smoke_book, "overrides": overrides, "timings": timings}


def test_train_and_predict_notebooks_smoke_run(smoke_run):
    out, runs = smoke_run["book"], smoke_run["runs"]
    assert list(smoke_run["timings"]["notebook"]) == ["02_train.ipynb", "02_train_unet-mv-nodiag.ipynb",
                                                      "03_predict.ipynb", "10_lone_3t.ipynb"]
    for name in smoke_run["timings"]["notebook"]:
        nb = nbformat.read(out / name, as_version=4)
        assert not _errors(nb), name
        assert _images(nb), name
    model = runs / "smoke" / "02_train" / "unet-nodiag" / "model"
    assert (model / "generator.safetensors").is_file() and (model / "model.json").is_file()
    pred = runs / "smoke" / "03_predict" / "unet-nodiag"
    table = pd.read_csv(pred / "predictions.tsv", sep="\t")
    assert set(table["status"]) == {"done"}
    for space in ("grid", "7T", "3T"):
        assert len(list(pred.glob(f"*_acq-unet-nodiag_space-{space}_T1w.nii.gz"))) == len(table), space
    # the multi-view model: its planes recorded, the fused prediction with its uncertainty map, its axial view alone
    assert json.loads((runs / "smoke" / "02_train" / "unet-mv-nodiag" / "model" / "model.json").read_text())[
        "train_config"]["planes"] == ["axial", "coronal", "sagittal"]
    for name, maps in (("unet-mv-nodiag", 1), ("unet-mv-nodiag-axial", 0)):
        done = runs / "smoke" / "03_predict" / name
        assert len(list(done.glob(f"*_acq-{name}_space-grid_T1w.nii.gz"))) == len(table), name
        assert len(list(done.glob("*_uncertainty.nii.gz"))) == maps * 3 * len(table), name  # grid, 7T, 3T
    # the gallery's refusals ran through the notebook (the smoke profile's gallery_cases), beside the held-out scan,
    # predicted; every case with its outcome is checked in tests/test_train.py
    lone = runs / "smoke" / "10_lone_3t"
    for name in ("unet-nodiag", "unet-mv-nodiag"):  # the README's command with each model, a sidecar beside each output
        sidecars = [json.loads(p.read_text()) for p in (lone / name).glob("*.json")]
        assert len(sidecars) == 1 and Path(sidecars[0]["native"]).is_file(), name
        assert sidecars[0]["ood"]["score"] >= 0, name
        assert {c["check"] for c in sidecars[0]["input_checks"]} >= {"affine", "brain_volume", "alignment"}, name
    gallery = pd.read_csv(runs / "smoke" / "10_lone_3t" / "gallery.tsv", sep="\t")
    refused = gallery[gallery["expect"] == "refused"]
    assert len(refused) == 6 and (refused["outcome"] == "refused").all(), gallery.to_string()
    assert (gallery.loc[gallery["case"].str.startswith("held out"), "outcome"] == "predicted").all()
    quick = pd.read_csv(runs / "smoke" / "03_predict" / "quick_metrics.tsv", sep="\t")
    assert set(quick["image_type"]) == {"3T", "U-Net nodiag", "U-Net multi-view nodiag",
                                        "U-Net multi-view nodiag, axial view"} and quick["psnr"].notna().all()


@pytest.fixture(scope="module")
def lone_sets(tmp_path_factory):
    """The lone-3T sets of chapters 07 and 08 on the coarse grids: two subjects with labelled references, and a lone
    cohort of eight new subjects plus re-scans of the coarse cohort's four participants (seed 3)."""
    from conftest import COARSE

    from synth7t.simulate import demo, lone

    root = tmp_path_factory.mktemp("lone_sets")
    cfg = demo.DemoConfig(**COARSE)
    lone.generate_amygdala_set(root / "amygdala", 2, seed=5, config=cfg, progress=False)
    lone.generate_lone_cohort(root / "lone", 8, seed=3, config=cfg, rescans=[1, 2, 3, 4], paired_seed=3,
                                   progress=False)
    return {"amygdala_dir": str(root / "amygdala"), "lone_dir": str(root / "lone")}


def test_evaluate_and_segmentation_notebooks_smoke_run(smoke_run, lone_sets):
    """04 scores 3T and the smoke U-Net against the 7T (PSNR, SSIM, Dice of atlas segmentations) and draws its
    figures; 07 runs the amygdala study on lone 3T scans: generalised affine, prediction, one affine to each
    reference, segmentation there, Dice of the amygdalae against the reference labels."""
    out, runs = smoke_run["book"], smoke_run["runs"]
    # 04 quotes the multi-view design study's results file; here a stand-in in its layout (tests/conftest.py)
    design = design_results(smoke_run["root"] / "multiview_design.tsv")
    timings = profiles.run_profile("smoke", stages=["04", "07"], output_dir=out, cwd=smoke_run["root"],
                                   overrides={**smoke_run["overrides"], "amygdala_dir": lone_sets["amygdala_dir"],
                                              "multiview_results": str(design)}, progress=False)
    assert list(timings["notebook"]) == ["04_evaluate.ipynb", "07_segmentation.ipynb"]
    for name in timings["notebook"]:
        nb = nbformat.read(out / name, as_version=4)
        assert not _errors(nb), name
        assert len(_images(nb)) >= (3 if name.startswith("04") else 2), name
        assert "simulated" in nb.cells[0].source.lower(), name
    ev = runs / "smoke" / "04_evaluate"
    shown = json.dumps([c.get("outputs", []) for c in nbformat.read(out / "04_evaluate.ipynb", as_version=4).cells])
    assert "22.10 \\u00b1 0.10 dB" in shown or "22.10 ± 0.10 dB" in shown  # the design study's mean ± SD, glued
    table1 = pd.read_csv(ev / "table1.tsv", sep="\t", index_col=0)
    # the 7T row carries only its Dice against the simulated ground truth
    assert list(table1.index) == ["3T", "U-Net nodiag", "U-Net multi-view nodiag",
                                  "U-Net multi-view nodiag, axial view", "7T"]
    assert {"psnr", "ssim", "mean_dice", "mean_dice_truth"} <= set(table1.columns)
    scores = pd.read_csv(ev / "scores.tsv", sep="\t")
    assert scores.loc[scores.image_type != "7T", ["psnr", "ssim", "mean_dice"]].notna().all().all()
    assert scores["mean_dice_truth"].between(0, 1).all()
    for f in ("figure3_boxplots.png", "figure4_closeups.png", "figure1_3t_vs_7t.png", "through_plane.png",
              "closeups_coronal_sagittal.png", "uncertainty_vs_error.png", "uncertainty_calibration.png"):
        assert (ev / f).is_file(), f
    # beyond the paper: the through-plane measure of every image, the uncertainty of the fused prediction only
    tp = pd.read_csv(ev / "through_plane.tsv", sep="\t")
    assert set(tp["image_type"]) == set(table1.index) - {"7T"} and (tp[["tp_axial", "tp_coronal", "tp_sagittal"]] > 0).all().all()
    rho = pd.read_csv(ev / "uncertainty_rho.tsv", sep="\t")
    assert list(rho["image_type"]) == ["U-Net multi-view nodiag"] and rho["rho"].between(-1, 1).all()
    calibration = pd.read_csv(ev / "uncertainty_calibration.tsv", sep="\t")
    assert list(calibration["bin"]) == list(range(1, 11))
    seg = runs / "smoke" / "07_segmentation"
    dice = pd.read_csv(seg / "structure_dice.tsv", sep="\t")
    assert set(dice["image_type"]) == {"3T", "U-Net nodiag"} and dice["dice"].between(0, 1).all()
    assert set(dice["structure"]) == {"Left-Amygdala", "Right-Amygdala"}  # the paper's family; no hippocampus
    assert set(dice["key"]) == {"sub-101", "sub-102"}
    # the paper's design: one mean of both sides per subject, one pair (U-Net nodiag vs 3T) for one BH family
    tests = pd.read_csv(seg / "amygdala_tests.tsv", sep="\t")
    assert len(tests) == 1 and tests["p_bh"].notna().all() and (tests["n"] == 2).all()
    assert len(pd.read_csv(seg / "per_side_tests.tsv", sep="\t")) == 2  # the secondary table: 2 sides x 1 type
    assert pd.read_csv(seg / "paper_t_check.tsv", sep="\t").query("n == 20")["fits"].all()
    # every image of a subject went to its reference grid through one transform, estimated on the 3T
    assert sorted(p.name for p in (seg / "reference_space" / "xfm").iterdir()) == [
        "sub-101_0GenericAffine.mat", "sub-102_0GenericAffine.mat"]
    shown = json.dumps([c.get("outputs", []) for c in nbformat.read(out / "07_segmentation.ipynb", as_version=4).cells])
    assert "Segmentation: atlas: ICBM 2009c + CerebrA" in shown  # the backend under the table


def test_rating_session_and_analysis_notebooks_smoke_run(smoke_run, preprocessed_cohort, tmp_path):
    """05 builds a blinded session for the held-out subject (3T, real 7T and the smoke run's U-Net prediction,
    2 queries; the key beside the session folder, not in it) that 3 simulated raters (the model observer, registered
    in the session) answer through the widget; 06 unblinds and analyses it, with the observer's measurements, and
    leaves out an answer under a code no rater was registered with; running 05 again keeps the session and its
    answers."""
    import sqlite3

    from synth7t.data import layout
    from synth7t.studies import rating

    derivatives, ds, split_file = preprocessed_cohort
    runs = smoke_run["runs"]
    split = layout.read_split(split_file)
    held_out = set(split.loc[split["split"] == "test", "participant_id"])
    test_keys = [s.key for s in ds if s.participant_id in held_out]

    out = smoke_run["book"]
    overrides = {"data_dir": str(ds.root), "derivatives_dir": str(derivatives), "runs_dir": str(runs)}
    timings = profiles.run_profile("smoke", stages=["05"], output_dir=out, cwd=tmp_path, overrides=overrides,
                                   progress=False)
    session = runs / "smoke" / "05_rating_session" / "session"
    store = rating.RatingStore(session)
    # written past the rater app (which admits registered raters only), e.g. by an old server: 06 must not count it
    store.record_query("mallory", 0, {c: store.meta["positions"] for c in store.criteria})
    timings = pd.concat([timings, profiles.run_profile("smoke", stages=["06"], output_dir=out, cwd=tmp_path,
                                                       overrides={"runs_dir": str(runs)}, progress=False)])
    assert list(timings["notebook"]) == ["05_rating_session.ipynb", "06_rating_analysis.ipynb"]
    for name in timings["notebook"]:
        nb = nbformat.read(out / name, as_version=4)
        assert not _errors(nb), name
        assert _images(nb), name
        assert "simulated" in nb.cells[0].source.lower(), name

    # the session: every variant in every query, 3 simulated raters x every query x 2 criteria, blinded widget
    key = rating.read_key(session)
    n_queries = 2  # the smoke profile's n_queries, over len(test_keys) held-out subject(s)
    assert len(test_keys) >= 1 and set(key["subject"]) == set(test_keys)
    assert store.n_queries == n_queries and key["query_index"].nunique() == n_queries
    assert sorted(p.name for p in session.iterdir()) == ["answers.sqlite", "images", "session.json"]
    assert (session.parent / "session-key" / "key.sqlite").is_file()
    assert all(set(g["variant"]) == {"3T", "7T", "unet-nodiag"} for _, g in key.groupby("query_index"))
    with sqlite3.connect(session / "answers.sqlite") as conn:
        n_answers = conn.execute("SELECT COUNT(*) FROM answers").fetchone()[0]
    assert n_answers == 3 * n_queries * 2 + 2
    assert store.raters() == ["mallory", "sim1", "sim2", "sim3"]
    assert list(rating.registered_raters(store)["rater_id"]) == ["sim1", "sim2", "sim3"]
    nb05 = nbformat.read(out / "05_rating_session.ipynb", as_version=4)
    widget_cell = next(c for c in nb05.cells if "RaterApp(session_dir, rater_ids[0])" in c.source)
    shown = json.dumps(widget_cell.outputs)
    assert "widget-view" in shown and not any(v in shown for v in ("unet", "U-Net"))
    assert (runs / "smoke" / "05_rating_session" / "query_as_shown.png").is_file()

    # the analysis: tables and figures, one ANOVA p-value over raters per criterion
    ana = runs / "smoke" / "06_rating_analysis"
    for f in ("ranks.tsv", "rank_summary.tsv", "anova.tsv", "tukey.tsv", "bonferroni.tsv", "rank_violins.png",
              "stacked_ranks_sim1.png", "stacked_ranks_sim3.png", "observer_measures.tsv"):
        assert (ana / f).is_file(), f
    assert set(pd.read_csv(ana / "ranks.tsv", sep="\t")["rater_id"]) == {"sim1", "sim2", "sim3"}
    nb06 = nbformat.read(out / "06_rating_analysis.ipynb", as_version=4)
    nb06 = json.dumps([c.get("outputs", []) for c in nb06.cells if c.cell_type == "code"])
    assert "codes not registered in this session, left out: mallory (1 query)" in nb06
    summary = pd.read_csv(ana / "rank_summary.tsv", sep="\t")
    assert set(summary["variant"]) == {"3T", "U-Net nodiag", "7T"} and (summary["n"] == 3 * n_queries).all()
    observed = pd.read_csv(ana / "observer_measures.tsv", sep="\t")
    assert set(observed["variant"]) == {"3T", "U-Net nodiag", "7T"} and observed["sharpness"].gt(0).all()
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


def test_diagnosis_notebook_on_a_lone_cohort(smoke_run, lone_sets):
    """08 as the paper designed it: the lone cohort's model-building participants (the smoke split's training side)
    are left out, the test participant and the new subjects stay; each 3T is aligned and synthesised by the smoke
    run's -nodiag U-Net; every image is segmented with the cortical parcellation; the forests compare 3T and U-Net."""
    runs = smoke_run["runs"] / "smoke"
    overrides = {**smoke_run["overrides"], "lone_dir": lone_sets["lone_dir"]}
    profiles.run_profile("smoke", stages=["08"], output_dir=smoke_run["book"], cwd=smoke_run["root"],
                         overrides=overrides, progress=False)
    nb = nbformat.read(smoke_run["book"] / "08_diagnosis.ipynb", as_version=4)
    assert not _errors(nb)
    dx = runs / "08_diagnosis"
    split = pd.read_csv(runs / "02_train" / "cache" / "volumes.tsv", sep="\t")
    building = {k.split("_")[0] for k, s in zip(split["key"], split["split"]) if s != "test"}
    excluded = pd.read_csv(dx / "excluded.tsv", sep="\t")
    assert set(excluded["participant_id"]) == building and len(building) == 3
    volumes = pd.read_csv(dx / "volumes.tsv", sep="\t")
    assert set(volumes["image_type"]) == {"3T", "unet-nodiag"}
    assert not set(volumes["key"]) & building and len(set(volumes["key"])) == 9  # 8 new + the test participant
    assert any(c.startswith("ctx-lh-") for c in volumes.columns)  # aparc + aseg, as the paper
    summary = pd.read_csv(dx / "score_summary.tsv", sep="\t")
    assert set(summary["image_type"]) == {"3T", "unet-nodiag"}
    # the paper's forest by default: raw volumes with age and sex, no head-size feature, no class weights
    settings = json.loads((dx / "settings.json").read_text())
    assert (settings["normalise"], settings["head_size_feature"], settings["class_weight"]) == (None, False, None)
    shown = json.dumps([c.get("outputs", []) for c in nb.cells])
    assert "Segmentation: atlas: ICBM 2009c + CerebrA" in shown


def test_compare_paper_notebook_and_book_from_the_smoke_run(smoke_run, smoke_book, lone_sets, tmp_path):
    """08 (on an external volumes table, the path for cohorts analysed from their FreeSurfer tables) and 09 (on the
    smoke run's tables) run; then the chapters of this module's smoke run (every notebook but 01,
    whose smoke run is marked slow in test_preprocess.py) become a book with the real pages and configuration, built
    with warnings as errors, and headless Chromium opens the front page and two chapters: every image loaded with a
    non-zero size, no cell shows an error, the simulated-data notice is on the page."""
    from test_diagnosis import simulate_cohort

    from synth7t.workflow import book

    # run alone (pytest -k), the chapters of the earlier tests of this module are made here first
    runs = smoke_run["runs"] / "smoke"
    need = {"00": not (smoke_book / "00_demo_data.ipynb").is_file(),
            "04": not (runs / "04_evaluate" / "scores.tsv").is_file(),
            "05": not (runs / "06_rating_analysis" / "rank_summary.tsv").is_file()}
    if need["00"]:
        profiles.run_profile("smoke", stages=["00"], output_dir=smoke_book, cwd=tmp_path,
                             overrides={"data_dir": str(tmp_path / "data")}, progress=False)
    for first, stages in (("04", ["04", "07"]), ("05", ["05", "06"])):
        if need[first]:
            profiles.run_profile("smoke", stages=stages, output_dir=smoke_book, cwd=smoke_run["root"],
                                 overrides={**smoke_run["overrides"],
                                            **({"amygdala_dir": lone_sets["amygdala_dir"]} if first == "04" else {})},
                                 progress=False)

    vol, part = simulate_cohort(n=24, types=("3T", "unet-nodiag"))
    vol.to_csv(tmp_path / "volumes.tsv", sep="\t", index=False)
    part.to_csv(tmp_path / "participants.tsv", sep="\t", index=False)
    external = {"volumes_table": str(tmp_path / "volumes.tsv"), "participants": str(tmp_path / "participants.tsv")}
    dirs = {k: smoke_run["overrides"][k] for k in ("data_dir", "runs_dir")}  # 08 and 09 read tables, not images
    profiles.run_profile("smoke", stages=["08"], output_dir=smoke_book, cwd=smoke_run["root"],
                         overrides={**dirs, **external, "lone_dir": ""}, progress=False)
    timings = profiles.run_profile("smoke", stages=["09"], output_dir=smoke_book, cwd=smoke_run["root"],
                                   overrides=dirs, progress=False)
    assert list(timings["notebook"]) == ["09_compare_paper.ipynb"]
    assert not _errors(nbformat.read(smoke_book / "08_diagnosis.ipynb", as_version=4))
    nb = nbformat.read(smoke_book / "09_compare_paper.ipynb", as_version=4)
    assert not _errors(nb) and len(_images(nb)) >= 4
    summary = pd.read_csv(smoke_run["runs"] / "smoke" / "09_compare_paper" / "summary.tsv", sep="\t")
    assert set(summary["result"]) == {"Table 1", "survey", "amygdala", "diagnosis"}

    # every chapter glues the numbers its "Key result" line shows
    for f in sorted(smoke_book.glob("*.ipynb")):
        chapter = nbformat.read(f, as_version=4)
        assert _glue_references(chapter) <= _glued(chapter), f.name

    # the small book: real _config.yml and pages, the toc without the chapters this module did not run
    root = tmp_path / "book-root"
    shutil.copytree(REPO_ROOT / "book", root / "book", ignore=shutil.ignore_patterns("notebooks"))
    shutil.copy(REPO_ROOT / "_config.yml", root)
    # what `make test` leaves in a checkout (pytest's cache holds a README.md) must not reach the book
    (root / ".pytest_cache").mkdir()
    (root / ".pytest_cache" / "README.md").write_text("# pytest cache directory #\n")
    (root / "book" / "notebooks").mkdir()
    for f in smoke_book.glob("*.ipynb"):
        shutil.copy(f, root / "book" / "notebooks")
    present = {f.stem for f in smoke_book.glob("*.ipynb")}
    toc = yaml.safe_load((REPO_ROOT / "_toc.yml").read_text())
    dropped = []
    for part in toc["parts"]:
        keep = [c for c in part["chapters"] if not c["file"].startswith("book/notebooks/")
                or c["file"].rsplit("/", 1)[1] in present | {"measurements"}]  # synth7t book writes that page
        dropped += [c["file"] for c in part["chapters"] if c not in keep]
        part["chapters"] = keep
        for c in keep:  # the smoke run trains one model: the demo's other 02 runs are not there
            if c.get("sections"):
                dropped += [x["file"] for x in c["sections"] if x["file"].rsplit("/", 1)[1] not in present]
                c["sections"] = [x for x in c["sections"] if x["file"].rsplit("/", 1)[1] in present]
                if not c["sections"]:
                    del c["sections"]
    assert dropped == ["book/notebooks/01_preprocess", "book/notebooks/02_train_gan-unet-nodiag",
                       "book/notebooks/02_train_vnet", "book/notebooks/02_train_watnet"]
    # a chapter whose cell failed, to show that both checks catch it: the chapter check refuses the build, and
    # (built anyway) the browser sees the error on the page
    from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

    error = new_output("error", ename="ZeroDivisionError", evalue="division by zero",
                       traceback=["Traceback (most recent call last)", "ZeroDivisionError: division by zero"])
    failed = new_notebook(
        cells=[new_markdown_cell("# A failed chapter"), new_code_cell("1 / 0", execution_count=1, outputs=[error])],
        metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    nbformat.write(failed, root / "book" / "notebooks" / "99_failed.ipynb")
    toc["parts"][-1]["chapters"].append({"file": "book/notebooks/99_failed"})
    (root / "_toc.yml").write_text(yaml.safe_dump(toc))
    with pytest.raises(book.BookError, match="99_failed: 1 error output"):
        book.build_book(root)
    # the intro links to chapter 09 and the pages; 01 is linked from nowhere, so nothing dangles
    index = book.build_book(root, check_chapters=False)
    assert index == root / "_build" / "html" / "index.html" and index.is_file()
    # the key result carries the run's numbers, and the set-up code is collapsed under "Show code cell source"
    page = (index.parent / "book" / "notebooks" / "05_rating_session.html").read_text()
    key_result = page[page.index("Key result."):][:600]
    assert "{glue" not in key_result and '<span class="pasted-text">2</span>' in key_result  # 2 queries
    assert page.count('<div class="cell tag_hide-input') >= 3 and "Show code cell source" in page

    pages = ["index.html", "book/notebooks/04_evaluate.html", "book/notebooks/09_compare_paper.html"]
    from conftest import require_browser

    require_browser()
    report = book.check_in_browser(index.parent, [*pages, "book/notebooks/99_failed.html"]).set_index("page")
    bad = report.loc["book/notebooks/99_failed.html"]
    assert not bad["ok"] and bad["n_errors"] >= 1 and bad["traceback_text"]
    report = report.loc[pages]
    assert report["ok"].all(), report.to_string()
    assert (report.loc[pages[1:], "n_images"] >= 3).all()
    assert report["simulated"].all()  # the front page and each chapter say the data are simulated
