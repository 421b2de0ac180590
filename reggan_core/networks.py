"""The refinement network, the PatchGAN discriminator and a U-Net yardstick.

RegGAN's paper publishes no architecture, so the refiner follows the authors' US-GAN
(Akram & Khan, "US-GAN: on the importance of ultimate skip connection for facial
expression synthesis", 2021/2023): encoder, ONE residual block, decoder, and an "ultimate"
skip from input to output so the network only learns a residual on top of its input -
here the blurry local-ridge output. Layer recipe (7x7 reflect-padded stem, stride-2 3x3
downsampling with instance norm, transposed-conv upsampling, 7x7 tanh head) is the
CycleGAN/pix2pix ResNet generator's; the discriminator is pix2pix's 70x70 PatchGAN
(Isola et al. 2017) with an optional StarGAN-style expression classification head (Choi
et al. 2018). Every size is a constructor argument; variants are chosen by name from
:data:`GENERATORS` / :data:`DISCRIMINATORS`.

Images are float tensors (B, 3, H, W) in [-1, 1]; H and W must be divisible by 4 (the
refiner) or by 2**n_down (the U-Net).
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .errors import ConfigError

NORMS = ("instance", "batch", "none")


def norm_layer(kind: str, channels: int) -> nn.Module:
    """Instance norm (affine=False, as pix2pix/CycleGAN), batch norm, or nothing.

    Convolutions followed by a norm carry no bias: the norm subtracts each channel's mean,
    so a bias there has a zero gradient and no effect.
    """
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=False, track_running_stats=False)
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "none":
        return nn.Identity()
    raise ConfigError(f"unknown norm {kind!r}; valid: {', '.join(NORMS)}")


def init_weights(net: nn.Module, std: float = 0.02) -> nn.Module:
    """pix2pix 'normal' init: conv weights ~ N(0, std), norm scales ~ N(1, std), biases 0."""
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, std)
            nn.init.zeros_(m.bias)
    return net


def one_hot(labels: Tensor, n: int) -> Tensor:
    """(B,) integer labels in [0, n) -> (B, n) float one-hot."""
    if labels.min() < 0 or labels.max() >= n:
        raise ConfigError(f"label out of range 0..{n - 1}: {labels.tolist()}")
    return F.one_hot(labels.long(), n).float()


def count_parameters(net: nn.Module) -> int:
    """Number of trainable and frozen parameters."""
    return sum(p.numel() for p in net.parameters())


def check_skip(in_channels: int, out_channels: int, skip: bool) -> None:
    if skip and in_channels != out_channels:
        raise ConfigError(f"skip=True needs in_channels == out_channels, got {in_channels} and {out_channels}")


def ultimate_skip(x: Tensor, r: Tensor, skip: bool) -> Tensor:
    """US-GAN's ultimate skip: output = clamp(input + residual, -1, 1); the residual alone without it."""
    return (x + r).clamp(-1.0, 1.0) if skip else r


class ResidualBlock(nn.Module):
    """x + [pad-conv3x3-norm-ReLU-pad-conv3x3-norm](x); shape unchanged."""

    def __init__(self, channels: int, norm: str = "instance"):
        super().__init__()
        bias = norm == "none"
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3, bias=bias), norm_layer(norm, channels),
            nn.ReLU(True),
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3, bias=bias), norm_layer(norm, channels),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


UPSAMPLES = ("transpose", "resize")

# rows (and columns) of a 3x3 kernel that land on the same low-resolution pixel after a
# nearest x2 upsampling: output phase 0 reads pixels (i-1, i), phase 1 reads (i, i+1)
_PHASE_SUMS = torch.tensor([[[1., 0., 0.], [0., 1., 1.]],
                            [[1., 1., 0.], [0., 0., 1.]]])


