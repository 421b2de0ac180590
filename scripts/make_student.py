#!/usr/bin/env python
"""Write student copies of the tutorial notebooks: every ``solution`` cell removed (the `make student` job).

Course convention: an exercise is a markdown cell tagged ``exercise``; its worked solution follows
in one or more cells tagged ``solution`` (code or markdown). A student copy keeps every other
cell, with its saved outputs, so that it reads like the lecture without running anything (notebook
04 and 05 take minutes on a laptop); the outputs of solution cells go with their cells. After each
exercise that had a solution an empty code cell (tag ``answer``) is left for the student's work.
Saved ipywidgets state is pruned to the widgets that kept outputs still show, so nothing a
solution displayed survives in the metadata either.

The copies keep the notebooks' relative paths (``../datasets/embedded``), which are relative to
``notebooks/``: hand them out as the ``notebooks/`` folder of a student clone of the repository.

    python scripts/make_student.py [--out outputs/student] [NOTEBOOK ...]
"""
from __future__ import annotations

import argparse
import copy
import re
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from anywhere: import reggan_core from this checkout
    sys.path.insert(0, str(ROOT))

from reggan_core.errors import RegGANError  # noqa: E402
from reggan_core.imageio import atomic_path  # noqa: E402

EXERCISE, SOLUTION, ANSWER = "exercise", "solution", "answer"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
ANSWER_SOURCE = "# Your answer here"


def tags(cell: dict) -> list[str]:
    """The cell's tags (``metadata.tags``), an empty list when it has none."""
    return list(cell.get("metadata", {}).get("tags", []))


def exercise_problems(nb: nbformat.NotebookNode, name: str = "notebook") -> list[str]:
    """One line per exercise that is not followed by a ``solution`` cell, or a cell tagged both."""
    problems = []
    for i, cell in enumerate(nb.cells):
        t = tags(cell)
        if EXERCISE in t and SOLUTION in t:
            problems.append(f"{name}: cell {i} is tagged both 'exercise' and 'solution'; keep one tag")
        elif EXERCISE in t:
            following = nb.cells[i + 1] if i + 1 < len(nb.cells) else None
            if following is None or SOLUTION not in tags(following):
                title = first_line(cell.source)
                problems.append(f"{name}: exercise in cell {i} ({title!r}) has no 'solution' cell right after it")
    return problems


def first_line(text: str, width: int = 70) -> str:
    """The first non-empty line of a cell, without markdown heading marks, cut to ``width``."""
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    line = line.lstrip("#").strip()
    return line if len(line) <= width else line[: width - 1] + "…"


def _widget_ids(obj: object) -> set[str]:
    """Model ids that ``obj`` (an output or a widget state) refers to."""
    return set(re.findall(r"IPY_MODEL_([0-9a-f]+)", str(obj)))


def prune_widget_state(nb: nbformat.NotebookNode) -> None:
    """Keep only saved widget models reachable from the widget views still in the notebook's outputs."""
    state = nb.metadata.get("widgets", {}).get(WIDGET_STATE)
    if not state:
        return
    models = state.get("state", {})
    todo = [o["data"][WIDGET_VIEW].get("model_id") for c in nb.cells if c.cell_type == "code"
            for o in c.get("outputs", []) if WIDGET_VIEW in o.get("data", {})]
    keep: set[str] = set()
    while todo:
        mid = todo.pop()
        if mid and mid not in keep and mid in models:
            keep.add(mid)
            todo.extend(_widget_ids(models[mid]) - keep)
    if keep:
        state["state"] = {k: v for k, v in models.items() if k in keep}
    else:
        nb.metadata.pop("widgets")


def student_copy(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """A copy of ``nb`` without ``solution`` cells, an empty answer cell after each solved exercise."""
    out = copy.deepcopy(nb)
    cells = []
    for i, cell in enumerate(out.cells):
        if SOLUTION in tags(cell):
            solved_exercise = i > 0 and (EXERCISE in tags(out.cells[i - 1]))
            if solved_exercise:  # the first solution cell of an exercise: leave room for the answer
                cells.append(nbformat.v4.new_code_cell(ANSWER_SOURCE, metadata={"tags": [ANSWER]}))
            continue
        cells.append(cell)
    out.cells = cells  # kept cells keep their ids; new_code_cell gives the answer cells new ones
    prune_widget_state(out)
    nbformat.validate(out)
    return out


def write_student_copies(notebooks: list[Path], out_dir: Path) -> list[Path]:
    """Write one student copy per notebook into ``out_dir`` (atomically); return the written paths."""
    out_dir = out_dir.resolve()
    for nb_path in notebooks:
        if nb_path.resolve().parent == out_dir:
            raise RegGANError(f"--out {out_dir} holds the source notebook {nb_path.name}: writing there would "
                              "delete its solutions; pick another folder (default outputs/student)")
    written = []
    for nb_path in notebooks:
        try:
            nb = nbformat.read(nb_path, as_version=4)
        except (OSError, ValueError) as exc:
            raise RegGANError(f"cannot read notebook {nb_path}: {exc}; pass a valid .ipynb file") from None
        target = out_dir / nb_path.name
        with atomic_path(target) as tmp:
            nbformat.write(student_copy(nb), tmp)
        written.append(target)
    return written


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("notebooks", nargs="*", type=Path, help="default: notebooks/[0-9][0-9]_*.ipynb")
    p.add_argument("--out", type=Path, default=ROOT / "outputs" / "student")
    a = p.parse_args(argv)
    notebooks = a.notebooks or sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    try:
        missing = [n for n in notebooks if not n.is_file()]
        if missing or not notebooks:
            raise RegGANError(f"no such notebook: {missing[0] if missing else 'notebooks/*.ipynb'}; "
                              "pass existing .ipynb files")
        written = write_student_copies(notebooks, a.out)
    except RegGANError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for path in written:
        nb = nbformat.read(path, as_version=4)
        n_ex = sum(EXERCISE in tags(c) for c in nb.cells)
        print(f"wrote {path} ({n_ex} exercises)")
    for nb_path in notebooks:  # say which exercises have no solution yet (not an error for the copies)
        for line in exercise_problems(nbformat.read(nb_path, as_version=4), nb_path.name):
            print(f"note: {line}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
