"""Several processes under ``torchrun`` (gloo on CPU) train exactly what one process does with the same global batch.

``batch_size`` is the global batch: each of N ranks takes a contiguous share of it, optionally in
``grad_accumulation`` micro-batches, so N processes and one process see the same samples, crops, flips and
gradient-penalty weights per step. The gradient tests compare what the optimisers receive, step by step (read by
an optimiser step pre-hook, ``tests/ddp_gradients.py``): Adam's update does not change (up to its epsilon) when
every gradient is multiplied by a constant, so weights after Adam cannot tell a mean over the ranks or micro-batches
from a sum, and gradients can. The weight tests check whole runs through the command line (checkpoints, logs); a DDP run
killed (SIGKILL of every process, as a preemption does) after a checkpoint resumes to the weights of an
uninterrupted run."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from synth7t.training import slices, trainer
from synth7t.training import config as tconf

REPO = Path(__file__).resolve().parents[1]

#: 3 epochs of 4 global batches of 4 slices (2 per rank): 12 steps, a checkpoint every 2
UNET = dict(epochs=3, batch_size=4, samples_per_epoch=16, crop=[32, 32], augment=True, lambda_perc=0.0,
            val_slices=4, ckpt_every=2, device="cpu", seed=0)
#: 2 epochs of 3 batches; the critic every batch, the generator every 2nd batch after the first epoch
GAN = dict(UNET, epochs=2, samples_per_epoch=12, n_critic=2, ckpt_every=100)

#: Tolerance of "the same weights" between N processes and one (float rounding of the gradient all-reduce,
#: amplified where Adam divides by tiny second moments): relative L2 distance of all weights, and per element.
#: Measured (relative L2 / max abs): U-Net 5.2e-7 / 1.9e-5 after 12 steps; GAN U-Net generator 5.4e-7 / 2.5e-5,
#: critic 1.4e-8 / 4.8e-8; the worst seen in a fresh-clone suite run: GAN U-Net 1.9e-6 / 6.7e-5 (one element
#: past atol 2e-4 + rtol 1e-3, and a logged loss 3.5e-4 apart). A wrong share of the penalty weights alone gives
#: 1.8e-3 / 4.0e-3, so the bounds below keep a margin of about 100x (relative L2) and 4x (per element).
REL_L2 = 1e-5
ATOL, RTOL = 1e-3, 1e-2

pytestmark = pytest.mark.skipif(not (torch.distributed.is_available() and torch.distributed.is_gloo_available()),
                                reason="torch.distributed with the gloo backend is not available")


@pytest.fixture(scope="module")
def cache(preprocessed_cohort, tmp_path_factory):
    derivatives, ds, split_file = preprocessed_cohort
    return slices.build_cache(derivatives, tmp_path_factory.mktemp("ddp_cache"), ds, split_file=split_file,
                              progress=False)


def _command(cache: Path, run_dir: Path, preset: str, overrides: dict, nproc: int = 2) -> list:
    sets = [f"{k}={json.dumps(v)}" for k, v in overrides.items()]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
            "-m", "synth7t", "train", "--cache", str(cache), "--run-dir", str(run_dir), "--preset", preset,
            "--set", *sets]


def _env() -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return env


def _torchrun(cache: Path, run_dir: Path, preset: str, overrides: dict, nproc: int = 2) -> None:
    res = subprocess.run(_command(cache, run_dir, preset, overrides, nproc), cwd=REPO, env=_env(),
                         capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-6000:]


def _descendants(pid: int) -> list[int]:
    """Process ids below ``pid`` (torchrun starts its workers in sessions of their own)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def _weights(run_dir: Path, name: str = "generator.safetensors") -> dict:
    from safetensors.torch import load_file

    return load_file(str(trainer.latest_checkpoint(run_dir / "checkpoints") / name))


def _compare(a: dict, b: dict) -> tuple[float, float]:
    """Assert that two state dicts are the same weights; returns (max abs difference, relative L2 distance)."""
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=ATOL, rtol=RTOL, msg=k)
    diff = torch.sqrt(sum(((a[k] - b[k]).double() ** 2).sum() for k in a))
    norm = torch.sqrt(sum((a[k].double() ** 2).sum() for k in a))
    max_abs = max(float((a[k] - b[k]).abs().max()) for k in a)
    rel = float(diff / norm)
    assert rel < REL_L2, rel
    return max_abs, rel


def _losses(run_dir: Path) -> list[dict]:
    with open(run_dir / "train_log.csv") as f:
        rows = list(csv.DictReader(f))
    keep = ("step", "g_step", "critic", "l1", "total")
    return [{k: float(r[k]) for k in keep if r.get(k)} for r in rows]


