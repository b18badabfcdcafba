"""Model cards: what an exported model is, what it was trained on, how it scored, and what it is not for.

Every model folder that :meth:`synth7t.training.trainer.Trainer.export` writes (``runs/<run>/02_train/<model_name>/model``)
carries, beside ``generator.safetensors`` and ``model.json``:

* ``model_card.json``: the facts, machine-readable (:func:`build_model_card`, :func:`read_model_card`);
* ``MODEL_CARD.md``: the same facts for people (:func:`model_card_markdown`).

The card says whether the training data were **simulated**. A model trained on the demo cohort (simulated from
MNI template anatomy by :mod:`synth7t.simulate.demo`) has learned the simulator's 3T-to-7T mapping, not a scanner's, and
blurs real scans; :func:`simulated_training_warning` gives the one line that ``synth7t predict`` prints for such
a model. Whether data are simulated is read from what the data say about themselves (the slice cache's
``cache.json``, the preprocessing derivative's ``dataset_description.json`` and its source dataset's, the
``"Simulated": true`` of the demo's JSON sidecars; :func:`training_data_facts`), never guessed from a name.

This module reads and writes small JSON and text files only; it never imports the demo or the orchestration.
"""

from __future__ import annotations

import csv
import datetime as _dt
import itertools
import json
import math
import os
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

from ..runtime.batch import read_json, write_text
from ..data.layout import dataset_facts

__all__ = [
    "CARD_FORMAT",
    "CARD_JSON",
    "CARD_MARKDOWN",
    "ModelCardWarning",
    "SimulatedTrainingWarning",
    "BelowIdentityWarning",
    "training_data_facts",
    "read_validation_log",
    "build_model_card",
    "model_card_markdown",
    "write_model_card",
    "read_model_card",
    "simulated_training_warning",
    "identity_warning",
    "model_card_warnings",
]

PathLike = Union[str, Path]

#: ``format`` of the cards this module writes.
CARD_FORMAT = "synth7t-model-card-1"
#: machine-readable card, in the model folder
CARD_JSON = "model_card.json"
#: human-readable card, in the model folder
CARD_MARKDOWN = "MODEL_CARD.md"

#: the paper's training set (164 usable pairs, 28 held out): below a tenth of it, generalisation is doubtful
_FEW_SUBJECTS = 14

#: the adversarial objectives of :func:`synth7t.training.losses.critic_loss`
_OBJECTIVES = {
    "bce": "binary cross-entropy (log) adversarial loss with gradient penalty (the paper, §2.5, and its code)",
    "wasserstein": "Wasserstein critic loss with gradient penalty (WGAN-GP)",
}


class ModelCardWarning(UserWarning):
    """What a model's card says its user must know before trusting its output (:func:`model_card_warnings`)."""


class SimulatedTrainingWarning(ModelCardWarning):
    """A model trained on simulated data is being used (see :func:`simulated_training_warning`)."""


class BelowIdentityWarning(ModelCardWarning):
    """A model that did not beat copying its 3T input on its validation subjects (see :func:`identity_warning`)."""


# ------------------------------------------------------------------------------------------ small helpers


