"""Record the gradients every optimiser step of a :class:`synth7t.training.trainer.Trainer` applies, in one process or under
``torchrun`` (``python -m torch.distributed.run --nproc_per_node 2 tests/ddp_gradients.py ...``).

The gradients are read by an optimiser step pre-hook, after the backward passes, DistributedDataParallel's
all-reduce and the ``grad_accumulation`` micro-batches: exactly what Adam receives. Comparing them between one
process, several ranks and several micro-batches sees a wrong scale (a missing division by the number of ranks or
micro-batches, a sum across ranks instead of a mean), which Adam's updates hide (they are invariant to a constant
factor on the gradients).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch


def record_gradients(trainer) -> dict:
    """Register step pre-hooks on the trainer's optimisers; returns the dict they fill.

    Keys are ``"<module>/<k>/<parameter name>"`` for the ``k``-th step (0-based) of the generator's or the critic's
    optimiser; values are CPU copies of the gradients.
    """
    records: dict = {}
    optimisers = [("generator", trainer.generator, trainer.opt_g)]
    if trainer.critic is not None:
        optimisers.append(("critic", trainer.critic, trainer.opt_d))
    for name, module, opt in optimisers:
        params = dict(module.named_parameters())
        count = [0]

        def hook(_opt, _args, _kwargs, name=name, params=params, count=count):
            for pname, p in params.items():
                if p.grad is not None:
                    records[f"{name}/{count[0]}/{pname}"] = p.grad.detach().to("cpu", copy=True)
            count[0] += 1

        opt.register_step_pre_hook(hook)
    return records


def train_and_record(cache, run_dir, preset: str, overrides: dict) -> tuple[dict, object]:
    """Train ``preset`` with ``overrides`` (give ``max_steps``) from scratch; returns (gradients, trainer)."""
    from synth7t.training import trainer
    from synth7t.training import config as tconf

    trainer = trainer.Trainer(tconf.TrainConfig.from_preset(preset, **overrides), cache, run_dir, progress=False,
                            resume=False)
    grads = record_gradients(trainer)
    trainer.fit()
    return grads, trainer


def main() -> None:
    from safetensors.torch import save_file

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--cache", required=True)
    ap.add_argument("--run-dir", required=True)
    ap.add_argument("--preset", required=True)
    ap.add_argument("--overrides", required=True, help="JSON object of TrainConfig overrides")
    ap.add_argument("--out", required=True, help="folder for grads-rank<r>.safetensors")
    a = ap.parse_args()
    grads, trainer = train_and_record(a.cache, a.run_dir, a.preset, json.loads(a.overrides))
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in grads.items()}, str(out / f"grads-rank{trainer.rank}.safetensors"))
    trainer.close()


if __name__ == "__main__":
    main()
