"""Model cards: build, write and read back; the Markdown's facts; where the training data came from; the
one-line warning for a model trained on simulated data."""

import json
from types import SimpleNamespace

import pytest

from synth7t.training import modelcard
from synth7t.models import get_model_config
from synth7t.training.config import TrainConfig

GRID = {"spacing_mm": 0.7, "grid_inplane": [288, 224]}
VALIDATION = [
    {"epoch": 0, "step": 10, "psnr": 24.5, "ssim": 0.71, "psnr_3t": 22.0, "ssim_3t": 0.65},
    {"epoch": 1, "step": 20, "psnr": "26.25", "ssim": "0.755", "psnr_3t": "22.0", "ssim_3t": "0.65"},  # CSV text
]
SIMULATED = {"name": "synth7t demo cohort (simulated)", "simulated": True, "source": "cache", "split": "train/test",
             "subjects": {"train": 3, "validation": 1, "test": 1}, "scans": {"train": 3, "validation": 1, "test": 1}}
REAL = {"name": "BioFINDER-2 7T", "simulated": False, "source": "cache", "split": "train/test",
        "subjects": {"train": 122, "validation": 14, "test": 28}, "scans": {"train": 122, "validation": 14, "test": 28}}


def _card(preset="demo-cpu-gan", dataset=SIMULATED, validation=VALIDATION, objective="wasserstein", **train):
    return modelcard.build_model_card(TrainConfig.from_preset(preset, **train).to_dict(),
                                      get_model_config(preset).to_dict(), dataset=dataset, steps=20,
                                      epochs_done=2, grid=GRID, validation=validation, objective=objective)


def test_build_write_read_round_trip(tmp_path):
    card = _card()
    model_dir = tmp_path / "run" / "model"
    model_dir.mkdir(parents=True)
    assert modelcard.read_model_card(model_dir) is None  # exported before cards existed
    json_path, md_path = modelcard.write_model_card(model_dir, card)
    assert json_path.name == "model_card.json" and md_path.name == "MODEL_CARD.md"
    assert modelcard.read_model_card(model_dir) == card
    assert modelcard.read_model_card(tmp_path / "run") == card  # a run folder, as load_model accepts
    assert json.loads(json.dumps(card)) == card  # JSON-ready
    assert card["model"]["parameters"] == 335575 and card["model"]["gan"] and card["model"]["critic"] == "demo-cpu"
    assert card["training"]["steps"] == 20 and card["training"]["epochs_done"] == 2
    assert card["grid"]["voxel_size_mm"] == 0.7 and card["grid"]["inplane"] == [288, 224]
    assert card["validation"]["final"]["psnr"] == 26.25 and card["validation"]["psnr_gain_db"] == pytest.approx(4.25)
    assert [t["term"] for t in card["objective"]["terms"]] == ["l1", "perceptual", "adversarial"]


def test_markdown_holds_the_key_facts(tmp_path):
    _, md_path = modelcard.write_model_card(tmp_path, _card(lambda_perc=0.0123))  # as the trainer calibrated it
    md = md_path.read_text()
    for fact in ("# Model card: demo-cpu-gan (GAN U-Net)", "Demo only", "synth7t demo cohort (simulated)",
                 "| simulated | yes |", "| subjects: train / validation / test | 3 / 1 / 1 |",
                 "L1 + 0.0123 x perceptual (efficientnet_lite0; weight calibrated to 17% of the loss at the identity) "
                 "+ 0.1 x adversarial (wasserstein; critic demo-cpu)",
                 "gradient penalty (WGAN-GP)", "| steps | 20 |", "| epochs done / planned | 2 / 3 |",
                 "voxel size: 0.7 mm", "288 x 224", "| 1 | 20 | 26.25 | 22.00 | 0.755 | 0.650 |",
                 "+4.25 dB PSNR", "## Intended use", "blurs real scans", "random 96 x 96 crops"):
        assert fact in md, fact