def _jsonable(value: Any) -> Any:
    """Plain JSON values: numpy scalars become Python numbers, NaN and infinities ``None``, paths strings,
    tuples lists (recursively)."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist") and hasattr(value, "ndim"):  # numpy / torch scalars and arrays
        return _jsonable(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _number(value: Any) -> Any:
    """A CSV cell as a number when it is one (``"3"`` -> 3, ``"27.5"`` -> 27.5, ``""`` / ``"nan"`` -> None)."""
    if not isinstance(value, str):
        return _jsonable(value)
    text = value.strip()
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        pass
    try:
        f = float(text)
    except ValueError:
        return text
    return f if math.isfinite(f) else None


def _read_json(path: Path) -> Optional[dict]:
    data = read_json(path)
    return data if isinstance(data, dict) else None


def _model_folder(model_dir: PathLike) -> Path:
    """The model folder itself when a run folder (holding ``model/``) is given, as ``synth7t.inference.load_model``."""
    d = Path(model_dir)
    if (d / "model").is_dir() and not (d / "model.json").is_file() and not (d / CARD_JSON).is_file():
        return d / "model"
    return d


# ------------------------------------------------------------------------------------------ training data


def _sidecars_say_simulated(root: Path, limit: int = 20) -> bool:
    """Whether any of the first ``limit`` anatomical JSON sidecars under ``root`` says ``"Simulated": true``."""
    for side in itertools.islice(root.glob("sub-*/**/anat/*.json"), limit):
        data = _read_json(side)
        if data and data.get("Simulated") is True:
            return True
    return False


def _dataset_root_facts(root: Path) -> Dict[str, Any]:
    facts = dataset_facts(root)
    if not facts["simulated"] and root.is_dir() and _sidecars_say_simulated(root):
        facts["simulated"] = True
    return {"name": facts["name"], "simulated": bool(facts["simulated"])}


def _derivatives_facts(derivatives: Path) -> Dict[str, Any]:
    """Name and simulated flag of the raw dataset a preprocessing derivative was made from.

    The derivative's ``dataset_description.json`` names its source (``SourceDatasets[].URL``, written by
    ``synth7t.preprocess``); without it, ``<data_dir>/derivatives/<pipeline>`` is assumed. ``simulated`` is
    None when no source dataset can be found.
    """
    desc = _read_json(derivatives / "dataset_description.json") or {}
    candidates: List[Path] = []
    for src in desc.get("SourceDatasets") or []:
        if isinstance(src, dict) and src.get("URL"):
            candidates.append(Path(str(src["URL"]).removeprefix("file://")))
    if derivatives.parent.name == "derivatives":
        candidates.append(derivatives.parent.parent)
    for root in candidates:
        if root.is_dir():
            return _dataset_root_facts(root)
    return {"name": str(desc.get("Name") or derivatives.name), "simulated": None}


def _find_derivatives(subject_dir: Path) -> Optional[Path]:
    """The preprocessing derivative folder above a subject's ``anat`` folder (the one holding its description)."""
    for parent in subject_dir.parents:
        if (parent / "dataset_description.json").is_file():
            return parent
    return None


def _count_subjects(volumes: Sequence[Mapping[str, Any]], validation_keys: Optional[Iterable[str]]
                    ) -> Dict[str, Any]:
    """Participants and scans per role (train, validation, test) from a cache's volume rows."""
    val_keys = set(validation_keys or [])
    val_people = {k.split("_")[0] for k in val_keys}
    people: Dict[str, set] = {"train": set(), "validation": set(), "test": set()}
    scans = {"train": 0, "validation": 0, "test": 0}
    splits = set()
    on_test = False
    for row in volumes:
        key, split = str(row["key"]), str(row.get("split") or "unsplit")
        splits.add(split)
        person = key.split("_")[0]
        if split == "test":
            role = "validation" if key in val_keys else "test"
            on_test = on_test or key in val_keys  # a trainer that validates on test subjects: said, not hidden
        else:
            role = "validation" if person in val_people else "train"
        people[role].add(person)
        scans[role] += 1
    out: Dict[str, Any] = {"subjects": {k: len(v) for k, v in people.items()}, "scans": scans,
                           "split": "train/test" if splits & {"train", "test"} else "unsplit"}
    if on_test:
        out["validation_on_test_subjects"] = True
    return out


