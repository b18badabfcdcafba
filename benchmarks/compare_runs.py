"""Compare two demo runs (two fresh clones after ``make demo``): the bytes of every cohort, slice-cache, weight,
prediction and segmentation file, and the rows of the tables the book reports.

    python benchmarks/compare_runs.py /tmp/cloneA /tmp/cloneB

Prints each differing file, the count of identical ones, and per table how many rows are identical.
"""
import hashlib, sys
from pathlib import Path
import pandas as pd
A, B = Path(sys.argv[1]), Path(sys.argv[2])
def digest(p): return hashlib.sha256(p.read_bytes()).hexdigest()
pats = ["data/demo/**/*.nii.gz", "data/demo/*.tsv", "data/demo-amygdala/**/*.nii.gz", "data/demo-lone/**/*.nii.gz",
        "runs/demo/02_train/*/model/*.safetensors", "runs/demo/02_train/cache/*.npy",
        "runs/demo/03_predict/*/*.nii.gz", "runs/demo/segment/atlas/**/*.nii.gz",
        "runs/demo/07_segmentation/**/*.nii.gz"]
same = diff = only = 0
for pat in pats:
    fa = {p.relative_to(A) for p in A.glob(pat)}
    fb = {p.relative_to(B) for p in B.glob(pat)}
    for r in sorted(fa & fb):
        if digest(A / r) == digest(B / r): same += 1
        else:
            diff += 1; print("DIFFERS", r)
    only += len(fa ^ fb)
print(f"{same} identical files, {diff} differ, {only} in one run only")
for t in ["runs/demo/04_evaluate/table1.tsv", "runs/demo/04_evaluate/scores.tsv", "runs/demo/07_segmentation/structure_dice.tsv",
          "runs/demo/00_demo_data/premise_margins.tsv", "runs/demo/04_evaluate/premise_margins.tsv",
          "runs/demo/06_rating_analysis/rank_summary.tsv", "runs/demo/08_diagnosis/score_summary.tsv"]:
    if not ((A / t).is_file() and (B / t).is_file()):  # chapter 00's premise check is off in the demo profile
        print(f"{t}: {'absent in both runs' if not ((A / t).is_file() or (B / t).is_file()) else 'in one run only'}")
        continue
    a, b = pd.read_csv(A / t, sep="\t"), pd.read_csv(B / t, sep="\t")
    common = a.merge(b, how="inner", on=list(a.columns))
    print(f"{t}: {len(a)} / {len(b)} rows, {len(common)} identical rows")
