"""Importing the authors' released checkpoints: their format read without running it, their network reproduced.

The fixtures in tests/data/gicquel/ were recorded in a scratch folder from the authors' own code (SOURCE.json: the
repository, the commit and how): three small random configurations of their UNetModel saved the way their training
script saves (nn.DataParallel, Adam state, a pandas DataFrame of losses, numpy test indices), an input stack with
its raw context and their output, and one small volume through their training's whole input recipe.
"""

import json
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from synth7t.released import importer as im
from synth7t.released.reader import CheckpointReadError, read_checkpoint
from synth7t.cli import main
from synth7t.inference import load_model
from synth7t.models import context_tokens, make_context
from synth7t.inference.volume import predict_volume_released

DATA = Path(__file__).parent / "data" / "gicquel"
FIXTURES = ("small-nodiag", "small-diag", "small-initdown")


def _import(tmp_path, name):
    out, dropped = im.import_model(DATA / f"{name}.pt", DATA / f"{name}_params.txt", tmp_path / name)
    return out, dropped


@pytest.mark.parametrize("name", FIXTURES)
def test_an_imported_checkpoint_computes_what_their_network_computed(tmp_path, name):
    """Each configuration (channels, residual blocks, attention resolutions, mid attention on and off, the diagnosis
    token, the initial downsampling, AdaDM on and off) matches their output to float32 rounding."""
    out, dropped = _import(tmp_path, name)
    assert dropped == ["saved_losses: pandas.DataFrame", "idx_test: numpy._core.multiarray._reconstruct"]
    net, meta = load_model(out)
    io = np.load(DATA / f"{name}_io.npz")
    with torch.no_grad():
        y = net(torch.from_numpy(io["x"]).contiguous(memory_format=torch.channels_last),
                torch.from_numpy(io["context"]))
    error = float((y - torch.from_numpy(io["y"])).abs().max())
    assert error <= 1e-5, error
    # the check can fail: a shifted context moves their output by over ten times the tolerance
    with torch.no_grad():
        assert float((net(torch.from_numpy(io["x"]), torch.from_numpy(io["context"]) + 0.5) - y).abs().max()) > 1e-4
    card = meta["model_card"]
    assert card["training_data"]["simulated"] is False and card["origin"] == "imported"
    assert card["source"]["sha256"] == im._sha256(DATA / f"{name}.pt")
    assert "CC BY-NC 4.0" in card["licence"] and "real paired 3T/7T" in (out / "MODEL_CARD.md").read_text()
    assert meta["input"]["stack"] == "first" and meta["input"]["slice_axis"] == 1


def test_their_tokens_from_synth7ts_context_keep_make_contexts_meaning():
    """make_context means what it means for every model (sex 1 male, impaired 1); their tokens say sex 1 female and
    diagnosis 1 for SCD or normal, and a position over the grid's slice count."""
    ctx = make_context([63.0, 80.0], ["F", "M"], [0, 1], [-0.5, 1.0])
    tok = context_tokens(ctx, ("age", "sex", "diagnosis", "position"), brain_extent=100.0, n_slices=250)
    assert tok.shape == (2, 4, 1)
    torch.testing.assert_close(tok[:, :, 0], torch.tensor([[63.0, 1.0, 1.0, -0.2], [80.0, 0.0, 0.0, 0.4]]))
    with pytest.raises(ValueError, match="conditioned on the diagnosis"):
        context_tokens(make_context(70, "F", None, 0.0), ("age", "sex", "diagnosis", "position"), brain_extent=1.0,
                       n_slices=10)


def test_the_volume_recipe_is_their_trainings(tmp_path):
    """Their normalisation, slicing axis, stack (the target first), padding and position token on a small volume:
    the same numbers as their pipeline; their inference script's centred stack is an option and differs."""
    out, _ = _import(tmp_path, "small-nodiag")
    net, meta = load_model(out)
    f = np.load(DATA / "small-nodiag_volume.npz")
    recipe = dict(meta["input"], n_slices=int(f["n_slices"]), slice_axis=int(f["slice_axis"]))
    kw = dict(age=float(f["age"]), sex=str(f["sex"]), impaired=None)
    y = predict_volume_released(net, f["volume"], recipe, **kw)
    brain = f["volume"] > 0
    error = float(np.abs(y - f["y"])[brain].max())
    assert error <= 1e-5, error
    assert np.all(y[~brain] == 0)
    from synth7t.inference.volume import predict_volume

    with pytest.raises(ValueError, match="predict_volume_released"):  # synth7t's own 2.5D loop refuses it clearly
        predict_volume(net, f["volume"], bottom=0, top=13, **kw)
    centred = predict_volume_released(net, f["volume"], dict(recipe, stack="centre"), **kw)
    assert float(np.abs(centred - f["y"])[brain].max()) > 1e-3


