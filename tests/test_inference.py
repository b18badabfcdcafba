"""The one inference package: a Predictor knows its model's kind and predicts a volume by that kind's path, the same
numbers as the pass it dispatches to; requests a model cannot serve fail before any work; one naming function."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from synth7t import inference
from synth7t.inference import Predictor
from synth7t.inference.volume import predict_volume, predict_volume_patches, predict_volume_released
from synth7t.inference.views import predict_multiview
from synth7t.models import build_model, get_model_config

DATA = Path(__file__).parent / "data" / "gicquel"
SHAPE = (12, 16, 9)


def _brain():
    m = np.zeros(SHAPE, bool)
    m[2:10, 3:13, 1:8] = True
    return m


def _t3(seed=0):
    return (np.random.default_rng(seed).random(SHAPE).astype(np.float32) * _brain()).astype(np.float32)


def _unet(preset="demo-cpu", **replace):
    torch.manual_seed(0)
    cfg = get_model_config(preset)
    cfg = cfg.replace(**replace) if replace else cfg
    return build_model(cfg).eval(), {"model_config": cfg.to_dict()}


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    from synth7t.released import importer as im

    out, _ = im.import_model(DATA / "small-nodiag.pt", DATA / "small-nodiag_params.txt",
                             tmp_path_factory.mktemp("imp") / "small-nodiag")
    return out


def test_a_predictor_knows_its_kind_planes_conditioning_and_recipe(imported):
    unet = Predictor(*_unet())
    assert (unet.kind, unet.planes, unet.conditioning) == ("unet", ("axial",), ("age", "sex", "diagnosis", "location"))
    assert unet.recipe == {"n_input_slices": 3, "grid_divisor": 4} and unet.reads_diagnosis
    nodiag = Predictor(*_unet("demo-cpu-nodiag"))
    assert not nodiag.reads_diagnosis and nodiag.conditioning == ("age", "sex", "location")
    g, meta = _unet("demo-cpu-nodiag", plane_condition=True)
    mv = Predictor(g, {**meta, "planes": ["axial", "coronal", "sagittal"]})
    assert mv.kind == "multiview" and mv.planes == ("axial", "coronal", "sagittal")
    vnet = Predictor(*_unet("vnet-demo"))
    assert vnet.kind == "patch" and vnet.conditioning == () and vnet.recipe["patch_size"] == 32
    imp = Predictor.from_folder(imported)
    assert imp.kind == "imported" and imp.grid == {} and imp.conditioning == ("age", "sex", "location")
    assert imp.recipe["stack"] == "first" and not imp.reads_diagnosis
    # read without the weights: the same description, and it refuses to predict
    described = Predictor.describe(imported)
    assert (described.kind, described.conditioning) == (imp.kind, imp.conditioning)
    with pytest.raises(ValueError, match="description only"):
        described.predict(_t3(), age=70, sex="F", impaired=None)


def test_predict_is_the_pass_of_each_kind_number_for_number(imported):
    t3, mask = _t3(), _brain()
    ctx = dict(age=70.0, sex="F", impaired=True)
    g, meta = _unet()
    out = Predictor(g, meta).predict(t3, mask=mask, axial_range=(1, 7), **ctx)
    np.testing.assert_array_equal(out.image, predict_volume(g, t3, bottom=1, top=7, mask=mask, **ctx))
    assert out.uncertainty is None and out.precision == "fp32"
    # without axial_range the brain's own first and last slice (1 and 7 here)
    np.testing.assert_array_equal(Predictor(g, meta).predict(t3, mask=mask, **ctx).image, out.image)
    # the range matters: a predictor that ignored it would pass the line above but not this one
    other = Predictor(g, meta).predict(t3, mask=mask, axial_range=(0, 8), **ctx).image
    assert np.abs(other - out.image).max() > 1e-6

    vnet, vmeta = _unet("vnet-demo")
    np.testing.assert_array_equal(Predictor(vnet, vmeta).predict(t3, mask=mask, **ctx).image,
                                  predict_volume_patches(vnet, t3, mask=mask))

    g, meta = _unet("demo-cpu-nodiag", plane_condition=True)
    meta = {**meta, "planes": ["axial", "coronal", "sagittal"]}
    fused = Predictor(g, meta).predict(t3, mask=mask, uncertainty=True, **ctx)
    ref = predict_multiview((g, meta), t3, mask=mask, uncertainty=True, **ctx)
    np.testing.assert_array_equal(fused.image, ref.prediction)
    np.testing.assert_array_equal(fused.uncertainty, ref.uncertainty)

    imp = Predictor.from_folder(imported)
    raw = t3 * 300.0
    np.testing.assert_array_equal(imp.predict(raw, mask=mask, age=70, sex="F", impaired=None).image,
                                  predict_volume_released(imp.network, raw, imp.recipe, age=70, sex="F",
                                                          impaired=None, mask=mask))


def test_cpu_slice_workers_give_the_serial_bytes_and_keep_the_callers_precision():
    """With n torch threads on a CPU the slice loop runs in n threads of one torch thread each: the bytes of the loop
    on one thread, in two threads (a loop left serial fails here), torch's thread count restored after, and the
    caller's bf16 autocast in every worker (autocast is per thread: a worker without it predicts in fp32)."""
    import threading
    import time

    from synth7t.inference.precision import inference_precision
    from synth7t.inference.volume import cpu_slice_workers

    t3, g = _t3(), _unet()[0]
    ctx = dict(age=70.0, sex="F", impaired=True, bottom=1, top=7, mask=_brain())
    seen = set()

    def note(module, args, output):
        seen.add(threading.current_thread().name)
        time.sleep(0.01)  # the other worker takes the next slice meanwhile

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert cpu_slice_workers("cpu", 8) == 1
        serial = predict_volume(g, t3, **ctx)
        with inference_precision("bf16", "cpu"):
            serial_bf16 = predict_volume(g, t3, **ctx)
        assert np.abs(serial_bf16 - serial).max() > 1e-4  # bf16 changes the numbers
        torch.set_num_threads(2)
        assert cpu_slice_workers("cpu", 8) == 2 and cpu_slice_workers("cpu", 1) == 1
        assert cpu_slice_workers("cuda", 8) == 1
        hook = g.register_forward_hook(note)
        try:
            np.testing.assert_array_equal(predict_volume(g, t3, **ctx), serial)
        finally:
            hook.remove()
        assert len(seen) == 2 and threading.current_thread().name not in seen
        assert torch.get_num_threads() == 2
        with inference_precision("bf16", "cpu"):
            np.testing.assert_array_equal(predict_volume(g, t3, **ctx), serial_bf16)
    finally:
        torch.set_num_threads(before)


