"""face-api's FaceExpressionNet ported to torch: an expression judge not trained on FER2013.

Source: npm ``@vladmandic/face-api`` 1.7.15 (MIT; a maintained fork of Vincent
Mühler's face-api.js), ``model/face_expression_model-weights_manifest.json`` + ``.bin``.
face-api.js' docs say the net was trained on public datasets and images scraped from the
web; no FER2013 claim, so it is an independent check on the FER2013 mini-Xception
(:mod:`.fer`). The architecture below follows the tarball's ``src/faceFeatureExtractor``
and ``src/faceProcessor``; this module is a re-implementation, not a copy of that code.

Network (TF.js layout NHWC; here NCHW)::

    input  112x112 RGB, (x - [122.782, 117.001, 104.298]) / 255
    dense block x4, channels 32, 64, 128, 256 (112 -> 56 -> 28 -> 14 -> 7):
           o1 = relu(c0(x))          c0: 3x3/2 conv + bias (block 0) or 3x3/2 separable conv
           o2 = s1(o1)               s_k: 3x3/1 separable conv + bias, no activation
           o3 = s2(relu(o1 + o2))
           o4 = s3(relu(o1 + (o2 + o3)))
           out = relu(o1 + (o2 + (o3 + o4)))
    avg pool 7x7/2 'valid' -> (N, 256)      the penultimate features
    fc 256 -> 7, softmax

Separable conv = TF's depthwise 3x3 then pointwise 1x1, one bias after both. TF 'same'
padding puts the odd pixel of the stride-2 convs at the bottom/right (pad top/left 0,
bottom/right 1 on even sizes), done here with an explicit ``F.pad``.

Preprocessing follows face-api's ``NetInput.toBatchTensor(112, true)`` for a face tensor
(what face-api feeds the net after ``extractFaceTensors`` cuts the box): zero-pad to a
centred square, then ``tf.image.resizeBilinear(alignCorners=false, halfPixelCenters=false)``
(the legacy TF rule ``src = dst * in / out``, not torch's half-pixel one), reproduced
exactly by :func:`tf_resize_bilinear`.

Weights: uint8 affine quantisation, decoded as tfjs-core's ``io.decodeWeights`` does:
``value = q * scale + min`` evaluated in JavaScript doubles and stored into a
``Float32Array`` (one rounding to float32). Converted once to a plain torch state dict at
``cache_root()/weights/faceapi_expression.pt``.

Classes, in output order: neutral, happy, sad, angry, fearful, disgusted, surprised.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import DataError
from .fer import MetricUnavailable, as_rgb_batch, run_batched

FACEAPI_PACKAGE = ("@vladmandic/face-api", "1.7.15")
FACEAPI_CLASSES: tuple[str, ...] = ("neutral", "happy", "sad", "angry", "fearful", "disgusted", "surprised")
FACEAPI_INPUT_SIZE = 112
FACEAPI_MEAN_RGB = (122.782, 117.001, 104.298)   # FaceFeatureExtractor.forwardInput
FACEAPI_WEIGHTS_FILE = "faceapi_expression.pt"
FACEAPI_ENV = "REGGAN_FACEAPI_WEIGHTS"
MANIFEST = "model/face_expression_model-weights_manifest.json"
BLOCK_CHANNELS = (32, 64, 128, 256)

# CFEE category name -> face-api class (the six basic expressions and neutral; compound
# categories have no face-api class and are not scored). The names coincide, which is
# what ecs.class_of_target matches on; tests check the two agree.
CFEE_TO_FACEAPI: dict[str, str] = {
    "neutral": "neutral", "happy": "happy", "sad": "sad", "fearful": "fearful",
    "angry": "angry", "surprised": "surprised", "disgusted": "disgusted",
}

_FIX = (f"do `npm pack {FACEAPI_PACKAGE[0]}@{FACEAPI_PACKAGE[1]}` access (npm on PATH, registry reachable) "
        f"or pass the converted weights with weights=PATH / ${FACEAPI_ENV}")


# ---------------------------------------------------------------- weights: manifest + bin

def dequantize(q: np.ndarray, scale: float, minimum: float) -> np.ndarray:
    """``q * scale + min`` as TF.js computes it: in float64 (JS numbers), then rounded to float32."""
    return (q.astype(np.float64) * float(scale) + float(minimum)).astype(np.float32)


def read_tfjs_weights(manifest_path: str | os.PathLike) -> dict[str, np.ndarray]:
    """All tensors of a TF.js weights manifest and its binary shards, in TF.js layout.

    Supports what this model uses: float32 tensors, raw or uint8/uint16-affine quantised.
    Each group's shards are concatenated and read in manifest order, as tfjs-core does.
    """
    manifest_path = Path(manifest_path)
    try:
        groups = json.loads(manifest_path.read_text())
    except (OSError, ValueError) as exc:
        raise MetricUnavailable(f"face-api expression classifier unavailable because {manifest_path} is not a "
                                f"readable weights manifest ({exc.__class__.__name__}); {_FIX}") from None
    out: dict[str, np.ndarray] = {}
    for group in groups:
        try:
            data = b"".join((manifest_path.parent / p).read_bytes() for p in group["paths"])
        except OSError as exc:
            raise MetricUnavailable(f"face-api expression classifier unavailable because a weights shard of "
                                    f"{manifest_path.name} cannot be read ({exc}); {_FIX}") from None
        offset = 0
        for spec in group["weights"]:
            shape = tuple(int(s) for s in spec["shape"])
            size = math.prod(shape)
            if spec["dtype"] != "float32":
                raise DataError(f"weight {spec['name']} has dtype {spec['dtype']}; only float32 is supported")
            quant = spec.get("quantization")
            qtype = None if quant is None else quant["dtype"]
            if qtype not in (None, "uint8", "uint16"):
                raise DataError(f"weight {spec['name']} uses {qtype} quantisation; only uint8/uint16 are supported")
            dtype = {None: "<f4", "uint8": "u1", "uint16": "<u2"}[qtype]
            nbytes = np.dtype(dtype).itemsize * size
            if offset + nbytes > len(data):
                raise MetricUnavailable(f"face-api expression classifier unavailable because the weights of "
                                        f"{manifest_path.name} are truncated at {spec['name']}; {_FIX}")
            values = np.frombuffer(data, dtype, size, offset)
            values = values.astype(np.float32) if quant is None else dequantize(values, quant["scale"], quant["min"])
            out[spec["name"]] = values.reshape(shape)
            offset += nbytes
        if offset != len(data):
            raise MetricUnavailable(f"face-api expression classifier unavailable because {manifest_path.name}'s "
                                    f"shards hold {len(data) - offset} bytes more than its manifest; {_FIX}")
    return out


def tfjs_to_torch_state(weights: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """Map face-api's tensors to :class:`FaceExpressionNet`'s state dict.

    conv (kh, kw, in, out) -> (out, in, kh, kw); depthwise (kh, kw, in, 1) -> (in, 1, kh, kw);
    pointwise (1, 1, in, out) -> (out, in, 1, 1); fc (in, out) -> (out, in).
    """
    state: dict[str, np.ndarray] = {}
    try:
        for b in range(len(BLOCK_CHANNELS)):
            p = f"dense{b}"
            if b == 0:
                state[f"{p}.conv0.weight"] = weights[f"{p}/conv0/filters"].transpose(3, 2, 0, 1)
                state[f"{p}.conv0.bias"] = weights[f"{p}/conv0/bias"]
            for k in range(0 if b else 1, 4):
                state[f"{p}.conv{k}.depthwise.weight"] = weights[f"{p}/conv{k}/depthwise_filter"].transpose(2, 3, 0, 1)
                state[f"{p}.conv{k}.pointwise.weight"] = weights[f"{p}/conv{k}/pointwise_filter"].transpose(3, 2, 0, 1)
                state[f"{p}.conv{k}.pointwise.bias"] = weights[f"{p}/conv{k}/bias"]
        state["fc.weight"] = weights["fc/weights"].T
        state["fc.bias"] = weights["fc/bias"]
    except KeyError as exc:
        raise MetricUnavailable(f"face-api expression classifier unavailable because tensor {exc.args[0]} is "
                                f"missing from the manifest; use {MANIFEST} of face-api {FACEAPI_PACKAGE[1]}") from None
    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()}


def faceapi_manifest() -> Path:
    """The manifest inside the fetched npm package (fetched once into the cache)."""
    from ..assets import npm_package

    try:
        root = npm_package(*FACEAPI_PACKAGE)
    except DataError as exc:
        reason = str(exc).split(";")[0]
        raise MetricUnavailable(f"face-api expression classifier unavailable because {reason}; {_FIX}") from None
    return root / MANIFEST


def convert_faceapi_weights(manifest: str | os.PathLike | None = None,
                            out: str | os.PathLike | None = None) -> Path:
    """Dequantise the manifest + bin once and write the torch state dict atomically; returns its path."""
    from ..assets import cache_root
    from ..imageio import atomic_path

    manifest = Path(manifest) if manifest is not None else faceapi_manifest()
    out = Path(out) if out is not None else cache_root() / "weights" / FACEAPI_WEIGHTS_FILE
    state = tfjs_to_torch_state(read_tfjs_weights(manifest))
    with atomic_path(out) as tmp:
        torch.save(state, tmp)
    return out


def faceapi_weights_path(weights: str | os.PathLike | None = None) -> Path:
    """Converted weights: ``weights``, ``$REGGAN_FACEAPI_WEIGHTS``, or the cache (converted on first use).

    ``weights`` may also be a TF.js manifest (``.json``); it is then converted into the cache.
    """
    from ..assets import cache_root

    if weights is None:
        weights = os.environ.get(FACEAPI_ENV)
    if weights is not None:
        path = Path(weights)
        if not path.is_file():
            raise MetricUnavailable(f"face-api expression classifier unavailable because {path} does not exist; {_FIX}")
        if path.suffix == ".json":
            return convert_faceapi_weights(path)
        return path
    path = cache_root() / "weights" / FACEAPI_WEIGHTS_FILE
    return path if path.is_file() else convert_faceapi_weights()


# ---------------------------------------------------------------- the network

def _pad_same(x: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    """TF 'same' padding: total max((ceil(n/s) - 1) * s + k - n, 0), the odd pixel at the end."""
    h, w = x.shape[-2:]
    ph = max((math.ceil(h / stride) - 1) * stride + kernel - h, 0)
    pw = max((math.ceil(w / stride) - 1) * stride + kernel - w, 0)
    return F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))


class SeparableConv(nn.Module):
    """TF.js ``separableConv2d`` (depthwise 3x3, pointwise 1x1, 'same') + bias."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.stride = stride
        self.depthwise = nn.Conv2d(cin, cin, 3, stride, groups=cin, bias=False)
        self.pointwise = nn.Conv2d(cin, cout, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(_pad_same(x, 3, self.stride)))


