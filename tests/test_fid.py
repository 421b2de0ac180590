"""FID and KID against scipy's sqrtm formula, closed forms and scikit-learn's kernel; feature caching."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import linalg
from sklearn.metrics.pairwise import polynomial_kernel as sk_poly

from reggan_core.errors import RegGANError
from reggan_core.metrics import fid as F


def scipy_fid(mu1, s1, mu2, s2):
    """The textbook formula with scipy.linalg.sqrtm (the reference)."""
    covmean = linalg.sqrtm(s1 @ s2)
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean).real)


def close(a, b, scale):
    assert abs(a - b) <= 1e-6 * max(1.0, abs(scale)), (a, b)


@pytest.mark.parametrize("d,n", [(8, 100), (32, 500), (64, 40), (64, 65)])
@pytest.mark.parametrize("method", ["eigh", "sqrtm"])
def test_fid_matches_scipy_sqrtm_on_random_covariances(d, n, method):
    rng = np.random.default_rng(d * 1000 + n)
    a = rng.normal(size=(n, d))
    b = rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) * 0.3 + 0.5
    mu1, s1 = F.gaussian_stats(a)
    mu2, s2 = F.gaussian_stats(b)
    np.testing.assert_allclose(s1, np.cov(a.T))
    ref = scipy_fid(mu1, s1, mu2, s2)
    close(F.frechet_distance(mu1, s1, mu2, s2, method=method), ref, ref)
    close(F.fid_from_features(a, b, method=method), ref, ref)


@pytest.mark.parametrize("cond", [1e4, 1e8, 1e12])
@pytest.mark.parametrize("method", ["eigh", "sqrtm"])
def test_fid_matches_scipy_sqrtm_on_ill_conditioned_covariances(cond, method):
    rng = np.random.default_rng(int(np.log10(cond)))
    d = 24
    q1, _ = np.linalg.qr(rng.normal(size=(d, d)))
    q2, _ = np.linalg.qr(rng.normal(size=(d, d)))
    w = np.logspace(0, -np.log10(cond), d)
    s1, s2 = (q1 * w) @ q1.T, (q2 * w[::-1]) @ q2.T
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    ref = scipy_fid(mu1, s1, mu2, s2)
    close(F.frechet_distance(mu1, s1, mu2, s2, method=method), ref, ref)


def test_fid_closed_forms():
    # 1-D Gaussians: (m1 - m2)^2 + (sd1 - sd2)^2
    assert F.frechet_distance([1.0], [[4.0]], [3.0], [[9.0]]) == pytest.approx(4 + 1)
    # commuting (diagonal) covariances: ||dmu||^2 + sum (sqrt a - sqrt b)^2
    a, b = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
    want = 3.0 + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    for method in ("eigh", "sqrtm"):
        assert F.frechet_distance(np.zeros(3), np.diag(a), np.ones(3), np.diag(b), method=method) == pytest.approx(want)
    # identical sets -> 0; symmetric
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(50, 5)), rng.normal(size=(60, 5)) * 2
    assert F.fid_from_features(x, x) == pytest.approx(0, abs=1e-9)
    assert F.fid_from_features(x, y) == pytest.approx(F.fid_from_features(y, x), rel=1e-9)


def test_fid_safeguards(monkeypatch):
    # a non-PSD "covariance" is refused by both methods (complex root / negative eigenvalue)
    bad = np.diag([1.0, -1.0])
    for method in ("eigh", "sqrtm"):
        with pytest.raises(RegGANError):
            F.frechet_distance(np.zeros(2), bad, np.zeros(2), np.eye(2), method=method)
    with pytest.raises(RegGANError, match="same feature space"):
        F.frechet_distance(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))
    with pytest.raises(RegGANError, match="unknown FID method"):
        F.frechet_distance(np.zeros(2), np.eye(2), np.zeros(2), np.eye(2), method="svd")
    # a non-finite root of a near-singular product triggers the eps * I offset
    calls = []
    real_sqrtm = linalg.sqrtm

    def flaky_sqrtm(m, *args, **kwargs):
        calls.append(m.copy())
        return np.full_like(m, np.nan) if len(calls) == 1 else real_sqrtm(m, *args, **kwargs)

    monkeypatch.setattr(F.linalg, "sqrtm", flaky_sqrtm)
    s1, s2 = np.diag([1.0, 1e-12]), np.diag([1e-12, 1.0])
    got = F.frechet_distance(np.zeros(2), s1, np.zeros(2), s2, method="sqrtm", eps=1e-6)
    off = np.eye(2) * 1e-6
    np.testing.assert_allclose(calls[1], (s1 + off) @ (s2 + off))
    assert got == pytest.approx(np.trace(s1 + s2) - 2 * np.trace(real_sqrtm((s1 + off) @ (s2 + off))).real)


def test_mmd_unbiased_matches_direct_sum_with_sklearn_kernel():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(7, 4)), rng.normal(size=(9, 4)) + 0.5
    kxx, kyy, kxy = (sk_poly(p, q, degree=3, gamma=1 / 4, coef0=1) for p, q in ((x, x), (y, y), (x, y)))
    want = (sum(kxx[i, j] for i in range(7) for j in range(7) if i != j) / (7 * 6)
            + sum(kyy[i, j] for i in range(9) for j in range(9) if i != j) / (9 * 8)
            - 2 * kxy.sum() / (7 * 9))
    assert F.mmd2_unbiased(x, y) == pytest.approx(want, rel=1e-12)
    # subsets as large as both sets are permutations of them: KID = the full-set MMD^2, std 0
    mean, std = F.kid(x, y[:7], n_subsets=5, subset_size=1000)
    assert mean == pytest.approx(F.mmd2_unbiased(x, y[:7]), rel=1e-10) and std == pytest.approx(0, abs=1e-12)


def test_kid_is_unbiased_and_detects_a_shift():
    """Same distribution: the U-statistic averages to ~0 (the V-statistic with diagonals does not)."""
    rng = np.random.default_rng(2)
    u, v = [], []
    for _ in range(300):
        x, y = rng.normal(size=(8, 3)), rng.normal(size=(8, 3))
        u.append(F.mmd2_unbiased(x, y))
        k = lambda p, q: F.polynomial_kernel(p, q)  # noqa: E731
        v.append(k(x, x).mean() + k(y, y).mean() - 2 * k(x, y).mean())
    se = np.std(u) / np.sqrt(len(u))
    assert abs(np.mean(u)) < 3 * se
    assert np.mean(v) > 10 * np.std(v) / np.sqrt(len(v))
    x, y = rng.normal(size=(200, 3)), rng.normal(size=(200, 3)) + 1.0
    mean, std = F.kid(x, y, n_subsets=20, subset_size=100)
    assert mean > 5 * std > 0


def _fake_extractor(counter):
    def fn(batch):
        counter.append(len(batch))
        return np.stack([img.reshape(-1, 3).mean(0) for img in batch])
    return F.FeatureExtractor("fake", "per-channel mean (3-d)", fn)


def test_feature_cache_roundtrip(tmp_path):
    rng = np.random.default_rng(3)
    imgs = rng.integers(0, 256, (6, 16, 16, 3), dtype=np.uint8)
    calls: list[int] = []
    ext = _fake_extractor(calls)
    a = F.cached_features(imgs, ext, tmp_path, tag="real")
    b = F.cached_features(imgs, ext, tmp_path, tag="real")
    assert calls == [6] and np.array_equal(a, b)
    files = list(tmp_path.glob("real-fake-*.npz"))
    assert len(files) == 1
    data = F.load_features(files[0])
    assert data["space"] == "fake" and data["n"] == 6
    np.testing.assert_allclose(data["mu"], a.mean(0))
    np.testing.assert_allclose(data["sigma"], np.cov(a.T))
    F.cached_features(imgs[:4], ext, tmp_path, tag="real")   # other content -> recomputed
    assert calls == [6, 4]
    files[0].write_bytes(b"garbage")
    with pytest.raises(RegGANError, match="unreadable"):
        F.load_features(files[0])


def test_rows_name_their_feature_space():
    rng = np.random.default_rng(4)
    ext = _fake_extractor([])
    rows = F.fid_kid_rows(rng.normal(size=(30, 3)), rng.normal(size=(20, 3)), ext, kid_subsets=5)
    assert [r["metric"] for r in rows] == ["FID[fake]", "KID[fake]"]
    assert all(r["feature_space"] == "fake" and "3-d" in r["network"] and r["n_generated"] == 20 for r in rows)
    with pytest.raises(RegGANError, match="unknown feature space"):
        F.get_extractor("pixels")


def test_inception_space_runs_the_projects_module_on_a_given_state_dict(tmp_path, monkeypatch):
    """The wiring: FID[inception] features are InceptionV3FID's on the TF-resized, (x-128)/128 input."""
    from reggan_core.metrics import inception as I

    torch.manual_seed(0)
    model = I.InceptionV3FID()
    with torch.no_grad():   # random but non-degenerate weights: the wiring, not the network, is tested
        for name, p in model.named_parameters():
            p.copy_(torch.randn_like(p) * (0.05 if name.endswith("weight") else 0.01))
    weights = tmp_path / "inception.pt"
    torch.save(model.state_dict(), weights)
    F._inception_features.cache_clear()
    ext = F.get_extractor("inception", inception_weights=weights)
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (2, 64, 48, 3), dtype=np.uint8)
    with torch.no_grad():
        ref = model.eval()(I.images_to_input(list(imgs))).double().numpy()
    np.testing.assert_allclose(ext(imgs), ref, rtol=1e-5, atol=1e-6)
    assert ext.space == "inception" and "2015-12-05" in ext.label and ref.shape == (2, 2048)
    F._inception_features.cache_clear()


