"""The GPU-only training paths, run on a CPU: bf16 autocast, torch.compile of the generator, channels-last.

The multi-process path (DistributedDataParallel under torchrun) is in ``test_ddp.py``.
"""

from __future__ import annotations

import functools
import math

import pytest
import torch

from synth7t.training import slices, trainer
from synth7t.training import config as tconf

BASE = dict(epochs=1, batch_size=4, samples_per_epoch=8, crop=[32, 32], augment=True, lambda_perc=0.0,
            val_slices=2, ckpt_every=100, device="cpu", seed=0)


@pytest.fixture(scope="module")
def cache(preprocessed_cohort, tmp_path_factory):
    derivatives, ds, split_file = preprocessed_cohort
    return slices.build_cache(derivatives, tmp_path_factory.mktemp("gpu_paths_cache"), ds, split_file=split_file,
                              progress=False)


def _trainer(cache, run_dir, preset="demo-cpu-gan", **overrides):
    cfg = tconf.TrainConfig.from_preset(preset, **{**BASE, **overrides})
    return trainer.Trainer(cfg, cache, run_dir, progress=False, resume=False)


def _params(module) -> dict:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _assert_same_step(a, b, nets=("generator",)) -> None:
    """Two trainers took the same step: the same gradients (left in ``.grad``) to float rounding, and weights
    within Adam's first-step size (``lr * g / |g|`` even where ``g`` is rounding, so compared loosely)."""
    for net in nets:
        ga = {k: p.grad for k, p in getattr(a, net).named_parameters()}
        gb = {k: p.grad for k, p in getattr(b, net).named_parameters()}
        dist = torch.sqrt(sum(((ga[k] - gb[k]) ** 2).sum() for k in ga) / sum((ga[k] ** 2).sum() for k in ga))
        assert float(dist) < 1e-5, (net, float(dist))
        pa, pb = _params(getattr(a, net)), _params(getattr(b, net))
        for k in pa:
            torch.testing.assert_close(pb[k], pa[k], rtol=0, atol=2 * a.cfg.lr_g, msg=f"{net}.{k}")


def test_bf16_autocast_trains_on_cpu(cache, tmp_path):
    """``amp="bf16"`` autocasts the generator to bfloat16 on a CPU as on a GPU; a GAN step runs and learns."""
    # without the global residual: the demo GAN's zero-initialised residual makes its first step's output the
    # 3T itself, the same in both precisions, which would hide what autocast changes
    fp32 = _trainer(cache, tmp_path / "fp32", amp="off", global_residual=False)
    bf16 = _trainer(cache, tmp_path / "bf16", amp="bf16", global_residual=False)
    assert tconf.TrainConfig.from_preset("demo-cpu").amp == "off"  # the CPU demo stays in fp32
    batch = bf16._batch(0, 0)
    with bf16._autocast():
        assert bf16.g_train(batch["x"], batch["context"]).dtype == torch.bfloat16
    with fp32._autocast():
        assert fp32.g_train(batch["x"], batch["context"]).dtype == torch.float32
    # with the residual, the convolutions still run in bfloat16 but the 3T slice is added in fp32 (not rounded
    # to 8 bits of mantissa), so the sum is fp32
    res = _trainer(cache, tmp_path / "res", amp="bf16")
    seen = []
    hook = res.g_train.output_conv.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    with res._autocast():
        assert res.model_config.global_residual and res.g_train(batch["x"], batch["context"]).dtype == torch.float32
    hook.remove()
    assert seen == [torch.bfloat16]
    before = _params(bf16.generator)
    ref, out = fp32._train_batch(batch), bf16._train_batch(batch)
    # the same step to bfloat16 precision (8 bits of mantissa), but not the fp32 numbers
    assert out["l1"] == pytest.approx(ref["l1"], rel=2e-2) and out["l1"] != ref["l1"]
    # the critic runs in fp32 on the bf16 generator's fakes; its loss is mostly the gradient penalty of an
    # untrained critic (about 4e3), which the fakes' rounding moves by a few per cent
    assert out["critic"] == pytest.approx(ref["critic"], rel=0.1)
    assert all(math.isfinite(v) for v in out.values())
    after = _params(bf16.generator)
    assert all(torch.isfinite(v).all() for v in after.values())
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert all(p.dtype == torch.float32 for p in bf16.generator.parameters())  # fp32 master weights


def test_channels_last_training_step_matches_contiguous(cache, tmp_path):
    """``channels_last``: the networks and inputs are NHWC, and a GAN step (critic with the gradient penalty's
    double backward, then the generator) gives the contiguous step's losses and weights to float rounding."""
    nchw = _trainer(cache, tmp_path / "nchw")
    nhwc = _trainer(cache, tmp_path / "nhwc", channels_last=True)
    batch, batch_cl = nchw._batch(0, 0), nhwc._batch(0, 0)
    assert not batch["x"].is_contiguous(memory_format=torch.channels_last)
    assert batch_cl["x"].is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(batch_cl["x"], batch["x"], rtol=0, atol=0)
    convs = [m.weight for m in nhwc.generator.modules() if isinstance(m, torch.nn.Conv2d) and m.in_channels > 1]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)
    a, b = nchw._train_batch(batch), nhwc._train_batch(batch_cl)
    assert a.keys() == b.keys() == {"critic", "l1", "perceptual", "gan", "total"}
    for k in a:
        assert b[k] == pytest.approx(a[k], rel=1e-5, abs=1e-6), k
    # measured: the gradients' relative L2 distance 7e-7, the largest weight difference 7e-5
    _assert_same_step(nchw, nhwc, ("generator", "critic"))


