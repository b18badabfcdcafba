"""How far an input is from what a model was trained on: the out-of-distribution score of every prediction.

A model sees only its training inputs' distribution; a scan from another scanner, protocol or population is
predicted all the same, and nothing in the output says so. At export (:meth:`synth7t.training.trainer.Trainer.export`) the
model card records six facts of each training 3T, on the training grid (:func:`input_features`), the intensities in
units of the white matter's (the brightest of three k-means tissue classes):

- ``grey_white``, ``csf_white``: the grey matter's and the CSF's class centres: the contrast;
- ``white_spread``: the robust SD of the white matter 3 mm inside the brain's edge: noise and residual bias field;
- ``noise``: the robust SD of what a 1-voxel Gaussian removes from that white matter: the voxel-to-voxel noise;
- ``sharpness``: the mean intensity gradient there (per mm): resolution, blur, thick slices, noise;
- ``brain_ml``: the brain's volume: head size and brain extraction.

None of them depends much on where the brain's edge was drawn: the training pairs are normalised inside the 7T's
mask, a lone 3T inside its own. Two measures tried first did, and put the demo's own scans, aligned alone, above the
threshold for that reason only: a histogram of the brain (2.5-3 times the training spread) and the k-means depth
ratio of the brightest tissue class (2.4 on the tests' coarse cohort). :func:`training_statistics` keeps each fact's
mean and, as its scale, the largest leave-one-out distance of a training input from the mean of the others (at least
:data:`SCALE_FLOORS`): a component of 1 means "as far from the training inputs as the farthest of them".
:func:`ood_score` gives each component of an input (its distance over that scale) and the score, the largest
component; above the card's ``threshold`` (default 2: twice as far as any training input) ``synth7t predict`` warns
in one line. With views or flips the uncertainty map is
summarised inside the brain (:func:`uncertainty_summary`). Everything goes into the prediction's sidecar JSON and
the batch's ``predictions.tsv``.

A model imported from the authors' checkpoints has no training statistics: its sidecar says so and holds what can
be scored (the content checks of :mod:`synth7t.preprocess.input_checks`, the uncertainty summary).
"""

from __future__ import annotations

from typing import Mapping, Optional, Sequence

import numpy as np
from scipy import ndimage as ndi

STATS_FORMAT = "synth7t-input-statistics-1"
CORE_MM = 3.0  # the white matter's spread and the sharpness are measured this far inside the brain's edge
DEFAULT_THRESHOLD = 2.0
FEATURES = ("white_spread", "noise", "brain_ml", "grey_white", "csf_white", "sharpness")
# the smallest scale of each component: a cohort of near-identical training inputs (a simulated one) must not make
# every other input far; each floor is a difference too small to matter to a model
SCALE_FLOORS = {"white_spread": 0.01, "noise": 0.005, "brain_ml": 100.0, "grey_white": 0.03, "csf_white": 0.05,
                "sharpness": 0.005}


def input_features(image: np.ndarray, mask: np.ndarray, spacing_mm: float, *, seed: int = 0) -> dict:
    """The facts of one normalised 3T on a model grid (``mask`` its brain), in units of its white matter's intensity
    (the brightest of three tissue classes), so that they do not depend on how the brain's edge was drawn (the
    training pairs are normalised inside the 7T's mask, a lone 3T inside its own).

    Raises:
        ValueError: an empty mask or arrays of different shapes.
    """
    from ..preprocess.input_checks import tissue_depth_ratio

    img = np.asarray(image, np.float32)
    m = np.asarray(mask, bool)
    if img.shape != m.shape:
        raise ValueError(f"image {img.shape} and mask {m.shape} differ in shape")
    if not m.any():
        raise ValueError("the brain mask is empty")
    aff = np.diag([spacing_mm] * 3 + [1.0])
    _, detail = tissue_depth_ratio(img, m, aff, seed=seed, depths=False)  # the classes' centres
    if not detail["centre"] or detail["centre"][2] <= 0:  # too little brain for three tissue classes
        return {name: float("nan") for name in FEATURES}
    csf, gm, wm = detail["centre"]
    core = ndi.binary_erosion(m, iterations=max(1, int(round(CORE_MM / spacing_mm))))
    core = core if core.any() else m
    vals = img[core] / wm
    white = vals[np.abs(vals - 1.0) < np.abs(vals - gm / wm)]  # nearer the white-matter centre than the grey
    spread = float(1.4826 * np.median(np.abs(white - np.median(white)))) if white.size else float("nan")
    grad = np.sqrt(sum(g.astype(np.float64) ** 2 for g in np.gradient(img, spacing_mm)))
    # the voxel-to-voxel noise: what a 1-voxel Gaussian removes, in the white matter (a smooth bias field is not in it)
    fine = (img - ndi.gaussian_filter(img, 1.0))[core] / wm
    fine = fine[np.abs(vals - 1.0) < np.abs(vals - gm / wm)]
    noise = float(1.4826 * np.median(np.abs(fine - np.median(fine)))) if fine.size else float("nan")
    return {"white_spread": round(spread, 5), "noise": round(noise, 5),
            "brain_ml": round(float(m.sum() * spacing_mm**3 / 1000), 2),
            "grey_white": round(float(gm / wm), 4),
            "csf_white": round(float(csf / wm), 4), "sharpness": round(float(grad[core].mean() / wm), 5)}