def training_data_facts(source: Any, *, validation_keys: Optional[Iterable[str]] = None) -> Dict[str, Any]:
    """What a model was trained on: the dataset's name, whether it was simulated, subjects per role.

    Args:
        source: the training slice cache (a :class:`synth7t.training.slices.SliceCache` or its folder); or, when there
            is no cache, a preprocessing derivatives folder (``<data_dir>/derivatives/synth7t-preproc``) or a
            raw dataset folder (then the subject counts are unknown).
        validation_keys: the subject keys the trainer validated on (carved from the training side by
            :func:`synth7t.training.slices.validation_keys`); counted as validation instead of training.

    Returns:
        JSON-ready dict: ``name`` (str), ``simulated`` (True, False, or None when it cannot be told),
        ``source`` (``"cache"``, ``"derivatives"`` or ``"dataset"``), and for a cache ``split``
        (``"train/test"`` or ``"unsplit"``), ``subjects`` and ``scans`` (``{"train", "validation", "test"}``
        counts: participants, and sessions); ``validation_on_test_subjects`` when validation keys are test subjects.

    Raises:
        ValueError: ``source`` is none of these folders.
    """
    # a SliceCache carries its folder as .root; a Path has a .root too (its anchor), so paths go first
    root = Path(source) if isinstance(source, (str, os.PathLike)) else Path(source.root)
    meta = _read_json(root / "cache.json")
    if meta is not None:
        volumes: List[Dict[str, Any]] = []
        vol_path = root / "volumes.tsv"
        if vol_path.is_file():
            with open(vol_path, newline="") as f:
                volumes = list(csv.DictReader(f, delimiter="\t"))
        recorded = meta.get("dataset")
        if isinstance(recorded, dict) and "simulated" in recorded:
            facts = {"name": str(recorded.get("name") or "unknown"), "simulated": recorded["simulated"]}
        else:  # a cache built before cache.json recorded its dataset: ask the derivatives it was built from
            derivatives = _find_derivatives(Path(volumes[0]["dir"])) if volumes and volumes[0].get("dir") else None
            facts = (_derivatives_facts(derivatives) if derivatives is not None
                     else {"name": "unknown", "simulated": None})
        return _jsonable({**facts, "source": "cache", **_count_subjects(volumes, validation_keys)})
    desc = _read_json(root / "dataset_description.json")
    if desc is not None and desc.get("DatasetType") == "derivative":
        return _jsonable({**_derivatives_facts(root), "source": "derivatives"})
    if root.is_dir():
        return {**_dataset_root_facts(root), "source": "dataset"}
    raise ValueError(f"{source}: not a slice cache (cache.json), a derivatives folder or a dataset folder; pass "
                     "the cache the model was trained on (Trainer.cache)")


def read_validation_log(run_dir: PathLike) -> List[Dict[str, Any]]:
    """The rows of a run's ``val_log.csv`` (epoch, step, psnr, ssim, psnr_3t, ssim_3t), numbers as numbers.

    Returns:
        one dict per validation, oldest first; ``[]`` when the run has none.
    """
    path = Path(run_dir) / "val_log.csv"
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return [{k: _number(v) for k, v in row.items() if k} for row in csv.DictReader(f)]


# ------------------------------------------------------------------------------------------ building


def _parameters(model_config: Mapping[str, Any]) -> Optional[int]:
    """Trainable parameters of the architecture, built on the meta device (no memory); None if it cannot be."""
    try:
        import torch

        from ..models import build_model

        with torch.device("meta"):
            model = build_model(dict(model_config))
        return int(sum(p.numel() for p in model.parameters()))
    except Exception:  # noqa: BLE001 - a card without a parameter count is still a card
        return None


def _architecture(model_config: Mapping[str, Any]) -> Dict[str, Any]:
    kind = str(model_config.get("kind", "unknown"))
    out: Dict[str, Any] = {"kind": kind}
    if kind == "unet":
        cond = ["age", "sex"] + (["diagnosis"] if model_config.get("use_diagnosis", True) else []) + \
               ["slice location"]
        channels = model_config.get("channels")
        mult = model_config.get("channel_mult") or []
        out.update({"description": "conditional 2D U-Net with cross-attention (the paper's, §2.4)",
                    "input_slices": model_config.get("n_input_slices"),
                    "stage_channels": [channels * m for m in mult] if channels else None,
                    "conditioning": cond})
    else:
        out["description"] = {"vnet": "V-Net (3D patches)", "watnet": "WATNet"}.get(kind, kind)
    out["parameters"] = _parameters(model_config)
    return out


def _patches(train_config: Mapping[str, Any], model_config: Mapping[str, Any]) -> Dict[str, Any]:
    """Patch facts of a baseline trained on patches (V-Net, WATNet): edge, dimensions, sliding-window overlap."""
    kind = model_config.get("kind")
    if kind not in ("vnet", "watnet") or not model_config.get("patch_size"):
        return {}
    dims = 3 if kind == "vnet" else int(model_config.get("spatial_dims") or 2)
    return {"patch_size": int(model_config["patch_size"]), "patch_dims": dims,
            "patch_overlap": train_config.get("patch_overlap")}


