import json

import numpy as np
import pandas as pd
import pytest

from synth7t.data import layout
from synth7t.data.layout import LayoutError
from conftest import make_layout, write_nifti


def test_discovery_finds_pairs_demographics_and_artefacts(tiny_layout):
    ds = layout.discover(tiny_layout)
    assert [s.key for s in ds] == ["sub-01", "sub-02", "sub-03"]
    s2 = ds["sub-02"]
    assert s2.t3.name == "sub-02_acq-3T_T1w.nii.gz" and s2.t7.name == "sub-02_acq-7T_T1w.nii.gz"
    assert (s2.age, s2.sex, s2.diagnosis, s2.impaired) == (72.0, "M", "MCI", True)
    assert s2.artefact_slices == [(0, 2)] and list(s2.excluded_slices()) == [0, 1, 2]
    assert ds["sub-01"].impaired is False and ds["sub-03"].impaired is True
    summary = ds.summary()
    assert list(summary["n_artefact_slices"]) == [0, 3, 0]
    text = ds.describe()
    assert "3 paired acquisitions" in text and "2 impaired" in text and "1 with 7T artefact" in text


def test_sessions_masks_and_labels(tmp_path):
    root = make_layout(tmp_path / "ds", {"sub-01_ses-1": dict(age=60, sex="female", diagnosis="scd"),
                                         "sub-01_ses-2": dict(age=60, sex="female", diagnosis="scd")})
    anat = root / "sub-01" / "ses-2" / "anat"
    write_nifti(anat / "sub-01_ses-2_acq-7T_desc-brain_mask.nii.gz")
    write_nifti(anat / "sub-01_ses-2_acq-7T_dseg.nii.gz")
    ds = layout.discover(root)
    assert [s.key for s in ds] == ["sub-01_ses-1", "sub-01_ses-2"]
    assert ds["sub-01_ses-2"].t7_mask is not None and ds["sub-01_ses-2"].t7_labels is not None
    assert ds["sub-01_ses-1"].t7_mask is None
    assert ds["sub-01_ses-1"].sex == "F" and ds["sub-01_ses-1"].diagnosis == "SCD"


def _edit_participants(root, changes):
    df = pd.read_csv(root / "participants.tsv", sep="\t", dtype=str)
    for (pid, col), value in changes.items():
        df.loc[df.participant_id == pid, col] = value
    df.to_csv(root / "participants.tsv", sep="\t", index=False)


@pytest.mark.parametrize(
    "breaker, message",
    [
        (lambda r: (r / "sub-02/anat/sub-02_acq-7T_T1w.nii.gz").unlink(), "sub-02: 3T image without its 7T partner"),
        (lambda r: (r / "sub-03/anat/sub-03_acq-3T_T1w.nii.gz").unlink(), "sub-03: 7T image without its 3T partner"),
        (lambda r: make_layout(r, {"sub-09": {}}, participants=[]) and None, "no row for sub-09"),
        (lambda r: _edit_participants(r, {("sub-01", "age"): "sixty"}), "age must be a number"),
        (lambda r: _edit_participants(r, {("sub-01", "diagnosis"): "FTD"}), "diagnosis must be one of"),
        (lambda r: _edit_participants(r, {("sub-01", "sex"): "X"}), "sex must be one of"),
        (lambda r: (r / "participants.tsv").unlink(), "participants table not found"),
        (lambda r: pd.DataFrame([{"participant_id": "sub-07", "first_slice": 1, "last_slice": 2}])
         .to_csv(r / "artefacts.tsv", sep="\t", index=False), "row for sub-07, which has no paired images"),
        (lambda r: pd.DataFrame([{"participant_id": "sub-01", "first_slice": 5, "last_slice": 2}])
         .to_csv(r / "artefacts.tsv", sep="\t", index=False), "first_slice and last_slice must be integers"),
    ],
)
def test_discovery_errors_are_clear(tiny_layout, breaker, message):
    if "no row for sub-09" in message:
        # a subject folder whose participant is missing from participants.tsv
        write_nifti(tiny_layout / "sub-09/anat/sub-09_acq-3T_T1w.nii.gz")
        write_nifti(tiny_layout / "sub-09/anat/sub-09_acq-7T_T1w.nii.gz")
    else:
        breaker(tiny_layout)
    with pytest.raises(LayoutError) as err:
        layout.discover(tiny_layout)
    assert message in str(err.value)


def test_skip_mode_keeps_the_good_subjects(tiny_layout):
    (tiny_layout / "sub-02/anat/sub-02_acq-7T_T1w.nii.gz").unlink()
    with pytest.warns(UserWarning, match="3T image without its 7T partner"):
        ds = layout.discover(tiny_layout, on_error="skip")
    assert [s.key for s in ds] == ["sub-01", "sub-03"]


def test_lone_3t_allowed_for_inference(tiny_layout):
    (tiny_layout / "sub-02/anat/sub-02_acq-7T_T1w.nii.gz").unlink()
    ds = layout.discover(tiny_layout, require_7t=False)
    assert ds["sub-02"].t7 is None


def test_empty_dataset_is_an_error(tmp_path):
    (tmp_path / "participants.tsv").write_text("participant_id\tage\tsex\tdiagnosis\n")
    with pytest.raises(LayoutError, match="no paired acquisitions"):
        layout.discover(tmp_path)


