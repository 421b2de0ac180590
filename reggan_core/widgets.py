"""Interactive expression-transfer explorer (ipywidgets), shown in notebook 07.

Pick a face (a dataset subject's neutral image, or an uploaded photo aligned on the fly),
a target among the 22 CFEE categories and a strength, and see side by side::

    input | regression (local ridge layer) | refined (RegGAN) | real target (dataset faces)

with the expression classification score (ECS) and face similarity score (FSS) under each
output, a map of the ridge layer's per-pixel weights and the r x r weights of one pixel.
For an uploaded photo the panels are followed by *photo out*: the whole photo with its face
changed (:func:`reggan_core.photo.paste_back`), shown from a downscaled copy so it stays
fast; :meth:`Explorer.photo_result` returns it at the photo's full resolution.

The model sits behind a small *backend* object, so the widget runs with any model:

* :class:`GeneratorBackend` wraps a trained RegGAN (``reggan_core.generate.load_generator``);
* :class:`RidgeBackend` fits one :class:`~reggan_core.regression.LocalRidge` per target in
  closed form on the dataset (seconds) and has no refined output: the fallback when no
  checkpoint exists.

Any object with ``name``, ``refined_note``, ``translate(x, target, strength)`` and
``ridge_layer(target)`` works (see :class:`Backend`). Metrics come from a *scorer*
(:class:`MetricScorer` wraps ``reggan_core.metrics``), also injectable.

Every update runs in the kernel when a widget value changes: the model and the images first
(``Explorer.last_render_s``), then ECS and FSS in a worker thread (``last_update_s``), so the
kernel is free again after the images; ``benchmarks/bench_widget.py`` measures both.
"""
from __future__ import annotations

import html
import io
import logging
import math
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor

from .categories import CATEGORY_NAMES, get_category
from .data import FaceIndex, PairedFaces, index_dataset, load_face, make_splits, read_splits, target_methods
from .errors import DataError, RegGANError
from .imageio import load_image, to_tensor, to_uint8

log = logging.getLogger(__name__)

UPLOAD_OPTION = "(uploaded face)"
MAX_UPLOAD_BYTES = 20 * 2**20
PHOTO_DISPLAY_SIDE = 480  # long side of the photo-out view (the full-resolution photo: Explorer.photo_result())
MAP_KINDS = ("gain", "centre", "abs", "bias")
MAP_LABELS = {
    "gain": "gain: sum of the r x r weights (1 = copy the input, 0 = replace it by the bias)",
    "centre": "centre tap weight",
    "abs": "|w|: sum of absolute weights (where the weights concentrate)",
    "bias": "bias (in [-1, 1] image units)",
}
CHANNELS = ("mean", "R", "G", "B")


# ---------------------------------------------------------------------------------- backends

class Backend(Protocol):
    """What the explorer needs from a model.

    ``translate`` maps x (1, 3, S, S) in [-1, 1] to a dict with ``regression`` and ``refined``
    tensors of the same shape (``refined`` may be None: then ``refined_note`` says why).
    ``ridge_layer`` returns the local ridge layer used for that target (``weight``
    (C, S, S, D), ``bias`` (C, S, S), ``config.r``, ``config.cross_channel``).
    """

    name: str
    refined_note: str | None

    def translate(self, x: Tensor, target: str, strength: float) -> dict[str, Tensor | None]: ...

    def ridge_layer(self, target: str) -> Any: ...


def _train_subjects(index: FaceIndex) -> dict[str, str]:
    """subject -> split from ``<root>/splits.csv``, else the seed-0 split it would hold.

    Nothing is written: the explorer never changes the dataset folder.
    """
    path = index.root / "splits.csv"
    splits = read_splits(path) if path.is_file() else make_splits(index.subjects, seed=0)
    return {s: splits.get(s, "train") for s in index.subjects}


class RidgeBackend:
    """One closed-form :class:`LocalRidge` per target (neutral -> target), fitted lazily.

    ``regression = x + strength * (ridge(x) - x)``: strength 0 gives the input back and 1 the
    ridge output. There is no refined output (``refined_note`` says why). Ridge
    hyper-parameters default to Masked Regression's (r = 3, lambda = 0.4).
    """

    def __init__(self, index: FaceIndex, config: Any = None, subjects: list[str] | None = None,
                 refined_note: str = "unavailable: no RegGAN checkpoint", layers: dict | None = None,
                 align: bool = False):
        from .regression import RidgeConfig

        self.index, self.align = index, align
        self.config = config if config is not None else RidgeConfig()
        splits = _train_subjects(index)
        self.subjects = subjects if subjects is not None else [s for s, v in splits.items() if v == "train"]
        self.refined_note = refined_note
        self.name = f"closed-form LocalRidge (r={self.config.r}, lambda={self.config.lam}) fitted on " \
                    f"{len(self.subjects)} subjects"
        self.layers: dict[str, Any] = dict(layers or {})

    def ridge_layer(self, target: str):
        name = get_category(target).name
        if name not in self.layers:
            from .regression import LocalRidge

            t0 = time.perf_counter()
            x, y = PairedFaces(self.index, "neutral", name, self.subjects, align=self.align).tensors()
            self.layers[name] = LocalRidge(self.config).fit((x, y)).eval()
            log.info("fitted the %s ridge on %d pairs in %.2f s", name, len(x), time.perf_counter() - t0)
        return self.layers[name]

    @torch.no_grad()
    def translate(self, x: Tensor, target: str, strength: float) -> dict[str, Tensor | None]:
        ridge = self.ridge_layer(target)(x)
        return {"regression": x + strength * (ridge - x), "refined": None}


