"""Import the authors' released checkpoints into a synth7t model folder (``synth7t import-model``).

The authors of the paper released two real-data models in DeMONLab-BioFINDER/SuperResolutionMalo (git-lfs):
``models/my_unet_no_diag.pt`` with ``params_no_diag.txt`` and ``models/my_unetGanNoDiag.pt`` with
``paramsGanNoDiag.txt``, and the templates of their lone-3T inference (``template_3T.nii.gz``,
``template_7T.nii.gz``, ``template_3T_to_7T.mat``). Their training script saves ``{"epoch", "model_state_dict"
(their UNetModel inside nn.DataParallel), "opti_state_dict", "saved_losses" (a pandas DataFrame), "idx_test"
(a numpy array)}``; :func:`import_model` reads it with :func:`synth7t.released.reader.read_checkpoint` (tensors and
plain containers only, every other pickled object an inert placeholder that is dropped), their params file with
:func:`ast.literal_eval`, checks the weights against the architecture the params describe key by key, and writes a
normal model folder: ``generator.safetensors``, ``model.json`` (architecture and the input recipe their weights were
trained with), ``model_card.json`` and ``MODEL_CARD.md`` (source file and sha256, their params, real training data,
the weights' licence), and with templates a ``templates/`` folder.

Their input recipe, read from ``func/images_to_npy/pickling.py`` and ``func/training/LoadingModel.py`` at commit
761c2c0 (:data:`RECIPE`): volumes on their 7T template's grid, sliced along array axis ``slice_dim`` (1 in both
released models); the 3T scaled so that the 1st and 99th percentiles of its non-zero voxels become 0 and 1 (their
"min_max" with clip (1, 99): the percentiles are the min and max, the image itself is not clipped);
each slice padded symmetrically (``r // 2`` before, the rest after) to a multiple of ``2 ** n_down``; the target
slice ``j`` predicted from the 3T slices ``j, j + 1, j + 2`` (the stack *starts* at the target: their training pairs
``x[j] = 3T[j:j + 3]`` with ``y[j] = 7T[j]``; their inference script instead writes the output of that stack at
``j + 1``, one slice off); the position token ``2 (j - mid) / n_slices`` with ``mid`` the middle of the brain's
slices and ``n_slices`` the grid's size along the slicing axis (their inference script computes it on a crop of the
volume with the middle of the uncropped one, which their weights never saw). synth7t follows the training;
``model.json`` says so and the book lists it as a deviation from their inference script.
"""

from __future__ import annotations

import ast
import datetime as _dt
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

from ..runtime.batch import write_text
from .reader import dropped_objects, read_checkpoint

PathLike = Union[str, Path]

__all__ = ["ModelImportError", "RECIPE", "TEMPLATE_FILES", "IMPORTED_FORMAT", "read_params", "config_from_params",
           "state_dict_from", "check_state_dict", "import_model"]

#: ``model.json`` format of an imported model folder.
IMPORTED_FORMAT = "synth7t-model-1"
#: The upstream repository and the commit whose code the import follows.
SOURCE_REPOSITORY = "DeMONLab-BioFINDER/SuperResolutionMalo"
SOURCE_COMMIT = "761c2c0a347561274116ed1d0f8f45db6bef2a25"
#: Licence of the released weights (the repository's LICENSE).
WEIGHTS_LICENCE = "CC BY-NC 4.0 (Creative Commons Attribution-NonCommercial 4.0), Copyright (c) 2025 Malo Gicquel"
#: The templates of their lone-3T inference, as ``--templates DIR`` must hold them.
TEMPLATE_FILES = ("template_3T.nii.gz", "template_7T.nii.gz", "template_3T_to_7T.mat")

#: Their params' condition names -> synth7t's token names (:data:`synth7t.models.config.GICQUEL_TOKENS`).
_CONDITIONS = {"Age": "age", "Sex": "sex", "Diagnostic": "diagnosis", "position": "position"}
#: Their token order (func/images_to_npy/pickling.py): age, sex, diagnosis, position.
_TOKEN_ORDER = ("age", "sex", "diagnosis", "position")

#: The input recipe their weights were trained with (see the module); ``model.json``'s ``input`` extends it.
RECIPE: Dict[str, Any] = {
    "recipe": "gicquel",
    "grid": "the authors' 7T template (template_7T.nii.gz), sliced along array axis slice_dim",
    "intensity": "3T scaled so that the 1st and 99th percentiles of its non-zero voxels become 0 and 1 (not "
                 "clipped: the background goes below 0, the brightest voxels above 1)",
    "clip_percentiles": [1, 99],
    "stack": "first",
    "position": "2 (j - mid) / n_slices, mid the middle of the brain's slices (their training)",
    "padding": "symmetric zeros to a multiple of 2**n_down (r // 2 before, the rest after)",
}


