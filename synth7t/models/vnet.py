"""V-Net baseline (Milletari et al. 2016), as Cui et al. 2024 applied it to 3T->7T T1w synthesis (§2.6).

A fully convolutional 3D encoder-decoder on 64^3 patches whose every stage is residual: the stage adds its
input (after the transition convolution) to the output of its convolutions. The down transitions are
2x2x2 stride-2 convolutions that double the channels, the up transitions 2x2x2 stride-2 transposed
convolutions that halve them, and the decoder concatenates the encoder feature of the same scale.
Activations are PReLU. Milletari's segmentation head (two channels + softmax) is replaced by a single
1x1x1 convolution, so the network regresses the 7T intensities; Cui et al. trained it with an L1 loss.

Cui et al.'s variant, the default here, uses 3x3x3 kernels and batch norm; Milletari's original used
5x5x5 kernels without normalisation (``kernel_size=5, norm="none"``).
"""

from __future__ import annotations

from typing import List

import torch
from torch import Tensor, nn

from .blocks import check_divisible
from .config import VNetConfig

__all__ = ["VNet"]


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm3d(channels)
    if kind == "instance":
        return nn.InstanceNorm3d(channels, affine=True)
    return nn.Identity()


class _ConvUnit(nn.Sequential):
    """conv (k^3, same padding) -> norm -> PReLU."""

    def __init__(self, cin: int, cout: int, k: int, norm: str) -> None:
        super().__init__(nn.Conv3d(cin, cout, k, padding=k // 2, bias=norm == "none"), _norm(norm, cout),
                         nn.PReLU(cout))


class _ResidualStage(nn.Module):
    """``n`` conv units on ``x`` plus ``x`` (the V-Net's per-stage residual learning)."""

    def __init__(self, channels: int, n: int, k: int, norm: str, dropout: float) -> None:
        super().__init__()
        self.dropout = nn.Dropout3d(dropout) if dropout > 0 else nn.Identity()
        self.convs = nn.Sequential(*[_ConvUnit(channels, channels, k, norm) for _ in range(n)])

    def forward(self, x: Tensor) -> Tensor:
        return self.convs(self.dropout(x)) + x


class VNet(nn.Module):
    """3D V-Net regressing a 7T patch from a 3T patch.

    Args:
        config: the architecture.

    Shapes:
        (B, in_channels, D, H, W) -> (B, out_channels, D, H, W), with D, H, W divisible by
        ``2**len(down_convs)`` (16 for the ``vnet`` preset; its training patches are 64^3).
    """

    def __init__(self, config: VNetConfig) -> None:
        super().__init__()
        if not isinstance(config, VNetConfig):
            raise ValueError(f"VNet needs a VNetConfig, got {type(config).__name__}")
        self.config = cfg = config
        k, base = cfg.kernel_size, cfg.base_channels
        n_down = len(cfg.down_convs)

        self.input_unit = _ConvUnit(cfg.in_channels, base, k, cfg.norm)
        self.input_extra = nn.Sequential(*[_ConvUnit(base, base, k, cfg.norm) for _ in range(cfg.input_convs - 1)])
        # Milletari adds the input to the first stage's output; with one input channel that is a broadcast,
        # otherwise a 1x1x1 projection matches the channels.
        self.input_skip: nn.Module = (nn.Identity() if cfg.in_channels in (1, base)
                                      else nn.Conv3d(cfg.in_channels, base, 1))

        self.down = nn.ModuleList()
        self.down_stages = nn.ModuleList()
        ch = base
        for i, n in enumerate(cfg.down_convs):
            deep = i >= n_down - 2
            self.down.append(nn.Sequential(nn.Conv3d(ch, 2 * ch, 2, stride=2, bias=cfg.norm == "none"),
                                           _norm(cfg.norm, 2 * ch), nn.PReLU(2 * ch)))
            ch *= 2
            self.down_stages.append(_ResidualStage(ch, n, k, cfg.norm, cfg.dropout if deep else 0.0))

        self.up = nn.ModuleList()
        self.up_stages = nn.ModuleList()
        for i, n in enumerate(cfg.up_convs):
            skip_ch = base * 2 ** (n_down - 1 - i)
            self.up.append(nn.Sequential(nn.ConvTranspose3d(ch, skip_ch, 2, stride=2, bias=cfg.norm == "none"),
                                         _norm(cfg.norm, skip_ch), nn.PReLU(skip_ch)))
            ch = 2 * skip_ch
            self.up_stages.append(_ResidualStage(ch, n, k, cfg.norm, cfg.dropout))
        self.output_conv = nn.Conv3d(ch, cfg.out_channels, 1)
        if cfg.global_residual:
            # the residual starts at zero: an untrained network returns its input patch (the identity)
            nn.init.zeros_(self.output_conv.weight)
            nn.init.zeros_(self.output_conv.bias)

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """Run the network; ``context`` is accepted for a uniform trainer interface and ignored."""
        cfg = self.config
        if x.ndim != 5 or x.shape[1] != cfg.in_channels:
            raise ValueError(f"V-Net input must have shape (B, {cfg.in_channels}, D, H, W), got {tuple(x.shape)}")
        check_divisible(tuple(x.shape[2:]), cfg.n_downsamplings, "V-Net input", "the paper's patches are 64^3")
        h = self.input_extra(self.input_unit(x))
        h = h + self.input_skip(x)  # broadcasts a one-channel input over the base channels
        skips: List[Tensor] = [h]
        for down, stage in zip(self.down, self.down_stages):
            d = down(h)
            h = stage(d)
            skips.append(h)
        skips.pop()  # the deepest output is h itself
        for up, stage in zip(self.up, self.up_stages):
            h = stage(torch.cat([up(h), skips.pop()], dim=1))
        out = self.output_conv(h)
        return out + x if cfg.global_residual else out
