"""The one table of deviations from the paper and the authors' code (synth7t.studies.deviations), and the paper profile that
reads it."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
from pathlib import Path

import pytest
import yaml

from synth7t.studies import deviations
from synth7t.workflow import profiles

ROOT = Path(__file__).resolve().parents[1]


def _resolves(path: str) -> bool:
    """Whether a dotted path names a dataclass field or a function parameter of the package."""
    parts = path.split(".")
    for i in range(len(parts) - 1, 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for name in parts[i:-1]:
            obj = getattr(obj, name, None)
            if obj is None:
                return False
        if dataclasses.is_dataclass(obj):
            return parts[-1] in {f.name for f in dataclasses.fields(obj)}
        return callable(obj) and parts[-1] in inspect.signature(obj).parameters
    return False


def test_every_row_is_complete_and_its_switches_exist():
    topics = [d.topic for d in deviations.DEVIATIONS]
    assert len(topics) == len(set(topics))
    for d in deviations.DEVIATIONS:
        for name in ("topic", "stage", "paper", "authors_code", "synth7t", "switch"):
            assert getattr(d, name).strip(), (d.topic, name)
        assert d.switches, d.topic
        missing = [s for s in d.switches if not _resolves(s)]
        assert not missing, f"{d.topic}: {missing} name no field or parameter"
    assert not _resolves("synth7t.training.config.TrainConfig.no_such_field")  # the check can fail


def test_the_table_holds_the_deviations_the_review_listed():
    """Mask tools, bf16, the critic's learning rate, lambda_perc, the BCE terms, the critic's normalisation and
    kernel, the generalised affine, the baselines' patch sampling and blending."""
    table = deviations.deviation_table()
    assert list(table.columns) == list(deviations.COLUMNS.values())
    text = table.to_string().lower()
    for phrase in ("synthstrip", "deepbet", "bf16", "2e-5", "2e-4", "0.05", "0.01", "(bce_real + bce_fake) / 2",
                   "layer norm", "4 x 4", "median", "recentre", "grid sampler", "hann", "gaussian"):
        assert phrase in text, phrase
    md = deviations.deviation_markdown()
    assert len(md.splitlines()) == len(deviations.DEVIATIONS) + 2 and "\\|" not in md.splitlines()[0]
    row = deviations.Deviation("x", "training", "a | b", "c", "d", "e", ("synth7t.training.config.TrainConfig.amp",))
    assert "a \\| b" in deviations.deviation_markdown((row,))  # a pipe in a cell does not split the row


def test_profile_settings_are_declared_notebook_parameters():
    for stem, params in deviations.profile_parameters().items():
        nb = ROOT / "notebooks" / f"{stem}.ipynb"
        assert nb.is_file(), stem
        declared = profiles.declared_parameters(nb)
        assert set(params) <= set(declared), (stem, set(params) - set(declared))
    clash = (deviations.Deviation("a", "s", "p", "c", "d", "w", profile={"01_preprocess": {"mask_backend": "given"}}),
             deviations.Deviation("b", "s", "p", "c", "d", "w", profile={"01_preprocess": {"mask_backend": "x"}}))
    with pytest.raises(ValueError, match="one row per setting"):
        deviations.profile_parameters(clash)


def test_the_paper_profile_reads_its_settings_from_the_table(tmp_path):
    prof = profiles.load_profile("paper", root=ROOT)
    table = deviations.profile_parameters()
    assert table, "the table sets nothing for the paper profile"
    seen = set()
    for entry in prof["notebooks"]:
        stem = Path(entry["notebook"]).stem
        for k, v in table.get(stem, {}).items():
            assert entry["parameters"][k] == v, (stem, k)
            seen.add(stem)
    assert seen == set(table)  # every notebook the table names runs in the paper profile
    # the YAML does not repeat them: the table is the one place
    raw = yaml.safe_load((ROOT / "profiles" / "paper.yml").read_text())
    assert raw["deviations"] is True
    for entry in raw["notebooks"]:
        assert not set(entry.get("parameters") or {}) & set(table.get(Path(entry["notebook"]).stem, {}))
    # a profile that contradicts the table is refused
    raw["notebooks"][0]["parameters"]["mask_backend"] = "synthstrip"
    bad = tmp_path / "bad.yml"
    bad.write_text(yaml.safe_dump(raw))
    with pytest.raises(ValueError, match="deviation table .* sets 'deepbet'; change the table"):
        profiles.load_profile(bad)
    # without deviations: true nothing is added
    raw.pop("deviations")
    raw["notebooks"][0]["parameters"].pop("mask_backend")
    bad.write_text(yaml.safe_dump(raw))
    assert "mask_backend" not in profiles.load_profile(bad)["notebooks"][0]["parameters"]
