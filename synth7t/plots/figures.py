"""Figures: three-plane views of volumes on different grids, the demo cohort's figures, live training curves
(:class:`TrainingMonitor`), the evaluation figures of chapters 03-04 (errors, Figure 3 box plots, Figure 4
close-ups, Figures 1-2 profiles) and the slice-comparison widget (:class:`SliceViewer`).

Plots take ``ax=None``/``axes=None`` and return the figure (TorchIO's ``plot_volume`` convention). The rating
study's figures live in :mod:`synth7t.studies.stats`, Figure 5's in :mod:`synth7t.evaluation.regional`, Figure 6's in
:mod:`synth7t.studies.diagnosis` and the paper comparison's in :mod:`synth7t.studies.paper`.
"""

from __future__ import annotations

from typing import Mapping, Optional, Sequence, Union

import nibabel as nib
import numpy as np

from ..data import io as sio

PLANES = ("sagittal", "coronal", "axial")
ImageLike = Union[nib.Nifti1Image, sio.Volume, str]


def _as_canonical(img: ImageLike) -> nib.Nifti1Image:
    if isinstance(img, (str, bytes)) or hasattr(img, "__fspath__"):
        img = sio.read_nifti(img, check_values=False)
    elif isinstance(img, sio.Volume):
        img = nib.Nifti1Image(np.asarray(img.data), img.affine)
    return nib.as_closest_canonical(img)


def brain_centre(img: ImageLike, threshold: Optional[float] = None) -> np.ndarray:
    """World coordinates (mm) of the centre of mass of the voxels above ``threshold`` (default: 30th
    percentile of the non-zero voxels), a robust default view point."""
    can = _as_canonical(img)
    data = np.asarray(can.dataobj, dtype=np.float32)
    nz = data[data > 0]
    thr = float(np.percentile(nz, 30)) if threshold is None and nz.size else (threshold or 0.0)
    idx = np.argwhere(data > thr)
    centre = idx.mean(0) if len(idx) else (np.array(data.shape) - 1) / 2
    return sio.voxel_to_world(can.affine, centre)[0]


def orthoslices(img: ImageLike, point_mm: Sequence[float]) -> dict[str, tuple[np.ndarray, tuple]]:
    """The three planes through a world point.

    Returns:
        ``{plane: (slice2d, extent)}``; each slice is oriented for ``imshow(origin="lower")``
        (rows: superior or anterior up; columns: right to the right, radiological convention not used),
        with ``extent`` in world mm so that images on different grids line up.
    """
    can = _as_canonical(img)
    data = np.asarray(can.dataobj)
    aff = can.affine
    ijk = np.rint(sio.world_to_voxel(aff, np.asarray(point_mm, float))[0]).astype(int)
    ijk = np.clip(ijk, 0, np.array(data.shape) - 1)
    vs = np.linalg.norm(aff[:3, :3], axis=0)
    lo = aff[:3, 3]
    hi = lo + (np.array(data.shape) - 1) * vs

    def ext(a, b):
        return (lo[a] - vs[a] / 2, hi[a] + vs[a] / 2, lo[b] - vs[b] / 2, hi[b] + vs[b] / 2)

    return {
        "sagittal": (data[ijk[0], :, :].T, ext(1, 2)),
        "coronal": (data[:, ijk[1], :].T, ext(0, 2)),
        "axial": (data[:, :, ijk[2]].T, ext(0, 1)),
    }


# FreeSurfer's colour table for the labels the demo and SynthSeg use (right = left colour)
_FS_COLOURS = {
    2: (245, 245, 245), 3: (205, 62, 78), 4: (120, 18, 134), 5: (196, 58, 250), 7: (220, 248, 164),
    8: (230, 148, 34), 10: (0, 118, 14), 11: (122, 186, 220), 12: (236, 13, 176), 13: (12, 48, 255),
    14: (204, 182, 142), 15: (42, 204, 164), 16: (119, 159, 176), 17: (220, 216, 20), 18: (103, 255, 255),
    26: (255, 165, 0), 28: (165, 42, 42),
}
_FS_RIGHT = {41: 2, 42: 3, 43: 4, 44: 5, 46: 7, 47: 8, 49: 10, 50: 11, 51: 12, 52: 13, 53: 17, 54: 18, 58: 26,
             60: 28}


