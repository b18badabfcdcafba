"""Segmentation: the atlas backend's accuracy on a coarse simulated subject, the synthseg plumbing (a real
subprocess), regional volumes, the resumable batch runner, bad inputs and the CLI."""

from __future__ import annotations

import json
import os
import shutil
import stat
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import synth7t
from synth7t import cli
from synth7t.simulate import demo
from synth7t.evaluation import metrics
from synth7t.data import io as sio
from synth7t import segment as sg

from conftest import write_nifti

# A few iterations at 4 mm: for tests of the runner (files, skipping, failures), not of accuracy.
TINY = dict(registration=dict(spacing=4.0, affine_iterations=(50,), affine_shrink_factors=(1,),
                              affine_smoothing_sigmas=(1,), syn_iterations=(5,), syn_shrink_factors=(1,),
                              syn_smoothing_sigmas=(0,)),
            label_interpolation="nearestNeighbor")


def _record(derivatives: Path, key: str) -> dict:
    return json.loads(next(derivatives.glob(f"{key}/anat/{key}_desc-preproc.json")).read_text())


def _blob(shape=(20, 24, 22)) -> np.ndarray:
    """A brain-like test image: an ellipsoid (0.3) with a brighter core (0.8), background exactly 0."""
    ii, jj, kk = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    r = ii**2 + jj**2 + kk**2
    return np.where(r < 0.6, 0.3, 0.0).astype(np.float32) + np.where(r < 0.2, 0.5, 0.0).astype(np.float32)


# --------------------------------------------------------------------------------------- label table


def test_label_table_is_the_demo_cohorts():
    assert sg.FREESURFER_LABELS == demo.LABELS
    assert set(metrics.CEREBELLUM_LABELS) <= set(sg.FREESURFER_LABELS)
    assert sg.FREESURFER_LABELS[17] == "Left-Hippocampus" and sg.FREESURFER_LABELS[54] == "Right-Amygdala"


def test_atlas_config_checks_its_values():
    cfg = sg.AtlasConfig(registration={"syn_iterations": [10, 5], "syn_shrink_factors": [2, 1],
                                       "syn_smoothing_sigmas": [1, 0]})
    assert cfg.registration.syn_iterations == (10, 5) and cfg.registration.syn_metric == "cc"  # the atlas's own
    assert cfg.registration.spacing == 2.0 and cfg.registration.affine_iterations == (200, 100)
    assert sg.AtlasConfig(threads=4).fingerprint() == sg.AtlasConfig().fingerprint()  # runtime option
    mattes = sg.AtlasConfig(registration={"syn_metric": "mattes"})
    assert mattes.fingerprint() != sg.AtlasConfig().fingerprint()
    # an old sidecar's flat settings read back at their place; given as settings they say where they went
    old = sg.AtlasConfig.from_dict({"registration_spacing": 3.0, "metric": "mattes", "random_seed": 5})
    assert (old.registration.spacing, old.registration.syn_metric, old.registration.seed) == (3.0, "mattes", 5)
    assert old.registration.syn_iterations == (40, 20, 5)
    with pytest.raises(ValueError, match="metric is now registration.syn_metric"):
        sg.config_for("atlas", {"metric": "mattes"})
    with pytest.raises(ValueError, match="syn_metric"):
        sg.AtlasConfig(registration={"syn_metric": "mi"})
    with pytest.raises(ValueError, match="one value per level"):
        sg.AtlasConfig(registration={"syn_iterations": (10, 5)})
    with pytest.raises(ValueError, match="spacing"):
        sg.AtlasConfig(registration={"spacing": 0})
    with pytest.raises(ValueError, match="spacing"):
        sg.AtlasConfig(registration={"spacing": None})
    with pytest.raises(ValueError, match="label_interpolation"):
        sg.AtlasConfig(label_interpolation="linear")


# ----------------------------------------------------------------------------------- atlas backend


