"""Pair quality control: find training pairs whose target is a broken warp, not an expression.

Dataset v2 makes most targets by warping a real performance onto another face. When the
performer's head turns or the warp folds, the target's *rigid* landmarks (temples, nose
bridge, eye corners) move, which no expression does much: in dataset v2 their median motion
is 0.03-0.10 eye distances per category, and pairs above about 0.15 look visibly broken
(swirled cheeks, doubled mouths; see docs/training.md). Such pairs teach a model to smear.
The score uses dlib landmarks only, no expression or identity judge, so the judges that
score the model stay independent of what it was trained on.
"""
from __future__ import annotations

from typing import Hashable, Iterable

import numpy as np

# upper jaw line (0-3, 13-16), nose bridge (27-30), outer and inner eye corners (36, 39, 42, 45)
RIGID_POINTS = (0, 1, 2, 3, 13, 14, 15, 16, 27, 28, 29, 30, 36, 39, 42, 45)


def face_landmarks(face: np.ndarray) -> np.ndarray | None:
    """68 dlib landmarks of an aligned uint8 crop, or None when no face is detected."""
    from .faces import detect_faces, landmarks68

    boxes = detect_faces(face, 1)
    return landmarks68(face, boxes[0]) if boxes else None


def rigid_motion(source_lm: np.ndarray, target_lm: np.ndarray) -> float:
    """Mean motion of the rigid landmarks from source to target, in source eye distances."""
    src, tgt = np.asarray(source_lm, np.float64), np.asarray(target_lm, np.float64)
    iod = np.linalg.norm(src[36:42].mean(0) - src[42:48].mean(0))
    idx = list(RIGID_POINTS)
    return float(np.linalg.norm(src[idx] - tgt[idx], axis=1).mean() / max(iod, 1e-6))


def pair_motions(pairs: Iterable[tuple[Hashable, np.ndarray, np.ndarray]]) -> list[float]:
    """Rigid motion of each (source key, source, target) uint8 pair; inf when a face is not detected.

    Sources with the same key (e.g. a subject's neutral face) are landmarked once.
    """
    cache: dict[Hashable, np.ndarray | None] = {}
    out = []
    for key, src, tgt in pairs:
        if key not in cache:
            cache[key] = face_landmarks(src)
        a, b = cache[key], face_landmarks(tgt)
        out.append(float("inf") if a is None or b is None else rigid_motion(a, b))
    return out