def label_rgb(labels: np.ndarray) -> np.ndarray:
    """RGBA image of a label slice in FreeSurfer colours (unknown labels get a hashed colour; 0 transparent)."""
    out = np.zeros((*labels.shape, 4), np.float32)
    for v in np.unique(labels):
        v = int(v)
        if v == 0:
            continue
        rgb = _FS_COLOURS.get(_FS_RIGHT.get(v, v))
        if rgb is None:
            rng = np.random.default_rng(v)
            rgb = tuple(int(x) for x in rng.integers(40, 255, 3))
        out[labels == v] = (*(np.array(rgb) / 255.0), 1.0)
    return out


def _window(data: np.ndarray, pct=(1.0, 99.5)) -> tuple[float, float]:
    nz = data[data > 0]
    if nz.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(nz, pct)
    return float(lo), float(hi if hi > lo else lo + 1)


def plot_planes(
    images: Mapping[str, ImageLike],
    point_mm: Optional[Sequence[float]] = None,
    *,
    labels: Optional[ImageLike] = None,
    label_name: str = "labels",
    window: Optional[Mapping[str, tuple[float, float]]] = None,
    axes=None,
    title: Optional[str] = None,
    cell_size: float = 2.6,
):
    """One row per image (and one for a label map), one column per plane, all through the same world point.

    Args:
        images: ``{name: image}``; images may sit on different grids and orientations.
        point_mm: world point; default: the brain centre of the first image.
        labels: optional label map, drawn as a colour map in its own row.
        window: ``{name: (low, high)}`` display windows; default 1st-99.5th percentile of non-zero voxels.
        axes: an array of matplotlib axes of shape ``(rows, 3)`` to draw into.
        title: figure title.

    Returns:
        The matplotlib figure.
    """
    import matplotlib.pyplot as plt

    names = list(images)
    rows = len(names) + (labels is not None)
    if point_mm is None:
        point_mm = brain_centre(images[names[0]])
    if axes is None:
        fig, axes = plt.subplots(rows, 3, figsize=(3 * cell_size, rows * cell_size), squeeze=False)
    else:
        axes = np.asarray(axes).reshape(rows, 3)
        fig = axes[0, 0].figure
    for r, name in enumerate(names):
        planes = orthoslices(images[name], point_mm)
        lo, hi = (window or {}).get(name) or _window(np.concatenate([p[0].ravel() for p in planes.values()]))
        for c, plane in enumerate(PLANES):
            sl, extent = planes[plane]
            ax = axes[r, c]
            ax.imshow(sl, cmap="gray", vmin=lo, vmax=hi, origin="lower", extent=extent, interpolation="nearest")
            ax.set_xticks([]), ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(name)
            if r == 0:
                ax.set_title(plane)
    if labels is not None:
        planes = orthoslices(labels, point_mm)
        for c, plane in enumerate(PLANES):
            sl, extent = planes[plane]
            ax = axes[rows - 1, c]
            ax.imshow(np.zeros_like(sl), cmap="gray", origin="lower", extent=extent)
            ax.imshow(label_rgb(np.asarray(sl)), origin="lower", extent=extent, interpolation="nearest")
            ax.set_xticks([]), ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(label_name)
    # the same world window for every row of a column, so that grids line up visually
    for c in range(3):
        xs = [axes[r, c].get_xlim() for r in range(rows)]
        ys = [axes[r, c].get_ylim() for r in range(rows)]
        for r in range(rows):
            axes[r, c].set_xlim(min(x[0] for x in xs), max(x[1] for x in xs))
            axes[r, c].set_ylim(min(y[0] for y in ys), max(y[1] for y in ys))
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_artefact_slices(t7: ImageLike, ranges: Sequence[tuple[int, int]], *, ax=None, title: Optional[str] = None):
    """A mid-sagittal 7T slice with the excluded axial slice ranges shaded.

    Args:
        t7: the 7T image; ``ranges`` count along its axial axis after reorientation to RAS.
        ranges: inclusive ``(first, last)`` slice ranges.
    """
    import matplotlib.pyplot as plt

    can = _as_canonical(t7)
    data = np.asarray(can.dataobj, dtype=np.float32)
    aff = can.affine
    centre = brain_centre(can)
    sl, extent = orthoslices(can, centre)["sagittal"]
    if ax is None:
        fig, ax = plt.subplots(figsize=(4.5, 4.5))
    else:
        fig = ax.figure
    lo, hi = _window(sl)
    ax.imshow(sl, cmap="gray", vmin=lo, vmax=hi, origin="lower", extent=extent)
    z0, dz = aff[2, 3], aff[2, 2]
    for a, b in ranges:
        ax.axhspan(z0 + (a - 0.5) * dz, z0 + (b + 0.5) * dz, color="tab:red", alpha=0.25, lw=0)
        ax.text(extent[1], z0 + b * dz, f" slices {a}-{b}", color="tab:red", va="top", ha="right", fontsize=8)
    ax.set_xlabel("anterior-posterior (mm)")
    ax.set_ylabel("inferior-superior (mm)")
    ax.set_title(title or f"excluded axial slices ({data.shape[2]} in all)", fontsize=9)
    fig.tight_layout()
    return fig


