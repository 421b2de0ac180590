"""Read rater CSVs, join the key and validate every row.

Expected long format (what the HTML form saves), one row per rater, panel and position::

    rater,panel,position,best,rating
    ana,P001,A,0,3
    ana,P001,B,1,5

``best`` is 1 for the one output picked in the panel and 0 (or empty) for the others; ``rating``
is a whole number on the study's scale, or empty when the study asked for picks only. A file
may carry a ``method`` column instead of ``position`` (answers collected with another tool that
already knows the methods); when both are present they must agree with the key. Extra columns
are ignored. Rows are numbered as in a spreadsheet: the header is row 1.

Every problem becomes one line naming the file and row: unknown panel or method, duplicate
answers, missing answers, ratings out of range or not finite, and files with a header but no
answers (a warning with ``allow_missing``). All lines are collected and raised together
in one :class:`ResponseError`, so a rater's file can be fixed in one pass.
"""
from __future__ import annotations

import csv
import math
import os
import warnings
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Sequence

from ..errors import DataError
from .panels import check_key, read_key

if TYPE_CHECKING:
    import pandas as pd

MAX_LISTED = 10          # panel ids listed in one "missing panels" line
MAX_MESSAGE_LINES = 40   # problems shown in the exception text (all are in .problems)


class ResponseError(DataError):
    """Rater answers that cannot be analysed; ``problems`` holds one line per problem."""

    def __init__(self, problems: Sequence[str]):
        self.problems = list(problems)
        shown = self.problems[:MAX_MESSAGE_LINES]
        more = len(self.problems) - len(shown)
        super().__init__("\n".join(shown + ([f"... and {more} more problem(s)"] if more else [])))


@dataclass
class Responses:
    """Validated answers joined with the key.

    ``choices``: one row per rater and answered panel: rater, panel, split, item, position, method.
    ``ratings``: one row per rater, panel and method: the same columns plus ``rating`` (may be empty).
    """

    choices: "pd.DataFrame"
    ratings: "pd.DataFrame"
    methods: tuple[str, ...]     # every method in the key, sorted
    splits: tuple[str, ...]      # every split in the key, sorted
    panels: tuple[str, ...]      # every panel id in the key
    files: tuple[Path, ...]      # the CSV files read
    scale: tuple[int, int]

    @property
    def raters(self) -> list[str]:
        return sorted(set(self.choices["rater"]) | set(self.ratings["rater"]))


