"""Human study: panels and form, answer validation, statistics against references, simulation."""
from __future__ import annotations

import base64
import csv
import io
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import krippendorff
import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy import stats as sps
from statsmodels.stats.inter_rater import aggregate_raters
from statsmodels.stats.inter_rater import fleiss_kappa as sm_fleiss_kappa
from statsmodels.stats.multitest import multipletests

from reggan_core.errors import ConfigError, DataError
from reggan_core.human_study import (AnalysisConfig, ChoiceData, FormConfig, PowerConfig, RaterModel,
                                     ResponseError, analyse, binomial_two_sided, bootstrap_shares, build_study,
                                     check_responses, chi_square_uniform, collect_items, fleiss_kappa, friedman,
                                     holm, improvement_shares, krippendorff_alpha, load_responses, make_panels,
                                     one_sample_t, posthoc_wilcoxon, power_curve, preference_shares,
                                     read_key, relative_improvement_table, render_form, simulate_answers,
                                     write_answers)
from reggan_core.human_study.__main__ import main
from reggan_core.human_study.stats import bootstrap_sums, percentile_interval
from reggan_core.imageio import load_image, save_image

METHODS = ("RegGAN", "StarGANx", "GANimationx", "USGANx")   # made-up names: must never reach the form
HEADER = ["rater", "panel", "position", "best", "rating"]


def make_folders(root: Path, n_id: int = 3, n_ood: int = 2, size: int = 64) -> tuple[Path, dict[str, Path]]:
    rng = np.random.default_rng(0)
    for split, n in (("id", n_id), ("ood", n_ood)):
        for i in range(n):
            save_image(rng.integers(0, 256, (size, size, 3), dtype=np.uint8), root / "inputs" / split / f"face{i}.png")
            for m in METHODS:
                save_image(rng.integers(0, 256, (size, size, 3), dtype=np.uint8), root / m / split / f"face{i}.png")
    return root / "inputs", {m: root / m for m in METHODS}


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    inputs, methods = make_folders(root)
    return build_study(inputs, methods, root / "built", seed=3, form=FormConfig(image_size=64),
                       panel_images=False)


@pytest.fixture(scope="module")
def key(study):
    return read_key(study.key)


def answer_rows(key: pd.DataFrame, rater: str, pick: str = "RegGAN", rating_of=None) -> list[list[str]]:
    """Complete, valid answers of one rater: picks ``pick`` everywhere, ratings from ``rating_of``."""
    rating_of = rating_of or {m: 1 + k % 5 for k, m in enumerate(METHODS)}
    return [[rater, r.panel, r.position, "1" if r.method == pick else "0", str(rating_of[r.method])]
            for r in key.itertuples()]


def write_csv(path: Path, rows: list[list[str]], header=HEADER) -> Path:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return path


# ---------------------------------------------------------------------------------------------
# panels, key and form

def test_key_maps_every_panel_to_a_shuffled_order(study, key):
    assert len(study.panels) == 5
    assert sorted(set(key["split"])) == ["id", "ood"]
    for panel, group in key.groupby("panel"):
        assert sorted(group["method"]) == sorted(METHODS)
        assert list(group["position"]) == ["A", "B", "C", "D"]
        # the key points at the real output file of that method
        assert all(f"/{m}/" in out for m, out in zip(group["method"], group["output"]))
    # the column order is not the same in every panel
    orders = {tuple(g["method"]) for _, g in key.groupby("panel")}
    assert len(orders) > 1


def test_panels_are_reproducible_from_the_seed(tmp_path):
    inputs, methods = make_folders(tmp_path, n_id=8, n_ood=0)
    items = collect_items(inputs, methods)
    same = [p.columns for p in make_panels(items, seed=1)] == [p.columns for p in make_panels(items, seed=1)]
    other = [p.columns for p in make_panels(items, seed=1)] != [p.columns for p in make_panels(items, seed=2)]
    assert same and other


