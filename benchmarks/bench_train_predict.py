"""Throughput benchmark: the trainer's own step and prediction seconds per volume, against baselines in the same
process.

Run: ``python benchmarks/bench_train_predict.py`` (CPU: the demo-cpu preset on a small simulated cache built in a
temporary folder, about 2 minutes) or on a GPU node with a real cache
``python benchmarks/bench_train_predict.py --preset paper-unet --device cuda --cache runs/bf2/02_train/cache``.

- **Training.** The step timed is the trainer's own, :meth:`synth7t.training.trainer.Trainer._train_batch` of a
  :class:`synth7t.training.trainer.Trainer` built from ``--preset`` (its precision, ``torch.compile`` and memory format as the
  preset and ``--set`` say; the U-Net's loss with its perceptual term; a GAN preset's critic step with the gradient
  penalty), on one batch of the cache. The baseline is a textbook fp32 eager step of a copy of the same networks on
  the same batch: forward, the same loss objects (:class:`synth7t.training.losses.GeneratorLoss`,
  :func:`synth7t.training.losses.critic_loss`), backward, ``torch.optim.Adam``; contiguous tensors, no autocast, no compile.
  Both run in this process, alternately. With the demo-cpu preset on a CPU (fp32, no compile) the two do the same
  arithmetic, and the ratio is the trainer's overhead; on a GPU the paper presets add bf16 autocast (and
  ``--set compile=true``), and the ratio is what they buy. On a GPU also the model FLOP utilisation
  (3 x forward FLOPs per slice / time / peak).
- **Prediction.** Our slice loop (:func:`synth7t.inference.volume.predict_volume`, with the model as
  :func:`synth7t.inference.load_model` prepares it: channels-last weights on a CPU) against a plain contiguous loop of
  one slice per forward pass, and against the same plain loop at the library's batch size
  (:func:`synth7t.inference.volume.default_batch_size`: 1 slice on a CPU, 32 on a GPU). Inputs are random tensors of the real
  shapes (3 x H x W slices, a D-slice volume): this measures the model and the loop, not disk reads.
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def small_cache(folder: Path) -> Path:
    """A slice cache of 4 simulated subjects on coarse voxels (1.6 / 2.3 mm, the smoke profile's), preprocessed with
    the quick preset and the ground-truth masks; enough batches for a benchmark on a CPU."""
    from synth7t.simulate import demo
    from synth7t.data import layout
    from synth7t import preprocess
    from synth7t.training import slices

    data = folder / "data"
    ds = demo.generate_cohort(data, 4, seed=3, config=demo.DemoConfig(voxel_7t=1.6, voxel_3t=2.3), n_jobs=1,
                              progress=False)
    layout.write_split(layout.make_split(ds, n_test=1, seed=0), data / layout.SPLIT_FILE)
    cfg = preprocess.PreprocessConfig.from_preset("quick", target_spacing=None, grid_inplane=(128, 96), mask_backend="given",
                                 n4_3t=False, n4_7t=False, qc_figure=False)
    der = folder / "derivatives"
    table = preprocess.preprocess_dataset(data, cfg, n_jobs=1, progress=False, out_root=der)
    if not (table["status"] == "done").all():
        raise RuntimeError(f"preprocessing the benchmark's cohort failed:\n{table}")
    return slices.build_cache(der, folder / "cache", layout.discover(data), split_file=data / layout.SPLIT_FILE,
                              progress=False)


class TextbookStep:
    """The baseline: a plain fp32 eager training step of copies of the trainer's networks, with the same loss objects
    and Adam settings, on the same batch (a GAN preset: the critic's BCE + gradient penalty, then the generator)."""

    def __init__(self, trainer):
        cfg = trainer.cfg
        self.trainer = trainer
        self.g = copy.deepcopy(trainer.generator).to(memory_format=torch.contiguous_format)
        self.opt_g = torch.optim.Adam(self.g.parameters(), lr=cfg.lr_g, betas=tuple(cfg.betas_g))
        self.c = copy.deepcopy(trainer.critic) if trainer.critic is not None else None
        if self.c is not None:
            self.c = self.c.to(memory_format=torch.contiguous_format)
            self.opt_c = torch.optim.Adam(self.c.parameters(), lr=cfg.lr_d, betas=tuple(cfg.betas_d))

    def __call__(self, batch: dict) -> None:
        from synth7t.training.losses import critic_loss
        from synth7t.training.trainer import frozen

        cfg = self.trainer.cfg
        x, y, ctx = (batch[k].contiguous() for k in ("x", "y", "context"))
        if self.c is not None:
            self.opt_c.zero_grad(set_to_none=True)
            with torch.no_grad():
                fake = self.g(x, ctx)
            d_loss = critic_loss(self.c, y, fake, lambda_gp=cfg.lambda_gp, objective=cfg.adversarial)
            (d_loss[0] if isinstance(d_loss, tuple) else d_loss).backward()
            self.opt_c.step()
        self.opt_g.zero_grad(set_to_none=True)
        with frozen(self.c):
            total, _ = self.trainer.loss(self.g(x, ctx), y, critic=self.c,
                                         lambda_gan=cfg.lambda_gan if self.c is not None else None)
        total.backward()
        self.opt_g.step()


def train_rates(trainer, steps: int, warmup: int = 2) -> tuple[float, float]:
    """Slices per second of the trainer's step and of :class:`TextbookStep`, alternating, on one batch."""
    batch = trainer._batch(0, 0)
    n = int(batch["x"].shape[0])
    base = TextbookStep(trainer)
    device = trainer.device
    times = {"trainer": 0.0, "textbook": 0.0}
    trainer.generator.train()
    for i in range(warmup + steps):
        for name, step in (("trainer", trainer._train_batch), ("textbook", base)):
            _sync(device)
            t0 = time.perf_counter()
            step(batch)
            _sync(device)
            if i >= warmup:
                times[name] += time.perf_counter() - t0
    return steps * n / times["trainer"], steps * n / times["textbook"]


def plain_predict_seconds(model, device, depth, hw, batch_size) -> float:
    """A plain loop over the volume's slices: contiguous tensors, fp32, no skipping."""
    from synth7t.models import make_context

    stack = torch.rand(depth + 2, 1, *hw, device=device)
    _sync(device)
    t0 = time.perf_counter()
    with torch.no_grad():
        for z0 in range(1, depth + 1, batch_size):
            zs = list(range(z0, min(depth + 1, z0 + batch_size)))
            x = torch.cat([torch.cat([stack[z - 1], stack[z], stack[z + 1]])[None] for z in zs])
            model(x, make_context([70.0] * len(zs), ["F"] * len(zs), [0] * len(zs), [0.0] * len(zs)).to(device))
    _sync(device)
    return time.perf_counter() - t0


def predict_seconds(model, device, depth, hw, batch_size) -> float:
    from synth7t.inference.volume import predict_volume

    vol = np.random.default_rng(0).random((hw[1], hw[0], depth), dtype=np.float32)
    _sync(device)
    t0 = time.perf_counter()
    predict_volume(model, vol, age=70, sex="F", impaired=False, bottom=5, top=depth - 5, batch_size=batch_size)
    _sync(device)
    return time.perf_counter() - t0


def main(argv=None) -> int:
    from synth7t.training import trainer
    from synth7t.training import config as tconf
    from synth7t.models import build_model
    from synth7t.models.facts import model_facts
    from synth7t.inference.volume import default_batch_size

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="demo-cpu", help="training preset (synth7t.training.config)")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=JSON",
                    help="training-config overrides, e.g. compile=true amp='\"off\"' batch_size=4")
    ap.add_argument("--cache", default="", help="a slice cache (e.g. runs/demo/02_train/cache); empty: build a "
                                                "small simulated one in a temporary folder")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--height", type=int, default=288, help="prediction slices: height")
    ap.add_argument("--width", type=int, default=224, help="prediction slices: width")
    ap.add_argument("--depth", type=int, default=48, help="slices of the predicted volume (270 on GPU)")
    ap.add_argument("--predict-batch", type=int, default=0,
                    help="slices per pass of the batched prediction (0: the library's default_batch_size)")
    ap.add_argument("--peak-tflops", type=float, default=989.0, help="bf16 dense peak (H100 SXM: 989)")
    a = ap.parse_args(argv)
    device = torch.device(a.device)
    overrides = {k: json.loads(v) for k, v in (item.split("=", 1) for item in a.set)}
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        cache = Path(a.cache) if a.cache else small_cache(Path(tmp))
        cfg = tconf.TrainConfig.from_preset(a.preset, device=a.device, **overrides)
        trainer = trainer.Trainer(cfg, cache, Path(tmp) / "run", progress=False, resume=False)
        batch = trainer._batch(0, 0)
        hw = tuple(int(v) for v in batch["x"].shape[-2:])
        facts = model_facts(cfg.model, height=hw[0], width=hw[1])
        print(f"{a.preset} ({cfg.model}{', critic ' + cfg.discriminator if cfg.gan else ''}) on {device} "
              f"({torch.get_num_threads()} threads): {facts['params'] / 1e6:.2f} M params, {facts['gflops']:.1f} "
              f"GFLOP/slice at {hw[0]}x{hw[1]}, batch {trainer.rank_batch}, amp={cfg.amp}, compile={cfg.compile}, "
              f"channels_last={cfg.channels_last}, lambda_perc={cfg.lambda_perc}")
        ours, textbook = train_rates(trainer, a.steps)
    print(f"train   textbook fp32 eager step: {textbook:8.2f} slices/s | Trainer._train_batch: {ours:8.2f} slices/s"
          f" | ratio {ours / textbook:.2f}x")
    if device.type == "cuda":
        mfu = 3 * facts["gflops"] * 1e9 * ours / (a.peak_tflops * 1e12)
        print(f"        model FLOP utilisation: {100 * mfu:.1f}% of {a.peak_tflops:.0f} TFLOP/s")
    torch.manual_seed(0)
    model = build_model(cfg.model).to(device).eval()
    b = a.predict_batch or default_batch_size(device)
    hw = (a.height, a.width)
    one = plain_predict_seconds(model, device, a.depth, hw, 1)
    plain = plain_predict_seconds(model, device, a.depth, hw, b)
    lib_model = model.to(memory_format=torch.channels_last) if device.type == "cpu" else model  # as load_model
    ours = predict_seconds(lib_model, device, a.depth, hw, b)
    print(f"predict naive 1 slice/pass: {one:7.2f} s | plain batch {b}: {plain:7.2f} s | synth7t batch {b}: "
          f"{ours:7.2f} s | ratio {one / ours:.2f}x vs naive, {plain / ours:.2f}x vs plain  "
          f"({a.depth} slices of {a.height}x{a.width})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