def test_a_real_unet_card():
    card = _card("paper-unet", dataset=REAL, objective="wasserstein")  # no critic: the objective is ignored
    assert [t["term"] for t in card["objective"]["terms"]] == ["l1", "perceptual"]
    assert card["objective"]["summary"] == "L1 + 0.05 x perceptual (efficientnet_lite0)"
    assert card["intended_use"].startswith("Research") and "0.7 mm grid of 288 x 224" in card["intended_use"]
    assert not any("simulated" in item.lower() for item in card["limitations"])
    md = modelcard.model_card_markdown(card)
    assert md.startswith("# Model card: paper-unet (U-Net)\n")
    assert "Demo only" not in md and "| simulated | no |" in md and "| adversarial critic | none |" in md


def test_objective_from_the_config_and_missing_facts():
    cfg = {**TrainConfig.from_preset("paper-gan").to_dict(), "gan_objective": "bce"}
    card = modelcard.build_model_card(cfg, get_model_config("paper-gan").to_dict(), dataset=REAL, steps=0,
                                      epochs_done=0, grid={}, validation=None, objective=None)
    adversarial = card["objective"]["terms"][-1]
    assert adversarial["objective"] == "bce" and "binary cross-entropy" in adversarial["description"]
    assert card["validation"]["final"] is None and "No validation scores were recorded." in card["limitations"]
    assert "No validation scores were recorded." in modelcard.model_card_markdown(card)
    one = _card(validation={"epoch": 0, "step": 5, "psnr": 20.0, "ssim": 0.5, "psnr_3t": 21.0, "ssim_3t": 0.6})
    assert len(one["validation"]["history"]) == 1
    assert any("does not beat copying its 3T input" in item for item in one["limitations"])
    assert one["validation"]["beats_identity"] is False and "Worse than its input" in modelcard.model_card_markdown(one)
    assert "degrades" in modelcard.identity_warning(one) and modelcard.identity_warning(card) is None
    # above the 3T in PSNR but not in SSIM is not above the identity either
    half = _card(validation={"epoch": 0, "step": 5, "psnr": 22.0, "ssim": 0.5, "psnr_3t": 21.0, "ssim_3t": 0.6})
    assert half["validation"]["beats_identity"] is False
    both = _card(validation={"epoch": 0, "step": 5, "psnr": 22.0, "ssim": 0.7, "psnr_3t": 21.0, "ssim_3t": 0.6})
    assert both["validation"]["beats_identity"] is True and modelcard.model_card_warnings(both) == [
        (modelcard.SimulatedTrainingWarning, modelcard.simulated_training_warning(both))]


@pytest.mark.parametrize("kw, match", [
    (dict(dataset={"name": "x"}), r"dataset lacks \['simulated'\]"),
    (dict(steps=-1), "steps must be an integer >= 0"),
    (dict(validation="psnr"), "validation must be a dict"),
    (dict(grid=[0.7]), "grid must be a dict"),
])
def test_invalid_arguments(kw, match):
    args = dict(dataset=SIMULATED, steps=1, epochs_done=0, grid=GRID, validation=VALIDATION, objective=None)
    args.update(kw)
    with pytest.raises(ValueError, match=match):
        modelcard.build_model_card(TrainConfig.from_preset("demo-cpu").to_dict(), get_model_config("demo-cpu").to_dict(),
                                   **args)


def test_bad_cards_are_refused(tmp_path):
    with pytest.raises(ValueError, match="model card of format"):
        modelcard.write_model_card(tmp_path, {"model": {}})
    (tmp_path / "model_card.json").write_text("{broken")
    with pytest.raises(ValueError, match="not valid JSON"):
        modelcard.read_model_card(tmp_path)


def test_warning_for_a_simulated_model_only(tmp_path):
    sim, real, bare = tmp_path / "sim", tmp_path / "real", tmp_path / "bare"
    for d in (sim, real, bare):
        d.mkdir()
    modelcard.write_model_card(sim, _card())
    modelcard.write_model_card(real, _card("paper-unet", dataset=REAL))
    line = modelcard.simulated_training_warning(sim)
    assert line.startswith("warning: this model was trained on simulated data (synth7t demo cohort (simulated))")
    assert "blurs real scans" in line and "\n" not in line
    assert modelcard.simulated_training_warning(real) is None
    assert modelcard.simulated_training_warning(bare) is None  # no card: nothing is claimed
    assert modelcard.simulated_training_warning(modelcard.read_model_card(sim)) == line


