"""Frozen training configurations, read from JSON plus ``key=value`` overrides.

Every value is checked when the config is built, so a wrong key or value is ONE line of
:class:`~reggan_core.errors.ConfigError` naming it - before data is read or a model built.
The RegGAN paper publishes no hyper-parameters; defaults name their source:

* US-GAN (Akram & Khan): one residual block, Adam lr 1e-4 with betas (0.5, 0.999),
  ngf = 64 (StarGAN's generator width, which US-GAN builds on);
* pix2pix (Isola et al. 2017): PatchGAN with 3 layers, ndf = 64, L1 weight 100, LSGAN
  (the pix2pix/CycleGAN code's default adversarial loss);
* StarGAN (Choi et al. 2018): classification weight 1 for the conditional model;
* WGAN-GP (Gulrajani et al. 2017): penalty weight 10;
* Masked Regression: the ridge layer's r = 3, lambda = 0.4 (:class:`RidgeConfig`).

Anything else (identity weight, batch size, iterations, intervals) is our choice and says so.
Nested keys use dots: ``refiner.n_res=2``, ``ridge.lam=0.2``.
"""
from __future__ import annotations

import json
import math
import os
import typing
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Sequence

from .categories import get_category
from .errors import ConfigError
from .losses import GAN_MODES
from .networks import DISCRIMINATORS, GENERATORS, NORMS, UPSAMPLES
from .regression import RidgeConfig

EXPORT_DTYPES = ("float32", "float16")


def _need(ok: bool, key: str, value: Any, what: str) -> None:
    if not ok:
        raise ConfigError(f"config value {key}={value!r} is invalid: {what}")


@dataclass(frozen=True)
class RefinerConfig:
    """Architecture of the refiner (generator) and the discriminator."""

    generator: str = "resnet"     # "resnet" = US-GAN refiner, "unet" = pix2pix U-Net yardstick
    ngf: int = 64                 # generator width (StarGAN/US-GAN: 64)
    n_res: int = 1                # residual blocks (US-GAN: 1)
    upsample: str = "transpose"   # "transpose" (US-GAN/CycleGAN) or "resize" (nearest x2 + conv; no checkerboard)
    unet_down: int = 7            # U-Net depth (pix2pix unet_128: 7)
    norm: str = "instance"        # generator norm (CycleGAN/US-GAN: instance)
    skip: bool = True             # ultimate skip: output = input + residual (US-GAN)
    discriminator: str = "patch"  # PatchGAN (pix2pix)
    ndf: int = 64                 # discriminator width (pix2pix: 64)
    d_layers: int = 3             # PatchGAN layers (pix2pix: 3 -> 70x70 patches)
    d_norm: str = "instance"      # discriminator norm (ours; pix2pix uses batch norm at batch 1)
    d_sees_input: bool = True     # conditional D(source, image) as pix2pix

    def __post_init__(self) -> None:
        _need(self.generator in GENERATORS, "refiner.generator", self.generator,
              f"use one of {', '.join(sorted(GENERATORS))}")
        _need(self.discriminator in DISCRIMINATORS, "refiner.discriminator", self.discriminator,
              f"use one of {', '.join(sorted(DISCRIMINATORS))}")
        for key in ("ngf", "ndf", "d_layers", "unet_down"):
            _need(getattr(self, key) >= 1, f"refiner.{key}", getattr(self, key), "must be >= 1")
        _need(self.n_res >= 0, "refiner.n_res", self.n_res, "must be >= 0")
        _need(self.upsample in UPSAMPLES, "refiner.upsample", self.upsample, f"use one of {', '.join(UPSAMPLES)}")
        _need(self.norm in NORMS, "refiner.norm", self.norm, f"use one of {', '.join(NORMS)}")
        _need(self.d_norm in NORMS, "refiner.d_norm", self.d_norm, f"use one of {', '.join(NORMS)}")


