"""One volume through a network, one pass kind per function: the 2.5D slice loop of the U-Nets, the sliding window
of the baselines, the input recipe of an imported network of the authors.

:func:`predict_volume` predicts every axial slice of an array from itself and its neighbours with the subject's
context; :func:`predict_volume_patches` runs a V-Net or WATNet over the brain's bounding box in overlapping windows;
:func:`predict_volume_released` runs an imported network of the authors with the input recipe of their training.
:class:`synth7t.inference.Predictor` chooses among them (and :mod:`synth7t.inference.views` for other planes).
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from ..training.patches import DEFAULT_OVERLAP, PatchGeometry, nonzero_box, patch_geometry, sliding_window_predict

__all__ = ["cpu_slice_workers", "default_batch_size", "grid_divisor_of", "patch_overlap_of", "predict_volume",
           "predict_volume_patches", "predict_volume_released", "released_normalise", "uses_context"]


def patch_overlap_of(meta: dict) -> Optional[int]:
    """The sliding-window overlap a baseline's ``model.json`` records (None for the U-Nets)."""
    inference = meta.get("inference") or {}
    if "patch_overlap" in inference:
        return int(inference["patch_overlap"])
    return None


def uses_context(generator) -> bool:
    """Whether the network takes the subject context (age, sex, diagnosis, slice location): the U-Nets do."""
    from ..models import ConditionalUNet

    return isinstance(generator, ConditionalUNet)


def grid_divisor_of(meta: dict) -> int:
    """What a model needs the in-plane sizes of its input grid to divide by: ``model.json``'s ``input.grid_divisor``,
    or for a folder exported before it was recorded, ``2 ** n_downsamplings`` of a U-Net (1 for a baseline, which
    slides its windows over any grid)."""
    recorded = (meta.get("input") or {}).get("grid_divisor")
    if recorded:
        return int(recorded)
    from ..models.build import resolve_config

    cfg = meta["model_config"]
    return 1 if patch_geometry(cfg) is not None else 2 ** resolve_config(cfg).n_downsamplings


def default_batch_size(device, geometry: Optional[PatchGeometry] = None) -> int:
    """Slices (sliding windows, for a baseline) per forward pass: 32 on a GPU; on a CPU 1 slice of a U-Net,
    2 windows of a 3D baseline and 64 of WATNet-2D (its windows are small). The rule: on a CPU, the smallest batch
    that keeps the cores busy: on a CPU a larger batch of U-Net slices only adds memory traffic
    (``benchmarks/bench_train_predict.py`` times one slice per pass against the library's batch size)."""
    if str(device).startswith("cuda"):
        return 32
    if geometry is None:
        return 1
    return 64 if geometry.spatial_dims == 2 else 2


def cpu_slice_workers(device, n_batches: int) -> int:
    """Threads for a volume's slice loop: on a CPU one per torch thread (each then runs its slices on one core; with
    the threads at 1 in all of them a slice gives the same bytes as in a loop on one thread), else 1. On 2 cores
    the demo U-Net takes 40 ms per slice this way against 46 ms with both cores on each slice in turn (torch's
    small convolutions and attention do not keep two cores busy; ``benchmarks/bench_speed.py lone``)."""
    import torch

    if torch.device(device).type != "cpu":
        return 1
    return max(1, min(torch.get_num_threads(), int(n_batches)))


