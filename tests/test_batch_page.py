"""batch_page.py: index.html and cases.csv from a report, parsed back, and rendered by a real headless Chromium."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from matplotlib.image import imread

from conftest import LPS_AFFINE, REAL_CASE
from htcnns.inference.batch_page import COLUMNS, write_csv, write_index
from htcnns.inference.qc import load_qc_inputs, save_thumbnail, write_case_qc

EVIL_ID = "<script>alert('id')</script>"
EVIL_ERROR = "<script>alert('id')</script>: cannot read t1c & <b>flair</b> (\"bad\"); re-export the file."


def report(cases: list[dict[str, Any]]) -> dict[str, Any]:
    """A report as report.py writes it (format 1), for ``cases``."""
    return {"format": "htcnns-report/1", "state": "finished", "started": "2026-12-02T10:00:00+00:00",
            "updated": "2026-12-02T10:05:00+00:00", "input": "/data/in", "output": "/data/out",
            "versions": {"htcnns": "0.1.0", "python": "3.11.2", "torch": "2.13.0+cpu", "cuda": None},
            "device": "cpu", "settings": {},
            "models": [{"name": "nnunet", "architecture": "nnunet", "sha256": "ab" * 32},
                       {"name": "<transbts>", "architecture": "transbts", "sha256": "cd" * 32}],
            "summary": {"ok": 2, "skipped": 0, "failed": 1, "pending": 1, "interrupted": 0}, "cases": cases}


def small_report(qc_dir: Path) -> dict[str, Any]:
    """Four cases: two ok with pictures (one flagged for review), a failed one with an evil id, a pending one."""
    x, y, z = np.meshgrid(*(np.linspace(-1, 1, n) for n in (32, 36, 24)), indexing="ij")
    radius = np.sqrt(x**2 + y**2 + z**2)
    image = np.where(radius < 0.9, 1.2 - radius, 0).astype(np.float32)  # a synthetic head, brighter inside
    labels = np.where(np.hypot(x - 0.3, y + 0.2) < 0.3, 2, 0).astype(np.uint8)
    labels[np.hypot(x - 0.3, y + 0.2) < 0.12] = 1
    save_thumbnail(image, labels, LPS_AFFINE, qc_dir / "A-thumb.png", size_px=60)
    (qc_dir / "A.png").write_bytes((qc_dir / "A-thumb.png").read_bytes())
    return report([
        {"case_id": "A", "status": "ok", "error": "", "seconds": 12.5, "output": "A.nii.gz", "note": "",
         "volumes_ml": {"NCR": 1.0, "ED": 20.25, "ET": 3.0, "TC": 4.0, "WT": 24.25}, "qc_picture": "A.png",
         "qc_thumbnail": "A-thumb.png", "needs_review": False, "stages": {"read": 1.5, "predict": 10.0}},
        {"case_id": "B&C", "status": "ok", "error": "", "seconds": 3.0, "output": "B&C.nii.gz", "note": "",
         "volumes_ml": {"NCR": 0.0, "ED": 0.0, "ET": 0.0, "TC": 0.0, "WT": 0.0}, "qc_picture": "gone.png",
         "needs_review": True, "review_reason": "no tumour segmented"},
        {"case_id": EVIL_ID, "status": "failed", "error": EVIL_ERROR, "seconds": 0.2, "output": None, "note": ""},
        {"case_id": "=HYPERLINK(\"x\")", "status": "pending", "error": "", "seconds": 0.0, "output": None},
    ])


class Page(HTMLParser):
    """The table rows (cell texts), the links, images and script elements of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self.headers: list[str] = []
        self.links: list[str] = []
        self.images: list[str] = []
        self.scripts = 0
        self.sortable = ""
        self._in_body = self._in_cell = self._in_header = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "table":
            self.sortable = attributes.get("data-sortable") or ""
        self._in_body = self._in_body or tag == "tbody"
        if tag == "tr" and self._in_body:
            self.rows.append([])
        if tag == "td" and self._in_body:
            self.rows[-1].append("")
            self._in_cell = True
        if tag == "th":
            self.headers.append("")
            self._in_header = True
        self.scripts += tag == "script"
        if tag == "a":
            self.links.append(attributes["href"] or "")
        if tag == "img":
            self.images.append(attributes["src"] or "")

    def handle_endtag(self, tag: str) -> None:
        self._in_cell = self._in_cell and tag != "td"
        self._in_header = self._in_header and tag != "th"
        self._in_body = self._in_body and tag != "tbody"

    def handle_data(self, data: str) -> None:
        if self._in_cell:
            self.rows[-1][-1] += data
        elif self._in_header:
            self.headers[-1] += data


def parse(text: str) -> Page:
    page = Page()
    page.feed(text)
    return page


