"""CFEE-layout datasets: index a folder, split subjects, serve aligned paired tensors.

Layout (a user's CFEE copy and the embedded dataset alike)::

    <root>/<subject>/<category>.<ext>     e.g. CFEE/S001/happily_surprised.jpg

``<category>`` is a name, short code or CFEE index from :mod:`reggan_core.categories`.
Images enter models as float tensors (3, 128, 128) in [-1, 1]. Faces are aligned to the
canonical crop once and cached as PNG under ``<cache_dir>``; ``align=False`` skips
detection for faces that are already cropped (the embedded dataset is).
"""
from __future__ import annotations

import csv
import hashlib
import io
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from .categories import CATEGORY_NAMES, Category, get_category
from .errors import DataError
from .imageio import IMAGE_EXTENSIONS, load_image, save_image, to_tensor, write_text

DEFAULT_ROOT = Path(__file__).resolve().parent.parent / "datasets" / "embedded"
SPLITS = ("train", "val", "test")
# dataset v2 also has the performers' own frames and an out-of-distribution gallery (never trained on)
EXTRA_SPLITS = ("real_pairs", "ood")
DATASETS = {"v1": "embedded", "embedded": "embedded", "v2": "v2"}


def dataset_root(name: str = "v1") -> Path:
    """Folder of a named dataset: 'v1' (= 'embedded', committed) or 'v2' (built by ``make dataset-v2``).

    ``$REGGAN_DATASET_V2`` overrides where v2 lives. A path that is not a known name is returned as is.
    """
    key = str(name).lower()
    if key not in DATASETS:
        return Path(name)
    if key == "v2" and os.environ.get("REGGAN_DATASET_V2"):
        return Path(os.environ["REGGAN_DATASET_V2"])
    return DEFAULT_ROOT.parent / DATASETS[key]


@dataclass
class FaceIndex:
    """Which image holds which subject's which category, for one dataset root."""

    root: Path
    images: dict[str, dict[str, Path]]          # subject -> category name -> file
    skipped: list[str] = field(default_factory=list)  # subjects without a neutral image

    @property
    def subjects(self) -> list[str]:
        return sorted(self.images)

    def categories(self) -> list[str]:
        present = {c for cats in self.images.values() for c in cats}
        return [c for c in CATEGORY_NAMES if c in present]

    def pairs(self, source: str | Category, target: str | Category,
              subjects: Iterable[str] | None = None) -> list[tuple[str, Path, Path]]:
        """(subject, source file, target file) for every subject that has both."""
        s, t = get_category(source).name, get_category(target).name
        chosen = self.subjects if subjects is None else [x for x in subjects if x in self.images]
        return [(subj, self.images[subj][s], self.images[subj][t]) for subj in chosen
                if s in self.images[subj] and t in self.images[subj]]


def target_methods(root: str | os.PathLike) -> dict[tuple[str, str], str]:
    """How each image of a dataset was made, from its ``manifest.csv``: (subject, category) -> method.

    Dataset v2 writes one (``real frame``, ``identity``, ``AU synthesis``, ...); a folder without
    one (v1, a CFEE copy) gives ``{}``, meaning every image is a photograph. The explorer uses it
    so that a synthesised target is not captioned "real".
    """
    path = Path(root) / "manifest.csv"
    if not path.is_file():
        return {}
    with open(path, newline="") as f:
        return {(r["subject"], r["category"]): r.get("method", "") for r in csv.DictReader(f)
                if r.get("subject") and r.get("category")}