class GeneratorBackend:
    """A trained RegGAN (:class:`reggan_core.model.RegGAN`): its ``translate`` and its ridge layers.

    ``translate(x, target, strength)`` blends each output with the input,
    out = x + strength (f(x) - x), as the model defines it; ``ridges[target]`` is the
    local ridge layer of that target.
    """

    def __init__(self, generator: Any, name: str = "RegGAN"):
        self.generator = generator.eval() if hasattr(generator, "eval") else generator
        self.name = name
        self.refined_note = None

    @torch.no_grad()
    def translate(self, x: Tensor, target: str, strength: float) -> dict[str, Tensor | None]:
        name = get_category(target).name
        targets = list(getattr(self.generator, "targets", None) or [name])
        if name not in targets:
            source = getattr(self.generator, "source", "neutral")
            raise DataError(f"this checkpoint has no model for {name!r} (it turns {source} faces into "
                            f"{len(targets)} other categories); pick another target")
        out = self.generator.translate(x, name, strength=strength)
        return {"regression": out["regression"], "refined": out.get("refined")}

    def ridge_layer(self, target: str):
        ridges = getattr(self.generator, "ridges", None)
        if ridges is None:
            raise DataError("this checkpoint has no ridge layer (a refiner-only baseline); "
                            "load a RegGAN checkpoint to see regression weights")
        name = get_category(target).name
        if name not in ridges:
            raise DataError(f"this checkpoint has no ridge layer for {name!r}; trained targets: "
                            f"{', '.join(ridges.keys())}")
        return ridges[name]


def _load_generator(path: Path):
    """``load_generator`` from reggan_core.generate (or reggan_core.model, where it lives)."""
    try:
        from .generate import load_generator
    except ImportError:
        from .model import load_generator
    return load_generator(path)


def make_backend(checkpoint: str | Path | None, dataset_root: str | Path | None = None,
                 index: FaceIndex | None = None, align: bool = False) -> Backend:
    """A :class:`GeneratorBackend` for ``checkpoint`` when it exists, else the ridge fallback.

    The fallback (a closed-form :class:`RidgeBackend` on ``dataset_root``) is logged as a
    warning and its refined column reads ``unavailable: no checkpoint at <path>``.
    """
    index = index if index is not None else index_dataset(dataset_root)
    path = Path(checkpoint) if checkpoint else None
    if path is not None and path.is_file():
        try:
            return GeneratorBackend(_load_generator(path), name=f"RegGAN ({path.name})")
        except ImportError as exc:
            note = f"unavailable: the RegGAN model code cannot be imported ({exc})"
    else:
        note = f"unavailable: no checkpoint at {path}"
    log.warning("explorer falls back to a closed-form ridge: %s", note)
    return RidgeBackend(index, refined_note=note, align=align)


# ----------------------------------------------------------------------------------- metrics

class MetricScorer:
    """Live ECS and FSS of one output, through ``reggan_core.metrics.ecs`` and ``.fss``.

    For a single image ECS is a hit (1 if the classifier's top class is the target, else 0);
    ``p`` is the classifier's probability of the target and ``seen_as`` its top class. FSS is
    the cosine similarity of the input's and the output's face embeddings (dlib ResNet),
    ``same`` whether dlib would call them the same person. ``classifier``: "auto" (the
    22-category classifier when its weights exist, else FER2013 which only scores neutral and
    the six basic expressions), "cfee22", "fer" or a classifier object. A metric that cannot
    run gives NaN and its one-line reason in ``note``.
    """

    def __init__(self, classifier: Any = "auto", embedder: Any = None):
        from .metrics.ecs import get_classifier
        from .metrics.fss import CachedEmbedder, DlibEmbedder

        self.note: str | None = None
        self.classifier = None
        names = ("cfee22", "fer") if classifier == "auto" else (classifier,)
        for name in names:
            try:
                self.classifier = get_classifier(name)
                break
            except RegGANError as exc:
                self.note = f"ECS: {_one_line(exc)}"
        if self.classifier is not None and classifier == "auto":
            self.note = None if getattr(self.classifier, "name", "") == "cfee22" else (
                "ECS with the FER2013 classifier: compound targets are not scored")
        try:
            self.embedder = CachedEmbedder(embedder if embedder is not None else DlibEmbedder(), max_size=64)
        except RegGANError as exc:
            self.embedder = None
            self.note = f"FSS: {_one_line(exc)}"

    def score(self, x: Tensor, out: Tensor, target: str) -> dict[str, Any]:
        """x, out: (1, 3, S, S) in [-1, 1] -> {"ecs", "p", "seen_as", "fss", "same"}."""
        import warnings

        from .metrics.ecs import ecs_from_probs
        from .metrics.fer import as_rgb_batch
        from .metrics.fss import fss

        res: dict[str, Any] = {"ecs": math.nan, "p": math.nan, "seen_as": None, "fss": math.nan, "same": None}
        if self.classifier is not None:
            probs = self.classifier.predict(as_rgb_batch(out))
            with warnings.catch_warnings():  # a target without a class is simply not scored
                warnings.simplefilter("ignore")
                e = ecs_from_probs(probs, [target], self.classifier.classes,
                                   getattr(self.classifier, "name", type(self.classifier).__name__))
            res.update(ecs=e["ecs"], p=e["mean_target_prob"],
                       seen_as=str(self.classifier.classes[int(probs[0].argmax())]))
        if self.embedder is not None:
            f = fss(x, out, embedder=self.embedder)
            res.update(fss=f["fss"], same=None if f["same_person_rate"] is None else bool(f["same_person_rate"]))
        return res