class StemConv(nn.Conv2d):
    """The first block's plain 3x3/2 conv with TF 'same' padding."""

    def __init__(self, cin: int, cout: int):
        super().__init__(cin, cout, 3, 2, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(_pad_same(x, 3, 2))


class DenseBlock4(nn.Module):
    """face-api's ``denseBlock4``: four convs, each fed the (ReLU of the) sum of all before it."""

    def __init__(self, cin: int, cout: int, first: bool = False):
        super().__init__()
        self.conv0 = StemConv(cin, cout) if first else SeparableConv(cin, cout, 2)
        self.conv1 = SeparableConv(cout, cout, 1)
        self.conv2 = SeparableConv(cout, cout, 1)
        self.conv3 = SeparableConv(cout, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        o1 = F.relu(self.conv0(x))
        o2 = self.conv1(o1)
        o3 = self.conv2(F.relu(o1 + o2))
        o4 = self.conv3(F.relu(o1 + (o2 + o3)))
        return F.relu(o1 + (o2 + (o3 + o4)))   # same summation order as face-api


class FaceExpressionNet(nn.Module):
    """(N, 3, 112, 112) normalised RGB -> logits (N, 7) over :data:`FACEAPI_CLASSES`."""

    def __init__(self):
        super().__init__()
        chans = (3,) + BLOCK_CHANNELS
        for b in range(len(BLOCK_CHANNELS)):
            self.add_module(f"dense{b}", DenseBlock4(chans[b], chans[b + 1], first=b == 0))
        self.fc = nn.Linear(BLOCK_CHANNELS[-1], len(FACEAPI_CLASSES))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Bottleneck features (N, 256): the dense blocks and the 7x7/2 average pool."""
        for b in range(len(BLOCK_CHANNELS)):
            x = getattr(self, f"dense{b}")(x)
        return F.avg_pool2d(x, 7, 2).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


def load_faceapi_model(weights: str | os.PathLike | None = None) -> FaceExpressionNet:
    """The port with face-api's weights, in eval mode (never random weights)."""
    path = faceapi_weights_path(weights)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same one-line answer
        raise MetricUnavailable(f"face-api expression classifier unavailable because {path} is not a readable "
                                f"torch state dict ({exc.__class__.__name__}); delete it to reconvert") from None
    model = FaceExpressionNet()
    expected = model.state_dict()
    bad = [k for k in expected if k not in state or tuple(state[k].shape) != tuple(expected[k].shape)]
    if bad or len(state) != len(expected):
        first = bad[0] if bad else "extra tensors"
        raise MetricUnavailable(f"face-api expression classifier unavailable because {path} does not match the "
                                f"FaceExpressionNet layout (first mismatch: {first}); delete it to reconvert")
    model.load_state_dict(state)
    return model.eval()


# ---------------------------------------------------------------- preprocessing

def tf_resize_bilinear(img: np.ndarray, size: int) -> np.ndarray:
    """tfjs-backend-cpu ``resizeBilinear`` with alignCorners = halfPixelCenters = false.

    Source position ``dst * in / out``; floor/ceil neighbours (ceil clamped to the last
    pixel); ``top + (bottom - top) * rowFrac`` in float64, stored as float32, as in tfjs.
    ``img``: (H, W, C) -> float32 (size, size, C).
    """
    x = np.asarray(img, np.float64)
    h, w = x.shape[:2]

    def axis(n_in: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        src = (n_in / size) * np.arange(size, dtype=np.float64)
        lo = np.maximum(0, np.floor(src)).astype(np.int64)
        hi = np.minimum(n_in - 1, np.ceil(src)).astype(np.int64)
        return lo, hi, src - lo

    r0, r1, rf = axis(h)
    c0, c1, cf = axis(w)
    cf = cf[None, :, None]
    top = x[r0][:, c0] + (x[r0][:, c1] - x[r0][:, c0]) * cf
    bottom = x[r1][:, c0] + (x[r1][:, c1] - x[r1][:, c0]) * cf
    return (top + (bottom - top) * rf[:, None, None]).astype(np.float32)


def pad_to_square(img: np.ndarray) -> np.ndarray:
    """face-api's ``padToSquare(img, isCenterImage=true)``: zeros, round(diff / 2) after, the rest before."""
    h, w = img.shape[:2]
    if h == w:
        return img
    diff = abs(h - w)
    after = math.floor(diff * 0.5 + 0.5)   # JS Math.round
    before = diff - after
    pad = ((before, after), (0, 0), (0, 0)) if w > h else ((0, 0), (before, after), (0, 0))
    return np.pad(img, pad)


def to_faceapi_input(images, size: int = FACEAPI_INPUT_SIZE) -> np.ndarray:
    """RGB uint8 face crops -> float32 (N, 3, size, size), normalised as face-api does.

    Pad to a centred square, bilinear resize to size (TF legacy rule) unless already that
    size, then ``(x - mean_rgb) / 255`` in float32.
    """
    mean = np.asarray(FACEAPI_MEAN_RGB, np.float32)
    out = []
    for img in as_rgb_batch(images):
        sq = pad_to_square(img)
        x = sq.astype(np.float32) if sq.shape[0] == size else tf_resize_bilinear(sq, size)
        out.append((x - mean) / np.float32(255.0))
    x = np.asarray(out, np.float32).reshape(-1, size, size, 3)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


# ---------------------------------------------------------------- classifier API

class FaceApiClassifier:
    """face-api's expression net on RGB uint8 face crops (each image is the face box).

    ``predict`` -> probabilities (N, 7) over :data:`FACEAPI_CLASSES`; ``features`` -> (N, 256).
    """

    classes: tuple[str, ...] = FACEAPI_CLASSES
    name = "faceapi"

    def __init__(self, weights: str | os.PathLike | None = None, device: str = "cpu", batch_size: int = 128):
        self.model = load_faceapi_model(weights).to(device)
        self.device, self.batch_size = device, batch_size

    def _run(self, images, fn: str) -> np.ndarray:
        width = len(self.classes) if fn == "probs" else BLOCK_CHANNELS[-1]
        return run_batched(self.model, as_rgb_batch(images), to_faceapi_input, fn, self.batch_size, self.device,
                           width)

    def predict(self, images: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
        """Class probabilities (N, 7) for RGB uint8 images."""
        return self._run(images, "probs")

    def features(self, images: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
        """Penultimate (pooled bottleneck) features (N, 256) for RGB uint8 images."""
        return self._run(images, "features")