def plot_volumes_by_group(table, columns: Sequence[str], *, group: str = "diagnosis", order=None, axes=None):
    """Strip plots of regional volumes (one panel per column) by group, with group means.

    Args:
        table: a DataFrame with ``group`` and the ``columns`` (mm³).
        columns: volume columns to draw.
        order: group order (default: CN, SCD, MCI, AD, dementia as present).
    """
    import matplotlib.pyplot as plt

    from ..data.layout import DIAGNOSES

    order = list(order or [d for d in DIAGNOSES if d in set(table[group])] or sorted(set(table[group])))
    n = len(columns)
    if axes is None:
        fig, axes = plt.subplots(1, n, figsize=(2.3 * n, 3.0), squeeze=False)
        axes = axes[0]
    else:
        axes = np.ravel(axes)
        fig = axes[0].figure
    rng = np.random.default_rng(0)
    for ax, col in zip(axes, columns):
        for i, g in enumerate(order):
            v = table.loc[table[group] == g, col].to_numpy(float)
            ax.scatter(i + rng.uniform(-0.12, 0.12, len(v)), v, s=14, alpha=0.8)
            if len(v):
                ax.hlines(v.mean(), i - 0.3, i + 0.3, color="k", lw=1.5)
        ax.set_xticks(range(len(order)), order, fontsize=8)
        ax.set_title(col.replace("-", " "), fontsize=8)
        ax.tick_params(axis="y", labelsize=7)
    axes[0].set_ylabel("volume (mm³)")
    fig.tight_layout()
    return fig


