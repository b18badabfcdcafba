"""Cost and margin of the premise check under other atlas settings, on a finished demo run (for budget decisions).

    python benchmarks/premise_settings.py raw '{"registration": {"spacing": 1.5, "syn_iterations": [40, 20, 10]}}' \
        --root /tmp/clone --out /tmp/premise-raw10
    python benchmarks/premise_settings.py preprocessed '{"registration": {"spacing": 1.5}}' --root /tmp/clone

``raw`` repeats chapter 00's check (the raw 7T and the aligned raw 3T of the held-out subjects), ``preprocessed``
chapter 04's (their 3T and 7T on the model grid); both segment with the atlas backend (2 workers) and print the wall
time and the 7T-minus-3T margins against the ground truth (mean Dice, amygdala, hippocampus; ``holds``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

from synth7t.simulate import checks
from synth7t import inference, segment
from synth7t.data import layout
from synth7t.evaluation import regional
from synth7t.preprocess import load_records


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("images", choices=["raw", "preprocessed"])
    ap.add_argument("config", type=json.loads, help="atlas settings over the defaults, as JSON")
    ap.add_argument("--root", default=".", help="the clone where make demo ran (data/demo, runs/demo)")
    ap.add_argument("--out", default=None, help="segmentations (default: <root>/runs/premise_settings/<hash>)")
    ap.add_argument("--n-jobs", type=int, default=2)
    args = ap.parse_args(argv)
    root = Path(args.root)
    data = root / "data" / "demo"
    der = data / "derivatives" / "synth7t-preproc"
    tag = hashlib.sha1(json.dumps(args.config, sort_keys=True).encode()).hexdigest()[:8]
    out = Path(args.out) if args.out else root / "runs" / "premise_settings" / f"{args.images}-{tag}"
    ds = layout.discover(data)
    split = layout.read_split(data / layout.SPLIT_FILE)
    held = set(split.loc[split["split"] == "test", "participant_id"])
    keys = [s.key for s in ds if s.participant_id in held]
    t0 = time.perf_counter()
    if args.images == "raw":
        _, margins, _ = checks.check_premise(ds, keys, out, seg_config=args.config, n_jobs=args.n_jobs)
    else:
        records = {r["key"]: r for r in load_records(der) if r.get("status") == "done"}
        images = inference.collect_images(der, root / "runs" / "demo" / "03_predict", keys=keys)
        pairs = images[images.image_type.isin(["3T", "7T"])]
        seg = segment.segment_batch(pairs[["key", "image_type", "path"]], out, backend="atlas", config=args.config,
                                    n_jobs=args.n_jobs, progress=False)
        truth = {k: der / records[k]["files"]["labels"] for k in keys}
        scores = regional.truth_dice({(r.key, r.image_type): r.path for r in seg.itertuples()}, truth,
                                     excluded={k: records[k].get("excluded_slices") or [] for k in keys})
        margins = regional.premise_margins(scores)
    print(f"{args.images} {json.dumps(args.config)}: {time.perf_counter() - t0:.0f} s for {2 * len(keys)} segmentations")
    print(margins.round(4).to_string())
    return margins


if __name__ == "__main__":
    main()
