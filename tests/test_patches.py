"""Patches of the baselines (V-Net, WATNet) from the slice cache, and prediction by sliding window."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from synth7t import inference
from synth7t.training import patches, slices, trainer
from synth7t.training import config as tconf
from synth7t.models import VNetConfig, WATNetConfig, build_model


@pytest.fixture(scope="module")
def cache(preprocessed_cohort, tmp_path_factory):
    derivatives, ds, split_file = preprocessed_cohort
    root = slices.build_cache(derivatives, tmp_path_factory.mktemp("patch_cache"), ds, split_file=split_file,
                              progress=False)
    return slices.SliceCache.open(root)


def _train_keys(cache) -> list:
    v = cache.volumes
    return sorted(v.loc[v["split"] == "train", "key"])


GEOMETRIES = [
    (patches.PatchGeometry(3, 16), (1, 16, 16, 16), (1, 16, 16, 16)),
    (patches.PatchGeometry(2, 16, 3), (3, 16, 16), (1, 16, 16)),
    (patches.PatchGeometry(2, 32, 5), (5, 32, 32), (1, 32, 32)),
]


@pytest.mark.parametrize("geometry,x_shape,y_shape", GEOMETRIES)
def test_patch_shapes_content_and_brain_centres(cache, geometry, x_shape, y_shape):
    keys = _train_keys(cache)
    data = patches.PatchDataset(cache, keys, geometry=geometry, seed=0)
    vols = cache.volumes.set_index("key")
    usable = set(zip(cache.index["key"], cache.index["z"]))
    for i in range(0, len(data), max(1, len(data) // 12)):
        it = data[i]
        assert it["x"].shape == x_shape and it["y"].shape == y_shape and it["mask"].shape == y_shape
        assert it["x"].dtype == torch.float32 and it["context"].shape == (4,)
        assert it["key"] in keys
        offset = int(vols.loc[it["key"], "offset"])
        z, yc, xc = it["centre"]
        z0, y0, x0 = it["origin"]
        # the centre is a brain voxel of a usable slice (a sample of the cache), and it lies in the patch
        assert float(cache.t3[offset + z, yc, xc]) > 0 and (it["key"], z) in usable
        assert 0 <= yc - y0 < geometry.size and 0 <= xc - x0 < geometry.size
        if geometry.spatial_dims == 3:
            assert 0 <= z - z0 < geometry.size
            want = np.asarray(cache.t3[offset + z0:offset + z0 + 16, y0:y0 + 16, x0:x0 + 16], np.float32)
            np.testing.assert_array_equal(it["x"][0].numpy(), want)
            # the mask is the brain, and nothing on slices that are not samples (7T artefacts, no brain)
            for dz in range(geometry.size):
                if (it["key"], z0 + dz) not in usable:
                    assert not it["mask"][0, dz].any()
                else:
                    brain = (it["x"][0, dz] > 0) | (it["y"][0, dz] > 0)
                    assert torch.equal(it["mask"][0, dz].bool(), brain)
        else:
            half = geometry.n_input_slices // 2
            # the centre channel is slice z, the target its 7T
            np.testing.assert_array_equal(it["x"][half].numpy(), np.asarray(
                cache.t3[offset + z, y0:y0 + geometry.size, x0:x0 + geometry.size], np.float32))
            np.testing.assert_array_equal(it["y"][0].numpy(), np.asarray(
                cache.t7[offset + z, y0:y0 + geometry.size, x0:x0 + geometry.size], np.float32))
            assert it["mask"][0, yc - y0, xc - x0] == 1


def test_patches_are_seeded_per_epoch_and_never_from_test_subjects(cache):
    keys = _train_keys(cache)
    test_keys = sorted(cache.volumes.loc[cache.volumes["split"] == "test", "key"])
    assert test_keys
    g = patches.PatchGeometry(3, 16)
    a = patches.PatchDataset(cache, keys, geometry=g, seed=4)
    b = patches.PatchDataset(cache, keys, geometry=g, seed=4)
    other = patches.PatchDataset(cache, keys, geometry=g, seed=5)
    n = 16
    first = [a[i]["centre"] for i in range(n)]
    assert first == [b[i]["centre"] for i in range(n)]  # same seed, same epoch: the same patches
    torch.testing.assert_close(a[3]["x"], b[3]["x"], rtol=0, atol=0)
    assert first != [other[i]["centre"] for i in range(n)]
    a.set_epoch(1)
    second = [a[i]["centre"] for i in range(n)]
    assert second != first
    b.set_epoch(1)
    assert second == [b[i]["centre"] for i in range(n)]
    # every sample of many comes from the training side
    assert {a[i]["key"] for i in range(len(a))} <= set(keys)
    with pytest.raises(ValueError, match="test subjects are only ever scored"):
        patches.PatchDataset(cache, keys + test_keys[:1], geometry=g)
    with pytest.raises(ValueError, match="not in the cache"):
        patches.PatchDataset(cache, ["sub-999"], geometry=g)
    with pytest.raises(ValueError, match="keys must be a list"):
        patches.PatchDataset(cache, "train", geometry=g)
    with pytest.raises(ValueError, match="overlap"):
        patches.PatchDataset(cache, keys, geometry=g, overlap=16)
    with pytest.raises(IndexError):
        a[len(a)]


def test_epoch_size_is_the_grid_samplers_count_over_the_brain(cache):
    assert [patches.grid_positions(e, 64, 8) for e in (10, 64, 65, 120, 121, 288)] == [1, 1, 2, 2, 3, 5]
    assert patches.grid_positions(7, 3, 0) == 3
    with pytest.raises(ValueError, match="overlap"):
        patches.grid_positions(100, 8, 8)
    key = _train_keys(cache)[0]
    for g in (patches.PatchGeometry(3, 16), patches.PatchGeometry(2, 16, 3)):
        data = patches.PatchDataset(cache, [key], geometry=g, overlap=4)
        off = int(cache.volumes.set_index("key").loc[key, "offset"])
        rows = cache.index.loc[cache.index["key"] == key, "offset"].to_numpy()
        brain = np.asarray(cache.t3[rows]) > 0
        box = patches.nonzero_box(brain)
        z = rows[brain.any(axis=(1, 2))] - off
        ez, ey, ex = int(z.max() - z.min() + 1), box[1].stop - box[1].start, box[2].stop - box[2].start
        along = patches.grid_positions(ez, 16, 4) if g.spatial_dims == 3 else patches.grid_positions(ez, 3, 0)
        assert len(data) == along * patches.grid_positions(ey, 16, 4) * patches.grid_positions(ex, 16, 4)


def test_patch_geometry_of_model_configs():
    assert patches.patch_geometry(VNetConfig()) == patches.PatchGeometry(3, 64, 1)
    assert patches.patch_geometry(WATNetConfig().to_dict()) == patches.PatchGeometry(2, 64, 3)
    assert patches.patch_geometry(WATNetConfig(spatial_dims=3, n_input_slices=1, patch_size=16)) == \
        patches.PatchGeometry(3, 16, 1)
    from synth7t.models import get_model_config

    assert patches.patch_geometry(get_model_config("demo-cpu")) is None
    assert patches.patch_geometry(None) is None


# ------------------------------------------------------------------------------------------ sliding window


class Pointwise(torch.nn.Module):
    """A 1x1(x1) convolution: its output at a voxel depends on that voxel only, so any windowing is exact."""

    def __init__(self, dims: int, channels: int = 1, config=None):
        super().__init__()
        conv = torch.nn.Conv3d if dims == 3 else torch.nn.Conv2d
        self.conv = conv(channels, 1, 1)
        torch.manual_seed(0)
        torch.nn.init.uniform_(self.conv.weight, 0.2, 0.6)
        torch.nn.init.constant_(self.conv.bias, 0.05)
        if config is not None:
            self.config = config

    def forward(self, x, context=None):
        return self.conv(x)


@pytest.mark.parametrize("mode", ["gaussian", "constant"])
def test_a_window_covering_the_input_equals_the_direct_forward(mode):
    torch.manual_seed(0)
    net = build_model("vnet-demo").eval()
    x = torch.rand(1, 1, 32, 32, 32)
    with torch.no_grad():
        direct = net(x)
    windowed = patches.sliding_window_predict(net, x, patch_size=32, overlap=8, batch_size=2, mode=mode)
    tol = 0 if mode == "constant" else 1e-6
    torch.testing.assert_close(windowed, direct, rtol=tol, atol=tol)


@pytest.mark.parametrize("patch_size,overlap", [(8, 0), (8, 3), (16, 8), (64, 8)])
@pytest.mark.parametrize("mode", ["gaussian", "constant"])
def test_pointwise_network_any_window_equals_the_direct_forward(patch_size, overlap, mode):
    x3 = torch.rand(2, 1, 19, 27, 33, generator=torch.Generator().manual_seed(1))
    net3 = Pointwise(3)
    torch.testing.assert_close(patches.sliding_window_predict(net3, x3, patch_size=patch_size, overlap=overlap,
                                                              batch_size=3, mode=mode),
                               net3(x3).detach(), rtol=1e-5, atol=1e-6)
    x2 = torch.rand(4, 3, 27, 33, generator=torch.Generator().manual_seed(2))
    net2 = Pointwise(2, channels=3)
    torch.testing.assert_close(patches.sliding_window_predict(net2, x2, patch_size=patch_size, overlap=overlap,
                                                              batch_size=5, mode=mode),
                               net2(x2).detach(), rtol=1e-5, atol=1e-6)


def test_sliding_window_steps_by_patch_minus_overlap():
    """The windows start every ``patch_size - overlap`` voxels, whatever MONAI's float overlap fraction does."""
    for size, ov in [(64, 8), (48, 8), (32, 8), (24, 7), (40, 0)]:
        frac = patches._overlap_fraction(size, ov)
        assert int(size * (1 - frac)) == size - ov
    starts = []

    def record(w):
        starts.append(w.shape)
        return w[:, :1]

    x = torch.zeros(1, 1, 104, 48)
    patches.sliding_window_predict(record, x, patch_size=48, overlap=8, batch_size=1)
    assert len(starts) == patches.grid_positions(104, 48, 8) * patches.grid_positions(48, 48, 8) == 3


