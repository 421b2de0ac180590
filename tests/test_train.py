"""Training: loss formulas, configs, checkpoints, resume after a kill, DDP on gloo, generation.

References: the published loss formulas written out in NumPy / torch.nn.functional,
scikit-learn's log_loss and mean_absolute_error, the analytic gradient penalty of a linear
critic, and - for resume and DDP - an unbroken single-process run of the same config.
Runs use a tiny CFEE-layout folder (6 subjects, 32 px crops) so the file stays fast.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from sklearn.metrics import log_loss, mean_absolute_error

from reggan_core import losses
from reggan_core.config import TrainConfig, load_config
from reggan_core.errors import ConfigError
from reggan_core.generate import generate, load_generator
from reggan_core.generate import main as generate_main
from reggan_core.model import RegGAN
from reggan_core.train import Item, Sampler, Trainer, checkpoint_files, main, read_log, train

CATS = ("neutral", "happy", "sad", "angry")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}


# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory) -> Path:
    """6 subjects x 4 categories of smooth 64 px colour images (CFEE layout)."""
    root = tmp_path_factory.mktemp("tiny_cfee")
    rng = np.random.default_rng(0)
    for s in range(6):
        base = rng.normal(size=(8, 8, 3))
        for k, c in enumerate(CATS):
            small = base + 0.5 * k * rng.normal(size=(8, 8, 3)) * (np.arange(8)[:, None, None] > 4)
            img = np.clip(127.5 + 60 * small, 0, 255).astype(np.uint8)
            folder = root / f"S{s + 1:03d}"
            folder.mkdir(exist_ok=True)
            Image.fromarray(img).resize((64, 64), Image.BICUBIC).save(folder / f"{c}.png")
    return root


def tiny_config(root: Path, out: Path, **extra) -> dict:
    cfg = {"dataset_root": str(root), "size": 32, "iterations": 6, "batch_size": 4, "checkpoint_every": 2,
           "sample_every": 3, "log_every": 1, "num_threads": 1, "progress": False, "out_dir": str(out),
           "targets": ["happy", "sad", "angry"], "refiner": {"ngf": 8, "ndf": 8, "d_layers": 2}}
    cfg.update(extra)
    return cfg


def write_json(data: dict, path: Path) -> Path:
    path.write_text(json.dumps(data))
    return path


@pytest.fixture(scope="session")
def tiny_run(tiny_root, tmp_path_factory) -> Path:
    """A finished tiny conditional run (WGAN-GP, ridge fine-tuning, identity term)."""
    out = tmp_path_factory.mktemp("runs") / "cond"
    cfg = load_config(write_json(tiny_config(tiny_root, out, gan_loss="wgangp", finetune_regression=True),
                                 out.parent / "cond.json"))
    train(cfg)
    return out


# ------------------------------------------------------------------ losses


def test_lsgan_matches_mse_formulas():
    g = torch.Generator().manual_seed(0)
    real, fake = torch.randn(4, 1, 14, 14, generator=g), torch.randn(4, 1, 14, 14, generator=g)
    d_ref = 0.5 * (F.mse_loss(real, torch.ones_like(real)) + F.mse_loss(fake, torch.zeros_like(fake)))
    assert torch.allclose(losses.d_adversarial("lsgan", real, fake), d_ref)
    assert torch.allclose(losses.g_adversarial("lsgan", fake), F.mse_loss(fake, torch.ones_like(fake)))


def test_hinge_and_wgan_match_numpy():
    rng = np.random.default_rng(1)
    real, fake = rng.normal(size=(3, 1, 5, 5)), rng.normal(size=(3, 1, 5, 5))
    tr, tf = torch.tensor(real), torch.tensor(fake)
    hinge = np.maximum(0, 1 - real).mean() + np.maximum(0, 1 + fake).mean()
    assert losses.d_adversarial("hinge", tr, tf).item() == pytest.approx(hinge, rel=1e-6)
    assert losses.g_adversarial("hinge", tf).item() == pytest.approx(-fake.mean(), rel=1e-6)
    assert losses.d_adversarial("wgangp", tr, tf).item() == pytest.approx(fake.mean() - real.mean(), rel=1e-6)
    assert losses.g_adversarial("wgangp", tf).item() == pytest.approx(-fake.mean(), rel=1e-6)


def test_unknown_gan_loss_lists_valid():
    with pytest.raises(ConfigError, match="lsgan, hinge, wgangp"):
        losses.d_adversarial("vanilla", torch.zeros(1), torch.zeros(1))


@pytest.mark.parametrize("scale", [1.0, 1024.0])
def test_gradient_penalty_of_linear_critic_is_analytic(scale):
    """D(x) = <w, x> has gradient w everywhere, so GP = (||w|| - 1)^2 exactly (any scale)."""
    g = torch.Generator().manual_seed(2)
    w = torch.randn(3, 8, 8, generator=g, dtype=torch.float64).requires_grad_(True)
    real, fake = torch.randn(5, 3, 8, 8, dtype=torch.float64), torch.randn(5, 3, 8, 8, dtype=torch.float64)
    x_hat = losses.interpolate(real, fake, g).double().detach().requires_grad_(True)
    scores = (x_hat * w).sum(dim=(1, 2, 3))
    gp = losses.gradient_penalty(scores, x_hat, scale)
    norm = w.detach().norm()
    assert gp.item() == pytest.approx((norm.item() - 1) ** 2, rel=1e-6)
    gp.backward()  # differentiable through the gradient (create_graph=True): d/dw = 2(|w|-1) w/|w|
    assert torch.allclose(w.grad, 2 * (norm - 1) * w.detach() / norm)


def test_interpolates_lie_between_real_and_fake():
    real, fake = torch.zeros(64, 1, 2, 2), torch.ones(64, 1, 2, 2)
    x = losses.interpolate(real, fake, torch.Generator().manual_seed(0))
    assert x.requires_grad and x.min() >= 0 and x.max() <= 1
    assert torch.all(x == x[:, :, :1, :1])  # one alpha per sample


def test_content_losses_match_sklearn():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(2, 3, 4, 4)), rng.normal(size=(2, 3, 4, 4))
    assert losses.l1(torch.tensor(a), torch.tensor(b)).item() == pytest.approx(
        mean_absolute_error(a.ravel(), b.ravel()), rel=1e-6)
    assert losses.identity(torch.tensor(a), torch.tensor(b)).item() == pytest.approx(
        mean_absolute_error(a.ravel(), b.ravel()), rel=1e-6)
    logits, labels = rng.normal(size=(6, 4)), np.array([0, 1, 2, 3, 1, 0])
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    assert losses.classification(torch.tensor(logits), torch.tensor(labels)).item() == pytest.approx(
        log_loss(labels, probs, labels=[0, 1, 2, 3]), rel=1e-6)


def test_weighted_sum_applies_weights_and_skips_zeros():
    terms = {"a": torch.tensor(2.0), "b": torch.tensor(3.0), "c": torch.tensor(float("nan"))}
    assert losses.weighted_sum(terms, {"a": 0.5, "b": 10.0, "c": 0.0}).item() == pytest.approx(31.0)
    with pytest.raises(ConfigError, match="no weight"):
        losses.weighted_sum(terms, {"a": 1.0})
    with pytest.raises(ConfigError, match="every loss weight is zero"):
        losses.weighted_sum({"a": torch.tensor(1.0)}, {"a": 0.0})


# ------------------------------------------------------------------ configs


@pytest.mark.parametrize("override, names", [
    ("iterations=abc", "iterations"), ("batch_size=0", "batch_size"), ("bogus=1", "bogus"),
    ("refiner.n_res=-1", "refiner.n_res"), ("refiner.generator=vgg", "resnet, unet"),
    ("gan_loss=wgan", "gan_loss"), ("pairs=neutral:joyful", "joyful"), ("ridge.r=4", "RidgeConfig.r"),
    ("amp=maybe", "amp"), ("targets=neutral", "neutral is the source"), ("lr_g=0", "lr_g"),
    ("finetune_regression=true", "finetune_regression"),
])
def test_bad_override_is_one_line_error_naming_it(override, names):
    extra = ["use_regression=false"] if override.startswith("finetune") else []
    with pytest.raises(ConfigError) as exc:
        load_config(None, [override, *extra])
    assert names in str(exc.value) and "\n" not in str(exc.value)


def test_config_file_and_overrides_merge(tmp_path):
    path = write_json({"iterations": 7, "refiner": {"ngf": 16}, "size": 64}, tmp_path / "c.json")
    cfg = load_config(path, ["refiner.n_res=2", "pairs=neutral:happy,neutral:sad"])
    assert (cfg.iterations, cfg.refiner.ngf, cfg.refiner.n_res) == (7, 16, 2)
    assert cfg.pairs == ("neutral:happy", "neutral:sad") and cfg.ridge.size == 64
    assert cfg.refiner.ndf == TrainConfig().refiner.ndf  # untouched nested defaults stay


def test_bad_config_file_key(tmp_path):
    path = write_json({"refiner": {"ngf": 8, "depth": 3}}, tmp_path / "c.json")
    with pytest.raises(ConfigError, match="refiner.depth"):
        load_config(path)
    (tmp_path / "broken.json").write_text("{iterations: 3")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_config(tmp_path / "broken.json")


def test_cli_refuses_bad_config_before_any_work(tiny_root, tmp_path, capsys):
    out = tmp_path / "never"
    cfg = write_json(tiny_config(tiny_root, out), tmp_path / "c.json")
    assert main(["--config", str(cfg), "refiner.ngf=many"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "refiner.ngf" in err
    assert main(["--config", str(cfg), "device=cuda:7"]) == 2 or torch.cuda.device_count() > 7
    assert main(["--config", str(cfg), "--resume"]) == 2
    assert "nothing to resume" in capsys.readouterr().err
    assert not out.exists()


# ------------------------------------------------------------------ networks inside training


def test_sampler_covers_each_epoch_and_shards_like_a_big_batch():
    items = [Item(f"S{i}", "neutral", "happy", 0) for i in range(10)]
    s = Sampler(items, seed=0, flip=True)
    epoch = [s.batch(step, 5)[0] for step in range(2)]
    assert sorted(i.subject for b in epoch for i in b) == sorted(i.subject for i in items)
    for step in range(4):  # two ranks with B=3 see exactly one process's batch of 6
        one, f1 = s.batch(step, 6)
        r0, f0 = s.batch(step, 3, rank=0, world=2)
        r1, g1 = s.batch(step, 3, rank=1, world=2)
        assert one == r0 + r1 and torch.equal(f1, torch.cat([f0, g1]))


def test_amp_code_path_builds_disabled_scalers_on_cpu():
    cfg = load_config(None, ["size=32", "refiner.ngf=4", "refiner.ndf=4", "amp=true"])
    model = RegGAN(["happy", "sad"], refiner=cfg.refiner, ridge=cfg.ridge)
    tr = Trainer(cfg, model, torch.device("cpu"))
    assert not tr.amp and not tr.scaler_G.is_enabled()
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    tr.set_input(x, x.flip(-1), torch.tensor([0, 1]), torch.tensor([True, False]))
    found = tr.optimize_parameters(0)
    assert set(found) == {"D_adv", "D_cls", "D_total", "G_adv", "G_l1", "G_idt", "G_cls", "G_total"}
    state = tr.state_dict(1)
    assert state["scaler_G"] == {} and tr.load_state_dict(state) == 1


def test_run_outputs_and_weights_only_checkpoints(tiny_run):
    log = read_log(tiny_run / "log.csv")
    assert list(log["step"]) == list(range(1, 7))
    for col in ("D_adv", "D_gp", "D_cls", "G_adv", "G_l1", "G_idt", "G_cls"):
        assert log[col].notna().all() and np.isfinite(log[col]).all(), col
    assert [p.name for p in checkpoint_files(tiny_run)] == ["step_0000004.pt", "step_0000006.pt"]
    assert sorted(p.name for p in (tiny_run / "samples").iterdir()) == ["step_0000003.png", "step_0000006.png"]
    state = torch.load(tiny_run / "checkpoints" / "step_0000006.pt", weights_only=True)
    assert state["step"] == 6 and {"opt_G", "opt_D", "scaler_G", "scaler_D", "rng", "model", "netD"} <= set(state)
    assert json.loads((tiny_run / "config.json").read_text())["gan_loss"] == "wgangp"
    assert not list(tiny_run.rglob("*.tmp*"))  # atomic writes leave no temporaries
    # the exported generator reproduces the checkpoint's model (float16 refiner, int8 ridges)
    full, small = load_generator(state_path := tiny_run / "checkpoints" / "step_0000006.pt"), \
        load_generator(tiny_run / "generator.pt")
    assert state_path.stat().st_size > (tiny_run / "generator.pt").stat().st_size
    x = torch.rand(3, 3, 32, 32) * 2 - 1
    for t in ("happy", "angry"):
        a, b = full.translate(x, t)["refined"], small.translate(x, t)["refined"]
        assert (a - b).abs().max() < 0.05


def test_fine_tuning_moves_the_ridge_away_from_its_closed_form(tiny_run, tiny_root):
    from reggan_core.data import index_dataset, load_splits, subjects_in
    from reggan_core.regression import LocalRidge
    from reggan_core.train import FaceBank

    model = load_generator(tiny_run / "checkpoints" / "step_0000006.pt")
    index = index_dataset(tiny_root)
    subj = subjects_in(load_splits(index), "train")
    bank = FaceBank(index, subj, ["neutral", "happy"], False, 32)
    closed = LocalRidge(model.ridge_config).fit((bank.batch([(s, "neutral") for s in subj]),
                                                 bank.batch([(s, "happy") for s in subj])))
    diff = (closed.weight - model.ridges["happy"].weight).abs().max().item()
    assert 0 < diff < 1e-2  # fine-tuned by Adam (lr 1e-5) from the closed-form solution


def test_refuses_to_overwrite_a_run(tiny_run, tiny_root):
    cfg = load_config(None, **{k: v for k, v in tiny_config(tiny_root, tiny_run).items()
                               if k not in ("refiner",)})
    with pytest.raises(ConfigError, match="already holds a run"):
        train(cfg)


def test_per_pair_and_refiner_only_runs(tiny_root, tmp_path):
    base = tiny_config(tiny_root, tmp_path / "pairs", conditional=False, pairs=["neutral:happy", "neutral:sad"],
                       iterations=2, checkpoint_every=0, sample_every=0)
    dirs = train(load_config(write_json(base, tmp_path / "p.json")))
    assert [d.name for d in dirs] == ["neutral_to_happy", "neutral_to_sad"]
    pair = load_generator(dirs[1] / "generator.pt")
    assert pair.targets == ["sad"] and not pair.conditional and list(pair.ridges) == ["sad"]
    base.update(out_dir=str(tmp_path / "only"), use_regression=False, conditional=True)
    (only,) = train(load_config(write_json(base, tmp_path / "o.json")))
    baseline = load_generator(only / "generator.pt")
    assert baseline.ridges is None
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    assert torch.equal(baseline.translate(x, "sad")["regression"], x)  # no regression layer


def test_ema_follows_its_formula_and_is_what_the_run_exports(tiny_root, tmp_path):
    """e_t = d_t e_(t-1) + (1 - d_t) w_t with d_t = min(decay, (1 + t) / (10 + t)), recomputed in NumPy
    from the raw weights of every step's checkpoint; generator.pt and the samples use e, not w."""
    decay = 0.3  # steps 2 and 3 fall on both sides of the warm-up: d = 0.25 (warm-up), then 0.3 (cap)
    cfg = tiny_config(tiny_root, tmp_path / "ema", ema_decay=decay, iterations=4, checkpoint_every=1,
                      keep_checkpoints=10, gan_loss="lsgan")
    (run,) = train(load_config(write_json(cfg, tmp_path / "e.json")))
    states = [torch.load(p, weights_only=True) for p in checkpoint_files(run)]
    assert [s["step"] for s in states] == [1, 2, 3, 4]
    ema = {k: v.double().numpy() for k, v in states[0]["ema"].items()}
    for st in states[1:]:
        t = st["step"]
        d = min(decay, (1 + t) / (10 + t))
        raw = {k[len("refiner."):]: v for k, v in st["model"].items() if k.startswith("refiner.")}
        ema = {k: d * e + (1 - d) * raw[k].double().numpy() for k, e in ema.items()}
        for k, e in ema.items():
            np.testing.assert_allclose(st["ema"][k].double().numpy(), e, rtol=1e-5, atol=1e-6, err_msg=k)
    last = states[-1]
    moved = [k for k in last["ema"] if not torch.equal(last["ema"][k], last["model"]["refiner." + k])]
    assert moved  # the average lags the raw weights
    exported = torch.load(run / "generator.pt", weights_only=True)
    for k, v in exported["refiner"].items():
        assert torch.equal(v, last["ema"][k].to(v.dtype)), k
    raw_model = load_generator(run / "checkpoints" / "step_0000004.pt", ema=False)
    ema_model = load_generator(run / "checkpoints" / "step_0000004.pt")
    for k, v in raw_model.refiner.state_dict().items():
        assert torch.equal(v, last["model"]["refiner." + k])
    for k, v in ema_model.refiner.state_dict().items():
        assert torch.equal(v, last["ema"][k])


