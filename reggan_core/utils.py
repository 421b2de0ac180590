"""Seeds, devices and small run helpers shared by notebooks, training and tests."""
from __future__ import annotations

import json
import os
import random
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ConfigError


def seed_everything(seed: int = 0) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) so a run repeats."""
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def get_device(name: str = "auto"):
    """'auto' (CUDA when present, else CPU), 'cpu', 'cuda' or 'cuda:N' as a torch.device."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r}; use 'auto', 'cpu' or 'cuda[:N]'") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} asked for but CUDA is not available; use device='cpu'")
    return dev


def repo_root() -> Path:
    """The repository folder (parent of the package)."""
    return Path(__file__).resolve().parent.parent


def write_config(config: Any, path: str | os.PathLike) -> Path:
    """Write a dataclass or dict as pretty JSON (atomically), beside a run's outputs."""
    from .imageio import write_text

    data = asdict(config) if is_dataclass(config) else dict(config)
    return write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n", path)


def cpu_name() -> str:
    """The CPU's model name (for benchmark tables), from /proc/cpuinfo where there is one."""
    import platform

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"
