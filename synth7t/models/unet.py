"""The conditional 2.5D U-Net of Gicquel et al. (§2.4, Figure A.6): the "U-Net" model and the GAN generator.

Input: ``n_input_slices`` neighbouring axial 3T slices ``(B, n_input_slices, H, W)`` and the context
``(B, 4)`` (age in years, sex, diagnosis, slice location; see :func:`make_context`). Output: the
synthetic 7T centre slice ``(B, 1, H, W)``. There is no final normalisation layer (§2.4, third change).

Beyond the paper, a U-Net with ``plane_condition`` (multi-view 2.5D) slices along any of the three planes and
reads a (B, 5) context whose last column is the plane's code; it also takes the paper's (B, 4) context while a
plane is set with :meth:`ConditionalUNet.set_plane` / :meth:`ConditionalUNet.using_plane` (how
:func:`synth7t.inference.volume.predict_volume` drives it plane by plane).
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Callable, Iterator, List, Optional, Sequence, Union

import numpy as np

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .blocks import AttentionBlock, ContextEncoder, Downsample, ResBlock, Upsample, check_divisible
from .config import PLANES, UNetConfig, check_planes

__all__ = ["ConditionalUNet", "make_context", "slice_location", "plane_code"]

_SEX_CODES = {"f": 0.0, "female": 0.0, "m": 1.0, "male": 1.0}


def slice_location(s: Union[float, Sequence[float], np.ndarray, Tensor], bottom: Union[float, Tensor],
                   top: Union[float, Tensor]) -> Union[float, np.ndarray, Tensor]:
    """Approximate slice location of §2.4: ``(2s - (top + bottom)) / (top - bottom)``.

    ``bottom`` and ``top`` are the indices of the lowest and highest axial slices that contain brain; ``bottom``
    maps to -1, the middle slice to 0 and ``top`` to +1. Slices outside the brain fall outside [-1, 1].

    Args:
        s: slice index or indices: a number (returns a float), a sequence or numpy array (returns a float
            numpy array of the same shape) or a tensor (returns a floating tensor, on its device).
        bottom: index of the lowest brain slice (a number, or an array or tensor broadcastable with ``s``).
        top: index of the highest brain slice (same kinds as ``bottom``).

    Raises:
        ValueError: when ``top == bottom`` (numbers or arrays; not checked for tensors), which has no defined
            location.
    """
    if not isinstance(top, Tensor) and not isinstance(bottom, Tensor) and np.any(np.equal(top, bottom)):
        raise ValueError(f"slice_location needs top != bottom (the brain's highest and lowest slices), "
                         f"got bottom={bottom}, top={top}")
    if isinstance(s, Tensor):
        return (2 * s - (top + bottom)) / (top - bottom)
    if np.ndim(s) == 0 and not isinstance(s, np.ndarray):
        return (2 * float(s) - (top + bottom)) / (top - bottom)
    return (2 * np.asarray(s, dtype=float) - (top + bottom)) / (top - bottom)


def _sex_value(v: object) -> float:
    if isinstance(v, str):
        key = v.strip().lower()
        if key not in _SEX_CODES:
            raise ValueError(f"sex must be 0/1 or one of {sorted(_SEX_CODES)}, got {v!r}")
        return _SEX_CODES[key]
    f = float(v)  # type: ignore[arg-type]
    if f not in (0.0, 1.0):
        raise ValueError(f"sex must be 0 (female) or 1 (male), got {v!r}")
    return f


def _diagnosis_value(v: object) -> float:
    if v is None:
        return math.nan
    f = float(v)  # type: ignore[arg-type]
    if f not in (0.0, 1.0) and not math.isnan(f):
        raise ValueError(f"impaired must be 0, 1, True, False or None (unknown), got {v!r}")
    return f


def _column(value: object, name: str, convert: Optional[Callable[[object], float]] = None) -> Tensor:
    """One context column as a float32 1-D tensor; ``convert`` maps each element (codes, None)."""
    if isinstance(value, Tensor):
        items: object = value.detach().cpu().reshape(-1).tolist() if value.ndim <= 1 else value
    elif isinstance(value, np.ndarray):
        items = value.reshape(-1).tolist() if value.ndim <= 1 else value
    elif isinstance(value, (list, tuple)):
        items = list(value)
    else:
        items = [value]
    if not isinstance(items, list):
        shape = tuple(getattr(value, "shape", ()))
        raise ValueError(f"{name} must be a scalar or a 1-D sequence, got shape {shape}")
    values = [convert(v) if convert is not None else float(v) for v in items]  # type: ignore[arg-type]
    return torch.tensor(values, dtype=torch.float32, device="cpu")  # CPU even inside a device context


def plane_code(plane: object) -> float:
    """The context code of a slicing plane: 0 axial, 1 coronal, 2 sagittal (names, short forms or the codes)."""
    if isinstance(plane, (int, float, np.integer, np.floating)) and not isinstance(plane, bool):
        if float(plane) not in (0.0, 1.0, 2.0):
            raise ValueError(f"plane code must be 0 (axial), 1 (coronal) or 2 (sagittal), got {plane!r}")
        return float(plane)
    return float(PLANES.index(check_planes([plane], "plane")[0]))


def make_context(age: object, sex: object, impaired: object, slice_location: object,
                 plane: object = None) -> Tensor:
    """Build the (B, 4) context tensor that :class:`ConditionalUNet` expects (B, 5 with ``plane``).

    Columns (in this order): age in **years** (the model standardises it itself as
    ``(age - 70) / 10``, see :class:`~synth7t.models.config.UNetConfig`), sex (0 female, 1 male;
    ``"F"``/``"M"``/``"female"``/``"male"`` accepted), diagnosis (1 cognitively impaired, i.e. MCI or
    dementia; 0 unimpaired, i.e. CN or SCD; ``None`` for unknown, stored as NaN, which only a
    ``use_diagnosis=False`` model may receive) and slice location in [-1, 1] (see :func:`slice_location`).
    Each argument is a scalar or a 1-D sequence/array/tensor; scalars broadcast to the batch size.
    ``plane`` (a plane-conditioned model's fifth column): ``"axial"``, ``"coronal"``, ``"sagittal"`` (or
    ``a``/``c``/``s``, or the codes 0/1/2), one or one per sample; the slice location is then along that
    plane's axis.

    Returns:
        float32 tensor (B, 4) on the CPU, or (B, 5) with ``plane``.

    Raises:
        ValueError: on mismatched lengths, an unknown sex code, or a diagnosis other than 0/1/None.
    """
    cols = [_column(age, "age"), _column(sex, "sex", _sex_value),
            _column(impaired, "impaired", _diagnosis_value), _column(slice_location, "slice_location")]
    names = ["age", "sex", "impaired", "slice_location"]
    if plane is not None:
        cols.append(_column(plane, "plane", plane_code))
        names.append("plane")
    n = max(c.numel() for c in cols)
    for c, name in zip(cols, names):
        if c.numel() not in (1, n):
            raise ValueError(f"{name} has {c.numel()} values but the batch has {n}; give one value or one per sample")
    return torch.stack([c.expand(n) for c in cols], dim=1).contiguous()


class _Step(nn.Module):
    """A residual block optionally followed by an attention block (the figure's "Res" / "Res+CA")."""

    def __init__(self, res: ResBlock, attn: Optional[AttentionBlock]) -> None:
        super().__init__()
        self.res = res
        self.attn = attn

    def forward(self, x: Tensor, tokens: Optional[Tensor]) -> Tensor:
        x = self.res(x)
        if self.attn is not None:
            x = self.attn(x, tokens)
        return x


class ConditionalUNet(nn.Module):
    """Attention U-Net with AdaDM residual blocks and context cross-attention (Figure A.6).

    Layout (``k = len(channel_mult)`` stages, ``c_i = channels * channel_mult[i-1]``):

    * input 3x3 convolution ``n_input_slices -> c_1``;
    * encoder stage ``i``: ``num_res_blocks`` residual blocks (each followed by an attention block when
      ``i`` is in ``ca_stages``), then a strided-convolution downsampling except after the last stage;
    * bottleneck: residual block, self- + cross-attention block (``bottleneck_attention``), residual block;
    * decoder stage ``i`` (deepest first): ``num_res_blocks + 1`` residual blocks, each reading the
      concatenation of the running features and one encoder skip, with attention as in the encoder, then a
      nearest + convolution upsampling except at stage 1;
    * output: SiLU then 3x3 convolution ``c_1 -> out_channels``, no normalisation; with ``global_residual``
      (not in the paper) the centre input slice is added to it.

    Args:
        config: the architecture.

    Shapes:
        ``x`` (B, n_input_slices, H, W) with H, W divisible by ``2**(len(channel_mult)-1)``;
        ``context`` (B, 4) -> (B, out_channels, H, W).
    """

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        if not isinstance(config, UNetConfig):
            raise ValueError(f"ConditionalUNet needs a UNetConfig, got {type(config).__name__}")
        self.config = config
        cfg = config
        chans = cfg.stage_channels

        if cfg.plane_condition and not cfg.uses_context:
            raise ValueError("plane_condition needs a U-Net that reads its context (ca_stages or "
                             "bottleneck_attention)")
        self.context_encoder: Optional[ContextEncoder] = (
            ContextEncoder(cfg.context_dim, cfg.use_diagnosis, cfg.age_center, cfg.age_scale,
                           use_plane=cfg.plane_condition)
            if cfg.uses_context else None)
        #: plane code appended to a (B, 4) context by a plane-conditioned model (see :meth:`set_plane`)
        self._plane: Optional[float] = None

        def attention(ch: int, stage: int) -> Optional[AttentionBlock]:
            if stage not in cfg.ca_stages:
                return None
            return AttentionBlock(ch, cfg.num_groups, cfg.context_dim, cfg.num_heads,
                                  self_attention=cfg.ca_self_attention, cross_attention=True,
                                  ff_mult=cfg.ff_mult, dropout=cfg.dropout,
                                  positional_encoding=cfg.use_positional_encoding)

        def res(cin: int, cout: int) -> ResBlock:
            return ResBlock(cin, cout, cfg.num_groups, cfg.dropout, cfg.use_adadm)

        self.input_conv = nn.Conv2d(cfg.n_input_slices, chans[0], 3, padding=1)
        skip_channels: List[int] = [chans[0]]
        self.encoder = nn.ModuleList()
        self.downsamples = nn.ModuleList()
        ch = chans[0]
        for stage, stage_ch in enumerate(chans, start=1):
            steps = nn.ModuleList()
            for _ in range(cfg.num_res_blocks):
                steps.append(_Step(res(ch, stage_ch), attention(stage_ch, stage)))
                ch = stage_ch
                skip_channels.append(ch)
            self.encoder.append(steps)
            if stage < cfg.n_stages:
                self.downsamples.append(Downsample(ch))
                skip_channels.append(ch)

        self.mid_res1 = res(ch, ch)
        self.mid_attn: Optional[AttentionBlock] = (
            AttentionBlock(ch, cfg.num_groups, cfg.context_dim, cfg.num_heads, self_attention=True,
                           cross_attention=True, ff_mult=cfg.ff_mult, dropout=cfg.dropout,
                           positional_encoding=cfg.use_positional_encoding)
            if cfg.bottleneck_attention else None)
        self.mid_res2 = res(ch, ch)

        self.decoder = nn.ModuleList()
        self.upsamples = nn.ModuleList()
        for stage in range(cfg.n_stages, 0, -1):
            stage_ch = chans[stage - 1]
            steps = nn.ModuleList()
            for _ in range(cfg.num_res_blocks + 1):
                steps.append(_Step(res(ch + skip_channels.pop(), stage_ch), attention(stage_ch, stage)))
                ch = stage_ch
            self.decoder.append(steps)
            if stage > 1:
                self.upsamples.append(Upsample(ch))

        self.output_conv = nn.Conv2d(ch, cfg.out_channels, 3, padding=1)
        if cfg.global_residual:
            # the residual starts at zero: an untrained network returns its centre input slice (the identity)
            nn.init.zeros_(self.output_conv.weight)
            nn.init.zeros_(self.output_conv.bias)

    def set_plane(self, plane: Optional[str]) -> None:
        """Choose the plane a plane-conditioned model assumes for a (B, 4) context (``None``: none; then it needs
        the (B, 5) context). Without ``plane_condition`` only ``"axial"`` or ``None`` are accepted: the paper's
        models slice axially."""
        if plane is None:
            self._plane = None
            return
        code = plane_code(plane)
        if not self.config.plane_condition and code != 0.0:
            raise ValueError(f"this U-Net was trained on axial slices only (no plane_condition): it cannot be "
                             f"set to the {PLANES[int(code)]} plane")
        self._plane = code if self.config.plane_condition else None

    @contextmanager
    def using_plane(self, plane: Optional[str]) -> Iterator["ConditionalUNet"]:
        """:meth:`set_plane` inside a ``with`` block, restoring the previous plane afterwards."""
        before = self._plane
        self.set_plane(plane)
        try:
            yield self
        finally:
            self._plane = before

    def _with_plane(self, context: Tensor) -> Tensor:
        """A plane-conditioned model's (B, 5) context: as given, or a (B, 4) one plus the set plane's code."""
        if context.ndim == 2 and context.shape[1] == 4:
            if self._plane is None:
                raise ValueError("this U-Net is conditioned on the slicing plane: pass a (B, 5) context built with "
                                 "synth7t.models.make_context(..., plane=...), or choose the plane first with "
                                 "model.set_plane('axial' | 'coronal' | 'sagittal')")
            code = torch.full((context.shape[0], 1), self._plane, dtype=context.dtype, device=context.device)
            return torch.cat([context, code], dim=1)
        return context

    def encode_context(self, context: Tensor) -> Optional[Tensor]:
        """Context tokens (B, T, context_dim), or ``None`` for a network without cross-attention."""
        if self.context_encoder is None:
            return None
        return self.context_encoder(context.to(self.input_conv.weight.dtype))

    def forward(self, x: Tensor, context: Optional[Tensor] = None) -> Tensor:
        cfg = self.config
        if x.ndim != 4 or x.shape[1] != cfg.n_input_slices:
            raise ValueError(f"input must have shape (B, {cfg.n_input_slices}, H, W) (n_input_slices="
                             f"{cfg.n_input_slices} neighbouring slices), got {tuple(x.shape)}")
        check_divisible(tuple(x.shape[2:]), cfg.n_downsamplings, "input", "the paper crops to 288x224")
        tokens: Optional[Tensor] = None
        if self.context_encoder is not None:
            if context is None:
                raise ValueError("this U-Net is conditioned: pass context of shape (B, 4) built with "
                                 "synth7t.models.make_context(age, sex, impaired, slice_location)")
            if self.config.plane_condition:
                context = self._with_plane(context)
            if context.shape[0] != x.shape[0]:
                raise ValueError(f"context batch {context.shape[0]} differs from input batch {x.shape[0]}")
            tokens = self.encode_context(context)

        h = self.input_conv(x)
        skips = [h]
        for i, steps in enumerate(self.encoder):
            for step in steps:
                h = step(h, tokens)
                skips.append(h)
            if i < len(self.downsamples):
                h = self.downsamples[i](h)
                skips.append(h)

        h = self.mid_res1(h)
        if self.mid_attn is not None:
            h = self.mid_attn(h, tokens)
        h = self.mid_res2(h)

        for i, steps in enumerate(self.decoder):
            for step in steps:
                h = step(torch.cat([h, skips.pop()], dim=1), tokens)
            if i < len(self.upsamples):
                h = self.upsamples[i](h)
        out = self.output_conv(F.silu(h))
        if cfg.global_residual:
            mid = cfg.n_input_slices // 2
            out = out + x[:, mid:mid + 1]
        return out
