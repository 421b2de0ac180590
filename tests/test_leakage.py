"""Training subjects recorded in checkpoints, the leakage check, one sharpness definition, face grids."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from scipy import ndimage

from conftest import EMBEDDED, REPO
from reggan_core import ConfigError, RegGAN, check_no_leakage, load_generator, read_splits, save_generator, subjects_in
from reggan_core.config import RefinerConfig
from reggan_core.imagestats import FACE_BOX, laplacian_variance, mean_sharpness_ratio, sharpness, sharpness_ratio
from reggan_core.model import LeakageWarning, training_subjects

SHIPPED = [REPO / "checkpoints" / "reggan_embedded.pt", REPO / "checkpoints" / "refiner_only_embedded.pt"]


def tiny_model() -> RegGAN:
    return RegGAN(["happy"], conditional=False, refiner=RefinerConfig(ngf=4, ndf=4), ridge=None)


def test_saved_generator_keeps_its_training_subjects(tmp_path):
    model = tiny_model()
    model.train_subjects = ["S001", "S002"]
    path = save_generator(model, tmp_path / "g.pt")
    assert load_generator(path).train_subjects == ["S001", "S002"]
    assert training_subjects(path) == ["S001", "S002"]
    path2 = save_generator(tiny_model(), tmp_path / "h.pt", extra={"train_subjects": ["S009"]})
    assert load_generator(path2).train_subjects == ["S009"]


def test_overlap_warns_naming_subjects_and_refuse_raises(tmp_path):
    model = tiny_model()
    model.train_subjects = ["S001", "S002", "S003"]
    with pytest.warns(LeakageWarning, match=r"2 of the 3 validation subjects.*S001, S003"):
        assert check_no_leakage(model, ["S003", "S001", "S040"], what="validation") == ["S001", "S003"]
    with pytest.raises(ConfigError, match="S002"):
        check_no_leakage(model, ["S002"], refuse=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_no_leakage(model, ["S040"]) == []


def test_unrecorded_subjects_warn_that_the_check_is_impossible():
    with pytest.warns(LeakageWarning, match="does not record its training subjects"):
        assert check_no_leakage(tiny_model(), ["S001"]) == []


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_checkpoints_record_the_committed_training_split(path):
    """The shipped files record the train split they were trained on; validation/test subjects are held out."""
    import subprocess

    committed = subprocess.run(["git", "show", "HEAD:datasets/embedded/splits.csv"], cwd=REPO,
                               capture_output=True, text=True)
    if committed.returncode == 0:
        lines = committed.stdout.strip().splitlines()[1:]
        splits = {ln.split(",")[0]: ln.split(",")[1] for ln in lines}
    else:  # not a git checkout: the file itself
        splits = read_splits(EMBEDDED / "splits.csv")
    train = training_subjects(path)
    assert train is not None and sorted(train) == sorted(subjects_in(splits, "train"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_no_leakage(load_generator(path), subjects_in(splits, "val") + subjects_in(splits, "test")) == []


def test_sharpness_is_the_variance_of_scipys_laplacian():
    rng = np.random.default_rng(0)
    imgs = torch.from_numpy(rng.uniform(-1, 1, (3, 3, 128, 128)))
    grey = imgs.double().mean(1).numpy()
    for k in range(3):
        region = grey[k][FACE_BOX]
        ref = ndimage.laplace(region)[1:-1, 1:-1].var(ddof=1)   # valid part only, unbiased like torch.var
        assert float(laplacian_variance(imgs[k:k + 1])[0]) == pytest.approx(ref, rel=1e-12)
    assert sharpness(imgs) == pytest.approx(np.mean([float(v) for v in laplacian_variance(imgs)]))
    blurred = torch.from_numpy(ndimage.uniform_filter(imgs.numpy(), size=(1, 1, 3, 3)))
    assert sharpness_ratio(blurred, imgs) < 0.5 and sharpness_ratio(imgs, imgs) == pytest.approx(1.0)
    assert mean_sharpness_ratio([(imgs, imgs), (blurred, imgs)]) == pytest.approx(
        (1 + sharpness_ratio(blurred, imgs)) / 2)


def test_face_grid_draws_every_face_at_128_px_with_colour_bars(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    from PIL import Image

    from reggan_core.plotting import face_grid, face_pixels

    face = np.zeros((128, 128, 3), np.uint8)
    fig = face_grid([[face, np.ones((128, 128))], [face, np.zeros((128, 128))]], ["input", "|error|"],
                    ["row 1", "row 2"], path=tmp_path / "g.png", cbar_label="|error|")
    assert all(w >= 127.5 for w in face_pixels(fig)) and len(face_pixels(fig)) == 4
    assert len(fig.axes) == 6   # 4 faces + 2 colour bars
    with Image.open(tmp_path / "g.png") as im:
        assert im.format == "PNG" and im.size[0] >= 2 * 128 and im.size[1] >= 2 * 128


SHIPPED_V2 = [REPO / "checkpoints" / "reggan_v2.pt", REPO / "checkpoints" / "refiner_only_v2.pt"]


@pytest.mark.parametrize("path", SHIPPED_V2, ids=lambda p: p.name)
def test_shipped_v2_checkpoints_hold_out_every_scored_person(path):
    """Trained on dataset v2's train split exactly; val, test, real_pairs and ood subjects never seen."""
    from reggan_core.data import dataset_root

    root = dataset_root("v2")
    if not (root / "splits.csv").is_file():
        pytest.skip("dataset v2 is not built (make dataset-v2)")
    splits = read_splits(root / "splits.csv")
    train = training_subjects(path)
    assert train is not None and sorted(train) == sorted(subjects_in(splits, "train"))
    held = [s for s, v in splits.items() if v != "train"]
    assert len(held) >= 40
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_no_leakage(load_generator(path), held) == []
