"""The demo cohort's 3T/7T differences measured on its images, against the published proportions it targets.

:meth:`synth7t.simulate.demo.DemoConfig.ratios` says what the simulation is built to give (a 3T point spread 1/0.7 times
wider, a per-voxel SNR lower by the B0^1.65 law and the voxel volumes, the same grey/white contrast); this module
measures what the generated images hold, member by member, with the ground-truth labels of the subject telling
where white matter, cortex and ventricles are:

- **noise SD in white matter**: from differences of neighbouring voxels inside white matter eroded by two voxels
  (the signal is smooth there; the noise of a voxel is independent of its neighbour's, so the SD of a difference
  is sqrt(2) times the noise SD), leaving out differences beyond 5 robust SDs (a vessel, a lesion);
- **SNR**: the median white-matter intensity over that noise SD;
- **grey/white CNR**: (median white matter - median cortex) over the noise SD, the cortex taken at least
  :data:`CORTEX_DEPTH_MM` inside its label (away from its white-matter and CSF faces);
- **edge width**: the effective point-spread FWHM of the member, from its edge-spread function across the wall of
  the lateral ventricles (CSF against white matter, both sides wide): each voxel near the wall is placed at its
  signed distance from the true boundary (continuous, so a voxel grid samples the edge finely), and
  ``a + b * Phi((d - d0) / sigma)`` is fitted to the intensities (FWHM = 2.355 sigma). The template anatomy's own
  blur enters both members alike.

The 3T is measured on its own grid: the true labels and the distance map reach it through the simulated head pose
(:func:`synth7t.simulate.checks.aligned_3t`'s transform, inverted), so no interpolation of the 3T smooths its noise.
Only notebooks and tests import this module: it reads the simulator's sidecars.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import pandas as pd
from scipy import ndimage as ndi

from ..data import io as sio
from .demo import DemoConfig, simulated_pose

#: FreeSurfer labels of cerebral white matter, cortex and the lateral ventricles
WHITE_MATTER = (2, 41)
CORTEX = (3, 42)
VENTRICLES = (4, 43)
#: how deep inside its label a cortex voxel must lie (mm) to count as grey matter in the CNR
CORTEX_DEPTH_MM = 0.8
#: distances (mm) from the ventricle wall over which the edge-spread function is fitted
EDGE_RANGE_MM = 4.0
#: erosion (voxels of the member's grid) of the white matter used for the noise and the signal
WM_EROSION = 2

#: The measured quantities against their targets (:meth:`DemoConfig.ratios` keys) and the tolerance each is held to
#: in the tests (relative): noise and SNR are measured within a few percent; the CNR's target assumes no partial
#: volume, which the 3T's wider blur adds at the thin cortex; the edge width carries the template's own blur.
RATIO_KEYS = {"snr_per_voxel_7t_over_3t": "snr", "cnr_per_voxel_7t_over_3t": "cnr",
              "resolution_fwhm_3t_over_7t": "edge_fwhm_mm"}


def _pose_to_7t(subject) -> tuple[sio.Volume, np.ndarray, np.ndarray]:
    """The raw 3T (RAS), the 7T affine and the 4x4 map from 3T voxel indices to 7T voxel indices."""
    pose = simulated_pose(subject, "the measurements need")
    t3 = sio.load_volume(subject.t3)
    aff7 = sio.read_nifti(subject.t7).affine
    # 3T voxel -> 3T scanner mm -> subject mm (the 7T frame) -> 7T voxel
    return t3, aff7, np.linalg.inv(aff7) @ pose @ t3.affine


def _signed_distance(inside: np.ndarray, spacing: float) -> np.ndarray:
    """Signed distance (mm) to the boundary of ``inside``: negative inside, positive outside."""
    out = ndi.distance_transform_edt(~inside) * spacing
    inn = ndi.distance_transform_edt(inside) * spacing
    return np.where(inside, -inn, out).astype(np.float32)


def noise_sd(image: np.ndarray, region: np.ndarray) -> float:
    """Noise SD of ``image`` inside ``region`` from differences of neighbouring voxels (both in the region) along
    each axis: the SD of the differences within 5 robust scales (``1.4826 * MAD``) of their median, over sqrt(2);
    the median over the three axes.

    Args:
        image: a 3D volume whose signal is smooth inside ``region`` and whose noise is independent per voxel.
        region: boolean mask of the same shape.
    """
    if image.shape != region.shape:
        raise ValueError(f"image {image.shape} and region {region.shape} must have one shape")
    sds = []
    for ax in range(3):
        a = [slice(None)] * 3
        b = [slice(None)] * 3
        a[ax], b[ax] = slice(1, None), slice(None, -1)
        both = region[tuple(a)] & region[tuple(b)]
        d = (image[tuple(a)] - image[tuple(b)])[both].astype(np.float64)
        if d.size < 100:
            raise ValueError(f"the region holds {d.size} neighbouring pairs along axis {ax}; need at least 100")
        centred = d - np.median(d)
        # the median absolute deviation finds the scale (robust to a vessel or a lesion), the SD of what lies within
        # 5 of those scales measures it (the MAD alone is quantised when the file stores integers)
        scale = 1.4826 * np.median(np.abs(centred))
        kept = centred[np.abs(centred) <= 5.0 * max(scale, 1e-12)]
        sds.append(float(kept.std()) / np.sqrt(2.0))
    return float(np.median(sds))


def edge_fwhm(distance_mm: np.ndarray, intensity: np.ndarray, *, bin_mm: float = 0.1) -> float:
    """Effective point-spread FWHM (mm) from an edge: ``a + b * Phi((d - d0) / sigma)`` fitted to the per-bin
    medians of the intensities against their signed distances to the edge; FWHM = 2 sqrt(2 ln 2) sigma.

    Args:
        distance_mm: signed distance of each sample to the edge (one side negative).
        intensity: the samples' intensities.
        bin_mm: width of the distance bins.
    """
    from scipy.optimize import curve_fit
    from scipy.special import ndtr

    d = np.asarray(distance_mm, float).ravel()
    v = np.asarray(intensity, float).ravel()
    edges = np.arange(d.min(), d.max() + bin_mm, bin_mm)
    idx = np.digitize(d, edges)
    centres, medians = [], []
    for i in np.unique(idx):
        sel = idx == i
        if sel.sum() >= 5:
            centres.append(float(d[sel].mean()))
            medians.append(float(np.median(v[sel])))
    x, y = np.array(centres), np.array(medians)
    if len(x) < 10:
        raise ValueError(f"{len(x)} distance bins with samples; the edge needs at least 10")

    def esf(t, a, b, d0, sigma):
        return a + b * ndtr((t - d0) / sigma)

    p0 = (y[:3].mean(), y[-3:].mean() - y[:3].mean(), 0.0, 1.0)
    (a, b, d0, sigma), _ = curve_fit(esf, x, y, p0=p0, maxfev=20000)
    return float(2.0 * np.sqrt(2.0 * np.log(2.0)) * abs(sigma))


def _member_row(image: np.ndarray, labels: np.ndarray, cortex_inner: np.ndarray, wall_mm: np.ndarray,
                voxel_mm: float) -> dict:
    wm = ndi.binary_erosion(np.isin(labels, WHITE_MATTER), iterations=WM_EROSION)
    sd = noise_sd(image, wm)
    wm_level = float(np.median(image[wm]))
    gm_level = float(np.median(image[cortex_inner]))
    near = np.abs(wall_mm) <= EDGE_RANGE_MM
    side = ((wall_mm > 0) & np.isin(labels, WHITE_MATTER)) | ((wall_mm <= 0) & np.isin(labels, VENTRICLES))
    sel = near & side
    return {"voxel_mm": voxel_mm, "wm_signal": wm_level, "noise_sd": sd, "snr": wm_level / sd,
            "gm_signal": gm_level, "cnr": (wm_level - gm_level) / sd,
            "edge_fwhm_mm": edge_fwhm(wall_mm[sel], image[sel]), "n_wm": int(wm.sum()),
            "n_cortex": int(cortex_inner.sum()), "n_edge": int(sel.sum())}


def measure_subject(subject) -> pd.DataFrame:
    """Noise SD, SNR, grey/white CNR and edge width of a demo subject's raw 7T and raw 3T.

    Args:
        subject: a :class:`synth7t.data.layout.Subject` of the demo cohort (labels on the 7T grid, 3T head pose in its
            sidecar).

    Returns:
        Two rows (``member`` 7T and 3T): ``key``, ``voxel_mm``, ``wm_signal``, ``noise_sd``, ``snr``,
        ``gm_signal``, ``cnr``, ``edge_fwhm_mm`` and the voxel counts behind them.
    """
    if subject.t7_labels is None:
        raise ValueError(f"{subject.key}: no ground-truth labels; the measurements need the demo cohort")
    t7 = sio.load_volume(subject.t7)
    labels7 = sio.load_volume(subject.t7_labels, dtype=None).data.astype(np.int16)
    v7 = float(np.linalg.norm(t7.affine[:3, 0]))
    # the brain's box and a margin: the distance maps cost a third of what the whole field of view would
    idx = np.argwhere(labels7 > 0)
    margin = int(np.ceil(EDGE_RANGE_MM / v7)) + 2
    lo = np.maximum(idx.min(0) - margin, 0)
    hi = np.minimum(idx.max(0) + margin + 1, labels7.shape)
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    image7, labels7 = t7.data[box], labels7[box]
    wall7 = _signed_distance(np.isin(labels7, VENTRICLES), v7)
    cortex = np.isin(labels7, CORTEX)
    depth7 = ndi.distance_transform_edt(cortex) * v7
    inner7 = depth7 >= CORTEX_DEPTH_MM
    rows = [{"key": subject.key, "member": "7T", **_member_row(image7, labels7, inner7, wall7, v7)}]
    t3, _, to7 = _pose_to_7t(subject)
    shift = np.eye(4)
    shift[:3, 3] = -lo
    to7 = shift @ to7  # 3T voxel -> voxel of the 7T's box
    v3 = float(np.linalg.norm(t3.affine[:3, 0]))

    def on_3t(vol, order):
        return ndi.affine_transform(vol, to7[:3, :3], offset=to7[:3, 3], output_shape=t3.data.shape, order=order,
                                    mode="nearest")

    labels3 = on_3t(labels7, 0)
    rows.append({"key": subject.key, "member": "3T",
                 **_member_row(t3.data, labels3, on_3t(depth7.astype(np.float32), 1) >= CORTEX_DEPTH_MM,
                               on_3t(wall7, 1), v3)})
    return pd.DataFrame(rows)


def measured_ratios(measures: pd.DataFrame, config: Optional[DemoConfig] = None) -> pd.DataFrame:
    """Per subject, the 7T-over-3T ratios of :func:`measure_subject`'s rows, beside their targets.

    Returns:
        One row per subject and quantity: ``key``, ``quantity`` (a :meth:`DemoConfig.ratios` key), ``measured``,
        ``target`` and ``relative_error`` (measured / target - 1). SNR and CNR are 7T over 3T per voxel;
        ``snr_per_volume_7t_over_3t`` is the per-voxel SNR ratio times the voxel-volume ratio; the resolution is
        the 3T's edge FWHM over the 7T's.
    """
    cfg = config or DemoConfig()
    target = cfg.ratios()
    rows = []
    for key, m in measures.groupby("key", sort=False):
        a, b = m.set_index("member").loc["7T"], m.set_index("member").loc["3T"]
        snr = a["snr"] / b["snr"]
        values = {"snr_per_voxel_7t_over_3t": snr, "cnr_per_voxel_7t_over_3t": a["cnr"] / b["cnr"],
                  "resolution_fwhm_3t_over_7t": b["edge_fwhm_mm"] / a["edge_fwhm_mm"],
                  "snr_per_volume_7t_over_3t": snr * (b["voxel_mm"] / a["voxel_mm"]) ** 3}
        for q, v in values.items():
            rows.append({"key": key, "quantity": q, "measured": float(v), "target": float(target[q]),
                         "relative_error": float(v / target[q] - 1.0)})
    return pd.DataFrame(rows)


def measure_cohort(dataset, keys: Optional[Sequence[str]] = None) -> pd.DataFrame:
    """:func:`measure_subject` for ``keys`` of a demo cohort (default: every subject), one table."""
    subjects = [dataset[k] for k in keys] if keys is not None else list(dataset)
    return pd.concat([measure_subject(s) for s in subjects], ignore_index=True)


def member_targets(config: Optional[DemoConfig] = None) -> dict:
    """What the simulation is built to give each member, white matter = 1 before the subject's gain: the SNR is
    ``1 / noise`` (:attr:`DemoConfig.noise_7t`, :meth:`DemoConfig.noise_3t_level`), the grey/white CNR the
    template's grey/white difference (:data:`synth7t.simulate.demo.TEMPLATE_GREY_WHITE`, plus the member's extra grey
    darkening) over the noise, the edge width its effective resolution (:meth:`DemoConfig.resolution_7t`; the 3T's
    is that source blur and :meth:`DemoConfig.psf_3t` added in quadrature).

    Returns:
        ``{"7T": {"snr", "cnr", "edge_fwhm_mm"}, "3T": {...}}``.
    """
    from .demo import TEMPLATE_GREY_WHITE

    cfg = config or DemoConfig()
    n7, n3 = cfg.noise_7t, cfg.noise_3t_level()
    return {"7T": {"snr": 1.0 / n7, "cnr": (TEMPLATE_GREY_WHITE + 0.9 * cfg.gm_contrast_7t) / n7,
                   "edge_fwhm_mm": cfg.resolution_7t()},
            "3T": {"snr": 1.0 / n3, "cnr": (TEMPLATE_GREY_WHITE + 0.9 * cfg.gm_contrast_3t) / n3,
                   "edge_fwhm_mm": float(np.hypot(cfg.source_fwhm_mm, cfg.psf_3t()))}}


def member_table(measures: pd.DataFrame, config: Optional[DemoConfig] = None) -> pd.DataFrame:
    """Each member's measured SNR, CNR and edge width (mean and SD over the subjects) beside its target
    (:func:`member_targets`), and the noise SD in the files' own units.

    Returns:
        One row per (member, quantity): ``target`` (NaN for the noise SD, whose unit is the file's), ``measured``,
        ``measured_sd``, ``n_subjects`` and ``relative_error`` (measured / target - 1).
    """
    targets = member_targets(config)
    rows = []
    for member in ("7T", "3T"):
        m = measures[measures["member"] == member]
        for q in ("noise_sd", "snr", "cnr", "edge_fwhm_mm"):
            t = targets[member].get(q, np.nan)
            mean = float(m[q].mean())
            rows.append({"member": member, "quantity": q, "target": t, "measured": mean,
                         "measured_sd": float(m[q].std(ddof=1)) if len(m) > 1 else np.nan,
                         "n_subjects": int(len(m)), "relative_error": mean / t - 1.0 if np.isfinite(t) else np.nan})
    return pd.DataFrame(rows)
