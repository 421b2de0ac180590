"""A self-contained offline HTML form for one blind study.

The form is one ``.html`` file: inline CSS and JavaScript, every image embedded as a base64
``data:`` URI, no network access. A rater enters an id, picks the best output of every panel
(and, optionally, rates each output on a 1-5 scale), then saves a CSV in the long format that
:mod:`reggan_core.human_study.responses` reads::

    rater,panel,position,best,rating
    ana,P001,A,0,3
    ana,P001,B,1,5

The form carries panel ids and position letters only: no method name, no file name and no key.
Panels appear in an order shuffled per rater (seeded by the rater id) so that fatigue and
learning effects spread over all panels.
"""
from __future__ import annotations

import base64
import hashlib
import html
import io
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from ..errors import ConfigError
from ..imageio import write_text
from .panels import Panel, load_panel_image

RESPONSE_HEADER = ("rater", "panel", "position", "best", "rating")

DEFAULT_INSTRUCTIONS = (
    "Each panel shows an input face on the left and several results of changing its expression, "
    "labelled with letters. The letters and their order change from panel to panel and say nothing "
    "about how a result was made. Pick the result that looks best: a natural photo of the same "
    "person showing the expression clearly. There are no right answers; take your time. "
    "When you have finished, press 'Save answers' and send the CSV file to the study organiser."
)


@dataclass(frozen=True)
class FormConfig:
    """What the form asks and how it shows the images."""

    title: str = "Which result looks best?"
    instructions: str = DEFAULT_INSTRUCTIONS
    ratings: bool = True                 # also rate every output on ``scale`` (else: best pick only)
    scale: tuple[int, int] = (1, 5)      # rating scale, inclusive (a 5-point scale, as common in MOS studies)
    image_size: int = 128                # shown pixel for pixel (the models' 128x128 output size)
    image_format: str = "png"            # "png" (lossless, default) or "jpeg" (smaller files)

    def __post_init__(self) -> None:
        lo, hi = self.scale
        if not (isinstance(lo, int) and isinstance(hi, int) and lo < hi):
            raise ConfigError(f"rating scale {self.scale} must be two whole numbers low < high, e.g. (1, 5)")
        size = self.image_size
        if isinstance(size, bool) or not isinstance(size, int) or not 16 <= size <= 1024:
            raise ConfigError(f"image_size {self.image_size!r} must be a whole number of pixels from 16 to 1024 "
                              "(--image-size), e.g. 128")
        if self.image_format not in ("png", "jpeg"):
            raise ConfigError(f"image_format {self.image_format!r} is not supported; use 'png' or 'jpeg'")


def data_uri(img: np.ndarray, fmt: str = "png") -> str:
    """RGB uint8 image -> ``data:image/...;base64,...`` (re-encoded, so no file metadata leaks)."""
    buf = io.BytesIO()
    if fmt == "jpeg":
        Image.fromarray(img).save(buf, format="JPEG", quality=92)
    else:
        Image.fromarray(img).save(buf, format="PNG", optimize=True)
    return f"data:image/{fmt};base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _figure(src: str, label: str, size: int, extra: str = "") -> str:
    return (f'<figure><img src="{src}" width="{size}" height="{size}" alt="{html.escape(label)}">'
            f"<figcaption>{html.escape(label)}</figcaption>{extra}</figure>")


def _panel_html(panel: Panel, images: list[str], config: FormConfig) -> str:
    pid = html.escape(panel.panel)
    parts = [_figure(images[0], "input", config.image_size)]
    lo, hi = config.scale
    for (pos, _, _), src in zip(panel.columns, images[1:]):
        extra = (f'<label class="best"><input type="radio" name="best-{pid}" value="{pos}"> best</label>')
        if config.ratings:
            extra += '<div class="rate">' + "".join(
                f'<label><input type="radio" name="rate-{pid}-{pos}" value="{v}">{v}</label>'
                for v in range(lo, hi + 1)) + "</div>"
        parts.append(_figure(src, pos, config.image_size, extra))
    positions = ",".join(panel.positions)
    return (f'<section class="panel" data-panel="{pid}" data-positions="{positions}">'
            f'<h2>Panel <span class="number"></span></h2><div class="row">{"".join(parts)}</div></section>')


