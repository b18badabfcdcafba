"""Slice cache, trainer, checkpoints and resume on a small preprocessed demo cohort (CPU)."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from synth7t.training import slices, trainer
from synth7t.training import config as tconf


def _cfg(**kw):
    base = dict(epochs=2, batch_size=4, samples_per_epoch=16, crop=[64, 64], val_slices=8, ckpt_every=3,
                lambda_perc=0.0, perceptual_share=None, num_workers=0, device="cpu", seed=0)
    base.update(kw)
    return tconf.TrainConfig.from_preset("demo-cpu", **base)


def test_config_presets_and_errors(tmp_path):
    c = tconf.TrainConfig.from_preset("paper-gan")
    assert c.gan and c.n_critic == 5 and c.n_critic_first_epoch == 1 and c.lr_decay == 0.9 and c.lambda_perc == 0.01
    u = tconf.TrainConfig.from_preset("paper-unet")
    assert not u.gan and u.lr_decay == 0.5 and u.betas_g == [0.9, 0.999] and u.epochs == 4
    assert tconf.TrainConfig.from_preset("paper-gan").betas_d == [0.0, 0.9]
    p = c.save(tmp_path / "c.json")
    assert tconf.load_train_config(p) == c
    assert tconf.TrainConfig.from_dict(json.loads(json.dumps(c.to_dict()))) == c
    # the notebook passes its overrides as one dict
    overrides = {"epochs": 1, "crop": (64, 64)}
    assert tconf.TrainConfig.from_preset("demo-cpu", **overrides).crop == [64, 64]
    with pytest.raises(ValueError, match=r"unknown TrainConfig key\(s\) \['learning_rate'\]; known keys: .*lr_g"):
        tconf.TrainConfig.from_preset("demo-cpu", **{"learning_rate": 1})
    with pytest.raises(ValueError, match="unknown TrainConfig key.*lr"):
        tconf.TrainConfig.from_dict({**c.to_dict(), "lr": 1})
    with pytest.raises(ValueError, match="unknown TrainConfig preset 'huge'; known presets: paper-unet"):
        tconf.TrainConfig.from_preset("huge")
    with pytest.raises(ValueError, match="batch_size"):
        tconf.TrainConfig.from_preset("demo-cpu", batch_size=0)


def test_slice_cache_samples(preprocessed_cohort, tmp_path):
    derivatives, ds, split_file = preprocessed_cohort
    cache = slices.build_cache(derivatives, tmp_path / "cache", ds, split_file=split_file, progress=False)
    c = slices.SliceCache.open(cache)
    # excluded artefact slices and background slices are never samples
    for key, g in c.index.groupby("key"):
        rec = json.loads(next(derivatives.glob(f"{key}/anat/{key}_desc-preproc.json")).read_text())
        excluded = {z for a, b in rec["excluded_slices"] for z in range(a, b + 1)}
        assert not excluded & set(g["z"])
        assert g["slice_location"].between(-1.2, 1.2).all()
    assert set(c.index["split"]) <= {"train", "test"}
    data = slices.SliceDataset(c, "train", crop=(32, 48), seed=1)
    item = data[0]
    assert item["x"].shape == (3, 32, 48) and item["y"].shape == (1, 32, 48) and item["context"].shape == (4,)
    # the centre input channel is the 3T slice at z, its neighbours z-1 and z+1
    full = slices.SliceDataset(c, "train", crop=None)
    it = full[5]
    r = full.index.iloc[5]
    np.testing.assert_array_equal(it["x"][1].numpy(), np.asarray(c.t3[int(r["offset"])], np.float32))
    # rebuilding from the same records reuses the cache
    mtime = (cache / "t3.npy").stat().st_mtime_ns
    slices.build_cache(derivatives, cache, ds, split_file=split_file, progress=False)
    assert (cache / "t3.npy").stat().st_mtime_ns == mtime
    with pytest.raises(ValueError, match="odd"):
        slices.SliceDataset(c, "train", n_input_slices=2)
    assert c.meta["spacing_mm"] == pytest.approx(1.6)  # the coarse cohort's 7T voxels, kept by the preprocessing
    # a cache written before spacing_mm was recorded is rebuilt, not reused
    meta = json.loads((cache / "cache.json").read_text())
    del meta["spacing_mm"]
    (cache / "cache.json").write_text(json.dumps(meta))
    slices.build_cache(derivatives, cache, ds, split_file=split_file, progress=False)
    assert slices.SliceCache.open(cache).meta["spacing_mm"] == pytest.approx(1.6)


@pytest.fixture(scope="module")
def cache(preprocessed_cohort, tmp_path_factory):
    derivatives, ds, split_file = preprocessed_cohort
    return slices.build_cache(derivatives, tmp_path_factory.mktemp("cache"), ds, split_file=split_file, progress=False)


def test_short_training_lowers_validation_loss_and_reloads_safely(cache, tmp_path):
    cfg = _cfg(epochs=3, lr_g=2e-3, samples_per_epoch=32)
    tr = trainer.Trainer(cfg, cache, tmp_path / "run", progress=False)
    before = tr.validate()
    after = tr.fit()
    assert after["psnr"] > before["psnr"]
    model_dir = tmp_path / "run" / "model"
    meta = json.loads((model_dir / "model.json").read_text())
    as_json = lambda d: json.loads(json.dumps(d))  # noqa: E731 (tuples become lists in JSON)
    assert meta["model_config"] == as_json(tr.model_config.to_dict())
    # the saved config is the given one with the torch thread count really used filled in
    assert tr.cfg.threads == torch.get_num_threads() and cfg.threads is None
    assert meta["train_config"] == as_json(cfg.replace(threads=tr.cfg.threads).to_dict())
    assert json.loads((tmp_path / "run" / "config.json").read_text())["threads"] == tr.cfg.threads
    # the grid it learned on, which lone-3T prediction reproduces
    assert meta["input"]["spacing_mm"] == pytest.approx(1.6) and meta["input"]["grid_inplane"] == [128, 96]
    from synth7t.models import build_model

    g = build_model(meta["model_config"])
    trainer.load_weights(model_dir / "generator.safetensors", g)
    ck = trainer.latest_checkpoint(tmp_path / "run" / "checkpoints")
    state = trainer.load_state(ck / "state.pt")  # weights_only=True
    assert "opt_g" in state and "torch_rng" in state
    log = (tmp_path / "run" / "val_log.csv").read_text().splitlines()
    assert len(log) == 1 + 3 and "psnr_3t" in log[0]


def test_gan_schedule_critic_steps(cache, tmp_path):
    cfg = tconf.TrainConfig.from_preset("demo-cpu-gan", epochs=2, batch_size=2, samples_per_epoch=12, crop=[64, 64],
                                  lambda_perc=0.0,
                                  n_critic=3, max_steps=0, val_slices=4, ckpt_every=1000, device="cpu")
    tr = trainer.Trainer(cfg, cache, tmp_path / "gan", progress=False)
    nb = tr.batches_per_epoch
    tr.fit()
    # first epoch: one generator step per batch; afterwards one per n_critic batches
    assert tr.pos.g_step == nb + nb // 3
    rows = (tmp_path / "gan" / "train_log.csv").read_text().splitlines()
    assert "critic" in rows[0]


KILL_SCRIPT = """
import os, sys
from synth7t.training import trainer, config as train_config
cfg = train_config.TrainConfig.from_preset("demo-cpu", epochs=2, batch_size=4, samples_per_epoch=16, crop=[64, 64],
                                     val_slices=8, ckpt_every=2, lambda_perc=0.0, perceptual_share=None,
                                     device="cpu", seed=0)
