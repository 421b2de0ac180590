"""Pair augmentation: the same colour and lighting change on a source face and its target.

Held-out faces differ from the training faces in skin tone, white balance and lighting far
more than in expression. Jittering both images of a pair identically keeps the expression
change intact while showing the model many more colourings of it, so neither the ridge
layer nor the refiner can tie the change to one colouring (ours; not in the paper).

Per sample, in [0, 1] image units: a gain per channel ``exp(U(-a, a))``, an offset per
channel ``U(-a/2, a/2)`` and a linear lighting ramp across the face in a random direction
with amplitude ``U(-a, a)``; results are clipped to the image range.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from .errors import ConfigError


def jitter_params(n: int, strength: float, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(gain (n,3,1,1), offset (n,3,1,1), ramp amplitude (n,1,1,1), ramp angle (n,1,1,1))."""
    if not math.isfinite(strength) or strength < 0:
        raise ConfigError(f"augment strength {strength!r} must be a finite number >= 0 (e.g. 0.2)")
    u = lambda *shape: torch.rand(*shape, generator=generator) * 2 - 1  # noqa: E731
    gain = torch.exp(u(n, 3, 1, 1) * strength)
    offset = u(n, 3, 1, 1) * strength / 2
    amp = u(n, 1, 1, 1) * strength
    angle = u(n, 1, 1, 1) * math.pi
    return gain, offset, amp, angle


def apply_jitter(x: Tensor, params: tuple[Tensor, Tensor, Tensor, Tensor]) -> Tensor:
    """Apply :func:`jitter_params` to (n, 3, H, W) images in [-1, 1]."""
    gain, offset, amp, angle = (p.to(x) for p in params)
    h, w = x.shape[-2:]
    yy = torch.linspace(-1, 1, h, device=x.device, dtype=x.dtype).view(1, 1, h, 1)
    xx = torch.linspace(-1, 1, w, device=x.device, dtype=x.dtype).view(1, 1, 1, w)
    ramp = amp * (torch.cos(angle) * xx + torch.sin(angle) * yy) / 2
    out = ((x + 1) / 2) * gain + offset + ramp
    return out.clamp(0, 1) * 2 - 1


def jitter_pair(x: Tensor, y: Tensor, strength: float, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """The same random colour/lighting change on both images of every pair (n, 3, H, W)."""
    if x.shape != y.shape:
        raise ConfigError(f"pair augmentation needs equal shapes, got {tuple(x.shape)} and {tuple(y.shape)}")
    if strength == 0:
        return x, y
    p = jitter_params(x.shape[0], strength, generator)
    return apply_jitter(x, p), apply_jitter(y, p)


def augmented_copies(x: Tensor, y: Tensor, copies: int, strength: float, seed: int = 0) -> tuple[Tensor, Tensor]:
    """The pairs plus ``copies`` jittered versions of each (for the closed-form ridge fit)."""
    if copies < 0:
        raise ConfigError(f"augment copies {copies!r} must be >= 0")
    g = torch.Generator().manual_seed(seed)
    xs, ys = [x], [y]
    for _ in range(copies):
        a, b = jitter_pair(x, y, strength, g)
        xs.append(a)
        ys.append(b)
    return torch.cat(xs), torch.cat(ys)
