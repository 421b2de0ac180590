"""QualiCLIP: no-reference image quality from a quality-aware CLIP ResNet-50.

Agnolucci, Galteri & Bertini, "Quality-Aware Image-Text Alignment for Opinion-Unaware Image
Quality Assessment" (arXiv 2403.11176, 2024). CLIP's image encoder is fine-tuned so that its
similarity to antonym prompts ranks synthetically degraded images; the text encoder stays the
frozen CLIP one. The score of an image x is

    s_k(x) = exp(l * cos(f(x), g(p_k+))) / (exp(l * cos(f(x), g(p_k+))) + exp(l * cos(f(x), g(p_k-))))
    q(x)   = mean_k s_k(x)            in [0, 1], higher = better quality

with f the image encoder, g the text encoder, (p_k+, p_k-) the K = 7 antonym prompt pairs
below and l = 100 CLIP's logit scale (the official repository's fixed value; pyiqa divides the
logits by a further temperature of 2, available here as ``temperature``).

Everything here is written for torch only: the CLIP "ModifiedResNet" RN50 image encoder and the
text transformer keep the state-dict key layout of OpenAI's CLIP, so a user's QualiCLIP file
(``clip_model.*`` keys + the pre-computed ``prompts_features``) loads by path with
``torch.load(weights_only=True)``. Nothing is downloaded: without weights the metric raises
:class:`QualiCLIPUnavailable` with one line saying where to get them (see docs/metrics.md).

Input: 128x128 faces are resized to 224x224 (CLIP's training size; bicubic, antialiased) and
normalised with CLIP's mean/std. As in the official code and CLIP-IQA, the attention pool runs
without its positional embedding (``pos_embedding=False``), so any input size is valid.
"""
from __future__ import annotations

import gzip
import html
import importlib.util
import logging
import os
import re
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import RegGANError
from .fer import MetricUnavailable, as_rgb_batch

log = logging.getLogger(__name__)

# Antonym prompt pairs (positive, negative) used to train and score QualiCLIP (official code and
# pyiqa's ``qualiclip``; the checkpoint's ``prompts_features`` are these 14 prompts in this order).
PROMPT_PAIRS: tuple[tuple[str, str], ...] = (
    ("Good photo.", "Bad photo."),
    ("Sharp image.", "Blurry image."),
    ("Sharp edges.", "Blurry edges."),
    ("High-resolution image.", "Low-resolution image."),
    ("Noise-free image.", "Noisy image."),
    ("High-quality image.", "Low-quality image."),
    ("Good picture.", "Bad picture."),
)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)   # OpenAI CLIP preprocessing
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
LOGIT_SCALE = 100.0      # official QualiCLIP code ("value used in CLIP's paper")
INPUT_SIZE = 224         # CLIP RN50 training resolution
WEIGHTS_URL = "https://github.com/miccunifi/QualiCLIP/releases/download/weights/qualiclip.pth"
WEIGHTS_ENV = "REGGAN_QUALICLIP_WEIGHTS"
VOCAB_ENV = "REGGAN_CLIP_VOCAB"
VOCAB_NAME = "bpe_simple_vocab_16e6.txt.gz"
SOT, EOT = "<|startoftext|>", "<|endoftext|>"


class QualiCLIPUnavailable(MetricUnavailable):
    """QualiCLIP cannot run here (no weights, or pyiqa failed): the message says why and the fix."""


# --------------------------------------------------------------------------------------
# CLIP architecture (OpenAI key layout)
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ClipConfig:
    """Shape of a CLIP model with a ResNet image encoder; defaults are OpenAI's RN50."""

    embed_dim: int = 1024
    image_resolution: int = 224
    vision_layers: tuple[int, int, int, int] = (3, 4, 6, 3)
    vision_width: int = 64
    context_length: int = 77
    vocab_size: int = 49408
    transformer_width: int = 512
    transformer_heads: int = 8
    transformer_layers: int = 12

    @classmethod
    def from_state_dict(cls, sd: dict) -> "ClipConfig":
        """Read the shape off a state dict (OpenAI key layout, no prefix)."""
        if "visual.proj" in sd:
            raise RegGANError("this is a CLIP ViT state dict; QualiCLIP needs the ResNet-50 (RN50) layout")
        layers = tuple(len({k.split(".")[2] for k in sd if k.startswith(f"visual.layer{b}.")})
                       for b in (1, 2, 3, 4))
        grid = round((sd["visual.attnpool.positional_embedding"].shape[0] - 1) ** 0.5)
        width = sd["ln_final.weight"].shape[0]
        return cls(
            embed_dim=sd["text_projection"].shape[1],
            image_resolution=grid * 32,
            vision_layers=layers,  # type: ignore[arg-type]
            vision_width=sd["visual.layer1.0.conv1.weight"].shape[0],
            context_length=sd["positional_embedding"].shape[0],
            vocab_size=sd["token_embedding.weight"].shape[0],
            transformer_width=width,
            transformer_heads=width // 64,
            transformer_layers=len({k.split(".")[2] for k in sd if k.startswith("transformer.resblocks.")}),
        )