def format_scores(sc: dict[str, Any]) -> str:
    """One line under an image: 'ECS 1 (p 0.83, seen as happy) · FSS 0.95 (same person)'."""
    ecs = "ECS n/a" if not math.isfinite(sc.get("ecs", math.nan)) else f"ECS {sc['ecs']:.0f}"
    if math.isfinite(sc.get("p", math.nan)):
        ecs += f" (p {sc['p']:.2f}" + (f", seen as {sc['seen_as']})" if sc.get("seen_as") else ")")
    elif sc.get("seen_as"):
        ecs += f" (seen as {sc['seen_as']})"
    fss = f"FSS {_fmt(sc.get('fss', math.nan))}"
    if sc.get("same") is not None:
        fss += " (same person)" if sc["same"] else " (other person)"
    return f"{ecs} · {fss}"


# --------------------------------------------------------------------------------- rendering

def encode_image(arr: np.ndarray, fmt: str = "jpeg", quality: int = 90) -> bytes:
    """RGB uint8 (H, W, 3) -> JPEG or PNG bytes for an ipywidgets Image."""
    from PIL import Image

    buf = io.BytesIO()
    if fmt == "jpeg":
        Image.fromarray(arr).save(buf, format="JPEG", quality=quality)
    else:
        Image.fromarray(arr).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def decode_image(data: bytes) -> np.ndarray:
    """Image bytes -> RGB uint8 array (the inverse of :func:`encode_image`, for tests)."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB")).copy()


def placeholder(size: int) -> np.ndarray:
    """A flat light-grey image for a column with nothing to show."""
    return np.full((size, size, 3), 235, np.uint8)


def pixel_weights(layer: Any) -> tuple[np.ndarray, np.ndarray, int]:
    """A ridge layer's weights as numpy: weight (C, S, S, C_in, r, r), bias (C, S, S), r.

    ``C_in`` is 1 for the per-channel layer (each output channel reads its own channel) and
    C for the cross-channel one (taps ordered input channel, row, column as in ``unfold``).
    """
    w = layer.weight.detach().float().cpu().numpy()
    b = layer.bias.detach().float().cpu().numpy()
    r = int(layer.config.r)
    c, s, _, d = w.shape
    return w.reshape(c, s, s, d // (r * r), r, r), b, r


def weight_map(weight: np.ndarray, bias: np.ndarray, kind: str = "gain", channel: str = "mean") -> np.ndarray:
    """One number per pixel (S, S) summarising the per-pixel weights.

    gain = sum of taps, centre = centre tap of the own channel, abs = sum of |taps|,
    bias = bias; ``channel`` picks R, G or B, or averages the three.
    """
    c, s, _, cin, r, _ = weight.shape
    if kind == "gain":
        per = weight.sum(axis=(3, 4, 5))
    elif kind == "abs":
        per = np.abs(weight).sum(axis=(3, 4, 5))
    elif kind == "centre":
        own = np.arange(c) if cin == c else np.zeros(c, int)
        per = weight[np.arange(c), :, :, own, r // 2, r // 2]
    elif kind == "bias":
        per = bias
    else:
        raise DataError(f"unknown weight map {kind!r}; use one of {', '.join(MAP_KINDS)}")
    return per.mean(0) if channel == "mean" else per[CHANNELS.index(channel) - 1]


MAP_LEVELS = 63  # colour levels of the weight map; one more palette entry is the red marker


def map_png(values: np.ndarray, y: int, x: int, cmap: str = "viridis", half: int = 2) -> tuple[bytes, float, float]:
    """(S, S) floats -> palette PNG through a matplotlib colormap, pixel (y, x) framed in red.

    Values are quantised to 63 levels between their min and max (returned), which keeps the
    PNG at a few kB (the saved widget state stays small) at no visible cost.
    """
    from matplotlib import colormaps
    from PIL import Image

    lo, hi = float(np.nanmin(values)), float(np.nanmax(values))
    norm = (values - lo) / (hi - lo) if hi > lo else np.zeros_like(values)
    idx = np.round(np.nan_to_num(norm) * (MAP_LEVELS - 1)).astype(np.uint8)
    h, w = idx.shape
    y0, y1, x0, x1 = max(y - half, 0), min(y + half, h - 1), max(x - half, 0), min(x + half, w - 1)
    for rows, cols in ((y0, slice(x0, x1 + 1)), (y1, slice(x0, x1 + 1)), (slice(y0, y1 + 1), x0),
                       (slice(y0, y1 + 1), x1)):
        idx[rows, cols] = MAP_LEVELS
    palette = colormaps[cmap](np.linspace(0, 1, MAP_LEVELS), bytes=True)[:, :3]
    palette = np.concatenate([palette, [[255, 0, 0]]]).astype(np.uint8)
    img = Image.frombytes("P", (w, h), np.ascontiguousarray(idx).tobytes())
    img.putpalette(palette.ravel().tolist())
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False)
    return buf.getvalue(), lo, hi


def kernel_table(kernel: np.ndarray, bias: float) -> str:
    """HTML table of one pixel's r x r weights (one block per input channel) and its bias."""
    blocks = []
    names = ["own channel"] if kernel.shape[0] == 1 else [f"from {n}" for n in "RGB"[:kernel.shape[0]]]
    for name, k in zip(names, kernel):
        rows = "".join("<tr>" + "".join(
            f"<td style='padding:2px 6px;text-align:right;background:{_cell_colour(v)}'>{v:+.3f}</td>"
            for v in row) + "</tr>" for row in k)
        blocks.append(f"<div style='display:inline-block;margin-right:8px'><div>{name}</div>"
                      f"<table class='reggan-kernel' style='border-collapse:collapse'>{rows}</table></div>")
    return "".join(blocks) + f"<div>bias {bias:+.3f} · sum of weights {kernel.sum():+.3f}</div>"


