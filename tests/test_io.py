import gzip

import nibabel as nib
import numpy as np
import pytest

from synth7t.data import io as sio
from conftest import write_nifti


def test_round_trip_float_preserves_data_affine_and_codes(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.normal(size=(5, 6, 7)).astype(np.float32)
    affine = np.array([[0.7, 0, 0, -10], [0, 0.7, 0, 20], [0, 0, 0.7, 5], [0, 0, 0, 1]])
    hdr = nib.Nifti1Header()
    hdr.set_qform(affine, code=2)
    hdr.set_sform(affine, code=4)
    p = sio.save_volume(tmp_path / "a.nii.gz", data, affine, header=hdr)
    vol = sio.load_volume(p)
    np.testing.assert_array_equal(vol.data, data)
    np.testing.assert_allclose(vol.affine, affine, atol=1e-6)
    assert vol.spacing == pytest.approx((0.7, 0.7, 0.7))
    img = nib.load(str(p))
    assert int(img.header["sform_code"]) == 4 and int(img.header["qform_code"]) == 2
    assert img.header.get_xyzt_units() == ("mm", "sec")
    assert img.get_data_dtype() == np.float32


@pytest.mark.parametrize(
    "data, expected",
    [
        (np.zeros((3, 3, 3), bool), np.uint8),
        (np.arange(27, dtype=np.int64).reshape(3, 3, 3), np.uint8),
        (np.arange(-5, 22, dtype=np.int64).reshape(3, 3, 3), np.int16),
        (np.arange(27, dtype=np.int64).reshape(3, 3, 3) * 10_000, np.int32),
        (np.ones((3, 3, 3), np.float64), np.float32),
    ],
)
def test_written_dtype_is_sensible(tmp_path, data, expected):
    p = sio.save_volume(tmp_path / "x.nii", data, np.eye(4))
    assert nib.load(str(p)).get_data_dtype() == expected
    np.testing.assert_array_equal(sio.load_volume(p, dtype=None).data, data.astype(expected))


def test_without_header_codes_default_to_scanner(tmp_path):
    p = sio.save_volume(tmp_path / "x.nii.gz", np.ones((3, 3, 3), np.float32), np.eye(4))
    hdr = nib.load(str(p)).header
    assert int(hdr["sform_code"]) == 1 and int(hdr["qform_code"]) == 1


def test_four_d_single_volume_is_accepted(tmp_path):
    p = write_nifti(tmp_path / "f.nii.gz", np.ones((4, 5, 6, 1), np.float32))
    vol = sio.load_volume(p)
    assert vol.shape == (4, 5, 6)


def _bad_spacing(tmp_path):
    img = nib.Nifti1Image(np.ones((4, 4, 4), np.float32), np.eye(4))
    img.header["pixdim"][2] = 0.0
    img.set_qform(None, code=0)
    p = tmp_path / "bad_spacing.nii.gz"
    nib.save(img, str(p))
    return p


def _singular(tmp_path):
    aff = np.array([[1.0, 1.0, 0, 0], [1.0, 1.0, 0, 0], [0, 0, 1.0, 0], [0, 0, 0, 1]])
    img = nib.Nifti1Image(np.ones((4, 4, 4), np.float32), aff)
    img.header.set_zooms((1.0, 1.0, 1.0))
    img.set_qform(None, code=0)
    p = tmp_path / "singular.nii.gz"
    nib.save(img, str(p))
    return p


def _garbage(tmp_path):
    p = tmp_path / "garbage.nii.gz"
    p.write_bytes(gzip.compress(b"this is not a nifti header" * 10))
    return p


def _text(tmp_path):
    p = tmp_path / "notes.txt"
    p.write_text("hello")
    return p


@pytest.mark.parametrize(
    "make, problem",
    [
        (lambda t: write_nifti(t / "five_d.nii.gz", np.ones((3, 3, 3, 2), np.float32)), "expected a 3D volume"),
        (lambda t: write_nifti(t / "flat.nii.gz", np.ones((5, 5, 1), np.float32)), "2D image"),
        (lambda t: write_nifti(t / "two_d.nii.gz", np.ones((5, 5), np.float32)), "expected a 3D volume"),
        (lambda t: write_nifti(t / "nan.nii.gz", np.full((3, 3, 3), np.nan, np.float32)), "non-finite"),
        (lambda t: write_nifti(t / "inf.nii", np.array([np.inf] * 27, np.float32).reshape(3, 3, 3)), "non-finite"),
        (_bad_spacing, "spacing must be 3 positive numbers"),
        (_singular, "singular"),
        (_garbage, "unreadable"),
        (_text, "not a NIfTI file"),
        (lambda t: t / "missing.nii.gz", "does not exist"),
        (lambda t: t, "is a folder"),
    ],
)
def test_rejected_inputs_name_file_and_problem(tmp_path, make, problem):
    p = make(tmp_path)
    with pytest.raises(ValueError) as err:
        sio.load_volume(p)
    assert problem in str(err.value)
    assert str(p) in str(err.value)
    assert isinstance(err.value, sio.NiftiError)


def test_reorientation_to_ras_keeps_world_coordinates(tmp_path):
    from nibabel import orientations as o

    data = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    ornt = o.ornt_transform(o.axcodes2ornt("RAS"), o.axcodes2ornt("LIA"))
    lia = o.apply_orientation(data, ornt)
    aff = np.diag([2.0, 2.0, 2.0, 1.0]) @ o.inv_ornt_aff(ornt, data.shape)
    p = write_nifti(tmp_path / "lia.nii.gz", lia, aff)
    raw = sio.load_volume(p)
    assert nib.aff2axcodes(raw.affine) == ("L", "I", "A")
    ras = sio.load_volume(p, reorient=True)
    assert nib.aff2axcodes(ras.affine) == ("R", "A", "S")
    # the same world point holds the same value in both
    w = sio.voxel_to_world(raw.affine, [[1, 2, 3]])
    ijk = np.rint(sio.world_to_voxel(ras.affine, w)[0]).astype(int)
    assert raw.data[1, 2, 3] == ras.data[tuple(ijk)]


def test_save_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="3D"):
        sio.save_volume(tmp_path / "a.nii.gz", np.ones((3, 3)), np.eye(4))
    with pytest.raises(ValueError, match="singular"):
        sio.save_volume(tmp_path / "a.nii.gz", np.ones((3, 3, 3)), np.zeros((4, 4)))
    with pytest.raises(ValueError, match=".nii"):
        sio.save_volume(tmp_path / "a.png", np.ones((3, 3, 3)), np.eye(4))
    with pytest.raises(ValueError, match="non-finite"):
        sio.save_volume(tmp_path / "a.nii", np.full((3, 3, 3), np.nan), np.eye(4))
    assert not list(tmp_path.glob("*.tmp*"))
