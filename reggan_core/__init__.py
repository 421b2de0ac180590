"""reggan_core: the package behind the RegGAN tutorial notebooks.

RegGAN (Arbish Akram, Nazar Khan, Arif Mahmood, "Improving Generative Adversarial Network
Generalization for Facial Expression Synthesis", MTAP 2026, arXiv:2603.15648) = a local ridge
regression layer followed by an adversarially trained refinement network, for neutral ->
expression synthesis.

Sub-packages not imported here (they pull heavier dependencies): ``reggan_core.metrics``
(ECS, FSS, QualiCLIP, FID/KID), ``reggan_core.human_study`` and ``reggan_core.widgets``.
"""
from .categories import BASIC_NAMES, CATEGORIES, CATEGORY_NAMES, COMPOUND_NAMES, Category, get_category
from .config import RefinerConfig, TrainConfig, load_config
from .data import (ConditionalFaces, FaceIndex, PairedFaces, index_dataset, load_face, load_splits,
                   make_splits, read_splits, subjects_in, write_splits)
from .errors import ConfigError, DataError, NoFaceError, RegGANError
from .imageio import load_image, save_image, to_tensor, to_uint8
from .model import RegGAN, check_no_leakage, load_generator, save_generator
from .regression import LocalRidge, RidgeConfig
from .utils import get_device, seed_everything

__version__ = "0.1.0"


def __getattr__(name: str):
    """Lazy exports: the explorer pulls in ipywidgets only when it is asked for."""
    if name in ("Explorer", "make_backend"):
        from . import widgets

        return getattr(widgets, name)
    raise AttributeError(f"module 'reggan_core' has no attribute {name!r}")