def test_requests_a_model_cannot_serve_fail_before_any_work(imported):
    t3 = _t3()
    unet = Predictor(*_unet())
    with pytest.raises(ValueError, match="conditioned on the diagnosis"):
        unet.predict(t3, age=70, sex="F", impaired=None)
    with pytest.raises(ValueError, match="no model learned coronal"):
        unet.check_request(["axial", "coronal"])
    with pytest.raises(ValueError, match="at least two members"):
        unet.check_request(uncertainty=True)
    assert unet.check_request(uncertainty=True, flips=True) == ("axial",)  # the axial view and its mirror
    with pytest.raises(ValueError, match="sex must be F or M"):
        unet.predict(t3, age=70, sex="female", impaired=False)
    vnet = Predictor(*_unet("vnet-demo"))
    with pytest.raises(ValueError, match="flips not available for a V-Net or WATNet"):
        vnet.check_request(flips=True)
    imp = Predictor.from_folder(imported)
    with pytest.raises(ValueError, match="views not available for an imported model"):
        imp.check_request(["axial"])
    with pytest.raises(ValueError, match="an imported model of the authors predicts on their 7T template"):
        inference.predict_subjects(imp, "nowhere", [], "out", keys=[], progress=False)


def test_one_naming_function_for_every_prediction_file():
    p = inference.prediction_path("out", "sub-01_ses-2", "unet", "native")
    assert p == Path("out/sub-01_ses-2_acq-unet_space-3T_T1w.nii.gz")
    assert inference.prediction_path("o", "k", "m").name == "k_acq-m_space-grid_T1w.nii.gz"
    assert inference.batch_output_path("o", "x/sub-01_ses-2_acq-3T_T1w.nii.gz") == \
        inference.prediction_path("o", "sub-01_ses-2", "synth7t", "grid")
    from synth7t.studies import lone

    assert not hasattr(lone, "prediction_path")  # the studies name their files with the same function
    with pytest.raises(ValueError, match="unknown space 'mni'"):
        inference.prediction_path("o", "k", "m", "mni")
    with pytest.raises(ValueError, match="file-name part"):
        inference.prediction_path("o", "../k", "m")
    from synth7t.inference.naming import native_path

    assert native_path("a/out.nii.gz") == Path("a/out_space-native.nii.gz")


