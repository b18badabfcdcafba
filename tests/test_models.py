"""Tests of synth7t.models: shapes, argument checking, conditioning, AdaDM, configs, facts and training."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from synth7t.models import (DISCRIMINATOR_PRESETS, MODEL_PRESETS, ConditionalUNet, DiscriminatorConfig,
    GicquelUNetConfig, UNetConfig, VNetConfig, WATNetConfig, build_discriminator, build_model, config_from_dict,
    get_discriminator_config, get_model_config, make_context, slice_location)
from synth7t.models.blocks import AdaDM, AttentionBlock, ResBlock, sinusoidal_positional_encoding
from synth7t.models.facts import default_fact_presets, facts_table, model_facts
from synth7t.models.watnet import _haar_filters, haar_dwt, haar_pyramid

META = torch.device("meta")


def smooth_image(shape: tuple, seed: int = 0) -> torch.Tensor:
    """A smooth, structured image in [0, 1] (sum of a few seeded plane waves)."""
    g = torch.Generator().manual_seed(seed)
    coords = torch.meshgrid(*[torch.linspace(-1, 1, s) for s in shape], indexing="ij")
    img = torch.zeros(shape)
    for k in range(4):
        freq = torch.rand(len(shape), generator=g) * 4 + 1
        phase = float(torch.rand(1, generator=g)) * 2 * math.pi
        img = img + torch.sin(math.pi * sum(f * c for f, c in zip(freq, coords)) + phase) / (k + 1)
    return (img - img.min()) / (img.max() - img.min())


def blur(x: torch.Tensor, k: int = 5) -> torch.Tensor:
    pool = F.avg_pool2d if x.ndim == 4 else F.avg_pool3d
    return pool(x, k, stride=1, padding=k // 2, count_include_pad=False)


def context(batch: int = 2) -> torch.Tensor:
    return make_context(torch.linspace(55, 85, batch), [i % 2 for i in range(batch)], [i % 2 for i in range(batch)],
                        torch.linspace(-0.8, 0.8, batch))


# ----------------------------------------------------------------------------------------------- shapes

PAPER_2D = [name for name, cfg in MODEL_PRESETS.items()
            if isinstance(cfg, UNetConfig) or (isinstance(cfg, WATNetConfig) and cfg.spatial_dims == 2)]
RELEASED = [name for name, cfg in MODEL_PRESETS.items() if isinstance(cfg, GicquelUNetConfig)]
PAPER_3D = [name for name in MODEL_PRESETS if name not in PAPER_2D + RELEASED]


@pytest.mark.parametrize("name", RELEASED)
def test_released_architectures_take_their_slices_and_raw_tokens_on_meta(name):
    """The authors' released networks (about 259 M and 222 M parameters) on a 288 x 224 slice with their tokens."""
    cfg = get_model_config(name)
    with META:
        model = build_model(name)
        out = model(torch.empty(2, 3, 288, 224), torch.empty(2, len(cfg.tokens), 1))
    assert out.shape == (2, 1, 288, 224)
    assert 2.0e8 < sum(p.numel() for p in model.parameters()) < 2.7e8


@pytest.mark.parametrize("name", PAPER_2D)
def test_2d_presets_output_shape_at_paper_size_on_meta(name):
    cfg = get_model_config(name)
    ctx = context(2).to(META)
    with META:
        model = build_model(name)
        out = model(torch.empty(2, cfg.n_input_slices, 288, 224), ctx)
    assert out.shape == (2, 1, 288, 224)


@pytest.mark.parametrize("name", PAPER_3D)
def test_3d_presets_output_shape_on_64_patches_on_meta(name):
    with META:
        out = build_model(name)(torch.empty(2, 1, 64, 64, 64))
    assert out.shape == (2, 1, 64, 64, 64)


