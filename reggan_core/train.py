"""Train RegGAN: closed-form ridge fit, then adversarial training of the refiner.

    python -m reggan_core.train --config configs/embedded_conditional.json [key=value ...] [--resume]
    torchrun --nproc_per_node=2 -m reggan_core.train --config FILE ...    # DistributedDataParallel

The training step reads like the algorithm (after pytorch-CycleGAN-and-pix2pix):
``forward`` -> ``backward_D`` -> ``backward_G`` inside ``optimize_parameters``, with D frozen
during the G step. Outputs in ``out_dir``: ``config.json`` (resolved), ``log.csv`` (every loss
term every ``log_every`` steps), ``samples/step_*.png`` (source | regression | refined |
target), ``checkpoints/step_*.pt`` (model, optimisers, scalers, RNG states, step; atomic) and
``generator.pt`` (the exported generator for :func:`reggan_core.model.load_generator`).

Determinism: the batch of step t and the random numbers it uses are functions of (seed, t,
rank), not of a running generator, so ``--resume`` after a kill reaches the same weights as
an unbroken run (bitwise on CPU with a fixed thread count). Mixed precision (float16
autocast + GradScaler) is used on CUDA only; on CPU the same code runs with it disabled.
"""
from __future__ import annotations

import argparse
import copy
import csv
import io
import logging
import math
import os
import random
import signal
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

from .categories import get_category
from .config import TrainConfig, config_dict, differing_keys, from_dict, load_config, parse_pair
from .augment import augmented_copies, jitter_pair
from .data import index_dataset, load_face, load_splits, subjects_in
from .errors import ConfigError, DataError, RegGANError
from .imageio import atomic_path, save_image, to_uint8, write_text
from .losses import (classification, d_adversarial, g_adversarial, gradient_penalty, identity, interpolate, l1,
                     weighted_sum)
from .model import RegGAN, make_discriminator, save_generator
from .regression import change_mask
from .utils import get_device, seed_everything, write_config

log = logging.getLogger(__name__)

LOG_COLUMNS = ("step", "D_adv", "D_cls", "D_gp", "D_total", "G_adv", "G_l1", "G_idt", "G_cls", "G_total",
               "images_per_s", "max_mem_mb", "elapsed_s")
# keys that may change when a run is resumed (everything else must match the saved config)
# (out_dir too: the run folder is where the checkpoints are found, so a moved folder or a relative
# path naming the same run resumes)
RESUMABLE_CHANGES = ("iterations", "progress", "device", "num_threads", "amp", "log_every", "sample_every",
                     "checkpoint_every", "keep_checkpoints", "note", "out_dir")


class TrainingDiverged(RegGANError):
    """Losses or weights became inf / NaN: the run stops, its last good checkpoint is kept."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C: the run stopped between two steps after saving a checkpoint (resume with --resume)."""


# ------------------------------------------------------------ processes


@dataclass(frozen=True)
class Dist:
    """This process's place in a torchrun job (rank 0 of 1 without torchrun)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device_name: str) -> tuple[Dist, torch.device]:
    """Join the torchrun process group (gloo on CPU, nccl on CUDA) and pick this rank's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Dist(), get_device(device_name)
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = get_device(device_name)
    if device.type == "cuda":
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size(), local), device


def _barrier(d: Dist) -> None:
    if d.world > 1:
        dist.barrier()


# ------------------------------------------------------------ data


def step_generator(seed: int, *keys: int) -> torch.Generator:
    """A fresh CPU generator seeded from (seed, keys): randomness that resumes exactly."""
    g = torch.Generator()
    g.manual_seed(int(np.random.SeedSequence([seed, *keys]).generate_state(1, np.uint64)[0]) >> 1)
    return g


class FaceBank:
    """All faces a run needs, loaded (and aligned, if asked) once, as uint8 tensors (3, H, W)."""

    def __init__(self, index, subjects: Sequence[str], categories: Sequence[str], align: bool, size: int):
        self.images: dict[tuple[str, str], Tensor] = {}
        for s in subjects:
            for c in categories:
                path = index.images.get(s, {}).get(c)
                if path is not None:
                    face = load_face(path, align, size).copy()
                    self.images[(s, c)] = torch.from_numpy(face).permute(2, 0, 1).contiguous()

    def has(self, subject: str, category: str) -> bool:
        return (subject, category) in self.images

    def array(self, subject: str, category: str) -> np.ndarray:
        """One face as a contiguous RGB uint8 (H, W, 3) array (for dlib and NumPy code)."""
        return np.ascontiguousarray(self.images[(subject, category)].permute(1, 2, 0).numpy())

    def batch(self, keys: Sequence[tuple[str, str]]) -> Tensor:
        """Float (B, 3, H, W) in [-1, 1]."""
        return torch.stack([self.images[k] for k in keys]).float() / 127.5 - 1.0


