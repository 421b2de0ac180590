"""The local ridge regression layer: the first half of RegGAN (from Masked Regression).

Every output pixel ``i`` of channel ``c`` is a linear function of the ``r x r`` neighbourhood
``N_r(i)`` of pixel ``i`` in the input, plus a bias, with its OWN weights per pixel (a locally
connected layer, not a convolution)::

    y_ci = sum_{q in N_r(i)} w_ciq x_q + b_ci

Per pixel, the weights are the closed-form ridge solution over the N training pairs. With
``a_n = [patch_n, 1]`` (the patch followed by a 1 for the bias) and ``R = diag(1, ..., 1, rb)``
(``rb = 1`` when the bias is regularised, ``0`` when not)::

    G_i = sum_n a_n a_n^T + lam R,   h_i = sum_n a_n y_n,   [w_i, b_i] = G_i^-1 h_i

Shapes: images are (B, C, H, W). A patch is ``D = r*r`` values of its own channel
(``cross_channel=False``) or ``D = C*r*r`` values of all channels (``cross_channel=True``),
ordered (input channel, row, column) as :func:`torch.nn.functional.unfold` lays them out.
Weights are stored as ``weight`` (C, H, W, D) and ``bias`` (C, H, W): ``weight[c, y, x, D//2]``
(per-channel mode) is the centre tap of output pixel (y, x). Border pixels see the padded
image: ``padding="zeros"`` pads with 0 (mid-grey in [-1, 1] images), ``"replicate"`` repeats
the edge pixel; either way the border pixels are fitted like the others.

``prior="identity"`` (ours, not in Masked Regression) regularises toward the copy map instead of
toward zero: the layer is fitted to the change ``y - x`` and the centre tap gets +1 back, i.e. it
minimises ``sum_n (w.a_n - y_n)^2 + lam |w - w0|^2`` with w0 the copy map. With few training
faces, or far from them, the output then falls back to the input face, not to the mean face.

Defaults follow Masked Regression (Khan, Akram, Mahmood et al.): r = 3, lambda = 0.4 with the
bias regularised, 128 x 128 RGB, one weight set per colour channel.
"""
from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .errors import ConfigError

log = logging.getLogger(__name__)

FORMAT_NAME = "reggan-local-ridge"
FORMAT_VERSION = 1
PADDINGS = ("zeros", "replicate")
PRIORS = ("zero", "identity")


@dataclass(frozen=True)
class RidgeConfig:
    """Hyper-parameters of :class:`LocalRidge` (defaults: Masked Regression)."""

    r: int = 3                   # receptive field, odd (Masked Regression: 3)
    lam: float = 0.4             # ridge lambda (Masked Regression: 0.4)
    regularize_bias: bool = True  # Masked Regression regularises the bias with the weights
    cross_channel: bool = False  # False: each output channel from its own input channel
    padding: str = "zeros"       # border handling: "zeros" or "replicate"
    prior: str = "zero"          # what lambda pulls the weights toward: "zero" (Masked Regression) or
                                 # "identity" (copy the input: the layer regresses the CHANGE y - x; ours)
    channels: int = 3            # C (RGB)
    size: int = 128              # H = W (the canonical aligned crop)

    def __post_init__(self) -> None:
        if isinstance(self.r, bool) or not isinstance(self.r, int) or self.r < 1 or self.r % 2 == 0:
            raise ConfigError(f"RidgeConfig.r={self.r!r} must be a positive odd integer (e.g. 3)")
        if not (isinstance(self.lam, (int, float)) and float(self.lam) >= 0.0) or self.lam != self.lam:
            raise ConfigError(f"RidgeConfig.lam={self.lam!r} must be a number >= 0 (e.g. 0.4)")
        if self.padding not in PADDINGS:
            raise ConfigError(f"RidgeConfig.padding={self.padding!r} is unknown; use one of {PADDINGS}")
        if self.prior not in PRIORS:
            raise ConfigError(f"RidgeConfig.prior={self.prior!r} is unknown; use one of {PRIORS}")
        if not isinstance(self.channels, int) or self.channels < 1:
            raise ConfigError(f"RidgeConfig.channels={self.channels!r} must be a positive integer")
        if not isinstance(self.size, int) or self.size < 1:
            raise ConfigError(f"RidgeConfig.size={self.size!r} must be a positive integer")
        if self.padding == "replicate" and self.r // 2 >= self.size:
            raise ConfigError(f"RidgeConfig.r={self.r} is too large for size={self.size}; use r < 2*size")

    @property
    def taps(self) -> int:
        """D, the number of inputs per output pixel (without the bias)."""
        return self.r * self.r * (self.channels if self.cross_channel else 1)

    @property
    def pixels(self) -> int:
        return self.size * self.size