@pytest.mark.parametrize("name,shape", [
    ("demo-cpu", (2, 3, 32, 48)),
    ("demo-cpu-nodiag", (1, 3, 64, 64)),
    ("demo-cpu-gan", (2, 3, 32, 32)),
    ("watnet-2d-demo", (2, 3, 32, 48)),
    ("vnet-demo", (1, 1, 16, 32, 16)),
    ("watnet-3d-demo", (1, 1, 16, 16, 32)),
])
def test_demo_presets_run_on_cpu(name, shape):
    torch.manual_seed(0)
    model = build_model(name).eval()
    with torch.no_grad():
        out = model(torch.rand(shape), context(shape[0]))
    assert out.shape == (shape[0], 1) + shape[2:]
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name,size,expected", [
    ("paper-gan", (288, 224), (9, 7)),     # Table A.3: 5 layers, H/2^5 x W/2^5
    ("demo-cpu", (288, 224), (36, 28)),
    ("demo-cpu", (64, 64), (8, 8)),
])
def test_discriminator_patch_map_shape(name, size, expected):
    with META:
        out = build_discriminator(name)(torch.empty(3, 1, *size))
    assert out.shape == (3, 1) + expected


def test_discriminator_uses_a_per_sample_norm_and_leaky_relu():
    critic = build_discriminator("demo-cpu")
    norms = [m for m in critic.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    groups = [m for m in critic.modules() if isinstance(m, torch.nn.GroupNorm)]
    slopes = {m.negative_slope for m in critic.modules() if isinstance(m, torch.nn.LeakyReLU)}
    assert not norms and groups and all(g.num_groups == 1 for g in groups)
    assert slopes == {0.2}
    # per-sample normalisation: a sample's score does not depend on the other samples of the batch
    torch.manual_seed(0)
    x = torch.rand(2, 1, 32, 32)
    both = critic(x)
    alone = critic(x[:1])
    torch.testing.assert_close(both[:1], alone)


def test_kernel4_discriminator_matches_monai_default_geometry():
    with META:
        critic = build_discriminator(DiscriminatorConfig(channels=8, num_layers=3, kernel_size=4))
        out = critic(torch.empty(1, 1, 64, 64))
    assert out.shape == (1, 1, 6, 6)


# ------------------------------------------------------------------------------------- invalid arguments

@pytest.mark.parametrize("kwargs,match", [
    ({"n_input_slices": 2}, "odd"),
    ({"n_input_slices": 0}, "positive"),
    ({"num_groups": 48}, "num_groups"),
    ({"ca_stages": (5,)}, "stage numbers 1..4"),
    ({"ca_stages": (0,)}, "stage numbers"),
    ({"channel_mult": ()}, "channel_mult"),
    ({"dropout": 1.5}, "dropout"),
    ({"num_heads": 3}, "num_heads"),
])
def test_unet_config_rejects_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        UNetConfig(**kwargs)


@pytest.mark.parametrize("build,match", [
    (lambda: WATNetConfig(n_input_slices=4), "odd"),
    (lambda: WATNetConfig(spatial_dims=3, n_input_slices=3), "n_input_slices=1"),
    (lambda: WATNetConfig(spatial_dims=1), "spatial_dims"),
    (lambda: WATNetConfig(features=30), "divisible by 4"),
    (lambda: VNetConfig(up_convs=(1, 1)), "same length"),
    (lambda: VNetConfig(kernel_size=4), "odd"),
    (lambda: VNetConfig(patch_size=40), "divisible"),
    (lambda: DiscriminatorConfig(norm="batch"), "gradient penalty"),
    (lambda: DiscriminatorConfig(norm="weird"), "norm must be one of"),
    (lambda: DiscriminatorConfig(kernel_size=5), "kernel_size"),
])
def test_other_configs_reject_bad_values(build, match):
    with pytest.raises(ValueError, match=match):
        build()


def test_crop_not_divisible_is_a_clear_error():
    model = build_model("demo-cpu")  # 2 downsamplings: multiples of 4
    with pytest.raises(ValueError, match=r"66x64 is not divisible by 2\^2=4.*multiples of 4, e\.g\. 68x64"):
        model(torch.rand(1, 3, 66, 64), context(1))
    ctx = context(1).to(META)
    with META:
        paper = build_model("paper-unet")  # 3 downsamplings: multiples of 8
        with pytest.raises(ValueError, match=r"290x224 .*multiples of 8"):
            paper(torch.empty(1, 3, 290, 224), ctx)
    with pytest.raises(ValueError, match="divisible"):
        build_model("vnet-demo")(torch.rand(1, 1, 20, 16, 16))
    with pytest.raises(ValueError, match="divisible"):
        build_discriminator("demo-cpu")(torch.rand(1, 1, 36, 32))


def test_wrong_input_channels_and_missing_context_are_clear_errors():
    model = build_model("demo-cpu")
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        model(torch.rand(1, 5, 32, 32), context(1))
    with pytest.raises(ValueError, match="make_context"):
        model(torch.rand(1, 3, 32, 32))
    with pytest.raises(ValueError, match=r"\(B, 4\)"):
        model(torch.rand(1, 3, 32, 32), torch.zeros(1, 3))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        build_model("watnet-2d-demo")(torch.rand(1, 1, 32, 32))


def test_unknown_presets_and_keys():
    with pytest.raises(ValueError, match="unknown model preset 'paper-unet-xl'.*paper-unet"):
        get_model_config("paper-unet-xl")
    with pytest.raises(ValueError, match="unknown model preset"):
        build_model("nope")
    with pytest.raises(ValueError, match="unknown discriminator preset"):
        get_discriminator_config("paper-unet")
    data = get_model_config("paper-unet").to_dict()
    data["chanels"] = 128
    with pytest.raises(ValueError, match=r"unknown UNetConfig key\(s\) \['chanels'\]"):
        config_from_dict(data)
    with pytest.raises(ValueError, match="unknown model config kind"):
        config_from_dict({"kind": "resnet"})
    with pytest.raises(ValueError, match="'kind'"):
        config_from_dict({"channels": 3})
    with pytest.raises(ValueError, match="unknown UNetConfig key"):
        get_model_config("demo-cpu").replace(groups=4)
    with pytest.raises(ValueError, match="cannot be read as UNetConfig"):
        UNetConfig.from_dict(VNetConfig().to_dict())


@pytest.mark.parametrize("name", list(MODEL_PRESETS))
def test_generator_configs_round_trip_through_json(name):
    cfg = get_model_config(name)
    back = config_from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert back == cfg and type(back) is type(cfg)


@pytest.mark.parametrize("name", list(DISCRIMINATOR_PRESETS))
def test_discriminator_configs_round_trip_through_json(name):
    cfg = get_discriminator_config(name)
    assert config_from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_build_model_from_a_checkpoint_dict_reloads_the_weights():
    torch.manual_seed(0)
    model = build_model("demo-cpu")
    clone = build_model(json.loads(json.dumps(model.config.to_dict())))
    clone.load_state_dict(model.state_dict(), strict=True)
    x, c = torch.rand(1, 3, 32, 32), context(1)
    torch.testing.assert_close(clone(x, c), model(x, c))


def test_paper_presets_follow_table_a2():
    unet, gan = get_model_config("paper-unet"), get_model_config("paper-gan")
    for cfg in (unet, gan):
        assert (cfg.channels, cfg.channel_mult, cfg.num_groups, cfg.num_res_blocks, cfg.n_input_slices,
                cfg.dropout) == (256, (1, 2, 2, 2), 64, 3, 3, 0.0)
    assert unet.ca_stages == (3, 4) and gan.ca_stages == (4,)
    assert get_model_config("paper-unet-nodiag").use_diagnosis is False
    assert get_model_config("paper-gan-nodiag").ca_stages == (4,)
    critic = get_discriminator_config("paper-gan")
    assert (critic.channels, critic.num_layers, critic.negative_slope) == (256, 5, 0.2)
    assert UNetConfig.bottleneck_res_blocks == 2


def test_unet_has_no_final_normalisation_and_adadm_everywhere():
    model = build_model("demo-cpu")
    assert isinstance(model, ConditionalUNet)
    res_blocks = [m for m in model.modules() if isinstance(m, ResBlock)]
    assert res_blocks and all(isinstance(b.adadm, AdaDM) for b in res_blocks)
    # record the order in which leaf modules run: nothing normalises after the last residual branch
    calls = []
    hooks = [m.register_forward_hook(lambda mod, i, o: calls.append(mod))
             for m in model.modules() if not list(m.children())]
    model(torch.rand(1, 3, 16, 16), context(1))
    for h in hooks:
        h.remove()
    last_branch = model.decoder[-1][-1].res.conv2
    tail = calls[len(calls) - 1 - calls[::-1].index(last_branch):]
    assert tail[-1] is model.output_conv
    assert not any(isinstance(m, (torch.nn.GroupNorm, torch.nn.LayerNorm)) for m in tail)
    n_cross = sum(1 for m in model.modules() if isinstance(m, AttentionBlock))
    # stage 3 of demo-cpu: 1 encoder + 2 decoder blocks, plus the bottleneck block
    assert n_cross == 4


# ------------------------------------------------------------------------------------------ conditioning

def test_make_context_layout_broadcast_and_errors():
    c = make_context(age=[60, 75.5], sex=["F", "male"], impaired=[True, 0], slice_location=0.25)
    torch.testing.assert_close(c, torch.tensor([[60.0, 0.0, 1.0, 0.25], [75.5, 1.0, 0.0, 0.25]]))
    assert make_context(70, 1, None, -1.0)[0, 2].isnan()
    assert make_context(np.array([61.0, 62.0]), 0, 1, np.array([0.1, 0.2])).shape == (2, 4)
    with pytest.raises(ValueError, match="sex"):
        make_context(70, "X", 0, 0.0)
    with pytest.raises(ValueError, match="impaired"):
        make_context(70, 1, 2, 0.0)
    with pytest.raises(ValueError, match="batch has 3"):
        make_context([60, 70, 80], [0, 1], 0, 0.0)


def test_slice_location_formula():
    assert slice_location(50, bottom=0, top=100) == 0.0
    assert slice_location(100, bottom=0, top=100) == 1.0
    assert slice_location(0, 0, 100) == -1.0
    with pytest.raises(ValueError, match="top != bottom"):
        slice_location(3, 5, 5)


@pytest.mark.parametrize("kind, convert", [
    ("float", float),
    ("int", int),
    ("numpy", lambda v: np.array([v])),
    ("list", lambda v: [v]),
    ("tensor", lambda v: torch.tensor([v])),
])
def test_slice_location_bottom_is_minus_one_top_is_plus_one(kind, convert):
    bottom, top = 10, 90
    lo, mid, hi = (slice_location(convert(v), bottom=bottom, top=top) for v in (bottom, 50, top))
    if kind == "tensor":
        assert isinstance(lo, torch.Tensor) and lo.is_floating_point()
    elif kind in ("numpy", "list"):
        assert isinstance(lo, np.ndarray) and lo.dtype == np.float64 and lo.shape == (1,)
    else:
        assert isinstance(lo, float)
    assert [float(np.asarray(v).reshape(-1)[0]) for v in (lo, mid, hi)] == [-1.0, 0.0, 1.0]


def _outputs_under_changes(name: str):
    torch.manual_seed(0)
    model = build_model(name).eval()
    x = torch.rand(2, 3, 32, 32)
    base = make_context([60, 80], [0, 1], [0, 1], [-0.3, 0.4])
    out = {}
    with torch.no_grad():
        out["base"] = model(x, base)
        for col, delta in (("age", 0), ("loc", 3)):
            c = base.clone()
            c[:, delta] += 10.0 if col == "age" else 0.5
            out[col] = model(x, c)
        c = base.clone()
        c[:, 2] = 1.0 - c[:, 2]
        out["diag"] = model(x, c)
        c[:, 2] = float("nan")
        out["diag_nan"] = model(x, c) if not get_model_config(name).use_diagnosis else None
    return out


def test_age_slice_location_and_diagnosis_change_the_output():
    out = _outputs_under_changes("demo-cpu")
    for key in ("age", "loc", "diag"):
        assert (out[key] - out["base"]).abs().max() > 1e-5, key


def test_nodiag_model_ignores_the_diagnosis():
    out = _outputs_under_changes("demo-cpu-nodiag")
    assert (out["age"] - out["base"]).abs().max() > 1e-5
    assert torch.equal(out["diag"], out["base"])
    assert torch.equal(out["diag_nan"], out["base"])
    model = build_model("demo-cpu-nodiag")
    assert model.context_encoder.n_tokens == 3 and 2 not in model.context_encoder.columns


def test_nodiag_paper_model_has_no_diagnosis_token():
    with META:
        model = build_model("paper-gan-nodiag")
    assert model.context_encoder.n_tokens == 3


def test_plane_conditioned_unet_reads_a_fifth_context_column():
    torch.manual_seed(0)
    cfg = get_model_config("demo-cpu-nodiag").replace(plane_condition=True)
    model = build_model(cfg).eval()
    assert model.context_encoder.n_tokens == 4 and model.context_encoder.n_columns == 5
    x = torch.rand(3, 3, 32, 32)
    c = make_context(70, 1, None, 0.1, plane=["axial", "c", 2])
    torch.testing.assert_close(c[:, 4], torch.tensor([0.0, 1.0, 2.0]))
    with torch.no_grad():
        out = model(x, c)
        # the plane changes the output; a (B, 4) context takes the plane set on the model
        assert (out[0] - model(x[:1], make_context(70, 1, None, 0.1, plane="sagittal"))[0]).abs().max() > 1e-5
        with model.using_plane("coronal"):
            torch.testing.assert_close(model(x[1:2], c[1:2, :4]), out[1:2])
    assert model._plane is None  # restored after the block
    with pytest.raises(ValueError, match="conditioned on the slicing plane"):
        model(x, c[:, :4])
    with pytest.raises(ValueError, match="plane codes 0"):
        model(x, torch.cat([c[:, :4], torch.full((3, 1), 1.5)], 1))
    with pytest.raises(ValueError, match="unknown plane 'oblique'"):
        make_context(70, 1, 0, 0.1, plane="oblique")
    with pytest.raises(ValueError, match=r"\(B, 4\)"):
        build_model("demo-cpu-nodiag")(x, c)  # a paper model gets 4 columns


def test_a_config_saved_before_plane_condition_reads_back_as_an_axial_model():
    old = {k: v for k, v in get_model_config("demo-cpu").to_dict().items() if k != "plane_condition"}
    cfg = config_from_dict(old)
    assert cfg.plane_condition is False
    torch.manual_seed(0)
    weights = build_model(cfg).state_dict()
    assert not any("plane" in k for k in weights)  # its weights load into a model built today
    build_model(config_from_dict(json.loads(json.dumps(old)))).load_state_dict(weights)
    with pytest.raises(ValueError, match="plane_condition must be True or False"):
        UNetConfig(plane_condition="yes")
    with pytest.raises(ValueError, match="plane_condition needs a U-Net that reads its context"):
        build_model(UNetConfig(channels=8, channel_mult=(1, 2), num_groups=4, num_res_blocks=1, ca_stages=(),
                               bottleneck_attention=False, plane_condition=True))


# ----------------------------------------------------------------------------------------- AdaDM, PE

def test_adadm_matches_its_formula_by_hand():
    torch.manual_seed(0)
    ada = AdaDM()
    x = torch.randn(2, 3, 5, 5) * torch.tensor([0.5, 3.0]).view(2, 1, 1, 1)
    h = torch.randn(2, 4, 5, 5)
    # at initialisation (w=1, b=0) the branch is multiplied by the population std of the block input
    sigma = np.sqrt(x.reshape(2, -1).numpy().var(axis=1) + 1e-6)
    expected = h * torch.from_numpy(sigma).float().view(2, 1, 1, 1)
    torch.testing.assert_close(ada(h, x), expected)
    with torch.no_grad():
        ada.weight.fill_(0.5)
        ada.bias.fill_(0.3)
    expected = h * torch.from_numpy(np.exp(0.5 * np.log(sigma) + 0.3)).float().view(2, 1, 1, 1)
    torch.testing.assert_close(ada(h, x), expected)
    # a blank input keeps everything finite
    assert torch.isfinite(ada(h, torch.zeros_like(x))).all()


def test_resblock_branch_is_rescaled_by_input_std():
    torch.manual_seed(0)
    with_ada = ResBlock(8, 8, groups=4, use_adadm=True)
    without = ResBlock(8, 8, groups=4, use_adadm=False)
    without.load_state_dict({k: v for k, v in with_ada.state_dict().items() if not k.startswith("adadm")})
    x = torch.randn(2, 8, 6, 6) * 4.0
    sigma = x.reshape(2, -1).var(dim=1, unbiased=False).add(1e-6).sqrt().view(2, 1, 1, 1)
    torch.testing.assert_close(with_ada(x) - x, (without(x) - x) * sigma)


def test_positional_encoding_formula():
    pe = sinusoidal_positional_encoding(10, 6)
    assert pe.shape == (10, 6)
    for pos in (0, 3, 9):
        for i in range(3):
            angle = pos / 10000 ** (2 * i / 6)
            assert pe[pos, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-6)
            assert pe[pos, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-6)
    assert sinusoidal_positional_encoding(4, 5).shape == (4, 5)  # odd width: last column is a sine


def test_attention_block_reads_the_context_only_when_cross():
    torch.manual_seed(0)
    block = AttentionBlock(8, 2, context_dim=4, self_attention=False, cross_attention=True).eval()
    x = torch.randn(1, 8, 4, 4)
    a = block(x, torch.randn(1, 3, 4))
    b = block(x, torch.randn(1, 3, 4))
    assert (a - b).abs().max() > 1e-6
    with pytest.raises(ValueError, match="context"):
        block(x)
    selfonly = AttentionBlock(8, 2, self_attention=True, cross_attention=False)
    assert not selfonly.uses_context and selfonly(x).shape == x.shape


# ----------------------------------------------------------------------------------------- wavelets

@pytest.mark.parametrize("dims", [2, 3])
def test_haar_transform_is_orthonormal_and_pyramid_sizes(dims):
    torch.manual_seed(0)
    filters = _haar_filters(dims)
    x = torch.randn((2, 3) + (8,) * dims)
    bands = haar_dwt(x, filters)
    assert bands.shape == (2, 3 * 2 ** dims) + (4,) * dims
    torch.testing.assert_close(bands.pow(2).sum(), x.pow(2).sum())  # energy preserved
    const = torch.ones((1, 1) + (4,) * dims)
    detail = haar_dwt(const, filters)[:, 1:]
    assert detail.abs().max() < 1e-6  # a constant image has no detail
    pyr = haar_pyramid(x, 3, filters)
    assert [p.shape[1] for p in pyr] == [3 * (2 ** dims - 1)] * 2 + [3 * 2 ** dims]
    assert [p.shape[2] for p in pyr] == [4, 2, 1]


# ------------------------------------------------------------------------------------------ training

@pytest.mark.parametrize("name,steps", [
    ("demo-cpu", 12), ("demo-cpu-gan", 12), ("watnet-2d-demo", 15), ("vnet-demo", 10), ("watnet-3d-demo", 8),
])
def test_a_few_adam_steps_lower_the_loss(name, steps):
    torch.manual_seed(0)
    model = build_model(name)
    cfg = model.config
    if isinstance(cfg, VNetConfig) or getattr(cfg, "spatial_dims", 2) == 3:
        target = smooth_image((16, 16, 16)).view(1, 1, 16, 16, 16)
        x = blur(target)
    else:
        slices = torch.stack([smooth_image((32, 32), seed=s) for s in range(3)]).unsqueeze(0)
        x, target = blur(slices), slices[:, 1:2]
    ctx = make_context(65.0, 1, 0, 0.1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = F.l1_loss(model(x, ctx), target)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < 0.97 * losses[0], losses


# ------------------------------------------------------------------------------------------- facts

def test_model_facts_for_every_preset_on_meta():
    table = facts_table()
    assert list(table["preset"]) == default_fact_presets()
    assert (table["params"] > 0).all() and (table["gflops"] > 0).all()
    row = table.set_index("preset").loc["paper-unet"]
    # DESIGN.md yardstick: about 260 M parameters and 4.4 TFLOP per 3x288x224 slice
    assert 200e6 < row["params"] < 300e6
    assert 4000 < row["gflops"] < 5000
    f = model_facts("vnet")
    assert f["input_shape"] == (1, 1, 64, 64, 64) and f["gflops_per_patch"] > 0
    f = model_facts("demo-cpu", height=64, width=64)
    assert f["input_shape"] == (1, 3, 64, 64) and f["gflops_per_slice"] > 0
    with pytest.raises(ValueError, match="unknown model preset"):
        model_facts("nope")


def test_model_facts_cli(capsys):
    from synth7t.cli import main

    assert main(["model-facts", "--preset", "demo-cpu"]) == 0
    out = capsys.readouterr().out
    assert "demo-cpu" in out and "gflops" in out
    assert main(["model-facts", "--preset", "discriminator:demo-cpu", "--height", "64", "--width", "64"]) == 0
    assert main(["model-facts", "--preset", "nope"]) == 1
    assert "unknown model preset" in capsys.readouterr().err


@pytest.mark.parametrize("config, shape", [
    (get_model_config("demo-cpu-nodiag").replace(global_residual=True), (2, 3, 32, 24)),
    (get_model_config("vnet-demo").replace(global_residual=True), (1, 1, 32, 32, 32)),
])
def test_a_global_residual_network_starts_at_the_identity_and_learns_a_difference(config, shape):
    """With ``global_residual`` an untrained network returns its (centre) input exactly, whatever its weights
    elsewhere; after a step its output differs; without the option the same network is far from the identity."""
    torch.manual_seed(0)
    net = build_model(config)
    x = torch.rand(shape)
    ctx = make_context([70.0] * shape[0], ["F"] * shape[0], None, [0.0] * shape[0])
    centre = x[:, shape[1] // 2:shape[1] // 2 + 1]
    assert torch.equal(net(x, ctx), centre)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    F.l1_loss(net(x, ctx), centre * 0.5).backward()
    opt.step()
    assert not torch.equal(net(x, ctx), centre)  # the residual branch learns (its output convolution moved)
    torch.manual_seed(0)
    plain = build_model(config.replace(global_residual=False))
    assert (plain(x, ctx) - centre).abs().mean() > 0.05


def test_global_residual_configs_check_and_round_trip():
    cfg = get_model_config("demo-cpu").replace(global_residual=True)
    assert config_from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    old = {k: v for k, v in get_model_config("demo-cpu").to_dict().items() if k != "global_residual"}
    assert config_from_dict(old).global_residual is False  # saved before the option: the paper's output
    with pytest.raises(ValueError, match="out_channels=1"):
        UNetConfig(out_channels=2, global_residual=True)
    with pytest.raises(ValueError, match="in_channels=1"):
        VNetConfig(in_channels=2, global_residual=True)
    with pytest.raises(ValueError, match="True or False"):
        UNetConfig(global_residual="yes")