class SliceViewer:
    """Synchronised three-plane views of several volumes on one grid, for JupyterLab.

    One slider per axis moves every volume together; window/level sliders set the display range (in units of
    each volume's robust intensity range, so images with different scales stay comparable); a zoom box crops
    every view around the cursor; toggles choose which image types are shown. After interacting, call
    :meth:`figure` for a static copy (the book shows that, since it has no kernel).

    Args:
        volumes: ``{name: image}`` on one grid (shapes must match after reorientation to RAS).
        labels: optional label map on the same grid, drawn as outlines.
    """

    def __init__(self, volumes: Mapping[str, ImageLike], labels: Optional[ImageLike] = None):
        self.names = list(volumes)
        if not self.names:
            raise ValueError("SliceViewer needs at least one volume")
        self.data = {}
        for n, v in volumes.items():
            can = _as_canonical(v)
            self.data[n] = np.asarray(can.dataobj, dtype=np.float32)
        shapes = {n: d.shape for n, d in self.data.items()}
        if len(set(shapes.values())) != 1:
            raise ValueError(f"volumes must share one grid, got shapes {shapes}; resample them first")
        self.shape = next(iter(shapes.values()))
        self.labels = np.asarray(_as_canonical(labels).dataobj) if labels is not None else None
        self.ranges = {n: _window(d) for n, d in self.data.items()}
        centre = np.argwhere(self.data[self.names[0]] > self.ranges[self.names[0]][0])
        self.cursor = [int(c) for c in (centre.mean(0) if len(centre) else np.array(self.shape) / 2)]
        self.level, self.width, self.zoom = 0.5, 1.0, 1.0
        self.shown = list(self.names)
        self._widget = None

    def _crop(self, sl: np.ndarray, cx: int, cy: int):
        if self.zoom <= 1.0:
            return sl, (0, sl.shape[1], 0, sl.shape[0])
        h, w = sl.shape
        hh, hw = max(4, int(h / self.zoom / 2)), max(4, int(w / self.zoom / 2))
        y0, x0 = int(np.clip(cy - hh, 0, max(h - 2 * hh, 0))), int(np.clip(cx - hw, 0, max(w - 2 * hw, 0)))
        return sl[y0:y0 + 2 * hh, x0:x0 + 2 * hw], (x0, x0 + 2 * hw, y0, y0 + 2 * hh)

    def planes(self, name: str) -> dict[str, np.ndarray]:
        """The three slices of one volume through the cursor, after zoom (display orientation, origin lower)."""
        d = self.data[name]
        i, j, k = self.cursor
        raw = {"sagittal": (d[i].T, j, k), "coronal": (d[:, j].T, i, k), "axial": (d[:, :, k].T, i, j)}
        return {p: self._crop(sl, cx, cy)[0] for p, (sl, cx, cy) in raw.items()}

    def figure(self, ax=None):
        """A static figure of the current view (rows: shown image types; columns: planes)."""
        import matplotlib.pyplot as plt

        rows = len(self.shown)
        if rows == 0:
            raise ValueError("no image type is toggled on")
        if ax is None:
            fig, axes = plt.subplots(rows, 3, figsize=(8.4, 2.8 * rows), squeeze=False)
        else:
            axes = np.asarray(ax).reshape(rows, 3)
            fig = axes[0, 0].figure
        i, j, k = self.cursor
        for r, name in enumerate(self.shown):
            lo, hi = self.ranges[name]
            span = hi - lo
            centre = lo + self.level * span
            vmin, vmax = centre - self.width * span / 2, centre + self.width * span / 2
            for c, (plane, sl) in enumerate(self.planes(name).items()):
                a = axes[r, c]
                a.clear()
                a.imshow(sl, cmap="gray", vmin=vmin, vmax=vmax, origin="lower", interpolation="nearest")
                if self.labels is not None:
                    lab = {"sagittal": self.labels[i].T, "coronal": self.labels[:, j].T,
                           "axial": self.labels[:, :, k].T}[plane]
                    cx, cy = {"sagittal": (j, k), "coronal": (i, k), "axial": (i, j)}[plane]
                    lab = self._crop(lab, cx, cy)[0]
                    if lab.any():
                        a.contour(lab, levels=np.unique(lab)[1:] - 0.5, colors="yellow", linewidths=0.4)
                a.set_xticks([]), a.set_yticks([])
                if c == 0:
                    a.set_ylabel(name)
                if r == 0:
                    a.set_title(f"{plane} ({'ijk'[['sagittal', 'coronal', 'axial'].index(plane)]}="
                                f"{self.cursor[['sagittal', 'coronal', 'axial'].index(plane)]})")
        fig.tight_layout()
        return fig

    @property
    def widget(self):
        """The ipywidgets control panel and an output area that redraws on every change."""
        if self._widget is not None:
            return self._widget
        import ipywidgets as w
        import matplotlib.pyplot as plt

        out = w.Output()
        sliders = [w.IntSlider(value=self.cursor[a], min=0, max=self.shape[a] - 1, description=n,
                               continuous_update=False) for a, n in enumerate(("sagittal", "coronal", "axial"))]
        level = w.FloatSlider(value=self.level, min=0.0, max=1.0, step=0.02, description="level",
                              continuous_update=False)
        width = w.FloatSlider(value=self.width, min=0.05, max=2.0, step=0.05, description="window",
                              continuous_update=False)
        zoom = w.FloatSlider(value=self.zoom, min=1.0, max=6.0, step=0.5, description="zoom", continuous_update=False)
        show = [w.Checkbox(value=True, description=n, indent=False) for n in self.names]

        def redraw(_=None):
            self.cursor = [s.value for s in sliders]
            self.level, self.width, self.zoom = level.value, width.value, zoom.value
            self.shown = [n for n, cb in zip(self.names, show) if cb.value] or [self.names[0]]
            with out:
                out.clear_output(wait=True)
                fig = self.figure()
                from IPython.display import display

                display(fig)
                plt.close(fig)

        for ctl in (*sliders, level, width, zoom, *show):
            ctl.observe(redraw, names="value")
        self._controls = dict(sliders=sliders, level=level, width=width, zoom=zoom, show=show)
        self._widget = w.VBox([w.HBox(sliders), w.HBox([level, width, zoom]), w.HBox(show), out])
        redraw()
        return self._widget


