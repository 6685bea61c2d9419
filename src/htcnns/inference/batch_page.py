"""One page and one CSV for a batch, from its report (the JSON of ``htcnns-report.json``, see report.py).

``qc_dir/index.html`` is self-contained: inline CSS and a small inline script (click a column header to sort;
``index.html#sort=wt`` or ``#sort=-seconds`` opens sorted), a Content-Security-Policy that forbids any network
access, and relative links to the QC pictures in ``qc_dir``. Every string from the report is HTML-escaped.
``qc_dir/cases.csv`` has the same columns. Both are written atomically.

Besides the fields report.py writes, a case may carry ``volumes_ml`` ({NCR, ED, ET, TC, WT: ml}), ``qc_picture``
and ``qc_thumbnail`` (file names in ``qc_dir``), ``needs_review`` (bool), ``review_reason`` and ``stages``
({stage: seconds}); each may be absent. A merged report (shards.py) may carry ``shards`` and ``warnings``.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping
from html import escape
from pathlib import Path
from typing import Any
from urllib.parse import quote

from htcnns.inference.io import atomic_write_text

INDEX_NAME = "index.html"
CSV_NAME = "cases.csv"
VOLUME_NAMES = ("NCR", "ED", "ET", "TC", "WT")
COLUMNS: tuple[tuple[str, str], ...] = (
    ("case_id", "case"), ("status", "status"), ("error", "error"), ("seconds", "seconds"),
    *((f"{name.lower()}_ml", f"{name} ml") for name in VOLUME_NAMES),
    ("needs_review", "review"), ("review_reason", "review reason"), ("stages", "stages"),
    ("qc_picture", "picture"), ("qc_thumbnail", "thumbnail"),
)
"""(CSV column, page header) in order; the page shows the thumbnail inside the picture's link."""

_NUMERIC = {"seconds", *(f"{name.lower()}_ml" for name in VOLUME_NAMES)}

