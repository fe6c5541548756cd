"""HTML report of a folder of experiment results (``<out>/<experiment>/results.json`` + figures).

``write_report(out_dir)`` writes ``out_dir/report.html``: per experiment its
figures (PNG embedded, PDF linked), key numbers, timings, and for every
checkable claim of the papers whether it held in this run. Self-contained: the
file can be opened or mailed on its own.

A results folder may come from someone else, so every record is untrusted:
each value read from ``results.json`` (and each folder name) is HTML-escaped,
text and attributes alike, links are relative (``./``) and percent-encoded,
and a figure is embedded only when its stem is a plain file name whose PNG
resolves to a regular file inside the experiment's own folder, below a size
limit. Fields of the wrong type are shown as text, never raise.
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
import stat
from pathlib import Path
from typing import Sequence
from urllib.parse import quote

from jaxland.io import atomic_write_text

__all__ = ["write_report", "load_results"]

MAX_FIGURE_BYTES = 16 << 20
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
h1{border-bottom:2px solid #444}h2{margin-top:2em;border-bottom:1px solid #bbb}
table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #ccc;padding:3px 8px;font-size:90%;text-align:left;vertical-align:top}
.held{color:#0a0;font-weight:bold}.not{color:#c00;font-weight:bold}.na{color:#888;font-weight:bold}
img{max-width:100%;border:1px solid #eee;margin:.4em 0}.small{color:#666;font-size:85%}code{background:#f4f4f4;padding:0 3px}
"""


def load_results(out_dir: str | os.PathLike, names: Sequence[str] | None = None) -> dict[str, dict | None]:
    """``{experiment: results.json record or None}`` for the sub-folders of ``out_dir`` (None: missing, unreadable or not a record)."""
    out = Path(out_dir)
    if names is None:
        names = sorted(p.parent.name for p in out.glob("*/results.json"))
    recs = {}
    for n in names:
        p = out / n / "results.json"
        try:
            rec = json.loads(p.read_text())
        except (OSError, ValueError):
            rec = None
        recs[n] = rec if isinstance(rec, dict) else None  # a list or a string is not a jaxland record
    return recs


def _e(v) -> str:
    """Any value as HTML text, safe inside element content and quoted attributes."""
    return html.escape(str(v), quote=True)


def _href(*parts: str) -> str:
    """A relative link to ``parts`` below the report: percent-encoded, so never a ``javascript:`` URL."""
    return _e("./" + "/".join(quote(str(p), safe="") for p in parts))


def _seconds(v) -> str:
    return f"{v:.1f}" if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else _e(v)


def _verdict(h) -> str:
    return {True: '<span class="held">HELD</span>', False: '<span class="not">NOT HELD</span>'}.get(h, '<span class="na">not checkable</span>')


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, list) and v and all(isinstance(a, (int, float)) for a in v):
        return "[" + ", ".join(_fmt(a) for a in v[:12]) + (", ..." if len(v) > 12 else "") + "]"
    if isinstance(v, dict):
        return "; ".join(f"{_e(k)}: {_fmt(a)}" for k, a in v.items())
    return _e(v)


def _table(rows) -> str:
    rows = [r for r in rows if isinstance(r, dict)] if isinstance(rows, list) else []
    if not rows:
        return ""
    cols = list(rows[0])
    head = "".join(f"<th>{_e(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(r.get(c))}</td>" for c in cols) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _dict(r: dict, field: str) -> dict:
    v = r.get(field)
    return v if isinstance(v, dict) else {}


def _claims(r: dict) -> list[dict]:
    cs = r.get("claims")
    return [c for c in cs if isinstance(c, dict)] if isinstance(cs, list) else []


def _figure_png(out: Path, name: str, stem) -> tuple[bytes | None, str]:
    """The PNG bytes of figure ``stem`` of experiment ``name``, or None and why it is not embedded."""
    if not isinstance(stem, str) or not stem or stem.startswith(".") or ".." in stem or any(c in stem for c in "/\\\0:"):
        return None, "not a plain file name"
    try:
        root = (out / name).resolve(strict=True)
        if not root.is_relative_to(out.resolve(strict=True)):
            return None, "the experiment folder lies outside the report's folder"
        png = (out / name / f"{stem}.png").resolve(strict=True)
    except (OSError, RuntimeError):
        return None, "no PNG file"
    if png.parent != root:
        return None, "the PNG resolves outside the experiment's folder"
    try:  # non-blocking: opening a FIFO must not wait for a writer; fstat then checks what was opened
        fd = os.open(png, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0))
    except OSError as e:
        return None, f"unreadable ({e.strerror})"
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        return None, "not a regular file"
    if st.st_size > MAX_FIGURE_BYTES:
        os.close(fd)
        return None, f"larger than {MAX_FIGURE_BYTES / 2**20:g} MiB"
    with os.fdopen(fd, "rb") as fh:
        data = fh.read(MAX_FIGURE_BYTES + 1)
    if len(data) > MAX_FIGURE_BYTES or not data.startswith(_PNG_SIGNATURE):
        return None, "not a PNG file"
    return data, ""