# ----------------------------------------------------------------------------------------- training (chapter 02)


class TrainingMonitor:
    """Live training curves: a loss panel and a validation-PSNR panel, redrawn from the trainer's log rows.

    Pass the monitor as ``on_log`` to :class:`synth7t.training.trainer.Trainer`; the trainer calls it with
    ``("train", row)`` after every batch (``row`` has ``step`` and, for the generator, ``total``) and with
    ``("val", row)`` after every validation (``step``, ``psnr``, ``psnr_3t``, ...). The panels are redrawn every
    ``every`` training rows and after each validation; in JupyterLab the figure updates in place.

    Args:
        every: redraw after this many training rows.
        axes: two matplotlib axes (loss, validation) to draw into; default a new 1 x 2 figure.
        live: show the figure now and update it in place (IPython display with a display id); False for tests
            and scripts.

    Attributes:
        figure: the matplotlib figure.
        n_draws: how many times the panels were redrawn.
    """

    def __init__(self, *, every: int = 10, axes=None, live: bool = True):
        import matplotlib.pyplot as plt

        if every < 1:
            raise ValueError(f"every must be a positive number of training rows, got {every}")
        if axes is None:
            self.figure, axes = plt.subplots(1, 2, figsize=(10, 3.2))
        self.ax_loss, self.ax_val = np.ravel(axes)[:2]
        self.figure = self.ax_loss.figure
        self.every = int(every)
        self.n_draws = 0
        self._rows: dict[str, list[dict]] = {"train": [], "val": []}
        self._handle = None
        if live:
            from IPython.display import display

            self._handle = display(self.figure, display_id=True)

    def __call__(self, kind: str, row: Mapping) -> None:
        if kind not in self._rows:
            raise ValueError(f"log kind must be 'train' or 'val', got {kind!r}")
        self._rows[kind].append(dict(row))
        if kind == "train" and len(self._rows["train"]) % self.every:
            return
        self.redraw()

    @property
    def train(self):
        """The training rows received so far (a DataFrame)."""
        import pandas as pd

        return pd.DataFrame(self._rows["train"])

    @property
    def val(self):
        """The validation rows received so far (a DataFrame)."""
        import pandas as pd

        return pd.DataFrame(self._rows["val"])

    def redraw(self):
        """Redraw both panels from the rows so far; returns the figure."""
        t = self.train
        if "total" in t:
            t = t.dropna(subset=["total"])
        self.ax_loss.clear()
        if len(t) and "total" in t:
            self.ax_loss.plot(t["step"], t["total"], lw=0.8, label="generator loss")
            self.ax_loss.set_yscale("log")
            self.ax_loss.legend()
        self.ax_loss.set_xlabel("batch")
        v = self.val
        if len(v) and "psnr" in v:
            self.ax_val.clear()
            self.ax_val.plot(v["step"], v["psnr"], "o-", label="model")
            if "psnr_3t" in v:
                self.ax_val.plot(v["step"], v["psnr_3t"], "s--", label="identity (copy the 3T input)")
            self.ax_val.set_xlabel("batch")
            self.ax_val.set_ylabel("validation PSNR (dB)")
            self.ax_val.legend()
        self.n_draws += 1
        if self._handle is not None:
            self._handle.update(self.figure)
        return self.figure

    def close(self):
        """Close the figure (it stays in the notebook's output); returns it."""
        import matplotlib.pyplot as plt

        plt.close(self.figure)
        return self.figure


