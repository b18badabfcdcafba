"""Held-out subjects that training never sees: a split is required, validation comes from the training side."""

import json

import pandas as pd
import pytest

from synth7t.data import layout
from synth7t.training import slices


def test_cache_refuses_a_dataset_without_split(preprocessed_cohort, tmp_path):
    derivatives, ds, _ = preprocessed_cohort
    with pytest.raises(ValueError, match=r"no train/test split.*synth7t split"):
        slices.build_cache(derivatives, tmp_path / "cache", ds, progress=False)
    cache = slices.build_cache(derivatives, tmp_path / "cache", ds, allow_unsplit=True, progress=False)
    assert set(slices.SliceCache.open(cache).volumes["split"]) == {"unsplit"}


def test_cache_records_the_dataset_and_its_split(preprocessed_cohort, tmp_path):
    derivatives, ds, split_file = preprocessed_cohort
    cache = slices.SliceCache.open(slices.build_cache(derivatives, tmp_path / "c", ds, split_file=split_file,
                                                      progress=False))
    assert cache.meta["dataset"]["simulated"] is True  # the demo cohort says so in dataset_description.json
    assert cache.meta["split_file"] == str(split_file)
    split = layout.read_split(split_file).set_index("participant_id")["split"]
    vols = cache.volumes
    assert (vols["split"] == vols["key"].str.split("_").str[0].map(split)).all()


def test_validation_is_carved_from_the_training_side():
    vols = pd.DataFrame({"key": [f"sub-{i:02d}" for i in range(1, 13)],
                         "split": ["test"] * 3 + ["train"] * 9,
                         "age": [60 + i for i in range(12)], "sex": ["F", "M"] * 6, "impaired": [0, 1, 0] * 4})
    val = slices.validation_keys(vols, fraction=0.2, seed=0)
    assert len(val) == 2 and not set(val) & {"sub-01", "sub-02", "sub-03"}
    assert val == slices.validation_keys(vols, fraction=0.2, seed=0)  # deterministic
    assert len(slices.validation_keys(vols, fraction=0.01, seed=0)) == 1  # at least one
    with pytest.raises(ValueError, match="at least 2 training participants"):
        slices.validation_keys(vols.iloc[:4], fraction=0.5)


def test_ensure_split_makes_one_once(coarse_cohort, tmp_path):
    ds = layout.discover(coarse_cohort.root)
    target = ds.root / layout.SPLIT_FILE
    before = target.read_bytes() if target.exists() else None
    path, created = layout.ensure_split(ds, n_test=1, seed=0)
    assert path == target and created is (before is None)
    again, created_again = layout.ensure_split(ds, n_test=2, seed=5)
    assert again == path and not created_again  # a split is decided once
    assert json.dumps(layout.read_split(path).to_dict()) == json.dumps(layout.read_split(again).to_dict())


def test_dataset_facts(tmp_path, coarse_cohort):
    assert layout.dataset_facts(coarse_cohort.root)["simulated"] is True
    from synth7t.simulate.demo import GENERATOR_VERSION

    assert layout.dataset_facts(coarse_cohort.root)["generator_version"] == GENERATOR_VERSION
    (tmp_path / "dataset_description.json").write_text(json.dumps({"Name": "BioFINDER-2 7T"}))
    assert layout.dataset_facts(tmp_path) == {"name": "BioFINDER-2 7T", "simulated": False, "generator_version": None}
    assert layout.dataset_facts(tmp_path / "nothing")["simulated"] is False


def test_the_paper_profile_runs_the_split_stage_before_training():
    from pathlib import Path

    from synth7t.workflow import profiles

    root = Path(__file__).resolve().parents[1]
    prof = profiles.load_profile("paper", root=root)
    names = [Path(e["notebook"]).stem for e in prof["notebooks"]]
    first = prof["notebooks"][names.index("01_preprocess")]
    assert names.index("01_preprocess") < names.index("02_train")
    assert first["parameters"]["n_test"] == 28
    assert "n_test" in profiles.declared_parameters(root / "notebooks" / "01_preprocess.ipynb")
