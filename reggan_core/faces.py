"""Face detection, 68-point landmarks and alignment to the canonical 128x128 crop.

Uses dlib's HOG detector and its 68-point shape predictor, whose model files ship in the
``face-recognition-models`` wheel (read from the package folder; its ``__init__`` imports
``pkg_resources``, so the folder is found with ``importlib.util.find_spec`` instead).
The 68-point model's own licence forbids commercial use: see the README.

Alignment: a similarity transform (rotation, uniform scale, translation) fitted by least
squares (Umeyama 1991) maps five landmarks - the two eye centres, the nose tip and the
mouth corners - onto a fixed template, so every face has its eyes at the same place.

Large photos are searched on a copy whose long side is at most :data:`DETECT_MAX_SIDE`
(1024 px), so a 4000x3000 photo costs about what a 1000 px one does; the landmarks found
there are mapped back to full-resolution coordinates and the crop is cut from the full image
(area-filtered first when the face is shrunk by more than 2x, against aliasing).
"""
from __future__ import annotations

import importlib.util
import os
from functools import lru_cache
from pathlib import Path

import numpy as np

from .errors import DataError, NoFaceError

CROP_SIZE = 128
# Template for a 128x128 crop: eye centres, nose tip, mouth corners (x, y). The face
# (brows to chin) fills about 85% of the crop, as in the tight CFEE crops the paper uses.
TEMPLATE_5 = np.array(
    [[46.0, 54.0], [82.0, 54.0], [64.0, 75.0], [50.0, 93.0], [78.0, 93.0]], dtype=np.float64
)
# dlib 68-point indices (image-left eye first)
LEFT_EYE = list(range(36, 42))
RIGHT_EYE = list(range(42, 48))
NOSE_TIP = 30
MOUTH_LEFT, MOUTH_RIGHT = 48, 54
DETECT_MAX_SIDE = 1024  # long side of the copy that faces are searched in (bounds time and memory)
# With all faces wanted, a face besides the largest is kept only when dlib's detection score reaches
# this: scikit-image's astronaut photo has a false "face" (the mission patch) at 0.12, while the
# faces of the packaged group photos score 0.4 and more.
EXTRA_FACE_MIN_SCORE = 0.3


def models_dir() -> Path:
    """Folder of the dlib model files shipped by ``face-recognition-models``."""
    env = os.environ.get("REGGAN_DLIB_MODELS")
    if env:
        return Path(env)
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            "dlib model files not found; install them with `pip install face-recognition-models==0.3.0`"
        )
    return Path(list(spec.submodule_search_locations)[0]) / "models"


def model_path(name: str) -> Path:
    """Path of one dlib model file, with a one-line error when it is missing."""
    path = models_dir() / name
    if not path.is_file():
        raise DataError(f"dlib model {path} is missing; reinstall face-recognition-models==0.3.0")
    return path


@lru_cache(maxsize=1)
def _detector():
    import dlib

    return dlib.get_frontal_face_detector()


@lru_cache(maxsize=1)
def _predictor():
    import dlib

    return dlib.shape_predictor(str(model_path("shape_predictor_68_face_landmarks.dat")))


def detect_faces(img: np.ndarray, upsample: int = 1) -> list[tuple[int, int, int, int]]:
    """Face boxes (left, top, right, bottom) from dlib's HOG detector, largest first."""
    rects = _detector()(np.ascontiguousarray(img), upsample)
    boxes = [(r.left(), r.top(), r.right(), r.bottom()) for r in rects]
    return sorted(boxes, key=lambda b: -(b[2] - b[0]) * (b[3] - b[1]))


def detect_faces_scored(img: np.ndarray, upsample: int = 1) -> list[tuple[tuple[int, int, int, int], float]]:
    """(box, dlib detection score) of every face, largest box first."""
    rects, scores, _ = _detector().run(np.ascontiguousarray(img), upsample, 0.0)
    found = [((r.left(), r.top(), r.right(), r.bottom()), float(sc)) for r, sc in zip(rects, scores)]
    return sorted(found, key=lambda f: -(f[0][2] - f[0][0]) * (f[0][3] - f[0][1]))


