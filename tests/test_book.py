"""The book's table of contents, chapter checks and profile runner options (fast; the build and the browser
check of a smoke-run book are at the end of test_notebooks.py, after the notebooks they need have run)."""

import io
import json
import os
import shutil
import threading
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from synth7t.workflow import book, measurements, profiles

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_toc_has_every_notebook_and_the_required_pages():
    entries = book.toc_entries(REPO_ROOT)
    assert entries[0] == "book/intro"
    generated = "book/notebooks/" + measurements.PAGE.stem  # written by synth7t book, not by a notebook
    assert generated in entries
    chapters = [e.rsplit("/", 1)[1] for e in entries if e.startswith("book/notebooks/") and e != generated]
    committed = sorted(p.stem for p in (REPO_ROOT / "notebooks").glob("*.ipynb"))
    for page in ("book/methods", "book/run_on_your_data", "book/api"):
        assert page in entries and (REPO_ROOT / f"{page}.md").is_file()
    # the book shows exactly what the demo profile writes (a notebook run twice has an output name), in reading order
    # (the profile's is the order they can run in: chapter 10 beside 08, before 09 which reads every study), and the
    # demo profile runs every committed notebook
    demo = profiles.load_profile("demo", root=REPO_ROOT)
    written = [Path(e.get("output") or Path(e["notebook"]).name).stem for e in demo["notebooks"]]
    assert sorted(chapters) == sorted(written) and len(set(chapters)) == len(chapters)
    assert sorted({Path(e["notebook"]).stem for e in demo["notebooks"]}) == committed


def test_the_project_root_is_given_or_the_current_folder(tmp_path, monkeypatch):
    """The installed library never looks for profiles/ or the book beside its own files: the root is an argument,
    by default the current folder, and a folder without them says what to do."""
    monkeypatch.chdir(REPO_ROOT)
    assert profiles.project_root() == REPO_ROOT and book.book_root() == REPO_ROOT
    assert profiles.load_profile("smoke")["path"] == str(REPO_ROOT / "profiles" / "smoke.yml")
    monkeypatch.chdir(tmp_path)
    hint = "run from the repository root or pass --root"
    with pytest.raises(profiles.ProjectRootError, match=f"no profiles/ in .*: {hint}"):
        profiles.load_profile("smoke")
    with pytest.raises(profiles.ProjectRootError, match=hint):
        profiles.run_profile("smoke", stages=["00"])
    with pytest.raises(book.BookError, match=f"no _toc.yml in .*: {hint}"):
        book.chapter_status()
    (tmp_path / "_toc.yml").write_text("root: intro\n")
    with pytest.raises(book.BookError, match=f"no _config.yml in .*: {hint}"):
        book.build_book()
    # a profile's relative notebook paths resolve against the root, whatever the current folder
    prof = profiles.load_profile("smoke", root=REPO_ROOT)
    assert prof["notebooks"][0]["notebook"] == "notebooks/00_demo_data.ipynb"
    with pytest.raises(profiles.ProjectRootError, match="notebook notebooks/00_demo_data.ipynb not found"):
        profiles.run_profile(REPO_ROOT / "profiles" / "smoke.yml", stages=["00"], root=tmp_path)
    assert not (tmp_path / "book").exists()  # nothing ran


def _write_book(root, notebooks):
    (root / "book" / "notebooks").mkdir(parents=True)
    (root / "book" / "intro.md").write_text("# Intro\n")
    (root / "_config.yml").write_text("title: t\n")
    (root / "_toc.yml").write_text(json.dumps({
        "format": "jb-book", "root": "book/intro",
        "parts": [{"caption": "c", "chapters": [{"file": f"book/notebooks/{n}"} for n in notebooks]}]}))


