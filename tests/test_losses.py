"""Tests of synth7t.training.losses and the perceptual backbones of synth7t.models.backbones."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from synth7t.training.losses import (GeneratorLoss, LPIPSLoss, PerceptualLoss, build_perceptual_loss,
    calibrate_perceptual_weight, critic_loss, generator_adversarial_loss, gradient_penalty, l1_loss)
from synth7t.training import config as tconf
from synth7t.training.losses import ADVERSARIAL_OBJECTIVES, PERCEPTUAL_NETWORKS
from synth7t.models import DiscriminatorConfig, UNetConfig, build_discriminator, build_model, make_context
from synth7t.models.backbones import (EfficientNetLite0Features, ResNet50Features, efficientnet_lite0_weights_path,
    load_efficientnet_lite0, load_radimagenet_resnet50, load_state_dict_file)


@pytest.fixture(scope="module")
def lite0() -> EfficientNetLite0Features:
    return load_efficientnet_lite0()


@pytest.fixture(scope="module")
def perceptual(lite0) -> PerceptualLoss:
    return PerceptualLoss(lite0, ("stage2", "stage3", "stage4", "stage6"))


def slice_pair(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 64), torch.linspace(-1, 1, 64), indexing="ij")
    sharp = (0.5 + 0.25 * torch.sin(6 * xx + 3 * yy) + 0.2 * (xx ** 2 + yy ** 2 < 0.4).float()).view(1, 1, 64, 64)
    noisy = sharp + 0.02 * torch.randn(sharp.shape, generator=g)
    return sharp, F.avg_pool2d(noisy, 5, stride=1, padding=2, count_include_pad=False)


# --------------------------------------------------------------------------------------------- L1, GAN

def test_l1_is_the_mean_absolute_difference():
    a, b = torch.tensor([[0.0, 1.0], [2.0, 3.0]]), torch.tensor([[1.0, 1.0], [0.0, 3.5]])
    assert l1_loss(a, b).item() == pytest.approx((1 + 0 + 2 + 0.5) / 4)
    with pytest.raises(ValueError, match="same shape"):
        l1_loss(a, b[:1])


@pytest.mark.parametrize("scale", [0.3, 1.0, 2.5])
def test_gradient_penalty_on_a_linear_critic_equals_its_analytic_value(scale):
    torch.manual_seed(0)
    w = torch.randn(1, 2, 4, 4)
    w = w / w.norm() * scale

    def critic(x):  # D(x) = <w, x>: the gradient is w everywhere
        return (x * w).flatten(1).sum(1)

    real, fake = torch.rand(5, 2, 4, 4), torch.rand(5, 2, 4, 4)
    gp = gradient_penalty(critic, real, fake, lambda_gp=10.0, generator=torch.Generator().manual_seed(1))
    assert gp.item() == pytest.approx(10.0 * (scale - 1.0) ** 2, rel=1e-5, abs=1e-6)


def test_gradient_penalty_takes_given_interpolation_weights():
    """The trainer draws a global batch's weights once and hands each process its rows: the same penalty as drawing
    them inside with a generator."""
    torch.manual_seed(0)
    critic = build_discriminator("demo-cpu")
    real, fake = torch.rand(3, 1, 32, 32), torch.rand(3, 1, 32, 32)
    drawn = gradient_penalty(critic, real, fake, generator=torch.Generator().manual_seed(4))
    given = gradient_penalty(critic, real, fake, alpha=torch.rand(3, generator=torch.Generator().manual_seed(4)))
    assert given.item() == pytest.approx(drawn.item(), rel=1e-6)
    assert gradient_penalty(critic, real, fake, alpha=torch.zeros(3)).item() != pytest.approx(given.item())


@pytest.mark.parametrize("objective,keys", [("bce", {"d_real", "d_fake", "bce"}), ("wasserstein", {"wasserstein"})])
def test_critic_loss_trains_the_critic_only(objective, keys):
    torch.manual_seed(0)
    critic = build_discriminator("demo-cpu")
    real = torch.rand(2, 1, 32, 32)
    fake = torch.rand(2, 1, 32, 32, requires_grad=True)
    total, parts = critic_loss(critic, real, fake, objective=objective)
    total.backward()
    assert all(p.grad is not None for p in critic.parameters() if p.requires_grad)
    assert fake.grad is None
    assert set(parts) == keys | {"gradient_penalty", "total"} and parts["gradient_penalty"] >= 0


class PatchMeanCritic(torch.nn.Module):
    """A stub critic with known outputs: ``D(x) = scale * (mean of x over each 4x4 patch) + offset``.

    On (B, 1, 8, 8) images it returns a (B, 1, 2, 2) patch map; the gradient of the sum of a sample's scores
    is ``scale / 16`` at each of its 64 pixels, so ``||grad|| = scale / 2`` and the penalty is
    ``lambda_gp * (scale / 2 - 1) ** 2`` whatever the interpolation weights.
    """

    def __init__(self, scale: float, offset: float) -> None:
        super().__init__()
        self.scale, self.offset = scale, offset

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * F.avg_pool2d(x, 4) + self.offset


def test_bce_on_zero_logits_is_log_two_per_term_plus_the_penalty():
    critic = PatchMeanCritic(scale=0.0, offset=0.0)  # logits 0 everywhere, zero gradient: penalty = lambda_gp
    real, fake = torch.rand(3, 1, 8, 8), torch.rand(3, 1, 8, 8)
    total, parts = critic_loss(critic, real, fake, lambda_gp=10.0)  # "bce" is the default
    assert parts["bce"].item() == pytest.approx(2 * math.log(2), rel=1e-6)
    assert parts["gradient_penalty"].item() == pytest.approx(10.0, rel=1e-6)
    assert total.item() == pytest.approx(2 * math.log(2) + 10.0, rel=1e-6)
    assert parts["d_real"].item() == pytest.approx(0.5) and parts["d_fake"].item() == pytest.approx(0.5)
    assert generator_adversarial_loss(critic, fake).item() == pytest.approx(math.log(2), rel=1e-6)


def test_critic_and_generator_terms_equal_their_values_by_hand():
    # real = 0.8, fake = 0.2, D = 3 * patch mean - 1: logits 1.4 on every real patch, -0.4 on every fake patch;
    # ||grad D|| = 1.5, so the penalty is 10 * 0.5^2 = 2.5
    critic = PatchMeanCritic(scale=3.0, offset=-1.0)
    real, fake = torch.full((4, 1, 8, 8), 0.8), torch.full((4, 1, 8, 8), 0.2)
    gp = 10.0 * (1.5 - 1.0) ** 2

    def softplus(v: float) -> float:
        return math.log1p(math.exp(v))

    def sigmoid(v: float) -> float:
        return 1.0 / (1.0 + math.exp(-v))

    total, parts = critic_loss(critic, real, fake, lambda_gp=10.0, objective="bce")
    bce = softplus(-1.4) + softplus(-0.4)  # -log sigma(1.4) - log(1 - sigma(-0.4))
    assert parts["bce"].item() == pytest.approx(bce, rel=1e-6)
    assert parts["gradient_penalty"].item() == pytest.approx(gp, rel=1e-5)
    assert total.item() == pytest.approx(bce + gp, rel=1e-5)
    assert parts["d_real"].item() == pytest.approx(sigmoid(1.4), rel=1e-6)
    assert parts["d_fake"].item() == pytest.approx(sigmoid(-0.4), rel=1e-6)
    assert generator_adversarial_loss(critic, fake, "bce").item() == pytest.approx(softplus(0.4), rel=1e-6)

    total, parts = critic_loss(critic, real, fake, lambda_gp=10.0, objective="wasserstein")
    assert total.item() == pytest.approx(-0.4 - 1.4 + gp, rel=1e-5)
    assert parts["wasserstein"].item() == pytest.approx(1.8, rel=1e-6)
    assert generator_adversarial_loss(critic, fake, "wasserstein").item() == pytest.approx(0.4, rel=1e-6)
    # without the penalty only the adversarial terms remain
    total, _ = critic_loss(critic, real, fake, lambda_gp=0.0, objective="bce")
    assert total.item() == pytest.approx(bce, rel=1e-6)


@pytest.mark.parametrize("objective", ["bce", "wasserstein"])
def test_the_generator_term_pushes_the_critic_score_of_fakes_up(objective):
    critic = PatchMeanCritic(scale=3.0, offset=-1.0)
    fake = torch.rand(2, 1, 8, 8, requires_grad=True)
    generator_adversarial_loss(critic, fake, objective).backward()
    assert (fake.grad < 0).all()  # descending the loss raises every pixel, hence every patch score
    with torch.no_grad():
        before, after = critic(fake).mean(), critic(fake - 0.5 * fake.grad).mean()
    assert after > before


def test_bce_generator_term_is_the_non_saturating_form():
    # gradient with respect to the logits: (sigma(l) - 1) / N, not -sigma(l) / N (the minimax log(1 - D) form)
    logits = torch.tensor([-12.0, -2.0, 0.0, 3.0]).view(1, 1, 2, 2).requires_grad_(True)
    generator_adversarial_loss(lambda x: x, logits, "bce").backward()
    torch.testing.assert_close(logits.grad, (torch.sigmoid(logits.detach()) - 1.0) / 4)
    assert logits.grad[0, 0, 0, 0].abs() > 0.24  # a confidently rejected fake still gets a gradient


def test_unknown_adversarial_objective_names_the_options():
    critic = PatchMeanCritic(1.0, 0.0)
    x = torch.rand(1, 1, 8, 8)
    with pytest.raises(ValueError, match=r"'hinge'.*'bce', 'wasserstein'"):
        critic_loss(critic, x, x, objective="hinge")
    with pytest.raises(ValueError, match="'bce', 'wasserstein'"):
        generator_adversarial_loss(critic, x, "lsgan")
    with pytest.raises(ValueError, match="'bce', 'wasserstein'"):
        GeneratorLoss(None, lambda_perc=0.0, lambda_gan=0.1, adversarial="wgan")


def test_generator_loss_combines_its_parts(perceptual):
    torch.manual_seed(0)
    target, pred = slice_pair()
    pred = pred.clone().requires_grad_(True)
    critic = build_discriminator("demo-cpu")
    loss = GeneratorLoss(perceptual, lambda_perc=0.05, lambda_gan=0.1)
    assert loss.adversarial == "bce"
    total, parts = loss(pred, target, critic=critic)
    expected = parts["l1"] + 0.05 * parts["perceptual"] + 0.1 * parts["gan"]
    assert total.item() == pytest.approx(expected.item(), rel=1e-6)
    with torch.no_grad():
        logits = critic(pred)
    assert parts["gan"].item() == pytest.approx(F.softplus(-logits).mean().item(), rel=1e-5)
    assert parts["perceptual"] > 0 and parts["gan"] != 0
    total.backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0
    # the Wasserstein option
    _, w_parts = GeneratorLoss(None, lambda_perc=0.0, lambda_gan=0.1, adversarial="wasserstein")(
        pred, target, critic=critic)
    assert w_parts["gan"].item() == pytest.approx(-logits.mean().item(), rel=1e-5)
    # warm-up override and the U-Net configuration (no GAN term)
    t_warm, p_warm = loss(pred, target, critic=critic, lambda_gan=0.01)
    expected_warm = p_warm["l1"] + 0.05 * p_warm["perceptual"] + 0.01 * p_warm["gan"]
    assert t_warm.item() == pytest.approx(expected_warm.item(), rel=1e-6)
    unet_total, unet_parts = GeneratorLoss(None, lambda_perc=0.0)(pred, target)
    assert unet_parts["gan"] == 0 and unet_total.item() == pytest.approx(unet_parts["l1"].item())
    with pytest.raises(ValueError, match="critic"):
        loss(pred, target)
    with pytest.raises(ValueError, match="perceptual loss module"):
        GeneratorLoss(None, lambda_perc=0.05)


def _toy_pairs(n: int, seed: int):
    """A tiny synthetic 3T->7T problem: 3 smooth neighbouring "slices" (n, 3, 16, 16) -> the centre slice with
    a contrast change, ``y = x_centre ** 2`` (n, 1, 16, 16); context (n, 4) of one fixed subject."""
    g = torch.Generator().manual_seed(seed)
    x = F.interpolate(torch.rand(n, 3, 8, 8, generator=g), size=(16, 16), mode="bilinear", align_corners=False)
    return x, x[:, 1:2] ** 2, make_context(70.0, 0, 0, 0.0).expand(n, 4)


def test_a_short_gan_run_stays_finite_and_lowers_validation_l1():
    """The trainer's step order (critic step, then generator step) with the default "bce" objective."""
    torch.manual_seed(0)
    gen = build_model(UNetConfig(channels=8, channel_mult=(1, 2), num_groups=4, num_res_blocks=1, ca_stages=(),
                                 bottleneck_attention=False, context_dim=8))
    critic = build_discriminator(DiscriminatorConfig(channels=8, num_layers=3))
    x_train, y_train, c_train = _toy_pairs(64, seed=0)
    x_val, y_val, c_val = _toy_pairs(16, seed=1)
    opt_g = torch.optim.Adam(gen.parameters(), lr=3e-3)
    opt_d = torch.optim.Adam(critic.parameters(), lr=2e-4, betas=(0.0, 0.9))
    loss = GeneratorLoss(None, lambda_perc=0.0, lambda_gan=0.1)

    def val_l1() -> float:
        gen.eval()
        with torch.no_grad():
            value = l1_loss(gen(x_val, c_val), y_val).item()
        gen.train()
        return value

    before = val_l1()
    order = torch.randperm(64, generator=torch.Generator().manual_seed(2))
    for step in range(16):
        ids = order[(step % 8) * 8:(step % 8 + 1) * 8]
        x, y, c = x_train[ids], y_train[ids], c_train[ids]
        with torch.no_grad():
            fake = gen(x, c)
        d_total, d_parts = critic_loss(critic, y, fake, lambda_gp=10.0)
        opt_d.zero_grad(set_to_none=True)
        d_total.backward()
        opt_d.step()
        g_total, g_parts = loss(gen(x, c), y, critic=critic)
        opt_g.zero_grad(set_to_none=True)
        g_total.backward()
        opt_g.step()
        values = torch.stack([*d_parts.values(), *g_parts.values()])
        assert torch.isfinite(values).all(), (step, d_parts, g_parts)
        assert 0 < d_parts["d_real"] < 1 and 0 < d_parts["d_fake"] < 1 and g_parts["gan"] > 0
    after = val_l1()
    assert math.isfinite(after) and after < 0.6 * before, (before, after)