def resize_conv(x: Tensor, conv: nn.Conv2d) -> Tensor:
    """``conv(reflect_pad(nearest_x2(x)))`` computed at the input's resolution.

    After a nearest x2 upsampling, each 3x3 window covers only 2x2 distinct input pixels, so
    every output phase (py, px) is a 2x2 convolution of the input with summed taps, and the
    reflection padding of the upsampled image is replication padding of the input. One conv
    with the four phase kernels stacked, each phase written to its interleaved pixels, gives the same numbers with
    16 instead of 36 multiply-adds per input pixel and channel pair (tested against the
    literal ``nn.Upsample`` + ``nn.ReflectionPad2d`` + ``nn.Conv2d``).
    """
    w = conv.weight                                           # (out, in, 3, 3)
    r = _PHASE_SUMS.to(w)                                     # (2, 2, 3)
    k = torch.einsum("pay,oiyx,qbx->opqiab", r, w, r)         # (out, py, px, in, 2, 2)
    out_ch = w.shape[0]
    k = k.reshape(out_ch * 4, w.shape[1], 2, 2)
    bias = conv.bias.repeat_interleave(4) if conv.bias is not None else None
    y = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), k, bias)   # (B, out*4, H+1, W+1)
    h, wd = x.shape[-2:]
    b = y.shape[0]
    y = y.view(b, out_ch, 2, 2, h + 1, wd + 1)
    # write each phase straight into its strided slots (one copy, not stack + pixel shuffle)
    out = y.new_empty(b, out_ch, h, 2, wd, 2)
    for py in (0, 1):
        for px in (0, 1):
            out[:, :, :, py, :, px] = y[:, :, py, px, py:py + h, px:px + wd]
    return out.view(b, out_ch, 2 * h, 2 * wd)


class RefinerBody(nn.Sequential):
    """The refiner's layer stack; runs each ``Upsample(x2, nearest) -> ReflectionPad2d(1) -> 3x3 Conv2d``
    triple as :func:`resize_conv`. The modules (and so the checkpoints' keys) are the plain ones;
    only their forward hooks do not fire for a fused triple (its conv's weights are used directly)."""

    def forward(self, x: Tensor) -> Tensor:
        mods = list(self)
        i = 0
        while i < len(mods):
            m = mods[i]
            if (isinstance(m, nn.Upsample) and i + 2 < len(mods) and isinstance(mods[i + 1], nn.ReflectionPad2d)
                    and isinstance(mods[i + 2], nn.Conv2d) and mods[i + 2].kernel_size == (3, 3)
                    and mods[i + 2].stride == (1, 1) and mods[i + 2].padding == (0, 0)
                    and m.scale_factor in (2, 2.0) and m.mode == "nearest"):
                x = resize_conv(x, mods[i + 2])
                i += 3
            else:
                x = m(x)
                i += 1
        return x


