"""Build any network of the package from a preset name, a config, or a config dict (e.g. from a checkpoint)."""

from __future__ import annotations

from typing import Any, Mapping, Union

from torch import nn

from .config import (AnyModelConfig, DiscriminatorConfig, GicquelUNetConfig, ModelConfig, UNetConfig, VNetConfig,
    WATNetConfig, config_from_dict, get_model_config)
from .discriminator import PatchCritic
from .gicquel import GicquelUNet
from .unet import ConditionalUNet
from .vnet import VNet
from .watnet import WATNet

__all__ = ["resolve_config", "build_model"]

PresetOrConfig = Union[str, ModelConfig, Mapping[str, Any]]


def resolve_config(preset_or_config: PresetOrConfig) -> AnyModelConfig:
    """Turn a generator preset name, a config, or a ``to_dict()`` mapping into a config object.

    Raises:
        ValueError: unknown preset name, unknown kind or key, or an unsupported argument type.
    """
    if isinstance(preset_or_config, str):
        return get_model_config(preset_or_config)
    if isinstance(preset_or_config, ModelConfig):
        return preset_or_config  # type: ignore[return-value]
    if isinstance(preset_or_config, Mapping):
        return config_from_dict(preset_or_config)
    raise ValueError(f"expected a preset name, a model config or a config dict, got {type(preset_or_config).__name__}")


def build_model(preset_or_config: PresetOrConfig) -> nn.Module:
    """Return the network described by a preset name (``"paper-unet"``, ``"watnet-3d"``, ...), a config or
    a config dict. Names refer to generators; build a critic from a :class:`DiscriminatorConfig` or with
    :func:`synth7t.models.build_discriminator`.

    Raises:
        ValueError: see :func:`resolve_config`.
    """
    cfg = resolve_config(preset_or_config)
    if isinstance(cfg, UNetConfig):
        return ConditionalUNet(cfg)
    if isinstance(cfg, DiscriminatorConfig):
        return PatchCritic(cfg)
    if isinstance(cfg, VNetConfig):
        return VNet(cfg)
    if isinstance(cfg, WATNetConfig):
        return WATNet(cfg)
    if isinstance(cfg, GicquelUNetConfig):
        return GicquelUNet(cfg)
    raise ValueError(f"no network for config type {type(cfg).__name__}")
