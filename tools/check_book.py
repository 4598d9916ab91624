#!/usr/bin/env python
"""Check the book as a reader gets it.

``python tools/check_book.py sources``
    Fast, no build needed: every chapter's Colab install cell installs the package from the
    repository named in ``_config.yml`` (the one place the URL is written; ``--fix`` rewrites the
    cells after it changes; then ``make pairs``), the install cell fits the page unwrapped, and
    chapters are referred to by ``{doc}`` links, not as file-name literals.

``python tools/check_book.py browser [HTML_DIR]``
    After ``jupyter-book build book/``: serves the HTML on a loopback port and opens every page
    in headless Chromium with JavaScript on and every other host unreachable (the book must work
    offline). From the rendered DOM it checks that the mathematics is typeset by MathJax (no raw
    ``\\(`` or ``\\[`` left, no MathJax errors), every image loaded with a non-zero size, every
    internal link and anchor resolves, each chapter has its Colab launch button (pointing at a
    notebook that exists in the repository) and its download buttons, no code cell is cut off
    at the page's width, chapter text has no unresolved cross-reference, no page (nor the
    downloadable notebooks in ``_sources/``) shows a path of the build machine, and no progress
    bar was printed as many lines. It writes a full-page screenshot of each page to
    ``HTML_DIR/_screenshots/`` (tiles for long pages: NAME.png, NAME-2.png, ...) and exits 1
    naming each page and what is wrong; ``--page NAME`` checks only some pages.

Chromium and its driver come from the system (Debian: ``apt-get install chromium
chromium-driver``), found on PATH or through ``$CHROMIUM`` and ``$CHROMEDRIVER``; Selenium only
drives them (it is never allowed to download a browser).
"""
from __future__ import annotations

import argparse
import base64
import functools
import html.parser
import http.server
import os
import re
import shutil
import sys
import sysconfig
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

ROOT = Path(__file__).resolve().parents[1]
CHAPTER = re.compile(r"^\d\d_[\w-]+$")
#: Widest code line (characters) that the theme shows unwrapped in a 1280-px window. Longer lines
#: wrap (book/_static/code-wrap.css); the install cell, the first thing a Colab user reads, fits.
MAX_CODE_COLUMNS = 77
#: Viewport of the browser test and its screenshots.
WINDOW = (1280, 900)
#: Screenshots of taller pages are split into tiles (Chromium cannot capture arbitrarily tall images).
MAX_SHOT_HEIGHT = 16000


# ======================================================================================
# sources: install cells, code width, chapter references
# ======================================================================================
def repository_url(root: Path = ROOT) -> str:
    """``repository.url`` of the book's configuration: where Colab installs the package from."""
    import yaml  # jupyter-book's dependency

    config = root / "_config.yml"
    url = (yaml.safe_load(config.read_text()).get("repository") or {}).get("url")
    if not url:
        raise SystemExit(f"{config}: no repository.url; the chapters' install cells need it")
    return str(url).rstrip("/")


INSTALL_URL = re.compile(r'^(\s*REPO = ")([^"]*)(")', re.M)


def install_cell(url: str) -> str:
    """The first code cell of every chapter: installs mmvae_lite in Colab, nothing elsewhere."""
    return ('# In Colab, install mmvae_lite first (this does nothing elsewhere).\n'
            'import sys\n'
            'if "google.colab" in sys.modules:\n'
            f'    REPO = "{url}"\n'
            '    %pip install -q "mmvae_lite[vision] @ git+{REPO}"')


def chapters(root: Path = ROOT) -> list[Path]:
    return sorted(p for p in (root / "book").glob("*.md") if CHAPTER.match(p.stem))


def _code_cells(text: str) -> list[tuple[int, str]]:
    """(first line number, source) of each ``{code-cell}`` of a MyST notebook."""
    cells, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        if lines[i].startswith("```{code-cell}"):
            start, i = i + 1, i + 1
            while i < len(lines) and lines[i] != "```":
                i += 1
            cells.append((start + 1, "\n".join(lines[start:i])))
        i += 1
    return cells