def test_sliding_window_bad_arguments():
    net = Pointwise(2)
    x = torch.rand(1, 1, 16, 16)
    for kwargs, match in [(dict(overlap=8), "overlap"), (dict(overlap=-1), "overlap"),
                          (dict(batch_size=0), "batch_size"), (dict(mode="hann"), "mode")]:
        with pytest.raises(ValueError, match=match):
            patches.sliding_window_predict(net, x, **{"patch_size": 8, "overlap": 2, **kwargs})
    with pytest.raises(ValueError, match="x must be"):
        patches.sliding_window_predict(net, x[0], patch_size=8)


def test_volume_prediction_by_window_puts_every_voxel_back_in_place():
    """predict_volume of a pointwise baseline equals the pointwise map of the (X, Y, Z) volume, in the mask; a
    2D one sees each axial slice with its neighbours (clamped at the grid's edges)."""
    rng = np.random.default_rng(0)
    t3 = rng.random((13, 22, 17)).astype(np.float32)
    mask = np.zeros(t3.shape, bool)
    mask[2:11, 3:20, 1:15] = True
    t3 *= mask
    ctx = dict(age=70, sex="F", impaired=None, bottom=1, top=14)
    net3 = Pointwise(3, config=VNetConfig(base_channels=4, down_convs=(1,), up_convs=(1,), patch_size=16))
    out = inference.volume.predict_volume(net3, t3, mask=mask, **ctx)
    w, b = net3.conv.weight.detach().flatten()[0].item(), net3.conv.bias.detach()[0].item()
    np.testing.assert_allclose(out, np.clip(w * t3 + b, 0, 1) * mask, rtol=1e-5, atol=1e-6)
    cfg2 = WATNetConfig(spatial_dims=2, n_input_slices=3, features=4, levels=1, patch_size=8)
    net2 = Pointwise(2, channels=3, config=cfg2)
    out2 = inference.volume.predict_volume(net2, t3, mask=mask, batch_size=3, patch_overlap=2, **ctx)
    wz = net2.conv.weight.detach().flatten().numpy()
    z = np.arange(t3.shape[2])
    below, above = t3[:, :, np.clip(z - 1, 0, 16)], t3[:, :, np.clip(z + 1, 0, 16)]
    want = np.clip(wz[0] * below + wz[1] * t3 + wz[2] * above + net2.conv.bias.detach()[0].item(), 0, 1) * mask
    np.testing.assert_allclose(out2, want, rtol=1e-5, atol=1e-6)
    assert not inference.volume.predict_volume(net3, t3, mask=np.zeros_like(mask), **ctx).any()
    with pytest.raises(ValueError, match="mask shape"):
        inference.volume.predict_volume(net3, t3, mask=mask[:, :, :5], **ctx)
    with pytest.raises(ValueError, match="not a patch-trained baseline"):
        inference.volume.predict_volume_patches(Pointwise(3), t3)