# ---------------------------------------------------------------------------------------- perceptual

def test_perceptual_loss_is_zero_on_identical_and_positive_on_different_images(perceptual):
    target, blurred = slice_pair()
    assert perceptual(target, target).item() == pytest.approx(0.0, abs=1e-12)
    d_blur = perceptual(blurred, target).item()
    d_flip = perceptual(target.flip(-1), target).item()
    assert d_blur > 0 and d_flip > 0
    pred = blurred.clone().requires_grad_(True)
    perceptual(pred, target).backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0


def test_perceptual_formula_is_mean_over_layers_of_mean_squared_difference(lite0):
    target, blurred = slice_pair()
    loss = PerceptualLoss(lite0, ("stage1", "stage3"))
    fa = lite0(lite0.prepare(blurred), ("stage1", "stage3"))
    fb = lite0(lite0.prepare(target), ("stage1", "stage3"))
    expected = 0.5 * sum(((fa[k] - fb[k]) ** 2).mean() for k in ("stage1", "stage3"))
    assert loss(blurred, target).item() == pytest.approx(expected.item(), rel=1e-5)
    normalized = PerceptualLoss(lite0, ("stage1", "stage3"), channel_normalize=True)
    assert normalized(target, target).item() == pytest.approx(0.0, abs=1e-12)
    assert normalized(blurred, target).item() > 0


