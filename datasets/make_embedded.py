#!/usr/bin/env python
"""Generate the embedded CFEE-shaped dataset: <out>/<subject>/<category>.jpg, 128x128.

Deterministic from --seed (same files on every machine with the same library versions).
The committed copy is the default (40 subjects); ``--subjects 230`` makes a CFEE-sized set.

    python datasets/make_embedded.py                       # datasets/embedded, 40 subjects
    python datasets/make_embedded.py --subjects 230 --out /tmp/embedded230

How the faces are made: see reggan_core/synth.py and datasets/README.md.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tqdm import tqdm  # noqa: E402

from reggan_core.imageio import atomic_dir  # noqa: E402


def _write_subject(args: tuple[int, int, str, int]) -> str:
    from PIL import Image

    from reggan_core.synth import make_subject

    k, seed, folder, quality = args
    images = make_subject(k, seed)
    subject = f"S{k + 1:03d}"
    target = Path(folder) / subject
    target.mkdir(parents=True, exist_ok=True)
    for name, img in images.items():
        Image.fromarray(img).save(target / f"{name}.jpg", quality=quality, subsampling=0)
    return subject


def generate(out: Path, subjects: int, seed: int = 0, workers: int | None = None, quality: int = 92) -> Path:
    """Write the dataset into a temporary folder beside ``out``, then swap it in (never half-written)."""
    if subjects < 1:
        raise SystemExit(f"--subjects must be >= 1, got {subjects}")
    out = out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    workers = workers or min(os.cpu_count() or 1, 8)
    with atomic_dir(out) as tmp:
        from reggan_core.synth import base_faces

        base_faces()  # fail early (e.g. no face found) before starting workers
        jobs = [(k, seed, str(tmp), quality) for k in range(subjects)]
        with ProcessPoolExecutor(workers) as pool:
            for _ in tqdm(pool.map(_write_subject, jobs, chunksize=4), total=subjects, desc="subjects"):
                pass
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=ROOT / "datasets" / "embedded")
    p.add_argument("--subjects", type=int, default=40)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--quality", type=int, default=92, help="JPEG quality")
    a = p.parse_args()
    t0 = time.perf_counter()
    out = generate(a.out, a.subjects, a.seed, a.workers, a.quality)
    n = sum(1 for _ in out.glob("*/*.jpg"))
    print(f"wrote {n} images of {a.subjects} subjects to {out} in {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