def test_ema_decay_out_of_range_is_refused():
    with pytest.raises(ConfigError, match="ema_decay"):
        TrainConfig(ema_decay=1.0)


# ------------------------------------------------------------------ resume after a kill

KILLER = """
import os, signal, sys
import reggan_core.train as T
step_once = T.Trainer.optimize_parameters
def killed_after(self, step):
    out = step_once(self, step)
    if step == {kill_at}:
        os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, no finally: a real kill
    return out
T.Trainer.optimize_parameters = killed_after
sys.exit(T.main(sys.argv[1:]))
"""


def test_resume_after_kill_matches_unbroken_run(tiny_root, tmp_path):
    extra = {"gan_loss": "wgangp", "finetune_regression": True,  # GP randomness and ridge grads too
             "augment": 0.2, "augment_ridge_copies": 1,               # and the pair jitter
             "ema_decay": 0.9}                                       # and the weights' moving average
    unbroken = tiny_config(tiny_root, tmp_path / "unbroken", **extra)
    (ref_dir,) = train(load_config(write_json(unbroken, tmp_path / "a.json")))
    cfg_b = write_json(tiny_config(tiny_root, tmp_path / "killed", **extra), tmp_path / "b.json")
    proc = subprocess.run([sys.executable, "-c", KILLER.format(kill_at=5), "--config", str(cfg_b)],
                          env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    killed = tmp_path / "killed"
    assert [p.name for p in checkpoint_files(killed)] == ["step_0000002.pt", "step_0000004.pt"]
    assert not (killed / "generator.pt").exists()
    assert main(["--config", str(cfg_b), "--resume"]) == 0
    a = torch.load(ref_dir / "checkpoints" / "step_0000006.pt", weights_only=True)
    b = torch.load(killed / "checkpoints" / "step_0000006.pt", weights_only=True)
    for part in ("model", "netD", "ema"):
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), f"{part}.{k}"
    for part in ("opt_G", "opt_D"):
        for pid, st in a[part]["state"].items():
            assert all(torch.equal(st[k], b[part]["state"][pid][k]) for k in st), part
    resumed = read_log(killed / "log.csv")
    assert list(resumed["step"]) == list(range(1, 7))  # no duplicated rows
    assert resumed["elapsed_s"].is_monotonic_increasing  # training time goes on after the resume