@dataclass(frozen=True)
class Item:
    subject: str
    source: str
    target: str
    label: int


class Sampler:
    """Epoch-wise shuffled items; global position p = (step * world + rank) * B + i.

    Position p falls in epoch p // N at place p % N of that epoch's permutation, which is
    drawn from (seed, epoch): a function of the step, so a resumed run sees the same
    batches, and a 2-process run sees exactly the batches of a 1-process run with 2B.
    """

    def __init__(self, items: Sequence[Item], seed: int, flip: bool):
        self.items, self.seed, self.flip = list(items), seed, flip
        self._cache: dict[int, tuple[Tensor, Tensor]] = {}

    def _epoch(self, e: int) -> tuple[Tensor, Tensor]:
        if e not in self._cache:
            g = step_generator(self.seed, 1, e)
            perm = torch.randperm(len(self.items), generator=g)
            flips = torch.rand(len(self.items), generator=g) < 0.5
            if len(self._cache) >= 2:  # positions only move forward: keep the current and next epoch
                self._cache.pop(min(self._cache))
            self._cache[e] = (perm, flips & self.flip)
        return self._cache[e]

    def batch(self, step: int, batch_size: int, rank: int = 0, world: int = 1) -> tuple[list[Item], Tensor]:
        n = len(self.items)
        start = (step * world + rank) * batch_size
        chosen, flips = [], []
        for p in range(start, start + batch_size):
            perm, fl = self._epoch(p // n)
            chosen.append(self.items[int(perm[p % n])])
            flips.append(bool(fl[p % n]))
        return chosen, torch.tensor(flips)


# ------------------------------------------------------------ the trainer


def set_requires_grad(net: nn.Module, flag: bool) -> None:
    for p in net.parameters():
        p.requires_grad_(flag)


def flip_where(t: Tensor, flips: Tensor) -> Tensor:
    """Mirror (left-right) the samples of (B, C, H, W) where ``flips`` (B,) is True."""
    return torch.where(flips.to(t.device)[:, None, None, None], t.flip(-1), t)


class Trainer:
    """Holds G (RegGAN), D, their optimisers and GradScalers; one call = one training step."""

    def __init__(self, cfg: TrainConfig, model: RegGAN, device: torch.device, d: Dist = Dist()):
        self.cfg, self.model, self.device, self.dist = cfg, model.to(device), device, d
        n_classes = len(model.targets) if model.conditional else 0
        self.netD = make_discriminator(cfg.refiner, n_classes).to(device)
        if model.ridges is not None:
            set_requires_grad(model.ridges, cfg.finetune_regression)
        ddp = d.world > 1
        ids = [device.index] if device.type == "cuda" else None
        wrap = (lambda m: nn.parallel.DistributedDataParallel(m, device_ids=ids)) if ddp else (lambda m: m)
        self.G = wrap(model.refiner)   # refiner (DDP-synchronised when distributed)
        self.D = wrap(self.netD)       # used in the D step; the G step calls netD itself (frozen)
        betas = (cfg.beta1, cfg.beta2)
        groups = [{"params": list(model.refiner.parameters()), "lr": cfg.lr_g}]
        if cfg.finetune_regression:
            groups.append({"params": list(model.ridges.parameters()), "lr": cfg.lr_ridge})
        self.opt_G = torch.optim.Adam(groups, betas=betas)
        self.opt_D = torch.optim.Adam(self.netD.parameters(), lr=cfg.lr_d, betas=betas)
        self.amp = cfg.amp and device.type == "cuda"
        self.scaler_G = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.scaler_D = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.weights_D = {"D_adv": 1.0, "D_cls": cfg.lambda_cls, "D_gp": cfg.lambda_gp}
        self.weights_G = {"G_adv": cfg.lambda_adv, "G_l1": cfg.lambda_l1, "G_idt": cfg.lambda_idt,
                          "G_cls": cfg.lambda_cls}
        self.losses: dict[str, float] = {}
        # the moving average of the refiner's weights (cfg.ema_decay > 0): what samples and generator.pt use
        self.ema: nn.Module | None = None
        if cfg.ema_decay > 0:
            self.ema = copy.deepcopy(model.refiner).eval()
            set_requires_grad(self.ema, False)

    def ema_decay_at(self, n_updates: int) -> float:
        """Decay after ``n_updates`` G updates: min(ema_decay, (1 + n) / (10 + n)).

        The warm-up (TensorFlow's ExponentialMovingAverage with num_updates) keeps the zero-initialised
        start from dominating a short run's average.
        """
        return min(self.cfg.ema_decay, (1.0 + n_updates) / (10.0 + n_updates))

    @torch.no_grad()
    def update_ema(self, n_updates: int) -> None:
        """ema <- decay * ema + (1 - decay) * weights; buffers are copied."""
        if self.ema is None:
            return
        w = 1.0 - self.ema_decay_at(n_updates)
        for e, p in zip(self.ema.parameters(), self.model.refiner.parameters()):
            e.lerp_(p.detach(), w)
        for e, b in zip(self.ema.buffers(), self.model.refiner.buffers()):
            e.copy_(b)

    @contextmanager
    def exported(self) -> Iterator[RegGAN]:
        """The model as samples and generator.pt show it: with the EMA refiner when there is one."""
        raw = self.model.refiner
        if self.ema is not None:
            self.model.refiner = self.ema
        try:
            yield self.model
        finally:
            self.model.refiner = raw

    def autocast(self):
        return torch.autocast(self.device.type, dtype=torch.float16, enabled=self.amp)

    def set_input(self, source: Tensor, target: Tensor, labels: Tensor, flips: Tensor) -> None:
        """source/target (B, 3, H, W) in [-1, 1], labels (B,) into model.targets, flips (B,) bool."""
        self.real_A, self.real_B = source.to(self.device), target.to(self.device)
        self.labels, self.flips = labels.to(self.device), flips.to(self.device)

    def forward(self) -> None:
        """regression r = ridge(A) on the unflipped face, then flips, then fake_B = G(r, c).

        With an identity weight, G also maps the real target: idt_B = G(B, c) ~ B. Both go
        through G as ONE batch (instance norm is per sample, so this equals two calls).
        """
        c = self.labels if self.model.conditional else None
        with self.autocast():
            reg = self.model.regress(self.real_A, self.labels)
            self.real_A, self.reg_A, self.real_B = (flip_where(t, self.flips) for t in
                                                    (self.real_A, reg, self.real_B))
            if self.cfg.lambda_idt > 0:
                both = self.G(torch.cat([self.reg_A, self.real_B]), None if c is None else torch.cat([c, c]))
                self.fake_B, self.idt_B = both.chunk(2)
            else:
                self.fake_B, self.idt_B = self.G(self.reg_A, c), None

    def d_input(self, images: Tensor) -> Tensor:
        """What D sees: (source, image) stacked as 6 planes (pix2pix), or the image alone."""
        if not self.cfg.refiner.d_sees_input:
            return images
        reps = images.shape[0] // self.real_A.shape[0]
        return torch.cat([self.real_A.repeat(reps, 1, 1, 1), images], 1)

    def backward_D(self, step: int) -> None:
        """L_D = L_adv(D(A, B), D(A, G(r))) + lambda_cls CE(D_cls(A, B), c) [+ lambda_gp GP].

        fake, real (and WGAN-GP interpolates) go through D as one batch: one forward per step.
        """
        b = self.real_B.shape[0]
        images = [self.fake_B.detach(), self.real_B]
        gp = self.cfg.gan_loss == "wgangp" and self.cfg.lambda_gp > 0
        if gp:
            x_hat = interpolate(self.real_B, self.fake_B, step_generator(self.cfg.seed, 2, step, self.dist.rank))
            images.append(x_hat.to(self.fake_B.dtype))
        with self.autocast():
            scores, logits = self.D(self.d_input(torch.cat(images)))
            terms = {"D_adv": d_adversarial(self.cfg.gan_loss, scores[b:2 * b], scores[:b])}
            if logits is not None:
                terms["D_cls"] = classification(logits[b:2 * b], self.labels)
            if gp:
                terms["D_gp"] = gradient_penalty(scores[2 * b:], x_hat, self.scaler_D.get_scale() if self.amp else 1.0)
        loss = weighted_sum(terms, self.weights_D)
        self.scaler_D.scale(loss).backward()
        self.losses.update({k: float(v.detach()) for k, v in terms.items()}, D_total=float(loss.detach()))

    def backward_G(self) -> None:
        """L_G = lambda_adv L_adv(D(A, G(r))) + lambda_l1 |G(r) - B| + lambda_idt |G(B, c) - B| + lambda_cls CE."""
        with self.autocast():
            scores, logits = self.netD(self.d_input(self.fake_B))
            terms = {"G_adv": g_adversarial(self.cfg.gan_loss, scores), "G_l1": l1(self.fake_B, self.real_B)}
            if self.idt_B is not None:
                terms["G_idt"] = identity(self.idt_B, self.real_B)
            if logits is not None:
                terms["G_cls"] = classification(logits, self.labels)
        loss = weighted_sum(terms, self.weights_G)
        self.scaler_G.scale(loss).backward()
        self.losses.update({k: float(v.detach()) for k, v in terms.items()}, G_total=float(loss.detach()))

    def _sync_ridge_grads(self) -> None:
        """Fine-tuned ridge layers: a zero gradient for targets absent from the batch (same Adam
        update with 1 or N processes), averaged over processes (they are outside DDP)."""
        if not self.cfg.finetune_regression:
            return
        for p in self.model.ridges.parameters():
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            if self.dist.world > 1:
                dist.all_reduce(p.grad)
                p.grad /= self.dist.world

    def optimize_parameters(self, step: int) -> dict[str, float]:
        """One step: forward; D update (D trainable); G update every n_critic steps (D frozen)."""
        self.losses = {}
        g_step = step % self.cfg.n_critic == 0
        with torch.set_grad_enabled(g_step):  # no G graph when G is not updated (also keeps DDP in step)
            self.forward()
        set_requires_grad(self.netD, True)
        self.opt_D.zero_grad(set_to_none=True)
        self.backward_D(step)
        self.scaler_D.step(self.opt_D)
        self.scaler_D.update()
        if g_step:
            set_requires_grad(self.netD, False)
            self.opt_G.zero_grad(set_to_none=True)
            self.backward_G()
            self._sync_ridge_grads()
            self.scaler_G.step(self.opt_G)
            self.scaler_G.update()
            self.update_ema(step // self.cfg.n_critic)
            set_requires_grad(self.netD, True)
        return self.losses

    # -------------------------------------------------------- checkpoints
    def state_dict(self, step: int) -> dict[str, Any]:
        return {"format": "reggan-train", "version": 1, "step": step, "spec": self.model.spec(),
                "config": config_dict(self.cfg), "model": self.model.state_dict(), "netD": self.netD.state_dict(),
                "opt_G": self.opt_G.state_dict(), "opt_D": self.opt_D.state_dict(),
                "scaler_G": self.scaler_G.state_dict(), "scaler_D": self.scaler_D.state_dict(),
                "rng": rng_state(), "train_subjects": getattr(self.model, "train_subjects", None),
                **({"ema": self.ema.state_dict()} if self.ema is not None else {})}

    def load_state_dict(self, state: dict[str, Any]) -> int:
        self.model.load_state_dict(state["model"])
        self.netD.load_state_dict(state["netD"])
        self.opt_G.load_state_dict(state["opt_G"])
        self.opt_D.load_state_dict(state["opt_D"])
        if self.ema is not None:
            if "ema" not in state:
                raise ConfigError("the checkpoint holds no EMA weights although ema_decay > 0; resume with its config")
            self.ema.load_state_dict(state["ema"])
        if self.amp:  # a disabled scaler has no state (CPU checkpoints hold {})
            if state["scaler_G"]:
                self.scaler_G.load_state_dict(state["scaler_G"])
                self.scaler_D.load_state_dict(state["scaler_D"])
        set_rng_state(state["rng"])
        return int(state["step"])


def rng_state() -> dict[str, Any]:
    """Python, NumPy, torch and CUDA generator states, as tensors/primitives (weights_only-safe)."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"python": random.getstate(), "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss,
                                                   gauss],
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def checkpoint_files(run_dir: Path) -> list[Path]:
    """Full checkpoints of a run, oldest first."""
    return sorted((run_dir / "checkpoints").glob("step_*.pt"))


def save_checkpoint(trainer: Trainer, step: int, run_dir: Path) -> Path:
    path = run_dir / "checkpoints" / f"step_{step:07d}.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save(trainer.state_dict(step), tmp)
    for old in checkpoint_files(run_dir)[:-trainer.cfg.keep_checkpoints]:
        old.unlink(missing_ok=True)
    return path


def remove_stale_temp_files(run_dir: Path) -> list[Path]:
    """Delete the temporary files of saves that were killed mid-way (``.<name>.*.tmp.pt``, tens of MB each)."""
    stale = [p for folder in (run_dir, run_dir / "checkpoints") if folder.is_dir()
             for p in folder.glob(".*.tmp.pt") if p.is_file()]
    for p in stale:
        p.unlink(missing_ok=True)
    if stale:
        log.info("removed %d temporary file(s) of interrupted saves in %s", len(stale), run_dir)
    return stale


def weights_finite(trainer: Trainer) -> bool:
    """True when every weight of G and D is finite (no checkpoint is written otherwise)."""
    return all(bool(torch.isfinite(p).all()) for net in (trainer.model, trainer.netD) for p in net.parameters())


@contextmanager
def stop_on_interrupt(d: Dist) -> Iterator[dict[str, bool]]:
    """While training: Ctrl-C (SIGINT) only asks the loop to stop after the current step.

    The loop then saves a checkpoint and raises :class:`TrainingInterrupted`; a second Ctrl-C
    interrupts at once. Installed in the main thread of a single process only (and not when
    SIGINT is ignored); the previous handler is restored afterwards.
    """
    flag = {"stop": False}
    previous = signal.getsignal(signal.SIGINT) if threading.current_thread() is threading.main_thread() else None
    if d.world > 1 or previous is None or previous == signal.SIG_IGN:
        yield flag
        return

    def handler(signum, frame):
        if flag["stop"]:
            raise KeyboardInterrupt
        flag["stop"] = True
        log.info("Ctrl-C: stopping after this step and saving a checkpoint (press again to abort at once)")

    signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


def _diverged(step: int, what: str, run_dir: Path) -> TrainingDiverged:
    ckpts = checkpoint_files(run_dir)
    fix = "lower lr_g / lr_d (or the loss weights)"
    todo = (f"the last good checkpoint {ckpts[-1]} is kept: {fix} and resume from it with --resume, or start again"
            if ckpts else f"no checkpoint was written yet: {fix} and start again")
    return TrainingDiverged(f"training diverged at step {step}: {what} not finite; {todo}")


def load_checkpoint(path: Path) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ConfigError(f"checkpoint {path} is not readable ({exc.__class__.__name__}); delete it to resume "
                          "from the one before") from None


# ------------------------------------------------------------ logs and samples


class CsvLog:
    """``log.csv`` with one row per logged step; on resume, rows after the checkpoint are dropped.

    ``elapsed_s`` is training time: a resumed run continues from the last kept row's value
    (``last_elapsed``), so the log's final row gives the whole run's time, not the last piece's.
    """

    def __init__(self, path: Path, resume_step: int | None):
        self.path = path
        rows: list[dict[str, str]] = []
        if resume_step is not None and path.is_file():
            with open(path, newline="") as fh:
                rows = [r for r in csv.DictReader(fh)
                        if r.get("step", "").isdigit() and int(r["step"]) <= resume_step and None not in r.values()]
        try:
            self.last_elapsed = float(rows[-1]["elapsed_s"]) if rows else 0.0
        except ValueError:
            self.last_elapsed = 0.0
        buf = io.StringIO()
        w = csv.DictWriter(buf, LOG_COLUMNS, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
        write_text(buf.getvalue(), path)

    def write(self, row: dict[str, Any]) -> None:
        with open(self.path, "a", newline="") as fh:
            csv.DictWriter(fh, LOG_COLUMNS, lineterminator="\n").writerow(
                {k: (f"{row[k]:.6g}" if isinstance(row.get(k), float) else row.get(k, "")) for k in LOG_COLUMNS})


def read_log(path: str | os.PathLike):
    """A run's ``log.csv`` as a pandas DataFrame (empty cells = terms not used)."""
    import pandas as pd

    return pd.read_csv(path)


def tile(rows: Sequence[Sequence[np.ndarray]], gap: int = 2) -> np.ndarray:
    """Rows of equally sized RGB uint8 images -> one grid image with white gaps."""
    h, w = rows[0][0].shape[:2]
    n_cols = max(len(r) for r in rows)
    grid = np.full((len(rows) * (h + gap) - gap, n_cols * (w + gap) - gap, 3), 255, np.uint8)
    for i, row in enumerate(rows):
        for j, img in enumerate(row):
            grid[i * (h + gap):i * (h + gap) + h, j * (w + gap):j * (w + gap) + w] = img
    return grid


@torch.no_grad()
def sample_grid(model: RegGAN, source: Tensor, target: Tensor, labels: Tensor) -> np.ndarray:
    """One row per sample: source | regression | refined | target, as a uint8 image."""
    device = next(model.parameters()).device
    refined, reg = model(source.to(device), labels.to(device))
    cols = [to_uint8(t) for t in (source, reg, refined, target)]
    return tile([[c[i] for c in cols] for i in range(source.shape[0])])


# ------------------------------------------------------------ one run


def _plan_items(index, subjects: Sequence[str], source: str, targets: Sequence[str]) -> list[Item]:
    return [Item(s, source, t, k) for s in subjects for k, t in enumerate(targets)
            if source in index.images[s] and t in index.images[s]]


def fit_ridges(model: RegGAN, bank: FaceBank, items: Sequence[Item], progress: bool = False,
               copies: int = 0, strength: float = 0.0, seed: int = 0, mirror: bool = False,
               mask: tuple[float, float, float] | None = None, gain: float = 1.0) -> None:
    """Closed-form ridge fit of every target's layer on its training pairs (Masked Regression).

    ``copies`` > 0 adds that many colour/lighting-jittered versions of every pair
    (:func:`reggan_core.augment.augmented_copies`, strength ``strength``); ``mirror`` adds
    every pair (and copy) flipped left-right, so each pixel's regression also sees the
    other half of the face: twice the samples per pixel, a left-right symmetric fit.
    ``mask`` = (low, high, sigma) then restricts each layer to where its pairs change
    (:func:`reggan_core.regression.change_mask`) and ``gain`` scales the fitted change
    (:meth:`~reggan_core.regression.LocalRidge.restrict_change`).
    """
    from tqdm.auto import tqdm

    for t in tqdm(model.targets, desc="ridge fit", disable=not progress, leave=False):
        mine = [i for i in items if i.target == t]
        if not mine:
            raise DataError(f"no training pair for target {t!r}; add images or drop it from targets")
        x = bank.batch([(i.subject, i.source) for i in mine])
        y = bank.batch([(i.subject, t) for i in mine])
        if copies and strength > 0:
            x, y = augmented_copies(x, y, copies, strength, seed=seed)
        if mirror:
            x, y = torch.cat([x, x.flip(-1)]), torch.cat([y, y.flip(-1)])
        model.ridges[t].fit((x, y))
        if mask is not None or gain != 1.0:
            m = None if mask is None else change_mask(x, y, *mask)
            model.ridges[t].restrict_change(m, gain)


def drop_broken_pairs(items: Sequence[Item], bank: FaceBank, limit: float, run_dir: Path | None,
                      progress: bool = False) -> list[Item]:
    """Items whose target's rigid landmarks move <= ``limit`` eye distances (:mod:`reggan_core.pair_qc`).

    Writes ``dropped_pairs.csv`` (subject, target, motion) into ``run_dir``; refuses to drop a
    target's every pair.
    """
    from tqdm.auto import tqdm

    from .pair_qc import pair_motions

    pairs = (((i.subject, i.source), bank.array(i.subject, i.source), bank.array(i.subject, i.target))
             for i in tqdm(items, desc="pair check", disable=not progress, leave=False))
    motions = pair_motions(pairs)
    kept = [i for i, m in zip(items, motions) if m <= limit]
    for t in dict.fromkeys(i.target for i in items):
        if not any(i.target == t for i in kept):
            raise DataError(f"max_rigid_motion={limit:g} drops every {t} pair; raise it (e.g. 0.15) or set 0")
    if run_dir is not None:
        import pandas as pd

        run_dir.mkdir(parents=True, exist_ok=True)
        rows = [{"subject": i.subject, "target": i.target, "motion": m} for i, m in zip(items, motions) if m > limit]
        with atomic_path(run_dir / "dropped_pairs.csv") as tmp:
            pd.DataFrame(rows, columns=["subject", "target", "motion"]).to_csv(tmp, index=False)
    log.info("pair check: kept %d of %d pairs (max_rigid_motion=%g)", len(kept), len(items), limit)
    return kept


@dataclass
class RunPlan:
    """Everything checked before work starts: where, what and from which data."""

    run_dir: Path
    source: str
    targets: list[str]
    resume_from: Path | None


def plan_runs(cfg: TrainConfig, resume: bool, index) -> list[RunPlan]:
    """One plan per model; refuses to overwrite a run or to resume a missing/different one."""
    out = Path(cfg.out_dir)
    if cfg.conditional:
        targets = [t for t in (cfg.targets or index.categories()) if t != "neutral"]
        groups = [(out, "neutral", [get_category(t).name for t in targets])]
    else:
        pairs = [parse_pair(p) for p in cfg.pairs]
        groups = [(out if len(pairs) == 1 else out / f"{s}_to_{t}", s, [t]) for s, t in pairs]
    plans = []
    for run_dir, source, targets in groups:
        missing = [t for t in [source, *targets] if t not in index.categories()]
        if missing:
            raise DataError(f"dataset {index.root} has no {', '.join(missing)} images; choose other targets/pairs")
        ckpts = checkpoint_files(run_dir)
        if resume:
            if not ckpts:
                raise ConfigError(f"nothing to resume in {run_dir} (no checkpoints/step_*.pt); drop --resume")
            saved = load_checkpoint(ckpts[-1])
            diff = differing_keys(cfg, from_dict(TrainConfig, saved["config"]), ignore=RESUMABLE_CHANGES)
            if diff:
                raise ConfigError(f"config differs from the run in {run_dir} in {', '.join(diff)}; resume with the "
                                  "same config (only iterations and run-time keys may change)")
        elif ckpts or (run_dir / "generator.pt").exists():
            raise ConfigError(f"{run_dir} already holds a run; pass --resume, or set out_dir=<new folder>")
        plans.append(RunPlan(run_dir, source, targets, ckpts[-1] if resume else None))
    return plans


def run_one(cfg: TrainConfig, plan: RunPlan, index, splits: dict[str, str], d: Dist, device: torch.device) -> Path:
    """Fit the ridge layer(s), train the refiner, write logs, samples, checkpoints and generator.pt."""
    from tqdm.auto import tqdm

    seed_everything(cfg.seed)
    run_dir = plan.run_dir
    train_subj = subjects_in(splits, "train")
    if cfg.max_subjects:
        train_subj = train_subj[:cfg.max_subjects]
    val_subj = subjects_in(splits, "val") or train_subj
    items = _plan_items(index, train_subj, plan.source, plan.targets)
    if not items:
        raise DataError(f"no training subject has {plan.source} and {'/'.join(plan.targets)} images in {index.root}")
    bank = FaceBank(index, sorted(set(train_subj) | set(val_subj)), [plan.source, *plan.targets], cfg.align, cfg.size)
    if cfg.max_rigid_motion > 0:
        items = drop_broken_pairs(items, bank, cfg.max_rigid_motion, run_dir if d.main else None, cfg.progress)
    model = RegGAN(plan.targets, plan.source, cfg.conditional, cfg.refiner,
                   cfg.ridge if cfg.use_regression else None)
    model.train_subjects = list(train_subj)  # recorded in every checkpoint (leakage checks)
    trainer = Trainer(cfg, model, device, d)
    start = 0
    if plan.resume_from is not None:
        start = trainer.load_state_dict(load_checkpoint(plan.resume_from))
        log.info("resumed %s at step %d", run_dir, start)
    elif model.ridges is not None:
        if d.main:
            with torch.no_grad():
                fit_ridges(model, bank, items, progress=cfg.progress, copies=cfg.augment_ridge_copies,
                           strength=cfg.augment, seed=cfg.seed, mirror=cfg.ridge_mirror,
                           mask=(cfg.ridge_mask_low, cfg.ridge_mask_high, cfg.ridge_mask_blur)
                           if cfg.ridge_change_mask else None, gain=cfg.ridge_gain)
        if d.world > 1:
            for t in model.ridges.state_dict().values():
                dist.broadcast(t, 0)
    # fixed validation examples for the sample grids
    val_items = _plan_items(index, val_subj, plan.source, plan.targets)
    val_items = val_items[::max(1, len(val_items) // cfg.n_samples)][:cfg.n_samples]  # spread over subjects/targets
    val = (bank.batch([(i.subject, i.source) for i in val_items]),
           bank.batch([(i.subject, i.target) for i in val_items]), torch.tensor([i.label for i in val_items]))
    csv_log = None
    if d.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        remove_stale_temp_files(run_dir)
        write_config(cfg, run_dir / "config.json")
        csv_log = CsvLog(run_dir / "log.csv", start if plan.resume_from is not None else None)
    sampler = Sampler(items, cfg.seed, cfg.flip)
    t_last = time.perf_counter()
    t0 = t_last - (csv_log.last_elapsed if csv_log is not None else 0.0)  # elapsed_s goes on after a resume
    bar = tqdm(range(start + 1, cfg.iterations + 1), initial=start, total=cfg.iterations,
               disable=not (d.main and cfg.progress), desc=run_dir.name, leave=False)
    step, last_logged = start, start
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with stop_on_interrupt(d) as interrupt:
        for step in bar:
            chosen, flips = sampler.batch(step - 1, cfg.batch_size, d.rank, d.world)
            source = bank.batch([(i.subject, i.source) for i in chosen])
            target = bank.batch([(i.subject, i.target) for i in chosen])
            if cfg.augment > 0:  # drawn from (seed, step, rank): resumes exactly
                source, target = jitter_pair(source, target, cfg.augment, step_generator(cfg.seed, 3, step, d.rank))
            trainer.set_input(source, target, torch.tensor([i.label for i in chosen]), flips)
            losses = trainer.optimize_parameters(step)
            bad = [k for k, v in losses.items() if not math.isfinite(v)]
            if _any_rank(bool(bad), d, device):
                raise _diverged(step, ", ".join(bad) or "a loss on another process", run_dir)
            if d.main and step % cfg.log_every == 0:
                now = time.perf_counter()
                row = dict(losses, step=step, elapsed_s=now - t0, max_mem_mb=peak_memory_mb(device),
                           images_per_s=(step - last_logged) * cfg.batch_size * d.world / max(now - t_last, 1e-9))
                csv_log.write(row)
                bar.set_postfix(D=f"{losses['D_total']:.3f}", G=f"{losses.get('G_total', float('nan')):.3f}")
                t_last, last_logged = now, step
            if d.main and cfg.sample_every and step % cfg.sample_every == 0:
                with trainer.exported() as shown:
                    save_image(sample_grid(shown, *val), run_dir / "samples" / f"step_{step:07d}.png")
            if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step < cfg.iterations:
                if d.main:
                    if not weights_finite(trainer):
                        raise _diverged(step, "the weights are", run_dir)
                    save_checkpoint(trainer, step, run_dir)
                _barrier(d)
            if interrupt["stop"] and step < cfg.iterations:
                saved = checkpoint_files(run_dir)
                if not saved or saved[-1].name != f"step_{step:07d}.pt":
                    if not weights_finite(trainer):
                        raise _diverged(step, "the weights are", run_dir)
                    saved = [save_checkpoint(trainer, step, run_dir)]
                bar.close()
                raise TrainingInterrupted(f"stopped at step {step} of {cfg.iterations}; checkpoint {saved[-1]} "
                                          "saved; continue with --resume")
    bar.close()
    if d.main:
        if not weights_finite(trainer):
            raise _diverged(step, "the weights are", run_dir)
        save_checkpoint(trainer, step, run_dir)
        with trainer.exported() as shown:
            save_image(sample_grid(shown, *val), run_dir / "samples" / f"step_{step:07d}.png")
            save_generator(shown, run_dir / "generator.pt", cfg.export_dtype,
                           extra={"config": config_dict(cfg), "step": step, "train_subjects": list(train_subj),
                                  "ema_decay": cfg.ema_decay})
    _barrier(d)
    return run_dir


def _any_rank(flag: bool, d: Dist, device: torch.device) -> bool:
    """True when ``flag`` is True on any process (so that all processes stop at the same step)."""
    if d.world == 1:
        return flag
    t = torch.tensor([float(flag)], device=device)
    dist.all_reduce(t)
    return bool(t.item() > 0)


def peak_memory_mb(device: torch.device) -> float:
    """Peak CUDA memory allocated by tensors, or this process's peak resident memory on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        import resource  # Unix only
    except ImportError:
        return float("nan")
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def train(cfg: TrainConfig, resume: bool = False) -> list[Path]:
    """Run training for a config (one run, or one per pair); returns the run folders.

    All checks (device, dataset, categories, output folder, resume compatibility) happen
    before any model is fitted or trained.
    """
    d, device = init_distributed(cfg.device)
    index = index_dataset(cfg.root)
    plans = plan_runs(cfg, resume, index)
    splits = load_splits(index)
    threads = torch.get_num_threads()
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    try:
        return [run_one(cfg, plan, index, splits, d, device) for plan in plans]
    finally:
        torch.set_num_threads(threads)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reggan_core.train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", help="JSON config file (see configs/); missing keys keep their defaults")
    parser.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in out_dir")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. iterations=2000 refiner.n_res=2")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        cfg = load_config(args.config, args.overrides)
        dirs = train(cfg, resume=args.resume)
    except RegGANError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except TrainingInterrupted as exc:
        print(f"interrupted: {exc}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("interrupted before training started (or by a second Ctrl-C): nothing new saved; rerun, with "
              "--resume if checkpoints exist", file=sys.stderr)
        return 130
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    if int(os.environ.get("RANK", "0")) == 0:
        for run_dir in dirs:
            print(f"trained: {run_dir / 'generator.pt'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
