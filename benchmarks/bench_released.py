"""Seconds per slice of the authors' released network (full size, random weights), fp32 against bf16 channels-last.

An imported model of the authors (``synth7t import-model``) is a 259 M-parameter 2D U-Net
(``released-unet-nodiag``; the GAN's is ``released-gan-nodiag``, 222 M) that predicts every slice of a volume on its
7T template's grid. This times its forward pass on one 288 x 224 slice (the paper's slice size), in the same
process: fp32 contiguous (the baseline), fp32 channels-last and bf16 autocast channels-last, and prints each one's
seconds per slice, its ratio to the baseline and the minutes of a 270-slice volume. The weights are random (the
released ones cannot be downloaded here); the arithmetic is the same. ``benchmarks/gpu_check.py`` calls
:func:`measure` on the GPU.

    python benchmarks/bench_released.py [--preset released-unet-nodiag] [--repeats 2] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any, Dict, Optional, Sequence

import torch

from synth7t.models import build_model, get_model_config
from synth7t.models.facts import model_facts

SLICES_PER_VOLUME = 270


def _time(fn, repeats: int, device: torch.device) -> float:
    fn()  # warm-up (oneDNN primitive creation, CUDA kernels)
    if device.type == "cuda":
        torch.cuda.synchronize()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best


def measure(preset: str = "released-unet-nodiag", device: str = "cpu", repeats: int = 2, batch: int = 1,
            height: int = 288, width: int = 224) -> Dict[str, Any]:
    """Forward seconds per slice of ``preset`` with random weights: fp32, fp32 channels-last, bf16 channels-last.

    Returns:
        dict of ``preset``, ``device``, ``params``, ``gflops_per_slice`` and per variant ``seconds_per_slice`` and
        ``ratio`` (to fp32 contiguous), plus the bf16 output's largest difference from fp32 on the same input.
    """
    dev = torch.device(device)
    cfg = get_model_config(preset)
    torch.manual_seed(0)
    net = build_model(preset).to(dev).eval()
    x = torch.rand(batch, cfg.in_channels, height, width, device=dev)
    tokens = torch.tensor([[70.0], [1.0], [0.1]], device=dev)[None].expand(batch, -1, -1)[:, :len(cfg.tokens)]
    facts = model_facts(preset, height, width)
    out: Dict[str, Any] = {"preset": preset, "device": str(dev), "threads": torch.get_num_threads(),
                           "height": height, "width": width,
                           "params": facts["params"], "gflops_per_slice": round(facts["gflops"], 1), "variants": {}}
    results = {}
    with torch.no_grad():
        for name, layout, bf16 in (("fp32", torch.contiguous_format, False),
                                   ("fp32 channels-last", torch.channels_last, False),
                                   ("bf16 channels-last", torch.channels_last, True)):
            model = net.to(memory_format=layout)
            xi = x.contiguous(memory_format=layout)

            def run():
                with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
                    results[name] = model(xi, tokens).float()

            seconds = _time(run, repeats, dev) / batch
            out["variants"][name] = {"seconds_per_slice": round(seconds, 3),
                                     "minutes_per_volume": round(seconds * SLICES_PER_VOLUME / 60, 1)}
    base = out["variants"]["fp32"]["seconds_per_slice"]
    for v in out["variants"].values():
        v["ratio"] = round(base / v["seconds_per_slice"], 2)
    out["bf16_max_abs_difference"] = float((results["bf16 channels-last"] - results["fp32"]).abs().max())
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="released-unet-nodiag")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", default=None, help="also write the numbers as JSON")
    args = ap.parse_args(argv)
    r = measure(args.preset, args.device, args.repeats)
    print(f"{r['preset']} on {r['device']} ({r['threads']} threads): {r['params'] / 1e6:.0f} M parameters, "
          f"{r['gflops_per_slice']:.0f} GFLOP per 288 x 224 slice")
    for name, v in r["variants"].items():
        print(f"  {name:20s} {v['seconds_per_slice']:8.3f} s/slice  {v['ratio']:5.2f}x  "
              f"{v['minutes_per_volume']:6.1f} min per {SLICES_PER_VOLUME}-slice volume")
    print(f"  bf16 - fp32 output: max abs {r['bf16_max_abs_difference']:.2e} (random weights)")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(r, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
