"""Figures: three-plane views of volumes on different grids, at one world point.

Plots take ``ax=None``/``axes=None`` and return the figure (TorchIO's ``plot_volume`` convention).
"""

from __future__ import annotations

from typing import Mapping, Optional, Sequence, Union

import nibabel as nib
import numpy as np

from . import io as sio

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

    from .layout import DIAGNOSES

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


def plot_rank_violins(ranks, *, order: Optional[Sequence[str]] = None, axes=None):
    """Figure 4C analogue: violins of the ranks given to each image type, one panel per criterion.

    Args:
        ranks: tidy table with ``criterion``, ``variant``, ``rank`` (1 = best).
        order: variant order on the x axis (default: by mean rank).
    """
    import matplotlib.pyplot as plt

    crits = list(dict.fromkeys(ranks["criterion"]))
    if axes is None:
        fig, axes = plt.subplots(1, len(crits), figsize=(4.2 * len(crits), 3.4), squeeze=False)
        axes = axes[0]
    else:
        axes = np.ravel(axes)
        fig = axes[0].figure
    n_pos = int(ranks["rank"].max())
    for ax, crit in zip(axes, crits):
        sub = ranks[ranks["criterion"] == crit]
        names = list(order) if order is not None else list(sub.groupby("variant")["rank"].mean().sort_values().index)
        data = [sub.loc[sub["variant"] == v, "rank"].to_numpy(float) for v in names]
        parts = ax.violinplot([d if len(d) else [np.nan] for d in data], showmeans=True, showextrema=False)
        for body in parts["bodies"]:
            body.set_alpha(0.5)
        ax.set_xticks(range(1, len(names) + 1), names, rotation=30, ha="right", fontsize=8)
        ax.set_yticks(range(1, n_pos + 1))
        ax.invert_yaxis()  # rank 1 (best) on top
        ax.set_ylabel("rank (1 = best)")
        ax.set_title(crit.replace("_", " "))
    fig.tight_layout()
    return fig


def plot_rater_stacked_ranks(ranks, rater_id: str, *, order: Optional[Sequence[str]] = None, axes=None):
    """Figures A.8-A.11 analogue: for one rater, the share of each rank per image type (stacked bars)."""
    import matplotlib.pyplot as plt

    sub = ranks[ranks["rater_id"] == rater_id]
    crits = list(dict.fromkeys(ranks["criterion"]))
    n_pos = int(ranks["rank"].max())
    if axes is None:
        fig, axes = plt.subplots(1, len(crits), figsize=(4.2 * len(crits), 3.2), squeeze=False)
        axes = axes[0]
    else:
        axes = np.ravel(axes)
        fig = axes[0].figure
    colours = plt.get_cmap("RdYlGn_r")(np.linspace(0, 1, n_pos))
    for ax, crit in zip(axes, crits):
        c = sub[sub["criterion"] == crit]
        names = list(order) if order is not None else sorted(set(ranks["variant"]))
        counts = (c.groupby(["variant", "rank"]).size().unstack(fill_value=0)
                  .reindex(index=names, columns=range(1, n_pos + 1), fill_value=0))
        bottom = np.zeros(len(names))
        for r in range(1, n_pos + 1):
            ax.bar(range(len(names)), counts[r].to_numpy(), bottom=bottom, color=colours[r - 1], label=f"rank {r}")
            bottom += counts[r].to_numpy()
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel("queries")
        ax.set_title(f"{rater_id}: {crit.replace('_', ' ')}")
    axes[-1].legend(fontsize=7, bbox_to_anchor=(1.02, 1), loc="upper left")
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
