#!/usr/bin/env python
"""Build the static course site from the executed notebooks (the `make site` job).

Plain nbconvert (it ships with JupyterLab; Jupyter Book and nbsphinx need Sphinx, nbsphinx also
pandoc; see docs/teaching.md for the choice). The site mirrors the repository's layout, so relative
links keep working with only their extension changed:

* ``index.html`` is README.md rendered with nbconvert's markdown renderer (mistune), with its
  notebook table; every ``.md`` page reachable by links from it (docs/, datasets/README.md, ...)
  is rendered too, and ``.ipynb`` links point at the notebook pages;
* ``notebooks/NN_name.html`` is each notebook with its saved outputs (figures are embedded in
  the notebook); files that markdown links or images refer to (``../figures/x.png``) are copied
  to the same relative place;
* every page has a navigation bar, works offline and loads nothing from another host: nbconvert's
  require.js, MathJax, mermaid and ipywidgets scripts (all from CDNs) are left out. Widget outputs
  become a static fallback (a screenshot where one is listed in ``WIDGET_STILLS``, else a note),
  and a page whose notebook has widgets (or is listed there) starts with how to run it live. LaTeX stays as typed.

The site is built in a temporary folder next to ``--out`` and swapped in when complete.

    python scripts/build_site.py [--out outputs/site] [--notebooks notebooks]
"""
from __future__ import annotations

import argparse
import copy
import html
import os
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

import nbformat

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from reggan_core.errors import RegGANError  # noqa: E402

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
# Interactive notebooks: their page starts with how to run them live, and their widget outputs show
# this repository image of the widget in a real browser (written by tests/test_browser.py).
WIDGET_STILLS = {"07_explorer.ipynb": "figures/07_explorer_browser.png"}
LIVE_NOTE = (
    '<div class="site-note"><strong>This page is a static copy.</strong> The interactive {what} below '
    "needs a running Python kernel. To use it live: run <code>make demo</code> once (it creates "
    "<code>.venv</code> and runs the notebooks), then <code>.venv/bin/jupyter lab {path}</code> and "
    "<em>Run &gt; Run All Cells</em>.</div>")

