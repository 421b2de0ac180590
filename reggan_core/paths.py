"""Where things live, independent of the working directory.

Notebooks run from ``notebooks/`` under nbval, from the repository root under papermill, or
from anywhere else; their path parameters go through :func:`repo_path` so that
``checkpoints/reggan_embedded.pt`` means the same file in every case. Figures and run outputs
default to the ignored ``outputs/`` folder, so running notebooks or tests never rewrites tracked
files; ``make figures`` sets ``REGGAN_FIGURES=figures`` to regenerate the committed ones on purpose.
"""
from __future__ import annotations

import os
from pathlib import Path

from .utils import repo_root

__all__ = ["repo_root", "repo_path", "shown", "outputs_dir", "figures_dir", "checkpoints_dir"]


def repo_path(path: str | os.PathLike | None) -> Path | None:
    """An absolute path: absolute paths and paths that exist from the cwd stay; others are repo-relative.

    ``None`` stays ``None`` (the caller's default applies).
    """
    if path is None:
        return None
    p = Path(path).expanduser()
    if p.is_absolute():
        return p
    if p.exists():
        return p.resolve()
    return (repo_root() / p).resolve()


def shown(path: str | os.PathLike) -> str:
    """``path`` relative to the repository when it lies inside it, else as given (for results files and logs)."""
    try:
        return str(Path(path).resolve().relative_to(repo_root()))
    except ValueError:
        return str(path)


def outputs_dir(sub: str | None = None) -> Path:
    """``$REGGAN_OUTPUTS`` or ``<repo>/outputs`` (git-ignored), optionally a sub-folder; created."""
    root = Path(os.environ.get("REGGAN_OUTPUTS") or repo_root() / "outputs").expanduser()
    out = root / sub if sub else root
    out.mkdir(parents=True, exist_ok=True)
    return out.resolve()


def figures_dir(path: str | os.PathLike | None = None) -> Path:
    """Folder for figures: ``path`` if given, else ``$REGGAN_FIGURES``, else ``outputs/figures``; created."""
    chosen = path if path is not None else os.environ.get("REGGAN_FIGURES")
    out = repo_path(chosen) if chosen else outputs_dir("figures")
    out.mkdir(parents=True, exist_ok=True)
    return out


def checkpoints_dir() -> Path:
    """The shipped checkpoints folder of the repository."""
    return repo_root() / "checkpoints"