def plot_validation(val, metrics: Sequence[str] = ("psnr", "ssim"), *, axes=None):
    """Validation scores of a training run: the model against its 3T input, one panel per metric.

    Args:
        val: the trainer's ``val_log.csv`` as a DataFrame: ``step`` and, per metric, ``<metric>`` (the model) and
            ``<metric>_3t`` (the centre 3T input slice against the real 7T).
        metrics: metrics to draw.
        axes: one matplotlib axis per metric.

    Returns:
        The matplotlib figure.
    """
    import matplotlib.pyplot as plt

    missing = [c for m in metrics for c in (m, f"{m}_3t") if c not in val.columns]
    if missing or "step" not in val.columns:
        raise ValueError(f"val lacks column(s) {', '.join(missing or ['step'])} (has {', '.join(val.columns)})")
    if axes is None:
        fig, axes = plt.subplots(1, len(metrics), figsize=(4.5 * len(metrics), 3), squeeze=False)
        axes = axes[0]
    else:
        axes = np.ravel(axes)
        fig = axes[0].figure
    for ax, m in zip(axes, metrics):
        ax.plot(val["step"], val[m], "o-", label="model")
        ax.plot(val["step"], val[f"{m}_3t"], "s--", label="identity (copy the 3T input)")
        ax.set_xlabel("batch")
        ax.set_title(m.upper())
        ax.legend()
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------------------- predictions (chapters 03, 04)


def _image_order(volumes: Mapping, order: Optional[Sequence[str]]) -> list[str]:
    """3T first, the models, 7T last (or ``order``), keeping only names present."""
    names = list(order) if order is not None else (
        ["3T"] + [n for n in volumes if n not in ("3T", "7T")] + ["7T"])
    missing = [n for n in names if n not in volumes]
    if order is not None and missing:
        raise ValueError(f"order names image(s) {missing} that are not in the volumes ({', '.join(volumes)})")
    return [n for n in names if n in volumes]


