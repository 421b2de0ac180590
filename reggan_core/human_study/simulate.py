"""Simulated raters with a known true preference, and the power curve they give.

Rater model (our assumption; the paper publishes no rater data):

* the study population prefers method m with true share pi_m (per split);
* rater r has her own taste pi_r ~ Dirichlet(concentration * pi), so E[pi_r] = pi; a small
  ``concentration`` means raters disagree a lot, ``inf`` means identical raters;
* in every panel she sees utilities u_m = log pi_r,m + g_m (+ ``position_bias`` for column A),
  g_m ~ Gumbel(0, 1), and picks argmax_m u_m. By the Gumbel-max trick P(pick m) = pi_r,m exactly,
  so the expected population share of m is pi_m: the truth the analysis must recover;
* her ratings are rating_m = clip(round(center + leniency_r + slope (u_m - mean_m u_m)), lo, hi),
  leniency_r ~ N(0, leniency_sd^2): the picked output has the highest rating, up to rounding.

The power curve uses the same model in closed form: per-rater pick counts ~ Multinomial(P, pi_r).

:class:`ImageRaterModel` is the second rater model: raters who respond to the *images*. Every
option m of panel p carries measured properties z_pm (:mod:`.measures`: the expression
classifier's probability of the target, the identity similarity to the input); rater r weighs
them with her own weights w_rk = w_k exp(taste_sd e_rk - taste_sd^2 / 2), e_rk ~ N(0, 1) (so
E[w_rk] = w_k), and sees u_rpm = sum_k w_rk z_pmk (+ ``position_bias`` for column A) + noise g,
g ~ Gumbel(0, 1). She picks argmax_m u_rpm, so P(pick m | r, p) = softmax_m(u_rpm without g / noise)
(multinomial logit). Two pixel-identical options have identical z and hence equal chances;
raters agree because they see the same images, and the true share of a method is the mean
of those probabilities over panels and raters (:func:`expected_shares`).
"""
from __future__ import annotations

import io
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from ..errors import ConfigError
from ..imageio import write_text
from .form import RESPONSE_HEADER
from .panels import check_key, read_key
from .stats import binomial_two_sided, holm, one_sample_t

TESTS = ("binomial (answers independent)", "rater-level t (clustered)")


def improvement_shares(methods: Sequence[str], target: str, improvement: float) -> dict[str, float]:
    """True shares where every competitor has share s and the target (1 + improvement) s.

    From s_T + (K - 1) s = 1 and s_T = (1 + RI) s:  s = 1 / (K + RI). The relative improvement over
    the best (every) competitor is then exactly ``improvement``.
    """
    if target not in methods:
        raise ConfigError(f"target {target!r} is not among the methods {', '.join(methods)}")
    if improvement <= -1:
        raise ConfigError(f"improvement {improvement} must be above -1 (-100%)")
    s = 1.0 / (len(methods) + improvement)
    return {m: (1.0 + improvement) * s if m == target else s for m in methods}


@dataclass(frozen=True)
class RaterModel:
    """Parameters of the simulated raters (see the module docstring); all are assumptions."""

    shares: Mapping[str, Mapping[str, float]]   # split -> method -> true preference share
    concentration: float = 50.0     # Dirichlet concentration of rater tastes (inf: identical raters)
    rating_slope: float = 1.0       # rating points per unit of utility
    rating_center: float = 3.0      # middle of the 1-5 scale
    leniency_sd: float = 0.5        # spread of rater offsets, rating points
    position_bias: float = 0.0      # extra utility of the leftmost column (0: none; breaks exactness)
    scale: tuple[int, int] = (1, 5)
    ratings: bool = True            # also simulate ratings

    def __post_init__(self) -> None:
        for split, shares in self.shares.items():
            values = np.array(list(shares.values()), dtype=float)
            if np.any(values <= 0) or not math.isclose(values.sum(), 1.0, rel_tol=1e-6):
                raise ConfigError(f"true shares of split {split!r} must be positive and sum to 1, "
                                  f"got sum {values.sum():.4f}")
        if not self.concentration > 0:
            raise ConfigError(f"concentration {self.concentration} must be > 0 (inf for identical raters)")


def rater_tastes(shares: np.ndarray, concentration: float, size: tuple[int, ...],
                 rng: np.random.Generator) -> np.ndarray:
    """(*size, M) per-rater preference vectors pi_r ~ Dirichlet(concentration * shares)."""
    if math.isinf(concentration):
        return np.broadcast_to(shares, size + shares.shape).copy()
    return np.maximum(rng.dirichlet(concentration * shares, size=size), 1e-300)


