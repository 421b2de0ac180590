"""Image statistics the notebooks report, each defined once.

* :func:`laplacian_variance` - a classic focus measure (Pech-Pacheco et al., ICPR 2000): the
  variance of the 4-neighbour Laplacian of the grey image, per image. Large second derivatives
  = fine detail. It cannot tell detail from noise: speckle (e.g. an over-fitted ridge layer)
  raises it as much as real texture does.
* :func:`sharpness` - the mean of :func:`laplacian_variance` over a batch, on the face region
  :data:`FACE_BOX` (brows to chin of the 128 x 128 template) so the flat background does not
  dilute it.
* :func:`sharpness_ratio` - ``sharpness(images) / sharpness(real)`` on the same faces: 1 = as
  detailed as the real faces by this measure. Summaries over several targets average the
  per-target ratios (:func:`mean_sharpness_ratio`), so every table uses the same number.
* :func:`radial_power` - the radially averaged power spectrum (blur removes high frequencies).
"""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["FACE_BOX", "laplacian_variance", "sharpness", "sharpness_ratio", "mean_sharpness_ratio",
           "radial_power"]

FACE_BOX = (slice(40, 110), slice(30, 98))  # rows, columns: brows to chin in the 128 x 128 crop
_LAPLACIAN = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])[None, None]


def _grey(images: Tensor) -> Tensor:
    """(B, 3, H, W) or (B, H, W) float images -> (B, 1, H, W) grey, float64 for stable variances."""
    images = torch.as_tensor(images)
    if images.ndim == 3:
        images = images[:, None]
    if images.ndim != 4:
        raise ValueError(f"expected (B, C, H, W) or (B, H, W) images, got shape {tuple(images.shape)}")
    return images.double().mean(1, keepdim=True)


def laplacian_variance(images: Tensor, box: tuple[slice, slice] | None = FACE_BOX) -> Tensor:
    """Variance of the Laplacian of each grey image (inside ``box``; ``None`` = whole image): (B,)."""
    grey = _grey(images)
    if box is not None:
        grey = grey[..., box[0], box[1]]
    lap = F.conv2d(grey, _LAPLACIAN.double())
    return lap.var(dim=(1, 2, 3))


def sharpness(images: Tensor, box: tuple[slice, slice] | None = FACE_BOX) -> float:
    """Mean :func:`laplacian_variance` of a batch of images in [-1, 1]."""
    return float(laplacian_variance(images, box).mean())


def sharpness_ratio(images: Tensor, real: Tensor, box: tuple[slice, slice] | None = FACE_BOX) -> float:
    """``sharpness(images) / sharpness(real)``: 1 = as much Laplacian energy as the real faces."""
    return sharpness(images, box) / sharpness(real, box)


def mean_sharpness_ratio(pairs: Iterable[tuple[Tensor, Tensor]],
                         box: tuple[slice, slice] | None = FACE_BOX) -> float:
    """Mean of :func:`sharpness_ratio` over (images, real) pairs, e.g. one pair per target."""
    ratios = [sharpness_ratio(a, b, box) for a, b in pairs]
    if not ratios:
        raise ValueError("mean_sharpness_ratio needs at least one (images, real) pair")
    return float(np.mean(ratios))


def radial_power(images: Tensor | Sequence) -> np.ndarray:
    """Mean power spectrum of grey images per integer radius 0 .. H/2 - 1 (cycles/pixel = radius / H)."""
    grey = _grey(torch.as_tensor(images))[:, 0]
    spec = torch.fft.fftshift(torch.fft.fft2(grey - grey.mean((-2, -1), keepdim=True)), dim=(-2, -1))
    power = (spec.abs() ** 2).mean(0).numpy()
    h, w = power.shape
    yy, xx = np.indices(power.shape)
    rad = np.hypot(yy - h // 2, xx - w // 2).round().astype(int)
    return np.bincount(rad.ravel(), power.ravel())[: h // 2] / np.bincount(rad.ravel())[: h // 2]
