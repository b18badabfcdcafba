"""The PatchGAN critic of the GAN U-Net (§2.4, Figure A.7, Table A.3), trained with a gradient penalty.

The paper used the PatchGAN discriminator of MONAI Generative; it now lives in MONAI as
:class:`monai.networks.nets.PatchDiscriminator`, which this module configures:

* an initial strided convolution (no norm) and ``num_layers`` (conv + norm + LeakyReLU(0.2)) blocks whose
  channels double each time, all strided by 2 except the last, then a one-channel convolution;
* so the input is downsampled ``num_layers`` times and the critic returns one logit per patch,
  ``(B, 1, H / 2^num_layers, W / 2^num_layers)`` with the 3x3 kernels of the presets. There is no sigmoid: the
  default binary cross-entropy objective (the authors' code) applies it inside the loss, and the Wasserstein
  option reads the outputs as scores (:func:`synth7t.training.losses.critic_loss`).

Normalisation: MONAI's default is batch norm, which the reference code kept. A critic with a gradient penalty must
not use it: the penalty constrains the gradient of each sample's score with respect to that sample, and
batch statistics make every score depend on the whole batch (Gulrajani et al. 2017 recommend layer norm).
The presets use ``norm="layer"``: MONAI's GroupNorm with a single group, which normalises each sample over
(C, H, W) — the "LN" of Figure A.7.

Size: MONAI doubles the channels at every layer without a cap, so Table A.3's c=256, n_layers=5 critic
reaches 8192 channels and about 4e8 parameters (most in its last two layers); it is still cheap per pixel
because those layers run on a 9x7 map. :func:`synth7t.models.facts.facts_table` reports the exact numbers.
"""

from __future__ import annotations

from typing import List, Union

from torch import Tensor, nn

from .blocks import check_divisible
from .config import DiscriminatorConfig, get_discriminator_config

__all__ = ["PatchCritic", "build_discriminator"]


def _norm_arg(norm: str) -> object:
    if norm == "layer":
        return ("GROUP", {"num_groups": 1})
    if norm == "instance":
        return "INSTANCE"
    return None


class PatchCritic(nn.Module):
    """MONAI PatchDiscriminator configured from a :class:`DiscriminatorConfig`, returning the patch map.

    Args:
        config: the critic's architecture.

    Shapes:
        (B, in_channels, H, W) with H, W divisible by ``2**num_layers`` ->
        (B, 1, H / 2^num_layers, W / 2^num_layers) for ``kernel_size=3``
        (``- 2`` on each side for ``kernel_size=4``). Logits, no sigmoid (see the module docstring).
    """

    def __init__(self, config: DiscriminatorConfig) -> None:
        super().__init__()
        from monai.networks.nets import PatchDiscriminator

        if not isinstance(config, DiscriminatorConfig):
            raise ValueError(f"PatchCritic needs a DiscriminatorConfig, got {type(config).__name__}")
        self.config = config
        self.net = PatchDiscriminator(
            spatial_dims=2,
            channels=config.channels,
            in_channels=config.in_channels,
            out_channels=1,
            num_layers_d=config.num_layers,
            kernel_size=config.kernel_size,
            activation=("LEAKYRELU", {"negative_slope": config.negative_slope}),
            norm=_norm_arg(config.norm),
            bias=config.norm == "none",
            padding=1,
            dropout=config.dropout,
            last_conv_kernel_size=config.kernel_size,
        )

    def _check(self, x: Tensor) -> None:
        cfg = self.config
        if x.ndim != 4 or x.shape[1] != cfg.in_channels:
            raise ValueError(f"critic input must have shape (B, {cfg.in_channels}, H, W), got {tuple(x.shape)}")
        check_divisible(tuple(x.shape[2:]), cfg.num_layers, "critic input", "e.g. 288x224 for 5 layers")

    def features(self, x: Tensor) -> List[Tensor]:
        """Outputs of every layer, the last being the patch map (for feature-matching losses)."""
        self._check(x)
        return list(self.net(x))

    def forward(self, x: Tensor) -> Tensor:
        self._check(x)
        return self.net(x)[-1]


def build_discriminator(preset_or_config: Union[str, DiscriminatorConfig]) -> PatchCritic:
    """Build the critic of a GAN preset (``"paper-gan"``, ``"demo-cpu"``, ...) or of a config.

    Raises:
        ValueError: for an unknown preset name or a config of another kind.
    """
    cfg = (get_discriminator_config(preset_or_config) if isinstance(preset_or_config, str)
           else preset_or_config)
    return PatchCritic(cfg)
