"""Building blocks of the conditional U-Net (Appendix A.2): AdaDM, residual blocks, positional encoding,
attention, feed-forward, context tokens, resampling.

Shapes use ``B`` batch, ``C`` channels, ``H, W`` spatial size, ``N = H*W`` tokens, ``T`` context tokens.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "group_norm",
    "AdaDM",
    "ResBlock",
    "sinusoidal_positional_encoding",
    "MultiHeadAttention",
    "FeedForward",
    "AttentionBlock",
    "ContextEncoder",
    "Downsample",
    "Upsample",
    "CONTEXT_COLUMNS",
    "PLANE_COLUMN",
]

#: Column order of the (B, 4) context tensor.
CONTEXT_COLUMNS = ("age", "sex", "diagnosis", "slice_location")
#: The fifth column of a plane-conditioned model's (B, 5) context: the plane code (0 axial, 1 coronal, 2 sagittal).
PLANE_COLUMN = "plane"


def group_norm(channels: int, groups: int) -> nn.GroupNorm:
    """GroupNorm with the small epsilon of the reference diffusion U-Net code (1e-6)."""
    return nn.GroupNorm(num_groups=groups, num_channels=channels, eps=1e-6, affine=True)


class AdaDM(nn.Module):
    r"""Adaptive deviation modulation (Liu et al. 2021, "AdaDM: Enabling normalization for image
    super-resolution").

    Normalisation layers divide features by their standard deviation, which throws away the contrast
    (intensity range) of the input that super-resolution must preserve. AdaDM puts it back: with ``x`` the
    input of a residual block and ``h`` the output of its normalised branch,

    .. math::

        \sigma(x) = \sqrt{\operatorname{Var}_{c,h,w}(x) + \epsilon}, \qquad
        \operatorname{AdaDM}(h, x) = h \cdot \exp\big(w \, \log \sigma(x) + b\big) = h \cdot e^{b}\, \sigma(x)^{w}

    where the variance is the population variance over all channels and pixels of each sample, and
    ``w, b`` are learned scalars (a 1x1 convolution on the one-channel map ``log sigma``), initialised to
    ``w = 1, b = 0`` so the block starts by multiplying its branch by ``sigma(x)``. ``epsilon`` keeps
    ``log`` finite on a blank (all-background) input.

    Args:
        eps: variance floor.

    Shapes:
        ``h``: (B, C_out, *spatial); ``x``: (B, C_in, *spatial_in); output: like ``h``.
    """

    def __init__(self, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(()))
        self.bias = nn.Parameter(torch.zeros(()))

    def log_sigma(self, x: Tensor) -> Tensor:
        """Per-sample ``log sigma(x)``, shape (B, 1, ..., 1) broadcastable to ``x``."""
        dims = tuple(range(1, x.ndim))
        # float32 statistics: a bf16 variance of a near-constant slice is mostly rounding error.
        var = x.float().var(dim=dims, unbiased=False, keepdim=True)
        return 0.5 * torch.log(var + self.eps)

    def forward(self, h: Tensor, x: Tensor) -> Tensor:
        scale = torch.exp(self.weight * self.log_sigma(x) + self.bias)
        return h * scale.to(h.dtype)


class ResBlock(nn.Module):
    """Residual block of Figure A.2: ``skip(x) + AdaDM(conv(drop(act(GN(conv(act(GN(x))))))), x)``.

    ``skip`` is a 1x1 convolution when the channel count changes and the identity otherwise (the
    figure's caption says "if c1 = c2"; it means the opposite). The diffusion time embedding of the
    reference code is left out: it was fed a constant, so it only added a learned per-channel bias.

    Args:
        in_channels, out_channels: channels in and out.
        groups: GroupNorm groups (must divide both channel counts).
        dropout: dropout before the second convolution.
        use_adadm: apply :class:`AdaDM` to the branch.

    Shapes:
        (B, in_channels, H, W) -> (B, out_channels, H, W)
    """

    def __init__(self, in_channels: int, out_channels: int, groups: int, dropout: float = 0.0,
                 use_adadm: bool = True) -> None:
        super().__init__()
        self.norm1 = group_norm(in_channels, groups)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = group_norm(out_channels, groups)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.adadm: Optional[AdaDM] = AdaDM() if use_adadm else None
        self.skip: nn.Module = (nn.Identity() if in_channels == out_channels
                                else nn.Conv2d(in_channels, out_channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        if self.adadm is not None:
            h = self.adadm(h, x)
        return self.skip(x) + h


def sinusoidal_positional_encoding(length: int, channels: int, *, device: Optional[torch.device] = None,
                                   dtype: torch.dtype = torch.float32) -> Tensor:
    r"""Sinusoidal positional encoding of Appendix A.2 (Vaswani et al. 2017).

    For token position ``pos`` (the flattened pixel index) and ``i < c/2``:

    .. math::

        PE(2i, pos) = \sin(pos / 10000^{2i/c}), \qquad PE(2i+1, pos) = \cos(pos / 10000^{2i/c}).

    The paper writes the matrix as ``c x d``; it is returned transposed, ``(length, channels)``, to be
    added to tokens laid out ``(B, N, C)``.

    Args:
        length: number of positions ``d`` (``H*W``).
        channels: encoding width ``c``.
        device, dtype: of the result.

    Returns:
        Tensor (length, channels).
    """
    if length <= 0 or channels <= 0:
        raise ValueError(f"length and channels must be positive, got length={length}, channels={channels}")
    pos = torch.arange(length, device=device, dtype=torch.float32).unsqueeze(1)
    two_i = torch.arange(0, channels, 2, device=device, dtype=torch.float32)
    angles = pos / torch.pow(torch.tensor(10000.0, device=device), two_i / channels)
    pe = torch.zeros(length, channels, device=device, dtype=torch.float32)
    pe[:, 0::2] = torch.sin(angles)
    pe[:, 1::2] = torch.cos(angles[:, : channels // 2])
    return pe.to(dtype)


class MultiHeadAttention(nn.Module):
    """Scaled dot-product attention, equation (1) of Appendix A.2, with multiple heads.

    Queries come from the tokens ``x``; keys and values from ``context`` (cross-attention) or from ``x``
    itself (self-attention). Q, K and V are unbiased projections (the figures' "x W"); the output
    projection is affine ("Linear"). Attention runs through
    :func:`torch.nn.functional.scaled_dot_product_attention` (fused kernels where available).

    The paper's text says that in cross-attention "V contains information about the input, while K and Q
    contain the contextual information"; that would give a context-length output, not an image. Here, as
    in the reference code, the image queries the context.

    Args:
        query_dim: width of ``x``.
        context_dim: width of ``context`` (``None``: self-attention, same as ``query_dim``).
        num_heads: heads; must divide ``query_dim``.
        dropout: attention-probability dropout while training.

    Shapes:
        ``x`` (B, N, query_dim), ``context`` (B, T, context_dim) -> (B, N, query_dim)
    """

    def __init__(self, query_dim: int, context_dim: Optional[int] = None, num_heads: int = 1,
                 dropout: float = 0.0) -> None:
        super().__init__()
        if query_dim % num_heads:
            raise ValueError(f"num_heads={num_heads} must divide query_dim={query_dim}")
        kv_dim = query_dim if context_dim is None else context_dim
        self.num_heads = num_heads
        self.dropout = dropout
        self.to_q = nn.Linear(query_dim, query_dim, bias=False)
        self.to_k = nn.Linear(kv_dim, query_dim, bias=False)
        self.to_v = nn.Linear(kv_dim, query_dim, bias=False)
        self.to_out = nn.Linear(query_dim, query_dim)

    def _heads(self, t: Tensor) -> Tensor:
        b, n, c = t.shape
        return t.reshape(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)

    def forward(self, x: Tensor, context: Optional[Tensor] = None) -> Tensor:
        src = x if context is None else context
        q, k, v = self._heads(self.to_q(x)), self._heads(self.to_k(src)), self._heads(self.to_v(src))
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        b, h, n, d = out.shape
        return self.to_out(out.transpose(1, 2).reshape(b, n, h * d))


class FeedForward(nn.Module):
    """Gated feed-forward layer of the attention blocks (Figure A.5; GEGLU as in the reference code).

    ``Linear(dim -> 2*mult*dim)`` split into value and gate, ``value * GELU(gate)``, dropout,
    ``Linear(mult*dim -> dim)``.

    Shapes:
        (B, N, dim) -> (B, N, dim)
    """

    def __init__(self, dim: int, mult: int = 4, dropout: float = 0.0) -> None:
        super().__init__()
        inner = dim * mult
        self.proj_in = nn.Linear(dim, 2 * inner)
        self.dropout = nn.Dropout(dropout)
        self.proj_out = nn.Linear(inner, dim)

    def forward(self, x: Tensor) -> Tensor:
        value, gate = self.proj_in(x).chunk(2, dim=-1)
        return self.proj_out(self.dropout(value * F.gelu(gate)))


class AttentionBlock(nn.Module):
    """Self- and/or cross-attention block for feature maps (Figures A.3 and A.4).

    ``GN -> 1x1 projection -> flatten to tokens -> + positional encoding ->
    [LN -> self-attention, residual] -> [LN -> cross-attention on the context tokens, residual] ->
    [LN -> feed-forward, residual] -> unflatten -> 1x1 projection -> + input``.

    Args:
        channels: feature channels ``C``.
        groups: GroupNorm groups.
        context_dim: width of the context tokens (needed when ``cross_attention``).
        num_heads: attention heads.
        self_attention: include the self-attention sub-layer.
        cross_attention: include the cross-attention sub-layer.
        ff_mult: feed-forward width multiplier.
        dropout: dropout in attention and feed-forward.
        positional_encoding: add :func:`sinusoidal_positional_encoding` to the tokens.

    Shapes:
        ``x`` (B, C, H, W), ``context`` (B, T, context_dim) -> (B, C, H, W)
    """

    def __init__(self, channels: int, groups: int, context_dim: Optional[int] = None, num_heads: int = 1,
                 self_attention: bool = True, cross_attention: bool = True, ff_mult: int = 4,
                 dropout: float = 0.0, positional_encoding: bool = True) -> None:
        super().__init__()
        if not (self_attention or cross_attention):
            raise ValueError("an AttentionBlock needs self_attention or cross_attention (or both)")
        if cross_attention and context_dim is None:
            raise ValueError("cross_attention needs context_dim (the width of the context tokens)")
        self.positional_encoding = positional_encoding
        self.norm = group_norm(channels, groups)
        self.proj_in = nn.Conv2d(channels, channels, 1)
        self.norm_self: Optional[nn.LayerNorm] = nn.LayerNorm(channels) if self_attention else None
        self.attn_self: Optional[MultiHeadAttention] = (
            MultiHeadAttention(channels, None, num_heads, dropout) if self_attention else None)
        self.norm_cross: Optional[nn.LayerNorm] = nn.LayerNorm(channels) if cross_attention else None
        self.attn_cross: Optional[MultiHeadAttention] = (
            MultiHeadAttention(channels, context_dim, num_heads, dropout) if cross_attention else None)
        self.norm_ff = nn.LayerNorm(channels)
        self.ff = FeedForward(channels, ff_mult, dropout)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    @property
    def uses_context(self) -> bool:
        """Whether :meth:`forward` reads the context."""
        return self.attn_cross is not None

    def forward(self, x: Tensor, context: Optional[Tensor] = None) -> Tensor:
        b, c, h, w = x.shape
        tokens = self.proj_in(self.norm(x)).flatten(2).transpose(1, 2)
        if self.positional_encoding:
            tokens = tokens + sinusoidal_positional_encoding(h * w, c, device=x.device, dtype=tokens.dtype)
        if self.attn_self is not None:
            tokens = tokens + self.attn_self(self.norm_self(tokens))  # type: ignore[misc]
        if self.attn_cross is not None:
            if context is None:
                raise ValueError("this attention block cross-attends to the context: pass context tokens "
                                 "(B, T, context_dim)")
            tokens = tokens + self.attn_cross(self.norm_cross(tokens), context)  # type: ignore[misc]
        tokens = tokens + self.ff(self.norm_ff(tokens))
        out = tokens.transpose(1, 2).reshape(b, c, h, w)
        return x + self.proj_out(out)


class ContextEncoder(nn.Module):
    """Turn the (B, 4) context into one token per conditioning variable.

    Columns, in order: age in years, sex (0 female, 1 male), diagnosis (1 cognitively impaired,
    0 unimpaired), slice location in [-1, 1] (§2.4). Age is standardised inside the model,
    ``(age - age_center) / age_scale``, so that every caller feeds the same natural units and a checkpoint
    carries its own scaling. Each kept variable has its own small MLP ``1 -> dim -> dim`` (Linear, SiLU,
    Linear), so variables are told apart by their weights and need no type embedding.

    With ``use_diagnosis=False`` the diagnosis column is never read (it may hold anything, NaN included):
    the output of a "nodiag" model is provably independent of it.

    With ``use_plane=True`` (multi-view models) the context has a fifth column, the slicing plane's code
    (0 axial, 1 coronal, 2 sagittal), which a learned embedding turns into one more token: the plane is a
    category, not a quantity, so it gets a table row rather than an MLP of its code.

    Args:
        dim: token width.
        use_diagnosis: keep the diagnosis token.
        age_center, age_scale: age standardisation.
        use_plane: read the plane column (B, 5) and add its token.

    Shapes:
        (B, 4) -> (B, T, dim) with T = 4, or 3 without the diagnosis; (B, 5) -> T + 1 tokens with ``use_plane``.
    """

    N_PLANES = 3

    def __init__(self, dim: int, use_diagnosis: bool = True, age_center: float = 70.0,
                 age_scale: float = 10.0, use_plane: bool = False) -> None:
        super().__init__()
        self.dim = dim
        self.age_center = float(age_center)
        self.age_scale = float(age_scale)
        self.use_plane = bool(use_plane)
        self.columns = tuple(i for i, name in enumerate(CONTEXT_COLUMNS)
                             if use_diagnosis or name != "diagnosis")
        self.embed = nn.ModuleList(
            nn.Sequential(nn.Linear(1, dim), nn.SiLU(), nn.Linear(dim, dim)) for _ in self.columns)
        # absent from models without it, whose state dicts therefore load unchanged
        self.plane_embed: Optional[nn.Embedding] = nn.Embedding(self.N_PLANES, dim) if self.use_plane else None

    @property
    def n_columns(self) -> int:
        """Width of the context this encoder reads: 4, or 5 with the plane."""
        return len(CONTEXT_COLUMNS) + int(self.use_plane)

    @property
    def n_tokens(self) -> int:
        """Number of context tokens ``T``."""
        return len(self.columns) + int(self.use_plane)

    def forward(self, context: Tensor) -> Tensor:
        if context.ndim != 2 or context.shape[1] != self.n_columns:
            cols = CONTEXT_COLUMNS + ((PLANE_COLUMN,) if self.use_plane else ())
            raise ValueError(f"context must have shape (B, {self.n_columns}) with columns "
                             f"{cols}, got {tuple(context.shape)}; build it with "
                             "synth7t.models.make_context" + (" (plane=...)" if self.use_plane else ""))
        tokens = []
        for module, col in zip(self.embed, self.columns):
            value = context[:, col : col + 1]
            if CONTEXT_COLUMNS[col] == "age":
                value = (value - self.age_center) / self.age_scale
            tokens.append(module(value))
        if self.plane_embed is not None:
            code = context[:, len(CONTEXT_COLUMNS)]
            idx = code.round().long()
            if not torch.equal(idx.to(code.dtype), code) or idx.min() < 0 or idx.max() >= self.N_PLANES:
                raise ValueError(f"the plane column must hold plane codes 0 (axial), 1 (coronal) or 2 (sagittal), "
                                 f"got {sorted(set(code.tolist()))}")
            tokens.append(self.plane_embed(idx))
        return torch.stack(tokens, dim=1)


class Downsample(nn.Module):
    """Strided 3x3 convolution halving H and W. Shapes: (B, C, H, W) -> (B, C, H/2, W/2)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest-neighbour x2 then 3x3 convolution (no checkerboard, unlike a transposed convolution).

    Shapes: (B, C, H, W) -> (B, C, 2H, 2W)
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


def check_divisible(shape: Sequence[int], n_down: int, what: str, example: str) -> None:
    """Raise a ValueError naming the size and the fix when a spatial size is not divisible by 2^n_down."""
    factor = 2 ** n_down
    bad = [s for s in shape if s % factor]
    if bad:
        fixed = "x".join(str(int(math.ceil(s / factor) * factor)) for s in shape)
        raise ValueError(
            f"{what} spatial size {'x'.join(map(str, shape))} is not divisible by 2^{n_down}={factor} "
            f"(the network downsamples {n_down} times); crop or pad it to multiples of {factor}, "
            f"e.g. {fixed} ({example})")
