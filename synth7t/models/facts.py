"""Parameters and forward FLOPs of every model preset, computed on the meta device.

Networks are built under ``torch.device("meta")`` (no memory, no initialisation cost) and run once under
:class:`torch.utils.flop_counter.FlopCounterMode`, which counts matrix multiplications, convolutions and
attention (2 FLOPs per multiply-add) — the same convention as the DESIGN.md yardstick (about 4.4 TFLOP and
260 M parameters for the paper U-Net on one 3x288x224 slice). Normalisation, activations and other
element-wise work are not counted. It runs in seconds on a CPU even for the 260 M-parameter models.

2D models are measured on one slice ``(1, n_input_slices, height, width)``, 3D models on one cubic patch
``(1, 1, P, P, P)`` (``P = 64`` by default, the baselines' training patch, also for the demo variants so that
rows compare), critics on one ``(1, 1, height, width)`` slice. Critic presets are addressed as
``"discriminator:<name>"``.

Command line: ``synth7t model-facts [--preset NAME ...] [--height 288 --width 224] [--patch 64]``.
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, List, Optional, Tuple, Union

import torch
from torch.utils.flop_counter import FlopCounterMode

from .build import build_model
from .config import (DISCRIMINATOR_PRESETS, MODEL_PRESETS, DiscriminatorConfig, GicquelUNetConfig, ModelConfig,
    UNetConfig, VNetConfig, WATNetConfig, get_discriminator_config, get_model_config)
from .unet import make_context

__all__ = ["model_facts", "facts_table", "default_fact_presets"]

DISCRIMINATOR_PREFIX = "discriminator:"


def _resolve(preset: Union[str, ModelConfig]) -> Tuple[str, ModelConfig]:
    if isinstance(preset, ModelConfig):
        return type(preset).__name__, preset
    if not isinstance(preset, str):
        raise ValueError(f"preset must be a preset name or a model config, got {type(preset).__name__}")
    if preset.startswith(DISCRIMINATOR_PREFIX):
        return preset, get_discriminator_config(preset[len(DISCRIMINATOR_PREFIX):])
    return preset, get_model_config(preset)


def _input_shape(cfg: ModelConfig, height: int, width: int, patch: int) -> Tuple[Tuple[int, ...], str]:
    if isinstance(cfg, (UNetConfig, GicquelUNetConfig)):
        return (1, cfg.n_input_slices, height, width), "slice"
    if isinstance(cfg, DiscriminatorConfig):
        return (1, cfg.in_channels, height, width), "slice"
    if isinstance(cfg, VNetConfig):
        return (1, cfg.in_channels, patch, patch, patch), "patch"
    if isinstance(cfg, WATNetConfig):
        if cfg.spatial_dims == 2:
            return (1, cfg.n_input_slices, height, width), "slice"
        return (1, 1, patch, patch, patch), "patch"
    raise ValueError(f"no facts for config type {type(cfg).__name__}")


def model_facts(preset: Union[str, ModelConfig], height: int = 288, width: int = 224,
                patch: int = 64) -> Dict[str, Any]:
    """Parameters and forward FLOPs of one preset, computed on the meta device.

    Args:
        preset: a generator preset name, ``"discriminator:<name>"`` for a critic preset, or a config.
        height, width: slice size for 2D models and critics (the paper's crop is 288x224).
        patch: cubic patch edge for 3D models (64, the baselines' training patch).

    Returns:
        dict with ``preset``, ``kind``, ``params`` (int), ``gflops`` (float, one forward pass of one slice or
        patch), ``per`` (``"slice"`` or ``"patch"``), ``gflops_per_slice`` or ``gflops_per_patch`` (same
        number under the explicit name) and ``input_shape`` (tuple).

    Raises:
        ValueError: unknown preset, or a size the model cannot take (not divisible by its downsampling).
    """
    name, cfg = _resolve(preset)
    shape, per = _input_shape(cfg, height, width, patch)
    meta = torch.device("meta")
    context = make_context(70.0, 0, 0, 0.0).to(meta) if isinstance(cfg, UNetConfig) else None
    if isinstance(cfg, GicquelUNetConfig):  # its raw tokens (B, n_tokens, width)
        context = torch.zeros(1, len(cfg.tokens), cfg.context_dim, device=meta)
    with meta:
        model = build_model(cfg)
        x = torch.empty(shape)
    params = sum(p.numel() for p in model.parameters())
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        if context is not None:
            model(x, context)
        else:
            model(x)
    gflops = counter.get_total_flops() / 1e9
    return {"preset": name, "kind": cfg.kind, "params": int(params), "gflops": float(gflops), "per": per,
            f"gflops_per_{per}": float(gflops), "input_shape": tuple(shape)}


def default_fact_presets() -> List[str]:
    """All generator presets, then the distinct critic presets (as ``discriminator:<name>``)."""
    critics: List[str] = []
    seen: List[DiscriminatorConfig] = []
    for name, cfg in DISCRIMINATOR_PRESETS.items():
        if cfg not in seen:  # aliases of the same critic are listed once
            seen.append(cfg)
            critics.append(DISCRIMINATOR_PREFIX + name)
    return list(MODEL_PRESETS) + critics


def facts_table(presets: Optional[Iterable[Union[str, ModelConfig]]] = None, height: int = 288,
                width: int = 224, patch: int = 64) -> "Any":
    """One row of :func:`model_facts` per preset, as a pandas DataFrame.

    Args:
        presets: names or configs; ``None`` means :func:`default_fact_presets`.
        height, width, patch: see :func:`model_facts`.

    Returns:
        DataFrame with columns ``preset``, ``kind``, ``params``, ``params_M``, ``gflops``, ``per``,
        ``input_shape``.
    """
    import pandas as pd

    rows = []
    for preset in (default_fact_presets() if presets is None else presets):
        f = model_facts(preset, height=height, width=width, patch=patch)
        rows.append({"preset": f["preset"], "kind": f["kind"], "params": f["params"],
                     "params_M": round(f["params"] / 1e6, 3), "gflops": round(f["gflops"], 3),
                     "per": f["per"], "input_shape": "x".join(map(str, f["input_shape"]))})
    return pd.DataFrame(rows, columns=["preset", "kind", "params", "params_M", "gflops", "per", "input_shape"])