def test_perceptual_loss_accepts_3d_patches(perceptual):
    vol = torch.rand(1, 1, 4, 32, 32)
    assert perceptual(vol, vol).item() == pytest.approx(0.0, abs=1e-12)
    assert perceptual(vol, vol.flip(-1)).item() > 0


def test_backbone_stays_frozen_and_in_eval_mode(perceptual):
    perceptual.train()
    assert not perceptual.backbone.training
    assert not any(p.requires_grad for p in perceptual.backbone.parameters())


def test_grey_input_mapping(lite0):
    x = torch.tensor([0.0, 0.5, 1.0]).view(1, 1, 1, 3)
    y = lite0.prepare(x)
    assert y.shape == (1, 3, 1, 3)
    torch.testing.assert_close(y[0, :, 0, 0], torch.full((3,), -127 / 128))
    torch.testing.assert_close(y[0, :, 0, 2], torch.full((3,), 1.0))
    with pytest.raises(ValueError, match="grey"):
        lite0.prepare(torch.rand(1, 2, 4, 4))


# ----------------------------------------------------------------------------- are the weights real?

def test_shipped_efficientnet_weights_load_strictly_with_safe_loading(lite0):
    path = efficientnet_lite0_weights_path()
    state = torch.load(path, map_location="cpu", weights_only=True)  # raises if the file needed unpickling
    assert set(state) == set(lite0.state_dict())
    torch.testing.assert_close(state["_fc.bias"], lite0._fc.bias)


