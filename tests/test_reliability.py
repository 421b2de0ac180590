"""Bad inputs found by a probe (issue 16): each must be one line naming the file or value, never a
traceback, a silent loss or a silent wrong answer. Every test makes its own inputs.

References: PIL's own EXIF transpose and 16-bit pixel values (exact arithmetic), hand-written PNG
headers for huge images, and the unbroken behaviour of the same code on good inputs.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from reggan_core.config import TrainConfig, load_config
from reggan_core.data import index_dataset
from reggan_core.errors import ConfigError, DataError, RegGANError
from reggan_core.imageio import list_images, load_image, to_rgb

REPO = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
CATS = ("neutral", "happy", "sad")


def one_line(text: str) -> None:
    """A message the user can read: one line, no traceback (INFO log lines aside)."""
    assert "Traceback" not in text, text
    lines = [ln for ln in text.strip().splitlines() if ln.strip() and not ln.startswith("INFO ")]
    assert len(lines) == 1, text


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A valid 1-bit grayscale PNG of any size, written row by row (a few KB on disk)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    comp = zlib.compressobj(9)
    row = b"\x00" * (1 + (width + 7) // 8)
    body = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
                     + chunk(b"IDAT", body) + chunk(b"IEND", b""))
    return path


def _default_sigint() -> None:
    """Children of a background shell inherit an ignored SIGINT; give them the usual Ctrl-C."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory) -> Path:
    """5 subjects x 3 categories of smooth 64 px colour images (CFEE layout)."""
    root = tmp_path_factory.mktemp("tiny_cfee")
    rng = np.random.default_rng(0)
    for s in range(5):
        base = rng.normal(size=(8, 8, 3))
        for k, c in enumerate(CATS):
            img = np.clip(127.5 + 60 * (base + 0.5 * k * rng.normal(size=(8, 8, 3))), 0, 255).astype(np.uint8)
            (root / f"S{s + 1:03d}").mkdir(exist_ok=True)
            Image.fromarray(img).resize((64, 64), Image.BICUBIC).save(root / f"S{s + 1:03d}" / f"{c}.png")
    return root


def tiny_cfg(root: Path, out: Path, **extra) -> dict:
    cfg = {"dataset_root": str(root), "size": 32, "iterations": 4, "batch_size": 2, "checkpoint_every": 2,
           "sample_every": 0, "log_every": 1, "num_threads": 1, "progress": False, "out_dir": str(out),
           "targets": ["happy", "sad"], "refiner": {"ngf": 4, "ndf": 4, "d_layers": 1}}
    cfg.update(extra)
    return cfg


@pytest.fixture(scope="module")
def generator_file(tiny_root, tmp_path_factory) -> Path:
    from reggan_core.train import train

    out = tmp_path_factory.mktemp("runs") / "g"
    (run,) = train(load_config(None, **tiny_cfg(tiny_root, out, iterations=2, checkpoint_every=0)))
    return run / "generator.pt"


def big_face(astronaut: np.ndarray, long_side: int) -> np.ndarray:
    """The astronaut photo scaled up into a (long_side * 3/4) x long_side landscape frame."""
    h = long_side * 3 // 4
    face = np.asarray(Image.fromarray(astronaut).resize((h, h), Image.BICUBIC))
    pad = (long_side - h) // 2
    return np.pad(face, ((0, 0), (pad, long_side - h - pad), (0, 0)), mode="edge")


# ------------------------------------------------------------------ 1. huge images


def test_decompression_bomb_png_is_one_line_error(tmp_path):
    bomb = png_header_only(tmp_path / "bomb.png", 20000, 20000)
    assert bomb.stat().st_size < 2_000_000
    with pytest.raises(DataError, match=r"bomb\.png.*20000x20000.*megapixel") as exc:
        load_image(bomb)
    one_line(str(exc.value))


