"""Statistics of a preference study: shares, relative improvement, tests, rating analysis.

Choices: every answer picks one method out of K. The *preference share* of method m is the
fraction of all answers (raters x panels) that picked m. Answers of one rater are not
independent (a rater has a taste), so confidence intervals come from a bootstrap that resamples
whole raters (cluster bootstrap; optionally raters and panels, two-way), percentile intervals.

Relative improvement (our definition: the RegGAN paper quotes ~25-30% but defines none) of a
target method T over a reference method c is the ratio of preference shares minus one::

    RI(T, c) = s_T / s_c - 1           e.g. s_T = 0.20, s_c = 0.16  ->  RI = +25%

reported against the strongest competitor (largest share, chosen afresh in every bootstrap
replicate), against each competitor, and against chance (s_c = 1/K). Ratings on a 1-5 scale
have no true zero, so a ratio of mean ratings would depend on where the scale starts; for
ratings we report differences of means instead.

Tests: chi-square goodness of fit (are picks uniform over methods? over positions?), exact
binomial head-to-head tests (target vs each competitor among answers picking either; they treat
answers as independent) beside a rater-level t-test of the per-rater difference in shares
(respects clustering); Friedman test over raters for ratings with Wilcoxon signed-rank post-hoc
tests. Families of comparisons are Holm-corrected.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import stats as sps

from ..errors import ConfigError, DataError

CLUSTERS = ("rater", "rater+panel")


# ---------------------------------------------------------------------------------------------
# choice data and the cluster bootstrap

@dataclass(frozen=True)
class ChoiceData:
    """Picks as a 0/1 array ``counts`` (R raters, P panels, M methods): 1 where r picked m in p."""

    raters: tuple[str, ...]
    panels: tuple[str, ...]
    methods: tuple[str, ...]
    counts: np.ndarray

    @classmethod
    def from_frame(cls, choices, methods: Sequence[str]) -> "ChoiceData":
        """From a choices DataFrame (columns rater, panel, method), methods in the given order."""
        unknown = sorted(set(choices["method"]) - set(methods))
        if unknown:
            raise DataError(f"choices name method(s) {', '.join(unknown)} not in {', '.join(methods)}")
        raters, r_idx = np.unique(choices["rater"].to_numpy(str), return_inverse=True)
        panels, p_idx = np.unique(choices["panel"].to_numpy(str), return_inverse=True)
        m_idx = np.array([list(methods).index(m) for m in choices["method"]], dtype=int)
        counts = np.zeros((len(raters), len(panels), len(methods)))
        np.add.at(counts, (r_idx, p_idx, m_idx), 1.0)
        return cls(tuple(raters), tuple(panels), tuple(methods), counts)

    @property
    def per_rater(self) -> np.ndarray:
        """(R, M) picks per rater and method."""
        return self.counts.sum(axis=1)

    @property
    def totals(self) -> np.ndarray:
        """(M,) picks per method."""
        return self.counts.sum(axis=(0, 1))

    def shares(self) -> np.ndarray:
        """(M,) preference shares."""
        total = self.totals.sum()
        if total == 0:
            raise DataError("no answers to compute preference shares from")
        return self.totals / total


def bootstrap_weights(n: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(n_boot, n) resampling counts: how often each cluster is drawn in each replicate."""
    return rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(float)


def bootstrap_sums(values: np.ndarray, n_boot: int, seed: int = 0, cluster: str = "rater") -> np.ndarray:
    """Cluster-bootstrap replicates of ``values.sum(axis=(0, 1))`` for a (R, P, ...) array.

    ``cluster='rater'`` resamples raters (axis 0); ``'rater+panel'`` also panels (axis 1),
    independently (two-way bootstrap). Returns (n_boot, ...).
    """
    if cluster not in CLUSTERS:
        raise ConfigError(f"unknown bootstrap cluster {cluster!r}; use one of {', '.join(CLUSTERS)}")
    rng = np.random.default_rng(seed)
    w = bootstrap_weights(values.shape[0], n_boot, rng)
    if cluster == "rater":
        return np.tensordot(w, values.sum(axis=1), axes=(1, 0))
    v = bootstrap_weights(values.shape[1], n_boot, rng)
    per_panel = np.tensordot(w, values, axes=(1, 0))          # (B, P, ...)
    return np.einsum("bp...,bp->b...", per_panel, v)


