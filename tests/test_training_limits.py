"""What limits a demo training: the variants retrained, and what chapter 02 says from their scores."""

import pandas as pd
import pytest

from synth7t.training import limits as tl


def test_each_variant_changes_one_setting_of_the_profiles_training():
    over = {"model": "demo-cpu-nodiag", "samples_per_epoch": 384}
    v = tl.limit_variants("unet-nodiag", "demo-cpu", over)
    assert v["as in the demo"] == over and v["2x steps"]["samples_per_epoch"] == 768
    assert v["2x learning rate"]["lr_g"] == pytest.approx(2e-3) and v["no perceptual term"]["lambda_perc"] == 0.0
    assert v["no global residual"]["global_residual"] is False and v["128 x 128 crops"]["crop"] == [128, 128]
    for name, changed in v.items():  # one setting differs from the profile's, no other
        differs = {k for k in set(changed) | set(over) if changed.get(k) != over.get(k)}
        assert len(differs) == (0 if name == "as in the demo" else 1), (name, differs)
    gan = tl.limit_variants("gan-unet-nodiag", "demo-cpu-gan",
                            {"samples_per_epoch": 192, "lr_g": 1e-4, "init_from": "runs/demo/02_train/unet-nodiag/model"})
    assert gan["from scratch"] == {"samples_per_epoch": 192} and "no global residual" not in gan
    assert "128 x 128 crops" not in tl.limit_variants("vnet", "demo-cpu-vnet", {"samples_per_epoch": 256})


def _rows():
    return pd.DataFrame({
        "model": ["u", "u", "u", "v"], "variant": ["as in the demo", "2x steps", "no global residual", "as in the demo"],
        "steps": [144, 288, 144, 10], "seconds": [100.0, 200.0, 100.0, 5.0], "psnr": [27.5, 27.9, 26.0, 27.0],
        "ssim": [0.97] * 4, "psnr_3t": [26.7] * 4, "ssim_3t": [0.964] * 4, "gain_db": [0.8, 1.2, -0.7, 0.3],
        "ceiling_db": [30.0] * 4,
        "overrides": ["{'samples_per_epoch': 384, 'init_from': 'runs/x/model'}", "{'samples_per_epoch': 768}", "{}", "{}"]})


def test_limits_name_the_change_that_helps_most():
    rows = tl.limits_for("u", _rows())
    assert list(rows["vs_demo_db"].round(3)) == [0.0, 0.4, -1.5]
    text = tl.limits_sentence(rows, ceiling_db=30.0)
    assert "+0.80 dB over copying its 3T input" in text and "2x steps +0.40 dB, no global residual -1.50 dB" in text
    assert "The largest gain comes from twice the samples per epoch (too few steps?)" in text and "30.0 dB" in text
    flat = _rows().assign(gain_db=[0.8, 0.82, 0.7, 0.3])
    assert "No single change gains more than 0.05 dB" in tl.limits_sentence(tl.limits_for("u", flat))
    with pytest.raises(ValueError, match="no training-limits rows for model 'w'"):
        tl.limits_for("w", _rows())
    # a profile changed since the measurement is not described by it; init_from may name another folder
    assert len(tl.limits_for("u", _rows(), overrides={"samples_per_epoch": 384, "init_from": "runs/demo/m"})) == 3
    for changed in ({"samples_per_epoch": 768, "init_from": "runs/demo/m"}, {"samples_per_epoch": 384}):
        with pytest.raises(ValueError, match="measured with .*run `python benchmarks/demo_training_limits.py` again"):
            tl.limits_for("u", _rows(), overrides=changed)
    with pytest.raises(FileNotFoundError, match="demo_training_limits.py"):
        tl.limits_for("u", "/nonexistent/limits.tsv")


def test_noise_ceiling():
    assert tl.noise_ceiling_db(0.01) == pytest.approx(40.0) and tl.noise_ceiling_db(0.1) == pytest.approx(20.0)
    with pytest.raises(ValueError, match="sigma must be > 0"):
        tl.noise_ceiling_db(0.0)


def test_limits_measured_on_another_simulation_are_refused():
    """Rows of generator version 4 do not describe a run on version 5's cohort; rows that predate the column neither."""
    rows = _rows().assign(generator_version="5")
    assert len(tl.limits_for("u", rows, generator_version="5")) == 3
    with pytest.raises(ValueError, match="generator version 5, this run's is 6"):
        tl.limits_for("u", rows, generator_version="6")
    with pytest.raises(ValueError, match="generator version unrecorded"):
        tl.limits_for("u", _rows(), generator_version="5")
    assert len(tl.limits_for("u", _rows())) == 3  # a run that is not the demo's checks no version
