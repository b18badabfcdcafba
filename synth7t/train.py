"""Training: the U-Net and the GAN U-Net on 2.5D slices, on a CPU, one GPU, or several through ``torchrun``.

Schedule (§2.5, Appendix A.3): Adam for the generator (lr 1e-4, betas (0.9, 0.999)) and the critic
(2e-5, (0, 0.9)); the learning rates decay by ``lr_decay`` every epoch. For the GAN U-Net every batch trains
the critic (WGAN-GP), and every ``n_critic``-th batch also trains the generator (``n_critic_first_epoch`` in
the first epoch, when ``lambda_gan`` is also divided by ``gan_warmup_factor``).

Checkpoints are folders written under a temporary name and renamed into place (a crash never leaves a
half-written checkpoint), holding ``generator.safetensors`` (and ``critic.safetensors``), ``state.pt``
(optimisers, schedulers, RNG; read back with ``torch.load(weights_only=True)``) and ``meta.json`` (position
in the run and the full config). ``resume`` continues from the newest one exactly where the run stopped: the
data order and the crops are functions of (seed, epoch, sample), so skipping the batches already done
replays the same stream.

Multi-GPU: launch the same script with ``torchrun --nproc_per_node=8 ...``; each process takes every
``world_size``-th batch of the epoch's permutation, gradients are averaged by DistributedDataParallel, and
rank 0 alone writes logs and checkpoints.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Union

import numpy as np

from .slices import SliceCache, SliceDataset
from .train_config import TrainConfig, train_config_from_dict

PathLike = Union[str, Path]


# ----------------------------------------------------------------------------------------- checkpoints


def _atomic_json(path: Path, obj) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2))
    os.replace(tmp, path)


def save_checkpoint(ckpt_dir: PathLike, name: str, *, generator, critic=None, state: dict, meta: dict) -> Path:
    """Write one checkpoint folder atomically and point ``latest.json`` at it."""
    import torch
    from safetensors.torch import save_file

    root = Path(ckpt_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = root / name
    tmp = root / f".{name}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    save_file({k: v.detach().cpu().contiguous() for k, v in generator.state_dict().items()},
              str(tmp / "generator.safetensors"))
    if critic is not None:
        save_file({k: v.detach().cpu().contiguous() for k, v in critic.state_dict().items()},
                  str(tmp / "critic.safetensors"))
    torch.save(state, tmp / "state.pt")
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    _atomic_json(root / "latest.json", {"checkpoint": name, "step": meta.get("step")})
    return final


def latest_checkpoint(ckpt_dir: PathLike) -> Optional[Path]:
    """The folder named by ``latest.json`` (None when there is no complete checkpoint)."""
    p = Path(ckpt_dir) / "latest.json"
    if not p.is_file():
        return None
    d = Path(ckpt_dir) / json.loads(p.read_text())["checkpoint"]
    return d if (d / "meta.json").is_file() else None


def load_weights(path: PathLike, module, *, strict: bool = True) -> None:
    """Load ``.safetensors`` weights into a module (no pickle involved)."""
    from safetensors.torch import load_file

    module.load_state_dict(load_file(str(path)), strict=strict)


def load_state(path: PathLike) -> dict:
    """Read a ``state.pt`` written by this module with the safe loader."""
    import torch

    return torch.load(str(path), map_location="cpu", weights_only=True)


# ------------------------------------------------------------------------------------------- the trainer


def _dist_info():
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    return world, rank, local


def resolve_device(name: str = "auto"):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available; use device='cpu' or 'auto'")
    return dev


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The permutation of the training samples for one epoch (the same in every process)."""
    return np.random.default_rng([int(seed), int(epoch), 97]).permutation(n)


@dataclass
class Position:
    step: int = 0          # batches done in all
    g_step: int = 0        # generator updates done
    epoch: int = 0         # current epoch (0-based)
    batch: int = 0         # batches done in the current epoch


