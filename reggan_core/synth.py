"""A CFEE-shaped synthetic dataset made from real, public-domain face photos.

CFEE is licensed and cannot ship, so the tutorials run on faces made here:

1. **Base faces.** Two public-domain photos that ship inside packages - NASA's astronaut
   portrait (``skimage.data.astronaut``) and the US Navy portrait of Grace Hopper
   (matplotlib's ``grace_hopper.jpg``) - are aligned to the 128x128 crop with dlib's
   68 landmarks. The astronaut smiles, so her mouth is closed first (lips taken from the
   Hopper photo, colour-matched); her teeth are kept as the texture for open mouths.
2. **Identities.** Each subject is a landmark-aligned morph of the two bases (and their
   mirror images) at its own weight, with its own face shape (width, jaw, eye distance,
   nose, mouth), skin tone, hair/background hue, lighting direction and contrast.
3. **Expressions.** Each of the 22 categories is driven by the prototypical action units
   (AUs) of Du, Tao & Martinez (PNAS 2014, Table 1; see :mod:`reggan_core.categories`),
   each AU a displacement of landmarks in units of the inter-ocular distance, turned into
   a dense warp by a thin-plate spline. Content that warping cannot make is drawn:
   mouth interior and teeth when the lips part, brow furrows (AU4), nose wrinkles (AU9),
   nasolabial folds (AU10/12) and forehead lines (AU1/2).

Everything is deterministic from the seed. This is a teaching stand-in: the geometry of
expressions is right in kind, the texture is two people's; see ``datasets/README.md``.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from .categories import CATEGORIES, Category

SIZE = 128
L_BROW, R_BROW = list(range(17, 22)), list(range(22, 27))
L_EYE, R_EYE = list(range(36, 42)), list(range(42, 48))
OUTER_LIP, INNER_LIP = list(range(48, 60)), list(range(60, 68))
JAW = list(range(0, 17))


# --------------------------------------------------------------------------------------
# Thin-plate-spline warping
# --------------------------------------------------------------------------------------
def _tps_kernel(r2: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        k = 0.5 * r2 * np.log(r2)
    return np.nan_to_num(k)


def tps_warp(img: np.ndarray, src: np.ndarray, dst: np.ndarray, grid: int = 64,
             reg: float = 1e-3) -> np.ndarray:
    """Warp ``img`` so that points ``src`` move to ``dst`` (both (K, 2), x-y pixels).

    Backward mapping: a thin-plate spline f with f(dst_k) = src_k is solved in closed form
    ([K P; P^T 0][w; a] = [src; 0]), evaluated on a coarse grid, upsampled and fed to
    ``cv2.remap``. The image border is pinned by fixed anchor points.
    """
    h, w = img.shape[:2]
    border = np.array([[x, y] for x in np.linspace(0, w - 1, 5) for y in (0, h - 1)]
                      + [[x, y] for y in np.linspace(0, h - 1, 5)[1:-1] for x in (0, w - 1)])
    c = np.concatenate([dst, border])
    v = np.concatenate([src, border])
    n = len(c)
    d2 = ((c[:, None, :] - c[None, :, :]) ** 2).sum(-1)
    k = _tps_kernel(d2) + reg * np.eye(n)
    p = np.hstack([np.ones((n, 1)), c])
    a = np.zeros((n + 3, n + 3))
    a[:n, :n], a[:n, n:], a[n:, :n] = k, p, p.T
    rhs = np.zeros((n + 3, 2))
    rhs[:n] = v
    coef = np.linalg.solve(a, rhs)
    gx, gy = np.meshgrid(np.linspace(0, w - 1, grid), np.linspace(0, h - 1, grid))
    q = np.stack([gx.ravel(), gy.ravel()], 1)
    kq = _tps_kernel(((q[:, None, :] - c[None, :, :]) ** 2).sum(-1))
    mapped = kq @ coef[:n] + np.hstack([np.ones((len(q), 1)), q]) @ coef[n:]
    mx = cv2.resize(mapped[:, 0].reshape(grid, grid).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    my = cv2.resize(mapped[:, 1].reshape(grid, grid).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    return cv2.remap(img, mx, my, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def polygon_mask(points: np.ndarray, shape: tuple[int, int], blur: float = 0.0,
                 scale: int = 4) -> np.ndarray:
    """Anti-aliased float mask in [0, 1] of a filled polygon, optionally feathered."""
    h, w = shape
    m = np.zeros((h * scale, w * scale), np.uint8)
    cv2.fillPoly(m, [np.round(points * scale).astype(np.int32)], 255, lineType=cv2.LINE_AA)
    m = cv2.resize(m, (w, h), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
    if blur > 0:
        m = cv2.GaussianBlur(m, (0, 0), blur)
    return m


def _blend(base: np.ndarray, over: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    a = alpha[..., None]
    return base * (1 - a) + over * a


# --------------------------------------------------------------------------------------
# Base faces
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BaseFace:
    """An aligned real face: float32 RGB in [0, 255], its 68 landmarks, and a licence note."""

    name: str
    image: np.ndarray
    landmarks: np.ndarray
    source: str
    licence: str


def _load_sources() -> list[tuple[str, np.ndarray, str, str]]:
    import matplotlib.cbook as cbook
    from PIL import Image
    from skimage import data

    with Image.open(cbook.get_sample_data("grace_hopper.jpg")) as im:
        hopper = np.asarray(im.convert("RGB"))
    return [
        ("astronaut", data.astronaut(), "scikit-image skimage.data.astronaut() (NASA, Eileen Collins)",
         "public domain (NASA image)"),
        ("hopper", hopper, "matplotlib sample_data/grace_hopper.jpg (US Navy portrait)",
         "public domain (US Navy photo)"),
    ]


def _closed_mouth(lm: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Mouth landmarks of ``ref`` (closed lips) moved onto the mouth of ``lm``."""
    out = lm.copy()
    ref_m = ref[48:68]
    ref_c, ref_w = ref_m.mean(0), ref[54, 0] - ref[48, 0]
    own_w = (lm[54, 0] - lm[48, 0]) * 0.92
    centre = np.array([lm[48:68, 0].mean(), (lm[51, 1] + lm[57, 1]) / 2 + 1.0])
    out[48:68] = (ref_m - ref_c) * (own_w / ref_w) + centre
    return out