# ------------------------------------------------------------------ DDP on gloo


def test_ddp_two_cpu_processes_match_one_process_with_double_batch(tiny_root, tmp_path):
    common = dict(iterations=3, checkpoint_every=0, sample_every=0, flip=True)
    single = write_json(tiny_config(tiny_root, tmp_path / "single", batch_size=4, **common), tmp_path / "s.json")
    (one,) = train(load_config(single))
    ddp = write_json(tiny_config(tiny_root, tmp_path / "ddp", batch_size=2, **common), tmp_path / "d.json")
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1",
                           "--nproc_per_node=2", "-m", "reggan_core.train", "--config", str(ddp)],
                          env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a = torch.load(one / "checkpoints" / "step_0000003.pt", weights_only=True)
    b = torch.load(tmp_path / "ddp" / "checkpoints" / "step_0000003.pt", weights_only=True)
    # Equal up to the order of float sums (all-reduce vs one batch mean); Adam can turn a
    # near-zero gradient's rounding into a few % of one lr=1e-4 step, hence atol 1e-5. Ranks
    # that saw wrong batches would differ by whole steps (~1e-4) almost everywhere.
    for part in ("model", "netD"):
        for k, v in a[part].items():
            assert torch.allclose(v.float(), b[part][k].float(), rtol=1e-4, atol=1e-5), f"{part}.{k}"
    assert sum(1 for _ in (tmp_path / "ddp").rglob("generator.pt")) == 1


