"""Tests of synth7t.configbase.Config on a small config and on the package's configs that use it."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import ClassVar, Optional, Tuple

import pytest

from synth7t.configbase import Config
from synth7t.models.config import UNetConfig, VNetConfig
from synth7t.training.config import TrainConfig


@dataclass
class ToyConfig(Config):
    """A config with every kind of field the base must handle."""

    PRESETS: ClassVar[dict] = {"quick": {"iterations": 10, "sigmas": (1.0,)}, "paper": {}}
    RUNTIME_FIELDS: ClassVar[tuple] = ("threads",)

    iterations: int = 100
    sigmas: Tuple[float, ...] = (2.0, 1.0)
    size: tuple = (288, 224)
    pairs: Tuple[Tuple[int, int], ...] = ((1, 2),)
    spacing: Optional[Tuple[float, float, float]] = None
    betas: list = field(default_factory=lambda: [0.9, 0.999])
    name: str = "toy"
    threads: int = 1

    def __post_init__(self):
        if self.iterations < 1:
            raise ValueError(f"iterations must be >= 1, got {self.iterations}")


@dataclass(frozen=True)
class FrozenToy(Config):
    """A frozen config whose presets are instances (as the model presets are)."""

    channels: int = 8
    mult: Tuple[int, ...] = (1, 2)


FrozenToy.PRESETS = {"small": FrozenToy(channels=4)}


def _has_tuple(value) -> bool:
    if isinstance(value, tuple):
        return True
    if isinstance(value, dict):
        return any(_has_tuple(v) for v in value.values())
    return isinstance(value, list) and any(_has_tuple(v) for v in value)


@pytest.mark.parametrize("cls, preset, overrides, expected", [
    (ToyConfig, "paper", {}, {"iterations": 100, "sigmas": (2.0, 1.0)}),
    (ToyConfig, "quick", {}, {"iterations": 10, "sigmas": (1.0,)}),
    (ToyConfig, "quick", {"iterations": 3, "threads": 4}, {"iterations": 3, "threads": 4, "sigmas": (1.0,)}),
    (FrozenToy, "small", {}, {"channels": 4, "mult": (1, 2)}),
    (FrozenToy, "small", {"mult": (1, 2, 4)}, {"channels": 4, "mult": (1, 2, 4)}),
    (TrainConfig, "demo-cpu", {"epochs": 1}, {"model": "demo-cpu", "epochs": 1, "crop": [96, 96]}),
    (TrainConfig, "paper-gan", {}, {"gan": True, "epochs": 22, "betas_d": [0.0, 0.9]}),
    (UNetConfig, "demo-cpu", {"dropout": 0.1}, {"channels": 16, "channel_mult": (1, 2, 2), "dropout": 0.1}),
    (VNetConfig, "vnet-demo", {}, {"base_channels": 8, "down_convs": (1, 2, 2)}),
])
def test_from_preset(cls, preset, overrides, expected):
    cfg = cls.from_preset(preset, **overrides)
    assert isinstance(cfg, cls)
    assert {k: getattr(cfg, k) for k in expected} == expected


@pytest.mark.parametrize("call, match", [
    (lambda: ToyConfig.from_preset("huge"), r"unknown ToyConfig preset 'huge'; known presets: quick, paper"),
    (lambda: TrainConfig.from_preset("huge"), r"unknown TrainConfig preset 'huge'.*demo-cpu"),
    (lambda: UNetConfig.from_preset("vnet"), r"unknown UNetConfig preset 'vnet'.*paper-unet"),
    (lambda: ToyConfig.from_preset("quick", iteration=3), r"overrides: unknown ToyConfig key\(s\) \['iteration'\]"),
    (lambda: ToyConfig.from_dict({"iterations": 3, "sigma": [1], "zz": 0}),
     r"unknown ToyConfig key\(s\) \['sigma', 'zz'\]; known keys: betas, iterations, name"),
    (lambda: ToyConfig().replace(thread=2), r"unknown ToyConfig key\(s\) \['thread'\]"),
    (lambda: FrozenToy().replace(channel=2), r"unknown FrozenToy key\(s\) \['channel'\]"),
    (lambda: ToyConfig.from_dict([("iterations", 3)]), "needs a mapping"),
    (lambda: ToyConfig.from_preset("quick", iterations=0), "iterations must be >= 1"),  # validation still runs
    (lambda: ToyConfig().replace(iterations=0), "iterations must be >= 1"),
    (lambda: TrainConfig.from_preset("demo-cpu", learning_rate=1), r"unknown TrainConfig key.*learning_rate"),
])
def test_unknown_names_and_invalid_values_are_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_a_preset_with_a_typo_is_an_error():
    class Typo(ToyConfig):
        PRESETS: ClassVar[dict] = {"bad": {"iteratons": 3}}

    with pytest.raises(ValueError, match=r"preset 'bad': unknown Typo key\(s\) \['iteratons'\]"):
        Typo.from_preset("bad")


@pytest.mark.parametrize("cfg", [
    ToyConfig(),
    ToyConfig(sigmas=(3.0, 2.0, 1.0), size=(64, 64), pairs=((1, 2), (3, 4)), spacing=(1.0, 1.0, 2.0),
              betas=[0.5, 0.9], threads=3),
    FrozenToy(mult=(1, 2, 2, 4)),
    TrainConfig.from_preset("demo-cpu-gan"),
    UNetConfig.from_preset("paper-gan"),
])
def test_to_dict_is_json_ready_and_from_dict_restores_tuples(cfg):
    d = cfg.to_dict()
    assert not _has_tuple(d)
    back = type(cfg).from_dict(json.loads(json.dumps(d)))
    assert back == cfg
    for name in type(cfg).field_names():
        assert type(getattr(back, name)) is type(getattr(cfg, name)), name


def test_restored_nested_tuples_and_lists():
    back = ToyConfig.from_dict({"pairs": [[5, 6], [7, 8]], "spacing": [1, 1, 2], "betas": [0.1, 0.2]})
    assert back.pairs == ((5, 6), (7, 8)) and back.spacing == (1, 1, 2) and back.betas == [0.1, 0.2]
    assert ToyConfig.from_dict({"spacing": None}).spacing is None


def test_to_dict_does_not_share_mutable_fields():
    cfg = ToyConfig()
    cfg.to_dict()["betas"].append(1.0)
    assert cfg.betas == [0.9, 0.999]


@pytest.mark.parametrize("change, same", [
    ({"threads": 8}, True),           # runtime field
    ({"iterations": 101}, False),
    ({"sigmas": (2.0, 1.5)}, False),
    ({"betas": [0.9, 0.99]}, False),
    ({"name": "toy"}, True),          # same value
])
def test_fingerprint_ignores_runtime_fields_only(change, same):
    base = ToyConfig()
    fp = base.fingerprint()
    assert len(fp) == 16 and int(fp, 16) >= 0
    assert (base.replace(**change).fingerprint() == fp) is same


def test_fingerprint_is_stable_and_sees_train_and_model_fields():
    assert ToyConfig().fingerprint() == ToyConfig.from_dict(json.loads(json.dumps(ToyConfig().to_dict()))).fingerprint()
    t = TrainConfig.from_preset("demo-cpu")
    assert t.replace(num_workers=4, ckpt_every=7).fingerprint() == t.fingerprint()
    assert t.replace(seed=1).fingerprint() != t.fingerprint()
    u = UNetConfig.from_preset("demo-cpu")
    assert u.replace(dropout=0.1).fingerprint() != u.fingerprint()
    assert "kind" in u.fingerprint_dict()


def test_runtime_fields_must_be_fields():
    class Wrong(ToyConfig):
        RUNTIME_FIELDS: ClassVar[tuple] = ("thread",)

    with pytest.raises(ValueError, match=r"Wrong.RUNTIME_FIELDS: unknown Wrong key\(s\) \['thread'\]"):
        Wrong().fingerprint()


def test_a_preset_of_another_type_is_refused():
    class Odd(FrozenToy):
        PRESETS: ClassVar[dict] = {"x": 3}

    with pytest.raises(TypeError, match=r"Odd.PRESETS\['x'\] is a int"):
        Odd.from_preset("x")


@dataclass
class Owner(Config):
    """A config that holds another as one nested field (as preprocessing and the atlas hold the registration)."""

    PRESETS: ClassVar[dict] = {"coarse": {"inner": {"channels": 2}, "scale": 3}, "plain": {}}
    RENAMED: ClassVar[dict] = {"inner_channels": "inner.channels"}

    preset: str = "plain"
    scale: int = 1
    inner: FrozenToy = field(default_factory=lambda: FrozenToy(mult=(1, 2, 4)))


def test_a_nested_config_changes_only_the_settings_a_mapping_names():
    coarse = Owner.from_preset("coarse")
    # the preset's mapping changed channels over the owner's default (mult (1, 2, 4), not FrozenToy's (1, 2))
    assert coarse.inner == FrozenToy(channels=2, mult=(1, 2, 4)) and coarse.preset == "coarse"
    # an override's mapping changes its key over the preset's value, not over the default
    assert Owner.from_preset("coarse", inner={"mult": (8,)}).inner == FrozenToy(channels=2, mult=(8,))
    assert coarse.replace(inner={"mult": [3]}).inner == FrozenToy(channels=2, mult=(3,))
    assert coarse.replace(inner=FrozenToy()).inner == FrozenToy()
    # JSON round trip, and the fingerprint sees a nested change
    text = json.dumps(coarse.to_dict())
    assert json.loads(text)["inner"] == {"channels": 2, "mult": [1, 2, 4]}
    assert Owner.from_dict(json.loads(text)) == coarse
    assert coarse.replace(inner={"channels": 5}).fingerprint() != coarse.fingerprint()
    # a partial nested dict in JSON keeps the owner's default for the rest
    assert Owner.from_dict({"inner": {"channels": 6}}).inner == FrozenToy(channels=6, mult=(1, 2, 4))
    # an old file's flat key is read at its new place; as a setting it is an error naming the place
    assert Owner.from_dict({"inner_channels": 7}).inner == FrozenToy(channels=7, mult=(1, 2, 4))
    with pytest.raises(ValueError, match="inner_channels is now inner.channels"):
        Owner.from_preset("plain", inner_channels=7)
    with pytest.raises(ValueError, match="unknown FrozenToy key.*chanels"):
        coarse.replace(inner={"chanels": 1})
    with pytest.raises(ValueError, match="must be a FrozenToy or a mapping"):
        coarse.replace(inner=3)