class Bottleneck(nn.Module):
    """ResNet bottleneck with anti-aliased stride: an average pool replaces strided convolutions."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.avgpool = nn.AvgPool2d(stride) if stride > 1 else nn.Identity()
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.downsample = None
        if stride > 1 or inplanes != planes * 4:
            self.downsample = nn.Sequential(OrderedDict([
                ("-1", nn.AvgPool2d(stride)),
                ("0", nn.Conv2d(inplanes, planes * 4, 1, bias=False)),
                ("1", nn.BatchNorm2d(planes * 4)),
            ]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(self.avgpool(out)))
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu(out + identity)


class AttentionPool2d(nn.Module):
    """CLIP's attention pooling: the mean token queries all (HW + 1) tokens, one output per image."""

    def __init__(self, grid: int, embed_dim: int, heads: int, output_dim: int):
        super().__init__()
        self.positional_embedding = nn.Parameter(torch.randn(grid * grid + 1, embed_dim) / embed_dim ** 0.5)
        self.k_proj = nn.Linear(embed_dim, embed_dim)
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.c_proj = nn.Linear(embed_dim, output_dim)
        self.heads = heads

    def forward(self, x: torch.Tensor, pos_embedding: bool = False) -> torch.Tensor:
        """(N, C, H, W) -> (N, output_dim)."""
        n, c, h, w = x.shape
        tokens = x.flatten(2).transpose(1, 2)                       # (N, HW, C)
        tokens = torch.cat([tokens.mean(1, keepdim=True), tokens], 1)  # (N, HW+1, C)
        if pos_embedding:
            tokens = tokens + self._positional(h, w).to(tokens.dtype)
        hd = c // self.heads
        q = self.q_proj(tokens[:, :1]).view(n, 1, self.heads, hd).transpose(1, 2)
        k = self.k_proj(tokens).view(n, -1, self.heads, hd).transpose(1, 2)
        v = self.v_proj(tokens).view(n, -1, self.heads, hd).transpose(1, 2)
        attn = torch.softmax(q @ k.transpose(-1, -2) / hd ** 0.5, dim=-1)   # (N, heads, 1, HW+1)
        out = (attn @ v).transpose(1, 2).reshape(n, c)
        return self.c_proj(out)

    def _positional(self, h: int, w: int) -> torch.Tensor:
        pe = self.positional_embedding
        grid = round((pe.shape[0] - 1) ** 0.5)
        if (h, w) == (grid, grid):
            return pe
        spatial = pe[1:].T.reshape(1, -1, grid, grid)
        spatial = F.interpolate(spatial, size=(h, w), mode="bicubic", align_corners=False)
        return torch.cat([pe[:1], spatial.reshape(pe.shape[1], h * w).T], 0)