t = trainer.Trainer(cfg, sys.argv[1], sys.argv[2], progress=False)
orig = t._train_batch
def killer(batch):
    out = orig(batch)
    if t.pos.step + 1 == int(sys.argv[3]):
        os._exit(17)  # killed mid-run, after the checkpoint of step 4 and before step 5 ends
    return out
t._train_batch = killer
t.fit()
"""


def test_kill_and_resume_reaches_the_same_final_state(cache, tmp_path):
    ref = trainer.Trainer(_cfg(ckpt_every=2), cache, tmp_path / "ref", progress=False)
    ref.fit()
    proc = subprocess.run([sys.executable, "-c", KILL_SCRIPT, str(cache), str(tmp_path / "killed"), "5"])
    assert proc.returncode == 17
    ck = trainer.latest_checkpoint(tmp_path / "killed" / "checkpoints")
    assert ck is not None and json.loads((ck / "meta.json").read_text())["step"] == 4
    resumed = trainer.Trainer(_cfg(ckpt_every=2), cache, tmp_path / "killed", progress=False)
    assert resumed.pos.step == 4
    resumed.fit()
    assert resumed.pos.step == ref.pos.step and resumed.pos.epoch == ref.pos.epoch == 2
    for (k, a), (_, b) in zip(ref.generator.state_dict().items(), resumed.generator.state_dict().items()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=k)
    assert not list((tmp_path / "killed" / "checkpoints").glob(".*.tmp"))


@pytest.fixture(scope="module")
def trained_model(cache, tmp_path_factory):
    run = tmp_path_factory.mktemp("model_run")
    trainer.Trainer(_cfg(epochs=1, samples_per_epoch=8), cache, run, progress=False).fit()
    return run / "model"


def test_prediction_writes_grid_7t_and_native_volumes_and_records_failures(trained_model, preprocessed_cohort,
                                                                          tmp_path):
    import nibabel as nib

    from synth7t import inference

    derivatives, ds, _ = preprocessed_cohort
    keys = [s.key for s in ds][:2] + ["sub-999"]
    table = inference.predict_subjects(trained_model, derivatives, ds, tmp_path / "pred", keys=keys, device="cpu",
                                     progress=False, name="unet", spaces=("grid", "7T", "native"))
    assert list(table["status"]) == ["done", "done", "failed"]
    assert "sub-999" in table.loc[2, "reason"]
    out = nib.load(table.loc[0, "path"])
    inp = inference.preprocessed_inputs(derivatives, keys[0])
    rec = inp["record"]
    assert out.shape == inp["t3"].shape and np.allclose(out.affine, inp["t3"].affine)
    data = np.asarray(out.dataobj)
    assert data.min() >= 0 and data.max() <= 1 and not data[inp["mask"] == 0].any()
    # the full 7T grid: the record's space, and the crop is undone exactly
    full = nib.load(inference.prediction_path(tmp_path / "pred", keys[0], "unet", "7T"))
    assert full.shape == tuple(rec["grid"]["space_shape"]) and np.allclose(full.affine, rec["grid"]["space_affine"])
    assert np.isclose(np.asarray(full.dataobj).sum(), data.sum(), rtol=1e-5)
    # the native 3T grid, in the file's own orientation (the demo stores its 3T as LIA)
    nat = nib.load(inference.prediction_path(tmp_path / "pred", keys[0], "unet", "native"))
    src = nib.load(str(ds[keys[0]].t3))
    assert nat.shape == src.shape and np.allclose(nat.affine, src.affine)
    # the inverse registration is right: the preprocessed (registered, normalised) 3T sent back to the 3T grid
    # matches the original 3T inside its brain mask
    back, _ = inference.to_native_3t(inp["t3"].data, rec, derivatives, ds[keys[0]].t3)
    m3 = np.asarray(nib.load(str(ds[keys[0]].t3_mask)).dataobj) > 0
    m3 &= back > 0
    r = np.corrcoef(back[m3], np.asarray(src.dataobj, np.float32)[m3])[0, 1]
    assert r > 0.9, r
    # rerun skips finished volumes; the image collector finds 3T, 7T and the model's predictions
    again = inference.predict_subjects(trained_model, derivatives, ds, tmp_path / "pred", keys=keys[:1],
                                     device="cpu", progress=False, name="unet", spaces=("grid", "7T", "native"))
    assert list(again["status"]) == ["skipped"]
    (tmp_path / "predict_dir").mkdir()
    (tmp_path / "pred").rename(tmp_path / "predict_dir" / "unet")
    images = inference.collect_images(derivatives, tmp_path / "predict_dir")
    per_key = images.groupby("key")["name"].apply(list).to_dict()
    assert per_key[keys[0]] == ["3T", "7T", "U-Net"] and per_key[keys[1]] == ["3T", "7T", "U-Net"]
    assert all(names[:2] == ["3T", "7T"] for names in per_key.values())
    with pytest.raises(ValueError, match="space"):
        inference.predict_subjects(trained_model, derivatives, ds, tmp_path / "x", spaces=("mni",), progress=False)
    with pytest.raises(inference.ModelFolderError, match="not a model folder"):
        inference.load_model(tmp_path)


def test_lone_3t_prediction_template_and_native(trained_model, preprocessed_cohort, tmp_path):
    import nibabel as nib

    from synth7t import inference, preprocess

    _, ds, _ = preprocessed_cohort
    s = ds[0]
    cfg = preprocess.PreprocessConfig.from_preset("quick", target_spacing=1.6, grid_inplane=(128, 96), n4_3t=False,
                                 registration={"spacing": 3.0}, qc_figure=False)
    rec = inference.predict_file(s.t3, tmp_path / "out.nii.gz", trained_model, age=s.age, sex=s.sex,
                               impaired=s.impaired, method="template", preprocess_preset=cfg, native=True,
                               t3_mask=s.t3_mask, device="cpu")
    out = nib.load(rec["output"])
    assert out.shape[:2] == (96, 128) and rec["space"] == "MNI152NLin2009cSym"
    nat = nib.load(rec["native"])
    src = nib.as_closest_canonical(nib.load(str(s.t3)))
    assert nat.shape == src.shape and np.allclose(nat.affine, src.affine)
    assert np.asarray(nat.dataobj).max() > 0.2


def test_lone_3t_prediction_uses_the_models_training_grid(trained_model, preprocessed_cohort, tmp_path, capsys):
    """`synth7t predict in out`: the lone 3T is aligned onto the voxel size and slice size of the model's training
    data (model.json), not the preset's default 0.7 mm and 288 x 224; a rerun skips the existing output; an existing
    file that synth7t did not write is taken as an input, never overwritten."""
    import nibabel as nib

    from synth7t import inference
    from synth7t.data import io
    from synth7t.cli import main

    _, ds, _ = preprocessed_cohort
    s = ds[1]
    out = tmp_path / "out.nii.gz"
    argv = ["predict", str(s.t3), "-o", str(out), "--model", str(trained_model), "--age", str(s.age), "--sex", s.sex,
            "--impaired", str(int(s.impaired)), "--mask", str(s.t3_mask), "--device", "cpu"]
    assert main(argv) == 0
    img = nib.load(str(out))
    assert img.shape[:2] == (96, 128)
    assert np.allclose(np.linalg.norm(img.affine[:3, :3], axis=0), 1.6)
    assert io.is_synth7t_output(out) and not io.is_synth7t_output(s.t3)
    # the model card says the demo model learned from simulated data, and predict says it once
    card = json.loads((Path(trained_model) / "model_card.json").read_text())
    assert card["training_data"]["simulated"] is True and (Path(trained_model) / "MODEL_CARD.md").is_file()
    assert capsys.readouterr().err.count("trained on simulated data") == 1
    # the sidecar: the content checks passed, and the score against the card's training inputs
    side = json.loads((tmp_path / "out.json").read_text())
    assert {f["check"]: f["outcome"] for f in side["input_checks"]} == dict.fromkeys(
        ["affine", "voxel_size", "extent", "slice_thickness", "brain_volume", "tissue_order", "alignment"], "ok")
    stats = card["input_statistics"]
    assert stats["n_inputs"] >= 2 and side["ood"]["threshold"] == stats["threshold"]
    assert 0 < side["ood"]["score"] < stats["threshold"], side["ood"]
    from synth7t.preprocess import itk_threads

    assert side["itk_threads"] == itk_threads()  # the default (not --reproducible): the count this process runs ITK at
    mtime = out.stat().st_mtime_ns
    assert main(argv) == 0  # a rerun (e.g. notebook 03 run again) keeps the output
    assert "exists: skipped" in capsys.readouterr().out and out.stat().st_mtime_ns == mtime
    # a model exported before the grid was recorded: the preset's grid, with a warning that says so
    old = inference.load_model(trained_model, "cpu")
    old[1].pop("input")
    with pytest.warns(UserWarning, match="does not record the voxel size"), pytest.raises(Exception):
        inference.predict_file(s.t3, tmp_path / "old.nii.gz", old, age=s.age, sex=s.sex, impaired=s.impaired,
                             t3_mask=tmp_path / "no_such_mask.nii.gz")
    foreign = tmp_path / "someone_elses.nii.gz"
    foreign.write_bytes(Path(s.t3).read_bytes())
    assert main([*argv[:3], str(foreign), *argv[4:]]) == 1
    assert "synth7t did not write it" in capsys.readouterr().err
    assert foreign.read_bytes() == Path(s.t3).read_bytes()


def test_predict_cli_bad_inputs_give_one_line_errors(trained_model, tmp_path, capsys):
    from conftest import write_nifti

    from synth7t.cli import main

    txt = tmp_path / "notes.txt.nii.gz"
    txt.write_text("not an image")
    four_d = write_nifti(tmp_path / "four_d.nii.gz", np.ones((4, 4, 4, 2), np.float32))
    nan = write_nifti(tmp_path / "nan.nii.gz", np.full((4, 4, 4), np.nan, np.float32))
    good = write_nifti(tmp_path / "ok.nii.gz")
    cases = [
        ([str(txt), "-o", str(tmp_path / "o.nii.gz"), "--model", str(trained_model)], "unreadable"),
        ([str(tmp_path / "missing.nii.gz"), "-o", str(tmp_path / "o.nii.gz"), "--model", str(trained_model)],
         "does not exist"),
        ([str(four_d), "-o", str(tmp_path / "o.nii.gz"), "--model", str(trained_model)], "expected a 3D volume"),
        ([str(nan), "-o", str(tmp_path / "o.nii.gz"), "--model", str(trained_model)], "non-finite"),
        ([str(good), "-o", str(tmp_path / "o.nii.gz"), "--model", str(tmp_path)], "not a model folder"),
        ([str(good), "-o", str(tmp_path / "o.nii.gz"), "--model", str(trained_model), "--age", "70", "--sex", "F"],
         "conditioned on the diagnosis"),
        ([str(good), "-o", str(tmp_path / "o.png"), "--model", str(trained_model)], "must end in .nii or .nii.gz"),
    ]
    for argv, message in cases:
        code = main(["predict", *argv])
        err = capsys.readouterr().err
        # a model trained on the simulated demo cohort says so in one line before anything runs
        warning, _, err = err.partition("\n") if "trained on simulated data" in err else ("", "", err)
        assert code == 1, argv
        assert message in err and err.count("\n") == 1 and "Traceback" not in err, (argv, err)
        assert not warning or warning.startswith("synth7t predict: warning: this model was trained on simulated")
    # a folder of inputs: the bad ones are recorded, the batch goes on, the exit status says so
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    for p in (nan, good):
        (inputs / p.name).write_bytes(p.read_bytes())
    code = main(["predict", str(inputs), "--model", str(trained_model), "--output-dir", str(tmp_path / "many"),
                 "--age", "70", "--sex", "F", "--impaired", "0"])
    assert code == 1
    import pandas as pd

    table = pd.read_csv(tmp_path / "many" / "predictions.tsv", sep="\t")
    assert len(table) == 2 and (table["status"] == "failed").all()
    assert table["reason"].str.contains("non-finite").any()


def test_predict_volume_skips_slices_without_brain():
    """With a mask, only axial slices holding brain go through the network; the others are zero, and the rest
    equals the unmasked prediction times the mask."""
    import torch

    from synth7t import inference

    class Counting(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = torch.nn.Parameter(torch.tensor(0.5))
            self.seen = 0

        def forward(self, x):
            self.seen += x.shape[0]
            return (x[:, 1:2] * self.scale).clamp(0, 1)

    rng = np.random.default_rng(0)
    t3 = rng.random((8, 12, 10)).astype(np.float32)
    mask = np.zeros(t3.shape, bool)
    mask[2:6, 3:9, 3:7] = True
    g = Counting()
    full = inference.volume.predict_volume(g, t3, age=70, sex="F", impaired=None, bottom=3, top=6, batch_size=3)
    assert g.seen == 10
    g.seen = 0
    masked = inference.volume.predict_volume(g, t3, age=70, sex="F", impaired=None, bottom=3, top=6, batch_size=3, mask=mask)
    assert g.seen == 4  # axial slices 3..6
    np.testing.assert_allclose(masked, full * mask)
    assert not masked[:, :, [0, 1, 2, 7, 8, 9]].any()
    with pytest.raises(ValueError, match="mask shape"):
        inference.volume.predict_volume(g, t3, age=70, sex="F", impaired=None, bottom=3, top=6, mask=mask[:, :, :5])


def test_baseline_presets_follow_the_paper_and_cui_et_al(cache, tmp_path):
    """§2.6: Cui et al.'s settings (V-Net 64^3, batch 40, lr 1e-3, weight decay 1e-5; WATNet-2D 64 x 64 x 3, batch
    128, lr 1e-4; L1 only, no augmentation) with the paper's lr x 0.8 per epoch for 20 epochs."""
    from synth7t.models import get_model_config

    v, w = tconf.TrainConfig.from_preset("paper-vnet"), tconf.TrainConfig.from_preset("paper-watnet")
    assert (v.model, v.batch_size, v.lr_g, v.weight_decay, v.lr_decay, v.epochs) == ("vnet", 40, 1e-3, 1e-5, 0.8, 20)
    assert (w.model, w.batch_size, w.lr_g, w.weight_decay, w.lr_decay, w.epochs) == ("watnet-2d", 128, 1e-4, 0.0, 0.8,
                                                                                    20)
    for c in (v, w, tconf.TrainConfig.from_preset("demo-cpu-vnet"), tconf.TrainConfig.from_preset("demo-cpu-watnet")):
        assert c.lambda_perc == 0 and not c.gan and not c.augment and c.crop is None and c.patch_overlap == 8
    assert get_model_config("vnet").patch_size == 64 and get_model_config("watnet-2d").patch_size == 64
    assert get_model_config("watnet-2d").n_input_slices == 3
    for bad, match in [({"weight_decay": -1.0}, "weight_decay"), ({"patch_overlap": -1}, "patch_overlap"),
                       ({"patch_overlap": 2.5}, "patch_overlap")]:
        with pytest.raises(ValueError, match=match):
            tconf.TrainConfig.from_preset("demo-cpu-vnet", **bad)
    for bad, match in [({"crop": [32, 32]}, "crop and augment apply to slice models"),
                       ({"augment": True}, "crop and augment apply to slice models"),
                       ({"gan": True}, "without a critic"), ({"patch_overlap": 32}, "smaller than the patch size")]:
        with pytest.raises(ValueError, match=match):
            trainer.Trainer(tconf.TrainConfig.from_preset("demo-cpu-vnet", **bad), cache, tmp_path / "bad", progress=False)