def test_chapter_status_flags_missing_unexecuted_and_failed_chapters(tmp_path):
    _write_book(tmp_path, ["00_ok", "01_unexecuted", "02_error", "03_missing"])
    nbdir = tmp_path / "book" / "notebooks"
    ok = new_notebook(cells=[new_markdown_cell("# t"), new_code_cell("1 + 1", execution_count=1), new_code_cell("")])
    nbformat.write(ok, nbdir / "00_ok.ipynb")
    nbformat.write(new_notebook(cells=[new_code_cell("1", execution_count=1), new_code_cell("2")]),
                   nbdir / "01_unexecuted.ipynb")
    err = new_notebook(cells=[new_code_cell("1 / 0", execution_count=1, outputs=[
        new_output("error", ename="ZeroDivisionError", evalue="division by zero", traceback=[])])])
    nbformat.write(err, nbdir / "02_error.ipynb")
    status = book.chapter_status(tmp_path).set_index("entry")
    assert status.loc["book/intro", "problem"] == "" and not status.loc["book/intro", "notebook"]
    assert status.loc["book/notebooks/00_ok", "problem"] == ""
    assert status.loc["book/notebooks/00_ok", "code_cells"] == 1  # empty cells do not count
    assert status.loc["book/notebooks/01_unexecuted", "problem"] == "1 of 2 code cells not executed"
    assert status.loc["book/notebooks/02_error", "problem"] == "1 error output(s)"
    assert status.loc["book/notebooks/03_missing", "problem"].startswith("missing")
    # the build refuses before calling jupyter-book, naming every chapter that is not ready
    with pytest.raises(book.BookError) as info:
        book.build_book(tmp_path)
    msg = str(info.value)
    assert "01_unexecuted" in msg and "02_error" in msg and "03_missing" in msg and "00_ok" not in msg
    with pytest.raises(book.BookError, match="no _toc.yml"):
        book.toc_entries(tmp_path / "nowhere")


def test_run_profile_overrides_are_checked_before_anything_runs(tmp_path):
    assert profiles.parse_overrides(["run_name=bf2", "subjects=[sub-001, sub-002]", "n_jobs=4", "x="]) == \
        {"run_name": "bf2", "subjects": ["sub-001", "sub-002"], "n_jobs": 4, "x": ""}
    with pytest.raises(ValueError, match="KEY=VALUE"):
        profiles.parse_overrides(["run_name"])
    with pytest.raises(ValueError, match="not parameters of any notebook"):
        profiles.run_profile("smoke", stages=["00"], output_dir=tmp_path, overrides={"no_such_param": 1},
                             root=REPO_ROOT)
    with pytest.raises(ValueError, match="matches stages"):
        profiles.run_profile("smoke", stages=["99"], output_dir=tmp_path, root=REPO_ROOT)
    assert not list(tmp_path.iterdir())  # nothing ran


def test_a_profile_is_planned_in_full_before_it_runs(tmp_path, capsys):
    """The demo's plan: 00 and 01 alone, the five trainings in two lanes, chapters 03-07 in one lane beside 08
    and 10, then 09; ``synth7t run-profile --plan`` prints it and runs nothing."""
    from synth7t.cli import main

    plan = profiles.plan_profile("demo", output_dir=tmp_path / "out", root=REPO_ROOT)
    steps = [[(key[1] if key else None, [item.output.name[:2] for item in items]) for key, items in group]
             for group in plan.groups()]
    assert steps == [[(None, ["00"])], [(None, ["01"])], [("a", ["02"] * 3), ("b", ["02"] * 2)],
                     [("studies", ["03", "04", "05", "06", "07"]), ("diagnosis", ["08", "10"])], [(None, ["09"])]]
    assert [item.index for item in plan.notebooks] == list(range(1, 16))
    assert plan.notebooks[0].parameters["n_subjects"] == 12 and plan.cwd == REPO_ROOT
    table = plan.table()
    assert list(table["step"]) == [1, 2, 3, 3, 3, 3, 3, 4, 4, 4, 4, 4, 4, 4, 5]
    # the same lane name in another group is another lane
    a, b, c = (profiles.PlannedNotebook(i, Path(f"{i}.ipynb"), Path(f"{i}.ipynb"), {}, frozenset(), lane)
               for i, lane in ((1, ("g", "x")), (2, ("h", "x")), (3, ("h", "x"))))
    two = profiles.ProfilePlan(Path("p.yml"), (a, b, c), tmp_path, tmp_path).groups()
    assert [[len(items) for _, items in g] for g in two] == [[1], [2]]
    assert main(["run-profile", "demo", "--plan", "--root", str(REPO_ROOT), "--output-dir",
                 str(tmp_path / "out"), "--set", "n_jobs=1"]) == 0
    out = capsys.readouterr().out
    assert "15 notebook(s)" in out and "08_diagnosis.ipynb" in out and "n_jobs=1" in out
    assert not (tmp_path / "out").exists()  # nothing ran


