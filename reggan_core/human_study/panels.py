"""Blind study panels: one input face beside anonymised method outputs in a shuffled order.

A *panel* shows one input image and the outputs of every method for it, each under a
position letter (A, B, ...). The column order is drawn afresh for every panel from one seed,
so a position says nothing about a method; the panel order is shuffled too, so panel ids say
nothing about the split. The mapping position -> method (the *key*) is written to its own
CSV and never into anything a rater sees.

Folder layout (generic: any model's outputs)::

    inputs/<split>/<name>.<ext>          or  inputs/<name>.<ext>   (one split)
    <method_dir>/<split>/<name>.<ext>    or  <method_dir>/<name>.<ext>

Outputs are matched to inputs by file name (stem), any image extension; ``<stem>_<anything>``
is accepted when it is the only candidate (``python -m reggan_core.generate`` writes
``<stem>_<target>.png``).
"""
from __future__ import annotations

import csv
import io
import os
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..errors import DataError
from ..imageio import IMAGE_EXTENSIONS, list_images, load_image, write_text

KEY_COLUMNS = ("panel", "split", "item", "position", "method", "input", "output")
DEFAULT_SPLIT = "id"   # in-distribution; "ood" = out-of-distribution (the paper's two panel kinds)


@dataclass(frozen=True)
class StudyItem:
    """One input image with every method's output for it."""

    split: str                          # e.g. "id" or "ood"
    name: str                           # file stem, unique within the split
    input_path: Path
    outputs: tuple[tuple[str, Path], ...]   # (method, output file), methods in the caller's order


@dataclass(frozen=True)
class Panel:
    """A blind panel: the input and the outputs in their shuffled display order."""

    panel: str                          # "P001", ...; assigned after shuffling
    split: str
    name: str
    input_path: Path
    columns: tuple[tuple[str, str, Path], ...]  # (position letter, method, output file), left to right

    @property
    def positions(self) -> list[str]:
        return [c[0] for c in self.columns]


def _image_files(folder: Path) -> dict[str, Path]:
    """stem -> file for the image files directly in ``folder``; duplicate stems are refused."""
    found: dict[str, Path] = {}
    for path in list_images(folder):
        if path.stem in found:
            raise DataError(f"{folder} holds two images named {path.stem} ({found[path.stem].name}, "
                            f"{path.name}); keep one")
        found[path.stem] = path
    return found


def _input_splits(input_dir: Path, default_split: str) -> dict[str, dict[str, Path]]:
    """split -> {stem -> file}: sub-folders are splits, files directly inside form ``default_split``."""
    if not input_dir.is_dir():
        raise DataError(f"input folder {input_dir} does not exist; pass the folder of input faces")
    splits: dict[str, dict[str, Path]] = {}
    flat = _image_files(input_dir)
    if flat:
        splits[default_split] = flat
    for sub in sorted(p for p in input_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = _image_files(sub)
        if files:
            if sub.name in splits:
                raise DataError(f"{input_dir} has images both directly inside and in {sub.name}/; "
                                "move the loose images into a split folder")
            splits[sub.name] = files
    if not splits:
        raise DataError(f"no images found in {input_dir} ({', '.join(IMAGE_EXTENSIONS)}); "
                        "put the input faces there, optionally in one sub-folder per split")
    return splits


def _find_output(method: str, method_dir: Path, split: str, stem: str,
                 listings: dict[Path, dict[str, Path]]) -> Path:
    """``<dir>/<split>/<stem>.*`` or ``<dir>/<stem>.*``; else one ``<stem>_<suffix>.*`` (as
    ``python -m reggan_core.generate`` names its outputs, e.g. face1_happy.png)."""
    for folder in (method_dir / split, method_dir):
        if folder not in listings:
            listings[folder] = _image_files(folder) if folder.is_dir() else {}
        files = listings[folder]
        if stem in files:
            return files[stem]
        near = sorted(p for s, p in files.items() if s.startswith(f"{stem}_"))
        if len(near) == 1:
            return near[0]
        if near:
            raise DataError(f"method {method} has {len(near)} candidate outputs for input {split}/{stem} in "
                            f"{folder} ({', '.join(p.name for p in near)}); keep one per input")
    raise DataError(f"method {method} has no output for input {split}/{stem} (looked in "
                    f"{method_dir / split} and {method_dir}); add {stem}.png there or remove the input")


def collect_items(input_dir: str | os.PathLike, method_dirs: Mapping[str, str | os.PathLike],
                  default_split: str = DEFAULT_SPLIT) -> list[StudyItem]:
    """Match every input image with each method's output of the same name."""
    if len(method_dirs) < 2:
        raise DataError(f"a preference study needs at least 2 methods, got {len(method_dirs)}; "
                        "pass one output folder per method")
    if len(method_dirs) > len(string.ascii_uppercase):
        raise DataError(f"{len(method_dirs)} methods do not fit positions A-Z; compare at most 26")
    for method, folder in method_dirs.items():
        if not method or "," in method or method != method.strip():
            raise DataError(f"method name {method!r} is not usable; use a short name without commas")
        if not Path(folder).is_dir():
            raise DataError(f"output folder {folder} of method {method} does not exist; check the path")
    items, listings = [], {}
    for split, files in _input_splits(Path(input_dir), default_split).items():
        for stem, path in sorted(files.items()):
            outputs = tuple((m, _find_output(m, Path(d), split, stem, listings)) for m, d in method_dirs.items())
            items.append(StudyItem(split, stem, path, outputs))
    return items


def make_panels(items: Sequence[StudyItem], seed: int = 0) -> list[Panel]:
    """Shuffle the panel order and, independently per panel, the column order (both from ``seed``)."""
    if not items:
        raise DataError("no study items to build panels from; check the input folder")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(items))
    width = max(3, len(str(len(items))))
    panels = []
    for number, idx in enumerate(order, start=1):
        item = items[idx]
        shuffled = [item.outputs[j] for j in rng.permutation(len(item.outputs))]
        columns = tuple((string.ascii_uppercase[k], m, p) for k, (m, p) in enumerate(shuffled))
        panels.append(Panel(f"P{number:0{width}d}", item.split, item.name, item.input_path, columns))
    return panels


