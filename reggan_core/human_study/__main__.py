"""Command line: build a blind study, simulate answers, analyse answers, draw a power curve.

    python -m reggan_core.human_study build --inputs IN --method RegGAN=out/reggan --method B=out/b --out study
    python -m reggan_core.human_study simulate --key study/key.csv --raters 24 --target RegGAN --out answers
    python -m reggan_core.human_study analyse --responses answers --key study/key.csv --out results
    python -m reggan_core.human_study power --out power
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Sequence

from ..errors import ConfigError, RegGANError
from .build import build_study
from .form import FormConfig
from .panels import DEFAULT_SPLIT, read_key
from .plots import plot_power, save_figure
from .report import AnalysisConfig, write_report, write_tables
from .responses import load_responses
from .simulate import PowerConfig, RaterModel, improvement_shares, power_curve, raters_needed, simulate_answers, \
    write_answers

log = logging.getLogger("reggan_core.human_study")


def _pairs(items: Sequence[str], what: str) -> dict[str, str]:
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name or not value:
            raise ConfigError(f"{what} {item!r} must look like NAME=VALUE, e.g. RegGAN=outputs/reggan")
        out[name] = value
    return out


def cmd_build(a) -> None:
    form = FormConfig(title=a.title, ratings=not a.no_ratings, scale=tuple(a.scale), image_size=a.image_size,
                      image_format="jpeg" if a.jpeg else "png",
                      **({"instructions": a.instructions} if a.instructions else {}))
    files = build_study(a.inputs, _pairs(a.method, "--method"), a.out, seed=a.seed, form=form,
                        default_split=a.split, panel_images=not a.no_panel_images)
    print(f"{len(files.panels)} panels. Send {files.form.parent}/ to raters; keep {files.key} secret.")


def cmd_simulate(a) -> None:
    key = read_key(a.key)
    methods = sorted(set(key["method"]))
    extra = {s: float(v) for s, v in _pairs(a.split_improvement, "--split-improvement").items()}
    shares = {s: improvement_shares(methods, a.target, extra.get(s, a.improvement)) for s in sorted(set(key["split"]))}
    model = RaterModel(shares, concentration=a.concentration, ratings=not a.no_ratings)
    paths = write_answers(simulate_answers(key, model, a.raters, a.seed), a.out)
    print(f"{len(paths)} simulated answer files in {a.out}")


def cmd_analyse(a) -> None:
    responses = load_responses(a.responses, a.key, scale=tuple(a.scale), allow_missing=a.allow_missing)
    config = AnalysisConfig(target=a.target, n_boot=a.n_boot, ci=a.ci, cluster=a.cluster, block=a.block,
                            seed=a.seed)
    paths = write_report(responses, a.out, config)
    print(f"analysis of {len(responses.raters)} raters written to {paths['summary']}")


def cmd_power(a) -> None:
    config = PowerConfig(n_methods=a.methods, n_panels=a.panels, improvements=tuple(a.improvements),
                         n_raters=tuple(a.raters), n_sims=a.sims, alpha=a.alpha, concentration=a.concentration,
                         seed=a.seed)
    curve = power_curve(config)
    write_tables({"power": curve, "raters_needed": raters_needed(curve)}, a.out)
    path = save_figure(plot_power(curve), Path(a.out) / "power.png")
    print(f"power curve written to {path}")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m reggan_core.human_study", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

    b = sub.add_parser("build", help="blind panels, offline HTML form and secret key")
    b.add_argument("--inputs", required=True, help="input faces (sub-folders = splits, e.g. id/ and ood/)")
    b.add_argument("--method", action="append", required=True, metavar="NAME=DIR",
                   help="one output folder per method (same file names as the inputs); repeat")
    b.add_argument("--out", required=True)
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--split", default=DEFAULT_SPLIT, help="split name of images directly in --inputs")
    b.add_argument("--no-ratings", action="store_true", help="ask for the best pick only")
    b.add_argument("--scale", type=int, nargs=2, default=(1, 5), metavar=("LOW", "HIGH"))
    b.add_argument("--title", default=FormConfig.title)
    b.add_argument("--instructions", default=None, help="rater instructions (default: see form.py)")
    b.add_argument("--image-size", type=int, default=128)
    b.add_argument("--jpeg", action="store_true", help="embed JPEG instead of lossless PNG")
    b.add_argument("--no-panel-images", action="store_true")
    b.set_defaults(func=cmd_build)

    s = sub.add_parser("simulate", help="answers of simulated raters with a known true preference")
    s.add_argument("--key", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--raters", type=int, default=24)
    s.add_argument("--target", default="RegGAN")
    s.add_argument("--improvement", type=float, default=0.25, help="true relative improvement (0.25 = +25%%)")
    s.add_argument("--split-improvement", action="append", default=[], metavar="SPLIT=RI",
                   help="per-split improvement, e.g. ood=0.30")
    s.add_argument("--concentration", type=float, default=RaterModel.concentration)
    s.add_argument("--no-ratings", action="store_true")
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=cmd_simulate)

    n = sub.add_parser("analyse", help="tables and figures from a folder of answer CSVs")
    n.add_argument("--responses", required=True, help="folder of answer CSV files")
    n.add_argument("--key", required=True, help="key.csv written by build")
    n.add_argument("--out", required=True)
    n.add_argument("--target", default=AnalysisConfig.target)
    n.add_argument("--n-boot", type=int, default=AnalysisConfig.n_boot)
    n.add_argument("--ci", type=float, default=AnalysisConfig.ci)
    n.add_argument("--cluster", default=AnalysisConfig.cluster, choices=("rater", "rater+panel"))
    n.add_argument("--block", default=AnalysisConfig.block, choices=("rater", "rater+panel"))
    n.add_argument("--scale", type=int, nargs=2, default=(1, 5), metavar=("LOW", "HIGH"))
    n.add_argument("--allow-missing", action="store_true", help="accept raters who skipped whole panels")
    n.add_argument("--seed", type=int, default=0)
    n.set_defaults(func=cmd_analyse)

    w = sub.add_parser("power", help="power curve: raters needed to show an improvement")
    w.add_argument("--out", required=True)
    w.add_argument("--methods", type=int, default=PowerConfig.n_methods)
    w.add_argument("--panels", type=int, default=PowerConfig.n_panels)
    w.add_argument("--improvements", type=float, nargs="+", default=list(PowerConfig.improvements))
    w.add_argument("--raters", type=int, nargs="+", default=list(PowerConfig.n_raters))
    w.add_argument("--sims", type=int, default=PowerConfig.n_sims)
    w.add_argument("--alpha", type=float, default=PowerConfig.alpha)
    w.add_argument("--concentration", type=float, default=PowerConfig.concentration)
    w.add_argument("--seed", type=int, default=0)
    w.set_defaults(func=cmd_power)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        args.func(args)
    except RegGANError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