def _figures(out: Path, n: str, r: dict) -> list[str]:
    parts = []
    stems = r.get("figures")
    for stem in stems if isinstance(stems, list) else []:
        data, why = _figure_png(out, n, stem)
        if data is None:
            parts.append(f"<p class='small'>Figure {_e(stem)} not embedded: {_e(why)}.</p>")
            continue
        b64 = base64.b64encode(data).decode()
        parts.append(f"<div><img alt='{_e(stem)}' src='data:image/png;base64,{b64}'><br><span class='small'>{_e(stem)}: "
                     f"<a href='{_href(n, stem + '.png')}'>PNG</a> <a href='{_href(n, stem + '.pdf')}'>PDF</a></span></div>")
    return parts


def _section(out: Path, n: str, r: dict) -> list[str]:
    timings, summary, meta = _dict(r, "timings"), _dict(r, "summary"), _dict(r, "metadata")
    resumed = r.get("resumed_parts")
    resumed = ", ".join(_e(p) for p in resumed) if isinstance(resumed, list) and resumed else ""
    parts = [f"<p><b>{_e(r.get('title', ''))}</b> ({_e(r.get('paper_ref', ''))}). Wall time {_seconds(timings.get('total_s'))} s"
             + (f"; resumed parts: {resumed}" if resumed else "") + ".</p>"]
    for c in _claims(r):
        parts.append(f"<p>{_verdict(c.get('held'))} {_e(c.get('claim', ''))} <span class='small'>({_e(c.get('detail', ''))})</span></p>")
    parts += _figures(out, n, r)
    summ = {k: v for k, v in summary.items() if k != "rows"}
    parts.append(_table(summary.get("rows")))
    if summ:
        parts.append("<table>" + "".join(f"<tr><th>{_e(k)}</th><td>{_fmt(v)}</td></tr>" for k, v in summ.items()) + "</table>")
    notes = r.get("notes")
    for note in notes if isinstance(notes, list) else []:
        parts.append(f"<p class='small'>Note: {_e(note)}</p>")
    cfg = ", ".join(f"{_e(k)}={_fmt(v)}" for k, v in _dict(r, "config").items())
    sources = "; ".join(f"{a}: {b}" for a, b in _dict(r, "data_sources").items())
    parts.append(f"<p class='small'>Config: <code>{cfg}</code><br>Key: <code>{_e(r.get('key', ''))}</code>; data: {_e(sources)}<br>"
                 f"Versions: {_e(json.dumps(meta.get('versions', {})))}; device: {_e(meta.get('device_kind', ''))} ({_e(meta.get('backend', ''))})<br>"
                 f"Numbers: <a href='{_href(n, 'results.json')}'>results.json</a>, <a href='{_href(n, 'results.npz')}'>results.npz</a></p>")
    return parts


def write_report(
    out_dir: str | os.PathLike,
    names: Sequence[str] | None = None,
    *,
    title: str = "jaxland: loss-landscape convergence report",
    extra_claims: Sequence[dict] = (),
    failures: dict[str, str] | None = None,
    header: str = "",
) -> Path:
    """Write ``out_dir/report.html`` from the experiments' ``results.json`` files; returns its path.

    ``header`` is HTML inserted as is below the title: the caller escapes any
    value it interpolates. Everything else is escaped here.
    """
    out = Path(out_dir)
    recs = load_results(out, names)
    failures = failures or {}
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{_e(title)}</title><style>{_CSS}</style></head><body>"]
    parts.append(f"<h1>{_e(title)}</h1>{header}")
    rows = []
    for n, r in recs.items():
        if r is None:
            rows.append(f"<tr><td>{_e(n)}</td><td colspan=3 class='not'>no results ({_e(failures.get(n, 'not run or failed'))})</td></tr>")
            continue
        for c in _claims(r):
            rows.append(f"<tr><td><a href='#{_e(n)}'>{_e(n)}</a></td><td>{_e(c.get('claim', ''))}</td><td>{_verdict(c.get('held'))}</td>"
                        f"<td class='small'>{_e(c.get('detail', ''))}</td></tr>")
    for c in extra_claims:
        rows.append(f"<tr><td>{_e(c['experiment'])}</td><td>{_e(c['claim'])}</td><td>{_verdict(c['held'])}</td><td class='small'>{_e(c['detail'])}</td></tr>")
    parts.append("<h2>Claims of the papers, checked in this run</h2><table><tr><th>experiment</th><th>claim</th><th>verdict</th><th>evidence</th></tr>" + "".join(rows) + "</table>")
    timing = "".join(
        f"<tr><td><a href='#{_e(n)}'>{_e(n)}</a></td><td>{_e(r.get('title', ''))}</td><td>{_seconds(_dict(r, 'timings').get('total_s'))}</td><td>{_e(r.get('mode', ''))}</td></tr>"
        for n, r in recs.items() if r
    )
    parts.append(f"<h2>Experiments</h2><table><tr><th>experiment</th><th>what</th><th>wall time (s)</th><th>mode</th></tr>{timing}</table>")
    for n, r in recs.items():
        parts.append(f"<h2 id='{_e(n)}'>{_e(n)}</h2>")
        if r is None:
            parts.append(f"<p class='not'>No results: {_e(failures.get(n, 'not run or failed'))}</p>")
            continue
        parts += _section(out, n, r)
    parts.append("</body></html>")
    return atomic_write_text(out / "report.html", "\n".join(parts))
