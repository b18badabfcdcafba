"""The models of a run in one table, from their model cards: what each is, how long it trained and on what, and
whether it beats copying its input, so that every chapter showing their images can say it beside them."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Union

import pandas as pd

from .modelcard import read_model_card
from ..data.names import display_name

__all__ = ["trained_models", "run_models"]

PathLike = Union[str, Path]


def _start(init_from) -> str:
    if not init_from:
        return "random weights"
    p = Path(init_from)
    return display_name(p.parent.name if p.name == "model" else p.name)


def run_models(train_dir: PathLike) -> dict:
    """``{model_name: model folder}`` of every exported model under a run's ``02_train`` folder, by name."""
    return {p.parent.name: p for p in sorted(Path(train_dir).glob("*/model")) if (p / "model.json").is_file()}


def trained_models(model_dirs: Mapping[str, PathLike]) -> pd.DataFrame:
    """One row per model folder (``{model_name: folder}``, e.g. ``runs/<run>/02_train/<name>/model``).

    Columns: ``image type`` (display name), ``preset``, ``parameters`` (millions), ``steps``, ``batch``,
    ``minutes`` (training time), ``on`` (device and threads), ``data`` (simulated or real), ``output`` (direct, or
    the 3T plus a residual), ``started from`` (random weights or another model), ``val PSNR gain`` (dB over the 3T
    input on its validation slices) and ``beats identity``. Facts a card does not hold (an older export) are empty.

    Raises:
        ValueError: a folder without a model card.
    """
    rows = []
    for name, folder in model_dirs.items():
        card = read_model_card(folder)
        if card is None:
            raise ValueError(f"{folder}: no model card (model_card.json); re-export the model with synth7t")
        train, val, model = card["training"], card["validation"], card["model"]
        seconds = train.get("seconds")
        device = train.get("device")
        rows.append({
            "image type": display_name(name), "preset": model.get("preset"),
            "parameters": None if model.get("parameters") is None else round(model["parameters"] / 1e6, 2),
            "steps": train.get("steps"), "batch": train.get("batch_size"),
            "minutes": None if seconds is None else round(seconds / 60, 1),
            "on": None if device is None else f"{device}" + (f", {train['threads']} thread(s)"
                                                           if str(device) == "cpu" and train.get("threads") else ""),
            "data": {True: "simulated", False: "real"}.get(card["training_data"].get("simulated"), "unknown"),
            "output": "3T + residual" if train.get("global_residual") else "direct",
            "started from": _start(train.get("init_from")),
            "val PSNR gain": None if val.get("psnr_gain_db") is None else round(val["psnr_gain_db"], 2),
            "beats identity": val.get("beats_identity"),
        })
    return pd.DataFrame(rows)