_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.2em;color:#222}
h1{font-size:1.3em;margin:0 0 .4em}
dl{display:grid;grid-template-columns:max-content auto;gap:.15em 1em;margin:0 0 1em}
dt{font-weight:600}dd{margin:0}
code{font-size:.9em;word-break:break-all}
table{border-collapse:collapse;width:100%}
th,td{border:1px solid #ccc;padding:.25em .45em;vertical-align:top;text-align:left}
th{background:#eee;cursor:pointer;user-select:none;position:sticky;top:0}
th[aria-sort=ascending]::after{content:" \\25B2"}th[aria-sort=descending]::after{content:" \\25BC"}
td.num{text-align:right;font-variant-numeric:tabular-nums}
td.error{max-width:32em}td.stages{white-space:nowrap}
tr.failed,tr.interrupted{background:#fde8e8}tr.pending{background:#f3f3f3}tr.review{background:#fff6d5}
.flag{color:#a15c00;font-weight:600}
img{display:block;width:120px;height:120px;object-fit:contain;background:#eee}
.warn{color:#a00}
"""

_SCRIPT = """
(function () {
  var table = document.getElementById("cases");
  var headers = table.tHead.rows[0].cells;
  function key(cell, numeric) {
    var value = cell.getAttribute("data-sort");
    if (value === null) value = cell.textContent;
    if (!numeric) return value.toLowerCase();
    return value === "" ? null : parseFloat(value);
  }
  function sortBy(column, descending) {
    var numeric = headers[column].getAttribute("data-type") === "number";
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = key(a.cells[column], numeric), y = key(b.cells[column], numeric);
      if (x === y) return 0;
      if (x === null) return 1;
      if (y === null) return -1;
      return (x < y ? -1 : 1) * (descending ? -1 : 1);
    });
    rows.forEach(function (row) { body.appendChild(row); });
    for (var i = 0; i < headers.length; i++) headers[i].removeAttribute("aria-sort");
    headers[column].setAttribute("aria-sort", descending ? "descending" : "ascending");
  }
  for (var i = 0; i < headers.length; i++) {
    headers[i].addEventListener("click", (function (column) {
      return function () { sortBy(column, headers[column].getAttribute("aria-sort") === "ascending"); };
    })(i));
  }
  var wanted = /^#sort=(-?)([a-z_]+)$/.exec(window.location.hash);
  if (wanted) {
    for (var j = 0; j < headers.length; j++) {
      if (headers[j].getAttribute("data-key") === wanted[2]) sortBy(j, wanted[1] === "-");
    }
  }
  table.setAttribute("data-sortable", "ready");
})();
"""

_CSP = "default-src 'none'; img-src 'self' file: data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'"


def case_row(case: Mapping[str, Any]) -> dict[str, str]:
    """One case of a report as CSV text per column (absent fields are "")."""
    volumes, stages = (case.get(key) if isinstance(case.get(key), Mapping) else {} for key in ("volumes_ml",
                                                                                                "stages"))
    review = case.get("needs_review")
    row = {
        "case_id": str(case.get("case_id", "")), "status": str(case.get("status", "")),
        "error": str(case.get("error") or ""), "seconds": _number(case.get("seconds")),
        "needs_review": "" if review is None else ("yes" if review else "no"),
        "review_reason": str(case.get("review_reason") or ""),
        "stages": "; ".join(f"{name} {_number(seconds)} s" for name, seconds in stages.items()),
        "qc_picture": str(case.get("qc_picture") or ""), "qc_thumbnail": str(case.get("qc_thumbnail") or ""),
    }
    row.update({f"{name.lower()}_ml": _number(volumes.get(name)) for name in VOLUME_NAMES})
    return {column: row[column] for column, _ in COLUMNS}


def _cases(report: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The report's case entries (anything that is not an object is left out)."""
    return [case for case in report.get("cases") or [] if isinstance(case, Mapping)]


def _spreadsheet_safe(text: str) -> str:
    """Text a spreadsheet will not run as a formula: a leading = + - @ tab or CR gets a "'" before it."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def _number(value: Any) -> str:
    """A number as short text ("" for absent or non-numeric values)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return ""
    return f"{value:.3f}".rstrip("0").rstrip(".") if isinstance(value, float) else str(value)


def write_csv(report: Mapping[str, Any], qc_dir: Path) -> Path:
    """Write ``qc_dir/cases.csv``: one row per case with the COLUMNS (RFC 4180 quoting, UTF-8).

    A text cell that a spreadsheet would run as a formula (leading ``= + - @``, tab or CR) is prefixed with "'".
    """
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=[column for column, _ in COLUMNS], lineterminator="\r\n")
    writer.writeheader()
    for case in _cases(report):
        row = case_row(case)
        writer.writerow({column: value if column in _NUMERIC else _spreadsheet_safe(value)
                         for column, value in row.items()})
    path = qc_dir / CSV_NAME
    atomic_write_text(path, buffer.getvalue())
    return path


def _plain_file(name: str, qc_dir: Path) -> str | None:
    """``name`` URL-quoted when it is a plain file existing in ``qc_dir``, else None (never a link elsewhere)."""
    if not name or name.startswith(".") or "/" in name or "\\" in name or not (qc_dir / name).is_file():
        return None
    return quote(name, safe="")


def _picture_cell(row: Mapping[str, str], qc_dir: Path) -> str:
    picture, thumbnail = _plain_file(row["qc_picture"], qc_dir), _plain_file(row["qc_thumbnail"], qc_dir)
    if picture is None and thumbnail is None:
        return "<td>—</td>" if not row["qc_picture"] else "<td>missing</td>"
    image = (f'<img src="{thumbnail}" alt="{escape(row["case_id"])}" loading="lazy">' if thumbnail
             else "full picture")
    return f'<td><a href="{picture or thumbnail}">{image}</a></td>'


def _cells(row: Mapping[str, str], qc_dir: Path) -> str:
    cells = []
    for column, _ in COLUMNS:
        if column in ("qc_picture", "qc_thumbnail"):
            continue
        value = escape(row[column])
        if column in _NUMERIC:
            cells.append(f'<td class="num" data-sort="{value}">{value or "—"}</td>')
        elif column == "stages":
            cells.append(f'<td class="stages">{"<br>".join(value.split("; "))}</td>')
        elif column == "needs_review":
            shown = '<span class="flag">review</span>' if row[column] == "yes" else value
            cells.append(f'<td data-sort="{value}">{shown}</td>')
        else:
            cells.append(f'<td class="{column}">{value}</td>')
    cells.append(_picture_cell(row, qc_dir))
    return "".join(cells)


def _table(report: Mapping[str, Any], qc_dir: Path) -> str:
    headers = []
    for column, title in COLUMNS:
        if column == "qc_thumbnail":
            continue
        kind = "number" if column in _NUMERIC else "text"
        headers.append(f'<th data-key="{column.removesuffix("_ml")}" data-type="{kind}" title="click to sort">'
                       f"{escape(title)}</th>")
    rows = []
    for case in _cases(report):
        row = case_row(case)
        status = row["status"] if row["status"] in ("failed", "interrupted", "pending") else ""
        css = status or ("review" if row["needs_review"] == "yes" else "")
        rows.append(f'<tr class="{css}">{_cells(row, qc_dir)}</tr>')
    return (f'<table id="cases"><thead><tr>{"".join(headers)}</tr></thead>\n<tbody>\n' + "\n".join(rows)
            + "\n</tbody></table>")


def _header(report: Mapping[str, Any]) -> str:
    versions = report.get("versions") or {}
    summary = report.get("summary") or {}
    fields = [("state", report.get("state")), ("started", report.get("started")), ("updated", report.get("updated")),
              ("device", report.get("device")), ("input", report.get("input")), ("output", report.get("output")),
              ("versions", ", ".join(f"{name} {value}" for name, value in versions.items())),
              ("cases", ", ".join(f"{count} {status}" for status, count in summary.items() if count))]
    items = [f"<dt>{escape(name)}</dt><dd>{escape(str(value))}</dd>" for name, value in fields if value]
    for model in report.get("models") or []:
        name = f"{model.get('name', '')} ({model.get('architecture', '')})"
        items.append(f"<dt>model</dt><dd>{escape(name)} sha256 <code>{escape(str(model.get('sha256', '')))}"
                     "</code></dd>")
    for shard in report.get("shards") or []:
        text = f"{shard.get('shard') or '?'}: {shard.get('report', '')} ({shard.get('state', '')})"
        items.append(f"<dt>shard</dt><dd>{escape(text)}</dd>")
    for warning in report.get("warnings") or []:
        items.append(f'<dt class="warn">warning</dt><dd class="warn">{escape(str(warning))}</dd>')
    return "<dl>" + "\n".join(items) + "</dl>"


def render_index(report: Mapping[str, Any], qc_dir: Path) -> str:
    """The page's HTML text (``qc_dir`` is where the pictures are looked up; links are relative to it)."""
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">\n'
            f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">\n'
            f'<meta name="viewport" content="width=device-width">\n<title>HT-CNNs batch: '
            f"{escape(str(report.get('output') or ''))}</title>\n<style>{_CSS}</style></head>\n<body>\n"
            f"<h1>HT-CNNs batch report</h1>\n{_header(report)}\n{_table(report, qc_dir)}\n"
            f"<script>{_SCRIPT}</script>\n</body></html>\n")


def write_index(report: Mapping[str, Any], qc_dir: Path) -> Path:
    """Write ``qc_dir/index.html`` for ``report`` (see the module doc) and return its path.

    Raises:
        OutputError: the file cannot be written.
    """
    path = qc_dir / INDEX_NAME
    atomic_write_text(path, render_index(report, qc_dir))
    return path
