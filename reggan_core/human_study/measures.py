"""Measured properties of every option of a study, for raters simulated from the images.

Per output image (one row of a manifest or key, with its ``input`` and ``output`` files):

* ``expression_p``: the expression classifier's probability of the panel's target, p(target | output)
  (:mod:`reggan_core.metrics.ecs`; FER2013 by default, which knows neutral and the six basic
  expressions; ``classifier="cfee22"`` scores all 22 categories);
* ``identity_fss``: cosine similarity of the dlib face-recognition embeddings of the input and the
  output (:mod:`reggan_core.metrics.fss`): 1 = the same image, ~0.93-0.99 = the same person
  with a changed expression on the embedded data.

These are what :class:`reggan_core.human_study.simulate.ImageRaterModel` raters respond to.
"""
from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from ..categories import get_category
from ..errors import ConfigError
from ..imageio import load_image

MEASURES = ("expression_p", "identity_fss")


def measure_outputs(table, classifier: Any = "fer", embedder: Any = None):
    """``table`` (columns ``target``, ``input``, ``output``) plus ``expression_p`` and ``identity_fss``.

    Each distinct image is classified / embedded once. A target the classifier has no class for
    is refused (one line: pick basic targets or ``classifier="cfee22"``).
    """
    from ..metrics.ecs import class_of_target, get_classifier
    from ..metrics.fss import DlibEmbedder, cosine_similarity

    missing = [c for c in ("target", "input", "output") if c not in table.columns]
    if missing:
        raise ConfigError(f"measure_outputs needs column(s) {', '.join(missing)} (the manifest of "
                          "make_method_outputs has them)")
    clf = get_classifier(classifier)
    classes = list(clf.classes)
    cls = {}
    for t in dict.fromkeys(table["target"]):
        k = class_of_target(get_category(t), classes)
        if k is None:
            raise ConfigError(f"the {getattr(clf, 'name', classifier)} classifier has no class for target {t!r}; "
                              "use basic expressions or classifier='cfee22'")
        cls[t] = k
    embedder = embedder if embedder is not None else DlibEmbedder()
    paths = list(dict.fromkeys(list(table["input"]) + list(table["output"])))
    images = {p: load_image(p, min_size=1) for p in paths}
    digest = {p: hashlib.sha1(images[p].tobytes()).hexdigest() for p in paths}
    unique = list(dict.fromkeys(digest.values()))
    first = {d: next(p for p in paths if digest[p] == d) for d in unique}
    emb, _ = embedder.embed([images[first[d]] for d in unique])
    emb_of = {d: emb[i] for i, d in enumerate(unique)}
    outs = list(dict.fromkeys(table["output"]))
    probs = clf.predict([images[p] for p in outs])
    prob_of = {p: probs[i] for i, p in enumerate(outs)}
    out = table.copy()
    out["expression_p"] = [float(prob_of[o][cls[t]]) for o, t in zip(table["output"], table["target"])]
    a = np.stack([emb_of[digest[p]] for p in table["input"]])
    b = np.stack([emb_of[digest[p]] for p in table["output"]])
    out["identity_fss"] = cosine_similarity(a, b)
    return out


def attach_measures(key, measured, on: tuple[str, ...] = ("split", "item", "method")):
    """The study key with the measured columns of ``measured`` (matched on split, item, method)."""
    cols = list(on) + [c for c in MEASURES if c in measured.columns]
    merged = key.merge(measured[cols], on=list(on), how="left", validate="one_to_one")
    lost = merged[merged[cols[len(on):]].isna().any(axis=1)]
    if not lost.empty:
        r = lost.iloc[0]
        raise ConfigError(f"no measures for panel {r['panel']} ({r['split']}/{r['item']}, {r['method']}); "
                          "measure the same outputs the study was built from")
    return merged


def item_target(item: str) -> str:
    """The target category an item is named after: ``S016_happy`` -> ``happy`` (longest match).

    Study items are named ``<face>_<target>`` (as :func:`.methods.study_inputs` and
    ``python -m reggan_core.generate`` name them).
    """
    from ..categories import CATEGORY_NAMES

    found = [c for c in CATEGORY_NAMES if item.endswith("_" + c)]
    if not found:
        raise ConfigError(f"study item {item!r} is not named <face>_<target>; name the inputs after their "
                          f"target (e.g. face1_happy.png) to measure expressions")
    return max(found, key=len)


def measure_key(key, classifier: Any = "fer", embedder: Any = None):
    """A study key (with ``input`` / ``output`` files) plus ``target``, ``expression_p``, ``identity_fss``."""
    table = key.copy()
    table["target"] = [item_target(i) for i in table["item"]]
    return measure_outputs(table, classifier, embedder)
