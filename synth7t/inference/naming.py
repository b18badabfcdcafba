"""The names of synth7t's prediction files: one function for every prediction synth7t names itself.

``<key>_acq-<name>_space-<space>_T1w.nii.gz``: ``key`` is the subject (``sub-01_ses-01``) or, for a lone file, the
input's name without ``.nii(.gz)``, ``_T1w`` and its ``acq-`` entity (:func:`input_key`); ``name`` is the image type (a model's name; ``synth7t`` for the
batch command); ``space`` is where the voxels lie (its file tag in brackets):

- ``grid`` (``grid``): the grid the model predicted on (a pair's training grid, a lone scan's aligned grid, an
  imported model's 7T template);
- ``7T`` (``7T``): a pair's full 7T image grid (the crop undone);
- ``native`` (``3T``): the subject's own 3T image grid.

An uncertainty map goes beside its prediction (:func:`synth7t.inference.fusion.uncertainty_path`). A file the user names
(``synth7t predict scan.nii.gz -o out.nii.gz``) keeps that name; its native-space copy is :func:`native_path`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Union

PathLike = Union[str, Path]

__all__ = ["SPACES", "prediction_path", "input_key", "native_path"]

#: the spaces a prediction can be written in, and their file tags
SPACES = {"grid": "grid", "7T": "7T", "native": "3T"}


def prediction_path(out_dir: PathLike, key: str, name: str = "synth7t", space: str = "grid") -> Path:
    """Where a prediction of ``key`` by image type ``name`` in ``space`` is written (see the module docstring).

    Raises:
        ValueError: an unknown space, or a key or name that would make a path (a ``/``) or is empty.
    """
    if space not in SPACES:
        raise ValueError(f"unknown space {space!r}; known: {', '.join(SPACES)}")
    for what, value in (("key", key), ("name", name)):
        if not value or "/" in str(value) or "\\" in str(value):
            raise ValueError(f"{what} must be a non-empty file-name part, got {value!r}")
    return Path(out_dir) / f"{key}_acq-{name}_space-{SPACES[space]}_T1w.nii.gz"


def input_key(t3_path: PathLike) -> str:
    """The key of a lone input file: its name without ``.nii(.gz)``, ``_T1w`` and the ``acq-`` entity (the
    prediction's own ``acq-<name>`` takes its place): ``sub-01_ses-2_acq-3T_T1w.nii.gz`` -> ``sub-01_ses-2``,
    ``scan.nii`` -> ``scan``."""
    stem = Path(t3_path).name.split(".nii")[0]
    parts = [p for p in stem.split("_") if p != "T1w" and not p.startswith("acq-")]
    return "_".join(parts) or stem


def native_path(out_path: PathLike) -> Path:
    """The native-space copy of a prediction file the user named: ``out.nii.gz`` -> ``out_space-native.nii.gz``."""
    p = Path(out_path)
    if ".nii" not in p.name:
        raise ValueError(f"{p}: a prediction file ends in .nii or .nii.gz")
    return p.with_name(p.name.replace(".nii", "_space-native.nii", 1))