class Refiner(nn.Module):
    """US-GAN-style refiner: 128x128 in, 128x128 out, a residual on its input.

    Shapes for ngf=64 on a 128x128 face::

        stem    7x7 conv          (3[+L], 128,128) -> (64, 128,128)
        down1   3x3 conv stride 2 (64, 128,128)    -> (128, 64,64)
        down2   3x3 conv stride 2 (128, 64,64)     -> (256, 32,32)
        res     n_res residual blocks at (256, 32,32)
        up1/2   3x3 transposed conv stride 2       -> (128, 64,64) -> (64, 128,128)
                (``upsample="resize"``: nearest x2 then 3x3 conv, which cannot make the
                checkerboard pattern of overlapping strided kernels; Odena et al. 2016)
        head    7x7 conv + tanh                    -> (3, 128,128) = r
        output  clamp(x + r, -1, 1)   (ultimate skip)   or r without the skip

    With the skip, the head conv's weights start at zero (its bias is zero anyway), so the
    untrained refiner is exactly the identity and training starts from the regression output
    instead of from noise added to it (zero-initialised residual branches: Goyal et al. 2017,
    Bachlechner et al. 2020). The head's own gradient is not zero, so it learns at once.

    Conditioning (``n_labels`` > 0): the target label enters as L constant one-hot input
    planes concatenated to the image (StarGAN). With reflection padding those planes stay
    constant, so the stem's response to them is exactly the bias ``W_label.sum(kh, kw) @ c``;
    we add that bias instead of convolving L extra planes (same maths, several times
    cheaper - tested against the literal concatenation). A per-channel constant is exactly
    what instance norm removes, so a conditional refiner's stem has NO norm: conv -> ReLU,
    where the ReLU turns the label's offset into a label-dependent pattern of active units
    that survives the normalised layers after it. (StarGAN keeps the norm and its labels
    reach the network only through the zero-padded borders.)
    """

    def __init__(self, in_channels: int = 3, out_channels: int = 3, n_labels: int = 0, ngf: int = 64,
                 n_res: int = 1, norm: str = "instance", skip: bool = True, upsample: str = "transpose"):
        super().__init__()
        check_skip(in_channels, out_channels, skip)
        if upsample not in UPSAMPLES:
            raise ConfigError(f"unknown upsample {upsample!r}; valid: {', '.join(UPSAMPLES)}")
        self.in_channels, self.n_labels, self.skip = in_channels, n_labels, skip
        self.pad = nn.ReflectionPad2d(3)
        stem_norm = "none" if n_labels else norm
        bias = norm == "none"
        self.stem = nn.Conv2d(in_channels + n_labels, ngf, 7, bias=stem_norm == "none")
        self.stem_act = nn.Sequential(norm_layer(stem_norm, ngf), nn.ReLU(True))
        layers: list[nn.Module] = []
        ch = ngf
        for _ in range(2):  # 128 -> 64 -> 32
            layers += [nn.Conv2d(ch, ch * 2, 3, stride=2, padding=1, bias=bias), norm_layer(norm, ch * 2),
                       nn.ReLU(True)]
            ch *= 2
        layers += [ResidualBlock(ch, norm) for _ in range(n_res)]
        for _ in range(2):  # 32 -> 64 -> 128
            if upsample == "transpose":
                layers += [nn.ConvTranspose2d(ch, ch // 2, 3, stride=2, padding=1, output_padding=1, bias=bias)]
            else:
                layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.ReflectionPad2d(1),
                           nn.Conv2d(ch, ch // 2, 3, bias=bias)]
            layers += [norm_layer(norm, ch // 2), nn.ReLU(True)]
            ch //= 2
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ch, out_channels, 7), nn.Tanh()]
        self.body = RefinerBody(*layers)
        init_weights(self)
        if skip:  # residual starts at exactly zero: an untrained refiner returns its input
            nn.init.zeros_(layers[-2].weight)

    def label_bias(self, labels: Tensor) -> Tensor:
        """(B,) labels -> (B, ngf, 1, 1): the stem's response to constant one-hot planes."""
        w = self.stem.weight[:, self.in_channels:].sum(dim=(2, 3))  # (ngf, L)
        return (one_hot(labels, self.n_labels).to(w.dtype) @ w.t())[:, :, None, None]

    def forward(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        if x.shape[-1] % 4 or x.shape[-2] % 4:
            raise ConfigError(f"refiner input {tuple(x.shape[-2:])} must have sides divisible by 4")
        h = F.conv2d(self.pad(x), self.stem.weight[:, :self.in_channels], self.stem.bias)  # image planes
        if self.n_labels:
            if labels is None:
                raise ConfigError("this refiner is conditional: pass the target labels")
            h = h + self.label_bias(labels).to(h.dtype)
        return ultimate_skip(x, self.body(self.stem_act(h)), self.skip)


class UNet(nn.Module):
    """pix2pix U-Net generator (yardstick): n_down stride-2 4x4 convs, mirrored decoder, skips.

    With ngf=64 and n_down=7 (pix2pix's ``unet_128``) it has about 41.8 M parameters,
    ~20x the US-GAN refiner (ngf=64). Label planes are concatenated literally (zero padding here).
    Encoder channels: ngf, 2ngf, 4ngf, 8ngf, 8ngf, ... (128 -> 64 -> ... -> 1 for n_down=7).
    No dropout (pix2pix's 0.5 dropout is its only noise source; a documented difference).
    """

    def __init__(self, in_channels: int = 3, out_channels: int = 3, n_labels: int = 0, ngf: int = 64,
                 n_down: int = 7, norm: str = "instance", skip: bool = True):
        super().__init__()
        check_skip(in_channels, out_channels, skip)
        self.n_labels, self.skip, self.n_down = n_labels, skip, n_down
        chans = [min(ngf * 2 ** i, ngf * 8) for i in range(n_down)]
        self.down = nn.ModuleList()
        prev = in_channels + n_labels
        for i, ch in enumerate(chans):
            inner = i == n_down - 1
            parts: list[nn.Module] = [] if i == 0 else [nn.LeakyReLU(0.2, True)]
            normed = 0 < i and not inner  # no norm on the outermost and on the 1x1 innermost map
            parts.append(nn.Conv2d(prev, ch, 4, stride=2, padding=1, bias=not normed or norm == "none"))
            if normed:
                parts.append(norm_layer(norm, ch))
            self.down.append(nn.Sequential(*parts))
            prev = ch
        self.up = nn.ModuleList()
        for i in reversed(range(n_down)):
            inner, outer = i == n_down - 1, i == 0
            c_in = chans[i] if inner else chans[i] * 2       # decoder input carries the skip
            c_out = out_channels if outer else chans[i - 1]
            parts = [nn.ReLU(True), nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1,
                                                       bias=outer or norm == "none")]
            parts.append(nn.Tanh() if outer else norm_layer(norm, c_out))
            self.up.append(nn.Sequential(*parts))
        init_weights(self)
        if skip:  # as in Refiner: start as the identity
            nn.init.zeros_(self.up[-1][1].weight)
            nn.init.zeros_(self.up[-1][1].bias)

    def forward(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        f = 2 ** self.n_down
        if x.shape[-1] % f or x.shape[-2] % f:
            raise ConfigError(f"U-Net input {tuple(x.shape[-2:])} must have sides divisible by {f}")
        h = x
        if self.n_labels:
            if labels is None:
                raise ConfigError("this U-Net is conditional: pass the target labels")
            planes = one_hot(labels, self.n_labels)[:, :, None, None].expand(-1, -1, *x.shape[-2:])
            h = torch.cat([x, planes.to(x.dtype)], 1)
        feats = []
        for layer in self.down:
            h = layer(h)
            feats.append(h)
        h = self.up[0](feats[-1])
        for layer, skip in zip(self.up[1:], reversed(feats[:-1])):
            h = layer(torch.cat([h, skip], 1))
        return ultimate_skip(x, h, self.skip)


class PatchDiscriminator(nn.Module):
    """pix2pix PatchGAN (70x70 receptive field for n_layers=3), optional class head.

    For a 128x128 input and n_layers=3: 128 -> 64 -> 32 -> 16 (stride 2) -> 15 -> 14
    (stride 1), i.e. a (B, 1, 14, 14) map of real/fake scores, one per overlapping 70x70
    patch. ``n_classes`` > 0 adds a StarGAN-style auxiliary classifier on the last features:
    average-pooled to a 4x4 grid, flattened, linear -> (B, n_classes) expression logits.
    The grid keeps the layout (mouth vs brows): after instance norm every channel has mean 0
    and variance 1, so a global average pool would be nearly the same for every face.
    ``forward`` returns ``(patch_scores, class_logits or None)``.
    """

    def __init__(self, in_channels: int = 3, ndf: int = 64, n_layers: int = 3, norm: str = "instance",
                 n_classes: int = 0):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, ndf, 4, stride=2, padding=1), nn.LeakyReLU(0.2, True)]
        ch = ndf
        for n in range(1, n_layers + 1):
            nxt = ndf * min(2 ** n, 8)
            stride = 2 if n < n_layers else 1
            layers += [nn.Conv2d(ch, nxt, 4, stride=stride, padding=1, bias=norm == "none"), norm_layer(norm, nxt),
                       nn.LeakyReLU(0.2, True)]
            ch = nxt
        self.trunk = nn.Sequential(*layers)
        self.patch = nn.Conv2d(ch, 1, 4, stride=1, padding=1)
        self.classify = nn.Sequential(nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(ch * 16, n_classes)) \
            if n_classes else None
        init_weights(self)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        h = self.trunk(x)
        logits = self.classify(h) if self.classify is not None else None
        return self.patch(h), logits


GENERATORS: dict[str, Callable[..., nn.Module]] = {"resnet": Refiner, "unet": UNet}
DISCRIMINATORS: dict[str, Callable[..., nn.Module]] = {"patch": PatchDiscriminator}


def choose(variants: dict[str, Callable], key: str, what: str) -> Callable:
    """Look ``key`` up in a variant dict; unknown keys give a one-line error with the valid ones."""
    try:
        return variants[key]
    except KeyError:
        raise ConfigError(f"unknown {what} {key!r}; valid: {', '.join(sorted(variants))}") from None


def build_generator(name: str, **kwargs) -> nn.Module:
    """A generator variant by name ('resnet' = US-GAN refiner, 'unet' = pix2pix yardstick)."""
    return choose(GENERATORS, name, "generator")(**kwargs)


def build_discriminator(name: str, **kwargs) -> nn.Module:
    """A discriminator variant by name ('patch' = PatchGAN)."""
    return choose(DISCRIMINATORS, name, "discriminator")(**kwargs)
