"""Real-face benchmark (reggan_core.metrics.realfaces, benchmarks/bench_real_faces.py): subjects, scores, files, CLI."""
from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from reggan_core.data import dataset_root

REPO = Path(__file__).resolve().parent.parent
V2 = dataset_root("v2")
pytestmark = pytest.mark.skipif(not (V2 / "splits.csv").is_file(), reason="dataset v2 not built (make dataset-v2)")


def _independent_split_table() -> dict[str, tuple[str, str]]:
    """subject -> (split, source), parsed here with the csv module only."""
    with open(V2 / "splits.csv", newline="") as fh:
        reader = csv.reader(fh)
        head = next(reader)
        i_s, i_sp, i_src = head.index("subject"), head.index("split"), head.index("source")
        return {row[i_s]: (row[i_sp], row[i_src]) for row in reader if row}


@pytest.fixture(scope="module")
def faces():
    from reggan_core.metrics import realfaces as rf

    return rf.load_faces(V2)


def test_subject_selection_matches_splits_csv():
    from reggan_core.metrics import realfaces as rf

    table = _independent_split_table()
    held = rf.heldout_real_subjects(V2)
    expected = sorted(s for s, (sp, src) in table.items() if sp in {"val", "test"} and "+" not in src)
    assert held == expected and held
    for s in held:
        split, src = table[s]
        assert "+" not in src and split != "train" and split in {"val", "test"}
    # every val/test subject left out is a morph, and no train subject slipped in
    left = [s for s, (sp, src) in table.items() if sp in {"val", "test"} and s not in held]
    assert left and all("+" in table[s][1] for s in left)
    assert not set(held) & {s for s, (sp, _) in table.items() if sp == "train"}
    assert rf.performer_subjects(V2) == sorted(s for s, (sp, _) in table.items() if sp == "real_pairs")


def test_faces_loaded_with_real_targets_only_for_performers(faces):
    from PIL import Image

    for f in faces:
        assert f.neutral.shape == (128, 128, 3) and f.neutral.dtype == np.uint8
        if f.group == "held-out":
            assert f.real == {}
        else:
            assert f.real, f.subject
            for t, img in f.real.items():   # the real frame as read independently by PIL
                ref = np.asarray(Image.open(V2 / f.subject / f"{t}.jpg").convert("RGB"))
                assert np.array_equal(img, ref)


def _oracle(faces):
    """A method that returns each performer's real target frame (looked up by the input's bytes)."""
    by_input = {f.neutral.tobytes(): f for f in faces}

    def method(x: np.ndarray, target: str) -> np.ndarray:
        return np.stack([by_input[a.tobytes()].real[target] for a in x])

    return method


def test_real_target_method_gets_zero_l1_and_judge_accuracy(faces):
    from reggan_core.metrics import realfaces as rf
    from reggan_core.metrics.ecs import get_classifier

    fer = get_classifier("fer")
    judges = rf.Judges({"fer": fer}, {})
    with_happy = [f for f in faces if "happy" in f.real]
    assert len(with_happy) >= 2
    outs = rf.run_method(_oracle(with_happy), with_happy, ["happy"], "oracle")
    rows = rf.score_outputs("oracle", with_happy, outs, judges)
    (row,) = rows
    assert row["l1"] == 0.0 and row["n_l1"] == len(with_happy)
    # the judge's accuracy on the real happy frames, computed independently
    probs = fer.predict([f.real["happy"] for f in with_happy])
    acc = float(np.mean(probs.argmax(1) == list(fer.classes).index("happy")))
    assert row["ecs_fer"] == pytest.approx(acc)
    # a method that returns the wrong frame has the L1 numpy gives
    shifted = rf.run_method(lambda x, t: x[::-1].copy(), with_happy, ["happy"])
    (r2,) = rf.score_outputs("rev", with_happy, shifted, judges)
    ref = np.mean([np.abs(a.astype(float) - f.real["happy"].astype(float)).mean() / 255
                   for a, f in zip(np.stack([f.neutral for f in with_happy])[::-1], with_happy)])
    assert r2["l1"] == pytest.approx(ref) and r2["l1"] > 0.01


def test_copy_input_keeps_identity(faces):
    from reggan_core.metrics import realfaces as rf
    from reggan_core.metrics.fss import get_embedder

    perf = [f for f in faces if f.group == "real_pairs"]
    dlib, faceres = get_embedder("dlib"), get_embedder("faceres")
    judges = rf.Judges({}, {"dlib": dlib, "faceres": faceres})   # uncached: outputs embedded anew
    outs = rf.run_method(rf.copy_input, perf, ["happy"])
    (row,) = rf.score_outputs("copy-input", perf, outs, judges)
    assert row["dlib_distance"] < 1e-6
    assert row["faceres_cosine"] == pytest.approx(1.0, abs=1e-6)
    # another person's face as output: the distance numpy gives from independent embeddings, clearly > 0
    rolled = rf.run_method(lambda x, t: np.roll(x, 1, axis=0), perf, ["happy"])
    (r2,) = rf.score_outputs("rolled", perf, rolled, judges)
    e, _ = dlib.embed([f.neutral for f in perf])
    assert r2["dlib_distance"] == pytest.approx(np.linalg.norm(e - np.roll(e, 1, axis=0), axis=1).mean(), abs=1e-9)
    assert r2["dlib_distance"] > 0.3