def bootstrap_shares(data: ChoiceData, n_boot: int = 2000, seed: int = 0, cluster: str = "rater") -> np.ndarray:
    """(n_boot, M) preference shares of cluster-bootstrap replicates."""
    sums = bootstrap_sums(data.counts, n_boot, seed, cluster)
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums / sums.sum(axis=1, keepdims=True)


def percentile_interval(replicates: np.ndarray, ci: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap interval along axis 0 (NaN replicates ignored)."""
    if not 0 < ci < 1:
        raise ConfigError(f"confidence level {ci} must be between 0 and 1, e.g. 0.95")
    # order statistics (no interpolation) so that infinite ratios (a zero share) give infinite bounds
    lo = np.nanpercentile(replicates, 50 * (1 - ci), axis=0, method="lower")
    hi = np.nanpercentile(replicates, 50 * (1 + ci), axis=0, method="higher")
    return lo, hi


def preference_shares(data: ChoiceData, n_boot: int = 2000, ci: float = 0.95, seed: int = 0,
                      cluster: str = "rater"):
    """Table: method, picks, answers, share and its cluster-bootstrap interval."""
    import pandas as pd

    reps = bootstrap_shares(data, n_boot, seed, cluster)
    lo, hi = percentile_interval(reps, ci)
    return pd.DataFrame({"method": data.methods, "picks": data.totals.astype(int),
                         "answers": int(data.totals.sum()), "share": data.shares(),
                         "ci_low": lo, "ci_high": hi})


# ---------------------------------------------------------------------------------------------
# relative improvement

def relative_improvements(shares: np.ndarray, target: int) -> dict[str, np.ndarray]:
    """RI = s_T / s_ref - 1 for shares (..., M): vs the best competitor, vs each, vs chance (1/M)."""
    shares = np.asarray(shares, dtype=float)
    s_t = shares[..., target]
    others = np.delete(shares, target, axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = {"best competitor": s_t / others.max(axis=-1) - 1.0,
               "chance": s_t * shares.shape[-1] - 1.0}
        for k, c in enumerate(m for m in range(shares.shape[-1]) if m != target):
            out[c] = s_t / others[..., k] - 1.0
    return out


def relative_improvement_table(data: ChoiceData, target: str, n_boot: int = 2000, ci: float = 0.95,
                               seed: int = 0, cluster: str = "rater"):
    """Table of RI (point estimate and cluster-bootstrap interval) of ``target`` over the references."""
    import pandas as pd

    t = method_index(data.methods, target)
    shares = data.shares()
    point = relative_improvements(shares, t)
    reps = relative_improvements(bootstrap_shares(data, n_boot, seed, cluster), t)
    best = max((m for m in range(len(shares)) if m != t), key=lambda m: shares[m])
    rows = []
    for ref, value in point.items():
        lo, hi = percentile_interval(reps[ref], ci)
        if ref == "best competitor":
            name, s_ref = f"best competitor ({data.methods[best]})", shares[best]
        elif ref == "chance":
            name, s_ref = "chance", 1.0 / len(shares)
        else:
            name, s_ref = data.methods[ref], shares[ref]
        rows.append({"reference": name, "target_share": shares[t], "reference_share": s_ref,
                     "relative_improvement": float(value), "ci_low": float(lo), "ci_high": float(hi)})
    return pd.DataFrame(rows)


def method_index(methods: Sequence[str], target: str) -> int:
    if target not in methods:
        raise ConfigError(f"target method {target!r} is not in the study; choose one of {', '.join(methods)}")
    return list(methods).index(target)


# ---------------------------------------------------------------------------------------------
# tests for choices

def chi_square_uniform(counts: np.ndarray) -> tuple[float, int, float]:
    """Pearson chi-square goodness of fit of counts against equal expected counts: (stat, df, p)."""
    counts = np.asarray(counts, dtype=float)
    expected = counts.sum() / len(counts)
    stat = float(((counts - expected) ** 2 / expected).sum())
    df = len(counts) - 1
    return stat, df, float(sps.chi2.sf(stat, df))


def binomial_two_sided(k, n) -> np.ndarray:
    """Exact two-sided binomial p-value of k successes in n trials under p = 0.5 (vectorised).

    With p = 0.5 the distribution is symmetric, so p = min(1, 2 P(X <= min(k, n - k))).
    """
    k, n = np.asarray(k, dtype=float), np.asarray(n, dtype=float)
    tail = sps.binom.cdf(np.minimum(k, n - k), n, 0.5)
    return np.where(n > 0, np.minimum(1.0, 2.0 * tail), 1.0)


def one_sample_t(d: np.ndarray) -> np.ndarray:
    """Two-sided one-sample t-test of mean(d) = 0 along the last axis (vectorised p-values)."""
    d = np.asarray(d, dtype=float)
    n = d.shape[-1]
    if n < 2:
        return np.full(d.shape[:-1], np.nan)
    mean, sd = d.mean(axis=-1), d.std(axis=-1, ddof=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        t = mean / (sd / np.sqrt(n))
    p = 2.0 * sps.t.sf(np.abs(t), n - 1)
    return np.where(sd > 0, p, np.where(mean == 0, 1.0, 0.0))


def holm(pvalues, axis: int = -1) -> np.ndarray:
    """Holm's step-down adjusted p-values along ``axis`` (Holm 1979, Scand. J. Statist. 6)."""
    p = np.moveaxis(np.asarray(pvalues, dtype=float), axis, -1)
    m = p.shape[-1]
    order = np.argsort(p, axis=-1)
    ranked = np.take_along_axis(p, order, axis=-1) * (m - np.arange(m))
    adjusted = np.minimum(1.0, np.maximum.accumulate(ranked, axis=-1))
    out = np.empty_like(adjusted)
    np.put_along_axis(out, order, adjusted, axis=-1)
    return np.moveaxis(out, -1, axis)


def head_to_head(data: ChoiceData, target: str):
    """Target vs each competitor: picks, exact binomial test and rater-level t-test, Holm-corrected."""
    import pandas as pd

    t = method_index(data.methods, target)
    per_rater = data.per_rater
    answers = per_rater.sum(axis=1)
    rows = []
    for c, name in enumerate(data.methods):
        if c == t:
            continue
        k, other = data.totals[t], data.totals[c]
        with np.errstate(invalid="ignore", divide="ignore"):
            diff = (per_rater[:, t] - per_rater[:, c]) / answers     # per-rater share difference
        rows.append({"competitor": name, "target_picks": int(k), "competitor_picks": int(other),
                     "p_binomial": float(binomial_two_sided(k, k + other)),
                     "mean_rater_share_diff": float(np.round(np.mean(diff), 12)), "p_rater_t": float(one_sample_t(diff))})
    table = pd.DataFrame(rows)
    table.insert(4, "p_binomial_holm", holm(table["p_binomial"].to_numpy()))
    table["p_rater_t_holm"] = holm(table["p_rater_t"].to_numpy())
    return table


# ---------------------------------------------------------------------------------------------
# ratings

def rating_blocks(ratings, methods: Sequence[str], block: str = "rater") -> tuple[list[str], np.ndarray]:
    """(block labels, (n_blocks, M) mean rating per block and method).

    ``block='rater'``: one block per rater (her mean over panels; blocks are independent);
    ``'rater+panel'``: one block per answer (more blocks, but blocks of one rater are correlated).
    Blocks missing a method are dropped.
    """
    keys = {"rater": ["rater"], "rater+panel": ["rater", "panel"]}
    if block not in keys:
        raise ConfigError(f"unknown block {block!r}; use 'rater' or 'rater+panel'")
    if len(ratings) == 0:
        return [], np.empty((0, len(methods)))
    table = ratings.pivot_table(index=keys[block], columns="method", values="rating", aggfunc="mean")
    table = table.reindex(columns=list(methods)).dropna()
    labels = ["/".join(map(str, i)) if isinstance(i, tuple) else str(i) for i in table.index]
    return labels, table.to_numpy(float)


@dataclass(frozen=True)
class FriedmanResult:
    statistic: float     # chi-square statistic, tie-corrected
    df: int
    p_value: float
    kendall_w: float     # statistic / (n (k - 1)): 0 = no agreement on the order, 1 = full
    n_blocks: int


def friedman(table: np.ndarray) -> FriedmanResult:
    """Friedman test of a (n blocks, k treatments) table (Friedman 1937, JASA 32).

    Ranks within every block (ties get their mean rank), R_j = rank sum of treatment j::

        Q = [12 / (n k (k + 1)) sum_j R_j^2 - 3 n (k + 1)] / C,
        C = 1 - sum_blocks sum_ties (t^3 - t) / (n k (k^2 - 1))    (tie correction)

    Q ~ chi-square with k - 1 degrees of freedom under H0 (no treatment effect).
    """
    table = np.asarray(table, dtype=float)
    n, k = table.shape
    if n < 2 or k < 3:
        raise DataError(f"the Friedman test needs >= 2 blocks and >= 3 methods, got {n} blocks, {k} methods")
    ranks = sps.rankdata(table, axis=1)
    r_sum = ranks.sum(axis=0)
    ties = 0.0
    for row in table:
        _, t = np.unique(row, return_counts=True)
        ties += float((t ** 3 - t).sum())
    correction = 1.0 - ties / (n * k * (k * k - 1))
    if correction <= 0:   # every block rates all methods the same: no evidence of a difference
        return FriedmanResult(0.0, k - 1, 1.0, 0.0, n)
    q = (12.0 / (n * k * (k + 1)) * (r_sum ** 2).sum() - 3.0 * n * (k + 1)) / correction
    return FriedmanResult(float(q), k - 1, float(sps.chi2.sf(q, k - 1)), float(q / (n * (k - 1))), n)


def posthoc_wilcoxon(table: np.ndarray, methods: Sequence[str], target: str | None = None):
    """Wilcoxon signed-rank tests between methods (columns of a blocks table), Holm-corrected.

    ``target`` given: target vs every other method; else all pairs.
    """
    import pandas as pd

    idx = range(len(methods))
    if target is not None:
        t = method_index(methods, target)
        pairs = [(t, c) for c in idx if c != t]
    else:
        pairs = [(a, b) for a in idx for b in idx if a < b]
    rows = []
    for a, b in pairs:
        diff = table[:, a] - table[:, b]
        if np.all(diff == 0):
            stat, p = 0.0, 1.0
        else:
            # exact null distribution without ties or zero differences; the normal approximation
            # (tie-corrected) otherwise: scipy's permutation fallback takes seconds per test
            nonzero = np.abs(diff[diff != 0])
            exact = len(nonzero) == len(diff) and len(np.unique(nonzero)) == len(nonzero)
            res = sps.wilcoxon(table[:, a], table[:, b], method="exact" if exact else "asymptotic")
            stat, p = float(res.statistic), float(res.pvalue)
        rows.append({"method_a": methods[a], "method_b": methods[b], "mean_a": float(table[:, a].mean()),
                     "mean_b": float(table[:, b].mean()), "median_diff": float(np.median(diff)),
                     "statistic": stat, "p_value": p})
    out = pd.DataFrame(rows)
    out["p_holm"] = holm(out["p_value"].to_numpy()) if len(out) else []
    return out


def mean_ratings(ratings, methods: Sequence[str], n_boot: int = 2000, ci: float = 0.95, seed: int = 0):
    """Table: method, mean rating, rater-clustered bootstrap interval, number of ratings."""
    import pandas as pd

    raters = sorted(set(ratings["rater"]))
    r_idx = np.array([raters.index(r) for r in ratings["rater"]])
    m_idx = np.array([list(methods).index(m) for m in ratings["method"]])
    sums, counts = np.zeros((len(raters), 1, len(methods))), np.zeros((len(raters), 1, len(methods)))
    np.add.at(sums, (r_idx, 0, m_idx), ratings["rating"].to_numpy(float))
    np.add.at(counts, (r_idx, 0, m_idx), 1.0)
    reps = bootstrap_sums(np.concatenate([sums, counts], axis=2), n_boot, seed, "rater")
    with np.errstate(invalid="ignore", divide="ignore"):
        rep_means = reps[:, :len(methods)] / reps[:, len(methods):]
        means = sums.sum(axis=(0, 1)) / counts.sum(axis=(0, 1))
    lo, hi = percentile_interval(rep_means, ci)
    return pd.DataFrame({"method": list(methods), "mean_rating": means, "ci_low": lo, "ci_high": hi,
                         "ratings": counts.sum(axis=(0, 1)).astype(int)})
