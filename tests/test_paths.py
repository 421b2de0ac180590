"""reggan_core.paths: repository-relative paths, whatever the working directory."""
from __future__ import annotations

from pathlib import Path

from reggan_core.paths import repo_path, repo_root, shown


def test_shown_is_repository_relative_inside_and_unchanged_outside(tmp_path, monkeypatch):
    inside = repo_root() / "checkpoints" / "reggan_v2.pt"
    monkeypatch.chdir(tmp_path)                       # not the repository: the answer must not depend on it
    assert shown(inside) == str(Path("checkpoints") / "reggan_v2.pt")
    outside = tmp_path / "model.pt"
    assert shown(outside) == str(outside)
    assert repo_path("checkpoints/reggan_v2.pt") == inside.resolve()
