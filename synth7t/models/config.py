"""Model-architecture configurations and their named presets.

Every network of the package is described by one frozen dataclass: :class:`UNetConfig` (the paper's
conditional U-Net, used both alone and as the GAN generator), :class:`DiscriminatorConfig` (the WGAN-GP
patch critic), :class:`VNetConfig` and :class:`WATNetConfig` (the two baselines of §2.6). A checkpoint
stores its model arguments as JSON through :meth:`to_dict` / :func:`config_from_dict`; unknown keys are
errors so that a typo in a saved or hand-written config never silently falls back to a default. The round trip,
``replace``, ``from_preset`` and ``fingerprint`` come from :class:`synth7t.configbase.Config`.

Presets (see :data:`MODEL_PRESETS` and :data:`DISCRIMINATOR_PRESETS`):

======================= ==================================================================================
``paper-unet``          Table A.2 "U-net": c=256, multipliers (1,2,2,2), 64 groups, 3 residual blocks,
                        cross-attention at stages (3,4), 3 input slices, conditioned on age, sex,
                        diagnosis and slice location.
``paper-gan``           Table A.2 "GAN U-Net" generator: as ``paper-unet`` with cross-attention at stage 4.
``*-nodiag``            The same networks without the diagnosis token (§2.4).
``demo-cpu``            A small U-Net (c=16, (1,2,2), 4 groups, 1 residual block, cross-attention at the
                        last stage; 0.34 M parameters, about 0.56 GFLOP per 64x64 slice) that trains in
                        minutes on 2 CPU cores on 64x64..128x128 crops.
``demo-cpu-gan``        The generator of the CPU demo GAN (same architecture as ``demo-cpu``; a separate
                        name so that a GAN run pairs it with the ``demo-cpu-gan`` critic).
``vnet``                V-Net (Milletari et al. 2016) as used by Cui et al. 2024, 64^3 patches.
``watnet-2d``           WATNet (Qu et al. 2020) on 3 neighbouring slices; ``watnet-3d`` on 64^3 patches.
``*-demo``              CPU-sized variants of the three baselines.
``released-*``          The architectures of the authors' released checkpoints (their code's layout,
                        :mod:`synth7t.models.gicquel`): ``released-unet-nodiag`` and ``released-gan-nodiag``.
======================= ==================================================================================

Stage numbering follows the paper (Figure A.6, Table A.2): stages are 1-based, stage 1 works at full
resolution and stage ``i`` at ``1/2^(i-1)``; a U-Net with ``k`` channel multipliers downsamples ``k-1``
times, so ``paper-unet`` needs crops divisible by 2^3 = 8 (288x224 is; the paper's remark that 288 and 224
allow five downsamplings is true but not what the (1,2,2,2) network uses).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Dict, Mapping, Tuple, Type, Union

from ..configbase import Config

__all__ = [
    "ModelConfig",
    "UNetConfig",
    "DiscriminatorConfig",
    "VNetConfig",
    "WATNetConfig",
    "GicquelUNetConfig",
    "GICQUEL_TOKENS",
    "MODEL_PRESETS",
    "DISCRIMINATOR_PRESETS",
    "get_model_config",
    "get_discriminator_config",
    "config_from_dict",
    "list_presets",
    "PLANES",
    "check_planes",
]

#: Slicing planes of a 2.5D model, in the order of their code in the context's plane column (0, 1, 2).
PLANES: Tuple[str, ...] = ("axial", "coronal", "sagittal")
_PLANE_ALIASES = {"a": "axial", "ax": "axial", "c": "coronal", "cor": "coronal", "s": "sagittal", "sag": "sagittal"}


def check_planes(planes: Any, what: str = "planes") -> Tuple[str, ...]:
    """Validate slicing-plane names and return them as a tuple, in the order given.

    Accepts ``"axial"``, ``"coronal"``, ``"sagittal"`` (any case) and the short forms ``a``/``c``/``s``
    (``ax``/``cor``/``sag``), as a list or one comma-separated string (``"axial,coronal,sagittal"``).

    Raises:
        ValueError: an unknown or repeated plane, or no plane at all (the message lists the known names).
    """
    if isinstance(planes, str):
        planes = [p for p in planes.split(",") if p.strip()]
    if not isinstance(planes, (list, tuple)) or not planes:
        raise ValueError(f"{what} must be a non-empty list of {', '.join(PLANES)}, got {planes!r}")
    out = []
    for p in planes:
        name = str(p).strip().lower()
        name = _PLANE_ALIASES.get(name, name)
        if name not in PLANES:
            raise ValueError(f"unknown plane {p!r} in {what}; known planes: {', '.join(PLANES)} "
                             f"(or a, c, s)")
        if name in out:
            raise ValueError(f"plane {name!r} is listed twice in {what}")
        out.append(name)
    return tuple(out)


class ModelConfig(Config):
    """Base of the model configs: :class:`~synth7t.configbase.Config` plus the network family ``kind``.

    :meth:`to_dict` adds ``kind``, which :func:`config_from_dict` uses to pick the class back; each class's
    :attr:`PRESETS` holds the presets of :data:`MODEL_PRESETS` (or :data:`DISCRIMINATOR_PRESETS`) of its kind.
    """

    kind: ClassVar[str] = ""

    def to_dict(self) -> Dict[str, Any]:
        """Return a JSON-serialisable dict (tuples become lists) that includes ``kind``."""
        return {"kind": self.kind, **super().to_dict()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ModelConfig":
        """Build the config from a dict such as :meth:`to_dict` returns (lists become the tuple fields again).

        Raises:
            ValueError: on a key that is not a field of the class, or on a ``kind`` of another family.
        """
        if not isinstance(data, Mapping):
            raise ValueError(f"{cls.__name__}.from_dict needs a mapping, got {type(data).__name__}")
        payload = dict(data)
        kind = payload.pop("kind", cls.kind)
        if kind != cls.kind:
            raise ValueError(f"config kind {kind!r} cannot be read as {cls.__name__} (kind {cls.kind!r}); "
                             "use synth7t.models.config.config_from_dict to dispatch on kind")
        return super().from_dict(payload)


def _check_positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _check_residual(value: Any, channels: int, what: str) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"global_residual must be True or False, got {value!r}")
    if value and channels != 1:
        raise ValueError(f"global_residual adds the one-channel input (centre slice) to the output: it needs "
                         f"{what}=1, got {channels}")


def _check_dropout(value: Any) -> None:
    if not isinstance(value, (int, float)) or not 0.0 <= float(value) < 1.0:
        raise ValueError(f"dropout must be a number in [0, 1), got {value!r}")


@dataclass(frozen=True)
class UNetConfig(ModelConfig):
    """The conditional 2D U-Net of §2.4 / Appendix A.2 (Figure A.6, Table A.2).

    Attributes:
        n_input_slices: neighbouring axial slices stacked as input channels (odd: the centre slice is the
            one predicted, with as many neighbours above as below).
        out_channels: output channels (1: the synthetic 7T slice).
        channels: ``c`` of Table A.2, channels of stage 1.
        channel_mult: per-stage channel multipliers ``(1, k_1, ..., k_n)``; stage ``i`` has
            ``channels * channel_mult[i-1]`` channels and there are ``len(channel_mult) - 1`` downsamplings.
        num_groups: groups of every GroupNorm; must divide every stage's channel count.
        num_res_blocks: residual blocks per encoder stage (the decoder has one more per stage, to consume
            the downsampling skip, as in the reference code); the bottleneck always has 2.
        ca_stages: 1-based stages whose residual blocks are each followed by a cross-attention block.
        ca_self_attention: also run self-attention in those blocks (the reference code's spatial
            transformer does; it is what the paper's parameter and FLOP budget includes).
        bottleneck_attention: put a self- + cross-attention block between the two bottleneck residual blocks.
        num_heads: attention heads (1 in the reference code).
        ff_mult: width multiplier of the attention blocks' gated feed-forward layer.
        dropout: dropout inside residual blocks and attention (0: Table A.2, harmful for super-resolution).
        use_adadm: AdaDM rescaling in every residual block (§2.4).
        use_positional_encoding: add the sinusoidal encoding of Appendix A.2 to the attention tokens.
        use_diagnosis: condition on the diagnosis; ``False`` is the paper's "nodiag" model, whose output
            provably ignores the diagnosis column of the context.
        context_dim: width of the context tokens.
        age_center, age_scale: the model feeds ``(age - age_center) / age_scale`` to its age embedding;
            the context tensor carries age in years (see :func:`synth7t.models.make_context`).
        plane_condition: condition on the slicing plane as well (multi-view 2.5D, beyond the paper): the
            context has a fifth column, the plane's code in :data:`PLANES` (0 axial, 1 coronal, 2 sagittal),
            embedded as one more token. A config saved without this key (every model before multi-view) reads
            back as ``False``: four context columns, axial slices.
        global_residual: add the centre input slice to the output, so that the network predicts the 7T minus
            the 3T and an untrained network (its output convolution starts at zero) is the identity. Not in the
            paper (whose U-Net has no such shortcut); what the field uses for short trainings (VDSR, EDSR), on in
            the CPU demo's training presets (``TrainConfig.global_residual``). A config saved without this key
            reads back as ``False``.
    """

    kind: ClassVar[str] = "unet"

    n_input_slices: int = 3
    out_channels: int = 1
    channels: int = 256
    channel_mult: Tuple[int, ...] = (1, 2, 2, 2)
    num_groups: int = 64
    num_res_blocks: int = 3
    ca_stages: Tuple[int, ...] = (3, 4)
    ca_self_attention: bool = True
    bottleneck_attention: bool = True
    num_heads: int = 1
    ff_mult: int = 4
    dropout: float = 0.0
    use_adadm: bool = True
    use_positional_encoding: bool = True
    use_diagnosis: bool = True
    context_dim: int = 64
    age_center: float = 70.0
    age_scale: float = 10.0
    plane_condition: bool = False
    global_residual: bool = False

    #: residual blocks of the bottleneck (fixed by the paper: "the bottleneck always has 2").
    bottleneck_res_blocks: ClassVar[int] = 2

    def __post_init__(self) -> None:
        _check_positive_int("n_input_slices", self.n_input_slices)
        if self.n_input_slices % 2 == 0:
            raise ValueError(
                f"n_input_slices must be odd (the centre slice plus as many neighbours above as below), "
                f"got {self.n_input_slices}; use {self.n_input_slices - 1} or {self.n_input_slices + 1}")
        _check_positive_int("out_channels", self.out_channels)
        _check_positive_int("channels", self.channels)
        if not isinstance(self.channel_mult, tuple) or not self.channel_mult:
            raise ValueError(f"channel_mult must be a non-empty tuple of positive integers, got {self.channel_mult!r}")
        for m in self.channel_mult:
            _check_positive_int("every channel_mult entry", m)
        _check_positive_int("num_groups", self.num_groups)
        for ch in self.stage_channels:
            if ch % self.num_groups:
                raise ValueError(f"num_groups={self.num_groups} must divide every stage's channel count "
                                 f"{self.stage_channels}; pick a divisor of {self.channels}")
        _check_positive_int("num_res_blocks", self.num_res_blocks)
        if not isinstance(self.ca_stages, tuple):
            raise ValueError(f"ca_stages must be a tuple of stage numbers, got {self.ca_stages!r}")
        for s in self.ca_stages:
            if isinstance(s, bool) or not isinstance(s, int) or not 1 <= s <= self.n_stages:
                raise ValueError(f"ca_stages entries must be stage numbers 1..{self.n_stages} "
                                 f"(1-based, as in Table A.2), got {self.ca_stages!r}")
        _check_positive_int("num_heads", self.num_heads)
        for ch in self.stage_channels:
            if ch % self.num_heads:
                raise ValueError(f"num_heads={self.num_heads} must divide every stage's channel count "
                                 f"{self.stage_channels}")
        _check_positive_int("ff_mult", self.ff_mult)
        _check_dropout(self.dropout)
        _check_positive_int("context_dim", self.context_dim)
        if not self.age_scale > 0:
            raise ValueError(f"age_scale must be > 0, got {self.age_scale!r}")
        if not isinstance(self.plane_condition, bool):
            raise ValueError(f"plane_condition must be True or False, got {self.plane_condition!r}")
        _check_residual(self.global_residual, self.out_channels, "out_channels")

    @property
    def n_stages(self) -> int:
        """Number of stages (``len(channel_mult)``)."""
        return len(self.channel_mult)

    @property
    def n_downsamplings(self) -> int:
        """Number of factor-2 downsamplings: crops must be divisible by ``2**n_downsamplings``."""
        return len(self.channel_mult) - 1

    @property
    def stage_channels(self) -> Tuple[int, ...]:
        """Channels of each stage, ``channels * channel_mult[i]``."""
        return tuple(self.channels * m for m in self.channel_mult)

    @property
    def uses_context(self) -> bool:
        """Whether any block reads the context (cross-attention somewhere)."""
        return bool(self.ca_stages) or self.bottleneck_attention


_DISC_NORMS = ("layer", "instance", "none")


@dataclass(frozen=True)
class DiscriminatorConfig(ModelConfig):
    """The WGAN-GP patch critic of the GAN U-Net (Figure A.7, Table A.3), built on MONAI's PatchDiscriminator.

    Attributes:
        in_channels: channels of the judged image (1: a 7T slice, real or synthetic).
        channels: ``c1`` of Figure A.7, channels of the first convolution (doubled at every layer, as in
            MONAI's PatchDiscriminator).
        num_layers: ``n_layers`` of Table A.3: (conv + norm + LeakyReLU) blocks, which is also the number of
            factor-2 downsamplings, so the patch map is ``(H / 2^n, W / 2^n)``.
        kernel_size: convolution kernel. 3 (with padding 1) makes the map exactly ``H/2^n x W/2^n`` as the
            paper states; MONAI's default 4 gives ``H/2^n - 2``.
        norm: ``"layer"`` (GroupNorm with one group: a per-sample layer norm over C,H,W, Figure A.7's "LN"),
            ``"instance"`` or ``"none"``. Batch norm is refused: it couples the samples of a batch, which
            breaks the per-sample gradient penalty of WGAN-GP (Gulrajani et al. 2017, §4).
        negative_slope: LeakyReLU slope (0.2, Figure A.7).
        dropout: dropout after each block.
    """

    kind: ClassVar[str] = "patch_discriminator"

    in_channels: int = 1
    channels: int = 256
    num_layers: int = 5
    kernel_size: int = 3
    norm: str = "layer"
    negative_slope: float = 0.2
    dropout: float = 0.0

    def __post_init__(self) -> None:
        _check_positive_int("in_channels", self.in_channels)
        _check_positive_int("channels", self.channels)
        _check_positive_int("num_layers", self.num_layers)
        _check_positive_int("kernel_size", self.kernel_size)
        if self.kernel_size not in (3, 4):
            raise ValueError(f"kernel_size must be 3 (exact H/2^n map) or 4 (MONAI default), got {self.kernel_size}")
        if self.norm == "batch":
            raise ValueError("norm='batch' is refused for a WGAN-GP critic: batch statistics couple the samples "
                             "and invalidate the per-sample gradient penalty; use 'layer' or 'instance'")
        if self.norm not in _DISC_NORMS:
            raise ValueError(f"norm must be one of {_DISC_NORMS}, got {self.norm!r}")
        if not 0.0 <= float(self.negative_slope) < 1.0:
            raise ValueError(f"negative_slope must be in [0, 1), got {self.negative_slope!r}")
        _check_dropout(self.dropout)

    @property
    def n_downsamplings(self) -> int:
        """Factor-2 downsamplings between the input and the patch map (``num_layers``)."""
        return self.num_layers


_VNET_NORMS = ("batch", "instance", "none")


@dataclass(frozen=True)
class VNetConfig(ModelConfig):
    """3D V-Net (Milletari et al. 2016) for patch-wise 3T->7T regression, as used by Cui et al. 2024.

    Attributes:
        in_channels, out_channels: image channels in and out (1 and 1).
        base_channels: channels of the input stage; every down transition doubles them.
        input_convs: convolutions of the input stage.
        down_convs: convolutions of each down stage (Milletari: 2, 3, 3, 3).
        up_convs: convolutions of each up stage, deepest first (Milletari: 3, 3, 2, 1); same length.
        kernel_size: convolution kernel (Milletari 5, Cui et al. 3).
        norm: ``"batch"`` (Cui et al.), ``"instance"`` or ``"none"`` (Milletari).
        dropout: channel dropout in the two deepest down stages and the up stages (Milletari used 0.5 in
            some; 0 by default).
        patch_size: edge of the cubic training patches (64 in Cui et al.; smaller for the CPU demo), the
            trainer's default; validated against the downsampling factor.
        global_residual: add the input patch to the output (the network predicts the 7T minus the 3T and starts
            at the identity; see :class:`UNetConfig`). Not in Cui et al.'s V-Net; on in the CPU demo.
    """

    kind: ClassVar[str] = "vnet"

    in_channels: int = 1
    out_channels: int = 1
    base_channels: int = 16
    input_convs: int = 1
    down_convs: Tuple[int, ...] = (2, 3, 3, 3)
    up_convs: Tuple[int, ...] = (3, 3, 2, 1)
    kernel_size: int = 3
    norm: str = "batch"
    dropout: float = 0.0
    patch_size: int = 64
    global_residual: bool = False

    def __post_init__(self) -> None:
        _check_positive_int("in_channels", self.in_channels)
        _check_positive_int("out_channels", self.out_channels)
        if self.global_residual and self.in_channels != 1:
            raise ValueError(f"global_residual needs in_channels=1 (the 3T patch added to the output), "
                             f"got {self.in_channels}")
        _check_residual(self.global_residual, self.out_channels, "out_channels")
        _check_positive_int("base_channels", self.base_channels)
        _check_positive_int("input_convs", self.input_convs)
        for name in ("down_convs", "up_convs"):
            value = getattr(self, name)
            if not isinstance(value, tuple) or not value:
                raise ValueError(f"{name} must be a non-empty tuple of positive integers, got {value!r}")
            for v in value:
                _check_positive_int(f"every {name} entry", v)
        if len(self.up_convs) != len(self.down_convs):
            raise ValueError(f"up_convs {self.up_convs} and down_convs {self.down_convs} must have the same length")
        if self.kernel_size % 2 == 0 or self.kernel_size < 1:
            raise ValueError(f"kernel_size must be a positive odd integer, got {self.kernel_size}")
        if self.norm not in _VNET_NORMS:
            raise ValueError(f"norm must be one of {_VNET_NORMS}, got {self.norm!r}")
        _check_dropout(self.dropout)
        _check_positive_int("patch_size", self.patch_size)
        if self.patch_size % (2 ** self.n_downsamplings):
            raise ValueError(f"patch_size {self.patch_size} must be divisible by 2^{self.n_downsamplings}")

    @property
    def n_downsamplings(self) -> int:
        """Factor-2 downsamplings: patch edges must be divisible by ``2**n_downsamplings``."""
        return len(self.down_convs)


@dataclass(frozen=True)
class WATNetConfig(ModelConfig):
    """WATNet (Qu et al. 2020): a CNN whose features are modulated by wavelet-domain affine transforms.

    Attributes:
        spatial_dims: 2 (slices: input ``(B, n_input_slices, H, W)``) or 3 (patches: ``(B, 1, D, H, W)``).
        n_input_slices: neighbouring slices in the 2D variant (odd); must be 1 in 3D.
        features: feature channels of every block.
        levels: Haar decomposition levels, one downsampling block + wavelet affine transform each.
        n_interim: blocks at the coarsest scale between the encoder and the reconstruction.
        wavelet_hidden: hidden channels of the convolutions that map wavelet bands to scale and shift maps.
        final_kernel: kernel of the last convolution (17 in the implementation the paper compared against).
        patch_size: edge of the training patches (64: 64^3 in 3D, 64x64 in 2D as in Cui et al.), the
            trainer's default; validated against the downsampling factor.
    """

    kind: ClassVar[str] = "watnet"

    spatial_dims: int = 2
    n_input_slices: int = 3
    features: int = 64
    levels: int = 3
    n_interim: int = 2
    wavelet_hidden: int = 32
    final_kernel: int = 17
    patch_size: int = 64

    def __post_init__(self) -> None:
        if self.spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {self.spatial_dims!r}")
        _check_positive_int("n_input_slices", self.n_input_slices)
        if self.n_input_slices % 2 == 0:
            raise ValueError(f"n_input_slices must be odd, got {self.n_input_slices}; use "
                             f"{self.n_input_slices - 1} or {self.n_input_slices + 1}")
        if self.spatial_dims == 3 and self.n_input_slices != 1:
            raise ValueError("the 3D WATNet reads single-channel patches (B, 1, D, H, W): set n_input_slices=1")
        _check_positive_int("features", self.features)
        if self.features % 4:
            raise ValueError(f"features must be divisible by 4 (the distillation split keeps a quarter), "
                             f"got {self.features}")
        _check_positive_int("levels", self.levels)
        if self.n_interim < 0 or isinstance(self.n_interim, bool) or not isinstance(self.n_interim, int):
            raise ValueError(f"n_interim must be a non-negative integer, got {self.n_interim!r}")
        _check_positive_int("wavelet_hidden", self.wavelet_hidden)
        if self.final_kernel % 2 == 0 or self.final_kernel < 1:
            raise ValueError(f"final_kernel must be a positive odd integer, got {self.final_kernel}")
        _check_positive_int("patch_size", self.patch_size)
        if self.patch_size % (2 ** self.levels):
            raise ValueError(f"patch_size {self.patch_size} must be divisible by 2^{self.levels}")

    @property
    def n_downsamplings(self) -> int:
        """Factor-2 downsamplings: sizes must be divisible by ``2**n_downsamplings``."""
        return self.levels


#: Context tokens the authors' released networks can take (see :mod:`synth7t.models.gicquel`).
GICQUEL_TOKENS: Tuple[str, ...] = ("age", "sex", "diagnosis", "position")


@dataclass(frozen=True)
class GicquelUNetConfig(ModelConfig):
    """The architecture of the authors' released checkpoints (:mod:`synth7t.models.gicquel`), in their terms (the name
    in their ``params*.txt`` in brackets).

    Attributes:
        in_channels: neighbouring slices stacked as input channels (``n_in_slices``).
        out_channels: output channels (1).
        channels: channels at full resolution (``n_channels``).
        channel_mult: per-level channel multipliers (``channel_mult``); ``len - 1`` downsamplings.
        num_res_blocks: residual blocks per encoder level (``n_res_block``); the decoder has one more.
        attention_resolutions: downsampling factors (1, 2, 4, ...) whose blocks get a spatial transformer
            (``attention_res``).
        num_groups: groups of every GroupNorm (``num_groups``).
        use_mid_attention: a spatial transformer between the two bottleneck blocks (``use_mid_attention``).
        use_ada: AdaDM rescaling of the residual branches (``use_ada``).
        use_initial_down: a stride-2 convolution first and an upsampling last (``use_initial_down``).
        context_dim: width of a context token (``c_dim``, 1: each condition is one number).
        tokens: the context tokens fed to the cross-attention, from :data:`GICQUEL_TOKENS` (their ``conditions``,
            with ``Diagnostic`` as ``diagnosis``).
    """

    kind: ClassVar[str] = "gicquel-unet"

    in_channels: int = 3
    out_channels: int = 1
    channels: int = 256
    channel_mult: Tuple[int, ...] = (1, 2, 2, 2)
    num_res_blocks: int = 3
    attention_resolutions: Tuple[int, ...] = (4, 8)
    num_groups: int = 64
    use_mid_attention: bool = True
    use_ada: bool = True
    use_initial_down: bool = False
    context_dim: int = 1
    tokens: Tuple[str, ...] = ("age", "sex", "position")

    def __post_init__(self) -> None:
        for name in ("in_channels", "out_channels", "channels", "num_res_blocks", "num_groups", "context_dim"):
            _check_positive_int(name, getattr(self, name))
        if not isinstance(self.channel_mult, tuple) or not self.channel_mult:
            raise ValueError(f"channel_mult must be a non-empty tuple of positive integers, got {self.channel_mult!r}")
        for m in self.channel_mult:
            _check_positive_int("every channel_mult entry", m)
        for ch in {self.channels * m for m in self.channel_mult}:
            if ch % self.num_groups:
                raise ValueError(f"num_groups={self.num_groups} must divide every level's channel count "
                                 f"{sorted({self.channels * m for m in self.channel_mult})}")
        if not isinstance(self.attention_resolutions, tuple):
            raise ValueError(f"attention_resolutions must be a tuple, got {self.attention_resolutions!r}")
        factors = [2 ** i for i in range(len(self.channel_mult))]
        for r in self.attention_resolutions:
            if r not in factors:
                raise ValueError(f"attention_resolutions entries are downsampling factors of this network "
                                 f"({factors}), got {self.attention_resolutions!r}")
        for name in ("use_mid_attention", "use_ada", "use_initial_down"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if not isinstance(self.tokens, tuple) or not self.tokens or len(set(self.tokens)) != len(self.tokens) \
                or not set(self.tokens) <= set(GICQUEL_TOKENS):
            raise ValueError(f"tokens must be distinct names from {GICQUEL_TOKENS}, got {self.tokens!r}")

    @property
    def n_input_slices(self) -> int:
        """Neighbouring slices per input (``in_channels``), as :class:`UNetConfig` names it."""
        return self.in_channels

    @property
    def n_downsamplings(self) -> int:
        """Factor-2 downsamplings: slices are padded to a multiple of ``2**n_downsamplings``."""
        return len(self.channel_mult) - 1 + int(self.use_initial_down)

    @property
    def use_diagnosis(self) -> bool:
        """Whether the diagnosis is one of the tokens."""
        return "diagnosis" in self.tokens


_CONFIG_CLASSES: Dict[str, Type[ModelConfig]] = {
    cls.kind: cls for cls in (UNetConfig, DiscriminatorConfig, VNetConfig, WATNetConfig, GicquelUNetConfig)
}

AnyModelConfig = Union[UNetConfig, DiscriminatorConfig, VNetConfig, WATNetConfig, GicquelUNetConfig]


def config_from_dict(data: Mapping[str, Any]) -> AnyModelConfig:
    """Rebuild any model config from :meth:`ModelConfig.to_dict` output (dispatching on ``kind``).

    Raises:
        ValueError: if ``kind`` is missing or unknown, or a key is unknown.
    """
    if not isinstance(data, Mapping) or "kind" not in data:
        raise ValueError(f"a model config dict needs a 'kind' key, one of {sorted(_CONFIG_CLASSES)}")
    kind = data["kind"]
    if kind not in _CONFIG_CLASSES:
        raise ValueError(f"unknown model config kind {kind!r}; expected one of {sorted(_CONFIG_CLASSES)}")
    return _CONFIG_CLASSES[kind].from_dict(data)  # type: ignore[return-value]


_PAPER_UNET = UNetConfig()
_DEMO_UNET = UNetConfig(channels=16, channel_mult=(1, 2, 2), num_groups=4, num_res_blocks=1, ca_stages=(3,),
                        context_dim=32)

#: Generator presets (everything :func:`synth7t.models.build_model` builds from a name).
MODEL_PRESETS: Dict[str, AnyModelConfig] = {
    "paper-unet": _PAPER_UNET,
    "paper-unet-nodiag": _PAPER_UNET.replace(use_diagnosis=False),  # type: ignore[dict-item]
    "paper-gan": _PAPER_UNET.replace(ca_stages=(4,)),  # type: ignore[dict-item]
    "paper-gan-nodiag": _PAPER_UNET.replace(ca_stages=(4,), use_diagnosis=False),  # type: ignore[dict-item]
    "demo-cpu": _DEMO_UNET,
    "demo-cpu-nodiag": _DEMO_UNET.replace(use_diagnosis=False),  # type: ignore[dict-item]
    "demo-cpu-gan": _DEMO_UNET,
    "vnet": VNetConfig(),
    "vnet-demo": VNetConfig(base_channels=8, input_convs=1, down_convs=(1, 2, 2), up_convs=(2, 2, 1), patch_size=32),
    "watnet-2d": WATNetConfig(spatial_dims=2, n_input_slices=3),
    # 32 features: with 16 (a quarter, 4, split off in each distillation block) it cannot even fit one batch of
    # demo patches in 150 Adam steps (L1 0.0321 -> 0.0304; the identity is 0.0314), with 32 it does (-> 0.0277)
    "watnet-2d-demo": WATNetConfig(spatial_dims=2, n_input_slices=3, features=32, levels=2, n_interim=0,
                                   wavelet_hidden=16, final_kernel=3, patch_size=32),
    "watnet-3d": WATNetConfig(spatial_dims=3, n_input_slices=1),
    "watnet-3d-demo": WATNetConfig(spatial_dims=3, n_input_slices=1, features=8, levels=2, n_interim=1,
                                   wavelet_hidden=8, final_kernel=3, patch_size=16),
    # the architectures of the authors' released checkpoints (params_no_diag.txt, paramsGanNoDiag.txt): to import
    # their weights (synth7t import-model) and to cost them (synth7t model-facts)
    "released-unet-nodiag": GicquelUNetConfig(),
    "released-gan-nodiag": GicquelUNetConfig(attention_resolutions=(8,)),
}

_PAPER_CRITIC = DiscriminatorConfig()
_DEMO_CRITIC = DiscriminatorConfig(channels=16, num_layers=3)

#: Critic presets, named after the GAN presets they pair with.
DISCRIMINATOR_PRESETS: Dict[str, DiscriminatorConfig] = {
    "paper-gan": _PAPER_CRITIC,
    "paper-gan-nodiag": _PAPER_CRITIC,
    "demo-cpu": _DEMO_CRITIC,
    "demo-cpu-gan": _DEMO_CRITIC,
}


for _cls in (UNetConfig, VNetConfig, WATNetConfig, GicquelUNetConfig):
    _cls.PRESETS = {name: cfg for name, cfg in MODEL_PRESETS.items() if type(cfg) is _cls}
del _cls
DiscriminatorConfig.PRESETS = DISCRIMINATOR_PRESETS


def list_presets() -> Tuple[str, ...]:
    """Names of all generator presets, in registry order."""
    return tuple(MODEL_PRESETS)


def get_model_config(name: str) -> AnyModelConfig:
    """Return the generator config of a preset.

    Args:
        name: a key of :data:`MODEL_PRESETS`, e.g. ``"paper-unet"`` or ``"demo-cpu"``.

    Raises:
        ValueError: for an unknown name (the message lists the valid ones).
    """
    if name not in MODEL_PRESETS:
        raise ValueError(f"unknown model preset {name!r}; choose one of {', '.join(MODEL_PRESETS)}")
    return MODEL_PRESETS[name]


def get_discriminator_config(name: str) -> DiscriminatorConfig:
    """Return the critic config of a GAN preset (``"paper-gan"``, ``"demo-cpu"``, ...).

    Raises:
        ValueError: for an unknown name (the message lists the valid ones).
    """
    if name not in DISCRIMINATOR_PRESETS:
        raise ValueError(f"unknown discriminator preset {name!r}; choose one of "
                         f"{', '.join(DISCRIMINATOR_PRESETS)}")
    return DISCRIMINATOR_PRESETS[name]
