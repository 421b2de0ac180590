"""Course mode: student copies without solutions (`make student`) and the static site (`make site`).

Convention (docs/teaching.md): an exercise is a markdown cell tagged ``exercise``; its worked
solution follows in one or more cells tagged ``solution``.

* Student copies of a synthetic notebook and of the real ones keep every exercise prompt and lose
  every solution cell, checked by tag and by a fingerprint of the solution's text; a synthetic copy
  executes end to end and a real one (notebook 01, the cheapest: 11 s here) up to its first exercise.
* Every exercise of the real notebooks is followed by a solution (fails, naming the notebook and
  exercise, while solutions are missing).
* The site is built into a temporary folder, served on 127.0.0.1 and every page is opened in
  Debian's headless Chromium through Playwright (as tests/test_browser.py does): HTTP 200, every
  <img> decoded, every local link and #fragment resolving, no console error, no request to another
  host. A screenshot of the front page goes to ``outputs/site_screenshot.png``. Without Chromium
  the browser test is skipped (``make browser-deps`` installs it); the static checks still run.
"""
from __future__ import annotations

import functools
import html
import importlib.util
import io
import os
import re
import shutil
import sys
import threading
import urllib.request
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from conftest import REPO

CHROMIUM = Path(os.environ.get("REGGAN_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
CHEAP_NOTEBOOK = REPO / "notebooks" / "01_data.ipynb"   # 11 s end to end on the 2-core VM
SCREENSHOT = REPO / "outputs" / "site_screenshot.png"
EXEC_TIMEOUT_S = 600
PAGE_S = 60
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
WRITE_PARAMETERS = {"figures_dir", "study_dir", "out_dir"}  # folders a notebook writes into


def load_script(name: str):
    """Import ``scripts/<name>.py`` as a module (the scripts are not a package)."""
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


student = load_script("make_student")
site_builder = load_script("build_site")


def tags(cell) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


def norm(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def fingerprints(nb, min_len: int = 40) -> list[str]:
    """Whitespace-normalised source of every solution cell long enough to be unmistakable."""
    return [norm(c.source) for c in nb.cells if "solution" in tags(c) and len(norm(c.source)) >= min_len]


def output_text(cell) -> str:
    parts = []
    for out in cell.get("outputs", []):
        parts.append(out.get("text", ""))
        parts.extend(str(v) for v in out.get("data", {}).values())
    return "".join(parts)


def widget_output(model_id: str):
    return new_output("display_data", data={WIDGET_VIEW: {"model_id": model_id, "version_major": 2,
                                                          "version_minor": 0}, "text/plain": "VBox()"})


@pytest.fixture()
def synthetic() -> nbformat.NotebookNode:
    """A small course notebook: two exercises, one with two solution cells, widgets in both parts."""
    secret = "the_secret_answer_is_6_times_7 = 6 * 7  # worked solution"
    cells = [
        new_markdown_cell("# A small lecture\nSome text."),
        new_code_cell("x = 41\nprint('x is', x)", outputs=[new_output("stream", name="stdout", text="x is 41\n")]),
        new_code_cell("shown = 'kept widget'", outputs=[widget_output("aaaa1111")]),
        new_markdown_cell("## Exercise 1\nCompute 6 times 7.", metadata={"tags": ["exercise"]}),
        new_code_cell(f"{secret}\nprint(the_secret_answer_is_6_times_7)", metadata={"tags": ["solution"]},
                      outputs=[new_output("stream", name="stdout", text="SOLUTION-OUTPUT 42\n"),
                               widget_output("bbbb2222")]),
        new_markdown_cell("Why 42: multiplication distributes over the answer to everything, obviously.",
                          metadata={"tags": ["solution"]}),
        new_code_cell("y = x + 1\nassert y == 42"),
        new_markdown_cell("## Exercise 2\nPrint y.", metadata={"tags": ["exercise"]}),
        new_code_cell("print('second solution, printing y =', y)", metadata={"tags": ["solution"]}),
    ]
    nb = new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                            "language": "python"}})
    state = {"aaaa1111": {"model_name": "VBoxModel", "state": {"children": ["IPY_MODEL_cccc3333"]}},
             "cccc3333": {"model_name": "HTMLModel", "state": {"value": "kept child"}},
             "bbbb2222": {"model_name": "HTMLModel", "state": {"value": "SOLUTION-WIDGET"}}}
    nb.metadata["widgets"] = {WIDGET_STATE: {"state": state, "version_major": 2, "version_minor": 0}}
    nbformat.validate(nb)
    return nb


