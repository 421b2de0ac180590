"""The explorer widget: set widget values, check what it shows against independent references.

References: a local linear map computed here with NumPy (np.pad + slicing, no unfold) from
the layer's weights, the dataset's own image files, ``align_face`` called directly,
scikit-learn's Ridge fitted at single pixels, and the metric functions called directly.
Images are shown as PNG in these tests so a displayed image can be compared exactly.
"""
from __future__ import annotations

import datetime
import html
import io
import math
import re
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.linear_model import Ridge

from reggan_core.data import index_dataset
from reggan_core.faces import align_face
from reggan_core.imageio import load_image, to_tensor, to_uint8
from reggan_core.regression import LocalRidge, RidgeConfig
from reggan_core.widgets import (UPLOAD_OPTION, Explorer, ExplorerConfig, GeneratorBackend, MetricScorer, RidgeBackend,
                                 decode_image, make_backend, pixel_weights, weight_map)

from conftest import EMBEDDED

SUBJECTS = ("S001", "S002", "S003", "S004", "S005")
CATS = ("neutral", "happy", "sad", "surprised")
PNG = ExplorerConfig(image_format="png", background_metrics=False)


@pytest.fixture(scope="module")
def small_root(tmp_path_factory):
    """Five subjects x four categories copied from the embedded dataset."""
    root = tmp_path_factory.mktemp("faces")
    for s in SUBJECTS:
        (root / s).mkdir()
        for c in CATS:
            shutil.copy(EMBEDDED / s / f"{c}.jpg", root / s / f"{c}.jpg")
    return root


def random_ridge(seed: int) -> LocalRidge:
    """A LocalRidge with random per-pixel weights (known, unlike a fitted one)."""
    g = torch.Generator().manual_seed(seed)
    layer = LocalRidge(RidgeConfig())
    with torch.no_grad():
        layer.weight.copy_(torch.randn(layer.weight.shape, generator=g) * 0.15 + 1 / 9)
        layer.bias.copy_(torch.randn(layer.bias.shape, generator=g) * 0.1)
    return layer


@pytest.fixture()
def explorer(small_root):
    index = index_dataset(small_root)
    layers = {"happy": random_ridge(1), "sad": random_ridge(2), "surprised": random_ridge(3)}
    backend = RidgeBackend(index, layers=layers, refined_note="unavailable: test backend")
    return Explorer(backend, dataset_root=small_root, scorer=None, target="happy", config=PNG)


def reference_map(x: np.ndarray, layer: LocalRidge) -> np.ndarray:
    """sum_k w[c, y, x, k] * xpad[c, y + dy_k, x + dx_k] + b[c, y, x], zero padding, in NumPy."""
    w = layer.weight.detach().double().numpy()
    b = layer.bias.detach().double().numpy()
    r = layer.config.r
    h, s = r // 2, x.shape[-1]
    xp = np.pad(x.astype(np.float64), ((0, 0), (h, h), (h, h)))
    out = b.copy()
    for k in range(r * r):
        dy, dx = divmod(k, r)
        out += w[..., k] * xp[:, dy:dy + s, dx:dx + s]
    return out


def expected_uint8(x: torch.Tensor, layer: LocalRidge, strength: float) -> np.ndarray:
    xn = x.numpy().astype(np.float64)
    y = xn + strength * (reference_map(xn, layer) - xn)
    return to_uint8(torch.from_numpy(y))


def shown(explorer: Explorer, column: str) -> np.ndarray:
    return decode_image(explorer.images[column].value)