def _objective(train_config: Mapping[str, Any], objective: Optional[str]) -> Dict[str, Any]:
    lambda_perc = float(train_config.get("lambda_perc") or 0.0)
    gan = bool(train_config.get("gan"))
    terms: List[Dict[str, Any]] = [{"term": "l1", "weight": 1.0}]
    summary = "L1"
    if lambda_perc > 0:
        backbone = str(train_config.get("perceptual") or "unknown")
        share = train_config.get("perceptual_share")
        terms.append({"term": "perceptual", "weight": lambda_perc, "backbone": backbone, "share_at_identity": share})
        summary += f" + {lambda_perc:.3g} x perceptual ({backbone}" + (
            f"; weight calibrated to {share:.0%} of the loss at the identity)" if share else ")")
    if gan:
        name = objective or train_config.get("adversarial") or "not recorded"
        weight = float(train_config.get("lambda_gan") or 0.0)
        terms.append({"term": "adversarial", "weight": weight, "objective": name,
                      "description": _OBJECTIVES.get(name.lower(), name),
                      "critic": train_config.get("discriminator"), "lambda_gp": train_config.get("lambda_gp"),
                      "n_critic": train_config.get("n_critic"),
                      "first_epoch_weight_divisor": train_config.get("gan_warmup_factor")})
        summary += f" + {weight:g} x adversarial ({name}; critic {train_config.get('discriminator')})"
    return {"summary": summary, "terms": terms}


def _validation(validation: Union[Sequence[Mapping[str, Any]], Mapping[str, Any], None]) -> Dict[str, Any]:
    if validation is None:
        rows: List[Dict[str, Any]] = []
    elif isinstance(validation, Mapping):
        rows = [dict(validation)]
    elif isinstance(validation, Sequence) and not isinstance(validation, str):
        rows = [dict(r) for r in validation]
        if not all(isinstance(r, Mapping) for r in validation):
            raise ValueError("validation must be a dict of metrics or a list of such dicts (val_log.csv rows)")
    else:
        raise ValueError(f"validation must be a dict or a list of dicts, got {type(validation).__name__}")
    rows = [{k: _number(v) for k, v in r.items()} for r in rows]
    rows = [r for r in rows if any(r.get(k) is not None for k in ("psnr", "ssim"))]
    final = rows[-1] if rows else None
    out: Dict[str, Any] = {"metric": "PSNR (dB) and SSIM on brain voxels of validation slices (paper definitions), "
                                     "of the model and of the 3T input against the real 7T",
                           "final": final, "history": rows}
    if final and final.get("psnr") is not None and final.get("psnr_3t") is not None:
        out["psnr_gain_db"] = final["psnr"] - final["psnr_3t"]
    if final and final.get("ssim") is not None and final.get("ssim_3t") is not None:
        out["ssim_gain"] = final["ssim"] - final["ssim_3t"]
    # the identity baseline: copying the 3T input scores psnr_3t / ssim_3t on the same slices
    out["beats_identity"] = (None if "psnr_gain_db" not in out or "ssim_gain" not in out
                             else bool(out["psnr_gain_db"] > 0 and out["ssim_gain"] > 0))
    return out


def _grid(grid: Mapping[str, Any]) -> Dict[str, Any]:
    if not isinstance(grid, Mapping):
        raise ValueError(f"grid must be a dict with spacing_mm and inplane, got {type(grid).__name__}")
    spacing = grid.get("voxel_size_mm", grid.get("spacing_mm"))
    inplane = grid.get("inplane", grid.get("grid_inplane"))
    return {"voxel_size_mm": None if spacing is None else float(spacing),
            "inplane": None if inplane is None else [int(n) for n in inplane],
            "inplane_axes": "(H, W) = (anterior-posterior, left-right), axial slices"}


