"""Reading, checking and atomically writing images and files.

Images are RGB ``uint8`` arrays (H, W, 3) in memory and float tensors in [-1, 1] inside
models. Grayscale, palette and RGBA inputs are converted, never refused; 16-bit and float
grayscale (PIL modes I;16, I, F) are scaled to 8 bits, not clipped; the EXIF orientation is
applied; a GIF gives its first frame. Corrupt, truncated, tiny and unreadable images, and
images over :data:`MAX_PIXELS`, are refused with one line naming the file.
"""
from __future__ import annotations

import errno
import os
import re
import tempfile
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import DataError

MIN_SIZE = 64
# Largest image read, in pixels (50 megapixels, e.g. 8660x5773): larger files are refused from
# their header, before decoding, so one huge or malicious file cannot exhaust memory.
MAX_PIXELS = 50_000_000
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".ppm", ".webp", ".gif")


def _to_8bit_gray(img: Image.Image) -> Image.Image:
    """16-bit / 32-bit / float grayscale -> 'L' by scaling, not clipping.

    I;16 (16-bit PNG/TIFF) and I holding values in 0..65535 are divided by 257 (65535 -> 255);
    I within 0..255 is kept; F within [0, 1] is multiplied by 255; anything else is min-max scaled.
    """
    arr = np.asarray(img, dtype=np.float64)
    finite = arr[np.isfinite(arr)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    if img.mode.startswith("I;16") or (img.mode == "I" and lo >= 0 and 255 < hi <= 65535):
        out = arr / 257.0
    elif lo >= 0 and hi <= (1.0 if img.mode == "F" else 255.0):
        out = arr * (255.0 if img.mode == "F" else 1.0)
    else:
        out = (arr - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(arr)
    out = np.nan_to_num(out, nan=0.0, posinf=255.0, neginf=0.0)
    return Image.fromarray(np.clip(out, 0, 255).round().astype(np.uint8), mode="L")


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any PIL mode to RGB; transparent pixels are composited on white."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I", "F") or img.mode.startswith("I;16"):
        return _to_8bit_gray(img).convert("RGB")
    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def check_path(path: Path, what: str = "image") -> None:
    """Refuse a path that is not a readable file, saying why: missing, a link loop, a broken link."""
    if path.is_file():
        return
    if path.is_symlink():
        try:
            os.stat(path)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise DataError(f"{what} {path} is a symbolic link loop; point it at a real file") from None
        raise DataError(f"{what} {path} is a broken symbolic link to {os.readlink(path)}; "
                        "fix or remove the link") from None
    if path.exists():
        raise DataError(f"{what} {path} is not a file; pass an image file")
    raise DataError(f"{what} {path} does not exist; check the path")


def _too_big(path: Path, w: int, h: int) -> DataError:
    return DataError(f"image {path} is {w}x{h} px ({w * h / 1e6:.0f} megapixels), over the limit of "
                     f"{MAX_PIXELS / 1e6:.0f} megapixels; downscale it first")


def load_image(path: str | os.PathLike, min_size: int = MIN_SIZE) -> np.ndarray:
    """Read an image file as an RGB uint8 array (EXIF orientation applied).

    Refuses, with one line naming the file: a missing file or broken link, a file without
    read permission, a corrupt or truncated file, one over :data:`MAX_PIXELS`, or one smaller
    than ``min_size`` px.
    """
    path = Path(path)
    check_path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit applies
            with Image.open(path) as img:
                if img.size[0] * img.size[1] > MAX_PIXELS:
                    raise _too_big(path, *img.size)
                img.load()
                rgb = to_rgb(ImageOps.exif_transpose(img))
    except DataError:
        raise
    except Image.DecompressionBombError as exc:  # refused by PIL before the size was known to us
        m = re.search(r"\((\d+) pixels\)", str(exc))
        px = int(m.group(1)) if m else 0
        size = _header_size(path)
        raise (_too_big(path, *size) if size else DataError(
            f"image {path} has {px / 1e6:.0f} megapixels, over the limit of {MAX_PIXELS / 1e6:.0f} megapixels; "
            "downscale it first")) from None
    except PermissionError:
        raise DataError(f"image {path} is not readable (permission); fix its permissions "
                        "(chmod +r) or run as its owner") from None
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


def _header_size(path: Path) -> tuple[int, int] | None:
    """(width, height) from a file's header with PIL's bomb check off (nothing is decoded)."""
    limit = Image.MAX_IMAGE_PIXELS
    try:
        Image.MAX_IMAGE_PIXELS = None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                return img.size
    except Exception:  # noqa: BLE001 - only for the message
        return None
    finally:
        Image.MAX_IMAGE_PIXELS = limit


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


@contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder next to ``path``; swap it in for ``path`` only on success.

    A folder built inside (a generated dataset) is never seen half-written; on an error the
    temporary folder is removed and ``path`` keeps its old content.
    """
    import shutil

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


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
    """Image files directly in ``folder`` (sorted), or the file itself.

    Broken or looping symbolic links with an image extension are listed too, so that
    :func:`load_image` reports them instead of them vanishing silently.
    """
    folder = Path(folder)
    if folder.is_file() or (folder.is_symlink() and not folder.exists()):
        return [folder]
    if not folder.is_dir():
        raise DataError(f"folder {folder} does not exist; check the path")
    try:
        entries = list(folder.iterdir())
    except PermissionError:
        raise DataError(f"folder {folder} is not readable (permission); fix its permissions (chmod +rx)") from None
    return sorted(p for p in entries if p.suffix.lower() in IMAGE_EXTENSIONS
                  and (p.is_file() or (p.is_symlink() and not p.exists())))
