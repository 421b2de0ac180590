"""ECS (expression classification score): does the output show the intended expression?

For generated images x_i with intended target categories t_i and a classifier with class
probabilities p(c | x):

    ECS            = mean_i [argmax_c p(c | x_i) == t_i]     (share classified as the target)
    mean target p  = mean_i p(t_i | x_i)

reported per target and overall (over all scored images). Two classifiers:

* ``"fer"``: the FER2013 mini-Xception (:mod:`.fer`). It knows only neutral and the six
  basic expressions, so images whose target is a compound category are not scored (counted
  in ``n_skipped``).
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
from .fer import as_rgb_batch

CLASSIFIERS = ("fer", "cfee22")


def get_classifier(classifier="fer", weights: str | os.PathLike | None = None, device: str = "cpu"):
    """A classifier by name ('fer' | 'cfee22'), or the given object unchanged."""
    if not isinstance(classifier, str):
        if not hasattr(classifier, "classes") or not hasattr(classifier, "predict"):
            raise DataError("classifier object needs `classes` and `predict(images)`; or pass 'fer' or 'cfee22'")
        return classifier
    if classifier == "fer":
        from .fer import FerClassifier

        return FerClassifier(weights, device=device)
    if classifier == "cfee22":
        from .expression import load_expression_classifier

        return load_expression_classifier(weights, device=device)
    raise DataError(f"unknown ECS classifier {classifier!r}; use one of {', '.join(CLASSIFIERS)}")


def class_of_target(target: Category, classes: Sequence[str]) -> int | None:
    """Index of the classifier class that stands for a CFEE target, or None if it has none."""
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