def _use_and_limits(data: Mapping[str, Any], grid: Mapping[str, Any], validation: Mapping[str, Any],
                    train_config: Mapping[str, Any],
                    patches: Optional[Mapping[str, Any]] = None) -> Tuple[str, List[str]]:
    simulated = data.get("simulated")
    spacing, inplane = grid.get("voxel_size_mm"), grid.get("inplane")
    where = (f"a {spacing:g} mm grid" if spacing else "the training grid") + \
            (f" of {inplane[0]} x {inplane[1]} axial slices" if inplane else "")
    if simulated is True:
        use = ("Demonstration only: the demo notebooks, the book and tests of the pipeline. This model was trained "
               "on simulated data; it has learned the simulator's 3T-to-7T mapping, not a scanner's, and on real "
               "3T scans it blurs them instead of adding 7T detail. Do not use it on real scans.")
    elif simulated is False:
        use = ("Research: 7T-like T1-weighted images from 3T T1-weighted brain MRI preprocessed like the training "
               f"data (synth7t preprocessing onto {where}), for people like those it was trained on. Not for "
               "clinical diagnosis.")
    else:
        use = ("Unknown training data: whether they were real or simulated could not be told. Check the model's "
               "provenance before any use; research only, not for clinical diagnosis.")
    limits = []
    if simulated is True:
        limits.append("Trained on simulated data (a cohort simulated from MNI template anatomy): it blurs real "
                      "scans, and its validation scores measure agreement with the simulator, not with real 7T.")
    limits.append("A synthetic image can invent or remove anatomical detail: compare it with the 3T input and "
                  "do not base clinical decisions on it.")
    limits.append(f"Inputs must be 3T T1-weighted brain MRI, brain-extracted and normalised on {where} (synth7t "
                  "preprocessing); other contrasts, field strengths, pathologies and ages are out of distribution.")
    subjects = data.get("subjects") or {}
    n_train = subjects.get("train")
    if n_train is not None and n_train < _FEW_SUBJECTS:
        limits.append(f"Trained on {n_train} subject(s) only (the paper trained on 136): expect weak "
                      "generalisation to new people and scanners.")
    if subjects and not subjects.get("test"):
        limits.append("No held-out test subjects: this model has not been scored on people it never saw.")
    if data.get("validation_on_test_subjects"):
        limits.append("Validation used test subjects: the test scores are not independent of model selection.")
    if not validation.get("final"):
        limits.append("No validation scores were recorded.")
    elif validation.get("beats_identity") is False:
        limits.append(f"It does not beat copying its 3T input on its validation slices ({_identity_scores(validation)})"
                      ": it degrades the scans it is given.")
    if train_config.get("crop"):
        h, w = train_config["crop"]
        limits.append(f"Trained on random {h} x {w} crops of the slices, predicts whole slices.")
    if patches:
        p, what = patches["patch_size"], ("cubes" if patches["patch_dims"] == 3 else "slice patches")
        limits.append(f"Trained on {p}-voxel {what} inside the brain, predicts whole volumes by sliding window "
                      f"(overlap {patches['patch_overlap']} voxels, Gaussian blending): it sees no context beyond "
                      "a window, and seams between windows are possible.")
    if train_config.get("gan"):
        limits.append("The adversarial objective sharpens the output and can add plausible detail that is not in "
                      "the subject.")
    return use, limits


def _identity_scores(validation: Mapping[str, Any]) -> str:
    final = validation["final"]
    return (f"PSNR {final['psnr']:.2f} dB against {final['psnr_3t']:.2f} dB for the 3T itself, SSIM "
            f"{final['ssim']:.3f} against {final['ssim_3t']:.3f}")


