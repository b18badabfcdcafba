"""The lone-3T preprocessing settings against a scan whose bias field and pose are known.

    python benchmarks/lone_settings.py            # about 2 minutes on 2 cores; writes benchmarks/results/lone_settings.tsv

The scan is ``tests/batch_data.py``'s realistic 1 mm 3T with skull (the MNI 2009c T1 turned by 7 degrees on a shifted
grid, times a smooth bias field, plus noise); its clean twin (no bias field, no noise) is the truth. For each preset
(``quick``, the lone path's settings before any ``lone`` preset; ``lone-2mm``, the first ``lone`` preset: N4 for
50/50/25 iterations with ANTs' B-spline field, the alignment at 2 mm for 500/250/50; and ``lone``, ``synth7t
predict``'s default), in one process with one ITK thread (the ratio is what matters; ``synth7t predict`` uses every
core), through
``synth7t.preprocess.preprocess_lone_3t`` (its record's step times and alignment):

- ``n4_s``, ``residual_bias``: N4's seconds, and the bias it leaves: the SD of log(corrected / clean) in the white
  matter (the brightest 30 % of the clean brain), the global scale left out (0.099 before N4);
- ``align_s``, ``pose_error_mm``: the rigid template alignment's seconds (with the resampling onto the model's
  grid), and how far its map moves the corners of the
  brain's box (140 x 160 x 140 mm) from where the true pose (the turn's inverse) puts them;
- ``worst_turned_pose_mm``: the largest such distance when the N4-corrected scan is turned a further 15, 12 and 10
  degrees about each axis in turn and shifted by up to 25 mm (its header changed, so the true pose is known): how
  much rotation the coarse levels still find.

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


#: settings measured besides the presets: a name, the preset it starts from and what it changes
VARIANTS = {"lone-2mm": ("lone", {"n4_iterations": (50, 50, 25), "n4_field": "bspline",
                                  "registration": {"spacing": 2.0, "affine_iterations": (500, 250, 50)}})}


def turned(axis: int, degrees: float, shift_mm) -> "np.ndarray":
    """A 4 x 4 turn about one world axis through the origin, then a shift (mm)."""
    import numpy as np

    a = np.radians(degrees)
    i, j = [(1, 2), (0, 2), (0, 1)][axis]
    m = np.eye(4)
    m[i, i] = m[j, j] = np.cos(a)
    m[i, j], m[j, i] = -np.sin(a), np.sin(a)
    m[:3, 3] = shift_mm
    return m


#: the further poses of the scan (its header turned and shifted) each setting's alignment must still find
FURTHER_POSES = [(0, 15.0, (10.0, -15.0, 20.0)), (2, 12.0, (-20.0, 5.0, 0.0)), (1, -10.0, (0.0, 20.0, -15.0))]


def worst_turned_pose_mm(corrected, mask, aff, cfg, tmp: Path) -> float:
    """The largest pose error of the rigid template alignment over :data:`FURTHER_POSES`."""
    import numpy as np

    from batch_data import BRAIN_BOX_CORNERS_MM, realistic_turn
    from synth7t.preprocess.lone3t import _align_template

    corners = np.array([[*p, 1.0] for p in BRAIN_BOX_CORNERS_MM])
    worst = 0.0
    for k, pose in enumerate(FURTHER_POSES):
        extra = turned(*pose)
        _, _, world_map, _ = _align_template(corrected * mask, extra @ aff, cfg, cfg.target_spacing, "Rigid",
                                             tmp / f"pose{k}", "scan")
        truth = extra @ np.linalg.inv(realistic_turn())
        worst = max(worst, float(np.linalg.norm((corners @ (world_map - truth).T)[:, :3], axis=1).max()))
    return worst


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--presets", nargs="+", default=["quick", "lone-2mm", "lone"],
                    help=f"presets or the variants {', '.join(VARIANTS)}")
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
            preset, changes = VARIANTS.get(name, (name, {}))
            cfg = PreprocessConfig.from_preset(preset, target_spacing=1.2, threads_per_job=1, mask_backend="given",
                                               qc_figure=False).replace(**changes)
            corrected = n4(t3, aff, mask, cfg)
            # the lone path itself (its N4 again, then the alignment): its record's step times and world map
            rec = preprocess_lone_3t(scan, tmp / name, cfg, method="template", t3_mask=mask_file)
            n4_s, align_s = rec["timings"]["n4_3t"], rec["timings"]["align"]
            world_map = rec["alignment"]["world_map"]
            rows.append({"preset": name, "n4_shrink_factor": cfg.n4_shrink_factor,
                         "n4_iterations": "x".join(map(str, cfg.n4_iterations)), "n4_s": round(n4_s, 2),
                         "residual_bias": round(residual_bias(corrected, clean, wm), 4),
                         "registration_spacing": cfg.registration.spacing,
                         "affine_shrink_factors": "x".join(map(str, cfg.registration.affine_shrink_factors)),
                         "affine_iterations": "x".join(map(str, cfg.registration.affine_iterations)),
                         "align_s": round(align_s, 2), "pose_error_mm": round(realistic_pose_error_mm(world_map), 3),
                         "worst_turned_pose_mm": round(worst_turned_pose_mm(corrected, mask, aff, cfg, tmp / name), 3)})
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