def check_sources(fix: bool = False, root: Path = ROOT) -> list[str]:
    url, problems = repository_url(root), []
    stems = {p.stem for p in chapters(root)}
    for path in chapters(root):
        text = path.read_text()
        cells = _code_cells(text)
        first = cells[0][1] if cells else ""
        found = INSTALL_URL.search(first)
        if not found or "google.colab" not in first or "git+{REPO}" not in first:
            problems.append(f"{path.name}: the first code cell is not the Colab install cell; expected:\n"
                            + install_cell(url))
        elif found.group(2) != url:
            if fix:
                path.write_text(text.replace(found.group(0), found.group(1) + url + found.group(3), 1))
            else:
                problems.append(f"{path.name}: the install cell installs from {found.group(2)}, but "
                                f"_config.yml's repository.url is {url} (fix: tools/check_book.py sources --fix; then make pairs)")
        for j, line in enumerate(first.splitlines()):
            if len(line) > MAX_CODE_COLUMNS:
                problems.append(f"{path.name}:{cells[0][0] + j}: install-cell line of {len(line)} "
                                f"characters (at most {MAX_CODE_COLUMNS} fit the page unwrapped)")
        prose = re.sub(r"```.*?```", "", text, flags=re.S)
        for m in re.finditer(r"`(\d\d_[\w-]+)(?:\.md|\.ipynb)?`", prose):
            if m.group(1) in stems and not prose[max(0, m.start() - 5):m.start()].endswith("{doc}"):
                problems.append(f"{path.name}: chapter reference `{m.group(1)}` is a literal; "
                                f"write {{doc}}`{m.group(1)}`")
    return problems


# ======================================================================================
# browser
# ======================================================================================
class _Ids(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list) -> None:
        for key, value in attrs:
            if key == "id" or (tag == "a" and key == "name"):
                self.ids.add(value or "")


@functools.lru_cache(maxsize=None)
def page_ids(path: Path) -> frozenset:
    parser = _Ids()
    parser.feed(path.read_text(errors="replace"))
    return frozenset(parser.ids)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # one line per request would drown the report
        pass


