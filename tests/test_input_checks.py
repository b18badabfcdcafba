"""The content checks of a lone 3T (synth7t.preprocess.input_checks) on the shipped MNI 2009c T1 and its altered
copies: a T1w brain passes; negated, T2-like, noise, a sheared or broken header, a small head and a failed alignment
are refused; thick slices are warned; ``force`` goes on and the refusal stays in the record."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from synth7t.data import io as sio
from synth7t.preprocess import InputCheckConfig, InputRefused, InputWarning, preprocess_lone_3t
from synth7t.preprocess import input_checks as ic
from synth7t.data.templates import template_sources


@pytest.fixture(scope="module")
def mni2():
    """The MNI 2009c T1 (with scalp) and its brain mask at 2 mm (every other voxel: fast, still a brain)."""
    src = template_sources()
    t1 = sio.load_volume(src["t1"], reorient=True)
    mask = sio.load_volume(src["mask"], reorient=True).data > 0.5
    aff = t1.affine.copy()
    aff[:3, :3] *= 2
    return t1.data[::2, ::2, ::2].copy(), mask[::2, ::2, ::2].copy(), aff


def _outcome(findings, check):
    (f,) = [f for f in findings if f.check == check]
    return f.outcome


def test_a_t1w_brain_passes_and_wrong_contrasts_are_refused(mni2):
    t1, mask, aff = mni2
    # intensity rises from the brain's surface inwards in a T1w: 0.44 at 1 mm (a check with the sign turned, or one
    # that refuses below a limit the T1w does not reach, fails here)
    r = ic.tissue_depth_correlation(t1, mask, aff)
    assert r > 0.35, r
    assert _outcome(ic.check_brain(t1, mask, aff), "tissue_order") == "ok"
    brain = np.where(mask, t1, 0)
    t2_like = np.where(mask, brain.max() - brain, 0)  # CSF bright, white matter dark
    noise = np.random.default_rng(0).normal(100, 20, t1.shape).astype(np.float32)
    for name, img, limit in (("negated", -t1, -0.3), ("T2-like", t2_like, -0.3), ("noise", noise, 0.05)):
        f = ic.check_tissue_order(img, mask, aff)
        assert f.outcome == "refuse" and f.value < limit, (name, f)
    # the k-means classes that the out-of-distribution score measures contrast with: white matter deepest
    ratio, detail = ic.tissue_depth_ratio(t1, mask, aff)
    assert ratio > 1.3 and detail["depth_mm"][2] == max(detail["depth_mm"]), detail
    assert detail["centre"] == sorted(detail["centre"])


def test_the_brain_volume_is_held_to_the_adult_range(mni2):
    _, mask, aff = mni2
    f = ic.check_brain_volume(mask, aff)
    assert f.outcome == "ok" and 1700 < f.value < 2100, f  # the (enlarged) MNI brain: about 1,900 mL
    small = aff.copy()
    small[:3, :3] *= 0.75  # a head scaled to 0.75: 0.42 of the volume, a child's
    f = ic.check_brain_volume(mask, small)
    assert f.outcome == "refuse" and f.value < 900, f
    assert ic.check_brain_volume(mask, small, InputCheckConfig(min_brain_ml=700)).outcome == "ok"


def test_the_header_checks_see_shear_voxel_sizes_extent_and_thick_slices(mni2):
    t1, _, aff = mni2
    shape = t1.shape
    assert all(f.outcome == "ok" for f in ic.check_header(aff, shape, 1.2))
    sheared = aff.copy()
    sheared[0, 1] = 0.3 * aff[1, 1]  # 17 degrees of shear
    assert _outcome(ic.check_header(sheared, shape, 1.2), "affine") == "refuse"
    tilted = aff.copy()
    c, s = np.cos(0.3), np.sin(0.3)
    tilted[:3, :3] = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]) @ aff[:3, :3]  # rotated, not sheared
    assert _outcome(ic.check_header(tilted, shape, 1.2), "affine") == "ok"
    big = aff.copy()
    big[:3, :3] *= 6  # 12 mm voxels
    f = ic.check_header(big, shape, 1.2)
    assert _outcome(f, "voxel_size") == "refuse" and _outcome(f, "extent") == "refuse"
    thick = np.diag([1.0, 1.0, 5.0, 1.0])  # a clinical 1 x 1 x 5 mm scan: predicted, with a warning
    f = ic.check_header(thick, (180, 220, 36), 1.2)
    assert _outcome(f, "slice_thickness") == "warn" and _outcome(f, "extent") == "ok"
    assert _outcome(ic.check_header(thick, (180, 220, 36), None), "voxel_size") == "ok"  # no grid: not checked
    assert not [x for x in ic.check_header(thick, (180, 220, 36), None) if x.check == "slice_thickness"]


def test_a_refusal_stops_force_goes_on_and_a_forced_record_is_refused_again():
    bad = ic.Finding("tissue_order", "refuse", -0.54, ">= 0.15", "not a T1-weighted brain")
    warn = ic.Finding("slice_thickness", "warn", 4.2, "<= 2.0", "thick slices")
    with pytest.raises(InputRefused, match=r"(?s)--force.*tissue_order: not a T1-weighted brain \(-0.54; limit"):
        ic.enforce([bad, warn], "scan.nii.gz")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        out = ic.enforce([bad, warn], "scan.nii.gz", force=True)
    assert [f.outcome for f in out] == ["forced", "warn"]
    assert [w.category for w in seen] == [InputWarning, InputWarning] and "going on (--force)" in str(seen[0].message)
    assert ic.summarise(out) == "tissue_order:forced; slice_thickness:warn"
    assert ic.summarise([ic.Finding("affine", "ok", 0.0, "", "")]) == "ok"
    with pytest.raises(InputRefused):  # read back from a record written with force, without force
        ic.enforce([f.to_dict() for f in out], "scan.nii.gz")


def test_the_lone_3t_path_checks_as_it_goes_and_records_the_findings(mni2, tmp_path):
    """The template alignment of the MNI T1 itself (shifted in its header) correlates highly with the template; its
    copy flipped front to back cannot be aligned rigidly and is refused; negated it is refused before N4 and
    alignment ran (no timing for them)."""
    from synth7t import preprocess as pp

    t1, mask, aff = mni2
    cfg = pp.PreprocessConfig.from_preset("quick", qc_figure=False, mask_backend="given", target_spacing=2.0, n4_3t=False,
                         registration={"spacing": 4.0})
    shifted = aff.copy()
    shifted[:3, 3] += (9.0, -7.0, 5.0)
    scan, m = tmp_path / "sub-01_T1w.nii.gz", tmp_path / "sub-01_mask.nii.gz"
    sio.save_volume(scan, t1, shifted)
    sio.save_volume(m, mask.astype(np.uint8), shifted)
    rec = preprocess_lone_3t(scan, tmp_path / "ok", cfg, method="template", t3_mask=m)
    checks = {f["check"]: f for f in rec["input_checks"]}
    assert set(checks) == {"affine", "voxel_size", "extent", "slice_thickness", "brain_volume", "tissue_order",
                           "alignment"}
    assert all(f["outcome"] == "ok" for f in checks.values()), checks
    assert checks["alignment"]["value"] > 0.8, checks["alignment"]
    flipped = shifted.copy()
    flipped[:3, 1] *= -1  # front and back swapped in the header: a mirror image no rigid alignment undoes
    sio.save_volume(scan, t1, flipped)
    sio.save_volume(m, mask.astype(np.uint8), flipped)
    with pytest.raises(InputRefused, match="alignment"):
        preprocess_lone_3t(scan, tmp_path / "flipped", cfg, method="template", t3_mask=m)
    sio.save_volume(scan, -t1, shifted)
    sio.save_volume(m, mask.astype(np.uint8), shifted)
    with pytest.raises(InputRefused, match="tissue_order"):
        preprocess_lone_3t(scan, tmp_path / "negated", cfg, method="template", t3_mask=m)
    with pytest.warns(InputWarning, match="tissue_order"):
        rec = preprocess_lone_3t(scan, tmp_path / "forced", cfg, method="template", t3_mask=m, force=True)
    assert {f["check"]: f["outcome"] for f in rec["input_checks"]}["tissue_order"] == "forced"
