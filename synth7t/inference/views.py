"""Multi-view prediction (beyond the paper): a preprocessed 3T volume predicted along several planes, the views
fused into one synthetic 7T, with an uncertainty map from their spread.

Each plane's prediction goes through :func:`synth7t.inference.volume.predict_volume`, the paper's slice-by-slice path: the
volume is transposed so that the plane's slices become the axial slices that function walks through (and transposed
back), the slice sides zero-padded to the network's downsampling factor (coronal and sagittal slices have the grid's
depth as one side; the padding is cropped off again), and the slice location is taken along the plane's own axis
between its first and last brain slice (:func:`synth7t.data.planes.brain_range`). A plane-conditioned U-Net is told the
plane with :meth:`synth7t.models.ConditionalUNet.using_plane`.

``flips=True`` also predicts every plane from the left-right mirrored volume (mirrored back): twice the passes,
twice the members of the uncertainty estimate. By default the uncertainty is the spread of the views alone, which
costs nothing beyond the views.

Models: one multi-view model (its ``model.json`` lists ``planes``; a model folder without the key is an axial
model, as every model before multi-view), or one model per plane (``{"axial": m1, "coronal": m2, ...}``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional, Sequence, Union

import numpy as np

from ..data.planes import PLANE_AXIS, brain_range, check_planes
from .fusion import fuse_views, view_uncertainty

__all__ = ["MultiViewPrediction", "model_planes", "is_multiview", "check_view_request", "load_view_models",
           "predict_plane", "predict_multiview", "prediction_jobs", "resolve_views"]

PathLike = Union[str, Path]
#: axes of the pseudo-volume whose axial slices (as ``predict_volume`` cuts them) are the plane's stack slices
_PSEUDO_AXIAL = {"axial": (0, 1, 2), "coronal": (0, 2, 1), "sagittal": (1, 2, 0)}


def model_planes(meta: Mapping) -> tuple:
    """The planes a model folder's ``model.json`` says it learned (``("axial",)`` when it predates the key)."""
    return check_planes(meta.get("planes") or ["axial"], "model.json planes")


@dataclass
class MultiViewPrediction:
    """What :func:`predict_multiview` returns.

    Attributes:
        prediction: the fused synthetic 7T ``(X, Y, Z)`` in [0, 1].
        views: per plane, its prediction (the mean of its flips with ``flips``).
        uncertainty: voxel-wise SD across every member prediction (views x flips), or None when not asked.
        n_members: predictions behind the uncertainty (views, times 2 with flips).
        fusion: the fusion method used.
        seconds: per plane, the network time.
    """

    prediction: np.ndarray
    views: dict
    uncertainty: Optional[np.ndarray]
    n_members: int
    fusion: str
    seconds: dict = field(default_factory=dict)


def load_view_models(model: Union[PathLike, tuple, Mapping], device: str = "cpu") -> dict:
    """``{plane: (generator, meta)}`` from one model folder (all its planes) or ``{plane: folder or pair}``.

    Raises:
        ValueError: a per-plane model that did not learn its plane, or an unknown plane name.
    """
    from .model import load_model

    def loaded(m):
        return m if isinstance(m, tuple) else load_model(m, device)

    if isinstance(model, Mapping):
        out = {}
        for plane, m in model.items():
            p = check_planes([plane], "plane")[0]
            g, meta = loaded(m)
            if p not in model_planes(meta):
                raise ValueError(f"the model given for the {p} view learned {', '.join(model_planes(meta))} slices "
                                 f"only")
            out[p] = (g, meta)
        return out
    g, meta = loaded(model)
    return {p: (g, meta) for p in model_planes(meta)}


def is_multiview(meta: Mapping) -> bool:
    """Whether a model folder's ``model.json`` lists planes besides axial (such a model predicts through
    :func:`predict_multiview`; an axial model through :func:`synth7t.inference.volume.predict_volume` as before)."""
    return model_planes(meta) != ("axial",)


def check_view_request(meta: Mapping, views: Optional[Union[str, Sequence[str]]] = None, *,
                       uncertainty: bool = False, flips: bool = False) -> tuple:
    """The planes a prediction request will use, checked before any work (the CLI calls it before preprocessing).

    Raises:
        ValueError: an unknown plane, one the model did not learn, or an uncertainty map with a single member.
    """
    planes = resolve_views({p: None for p in model_planes(meta)}, views)
    if uncertainty and len(planes) < 2 and not flips:
        raise ValueError(f"an uncertainty map needs at least two members: give two or more views (got "
                         f"{', '.join(planes)}) or flips (--flips)")
    return planes


