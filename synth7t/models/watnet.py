"""WATNet baseline (Qu et al. 2020, "Synthesized 7T MRI from 3T MRI via deep learning in spatial and
wavelet domains"), in 2D (neighbouring slices) and 3D (patches).

The idea: a CNN works in the spatial domain, and at every scale its features are modulated by a
*wavelet-domain affine transformation* (WAT). The input is decomposed with a multi-level Haar transform;
the sub-bands of level ``l`` (which have exactly the spatial size of the features after ``l``
downsamplings) go through a small convolutional network that predicts a per-pixel, per-channel scale
``gamma`` and shift ``beta``, and the features become ``ReLU(F * gamma + beta)``. High-frequency bands thus
steer where the network sharpens. Layout:

* head: two 3x3 convolutions;
* ``levels`` x [distillation block ending in a stride-2 1x1 compression, then the WAT of that level]
  (levels below the last use the detail bands; the last also gets the approximation band);
* ``n_interim`` distillation blocks at the coarsest scale;
* ``levels`` x [distillation block, then a stride-2 transposed convolution];
* a final ``final_kernel`` convolution to one channel, added to the input's centre slice (global residual:
  the network learns the 3T->7T difference).

The distillation block follows the information-distillation pattern: three convolutions, a quarter of the
channels split off and kept, three more convolutions on the rest, and a 1x1 compression of
``[that output + (input, kept part)]``. Unlike the implementation the paper ran (Cui et al.'s, which reuses
one block's weights at every level and feeds the same convolution to scale and shift), every block here
has its own weights and the WAT has separate scale and shift heads, as Qu et al. describe.

The Haar transform is computed on the device with fixed orthonormal filters, so the network is
differentiable end to end and needs no wavelet package.
"""

from __future__ import annotations

import itertools
from typing import List

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .blocks import check_divisible
from .config import WATNetConfig

__all__ = ["WATNet", "haar_dwt", "haar_pyramid"]


def _haar_filters(spatial_dims: int) -> Tensor:
    """The 2^d separable Haar analysis filters (orthonormal), shape (2^d, 1, 2, ..., 2); filter 0 is low-pass."""
    low = torch.tensor([1.0, 1.0]) / 2 ** 0.5
    high = torch.tensor([1.0, -1.0]) / 2 ** 0.5
    bank = []
    for combo in itertools.product((low, high), repeat=spatial_dims):
        f = combo[0]
        for g in combo[1:]:
            f = torch.tensordot(f, g, dims=0)
        bank.append(f)
    return torch.stack(bank).unsqueeze(1)


def haar_dwt(x: Tensor, filters: Tensor) -> Tensor:
    """One level of the orthonormal Haar transform of every channel.

    Args:
        x: (B, C, *S) with every spatial size even.
        filters: from ``_haar_filters(len(S))`` (on ``x``'s device).

    Returns:
        (B, C * 2^d, *S/2): for each input channel, its 2^d bands in a row, approximation first.
    """
    b, c = x.shape[:2]
    spatial = x.shape[2:]
    conv = F.conv2d if len(spatial) == 2 else F.conv3d
    bands = conv(x.reshape(b * c, 1, *spatial), filters.to(x.dtype), stride=2)
    return bands.reshape(b, c * filters.shape[0], *bands.shape[2:])


def haar_pyramid(x: Tensor, levels: int, filters: Tensor) -> List[Tensor]:
    """Multi-level Haar decomposition, as the WATs consume it.

    Returns:
        ``levels`` tensors; entry ``l`` (0-based) has the spatial size ``S / 2^(l+1)`` and holds the detail
        bands of level ``l+1`` of every channel, ``(B, C * (2^d - 1), ...)``; the last entry also holds
        the approximation, ``(B, C * 2^d, ...)``.
    """
    n_bands = filters.shape[0]
    out: List[Tensor] = []
    approx = x
    for level in range(levels):
        bands = haar_dwt(approx, filters)
        b, _ = bands.shape[:2]
        spatial = bands.shape[2:]
        grouped = bands.reshape(b, -1, n_bands, *spatial)
        approx = grouped[:, :, 0]
        if level == levels - 1:
            out.append(bands)
        else:
            out.append(grouped[:, :, 1:].reshape(b, -1, *spatial))
    return out


def _conv(spatial_dims: int) -> type:
    return nn.Conv2d if spatial_dims == 2 else nn.Conv3d


