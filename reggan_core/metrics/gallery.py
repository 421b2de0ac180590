"""Out-of-distribution (OOD) gallery: faces unlike the training data, through each model.

The shipped models are trained on dataset v2: aligned, evenly framed photos of real people
(and morphs of two of them) with transferred and synthesised expressions. The default gallery
(:data:`DEFAULT_SELECTION`) shows what dataset v2 holds out for this purpose - its ``ood_*``
subjects, only neutral inputs and never used for training: the Mona Lisa (a painting), a
Picasso drawing, a Guy Fawkes mask, an average of many faces and a 112 px aligned photo of Tom
Hanks - followed by renderings of a *held-out* real person's photo (Biden, a test-split person
of dataset v2) made by this module: a faded sepia "old photo", a relit stone "statue", a
flat-colour "cartoon" and a "pencil drawing" (also "painting": OpenCV's stylisation).

Sources are the two public-domain portraits that ship in scikit-image and matplotlib
(``astronaut``, ``hopper``; training people of v2, used by the dataset-v1 selection
:data:`V1_SELECTION`) and any photo of :data:`reggan_core.sources.PHOTOS` by its key (fetched
from its package archive through :mod:`reggan_core.assets`). A v2 ``ood_*`` face with style
"photo" is the dataset's own crop (``datasets/v2/ood_*/neutral.jpg``) when the dataset is built;
every other face is aligned with :func:`reggan_core.faces.align_face`, and when dlib finds no
face in a rendering, with the landmarks of the photo it was made from.

Each face goes through the regression layer alone, the refiner-only baseline and RegGAN;
the figure (faces at their native 128 px) shows the outputs with the classifier's target
probability and the FSS cosine under every image, and ECS / mean FSS under each column.
:func:`photo_out_figure` pastes RegGAN's output back into the source photo
(:func:`reggan_core.photo.translate_photo`) for the faces whose photo dlib can align.
"""
from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from ..categories import get_category
from ..errors import NoFaceError

log = logging.getLogger(__name__)

# dataset v1 (the embedded morphs of astronaut and hopper): the photos, then renderings of them
V1_SELECTION: tuple[tuple[str, str], ...] = (
    ("astronaut", "photo"), ("hopper", "photo"), ("hopper", "old photo"), ("astronaut", "painting"),
    ("hopper", "statue"), ("astronaut", "cartoon"), ("astronaut", "pencil drawing"),
)
# dataset v2: its held-out OOD subjects, then renderings of a held-out (test-split) real person
DEFAULT_SELECTION: tuple[tuple[str, str], ...] = (
    ("ood_monalisa", "photo"), ("ood_picasso", "photo"), ("ood_vendetta", "photo"), ("ood_average", "photo"),
    ("ood_tomhanks", "photo"), ("fr_biden", "old photo"), ("fr_biden", "statue"), ("fr_biden", "cartoon"),
    ("fr_biden", "pencil drawing"),
)
BUILTIN = ("astronaut", "hopper")
# how the figure names a source
SOURCE_NAMES: dict[str, str] = {
    "ood_monalisa": "Mona Lisa (painting)", "ood_picasso": "Picasso drawing", "ood_vendetta": "Guy Fawkes mask",
    "ood_average": "average of many faces", "ood_tomhanks": "Tom Hanks (112 px crop)", "ood_bwphoto": "old b/w photo",
    "fr_biden": "Biden, test person",
}


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
    aligned_by: str                         # "own landmarks" | "source photo landmarks" | "dataset v2 crop"
    label: str = ""                         # what the source is (e.g. "painting (Mona Lisa)"); "" = the style
    photo: np.ndarray | None = field(default=None, repr=False, compare=False)  # the styled photo, full size

    @property
    def name(self) -> str:
        who = SOURCE_NAMES.get(self.source, self.source)
        return who if self.style == "photo" and self.source in SOURCE_NAMES else f"{self.style} ({who})"


def _align(styled: np.ndarray, photo: np.ndarray, size: int, name: str) -> tuple[np.ndarray, str]:
    from ..faces import TEMPLATE_5, CROP_SIZE, align_face, five_points, landmarks68, similarity_transform, warp_to_crop

    try:
        return align_face(styled, size=size, name=name), "own landmarks"
    except NoFaceError:
        log.info("no face found in %s; aligning with the source photo's landmarks", name)
        m = similarity_transform(five_points(landmarks68(photo)), TEMPLATE_5 * size / CROP_SIZE)
        return warp_to_crop(styled, m, size), "source photo landmarks"


