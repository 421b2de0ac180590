"""Notebook 07's explorer in a real browser: JupyterLab + Debian Chromium driven by Playwright.

The test copies the notebook to a temporary folder (parameters made absolute, outputs and
saved widget state dropped, so the committed notebook is never touched;
``$REGGAN_EXPLORER_CHECKPOINT`` replaces the checkpoint), starts JupyterLab on 127.0.0.1 with
a free port, a random token and throw-away config/data/runtime/settings folders, opens the
notebook in headless Chromium, runs all cells from the *Run* menu, picks another target
expression in the widget's menu and checks, on the pixels the browser rendered, that the
output image changed; then uploads a bad file (one-line message) and a face photo (aligned
and shown) through the browser's file chooser. A screenshot of the explorer goes to
``outputs/figures/07_explorer_browser.png`` (git-ignored; ``reggan_core.paths.figures_dir``), so
running the test leaves the working tree clean.

Chromium is Debian's (``make browser-deps`` = ``apt-get install chromium``): Playwright's own
browser download is not used. No Chromium means a failure with the fix, not a skip. Every wait
is bounded; the server (and its kernel) is always stopped.
"""
from __future__ import annotations

import ast
import io
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import nbformat
import numpy as np
import pytest
from PIL import Image

from conftest import REPO
from reggan_core.paths import figures_dir, repo_path