def build_model_card(train_config: Mapping[str, Any], model_config: Mapping[str, Any], *,
                     dataset: Mapping[str, Any], steps: int, epochs_done: int, grid: Mapping[str, Any],
                     validation: Union[Sequence[Mapping[str, Any]], Mapping[str, Any], None],
                     objective: Optional[str]) -> Dict[str, Any]:
    """The model card of an exported model, as a JSON-ready dict.

    Args:
        train_config: the run's resolved training config (``TrainConfig.to_dict()``).
        model_config: the generator's architecture (``model_config.to_dict()``, with ``kind``).
        dataset: what it was trained on, as :func:`training_data_facts` returns (at least ``name`` and
            ``simulated``; ``subjects`` and ``scans`` counts when known).
        steps: training steps (batches) done.
        epochs_done: completed epochs.
        grid: the grid of the training slices: ``spacing_mm`` (or ``voxel_size_mm``) and ``inplane`` (or
            ``grid_inplane``) ``[H, W]``, as ``model.json``'s ``input`` records them.
        validation: the validation rows (``val_log.csv`` through :func:`read_validation_log`, oldest first) or the
            last one: ``psnr``, ``ssim`` of the model and ``psnr_3t``, ``ssim_3t`` of the 3T input.
        objective: the adversarial objective's name for a GAN (e.g. ``"wgan-gp"``, ``"bce"``); None reads it
            from the training config, or records "not recorded". Ignored for a model without a critic.

    Returns:
        dict with ``format``, ``created``, ``model``, ``training_data``, ``objective``, ``training``, ``grid``,
        ``validation``, ``intended_use`` and ``limitations``.

    Raises:
        ValueError: a config that is not a mapping, a dataset without ``name`` and ``simulated``, negative
            steps or epochs, a grid or validation of the wrong type.
    """
    for name, value in (("train_config", train_config), ("model_config", model_config), ("dataset", dataset)):
        if not isinstance(value, Mapping):
            raise ValueError(f"{name} must be a dict, got {type(value).__name__}")
    missing = [k for k in ("name", "simulated") if k not in dataset]
    if missing:
        raise ValueError(f"dataset lacks {missing}; build it with synth7t.training.modelcard.training_data_facts(cache)")
    for name, value in (("steps", steps), ("epochs_done", epochs_done)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
    try:
        from .. import __version__ as version
    except ImportError:
        version = None
    data = _jsonable(dict(dataset))
    grid_facts = _grid(grid)
    val = _jsonable(_validation(validation))
    use, limits = _use_and_limits(data, grid_facts, val, train_config, _patches(train_config, model_config))
    gan = bool(train_config.get("gan"))
    card = {
        "format": CARD_FORMAT,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "synth7t_version": version,
        "model": {"preset": train_config.get("model"), "gan": gan,
                  "critic": train_config.get("discriminator") if gan else None, **_architecture(model_config)},
        "training_data": data,
        "objective": _objective(train_config, objective),
        "training": {"steps": steps, "epochs_done": epochs_done, "epochs_planned": train_config.get("epochs"),
                     "max_steps": train_config.get("max_steps") or None,
                     "batch_size": train_config.get("batch_size"), "lr_g": train_config.get("lr_g"),
                     "lr_decay_per_epoch": train_config.get("lr_decay"),
                     "lr_schedule": train_config.get("lr_schedule") or "exponential",
                     "warmup_steps": train_config.get("warmup_steps") or 0,
                     "global_residual": bool(model_config.get("global_residual")
                                             or model_config.get("kind") == "watnet"),
                     "init_from": train_config.get("init_from"), "crop": train_config.get("crop"),
                     "augment": train_config.get("augment"), "amp": train_config.get("amp"),
                     "seed": train_config.get("seed"), "weight_decay": train_config.get("weight_decay"),
                     **_patches(train_config, model_config)},
        "grid": grid_facts,
        "validation": val,
        "intended_use": use,
        "limitations": limits,
    }
    return _jsonable(card)


# ------------------------------------------------------------------------------------------ Markdown


def _md(value: Any) -> str:
    """A table cell: pipes escaped, None as an em dash."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value).replace("|", "\\|").replace("\n", " ")


def _num(value: Any, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def _schedule(train: Mapping[str, Any]) -> str:
    """The learning-rate schedule in words (cards written before schedules were options: per-epoch decay)."""
    text = ("half a cosine to zero over the run" if train.get("lr_schedule") == "cosine"
            else f"x{_md(train.get('lr_decay_per_epoch'))} per epoch")
    return text + (f", linear warm-up over {train['warmup_steps']} steps" if train.get("warmup_steps") else "")


def model_card_markdown(card: Mapping[str, Any]) -> str:
    """``MODEL_CARD.md``: the card's facts as Markdown (what :func:`write_model_card` writes)."""
    model, data, obj = card["model"], card["training_data"], card["objective"]
    train, grid, val = card["training"], card["grid"], card["validation"]
    kind = "GAN U-Net" if model.get("gan") else {"unet": "U-Net"}.get(model.get("kind"), model.get("description"))
    lines = [f"# Model card: {model.get('preset')} ({kind})", ""]
    simulated = data.get("simulated")
    if simulated is True:
        lines += ["> **Demo only.** Trained on simulated data "
                  f"({_md(data.get('name'))}). It blurs real scans: do not use it on them.", ""]
    elif simulated is None:
        lines += ["> **Unknown training data**: whether they were real or simulated could not be told.", ""]
    if val.get("beats_identity") is False:
        lines += ["> **Worse than its input.** It does not beat copying its 3T input on its validation slices "
                  f"({_identity_scores(val)}): it degrades every scan it is given.", ""]
    params = model.get("parameters")
    lines += ["## Model", "", "| | |", "|---|---|",
              f"| preset | {_md(model.get('preset'))} |",
              f"| architecture | {_md(model.get('description'))} |"]
    if model.get("input_slices"):
        lines.append(f"| input | {model['input_slices']} neighbouring axial 3T slices |")
    if model.get("conditioning"):
        lines.append(f"| conditioned on | {', '.join(model['conditioning'])} |")
    lines += [f"| parameters | {_num(None if params is None else params / 1e6, '.1f')} M |",
              f"| adversarial critic | {_md(model.get('critic')) if model.get('gan') else 'none'} |", ""]
    subjects, scans = data.get("subjects") or {}, data.get("scans") or {}

    def count(role: str) -> str:
        if role not in subjects:
            return "—"
        n_scans = scans.get(role)
        return f"{subjects[role]}" + (f" ({n_scans} scans)" if n_scans not in (None, subjects[role]) else "")

    lines += ["## Training data", "", "| | |", "|---|---|",
              f"| dataset | {_md(data.get('name'))} |",
              f"| simulated | {'unknown' if simulated is None else _md(simulated)} |",
              f"| subjects: train / validation / test | {count('train')} / {count('validation')} / "
              f"{count('test')} |"]
    if data.get("split"):
        lines.append(f"| split | {_md(data['split'])} (test subjects are never trained on) |")
    lines += ["", "## Objective", "", obj["summary"], ""]
    for term in obj["terms"]:
        if term["term"] == "adversarial":
            lines += [f"- adversarial: {_md(term.get('description'))}; weight {term['weight']:g} (divided by "
                      f"{_num(term.get('first_epoch_weight_divisor'), 'g')} in the first epoch), critic "
                      f"{_md(term.get('critic'))}, gradient-penalty weight {_num(term.get('lambda_gp'), 'g')}, "
                      f"{_md(term.get('n_critic'))} critic steps per generator step", ""]
    crop = train.get("crop")
    lines += ["## Training", "", "| | |", "|---|---|",
              f"| steps | {train['steps']} |",
              f"| epochs done / planned | {train['epochs_done']} / {_md(train.get('epochs_planned'))} |",
              f"| batch size | {_md(train.get('batch_size'))} |",
              f"| learning rate (generator) | {_md(train.get('lr_g'))}, {_schedule(train)} |",
              f"| output | {'centre 3T slice + residual' if train.get('global_residual') else 'direct'} |",
              f"| slices | {'random crops of ' + ' x '.join(map(str, crop)) if crop else 'whole slices'} |",
              f"| seed | {_md(train.get('seed'))} |", ""]
    if train.get("patch_size"):
        p, dims = train["patch_size"], train.get("patch_dims")
        shape = f"{p}^3 cubes" if dims == 3 else f"{p} x {p} patches of neighbouring slices"
        lines[-3] = f"| patches | {shape} inside the brain; sliding-window prediction, overlap " \
                    f"{_md(train.get('patch_overlap'))} voxels |"
        lines.insert(-2, f"| weight decay | {_md(train.get('weight_decay'))} |")
    spacing, inplane = grid.get("voxel_size_mm"), grid.get("inplane")
    lines += ["## Grid", "", f"- voxel size: {_num(spacing, 'g')} mm" + (" isotropic" if spacing else ""),
              "- axial slices: " + (f"{inplane[0]} x {inplane[1]}" if inplane else "—") +
              " (H anterior-posterior x W left-right)", ""]
    lines += ["## Validation", "", val["metric"] + ".", ""]
    if val.get("history"):
        lines += ["| epoch | step | PSNR model | PSNR 3T input | SSIM model | SSIM 3T input |",
                  "|---|---|---|---|---|---|"]
        for r in val["history"]:
            lines.append(f"| {_md(r.get('epoch'))} | {_md(r.get('step'))} | {_num(r.get('psnr'), '.2f')} | "
                         f"{_num(r.get('psnr_3t'), '.2f')} | {_num(r.get('ssim'), '.3f')} | "
                         f"{_num(r.get('ssim_3t'), '.3f')} |")
        if val.get("psnr_gain_db") is not None:
            lines += ["", f"Last validation: {val['psnr_gain_db']:+.2f} dB PSNR"
                          + (f", {val['ssim_gain']:+.3f} SSIM" if val.get("ssim_gain") is not None else "")
                          + " over the 3T input."]
    else:
        lines.append("No validation scores were recorded.")
    lines += ["", "## Intended use", "", card["intended_use"], "", "## Limitations", ""]
    lines += [f"- {item}" for item in card["limitations"]]
    lines += ["", f"*{card.get('format')}, written {card.get('created')} by synth7t "
                  f"{card.get('synth7t_version') or '(version unknown)'}*"]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------ files


def write_model_card(model_dir: PathLike, card: Mapping[str, Any]) -> Tuple[Path, Path]:
    """Write ``model_card.json`` and ``MODEL_CARD.md`` into a model folder (each atomically).

    Args:
        model_dir: the model folder (or the temporary folder that becomes it).
        card: a card from :func:`build_model_card`.

    Returns:
        ``(json path, markdown path)``.

    Raises:
        ValueError: ``card`` is not a model card.
        FileNotFoundError: ``model_dir`` does not exist.
    """
    if not isinstance(card, Mapping) or card.get("format") != CARD_FORMAT:
        raise ValueError(f"card must be a model card of format {CARD_FORMAT!r} (from build_model_card)")
    d = Path(model_dir)
    if not d.is_dir():
        raise FileNotFoundError(f"{d}: no such model folder")
    json_path, md_path = d / CARD_JSON, d / CARD_MARKDOWN
    write_text(json_path, json.dumps(_jsonable(card), indent=2) + "\n")
    write_text(md_path, model_card_markdown(card))
    return json_path, md_path


def read_model_card(model_dir: PathLike) -> Optional[Dict[str, Any]]:
    """The card of a model folder (or of a run folder holding ``model/``).

    Returns:
        the card as a dict, or None when the folder has none (a model exported before cards were written).

    Raises:
        ValueError: a ``model_card.json`` that is not valid JSON or not a synth7t model card.
    """
    path = _model_folder(model_dir) / CARD_JSON
    if not path.is_file():
        return None
    try:
        card = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc}); re-export the model or delete the card") from None
    if not isinstance(card, dict) or not str(card.get("format", "")).startswith("synth7t-model-card-"):
        raise ValueError(f"{path}: not a synth7t model card (format {CARD_FORMAT!r} expected)")
    return card