def _write_cache(root, meta, rows):
    root.mkdir(parents=True)
    (root / "cache.json").write_text(json.dumps(meta))
    lines = ["key\tsplit\tdir"] + [f"{k}\t{s}\t{d}" for k, s, d in rows]
    (root / "volumes.tsv").write_text("\n".join(lines) + "\n")


def test_training_data_facts_from_the_cache(tmp_path):
    rows = [("sub-01", "train", ""), ("sub-02_ses-1", "train", ""), ("sub-02_ses-2", "train", ""),
            ("sub-03", "train", ""), ("sub-04", "test", "")]
    _write_cache(tmp_path / "c", {"dataset": {"name": "BF2", "simulated": False}}, rows)
    facts = modelcard.training_data_facts(tmp_path / "c", validation_keys=["sub-03"])
    assert facts == {"name": "BF2", "simulated": False, "source": "cache", "split": "train/test",
                     "subjects": {"train": 2, "validation": 1, "test": 1},
                     "scans": {"train": 3, "validation": 1, "test": 1}}
    assert modelcard.training_data_facts(SimpleNamespace(root=tmp_path / "c"), validation_keys=["sub-03"]) == facts
    on_test = modelcard.training_data_facts(tmp_path / "c", validation_keys=["sub-04"])
    assert on_test["validation_on_test_subjects"] and on_test["subjects"]["test"] == 0
    card = _card(dataset=on_test)
    assert any("Validation used test subjects" in item for item in card["limitations"])
    assert any("No held-out test subjects" in item for item in card["limitations"])


def test_training_data_facts_of_an_older_cache_ask_the_derivatives(tmp_path):
    raw = tmp_path / "data"
    (raw / "sub-01" / "anat").mkdir(parents=True)
    (raw / "sub-01" / "anat" / "sub-01_acq-7T_T1w.json").write_text(json.dumps({"Simulated": True}))
    deriv = raw / "derivatives" / "synth7t-preproc"
    anat = deriv / "sub-01" / "anat"
    anat.mkdir(parents=True)
    (deriv / "dataset_description.json").write_text(json.dumps(
        {"Name": "synth7t preprocessing", "DatasetType": "derivative", "SourceDatasets": [{"URL": str(raw)}]}))
    _write_cache(tmp_path / "old", {"keys": ["sub-01"]}, [("sub-01", "unsplit", str(anat))])
    facts = modelcard.training_data_facts(tmp_path / "old")
    assert facts["simulated"] is True and facts["name"] == "data"  # no description: the sidecars tell
    assert facts["split"] == "unsplit" and facts["subjects"] == {"train": 1, "validation": 0, "test": 0}
    assert modelcard.training_data_facts(deriv)["simulated"] is True
    (raw / "dataset_description.json").write_text(json.dumps({"Name": "Lab 7T pairs"}))
    (raw / "sub-01" / "anat" / "sub-01_acq-7T_T1w.json").write_text(json.dumps({"MagneticFieldStrength": 7}))
    assert modelcard.training_data_facts(raw) == {"name": "Lab 7T pairs", "simulated": False, "source": "dataset"}
    with pytest.raises(ValueError, match="not a slice cache"):
        modelcard.training_data_facts(tmp_path / "nothing")


def test_validation_log_is_read_as_numbers(tmp_path):
    assert modelcard.read_validation_log(tmp_path) == []
    (tmp_path / "val_log.csv").write_text("epoch,step,psnr,ssim,psnr_3t,ssim_3t\n0,4,21.5,0.61,20.0,nan\n")
    rows = modelcard.read_validation_log(tmp_path)
    assert rows == [{"epoch": 0, "step": 4, "psnr": 21.5, "ssim": 0.61, "psnr_3t": 20.0, "ssim_3t": None}]