def key_rows(panels: Sequence[Panel]) -> list[dict[str, str]]:
    """The key as rows of :data:`KEY_COLUMNS`: one per panel and position."""
    return [{"panel": p.panel, "split": p.split, "item": p.name, "position": pos, "method": m,
             "input": str(p.input_path), "output": str(out)}
            for p in panels for pos, m, out in p.columns]


def write_key(panels: Sequence[Panel], path: str | os.PathLike) -> Path:
    """Write the secret key (position -> method per panel) as CSV, atomically."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=KEY_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(key_rows(panels))
    return write_text(buf.getvalue(), path)


def read_key(path: str | os.PathLike):
    """Read and check a key CSV; returns a DataFrame with :data:`KEY_COLUMNS`."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise DataError(f"key file {path} does not exist; pass the key.csv written by the build step")
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except pd.errors.EmptyDataError:
        raise DataError(f"key file {path} is empty; pass the key.csv written by the build step") from None
    except (UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise DataError(f"key file {path} is not a UTF-8 CSV file ({exc.__class__.__name__}); pass the key.csv "
                        "written by the build step") from None
    return check_key(table, str(path))


def check_key(key, name: str = "key"):
    """Check a key DataFrame: unique positions and methods per panel, every method in every panel.

    Returns a copy with all :data:`KEY_COLUMNS` (``item`` defaults to the panel id).
    """
    missing = [c for c in ("panel", "split", "position", "method") if c not in key.columns]
    if missing:
        raise DataError(f"{name} lacks column(s) {', '.join(missing)}; use the key.csv from the build step")
    if key.empty:
        raise DataError(f"{name} has no rows; rebuild the study")
    key = key.astype(str).copy()
    if "item" not in key.columns:
        key["item"] = key["panel"]
    for col in ("input", "output"):
        if col not in key.columns:
            key[col] = ""
    for cols, what in ((["panel", "position"], "position"), (["panel", "method"], "method")):
        dup = key[key.duplicated(cols, keep=False)]
        if not dup.empty:
            r = dup.iloc[0]
            raise DataError(f"{name} lists panel {r['panel']} {what} {r[what]} twice; rebuild the study")
    methods = sorted(set(key["method"]))
    for panel, group in key.groupby("panel"):
        if sorted(group["method"]) != methods:
            raise DataError(f"{name}: panel {panel} does not show every method ({', '.join(methods)}); "
                            "rebuild the study")
        if group["split"].nunique() != 1:
            raise DataError(f"{name}: panel {panel} has more than one split; rebuild the study")
    return key[list(KEY_COLUMNS) + [c for c in key.columns if c not in KEY_COLUMNS]]


# ----------------------------------------------------------------------------------------------
# images of panels (for slides, printed studies and the notebook)

def load_panel_image(path: Path, size: int) -> np.ndarray:
    """An RGB uint8 (size, size, 3) copy of an image, resized so every column is the same size."""
    img = load_image(path, min_size=1)
    if img.shape[:2] != (size, size):
        img = np.asarray(Image.fromarray(img).resize((size, size), Image.LANCZOS))
    return img


def panel_image(panel: Panel, size: int = 128, gap: int = 6, label_height: int = 22) -> np.ndarray:
    """The panel as one RGB image: input | gap | outputs A, B, ... with their letters underneath.

    Shape (size + label_height, (1 + n_methods) * (size + gap) + gap, 3). Carries no method name.
    """
    n = len(panel.columns)
    width = gap + (size + gap) * (n + 1) + gap
    canvas = Image.new("RGB", (width, size + label_height + gap), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=max(10, label_height - 6))
    tiles = [("input", panel.input_path)] + [(pos, out) for pos, _, out in panel.columns]
    for k, (label, path) in enumerate(tiles):
        x = gap + k * (size + gap) + (gap if k > 0 else 0)   # an extra gap after the input
        canvas.paste(Image.fromarray(load_panel_image(path, size)), (x, gap))
        draw.text((x + size / 2, gap + size + 2), label, fill=(0, 0, 0), font=font, anchor="ma")
    return np.asarray(canvas)
