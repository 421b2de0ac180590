"""Ablation on dataset v2: which choices make expressions transfer to people never seen in training?

Every variant is judged like the real-face benchmark (:mod:`reggan_core.metrics.realfaces`):
on the 12 held-out real people of dataset v2 (val + test subjects made from one person) and the
4 performers, 6 basic targets, by FER2013 and face-api (ECS) and dlib / HSE FaceRes (identity
to the input) - judges that share nothing with training. Two kinds of rows:

* **ridge rows** - closed-form local ridge layers (the regression-only model), fitted here on the
  v2 training split in seconds: Masked Regression's prior (zero) vs a prior on the copy map
  (``prior=identity``), lambda, the broken-warp pair check (``max_rigid_motion``), identical
  colour/lighting jitter of both faces (``augment``) and the strength of the change;
* **trained rows** - generators from training runs of equal budget (same data, steps and batch),
  given as ``--run NAME=PATH`` (a run's ``generator.pt``, a training checkpoint - its moving average of
  the weights when the run kept one - or a shipped checkpoint), or ``--run-raw NAME=PATH`` for a
  training checkpoint's raw weights instead of their average.

    python benchmarks/ablation_v2.py --run "RegGAN (shipped)=checkpoints/reggan_v2.pt" ...
    python benchmarks/ablation_v2.py --no-ridge --run ...       # trained rows only
    python benchmarks/ablation_v2.py --ridge "r = " --figure figures/ablation_receptive_field.png

``--ridge TEXT`` keeps only the ridge rows whose name contains TEXT; ``--figure PNG`` also writes a
before/after grid (happy and surprised, 4 held-out people + the performers) of the methods whose name
contains a ``--figure-method TEXT``.

Prints the table and writes ``benchmarks/results/ablation_v2.md`` (atomically).
"""
from __future__ import annotations

import argparse
import platform
import shlex
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))


@dataclass(frozen=True)
class RidgeVariant:
    """One closed-form ridge setting (the regression-only model)."""

    name: str
    r: int = 3
    prior: str = "zero"
    lam: float = 0.4
    max_rigid_motion: float = 0.0
    augment: float = 0.0
    copies: int = 0
    strength: float = 1.0
    mirror: bool = False
    mask: tuple[float, float, float] | None = None   # change-mask (low, high, sigma); folded into the layer


RIDGE_VARIANTS = (
    RidgeVariant("Masked Regression: prior zero, lambda 0.4, all pairs"),
    RidgeVariant("prior identity", prior="identity"),
    RidgeVariant("prior identity, lambda 10", prior="identity", lam=10.0),
    RidgeVariant("prior zero + pair check 0.15", max_rigid_motion=0.15),
    RidgeVariant("prior identity + pair check 0.15 = shipped ridge", prior="identity", max_rigid_motion=0.15),
    RidgeVariant("prior identity + pair check + jitter 0.1 (3 copies)", prior="identity",
                 max_rigid_motion=0.15, augment=0.1, copies=3),
    RidgeVariant("prior identity + pair check + jitter 0.25 (3 copies)", prior="identity",
                 max_rigid_motion=0.15, augment=0.25, copies=3),
    RidgeVariant("shipped ridge, strength 1.5 (change exaggerated)", prior="identity",
                 max_rigid_motion=0.15, strength=1.5),
    RidgeVariant("shipped ridge, r = 5", r=5, prior="identity", max_rigid_motion=0.15),
    RidgeVariant("shipped ridge, r = 7", r=7, prior="identity", max_rigid_motion=0.15),
    RidgeVariant("shipped ridge, r = 9", r=9, prior="identity", max_rigid_motion=0.15),
    RidgeVariant("shipped ridge with r = 7 and lambda 4", r=7, lam=4.0, prior="identity", max_rigid_motion=0.15),
    RidgeVariant("shipped ridge with r = 7 and lambda 20", r=7, lam=20.0, prior="identity", max_rigid_motion=0.15),
    RidgeVariant("shipped ridge r = 7 + mirrored pairs", r=7, prior="identity", max_rigid_motion=0.15, mirror=True),
    RidgeVariant("r = 7 + change mask 0.5-0.95, blur 3", r=7, prior="identity", max_rigid_motion=0.15,
                 mask=(0.5, 0.95, 3.0)),
    RidgeVariant("r = 7 + change mask 0.3-0.8, blur 3", r=7, prior="identity", max_rigid_motion=0.15,
                 mask=(0.3, 0.8, 3.0)),
    RidgeVariant("r = 7 + change mask 0.5-0.95, blur 3, gain 1.25", r=7, prior="identity", max_rigid_motion=0.15,
                 mask=(0.5, 0.95, 3.0), strength=1.25),
    RidgeVariant("r = 7 + change mask 0.5-0.95, blur 3, gain 1.5", r=7, prior="identity", max_rigid_motion=0.15,
                 mask=(0.5, 0.95, 3.0), strength=1.5),
    RidgeVariant("r = 7, gain 1.25 (no mask)", r=7, prior="identity", max_rigid_motion=0.15, strength=1.25),
)