def test_missing_inception_weights_are_unavailable_in_one_line(tmp_path):
    F._inception_features.cache_clear()
    with pytest.raises(F.MetricUnavailable) as err:
        F.get_extractor("inception", inception_weights=tmp_path / "nope.pt")
    assert "\n" not in str(err.value) and "reggan_core.metrics.setup" in str(err.value)


def test_sample_size_note_names_the_sizes_and_the_bias():
    note = F.sample_size_note(24, 24, 2048)
    assert "24 real vs 24 generated" in note and "biased upward" in note and "< 0" in note
    assert "biased" not in F.sample_size_note(5000, 5000, 2048)


def test_fid_of_two_halves_of_one_distribution_shrinks_like_one_over_n():
    """FID's plug-in bias: for N(0, I_d) samples E[FID] > 0 and falls roughly as 1/N (Chong & Forsyth 2020)."""
    rng = np.random.default_rng(5)
    d = 8
    mean_fid = {n: np.mean([F.fid_from_features(rng.normal(size=(n, d)), rng.normal(size=(n, d)))
                            for _ in range(20)]) for n in (50, 200, 800)}
    assert mean_fid[50] > mean_fid[200] > mean_fid[800] > 0
    # mean term alone: E||mu1 - mu2||^2 = 2d/N exactly; FID adds a positive covariance term of the same order
    assert mean_fid[800] > 2 * d / 800 * 0.8
    assert 2.5 < mean_fid[200] / mean_fid[800] < 6   # ~4x for 4x the samples


