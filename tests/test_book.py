"""The book's table of contents, chapter checks and profile runner options (fast; the build and the browser
check of a smoke-run book are at the end of test_notebooks.py, after the notebooks they need have run)."""

import json

import nbformat
import pandas as pd
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from synth7t import book, profiles


def test_toc_has_every_notebook_and_the_required_pages():
    entries = book.toc_entries()
    assert entries[0] == "book/intro"
    chapters = [e for e in entries if e.startswith("book/notebooks/")]
    committed = sorted(p.stem for p in (profiles.REPO_ROOT / "notebooks").glob("*.ipynb"))
    assert [c.rsplit("/", 1)[1] for c in chapters] == committed  # one chapter per notebook, in order
    for page in ("book/methods", "book/run_on_your_data", "book/api"):
        assert page in entries and (profiles.REPO_ROOT / f"{page}.md").is_file()
    # the demo profile runs exactly the notebooks the book shows
    demo = profiles.load_profile("demo")
    assert sorted(p.stem for p in map(profiles.Path, (e["notebook"] for e in demo["notebooks"]))) == committed
    # the API page documents every module of the package
    api = (profiles.REPO_ROOT / "book" / "api.md").read_text()
    modules = {p.stem for p in (profiles.REPO_ROOT / "synth7t").glob("*.py")} - {"__init__", "__main__"}
    assert {m for m in modules if f"automodule:: synth7t.{m}\n" not in api} == set()


def _write_book(root, notebooks):
    (root / "book" / "notebooks").mkdir(parents=True)
    (root / "book" / "intro.md").write_text("# Intro\n")
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
        profiles.run_profile("smoke", stages=["00"], output_dir=tmp_path, overrides={"no_such_param": 1})
    with pytest.raises(ValueError, match="matches stages"):
        profiles.run_profile("smoke", stages=["99"], output_dir=tmp_path)
    assert not list(tmp_path.iterdir())  # nothing ran


def test_run_profile_records_the_failed_notebook(tmp_path):
    """A notebook that fails leaves timings.tsv with the finished notebooks and the failed one."""
    nb = new_notebook(cells=[new_markdown_cell("# fails"),
                             new_code_cell("x = 1  # the parameter", metadata={"tags": ["parameters"]}),
                             new_code_cell("raise RuntimeError(f'boom {x}')")],
                      metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    nbformat.write(nb, tmp_path / "fails.ipynb")
    ok = new_notebook(cells=[new_markdown_cell("# ok"), new_code_cell("x = 1", metadata={"tags": ["parameters"]})],
                      metadata=nb.metadata)
    nbformat.write(ok, tmp_path / "ok.ipynb")
    prof = tmp_path / "p.yml"
    prof.write_text(json.dumps({"notebooks": [{"notebook": str(tmp_path / "ok.ipynb")},
                                              {"notebook": str(tmp_path / "fails.ipynb"),
                                               "parameters": {"x": 2}}]}))
    with pytest.raises(Exception, match="boom 2"):
        profiles.run_profile(prof, output_dir=tmp_path / "out", cwd=tmp_path, progress=False)
    timings = pd.read_csv(tmp_path / "out" / "timings.tsv", sep="\t")
    assert list(timings["notebook"]) == ["ok.ipynb", "fails.ipynb"]
    assert list(timings["status"]) == ["done", "failed"]