def _assert_same_log(a: Path, b: Path) -> None:
    """The same steps logged with the same losses (``train_log.csv`` rounds them to 6 decimals)."""
    la, lb = _losses(a), _losses(b)
    assert len(la) == len(lb)
    for ra, rb in zip(la, lb):
        assert ra.keys() == rb.keys()
        for k in ra:
            assert ra[k] == pytest.approx(rb[k], rel=2e-3, abs=5e-6), (k, ra, rb)


def test_global_batch_splits_over_ranks_and_micro_batches(cache, monkeypatch):
    assert trainer.split_batch(56, 8) == (7, 7)
    assert trainer.split_batch(56, 4, 2) == (14, 7)
    assert trainer.split_batch(4) == (4, 4)
    with pytest.raises(ValueError, match=r"batch_size=56 .*world size 3 .*nearest valid batch sizes are 54 or 57"):
        trainer.split_batch(56, 3)
    with pytest.raises(ValueError, match=r"batch_size=4 .*world size 8 .*nearest valid batch sizes are 8"):
        trainer.split_batch(4, 8)
    with pytest.raises(ValueError, match="grad_accumulation"):
        tconf.TrainConfig.from_preset("demo-cpu", grad_accumulation=0)
    with pytest.raises(ValueError, match=r"batch_size=8 .*grad_accumulation=3.* 6 or 9"):
        tconf.TrainConfig.from_preset("demo-cpu", grad_accumulation=3)
    # under torchrun the trainer refuses a global batch that its processes cannot share evenly, before it
    # starts a process group
    monkeypatch.setenv("WORLD_SIZE", "3")
    with pytest.raises(ValueError, match=r"batch_size=4 .*world size 3 .*3 or 6"):
        trainer.Trainer(tconf.TrainConfig.from_preset("demo-cpu", **UNET), cache, "/nonexistent/run", progress=False)


def test_rank_shares_and_penalty_weights_are_slices_of_the_global_batch(cache, tmp_path):
    """Rank r of N takes rows r*B/N.. of the global batch, and draws the penalty weights of those rows."""
    cfg = tconf.TrainConfig.from_preset("demo-cpu-gan", **{**GAN, "batch_size": 6})
    one = trainer.Trainer(cfg, cache, tmp_path / "one", progress=False, resume=False)
    full = one.global_batch_ids(1, 2)
    assert len(full) == 6 and np.array_equal(one.rank_batch_ids(1, 2), full)
    assert np.array_equal(full, trainer.epoch_order(len(one.train_ds), 0, 1)[12:18])
    one.pos.step = 7
    alphas = one.penalty_weights(0, 6)
    # what each of 3 processes would take (the attributes a Trainer under torchrun sets from its rank)
    t = trainer.Trainer(cfg, cache, tmp_path / "ranks", progress=False, resume=False)
    t.world = 3
    t.rank_batch, t.micro_batch = trainer.split_batch(6, 3)
    t.pos.step = 7
    shares = []
    for r in range(3):
        t.rank = r
        shares.append(t.rank_batch_ids(1, 2))
        torch.testing.assert_close(t.penalty_weights(2 * r, 2), alphas[2 * r:2 * r + 2],
                                   rtol=0, atol=0)
        # the same crops and flips for the same samples
        torch.testing.assert_close(t._batch(1, 2)["x"], one._batch(1, 2)["x"][2 * r:2 * r + 2], rtol=0, atol=0)
    assert np.array_equal(np.concatenate(shares), full)
    one.pos.step = 8
    assert not torch.equal(one.penalty_weights(0, 6), alphas)  # a new draw every step


# ------------------------------------------------------------------------------- gradient scale

#: Tolerance of "the same gradients": relative L2 distance of all gradients of one optimiser step, and per tensor the
#: largest difference relative to that tensor's largest gradient. Float rounding of the all-reduce and of the
#: micro-batch sums only (measured: see the tests' docstrings); a missing division by 2 ranks or 2 micro-batches, or
#: a sum over the ranks instead of their mean, gives a relative L2 of 0.5 to 1 (a factor 2).
GRAD_REL_L2 = 1e-5
GRAD_REL_MAX = 1e-4


