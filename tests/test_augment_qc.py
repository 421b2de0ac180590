"""Pair augmentation (reggan_core.augment) and the broken-warp pair check (reggan_core.pair_qc)."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch

from reggan_core.augment import augmented_copies, jitter_pair, jitter_params
from reggan_core.data import DEFAULT_ROOT, load_face
from reggan_core.errors import ConfigError, DataError
from reggan_core.pair_qc import RIGID_POINTS, face_landmarks, pair_motions, rigid_motion


def test_jitter_is_the_same_per_channel_affine_map_plus_ramp_on_both_images():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(5, 3, 16, 12, generator=g) * 1.6 - 0.8
    y = torch.rand(5, 3, 16, 12, generator=g) * 1.6 - 0.8
    a, b = jitter_pair(x, y, 0.3, torch.Generator().manual_seed(7))
    gain, off, amp, ang = (p.numpy() for p in jitter_params(5, 0.3, torch.Generator().manual_seed(7)))
    yy, xx = np.meshgrid(np.linspace(-1, 1, 16), np.linspace(-1, 1, 12), indexing="ij")
    for img, out in ((x, a), (y, b)):
        u = (img.numpy() + 1) / 2
        ramp = amp * (np.cos(ang) * xx + np.sin(ang) * yy) / 2
        ref = np.clip(u * gain + off + ramp, 0, 1) * 2 - 1
        np.testing.assert_allclose(out.numpy(), ref, atol=1e-5)
    assert float((a - x).abs().max()) > 0.01                       # it does change the images
    same, same2 = jitter_pair(x, x.clone(), 0.3, torch.Generator().manual_seed(1))
    assert torch.equal(same, same2)                                # identical change on both faces


def test_zero_strength_and_copies():
    x, y = torch.zeros(2, 3, 4, 4), torch.ones(2, 3, 4, 4) * 0.5
    a, b = jitter_pair(x, y, 0.0, torch.Generator())
    assert a is x and b is y
    xs, ys = augmented_copies(x, y, 3, 0.2, seed=1)
    assert xs.shape == (8, 3, 4, 4) and torch.equal(xs[:2], x) and torch.equal(ys[:2], y)
    with pytest.raises(ConfigError, match="must be >= 0"):
        augmented_copies(x, y, -1, 0.2)
    with pytest.raises(ConfigError, match="finite number >= 0"):
        jitter_params(2, float("nan"), torch.Generator())


def synthetic_landmarks() -> np.ndarray:
    rng = np.random.default_rng(0)
    lm = rng.uniform(20, 100, size=(68, 2))
    lm[36:42] = [40, 50] + rng.normal(0, 1, (6, 2))
    lm[42:48] = [80, 50] + rng.normal(0, 1, (6, 2))
    return lm


def test_rigid_motion_ignores_the_mouth_and_scales_by_eye_distance():
    src = synthetic_landmarks()
    iod = np.linalg.norm(src[36:42].mean(0) - src[42:48].mean(0))
    moved_mouth = src.copy()
    moved_mouth[48:68] += 15.0                                     # a big smile: not rigid
    assert rigid_motion(src, moved_mouth) == 0.0
    shifted = src.copy()
    shifted[list(RIGID_POINTS)] += [0.2 * iod, 0.0]                # every rigid point 0.2 eye distances
    assert rigid_motion(src, shifted) == pytest.approx(0.2)


def test_pair_motion_on_a_real_face_is_small_for_itself_and_large_for_a_turned_copy():
    face = load_face(next(iter(sorted(DEFAULT_ROOT.glob("*/neutral.jpg")))), False, 128)
    m = cv2.getRotationMatrix2D((64, 64), 0, 1.0)
    m[0, 2] += 14                                                   # the head moved 14 px sideways
    moved = cv2.warpAffine(face, m, (128, 128), borderMode=cv2.BORDER_REFLECT_101)
    assert face_landmarks(face) is not None
    same, turned, blank = pair_motions([("a", face, face.copy()), ("a", face, moved),
                                        ("a", face, np.full_like(face, 128))])
    assert same < 0.02
    assert turned > 0.2
    assert blank == float("inf")                                   # no face in the target


def test_training_refuses_a_pair_check_that_drops_every_pair(tmp_path):
    """The tiny noise dataset has no detectable faces: every pair fails the check."""
    from reggan_core.config import load_config
    from reggan_core.train import train

    root = tmp_path / "faces"
    face = load_face(next(iter(sorted(DEFAULT_ROOT.glob("*/neutral.jpg")))), False, 128)
    for s in ("S001", "S002", "S003"):
        (root / s).mkdir(parents=True)
        cv2.imwrite(str(root / s / "neutral.png"), face[..., ::-1])
        cv2.imwrite(str(root / s / "happy.png"), np.full_like(face, 128))   # broken target: no face
    cfg = {"dataset_root": str(root), "iterations": 1, "batch_size": 2, "num_threads": 1, "progress": False,
           "out_dir": str(tmp_path / "run"), "targets": ["happy"], "max_rigid_motion": 0.15,
           "refiner": {"ngf": 8, "ndf": 8, "d_layers": 2}}
    (tmp_path / "c.json").write_text(json.dumps(cfg))
    with pytest.raises(DataError, match="max_rigid_motion=0.15 drops every happy pair"):
        train(load_config(tmp_path / "c.json"))