@lru_cache(maxsize=1)
def base_faces() -> tuple[tuple[BaseFace, ...], np.ndarray]:
    """The aligned base faces with closed, neutral mouths, and the astronaut's teeth patch."""
    from .faces import align_face

    raw = []
    for name, img, source, licence in _load_sources():
        crop, lm = align_face(img, return_landmarks=True, name=name)
        raw.append((name, crop.astype(np.float32), lm, source, licence))
    hop_img, hop_lm = raw[1][1], raw[1][2]
    # teeth texture: the astronaut's inner mouth, straightened into a patch
    ast_img, ast_lm = raw[0][1], raw[0][2]
    inner = ast_lm[INNER_LIP]
    x0, x1 = int(inner[:, 0].min()) + 2, int(np.ceil(inner[:, 0].max())) - 2
    y0, y1 = int(inner[:, 1].min()), int(np.ceil(inner[:, 1].max()))
    teeth = ast_img[y0:y1 + 1, x0:x1 + 1].copy()
    faces = []
    for name, img, lm, source, licence in raw:
        if name == "astronaut":
            target = _closed_mouth(lm, hop_lm)
            img = tps_warp(img, lm, target)
            # lips from the Hopper photo, warped onto the new mouth and colour-matched
            lips = tps_warp(hop_img, hop_lm, target)
            mask = polygon_mask(target[OUTER_LIP], img.shape[:2], blur=1.2)
            region = mask > 0.5
            lips = (lips - lips[region].mean(0)) * (img[region].std(0) / (lips[region].std(0) + 1e-6)) * 0.8 \
                + img[region].mean(0) * np.array([1.0, 0.93, 0.95])
            ext = polygon_mask(_expand(target[OUTER_LIP], 1.25), img.shape[:2], blur=1.5)
            img = _blend(img, np.clip(lips, 0, 255), np.clip(np.maximum(mask, ext * 0.7), 0, 1))
            lm = target
        faces.append(BaseFace(name, img.astype(np.float32), lm, source, licence))
    return tuple(faces), teeth.astype(np.float32)