@dataclass(frozen=True)
class TrainConfig:
    """One training run: data, model, losses, optimiser and run-time settings."""

    # data
    dataset_root: str = ""          # "" = the embedded dataset shipped in datasets/embedded
    align: bool = False             # detect+align faces (False: crops are aligned already)
    size: int = 128                 # face crop side (paper: 128)
    conditional: bool = True        # one model over all targets (False: one model per pair)
    targets: tuple[str, ...] = ()   # conditional model's targets; () = every category present
    pairs: tuple[str, ...] = ("neutral:happy",)  # per-pair mode: "source:target", one model each
    max_subjects: int = 0           # use only the first N training subjects (0 = all); for quick runs
    flip: bool = True               # random horizontal flips of (source, regression, target) (ours)
    augment: float = 0.0            # colour/lighting jitter, identical on source and target (ours; 0 = off)
    augment_ridge_copies: int = 0   # jittered copies of every pair added to the ridge fit (ours)
    ridge_mirror: bool = False      # also fit the ridge on every pair's left-right mirror image (ours)
    ridge_change_mask: bool = False  # after the fit, let each target's layer change only where its training
                                    # pairs change (regression.change_mask; elsewhere the copy map; ours)
    ridge_mask_low: float = 0.5     # change-mask quantiles: pixels below the low one are kept as the input,
    ridge_mask_high: float = 0.95   # those above the high one get the full fitted change, linear between
    ridge_mask_blur: float = 3.0    # Gaussian sigma (px) applied to the mean change before the quantiles
    ridge_gain: float = 1.0         # scale of the fitted change, y = x + gain * (ridge(x) - x) (ours; 1 = fit)
    max_rigid_motion: float = 0.0   # drop pairs whose jaw/nose landmarks move more than this x the eye
                                    # distance between source and target (broken warps; ours; 0 = keep all)
    # model
    use_regression: bool = True     # False = refiner-only baseline (same refiner, no ridge layer)
    finetune_regression: bool = False  # also train the ridge layer after its closed-form fit
    ridge: RidgeConfig = field(default_factory=RidgeConfig)
    refiner: RefinerConfig = field(default_factory=RefinerConfig)
    # losses (weights)
    gan_loss: str = "lsgan"         # lsgan (pix2pix default) | hinge | wgangp
    lambda_adv: float = 1.0         # adversarial term of G
    lambda_l1: float = 100.0        # L1 to the paired target (pix2pix: 100)
    lambda_idt: float = 10.0        # identity mapping G(y, c) ~ y (ours; CycleGAN uses 0.5 x cycle weight = 5)
    lambda_cls: float = 1.0         # expression classification, conditional model (StarGAN: 1)
    lambda_gp: float = 10.0         # WGAN-GP gradient penalty (Gulrajani et al.: 10)
    # optimisation
    iterations: int = 20000         # generator updates (ours; see docs/training.md)
    batch_size: int = 16            # per process (ours)
    lr_g: float = 1e-4              # US-GAN
    lr_d: float = 1e-4              # US-GAN
    lr_ridge: float = 1e-5          # ridge fine-tuning (ours), if finetune_regression
    beta1: float = 0.5              # US-GAN
    beta2: float = 0.999            # US-GAN
    n_critic: int = 1               # D updates per G update (StarGAN with WGAN-GP: 5)
    ema_decay: float = 0.0          # exponential moving average of the refiner's weights (0 = off; e.g.
                                    # 0.999, ProGAN/StyleGAN practice): samples and generator.pt use it
    # run time
    device: str = "auto"            # auto | cpu | cuda | cuda:N
    amp: bool = True                # float16 autocast + GradScaler, used on CUDA only
    seed: int = 0
    num_threads: int = 0            # torch CPU threads (0 = leave torch's default)
    out_dir: str = "runs/reggan"
    log_every: int = 10             # CSV row every N steps
    sample_every: int = 500         # sample grid every N steps (0 = only at the end)
    checkpoint_every: int = 1000    # full checkpoint every N steps (0 = only at the end)
    keep_checkpoints: int = 2       # newest full checkpoints kept
    n_samples: int = 6              # rows in a sample grid (validation subjects)
    export_dtype: str = "float16"   # dtype of the exported generator.pt
    progress: bool = True           # tqdm bar
    note: str = ""                  # free text kept with the run

    def __post_init__(self) -> None:
        for f in fields(self):  # inf / nan (JSON Infinity, 1e400) would train to NaN weights
            value = getattr(self, f.name)
            if isinstance(value, float):
                _need(math.isfinite(value), f.name, value, "must be a finite number")
        for key in ("iterations", "batch_size", "n_critic", "log_every", "keep_checkpoints", "n_samples"):
            _need(getattr(self, key) >= 1, key, getattr(self, key), "must be >= 1")
        for key in ("sample_every", "checkpoint_every", "max_subjects", "num_threads", "augment_ridge_copies"):
            _need(getattr(self, key) >= 0, key, getattr(self, key), "must be >= 0")
        for key in ("lr_g", "lr_d", "lr_ridge"):
            _need(getattr(self, key) > 0, key, getattr(self, key), "must be > 0")
        for key in ("lambda_adv", "lambda_l1", "lambda_idt", "lambda_cls", "lambda_gp", "augment",
                    "max_rigid_motion"):
            _need(getattr(self, key) >= 0, key, getattr(self, key), "must be >= 0")
        for key in ("beta1", "beta2", "ema_decay"):
            _need(0 <= getattr(self, key) < 1, key, getattr(self, key), "must be in [0, 1)")
        _need(0 <= self.ridge_mask_low < self.ridge_mask_high <= 1, "ridge_mask_low/ridge_mask_high",
              (self.ridge_mask_low, self.ridge_mask_high), "need 0 <= low < high <= 1")
        _need(self.ridge_mask_blur >= 0, "ridge_mask_blur", self.ridge_mask_blur, "must be >= 0")
        _need(self.ridge_gain > 0, "ridge_gain", self.ridge_gain, "must be > 0")
        _need(self.gan_loss in GAN_MODES, "gan_loss", self.gan_loss, f"use one of {', '.join(GAN_MODES)}")
        _need(self.size % 4 == 0 and self.size >= 16, "size", self.size, "must be a multiple of 4, >= 16")
        _need(self.ridge.size == self.size, "ridge.size", self.ridge.size, f"must equal size={self.size}")
        _need(self.export_dtype in EXPORT_DTYPES, "export_dtype", self.export_dtype,
              f"use one of {', '.join(EXPORT_DTYPES)}")
        _need(self.device == "auto" or self.device.split(":")[0] in ("cpu", "cuda"), "device", self.device,
              "use auto, cpu, cuda or cuda:N")
        _need(not (self.finetune_regression and not self.use_regression), "finetune_regression",
              self.finetune_regression, "needs use_regression=true")
        for t in self.targets:
            _need(_category(t, "targets") != "neutral", "targets", self.targets, "neutral is the source, not a target")
        _need(len(self.pairs) >= 1 or self.conditional, "pairs", self.pairs, "name at least one source:target pair")
        for p in self.pairs:
            parse_pair(p)

    @property
    def root(self) -> Path | None:
        """The dataset folder, or None for the embedded dataset."""
        return Path(self.dataset_root).expanduser() if self.dataset_root else None