def _population(n=164, seed=0):
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "participant_id": [f"sub-{i:03d}" for i in range(n)],
        "age": rng.normal(65, 10, n).round(1),
        "sex": rng.choice(["F", "M"], n),
        "diagnosis": rng.choice(["CN", "SCD", "MCI", "AD"], n, p=[0.5, 0.2, 0.2, 0.1]),
    })


def test_split_is_stratified_and_deterministic():
    pop = _population()
    a = layout.make_split(pop, n_test=28, seed=1)
    b = layout.make_split(pop, n_test=28, seed=1)
    c = layout.make_split(pop, n_test=28, seed=2)
    pd.testing.assert_frame_equal(a, b)
    assert not a["split"].equals(c["split"])
    assert (a["split"] == "test").sum() == 28
    # every stratum contributes in proportion to its size (within one participant)
    frac = 28 / len(pop)
    for _, g in a.groupby("stratum"):
        assert abs((g["split"] == "test").sum() - frac * len(g)) <= 1.0
    # the default fraction is the paper's 28 of 164
    assert (layout.make_split(pop, seed=0)["split"] == "test").sum() == 28


def test_split_round_trip_and_errors(tmp_path):
    pop = _population(40)
    split = layout.make_split(pop, n_test=8, seed=0)
    p = layout.write_split(split, tmp_path / "split.tsv")
    back = layout.read_split(p)
    assert list(back["split"]) == list(split["split"])
    with pytest.raises(ValueError, match="n_test must be between"):
        layout.make_split(pop, n_test=40)
    with pytest.raises(ValueError, match="at least 2"):
        layout.make_split(pop.iloc[:1], n_test=1)
    (tmp_path / "bad.tsv").write_text("participant_id\tsplit\nsub-1\tvalidation\n")
    with pytest.raises(LayoutError, match="train or test"):
        layout.read_split(tmp_path / "bad.tsv")


def test_split_from_dataset_and_cli(tiny_layout, capsys):
    from synth7t.cli import main

    assert main(["discover", str(tiny_layout)]) == 0
    assert "3 paired acquisitions" in capsys.readouterr().out
    assert main(["split", str(tiny_layout), "--n-test", "1", "--seed", "4"]) == 0
    split = layout.read_split(tiny_layout / "split.tsv")
    assert sorted(split["participant_id"]) == ["sub-01", "sub-02", "sub-03"]
    assert (split["split"] == "test").sum() == 1
    assert main(["discover", str(tiny_layout / "nope")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "dataset folder not found" in err


def test_is_simulated_reads_the_demo_marker(tmp_path, coarse_cohort):
    assert layout.is_simulated(coarse_cohort.root)  # what synth7t.simulate.demo writes
    assert not layout.is_simulated(tmp_path)  # no description
    real = {"Name": "BioFINDER-2 3T/7T", "BIDSVersion": "1.9"}
    (tmp_path / "dataset_description.json").write_text(json.dumps(real))
    assert not layout.is_simulated(tmp_path)
    (tmp_path / "dataset_description.json").write_text("{not json")
    assert not layout.is_simulated(tmp_path)
    marker = {"Name": "x", "GeneratedBy": [{"Name": layout.DEMO_GENERATOR}]}
    (tmp_path / "dataset_description.json").write_text(json.dumps(marker))
    assert layout.is_simulated(tmp_path)


def test_select_keys_follows_the_split(tmp_path):
    keys = ["sub-03", "sub-01", "sub-02_ses-2", "sub-02_ses-1"]
    # no split: no held-out subjects to score, and no silent fall-back to every subject
    with pytest.raises(ValueError, match="no held-out subjects.*synth7t split"):
        layout.select_keys(keys, tmp_path, "test")
    assert layout.select_keys(keys, tmp_path, "all") == sorted(keys)
    pd.DataFrame({"participant_id": ["sub-01", "sub-02", "sub-03"], "split": ["train", "test", "train"]}).to_csv(
        tmp_path / "split.tsv", sep="\t", index=False)
    assert layout.select_keys(keys, tmp_path, "test") == ["sub-02_ses-1", "sub-02_ses-2"]
    assert layout.select_keys(keys, tmp_path, "all") == ["sub-01", "sub-02_ses-1", "sub-02_ses-2", "sub-03"]
    with pytest.raises(ValueError, match="'test' or 'all'"):
        layout.select_keys(keys, tmp_path, "held-out")


def test_describe_subjects_says_which_split_a_table_scores(tmp_path):
    pd.DataFrame({"participant_id": ["sub-01", "sub-02", "sub-03"], "split": ["train", "test", "test"]}).to_csv(
        tmp_path / "split.tsv", sep="\t", index=False)
    assert layout.describe_subjects(["sub-03", "sub-02"], tmp_path) == "2 held-out (test): sub-02, sub-03"
    assert layout.describe_subjects(["sub-01", "sub-02"], tmp_path) == "2 (1 test, 1 train): sub-01, sub-02"
    assert layout.describe_subjects(["sub-01"], tmp_path / "nosplit") == "1 (1 unsplit): sub-01"
