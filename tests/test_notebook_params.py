"""The notebooks survive papermill: the README's commands as printed, and a parameter matrix.

(a) Every ``papermill`` command in README.md (fenced ``bash`` blocks and inline code) is parsed
    from the README itself, so the test fails when the README drifts, and run from the
    repository root. Only what cannot run offline in a test's time is substituted, each
    substitution listed in :data:`OFFLINE_SUBSTITUTIONS` and printed: the CFEE path (not
    redistributable) is dropped, ``device cuda`` becomes ``cpu`` without a GPU, ``iterations
    200000`` becomes 2, and 05's ``targets all`` becomes two targets (its full run takes minutes;
    ``REGGAN_README_EXACT=1`` runs it as printed). The output notebook goes to a temporary folder.
(b) Every notebook 01-07 also runs with at least one cheap non-default parameter set
    (:data:`MATRIX`), including 02 with ``r=1`` and with ``r=5, lam=0.1``: check cells must
    assert identities, not properties of the default run.

Every run must leave the repository as it found it: no new or changed files outside the ignored
folders, no ``03_demo_*`` folders left in the system temp directory. The runs are marked
``slow`` (they still run in ``make test``).
"""
from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from conftest import EMBEDDED, REPO

README = REPO / "README.md"
NOTEBOOKS = REPO / "notebooks"
TIMEOUT_S = 900
EXACT = os.environ.get("REGGAN_README_EXACT") == "1"


def _cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:  # pragma: no cover - torch is a dependency
        return False


# (parameter, value as printed) -> replacement value, or None to drop the parameter; and why
OFFLINE_SUBSTITUTIONS: dict[tuple[str, str], tuple[str | None, str]] = {
    ("dataset_root", "/data/CFEE"): (None, "CFEE is licensed and not in the repository: the notebook's default "
                                       "dataset (v2) instead"),
    ("device", "cuda"): ("cuda" if _cuda() else "cpu", "no GPU on the test machine"),
    ("iterations", "200000"): ("2", "200000 steps take days on a CPU"),
}
if not EXACT:
    OFFLINE_SUBSTITUTIONS[("targets", "all")] = ("[happy, sad]", "all 21 targets take minutes; "
                                                 "REGGAN_README_EXACT=1 runs them")


def readme_papermill_commands(text: str) -> list[str]:
    """Every papermill command line in the README: in ```bash blocks (continuations joined) and inline."""
    commands = []
    for block in re.findall(r"```(?:bash|sh|console)?\n(.*?)```", text, flags=re.S):
        joined = re.sub(r"\\\n\s*", " ", block)
        commands += [line.strip() for line in joined.splitlines() if re.search(r"(^|\s|/)papermill\s", line)]
    outside = re.sub(r"```.*?```", "", text, flags=re.S)
    commands += [m.strip() for m in re.findall(r"`([^`\n]*papermill [^`\n]+)`", outside)]
    return commands


def substitute(argv: list[str], out: Path) -> tuple[list[str], list[str]]:
    """(argv with the offline substitutions and the output in ``out``, notes on what was changed)."""
    assert "papermill" in Path(argv[0]).name, argv
    exe = REPO / argv[0] if (REPO / argv[0]).exists() else None
    cmd = [str(exe)] if exe else [sys.executable, "-m", "papermill"]
    notes = []
    rest = argv[1:]
    positional = [a for a in rest[:2] if not a.startswith("-")]
    assert len(positional) == 2, f"expected 'papermill IN OUT ...', got {argv}"
    cmd += [positional[0], str(out / Path(positional[1]).name)]
    k = 2
    while k < len(rest):
        flag = rest[k]
        if flag in ("-p", "--parameters") and k + 2 < len(rest) + 1:
            name, value = rest[k + 1], rest[k + 2]
            new, why = OFFLINE_SUBSTITUTIONS.get((name, value), (value, ""))
            if why:
                notes.append(f"-p {name} {value} -> {'(dropped)' if new is None else new}: {why}")
            if new is not None:   # lists go through YAML (papermill -p would pass "[...]" as a string)
                cmd += ["-y", f"{name}: {new}"] if new.startswith("[") else ["-p", name, new]
            k += 3
        else:
            cmd.append(flag)
            k += 1
    return cmd + ["-k", "python3", "--no-progress-bar"], notes


def tracked_state() -> set[str]:
    """``git status --porcelain`` lines (modified tracked files and untracked, non-ignored files)."""
    if shutil.which("git") is None or not (REPO / ".git").exists():
        return set()
    res = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=REPO,
                         capture_output=True, text=True)
    return set(res.stdout.splitlines()) if res.returncode == 0 else set()


# where a notebook run could write by mistake; other paths are left out so that edits made by someone
# else in a shared working tree during a run do not fail it (a fresh clone in CI has none)
WATCHED = ("figures/", "checkpoints/", "configs/", "datasets/embedded/", "runs/")


def _watched(status_line: str) -> bool:
    """A ``git status --porcelain`` line under WATCHED, or a new file at the top level (e.g. out.ipynb)."""
    path = status_line[3:].strip().strip('"')
    new_file = status_line.startswith("??")
    return path.startswith(WATCHED) or (new_file and ("/" not in path.rstrip("/") or path.startswith("notebooks/")))