@pytest.mark.parametrize("preset,name,overrides", [
    ("demo-cpu-vnet", "vnet", dict(batch_size=2, samples_per_epoch=4, val_slices=4)),
    ("demo-cpu-watnet", "watnet", dict(batch_size=8, samples_per_epoch=16, val_slices=4)),
])
def test_baseline_trains_exports_reloads_and_predicts_a_volume(preset, name, overrides, cache, preprocessed_cohort,
                                                              tmp_path):
    import nibabel as nib

    from synth7t import inference
    from synth7t.training import patches

    derivatives, ds, _ = preprocessed_cohort
    cfg = tconf.TrainConfig.from_preset(preset, epochs=1, **overrides)
    tr = trainer.Trainer(cfg, cache, tmp_path / "run", progress=False)
    assert isinstance(tr.train_ds, patches.PatchDataset)
    assert tr.opt_g.param_groups[0]["weight_decay"] == cfg.weight_decay
    if tr.geometry.spatial_dims == 3:
        slabs = tr._validation_slabs()
        assert slabs and sum(len(s[3]) for s in slabs) <= cfg.val_slices
        assert {s[0] for s in slabs} <= set(tr.val_keys)
    metrics = tr.fit()
    assert tr.pos.step == 2 and all(np.isfinite(metrics[k]) for k in ("psnr", "ssim", "psnr_3t", "ssim_3t"))
    meta = json.loads((tmp_path / "run" / "model" / "model.json").read_text())
    assert meta["inference"]["patch_overlap"] == 8 and meta["inference"]["blend"] == "gaussian"
    assert meta["inference"]["patch_size"] == tr.geometry.size
    assert trainer.Trainer(cfg, cache, tmp_path / "run", progress=False).pos.step == 2  # resumes
    vols = slices.SliceCache.open(cache).volumes
    key = sorted(vols.loc[vols["split"] == "test", "key"])[0]  # a held-out subject
    table = inference.predict_subjects(tmp_path / "run" / "model", derivatives, ds, tmp_path / "pred", keys=[key],
                                     device="cpu", progress=False, name=name, spaces=("grid",))
    assert list(table["status"]) == ["done"], table
    inp = inference.preprocessed_inputs(derivatives, key)
    out = nib.load(inference.prediction_path(tmp_path / "pred", key, name, "grid"))
    data = np.asarray(out.dataobj)
    assert out.shape == inp["t3"].shape and np.allclose(out.affine, inp["t3"].affine)
    assert data.min() >= 0 and data.max() <= 1 and data.any() and not data[inp["mask"] == 0].any()