def test_image_over_the_pixel_limit_is_refused_before_decoding(tmp_path):
    from reggan_core import imageio

    w, h = 9000, 7000          # 63 MP: under PIL's bomb error, over the documented limit
    assert w * h > imageio.MAX_PIXELS
    big = png_header_only(tmp_path / "big.png", w, h)
    t0 = time.perf_counter()
    with pytest.raises(DataError, match=r"big\.png.*9000x7000.*megapixel"):
        load_image(big)
    assert time.perf_counter() - t0 < 2.0     # refused from the header, not after decoding


def test_huge_image_in_folder_is_skipped_not_fatal(tmp_path, generator_file, astronaut, capsys):
    from reggan_core.generate import main as generate_main
    from reggan_core.metrics import read_folder

    folder = tmp_path / "in"
    folder.mkdir()
    png_header_only(folder / "bomb.png", 20000, 20000)
    Image.fromarray(astronaut).save(folder / "astro.png")
    code = generate_main(["--checkpoint", str(generator_file), "--input", str(folder), "--target", "happy",
                          "--out", str(tmp_path / "out"), "--no-align"])
    assert code == 1 and (tmp_path / "out" / "astro_happy.png").is_file()
    assert "bomb.png" in capsys.readouterr().err
    with pytest.raises(DataError, match="bomb.png"):   # metrics: exit 2 with this line, no traceback
        read_folder(folder, "generated")


def test_detection_runs_on_a_downscaled_copy_and_landmarks_map_back(astronaut, monkeypatch):
    from reggan_core import faces

    seen: list[tuple[int, int]] = []
    real = faces._detector()
    monkeypatch.setattr(faces, "_detector", lambda: (lambda img, up: seen.append(img.shape[:2]) or real(img, up)))
    small = big_face(astronaut, 1000)
    crop_small, lm_small = faces.align_face(small, return_landmarks=True)
    seen.clear()
    big = big_face(astronaut, 4000)                      # 4000x3000 photo
    crop_big, lm_big = faces.align_face(big, return_landmarks=True)
    assert seen and max(max(s) for s in seen) <= 1100, seen  # bounded time and memory
    # the same face, found in the big photo, lands on the same template points
    assert np.abs(faces.five_points(lm_big) - faces.five_points(lm_small)).max() < 2.0
    assert np.abs(crop_big.astype(float) - crop_small.astype(float)).mean() < 6.0


# ------------------------------------------------------------------ 2. EXIF orientation


def test_exif_orientation_is_applied_on_load(tmp_path, astronaut):
    upright = astronaut[:, 56:456]                       # 512 x 400, portrait
    stored = Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90)   # what a phone stores
    exif = Image.Exif()
    exif[0x0112] = 6                                      # "rotate 90 CW to display"
    path = tmp_path / "phone.jpg"
    stored.save(path, exif=exif, quality=95)
    img = load_image(path)
    assert img.shape == upright.shape
    assert np.abs(img.astype(float) - upright).mean() < 4.0
    from reggan_core.data import load_face

    assert load_face(path).shape == (128, 128, 3)         # the face is found


# ------------------------------------------------------------------ 3. high bit depth


def test_16bit_grayscale_png_is_scaled_not_clipped(tmp_path):
    ramp = np.tile(np.linspace(0, 65535, 256).round().astype(np.uint16), (80, 1))
    path = tmp_path / "gray16.png"
    Image.fromarray(ramp).save(path)
    with Image.open(path) as im:
        assert im.mode.startswith("I")
    img = load_image(path)
    expected = np.round(ramp / 257.0)
    assert np.abs(img[..., 0].astype(float) - expected).max() <= 1
    assert (img == 255).mean() < 0.02


