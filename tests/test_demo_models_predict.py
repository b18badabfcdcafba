"""The README's lone-3T command (``synth7t predict scan.nii.gz -o out.nii.gz --model M --age .. --sex ..``) with
every kind of model ``make demo`` trains (U-Net, GAN U-Net, V-Net, WATNet, multi-view U-Net), on the grid of the
demo profile itself (read from ``profiles/demo.yml``), on a simulated lone 3T and on a real-format scan (skull on,
no qform, another orientation)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from synth7t.data import layout
from synth7t import preprocess
from synth7t.training import slices, trainer
from synth7t.training import config as tconf
from synth7t.workflow.profiles import load_profile

ROOT = Path(__file__).resolve().parents[1]


def demo_profile_settings():
    """Chapter 01's grid settings and chapter 02's trainings (model name, preset, overrides) of the demo profile."""
    prof = load_profile("demo", root=ROOT)
    pre = next(nb["parameters"] for nb in prof["notebooks"] if nb["notebook"].endswith("01_preprocess.ipynb"))
    trainings = [nb["parameters"] for nb in prof["notebooks"] if nb["notebook"].endswith("02_train.ipynb")]
    return pre, trainings


@pytest.fixture(scope="module")
def demo_grid_models(coarse_cohort, tmp_path_factory):
    """Three subjects of the coarse cohort preprocessed onto the demo profile's grid, and each of the demo's
    trainings run for one step on them: ``{model_name: model folder}``."""
    pre, trainings = demo_profile_settings()
    root = coarse_cohort.root
    split = layout.write_split(layout.make_split(coarse_cohort, n_test=1, seed=0),
                               tmp_path_factory.mktemp("split") / "split.tsv")
    cfg = preprocess.PreprocessConfig.from_preset(pre["preset"], **{**pre.get("config_overrides", {}),
                                                   "target_spacing": pre["target_spacing"],
                                                   "grid_inplane": tuple(pre["grid_inplane"])},
                                 mask_backend="given", n4_3t=False, n4_7t=False, qc_figure=False)
    keys = [s.key for s in coarse_cohort][:3]
    der = tmp_path_factory.mktemp("demo_grid") / "synth7t-preproc"
    table = preprocess.preprocess_dataset(root, cfg, subjects=keys, progress=False, out_root=der)
    assert (table["status"] == "done").all(), table
    cache = slices.build_cache(der, tmp_path_factory.mktemp("cache"), coarse_cohort, split_file=split, keys=keys,
                               progress=False, planes=("axial", "coronal", "sagittal"))
    assert tuple(slices.SliceCache.open(cache).t3.shape[1:]) == tuple(pre["grid_inplane"])
    runs = tmp_path_factory.mktemp("runs")
    models = {}
    for t in trainings:  # in the profile's order: a model another starts from (init_from) comes first
        over = dict(t.get("config_overrides", {}))
        if over.get("init_from"):
            over["init_from"] = str(models[Path(over["init_from"]).parent.name])
        cfg_t = tconf.TrainConfig.from_preset(t["preset"], **{**over, "max_steps": 1, "samples_per_epoch": 16,
                                                        "val_slices": 2, "batch_size": 2})
        tr = trainer.Trainer(cfg_t, cache, runs / t["model_name"], progress=False)
        tr.fit()
        models[t["model_name"]] = runs / t["model_name"] / "model"
    return models


def test_the_demo_trains_the_five_kinds_of_model():
    names = [t["model_name"] for t in demo_profile_settings()[1]]
    assert names == ["unet-nodiag", "gan-unet-nodiag", "vnet", "watnet", "unet-mv-nodiag"]


def real_format(src: Path, dst: Path) -> Path:
    """The scan as another scanner's export: sform only (qform code 0), another voxel order (LPS, or RAS for a scan
    stored LPS), integers."""
    img = nib.load(str(src))
    ornt = nib.orientations
    target = "LPS" if nib.aff2axcodes(img.affine) != ("L", "P", "S") else "RAS"
    flipped = img.as_reoriented(ornt.ornt_transform(ornt.io_orientation(img.affine), ornt.axcodes2ornt(target)))
    assert "".join(nib.aff2axcodes(flipped.affine)) == target != "".join(nib.aff2axcodes(img.affine))
    out = nib.Nifti1Image(np.asarray(flipped.dataobj).astype(np.int16), flipped.affine)
    out.set_sform(flipped.affine, code=1)
    out.set_qform(None, code=0)
    nib.save(out, str(dst))
    return dst


@pytest.mark.slow  # five trainings, five alignments of a scan with skull: about 2.5 minutes on 2 cores
def test_the_readme_command_runs_with_every_demo_model(demo_grid_models, coarse_cohort, tmp_path, capsys):
    from synth7t.cli import main

    pre, _ = demo_profile_settings()
    s = list(coarse_cohort)[3]  # not one of the subjects the models were built from
    cache = tmp_path / "aligned"
    for name, model in demo_grid_models.items():
        out = tmp_path / f"{name}.nii.gz"
        argv = ["predict", str(s.t3), "-o", str(out), "--model", str(model), "--age", "70", "--sex", "F",
                "--mask", str(s.t3_mask), "--device", "cpu", "--alignment-cache", str(cache)]
        assert main(argv) == 0, capsys.readouterr().err
        img = nib.load(str(out))
        assert img.shape[:2] == tuple(pre["grid_inplane"])[::-1], name  # (LR, AP) voxels of the demo grid
        assert np.allclose(np.linalg.norm(img.affine[:3, :3], axis=0), pre["target_spacing"])
        assert np.asarray(img.dataobj).max() > 0.2, name
    err = capsys.readouterr().err
    assert "grid_inplane must be" not in err
    # the five models share the demo grid: the scan was aligned once, and nothing half-written is left
    assert len([p for p in cache.iterdir()]) == 1 and not list(cache.glob(".*"))
    # a real-format scan: skull on (brain extraction by deepbet), sform only, another voxel order
    scan = real_format(Path(s.t3), tmp_path / "scanner_export_T1w.nii.gz")
    assert nib.load(str(scan)).header["qform_code"] == 0
    out = tmp_path / "real_format_out.nii.gz"
    argv = ["predict", str(scan), "-o", str(out), "--model", str(demo_grid_models["unet-nodiag"]), "--age", "70",
            "--sex", "F", "--device", "cpu", "--native"]
    assert main(argv) == 0, capsys.readouterr().err
    native = nib.load(str(out).replace(".nii", "_space-native.nii", 1))
    assert native.shape == nib.load(str(scan)).shape


@pytest.mark.slow  # shares the five trainings above
def test_each_demo_model_records_the_grid_divisor_of_its_lone_path(demo_grid_models):
    """The model's record of the grid divisor is what the lone path builds its grid with: the demo U-Net
    downsamples twice (1/4), so 176 x 136 is a grid it takes, where the preprocessing default (32) would refuse it."""
    import json

    from synth7t import inference

    for name, model in demo_grid_models.items():
        meta = json.loads((model / "model.json").read_text())
        div = inference.volume.grid_divisor_of(meta)
        assert all(n % div == 0 for n in meta["input"]["grid_inplane"]), name
        assert div == (1 if name in ("vnet", "watnet") else 4), name
