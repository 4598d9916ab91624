"""The book's checks that need no build: tools/check_book.py (sources) and the build report's parser.

The browser test itself (tools/check_book.py browser) runs after the book build (`make browser`)."""
import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytest.importorskip("yaml")


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


check_book = _load("check_book", ROOT / "tools" / "check_book.py")


def _book(tmp_path: Path, url: str, cell: str, prose: str = "Text.") -> Path:
    (tmp_path / "book").mkdir()
    (tmp_path / "_config.yml").write_text(f"repository:\n  url: {url}\n")
    (tmp_path / "book" / "01_a.md").write_text(f"# A\n\n{prose}\n\n```{{code-cell}} ipython3\n{cell}\n```\n")
    good = check_book.install_cell(url)
    (tmp_path / "book" / "02_b.md").write_text(f"# B\n\n```{{code-cell}} ipython3\n{good}\n```\n")
    return tmp_path


def test_install_cell_matches_config_and_fix_rewrites_it(tmp_path):
    root = _book(tmp_path, "https://example.org/new", check_book.install_cell("https://example.org/old"))
    problems = check_book.check_sources(root=root)
    assert len(problems) == 1 and "https://example.org/old" in problems[0] and "--fix" in problems[0]
    assert check_book.check_sources(fix=True, root=root) == []
    assert check_book.check_sources(root=root) == []
    assert 'REPO = "https://example.org/new"' in (root / "book" / "01_a.md").read_text()


def test_missing_install_cell_and_literal_chapter_reference_are_reported(tmp_path):
    root = _book(tmp_path, "https://example.org/r", "import torch", prose="As `02_b.md` shows.")
    problems = check_book.check_sources(root=root)
    assert any("install cell" in p for p in problems)
    assert any("{doc}`02_b`" in p for p in problems)


def test_doc_links_pass(tmp_path):
    root = _book(tmp_path, "https://example.org/r", check_book.install_cell("https://example.org/r"),
                 prose="As {doc}`02_b` shows.")
    assert check_book.check_sources(root=root) == []


def test_repository_chapters_pass_the_source_checks():
    assert check_book.check_sources() == []


def test_build_report_parses_the_printed_header_and_data_banners():
    pytest.importorskip("myst_nb")
    report = _load("build_report", ROOT / "book" / "_ext" / "build_report.py")
    info = report.parse_session([
        "[mmvae_lite] preset: quick (MMVAE_LITE_PRESET=quick|paper) | device: cpu",
        "[mmvae_lite] data: $MMVAE_LITE_DATA (…/data) | torch 2.4.0",
        "[mmvae_lite] MNIST train: real, 60000 images (verified files in …)",
        "[mmvae_lite] SVHN train: stand-in house-number digits, 73257 images (...)",
        "[mmvae_lite] MNIST train: real, 60000 images (again)",
    ])
    assert info["preset"] == "quick" and info["device"] == "cpu" and info["torch"] == "2.4.0"
    assert info["data"] == "$MMVAE_LITE_DATA (…/data)"
    assert info["sources"] == ["MNIST train: real", "SVHN train: stand-in"]


def test_a_redirect_page_is_inspected_only_once_the_browser_has_landed(tmp_path):
    """index.html only redirects (meta refresh): the browser check waits for the landing page
    instead of inspecting a document that is being replaced; an ordinary page does not wait."""
    (tmp_path / "index.html").write_text('<meta http-equiv="Refresh" content="0; url=intro.html" />')
    (tmp_path / "intro.html").write_text("<html><body>hi</body></html>")

    class Driver:   # lands on the target after three polls
        polls = 0

        @property
        def current_url(self):
            self.polls += 1
            return "http://127.0.0.1:1/" + ("intro.html" if self.polls > 3 else "index.html")

        def execute_script(self, js):
            return "complete"

    d = Driver()
    assert check_book.wait_for_redirect(d, tmp_path, "index.html", timeout=5) == "intro.html"
    assert d.polls == 4
    assert check_book.wait_for_redirect(Driver(), tmp_path, "intro.html") is None
