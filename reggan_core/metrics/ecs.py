"""ECS (expression classification score): does the output show the intended expression?

For generated images x_i with intended target categories t_i and a classifier with class
probabilities p(c | x):

    ECS            = mean_i [argmax_c p(c | x_i) == t_i]     (share classified as the target)
    mean target p  = mean_i p(t_i | x_i)

reported per target and overall (over all scored images). Three classifiers:

* ``"fer"``: the FER2013 mini-Xception (:mod:`.fer`). It knows only neutral and the six
  basic expressions, so images whose target is a compound category are not scored (counted
  in ``n_skipped``).
* ``"faceapi"``: face-api's FaceExpressionNet (:mod:`.faceapi`), not trained on FER2013:
  an independent judge of the same seven classes (compound targets not scored either).
* ``"cfee22"``: the 22-category classifier trained on the dataset's training split
  (:mod:`.expression`); it scores every CFEE category.

Any object with ``classes`` (label strings) and ``predict(images) -> (N, len(classes))``
also works; a target is matched to a class by CFEE name first, then by FER label.
"""
from __future__ import annotations

import os
import warnings
from typing import Sequence

import numpy as np
import pandas as pd

from ..categories import Category, get_category
from ..errors import DataError
from .faceapi import CFEE_TO_FACEAPI, FACEAPI_CLASSES
from .fer import as_rgb_batch

CLASSIFIERS = ("fer", "faceapi", "cfee22")


def get_classifier(classifier="fer", weights: str | os.PathLike | None = None, device: str = "cpu"):
    """A classifier by name ('fer' | 'faceapi' | 'cfee22'), or the given object unchanged."""
    if not isinstance(classifier, str):
        if not hasattr(classifier, "classes") or not hasattr(classifier, "predict"):
            raise DataError("classifier object needs `classes` and `predict(images)`; "
                            f"or pass one of {', '.join(CLASSIFIERS)}")
        return classifier
    if classifier == "fer":
        from .fer import FerClassifier

        return FerClassifier(weights, device=device)
    if classifier == "faceapi":
        from .faceapi import FaceApiClassifier

        return FaceApiClassifier(weights, device=device)
    if classifier == "cfee22":
        from .expression import load_expression_classifier

        return load_expression_classifier(weights, device=device)
    raise DataError(f"unknown ECS classifier {classifier!r}; use one of {', '.join(CLASSIFIERS)}")


def class_of_target(target: Category, classes: Sequence[str]) -> int | None:
    """Index of the classifier class that stands for a CFEE target, or None if it has none.

    face-api's classes go through the explicit table ``faceapi.CFEE_TO_FACEAPI``; others
    match the CFEE name first, then the FER2013 label.
    """
    if tuple(classes) == FACEAPI_CLASSES:
        label = CFEE_TO_FACEAPI.get(target.name)
        return None if label is None else FACEAPI_CLASSES.index(label)
    if target.name in classes:
        return list(classes).index(target.name)
    if target.fer_label is not None and target.fer_label in classes:
        return list(classes).index(target.fer_label)
    return None


def ecs_from_probs(probs: np.ndarray, targets: Sequence[str | int | Category], classes: Sequence[str],
                   classifier_name: str = "custom") -> dict:
    """ECS from class probabilities (N, C) and the intended target of each image.

    Returns a dict: ``ecs``, ``mean_target_prob``, ``n`` (scored), ``n_skipped`` (targets the
    classifier has no class for), ``classifier``, ``per_target`` (DataFrame indexed by
    target name: n, ecs, mean_target_prob), and per-image arrays ``scored`` (bool),
    ``hit`` and ``target_prob`` (NaN where not scored) for bootstrap intervals.
    """
    probs = np.asarray(probs, dtype=np.float64)
    cats = [get_category(t) for t in targets]
    if probs.ndim != 2 or probs.shape != (len(cats), len(classes)):
        raise DataError(f"probabilities of shape {probs.shape} do not match {len(cats)} targets x {len(classes)} classes")
    cls = [class_of_target(c, classes) for c in cats]
    scored = np.array([k is not None for k in cls], dtype=bool)
    hit = np.full(len(cats), np.nan)
    target_prob = np.full(len(cats), np.nan)
    pred = probs.argmax(1) if len(probs) else np.zeros(0, int)
    for i, k in enumerate(cls):
        if k is not None:
            hit[i] = float(pred[i] == k)
            target_prob[i] = probs[i, k]
    skipped = sorted({c.name for c, s in zip(cats, scored) if not s})
    if skipped:
        warnings.warn(f"ECS with {classifier_name}: {int((~scored).sum())} image(s) not scored, the classifier has no "
                      f"class for {', '.join(skipped)}; use classifier='cfee22' for compound targets", stacklevel=2)
    rows = []
    names = [c.name for c in cats]
    for name in dict.fromkeys(n for n, s in zip(names, scored) if s):
        m = np.array([n == name for n in names]) & scored
        rows.append({"target": name, "n": int(m.sum()), "ecs": float(hit[m].mean()),
                     "mean_target_prob": float(target_prob[m].mean())})
    order = {c: get_category(c).index for c in dict.fromkeys(names)}
    per_target = pd.DataFrame(rows, columns=["target", "n", "ecs", "mean_target_prob"])
    per_target = per_target.sort_values("target", key=lambda s: s.map(order)).set_index("target")
    n = int(scored.sum())
    return {
        "classifier": classifier_name,
        "ecs": float(np.nanmean(hit)) if n else float("nan"),
        "mean_target_prob": float(np.nanmean(target_prob)) if n else float("nan"),
        "n": n,
        "n_skipped": int((~scored).sum()),
        "per_target": per_target,
        "scored": scored,
        "hit": hit,
        "target_prob": target_prob,
    }