@dataclass(frozen=True)
class ImageRaterModel:
    """Raters who respond to measured properties of each output (see the module docstring).

    ``weights``: key column -> utility per unit of that measure (population mean). Defaults (our
    assumptions, no rater data are published): 4 per unit of the target's classifier
    probability (a clearly shown expression), 20 per unit of identity similarity (losing 0.05
    of FSS costs as much as 0.25 of expression probability). Realism / artefacts are not
    measured (QualiCLIP weights are not available offline), so these raters do not see them.
    """

    weights: Mapping[str, float] = field(default_factory=lambda: {"expression_p": 4.0, "identity_fss": 20.0})
    taste_sd: float = 0.5           # log-normal spread of each rater's weights (0: identical raters)
    noise: float = 1.0              # scale of a rater's Gumbel judgement noise (utility units)
    rating_slope: float = 1.0
    rating_center: float = 3.0
    leniency_sd: float = 0.5
    position_bias: float = 0.0      # extra utility of the leftmost column
    scale: tuple[int, int] = (1, 5)
    ratings: bool = True

    def __post_init__(self) -> None:
        if not self.weights:
            raise ConfigError("ImageRaterModel needs at least one measure in weights, e.g. {'expression_p': 4.0}")
        if not all(math.isfinite(float(w)) for w in self.weights.values()):
            raise ConfigError(f"ImageRaterModel weights must be finite numbers, got {dict(self.weights)}")
        if not (self.taste_sd >= 0 and math.isfinite(self.taste_sd)):
            raise ConfigError(f"taste_sd={self.taste_sd!r} must be a finite number >= 0")
        if not (self.noise > 0 and math.isfinite(self.noise)):
            raise ConfigError(f"noise={self.noise!r} must be a finite number > 0")


def _panel_arrays(key, columns: Sequence[str]):
    """panels, positions per panel, splits per panel and the (P, M, K) measures in key order."""
    missing = [c for c in columns if c not in key.columns]
    if missing:
        raise ConfigError(f"the key has no measured column(s) {', '.join(missing)}; add them with "
                          "reggan_core.human_study.measures.attach_measures")
    panels = list(dict.fromkeys(key["panel"]))
    by_panel = {p: g for p, g in key.groupby("panel", sort=False)}
    positions = [list(by_panel[p]["position"]) for p in panels]
    splits = [str(by_panel[p]["split"].iloc[0]) for p in panels]
    z = np.stack([by_panel[p][list(columns)].to_numpy(float) for p in panels])         # (P, M, K)
    if not np.all(np.isfinite(z)):
        raise ConfigError("the key's measured columns contain missing or non-finite values; re-measure")
    methods = [list(by_panel[p]["method"]) for p in panels]
    return panels, positions, splits, methods, z


def _rater_weights(model: ImageRaterModel, n: int, rng: np.random.Generator) -> np.ndarray:
    """(n, K) per-rater weights, log-normal around the model's weights with mean = the weights."""
    w = np.array([float(v) for v in model.weights.values()])
    sd = model.taste_sd
    return w * np.exp(sd * rng.standard_normal((n, len(w))) - sd ** 2 / 2)


def _mean_utility(model: ImageRaterModel, weights: np.ndarray, z: np.ndarray, positions) -> np.ndarray:
    """(R, P, M) utilities without judgement noise."""
    first = np.array([[pos == "A" for pos in pp] for pp in positions], dtype=float)
    return np.einsum("rk,pmk->rpm", weights, z) + model.position_bias * first


def expected_shares(key, model: ImageRaterModel, n_draws: int = 20000, seed: int = 0):
    """True preference shares of the image raters: split, method, share (also split 'all').

    share_s(m) = E_r[ mean over panels p of split s of softmax_m(u_rpm / noise) ], the rater
    expectation by Monte Carlo over ``n_draws`` rater weights (exact when taste_sd = 0).
    """
    import pandas as pd

    key = check_key(key)
    panels, positions, splits, methods, z = _panel_arrays(key, list(model.weights))
    n = 1 if model.taste_sd == 0 else n_draws
    u = _mean_utility(model, _rater_weights(model, n, np.random.default_rng(seed)), z, positions) / model.noise
    u -= u.max(axis=2, keepdims=True)
    prob = np.exp(u)
    prob = (prob / prob.sum(axis=2, keepdims=True)).mean(axis=0)                       # (P, M)
    rows = []
    for split in ["all"] + sorted(set(splits)):
        sel = [i for i, s in enumerate(splits) if split == "all" or s == split]
        acc: dict[str, float] = {}
        for i in sel:
            for j, m in enumerate(methods[i]):
                acc[m] = acc.get(m, 0.0) + prob[i, j] / len(sel)
        rows += [{"split": split, "method": m, "share": acc[m]} for m in sorted(acc)]
    return pd.DataFrame(rows)