def index_dataset(root: str | os.PathLike | None = None, strict: bool = True) -> FaceIndex:
    """Scan ``root`` laid out as ``<subject>/<category>.<ext>`` (or a dataset name: 'v1', 'v2').

    Unknown category file names raise (listing the valid ones) when ``strict``; so do two
    files for one category in a subject (``happy.jpg``, ``HA.png``) and unreadable folders.
    Subjects without a neutral image are skipped and named in one warning.
    """
    if isinstance(root, str) and root.lower() in DATASETS and not Path(root).is_dir():
        root = dataset_root(root)  # a dataset name: index_dataset("v2")
    root = Path(root) if root is not None else DEFAULT_ROOT
    if not root.is_dir():
        raise DataError(
            f"dataset folder {root} does not exist; pass the folder that holds one sub-folder per "
            "subject (see README: 'Using your CFEE copy'), or omit it for the embedded dataset"
        )
    images: dict[str, dict[str, Path]] = {}
    for subj_dir in sorted(p for p in _listdir(root) if p.is_dir() and not p.name.startswith(".")):
        cats: dict[str, Path] = {}
        found: dict[str, list[Path]] = {}
        for f in sorted(_listdir(subj_dir)):
            if f.suffix.lower() not in IMAGE_EXTENSIONS or f.name.startswith("."):
                continue
            try:
                cat = get_category(f.stem)
            except ValueError:
                if strict:
                    raise DataError(
                        f"file {f} is not named after a category; rename it to one of: "
                        f"{', '.join(CATEGORY_NAMES)}"
                    ) from None
                continue
            cats[cat.name] = f
            found.setdefault(cat.name, []).append(f)
        dups = {c: fs for c, fs in found.items() if len(fs) > 1}
        if dups:
            c, fs = next(iter(dups.items()))
            raise DataError(f"subject {subj_dir} has {len(fs)} files for category {c} "
                            f"({', '.join(f.name for f in fs)}); keep one"
                            + (f" (and {len(dups) - 1} more such categories)" if len(dups) > 1 else ""))
        if cats:
            images[subj_dir.name] = cats
    if not images:
        raise DataError(
            f"dataset folder {root} is empty; it needs <subject>/<category>.<ext> images "
            "(see README: 'Using your CFEE copy')"
        )
    skipped = sorted(s for s, cats in images.items() if "neutral" not in cats)
    if skipped:
        warnings.warn(
            f"{len(skipped)} subject(s) without a neutral image skipped: {', '.join(skipped)}",
            stacklevel=2,
        )
        for s in skipped:
            del images[s]
    if not images:
        raise DataError(f"no subject in {root} has a neutral image; add <subject>/neutral.<ext>")
    return FaceIndex(root=root, images=images, skipped=skipped)


def _listdir(folder: Path) -> list[Path]:
    """Entries of a folder; an unreadable one is one line naming it."""
    try:
        return list(folder.iterdir())
    except PermissionError:
        raise DataError(f"folder {folder} is not readable (permission); fix its permissions (chmod +rx) "
                        "or move it out of the dataset") from None


def make_splits(subjects: Sequence[str], seed: int = 0,
                fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)) -> dict[str, str]:
    """Subject-disjoint split: subject -> 'train' | 'val' | 'test', reproducible from ``seed``."""
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
        raise DataError(f"split fractions {fractions} must be three non-negative numbers summing to 1")
    subjects = sorted(subjects)
    order = np.random.default_rng(seed).permutation(len(subjects))
    n = len(subjects)
    n_val = int(round(fractions[1] * n))
    n_test = int(round(fractions[2] * n))
    if n >= 3:  # keep every split non-empty when there are enough subjects
        n_val, n_test = max(n_val, 1 if fractions[1] > 0 else 0), max(n_test, 1 if fractions[2] > 0 else 0)
    n_train = n - n_val - n_test
    labels = ["train"] * n_train + ["val"] * n_val + ["test"] * n_test
    return {subjects[i]: labels[k] for k, i in enumerate(order)}


def write_splits(splits: dict[str, str], path: str | os.PathLike, sources: dict[str, str] | None = None,
                 seed: int | None = None) -> Path:
    """Write ``subject,split`` rows (sorted) atomically.

    Optional columns (readers that know only ``subject,split`` ignore them): ``source``, the source
    person(s) a subject is made from (dataset v2), and ``seed``, the seed the split was drawn with.
    """
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["subject", "split"] + (["source"] if sources else []) + (["seed"] if seed is not None else []))
    for s in sorted(splits):
        w.writerow([s, splits[s]] + ([sources.get(s, "")] if sources else []) + ([seed] if seed is not None else []))
    return write_text(buf.getvalue(), path)


def read_sources(path: str | os.PathLike) -> dict[str, str]:
    """subject -> source person(s) from a splits CSV with a ``source`` column ({} without one)."""
    with open(path, newline="") as fh:
        return {r["subject"]: r["source"] for r in csv.DictReader(fh) if r.get("source")}


