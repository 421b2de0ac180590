"""Real-face benchmark: translate held-out real people and real performers, judge with pretrained networks.

Faces (dataset v2, ``<subject>/<category>.jpg``, 128x128 aligned crops):

* ``held-out``: the real people of the val and test splits, i.e. subjects whose ``source`` in
  ``splits.csv`` names one person (no ``+``: those are morphs of two people). Their non-neutral
  images are synthesised, so they get no L1 to a target;
* ``real_pairs``: the performers, whose neutral *and* expressive images are real video frames;
  L1 (mean absolute difference on the [0, 1] scale) is measured to the real target where one exists.

A *method* is any callable ``f(faces_uint8 (N,128,128,3), target) -> uint8 (N,128,128,3)``, so the
same functions score checkpoints, ablations and baselines alike (:func:`methods_from_models`).
Judges, all pretrained elsewhere and sharing nothing with training: ECS by the FER2013 mini-Xception
and by face-api (:mod:`.ecs`), identity by dlib's 128-d descriptor (Euclidean distance to the input)
and HSE FaceRes (cosine to the input) (:mod:`.fss`), FID / KID on FID-Inception pool features
(:mod:`.fid`) of all of a method's outputs against real expressive frames.
"""
from __future__ import annotations

import csv
import hashlib
import os
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np

from ..errors import ConfigError, DataError

BASIC_TARGETS: tuple[str, ...] = ("happy", "sad", "fearful", "angry", "surprised", "disgusted")
GROUPS: tuple[str, ...] = ("held-out", "real_pairs")
ECS_JUDGES: tuple[str, ...] = ("fer", "faceapi")
ID_JUDGES: tuple[str, ...] = ("dlib", "faceres")
# performance frames whose landmark label is one of these count as real expressive frames
EXPRESSIVE_LABELS: tuple[str, ...] = ("happy", "happily_surprised", "surprised", "sad")
PUBLISHED_DLIB_MEDIAN, PUBLISHED_DLIB_BEST = 0.38, 0.30
JUDGE_TITLES = {"fer": "FER2013 mini-Xception", "faceapi": "face-api FaceExpressionNet"}

Method = Callable[[np.ndarray, str], np.ndarray]


# --------------------------------------------------------------------------------------
# Subjects and faces
# --------------------------------------------------------------------------------------
def _split_rows(root: Path) -> list[dict[str, str]]:
    """Rows of ``<root>/splits.csv`` (checked by :func:`reggan_core.data.read_splits`)."""
    from ..data import read_splits

    path = root / "splits.csv"
    read_splits(path)   # one-line DataError when missing or malformed
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if "source" not in (rows[0] if rows else {}):
        raise DataError(f"{path} has no 'source' column; rebuild dataset v2 (`make dataset-v2`), the real "
                        "held-out people are told apart from morphs by it")
    return rows


def _root(root: str | os.PathLike | None) -> Path:
    from ..data import dataset_root

    return Path(root) if root is not None else dataset_root("v2")


def heldout_real_subjects(root: str | os.PathLike | None = None) -> list[str]:
    """Val/test subjects made from one real person (``source`` without '+'), sorted."""
    return sorted(r["subject"] for r in _split_rows(_root(root))
                  if r["split"] in ("val", "test") and "+" not in r["source"] and r["source"].strip())


def performer_subjects(root: str | os.PathLike | None = None) -> list[str]:
    """Subjects of the ``real_pairs`` split (real neutral + real expressive frames), sorted."""
    return sorted(r["subject"] for r in _split_rows(_root(root)) if r["split"] == "real_pairs")


@dataclass
class BenchFace:
    """One benchmark person: the neutral input and the real target frames (real_pairs only)."""

    subject: str
    group: str                                          # 'held-out' or 'real_pairs'
    neutral: np.ndarray                                 # uint8 (128, 128, 3)
    real: dict[str, np.ndarray] = field(default_factory=dict)   # target -> real frame


def load_faces(root: str | os.PathLike | None = None, targets: Sequence[str] = BASIC_TARGETS) -> list[BenchFace]:
    """Held-out real people, then performers, with their neutral crops (and real targets for performers)."""
    from ..data import index_dataset, load_face

    root = _root(root)
    index = index_dataset(root)
    faces: list[BenchFace] = []
    for group, subjects in (("held-out", heldout_real_subjects(root)), ("real_pairs", performer_subjects(root))):
        missing = [s for s in subjects if s not in index.images]
        if missing:
            raise DataError(f"{root}: subject(s) {', '.join(missing)} are in splits.csv but have no neutral image; "
                            "rebuild dataset v2 (`make dataset-v2`)")
        for s in subjects:
            cats = index.images[s]
            real = {t: load_face(cats[t], align=False) for t in targets if group == "real_pairs" and t in cats}
            faces.append(BenchFace(s, group, load_face(cats["neutral"], align=False), real))
    if not faces:
        raise DataError(f"{root}/splits.csv names no held-out real person and no performer; rebuild dataset v2")
    return faces