def serve(directory: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    """Serve ``directory`` on a free loopback port (file:// URLs block MathJax's font loading)."""
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/"


def _which(env: str, names: tuple[str, ...]) -> str:
    path = os.environ.get(env) or next((p for n in names if (p := shutil.which(n))), None)
    if not path:
        raise SystemExit(f"no {names[0]} found (looked for ${env}, then {', '.join(names)} on PATH); "
                         "on Debian/Ubuntu: apt-get install -y chromium chromium-driver")
    return path


def start_browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = _which("CHROMIUM", ("chromium", "chromium-browser", "google-chrome"))
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--hide-scrollbars", "--force-device-scale-factor=1", "--no-proxy-server", f"--window-size={WINDOW[0]},{WINDOW[1]}",
                # offline: every host but the loopback server is unresolvable
                "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "SEVERE"})
    # An explicit driver path: Selenium Manager is never asked to download a driver or a browser.
    service = Service(executable_path=_which("CHROMEDRIVER", ("chromedriver",)))
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_script_timeout(120)
    driver.set_page_load_timeout(120)
    return driver


# Runs in the page once it has loaded: waits for MathJax, scrolls through the page so that lazy
# images load, then reports what the checks need.
INSPECT_JS = r"""
const done = arguments[arguments.length - 1];
const sleep = ms => new Promise(r => setTimeout(r, ms));
(async () => { try {
  for (let i = 0; i < 100 && document.querySelector('.math') && !(window.MathJax && MathJax.startup
       && MathJax.startup.promise); i++) await sleep(100);
  let mathjax = 'absent';
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
    try { await MathJax.startup.promise; mathjax = 'ok'; } catch (e) { mathjax = 'failed: ' + e; }
  }
  const step = window.innerHeight;
  for (let y = 0; y < document.documentElement.scrollHeight; y += step) { window.scrollTo(0, y); await sleep(20); }
  window.scrollTo(0, 0);
  const t0 = Date.now();
  while ([...document.images].some(im => !im.complete) && Date.now() - t0 < 10000) await sleep(100);
  const skip = 'PRE, CODE, SCRIPT, STYLE, TEXTAREA, NOSCRIPT, MJX-CONTAINER';
  const raw = [];
  const walker = document.createTreeWalker(document.querySelector('main') || document.body, NodeFilter.SHOW_TEXT);
  while (walker.nextNode()) {
    const n = walker.currentNode;
    if (/\\\(|\\\[/.test(n.nodeValue) && !n.parentElement.closest(skip)) raw.push(n.nodeValue.trim().slice(0, 80));
  }
  const text = el => (el.innerText || el.textContent || '');
  const wide = sel => [...document.querySelectorAll(sel)].filter(p => p.scrollWidth > p.clientWidth + 1)
      .map(p => text(p).split('\n').reduce((a, b) => b.length > a.length ? b : a, '').slice(0, 100));
  done({
    mathjax,
    math: document.querySelectorAll('.math').length,
    untypeset: [...document.querySelectorAll('.math')].filter(m => !m.querySelector('mjx-container'))
        .map(m => text(m).trim().slice(0, 80)),
    typeset: document.querySelectorAll('mjx-container').length,
    merrors: [...document.querySelectorAll('mjx-merror')].map(e => (e.getAttribute('data-mjx-error') || text(e)).slice(0, 100)),
    raw,
    images: [...document.images].map(im => ({src: (im.getAttribute('src') || im.currentSrc || '').slice(0, 100), complete: im.complete,
        w: im.naturalWidth, h: im.naturalHeight})),
    links: [...document.querySelectorAll('a[href]')].map(a => ({raw: a.getAttribute('href'), url: a.href})),
    ids: [...document.querySelectorAll('[id]')].map(e => e.id),
    colab: [...document.querySelectorAll('a[href^="https://colab.research.google.com/"]')].map(a => a.href),
    downloads: [...document.querySelectorAll('a.btn-download-notebook-button, a.btn-download-source-button')]
        .map(a => a.getAttribute('href')),
    unresolved: [...document.querySelectorAll('main code.xref, main span.xref')].filter(c => !c.closest('a'))
        .map(c => text(c).slice(0, 80)),
    wide_code: wide('div.cell_input pre, div.highlight:not(.cell_output div.highlight) pre'),
    wide_output: wide('div.cell_output pre'),
    outputs: [...document.querySelectorAll('div.cell_output pre')].map(p => p.textContent),
    text: document.body.textContent,   // hidden parts too (collapsed outputs ship with the page)
    height: document.documentElement.scrollHeight,
    resources: performance.getEntriesByType('resource').map(r => r.name)
        .filter(u => !u.startsWith(location.origin) && !u.startsWith('data:')),
  });
  } catch (e) { done({script_error: String(e && e.stack || e)}); }
})();
"""

PROGRESS_LINE = re.compile(r"\d+%\|.*\|.*\[|\d+/\d+ \[\d\d:\d\d")


@dataclass
class PageReport:
    page: str
    problems: list = field(default_factory=list)
    notes: list = field(default_factory=list)
    seconds: float = 0.0


def machine_paths() -> list[str]:
    """Paths of this machine that must not show in the book (the longest first)."""
    paths = {str(ROOT.parent), str(Path.home()), tempfile.gettempdir(), sys.prefix,
             sysconfig.get_paths()["purelib"], os.environ.get("MMVAE_LITE_DATA", "")}
    paths |= {str(Path(p).resolve()) for p in paths if p}
    # absolute paths only: a relative $MMVAE_LITE_DATA ("data") would match ordinary words
    return sorted((p for p in paths if len(p) > 1 and os.path.isabs(p)), key=len, reverse=True)


def find_machine_path(text: str) -> str | None:
    """The first path of this machine in ``text``, with some context; None if there is none."""
    for path in machine_paths():
        if m := re.search(r"(?:(?<=file://)|(?<![\w./~-]))" + re.escape(path) + r"(?![\w-]|\.\w)", text):
            return text[max(0, m.start() - 30):m.end() + 40]
    return None


_REFRESH = re.compile(r"""<meta[^>]*http-equiv=["']?refresh["']?[^>]*content=["'][^"']*url=([^"'>\s]+)""", re.I)


def wait_for_redirect(driver, html_dir: Path, rel: str, timeout: float = 10.0) -> str | None:
    """For a page that only redirects (``<meta http-equiv="Refresh" content="0; url=...">``, as the
    book's index.html does): wait until the browser has landed on the target, so that the inspection
    never runs in a document being replaced (that gave "parameter 1 is not of type 'Node'" now and
    then). Returns the target, or None for an ordinary page."""
    m = _REFRESH.search((html_dir / rel).read_text(errors="replace")[:4096])
    if not m:
        return None
    target = m.group(1)
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        if driver.current_url.split("#")[0].endswith("/" + target) and \
                driver.execute_script("return document.readyState") == "complete":
            break
        time.sleep(0.05)
    return target


def inspect_page(driver, base: str, html_dir: Path, rel: str, shots: Path) -> PageReport:
    report, stem, t0 = PageReport(rel), Path(rel).stem, time.perf_counter()
    driver.get(base + rel)
    target = wait_for_redirect(driver, html_dir, rel)
    if target is not None:
        if not (html_dir / Path(rel).parent / target).is_file():
            report.problems.append(f"redirects to {target}, which is not in the build")
            return report
        report.notes.append(f"redirects to {target} (inspected there)")
    info = driver.execute_async_script(INSPECT_JS)
    console = driver.get_log("browser")   # read now, so that this page's messages stay with this page
    if "script_error" in info:
        report.problems.append(f"the page inspection failed in the browser: {info['script_error'][:300]}")
        return report
    # JavaScript errors the page raised (the console's SEVERE entries; failed loads show as broken
    # images or links below)
    for entry in console:
        msg = str(entry.get("message", ""))
        if "Uncaught" in msg or "SyntaxError" in msg or "TypeError" in msg or "ReferenceError" in msg:
            report.problems.append(f"JavaScript error: {msg[:200]}")
        else:
            report.notes.append(f"browser console: {msg[:200]}")
    # math
    if info["math"] and info["mathjax"] != "ok":
        report.problems.append(f"MathJax did not run ({info['mathjax']}): {info['math']} formulas left as LaTeX")
    for tex in info["untypeset"][:5]:
        report.problems.append(f"formula not typeset: {tex}")
    for err in info["merrors"][:5]:
        report.problems.append(f"MathJax error: {err}")
    for raw in info["raw"][:5]:
        report.problems.append(f"raw LaTeX delimiters in the text: {raw!r}")
    # images
    for im in info["images"]:
        if not im["complete"] or not im["w"] or not im["h"]:
            report.problems.append(f"image not loaded ({im['w']}x{im['h']}): {im['src']}")
    # internal links
    dom_ids = set(info["ids"])
    for link in info["links"]:
        parts = urlsplit(link["url"])
        if not link["url"].startswith(base) or link["raw"] in ("", "#") or link["raw"].startswith("javascript:"):
            continue
        path = unquote(parts.path[len(urlsplit(base).path):]) or "index.html"
        target = html_dir / path
        if target.is_dir():
            target = target / "index.html"
        if not target.is_file():
            report.problems.append(f"broken link {link['raw']}: {path} does not exist")
            continue
        anchor = unquote(parts.fragment)
        if anchor and target.suffix == ".html":
            ids = dom_ids if target.resolve() == (html_dir / rel).resolve() else page_ids(target.resolve())
            if anchor not in ids and anchor not in page_ids(target.resolve()):
                report.problems.append(f"broken link {link['raw']}: no #{anchor} in {path}")
    # launch and download buttons
    if CHAPTER.match(stem):
        if not info["colab"]:
            report.problems.append("no 'Launch on Colab' button")
        for url in info["colab"]:
            m = re.match(r"https://colab\.research\.google\.com/github/[^/]+/[^/]+/blob/[^/]+/(.+\.ipynb)$", url)
            if not m or not (ROOT / m.group(1)).is_file():
                report.problems.append(f"the Colab button opens {url}, which is not a notebook of this repository")
        kinds = {Path(h).suffix for h in info["downloads"]}
        for kind in (".ipynb", ".md"):
            if kind not in kinds:
                report.problems.append(f"no download button for the {kind} file")
    # references that Sphinx could not resolve render as code without a link
    # (on the API page, docstrings may name torch's or private objects, which are not documented here)
    for ref in info["unresolved"][:10]:
        (report.notes if stem == "api" else report.problems).append(f"unresolved cross-reference (no link): {ref!r}")
    # code width
    for line in info["wide_code"]:
        report.problems.append(f"code cut off at the page's width (wrap it): {line!r}")
    for line in info["wide_output"]:
        report.notes.append(f"output wider than the page (scrolls): {line!r}")
    # machine paths and progress bars in what the page shows
    if where := find_machine_path(info["text"]):
        report.problems.append(f"shows a path of the build machine: ...{where!r}")
    for out in info["outputs"]:
        bars = [line for line in out.splitlines() if PROGRESS_LINE.search(line)]
        if len(bars) > 3:
            report.problems.append(f"a progress bar printed as {len(bars)} lines: {bars[0][:80]!r}")
    if info["resources"]:
        report.notes.append("asked other hosts for (unreachable here): " + ", ".join(sorted(set(info["resources"]))[:5]))
    screenshot(driver, info["height"], shots / stem)
    report.seconds = time.perf_counter() - t0
    return report


def screenshot(driver, height: int, stem: Path) -> None:
    """The whole page as PNG tiles of at most MAX_SHOT_HEIGHT pixels (STEM.png, STEM-2.png, ...):
    the viewport is made as tall as a tile, so the page is laid out as in a 1280-px-wide window."""
    for i, y in enumerate(range(0, height, MAX_SHOT_HEIGHT)):
        tile = min(MAX_SHOT_HEIGHT, height - y)
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                               {"width": WINDOW[0], "height": tile, "deviceScaleFactor": 1, "mobile": False})
        driver.execute_script("window.scrollTo(0, arguments[0]);", y)
        time.sleep(0.3)
        shot = driver.execute_cdp_cmd("Page.captureScreenshot", {"format": "png"})
        path = stem.with_name(stem.name + (f"-{i + 1}" if i else "") + ".png")
        path.write_bytes(base64.b64decode(shot["data"]))
    driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def check_sources_files(html_dir: Path) -> list[str]:
    """The downloadable notebooks (``_sources/``) must not carry the machine's paths either."""
    problems = []
    for path in sorted((html_dir / "_sources").glob("*")):
        if where := find_machine_path(path.read_text(errors="replace")):
            problems.append(f"_sources/{path.name}: contains a path of the build machine: ...{where!r}")
    return problems