def response_files(source: str | os.PathLike | Iterable[str | os.PathLike]) -> list[Path]:
    """The CSV files of a folder (sorted, hidden files skipped), a single file, or a list of files."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.is_dir():
            files = sorted(p for p in path.glob("*.csv") if not p.name.startswith("."))
            if not files:
                raise DataError(f"no .csv files in {path}; put the raters' answer files there")
            return files
        sources = [path]
    else:
        sources = [Path(s) for s in source]
    for p in sources:
        if not p.is_file():
            raise DataError(f"answer file {p} does not exist; check the path")
    if not sources:
        raise DataError("no answer files given; pass a folder of CSV files")
    return sources


@dataclass(frozen=True)
class _Row:
    where: str          # "<file>, row <n>"
    file: str
    line: int
    rater: str
    panel: str
    position: str
    best: int | None    # None = empty or invalid cell
    rating: int | None
    valid: bool = True  # False: best or rating was invalid (already reported)


def _rows_range(rows: Sequence[_Row]) -> str:
    lines = sorted(r.line for r in rows)
    return f"row {lines[0]}" if len(lines) == 1 else f"rows {lines[0]}-{lines[-1]}"


class _Checker:
    """Reads files row by row, collecting one line per problem."""

    def __init__(self, key, scale: tuple[int, int]):
        self.scale = scale
        self.problems: list[tuple[str, int, str]] = []     # (file, row, message) for sorting
        self.positions = {p: list(g["position"]) for p, g in key.groupby("panel", sort=False)}
        self.method_of = {(r.panel, r.position): r.method for r in key.itertuples()}
        self.position_of = {(r.panel, r.method): r.position for r in key.itertuples()}
        self.panel_range = f"{min(self.positions)}-{max(self.positions)}"
        self.dropped: set[tuple[str, str]] = set()   # (rater, panel) that lost a row to a reported problem
        self.headers_only: list[str] = []            # files with a header and no answer rows

    def problem(self, file: str, line: int, message: str) -> None:
        where = f"{file}, row {line}" if line else file
        self.problems.append((file, line, f"{where}: {message}"))

    def _value(self, text: str, name: str, lo: int, hi: int, file: str, line: int) -> tuple[bool, int | None]:
        text = text.strip()
        if not text:
            return True, None
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        if not math.isfinite(value) or value != int(value):   # nan, inf, 1e400
            self.problem(file, line, f"{name} {text!r} is not a whole number from {lo} to {hi}; correct it")
            return False, None
        if not lo <= value <= hi:
            self.problem(file, line, f"{name} {int(value)} is out of range {lo}-{hi}; correct it")
            return False, None
        return True, int(value)

    def read(self, path: Path) -> tuple[list[_Row], bool, bool]:
        """Valid rows of one file and whether it answers picks / ratings at all."""
        file = str(path)
        try:
            with open(path, newline="", encoding="utf-8-sig") as fh:
                table = [(n, r) for n, r in enumerate(csv.reader(fh), start=1)]
        except (UnicodeDecodeError, csv.Error) as exc:
            self.problem(file, 0, f"cannot be read as a UTF-8 CSV file ({exc.__class__.__name__}); "
                                  "save it as CSV (UTF-8) and send it again")
            return [], False, False
        if not table:
            self.problem(file, 1, "file is empty; expected the header rater,panel,position,best,rating")
            return [], False, False
        header = [h.strip().lower() for h in table[0][1]]
        col = {h: i for i, h in enumerate(header)}
        missing = [c for c in ("rater", "panel") if c not in col]
        if "position" not in col and "method" not in col:
            missing.append("position (or method)")
        if "best" not in col and "rating" not in col:
            missing.append("best and/or rating")
        if missing:
            self.problem(file, 1, f"header lacks column(s) {', '.join(missing)}; "
                                  "expected rater,panel,position,best,rating")
            return [], False, False
        lo, hi = self.scale
        rows: list[_Row] = []
        for line, cells in table[1:]:
            if not any(c.strip() for c in cells):
                continue
            if len(cells) != len(header):
                self.problem(file, line, f"has {len(cells)} fields but the header has {len(header)}; "
                                         "check for stray commas")
                continue
            get = {h: cells[i].strip() for h, i in col.items()}
            rater, panel = get["rater"], get["panel"]
            if not rater:
                self.problem(file, line, "rater id is empty; fill it in")
                continue
            if panel not in self.positions:
                self.problem(file, line, f"unknown panel {panel!r} (the key has {len(self.positions)} panels, "
                                         f"{self.panel_range}); check that this file belongs to this study's key")
                continue
            position = get.get("position", "").upper()
            method = get.get("method", "")
            if "position" in col:
                if (panel, position) not in self.method_of:
                    self.problem(file, line, f"unknown position {position!r} in panel {panel} (valid: "
                                             f"{', '.join(self.positions[panel])}); correct it")
                    self.dropped.add((rater, panel))
                    continue
                if method and self.method_of[(panel, position)] != method:
                    self.problem(file, line, f"method {method!r} disagrees with the key, which has "
                                             f"{self.method_of[(panel, position)]} at {panel}/{position}; "
                                             "check that the right key is used")
                    self.dropped.add((rater, panel))
                    continue
            elif (panel, method) in self.position_of:
                position = self.position_of[(panel, method)]
            else:
                known = sorted(m for (p, m) in self.position_of if p == panel)
                self.problem(file, line, f"unknown method {method!r} in panel {panel} (valid: {', '.join(known)}); "
                                         "correct it")
                self.dropped.add((rater, panel))
                continue
            ok_best, best = self._value(get.get("best", ""), "best", 0, 1, file, line)
            ok_rate, rating = self._value(get.get("rating", ""), "rating", lo, hi, file, line)
            rows.append(_Row(f"{file}, row {line}", file, line, rater, panel, position, best, rating,
                             ok_best and ok_rate))
        if len(table) == 1 or not any(any(c.strip() for c in cells) for _, cells in table[1:]):
            self.headers_only.append(file)
        picks = any(r.best is not None for r in rows)
        rated = any(r.rating is not None for r in rows)
        return rows, picks, rated

    def check_group(self, rater: str, panel: str, rows: list[_Row], picks: bool, rated: bool) -> None:
        """One rater's answer to one panel: exactly one pick, every position present and rated."""
        file, first, span = rows[0].file, min(r.line for r in rows), _rows_range(rows)
        if (rater, panel) in self.dropped:   # already reported; its consequences would only repeat it
            return
        missing = [p for p in self.positions[panel] if p not in {r.position for r in rows}]
        if missing:
            self.problem(file, first, f"missing answer: rater {rater} has no row for panel {panel} position(s) "
                                      f"{', '.join(missing)} ({span}); add them or re-save the form")
        if picks:
            chosen = [r for r in rows if r.best == 1]
            if not chosen and all(r.valid for r in rows) and not missing:
                self.problem(file, first, f"missing answer: rater {rater} picked no best output in panel {panel} "
                                          f"({span}); set best=1 on one row")
            elif len(chosen) > 1:
                self.problem(file, chosen[1].line, f"duplicate answer: rater {rater} marked {len(chosen)} outputs "
                                                   f"best in panel {panel} (rows "
                                                   f"{', '.join(str(r.line) for r in chosen)}); keep one")
        if rated:
            for r in rows:
                if r.rating is None and r.valid:
                    self.problem(file, r.line, f"missing answer: no rating for rater {rater}, panel {panel}, "
                                               f"position {r.position}; fill it in")


