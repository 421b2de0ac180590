"""Fused CPU kernels (numba) for the closed-form local ridge fit: the ``"numba"`` backend.

Why a second backend. The Gram matrix of pixel i, ``G_i[k, l] = sum_n x_n[i+k] x_n[i+l]``, only
depends on products of pixels at most ``r - 1`` apart, and neighbouring pixels share them:
``G_i[k, l] = C_{l-k}[i+k]`` with the *correlation images* ``C_d[p] = sum_n x_n[p] x_n[p+d]``.
For r = 3 a pixel needs 13 such images (half of the 5 x 5 offsets, the rest by symmetry),
9 target correlations and 2 plain sums: 24 multiply-adds per pixel and sample, where forming every
pixel's Gram matrix and right-hand side separately costs 2 (D+1)^2 + 2 (D+1) = 220 flops.
Those products are not one big matrix product, so plain torch would run them as memory-bound
elementwise passes; here they are one fused loop that keeps each image row's accumulators in
cache. A second kernel gathers each pixel's (D+1) x (D+1) system from the images, adds lambda,
factorises it (Cholesky) and solves it, all pixels in parallel, without materialising the
49k Gram matrices that the torch backend gathers and hands to LAPACK one by one.

Layout. Inputs ``x`` and targets ``y`` are (B, C, H, W), float32 or float64, padded on the fly
(zeros or replicate); every product is formed and summed in float64 (a product of two float32
values is exact in float64). The sums live in float64 arrays (see :class:`NumbaSums`):

* ``corr[e, p]``  C_d over the padded grid for each entry e = (c1, c2, dy, dx) of :func:`tables`;
* ``first[c, p]`` sum_n x_n[c, p] over the padded grid (the bias row of the Gram matrix);
* ``rhs[g, t, a, i]`` sum_n y_n[oc, i] x_n[tap a of pixel i] (target t of group g is channel oc);
* ``ysum[c, i]``  sum_n y_n[c, i];

each image stored flat, rows with zero margins (see :func:`geometry`).

The torch backend (:class:`reggan_core.regression.RidgeAccumulator` with ``backend="torch"``) is
the reference; tests check that both give the same Gram matrices and both match scikit-learn.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

try:  # numba is a dependency, but the torch backend keeps working without it
    import numba
    from numba import njit, prange
except ImportError:  # pragma: no cover - exercised only where numba is missing
    numba = None


def available() -> bool:
    """True when numba imports (the ``"numba"`` backend can run)."""
    return numba is not None


BAND_ROWS = 5   # padded rows per parallel task of the accumulation (130 rows: 26 tasks)
_LAUNCH = threading.Lock()


def _launch(kernel, threads: int, *args) -> None:
    """Run a parallel kernel on ``threads`` threads, one launch at a time, leaving torch as it was.

    numba's "workqueue" threading layer (its fallback where neither OpenMP nor TBB is found)
    aborts when two Python threads launch at once, so launches are serialised (costs nothing in
    practice). numba's OpenMP layer shares torch's OpenMP runtime, and its first launch set the
    thread count to the number of cores: ``torch.set_num_threads(1)`` silently became 2 and
    training runs stopped being reproducible (found by the resume-after-kill test), so torch's
    count is restored after every launch.
    """
    import torch

    with _LAUNCH:
        torch_threads = torch.get_num_threads()
        try:
            numba.set_num_threads(threads)
            kernel(*args)
        finally:
            if torch.get_num_threads() != torch_threads:
                torch.set_num_threads(torch_threads)


@dataclass(frozen=True)
class Tables:
    """Index tables that tell the kernels where each tap, product and target lives."""

    ent: np.ndarray       # (E, 4) correlation entries (c1, c2, dy, dx)
    tap_c: np.ndarray     # (G, D) input channel of tap a in group g
    tap_dy: np.ndarray    # (D,) row of tap a inside the r x r window (0 .. r-1)
    tap_dx: np.ndarray    # (D,) column of tap a inside the window
    oc: np.ndarray        # (G, T) output channel of target t in group g
    tab_j: np.ndarray     # (G, D, D) entry e holding G[a, b] (a <= b) ...
    tab_base: np.ndarray  # (G, D, D) ... read at the position of tap tab_base (a or b)


def tables(r: int, channels: int, cross_channel: bool) -> Tables:
    """Build the tables for an r x r window over ``channels`` channels.

    Entries: for every ordered channel pair (c1, c2) (only c1 = c2 per channel), the offsets of
    one half of the (2r-1)^2 window: dy > 0, or dy = 0 and dx >= 0 (offset 0 once per unordered
    pair). The Gram entry of taps a (channel ca, position pa) and b (cb, pb) is then C_{pb-pa}
    of (ca, cb) read at pa, or C_{pa-pb} of (cb, ca) read at pb, whichever is stored. Since
    dy >= 0 everywhere, a padded row's products only reach the r - 1 rows below it.
    """
    w = r - 1
    pairs = [(c1, c2) for c1 in range(channels) for c2 in range(channels) if cross_channel or c1 == c2]
    ent, where = [], {}
    for c1, c2 in pairs:
        for dy in range(0, w + 1):
            for dx in range(-w, w + 1):
                if dy == 0 and dx < 0 or (dy, dx) == (0, 0) and c1 > c2:
                    continue
                where[(c1, c2, dy, dx)] = len(ent)
                ent.append((c1, c2, dy, dx))
    k = np.arange(r * r)
    tap_dy, tap_dx = k // r, k % r
    if cross_channel:
        groups, d, t = 1, channels * r * r, channels
        tap_c = (np.arange(d) // (r * r)).reshape(1, d)
        tap_dy, tap_dx = np.tile(tap_dy, channels), np.tile(tap_dx, channels)
        oc = np.arange(channels).reshape(1, t)
    else:
        groups, d, t = channels, r * r, 1
        tap_c = np.repeat(np.arange(channels), d).reshape(channels, d)
        oc = np.arange(channels).reshape(channels, 1)
    tab_j = np.full((groups, d, d), -1)
    tab_base = np.full((groups, d, d), -1)
    for g in range(groups):
        for a in range(d):
            for b in range(a, d):
                ca, cb = int(tap_c[g, a]), int(tap_c[g, b])
                dy, dx = int(tap_dy[b] - tap_dy[a]), int(tap_dx[b] - tap_dx[a])
                if (ca, cb, dy, dx) in where:
                    tab_j[g, a, b], tab_base[g, a, b] = where[(ca, cb, dy, dx)], a
                else:
                    tab_j[g, a, b], tab_base[g, a, b] = where[(cb, ca, -dy, -dx)], b
    as64 = lambda a: np.ascontiguousarray(a, dtype=np.int64)  # noqa: E731
    return Tables(as64(ent), as64(tap_c), as64(tap_dy), as64(tap_dx), as64(oc), as64(tab_j), as64(tab_base))


def geometry(size: int, r: int, band: int = 0) -> tuple[int, int, int]:
    """Flat layout of the sums: (margin m, row stride wpp, rows allocated).

    A padded row (size + r - 1 values) is stored with m = r - 1 zeros on each side, so that
    every product of a band of rows with its shifted copy is ONE long loop over the flat
    band (no per-row loops, whose setup would cost more than their 130 multiply-adds), and
    reads at column offsets -m .. m never leave the row's zeros. Padded pixel (pr, pc) is at
    flat index pr * wpp + m + pc; output pixel (row, col) at row * wpp + m + col.
    """
    band = band or BAND_ROWS
    m = r - 1
    hp = size + r - 1
    return m, hp + 2 * m, -(-hp // band) * band


if numba is not None:

    @njit(parallel=True, cache=True, nogil=True)
    def _accumulate(x, y, replicate, r, band, ent, tap_c, tap_dy, tap_dx, oc,
                    corr, first, rhs, ysum):  # pragma: no cover
        """Add a batch x -> y (B, C, H, W) to the sums (flat layout of :func:`geometry`).

        The padded rows are cut into bands of ``band`` rows, one parallel task per band; a task
        owns its band of every output array, so threads never write to the same place. For
        every 4 samples a task copies the input rows its products read (its band and the r - 1
        rows below: every entry has dy >= 0) and its target rows into zero-margined float64
        buffers, padding on the fly (zeros or the replicated edge); then each accumulator gets
        the 4 samples' products over the whole band in one pass. A short last group is filled
        with zero samples, which add nothing.
        """
        b_, c_, hgt, wid = x.shape
        half, m = r // 2, r - 1
        hp, wp = hgt + r - 1, wid + r - 1
        wpp = wp + 2 * m
        n_ent = ent.shape[0]
        groups, d = tap_c.shape
        n_t = oc.shape[1]
        n_bands = (hp + band - 1) // band
        span = band * wpp                                   # flat length of one band
        for bi in prange(n_bands):
            r0 = bi * band
            f0 = r0 * wpp
            xs = np.zeros((4, c_, (band + r - 1) * wpp + 2 * m))   # flat index f at m + f
            ys = np.zeros((4, c_, span))
            for n0 in range(0, b_, 4):
                for k in range(4):
                    n = n0 + k
                    for c in range(c_):
                        for q in range(band + r - 1):
                            dst = xs[k, c, m + q * wpp + m:m + q * wpp + m + wp]
                            src = r0 + q - half
                            if n >= b_ or r0 + q >= hp or (not replicate and (src < 0 or src >= hgt)):
                                dst[:] = 0.0
                                continue
                            xin = x[n, c, min(max(src, 0), hgt - 1)]
                            mid = dst[half:half + wid]              # 0-based: vectorised
                            for col in range(wid):
                                mid[col] = xin[col]
                            edge_l, edge_r = (xin[0], xin[wid - 1]) if replicate else (0.0, 0.0)
                            for col in range(half):
                                dst[col] = edge_l
                                dst[half + wid + col] = edge_r
                        for q in range(band):
                            dst = ys[k, c, q * wpp + m:q * wpp + m + wid]
                            if n >= b_ or r0 + q >= hgt:
                                dst[:] = 0.0
                                continue
                            yin = y[n, c, r0 + q]
                            for col in range(wid):
                                dst[col] = yin[col]
                # 0-based loops over slices: LLVM vectorises these (not loops over i + offset)
                for e in range(n_ent):
                    c1, c2 = ent[e, 0], ent[e, 1]
                    o = m + ent[e, 2] * wpp + ent[e, 3]
                    u0, v0 = xs[0, c1, m:m + span], xs[0, c2, o:o + span]
                    u1, v1 = xs[1, c1, m:m + span], xs[1, c2, o:o + span]
                    u2, v2 = xs[2, c1, m:m + span], xs[2, c2, o:o + span]
                    u3, v3 = xs[3, c1, m:m + span], xs[3, c2, o:o + span]
                    acc = corr[e, f0:f0 + span]
                    for i in range(span):
                        acc[i] += u0[i] * v0[i] + u1[i] * v1[i] + u2[i] * v2[i] + u3[i] * v3[i]
                for c in range(c_):
                    u0, u1 = xs[0, c, m:m + span], xs[1, c, m:m + span]
                    u2, u3 = xs[2, c, m:m + span], xs[3, c, m:m + span]
                    acc = first[c, f0:f0 + span]
                    for i in range(span):
                        acc[i] += u0[i] + u1[i] + u2[i] + u3[i]
                    t0, t1, t2, t3 = ys[0, c], ys[1, c], ys[2, c], ys[3, c]
                    acc = ysum[c, f0:f0 + span]
                    for i in range(span):
                        acc[i] += t0[i] + t1[i] + t2[i] + t3[i]
                for g in range(groups):
                    for t in range(n_t):
                        out = oc[g, t]
                        t0, t1, t2, t3 = ys[0, out], ys[1, out], ys[2, out], ys[3, out]
                        for a in range(d):
                            c = tap_c[g, a]
                            o = m + tap_dy[a] * wpp + tap_dx[a]
                            u0, u1 = xs[0, c, o:o + span], xs[1, c, o:o + span]
                            u2, u3 = xs[2, c, o:o + span], xs[3, c, o:o + span]
                            acc = rhs[g, t, a, f0:f0 + span]
                            for i in range(span):
                                acc[i] += t0[i] * u0[i] + t1[i] * u1[i] + t2[i] * u2[i] + t3[i] * u3[i]

    @njit(inline="always")
    def _assemble_row(corr, first, rhs, ysum, n, r, tab_j, tab_base, tap_c, tap_dy, tap_dx, oc,
                      g, row, u, h):  # pragma: no cover
        """The Gram matrices (upper triangle) and right-hand sides of one image row's pixels:
        u (D+1, D+1, W) and h (D+1, T, W), pixels last so that every step is a vector op."""
        d = tap_c.shape[1]
        n_t = oc.shape[1]
        wid = u.shape[2]
        m = r - 1
        wpp = wid + r - 1 + 2 * m
        for a in range(d):
            for b in range(a, d):
                base = tab_base[g, a, b]
                o = (row + tap_dy[base]) * wpp + m + tap_dx[base]
                src = corr[tab_j[g, a, b], o:o + wid]
                dst = u[a, b]
                for col in range(wid):
                    dst[col] = src[col]
            o = (row + tap_dy[a]) * wpp + m + tap_dx[a]
            src = first[tap_c[g, a], o:o + wid]
            dst = u[a, d]
            for col in range(wid):
                dst[col] = src[col]
            o = row * wpp + m
            for t in range(n_t):
                h[a, t, :] = rhs[g, t, a, o:o + wid]
        u[d, d, :] = n
        o = row * wpp + m
        for t in range(n_t):
            h[d, t, :] = ysum[oc[g, t], o:o + wid]

    @njit(parallel=True, cache=True, nogil=True)
    def _gram(corr, first, rhs, ysum, n, r, tab_j, tab_base, tap_c, tap_dy, tap_dx, oc,
              gram, out_rhs):  # pragma: no cover
        """Every pixel's full Gram matrix and right-hand side (for inspection and tests)."""
        groups, hgt, wid, d1 = gram.shape[0], gram.shape[1], gram.shape[2], gram.shape[3]
        n_t = oc.shape[1]
        for gy in prange(groups * hgt):
            g, row = gy // hgt, gy % hgt
            u = np.empty((d1, d1, wid))
            h = np.empty((d1, n_t, wid))
            _assemble_row(corr, first, rhs, ysum, n, r, tab_j, tab_base, tap_c, tap_dy, tap_dx, oc, g, row, u, h)
            for col in range(wid):
                for a in range(d1):
                    for b in range(a, d1):
                        gram[g, row, col, a, b] = u[a, b, col]
                        gram[g, row, col, b, a] = u[a, b, col]
                    for t in range(n_t):
                        out_rhs[g, row, col, a, t] = h[a, t, col]

    @njit(inline="always")
    def _sub_product(dst, a, b):  # pragma: no cover
        """dst -= a * b over a row of pixels."""
        for col in range(dst.shape[0]):
            dst[col] -= a[col] * b[col]

    @njit(inline="always")
    def _divide(dst, den):  # pragma: no cover
        """dst /= den over a row of pixels."""
        for col in range(dst.shape[0]):
            dst[col] /= den[col]

    @njit(parallel=True, cache=True, nogil=True)
    def _solve(corr, first, rhs, ysum, n, r, lam, lam_bias, tab_j, tab_base, tap_c, tap_dy, tap_dx, oc,
               weight, bias, bad, eps):  # pragma: no cover
        """Add lambda, factorise G = U^T U (Cholesky) and solve, for all pixels of a row at once
        (rows in parallel). A pixel whose pivot falls to <= max(diag G) (D+1) eps is not
        positive definite to working precision: it is flagged in ``bad`` and left at zero."""
        groups, d = tap_c.shape
        n_t = oc.shape[1]
        hgt, wid = bias.shape[1], bias.shape[2]
        d1 = d + 1
        for gy in prange(groups * hgt):
            g, row = gy // hgt, gy % hgt
            u = np.empty((d1, d1, wid))
            h = np.empty((d1, n_t, wid))
            tiny = np.zeros(wid)
            ok = np.ones(wid, dtype=np.bool_)
            _assemble_row(corr, first, rhs, ysum, n, r, tab_j, tab_base, tap_c, tap_dy, tap_dx, oc, g, row, u, h)
            for a in range(d1):
                diag = u[a, a]
                for col in range(wid):
                    diag[col] += lam if a < d else lam_bias
                    tiny[col] = max(tiny[col], diag[col])
            for col in range(wid):
                tiny[col] = max(tiny[col], 1e-300) * d1 * eps
            for j in range(d1):                          # upper Cholesky, in place
                piv = u[j, j]
                for k in range(j):
                    _sub_product(piv, u[k, j], u[k, j])
                for col in range(wid):
                    if not piv[col] > tiny[col]:
                        ok[col] = False
                        piv[col] = 1.0                   # keep the row finite; zeroed below
                    piv[col] = np.sqrt(piv[col])
                for i in range(j + 1, d1):
                    for k in range(j):
                        _sub_product(u[j, i], u[k, j], u[k, i])
                    _divide(u[j, i], piv)
            for t in range(n_t):
                for i in range(d1):                      # U^T z = h
                    for k in range(i):
                        _sub_product(h[i, t], u[k, i], h[k, t])
                    _divide(h[i, t], u[i, i])
                for i in range(d1 - 1, -1, -1):          # U w = z
                    for k in range(i + 1, d1):
                        _sub_product(h[i, t], u[i, k], h[k, t])
                    _divide(h[i, t], u[i, i])
                out = oc[g, t]
                for col in range(wid):
                    good = ok[col]
                    for a in range(d):
                        weight[out, row, col, a] = h[a, t, col] if good else 0.0
                    bias[out, row, col] = h[d, t, col] if good else 0.0
            for col in range(wid):
                bad[g, row, col] = not ok[col]