def test_mode_i_and_f_images_are_scaled():
    ramp = np.tile(np.linspace(0, 65535, 128), (70, 1))
    rgb = np.asarray(to_rgb(Image.fromarray(ramp.astype(np.int32), mode="I")))
    assert np.abs(rgb[..., 0] - np.round(ramp / 257)).max() <= 1
    unit = np.tile(np.linspace(0.0, 1.0, 128, dtype=np.float32), (70, 1))
    rgb = np.asarray(to_rgb(Image.fromarray(unit, mode="F")))
    assert np.abs(rgb[..., 1] - np.round(unit * 255)).max() <= 1


# ------------------------------------------------------------------ 4. duplicate category files


def test_duplicate_category_files_are_refused_naming_them(tmp_path):
    rng = np.random.default_rng(0)
    for name in ("neutral.png", "happy.jpg", "happy.png", "HA.jpg"):
        (tmp_path / "S1").mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "S1" / name)
    with pytest.raises(DataError, match=r"HA\.jpg.*happy\.jpg.*happy\.png") as exc:
        index_dataset(tmp_path)
    one_line(str(exc.value))


# ------------------------------------------------------------------ 5. output collisions


def test_inputs_that_would_write_the_same_output_are_refused(tmp_path, generator_file, astronaut, capsys):
    from reggan_core.generate import main as generate_main

    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(astronaut).save(folder / "face.jpg")
    Image.fromarray(astronaut[::-1]).save(folder / "face.png")
    code = generate_main(["--checkpoint", str(generator_file), "--input", str(folder), "--target", "happy",
                          "--out", str(tmp_path / "out"), "--no-align"])
    err = capsys.readouterr().err
    assert code == 2 and "face.jpg" in err and "face.png" in err
    one_line(err)
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------ 6. damaged checkpoint content


