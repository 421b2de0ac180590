"""Photo in, photo out: put a translated face crop back into the user's photo.

The model works on the canonical 128x128 aligned crop (:mod:`reggan_core.faces`). This
module keeps what the alignment knows - the 2x3 similarity ``matrix`` (photo -> crop) and
the 68 landmarks in photo coordinates - for every face (:func:`align_faces`), and maps the
model's output back into the photo at the photo's own resolution (:func:`paste_back`).

Choices, and why:

* **Reflection padding for the model's input.** A tight crop (a face filling the photo)
  leaves part of the canonical crop outside the photo. ``BORDER_REPLICATE`` (what the
  datasets use) fills it with streaks - every border pixel repeated in a line - which the
  model never saw on a training face. ``BORDER_REFLECT_101`` mirrors the photo instead, so the
  crop keeps photo-like texture. Only the photo path uses it: :func:`reggan_core.faces.align_face`
  keeps its replicated default (training data of dataset v1/v2 and the metrics use it).
* **Paste the change, not the crop** (``mode="delta"``, the default): the photo becomes
  photo + upsample(out_crop - in_crop) inside the mask. Where the model changed nothing the
  photo keeps its own pixels, detail and noise (a 2000 px face is not replaced by a blurry
  128 px one), and a model returning its input leaves the photo bitwise unchanged.
  ``mode="replace"`` blends the upsampled output crop itself (softer, for comparison).
* **A feathered face mask from the landmarks**: the convex hull of the jaw line and the
  eyebrows raised by :data:`FOREHEAD` x (brow-to-chin distance) for the forehead, kept
  clear of the crop's edge, blurred by a Gaussian whose sigma is ``feather`` x the face width
  (so the edge scales with the face). It is built in crop coordinates (at 2x) and warped
  back like the face, so it is exactly 0 outside the crop's footprint: pixels with mask 0 are
  bitwise those of the input photo, and the smooth edge leaves no seam.
* The warp back is ``cv2.warpAffine(..., WARP_INVERSE_MAP)`` with the same matrix, bicubic,
  evaluated only on the bounding box of the crop's footprint (a 4000 px photo costs about
  what its face area does).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from .errors import DataError
from .faces import CROP_SIZE, crop_face, face_matrix, locate_faces

FEATHER = 0.05   # Gaussian sigma of the mask edge, as a fraction of the face width (jaw corner to corner)
FOREHEAD = 0.3   # brows raised by this fraction of the brow-to-chin distance
MASK_SCALE = 2   # the mask is drawn at this multiple of the crop resolution, then warped back
JAW, BROWS = slice(0, 17), slice(17, 27)

__all__ = ["AlignedFace", "align_faces", "face_mask", "paste_back", "translate_photo", "as_rgb", "FEATHER"]


@dataclass(frozen=True)
class AlignedFace:
    """One face of a photo: the model's input crop and how it maps back.

    ``crop``: (S, S, 3) uint8, reflection-padded; ``matrix``: 2x3 photo -> crop (pixel
    centres at integer coordinates, cv2's convention); ``landmarks``: (68, 2) in photo
    coordinates; ``box``: the detector's (left, top, right, bottom) in photo coordinates.
    """

    crop: np.ndarray
    matrix: np.ndarray
    landmarks: np.ndarray
    box: tuple[int, int, int, int]

    @property
    def size(self) -> int:
        return int(self.crop.shape[0])

    @property
    def crop_landmarks(self) -> np.ndarray:
        """The 68 landmarks in crop coordinates."""
        return self.landmarks @ self.matrix[:, :2].T + self.matrix[:, 2]

    @property
    def scale(self) -> float:
        """Crop pixels per photo pixel (< 1 when the face is bigger than the crop)."""
        return float(np.sqrt(abs(np.linalg.det(self.matrix[:, :2]))))

    def resized(self, fx: float, fy: float | None = None) -> "AlignedFace":
        """The same face in a copy of the photo resized by (fx, fy) (e.g. a display copy)."""
        fy = fx if fy is None else fy
        # photo coords p = (q + 0.5) / f - 0.5 for q in the resized copy
        to_full = np.array([[1 / fx, 0, 0.5 / fx - 0.5], [0, 1 / fy, 0.5 / fy - 0.5]])
        a = self.matrix[:, :2]
        m = np.column_stack([a @ to_full[:, :2], a @ to_full[:, 2] + self.matrix[:, 2]])
        lm = np.column_stack([(self.landmarks[:, 0] + 0.5) * fx - 0.5, (self.landmarks[:, 1] + 0.5) * fy - 0.5])
        b = self.box
        box = (round((b[0] + 0.5) * fx - 0.5), round((b[1] + 0.5) * fy - 0.5),
               round((b[2] + 0.5) * fx - 0.5), round((b[3] + 0.5) * fy - 0.5))
        return AlignedFace(self.crop, m, lm, box)


def as_rgb(photo: np.ndarray) -> np.ndarray:
    """RGB uint8 (H, W, 3) view of a grey (H, W) / (H, W, 1), RGB or RGBA (composited on white) photo."""
    arr = np.asarray(photo)
    if arr.dtype != np.uint8:
        raise DataError(f"photo must be uint8, got {arr.dtype}; read it with reggan_core.imageio.load_image")
    if arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] == 1):
        return np.repeat(arr.reshape(arr.shape[0], arr.shape[1], 1), 3, axis=2)
    if arr.ndim == 3 and arr.shape[2] == 3:
        return arr
    if arr.ndim == 3 and arr.shape[2] == 4:
        a = arr[..., 3:4].astype(np.float32) / 255.0
        return np.round(arr[..., :3] * a + 255.0 * (1 - a)).astype(np.uint8)
    raise DataError(f"photo has shape {arr.shape}; pass a grey (H, W), RGB (H, W, 3) or RGBA (H, W, 4) image")


def align_faces(img: np.ndarray, size: int = CROP_SIZE, all_faces: bool = False, upsample: int = 1,
                name: str = "photo", border: str = "reflect") -> list[AlignedFace]:
    """Align the largest face (or, with ``all_faces``, every face, largest first) of a photo.

    Detection, landmarks, the similarity and the big-photo anti-aliasing are those of
    :func:`reggan_core.faces.align_face`; only the border differs (reflection by default, see
    the module docstring). Raises :class:`~reggan_core.errors.NoFaceError` naming ``name``.
    """
    rgb = as_rgb(img)
    out = []
    for lm, box in locate_faces(rgb, upsample, name, all_faces):
        m = face_matrix(lm, size)
        out.append(AlignedFace(crop_face(rgb, m, size, border), m, lm, tuple(int(v) for v in box)))
    return out


def _mask_canvas(face: AlignedFace, feather: float) -> np.ndarray:
    """The feathered face mask in crop coordinates at MASK_SCALE x resolution, float32 in [0, 1]."""
    import cv2

    q, s = MASK_SCALE, face.size
    n = s * q
    lm = face.crop_landmarks
    lm = (lm + 0.5) * q - 0.5                                 # crop -> canvas pixel centres
    jaw, brows = lm[JAW], lm[BROWS]
    up = brows.mean(0) - lm[8]                                # chin -> brow centre
    brows_up = brows + FOREHEAD * up
    width = float(np.linalg.norm(lm[16] - lm[0]))
    sigma = max(feather * width, 0.5)
    radius = int(np.ceil(3 * sigma))
    hard = np.zeros((n, n), np.uint8)
    hull = cv2.convexHull(np.round(np.concatenate([jaw, brows_up]) * 16).astype(np.int32))
    cv2.fillConvexPoly(hard, hull, 255, lineType=cv2.LINE_AA, shift=4)
    inset = radius + q                                        # the blurred mask ends inside the crop
    if 2 * inset >= n:
        return np.zeros((n, n), np.float32)
    hard[:inset], hard[-inset:], hard[:, :inset], hard[:, -inset:] = 0, 0, 0, 0
    soft = cv2.GaussianBlur(hard.astype(np.float32) / 255.0, (2 * radius + 1, 2 * radius + 1), sigma,
                            borderType=cv2.BORDER_CONSTANT)
    return soft


def _footprint(face: AlignedFace, shape: Sequence[int]) -> tuple[int, int, int, int] | None:
    """Bounding box (x0, y0, x1, y1), exclusive end, of the crop's footprint in the photo; None if outside."""
    import cv2

    s = face.size
    inv = cv2.invertAffineTransform(face.matrix)
    corners = np.array([[-1, -1], [s, -1], [-1, s], [s, s]], np.float64) @ inv[:, :2].T + inv[:, 2]
    h, w = shape[:2]
    x0, y0 = max(int(np.floor(corners[:, 0].min())) - 1, 0), max(int(np.floor(corners[:, 1].min())) - 1, 0)
    x1, y1 = min(int(np.ceil(corners[:, 0].max())) + 2, w), min(int(np.ceil(corners[:, 1].max())) + 2, h)
    return None if x1 <= x0 or y1 <= y0 else (x0, y0, x1, y1)


def _roi_matrix(matrix: np.ndarray, x0: int, y0: int, scale: float = 1.0) -> np.ndarray:
    """photo ROI pixel -> crop (scale 1) or mask canvas (scale MASK_SCALE) pixel."""
    m = matrix.astype(np.float64).copy()
    m[:, 2] += m[:, :2] @ np.array([x0, y0], np.float64)
    if scale != 1.0:
        m = m * scale
        m[:, 2] += 0.5 * scale - 0.5
    return m


def warp_back(crop: np.ndarray, face: AlignedFace, shape: Sequence[int],
              roi: tuple[int, int, int, int] | None = None, interpolation: str = "cubic") -> np.ndarray:
    """A crop-space image (S, S[, C]) mapped into photo space (the ROI, or the whole ``shape``).

    ``cv2.warpAffine`` with ``WARP_INVERSE_MAP`` and the face's own matrix; 0 outside the crop.
    """
    import cv2

    x0, y0, x1, y1 = roi if roi is not None else (0, 0, shape[1], shape[0])
    flag = {"cubic": cv2.INTER_CUBIC, "linear": cv2.INTER_LINEAR}[interpolation]
    scale = crop.shape[0] / face.size
    m = _roi_matrix(face.matrix, x0, y0, scale)
    return cv2.warpAffine(np.ascontiguousarray(crop), m, (x1 - x0, y1 - y0), flags=flag | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def face_mask(face: AlignedFace, shape: Sequence[int], feather: float = FEATHER) -> np.ndarray:
    """The blend mask (H, W) float32 in [0, 1] for ``face`` in a photo of ``shape``."""
    mask = np.zeros(tuple(shape[:2]), np.float32)
    roi = _footprint(face, shape)
    if roi is not None:
        x0, y0, x1, y1 = roi
        mask[y0:y1, x0:x1] = warp_back(_mask_canvas(face, feather), face, shape, roi, "linear")
    return mask


def paste_back(photo: np.ndarray, out_crop: np.ndarray, in_crop: np.ndarray, face: AlignedFace,
               feather: float = FEATHER, mode: str = "delta") -> np.ndarray:
    """The photo with the model's output for ``face`` blended in; a new array, same shape and dtype.

    ``mode="delta"`` (default): photo + mask * upsample(out_crop - in_crop), so unchanged
    regions keep the photo's own detail; ``mode="replace"``: (1 - mask) * photo + mask *
    upsample(out_crop). Pixels where the mask is 0 are bitwise the input's. ``photo`` may be
    grey (H, W) (the change is averaged over RGB), RGB, or RGBA (alpha kept).
    """
    if mode not in ("delta", "replace"):
        raise DataError(f"unknown paste mode {mode!r}; use 'delta' or 'replace'")
    photo = np.asarray(photo)
    if photo.dtype != np.uint8:
        raise DataError(f"photo must be uint8, got {photo.dtype}")
    for what, c in (("out_crop", out_crop), ("in_crop", in_crop)):
        if np.shape(c) != face.crop.shape:
            raise DataError(f"{what} has shape {np.shape(c)}, expected the face crop's {face.crop.shape}")
    result = photo.copy()
    roi = _footprint(face, photo.shape)
    if roi is None:
        return result
    x0, y0, x1, y1 = roi
    alpha = warp_back(_mask_canvas(face, feather), face, photo.shape, roi, "linear")
    ys, xs = np.nonzero(alpha > 0)
    if len(ys) == 0:
        return result
    # only the mask's own bounding box is blended
    by0, by1, bx0, bx1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    alpha = alpha[by0:by1, bx0:bx1, None]
    roi = (x0 + bx0, y0 + by0, x0 + bx1, y0 + by1)
    src = (out_crop.astype(np.float32) - in_crop.astype(np.float32)) if mode == "delta" \
        else out_crop.astype(np.float32)
    up = warp_back(src, face, photo.shape, roi, "cubic")
    rows, cols = slice(roi[1], roi[3]), slice(roi[0], roi[2])
    if photo.ndim == 2 or photo.shape[2] == 1:
        up = up.mean(2, keepdims=True)
        target = photo[rows, cols].reshape(up.shape[0], up.shape[1], 1).astype(np.float32)
    else:
        target = photo[rows, cols, :3].astype(np.float32)
    blended = target + alpha * up if mode == "delta" else target + alpha * (up - target)
    blended = np.clip(np.round(blended), 0, 255).astype(np.uint8)
    blended = np.where(alpha > 0, blended, target.astype(np.uint8))
    if photo.ndim == 2:
        result[rows, cols] = blended[..., 0]
    elif photo.shape[2] == 1:
        result[rows, cols] = blended
    else:
        result[rows, cols, :3] = blended
    return result


def translate_photo(model: Any, photo: np.ndarray, target: str, strength: float = 1.0, all_faces: bool = False,
                    feather: float = FEATHER, *, faces: list[AlignedFace] | None = None, output: str = "refined",
                    mode: str = "delta", name: str = "photo") -> tuple[np.ndarray, list[AlignedFace]]:
    """Translate the largest face (or every face) of ``photo`` to ``target``, at the photo's resolution.

    ``model``: anything with ``translate(uint8 (B, S, S, 3), target, strength)`` returning a
    dict of uint8 arrays (a :class:`reggan_core.model.RegGAN`), and ``size``. ``output``: which
    of them to paste ("refined" or "regression"). ``faces``: the result of :func:`align_faces`,
    to skip detection. Returns (photo out, same shape and dtype as ``photo``; the faces used).
    """
    size = getattr(model, "size", None) or CROP_SIZE
    if faces is None:
        faces = align_faces(photo, size=size, all_faces=all_faces, name=name)
    if not faces:
        return np.asarray(photo).copy(), faces
    outs = model.translate(np.stack([f.crop for f in faces]), target, strength)[output]
    result = np.asarray(photo)
    for face, out in zip(faces, outs):
        result = paste_back(result, np.asarray(out), face.crop, face, feather, mode)
    return (result if result is not photo else result.copy()), faces


def _shrink_photo(photo: np.ndarray, face: AlignedFace, max_side: int) -> tuple[np.ndarray, AlignedFace]:
    """An area-filtered copy of ``photo`` with long side <= ``max_side`` and ``face`` mapped into it."""
    import cv2

    h, w = photo.shape[:2]
    f = min(1.0, max_side / max(h, w))
    if f >= 1.0:
        return photo, face
    small = cv2.resize(np.ascontiguousarray(photo), (max(1, round(w * f)), max(1, round(h * f))),
                       interpolation=cv2.INTER_AREA)
    return small, face.resized(small.shape[1] / w, small.shape[0] / h)


def zoom_box(box: Sequence[float], shape: Sequence[int], margin: float, square: bool = False,
             top_margin: float = 1.0) -> tuple[int, int, int, int]:
    """A face box (x0, y0, x1, y1) grown by ``margin`` x its longer side on every side, inside the photo.

    ``top_margin`` scales the growth upward (room for the forehead). ``square=True`` gives a square of
    that side centred on the box, shifted (not cut) to fit in the photo, for panels of equal size.
    For figures that show a face at a readable size; returns integer (left, top, right, bottom).
    """
    x0, y0, x1, y1 = (float(v) for v in box)
    h, w = int(shape[0]), int(shape[1])
    ext = max(x1 - x0, y1 - y0)
    m = margin * ext
    if not square:
        return max(0, int(x0 - m)), max(0, int(y0 - top_margin * m)), min(w, int(x1 + m)), min(h, int(y1 + m))
    side = min(int(round(ext + 2 * m)), h, w)
    left = int(np.clip(round((x0 + x1) / 2 - side / 2), 0, w - side))
    top = int(np.clip(round((y0 + y1) / 2 - side / 2), 0, h - side))
    return left, top, left + side, top + side