class NumbaSums:
    """The running sums of one fit (float64 NumPy arrays; memory set by the image, never by N)."""

    def __init__(self, r: int, channels: int, size: int, cross_channel: bool, threads: int | None = None):
        if numba is None:
            raise ImportError("numba is not installed; pip install numba, or use backend='torch'")
        # the kernels use at most this many threads (the caller passes torch's setting)
        self.threads = min(threads or numba.config.NUMBA_NUM_THREADS, numba.config.NUMBA_NUM_THREADS)
        self.tab = tables(r, channels, cross_channel)
        self.r, self.channels, self.size = r, channels, size
        groups, d = self.tab.tap_c.shape
        _, wpp, rows = geometry(size, r)
        flat = rows * wpp
        self.corr = np.zeros((len(self.tab.ent), flat))
        self.first = np.zeros((channels, flat))
        self.rhs = np.zeros((groups, self.tab.oc.shape[1], d, flat))
        self.ysum = np.zeros((channels, flat))
        self.n = 0

    def update(self, x: np.ndarray, y: np.ndarray, replicate: bool) -> None:
        """Add a batch: C-contiguous inputs and targets (B, C, H, W) of one float dtype.

        ``replicate``: pad with the edge pixel (else with zeros)."""
        tb = self.tab
        _launch(_accumulate, self.threads, x, y, bool(replicate), self.r, BAND_ROWS, tb.ent, tb.tap_c,
                tb.tap_dy, tb.tap_dx, tb.oc, self.corr, self.first, self.rhs, self.ysum)
        self.n += x.shape[0]

    def _args(self) -> tuple:
        return (self.corr, self.first, self.rhs, self.ysum, float(self.n), self.r)

    def gram_rhs(self) -> tuple[np.ndarray, np.ndarray]:
        """Gram matrices (G, H, W, D+1, D+1) and right-hand sides (G, H, W, D+1, T)."""
        tb, s = self.tab, self.size
        groups, d = tb.tap_c.shape
        gram = np.empty((groups, s, s, d + 1, d + 1))
        rhs = np.empty((groups, s, s, d + 1, tb.oc.shape[1]))
        _launch(_gram, self.threads, *self._args(), tb.tab_j, tb.tab_base, tb.tap_c, tb.tap_dy, tb.tap_dx, tb.oc,
                gram, rhs)
        return gram, rhs

    def solve(self, lam: float, regularize_bias: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """weight (C, H, W, D), bias (C, H, W) and the not-positive-definite mask (G, H, W)."""
        tb, s = self.tab, self.size
        groups, d = tb.tap_c.shape
        weight = np.empty((self.channels, s, s, d))
        bias = np.empty((self.channels, s, s))
        bad = np.zeros((groups, s, s), dtype=np.bool_)
        _launch(_solve, self.threads, *self._args(), float(lam), float(lam) if regularize_bias else 0.0,
                tb.tab_j, tb.tab_base, tb.tap_c, tb.tap_dy, tb.tap_dx, tb.oc,
                weight, bias, bad, float(np.finfo(np.float64).eps))
        return weight, bias, bad