# ------------------------------------------------------------------ generation


@pytest.fixture
def mixed_folder(tmp_path, astronaut, hopper) -> Path:
    folder = tmp_path / "inputs"
    folder.mkdir()
    Image.fromarray(astronaut).save(folder / "astronaut.png")
    Image.fromarray(hopper).save(folder / "hopper.jpg")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (96, 96, 3), dtype=np.uint8)).save(folder / "noise.png")
    return folder


def test_generate_folder_with_bad_images(tiny_run, mixed_folder, tmp_path, capsys):
    out = tmp_path / "out"
    code = generate_main(["--checkpoint", str(tiny_run / "generator.pt"), "--input", str(mixed_folder),
                          "--target", "happy", "--out", str(out)])
    assert code == 1  # some inputs were refused, the others written
    assert sorted(p.name for p in out.iterdir()) == ["astronaut_happy.png", "hopper_happy.png"]
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("skipped")]
    assert len(err) == 2 and any("broken.jpg" in e and "corrupt" in e for e in err)
    assert any("noise.png" in e and "no face" in e for e in err)
    img = np.asarray(Image.open(out / "astronaut_happy.png"))  # photo in, photo out: the photo's own size
    src = np.asarray(Image.open(next(mixed_folder.glob("astronaut.*"))).convert("RGB"))
    assert img.shape == src.shape and img.dtype == np.uint8
    crops = tmp_path / "crops"
    generate_main(["--checkpoint", str(tiny_run / "generator.pt"), "--input", str(mixed_folder),
                   "--target", "happy", "--out", str(crops), "--crop"])
    assert np.asarray(Image.open(crops / "astronaut_happy.png")).shape == (32, 32, 3)  # --crop: the model's crop