def test_student_copy_of_a_synthetic_notebook(synthetic, tmp_path):
    copy = student.student_copy(synthetic)
    nbformat.validate(copy)
    assert not [c for c in copy.cells if "solution" in tags(c)], "a solution cell survived"
    everything = "\n".join(c.source + output_text(c) for c in copy.cells) + str(copy.metadata)
    for fp in fingerprints(synthetic, min_len=20):
        assert fp not in norm(everything), f"solution text survived: {fp[:60]!r}"
    assert "SOLUTION-OUTPUT" not in everything and "SOLUTION-WIDGET" not in everything
    assert [c.source for c in copy.cells if "exercise" in tags(c)] == \
        [c.source for c in synthetic.cells if "exercise" in tags(c)], "exercise prompts must be kept, in order"
    kept = [c for c in synthetic.cells if "solution" not in tags(c)]
    assert [c.source for c in copy.cells if "answer" not in tags(c)] == [c.source for c in kept]
    assert copy.cells[1].outputs == synthetic.cells[1].outputs, "outputs of lecture cells are kept"
    answers = [i for i, c in enumerate(copy.cells) if "answer" in tags(c)]
    assert len(answers) == 2 and all("exercise" in tags(copy.cells[i - 1]) for i in answers)
    assert set(copy.metadata["widgets"][WIDGET_STATE]["state"]) == {"aaaa1111", "cccc3333"}
    assert len({c.id for c in copy.cells}) == len(copy.cells), "cell ids must stay unique"
    assert student.exercise_problems(synthetic, "synthetic") == []
    # the copy written by the CLI runs end to end
    src = tmp_path / "lecture.ipynb"
    nbformat.write(synthetic, src)
    assert student.main([str(src), "--out", str(tmp_path / "student")]) == 0
    written = nbformat.read(tmp_path / "student" / "lecture.ipynb", as_version=4)
    assert [c.source for c in written.cells] == [c.source for c in copy.cells]
    execute(written, tmp_path)


def test_exercise_problems_are_named(synthetic):
    synthetic.cells.pop(8)          # exercise 2 loses its solution
    synthetic.cells[0].metadata["tags"] = ["exercise", "solution"]
    problems = student.exercise_problems(synthetic, "lecture.ipynb")
    assert len(problems) == 2
    assert "lecture.ipynb" in problems[1] and "Exercise 2" in problems[1] and "no 'solution' cell" in problems[1]
    assert "tagged both" in problems[0]