# ---------------------------------------------------------------------------------------- multi-view


def test_multiview_cache_adds_planes_and_samples_mask_artefact_rows(preprocessed_cohort, tmp_path):
    from synth7t.data import io as sio
    from synth7t.data import planes

    derivatives, ds, split_file = preprocessed_cohort
    root = slices.build_cache(derivatives, tmp_path / "cache", ds, split_file=split_file, progress=False)
    with pytest.raises(ValueError, match="holds axial slices, not coronal"):
        slices.SliceDataset(root, "train", planes=["coronal"])
    mtime = (root / "t3.npy").stat().st_mtime_ns
    slices.build_cache(derivatives, root, ds, split_file=split_file, progress=False, planes=["sagittal", "c"])
    assert (root / "t3.npy").stat().st_mtime_ns == mtime  # the axial arrays are kept, the planes added
    c = slices.SliceCache.open(root)
    assert c.planes == ("axial", "coronal", "sagittal") and len(c.index) and "plane" not in c.index
    n_sub, ny, nx = len(c.volumes), c.t3.shape[1], c.t3.shape[2]
    depth = int(c.volumes["depth"].max())
    for plane, (per, w) in {"coronal": (ny, nx), "sagittal": (nx, ny)}.items():
        t3, t7, idx = c.plane(plane)
        assert t3.shape == (n_sub * per, planes.padded_height(depth), w) and t3.shape[1] % 32 == 0
        assert idx["slice_location"].between(-1, 1).all() and set(idx["plane"]) == {plane}
    # a coronal sample is the 3T volume's coronal slice; the context ends with the plane's code
    vol = c.volumes.iloc[0]
    rec = json.loads(next(derivatives.glob(f"{vol['key']}/anat/{vol['key']}_desc-preproc.json")).read_text())
    t3_vol = sio.load_volume(derivatives / rec["files"]["t3"]).data
    data = slices.SliceDataset(c, [vol["key"]], planes=["axial", "coronal", "sagittal"], plane_context=True)
    assert (data.height, data.width) == (max(ny, c.plane("sagittal")[0].shape[1]), max(nx, ny))
    i = int(np.flatnonzero((data.index["plane"] == "coronal").to_numpy())[0])
    it, r = data[i], data.index.iloc[i]
    expected = planes.to_plane_stack(t3_vol, "coronal", height=c.plane("coronal")[0].shape[1])[int(r["z"])]
    np.testing.assert_array_equal(it["x"][1, :expected.shape[0], :expected.shape[1]].numpy(),
                                  expected.astype(np.float16).astype(np.float32))
    assert it["x"].shape == (3, data.height, data.width) and it["context"].shape == (5,) and it["context"][4] == 1
    # the loss mask: 0 on the padding rows and on every excluded (7T artefact) axial slice, 1 elsewhere
    m = it["mask"][0].numpy()
    excluded = {z for a, b in rec["excluded_slices"] for z in range(a, b + 1)}
    rows = m[:, 0]
    assert set(np.flatnonzero(rows == 0)) == excluded | set(range(int(vol["depth"]), data.height))
    assert (m[:, :nx] == rows[:, None]).all() and not m[:, nx:].any()  # (the width is padded to the largest)
    # an axial sample (not an excluded slice) is all 1 over its own (ny, nx) extent and 0 on the padding around it
    am = data[int(np.flatnonzero((data.index["plane"] == "axial").to_numpy())[0])]["mask"][0].numpy()
    assert am[:ny, :nx].all() and not am[ny:, :].any() and not am[:, nx:].any()
    # augmentation mirrors axial and coronal slices left-right, never a sagittal one (no left-right axis in it)
    aug = slices.SliceDataset(c, [vol["key"]], planes=["sagittal"], augment=True, crop=(32, 32), seed=0)
    plain = slices.SliceDataset(c, [vol["key"]], planes=["sagittal"], augment=False, crop=(32, 32), seed=0)
    for j in range(6):
        torch.testing.assert_close(aug[j]["x"], plain[j]["x"])