def test_generate_without_alignment_and_strength(tiny_run, mixed_folder, tmp_path):
    model = load_generator(tiny_run / "generator.pt")
    written, failed = generate(model, mixed_folder, "sad", tmp_path / "o", align=False, strength=0.0)
    assert len(written) == 3 and [p.name for p, _ in failed] == ["broken.jpg"]
    # strength 0 returns the (resized) input itself
    from reggan_core.faces import resize_crop
    from reggan_core.imageio import load_image

    same = np.asarray(Image.open(tmp_path / "o" / "noise_sad.png"))
    assert np.array_equal(same, resize_crop(load_image(mixed_folder / "noise.png"), 32))


def test_generate_rejects_unknown_target_before_writing(tiny_run, mixed_folder, tmp_path, capsys):
    code = generate_main(["--checkpoint", str(tiny_run / "generator.pt"), "--input", str(mixed_folder),
                          "--target", "awed", "--out", str(tmp_path / "x")])
    assert code == 2 and "valid targets: happy, sad, angry" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_mirrored_ridge_fit_is_left_right_equivariant():
    """With ``mirror`` the fitted layer maps a flipped face to the flipped output (and without, it does not)."""
    from reggan_core.regression import RidgeConfig
    from reggan_core.train import fit_ridges

    gen = torch.Generator().manual_seed(0)
    faces = {(f"s{i}", e): torch.rand(3, 16, 16, generator=gen) * 2 - 1
             for i in range(12) for e in ("neutral", "happy")}

    class Bank:  # the one FaceBank method fit_ridges uses
        def batch(self, keys):
            return torch.stack([faces[k] for k in keys])

    items = [Item(f"s{i}", "neutral", "happy", 0) for i in range(12)]
    x = torch.rand(2, 3, 16, 16, generator=gen) * 2 - 1
    gaps = {}
    for mirror in (False, True):
        model = RegGAN(["happy"], ridge=RidgeConfig(r=3, size=16, prior="identity", padding="replicate"))
        fit_ridges(model, Bank(), items, mirror=mirror)
        with torch.no_grad():
            layer = model.ridges["happy"]
            gaps[mirror] = (layer(x.flip(-1)) - layer(x).flip(-1)).abs().max().item()
    assert gaps[True] < 1e-4
    assert gaps[False] > 1e-2


