"""Real-face benchmark: RegGAN and its ablations on held-out real people and real performers (dataset v2).

Methods: copy-input (the input unchanged), regression-only (the RegGAN checkpoint's ridge output),
refiner-only (the refiner-only checkpoint), RegGAN (ridge + refiner). Per (method, target, set):
ECS by FER2013 and by face-api, dlib distance and FaceRes cosine to the input, L1 to the real target
(performers only); per method FID / KID against real expressive frames. The judges are pretrained
elsewhere and share nothing with training. Library: :mod:`reggan_core.metrics.realfaces`.

    python benchmarks/bench_real_faces.py [--reggan checkpoints/reggan_v2.pt]
        [--refiner-only checkpoints/refiner_only_v2.pt] [--out benchmarks/results/real_faces.md]
        [--figure figures/real_faces.png] [--strengths 0.5 1 1.5 2]

Writes the markdown table, a CSV beside it, the image grid (``--figure``) and the ECS bar chart
(``<figure stem>_ecs.png``), all atomically. Then the strength sweep (``--strengths``; none to skip):
regression-only, refiner-only and RegGAN with their change scaled by each strength, so that RegGAN is
compared with each ablation at the same identity distance (``<out stem>_strength.md`` and
``<figure stem>_tradeoff.png``).
"""
from __future__ import annotations

import argparse
import platform
import shlex
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))


def parse_args(argv: list[str] | None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reggan", type=Path, default=ROOT / "checkpoints" / "reggan_v2.pt",
                    help="RegGAN checkpoint (gives RegGAN and regression-only)")
    ap.add_argument("--refiner-only", type=Path, default=ROOT / "checkpoints" / "refiner_only_v2.pt",
                    help="refiner-only checkpoint (the ablation without the ridge layer)")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "real_faces.md", help="markdown table (CSV beside it)")
    ap.add_argument("--figure", type=Path, default=ROOT / "figures" / "real_faces.png",
                    help="image grid PNG; the ECS bar chart goes to <stem>_ecs.png")
    ap.add_argument("--dataset", type=Path, default=None, help="dataset v2 folder (default: reggan_core.data.dataset_root('v2'))")
    ap.add_argument("--no-performances", action="store_true",
                    help="FID/KID real set = the real_pairs targets only (not the labelled performance frames)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda[:N] (judges and generators)")
    ap.add_argument("--strengths", type=float, nargs="*", default=None, metavar="S",
                    help="strengths of the sweep (default 0.5 1 1.5 2; pass the flag alone to skip the sweep)")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.strengths and not all(s >= 0 for s in args.strengths):
        print(f"error: --strengths {' '.join(f'{s:g}' for s in args.strengths)} has a negative value; use "
              "strengths >= 0 (1 = the model's own change)", file=sys.stderr)
        return 2
    for flag, path in (("--reggan", args.reggan), ("--refiner-only", args.refiner_only)):
        if not path.is_file():
            print(f"error: checkpoint {path} does not exist; pass {flag} PATH (e.g. {flag} "
                  f"checkpoints/{'reggan' if flag == '--reggan' else 'refiner_only'}_embedded.pt)", file=sys.stderr)
            return 2
    from reggan_core.errors import RegGANError
    from reggan_core.metrics import realfaces as rf
    from reggan_core.model import check_no_leakage
    from reggan_core.paths import shown
    from reggan_core.utils import cpu_name

    t0 = time.perf_counter()
    try:
        reggan, refiner_only = rf.load_models(args.reggan, args.refiner_only, device=args.device)
        methods = rf.methods_from_models(reggan, refiner_only)
        faces = rf.load_faces(args.dataset)
        subjects = [f.subject for f in faces]
        leaks = sorted(set(check_no_leakage(reggan, subjects)) | set(check_no_leakage(refiner_only, subjects)))
        real, real_what = rf.real_expressive_frames(args.dataset, use_performances=not args.no_performances)
        judges = rf.load_judges(device=args.device)
        result = rf.evaluate(methods, faces, judges=judges, real_frames=real)
        strengths = rf.SWEEP_STRENGTHS if args.strengths is None else tuple(args.strengths)
        sweep = rf.strength_sweep(rf.scalable_methods(reggan, refiner_only), faces, judges, strengths,
                                  scored=result["rows"]) if strengths else []
    except RegGANError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    seconds = time.perf_counter() - t0
    n_held = sum(f.group == "held-out" for f in faces)
    n_perf = len(faces) - n_held
    command = "python benchmarks/bench_real_faces.py " + shlex.join(sys.argv[1:] if argv is None else list(argv))
    header = (
        "# Real-face benchmark (dataset v2)\n\n"
        f"Checkpoints: RegGAN `{shown(args.reggan)}`, refiner-only `{shown(args.refiner_only)}`. Held-out real people: "
        f"{n_held} (val/test subjects whose source is one person: "
        f"{', '.join(f.subject for f in faces if f.group == 'held-out')}); performers (real_pairs): {n_perf} "
        f"({', '.join(f.subject for f in faces if f.group == 'real_pairs')}). N per cell is in the table; "
        "L1 only where a real target exists (performers). The held-out people's own expressive images are "
        "synthesised, so they get no L1. Targets: the 6 basic expressions.\n\n"
        "Judges (pretrained elsewhere, no part of training): FER2013 mini-Xception and face-api "
        "FaceExpressionNet (ECS = share of outputs whose top class is the target), dlib ResNet descriptor "
        "(Euclidean distance to the input; published methods: median 0.38, best 0.30) and HSE FaceRes (cosine to "
        "the input), FID-Inception for FID/KID. "
        + (f"LEAKAGE: scored subjects {', '.join(leaks)} were training subjects. " if leaks else
           "No scored subject is a training subject of either checkpoint (checked with check_no_leakage). ")
        + "The performers' expressions were transferred into the synthetic training targets (dataset v2), so "
        "performer scores and FID/KID are not fully independent of the training data.\n\n"
        f"Measured {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC on {cpu_name()} ({platform.machine()}), "
        f"Python {platform.python_version()}, command `{command}`, {seconds:.0f} s."
    )
    md, csv_path = rf.write_results(result, args.out, header, real_what)
    grid = rf.image_grid(result, args.figure)
    bars = rf.ecs_bar_chart(result, args.figure.with_name(args.figure.stem + "_ecs.png"))
    print(header + "\n\n" + rf.markdown_table(result, real_what))
    print(f"\nwrote {md}, {csv_path}, {grid}, {bars}")
    if sweep:
        from reggan_core.imageio import write_text

        table = rf.sweep_markdown(sweep)
        text = (f"# Real-face benchmark: strength sweep\n\nSame checkpoints, people, judges, machine and command as "
                f"`{args.out.name}` ({datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, `{command}`). Each method's "
                "change is scaled: output = input + s x (method output - input), clipped; s = 1 is the model as "
                "trained. Held-out real people, 6 basic targets pooled (ECS) and happy alone.\n\n"
                + table + "\n")
        sweep_md = write_text(text, args.out.with_name(args.out.stem + "_strength.md"))
        fig = rf.sweep_figure(sweep, args.figure.with_name(args.figure.stem + "_tradeoff.png"))
        print("\n" + table + f"\n\nwrote {sweep_md}, {fig}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
