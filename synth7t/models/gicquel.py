"""The network of the authors' released checkpoints (Gicquel et al.'s ``UNetModel``), to run their weights.

The paper's U-Net is :class:`synth7t.models.ConditionalUNet`, written from the paper. The checkpoints the authors
released (``my_unet_no_diag.pt``, ``my_unetGanNoDiag.pt`` in DeMONLab-BioFINDER/SuperResolutionMalo) hold the
weights of their own code, a diffusion-style U-Net (``func/WarvitoCodes/models_unet_v2_conditioned_AdaDM_2D.py``)
whose layout differs from ours. :class:`GicquelUNet` computes what theirs computes, module for module, so that
their state dict (``module.`` prefix of ``nn.DataParallel`` removed) loads into it key for key:

* a sinusoidal timestep embedding and its two-layer MLP, fed the constant timestep 1 of their training and
  inference (kept as it is rather than folded into biases, so that the keys stay theirs; computed once per call);
* residual blocks: GroupNorm (eps 1e-6), SiLU, 3x3 convolution, plus the projected time embedding, GroupNorm, SiLU,
  3x3 convolution; with AdaDM the residual branch is multiplied by ``exp(phi(log std(x)))`` (``phi`` a 1x1
  convolution of one channel, the standard deviation unbiased over channels and pixels); a 1x1 convolution on the
  skip when the width changes;
* a spatial transformer at the resolutions their ``attention_res`` lists (downsampling factor 1, 2, 4, ...) and
  between the two bottleneck blocks when ``use_mid_attention``: GroupNorm, 1x1 projection, one block of
  self-attention, cross-attention to the context tokens and a GEGLU feed-forward (each after a LayerNorm, each
  residual; one head as wide as the stage), 1x1 projection back and the block's input added;
* downsampling by a stride-2 3x3 convolution, upsampling by nearest-neighbour doubling and a 3x3 convolution; with
  ``use_initial_down`` a stride-2 convolution first and a doubling before the output;
* the output: SiLU and a 3x3 convolution (no normalisation before it, as theirs).

The context is their raw token sequence ``(B, tokens, 1)``: age in years, sex (1 = female), with the diagnosis
model their diagnosis token (1 = SCD or cognitively normal), and the slice position ``2 (j - mid) / n_slices``.
:func:`context_tokens` builds it from synth7t's :func:`~synth7t.models.make_context` tensor (sex 1 = male,
``impaired`` 1 = MCI or dementia, location in [-1, 1] over the brain), so that ``make_context`` means the same for
every model; cross-attention does not depend on the order of the tokens, only on their values and number.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import GicquelUNetConfig

__all__ = ["GicquelUNet", "context_tokens"]


def _group_norm(channels: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(groups, channels, eps=1e-6, affine=True)


class _Res(nn.Module):
    """A residual block as theirs (the keys ``in_layers``, ``phi``, ``emb_layers``, ``out_layers``,
    ``skip_connection``)."""

    def __init__(self, cin: int, cout: int, emb: int, groups: int, ada: bool) -> None:
        super().__init__()
        self.ada = ada
        self.in_layers = nn.Sequential(_group_norm(cin, groups), nn.SiLU(), nn.Conv2d(cin, cout, 3, padding=1))
        self.phi = nn.Conv2d(1, 1, 1)
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb, cout))
        self.out_layers = nn.Sequential(_group_norm(cout, groups), nn.SiLU(), nn.Dropout(0.0),
                                        nn.Conv2d(cout, cout, 3, padding=1))
        self.skip_connection = nn.Identity() if cin == cout else nn.Conv2d(cin, cout, 1)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.in_layers(x) + self.emb_layers(emb).to(x.dtype)[:, :, None, None]
        h = self.out_layers(h)
        if self.ada:
            spread = torch.std(x.float(), dim=(1, 2, 3), keepdim=True)
            h = h * torch.exp(self.phi(torch.log(spread))).to(h.dtype)
        return self.skip_connection(x) + h


class _Attention(nn.Module):
    """One head of (cross-)attention over tokens: ``to_q``, ``to_k``, ``to_v`` without bias, ``to_out.0``."""

    def __init__(self, dim: int, context_dim: Optional[int] = None) -> None:
        super().__init__()
        kv = dim if context_dim is None else context_dim
        self.scale = dim ** -0.5
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(kv, dim, bias=False)
        self.to_v = nn.Linear(kv, dim, bias=False)
        self.to_out = nn.Sequential(nn.Linear(dim, dim), nn.Dropout(0.0))

    def forward(self, x: Tensor, context: Optional[Tensor] = None) -> Tensor:
        source = x if context is None else context
        q, k, v = self.to_q(x), self.to_k(source), self.to_v(source)
        weights = torch.softmax(torch.bmm(q, k.transpose(1, 2)) * self.scale, dim=-1)
        return self.to_out(torch.bmm(weights, v))


class _GatedFeedForward(nn.Module):
    """``net.0.proj`` (to twice the hidden width: value and gate), value x GELU(gate), ``net.2`` back."""

    def __init__(self, dim: int, mult: int = 4) -> None:
        super().__init__()
        hidden = dim * mult
        self.net = nn.Sequential(_Gate(dim, hidden), nn.Dropout(0.0), nn.Linear(hidden, dim))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class _Gate(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, 2 * hidden)

    def forward(self, x: Tensor) -> Tensor:
        value, gate = self.proj(x).chunk(2, dim=-1)
        return value * F.gelu(gate)


class _TransformerBlock(nn.Module):
    def __init__(self, dim: int, context_dim: int) -> None:
        super().__init__()
        self.attn1 = _Attention(dim)
        self.ff = _GatedFeedForward(dim)
        self.attn2 = _Attention(dim, context_dim)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)

    def forward(self, x: Tensor, context: Tensor) -> Tensor:
        x = x + self.attn1(self.norm1(x))
        x = x + self.attn2(self.norm2(x), context)
        return x + self.ff(self.norm3(x))


class _SpatialTransformer(nn.Module):
    def __init__(self, channels: int, groups: int, context_dim: int) -> None:
        super().__init__()
        self.norm = _group_norm(channels, groups)
        self.proj_in = nn.Conv2d(channels, channels, 1)
        self.transformer_blocks = nn.ModuleList([_TransformerBlock(channels, context_dim)])
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: Tensor, context: Tensor) -> Tensor:
        b, c, h, w = x.shape
        t = self.proj_in(self.norm(x)).flatten(2).transpose(1, 2)  # (B, HW, C)
        for block in self.transformer_blocks:
            t = block(t, context)
        return x + self.proj_out(t.transpose(1, 2).reshape(b, c, h, w))


class _Down(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.op = nn.Conv2d(cin, cout, 3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.op(x)


class _Up(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class _Seq(nn.ModuleList):
    """A stage of blocks, each given what it takes (time embedding, context or nothing)."""

    def forward(self, x: Tensor, emb: Tensor, context: Tensor) -> Tensor:  # type: ignore[override]
        for layer in self:
            if isinstance(layer, _Res):
                x = layer(x, emb)
            elif isinstance(layer, _SpatialTransformer):
                x = layer(x, context)
            else:
                x = layer(x)
        return x


class GicquelUNet(nn.Module):
    """The authors' released U-Net (see the module), built from a :class:`GicquelUNetConfig`.

    ``forward(x, tokens)``: ``x`` the input stack ``(B, in_channels, H, W)`` with ``H`` and ``W`` divisible by
    ``2 ** config.n_downsamplings``, ``tokens`` their raw context ``(B, n_tokens, context_dim)``
    (:func:`context_tokens`). Returns ``(B, out_channels, H, W)``.
    """

    def __init__(self, config: GicquelUNetConfig) -> None:
        super().__init__()
        self.config = cfg = config
        c, groups, ada = cfg.channels, cfg.num_groups, cfg.use_ada
        emb = 4 * c
        self.time_embed = nn.Sequential(nn.Linear(c, emb), nn.SiLU(), nn.Linear(emb, emb))
        first = _Down(cfg.in_channels, c) if cfg.use_initial_down else nn.Conv2d(cfg.in_channels, c, 3, padding=1)
        self.input_blocks = nn.ModuleList([_Seq([first])])
        skips, ch, factor = [c], c, 1
        levels = len(cfg.channel_mult)
        for level, mult in enumerate(cfg.channel_mult):
            for _ in range(cfg.num_res_blocks):
                blocks: list = [_Res(ch, c * mult, emb, groups, ada)]
                ch = c * mult
                if factor in cfg.attention_resolutions:
                    blocks.append(_SpatialTransformer(ch, groups, cfg.context_dim))
                self.input_blocks.append(_Seq(blocks))
                skips.append(ch)
            if level < levels - 1:
                self.input_blocks.append(_Seq([_Down(ch, ch)]))
                skips.append(ch)
                factor *= 2
        middle: list = [_Res(ch, ch, emb, groups, ada)]
        if cfg.use_mid_attention:
            middle.append(_SpatialTransformer(ch, groups, cfg.context_dim))
        middle.append(_Res(ch, ch, emb, groups, ada))
        self.middle_block = _Seq(middle)
        self.output_blocks = nn.ModuleList()
        for level in reversed(range(levels)):
            for i in range(cfg.num_res_blocks + 1):
                blocks = [_Res(ch + skips.pop(), c * cfg.channel_mult[level], emb, groups, ada)]
                ch = c * cfg.channel_mult[level]
                if factor in cfg.attention_resolutions:
                    blocks.append(_SpatialTransformer(ch, groups, cfg.context_dim))
                if level and i == cfg.num_res_blocks:
                    blocks.append(_Up(ch))
                    factor //= 2
                self.output_blocks.append(_Seq(blocks))
        if cfg.use_initial_down:
            self.final_up = _Up(ch)
        self.out = nn.Sequential(nn.SiLU(), nn.Conv2d(c, cfg.out_channels, 3, padding=1))
        half = c // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / half)
        # the sinusoidal embedding of their constant timestep 1 (cos, then sin; a zero for an odd width)
        step = torch.cat([torch.cos(freqs), torch.sin(freqs), torch.zeros(c % 2)])
        self.register_buffer("timestep_features", step[None], persistent=False)

    def forward(self, x: Tensor, tokens: Tensor) -> Tensor:
        divisor = 2 ** self.config.n_downsamplings
        if x.ndim != 4 or x.shape[-2] % divisor or x.shape[-1] % divisor:
            raise ValueError(f"input must be (B, {self.config.in_channels}, H, W) with H and W divisible by "
                             f"{divisor}, got {tuple(x.shape)}")
        if tokens.ndim != 3 or tokens.shape[0] != x.shape[0] or tokens.shape[2] != self.config.context_dim:
            raise ValueError(f"tokens must be (B={x.shape[0]}, n_tokens, {self.config.context_dim}), "
                             f"got {tuple(tokens.shape)}")
        emb = self.time_embed(self.timestep_features.to(x.dtype)).expand(x.shape[0], -1)
        tokens = tokens.to(x.dtype)
        h, skips = x, []
        for stage in self.input_blocks:
            h = stage(h, emb, tokens)
            skips.append(h)
        h = self.middle_block(h, emb, tokens)
        for stage in self.output_blocks:
            h = stage(torch.cat([h, skips.pop()], dim=1), emb, tokens)
        if self.config.use_initial_down:
            h = self.final_up(h)
        return self.out(h)


def context_tokens(context: Tensor, token_names: Sequence[str], *, brain_extent: Tensor, n_slices: int) -> Tensor:
    """Their raw context tokens ``(B, len(token_names), 1)`` from synth7t's :func:`make_context` tensor.

    Args:
        context: ``(B, 4)``: age in years, sex (0 female, 1 male), impaired (1 MCI or dementia, NaN unknown), slice
            location in [-1, 1] between the lowest and highest brain slices (:func:`synth7t.models.slice_location`).
        token_names: the model's tokens, from ``age``, ``sex``, ``diagnosis``, ``position``.
        brain_extent: ``top - bottom`` (slices between the lowest and highest brain slice), per sample or one.
        n_slices: the slice count their position divides by (their grid's size along the slicing axis).

    Their tokens: age in years; sex 1 for female (``1 - ours``); diagnosis 1 for SCD or cognitively normal
    (``1 - impaired``; refused when unknown); position ``2 (j - mid) / n_slices = location * extent / n_slices``.
    """
    if context.ndim != 2 or context.shape[1] < 4:
        raise ValueError(f"context must be (B, 4) from synth7t.models.make_context, got {tuple(context.shape)}")
    extent = torch.as_tensor(brain_extent, dtype=torch.float32, device=context.device)
    columns = {"age": context[:, 0], "sex": 1.0 - context[:, 1], "diagnosis": 1.0 - context[:, 2],
               "position": context[:, 3] * extent / float(n_slices)}
    unknown = [t for t in token_names if t not in columns]
    if unknown:
        raise ValueError(f"unknown context token(s) {unknown}; known: {', '.join(columns)}")
    if "diagnosis" in token_names and torch.isnan(context[:, 2]).any():
        raise ValueError("this model is conditioned on the diagnosis: give impaired=0 or 1 (unknown is not allowed)")
    return torch.stack([columns[t] for t in token_names], dim=1)[:, :, None].float()
