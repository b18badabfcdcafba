"""Which multi-view design (issue 19): one U-Net on all three planes with the plane as a condition, the same without
the plane condition, or three single-plane U-Nets; each against the paper's axial-only U-Net, at equal training steps.

Trains the four designs on the demo cohort that ``make demo`` preprocessed (``data/demo`` and its derivatives), then
predicts the held-out subjects and scores every view and every fusion against the real 7T (brain mask minus the
artefact slices): PSNR, SSIM, the through-plane roughness ratios and the slicing-artefact index
(:mod:`synth7t.views`), and for the fused predictions the Spearman correlation of the view spread (the uncertainty
map) with the absolute error, per voxel and over 3-voxel cubes. Each design's PSNR is also printed as a difference
from the axial model's, measured in the same process.

    python benchmarks/multiview_design.py [--data data/demo] [--out runs/multiview_design] [--samples 320]

Resumable: trained models and scored subjects are kept under ``--out``. On 2 idle cores: about 20 min of training
and 10 min of prediction.
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from synth7t import io as sio
from synth7t import layout, metrics, multiview, predict, slices, train, views
from synth7t import train_config as tconf
from synth7t.modelcard import SimulatedTrainingWarning


def designs(samples: int) -> dict:
    """Design name -> [(run tag, train config)]: every design takes 3 epochs of ``samples`` slices in all."""
    base = dict(model="demo-cpu-nodiag", samples_per_epoch=samples, device="cpu")
    return {
        "axial": [("axial", tconf.make_train_config("demo-cpu", **base))],
        "mv-cond": [("all", tconf.make_train_config("demo-cpu-mv", **base))],
        "mv-nocond": [("all", tconf.make_train_config("demo-cpu-mv", plane_condition=False, **base))],
        "three": [(p, tconf.make_train_config("demo-cpu", planes=[p], **{**base, "samples_per_epoch": samples // 3}))
                  for p in views.PLANES],
    }


def score(rows: list, key: str, name: str, vol: np.ndarray, ref: np.ndarray, m: np.ndarray, unc=None) -> None:
    r = {"key": key, "image_type": name, **metrics.image_metrics(ref, vol, brain_mask=m)}
    tp = views.through_plane_ratios(vol, ref, m)
    r.update({f"tp_{p}": v for p, v in tp.items()}, artefact_index=views.artefact_index(tp))
    if unc is not None:
        r["rho"] = views.uncertainty_calibration(unc, vol, ref, m)[0]
        r["rho_block3"] = views.uncertainty_calibration(unc, vol, ref, m, block=3)[0]
    rows.append(r)


def main(argv=None) -> pd.DataFrame:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="data/demo", help="the preprocessed paired cohort (make demo: data/demo)")
    ap.add_argument("--out", default="runs/multiview_design", help="models, per-subject scores and the tables")
    ap.add_argument("--samples", type=int, default=320, help="slices per epoch of each design (3 epochs)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore", SimulatedTrainingWarning)
    data, out = Path(args.data), Path(args.out)
    der = data / "derivatives" / "synth7t-preproc"
    if not der.is_dir():
        raise SystemExit(f"{der}: no preprocessed cohort (run make demo, or notebooks 00 and 01)")
    ds = layout.discover(data)
    cache = slices.build_cache(der, out / "cache", ds, split_file=data / layout.SPLIT_FILE, progress=False,
                               planes=views.PLANES)
    seconds = {}
    for name, runs in designs(args.samples).items():
        for tag, cfg in runs:
            run = out / "runs" / f"{name}-{tag}"
            t0 = time.perf_counter()
            if not (run / "model" / "model.json").is_file():
                train.Trainer(cfg, cache, run, progress=False).fit()
                seconds[f"{name}-{tag}"] = time.perf_counter() - t0
                print(f"trained {name}-{tag}: {seconds[f'{name}-{tag}']:.0f} s", flush=True)

    def load(run):
        return predict.load_model(out / "runs" / run / "model", "cpu")

    models = {"axial": load("axial-axial"), "mv-cond": load("mv-cond-all"), "mv-nocond": load("mv-nocond-all"),
              "three": {p: load(f"three-{p}") for p in views.PLANES}}
    vols = slices.SliceCache.open(cache).volumes
    tables = []
    for key in sorted(vols.loc[vols.split == "test", "key"]):
        done = out / f"scores_{key}.tsv"
        if not done.is_file():
            rows = []
            inp = predict.preprocessed_inputs(der, key)
            rec, s = inp["record"], ds[key]
            ref = sio.load_volume(der / rec["files"]["t7"]).data
            brain = inp["mask"] > 0
            m = metrics.evaluation_mask(ref, brain_mask=brain,
                                        excluded_slices=metrics.slice_indices(rec["excluded_slices"]))
            kw = dict(age=s.age, sex=s.sex, impaired=s.impaired, mask=inp["mask"],
                      axial_range=(rec["bottom_slice"], rec["top_slice"]))
            score(rows, key, "3T", inp["t3"].data, ref, m)
            score(rows, key, "axial model", multiview.predict_multiview(models["axial"], inp["t3"].data, **kw).prediction,
                  ref, m)
            for name in ("mv-cond", "mv-nocond", "three"):
                res = multiview.predict_multiview(models[name], inp["t3"].data, uncertainty=True, **kw)
                for p, v in res.views.items():
                    score(rows, key, f"{name} {p} view", v, ref, m)
                for fusion in ("mean", "median"):
                    score(rows, key, f"{name} fused {fusion}", views.fuse_views(res.views, fusion, mask=brain), ref,
                          m, res.uncertainty)
            pd.DataFrame(rows).to_csv(done, sep="\t", index=False)
            print(f"scored {key}", flush=True)
        tables.append(pd.read_csv(done, sep="\t"))
    table = pd.concat(tables, ignore_index=True)
    table.to_csv(out / "scores.tsv", sep="\t", index=False)
    summary = table.groupby("image_type", sort=False).mean(numeric_only=True)
    summary["psnr_vs_axial_model"] = summary["psnr"] - summary.loc["axial model", "psnr"]
    summary.to_csv(out / "summary.tsv", sep="\t")
    cols = ["psnr", "psnr_vs_axial_model", "ssim", "tp_axial", "tp_coronal", "tp_sagittal", "artefact_index", "rho",
            "rho_block3"]
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(f"{table.key.nunique()} held-out subject(s); means:")
        print(summary[[c for c in cols if c in summary]].round(3).to_string())
    return summary


if __name__ == "__main__":
    main()
