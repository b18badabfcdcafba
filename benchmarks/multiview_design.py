"""Which multi-view design (issue 19): one U-Net on all three planes with the plane as a condition, the same without
the plane condition, or three single-plane U-Nets; each against the paper's axial-only U-Net, at equal training steps.

Trains the four designs on the demo cohort that ``make demo`` preprocessed (``data/demo`` and its derivatives), then
predicts the held-out subjects and scores every view and every fusion against the real 7T (brain mask minus the
artefact slices): PSNR, SSIM, the through-plane roughness ratios and the slicing-artefact index
(:mod:`synth7t.data.planes`), and for the fused predictions the Spearman correlation of the view spread (the uncertainty
map) with the absolute error, per voxel and over 3-voxel cubes. Each design's PSNR is also printed as a difference
from the axial model's, measured in the same process.

    python benchmarks/multiview_design.py --seeds 0 1 2 [--data data/demo] [--out runs/multiview_design]

Every seed trains the four designs anew (model initialisation, data order and crops follow the seed) and scores
them; the results file (``--results``, default ``benchmarks/results/multiview_design.tsv``, which chapter 04 quotes
as mean ± SD over the seeds) gets one row per seed and image type: the means over the held-out subjects, with the
grid, the slices per epoch and the commit. Resumable: trained models and scored subjects are kept under
``--out/seed-<s>/``. On 2 idle cores: about 20 min of training and 10 min of prediction per seed.
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from synth7t.data import io as sio
from synth7t import inference
from synth7t.data import layout, planes
from synth7t.evaluation import metrics, multiview_design, slicing
from synth7t.inference import fusion
from synth7t.training import slices, trainer
from synth7t.training import config as tconf
from synth7t.training.modelcard import SimulatedTrainingWarning


def designs(samples: int, seed: int = 0) -> dict:
    """Design name -> [(run tag, train config)]: every design takes 3 epochs of ``samples`` slices in all."""
    base = dict(model="demo-cpu-nodiag", samples_per_epoch=samples, device="cpu", seed=seed)
    return {
        "axial": [("axial", tconf.TrainConfig.from_preset("demo-cpu", **base))],
        "mv-cond": [("all", tconf.TrainConfig.from_preset("demo-cpu-mv", **base))],
        "mv-nocond": [("all", tconf.TrainConfig.from_preset("demo-cpu-mv", plane_condition=False, **base))],
        "three": [(p, tconf.TrainConfig.from_preset("demo-cpu", planes=[p], **{**base, "samples_per_epoch": samples // 3}))
                  for p in planes.PLANES],
    }


def score(rows: list, key: str, name: str, vol: np.ndarray, ref: np.ndarray, m: np.ndarray, unc=None) -> None:
    r = {"key": key, "image_type": name, **metrics.image_metrics(ref, vol, brain_mask=m)}
    tp = slicing.through_plane_ratios(vol, ref, m)
    r.update({f"tp_{p}": v for p, v in tp.items()}, artefact_index=slicing.artefact_index(tp))
    if unc is not None:
        r["rho"] = slicing.uncertainty_calibration(unc, vol, ref, m)[0]
        r["rho_block3"] = slicing.uncertainty_calibration(unc, vol, ref, m, block=3)[0]
    rows.append(r)


def run_seed(seed: int, samples: int, data: Path, out: Path) -> pd.DataFrame:
    """Train and score the four designs with one seed under ``out``; returns the per-subject scores."""
    der = data / "derivatives" / "synth7t-preproc"
    ds = layout.discover(data)
    cache = slices.build_cache(der, out.parent / "cache", ds, split_file=data / layout.SPLIT_FILE, progress=False,
                               planes=planes.PLANES)
    for name, runs in designs(samples, seed).items():
        for tag, cfg in runs:
            run = out / "runs" / f"{name}-{tag}"
            t0 = time.perf_counter()
            if not (run / "model" / "model.json").is_file():
                trainer.Trainer(cfg, cache, run, progress=False).fit()
                print(f"seed {seed}: trained {name}-{tag}: {time.perf_counter() - t0:.0f} s", flush=True)

    def load(run):
        return inference.load_model(out / "runs" / run / "model", "cpu")

    models = {"axial": load("axial-axial"), "mv-cond": load("mv-cond-all"), "mv-nocond": load("mv-nocond-all"),
              "three": {p: load(f"three-{p}") for p in planes.PLANES}}
    vols = slices.SliceCache.open(cache).volumes
    tables = []
    for key in sorted(vols.loc[vols.split == "test", "key"]):
        done = out / f"scores_{key}.tsv"
        if not done.is_file():
            rows = []
            inp = inference.preprocessed_inputs(der, key)
            rec, s = inp["record"], ds[key]
            ref = sio.load_volume(der / rec["files"]["t7"]).data
            brain = inp["mask"] > 0
            m = metrics.evaluation_mask(ref, brain_mask=brain,
                                        excluded_slices=metrics.slice_indices(rec["excluded_slices"]))
            kw = dict(age=s.age, sex=s.sex, impaired=s.impaired, mask=inp["mask"],
                      axial_range=(rec["bottom_slice"], rec["top_slice"]))
            score(rows, key, "3T", inp["t3"].data, ref, m)
            score(rows, key, "axial model", inference.views.predict_multiview(models["axial"], inp["t3"].data, **kw).prediction,
                  ref, m)
            for name in ("mv-cond", "mv-nocond", "three"):
                res = inference.views.predict_multiview(models[name], inp["t3"].data, uncertainty=True, **kw)
                for p, v in res.views.items():
                    score(rows, key, f"{name} {p} view", v, ref, m)
                for fusion in ("mean", "median"):
                    score(rows, key, f"{name} fused {fusion}", fusion.fuse_views(res.views, fusion, mask=brain), ref,
                          m, res.uncertainty)
            pd.DataFrame(rows).to_csv(done, sep="\t", index=False)
            print(f"seed {seed}: scored {key}", flush=True)
        tables.append(pd.read_csv(done, sep="\t"))
    return pd.concat(tables, ignore_index=True).assign(seed=seed)


def _grid(data: Path) -> str:
    """The preprocessed grid of a cohort, e.g. ``"176x136, 1.2 mm"`` (its preprocessing config)."""
    import json

    cfg = json.loads((data / "derivatives" / "synth7t-preproc" / "config.json").read_text())
    shape = "x".join(str(v) for v in cfg.get("grid_inplane", []))
    return f"{shape}, {cfg.get('target_spacing')} mm"


def _commit() -> str:
    import subprocess

    res = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parent)
    return res.stdout.strip() if res.returncode == 0 else "unknown"


def main(argv=None) -> pd.DataFrame:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="data/demo", help="the preprocessed paired cohort (make demo: data/demo)")
    ap.add_argument("--out", default="runs/multiview_design", help="models, per-subject scores and the tables")
    ap.add_argument("--samples", type=int, default=320, help="slices per epoch of each design (3 epochs)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds, e.g. 0 1 2")
    ap.add_argument("--results", default=str(multiview_design.DESIGN_RESULTS),
                    help="per-seed results (one row per seed and image type); chapter 04 reads the default")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore", SimulatedTrainingWarning)
    data, out = Path(args.data), Path(args.out)
    der = data / "derivatives" / "synth7t-preproc"
    if not der.is_dir():
        raise SystemExit(f"{der}: no preprocessed cohort (run make demo, or notebooks 00 and 01)")
    if len(set(args.seeds)) != len(args.seeds):
        raise SystemExit(f"--seeds repeats a seed: {args.seeds}")
    table = pd.concat([run_seed(s, args.samples, data, out / f"seed-{s}") for s in args.seeds], ignore_index=True)
    table.to_csv(out / "scores.tsv", sep="\t", index=False)
    per_seed = table.groupby(["seed", "image_type"], sort=False).mean(numeric_only=True).reset_index()
    axial = per_seed[per_seed["image_type"] == "axial model"].set_index("seed")["psnr"]
    per_seed["psnr_vs_axial_model"] = per_seed["psnr"] - per_seed["seed"].map(axial)
    per_seed.insert(2, "n_subjects", table["key"].nunique())
    per_seed.insert(3, "samples", args.samples)
    per_seed.insert(4, "grid", _grid(data))
    per_seed["commit"] = _commit()
    per_seed["generator_version"] = layout.dataset_facts(data)["generator_version"]  # chapter 04 checks it
    results = Path(args.results)
    results.parent.mkdir(parents=True, exist_ok=True)
    per_seed.to_csv(results, sep="\t", index=False, float_format="%.5g")
    summary = multiview_design.design_summary(results)
    cols = [c for c in summary.columns if c.endswith(("_mean", "_sd")) and c.split("_")[0] in ("psnr", "artefact")]
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(f"{results}: {len(args.seeds)} seed(s), {table.key.nunique()} held-out subject(s); mean and SD over "
              "the seeds:")
        print(summary[["n_seeds", *cols]].round(3).to_string())
    return summary


if __name__ == "__main__":
    main()