def test_atlas_backend_matches_the_ground_truth(preprocessed_cohort):
    """One coarse subject (1.6 mm, 96 x 128 grid), registered at 3 mm instead of the default 2 mm to keep the
    test short (6 s instead of 17 s). Measured: mean Dice 0.873 (0.86-0.89 over the four subjects' 7T and 3T;
    0.87-0.89 at 2 mm), hippocampus and amygdala 0.88-0.91 (0.73-0.93 over the subjects)."""
    derivatives, ds, _ = preprocessed_cohort
    rec = _record(derivatives, "sub-001")
    t7 = sio.load_volume(derivatives / rec["files"]["t7"])
    truth = sio.load_volume(derivatives / rec["files"]["labels"], dtype=None).data
    assert set(pd.read_csv(ds.root / "dseg.tsv", sep="\t")["index"]) == set(sg.FREESURFER_LABELS)

    labels, aff = sg.segment(derivatives / rec["files"]["t7"], config=sg.AtlasConfig(registration={"spacing": 3.0}))

    assert labels.dtype == np.int16 and labels.shape == t7.shape and np.allclose(aff, t7.affine)
    assert set(np.unique(labels)) - {0} <= set(sg.FREESURFER_LABELS)
    assert not labels[t7.data == 0].any()  # restricted to the brain
    scores = metrics.dice(truth, labels, list(sg.FREESURFER_LABELS))
    assert metrics.mean_dice(scores) > 0.8, scores
    for lab in (17, 18, 53, 54):  # hippocampus and amygdala: present and in place
        assert (labels == lab).sum() > 20 and scores[lab] > 0.7, (lab, scores[lab])


def test_atlas_parcellation_numbers_cerebra_regions_as_aparc(preprocessed_cohort, tmp_path):
    """``parc`` on the coarse subject, through the batch (quick settings: the registration is not what is tested):
    the cortex becomes the 31 DKT regions per hemisphere with aparc numbers, left ones on the left (by the ground
    truth's hemispheres), the rest of the map unchanged, and the aparc regions become volume columns."""
    derivatives, _, _ = preprocessed_cohort
    rec = _record(derivatives, "sub-001")
    path = derivatives / rec["files"]["t7"]
    truth = sio.load_volume(derivatives / rec["files"]["labels"], dtype=None).data
    cfg = sg.AtlasConfig(**TINY, parc=True)
    out = tmp_path / "seg"
    status = sg.segment_batch([("sub-001", "7T", str(path))], out, config=cfg, progress=False)
    assert status["status"].tolist() == ["done"]
    labels = sio.load_volume(sg.output_path(out, "sub-001", "7T"), dtype=None).data.astype(int)

    parcels = set(np.unique(labels)) - set(sg.FREESURFER_LABELS) - {0}
    assert parcels <= set(sg.APARC_LABELS) and not np.isin(labels, (3, 42)).any()
    absent = {i for i, n in sg.APARC_LABELS.items() if n.split("-")[-1] in ("bankssts", "frontalpole", "temporalpole")}
    assert len(absent) == 6 and not parcels & absent
    assert len({p for p in parcels if p < 2000}) >= 25 and len({p for p in parcels if p > 2000}) >= 25
    left_ids = [i for i, n in sg.FREESURFER_LABELS.items() if n.startswith("Left-")]
    right_ids = [i for i, n in sg.FREESURFER_LABELS.items() if n.startswith("Right-")]
    for lo, same, other in ((1000, left_ids, right_ids), (2000, right_ids, left_ids)):
        t = truth[(labels > lo) & (labels < lo + 1000)]
        n_same, n_other = np.isin(t, same).sum(), np.isin(t, other).sum()
        assert n_same > 1000 and n_other < 0.02 * n_same, (lo, n_same, n_other)
    # merging the parcels gives the plain segmentation (same registration: seeded, one thread, nearest neighbour)
    plain, _ = sg.segment(path, config=sg.AtlasConfig(**TINY))
    np.testing.assert_array_equal(sg.aseg_from_aparc(labels), plain)

    vols = sg.volumes_table(out)
    assert {"ctx-lh-superiortemporal", "ctx-rh-insula", "ctx-lh-bankssts"} <= set(vols.columns)
    row = vols.iloc[0]
    assert row["ctx-lh-bankssts"] == 0 and row["ctx-lh-superiortemporal"] > 0
    lh = sum(row[n] for i, n in sg.APARC_LABELS.items() if i < 2000)
    assert row["Left-Cerebral-Cortex"] == pytest.approx(lh, abs=1e-3)
    assert "CerebrA cortical parcellation" in sg.provenance_note(out)