def test_unbiased_kid_scatters_around_zero_and_goes_negative_for_one_distribution():
    rng = np.random.default_rng(6)
    vals = [F.mmd2_unbiased(rng.normal(size=(20, 4)), rng.normal(size=(20, 4))) for _ in range(200)]
    assert min(vals) < 0 < max(vals)
    assert abs(np.mean(vals)) < 3 * np.std(vals) / np.sqrt(len(vals))   # mean 0 within its standard error


@pytest.mark.parametrize("n,m,d", [(24, 24, 2048), (10, 30, 64), (50, 40, 8)])
def test_low_rank_fid_equals_scipy_sqrtm_formula(n, m, d):
    """The nuclear-norm form is exact: same value as the covariance form with scipy's sqrtm."""
    rng = np.random.default_rng(n + m + d)
    a = rng.normal(size=(n, d)) * rng.uniform(0.5, 2, d)
    b = rng.normal(size=(m, d)) + 0.3
    mu1, s1, mu2, s2 = a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False)
    ref = scipy_fid(mu1, s1, mu2, s2) if d <= 256 else F.fid_from_features(a, b, method="eigh")
    got = F.fid_low_rank(a, b)
    assert got == pytest.approx(ref, rel=1e-6, abs=1e-6 * abs(ref))
    assert F.fid_from_features(a, b) == pytest.approx(got, rel=1e-12)   # 'auto' picks it here
    assert F.fid_low_rank(a, a) == pytest.approx(0, abs=1e-9 * np.trace(s1))