def render_form(panels: Sequence[Panel], config: FormConfig = FormConfig()) -> str:
    """The whole form as one HTML string (images embedded; nothing that names a method)."""
    blocks, digest = [], hashlib.sha256()
    for panel in panels:
        paths = [panel.input_path] + [out for _, _, out in panel.columns]
        images = [data_uri(load_panel_image(p, config.image_size), config.image_format) for p in paths]
        for src in images:
            digest.update(src.encode("ascii"))
        digest.update(panel.panel.encode())
        blocks.append(_panel_html(panel, images, config))
    lo, hi = config.scale
    scale_note = (f"<p>Also rate every result from {lo} (very poor) to {hi} (excellent).</p>"
                  if config.ratings else "")
    settings = {"study": digest.hexdigest()[:12], "scale": [lo, hi] if config.ratings else None,
                "header": list(RESPONSE_HEADER)}
    values = {"TITLE": html.escape(config.title), "INSTRUCTIONS": html.escape(config.instructions),
              "SCALE_NOTE": scale_note, "TILE": str(config.image_size), "SETTINGS": json.dumps(settings),
              "PANELS": "\n".join(blocks)}
    # one pass over the template: placeholders inside the user's title or instructions stay text
    return re.sub(r"@@([A-Z_]+)@@", lambda m: values.get(m.group(1), m.group(0)), _TEMPLATE)


def write_form(panels: Sequence[Panel], path: str | os.PathLike, config: FormConfig = FormConfig()) -> Path:
    """Write the form atomically; returns its path."""
    return write_text(render_form(panels, config), Path(path))


_TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>@@TITLE@@</title>
<style>
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; background: #fafafa; }
header, footer { max-width: 60em; }
.panel { background: #fff; border: 1px solid #ccc; border-radius: 6px; padding: .5em 1em; margin: 1em 0; }
.panel.done { border-color: #3a7; }
.panel h2 { font-size: 1em; margin: .2em 0 .5em; }
.row { display: flex; flex-wrap: wrap; gap: 10px; align-items: flex-start; }
figure { margin: 0; width: @@TILE@@px; min-width: 11em; text-align: center; font-size: .9em; }
figure:first-child { margin-right: 18px; }
figure img { display: block; margin: 0 auto; }
figcaption { font-weight: bold; margin: 2px 0; }
.rate { display: flex; justify-content: space-between; font-size: .8em; }
.rate label { display: flex; flex-direction: column; align-items: center; }
#panels[hidden] { display: none; }
#message { color: #a40; white-space: pre-wrap; }
textarea { width: 100%; height: 6em; font-family: monospace; }
button { font-size: 1em; padding: .3em 1em; }
</style>
</head>
<body>
<header>
<h1>@@TITLE@@</h1>
<p>@@INSTRUCTIONS@@</p>
@@SCALE_NOTE@@
<p><label>Your rater id (as given by the organiser): <input id="rater" autocomplete="off"></label>
<button id="start" type="button">Start</button></p>
</header>
<main id="panels" hidden>
@@PANELS@@
</main>
<footer>
<p id="progress"></p>
<p><button id="save" type="button">Save answers (CSV)</button></p>
<p id="message"></p>
<p>If your browser does not save the file, copy this text into a file named answers_&lt;your id&gt;.csv:</p>
<textarea id="csv" readonly></textarea>
</footer>
<script>
(function () {
  "use strict";
  var SETTINGS = @@SETTINGS@@;
  var panels = Array.prototype.slice.call(document.querySelectorAll("section.panel"));
  var rater = document.getElementById("rater");
  var storeKey = "blind-study-" + SETTINGS.study;

  function hash(text) {            // FNV-1a, 32 bit
    var h = 2166136261;
    for (var i = 0; i < text.length; i++) { h ^= text.charCodeAt(i); h = Math.imul(h, 16777619) >>> 0; }
    return h >>> 0;
  }
  function random(seed) {          // mulberry32
    var a = seed >>> 0;
    return function () {
      a = (a + 0x6D2B79F5) >>> 0;
      var t = Math.imul(a ^ (a >>> 15), a | 1);
      t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
      return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    };
  }
  function showPanels(id) {        // panel order shuffled per rater, reproducible from the id
    var rand = random(hash(id)), order = panels.slice(), box = document.getElementById("panels");
    for (var i = order.length - 1; i > 0; i--) {
      var j = Math.floor(rand() * (i + 1)), tmp = order[i]; order[i] = order[j]; order[j] = tmp;
    }
    order.forEach(function (p, k) {
      p.querySelector(".number").textContent = (k + 1) + " of " + order.length;
      box.appendChild(p);
    });
    box.hidden = false;
    rater.readOnly = true;
    update();
  }
  function checked(name) { return document.querySelector('input[name="' + name + '"]:checked'); }
  function panelState(p) {         // rows for one panel, whether it is complete, whether it was touched
    var id = p.dataset.panel, best = checked("best-" + id), rows = [], complete = !!best, touched = !!best;
    p.dataset.positions.split(",").forEach(function (pos) {
      var rating = "";
      if (SETTINGS.scale) {
        var r = checked("rate-" + id + "-" + pos);
        if (r) { rating = r.value; touched = true; } else { complete = false; }
      }
      rows.push([id, pos, best && best.value === pos ? "1" : "0", rating]);
    });
    return { rows: rows, complete: complete, touched: touched };
  }
  function update() {
    var done = 0;
    panels.forEach(function (p) {
      var s = panelState(p);
      p.classList.toggle("done", s.complete);
      if (s.complete) { done += 1; }
    });
    document.getElementById("progress").textContent = done + " of " + panels.length + " panels complete";
    return done;
  }
  function field(text) { return /[",\\r\\n]/.test(text) ? '"' + text.replace(/"/g, '""') + '"' : text; }
  function csvText(id) {
    var lines = [SETTINGS.header.join(",")], open = [];
    panels.forEach(function (p) {
      var s = panelState(p);
      if (!s.complete) { open.push(p.querySelector(".number").textContent.split(" ")[0]); }
      if (!s.touched) { return; }
      s.rows.forEach(function (r) { lines.push([field(id)].concat(r).join(",")); });
    });
    return { text: lines.join("\\n") + "\\n", open: open };
  }
  function store() {
    try {
      var values = {};
      document.querySelectorAll("input[type=radio]:checked").forEach(function (el) { values[el.name] = el.value; });
      localStorage.setItem(storeKey, JSON.stringify({ rater: rater.value.trim(), values: values }));
    } catch (e) { /* storage unavailable: answers live in the page only */ }
  }
  function restore() {
    try {
      var saved = JSON.parse(localStorage.getItem(storeKey) || "null");
      if (!saved || !saved.rater) { return; }
      rater.value = saved.rater;
      Object.keys(saved.values).forEach(function (name) {
        var el = document.querySelector('input[name="' + name + '"][value="' + saved.values[name] + '"]');
        if (el) { el.checked = true; }
      });
      showPanels(saved.rater);
    } catch (e) { /* nothing saved */ }
  }
  document.getElementById("start").addEventListener("click", function () {
    var id = rater.value.trim();
    if (!id) { document.getElementById("message").textContent = "Please enter your rater id first."; return; }
    document.getElementById("message").textContent = "";
    showPanels(id);
    store();
  });
  document.getElementById("panels").addEventListener("change", function () { update(); store(); });
  document.getElementById("save").addEventListener("click", function () {
    var id = rater.value.trim(), msg = document.getElementById("message");
    if (!id) { msg.textContent = "Please enter your rater id first."; return; }
    var out = csvText(id);
    document.getElementById("csv").value = out.text;
    msg.textContent = out.open.length ? "Not complete yet: panel(s) " + out.open.join(", ") +
      ". Saved anyway; you may finish and save again." : "All panels complete. Thank you!";
    var blob = new Blob([out.text], { type: "text/csv" });
    var a = document.createElement("a");
    a.href = URL.createObjectURL(blob);
    a.download = "answers_" + id.replace(/[^A-Za-z0-9_-]+/g, "_") + ".csv";
    document.body.appendChild(a);
    a.click();
    setTimeout(function () { URL.revokeObjectURL(a.href); a.remove(); }, 1000);
  });
  restore();
}());
</script>
</body>
</html>
"""
