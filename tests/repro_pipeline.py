"""A tiny end-to-end pipeline that writes the sha256 of every stage's outputs (used by ``test_reproducible.py``).

Run as ``python tests/repro_pipeline.py WORK_DIR OUT_JSON``: one torch thread and (the package default) one ITK
thread, so that runs are cheap next to other work and comparable; a simulated cohort of three subjects on coarse grids,
preprocessing of two pairs (deepbet masks, N4, affine + SyN), a lone 3T aligned to the MNI template, the slice
cache, a few training steps of the ``demo-cpu`` U-Net, one predicted volume and one atlas segmentation. Every
stage's digests go into one JSON (stages in pipeline order), so two runs in two fresh processes can be compared
byte for byte. Digests are of the data arrays (NIfTI via nibabel, ``.npy`` arrays, safetensors tensors), not of
the files: gzip headers carry modification times.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np


def _digest_array(a: np.ndarray) -> str:
    a = np.ascontiguousarray(a)
    h = hashlib.sha256()
    h.update(f"{a.dtype.str}{a.shape}".encode())
    h.update(a.tobytes())
    return h.hexdigest()


def _digest_nifti(path: Path) -> str:
    img = nib.load(str(path))
    return _digest_array(np.asanyarray(img.dataobj)) + ":" + _digest_array(np.asarray(img.affine, np.float64))


def _digest_tree(root: Path) -> dict[str, str]:
    """Every NIfTI's data and affine, and every ANTs ``.mat`` transform's bytes (no time stamps in those)."""
    out = {str(p.relative_to(root)): _digest_nifti(p) for p in sorted(root.rglob("*.nii*"))}
    out.update({str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*.mat"))})
    return dict(sorted(out.items()))


def _digest_safetensors(path: Path) -> dict[str, str]:
    from safetensors.numpy import load_file

    return {k: _digest_array(v) for k, v in sorted(load_file(str(path)).items())}


def run(work: Path) -> dict:
    """Run every stage under ``work`` and return ``{stage: {name: digest}}`` (with ``seconds`` per stage)."""
    import torch

    torch.set_num_threads(1)  # deepbet, training and prediction; results depend on the count
    from synth7t.simulate import demo
    from synth7t.data import layout
    from synth7t import preprocess
    from synth7t.training import slices, trainer
    from synth7t.training import config as tconf
    from synth7t.inference import load_model, preprocessed_inputs
    from synth7t.inference.volume import predict_volume
    from synth7t.segment import AtlasConfig, segment

    out: dict = {}
    seconds: dict = {}
    t0 = time.perf_counter()

    def lap(stage: str) -> None:
        nonlocal t0
        seconds[stage] = round(time.perf_counter() - t0, 2)
        t0 = time.perf_counter()

    ds = demo.generate_cohort(work / "demo", 3, seed=0, config=demo.DemoConfig(voxel_7t=1.6, voxel_3t=2.0),
                              n_jobs=1, progress=False)
    out["cohort"] = _digest_tree(ds.root)
    lap("cohort")

    split_file = layout.write_split(layout.make_split(ds, n_test=1, seed=0), ds.root / "split.tsv")
    train_keys = sorted(layout.read_split(split_file).query("split == 'train'")["participant_id"])
    # deepbet masks and N4 on both images exercise every step of the pipeline (a single pass of each)
    cfg = preprocess.PreprocessConfig.from_preset("quick", target_spacing=None, grid_inplane=(128, 128),
                                                  mask_backend="deepbet", n4_iterations=(20, 10), remask_7t=False,
                                                  qc_figure=False, registration={"spacing": 2.0})
    deriv = work / "derivatives"
    table = preprocess.preprocess_dataset(ds.root, cfg, subjects=train_keys, n_jobs=1, progress=False,
                                          out_root=deriv)
    assert (table["status"] == "done").all(), table.to_string()
    out["preprocess"] = _digest_tree(deriv)
    lap("preprocess")

    # a lone 3T onto the MNI template (a rigid Mattes registration with the affine stage's sampling)
    test_key = min({s.key for s in ds} - set(train_keys))
    lone_cfg = preprocess.PreprocessConfig.from_preset("quick", target_spacing=2.0, grid_inplane=(96, 96),
                                                       mask_backend="given", n4_3t=False, qc_figure=False,
                                                       registration={"spacing": 3.0})
    preprocess.preprocess_lone_3t(ds[test_key].t3, work / "lone", lone_cfg, method="template",
                                  t3_mask=ds[test_key].t3_mask)
    out["lone_3t"] = _digest_tree(work / "lone")
    lap("lone_3t")

    cache = slices.build_cache(deriv, work / "cache", ds, split_file=split_file, progress=False)
    out["slice_cache"] = {name: _digest_array(np.load(cache / name)) for name in ("t3.npy", "t7.npy")}
    lap("slice_cache")

    tcfg = tconf.TrainConfig.from_preset("demo-cpu", epochs=1, batch_size=2, samples_per_epoch=6, max_steps=3,
                                   crop=[32, 32], val_slices=2, ckpt_every=100, num_workers=0,
                                   device="cpu", seed=0, threads=1)
    run_dir = work / "run"
    trainer.train(tcfg, cache, run_dir, progress=False)
    out["train"] = _digest_safetensors(run_dir / "model" / "generator.safetensors")
    lap("train")

    generator, _ = load_model(run_dir / "model", "cpu")
    key = train_keys[0]
    inp = preprocessed_inputs(deriv, key)
    s = ds[key]
    rec = inp["record"]
    vol = predict_volume(generator, inp["t3"].data, age=s.age, sex=s.sex, impaired=s.impaired,
                         bottom=int(rec["bottom_slice"]), top=int(rec["top_slice"]), mask=inp["mask"])
    out["predict"] = {key: _digest_array(vol)}
    lap("predict")

    labels, _ = segment(inp["t3"].data, inp["t3"].affine, backend="atlas",
                        config=AtlasConfig().replace(registration={"spacing": 4.0, "affine_iterations": (50, 20),
                                                                   "syn_iterations": (10, 5, 0)}))
    out["segment"] = {key: _digest_array(labels)}
    lap("segment")
    out["seconds"] = seconds
    return out


def main(argv: list[str]) -> int:
    work, out_json = Path(argv[1]), Path(argv[2])
    work.mkdir(parents=True, exist_ok=True)
    result = run(work)
    out_json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
