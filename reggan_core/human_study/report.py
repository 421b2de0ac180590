"""The whole analysis of a study: tables per split (and overall), written as CSV and markdown.

``analyse`` returns DataFrames; ``write_tables`` writes each as ``<name>.csv`` and ``<name>.md``;
``write_report`` adds the figures and a ``summary.md`` that collects everything with the
definitions a reader needs.
"""
from __future__ import annotations

import io
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from ..imageio import write_text
from .agreement import fleiss_kappa, krippendorff_alpha
from .responses import Responses
from .stats import (ChoiceData, method_index, chi_square_uniform, friedman, head_to_head, mean_ratings,
                    posthoc_wilcoxon, preference_shares, rating_blocks, relative_improvement_table)

log = logging.getLogger(__name__)
ALL = "all"


@dataclass(frozen=True)
class AnalysisConfig:
    """Settings of the analysis (defaults are common choices, not from the paper)."""

    target: str = "RegGAN"          # the method whose improvement is measured
    n_boot: int = 2000              # bootstrap replicates
    ci: float = 0.95                # confidence level
    cluster: str = "rater"          # bootstrap resampling unit: "rater" or "rater+panel"
    block: str = "rater"            # Friedman blocks: "rater" (independent) or "rater+panel"
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.n_boot, bool) or not isinstance(self.n_boot, int) or self.n_boot < 1:
            raise ConfigError(f"n_boot={self.n_boot!r} (--n-boot) must be a whole number >= 1, e.g. 2000")


def _groups(frame, splits: tuple[str, ...]):
    yield ALL, frame
    if len(splits) > 1:
        for s in splits:
            yield s, frame[frame["split"] == s]


def _with_split(table, split: str):
    table = table.copy()
    table.insert(0, "split", split)
    return table


def _agreement_rows(split: str, choices, ratings, methods) -> list[dict]:
    rows = []
    if len(choices):
        raters = sorted(set(choices["rater"]))
        panels = sorted(set(choices["panel"]))
        grid = np.full((len(raters), len(panels)), np.nan)
        grid[[raters.index(r) for r in choices["rater"]], [panels.index(p) for p in choices["panel"]]] = \
            [methods.index(m) for m in choices["method"]]
        answered = (~np.isnan(grid)).sum(axis=0)
        full = answered == answered.max()
        table = np.stack([(grid[:, full] == m).sum(axis=0) for m in range(len(methods))], axis=1)
        kappa = fleiss_kappa(table) if answered.max() >= 2 else float("nan")
        rows.append({"measure": "Fleiss' kappa (picks)", "value": kappa, "units": int(full.sum()),
                     "raters": int(answered.max())})
        alpha = krippendorff_alpha(grid, "nominal") if answered.max() >= 2 else float("nan")
        rows.append({"measure": "Krippendorff's alpha, nominal (picks)", "value": alpha,
                     "units": len(panels), "raters": len(raters)})
    if len(ratings):
        wide = ratings.pivot_table(index="rater", columns=["panel", "method"], values="rating")
        if len(wide) >= 2:
            for level in ("interval", "ordinal"):
                rows.append({"measure": f"Krippendorff's alpha, {level} (ratings)",
                             "value": krippendorff_alpha(wide.to_numpy(float), level),
                             "units": wide.shape[1], "raters": len(wide)})
    return [{"split": split, **r} for r in rows]


def analyse(responses: Responses, config: AnalysisConfig = AnalysisConfig()) -> dict:
    """All tables of the analysis, each with a ``split`` column ('all', then each split)."""
    import pandas as pd

    methods = list(responses.methods)
    method_index(methods, config.target)
    boot = dict(n_boot=config.n_boot, ci=config.ci, seed=config.seed)
    out: dict[str, list] = {k: [] for k in ("shares", "relative_improvement", "choice_tests", "head_to_head",
                                            "ratings", "friedman", "posthoc", "agreement")}
    for split, choices in _groups(responses.choices, responses.splits):
        if len(choices) == 0:
            continue
        data = ChoiceData.from_frame(choices, methods)
        out["shares"].append(_with_split(preference_shares(data, cluster=config.cluster, **boot), split))
        out["relative_improvement"].append(_with_split(
            relative_improvement_table(data, config.target, cluster=config.cluster, **boot), split))
        for test, counts, what in (("chi-square: picks uniform over methods", data.totals, "methods"),
                                   ("chi-square: picks uniform over positions (position bias)",
                                    choices["position"].value_counts().reindex(
                                        sorted(set(responses.choices["position"])), fill_value=0).to_numpy(),
                                    "positions")):
            stat, df, p = chi_square_uniform(counts)
            out["choice_tests"].append(pd.DataFrame([{"split": split, "test": test, "statistic": stat, "df": df,
                                                      "p_value": p, "answers": int(np.sum(counts))}]))
        out["head_to_head"].append(_with_split(head_to_head(data, config.target), split))
    for split, ratings in _groups(responses.ratings, responses.splits):
        if len(ratings) == 0:
            continue
        out["ratings"].append(_with_split(mean_ratings(ratings, methods, **boot), split))
        _, table = rating_blocks(ratings, methods, config.block)
        if table.shape[0] >= 2:
            res = friedman(table)
            out["friedman"].append(pd.DataFrame([{"split": split, "blocks": config.block,
                                                  "statistic": res.statistic, "df": res.df, "p_value": res.p_value,
                                                  "kendall_w": res.kendall_w, "n_blocks": res.n_blocks}]))
            out["posthoc"].append(_with_split(posthoc_wilcoxon(table, methods, config.target), split))
    for split, choices in _groups(responses.choices, responses.splits):
        ratings = responses.ratings if split == ALL else responses.ratings[responses.ratings["split"] == split]
        rows = _agreement_rows(split, choices, ratings, methods)
        if rows:
            out["agreement"].append(pd.DataFrame(rows))
    return {k: pd.concat(v, ignore_index=True) for k, v in out.items() if v}