def test_multiview_training_exports_its_planes_and_predicts_fused_volumes(preprocessed_cohort, tmp_path):
    import nibabel as nib

    from synth7t import inference
    from synth7t.data import planes
    from synth7t.inference import fusion

    derivatives, ds, split_file = preprocessed_cohort
    root = slices.build_cache(derivatives, tmp_path / "cache", ds, split_file=split_file, progress=False,
                              planes=["axial", "coronal", "sagittal"])
    cfg = _cfg(epochs=1, samples_per_epoch=8, planes=["axial", "coronal", "sagittal"])
    assert cfg.conditions_on_plane and not _cfg(planes=["axial", "coronal"], plane_condition=False).conditions_on_plane
    tr = trainer.Trainer(cfg, root, tmp_path / "run", progress=False)
    assert tr.model_config.plane_condition and set(tr.train_ds.index["plane"]) == set(planes.PLANES)
    metrics = tr.fit()
    assert np.isfinite(metrics["psnr"])
    meta = json.loads((tmp_path / "run" / "model" / "model.json").read_text())
    assert meta["planes"] == ["axial", "coronal", "sagittal"] and meta["model_config"]["plane_condition"] is True
    # a run cannot resume with another plane condition
    with pytest.raises(ValueError, match="plane condition"):
        trainer.Trainer(cfg.replace(plane_condition=False), root, tmp_path / "run", progress=False)
    with pytest.raises(ValueError, match="applies to the U-Nets only"):
        trainer.Trainer(tconf.TrainConfig.from_preset("demo-cpu-vnet", planes=["coronal"]), root, tmp_path / "b",
                      progress=False)
    key = sorted(tr.cache.volumes.loc[tr.cache.volumes["split"] == "test", "key"])[0]
    inp = inference.preprocessed_inputs(derivatives, key)
    s = ds[key]
    res = inference.views.predict_multiview(tmp_path / "run" / "model", inp["t3"].data, age=s.age, sex=s.sex,
                                      impaired=s.impaired, mask=inp["mask"], uncertainty=True)
    brain = inp["mask"] > 0
    assert set(res.views) == set(planes.PLANES) and res.prediction.shape == inp["t3"].shape
    assert res.prediction[brain].max() > 0 and not res.prediction[~brain].any()
    assert res.uncertainty[brain].mean() > 0 and not res.uncertainty[~brain].any()
    out = tmp_path / f"{key}_acq-mv_space-grid_T1w.nii.gz"
    sio_save = nib.Nifti1Image(res.prediction, inp["t3"].affine, inp["t3"].header)
    nib.save(sio_save, str(out))
    up = fusion.write_uncertainty(out, res.uncertainty)
    assert np.allclose(nib.load(str(up)).affine, inp["t3"].affine)


