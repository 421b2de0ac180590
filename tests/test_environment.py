"""The two install paths (pip: pyproject.toml, conda: environment.yml) list the same packages."""
from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent


def _name(req: str) -> str:
    return re.split(r"[<>=!~ ;\[]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _pyproject() -> set[str]:
    data = tomllib.loads((REPO / "pyproject.toml").read_text())
    reqs = list(data["project"]["dependencies"]) + list(data["project"]["optional-dependencies"]["dev"])
    return {_name(r) for r in reqs}


def _conda() -> set[str]:
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    return {_name(r) for r in pip if not r.startswith("-e")}


def test_pip_and_conda_list_the_same_packages():
    assert _pyproject() == _conda()


def test_stack_packages_are_listed():
    stack = {"torch", "jupyterlab", "ipywidgets", "matplotlib", "seaborn", "numpy", "scikit-learn",
             "nbval", "papermill"}
    assert stack <= _pyproject()


def test_no_deps_fer_is_installed_the_same_way_by_both():
    makefile = (REPO / "Makefile").read_text()
    for text in (makefile, (REPO / "environment.yml").read_text()):
        assert "--no-deps fer==25.10.3 open_clip_torch==3.3.0" in text


def test_torch_is_pinned_first_by_the_makefile():
    makefile = (REPO / "Makefile").read_text()
    assert makefile.index("torch==2.13.0") < makefile.index('-e ".[dev]"')


def test_every_notebook_has_a_papermill_parameters_cell():
    notebooks = sorted((REPO / "notebooks").glob("*.ipynb"))
    assert notebooks, "no notebooks found"
    for nb in notebooks:
        cells = json.loads(nb.read_text())["cells"]
        tagged = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
        assert len(tagged) == 1, f"{nb.name} needs exactly one cell tagged 'parameters'"
        assert any(c.get("outputs") for c in cells if c["cell_type"] == "code"), f"{nb.name} has no outputs"


def test_ci_runs_the_readme_test_command():
    assert "make test" in (REPO / ".ci" / "run").read_text()
    assert "make test" in (REPO / "README.md").read_text()
    assert "make demo" in (REPO / "README.md").read_text()