def close_uint8(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal up to one grey level (float rounding at .5 boundaries)."""
    return a.shape == b.shape and int(np.abs(a.astype(int) - b.astype(int)).max()) <= 1


def test_input_and_real_target_are_the_dataset_files(explorer, small_root):
    subj = explorer.subject.value
    assert np.array_equal(shown(explorer, "input"), load_image(small_root / subj / "neutral.jpg"))
    assert np.array_equal(shown(explorer, "real target"), load_image(small_root / subj / "happy.jpg"))
    other = next(s for s in SUBJECTS if s != subj)
    explorer.subject.value = other
    assert np.array_equal(shown(explorer, "input"), load_image(small_root / other / "neutral.jpg"))
    explorer.target.value = "sad"
    assert np.array_equal(shown(explorer, "real target"), load_image(small_root / other / "sad.jpg"))


def test_regression_column_follows_target_and_strength(explorer):
    layers = explorer.backend.layers
    x = explorer.x
    before = shown(explorer, "regression")
    assert close_uint8(before, expected_uint8(x, layers["happy"], 1.0))

    explorer.target.value = "sad"
    after = shown(explorer, "regression")
    assert close_uint8(after, expected_uint8(x, layers["sad"], 1.0))
    assert np.abs(after.astype(int) - before.astype(int)).mean() > 5  # the image really changed

    explorer.strength.value = 0.5
    assert close_uint8(shown(explorer, "regression"), expected_uint8(x, layers["sad"], 0.5))
    explorer.strength.value = 0.0
    assert np.array_equal(shown(explorer, "regression"), shown(explorer, "input"))
    assert "updated:" in explorer.message


def test_refined_column_explains_why_it_is_empty(explorer):
    assert "unavailable: test backend" in explorer.metric_boxes["refined"].value
    img = shown(explorer, "refined")
    assert img.std() == 0  # flat placeholder, no made-up output


def test_picked_pixel_shows_its_weights_and_reproduces_the_output(explorer):
    explorer.target.value = "surprised"
    explorer.channel.value = "G"
    explorer.px.value, explorer.py.value = 40, 90
    w = explorer.backend.layers["surprised"].weight.detach().numpy()
    b = explorer.backend.layers["surprised"].bias.detach().numpy()
    table = [float(v) for v in re.findall(r">([+-]\d+\.\d{3})</td>", explorer.kernel_html.value)]
    np.testing.assert_allclose(table, w[1, 90, 40], atol=5e-4)  # r x r in row-major order
    assert f"bias {b[1, 90, 40]:+.3f}" in explorer.kernel_html.value

    kernel, bias, value = explorer.picked_kernel()
    ref = reference_map(explorer.x.numpy(), explorer.backend.layers["surprised"])[1, 90, 40]
    assert value == pytest.approx(ref, abs=1e-5)
    assert f"= {ref:+.3f}" in explorer.kernel_html.value
    # at strength 1 the ridge output there is the regression column's pixel
    assert explorer.outputs["regression"][1, 90, 40].item() == pytest.approx(max(-1.0, min(1.0, ref)), abs=1e-5)


def test_weight_map_and_marker(explorer):
    layer = explorer.backend.layers["happy"]
    w, b, r = pixel_weights(layer)
    gain = weight_map(w, b, "gain", "R")
    np.testing.assert_allclose(gain, layer.weight.detach().numpy()[0].sum(-1), rtol=1e-5)
    np.testing.assert_allclose(weight_map(w, b, "bias", "mean"), layer.bias.detach().numpy().mean(0), rtol=1e-5)
    np.testing.assert_allclose(weight_map(w, b, "centre", "B"), layer.weight.detach().numpy()[2, ..., 4])
    np.testing.assert_allclose(weight_map(w, b, "abs", "G"), np.abs(layer.weight.detach().numpy()[1]).sum(-1),
                               rtol=1e-5)

    explorer.px.value, explorer.py.value = 30, 50
    m = decode_image(explorer.map_image.value)
    assert m.shape == (128, 128, 3)
    assert tuple(m[50 - 2, 30]) == (255, 0, 0) and tuple(m[50, 30 + 2]) == (255, 0, 0)
    before = explorer.map_image.value
    explorer.map_kind.value = "bias"
    assert explorer.map_image.value != before
    assert "bias" in explorer.map_caption.value


def png_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def upload(explorer: Explorer, data: bytes, name: str) -> None:
    """What the browser sends: the FileUpload widget's value changes."""
    explorer.upload.value = ({"name": name, "type": "image/png", "size": len(data),
                              "content": memoryview(data),
                              "last_modified": datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)},)


