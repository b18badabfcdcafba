"""Training: the U-Net and the GAN U-Net on 2.5D slices, and the V-Net and WATNet baselines on patches, on a CPU,
one GPU, or several through ``torchrun``.

Schedule (§2.5, Appendix A.3): Adam for the generator (lr 1e-4, betas (0.9, 0.999)) and the critic
(2e-5, (0, 0.9)); the learning rates decay by ``lr_decay`` every epoch (``lr_schedule="cosine"`` and
``warmup_steps`` are options for short runs, set per batch from the run's position). For the GAN U-Net every batch
trains the critic (BCE or Wasserstein, with the gradient penalty), and every ``n_critic``-th batch also trains the
generator (``n_critic_first_epoch`` in the first epoch, when ``lambda_gan`` is also divided by
``gan_warmup_factor``).

Baselines (§2.6; ``paper-vnet``, ``paper-watnet``): the V-Net and WATNet train on patches of their model config's
``patch_size`` drawn inside the brain of the training subjects (:class:`synth7t.training.patches.PatchDataset`: cubes for
3D networks, three neighbouring slices for WATNet-2D) with the L1 loss of the brain-masked output, as Cui et al.'s
code, and Adam with ``weight_decay``. Validation predicts whole slices with MONAI's sliding window
(:func:`synth7t.training.patches.sliding_window_predict`), as prediction does (see :meth:`Trainer.validate`). A V-Net's
batch normalisation becomes ``SyncBatchNorm`` under ``torchrun`` on GPUs, so that its statistics are those of the
global batch, as in one process (PyTorch has no synchronised batch norm on CPUs: there, and within
``grad_accumulation`` micro-batches, the statistics are those of each share).

Checkpoints are folders written under a temporary name and renamed into place (a crash never leaves a
half-written checkpoint), holding ``generator.safetensors`` (and ``critic.safetensors``), ``state.pt``
(optimisers and RNG; read back with ``torch.load(weights_only=True)``) and ``meta.json`` (position
in the run and the full config). ``resume`` continues from the newest one exactly where the run stopped: the
data order and the crops are functions of (seed, epoch, sample), so skipping the batches already done
replays the same stream.

Multi-GPU: launch the same script with ``torchrun --nproc_per_node=8 ...``. ``batch_size`` is the global
batch, as in the paper (56 slices over 8 GPUs): batch ``b`` of an epoch is ``order[b*batch_size:(b+1)*batch_size]``
of the epoch's permutation and rank ``r`` of ``N`` takes its contiguous share ``batch_size / N`` of it, so the
steps per epoch and the schedule do not depend on the number of processes. A rank that cannot hold its share
processes it in ``grad_accumulation`` micro-batches (DistributedDataParallel's ``no_sync`` for all but the last)
and steps the optimisers once, each micro-batch's loss divided by ``grad_accumulation``, so the gradient is the
mean over the global batch whatever the split (the losses are means over equal-sized shares). Everything random
per sample is a function of the sample or of the global row: crops and flips of (seed, epoch, sample), the
gradient penalty's interpolation weights of (seed, step, row of the global batch) (on CPU and GPU; see
:meth:`Trainer.penalty_weights`), so ``N`` processes reproduce one process with the same global batch
up to float rounding. Rank 0 alone writes logs (losses averaged over the ranks) and checkpoints.

Multi-view (beyond the paper): ``planes`` lists the slicing planes of the samples (:class:`synth7t.training.slices.SliceDataset`;
coronal and sagittal samples carry a loss mask over the 7T's artefact slices); with several, the U-Net is conditioned
on the plane by default (``plane_condition``), and ``model.json`` lists them for :mod:`synth7t.inference.views`.

GPU-only paths run on a CPU as well: ``amp="bf16"`` autocasts to bfloat16 on either device, ``compile`` wraps
the generator in ``torch.compile`` (on a CPU it needs a C++ compiler), ``channels_last`` stores the networks and
their inputs channels-last.

Reproducibility: :func:`seed_everything` seeds Python, NumPy and torch and (``deterministic``, the default) makes
torch use deterministic kernels; batches are read in the training process (no loader workers whose seeding
could vary). The same seed, cache and config then give the same weights, byte for byte, on the same machine with
the same torch intra-op thread count (``threads``; the count used is written into the run's ``config.json``).
Across thread counts, CPU types, GPU models or torch versions the weights agree only up to float rounding.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import time
import warnings
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Union

import numpy as np

from .modelcard import build_model_card, read_validation_log, training_data_facts, write_model_card
from .patches import BLEND_MODE, PatchDataset, patch_geometry
from .slices import SliceCache, SliceDataset, check_slice_grid, validation_keys
from .config import TrainConfig, lr_factor, plane_conditioned, with_global_residual
from .runtime import (cxx_compiler, dist_info, frozen, epoch_order, init_generator, latest_checkpoint, load_state,
    load_weights, resolve_device, save_checkpoint, seed_everything, split_batch)
from .validation import Validation, beats_identity  # noqa: F401  (re-exported)

PathLike = Union[str, Path]


@dataclass
class Position:
    step: int = 0          # batches done in all
    g_step: int = 0        # generator updates done
    epoch: int = 0         # current epoch (0-based)
    batch: int = 0         # batches done in the current epoch


class Trainer(Validation):
    """Train a generator (and critic) on a slice cache, writing into ``run_dir``.

    Args:
        config: the resolved :class:`TrainConfig`.
        cache: slice cache folder (``synth7t.training.slices.build_cache``).
        run_dir: output folder: ``config.json``, ``train_log.csv``, ``val_log.csv``, ``checkpoints/``, ``model/``.
        resume: continue from the newest checkpoint in ``run_dir`` when there is one.
        on_log: optional callback ``f(kind, row)`` for live plots (``kind`` is ``"train"`` or ``"val"``).
        progress: show a progress bar (rank 0).
    """

    def __init__(self, config: TrainConfig, cache: PathLike, run_dir: PathLike, *, resume: bool = True,
                 on_log: Optional[Callable[[str, dict], None]] = None, progress: bool = True):
        self.cfg = config
        self.run_dir = Path(run_dir)
        self.ckpt_dir = self.run_dir / "checkpoints"
        self.on_log = on_log
        self._start_processes()
        self.progress = progress and self.rank == 0
        self._resolve_model()
        self._open_data(cache)
        self._build_networks()
        self._build_loss()
        self._save_settings()
        if resume:
            self._resume()
        self._wrap_for_training()

    # ------------------------------------------------------------------------------------------ set-up steps

    def _start_processes(self) -> None:
        """The process group (under ``torchrun``), this rank's device and its share of the batch, the thread count
        (recorded in the config as really used) and the seeds."""
        import torch

        config = self.cfg
        self.world, self.rank, self.local_rank = dist_info()
        self.distributed = self.world > 1
        #: slices per process and step (the rank's share of the global batch), and per forward/backward pass
        self.rank_batch, self.micro_batch = split_batch(config.batch_size, self.world, config.grad_accumulation)
        if self.distributed and not torch.distributed.is_initialized():
            backend = "nccl" if torch.cuda.is_available() and config.device != "cpu" else "gloo"
            torch.distributed.init_process_group(backend)
            self._owns_process_group = True
        self.device = resolve_device(config.device)
        if self.device.type == "cuda" and self.distributed:
            self.device = torch.device("cuda", self.local_rank)
            torch.cuda.set_device(self.device)
        if config.threads is not None:
            torch.set_num_threads(config.threads)
        # config.json, the checkpoints and the model record the thread count really used
        self.cfg = config.replace(threads=int(torch.get_num_threads()))
        seed_everything(self.cfg.seed, deterministic=self.cfg.deterministic)

    def _resolve_model(self) -> None:
        """The network's config as trained (plane condition, global residual), its patch geometry (baselines) and
        what a grid must divide by; the config's model-dependent checks."""
        from ..models.build import resolve_config

        config = self.cfg
        self.model_config = resolve_config(config.model)
        #: the patch geometry of a baseline (V-Net, WATNet), None for the U-Nets (whole slices)
        self.geometry = patch_geometry(self.model_config)
        config.check_model(None if self.geometry is None else self.geometry.size)
        #: slicing planes (multi-view, beyond the paper); a plane-conditioned U-Net reads a fifth context column
        self.planes = tuple(config.planes)
        if config.conditions_on_plane:
            self.model_config = plane_conditioned(self.model_config, config.model)
        if config.global_residual is not None:
            self.model_config = with_global_residual(self.model_config, config.global_residual, config.model)
        #: what the in-plane sizes of a grid must divide by for this network (lone 3T scans are aligned onto such a
        #: grid; model.json records it): a U-Net predicts whole slices, a baseline slides windows over any grid
        self.grid_divisor = 1 if self.geometry is not None else 2 ** self.model_config.n_downsamplings

    def _open_data(self, cache: PathLike) -> None:
        """The slice cache, the training side of the split less a validation share carved from it (test subjects
        are never seen), the training dataset (slices or patches) and the fixed validation slices."""
        config = self.cfg
        self.cache = SliceCache.open(cache)
        if self.geometry is None:
            check_slice_grid(self.cache, self.planes, self.grid_divisor, config.crop, config.model)
        n_in = getattr(self.model_config, "n_input_slices", 3)
        plane_ctx = bool(getattr(self.model_config, "plane_condition", False))
        vols = self.cache.volumes
        side = sorted(vols.loc[vols["split"].isin(["train", "unsplit"]), "key"])
        self.val_keys = validation_keys(vols, config.val_fraction, config.seed)
        self.train_keys = [k for k in side if k not in set(self.val_keys)]
        if self.geometry is None:
            self.train_ds = SliceDataset(self.cache, self.train_keys, n_input_slices=n_in, crop=config.crop,
                                         augment=config.augment, seed=config.seed, planes=self.planes,
                                         plane_context=plane_ctx)
        else:
            self.train_ds = PatchDataset(self.cache, self.train_keys, geometry=self.geometry,
                                         overlap=config.patch_overlap, seed=config.seed)
        if self.world * config.grad_accumulation > 1 and len(self.train_ds) < config.batch_size:
            raise ValueError(f"the training split has {len(self.train_ds)} samples, fewer than one global batch "
                             f"(batch_size={config.batch_size}); it cannot be split over {self.world} process(es) "
                             f"x grad_accumulation {config.grad_accumulation}")
        self.val_ds = SliceDataset(self.cache, self.val_keys, n_input_slices=n_in, crop=None, random_crop=False,
                                   planes=self.planes, plane_context=plane_ctx)
        rng = np.random.default_rng(config.seed + 1)
        self.val_ids = np.sort(rng.choice(len(self.val_ds), size=min(config.val_slices, len(self.val_ds)),
                                          replace=False))

    def _build_networks(self) -> None:
        """The generator (from ``init_from`` when given), the critic of a GAN run, and their optimisers."""
        import torch

        from ..models import build_discriminator, build_model

        config = self.cfg
        self.generator = build_model(self.model_config).to(self.device)
        if self.distributed and self.device.type == "cuda":
            # batch statistics of the global batch, as one process computes them (a no-op without batch norm)
            self.generator = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.generator)
        self.critic = build_discriminator(config.discriminator).to(self.device) if config.gan else None
        if config.init_from:
            init_generator(self.generator, config.init_from, self.model_config)
        self.opt_g = torch.optim.Adam(self.generator.parameters(), lr=config.lr_g, betas=tuple(config.betas_g),
                                      weight_decay=config.weight_decay)
        if self.critic is not None:
            self.opt_d = torch.optim.Adam(self.critic.parameters(), lr=config.lr_d, betas=tuple(config.betas_d))

    def _build_loss(self) -> None:
        """The generator's loss: L1, the perceptual term (its weight calibrated to its share at the identity when
        ``perceptual_share`` is set, recorded as the run's ``lambda_perc``) and the adversarial term of a GAN."""
        from .losses import GeneratorLoss, build_perceptual_loss, calibrate_perceptual_weight

        config = self.cfg
        perceptual = None
        if config.lambda_perc > 0:
            perceptual = build_perceptual_loss(config.perceptual, weights=config.perceptual_weights).to(self.device)
        if config.perceptual_share and config.lambda_perc > 0:
            # from the first global batches (the same on every rank)
            lam, l1, perc = calibrate_perceptual_weight(perceptual, self._identity_pairs(), config.perceptual_share)
            config = self.cfg = config.replace(lambda_perc=lam)
            self.calibration = {"perceptual_share": config.perceptual_share, "l1_identity": l1,
                                "perceptual_identity": perc, "lambda_perc": lam}
        self.loss = GeneratorLoss(perceptual, lambda_perc=config.lambda_perc,
                                  lambda_gan=config.lambda_gan if config.gan else 0.0,
                                  adversarial=config.adversarial)
        self.pos = Position()

    def _save_settings(self) -> None:
        """``config.json`` (as run: threads, calibrated weight) and ``model_config.json`` in the run folder."""
        if self.rank == 0:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self.cfg.save(self.run_dir / "config.json")
            (self.run_dir / "model_config.json").write_text(json.dumps(self.model_config.to_dict(), indent=2))

    def _wrap_for_training(self) -> None:
        """Channels-last memory, ``torch.compile`` and DDP around the networks the training steps call
        (``g_train``, ``c_train``); the plain modules stay for checkpoints and export."""
        import torch

        config = self.cfg
        if config.channels_last:
            self.generator.to(memory_format=self._memory_format)
            if self.critic is not None:
                self.critic.to(memory_format=torch.channels_last)
        g = self.generator
        if config.compile:
            if self.device.type == "cpu" and cxx_compiler() is None:
                raise ValueError("compile=True on a CPU needs a C++ compiler (g++ or clang++ on PATH, or $CXX) for "
                                 "torch.compile's inductor backend; install one or set compile=False")
            g = torch.compile(g)
        if self.distributed:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if self.device.type == "cuda" else None
            # DDP outside the compiled module: no_sync() and the gradient all-reduce stay in eager code
            g = DDP(g, device_ids=ids)
            if self.critic is not None:
                self.critic_ddp = DDP(self.critic, device_ids=ids)
        self.g_train = g
        self.c_train = getattr(self, "critic_ddp", self.critic)

    # ---------------------------------------------------------------------------------------- helpers
    @property
    def samples_per_epoch(self) -> int:
        n = len(self.train_ds)
        return min(n, self.cfg.samples_per_epoch) if self.cfg.samples_per_epoch else n

    @property
    def batches_per_epoch(self) -> int:
        """Optimiser steps per epoch: ``samples_per_epoch // batch_size`` (global), whatever the world size."""
        return self.samples_per_epoch // self.cfg.batch_size or 1

    @property
    def total_steps(self) -> int:
        """Batches the run plans: ``epochs`` x :attr:`batches_per_epoch`, or ``max_steps`` when smaller."""
        total = self.cfg.epochs * self.batches_per_epoch
        return min(total, self.cfg.max_steps) if self.cfg.max_steps else total

    def _identity_pairs(self, n_batches: int = 4) -> list:
        """``(3T centre slices, 7T slices)`` of the first ``n_batches`` global batches of epoch 0 (on the device),
        where an identity model's prediction is its input's centre slice (a baseline's patch, masked as in training)."""
        import torch

        self.train_ds.set_epoch(0)
        pairs = []
        for b in range(min(n_batches, self.batches_per_epoch)):
            items = [self.train_ds[int(i)] for i in self.global_batch_ids(0, b)]
            x = torch.stack([it["x"] for it in items]).to(self.device)
            y = torch.stack([it["y"] for it in items]).to(self.device)
            mid = x.shape[1] // 2
            pred = x[:, mid:mid + 1]
            if "mask" in items[0]:
                m = torch.stack([it["mask"] for it in items]).to(self.device)
                pred, y = pred * m, y * m
            pairs.append((pred, y))
        return pairs

    def _set_learning_rates(self) -> None:
        """The rates of the coming batch (:func:`synth7t.training.config.lr_factor`): a function of the position
        alone, so a resumed run continues the schedule exactly."""
        f = lr_factor(self.cfg, self.pos.step, self.pos.epoch, self.total_steps)
        for group in self.opt_g.param_groups:
            group["lr"] = self.cfg.lr_g * f
        if self.critic is not None:
            for group in self.opt_d.param_groups:
                group["lr"] = self.cfg.lr_d * f

    @property
    def _memory_format(self):
        """Channels-last for the generator's tensors: NHWC for 2D networks, NDHWC for 3D ones."""
        import torch

        three_d = self.geometry is not None and self.geometry.spatial_dims == 3
        return torch.channels_last_3d if three_d else torch.channels_last

    def _autocast(self):
        """bfloat16 autocast on the training device (CUDA or CPU) when ``amp="bf16"``, else a no-op."""
        import torch

        if self.cfg.amp == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return nullcontext()

    def global_batch_ids(self, epoch: int, b: int) -> np.ndarray:
        """Sample indices of global batch ``b`` of ``epoch``: ``order[b*batch_size:(b+1)*batch_size]``."""
        bs = self.cfg.batch_size
        return epoch_order(len(self.train_ds), self.cfg.seed, epoch)[b * bs:(b + 1) * bs]

    def rank_batch_ids(self, epoch: int, b: int) -> np.ndarray:
        """This process's contiguous share of :meth:`global_batch_ids` (rows ``rank * rank_batch`` onwards)."""
        ids = self.global_batch_ids(epoch, b)
        return ids[self.rank * self.rank_batch:(self.rank + 1) * self.rank_batch]

    def _batch(self, epoch: int, b: int) -> dict:
        """This process's share of global batch ``b`` of ``epoch`` as tensors on the device."""
        import torch

        self.train_ds.set_epoch(epoch)
        items = [self.train_ds[int(i)] for i in self.rank_batch_ids(epoch, b)]
        out = {k: torch.stack([it[k] for it in items]).to(self.device, non_blocking=True)
               for k in ("x", "y", "context", "mask") if k in items[0]}
        if self.cfg.channels_last:
            for k in ("x", "y", "mask"):
                if k in out:
                    out[k] = out[k].contiguous(memory_format=self._memory_format)
        return out

    def penalty_weights(self, row: int, n: int):
        """The gradient penalty's interpolation weights of rows ``row .. row + n - 1`` of this step's global batch.

        The weights of a step are the stream of a CPU generator seeded by (seed, step): row ``i`` of the global
        batch takes its ``i``-th number (``torch.rand`` draws one number per element, in order). A process or
        micro-batch holding some rows therefore gets exactly what one process drawing the whole global batch gives
        those rows, on a CPU and on GPUs alike (the weights are drawn on the CPU and moved to the device).
        """
        import torch

        g = torch.Generator()
        g.manual_seed(int(np.random.default_rng([self.cfg.seed, self.pos.step, 131]).integers(2 ** 62)))
        return torch.rand(int(row) + int(n), generator=g)[int(row):].to(self.device)

    @staticmethod
    def _sync(module, last: bool):
        """DistributedDataParallel's ``no_sync()`` for every micro-batch but the ``last`` (a no-op otherwise)."""
        from torch.nn.parallel import DistributedDataParallel as DDP

        return module.no_sync() if isinstance(module, DDP) and not last else nullcontext()

    def _mean_over_ranks(self, parts: dict) -> dict:
        """Average logged scalars over the processes (one all-reduce), as plain floats."""
        import torch

        if not parts:
            return {}
        keys = list(parts)  # the same insertion order on every rank
        v = torch.stack([parts[k].detach().float().reshape(()) for k in keys]).to(self.device)
        if self.distributed:
            torch.distributed.all_reduce(v)
            v = v / self.world
        return dict(zip(keys, v.tolist()))

    def _state(self) -> dict:
        import torch

        st = {"opt_g": self.opt_g.state_dict(), "torch_rng": torch.get_rng_state()}
        if torch.cuda.is_available():
            st["cuda_rng"] = torch.cuda.get_rng_state_all()
        if self.critic is not None:
            st["opt_d"] = self.opt_d.state_dict()
        return st

    def checkpoint(self, name: Optional[str] = None, metrics: Optional[dict] = None) -> Optional[Path]:
        if self.rank != 0:
            return None
        name = name or f"step-{self.pos.step:08d}"
        meta = {"step": self.pos.step, "g_step": self.pos.g_step, "epoch": self.pos.epoch, "batch": self.pos.batch,
                "world_size": self.world, "config": self.cfg.to_dict(), "model_config": self.model_config.to_dict(),
                "metrics": metrics or {}, "time": time.time()}
        path = save_checkpoint(self.ckpt_dir, name, generator=self.generator, critic=self.critic,
                               state=self._state(), meta=meta)
        # prune old step checkpoints; epoch checkpoints stay
        steps = sorted(p for p in self.ckpt_dir.glob("step-*") if p.is_dir())
        for old in steps[: max(0, len(steps) - self.cfg.keep_checkpoints)]:
            if old != path:
                shutil.rmtree(old, ignore_errors=True)
        return path

    def _resume(self) -> None:
        import torch

        ck = latest_checkpoint(self.ckpt_dir)
        if ck is None:
            return
        meta = json.loads((ck / "meta.json").read_text())
        saved = TrainConfig.from_dict(meta["config"])
        if (saved.model, saved.gan, saved.adversarial, saved.conditions_on_plane) != (
                self.cfg.model, self.cfg.gan, self.cfg.adversarial, self.cfg.conditions_on_plane):
            raise ValueError(f"{ck}: checkpoint of model {saved.model!r} (gan={saved.gan}, adversarial="
                             f"{saved.adversarial!r}, plane condition {saved.conditions_on_plane}) cannot resume a "
                             f"run of {self.cfg.model!r} (gan={self.cfg.gan}, adversarial={self.cfg.adversarial!r}, "
                             f"plane condition {self.cfg.conditions_on_plane}); use another run_dir")
        load_weights(ck / "generator.safetensors", self.generator)
        st = load_state(ck / "state.pt")
        # (the learning rates are set from the position before every batch; a scheduler's saved state, in
        # checkpoints of earlier versions, is not needed)
        self.opt_g.load_state_dict(st["opt_g"])
        if self.critic is not None:
            load_weights(ck / "critic.safetensors", self.critic)
            self.opt_d.load_state_dict(st["opt_d"])
        torch.set_rng_state(st["torch_rng"])
        if "cuda_rng" in st and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(st["cuda_rng"])
        self.pos = Position(meta["step"], meta["g_step"], meta["epoch"], meta["batch"])

    def _log(self, name: str, row: dict) -> None:
        if self.rank != 0:
            return
        path = self.run_dir / f"{name}_log.csv"
        new = not path.exists()
        with open(path, "a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(row))
            if new:
                w.writeheader()
            w.writerow(row)
        if self.on_log:
            self.on_log(name, row)

    # --------------------------------------------------------------------------------------- training
    def _train_batch(self, share: dict) -> dict:
        """One step on this process's share of a global batch: the critic (GAN U-Net), then the generator
        every ``n_critic``-th batch.

        The share is processed in ``grad_accumulation`` micro-batches; each micro-batch's loss is divided by
        their number and back-propagated (DistributedDataParallel's ``no_sync`` for all but the last), and the
        optimiser steps once, so the gradient is the mean over the global batch.

        A baseline's batch carries a ``mask`` (brain voxels of usable slices): its output and target are
        multiplied by it before the loss, as Cui et al. mask their output.

        Args:
            share: ``x``, ``y``, ``context`` (and ``mask``) tensors of this process's share (:meth:`_batch`).

        Returns:
            The step's losses (``critic`` and the generator's parts), averaged over micro-batches and processes.
        """
        import torch

        from .losses import critic_loss

        cfg, epoch = self.cfg, self.pos.epoch
        first = epoch == 0
        n_micro = cfg.grad_accumulation
        micro = [{k: v[i * self.micro_batch:(i + 1) * self.micro_batch] for k, v in share.items()}
                 for i in range(n_micro)] if n_micro > 1 else [share]
        sums: dict = {}

        def add(name, value):
            sums[name] = sums.get(name, 0.0) + value.detach() / n_micro

        gen_step = True
        if self.critic is not None:
            self.opt_d.zero_grad(set_to_none=True)
            for i, batch in enumerate(micro):
                # the interpolation weights of the global batch's rows held by this micro-batch
                alpha = self.penalty_weights(self.rank * self.rank_batch + i * self.micro_batch, len(batch["y"]))
                with self._sync(self.c_train, last=i == n_micro - 1):
                    with torch.no_grad(), self._autocast():
                        fake = self.g_train(batch["x"], batch["context"]).float()
                    d_loss = critic_loss(self.c_train, batch["y"], fake, lambda_gp=cfg.lambda_gp,
                                         objective=cfg.adversarial, alpha=alpha)
                    d_loss = d_loss[0] if isinstance(d_loss, tuple) else d_loss
                    with warnings.catch_warnings():
                        # the penalty's double backward gives the critic's first convolution (one input
                        # channel) a weight gradient whose stride differs from DDP's bucket only along that
                        # size-1 dimension: the same memory layout, a spurious "Grad strides do not match"
                        warnings.filterwarnings("ignore", message="Grad strides do not match bucket view")
                        (d_loss / n_micro).backward()
                add("critic", d_loss)
            self.opt_d.step()
            n_c = cfg.n_critic_first_epoch if first else cfg.n_critic
            gen_step = (self.pos.batch + 1) % n_c == 0
        if gen_step:
            lam = None
            if self.critic is not None:
                lam = cfg.lambda_gan / (cfg.gan_warmup_factor if first else 1.0)
            self.opt_g.zero_grad(set_to_none=True)
            # the critic only passes gradients to the fakes here: frozen, and outside its DDP wrapper (whose
            # all-reduce would be wasted)
            with frozen(self.critic):
                for i, batch in enumerate(micro):
                    with self._sync(self.g_train, last=i == n_micro - 1):
                        with self._autocast():
                            pred = self.g_train(batch["x"], batch["context"])
                        pred, target = pred.float(), batch["y"]
                        if "mask" in batch:
                            pred, target = pred * batch["mask"], target * batch["mask"]
                        total, parts = self.loss(pred, target, critic=self.critic, lambda_gan=lam)
                        (total / n_micro).backward()
                    for k, v in parts.items():
                        add(k, v)
            self.opt_g.step()
            self.pos.g_step += 1
        return self._mean_over_ranks(sums)

    def fit(self) -> dict:
        """Run (or finish) the configured epochs; returns the last validation metrics."""
        from tqdm.auto import tqdm

        cfg = self.cfg
        nb = self.batches_per_epoch
        total = cfg.epochs * nb if not cfg.max_steps else min(cfg.epochs * nb, cfg.max_steps)
        bar = tqdm(total=total, initial=min(self.pos.step, total), desc="train", unit="batch",
                   disable=not self.progress)
        metrics: dict = {}
        t_last = time.perf_counter()
        self.generator.train()
        while self.pos.epoch < cfg.epochs and not (cfg.max_steps and self.pos.step >= cfg.max_steps):
            while self.pos.batch < nb and not (cfg.max_steps and self.pos.step >= cfg.max_steps):
                batch = self._batch(self.pos.epoch, self.pos.batch)
                self._set_learning_rates()
                parts = self._train_batch(batch)
                self.pos.batch += 1
                self.pos.step += 1
                bar.update(1)
                now = time.perf_counter()
                row = {"step": self.pos.step, "epoch": self.pos.epoch, "g_step": self.pos.g_step,
                       "lr_g": self.opt_g.param_groups[0]["lr"], "seconds": round(now - t_last, 4),
                       **{k: round(v, 6) for k, v in parts.items()}}
                t_last = now
                self._log("train", row)
                if "total" in parts:
                    bar.set_postfix(loss=f"{parts['total']:.4f}")
                if self.pos.step % cfg.ckpt_every == 0:
                    self.checkpoint()
            if self.pos.batch >= nb:
                metrics = self.validate() if self.rank == 0 else {}
                self._log("val", {"epoch": self.pos.epoch, "step": self.pos.step, **metrics})
                self._note_identity(metrics)
                self.pos.epoch += 1
                self.pos.batch = 0
                self.checkpoint(f"epoch-{self.pos.epoch:03d}", metrics)
                self.export()
        bar.close()
        if cfg.max_steps and self.pos.step >= cfg.max_steps and self.pos.batch:
            metrics = self.validate() if self.rank == 0 else {}
            self._log("val", {"epoch": self.pos.epoch, "step": self.pos.step, **metrics})
            self._note_identity(metrics)
            self.checkpoint(metrics=metrics)
            self.export()
        if self.rank == 0 and metrics and not beats_identity(metrics):
            from .modelcard import BelowIdentityWarning

            line = (f"{self.run_dir.name}: after {self.pos.step} steps the model does not beat copying its 3T input on "
                    f"the validation slices (PSNR {metrics['psnr']:.2f} dB against {metrics['psnr_3t']:.2f}, SSIM "
                    f"{metrics['ssim']:.3f} against {metrics['ssim_3t']:.3f}): it would degrade every scan; train "
                    "longer, or see the learning curve against the identity (val_log.csv)")
            self._note(line)
            warnings.warn(line, BelowIdentityWarning, stacklevel=2)
        return metrics

    def close(self) -> None:
        """Destroy the process group if this trainer started it (every rank waits for the others first)."""
        import torch

        if getattr(self, "_owns_process_group", False) and torch.distributed.is_initialized():
            torch.distributed.barrier()
            torch.distributed.destroy_process_group()
            self._owns_process_group = False

    def input_statistics(self) -> Optional[dict]:
        """The training inputs' statistics that every prediction is scored against
        (:func:`synth7t.inference.ood.training_statistics` of each training subject's cached 3T); None with fewer
        than two training subjects or a cache that does not record its voxel size."""
        from ..inference.ood import input_features, training_statistics

        spacing = self.cache.meta.get("spacing_mm")
        if not spacing or len(self.train_keys) < 2:
            return None
        vols = self.cache.volumes.set_index("key")
        feats = []
        for k in self.train_keys:
            row = vols.loc[k]
            v = np.asarray(self.cache.t3[int(row["offset"]): int(row["offset"]) + int(row["depth"])], np.float32)
            feats.append(input_features(v, v > 0, float(spacing)))
        return training_statistics(feats, keys=list(self.train_keys))

    def export(self) -> Optional[Path]:
        """Write ``model/`` for prediction: generator weights (safetensors), ``model.json`` and the model card
        (``model_card.json``, ``MODEL_CARD.md``: training data, objective, steps, grid, validation, intended use)."""
        if self.rank != 0:
            return None
        from safetensors.torch import save_file

        d = self.run_dir / "model"
        tmp = self.run_dir / ".model.tmp"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        save_file({k: v.detach().cpu().contiguous() for k, v in self.generator.state_dict().items()},
                  str(tmp / "generator.safetensors"))
        meta = {
            "model_config": self.model_config.to_dict(), "train_config": self.cfg.to_dict(),
            "step": self.pos.step, "epoch": self.pos.epoch, "format": "synth7t-model-1",
            # the slicing planes it learned (absent before multi-view: axial); synth7t.inference.views predicts in them
            "planes": list(self.planes),
            "input": {"grid": "synth7t-preproc 7T grid, axial slices (H, W) = (anterior-posterior, left-right)",
                      "intensity": "clipped min-max normalised to [0, 1]",
                      # lone 3T scans are aligned onto a grid like the training one (synth7t.inference.predict_file)
                      "spacing_mm": self.cache.meta.get("spacing_mm"),
                      "grid_inplane": [int(self.cache.t3.shape[1]), int(self.cache.t3.shape[2])],
                      "grid_divisor": self.grid_divisor},
        }
        if self.geometry is not None:
            # how synth7t.inference reassembles whole volumes from windows of the training patch size
            meta["inference"] = {"method": "sliding window (monai.inferers.sliding_window_inference)",
                                 "spatial_dims": self.geometry.spatial_dims, "patch_size": self.geometry.size,
                                 "patch_overlap": self.cfg.patch_overlap, "blend": BLEND_MODE}
        (tmp / "model.json").write_text(json.dumps(meta, indent=2))
        grid = {"spacing_mm": self.cache.meta.get("spacing_mm"),
                "inplane": [int(self.cache.t3.shape[1]), int(self.cache.t3.shape[2])]}
        card = build_model_card(self.cfg.to_dict(), self.model_config.to_dict(),
                                dataset=training_data_facts(self.cache, validation_keys=self.val_keys),
                                steps=self.pos.step, epochs_done=self.pos.epoch, grid=grid,
                                validation=read_validation_log(self.run_dir),
                                objective=self.cfg.adversarial if self.cfg.gan else None)
        # how long it trained, and on what: the book says it beside every model's scores
        log = self.run_dir / "train_log.csv"
        seconds = None
        if log.is_file():
            with open(log, newline="") as f:
                seconds = sum(float(r["seconds"]) for r in csv.DictReader(f))
        card["training"].update(seconds=None if seconds is None else round(seconds, 1), device=str(self.device),
                                threads=self.cfg.threads, calibration=getattr(self, "calibration", None))
        card["input_statistics"] = self.input_statistics()
        write_model_card(tmp, card)
        if d.exists():
            shutil.rmtree(d)
        os.replace(tmp, d)
        return d


def train(config: TrainConfig, cache: PathLike, run_dir: PathLike, **kw) -> dict:
    """Build a :class:`Trainer` and run it (resuming when ``run_dir`` has checkpoints).

    Under ``torchrun`` the process group that the trainer started is closed at the end of a finished run
    (after an error it is left to ``torchrun``, which stops the other processes).
    """
    trainer = Trainer(config, cache, run_dir, **kw)
    metrics = trainer.fit()
    trainer.close()
    return metrics
