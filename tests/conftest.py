"""Shared fixtures: small real-face images and a tiny CFEE-layout folder."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("MPLBACKEND", "Agg")
# Fetched package archives and converted judge weights stay in the real cache across test runs
# (reggan_core.assets); only the aligned-crop cache is made temporary below.
os.environ.setdefault("REGGAN_ASSETS", os.environ.get("REGGAN_CACHE") or str(Path.home() / ".cache" / "reggan"))

REPO = Path(__file__).resolve().parent.parent
EMBEDDED = REPO / "datasets" / "embedded"


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    """A real frontal face photo (public domain, ships with scikit-image)."""
    from skimage import data

    return data.astronaut()


@pytest.fixture(scope="session")
def hopper() -> np.ndarray:
    """A second real face photo (public domain, ships with matplotlib)."""
    import matplotlib.cbook as cbook
    from PIL import Image

    with Image.open(cbook.get_sample_data("grace_hopper.jpg")) as im:
        return np.asarray(im.convert("RGB"))


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Aligned-crop cache in a temporary folder, never the user's."""
    monkeypatch.setenv("REGGAN_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
