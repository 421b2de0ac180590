"""Data layer: categories, CFEE layout, splits, alignment and every bad-input case."""
from __future__ import annotations

import csv
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from reggan_core import categories as C
from reggan_core.data import (ConditionalFaces, PairedFaces, index_dataset, load_face, load_splits,
                              make_splits, read_splits, subjects_in)
from reggan_core.errors import DataError, NoFaceError
from reggan_core.faces import TEMPLATE_5, align_face, five_points, similarity_transform
from reggan_core.imageio import load_image, save_image, to_tensor, to_uint8

EMBEDDED = Path(__file__).resolve().parent.parent / "datasets" / "embedded"


def _write(path: Path, arr: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


@pytest.fixture()
def tiny_root(tmp_path) -> Path:
    """Three subjects, random 128 px images, one subject without neutral."""
    rng = np.random.default_rng(0)
    for s in ("A", "B", "C"):
        for cat in ("neutral", "happy", "HS"):  # a short code is accepted too
            _write(tmp_path / s / f"{cat}.png", rng.integers(0, 255, (128, 128, 3), dtype=np.uint8))
    _write(tmp_path / "D" / "happy.png", rng.integers(0, 255, (128, 128, 3), dtype=np.uint8))
    return tmp_path


# -- categories -------------------------------------------------------------------------
def test_categories_follow_cfee():
    assert len(C.CATEGORIES) == 22
    assert [c.index for c in C.CATEGORIES] == list(range(22))
    assert len(C.BASIC_NAMES) == 6 and len(C.COMPOUND_NAMES) == 15
    assert len({c.code for c in C.CATEGORIES}) == 22
    # compound categories combine AUs of their components (PNAS 2014): e.g. happily surprised
    hs = C.get_category("happily surprised")
    assert {12, 25} <= set(hs.aus) and {1, 2} <= set(hs.aus)
    assert C.get_category("HS") is hs and C.get_category(7) is hs and C.get_category("Happily-Surprised") is hs


def test_unknown_category_lists_valid_ones():
    with pytest.raises(ValueError, match="unknown expression category 'joyful'.*happily_surprised"):
        C.get_category("joyful")


# -- images -----------------------------------------------------------------------------
def test_grayscale_and_rgba_are_converted(tmp_path):
    gray = _write(tmp_path / "g.png", np.full((80, 90), 100, np.uint8))
    out = load_image(gray)
    assert out.shape == (80, 90, 3) and (out == 100).all()
    rgba = np.zeros((70, 70, 4), np.uint8)
    rgba[..., 0] = 255
    rgba[:35, :, 3] = 255  # top half opaque red, bottom transparent
    out = load_image(_write(tmp_path / "a.png", rgba))
    assert out.shape == (70, 70, 3)
    assert tuple(out[0, 0]) == (255, 0, 0) and tuple(out[-1, -1]) == (255, 255, 255)


def test_corrupt_and_truncated_images_are_refused(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image at all")
    with pytest.raises(DataError, match=r"bad\.jpg is corrupt"):
        load_image(bad)
    good = _write(tmp_path / "t.png", np.zeros((100, 100, 3), np.uint8) + 7)
    data = good.read_bytes()
    trunc = tmp_path / "trunc.png"
    trunc.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"trunc\.png is corrupt or truncated"):
        load_image(trunc)


def test_tiny_image_is_refused(tmp_path):
    small = _write(tmp_path / "small.png", np.zeros((40, 100, 3), np.uint8))
    with pytest.raises(DataError, match=r"small\.png is 100x40 px, smaller than 64 px"):
        load_image(small)


def test_missing_image(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_image(tmp_path / "nope.png")


def test_tensor_round_trip():
    arr = np.random.default_rng(1).integers(0, 256, (16, 12, 3), dtype=np.uint8)
    t = to_tensor(arr)
    assert t.shape == (3, 16, 12) and float(t.min()) >= -1 and float(t.max()) <= 1
    assert (to_uint8(t) == arr).all()


def test_save_image_is_atomic(tmp_path, monkeypatch):
    target = tmp_path / "out.png"
    save_image(np.zeros((8, 8, 3), np.uint8), target)
    before = target.read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", boom)
    with pytest.raises(OSError):
        save_image(np.ones((8, 8, 3), np.uint8), target)
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.png"]  # no temporary left


# -- dataset layout ---------------------------------------------------------------------
def test_missing_and_empty_root(tmp_path):
    with pytest.raises(DataError, match="does not exist; pass the folder"):
        index_dataset(tmp_path / "missing")
    with pytest.raises(DataError, match="is empty"):
        index_dataset(tmp_path)


def test_unknown_category_file(tiny_root):
    _write(tiny_root / "A" / "joyful.png", np.zeros((128, 128, 3), np.uint8))
    with pytest.raises(DataError, match=r"joyful\.png is not named after a category; rename it to one of: neutral"):
        index_dataset(tiny_root)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert "joyful" not in str(index_dataset(tiny_root, strict=False).images["A"])


def test_subject_without_neutral_is_skipped_with_one_warning(tiny_root):
    with pytest.warns(UserWarning, match=r"1 subject\(s\) without a neutral image skipped: D") as rec:
        idx = index_dataset(tiny_root)
    assert len(rec) == 1
    assert idx.subjects == ["A", "B", "C"] and idx.skipped == ["D"]
    assert idx.categories() == ["neutral", "happy", "happily_surprised"]


def test_pairs_and_datasets(tiny_root):
    with pytest.warns(UserWarning):
        idx = index_dataset(tiny_root)
    pairs = idx.pairs("neutral", "happily_surprised")
    assert [p[0] for p in pairs] == ["A", "B", "C"]
    ds = PairedFaces(idx, "neutral", "happy", subjects=["B", "C"])
    x, y = ds.tensors()
    assert x.shape == (2, 3, 128, 128) and y.shape == (2, 3, 128, 128)
    assert np.array_equal(to_uint8(x[0]), load_image(tiny_root / "B" / "neutral.png"))
    with pytest.raises(DataError, match="no subject has both neutral and sad"):
        PairedFaces(idx, "neutral", "sad")
    cond = ConditionalFaces(idx)
    assert len(cond) == 6 and {item[3] for item in cond.items} == {1, 7}


def test_splits_are_subject_disjoint_and_reproducible(tmp_path):
    subjects = [f"S{i:03d}" for i in range(230)]
    a, b = make_splits(subjects, seed=3), make_splits(subjects, seed=3)
    assert a == b and make_splits(subjects, seed=4) != a
    counts = {s: sum(v == s for v in a.values()) for s in ("train", "val", "test")}
    assert counts == {"train": 184, "val": 23, "test": 23}
    assert len(set(subjects_in(a, "train")) & set(subjects_in(a, "test"))) == 0
    with pytest.raises(DataError, match="unknown split 'dev'"):
        subjects_in(a, "dev")
    with pytest.raises(DataError, match="must be three non-negative numbers"):
        make_splits(subjects, fractions=(0.5, 0.5, 0.5))


def test_splits_csv_is_written_once_and_reused(tiny_root):
    with pytest.warns(UserWarning):
        idx = index_dataset(tiny_root)
    splits = load_splits(idx, seed=0)
    path = tiny_root / "splits.csv"
    with open(path) as fh:
        rows = list(csv.DictReader(fh))
    assert {r["subject"]: r["split"] for r in rows} == splits
    # a different seed does not change the subjects once the file exists
    assert load_splits(idx, seed=99) == splits
    path.write_text("who,what\nA,x\n")
    with pytest.raises(DataError, match="malformed"):
        read_splits(path)


def test_embedded_dataset_is_complete():
    idx = index_dataset(EMBEDDED)
    assert len(idx.subjects) >= 40
    assert all(len(cats) == 22 for cats in idx.images.values())
    img = load_image(idx.images[idx.subjects[0]]["happy"])
    assert img.shape == (128, 128, 3)


# -- alignment --------------------------------------------------------------------------
def test_similarity_transform_recovers_known_transform():
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 100, (5, 2))
    ang, s, t = 0.3, 1.7, np.array([5.0, -3.0])
    rot = s * np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
    m = similarity_transform(src, src @ rot.T + t)
    assert np.allclose(m[:, :2], rot) and np.allclose(m[:, 2], t)


@pytest.mark.parametrize("which", ["astronaut", "hopper"])
def test_align_real_faces_puts_landmarks_on_template(which, request):
    img = request.getfixturevalue(which)
    crop, lm = align_face(img, return_landmarks=True)
    assert crop.shape == (128, 128, 3) and crop.dtype == np.uint8
    err = np.linalg.norm(five_points(lm) - TEMPLATE_5, axis=1)
    # a similarity cannot undo expression (the astronaut smiles): eyes land within 4 px,
    # all five points within 8 px on average
    assert err[:2].max() < 4.0 and err.mean() < 8.0
    # rotating the photo does not change where the eyes land
    import cv2

    h, w = img.shape[:2]
    rot = cv2.warpAffine(img, cv2.getRotationMatrix2D((w / 2, h / 2), 12, 1.0), (w, h), borderMode=cv2.BORDER_REFLECT)
    _, lm_rot = align_face(rot, return_landmarks=True)
    assert np.abs(five_points(lm_rot)[:2] - five_points(lm)[:2]).max() < 3.0


def test_no_face_names_the_file_and_the_option(tmp_path):
    flat = _write(tmp_path / "wall.png", np.full((200, 200, 3), 128, np.uint8))
    with pytest.raises(NoFaceError, match=r"no face found in .*wall\.png.*align=False"):
        load_face(flat)
    assert load_face(flat, align=False).shape == (128, 128, 3)


def test_aligned_crops_are_cached(tmp_path, astronaut, monkeypatch):
    path = _write(tmp_path / "astro.jpg", astronaut)
    first = load_face(path, cache_dir=tmp_path / "c")
    cached = list((tmp_path / "c" / "aligned").glob("*.png"))
    assert len(cached) == 1
    import reggan_core.faces as faces

    monkeypatch.setattr(faces, "align_face", lambda *a, **k: pytest.fail("cache not used"))
    assert np.array_equal(load_face(path, cache_dir=tmp_path / "c"), first)
