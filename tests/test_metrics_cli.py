"""The metrics command line and Python API: files written, values wired to the metric functions, errors."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from reggan_core.errors import DataError
from reggan_core.imageio import load_image, save_image
from reggan_core.metrics import (bootstrap_ci, compare_table, evaluate, evaluate_images, markdown_table,
                                 read_folder, resolve_targets)
from reggan_core.metrics import fid as F
from reggan_core.metrics.__main__ import main
from reggan_core.metrics import subject_key, pair_by_subject

from reggan_core.assets import cache_root

REAL_CACHE = cache_root()   # read before conftest points $REGGAN_CACHE at a temporary folder
REPO = Path(__file__).resolve().parent.parent
EMBEDDED = REPO / "datasets" / "embedded"
SUBJECTS = 3
TARGETS = ("happy", "surprised")


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """real/<subject>_<target>.png, gen/ (noisy copies), inputs/<subject>_neutral.png from the embedded data."""
    subjects = sorted(p for p in EMBEDDED.iterdir() if p.is_dir())[:SUBJECTS] if EMBEDDED.is_dir() else []
    if len(subjects) < SUBJECTS:
        pytest.skip("embedded dataset missing")
    root = tmp_path_factory.mktemp("metrics_cli")
    rng = np.random.default_rng(0)
    for s in subjects:
        for t in TARGETS:
            img = load_image(s / f"{t}.jpg")
            save_image(img, root / "real" / f"{s.name}_{t}.png")
            noisy = np.clip(img + rng.normal(0, 10, img.shape), 0, 255).astype(np.uint8)
            save_image(noisy, root / "gen" / f"{s.name}_{t}.png")
        save_image(load_image(s / "neutral.jpg"), root / "inputs" / f"{s.name}_neutral.png")
    return root


def _link_judge_weights(cache: Path) -> None:
    """Converted judge weights from the user's cache (converted there once) linked into ``cache``."""
    import os

    from reggan_core.metrics.setup import setup

    old = os.environ.get("REGGAN_CACHE")
    os.environ["REGGAN_CACHE"] = str(REAL_CACHE)
    try:
        rows = setup()
    finally:
        if old is None:
            os.environ.pop("REGGAN_CACHE", None)
        else:
            os.environ["REGGAN_CACHE"] = old
    (cache / "weights").mkdir(parents=True, exist_ok=True)
    for r in rows:
        link = cache / "weights" / Path(r["path"]).name
        if not link.exists():
            link.symlink_to(r["path"])


