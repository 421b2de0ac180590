"""The local ridge layer against independent references.

References: scikit-learn's Ridge fitted pixel by pixel on patches built here with NumPy
(np.pad + explicit slicing, independent of the layer's unfold), explicit per-pixel loops,
numpy least squares, and gradient descent on the ridge objective.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import Ridge

from reggan_core.errors import ConfigError
from reggan_core.regression import (FORMAT_VERSION, LocalRidge, RidgeAccumulator, RidgeConfig,
                                    extract_patches, iter_batches)

RTOL = 1e-6
BACKEND_NAMES = ["numba", "torch"]


@pytest.fixture(params=BACKEND_NAMES)
def backend(request) -> str:
    """Every closed-form test runs on both backends (fused numba kernels, torch tiled GEMM)."""
    return request.param


def ref_patches(x: np.ndarray, r: int, padding: str) -> np.ndarray:
    """(N, C, H, W) -> (N, C, r*r, H*W) with np.pad and explicit slicing (no unfold)."""
    h = r // 2
    mode = "constant" if padding == "zeros" else "edge"
    xp = np.pad(x, ((0, 0), (0, 0), (h, h), (h, h)), mode=mode)
    n, c, hgt, wid = x.shape
    out = np.empty((n, c, r * r, hgt * wid))
    for k in range(r * r):
        dy, dx = divmod(k, r)
        out[:, :, k] = xp[:, :, dy:dy + hgt, dx:dx + wid].reshape(n, c, -1)
    return out


def pixel_design(patches: np.ndarray, c: int, p: int, cross: bool) -> np.ndarray:
    """Design matrix (N, D) of output channel c, pixel p."""
    n = patches.shape[0]
    return patches[:, :, :, p].reshape(n, -1) if cross else patches[:, c, :, p]


def sklearn_coefs(x: np.ndarray, y: np.ndarray, cfg: RidgeConfig, pixels=None):
    """Per-pixel sklearn Ridge solutions: (weights (C, P, D), biases (C, P)) on `pixels`."""
    n, c, hgt, wid = x.shape
    patches = ref_patches(x, cfg.r, cfg.padding)
    pixels = range(hgt * wid) if pixels is None else pixels
    ws, bs = np.zeros((c, len(pixels), cfg.taps)), np.zeros((c, len(pixels)))
    for ch in range(c):
        for j, p in enumerate(pixels):
            a = pixel_design(patches, ch, p, cfg.cross_channel)
            t = y[:, ch].reshape(n, -1)[:, p]
            if cfg.regularize_bias:
                m = Ridge(alpha=cfg.lam, fit_intercept=False).fit(np.c_[a, np.ones(n)], t)
                ws[ch, j], bs[ch, j] = m.coef_[:-1], m.coef_[-1]
            else:
                m = Ridge(alpha=cfg.lam, fit_intercept=True).fit(a, t)
                ws[ch, j], bs[ch, j] = m.coef_, m.intercept_
    return ws, bs


def assert_matches_sklearn(model: LocalRidge, x, y, pixels=None):
    cfg = model.config
    ws, bs = sklearn_coefs(x, y, cfg, pixels)
    c = cfg.channels
    w = model.weight.detach().double().reshape(c, -1, cfg.taps).numpy()
    b = model.bias.detach().double().reshape(c, -1).numpy()
    if pixels is not None:
        w, b = w[:, pixels], b[:, pixels]
    ours = np.concatenate([w, b[..., None]], -1)
    ref = np.concatenate([ws, bs[..., None]], -1)
    rel = np.linalg.norm(ours - ref, axis=-1) / np.linalg.norm(ref, axis=-1)
    assert rel.max() < RTOL, f"max per-pixel relative error {rel.max():.2e}"


def random_pairs(n=24, c=3, s=8, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, c, s, s, generator=g, dtype=dtype) * 2 - 1
    # targets depend on the inputs (plus noise) so the weights are not all near zero
    y = 0.6 * torch.roll(x, 1, dims=-1) - 0.3 * x + 0.1 * torch.randn(n, c, s, s, generator=g, dtype=dtype)
    return x, y


@pytest.mark.parametrize("r", [1, 3, 5])
@pytest.mark.parametrize("regularize_bias", [True, False])
@pytest.mark.parametrize("padding", ["zeros", "replicate"])
def test_per_channel_matches_sklearn_random(r, regularize_bias, padding, backend):
    cfg = RidgeConfig(r=r, lam=0.4, regularize_bias=regularize_bias, padding=padding, size=8)
    x, y = random_pairs()
    model = LocalRidge(cfg).double().fit((x, y), batch_size=10, backend=backend)
    assert_matches_sklearn(model, x.numpy(), y.numpy())


@pytest.mark.parametrize("regularize_bias", [True, False])
@pytest.mark.parametrize("padding", ["zeros", "replicate"])
def test_cross_channel_matches_sklearn_on_concatenated_patches(regularize_bias, padding, backend):
    cfg = RidgeConfig(lam=0.7, regularize_bias=regularize_bias, cross_channel=True, size=6, padding=padding)
    x, y = random_pairs(n=40, s=6, seed=1)
    model = LocalRidge(cfg).double().fit((x, y), batch_size=16, backend=backend)
    assert model.weight.shape == (3, 6, 6, 27)
    assert_matches_sklearn(model, x.numpy(), y.numpy())


def test_float32_model_matches_sklearn_to_float32_precision(backend):
    cfg = RidgeConfig(size=8)
    x, y = random_pairs(dtype=torch.float32)
    model = LocalRidge(cfg).fit((x, y), backend=backend)
    assert model.weight.dtype == torch.float32
    ws, bs = sklearn_coefs(x.double().numpy(), y.double().numpy(), cfg)
    np.testing.assert_allclose(model.weight.detach().reshape(3, -1, 9).numpy(), ws, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(model.bias.detach().reshape(3, -1).numpy(), bs, rtol=1e-4, atol=1e-6)


@pytest.fixture(scope="module")
def embedded_pairs():
    from reggan_core.data import DEFAULT_ROOT, PairedFaces, index_dataset

    if not DEFAULT_ROOT.is_dir() or not any(DEFAULT_ROOT.iterdir()):
        pytest.skip(f"embedded dataset not found at {DEFAULT_ROOT}; generate it (make dataset) to run this test")
    index = index_dataset(DEFAULT_ROOT)
    pairs = PairedFaces(index, "neutral", "happy", align=False)
    x, y = pairs.tensors()
    return x.double(), y.double()


@pytest.mark.parametrize("regularize_bias", [True, False])
def test_matches_sklearn_on_embedded_face_pairs(embedded_pairs, regularize_bias, backend):
    x, y = embedded_pairs
    cfg = RidgeConfig(regularize_bias=regularize_bias)
    model = LocalRidge(cfg).double().fit((x, y), batch_size=8, backend=backend)
    s = cfg.size
    rng = np.random.default_rng(0)
    corners = [0, s - 1, s * (s - 1), s * s - 1]
    pixels = sorted(set(corners) | set(rng.choice(s * s, 60, replace=False).tolist()))
    assert_matches_sklearn(model, x.numpy(), y.numpy(), pixels)


def test_fit_from_a_paired_faces_dataset_equals_fit_from_tensors(embedded_pairs):
    from reggan_core.data import DEFAULT_ROOT, PairedFaces, index_dataset

    dataset = PairedFaces(index_dataset(DEFAULT_ROOT), "neutral", "happy", align=False)
    x, y = embedded_pairs
    from_dataset = LocalRidge(RidgeConfig()).fit(dataset, batch_size=5)
    from_tensors = LocalRidge(RidgeConfig()).fit((x.float(), y.float()), batch_size=64)
    torch.testing.assert_close(from_dataset.weight, from_tensors.weight, rtol=1e-5, atol=1e-6)
    assert int(from_dataset.n_fitted) == len(dataset)


def test_streamed_fit_equals_one_shot_fit(backend):
    x, y = random_pairs(n=23, seed=3)
    cfg = RidgeConfig(size=8)
    one_shot = LocalRidge(cfg).double().fit((x, y), batch_size=len(x), backend=backend)
    streamed = LocalRidge(cfg).double().fit((x, y), batch_size=4, backend=backend)
    dataset = [(x[i], y[i], "label") for i in range(len(x))]          # items (x, y, extra)
    from_items = LocalRidge(cfg).double().fit(dataset, batch_size=5, backend=backend)
    batches = (b for b in [(x[:7], y[:7]), (x[7:], y[7:])])             # an iterator of batches
    from_batches = LocalRidge(cfg).double().fit(batches, batch_size=3, backend=backend)
    for other in (streamed, from_items, from_batches):
        torch.testing.assert_close(other.weight, one_shot.weight, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(other.bias, one_shot.bias, rtol=1e-12, atol=1e-12)
        assert int(other.n_fitted) == len(x)


@pytest.mark.parametrize("r", [3, 5])
@pytest.mark.parametrize("cross_channel", [False, True])
def test_tiled_gram_equals_direct_sums(cross_channel, r):
    """Whatever the tile size and memory band (torch) and with the correlation images (numba),
    every pixel's Gram matrix and right-hand side equal the direct sums over samples of a a^T
    and a y (a = [patch, 1])."""
    x, y = random_pairs(n=6, s=10, seed=4)
    cfg = RidgeConfig(r=r, size=10, cross_channel=cross_channel, padding="replicate")
    patches = ref_patches(x.numpy(), r, "replicate")                     # (N, C, r*r, P)
    n, c = 6, 3
    if cross_channel:
        a = patches.reshape(n, 1, c * r * r, -1)                            # (N, G=1, D, P)
        t = y.numpy().reshape(n, 1, c, -1)                                  # (N, G, T=C, P)
    else:
        a, t = patches, y.numpy().reshape(n, c, 1, -1)
    a = np.concatenate([a, np.ones((n, a.shape[1], 1, a.shape[-1]))], 2)
    gram_ref = np.einsum("ngkp,nglp->gpkl", a, a).reshape(-1, a.shape[2], a.shape[2])
    rhs_ref = np.einsum("ngkp,ngop->gpko", a, t).reshape(-1, a.shape[2], t.shape[2])
    accumulators = [RidgeAccumulator(cfg, tile=tile, band_bytes=band, backend="torch")
                    for tile, band in [(1, 1), (3, 1), (4, 2**30), (16, 2**30)]]
    accumulators.append(RidgeAccumulator(cfg, backend="numba"))
    for acc in accumulators:
        acc.update(x[:2], y[:2])
        acc.update(x[2:], y[2:])
        gram, rhs = acc.gram_rhs()
        np.testing.assert_allclose(gram.numpy(), gram_ref, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(rhs.numpy(), rhs_ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("r", [1, 3, 7])
@pytest.mark.parametrize("cross_channel", [False, True])
@pytest.mark.parametrize("padding", ["zeros", "replicate"])
@pytest.mark.parametrize("grad", [True, False], ids=["unfold-path", "shift-add-path"])
def test_forward_equals_explicit_pixel_loop(cross_channel, padding, r, grad):
    """Both forward paths (unfold with gradients, shift-and-add without) against a per-pixel loop."""
    cfg = RidgeConfig(r=r, size=5, cross_channel=cross_channel, padding=padding)
    torch.manual_seed(0)
    model = LocalRidge(cfg).double()
    with torch.no_grad():
        model.weight.normal_()
        model.bias.normal_()
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64)
    with torch.set_grad_enabled(grad):
        out = model(x)
    assert out.requires_grad == grad
    out = out.detach().numpy()
    h = cfg.r // 2
    xp = np.pad(x.numpy(), ((0, 0), (0, 0), (h, h), (h, h)), mode="constant" if padding == "zeros" else "edge")
    w, b = model.weight.detach().numpy(), model.bias.detach().numpy()
    ref = np.zeros_like(out)
    for n in range(2):
        for c in range(3):
            for i in range(5):
                for j in range(5):
                    window = xp[n, :, i:i + cfg.r, j:j + cfg.r]          # (C, r, r)
                    taps = window.reshape(-1) if cross_channel else window[c].reshape(-1)
                    ref[n, c, i, j] = taps @ w[c, i, j] + b[c, i, j]
    np.testing.assert_allclose(out, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("cross_channel", [False, True])
def test_forward_gradients_match_finite_differences(cross_channel):
    """The forward is differentiable in the input, the weights and the bias (fine-tuning)."""
    torch.manual_seed(1)
    model = LocalRidge(RidgeConfig(r=3, size=4, cross_channel=cross_channel, padding="replicate")).double()
    with torch.no_grad():
        model.weight.normal_()
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    w, b = model.weight, model.bias

    def f(x, w, b):
        return torch.func.functional_call(model, {"weight": w, "bias": b}, (x,))

    assert torch.autograd.gradcheck(f, (x, w, b))


def test_inference_copy_of_weights_follows_every_change():
    """The tap-major copy used without gradients is re-made after in-place updates and loads."""
    torch.manual_seed(2)
    model = LocalRidge(RidgeConfig(r=3, size=6)).double()
    x = torch.randn(1, 3, 6, 6, dtype=torch.float64)
    ref = lambda: model._forward_unfold(x).detach()  # noqa: E731
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref())
        model.weight.normal_()                     # in place (as an optimiser step is)
        torch.testing.assert_close(model(x), ref())
    other = LocalRidge(RidgeConfig(r=3, size=6)).double()
    with torch.no_grad():
        other.weight.uniform_()
    model.load_state_dict(other.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(model(x), other._forward_unfold(x).detach())
        assert model(x).sub(x).abs().max() > 0.1   # really the loaded weights, not the identity
    assert model.tap_major_weight().shape == (3, 9, 6, 6)


def test_layer_made_under_inference_mode_runs():
    """Inference tensors carry no version counter; the layer must still run (and stay exact)."""
    with torch.inference_mode():
        model = LocalRidge(RidgeConfig(r=3, size=6)).double()
        model.weight.normal_()
        x = torch.randn(1, 3, 6, 6, dtype=torch.float64)
        torch.testing.assert_close(model(x), model._forward_unfold(x))


def test_new_layer_is_identity_map():
    for cross in (False, True):
        model = LocalRidge(RidgeConfig(size=6, cross_channel=cross))
        x = torch.rand(2, 3, 6, 6)
        torch.testing.assert_close(model(x), x)


def test_zero_padding_taps_outside_the_image_get_zero_weight():
    """Documented border rule: with zeros padding, a tap that always reads padding has weight 0."""
    x, y = random_pairs(n=30, s=6, seed=5)
    model = LocalRidge(RidgeConfig(size=6, padding="zeros")).double().fit((x, y))
    w = model.weight.detach()
    # pixel (0, 0): taps of the row above (k = 0, 1, 2) and the column left (k = 0, 3, 6)
    assert w[:, 0, 0, [0, 1, 2, 3, 6]].abs().max() == 0
    assert w[:, -1, -1, [2, 5, 6, 7, 8]].abs().max() == 0
    assert w[:, 2, 2].abs().min() > 0


def test_replicate_padding_reads_the_edge_pixel():
    x = torch.arange(16, dtype=torch.float64).view(1, 1, 4, 4)
    p = extract_patches(x, 3, "replicate")[0, 0]        # (9, 16)
    assert p[:, 0].tolist() == [0, 0, 1, 0, 0, 1, 4, 4, 5]   # corner (0, 0)
    p0 = extract_patches(x, 3, "zeros")[0, 0]
    assert p0[:, 0].tolist() == [0, 0, 0, 0, 0, 1, 0, 4, 5]


def test_large_lambda_drives_weights_to_zero():
    x, y = random_pairs(seed=6)
    norms = []
    for lam in (0.1, 10.0, 1e3, 1e9):
        m = LocalRidge(RidgeConfig(size=8, lam=lam)).double().fit((x, y))
        norms.append(float(torch.cat([m.weight.flatten(), m.bias.flatten()]).detach().norm()))
    assert all(a > b for a, b in zip(norms, norms[1:]))
    assert norms[-1] < 1e-6 * norms[0]


def test_lambda_zero_equals_least_squares(backend):
    x, y = random_pairs(n=40, s=4, seed=7)
    cfg = RidgeConfig(r=1, size=4, lam=0.0, cross_channel=True)   # r=1: no padding taps
    model = LocalRidge(cfg).double().fit((x, y), backend=backend)
    patches = ref_patches(x.numpy(), 1, "zeros")
    for c in range(3):
        for p in range(16):
            a = np.c_[pixel_design(patches, c, p, True), np.ones(40)]
            sol = np.linalg.lstsq(a, y[:, c].reshape(40, -1)[:, p].numpy(), rcond=None)[0]
            ours = np.r_[model.weight[c].reshape(16, 3)[p].detach().numpy(), model.bias[c].reshape(-1)[p].item()]
            np.testing.assert_allclose(ours, sol, rtol=1e-8, atol=1e-9)


def test_lambda_zero_with_border_padding_is_refused(backend):
    """r > 1 border pixels see zero or repeated taps: singular without the ridge term."""
    x, y = random_pairs(n=40, s=6, seed=7)
    for padding in ("zeros", "replicate"):
        with pytest.raises(ConfigError, match="border pixels"):
            LocalRidge(RidgeConfig(size=6, lam=0.0, padding=padding)).fit((x, y), backend=backend)


def test_not_positive_definite_is_a_one_line_error_naming_lambda_and_n(backend):
    x, y = random_pairs(n=5, s=6)
    with pytest.raises(ConfigError) as err:
        LocalRidge(RidgeConfig(size=6, lam=0.0)).fit((x, y), backend=backend)
    msg = str(err.value)
    assert "lambda=0" in msg and "N=5" in msg and "\n" not in msg


def test_closed_form_is_the_minimum_of_the_ridge_objective():
    """Gradient-descent mode: the fitted point is stationary for the loss that GD would minimise."""
    x, y = random_pairs(n=20, s=6, seed=8)
    for rb in (True, False):
        model = LocalRidge(RidgeConfig(size=6, regularize_bias=rb)).double()
        start = model.ridge_objective(x, y)
        start.backward()
        g0 = torch.cat([model.weight.grad.flatten(), model.bias.grad.flatten()]).norm()
        model.zero_grad()
        model.fit((x, y))
        model.ridge_objective(x, y).backward()
        g1 = torch.cat([model.weight.grad.flatten(), model.bias.grad.flatten()]).norm()
        assert g1 < 1e-9 * g0


def test_gradient_descent_reaches_the_closed_form():
    x, y = random_pairs(n=20, s=4, seed=9)
    cfg = RidgeConfig(size=4, lam=1.0)
    closed = LocalRidge(cfg).double().fit((x, y))
    gd = LocalRidge(cfg).double()
    opt = torch.optim.LBFGS(gd.parameters(), lr=1, max_iter=500, tolerance_grad=1e-12,
                            tolerance_change=1e-15, history_size=50, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = gd.ridge_objective(x, y)
        loss.backward()
        return loss

    opt.step(closure)
    torch.testing.assert_close(gd.weight, closed.weight, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(gd.bias, closed.bias, rtol=1e-5, atol=1e-6)


def test_parameters_are_trainable_end_to_end():
    x, y = random_pairs(n=8, s=8, dtype=torch.float32)
    model = LocalRidge(RidgeConfig(size=8)).fit((x, y))
    assert all(p.requires_grad for p in model.parameters())
    before = model.weight.detach().clone()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    loss = (model(x) - 1.0).abs().mean()     # some other loss, as inside RegGAN
    loss.backward()
    opt.step()
    assert not torch.equal(before, model.weight.detach())


def test_save_load_roundtrip(tmp_path):
    x, y = random_pairs(n=12, s=8, dtype=torch.float32)
    cfg = RidgeConfig(r=5, lam=0.25, regularize_bias=False, cross_channel=True, padding="replicate", size=8)
    model = LocalRidge(cfg).fit((x, y))
    path = tmp_path / "ridge.pt"
    model.save(path)
    raw = torch.load(path, weights_only=True)          # only tensors and plain values inside
    assert raw["version"] == FORMAT_VERSION and raw["config"]["lam"] == 0.25
    loaded = LocalRidge.load(path, expect=cfg)
    assert loaded.config == cfg and int(loaded.n_fitted) == 12
    torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
    assert [p.name for p in tmp_path.iterdir()] == ["ridge.pt"]   # no temporary files left


def test_load_rejects_other_version_shape_and_config(tmp_path):
    cfg = RidgeConfig(size=8)
    model = LocalRidge(cfg)
    path = tmp_path / "ridge.pt"
    model.save(path)
    state = torch.load(path, weights_only=True)

    def bad(name, **change):
        p = tmp_path / name
        torch.save({**state, **change}, p)
        return p

    cases = [
        bad("version.pt", version=FORMAT_VERSION + 1),
        bad("shape.pt", weight=torch.zeros(3, 8, 8, 25)),
        bad("format.pt", format="something-else"),
        bad("keys.pt", config={**state["config"], "unknown": 1}),
    ]
    for p in cases:
        with pytest.raises(ConfigError) as err:
            LocalRidge.load(p)
        assert str(p) in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="expected"):
        LocalRidge.load(path, expect=RidgeConfig(size=16))
    with pytest.raises(ConfigError, match="does not exist"):
        LocalRidge.load(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(ConfigError, match="not readable"):
        LocalRidge.load(tmp_path / "junk.pt")


@pytest.mark.parametrize("kwargs", [dict(r=2), dict(r=0), dict(lam=-1.0), dict(lam=float("nan")),
                                    dict(padding="reflect"), dict(channels=0), dict(size=0)])
def test_bad_config_is_a_config_error(kwargs):
    with pytest.raises(ConfigError):
        RidgeConfig(**kwargs)


def test_bad_shapes_are_config_errors():
    model = LocalRidge(RidgeConfig(size=8))
    with pytest.raises(ConfigError, match="expects"):
        model(torch.zeros(1, 3, 16, 16))
    with pytest.raises(ConfigError, match="pair"):
        model.fit((torch.zeros(4, 3, 8, 8), torch.zeros(3, 3, 8, 8)))
    with pytest.raises(ConfigError, match="no training pairs"):
        model.fit((torch.zeros(0, 3, 8, 8), torch.zeros(0, 3, 8, 8)))
    with pytest.raises(ConfigError):
        list(iter_batches([1, 2, 3], 2))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_fit_and_forward_on_cuda_match_cpu():
    x, y = random_pairs(n=16, s=8, dtype=torch.float32)
    cpu = LocalRidge(RidgeConfig(size=8)).fit((x, y))
    gpu = LocalRidge(RidgeConfig(size=8)).cuda().fit((x.cuda(), y.cuda()))
    torch.testing.assert_close(gpu.weight.cpu(), cpu.weight, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(gpu(x.cuda()).cpu(), cpu(x), rtol=1e-5, atol=1e-5)


def test_lambda_path_from_one_accumulation_equals_separate_fits(backend):
    x, y = random_pairs(n=15, s=6, seed=10)
    acc = RidgeAccumulator(RidgeConfig(size=6), backend=backend)
    acc.update(x, y)
    for lam in (0.05, 0.4, 3.0):
        path = LocalRidge.from_accumulator(acc, lam=lam)
        fit = LocalRidge(RidgeConfig(size=6, lam=lam)).double().fit((x, y))
        assert path.config.lam == lam
        torch.testing.assert_close(path.weight.double(), fit.weight, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("cross_channel", [False, True])
def test_backends_agree_on_float32_face_pairs(embedded_pairs, cross_channel):
    """The real use: 8-bit faces as float32, N not a multiple of the batch or of 4."""
    x, y = (t.float()[:37] for t in embedded_pairs)
    cfg = RidgeConfig(cross_channel=cross_channel)
    fused = LocalRidge(cfg).double().fit((x, y), batch_size=10, backend="numba")
    tiled = LocalRidge(cfg).double().fit((x, y), batch_size=16, backend="torch")
    torch.testing.assert_close(fused.weight, tiled.weight, rtol=1e-9, atol=1e-11)
    torch.testing.assert_close(fused.bias, tiled.bias, rtol=1e-9, atol=1e-11)


def test_mixed_float32_inputs_and_float64_targets_equal_a_float64_fit(backend):
    x, y = random_pairs(n=9, s=6, seed=11)
    cfg = RidgeConfig(size=6)
    mixed = LocalRidge(cfg).double().fit((x.float(), y), backend=backend)
    wide = LocalRidge(cfg).double().fit((x.float().double(), y), backend=backend)
    torch.testing.assert_close(mixed.weight, wide.weight, rtol=1e-12, atol=1e-12)


def test_backend_choice_and_its_errors():
    from reggan_core import ridge_kernels
    from reggan_core.regression import resolve_backend

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_backend("auto", cpu) == ("numba" if ridge_kernels.available() else "torch")
    assert resolve_backend("auto", cuda) == "torch"
    assert resolve_backend("torch", cpu) == "torch"
    with pytest.raises(ConfigError, match="backend='numba' runs on the CPU"):
        resolve_backend("numba", cuda)
    with pytest.raises(ConfigError, match="unknown; use one of"):
        LocalRidge(RidgeConfig(size=6)).fit(random_pairs(n=4, s=6), backend="lapack")


def test_fits_from_two_threads_at_once_are_both_right():
    """The explorer fits layers while a worker thread runs; concurrent fits must not interfere."""
    from concurrent.futures import ThreadPoolExecutor

    x, y = random_pairs(n=12, s=8, seed=12)
    cfg = RidgeConfig(size=8)
    alone = LocalRidge(cfg).double().fit((x, y))
    with ThreadPoolExecutor(max_workers=2) as pool:
        fits = list(pool.map(lambda _: LocalRidge(cfg).double().fit((x, y), batch_size=3), range(4)))
    for other in fits:
        torch.testing.assert_close(other.weight, alone.weight, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("layer", ["default", "omp", "workqueue"])
def test_a_fit_leaves_torchs_thread_count_alone(layer):
    """Found in training: numba's OpenMP pool reset torch.set_num_threads(1) to 2 on its first
    launch, and runs stopped being reproducible. Fresh process: the first launch is the one."""
    import os
    import subprocess
    import sys

    code = ("import torch\nfrom reggan_core.regression import LocalRidge, RidgeConfig\n"
            "torch.set_num_threads(1)\n"
            "LocalRidge(RidgeConfig(size=8)).fit((torch.rand(4, 3, 8, 8), torch.rand(4, 3, 8, 8)), backend='auto')\n"
            "print(torch.get_num_threads())\n")
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_THREADING_LAYER", "OMP_NUM_THREADS")}
    if layer != "default":
        env["NUMBA_THREADING_LAYER"] = layer
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    if layer == "omp" and "threading layer" in out.stderr:
        pytest.skip("numba's OpenMP layer is not available on this machine")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[-1] == "1"


@pytest.mark.parametrize("cross_channel", [False, True])
@pytest.mark.parametrize("padding", ["zeros", "replicate"])
def test_identity_prior_solves_ridge_toward_the_copy_map(cross_channel, padding, backend):
    """prior='identity': w = (A^T A + lam I)^-1 (A^T y + lam w0), w0 the copy map (generalised ridge)."""
    cfg = RidgeConfig(r=3, lam=0.7, size=6, prior="identity", cross_channel=cross_channel, padding=padding)
    x, y = random_pairs(n=15, s=6, seed=11)
    model = LocalRidge(cfg).double().fit((x, y), batch_size=4, backend=backend)
    patches = ref_patches(x.numpy(), cfg.r, cfg.padding)
    n, c = x.shape[:2]
    centre = cfg.r * cfg.r // 2
    for ch in range(c):
        for p in (0, 7, 20, 35):
            a = np.c_[pixel_design(patches, ch, p, cross_channel), np.ones(n)]
            w0 = np.zeros(a.shape[1])
            w0[(ch * cfg.r * cfg.r if cross_channel else 0) + centre] = 1.0
            ref = np.linalg.solve(a.T @ a + cfg.lam * np.eye(a.shape[1]),
                                  a.T @ y[:, ch].reshape(n, -1)[:, p].numpy() + cfg.lam * w0)
            ours = np.r_[model.weight[ch].reshape(-1, cfg.taps)[p].detach().numpy(),
                         model.bias[ch].reshape(-1)[p].item()]
            np.testing.assert_allclose(ours, ref, rtol=1e-9, atol=1e-10)


def test_identity_prior_with_huge_lambda_copies_the_input():
    x, y = random_pairs(seed=12)
    zero = LocalRidge(RidgeConfig(size=8, lam=1e9)).double().fit((x, y))
    ident = LocalRidge(RidgeConfig(size=8, lam=1e9, prior="identity")).double().fit((x, y))
    assert float(zero(x).detach().abs().max()) < 1e-6             # zero prior: the output fades to 0
    assert float((ident(x) - x).detach().abs().max()) < 1e-6      # identity prior: the input face
    with torch.enable_grad():
        ident.ridge_objective(x, y).backward()                    # and it is the stationary point
    g = torch.cat([ident.weight.grad.flatten(), ident.bias.grad.flatten()]).norm()
    assert g < 1e-6 * 1e9


def test_unknown_prior_is_one_line():
    with pytest.raises(ConfigError, match="prior='mean' is unknown"):
        RidgeConfig(prior="mean")


@pytest.mark.parametrize("cross_channel", [False, True])
@pytest.mark.parametrize("grad", [True, False], ids=["unfold-path", "shift-add-path"])
def test_restrict_change_folds_mask_and_gain_into_the_weights(cross_channel, grad):
    """restrict_change(m, g) makes the layer compute x + g * m * (f(x) - x) exactly, on both forward paths."""
    cfg = RidgeConfig(r=3, size=6, cross_channel=cross_channel)
    x, y = random_pairs(n=12, s=6, seed=21)
    layer = LocalRidge(cfg).double().fit((x, y))
    mask = torch.rand(6, 6, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    mask[0] = 0.0
    with torch.no_grad():
        ref = x + 1.3 * mask * (layer(x) - x)
    layer.restrict_change(mask, gain=1.3)
    with torch.set_grad_enabled(grad):
        out = layer(x).detach()
    np.testing.assert_allclose(out.numpy(), ref.numpy(), rtol=1e-12, atol=1e-12)
    assert torch.equal(out[:, :, 0], x[:, :, 0])                  # mask 0: the input pixel, bit for bit


def test_restrict_change_refuses_bad_masks_and_gains():
    layer = LocalRidge(RidgeConfig(size=6))
    with pytest.raises(ConfigError, match=r"\(6, 6\) mask"):
        layer.restrict_change(torch.ones(5, 5))
    with pytest.raises(ConfigError, match="values in"):
        layer.restrict_change(torch.full((6, 6), 1.5))
    with pytest.raises(ConfigError, match="gain"):
        layer.restrict_change(None, gain=0.0)


@pytest.mark.parametrize("sigma", [0.0, 1.0, 1.5, 3.0])
def test_gaussian_blur_matches_scipy(sigma):
    from scipy.ndimage import gaussian_filter

    from reggan_core.regression import gaussian_blur

    img = torch.rand(20, 17, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    ref = gaussian_filter(img.numpy(), sigma, mode="nearest", truncate=3.0) if sigma else img.numpy()
    np.testing.assert_allclose(gaussian_blur(img, sigma).numpy(), ref, rtol=1e-10, atol=1e-12)


def test_change_mask_is_one_where_pairs_change_and_zero_elsewhere():
    """Pairs that change only a 10 x 10 square: mask 1 inside it, 0 far from it, the ramp in [0, 1]."""
    from reggan_core.regression import change_mask

    g = torch.Generator().manual_seed(4)
    x = torch.rand(8, 3, 32, 32, generator=g) * 2 - 1
    y = x.clone()
    y[:, :, 4:14, 18:28] += 0.5 + 0.1 * torch.rand(8, 3, 10, 10, generator=g)
    y[:, :, 20:, :] += 0.01 * torch.randn(8, 3, 12, 32, generator=g)  # faint noise below it
    m = change_mask(x, y, low=0.5, high=0.95, sigma=1.0)
    assert m.shape == (32, 32) and m.dtype == torch.float32
    assert float(m.min()) == 0.0 and float(m.max()) == 1.0
    assert bool((m[6:12, 20:26] == 1).all())
    assert bool((m[:16, :12] == 0).all())                        # no change: the copy map
    assert float(m[20:].max()) < 0.02                             # faint noise: almost none of the fit
    lo = change_mask(x, y, low=0.1, high=0.95, sigma=1.0)
    assert int((lo > 0).sum()) > int((m > 0).sum())              # a lower low quantile opens more of the face
    assert bool((change_mask(x, x.clone()) == 1).all())           # no change at all: keep the fitted map
    with pytest.raises(ConfigError, match="quantiles"):
        change_mask(x, y, low=0.9, high=0.5)
    with pytest.raises(ConfigError, match="one shape"):
        change_mask(x, y[:, :, :16])
