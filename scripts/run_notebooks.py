#!/usr/bin/env python
"""Run every tutorial notebook end to end with papermill (the `make demo` and `make figures` jobs).

Executed copies go to ``<out>/notebooks``; the committed notebooks are never overwritten.
Figures go where the notebooks put them: ``$REGGAN_FIGURES`` when set (``make figures`` sets
it to the committed ``figures/``), else ``<out>/figures``. Notebooks run from the repository
root, and every path parameter is resolved from there (``reggan_core.paths``), so relative
``-p`` paths mean the same here as in the README's commands. Extra ``-p name value`` pairs are
passed to every notebook (papermill injects a parameter even where a notebook lacks it).

    python scripts/run_notebooks.py --out outputs [-p dataset_root /path/to/CFEE] [--only 02]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=ROOT / "outputs", help="folder for executed notebooks (and figures)")
    p.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"))
    p.add_argument("--only", default=None, help="run only notebooks whose name starts with this (comma-separated)")
    a = p.parse_args(argv)
    import papermill as pm
    import yaml

    out = a.out.resolve()
    (out / "notebooks").mkdir(parents=True, exist_ok=True)
    figures = Path(os.environ.get("REGGAN_FIGURES") or out / "figures").resolve()
    figures.mkdir(parents=True, exist_ok=True)
    os.environ["REGGAN_FIGURES"] = str(figures)   # the kernels inherit it: figures_dir = None -> here
    params = {k: yaml.safe_load(v) for k, v in a.parameter}
    notebooks = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    if a.only:
        prefixes = tuple(s.strip() for s in a.only.split(",") if s.strip())
        notebooks = [n for n in notebooks if n.name.startswith(prefixes)]
    if not notebooks:
        print("no notebooks to run", file=sys.stderr)
        return 1
    for nb in notebooks:
        t0 = time.perf_counter()
        pm.execute_notebook(str(nb), str(out / "notebooks" / nb.name), parameters=params,
                            cwd=str(ROOT), kernel_name="python3", progress_bar=False)
        print(f"ran {nb.name} in {time.perf_counter() - t0:.0f} s")
    print(f"Results: executed notebooks in {out / 'notebooks'}, figures in {figures}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