def mask_centre(mask: np.ndarray) -> np.ndarray:
    """Voxel indices (int) of the centre of a boolean mask; the array centre when the mask is empty."""
    idx = np.argwhere(np.asarray(mask))
    return (np.round(idx.mean(0)) if len(idx) else np.array(np.shape(mask)) // 2).astype(int)


def plot_prediction_errors(volumes: Mapping[str, np.ndarray], *, reference: str = "7T",
                           order: Optional[Sequence[str]] = None, error_max: float = 0.3, axes=None,
                           title: Optional[str] = None):
    """Each image type beside the real 7T: axial and coronal slices through the brain centre and the absolute
    error to the reference inside its brain (three rows, one column per image type).

    Args:
        volumes: ``{name: array (X, Y, Z)}`` on one grid, normalised to [0, 1], the reference among them.
        reference: the name of the real 7T; its non-zero voxels are the brain.
        order: column order (default: 3T, the models, 7T).
        error_max: top of the error colour scale.
        axes: a ``(3, n)`` array of matplotlib axes.
        title: figure title.

    Returns:
        The matplotlib figure.
    """
    import matplotlib.pyplot as plt

    if reference not in volumes:
        raise ValueError(f"reference {reference!r} is not among the volumes ({', '.join(volumes)})")
    names = _image_order(volumes, order)
    ref = np.asarray(volumes[reference])
    mask = ref > 0
    _, yc, zc = mask_centre(mask)
    if axes is None:
        fig, axes = plt.subplots(3, len(names), figsize=(2.6 * len(names), 8.2), squeeze=False)
    else:
        axes = np.asarray(axes).reshape(3, len(names))
        fig = axes[0, 0].figure
    for c, name in enumerate(names):
        v = np.asarray(volumes[name])
        if v.shape != ref.shape:
            raise ValueError(f"{name} has shape {v.shape}, the reference {ref.shape}: put them on one grid")
        axes[0, c].imshow(v[:, :, zc].T, cmap="gray", origin="lower", vmin=0, vmax=1)
        axes[1, c].imshow(v[:, yc, :].T, cmap="gray", origin="lower", vmin=0, vmax=1)
        err = np.abs(v[:, :, zc] - ref[:, :, zc]) * mask[:, :, zc]
        axes[2, c].imshow(err.T, cmap="magma", origin="lower", vmin=0, vmax=error_max)
        axes[0, c].set_title(name)
        for ax in axes[:, c]:
            ax.set_xticks([]), ax.set_yticks([])
    axes[0, 0].set_ylabel(f"axial z={zc}")
    axes[1, 0].set_ylabel(f"coronal y={yc}")
    axes[2, 0].set_ylabel(f"|image - {reference}|")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_score_boxes(table, columns: Mapping[str, str], *, order: Sequence[str], by: str = "image_type", axes=None,
                     title: Optional[str] = None):
    """Figure 3 analogue: box plots of per-subject scores per image type (means marked, every subject a dot).

    Args:
        table: one row per subject and image type, with ``by`` and the score ``columns``.
        columns: ``{column: panel title}``, one panel each.
        order: image types on the x axis.
        by: the image-type column.
        axes: one matplotlib axis per column.
        title: figure title.

    Returns:
        The matplotlib figure.
    """
    import matplotlib.pyplot as plt

    missing = [c for c in [by, *columns] if c not in table.columns]
    if missing:
        raise ValueError(f"table lacks column(s) {', '.join(missing)}")
    if axes is None:
        fig, axes = plt.subplots(1, len(columns), figsize=(4 * len(columns), 3.6), squeeze=False)
        axes = axes[0]
    else:
        axes = np.ravel(axes)
        fig = axes[0].figure
    pos = np.arange(1, len(order) + 1)
    for ax, (col, label) in zip(axes, columns.items()):
        data = [table.loc[table[by] == n, col].dropna().to_numpy(float) for n in order]
        ax.boxplot([d if len(d) else [np.nan] for d in data], showmeans=True)
        xs = np.concatenate([np.full(len(d), p) + np.linspace(-0.08, 0.08, len(d)) for p, d in zip(pos, data)])
        ax.scatter(xs, np.concatenate(data), s=12, color="k", zorder=3)
        ax.set_xticks(pos, list(order), rotation=20)
        ax.set_title(label)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_closeups(volumes: Mapping[str, np.ndarray], centre: Sequence[int], size: int, *,
                  order: Optional[Sequence[str]] = None, axes=None, title: Optional[str] = None):
    """Figure 4A/B analogue: square crops around one voxel in the axial and coronal planes, for every image type,
    with one display window ([0, 1]).

    Args:
        volumes: ``{name: array (X, Y, Z)}`` on one grid.
        centre: the voxel ``(x, y, z)`` the crops are centred on (e.g. the left hippocampus and amygdala).
        size: side of the crops in voxels (cut at the volume's edges).
        order: column order (default: 3T, the models, 7T).
        axes: a ``(2, n)`` array of matplotlib axes.
        title: figure title.

    Returns:
        The matplotlib figure.
    """
    import matplotlib.pyplot as plt

    if size < 2:
        raise ValueError(f"size must be at least 2 voxels, got {size}")
    names = _image_order(volumes, order)
    x, y, z = (int(c) for c in centre)
    h = int(size) // 2
    xs, ys, zs = slice(max(x - h, 0), x + h), slice(max(y - h, 0), y + h), slice(max(z - h, 0), z + h)
    if axes is None:
        fig, axes = plt.subplots(2, len(names), figsize=(2.2 * len(names), 4.6), squeeze=False)
    else:
        axes = np.asarray(axes).reshape(2, len(names))
        fig = axes[0, 0].figure
    for c, name in enumerate(names):
        v = np.asarray(volumes[name])
        for r, crop in enumerate((v[xs, ys, z], v[xs, y, zs])):
            axes[r, c].imshow(crop.T, cmap="gray", origin="lower", vmin=0, vmax=1, interpolation="nearest")
            axes[r, c].set_xticks([]), axes[r, c].set_yticks([])
        axes[0, c].set_title(name)
    axes[0, 0].set_ylabel("axial")
    axes[1, 0].set_ylabel("coronal")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_3t_vs_7t(volumes: Mapping[str, np.ndarray], centre: Sequence[int], *, order: Optional[Sequence[str]] = None,
                  axes=None, title: Optional[str] = None):
    """Figures 1-2 analogue: the 3T and the 7T in the axial and coronal planes through a voxel, and the intensity
    profile of every image type along the left-right line through it.

    Args:
        volumes: ``{name: array (X, Y, Z)}`` on one grid, with ``"3T"`` and ``"7T"``.
        centre: the voxel ``(x, y, z)``; the profile runs along x at ``(y, z)``.
        order: profile order (default: 3T, the models, 7T).
        axes: five matplotlib axes.
        title: figure title.

    Returns:
        The matplotlib figure.
    """
    import matplotlib.pyplot as plt

    missing = [n for n in ("3T", "7T") if n not in volumes]
    if missing:
        raise ValueError(f"volumes need {' and '.join(missing)} (have {', '.join(volumes)})")
    _, y, z = (int(c) for c in centre)
    if axes is None:
        fig, axes = plt.subplots(1, 5, figsize=(16, 3.4), gridspec_kw={"width_ratios": [1, 1, 1, 1, 1.4]})
    else:
        axes = np.ravel(axes)
        fig = axes[0].figure
    panels = [("3T", "axial"), ("7T", "axial"), ("3T", "coronal"), ("7T", "coronal")]
    for ax, (name, plane) in zip(axes[:4], panels):
        v = np.asarray(volumes[name])
        ax.imshow((v[:, :, z] if plane == "axial" else v[:, y, :]).T, cmap="gray", origin="lower", vmin=0, vmax=1)
        if plane == "axial":
            ax.axhline(y, color="tab:orange", lw=0.6)
        ax.set_title(f"{name} {plane}")
        ax.set_xticks([]), ax.set_yticks([])
    for name in _image_order(volumes, order):
        axes[4].plot(np.asarray(volumes[name])[:, y, z], lw=1, label=name)
    axes[4].set_xlabel("voxel (left-right)")
    axes[4].set_ylabel("intensity")
    axes[4].legend(fontsize=7)
    axes[4].set_title("profile along the orange line")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
