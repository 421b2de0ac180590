"""Benchmark of the closed-form local ridge fit (LocalRidge.fit) on 128x128x3 images, r = 3.

For each N it reports, measured in a fresh subprocess (so peak memory has a clean baseline):

* ours      - wall time of ``LocalRidge().fit`` with its default backend (``"auto"``: the fused
              numba kernels on CPU), best of ``--repeats``, after one untimed warm-up fit;
* first fit - the warm-up fit's wall time: it includes loading (or, on a fresh machine,
              compiling) the numba kernels, a once-per-process cost;
* torch     - the same fit with ``backend="torch"`` (the tiled-GEMM backend that also runs on
              GPUs), best of ``--repeats``;
* sklearn   - the per-pixel loop with ``sklearn.linear_model.Ridge``: ``--sk-fits`` randomly
              chosen (channel, pixel) fits are timed after 20 untimed warm-up fits, and the mean
              is scaled up to all C*H*W fits (building each pixel's design matrix is NOT timed,
              which favours sklearn);
* floor     - the arithmetic floor: the flops of Gram accumulation (2 N (D+1)^2 per pixel, as
              a GEMM counts them), right-hand sides (2 N (D+1)), Cholesky ((D+1)^3 / 3) and the
              two triangular solves (2 (D+1)^2), divided by the float64 matmul rate measured in
              the same subprocess (2048 x 2048 @ 2048 x 2048, best of 3);
* CPU       - the process CPU time of that fit (all threads);
* peak MB   - peak resident memory during the timed fits minus the resident memory just
              before them (sampled every 2 ms from /proc/self/statm).

The numba backend does fewer flops than the floor counts: neighbouring pixels share products
(24 multiply-adds per pixel and sample for r = 3 instead of the 110 of a GEMM-formed Gram
matrix and right-hand side), so "ours / floor" can fall below 1.

The training pairs are synthetic 8-bit images (smooth random faces-sized textures and a
locally linear target) drawn from a pool of ``--pool`` pairs that is cycled to make N pairs,
so the pool's memory is the same for every N. Targets (issue 4): >= 100x faster than the
sklearn loop, <= 3x the floor, peak memory flat in N.

Usage::

    python benchmarks/bench_ridge.py                      # N = 50 200 1000, writes results/ridge.md
    python benchmarks/bench_ridge.py --sizes 50 --sk-fits 50 --out /tmp/ridge.md   # quick look
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

SIZE, CHANNELS, R, LAM = 128, 3, 3, 0.4
FLAT_SLACK_MB = 8


def make_pool(pool: int, seed: int = 0):
    """Synthetic 8-bit image pairs (pool, 3, 128, 128) in [-1, 1]: smooth textures and targets."""
    import torch
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(seed)
    low = torch.rand(pool, CHANNELS, 16, 16, generator=g)
    x = F.interpolate(low, size=(SIZE, SIZE), mode="bilinear", align_corners=False)
    x = x + 0.05 * torch.randn(pool, CHANNELS, SIZE, SIZE, generator=g)
    x = (x.clamp(0, 1) * 255).round() / 127.5 - 1
    gain = 0.5 + torch.rand(1, CHANNELS, SIZE, SIZE, generator=g)
    y = gain * torch.roll(x, shifts=1, dims=-1) + 0.05 * torch.randn(pool, CHANNELS, SIZE, SIZE, generator=g)
    y = (((y + 1) * 127.5).round().clamp(0, 255)) / 127.5 - 1
    return x.contiguous(), y.contiguous()


def batches(x, y, n: int, batch: int):
    """N pairs as slices of the pool (views, no copies), cycling through it."""
    pool = x.shape[0]
    done = 0
    while done < n:
        start = done % pool
        k = min(batch, n - done, pool - start)
        yield x[start:start + k], y[start:start + k]
        done += k


def rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakRSS:
    """Samples the resident set size in a thread; ``peak`` is the maximum seen."""

    def __init__(self, every: float = 0.002):
        self.every, self.peak, self._stop = every, rss_bytes(), threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes())
            time.sleep(self.every)

    def __enter__(self) -> "PeakRSS":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())


def matmul_rate() -> float:
    """float64 GEMM flop/s on this machine now (best of 3)."""
    import torch

    a = torch.randn(2048, 2048, dtype=torch.float64)
    b = torch.randn(2048, 2048, dtype=torch.float64)
    a @ b
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * 2048 ** 3 / best


def floor_flops(n: int) -> float:
    d1 = R * R + 1
    per_pixel = 2 * n * d1 * d1 + 2 * n * d1 + d1 ** 3 / 3 + 2 * d1 * d1
    return CHANNELS * SIZE * SIZE * per_pixel


def run_one(n: int, args) -> dict:
    """Measure one N (runs inside its own subprocess)."""
    import numpy as np
    import torch
    from sklearn.linear_model import Ridge

    from reggan_core.regression import LocalRidge, RidgeConfig, pad_image

    x, y = make_pool(min(args.pool, n))
    cfg = RidgeConfig(r=R, lam=LAM, size=SIZE, channels=CHANNELS)
    rate = matmul_rate()

    def fit(backend: str = "auto") -> LocalRidge:
        return LocalRidge(cfg).fit(batches(x, y, n, args.batch_size), batch_size=args.batch_size, backend=backend)

    t0 = time.perf_counter()
    fit()                                                    # loads / compiles the kernels
    first = time.perf_counter() - t0
    times, cpu = [], []
    base = rss_bytes()
    with PeakRSS() as mem:
        for _ in range(args.repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            model = fit()
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
            del model
    ours = min(times)
    torch_times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        fit("torch")
        torch_times.append(time.perf_counter() - t0)
    model = LocalRidge(cfg).double().fit(batches(x.double(), y.double(), n, args.batch_size))

    # the scikit-learn per-pixel loop on a random sample of (channel, pixel) fits
    rng = np.random.default_rng(0)
    picks = [(int(c), int(p)) for c, p in zip(rng.integers(0, CHANNELS, args.sk_fits),
                                               rng.integers(0, SIZE * SIZE, args.sk_fits))]
    idx = np.arange(n) % x.shape[0]
    xp = pad_image(x, R, "zeros").double().numpy()[idx]
    yn = y.double().numpy()[idx]
    designs = []
    for c, p in picks:
        py, px = divmod(p, SIZE)
        a = xp[:, c, py:py + R, px:px + R].reshape(n, -1)
        designs.append((np.c_[a, np.ones(n)], yn[:, c, py, px]))
    for a, t in designs[:20]:                                # warm-up: imports, first-call costs
        Ridge(alpha=LAM, fit_intercept=False).fit(a, t)
    coefs = []
    t0 = time.perf_counter()
    for a, t in designs:
        coefs.append(Ridge(alpha=LAM, fit_intercept=False).fit(a, t).coef_)
    per_fit = (time.perf_counter() - t0) / len(designs)
    # sanity: the sampled sklearn fits agree with ours
    w = model.weight.detach().reshape(CHANNELS, -1, R * R).numpy()
    b = model.bias.detach().reshape(CHANNELS, -1).numpy()
    err = max(float(np.abs(np.r_[w[c, p], b[c, p]] - k).max() / np.abs(k).max())
              for (c, p), k in zip(picks, coefs))
    from reggan_core.regression import resolve_backend

    return {"n": n, "ours_s": ours, "times": times, "ours_cpu_s": cpu[times.index(ours)], "first_s": first,
            "backend": resolve_backend("auto", torch.device("cpu")), "torch_s": min(torch_times),
            "sk_per_fit_s": per_fit,
            "sk_total_s": per_fit * CHANNELS * SIZE * SIZE, "rate_flops": rate,
            "floor_s": floor_flops(n) / rate, "peak_mb": (mem.peak - base) / 2**20,
            "max_rel_err_vs_sklearn": err, "threads": torch.get_num_threads()}


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch

    return (f"{cpu}, {os.cpu_count()} logical cores, {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}, torch {torch.__version__} ({torch.get_num_threads()} threads), "
            f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")


def load_avg() -> str:
    try:
        return " / ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def table(rows: list[dict], args, load_before: str, load_after: str, command: str) -> str:
    lines = [
        "# Local ridge fit benchmark (128x128x3, r = 3, lambda = 0.4)",
        "",
        f"- date: {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- machine: {machine()}",
        f"- load average (1/5/15 min) before / after: {load_before} | {load_after}",
        f"- command: `{command}`",
        f"- ours: `LocalRidge().fit` (default backend: `{rows[0]['backend']}`) on batches of {args.batch_size}, "
        f"float32 inputs, float64 sums and solves, best of {args.repeats} after one warm-up fit",
        "- first fit: the warm-up fit, including loading the numba kernels from their cache "
        "(compiling them on a fresh machine)",
        f"- torch backend: `LocalRidge().fit(..., backend=\"torch\")` (tiled GEMM + batched LAPACK Cholesky, "
        f"also the GPU path), best of {args.repeats}",
        f"- sklearn loop: `Ridge(alpha=0.4, fit_intercept=False)` per (channel, pixel) on [patch, 1]; "
        f"**timed on {args.sk_fits} random fits (after 20 untimed warm-up fits) and scaled up to "
        f"{CHANNELS * SIZE * SIZE}** (design matrices built outside the timing)",
        "- floor: flops (Gram 2N(D+1)^2 + rhs 2N(D+1) + Cholesky (D+1)^3/3 + solves 2(D+1)^2 per pixel) "
        "/ float64 2048^3 matmul rate measured in the same process",
        "- ours, CPU: process CPU time (all threads) of the same fit; wall time above it on a busy machine "
        "means waiting for a core",
        "- peak MB: peak RSS during the timed fits minus RSS before them (data pool excluded)",
        "- the numba backend shares products between neighbouring pixels, so it does fewer flops than "
        "the floor counts and ours / floor can be below 1",
        "",
        "| N | ours (s) | ours, CPU (s) | first fit (s) | torch backend (s) | sklearn loop, scaled (s) "
        "| speed-up | floor (s) | ours / floor | matmul GFLOP/s | peak MB | max rel. diff vs sklearn |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['n']} | {r['ours_s']:.3f} | {r['ours_cpu_s']:.3f} | {r['first_s']:.2f} | {r['torch_s']:.3f} "
            f"| {r['sk_total_s']:.1f} "
            f"| {r['sk_total_s'] / r['ours_s']:.0f}x "
            f"| {r['floor_s']:.3f} | {r['ours_s'] / r['floor_s']:.1f}x | {r['rate_flops'] / 1e9:.1f} "
            f"| {r['peak_mb']:.0f} | {r['max_rel_err_vs_sklearn']:.1e} |"
        )
    speed = min(r["sk_total_s"] / r["ours_s"] for r in rows)
    ratio = max(r["ours_s"] / r["floor_s"] for r in rows)
    full = [r for r in rows if r["n"] >= args.batch_size] or rows   # N < batch size: a smaller batch
    peaks = [r["peak_mb"] for r in full]
    # RSS moves by a few MB with the allocator whatever N is, so "flat" allows 20% or 8 MB
    spread = max(peaks) - min(peaks)
    flat = spread <= max(0.2 * min(peaks), FLAT_SLACK_MB)
    data_mb = max(r["n"] for r in full) * 2 * CHANNELS * SIZE * SIZE * 4 / 2**20
    lines += [
        "",
        f"Targets: speed-up >= 100x: {'met' if speed >= 100 else 'NOT met'} (worst {speed:.0f}x); "
        f"ours / floor <= 3x: {'met' if ratio <= 3 else 'NOT met'} (worst {ratio:.1f}x); "
        f"peak memory flat in N (over the N >= {args.batch_size} rows, whose batches are all full size, "
        f"peaks within 20% or {FLAT_SLACK_MB} MB of each other): {'met' if flat else 'NOT met'} "
        f"({min(peaks):.0f}-{max(peaks):.0f} MB; the largest N's pairs hold {data_mb:.0f} MB as float32).",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[50, 200, 1000], help="numbers of training pairs N")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--sk-fits", type=int, default=300, help="sklearn fits timed per N (then scaled up)")
    ap.add_argument("--pool", type=int, default=256, help="distinct synthetic pairs, cycled to make N")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "ridge.md")
    ap.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one is not None:
        print(json.dumps(run_one(args.one, args)))
        return
    command = "python benchmarks/bench_ridge.py " + " ".join(sys.argv[1:])
    load_before = load_avg()
    rows = []
    for n in args.sizes:
        cmd = [sys.executable, __file__, "--one", str(n), "--batch-size", str(args.batch_size),
               "--repeats", str(args.repeats), "--sk-fits", str(args.sk_fits), "--pool", str(args.pool)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
        print(f"N={n}: ours {rows[-1]['ours_s']:.3f} s, sklearn (scaled) {rows[-1]['sk_total_s']:.1f} s",
              flush=True)
    text = table(rows, args, load_before, load_avg(), command.strip())
    print(text)
    from reggan_core.imageio import write_text

    write_text(text, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
