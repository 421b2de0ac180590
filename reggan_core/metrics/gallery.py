"""Out-of-distribution (OOD) gallery: faces unlike the training data, through each model.

The training faces are tight, evenly lit, synthetic 128x128 crops. Here the inputs are
public-domain photos that ship inside packages - NASA's astronaut portrait
(``skimage.data.astronaut``) and the US Navy portrait of Grace Hopper (matplotlib's
``grace_hopper.jpg``) - and renderings made from them by this module: a faded sepia
"old photo", an edge-preserving "painting", a relit stone "statue", a flat-colour
"cartoon" and a "pencil drawing". Every face is aligned with :func:`reggan_core.faces.align_face`;
when dlib finds no face in a rendering, the landmarks of the photo it was made from are used.

Note: the embedded dataset's subjects are morphs of these two photos, so the plain photos
are only mildly OOD (new crop, hair, background); the renderings are the real test.

Each face goes through the regression layer alone, the refiner-only baseline and RegGAN;
the figure shows the outputs with the classifier's target probability and the FSS cosine
under every image, and ECS / mean FSS under each column.
"""
from __future__ import annotations

import argparse
import logging
import os
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from ..categories import get_category
from ..errors import NoFaceError

log = logging.getLogger(__name__)

DEFAULT_SELECTION: tuple[tuple[str, str], ...] = (
    ("astronaut", "photo"), ("hopper", "photo"), ("hopper", "old photo"), ("astronaut", "painting"),
    ("hopper", "statue"), ("astronaut", "cartoon"), ("astronaut", "pencil drawing"),
)


# --------------------------------------------------------------------------------------
# Source photos and renderings
# --------------------------------------------------------------------------------------
def base_photos() -> dict[str, np.ndarray]:
    """The two public-domain portraits shipped by scikit-image and matplotlib (RGB uint8)."""
    import matplotlib.cbook as cbook
    from PIL import Image
    from skimage import data

    with Image.open(cbook.get_sample_data("grace_hopper.jpg")) as im:
        hopper = np.asarray(im.convert("RGB"))
    return {"astronaut": np.ascontiguousarray(data.astronaut()), "hopper": hopper}


def old_photo(img: np.ndarray, seed: int = 0) -> np.ndarray:
    """Faded sepia print: gray, soft, low contrast, brown tone, vignette and film grain."""
    import cv2

    rng = np.random.default_rng(seed)
    g = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255
    g = 0.15 + 0.7 * cv2.GaussianBlur(g, (0, 0), max(g.shape) / 420)
    tone = np.stack([g * 1.07, g * 0.95, g * 0.78], -1)
    h, w = g.shape
    yy, xx = np.mgrid[0:h, 0:w]
    r = np.hypot((xx - w / 2) / (w / 2), (yy - h / 2) / (h / 2))
    tone *= (1 - 0.45 * np.clip(r - 0.5, 0, None) ** 1.5)[..., None]
    tone += cv2.GaussianBlur(rng.normal(0, 0.06, (h, w)).astype(np.float32), (0, 0), 0.8)[..., None]
    return (np.clip(tone, 0, 1) * 255).astype(np.uint8)


def _saturate(img: np.ndarray, factor: float) -> np.ndarray:
    import cv2

    hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV).astype(np.float32)
    hsv[..., 1] = np.clip(hsv[..., 1] * factor, 0, 255)
    return cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)


def painting(img: np.ndarray) -> np.ndarray:
    """Painted portrait: OpenCV's edge-preserving stylisation, colours saturated."""
    import cv2

    styled = cv2.stylization(cv2.cvtColor(img, cv2.COLOR_RGB2BGR), sigma_s=60, sigma_r=0.45)
    return _saturate(cv2.cvtColor(styled, cv2.COLOR_BGR2RGB), 1.3)


def statue(img: np.ndarray) -> np.ndarray:
    """Stone statue: texture smoothed away, gray marble tone, relief lit from the top left."""
    import cv2

    g = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    for _ in range(3):
        g = cv2.bilateralFilter(g, 9, 50, 9)
    g = g.astype(np.float32) / 255
    h, w = g.shape
    s = cv2.GaussianBlur(g, (0, 0), max(h, w) / 256)
    gx = cv2.Sobel(s, cv2.CV_32F, 1, 0, ksize=3) / 8
    gy = cv2.Sobel(s, cv2.CV_32F, 0, 1, ksize=3) / 8
    relief = -(gx + gy) * max(h, w) / 64
    yy, xx = np.mgrid[0:h, 0:w]
    ramp = 1.05 - 0.15 * (xx / w + yy / h)
    v = np.clip((0.58 + 0.3 * g + relief) * ramp, 0, 1)
    return (np.stack([v * 0.97, v * 0.95, v * 0.9], -1) * 255).astype(np.uint8)


