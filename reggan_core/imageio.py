"""Reading, checking and atomically writing images and files.

Images are RGB ``uint8`` arrays (H, W, 3) in memory and float tensors in [-1, 1] inside
models. Grayscale, palette and RGBA inputs are converted, never refused; corrupt, truncated
and tiny images are refused with one line naming the file.
"""
from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import DataError

MIN_SIZE = 64
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".ppm", ".webp")


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any PIL mode to RGB; transparent pixels are composited on white."""
    if img.mode == "RGB":
        return img
    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def load_image(path: str | os.PathLike, min_size: int = MIN_SIZE) -> np.ndarray:
    """Read an image file as an RGB uint8 array, refusing corrupt or tiny files."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"image {path} does not exist; check the path")
    try:
        with Image.open(path) as img:
            img.load()
            rgb = to_rgb(img)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(
            f"image {path} is corrupt or truncated ({exc.__class__.__name__}); re-export or remove it"
        ) from None
    w, h = rgb.size
    if min(w, h) < min_size:
        raise DataError(
            f"image {path} is {w}x{h} px, smaller than {min_size} px; use a larger photo"
        )
    return np.asarray(rgb, dtype=np.uint8).copy()


def array_to_image(arr: np.ndarray) -> Image.Image:
    """RGB uint8 (H, W, 3) or gray (H, W) array to a PIL image."""
    arr = np.asarray(arr)
    if arr.dtype != np.uint8:
        arr = np.clip(arr, 0, 255).round().astype(np.uint8)
    return Image.fromarray(arr)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it over ``path`` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)  # mkstemp makes 0600 files; use the usual mode
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def save_image(arr: np.ndarray, path: str | os.PathLike) -> Path:
    """Write an image atomically; the format follows the file extension."""
    path = Path(path)
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG"}.get(path.suffix.lower(), "PNG")
    with atomic_path(path) as tmp:
        array_to_image(arr).save(tmp, format=fmt)
    return path


def write_text(text: str, path: str | os.PathLike) -> Path:
    """Write a text file atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return path


def to_tensor(arr: np.ndarray):
    """RGB uint8 (H, W, 3) -> float tensor (3, H, W) in [-1, 1]."""
    import torch

    arr = np.ascontiguousarray(arr)
    if not arr.flags.writeable:  # torch.from_numpy warns on read-only arrays
        arr = arr.copy()
    t = torch.from_numpy(arr).permute(2, 0, 1).float()
    return t / 127.5 - 1.0


def to_uint8(t) -> np.ndarray:
    """Float tensor (3, H, W) or (B, 3, H, W) in [-1, 1] -> uint8 (H, W, 3) or (B, H, W, 3)."""
    t = t.detach().float().cpu().clamp(-1, 1)
    arr = ((t + 1.0) * 127.5).round().to(dtype=__import__("torch").uint8)
    return arr.permute(0, 2, 3, 1).numpy() if arr.ndim == 4 else arr.permute(1, 2, 0).numpy()


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files directly in ``folder`` (sorted), or the file itself."""
    folder = Path(folder)
    if folder.is_file():
        return [folder]
    if not folder.is_dir():
        raise DataError(f"folder {folder} does not exist; check the path")
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