def _cell_colour(v: float) -> str:
    a = min(abs(v), 1.0) * 0.6
    return f"rgba(214,39,40,{a:.2f})" if v > 0 else f"rgba(31,119,180,{a:.2f})"


# ---------------------------------------------------------------------------------- explorer

@dataclass(frozen=True)
class ExplorerConfig:
    """Display settings. JPEG keeps the saved widget state small (a 128 px face is ~5 kB)."""

    size: int = 128             # model input side (the canonical aligned crop)
    display_px: int = 176       # on-screen side of each face
    image_format: str = "jpeg"  # "jpeg" or "png" (lossless, for tests)
    jpeg_quality: int = 90
    metrics: bool = True        # compute ECS/FSS live (the checkbox's start value)
    background_metrics: bool = True  # ECS/FSS in a worker thread: the images never wait for them


class Explorer:
    """The explorer widget: ``Explorer(backend, dataset_root)`` as the last line of a cell shows it.

    State after each update: ``x`` (3, S, S) input, ``real`` (its real target or None),
    ``outputs`` (``regression`` / ``refined`` (3, S, S) tensors or None), ``scores`` (column ->
    {"ecs", "p", "seen_as", "fss", "same"}; call ``wait()`` first, they arrive in the
    background), ``message`` (the status line), ``last_render_s`` and ``last_update_s``.
    Widgets: ``subject``, ``upload``, ``skip_align``, ``target``, ``strength``, ``live_metrics``,
    ``map_kind``, ``channel``, ``px``, ``py``; the faces in ``images``, the map in ``map_image``,
    the uploaded photo with its face changed in ``photo_image`` (inside ``photo_box``, hidden
    unless the face is an aligned upload; full resolution: :meth:`photo_result`).
    ``align=True`` aligns dataset images on the fly (a raw CFEE copy; cached like the data layer).
    """

    COLUMNS = ("input", "regression", "refined", "real target")

    def __init__(self, backend: Backend | None = None, dataset_root: str | Path | None = None,
                 checkpoint: str | Path | None = None, scorer: Any = "auto", subject: str | None = None,
                 target: str = "happy", strength: float = 1.0, align: bool = False,
                 config: ExplorerConfig = ExplorerConfig()):
        self.config, self.align = config, align
        self.index = index_dataset(dataset_root)
        self.splits = _train_subjects(self.index)
        self.methods = target_methods(self.index.root)  # {} = every dataset image is a photograph
        self.backend = backend if backend is not None else make_backend(checkpoint, index=self.index, align=align)
        self.scorer = MetricScorer() if isinstance(scorer, str) and scorer == "auto" else scorer
        self.x: Tensor | None = None
        self.real: Tensor | None = None
        self.upload_face: np.ndarray | None = None
        self.upload_name = ""
        self.upload_photo: np.ndarray | None = None   # the uploaded photo (RGB, full resolution)
        self.upload_aligned = None                    # its reggan_core.photo.AlignedFace (None: not aligned)
        self._photo_view: tuple[np.ndarray, Any] | None = None  # downscaled copy + its AlignedFace
        self.outputs: dict[str, Tensor | None] = {}
        self.scores: dict[str, dict[str, Any]] = {}
        self.message = ""
        self.last_update_s = math.nan
        self.last_render_s = math.nan
        self._busy = False
        self._lock = threading.RLock()      # scores and status: kernel thread vs metrics worker
        self._dlib_lock = threading.Lock()  # dlib's detector: upload alignment vs FSS
        self._generation = 0
        self._executor = None
        self._future = None
        subjects = self.index.subjects
        first = subject if subject is not None else next((s for s in subjects if self.splits[s] == "test"),
                                                         subjects[0])
        self._build_widgets(first, get_category(target).name, strength)
        self.widget = self._layout()
        self.subject.observe(self._on_face, names="value")
        self.upload.observe(self._on_upload, names="value")
        self.target.observe(self._on_target, names="value")
        self.strength.observe(lambda _: self.refresh(), names="value")
        self.live_metrics.observe(lambda _: self.refresh(), names="value")
        for w in (self.map_kind, self.channel, self.px, self.py):
            w.observe(lambda _: self.refresh_weights(), names="value")
        if self._load_face():
            self.refresh()

    def _build_widgets(self, subject: str, target: str, strength: float) -> None:
        import ipywidgets as W

        cfg, px, s = self.config, self.config.display_px, self.config.size
        labels = [(f"{x} ({self.splits[x]})", x) for x in self.index.subjects]
        self.subject = W.Dropdown(options=labels + [(UPLOAD_OPTION, UPLOAD_OPTION)], value=subject,
                                  description="face", layout=W.Layout(width="220px"))
        self.upload = W.FileUpload(accept="image/*", multiple=False, description="upload a face")
        self.skip_align = W.Checkbox(value=False, description="upload is an aligned crop", indent=False,
                                     layout=W.Layout(width="190px"))
        self.target = W.Dropdown(options=[(get_category(n).label, n) for n in CATEGORY_NAMES], value=target,
                                 description="target", layout=W.Layout(width="260px"))
        self.strength = W.FloatSlider(value=strength, min=0.0, max=1.5, step=0.05, description="strength",
                                      continuous_update=False, readout_format=".2f")
        self.live_metrics = W.Checkbox(value=cfg.metrics and self.scorer is not None, indent=False,
                                       description="live ECS / FSS", layout=W.Layout(width="140px"))
        self.status = W.HTML()
        self.images = {c: W.Image(format=cfg.image_format, width=px, height=px) for c in self.COLUMNS}
        self.captions = {c: W.HTML(layout=W.Layout(width=f"{px}px")) for c in self.COLUMNS}
        self.metric_boxes = {c: W.HTML(layout=W.Layout(width=f"{px}px")) for c in self.COLUMNS}
        self.map_kind = W.Dropdown(options=[(MAP_LABELS[k].split(":")[0], k) for k in MAP_KINDS], value="gain",
                                   description="weight map", layout=W.Layout(width="220px"))
        self.channel = W.ToggleButtons(options=list(CHANNELS), value="mean", description="channel",
                                       style={"button_width": "64px"})
        self.px = W.IntSlider(value=s // 2 - 10, min=0, max=s - 1, description="pixel x")
        self.py = W.IntSlider(value=int(s * 0.72), min=0, max=s - 1, description="pixel y")
        self.map_image = W.Image(format="png", width=2 * px, height=2 * px)
        self.photo_image = W.Image(format="jpeg")
        self.photo_caption = W.HTML()
        self.photo_box = W.VBox([self.photo_caption, self.photo_image], layout=W.Layout(display="none"))
        self.map_caption = W.HTML()
        self.kernel_html = W.HTML()
        # CSS classes: stable handles for the browser test (and for users' own styling)
        for w, cls in ((self.subject, "subject"), (self.target, "target"), (self.strength, "strength"),
                       (self.upload, "upload"), (self.status, "status"), (self.map_image, "map"),
                       (self.kernel_html, "kernel"), (self.px, "px"), (self.py, "py"),
                       (self.photo_image, "photo-out")):
            w.add_class("reggan-" + cls)
        for c in self.COLUMNS:
            self.images[c].add_class("reggan-" + c.replace(" ", "-"))
            self.metric_boxes[c].add_class("reggan-metrics-" + c.replace(" ", "-"))

    def _layout(self):
        import ipywidgets as W

        px = self.config.display_px
        columns = [W.VBox([self.captions[c], self.images[c], self.metric_boxes[c]],
                          layout=W.Layout(width=f"{px + 16}px", align_items="center")) for c in self.COLUMNS]
        style = W.HTML("<style>.reggan-map img{image-rendering:pixelated}"
                       ".reggan-explorer .widget-html-content{line-height:1.35;white-space:normal;"
                       "overflow-wrap:anywhere}</style>")
        box = W.VBox([
            style,
            W.HBox([self.subject, self.upload, self.skip_align]),
            W.HBox([self.target, self.strength, self.live_metrics]),
            self.status,
            W.HBox(columns),
            self.photo_box,
            W.HTML("<b>Local ridge layer</b>: every output pixel is a linear function of the r x r "
                   "neighbourhood of the same pixel in the input, plus a bias."),
            W.HBox([self.map_kind, self.channel]),
            W.HBox([self.px, self.py]),
            W.HBox([W.VBox([self.map_image, self.map_caption], layout=W.Layout(width=f"{2 * px + 16}px")),
                    self.kernel_html]),
        ], layout=W.Layout(width="100%"))
        box.add_class("reggan-explorer")
        return box

    # -- display
    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)

    def say(self, text: str, error: bool = False) -> None:
        """Show one line in the status bar (red for errors)."""
        with self._lock:
            self.message = text.splitlines()[0] if text else ""
            colour = "#b00020" if error else "#333"
            self.status.value = f"<span style='color:{colour}'>{html.escape(self.message)}</span>"

    # -- inputs
    def _on_face(self, change) -> None:
        if self._load_face():
            self.refresh()

    def _on_target(self, change) -> None:
        if self._load_real():
            self.refresh()

    def _on_upload(self, change) -> None:
        files = change["new"]
        if files:
            item = files[-1]
            data, name = bytes(item["content"]), str(item.get("name", "upload"))
            self.upload.value = ()  # keep the photo out of the saved widget state; allow re-upload
            self.load_upload(data, name)

    def load_upload(self, data: bytes, name: str = "upload") -> bool:
        """Use an uploaded photo: decode, align (unless ``skip_align``), show it. False on bad input."""
        try:
            with self._dlib_lock:
                face, photo, aligned = decode_upload_photo(data, name, self.config.size,
                                                           align=not self.skip_align.value)
        except Exception as exc:  # one line, never a traceback
            if not isinstance(exc, RegGANError):
                log.debug("upload %s failed", name, exc_info=exc)
            self.say(str(exc) if isinstance(exc, RegGANError) else f"could not use {name}: {_one_line(exc)}",
                     error=True)
            return False
        self.upload_face, self.upload_name = face, name
        self.upload_photo, self.upload_aligned = photo, aligned
        self._photo_view = None
        if aligned is not None:  # a small copy for the photo-out view (fast to blend and encode)
            from .photo import _shrink_photo

            self._photo_view = _shrink_photo(photo, aligned, PHOTO_DISPLAY_SIDE)
        if self.subject.value == UPLOAD_OPTION:
            self._on_face(None)
        else:
            self.subject.value = UPLOAD_OPTION  # triggers _on_face
        return True

    def _face(self, path: Path) -> Tensor:
        if not self.align:
            return to_tensor(load_face(path, align=False, size=self.config.size))
        with self._dlib_lock:  # dlib's detector is shared with the FSS worker
            return to_tensor(load_face(path, align=True, size=self.config.size))

    def _load_face(self) -> bool:
        """Read the chosen face (and its real target); False (and one line) if it cannot be used."""
        try:
            if self.subject.value == UPLOAD_OPTION:
                if self.upload_face is None:
                    raise DataError("no face uploaded yet: use the upload button")
                self.x = to_tensor(self.upload_face)
            else:
                self.x = self._face(self.index.images[self.subject.value]["neutral"])
        except RegGANError as exc:
            self.say(str(exc), error=True)
            return False
        return self._load_real()

    def _load_real(self) -> bool:
        self.real = None
        if self.subject.value != UPLOAD_OPTION:
            path = self.index.images[self.subject.value].get(self.target.value)
            if path is not None:
                try:
                    self.real = self._face(path)
                except RegGANError as exc:  # a bad target image: say so, still translate
                    self.say(str(exc), error=True)
        return True

    # -- updates
    def refresh(self) -> None:
        """Recompute and redraw everything for the current widget values.

        The model output, the images and the weight view come first (``last_render_s``); ECS and
        FSS follow (``last_update_s`` = until they are shown), in a worker thread when
        ``config.background_metrics`` so the kernel is free for the next slider move at once
        (a newer update makes the pending metrics obsolete). A model error blanks the
        outputs; any error is one line in the status bar.
        """
        if self._busy or self.x is None:
            return
        self._busy = True
        t0 = time.perf_counter()
        with self._lock:
            self._generation += 1
            generation = self._generation
            self.scores = {}
            self.last_update_s = math.nan
        error: BaseException | None = None
        try:
            try:
                self._translate()
            except Exception as exc:
                self.outputs, error = {}, exc
            self._show_faces()
            self._show_photo()
            self._show_weights()
            self.last_render_s = time.perf_counter() - t0
        except Exception as exc:
            error = exc
        finally:
            self._busy = False
        if error is not None:
            if not isinstance(error, RegGANError):
                log.debug("explorer update failed", exc_info=error)
            self._show_metrics()
            self.say(_one_line(error), error=True)
            return
        if not (self.live_metrics.value and self.scorer is not None):
            self._show_metrics()
            self.say(self._status())
            return
        job = (generation, t0, self.x[None], self.target.value,
               {"regression": self.outputs.get("regression"), "refined": self.outputs.get("refined"),
                "real target": self.real})
        if self.config.background_metrics:
            self._show_metrics(pending=True)
            self.say(self._status())
            if self._executor is None:
                from concurrent.futures import ThreadPoolExecutor

                self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="reggan-metrics")
            self._future = self._executor.submit(self._metrics_job, *job)
        else:
            self._metrics_job(*job)

    def _metrics_job(self, generation: int, t0: float, x: Tensor, target: str,
                     candidates: dict[str, Tensor | None]) -> None:
        """Score every output of one update and show the scores, unless a newer update came."""
        scores: dict[str, dict[str, Any]] = {}
        try:
            for col, img in candidates.items():
                if img is None:
                    continue
                if generation != self._generation:
                    return  # superseded: the user has moved on
                with self._dlib_lock:
                    scores[col] = self.scorer.score(x, img[None], target)
        except Exception as exc:
            if not isinstance(exc, RegGANError):
                log.debug("explorer metrics failed", exc_info=exc)
            with self._lock:
                if generation == self._generation:
                    self.say(f"metrics failed: {_one_line(exc)}", error=True)
            return
        with self._lock:
            if generation != self._generation:
                return
            self.scores = scores
            self.last_update_s = time.perf_counter() - t0
            self._show_metrics()
            self.say(self._status())

    def wait(self, timeout: float = 120.0) -> None:
        """Block until the metrics of the last update are shown (for code that reads ``scores``)."""
        future = self._future
        if future is not None:
            future.result(timeout=timeout)

    def _status(self) -> str:
        where = (f"uploaded face {self.upload_name}" if self.subject.value == UPLOAD_OPTION
                 else f"subject {self.subject.value}")
        timing = f"images in {self.last_render_s:.2f} s"
        if math.isfinite(self.last_update_s):
            timing += f", ECS/FSS in {self.last_update_s:.2f} s"
        elif self.live_metrics.value and self.scorer is not None:
            timing += ", computing ECS/FSS..."
        return (f"{where} -> {get_category(self.target.value).label} at strength "
                f"{self.strength.value:.2f} · {self.backend.name} · updated: {timing}")

    def refresh_weights(self) -> None:
        """Redraw only the weight map and the picked pixel (cheap: no model call)."""
        if self._busy or self.x is None:
            return
        try:
            self._show_weights()
        except Exception as exc:
            log.debug("weight view failed", exc_info=exc)
            self.say(_one_line(exc), error=True)

    def _translate(self) -> None:
        out = self.backend.translate(self.x[None], self.target.value, float(self.strength.value))
        self.outputs = {k: (v[0].detach().float().cpu().clamp(-1, 1) if v is not None else None)
                        for k, v in out.items()}

    def _show_faces(self) -> None:
        cfg = self.config
        tensors = {"input": self.x, "regression": self.outputs.get("regression"),
                   "refined": self.outputs.get("refined"), "real target": self.real}
        label = get_category(self.target.value).label
        method = self.methods.get((self.subject.value, self.target.value), "real frame")
        target_caption = (f"real target ({label})" if method in ("real frame", "identity", "")
                          else f"dataset target ({label}, synthesised: not a photo)")
        captions = {
            "input": "input" if self.subject.value != UPLOAD_OPTION else f"input (uploaded {self.upload_name})",
            "regression": "regression (local ridge)",
            "refined": "refined (RegGAN)",
            "real target": target_caption if tensors["real target"] is not None
                           else "real target: only for dataset faces" if self.subject.value == UPLOAD_OPTION
                           else f"real target: no {label} image for this subject",
        }
        for col, t in tensors.items():
            arr = to_uint8(t) if t is not None else placeholder(cfg.size)
            self.images[col].value = encode_image(arr, cfg.image_format, cfg.jpeg_quality)
            self.captions[col].value = f"<div style='font-size:12px;text-align:center'>{html.escape(captions[col])}</div>"

    def _photo_output(self) -> tuple[str, Tensor] | None:
        """(column, tensor) pasted into the photo: the refined output, else the regression."""
        for col in ("refined", "regression"):
            if self.outputs.get(col) is not None:
                return col, self.outputs[col]
        return None

    def photo_result(self) -> np.ndarray | None:
        """The uploaded photo at full resolution with its face changed as the panels show it.

        None unless the current face is an aligned upload with an output. The model's change
        (output - input crop) is pasted back through the feathered face mask
        (:func:`reggan_core.photo.paste_back`); pixels outside the mask are the photo's own.
        """
        from .photo import paste_back

        picked = self._photo_output()
        if self.subject.value != UPLOAD_OPTION or self.upload_aligned is None or picked is None:
            return None
        return paste_back(self.upload_photo, to_uint8(picked[1]), self.upload_face, self.upload_aligned)

    def _show_photo(self) -> None:
        """The photo-out view under the panels (a downscaled copy: a few ms even for big photos)."""
        from .photo import paste_back

        picked = self._photo_output()
        if self.subject.value != UPLOAD_OPTION or self._photo_view is None or picked is None:
            self.photo_box.layout.display = "none"
            return
        small, face = self._photo_view
        view = paste_back(small, to_uint8(picked[1]), self.upload_face, face)
        self.photo_image.value = encode_image(view, self.config.image_format, self.config.jpeg_quality)
        self.photo_image.width, self.photo_image.height = view.shape[1], view.shape[0]
        h, w = self.upload_photo.shape[:2]
        self.photo_caption.value = (
            f"<div style='font-size:12px'><b>photo out</b> ({picked[0]} output pasted back into "
            f"{html.escape(self.upload_name)}, "
            f"{w}x{h} px; shown at {view.shape[1]}x{view.shape[0]}; full resolution: "
            "<code>explorer.photo_result()</code>)</div>")
        self.photo_box.layout.display = "flex"

    def _show_metrics(self, pending: bool = False) -> None:
        for col in self.COLUMNS:
            sc = self.scores.get(col)
            text = format_scores(sc) if sc is not None else "ECS / FSS ..." if pending and col != "input" else ""
            self.metric_boxes[col].value = "" if not text else (
                f"<div style='font-size:12px;text-align:center;color:{'#888' if sc is None else '#000'}'>"
                f"{html.escape(text)}</div>")
        note = getattr(self.scorer, "note", None) if self.live_metrics.value else None
        if note:
            self.metric_boxes["input"].value = f"<div style='font-size:11px'>{html.escape(note)}</div>"
        if self.outputs.get("refined") is None and "regression" in self.outputs:
            note = self.backend.refined_note or "unavailable"
            self.metric_boxes["refined"].value = f"<div style='font-size:11px;color:#888'>{html.escape(note)}</div>"

    def picked_kernel(self) -> tuple[np.ndarray, float, float]:
        """The picked pixel's weights (C_in, r, r) and bias for the shown channel, and
        the ridge output there recomputed from them: sum(w * input patch) + b."""
        w, b, r = pixel_weights(self.backend.ridge_layer(self.target.value))
        c = 0 if self.channel.value == "mean" else CHANNELS.index(self.channel.value) - 1
        y, x = int(self.py.value), int(self.px.value)
        kernel, bias = w[c, y, x], float(b[c, y, x])
        layer = self.backend.ridge_layer(self.target.value)
        pad = getattr(layer.config, "padding", "zeros")
        from .regression import extract_patches

        patches = extract_patches(self.x[None].float(), r, pad)[0]          # (C, r*r, S*S)
        idx = y * self.x.shape[-1] + x
        src = patches[:, :, idx].numpy().reshape(-1, r, r)
        patch = src if kernel.shape[0] == src.shape[0] else src[c:c + 1]
        return kernel, bias, float((kernel * patch).sum() + bias)

    def _show_weights(self) -> None:
        try:
            layer = self.backend.ridge_layer(self.target.value)
        except RegGANError as exc:
            self.map_image.value = encode_image(placeholder(self.config.size), "png")
            self.map_caption.value = ""
            self.kernel_html.value = f"<div style='font-size:12px'>{html.escape(_one_line(exc))}</div>"
            return
        w, b, r = pixel_weights(layer)
        values = weight_map(w, b, self.map_kind.value, self.channel.value)
        y, x = int(self.py.value), int(self.px.value)
        self.map_image.value, lo, hi = map_png(values, y, x)
        self.map_caption.value = (f"<div style='font-size:12px'>{html.escape(MAP_LABELS[self.map_kind.value])}, "
                                  f"channel {self.channel.value}: dark {lo:+.3f} ... yellow {hi:+.3f}</div>")
        kernel, bias, value = self.picked_kernel()
        ch = "R" if self.channel.value == "mean" else self.channel.value
        self.kernel_html.value = (
            f"<div style='font-size:12px'><b>pixel (x={x}, y={y}), channel {ch}</b>: its {r} x {r} weights<br>"
            f"{kernel_table(kernel, bias)}<div>ridge output here = sum(w * input patch) + b = {value:+.3f}"
            f" (image units in [-1, 1])</div></div>")