def test_bad_weights_are_refused_whole_with_the_key_named(tmp_path):
    obj, _ = read_checkpoint(DATA / "small-nodiag.pt")
    sd = dict(obj["model_state_dict"])
    key = "module.middle_block.0.phi.weight"
    cases = {
        "lacks 'middle_block.0.phi.weight'": {k: v for k, v in sd.items() if k != key},
        "has 'extra.weight'": {**sd, "module.extra.weight": torch.zeros(1)},
        "'middle_block.0.phi.weight' has shape (2, 1, 1, 1)": {**sd, key: torch.zeros(2, 1, 1, 1)},
    }
    for message, state in cases.items():
        path = tmp_path / "bad.pt"
        torch.save({"model_state_dict": state}, path)
        with pytest.raises(im.ModelImportError, match=message.replace("(", r"\(").replace(")", r"\)")) as info:
            im.import_model(path, DATA / "small-nodiag_params.txt", tmp_path / "out")
        assert "\n" not in str(info.value)
        assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))  # nothing written
    with pytest.raises(im.ModelImportError, match="lacks"):  # the params of another configuration
        im.import_model(DATA / "small-nodiag.pt", DATA / "small-diag_params.txt", tmp_path / "out")


def test_a_checkpoint_whose_pickle_would_run_code_is_read_without_running_it(tmp_path):
    """The reader builds nothing outside its allow-list: an object whose unpickling opens a file for writing is
    dropped, the file never appears; plain pickle would have created it."""
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return open, (str(marker), "w")

    obj, _ = read_checkpoint(DATA / "small-nodiag.pt")
    path = tmp_path / "evil.pt"
    torch.save({"saved_losses": Evil(), "model_state_dict": obj["model_state_dict"]}, path)
    assert not marker.exists()
    with zipfile.ZipFile(path) as z:  # the same bytes, unpickled without restriction, run the code
        name = next(n for n in z.namelist() if n.endswith("data.pkl"))
        with pytest.raises(Exception):
            pickle.loads(z.read(name))  # it fails on the first tensor's storage, after the open
    assert marker.exists()
    marker.unlink()
    out, dropped = im.import_model(path, DATA / "small-nodiag_params.txt", tmp_path / "model")
    assert dropped == ["saved_losses: io.open"] and not marker.exists()  # builtins.open is io.open
    assert load_model(out)[0] is not None
    with pytest.raises(pickle.UnpicklingError):  # torch's own safe loader refuses the authors' real format whole
        torch.load(DATA / "small-nodiag.pt", weights_only=True)


def test_params_are_literals_and_bad_files_say_what_they_are(tmp_path):
    marker = tmp_path / "ran"
    bad = tmp_path / "params.txt"
    bad.write_text(f"__import__('os').system('touch {marker}')")
    with pytest.raises(im.ModelImportError, match="not a Python dict literal"):
        im.read_params(bad)
    assert not marker.exists()
    params = im.read_params(DATA / "small-nodiag_params.txt")
    assert params["channel_mult"] == (1, 2, 2) and params["conditions"] == ["Sex", "Age", "position"]
    assert im.config_from_params(params).tokens == ("age", "sex", "position")
    assert im.config_from_params(im.read_params(DATA / "small-diag_params.txt")).use_diagnosis
    with pytest.raises(im.ModelImportError, match="use_spatial_transformer=False"):
        im.config_from_params({**params, "use_spatial_transformer": False})
    lfs = tmp_path / "my_unet_no_diag.pt"
    lfs.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:edf5\nsize 1036772295\n")
    with pytest.raises(CheckpointReadError, match="git lfs pull"):
        read_checkpoint(lfs)
    notzip = tmp_path / "old.pt"
    notzip.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(CheckpointReadError, match="not a zip-format"):
        read_checkpoint(notzip)
    with pytest.raises(im.ModelImportError, match="missing template file"):
        im.import_model(DATA / "small-nodiag.pt", DATA / "small-nodiag_params.txt", tmp_path / "m",
                        templates=tmp_path)