def _damage(state: dict, kind: str) -> dict:
    state = dict(state)
    if kind == "spec-mismatch":
        state["spec"] = {**state["spec"], "refiner": {**state["spec"]["refiner"], "ngf": 16}}
    elif kind == "missing-keys":
        state["refiner"] = dict(list(state["refiner"].items())[1:])
    elif kind == "bad-target":
        state["spec"] = {**state["spec"], "targets": ["smirk", "sad"]}
    elif kind == "string-spec":
        state["spec"] = "a RegGAN"
    elif kind == "truncated-lzma":
        data = state["ridges"]["data"]
        state["ridges"] = {**state["ridges"], "data": data[: len(data) // 2].clone()}
    elif kind == "no-refiner":
        del state["refiner"]
    return state


@pytest.mark.parametrize("kind", ["spec-mismatch", "missing-keys", "bad-target", "string-spec", "truncated-lzma",
                                  "no-refiner"])
def test_damaged_checkpoint_content_is_one_line_exit_2(kind, generator_file, tmp_path, astronaut, capsys):
    from reggan_core.generate import main as generate_main
    from reggan_core.model import load_generator

    state = torch.load(generator_file, weights_only=True)
    bad = tmp_path / f"{kind}.pt"
    torch.save(_damage(state, kind), bad)
    with pytest.raises(ConfigError, match=rf"{kind}\.pt") as exc:
        load_generator(bad)
    one_line(str(exc.value))
    Image.fromarray(astronaut).save(tmp_path / "a.png")
    code = generate_main(["--checkpoint", str(bad), "--input", str(tmp_path / "a.png"), "--target", "happy",
                          "--out", str(tmp_path / "o")])
    assert code == 2
    one_line(capsys.readouterr().err)


# ------------------------------------------------------------------ 7. non-finite values


@pytest.mark.parametrize("text", ["inf", "1e400", "-inf", "nan"])
def test_non_finite_rating_is_one_problem_line(text, tmp_path):
    from reggan_core.human_study.responses import ResponseError, load_responses

    key = pd.DataFrame({"panel": ["P001", "P001"], "split": ["id", "id"], "position": ["A", "B"],
                        "method": ["RegGAN", "B"]})
    (tmp_path / "r.csv").write_text(f"rater,panel,position,best,rating\nana,P001,A,1,{text}\nana,P001,B,0,3\n")
    with pytest.raises(ResponseError, match=r"r\.csv, row 2: rating .* not a whole number"):
        load_responses(tmp_path, key)


@pytest.mark.parametrize("override", ["lr_g=Infinity", "lr_d=1e400", "lambda_l1=NaN", "beta1=-Infinity"])
def test_non_finite_config_values_are_refused(override):
    key = override.split("=")[0]
    with pytest.raises(ConfigError, match=rf"{key}=.*finite"):
        load_config(None, [override])
    with pytest.raises(ConfigError, match="finite"):
        TrainConfig(lr_g=float("inf"))


def faulty_train_script(fault: str) -> str:
    """``python -m reggan_core.train`` with ``fault`` (code using ``step`` and ``out``) run after each step."""
    body = "\n".join("    " + line for line in fault.strip().splitlines())
    return ("import math, os, signal, sys\n"
            "import reggan_core.train as T\n"
            "orig = T.Trainer.optimize_parameters\n"
            "def faulty(self, step):\n"
            "    out = orig(self, step)\n"
            f"{body}\n"
            "    return out\n"
            "T.Trainer.optimize_parameters = faulty\n"
            "sys.exit(T.main(sys.argv[1:]))\n")


DIVERGE = faulty_train_script("""
if step >= 3:
    out = dict(out, G_total=math.nan)
""")


def test_run_whose_losses_become_non_finite_stops_keeping_last_good_checkpoint(tiny_root, tmp_path):
    out = tmp_path / "diverge"
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps(tiny_cfg(tiny_root, out, iterations=6)))
    proc = subprocess.run([sys.executable, "-c", DIVERGE, "--config", str(cfg)], env=ENV, capture_output=True,
                          text=True, timeout=300, cwd=REPO, preexec_fn=_default_sigint)
    assert proc.returncode == 2, proc.stderr
    one_line(proc.stderr)
    assert "step 3" in proc.stderr and "G_total" in proc.stderr and "step_0000002.pt" in proc.stderr
    assert [p.name for p in (out / "checkpoints").glob("step_*.pt")] == ["step_0000002.pt"]
    assert not (out / "generator.pt").exists()


# ------------------------------------------------------------------ 8. uncaught errors


@pytest.mark.parametrize("content", [b"", b"\xff\xfe\x00p\x00a\x00n\x00e\x00l\xff\xff\n\x81\x82"])
def test_empty_or_non_utf8_key_is_one_line(content, tmp_path):
    from reggan_core.human_study.panels import read_key

    (tmp_path / "key.csv").write_bytes(content)
    with pytest.raises(DataError, match=r"key\.csv") as exc:
        read_key(tmp_path / "key.csv")
    one_line(str(exc.value))


@pytest.mark.parametrize("content", [b"", b"file,target\n\xff\xfe\x81,happy\n"])
def test_empty_or_non_utf8_targets_csv_is_one_line(content, tmp_path):
    from reggan_core.metrics import resolve_targets

    (tmp_path / "t.csv").write_bytes(content)
    with pytest.raises(DataError, match=r"t\.csv") as exc:
        resolve_targets(str(tmp_path / "t.csv"), ["a.png"])
    one_line(str(exc.value))


@pytest.mark.parametrize("args", [["--kid-subset-size", "-5"], ["--kid-subsets", "0"]])
def test_metrics_cli_validates_kid_arguments_first(args, tmp_path, capsys, monkeypatch):
    import reggan_core.metrics.__main__ as M

    monkeypatch.setattr(M, "evaluate", lambda *a, **k: pytest.fail("validated after work started"))
    code = M.main(["--real", str(tmp_path), "--generated", str(tmp_path), "--out", str(tmp_path / "o"), *args])
    err = capsys.readouterr().err
    assert code == 2 and args[0] in err
    one_line(err)


def test_kid_refuses_bad_subset_arguments():
    from reggan_core.metrics.fid import kid

    x = np.random.default_rng(0).normal(size=(20, 4))
    for n_subsets, size in ((0, 10), (5, -5), (5, 1)):
        with pytest.raises(RegGANError):
            kid(x, x, n_subsets, size)


@pytest.mark.parametrize("argv", [["power", "--sims", "0"], ["power", "--raters", "0"],
                                  ["power", "--alpha", "1.5"], ["power", "--methods", "1"]])
def test_human_study_power_validates_first(argv, tmp_path, capsys):
    from reggan_core.human_study.__main__ import main

    code = main([*argv, "--out", str(tmp_path / "p")])
    err = capsys.readouterr().err
    assert code == 2 and argv[1] in err
    one_line(err)
    assert not (tmp_path / "p").exists()


def _study_inputs(root: Path) -> tuple[Path, list[str]]:
    rng = np.random.default_rng(0)
    for folder in ("in", "A", "B"):
        (root / folder).mkdir()
        for k in range(2):
            Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(root / folder / f"f{k}.png")
    return root / "in", ["--method", f"A={root / 'A'}", "--method", f"B={root / 'B'}"]


@pytest.mark.parametrize("extra", [["--image-size", "0"], ["--image-size", "-3"], ["--scale", "5", "1"]])
def test_human_study_build_validates_before_writing(extra, tmp_path, capsys):
    from reggan_core.human_study.__main__ import main

    inputs, methods = _study_inputs(tmp_path)
    code = main(["build", "--inputs", str(inputs), *methods, "--out", str(tmp_path / "study"), *extra])
    err = capsys.readouterr().err
    assert code == 2
    one_line(err)
    assert not (tmp_path / "study").exists()


def test_unreadable_subject_folder_is_one_line(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    for s in ("S1", "S2"):
        (tmp_path / s).mkdir()
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(tmp_path / s / "neutral.png")
    locked = tmp_path / "S2"
    locked.chmod(0)
    if os.geteuid() == 0:   # root reads mode-000 folders: make the OS answer as it does for other users
        real = Path.iterdir

        def iterdir(self):
            if self == locked:
                raise PermissionError(13, "Permission denied", str(self))
            return real(self)

        monkeypatch.setattr(Path, "iterdir", iterdir)
    try:
        with pytest.raises(DataError, match=r"S2.*not readable.*permission") as exc:
            index_dataset(tmp_path)
        one_line(str(exc.value))
    finally:
        locked.chmod(0o755)


def test_expression_cli_catches_project_errors(tmp_path, capsys):
    from reggan_core.metrics.expression import main

    code = main(["--root", str(tmp_path / "missing"), "--out", str(tmp_path / "w.pt"),
                 "--figure", str(tmp_path / "f.png")])
    err = capsys.readouterr().err
    assert code == 2 and "missing" in err
    one_line(err)


def test_gallery_cli_validates_target_before_work(tmp_path, capsys, monkeypatch):
    from reggan_core.metrics import gallery

    monkeypatch.setattr(gallery, "ood_faces", lambda *a, **k: pytest.fail("work started before validation"))
    t0 = time.perf_counter()
    code = gallery.main(["--checkpoint", str(REPO / "checkpoints" / "reggan_embedded.pt"), "--target", "smirk",
                         "--out", str(tmp_path / "g.png")])
    err = capsys.readouterr().err
    assert code == 2 and "smirk" in err and time.perf_counter() - t0 < 5
    one_line(err)


def test_generate_out_naming_an_existing_file(tmp_path, generator_file, astronaut, capsys):
    from reggan_core.generate import main as generate_main

    Image.fromarray(astronaut).save(tmp_path / "a.png")
    (tmp_path / "taken").write_text("x")
    code = generate_main(["--checkpoint", str(generator_file), "--input", str(tmp_path / "a.png"),
                          "--target", "happy", "--out", str(tmp_path / "taken"), "--no-align"])
    err = capsys.readouterr().err
    assert code == 2 and "taken" in err
    one_line(err)


# ------------------------------------------------------------------ 9. interrupted training


INTERRUPT = faulty_train_script("""
if step == 3:
    os.kill(os.getpid(), signal.SIGINT)   # Ctrl-C in the middle of the run
""")


def test_ctrl_c_saves_a_checkpoint_and_exits_cleanly_then_resumes(tiny_root, tmp_path):
    from reggan_core.train import checkpoint_files, main

    out = tmp_path / "run"
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps(tiny_cfg(tiny_root, out, iterations=5, checkpoint_every=0)))
    proc = subprocess.run([sys.executable, "-c", INTERRUPT, "--config", str(cfg)], env=ENV, capture_output=True,
                          text=True, timeout=300, cwd=REPO, preexec_fn=_default_sigint)
    assert proc.returncode == 130, proc.stderr
    one_line(proc.stderr)
    assert "step 3" in proc.stderr and "--resume" in proc.stderr
    assert [p.name for p in checkpoint_files(out)] == ["step_0000003.pt"]
    assert main(["--config", str(cfg), "--resume"]) == 0
    assert (out / "generator.pt").is_file()


def test_stale_temp_files_of_killed_saves_are_removed_on_resume(tiny_root, tmp_path):
    from reggan_core.train import train

    out = tmp_path / "run"
    train(load_config(None, **tiny_cfg(tiny_root, out, iterations=2)))
    stale = [out / "checkpoints" / ".step_0000004.pt.abc123.tmp.pt", out / ".generator.pt.x9.tmp.pt"]
    for p in stale:
        p.write_bytes(b"\0" * 1000)
    train(load_config(None, **tiny_cfg(tiny_root, out, iterations=4)), resume=True)
    assert not any(p.exists() for p in stale)
    # a fresh run in a folder that only holds leftovers of a killed first save starts and cleans up
    fresh = tmp_path / "fresh" / "checkpoints"
    fresh.mkdir(parents=True)
    (fresh / ".step_0000002.pt.zz.tmp.pt").write_bytes(b"\0")
    train(load_config(None, **tiny_cfg(tiny_root, fresh.parent, iterations=2)))
    assert not (fresh / ".step_0000002.pt.zz.tmp.pt").exists()


def test_moved_run_folder_and_relative_path_resume(tiny_root, tmp_path, monkeypatch):
    from reggan_core.train import train

    first = tmp_path / "first"
    train(load_config(None, **tiny_cfg(tiny_root, first, iterations=2)))
    shutil.move(str(first), str(tmp_path / "moved"))
    monkeypatch.chdir(tmp_path)
    train(load_config(None, **tiny_cfg(tiny_root, Path("moved"), iterations=4)), resume=True)
    assert (tmp_path / "moved" / "checkpoints" / "step_0000004.pt").is_file()


# ------------------------------------------------------------------ 10. silent acceptances


def test_header_only_answer_file_is_reported(tmp_path):
    from reggan_core.human_study.responses import ResponseError, load_responses

    key = pd.DataFrame({"panel": ["P001", "P001"], "split": ["id", "id"], "position": ["A", "B"],
                        "method": ["RegGAN", "B"]})
    (tmp_path / "a.csv").write_text("rater,panel,position,best,rating\nana,P001,A,1,4\nana,P001,B,0,3\n")
    (tmp_path / "b.csv").write_text("rater,panel,position,best,rating\n")
    with pytest.raises(ResponseError, match=r"b\.csv.*no answers"):
        load_responses(tmp_path, key)
    with pytest.warns(UserWarning, match=r"b\.csv.*no answers"):
        assert load_responses(tmp_path, key, allow_missing=True).raters == ["ana"]


@pytest.mark.parametrize("extra", [["--n-boot", "0"], ["--scale", "5", "1"]])
def test_analyse_validates_its_arguments(extra, tmp_path, capsys):
    from reggan_core.human_study.__main__ import main

    pd.DataFrame({"panel": ["P001", "P001"], "split": ["id", "id"], "position": ["A", "B"],
                  "method": ["RegGAN", "B"]}).to_csv(tmp_path / "key.csv", index=False)
    (tmp_path / "ans").mkdir()
    (tmp_path / "ans" / "a.csv").write_text("rater,panel,position,best,rating\nana,P001,A,1,4\nana,P001,B,0,3\n")
    code = main(["analyse", "--responses", str(tmp_path / "ans"), "--key", str(tmp_path / "key.csv"),
                 "--out", str(tmp_path / "res"), *extra])
    err = capsys.readouterr().err
    assert code == 2 and extra[0] in err
    one_line(err)


def test_gif_in_folder_mode_reads_its_first_frame(tmp_path):
    frames = [Image.fromarray(np.full((80, 80, 3), v, np.uint8)) for v in (40, 200)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    assert [p.name for p in list_images(tmp_path)] == ["anim.gif"]
    img = load_image(tmp_path / "anim.gif")
    assert img.shape == (80, 80, 3) and abs(float(img.mean()) - 40) < 3


def test_mode_000_file_is_not_readable_not_corrupt(tmp_path, monkeypatch):
    path = tmp_path / "locked.png"
    Image.fromarray(np.zeros((80, 80, 3), np.uint8)).save(path)
    path.chmod(0)
    if os.geteuid() == 0:   # root can read mode 000: make open() answer as it does for other users
        import builtins

        real_open = builtins.open

        def fake_open(file, *a, **k):
            if Path(str(file)) == path:
                raise PermissionError(13, "Permission denied", str(file))
            return real_open(file, *a, **k)

        monkeypatch.setattr(builtins, "open", fake_open)
    try:
        with pytest.raises(DataError, match=r"locked\.png is not readable \(permission\)") as exc:
            load_image(path)
        one_line(str(exc.value))
    finally:
        path.chmod(0o644)


def test_looping_and_broken_symlinks_are_named_as_such(tmp_path):
    loop = tmp_path / "loop.png"
    loop.symlink_to(loop)
    with pytest.raises(DataError, match=r"loop\.png is a symbolic link loop"):
        load_image(loop)
    broken = tmp_path / "broken.png"
    broken.symlink_to(tmp_path / "gone.png")
    with pytest.raises(DataError, match=r"broken\.png is a broken symbolic link.*gone\.png"):
        load_image(broken)
    assert {p.name for p in list_images(tmp_path)} == {"loop.png", "broken.png"}  # reported, not dropped


def test_placeholders_in_instructions_are_not_expanded(tmp_path):
    from reggan_core.human_study.form import FormConfig, render_form
    from reggan_core.human_study.panels import collect_items, make_panels

    inputs, _ = _study_inputs(tmp_path)
    panels = make_panels(collect_items(inputs, {"A": tmp_path / "A", "B": tmp_path / "B"}))
    page = render_form(panels, FormConfig(title="T @@SETTINGS@@", instructions="Read @@PANELS@@ and @@TITLE@@"))
    assert page.count('class="panel"') == len(panels)
    assert "Read @@PANELS@@ and @@TITLE@@" in page and "T @@SETTINGS@@" in page


@pytest.mark.parametrize("value", ["-3", "-0.5"])
def test_negative_strength_is_refused(value, tmp_path, generator_file, astronaut, capsys):
    from reggan_core.generate import main as generate_main

    Image.fromarray(astronaut).save(tmp_path / "a.png")
    code = generate_main(["--checkpoint", str(generator_file), "--input", str(tmp_path / "a.png"),
                          "--target", "happy", "--out", str(tmp_path / "o"), "--no-align", "--strength", value])
    err = capsys.readouterr().err
    assert code == 2 and "strength" in err and value in err
    one_line(err)