def _answer_frame(n_raters: int, panels, positions, pick: np.ndarray, rating: np.ndarray, ratings: bool):
    import pandas as pd

    width = max(2, len(str(n_raters)))
    rows = []
    for r in range(n_raters):
        rater = f"sim{r + 1:0{width}d}"
        for p, panel in enumerate(panels):
            for j, pos in enumerate(positions[p]):
                rows.append((rater, panel, pos, int(pick[r, p] == j), rating[r, p, j] if ratings else ""))
    return pd.DataFrame(rows, columns=list(RESPONSE_HEADER))


def _ratings(model, utility: np.ndarray, n_raters: int, rng: np.random.Generator) -> np.ndarray:
    lo, hi = model.scale
    leniency = rng.normal(0.0, model.leniency_sd, size=(n_raters, 1, 1))
    centred = utility - utility.mean(axis=2, keepdims=True)
    return np.clip(np.rint(model.rating_center + leniency + model.rating_slope * centred), lo, hi).astype(int)


def simulate_image_answers(key, model: ImageRaterModel, n_raters: int, seed: int = 0):
    """Answers of ``n_raters`` image-responsive raters to the panels of a *measured* key.

    ``key``: the study key with the columns named in ``model.weights`` (see
    :func:`reggan_core.human_study.measures.attach_measures`). Same output as :func:`simulate_answers`.
    """
    key = check_key(key)
    if n_raters < 1:
        raise ConfigError(f"n_raters={n_raters} must be at least 1")
    panels, positions, _, _, z = _panel_arrays(key, list(model.weights))
    rng = np.random.default_rng(seed)
    weights = _rater_weights(model, n_raters, rng)
    utility = _mean_utility(model, weights, z, positions) + model.noise * rng.gumbel(size=(n_raters,) + z.shape[:2])
    pick = utility.argmax(axis=2)
    rating = _ratings(model, utility, n_raters, rng)
    return _answer_frame(n_raters, panels, positions, pick, rating, model.ratings)


def simulate_answers(key, model: RaterModel | ImageRaterModel, n_raters: int, seed: int = 0):
    """Answers of ``n_raters`` simulated raters to the panels of ``key``, in the form's CSV format.

    Returns a DataFrame with columns rater, panel, position, best, rating (one row per position).
    An :class:`ImageRaterModel` goes to :func:`simulate_image_answers` (the key must be measured).
    """
    key = read_key(key) if isinstance(key, (str, os.PathLike)) else check_key(key)
    if isinstance(model, ImageRaterModel):
        return simulate_image_answers(key, model, n_raters, seed)
    methods = sorted(set(key["method"]))
    splits = sorted(set(key["split"]))
    missing = [s for s in splits if s not in model.shares]
    if missing:
        raise ConfigError(f"the rater model has no true shares for split(s) {', '.join(missing)}")
    for s in splits:
        if sorted(model.shares[s]) != methods:
            raise ConfigError(f"true shares of split {s!r} name {', '.join(sorted(model.shares[s]))}; "
                              f"the key has {', '.join(methods)}")
    rng = np.random.default_rng(seed)
    panels = list(dict.fromkeys(key["panel"]))
    by_panel = {p: g for p, g in key.groupby("panel", sort=False)}
    positions = [list(by_panel[p]["position"]) for p in panels]
    method_idx = np.array([[methods.index(m) for m in by_panel[p]["method"]] for p in panels])   # (P, M)
    split_idx = np.array([splits.index(by_panel[p]["split"].iloc[0]) for p in panels])          # (P,)
    true = np.array([[model.shares[s][m] for m in methods] for s in splits])                    # (S, M)
    tastes = np.stack([rater_tastes(true[s], model.concentration, (n_raters,), rng)
                       for s in range(len(splits))], axis=1)                                   # (R, S, M)
    log_pi = np.log(tastes)[:, split_idx[:, None], method_idx]                                 # (R, P, M)
    utility = log_pi + rng.gumbel(size=log_pi.shape)
    first = np.array([[pos == "A" for pos in pp] for pp in positions], dtype=float)
    utility = utility + model.position_bias * first
    pick = utility.argmax(axis=2)                                                              # (R, P)
    rating = _ratings(model, utility, n_raters, rng)
    return _answer_frame(n_raters, panels, positions, pick, rating, model.ratings)