def check_responses(source, key, scale: tuple[int, int] = (1, 5),
                    allow_missing: bool = False) -> tuple["Responses | None", list[str]]:
    """Validate answers against the key; returns (responses or None, problem lines).

    ``key``: a key DataFrame or the path of ``key.csv``. With ``allow_missing`` a rater may
    skip whole panels (a warning names them); a panel that was started must still be complete.
    """
    import pandas as pd

    lo, hi = scale
    if not (isinstance(lo, int) and isinstance(hi, int) and lo < hi):
        raise DataError(f"rating scale {tuple(scale)} must be two whole numbers low < high (--scale LOW HIGH), "
                        "e.g. 1 5, as the study was built")
    key = read_key(key) if isinstance(key, (str, os.PathLike)) else check_key(key)
    files = response_files(source)
    checker = _Checker(key, scale)
    groups: dict[tuple[str, str], list[_Row]] = defaultdict(list)
    first_seen: dict[tuple[str, str, str], _Row] = {}
    modes: dict[str, tuple[bool, bool]] = {}
    files_of: dict[str, list[str]] = defaultdict(list)
    for path in files:
        rows, picks, rated = checker.read(path)
        modes[str(path)] = (picks, rated)
        for r in rows:
            ident = (r.rater, r.panel, r.position)
            if ident in first_seen:
                checker.problem(r.file, r.line, f"duplicate answer: rater {r.rater}, panel {r.panel}, position "
                                                f"{r.position} already answered at {first_seen[ident].where}; "
                                                "remove one")
                continue
            first_seen[ident] = r
            groups[(r.rater, r.panel)].append(r)
            if r.file not in files_of[r.rater]:
                files_of[r.rater].append(r.file)
    for (rater, panel), rows in groups.items():
        checker.check_group(rater, panel, rows, *modes[rows[0].file])
    all_panels = list(checker.positions)
    for rater, rfiles in sorted(files_of.items()):
        absent = [p for p in all_panels if (rater, p) not in groups and (rater, p) not in checker.dropped]
        if absent:
            listed = ", ".join(absent[:MAX_LISTED]) + (", ..." if len(absent) > MAX_LISTED else "")
            text = (f"missing answer: rater {rater} answered {len(all_panels) - len(absent)} of "
                    f"{len(all_panels)} panels; no rows for {listed}")
            if allow_missing:
                warnings.warn(f"{', '.join(rfiles)}: {text}", stacklevel=2)
            else:
                checker.problem(", ".join(rfiles), 0, f"{text}; ask the rater to finish, or pass allow_missing=True "
                                                      "(--allow-missing) to analyse partial answers")
    for file in checker.headers_only:
        text = f"{file}: has a header but no answers"
        if allow_missing:
            warnings.warn(f"{text}; skipped", stacklevel=2)
        else:
            checker.problem(file, 0, "has a header but no answers; ask the rater to send the saved answers, "
                                     "remove the file, or pass allow_missing=True (--allow-missing)")
    problems = [m for _, _, m in sorted(checker.problems, key=lambda t: (t[0], t[1]))]
    if problems:
        return None, problems
    info = key.drop_duplicates("panel").set_index("panel")
    choice_rows, rating_rows = [], []
    for (rater, panel), rows in groups.items():
        split, item = info.at[panel, "split"], info.at[panel, "item"]
        for r in rows:
            method = checker.method_of[(panel, r.position)]
            base = {"rater": rater, "panel": panel, "split": split, "item": item,
                    "position": r.position, "method": method}
            if r.best == 1:
                choice_rows.append(base)
            if r.rating is not None:
                rating_rows.append({**base, "rating": r.rating})
    columns = ["rater", "panel", "split", "item", "position", "method"]
    choices = pd.DataFrame(choice_rows, columns=columns)
    ratings = pd.DataFrame(rating_rows, columns=columns + ["rating"])
    sort = ["rater", "panel", "position"]
    return Responses(choices.sort_values(sort, ignore_index=True), ratings.sort_values(sort, ignore_index=True),
                     tuple(sorted(set(key["method"]))), tuple(sorted(set(key["split"]))), tuple(all_panels),
                     tuple(files), tuple(scale)), []


def load_responses(source, key, scale: tuple[int, int] = (1, 5), allow_missing: bool = False) -> Responses:
    """Validated answers joined with the key; raises :class:`ResponseError` listing every problem."""
    responses, problems = check_responses(source, key, scale, allow_missing)
    if problems:
        raise ResponseError(problems)
    return responses