def test_bad_inputs_raise_clear_errors(tmp_path):
    aff = np.eye(4)
    with pytest.raises(ValueError, match="3D"):
        sg.segment(np.ones((4, 4)), aff)
    with pytest.raises(ValueError, match="all zero"):
        sg.segment(np.zeros((8, 8, 8)), aff)
    with pytest.raises(ValueError, match="affine"):
        sg.segment(np.ones((8, 8, 8)))
    with pytest.raises(ValueError, match="backend must be one of atlas, synthseg"):
        sg.segment(_blob(), aff, backend="freesurfer")
    with pytest.raises(ValueError, match="SynthSegConfig"):
        sg.segment(_blob(), aff, backend="synthseg", config=sg.AtlasConfig())
    with pytest.raises(ValueError, match="mask shape"):
        sg.segment(_blob(), aff, mask=np.ones((3, 3, 3), bool))
    with pytest.raises(ValueError, match="mask is empty"):
        sg.segment(_blob(), aff, mask=np.zeros(_blob().shape, bool))
    txt = tmp_path / "scan.txt"
    txt.write_text("not an image")
    with pytest.raises(sio.NiftiError, match="not a NIfTI"):
        sg.segment(txt)
    with pytest.raises(sio.NiftiError, match="does not exist"):
        sg.segment(tmp_path / "missing.nii.gz")
    with pytest.raises(ValueError, match=r"\.nii"):
        sg.segment_file(write_nifti(tmp_path / "a.nii.gz", _blob()), tmp_path / "out.png")


# ---------------------------------------------------------------------------------- regional volumes


def test_regional_volumes_from_known_voxel_counts():
    labels = np.zeros((10, 10, 10), np.int16)
    labels[:2] = 17        # 200 voxels
    labels[2:5, :5] = 53   # 150 voxels
    labels[9, 9, 9] = 99   # a number outside the table
    aff = np.diag([0.5, 1.0, 2.0, 1.0])  # 1 mm^3 voxels = 0.001 mL
    vols = sg.regional_volumes(labels, aff, [17, 53, 18, 99])
    assert vols == pytest.approx({"Left-Hippocampus": 0.2, "Right-Hippocampus": 0.15, "Left-Amygdala": 0.0,
                                  "label-99": 0.001})
    every = sg.regional_volumes(labels, np.diag([2.0, 2.0, 2.0, 1.0]))  # 8 mm^3 voxels
    assert list(every) == list(sg.FREESURFER_LABELS.values())
    assert every["Left-Hippocampus"] == pytest.approx(1.6) and every["Left-Cerebral-Cortex"] == 0.0
    with pytest.raises(ValueError, match="integers"):
        sg.regional_volumes(labels + 0.5, aff)
    with pytest.raises(ValueError, match="3D"):
        sg.regional_volumes(labels[0], aff)


# -------------------------------------------------------------------------------- synthseg backend

_FAKE_SYNTHSEG = """\
#!{python}
# Stand-in for FreeSurfer's mri_synthseg in tests: same arguments, a --help that lists its flags (--v1 only when
# OFFERS_V1), and a label map derived from the input, written in another voxel order (LIA) so that the caller
# must resample it through the affines; with --parc the cortex-like label is split into two aparc regions.
import json, os, sys

OFFERS_V1 = {offers_v1}
args = sys.argv[1:]
calls = os.environ.get("FAKE_SYNTHSEG_CALLS")
if calls:
    with open(calls, "a") as f:
        f.write(" ".join(args[:1]) + "\\n")
if args == ["--help"]:
    flags = "--i I --o O --parc --robust --fast --threads THREADS --cpu" + (" --v1" if OFFERS_V1 else "")
    print("usage: mri_synthseg [-h] " + flags)
    sys.exit(0)
if args == ["--version"]:
    version = os.environ.get("FAKE_SYNTHSEG_VERSION")
    if not version:
        sys.exit("mri_synthseg: error: unrecognized arguments: --version")
    print(version)
    sys.exit(0)
import nibabel as nib
import numpy as np

log = os.environ.get("FAKE_SYNTHSEG_LOG")
if log:
    with open(log, "w") as f:
        json.dump(args, f)
if os.environ.get("FAKE_SYNTHSEG_FAIL"):
    sys.exit("mri_synthseg: could not read the model file")
src, dst = args[args.index("--i") + 1], args[args.index("--o") + 1]
img = nib.as_closest_canonical(nib.load(src))
x = np.asarray(img.dataobj, dtype=np.float32)
lab = np.where(x > 0.5, 17, np.where(x > 0, 2, 0)).astype(np.int32)
if "--parc" in args:  # RAS after as_closest_canonical: low first index = left
    half = np.arange(x.shape[0])[:, None, None] < x.shape[0] // 2
    lab = np.where(lab == 2, np.where(half, 1030, 2030), lab).astype(np.int32)
lab[: x.shape[0] // 4] = np.where(lab[: x.shape[0] // 4] > 0, 24, 0)  # CSF: not in the label table
out = nib.Nifti1Image(lab, img.affine).as_reoriented(nib.orientations.axcodes2ornt("LIA"))
nib.save(out, dst)
"""