def _grace_hopper() -> torch.Tensor:
    import matplotlib
    from PIL import Image

    path = Path(matplotlib.__file__).parent / "mpl-data" / "sample_data" / "grace_hopper.jpg"
    if not path.is_file():
        pytest.skip("matplotlib's sample image grace_hopper.jpg is not installed")
    img = Image.open(path).convert("RGB").resize((224, 224), Image.BILINEAR)
    return torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).float().unsqueeze(0) / 255.0


def test_pretrained_efficientnet_recognises_a_real_photo(lite0):
    # Grace Hopper in US Navy uniform: ImageNet class 652 is "military uniform".
    x = _grace_hopper()
    with torch.no_grad():
        probs = lite0.logits(lite0.prepare(x)).softmax(dim=1)[0]
        assert int(probs.argmax()) == 652 and probs.max() > 0.2
        torch.manual_seed(0)
        random_net = EfficientNetLite0Features().eval()
        random_probs = random_net.logits(random_net.prepare(x)).softmax(dim=1)[0]
    assert random_probs.max() < 0.01  # an untrained network is close to uniform over 1000 classes


# ------------------------------------------------------------------------------------- RadImageNet

def test_radimagenet_without_weights_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="RadImageNet"):
        build_perceptual_loss("radimagenet_resnet50")
    with pytest.raises(FileNotFoundError, match=r"not found at .*RadImageNet authors"):
        build_perceptual_loss("radimagenet_resnet50", weights=tmp_path / "missing.safetensors")


