"""Inter-rater agreement: Fleiss' kappa and Krippendorff's alpha, written out.

Fleiss (1971), "Measuring nominal scale agreement among many raters", Psychol. Bull. 76(5):
for N subjects each judged by the same number n of raters into K categories, with counts
n_ij (subject i, category j)::

    P_i = (sum_j n_ij^2 - n) / (n (n - 1))        agreement within subject i
    p_j = sum_i n_ij / (N n)                      share of category j
    kappa = (mean_i P_i - sum_j p_j^2) / (1 - sum_j p_j^2)

Krippendorff (2011), "Computing Krippendorff's alpha-reliability": from the coincidence matrix
o_ck (pairs of values c, k given to the same unit by different raters, each unit weighted by
1 / (m_u - 1), m_u = values in unit u), its margins n_c and n = sum_c n_c::

    alpha = 1 - (n - 1) * sum_ck o_ck d2_ck / sum_ck n_c n_k d2_ck

with the difference function d2 of the level of measurement (nominal, ordinal, interval, ratio).
Missing answers are allowed; units with fewer than two values are dropped.
"""
from __future__ import annotations

import numpy as np

from ..errors import DataError

LEVELS = ("nominal", "ordinal", "interval", "ratio")


def fleiss_kappa(table: np.ndarray) -> float:
    """Fleiss' kappa of a (subjects, categories) count table with the same number of raters per row."""
    table = np.asarray(table, dtype=float)
    if table.ndim != 2 or table.shape[0] < 1:
        raise DataError(f"Fleiss' kappa needs a (subjects, categories) table, got shape {table.shape}")
    n = table.sum(axis=1)
    if not np.allclose(n, n[0]) or n[0] < 2:
        raise DataError("Fleiss' kappa needs the same number (>= 2) of raters for every subject; "
                        "keep only subjects answered by all raters, or use Krippendorff's alpha")
    n = n[0]
    p_j = table.sum(axis=0) / table.sum()
    p_i = ((table ** 2).sum(axis=1) - n) / (n * (n - 1))
    p_e = float((p_j ** 2).sum())
    if np.isclose(p_e, 1.0):
        return float("nan")   # every answer in one category: agreement is undefined
    return float((p_i.mean() - p_e) / (1.0 - p_e))


def _distance(values: np.ndarray, n_c: np.ndarray, level: str) -> np.ndarray:
    """Squared difference d2 between every pair of observed values, (V, V)."""
    a, b = values[:, None], values[None, :]
    if level == "nominal":
        return (a != b).astype(float)
    if level == "interval":
        return (a - b) ** 2
    if level == "ratio":
        s = a + b
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(s == 0, 0.0, ((a - b) / np.where(s == 0, 1, s)) ** 2)
    if level == "ordinal":
        cum = np.concatenate([[0.0], np.cumsum(n_c)])           # cum[g] = sum of n below rank g
        i, j = np.meshgrid(np.arange(len(values)), np.arange(len(values)), indexing="ij")
        lo, hi = np.minimum(i, j), np.maximum(i, j)
        between = cum[hi + 1] - cum[lo]                           # sum_{g=lo}^{hi} n_g
        return (between - (n_c[i] + n_c[j]) / 2.0) ** 2
    raise DataError(f"unknown level of measurement {level!r}; use one of {', '.join(LEVELS)}")


def krippendorff_alpha(data: np.ndarray, level: str = "nominal") -> float:
    """Krippendorff's alpha of a (raters, units) array; NaN marks a missing answer.

    Values must be numbers (encode categories as integers for ``level='nominal'``).
    """
    data = np.asarray(data, dtype=float)
    if data.ndim != 2:
        raise DataError(f"Krippendorff's alpha needs a (raters, units) array, got shape {data.shape}")
    if level not in LEVELS:
        raise DataError(f"unknown level of measurement {level!r}; use one of {', '.join(LEVELS)}")
    values = np.unique(data[~np.isnan(data)])
    if len(values) == 0:
        raise DataError("Krippendorff's alpha: no answers at all")
    # counts[u, c]: how many raters gave value c to unit u
    index = np.searchsorted(values, np.nan_to_num(data, nan=values[0]))
    counts = np.stack([((index == c) & ~np.isnan(data)).sum(axis=0) for c in range(len(values))], axis=1)
    m_u = counts.sum(axis=1)
    counts = counts[m_u >= 2].astype(float)
    m_u = m_u[m_u >= 2]
    if len(counts) == 0:
        raise DataError("Krippendorff's alpha: no unit has two or more answers")
    pairs = np.einsum("uc,uk->uck", counts, counts) - np.einsum("uc,ck->uck", counts, np.eye(len(values)))
    coincidence = (pairs / (m_u - 1.0)[:, None, None]).sum(axis=0)
    n_c = coincidence.sum(axis=1)
    n = n_c.sum()
    d2 = _distance(values, n_c, level)
    expected = (np.outer(n_c, n_c) * d2).sum()
    if expected == 0:
        return float("nan")   # a single value everywhere: reliability is undefined
    return float(1.0 - (n - 1.0) * (coincidence * d2).sum() / expected)