class Trainer:
    """Train a generator (and critic) on a slice cache, writing into ``run_dir``.

    Args:
        config: the resolved :class:`TrainConfig`.
        cache: slice cache folder (``synth7t.slices.build_cache``).
        run_dir: output folder: ``config.json``, ``train_log.csv``, ``val_log.csv``, ``checkpoints/``, ``model/``.
        resume: continue from the newest checkpoint in ``run_dir`` when there is one.
        on_log: optional callback ``f(kind, row)`` for live plots (``kind`` is ``"train"`` or ``"val"``).
        progress: show a progress bar (rank 0).
    """

    def __init__(self, config: TrainConfig, cache: PathLike, run_dir: PathLike, *, resume: bool = True,
                 on_log: Optional[Callable[[str, dict], None]] = None, progress: bool = True):
        import torch

        from .losses import GeneratorLoss, build_perceptual_loss
        from .models import build_discriminator, build_model
        from .models.build import resolve_config

        self.cfg = config
        self.run_dir = Path(run_dir)
        self.ckpt_dir = self.run_dir / "checkpoints"
        self.world, self.rank, self.local_rank = _dist_info()
        self.distributed = self.world > 1
        self.on_log, self.progress = on_log, progress and self.rank == 0
        if self.distributed and not torch.distributed.is_initialized():
            backend = "nccl" if torch.cuda.is_available() and config.device != "cpu" else "gloo"
            torch.distributed.init_process_group(backend)
        self.device = resolve_device(config.device)
        if self.device.type == "cuda" and self.distributed:
            self.device = torch.device("cuda", self.local_rank)
            torch.cuda.set_device(self.device)
        torch.manual_seed(config.seed)
        np.random.seed(config.seed)

        self.cache = SliceCache.open(cache)
        self.model_config = resolve_config(config.model)
        n_in = getattr(self.model_config, "n_input_slices", 3)
        self.train_ds = SliceDataset(self.cache, "train" if (self.cache.index["split"] == "train").any() else None,
                                     n_input_slices=n_in, crop=config.crop, augment=config.augment, seed=config.seed)
        val_split = "test" if (self.cache.index["split"] == "test").any() else None
        self.val_ds = SliceDataset(self.cache, val_split, n_input_slices=n_in, crop=None, random_crop=False)
        rng = np.random.default_rng(config.seed + 1)
        self.val_ids = np.sort(rng.choice(len(self.val_ds), size=min(config.val_slices, len(self.val_ds)),
                                          replace=False))

        self.generator = build_model(self.model_config).to(self.device)
        self.critic = build_discriminator(config.discriminator).to(self.device) if config.gan else None
        self.opt_g = torch.optim.Adam(self.generator.parameters(), lr=config.lr_g, betas=tuple(config.betas_g))
        self.sched_g = torch.optim.lr_scheduler.ExponentialLR(self.opt_g, gamma=config.lr_decay)
        if self.critic is not None:
            self.opt_d = torch.optim.Adam(self.critic.parameters(), lr=config.lr_d, betas=tuple(config.betas_d))
            self.sched_d = torch.optim.lr_scheduler.ExponentialLR(self.opt_d, gamma=config.lr_decay)
        perceptual = None
        if config.lambda_perc > 0:
            perceptual = build_perceptual_loss(config.perceptual, weights=config.perceptual_weights).to(self.device)
        self.loss = GeneratorLoss(perceptual, lambda_perc=config.lambda_perc,
                                  lambda_gan=config.lambda_gan if config.gan else 0.0)
        self.pos = Position()
        if self.rank == 0:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            config.save(self.run_dir / "config.json")
            (self.run_dir / "model_config.json").write_text(json.dumps(self.model_config.to_dict(), indent=2))
        if resume:
            self._resume()
        g = self.generator
        if config.compile and self.device.type == "cuda":
            g = torch.compile(g)
        if self.distributed:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if self.device.type == "cuda" else None
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
        return self.samples_per_epoch // (self.cfg.batch_size * self.world) or 1

    def _autocast(self):
        import torch

        if self.device.type == "cuda" and self.cfg.amp == "bf16":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return nullcontext()

    def _batch(self, epoch: int, b: int) -> dict:
        import torch

        order = epoch_order(len(self.train_ds), self.cfg.seed, epoch)
        bs = self.cfg.batch_size
        start = (b * self.world + self.rank) * bs
        ids = order[start:start + bs]
        self.train_ds.set_epoch(epoch)
        items = [self.train_ds[int(i)] for i in ids]
        return {k: torch.stack([it[k] for it in items]).to(self.device, non_blocking=True)
                for k in ("x", "y", "context")}

    def _state(self) -> dict:
        import torch

        st = {"opt_g": self.opt_g.state_dict(), "sched_g": self.sched_g.state_dict(),
              "torch_rng": torch.get_rng_state()}
        if torch.cuda.is_available():
            st["cuda_rng"] = torch.cuda.get_rng_state_all()
        if self.critic is not None:
            st["opt_d"], st["sched_d"] = self.opt_d.state_dict(), self.sched_d.state_dict()
        return st

    def checkpoint(self, name: Optional[str] = None, metrics: Optional[dict] = None) -> Optional[Path]:
        if self.rank != 0:
            return None
        name = name or f"step-{self.pos.step:08d}"
        meta = {"step": self.pos.step, "g_step": self.pos.g_step, "epoch": self.pos.epoch, "batch": self.pos.batch,
                "config": self.cfg.to_dict(), "model_config": self.model_config.to_dict(),
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
        saved = train_config_from_dict(meta["config"])
        if saved.model != self.cfg.model or saved.gan != self.cfg.gan:
            raise ValueError(f"{ck}: checkpoint of model {saved.model!r} (gan={saved.gan}) cannot resume a run of "
                             f"{self.cfg.model!r} (gan={self.cfg.gan}); use another run_dir")
        load_weights(ck / "generator.safetensors", self.generator)
        st = load_state(ck / "state.pt")
        self.opt_g.load_state_dict(st["opt_g"])
        self.sched_g.load_state_dict(st["sched_g"])
        if self.critic is not None:
            load_weights(ck / "critic.safetensors", self.critic)
            self.opt_d.load_state_dict(st["opt_d"])
            self.sched_d.load_state_dict(st["sched_d"])
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
    def _train_batch(self, batch: dict) -> dict:
        import torch

        from .losses import critic_loss

        cfg, epoch = self.cfg, self.pos.epoch
        first = epoch == 0
        out = {}
        gen_step = True
        if self.critic is not None:
            with torch.no_grad(), self._autocast():
                fake = self.g_train(batch["x"], batch["context"]).float()
            d_loss = critic_loss(self.c_train, batch["y"], fake, lambda_gp=cfg.lambda_gp)
            d_loss = d_loss[0] if isinstance(d_loss, tuple) else d_loss
            self.opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            self.opt_d.step()
            out["critic"] = float(d_loss.detach())
            n_c = cfg.n_critic_first_epoch if first else cfg.n_critic
            gen_step = (self.pos.batch + 1) % n_c == 0
        if gen_step:
            lam = None
            if self.critic is not None:
                lam = cfg.lambda_gan / (cfg.gan_warmup_factor if first else 1.0)
            with self._autocast():
                pred = self.g_train(batch["x"], batch["context"])
            total, parts = self.loss(pred.float(), batch["y"], critic=self.c_train, lambda_gan=lam)
            self.opt_g.zero_grad(set_to_none=True)
            total.backward()
            self.opt_g.step()
            self.pos.g_step += 1
            out.update({k: float(v) for k, v in parts.items()})
        return out

    @staticmethod
    def _slice_metrics(ref: np.ndarray, img: np.ndarray) -> tuple[float, float]:
        from .metrics import psnr, ssim_global

        m = ref > 0
        if m.sum() < 16:
            return float("nan"), float("nan")
        return psnr(ref, img, m), ssim_global(ref, img, m)

    def validate(self) -> dict:
        """PSNR and SSIM (paper definitions, brain voxels) of the model and of the 3T input on validation slices."""
        import torch

        self.generator.eval()
        rows = []
        with torch.no_grad():
            for start in range(0, len(self.val_ids), self.cfg.batch_size):
                items = [self.val_ds[int(i)] for i in self.val_ids[start:start + self.cfg.batch_size]]
                x = torch.stack([it["x"] for it in items]).to(self.device)
                c = torch.stack([it["context"] for it in items]).to(self.device)
                with self._autocast():
                    pred = self.generator(x, c).float().clamp(0, 1).cpu().numpy()
                mid = x.shape[1] // 2
                for it, p, xin in zip(items, pred, x.cpu().numpy()):
                    y = it["y"].numpy()[0]
                    mask = y > 0
                    rows.append((*self._slice_metrics(y, p[0] * mask), *self._slice_metrics(y, xin[mid] * mask)))
        self.generator.train()
        a = np.array(rows, dtype=float)
        keys = ("psnr", "ssim", "psnr_3t", "ssim_3t")
        return {k: float(np.nanmean(a[:, i])) for i, k in enumerate(keys)}

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
                self.pos.epoch += 1
                self.pos.batch = 0
                self.sched_g.step()
                if self.critic is not None:
                    self.sched_d.step()
                self.checkpoint(f"epoch-{self.pos.epoch:03d}", metrics)
                self.export()
        bar.close()
        if cfg.max_steps and self.pos.step >= cfg.max_steps and self.pos.batch:
            metrics = self.validate() if self.rank == 0 else {}
            self._log("val", {"epoch": self.pos.epoch, "step": self.pos.step, **metrics})
            self.checkpoint(metrics=metrics)
            self.export()
        return metrics

    def export(self) -> Optional[Path]:
        """Write ``model/`` for prediction: generator weights (safetensors) and ``model.json``."""
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
        (tmp / "model.json").write_text(json.dumps({
            "model_config": self.model_config.to_dict(), "train_config": self.cfg.to_dict(),
            "step": self.pos.step, "epoch": self.pos.epoch, "format": "synth7t-model-1",
            "input": {"grid": "synth7t-preproc 7T grid, axial slices (H, W) = (anterior-posterior, left-right)",
                      "intensity": "clipped min-max normalised to [0, 1]",
                      # lone 3T scans are aligned onto a grid like the training one (synth7t.predict.predict_file)
                      "spacing_mm": self.cache.meta.get("spacing_mm"),
                      "grid_inplane": [int(self.cache.t3.shape[1]), int(self.cache.t3.shape[2])]},
        }, indent=2))
        if d.exists():
            shutil.rmtree(d)
        os.replace(tmp, d)
        return d


def train(config: TrainConfig, cache: PathLike, run_dir: PathLike, **kw) -> dict:
    """Build a :class:`Trainer` and run it (resuming when ``run_dir`` has checkpoints)."""
    return Trainer(config, cache, run_dir, **kw).fit()
