"""report.html as the retention team sees it: rendered by headless Chromium (Debian's package).

Chromium writes the page's console to stderr with --enable-logging=stderr, but for ordinary pages it logs every
message at INFO (`INFO:CONSOLE:<line>] "message", source: ...`), whatever its level: console.error and
console.log look alike. The report is a static page with no scripts, so any console message from it fails the
test, and so does anything `Uncaught`. Everything else on stderr (D-Bus, GPU, sandbox noise) is ignored.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image

# `project` (the pipeline run once through `dvc repro`) comes from conftest.py
CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium")
pytestmark = [
    pytest.mark.e2e,
    # checked before `project` is built, so a machine without chromium does not run the pipeline for nothing
    pytest.mark.skipif(
        CHROMIUM is None,
        reason="chromium not found on PATH: install Debian's chromium (`make test` does so when run as root)",
    ),
]
WIDTH, HEIGHT = 1280, 2000


class _Dom(HTMLParser):
    """Summary cards, tables (each under its h2) and image sources of the dumped DOM."""

    def __init__(self) -> None:
        super().__init__()
        self.cards: list[str] = []
        self.tables: dict[str, list[list[str]]] = {}
        self.images: list[str] = []
        self._h2: list[str] | None = None
        self._section = ""
        self._card: list[str] | None = None
        self._card_depth = 0
        self._rows: list[list[str]] | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "h2":
            self._h2 = []
        elif tag == "div":
            if self._card is not None:
                self._card_depth += 1
            elif "card" in (a.get("class") or "").split():
                self._card, self._card_depth = [], 1
        elif tag == "table":
            self._rows = self.tables.setdefault(self._section, [])
        elif tag == "tr" and self._rows is not None:
            self._rows.append([])
        elif tag in ("td", "th") and self._rows:
            self._cell = [tag]
        elif tag == "img":
            self.images.append(a.get("src") or "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "h2" and self._h2 is not None:
            self._section, self._h2 = " ".join("".join(self._h2).split()), None
        elif tag == "div" and self._card is not None:
            self._card_depth -= 1
            if self._card_depth == 0:
                self.cards.append(" ".join("".join(self._card).split()))
                self._card = None
        elif tag == "table":
            self._rows = None
        elif tag in ("td", "th") and self._cell is not None and self._rows:
            kind, text = self._cell[0], " ".join("".join(self._cell[1:]).split())
            self._rows[-1].append(f"{kind}:{text}")
            self._cell = None

    def handle_data(self, data: str) -> None:
        for part in (self._h2, self._card, self._cell):
            if part is not None:
                part.append(data)


def _report(project: Path) -> Path:
    pointer = json.loads((project / "outputs" / "report.json").read_text())
    report = Path(pointer["report"])
    report = report if report.is_absolute() else project / report
    assert report.is_file(), f"report.html not found at {report}"
    return report.resolve()


def _console_problems(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]


@pytest.fixture(scope="module")
def rendered(project: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess, Path]:
    """One headless Chromium run over report.html: DOM on stdout, console on stderr, a screenshot."""
    tmp = tmp_path_factory.mktemp("browser")
    png = tmp / "report.png"
    assert CHROMIUM is not None
    args = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        # this machine's network is closed: keep Chromium from reaching out at all
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp / 'profile'}",
        "--enable-logging=stderr",
        "--v=0",
        f"--screenshot={png}",
        f"--window-size={WIDTH},{HEIGHT}",
        "--dump-dom",
        _report(project).as_uri(),
    ]
    res = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, f"chromium exited {res.returncode}:\n{res.stderr[-4000:]}"
    return res, png


def test_report_renders_without_console_errors(rendered: tuple[subprocess.CompletedProcess, Path]) -> None:
    res, _ = rendered
    problems = _console_problems(res.stderr)
    assert not problems, "console output from report.html:\n" + "\n".join(problems)


def test_report_dom_has_cards_and_the_list(rendered: tuple[subprocess.CompletedProcess, Path]) -> None:
    res, _ = rendered
    dom = _Dom()
    dom.feed(res.stdout)
    labels = " | ".join(dom.cards)
    cards = ("Users scored", "High risk", "Medium risk", "Low risk", "Value at risk", "Holdout", "Marked for contact")
    for label in cards:
        assert label in labels, f"summary card {label!r} missing; cards: {labels}"
    sections = ("Risk distribution", "Campaign", "What drives churn", "Retention KPIs", "Model card")
    for section in (*sections, "Drift and guards"):
        assert section in dom.tables, f"no {section!r} table; sections with tables: {list(dom.tables)}"
    top = [name for name in dom.tables if name.startswith("Top ") and name.endswith(" of the list")]
    assert top, f"no 'Top N of the list' table; sections with tables: {list(dom.tables)}"
    rows = [r for r in dom.tables[top[0]] if r and all(c.startswith("td:") for c in r)]
    assert len(rows) >= 10, f"{len(rows)} list rows in the report"
    assert [r[0] for r in rows[:3]] == ["td:1", "td:2", "td:3"], rows[:3]
    drift = [r for r in dom.tables["Drift and guards"] if r and r[0].startswith("td:")]
    psi = [float(r[1].removeprefix("td:")) for r in drift]
    assert len(drift) == 10 and psi == sorted(psi, reverse=True) and psi[-1] >= 0, drift[:3]
    # self-contained: images are inlined, nothing is fetched from disk or network
    assert all(src.startswith("data:image/") for src in dom.images), [s[:60] for s in dom.images]


def test_report_screenshot_is_not_blank(rendered: tuple[subprocess.CompletedProcess, Path]) -> None:
    _, png = rendered
    assert png.is_file(), "chromium wrote no screenshot"
    with Image.open(png) as im:
        img = im.convert("RGB")
    assert img.size == (WIDTH, HEIGHT)
    colours = img.getcolors(maxcolors=WIDTH * HEIGHT)
    assert len(colours) > 16, f"only {len(colours)} distinct colours: the page looks blank"
    white = sum(n for n, rgb in colours if min(rgb) >= 250)
    non_white = 1 - white / (WIDTH * HEIGHT)
    assert non_white > 0.02, f"only {non_white:.1%} of the screenshot is not white"