def _category(name: str, key: str) -> str:
    try:
        return get_category(name).name
    except ValueError as exc:
        raise ConfigError(f"config value {key}: {exc}") from None


def parse_pair(text: str) -> tuple[str, str]:
    """'neutral:happy' -> ('neutral', 'happy'), category names checked."""
    parts = str(text).split(":")
    if len(parts) != 2:
        raise ConfigError(f"config value pairs={text!r} is invalid: write pairs as source:target, e.g. neutral:happy")
    src, tgt = (_category(p, "pairs") for p in parts)
    if src == tgt:
        raise ConfigError(f"config value pairs={text!r} is invalid: source and target are the same")
    return src, tgt


# ---------------------------------------------------------------- parsing


def _coerce(key: str, value: Any, typ: Any) -> Any:
    """Check/convert one value against a field type (bool, int, float, str, tuple[str, ...], dataclass)."""
    origin = typing.get_origin(typ)
    if is_dataclass(typ):
        if is_dataclass(value):
            value = asdict(value)
        if not isinstance(value, dict):
            raise ConfigError(f"config value {key}={value!r} is invalid: expected an object of {typ.__name__} keys")
        return from_dict(typ, value, prefix=f"{key}.")
    if origin is tuple:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"config value {key}={value!r} is invalid: expected a list of strings")
        return tuple(value)
    if typ is bool:
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        if not isinstance(value, bool):
            raise ConfigError(f"config value {key}={value!r} is invalid: expected true or false")
        return value
    if typ is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config value {key}={value!r} is invalid: expected an integer")
        return value
    if typ is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config value {key}={value!r} is invalid: expected a number")
        return float(value)
    if typ is str:
        if not isinstance(value, str):
            raise ConfigError(f"config value {key}={value!r} is invalid: expected a string")
        return value
    return value


def from_dict(cls: type, data: dict[str, Any], prefix: str = ""):
    """Build dataclass ``cls`` from a (possibly partial, possibly nested) dict, checking every key."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in fields(cls)]
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            raise ConfigError(f"unknown config key '{prefix}{key}'; valid keys: {', '.join(prefix + n for n in names)}")
        kwargs[key] = _coerce(prefix + key, value, hints[key])
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"config {cls.__name__} is invalid: {exc}") from None


def _parse_value(text: str) -> Any:
    """Override values are JSON when they parse (3, 1e-4, true, ["a"]), plain strings otherwise."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """['iterations=100', 'refiner.n_res=2'] -> nested dict."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not key=value; write e.g. iterations=1000")
        key, text = item.split("=", 1)
        node = out
        *parents, leaf = key.strip().split(".")
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r} conflicts with an earlier override of {p!r}")
        node[leaf] = _parse_value(text.strip())
    return out


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for k, v in extra.items():
        merged[k] = _merge(merged[k], v) if isinstance(v, dict) and isinstance(merged.get(k), dict) else v
    return merged


def load_config(path: str | os.PathLike | None = None, overrides: Sequence[str] = (),
                **changes: Any) -> TrainConfig:
    """TrainConfig from a JSON file (partial: missing keys keep defaults), overrides and kwargs."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist; pass one of the files in configs/")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid JSON (line {exc.lineno}: {exc.msg})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"config file {path} must hold a JSON object of keys")
    data = _merge(data, parse_overrides(overrides))
    data = _merge(data, {k: asdict(v) if is_dataclass(v) else v for k, v in changes.items()})
    if "size" in data and "size" not in (data.get("ridge") or {}):  # one size for the whole model
        data = _merge(data, {"ridge": {"size": data["size"]}})
    return from_dict(TrainConfig, data)


def config_dict(config: Any) -> dict[str, Any]:
    """A config as a plain JSON-able dict (tuples become lists)."""
    return json.loads(json.dumps(asdict(config)))


def differing_keys(a: TrainConfig, b: TrainConfig, ignore: Sequence[str] = ()) -> list[str]:
    """Top-level keys whose values differ between two configs."""
    da, db = config_dict(a), config_dict(b)
    return [k for k in da if k not in ignore and da[k] != db.get(k)]