def test_student_cli_refuses_to_overwrite_the_sources(tmp_path, synthetic, capsys):
    src = tmp_path / "lecture.ipynb"
    nbformat.write(synthetic, src)
    assert student.main([str(src), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "delete its solutions" in err
    assert nbformat.read(src, as_version=4).cells[4].source == synthetic.cells[4].source
    assert student.main([str(tmp_path / "missing.ipynb"), "--out", str(tmp_path / "o")]) == 2


def test_student_copies_of_the_real_notebooks(tmp_path):
    out, snapshot = tmp_path / "student", tmp_path / "snapshot"   # a snapshot: notebooks may be re-saved meanwhile
    snapshot.mkdir()
    for nb in NOTEBOOKS:
        shutil.copyfile(nb, snapshot / nb.name)
    assert student.main([*(str(snapshot / nb.name) for nb in NOTEBOOKS), "--out", str(out)]) == 0
    assert sorted(p.name for p in out.glob("*.ipynb")) == [p.name for p in NOTEBOOKS]
    for nb_path in NOTEBOOKS:
        original = nbformat.read(snapshot / nb_path.name, as_version=4)
        copy = nbformat.read(out / nb_path.name, as_version=4)
        nbformat.validate(copy)
        assert not [c for c in copy.cells if "solution" in tags(c)], f"{nb_path.name}: a solution cell survived"
        text = norm("\n".join(c.source for c in copy.cells))
        for fp in fingerprints(original):
            assert fp not in text, f"{nb_path.name}: solution text survived in the student copy: {fp[:80]!r}"
        assert [c.source for c in copy.cells if "exercise" in tags(c)] == \
            [c.source for c in original.cells if "exercise" in tags(c)], f"{nb_path.name}: exercise prompts lost"
        n_solutions = sum("solution" in tags(c) for c in original.cells)
        n_answers = sum("answer" in tags(c) for c in copy.cells)
        assert len(copy.cells) == len(original.cells) - n_solutions + n_answers


def execute(nb: nbformat.NotebookNode, work: Path, until_exercise: bool = False) -> nbformat.NotebookNode:
    """Run ``nb`` (optionally only the cells before its first exercise) in a kernel started in notebooks/.

    Path parameters that write (``WRITE_PARAMETERS``, or a string under ../outputs) are redirected to
    ``work`` by a cell inserted after the parameters cell, as papermill would.
    """
    from nbclient import NotebookClient

    nb = nbformat.from_dict(nb)
    if until_exercise:
        first = next((i for i, c in enumerate(nb.cells) if "exercise" in tags(c)), len(nb.cells))
        nb.cells = nb.cells[:first]
    for i, cell in enumerate(nb.cells):
        if "parameters" in tags(cell):
            overrides = []
            for m in re.finditer(r"^(\w+)\s*=\s*(.*)$", cell.source, re.M):
                if m.group(1) in WRITE_PARAMETERS or re.match(r"[\"']\.\./outputs", m.group(2)):
                    overrides.append(f"{m.group(1)} = {str(work / m.group(1))!r}")
            nb.cells.insert(i + 1, new_code_cell("\n".join(overrides), metadata={"tags": ["injected-parameters"]}))
            break
    client = NotebookClient(nb, timeout=EXEC_TIMEOUT_S, kernel_name="python3",
                            resources={"metadata": {"path": str(REPO / "notebooks")}})
    client.execute()
    return nb


def test_real_student_copy_runs_up_to_the_first_exercise(tmp_path):
    out = tmp_path / "student"
    assert student.main([str(CHEAP_NOTEBOOK), "--out", str(out)]) == 0
    ran = execute(nbformat.read(out / CHEAP_NOTEBOOK.name, as_version=4), tmp_path, until_exercise=True)
    errors = [o for c in ran.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
    assert sum(c.cell_type == "code" for c in ran.cells) >= 3, "the copy should run real lecture cells"


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_every_exercise_has_a_worked_solution(nb_path):
    nb = nbformat.read(nb_path, as_version=4)
    problems = student.exercise_problems(nb, nb_path.name)
    if not any("exercise" in tags(c) for c in nb.cells):
        problems.insert(0, f"{nb_path.name}: no cell is tagged 'exercise' (each exercise is a markdown cell "
                           "tagged 'exercise', followed by its worked solution in cells tagged 'solution')")
    assert not problems, "\n".join(problems)


# ---------------------------------------------------------------- the course site

@pytest.fixture(scope="module")
def built_site(tmp_path_factory) -> Path:
    """The site built from a snapshot of the notebooks (``<site>/../snapshot``), compared with that."""
    work = tmp_path_factory.mktemp("site")
    (work / "snapshot").mkdir()
    for nb in NOTEBOOKS:
        shutil.copyfile(nb, work / "snapshot" / nb.name)
    assert site_builder.main(["--out", str(work / "site"), "--notebooks", str(work / "snapshot")]) == 0
    return work / "site"


def local_refs(page: Path) -> list[str]:
    return re.findall(r'\b(?:href|src)="([^"]*)"', page.read_text(encoding="utf-8"))


def test_site_is_complete_and_offline(built_site):
    pages = sorted(built_site.rglob("*.html"))
    names = {p.relative_to(built_site).as_posix() for p in pages}
    assert {"index.html", *(f"notebooks/{p.stem}.html" for p in NOTEBOOKS)} <= names
    for page in pages:
        text = page.read_text(encoding="utf-8")
        assert not re.search(r"<script[^>]*\bsrc=", text), f"{page.name}: loads a script"
        assert not re.search(r'<(link|img|iframe)[^>]*\b(href|src)="(https?:)?//', text), f"{page.name}: loads a URL"
        assert WIDGET_VIEW not in text and WIDGET_STATE not in text, f"{page.name}: widget JSON left in"
        assert 'class="site-nav"' in text, f"{page.name}: no navigation bar"
        for ref in local_refs(page):
            parts = urlsplit(html.unescape(ref))
            if parts.scheme or parts.netloc or not parts.path:
                continue
            assert (page.parent / unquote(parts.path)).resolve().is_file(), f"{page.name}: broken link {ref!r}"
    for nb_path in NOTEBOOKS:  # every figure a notebook saved is on its page, embedded
        nb = nbformat.read(built_site.parent / "snapshot" / nb_path.name, as_version=4)
        n_figures = sum(any(k.startswith("image/") for k in o.get("data", {})) and WIDGET_VIEW not in o.get("data", {})
                        for c in nb.cells if c.cell_type == "code" for o in c.outputs)
        page = (built_site / "notebooks" / f"{nb_path.stem}.html").read_text(encoding="utf-8")
        assert len(re.findall(r'<img[^>]*src="data:image/', page)) >= n_figures, f"{nb_path.name}: figures lost"
    front = (built_site / "index.html").read_text(encoding="utf-8")
    for nb in NOTEBOOKS:  # the README's notebook table, linked to the pages
        assert f'href="notebooks/{nb.stem}.html"' in front
    explorer = (built_site / "notebooks" / "07_explorer.html").read_text(encoding="utf-8")
    assert "jupyter lab notebooks/07_explorer.ipynb" in explorer and "make demo" in explorer
    first_cell = re.search(r'class="jp-Cell\b', explorer).start()
    assert explorer.index('<div class="site-note">') < first_cell, "the live note comes before the first cell"


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep pytest's output clean
        pass


def test_site_in_chromium(built_site):
    if not CHROMIUM.is_file() or not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"Chromium not found at {CHROMIUM}: `make browser-deps` installs it")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("the Python package playwright is missing: run `make env`")
    from PIL import Image

    from reggan_core.imageio import atomic_path

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(built_site)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}/"
    pages = sorted(p.relative_to(built_site).as_posix() for p in built_site.rglob("*.html"))
    problems: list[str] = []
    fetched: dict[str, str] = {}
    ids: dict[str, set[str]] = {}                  # page URL -> element ids, as the browser parsed them
    anchors: list[tuple[str, str, str]] = []       # (page, target URL, fragment) of every local #link

    def fetch(url: str) -> str:
        if url not in fetched:
            with urllib.request.urlopen(url, timeout=30) as resp:
                assert resp.status == 200
                fetched[url] = resp.read().decode("utf-8", "replace")
        return fetched[url]

    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True,
                                         timeout=60_000)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(PAGE_S * 1000)
            current = {"page": ""}

            def note(kind: str, text: str) -> None:
                problems.append(f"{current['page']}: {kind}: {text}")

            page.on("console", lambda m: m.type == "error" and note("console error", m.text))
            page.on("pageerror", lambda e: note("page error", str(e)))
            page.on("request", lambda r: urlsplit(r.url).scheme not in ("data", "about")
                    and urlsplit(r.url).hostname != "127.0.0.1" and note("external request", r.url))
            page.on("requestfailed", lambda r: note("failed request", f"{r.url} ({r.failure})"))
            page.on("response", lambda r: r.status >= 400 and note("HTTP error", f"{r.status} {r.url}"))
            try:
                for name in pages:
                    current["page"] = name
                    resp = page.goto(base + name, wait_until="load", timeout=PAGE_S * 1000)
                    if resp is None or resp.status != 200:
                        note("page status", str(resp and resp.status))
                    for src, complete, width in page.eval_on_selector_all(
                            "img", "els => els.map(e => [e.currentSrc || e.src, e.complete, e.naturalWidth])"):
                        if not complete or width == 0:
                            note("broken image", src[:120])
                    for href in page.eval_on_selector_all("a[href]", "els => els.map(a => a.href)"):
                        parts = urlsplit(href)
                        if parts.hostname != "127.0.0.1":
                            continue
                        target = href.split("#", 1)[0]
                        try:
                            body = fetch(target)
                        except OSError as exc:
                            note("broken link", f"{href} ({exc})")
                            continue
                        if parts.fragment:
                            anchors.append((name, target, parts.fragment))
                    ids[base + name] = set(page.eval_on_selector_all("[id]", "els => els.map(e => e.id)"))
                    if name == "index.html":
                        assert page.locator("table a[href$='07_explorer.html']").count() == 1
                        png = page.screenshot(full_page=False)
                        with Image.open(io.BytesIO(png)) as im, atomic_path(SCREENSHOT) as tmp:
                            im.convert("RGB").save(tmp, format="PNG", optimize=True)
                page.goto(base + "notebooks/07_explorer.html", wait_until="load")
                assert "make demo" in page.locator(".site-note").first.inner_text()
                # the navigation bar is there and leads somewhere on every page (checked above)
                assert page.locator("nav.site-nav a").count() >= 1 + len(NOTEBOOKS)
            finally:
                browser.close()
    finally:
        server.shutdown()
        server.server_close()
    for name, target, fragment in anchors:
        # the HTML rule: the raw fragment names an element, or else its percent-decoded form does
        if target in ids and not {fragment, unquote(fragment)} & ids[target]:
            problems.append(f"{name}: link to a missing anchor: {target}#{fragment}")
    assert len(pages) >= 1 + len(NOTEBOOKS)
    assert not problems, "\n".join(problems[:40])
    assert SCREENSHOT.is_file()
