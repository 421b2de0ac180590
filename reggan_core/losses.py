"""Loss terms of the refiner's training; the trainer weights and sums them.

Adversarial losses on the discriminator's patch scores ``s`` (any shape, averaged):

* ``lsgan`` (Mao et al. 2017, pix2pix/CycleGAN's default):
  L_D = 1/2 [E (s_real - 1)^2 + E s_fake^2],   L_G = E (s_fake - 1)^2
* ``hinge`` (Lim & Ye 2017; Miyato et al. 2018):
  L_D = E relu(1 - s_real) + E relu(1 + s_fake),   L_G = -E s_fake
* ``wgangp`` (Gulrajani et al. 2017): L_D = E s_fake - E s_real (+ lambda_gp * GP),
  L_G = -E s_fake, with GP = E (||grad_x D(x_hat)||_2 - 1)^2 at random interpolates x_hat.

Content losses: L1 to the paired target (pix2pix), identity mapping (below) and the
StarGAN expression classification term for the conditional model.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .errors import ConfigError

GAN_MODES = ("lsgan", "hinge", "wgangp")


def _check(mode: str) -> None:
    if mode not in GAN_MODES:
        raise ConfigError(f"unknown gan_loss {mode!r}; valid: {', '.join(GAN_MODES)}")


def d_adversarial(mode: str, real: Tensor, fake: Tensor) -> Tensor:
    """Discriminator's adversarial loss from its scores on real and generated images."""
    _check(mode)
    real, fake = real.float(), fake.float()
    if mode == "lsgan":
        return 0.5 * (((real - 1) ** 2).mean() + (fake ** 2).mean())
    if mode == "hinge":
        return F.relu(1 - real).mean() + F.relu(1 + fake).mean()
    return fake.mean() - real.mean()


def g_adversarial(mode: str, fake: Tensor) -> Tensor:
    """Generator's adversarial loss from the discriminator's scores on its images."""
    _check(mode)
    fake = fake.float()
    if mode == "lsgan":
        return ((fake - 1) ** 2).mean()
    return -fake.mean()


def interpolate(real: Tensor, fake: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """x_hat = a real + (1 - a) fake with a ~ U(0, 1) per sample; a leaf that requires grad."""
    real, fake = real.detach().float(), fake.detach().float()
    alpha = torch.rand(real.shape[0], 1, 1, 1, generator=generator).to(real.device)  # CPU generator
    return (alpha * real + (1 - alpha) * fake).requires_grad_(True)


def gradient_penalty(scores: Tensor, x_hat: Tensor, scale: float | Tensor = 1.0) -> Tensor:
    """WGAN-GP penalty E (||grad_x D(x_hat)||_2 - 1)^2 from the critic's scores on ``x_hat``.

    Scores are summed per sample, so each sample's gradient is that of its own total patch
    score. With mixed precision pass the GradScaler's scale: the gradient is taken of the
    scaled scores (no float16 underflow) and divided back, as in PyTorch's AMP recipe.
    """
    (grad,) = torch.autograd.grad(scores.float().sum() * scale, x_hat, create_graph=True)
    grad = grad.float() / scale
    return ((grad.flatten(1).norm(2, dim=1) - 1) ** 2).mean()


def l1(fake: Tensor, target: Tensor) -> Tensor:
    """Mean absolute error, pix2pix's reconstruction term."""
    return (fake.float() - target.float()).abs().mean()


def identity(refined_target: Tensor, target: Tensor) -> Tensor:
    """Identity-preservation term: E |G(y, c) - y|.

    The refiner fed a REAL face ``y`` that already shows the target expression ``c`` should
    leave it unchanged (the identity mapping loss of CycleGAN, Zhu et al. 2017, after Taigman
    et al. 2017). It teaches the refiner to edit only what is wrong in its input - blur and
    ridge artefacts - and to keep the person's own texture, colour and identity.
    """
    return l1(refined_target, target)


def classification(logits: Tensor, labels: Tensor) -> Tensor:
    """Cross-entropy of the discriminator's expression head (StarGAN's L_cls)."""
    return F.cross_entropy(logits.float(), labels.long())


def weighted_sum(terms: dict[str, Tensor], weights: dict[str, float]) -> Tensor:
    """sum_k weights[k] * terms[k] over the terms present (terms with weight 0 are skipped)."""
    missing = [k for k in terms if k not in weights]
    if missing:
        raise ConfigError(f"no weight for loss term(s) {missing}; known: {sorted(weights)}")
    total = None
    for k, v in terms.items():
        if weights[k]:
            total = weights[k] * v if total is None else total + weights[k] * v
    if total is None:
        raise ConfigError("every loss weight is zero; set at least one lambda_* > 0")
    return total