def test_the_command_imports_and_says_what_it_dropped(tmp_path, capsys):
    out = tmp_path / "model"
    args = ["import-model", str(DATA / "small-diag.pt"), "--params", str(DATA / "small-diag_params.txt"), "-o",
            str(out)]
    assert main(args) == 0
    line = capsys.readouterr().out
    assert line.count("\n") == 1 and "dropped, not tensors: saved_losses: pandas.DataFrame" in line
    meta = json.loads((out / "model.json").read_text())
    assert meta["model_config"]["tokens"] == ["age", "sex", "diagnosis", "position"]
    assert main(args) == 1 and "--overwrite" in capsys.readouterr().err


def _phantom(shape, voxel, *, skull: bool, shift=(0.0, 0.0, 0.0), angle: float = 0.0, stretch=(1.0, 1.0, 1.0)):
    """A head phantom: an ellipsoid brain with brighter and darker inner ellipsoids (something to register), and a
    bright skull shell around it when ``skull``; world coordinates in mm, the brain centred at ``shift``, turned by
    ``angle`` radians about the vertical axis, its world coordinates multiplied by ``stretch`` before the shapes are
    drawn (a brain shrunk by 1 / stretch). Returns (image, brain mask, affine)."""
    affine = np.diag([voxel, voxel, voxel, 1.0])
    affine[:3, 3] = -voxel * (np.asarray(shape) - 1) / 2
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1).reshape(-1, 3)
    xyz = (ijk * voxel + affine[:3, 3] - np.asarray(shift)) * np.asarray(stretch)
    c, s_ = np.cos(angle), np.sin(angle)
    x, y, z = c * xyz[:, 0] + s_ * xyz[:, 1], -s_ * xyz[:, 0] + c * xyz[:, 1], xyz[:, 2]

    def inside(cx, cy, cz, rx, ry, rz):
        return ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 + ((z - cz) / rz) ** 2 < 1

    brain = inside(0, 0, 0, 60, 76, 56)  # 1.07 L
    image = np.where(brain, 100.0, 0.0)
    image[inside(16, 20, 8, 18, 24, 16)] = 160.0
    image[inside(-20, -24, -6, 14, 18, 20)] = 60.0
    image[inside(0, 36, -16, 10, 12, 10) & brain] = 140.0
    if skull:
        image[inside(0, 0, 0, 72, 88, 68) & ~inside(0, 0, 0, 66, 82, 62)] = 220.0
    shape3 = tuple(shape)
    return image.reshape(shape3).astype(np.float32), brain.reshape(shape3), affine


STRETCH = (1.25, 0.85, 1.0)  # their template affine: not a rigid map, so its order against the scan's matters


def _templates(folder: Path) -> Path:
    """Small synthetic templates: the phantom's brain as their 3T template (4 mm) and, shrunk by :data:`STRETCH`,
    as their 7T template (on its own 3.2 mm grid), with the stretch as the affine between the two template spaces."""
    import ants
    import nibabel as nib

    folder.mkdir()
    for name, shape, voxel, stretch in (("template_3T", (40, 48, 38), 4.0, (1, 1, 1)),
                                        ("template_7T", (46, 56, 44), 3.2, STRETCH)):
        image, _, affine = _phantom(shape, voxel, skull=False, stretch=stretch)
        nib.save(nib.Nifti1Image(image, affine), folder / f"{name}.nii.gz")
    # 7T-template world -> 3T-template world: the stretch (diagonal, so the same in ITK's LPS and in RAS)
    tx = ants.create_ants_transform(transform_type="AffineTransform", dimension=3,
                                    matrix=np.diag(STRETCH).astype(float))
    ants.write_transform(tx, str(folder / "template_3T_to_7T.mat"))
    return folder