def write_answers(answers, out_dir: str | os.PathLike) -> list[Path]:
    """One CSV per rater (``answers_<rater>.csv``), as the form saves them; atomic writes."""
    out_dir = Path(out_dir)
    paths = []
    for rater, group in answers.groupby("rater", sort=True):
        buf = io.StringIO()
        group.to_csv(buf, index=False, lineterminator="\n")
        paths.append(write_text(buf.getvalue(), out_dir / f"answers_{rater}.csv"))
    return paths


# ---------------------------------------------------------------------------------------------
# power

@dataclass(frozen=True)
class PowerConfig:
    """A power study: how often would the analysis show 'target beats every competitor'?"""

    n_methods: int = 7                         # RegGAN + six competitors, as in the paper's panels
    n_panels: int = 40                         # panels each rater answers (assumption)
    improvements: tuple[float, ...] = (0.1, 0.25, 0.3, 0.5)   # the paper quotes ~0.25-0.30
    n_raters: tuple[int, ...] = (10, 20, 40, 80, 120, 160, 240)
    n_sims: int = 400                          # simulated studies per point
    alpha: float = 0.05
    concentration: float = 50.0                # rater heterogeneity, as in RaterModel
    seed: int = 0

    def __post_init__(self) -> None:
        checks = [("n_methods", "--methods", self.n_methods >= 2, "must be >= 2 (the target and a competitor)"),
                  ("n_panels", "--panels", self.n_panels >= 1, "must be >= 1"),
                  ("n_sims", "--sims", self.n_sims >= 1, "must be >= 1"),
                  ("n_raters", "--raters", len(self.n_raters) > 0 and min(self.n_raters) >= 2,
                   "must be whole numbers >= 2"),
                  ("improvements", "--improvements", len(self.improvements) > 0
                   and all(math.isfinite(v) and v > -1 for v in self.improvements), "must be finite numbers > -1"),
                  ("alpha", "--alpha", 0 < self.alpha < 1, "must be between 0 and 1, e.g. 0.05"),
                  ("concentration", "--concentration", math.isfinite(self.concentration) and self.concentration > 0,
                   "must be a finite number > 0")]
        for name, flag, ok, what in checks:
            if not ok:
                raise ConfigError(f"power setting {name}={getattr(self, name)!r} ({flag}) {what}")


def _success(counts: np.ndarray, alpha: float) -> dict[str, np.ndarray]:
    """counts (S, R, M) picks, target at index 0 -> per simulated study, was every comparison won?"""
    target, others = counts[..., :1], counts[..., 1:]
    k, other = target.sum(axis=1), others.sum(axis=1)                              # (S, 1), (S, M-1)
    p_bin = holm(binomial_two_sided(np.broadcast_to(k, other.shape), k + other))
    answers = counts.sum(axis=2, keepdims=True)
    diff = np.moveaxis((target - others) / answers, 1, 2)                          # (S, M-1, R)
    p_t = holm(one_sample_t(diff))
    return {TESTS[0]: np.all((p_bin < alpha) & (k > other), axis=1),
            TESTS[1]: np.all((p_t < alpha) & (diff.mean(axis=2) > 0), axis=1)}


def power_curve(config: PowerConfig = PowerConfig()):
    """Table: improvement, n_raters, test, power (share of simulated studies that show the claim), se."""
    import pandas as pd

    rng = np.random.default_rng(config.seed)
    methods = [f"m{j}" for j in range(config.n_methods)]
    rows = []
    for ri in config.improvements:
        shares = np.array(list(improvement_shares(methods, "m0", ri).values()))
        for n in config.n_raters:
            tastes = rater_tastes(shares, config.concentration, (config.n_sims, n), rng)
            counts = rng.multinomial(config.n_panels, tastes).astype(float)          # (S, R, M)
            for test, ok in _success(counts, config.alpha).items():
                power = float(ok.mean())
                rows.append({"improvement": ri, "n_raters": n, "test": test, "power": power,
                             "mc_se": math.sqrt(max(power * (1 - power), 1e-12) / config.n_sims)})
    return pd.DataFrame(rows)


def raters_needed(curve, power: float = 0.8):
    """Smallest simulated number of raters reaching ``power``, per improvement and test (NaN: none)."""
    import pandas as pd

    rows = []
    for (ri, test), g in curve.groupby(["improvement", "test"], sort=True):
        ok = g[g["power"] >= power]["n_raters"]
        rows.append({"improvement": ri, "test": test, f"raters_for_power_{power:g}":
                     int(ok.min()) if len(ok) else float("nan")})
    return pd.DataFrame(rows)
