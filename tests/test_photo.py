"""Photo in, photo out (reggan_core.photo, generate's default output, the explorer's photo view).

References are independent of the code under test: cv2.warpAffine called here with the
face's matrix (forward and border modes), masks recomputed from the public ``face_mask``,
the crop CLI output rebuilt from ``align_face`` + ``RegGAN.translate``, and a hard-edged
paste as the counter-example for the seam test.
"""
from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image

from reggan_core.faces import align_face
from reggan_core.imageio import load_image, to_uint8
from reggan_core.photo import AlignedFace, align_faces, face_mask, paste_back, translate_photo, warp_back, zoom_box

from conftest import REPO
from test_reliability import one_line
from test_widgets import explorer, png_bytes, small_root, upload  # noqa: F401  (fixtures)

CHECKPOINT = REPO / "checkpoints" / "reggan_embedded.pt"
needs_checkpoint = pytest.mark.skipif(not CHECKPOINT.is_file(), reason="checkpoints/reggan_embedded.pt missing")


class Identity:
    """A 'model' returning its input: photo-out must leave the photo as it was."""

    size = 128

    def translate(self, x, target, strength=1.0):
        return {"refined": x.copy(), "regression": x.copy()}


class Brighten:
    """A 'model' that adds a constant to every pixel: its change is visible wherever it is pasted."""

    size = 128

    def __init__(self, amount: int = 60):
        self.amount = amount

    def translate(self, x, target, strength=1.0):
        y = np.clip(x.astype(int) + self.amount, 0, 255).astype(np.uint8)
        return {"refined": y, "regression": y}


@pytest.fixture(scope="module")
def model():
    from reggan_core.model import load_generator

    if not CHECKPOINT.is_file():
        pytest.skip("checkpoints/reggan_embedded.pt missing")
    return load_generator(CHECKPOINT)


@pytest.fixture(scope="module")
def astro_face(astronaut) -> AlignedFace:
    return align_faces(astronaut)[0]


def footprint(face: AlignedFace, shape) -> np.ndarray:
    """Photo pixels that the crop covers: cv2's inverse warp of a ones image (independent of photo.py's ROI)."""
    ones = np.ones((face.size, face.size), np.float32)
    return cv2.warpAffine(ones, face.matrix, (shape[1], shape[0]), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0) > 0


def two_faces(astronaut, hopper) -> np.ndarray:
    """A group photo: two packaged face photos side by side, same height."""
    h = astronaut.shape[0]
    w = round(hopper.shape[1] * h / hopper.shape[0])
    right = np.asarray(Image.fromarray(hopper).resize((w, h), Image.BICUBIC))
    return np.ascontiguousarray(np.concatenate([astronaut, right], axis=1))


# ---------------------------------------------------------------- alignment with matrix and landmarks

def test_aligned_face_matches_align_face(astronaut, astro_face):
    crop, lm_crop = align_face(astronaut, return_landmarks=True)
    assert np.allclose(astro_face.crop_landmarks, lm_crop)
    # the matrix is the one that cuts the crop: cv2 forward warp with it reproduces the crop
    ref = cv2.warpAffine(astronaut, astro_face.matrix, (128, 128), flags=cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_REFLECT_101)
    assert np.array_equal(astro_face.crop, ref)
    x0, y0, x1, y1 = astro_face.box
    inside = (astro_face.landmarks[:, 0] >= x0 - 20) & (astro_face.landmarks[:, 0] <= x1 + 20)
    assert inside.mean() > 0.9   # landmarks are in photo coordinates, around the detector box


def test_inverse_warp_round_trip(astronaut, astro_face):
    """A crop warped back into the photo and re-aligned with cv2 matches the crop (interpolation error)."""
    crop = astro_face.crop.astype(np.float32)
    back = warp_back(crop, astro_face, astronaut.shape)
    assert back.shape == astronaut.shape
    again = cv2.warpAffine(back, astro_face.matrix, (128, 128), flags=cv2.INTER_LINEAR)
    inner = (slice(4, -4), slice(4, -4))
    err = np.abs(again[inner] - crop[inner])
    assert err.mean() < 1.5 and np.percentile(err, 99) < 12, (err.mean(), np.percentile(err, 99))
    # and a wrong inverse (the forward matrix used as if it mapped crop -> photo) does not round-trip
    wrong = cv2.warpAffine(crop, astro_face.matrix, (astronaut.shape[1], astronaut.shape[0]))
    bad = cv2.warpAffine(wrong, astro_face.matrix, (128, 128))
    assert np.abs(bad[inner] - crop[inner]).mean() > 10