def resolve_views(models: Mapping[str, tuple], views: Optional[Union[str, Sequence[str]]]) -> tuple:
    """The planes to predict: ``views`` (checked against what the models learned) or, when None, all of them.

    Raises:
        ValueError: an unknown plane, or one no model learned (the message names the ones available).
    """
    if views is None:
        return tuple(p for p in ("axial", "coronal", "sagittal") if p in models)
    views = check_planes(views, "views")
    missing = [p for p in views if p not in models]
    if missing:
        raise ValueError(f"no model learned {', '.join(missing)} slices (available: {', '.join(models)}); train one "
                         f"with planes=[...] (preset demo-cpu-mv or paper-unet-mv) or predict fewer views")
    return views


def _downsampling(generator) -> int:
    n = getattr(getattr(generator, "config", None), "n_downsamplings", 0)
    return 2 ** int(n)


def predict_plane(generator, t3: np.ndarray, plane: str, *, age: float, sex: str, impaired: Optional[bool],
                  mask: Optional[np.ndarray] = None, batch_size: Optional[int] = None,
                  bottom_top: Optional[tuple] = None, progress: bool = False) -> np.ndarray:
    """One plane's synthetic 7T of a whole grid volume, slice by slice along that plane.

    Args:
        generator: a U-Net that learned ``plane`` (see :func:`load_view_models`).
        t3: normalised 3T ``(X, Y, Z)`` on the preprocessing grid.
        plane: ``axial``, ``coronal`` or ``sagittal``.
        age, sex, impaired: the context.
        mask: brain mask ``(X, Y, Z)``: output zero outside it; its extent along the plane's axis gives the slice
            location (the 3T's non-zero voxels without a mask).
        batch_size: slices per forward pass (:func:`synth7t.inference.volume.default_batch_size`).
        bottom_top: the brain's first and last slice along the plane's axis, when known (the preprocessing
            record's ``bottom_slice``/``top_slice`` for axial).
        progress: a tqdm bar over the slices.

    Returns:
        float32 ``(X, Y, Z)`` in [0, 1].
    """
    from contextlib import nullcontext

    from ..models import ConditionalUNet
    from .volume import predict_volume

    plane = check_planes([plane], "plane")[0]
    if not isinstance(generator, ConditionalUNet):
        raise ValueError("multi-view prediction needs a 2.5D U-Net; the baselines (V-Net, WATNet) predict by "
                         "sliding window along the axial plane only")
    t3 = np.asarray(t3, np.float32)
    if t3.ndim != 3:
        raise ValueError(f"t3 must be a 3D volume, got shape {t3.shape}")
    if mask is not None and np.shape(mask) != t3.shape:
        raise ValueError(f"mask shape {np.shape(mask)} differs from the 3T's {t3.shape}")
    brain = (np.asarray(mask) > 0) if mask is not None else t3 != 0
    bottom, top = bottom_top if bottom_top is not None else brain_range(brain, plane)
    shape = t3.shape
    # the plane's slice sides (for coronal and sagittal slices, the depth is one) must divide by the network's
    # downsampling factor: zero-pad them at the far end, crop the prediction back
    f = _downsampling(generator)
    pad = [(0, 0 if a == PLANE_AXIS[plane] else (-n) % f) for a, n in enumerate(shape)]
    if any(p for _, p in pad):
        t3 = np.pad(t3, pad)
        mask = None if mask is None else np.pad(np.asarray(mask), pad)
    order = _PSEUDO_AXIAL[plane]
    pseudo = np.transpose(t3, order)
    pm = None if mask is None else np.transpose(np.asarray(mask), order)
    with generator.using_plane(plane) if generator.config.plane_condition else nullcontext():
        out = predict_volume(generator, pseudo, age=age, sex=sex, impaired=impaired, bottom=int(bottom),
                             top=int(top), mask=pm, batch_size=batch_size, progress=progress)
    vol = np.transpose(out, np.argsort(order))[: shape[0], : shape[1], : shape[2]]
    return np.ascontiguousarray(vol, dtype=np.float32)