def test_bad_method_output_is_one_line(faces):
    from reggan_core.errors import DataError
    from reggan_core.metrics import realfaces as rf

    with pytest.raises(DataError, match="must return uint8") as exc:
        rf.run_method(lambda x, t: x[:1], faces[:3], ["happy"], "short")
    assert "\n" not in str(exc.value)


def _fake_result(faces):
    from reggan_core.metrics import realfaces as rf

    rows = []
    for m, e in (("copy-input", 0.1), ("RegGAN", 0.95)):
        for t in rf.BASIC_TARGETS:
            for g, n in (("held-out", 12), ("real_pairs", 4)):
                rows.append({"method": m, "target": t, "group": g, "n": n, "ecs_fer": e, "ecs_faceapi": e,
                             "dlib_distance": 0.0 if m == "copy-input" else 0.3, "faceres_cosine": 0.9,
                             "l1": float("nan"), "n_l1": 0,
                             "_per_face": {"hits": {"fer": np.full(n, e), "faceapi": np.full(n, e)},
                                           "dlib_distance": np.full(n, 0.3), "faceres_cosine": np.full(n, 0.9),
                                           "l1": np.full(n, np.nan)}})
    rows += rf.overall_rows(rows)
    return {"rows": rows, "fid": {}, "floor": {}, "outputs": {}, "faces": faces, "targets": list(rf.BASIC_TARGETS)}


def test_table_writer_is_atomic_and_writes_csv(tmp_path, faces, monkeypatch):
    import reggan_core.imageio as io_mod
    from reggan_core.metrics import realfaces as rf

    result = _fake_result(faces)
    md = tmp_path / "res.md"
    md.write_text("old table\n")
    (tmp_path / "res.csv").write_text("old,csv\n")

    real_replace = io_mod.os.replace

    def failing_replace(src, dst):   # the write dies at the final rename
        raise OSError("disk full")

    monkeypatch.setattr(io_mod.os, "replace", failing_replace)
    with pytest.raises(OSError):
        rf.write_results(result, md, "# header")
    assert md.read_text() == "old table\n"                      # old content intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["res.csv", "res.md"]   # no temp file left
    monkeypatch.setattr(io_mod.os, "replace", real_replace)

    md_path, csv_path = rf.write_results(result, md, "# header")
    text = md_path.read_text()
    assert text.startswith("# header") and "| held-out | happy | RegGAN | 12 | 0.95 | 0.95 |" in text
    assert "happy ECS >= 0.90" in text and "| yes |" in text
    with open(csv_path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(result["rows"]) and {r["method"] for r in rows} == {"copy-input", "RegGAN"}


def test_cli_missing_checkpoint_is_one_line(tmp_path):
    missing = tmp_path / "nope.pt"
    p = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_real_faces.py"), "--reggan", str(missing),
                        "--out", str(tmp_path / "x.md")], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert p.returncode == 2
    err = p.stderr.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error:") and "--reggan" in err and str(missing) in err
    assert not (tmp_path / "x.md").exists()


# ------------------------------------------------------------------ strength sweep


def _sweep_rows(method, points):
    return [{"method": method, "group": "held-out", "target": "all", "strength": s, "dlib_distance": d,
             "ecs_fer": e, "ecs_faceapi": e, "faceres_cosine": 0.8, "n": 72} for s, d, e in points]


def test_matched_identity_interpolates_like_scipy():
    from scipy.interpolate import interp1d

    from reggan_core.metrics import realfaces as rf

    abl = [(0.5, 0.2, 0.10), (1.0, 0.4, 0.30), (2.0, 0.6, 0.35), (1.5, 0.5, 0.34)]   # unordered on purpose
    ref = float(interp1d([p[1] for p in abl], [p[2] for p in abl])(0.45))
    rows = _sweep_rows("abl", abl) + _sweep_rows("RegGAN", [(1.0, 0.45, ref + 0.01), (2.0, 0.7, 0.9)])
    c = rf.at_matched_identity(rows, "RegGAN", "abl")
    assert c["distance"] == pytest.approx(0.45) and c["ecs_ablation"] == pytest.approx(ref) and c["met"] is True
    rows = _sweep_rows("abl", abl) + _sweep_rows("RegGAN", [(1.0, 0.45, ref - 0.01)])
    assert rf.at_matched_identity(rows, "RegGAN", "abl")["met"] is False
    # outside the ablation's swept distances: not measurable, not a win or a loss
    rows = _sweep_rows("abl", abl) + _sweep_rows("RegGAN", [(1.0, 0.75, 0.9)])
    assert rf.at_matched_identity(rows, "RegGAN", "abl")["met"] is None
    assert "not measurable" in rf.sweep_markdown(rows, "RegGAN", ("abl",))


