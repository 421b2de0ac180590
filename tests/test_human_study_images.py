"""Demo panels from the repository's real methods, image measures and the image-responsive raters.

References are independent of the code under test: the multinomial-logit pick probability
computed with ``scipy.special.softmax``, the models' own ``translate`` and the blend formula
x + s (f(x) - x) written out here, Fleiss' kappa from statsmodels.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.special import softmax
from statsmodels.stats.inter_rater import aggregate_raters
from statsmodels.stats.inter_rater import fleiss_kappa as sm_fleiss_kappa

from reggan_core.config import RefinerConfig
from reggan_core.errors import ConfigError, DataError
from reggan_core.human_study import (ImageRaterModel, StudyInput, attach_measures, build_study, check_key,
                                     collect_items, expected_shares, identical_outputs, make_method_outputs,
                                     measure_outputs, method_descriptions, read_key, simulate_answers)
from reggan_core.imageio import load_image, save_image
from reggan_core.model import RegGAN
from reggan_core.regression import RidgeConfig


def measured_key(z: np.ndarray, split: str = "id", seed: int = 0) -> pd.DataFrame:
    """A key of P panels x M methods with measures z (P, M, 2), columns shuffled per panel."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(z.shape[0]):
        order = rng.permutation(z.shape[1])
        for pos, m in enumerate(order):
            rows.append({"panel": f"P{p:03d}", "split": split, "item": f"i{p}", "position": "ABCDEFG"[pos],
                         "method": f"m{m}", "expression_p": z[p, m, 0], "identity_fss": z[p, m, 1]})
    return pd.DataFrame(rows)


def test_expected_shares_are_the_logit_probabilities():
    z = np.random.default_rng(1).uniform(0.0, 1.0, (6, 4, 2))
    key = measured_key(z)
    model = ImageRaterModel(weights={"expression_p": 3.0, "identity_fss": 2.0}, taste_sd=0.0, noise=0.7)
    got = expected_shares(key, model).query("split == 'id'").set_index("method")["share"]
    ref = softmax((3.0 * z[..., 0] + 2.0 * z[..., 1]) / 0.7, axis=1).mean(axis=0)
    assert np.allclose(got[[f"m{m}" for m in range(4)]], ref, atol=1e-12)
    # swapping two methods' images swaps their shares: the raters respond to the images
    swapped = z.copy()
    swapped[:, [0, 1]] = swapped[:, [1, 0]]
    got2 = expected_shares(measured_key(swapped), model).query("split == 'id'").set_index("method")["share"]
    assert got2["m0"] == pytest.approx(got["m1"]) and got2["m1"] == pytest.approx(got["m0"])


def test_simulated_picks_follow_the_image_model():
    z = np.random.default_rng(2).uniform(0.0, 1.0, (30, 4, 2))
    key = measured_key(z)
    model = ImageRaterModel(weights={"expression_p": 4.0, "identity_fss": 1.0}, taste_sd=0.5)
    truth = expected_shares(key, model, n_draws=40000).query("split == 'id'").set_index("method")["share"]
    answers = simulate_answers(key, model, n_raters=80, seed=3)
    picked = answers[answers["best"] == 1].merge(key, on=["panel", "position"])["method"]
    freq, n = picked.value_counts(normalize=True), len(picked)
    for m, s in truth.items():    # tastes make answers correlated: 5 naive SE is still a loose bound
        assert abs(freq.get(m, 0.0) - s) < 5 * np.sqrt(s * (1 - s) / n), (m, freq.get(m), s)
    # ratings follow utilities: the method with the largest true share has the largest mean rating
    rated = answers.merge(key, on=["panel", "position"]).groupby("method")["rating"].mean()
    assert rated.idxmax() == truth.idxmax()


def test_identical_images_get_equal_shares_and_raters_agree_only_when_images_differ():
    base = np.random.default_rng(4).uniform(0.0, 1.0, (20, 1, 2))
    same = np.repeat(base, 4, axis=1)                          # every option the same image
    model = ImageRaterModel()
    shares = expected_shares(measured_key(same), model).query("split == 'id'")["share"]
    assert np.allclose(shares, 0.25, atol=1e-12)

    def kappa(z):
        key = measured_key(z)
        ans = simulate_answers(key, model, n_raters=30, seed=5)
        picks = ans[ans["best"] == 1].merge(key, on=["panel", "position"])
        wide = picks.pivot(index="panel", columns="rater", values="method")
        codes = wide.apply(lambda c: c.map({f"m{m}": m for m in range(4)})).to_numpy()
        return sm_fleiss_kappa(aggregate_raters(codes)[0])

    differ = same.copy()       # in each panel another method shows the expression clearly
    differ[np.arange(20), np.arange(20) % 4, 0] += 0.8
    assert abs(kappa(same)) < 0.05
    assert kappa(differ) > 0.1


def test_image_rater_model_checks_its_input():
    with pytest.raises(ConfigError, match="noise"):
        ImageRaterModel(noise=0.0)
    with pytest.raises(ConfigError, match="at least one measure"):
        ImageRaterModel(weights={})
    key = measured_key(np.zeros((2, 3, 2))).drop(columns="identity_fss")
    with pytest.raises(ConfigError, match="identity_fss"):
        simulate_answers(key, ImageRaterModel(), n_raters=2)


def tiny_models():
    torch.manual_seed(0)
    reggan = RegGAN(["happy", "sad"], refiner=RefinerConfig(ngf=4), ridge=RidgeConfig(size=16)).eval()
    for layer in reggan.ridges.values():      # a ridge that does something: darken + offset
        with torch.no_grad():
            layer.weight.mul_(0).add_(0.05)
            layer.bias.fill_(0.1)
    base = RegGAN(["happy", "sad"], refiner=RefinerConfig(ngf=4), ridge=None).eval()
    with torch.no_grad():                     # untrained refiners are near-identity maps: make them act
        for model in (reggan, base):
            for p in model.refiner.parameters():
                p.add_(0.5 * torch.randn_like(p))
    return reggan, base