def _torchrun_gradients(cache: Path, tmp: Path, preset: str, overrides: dict) -> dict:
    """Gradients of rank 0 of 2 under torchrun (``tests/ddp_gradients.py``); checks that both ranks hold the same."""
    from safetensors.torch import load_file

    out = tmp / "grads"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(REPO / "tests" / "ddp_gradients.py"), "--cache", str(cache), "--run-dir", str(tmp / "ddp"),
           "--preset", preset, "--overrides", json.dumps(overrides), "--out", str(out)]
    res = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-6000:]
    g0, g1 = load_file(str(out / "grads-rank0.safetensors")), load_file(str(out / "grads-rank1.safetensors"))
    assert g0.keys() == g1.keys() and all(torch.equal(g0[k], g1[k]) for k in g0)  # all-reduced: one gradient
    return g0


def _compare_gradients(a: dict, b: dict, what: str) -> list[str]:
    """Assert that two gradient records (:func:`ddp_gradients.record_gradients`) hold the same steps and the same
    gradients; returns one line per optimiser step: the relative L2 distance of all its gradients, and the largest
    difference of a tensor relative to that tensor's largest gradient."""
    assert a.keys() == b.keys(), (what, sorted(set(a) ^ set(b))[:5])
    lines = []
    for step in sorted({k.rsplit("/", 1)[0] for k in a}):
        keys = [k for k in a if k.rsplit("/", 1)[0] == step]
        norm = float(torch.sqrt(sum((a[k].double() ** 2).sum() for k in keys)))
        other = float(torch.sqrt(sum((b[k].double() ** 2).sum() for k in keys)))
        diff = float(torch.sqrt(sum(((a[k] - b[k]).double() ** 2).sum() for k in keys)))
        worst, where = max((float((a[k] - b[k]).abs().max() / a[k].abs().max().clamp_min(1e-30)), k) for k in keys)
        lines.append(f"{what} {step}: relative L2 {diff / max(norm, 1e-30):.1e}, worst tensor {worst:.1e} "
                     f"({where.rsplit('/', 1)[1]}), norm {norm:.4e} vs {other:.4e}")
        assert norm > 0, f"{what} {step}: zero gradient (the comparison would see nothing)"
        assert diff / norm < GRAD_REL_L2 and worst < GRAD_REL_MAX, lines[-1]
    return lines


def test_unet_gradients_of_two_ranks_and_of_micro_batches_are_those_of_one_process(cache, tmp_path):
    """The U-Net's gradients at each of 2 steps (global batch 4): 2 gloo ranks of 2 slices (DDP averages over ranks)
    and 1 process in 2 micro-batches of 2 (each loss divided by 2) against 1 process with the whole batch.
    Measured: relative L2 at most 7.0e-7 per step, worst tensor 2.8e-6 (the printed lines)."""
    from ddp_gradients import train_and_record

    overrides = {**UNET, "max_steps": 2, "val_slices": 2}
    one, _ = train_and_record(cache, tmp_path / "one", "demo-cpu", overrides)
    assert {k.split("/")[1] for k in one} == {"0", "1"}  # two generator steps recorded
    micro, tr = train_and_record(cache, tmp_path / "acc2", "demo-cpu", {**overrides, "grad_accumulation": 2})
    assert tr.micro_batch == 2
    ddp = _torchrun_gradients(cache, tmp_path, "demo-cpu", overrides)
    for line in [*_compare_gradients(ddp, one, "U-Net, 2 ranks vs 1 process"),
                 *_compare_gradients(micro, one, "U-Net, 2 micro-batches vs 1")]:
        print(line)
    _assert_same_log(tmp_path / "ddp", tmp_path / "one")  # the logged losses are averaged over the ranks


def test_gan_gradients_of_ranks_and_micro_batches_are_those_of_one_process(cache, tmp_path):
    """The GAN U-Net at each of 2 steps (global batch 4; critic and generator every step in the first epoch): the
    critic's gradients (BCE on the patch logits plus the gradient penalty, its double backward through DDP) and the
    generator's (L1 + adversarial), for 2 gloo ranks x 2 micro-batches of 1 and for 1 process x 4 micro-batches of 1,
    against 1 process with the whole batch. Measured: relative L2 at most 1.1e-6 per step, worst tensor 3.4e-6 (the
    printed lines; the fresh critic's penalty gradients have a norm of about 2e7 at the first step)."""
    from ddp_gradients import train_and_record

    overrides = {**GAN, "max_steps": 2, "val_slices": 2}
    one, _ = train_and_record(cache, tmp_path / "one", "demo-cpu-gan", overrides)
    assert {k.split("/")[0] for k in one} == {"generator", "critic"}
    assert {k.split("/")[1] for k in one} == {"0", "1"}  # both optimisers stepped twice
    micro, tr = train_and_record(cache, tmp_path / "acc4", "demo-cpu-gan", {**overrides, "grad_accumulation": 4})
    assert tr.micro_batch == 1
    ddp = _torchrun_gradients(cache, tmp_path, "demo-cpu-gan", {**overrides, "grad_accumulation": 2})
    for line in [*_compare_gradients(ddp, one, "GAN U-Net, 2 ranks x 2 micro-batches vs 1 process"),
                 *_compare_gradients(micro, one, "GAN U-Net, 4 micro-batches vs 1")]:
        print(line)
    _assert_same_log(tmp_path / "ddp", tmp_path / "one")