@pytest.mark.parametrize("keras_layout,suffix,prefix", [(True, ".safetensors", ""), (False, ".pt", "module.")])
def test_resnet50_weights_load_from_local_files(tmp_path, keras_layout, suffix, prefix):
    """The loading path (format, key mapping, layout detection); the weights themselves are random here."""
    from safetensors.torch import save_file

    torch.manual_seed(0)
    source = ResNet50Features(keras_layout=keras_layout)
    state = {prefix + k: v.contiguous() for k, v in source.state_dict().items()}
    state[prefix + "fc.weight"] = torch.zeros(10, 2048)  # a classifier head is dropped
    path = tmp_path / f"resnet50{suffix}"
    if suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save({"state_dict": state}, path)
    loss = build_perceptual_loss("radimagenet_resnet50", weights=path)
    assert loss.backbone.keras_layout is keras_layout
    target, blurred = slice_pair()
    assert loss(target, target).item() == pytest.approx(0.0, abs=1e-12) and loss(blurred, target).item() > 0
    torch.testing.assert_close(loss.backbone.conv1.weight, source.conv1.weight)


def test_a_file_that_is_not_a_resnet50_is_rejected(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "other.safetensors"
    save_file({"conv1.weight": torch.zeros(3, 3)}, str(path))
    with pytest.raises(ValueError, match="do not match"):
        load_radimagenet_resnet50(path)
    bad = tmp_path / "weights.npz"
    bad.write_bytes(b"x")
    with pytest.raises(ValueError, match="extension"):
        load_state_dict_file(bad)


def _random_keras_resnet50_state(seed: int) -> dict:
    """Seeded random weights of the Keras-layout (RadImageNet) ResNet-50, with He-normal convolutions and
    random BatchNorm statistics so that the deep features still depend on the input."""
    g = torch.Generator().manual_seed(seed)
    net = ResNet50Features(keras_layout=True)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu", generator=g)
                module.bias.normal_(0.0, 0.05, generator=g)
            elif isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.0, generator=g)
                module.bias.normal_(0.0, 0.1, generator=g)
                module.running_mean.normal_(0.0, 0.1, generator=g)
                module.running_var.uniform_(0.5, 1.5, generator=g)
    return {k: v.clone().contiguous() for k, v in net.state_dict().items()}


