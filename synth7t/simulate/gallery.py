"""The gallery of bad and unusual inputs: what ``synth7t predict`` refuses, warns about or predicts, shown on copies
of a demo 3T (simulated) and checked in the tests.

Users hand a lone-3T tool scans it was never meant for: negated or inverted images, T2-weighted scans, thick
clinical slices, strong bias fields, broken or flipped headers, children's heads, a 7T already. Each case of
:data:`CASES` is made from one subject's 3T (and, for the last, its 7T) by :func:`gallery_inputs`, has an intended
outcome, and :func:`run_gallery` runs it through :func:`synth7t.inference.predict_file` (the command's code) and
records what happened: ``refused`` (an :class:`~synth7t.preprocess.InputRefused`, one line per failed check),
``warned`` (predicted, with a content-check warning or an out-of-distribution score above the model card's
threshold) or ``predicted``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import pandas as pd
from scipy import ndimage as ndi

from ..data import io as sio

PathLike = Union[str, Path]

#: case -> (intended outcome, what it is)
CASES = {
    "negated": ("refused", "the 3T times -1 (a wrong sign in a conversion)"),
    "noise": ("refused", "Gaussian noise in the 3T's grid: no brain at all"),
    "T2-like": ("refused", "the brain's intensities inverted: CSF bright, white matter dark, as a T2w"),
    "sheared header": ("refused", "the affine's first axis tilted 17 degrees towards the second"),
    "flipped header": ("refused", "front and back swapped in the affine: a mirror image"),
    "small head": ("refused", "the voxel sizes times 0.75: a brain of 0.42 times the volume, a child's"),
    "thick slices": ("warned", "axial slices 5 mm thick (a clinical 1 x 1 x 5 mm scan)"),
    "noisy": ("warned", "noise of 12 % of the brain's mean intensity added (a fast, low-SNR scan)"),
    "low contrast": ("warned", "the brain's contrast halved towards the white matter (another T1w sequence)"),
    "strong bias field": ("predicted", "a smooth multiplicative field of +/-60 % across the head (N4 removes it)"),
    "7T as input": ("predicted", "the subject's 7T given as its 3T (on the model's grid, inside the training inputs' "
                                 "spread: the score does not tell this simulated 7T from a 3T)"),
}


def _save(path: Path, data: np.ndarray, affine: np.ndarray) -> str:
    sio.save_volume(path, np.asarray(data, np.float32), affine)
    return str(path)


def gallery_inputs(t3: PathLike, mask: PathLike, out_dir: PathLike, *, t7: Optional[PathLike] = None,
                   t7_mask: Optional[PathLike] = None, cases: Optional[Sequence[str]] = None,
                   seed: int = 0) -> pd.DataFrame:
    """Write the gallery's inputs made from one 3T (with its skull) and its brain mask.

    Args:
        t3, mask: the 3T file and its brain mask (given to prediction, so that brain extraction is not what is
            tested; the header cases carry the same changes in the mask's header).
        out_dir: where the inputs go (``<case>.nii.gz`` and ``<case>_mask.nii.gz``).
        t7, t7_mask: the subject's 7T and its mask, for the case ``7T as input`` (left out without them).
        cases: names of :data:`CASES` (default all).

    Returns:
        ``case, expect, what, path, mask`` per case.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    vol = sio.load_volume(t3)
    m = sio.load_volume(mask, dtype=None).data > 0
    data, aff = vol.data.astype(np.float32), vol.affine
    rng = np.random.default_rng(seed)
    rows = []
    for case in cases or CASES:
        if case not in CASES:
            raise ValueError(f"unknown gallery case {case!r}; known: {', '.join(CASES)}")
        img, a, mk = data, aff, m
        if case == "negated":
            img = -data
        elif case == "noise":
            img = rng.normal(data[m].mean(), data[m].std(), data.shape).astype(np.float32)
        elif case == "T2-like":
            hi = np.percentile(data[m], 99)
            img = np.where(m, np.clip(hi - data, 0, None) + 0.1 * hi, data)
        elif case == "sheared header":
            a = aff.copy()
            a[:3, 0] = aff[:3, 0] + 0.3 * aff[:3, 1] * np.linalg.norm(aff[:3, 0]) / np.linalg.norm(aff[:3, 1])
        elif case == "flipped header":
            a = aff.copy()
            ax = int(np.argmax(np.abs(aff[1, :3])))  # the voxel axis that runs front to back
            a[:3, ax] *= -1
            a[:3, 3] = aff[:3, 3] + aff[:3, ax] * (data.shape[ax] - 1)  # same field of view, mirrored
        elif case == "small head":
            a = aff.copy()
            a[:3, :3] *= 0.75
        elif case == "thick slices":
            ax = int(np.argmax(np.abs(aff[2, :3])))  # the voxel axis that runs foot to head
            vox = float(np.linalg.norm(aff[:3, ax]))
            step = max(2, int(round(5.0 / vox)))
            # each thick slice is the mean of the thin slices it covers (the partial volume of a thick slice)
            img = ndi.uniform_filter1d(data, step, axis=ax).take(np.arange(step // 2, data.shape[ax], step), axis=ax)
            mk = ndi.uniform_filter1d(m.astype(np.float32), step, axis=ax).take(
                np.arange(step // 2, data.shape[ax], step), axis=ax) > 0.5
            a = aff.copy()
            a[:3, ax] = aff[:3, ax] * step
            a[:3, 3] = aff[:3, 3] + aff[:3, ax] * (step // 2)
        elif case == "noisy":
            img = data + rng.normal(0, 0.12 * data[m].mean(), data.shape).astype(np.float32)
        elif case == "low contrast":
            w = np.percentile(data[m], 95)
            img = np.where(m, 0.5 * data + 0.5 * w, data)
        elif case == "strong bias field":
            world = sio.voxel_to_world(aff, np.argwhere(np.ones(data.shape, bool)))
            centre = world.mean(0)
            ramp = ((world - centre) @ np.array([0.6, 0.8, 0.0])) / 90.0
            img = data * (1.0 + 0.6 * np.clip(ramp, -1, 1)).reshape(data.shape).astype(np.float32)
        elif case == "7T as input":
            if t7 is None or t7_mask is None:
                continue
            v7 = sio.load_volume(t7)
            img, a, mk = v7.data, v7.affine, sio.load_volume(t7_mask, dtype=None).data > 0
        name = case.replace(" ", "-")
        rows.append({"case": case, "expect": CASES[case][0], "what": CASES[case][1],
                     "path": _save(out / f"{name}.nii.gz", img, a),
                     "mask": _save(out / f"{name}_mask.nii.gz", mk.astype(np.float32), a)})
    return pd.DataFrame(rows)


def run_gallery(inputs: pd.DataFrame, model, out_dir: PathLike, *, age: float, sex: str,
                impaired: Optional[bool], **options) -> pd.DataFrame:
    """Predict every input of :func:`gallery_inputs` (or any table with ``case, expect, path, mask``) with
    :func:`synth7t.inference.predict_file` and record the outcome.

    Args:
        model: a :class:`synth7t.inference.Predictor` or a model folder.
        options: more :func:`synth7t.inference.predict_file` options (``preprocess_preset``, ``device``, ...).

    Returns:
        The input table with ``outcome`` (refused, warned, predicted), ``ok`` (outcome as intended), ``score`` (the
        out-of-distribution score; NaN when refused), ``checks`` (the checks that did not pass) and ``reason`` (the
        refusal's or the warnings' first line).
    """
    import warnings

    from ..inference import Predictor, predict_file
    from ..preprocess.input_checks import InputRefused, InputWarning, summarise

    model = Predictor.of(model, options.get("device", "cpu"))
    out = Path(out_dir)
    rows = []
    for r in inputs.itertuples(index=False):
        row = r._asdict()
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always", InputWarning)
            try:
                rec = predict_file(r.path, out / f"{Path(r.path).name.split('.nii')[0]}_synth7t.nii.gz", model,
                                   age=age, sex=sex, impaired=impaired, t3_mask=r.mask, **options)
            except InputRefused as exc:
                lines = str(exc).splitlines()[1:]
                rows.append({**row, "outcome": "refused", "score": float("nan"),
                             "checks": "; ".join(ln.strip().split(":")[0] + ":refuse" for ln in lines),
                             "reason": lines[0].strip() if lines else str(exc), "output": ""})
                continue
        said = [str(w.message) for w in seen if issubclass(w.category, InputWarning)]
        ood = rec.get("ood") or {}
        rows.append({**row, "outcome": "warned" if said else "predicted",
                     "score": ood.get("score") if ood.get("score") is not None else float("nan"),
                     "checks": summarise(rec.get("input_checks", [])),
                     "reason": said[0].split(": ", 1)[-1] if said else "", "output": rec["output"]})
    table = pd.DataFrame(rows)
    table["ok"] = table["outcome"] == table["expect"]
    return table


def plot_gallery(table: pd.DataFrame, *, title: str = ""):
    """One axial slice through the middle of each input, titled with its case, outcome and score."""
    import matplotlib.pyplot as plt

    n = len(table)
    cols = min(n, 4)
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.4 * rows), squeeze=False)
    for ax, r in zip(axes.ravel(), table.itertuples(index=False)):
        v = sio.load_volume(r.path, reorient=True)
        k = v.data.shape[2] // 2
        sl = v.data[:, :, k].T
        lo, hi = np.percentile(sl, [1, 99.5])
        ax.imshow(sl, cmap="gray", origin="lower", vmin=lo, vmax=hi, aspect="auto")
        score = "" if not np.isfinite(r.score) else f", score {r.score:.1f}"
        colour = {"refused": "tab:red", "warned": "tab:orange", "predicted": "tab:green"}[r.outcome]
        ax.set_title(f"{r.case}\n{r.outcome}{score}", fontsize=9, color=colour)
        ax.axis("off")
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