@pytest.fixture(scope="module")
def multiview_model(preprocessed_cohort, tmp_path_factory):
    derivatives, ds, split_file = preprocessed_cohort
    root = tmp_path_factory.mktemp("mv")
    cache = slices.build_cache(derivatives, root / "cache", ds, split_file=split_file, progress=False,
                               planes=["axial", "coronal", "sagittal"])
    trainer.Trainer(_cfg(epochs=1, samples_per_epoch=8, planes=["axial", "coronal", "sagittal"]), cache, root / "run",
                  progress=False).fit()
    return root / "run" / "model"


def test_predict_subjects_fuses_views_and_writes_the_uncertainty_beside_every_space(multiview_model,
                                                                                   preprocessed_cohort, tmp_path):
    import nibabel as nib

    from synth7t import inference
    from synth7t.inference import fusion

    derivatives, ds, _ = preprocessed_cohort
    key = [s.key for s in ds][0]
    table = inference.predict_subjects(multiview_model, derivatives, ds, tmp_path / "p", keys=[key], device="cpu",
                                     progress=False, name="mv", spaces=("grid", "7T"), uncertainty=True)
    assert list(table["status"]) == ["done"], table
    for space in ("grid", "7T"):
        pred = inference.prediction_path(tmp_path / "p", key, "mv", space)
        unc = fusion.uncertainty_path(pred)
        a, b = nib.load(str(pred)), nib.load(str(unc))
        assert b.shape == a.shape and np.allclose(a.affine, b.affine)
        assert np.asarray(b.dataobj).max() > 0
    # resumable: both files exist, the subject is skipped; a missing map redoes it
    again = inference.predict_subjects(multiview_model, derivatives, ds, tmp_path / "p", keys=[key], device="cpu",
                                     progress=False, name="mv", spaces=("grid", "7T"), uncertainty=True)
    assert list(again["status"]) == ["skipped"]
    with pytest.raises(ValueError, match="at least two members"):
        inference.predict_subjects(multiview_model, derivatives, ds, tmp_path / "q", keys=[key], views=["axial"],
                                 uncertainty=True, progress=False)