def test_masked_ridge_fit_copies_what_the_pairs_never_change():
    """``mask`` keeps every pixel the training pairs leave alone as the input; ``gain`` scales the rest."""
    from reggan_core.regression import RidgeConfig, change_mask
    from reggan_core.train import fit_ridges

    gen = torch.Generator().manual_seed(1)
    faces = {}
    for i in range(16):
        x = torch.rand(3, 16, 16, generator=gen) * 2 - 1
        y = x.clone()
        y[:, 9:, 4:12] = -0.5 * x[:, 9:, 4:12] + 0.3                      # only the "mouth" changes
        y += 0.02 * torch.randn(3, 16, 16, generator=gen)                  # plus a little noise everywhere
        faces[(f"s{i}", "neutral")], faces[(f"s{i}", "happy")] = x, y

    class Bank:
        def batch(self, keys):
            return torch.stack([faces[k] for k in keys])

    items = [Item(f"s{i}", "neutral", "happy", 0) for i in range(16)]
    xs, ys = Bank().batch([(i.subject, "neutral") for i in items]), Bank().batch([(i.subject, "happy") for i in items])
    probe = torch.rand(2, 3, 16, 16, generator=gen) * 2 - 1
    outs = {}
    for mask, gain in ((None, 1.0), ((0.5, 0.8, 1.0), 1.0), ((0.5, 0.8, 1.0), 1.5)):
        model = RegGAN(["happy"], ridge=RidgeConfig(r=3, size=16, prior="identity", padding="replicate"))
        fit_ridges(model, Bank(), items, mask=mask, gain=gain)
        with torch.no_grad():
            outs[mask, gain] = model.ridges["happy"](probe)
    plain = outs[None, 1.0]
    m = change_mask(xs, ys, 0.5, 0.8, 1.0)
    assert bool((m[:4] == 0).all()) and bool((m[12:, 6:10] == 1).all())
    masked = outs[(0.5, 0.8, 1.0), 1.0]
    assert torch.equal(masked[:, :, :4], probe[:, :, :4])                 # unchanged rows: the input itself
    assert float((plain[:, :, :4] - probe[:, :, :4]).abs().max()) > 1e-3   # (the plain fit adds its noise)
    torch.testing.assert_close(masked[:, :, 12:, 6:10], plain[:, :, 12:, 6:10])
    torch.testing.assert_close(outs[(0.5, 0.8, 1.0), 1.5] - probe, 1.5 * (masked - probe))


@pytest.mark.parametrize("kwargs, key", [({"ridge_mask_low": 0.9, "ridge_mask_high": 0.5}, "ridge_mask_low"),
                                         ({"ridge_mask_high": 1.5}, "ridge_mask_low"),
                                         ({"ridge_mask_blur": -1.0}, "ridge_mask_blur"),
                                         ({"ridge_gain": 0.0}, "ridge_gain")])
def test_bad_change_mask_settings_are_refused(kwargs, key):
    with pytest.raises(ConfigError, match=f"config value {key}"):
        TrainConfig(**kwargs)
