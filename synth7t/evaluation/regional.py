"""Structure segmentation against a reference (paper §2.8.3, §3.3, Figure 5).

The paper segmented the left and right amygdala automatically on the 3T, the synthetic U-Net and the synthetic
GAN U-Net images, aligned each image to the space of a manual reference segmentation (affine registration, labels
resampled by nearest neighbour, §2.3), and compared with Dice; the synthetic images gave higher Dice than the 3T.
This module does the same for any structures of :data:`synth7t.segment.FREESURFER_LABELS` (amygdala and, beyond the
paper, hippocampus by default):

- :func:`structure_labels` names structures by their FreeSurfer labels, :func:`reference_paths` finds a
  subject's reference (a manual segmentation, or the demo's ground truth);
- :func:`align_labels` registers an image to the reference image (ANTs affine, Mattes MI) and carries its label map
  into the reference grid (``genericLabel`` or nearest neighbour);
- :func:`structure_dice` scores one label map against the reference per structure, :func:`reference_dice` every
  image of a table, :func:`dice_summary` sums it up;
- :func:`best_per_subject` counts, per structure, which image type scored best for each subject;
- :func:`plot_dice_differences` and :func:`plot_outlines` draw the Figure 5 analogue,
  :func:`plot_volumes_by_diagnosis` the regional volumes of each image type by diagnosis.

Chapter 04's whole-brain Dice (each image's segmentation against the real 7T's, label by label) is
:func:`segmentation_dice`; :func:`structure_centre` finds where to look.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Mapping, Optional, Sequence, Union

import numpy as np
import pandas as pd

from ..data import io as sio
from ..preprocess.config import RegistrationConfig

PathLike = Union[str, Path]

#: structures scored by default: name -> FreeSurfer label numbers
STRUCTURES = {
    "Left-Amygdala": (18,), "Right-Amygdala": (54,), "Left-Hippocampus": (17,), "Right-Hippocampus": (53,),
}


def _volume(x, what: str) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(x, (str, Path)):
        v = sio.load_volume(x, dtype=None)
        return v.data, v.affine
    data, affine = x
    return np.asarray(data), np.asarray(affine, float)


#: The registration that carries an image (and its labels) onto a reference image (§2.8.3, as the paper: affine, no
#: SyN) at 2 mm: :func:`align_labels` and :func:`synth7t.studies.lone.align_to_references` (their ``transform`` and
#: ``registration_spacing`` arguments change it).
REFERENCE_ALIGNMENT = RegistrationConfig(
    affine_iterations=(100, 50, 20), affine_shrink_factors=(4, 2, 1), affine_smoothing_sigmas=(2, 1, 0),
    syn_iterations=(), syn_shrink_factors=(), syn_smoothing_sigmas=(), spacing=2.0)


def align_labels(image, labels, reference, *, transform: str = "Affine",
                 interpolation: str = "nearestNeighbor", registration_spacing: Optional[float] = 2.0) -> np.ndarray:
    """Carry a label map into the grid of a reference image through an affine registration of the images.

    Args:
        image: the image the labels were segmented on: a NIfTI path or ``(array, affine)``.
        labels: its label map (path or ``(array, affine)``), on the image's grid.
        reference: the reference image (path or ``(array, affine)``), e.g. the 7T that a manual segmentation
            was drawn on.
        transform: ``"Affine"`` (the paper's) or ``"Rigid"``.
        interpolation: ``"nearestNeighbor"`` (the paper's) or ``"genericLabel"`` (smoother, much slower).
        registration_spacing: the images are registered at this voxel size (mm; never upsampled; ``None``: as
            they are); the transform lives in world coordinates and is applied to the labels at full resolution.
            At 2 mm an affine of two 0.7 mm brains takes seconds instead of a minute and a half.

    Returns:
        The label map on the reference grid (int16).
    """
    from ..preprocess import apply_transforms, coarsen, register

    img, img_aff = _volume(image, "image")
    lab, lab_aff = _volume(labels, "labels")
    ref, ref_aff = _volume(reference, "reference")
    if lab.shape != img.shape or not np.allclose(lab_aff, img_aff, atol=1e-3):
        raise ValueError(f"labels {lab.shape} are not on the image's grid {img.shape}")
    if transform not in ("Affine", "Rigid"):
        raise ValueError(f"transform must be 'Affine' or 'Rigid', got {transform!r}")
    if interpolation not in ("genericLabel", "nearestNeighbor"):
        raise ValueError(f"interpolation must be 'genericLabel' or 'nearestNeighbor', got {interpolation!r}")
    cfg = REFERENCE_ALIGNMENT.replace(transform=transform, spacing=registration_spacing)
    with tempfile.TemporaryDirectory(prefix="synth7t-align-") as tmp:
        fixed, fixed_aff = coarsen(np.asarray(ref, np.float32), ref_aff, cfg.spacing)
        moving, moving_aff = coarsen(np.asarray(img, np.float32), img_aff, cfg.spacing)
        reg = register(fixed, fixed_aff, moving, moving_aff, Path(tmp) / "reg_", cfg)
        out = apply_transforms(lab.astype(np.float32), lab_aff, ref.shape, ref_aff, reg["transforms"],
                               interpolation)
    return np.rint(out).astype(np.int16)


def structure_dice(reference: np.ndarray, labels: np.ndarray,
                   structures: Mapping[str, Sequence[int]] = STRUCTURES) -> dict[str, float]:
    """Dice of each structure (a set of label numbers) between a reference label map and another on its grid.

    Returns:
        ``{structure: Dice}``; NaN where the structure is absent from both maps.
    """
    ref, lab = np.asarray(reference), np.asarray(labels)
    if ref.shape != lab.shape:
        raise ValueError(f"label maps differ in shape: {ref.shape} vs {lab.shape} (align them first)")
    out = {}
    for name, ids in structures.items():
        a, b = np.isin(ref, ids), np.isin(lab, ids)
        denom = int(a.sum()) + int(b.sum())
        out[name] = float(2 * np.logical_and(a, b).sum() / denom) if denom else float("nan")
    return out


def best_per_subject(table: pd.DataFrame, *, value: str = "dice", by: str = "structure",
                     subject: str = "key", condition: str = "image_type") -> pd.DataFrame:
    """How often each image type gave the best score per subject, for each ``by`` group (ties count for all).

    Returns:
        A table ``by x image type`` of counts.
    """
    rows = []
    for (grp, subj), g in table.dropna(subset=[value]).groupby([by, subject]):
        best = g[value].max()
        for c in g.loc[np.isclose(g[value], best), condition]:
            rows.append({by: grp, condition: c})
    counts = pd.DataFrame(rows, columns=[by, condition])
    out = counts.groupby([by, condition]).size().unstack(fill_value=0)
    for c in table[condition].unique():
        if c not in out.columns:
            out[c] = 0
    return out[list(dict.fromkeys(table[condition]))]


def plot_dice_differences(table: pd.DataFrame, *, baseline: str = "3T", value: str = "dice",
                          structures: Optional[Sequence[str]] = None, axes=None):
    """Figure 5 analogue: per structure, violins of each image type's Dice minus the baseline's (left) and the
    per-subject Dice of every image type joined by lines (right).

    Args:
        table: tidy ``key, image_type, structure, dice``.
        baseline: the image type differences are taken from.
        structures: structures to draw (default all in the table).

    Returns:
        The matplotlib figure.
    """
    import matplotlib.pyplot as plt

    structures = list(structures or dict.fromkeys(table["structure"]))
    types = list(dict.fromkeys(table["image_type"]))
    others = [t for t in types if t != baseline]
    if baseline not in types:
        raise ValueError(f"baseline {baseline!r} is not an image type of the table ({', '.join(types)})")
    if axes is None:
        fig, axes = plt.subplots(2, len(structures), figsize=(3.1 * len(structures), 6.2), squeeze=False)
    else:
        axes = np.asarray(axes).reshape(2, len(structures))
        fig = axes[0, 0].figure
    for c, s in enumerate(structures):
        wide = table[table.structure == s].pivot(index="key", columns="image_type", values=value)
        ax = axes[0, c]
        diffs = [(wide[t] - wide[baseline]).dropna().to_numpy() for t in others]
        pos = np.arange(1, len(others) + 1)
        if all(len(d) > 1 for d in diffs):
            ax.violinplot(diffs, positions=pos, showmeans=True)
        for p, d in zip(pos, diffs):
            ax.scatter(np.full(len(d), p), d, s=10, color="k", zorder=3)
        ax.axhline(0, color="grey", lw=0.8, ls="--")
        ax.set_xticks(pos, others, rotation=20)
        ax.set_title(s, fontsize=9)
        if c == 0:
            ax.set_ylabel(f"{value} - {value}({baseline})")
        ax = axes[1, c]
        cols = [t for t in types if t in wide.columns]
        for _, row in wide[cols].iterrows():
            ax.plot(range(len(cols)), row.to_numpy(), "o-", color="tab:blue", alpha=0.5, ms=3, lw=0.8)
        ax.set_xticks(range(len(cols)), cols, rotation=20)
        if c == 0:
            ax.set_ylabel(value)
    fig.tight_layout()
    return fig


def plot_outlines(image: np.ndarray, reference: np.ndarray, labels: Mapping[str, np.ndarray], *,
                  structures: Mapping[str, Sequence[int]] = STRUCTURES, coronal: Optional[int] = None,
                  margin: int = 12, axes=None):
    """A coronal close-up of the reference image with the reference outline (yellow) and each image type's
    outline of the same structures (one panel per type).

    Args:
        image: the reference image ``(X, Y, Z)`` (RAS grid).
        reference: the reference label map on that grid.
        labels: ``{image type: label map on the reference grid}``.
        structures: which labels to outline.
        coronal: coronal slice index (default: through the centre of the structures).
        margin: voxels shown around the structures' extent (left-right and inferior-superior).

    Returns:
        The matplotlib figure.
    """
    import matplotlib.pyplot as plt

    ids = sorted({i for v in structures.values() for i in v})
    target = np.argwhere(np.isin(reference, ids))
    if not len(target):
        raise ValueError("the reference holds none of the structures to outline")
    cy = int(np.round(target[:, 1].mean()))
    y = int(cy if coronal is None else coronal)
    # the structures' extent plus a margin: left and right structures both fit, whole
    lo, hi = target.min(0), target.max(0)
    x0, x1 = max(int(lo[0]) - margin, 0), min(int(hi[0]) + margin + 1, image.shape[0])
    z0, z1 = max(int(lo[2]) - margin, 0), min(int(hi[2]) + margin + 1, image.shape[2])
    names = list(labels)
    if axes is None:
        fig, axes = plt.subplots(1, len(names), figsize=(2.8 * len(names), 3.0), squeeze=False)
        axes = axes[0]
    else:
        fig = np.asarray(axes).ravel()[0].figure
    sl = image[x0:x1, y, z0:z1].T
    ref = np.isin(reference[x0:x1, y, z0:z1].T, ids)
    for ax, name in zip(np.asarray(axes).ravel(), names):
        ax.imshow(sl, cmap="gray", origin="lower", interpolation="nearest")
        if ref.any():
            ax.contour(ref, levels=[0.5], colors="yellow", linewidths=1.0)
        m = np.isin(np.asarray(labels[name])[x0:x1, y, z0:z1].T, ids)
        if m.any():
            ax.contour(m, levels=[0.5], colors="tab:red", linewidths=1.0)
        ax.set_title(name, fontsize=9)
        ax.set_xticks([]), ax.set_yticks([])
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------------------------ tables of many images


def structure_labels(structures: Sequence[str]) -> dict[str, tuple[int, ...]]:
    """The FreeSurfer label numbers of each named structure (:data:`synth7t.segment.FREESURFER_LABELS`).

    Raises:
        ValueError: a name that no label carries (the message lists the known names).
    """
    from ..segment import FREESURFER_LABELS

    out = {s: tuple(k for k, v in FREESURFER_LABELS.items() if v == s) for s in structures}
    bad = [s for s, ids in out.items() if not ids]
    if bad:
        raise ValueError(f"unknown structure(s) {bad}; known: {', '.join(FREESURFER_LABELS.values())}")
    return out


def reference_paths(key: str, record: Optional[Mapping], derivatives: PathLike,
                    reference_dir: PathLike = "") -> tuple[Path, Path]:
    """The reference of one subject: ``(reference image, reference label map)``.

    Args:
        key: the acquisition key (``sub-<id>[_ses-<s>]``).
        record: its preprocessing record (:func:`synth7t.preprocess.load_records`); its ``files`` name the 7T
            and, on the demo cohort, the ground-truth label map.
        derivatives: the preprocessing outputs the record's files are relative to.
        reference_dir: a folder of manual segmentations, ``<key>_T1w.nii.gz`` and ``<key>_dseg.nii.gz``; when
            given it is used instead of the record.

    Raises:
        FileNotFoundError: the manual files are missing, or the record has no label map and no folder is given.
    """
    if reference_dir:
        img, lab = Path(reference_dir) / f"{key}_T1w.nii.gz", Path(reference_dir) / f"{key}_dseg.nii.gz"
        if not (img.is_file() and lab.is_file()):
            raise FileNotFoundError(f"{key}: reference needs {img} and {lab}")
        return img, lab
    files = (record or {}).get("files", {})
    if "labels" not in files or "t7" not in files:
        raise FileNotFoundError(f"{key}: no ground-truth label map in the preprocessing outputs; give reference_dir")
    return Path(derivatives) / files["t7"], Path(derivatives) / files["labels"]


def reference_dice(images: pd.DataFrame, seg_paths: Mapping[tuple[str, str], PathLike],
                   references: Mapping[str, tuple[PathLike, PathLike]],
                   structures: Mapping[str, Sequence[int]] = STRUCTURES, **align) -> tuple[pd.DataFrame, dict]:
    """Structure Dice of every image's segmentation against its subject's reference (the paper's Figure 5).

    Each segmentation is carried into the reference grid by :func:`align_labels` (image registered to the
    reference image), then scored by :func:`structure_dice`.

    Args:
        images: one row per image: ``key``, ``image_type``, ``path`` and ``name`` (the display name; default
            ``image_type``).
        seg_paths: ``{(key, image_type): label map}`` on each image's grid.
        references: ``{key: (reference image, reference label map)}`` (:func:`reference_paths`).
        structures: ``{name: label numbers}``.
        **align: further arguments of :func:`align_labels`.

    Returns:
        ``(dice, aligned)``: the tidy table ``key, image_type (display name), structure, dice`` and the aligned
        label maps ``{(key, name): array}``.
    """
    rows, aligned = [], {}
    for r in images.itertuples(index=False):
        name = getattr(r, "name", r.image_type)
        ref_img, ref_lab = references[r.key]
        lab = align_labels(r.path, seg_paths[(r.key, r.image_type)], ref_img, **align)
        aligned[(r.key, name)] = lab
        ref = sio.load_volume(ref_lab, dtype=None).data
        rows += [{"key": r.key, "image_type": name, "structure": s, "dice": d}
                 for s, d in structure_dice(ref, lab, structures).items()]
    return pd.DataFrame(rows, columns=["key", "image_type", "structure", "dice"]), aligned


def dice_summary(dice: pd.DataFrame, order: Optional[Sequence[str]] = None) -> pd.DataFrame:
    """Mean, SD and count of the Dice per structure (rows) and image type (column groups, in ``order``)."""
    summary = dice.groupby(["structure", "image_type"])["dice"].agg(["mean", "std", "count"])
    summary = summary.unstack("image_type").swaplevel(axis=1).sort_index(axis=1)
    return summary.reindex(columns=list(order), level=0) if order is not None else summary


def segmentation_dice(images: pd.DataFrame, seg_paths: Mapping[tuple[str, str], PathLike], *,
                      reference: str = "7T", truth: Optional[Mapping[str, PathLike]] = None,
                      ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Whole-brain Dice of every image's segmentation against the segmentation of the real 7T (paper §2.8.1).

    Labels are those of the 7T's segmentation (background left out); the mean leaves out the cerebellum
    (:func:`synth7t.evaluation.metrics.mean_dice`). When ``truth`` gives a ground-truth label map (the demo cohort), each
    image, the real 7T included, is also scored against it.

    Args:
        images: one row per image on one grid per subject: ``key``, ``image_type`` and ``name`` (display name;
            default ``image_type``); the ``reference`` type among them.
        seg_paths: ``{(key, image_type): label map}``.
        reference: the image type whose segmentation is the reference.
        truth: ``{key: ground-truth label map}`` on the same grid (optional).

    Returns:
        ``(scores, per_label)``: ``key, image_type, mean_dice[, mean_dice_truth]`` (no ``mean_dice`` for the
        reference itself), and ``key, image_type, label, region, dice``.
    """
    from .metrics import dice as label_dice
    from .metrics import mean_dice
    from ..segment import FREESURFER_LABELS

    truth = truth or {}
    rows, per_label = [], []
    for key, group in images.groupby("key", sort=True):
        ref_seg = sio.load_volume(seg_paths[(key, reference)], dtype=None).data
        true_seg = sio.load_volume(truth[key], dtype=None).data if truth.get(key) else None
        labels = [int(v) for v in np.unique(ref_seg) if v != 0]
        for r in group.itertuples(index=False):
            name = getattr(r, "name", r.image_type)
            seg = sio.load_volume(seg_paths[(key, r.image_type)], dtype=None).data
            rec = {"key": key, "image_type": name}
            if r.image_type != reference:
                d = label_dice(ref_seg, seg, labels)
                rec["mean_dice"] = mean_dice(d)
                per_label += [{"key": key, "image_type": name, "label": lab, "dice": v} for lab, v in d.items()]
            if true_seg is not None:
                rec["mean_dice_truth"] = mean_dice(label_dice(true_seg, seg, labels))
            rows.append(rec)
    per_label = pd.DataFrame(per_label, columns=["key", "image_type", "label", "dice"])
    per_label.insert(3, "region", [FREESURFER_LABELS.get(int(i), str(i)) for i in per_label["label"]])
    return pd.DataFrame(rows), per_label


# the structures the premise is checked on (left and right scored apart, then averaged)
PREMISE_STRUCTURES = {"amygdala": (18, 54), "hippocampus": (17, 53)}


def truth_dice(seg_paths: Mapping[tuple[str, str], PathLike], truth: Mapping[str, PathLike], *,
               excluded: Optional[Mapping[str, Sequence[Sequence[int]]]] = None, axis: int = 2) -> pd.DataFrame:
    """Dice of segmentations against ground-truth label maps, outside excluded (artefact) slices.

    Args:
        seg_paths: ``{(key, image_type): label map}`` on the grid of ``truth[key]``.
        truth: ``{key: ground-truth label map}``.
        excluded: ``{key: [(first, last), ...]}`` inclusive slice ranges along ``axis`` left out of both maps.
        axis: the slice axis of ``excluded`` (2: axial on the 7T/grid).

    Returns:
        One row per segmentation: ``key, image_type, mean_dice`` (every label of the truth but the cerebellum, as
        :func:`synth7t.evaluation.metrics.mean_dice`), one column per :data:`PREMISE_STRUCTURES` entry (mean of the left and
        right Dice) and ``n_slices`` (slices scored).
    """
    from .metrics import dice as label_dice
    from .metrics import mean_dice

    excluded = excluded or {}
    rows, cache = [], {}
    for (key, image_type), path in sorted(seg_paths.items()):
        if key not in truth:
            raise KeyError(f"{key}: no ground-truth label map given")
        if key not in cache:
            cache = {key: sio.load_volume(truth[key], dtype=None).data}
        ref = cache[key]
        seg = sio.load_volume(path, dtype=None).data
        if seg.shape != ref.shape:
            raise ValueError(f"{key}/{image_type}: segmentation shape {seg.shape} differs from the truth's {ref.shape}")
        keep = np.ones(ref.shape[axis], bool)
        for a, b in excluded.get(key) or []:
            keep[int(a):int(b) + 1] = False
        take = [slice(None)] * ref.ndim
        take[axis] = keep
        r, g = ref[tuple(take)], seg[tuple(take)]
        scores = label_dice(r, g, [int(v) for v in np.unique(r) if v != 0])
        row = {"key": key, "image_type": image_type, "mean_dice": mean_dice(scores)}
        for name, ids in PREMISE_STRUCTURES.items():
            row[name] = float(np.nanmean([scores.get(i, np.nan) for i in ids]))
        rows.append(row | {"n_slices": int(keep.sum())})
    return pd.DataFrame(rows)


def premise_margins(scores: pd.DataFrame, *, better: str = "7T", worse: str = "3T",
                    columns: Sequence[str] = ("mean_dice", *PREMISE_STRUCTURES)) -> pd.DataFrame:
    """Per subject, ``better`` minus ``worse`` for each score column of :func:`truth_dice`, and whether every
    margin is positive (``holds``)."""
    wide = scores.pivot(index="key", columns="image_type", values=list(columns))
    missing = {better, worse} - set(scores["image_type"])
    if missing:
        raise ValueError(f"no {', '.join(sorted(missing))} rows to compare")
    out = pd.DataFrame({c: wide[(c, better)] - wide[(c, worse)] for c in columns})
    out["holds"] = (out[list(columns)] > 0).all(axis=1)
    return out


def margin_summary(margins: pd.DataFrame, columns: Sequence[str] = ("mean_dice", *PREMISE_STRUCTURES)) -> pd.DataFrame:
    """The premise margins of :func:`premise_margins` over the subjects: per score column the mean, the SD
    (``ddof=1``; NaN for one subject), the smallest margin and how many subjects lead (``n_positive`` of ``n``).

    Raises:
        ValueError: no subjects, or a column missing.
    """
    if not len(margins):
        raise ValueError("no margins to summarise")
    missing = [c for c in columns if c not in margins.columns]
    if missing:
        raise ValueError(f"margins lack {', '.join(missing)}")
    m = margins[list(columns)].astype(float)
    return pd.DataFrame({"mean": m.mean(), "sd": m.std(ddof=1), "min": m.min(), "n_positive": (m > 0).sum(),
                         "n": len(m)})


def structure_centre(labels: np.ndarray, ids: Sequence[int] = (17, 18)) -> np.ndarray:
    """Voxel indices (int) of the centre of the voxels carrying ``ids`` (default: left hippocampus and amygdala);
    the array centre when none does."""
    idx = np.argwhere(np.isin(labels, list(ids)))
    return (np.round(idx.mean(0)) if len(idx) else np.array(np.shape(labels)) // 2).astype(int)


def plot_volumes_by_diagnosis(volumes: pd.DataFrame, participants: pd.DataFrame, image_types: Sequence[str], *,
                              columns: Optional[Mapping[str, Sequence[str]]] = None, axes=None):
    """Regional volumes by diagnosis, one panel per region, one colour per image type (side by side per group).

    Args:
        volumes: :func:`synth7t.segment.volumes_table` (``key``, ``image_type`` and one column per region, mL).
        participants: indexed by ``participant_id``, with ``diagnosis`` (:func:`synth7t.data.layout.read_participants`).
        image_types: image types to draw, in legend order.
        columns: ``{panel: regions summed}``; default hippocampus and lateral ventricles, left plus right.
        axes: one matplotlib axis per panel.

    Returns:
        The matplotlib figure.
    """
    import matplotlib.pyplot as plt

    from ..data.layout import DIAGNOSES
    from ..data.names import display_name

    columns = dict(columns or {"Hippocampus": ["Left-Hippocampus", "Right-Hippocampus"],
                               "Lateral-Ventricles": ["Left-Lateral-Ventricle", "Right-Lateral-Ventricle"]})
    missing = sorted({c for cols in columns.values() for c in cols} - set(volumes.columns))
    if missing:
        raise ValueError(f"volumes lack region column(s) {', '.join(missing)}")
    v = volumes.assign(participant_id=volumes["key"].str.split("_").str[0])
    v = v.join(participants[["diagnosis"]], on="participant_id")
    dx = [d for d in DIAGNOSES if d in set(v["diagnosis"])]
    if axes is None:
        fig, axes = plt.subplots(1, len(columns), figsize=(5 * len(columns), 3.4), squeeze=False)
        axes = axes[0]
    else:
        axes = np.ravel(axes)
        fig = axes[0].figure
    width = 0.8 / max(len(image_types), 1)
    for ax, (panel, cols) in zip(axes, columns.items()):
        for i, t in enumerate(image_types):
            sub = v[v["image_type"] == t]
            x = np.array([dx.index(d) for d in sub["diagnosis"] if d in dx], float)
            y = sub.loc[sub["diagnosis"].isin(dx), list(cols)].sum(axis=1).to_numpy(float)
            ax.scatter(x + (i - (len(image_types) - 1) / 2) * width, y, s=14, label=display_name(t))
        ax.set_xticks(range(len(dx)), dx)
        ax.set_ylabel(f"{panel} (mL)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