def _source_photo(source: str) -> tuple[np.ndarray, str]:
    """(RGB photo, what it is) for a builtin portrait or a :data:`reggan_core.sources.PHOTOS` key."""
    if source in BUILTIN:
        return base_photos()[source], ""
    from ..sources import PHOTOS, load_photo

    photo = next((p for p in PHOTOS if p.key == source), None)
    if photo is None:
        raise ValueError(f"unknown OOD face source {source!r}; sources: {', '.join(BUILTIN)} or a "
                         "reggan_core.sources.PHOTOS key (e.g. ood_monalisa, fr_biden)")
    return load_photo(photo), photo.note


def _dataset_crop(source: str, root, size: int) -> np.ndarray | None:
    """The dataset v2 crop ``<root>/<source>/neutral.*`` of an ``ood_*`` source, or None when absent."""
    from ..data import dataset_root
    from ..imageio import load_image

    folder = (dataset_root("v2") if root is None else Path(root)) / source
    files = sorted(folder.glob("neutral.*")) if folder.is_dir() else []
    if not files:
        return None
    img = load_image(files[0])
    if img.shape[:2] != (size, size):
        import cv2

        img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
    return img


def ood_faces(selection: Sequence[tuple[str, str]] = DEFAULT_SELECTION, size: int = 128,
              root: str | os.PathLike | None = None) -> list[OODFace]:
    """Aligned OOD faces for (source, style) pairs; styles: :data:`STYLES`.

    ``source``: 'astronaut', 'hopper' or a :data:`reggan_core.sources.PHOTOS` key; ``root``: the
    dataset v2 folder whose ``ood_*`` crops are used for style 'photo' (None: the default v2 folder).
    """
    out = []
    cache: dict[str, tuple[np.ndarray, str]] = {}
    for source, style in selection:
        if style not in STYLES:
            raise ValueError(f"unknown OOD face ({source!r}, {style!r}); styles: {', '.join(STYLES)}")
        if source not in cache:
            try:
                cache[source] = _source_photo(source)
            except ValueError as exc:
                raise ValueError(f"unknown OOD face ({source!r}, {style!r}): {exc}") from None
        photo, note = cache[source]
        styled = STYLES[style](photo)
        crop = _dataset_crop(source, root, size) if style == "photo" and source.startswith("ood_") else None
        if crop is not None:
            how = "dataset v2 crop"
        else:
            crop, how = _align(styled, photo, size, f"{style} ({source})")
        out.append(OODFace(source, style, crop, how, note, styled))
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


def _save_png(fig, path, dpi: int, palette: bool) -> None:
    """Write ``fig`` as PNG atomically; ``palette``: 256 colours (median cut, no dithering)."""
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


def plot_gallery(result: GalleryResult, path: str | os.PathLike | None = None, px: int = 128, dpi: int = 100,
                 palette: bool = True, title: str | None = None):
    """Rows = faces, columns = input and models, every face drawn at ``px`` screen pixels (native 128).

    Target probability / FSS under every image, ECS and mean FSS under every column. Saved as PNG
    when ``path`` is given; ``palette`` stores it with 256 colours (median cut, no dithering):
    about 3x smaller, visually the same.
    """
    import matplotlib.pyplot as plt

    cols = list(result.outputs)
    n = len(result.faces)
    left, top, gap, bottom, pad = 150, 62, 26, 52, 6
    w = left + len(cols) * (px + pad)
    h = top + n * (px + gap) + bottom
    fig = plt.figure(figsize=(w / dpi, h / dpi), dpi=dpi)
    for j, c in enumerate(cols):
        x0 = left + j * (px + pad)
        for i, face in enumerate(result.faces):
            y0 = top + i * (px + gap)
            ax = fig.add_axes([x0 / w, 1 - (y0 + px) / h, px / w, px / h])
            ax.imshow(result.outputs[c][i], interpolation="nearest")
            ax.set_axis_off()
            mark = "+" if result.hit[c][i] == 1 else "-"
            fig.text((x0 + px / 2) / w, 1 - (y0 + px + 3) / h,
                     f"p={result.target_prob[c][i]:.2f}{mark}  FSS {result.fss[c][i]:.2f}",
                     fontsize=7.5, ha="center", va="top")
            if j == 0:
                fig.text(6 / w, 1 - (y0 + px / 2) / h, face.name.replace(" (", "\n("), fontsize=8,
                         ha="left", va="center")
        fig.text((x0 + px / 2) / w, 1 - (top - 4) / h, c, fontsize=9, ha="center", va="bottom", fontweight="bold")
        ecs_c, fss_c = np.nanmean(result.hit[c]), np.mean(result.fss[c])
        fig.text((x0 + px / 2) / w, (bottom - 4) / h, f"ECS {ecs_c:.2f}\nFSS {fss_c:.2f}", fontsize=8.5,
                 ha="center", va="top", fontweight="bold")
    fig.text(0.5, 1 - 6 / h, title or (f"Out-of-distribution faces -> {result.target.replace('_', ' ')}"),
             fontsize=10, ha="center", va="top")
    fig.text(0.5, 1 - 24 / h, f"p = {result.classifier} probability of the target (+: its top class); "
             "FSS = cosine to the input (identity); bottom: ECS = share of + per column", fontsize=7.5,
             ha="center", va="top")
    if path is not None:
        _save_png(fig, path, dpi, palette)
    return fig