def pad_image(x: Tensor, r: int, padding: str) -> Tensor:
    """Pad (B, C, H, W) by r // 2 on each side: zeros or the replicated edge."""
    h = r // 2
    if h == 0:
        return x
    if padding == "zeros":
        return F.pad(x, (h, h, h, h))
    return F.pad(x, (h, h, h, h), mode="replicate")


def extract_patches(x: Tensor, r: int, padding: str = "zeros") -> Tensor:
    """Every pixel's r x r neighbourhood: (B, C, H, W) -> (B, C, r*r, H*W).

    ``out[b, c, k, y*W + x]`` is input channel c at (y + k // r - r//2, x + k % r - r//2).
    """
    b, c, hgt, wid = x.shape
    cols = F.unfold(pad_image(x, r, padding), r)  # (B, C*r*r, H*W)
    return cols.view(b, c, r * r, hgt * wid)


def _check_images(x: Tensor, config: RidgeConfig, what: str) -> None:
    want = (config.channels, config.size, config.size)
    if not isinstance(x, Tensor) or x.ndim != 4 or tuple(x.shape[1:]) != want:
        got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ConfigError(f"{what} has shape {got}; LocalRidge expects (B, {want[0]}, {want[1]}, {want[2]})")


BACKENDS = ("auto", "numba", "torch")


def resolve_backend(backend: str, device: torch.device) -> str:
    """``"auto"``: the fused numba kernels on CPU when numba imports, else the torch tiled GEMM."""
    from . import ridge_kernels

    if backend not in BACKENDS:
        raise ConfigError(f"backend={backend!r} is unknown; use one of {BACKENDS}")
    if backend == "auto":
        return "numba" if device.type == "cpu" and ridge_kernels.available() else "torch"
    if backend == "numba" and device.type != "cpu":
        raise ConfigError(f"backend='numba' runs on the CPU, not on {device}; use backend='torch' (or 'auto')")
    if backend == "numba" and not ridge_kernels.available():
        raise ConfigError("backend='numba' needs numba, which does not import; pip install numba, "
                          "or use backend='torch'")
    return backend


