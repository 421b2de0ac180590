"""Inference speed of RegGAN vs the refiner-only baseline on this CPU.

Two measurements per model, both with ``torch.inference_mode`` and torch's default threads:

* one face end to end - an aligned 128x128 RGB uint8 crop in, the translated uint8 crop out
  (``RegGAN.translate``: to tensor, ridge layer, refiner, blend, back to uint8). Median and
  10th/90th percentiles of ``--repeats`` calls after ``--warmup`` calls. Target: <= 20 ms.
  The models take turns call by call, so load from other jobs affects them alike.
* batch-64 throughput - a (64, 3, 128, 128) float batch through ``model(x, labels)``
  (mixed targets), images per second over ``--batches`` batches after one warm-up batch.

Models: the shipped checkpoints (``checkpoints/reggan_embedded.pt`` and
``checkpoints/refiner_only_embedded.pt``) when present, else freshly initialised models of the
same architecture (speed does not depend on the weights); plus the default US-GAN width
(ngf = 64) for reference. Face alignment (dlib detection + landmarks) is timed separately,
since the target is about the aligned face.

    python benchmarks/bench_inference.py                 # writes benchmarks/results/inference.md
    python benchmarks/bench_inference.py --repeats 20 --batches 1 --out /tmp/inference.md
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from reggan_core.utils import cpu_name  # noqa: E402


def build_models():
    """(name, model, source) for the shipped checkpoints or same-size fresh models."""
    from reggan_core.categories import CATEGORY_NAMES
    from reggan_core.config import RefinerConfig
    from reggan_core.model import RegGAN, load_generator
    from reggan_core.regression import RidgeConfig

    targets = [c for c in CATEGORY_NAMES if c != "neutral"]
    out = []
    for name, file, ridge in (("RegGAN", "reggan_embedded.pt", RidgeConfig()),
                              ("refiner-only", "refiner_only_embedded.pt", None)):
        path = ROOT / "checkpoints" / file
        if path.is_file():
            out.append((f"{name} (ngf=32)", load_generator(path), f"checkpoints/{file}"))
        else:
            out.append((f"{name} (ngf=32)", RegGAN(targets, refiner=RefinerConfig(ngf=32), ridge=ridge).eval(),
                        "fresh weights"))
    for name, ridge in (("RegGAN", RidgeConfig()), ("refiner-only", None)):
        out.append((f"{name} (ngf=64, US-GAN width)", RegGAN(targets, refiner=RefinerConfig(ngf=64),
                                                               ridge=ridge).eval(), "fresh weights"))
    return out


def time_interleaved(models, face, repeats: int, warmup: int, batches: int, batch: int = 64):
    """Per model: single-face times (ms) and batch-64 images/s.

    Models take turns call by call, so a load spike from other jobs hits all of them alike.
    """
    import torch

    g = torch.Generator().manual_seed(0)
    x = torch.rand(batch, 3, 128, 128, generator=g) * 2 - 1
    single = [[] for _ in models]
    batch_s = [0.0 for _ in models]
    with torch.inference_mode():
        for i in range(warmup + repeats):
            for k, m in enumerate(models):
                t0 = time.perf_counter()
                m.translate(face, "happy")
                if i >= warmup:
                    single[k].append((time.perf_counter() - t0) * 1000)
        for i in range(batches + 1):  # the first round warms up
            for k, m in enumerate(models):
                labels = torch.arange(batch) % len(m.targets)
                t0 = time.perf_counter()
                m(x, labels)
                if i:
                    batch_s[k] += time.perf_counter() - t0
    return single, [batches * batch / t for t in batch_s]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=100)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--batches", type=int, default=3)
    p.add_argument("--out", type=Path, default=HERE / "results" / "inference.md")
    a = p.parse_args()

    import numpy as np
    import torch
    from skimage import data as skdata

    from reggan_core.faces import align_face
    from reggan_core.imageio import write_text
    from reggan_core.networks import count_parameters

    photo = skdata.astronaut()
    face = align_face(photo)  # also the warm-up (loads the dlib models)
    t0 = time.perf_counter()
    for _ in range(5):
        align_face(photo)
    align_ms = (time.perf_counter() - t0) / 5 * 1000

    models = build_models()
    single, throughput = time_interleaved([m for _, m, _ in models], face, a.repeats, a.warmup, a.batches)
    rows = []
    for (name, model, source), times, ips in zip(models, single, throughput):
        q = np.percentile(times, [10, 50, 90])
        rows.append((name, source, count_parameters(model.refiner), q, ips))
        print(f"{name:34s} median {q[1]:6.1f} ms   batch-64 {ips:6.1f} img/s", flush=True)

    load = os.getloadavg()
    lines = [
        "# Inference benchmark",
        "",
        f"Measured {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC on {cpu_name()}, {os.cpu_count()} logical "
        f"cores, torch {torch.__version__} with {torch.get_num_threads()} threads, Python "
        f"{platform.python_version()}; load average at the end {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} "
        "(1 / 5 / 15 min; above 1 means other jobs shared the cores).",
        "",
        f"Command: `python benchmarks/bench_inference.py --repeats {a.repeats} --warmup {a.warmup} "
        f"--batches {a.batches}`",
        "",
        "One face = an aligned 128x128 uint8 crop through `RegGAN.translate` (ridge layer + refiner + "
        "conversions); target <= 20 ms. Batch 64 = `model(x, labels)` on a (64, 3, 128, 128) batch.",
        "",
        "| model | weights | refiner parameters | one face: median ms (p10-p90) | <= 20 ms | batch-64 images/s |",
        "|---|---|---:|---:|:---:|---:|",
    ]
    for name, source, n_params, q, ips in rows:
        lines.append(f"| {name} | {source} | {n_params / 1e6:.2f} M | {q[1]:.1f} ({q[0]:.1f}-{q[2]:.1f}) | "
                     f"{'yes' if q[1] <= 20 else 'no'} | {ips:.0f} |")
    lines += ["", f"Face alignment alone (dlib HOG detection + 68 landmarks + warp, 512 px photo): "
                  f"{align_ms:.0f} ms per face.", ""]
    text = "\n".join(lines)
    write_text(text, a.out)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
