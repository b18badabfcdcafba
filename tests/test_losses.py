"""Tests of synth7t.losses and the perceptual backbones of synth7t.models.backbones."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from synth7t.losses import (GeneratorLoss, LPIPSLoss, PerceptualLoss, build_perceptual_loss, critic_loss,
                            generator_adversarial_loss, gradient_penalty, l1_loss)
from synth7t.models import build_discriminator
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


def test_gradient_penalty_trains_the_critic_only():
    torch.manual_seed(0)
    critic = build_discriminator("demo-cpu")
    real = torch.rand(2, 1, 32, 32)
    fake = torch.rand(2, 1, 32, 32, requires_grad=True)
    total, parts = critic_loss(critic, real, fake)
    total.backward()
    assert all(p.grad is not None for p in critic.parameters() if p.requires_grad)
    assert fake.grad is None
    assert set(parts) == {"wasserstein", "gradient_penalty", "total"} and parts["gradient_penalty"] >= 0


def test_critic_and_generator_losses_are_the_wasserstein_terms():
    def critic(x):
        return x.mean(dim=(1, 2, 3), keepdim=True).expand(-1, 1, 2, 2) * 3.0  # a 2x2 "patch map"

    real, fake = torch.full((4, 1, 8, 8), 0.8), torch.full((4, 1, 8, 8), 0.2)
    total, parts = critic_loss(critic, real, fake, lambda_gp=0.0)
    assert total.item() == pytest.approx(3 * 0.2 - 3 * 0.8)
    assert parts["wasserstein"].item() == pytest.approx(3 * 0.8 - 3 * 0.2)
    assert generator_adversarial_loss(critic, fake).item() == pytest.approx(-0.6)


def test_generator_loss_combines_its_parts(perceptual):
    torch.manual_seed(0)
    target, pred = slice_pair()
    pred = pred.clone().requires_grad_(True)
    critic = build_discriminator("demo-cpu")
    loss = GeneratorLoss(perceptual, lambda_perc=0.05, lambda_gan=0.1)
    total, parts = loss(pred, target, critic=critic)
    expected = parts["l1"] + 0.05 * parts["perceptual"] + 0.1 * parts["gan"]
    assert total.item() == pytest.approx(expected.item(), rel=1e-6)
    assert parts["perceptual"] > 0 and parts["gan"] != 0
    total.backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0
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
