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


def _between(text: str, tag: str) -> str:
    start, end = f"<!-- {tag} -->", f"<!-- /{tag} -->"
    assert text.count(start) == 1 and text.count(end) == 1, f"docs/simulator.md lost its {tag} markers"
    return text.split(start)[1].split(end)[0].strip()


def test_simulator_doc_carries_the_codes_variation_table_and_calibration():
    """The table of what varies is the code's (scene.variation_table at the default), and the
    calibration table is the committed measurement: `python -m lib.acquire.scene` rewrites both."""
    import json

    from lib.acquire import scene

    text = (ROOT / "docs" / "simulator.md").read_text()
    assert _between(text, "variation-table") == scene.variation_markdown()
    cal = json.loads(scene.CALIBRATION_FILE.read_text())
    assert _between(text, "calibration-table") == scene.calibration_markdown(cal)