def test_predict_many_in_workers_gives_each_models_table_and_volumes(trained_model, multiview_model,
                                                                    preprocessed_cohort, tmp_path):
    """Notebook 03 on a CPU: the models side by side in 2 one-thread workers, the multi-view one handed out first;
    the tables come back in the tasks' order and the volumes equal the in-process ones to float noise."""
    import nibabel as nib

    from synth7t import inference

    derivatives, ds, _ = preprocessed_cohort
    keys = [s.key for s in ds][:1]

    def tasks(root):
        common = dict(derivatives=derivatives, dataset=ds, keys=keys, device="cpu", spaces=("grid",))
        return [dict(model_dir=trained_model, out_dir=root / "unet", name="unet", **common),
                dict(model_dir=multiview_model, out_dir=root / "mv", name="mv", views=["axial", "coronal"],
                     uncertainty=True, **common)]

    here = inference.predict_many(tasks(tmp_path / "one"), n_jobs=1, progress=False)
    there = inference.predict_many(tasks(tmp_path / "two"), n_jobs=2, progress=False)
    assert [list(t.columns) for t in there] == [list(t.columns) for t in here]
    for name, a, b in zip(("unet", "mv"), here, there):
        assert list(a["status"]) == list(b["status"]) == ["done"], (a, b)
        va = np.asarray(nib.load(inference.prediction_path(tmp_path / "one" / name, keys[0], name)).dataobj)
        vb = np.asarray(nib.load(inference.prediction_path(tmp_path / "two" / name, keys[0], name)).dataobj)
        assert va.shape == vb.shape and np.abs(va - vb).max() < 1e-4
    # a model folder that is not one fails the whole call, named
    with pytest.raises(inference.ModelFolderError):
        inference.predict_many([dict(tasks(tmp_path / "bad")[0], model_dir=tmp_path), tasks(tmp_path / "bad")[1]],
                             n_jobs=2, progress=False)


def test_an_axial_model_refuses_other_views_and_keeps_its_output(trained_model, preprocessed_cohort, tmp_path):
    from synth7t import inference

    derivatives, ds, _ = preprocessed_cohort
    with pytest.raises(ValueError, match="no model learned coronal slices"):
        inference.predict_subjects(trained_model, derivatives, ds, tmp_path / "x", views=["axial", "coronal"],
                                 progress=False)


def test_predict_cli_views_and_uncertainty(multiview_model, preprocessed_cohort, tmp_path):
    from synth7t.inference.fusion import uncertainty_path

    _, ds, _ = preprocessed_cohort
    s = ds[0]
    out = tmp_path / "out.nii.gz"
    cmd = [sys.executable, "-m", "synth7t.cli", "predict", str(s.t3), "-o", str(out), "--model", str(multiview_model),
           "--age", str(s.age), "--sex", s.sex, "--impaired", str(int(bool(s.impaired))), "--device", "cpu",
           "--mask", str(s.t3_mask), "--views", "a,c,s", "--uncertainty"]
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert out.is_file() and uncertainty_path(out).is_file()
    bad = subprocess.run(cmd[:-3] + ["--views", "axial,oblique"], capture_output=True, text=True)
    assert bad.returncode != 0 and "unknown plane 'oblique'" in bad.stderr


def test_learning_rate_schedules_warm_up_and_follow_the_position(cache, tmp_path):
    """``lr_factor``'s formulas, and the trainer sets every batch's rates from them (the logged ``lr_g``)."""
    exp = _cfg(lr_decay=0.5, warmup_steps=4)
    assert [tconf.lr_factor(exp, s, 0, 100) for s in range(5)] == [0.25, 0.5, 0.75, 1.0, 1.0]
    assert tconf.lr_factor(exp, 50, 2, 100) == 0.25
    cos = _cfg(lr_schedule="cosine")
    assert tconf.lr_factor(cos, 0, 0, 10) == 1.0 and tconf.lr_factor(cos, 5, 0, 10) == pytest.approx(0.5)
    assert tconf.lr_factor(cos, 10, 1, 10) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="lr_schedule must be one of 'exponential', 'cosine'"):
        _cfg(lr_schedule="linear")
    cfg = _cfg(lr_schedule="cosine", warmup_steps=3, lr_g=1e-3)
    tr = trainer.Trainer(cfg, cache, tmp_path / "run", progress=False)
    tr.fit()
    import pandas as pd

    logged = pd.read_csv(tmp_path / "run" / "train_log.csv")
    want = [1e-3 * tconf.lr_factor(tr.cfg, s, e, tr.total_steps) for s, e in zip(logged.step - 1, logged.epoch)]
    assert len(logged) == tr.total_steps == 8
    np.testing.assert_allclose(logged.lr_g, want, rtol=1e-9)
    assert logged.lr_g.iloc[0] == pytest.approx(1e-3 / 3) and logged.lr_g.iloc[-1] < 1e-4


def test_init_from_starts_from_a_models_weights_and_refuses_another_architecture(trained_model, cache, tmp_path):
    from synth7t.models import build_model

    tr = trainer.Trainer(_cfg(init_from=str(trained_model)), cache, tmp_path / "run", progress=False)
    meta = json.loads((trained_model / "model.json").read_text())
    ref = build_model(meta["model_config"])
    trainer.load_weights(trained_model / "generator.safetensors", ref)
    for (k, a), (_, b) in zip(ref.state_dict().items(), tr.generator.state_dict().items()):
        assert torch.equal(a, b), k
    with pytest.raises(ValueError, match="another architecture.*use_diagnosis"):
        trainer.Trainer(_cfg(model="demo-cpu-nodiag", init_from=str(trained_model)), cache, tmp_path / "r2",
                      progress=False)
    with pytest.raises(ValueError, match="is not a model folder"):
        trainer.Trainer(_cfg(init_from=str(tmp_path)), cache, tmp_path / "r3", progress=False)


