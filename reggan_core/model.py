"""RegGAN = local ridge regression layer(s) + adversarially trained refiner.

Forward pass for a neutral face x (B, 3, H, W) in [-1, 1] and target labels c (B,)::

    r = LocalRidge_c(x)          # closed-form per-pixel regression, blurry (B, 3, H, W)
    y = Refiner(r, c)            # r + learned residual (US-GAN ultimate skip), sharp

Settings:

* per pair (``conditional=False``): one ridge layer and one unconditional refiner for a
  single source -> target pair, as in the paper;
* conditional (``conditional=True``): one ridge layer per target (each fitted in closed
  form on its own pairs) and ONE refiner that takes the target label as one-hot input
  planes; its discriminator gets a classification head;
* refiner-only baseline (``use_regression=False``): the same refiner on the raw neutral
  face, so "does the regression layer help?" is a controlled comparison.

Generators are saved with :func:`save_generator` and read with :func:`load_generator`
(``torch.load(weights_only=True)``); both also read full training checkpoints.
"""
from __future__ import annotations

import lzma
import os
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from .categories import Category, get_category
from .config import RefinerConfig, from_dict
from .errors import ConfigError, RegGANError
from .imageio import atomic_path, to_tensor, to_uint8
from .networks import build_discriminator, build_generator
from .regression import LocalRidge, RidgeConfig

FORMAT_NAME = "reggan-generator"
FORMAT_VERSION = 1