def test_big_photo_faces_map_to_full_resolution(astronaut):
    big = cv2.resize(astronaut, (2048, 2048), interpolation=cv2.INTER_CUBIC)   # detection runs on a copy
    face_big, face = align_faces(big)[0], align_faces(astronaut)[0]
    assert np.abs(face_big.landmarks / 4 - face.landmarks).max() < 3.0
    assert np.abs(face_big.crop.astype(float) - face.crop).mean() < 6.0


# ---------------------------------------------------------------- paste-back

def test_pixels_outside_the_mask_are_bitwise_unchanged(astronaut, astro_face):
    rng = np.random.default_rng(0)
    out = rng.integers(0, 256, astro_face.crop.shape, dtype=np.uint8)          # any model output
    result = paste_back(astronaut, out, astro_face.crop, astro_face)
    mask = face_mask(astro_face, astronaut.shape)
    assert result.shape == astronaut.shape and result.dtype == np.uint8
    assert np.array_equal(result[mask == 0], astronaut[mask == 0])
    outside = ~footprint(astro_face, astronaut.shape)
    assert outside.any() and np.array_equal(result[outside], astronaut[outside])
    assert (result[mask > 0.99] != astronaut[mask > 0.99]).mean() > 0.9      # the face itself did change
    assert (mask == 0).mean() > 0.5 and (mask == 1).sum() > 1000             # a face-sized mask


def test_identity_model_leaves_the_photo_unchanged(astronaut):
    out, faces = translate_photo(Identity(), astronaut, "happy")
    assert len(faces) == 1 and np.array_equal(out, astronaut)                 # delta mode: bitwise
    face = faces[0]
    replaced = paste_back(astronaut, face.crop, face.crop, face, mode="replace")
    diff = np.abs(replaced.astype(int) - astronaut)
    assert diff.mean() < 1.0 and np.percentile(diff, 99.9) < 40               # a resampled crop: nearly


