"""Ground-truth checks of the simulated demo cohort: does its 7T hold anatomy its 3T lacks?

The simulator (:mod:`synth7t.simulate.demo`) knows every subject's anatomy exactly, so the premise of the paper can be
checked on the data before any model is trained:

- :func:`aligned_3t` puts a subject's raw 3T on its 7T grid through the *known* head pose (no registration, so no
  registration error enters the comparison);
- :func:`premise_inputs` writes the brain of the 7T and of the aligned 3T (ground-truth brain mask) for the
  segmentation batch; :func:`synth7t.evaluation.regional.truth_dice` then scores each segmentation against the truth outside
  the artefact slices and :func:`synth7t.evaluation.regional.premise_margins` says, per subject, whether the 7T segments better;
- :func:`plot_mtl_truth` draws medial-temporal-lobe close-ups of both with the ground-truth outlines;
- :func:`ground_truth_volumes` measures the simulated atrophy.

Only notebooks and tests import this module: it reads the simulator's own sidecars.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Optional, Sequence, Union

import numpy as np
import pandas as pd
from scipy import ndimage as ndi

from ..data import io as sio
from .demo import FIELD_3T, FIELD_7T, SNR_FIELD_EXPONENT, DemoConfig, simulated_pose
from ..evaluation.regional import PREMISE_STRUCTURES, premise_margins, truth_dice
from ..data.templates import LABELS

PathLike = Union[str, Path]


def aligned_3t(subject) -> tuple[np.ndarray, np.ndarray]:
    """A subject's raw 3T resampled (trilinear) onto its raw 7T grid through the simulated head pose.

    Args:
        subject: a :class:`synth7t.data.layout.Subject` of the demo cohort (3T sidecar with ``Pose3T*`` entries).

    Returns:
        ``(data, affine)``: float32 array of the 7T grid's shape and the 7T affine.
    """
    pose = simulated_pose(subject, "aligned_3t needs")
    t3 = sio.load_volume(subject.t3)
    t7 = sio.read_nifti(subject.t7)
    shape7, aff7 = t7.shape[:3], t7.affine
    # 7T voxel -> subject mm (7T frame = subject frame) -> 3T scanner mm (inverse pose) -> 3T voxel
    to3 = np.linalg.inv(t3.affine) @ np.linalg.inv(pose) @ aff7
    out = ndi.affine_transform(t3.data, to3[:3, :3], offset=to3[:3, 3], output_shape=shape7, order=1,
                               mode="constant", cval=0.0)
    return out.astype(np.float32), aff7


def premise_inputs(dataset, keys: Sequence[str], out_dir: PathLike) -> pd.DataFrame:
    """Write, per subject, the brain of the raw 7T and of the aligned 3T (both cut by the 7T's ground-truth brain
    mask) and return the segmentation items with the truth and the artefact slices.

    Returns:
        ``key, image_type (3T|7T), path, truth, excluded`` (one row per image).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for key in keys:
        s = dataset[key]
        if s.t7_labels is None or s.t7_mask is None:
            raise ValueError(f"{key}: the premise check needs the ground-truth labels and brain mask of the demo")
        t7 = sio.load_volume(s.t7)
        mask = sio.load_volume(s.t7_mask, dtype=None).data > 0
        t3, _ = aligned_3t(s)
        for name, data in (("7T", t7.data), ("3T", t3)):
            path = out / f"{key}_{name}_brain.nii.gz"
            sources = [s.t7, s.t3, s.t7_mask]
            # rewritten when the cohort was regenerated since (else a rerun keeps it, and its segmentation)
            if not path.is_file() or path.stat().st_mtime_ns < max(Path(p).stat().st_mtime_ns for p in sources):
                sio.save_volume(path, np.where(mask, data, 0).astype(np.float32), t7.affine)
            rows.append({"key": key, "image_type": name, "path": str(path), "truth": str(s.t7_labels),
                         "excluded": [tuple(r) for r in s.artefact_slices]})
    return pd.DataFrame(rows)