def run_checked(cmd: list[str], label: str) -> None:
    """Run ``cmd`` from the repository root; fail with its tail on error or when it dirtied the repo.

    The run gets a private, empty ``TMPDIR``: whatever it leaves there (e.g. notebook 03's
    ``03_demo_*`` training folder) is its own, even while other notebooks run in parallel
    (``make test`` uses two pytest-xdist workers).
    """
    before = tracked_state()
    private_tmp = Path(tempfile.mkdtemp(prefix="nbrun-"))
    env = dict(os.environ, MPLBACKEND="Agg", PYTHONHASHSEED="0", TMPDIR=str(private_tmp))
    env.pop("REGGAN_FIGURES", None)   # figures must default to the ignored outputs/figures
    try:
        res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=TIMEOUT_S, env=env)
        left = sorted(p.name for p in private_tmp.glob("03_demo_*"))
    finally:
        shutil.rmtree(private_tmp, ignore_errors=True)
    tail = (res.stdout + res.stderr)[-4000:]
    assert res.returncode == 0, f"{label} failed:\n{shlex.join(cmd)}\n{tail}"
    new = sorted(line for line in tracked_state() - before if _watched(line))
    assert not new, f"{label} changed the repository (must write only to ignored folders): {new}"
    assert not left, f"{label} left temporary folders behind: {left}"


# ------------------------------------------------------------------ (a) README commands


def test_readme_has_papermill_commands():
    cmds = readme_papermill_commands(README.read_text())
    assert cmds, "README.md shows no papermill command; the test would check nothing"
    for c in cmds:
        argv = shlex.split(c)
        assert argv[1].startswith("notebooks/") and (REPO / argv[1]).is_file(), \
            f"README command {c!r} must name a notebook path from the repository root"


@pytest.mark.slow
@pytest.mark.parametrize("command", readme_papermill_commands(README.read_text()),
                         ids=lambda c: "readme-" + Path(shlex.split(c)[1]).stem[:2])
def test_readme_command_runs_from_repo_root(command, tmp_path):
    cmd, notes = substitute(shlex.split(command), tmp_path)
    print("README:", command)
    print("ran:   ", shlex.join(cmd))
    for n in notes:
        print("  substituted", n)
    run_checked(cmd, f"README command {command!r}")
    assert (tmp_path / Path(shlex.split(command)[2]).name).is_file()


# ------------------------------------------------------------------ (b) parameter matrix


def _dataset_copy(tmp_path: Path) -> str:
    """A copy of the embedded dataset, so a new seed can rewrite its splits.csv."""
    dst = tmp_path / "embedded_copy"
    shutil.copytree(EMBEDDED, dst)
    return str(dst)


# notebook -> list of (id, parameters); "{dataset_copy}" becomes a temporary copy of the dataset
MATRIX: dict[str, list[tuple[str, dict]]] = {
    "01_data.ipynb": [("seed1-copy", {"seed": 1, "dataset_root": "{dataset_copy}", "n_subjects_shown": 2})],
    "02_local_ridge_regression.ipynb": [   # the sweeps are shortened to keep the runs cheap
        ("r1-surprised", {"r": 1, "target": "surprised", "seed": 3, "pixel": [60, 40], "n_show": 2,
                          "r_values": [1, 3], "lam_values": [0.1, 1.0, 10.0]}),
        ("r5-lam0.1", {"r": 5, "lam": 0.1, "r_values": [3, 5], "lam_values": [0.01, 0.1, 1.0]}),
    ],
    "03_adversarial_refinement.ipynb": [("short-demo", {"demo_iterations": 2, "seed": 1,
                                                         "show_targets": ["sad", "angry"]})],
    "04_train_on_cfee_gpu.ipynb": [("per-pair", {"conditional": False, "pairs": "neutral:happy,neutral:sad",
                                                  "iterations": 2, "n_show": 1})],
    "05_evaluation.ipynb": [("two-targets", {"targets": ["happy", "sad"], "n_boot": 50, "kid_subsets": 5,
                                             "gallery_target": "happy"})],
    "06_human_study.ipynb": [("small-sims", {"n_raters": 6, "n_boot": 100, "power_sims": 20})],
    "07_explorer.ipynb": [("sad", {"target": "sad", "live_metrics": False})],
}


def matrix_cases():
    for nb, sets in MATRIX.items():
        for case_id, params in sets:
            yield pytest.param(nb, params, id=f"{nb[:2]}-{case_id}")


def test_matrix_covers_every_notebook():
    names = {p.name for p in NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")}
    assert names == set(MATRIX), f"notebooks without a parameter set: {sorted(names - set(MATRIX))}"
    r_sets = [p for _, p in MATRIX["02_local_ridge_regression.ipynb"]]
    assert any(p.get("r") == 1 for p in r_sets), "02 must run with r = 1 (the Gram diagonal holds +lambda)"
    assert any(p.get("r") == 5 and p.get("lam") == 0.1 for p in r_sets), "02 must run with r = 5, lam = 0.1"


def test_matrix_parameters_exist(tmp_path):
    """Every matrix parameter is a parameter of its notebook (papermill would inject unknown ones silently)."""
    import nbformat

    for nb, sets in MATRIX.items():
        cells = nbformat.read(NOTEBOOKS / nb, as_version=4).cells
        source = "\n".join(c.source for c in cells if "parameters" in c.get("metadata", {}).get("tags", []))
        declared = set(re.findall(r"^(\w+)\s*=", source, flags=re.M))
        for _, params in sets:
            unknown = set(params) - declared
            assert not unknown, f"{nb}: {sorted(unknown)} are not in its parameters cell"


# The matrix runs themselves are in tests/test_notebook_matrix.py, so that pytest-xdist's
# --dist loadfile gives them a worker of their own beside the README commands.