def predict_volume(
    generator, t3: np.ndarray, *, age: float, sex: str, impaired: Optional[bool], bottom: int, top: int,
    mask: Optional[np.ndarray] = None, batch_size: Optional[int] = None, n_input_slices: Optional[int] = None,
    progress: bool = False, patch_overlap: Optional[int] = None,
) -> np.ndarray:
    """Predict a synthetic 7T volume from a 3T volume on the preprocessing grid.

    A U-Net predicts slice by slice; a baseline (V-Net, WATNet: a network whose config has a ``patch_size``)
    by sliding window (:func:`predict_volume_patches`), and the context arguments are then not used.

    Args:
        generator: a trained generator (see :func:`synth7t.inference.load_model`).
        t3: normalised 3T volume ``(X, Y, Z)`` on the grid (X left-right, Y anterior-posterior, Z axial).
        age, sex, impaired: the context (``impaired`` may be None only for a ``nodiag`` model).
        bottom, top: lowest and highest axial slices with brain (slice-location condition).
        mask: optional brain mask ``(X, Y, Z)``; the output is zero outside it, and axial slices without
            brain (the grid's margins) are not passed through the network at all.
        batch_size: slices (a baseline's windows) per forward pass; default :func:`default_batch_size` (1 on a
            CPU, where larger batches are slower, measured in ``benchmarks/bench_train_predict.py``; 32 on a GPU).
        n_input_slices: neighbouring slices per input (default: the model's).
        patch_overlap: a baseline's window overlap in voxels (default 8, as the paper's; ``model.json`` records
            the run's, see :func:`patch_overlap_of`).

    Returns:
        float32 ``(X, Y, Z)`` in [0, 1].
    """
    import torch

    from ..models import make_context, slice_location

    t3 = np.asarray(t3, dtype=np.float32)
    if t3.ndim != 3:
        raise ValueError(f"t3 must be a 3D volume, got shape {t3.shape}")
    if not np.all(np.isfinite(t3)):
        raise ValueError("t3 contains non-finite values")
    if getattr(getattr(generator, "config", None), "kind", "") == "gicquel-unet":
        raise ValueError("an imported model of the authors predicts with its own recipe on their template's grid: use "
                         "predict_volume_released (or synth7t predict, which aligns the scan to its templates)")
    geometry = patch_geometry(getattr(generator, "config", None))
    if geometry is not None:
        return predict_volume_patches(generator, t3, mask=mask, batch_size=batch_size, progress=progress,
                                      overlap=DEFAULT_OVERLAP if patch_overlap is None else patch_overlap)
    if top == bottom:
        raise ValueError(f"bottom and top brain slices must differ, got {bottom}")
    n_in = n_input_slices or getattr(getattr(generator, "config", None), "n_input_slices", 3)
    half = n_in // 2
    device = next(generator.parameters()).device
    batch_size = int(batch_size or default_batch_size(device))
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    stack = np.transpose(t3, (2, 1, 0))  # (Z, H=AP, W=LR): the training layout
    depth = stack.shape[0]
    out = np.zeros_like(stack)
    if mask is not None:
        mask = np.asarray(mask) > 0
        if mask.shape != t3.shape:
            raise ValueError(f"mask shape {mask.shape} differs from the 3T's {t3.shape}")
        todo = np.flatnonzero(mask.any(axis=(0, 1)))  # their output would be masked to zero anyway
    else:
        todo = np.arange(depth)
    use_ctx = uses_context(generator)
    from tqdm.auto import tqdm

    # grad mode and autocast are per thread: the workers take the caller's (bf16 autocast, inference_precision)
    cast = {"device_type": device.type, "enabled": torch.is_autocast_enabled(device.type),
            "dtype": torch.get_autocast_dtype(device.type)}

    def one(zs: np.ndarray) -> None:
        with torch.no_grad(), torch.autocast(**cast):
            rows = np.clip(zs[:, None] + np.arange(-half, half + 1)[None], 0, depth - 1)
            x = torch.from_numpy(stack[rows]).to(device)
            if device.type == "cpu":
                x = x.contiguous(memory_format=torch.channels_last)  # see load_model
            if use_ctx:
                loc = slice_location(zs, bottom, top)
                ctx = make_context([age] * len(zs), [sex] * len(zs),
                                   [None if impaired is None else int(bool(impaired))] * len(zs), loc).to(device)
                y = generator(x, ctx)
            else:
                y = generator(x)
            out[zs] = y.float().clamp(0, 1)[:, 0].cpu().numpy()

    batches = [todo[b0:b0 + batch_size] for b0 in range(0, len(todo), batch_size)]
    workers = cpu_slice_workers(device, len(batches))
    with tqdm(total=len(batches), desc="slices", disable=not progress, leave=False) as bar:
        if workers == 1:
            for zs in batches:
                one(zs)
                bar.update()
        else:
            from concurrent.futures import ThreadPoolExecutor

            threads = torch.get_num_threads()
            torch.set_num_threads(1)  # each worker runs its slices on its own core
            try:
                with ThreadPoolExecutor(workers, thread_name_prefix="synth7t-slices") as pool:
                    for _ in pool.map(one, batches):
                        bar.update()
            finally:
                torch.set_num_threads(threads)
    vol = np.transpose(out, (2, 1, 0))
    if mask is not None:
        vol = vol * mask
    return np.ascontiguousarray(vol, dtype=np.float32)