def simulated_training_warning(model: Union[PathLike, Mapping[str, Any]]) -> Optional[str]:
    """The one-line warning for a model trained on simulated data, or None.

    Args:
        model: a model folder (or its run folder), or a card already read.

    Returns:
        one line without a newline when the card says the training data were simulated; None for real or
        unknown data, and for a folder without a card.
    """
    card = model if isinstance(model, Mapping) else read_model_card(model)
    if not card or (card.get("training_data") or {}).get("simulated") is not True:
        return None
    name = " ".join(str(card["training_data"].get("name") or "the demo cohort").split())
    return (f"warning: this model was trained on simulated data ({name}); it is for the demo only and blurs real "
            f"scans (see {CARD_MARKDOWN} in the model folder)")


def identity_warning(model: Union[PathLike, Mapping[str, Any]]) -> Optional[str]:
    """The one-line warning for a model (a folder, its run folder, or a card) whose card's last validation scores
    are not above its 3T input's in both PSNR and SSIM; None when they are, when no validation was recorded (an
    imported model) and for a folder without a card."""
    card = model if isinstance(model, Mapping) else read_model_card(model)
    val = (card or {}).get("validation") or {}
    if val.get("beats_identity") is not False:
        return None
    return (f"warning: this model does not beat copying its 3T input on its validation slices "
            f"({_identity_scores(val)}); it degrades the scans it is given (train it longer; see {CARD_MARKDOWN})")


def model_card_warnings(model: Union[PathLike, Mapping[str, Any]]) -> List[Tuple[type, str]]:
    """Every one-line warning of a model's card (a folder, its run folder, or a card) with its category: trained on
    simulated data (:class:`SimulatedTrainingWarning`), worse than its input (:class:`BelowIdentityWarning`)."""
    card = model if isinstance(model, Mapping) else read_model_card(model)
    if not card:
        return []
    found = [(SimulatedTrainingWarning, simulated_training_warning(card)),
             (BelowIdentityWarning, identity_warning(card))]
    return [(category, line) for category, line in found if line]