def real_expressive_frames(root: str | os.PathLike | None = None, use_performances: bool = True,
                           targets: Sequence[str] = BASIC_TARGETS) -> tuple[np.ndarray, str]:
    """Real expressive frames for FID/KID, and a line saying which.

    Always the performers' real targets (``real_pairs`` images other than neutral); with
    ``use_performances`` also every frame of ``performances.npz`` whose landmark label (never an
    expression judge) is in :data:`EXPRESSIVE_LABELS`, leaving out the frames the real_pairs
    images were taken from (named in ``manifest.csv``).
    """
    root = _root(root)
    faces = [f for f in load_faces(root, targets) if f.group == "real_pairs"]
    frames = [img for f in faces for img in f.real.values()]
    what = f"{len(frames)} real_pairs targets"
    if use_performances and (root / "performances.npz").is_file():
        from ..dataset_v2 import load_performances_npz

        used: set[str] = set()
        manifest = root / "manifest.csv"
        if manifest.is_file():
            with open(manifest, newline="") as fh:
                used = {r["frame"].split(":", 1)[1] if ":" in r["frame"] else r["frame"]
                        for r in csv.DictReader(fh) if r["split"] == "real_pairs" and r.get("frame")}
        perfs = load_performances_npz(root)
        extra = 0
        for name in sorted(perfs):
            p = perfs[name]
            for img, lab, fid in zip(p["frames"], p["labels"], p["frame_ids"]):
                if str(lab) in EXPRESSIVE_LABELS and str(fid) not in used:
                    frames.append(np.ascontiguousarray(img))
                    extra += 1
        what += (f" + {extra} performance frames labelled {'/'.join(EXPRESSIVE_LABELS)} by landmarks "
                 f"({len(perfs)} performers)")
    if len(frames) < 2:
        raise DataError(f"only {len(frames)} real expressive frame(s) under {root}; FID/KID need at least 2")
    return np.stack(frames), what


# --------------------------------------------------------------------------------------
# Methods
# --------------------------------------------------------------------------------------
def copy_input(faces: np.ndarray, target: str) -> np.ndarray:
    """The baseline that changes nothing: returns its input."""
    return np.array(faces, dtype=np.uint8, copy=True)


def model_method(model, output: str = "refined", batch_size: int = 64, strength: float = 1.0) -> Method:
    """A method from a loaded RegGAN: ``output`` 'refined' (refiner) or 'regression' (ridge layer only).

    Runs ``model(x, labels)`` (or ``model.regress``) on whole batches under ``torch.no_grad``;
    ``strength`` s scales the change as ``RegGAN.translate`` does: x + s (y - x), clipped (1 = as trained).
    """
    import torch

    from ..imageio import to_uint8

    if output not in ("refined", "regression"):
        raise ConfigError(f"output {output!r} is not a model output; use 'refined' or 'regression'")
    if output == "regression" and not model.use_regression:
        raise ConfigError("this model has no ridge layer (refiner-only); use output='refined'")
    if not (np.isfinite(strength) and strength >= 0):
        raise ConfigError(f"strength={strength!r} is invalid; use a number >= 0 (1 = the model's own change)")
    device = next(model.parameters()).device

    def run(faces: np.ndarray, target: str) -> np.ndarray:
        faces = np.asarray(faces)
        if faces.ndim != 4 or faces.dtype != np.uint8 or faces.shape[-1] != 3:
            raise DataError(f"a method takes RGB uint8 faces (N, H, W, 3), got {faces.dtype} {faces.shape}")
        label = model.label(target)
        outs = []
        model.eval()
        with torch.no_grad():
            for i in range(0, len(faces), batch_size):
                x = torch.from_numpy(faces[i:i + batch_size].copy()).permute(0, 3, 1, 2).float().div(127.5).sub(1)
                x = x.to(device)
                labels = torch.full((len(x),), label, dtype=torch.long, device=device)
                y = model.regress(x, labels) if output == "regression" else model(x, labels)[0]
                if strength != 1.0:
                    y = x + strength * (y.float() - x)
                outs.append(to_uint8(y.float().clamp(-1, 1).cpu()))
        return np.concatenate(outs) if outs else np.zeros((0,) + faces.shape[1:], np.uint8)

    return run


def load_models(reggan_path: str | os.PathLike, refiner_only_path: str | os.PathLike, device: str = "cpu"):
    """The benchmark's two checkpoints, loaded once and checked: (RegGAN, refiner-only)."""
    from ..model import load_generator

    reggan = load_generator(reggan_path, map_location=device)
    refiner_only = load_generator(refiner_only_path, map_location=device)
    if not reggan.use_regression:
        raise ConfigError(f"{reggan_path} is a refiner-only model; --reggan needs a RegGAN checkpoint")
    if refiner_only.use_regression:
        raise ConfigError(f"{refiner_only_path} has ridge layers; --refiner-only needs a refiner-only checkpoint")
    return reggan, refiner_only


def scalable_methods(reggan, refiner_only) -> dict[str, tuple[object, str]]:
    """method name -> (model, output) for the three methods whose change can be scaled (the strength sweep)."""
    return {"regression-only": (reggan, "regression"), "refiner-only": (refiner_only, "refined"),
            "RegGAN": (reggan, "refined")}


def methods_from_checkpoints(reggan_path: str | os.PathLike, refiner_only_path: str | os.PathLike,
                             device: str = "cpu") -> dict[str, Method]:
    """The four methods of the benchmark: copy-input, regression-only, refiner-only, RegGAN."""
    return methods_from_models(*load_models(reggan_path, refiner_only_path, device))