def predict_multiview(
    model: Union[PathLike, tuple, Mapping], t3: np.ndarray, *, age: float, sex: str, impaired: Optional[bool],
    mask: Optional[np.ndarray] = None, views: Optional[Union[str, Sequence[str]]] = None, fusion: str = "mean",
    fusion_weights: Optional[Mapping[str, float]] = None, uncertainty: bool = False, flips: bool = False,
    batch_size: Optional[int] = None, device: str = "cpu", axial_range: Optional[tuple] = None,
    progress: bool = False,
) -> MultiViewPrediction:
    """Predict a grid volume along each of ``views`` and fuse the views.

    Args:
        model: a model folder, a ``(generator, meta)`` pair (:func:`synth7t.inference.load_model`), or
            ``{plane: folder or pair}`` (one model per plane).
        t3: normalised 3T ``(X, Y, Z)`` on the preprocessing grid.
        age, sex, impaired: the context.
        mask: brain mask (recommended): the output and the uncertainty are zero outside it.
        views: planes to predict (a list or ``"axial,coronal,sagittal"``); default every plane the model(s) learned.
        fusion: ``mean``, ``median`` or ``weighted`` (with ``fusion_weights``, see
            :func:`synth7t.inference.fusion.fit_fusion_weights`).
        uncertainty: also return the voxel-wise SD across the member predictions (needs two views or ``flips``).
        flips: also predict each view from the left-right mirrored volume.
        batch_size: slices per forward pass.
        device: where a model folder is loaded.
        axial_range: the axial brain range ``(bottom, top)`` from the preprocessing record (else from the mask).
        progress: tqdm bars.

    Returns:
        A :class:`MultiViewPrediction`.

    Raises:
        ValueError: unknown or unlearned views, an uncertainty with a single member, a bad fusion.
    """
    models = load_view_models(model, device)
    planes = resolve_views(models, views)
    if uncertainty and len(planes) < 2 and not flips:
        raise ValueError(f"an uncertainty map needs at least two members: give two or more views (got "
                         f"{', '.join(planes)}) or flips (--flips)")
    t3 = np.asarray(t3, np.float32)
    per_view, members, seconds = {}, [], {}
    for plane in planes:
        generator = models[plane][0]
        t0 = time.perf_counter()
        kw = dict(age=age, sex=sex, impaired=impaired, batch_size=batch_size, progress=progress,
                  bottom_top=axial_range if plane == "axial" else None)
        own = [predict_plane(generator, t3, plane, mask=mask, **kw)]
        if flips:  # mirror left-right (the grid's X), predict, mirror back
            fm = None if mask is None else np.flip(np.asarray(mask), 0)
            fkw = {**kw, "bottom_top": None}
            own.append(np.flip(predict_plane(generator, np.flip(t3, 0), plane, mask=fm, **fkw), 0))
        seconds[plane] = round(time.perf_counter() - t0, 2)
        members += own
        per_view[plane] = own[0] if len(own) == 1 else np.mean(own, axis=0).astype(np.float32)
    fused = fuse_views(per_view, fusion, weights=fusion_weights, mask=mask)
    unc = view_uncertainty(members, mask=mask) if uncertainty else None
    return MultiViewPrediction(fused, per_view, unc, len(members), fusion, seconds)



def prediction_jobs(models: Sequence[str], variants: Mapping[str, Mapping],
                    metas: Mapping[str, Union[Mapping, PathLike]], *, views: Sequence[str] = (),
                    uncertainty: bool = False, flips: bool = False) -> dict:
    """What notebook 03 predicts: per image type, its model and the multi-view options, checked before any work.

    A multi-view model (its ``model.json`` lists more planes than axial) predicts ``views`` (empty: its own planes),
    with the uncertainty map when asked and possible (two views, or flips); an axial model predicts as the paper's.
    ``variants`` add image types from a multi-view model with other views (e.g. its axial view alone).

    Args:
        models: model names (notebook 02's ``model_name``), each its own image type.
        variants: ``{image type: {"model": name, "views": [...]}}``.
        metas: per model name, its ``model.json`` (a dict or the file's path).
        views, uncertainty, flips: the notebook's parameters.

    Returns:
        ``{image type: {"model", "views" (None: the paper's axial pass), "uncertainty", "flips"}}``.

    Raises:
        ValueError: a variant of an axial model, of an unknown model, clashing with a model name, or with views the
            model did not learn.
    """
    import json

    def meta_of(m: str) -> Mapping:
        if m not in metas:
            raise ValueError(f"no model.json for model {m!r}; known: {', '.join(metas)}")
        v = metas[m]
        return v if isinstance(v, Mapping) else json.loads(Path(v).read_text())

    jobs = {}
    specs = [(m, {"model": m}) for m in models]
    for name, spec in variants.items():
        if name in models:
            raise ValueError(f"view variant {name!r} has the name of a model; give it another image-type name")
        if not isinstance(spec, Mapping) or "model" not in spec:
            raise ValueError(f"view variant {name!r} must be {{'model': <model name>, 'views': [...]}}, got {spec!r}")
        specs.append((name, spec))
    for name, spec in specs:
        meta = meta_of(spec["model"])
        if not is_multiview(meta):
            if "views" in spec:
                raise ValueError(f"view variant {name!r}: model {spec['model']!r} learned axial slices only; a variant "
                                 "needs a multi-view model (notebook 02, preset demo-cpu-mv or paper-unet-mv)")
            jobs[name] = {"model": spec["model"], "views": None, "uncertainty": False, "flips": False}
            continue
        planes = list(check_view_request(meta, spec.get("views") or (list(views) or None)))
        unc = bool(uncertainty) and (len(planes) > 1 or bool(flips))
        jobs[name] = {"model": spec["model"], "views": planes, "uncertainty": unc, "flips": bool(flips)}
    return jobs