def _install_fake_synthseg(root: Path, monkeypatch, offers_v1: bool = True) -> Path:
    """A test-only executable named ``mri_synthseg`` first on PATH (in ``root/bin``); returns the file its
    segmentation arguments are logged to. Its invocations (first argument) are appended to ``root/calls.txt``."""
    bin_dir = root / "bin"
    bin_dir.mkdir(parents=True)
    exe = bin_dir / "mri_synthseg"
    exe.write_text(_FAKE_SYNTHSEG.format(python=sys.executable, offers_v1=offers_v1))
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.delenv("FREESURFER_HOME", raising=False)
    monkeypatch.delenv("FAKE_SYNTHSEG_VERSION", raising=False)
    monkeypatch.setenv("FAKE_SYNTHSEG_CALLS", str(root / "calls.txt"))
    log = root / "synthseg-args.json"
    monkeypatch.setenv("FAKE_SYNTHSEG_LOG", str(log))
    return log


@pytest.fixture
def fake_synthseg(tmp_path, monkeypatch):
    """The stand-in ``mri_synthseg`` (offering ``--v1``) first on PATH; returns the file its arguments go to."""
    return _install_fake_synthseg(tmp_path / "freesurfer", monkeypatch)


def test_synthseg_missing_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # a folder without mri_synthseg
    assert not sg.synthseg_available()
    with pytest.raises(sg.SegmentationBackendError) as err:
        sg.segment(_blob(), np.eye(4), backend="synthseg")
    msg = str(err.value)
    assert "FreeSurfer >= 7.3" in msg and "PATH" in msg and "backend='atlas'" in msg
    assert isinstance(err.value, RuntimeError)