def photo_out_figure(model, faces: Sequence[OODFace], target: str, path: str | os.PathLike | None = None,
                     side: int = 256, strength: float = 1.0, per_row: int = 2, margin: float = 0.6, dpi: int = 100):
    """Photo in / photo out: each face's (styled) source photo and RegGAN's output pasted back into it.

    :func:`reggan_core.photo.align_faces` finds the face in the photo and
    :func:`reggan_core.photo.translate_photo` pastes the change back at the photo's resolution; the
    figure shows the region around the face (the detector box grown by ``margin``) at ``side`` px
    height, before and after, ``per_row`` pairs per row. Faces without a photo, or whose photo dlib
    cannot align, are left out. Returns (figure or None, names shown, names left out with the reason).
    """
    import cv2
    import matplotlib.pyplot as plt

    from ..photo import align_faces, translate_photo, zoom_box

    shown, skipped = [], []
    for f in faces:
        if f.photo is None:
            skipped.append(f"{f.name}: no photo")
            continue
        try:
            aligned = align_faces(f.photo, size=model.size or 128, name=f.name)
        except NoFaceError:
            skipped.append(f"{f.name}: dlib finds no face in the photo")
            continue
        out, _ = translate_photo(model, f.photo, target, strength, faces=aligned)
        x0, y0, x1, y1 = zoom_box(aligned[0].box, f.photo.shape, margin, top_margin=1.2)
        shown.append((f, f.photo[y0:y1, x0:x1], out[y0:y1, x0:x1]))
    if not shown:
        return None, [], skipped

    def fit(img):
        hh, ww = img.shape[:2]
        return cv2.resize(np.ascontiguousarray(img), (max(1, round(ww * side / hh)), side),
                          interpolation=cv2.INTER_AREA if hh > side else cv2.INTER_CUBIC)

    pairs = [(f, fit(a), fit(b)) for f, a, b in shown]
    rows = [pairs[i:i + per_row] for i in range(0, len(pairs), per_row)]
    pad, top, left, row_h = 10, 40, 8, side + 44
    w = max(left + sum(2 * a.shape[1] + 3 * pad for _, a, _ in r) for r in rows)
    h = top + row_h * len(rows)
    fig = plt.figure(figsize=(w / dpi, h / dpi), dpi=dpi)
    for r, row in enumerate(rows):
        x, y = left, top + r * row_h + 18
        for f, a, b in row:
            fig.text((x + a.shape[1] + pad / 2) / w, 1 - (y - 3) / h, f.name, fontsize=9, ha="center", va="bottom")
            for img, what in ((a, "photo in"), (b, "photo out")):
                ax = fig.add_axes([x / w, 1 - (y + side) / h, img.shape[1] / w, side / h])
                ax.imshow(img)
                ax.set_axis_off()
                fig.text((x + img.shape[1] / 2) / w, 1 - (y + side + 3) / h, what, fontsize=8, ha="center", va="top")
                x += img.shape[1] + pad
            x += pad
    fig.text(0.5, 1 - 6 / h, f"Photo in / photo out: RegGAN -> {target.replace('_', ' ')}, the change pasted back "
             f"into each source photo (strength {strength:g}; region around the face)", fontsize=10,
             ha="center", va="top")
    if path is not None:
        _save_png(fig, path, dpi, palette=False)
    return fig, [f.name for f, _, _ in shown], skipped


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
    p.add_argument("--selection", choices=("v2", "v1"), default="v2",
                   help="v2: dataset v2's ood_* faces + renderings of a held-out person (default); "
                        "v1: the astronaut / hopper photos and their renderings")
    args = p.parse_args(argv)
    import sys

    from ..errors import RegGANError

    try:
        result = make_gallery(args.checkpoint, args.baseline, args.target, args.out, args.classifier,
                              DEFAULT_SELECTION if args.selection == "v2" else V1_SELECTION)
    except RegGANError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(result.table().round(3).to_string())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