def test_synth7t_predict_runs_an_imported_model_on_a_scan_with_skull_and_no_qform(tmp_path, capsys):
    """The README's command with an imported model: the scan (skull on, sform only, shifted and turned) aligned
    rigidly to their 3T template and through their template affine onto their 7T template's grid, predicted with
    their recipe, written on that grid as stored and back on the scan's own grid."""
    import nibabel as nib

    image, brain, affine = _phantom((44, 52, 42), 4.0, skull=True, shift=(12.0, -10.0, 4.0), angle=0.05)
    scan, mask = tmp_path / "scan.nii.gz", tmp_path / "scan_mask.nii.gz"
    img = nib.Nifti1Image(image, None)
    img.set_sform(affine, code=1)
    img.set_qform(None, code=0)
    nib.save(img, scan)
    nib.save(nib.Nifti1Image(brain.astype(np.uint8), affine), mask)
    assert nib.load(str(scan)).header["qform_code"] == 0
    templates = _templates(tmp_path / "templates")
    model = tmp_path / "imported"
    assert main(["import-model", str(DATA / "small-nodiag.pt"), "--params", str(DATA / "small-nodiag_params.txt"),
                 "--templates", str(templates), "-o", str(model)]) == 0
    assert (model / "templates" / "template_3T_to_7T.mat").is_file()
    out = tmp_path / "out.nii.gz"
    argv = ["predict", str(scan), "-o", str(out), "--model", str(model), "--age", "70", "--sex", "F", "--mask",
            str(mask), "--native", "--device", "cpu", "--force"]  # a phantom, not a brain: the content checks refuse
    assert main(argv) == 0, capsys.readouterr().err
    grid = nib.load(str(templates / "template_7T.nii.gz"))
    pred = nib.load(str(out))
    assert pred.shape == grid.shape and np.allclose(pred.affine, grid.affine, atol=1e-4)
    predicted = np.asarray(pred.dataobj) != 0
    template_brain = grid.get_fdata() > 0
    overlap = 2 * (predicted & template_brain).sum() / (predicted.sum() + template_brain.sum())
    # the shifted, turned brain lands on the template's brain: 0.979; with the two maps composed the other way round
    # (the template affine is not rigid, so the order matters) 0.956
    assert overlap > 0.97, overlap
    native = nib.load(str(out).replace(".nii", "_space-native.nii"))
    assert native.shape == image.shape
    back = np.asarray(native.dataobj) != 0
    assert 2 * (back & brain).sum() / (back.sum() + brain.sum()) > 0.9  # and back onto the scan's brain
    with pytest.raises(ValueError, match="not available for an imported model"):
        from synth7t.inference import predict_file

        predict_file(scan, tmp_path / "o2.nii.gz", model, age=70, sex="F", impaired=None, views=["axial"])
    bare = tmp_path / "bare"
    im.import_model(DATA / "small-nodiag.pt", DATA / "small-nodiag_params.txt", bare)
    assert main(["predict", str(scan), "-o", str(tmp_path / "o3.nii.gz"), "--model", str(bare), "--age", "70",
                 "--sex", "F", "--mask", str(mask)]) == 1
    assert "import it again with --templates" in capsys.readouterr().err


def test_bf16_is_chosen_for_full_size_imported_networks_on_cpus_that_have_it(tmp_path, monkeypatch):
    """--precision auto: bf16 only for an imported full-size network on a CPU with bf16 instructions (one line says
    so); fp32 for small ones; bf16 asked where the CPU would emulate it is refused. On the recipe fixture bf16 stays
    within a few hundredths of fp32 (the book quotes the figures)."""
    from synth7t.inference import precision as vp
    from synth7t.models import build_model

    out, _ = _import(tmp_path, "small-nodiag")
    net, meta = load_model(out)
    monkeypatch.setattr(vp, "cpu_supports_bf16", lambda: True)
    assert vp.choose_precision("auto", "cpu", net, meta) == ("fp32", None)  # 0.09 M parameters
    with torch.device("meta"):
        big = build_model("released-gan-nodiag")
    chosen, note = vp.choose_precision("auto", "cpu", big, {"model_config": big.config.to_dict()})
    assert chosen == "bf16" and "222 M parameters" in note and "\n" not in note
    assert vp.choose_precision("auto", "cuda", big, {"model_config": big.config.to_dict()}) == ("fp32", None)
    monkeypatch.setattr(vp, "cpu_supports_bf16", lambda: False)
    assert vp.choose_precision("auto", "cpu", big, {"model_config": big.config.to_dict()})[0] == "fp32"
    with pytest.raises(ValueError, match="AVX-512 BF16"):
        vp.choose_precision("bf16", "cpu", net, meta)
    with pytest.raises(ValueError, match="precision must be one of"):
        vp.choose_precision("fp16", "cpu", net, meta)
    f = np.load(DATA / "small-nodiag_volume.npz")
    recipe = dict(meta["input"], n_slices=int(f["n_slices"]))
    kw = dict(age=float(f["age"]), sex=str(f["sex"]), impaired=None)
    fp32 = predict_volume_released(net, f["volume"], recipe, **kw)
    with vp.inference_precision("bf16", "cpu"):
        bf16 = predict_volume_released(net, f["volume"], recipe, **kw)
    brain = f["volume"] > 0
    diff = np.abs(bf16 - fp32)[brain]
    assert 0 < diff.max() < 0.05  # bf16 did run (the outputs differ), and stays close