class ModelImportError(ValueError):
    """A checkpoint, params file or template folder that cannot be imported (the message says why, in one line)."""


def read_params(path: PathLike) -> Dict[str, Any]:
    """Their ``params*.txt``: ``str(settings)`` of their training script, read as a Python literal (never run).

    Raises:
        FileNotFoundError: no such file.
        ModelImportError: not a Python dict literal.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such params file (the params_*.txt beside the checkpoint)")
    text = path.read_text()
    try:
        params = ast.literal_eval(text.strip())
    except (ValueError, SyntaxError) as exc:
        raise ModelImportError(f"{path}: not a Python dict literal as their training writes ({type(exc).__name__}: "
                           f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
    if not isinstance(params, dict):
        raise ModelImportError(f"{path}: a {type(params).__name__}, not the settings dict their training writes")
    return params


def config_from_params(params: Mapping[str, Any]):
    """The :class:`~synth7t.models.GicquelUNetConfig` their params describe.

    Raises:
        ModelImportError: a key the architecture needs is missing, an unknown condition, or settings their released
            code can build but synth7t does not (``use_spatial_transformer`` False, ``c_dim`` other than 1).
    """
    from ..models import GicquelUNetConfig

    need = ("n_channels", "num_groups", "use_mid_attention", "n_res_block", "channel_mult", "attention_res",
            "n_in_slices", "conditions", "c_dim", "use_ada")
    missing = [k for k in need if k not in params]
    if missing:
        raise ModelImportError(f"params lack {', '.join(missing)}: not a params file of their U-Net training")
    if not params.get("use_spatial_transformer", True):
        raise ModelImportError("params say use_spatial_transformer=False (their self-attention-only variant): synth7t "
                           "imports the cross-attention networks they released")
    unknown = [c for c in params["conditions"] if c not in _CONDITIONS]
    if unknown:
        raise ModelImportError(f"unknown condition(s) {unknown} in params; known: {', '.join(_CONDITIONS)}")
    named = {_CONDITIONS[c] for c in params["conditions"]}
    tokens = tuple(t for t in _TOKEN_ORDER if t in named)
    try:
        return GicquelUNetConfig(
            in_channels=int(params["n_in_slices"]), channels=int(params["n_channels"]),
            channel_mult=tuple(int(m) for m in params["channel_mult"]), num_res_blocks=int(params["n_res_block"]),
            attention_resolutions=tuple(int(r) for r in params["attention_res"]),
            num_groups=int(params["num_groups"]), use_mid_attention=bool(params["use_mid_attention"]),
            use_ada=bool(params["use_ada"]), use_initial_down=bool(params.get("use_initial_down", False)),
            context_dim=int(params["c_dim"]), tokens=tokens)
    except (TypeError, ValueError) as exc:
        raise ModelImportError(f"params describe no buildable network: {exc}") from None


def state_dict_from(obj: Any, path: PathLike = "checkpoint") -> Dict[str, Any]:
    """The generator's tensors from a read checkpoint: its ``model_state_dict`` (or the object itself when it is a
    state dict), the ``module.`` prefix of ``nn.DataParallel`` removed.

    Raises:
        ModelImportError: no state dict in it, or entries that are not tensors.
    """
    import torch

    sd = obj.get("model_state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(sd, dict) or not sd:
        keys = sorted(obj)[:6] if isinstance(obj, dict) else type(obj).__name__
        raise ModelImportError(f"{path}: no model_state_dict in the checkpoint (found {keys})")
    bad = [k for k, v in sd.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise ModelImportError(f"{path}: state dict entry {bad[0]!r} is not a tensor")
    prefixed = all(str(k).startswith("module.") for k in sd)
    return {(k[len("module."):] if prefixed else k): v for k, v in sd.items()}


def check_state_dict(network, state: Mapping[str, Any]) -> None:
    """Refuse weights that do not fit the network exactly: the first missing, extra or mis-shaped key, in one line.

    Raises:
        ModelImportError: naming the key and the shapes.
    """
    expected = network.state_dict()
    missing = [k for k in expected if k not in state]
    if missing:
        raise ModelImportError(f"the checkpoint lacks {missing[0]!r}"
                           + (f" and {len(missing) - 1} more key(s)" if len(missing) > 1 else "")
                           + ": the params do not describe these weights")
    extra = [k for k in state if k not in expected]
    if extra:
        raise ModelImportError(f"the checkpoint has {extra[0]!r}"
                           + (f" and {len(extra) - 1} more key(s)" if len(extra) > 1 else "")
                           + " that the architecture of the params has not: the params do not describe these weights")
    for k, v in state.items():
        if tuple(v.shape) != tuple(expected[k].shape):
            raise ModelImportError(f"{k!r} has shape {tuple(v.shape)} in the checkpoint, {tuple(expected[k].shape)} in "
                               "the architecture of the params")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _check_templates(folder: PathLike) -> Path:
    folder = Path(folder)
    missing = [n for n in TEMPLATE_FILES if not (folder / n).is_file()]
    if missing:
        raise ModelImportError(f"{folder}: missing template file(s) {', '.join(missing)} (their repository's models/ "
                           "folder holds them: clone it with git-lfs)")
    for name in TEMPLATE_FILES:
        with open(folder / name, "rb") as f:
            if f.read(64).startswith(b"version https://git-lfs"):
                raise ModelImportError(f"{folder / name} is a git-lfs pointer: run `git lfs pull` in the clone")
    return folder


def _grid_facts(params: Mapping[str, Any], templates: Optional[Path]) -> Dict[str, Any]:
    """The slicing axis and the slice count their position divides by: their params' ``n_slices`` (the training
    volumes' size along the slicing axis), else the 7T template's size along it."""
    axis = int(params.get("slice_dim", 1))
    if axis not in (0, 1, 2):
        raise ModelImportError(f"params slice_dim must be 0, 1 or 2, got {params.get('slice_dim')!r}")
    facts: Dict[str, Any] = {"slice_axis": axis}
    if params.get("n_slices"):
        facts["n_slices"] = int(params["n_slices"])
    if templates is not None:
        import nibabel as nib

        img = nib.load(str(templates / "template_7T.nii.gz"))
        facts.update(template_shape=[int(n) for n in img.shape[:3]],
                     spacing_mm=[round(float(z), 4) for z in img.header.get_zooms()[:3]])
        facts.setdefault("n_slices", int(img.shape[axis]))
    if "n_slices" not in facts:
        raise ModelImportError("params lack n_slices (the slice count of their position token) and no templates "
                               "were given to read it from")
    return facts


def _card(source: Path, sha: str, params: Mapping[str, Any], config, dropped: List[str], name: str,
          facts: Mapping[str, Any]) -> Dict[str, Any]:
    from .. import __version__
    from ..training.modelcard import CARD_FORMAT

    return {
        "format": CARD_FORMAT, "origin": "imported",
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "synth7t_version": __version__,
        "model": {"preset": name, "kind": config.kind, "gan": bool(params.get("use_gan")),
                  "description": "the authors' released U-Net (their code's layout, synth7t.models.gicquel)",
                  "conditioning": list(config.tokens)},
        "source": {"file": source.name, "sha256": sha, "repository": SOURCE_REPOSITORY,
                   "code_commit_followed": SOURCE_COMMIT, "params": dict(params), "dropped_on_import": dropped},
        "licence": WEIGHTS_LICENCE,
        "training_data": {"name": "the paper's cohort: real paired 3T/7T T1-weighted scans (Gicquel et al.)",
                          "simulated": False},
        "training": {"epochs": params.get("n_epochs"), "lr": params.get("lr"), "batch_size": params.get("size_batch"),
                     "perceptual": params.get("perceptual_network_type"), "gan": bool(params.get("use_gan"))},
        "grid": dict(facts),
        "validation": {},
        "intended_use": "research use on 3T T1-weighted brain MRI aligned to the authors' 7T template; "
                        "non-commercial only (the weights' licence)",
        "limitations": [
            "trained by the authors on their cohort; synth7t did not train or validate these weights",
            "expects the input recipe of model.json (their template grid, slicing axis and normalisation)",
            "the position token and the stack follow their training script, not their inference script (see "
            "model.json input.stack and the book's deviation table)",
        ],
    }


def _card_markdown(card: Mapping[str, Any]) -> str:
    src, model, grid = card["source"], card["model"], card["grid"]
    params = ", ".join(f"{k}={v!r}" for k, v in src["params"].items())
    lines = [f"# Model card: {model['preset']} (imported)", "",
             "> Imported from the authors' released checkpoint: **trained on real paired 3T/7T data (the paper's "
             "cohort)**, not simulated. synth7t did not train it.", "",
             "| | |", "|---|---|",
             f"| source file | {src['file']} |", f"| sha256 | `{src['sha256']}` |",
             f"| repository | {src['repository']} (code followed: {src['code_commit_followed'][:7]}) |",
             f"| architecture | {model['description']} |",
             f"| conditioned on | {', '.join(model['conditioning'])} (their raw tokens) |",
             f"| GAN-trained | {'yes' if model['gan'] else 'no'} |",
             f"| licence of the weights | {card['licence']} |",
             f"| slicing axis | {grid.get('slice_axis')} |",
             f"| dropped on import | {'; '.join(src['dropped_on_import']) or 'nothing'} |", "",
             "## Their params", "", params, "", "## Intended use", "", card["intended_use"], "",
             "## Limitations", ""]
    lines += [f"- {item}" for item in card["limitations"]]
    lines += ["", f"*{card['format']} (imported), written {card['created']} by synth7t {card['synth7t_version']}*"]
    return "\n".join(lines) + "\n"


def import_model(checkpoint: PathLike, params: PathLike, out_dir: PathLike, *, templates: Optional[PathLike] = None,
                 name: Optional[str] = None, overwrite: bool = False) -> Tuple[Path, List[str]]:
    """Write a synth7t model folder from one of the authors' checkpoints and its params file.

    Args:
        checkpoint: their ``.pt`` (the torch.save zip of their training script).
        params: their ``params*.txt`` for that checkpoint.
        out_dir: the model folder to write (refused when it exists, unless ``overwrite``).
        templates: a folder with :data:`TEMPLATE_FILES`, copied into ``templates/`` for the lone-3T alignment.
        name: the model's name in its card (default: the checkpoint's stem).

    Returns:
        ``(model folder, dropped)``: ``dropped`` lists ``"key: module.name"`` for every pickled object that was not a
        tensor or a plain container and was left out (their loss DataFrame, test indices).

    Raises:
        FileNotFoundError: a missing checkpoint or params file.
        FileExistsError: ``out_dir`` exists and ``overwrite`` is False.
        ModelImportError / synth7t.released.reader.CheckpointReadError: see :func:`read_params`,
            :func:`config_from_params`, :func:`state_dict_from`, :func:`check_state_dict` and
            :func:`~synth7t.released.reader.read_checkpoint`. Nothing is written then.
    """
    from safetensors.torch import save_file

    from ..models import build_model

    checkpoint, out = Path(checkpoint), Path(out_dir)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; choose another folder or pass overwrite")
    settings = read_params(params)
    config = config_from_params(settings)
    template_dir = _check_templates(templates) if templates is not None else None
    facts = _grid_facts(settings, template_dir)
    obj, _ = read_checkpoint(checkpoint)
    dropped = dropped_objects(obj)
    state = state_dict_from(obj, checkpoint)
    network = build_model(config)
    check_state_dict(network, state)
    network.load_state_dict(state, strict=True)  # the shapes and keys match: a real load, nothing partial
    tmp = out.with_name(f".{out.name}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        save_file({k: v.detach().cpu().contiguous() for k, v in network.state_dict().items()},
                  str(tmp / "generator.safetensors"))
        n_down = config.n_downsamplings
        meta = {"model_config": config.to_dict(), "format": IMPORTED_FORMAT, "origin": "imported",
                "input": {**RECIPE, **facts, "grid_divisor": 2 ** n_down,
                          "slice_size": list(settings.get("slice_size") or []),
                          "templates": "templates/" if template_dir is not None else None},
                "source": {"file": checkpoint.name, "params_file": Path(params).name,
                           "epoch": obj.get("epoch") if isinstance(obj, dict) else None}}
        write_text(tmp / "model.json", json.dumps(meta, indent=2) + "\n")
        card = _card(checkpoint, _sha256(checkpoint), settings, config, dropped,
                     name or checkpoint.stem, facts)
        write_text(tmp / "model_card.json", json.dumps(card, indent=2, default=str) + "\n")
        write_text(tmp / "MODEL_CARD.md", _card_markdown(card))
        if template_dir is not None:
            (tmp / "templates").mkdir()
            for n in TEMPLATE_FILES:
                shutil.copy2(template_dir / n, tmp / "templates" / n)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return out, dropped