def _one_line(exc: BaseException) -> str:
    """A project error's own line; other errors as 'Class: first line'."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return text if isinstance(exc, RegGANError) else f"{exc.__class__.__name__}: {text}"


def _fmt(v: float) -> str:
    return "n/a" if v is None or not math.isfinite(v) else f"{v:.2f}"


def decode_upload(data: bytes, name: str = "upload", size: int = 128, align: bool = True) -> np.ndarray:
    """Uploaded bytes -> aligned RGB uint8 (size, size, 3) crop (see :func:`decode_upload_photo`)."""
    return decode_upload_photo(data, name, size, align)[0]


def decode_upload_photo(data: bytes, name: str = "upload", size: int = 128,
                        align: bool = True) -> tuple[np.ndarray, np.ndarray, Any]:
    """Uploaded bytes -> (RGB uint8 (size, size, 3) crop, the RGB photo, its AlignedFace or None).

    Goes through :func:`reggan_core.imageio.load_image` (corrupt / tiny / grey / RGBA checks)
    and :func:`reggan_core.photo.align_faces` (the largest face, reflection-padded: the crop
    the photo-out path uses); errors are one-line :class:`DataError`\\ s that name the upload,
    not the temporary file. ``align=False``: the crop is the photo resized, no AlignedFace.
    """
    from .faces import resize_crop
    from .photo import align_faces

    if not data:
        raise DataError(f"upload {name} is empty; choose an image file")
    if len(data) > MAX_UPLOAD_BYTES:
        raise DataError(f"upload {name} is {len(data) / 2**20:.0f} MB; use an image under "
                        f"{MAX_UPLOAD_BYTES // 2**20} MB")
    suffix = Path(name).suffix if len(Path(name).suffix) <= 6 else ""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"upload{suffix}"
        path.write_bytes(data)
        try:
            img = load_image(path)
        except DataError as exc:
            raise DataError(str(exc).replace(str(path), name)) from None
    if not align:
        return (img if img.shape[:2] == (size, size) else resize_crop(img, size)), img, None
    face = align_faces(img, size=size, name=name)[0]
    return face.crop, img, face
