"""The README is a front door: short, and every docs page is one link away; no link is broken."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def _links(md: Path) -> list[Path]:
    return [(md.parent / m).resolve() for m in LINK.findall(md.read_text()) if "://" not in m]


def test_readme_is_at_most_250_lines_and_links_every_docs_page():
    readme = ROOT / "README.md"
    assert len(readme.read_text().splitlines()) <= 250
    linked = set(_links(readme))
    pages = {p.resolve() for p in (ROOT / "docs").glob("*.md") if p.name != "README.md"}
    assert pages, "no docs pages"
    assert not pages - linked, (
        f"docs pages the README does not link: {sorted(p.name for p in pages - linked)}"
    )


def test_no_relative_link_is_broken():
    for md in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        broken = [str(p) for p in _links(md) if not p.exists()]
        assert not broken, f"{md.name}: broken links {broken}"


def test_readme_keeps_its_generated_results_block():
    from lib.report import README_END, README_START

    text = (ROOT / "README.md").read_text()
    assert text.count(README_START) == 1 and text.count(README_END) == 1
