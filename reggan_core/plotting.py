"""Face grids for the notebooks: every face drawn at >= 128 screen pixels, labelled, maps with colour bars.

:func:`face_grid` lays the axes out in pixels (not with ``tight_layout``), so the size of a face
in the saved PNG is known in advance: ``face_px`` pixels at ``dpi`` (default 128 px at 100 dpi,
i.e. 1.28 in per face; no resampling of a 128 x 128 crop). Grey-scale (2-D) cells are drawn
with a colour map and get their own colour bar; RGB cells are drawn as they are. Column titles
go on top, row labels on the left. :func:`face_pixels` measures the drawn size back, for tests.
"""
from __future__ import annotations

import os
import textwrap
from pathlib import Path
from typing import Sequence

import numpy as np

__all__ = ["FACE_PX", "DPI", "face_grid", "face_pixels", "save_figure"]

FACE_PX = 128   # minimum drawn size of one face (pixels)
DPI = 100       # figure dpi for notebooks and saved PNGs


def face_grid(rows: Sequence[Sequence[np.ndarray]], col_titles: Sequence[str] | None = None,
              row_labels: Sequence[str] | None = None, *, title: str | None = None, face_px: int = FACE_PX,
              dpi: int = DPI, cmap: str = "magma", vmin: float | None = 0.0, vmax: float | None = None,
              cbar_label: str = "", path: str | os.PathLike | None = None):
    """A grid of faces: ``rows[i][j]`` is RGB uint8 (H, W, 3) or a 2-D map (drawn with ``cmap``).

    Maps share one colour scale (``vmin``..``vmax``; ``vmax=None`` = the largest map value) and
    each map cell gets a colour bar labelled ``cbar_label``. Returns the figure; saves it as PNG
    at ``dpi`` when ``path`` is given.
    """
    import matplotlib.pyplot as plt

    n_rows, n_cols = len(rows), max(len(r) for r in rows)
    maps = [img for row in rows for img in row if np.ndim(img) == 2]
    if maps and vmax is None:
        vmax = float(max(np.max(m) for m in maps))
    map_cols = {j for row in rows for j, img in enumerate(row) if np.ndim(img) == 2}
    gap, bar = 8, 58                                  # px between cells; colour bar + its tick labels
    chars = max(8, int(face_px / 6.5))                # 9-pt title characters that fit over one face
    col_titles = [textwrap.fill(str(t), chars) for t in col_titles] if col_titles else None
    title_lines = max((t.count("\n") + 1 for t in col_titles), default=0) if col_titles else 0
    left = 118 if row_labels else 8
    top = (14 * title_lines + 10 if col_titles else 6) + (24 if title else 0)
    widths = [face_px + (bar if j in map_cols else 0) for j in range(n_cols)]
    width = left + sum(widths) + gap * (n_cols - 1) + 8
    height = top + n_rows * face_px + gap * (n_rows - 1) + 8
    fig = plt.figure(figsize=(width / dpi, height / dpi), dpi=dpi)
    x0 = np.cumsum([left] + [w + gap for w in widths[:-1]])
    for i, row in enumerate(rows):
        y = height - top - (i + 1) * face_px - i * gap
        for j, img in enumerate(row):
            ax = fig.add_axes((x0[j] / width, y / height, face_px / width, face_px / height))
            ax.set_xticks([]); ax.set_yticks([])
            if np.ndim(img) == 2:
                im = ax.imshow(img, cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
                cax = fig.add_axes(((x0[j] + face_px + 4) / width, y / height, 8 / width, face_px / height))
                cb = fig.colorbar(im, cax=cax)
                cb.ax.tick_params(labelsize=7)
                if cbar_label:
                    cb.set_label(cbar_label, fontsize=7)
            else:
                ax.imshow(img, interpolation="nearest")
            ax.set_gid("face")
            if i == 0 and col_titles:
                ax.set_title(col_titles[j], fontsize=9)
            if j == 0 and row_labels:
                ax.set_ylabel(row_labels[i], fontsize=8, rotation=0, ha="right", va="center")
    if title:
        fig.suptitle(title, fontsize=10, y=1 - 6 / height, va="top")
    if path is not None:
        save_figure(fig, path, dpi)
    return fig


def face_pixels(fig) -> list[float]:
    """Drawn widths (pixels, at the figure's dpi) of every face cell of a :func:`face_grid` figure."""
    fig.canvas.draw()
    return [round(ax.get_window_extent().width, 6) for ax in fig.axes if ax.get_gid() == "face"]


def save_figure(fig, path: str | os.PathLike, dpi: int = DPI, **kwargs) -> Path:
    """Save a figure as PNG (atomically) and return the path."""
    from .imageio import atomic_path

    path = Path(path).with_suffix(".png")
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png", **kwargs)
    return path
