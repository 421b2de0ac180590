"""benchmarks/ablation_v2.py: its ridge variants reach the fit, and a filter that matches nothing is refused."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _module():
    spec = importlib.util.spec_from_file_location("ablation_v2", REPO / "benchmarks" / "ablation_v2.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod          # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(mod)
    return mod


def test_every_ridge_variant_is_a_valid_ridge_config_with_a_unique_name():
    from reggan_core.regression import RidgeConfig

    mod = _module()
    names = [v.name for v in mod.RIDGE_VARIANTS]
    assert len(set(names)) == len(names)
    for v in mod.RIDGE_VARIANTS:
        cfg = RidgeConfig(r=v.r, prior=v.prior, lam=v.lam)      # raises on a bad r / prior / lambda
        assert (cfg.r, cfg.lam) == (v.r, v.lam)
    assert {v.r for v in mod.RIDGE_VARIANTS} >= {3, 5, 7, 9}


def test_ridge_filter_matching_nothing_stops_before_any_work():
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "ablation_v2.py"), "--ridge", "no such row",
                           "--out", "/nonexistent/x.md"], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode != 0
    assert "no ridge row's name contains" in proc.stderr and "no such row" in proc.stderr
