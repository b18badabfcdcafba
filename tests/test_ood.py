"""The out-of-distribution score (synth7t.inference.ood) on the shipped MNI 2009c T1: training inputs made from it
with a scanner's spread (gain, bias, noise, blur, head size), an unseen member of the same spread scores like them,
and inputs unlike them score above the threshold."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from synth7t.data import io as sio
from synth7t.inference import ood
from synth7t.data.templates import template_sources

SPACING = 2.0


@pytest.fixture(scope="module")
def brain():
    src = template_sources()
    t1 = sio.load_volume(src["t1"], reorient=True).data[::2, ::2, ::2]
    mask = sio.load_volume(src["mask"], reorient=True).data[::2, ::2, ::2] > 0.5
    return t1.astype(np.float32), mask


def _member(t1, mask, seed, *, noise=0.02, blur=0.5, bias=0.05, zoom=1.0):
    """One normalised 3T as preprocessing leaves it: [0, 1] inside the brain (99th percentile at 1), 0 outside."""
    rng = np.random.default_rng(seed)
    img, m = t1, mask
    if zoom != 1.0:
        img, m = ndi.zoom(t1, zoom, order=1), ndi.zoom(mask.astype(np.float32), zoom, order=1) > 0.5
    img = ndi.gaussian_filter(img, blur * rng.uniform(0.9, 1.1))
    x = np.linspace(-1, 1, img.shape[0])[:, None, None]
    img = img * (1 + bias * rng.uniform(-1, 1) * x) * rng.uniform(0.9, 1.1)
    img = img + rng.normal(0, noise * img[m].mean(), img.shape)
    lo, hi = img[m].min(), np.percentile(img[m], 99)
    return np.where(m, np.clip((img - lo) / (hi - lo), 0, 1), 0).astype(np.float32), m


def test_an_unseen_input_like_the_training_ones_scores_low_and_unlike_ones_score_high(brain):
    t1, mask = brain
    train = [ood.input_features(*_member(t1, mask, s, zoom=z), SPACING) for s, z in zip(range(5), (0.97, 1.0, 1.03,
                                                                                                 0.99, 1.01))]
    stats = ood.training_statistics(train, keys=[f"sub-{i}" for i in range(5)])
    assert stats["n_inputs"] == 5 and set(stats["scale"]) == set(ood.FEATURES)
    same = ood.ood_score(ood.input_features(*_member(t1, mask, 11), SPACING), stats)
    # within the training spread: every component about 1 or less (a scale from the smallest leave-one-out distance
    # instead of the largest puts this input at 2-10 times the spread)
    assert same["score"] < 1.5 and not same["above_threshold"], same
    far = {
        "blurred (a thick-slice or low-resolution scan)": _member(t1, mask, 12, blur=2.0),
        "noisy": _member(t1, mask, 14, noise=0.12),
        "strong bias field": _member(t1, mask, 15, bias=0.6),
        "small head": _member(t1, mask, 16, zoom=0.8),
    }
    for name, (img, m) in far.items():
        res = ood.ood_score(ood.input_features(img, m, SPACING), stats)
        assert res["above_threshold"] and res["score"] > same["score"] * 2, (name, res)
        line = ood.warning_line(res)
        assert line.startswith(f"out-of-distribution score {res['score']:.2f}") and "\n" not in line
    assert ood.warning_line(same) is None


def test_without_training_statistics_the_score_says_so(brain):
    t1, mask = brain
    res = ood.ood_score(ood.input_features(*_member(t1, mask, 0), SPACING), None)
    assert res["score"] is None and not res["above_threshold"] and "no training-input statistics" in res["note"]
    with pytest.raises(ValueError, match="at least two"):
        ood.training_statistics([ood.input_features(*_member(t1, mask, 0), SPACING)])
    with pytest.raises(ValueError, match="unknown training-statistics format"):
        ood.ood_score(ood.input_features(*_member(t1, mask, 0), SPACING), {"format": "other"})
    u = np.zeros(mask.shape, np.float32)
    u[mask] = 0.1
    assert ood.uncertainty_summary(u, mask) == {"mean": 0.1, "median": 0.1, "p95": 0.1}
    assert ood.uncertainty_summary(None, mask) is None


def test_a_brain_too_small_to_measure_gets_no_score_not_a_made_up_one(brain):
    t1, mask = brain
    train = [ood.input_features(*_member(t1, mask, s), SPACING) for s in range(3)]
    tiny = np.zeros_like(mask)
    tiny[40:45, 50:55, 40:45] = True  # 125 voxels: no three tissue classes to measure
    feats = ood.input_features(np.where(tiny, t1, 0), tiny, SPACING)
    assert all(np.isnan(feats[k]) for k in ood.FEATURES)
    res = ood.ood_score(feats, ood.training_statistics(train))
    assert res["score"] is None and not res["above_threshold"] and "too small" in res["note"]