CHROMIUM = Path(os.environ.get("REGGAN_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
NOTEBOOK = REPO / "notebooks" / "07_explorer.ipynb"
SCREENSHOT_NAME = "07_explorer_browser.png"   # written to figures_dir(): outputs/figures unless REGGAN_FIGURES
SERVER_START_S = 120     # JupyterLab up and answering
PAGE_S = 120             # notebook open, kernel idle
RUN_ALL_S = 300          # every cell executed (model load, first fits, metrics)
UPDATE_S = 60            # one widget update after a menu change
SETTINGS = {  # JupyterLab user settings: no news pop-up, every cell attached to the page
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings":
        '{"fetchNews": "false", "checkForUpdates": false}',
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": '{"windowingMode": "none"}',
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prepare_notebook(folder: Path) -> Path:
    """Copy notebook 07 into ``folder`` with absolute paths, no outputs and no widget state."""
    nb = nbformat.read(NOTEBOOK, as_version=4)
    (folder / "figures").mkdir()
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            lines = []
            for line in cell.source.splitlines():
                m = re.match(r"^(checkpoint|dataset_root|figures_dir)\s*=\s*(.+?)(\s*#.*)?$", line)
                if m:
                    value = ast.literal_eval(m.group(2))
                    if m.group(1) == "checkpoint" and os.environ.get("REGGAN_EXPLORER_CHECKPOINT"):
                        value = os.environ["REGGAN_EXPLORER_CHECKPOINT"]  # try another model
                    if m.group(1) == "figures_dir":
                        value = folder / "figures"
                    elif value is not None:
                        value = repo_path(value)   # the notebook's defaults are repository-relative
                    line = f"{m.group(1)} = {str(value) if value is not None else None!r}"
                lines.append(line)
            cell.source = "\n".join(lines)
    nb.metadata.pop("widgets", None)
    out = folder / NOTEBOOK.name
    nbformat.write(nb, out)
    return out


@contextmanager
def jupyterlab(root: Path, home: Path) -> Iterator[tuple[str, str, Path]]:
    """A JupyterLab server for ``root`` with private config folders; yields (base URL, token, log path)."""
    port, token = free_port(), secrets.token_hex(16)
    settings = home / "settings"
    for name, text in SETTINGS.items():
        (settings / name).parent.mkdir(parents=True, exist_ok=True)
        (settings / name).write_text(text)
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(home / "config"), JUPYTER_DATA_DIR=str(home / "data"),
               JUPYTER_RUNTIME_DIR=str(home / "runtime"), IPYTHONDIR=str(home / "ipython"),
               JUPYTER_PLATFORM_DIRS="1", OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root",
           "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
           f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
           "--ServerApp.terminals_enabled=False", f"--LabApp.user_settings_dir={settings}",
           f"--LabApp.workspaces_dir={home / 'workspaces'}"]
    log_path = home / "server.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=root,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + SERVER_START_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"JupyterLab exited with code {proc.returncode}; its log:\n{tail(log_path)}")
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status?token={token}", timeout=2)
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"JupyterLab did not answer within {SERVER_START_S} s; its log:\n{tail(log_path)}")
                time.sleep(0.5)
        yield f"http://127.0.0.1:{port}", token, log_path
    finally:
        stop(proc)


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM the server (it shuts its kernels down), then SIGKILL whatever of its group is left."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait(timeout=10)


def tail(path: Path, n: int = 3000) -> str:
    return path.read_text(errors="replace")[-n:] if path.exists() else "(no log)"


def rendered(locator) -> np.ndarray:
    """The pixels the browser shows for an element, as RGB."""
    with Image.open(io.BytesIO(locator.screenshot(timeout=UPDATE_S * 1000))) as im:
        return np.asarray(im.convert("RGB")).astype(np.int16)


def wait_image_loaded(page, selector: str, old_src: str | None = None) -> str:
    """Wait until the <img> under ``selector`` shows a (new) fully loaded image; return its src."""
    page.wait_for_function(
        """([sel, old]) => { const im = document.querySelector(sel + ' img') || document.querySelector(sel);
             return im && im.complete && im.naturalWidth > 0 && im.src !== old; }""",
        arg=[selector, old_src or ""], timeout=UPDATE_S * 1000)
    return page.eval_on_selector(selector, "e => (e.querySelector('img') || e).src")


def choose_file(page, path: Path) -> None:
    """Click the explorer's upload button and pick ``path`` in the file chooser it opens."""
    with page.expect_file_chooser(timeout=UPDATE_S * 1000) as chooser:
        page.locator(".reggan-upload").click(timeout=UPDATE_S * 1000)
    chooser.value.set_files(str(path), timeout=UPDATE_S * 1000)


def save_screenshot(png: bytes, path: Path, width: int = 1000) -> None:
    """Downscale to ``width`` px and write atomically (a figure of modest size, ~350 kB)."""
    from reggan_core.imageio import atomic_path

    with Image.open(io.BytesIO(png)) as im:
        im = im.convert("RGB")
        if im.width > width:
            im = im.resize((width, round(im.height * width / im.width)), Image.LANCZOS)
        with atomic_path(path) as tmp:
            im.save(tmp, format="PNG", optimize=True)


def test_explorer_runs_and_reacts_in_chromium(tmp_path, astronaut):
    if not CHROMIUM.is_file() or not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"Chromium not found at {CHROMIUM}: install it with `make browser-deps` "
                    "(apt-get install chromium), or set REGGAN_CHROMIUM to the browser binary")
    try:
        from playwright.sync_api import Error as PlaywrightError
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the Python package playwright is missing: run `make env` (pip install -e '.[dev]')")

    work = tmp_path / "lab"
    work.mkdir()
    notebook = prepare_notebook(work)
    with jupyterlab(work, tmp_path) as (base, token, log_path), sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True,
                                     timeout=60_000)
        page = browser.new_page(viewport={"width": 1400, "height": 1700})
        page.set_default_timeout(PAGE_S * 1000)
        step = "start"
        try:
            step = "open the notebook"
            page.goto(f"{base}/lab/tree/{notebook.name}?token={token}", timeout=PAGE_S * 1000)
            page.wait_for_selector(".jp-Notebook .jp-Cell")
            page.get_by_text("| Idle").first.wait_for()           # kernel started

            step = "Run > Run All Cells"
            page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
            page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()
            page.wait_for_function(
                """() => { const p = [...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')]
                                    .map(e => e.textContent.trim());
                           const failed = [...document.querySelectorAll('.jp-OutputArea-output')]
                                    .some(e => e.textContent.includes('Traceback'));
                           return failed || (p.length > 0 && p.every(t => /^\\[\\d+\\]:$/.test(t))); }""",
                timeout=RUN_ALL_S * 1000, polling=500)
            outputs = page.locator(".jp-OutputArea-output").all_text_contents()
            errors = [t for t in outputs if "Traceback" in t or "Error displaying widget" in t]
            assert not errors, f"notebook 07 failed in the browser:\n{errors[0][-2000:]}"

            step = "the explorer's first view"
            status = page.locator(".reggan-status")
            status.wait_for(state="visible")
            assert "updated:" in status.inner_text(), f"explorer status: {status.inner_text()!r}"
            columns = [c for c in ("regression", "refined") if page.locator(f".reggan-{c}").count()]
            srcs = {c: wait_image_loaded(page, f".reggan-{c}") for c in columns}
            before = {c: rendered(page.locator(f".reggan-{c}")) for c in columns}
            current = page.locator(".reggan-target select").input_value()
            new = "surprised" if current != "surprised" else "happy"

            step = f"pick target {new!r} in the widget's menu"
            page.locator(".reggan-target select").select_option(value=new)
            page.wait_for_function(
                """(label) => { const s = document.querySelector('.reggan-status');
                                return s && s.textContent.includes('-> ' + label + ' at strength'); }""",
                arg=new, timeout=UPDATE_S * 1000)
            wait_image_loaded(page, ".reggan-regression", srcs["regression"])
            after = rendered(page.locator(".reggan-regression"))
            diff = float(np.abs(after - before["regression"]).mean())
            assert after.shape == before["regression"].shape
            assert diff > 2.0, f"the regression image did not change after picking {new!r} (mean diff {diff:.2f})"
            step = "refined image after the target change"
            if "unavailable" not in page.locator(".reggan-metrics-refined").inner_text():  # a checkpoint is present
                wait_image_loaded(page, ".reggan-refined", srcs["refined"])
                diff_ref = float(np.abs(rendered(page.locator(".reggan-refined")) - before["refined"]).mean())
                assert diff_ref > 2.0, f"the refined image did not change (mean diff {diff_ref:.2f})"

            step = "screenshot"
            explorer = page.locator(".reggan-explorer")
            explorer.scroll_into_view_if_needed()
            screenshot = figures_dir() / SCREENSHOT_NAME
            save_screenshot(explorer.screenshot(timeout=UPDATE_S * 1000), screenshot)
            assert screenshot.is_file()

            # uploads through the browser's file input: a bad file gets one line, a photo is aligned
            step = "upload a non-image"
            (tmp_path / "notes.png").write_bytes(b"not an image at all")
            choose_file(page, tmp_path / "notes.png")
            page.wait_for_function("() => document.querySelector('.reggan-status').textContent.includes('notes.png')",
                                   timeout=UPDATE_S * 1000)
            message = status.inner_text()
            assert "corrupt" in message and "\n" not in message.strip() and "Traceback" not in page.content()
            input_src = wait_image_loaded(page, ".reggan-input")
            step = "upload a face photo"
            Image.fromarray(astronaut).save(tmp_path / "astronaut.png")
            choose_file(page, tmp_path / "astronaut.png")
            page.wait_for_function(
                "() => document.querySelector('.reggan-status').textContent.includes('uploaded face astronaut.png')",
                timeout=UPDATE_S * 1000)
            wait_image_loaded(page, ".reggan-input", input_src)
            assert page.locator(".reggan-subject select").input_value() == "(uploaded face)"
        except (PlaywrightError, AssertionError) as exc:
            try:
                page.screenshot(path=str(tmp_path / "failure.png"), full_page=True, timeout=30_000)
            except PlaywrightError:
                pass
            raise AssertionError(f"step '{step}': {exc}\n(screenshot: {tmp_path / 'failure.png'}; server log tail:\n"
                                 f"{tail(log_path, 1500)})") from None
        finally:
            browser.close()