def test_method_outputs_are_the_models_outputs(tmp_path):
    reggan, base = tiny_models()
    faces = np.random.default_rng(6).integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)
    inputs = [StudyInput("id", "a_happy", faces[0], "happy"), StudyInput("ood", "b_sad", faces[1], "sad")]
    dirs, manifest = make_method_outputs(inputs, reggan, base, tmp_path, exaggeration=1.5)
    assert list(dirs) == list(method_descriptions(1.5)) == ["copy_input", "regression", "refiner_only", "RegGAN",
                                                            "RegGAN_x1.5"]
    assert len(manifest) == 2 * 5 and set(manifest["target"]) == {"happy", "sad"}
    for inp in inputs:
        out = {m: load_image(dirs[m] / inp.split / f"{inp.item}.png", min_size=1) for m in dirs}
        full = reggan.translate(inp.face, inp.target)
        x = torch.from_numpy(inp.face).permute(2, 0, 1).float() / 127.5 - 1
        xt = x[None]
        labels = torch.tensor([reggan.label(inp.target)])
        with torch.no_grad():
            refined, _ = reggan(xt, labels)
        blend = (xt + 1.5 * (refined - xt)).clamp(-1, 1)[0]
        expect = ((blend.permute(1, 2, 0).numpy() + 1) * 127.5)
        assert np.array_equal(out["copy_input"], inp.face)
        assert np.array_equal(out["regression"], full["regression"])
        assert np.array_equal(out["RegGAN"], full["refined"])
        assert np.array_equal(out["refiner_only"], base.translate(inp.face, inp.target)["refined"])
        assert np.abs(out["RegGAN_x1.5"].astype(float) - expect).max() <= 1.0    # rounding to uint8
        assert not np.array_equal(out["RegGAN_x1.5"], out["RegGAN"])
    items = collect_items(tmp_path / "inputs", dirs)
    assert identical_outputs(items) == []
    with pytest.raises(ConfigError, match="exaggeration"):
        make_method_outputs(inputs, reggan, base, tmp_path / "x", exaggeration=1.0)
    with pytest.raises(ConfigError, match="no ridge layer"):
        make_method_outputs(inputs, base, base, tmp_path / "y")
    with pytest.raises(DataError, match="twice"):
        make_method_outputs(inputs + inputs[:1], reggan, base, tmp_path / "z")


def test_identical_outputs_are_found(tmp_path):
    img = np.random.default_rng(7).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    other = 255 - img
    save_image(img, tmp_path / "inputs" / "f.png")
    for m, arr in (("a", img), ("b", other), ("c", img)):
        save_image(arr, tmp_path / m / "f.png")
    items = collect_items(tmp_path / "inputs", {m: tmp_path / m for m in "abc"})
    assert identical_outputs(items) == ["id/f: methods a and c have pixel-identical outputs"]


class FakeClassifier:
    classes = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
    name = "fake"

    def predict(self, images):      # probability of "happy" = mean brightness, the rest uniform
        out = []
        for im in images:
            p = im.mean() / 255.0
            out.append([(1 - p) / 6] * 3 + [p] + [(1 - p) / 6] * 3)
        return np.array(out)


class FakeEmbedder:
    name = "fake"

    def embed(self, images):        # embedding = mean colour
        return np.array([im.reshape(-1, 3).mean(0) for im in images], float), np.ones(len(images), bool)


def test_measures_are_the_classifier_and_embedder_outputs(tmp_path):
    rng = np.random.default_rng(8)
    rows = []
    for i in range(3):
        face = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
        inp = save_image(face, tmp_path / f"in{i}.png")
        for m, arr in (("copy", face), ("dark", (face // 2).astype(np.uint8)), ("red", face * [1, 0, 0])):
            out = save_image(arr.astype(np.uint8), tmp_path / m / f"in{i}.png")
            rows.append({"split": "id", "item": f"in{i}", "target": "happy", "method": m,
                         "input": str(inp), "output": str(out)})
    table = pd.DataFrame(rows)
    got = measure_outputs(table, classifier=FakeClassifier(), embedder=FakeEmbedder())
    for r in got.itertuples():
        a = load_image(r.input, min_size=1).reshape(-1, 3).mean(0)
        b = load_image(r.output, min_size=1).reshape(-1, 3).mean(0)
        assert r.identity_fss == pytest.approx(a @ b / np.linalg.norm(a) / np.linalg.norm(b))
        assert r.expression_p == pytest.approx(load_image(r.output, min_size=1).mean() / 255.0)
    assert np.allclose(got.loc[got["method"] == "copy", "identity_fss"], 1.0)
    with pytest.raises(ConfigError, match="no class for target"):
        measure_outputs(table.assign(target="awed"), classifier=FakeClassifier(), embedder=FakeEmbedder())
    # attached to a built study's key, every panel row gets its measures
    dirs = {m: tmp_path / m for m in ("copy", "dark", "red")}
    (tmp_path / "inputs").mkdir()
    for i in range(3):
        (tmp_path / "inputs" / f"in{i}.png").write_bytes((tmp_path / f"in{i}.png").read_bytes())
    files = build_study(tmp_path / "inputs", dirs, tmp_path / "built", panel_images=False)
    key = attach_measures(read_key(files.key), got)
    assert len(key) == 9 and key["expression_p"].notna().all()
    check_key(key)
    with pytest.raises(ConfigError, match="no measures"):
        attach_measures(read_key(files.key), got[got["method"] != "red"])