def _distance(value, reference) -> float:
    return abs(float(value) - float(reference))


def training_statistics(features: Sequence[Mapping], *, threshold: float = DEFAULT_THRESHOLD,
                        keys: Optional[Sequence[str]] = None) -> dict:
    """The card's record of the training inputs (each a dict of :func:`input_features`): per feature the mean and
    the scale (the largest leave-one-out distance, at least :data:`SCALE_FLOORS`).

    Raises:
        ValueError: fewer than two training inputs (a leave-one-out scale needs two).
    """
    feats = list(features)
    if len(feats) < 2:
        raise ValueError(f"training statistics need at least two training inputs, got {len(feats)}")
    means, scales = {}, {}
    for name in FEATURES:
        vals = [float(f[name]) for f in feats]
        means[name] = float(np.mean(vals))
        loo = [_distance(v, np.mean(vals[:i] + vals[i + 1:])) for i, v in enumerate(vals)]
        scales[name] = max(max(loo), SCALE_FLOORS[name])
    return {"format": STATS_FORMAT, "n_inputs": len(feats), "keys": list(keys) if keys is not None else None,
            "threshold": float(threshold),
            "mean": {k: round(v, 6) for k, v in means.items()},
            "scale": {k: round(float(v), 6) for k, v in scales.items()},
            "inputs": [{k: f[k] for k in FEATURES} for f in feats]}


def ood_score(features: Mapping, statistics: Optional[Mapping]) -> dict:
    """An input's components (distance over the training scale, per feature) and score (the largest).

    Returns:
        ``{"score", "components", "threshold", "above_threshold", "features"}``; with no ``statistics`` (an imported
        model, or one exported before synth7t recorded them) ``score`` is None and ``note`` says why.
    """
    out = {"features": dict(features)}
    if not statistics:
        return {**out, "score": None, "components": {}, "threshold": None, "above_threshold": False,
                "note": "the model card records no training-input statistics (an imported model, or one exported "
                        "before synth7t recorded them): only the content checks and the uncertainty are scored"}
    if statistics.get("format") != STATS_FORMAT:
        raise ValueError(f"unknown training-statistics format {statistics.get('format')!r} (expected {STATS_FORMAT})")
    comps = {name: round(_distance(features[name], statistics["mean"][name]) / statistics["scale"][name], 3)
             for name in FEATURES}
    if not all(np.isfinite(v) for v in comps.values()):
        return {**out, "score": None, "components": {}, "threshold": None, "above_threshold": False,
                "note": "the input's brain is too small or too uniform to measure its tissue classes"}
    score = max(comps.values())
    thr = float(statistics.get("threshold", DEFAULT_THRESHOLD))
    return {**out, "score": round(score, 3), "components": comps, "threshold": thr, "above_threshold": score > thr}


def uncertainty_summary(uncertainty: Optional[np.ndarray], mask: np.ndarray) -> Optional[dict]:
    """Mean, median and 95th percentile of an uncertainty map (SD across views/flips) inside the brain."""
    if uncertainty is None:
        return None
    u = np.asarray(uncertainty, np.float64)[np.asarray(mask, bool)]
    if not u.size:
        return None
    return {"mean": round(float(u.mean()), 5), "median": round(float(np.median(u)), 5),
            "p95": round(float(np.percentile(u, 95)), 5)}


def warning_line(result: Mapping) -> Optional[str]:
    """The one line ``synth7t predict`` says when the score is above the card's threshold (else None)."""
    if not result.get("above_threshold"):
        return None
    worst = max(result["components"], key=result["components"].get)
    return (f"out-of-distribution score {result['score']:.2f} above the model card's {result['threshold']:g} "
            f"(largest: {worst} at {result['components'][worst]:.2f} times the training inputs' spread): the input "
            "is unlike anything the model was trained on; treat the synthetic 7T with caution")