def test_a_batch_refuses_two_inputs_that_would_share_an_output(tmp_path):
    from conftest import write_nifti

    a = write_nifti(tmp_path / "in" / "sub-01_acq-3T_T1w.nii.gz")
    b = write_nifti(tmp_path / "in" / "sub-01_acq-mprage_T1w.nii.gz")
    model = tmp_path / "model"
    model.mkdir()
    (model / "model.json").write_text(json.dumps({"model_config": get_model_config("demo-cpu").to_dict()}))
    (model / "generator.safetensors").write_bytes(b"")
    with pytest.raises(ValueError, match="would both be written to sub-01_acq-synth7t_space-grid_T1w.nii.gz"):
        inference.predict_files([a, b], tmp_path / "out", model, age=70, sex="F", impaired=False, progress=False)
    assert not (tmp_path / "out" / "predictions.tsv").exists()


def _lone_record(folder: Path, key: str, image: np.ndarray, brain: np.ndarray, affine: np.ndarray, source: Path,
                 offset=(0.0, 0.0, 0.0)):
    """A lone-3T study record as :func:`synth7t.studies.lone.preprocess_lone_batch` writes them, whose aligned grid
    holds the scan's own voxels with world coordinates moved by ``offset`` mm (its world map moves them back)."""
    from synth7t.data import io as sio

    folder.mkdir(parents=True, exist_ok=True)
    affine = np.asarray(affine, float).copy()
    affine[:3, 3] += offset
    world_map = np.eye(4)
    world_map[:3, 3] = -np.asarray(offset, float)  # study world -> scan world
    t3, mask = folder / f"{key}_t3.nii.gz", folder / f"{key}_mask.nii.gz"
    sio.save_volume(t3, (image * brain / image[brain > 0].max()).astype(np.float32), affine, dtype=np.float32)
    sio.save_volume(mask, brain.astype(np.uint8), affine, dtype=np.uint8)
    zs = np.flatnonzero(brain.any(axis=(0, 1)))
    return {"key": key, "input": str(source), "alignment": {"world_map": world_map.tolist()},
            "bottom_slice": int(zs[0]), "top_slice": int(zs[-1]), "files": {"t3": str(t3), "mask": str(mask)}}


def test_the_lone_studies_predict_with_a_multiview_model_through_the_predictor(tmp_path):
    import pandas as pd
    from safetensors.torch import save_file

    from synth7t.data import io as sio
    from synth7t.studies import lone

    g, meta = _unet("demo-cpu-nodiag", plane_condition=True)
    folder = tmp_path / "mv" / "model"
    folder.mkdir(parents=True)
    save_file({k: v.detach().contiguous() for k, v in g.state_dict().items()}, str(folder / "generator.safetensors"))
    (folder / "model.json").write_text(json.dumps({**meta, "planes": ["axial", "coronal", "sagittal"]}))
    brain = _brain()
    rec = _lone_record(tmp_path / "aligned", "sub-01", _t3() + 0.1, brain, np.diag([2.0, 2.0, 2.0, 1.0]),
                       tmp_path / "scan.nii.gz")
    demo = pd.DataFrame({"key": ["sub-01"], "age": [70.0], "sex": ["F"], "diagnosis": ["CN"]})
    table = lone.predict_lone(folder, {"sub-01": rec}, demo, tmp_path / "pred", name="unet-mv", device="cpu",
                                      progress=False)
    assert (table["status"] == "done").all(), table
    out = sio.load_volume(table["path"].iloc[0]).data
    predictor = Predictor.from_folder(folder)
    assert predictor.kind == "multiview"
    t3 = sio.load_volume(rec["files"]["t3"]).data
    fused = predictor.predict(t3, age=70, sex="F", impaired=False, mask=brain, axial_range=(1, 7)).image
    np.testing.assert_allclose(out, fused, atol=1e-6)
    with predictor.network.using_plane("axial"):
        axial_only = predict_volume(predictor.network, t3, age=70, sex="F", impaired=False, bottom=1, top=7,
                                    mask=brain)
    assert np.abs(out - axial_only).max() > 1e-3  # the three views were fused, not the axial pass alone


