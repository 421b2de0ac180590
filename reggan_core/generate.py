"""Translate faces with a trained generator.

    python -m reggan_core.generate --checkpoint checkpoints/reggan_embedded.pt \\
        --input photos/ --target happy --out results/ [--all-faces] [--crop] [--no-align] \\
        [--strength 1.0] [--regression]

Each input image is read and checked like the data layer does (corrupt, truncated, tiny
or face-less images are refused with one line naming the file) and written atomically as
``<out>/<stem>_<target>.png``. What is written:

* default - **photo out**: the user's photo at its own resolution with the face changed.
  The largest face (every face with ``--all-faces``) is aligned to the model's canonical
  crop (reflection-padded), translated, and its change pasted back through a feathered face
  mask (:func:`reggan_core.photo.translate_photo`); pixels outside the mask are untouched.
* ``--crop``: the aligned, translated crop itself (size x size), as before photo-out.
* ``--no-align``: the image is centre-cropped and resized (for faces that are aligned
  already) and the translated crop is written; implies crop output.

A bad image does not stop the others; the exit code is 1 when any image was skipped.
Refused before anything is read (exit 2): two inputs that would write the same output
(``face.jpg`` and ``face.png``), ``--out`` naming an existing file, a negative strength,
``--all-faces`` together with ``--crop`` or ``--no-align``.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Sequence

from .errors import ConfigError, DataError, RegGANError
from .faces import align_face, resize_crop
from .imageio import IMAGE_EXTENSIONS, list_images, load_image, save_image
from .model import RegGAN, load_generator
from .photo import align_faces, translate_photo
from .utils import get_device

log = logging.getLogger(__name__)

__all__ = ["generate", "load_generator", "main"]


def generate(model: RegGAN | str | os.PathLike, inputs: str | os.PathLike, target: str, out_dir: str | os.PathLike,
             align: bool = True, strength: float = 1.0, save_regression: bool = False,
             crop: bool = False, all_faces: bool = False,
             ) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Translate every image in ``inputs`` (a folder or one file) to ``target``.

    Writes the photo with its face changed (``crop=False``, the default; every face with
    ``all_faces``), or the translated aligned crop (``crop=True``, or ``align=False``).
    Returns (written files, [(refused file, one-line reason)]). The model and the target
    are checked before anything is read or written.
    """
    check_strength(strength)
    if all_faces and (crop or not align):
        raise ConfigError(f"--all-faces works on the photo output; drop {'--crop' if crop else '--no-align'}")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise DataError(f"--out {out_dir} is an existing file, not a folder; pass a folder for the outputs")
    if not isinstance(model, RegGAN):
        model = load_generator(model)
    name = model.targets[model.label(target)]  # unknown target -> ConfigError listing the model's targets
    files = list_images(inputs)
    if not files:
        raise DataError(f"no images in {inputs}; supported: {' '.join(IMAGE_EXTENSIONS)}")
    by_stem: dict[str, list[Path]] = {}
    for path in files:
        by_stem.setdefault(path.stem, []).append(path)
    clash = next((fs for fs in by_stem.values() if len(fs) > 1), None)
    if clash:
        raise DataError(f"inputs {', '.join(str(f) for f in clash)} would all write {clash[0].stem}_{name}.png; "
                        "rename or remove all but one")
    size = model.size or 128
    written: list[Path] = []
    failed: list[tuple[Path, str]] = []
    photo_out = align and not crop
    for path in files:
        try:
            img = load_image(path)
            if photo_out:
                faces = align_faces(img, size=size, all_faces=all_faces, name=str(path))
            else:
                face = align_face(img, size=size, name=str(path)) if align else resize_crop(img, size)
        except DataError as exc:  # NoFaceError included
            failed.append((path, str(exc)))
            log.warning("skipped %s", exc)
            continue
        if photo_out:
            for kind in ("refined", "regression") if save_regression else ("refined",):
                result, _ = translate_photo(model, img, name, strength, faces=faces, output=kind)
                suffix = "" if kind == "refined" else "_regression"
                written.append(save_image(result, out_dir / f"{path.stem}_{name}{suffix}.png"))
            continue
        out = model.translate(face, name, strength)
        written.append(save_image(out["refined"], out_dir / f"{path.stem}_{name}.png"))
        if save_regression:
            written.append(save_image(out["regression"], out_dir / f"{path.stem}_{name}_regression.png"))
    return written, failed


def check_strength(strength: float) -> float:
    """Refuse a negative or non-finite strength (0 = the input, 1 = full translation, > 1 exaggerates)."""
    import math

    if not math.isfinite(strength) or strength < 0:
        why = "is not a finite number" if not math.isfinite(strength) else \
            "is negative, which would push the face away from the target expression"
        raise DataError(f"--strength {strength:g} {why}; use 0 (the input) to 1 (full translation), "
                        "above 1 exaggerates")
    return strength


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reggan_core.generate",
                                     description="Translate neutral faces to a target expression: "
                                                 "photo in, photo out (or the aligned crop with --crop).")
    parser.add_argument("--checkpoint", required=True, help="generator.pt or a training checkpoint")
    parser.add_argument("--input", required=True, help="an image or a folder of images")
    parser.add_argument("--target", required=True, help="target expression, e.g. happy or happily_surprised")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--no-align", action="store_true",
                        help="inputs are aligned crops already (centre-crop and resize; writes the crop)")
    parser.add_argument("--crop", action="store_true",
                        help="write the aligned, translated crop instead of the photo with the face changed")
    parser.add_argument("--all-faces", action="store_true",
                        help="change every face of a group photo (default: the largest face only)")
    parser.add_argument("--strength", type=float, default=1.0, help="0 = input, 1 = full translation")
    parser.add_argument("--regression", action="store_true", help="also write the ridge layer's output")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    try:
        model = load_generator(args.checkpoint, map_location=get_device(args.device))
        written, failed = generate(model, args.input, args.target, args.out, align=not args.no_align,
                                   strength=args.strength, save_regression=args.regression,
                                   crop=args.crop, all_faces=args.all_faces)
    except RegGANError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for _, reason in failed:
        print(f"skipped: {reason}", file=sys.stderr)
    print(f"wrote {len(written)} image(s) to {args.out}" + (f"; skipped {len(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
