"""The papermill parameter matrix of tests/test_notebook_params.py, run (see that file's docstring).

A file of its own so that ``make test`` (pytest-xdist, ``--dist loadfile``) runs these notebook
runs on one core while the README commands run on the other.
"""
from __future__ import annotations

import sys

import pytest

from test_notebook_params import _dataset_copy, matrix_cases, run_checked


@pytest.mark.slow
@pytest.mark.parametrize("notebook,params", list(matrix_cases()))
def test_notebook_runs_with_non_default_parameters(notebook, params, tmp_path):
    import yaml

    cmd = [sys.executable, "-m", "papermill", f"notebooks/{notebook}", str(tmp_path / notebook),
           "-k", "python3", "--no-progress-bar"]
    for name, value in params.items():
        if value == "{dataset_copy}":
            value = _dataset_copy(tmp_path)
        cmd += ["-y", yaml.safe_dump({name: value}, default_flow_style=True).strip()]
    run_checked(cmd, f"{notebook} with {params}")