class ModifiedResNet(nn.Module):
    """CLIP's ResNet: 3-conv stem with average pool, anti-aliased bottlenecks, attention pool."""

    def __init__(self, layers: Sequence[int], output_dim: int, heads: int, input_resolution: int = 224,
                 width: int = 64):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width // 2, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width // 2)
        self.conv2 = nn.Conv2d(width // 2, width // 2, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width // 2)
        self.conv3 = nn.Conv2d(width // 2, width, 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(width)
        self.avgpool = nn.AvgPool2d(2)
        self._inplanes = width
        self.layer1 = self._make_layer(width, layers[0])
        self.layer2 = self._make_layer(width * 2, layers[1], stride=2)
        self.layer3 = self._make_layer(width * 4, layers[2], stride=2)
        self.layer4 = self._make_layer(width * 8, layers[3], stride=2)
        self.attnpool = AttentionPool2d(input_resolution // 32, width * 32, heads, output_dim)

    def _make_layer(self, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        layers = [Bottleneck(self._inplanes, planes, stride)]
        self._inplanes = planes * 4
        layers += [Bottleneck(self._inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, pos_embedding: bool = False) -> torch.Tensor:
        """(N, 3, H, W), CLIP-normalised -> (N, output_dim) image embedding."""
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        x = self.avgpool(F.relu(self.bn3(self.conv3(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.attnpool(x, pos_embedding)


class QuickGELU(nn.Module):
    """x * sigmoid(1.702 x), the GELU approximation CLIP was trained with."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class ResidualAttentionBlock(nn.Module):
    """Pre-LayerNorm transformer block (causal self-attention + 4x MLP)."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.attn = nn.MultiheadAttention(width, heads)
        self.ln_1 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(OrderedDict([
            ("c_fc", nn.Linear(width, width * 4)), ("gelu", QuickGELU()), ("c_proj", nn.Linear(width * 4, width)),
        ]))
        self.ln_2 = nn.LayerNorm(width)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x: (L, N, width) sequence-first, as nn.MultiheadAttention expects."""
        y = self.ln_1(x)
        x = x + self.attn(y, y, y, need_weights=False, attn_mask=mask)[0]
        return x + self.mlp(self.ln_2(x))


class TextTransformer(nn.Module):
    """Stack of residual attention blocks; ``resblocks`` keeps CLIP's key names."""

    def __init__(self, width: int, layers: int, heads: int):
        super().__init__()
        self.resblocks = nn.ModuleList([ResidualAttentionBlock(width, heads) for _ in range(layers)])

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        for block in self.resblocks:
            x = block(x, mask)
        return x


class CLIP(nn.Module):
    """CLIP with a ResNet image encoder and the text transformer (OpenAI state-dict layout)."""

    def __init__(self, cfg: ClipConfig = ClipConfig()):
        super().__init__()
        self.cfg = cfg
        self.visual = ModifiedResNet(cfg.vision_layers, cfg.embed_dim, cfg.vision_width * 32 // 64,
                                     cfg.image_resolution, cfg.vision_width)
        self.transformer = TextTransformer(cfg.transformer_width, cfg.transformer_layers, cfg.transformer_heads)
        self.token_embedding = nn.Embedding(cfg.vocab_size, cfg.transformer_width)
        self.positional_embedding = nn.Parameter(torch.randn(cfg.context_length, cfg.transformer_width) * 0.01)
        self.ln_final = nn.LayerNorm(cfg.transformer_width)
        self.text_projection = nn.Parameter(torch.randn(cfg.transformer_width, cfg.embed_dim)
                                            * cfg.transformer_width ** -0.5)
        self.logit_scale = nn.Parameter(torch.tensor(float(np.log(1 / 0.07))))
        mask = torch.full((cfg.context_length, cfg.context_length), float("-inf")).triu_(1)
        self.register_buffer("attn_mask", mask, persistent=False)

    def encode_image(self, x: torch.Tensor, pos_embedding: bool = False) -> torch.Tensor:
        """(N, 3, H, W) CLIP-normalised images -> (N, embed_dim), not normalised."""
        return self.visual(x, pos_embedding)

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        """(N, context_length) token ids -> (N, embed_dim), read at each end-of-text token."""
        x = self.token_embedding(tokens) + self.positional_embedding
        x = self.transformer(x.transpose(0, 1), self.attn_mask).transpose(0, 1)
        x = self.ln_final(x)
        return x[torch.arange(x.shape[0]), tokens.argmax(-1)] @ self.text_projection


# --------------------------------------------------------------------------------------
# BPE tokenizer (CLIP's byte-level BPE, 49408 tokens)
# --------------------------------------------------------------------------------------
def find_vocab(path: str | os.PathLike | None = None) -> Path | None:
    """CLIP's ``bpe_simple_vocab_16e6.txt.gz``: ``path``, ``$REGGAN_CLIP_VOCAB``, or a package that ships it.

    The ``open_clip_torch`` wheel (installed with ``--no-deps``; it is never imported) and the
    ``clip`` packages on PyPI ship the file. Returns None when none is found.
    """
    candidates: list[Path] = []
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise RegGANError(f"CLIP vocabulary {p} does not exist; pass the path of {VOCAB_NAME}")
        return p
    if os.environ.get(VOCAB_ENV):
        candidates.append(Path(os.environ[VOCAB_ENV]))
    for pkg in ("open_clip", "clip", "pyiqa"):
        try:
            spec = importlib.util.find_spec(pkg)
        except (ImportError, ValueError):
            spec = None
        if spec is not None and spec.submodule_search_locations:
            root = Path(list(spec.submodule_search_locations)[0])
            candidates += [root / VOCAB_NAME, root / "archs" / VOCAB_NAME]
    return next((c for c in candidates if c.is_file()), None)


def bytes_to_unicode() -> dict[int, str]:
    """Reversible byte -> printable character map of GPT-2/CLIP byte-level BPE."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) \
        + list(range(ord("®"), ord("ÿ") + 1))
    chars = keep[:]
    extra = 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(keep, (chr(c) for c in chars)))


def _token_pattern():
    """CLIP's pre-tokenisation pattern; ``regex`` gives exact Unicode classes, ``re`` a close match."""
    try:
        import regex

        return regex.compile(r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|"""
                             r"""[^\s\p{L}\p{N}]+""", regex.IGNORECASE)
    except ImportError:  # letters = [^\W\d_]; numbers approximated by \d (exact for ASCII text)
        return re.compile(r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[^\W\d_]+|\d|"""
                          r"""(?:[^\s\w]|_)+""", re.IGNORECASE)


class SimpleTokenizer:
    """CLIP's lower-cased byte-level BPE tokenizer, read from the published vocabulary file."""

    def __init__(self, vocab_path: str | os.PathLike | None = None):
        path = find_vocab(vocab_path)
        if path is None:
            raise QualiCLIPUnavailable(
                f"CLIP vocabulary {VOCAB_NAME} not found; `pip install --no-deps open_clip_torch` "
                f"or set ${VOCAB_ENV} to the file"
            )
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            merges = fh.read().split("\n")[1:49152 - 256 - 2 + 1]
        pairs = [tuple(m.split()) for m in merges]
        self.byte_encoder = bytes_to_unicode()
        self.byte_decoder = {v: k for k, v in self.byte_encoder.items()}
        vocab = list(self.byte_encoder.values())
        vocab += [v + "</w>" for v in vocab] + ["".join(p) for p in pairs] + [SOT, EOT]
        self.encoder = {tok: i for i, tok in enumerate(vocab)}
        self.decoder = {i: tok for tok, i in self.encoder.items()}
        self.bpe_ranks = {p: i for i, p in enumerate(pairs)}
        self.pattern = _token_pattern()
        self.cache = {SOT: SOT, EOT: EOT}

    @property
    def sot(self) -> int:
        return self.encoder[SOT]

    @property
    def eot(self) -> int:
        return self.encoder[EOT]

    def bpe(self, token: str) -> str:
        """Merge the characters of one word by rank order; returns space-separated sub-words."""
        if token in self.cache:
            return self.cache[token]
        word = list(token[:-1]) + [token[-1] + "</w>"]
        while len(word) > 1:
            rank, first = min((self.bpe_ranks.get(p, float("inf")), i)
                              for i, p in enumerate(zip(word, word[1:])))
            if rank == float("inf"):
                break
            a, b = word[first], word[first + 1]
            merged: list[str] = []
            i = 0
            while i < len(word):  # merge every occurrence of the best-ranked pair
                if i < len(word) - 1 and word[i] == a and word[i + 1] == b:
                    merged.append(a + b)
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = merged
        out = " ".join(word)
        self.cache[token] = out
        return out

    @staticmethod
    def clean(text: str) -> str:
        """HTML-unescape (twice), collapse whitespace, lower-case (ftfy's fixes when installed)."""
        try:
            import ftfy

            text = ftfy.fix_text(text)
        except ImportError:
            pass
        text = html.unescape(html.unescape(text)).strip()
        return re.sub(r"\s+", " ", text).strip().lower()

    def encode(self, text: str) -> list[int]:
        ids: list[int] = []
        for tok in self.pattern.findall(self.clean(text)):
            tok = "".join(self.byte_encoder[b] for b in tok.encode("utf-8"))
            ids += [self.encoder[t] for t in self.bpe(tok).split(" ")]
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        """Ids -> text (lower-cased, words separated by single spaces); SOT/EOT/padding dropped."""
        kept: list[int] = []
        for i in (int(v) for v in ids):
            if i == self.eot:
                break          # padding follows the end-of-text token
            if i != self.sot:
                kept.append(i)
        text = "".join(self.decoder[i] for i in kept)
        words = text.split("</w>")
        raw = [bytearray(self.byte_decoder[c] for c in w).decode("utf-8", errors="replace") for w in words]
        return " ".join(w for w in raw if w)

    def __call__(self, texts: str | Sequence[str], context_length: int = 77) -> torch.Tensor:
        """Texts -> (N, context_length) int64 ids: [SOT] + BPE ids + [EOT], zero padded."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        out = torch.zeros(len(texts), context_length, dtype=torch.long)
        for i, t in enumerate(texts):
            ids = [self.sot] + self.encode(t) + [self.eot]
            if len(ids) > context_length:
                raise RegGANError(f"prompt {t!r} is {len(ids)} tokens, longer than {context_length}; shorten it")
            out[i, :len(ids)] = torch.tensor(ids)
        return out


@lru_cache(maxsize=2)
def default_tokenizer(vocab_path: str | None = None) -> SimpleTokenizer:
    return SimpleTokenizer(vocab_path)


# --------------------------------------------------------------------------------------
# Scoring rule and weights
# --------------------------------------------------------------------------------------
def quality_from_features(image_features: torch.Tensor, text_features: torch.Tensor,
                          logit_scale: float = LOGIT_SCALE, temperature: float = 1.0) -> torch.Tensor:
    """QualiCLIP score from embeddings.

    image_features (N, D), text_features (2K, D) ordered [p1+, p1-, p2+, p2-, ...]. Both are
    L2-normalised here; logits = logit_scale * cosine / temperature, shaped (N, K, 2); a softmax
    over each pair; the score is the positive prompt's probability averaged over the K pairs: (N,).
    """
    if text_features.shape[0] % 2:
        raise RegGANError(f"{text_features.shape[0]} prompt features; antonym prompts come in pairs")
    img = F.normalize(image_features.float(), dim=-1)
    txt = F.normalize(text_features.float(), dim=-1)
    logits = (logit_scale / temperature) * img @ txt.T
    probs = logits.view(img.shape[0], -1, 2).softmax(-1)
    return probs[..., 0].mean(1)


def _unwrap(obj) -> dict:
    """State dict from common checkpoint wrappers ({'state_dict': ...}, {'params': ...}, DataParallel)."""
    if not isinstance(obj, dict):
        raise RegGANError("checkpoint is not a state dict")
    for key in ("state_dict", "params", "model", "params_ema"):
        if key in obj and isinstance(obj[key], dict) and not isinstance(obj[key], torch.Tensor):
            obj = obj[key]
            break
    return {(k[7:] if k.startswith("module.") else k): v for k, v in obj.items()}


def read_checkpoint(path: str | os.PathLike) -> tuple[dict, torch.Tensor | None]:
    """(CLIP state dict without prefix, prompt features or None) from a QualiCLIP or CLIP RN50 file."""
    path = Path(path)
    if not path.is_file():
        raise QualiCLIPUnavailable(f"QualiCLIP weights {path} do not exist; download them from {WEIGHTS_URL}")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # TorchScript archives and pickles with code are refused by weights_only
        raise RegGANError(
            f"weights {path} cannot be read as a plain state dict ({exc.__class__.__name__}); "
            f"use the QualiCLIP state dict qualiclip.pth ({WEIGHTS_URL})"
        ) from None
    sd = _unwrap(raw)
    prompts = sd.pop("prompts_features", None)
    sd = {(k[len("clip_model."):] if k.startswith("clip_model.") else k): v for k, v in sd.items()}
    for key in ("input_resolution", "context_length", "vocab_size"):  # metadata in OpenAI's files
        sd.pop(key, None)
    if "visual.attnpool.positional_embedding" not in sd:
        raise RegGANError(f"weights {path} are not a CLIP ResNet state dict (no visual.attnpool.*); "
                          f"use qualiclip.pth from {WEIGHTS_URL}")
    return sd, prompts


def build_clip(sd: dict, name: str = "weights") -> CLIP:
    """A :class:`CLIP` shaped after ``sd`` with ``sd`` loaded strictly (one-line error on mismatch)."""
    model = CLIP(ClipConfig.from_state_dict(sd))
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise RegGANError(
            f"{name} does not match the CLIP RN50 layout (missing {len(missing)} keys, e.g. "
            f"{missing[:2]}; unexpected {len(unexpected)}, e.g. {unexpected[:2]})"
        )
    return model.eval()


def resolve_weights(weights: str | os.PathLike | None = None) -> Path | None:
    """Weights path from the argument, ``$REGGAN_QUALICLIP_WEIGHTS`` or ``~/.cache/reggan/weights``."""
    if weights is not None:
        return Path(weights)
    if os.environ.get(WEIGHTS_ENV):
        return Path(os.environ[WEIGHTS_ENV])
    default = Path(os.environ.get("REGGAN_CACHE", Path.home() / ".cache" / "reggan")) / "weights" / "qualiclip.pth"
    return default if default.is_file() else None


def unavailable_reason() -> str:
    """The one line reported when no weights are found."""
    return (f"QualiCLIP unavailable: no weights (pass --qualiclip-weights PATH or set ${WEIGHTS_ENV}; "
            f"with internet download {WEIGHTS_URL}, or `pip install pyiqa`)")


def _unit(arrs: Sequence[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(arrs)).permute(0, 3, 1, 2).float() / 255.0


def unit_batches(images, batch_size: int = 16) -> list[torch.Tensor]:
    """uint8 (N, H, W, 3) arrays (sizes may differ) or float (N, 3, H, W) tensors in [-1, 1]
    -> batches of float (B, 3, H, W) in [0, 1]; images of different sizes go in separate batches."""
    if isinstance(images, torch.Tensor) and images.is_floating_point():
        x = images.float()
        x = (x.unsqueeze(0) if x.ndim == 3 else x).add(1).div(2).clamp(0, 1)
        return [x[i:i + batch_size] for i in range(0, len(x), batch_size)]
    batches = []
    arrs = as_rgb_batch(images)
    for i in range(0, len(arrs), batch_size):
        group = arrs[i:i + batch_size]
        if len({g.shape for g in group}) == 1:
            batches.append(_unit(group))
        else:
            batches += [_unit([g]) for g in group]
    return batches


class QualiCLIP(nn.Module):
    """The QualiCLIP scorer: CLIP RN50 + antonym prompt features + the pairwise softmax rule."""

    def __init__(self, clip: CLIP, prompt_features: torch.Tensor, input_size: int | None = INPUT_SIZE,
                 logit_scale: float = LOGIT_SCALE, temperature: float = 1.0, pos_embedding: bool = False,
                 variant: str = "qualiclip"):
        super().__init__()
        self.clip = clip
        self.register_buffer("prompt_features", prompt_features.float())
        self.register_buffer("mean", torch.tensor(CLIP_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(CLIP_STD).view(1, 3, 1, 1))
        self.input_size, self.logit_scale, self.temperature = input_size, logit_scale, temperature
        self.pos_embedding, self.variant = pos_embedding, variant

    def preprocess(self, x01: torch.Tensor) -> torch.Tensor:
        """[0, 1] images -> resized (bicubic, antialiased) and CLIP-normalised."""
        if self.input_size and x01.shape[-2:] != (self.input_size, self.input_size):
            x01 = F.interpolate(x01, size=(self.input_size, self.input_size), mode="bicubic",
                                align_corners=False, antialias=True).clamp(0, 1)
        return (x01 - self.mean) / self.std

    @torch.no_grad()
    def forward(self, x01: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) in [0, 1] -> (N,) quality in [0, 1]."""
        feats = self.clip.encode_image(self.preprocess(x01.to(self.mean.device)), self.pos_embedding)
        return quality_from_features(feats, self.prompt_features, self.logit_scale, self.temperature)

    def score(self, images, batch_size: int = 16, progress: bool = False) -> np.ndarray:
        """Quality of uint8 (N, H, W, 3) images or [-1, 1] tensors, as a float64 array (N,)."""
        from tqdm.auto import tqdm

        out = [self(x) for x in tqdm(unit_batches(images, batch_size), desc="QualiCLIP",
                                     disable=not progress, leave=False)]
        return torch.cat(out).double().cpu().numpy() if out else np.zeros(0)


def prompt_features_from_text(clip: CLIP, tokenizer: SimpleTokenizer,
                              pairs: Sequence[tuple[str, str]] = PROMPT_PAIRS) -> torch.Tensor:
    """Normalised text embeddings (2K, D) of the prompts, ordered [p1+, p1-, ...]."""
    prompts = [p for pair in pairs for p in pair]
    with torch.no_grad():
        tokens = tokenizer(prompts, clip.cfg.context_length)
        return F.normalize(clip.encode_text(tokens), dim=-1)


def load_qualiclip(weights: str | os.PathLike | None = None, vocab: str | os.PathLike | None = None,
                   device: str | torch.device = "cpu", **kwargs) -> QualiCLIP:
    """QualiCLIP from a weights file (QualiCLIP layout, or a plain CLIP RN50 state dict).

    The file's pre-computed ``prompts_features`` are used as published; without them the
    prompts are encoded with the text transformer (needs CLIP's vocabulary, see :func:`find_vocab`).
    A plain CLIP state dict gives zero-shot CLIP-IQA-style scores, not QualiCLIP: it is labelled
    so and a warning says it. Raises :class:`QualiCLIPUnavailable` when there are no weights.
    """
    path = resolve_weights(weights)
    if path is None:
        raise QualiCLIPUnavailable(unavailable_reason())
    sd, prompts = read_checkpoint(path)
    clip = build_clip(sd, str(path))
    variant = "qualiclip"
    if prompts is None:
        prompts = prompt_features_from_text(clip, default_tokenizer(str(vocab) if vocab else None))
        variant = "clip-rn50-zero-shot"
        log.warning("weights %s have no QualiCLIP prompt features: scores are zero-shot CLIP "
                    "(CLIP-IQA style), not QualiCLIP", path)
    if prompts.shape != (2 * len(PROMPT_PAIRS), clip.cfg.embed_dim):
        raise RegGANError(f"prompts_features in {path} have shape {tuple(prompts.shape)}; expected "
                          f"({2 * len(PROMPT_PAIRS)}, {clip.cfg.embed_dim})")
    return QualiCLIP(clip, prompts, variant=variant, **kwargs).to(device).eval()


class PyiqaQualiCLIP:
    """pyiqa's ``qualiclip`` metric behind the same ``score`` interface (downloads its own weights)."""

    variant = "pyiqa-qualiclip"

    def __init__(self, device: str | torch.device = "cpu"):
        try:
            import pyiqa

            self.metric = pyiqa.create_metric("qualiclip", device=torch.device(device))
        except Exception as exc:  # offline download failures, missing clip package, ...
            raise QualiCLIPUnavailable(
                f"pyiqa's qualiclip failed ({exc.__class__.__name__}: {str(exc)[:80]}); "
                f"pass --qualiclip-weights PATH ({WEIGHTS_URL})"
            ) from None

    @torch.no_grad()
    def score(self, images, batch_size: int = 16, progress: bool = False) -> np.ndarray:
        out = [self.metric(x).flatten().double().cpu().numpy() for x in unit_batches(images, batch_size)]
        return np.concatenate(out) if out else np.zeros(0)


def get_scorer(weights: str | os.PathLike | None = None, device: str | torch.device = "cpu", **kwargs):
    """A QualiCLIP scorer: the user's weights first, then pyiqa when importable, else unavailable."""
    if resolve_weights(weights) is not None:
        return load_qualiclip(weights, device=device, **kwargs)
    if importlib.util.find_spec("pyiqa") is not None:
        return PyiqaQualiCLIP(device)
    raise QualiCLIPUnavailable(unavailable_reason())


def qualiclip_scores(images, weights: str | os.PathLike | None = None, device: str = "cpu",
                     batch_size: int = 16, progress: bool = False) -> np.ndarray:
    """QualiCLIP quality (N,) in [0, 1] of uint8 (N, H, W, 3) images or [-1, 1] tensors."""
    return get_scorer(weights, device).score(images, batch_size, progress)