def read_splits(path: str | os.PathLike) -> dict[str, str]:
    """Read a splits CSV written by :func:`write_splits`."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"splits file {path} does not exist; create it with load_splits(..., create=True)")
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    bad = [r for r in rows if r.get("split") not in SPLITS + EXTRA_SPLITS]
    if not rows or bad:
        raise DataError(f"splits file {path} is malformed; expected columns subject,split with split in "
                        f"{SPLITS + EXTRA_SPLITS}")
    return {r["subject"]: r["split"] for r in rows}


def load_splits(index: FaceIndex, path: str | os.PathLike | None = None, seed: int = 0,
                create: bool = True) -> dict[str, str]:
    """Splits for ``index`` from ``path`` (default ``<root>/splits.csv``), made once if missing.

    Subjects in the index but not in the file (added later) go to 'train' with a warning. When the
    file records the seed it was drawn with and ``seed`` differs, a warning says the file wins
    (delete it to redraw).
    """
    path = Path(path) if path is not None else index.root / "splits.csv"
    if path.is_file():
        splits = read_splits(path)
        with open(path, newline="") as fh:
            seeds = {r.get("seed") for r in csv.DictReader(fh)} - {None, ""}
        if seeds and str(seed) not in seeds:
            warnings.warn(f"{path} was drawn with seed {', '.join(sorted(seeds))}; seed {seed} is ignored "
                          "while the file exists (delete it to draw a new split)", stacklevel=2)
    elif create:
        splits = make_splits(index.subjects, seed)
        try:
            write_splits(splits, path, seed=seed)
        except OSError:  # read-only dataset: fall back to the cache folder
            write_splits(splits, default_cache_dir() / f"splits-{_digest(str(index.root))}.csv", seed=seed)
    else:
        raise DataError(f"splits file {path} does not exist")
    missing = [s for s in index.subjects if s not in splits]
    if missing:
        warnings.warn(f"{len(missing)} subject(s) not in {path} put in 'train'", stacklevel=2)
        splits.update({s: "train" for s in missing})
    return {s: splits[s] for s in index.subjects}


def subjects_in(splits: dict[str, str], split: str) -> list[str]:
    """Subjects of one split."""
    if split not in SPLITS + EXTRA_SPLITS and split != "all":
        raise DataError(f"unknown split {split!r}; valid: {', '.join(SPLITS + EXTRA_SPLITS)}, all")
    return sorted(s for s, v in splits.items() if split == "all" or v == split)


def default_cache_dir() -> Path:
    """Where aligned crops are cached (``$REGGAN_CACHE`` or ``~/.cache/reggan``)."""
    return Path(os.environ.get("REGGAN_CACHE", Path.home() / ".cache" / "reggan"))


def _digest(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def load_face(path: str | os.PathLike, align: bool = True, size: int = 128,
              cache_dir: str | os.PathLike | None = None) -> np.ndarray:
    """One face as an RGB uint8 (size, size, 3) crop, aligned (and cached) or resized."""
    from .faces import align_face, resize_crop

    path = Path(path)
    img = load_image(path)
    if not align:
        if img.shape[0] == size and img.shape[1] == size:
            return img
        return resize_crop(img, size)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    st = path.stat()
    key = _digest(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{size}")
    cached = cache / "aligned" / f"{key}.png"
    if cached.is_file():
        try:
            return load_image(cached, min_size=1)
        except DataError:
            cached.unlink(missing_ok=True)
    crop = align_face(img, size=size, name=str(path))
    save_image(crop, cached)
    return crop


class PairedFaces:
    """Paired (source, target) faces of one expression pair, as a torch-style dataset.

    Item i is ``(source, target)``, two float tensors (3, size, size) in [-1, 1].
    """

    def __init__(self, index: FaceIndex, source: str, target: str, subjects: Iterable[str] | None = None,
                 align: bool = False, size: int = 128, cache_dir: str | os.PathLike | None = None):
        self.source, self.target = get_category(source), get_category(target)
        self.items = index.pairs(self.source, self.target, subjects)
        if not self.items:
            raise DataError(
                f"no subject has both {self.source.name} and {self.target.name} images in {index.root}"
            )
        self.align, self.size, self.cache_dir = align, size, cache_dir

    def __len__(self) -> int:
        return len(self.items)

    def subject(self, i: int) -> str:
        return self.items[i][0]

    def __getitem__(self, i: int):
        _, src, tgt = self.items[i]
        return (to_tensor(load_face(src, self.align, self.size, self.cache_dir)),
                to_tensor(load_face(tgt, self.align, self.size, self.cache_dir)))

    def tensors(self):
        """All pairs stacked: (X, Y), each (N, 3, size, size)."""
        import torch

        xs, ys = zip(*(self[i] for i in range(len(self))))
        return torch.stack(xs), torch.stack(ys)


class ConditionalFaces:
    """Neutral face + target label over all (or chosen) targets, as a torch-style dataset.

    Item i is ``(neutral, target_image, target_index)`` with ``target_index`` the CFEE index.
    """

    def __init__(self, index: FaceIndex, subjects: Iterable[str] | None = None,
                 targets: Sequence[str] | None = None, align: bool = False, size: int = 128,
                 cache_dir: str | os.PathLike | None = None):
        cats = [get_category(t) for t in (targets or [c for c in index.categories() if c != "neutral"])]
        self.targets = cats
        chosen = index.subjects if subjects is None else list(subjects)
        self.items = [(s, index.images[s]["neutral"], index.images[s][c.name], c.index)
                      for s in chosen if s in index.images for c in cats if c.name in index.images[s]]
        if not self.items:
            raise DataError(f"no neutral/target pairs found in {index.root} for the chosen subjects")
        self.align, self.size, self.cache_dir = align, size, cache_dir

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        _, src, tgt, label = self.items[i]
        return (to_tensor(load_face(src, self.align, self.size, self.cache_dir)),
                to_tensor(load_face(tgt, self.align, self.size, self.cache_dir)), label)
