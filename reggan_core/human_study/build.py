"""Build a blind study from an input folder and one output folder per method.

Writes, under ``out_dir``::

    key.csv                     secret: panel, position -> method (never sent to raters)
    study.json                  how the study was built (seed, methods, splits, form settings)
    for_raters/study.html       the offline form (everything embedded)
    for_raters/panels/P001.png  the same panels as images (slides, printed studies)
"""
from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Mapping

from tqdm.auto import tqdm

from ..imageio import save_image
from ..utils import write_config
from .form import FormConfig, write_form
from .panels import DEFAULT_SPLIT, Panel, collect_items, make_panels, panel_image, write_key

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StudyFiles:
    """Where :func:`build_study` put things."""

    key: Path
    form: Path
    panel_images: tuple[Path, ...]
    config: Path
    panels: tuple[Panel, ...]


def build_study(input_dir: str | os.PathLike, method_dirs: Mapping[str, str | os.PathLike],
                out_dir: str | os.PathLike, seed: int = 0, form: FormConfig = FormConfig(),
                default_split: str = DEFAULT_SPLIT, panel_images: bool = True) -> StudyFiles:
    """Collect items, shuffle them into blind panels and write key, form and panel images."""
    out_dir = Path(out_dir)
    items = collect_items(input_dir, method_dirs, default_split)
    panels = make_panels(items, seed)
    pack = out_dir / "for_raters"
    images = tuple(save_image(panel_image(p, form.image_size), pack / "panels" / f"{p.panel}.png")
                   for p in tqdm(panels, desc="panel images", disable=not panel_images or len(panels) < 20)
                   ) if panel_images else ()
    html = write_form(panels, pack / "study.html", form)
    key = write_key(panels, out_dir / "key.csv")   # last: a key.csv means the study was built completely
    splits = sorted({p.split for p in panels})
    config = write_config({"seed": seed, "input_dir": str(input_dir), "default_split": default_split,
                           "methods": {m: str(d) for m, d in method_dirs.items()}, "splits": splits,
                           "n_panels": len(panels), "form": asdict(form)}, out_dir / "study.json")
    log.info("built %d panels (%s) for %d methods in %s", len(panels), ", ".join(splits),
             len(method_dirs), out_dir)
    return StudyFiles(key, html, images, config, tuple(panels))