def ecs(images, targets, classifier="fer", weights: str | os.PathLike | None = None, device: str = "cpu") -> dict:
    """Expression classification score of generated images.

    ``images``: RGB uint8 (N, H, W, 3), a list of such arrays, or a [-1, 1] tensor (N, 3, H, W).
    ``targets``: one intended category per image (name, code or CFEE index), or a single
    category for all. ``classifier``: 'fer', 'cfee22' or an object with ``classes`` and
    ``predict``; ``weights``: its weights path (default: the installed/shipped ones).
    See :func:`ecs_from_probs` for the returned dict.
    """
    images = as_rgb_batch(images)
    if isinstance(targets, (str, int, Category)):
        targets = [targets] * len(images)
    targets = list(targets)
    if len(targets) != len(images):
        raise DataError(f"ECS got {len(images)} images but {len(targets)} targets; pass one target per image")
    clf = get_classifier(classifier, weights, device)
    probs = clf.predict(images) if images else np.zeros((0, len(clf.classes)))
    name = classifier if isinstance(classifier, str) else getattr(clf, "name", type(clf).__name__)
    return ecs_from_probs(probs, targets, clf.classes, name)


def basic_label(cls: str) -> str | None:
    """The CFEE name (neutral or a basic category) a classifier class stands for, or None.

    Matches a CFEE name ('fearful', face-api's spelling) or a FER2013 label ('fear').
    """
    for c in _basic_categories():
        if cls == c.name or cls == c.fer_label:
            return c.name
    return None


def _basic_categories() -> tuple[Category, ...]:
    from ..categories import CATEGORIES

    return tuple(c for c in CATEGORIES if c.kind in ("neutral", "basic"))


def judge_agreement(probs_a: np.ndarray, classes_a: Sequence[str], probs_b: np.ndarray,
                    classes_b: Sequence[str]) -> dict:
    """How often two expression judges give the same top class, and Cohen's kappa.

    Top classes are mapped to CFEE names (neutral + six basic) so FER2013's 'fear' equals
    face-api's 'fearful'; images whose top class has no such name under either judge are left
    out. Kappa (sklearn ``cohen_kappa_score``) corrects the share for the agreement two
    judges with these label frequencies would reach by chance: 1 = perfect, 0 = chance level.
    Returns ``agreement``, ``kappa``, ``n``, and the per-image labels ``labels_a``, ``labels_b``.
    """
    from sklearn.metrics import cohen_kappa_score

    a = [basic_label(classes_a[k]) for k in np.asarray(probs_a).argmax(1)]
    b = [basic_label(classes_b[k]) for k in np.asarray(probs_b).argmax(1)]
    if len(a) != len(b):
        raise DataError(f"agreement needs the same images under both judges: {len(a)} vs {len(b)} predictions")
    keep = [i for i in range(len(a)) if a[i] is not None and b[i] is not None]
    la, lb = [a[i] for i in keep], [b[i] for i in keep]
    share = float(np.mean([x == y for x, y in zip(la, lb)])) if keep else float("nan")
    if len(set(la) | set(lb)) > 1:
        kappa = float(cohen_kappa_score(la, lb))
    else:   # one label only: kappa is 0/0; perfect agreement on a single class
        kappa = float("nan")
    return {"agreement": share, "kappa": kappa, "n": len(keep), "labels_a": a, "labels_b": b}
