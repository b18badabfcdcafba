"""GPU check: training MFU and whole-volume prediction time of the paper presets, against fp32 eager.

Run on a GPU node: ``python benchmarks/gpu_check.py`` (``--steps 20 --batch 7 --no-compile --peak-tflops 989
--out gpu_check.json``). For each of ``paper-unet`` and ``paper-gan`` it measures, in one process:

- training: ``--steps`` steps (after ``--warmup`` steps that are not timed and that include the compilation) of
  the trainer's step (``synth7t.training.trainer.Trainer._train_batch``, rewritten here without a slice cache): the
  generator in bf16 autocast (and ``torch.compile`` unless ``--no-compile``), the real losses of the training
  preset (L1 + perceptual with the offline ``efficientnet_lite0`` backbone; for the GAN also the patch critic's
  step with ``synth7t.training.losses.critic_loss`` and the adversarial term), Adam, on random 3 x 288 x 224 slices with
  context vectors, at the paper's per-GPU batch (56 over 8 GPUs = 7). Reported: slices/s, achieved TFLOP/s
  and MFU, peak memory (``torch.cuda.max_memory_allocated``);
- prediction: one 0.7 mm volume of 270 axial slices of 288 x 224 through ``synth7t.inference.volume.predict_volume``,
  with a brain mask that touches every slice (so all 270 slices pass through the network: the worst case), at
  the library's GPU batch (``synth7t.inference.volume.default_batch_size``), bf16 autocast (+ compile). Reported:
  seconds per volume (median of ``--repeats`` runs after an untimed warm-up on a slab of the volume) and peak
  memory;

each beside the same measurement in plain fp32 eager (no autocast, no compile, torch's default TF32 settings,
which the JSON records), with the ratio. Then the authors' released network (what ``synth7t import-model``
builds, random weights): forward seconds per slice in fp32 and bf16 channels-last (``bench_released.py``). Targets: training >= 40 % MFU, prediction <= 3 s per 270-slice volume
on one H100/H200.

FLOPs are *model* FLOPs from ``synth7t.models.facts.model_facts`` (matmuls, convolutions and attention, 2 FLOPs
per multiply-add, counted on the meta device): a forward + backward pass counts 3 x the forward FLOPs. Per
training slice: U-Net ``3 F_g``; GAN, per critic step ``F_g`` (the detached fake) + ``3 x 3 F_d`` (critic on
real, fake and interpolates) and per generator step ``3 F_g + 3 F_d`` (generator, and the critic's adversarial
term). The perceptual backbone and the gradient penalty's double backward are not counted, so MFU is a lower
bound. MFU divides by the device's dense bf16 peak (:data:`PEAK_BF16_TFLOPS`, or ``--peak-tflops``).

Without CUDA (or with ``--cpu``) it runs tiny sizes instead (the ``demo-cpu`` and ``demo-cpu-gan`` presets,
2 steps of 96 x 96 slices, a 32-slice volume of 96 x 96, bf16 autocast on the CPU, no compile) and says that
these are CPU numbers, not the GPU check: it shows that the script works, not how fast a GPU is.

Output: a Markdown table on stdout and a JSON file (``--out``). Exit status 0 when every measurement ran and
every target that applies passed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

#: Dense (no sparsity) bf16 tensor-core peaks in TFLOP/s, matched in this order against
#: ``torch.cuda.get_device_name()`` (case-insensitive substrings; more specific names first).
PEAK_BF16_TFLOPS: Tuple[Tuple[str, float], ...] = (
    ("GH200", 989.0),
    ("H200", 989.0),
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.0),  # SXM5 (the name reads "H100 80GB HBM3")
    ("B200", 2250.0),
    ("A100", 312.0),
    ("A800", 312.0),
    ("L40S", 362.0),
    ("L40", 181.0),
    ("L4", 121.0),
    ("A10", 125.0),
)

#: Training must reach this model FLOP utilisation (fraction of the bf16 dense peak).
TARGET_MFU = 0.40
#: Prediction of one 270-slice 0.7 mm volume must take at most this many seconds on one H100/H200.
TARGET_PREDICT_S = 3.0
#: Devices the prediction target is stated for.
TARGET_PREDICT_DEVICES = ("H100", "H200")


@dataclass
class Plan:
    """What one run measures.

    Attributes:
        mode: ``"gpu"`` (the check) or ``"cpu"`` (tiny sizes that show the script works).
        device: where everything runs.
        presets: ``(generator preset, training preset)`` pairs, e.g. ``("paper-gan", "paper-gan")``.
        height, width: training slice size (and the predicted volume's axial slice size).
        batch: slices per training step.
        steps: timed training steps.
        warmup: untimed training steps before them (compilation happens there).
        n_critic: critic steps per generator step of the GAN (1: the paper's first epoch; 5 afterwards).
        depth: axial slices of the predicted volume.
        predict_batch: slices per forward pass in prediction.
        repeats: timed prediction runs (median reported) after an untimed warm-up slab.
        compile: ``torch.compile`` the generator in the measured (non-baseline) configuration.
        peak_tflops: dense bf16 peak used for MFU (None: unknown, no MFU).
        peak_source: where ``peak_tflops`` came from.
        notes: sentences printed under the table.
    """

    mode: str
    device: torch.device
    presets: List[Tuple[str, str]]
    height: int
    width: int
    batch: int
    steps: int
    warmup: int
    n_critic: int
    depth: int
    predict_batch: int
    repeats: int
    compile: bool
    peak_tflops: Optional[float]
    peak_source: str
    notes: List[str] = field(default_factory=list)


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on a CPU), so that wall-clock times are complete."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def known_peak_tflops(device_name: str) -> Optional[Tuple[str, float]]:
    """The dense bf16 peak of a device from :data:`PEAK_BF16_TFLOPS`.

    Args:
        device_name: e.g. ``"NVIDIA H100 80GB HBM3"``.

    Returns:
        ``(matched table entry, TFLOP/s)``, or None for a device the table does not know.
    """
    name = device_name.lower()
    for key, tflops in PEAK_BF16_TFLOPS:
        if key.lower() in name:
            return key, tflops
    return None


def free_memory(device: torch.device) -> None:
    """Release what the previous measurement left, and restart the peak-memory counter."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_gib(device: torch.device) -> Optional[float]:
    """``torch.cuda.max_memory_allocated`` in GiB since the last :func:`free_memory`; None on a CPU."""
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 2**30


def autocast_for(device: torch.device, amp: bool):
    """bf16 autocast on the device when ``amp``, else a context that changes nothing."""
    if amp:
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def random_batch(model_config, batch: int, height: int, width: int, device: torch.device,
                 seed: int = 0) -> Dict[str, torch.Tensor]:
    """Random inputs of the real shapes: ``x`` (B, n_in, H, W), ``y`` (B, 1, H, W) in [0, 1), ``context`` (B, 4).

    The context holds plausible ages, both sexes, both diagnoses and slice locations across the brain.
    """
    from synth7t.models import make_context

    g = torch.Generator().manual_seed(seed)
    n_in = getattr(model_config, "n_input_slices", 3)
    x = torch.rand(batch, n_in, height, width, generator=g)
    y = torch.rand(batch, 1, height, width, generator=g)
    ages = (55 + 30 * torch.rand(batch, generator=g)).tolist()
    context = make_context(ages, [i % 2 for i in range(batch)], [(i // 2) % 2 for i in range(batch)],
                           torch.linspace(-0.9, 0.9, batch).tolist())
    return {"x": x.to(device), "y": y.to(device), "context": context.to(device)}


def training_flops_per_slice(plan: Plan, gen_gflops: float, critic_gflops: Optional[float]) -> float:
    """Model FLOPs of one training slice (see the module docstring), averaged over ``n_critic`` batches."""
    f_g = gen_gflops * 1e9
    if critic_gflops is None:
        return 3 * f_g
    f_d = critic_gflops * 1e9
    critic_step = f_g + 3 * 3 * f_d
    generator_step = 3 * f_g + 3 * f_d
    return critic_step + generator_step / plan.n_critic


def measure_training(plan: Plan, gen_preset: str, train_preset: str, *, amp: bool, compile_: bool,
                     perceptual: Optional[torch.nn.Module]) -> Dict[str, Any]:
    """Time ``plan.steps`` training steps (after ``plan.warmup``) of one model in one configuration.

    The step is the trainer's: for a GAN, a critic step on every batch (the fake made without gradients,
    ``critic_loss`` in fp32) and a generator step every ``n_critic``-th batch; the generator's forward pass
    under autocast, its loss (``GeneratorLoss``: L1, perceptual, adversarial) on the fp32 output.

    Returns:
        ``slices_per_s``, ``seconds``, ``warmup_s`` (includes compilation), ``peak_memory_gib``.
    """
    from synth7t.training.losses import GeneratorLoss, critic_loss
    from synth7t.models import build_discriminator, build_model, get_model_config
    from synth7t.training.config import TrainConfig

    device = plan.device
    cfg = TrainConfig.from_preset(train_preset)
    free_memory(device)
    torch.manual_seed(0)
    model_config = get_model_config(gen_preset)
    generator = build_model(model_config).to(device).train()
    critic = build_discriminator(cfg.discriminator).to(device).train() if cfg.gan else None
    opt_g = torch.optim.Adam(generator.parameters(), lr=cfg.lr_g, betas=tuple(cfg.betas_g))
    opt_d = (torch.optim.Adam(critic.parameters(), lr=cfg.lr_d, betas=tuple(cfg.betas_d))
             if critic is not None else None)
    loss_fn = GeneratorLoss(perceptual if cfg.lambda_perc > 0 else None, lambda_perc=cfg.lambda_perc,
                            lambda_gan=cfg.lambda_gan if cfg.gan else 0.0)
    g = torch.compile(generator) if compile_ else generator
    data = random_batch(model_config, plan.batch, plan.height, plan.width, device)
    lam = cfg.lambda_gan if cfg.gan else None

    def step(i: int) -> None:
        if critic is not None:
            with torch.no_grad(), autocast_for(device, amp):
                fake = g(data["x"], data["context"]).float()
            d_loss = critic_loss(critic, data["y"], fake, lambda_gp=cfg.lambda_gp)
            d_loss = d_loss[0] if isinstance(d_loss, tuple) else d_loss
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()
            if (i + 1) % plan.n_critic:
                return
        with autocast_for(device, amp):
            pred = g(data["x"], data["context"])
        total, _ = loss_fn(pred.float(), data["y"], critic=critic, lambda_gan=lam)
        opt_g.zero_grad(set_to_none=True)
        total.backward()
        opt_g.step()

    sync(device)
    t0 = time.perf_counter()
    for i in range(plan.warmup):
        step(i)
    sync(device)
    t1 = time.perf_counter()
    for i in range(plan.warmup, plan.warmup + plan.steps):
        step(i)
    sync(device)
    seconds = time.perf_counter() - t1
    out = {"slices_per_s": plan.steps * plan.batch / seconds, "seconds": seconds, "warmup_s": t1 - t0,
           "peak_memory_gib": peak_memory_gib(device)}
    return out  # the models and optimisers go with this frame; the next measurement's free_memory releases them


def synthetic_volume(depth: int, height: int, width: int, seed: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    """A random 3T volume ``(X=width, Y=height, Z=depth)`` and an ellipsoid brain mask that touches every axial
    slice (so every slice is predicted), as ``predict_volume`` takes them."""
    rng = np.random.default_rng(seed)
    vol = rng.random((width, height, depth), dtype=np.float32)
    x, y, z = np.meshgrid(np.linspace(-1, 1, width), np.linspace(-1, 1, height),
                          np.linspace(-1, 1, depth), indexing="ij")
    mask = ((x / 0.9) ** 2 + (y / 0.9) ** 2 + (z / 1.05) ** 2) <= 1.0
    return vol, mask


def measure_prediction(plan: Plan, gen_preset: str, *, amp: bool, compile_: bool) -> Dict[str, Any]:
    """Seconds to predict one ``plan.depth``-slice volume with ``predict_volume`` (median of ``plan.repeats``
    runs after an untimed run on a slab of the volume, which compiles both of its batch shapes).

    The model is compiled in place (``nn.Module.compile``) because ``predict_volume`` needs the
    ``ConditionalUNet`` itself, not a wrapper, to pass the context. On a CPU its weights are channels-last, as
    ``synth7t.inference.load_model`` prepares them.

    Returns:
        ``seconds`` (median), ``runs`` (every timed run), ``slices``, ``peak_memory_gib``.
    """
    from synth7t.models import build_model
    from synth7t.inference.volume import predict_volume

    device = plan.device
    free_memory(device)
    torch.manual_seed(0)
    model = build_model(gen_preset).to(device).eval()
    if device.type == "cpu":
        model = model.to(memory_format=torch.channels_last)
    if compile_:
        model.compile()
    vol, mask = synthetic_volume(plan.depth, plan.height, plan.width)
    n_slices = int(mask.any(axis=(0, 1)).sum())

    def run(depth: int) -> float:
        sync(device)
        t0 = time.perf_counter()
        with autocast_for(device, amp):
            predict_volume(model, vol[..., :depth], age=70.0, sex="F", impaired=False, bottom=0,
                           top=plan.depth - 1, mask=mask[..., :depth], batch_size=plan.predict_batch)
        sync(device)
        return time.perf_counter() - t0

    # warm-up on a slab with one full batch and one of the volume's last, shorter batch: the allocator, and the
    # compilation of both batch shapes, are done before the clock starts
    b = plan.predict_batch
    run(min(plan.depth, b + plan.depth % b))
    runs = [run(plan.depth) for _ in range(plan.repeats)]
    out = {"seconds": statistics.median(runs), "runs": runs, "slices": n_slices,
           "peak_memory_gib": peak_memory_gib(device)}
    return out


def guarded(fn: Callable[..., Dict[str, Any]], *args: Any, **kwargs: Any) -> Dict[str, Any]:
    """Run one measurement, ``fn(*args, **kwargs)``; an out-of-memory or any other failure becomes
    ``{"error": ...}`` so that the other measurements still run (and the exit status says that one failed)."""
    try:
        return fn(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 - reported in the table and the JSON, and in the exit status
        msg = " ".join(str(exc).split())[:300]
        return {"error": f"{type(exc).__name__}: {msg}"}


def check_model(plan: Plan, gen_preset: str, train_preset: str, perceptual) -> Dict[str, Any]:
    """Every measurement of one model: training and prediction, ours and fp32 eager, with FLOPs and MFU."""
    from synth7t.models.facts import model_facts
    from synth7t.training.config import TrainConfig

    cfg = TrainConfig.from_preset(train_preset)
    gen_facts = model_facts(gen_preset, height=plan.height, width=plan.width)
    critic_facts = (model_facts(f"discriminator:{cfg.discriminator}", height=plan.height, width=plan.width)
                    if cfg.gan else None)
    flops = training_flops_per_slice(plan, gen_facts["gflops"], critic_facts["gflops"] if critic_facts else None)
    result: Dict[str, Any] = {
        "preset": gen_preset, "train_preset": train_preset, "gan": bool(cfg.gan),
        "params": gen_facts["params"], "gflops_forward_per_slice": gen_facts["gflops"],
        "critic": cfg.discriminator if cfg.gan else None,
        "critic_gflops_forward_per_slice": critic_facts["gflops"] if critic_facts else None,
        "train_tflop_per_slice": flops / 1e12,
        "losses": {"l1": 1.0, "perceptual": cfg.perceptual if cfg.lambda_perc > 0 else None,
                   "lambda_perc": cfg.lambda_perc, "lambda_gan": cfg.lambda_gan if cfg.gan else 0.0},
    }
    for label, amp, compile_ in (("fp32_eager", False, False), ("ours", True, plan.compile)):
        train = guarded(measure_training, plan, gen_preset, train_preset, amp=amp, compile_=compile_,
                        perceptual=perceptual)
        if "error" not in train:
            train["tflops"] = flops * train["slices_per_s"] / 1e12
            train["mfu"] = train["tflops"] / plan.peak_tflops if plan.peak_tflops else None
        pred = guarded(measure_prediction, plan, gen_preset, amp=amp, compile_=compile_)
        result[label] = {"train": train, "predict": pred}
    return result


def evaluate_targets(plan: Plan, device_name: str, models: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """One row per target and model: value, limit and ``passed`` (True/False), or None when it does not apply."""
    rows = []
    predict_device = any(k.lower() in device_name.lower() for k in TARGET_PREDICT_DEVICES)
    for m in models:
        train, pred = m["ours"]["train"], m["ours"]["predict"]
        mfu = train.get("mfu")
        if plan.mode != "gpu":
            why = "CPU numbers: the targets are for a GPU"
        elif "error" in train:
            why = "training failed"
        elif mfu is None:
            why = "unknown bf16 peak: pass --peak-tflops"
        else:
            why = None
        rows.append({"preset": m["preset"], "target": f"training MFU >= {100 * TARGET_MFU:.0f} %",
                     "value": mfu, "passed": None if why else bool(mfu >= TARGET_MFU), "why_not_checked": why})
        seconds = pred.get("seconds")
        if plan.mode != "gpu":
            why = "CPU numbers: the targets are for a GPU"
        elif "error" in pred:
            why = "prediction failed"
        elif not predict_device or plan.depth != 270 or (plan.height, plan.width) != (288, 224):
            why = "stated for a 270-slice 288 x 224 volume on one H100/H200"
        else:
            why = None
        rows.append({"preset": m["preset"], "target": f"prediction <= {TARGET_PREDICT_S:g} s per 270-slice volume",
                     "value": seconds, "passed": None if why else bool(seconds <= TARGET_PREDICT_S),
                     "why_not_checked": why})
    return rows


def _fmt(value: Optional[float], spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def _cell(measurement: Dict[str, Any], key: str, spec: str, scale: float = 1.0) -> str:
    if "error" in measurement:
        return "failed"
    value = measurement.get(key)
    return _fmt(None if value is None else value * scale, spec)


def _ratio(ours: Dict[str, Any], base: Dict[str, Any], key: str, inverse: bool = False) -> str:
    a, b = ours.get(key), base.get(key)
    if a is None or b is None or not a or not b:
        return "n/a"
    return f"{(b / a) if inverse else (a / b):.2f}x"


def _verdict(target: Optional[Dict[str, Any]]) -> Tuple[str, str]:
    if target is None:
        return "", ""
    status = {True: "PASS", False: "FAIL", None: "not checked"}[target["passed"]]
    return target["target"], status


def markdown_report(plan: Plan, env: Dict[str, Any], models: Sequence[Dict[str, Any]],
                    targets: Sequence[Dict[str, Any]]) -> str:
    """The Markdown printed on stdout: a header (device, peak used, conventions), the table, notes."""
    ours_label = "bf16 autocast" + (" + compile" if plan.compile else "")
    lines = []
    if plan.mode == "cpu":
        lines += ["**CPU numbers, not the GPU check.** " + plan.notes[0], ""]
    else:
        lines += ["## synth7t GPU check", ""]
    peak = (f"{plan.peak_tflops:g} TFLOP/s dense bf16 ({plan.peak_source})" if plan.peak_tflops
            else f"unknown ({plan.peak_source}): MFU not computed")
    lines += [f"- device: {env['device_name']} ({env['device']}), torch {env['torch']}",
              f"- peak used for MFU: {peak}",
              f"- training: {plan.steps} timed steps after {plan.warmup} warm-up steps, batch {plan.batch}, "
              f"{plan.height}x{plan.width} slices" + (f", GAN n_critic {plan.n_critic}" if
                                                      any(m["gan"] for m in models) else ""),
              f"- prediction: {plan.depth}-slice volume of {plan.height}x{plan.width}, batch {plan.predict_batch}, "
              f"median of {plan.repeats} run(s) after an untimed warm-up slab",
              "- FLOPs: model FLOPs from model_facts; forward + backward = 3 x forward (see the JSON for the "
              "per-slice count; perceptual backbone and gradient-penalty double backward not counted)",
              "- ratio: speed-up over fp32 eager (throughput, or time for s/volume); memory: ours / fp32", ""]
    lines += [f"| model | measurement | {ours_label} | fp32 eager | ratio | target | result |",
              "|---|---|---|---|---|---|---|"]
    by_key = {(t["preset"], t["target"].split()[0]): t for t in targets}
    for m in models:
        ot, bt = m["ours"]["train"], m["fp32_eager"]["train"]
        op, bp = m["ours"]["predict"], m["fp32_eager"]["predict"]
        name = m["preset"]
        mfu_target = _verdict(by_key.get((name, "training")))
        pred_target = _verdict(by_key.get((name, "prediction")))
        rows = [
            ("train slices/s", _cell(ot, "slices_per_s", ".2f"), _cell(bt, "slices_per_s", ".2f"),
             _ratio(ot, bt, "slices_per_s"), ("", "")),
            ("train TFLOP/s (3 x fwd)", _cell(ot, "tflops", ".3g"), _cell(bt, "tflops", ".3g"),
             _ratio(ot, bt, "tflops"), ("", "")),
            ("train MFU %", _cell(ot, "mfu", ".1f", 100), _cell(bt, "mfu", ".1f", 100), _ratio(ot, bt, "mfu"),
             mfu_target),
            ("train peak memory GiB", _cell(ot, "peak_memory_gib", ".1f"), _cell(bt, "peak_memory_gib", ".1f"),
             _ratio(ot, bt, "peak_memory_gib"), ("", "")),
            ("train warm-up s (compile)", _cell(ot, "warmup_s", ".1f"), _cell(bt, "warmup_s", ".1f"), "", ("", "")),
            (f"predict s/volume ({plan.depth} slices)", _cell(op, "seconds", ".2f"), _cell(bp, "seconds", ".2f"),
             _ratio(op, bp, "seconds", inverse=True), pred_target),
            ("predict peak memory GiB", _cell(op, "peak_memory_gib", ".1f"), _cell(bp, "peak_memory_gib", ".1f"),
             _ratio(op, bp, "peak_memory_gib"), ("", "")),
        ]
        for i, (what, a, b, r, (target, verdict)) in enumerate(rows):
            label = f"{name} ({m['params'] / 1e6:.1f} M)" if i == 0 else ""
            lines.append(f"| {label} | {what} | {a} | {b} | {r} | {target} | {verdict} |")
    errors = [(m["preset"], label, kind, m[label][kind]["error"]) for m in models
              for label in ("ours", "fp32_eager") for kind in ("train", "predict") if "error" in m[label][kind]]
    if errors:
        lines += ["", "Failures:"] + [f"- {p} {label} {kind}: {e}" for p, label, kind, e in errors]
    not_checked = sorted({t["why_not_checked"] for t in targets if t["why_not_checked"]})
    if not_checked:
        lines += ["", "Targets not checked: " + "; ".join(not_checked) + "."]
    if plan.notes[1:] or plan.mode == "gpu":
        lines += [""] + [f"- {n}" for n in plan.notes[(1 if plan.mode == "cpu" else 0):]]
    return "\n".join(lines).rstrip() + "\n"


def make_plan(args: argparse.Namespace) -> Tuple[Plan, Dict[str, Any]]:
    """Resolve the mode (GPU check or CPU smoke sizes), the sizes and the peak from the arguments."""
    from synth7t.inference.volume import default_batch_size

    gpu = torch.cuda.is_available() and not args.cpu
    device = torch.device("cuda") if gpu else torch.device("cpu")
    if gpu:
        name = torch.cuda.get_device_name(device)
        presets = [(p, p) for p in (args.models or ["paper-unet", "paper-gan"])]
        sizes = dict(height=288, width=224, batch=args.batch or 7, steps=args.steps or 20,
                     warmup=args.warmup if args.warmup is not None else 3, depth=270, repeats=args.repeats or 3)
    else:
        name = platform.processor() or platform.machine() or "CPU"
        presets = [(p, p) for p in (args.models or ["demo-cpu", "demo-cpu-gan"])]
        sizes = dict(height=96, width=96, batch=args.batch or 4, steps=args.steps or 2,
                     warmup=args.warmup if args.warmup is not None else 1, depth=32, repeats=args.repeats or 1)
    if args.peak_tflops:
        peak, source = float(args.peak_tflops), "--peak-tflops"
    elif gpu:
        known = known_peak_tflops(name)
        peak, source = (known[1], f"table: {known[0]}") if known else (None, f"{name} is not in the table")
    else:
        peak, source = None, "CPU: no bf16 tensor-core peak"
    n_critic = max(1, args.n_critic)
    warmup = max(sizes["warmup"], n_critic)  # a compiled GAN must see both of its step kinds before the clock
    steps = -(-sizes["steps"] // n_critic) * n_critic  # whole critic/generator cycles
    plan = Plan(mode="gpu" if gpu else "cpu", device=device, presets=presets, height=sizes["height"],
                width=sizes["width"], batch=sizes["batch"], steps=steps, warmup=warmup, n_critic=n_critic,
                depth=sizes["depth"], predict_batch=args.predict_batch or default_batch_size(device),
                repeats=sizes["repeats"], compile=gpu and not args.no_compile, peak_tflops=peak,
                peak_source=source)
    if gpu:
        plan.notes.append("fp32 eager uses torch's defaults: TF32 matmul "
                          f"{'on' if torch.backends.cuda.matmul.allow_tf32 else 'off'}, cuDNN TF32 convolutions "
                          f"{'on' if torch.backends.cudnn.allow_tf32 else 'off'}.")
        plan.notes.append("The critic and the losses run in fp32 outside autocast, as in synth7t.training.trainer.Trainer; "
                          "only the generator is compiled, as there.")
        plan.notes.append(f"Every one of the {plan.depth} slices is predicted (the mask touches every slice); a real "
                          "brain mask skips the grid's empty margins, so real volumes are faster.")
    else:
        why = "no CUDA device" if not torch.cuda.is_available() else "--cpu"
        plan.notes.append(f"({why}) tiny sizes: presets {', '.join(p for p, _ in presets)}, {plan.steps} steps "
                          f"of batch {plan.batch} at {plan.height}x{plan.width}, a {plan.depth}-slice volume; "
                          "'ours' is bf16 autocast on the CPU without compile. Run it on a GPU node for the "
                          "check.")
    env = {"mode": plan.mode, "device": str(device), "device_name": name, "torch": torch.__version__,
           "python": platform.python_version(), "threads": torch.get_num_threads(),
           "tf32_matmul": bool(torch.backends.cuda.matmul.allow_tf32) if gpu else None,
           "tf32_cudnn": bool(torch.backends.cudnn.allow_tf32) if gpu else None}
    return plan, env


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--steps", type=int, default=None, help="timed training steps (GPU 20, CPU 2)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed training steps first (GPU 3, CPU 1)")
    ap.add_argument("--batch", type=int, default=None, help="slices per training step (GPU 7 = 56/8, CPU 4)")
    ap.add_argument("--n-critic", type=int, default=1,
                    help="GAN critic steps per generator step (1: the paper's first epoch, 5: the others)")
    ap.add_argument("--predict-batch", type=int, default=None,
                    help="slices per prediction pass (default: synth7t.inference.volume.default_batch_size)")
    ap.add_argument("--repeats", type=int, default=None, help="timed prediction runs (GPU 3, CPU 1)")
    ap.add_argument("--no-compile", action="store_true", help="measure bf16 autocast without torch.compile")
    ap.add_argument("--peak-tflops", type=float, default=None,
                    help="dense bf16 peak of the device for MFU (default: from the table of known devices)")
    ap.add_argument("--models", nargs="+", default=None,
                    help="presets (model and training preset of the same name); default paper-unet paper-gan "
                         "on a GPU, demo-cpu demo-cpu-gan on a CPU")
    ap.add_argument("--cpu", action="store_true", help="the CPU sizes even when CUDA is available")
    ap.add_argument("--out", default="gpu_check.json", help="JSON file of every number")
    args = ap.parse_args(argv)
    for name in ("steps", "batch", "predict_batch", "repeats"):
        v = getattr(args, name)
        if v is not None and v < 1:
            ap.error(f"--{name.replace('_', '-')} must be >= 1, got {v}")
    if args.warmup is not None and args.warmup < 0:
        ap.error(f"--warmup must be >= 0, got {args.warmup}")
    if args.peak_tflops is not None and args.peak_tflops <= 0:
        ap.error(f"--peak-tflops must be > 0, got {args.peak_tflops}")
    return args


def released_forward(plan: Plan) -> Dict[str, Any]:
    """Seconds per 288 x 224 slice of the authors' released network (benchmarks/bench_released.py), fp32 against bf16
    channels-last; on a CPU plan the GAN's smaller released network on a 96 x 96 slice at one repeat."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_released import measure

    on_gpu = plan.device.type == "cuda"
    return measure("released-unet-nodiag" if on_gpu else "released-gan-nodiag", str(plan.device),
                   repeats=3 if on_gpu else 1, batch=8 if on_gpu else 1, height=288 if on_gpu else 96,
                   width=224 if on_gpu else 96)


def released_markdown(r: Dict[str, Any]) -> str:
    """The released network's rows of the report."""
    if "error" in r:
        return f"Released network: failed ({r['error']})\n"
    lines = [f"Released network {r['preset']} ({r['params'] / 1e6:.0f} M parameters, {r['gflops_per_slice']:.0f} "
             f"GFLOP per {r['height']} x {r['width']} slice) on {r['device']}:", "", "| variant | s per slice | x fp32 | min per 270 slices |",
             "|---|---|---|---|"]
    lines += [f"| {name} | {v['seconds_per_slice']:.3f} | {v['ratio']:.2f} | {v['minutes_per_volume']:.1f} |"
              for name, v in r["variants"].items()]
    return "\n".join(lines) + "\n"


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the check, print the Markdown report, write the JSON; 0 when everything ran and passed."""
    from synth7t.training.losses import build_perceptual_loss

    args = parse_args(argv)
    plan, env = make_plan(args)
    t0 = time.perf_counter()
    perceptual = build_perceptual_loss("efficientnet_lite0").to(plan.device)  # frozen: shared by every run
    models = [check_model(plan, gen, train, perceptual) for gen, train in plan.presets]
    targets = evaluate_targets(plan, env["device_name"], models)
    report = markdown_report(plan, env, models, targets)
    # the authors' released architecture (an imported model's network), forward only, random weights
    released = guarded(released_forward, plan)
    report += ("\n" + released_markdown(released))
    print(report, end="")
    plan_json = {k: v for k, v in asdict(plan).items() if k != "device"}
    doc = {"format": "synth7t-gpu-check-1", "environment": env, "plan": plan_json,
           "flops_convention": "model FLOPs (synth7t.models.facts.model_facts: matmul, conv, attention; 2 per "
                               "multiply-add); forward + backward = 3 x forward; perceptual backbone and the "
                               "gradient penalty's double backward not counted",
           "models": models, "targets": targets, "released": released,
           "seconds_total": time.perf_counter() - t0, "markdown": report}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2, default=str))
    print(f"\nwrote {out} ({doc['seconds_total']:.1f} s)")
    failed = any("error" in m[label][kind] for m in models for label in ("ours", "fp32_eager")
                 for kind in ("train", "predict"))
    return 1 if failed or any(t["passed"] is False for t in targets) else 0


if __name__ == "__main__":
    sys.exit(main())