def ridge_methods(variants, targets, root, progress: bool = True) -> dict:
    """Fit every variant's ridge layers on the v2 training split; name -> method."""
    import torch
    from tqdm.auto import tqdm

    from reggan_core.data import index_dataset, read_splits, subjects_in
    from reggan_core.imageio import to_uint8
    from reggan_core.model import RegGAN
    from reggan_core.regression import RidgeConfig
    from reggan_core.train import FaceBank, Item, drop_broken_pairs, fit_ridges

    index = index_dataset(root)
    train = subjects_in(read_splits(Path(index.root) / "splits.csv"), "train")
    bank = FaceBank(index, train, ["neutral", *targets], align=False, size=128)
    items = [Item(s, "neutral", t, k) for s in train for k, t in enumerate(targets) if bank.has(s, t)]
    checked = {}
    methods = {}
    for v in tqdm(variants, desc="ridge variants", disable=not progress):
        use = items
        if v.max_rigid_motion > 0:
            if v.max_rigid_motion not in checked:
                checked[v.max_rigid_motion] = drop_broken_pairs(items, bank, v.max_rigid_motion, None)
            use = checked[v.max_rigid_motion]
        model = RegGAN(list(targets), ridge=RidgeConfig(r=v.r, prior=v.prior, lam=v.lam))   # the trainer's own fit
        fit_ridges(model, bank, use, copies=v.copies, strength=v.augment, seed=0, mirror=v.mirror, mask=v.mask)
        layers = model.ridges

        def run(faces, target, layers=layers, k=v.strength):
            x = torch.from_numpy(np.ascontiguousarray(faces)).permute(0, 3, 1, 2).float() / 127.5 - 1
            with torch.no_grad():
                y = x + k * (layers[target](x) - x)
            return to_uint8(y.clamp(-1, 1))

        methods[f"ridge: {v.name}"] = run
    return methods


def summary(result: dict, methods) -> list[dict]:
    """One line per method: mean ECS over the 6 targets, happy ECS, identity (held-out and performers)."""
    rows = result["rows"]

    def get(m, t, g, k):
        r = next((r for r in rows if r["method"] == m and r["target"] == t and r["group"] == g), None)
        return float("nan") if r is None else r[k]

    out = []
    for m in methods:
        out.append({"method": m,
                    "happy": (get(m, "happy", "held-out", "ecs_fer"), get(m, "happy", "held-out", "ecs_faceapi")),
                    "surprised": (get(m, "surprised", "held-out", "ecs_fer"),
                                  get(m, "surprised", "held-out", "ecs_faceapi")),
                    "all": (get(m, "all", "held-out", "ecs_fer"), get(m, "all", "held-out", "ecs_faceapi")),
                    "perf": (get(m, "all", "real_pairs", "ecs_fer"), get(m, "all", "real_pairs", "ecs_faceapi")),
                    "dlib": get(m, "all", "held-out", "dlib_distance"),
                    "faceres": get(m, "all", "held-out", "faceres_cosine"),
                    "l1": get(m, "all", "real_pairs", "l1")})
    return out


