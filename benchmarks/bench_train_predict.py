"""Throughput benchmark: training slices/s and prediction seconds per volume, against naive baselines.

Run: ``python benchmarks/bench_train_predict.py`` (CPU, demo-cpu preset) or on a GPU node
``python benchmarks/bench_train_predict.py --preset paper-unet --device cuda``.

Each figure is printed with the ratio to a naive loop measured in the same process on the same model:
- training: our step (bf16 autocast and optionally torch.compile on GPU; fp32 eager on CPU) against a plain
  fp32 eager step; on GPU also the model FLOP utilisation (3 x forward FLOPs per slice / time / peak);
- prediction: our slice loop (synth7t.predict.predict_volume, with the model as synth7t.predict.load_model
  prepares it: channels-last weights on a CPU) against a plain contiguous loop of one slice per forward pass, and
  against the same plain loop at the same batch size (what the memory format alone buys).
Inputs are random tensors of the real shapes (3 x H x W slices, a D-slice volume): this measures the model
and the loop, not disk reads.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def train_rate(model, device, batch, hw, steps, *, amp: bool, compile_: bool, warmup: int = 2) -> float:
    from synth7t.losses import l1_loss

    g = torch.compile(model) if compile_ else model
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    x = torch.rand(batch, 3, *hw, device=device)
    y = torch.rand(batch, 1, *hw, device=device)
    c = torch.tensor([[70.0, 1.0, 0.0, 0.0]] * batch, device=device)
    ctx = torch.autocast("cuda", dtype=torch.bfloat16) if (amp and device.type == "cuda") else torch.autocast(
        "cpu", enabled=False)
    for i in range(warmup + steps):
        if i == warmup:
            _sync(device)
            t0 = time.perf_counter()
        with ctx:
            pred = g(x, c)
        loss = l1_loss(pred.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    _sync(device)
    return steps * batch / (time.perf_counter() - t0)


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
    from synth7t.predict import predict_volume

    vol = np.random.default_rng(0).random((hw[1], hw[0], depth), dtype=np.float32)
    _sync(device)
    t0 = time.perf_counter()
    predict_volume(model, vol, age=70, sex="F", impaired=False, bottom=5, top=depth - 5, batch_size=batch_size)
    _sync(device)
    return time.perf_counter() - t0


def main(argv=None) -> int:
    from synth7t.models import build_model
    from synth7t.models.facts import model_facts

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="demo-cpu")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--height", type=int, default=288)
    ap.add_argument("--width", type=int, default=224)
    ap.add_argument("--train-crop", type=int, nargs=2, default=None, help="train on crops (CPU): e.g. 96 96")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--depth", type=int, default=48, help="slices of the predicted volume (270 on GPU)")
    ap.add_argument("--predict-batch", type=int, default=0,
                    help="slices per pass of the batched prediction (0: the library's default, 2 on CPU, 32 on GPU)")
    ap.add_argument("--peak-tflops", type=float, default=989.0, help="bf16 dense peak (H100 SXM: 989)")
    ap.add_argument("--compile", action="store_true")
    a = ap.parse_args(argv)
    device = torch.device(a.device)
    torch.manual_seed(0)
    model = build_model(a.preset).to(device)
    hw = tuple(a.train_crop) if a.train_crop else (a.height, a.width)
    facts = model_facts(a.preset, height=hw[0], width=hw[1])
    print(f"{a.preset} on {device} ({torch.get_num_threads()} threads): {facts['params'] / 1e6:.2f} M params, "
          f"{facts['gflops']:.1f} GFLOP/slice at {hw[0]}x{hw[1]}")
    naive = train_rate(model, device, a.batch, hw, a.steps, amp=False, compile_=False)
    ours = train_rate(model, device, a.batch, hw, a.steps, amp=True, compile_=a.compile)
    print(f"train   naive fp32 eager: {naive:8.2f} slices/s | synth7t step: {ours:8.2f} slices/s | "
          f"ratio {ours / naive:.2f}x")
    if device.type == "cuda":
        mfu = 3 * facts["gflops"] * 1e9 * ours / (a.peak_tflops * 1e12)
        print(f"        model FLOP utilisation: {100 * mfu:.1f}% of {a.peak_tflops:.0f} TFLOP/s")
    from synth7t.predict import default_batch_size

    model.eval()
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