class RegGAN(nn.Module):
    """Ridge layer(s) + refiner; ``targets`` are category names, labels index into them."""

    def __init__(self, targets: Sequence[str], source: str = "neutral", conditional: bool = True,
                 refiner: RefinerConfig = RefinerConfig(), ridge: RidgeConfig | None = RidgeConfig()):
        super().__init__()
        self.source = get_category(source).name
        self.targets = [get_category(t).name for t in targets]
        if not self.targets or len(set(self.targets)) != len(self.targets):
            raise ConfigError(f"targets {list(targets)} must be a non-empty list without repeats")
        if not conditional and len(self.targets) != 1:
            raise ConfigError(f"a per-pair model has one target, got {self.targets}; use conditional=True")
        if self.source in self.targets:
            raise ConfigError(f"source {self.source!r} cannot also be a target")
        self.conditional = conditional
        self.refiner_config, self.ridge_config = refiner, ridge
        self.train_subjects: list[str] | None = None  # set by load_generator / train (leakage checks)
        self.ridges = nn.ModuleDict({t: LocalRidge(ridge) for t in self.targets}) if ridge is not None else None
        kwargs: dict[str, Any] = dict(n_labels=len(self.targets) if conditional else 0, ngf=refiner.ngf,
                                      norm=refiner.norm, skip=refiner.skip)
        if refiner.generator == "resnet":
            kwargs["n_res"] = refiner.n_res
            kwargs["upsample"] = refiner.upsample
        elif refiner.generator == "unet":
            kwargs["n_down"] = refiner.unet_down
        self.refiner = build_generator(refiner.generator, **kwargs)

    # ------------------------------------------------------------ description
    @property
    def use_regression(self) -> bool:
        return self.ridges is not None

    @property
    def size(self) -> int | None:
        return self.ridge_config.size if self.ridge_config is not None else None

    def spec(self) -> dict[str, Any]:
        """Plain-data description that rebuilds this model (stored in every checkpoint)."""
        return {"source": self.source, "targets": list(self.targets), "conditional": self.conditional,
                "refiner": asdict(self.refiner_config),
                "ridge": asdict(self.ridge_config) if self.ridge_config is not None else None}

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> "RegGAN":
        ridge = from_dict(RidgeConfig, spec["ridge"], "ridge.") if spec.get("ridge") is not None else None
        return cls(spec["targets"], spec["source"], spec["conditional"],
                   from_dict(RefinerConfig, spec["refiner"], "refiner."), ridge)

    def label(self, target: str | int | Category) -> int:
        """Position of a target category in this model's label space."""
        try:
            name = get_category(target).name
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if name not in self.targets:
            raise ConfigError(f"this model does not produce {name!r}; valid targets: {', '.join(self.targets)}")
        return self.targets.index(name)

    # ------------------------------------------------------------ forward
    def regress(self, x: Tensor, labels: Tensor) -> Tensor:
        """Apply each sample's target ridge layer; identity for the refiner-only baseline."""
        if self.ridges is None:
            return x
        if len(self.targets) == 1:
            return self.ridges[self.targets[0]](x)
        out = torch.empty_like(x)
        for k in labels.unique().tolist():
            sel = labels == k
            out[sel] = self.ridges[self.targets[k]](x[sel]).to(out.dtype)
        return out

    def refine(self, r: Tensor, labels: Tensor) -> Tensor:
        return self.refiner(r, labels if self.conditional else None)

    def forward(self, x: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """(B,3,H,W) neutral faces + (B,) labels -> (refined, regression), both (B,3,H,W)."""
        r = self.regress(x, labels)
        return self.refine(r, labels), r

    @torch.no_grad()
    def translate(self, x: np.ndarray | Tensor, target: str | int | Category,
                  strength: float = 1.0) -> dict[str, Any]:
        """Translate aligned face(s) to ``target``: dict(regression=..., refined=...).

        ``x``: RGB uint8 (H,W,3) / (B,H,W,3) array, or float tensor (3,H,W) / (B,3,H,W) in
        [-1, 1]; outputs have the same type and shape. ``strength`` s blends each output
        with the input, out = x + s (f(x) - x): 0 = the input, 1 = the model's output,
        values above 1 exaggerate (clipped to the valid range).
        """
        if not np.isfinite(strength):
            raise ConfigError(f"strength={strength!r} must be a finite number (0 = input, 1 = full)")
        as_numpy = isinstance(x, np.ndarray)
        if as_numpy:
            arr = x if x.ndim == 4 else x[None]
            if arr.dtype != np.uint8 or arr.shape[-1] != 3:
                raise ConfigError(f"translate needs RGB uint8 images (H, W, 3), got {x.dtype} {x.shape}")
            xt = torch.stack([to_tensor(np.array(a)) for a in arr])  # copy: read-only arrays are fine
        else:
            xt = x if x.ndim == 4 else x[None]
        param = next(self.parameters())
        xt = xt.to(param.device, torch.float32)
        if self.size is not None and tuple(xt.shape[-2:]) != (self.size, self.size):
            raise ConfigError(f"translate got {tuple(xt.shape[-2:])} images; this model takes aligned "
                              f"{self.size}x{self.size} crops (see reggan_core.faces.align_face)")
        labels = torch.full((xt.shape[0],), self.label(target), dtype=torch.long, device=xt.device)
        was_training = self.training
        self.eval()
        try:
            refined, reg = self(xt, labels)
        finally:
            self.train(was_training)
        out = {}
        for name, y in (("regression", reg), ("refined", refined)):
            y = y.float() if strength == 1 else xt + float(strength) * (y.float() - xt)
            y = y.clamp(-1, 1)
            if as_numpy:
                y = to_uint8(y)
            out[name] = y if x.ndim == 4 else y[0]
        return out


def make_discriminator(refiner: RefinerConfig, n_classes: int = 0) -> nn.Module:
    """The discriminator matching a refiner config (6 input planes when it sees the source)."""
    return build_discriminator(refiner.discriminator, in_channels=6 if refiner.d_sees_input else 3,
                               ndf=refiner.ndf, n_layers=refiner.d_layers, norm=refiner.d_norm,
                               n_classes=n_classes)


# ------------------------------------------------------------ saving and loading


def pack_ridges(model: RegGAN) -> dict[str, Any]:
    """Ridge weights of all targets as int8 (per target/channel/tap scale) + LZMA: ~3x smaller than float16.

    The largest rounding error is half a step, max|w| / 254 per (target, channel, tap).
    """
    w = torch.stack([torch.cat([m.weight.detach().float(), m.bias.detach().float()[..., None]], -1)
                     for m in model.ridges.values()]).cpu()          # (T, C, H, W, D+1)
    scale = w.abs().amax(dim=(2, 3), keepdim=True).clamp_min(1e-12) / 127.0
    q = (w / scale).round().clamp(-127, 127).to(torch.int8)
    planar = q.permute(0, 1, 4, 2, 3).contiguous().numpy().tobytes()  # planes compress better
    data = np.frombuffer(lzma.compress(planar, preset=9), dtype=np.uint8)
    return {"codec": "int8-lzma", "shape": list(w.shape), "scale": scale, "data": torch.from_numpy(data.copy())}


def unpack_ridges(packed: dict[str, Any]) -> Tensor:
    """Inverse of :func:`pack_ridges`: (T, C, H, W, D+1) float32."""
    if packed.get("codec") != "int8-lzma":
        raise ConfigError(f"unknown ridge codec {packed.get('codec')!r}; re-export the generator")
    t, c, h, w, d = packed["shape"]
    raw = lzma.decompress(packed["data"].numpy().tobytes())
    q = torch.from_numpy(np.frombuffer(raw, dtype=np.int8).copy()).view(t, c, d, h, w).permute(0, 1, 3, 4, 2)
    return q.float() * packed["scale"]


def save_generator(model: RegGAN, path: str | os.PathLike, dtype: str = "float16",
                   pack: bool = True, extra: dict[str, Any] | None = None) -> Path:
    """Write a generator-only file (atomically): spec + refiner weights in ``dtype`` + ridges.

    ``pack=True`` stores the ridge layers with :func:`pack_ridges` (int8 + LZMA), otherwise
    as float32 tensors. ``extra`` (plain data, e.g. the training config) is kept alongside.
    """
    target_dtype = {"float16": torch.float16, "float32": torch.float32}[dtype]
    refiner = {k: v.detach().cpu().to(target_dtype) if v.is_floating_point() else v.detach().cpu()
               for k, v in model.refiner.state_dict().items()}
    state: dict[str, Any] = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "spec": model.spec(),
                             "refiner": refiner, "extra": extra or {}}
    if "train_subjects" not in state["extra"] and getattr(model, "train_subjects", None) is not None:
        state["extra"] = {**state["extra"], "train_subjects": list(model.train_subjects)}
    if model.ridges is not None:
        state["ridges"] = pack_ridges(model) if pack else {
            k: v.detach().cpu() for k, v in model.ridges.state_dict().items()}
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return path


