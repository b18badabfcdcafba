"""What limits each model of the demo (issue 28): every training of ``profiles/demo.yml`` retrained with one setting
changed (:func:`synth7t.training.limits.limit_variants`: more steps, another learning rate, larger crops, without the
global residual or the perceptual term, the GAN U-Net from scratch), each scored on its validation slices against
the identity (the 3T input on the same slices), and the ceiling that the real 7T's noise sets.

    python benchmarks/demo_training_limits.py [--data data/demo] [--out runs/training_limits]

Needs the demo cohort preprocessed (``make demo``, or notebooks 00-01). Writes ``benchmarks/results/
demo_training_limits.tsv`` (one row per model and variant; chapter 02 reads it) and prints it. Resumable: finished
runs under ``--out`` are scored again, not retrained, unless the profile's settings changed since (then that run
trains again). On 2 idle cores: about 35 minutes, one run at a time.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from synth7t.data import io as sio
from synth7t.data import layout
from synth7t.training import slices, trainer, limits
from synth7t.training import config as tconf
from synth7t.simulate.measure import WHITE_MATTER, noise_sd
from synth7t.training.modelcard import ModelCardWarning
from synth7t.preprocess import load_records
from synth7t.workflow.profiles import load_profile


def seven_t_noise(derivatives: Path, keys) -> float:
    """Mean noise SD of the preprocessed 7T in white matter (ground-truth labels) over ``keys``."""
    recs = {r["key"]: r for r in load_records(derivatives) if r.get("status") == "done"}
    sds = []
    for k in keys:
        files = recs[k]["files"]
        t7 = sio.load_volume(derivatives / files["t7"]).data
        labels = sio.load_volume(derivatives / files["labels"], dtype=None).data
        sds.append(noise_sd(t7, np.isin(labels, WHITE_MATTER)))
    return float(np.mean(sds))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="data/demo", help="the preprocessed demo cohort")
    ap.add_argument("--out", default="runs/training_limits", help="runs of every variant")
    ap.add_argument("--results", default=str(limits.LIMITS_RESULTS))
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    data, out = Path(args.data), Path(args.out)
    der = data / "derivatives" / "synth7t-preproc"
    ds = layout.discover(data)
    cache = slices.build_cache(der, out / "cache", ds, split_file=data / layout.SPLIT_FILE, progress=False,
                               planes=("axial", "coronal", "sagittal"))
    prof = load_profile("demo")
    trainings = [nb["parameters"] for nb in prof["notebooks"] if nb["notebook"].endswith("02_train.ipynb")]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    version = layout.dataset_facts(data)["generator_version"]  # chapter 02 quotes rows of its own cohort only
    rows, val_keys = [], None
    for t in trainings:
        name, preset = t["model_name"], t["preset"]
        for variant, over in limits.limit_variants(name, preset, t.get("config_overrides", {})).items():
            over = dict(over)
            if over.get("init_from"):  # the demo's U-Net, as trained here
                over["init_from"] = str(out / over["init_from"].split("/")[-2] / "as in the demo" / "model")
            run = out / name / variant
            cfg = tconf.TrainConfig.from_preset(preset, **{**over, "threads": args.threads})
            stale = stale_settings(run, cfg)
            if stale:  # the profile changed since this run trained: train it again with today's settings
                print(f"{name} / {variant}: retraining, its run differs in {', '.join(stale)}", flush=True)
                shutil.rmtree(run)
            if not (run / "model" / "model.json").is_file():
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", ModelCardWarning)
                    tr = trainer.Trainer(cfg, cache, run, resume=True, progress=False)
                    tr.fit()
                val_keys = tr.val_keys
            val = pd.read_csv(run / "val_log.csv").drop_duplicates("epoch", keep="last")
            log = pd.read_csv(run / "train_log.csv").drop_duplicates("step", keep="last")
            last = val.iloc[-1]
            rows.append({"model": name, "variant": variant, "steps": int(last["step"]),
                         "seconds": round(float(log["seconds"].sum()), 1), "psnr": last["psnr"], "ssim": last["ssim"],
                         "psnr_3t": last["psnr_3t"], "ssim_3t": last["ssim_3t"],
                         "gain_db": last["psnr"] - last["psnr_3t"], "ssim_gain": last["ssim"] - last["ssim_3t"],
                         "gain_by_epoch": " ".join(f"{v:+.3f}" for v in val["psnr"] - val["psnr_3t"]),
                         "overrides": str(over), "commit": commit, "generator_version": version})
            print(f"{name:16s} {variant:20s} {rows[-1]['gain_db']:+.3f} dB  {rows[-1]['ssim_gain']:+.4f} SSIM  "
                  f"{rows[-1]['seconds']:.0f} s", flush=True)
    if val_keys is None:
        val_keys = train_config_val_keys(cache)
    table = pd.DataFrame(rows)
    sigma = seven_t_noise(der, val_keys)
    table["noise_sd_7t"] = sigma
    table["ceiling_db"] = limits.noise_ceiling_db(sigma)
    Path(args.results).parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.results, sep="\t", index=False, float_format="%.5f")
    print(f"7T noise SD in white matter {sigma:.4f}: a noise-free prediction would score "
          f"{limits.noise_ceiling_db(sigma):.2f} dB; wrote {args.results}")


def stale_settings(run: Path, cfg) -> list:
    """The settings in which the run under ``run`` differs from ``cfg``; empty when there is no run yet or it is the
    same. Not compared: the thread count, and the perceptual weight where a share calibrates it (the run records
    the weight it calibrated)."""
    path = run / "config.json"
    if not path.is_file():
        return []
    theirs, ours = json.loads(path.read_text()), cfg.to_dict()
    skip = {"threads"}
    if ours.get("perceptual_share") and ours.get("lambda_perc", 0) > 0 and theirs.get("lambda_perc", 0) > 0:
        skip.add("lambda_perc")
    return sorted(k for k in set(theirs) | set(ours) if k not in skip and theirs.get(k) != ours.get(k))


def train_config_val_keys(cache: Path) -> list:
    """The validation subjects every demo training carves out (they share seed and fraction)."""
    vols = slices.SliceCache.open(cache).volumes
    return slices.validation_keys(vols, tconf.TrainConfig().val_fraction, 0)


if __name__ == "__main__":
    main()