def check_premise(dataset, keys: Sequence[str], out_dir: PathLike, *, backend: str = "atlas",
                  seg_config=None, n_jobs: int = 1) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Segment the raw 7T and the aligned raw 3T of ``keys`` and score both against the ground truth.

    Args:
        dataset: the demo cohort (:class:`synth7t.data.layout.Dataset`).
        keys: subjects to check (the held-out ones).
        out_dir: folder for the inputs (``inputs/``) and the segmentations (``segmentations/``); finished work is
            reused on a rerun.
        backend, seg_config, n_jobs: as :func:`synth7t.segment.segment_batch`.

    Returns:
        ``(scores, margins, segmentations)``: :func:`synth7t.evaluation.regional.truth_dice` (outside the artefact slices),
        :func:`synth7t.evaluation.regional.premise_margins` (7T minus 3T per subject, ``holds``) and the batch status table.
    """
    from ..segment import segment_batch

    out = Path(out_dir)
    items = premise_inputs(dataset, keys, out / "inputs")
    seg = segment_batch(items[["key", "image_type", "path"]], out / "segmentations", backend=backend,
                        config=seg_config, n_jobs=n_jobs, progress=True)
    failed = seg[seg["status"] == "failed"]
    if len(failed):
        raise RuntimeError("premise segmentations failed: " + "; ".join(f"{r.key}/{r.image_type}: {r.reason}"
                                                                      for r in failed.itertuples()))
    paths = {(r.key, r.image_type): r.path for r in seg.itertuples()}
    scores = truth_dice(paths, dict(zip(items["key"], items["truth"])),
                        excluded=dict(zip(items["key"], items["excluded"])))
    return scores, premise_margins(scores), seg


def ratio_table(measures: pd.DataFrame, config: Optional[DemoConfig] = None) -> pd.DataFrame:
    """The 3T-vs-7T ratios measured on the simulated images beside the published values they target.

    Args:
        measures: :func:`synth7t.simulate.measure.measure_cohort` of some subjects of the cohort.
        config: the cohort's generator settings.

    Returns:
        One row per quantity: ``published`` (the paper's voxels and the field-strength law), ``source``,
        ``design`` (what :meth:`DemoConfig.ratios` builds in), ``simulated`` (measured on the images: mean over the
        subjects), ``simulated_sd`` and ``n_subjects``.
    """
    from .measure import measured_ratios

    cfg = config or DemoConfig()
    measured = measured_ratios(measures, cfg).groupby("quantity")["measured"]
    paper = DemoConfig(voxel_7t=0.7, voxel_3t=1.0)
    per_volume = (FIELD_7T / FIELD_3T) ** SNR_FIELD_EXPONENT
    rows = [
        ("effective resolution, FWHM 3T / 7T", "resolution_fwhm_3t_over_7t", 1.0 / 0.7,
         "voxels of 1 mm (3T) and 0.7 mm (7T): Gicquel et al., 2.1; measured: edge width at the ventricle wall"),
        ("SNR per unit volume, 7T / 3T", "snr_per_volume_7t_over_3t", per_volume,
         f"SNR grows as B0^{SNR_FIELD_EXPONENT}: Pohmann, Speck & Scheffler 2016, Magn Reson Med 75:801"),
        ("SNR per voxel, 7T / 3T", "snr_per_voxel_7t_over_3t", paper.ratios()["snr_per_voxel_7t_over_3t"],
         "the line above at the paper's voxel volumes (0.343 vs 1 mm³); measured: white matter"),
        ("grey/white CNR per voxel, 7T / 3T", "cnr_per_voxel_7t_over_3t", paper.ratios()["snr_per_voxel_7t_over_3t"],
         "the same tissue contrast at both fields, so the SNR ratio; measured: cortex against white matter"),
    ]
    design = cfg.ratios()
    return pd.DataFrame([{"quantity": name, "published": pub, "source": src, "design": design[key],
                          "simulated": float(measured.mean()[key]), "simulated_sd": float(measured.std()[key]),
                          "n_subjects": int(measured.count()[key])} for name, key, pub, src in rows])


def plot_mtl_truth(images: Mapping[str, np.ndarray], truth: np.ndarray, *,
                   segmentations: Optional[Mapping[str, np.ndarray]] = None, side: str = "left", size: int = 40,
                   title: Optional[str] = None):
    """Coronal and axial close-ups of the amygdala and hippocampus in each image, one display window per image,
    with the ground-truth outlines (yellow) and, when given, each image's own segmentation (red).

    Args:
        images: ``{name: (X, Y, Z) array}`` on the truth's grid (RAS).
        truth: ground-truth label map.
        segmentations: ``{name: label map}`` on the same grid (optional).
        side: ``"left"`` or ``"right"`` structures.
        size: side of the square crops in voxels.
        title: figure title.

    Returns:
        The matplotlib figure.
    """
    import matplotlib.pyplot as plt

    if side not in ("left", "right"):
        raise ValueError(f"side must be 'left' or 'right', got {side!r}")
    ids = [ids[0] if side == "left" else ids[1] for ids in PREMISE_STRUCTURES.values()]
    where = np.argwhere(np.isin(truth, ids))
    if not len(where):
        raise ValueError("the truth holds no amygdala or hippocampus voxels")
    c = np.round(where.mean(0)).astype(int)
    h = size // 2
    crop = [slice(max(int(v) - h, 0), int(v) + h) for v in c]
    names = list(images)
    fig, axes = plt.subplots(2, len(names), figsize=(2.9 * len(names), 5.8), squeeze=False)
    for col, name in enumerate(names):
        img = np.asarray(images[name])
        brain = img[truth > 0]
        lo, hi = np.percentile(brain, [1, 99.5]) if brain.size else (0, 1)
        for row, (plane, take) in enumerate((("coronal", (crop[0], int(c[1]), crop[2])),
                                             ("axial", (crop[0], crop[1], int(c[2]))))):
            ax = axes[row, col]
            ax.imshow(img[take].T, cmap="gray", origin="lower", vmin=lo, vmax=hi, interpolation="nearest")
            for lab, colour in ((truth, "yellow"), ((segmentations or {}).get(name), "tab:red")):
                if lab is not None:
                    for i in ids:
                        m = np.asarray(lab)[take].T == i
                        if m.any():
                            ax.contour(m, levels=[0.5], colors=colour, linewidths=0.9)
            ax.set_xticks([]), ax.set_yticks([])
            ax.set_title(f"{name} · {plane}", fontsize=9)
    fig.suptitle(f"{title or f'{side} amygdala and hippocampus'}\ntruth (yellow), segmentation (red)", fontsize=9)
    fig.tight_layout()
    return fig


def ground_truth_volumes(dataset, labels: Sequence[int] = (17, 18, 53, 54, 4, 43)) -> pd.DataFrame:
    """Volumes (mm³) of chosen structures in each subject's label map, with demographics.

    Args:
        dataset: a :class:`synth7t.data.layout.Dataset` whose subjects have ``t7_labels``.
        labels: FreeSurfer label numbers to measure.

    Returns:
        One row per subject: ``participant_id, age, sex, diagnosis`` and one column per label name.
    """
    rows = []
    for s in dataset:
        if s.t7_labels is None:
            raise ValueError(f"{s.key}: no label map (_acq-7T_dseg.nii.gz) to measure")
        img = sio.read_nifti(s.t7_labels, check_values=False)
        lab = np.asarray(img.dataobj)
        vox = float(abs(np.linalg.det(img.affine[:3, :3])))
        counts = np.bincount(lab.ravel().astype(np.int64), minlength=max(labels) + 1)
        row = {"participant_id": s.participant_id, "age": s.age, "sex": s.sex, "diagnosis": s.diagnosis}
        row.update({LABELS[k]: counts[k] * vox for k in labels})
        rows.append(row)
    return pd.DataFrame(rows)
