"""Transfer a real expression change from one face onto another (expression ratio images).

Liu, Shan & Zhang, "Expressive expression mapping with ratio images" (SIGGRAPH 2001): a performer
is seen in a source frame A (e.g. neutral) and a destination frame A' (e.g. smiling); a target
face B is seen in the source expression only. Here, in the 128x128 template crop:

1. **Geometry.** The performer's landmark change, measured after registering A' onto A by a
   similarity on stable points (eye corners, nose bridge), is scaled by the ratio of the two
   faces' inter-ocular distances and added to B's landmarks: ``B'_lm = B_lm + s (A'_lm - A_lm)``.
2. **Appearance.** A and A' are both warped (thin-plate spline) to B's landmarks, so the same
   pixel covers the same point of the face in the three images. Their *luminance* ratio
   ``R = (Y(A') + k) / (Y(A) + k)`` (lightly smoothed, clipped) carries the folds, wrinkles and
   shading the expression makes, without the performer's skin colour; ``B * R`` is warped to
   ``B'_lm``.
3. **Mouth interior.** What the ratio cannot make - teeth and the mouth cavity where B's lips were
   closed - is taken from A' warped straight onto ``B'_lm``, scaled to B's brightness, inside B''s
   inner-lip polygon.

The ratio is computed on luminance only (the performers' clips are sepia, blue-screened, or
webcam-coloured; per-channel ratios would carry their colour casts).
"""
from __future__ import annotations

import cv2
import numpy as np

from .performances import iod, register
from .synth import JAW, polygon_mask, tps_warp

INNER_LIP = list(range(60, 68))


def luminance(img: np.ndarray) -> np.ndarray:
    """Rec. 601 luma of a float RGB image."""
    return img[..., 0] * 0.299 + img[..., 1] * 0.587 + img[..., 2] * 0.114


def face_mask(lm: np.ndarray, shape: tuple[int, int], blur: float = 3.0) -> np.ndarray:
    """Soft mask of the face: jaw line and brows lifted by a third of the eye distance."""
    d = iod(lm)
    hull = cv2.convexHull(np.concatenate([lm[JAW], lm[17:27] - [0, 0.35 * d]]).astype(np.float32))[:, 0]
    return polygon_mask(hull, shape, blur=blur)


def target_landmarks(target_lm: np.ndarray, src_lm: np.ndarray, dst_lm: np.ndarray,
                     strength: float = 1.0) -> np.ndarray:
    """``target_lm`` moved by the performer's registered change ``src_lm -> dst_lm`` (step 1)."""
    change = register(dst_lm, src_lm) - src_lm
    out = target_lm + strength * change * (iod(target_lm) / iod(src_lm))
    for up, lo in ((61, 67), (62, 66), (63, 65)):  # lips never cross
        out[lo, 1] = max(out[lo, 1], out[up, 1])
    return out


def ratio_image(src_img: np.ndarray, src_lm: np.ndarray, dst_img: np.ndarray, dst_lm: np.ndarray,
                target_lm: np.ndarray, k: float = 12.0, sigma: float = 0.8,
                clip: tuple[float, float] = (0.55, 1.6)) -> np.ndarray:
    """Luminance ratio Y(A')/Y(A) with both performer frames warped onto ``target_lm`` (step 2), (H, W)."""
    a = tps_warp(src_img.astype(np.float32), src_lm, target_lm)
    a1 = tps_warp(dst_img.astype(np.float32), dst_lm, target_lm)
    r = (luminance(a1) + k) / (luminance(a) + k)
    if sigma > 0:
        r = cv2.GaussianBlur(r.astype(np.float32), (0, 0), sigma)
    r = np.clip(r, *clip)
    m = face_mask(target_lm, r.shape)
    # eyes are left out: a blink or a glance in the performer's frames is not part of the expression
    # (and eye whites over a dark lid make extreme ratios)
    for eye in (list(range(36, 42)), list(range(42, 48))):
        c = target_lm[eye].mean(0)
        m = m * (1 - polygon_mask((target_lm[eye] - c) * 1.6 + c, r.shape, blur=1.5))
    return 1.0 + (r - 1.0) * m


def neutral_mouth(lm: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """``lm`` with its mouth replaced by the mouth of a neutral ``reference`` face (68 points).

    The reference is laid onto ``lm`` by a similarity on stable points, and its mouth is placed at
    ``lm``'s mouth centre (x) and upper-lip height (y): a smile's corners come down, parted lips close.
    """
    ref = register(reference, lm)
    out = lm.copy()
    mouth = ref[48:68] - ref[[51, 62]].mean(0)
    out[48:68] = mouth + np.array([lm[48:68, 0].mean(), lm[[51, 62], 1].mean()]) - [mouth[:, 0].mean(), 0]
    return out


def close_mouth(img: np.ndarray, lm: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Geometry-only neutralisation of a mild smile or slightly parted lips (TPS warp to :func:`neutral_mouth`)."""
    new = neutral_mouth(lm, reference)
    out = tps_warp(img.astype(np.float32), lm, new)
    return np.clip(np.round(out), 0, 255).astype(np.uint8), new


def transfer_expression(target_img: np.ndarray, target_lm: np.ndarray, src_img: np.ndarray,
                        src_lm: np.ndarray, dst_img: np.ndarray, dst_lm: np.ndarray,
                        strength: float = 1.0, mouth: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """The target face showing the performer's change ``src -> dst``; returns (uint8 image, landmarks).

    All images are aligned 128x128 crops (uint8 or float RGB) with their 68 crop landmarks.
    """
    tgt = target_img.astype(np.float32)
    new_lm = target_landmarks(target_lm, src_lm, dst_lm, strength)
    # the ratio is measured with the performer frames on the target's (source-expression) shape
    r = ratio_image(src_img, src_lm, dst_img, dst_lm, target_lm)
    if strength != 1.0:
        r = r ** strength
    out = tps_warp(tgt * r[..., None], target_lm, new_lm)
    if mouth:
        inner = polygon_mask(new_lm[INNER_LIP], out.shape[:2], blur=0.6)
        src_inner = polygon_mask(target_lm[INNER_LIP], out.shape[:2], blur=0.6)
        grow = np.clip(inner - src_inner, 0, 1) if strength >= 0 else inner * 0
        if inner.sum() > 2:
            perf = tps_warp(dst_img.astype(np.float32), dst_lm, new_lm)
            fm = face_mask(new_lm, out.shape[:2]) > 0.5
            gain = luminance(out)[fm].mean() / max(luminance(perf)[fm].mean(), 1.0)
            alpha = np.maximum(grow, inner * 0.85)
            out = out * (1 - alpha[..., None]) + np.clip(perf * gain, 0, 255) * alpha[..., None]
    return np.clip(np.round(out), 0, 255).astype(np.uint8), new_lm
