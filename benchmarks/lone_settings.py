"""The lone-3T preprocessing settings against a scan whose bias field and pose are known.

    python benchmarks/lone_settings.py            # about 2 minutes on 2 cores; writes benchmarks/results/lone_settings.tsv

The scan is ``tests/batch_data.py``'s realistic 1 mm 3T with skull (the MNI 2009c T1 turned by 7 degrees on a shifted
grid, times a smooth bias field, plus noise); its clean twin (no bias field, no noise) is the truth. For each preset
(``quick``, the lone path's settings before the ``lone`` preset, and ``lone``, ``synth7t predict``'s default), in one
process with one ITK thread (the ratio is what matters; ``synth7t predict`` uses every core), through
``synth7t.preprocess.preprocess_lone_3t`` (its record's step times and alignment):

- ``n4_s``, ``residual_bias``: N4's seconds, and the bias it leaves: the SD of log(corrected / clean) in the white
  matter (the brightest 30 % of the clean brain), the global scale left out (0.099 before N4);
- ``align_s``, ``pose_error_mm``: the rigid template alignment's seconds (with the resampling onto the model's
  grid), and how far its map moves the corners of the
  brain's box (140 x 160 x 140 mm) from where the true pose (the turn's inverse) puts them.

Both use deepbet's brain mask of the scan, as ``synth7t predict`` does.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the realistic scan: tests/batch_data.py

def residual_bias(corrected, clean, wm) -> float:
    """SD of log(corrected / clean) inside ``wm``: what is left of a multiplicative field (its scale left out)."""
    import numpy as np

    return float(np.std(np.log(np.maximum(corrected[wm], 1e-6) / np.maximum(clean[wm], 1e-6))))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--presets", nargs="+", default=["quick", "lone"])
    ap.add_argument("--tsv", default=str(REPO / "benchmarks" / "results" / "lone_settings.tsv"))
    args = ap.parse_args(argv)

    import numpy as np
    import pandas as pd

    from batch_data import realistic_pose_error_mm, realistic_scan
    from synth7t.data import io as sio
    from synth7t.preprocess import PreprocessConfig, preprocess_lone_3t, set_itk_threads
    from synth7t.preprocess.steps import brain_mask, load_canonical, n4

    set_itk_threads(1)
    rows = []
    with tempfile.TemporaryDirectory(prefix="lone-settings-") as tmp:
        tmp = Path(tmp)
        scan = realistic_scan(tmp / "scan.nii.gz")
        t3, aff, _ = load_canonical(scan, "scan")
        clean, _, _ = load_canonical(realistic_scan(tmp / "clean.nii.gz", bias=False, noise=False), "clean")
        mask = brain_mask(t3, aff, "deepbet", threshold=0.5, what="scan")
        mask_file = sio.save_volume(tmp / "mask.nii.gz", mask.astype("uint8"), aff)
        wm = mask & (clean > np.percentile(clean[mask], 70))
        print(f"before N4: residual bias {residual_bias(t3, clean, wm):.4f}", flush=True)
        for name in args.presets:
            cfg = PreprocessConfig.from_preset(name, target_spacing=1.2, threads_per_job=1, mask_backend="given",
                                               qc_figure=False)
            corrected = n4(t3, aff, mask, cfg)
            # the lone path itself (its N4 again, then the alignment): its record's step times and world map
            rec = preprocess_lone_3t(scan, tmp / name, cfg, method="template", t3_mask=mask_file)
            n4_s, align_s = rec["timings"]["n4_3t"], rec["timings"]["align"]
            world_map = rec["alignment"]["world_map"]
            rows.append({"preset": name, "n4_shrink_factor": cfg.n4_shrink_factor, "n4_s": round(n4_s, 2),
                         "residual_bias": round(residual_bias(corrected, clean, wm), 4),
                         "registration_spacing": cfg.registration.spacing,
                         "affine_shrink_factors": "x".join(map(str, cfg.registration.affine_shrink_factors)),
                         "align_s": round(align_s, 2), "pose_error_mm": round(realistic_pose_error_mm(world_map), 3)})
            print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    Path(args.tsv).parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.tsv, sep="\t", index=False)
    first = table.iloc[0]
    for r in table.iloc[1:].itertuples():
        print(f"{r.preset} against {first['preset']}: N4 {first['n4_s'] / r.n4_s:.2f}x as fast, alignment "
              f"{first['align_s'] / r.align_s:.2f}x as fast")
    print(table.to_string(index=False))
    print(f"wrote {args.tsv}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
