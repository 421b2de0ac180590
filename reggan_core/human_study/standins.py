"""Stand-in "methods" for trying a study before real outputs exist: plain image degradations.

They are NOT models of any published method. Each maps a reference image (the true target
photo where one exists, else the input) to an output of known, visible quality, so panels can
be built, looked at and answered end to end. Names say what was done.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Callable, Mapping

import numpy as np
from PIL import Image, ImageFilter

from ..imageio import save_image


def _blur(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return np.asarray(Image.fromarray(img).filter(ImageFilter.GaussianBlur(radius=1.5)))


def _noise(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return np.clip(img + rng.normal(0.0, 12.0, img.shape), 0, 255).astype(np.uint8)


def _colour_shift(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return np.clip(img.astype(float) + [20.0, 0.0, -15.0], 0, 255).astype(np.uint8)


def _jpeg_q10(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=10)
    return np.asarray(Image.open(buf).convert("RGB"))


def _pixelate(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    h, w = img.shape[:2]
    small = Image.fromarray(img).resize((w // 4, h // 4), Image.BILINEAR)
    return np.asarray(small.resize((w, h), Image.NEAREST))


# name -> (what it does, function of (reference, rng)); "no_change" returns the *input* (see make_outputs)
STANDINS: dict[str, tuple[str, Callable[[np.ndarray, np.random.Generator], np.ndarray] | None]] = {
    "sharp": ("the reference image, unchanged", lambda img, rng: img),
    "blur": ("Gaussian blur, radius 1.5 px", _blur),
    "noise": ("Gaussian pixel noise, sigma 12 grey levels", _noise),
    "colour_shift": ("colour cast: red +20, blue -15", _colour_shift),
    "jpeg_q10": ("JPEG compression at quality 10", _jpeg_q10),
    "pixelate": ("4x down-sampled, up-sampled with nearest neighbour", _pixelate),
    "no_change": ("the input face itself (a method that does nothing)", None),
}


def make_outputs(items: Mapping[str, tuple[np.ndarray, np.ndarray]], out_root: str | Path,
                 seed: int = 0) -> dict[str, Path]:
    """Write ``<out_root>/inputs/<split>/<name>.png`` and one folder per stand-in method.

    ``items``: ``"<split>/<name>" -> (input image, reference image)``, RGB uint8.
    Returns method -> folder, ready for :func:`reggan_core.human_study.build_study`.
    """
    out_root = Path(out_root)
    rng = np.random.default_rng(seed)
    for item, (inp, ref) in items.items():
        save_image(inp, out_root / "inputs" / f"{item}.png")
        for method, (_, fn) in STANDINS.items():
            out = inp if fn is None else fn(ref, rng)
            save_image(out, out_root / "methods" / method / f"{item}.png")
    return {m: out_root / "methods" / m for m in STANDINS}