def methods_from_models(reggan, refiner_only) -> dict[str, Method]:
    """copy-input plus :func:`scalable_methods` as they were trained (strength 1)."""
    return {"copy-input": copy_input,
            **{name: model_method(m, out) for name, (m, out) in scalable_methods(reggan, refiner_only).items()}}


def run_method(method: Method, faces: Sequence[BenchFace], targets: Sequence[str] = BASIC_TARGETS,
               name: str = "method") -> dict[str, np.ndarray]:
    """target -> the method's outputs (N, 128, 128, 3) uint8 for all ``faces`` (in order), checked."""
    inputs = np.stack([f.neutral for f in faces])
    out = {}
    for t in targets:
        y = np.asarray(method(inputs, t))
        if y.shape != inputs.shape or y.dtype != np.uint8:
            raise DataError(f"method {name!r} returned {y.dtype} {y.shape} for {t}; it must return uint8 "
                            f"{inputs.shape}, one face per input")
        out[t] = y
    return out


# --------------------------------------------------------------------------------------
# Judges
# --------------------------------------------------------------------------------------
class _MemoFeatures:
    """Wraps an Inception extractor: each distinct image's features are computed once."""

    def __init__(self, extractor):
        self.extractor, self.label, self.memo = extractor, extractor.label, {}

    def __call__(self, images: Sequence[np.ndarray]) -> np.ndarray:
        keys = [hashlib.sha1(np.ascontiguousarray(i).tobytes()).digest() for i in images]
        todo = list({k: i for i, k in enumerate(keys) if k not in self.memo}.values())
        if todo:
            feats = self.extractor([images[i] for i in todo])
            self.memo.update({keys[i]: feats[j] for j, i in enumerate(todo)})
        return np.stack([self.memo[k] for k in keys])


@dataclass
class Judges:
    """Pretrained judges, loaded once: ECS classifiers, identity embedders, the FID Inception."""

    ecs: dict[str, object]
    identity: dict[str, object]
    inception: object | None = None
    unavailable: dict[str, str] = field(default_factory=dict)   # judge -> why it is missing


def load_judges(ecs: Iterable[str] = ECS_JUDGES, identity: Iterable[str] = ID_JUDGES, inception: bool = True,
                cache: bool = True, device: str = "cpu") -> Judges:
    """Load each judge once; a judge that cannot be loaded is recorded in ``unavailable`` (its columns stay NaN).

    ``cache`` wraps embedders (:class:`~.fss.CachedEmbedder`) and the Inception so that a face seen
    twice (every method's inputs, copy-input's outputs) is embedded once.
    """
    from .ecs import get_classifier
    from .fer import MetricUnavailable
    from .fid import inception_extractor
    from .fss import CachedEmbedder, get_embedder

    judges = Judges({}, {})
    for name in ecs:
        try:
            judges.ecs[name] = get_classifier(name, device=device)
        except MetricUnavailable as exc:
            judges.unavailable[name] = str(exc)
    for name in identity:
        try:
            emb = get_embedder(name)
            judges.identity[name] = CachedEmbedder(emb) if cache else emb
        except MetricUnavailable as exc:
            judges.unavailable[name] = str(exc)
    if inception:
        try:
            ext = inception_extractor(device=device)
            judges.inception = _MemoFeatures(ext) if cache else ext
        except MetricUnavailable as exc:
            judges.unavailable["inception"] = str(exc)
    return judges


def ecs_hits(classifier, images: Sequence[np.ndarray], target: str) -> np.ndarray:
    """Per image: 1.0 when the judge's top class is the target's class (:func:`.ecs.class_of_target`)."""
    from ..categories import get_category
    from .ecs import class_of_target

    k = class_of_target(get_category(target), classifier.classes)
    if k is None:
        raise DataError(f"judge {getattr(classifier, 'name', classifier)!r} has no class for {target}; "
                        f"score only the basic targets {', '.join(BASIC_TARGETS)}")
    probs = np.asarray(classifier.predict(list(images)))
    return (probs.argmax(1) == k).astype(np.float64)


