"""Update latency of the expression-transfer explorer (reggan_core.widgets.Explorer).

Each row sets one widget value the way a user does (the observer runs synchronously in the
kernel, as in a notebook) and times it with ``time.perf_counter``:

* update   - until the widget's observer returns: the model call, image encoding and the
             weight view are done and every image has been sent to the browser; the kernel
             is free for the next slider move (``Explorer.last_render_s`` is this minus the
             call overhead);
* ECS/FSS  - until the live ECS and FSS of the new outputs are shown (the explorer computes
             them in a worker thread after the images: FER / 22-category classifier and dlib's
             face-recognition network). Before each such update the embedding cache is
             emptied and only the input and real target are re-embedded (untimed), as they are
             after the first update on a face, so every timed update embeds its new outputs;
* the cold row: the first visit of a target when no checkpoint exists (the ridge fallback
  fits that target's LocalRidge in closed form).

Goal (issue 8): an update under 0.5 s for a 128 px face on this CPU. Browser rendering and
the websocket hop are not included (they add a few ms on localhost).

Usage::

    python benchmarks/bench_widget.py                       # writes benchmarks/results/widget.md
    python benchmarks/bench_widget.py --repeats 5 --out /tmp/widget.md
"""
from __future__ import annotations

import argparse
import logging
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from reggan_core.utils import cpu_name  # noqa: E402

GOAL_S = 0.5
TARGETS = ("happy", "surprised", "sad", "angry", "disgusted", "fearful", "happily_surprised", "awed")


def stats(values: list[float]) -> tuple[float, float, float]:
    """median, 90th percentile and max, in ms."""
    v = sorted(values)
    p90 = v[min(len(v) - 1, int(round(0.9 * (len(v) - 1))))]
    return 1e3 * statistics.median(v), 1e3 * p90, 1e3 * v[-1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=str(ROOT / "checkpoints" / "reggan_embedded.pt"))
    p.add_argument("--dataset-root", default=str(ROOT / "datasets" / "embedded"))
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "widget.md")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    import torch

    from reggan_core.imageio import to_uint8, write_text
    from reggan_core.widgets import Explorer, MetricScorer, RidgeBackend, make_backend

    t0 = time.perf_counter()
    backend = make_backend(a.checkpoint, a.dataset_root)
    scorer = MetricScorer()
    explorer = Explorer(backend, a.dataset_root, scorer=scorer, target="happy")
    setup_s = time.perf_counter() - t0

    cold: list[float] = []
    for name in TARGETS:  # warm up: every target loaded (checkpoint) or fitted (fallback)
        t = time.perf_counter()
        explorer.target.value = name
        cold.append(time.perf_counter() - t)
        explorer.wait()
    subjects = [v for _, v in explorer.subject.options if v in explorer.index.images]

    def reset_cache() -> None:
        if scorer.embedder is not None:
            scorer.embedder.clear()
            faces = [explorer.x] + ([explorer.real] if explorer.real is not None else [])
            scorer.embedder.embed(to_uint8(torch.stack(faces)))

    def strength(i: int) -> None:
        explorer.strength.value = [0.5, 0.75, 1.0, 1.25][i % 4]

    def target(i: int) -> None:
        explorer.target.value = TARGETS[i % len(TARGETS)]

    def face(i: int) -> None:
        explorer.subject.value = subjects[i % len(subjects)]

    def pixel(i: int) -> None:
        explorer.px.value = 20 + (7 * i) % 90

    def weight_map(i: int) -> None:
        explorer.map_kind.value = ["abs", "bias", "centre", "gain"][i % 4]

    cases = [("strength slider", strength, True), ("target menu", target, True), ("face menu", face, True),
             ("pixel x slider (weight view only)", pixel, False), ("weight map kind", weight_map, False)]
    rows = []
    for metrics in (False, True):
        if metrics and scorer.embedder is None and scorer.classifier is None:
            continue
        explorer.live_metrics.value = metrics
        explorer.wait()
        for label, action, model_call in cases:
            if not metrics and not model_call:
                continue
            update, shown = [], []
            for i in range(a.repeats):
                if metrics and model_call:
                    reset_cache()
                t = time.perf_counter()
                action(i + 1)
                update.append(time.perf_counter() - t)
                if metrics and model_call:
                    explorer.wait()
                    shown.append(time.perf_counter() - t)
            rows.append((label, "on" if metrics and model_call else "off" if model_call else "-",
                         stats(update), stats(shown) if shown else None))

    lines = [
        "# Explorer update latency (`benchmarks/bench_widget.py`)",
        "",
        f"Model: {backend.name}; refined column: {backend.refined_note or 'RegGAN refiner'}.  ",
        f"ECS classifier: {getattr(scorer.classifier, 'name', 'none')}; FSS embedder: "
        f"{getattr(scorer.embedder, 'name', 'none')}.  ",
        f"Machine: {cpu_name()}, {os.cpu_count()} logical CPUs, torch {torch.__version__} with "
        f"{torch.get_num_threads()} thread(s), Python {platform.python_version()}; load average before the run "
        f"{os.getloadavg()[0]:.1f} (a shared machine: numbers vary with its load).  ",
        f"Command: `{' '.join([Path(sys.executable).name, 'benchmarks/bench_widget.py'] + (argv or sys.argv[1:]))}`"
        f" ({a.repeats} updates per row, {time.strftime('%Y-%m-%d')}).",
        "",
        f"Goal: an update under {GOAL_S:.1f} s for a 128 px face. *update* = until the images of the update are "
        "sent and the kernel is free again (model + encoding + weight view); *ECS/FSS* = until the live metrics "
        "of the new outputs, computed in a worker thread after the images, are shown.",
        "",
        "| widget changed | live ECS/FSS | update median / p90 / max (ms) | update p90 < 0.5 s "
        "| ECS/FSS shown median / p90 / max (ms) |",
        "|---|---|---|---|---|",
    ]
    for label, metrics, u, m in rows:
        ok = "yes" if u[1] < GOAL_S * 1e3 else "**no**"
        shown = "-" if m is None else f"{m[0]:.0f} / {m[1]:.0f} / {m[2]:.0f}"
        lines.append(f"| {label} | {metrics} | {u[0]:.0f} / {u[1]:.0f} / {u[2]:.0f} | {ok} | {shown} |")
    kind = "fit the target's ridge in closed form" if isinstance(backend, RidgeBackend) else "first use of the target"
    lines += ["", f"Set-up (load the model and the metric networks, first update): {setup_s:.1f} s. "
              f"First visit of each of {len(TARGETS)} targets ({kind}; update only): median "
              f"{1e3 * statistics.median(cold):.0f} ms, max {1e3 * max(cold):.0f} ms.", ""]
    text = "\n".join(lines)
    print(text)
    write_text(text, a.out)
    print(f"written to {a.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
