"""The repository's own methods as the "competitors" of a study: real outputs of shipped models.

For every input face and target expression this writes one output per method, made by the
models themselves (no degradation, no stand-in)::

    copy_input      the input face unchanged (a method that does nothing: the floor of any study)
    regression      the RegGAN checkpoint's local ridge layer alone (its ``regression`` output)
    refiner_only    the refiner-only baseline checkpoint (the same refiner, fed the neutral face)
    RegGAN          the RegGAN checkpoint's refined output
    RegGAN_x<s>     RegGAN at strength s > 1: out = x + s (f(x) - x), an *exaggerated* expression

Folder layout, ready for :func:`reggan_core.human_study.build_study`::

    <out_root>/inputs/<split>/<item>.png
    <out_root>/methods/<method>/<split>/<item>.png
    <out_root>/manifest.csv       split, item, target, method, input, output (one row per output)

Two options of one panel that are pixel-identical carry no preference; :func:`identical_outputs`
finds them (``build_study`` callers should refuse or drop such items).
"""
from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..categories import get_category
from ..errors import ConfigError, DataError
from ..imageio import save_image, write_text

MANIFEST_COLUMNS = ("split", "item", "target", "method", "input", "output")


@dataclass(frozen=True)
class StudyInput:
    """One panel's input: an aligned RGB uint8 face (S, S, 3), the target expression, its split."""

    split: str      # "id" (held-out dataset subjects) or "ood" (faces unlike the training data)
    item: str       # file stem, unique within the split, e.g. "S016_happy"
    face: np.ndarray
    target: str     # CFEE category name


def method_descriptions(exaggeration: float = 1.5) -> dict[str, str]:
    """method name -> what it is, in the order the outputs are written."""
    return {
        "copy_input": "the input face unchanged (does nothing)",
        "regression": "RegGAN's local ridge layer alone (r = 3, lambda = 0.4, closed form)",
        "refiner_only": "the refiner-only baseline (same refiner, no ridge layer)",
        "RegGAN": "ridge layer + refiner (the RegGAN checkpoint)",
        exaggerated_name(exaggeration): f"RegGAN at strength {exaggeration:g} (exaggerated expression)",
    }


def exaggerated_name(exaggeration: float) -> str:
    """Method name of the exaggerated variant, e.g. ``RegGAN_x1.5``."""
    return f"RegGAN_x{exaggeration:g}"


def method_outputs(reggan: Any, refiner_only: Any, face: np.ndarray, target: str,
                   exaggeration: float = 1.5) -> dict[str, np.ndarray]:
    """All methods' outputs (RGB uint8) for one aligned face, from the two loaded generators."""
    if not exaggeration > 1:
        raise ConfigError(f"exaggeration={exaggeration!r} must be > 1 (1 is RegGAN itself)")
    if not getattr(reggan, "use_regression", True):
        raise ConfigError("the RegGAN model has no ridge layer (a refiner-only checkpoint?); pass "
                          "checkpoints/reggan_embedded.pt as the RegGAN model")
    full = reggan.translate(face, target)
    strong = reggan.translate(face, target, strength=exaggeration)
    base = refiner_only.translate(face, target)
    return {"copy_input": face, "regression": full["regression"], "refiner_only": base["refined"],
            "RegGAN": full["refined"], exaggerated_name(exaggeration): strong["refined"]}


def make_method_outputs(inputs: Sequence[StudyInput], reggan: Any, refiner_only: Any,
                        out_root: str | os.PathLike, exaggeration: float = 1.5):
    """Write every input and every method's output for it; returns (method -> folder, manifest).

    ``reggan`` / ``refiner_only``: generators from :func:`reggan_core.model.load_generator` (or
    anything with the same ``translate``). The manifest (a DataFrame with
    :data:`MANIFEST_COLUMNS`) is also written to ``<out_root>/manifest.csv``.
    """
    import pandas as pd

    if not inputs:
        raise DataError("no study inputs: pass at least one face")
    seen: set[tuple[str, str]] = set()
    out_root = Path(out_root)
    rows = []
    names = list(method_descriptions(exaggeration))
    for inp in inputs:
        if (inp.split, inp.item) in seen:
            raise DataError(f"study input {inp.split}/{inp.item} appears twice; give each item its own name")
        seen.add((inp.split, inp.item))
        target = get_category(inp.target).name
        in_path = save_image(inp.face, out_root / "inputs" / inp.split / f"{inp.item}.png")
        outs = method_outputs(reggan, refiner_only, inp.face, target, exaggeration)
        for method in names:
            path = save_image(outs[method], out_root / "methods" / method / inp.split / f"{inp.item}.png")
            rows.append((inp.split, inp.item, target, method, str(in_path), str(path)))
    manifest = pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS))
    buf = io.StringIO()
    manifest.to_csv(buf, index=False, lineterminator="\n")
    write_text(buf.getvalue(), out_root / "manifest.csv")
    return {m: out_root / "methods" / m for m in names}, manifest


def identical_outputs(items) -> list[str]:
    """One line per pair of methods whose outputs for one study item are pixel-identical.

    ``items``: :class:`~reggan_core.human_study.panels.StudyItem` list (from ``collect_items``).
    Raters cannot prefer one of two identical images, so such a pair has no true preference.
    """
    problems = []
    for item in items:
        images = [(m, _pixels(p)) for m, p in item.outputs]
        for i in range(len(images)):
            for j in range(i + 1, len(images)):
                (ma, a), (mb, b) = images[i], images[j]
                if a.shape == b.shape and np.array_equal(a, b):
                    problems.append(f"{item.split}/{item.name}: methods {ma} and {mb} have pixel-identical outputs")
    return problems


def _pixels(path: Path) -> np.ndarray:
    from ..imageio import load_image

    return load_image(path, min_size=1)


def study_inputs(dataset_root: str | os.PathLike | None, subjects: Sequence[str], targets: Sequence[str],
                 ood_faces: Mapping[str, np.ndarray] | None = None) -> list[StudyInput]:
    """Neutral faces of ``subjects`` (split ``id``) and the ``ood_faces`` (split ``ood``), each x targets."""
    from ..data import index_dataset
    from ..imageio import load_image

    index = index_dataset(dataset_root)
    out = []
    for subject in subjects:
        if subject not in index.images or "neutral" not in index.images[subject]:
            raise DataError(f"subject {subject} has no neutral image in {index.root}; pick another subject")
        face = load_image(index.images[subject]["neutral"])
        out += [StudyInput("id", f"{subject}_{get_category(t).name}", face, t) for t in targets]
    for name, face in (ood_faces or {}).items():
        out += [StudyInput("ood", f"{name}_{get_category(t).name}", face, t) for t in targets]
    return out