def cartoon(img: np.ndarray, colours: int = 10) -> np.ndarray:
    """Cartoon / avatar: smoothed, k-means colour quantised, saturated, black outlines."""
    import cv2

    x = img.copy()
    for _ in range(5):
        x = cv2.bilateralFilter(x, 9, 30, 7)
    cv2.setRNGSeed(0)
    crit = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 20, 0.5)
    _, lab, centres = cv2.kmeans(x.reshape(-1, 3).astype(np.float32), colours, None, crit, 2,
                                 cv2.KMEANS_PP_CENTERS)
    flat = np.clip(centres[lab.ravel()].reshape(img.shape), 0, 255).astype(np.uint8)
    flat = _saturate(flat, 1.5)
    g = cv2.medianBlur(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY), 7)
    lines = cv2.adaptiveThreshold(g, 255, cv2.ADAPTIVE_THRESH_MEAN_C, cv2.THRESH_BINARY, 9, 5) == 0
    flat[lines] = 0
    return flat


def pencil_drawing(img: np.ndarray) -> np.ndarray:
    """Pencil drawing: OpenCV's pencil sketch, gray."""
    import cv2

    gray, _ = cv2.pencilSketch(cv2.cvtColor(img, cv2.COLOR_RGB2BGR), sigma_s=60, sigma_r=0.07, shade_factor=0.05)
    return np.repeat(gray[..., None], 3, -1)


STYLES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "photo": lambda img: img, "old photo": old_photo, "painting": painting, "statue": statue,
    "cartoon": cartoon, "pencil drawing": pencil_drawing,
}


@dataclass(frozen=True)
class OODFace:
    """One aligned OOD face: where it comes from and how it was aligned."""

    source: str
    style: str
    image: np.ndarray = field(repr=False)   # aligned RGB uint8 (size, size, 3)
    aligned_by: str                         # "own landmarks" | "source photo landmarks"

    @property
    def name(self) -> str:
        return f"{self.style} ({self.source})"


def _align(styled: np.ndarray, photo: np.ndarray, size: int, name: str) -> tuple[np.ndarray, str]:
    from ..faces import TEMPLATE_5, CROP_SIZE, align_face, five_points, landmarks68, similarity_transform, warp_to_crop

    try:
        return align_face(styled, size=size, name=name), "own landmarks"
    except NoFaceError:
        log.info("no face found in %s; aligning with the source photo's landmarks", name)
        m = similarity_transform(five_points(landmarks68(photo)), TEMPLATE_5 * size / CROP_SIZE)
        return warp_to_crop(styled, m, size), "source photo landmarks"


def ood_faces(selection: Sequence[tuple[str, str]] = DEFAULT_SELECTION, size: int = 128) -> list[OODFace]:
    """Aligned OOD faces for (source photo, style) pairs; sources: astronaut, hopper; styles: :data:`STYLES`."""
    photos = base_photos()
    out = []
    for source, style in selection:
        if source not in photos or style not in STYLES:
            raise ValueError(f"unknown OOD face ({source!r}, {style!r}); sources: {', '.join(photos)}; "
                             f"styles: {', '.join(STYLES)}")
        styled = STYLES[style](photos[source])
        crop, how = _align(styled, photos[source], size, f"{style} ({source})")
        out.append(OODFace(source, style, crop, how))
    return out


# --------------------------------------------------------------------------------------
# Models, scores and the figure
# --------------------------------------------------------------------------------------
Translator = Callable[[np.ndarray], np.ndarray]   # uint8 (N, H, W, 3) -> uint8 (N, H, W, 3)


def reggan_columns(reggan, target: str, baseline=None) -> dict[str, Translator]:
    """Gallery columns from loaded generators (:func:`reggan_core.model.load_generator`).

    regression only = RegGAN's ridge layer output; refiner only = the baseline trained without
    a regression layer (omitted when None); RegGAN = ridge layer + refiner.
    """
    cols: dict[str, Translator] = {"regression only": lambda x: reggan.translate(x, target)["regression"]}
    if baseline is not None:
        cols["refiner only"] = lambda x: baseline.translate(x, target)["refined"]
    cols["RegGAN"] = lambda x: reggan.translate(x, target)["refined"]
    return cols


@dataclass
class GalleryResult:
    """Outputs and scores: ``outputs[column]`` uint8 (N, H, W, 3); per-face arrays per column."""

    faces: list[OODFace]
    target: str
    outputs: dict[str, np.ndarray]
    target_prob: dict[str, np.ndarray]
    hit: dict[str, np.ndarray]
    fss: dict[str, np.ndarray]
    classifier: str

    def table(self):
        """Per column: ECS (share classified as the target), mean target probability, mean FSS."""
        import pandas as pd

        return pd.DataFrame({c: {"ECS": float(np.nanmean(self.hit[c])), "target prob": float(np.nanmean(self.target_prob[c])),
                                 "FSS": float(np.mean(self.fss[c]))} for c in self.outputs}).T


