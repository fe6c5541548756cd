"""HTML report of a folder of experiment results (``<out>/<experiment>/results.json`` + figures).

``write_report(out_dir)`` writes ``out_dir/report.html``: per experiment its
figures (PNG embedded, PDF linked), key numbers, timings, and for every
checkable claim of the papers whether it held in this run. Self-contained: the
file can be opened or mailed on its own.
"""

from __future__ import annotations

import base64
import html
import json
import os
from pathlib import Path
from typing import Sequence

from jaxland.io import atomic_write_text

__all__ = ["write_report", "load_results"]

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
h1{border-bottom:2px solid #444}h2{margin-top:2em;border-bottom:1px solid #bbb}
table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #ccc;padding:3px 8px;font-size:90%;text-align:left;vertical-align:top}
.held{color:#0a0;font-weight:bold}.not{color:#c00;font-weight:bold}.na{color:#888;font-weight:bold}
img{max-width:100%;border:1px solid #eee;margin:.4em 0}.small{color:#666;font-size:85%}code{background:#f4f4f4;padding:0 3px}
"""


def load_results(out_dir: str | os.PathLike, names: Sequence[str] | None = None) -> dict[str, dict | None]:
    """``{experiment: results.json record or None}`` for the sub-folders of ``out_dir``."""
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


def _verdict(h) -> str:
    return {True: '<span class="held">HELD</span>', False: '<span class="not">NOT HELD</span>'}.get(h, '<span class="na">not checkable</span>')


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, list) and v and all(isinstance(a, (int, float)) for a in v):
        return "[" + ", ".join(_fmt(a) for a in v[:12]) + (", ..." if len(v) > 12 else "") + "]"
    if isinstance(v, dict):
        return "; ".join(f"{k}: {_fmt(a)}" for k, a in v.items())
    return html.escape(str(v))


def _table(rows: list[dict]) -> str:
    if not rows:
        return ""
    cols = list(rows[0])
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(r.get(c))}</td>" for c in cols) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def write_report(
    out_dir: str | os.PathLike,
    names: Sequence[str] | None = None,
    *,
    title: str = "jaxland: loss-landscape convergence report",
    extra_claims: Sequence[dict] = (),
    failures: dict[str, str] | None = None,
    header: str = "",
) -> Path:
    """Write ``out_dir/report.html`` from the experiments' ``results.json`` files; returns its path."""
    out = Path(out_dir)
    recs = load_results(out, names)
    failures = failures or {}
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>{_CSS}</style></head><body>"]
    parts.append(f"<h1>{html.escape(title)}</h1>{header}")
    # overview of all claims
    rows = []
    for n, r in recs.items():
        if r is None:
            rows.append(f"<tr><td>{n}</td><td colspan=3 class='not'>no results ({html.escape(failures.get(n, 'not run or failed'))})</td></tr>")
            continue
        for c in r.get("claims", []):
            rows.append(f"<tr><td><a href='#{n}'>{n}</a></td><td>{html.escape(c['claim'])}</td><td>{_verdict(c['held'])}</td><td class='small'>{html.escape(c['detail'])}</td></tr>")
    for c in extra_claims:
        rows.append(f"<tr><td>{html.escape(c['experiment'])}</td><td>{html.escape(c['claim'])}</td><td>{_verdict(c['held'])}</td><td class='small'>{html.escape(c['detail'])}</td></tr>")
    parts.append("<h2>Claims of the papers, checked in this run</h2><table><tr><th>experiment</th><th>claim</th><th>verdict</th><th>evidence</th></tr>" + "".join(rows) + "</table>")
    timing = "".join(
        f"<tr><td><a href='#{n}'>{n}</a></td><td>{html.escape(r['title'])}</td><td>{r['timings']['total_s']:.1f}</td><td>{html.escape(r.get('mode', ''))}</td></tr>"
        for n, r in recs.items() if r
    )
    parts.append(f"<h2>Experiments</h2><table><tr><th>experiment</th><th>what</th><th>wall time (s)</th><th>mode</th></tr>{timing}</table>")
    for n, r in recs.items():
        parts.append(f"<h2 id='{n}'>{n}</h2>")
        if r is None:
            parts.append(f"<p class='not'>No results: {html.escape(failures.get(n, 'not run or failed'))}</p>")
            continue
        parts.append(f"<p><b>{html.escape(r['title'])}</b> ({html.escape(r.get('paper_ref', ''))}). Wall time {r['timings']['total_s']:.1f} s"
                     + (f"; resumed parts: {', '.join(r['resumed_parts'])}" if r.get("resumed_parts") else "") + ".</p>")
        for c in r.get("claims", []):
            parts.append(f"<p>{_verdict(c['held'])} {html.escape(c['claim'])} <span class='small'>({html.escape(c['detail'])})</span></p>")
        for stem in r.get("figures", []):
            png = out / n / f"{stem}.png"
            if png.exists():
                b64 = base64.b64encode(png.read_bytes()).decode()
                parts.append(f"<div><img alt='{stem}' src='data:image/png;base64,{b64}'><br><span class='small'>{stem}: <a href='{n}/{stem}.png'>PNG</a> <a href='{n}/{stem}.pdf'>PDF</a></span></div>")
        summ = {k: v for k, v in r.get("summary", {}).items() if k != "rows"}
        if r.get("summary", {}).get("rows"):
            parts.append(_table(r["summary"]["rows"]))
        if summ:
            parts.append("<table>" + "".join(f"<tr><th>{html.escape(k)}</th><td>{_fmt(v)}</td></tr>" for k, v in summ.items()) + "</table>")
        for note in r.get("notes", []):
            parts.append(f"<p class='small'>Note: {html.escape(note)}</p>")
        cfg = ", ".join(f"{k}={_fmt(v)}" for k, v in r["config"].items())
        meta = r.get("metadata", {})
        parts.append(f"<p class='small'>Config: <code>{cfg}</code><br>Key: <code>{html.escape(r.get('key', ''))}</code>; data: {html.escape('; '.join(f'{a}: {b}' for a, b in r.get('data_sources', {}).items()))}<br>"
                     f"Versions: {html.escape(json.dumps(meta.get('versions', {})))}; device: {html.escape(str(meta.get('device_kind', '')))} ({html.escape(str(meta.get('backend', '')))})<br>"
                     f"Numbers: <a href='{n}/results.json'>results.json</a>, <a href='{n}/results.npz'>results.npz</a></p>")
    parts.append("</body></html>")
    return atomic_write_text(out / "report.html", "\n".join(parts))
