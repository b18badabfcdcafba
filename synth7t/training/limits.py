"""What limits a short training: each model retrained with one setting changed, scored against the identity.

A minute-long CPU training can stop short of what its network could learn for several reasons, and each has a
test: more steps (if the gain grows, the run was too short), another learning rate, a larger crop (more context
per sample), a training without a deviation the demo presets make (the global residual, the perceptual term), and
the ceiling that the target's own noise sets (no prediction can match the noise of the real 7T: a noise-free 7T
would score ``-20 log10(sigma)`` dB against it, ``sigma`` the 7T's noise SD in white matter). ``benchmarks/
demo_training_limits.py`` trains the variants of :func:`limit_variants` on the demo cohort and writes one row per
run to ``benchmarks/results/demo_training_limits.tsv``; chapter 02 reads it with :func:`limits_for` and says which
change helped most with :func:`limits_sentence`.

The score of a run is its last validation: PSNR and SSIM of the model and of the 3T input on the same validation
slices (:mod:`synth7t.training.validation`); ``gain_db`` is the model's PSNR minus the input's.
"""

from __future__ import annotations

import ast

from pathlib import Path
from typing import Dict, Optional, Union

import numpy as np
import pandas as pd

__all__ = ["LIMITS_RESULTS", "limit_variants", "limits_for", "limits_sentence", "noise_ceiling_db"]

#: the committed results of ``benchmarks/demo_training_limits.py`` (one row per model and variant)
LIMITS_RESULTS = Path(__file__).resolve().parent.parent / "benchmarks" / "results" / "demo_training_limits.tsv"

#: what each variant tests, in words (the ``variant`` column)
VARIANT_MEANING = {
    "as in the demo": "the demo profile's settings",
    "2x steps": "twice the samples per epoch (too few steps?)",
    "2x learning rate": "twice the generator's learning rate (too small a rate?)",
    "128 x 128 crops": "crops of 128 x 128 instead of 96 x 96 (too little context?)",
    "no perceptual term": "L1 alone (what the perceptual term adds)",
    "no global residual": "the network predicts the 7T itself, as the paper's (what the residual adds)",
    "from scratch": "the generator starts from random weights, as the paper's (what the U-Net start adds)",
}


def limit_variants(model_name: str, preset: str, overrides: dict) -> Dict[str, dict]:
    """The settings to retrain a demo model with: ``{variant: config overrides}`` (the profile's, changed once).

    Args:
        model_name: the demo profile's ``model_name`` (``unet-nodiag``, ``gan-unet-nodiag``, ``vnet``, ``watnet``,
            ``unet-mv-nodiag``).
        preset: its training preset.
        overrides: its ``config_overrides`` (the samples per epoch, ...).
    """
    from .config import TrainConfig

    base = TrainConfig.from_preset(preset, **overrides)
    out = {"as in the demo": dict(overrides),
           "2x steps": {**overrides, "samples_per_epoch": 2 * base.samples_per_epoch}}
    if model_name in ("unet-nodiag", "vnet", "watnet"):
        out["2x learning rate"] = {**overrides, "lr_g": 2 * base.lr_g}
    if model_name == "unet-nodiag":
        out["128 x 128 crops"] = {**overrides, "crop": [128, 128]}
        out["no perceptual term"] = {**overrides, "lambda_perc": 0.0}
    if model_name in ("unet-nodiag", "vnet"):
        out["no global residual"] = {**overrides, "global_residual": False}
    if base.init_from:
        out["from scratch"] = {k: v for k, v in overrides.items() if k not in ("init_from", "lr_g")}
    return out


def noise_ceiling_db(sigma: float) -> float:
    """The PSNR (images in [0, 1]) of a noise-free image against its copy with noise of SD ``sigma``."""
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma!r}")
    return float(-20.0 * np.log10(sigma))


def limits_for(model_name: str, results: Union[str, Path, pd.DataFrame, None] = None,
               overrides: Optional[dict] = None, generator_version: Optional[str] = None) -> pd.DataFrame:
    """The rows of one model in the results file, with the change of each variant's gain over the demo's.

    Args:
        overrides: the training's ``config_overrides``; when given, the file's "as in the demo" row must have been
            trained with the same ones (``init_from`` may name another folder), so that a profile changed since the
            measurement is not described by it.
        generator_version: the demo cohort's generator version (:func:`synth7t.data.layout.dataset_facts`); when given,
            the rows must have been measured on a cohort of that version (another simulation is another cohort).

    Raises:
        FileNotFoundError: no results file (the message gives the command that writes it).
        ValueError: the file has no rows for ``model_name``, or they were measured with other settings.
    """
    if not isinstance(results, pd.DataFrame):
        path = Path(results or LIMITS_RESULTS)
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: run `python benchmarks/demo_training_limits.py` after "
                                    "`make demo` has preprocessed data/demo, and commit the file")
        results = pd.read_csv(path, sep="\t")
    rows = results[results["model"] == model_name].copy()
    if rows.empty or "as in the demo" not in set(rows["variant"]):
        raise ValueError(f"no training-limits rows for model {model_name!r} (models: "
                         f"{', '.join(sorted(results['model'].unique()))})")
    base = rows.loc[rows["variant"] == "as in the demo"].iloc[0]
    if overrides is not None:
        measured = ast.literal_eval(str(base["overrides"]))
        ours = {k: v for k, v in overrides.items() if k != "init_from"}
        theirs = {k: v for k, v in measured.items() if k != "init_from"}
        if ours != theirs or ("init_from" in overrides) != ("init_from" in measured):
            raise ValueError(f"the training limits of {model_name!r} were measured with {measured}, not this run's "
                             f"{dict(overrides)}: run `python benchmarks/demo_training_limits.py` again")
    if generator_version is not None:
        measured_on = str(base["generator_version"]) if "generator_version" in rows.columns else "unrecorded"
        if measured_on != str(generator_version):
            raise ValueError(f"the training limits of {model_name!r} were measured on the demo cohort of generator "
                             f"version {measured_on}, this run's is {generator_version}: run "
                             "`python benchmarks/demo_training_limits.py` again")
    rows["vs_demo_db"] = rows["gain_db"] - base["gain_db"]
    return rows.reset_index(drop=True)


def limits_sentence(rows: pd.DataFrame, ceiling_db: Optional[float] = None) -> str:
    """One paragraph on what limits the model, from :func:`limits_for`'s rows."""
    base = rows.loc[rows["variant"] == "as in the demo"].iloc[0]
    text = (f"As in the demo ({int(base['steps'])} steps, {base['seconds']:.0f} s), the model scores "
            f"{base['psnr']:.2f} dB on its validation slices, {base['gain_db']:+.2f} dB over copying its 3T input "
            f"({base['psnr_3t']:.2f} dB)")
    if ceiling_db is not None:
        text += f"; the real 7T's own noise caps any prediction at about {ceiling_db:.1f} dB"
    others = rows[rows["variant"] != "as in the demo"].sort_values("vs_demo_db", ascending=False)
    parts = [f"{r.variant} {r.vs_demo_db:+.2f} dB" for r in others.itertuples()]
    if parts:
        text += ". Changed one at a time: " + ", ".join(parts)
        best = others.iloc[0]
        if best["vs_demo_db"] > 0.05:
            text += f". The largest gain comes from {VARIANT_MEANING.get(best['variant'], best['variant'])}"
        else:
            text += ". No single change gains more than 0.05 dB"
    return text + "."