def _compile_step(cache, tmp_path, monkeypatch, backend):
    """One U-Net step with ``compile=True`` (the given backend) and the same step in eager mode."""
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend=backend))
    torch._dynamo.reset()
    eager = _trainer(cache, tmp_path / "eager", preset="demo-cpu")
    compiled = _trainer(cache, tmp_path / "compiled", preset="demo-cpu", compile=True)
    assert isinstance(compiled.g_train, torch._dynamo.eval_frame.OptimizedModule)
    assert compiled.g_train._orig_mod is compiled.generator  # checkpoints and exports hold the plain module
    batch = eager._batch(0, 0)
    a, b = eager._train_batch(batch), compiled._train_batch(batch)
    assert b["l1"] == pytest.approx(a["l1"], rel=1e-5)
    _assert_same_step(eager, compiled)
    return compiled


def test_compile_traces_the_generator_in_one_graph(cache, tmp_path, monkeypatch):
    """``compile=True`` on a CPU: dynamo and AOTAutograd capture the generator's forward and backward whole (no
    graph break) and give the eager step. The inductor code generation is in the ``slow`` test below."""
    compiled = _compile_step(cache, tmp_path, monkeypatch, "aot_eager")
    batch = compiled._batch(0, 1)
    explained = torch._dynamo.explain(compiled.generator)(batch["x"], batch["context"])
    assert explained.graph_count == 1 and explained.graph_break_count == 0, explained.break_reasons


@pytest.mark.slow  # inductor compiles C++ kernels: 65-75 s on 2 cores with an empty cache (about 10 s warm)
@pytest.mark.skipif(trainer.cxx_compiler() is None, reason="torch.compile on a CPU needs a C++ compiler (g++/clang++)")
def test_compile_with_inductor_on_cpu(cache, tmp_path, monkeypatch):
    """``compile=True`` as on a GPU: inductor's CPU kernels run the generator's forward and backward."""
    _compile_step(cache, tmp_path, monkeypatch, "inductor")


def test_compile_without_a_compiler_is_a_clear_error(cache, tmp_path, monkeypatch):
    monkeypatch.setattr(trainer, "cxx_compiler", lambda: None)
    with pytest.raises(ValueError, match="compile=True on a CPU needs a C\\+\\+ compiler"):
        _trainer(cache, tmp_path / "x", preset="demo-cpu", compile=True)


def test_channels_last_3d_baseline_step_matches_contiguous(cache, tmp_path):
    """A 3D baseline (V-Net) with ``channels_last``: NDHWC weights and patches, the contiguous step's results."""
    over = dict(epochs=1, batch_size=2, samples_per_epoch=4, val_slices=2, ckpt_every=100, device="cpu", seed=0)
    ncdhw = trainer.Trainer(tconf.TrainConfig.from_preset("demo-cpu-vnet", **over), cache, tmp_path / "a", progress=False,
                          resume=False)
    ndhwc = trainer.Trainer(tconf.TrainConfig.from_preset("demo-cpu-vnet", channels_last=True, **over), cache,
                          tmp_path / "b", progress=False, resume=False)
    batch, batch_cl = ncdhw._batch(0, 0), ndhwc._batch(0, 0)
    assert batch_cl["x"].is_contiguous(memory_format=torch.channels_last_3d)
    convs = [m.weight for m in ndhwc.generator.modules() if isinstance(m, torch.nn.Conv3d) and m.in_channels > 1]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last_3d) for w in convs)
    a, b = ncdhw._train_batch(batch), ndhwc._train_batch(batch_cl)
    for k in a:
        assert b[k] == pytest.approx(a[k], rel=1e-5, abs=1e-6), k
    # oneDNN's channels-last 3D kernels round more coarsely than the contiguous ones: measured, the gradients'
    # relative L2 distance to a float64 reference is 1.7e-4 (contiguous: 1.9e-5), 6e-4 between the two layouts
    ga = torch.cat([p.grad.flatten() for p in ncdhw.generator.parameters()])
    gb = torch.cat([p.grad.flatten() for p in ndhwc.generator.parameters()])
    assert float((ga - gb).norm() / ga.norm()) < 5e-3
    for (k, pa), pb in zip(ncdhw.generator.state_dict().items(), ndhwc.generator.state_dict().values()):
        torch.testing.assert_close(pb, pa, rtol=0, atol=2 * ncdhw.cfg.lr_g, msg=k)