def test_upload_is_aligned_and_translated(explorer, astronaut):
    upload(explorer, png_bytes(astronaut), "astronaut.png")
    assert explorer.subject.value == UPLOAD_OPTION
    crop = align_face(astronaut)
    assert np.array_equal(shown(explorer, "input"), crop)
    assert close_uint8(shown(explorer, "regression"),
                       expected_uint8(to_tensor(crop), explorer.backend.layers["happy"], 1.0))
    assert explorer.real is None and "only for dataset faces" in explorer.captions["real target"].value
    assert "astronaut.png" in explorer.message and "updated:" in explorer.message
    assert explorer.upload.value == ()  # the photo is not kept in the widget state


@pytest.mark.parametrize("name,data,fragment", [
    ("notes.png", b"this is not an image", "corrupt"),
    ("empty.png", b"", "empty"),
    ("tiny.png", png_bytes(np.zeros((12, 12, 3), np.uint8)), "smaller than"),
    ("noise.png", png_bytes(np.random.default_rng(0).integers(0, 255, (160, 160, 3), dtype=np.uint8)),
     "no face found"),
])
def test_bad_uploads_give_one_line_and_keep_the_face(explorer, name, data, fragment):
    before_x, before_subject = explorer.x.clone(), explorer.subject.value
    upload(explorer, data, name)
    assert fragment in explorer.message and name in explorer.message
    assert "\n" not in explorer.message and "Traceback" not in explorer.status.value
    assert "/tmp" not in explorer.message  # names the upload, not our temporary file
    assert explorer.subject.value == before_subject and torch.equal(explorer.x, before_x)


def test_model_errors_are_one_line(explorer):
    explorer.target.value = "angry"  # the test backend has no ridge for it and no data to fit one
    assert "\n" not in explorer.message and explorer.message
    assert shown(explorer, "regression").std() == 0  # blank, not the previous target's output
    explorer.target.value = "sad"
    assert "updated:" in explorer.message


def test_fallback_fits_neutral_to_target_ridge_on_training_subjects(small_root, tmp_path):
    """make_backend without a checkpoint: LocalRidge per target = sklearn Ridge at each pixel."""
    backend = make_backend(tmp_path / "missing.pt", small_root)
    assert isinstance(backend, RidgeBackend)
    assert f"no checkpoint at {tmp_path / 'missing.pt'}" in backend.refined_note
    layer = backend.ridge_layer("sad")
    assert len(backend.subjects) == 3  # 5 subjects -> 3 train, 1 val, 1 test
    xs = np.stack([to_tensor(load_image(small_root / s / "neutral.jpg")).double().numpy() for s in backend.subjects])
    ys = np.stack([to_tensor(load_image(small_root / s / "sad.jpg")).double().numpy() for s in backend.subjects])
    for c, y, x in [(0, 64, 64), (2, 100, 30), (1, 0, 127)]:
        patch = np.pad(xs[:, c], ((0, 0), (1, 1), (1, 1)))[:, y:y + 3, x:x + 3].reshape(len(xs), 9)
        design = np.c_[patch, np.ones(len(xs))]  # the bias is regularised too (Masked Regression)
        ref = Ridge(alpha=0.4, fit_intercept=False).fit(design, ys[:, c, y, x]).coef_
        np.testing.assert_allclose(layer.weight.detach().numpy()[c, y, x], ref[:9], atol=1e-5)
        assert layer.bias.detach().numpy()[c, y, x] == pytest.approx(ref[9], abs=1e-5)


class TinyGenerator(torch.nn.Module):
    """Stands in for a RegGAN: ridges per target + a 'refiner' that mirrors the regression."""

    def __init__(self):
        super().__init__()
        self.ridges = torch.nn.ModuleDict({"happy": random_ridge(5), "sad": random_ridge(6)})

    def translate(self, x, target, strength=1.0):
        reg = self.ridges[target](x)
        ref = torch.flip(reg, dims=[-1])
        return {k: (x + strength * (v - x)).clamp(-1, 1) for k, v in (("regression", reg), ("refined", ref))}