def check_browser(html_dir: Path, only: list[str]) -> int:
    t0 = time.perf_counter()
    if not (html_dir / "_static").is_dir():
        raise SystemExit(f"{html_dir}: no built book here (run `jupyter-book build book/` first)")
    pages = sorted(p.name for p in html_dir.glob("*.html"))
    if only:
        unknown = [o for o in only if not any(Path(p).stem == o or p == o for p in pages)]
        if unknown:
            raise SystemExit(f"{html_dir}: no page named {', '.join(unknown)} (pages: {', '.join(pages)})")
        pages = [p for p in pages if Path(p).stem in only or p in only]
    if not pages:
        raise SystemExit(f"{html_dir}: a built book without pages")
    shots = html_dir / "_screenshots"
    shots.mkdir(exist_ok=True)
    server, base = serve(html_dir)
    driver, failed = start_browser(), 0
    try:
        for rel in pages:
            try:
                rep = inspect_page(driver, base, html_dir, rel, shots)
            except Exception as e:  # noqa: BLE001 - a page that hangs or crashes the browser is a finding
                rep = PageReport(rel, [f"the browser could not check it: {type(e).__name__}: "
                                       f"{str(e).splitlines()[0][:200]}"])
                driver.quit()
                driver = start_browser()
            status = "FAIL" if rep.problems else "ok"
            print(f"{status:4} {rep.page} ({rep.seconds:.1f} s)", flush=True)
            for p in rep.problems:
                print(f"     - {p}")
            for n in rep.notes:
                print(f"     . {n}")
            failed += bool(rep.problems)
    finally:
        driver.quit()
        server.shutdown()
    extra = check_sources_files(html_dir)
    for p in extra:
        print(f"FAIL {p}")
    print(f"{len(pages)} pages in {time.perf_counter() - t0:.0f} s, offline; screenshots in "
          f"{shots.relative_to(html_dir.parent) if shots.is_relative_to(html_dir.parent) else shots}; "
          f"{failed} page(s) with problems")
    return 1 if failed or extra else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    src = sub.add_parser("sources", help="install cells, code width and chapter references (no build needed)")
    src.add_argument("--fix", action="store_true", help="rewrite the install cells' URL from _config.yml (then: make pairs)")
    br = sub.add_parser("browser", help="open the built book in headless Chromium, offline")
    br.add_argument("html_dir", nargs="?", type=Path, default=ROOT / "_build" / "html")
    br.add_argument("--page", action="append", default=[], help="check only this page (repeatable)")
    args = parser.parse_args(argv)
    if args.command == "sources":
        problems = check_sources(args.fix)
        for p in problems:
            print(p)
        print(f"{len(chapters())} chapters: {len(problems)} problem(s)")
        return 1 if problems else 0
    return check_browser(args.html_dir.resolve(), args.page)


if __name__ == "__main__":
    sys.exit(main())