def predict_volume_patches(
    generator, t3: np.ndarray, *, mask: Optional[np.ndarray] = None, batch_size: Optional[int] = None,
    overlap: int = DEFAULT_OVERLAP, progress: bool = False,
) -> np.ndarray:
    """Predict a synthetic 7T volume with a patch-trained baseline (V-Net, WATNet) by sliding window.

    The volume is taken in the training layout ``(Z, H, W)`` and cropped to the bounding box of the brain mask
    (of the whole volume without a mask); a 3D network then slides windows of its ``patch_size`` over that box,
    WATNet-2D slides 2D windows over the stack of every brain slice with its neighbours (clamped at the grid's
    edges, as in training), the slices batched. Windows overlap by ``overlap`` voxels and are blended with
    Gaussian weights (:func:`synth7t.training.patches.sliding_window_predict`).

    Args:
        generator: a V-Net or WATNet (its ``config`` gives the patch geometry).
        t3: normalised 3T volume ``(X, Y, Z)`` on the grid.
        mask: optional brain mask ``(X, Y, Z)``; the output is zero outside it.
        batch_size: windows per forward pass (default :func:`default_batch_size`).
        overlap: voxels shared by neighbouring windows (8 in the paper's runs of Cui et al.'s code).
        progress: a tqdm bar over the windows.

    Returns:
        float32 ``(X, Y, Z)`` in [0, 1].

    Raises:
        ValueError: a generator without a patch geometry, a bad volume, mask or overlap.
    """
    import torch

    geometry = patch_geometry(getattr(generator, "config", None))
    if geometry is None:
        raise ValueError("generator is not a patch-trained baseline (V-Net or WATNet); use predict_volume")
    t3 = np.asarray(t3, dtype=np.float32)
    if t3.ndim != 3:
        raise ValueError(f"t3 must be a 3D volume, got shape {t3.shape}")
    if not np.all(np.isfinite(t3)):
        raise ValueError("t3 contains non-finite values")
    device = next(generator.parameters()).device
    batch_size = int(batch_size or default_batch_size(device, geometry))
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    stack = np.transpose(t3, (2, 1, 0))  # (Z, H=AP, W=LR): the training layout
    if mask is not None:
        mask = np.asarray(mask) > 0
        if mask.shape != t3.shape:
            raise ValueError(f"mask shape {mask.shape} differs from the 3T's {t3.shape}")
        box = nonzero_box(np.transpose(mask, (2, 1, 0)))
        if box is None:
            return np.zeros_like(t3)
    else:
        box = tuple(slice(0, n) for n in stack.shape)
    out = np.zeros_like(stack)
    size = geometry.size
    if geometry.spatial_dims == 3:
        x = torch.from_numpy(np.ascontiguousarray(stack[box]))[None, None].to(device)
        pred = sliding_window_predict(generator, x, patch_size=size, overlap=overlap, batch_size=batch_size,
                                      progress=progress)
        out[box] = pred.float().clamp(0, 1)[0, 0].cpu().numpy()
    else:
        half = geometry.n_input_slices // 2
        depth = stack.shape[0]
        zs = np.arange(box[0].start, box[0].stop)
        if mask is not None:
            zs = zs[np.transpose(mask, (2, 1, 0))[zs].any(axis=(1, 2))]
        from tqdm.auto import tqdm

        chunk = 16  # slices per call: the windows of 16 slices are batched together
        for c0 in tqdm(range(0, len(zs), chunk), desc="slices", disable=not progress, leave=False):
            z = zs[c0:c0 + chunk]
            rows = np.clip(z[:, None] + np.arange(-half, half + 1)[None], 0, depth - 1)
            x = torch.from_numpy(np.ascontiguousarray(stack[rows][:, :, box[1], box[2]])).to(device)
            pred = sliding_window_predict(generator, x, patch_size=size, overlap=overlap, batch_size=batch_size)
            out[z, box[1], box[2]] = pred.float().clamp(0, 1)[:, 0].cpu().numpy()
    vol = np.transpose(out, (2, 1, 0))
    if mask is not None:
        vol = vol * mask
    return np.ascontiguousarray(vol, dtype=np.float32)


def released_normalise(volume: np.ndarray, clip: Sequence[float] = (1, 99)) -> np.ndarray:
    """The authors' intensity recipe (their ``min_max`` with ``clip``): ``(v - p_lo) / (p_hi - p_lo)`` with the
    percentiles of the non-zero voxels; the volume itself is not clipped, as in their ``pickling.py``.

    Raises:
        ValueError: a volume without two distinct non-zero values.
    """
    v = np.asarray(volume, dtype=np.float32)
    inside = v[v > 0]
    if inside.size < 2:
        raise ValueError("the volume has no brain (fewer than two non-zero voxels) to normalise")
    lo, hi = np.percentile(inside, [float(clip[0]), float(clip[1])])
    if not hi > lo:
        raise ValueError(f"the volume's {clip[0]}th and {clip[1]}th percentiles are equal ({lo}); nothing to scale")
    return ((v - lo) / (hi - lo)).astype(np.float32)