def _edge_vs_inside(change: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    """99th percentile of |gradient of the change| on the mask edge band and inside the mask."""
    g = change.astype(np.float64).mean(2)
    grad = np.hypot(*np.gradient(g))
    edge = (mask > 0.02) & (mask < 0.98)
    inside = mask >= 0.999
    return float(np.percentile(grad[edge], 99)), float(np.percentile(grad[inside], 99))


def _max_step(change: np.ndarray) -> float:
    """Largest difference between neighbouring pixels (right or down) of a change image."""
    g = change.astype(np.float64).mean(2)
    return float(max(np.abs(np.diff(g, axis=0)).max(), np.abs(np.diff(g, axis=1)).max()))


def test_no_seam_at_the_mask_edge(astronaut):
    """A 40-level offset over the whole crop (the worst case: a colour shift) fades out over many
    pixels; the same offset pasted with a hard-edged mask jumps by 40 in one pixel."""
    photo = np.round(astronaut * 0.7 + 20).astype(np.uint8)                # no clipping at 0 or 255
    (face,) = align_faces(photo)
    out = (face.crop.astype(int) + 40).astype(np.uint8)
    result = paste_back(photo, out, face.crop, face)
    mask = face_mask(face, photo.shape)
    change = result.astype(int) - photo
    assert np.abs(change[mask > 0.999] - 40).max() <= 1                      # the full offset inside
    smooth = _max_step(change)
    assert smooth <= 0.15 * 40, smooth
    hard = (mask > 0.5)[..., None]
    up = warp_back(out.astype(np.float32) - face.crop, face, photo.shape)
    seam = np.round(photo + hard * up) - photo
    assert _max_step(seam) >= 30                                                 # the counter-example is seen


@needs_checkpoint
def test_real_model_changes_the_face_without_colour_shift(model, astronaut):
    out, (face,) = translate_photo(model, astronaut, "happy")
    mask = face_mask(face, astronaut.shape)
    assert np.array_equal(out[mask == 0], astronaut[mask == 0])
    change = np.abs(out.astype(int) - astronaut)[mask > 0.9]
    assert change.mean() > 2                                                 # the model did something
    edge, inside = _edge_vs_inside(out.astype(int) - astronaut, mask)
    assert edge <= inside, (edge, inside)


# ---------------------------------------------------------------- reflection padding

def test_tight_crop_gets_reflection_not_streaks(astronaut, astro_face):
    x0, y0, x1, y1 = astro_face.box
    tight = np.ascontiguousarray(astronaut[max(y0 - 5, 0):y1 + 15, x0 - 10:x1 + 10])   # the face fills the photo
    face = align_faces(tight)[0]
    replicate = cv2.warpAffine(tight, face.matrix, (128, 128), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    reflect = cv2.warpAffine(tight, face.matrix, (128, 128), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    assert np.array_equal(face.crop, reflect)
    covered = cv2.warpAffine(np.ones(tight.shape[:2], np.float32), face.matrix, (128, 128),
                             flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    rows = [r for r in range(127) if covered[r].max() == 0 and covered[r + 1].max() == 0][:8]
    assert len(rows) >= 4, "the test photo must leave the crop's top rows outside the photo"

    def row_change(c: np.ndarray) -> float:        # streaks: each row repeats the one above
        c = c.astype(np.float64)
        return float(np.mean([np.abs(c[r + 1] - c[r]).mean() for r in rows]))

    def col_change(c: np.ndarray) -> float:
        return float(np.abs(np.diff(c[rows].astype(np.float64), axis=1)).mean())

    assert row_change(replicate) < 0.2 * col_change(replicate)             # BORDER_REPLICATE: streaks
    assert row_change(face.crop) > 5 * row_change(replicate)
    assert row_change(face.crop) > 0.5 * col_change(face.crop)             # texture both ways, no streaks
    # align_face keeps its replicated default (datasets and metrics), reflect on request
    assert np.array_equal(align_face(tight), replicate)
    assert np.array_equal(align_face(tight, border="reflect"), reflect)


# ---------------------------------------------------------------- several faces, grey and RGBA

def test_all_faces_changes_both_faces(astronaut, hopper):
    group = two_faces(astronaut, hopper)
    w = astronaut.shape[1]
    one, (largest,) = translate_photo(Brighten(), group, "happy")
    both, faces = translate_photo(Brighten(), group, "happy", all_faces=True)
    assert len(faces) == 2
    sides = sorted(f.landmarks[:, 0].mean() < w for f in faces)
    assert sides == [False, True]                                           # one face on each side
    changed = lambda img, sl: (np.abs(img[:, sl].astype(int) - group[:, sl]).max(2) > 20).sum()  # noqa: E731
    left, right = slice(0, w), slice(w, None)
    assert changed(both, left) > 2000 and changed(both, right) > 2000
    big_side, other = (left, right) if largest.landmarks[:, 0].mean() < w else (right, left)
    assert changed(one, big_side) > 2000 and changed(one, other) == 0


def test_grey_and_rgba_photos(astronaut):
    grey = cv2.cvtColor(astronaut, cv2.COLOR_RGB2GRAY)
    out, (face,) = translate_photo(Brighten(), grey, "happy")
    mask = face_mask(face, grey.shape)
    assert out.shape == grey.shape and out.dtype == np.uint8
    assert np.array_equal(out[mask == 0], grey[mask == 0]) and (out[mask > 0.99] > grey[mask > 0.99]).mean() > 0.9
    rgba = np.dstack([astronaut, np.full(astronaut.shape[:2], 255, np.uint8)])
    rgba[:40, :, 3] = 0                                                      # a transparent strip, away from the face
    out, (face,) = translate_photo(Brighten(), rgba, "happy")
    mask = face_mask(face, rgba.shape)
    assert out.shape == rgba.shape and np.array_equal(out[..., 3], rgba[..., 3])
    assert np.array_equal(out[mask == 0], rgba[mask == 0])
    assert (out[mask > 0.99, :3] > rgba[mask > 0.99, :3]).mean() > 0.9


# ---------------------------------------------------------------- the CLI

@needs_checkpoint
def test_zoom_box_grows_clips_and_keeps_squares_inside():
    # a 40x60 box in a 200x300 (h x w) photo, margin 0.5 = 30 px on every side (45 up with top_margin 1.5)
    assert zoom_box((100, 50, 140, 110), (200, 300), 0.5, top_margin=1.5) == (70, 5, 170, 140)
    assert zoom_box((5, 5, 45, 65), (200, 300), 0.5) == (0, 0, 75, 95)           # clipped at the top-left
    left, top, right, bottom = zoom_box((5, 150, 45, 190), (200, 300), 0.5, square=True)
    assert right - left == bottom - top == 80                                    # 40 + 2 x 0.5 x 40
    assert (left, bottom) == (0, 200)                                            # shifted inside, not cut
    assert zoom_box((0, 0, 300, 200), (200, 300), 0.5, square=True) == (50, 0, 250, 200)  # side <= photo


def test_cli_photo_out_crop_and_all_faces(tmp_path, model, astronaut, hopper, capsys):
    from reggan_core.generate import main as generate_main

    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(astronaut).save(folder / "astro.png")
    Image.fromarray(two_faces(astronaut, hopper)).save(folder / "group.png")
    Image.fromarray(cv2.cvtColor(astronaut, cv2.COLOR_RGB2GRAY)).save(folder / "grey.png")
    Image.fromarray(np.dstack([astronaut, np.full(astronaut.shape[:2], 200, np.uint8)])).save(folder / "rgba.png")
    args = ["--checkpoint", str(CHECKPOINT), "--input", str(folder), "--target", "happy"]
    assert generate_main([*args, "--out", str(tmp_path / "photo")]) == 0
    assert generate_main([*args, "--out", str(tmp_path / "crop"), "--crop"]) == 0
    assert generate_main([*args, "--out", str(tmp_path / "all"), "--all-faces"]) == 0
    read = lambda p: np.asarray(Image.open(p))  # noqa: E731

    # --crop: what generate wrote before photo-out - align_face's crop through the model
    for stem in ("astro", "grey", "rgba"):
        img = load_image(folder / f"{stem}.png")
        expected = model.translate(align_face(img), "happy")["refined"]
        assert np.array_equal(read(tmp_path / "crop" / f"{stem}_happy.png"), expected)
    # default: the photo at its own resolution, the face changed, the rest untouched
    for stem in ("astro", "grey", "rgba", "group"):
        img = load_image(folder / f"{stem}.png")
        out = read(tmp_path / "photo" / f"{stem}_happy.png")
        assert out.shape == img.shape
        (face,) = align_faces(img)
        mask = face_mask(face, img.shape)
        assert np.array_equal(out[mask == 0], img[mask == 0]) and np.abs(out.astype(int) - img)[mask > 0.9].mean() > 1
    # --all-faces: both faces of the group photo change
    group = load_image(folder / "group.png")
    w = astronaut.shape[1]
    one = np.abs(read(tmp_path / "photo" / "group_happy.png").astype(int) - group).max(2) > 10
    both = np.abs(read(tmp_path / "all" / "group_happy.png").astype(int) - group).max(2) > 10
    assert both[:, :w].sum() > 500 and both[:, w:].sum() > 500
    assert min(one[:, :w].sum(), one[:, w:].sum()) == 0

    capsys.readouterr()
    code = generate_main([*args, "--out", str(tmp_path / "x"), "--all-faces", "--crop"])
    err = capsys.readouterr().err
    assert code == 2 and "--all-faces" in err and "--crop" in err and not (tmp_path / "x").exists()
    one_line(err)


@needs_checkpoint
def test_cli_no_face_in_a_photo_is_skipped(tmp_path, capsys):
    from reggan_core.generate import main as generate_main

    noise = np.random.default_rng(0).integers(0, 255, (160, 160, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "noise.png")
    code = generate_main(["--checkpoint", str(CHECKPOINT), "--input", str(tmp_path / "noise.png"), "--target",
                          "happy", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 1 and "noise.png" in err and "no face" in err


# ---------------------------------------------------------------- the explorer

def test_explorer_shows_and_returns_photo_out(explorer, astronaut):  # noqa: F811
    assert explorer.photo_box.layout.display == "none" and explorer.photo_result() is None   # a dataset face
    upload(explorer, png_bytes(astronaut), "astronaut.png")
    assert explorer.photo_box.layout.display != "none"
    full = explorer.photo_result()
    assert full.shape == astronaut.shape
    face = explorer.upload_aligned
    expected = paste_back(astronaut, to_uint8(explorer.outputs["regression"]), face.crop, face)  # ridge backend
    assert np.array_equal(full, expected)
    mask = face_mask(face, astronaut.shape)
    assert np.array_equal(full[mask == 0], astronaut[mask == 0]) and (full != astronaut).any()
    from reggan_core.widgets import decode_image

    view = decode_image(explorer.photo_image.value)                         # a downscaled copy, same picture
    small = cv2.resize(full, (view.shape[1], view.shape[0]), interpolation=cv2.INTER_AREA)
    assert max(view.shape[:2]) <= 480 and np.abs(view.astype(int) - small).mean() < 3
    explorer.strength.value = 0.0                                           # strength 0: the photo itself
    assert np.array_equal(explorer.photo_result(), astronaut)
    explorer.subject.value = explorer.index.subjects[0]
    assert explorer.photo_box.layout.display == "none" and explorer.photo_result() is None