def test_generator_backend_shows_refined_output(small_root):
    gen = TinyGenerator()
    ex = Explorer(GeneratorBackend(gen), dataset_root=small_root, scorer=None, target="sad", config=PNG)
    out = gen.translate(ex.x[None], "sad")
    assert np.array_equal(shown(ex, "refined"), to_uint8(out["refined"][0]))
    assert np.array_equal(shown(ex, "regression"), to_uint8(out["regression"][0]))
    assert "refined (RegGAN)" in ex.captions["refined"].value
    ex.target.value = "happy"
    assert np.array_equal(shown(ex, "refined"), to_uint8(gen.translate(ex.x[None], "happy")["refined"][0]))
    ex.target.value = "surprised"  # not trained: one line in the status and in the weight panel
    assert "surprised" in ex.message and "\n" not in ex.message
    assert "no ridge layer for 'surprised'" in html.unescape(ex.kernel_html.value)


def test_metrics_under_each_output_match_the_metric_functions(small_root):
    """Displayed ECS/FSS = reggan_core.metrics.ecs / fss called directly (fresh classifier and embedder)."""
    from reggan_core.metrics.ecs import ecs
    from reggan_core.metrics.fss import fss

    gen = TinyGenerator()
    scorer = MetricScorer(classifier="fer")
    ex = Explorer(GeneratorBackend(gen), dataset_root=small_root, scorer=scorer, target="happy", config=PNG)
    for col in ("regression", "refined", "real target"):
        img = (ex.real if col == "real target" else ex.outputs[col])[None]
        e, f = ecs(img, ["happy"], classifier="fer"), fss(ex.x[None], img)
        assert ex.scores[col]["ecs"] == e["ecs"] and ex.scores[col]["p"] == pytest.approx(e["mean_target_prob"])
        assert ex.scores[col]["fss"] == pytest.approx(f["fss"], abs=1e-9)
        assert f"ECS {e['ecs']:.0f} (p {e['mean_target_prob']:.2f}" in ex.metric_boxes[col].value
        assert f"FSS {f['fss']:.2f}" in ex.metric_boxes[col].value
    assert "ECS/FSS in" in ex.message
    ex.strength.value = 0.0  # outputs = input: identical embeddings
    assert ex.scores["regression"]["fss"] == pytest.approx(1.0, abs=1e-9) and ex.scores["regression"]["same"]
    ex.target.value = "sad"  # FER has a sad class; the real target changes too
    assert ex.scores["real target"]["fss"] == pytest.approx(
        fss(ex.x[None], ex.real[None])["fss"], abs=1e-9)
    ex.live_metrics.value = False
    assert ex.scores == {} and ex.metric_boxes["regression"].value == ""


def test_compound_target_with_fer_is_not_scored(small_root):
    gen = TinyGenerator()
    gen.ridges["sadly_fearful"] = random_ridge(7)
    ex = Explorer(GeneratorBackend(gen), dataset_root=small_root, scorer=MetricScorer(classifier="fer"),
                  target="sadly_fearful", config=PNG)
    assert math.isnan(ex.scores["regression"]["ecs"]) and "ECS n/a" in ex.metric_boxes["regression"].value
    assert math.isfinite(ex.scores["regression"]["fss"])


def test_background_metrics_arrive_and_stale_ones_are_dropped(small_root):
    """Default mode: images first, ECS/FSS from a worker thread; only the newest update's scores show."""
    from reggan_core.metrics.fss import fss

    gen = TinyGenerator()
    ex = Explorer(GeneratorBackend(gen), dataset_root=small_root, scorer=MetricScorer(classifier="fer"),
                  target="happy", config=ExplorerConfig(image_format="png"))
    for s in (0.25, 0.5, 0.75):  # quick succession: earlier jobs are superseded
        ex.strength.value = s
    ex.wait()
    assert ex.strength.value == 0.75 and "ECS/FSS in" in ex.message
    ref = fss(ex.x[None], ex.outputs["regression"][None])["fss"]
    assert ex.scores["regression"]["fss"] == pytest.approx(ref, abs=1e-9)
    assert f"FSS {ref:.2f}" in ex.metric_boxes["regression"].value