def test_cli_writes_tables_wired_to_the_metric_functions(folders, capsys, monkeypatch, tmp_path):
    from sklearn.metrics import cohen_kappa_score

    from reggan_core.metrics.ecs import basic_label, ecs, get_classifier
    from reggan_core.metrics.fss import fss, get_embedder
    from reggan_core.metrics.inception import InceptionFeatures

    monkeypatch.setenv("REGGAN_CACHE", str(tmp_path))  # no QualiCLIP weights in the default place
    monkeypatch.delenv("REGGAN_QUALICLIP_WEIGHTS", raising=False)
    _link_judge_weights(tmp_path)
    out = folders / "out"
    rc = main(["--real", str(folders / "real"), "--generated", str(folders / "gen"), "--inputs",
               str(folders / "inputs"), "--out", str(out), "--kid-subsets", "3", "--quiet"])   # default judges
    assert rc == 0
    for name in ("metrics.csv", "metrics.md", "per_image.csv", "ecs_per_target.csv"):
        assert (out / name).is_file(), name
    summary = pd.read_csv(out / "metrics.csv")
    md = (out / "metrics.md").read_text()
    assert md.startswith("Command: `python -m reggan_core.metrics") and "| metric | value |" in md
    printed = capsys.readouterr().out
    assert "| metric | value |" in printed and "FID is biased upward at small N" in printed

    names, gen = read_folder(folders / "gen")
    _, real = read_folder(folders / "real")
    _, inputs = read_folder(folders / "inputs")
    targets = [n.split("_", 1)[1].removesuffix(".png") for n in names]
    row = lambda m, space=None: summary[(summary.metric == m) & (  # noqa: E731
        summary.space.fillna("") == (space or ""))].iloc[0]
    # two independent expression judges, each equal to the ECS function called directly
    for judge in ("fer", "faceapi"):
        assert row("ECS", judge).value == pytest.approx(ecs(gen, targets, judge)["ecs"]), judge
    assert not (summary.space == "cfee22").any()   # the circular judge only on request
    # their agreement: share of equal top classes and sklearn's kappa, recomputed here
    top = {j: [basic_label(get_classifier(j).classes[k]) for k in get_classifier(j).predict(gen).argmax(1)]
           for j in ("fer", "faceapi")}
    same = np.mean([a == b for a, b in zip(top["fer"], top["faceapi"])])
    assert row("ECS agreement", "fer vs faceapi").value == pytest.approx(same)
    if len(set(top["fer"]) | set(top["faceapi"])) > 1:
        assert row("ECS kappa", "fer vs faceapi").value == pytest.approx(cohen_kappa_score(top["fer"], top["faceapi"]))
    # two identity judges
    pairs = [inputs[i // len(TARGETS)] for i in range(len(gen))]   # sorted: S001_happy, S001_surprised, ...
    assert row("FSS", "dlib").value == pytest.approx(fss(pairs, gen)["fss"])
    assert row("FSS", "faceres").value == pytest.approx(fss(pairs, gen, get_embedder("faceres"))["fss"])
    # FID/KID in the FID Inception's space by default, with the sample-size caveat
    inc = InceptionFeatures()
    assert row("FID", "inception").value == pytest.approx(F.fid_from_features(inc(real), inc(gen)), rel=1e-6)
    assert "biased upward" in row("FID", "inception").note and "2015-12-05" in row("FID", "inception").network
    assert row("QualiCLIP").status == "unavailable" and "qualiclip.pth" in row("QualiCLIP").note
    assert (out / "cache").is_dir() and list((out / "cache").glob("real-inception-*.npz"))
    per_image = pd.read_csv(out / "per_image.csv")
    assert list(per_image.file) == names and per_image["fss_cosine[faceres]"].between(-1, 1).all()


def test_cli_offline_spaces_and_the_circular_judge_on_request(folders, capsys, tmp_path):
    out = tmp_path / "out"
    rc = main(["--real", str(folders / "real"), "--generated", str(folders / "gen"), "--inputs",
               str(folders / "inputs"), "--out", str(out), "--kid-subsets", "3", "--quiet", "--metrics", "ecs,fid",
               "--ecs-classifier", "cfee22", "--fid-spaces", "identity,expression"])
    assert rc == 0
    summary = pd.read_csv(out / "metrics.csv")
    ecs_row = summary[summary.metric == "ECS"].iloc[0]
    assert ecs_row.space == "cfee22" and "not independent" in ecs_row.note
    assert "ECS[cfee22] is trained on this project's training split" in capsys.readouterr().out
    names, gen = read_folder(folders / "gen")
    _, real = read_folder(folders / "real")
    from reggan_core.metrics.ecs import get_classifier

    ext = F.expression_extractor(get_classifier("cfee22"))   # the expression space follows the ECS judge
    fid = summary[(summary.metric == "FID") & (summary.space == "expression")].value.iloc[0]
    assert fid == pytest.approx(F.fid_from_features(ext(real), ext(gen)))
    assert summary[(summary.metric == "FID") & (summary.space == "identity")].network.iloc[0].startswith(
        "face-recognition embedding")


def test_python_api_matches_and_compares(folders):
    res = evaluate(folders / "real", folders / "gen", metrics=("ecs", "fss"), inputs=folders / "inputs",
                   ecs_classifier="fer", embedder="dlib", progress=False)
    saved = pd.read_csv(folders / "out" / "metrics.csv")
    assert res.value("ECS") == pytest.approx(saved[(saved.metric == "ECS") & (saved.space == "fer")].value.iloc[0])
    # FSS without --inputs pairs each output with the real photo of the same subject
    res_real = evaluate(folders / "real", folders / "gen", metrics=("fss",), embedder="dlib", progress=False)
    assert res_real.value("FSS") > res.value("FSS")   # a noisy copy is closer to its own photo
    table = compare_table({"a": res, "b": res_real}, metrics=("ECS", "FSS"))
    assert list(table.index) == ["a", "b"] and np.isnan(table.loc["b", "ECS[fer]"])
    assert table.loc["a", "FSS[dlib]"] == pytest.approx(res.value("FSS", "dlib"))
    with pytest.raises(DataError, match="no metric"):
        res.value("FID")


def test_unavailable_pieces_are_reported_not_scored():
    imgs = np.zeros((2, 128, 128, 3), np.uint8)
    res = evaluate_images(imgs, metrics=("ecs", "fss", "fid"), progress=False)
    assert set(res.summary.status) == {"unavailable"}
    assert res.summary.value.isna().all()
    assert all("\n" not in n for n in res.summary.note)


@pytest.mark.parametrize("make,match", [
    (lambda root: (root / "nope", root / "gen"), "does not exist"),
    (lambda root: (root / "real", root / "empty"), "holds no images"),
    (lambda root: (root / "real", root / "corrupt"), "corrupt.png is corrupt"),
])
def test_bad_folders_and_images_get_one_line_errors(folders, capsys, make, match):
    (folders / "empty").mkdir(exist_ok=True)
    (folders / "corrupt").mkdir(exist_ok=True)
    (folders / "corrupt" / "corrupt.png").write_bytes(b"\x89PNG not really")
    real, gen = make(folders)
    rc = main(["--real", str(real), "--generated", str(gen), "--out", str(folders / "o2"), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("error:") and "\n" not in err and match in err


def test_bad_options_get_one_line_errors(folders, capsys):
    rc = main(["--real", str(folders / "real"), "--generated", str(folders / "gen"), "--out",
               str(folders / "o3"), "--metrics", "ecs,psnr"])
    assert rc == 2 and "psnr" in capsys.readouterr().err
    rc = main(["--real", str(folders / "real"), "--generated", str(folders / "gen"), "--out",
               str(folders / "o3"), "--metrics", "ecs", "--targets", "grumpy"])
    assert rc == 2 and "'grumpy' is not a category" in capsys.readouterr().err


def test_module_entry_point_runs(folders):
    proc = subprocess.run([sys.executable, "-m", "reggan_core.metrics", "--real", str(folders / "nope"),
                           "--generated", str(folders / "gen"), "--out", str(folders / "o4")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0 and "nope" in proc.stderr


def test_targets_and_pairing_rules(tmp_path):
    names = ["S001_happily_surprised.png", "sad/S002.png", "S003-angry.jpg", "S004.png", "img_3.png"]
    assert resolve_targets("auto", names) == ["happily_surprised", "sad", "angry", None, None]
    assert resolve_targets("HA", names[:2]) == ["happy", "happy"]
    csv = tmp_path / "t.csv"
    pd.DataFrame({"file": ["S001_happily_surprised.png", "S002.png"], "target": ["fearful", "awed"]}).to_csv(csv)
    assert resolve_targets(str(csv), names[:2]) == ["fearful", "awed"]
    with pytest.raises(DataError, match="no row"):
        resolve_targets(str(csv), names)
    assert subject_key("S001_happily_surprised.png") == "s001"
    assert subject_key("S002/neutral.jpg") == "s002"
    assert subject_key("S003_neutral_sadly_angry.png") == "s003"
    a, b = np.zeros((1,)), np.ones((1,))
    assert pair_by_subject(["S001_happy.png", "x/S002_sad.png"], ["S002_neutral.png", "S001_neutral.png"],
                           [b, a], "inputs") == [a, b]
    with pytest.raises(DataError, match="no --inputs image matches"):
        pair_by_subject(["S009_happy.png"], ["S001_neutral.png"], [a], "inputs")


def test_bootstrap_ci_agrees_with_scipy():
    x = np.random.default_rng(5).normal(0.6, 0.2, 200)
    lo, hi = bootstrap_ci(x, n_boot=4000, seed=1)
    ref = stats.bootstrap((x,), np.mean, n_resamples=4000, method="percentile", random_state=2).confidence_interval
    assert lo == pytest.approx(ref.low, abs=0.005) and hi == pytest.approx(ref.high, abs=0.005)
    assert lo < x.mean() < hi
    assert np.isnan(bootstrap_ci([1.0])[0])


def test_markdown_table_layout():
    md = markdown_table(pd.DataFrame({"method": ["a|b"], "FID": [12.3456789], "n": [3]}))
    assert md.splitlines() == ["| method | FID | n |", "|---|---|---|", "| a/b | 12.35 | 3 |"]


def test_ood_gallery_faces_scores_and_figure(tmp_path):
    """Renderings are aligned 128x128 faces; identity columns keep FSS 1; the figure is written."""
    from reggan_core.metrics import gallery as G

    photo = G.base_photos()["hopper"]
    for style, fn in G.STYLES.items():
        out = fn(photo)
        assert out.shape == photo.shape and out.dtype == np.uint8, style
    assert not np.array_equal(G.STYLES["statue"](photo), photo)
    faces = G.ood_faces([("hopper", "statue"), ("astronaut", "cartoon")])
    assert [f.image.shape for f in faces] == [(128, 128, 3)] * 2
    assert {f.aligned_by for f in faces} <= {"own landmarks", "source photo landmarks"}
    cols = {"copy": lambda x: x, "flip": lambda x: x[:, :, ::-1].copy()}
    res = G.run_gallery(faces, cols, "happy")
    np.testing.assert_allclose(res.fss["copy"], 1.0)
    np.testing.assert_array_equal(res.target_prob["copy"], res.target_prob["input"])
    table = res.table()
    assert list(table.index) == ["input", "copy", "flip"] and table.loc["flip", "FSS"] < 1
    path = tmp_path / "gallery.png"
    G.plot_gallery(res, path)
    assert path.stat().st_size > 10_000
    with pytest.raises(ValueError, match="unknown OOD face"):
        G.ood_faces([("hopper", "sculpture")])