def test_strength_scales_the_change_and_sweep_starts_at_the_input(faces):
    import torch

    from reggan_core.metrics import realfaces as rf
    from reggan_core.metrics.ecs import get_classifier
    from reggan_core.metrics.fss import get_embedder
    from reggan_core.model import load_generator

    model = load_generator(REPO / "checkpoints" / "reggan_v2.pt")
    perf = [f for f in faces if f.group == "real_pairs"]
    x = np.stack([f.neutral for f in perf])
    one = rf.model_method(model, "refined")(x, "happy").astype(np.float64)
    two = rf.model_method(model, "refined", strength=2.0)(x, "happy").astype(np.float64)
    # x + 2 (y - x) from the (rounded) strength-1 output: within the rounding of y, doubled
    ref = np.clip(x + 2 * (one - x), 0, 255)
    assert np.abs(two - ref).max() <= 2.01 and np.abs(two - one).mean() > 1
    with pytest.raises(Exception, match="strength"):
        rf.model_method(model, "refined", strength=-1)
    judges = rf.Judges({"fer": get_classifier("fer")}, {"dlib": get_embedder("dlib")})
    rows = rf.strength_sweep({"RegGAN": (model, "refined")}, perf, judges, (0.0, 1.0), ["happy"], progress=False)
    zero = next(r for r in rows if r["strength"] == 0.0 and r["target"] == "happy")
    (copy,) = rf.score_outputs("copy-input", perf, rf.run_method(rf.copy_input, perf, ["happy"]), judges)
    assert zero["dlib_distance"] < 1e-6 and zero["ecs_fer"] == copy["ecs_fer"]
    full = next(r for r in rows if r["strength"] == 1.0 and r["target"] == "happy")
    assert full["dlib_distance"] > 0.1
    # rows already scored at strength 1 (by evaluate) are reused, not scored again; other strengths are scored
    scored = [{**full, "strength": None, "ecs_fer": 0.123}]
    again = rf.strength_sweep({"RegGAN": (model, "refined")}, perf, judges, (0.0, 1.0), ["happy"], progress=False,
                              scored=scored)
    assert [r["ecs_fer"] for r in again if r["strength"] == 1.0 and r["target"] == "happy"] == [0.123]
    assert next(r for r in again if r["strength"] == 0.0 and r["target"] == "happy")["dlib_distance"] < 1e-6
    assert torch.is_grad_enabled()   # the sweep leaves autograd as it found it


def test_image_grid_places_every_face_at_native_size_under_wrapped_labels(tmp_path):
    """Long method names wrap onto more label lines (the top margin grows); faces stay 128 px, in place."""
    from PIL import Image

    from reggan_core.metrics import realfaces as rf

    rng = np.random.default_rng(0)
    faces = [rf.BenchFace(f"p{i}", "held-out" if i < 3 else "real_pairs",
                          rng.integers(0, 256, (128, 128, 3), dtype=np.uint8)) for i in range(4)]
    methods = ["ridge: a very long method name that needs wrapping", "short"]
    outs = {m: {t: np.stack([255 - f.neutral if k == 0 else f.neutral // 2 for f in faces])
                for t in ("happy", "sad")} for k, m in enumerate(methods)}
    result = {"faces": faces, "outputs": outs, "targets": ["happy", "sad"]}
    sizes = {}
    for name, ms in (("long", methods), ("short", ["short"])):
        path = rf.image_grid(result, tmp_path / f"{name}.png", people=2, methods=ms, targets=["sad"])
        with Image.open(path) as im:
            sizes[name] = im.size
            img = np.asarray(im.convert("RGB"))
        top = img.shape[0] - 128 * 3                      # 2 held-out people + 1 performer
        assert img.shape[1] == 120 + 128 * (1 + len(ms))
        # row 2 (the performer, p3), last column: that method's output for p3, pixel for pixel
        want = outs[ms[-1]]["sad"][3]
        assert np.array_equal(img[top + 256:top + 384, -128:], want)
        assert np.array_equal(img[top:top + 128, 120:248], faces[0].neutral)   # input column
    assert sizes["long"][1] > sizes["short"][1]           # wrapped labels: a taller header
