"""DIR/index.html: the report (lab.experiments.report.document) as one self-contained
static page — inline CSS, the PNGs embedded as data: URIs, no script — written with
the standard library (``html.escape``), so it can be mailed or opened from anywhere.
"""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1400px;
       padding: 0 1em; color: #222; line-height: 1.4; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; border-top: 1px solid #ccc;
     padding-top: 1em; margin-top: 2em; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.85em; }
th, td { border: 1px solid #bbb; padding: 0.25em 0.5em; vertical-align: top; }
th { background: #eee; } td.n { text-align: right; white-space: nowrap; }
table.verdict td { width: 50%; } table.verdict { width: 100%; font-size: 0.95em; }
.bad { color: #a00; } code { background: #f4f4f4; padding: 0 0.2em; }
figure { margin: 1em 0; } figcaption { font-size: 0.85em; color: #555; }
img { max-width: 100%; border: 1px solid #ddd; } .note { font-size: 0.85em; color: #555; }
"""
NUMERIC = re.compile(r"^[-+]?[\d.,]+( \(.*\))?( MiB.*)?$|^-$")


def esc(text) -> str:
    """Text as HTML, `code` spans kept, line breaks as <br>."""
    parts = str(text).split("`")
    out = "".join(f"<code>{html.escape(p)}</code>" if i % 2 else html.escape(p)
                  for i, p in enumerate(parts))
    return out.replace("\n", "<br>")


def table(headers: list[str], rows: list[list[str]], cls: str = "") -> str:
    """An HTML table; cells that are numbers aligned right."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f'<td class="n">{esc(c)}</td>' if j and NUMERIC.match(str(c))
                         else f"<td>{esc(c)}</td>" for j, c in enumerate(r)) + "</tr>"
        for r in rows)
    return (f'<table class="{cls}">' if cls else "<table>") + \
        f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def image(path: Path, alt: str) -> str:
    """An <img> with the PNG at ``path`` inside it (a note if it cannot be read)."""
    try:
        data = base64.b64encode(Path(path).read_bytes()).decode()
    except OSError as e:
        return f'<p class="bad">{esc(alt)}: {esc(e.strerror or e)}</p>'
    return f'<img alt="{html.escape(alt, quote=True)}" src="data:image/png;base64,{data}">'


def render(doc: dict, out: Path) -> str:
    """The page of ``doc``; its figures are read from ``out``."""
    parts = [f"<h1>{esc(doc['title'])}</h1>", f"<p>{esc(doc['intro'])}</p>",
             "<h3>Calibration</h3>", table(["quantity", "value"], doc["calibration"])]
    for e in doc["experiments"]:
        parts += [f'<h2 id="{html.escape(e["name"], quote=True)}">{esc(e["title"])}</h2>',
                  table(*e["verdict"], cls="verdict"),
                  f"<p><b>Workload.</b> {esc(e['workload'])}.</p>",
                  f"<p><b>Sampled.</b> {esc(e['samples'])}.</p>",
                  "<p><b>Configurations.</b></p><ul>"
                  + "".join(f"<li><code>{esc(n)}</code>: {esc(d)}</li>"
                            for n, d in e["configurations"]) + "</ul>",
                  "<p><b>Measured.</b></p>", table(*e["table"])]
        if e["notes"]:
            parts.append('<ul class="bad">' + "".join(f"<li>{esc(n)}</li>"
                                                      for n in e["notes"]) + "</ul>")
        for caption, name in e["figures"]:
            alt = f"{e['name']} {caption}"
            parts.append(f"<figure>{image(Path(out) / name, alt)}"
                         f"<figcaption>{esc(caption)} ({esc(name)})</figcaption></figure>")
        parts += ["<p><b>Calibration of the runs.</b></p>", table(*e["run_calibration"]),
                  f'<p class="note">{esc(e["recorder"])}</p>']
        parts += [f'<p class="note">Run directories: <code>{esc(d)}</code></p>'
                  for d in e["run_dirs"]]
    nav = " · ".join(f'<a href="#{html.escape(e["name"], quote=True)}">{esc(e["name"])}</a>'
                     for e in doc["experiments"])
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{esc(doc['title'])}</title><style>{CSS}</style></head><body>"
            f"<nav>{nav}</nav>" + "\n".join(parts) + "</body></html>\n")