def table(lines: list[dict]) -> str:
    f = lambda p: f"{p[0]:.2f} / {p[1]:.2f}"  # noqa: E731
    head = ["| variant | happy ECS FER / face-api | surprised | 6 basic, mean | performers, 6 basic | "
            "dlib distance | FaceRes cosine | L1 to real (performers) |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    return "\n".join(head + [f"| {r['method']} | {f(r['happy'])} | {f(r['surprised'])} | {f(r['all'])} | "
                             f"{f(r['perf'])} | {r['dlib']:.3f} | {r['faceres']:.3f} | {r['l1']:.3f} |"
                             for r in lines])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", action="append", default=[], metavar="NAME=PATH",
                    help="a trained generator to score (repeatable)")
    ap.add_argument("--run-raw", action="append", default=[], metavar="NAME=PATH",
                    help="a training checkpoint scored with its raw weights, not their moving average (repeatable)")
    ap.add_argument("--no-ridge", action="store_true", help="skip the closed-form ridge rows")
    ap.add_argument("--ridge", action="append", default=[], metavar="TEXT",
                    help="keep only the ridge rows whose name contains TEXT (repeatable)")
    ap.add_argument("--figure", type=Path, default=None, metavar="PNG",
                    help="also write a before/after image grid of the --figure-method rows")
    ap.add_argument("--figure-method", action="append", default=[], metavar="TEXT",
                    help="columns of the figure: the methods whose name contains TEXT (repeatable; default all)")
    ap.add_argument("--dataset", type=Path, default=None, help="dataset v2 folder (default: datasets/v2)")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "ablation_v2.md")
    args = ap.parse_args(argv)
    from reggan_core.data import dataset_root
    from reggan_core.errors import RegGANError
    from reggan_core.imageio import atomic_path
    from reggan_core.metrics import realfaces as rf
    from reggan_core.model import load_generator
    from reggan_core.utils import cpu_name

    t0 = time.perf_counter()
    root = args.dataset or dataset_root("v2")
    try:
        methods = {"copy-input": rf.copy_input}
        if not args.no_ridge:
            variants = [v for v in RIDGE_VARIANTS if not args.ridge or any(t in v.name for t in args.ridge)]
            if not variants:
                raise SystemExit(f"error: no ridge row's name contains any of {args.ridge}; see RIDGE_VARIANTS")
            methods.update(ridge_methods(variants, rf.BASIC_TARGETS, root))
        for flag, spec in [("--run", s) for s in args.run] + [("--run-raw", s) for s in args.run_raw]:
            name, sep, path = spec.rpartition("=")
            if not sep or not Path(path).is_file():
                raise SystemExit(f"error: {flag} {spec!r} must be NAME=PATH of an existing generator file")
            model = load_generator(path, ema=flag == "--run")
            methods[f"trained: {name}"] = rf.model_method(model, "refined")
        shown = [m for m in methods if m != "copy-input"
                 and (not args.figure_method or any(t in m for t in args.figure_method))]
        if args.figure is not None and not shown:
            raise SystemExit(f"error: no method's name contains any of {args.figure_method}")
        result = rf.evaluate(methods, rf.load_faces(root), judges=rf.load_judges(inception=False),
                             keep_outputs=args.figure is not None)
    except RegGANError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    text = table(summary(result, methods))
    command = "python benchmarks/ablation_v2.py " + shlex.join(sys.argv[1:] if argv is None else list(argv))
    header = ("# Ablation on dataset v2 (held-out real people, independent judges)\n\n"
              "ECS = share of outputs the judge classifies as the target (FER2013 / face-api), 12 held-out real "
              "people x 6 basic targets (N = 12 per target, 72 per mean; one face moves a target's ECS by 0.08); "
              "performers: 4 people, 24 outputs. Identity: mean over the held-out outputs of all 6 targets. "
              f"Measured {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC on {cpu_name()} ({platform.machine()}), "
              f"command `{command}`, {time.perf_counter() - t0:.0f} s.\n\n")
    with atomic_path(args.out) as tmp:
        tmp.write_text(header + text + "\n")
    print(header + text)
    if args.figure is not None:
        print("figure:", rf.image_grid(result, args.figure, people=4, methods=shown,
                                       targets=["happy", "surprised"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