def run_gallery(faces: Sequence[OODFace], columns: dict[str, Translator], target: str,
                classifier="fer", embedder=None) -> GalleryResult:
    """Translate every face with every column and score it (ECS target probability, FSS cosine)."""
    from .ecs import ecs, get_classifier
    from .fss import DlibEmbedder, fss

    target = get_category(target).name
    inputs = np.stack([f.image for f in faces])
    clf = get_classifier(classifier)
    embedder = embedder or DlibEmbedder()
    outputs, prob, hit, sim = {"input": inputs}, {}, {}, {}
    for name, fn in {"input": lambda x: x, **columns}.items():
        out = np.asarray(fn(inputs))
        outputs[name] = out
        res = ecs(out, target, classifier=clf)
        prob[name], hit[name] = res["target_prob"], res["hit"]
        sim[name] = fss(inputs, out, embedder=embedder)["cosine"]
    return GalleryResult(list(faces), target, outputs, prob, hit, sim, getattr(clf, "name", str(classifier)))


def plot_gallery(result: GalleryResult, path: str | os.PathLike | None = None, cell: float = 1.45, dpi: int = 88,
                 palette: bool = True):
    """Rows = faces, columns = input and models; target probability / FSS under every image,
    ECS and mean FSS under every column. Saved as PNG when ``path`` is given; ``palette``
    stores it with 256 colours (median cut, no dithering): about 3x smaller, visually the same."""
    import matplotlib.pyplot as plt

    cols = list(result.outputs)
    n = len(result.faces)
    fig, axes = plt.subplots(n, len(cols), figsize=(cell * len(cols) + 1.2, cell * 1.22 * n + 0.9), squeeze=False)
    for j, c in enumerate(cols):
        for i, face in enumerate(result.faces):
            ax = axes[i, j]
            ax.imshow(result.outputs[c][i], interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            mark = "+" if result.hit[c][i] == 1 else "-"
            ax.set_xlabel(f"p={result.target_prob[c][i]:.2f}{mark}  FSS {result.fss[c][i]:.2f}", fontsize=7, labelpad=2)
            if j == 0:
                ax.set_ylabel(face.name.replace(" (", "\n("), fontsize=7)
            if i == 0:
                ax.set_title(c, fontsize=9)
        ecs_c, fss_c = np.nanmean(result.hit[c]), np.mean(result.fss[c])
        axes[-1, j].text(0.5, -0.3, f"ECS {ecs_c:.2f}\nFSS {fss_c:.2f}", transform=axes[-1, j].transAxes,
                         ha="center", va="top", fontsize=8, fontweight="bold")
    fig.suptitle(f"Out-of-distribution faces -> {result.target.replace('_', ' ')}  "
                 f"(p = {result.classifier} probability of the target, + = top class; FSS = dlib cosine to input)",
                 fontsize=8)
    fig.tight_layout(rect=(0, 0.04, 1, 0.97))
    if path is not None:
        import io

        from PIL import Image

        from ..imageio import atomic_path

        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=dpi)
        img = Image.open(buf).convert("RGB")
        if palette:
            img = img.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
        with atomic_path(path) as tmp:
            img.save(tmp, format="PNG", optimize=True)
    return fig


def make_gallery(checkpoint: str | os.PathLike, baseline: str | os.PathLike | None = None, target: str = "happy",
                 path: str | os.PathLike | None = "figures/05_ood_gallery.png", classifier="fer",
                 selection: Sequence[tuple[str, str]] = DEFAULT_SELECTION) -> GalleryResult:
    """Load the generators, build the OOD faces, run and score them, save the figure.

    The target is checked (a category both generators produce) before any face is built.
    """
    from ..errors import ConfigError
    from ..model import load_generator

    try:
        target = get_category(target).name
    except ValueError as exc:
        raise ConfigError(f"--target: {exc}") from None
    reggan = load_generator(checkpoint)
    base = load_generator(baseline) if baseline is not None else None
    for model in (reggan, base):
        if model is not None:
            model.label(target)   # ConfigError listing the targets the model produces
    size = reggan.size or 128
    result = run_gallery(ood_faces(selection, size), reggan_columns(reggan, target, base), target, classifier)
    plot_gallery(result, path)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m reggan_core.metrics.gallery", description="Save the OOD gallery figure.")
    p.add_argument("--checkpoint", required=True, help="RegGAN generator file")
    p.add_argument("--baseline", default=None, help="refiner-only generator file")
    p.add_argument("--target", default="happy", help="target expression")
    p.add_argument("--classifier", default="fer", help="'fer' or 'cfee22' (compound targets)")
    p.add_argument("--out", default="figures/05_ood_gallery.png", help="PNG path")
    args = p.parse_args(argv)
    import sys

    from ..errors import RegGANError

    try:
        result = make_gallery(args.checkpoint, args.baseline, args.target, args.out, args.classifier)
    except RegGANError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(result.table().round(3).to_string())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