def test_missing_output_is_named(tmp_path):
    inputs, methods = make_folders(tmp_path)
    (methods["USGANx"] / "ood" / "face1.png").unlink()
    with pytest.raises(DataError, match=r"method USGANx has no output for input ood/face1"):
        collect_items(inputs, methods)
    # outputs named like `python -m reggan_core.generate` writes them: <stem>_<target>.png
    (methods["USGANx"] / "ood" / "face0.png").rename(methods["USGANx"] / "ood" / "face0_happy.png")
    save_image(np.zeros((64, 64, 3), np.uint8), methods["USGANx"] / "ood" / "face1_happy.png")
    items = collect_items(inputs, methods)
    assert dict(items[-2].outputs)["USGANx"].name == "face0_happy.png"
    save_image(np.zeros((64, 64, 3), np.uint8), methods["USGANx"] / "ood" / "face1_happy_regression.png")
    with pytest.raises(DataError, match="2 candidate outputs for input ood/face1"):
        collect_items(inputs, methods)
    with pytest.raises(DataError, match="at least 2 methods"):
        collect_items(inputs, {"RegGAN": methods["RegGAN"]})


class _Collect(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def test_form_is_self_contained_and_blind(study, key):
    text = study.form.read_text()
    parser = _Collect()
    parser.feed(text)
    tags = parser.tags
    sections = [a for t, a in tags if t == "section"]
    assert sorted(a["data-panel"] for a in sections) == sorted(set(key["panel"]))
    radios = [a for t, a in tags if t == "input" and a.get("type") == "radio"]
    assert sum(a["name"].startswith("best-") for a in radios) == len(key)
    assert sum(a["name"].startswith("rate-") for a in radios) == 5 * len(key)
    images = [a["src"] for t, a in tags if t == "img"]
    assert len(images) == len(key) + len(sections)
    assert all(src.startswith("data:image/png;base64,") for src in images)
    # nothing is fetched: no external URL, stylesheet, script file or CSS url()
    assert not any(t in ("link", "iframe") or (t == "script" and "src" in a) for t, a in tags)
    visible = re.sub(r"data:image/[a-z]+;base64,[A-Za-z0-9+/=]+", "", text)
    assert not re.search(r"https?:|ftp:|//[a-z]", visible, re.I)
    style = re.search(r"<style>(.*?)</style>", text, re.S).group(1)
    assert not re.search(r"url\(|@import", style, re.I)
    assert not re.search(r"fetch\(|XMLHttpRequest|WebSocket|import\(", visible)
    # blind: no method name, output path or key file anywhere outside the image data
    for word in list(METHODS) + ["key.csv", "methods", "/inputs/"]:
        assert word.lower() not in visible.lower(), word
    for out in key["output"]:
        assert out not in text


def test_form_images_are_the_pixels_shown(study, key):
    """The embedded PNG of a position is the output of the method the key names for it."""
    text = study.form.read_text()
    panel = key[key["panel"] == key["panel"].iloc[0]]
    block = re.search(rf'<section class="panel" data-panel="{panel["panel"].iloc[0]}".*?</section>', text, re.S)
    srcs = re.findall(r'src="data:image/png;base64,([^"]+)"', block.group(0))
    decoded = [np.asarray(Image.open(io.BytesIO(base64.b64decode(s))).convert("RGB")) for s in srcs]
    np.testing.assert_array_equal(decoded[0], load_image(panel["input"].iloc[0], min_size=1))
    for img, out in zip(decoded[1:], panel["output"]):
        np.testing.assert_array_equal(img, load_image(out, min_size=1))


@pytest.mark.skipif(shutil.which("node") is None, reason="node not installed")
def test_form_script_parses(study, tmp_path):
    script = re.search(r"<script>(.*?)</script>", study.form.read_text(), re.S).group(1)
    (tmp_path / "form.js").write_text(script)
    subprocess.run(["node", "--check", str(tmp_path / "form.js")], check=True, capture_output=True)


def test_picks_only_form_has_no_rating_inputs(study):
    text = render_form(study.panels[:1], FormConfig(ratings=False, image_size=64))
    assert 'name="best-' in text and 'name="rate-' not in text
    with pytest.raises(ConfigError):
        FormConfig(scale=(5, 1))


# ---------------------------------------------------------------------------------------------
# loading and validation

def test_valid_answers_join_the_key(tmp_path, key):
    rating_of = {"RegGAN": 5, "StarGANx": 2, "GANimationx": 3, "USGANx": 1}
    write_csv(tmp_path / "a.csv", answer_rows(key, "ana", "RegGAN", rating_of))
    write_csv(tmp_path / "b.csv", answer_rows(key, "bo", "USGANx", rating_of))
    r = load_responses(tmp_path, key)
    assert r.raters == ["ana", "bo"]
    assert len(r.choices) == 2 * key["panel"].nunique()
    assert set(r.choices[r.choices["rater"] == "ana"]["method"]) == {"RegGAN"}
    assert set(r.choices[r.choices["rater"] == "bo"]["method"]) == {"USGANx"}
    assert (r.ratings["rating"] == r.ratings["method"].map(rating_of)).all()
    # the split comes from the key
    merged = r.choices.merge(key.drop_duplicates("panel")[["panel", "split"]], on="panel")
    assert (merged["split_x"] == merged["split_y"]).all()


def test_method_column_instead_of_position(tmp_path, key):
    rows = [[r[0], r[1], m, r[3], r[4]] for r, m in zip(answer_rows(key, "cy"), key["method"])]
    write_csv(tmp_path / "m.csv", rows, ["rater", "panel", "method", "best", "rating"])
    assert set(load_responses(tmp_path, key).choices["method"]) == {"RegGAN"}


def _break(rows, kind, key):
    """Introduce one fault; return (rows, header, data-row index the problem names, expected text)."""
    header = list(HEADER)
    first_panel = rows[0][1]
    if kind == "unknown panel":
        rows[3][1] = "P999"
        return rows, header, 3, "unknown panel 'P999'"
    if kind == "unknown position":
        rows[2][2] = "Z"
        return rows, header, 2, "unknown position 'Z'"
    if kind == "unknown method":
        header[2] = "method"
        for r, m in zip(rows, key["method"]):
            r[2] = m
        rows[5][2] = "Pix2Pixx"
        return rows, header, 5, "unknown method 'Pix2Pixx'"
    if kind == "duplicate row":
        rows.insert(6, list(rows[1]))
        return rows, header, 6, "duplicate answer: rater ana, panel"
    if kind == "two picks":
        picked = next(i for i, r in enumerate(rows) if r[1] == first_panel and r[3] == "1")
        i = next(i for i, r in enumerate(rows) if r[1] == first_panel and r[3] == "0")
        rows[i][3] = "1"
        return rows, header, max(i, picked), "marked 2 outputs best"     # named at the second pick
    if kind == "no pick":
        for r in rows:
            if r[1] == first_panel:
                r[3] = "0"
        return rows, header, 0, "picked no best output"
    if kind == "missing rating":
        rows[7][4] = ""
        return rows, header, 7, "missing answer: no rating"
    if kind == "rating out of range":
        rows[4][4] = "7"
        return rows, header, 4, "rating 7 is out of range 1-5"
    if kind == "rating not a number":
        rows[4][4] = "good"
        return rows, header, 4, "rating 'good' is not a whole number"
    if kind == "best not 0/1":
        rows[1][3] = "2"
        return rows, header, 1, "best 2 is out of range 0-1"
    if kind == "missing position":
        del rows[2]
        return rows, header, 0, "has no row for panel"
    raise AssertionError(kind)


KINDS = ["unknown panel", "unknown position", "unknown method", "duplicate row", "two picks", "no pick",
         "missing rating", "rating out of range", "rating not a number", "best not 0/1", "missing position"]


@pytest.mark.parametrize("kind", KINDS)
def test_each_problem_is_one_line_naming_file_and_row(tmp_path, key, kind):
    rows, header, index, expected = _break(answer_rows(key, "ana"), kind, key)
    # a second, clean rater must not produce any problem
    write_csv(tmp_path / "good.csv", answer_rows(key, "bo"))
    bad = write_csv(tmp_path / "bad.csv", rows, header)
    if kind == "unknown panel":   # the replaced row is now also missing from its real panel
        problems = check_responses(tmp_path, key)[1]
        assert any(expected in p for p in problems)
        problems = [p for p in problems if expected in p]
    else:
        _, problems = check_responses(tmp_path, key)
    assert len(problems) == 1, problems
    line = problems[0]
    assert "\n" not in line and expected in line, line
    assert line.startswith(f"{bad}, row {index + 2}:"), line     # header = row 1, first data row = row 2
    with pytest.raises(ResponseError) as err:
        load_responses(tmp_path, key)
    assert str(err.value).splitlines() == err.value.problems


def test_missing_panels_error_or_warning(tmp_path, key):
    rows = [r for r in answer_rows(key, "ana") if r[1] != key["panel"].iloc[-1]]
    path = write_csv(tmp_path / "partial.csv", rows)
    _, problems = check_responses(tmp_path, key)
    assert len(problems) == 1 and problems[0].startswith(f"{path}: missing answer: rater ana answered 4 of 5")
    with pytest.warns(UserWarning, match="answered 4 of 5"):
        r = load_responses(tmp_path, key, allow_missing=True)
    assert len(r.choices) == 4


def test_bad_header_and_missing_key(tmp_path, key):
    path = write_csv(tmp_path / "h.csv", [["ana", "P001", "A"]], ["rater", "panel", "position"])
    _, problems = check_responses(tmp_path, key)
    assert problems == [f"{path}, row 1: header lacks column(s) best and/or rating; "
                        "expected rater,panel,position,best,rating"]
    with pytest.raises(DataError, match="does not exist"):
        load_responses(tmp_path, tmp_path / "nokey.csv")


# ---------------------------------------------------------------------------------------------
# statistics against reference implementations

def test_fleiss_kappa_matches_statsmodels():
    rng = np.random.default_rng(1)
    for n_raters, probs in ((5, [0.2] * 5), (8, [0.6, 0.2, 0.1, 0.05, 0.05]), (3, [0.5, 0.5])):
        table = rng.multinomial(n_raters, probs, size=40)
        assert fleiss_kappa(table) == pytest.approx(sm_fleiss_kappa(table, method="fleiss"), abs=1e-12)
    with pytest.raises(DataError, match="same number"):
        fleiss_kappa([[2, 1], [1, 1]])


@pytest.mark.parametrize("level", ["nominal", "ordinal", "interval", "ratio"])
def test_krippendorff_alpha_matches_package(level):
    rng = np.random.default_rng(2)
    truth = rng.integers(1, 6, size=60)
    data = np.clip(truth + rng.integers(-1, 2, size=(6, 60)), 1, 5).astype(float)
    data[rng.random(data.shape) < 0.25] = np.nan          # missing answers
    expected = krippendorff.alpha(reliability_data=data, level_of_measurement=level)
    assert krippendorff_alpha(data, level) == pytest.approx(expected, abs=1e-10)
    assert krippendorff_alpha(data, level) > 0.3           # built-in agreement is found


def test_friedman_matches_scipy():
    rng = np.random.default_rng(3)
    for shape in ((12, 7), (5, 3), (30, 4)):
        table = rng.integers(1, 6, size=shape).astype(float)          # many ties
        ours = friedman(table)
        ref = sps.friedmanchisquare(*table.T)
        assert ours.statistic == pytest.approx(ref.statistic, rel=1e-10)
        assert ours.p_value == pytest.approx(ref.pvalue, rel=1e-10)
        assert ours.df == shape[1] - 1


def test_choice_tests_match_scipy_and_statsmodels():
    for k, n in ((0, 5), (3, 10), (17, 30), (60, 100), (50, 100), (9, 9)):
        assert binomial_two_sided(k, n) == pytest.approx(sps.binomtest(k, n, 0.5).pvalue, rel=1e-9)
    counts = np.array([30, 12, 9, 15, 14, 10, 10])
    stat, df, p = chi_square_uniform(counts)
    ref = sps.chisquare(counts)
    assert (stat, p) == pytest.approx((ref.statistic, ref.pvalue)) and df == 6
    for pvals in ([0.01, 0.04, 0.03, 0.2, 0.001, 0.5], [0.01, 0.011, 0.3, 0.29, 0.9]):   # the second needs
        np.testing.assert_allclose(holm(pvals), multipletests(pvals, method="holm")[1])   # the running max
    d = np.random.default_rng(4).normal(0.2, 1, size=15)
    assert one_sample_t(d) == pytest.approx(sps.ttest_1samp(d, 0).pvalue)


def test_posthoc_wilcoxon_matches_scipy():
    rng = np.random.default_rng(5)
    table = rng.normal(size=(14, 3)) + [0.8, 0.0, 0.1]
    out = posthoc_wilcoxon(table, ["a", "b", "c"], target="a")
    refs = [sps.wilcoxon(table[:, 0], table[:, j]).pvalue for j in (1, 2)]
    np.testing.assert_allclose(out["p_value"], refs)
    np.testing.assert_allclose(out["p_holm"], multipletests(refs, method="holm")[1])


def _one_hot_study(rng, shares, n_raters, n_panels, concentration):
    """(R, P, M) picks of raters with Dirichlet tastes around ``shares``."""
    tastes = rng.dirichlet(concentration * np.asarray(shares), size=n_raters)
    picks = np.stack([rng.choice(len(shares), size=n_panels, p=t) for t in tastes])
    return np.eye(len(shares))[picks]


def _data(counts):
    r, p, m = counts.shape
    return ChoiceData(tuple(map(str, range(r))), tuple(map(str, range(p))), tuple(f"m{j}" for j in range(m)), counts)


def test_bootstrap_interval_sanity():
    rng = np.random.default_rng(6)
    # one answer per rater: the rater bootstrap SE is the binomial SE sqrt(p (1 - p) / n)
    counts = _one_hot_study(rng, [0.3, 0.7], 400, 1, np.inf if False else 1e6)
    reps = bootstrap_shares(_data(counts), n_boot=4000, seed=0)
    p = counts[..., 0].mean()
    assert reps[:, 0].std() == pytest.approx(np.sqrt(p * (1 - p) / 400), rel=0.08)
    table = preference_shares(_data(counts), n_boot=500)
    assert ((table["ci_low"] <= table["share"]) & (table["share"] <= table["ci_high"])).all()
    # raters who disagree: clustered intervals are wider than intervals that treat answers as independent
    counts = _one_hot_study(rng, [0.3, 0.7], 20, 30, 2.0)
    clustered = bootstrap_shares(_data(counts), 2000)[:, 0].std()
    naive = bootstrap_shares(_data(counts.reshape(-1, 1, 2)), 2000)[:, 0].std()
    assert clustered > 1.5 * naive
    # two-way bootstrap: summing over resampled raters and panels equals the explicit loop
    w_sum = bootstrap_sums(counts, 3, seed=1, cluster="rater+panel")
    rr = np.random.default_rng(1)
    w = rr.multinomial(20, np.full(20, 1 / 20), size=3)
    v = rr.multinomial(30, np.full(30, 1 / 30), size=3)
    loop = np.array([[sum(w[b, i] * v[b, j] * counts[i, j, m] for i in range(20) for j in range(30))
                      for m in range(2)] for b in range(3)])
    np.testing.assert_allclose(w_sum, loop)


def test_bootstrap_interval_coverage():
    """95% rater-clustered intervals cover the true share in about 95% of simulated studies."""
    rng = np.random.default_rng(7)
    truth = np.array([0.25, 0.15, 0.15, 0.15, 0.15, 0.15])
    hits = 0
    for s in range(150):
        counts = _one_hot_study(rng, truth, 25, 12, 5.0)
        lo, hi = percentile_interval(bootstrap_shares(_data(counts), 400, seed=s), 0.95)
        hits += lo[0] <= truth[0] <= hi[0]
    assert 0.87 <= hits / 150 <= 0.995


def test_relative_improvement_is_the_share_ratio():
    rng = np.random.default_rng(8)
    counts = _one_hot_study(rng, [0.3, 0.2, 0.25, 0.25], 10, 20, 20.0)
    data = _data(counts)
    t = relative_improvement_table(data, "m0", n_boot=200)
    n = counts.sum(axis=(0, 1))
    row = t.set_index("reference")
    assert row.loc["m1", "relative_improvement"] == pytest.approx(n[0] / n[1] - 1)
    best = f"best competitor (m{1 + int(np.argmax(n[1:]))})"
    assert row.loc[best, "relative_improvement"] == pytest.approx(n[0] / n[1:].max() - 1)
    assert row.loc["chance", "relative_improvement"] == pytest.approx(4 * n[0] / n.sum() - 1)
    with pytest.raises(ConfigError, match="target method 'x'"):
        relative_improvement_table(data, "x")


# ---------------------------------------------------------------------------------------------
# simulation, recovery, power

def test_analysis_recovers_a_simulated_preference(tmp_path, key):
    truth = {"id": improvement_shares(METHODS, "RegGAN", 0.6), "ood": improvement_shares(METHODS, "RegGAN", 0.3)}
    # a bigger key: 24 panels, by repeating the small study's panels under new ids
    big = pd.concat([key.assign(panel=key["panel"] + f"-{k}") for k in range(6)], ignore_index=True)
    answers = simulate_answers(big, RaterModel(truth, concentration=30.0), n_raters=60, seed=0)
    write_answers(answers, tmp_path / "answers")
    responses = load_responses(tmp_path / "answers", big)
    tables = analyse(responses, AnalysisConfig(target="RegGAN", n_boot=500))
    shares = tables["shares"]
    for split, true in truth.items():
        est = shares[shares["split"] == split].set_index("method")
        for m, s in true.items():
            assert abs(est.loc[m, "share"] - s) < 0.045, (split, m)
    ri = tables["relative_improvement"].set_index(["split", "reference"])
    for split in truth:     # RI vs chance = K s_T - 1, known exactly
        true_ri = len(METHODS) * truth[split]["RegGAN"] - 1
        assert ri.loc[(split, "chance"), "ci_low"] <= true_ri <= ri.loc[(split, "chance"), "ci_high"]
    id_shares = shares[shares["split"] == "id"].set_index("method")["share"]
    assert id_shares.idxmax() == "RegGAN"
    # ratings follow the same utilities: RegGAN has the highest mean rating, Friedman detects it
    ratings = tables["ratings"][tables["ratings"]["split"] == "id"].set_index("method")["mean_rating"]
    assert ratings.idxmax() == "RegGAN"
    assert tables["friedman"].set_index("split").loc["id", "p_value"] < 0.05
    # agreement and Friedman in the report equal the reference packages on the same answers
    agree = tables["agreement"].set_index(["split", "measure"])["value"]
    wide = responses.choices.pivot(index="panel", columns="rater", values="method")
    codes = wide.apply(lambda col: col.map({m: i for i, m in enumerate(sorted(METHODS))}))
    assert agree[("all", "Fleiss' kappa (picks)")] == pytest.approx(
        sm_fleiss_kappa(aggregate_raters(codes.to_numpy())[0]), abs=1e-12)
    assert agree[("all", "Krippendorff's alpha, nominal (picks)")] == pytest.approx(
        krippendorff.alpha(reliability_data=codes.to_numpy(float).T, level_of_measurement="nominal"), abs=1e-10)
    rel = responses.ratings.pivot_table(index="rater", columns=["panel", "method"], values="rating")
    assert agree[("all", "Krippendorff's alpha, ordinal (ratings)")] == pytest.approx(
        krippendorff.alpha(reliability_data=rel.to_numpy(float), level_of_measurement="ordinal"), abs=1e-10)
    per_rater = responses.ratings.groupby(["rater", "method"])["rating"].mean().unstack()
    ref = sps.friedmanchisquare(*per_rater[sorted(METHODS)].to_numpy().T)
    assert tables["friedman"].set_index("split").loc["all", "statistic"] == pytest.approx(ref.statistic)


def test_simulated_picks_follow_the_true_shares(key):
    big = pd.concat([key.assign(panel=key["panel"] + f"-{k}") for k in range(40)], ignore_index=True)
    truth = {s: dict(zip(METHODS, [0.4, 0.3, 0.2, 0.1])) for s in ("id", "ood")}
    answers = simulate_answers(big, RaterModel(truth, concentration=float("inf")), n_raters=50, seed=1)
    picked = answers[answers["best"] == 1].merge(big, on=["panel", "position"])["method"]
    freq = picked.value_counts(normalize=True)
    n = len(picked)
    for m, s in truth["id"].items():   # identical raters: picks are multinomial, 4 SE tolerance
        assert abs(freq[m] - s) < 4 * np.sqrt(s * (1 - s) / n)


def test_power_grows_with_raters_and_clustered_test_keeps_its_level():
    curve = power_curve(PowerConfig(n_methods=4, n_panels=20, improvements=(0.5,), n_raters=(4, 16, 64),
                                    n_sims=300, seed=0))
    for test, g in curve.groupby("test"):
        assert g.sort_values("n_raters")["power"].is_monotonic_increasing, test
        assert g["power"].iloc[-1] > 0.5
    # no true difference, raters who disagree strongly: the answer-level binomial test rejects far too
    # often, the rater-level test stays near its (one-directional) level alpha / 2
    null = power_curve(PowerConfig(n_methods=2, n_panels=30, improvements=(0.0,), n_raters=(20,),
                                   n_sims=1000, concentration=2.0, seed=1)).set_index("test")["power"]
    assert null["rater-level t (clustered)"] < 0.025 + 0.02
    assert null["binomial (answers independent)"] > 0.1


# ---------------------------------------------------------------------------------------------
# command line, end to end

def test_cli_build_simulate_analyse_power(tmp_path, capsys):
    inputs, methods = make_folders(tmp_path / "src")
    args = ["build", "--inputs", str(inputs), "--out", str(tmp_path / "study"), "--image-size", "64"]
    for m, d in methods.items():
        args += ["--method", f"{m}={d}"]
    assert main(args) == 0
    assert (tmp_path / "study" / "for_raters" / "panels" / "P001.png").is_file()
    key = str(tmp_path / "study" / "key.csv")
    assert main(["simulate", "--key", key, "--out", str(tmp_path / "answers"), "--raters", "6"]) == 0
    assert main(["analyse", "--responses", str(tmp_path / "answers"), "--key", key, "--out",
                 str(tmp_path / "results"), "--n-boot", "200"]) == 0
    for name in ("shares", "relative_improvement", "head_to_head", "friedman", "agreement"):
        assert (tmp_path / "results" / "tables" / f"{name}.csv").is_file()
        assert (tmp_path / "results" / "tables" / f"{name}.md").read_text().startswith("| split |")
    for fig in ("shares", "relative_improvement", "ratings"):
        assert (tmp_path / "results" / "figures" / f"{fig}.png").stat().st_size > 1000
    assert main(["power", "--out", str(tmp_path / "power"), "--raters", "5", "10", "--sims", "50"]) == 0
    assert (tmp_path / "power" / "power.png").is_file()
    capsys.readouterr()
    assert main(["analyse", "--responses", str(tmp_path / "answers"), "--key", key, "--out",
                 str(tmp_path / "r2"), "--target", "Nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: target method 'Nope' is not in the study") and "\n" not in err


# ---------------------------------------------------------------------------------------------
# a real browser (optional: Debian chromium + playwright)

def _chromium():
    for name in ("chromium", "chromium-browser"):
        if shutil.which(name):
            return shutil.which(name)
    return None


@pytest.mark.skipif(_chromium() is None, reason="chromium not installed (make browser-deps)")
def test_form_in_headless_chromium(study, key, tmp_path):
    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=_chromium(), args=["--no-sandbox"])
        page = browser.new_page(accept_downloads=True)
        external = []
        page.on("request", lambda r: external.append(r.url)
                if not r.url.startswith(("file:", "data:", "blob:")) else None)
        page.goto(study.form.resolve().as_uri())
        page.fill("#rater", "dee")
        page.click("#start")
        sections = page.locator("section.panel")
        for i in range(sections.count()):
            s = sections.nth(i)
            pid = s.get_attribute("data-panel")
            positions = s.get_attribute("data-positions").split(",")
            s.locator(f'input[name="best-{pid}"][value="{positions[i % len(positions)]}"]').check()
            for k, pos in enumerate(positions):
                s.locator(f'input[name="rate-{pid}-{pos}"][value="{1 + (i + k) % 5}"]').check()
        assert page.text_content("#progress") == f"{sections.count()} of {sections.count()} panels complete"
        with page.expect_download() as download:
            page.click("#save")
        download.value.save_as(tmp_path / "answers" / download.value.suggested_filename)
        browser.close()
    assert external == []
    r = load_responses(tmp_path / "answers", key)
    assert r.raters == ["dee"] and len(r.choices) == key["panel"].nunique() and len(r.ratings) == len(key)