def test_saved_reggan_checkpoint_drives_the_explorer(small_root, tmp_path):
    """A real RegGAN (random weights) saved and loaded through make_backend, as notebook 07 does."""
    from reggan_core.config import RefinerConfig
    from reggan_core.model import RegGAN, save_generator

    torch.manual_seed(0)
    model = RegGAN(["happy", "sad"], refiner=RefinerConfig(ngf=8))
    with torch.no_grad():
        for name, seed in (("happy", 11), ("sad", 12)):
            model.ridges[name].load_state_dict(random_ridge(seed).state_dict())
    path = save_generator(model, tmp_path / "tiny.pt", dtype="float32", pack=False)
    backend = make_backend(path, small_root)
    assert isinstance(backend, GeneratorBackend) and backend.refined_note is None
    ex = Explorer(backend, dataset_root=small_root, scorer=None, target="sad", config=PNG)
    ref = model.eval().translate(ex.x, "sad", strength=1.0)
    assert close_uint8(shown(ex, "refined"), to_uint8(ref["refined"]))
    assert close_uint8(shown(ex, "regression"), expected_uint8(ex.x, model.ridges["sad"], 1.0))
    ex.strength.value = 0.5
    ref = model.translate(ex.x, "sad", strength=0.5)
    assert close_uint8(shown(ex, "refined"), to_uint8(ref["refined"]))
    w = model.ridges["sad"].weight.detach().numpy()
    ex.px.value, ex.py.value, ex.channel.value = 64, 80, "B"
    table = [float(v) for v in re.findall(r">([+-]\d+\.\d{3})</td>", ex.kernel_html.value)]
    np.testing.assert_allclose(table, w[2, 80, 64], atol=5e-4)
    ex.target.value = "neutral"  # not a target of this model: one line, blank outputs
    assert "no model for 'neutral'" in ex.message and shown(ex, "refined").std() == 0


def test_uploaded_face_option_without_upload_is_one_line(explorer):
    before = explorer.x.clone()
    explorer.subject.value = UPLOAD_OPTION
    assert explorer.message == "no face uploaded yet: use the upload button"
    assert torch.equal(explorer.x, before)


def test_raw_photo_dataset_is_aligned_with_align_true(tmp_path, astronaut, hopper):
    """A CFEE-like copy with raw photos: align=True aligns every face like the data layer."""
    for subj, photo in (("A", astronaut), ("B", hopper)):
        (tmp_path / subj).mkdir()
        for cat in ("neutral", "happy"):
            Image.fromarray(photo).save(tmp_path / subj / f"{cat}.png")
    layers = {"happy": random_ridge(9)}
    backend = RidgeBackend(index_dataset(tmp_path), layers=layers, align=True)
    ex = Explorer(backend, dataset_root=tmp_path, subject="B", scorer=None, align=True, config=PNG)
    crop = align_face(hopper)
    assert np.array_equal(shown(ex, "input"), crop) and np.array_equal(shown(ex, "real target"), crop)
    assert close_uint8(shown(ex, "regression"), expected_uint8(to_tensor(crop), layers["happy"], 1.0))


def test_synthesised_dataset_target_is_not_called_real(small_root, tmp_path):
    """A dataset's manifest.csv (v2 writes one) saying a target was synthesised changes the caption."""
    root = tmp_path / "faces"
    shutil.copytree(small_root, root)
    (root / "manifest.csv").write_text("subject,split,sources,category,method,frame,aus\n"
                                       "S001,test,S001,neutral,identity,,\n"
                                       "S001,test,S001,happy,AU synthesis,,6:1.0 12:2.0\n"
                                       "S002,test,S002,happy,real frame,clip.mp4:10,\n")
    index = index_dataset(root)
    backend = RidgeBackend(index, layers={"happy": random_ridge(1)}, refined_note="unavailable: test backend")
    ex = Explorer(backend, dataset_root=root, scorer=None, subject="S001", target="happy", config=PNG)
    caption = ex.captions["real target"].value
    assert ex.real is not None and "synthesised" in caption and "real target" not in caption
    ex.subject.value = "S002"
    assert "real target (happy" in ex.captions["real target"].value.lower()
    ex.subject.value = "S003"  # not in the manifest: a photograph, as in v1 / CFEE
    assert "real target" in ex.captions["real target"].value