def test_index_and_csv_from_a_report(tmp_path: Path):
    data = small_report(tmp_path)
    index, table = write_index(data, tmp_path), write_csv(data, tmp_path)
    assert (index.name, table.name) == ("index.html", "cases.csv")
    text = index.read_text(encoding="utf-8")
    page = parse(text)
    assert page.scripts == 1 and "<script>alert" not in text and "&lt;transbts&gt;" in text
    assert "http://" not in text and "https://" not in text  # nothing fetched from the network
    assert len(page.headers) == len(COLUMNS) - 1 and page.headers[0] == "case"
    assert [row[0] for row in page.rows] == ["A", "B&C", EVIL_ID, "=HYPERLINK(\"x\")"]
    assert all(len(row) == len(page.headers) for row in page.rows)
    assert page.rows[2][1:3] == ["failed", EVIL_ERROR]
    assert page.rows[0][4:9] == ["1", "20.25", "3", "4", "24.25"]
    assert page.rows[3][4:9] == ["—"] * 5  # no volumes
    assert page.rows[1][9:11] == ["review", "no tumour segmented"] and page.rows[1][-1] == "missing"
    assert page.rows[0][11] == "read 1.5 spredict 10 s" and "read 1.5 s<br>predict 10 s" in text
    assert page.links == ["A.png"] and page.images == ["A-thumb.png"]
    assert "ab" * 32 in text and "cpu" in text and "2026-12-02T10:00:00+00:00" in text

    with table.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["case_id"] for row in rows] == ["A", "B&C", EVIL_ID, "'=HYPERLINK(\"x\")"]
    assert rows[0]["wt_ml"] == "24.25" and rows[0]["qc_thumbnail"] == "A-thumb.png" and rows[0]["seconds"] == "12.5"
    assert rows[2]["error"] == EVIL_ERROR and rows[2]["wt_ml"] == "" and rows[2]["needs_review"] == ""
    assert rows[1]["needs_review"] == "yes" and list(rows[0]) == [column for column, _ in COLUMNS]
    assert not list(tmp_path.glob(".htcnns-*"))


def test_page_of_an_empty_or_sparse_report(tmp_path: Path):
    page = parse(write_index({"cases": [{"case_id": "x"}]}, tmp_path).read_text(encoding="utf-8"))
    assert page.rows[0][0] == "x" and page.rows[0][-1] == "—"
    with write_csv({}, tmp_path).open(newline="") as handle:
        assert list(csv.reader(handle)) == [[column for column, _ in COLUMNS]]


def chromium() -> str | None:
    return next((found for name in ("chromium", "chromium-browser", "google-chrome") if (found := shutil.which(name))),
                None)


def run_chromium(tmp_path: Path, *arguments: str) -> str:
    """Run headless Chromium with a private profile; returns its stdout."""
    profile = tmp_path / "profile"
    command = [chromium() or "chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
               "--no-first-run", "--disable-extensions", f"--user-data-dir={profile}", *arguments]
    environment = {**os.environ, "HOME": str(tmp_path)}
    done = subprocess.run(command, capture_output=True, text=True, timeout=90, env=environment, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def real_page(qc_dir: Path) -> Path:
    """The page of a batch whose first case is the real GLI-00001 with its QC picture (reference label map)."""
    t1c, flair, labels, affine = load_qc_inputs(REAL_CASE / "BraTS-GLI-00001-000-t1c.nii.gz",
                                                REAL_CASE / "BraTS-GLI-00001-000-t2f.nii.gz",
                                                REAL_CASE / "seg-BraTS23_1.nii.gz")
    qc = write_case_qc("BraTS-GLI-00001-000", t1c, flair, labels, affine, qc_dir)
    data = small_report(qc_dir)
    data["cases"].insert(0, {"case_id": qc.case_id, "status": "ok", "error": "", "seconds": 113.2,
                             "output": "BraTS-GLI-00001-000.nii.gz", "note": "", **qc.to_report(),
                             "needs_review": False, "stages": {"read": 0.4, "predict": 110.1, "qc": qc.seconds}})
    data["summary"]["ok"] = 3
    return write_index(data, qc_dir)


@pytest.mark.skipif(chromium() is None, reason="no chromium, chromium-browser or google-chrome on PATH "
                    "(Debian: apt-get install chromium)")
@pytest.mark.skipif(not (REAL_CASE / "seg-BraTS23_1.nii.gz").exists(), reason="real case not in ../shared/data")
def test_page_in_headless_chromium(tmp_path: Path):
    index = real_page(tmp_path / "qc")
    dom = run_chromium(tmp_path, "--dump-dom", f"{index.as_uri()}#sort=-wt")
    page = parse(dom)
    assert page.sortable == "ready"  # the inline script ran
    assert len(page.rows) == 5 and page.scripts == 1
    # sorted by WT, largest first, by the page's own script; cases without volumes last
    assert [row[0] for row in page.rows][:3] == ["BraTS-GLI-00001-000", "A", "B&C"]
    assert 'aria-sort="descending"' in dom and EVIL_ID in [row[0] for row in page.rows]
    screenshot = tmp_path / "screenshot.png"
    run_chromium(tmp_path, f"--screenshot={screenshot}", "--window-size=1200,800", "--hide-scrollbars",
                 "--virtual-time-budget=5000", index.as_uri())
    pixels = imread(screenshot)[..., :3]
    assert pixels.shape[:2] == (800, 1200) and pixels.std() > 0.05 and screenshot.stat().st_size > 20_000
    dark = (pixels.max(axis=2) < 0.15).mean()  # the thumbnails are mostly black, the page and img boxes light
    assert dark > 0.01, "the thumbnails did not load"