class RidgeAccumulator:
    """Streams training pairs into every pixel's Gram matrix and right-hand side (float64).

    Memory is set by the image size and the batch, never by N. Two backends compute the
    same sums (tests check both against direct sums and scikit-learn):

    * ``"numba"`` (CPU; the default there): fused kernels over *correlation images*, which
      share the products of neighbouring pixels (see :mod:`reggan_core.ridge_kernels`);
    * ``"torch"`` (any device; the default off the CPU or without numba): the tiled GEMM below.

    How the torch backend works (tiled GEMM). Computing ``sum_n a_n a_n^T`` pixel by pixel is a
    batch of tiny (D+1) x N x (D+1) products that run far below the machine's matmul rate.
    Instead the image is cut into ``tile x tile`` blocks; for each block we stack, per sample,
    the values of its ``(tile + r - 1)^2`` halo (every input any of its pixels reads), a 1, and
    its targets into a vector z_n, and accumulate ``T = sum_n z_n [halo_n, 1]^T`` with one
    batched matmul (N is the inner dimension, so the products are big enough to run near the
    matmul rate). Every pixel's Gram matrix and right-hand side are sub-blocks of its tile's T,
    gathered once in :meth:`gram_rhs`; for r = 3 and 4 x 4 tiles this costs about 1.1x the flops
    of the direct per-pixel sums. Tile rows are processed in bands of about ``band_bytes`` of z,
    which bounds memory. Small bands (4 MB, the default on one thread) keep z in cache; but
    every band is a few parallel regions, and on a busy multi-core machine many regions cost
    more than the cache saves, so with several threads the default is 64 MB.

    Groups: per-channel mode has C groups (one per channel) with one target each;
    cross-channel mode has one group whose design holds all C channels and C targets.
    """

    def __init__(self, config: RidgeConfig, device: torch.device | str | None = None,
                 tile: int = 4, band_bytes: int | None = None, backend: str = "auto"):
        if tile < 1:
            raise ConfigError(f"tile={tile} must be >= 1")
        self.config = config
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.backend = resolve_backend(backend, self.device)
        self.n = 0
        self._sums = None
        if self.backend == "numba":
            from .ridge_kernels import NumbaSums

            self._sums = NumbaSums(config.r, config.channels, config.size, config.cross_channel,
                                   threads=torch.get_num_threads())
            return
        if band_bytes is None:   # see the class docstring
            band_bytes = (4 if torch.get_num_threads() == 1 else 64) * 2**20
        self.tile, self.band_bytes = tile, band_bytes
        cfg, t = config, tile
        c = cfg.channels
        self.groups = 1 if cfg.cross_channel else c          # G
        self.group_in = c if cfg.cross_channel else 1        # input channels per group
        self.targets = c if cfg.cross_channel else 1         # T, outputs per group
        self.halo = t + cfg.r - 1
        self.n_tiles = -(-cfg.size // t)                     # tiles per side (last one may stick out)
        self.nx = self.group_in * self.halo ** 2             # halo values per tile
        self.nz = self.nx + 1 + self.targets * t * t         # + the 1 + the targets
        self.acc = torch.zeros(self.n_tiles, self.groups, self.n_tiles, self.nz, self.nx + 1,
                               dtype=torch.float64, device=self.device)
        self._buffers: dict[str, Tensor] = {}
        self._width = 0

    def update(self, x: Tensor, y: Tensor) -> None:
        """Add a batch of pairs x -> y, each (B, C, H, W)."""
        cfg = self.config
        _check_images(x, cfg, "input batch")
        _check_images(y, cfg, "target batch")
        if x.shape[0] != y.shape[0]:
            raise ConfigError(f"input batch has {x.shape[0]} images but target batch {y.shape[0]}; pair them 1:1")
        b, c, s, _ = x.shape
        if b == 0:
            return
        if cfg.prior == "identity":  # regress the change: the penalty then pulls toward the copy map
            y = y.to(torch.promote_types(x.dtype, y.dtype)) - x
        if self._sums is not None:
            # one float dtype for both (float64 if either is); products are summed in float64
            work = torch.float64 if torch.float64 in (x.dtype, y.dtype) else torch.float32
            as_np = lambda t: t.detach().to("cpu", work).contiguous().numpy()  # noqa: E731
            self._sums.update(as_np(x), as_np(y), replicate=cfg.padding == "replicate")
            self.n += b
            return
        x, y = x.to(self.device), y.to(self.device)
        t, hs, nt, g, gi, tg = self.tile, self.halo, self.n_tiles, self.groups, self.group_in, self.targets
        # samples last, so that each tile's values form an (nz, B) matrix with unit stride in B.
        # float32 inputs are transposed in float32 (twice as fast) and widened when gathered.
        work = torch.float64 if torch.float64 in (x.dtype, y.dtype) else torch.float32
        extra = nt * t - s                                   # zero rows/columns so tiles cover the image
        xp = pad_image(x.to(work), cfg.r, cfg.padding)
        yp = y.to(work)
        if extra:
            xp, yp = F.pad(xp, (0, extra, 0, extra)), F.pad(yp, (0, extra, 0, extra))
        xt = self._buffer("x", (c, xp.shape[2], xp.shape[3]), b, work)
        xt.flatten(0, 2).copy_(xp.reshape(b, -1).t())         # (B, C*H'*W') -> (C*H'*W', B)
        yt = self._buffer("y", (c, yp.shape[2], yp.shape[3]), b, work)
        yt.flatten(0, 2).copy_(yp.reshape(b, -1).t())
        sx, sy = xt.stride(), yt.stride()
        self._width = max(self._width, b)                     # the largest batch so far sets the bands
        rows = max(1, min(nt, self.band_bytes // (g * nt * self.nz * self._width * 8)))
        for r0 in range(0, nt, rows):
            nr = min(rows, nt - r0)
            z = self._buffer("z", (rows, g, nt, self.nz), b)[:nr]
            # halo of tile (i, j): padded rows i*t .. i*t+hs-1, columns j*t .. j*t+hs-1
            halo = xt.as_strided((nr, g, nt, gi, hs, hs, b),
                                 (t * sx[1], sx[0], t * sx[2], sx[0], sx[1], sx[2], 1),
                                 storage_offset=r0 * t * sx[1])
            z[..., :self.nx, :].view(nr, g, nt, gi, hs, hs, b).copy_(halo)
            tgt = yt.as_strided((nr, g, nt, tg, t, t, b),
                                (t * sy[1], sy[0], t * sy[2], sy[0], sy[1], sy[2], 1),
                                storage_offset=r0 * t * sy[1])
            z[..., self.nx + 1:, :].view(nr, g, nt, tg, t, t, b).copy_(tgt)
            zf = z.view(-1, self.nz, b)
            self.acc[r0:r0 + nr].view(-1, self.nz, self.nx + 1).baddbmm_(zf, zf[:, :self.nx + 1].transpose(1, 2))
        self.n += b

    def _buffer(self, name: str, shape: tuple[int, ...], b: int, dtype: torch.dtype = torch.float64) -> Tensor:
        """A work buffer (*shape, b) kept between batches; a smaller last batch uses a view of it.

        The z buffer's bias row is set to 1 once.
        """
        buf = self._buffers.get(name)
        if buf is None or tuple(buf.shape[:-1]) != shape or buf.shape[-1] < b or buf.dtype != dtype:
            buf = torch.empty(*shape, b, dtype=dtype, device=self.device)
            if name == "z":
                buf[..., self.nx, :] = 1.0
            self._buffers[name] = buf
        return buf[..., :b]

    def _indices(self) -> tuple[Tensor, Tensor]:
        """Where pixel (a, b) of a tile finds its taps (+ bias) and its targets in the tile's z."""
        cfg, t, hs = self.config, self.tile, self.halo
        a = torch.arange(t).view(t, 1, 1, 1, 1)
        b = torch.arange(t).view(1, t, 1, 1, 1)
        cin = torch.arange(self.group_in).view(1, 1, -1, 1, 1)
        ky = torch.arange(cfg.r).view(1, 1, 1, -1, 1)
        kx = torch.arange(cfg.r).view(1, 1, 1, 1, -1)
        taps = (cin * hs * hs + (a + ky) * hs + (b + kx)).reshape(t, t, -1)            # (t, t, D)
        taps = torch.cat([taps, torch.full((t, t, 1), self.nx)], -1)                   # + bias
        out = torch.arange(self.targets).view(1, 1, -1)
        tgt = self.nx + 1 + out * t * t + (a.view(t, 1, 1) * t + b.view(1, t, 1))     # (t, t, T)
        return taps.to(self.device), tgt.to(self.device)

    def gram_rhs(self) -> tuple[Tensor, Tensor]:
        """Every pixel's Gram matrix (G*H*W, D+1, D+1) and right-hand side (G*H*W, D+1, T), float64.

        One gather from the tile sums, straight into pixel order (pixel y lies in tile row
        y // tile at offset y % tile; the same for x).
        """
        if self._sums is not None:
            gram, rhs = self._sums.gram_rhs()
            d1 = self.config.taps + 1
            return torch.from_numpy(gram).view(-1, d1, d1), torch.from_numpy(rhs).view(-1, d1, rhs.shape[-1])
        cfg, t, g, s = self.config, self.tile, self.groups, self.config.size
        taps, tgt = self._indices()                                  # (t, t, D+1), (t, t, T)
        pos = torch.arange(s, device=self.device)
        tile_y = (pos // t).view(1, s, 1, 1, 1)
        tile_x = (pos // t).view(1, 1, s, 1, 1)
        grp = torch.arange(g, device=self.device).view(g, 1, 1, 1, 1)
        off = pos % t
        k = taps[off.view(s, 1), off.view(1, s)].unsqueeze(0)        # (1, H, W, D+1)
        o = tgt[off.view(s, 1), off.view(1, s)].unsqueeze(0)         # (1, H, W, T)
        sy, sg, sx, sr, sc = self.acc.stride()                       # flat offsets into the tile sums
        base = tile_y * sy + grp * sg + tile_x * sx                  # (G, H, W, 1, 1)
        gram = self.acc.take(base + k.unsqueeze(-1) * sr + k.unsqueeze(-2) * sc)   # (G, H, W, D+1, D+1)
        rhs = self.acc.take(base + o.unsqueeze(-2) * sr + k.unsqueeze(-1) * sc)    # (G, H, W, D+1, T)
        d1 = cfg.taps + 1
        return gram.reshape(-1, d1, d1), rhs.reshape(-1, d1, self.targets)

    def solve(self, lam: float | None = None) -> tuple[Tensor, Tensor]:
        """Solve every pixel's ridge system at once: weight (C, H, W, D), bias (C, H, W), float64.

        ``lam`` overrides the config's lambda: the sums do not depend on it, so a whole
        lambda path costs one pass over the data. Raises :class:`ConfigError` naming lambda
        and N when a system is not positive definite.
        """
        cfg = self.config if lam is None else replace(self.config, lam=lam)
        d = cfg.taps
        if self.n == 0:
            raise ConfigError("LocalRidge.fit got no training pairs; pass (X, Y) with at least one pair")
        if self._sums is not None:
            weight, bias, bad = self._sums.solve(cfg.lam, cfg.regularize_bias)
            self._check_positive_definite(torch.from_numpy(bad).view(-1), cfg)
            return self._add_prior(torch.from_numpy(weight), cfg), torch.from_numpy(bias)
        self._buffers.clear()                                   # batch work buffers are done
        gram, rhs = self.gram_rhs()
        ridge = gram.diagonal(dim1=-2, dim2=-1)                 # + lam R, in place
        ridge[:, :d] += cfg.lam
        if cfg.regularize_bias:
            ridge[:, d] += cfg.lam
        chol, info = torch.linalg.cholesky_ex(gram)
        bad = info != 0
        if not bool(bad.any()):
            # a singular system can slip through Cholesky with a tiny positive pivot
            pivots = torch.diagonal(chol, dim1=-2, dim2=-1) ** 2
            scale = torch.diagonal(gram, dim1=-2, dim2=-1).amax(-1, keepdim=True).clamp_min(1e-300)
            bad = (pivots <= scale * (d + 1) * torch.finfo(torch.float64).eps).any(-1)
        self._check_positive_definite(bad, cfg)
        sol = torch.cholesky_solve(rhs, chol)                                  # (G*H*W, D+1, T)
        c, s = cfg.channels, cfg.size
        if cfg.cross_channel:
            sol = sol.view(s, s, d + 1, c).permute(3, 0, 1, 2)                 # (C, H, W, D+1)
        else:
            sol = sol.view(c, s, s, d + 1)
        return self._add_prior(sol[..., :d].contiguous(), cfg), sol[..., d].contiguous()

    @staticmethod
    def _add_prior(weight: Tensor, cfg: RidgeConfig) -> Tensor:
        """With ``prior="identity"`` the solve gave the change's weights; add the copy map back."""
        return weight + identity_weights(cfg).to(weight) if cfg.prior == "identity" else weight


    def _check_positive_definite(self, bad: Tensor, cfg: RidgeConfig) -> None:
        """One-line error naming lambda and N when any pixel's system (mask ``bad``, G*H*W) failed."""
        if not bool(bad.any()):
            return
        h, s = cfg.r // 2, cfg.size
        interior = bad.view(-1, s, s)[:, h:s - h, h:s - h]
        fix = (f"lambda > 0 or more training pairs (N > {cfg.taps} for lambda = 0)" if bool(interior.any())
               else "lambda > 0 (border pixels read padding, so their taps repeat or are zero)")
        raise ConfigError(f"ridge system is not positive definite at {int(bad.sum())} pixel(s) with "
                          f"lambda={cfg.lam} and N={self.n} pairs; use {fix}")


def iter_batches(data: Any, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
    """Yield (X, Y) batches from (X, Y) tensors, a dataset of (x, y) items or an iterable of batches.

    Items may carry extra fields (e.g. a label); only the first two are used. Single
    (C, H, W) items are stacked into batches of ``batch_size``.
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size={batch_size} must be >= 1")
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, Tensor) for t in data) \
            and data[0].ndim == 4:
        x, y = data
        if x.shape[0] != y.shape[0]:
            raise ConfigError(f"X has {x.shape[0]} images but Y {y.shape[0]}; pass paired tensors")
        for i in range(0, x.shape[0], batch_size):
            yield x[i:i + batch_size], y[i:i + batch_size]
        return
    if hasattr(data, "__len__") and hasattr(data, "__getitem__"):
        items: Iterable = (data[i] for i in range(len(data)))
    else:
        items = iter(data)
    xs: list[Tensor] = []
    ys: list[Tensor] = []
    for item in items:
        if not isinstance(item, (tuple, list)) or len(item) < 2:
            raise ConfigError(f"fit data yielded {type(item).__name__}; expected (x, y) pairs or (X, Y) batches")
        x, y = item[0], item[1]
        if x.ndim == 4:
            for i in range(0, x.shape[0], batch_size):
                yield x[i:i + batch_size], y[i:i + batch_size]
            continue
        xs.append(x)
        ys.append(y)
        if len(xs) == batch_size:
            yield torch.stack(xs), torch.stack(ys)
            xs, ys = [], []
    if xs:
        yield torch.stack(xs), torch.stack(ys)


def identity_weights(config: RidgeConfig) -> Tensor:
    """(C, H, W, D) weights of the copy map: centre tap of each pixel's own channel = 1."""
    c, s, d = config.channels, config.size, config.taps
    weight = torch.zeros(c, s, s, d)
    centre = (config.r * config.r) // 2
    for ch in range(c):
        weight[ch, :, :, (ch * config.r * config.r if config.cross_channel else 0) + centre] = 1.0
    return weight


def gaussian_blur(image: Tensor, sigma: float) -> Tensor:
    """(H, W) image blurred by a Gaussian of ``sigma`` px, edges replicated (OpenCV, as in ``photo``).

    The kernel reaches 3 sigma (scipy's ``gaussian_filter(truncate=3)``); sigma 0 = unchanged.
    """
    if sigma <= 0:
        return image
    import cv2

    size = 2 * max(1, int(3 * sigma + 0.5)) + 1
    out = cv2.GaussianBlur(image.detach().cpu().double().numpy(), (size, size), sigma,
                           borderType=cv2.BORDER_REPLICATE)
    return torch.from_numpy(out).to(image.device, image.dtype)


def change_mask(x: Tensor, y: Tensor, low: float = 0.5, high: float = 0.95, sigma: float = 3.0) -> Tensor:
    """(H, W) weights in [0, 1]: where a target's training pairs (x -> y) change the face.

    The mean absolute change over pairs and channels, blurred (``sigma`` px), is mapped to 0 below
    its ``low`` quantile, 1 above its ``high`` quantile and linearly between. Used with
    :meth:`LocalRidge.restrict_change` it keeps the regions an expression leaves alone (hair,
    background, often the nose or forehead) exactly as the input, instead of the fitted map's
    blur and colour noise there (ours).
    """
    if x.shape != y.shape or x.ndim != 4:
        raise ConfigError(f"change_mask needs two (N, C, H, W) batches of one shape, got {tuple(x.shape)}, "
                          f"{tuple(y.shape)}")
    if not 0 <= low < high <= 1:
        raise ConfigError(f"change_mask quantiles low={low}, high={high}: need 0 <= low < high <= 1")
    change = gaussian_blur((y.double() - x.double()).abs().mean((0, 1)), sigma)
    lo, hi = torch.quantile(change.flatten(), torch.tensor([low, high], dtype=change.dtype, device=change.device))
    if hi <= lo:   # (nearly) no change anywhere: keep the whole fitted map rather than divide by zero
        return torch.ones_like(change, dtype=torch.float32)
    return ((change - lo) / (hi - lo)).clamp(0, 1).float()


class LocalRidge(nn.Module):
    """Locally connected r x r layer with per-pixel weights, fitted by closed-form ridge.

    ``forward`` maps (B, C, H, W) -> (B, C, H, W) on any device and is differentiable, so
    the closed-form fit can be the starting point of end-to-end gradient training (RegGAN
    fine-tunes it with the refiner). ``fit`` streams pairs and solves every pixel at once.
    """

    def __init__(self, config: RidgeConfig = RidgeConfig()):
        super().__init__()
        if not isinstance(config, RidgeConfig):
            raise ConfigError(f"LocalRidge needs a RidgeConfig, got {type(config).__name__}")
        self.config = config
        # identity map at start: centre tap 1 (own channel), everything else 0
        self.weight = nn.Parameter(identity_weights(config))
        self.bias = nn.Parameter(torch.zeros(config.channels, config.size, config.size))
        self.register_buffer("n_fitted", torch.zeros((), dtype=torch.long))

    def extra_repr(self) -> str:
        return ", ".join(f"{f.name}={getattr(self.config, f.name)!r}" for f in fields(self.config))

    def forward(self, x: Tensor) -> Tensor:
        """y[b, c, i] = sum_k weight[c, i, k] * patch[b, k, i] + bias[c, i].

        With gradients (training) this gathers the patches with ``unfold``; without
        (inference) it adds the D shifted copies of the padded input, each times a
        tap-major copy of the weights, which is several times faster on a CPU (see
        :meth:`tap_major_weight`). Both give the same numbers.
        """
        _check_images(x, self.config, "LocalRidge input")
        x = x.to(self.weight.dtype)
        if torch.is_grad_enabled() and (self.weight.requires_grad or self.bias.requires_grad or x.requires_grad):
            return self._forward_unfold(x)
        return self._forward_shift(x)

    def _forward_unfold(self, x: Tensor) -> Tensor:
        cfg = self.config
        b, c, s, _ = x.shape
        cols = F.unfold(pad_image(x, cfg.r, cfg.padding), cfg.r)            # (B, C*r*r, P)
        w = self.weight.view(c, s * s, cfg.taps)
        if cfg.cross_channel:
            out = torch.einsum("bdp,cpd->bcp", cols, w)
        else:
            cols = cols.view(b, c, cfg.r * cfg.r, s * s)
            out = (cols * w.permute(0, 2, 1).unsqueeze(0)).sum(2)
        return out.view(b, c, s, s) + self.bias

    def _forward_shift(self, x: Tensor) -> Tensor:
        cfg = self.config
        b, c, s, _ = x.shape
        w = self.tap_major_weight()                                          # (C, D, H, W)
        xp = pad_image(x, cfg.r, cfg.padding)
        out = self.bias.detach().unsqueeze(0).repeat(b, 1, 1, 1)
        rr = cfg.r * cfg.r
        for k in range(cfg.taps):
            ch, rest = divmod(k, rr)
            dy, dx = divmod(rest, cfg.r)
            src = xp[:, ch:ch + 1] if cfg.cross_channel else xp
            out.addcmul_(w[:, k], src[:, :, dy:dy + s, dx:dx + s])
        return out

    def tap_major_weight(self) -> Tensor:
        """``weight`` laid out (C, D, H, W), contiguous: what the inference path multiplies.

        ``weight`` stays (C, H, W, D) (one pixel's taps side by side, as the closed-form solve
        writes them); the copy is made once and re-made whenever the weights change
        (in-place update, ``load_state_dict``, ``.to``). It costs C*D*H*W floats (9.6 MB for
        one 7 x 7 RGB layer at 128 px), only for layers that are used without gradients.
        """
        w = self.weight
        if w.is_inference():   # made under inference_mode: no version counter to key on
            return w.detach().permute(0, 3, 1, 2).contiguous()
        key = (w._version, w.data_ptr(), w.device, w.dtype)
        if getattr(self, "_tap_major_key", None) != key:
            self._tap_major = w.detach().permute(0, 3, 1, 2).contiguous()
            self._tap_major_key = key
        return self._tap_major

    @torch.no_grad()
    def fit(self, data: Any, batch_size: int = 64, progress: bool = False, backend: str = "auto") -> "LocalRidge":
        """Closed-form ridge fit on paired images; returns self.

        ``data``: (X, Y) tensors (N, C, H, W), a dataset whose items are (x, y, ...), or an
        iterable of (X, Y) batches. Sums accumulate in float64 on the layer's device.
        ``backend``: ``"auto"`` (numba kernels on CPU, torch elsewhere), ``"numba"`` or
        ``"torch"`` (see :class:`RidgeAccumulator`); all give the same solution.
        """
        device = self.weight.device
        acc = RidgeAccumulator(self.config, device=device if device.type != "mps" else "cpu", backend=backend)
        batches = iter_batches(data, batch_size)
        if progress:
            from tqdm.auto import tqdm

            batches = tqdm(batches, desc="ridge fit", unit="batch")
        for x, y in batches:
            acc.update(x, y)
        self._assign(acc)
        log.info("fitted LocalRidge on %d pairs (r=%d, lambda=%g)", acc.n, self.config.r, self.config.lam)
        return self

    @torch.no_grad()
    def _assign(self, acc: RidgeAccumulator) -> None:
        weight, bias = acc.solve(self.config.lam)
        self.weight.copy_(weight.to(self.weight))
        self.bias.copy_(bias.to(self.bias))
        self.n_fitted.fill_(acc.n)

    @torch.no_grad()
    def restrict_change(self, mask: Tensor | None = None, gain: float = 1.0) -> "LocalRidge":
        """Fold ``y = x + gain * mask * (f(x) - x)`` into the weights; returns self.

        ``mask`` (H, W) in [0, 1] (None = 1 everywhere), e.g. from :func:`change_mask`. Where it is 0
        the layer becomes the copy map; ``gain`` > 1 exaggerates the fitted change. Exact, so the
        layer keeps its format, size and speed. Needs a layer that sees its own channel at the
        centre tap (every :class:`RidgeConfig`).
        """
        s = self.config.size
        m = torch.ones(s, s) if mask is None else mask.detach().to("cpu", torch.float64)
        if m.shape != (s, s) or not bool(((m >= 0) & (m <= 1)).all()):
            raise ConfigError(f"restrict_change needs a ({s}, {s}) mask with values in [0, 1], got {tuple(m.shape)}")
        if not gain > 0:
            raise ConfigError(f"restrict_change gain={gain!r}: must be > 0")
        scale = (gain * m).to(self.weight)
        eye = identity_weights(self.config).to(self.weight)
        self.weight.copy_(eye + scale[None, :, :, None] * (self.weight - eye))
        self.bias.mul_(scale[None])
        return self

    @classmethod
    def from_accumulator(cls, acc: RidgeAccumulator, lam: float | None = None) -> "LocalRidge":
        """A layer solved from already accumulated sums, optionally with another lambda (a lambda path)."""
        config = acc.config if lam is None else replace(acc.config, lam=lam)
        model = cls(config).to(acc.device)
        model._assign(acc)
        return model

    def ridge_penalty(self) -> Tensor:
        """lam * (|w - w0|^2 + |b|^2 if the bias is regularised), w0 = 0 or the copy map (``prior``)."""
        w = self.weight
        if self.config.prior == "identity":
            w = w - identity_weights(self.config).to(w)
        pen = (w ** 2).sum()
        if self.config.regularize_bias:
            pen = pen + (self.bias ** 2).sum()
        return self.config.lam * pen

    def ridge_objective(self, x: Tensor, y: Tensor) -> Tensor:
        """Sum over pixels of the per-pixel ridge losses: |f(x) - y|^2 + penalty (minimised by ``fit``)."""
        return ((self(x) - y.to(self.weight.dtype)) ** 2).sum() + self.ridge_penalty()

    def save(self, path: str | os.PathLike) -> None:
        """Write weights, bias and every hyper-parameter to one file (atomically)."""
        from .imageio import atomic_path

        state = {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "config": asdict(self.config),
            "weight": self.weight.detach().cpu(),
            "bias": self.bias.detach().cpu(),
            "n_fitted": int(self.n_fitted),
        }
        with atomic_path(path) as tmp:
            torch.save(state, tmp)

    @classmethod
    def load(cls, path: str | os.PathLike, map_location: str | torch.device = "cpu",
             expect: RidgeConfig | None = None) -> "LocalRidge":
        """Read a file written by :meth:`save` (``torch.load(weights_only=True)``).

        Files of another format version, inconsistent shapes, or (with ``expect``) another
        configuration raise a one-line :class:`ConfigError`.
        """
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"ridge weights file {path} does not exist; fit a LocalRidge and save() it first")
        try:
            state = torch.load(path, map_location=map_location, weights_only=True)
        except Exception as exc:  # pickle / zip errors of every kind
            raise ConfigError(f"ridge weights file {path} is not readable ({exc.__class__.__name__}); "
                              "re-save it with LocalRidge.save") from None
        if not isinstance(state, dict) or state.get("format") != FORMAT_NAME:
            raise ConfigError(f"file {path} is not a LocalRidge file; write it with LocalRidge.save")
        if state.get("version") != FORMAT_VERSION:
            raise ConfigError(f"ridge weights file {path} has format version {state.get('version')!r}, this code "
                              f"reads version {FORMAT_VERSION}; refit and re-save with this version")
        try:
            config = RidgeConfig(**state["config"])
        except TypeError:
            raise ConfigError(f"ridge weights file {path} has unknown config keys "
                              f"{sorted(state['config'])}; refit and re-save it") from None
        if expect is not None and expect != config:
            raise ConfigError(f"ridge weights file {path} holds {config}, expected {expect}; "
                              "load the matching file or refit")
        model = cls(config)
        for name in ("weight", "bias"):
            want, got = tuple(getattr(model, name).shape), tuple(state[name].shape)
            if want != got:
                raise ConfigError(f"ridge weights file {path} has {name} of shape {got}, expected {want} "
                                  f"for {config}; the file is damaged, refit and re-save it")
        with torch.no_grad():
            model.weight.copy_(state["weight"])
            model.bias.copy_(state["bias"])
            model.n_fitted.fill_(int(state.get("n_fitted", 0)))
        return model.to(map_location)