def test_the_lone_studies_predict_with_an_imported_model_onto_the_studys_grid(tmp_path, imported):
    """An imported model in a lone study: each scan aligned to its templates, predicted with its recipe, resampled
    onto the study's grid: what `synth7t predict --native` writes for the scan, where the study's grid holds the
    scan's voxels (at other world coordinates, which the study's world map undoes)."""
    import nibabel as nib
    import pandas as pd

    from synth7t.data import io as sio
    from synth7t.studies import lone
    from synth7t import preprocess as pp
    from test_import_model import _phantom, _templates

    from synth7t.released import importer as im

    model = tmp_path / "imported"
    im.import_model(DATA / "small-nodiag.pt", DATA / "small-nodiag_params.txt", model,
                    templates=_templates(tmp_path / "templates"))
    image, brain, affine = _phantom((44, 52, 42), 4.0, skull=True, shift=(12.0, -10.0, 4.0), angle=0.05)
    scan, mask = tmp_path / "sub-01_acq-3T_T1w.nii.gz", tmp_path / "sub-01_acq-3T_desc-brain_mask.nii.gz"
    nib.save(nib.Nifti1Image(image, affine), scan)
    nib.save(nib.Nifti1Image(brain.astype(np.uint8), affine), mask)
    rec = _lone_record(tmp_path / "aligned", "sub-01", image, brain, affine, scan, offset=(30.0, -20.0, 10.0))
    demo = pd.DataFrame({"key": ["sub-01"], "age": [70.0], "sex": ["F"], "diagnosis": ["CN"], "mask": [str(mask)]})
    config = pp.PreprocessConfig.from_preset("quick", qc_figure=False, mask_backend="given")
    with pytest.raises(ValueError, match="pass the study's preprocessing config"):
        lone.predict_lone(model, {"sub-01": rec}, demo, tmp_path / "p0", name="imp", device="cpu")
    # force: a phantom, not a brain, which the content checks rightly refuse
    table = lone.predict_lone(model, {"sub-01": rec}, demo, tmp_path / "pred", name="imp", device="cpu",
                                      progress=False, config=config, force=True)
    assert (table["status"] == "done").all(), table
    out = sio.load_volume(table["path"].iloc[0])
    assert out.data.shape == image.shape and np.allclose(out.affine[:3, 3], affine[:3, 3] + (30.0, -20.0, 10.0))
    written = inference.predict_file(scan, tmp_path / "file.nii.gz", model, age=70, sex="F", impaired=None,
                                     t3_mask=mask, native=True, preprocess_preset=config, force=True)
    native = sio.load_volume(written["native"]).data * brain
    inside = brain > 0
    assert np.corrcoef(out.data[inside], native[inside])[0, 1] > 0.99
    assert (out.data[~inside] == 0).all() and np.abs(out.data[inside]).max() > 0


def test_a_lone_study_aligns_onto_the_grid_its_models_were_trained_on(tmp_path):
    """One place reads a lone grid (the model folder's): the study's config takes it; a U-Net and a V-Net of one grid
    share it (the U-Net's divisor), models of different grids are refused."""
    import batch_data as bd
    from synth7t.studies import lone
    from synth7t import preprocess as pp

    derivatives = tmp_path / "derivatives"
    derivatives.mkdir()
    (derivatives / "config.json").write_text(json.dumps(pp.PreprocessConfig.from_preset("quick", target_spacing=1.0).to_dict()))
    unet = bd.write_model_folder(tmp_path / "unet" / "model")
    vnet = tmp_path / "vnet" / "model"
    vnet.mkdir(parents=True)
    meta = json.loads((unet / "model.json").read_text())
    (vnet / "model.json").write_text(json.dumps({**meta, "model_config": get_model_config("vnet-demo").to_dict()}))
    (vnet / "generator.safetensors").write_bytes(b"")
    cfg = lone.lone_config(derivatives, {"unet": unet, "vnet": vnet}, mask_backend="given")
    assert (cfg.target_spacing, tuple(cfg.grid_inplane), cfg.grid_divisor) == (bd.MODEL_SPACING, bd.MODEL_INPLANE, 4)
    assert cfg.mask_backend == "given"
    assert lone.lone_config(derivatives).target_spacing == 1.0  # no model: the paired run's grid
    (vnet / "model.json").write_text(json.dumps({**meta, "input": {**meta["input"], "spacing_mm": 0.7},
                                                  "model_config": get_model_config("vnet-demo").to_dict()}))
    with pytest.raises(ValueError, match="trained on different grids"):
        lone.lone_config(derivatives, {"unet": unet, "vnet": vnet})


def test_the_alignment_uses_the_process_threads_unless_reproducible(monkeypatch):
    """``synth7t predict`` aligns with every thread of its process (float-rounding differences, about half the time
    on 2 cores); ``--reproducible`` with one ITK thread (identical bytes run to run); a process whose ITK count is
    already fixed keeps it."""
    from synth7t.inference.files import alignment_threads
    from synth7t.preprocess import ants as pa

    monkeypatch.setattr(pa, "_itk_threads", None)  # as in a fresh process
    monkeypatch.setattr(torch, "get_num_threads", lambda: 3)
    assert alignment_threads(reproducible=True) == 1
    assert alignment_threads() == 3
    monkeypatch.setattr(pa, "_itk_threads", 2)  # ITK already runs at 2 threads in this process
    assert alignment_threads() == 2 and alignment_threads(reproducible=True) == 1
