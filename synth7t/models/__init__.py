"""Networks: the paper's U-Net and patch critic, the V-Net and WATNet baselines, the authors' network.

The conditional U-Net is also the GAN generator; the critic is the paper's WGAN-GP patch critic; the authors'
network runs the weights of their released checkpoints; the frozen backbones serve the perceptual losses.

Entry points: :func:`build_model` (any generator preset, config or config dict), :func:`build_discriminator`,
:func:`get_model_config` / :data:`MODEL_PRESETS`, :func:`make_context` (the (B, 4) conditioning tensor) and
:mod:`synth7t.models.facts` (parameters and FLOPs of every preset).
"""

from .build import build_model, resolve_config
from .config import (DISCRIMINATOR_PRESETS, MODEL_PRESETS, PLANES, DiscriminatorConfig, GicquelUNetConfig,
    UNetConfig, VNetConfig, WATNetConfig, check_planes, config_from_dict, get_discriminator_config,
    get_model_config, list_presets)
from .discriminator import PatchCritic, build_discriminator
from .gicquel import GicquelUNet, context_tokens
from .unet import ConditionalUNet, make_context, plane_code, slice_location
from .vnet import VNet
from .watnet import WATNet

__all__ = [
    "build_model",
    "resolve_config",
    "build_discriminator",
    "get_model_config",
    "get_discriminator_config",
    "config_from_dict",
    "list_presets",
    "MODEL_PRESETS",
    "DISCRIMINATOR_PRESETS",
    "UNetConfig",
    "DiscriminatorConfig",
    "VNetConfig",
    "WATNetConfig",
    "GicquelUNetConfig",
    "ConditionalUNet",
    "GicquelUNet",
    "context_tokens",
    "PatchCritic",
    "VNet",
    "WATNet",
    "make_context",
    "slice_location",
    "plane_code",
    "PLANES",
    "check_planes",
]
