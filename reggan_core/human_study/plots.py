"""Figures of a study: shares, relative improvement, ratings, power curve (matplotlib, modest size)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..imageio import atomic_path

SPLIT_LABELS = {"all": "all panels", "id": "in-distribution", "ood": "out-of-distribution"}


def _label(split: str) -> str:
    return SPLIT_LABELS.get(split, split)


def _axes(ax, size=(7.0, 3.4)):
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=size, constrained_layout=True)
    return ax


def _grouped(ax, table, value: str, target: str, bars: bool = True):
    """``value`` with [ci_low, ci_high] error bars: methods on x, one colour per split.

    Bars for shares (they start at 0); points for mean ratings, whose axis does not start at 0.
    """
    methods = list(dict.fromkeys(table["method"]))
    methods = [target] + [m for m in methods if m != target] if target in methods else methods
    splits = list(dict.fromkeys(table["split"]))
    width = 0.8 / len(splits)
    for k, split in enumerate(splits):
        t = table[table["split"] == split].set_index("method").reindex(methods)
        x = np.arange(len(methods)) + (k - (len(splits) - 1) / 2) * width
        err = np.vstack([t[value] - t["ci_low"], t["ci_high"] - t[value]])
        if bars:
            ax.bar(x, t[value], width, yerr=err, capsize=3, label=_label(split))
        else:
            ax.errorbar(x, t[value], yerr=err, fmt="o", capsize=3, label=_label(split))
    ax.set_xticks(np.arange(len(methods)), methods, rotation=20, ha="right")
    ax.legend(fontsize=8, frameon=False)
    return methods


def plot_shares(shares, target: str, ax=None):
    """Preference share per method (target first) with bootstrap intervals; dashed line = chance."""
    ax = _axes(ax)
    methods = _grouped(ax, shares, "share", target)
    ax.axhline(1.0 / len(methods), color="gray", ls="--", lw=1, label="chance (1/K)")
    ax.legend(fontsize=8, frameon=False)
    ax.set_xlabel("method")
    ax.set_ylabel("preference share (picked as best)")
    ax.set_title("Which output do raters pick?")
    return ax.figure


def plot_ratings(ratings, target: str, ax=None):
    """Mean rating per method with rater-clustered bootstrap intervals."""
    ax = _axes(ax)
    _grouped(ax, ratings, "mean_rating", target, bars=False)
    ax.set_xlabel("method")
    ax.set_ylabel("mean rating (bootstrap interval)")
    ax.grid(axis="y", alpha=0.3)
    ax.set_title("How good do raters find each output?")
    return ax.figure


def plot_relative_improvement(ri, target: str, truth: dict | None = None,
                              references: tuple[str, ...] = ("best competitor", "chance"), ax=None):
    """Forest plot: relative improvement of ``target`` (%) per reference and split, with intervals.

    Only rows whose reference starts with one of ``references`` are drawn (the table has all).
    ``truth`` (optional): split -> true improvement over the best competitor, drawn as a red cross.
    """
    ri = ri[[any(r.startswith(ref) for ref in references) for r in ri["reference"]]]
    ax = _axes(ax, (7.0, 0.4 * len(ri) + 1.6))
    labels = [f"{r.reference} [{_label(r.split)}]" for r in ri.itertuples()]
    y = np.arange(len(ri))[::-1]
    value = 100 * ri["relative_improvement"].to_numpy()
    lo = 100 * ri["ci_low"].to_numpy()
    hi = 100 * ri["ci_high"].to_numpy()
    hi = np.where(np.isfinite(hi), hi, np.nan)   # an infinite bound (zero share) is left open
    ax.errorbar(value, y, xerr=np.vstack([value - lo, hi - value]), fmt="o", capsize=3, color="tab:blue",
                label="estimate with bootstrap interval")
    if truth:
        marked = [(yy, 100 * truth[r.split]) for yy, r in zip(y, ri.itertuples())
                  if r.reference.startswith("best competitor") and r.split in truth]
        if marked:
            ax.plot(*zip(*[(x, yy) for yy, x in marked]), "x", color="tab:red", ms=9, mew=2, label="true value")
    ax.axvline(0, color="gray", lw=1)
    ax.set_yticks(y, labels, fontsize=8)
    ax.set_xlabel(f"relative improvement of {target} (%)")
    ax.legend(fontsize=8, frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=2)
    return ax.figure


def plot_power(curve, target_power: float = 0.8, ax=None):
    """Power vs number of raters (log axis): colour = true improvement, line style = test."""
    from matplotlib.lines import Line2D

    ax = _axes(ax, (8.0, 3.6))
    styles = ["--", "-", ":", "-."]
    tests = list(dict.fromkeys(curve["test"]))
    colours = {ri: f"C{k}" for k, ri in enumerate(sorted(set(curve["improvement"])))}
    for (ri, test), g in curve.groupby(["improvement", "test"], sort=True):
        ax.plot(g["n_raters"], g["power"], styles[tests.index(test) % len(styles)], marker="o", ms=3,
                color=colours[ri])
    ax.axhline(target_power, color="gray", lw=1)
    ax.set_xscale("log")
    ticks = sorted(set(curve["n_raters"]))
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.minorticks_off()
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("number of raters")
    ax.set_ylabel("power (target beats\nevery competitor)")
    first = ax.legend([Line2D([], [], color=c) for c in colours.values()],
                      [f"{100 * ri:+.0f}%" for ri in colours], title="true improvement", fontsize=8,
                      title_fontsize=8, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.add_artist(first)
    ax.legend([Line2D([], [], color="k", ls=styles[k % len(styles)]) for k in range(len(tests))], tests,
              title="test", fontsize=8, title_fontsize=8, frameon=False, loc="lower left",
              bbox_to_anchor=(1.01, 0.0))
    return ax.figure


def save_figure(fig, path: str | os.PathLike, dpi: int = 110) -> Path:
    """Save a figure as PNG atomically and close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    plt.close(fig)
    return path
