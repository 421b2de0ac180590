"""Command line: score a folder of generated faces.

    python -m reggan_core.metrics --real DIR --generated DIR [--metrics ecs,fss,qualiclip,fid]
                                  [--targets auto|CATEGORY|FILE.csv] [--inputs DIR] --out DIR
                                  [--ecs-classifier fer,faceapi[,cfee22]] [--fss-embedder dlib,faceres]
                                  [--fid-spaces inception[,identity,expression]]

Writes ``metrics.csv``, ``metrics.md`` (markdown table), ``per_image.csv`` and, with ECS,
``ecs_per_target.csv`` to ``--out``, and prints the table with the caveats of the judges
(cfee22 is not independent; FID at small N). Errors are one line naming the folder, file or value.
"""
from __future__ import annotations

import argparse
import logging
import platform
import shlex
import sys
from pathlib import Path
from typing import Sequence

from ..errors import RegGANError
from . import DEFAULT_FEATURE_SPACES, ECS_JUDGES, FSS_JUDGES, JUDGE_NOTES, METRICS, evaluate
from .ecs import CLASSIFIERS
from .fid import FEATURE_SPACES
from .fss import EMBEDDERS


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m reggan_core.metrics", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--real", required=True, help="folder of real faces (FID/KID reference; FSS pairs without --inputs)")
    p.add_argument("--generated", required=True, help="folder of generated faces (may hold <target>/ sub-folders)")
    p.add_argument("--out", required=True, help="folder for metrics.csv, metrics.md, per_image.csv")
    p.add_argument("--metrics", default=",".join(METRICS), help=f"comma-separated subset of {','.join(METRICS)}")
    p.add_argument("--targets", default="auto",
                   help="'auto' (sub-folder or <subject>_<target> file names), one category, or a CSV file,target")
    p.add_argument("--inputs", default=None, help="folder of the input (neutral) faces, matched by name or subject")
    p.add_argument("--ecs-classifier", default=",".join(ECS_JUDGES),
                   help=f"comma-separated ECS judges from {','.join(CLASSIFIERS)} (fer, faceapi: basic targets; "
                        "cfee22: 22 categories, trained on this project's training split, not independent)")
    p.add_argument("--ecs-weights", default=None, help="weights of the ECS classifier, with a single judge (default: shipped)")
    p.add_argument("--fss-embedder", default=",".join(FSS_JUDGES), help=f"comma-separated FSS judges from {','.join(EMBEDDERS)}")
    p.add_argument("--qualiclip-weights", default=None, help="QualiCLIP state dict (qualiclip.pth)")
    p.add_argument("--inception-weights", default=None,
                   help="converted FID Inception state dict (default: fetched and converted into the cache)")
    p.add_argument("--fid-spaces", default=",".join(DEFAULT_FEATURE_SPACES),
                   help=f"FID feature spaces from {','.join(FEATURE_SPACES)}")
    p.add_argument("--kid-subsets", type=int, default=100, help="KID subsets")
    p.add_argument("--kid-subset-size", type=int, default=1000, help="KID subset size (capped at the set sizes)")
    p.add_argument("--device", default="cpu", help="torch device for QualiCLIP / Inception")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def _split(text: str, valid: Sequence[str], what: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    bad = [t for t in items if t not in valid]
    if bad or not items:
        raise RegGANError(f"{what} {','.join(bad) or repr(text)} not valid; choose from {','.join(valid)}")
    return items


def caveats(result) -> list[str]:
    """Lines printed under the table: which judges are not independent, what small N does to FID/KID."""
    lines = []
    s = result.summary
    for key, note in JUDGE_NOTES.items():
        if ((s["metric"] == "ECS") & (s["space"] == key)).any():
            lines.append(f"note: ECS[{key}] is {note}; trust the independent judges (fer, faceapi).")
    fid = s[(s["metric"] == "FID") & (s["status"] == "ok")]
    if len(fid):
        n = int(fid["n"].min())
        lines.append(f"note: FID/KID on {n} generated images: FID is biased upward at small N (compare only at "
                     "equal N, never with published 50k-image FIDs); KID is unbiased, so it can be slightly "
                     "negative when the sets do not differ measurably (see its std).")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        if args.kid_subsets < 1:
            raise RegGANError(f"--kid-subsets {args.kid_subsets} must be >= 1, e.g. 100")
        if args.kid_subset_size < 2:
            raise RegGANError(f"--kid-subset-size {args.kid_subset_size} must be >= 2, e.g. 1000")
        metrics = _split(args.metrics, METRICS, "--metrics")
        spaces = _split(args.fid_spaces, FEATURE_SPACES, "--fid-spaces")
        classifiers = _split(args.ecs_classifier, CLASSIFIERS, "--ecs-classifier")
        embedders = _split(args.fss_embedder, EMBEDDERS, "--fss-embedder")
        command = "python -m reggan_core.metrics " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
        result = evaluate(args.real, args.generated, metrics, targets=args.targets, inputs=args.inputs,
                          cache_dir=Path(args.out) / "cache", ecs_classifier=classifiers,
                          ecs_weights=args.ecs_weights, embedder=embedders,
                          qualiclip_weights=args.qualiclip_weights, inception_weights=args.inception_weights,
                          feature_spaces=spaces, kid_subsets=args.kid_subsets,
                          kid_subset_size=args.kid_subset_size, device=args.device, progress=not args.quiet)
        # the markdown file says how it was made
        header = (f"Command: `{command}`  \nMachine: {platform.platform()}, "
                  f"{platform.processor() or platform.machine()}, Python {platform.python_version()}\n")
        md = result.save(args.out, header)["markdown"]
    except RegGANError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(result.to_markdown())
    for line in caveats(result):
        print(line)
    for metric, reason in result.unavailable().items():
        logging.warning("%s: %s", metric, reason)
    print(f"wrote {md.parent}/metrics.csv, metrics.md, per_image.csv")
    return 0


if __name__ == "__main__":
    sys.exit(main())
