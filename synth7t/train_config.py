"""Training configuration: one flat dataclass with documented defaults and named presets (nanoGPT style).

Presets follow Table A.2/A.3 of the paper; ``demo-cpu`` trains in minutes on 2 CPU cores. Unknown keys are
errors everywhere (presets, overrides, JSON), and every run writes its full resolved config next to its outputs.
Presets, the JSON round trip, ``replace`` and ``fingerprint`` come from :class:`synth7t.configbase.Config`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Dict, Mapping, Optional, Tuple, Union

from .configbase import Config

__all__ = ["TrainConfig", "TRAIN_PRESETS", "make_train_config", "train_config_from_dict", "load_train_config",
           "check_keys"]

#: Named presets: overrides of the :class:`TrainConfig` defaults.
TRAIN_PRESETS: Dict[str, Dict[str, Any]] = {
    # Table A.2: U-Net
    "paper-unet": dict(model="paper-unet", gan=False, epochs=4, batch_size=56, lr_decay=0.5, lambda_perc=0.05),
    # Table A.2/A.3: GAN U-Net
    "paper-gan": dict(model="paper-gan", gan=True, discriminator="paper-gan", epochs=22, batch_size=56,
                      lr_decay=0.9, lambda_perc=0.01, lambda_gan=0.1),
    "paper-unet-nodiag": dict(model="paper-unet-nodiag", gan=False, epochs=4, batch_size=56, lr_decay=0.5,
                              lambda_perc=0.05),
    "paper-gan-nodiag": dict(model="paper-gan-nodiag", gan=True, discriminator="paper-gan", epochs=22,
                             batch_size=56, lr_decay=0.9, lambda_perc=0.01, lambda_gan=0.1),
    # a few minutes on 2 CPU cores: small U-Net, random crops, fp32
    "demo-cpu": dict(model="demo-cpu", gan=False, epochs=3, batch_size=8, crop=[96, 96], augment=True,
                     lr_g=1e-3, lr_decay=0.7, lambda_perc=0.05, amp="off", val_slices=32, ckpt_every=100,
                     num_workers=0, device="cpu"),
    "demo-cpu-gan": dict(model="demo-cpu-gan", gan=True, discriminator="demo-cpu", epochs=3, batch_size=8,
                         crop=[96, 96], augment=True, lr_g=1e-3, lr_d=2e-4, lr_decay=0.9, lambda_perc=0.01,
                         lambda_gan=0.1, amp="off", val_slices=32, ckpt_every=100, num_workers=0, device="cpu"),
}


@dataclass
class TrainConfig(Config):
    """Everything a training run needs besides the data.

    Attributes:
        model: generator preset name (``synth7t.models``), e.g. ``paper-unet``.
        gan: train with the patch critic and WGAN-GP (the GAN U-Net).
        discriminator: critic preset name (used when ``gan``).
        epochs: passes over the training slices (Table A.2: 4 U-Net, 22 GAN U-Net).
        max_steps: stop after this many batches (0 = no limit): smoke runs and benchmarks.
        samples_per_epoch: slices drawn per epoch (0 = all training slices): short epochs on small machines.
        batch_size: slices per step, per process.
        crop: optional ``[h, w]`` random crop of the slices (small machines); ``None`` = whole 288 x 224 slices.
        augment: random left-right flips.
        lr_g, betas_g: generator Adam (Table A.2: 1e-4, (0.9, 0.999)).
        lr_d, betas_d: critic Adam (WGAN-GP practice: 2e-5, (0, 0.9)).
        lr_decay: learning-rate factor per epoch (x0.5 U-Net, x0.9 GAN U-Net).
        lambda_perc: perceptual weight (0.05 U-Net, 0.01 GAN U-Net).
        perceptual: perceptual backbone (``efficientnet_lite0`` offline default, ``radimagenet_resnet50``, ``lpips``).
        perceptual_weights: local weights file for ``radimagenet_resnet50``.
        lambda_gan: adversarial weight (Table A.3: 0.1); divided by ``gan_warmup_factor`` in the first epoch.
        gan_warmup_factor: divisor of ``lambda_gan`` during the first epoch (10 in the paper).
        n_critic: critic steps per generator step (5), ``n_critic_first_epoch`` (1) in the first epoch.
        lambda_gp: gradient-penalty weight (10).
        amp: ``"bf16"`` autocast on GPU, ``"off"`` for fp32; ignored on CPU.
        compile: ``torch.compile`` the generator (GPU).
        val_slices: validation slices scored each epoch (PSNR, SSIM on held-out subjects).
        ckpt_every: checkpoint every N generator steps (and at every epoch end).
        keep_checkpoints: step checkpoints kept besides the latest epoch's.
        num_workers: data-loader worker processes.
        seed: global seed (model init, data order, crops).
        device: ``auto`` (CUDA when available), ``cpu``, ``cuda``, ``cuda:1``.
    """

    PRESETS: ClassVar[Dict[str, Dict[str, Any]]] = TRAIN_PRESETS
    #: checkpointing and data loading do not change the trained weights (data order is a function of the seed)
    RUNTIME_FIELDS: ClassVar[Tuple[str, ...]] = ("ckpt_every", "keep_checkpoints", "num_workers")

    model: str = "paper-unet"
    gan: bool = False
    discriminator: str = "paper-gan"
    epochs: int = 4
    max_steps: int = 0
    samples_per_epoch: int = 0
    batch_size: int = 56
    crop: Optional[list] = None
    augment: bool = False
    lr_g: float = 1e-4
    betas_g: list = field(default_factory=lambda: [0.9, 0.999])
    lr_d: float = 2e-5
    betas_d: list = field(default_factory=lambda: [0.0, 0.9])
    lr_decay: float = 0.5
    lambda_perc: float = 0.05
    perceptual: str = "efficientnet_lite0"
    perceptual_weights: Optional[str] = None
    lambda_gan: float = 0.1
    gan_warmup_factor: float = 10.0
    n_critic: int = 5
    n_critic_first_epoch: int = 1
    lambda_gp: float = 10.0
    amp: str = "bf16"
    compile: bool = False
    val_slices: int = 64
    ckpt_every: int = 500
    keep_checkpoints: int = 2
    num_workers: int = 2
    seed: int = 0
    device: str = "auto"

    def __post_init__(self):
        for name in ("epochs", "batch_size", "n_critic", "n_critic_first_epoch", "ckpt_every"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        for name in ("max_steps", "samples_per_epoch"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("lr_g", "lr_d", "lr_decay"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.amp not in ("bf16", "off"):
            raise ValueError(f"amp must be 'bf16' or 'off', got {self.amp!r}")
        if self.crop is not None:
            if len(self.crop) != 2 or any(int(c) < 8 for c in self.crop):
                raise ValueError(f"crop must be [height, width] (each >= 8) or None, got {self.crop}")
            self.crop = [int(c) for c in self.crop]

    def save(self, path: Union[str, Path]) -> Path:
        """Write :meth:`to_dict` as JSON (``config.json`` of a run); :func:`load_train_config` reads it back."""
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(self.to_dict(), indent=2))
        return p


def check_keys(d: Mapping[str, Any], where: str = "config") -> None:
    """Raise ``ValueError`` for keys of ``d`` that are not :class:`TrainConfig` fields (named, with the known keys)."""
    TrainConfig.check_keys(d, where)


def make_train_config(preset: str = "paper-unet", **overrides: Any) -> TrainConfig:
    """A preset of :data:`TRAIN_PRESETS` with overrides applied, e.g. ``make_train_config(preset, **overrides)``.

    Raises:
        ValueError: unknown preset or key (the message lists the known ones), or an invalid value.
    """
    return TrainConfig.from_preset(preset, **overrides)


def train_config_from_dict(d: Mapping[str, Any]) -> TrainConfig:
    """Rebuild a config from its JSON form (``config.json`` of a run); unknown keys are ``ValueError``."""
    return TrainConfig.from_dict(d)


def load_train_config(path: Union[str, Path]) -> TrainConfig:
    """Read a config written by :meth:`TrainConfig.save`."""
    return train_config_from_dict(json.loads(Path(path).read_text()))