def test_a_model_below_the_identity_says_so_in_its_log_card_and_predict(cache, preprocessed_cohort, tmp_path,
                                                                      capsys):
    """A model trained for one step is far below copying its input: the trainer warns once at the end, trainer.log
    has a line per validation and the verdict, the card says so, and ``synth7t predict`` says it in one line."""
    from synth7t.cli import main
    from synth7t.training.modelcard import BelowIdentityWarning, identity_warning, read_model_card

    run = tmp_path / "one_step"
    with pytest.warns(BelowIdentityWarning, match="does not beat copying its 3T input"):
        trainer.Trainer(_cfg(max_steps=1, global_residual=False), cache, run, progress=False).fit()
    log = (run / "train.log").read_text().splitlines()
    assert "NOT above the identity" in log[0] and "does not beat copying its 3T input" in log[-1]
    card = read_model_card(run / "model")
    assert card["validation"]["beats_identity"] is False
    assert "Worse than its input" in (run / "model" / "MODEL_CARD.md").read_text()
    assert any("degrades the scans" in item for item in card["limitations"])
    good = {**card, "validation": {**card["validation"], "beats_identity": True}}
    assert identity_warning(good) is None and "degrades" in identity_warning(card)
    _, ds, _ = preprocessed_cohort
    s = ds[1]
    argv = ["predict", str(s.t3), "-o", str(tmp_path / "out.nii.gz"), "--model", str(run / "model"), "--age",
            str(s.age), "--sex", s.sex, "--impaired", str(int(s.impaired)), "--mask", str(s.t3_mask), "--device", "cpu"]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert err.count("does not beat copying its 3T input") == 1 and err.count("trained on simulated data") == 1


def test_beats_identity_needs_both_scores_above_the_inputs():
    from synth7t.training.validation import beats_identity

    above = {"psnr": 27.5, "psnr_3t": 26.7, "ssim": 0.970, "ssim_3t": 0.964}
    assert beats_identity(above)
    assert not beats_identity({**above, "psnr": 26.6})  # PSNR below
    assert not beats_identity({**above, "ssim": 0.9639})  # SSIM below: both must be above
    assert not beats_identity({**above, "psnr": 26.7}) and not beats_identity({**above, "ssim": 0.964})  # equal: not above
    assert not beats_identity({**above, "psnr": float("nan")}) and not beats_identity({})


def test_a_grid_a_unet_cannot_take_is_refused_when_it_is_built(cache):
    """The cache's 128 x 96 slices divide by 32 but not by 64: a U-Net downsampling to 1/64 is refused at build,
    not when a lone scan is predicted; so are crops that do not divide."""
    c = slices.SliceCache.open(cache)
    slices.check_slice_grid(c, ("axial",), 32, [64, 64], "m")
    with pytest.raises(ValueError, match=r"cannot take the cache's axial slices of 128 x 96.*divide by 64"):
        slices.check_slice_grid(c, ("axial",), 64, None, "m")
    with pytest.raises(ValueError, match=r"crop=\[60, 64\] must divide by 8"):
        slices.check_slice_grid(c, ("axial",), 8, [60, 64], "m")


def test_the_models_table_says_how_long_each_trained_and_from_where(trained_model, cache, tmp_path):
    from synth7t.training import summary

    tr = trainer.Trainer(_cfg(init_from=str(trained_model), max_steps=2), cache,
                       tmp_path / "02_train" / "gan-unet-nodiag", progress=False)
    tr.fit()
    runs = summary.run_models(tmp_path / "02_train")
    assert list(runs) == ["gan-unet-nodiag"]
    table = summary.trained_models({**runs, "unet": trained_model})
    first, second = table.iloc[0], table.iloc[1]
    assert first["image type"] == "GAN U-Net nodiag" and first["steps"] == 2
    assert first["started from"] == trained_model.parent.name  # the run it started from
    assert second["started from"] == "random weights" and second["data"] == "simulated"
    assert first["output"] == "3T + residual" and first["on"].startswith("cpu") and first["minutes"] >= 0
    assert first["beats identity"] in (True, False) and first["val PSNR gain"] is not None
    with pytest.raises(ValueError, match="no model card"):
        summary.trained_models({"x": tmp_path})


def test_the_gallery_of_bad_inputs_gets_its_intended_outcomes(trained_model, preprocessed_cohort, tmp_path):
    """Copies of the held-out subject's 3T made wrong in the ways users' scans are (synth7t.simulate.gallery), through
    predict_file: each refused, warned or predicted as intended, and the held-out scan itself scores below every
    case meant to warn."""
    from synth7t.simulate import gallery
    from synth7t.data import layout

    _, ds, split_file = preprocessed_cohort
    split = layout.read_split(split_file)
    held = [s for s in ds if s.participant_id in set(split.loc[split["split"] == "test", "participant_id"])]
    s = held[0]
    inputs = gallery.gallery_inputs(s.t3, s.t3_mask, tmp_path / "in", t7=s.t7, t7_mask=s.t7_mask)
    own = pd.DataFrame([{"case": f"held out {h.key}", "expect": "predicted", "what": "a held-out 3T",
                         "path": str(h.t3), "mask": str(h.t3_mask)} for h in held])
    table = gallery.run_gallery(pd.concat([own, inputs], ignore_index=True), trained_model, tmp_path / "out",
                                     age=s.age, sex=s.sex, impaired=s.impaired, device="cpu")
    print(table[["case", "expect", "outcome", "score", "checks"]].to_string())
    assert table["ok"].all(), table[["case", "expect", "outcome", "score", "checks", "reason"]].to_string()
    warned = table[table["expect"] == "warned"]
    assert table.loc[table["case"].str.startswith("held out"), "score"].max() < warned["score"].min()