def landmarks68(img: np.ndarray, box: tuple[int, int, int, int] | None = None,
                upsample: int = 1) -> np.ndarray:
    """68 landmarks (x, y) of the largest face, or of the face in ``box``."""
    import dlib

    if box is None:
        boxes = detect_faces(img, upsample)
        if not boxes:
            raise NoFaceError("no face found")
        box = boxes[0]
    shape = _predictor()(np.ascontiguousarray(img), dlib.rectangle(*[int(v) for v in box]))
    return np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float64)


def five_points(lm68: np.ndarray) -> np.ndarray:
    """Eye centres, nose tip and mouth corners from 68 landmarks."""
    return np.stack([
        lm68[LEFT_EYE].mean(0), lm68[RIGHT_EYE].mean(0), lm68[NOSE_TIP],
        lm68[MOUTH_LEFT], lm68[MOUTH_RIGHT],
    ])


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """2x3 matrix M of the least-squares similarity with dst ~ M @ [src, 1] (Umeyama 1991)."""
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    cov = d.T @ s / len(src)
    u, sig, vt = np.linalg.svd(cov)
    fix = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        fix[1, 1] = -1
    rot = u @ fix @ vt
    scale = np.trace(np.diag(sig) @ fix) / s.var(0).sum()
    m = np.zeros((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = mu_d - m[:, :2] @ mu_s
    return m


BORDERS = ("replicate", "reflect")


def _border_flag(border: str) -> int:
    """cv2 border mode for ``border``: "replicate" (edge pixels repeated) or "reflect" (BORDER_REFLECT_101)."""
    import cv2

    if border == "replicate":
        return cv2.BORDER_REPLICATE
    if border == "reflect":
        return cv2.BORDER_REFLECT_101
    raise DataError(f"unknown border {border!r}; use one of {', '.join(BORDERS)}")


def warp_to_crop(img: np.ndarray, matrix: np.ndarray, size: int = CROP_SIZE, border: str = "replicate") -> np.ndarray:
    """Apply a 2x3 transform into a size x size crop (bilinear; border "replicate" or "reflect")."""
    import cv2

    return cv2.warpAffine(np.ascontiguousarray(img), matrix, (size, size),
                          flags=cv2.INTER_LINEAR, borderMode=_border_flag(border))


def _shrink(img: np.ndarray, factor: float) -> np.ndarray:
    """Area-filtered resize by ``factor`` < 1 (cv2.INTER_AREA)."""
    import cv2

    h, w = img.shape[:2]
    return cv2.resize(np.ascontiguousarray(img), (max(1, round(w * factor)), max(1, round(h * factor))),
                      interpolation=cv2.INTER_AREA)


def _find_faces(img: np.ndarray, upsample: int, name: str,
                all_faces: bool = False) -> list[tuple[np.ndarray, tuple[int, int, int, int]]]:
    """(68 landmarks, box) of the largest face, or of every face (largest first).

    Every face: the largest, and the others whose detection score reaches
    :data:`EXTRA_FACE_MIN_SCORE` (drops weak false detections).

    When nothing is found, one retry on a padded, upscaled copy for small or tightly cropped
    faces (that retry keeps the largest face only).
    """
    if all_faces:
        scored = detect_faces_scored(img, upsample)
        boxes = [b for k, (b, sc) in enumerate(scored) if k == 0 or sc >= EXTRA_FACE_MIN_SCORE]
    else:
        boxes = detect_faces(img, upsample)
    if boxes:
        return [(landmarks68(img, b), b) for b in (boxes if all_faces else boxes[:1])]
    pad = max(img.shape[:2]) // 4
    padded = np.pad(img, ((pad, pad), (pad, pad), (0, 0)), mode="edge")
    boxes = detect_faces(padded, upsample + 1)
    if not boxes:
        raise NoFaceError(
            f"no face found in {name}; use a clearer frontal photo, or pass align=False "
            "(--no-align) for faces that are already cropped"
        )
    b = boxes[0]
    return [(landmarks68(padded, b) - pad, (b[0] - pad, b[1] - pad, b[2] - pad, b[3] - pad))]


def _find_landmarks(img: np.ndarray, upsample: int, name: str) -> np.ndarray:
    """68 landmarks of the largest face; one retry on a padded, upscaled copy for small faces."""
    return _find_faces(img, upsample, name)[0][0]


def locate_faces(img: np.ndarray, upsample: int = 1, name: str = "image",
                 all_faces: bool = False) -> list[tuple[np.ndarray, tuple[int, int, int, int]]]:
    """68 landmarks and the detector box, both in ``img``'s own pixel coordinates.

    The largest face only, or every face (largest first) with ``all_faces``. Photos larger
    than :data:`DETECT_MAX_SIDE` are searched on an area-filtered copy and the results mapped
    back (pixel centres: x_small + 0.5 = (x + 0.5) * f). Raises :class:`NoFaceError` naming ``name``.
    """
    h, w = img.shape[:2]
    f = min(1.0, DETECT_MAX_SIDE / max(h, w))
    if f >= 1.0:
        return _find_faces(img, upsample, name, all_faces)
    small = _shrink(img, f)
    fx, fy = small.shape[1] / w, small.shape[0] / h
    out = []
    for lm_small, b in _find_faces(small, upsample, name, all_faces):
        lm = np.column_stack([(lm_small[:, 0] + 0.5) / fx - 0.5, (lm_small[:, 1] + 0.5) / fy - 0.5])
        box = (round((b[0] + 0.5) / fx - 0.5), round((b[1] + 0.5) / fy - 0.5),
               round((b[2] + 0.5) / fx - 0.5), round((b[3] + 0.5) / fy - 0.5))
        out.append((lm, box))
    return out


def face_matrix(lm68: np.ndarray, size: int = CROP_SIZE) -> np.ndarray:
    """2x3 similarity mapping photo coordinates onto the size x size template crop."""
    return similarity_transform(five_points(lm68), TEMPLATE_5 * size / CROP_SIZE)


def crop_face(img: np.ndarray, matrix: np.ndarray, size: int = CROP_SIZE, border: str = "replicate") -> np.ndarray:
    """Cut the size x size crop that ``matrix`` (photo -> crop) describes.

    For a photo larger than :data:`DETECT_MAX_SIDE` whose face is shrunk by more than 2x,
    the photo is area-filtered first and the matrix composed with that shrink (no aliasing).
    """
    h, w = img.shape[:2]
    src, src_matrix = img, matrix
    scale = float(np.sqrt(abs(np.linalg.det(matrix[:, :2]))))
    if max(h, w) > DETECT_MAX_SIDE and scale < 0.5:  # big photo, face shrunk > 2x: area-filter, then warp
        g = min(1.0, 2.0 * scale)
        src = _shrink(img, g)
        gx, gy = src.shape[1] / w, src.shape[0] / h
        back = np.array([[1 / gx, 0, 0.5 / gx - 0.5], [0, 1 / gy, 0.5 / gy - 0.5]])  # shrunk -> full coords
        src_matrix = matrix[:, :2] @ back[:, :2]
        src_matrix = np.column_stack([src_matrix, matrix[:, :2] @ back[:, 2] + matrix[:, 2]])
    return warp_to_crop(src, src_matrix, size, border)


def align_face(img: np.ndarray, size: int = CROP_SIZE, upsample: int = 1,
               return_landmarks: bool = False, name: str = "image", border: str = "replicate"):
    """Align the largest face of ``img`` to the canonical crop.

    Returns the RGB crop (size, size, 3); with ``return_landmarks`` also the 68 landmarks
    mapped into the crop. Raises :class:`NoFaceError` naming ``name`` when no face is found.
    Photos larger than :data:`DETECT_MAX_SIDE` are searched on a downscaled copy.
    ``border``: how the crop is filled outside the photo - "replicate" (the default, what the
    datasets and metrics use) or "reflect" (BORDER_REFLECT_101: no streaks, used for photo-out,
    see :mod:`reggan_core.photo`).
    """
    _border_flag(border)  # refuse an unknown border before the (slow) detection
    lm, _ = locate_faces(img, upsample, name)[0]
    matrix = face_matrix(lm, size)
    crop = crop_face(img, matrix, size, border)
    if return_landmarks:
        mapped = lm @ matrix[:, :2].T + matrix[:, 2]
        return crop, mapped
    return crop


def resize_crop(img: np.ndarray, size: int = CROP_SIZE) -> np.ndarray:
    """No-alignment path for pre-cropped faces: centre square crop, then resize."""
    from PIL import Image

    h, w = img.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    sq = img[top:top + side, left:left + side]
    return np.asarray(Image.fromarray(sq).resize((size, size), Image.BICUBIC))