CSS = """
:root { --site-accent: #1a5fb4; }
body { margin: 0; }
nav.site-nav { position: sticky; top: 0; z-index: 10; background: #f6f8fa; border-bottom: 1px solid #d0d7de;
  padding: 6px 16px; font: 14px/1.6 system-ui, sans-serif; display: flex; flex-wrap: wrap; gap: 4px 14px; }
nav.site-nav a { color: var(--site-accent); text-decoration: none; white-space: nowrap; }
nav.site-nav a.current { font-weight: 700; color: #000; }
.site-pager { display: flex; justify-content: space-between; padding: 16px; font: 14px system-ui, sans-serif; }
.site-note { margin: 12px 16px; padding: 10px 14px; border-left: 4px solid var(--site-accent);
  background: #eef4fc; font: 14px/1.5 system-ui, sans-serif; }
.site-widget { padding: 6px 0; }
.site-widget img { max-width: 100%; border: 1px solid #d0d7de; }
main.site-md { max-width: 980px; margin: 0 auto; padding: 8px 24px 40px; font: 15px/1.55 system-ui, sans-serif; }
main.site-md table { border-collapse: collapse; margin: 12px 0; }
main.site-md th, main.site-md td { border: 1px solid #d0d7de; padding: 4px 8px; vertical-align: top; }
main.site-md pre { background: #f6f8fa; padding: 8px 12px; overflow-x: auto; }
main.site-md code { font-size: 90%; }
main.site-md img { max-width: 100%; }
a.anchor-link { display: none; }
.celltag_exercise { border-left: 4px solid #c061cb; padding-left: 8px; }
.celltag_solution { border-left: 4px solid #2ec27e; }
.celltag_solution::before { content: "Solution"; display: block; font: 600 12px system-ui, sans-serif;
  color: #26a269; padding: 2px 8px; }
"""

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1.0">
<title>{title}</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="{css}">
<style>{pygments}</style>
</head>
<body>
{nav}
<main class="site-md">
{body}
</main>
</body>
</html>
"""

NOTEBOOK_TEMPLATE = """{%- extends 'lab/index.html.j2' -%}
{%- block html_head_js -%}<link rel="icon" href="data:,">{%- endblock html_head_js -%}
{%- block jupyter_widgets -%}{%- endblock jupyter_widgets -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{%- block html_head_css -%}<!--site:head-->{%- endblock html_head_css -%}
{%- block body_header -%}
{{ super() }}
<!--site:nav-->
{%- endblock body_header -%}
{% block body_footer %}
<!--site:pager-->
{{ super() }}
{% endblock body_footer %}
"""


@dataclass
class Site:
    """What is being built: pages (site path -> source), files to copy, and the output folder."""

    out: Path
    notebooks: dict[str, Path]                      # site path -> notebook file
    markdown: dict[str, Path] = field(default_factory=dict)  # site path -> .md file (README -> index.html)
    copies: dict[str, Path] = field(default_factory=dict)    # site path -> repository file
    warnings: list[str] = field(default_factory=list)


def site_path_of(repo_file: Path, site: Site) -> str | None:
    """Where a repository file lives in the site (``None``: outside the repository)."""
    try:
        rel = repo_file.relative_to(ROOT).as_posix()
    except ValueError:
        return None
    if rel == "README.md":
        return "index.html"
    if repo_file.suffix == ".ipynb" and repo_file.parent == ROOT / "notebooks":
        return f"notebooks/{repo_file.stem}.html"
    if repo_file.suffix == ".md":
        return rel[:-3] + ".html"
    return rel


def rewrite_urls(text: str, source: Path, page: str, site: Site) -> str:
    """Point the relative ``href``/``src`` URLs of a page made from ``source`` at their site copies.

    ``.md`` targets are queued for rendering, other repository files for copying; URLs with a scheme
    or host, fragments and data URIs are left alone. A target that does not exist is kept and named
    in a warning (the site test then reports it as a broken link).
    """
    page_dir = Path(page).parent

    def fix(m: re.Match) -> str:
        attr, url = m.group(1), html.unescape(m.group(2))
        parts = urlsplit(url)
        if parts.scheme or parts.netloc or not parts.path:
            return m.group(0)
        target = (source.parent / unquote(parts.path)).resolve()
        if target.is_dir() and (target / "README.md").is_file():
            target = target / "README.md"
        where = site_path_of(target, site) if target.is_file() else None
        if where is None:
            site.warnings.append(f"{source.relative_to(ROOT)}: link {url!r} points at nothing in the repository")
            return m.group(0)
        if target.suffix == ".md":
            site.markdown.setdefault(where, target)
        elif where not in site.notebooks:
            site.copies.setdefault(where, target)
        new = os.path.relpath(where, page_dir).replace(os.sep, "/") + (f"#{parts.fragment}" if parts.fragment else "")
        return f'{attr}="{html.escape(new)}"'

    return re.sub(r'\b(href|src)="([^"]*)"', fix, text)


def github_slug_anchors(text: str) -> str:
    """Add GitHub-style heading anchors (``#the-shipped-checkpoints``) beside nbconvert's own ids.

    nbconvert ids keep the heading's case (``What-to-record-on-a-GPU``); the repository's markdown
    links use GitHub's slugs, so each heading also gets an empty ``<a id=slug>`` (duplicates -1, -2).
    """
    seen: dict[str, int] = {}

    def add(m: re.Match) -> str:
        words = html.unescape(re.sub(r"<a class=\"anchor-link\".*?</a>|<[^>]+>", "", m.group(3)))
        slug = re.sub(r"[^\w\- ]", "", words.strip().lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        slug = f"{slug}-{n}" if n else slug
        if slug == m.group(2):
            return m.group(0)
        return f'{m.group(1)}<a class="site-slug" id="{html.escape(slug)}"></a>{m.group(3)}'

    return re.sub(r'(<h[1-6][^>]*\bid="([^"]*)"[^>]*>)(.*?)(?=</h[1-6]>)', add, text, flags=re.S)


def nav_bar(page: str, site: Site) -> str:
    """The bar at the top of every page: front page, the notebooks in order, the teaching notes."""
    entries = [("index.html", "Home", "README")]
    for where, nb_file in sorted(site.notebooks.items()):
        entries.append((where, nb_file.stem.replace("_", " "), nb_file.stem))
    if (ROOT / "docs" / "teaching.md").is_file():
        entries.append(("docs/teaching.html", "Teaching notes", "instructor notes"))
    links = []
    for where, label, title in entries:
        href = os.path.relpath(where, Path(page).parent).replace(os.sep, "/")
        cls = ' class="current"' if where == page else ""
        links.append(f'<a href="{href}"{cls} title="{html.escape(title)}">{html.escape(label)}</a>')
    return '<nav class="site-nav">' + "".join(links) + "</nav>"


def pager(page: str, site: Site) -> str:
    """Previous / next links between notebook pages."""
    order = sorted(site.notebooks)
    i = order.index(page)
    rel = lambda p: os.path.relpath(p, Path(page).parent).replace(os.sep, "/")  # noqa: E731
    prev = f'<a href="{rel(order[i - 1])}">&larr; {Path(order[i - 1]).stem}</a>' if i else "<span></span>"
    nxt = f'<a href="{rel(order[i + 1])}">{Path(order[i + 1]).stem} &rarr;</a>' if i + 1 < len(order) else ""
    return f'<div class="site-pager">{prev}{nxt}</div>'


def static_widgets(nb: nbformat.NotebookNode, name: str) -> bool:
    """Replace widget outputs by a static fallback in place; return whether there were any."""
    found = False
    still = WIDGET_STILLS.get(name)
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            if WIDGET_VIEW not in data:
                continue
            found = True
            kind = html.escape(str(data.get("text/plain", "widget")).split("(", 1)[0][:40])
            if still and (ROOT / still).is_file():
                src = os.path.relpath(ROOT / still, ROOT / "notebooks").replace(os.sep, "/")
                body = (f'<img src="{src}" alt="the live widget in a browser"><p><em>Screenshot of the live '
                        "widget (a real browser run); it needs a kernel to react.</em></p>")
            else:
                body = f"<p><em>Interactive widget ({kind}): it is shown only when the notebook runs live.</em></p>"
            out["data"] = {"text/html": f'<div class="site-widget">{body}</div>'}
    nb.metadata.pop("widgets", None)  # its saved state is only read by the CDN widget manager
    return found


def render_notebook(where: str, nb_file: Path, site: Site) -> str:
    """The HTML page of one notebook: nbconvert's lab template without its CDN scripts, plus the site bar."""
    from jinja2 import DictLoader
    from nbconvert import HTMLExporter

    nb = copy.deepcopy(nbformat.read(nb_file, as_version=4))
    live = "widgets" in nb.metadata or nb_file.name in WIDGET_STILLS
    live = static_widgets(nb, nb_file.name) or live
    code = [c for c in nb.cells if c.cell_type == "code" and c.source.strip()]
    if code and not any(c.get("outputs") or c.get("execution_count") for c in code):
        site.warnings.append(f"{nb_file.name} has not been executed (no outputs): its page shows code only; "
                             "run `make demo` and pass --notebooks outputs/notebooks")
    note = LIVE_NOTE.format(what="explorer" if "explorer" in nb_file.stem else "widget",
                            path=f"notebooks/{nb_file.name}") if live else ""
    exporter = HTMLExporter(template_name="lab", extra_loaders=[DictLoader({"site.html.j2": NOTEBOOK_TEMPLATE})],
                            template_file="site.html.j2")
    resources = {"metadata": {"name": nb_file.stem, "path": str(ROOT / "notebooks")}}
    body, _ = exporter.from_notebook_node(nb, resources=resources)
    # links in the notebook are relative to notebooks/ in the repository, wherever this copy came from
    body = github_slug_anchors(rewrite_urls(body, ROOT / "notebooks" / nb_file.name, where, site))
    css = os.path.relpath("site.css", Path(where).parent)
    for mark, text in (("head", f'<link rel="stylesheet" href="{css}">'), ("nav", nav_bar(where, site) + note),
                       ("pager", pager(where, site))):  # site links go in after the rewrite: they are final
        body = body.replace(f"<!--site:{mark}-->", text, 1)
    return body


def render_markdown(where: str, md_file: Path, site: Site) -> str:
    """The HTML page of one markdown file, rendered by nbconvert's mistune renderer."""
    from nbconvert.filters.markdown_mistune import markdown2html_mistune
    from pygments.formatters import HtmlFormatter

    text = md_file.read_text(encoding="utf-8")
    body = github_slug_anchors(rewrite_urls(markdown2html_mistune(text), md_file, where, site))
    title = next((ln.lstrip("# ").strip() for ln in text.splitlines() if ln.startswith("# ")), md_file.stem)
    return PAGE.format(title=html.escape(title), css=os.path.relpath("site.css", Path(where).parent),
                       pygments=HtmlFormatter().get_style_defs(".highlight"), nav=nav_bar(where, site), body=body)


def build(out: Path, notebooks_dir: Path) -> Site:
    """Render every page into a temporary folder, then swap it in as ``out``; return what was built."""
    nbs = sorted(notebooks_dir.glob("[0-9][0-9]_*.ipynb"))
    if not nbs:
        raise RegGANError(f"no notebooks NN_name.ipynb in {notebooks_dir}; "
                          "pass --notebooks with the executed notebooks")
    site = Site(out=out, notebooks={f"notebooks/{nb.stem}.html": nb for nb in nbs})
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        def write(where: str, text: str) -> None:
            (tmp / where).parent.mkdir(parents=True, exist_ok=True)
            (tmp / where).write_text(text, encoding="utf-8")

        write("site.css", CSS)
        for where, nb_file in site.notebooks.items():
            write(where, render_notebook(where, nb_file, site))
        site.markdown["index.html"] = ROOT / "README.md"
        done: set[str] = set()
        while set(site.markdown) - done:  # pages found while rendering are rendered too
            where = sorted(set(site.markdown) - done)[0]
            write(where, render_markdown(where, site.markdown[where], site))
            done.add(where)
        for where, src in site.copies.items():
            (tmp / where).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, tmp / where)
        os.chmod(tmp, 0o755)
        old = out.with_name(f".{out.name}.old")
        if old.exists():
            shutil.rmtree(old)
        if out.exists():
            out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return site


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=ROOT / "outputs" / "site")
    p.add_argument("--notebooks", type=Path, default=ROOT / "notebooks",
                   help="folder of executed notebooks (default: the committed ones; outputs/notebooks after make demo)")
    a = p.parse_args(argv)
    try:
        site = build(a.out.resolve(), a.notebooks.resolve())
    except RegGANError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for line in site.warnings:
        print(f"warning: {line}", file=sys.stderr)
    n_pages = len(site.notebooks) + len(site.markdown)
    print(f"site: {n_pages} pages, {len(site.copies)} copied files in {a.out} (open {a.out / 'index.html'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
