"""Notebooks executed through papermill with the smoke profile (tiny cohort, coarse voxels)."""

import json

import nbformat
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