class _DistillBlock(nn.Module):
    """Information-distillation block; ``stride`` 2 in the final 1x1 compression downsamples.

    Shapes: (B, F, *S) -> (B, F, *S / stride)
    """

    def __init__(self, spatial_dims: int, features: int, stride: int = 1) -> None:
        super().__init__()
        conv = _conv(spatial_dims)
        q = features // 4
        self.keep = q
        self.first = nn.Sequential(
            conv(features, 3 * q, 3, padding=1), nn.ReLU(inplace=True),
            conv(3 * q, 2 * q, 3, padding=1), nn.ReLU(inplace=True),
            conv(2 * q, features, 3, padding=1), nn.ReLU(inplace=True))
        self.second = nn.Sequential(
            conv(3 * q, features, 3, padding=1), nn.ReLU(inplace=True),
            conv(features, 3 * q, 3, padding=1), nn.ReLU(inplace=True),
            conv(3 * q, features + q, 3, padding=1), nn.ReLU(inplace=True))
        self.compress = conv(features + q, features, 1, stride=stride)

    def forward(self, x: Tensor) -> Tensor:
        kept, rest = self.first(x).split([self.keep, x.shape[1] - self.keep], dim=1)
        fused = self.second(rest) + torch.cat([x, kept], dim=1)
        return F.relu(self.compress(fused))


class _WaveletAffine(nn.Module):
    """Wavelet-domain affine transformation: ``ReLU(F * gamma(w) + beta(w))``.

    Shapes: features (B, F, *S), bands (B, n_bands, *S) -> (B, F, *S)
    """

    def __init__(self, spatial_dims: int, n_bands: int, features: int, hidden: int) -> None:
        super().__init__()
        conv = _conv(spatial_dims)
        self.trunk = nn.Sequential(conv(n_bands, hidden, 3, padding=1), nn.ReLU(inplace=True))
        self.gamma = conv(hidden, features, 3, padding=1)
        self.beta = conv(hidden, features, 3, padding=1)

    def forward(self, feats: Tensor, bands: Tensor) -> Tensor:
        t = self.trunk(bands)
        return F.relu(feats * self.gamma(t) + self.beta(t))


class WATNet(nn.Module):
    """WATNet in 2D or 3D.

    Args:
        config: the architecture.

    Shapes:
        2D: (B, n_input_slices, H, W) -> (B, 1, H, W); 3D: (B, 1, D, H, W) -> (B, 1, D, H, W); spatial sizes
        divisible by ``2**levels``.
    """

    def __init__(self, config: WATNetConfig) -> None:
        super().__init__()
        if not isinstance(config, WATNetConfig):
            raise ValueError(f"WATNet needs a WATNetConfig, got {type(config).__name__}")
        self.config = cfg = config
        d, f = cfg.spatial_dims, cfg.features
        conv = _conv(d)
        self.register_buffer("haar", _haar_filters(d), persistent=False)
        n_bands = 2 ** d
        cin = cfg.n_input_slices
        self.head = nn.Sequential(conv(cin, f, 3, padding=1), nn.ReLU(inplace=True),
                                  conv(f, f, 3, padding=1), nn.ReLU(inplace=True))
        self.down = nn.ModuleList(_DistillBlock(d, f, stride=2) for _ in range(cfg.levels))
        self.wat = nn.ModuleList(
            _WaveletAffine(d, cin * (n_bands if level == cfg.levels - 1 else n_bands - 1), f, cfg.wavelet_hidden)
            for level in range(cfg.levels))
        self.interim = nn.Sequential(*[_DistillBlock(d, f) for _ in range(cfg.n_interim)])
        transposed = nn.ConvTranspose2d if d == 2 else nn.ConvTranspose3d
        self.up = nn.ModuleList(
            nn.Sequential(_DistillBlock(d, f), transposed(f, f, 4, stride=2, padding=1))
            for _ in range(cfg.levels))
        self.final = conv(f, 1, cfg.final_kernel, padding=cfg.final_kernel // 2)

    def _expected(self) -> str:
        cfg = self.config
        return f"(B, {cfg.n_input_slices}, H, W)" if cfg.spatial_dims == 2 else "(B, 1, D, H, W)"

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """Run the network; ``context`` is accepted for a uniform trainer interface and ignored."""
        cfg = self.config
        if x.ndim != cfg.spatial_dims + 2 or x.shape[1] != cfg.n_input_slices:
            raise ValueError(f"WATNet-{cfg.spatial_dims}D input must have shape {self._expected()}, "
                             f"got {tuple(x.shape)}")
        check_divisible(tuple(x.shape[2:]), cfg.levels, "WATNet input", "e.g. 64x64 patches")
        bands = haar_pyramid(x, cfg.levels, self.haar)
        h = self.head(x)
        for down, wat, w in zip(self.down, self.wat, bands):
            h = wat(down(h), w)
        h = self.interim(h)
        for up in self.up:
            h = up(h)
        centre = x[:, cfg.n_input_slices // 2 : cfg.n_input_slices // 2 + 1]
        return self.final(h) + centre