def _expand(points: np.ndarray, factor: float) -> np.ndarray:
    c = points.mean(0)
    return (points - c) * factor + c


# --------------------------------------------------------------------------------------
# Identities
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Identity:
    """A synthetic subject: its neutral face (float32 RGB) and 68 landmarks."""

    name: str
    image: np.ndarray
    landmarks: np.ndarray
    params: dict


def _flip(img: np.ndarray, lm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mirror a face and relabel its landmarks (dlib's 68-point symmetry)."""
    perm = (list(range(16, -1, -1)) + list(range(26, 16, -1)) + list(range(27, 31))
            + [35, 34, 33, 32, 31] + [45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40]
            + [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55] + [64, 63, 62, 61, 60, 67, 66, 65])
    w = img.shape[1]
    f = lm[perm].copy()
    f[:, 0] = w - 1 - f[:, 0]
    return img[:, ::-1].copy(), f


def _shape_variation(lm: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """Random but plausible change of face geometry, in units of the inter-ocular distance."""
    out = lm.copy()
    eye_l, eye_r = lm[L_EYE].mean(0), lm[R_EYE].mean(0)
    iod = np.linalg.norm(eye_r - eye_l)
    cx = (eye_l[0] + eye_r[0]) / 2
    p = {k: float(v) for k, v in zip(
        ("face_width", "jaw_length", "eye_distance", "nose_length", "mouth_width", "brow_height", "eye_size",
         "lip_height"),
        rng.normal(0, 1, 8).clip(-2, 2))}
    jaw = out[JAW]
    jaw[:, 0] = cx + (jaw[:, 0] - cx) * (1 + 0.09 * p["face_width"])
    chin_w = np.clip((jaw[:, 1] - eye_l[1]) / (lm[8, 1] - eye_l[1]), 0, 1) ** 2
    jaw[:, 1] += 0.14 * iod * p["jaw_length"] * chin_w
    out[JAW] = jaw
    for idx, sign in ((L_EYE + L_BROW, -1), (R_EYE + R_BROW, 1)):
        out[idx, 0] += sign * 0.06 * iod * p["eye_distance"]
    for idx in (L_EYE, R_EYE):
        c = out[idx].mean(0)
        out[idx] = c + (out[idx] - c) * (1 + 0.08 * p["eye_size"])
    # the nose lengthens as a whole (tip and wings together), the mouth follows it
    out[[29, 30, 31, 32, 33, 34, 35], 1] += np.array([0.4, 0.9, 1, 1, 1, 1, 1]) * 0.10 * iod * p["nose_length"]
    out[48:68, 1] += 0.08 * iod * p["nose_length"]
    out[48:68, 1] += 0.06 * iod * p["lip_height"] * np.clip((out[48:68, 1] - out[33, 1]) / iod, 0, 1)
    mc = out[48:68].mean(0)
    out[48:68, 0] = mc[0] + (out[48:68, 0] - mc[0]) * (1 + 0.12 * p["mouth_width"])
    out[17:27, 1] -= 0.08 * iod * p["brow_height"]
    return out, p


def _colour_variation(img: np.ndarray, lm: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """Skin tone, hair/background hue, lighting direction and contrast."""
    h, w = img.shape[:2]
    hull = cv2.convexHull(np.concatenate([lm[JAW], lm[17:27] - [0, 8]]).astype(np.float32))[:, 0]
    face = polygon_mask(hull, (h, w), blur=3.0)
    p = {"skin": float(rng.uniform(-1, 1)), "warmth": float(rng.normal(0, 0.5)),
         "hue": float(rng.uniform(-20, 20)), "hair_value": float(rng.uniform(0.55, 1.2)), "light_angle": float(rng.uniform(0, 2 * np.pi)),
         "light": float(rng.uniform(0.0, 0.25)), "contrast": float(rng.uniform(0.85, 1.15)),
         "brightness": float(rng.normal(0, 8))}
    # skin tone: darker/lighter and warmer/cooler, inside the face
    tone = np.array([1.0 + 0.25 * p["skin"] + 0.05 * p["warmth"], 1.0 + 0.25 * p["skin"],
                     1.0 + 0.25 * p["skin"] - 0.06 * p["warmth"]])
    img = _blend(img, img * tone, face)
    # hair and background hue rotation outside the face
    hsv = cv2.cvtColor(np.clip(img, 0, 255).astype(np.uint8), cv2.COLOR_RGB2HSV).astype(np.float32)
    hsv[..., 0] = (hsv[..., 0] + p["hue"]) % 180
    hsv[..., 2] = np.clip(hsv[..., 2] * p["hair_value"], 0, 255)
    rot = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB).astype(np.float32)
    img = _blend(rot, img, face)
    # directional light and global contrast / brightness
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    ramp = ((xx - w / 2) * np.cos(p["light_angle"]) + (yy - h / 2) * np.sin(p["light_angle"])) / (w / 2)
    img = img * (1 + p["light"] * ramp)[..., None]
    img = (img - 128) * p["contrast"] + 128 + p["brightness"]
    return np.clip(img, 0, 255), p


def make_identity(k: int, seed: int = 0) -> Identity:
    """Subject ``k``: a morph of the base faces with its own shape and colouring."""
    rng = np.random.default_rng([seed, k])
    bases, _ = base_faces()
    pool = [(b.image, b.landmarks) for b in bases] + [_flip(b.image, b.landmarks) for b in bases]
    first = int(rng.integers(2))  # one photo of each person, each possibly mirrored
    i, j = first + 2 * int(rng.integers(2)), (1 - first) + 2 * int(rng.integers(2))
    (ia, la), (ib, lb) = pool[i], pool[j]
    wgt = float(rng.uniform(0.05, 0.95))
    mean = (1 - wgt) * la + wgt * lb
    shaped, sp = _shape_variation(mean, rng)
    img = (1 - wgt) * tps_warp(ia, la, shaped) + wgt * tps_warp(ib, lb, shaped)
    img, cp = _colour_variation(img, shaped, rng)
    params = {"bases": [int(i), int(j)], "morph": wgt, **sp, **cp}
    return Identity(f"S{k + 1:03d}", img.astype(np.float32), shaped, params)


# --------------------------------------------------------------------------------------
# Action units
# --------------------------------------------------------------------------------------
def au_displacement(au: int, lm: np.ndarray) -> np.ndarray:
    """Landmark displacement (68, 2) of one AU at full intensity, scaled by the inter-ocular distance.

    Directions follow FACS descriptions of each AU (Ekman & Friesen); magnitudes are
    chosen so the change is clearly visible at 128 px. y grows downwards.
    """
    d = np.zeros_like(lm)
    iod = np.linalg.norm(lm[R_EYE].mean(0) - lm[L_EYE].mean(0))
    mc = lm[48:68].mean(0)
    up, down = np.array([0, -1.0]), np.array([0, 1.0])
    if au == 1:    # inner brow raiser
        d[[21, 22]] += up * 0.16; d[[20, 23]] += up * 0.10; d[[19, 24]] += up * 0.04
    elif au == 2:  # outer brow raiser
        d[[17, 26]] += up * 0.14; d[[18, 25]] += up * 0.12; d[[19, 24]] += up * 0.08
    elif au == 4:  # brow lowerer: brows down and together
        d[17:27] += down * 0.08
        d[[21, 20]] += np.array([0.06, 0.05]); d[[22, 23]] += np.array([-0.06, 0.05])
        d[[37, 38, 43, 44]] += down * 0.02
    elif au == 5:  # upper lid raiser
        d[[37, 38, 43, 44]] += up * 0.07; d[[36, 39, 42, 45]] += up * 0.02
        d[17:27] += up * 0.02
    elif au == 6:  # cheek raiser: lower lids up, eyes narrowed from below
        d[[40, 41, 46, 47]] += up * 0.04
        d[[1, 2, 14, 15]] += up * 0.03
    elif au == 7:  # lid tightener
        d[[40, 41, 46, 47]] += up * 0.05; d[[37, 38, 43, 44]] += down * 0.03
    elif au == 9:  # nose wrinkler: nose wings and upper lip up, brows down a little
        d[31:36] += up * 0.07; d[[29, 30]] += up * 0.03
        d[48:55] += up * 0.04; d[60:65] += up * 0.03
        d[[20, 21, 22, 23]] += down * 0.05
    elif au == 10:  # upper lip raiser
        d[[49, 50, 51, 52, 53]] += up * 0.09; d[[61, 62, 63]] += up * 0.10
        d[[48, 54, 60, 64]] += up * 0.03; d[31:36] += up * 0.03
    elif au == 11:  # nasolabial deepener
        d[[49, 53]] += up * 0.03; d[[48]] += np.array([-0.02, -0.02]); d[[54]] += np.array([0.02, -0.02])
    elif au == 12:  # lip corner puller: corners out and up
        d[[48, 60]] += np.array([-0.13, -0.10]); d[[54, 64]] += np.array([0.13, -0.10])
        d[[49, 59]] += np.array([-0.07, -0.05]); d[[53, 55]] += np.array([0.07, -0.05])
        d[[61, 67]] += np.array([-0.03, -0.02]); d[[63, 65]] += np.array([0.03, -0.02])
        d[[40, 41, 46, 47]] += up * 0.02
    elif au == 15:  # lip corner depressor
        d[[48, 60]] += np.array([-0.02, 0.10]); d[[54, 64]] += np.array([0.02, 0.10])
        d[[49, 59, 53, 55]] += down * 0.06; d[[50, 58, 52, 56]] += down * 0.02
        d[[61, 63, 65, 67]] += down * 0.05; d[[62, 66]] += down * 0.015
    elif au == 17:  # chin raiser: lower lip and chin up
        d[[55, 56, 57, 58, 59, 65, 66, 67]] += up * 0.05; d[[6, 7, 8, 9, 10]] += up * 0.04
    elif au == 20:  # lip stretcher: corners out horizontally
        d[[48, 60]] += np.array([-0.14, 0.02]); d[[54, 64]] += np.array([0.14, 0.02])
        d[[49, 59]] += np.array([-0.07, 0.0]); d[[53, 55]] += np.array([0.07, 0.0])
    elif au == 23:  # lip tightener: mouth narrower
        d[48:68] += (mc - lm[48:68]) * np.array([0.12, 0.05]) / iod
    elif au == 24:  # lip pressor: lips pressed together, red thinner
        d[[49, 50, 51, 52, 53]] += down * 0.03; d[[55, 56, 57, 58, 59]] += up * 0.03
        d[[61, 62, 63, 65, 66, 67]] *= 0
    elif au == 25:  # lips part
        d[[61, 62, 63]] += up * 0.02; d[[65, 66, 67]] += down * 0.10
        d[[55, 56, 57, 58, 59]] += down * 0.08
    elif au == 26:  # jaw drop: lower lip, chin and lower jaw down
        t = np.clip((lm[JAW, 1] - lm[30, 1]) / (lm[8, 1] - lm[30, 1] + 1e-6), 0, 1)
        d[JAW] += down[None] * 0.22 * t[:, None]
        d[[55, 56, 57, 58, 59]] += down * 0.20; d[[65, 66, 67]] += down * 0.20
        d[[48, 54, 60, 64]] += down * 0.07
    else:
        raise ValueError(f"AU {au} is not modelled; modelled AUs: {', '.join(map(str, MODELLED_AUS))}")
    return d * iod


MODELLED_AUS = (1, 2, 4, 5, 6, 7, 9, 10, 11, 12, 15, 17, 20, 23, 24, 25, 26)


def expression_aus(category: Category, rng: np.random.Generator) -> dict[int, float]:
    """AU -> intensity for one subject's expression: prototypical AUs always, variable AUs sometimes."""
    aus = {au: float(rng.uniform(0.85, 1.15)) for au in category.aus}
    for au in category.variable_aus:
        if au in MODELLED_AUS and rng.random() < 0.4:
            aus[au] = float(rng.uniform(0.4, 0.8))
    return aus


def _darken_line(img: np.ndarray, pts: np.ndarray, strength: float, width: float = 1.0) -> np.ndarray:
    """Draw a soft shading line (a wrinkle or fold) through ``pts``."""
    h, w = img.shape[:2]
    m = np.zeros((h * 4, w * 4), np.uint8)
    cv2.polylines(m, [np.round(pts * 4).astype(np.int32)], False, 255, thickness=max(1, int(4 * width)),
                  lineType=cv2.LINE_AA)
    m = cv2.GaussianBlur(cv2.resize(m, (w, h), interpolation=cv2.INTER_AREA).astype(np.float32) / 255, (0, 0), 0.7)
    return img * (1 - np.clip(strength * m, 0, 0.6))[..., None]


def _mouth_interior(img: np.ndarray, lm: np.ndarray, teeth: np.ndarray, show_teeth: float) -> np.ndarray:
    """Paint the open mouth: dark interior, upper teeth below the upper lip."""
    inner = lm[INNER_LIP]
    h, w = img.shape[:2]
    mask = polygon_mask(inner, (h, w), blur=0.5)
    if mask.sum() < 3:
        return img
    top = (inner[1:4, 1].mean())
    bottom = inner[5:8, 1].mean()
    opening = max(bottom - top, 0.0)
    yy = np.arange(h, dtype=np.float32)[:, None]
    depth = np.clip((yy - top) / (opening + 1e-6), 0, 1)
    cavity = np.stack([95 - 55 * depth, 40 - 22 * depth, 45 - 25 * depth], -1) * np.ones((1, w, 1), np.float32)
    out = cavity
    if show_teeth > 0:
        x0, x1 = inner[:, 0].min(), inner[:, 0].max()
        tw = int(max(x1 - x0, 4))
        th = int(np.clip(opening * 0.8 * show_teeth, 1, teeth.shape[0] * 2.0))
        patch = cv2.resize(teeth, (tw, max(th, 1)), interpolation=cv2.INTER_LINEAR)
        layer = np.zeros_like(img)
        alpha = np.zeros((h, w), np.float32)
        # follow the upper inner lip: column offsets from its curve
        xs = np.arange(tw) + int(x0)
        curve = np.interp(xs, inner[[0, 1, 2, 3, 4], 0], inner[[0, 1, 2, 3, 4], 1])
        for c, (x, y) in enumerate(zip(xs, curve)):
            if 0 <= x < w:
                y0 = int(round(y))
                y1 = min(h, y0 + patch.shape[0])
                layer[y0:y1, x] = patch[: y1 - y0, c]
                alpha[y0:y1, x] = 1.0
        alpha = cv2.GaussianBlur(alpha, (0, 0), 0.5)
        out = _blend(out, layer, alpha)
    return _blend(img, out, mask)


def apply_expression(identity: Identity, aus: dict[int, float], teeth: np.ndarray,
                     mouth_interior: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Warp a neutral identity by the given AUs and draw what warping cannot make.

    ``mouth_interior=False`` leaves an already open mouth as it is (dataset v2 starts some
    categories from a real, transferred open mouth and adds the remaining AUs on top).
    """
    lm = identity.landmarks
    disp = sum((au_displacement(au, lm) * s for au, s in aus.items()), np.zeros_like(lm))
    target = lm + disp
    # keep the lips from crossing: lower inner lip never above the upper inner lip
    for up_i, lo_i in ((61, 67), (62, 66), (63, 65)):
        target[lo_i, 1] = max(target[lo_i, 1], target[up_i, 1])
    img = tps_warp(identity.image, lm, target) if aus else identity.image.copy()
    iod = np.linalg.norm(lm[R_EYE].mean(0) - lm[L_EYE].mean(0))
    opening = target[[65, 66, 67], 1].mean() - target[[61, 62, 63], 1].mean()
    if mouth_interior and opening > 0.04 * iod:
        lip_raise = aus.get(12, 0) + 0.5 * aus.get(10, 0) + 0.25 * aus.get(25, 0)
        img = _mouth_interior(img, target, teeth, show_teeth=float(np.clip(lip_raise, 0, 1)))
    if 4 in aus:  # vertical furrows between the brows
        for sx in (-0.07, 0.07):
            x = (target[21, 0] + target[22, 0]) / 2 + sx * iod
            y0 = min(target[21, 1], target[22, 1])
            img = _darken_line(img, np.array([[x, y0 - 0.05 * iod], [x + sx * 0.3 * iod, y0 + 0.18 * iod]]),
                               0.2 * aus[4])
    if 9 in aus:  # horizontal wrinkles across the nose bridge
        for f in (0.35, 0.55):
            y = target[27, 1] + f * (target[30, 1] - target[27, 1])
            img = _darken_line(img, np.array([[target[27, 0] - 0.12 * iod, y], [target[27, 0] + 0.12 * iod, y]]),
                               0.18 * aus[9])
    fold = max(aus.get(12, 0), 0.5 * aus.get(10, 0), 0.5 * aus.get(11, 0))
    if fold > 0:  # nasolabial folds from the nose wings to beside the mouth corners
        for wing, corner, sx in ((31, 48, -1), (35, 54, 1)):
            p0 = target[wing] + np.array([sx * 0.08 * iod, -0.02 * iod])
            p2 = target[corner] + np.array([sx * 0.06 * iod, 0.02 * iod])
            p1 = (p0 + p2) / 2 + np.array([sx * 0.07 * iod, 0])
            img = _darken_line(img, np.array([p0, p1, p2]), 0.22 * fold)
    if 1 in aus or 2 in aus:  # forehead lines
        s = max(aus.get(1, 0), aus.get(2, 0))
        top = min(target[17:27, 1])
        for f in (0.25, 0.45):
            y = top - f * iod
            img = _darken_line(img, np.array([[target[19, 0], y + 1], [target[27, 0], y], [target[24, 0], y + 1]]),
                               0.25 * s)
    return np.clip(img, 0, 255), target


def make_subject(k: int, seed: int = 0) -> dict[str, np.ndarray]:
    """All 22 category images (uint8 RGB, 128x128) of subject ``k``."""
    _, teeth = base_faces()
    ident = make_identity(k, seed)
    out = {}
    for cat in CATEGORIES:
        rng = np.random.default_rng([seed, k, cat.index])
        img, _ = apply_expression(ident, expression_aus(cat, rng), teeth)
        out[cat.name] = np.round(img).astype(np.uint8)
    return out
