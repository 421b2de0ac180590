#!/usr/bin/env python
"""Run every tutorial notebook end to end with papermill (the `make demo` job).

Executed copies go to ``<out>/notebooks`` and figures to ``<out>/figures``; the committed
notebooks are never overwritten. Extra ``-p name value`` pairs are passed to every notebook
(papermill ignores nothing: a notebook without that parameter gets it injected anyway).

    python scripts/run_notebooks.py --out outputs [-p dataset_root /path/to/CFEE] [--only 02]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=ROOT / "outputs")
    p.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"))
    p.add_argument("--only", default=None, help="run only notebooks whose name starts with this")
    a = p.parse_args()
    import papermill as pm
    import yaml

    out = a.out.resolve()
    (out / "notebooks").mkdir(parents=True, exist_ok=True)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    params = {"figures_dir": str(out / "figures")}
    params.update({k: yaml.safe_load(v) for k, v in a.parameter})
    notebooks = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    if a.only:
        notebooks = [n for n in notebooks if n.name.startswith(a.only)]
    if not notebooks:
        print("no notebooks to run", file=sys.stderr)
        return 1
    for nb in notebooks:
        t0 = time.perf_counter()
        pm.execute_notebook(str(nb), str(out / "notebooks" / nb.name), parameters=params,
                            cwd=str(ROOT / "notebooks"), kernel_name="python3", progress_bar=False)
        print(f"ran {nb.name} in {time.perf_counter() - t0:.0f} s")
    print(f"Results: executed notebooks in {out / 'notebooks'}, figures in {out / 'figures'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
