"""A grid volume as a stack of axial, coronal or sagittal slices, and back (the geometry of 2.5D slicing).

The paper's models slice the 7T grid axially; its discussion notes slicing artefacts in coronal views of the medial
temporal lobe and proposes multi-view 2D training. Here a model may slice along any of the three planes (the slice
cache stores each plane's stacks; :mod:`synth7t.inference.fusion` fuses per-plane predictions into one volume and
:mod:`synth7t.evaluation.slicing` measures what slicing leaves behind).
**Planes and stacks.** A grid volume is ``(X, Y, Z)`` = (left-right, anterior-posterior, inferior-superior). A
plane's *stack* is the volume as a pile of that plane's slices, ``(S, H, W)``, the layout the slice cache stores and
the networks read:

============ =========== ======================== =============================================================
plane        slices      stack ``(S, H, W)``      note
============ =========== ======================== =============================================================
``axial``    along Z     ``(Z, Y, X)``            the paper's (AP, LR) slices, e.g. 288 x 224
``coronal``  along Y     ``(Y, Z, X)``            H is the grid's depth, padded to ``pad_multiple`` (see below)
``sagittal`` along X     ``(X, Z, Y)``            H likewise; W is anterior-posterior
============ =========== ======================== =============================================================

The grid's depth (its number of axial slices) varies by subject and is rarely divisible by a U-Net's
downsampling factor, so coronal and sagittal stacks are zero-padded at the superior end to a multiple of
``pad_multiple`` rows; :func:`from_plane_stack` crops the padding away. The round trip through any plane is
exact (pure transposition and padding): see ``tests/test_views.py``.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from ..models.config import PLANES, check_planes

__all__ = ["PLANES", "PLANE_AXIS", "PAD_MULTIPLE", "plane_name", "as_volume", "to_plane_stack", "from_plane_stack",
           "reslice", "padded_height", "brain_range"]

#: The grid axis each plane's slices are taken along (X left-right, Y anterior-posterior, Z inferior-superior).
PLANE_AXIS = {"axial": 2, "coronal": 1, "sagittal": 0}
#: Axis order of each plane's stack ``(S, H, W)`` from a grid volume ``(X, Y, Z)``.
_STACK_ORDER = {"axial": (2, 1, 0), "coronal": (1, 2, 0), "sagittal": (0, 2, 1)}
#: Coronal and sagittal stack heights (the grid's depth) are padded to a multiple of this by default: 2^5, the most
#: downsamplings any preset uses (the paper's remark on 288 and 224).
PAD_MULTIPLE = 32


def plane_name(plane: str) -> str:
    """``plane`` checked and spelt out (``"a"`` -> ``"axial"``); an unknown plane raises ``ValueError``."""
    return check_planes([plane], "plane")[0]


def as_volume(volume: np.ndarray, what: str = "volume") -> np.ndarray:
    """``volume`` as an array, checked to be a 3D grid volume ``(X, Y, Z)`` (``ValueError`` names ``what``)."""
    v = np.asarray(volume)
    if v.ndim != 3:
        raise ValueError(f"{what} must be a 3D grid volume (X, Y, Z), got shape {v.shape}")
    return v


def padded_height(depth: int, pad_multiple: int = PAD_MULTIPLE) -> int:
    """``depth`` rounded up to a multiple of ``pad_multiple`` (the H of coronal and sagittal stacks)."""
    if isinstance(pad_multiple, bool) or not isinstance(pad_multiple, (int, np.integer)) or pad_multiple < 1:
        raise ValueError(f"pad_multiple must be a positive integer, got {pad_multiple!r}")
    return -(-int(depth) // int(pad_multiple)) * int(pad_multiple)


def to_plane_stack(volume: np.ndarray, plane: str, *, height: Optional[int] = None,
                   pad_multiple: int = 1) -> np.ndarray:
    """A grid volume as a pile of one plane's slices.

    Args:
        volume: ``(X, Y, Z)`` grid volume.
        plane: ``axial``, ``coronal`` or ``sagittal``.
        height: coronal/sagittal only: pad H (the depth Z) with zeros at the superior end to this many rows.
        pad_multiple: coronal/sagittal only, without ``height``: pad H to a multiple of this (1: no padding).

    Returns:
        ``(S, H, W)`` (see the module's table); a view of ``volume`` when nothing is padded, else a new array.

    Raises:
        ValueError: not a 3D volume, an unknown plane, a ``height`` smaller than the depth.
    """
    v, plane = as_volume(volume), plane_name(plane)
    stack = np.transpose(v, _STACK_ORDER[plane])
    if plane == "axial":
        return stack
    depth = v.shape[2]
    h = padded_height(depth, pad_multiple) if height is None else int(height)
    if h < depth:
        raise ValueError(f"height {h} is smaller than the grid's depth {depth}")
    if h == depth:
        return stack
    out = np.zeros((stack.shape[0], h, stack.shape[2]), dtype=stack.dtype)
    out[:, :depth] = stack
    return out


def from_plane_stack(stack: np.ndarray, plane: str, shape: Sequence[int]) -> np.ndarray:
    """The inverse of :func:`to_plane_stack`: a plane's stack (padding cropped) back as the ``(X, Y, Z)`` volume.

    Args:
        stack: ``(S, H, W)`` of ``plane``; H may exceed the depth (padding), never fall short of it.
        plane: the stack's plane.
        shape: the grid volume's shape ``(X, Y, Z)``.

    Raises:
        ValueError: a stack whose shape does not fit ``shape`` in that plane.
    """
    plane = plane_name(plane)
    s = np.asarray(stack)
    shape = tuple(int(n) for n in shape)
    if s.ndim != 3 or len(shape) != 3:
        raise ValueError(f"stack must be (S, H, W) and shape (X, Y, Z), got {s.shape} and {shape}")
    order = _STACK_ORDER[plane]
    want = tuple(shape[a] for a in order)
    if plane != "axial" and s.shape[1] >= want[1]:
        s = s[:, :want[1]]
    if s.shape != want:
        raise ValueError(f"a {plane} stack of a {shape} grid has shape {want} (H may be padded), got {s.shape}")
    return np.transpose(s, np.argsort(order))


def reslice(stack: np.ndarray, source: str, target: str, shape: Sequence[int], *,
            pad_multiple: int = 1) -> np.ndarray:
    """Re-cut a stack of ``source`` slices into ``target`` slices (e.g. axial -> coronal), exactly.

    Args:
        stack: ``(S, H, W)`` stack of ``source``.
        source, target: planes.
        shape: the grid volume's shape ``(X, Y, Z)``.
        pad_multiple: padding of the target stack (see :func:`to_plane_stack`).
    """
    return to_plane_stack(from_plane_stack(stack, source, shape), target, pad_multiple=pad_multiple)


def brain_range(mask: np.ndarray, plane: str) -> tuple[int, int]:
    """``(bottom, top)``: the first and last slice index of ``plane`` that hold brain (the slice-location range
    of §2.4 along that plane's axis; for ``axial`` the preprocessing record's ``bottom_slice``/``top_slice``).

    Raises:
        ValueError: an empty mask.
    """
    m = as_volume(mask, "mask") > 0
    axis = PLANE_AXIS[plane_name(plane)]
    other = tuple(a for a in range(3) if a != axis)
    idx = np.flatnonzero(m.any(axis=other))
    if idx.size == 0:
        raise ValueError("the brain mask is empty: no slice location can be defined")
    return int(idx[0]), int(idx[-1])