def predict_volume_released(
    generator, volume: np.ndarray, recipe: dict, *, age: float, sex: str, impaired: Optional[bool],
    mask: Optional[np.ndarray] = None, batch_size: Optional[int] = None, progress: bool = False,
) -> np.ndarray:
    """Predict with an imported network of the authors (:class:`synth7t.models.GicquelUNet`) as their weights were
    trained (``recipe``: ``model.json``'s ``input``, see :mod:`synth7t.released.importer`).

    ``volume`` is a 3T on their template's grid, brain-extracted (zero outside the brain), in raw intensities: it is
    normalised with :func:`released_normalise`, sliced along ``recipe["slice_axis"]``; slice ``j`` is predicted
    from the slices ``j, j + 1, j + 2`` (zeros past the last; ``recipe["stack"] == "centre"`` takes ``j - 1, j,
    j + 1``, as their inference script places its outputs), each padded symmetrically to a multiple of
    ``recipe["grid_divisor"]`` and cropped back, with the tokens age, sex, [diagnosis] and the position
    ``2 (j - mid) / n_slices`` (mid: the middle of the brain's slices along the axis).

    Returns:
        float32 volume of ``volume``'s shape in their normalised scale; zero outside ``mask`` (default: the
        non-zero voxels of ``volume``) and on the slices without brain.
    """
    import torch
    import torch.nn.functional as F

    from ..models import context_tokens, make_context

    v = np.asarray(volume, dtype=np.float32)
    if v.ndim != 3:
        raise ValueError(f"volume must be 3D, got shape {v.shape}")
    if not np.all(np.isfinite(v)):
        raise ValueError("volume contains non-finite values")
    brain = (v > 0) if mask is None else (np.asarray(mask) > 0)
    if brain.shape != v.shape:
        raise ValueError(f"mask shape {brain.shape} differs from the volume's {v.shape}")
    axis = int(recipe["slice_axis"])
    cfg = generator.config
    n_in = int(cfg.in_channels)
    stack = np.moveaxis(released_normalise(v, recipe.get("clip_percentiles", (1, 99))), axis, 0)
    along = brain.any(axis=tuple(a for a in range(3) if a != axis))
    todo = np.flatnonzero(along)
    out = np.zeros_like(stack)
    if not len(todo):
        return np.moveaxis(out, 0, axis)
    bottom, top = int(todo[0]), int(todo[-1])
    first = 0 if recipe.get("stack", "first") == "first" else -(n_in // 2)
    padded = np.concatenate([np.zeros((n_in, *stack.shape[1:]), np.float32), stack,
                             np.zeros((n_in, *stack.shape[1:]), np.float32)])  # zeros beyond either end
    divisor = int(recipe.get("grid_divisor") or 2 ** cfg.n_downsamplings)
    h, w = stack.shape[1:]
    r1, r2 = (-h) % divisor, (-w) % divisor
    pad = (r2 // 2, r2 - r2 // 2, r1 // 2, r1 - r1 // 2)
    device = next(generator.parameters()).device
    batch_size = int(batch_size or default_batch_size(device))
    n_slices = int(recipe["n_slices"])
    from tqdm.auto import tqdm

    with torch.no_grad():
        for b0 in tqdm(range(0, len(todo), batch_size), desc="slices", disable=not progress, leave=False):
            js = todo[b0:b0 + batch_size]
            rows = js[:, None] + first + np.arange(n_in)[None] + n_in
            x = F.pad(torch.from_numpy(padded[rows]), pad).to(device)
            ctx = make_context([age] * len(js), [sex] * len(js),
                               [None if impaired is None else int(bool(impaired))] * len(js),
                               (2 * js - (top + bottom)) / float(max(top - bottom, 1)))
            tokens = context_tokens(ctx, cfg.tokens, brain_extent=float(max(top - bottom, 1)), n_slices=n_slices)
            y = generator(x, tokens.to(device)).float()[:, 0]
            out[js] = y[:, pad[2]:pad[2] + h, pad[0]:pad[0] + w].cpu().numpy()
    return np.ascontiguousarray(np.moveaxis(out, 0, axis) * brain, dtype=np.float32)