# ------------------------------------------------------------------------------------------ the trainer's batches


def test_baseline_batches_split_over_ranks_and_carry_the_mask(cache, tmp_path):
    """A rank's share of a global batch of patches is the matching rows of one process's batch (torchrun)."""
    cfg = tconf.TrainConfig.from_preset("demo-cpu-watnet", batch_size=6, samples_per_epoch=24, val_slices=2, epochs=1)
    one = trainer.Trainer(cfg, cache.root, tmp_path / "one", progress=False, resume=False)
    assert isinstance(one.train_ds, patches.PatchDataset) and not set(one.train_ds.keys) & set(one.val_keys)
    full = one._batch(0, 1)
    assert full["x"].shape == (6, 3, 32, 32) and full["mask"].shape == (6, 1, 32, 32)
    t = trainer.Trainer(cfg, cache.root, tmp_path / "ranks", progress=False, resume=False)
    t.world = 3
    t.rank_batch, t.micro_batch = trainer.split_batch(6, 3)
    for r in range(3):
        t.rank = r
        share = t._batch(0, 1)
        for k in ("x", "y", "mask"):
            torch.testing.assert_close(share[k], full[k][2 * r:2 * r + 2], rtol=0, atol=0)
    assert json.loads((tmp_path / "one" / "config.json").read_text())["patch_overlap"] == 8