class _HubRadImageNetReference(torch.nn.Module):
    """What ``torch.hub.load("Project-MONAI/perceptual-models", "radimagenet_resnet50")`` returns, written here
    functionally from the state dict's key names (independently of :class:`ResNet50Features`): the Keras
    ResNet-50 (stride in each block's first 1x1 convolution, convolutions with biases, BatchNorm eps 1.001e-5)
    whose forward returns the last feature map (layer4, B x 2048 x H/32 x W/32)."""

    def __init__(self, state: dict) -> None:
        super().__init__()
        self.state = {k: v.clone() for k, v in state.items()}

    def _conv_bn(self, x, conv: str, bn: str, stride: int = 1, padding: int = 0):
        s = self.state
        x = F.conv2d(x, s[f"{conv}.weight"], s[f"{conv}.bias"], stride=stride, padding=padding)
        return F.batch_norm(x, s[f"{bn}.running_mean"], s[f"{bn}.running_var"], s[f"{bn}.weight"], s[f"{bn}.bias"],
                            training=False, eps=1.001e-5)

    def forward(self, x):
        h = F.max_pool2d(F.relu(self._conv_bn(x, "conv1", "bn1", stride=2, padding=3)), 3, stride=2, padding=1)
        for layer, blocks, stride in (("layer1", 3, 1), ("layer2", 4, 2), ("layer3", 6, 2), ("layer4", 3, 2)):
            for b in range(blocks):
                p, st = f"{layer}.{b}.", (stride if b == 0 else 1)
                out = F.relu(self._conv_bn(h, p + "conv1", p + "bn1", stride=st))
                out = F.relu(self._conv_bn(out, p + "conv2", p + "bn2", padding=1))
                out = self._conv_bn(out, p + "conv3", p + "bn3")
                shortcut = self._conv_bn(h, p + "downsample.0", p + "downsample.1", stride=st) if b == 0 else h
                h = F.relu(out + shortcut)
        return h


def test_radimagenet_perceptual_loss_equals_monai_formula(tmp_path, monkeypatch):
    """build_perceptual_loss("radimagenet_resnet50") == MONAI's PerceptualLoss(network_type="radimagenet_resnet50")
    on the same (random) weights, MONAI's network coming from a patched torch.hub.load (nothing downloaded)."""
    from monai.losses import PerceptualLoss as MonaiPerceptualLoss
    from safetensors.torch import save_file

    state = _random_keras_resnet50_state(seed=0)
    path = tmp_path / "RadImageNet-ResNet50_notop.safetensors"
    save_file(state, str(path))
    ours = build_perceptual_loss("radimagenet_resnet50", weights=path)
    assert ours.layers == ("layer4",) and ours.channel_normalize and ours.channel_reduction == "sum"

    def fake_hub_load(repo, model, **kwargs):
        assert repo.startswith("Project-MONAI/perceptual-models") and model == "radimagenet_resnet50"
        return _HubRadImageNetReference(state)

    monkeypatch.setattr(torch.hub, "load", fake_hub_load)
    monai_loss = MonaiPerceptualLoss(spatial_dims=2, network_type="radimagenet_resnet50")

    g = torch.Generator().manual_seed(3)
    target, blurred = slice_pair()
    pairs = [(torch.rand(3, 1, 64, 64, generator=g), torch.rand(3, 1, 64, 64, generator=g)),  # grey, as in training
             (torch.rand(2, 3, 64, 96, generator=g), torch.rand(2, 3, 64, 96, generator=g)),  # 3 channels (RGB)
             (blurred, target)]
    for pred, ref in pairs:
        with torch.no_grad():
            expected = monai_loss(pred.clone(), ref.clone())  # MONAI subtracts the means in place
            value = ours(pred, ref)
        assert expected.item() > 1e-4  # a real difference, not two zeros
        assert abs(value.item() - expected.item()) <= 1e-5 * expected.item(), (value, expected)
    assert ours(target, target).item() == pytest.approx(0.0, abs=1e-12)


