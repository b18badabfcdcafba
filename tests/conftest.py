"""Shared fixtures: tiny NIfTI files, tiny layouts, and one coarse simulated cohort per test session."""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

os.environ.setdefault("MPLBACKEND", "Agg")

# coarse voxels keep the demo generator fast in tests; the real demo uses 0.7 mm / 1 mm
COARSE = dict(voxel_7t=1.6, voxel_3t=2.3)  # the smoke profile's grids: the paper's 3T/7T ratio, 1/0.7



def design_results(path: Path, seeds=(0, 1, 2), generator_version="current") -> Path:
    """A results file in the layout of benchmarks/multiview_design.py (one row per seed and image type) with made-up
    numbers, for the tests of the code that reads it; the real file is benchmarks/results/multiview_design.tsv.
    ``generator_version``: the demo generator's (default today's; None: no column, as files before it was recorded)."""
    import pandas as pd

    from synth7t.simulate.demo import GENERATOR_VERSION

    rows = []
    for s in seeds:
        for k, it in enumerate(["3T", "axial model", "mv-cond fused mean", "mv-cond fused median",
                                "mv-nocond fused mean", "three fused mean"]):
            rows.append(dict(seed=s, image_type=it, n_subjects=3, samples=320, grid="176x136, 1.2 mm",
                             psnr=20.0 + k + 0.1 * s, ssim=0.8, artefact_index=1.5 + 0.2 * s, rho=0.1 * s,
                             rho_block3=0.2, commit="test"))
    if generator_version is not None:
        version = GENERATOR_VERSION if generator_version == "current" else generator_version
        rows = [{**r, "generator_version": version} for r in rows]
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(path, sep="\t", index=False)
    return path


def write_nifti(path: Path, data=None, affine=None, shape=(6, 7, 8)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if data is None:
        data = np.random.default_rng(0).random(shape).astype(np.float32)
    if affine is None:
        affine = np.diag([1.0, 1.0, 1.0, 1.0])
    nib.save(nib.Nifti1Image(np.asarray(data), affine), str(path))
    return path


def make_layout(root: Path, subjects: dict, *, participants: list | None = None, artefacts: list | None = None,
                files: tuple = ("3T", "7T")) -> Path:
    """A tiny dataset: ``subjects`` maps ``sub-XX`` (or ``sub-XX_ses-YY``) to participants fields."""
    root.mkdir(parents=True, exist_ok=True)
    rows = participants if participants is not None else []
    seen = set()
    for key, info in subjects.items():
        sub, _, ses = key.partition("_")
        anat = root / sub / (ses if ses else "") / "anat"
        for acq in files:
            write_nifti(anat / f"{key}_acq-{acq}_T1w.nii.gz")
        if participants is None and sub not in seen:
            rows.append({"participant_id": sub, **info})
            seen.add(sub)
    pd.DataFrame(rows).to_csv(root / "participants.tsv", sep="\t", index=False)
    if artefacts is not None:
        pd.DataFrame(artefacts).to_csv(root / "artefacts.tsv", sep="\t", index=False)
    return root


@pytest.fixture
def tiny_layout(tmp_path):
    subjects = {
        "sub-01": dict(age=61, sex="F", diagnosis="CN"),
        "sub-02": dict(age=72, sex="M", diagnosis="MCI"),
        "sub-03": dict(age=68, sex="F", diagnosis="AD"),
    }
    return make_layout(tmp_path / "ds", subjects,
                       artefacts=[{"participant_id": "sub-02", "first_slice": 0, "last_slice": 2}])


@pytest.fixture(scope="session")
def coarse_cohort(tmp_path_factory):
    """Four simulated subjects on coarse grids (seed 3 gives at least one 7T artefact)."""
    from synth7t.simulate import demo

    root = tmp_path_factory.mktemp("cohort")
    ds = demo.generate_cohort(root / "demo", 4, seed=3, config=demo.DemoConfig(**COARSE), n_jobs=1,
                              progress=False)
    return ds


@pytest.fixture(scope="session")
def full_size_cohort(tmp_path_factory):
    """One simulated subject at the paper's voxels (7T 0.7 mm, 3T 1 mm; seed 0): for the slow tests only (about a
    minute to generate on 2 cores)."""
    from synth7t.simulate import demo

    root = tmp_path_factory.mktemp("full_size")
    return demo.generate_cohort(root / "demo", 1, seed=0, n_jobs=1, progress=False)


@pytest.fixture(scope="session")
def preprocessed_cohort(coarse_cohort, tmp_path_factory):
    """The coarse cohort preprocessed quickly (ground-truth masks, no N4, quick registration, 128 x 96 grid),
    with a split; returns ``(derivatives_dir, dataset, split_file)``."""
    from synth7t.data import layout
    from synth7t import preprocess

    root = coarse_cohort.root
    split_file = layout.write_split(layout.make_split(coarse_cohort, n_test=1, seed=0), root / "split.tsv")
    cfg = preprocess.PreprocessConfig.from_preset("quick", target_spacing=None, grid_inplane=(128, 96), mask_backend="given",
                                 n4_3t=False, n4_7t=False, qc_figure=False)
    out = tmp_path_factory.mktemp("derivatives") / "synth7t-preproc"
    table = preprocess.preprocess_dataset(root, cfg, n_jobs=1, progress=False, out_root=out)
    assert (table["status"] == "done").all(), table
    return out, coarse_cohort, split_file


def require_browser():
    """Skip when Debian's Chromium and chromedriver are missing, unless SYNTH7T_REQUIRE_BROWSER is set (CI): then the
    missing browser is an error, not a skip."""
    import os

    from synth7t.workflow import book

    try:
        book.find_browser()
    except book.BookError as err:
        if os.environ.get("SYNTH7T_REQUIRE_BROWSER"):
            raise
        pytest.skip(str(err))