@pytest.fixture(scope="module")
def ddp_unet(cache, tmp_path_factory):
    """The U-Net trained by 2 processes under torchrun, uninterrupted."""
    run = tmp_path_factory.mktemp("ddp_unet") / "run"
    _torchrun(cache, run, "demo-cpu", UNET)
    return run


def test_ddp_unet_matches_one_process(ddp_unet, cache, tmp_path):
    one = trainer.Trainer(tconf.TrainConfig.from_preset("demo-cpu", **UNET), cache, tmp_path / "one", progress=False)
    one.fit()
    meta = json.loads((trainer.latest_checkpoint(ddp_unet / "checkpoints") / "meta.json").read_text())
    assert meta["world_size"] == 2 and meta["step"] == one.pos.step == 12 and meta["epoch"] == 3
    max_abs, rel = _compare(_weights(ddp_unet), _weights(tmp_path / "one"))
    print(f"U-Net, 2 processes vs 1: max abs {max_abs:.2e}, relative L2 {rel:.2e}")
    _assert_same_log(ddp_unet, tmp_path / "one")  # the logged losses are averaged over the ranks


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="finding torchrun's workers needs /proc (Linux)")
def test_ddp_run_killed_after_a_checkpoint_resumes_to_the_same_weights(ddp_unet, cache, tmp_path):
    """SIGKILL of torchrun and both workers as soon as the step-2 checkpoint is in place; the rerun resumes."""
    run = tmp_path / "killed"
    proc = subprocess.Popen(_command(cache, run, "demo-cpu", UNET), cwd=REPO, env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    latest = run / "checkpoints" / "latest.json"
    deadline = time.monotonic() + 180
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            if latest.is_file() and json.loads(latest.read_text())["step"] >= 2:
                break
            time.sleep(0.002)
    finally:
        for pid in [proc.pid, *_descendants(proc.pid)]:  # the agent first: it must not restart the workers
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it was killed"
    killed_at = json.loads(latest.read_text())["step"]
    assert 2 <= killed_at < 12, killed_at
    _torchrun(cache, run, "demo-cpu", UNET)
    meta = json.loads((trainer.latest_checkpoint(run / "checkpoints") / "meta.json").read_text())
    assert meta["step"] == 12 and meta["epoch"] == 3
    resumed, uninterrupted = _weights(run), _weights(ddp_unet)
    max_abs, rel = _compare(resumed, uninterrupted)
    print(f"killed after the checkpoint of step {killed_at}, resumed: max abs {max_abs:.2e}, relative L2 {rel:.2e}")
    assert all(torch.equal(resumed[k], uninterrupted[k]) for k in resumed)  # the same processes, bit for bit
    assert not list((run / "checkpoints").glob(".*.tmp"))


def test_ddp_watnet_on_patches_matches_one_process(cache, tmp_path):
    """The WATNet baseline (patches from synth7t.training.patches, no batch norm): 2 processes train what one does.

    (A V-Net's batch norm is synchronised over the processes on GPUs only: PyTorch's SyncBatchNorm has no CPU
    version, so on gloo each rank normalises with its own share and the weights differ from one process's.)"""
    overrides = dict(epochs=2, samples_per_epoch=16, batch_size=4, val_slices=4, ckpt_every=2, device="cpu", seed=0)
    _torchrun(cache, tmp_path / "ddp", "demo-cpu-watnet", overrides)
    one = trainer.Trainer(tconf.TrainConfig.from_preset("demo-cpu-watnet", **overrides), cache, tmp_path / "one",
                        progress=False)
    one.fit()
    meta = json.loads((trainer.latest_checkpoint(tmp_path / "ddp" / "checkpoints") / "meta.json").read_text())
    assert meta["world_size"] == 2 and meta["step"] == one.pos.step == 8
    max_abs, rel = _compare(_weights(tmp_path / "ddp"), _weights(tmp_path / "one"))
    print(f"WATNet, 2 processes vs 1: max abs {max_abs:.2e}, relative L2 {rel:.2e}")
    _assert_same_log(tmp_path / "ddp", tmp_path / "one")