def test_perceptual_defaults_per_network(lite0):
    # the offline default compares its features as MONAI compares the paper's (normalised, summed over channels)
    lite = build_perceptual_loss("efficientnet_lite0")
    assert lite.layers == ("stage2", "stage3", "stage4", "stage6")
    assert lite.channel_normalize and lite.channel_reduction == "sum"
    raw = build_perceptual_loss("efficientnet_lite0", channel_normalize=False, channel_reduction="mean")
    assert not raw.channel_normalize and raw.channel_reduction == "mean"
    with pytest.raises(ValueError, match="channel_reduction"):
        PerceptualLoss(lite0, ("stage1",), channel_reduction="max")
    # "sum" over channels = C x "mean" without normalisation
    target, blurred = slice_pair()
    mean_form = PerceptualLoss(lite0, ("stage1",))(blurred, target)
    sum_form = PerceptualLoss(lite0, ("stage1",), channel_reduction="sum")(blurred, target)
    assert sum_form.item() == pytest.approx(16 * mean_form.item(), rel=1e-5)


def test_config_names_the_adversarial_and_perceptual_options():
    assert tconf.ADVERSARIAL_OBJECTIVES == ADVERSARIAL_OBJECTIVES
    assert set(PERCEPTUAL_NETWORKS) <= set(tconf.PERCEPTUAL_NETWORKS)
    for preset in ("paper-gan", "paper-gan-nodiag", "demo-cpu-gan"):
        assert tconf.TrainConfig.from_preset(preset).adversarial == "bce"
    cfg = tconf.TrainConfig.from_preset("paper-gan", **{"adversarial": "wasserstein", "perceptual": "radimagenet_resnet50",
                                                  "perceptual_weights": "weights/RadImageNet-ResNet50.pt"})
    assert (cfg.adversarial, cfg.perceptual, cfg.perceptual_weights) == (
        "wasserstein", "radimagenet_resnet50", "weights/RadImageNet-ResNet50.pt")
    assert tconf.TrainConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="adversarial must be one of 'bce', 'wasserstein'"):
        tconf.TrainConfig.from_preset("paper-gan", adversarial="hinge")
    with pytest.raises(ValueError, match="perceptual must be one of"):
        tconf.TrainConfig.from_preset("paper-gan", perceptual="vgg19")
    # a GAN run saved before the field existed was trained with the Wasserstein critic
    legacy = {k: v for k, v in tconf.TrainConfig.from_preset("demo-cpu-gan").to_dict().items() if k != "adversarial"}
    assert tconf.TrainConfig.from_dict(legacy).adversarial == "wasserstein"


# ------------------------------------------------------------------------------------ factory, LPIPS

def test_factory_names():
    assert isinstance(build_perceptual_loss("efficientnet-lite0"), PerceptualLoss)
    with pytest.raises(ValueError, match="unknown perceptual loss"):
        build_perceptual_loss("vgg19")
    with pytest.raises(ValueError, match="unknown or empty feature layers"):
        build_perceptual_loss("efficientnet_lite0", layers=("layer9",))


@pytest.mark.skipif(importlib.util.find_spec("lpips") is not None, reason="lpips is installed")
def test_lpips_without_the_extra_says_how_to_install_it():
    with pytest.raises(ImportError, match=r'pip install "synth7t\[lpips\]".*torchvision'):
        LPIPSLoss("alex")
    with pytest.raises(ImportError, match="lpips"):
        build_perceptual_loss("lpips_vgg")


def test_perceptual_weight_calibration_gives_the_share_at_the_identity(lite0):
    """The calibrated weight makes the perceptual term the asked share of the loss on the pairs it was measured on,
    whatever the backbone's scale (the raw and the normalised formulas differ by orders of magnitude)."""
    target, blurred = slice_pair()
    pairs = [(blurred, target)]
    for loss in (PerceptualLoss(lite0, ("stage2",)), PerceptualLoss(lite0, ("stage2",), True, "sum")):
        for share in (0.5, 1 / 6):
            w, l1, perc = calibrate_perceptual_weight(loss, pairs, share)
            assert perc == pytest.approx(loss(blurred, target).item()) and l1 == pytest.approx(
                (blurred - target).abs().mean().item())
            assert w * perc / (l1 + w * perc) == pytest.approx(share, rel=1e-6)
    with pytest.raises(ValueError, match="share must be in"):
        calibrate_perceptual_weight(loss, pairs, 1.0)
    with pytest.raises(ValueError, match="is 0"):
        calibrate_perceptual_weight(loss, [(target, target)], 0.5)
