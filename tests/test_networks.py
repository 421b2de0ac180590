"""Refiner, discriminator, U-Net and the RegGAN wrapper: shapes, maths and save/load.

References: literal concatenation of one-hot label planes (for the refiner's label bias),
the published PatchGAN receptive field (70 px for 3 layers, pix2pix), the conv arithmetic
for parameter counts, per-target LocalRidge calls for the conditional regression, and
float32 round trips for saved generators.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from reggan_core.config import RefinerConfig
from reggan_core.errors import ConfigError
from reggan_core.model import RegGAN, load_generator, make_discriminator, pack_ridges, save_generator, unpack_ridges
from reggan_core.networks import (resize_conv, GENERATORS, PatchDiscriminator, Refiner, UNet, build_discriminator,
                                  build_generator, count_parameters)
from reggan_core.regression import RidgeConfig


def rand_images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


@pytest.mark.parametrize("size", [32, 128])
def test_refiner_shapes_and_range(size):
    g = Refiner(ngf=8)
    y = g(rand_images(2, size))
    assert y.shape == (2, 3, size, size) and y.min() >= -1 and y.max() <= 1
    with pytest.raises(ConfigError, match="divisible by 4"):
        g(rand_images(1, 30))


def test_ultimate_skip_starts_as_the_identity_and_learns():
    x = rand_images(2, 32)
    for net in (Refiner(ngf=8), UNet(ngf=4, n_down=5)):
        y = net(x)
        assert torch.equal(y, x)  # zero-initialised head: output = input
        y.sum().backward()
        head = net.body[-2] if isinstance(net, Refiner) else net.up[-1][1]
        assert head.weight.grad.abs().sum() > 0  # ... and the head gets a gradient at once
    plain = Refiner(ngf=8, skip=False)
    assert plain.body[-2].weight.abs().sum() > 0 and not torch.equal(plain(x), x)


def test_label_bias_equals_concatenated_one_hot_planes():
    """The refiner adds W_label.sum(kernel) @ c instead of convolving L constant planes."""
    g = Refiner(ngf=8, n_labels=5)
    torch.nn.init.normal_(g.stem.weight)
    x, labels = rand_images(3, 32), torch.tensor([0, 3, 4])
    planes = F.one_hot(labels, 5).float()[:, :, None, None].expand(-1, -1, 32, 32)
    literal = g.stem(F.pad(torch.cat([x, planes], 1), (3, 3, 3, 3), mode="reflect"))
    fast = F.conv2d(g.pad(x), g.stem.weight[:, :3], g.stem.bias) + g.label_bias(labels)
    assert torch.allclose(literal, fast, atol=1e-5)


def test_label_changes_the_output_and_instance_norm_would_erase_it():
    """Why the conditional stem has no norm: IN removes any per-channel constant."""
    h = torch.randn(2, 4, 16, 16)
    offset = torch.randn(1, 4, 1, 1)
    assert torch.allclose(F.instance_norm(h + offset), F.instance_norm(h), atol=1e-5)
    g = Refiner(ngf=8, n_labels=3, skip=False)  # the skip's zero-initialised head would hide the body
    x = rand_images(1, 32).expand(3, -1, -1, -1)
    y = g(x, torch.tensor([0, 1, 2]))
    assert (y[0] - y[1]).abs().max() > 1e-4 and (y[1] - y[2]).abs().max() > 1e-4
    with pytest.raises(ConfigError, match="conditional"):
        g(x)


def test_residual_blocks_add_the_conv_arithmetic_parameters():
    c = 4 * 16  # bottleneck width for ngf=16: two 3x3 convs (no bias before instance norm) per block
    assert count_parameters(Refiner(ngf=16, n_res=3)) - count_parameters(Refiner(ngf=16, n_res=1)) == 2 * 2 * 9 * c * c


def test_patchgan_map_size_and_70px_receptive_field():
    d = PatchDiscriminator(3, ndf=8, n_layers=3, norm="none")  # instance norm would see the whole image
    x = torch.randn(1, 3, 128, 128, requires_grad=True)
    scores, logits = d(x)
    assert scores.shape == (1, 1, 14, 14) and logits is None
    scores[0, 0, 7, 7].backward()
    rows = torch.nonzero(x.grad.abs().sum(dim=(0, 1, 3)))
    cols = torch.nonzero(x.grad.abs().sum(dim=(0, 1, 2)))
    assert int(rows.max() - rows.min()) + 1 == 70 and int(cols.max() - cols.min()) + 1 == 70


def test_discriminator_class_head():
    d = make_discriminator(RefinerConfig(ndf=8), n_classes=21)
    scores, logits = d(torch.zeros(4, 6, 64, 64))
    assert scores.shape == (4, 1, 6, 6) and logits.shape == (4, 21)


def test_class_head_learns_where_things_are():
    """Two classes that differ only in layout (a bright bar at the top or the bottom). On a frozen
    random trunk, whose instance norms equalise per-channel statistics, a globally pooled head
    stays near chance (cross-entropy ~0.6); the 4x4 grid head separates them."""
    torch.manual_seed(0)
    d = PatchDiscriminator(3, ndf=4, n_layers=2, n_classes=2)
    base = torch.full((16, 3, 32, 32), -0.5) + 0.1 * torch.randn(16, 3, 32, 32)
    labels = torch.arange(16) % 2
    for i, k in enumerate(labels.tolist()):
        base[i, :, 2:8] += 1.0 if k == 0 else 0.0
        base[i, :, 24:30] += 1.0 if k == 1 else 0.0
    opt = torch.optim.Adam(d.classify.parameters(), lr=1e-2)  # the head only
    for _ in range(60):
        opt.zero_grad()
        F.cross_entropy(d(base)[1], labels).backward()
        opt.step()
    assert F.cross_entropy(d(base)[1], labels).item() < 0.05


def test_unet_yardstick():
    u = UNet(ngf=4, n_down=5, n_labels=2)
    y = u(rand_images(2, 32), torch.tensor([0, 1]))
    assert y.shape == (2, 3, 32, 32)
    with pytest.raises(ConfigError, match="divisible by 32"):
        u(rand_images(1, 48), torch.tensor([0]))
    # pix2pix's unet_128 (ngf=64, 7 downsamplings) is ~41.8 M parameters: far larger than the refiner
    big, small = UNet(), Refiner(ngf=64)
    assert 41.0e6 < count_parameters(big) < 42.5e6 and count_parameters(big) > 20 * count_parameters(small)


def test_variant_dicts_answer_unknown_keys_with_valid_ones():
    assert set(GENERATORS) == {"resnet", "unet"}
    with pytest.raises(ConfigError, match="unknown generator 'vgg'; valid: resnet, unet"):
        build_generator("vgg")
    with pytest.raises(ConfigError, match="valid: patch"):
        build_discriminator("pixel")
    assert isinstance(build_generator("unet", ngf=4, n_down=5), UNet)


# ------------------------------------------------------------------ RegGAN


def tiny_model(conditional=True, ridge=True, targets=("happy", "sad", "awed")) -> RegGAN:
    return RegGAN(list(targets) if conditional else [targets[0]], conditional=conditional,
                  refiner=RefinerConfig(ngf=4), ridge=RidgeConfig(size=16) if ridge else None)


def randomize_ridges(model: RegGAN, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.ridges.values():
            m.weight.copy_(torch.randn(m.weight.shape, generator=g) * 0.3)
            m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)


def test_conditional_regression_routes_each_sample_to_its_target_layer():
    model = tiny_model()
    randomize_ridges(model)
    x, labels = rand_images(5, 16), torch.tensor([2, 0, 1, 2, 0])
    reg = model.regress(x, labels)
    for i, k in enumerate(labels.tolist()):
        assert torch.allclose(reg[i], model.ridges[model.targets[k]](x[i:i + 1])[0], atol=1e-6)
    refined, reg2 = model(x, labels)
    assert torch.equal(reg, reg2) and torch.allclose(refined, model.refiner(reg, labels), atol=1e-6)


def test_refiner_only_baseline_has_the_same_refiner():
    full, base = tiny_model(), tiny_model(ridge=False)
    assert count_parameters(full.refiner) == count_parameters(base.refiner)
    x = rand_images(2, 16)
    assert torch.equal(base.regress(x, torch.tensor([0, 1])), x)


def test_translate_strength_types_and_errors():
    model = tiny_model()
    randomize_ridges(model)
    x = rand_images(2, 16)
    full = model.translate(x, "sad")
    refined, reg = model(x, torch.full((2,), 1))
    # translate runs the ridge layer's inference path (shift-and-add), forward with grad the unfold path
    assert torch.allclose(full["refined"], refined, atol=1e-5)
    assert torch.allclose(full["regression"], reg.clamp(-1, 1), atol=1e-6)
    assert torch.equal(model.translate(x, "sad", strength=0.0)["refined"], x)
    half = model.translate(x, "sad", strength=0.5)["regression"]
    assert torch.allclose(half, (x + 0.5 * (reg - x)).clamp(-1, 1), atol=1e-6)
    single = model.translate(x[0], "sad")["refined"]
    assert single.shape == (3, 16, 16) and torch.allclose(single, refined[0], atol=1e-5)  # batch of 1 vs 2
    arr = ((x[0].permute(1, 2, 0) + 1) * 127.5).round().byte().numpy()
    out = model.translate(arr, 2)
    assert out["refined"].shape == (16, 16, 3) and out["refined"].dtype == np.uint8
    with pytest.raises(ConfigError, match="valid targets: happy, sad, awed"):
        model.translate(x, "angry")
    with pytest.raises(ConfigError, match="16x16"):
        model.translate(rand_images(1, 32), "sad")
    with pytest.raises(ConfigError, match="per-pair model has one target"):
        RegGAN(["happy", "sad"], conditional=False)


def test_packed_ridges_round_trip_within_half_a_step():
    model = tiny_model()
    randomize_ridges(model, 3)
    packed = pack_ridges(model)
    w = unpack_ridges(packed)
    ref = torch.stack([torch.cat([m.weight, m.bias[..., None]], -1) for m in model.ridges.values()]).detach()
    assert w.shape == ref.shape
    assert torch.all((w - ref).abs() <= packed["scale"] / 2 + 1e-7)
    assert packed["data"].numel() < ref.numel() * 2  # smaller than float16


@pytest.mark.parametrize("conditional", [True, False])
def test_saved_generator_round_trip(tmp_path, conditional):
    model = tiny_model(conditional)
    randomize_ridges(model, 1)
    save_generator(model, tmp_path / "g32.pt", dtype="float32", pack=False)
    save_generator(model, tmp_path / "g16.pt")
    x = rand_images(3, 16)
    labels = torch.zeros(3, dtype=torch.long)
    exact = load_generator(tmp_path / "g32.pt")
    for a, b in zip(exact(x, labels), model(x, labels)):
        assert torch.equal(a, b)
    small = load_generator(tmp_path / "g16.pt")
    assert small.spec() == model.spec()
    assert (small(x, labels)[0] - model(x, labels)[0]).abs().max() < 0.05
    state = torch.load(tmp_path / "g16.pt", weights_only=True)
    assert all(v.dtype == torch.float16 for v in state["refiner"].values())


def test_load_generator_refuses_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_generator(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="not readable"):
        load_generator(tmp_path / "junk.pt")
    torch.save({"weights": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(ConfigError, match="not a RegGAN checkpoint"):
        load_generator(tmp_path / "other.pt")


def test_resize_upsampling_refiner_starts_as_identity_and_differs_in_layers():
    from reggan_core.config import load_config
    from reggan_core.errors import ConfigError
    from reggan_core.networks import Refiner

    x = torch.rand(2, 3, 32, 32) * 2 - 1
    labels = torch.tensor([0, 2])
    resize = Refiner(n_labels=3, ngf=8, upsample="resize")
    assert torch.equal(resize(x, labels), x)                       # zero-initialised head: identity
    kinds = {type(m).__name__ for m in resize.body}
    assert "Upsample" in kinds and "ConvTranspose2d" not in kinds
    assert "ConvTranspose2d" in {type(m).__name__ for m in Refiner(n_labels=3, ngf=8).body}
    with pytest.raises(ConfigError, match="refiner.upsample='bilinear' is invalid"):
        load_config(overrides=["refiner.upsample=bilinear"])


# ------------------------------------------------------------------ resize-convolution upsampling


@pytest.mark.parametrize("cin,cout,h,w,bias", [(8, 4, 9, 7, True), (64, 32, 16, 16, False)])
def test_resize_conv_equals_upsample_reflect_pad_conv(cin, cout, h, w, bias):
    """The fused form gives the literal nearest x2 -> reflection pad -> 3x3 conv, values and gradients."""
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(cin, cout, 3, bias=bias)
    x = torch.randn(2, cin, h, w, requires_grad=True)
    literal = conv(torch.nn.ReflectionPad2d(1)(torch.nn.Upsample(scale_factor=2, mode="nearest")(x)))
    fused = resize_conv(x, conv)
    assert fused.shape == literal.shape == (2, cout, 2 * h, 2 * w)
    assert torch.allclose(fused, literal, atol=1e-5)
    g = torch.randn_like(literal)
    grads = [torch.autograd.grad((out * g).sum(), [x, conv.weight]) for out in (literal, fused)]
    for a, b in zip(*grads):   # float32 sums in another order: equal to ~1e-6 of the gradient's scale
        assert torch.allclose(a, b, atol=1e-5 * float(a.abs().max()))


def test_resize_refiner_body_matches_plain_sequential():
    """RefinerBody runs the same modules as nn.Sequential would (same keys, same output)."""
    torch.manual_seed(1)
    ref = Refiner(ngf=16, n_labels=5, upsample="resize").eval()
    with torch.no_grad():
        for m in ref.modules():
            if isinstance(m, torch.nn.Conv2d):
                m.weight.normal_(0, 0.05)   # the head starts at zero: make every layer matter
        x, labels = torch.rand(2, 3, 64, 64) * 2 - 1, torch.tensor([0, 3])
        fused = ref(x, labels)
        keys = set(ref.state_dict())
        ref.body = torch.nn.Sequential(*list(ref.body))
        assert set(ref.state_dict()) == keys
        assert torch.allclose(fused, ref(x, labels), atol=1e-5)