# --------------------------------------------------------------------------------------
# Scores
# --------------------------------------------------------------------------------------
def l1(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference of two uint8 images on the [0, 1] scale."""
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).mean() / 255.0)


def score_outputs(method_name: str, faces: Sequence[BenchFace], outputs: Mapping[str, np.ndarray],
                  judges: Judges) -> list[dict]:
    """One row per (target, group) with n, ECS per judge, identity per embedder and L1 to the real target.

    Columns: ``method, target, group, n, ecs_<judge>, dlib_distance, faceres_cosine, l1, n_l1``
    (NaN where a judge is unavailable or there is no real target). Also ``_per_face``: per-face
    values, used for the overall rows.
    """
    inputs = [f.neutral for f in faces]
    rows = []
    for t, out in outputs.items():
        out = list(out)
        hits = {j: ecs_hits(c, out, t) for j, c in judges.ecs.items()}
        ident = {}
        for j, emb in judges.identity.items():
            e_in, _ = emb.embed(inputs)
            e_out, _ = emb.embed(out)
            if j == "dlib":
                ident["dlib_distance"] = np.linalg.norm(e_in - e_out, axis=1)
            else:
                from .fss import cosine_similarity

                ident[f"{j}_cosine"] = cosine_similarity(e_in, e_out)
        l1s = np.array([l1(o, f.real[t]) if t in f.real else np.nan for o, f in zip(out, faces)])
        for g in GROUPS:
            m = np.array([f.group == g for f in faces])
            if not m.any():
                continue
            row = {"method": method_name, "target": t, "group": g, "n": int(m.sum())}
            for j in ECS_JUDGES:
                row[f"ecs_{j}"] = float(hits[j][m].mean()) if j in hits else float("nan")
            for col in ("dlib_distance", "faceres_cosine"):
                row[col] = float(ident[col][m].mean()) if col in ident else float("nan")
            lm = l1s[m]
            row["n_l1"] = int(np.isfinite(lm).sum())
            row["l1"] = float(np.nanmean(lm)) if row["n_l1"] else float("nan")
            row["_per_face"] = {"hits": {j: h[m] for j, h in hits.items()},
                                **{k: v[m] for k, v in ident.items()}, "l1": lm}
            rows.append(row)
    return rows


def overall_rows(rows: Sequence[dict]) -> list[dict]:
    """Per (method, group): every target's faces pooled (target 'all')."""
    out = []
    keys = dict.fromkeys((r["method"], r["group"]) for r in rows)
    for method, group in keys:
        sel = [r for r in rows if r["method"] == method and r["group"] == group]
        row = {"method": method, "target": "all", "group": group, "n": sum(r["n"] for r in sel)}
        for j in ECS_JUDGES:
            vals = [r["_per_face"]["hits"][j] for r in sel if j in r["_per_face"]["hits"]]
            row[f"ecs_{j}"] = float(np.concatenate(vals).mean()) if vals else float("nan")
        for col in ("dlib_distance", "faceres_cosine", "l1"):
            vals = [r["_per_face"][col] for r in sel if col in r["_per_face"]]
            v = np.concatenate(vals) if vals else np.zeros(0)
            row[col] = float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")
            if col == "l1":
                row["n_l1"] = int(np.isfinite(v).sum())
        out.append(row)
    return out


def fid_kid(generated: np.ndarray, real_features: np.ndarray, judges: Judges, seed: int = 0) -> dict:
    """FID and KID (mean, std over 100 subsets) of generated images against precomputed real features."""
    from .fid import fid_from_features, kid

    g = judges.inception(list(generated))
    fid = fid_from_features(real_features, g)
    k, ks = kid(real_features, g, n_subsets=100, subset_size=min(len(g), len(real_features)), seed=seed)
    return {"fid": fid, "kid": k, "kid_std": ks, "n_generated": len(g), "n_real": len(real_features)}


def real_floor(real_features: np.ndarray, seed: int = 0) -> dict:
    """Real-vs-real FID/KID: the real frames split at random into two halves (the floor at that N)."""
    from .fid import fid_from_features, kid

    idx = np.random.default_rng(seed).permutation(len(real_features))
    a, b = real_features[idx[: len(idx) // 2]], real_features[idx[len(idx) // 2:]]
    if min(len(a), len(b)) < 2:
        return {"fid": float("nan"), "kid": float("nan"), "kid_std": float("nan"), "n_a": len(a), "n_b": len(b)}
    k, ks = kid(a, b, n_subsets=100, subset_size=min(len(a), len(b)), seed=seed)
    return {"fid": fid_from_features(a, b), "kid": k, "kid_std": ks, "n_a": len(a), "n_b": len(b)}


def evaluate(methods: Mapping[str, Method], faces: Sequence[BenchFace] | None = None,
             targets: Sequence[str] = BASIC_TARGETS, judges: Judges | None = None,
             real_frames: np.ndarray | None = None, progress: bool = True,
             keep_outputs: bool = True, cache_dir: str | os.PathLike | None = "default") -> dict:
    """Score every method: returns ``rows`` (per target/group + 'all'), ``fid`` (per method), ``floor``, ``outputs``.

    ``faces`` default to :func:`load_faces`; ``real_frames`` (for FID/KID) default to
    :func:`real_expressive_frames`; pass ``judges`` to reuse loaded ones. FID/KID are skipped
    (empty ``fid``) when the Inception judge is unavailable. The real frames' Inception features are
    cached in ``cache_dir`` ('default': ``<reggan cache>/features``; None: not cached), keyed by content.
    """
    from tqdm.auto import tqdm

    faces = list(faces) if faces is not None else load_faces(targets=targets)
    judges = judges or load_judges()
    rows: list[dict] = []
    fids: dict[str, dict] = {}
    outputs: dict[str, dict[str, np.ndarray]] = {}
    real_feats, floor = None, {}
    fid_steps = judges.inception is not None
    bar = tqdm(total=len(methods) * (len(targets) + fid_steps) + fid_steps, desc="real-face benchmark",
               disable=not progress)
    if judges.inception is not None:
        from ..data import default_cache_dir
        from .fid import FeatureExtractor, cached_features

        if real_frames is None:
            real_frames, _ = real_expressive_frames(targets=targets)
        cache = default_cache_dir() / "features" if cache_dir == "default" else cache_dir
        ext = FeatureExtractor("inception", judges.inception.label, judges.inception)
        bar.set_postfix_str("Inception features of the real frames")
        real_feats = cached_features(list(real_frames), ext, cache, tag="realfaces-real")
        floor = real_floor(real_feats)
        bar.update(1)
    for name, method in methods.items():
        outs = run_method(method, faces, targets, name)
        for t in targets:
            bar.set_postfix_str(f"{name}: {t}")
            rows.extend(score_outputs(name, faces, {t: outs[t]}, judges))
            bar.update(1)
        if real_feats is not None:
            bar.set_postfix_str(f"{name}: FID/KID")
            fids[name] = fid_kid(np.concatenate([outs[t] for t in targets]), real_feats, judges)
            bar.update(1)
        if keep_outputs:
            outputs[name] = outs
    bar.close()
    rows = rows + overall_rows(rows)
    return {"rows": rows, "fid": fids, "floor": floor, "outputs": outputs, "faces": faces, "targets": list(targets),
            "unavailable": dict(judges.unavailable)}


# --------------------------------------------------------------------------------------
# Strength sweep: expression against identity
# --------------------------------------------------------------------------------------
SWEEP_STRENGTHS: tuple[float, ...] = (0.5, 1.0, 1.5, 2.0)


def strength_sweep(models: Mapping[str, tuple[object, str]], faces: Sequence[BenchFace], judges: Judges,
                   strengths: Sequence[float] = SWEEP_STRENGTHS, targets: Sequence[str] = BASIC_TARGETS,
                   progress: bool = True, scored: Sequence[dict] = ()) -> list[dict]:
    """Score every method at every strength s (output x + s (y - x)): rows as :func:`score_outputs` plus 'strength'.

    A stronger change raises ECS and costs identity, so two methods compare fairly only along these
    curves: at the same identity distance, which one makes the expression more often? ``scored``: rows
    of these methods at strength 1 from :func:`evaluate` on the same faces and judges, reused instead of
    scoring strength 1 again.
    """
    from tqdm.auto import tqdm

    rows: list[dict] = []
    if 1.0 in strengths and scored:
        reused = [{**r, "strength": 1.0} for r in scored if r["method"] in models and r["target"] in (*targets, "all")]
        if {r["method"] for r in reused} == set(models):
            rows.extend(reused)
            strengths = [s for s in strengths if s != 1.0]
    jobs = [(name, s) for name in models for s in strengths]
    for name, s in tqdm(jobs, desc="strength sweep", disable=not progress):
        model, output = models[name]
        outs = run_method(model_method(model, output, strength=s), faces, targets, name)
        mine = [r for t in targets for r in score_outputs(name, faces, {t: outs[t]}, judges)]
        rows.extend({**r, "strength": float(s)} for r in mine + overall_rows(mine))
    return rows


def ecs_mean(row: Mapping) -> float:
    """The mean of the ECS judges' scores of one row (NaN when a judge is missing)."""
    return float(np.mean([row[f"ecs_{j}"] for j in ECS_JUDGES]))


def curve(rows: Sequence[dict], method: str, group: str = "held-out", target: str = "all") -> np.ndarray:
    """(strength, dlib distance, mean ECS) of one method's sweep, ordered by strength: shape (K, 3)."""
    pts = sorted((r["strength"], r["dlib_distance"], ecs_mean(r)) for r in rows
                 if r["method"] == method and r["group"] == group and r["target"] == target)
    return np.array(pts, dtype=np.float64).reshape(-1, 3)


def at_matched_identity(rows: Sequence[dict], method: str, ablation: str, group: str = "held-out") -> dict:
    """``method`` at strength 1 against ``ablation``'s sweep interpolated (linearly) to the same dlib distance.

    Returns ``distance``, ``ecs`` (method), ``ecs_ablation`` (interpolated; NaN when the distance lies
    outside the ablation's swept range) and ``met`` (True / False / None = not measurable).
    """
    mine, theirs = curve(rows, method, group), curve(rows, ablation, group)
    one = mine[np.isclose(mine[:, 0], 1.0)] if len(mine) else mine
    if not len(one) or len(theirs) < 2:
        return {"distance": float("nan"), "ecs": float("nan"), "ecs_ablation": float("nan"), "met": None}
    d, e = float(one[0, 1]), float(one[0, 2])
    order = np.argsort(theirs[:, 1])
    ds, es = theirs[order, 1], theirs[order, 2]
    if not (ds[0] <= d <= ds[-1]) or np.any(np.diff(ds) <= 0):
        return {"distance": d, "ecs": e, "ecs_ablation": float("nan"), "met": None}
    ea = float(np.interp(d, ds, es))
    return {"distance": d, "ecs": e, "ecs_ablation": ea, "met": bool(e > ea)}


def sweep_markdown(rows: Sequence[dict], method: str = "RegGAN",
                   ablations: Sequence[str] = ("regression-only", "refiner-only")) -> str:
    """The sweep as a markdown table (held-out people, all basic targets pooled, and happy) plus the matched comparison."""
    lines = ["| method | strength | ECS FER2013 | ECS face-api | happy FER / face-api | dlib distance | "
             "FaceRes cosine |", "|---|---:|---:|---:|---:|---:|---:|"]
    keyed = {(r["method"], r["strength"], r["target"]): r for r in rows if r["group"] == "held-out"}
    for m in dict.fromkeys(r["method"] for r in rows):
        for s in sorted({r["strength"] for r in rows if r["method"] == m}):
            a, h = keyed.get((m, s, "all")), keyed.get((m, s, "happy"))
            if a is None:
                continue
            happy = f"{_fmt(h['ecs_fer'], 2)} / {_fmt(h['ecs_faceapi'], 2)}" if h else "-"
            lines.append(f"| {m} | {s:g} | {_fmt(a['ecs_fer'], 2)} | {_fmt(a['ecs_faceapi'], 2)} | {happy} | "
                         f"{_fmt(a['dlib_distance'])} | {_fmt(a['faceres_cosine'])} |")
    out = ["\n".join(lines), "", f"{method} (strength 1) against each ablation's curve at the same mean dlib distance "
           "(linear interpolation between its swept strengths; held-out people, 6 basic targets):", ""]
    for a in ablations:
        c = at_matched_identity(rows, method, a)
        if c["met"] is None:
            out.append(f"* {a}: not measurable (distance {_fmt(c['distance'])} outside its swept range)")
        else:
            out.append(f"* {a}: mean ECS {c['ecs']:.2f} vs {c['ecs_ablation']:.2f} at dlib distance "
                       f"{c['distance']:.3f}: {'ahead' if c['met'] else '**not ahead**'}")
    return "\n".join(out)


def _save_figure(fig, path: str | os.PathLike) -> Path:
    """Lay out, write atomically as PNG (100 dpi) and close a matplotlib figure."""
    import matplotlib.pyplot as plt

    from ..imageio import atomic_path

    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return path


def sweep_figure(rows: Sequence[dict], path: str | os.PathLike, group: str = "held-out") -> Path:
    """PNG: ECS (one panel per judge) against mean dlib distance, one curve per method, points labelled by strength."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(ECS_JUDGES), figsize=(6 * len(ECS_JUDGES), 4.2), sharey=True)
    for ax, j in zip(np.atleast_1d(axes), ECS_JUDGES):
        for m in dict.fromkeys(r["method"] for r in rows):
            pts = sorted((r["strength"], r["dlib_distance"], r[f"ecs_{j}"]) for r in rows
                         if r["method"] == m and r["group"] == group and r["target"] == "all")
            if not pts:
                continue
            s, d, e = map(np.array, zip(*pts))
            (line,) = ax.plot(d, e, marker="o", label=m)
            for si, di, ei in zip(s, d, e):
                ax.annotate(f"{si:g}", (di, ei), textcoords="offset points", xytext=(4, 4), fontsize=7,
                            color=line.get_color())
        ax.axvline(PUBLISHED_DLIB_MEDIAN, color="k", lw=0.8, ls="--", label=f"published median {PUBLISHED_DLIB_MEDIAN}")
        ax.set_xlabel("mean dlib distance to the input (lower = same person)")
        ax.set_title(JUDGE_TITLES[j])
        ax.set_ylim(0, 1.0)
    np.atleast_1d(axes)[0].set_ylabel(f"ECS, 6 basic targets pooled ({group} people)")
    np.atleast_1d(axes)[0].legend(fontsize=8, title="method (numbers: strength)", title_fontsize=8)
    return _save_figure(fig, path)


# --------------------------------------------------------------------------------------
# Goals
# --------------------------------------------------------------------------------------
def _row(rows, method, target, group="held-out"):
    return next((r for r in rows if r["method"] == method and r["target"] == target and r["group"] == group), None)


def goals(rows: Sequence[dict], method: str = "RegGAN", baseline: str = "copy-input",
          ablations: Sequence[str] = ("regression-only", "refiner-only"), identity_tolerance: float = 0.02
          ) -> list[dict]:
    """The benchmark's goals for ``method``: dicts with ``goal``, ``met`` (bool or None = not measurable), ``detail``.

    1. happy ECS >= 0.90 with both judges on held-out people;
    2. mean dlib distance to the input <= 0.38 (all outputs, both groups);
    3. each other basic target: ECS above ``baseline`` with both judges (held-out people);
    4. ECS (mean of both judges, all targets, held-out) above every ablation at equal or better identity
       (held-out mean dlib distance at most ``identity_tolerance`` above the ablation's).
    """
    out = []
    methods = {r["method"] for r in rows}
    if method not in methods:
        return [{"goal": f"{method} scored", "met": None, "detail": f"no rows for {method}"}]
    h = _row(rows, method, "happy")
    if h is not None:
        vals = [h[f"ecs_{j}"] for j in ECS_JUDGES]
        ok = None if any(np.isnan(vals)) else all(v >= 0.90 for v in vals)
        out.append({"goal": "happy ECS >= 0.90, both judges, held-out people", "met": ok,
                    "detail": ", ".join(f"{j} {v:.2f}" for j, v in zip(ECS_JUDGES, vals))})
    per = [r for r in rows if r["method"] == method and r["target"] != "all"]
    n = sum(r["n"] for r in per)
    d = sum(r["dlib_distance"] * r["n"] for r in per) / n if n else float("nan")
    out.append({"goal": f"mean dlib distance <= {PUBLISHED_DLIB_MEDIAN:.2f} (published median; best "
                        f"{PUBLISHED_DLIB_BEST:.2f})", "met": None if np.isnan(d) else bool(d <= PUBLISHED_DLIB_MEDIAN),
                "detail": f"{d:.3f} over {n} outputs"})
    if baseline in methods:
        bad, good = [], []
        for t in sorted({r["target"] for r in per} - {"happy"}, key=BASIC_TARGETS.index):
            m, b = _row(rows, method, t), _row(rows, baseline, t)
            if m is None or b is None:
                continue
            above = all(m[f"ecs_{j}"] > b[f"ecs_{j}"] for j in ECS_JUDGES)
            (good if above else bad).append(t)
        out.append({"goal": f"other basic targets: ECS above {baseline}, both judges, held-out",
                    "met": not bad if (good or bad) else None,
                    "detail": (f"above: {', '.join(good) or '-'}; not above: {', '.join(bad) or '-'}")})
    for a in ablations:
        if a not in methods:
            continue
        m, b = _row(rows, method, "all"), _row(rows, a, "all")
        if m is None or b is None:
            continue
        em, eb = np.mean([m[f"ecs_{j}"] for j in ECS_JUDGES]), np.mean([b[f"ecs_{j}"] for j in ECS_JUDGES])
        dm, db = m["dlib_distance"], b["dlib_distance"]
        out.append({"goal": f"ahead of {a} on ECS at equal or better identity (held-out people)",
                    "met": bool(em > eb and dm <= db + identity_tolerance),
                    "detail": f"ECS (mean of both judges, all targets) {em:.2f} vs {eb:.2f}; mean dlib distance "
                              f"{dm:.3f} vs {db:.3f} (equal = within {identity_tolerance})"})
    return out


# --------------------------------------------------------------------------------------
# Tables and files
# --------------------------------------------------------------------------------------
COLUMNS = ("method", "group", "target", "n", "ecs_fer", "ecs_faceapi", "dlib_distance", "faceres_cosine", "l1", "n_l1")


def _fmt(v, digits: int = 3) -> str:
    if isinstance(v, float):
        return "-" if np.isnan(v) else f"{v:.{digits}f}"
    return str(v)


def _csv(v) -> str:
    """A CSV cell: floats with 6 decimals, NaN as an empty cell."""
    if isinstance(v, float):
        return "" if np.isnan(v) else f"{v:.6f}"
    return str(v)


def sorted_rows(rows: Sequence[dict]) -> list[dict]:
    """Rows ordered by method (first seen), group, target (basic order, 'all' last)."""
    order = {m: i for i, m in enumerate(dict.fromkeys(r["method"] for r in rows))}
    tkey = {t: i for i, t in enumerate(BASIC_TARGETS + ("all",))}
    return sorted(rows, key=lambda r: (GROUPS.index(r["group"]), tkey.get(r["target"], 99), order[r["method"]]))


def markdown_table(result: dict, real_what: str = "") -> str:
    """The benchmark's markdown: scores per (group, target, method), FID/KID, goals."""
    lines = ["| set | target | method | N | ECS FER2013 | ECS face-api | dlib distance (lower = same) | "
             "FaceRes cosine | L1 to real target (N) |", "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in sorted_rows(result["rows"]):
        l1s = f"{_fmt(r['l1'])} ({r['n_l1']})" if r["n_l1"] else "-"
        tgt = f"**{r['target']}**" if r["target"] == "all" else r["target"]
        lines.append(f"| {r['group']} | {tgt} | {r['method']} | {r['n']} | {_fmt(r['ecs_fer'], 2)} | "
                     f"{_fmt(r['ecs_faceapi'], 2)} | {_fmt(r['dlib_distance'])} | {_fmt(r['faceres_cosine'])} | {l1s} |")
    text = "\n".join(lines)
    if result.get("fid"):
        from .fid import sample_size_note

        f = ["| method | FID | KID (std over 100 subsets) | N generated | N real |", "|---|---:|---:|---:|---:|"]
        for m, v in result["fid"].items():
            f.append(f"| {m} | {v['fid']:.1f} | {v['kid']:.4f} ({v['kid_std']:.4f}) | {v['n_generated']} | {v['n_real']} |")
        fl = result.get("floor") or {}
        if fl and np.isfinite(fl.get("fid", np.nan)):
            std = f"({fl['kid_std']:.4f})" if fl["kid_std"] > 1e-9 else "(whole halves, no subsets)"
            f.append(f"| real vs real (random halves) | {fl['fid']:.1f} | {fl['kid']:.4f} {std} | "
                     f"{fl['n_b']} | {fl['n_a']} |")
        any_v = next(iter(result["fid"].values()))
        note = sample_size_note(any_v["n_real"], any_v["n_generated"], 2048)
        text += ("\n\nFID / KID (FID-Inception pool3, 2048-d) of all of a method's outputs (both sets, all targets) "
                 f"against real expressive frames{': ' + real_what if real_what else ''}.\n\n"
                 + "\n".join(f) + f"\n\nSmall N: {note}. The real frames come from 4 performers only, and the "
                 "real-vs-real floor splits frames of the same people (it is lower than a floor between different "
                 "people would be).")
    g = goals(result["rows"])
    text += "\n\nGoals (RegGAN):\n\n| goal | met | measured |\n|---|---|---|\n" + "\n".join(
        f"| {x['goal']} | {'yes' if x['met'] else 'n/a' if x['met'] is None else '**no**'} | {x['detail']} |" for x in g)
    if result.get("unavailable"):
        text += "\n\nJudges unavailable (their columns are '-'): " + "; ".join(
            f"{k}: {v}" for k, v in result["unavailable"].items())
    return text


def write_results(result: dict, md_path: str | os.PathLike, header: str, real_what: str = "") -> tuple[Path, Path]:
    """Write the markdown (``header`` + tables) and a CSV beside it (same stem), both atomically.

    CSV: one row per score row, then one row per method with group 'both' holding FID/KID (all its
    outputs pooled); NaN is an empty cell.
    """
    import io

    from ..imageio import write_text

    md_path = Path(md_path)
    md = write_text(header.rstrip() + "\n\n" + markdown_table(result, real_what) + "\n", md_path)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(COLUMNS + ("fid", "kid", "kid_std", "n_fid_generated", "n_fid_real"))
    for r in sorted_rows(result["rows"]):
        w.writerow([_csv(r[c]) for c in COLUMNS] + [""] * 5)
    for m, f in result.get("fid", {}).items():   # FID/KID pool both sets and all targets: group 'both'
        w.writerow([m, "both", "all", f["n_generated"]] + [""] * (len(COLUMNS) - 4)
                   + [_csv(f[k]) for k in ("fid", "kid", "kid_std")] + [f["n_generated"], f["n_real"]])
    csv_path = write_text(buf.getvalue(), md_path.with_suffix(".csv"))
    return md, csv_path


# --------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------
def image_grid(result: dict, path: str | os.PathLike, people: int = 3,
               methods: Sequence[str] | None = None, targets: Sequence[str] | None = None) -> Path:
    """PNG grid: rows = ``people`` held-out people + every performer; columns = input | per target, each method.

    Faces at their native 128 px; written atomically.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..imageio import atomic_path

    faces = result["faces"]
    outs = result["outputs"]
    methods = [m for m in (methods or outs) if m != "copy-input"] or list(outs)
    targets = list(targets or result["targets"])
    held = [i for i, f in enumerate(faces) if f.group == "held-out"][:people]
    rows = held + [i for i, f in enumerate(faces) if f.group == "real_pairs"]
    # long method names wrap at 18 characters: at 8 pt a label line then fits its own 128 px column
    cols = [("input", None, None)] + [(t + "\n" + textwrap.fill(m, 18), m, t) for t in targets for m in methods]
    lines = max(label.count("\n") + 1 for label, _, _ in cols)
    px, top, left = 128, 10 + 14 * lines, 120     # 8 pt lines are about 13 px apart
    w, h = left + px * len(cols), top + px * len(rows)
    dpi = 100
    fig = plt.figure(figsize=(w / dpi, h / dpi), dpi=dpi)
    for r, i in enumerate(rows):
        for c, (_, m, t) in enumerate(cols):
            img = faces[i].neutral if m is None else outs[m][t][i]
            ax = fig.add_axes([(left + c * px) / w, 1 - (top + (r + 1) * px) / h, px / w, px / h])
            ax.imshow(img, interpolation="nearest")
            ax.set_axis_off()
        fig.text(4 / w, 1 - (top + r * px + px / 2) / h, f"{faces[i].subject}\n({faces[i].group})",
                 fontsize=8, va="center", ha="left")
    for c, (label, _, _) in enumerate(cols):
        fig.text((left + c * px + px / 2) / w, 1 - 4 / h, label, fontsize=8, va="top", ha="center")
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    plt.close(fig)
    return path


def ecs_bar_chart(result: dict, path: str | os.PathLike, group: str = "held-out") -> Path:
    """PNG bar chart: ECS per target per method, one panel per judge (labelled axes); written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in result["rows"] if r["group"] == group]
    methods = list(dict.fromkeys(r["method"] for r in rows))
    targets = list(result["targets"]) + ["all"]
    fig, axes = plt.subplots(1, len(ECS_JUDGES), figsize=(6 * len(ECS_JUDGES), 4), sharey=True)
    width = 0.8 / max(len(methods), 1)
    x = np.arange(len(targets))
    for ax, j in zip(np.atleast_1d(axes), ECS_JUDGES):
        for k, m in enumerate(methods):
            vals = [next((r[f"ecs_{j}"] for r in rows if r["method"] == m and r["target"] == t), np.nan)
                    for t in targets]
            ax.bar(x + (k - (len(methods) - 1) / 2) * width, vals, width, label=m)
        ax.axhline(0.9, color="k", lw=0.8, ls="--", label="goal for happy: 0.90")
        ax.set_xticks(x, targets, rotation=30)
        ax.set_ylim(0, 1.05)
        ax.set_xlabel("target expression")
        ax.set_title(JUDGE_TITLES[j])
    np.atleast_1d(axes)[0].set_ylabel(f"ECS (share classified as target), {group} people")
    np.atleast_1d(axes)[0].legend(fontsize=8)
    return _save_figure(fig, path)