# ---------------------------------------------------------------------------------------------
# writing

def _cell(value) -> str:
    if isinstance(value, (float, np.floating)):
        if math.isnan(value):
            return "n/a"
        if value != 0 and abs(value) < 1e-3:
            return f"{value:.1e}"
        return f"{value:.3f}"
    return str(value).replace("|", "\\|")


def markdown_table(table) -> str:
    """A DataFrame as a GitHub markdown table (floats to 3 decimals, tiny p-values in e-notation)."""
    header = "| " + " | ".join(map(str, table.columns)) + " |"
    rule = "|" + "|".join("---" for _ in table.columns) + "|"
    body = ["| " + " | ".join(_cell(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join([header, rule] + body) + "\n"


def write_tables(tables: dict, out_dir: str | os.PathLike) -> list[Path]:
    """Write each table as ``<name>.csv`` and ``<name>.md`` (atomic writes)."""
    out_dir = Path(out_dir)
    paths = []
    for name, table in tables.items():
        buf = io.StringIO()
        table.to_csv(buf, index=False, lineterminator="\n")
        paths.append(write_text(buf.getvalue(), out_dir / f"{name}.csv"))
        paths.append(write_text(markdown_table(table), out_dir / f"{name}.md"))
    return paths


SUMMARY_NOTES = {
    "shares": "Preference share = picks of a method / all answers; {ci:.0%} percentile intervals from "
              "{n_boot} bootstrap replicates resampling {cluster}s.",
    "relative_improvement": "Relative improvement of {target} over a reference = share({target}) / share(reference) "
                            "- 1; 'best competitor' is re-chosen in every bootstrap replicate; 'chance' = 1/K.",
    "choice_tests": "Pearson chi-square goodness of fit against equal counts. Answers are treated as "
                    "independent; use the bootstrap intervals for clustered uncertainty.",
    "head_to_head": "{target} vs each competitor among answers picking either: exact two-sided binomial test "
                    "(answers independent) and a one-sample t-test of per-rater share differences "
                    "(clustered by rater); Holm-corrected over competitors.",
    "ratings": "Mean rating with rater-clustered bootstrap intervals.",
    "friedman": "Friedman test over blocks of mean ratings per {block} (tie-corrected); "
                "Kendall's W = statistic / (n (k - 1)).",
    "posthoc": "Wilcoxon signed-rank tests of {target} vs each competitor on the same blocks, Holm-corrected.",
    "agreement": "Fleiss' kappa uses panels answered by all raters; Krippendorff's alpha allows missing answers. "
                 "Alpha: 1 = perfect agreement, 0 = chance level.",
}


def write_report(responses: Responses, out_dir: str | os.PathLike,
                 config: AnalysisConfig = AnalysisConfig()) -> dict[str, Path]:
    """Run :func:`analyse`, write tables, figures (``figures/``) and ``summary.md`` under ``out_dir``."""
    from .plots import plot_ratings, plot_relative_improvement, plot_shares, save_figure

    out_dir = Path(out_dir)
    tables = analyse(responses, config)
    write_tables(tables, out_dir / "tables")
    figures = {"shares": save_figure(plot_shares(tables["shares"], config.target),
                                     out_dir / "figures" / "shares.png"),
               "relative_improvement": save_figure(plot_relative_improvement(tables["relative_improvement"],
                                                                             config.target),
                                                   out_dir / "figures" / "relative_improvement.png")}
    if "ratings" in tables:
        figures["ratings"] = save_figure(plot_ratings(tables["ratings"], config.target),
                                         out_dir / "figures" / "ratings.png")
    fmt = dict(target=config.target, n_boot=config.n_boot, ci=config.ci, cluster=config.cluster,
               block=config.block)
    parts = [f"# Human study analysis\n\n{len(responses.raters)} raters, {len(responses.panels)} panels, "
             f"{len(responses.methods)} methods ({', '.join(responses.methods)}), splits: "
             f"{', '.join(responses.splits)}; target method: {config.target}.\n"]
    for name, table in tables.items():
        parts.append(f"## {name.replace('_', ' ')}\n\n{SUMMARY_NOTES[name].format(**fmt)}\n\n{markdown_table(table)}")
    parts.append("## figures\n\n" + "\n".join(f"![{k}](figures/{p.name})" for k, p in figures.items()) + "\n")
    summary = write_text("\n".join(parts), out_dir / "summary.md")
    log.info("analysis written to %s", out_dir)
    return {"summary": summary, "tables": out_dir / "tables", **figures}
