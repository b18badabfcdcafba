"""A model observer: simulated raters who rank the images of a query from what they measure on them.

The demo has no expert raters. Instead of a planted order, its simulated raters look at the same anonymised PNG
images a rater sees (at their original pixel size) and measure, inside the brain region (the non-black pixels
with the holes they enclose) that every image of the query shares (eroded by 3 pixels, so that the brain's outline is not counted as detail):

* **sharpness**: high-frequency energy of the anatomy, the root-mean-square of the Laplacian of Gaussian at
  1 pixel, with the share that the image's noise contributes removed (the noise variance times the filter's
  energy);
* **contrast**: grey/white-matter contrast, ``(WM - GM) / (WM + GM)`` from a three-class split of the brain's
  intensities (CSF, grey and white matter, 1D k-means on the lightly smoothed image);
* **noise**: the noise standard deviation by Immerkær's mask (a 3x3 filter that cancels smooth structure to
  first order) in the most uniform quarter of the brain (lowest gradient magnitude at 1.5 pixels, where anatomy's
  edges do not pass for noise), from the median absolute residual (``1.4826 * median|r| / 6``), in units of the
  image's display range;
* **signal loss**: the fraction of the brain where the image, smoothed at 4 pixels, is darker than 0.6 times the
  pixel-wise median of the query's smoothed images, counted where that median is tissue (above 0.25): a dark
  region that the other images of the query do not have, as the 7T's cerebellar signal loss.

Each criterion scores an image by a stated weighted sum (:data:`OBSERVER_WEIGHTS`) of log ratios to the query's
median image (a 2x sharper image scores ``log 2 = 0.69`` more sharpness) and of the signal-loss fraction in
tenths; "looks best" weighs contrast, noise and signal loss most, "most detailed" sharpness (noise does not count
there: grain is not taken for detail, nor held against it). A simulated rater adds
Gaussian noise of their own standard deviation to each score, for every query and criterion, and ranks by the
result. The observer reads images only, never the key: it is blinded as raters are.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Optional, Union

import numpy as np
import pandas as pd

from .session import RatingStore

PathLike = Union[str, Path]

#: the measures of :func:`measure_query`
MEASURES = ("sharpness", "contrast", "noise", "signal_loss")

#: per criterion, the weight of each measure's log ratio to the query's median (signal loss: per 0.1 of the brain);
#: a negative weight is a penalty
OBSERVER_WEIGHTS = {
    "looks_best": {"sharpness": 0.5, "contrast": 1.0, "noise": -1.0, "signal_loss": -1.0},
    "most_detailed": {"sharpness": 1.0, "contrast": 0.5, "noise": 0.0, "signal_loss": -0.5},
}

_IMMERKAER = np.array([[1.0, -2.0, 1.0], [-2.0, 4.0, -2.0], [1.0, -2.0, 1.0]])


def load_display_image(path: PathLike, upscale: int = 1) -> np.ndarray:
    """A session PNG as floats in [0, 1] at its original pixel size (the nearest-neighbour enlargement undone).

    Returns:
        ``(H, W)`` array.
    """
    from PIL import Image

    img = np.asarray(Image.open(path).convert("L"), dtype=np.float64) / 255.0
    return img[::upscale, ::upscale] if upscale > 1 else img


def _three_class_means(values: np.ndarray, iterations: int = 20) -> np.ndarray:
    """Sorted means of a 1D k-means with 3 classes started at the 10th, 50th and 90th percentiles."""
    centres = np.percentile(values, [10, 50, 90])
    for _ in range(iterations):
        labels = np.argmin(np.abs(values[:, None] - centres[None, :]), axis=1)
        new = np.array([values[labels == k].mean() if np.any(labels == k) else centres[k] for k in range(3)])
        if np.allclose(new, centres):
            break
        centres = new
    return np.sort(centres)


def measure_query(images: Mapping[str, np.ndarray], *, erode: int = 3) -> pd.DataFrame:
    """Measure every image of one query inside the brain region they share.

    Args:
        images: ``{position: (H, W) image in [0, 1]}`` (:func:`load_display_image`), all of one shape.
        erode: pixels taken off the shared brain region's border (less when fewer than 50 pixels would remain).

    Returns:
        One row per position (the index): ``sharpness``, ``contrast``, ``noise``, ``signal_loss``.

    Raises:
        ValueError: images of different shapes, or no brain region left.
    """
    from scipy import ndimage

    shapes = {p: a.shape for p, a in images.items()}
    if len(set(shapes.values())) != 1:
        raise ValueError(f"the images of a query must share one shape, got {shapes}")
    stack = {p: np.asarray(a, dtype=np.float64) for p, a in images.items()}
    # the brain: the non-black region with its enclosed holes (dark CSF can display as black), shared by all images
    shared = np.logical_and.reduce([ndimage.binary_fill_holes(a > 0) for a in stack.values()])
    for e in range(int(erode), -1, -1):  # small images: erode less rather than measure nothing
        mask = ndimage.binary_erosion(shared, iterations=e) if e else shared
        if mask.sum() >= 50:
            break
    if mask.sum() < 9:
        raise ValueError(f"the brain region shared by the images has {int(mask.sum())} pixels; too small to measure")
    impulse = np.zeros((9, 9))
    impulse[4, 4] = 1.0
    log_energy = float((ndimage.gaussian_laplace(impulse, 1.0) ** 2).sum())  # noise gain of the LoG filter
    smooth4 = {p: ndimage.gaussian_filter(a, 4.0) for p, a in stack.items()}
    reference = np.median(np.stack(list(smooth4.values())), axis=0)
    tissue = mask & (reference > 0.25)
    rows = {}
    for p, a in stack.items():
        residual = ndimage.convolve(a, _IMMERKAER, mode="reflect")
        gradient = ndimage.gaussian_gradient_magnitude(a, 1.5)
        flat = mask & (gradient <= np.percentile(gradient[mask], 25))  # the most uniform quarter of the brain
        noise = float(1.4826 * np.median(np.abs(residual[flat])) / 6.0)  # the mask's norm is 6: r ~ N(0, 6 sd)
        log = ndimage.gaussian_laplace(a, 1.0)
        detail = float(np.mean(log[mask] ** 2)) - noise ** 2 * log_energy
        classes = _three_class_means(ndimage.gaussian_filter(a, 1.0)[mask])
        gm, wm = classes[1], classes[2]
        loss = float(np.mean(smooth4[p][tissue] < 0.6 * reference[tissue])) if tissue.any() else 0.0
        rows[p] = {"sharpness": float(np.sqrt(max(detail, 0.0))),
                   "contrast": float((wm - gm) / (wm + gm)) if wm + gm > 0 else 0.0,
                   "noise": noise, "signal_loss": loss}
    return pd.DataFrame.from_dict(rows, orient="index")[list(MEASURES)]


def measure_session(session_dir: PathLike) -> pd.DataFrame:
    """Measure every image of a session (the rater's PNGs; the key is not read).

    Returns:
        ``query_index, position`` and the :data:`MEASURES`, one row per image.
    """
    store = RatingStore(session_dir)
    upscale = int(store.meta.get("upscale", 2))  # sessions before "upscale" was recorded used 2
    frames = []
    for q in store.queries():
        m = measure_query({p: load_display_image(q.images[p], upscale) for p in q.positions})
        frames.append(m.rename_axis("position").reset_index().assign(query_index=q.index))
    out = pd.concat(frames, ignore_index=True)
    return out[["query_index", "position", *MEASURES]]


def observer_scores(measures: pd.DataFrame, weights: Optional[Mapping[str, Mapping[str, float]]] = None,
                    criteria: Optional[list] = None) -> pd.DataFrame:
    """Each image's score per criterion (higher is better): the weighted log ratios of its measures to the
    query's median (signal loss: its fraction in tenths of the brain).

    Args:
        measures: :func:`measure_session` (``query_index``, ``position``, the measures).
        weights: ``{criterion: {measure: weight}}`` (default :data:`OBSERVER_WEIGHTS`).
        criteria: criteria to score (default: every criterion of ``weights``).

    Returns:
        ``query_index``, ``position`` and one column per criterion.

    Raises:
        ValueError: a criterion without weights, or a weight for an unknown measure.
    """
    weights = dict(OBSERVER_WEIGHTS if weights is None else weights)
    criteria = list(weights) if criteria is None else list(criteria)
    missing = [c for c in criteria if c not in weights]
    if missing:
        raise ValueError(f"the observer has no weights for criteria {missing}; give weights={{criterion: "
                         f"{{measure: weight}}}} with measures among {', '.join(MEASURES)}")
    unknown = sorted({m for c in criteria for m in weights[c] if m not in MEASURES})
    if unknown:
        raise ValueError(f"unknown measures {unknown} in weights; known: {', '.join(MEASURES)}")
    out = measures[["query_index", "position"]].copy()
    relative = pd.DataFrame(index=measures.index)
    for m in MEASURES:
        if m == "signal_loss":
            relative[m] = measures[m] / 0.1
            continue
        logs = np.log(np.maximum(measures[m].astype(float), 1e-6))
        relative[m] = logs - logs.groupby(measures["query_index"]).transform("median")
    for c in criteria:
        out[c] = sum(w * relative[m] for m, w in weights[c].items())
    return out


def observer_ranking(scores: Mapping[str, float], rng: np.random.Generator, noise_sd: float = 0.0) -> list[str]:
    """A simulated rater's ranking of one query on one criterion: positions by score plus Gaussian noise.

    Args:
        scores: ``{position: score}`` (higher is better).
        rng: a numpy Generator.
        noise_sd: the rater's noise standard deviation, in score units.

    Returns:
        Positions, best first.
    """
    noisy = {p: float(s) + noise_sd * rng.normal() for p, s in scores.items()}
    return sorted(noisy, key=noisy.get, reverse=True)