def load_generator(path: str | os.PathLike, map_location: str | torch.device = "cpu", ema: bool = True) -> RegGAN:
    """A RegGAN from :func:`save_generator` output or a full training checkpoint, in eval mode.

    A training checkpoint of a run with ``ema_decay > 0`` gives its moving-average refiner (what the
    run's generator.pt holds); ``ema=False`` gives the raw weights of that step instead.

    Damaged content (a spec that does not match the weights, missing keys, an unknown target,
    a truncated ridge payload) is one :class:`ConfigError` line naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"checkpoint {path} does not exist; train one (python -m reggan_core.train) "
                          "or use checkpoints/reggan_embedded.pt")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # zip/pickle errors of every kind
        raise ConfigError(f"checkpoint {path} is not readable ({exc.__class__.__name__}); "
                          "it is damaged or not a RegGAN file") from None
    if not isinstance(state, dict) or "spec" not in state:
        raise ConfigError(f"file {path} is not a RegGAN checkpoint (no model spec inside)")
    if state.get("format", FORMAT_NAME) == FORMAT_NAME and state.get("version", FORMAT_VERSION) != FORMAT_VERSION:
        raise ConfigError(f"checkpoint {path} has format version {state.get('version')}; this code reads "
                          f"{FORMAT_VERSION}: re-export it")
    try:
        model = _build_from_state(state, ema)
    except RegGANError as exc:
        raise ConfigError(f"checkpoint {path} is damaged: {exc}") from None
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, RuntimeError, lzma.LZMAError) as exc:
        detail = f"missing entry {exc}" if isinstance(exc, KeyError) else (str(exc).strip().splitlines() or [""])[0]
        raise ConfigError(f"checkpoint {path} is damaged ({exc.__class__.__name__}: {detail[:160]}); "
                          "re-export it or train again") from None
    model.train_subjects = recorded_subjects(state)
    return model.to(map_location).eval()


def _build_from_state(state: dict[str, Any], ema: bool = True) -> RegGAN:
    """The model a loaded checkpoint dict describes, holding its weights (errors handled by the caller)."""
    if not isinstance(state["spec"], dict):
        raise ConfigError(f"its model spec is a {type(state['spec']).__name__}, not a mapping")
    model = RegGAN.from_spec(state["spec"])
    if "model" in state:  # full training checkpoint
        model.load_state_dict(state["model"])
        if ema and "ema" in state:
            model.refiner.load_state_dict(state["ema"])
    else:
        model.refiner.load_state_dict({k: v.float() if v.is_floating_point() else v
                                       for k, v in state["refiner"].items()})
        ridges = state.get("ridges")
        if model.ridges is not None:
            if ridges is None:
                raise ConfigError("it lacks the ridge layers its spec needs; re-export it")
            if "codec" in ridges:
                w = unpack_ridges(ridges)
                with torch.no_grad():
                    for k, m in enumerate(model.ridges.values()):
                        m.weight.copy_(w[k, ..., :-1])
                        m.bias.copy_(w[k, ..., -1])
            else:
                model.ridges.load_state_dict(ridges)
    return model



# ------------------------------------------------------------ training subjects and leakage


def recorded_subjects(state: dict[str, Any]) -> list[str] | None:
    """The training subjects a checkpoint records, or None when it does not say.

    Generator files keep them in ``extra["train_subjects"]`` (written by ``reggan_core.train``;
    the shipped checkpoints have them), full training checkpoints in ``train_subjects``.
    """
    subjects = state.get("train_subjects")
    if subjects is None and isinstance(state.get("extra"), dict):
        subjects = state["extra"].get("train_subjects")
    return [str(s) for s in subjects] if subjects is not None else None


def training_subjects(model: "RegGAN | str | os.PathLike") -> list[str] | None:
    """Training subjects of a loaded generator or a checkpoint file (None = not recorded)."""
    if isinstance(model, nn.Module):
        return getattr(model, "train_subjects", None)
    path = Path(model)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ConfigError(f"checkpoint {path} is not readable ({exc.__class__.__name__}); "
                          "it is damaged or not a RegGAN file") from None
    return recorded_subjects(state) if isinstance(state, dict) else None


class LeakageWarning(UserWarning):
    """Scored subjects overlap the subjects a model was trained on."""


def check_no_leakage(model: "RegGAN | str | os.PathLike", subjects: Sequence[str], refuse: bool = False,
                     what: str = "scored") -> list[str]:
    """Warn (or with ``refuse=True`` raise ConfigError) when ``subjects`` include training subjects.

    Returns the overlapping subjects (sorted; empty = clean). A model that does not record its
    training subjects gets one warning saying the check could not be made. Call it wherever a
    model is scored on dataset subjects (validation/test splits): a new ``splits.csv`` drawn with
    another seed puts training subjects into the validation split, and scores on them are
    optimistic (memorised faces), not generalisation.
    """
    train = training_subjects(model)
    if train is None:
        warnings.warn(f"the model does not record its training subjects: cannot check that the {what} "
                      "subjects are held out; retrain with reggan_core.train, which records them",
                      LeakageWarning, stacklevel=2)
        return []
    overlap = sorted(set(map(str, subjects)) & set(train))
    if overlap:
        msg = (f"LEAKAGE: {len(overlap)} of the {len(set(subjects))} {what} subjects were training subjects of "
               f"this model: {', '.join(overlap)}; its scores on them are not held-out results (did splits.csv "
               "change after training? restore it, or score only subjects_in(splits, 'val') minus these)")
        if refuse:
            raise ConfigError(msg)
        warnings.warn(msg, LeakageWarning, stacklevel=2)
    return overlap