def test_run_profile_records_the_failed_notebook(tmp_path, capfd):
    """A notebook that fails leaves timings.tsv with the finished notebooks and the failed one; the console shows
    one line as each notebook starts and ends and none of the kernel's noise; papermill's injected-parameters cell
    of every written notebook is tagged remove-cell, so the book does not show it."""
    nb = new_notebook(cells=[new_markdown_cell("# fails"),
                             new_code_cell("x = 1  # the parameter", metadata={"tags": ["parameters"]}),
                             new_code_cell("raise RuntimeError(f'boom {x}')")],
                      metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    nbformat.write(nb, tmp_path / "fails.ipynb")
    ok = new_notebook(cells=[new_markdown_cell("# ok"), new_code_cell("x = 1", metadata={"tags": ["parameters"]})],
                      metadata=nb.metadata)
    nbformat.write(ok, tmp_path / "ok.ipynb")
    prof = tmp_path / "p.yml"
    prof.write_text(json.dumps({"notebooks": [{"notebook": str(tmp_path / "ok.ipynb"), "parameters": {"x": 3}},
                                              {"notebook": str(tmp_path / "fails.ipynb"),
                                               "parameters": {"x": 2}}]}))
    with pytest.raises(profiles.NotebookFailed, match="boom 2") as info:
        profiles.run_profile(prof, output_dir=tmp_path / "out", cwd=tmp_path, progress=False, root=tmp_path)
    assert "\n" not in str(info.value) and "fails.ipynb failed in cell" in str(info.value)
    timings = pd.read_csv(tmp_path / "out" / "timings.tsv", sep="\t")
    assert list(timings["notebook"]) == ["ok.ipynb", "fails.ipynb"]
    assert list(timings["status"]) == ["done", "failed"]
    for name in ("ok.ipynb", "fails.ipynb"):
        written = nbformat.read(tmp_path / "out" / name, as_version=4)
        injected = [c for c in written.cells if "injected-parameters" in c.metadata.get("tags", [])]
        assert len(injected) == 1 and "remove-cell" in injected[0].metadata["tags"], name
        declared = [c for c in written.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(declared) == 1 and "remove-cell" not in declared[0].metadata["tags"]  # the defaults stay shown
    assert profiles.hide_injected_parameters(tmp_path / "out" / "ok.ipynb")  # idempotent
    assert nbformat.read(tmp_path / "out" / "ok.ipynb", as_version=4).cells[2].metadata["tags"] == \
        ["injected-parameters", "remove-cell"]
    out, err = capfd.readouterr()
    lines = out.splitlines()
    assert lines[0].startswith("[1/2] ok.ipynb ... x=3") and lines[1].startswith("[1/2] ok.ipynb done in ")
    assert lines[2].startswith("[2/2] fails.ipynb ... x=2") and lines[3].startswith("[2/2] fails.ipynb failed after")
    assert "without encryption" not in err and "KeyboardInterrupt" not in err and "Executing" not in err


def test_lanes_run_side_by_side_on_a_share_of_the_cores_and_a_failure_waits_for_the_other_lane(tmp_path):
    """Consecutive entries with a lane (and the same group) run as a group: its lanes at the same time (each notebook
    writes when it ran), each kernel on cores / lanes threads, a lane's notebooks in order; the next group waits for
    it; a failing lane lets the other one finish, then the run stops before the next notebook with the failure, and
    timings.tsv holds every notebook that ran."""
    meta = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}
    work = new_notebook(cells=[
        new_code_cell("name = 'x'\nfail = False", metadata={"tags": ["parameters"]}),
        new_code_cell("import json, os, time\nt0 = time.time()\ntime.sleep(2)\n"
                      "json.dump({'start': t0, 'end': time.time(), 'threads': os.environ.get('OMP_NUM_THREADS')},"
                      " open(name + '.json', 'w'))\nif fail:\n    raise RuntimeError('lane failed ' + name)")],
        metadata=meta)
    nbformat.write(work, tmp_path / "work.ipynb")
    nb = str(tmp_path / "work.ipynb")
    entries = [{"notebook": nb, "output": "a1.ipynb", "lane": "a", "parameters": {"name": "a1"}},
               {"notebook": nb, "output": "b1.ipynb", "lane": "b", "parameters": {"name": "b1"}},
               {"notebook": nb, "output": "a2.ipynb", "lane": "a", "parameters": {"name": "a2"}},
               {"notebook": nb, "output": "c1.ipynb", "lane": "c", "group": "next", "parameters": {"name": "c1"}},
               {"notebook": nb, "output": "after.ipynb", "parameters": {"name": "after"}}]
    prof = tmp_path / "p.yml"
    prof.write_text(json.dumps({"notebooks": entries}))
    timings = profiles.run_profile(prof, output_dir=tmp_path / "out", cwd=tmp_path, progress=False, root=tmp_path)
    ran = {n: json.loads((tmp_path / f"{n}.json").read_text()) for n in ("a1", "b1", "a2", "c1", "after")}
    assert ran["b1"]["start"] < ran["a1"]["end"] and ran["a1"]["start"] < ran["b1"]["end"]  # side by side
    assert ran["a2"]["start"] >= ran["a1"]["end"]  # a lane in order
    assert ran["c1"]["start"] >= max(ran["a2"]["end"], ran["b1"]["end"])  # another group waits for this one
    assert ran["after"]["start"] >= ran["c1"]["end"]  # and a notebook without a lane for the group
    share = str(max(1, (os.cpu_count() or 1) // 2))
    assert [ran[n]["threads"] for n in ("a1", "b1", "a2")] == [share] * 3
    assert ran["after"]["threads"] == os.environ.get("OMP_NUM_THREADS")  # outside the group: the runner's own
    assert sorted(timings["notebook"]) == ["a1.ipynb", "a2.ipynb", "after.ipynb", "b1.ipynb", "c1.ipynb"]
    assert ran["c1"]["threads"] == str(os.cpu_count() or 1)  # a group of one lane: every core
    for k in ran:
        (tmp_path / f"{k}.json").unlink()
    entries[1]["parameters"]["fail"] = True
    prof.write_text(json.dumps({"notebooks": entries}))
    with pytest.raises(profiles.NotebookFailed, match="lane failed b1"):
        profiles.run_profile(prof, output_dir=tmp_path / "out2", cwd=tmp_path, progress=False, root=tmp_path)
    assert (tmp_path / "a2.json").is_file() and not (tmp_path / "c1.json").is_file()
    written = pd.read_csv(tmp_path / "out2" / "timings.tsv", sep="\t")
    assert dict(zip(written["notebook"], written["status"])) == {"a1.ipynb": "done", "a2.ipynb": "done",
                                                                  "b1.ipynb": "failed"}


def test_kernel_stderr_is_forwarded_without_its_known_noise():
    read_end, write_end = os.pipe()
    sink = io.StringIO()
    thread = profiles.forward_filtered(read_end, sink)
    assert isinstance(thread, threading.Thread)
    os.write(write_end, b"[IPKernelApp] WARNING | Kernel is running over TCP without encryption. ...\n"
                        b"a real problem\n[IPKernelApp] ERROR | KeyboardInterrupt caught in kernel.\n")
    os.close(write_end)
    thread.join(10)
    assert sink.getvalue() == "a real problem\n"


def test_the_measurements_page_is_read_from_the_files_that_hold_them(tmp_path):
    """Every number of the page comes from a file, and a missing file names the command that writes it."""
    (tmp_path / "book" / "notebooks").mkdir(parents=True)
    pd.DataFrame({"notebook": ["00_demo_data.ipynb", "01_preprocess.ipynb"], "output": ["a", "b"],
                  "seconds": [80.14, 236.52], "status": ["ok", "ok"]}).to_csv(
        tmp_path / "book" / "notebooks" / "timings.tsv", sep="\t", index=False)
    results = tmp_path / "benchmarks" / "results"
    results.mkdir(parents=True)
    shutil.copy(REPO_ROOT / "benchmarks" / "results" / "speed_lone.tsv", results)
    page = measurements.write_measurements_page(tmp_path).read_text()
    assert page.startswith("# Measurements") and "simulated" in page
    assert "| 00_demo_data.ipynb | 80.1 | ok |" in page and "| sum of the notebooks | 316.7 |  |" in page
    lone = pd.read_csv(results / "speed_lone.tsv", sep="\t")
    assert f"| {lone['whole'].iloc[0]} |" in page or str(lone["whole"].iloc[0]) in page
    # the files that are not there: said, with the command that measures them
    assert "`benchmarks/results/speed_pair.tsv` is missing (`python benchmarks/bench_speed.py pair` writes it)" in page
    assert "`runs/demo/04_evaluate/table1.tsv` is missing (`make demo` writes it)" in page