def test_synthseg_plumbing_with_a_fake_executable(fake_synthseg, tmp_path, monkeypatch):
    """The success path through a real subprocess: a stand-in ``mri_synthseg`` on PATH (FreeSurfer is not
    installed here) receives the documented arguments and returns labels derived from the input, in another
    voxel order; what is tested is the plumbing (arguments, temporary files, resampling onto the input grid,
    unknown labels dropped), not SynthSeg's accuracy."""
    assert sg.synthseg_available()
    x = _blob()
    aff = np.diag([2.0, 2.0, 2.0, 1.0])
    aff[:3, 3] = (-20, -24, -22)
    labels, out_aff = sg.segment(x, aff, backend="synthseg",
                                 config=sg.SynthSegConfig(v1=False, robust=True, threads=3))

    args = json.loads(fake_synthseg.read_text())
    assert args[args.index("--threads") + 1] == "3" and "--robust" in args and "--v1" not in args
    assert args[args.index("--i") + 1].endswith(".nii.gz") and args[args.index("--o") + 1].endswith(".nii.gz")
    expected = np.where(x > 0.5, 17, np.where(x > 0, 2, 0))
    expected[: x.shape[0] // 4] = 0  # SynthSeg's CSF label is not in the table
    assert labels.dtype == np.int16 and np.array_equal(out_aff, aff)
    np.testing.assert_array_equal(labels, expected)

    # a failing executable: its message comes back
    monkeypatch.setenv("FAKE_SYNTHSEG_FAIL", "1")
    with pytest.raises(sg.SegmentationBackendError, match="exit 1.*could not read the model"):
        sg.segment(x, aff, backend="synthseg")


def test_synthseg_v1_and_parc_on_the_command_line(fake_synthseg, tmp_path):
    """The paper's SynthSeg 1.0 by default (``--v1``, offered by this install's --help, read once per process);
    ``--parc`` keeps the cortical parcels (1000s left, 2000s right), which the volumes report by name."""
    x = _blob()
    aff = np.diag([2.0, 2.0, 2.0, 1.0])
    aff[:3, 3] = (-20, -24, -22)
    sg.segment(x, aff, backend="synthseg")
    args = json.loads(fake_synthseg.read_text())
    assert "--v1" in args and "--parc" not in args and "--robust" not in args

    labels, _ = sg.segment(x, aff, backend="synthseg", config={"parc": True})
    args = json.loads(fake_synthseg.read_text())
    assert "--v1" in args and "--parc" in args
    calls = (fake_synthseg.parent / "calls.txt").read_text().split()
    assert calls.count("--help") == 1  # cached per process and executable
    expected = np.where(x > 0.5, 17, np.where(x > 0, 2, 0))
    half = np.arange(x.shape[0])[:, None, None] < x.shape[0] // 2
    expected = np.where(expected == 2, np.where(half, 1030, 2030), expected)
    expected[: x.shape[0] // 4] = 0
    np.testing.assert_array_equal(labels, expected)
    assert not np.isin(labels, (3, 42)).any()
    np.testing.assert_array_equal(sg.aseg_from_aparc(labels), np.where(expected == 1030, 3,
                                                                       np.where(expected == 2030, 42, expected)))

    assert sg.APARC_LABELS[1030] == "ctx-lh-superiortemporal" and sg.APARC_LABELS[2035] == "ctx-rh-insula"
    assert len(sg.APARC_LABELS) == 68 and not set(sg.APARC_LABELS) & set(sg.FREESURFER_LABELS)
    vols = sg.regional_volumes(labels, aff)  # a parcellated map: the aparc regions join the table
    assert list(vols) == list(sg.label_table(parc=True).values())
    assert vols["ctx-lh-superiortemporal"] == pytest.approx((labels == 1030).sum() * 8 / 1000)
    # the cortex volume sums its hemisphere's parcels, as with SynthSeg's own volumes
    assert vols["Left-Cerebral-Cortex"] == vols["ctx-lh-superiortemporal"] > 0
    assert vols["Right-Cerebral-Cortex"] == vols["ctx-rh-superiortemporal"] > 0


def test_synthseg_without_v1_is_an_error_not_another_model(tmp_path, monkeypatch):
    log = _install_fake_synthseg(tmp_path / "fs-old", monkeypatch, offers_v1=False)
    (tmp_path / "fs-old" / "build-stamp.txt").write_text("freesurfer-linux-test-7.2.0\n")
    x, aff = _blob(), np.diag([2.0, 2.0, 2.0, 1.0])
    with pytest.raises(sg.SegmentationBackendError) as err:
        sg.segment(x, aff, backend="synthseg")
    msg = str(err.value)
    assert "does not list --v1" in msg and "v1=False" in msg and "--no-v1" in msg and "7.2.0" in msg
    assert not log.exists()  # nothing was segmented with another model
    with pytest.raises(sg.SegmentationBackendError, match="--v1"):
        sg.provenance("synthseg")
    labels, _ = sg.segment(x, aff, backend="synthseg", config=sg.SynthSegConfig(v1=False, parc=True))
    assert "--v1" not in json.loads(log.read_text()) and (labels > 1000).any()
    with pytest.raises(ValueError, match="needs v1=False"):
        sg.SynthSegConfig(robust=True)


def test_synthseg_unreadable_help_says_to_set_up_freesurfer(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    exe = bin_dir / "mri_synthseg"
    exe.write_text("#!/bin/sh\necho 'ERROR: FREESURFER_HOME is not set. Please source freesurfer.' >&2\nexit 1\n")
    exe.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    with pytest.raises(sg.SegmentationBackendError, match="could not read the options.*FREESURFER_HOME is not set"):
        sg.segment(_blob(), np.eye(4), backend="synthseg")


def test_synthseg_provenance_reads_the_installed_version(fake_synthseg, tmp_path, monkeypatch):
    root = fake_synthseg.parent
    # neither a build stamp nor a --version: said plainly
    version, source = sg.synthseg_version(with_source=True)
    assert version == "unknown" and "build-stamp.txt" in source
    monkeypatch.setenv("FAKE_SYNTHSEG_VERSION", "SynthSeg 9.9 (test)")
    monkeypatch.setenv("FREESURFER_HOME", str(tmp_path / "elsewhere"))  # another cache key: read again
    assert sg.synthseg_version(with_source=True) == ("SynthSeg 9.9 (test)", "mri_synthseg --version")
    # FreeSurfer's build stamp, found beside bin/ even without FREESURFER_HOME
    monkeypatch.delenv("FREESURFER_HOME")
    (root / "build-stamp.txt").write_text("freesurfer-linux-ubuntu22_x86_64-7.4.1-20230613-7eb8460\n")
    monkeypatch.setenv("FREESURFER_HOME", str(root))
    prov = sg.provenance("synthseg", {"parc": True})
    assert prov["version"] == "freesurfer-linux-ubuntu22_x86_64-7.4.1-20230613-7eb8460"
    assert prov["version_source"] == str(root / "build-stamp.txt")
    assert prov["flags"] == ["--v1", "--parc"] and prov["model"] == "SynthSeg 1.0" and prov["tool"] == "FreeSurfer mri_synthseg"
    assert sg.provenance_line("synthseg", {"parc": True}) == (
        "SynthSeg 1.0 with cortical parcellation (mri_synthseg --v1 --parc; FreeSurfer "
        f"freesurfer-linux-ubuntu22_x86_64-7.4.1-20230613-7eb8460); synth7t {synth7t.__version__}")
    assert sg.provenance("synthseg", {"v1": False, "robust": True})["model"] == "SynthSeg-robust 2.0"


def test_atlas_provenance_names_the_template_and_ants():
    import importlib.metadata

    prov = sg.provenance("atlas", {"registration": {"spacing": 1.5}, "parc": True})
    ants = importlib.metadata.version("antspyx")
    assert prov["version"] == f"antspyx {ants}" and prov["registration_spacing_mm"] == 1.5
    assert prov["metric"] == "cc (radius 1)" and prov["synth7t"] == synth7t.__version__
    assert "bankssts" in prov["parcellation"]
    assert sg.provenance_line("atlas") == (f"atlas: ICBM 2009c + CerebrA label propagation (antspyx {ants}), SyN cc at "
                                           f"2 mm, genericLabel labels; synth7t {synth7t.__version__}")


# --------------------------------------------------------------------------------------------- batch


def test_batch_skips_finished_items_and_records_failures(preprocessed_cohort, tmp_path):
    derivatives, _, _ = preprocessed_cohort
    rec = _record(derivatives, "sub-002")
    inputs = tmp_path / "inputs"  # copies: this test changes a modification time
    inputs.mkdir()
    for kind in ("t7", "t3"):
        shutil.copy2(derivatives / rec["files"][kind], inputs / f"{kind}.nii.gz")
    items = pd.DataFrame([
        {"key": "sub-002", "image_type": "7T", "path": str(inputs / "t7.nii.gz")},
        {"key": "sub-002", "image_type": "3T", "path": str(inputs / "t3.nii.gz")},
        {"key": "sub-404", "image_type": "7T", "path": str(tmp_path / "missing_T1w.nii.gz")},
    ])
    out = tmp_path / "seg"
    cfg = sg.AtlasConfig(**TINY)
    status = sg.segment_batch(items, out, config=cfg, n_jobs=2, progress=False)

    by = status.set_index(["key", "image_type"])
    assert list(status.columns) == ["key", "image_type", "status", "seconds", "path", "reason"]
    assert by.loc[("sub-002", "7T"), "status"] == "done" and by.loc[("sub-002", "3T"), "status"] == "done"
    assert by.loc[("sub-404", "7T"), "status"] == "failed"
    assert "does not exist" in by.loc[("sub-404", "7T"), "reason"]
    written = sg.output_path(out, "sub-002", "7T")
    assert written == out / "7T" / "sub-002_dseg.nii.gz" and written.is_file()
    assert (out / "3T" / "sub-002_dseg.json").is_file()
    assert pd.read_csv(out / "segmentations.tsv", sep="\t").shape == (3, 6)

    vols = sg.volumes_table(out)
    assert len(vols) == 2 and set(vols["image_type"]) == {"3T", "7T"}
    assert {"Left-Hippocampus", "Right-Amygdala", sg.TOTAL_BRAIN} <= set(vols.columns)
    lab = sio.load_volume(written, dtype=None)
    row = vols[vols["image_type"] == "7T"].iloc[0]
    assert row["Left-Hippocampus"] == pytest.approx(sg.regional_volumes(lab.data, lab.affine, [17])
                                                    ["Left-Hippocampus"], abs=1e-4)
    assert row[sg.TOTAL_BRAIN] > sum(row[n] for n in ("Left-Hippocampus", "Right-Hippocampus")) > 0
    assert not any(c.startswith("ctx-") for c in vols.columns)  # no parcellation: no aparc columns
    # provenance: in every sidecar, and beside the tables (volumes.tsv stays all numbers for the diagnosis)
    line = sg.provenance_line("atlas", cfg)
    side = json.loads((out / "7T" / "sub-002_dseg.json").read_text())
    assert side["provenance"]["summary"] == line and side["provenance"]["tool"].startswith("ICBM 2009c + CerebrA")
    prov = json.loads((out / sg.PROVENANCE_FILE).read_text())
    assert [g["n_images"] for g in prov["segmentations"]] == [2]
    assert sg.provenance_note(out) == sg.provenance_note(out / sg.VOLUMES_FILE) == f"Segmentation: {line}"
    assert "not recorded" in sg.provenance_note(tmp_path)

    # a rerun skips the finished items (their files untouched) and retries the failure
    mtime = written.stat().st_mtime_ns
    again = sg.segment_batch(items, out, config=cfg, n_jobs=1, progress=False).set_index(["key", "image_type"])
    assert again.loc[("sub-002", "7T"), "status"] == "skipped" and written.stat().st_mtime_ns == mtime
    assert again.loc[("sub-404", "7T"), "status"] == "failed"
    # a batch of other items in the same folder keeps the earlier volumes in volumes.tsv
    sg.segment_batch(items[2:], out, config=cfg, progress=False)
    assert len(pd.read_csv(out / "segmentations.tsv", sep="\t")) == 1 and len(sg.volumes_table(out)) == 2
    # other settings or another backend make other labels: such an output does not count as finished
    assert sg.is_finished(written, "atlas", cfg.fingerprint())
    assert not sg.is_finished(written, "atlas", sg.AtlasConfig(**TINY).replace(registration={"syn_metric": "mattes"}).fingerprint())
    assert not sg.is_finished(written, "synthseg", cfg.fingerprint())
    # so does a changed input (e.g. a prediction made again by a retrained model)
    src = Path(items.loc[0, "path"])
    assert sg.is_finished(written, "atlas", cfg.fingerprint(), src)
    os.utime(src, ns=(src.stat().st_atime_ns, src.stat().st_mtime_ns + 10**9))
    assert not sg.is_finished(written, "atlas", cfg.fingerprint(), src)
    # and so does a sidecar from before provenance was recorded (made again once, to record it)
    side_path = out / "7T" / "sub-002_dseg.json"
    old = {k: v for k, v in json.loads(side_path.read_text()).items() if k != "provenance"}
    side_path.write_text(json.dumps({**old, "sidecar_version": "1"}))
    assert not sg.is_finished(written, "atlas", cfg.fingerprint())


def test_batch_items_are_checked(tmp_path):
    with pytest.raises(ValueError, match="duplicate item"):
        sg.segment_batch([("a", "7T", "x.nii.gz"), ("a", "7T", "y.nii.gz")], tmp_path, progress=False)
    with pytest.raises(ValueError, match="columns key, image_type, path"):
        sg.segment_batch(pd.DataFrame({"key": ["a"]}), tmp_path, progress=False)
    with pytest.raises(ValueError, match="without slashes"):
        sg.segment_batch([("../a", "7T", "x.nii.gz")], tmp_path, progress=False)
    with pytest.raises(FileNotFoundError, match="segment_batch"):
        sg.volumes_table(tmp_path / "nothing-here")


@pytest.fixture(scope="module")
def full_size_subject(full_size_cohort, tmp_path_factory):
    """The full-size demo subject (conftest) preprocessed with the quick preset onto the paper's 0.7 mm grid of
    288 x 224 (ground-truth masks); returns ``(derivatives, record)``."""
    from synth7t import preprocess

    cfg = preprocess.PreprocessConfig.from_preset("quick", mask_backend="given", qc_figure=False)
    der = tmp_path_factory.mktemp("full_size_preproc") / "derivatives"
    table = preprocess.preprocess_dataset(full_size_cohort.root, cfg, n_jobs=1, progress=False, out_root=der)
    assert (table["status"] == "done").all(), table
    return der, _record(der, "sub-001")


@pytest.mark.slow
def test_atlas_defaults_on_a_full_size_subject(full_size_subject):
    """Default settings on a real-size demo subject (0.7 mm grid, 224 x 288 x ~250), made and preprocessed here so
    that CI runs it. Measured on 2 shared cores: 20-27 s per volume; on the book's demo cohort mean Dice 0.883 (7T)
    and 0.895 (3T), hippocampus and amygdala 0.82-0.91."""
    der, rec = full_size_subject
    truth = sio.load_volume(der / rec["files"]["labels"], dtype=None).data
    for kind in ("t7", "t3"):
        labels, _ = sg.segment(der / rec["files"][kind])
        scores = metrics.dice(truth, labels, list(sg.FREESURFER_LABELS))
        print(kind, f"mean Dice {metrics.mean_dice(scores):.3f}",
              {k: round(scores[k], 3) for k in (17, 18, 53, 54)})
        assert metrics.mean_dice(scores) > 0.85, (kind, scores)
        assert min(scores[k] for k in (17, 18, 53, 54)) > 0.75, (kind, scores)


# ----------------------------------------------------------------------------------------------- CLI


def test_cli_rejects_a_non_nifti_input_in_one_line(tmp_path, capsys):
    bad = tmp_path / "scan.txt"
    bad.write_text("not an image")
    rc = cli.main(["segment", str(bad), "--output-dir", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert rc != 0 and len(err.splitlines()) == 1
    assert err.startswith("synth7t segment: error:") and "not a NIfTI" in err


def test_cli_segments_a_folder_with_synthseg(fake_synthseg, tmp_path, capsys):
    folder = tmp_path / "in"
    aff = np.diag([2.0, 2.0, 2.0, 1.0])
    write_nifti(folder / "sub-01_acq-7T_T1w.nii.gz", _blob(), aff)
    write_nifti(folder / "sub-01_acq-3T_T1w.nii.gz", _blob(), aff)
    write_nifti(folder / "sub-01_acq-7T_dseg.nii.gz", np.ones((4, 4, 4), np.uint8), aff)  # not an input
    out = tmp_path / "out"
    (fake_synthseg.parent / "build-stamp.txt").write_text("freesurfer-test-7.4.1\n")
    rc = cli.main(["segment", str(folder), "--output-dir", str(out), "--backend", "synthseg", "--quiet"])
    printed = capsys.readouterr().out
    assert rc == 0, printed
    assert (out / "7T" / "sub-01_acq-7T_dseg.nii.gz").is_file() and (out / "3T" / "sub-01_acq-3T_dseg.nii.gz").is_file()
    status = pd.read_csv(out / "segmentations.tsv", sep="\t")
    assert sorted(status["status"]) == ["done", "done"]
    assert sg.volumes_table(out)["Left-Hippocampus"].gt(0).all()
    assert "--v1" in json.loads(fake_synthseg.read_text())  # the paper's SynthSeg 1.0 by default
    note = f"Segmentation: SynthSeg 1.0 (mri_synthseg --v1; FreeSurfer freesurfer-test-7.4.1); synth7t {synth7t.__version__}"
    assert sg.provenance_note(out) == note and note in printed

    # --no-v1 --parc: other settings, so made again, with the aparc columns
    rc = cli.main(["segment", str(folder), "--output-dir", str(out), "--backend", "synthseg", "--no-v1", "--parc",
                   "--quiet"])
    assert rc == 0
    args = json.loads(fake_synthseg.read_text())
    assert "--parc" in args and "--v1" not in args
    assert sg.volumes_table(out)["ctx-lh-superiortemporal"].gt(0).all()
    assert "SynthSeg 2.0 with cortical parcellation (mri_synthseg --parc;" in sg.provenance_note(out)
    # the SynthSeg-only flags are not taken silently by the atlas backend
    rc = cli.main(["segment", str(folder), "--output-dir", str(out), "--no-v1"])
    err = capsys.readouterr().err
    assert rc == 1 and "--v1/--no-v1 applies to --backend synthseg" in err
