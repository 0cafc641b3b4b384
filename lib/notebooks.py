"""Run one notebook with papermill and render the executed copy to HTML (with code, and a no-code report).

Executed notebooks are build artifacts: they go to ``runs/<profile>/`` (ignored by git), never back
into ``notebooks/``. The grid and the workbook both run notebooks through here.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

from lib.config import REPO_ROOT
from lib.fileio import write_text

NOTEBOOK_DIR = REPO_ROOT / "notebooks"


_NUMBERED = re.compile(r"^(\d\d)_[\w-]+\.ipynb$")


def list_notebooks(notebook_dir: Path = NOTEBOOK_DIR, only: list[str] | None = None) -> list[Path]:
    """The numbered notebooks in order; ``only`` filters by number prefix (e.g. ['00', '01'])."""
    books = sorted(p for p in Path(notebook_dir).glob("*.ipynb") if _NUMBERED.match(p.name))
    if only:
        wanted = {o.zfill(2) for o in only}
        missing = wanted - {p.name[:2] for p in books}
        if missing:
            raise ValueError(f"no notebook numbered {sorted(missing)} in {notebook_dir}")
        books = [p for p in books if p.name[:2] in wanted]
    return books


#: the line on top of every report page: this is not the paper's setup (the index's section says how)
REPORT_BANNER = (
    "<div style='background:#fff6d6;border:1px solid #e6d08a;padding:.4rem .8rem;margin:.5rem 0;"
    "font-family:system-ui,sans-serif;font-size:.9rem'>A run of the simulated sealant line with this "
    "profile's models and budgets, not the paper's setup: <a href='index.html#differences'>how this run "
    "differs from the paper</a> · <a href='index.html#summary'>summary of findings</a></div>"
)


def render_html(executed: Path, html_path: Path, exclude_input: bool = False, banner: str = "") -> Path:
    """Executed notebook -> standalone HTML (no network needed to write it); ``exclude_input``: the
    reviewer's report (narrative, tables and figures, no code cells), with ``banner`` on top."""
    import re

    import nbformat
    from nbconvert import HTMLExporter

    nb = nbformat.read(str(executed), as_version=4)
    body, _ = HTMLExporter(
        exclude_input=exclude_input, exclude_input_prompt=exclude_input, exclude_output_prompt=exclude_input
    ).from_notebook_node(nb)
    if banner:
        body = re.sub(r"(<body[^>]*>)", lambda m: m.group(1) + banner, body, count=1)
    return write_text(html_path, body)


def report_path(html_path: Path) -> Path:
    """Where the no-code report of a notebook's HTML goes: ``name.report.html`` beside ``name.html``."""
    return Path(html_path).with_suffix(".report.html")


def run_notebook(
    notebook: Path, out_dir: Path, parameters: dict, kernel: str = "python3", report: bool = True
) -> dict:
    """Execute one notebook; always keep the executed copy and its HTML (with code, and, with
    ``report``, without input cells), even when it fails."""
    import papermill as pm

    out_dir.mkdir(parents=True, exist_ok=True)
    executed = out_dir / notebook.name
    t0 = time.perf_counter()
    error = None
    try:
        pm.execute_notebook(
            str(notebook),
            str(executed),
            parameters=parameters,
            kernel_name=kernel,
            cwd=str(notebook.parent),
            progress_bar=False,
        )
    except Exception as exc:  # papermill already wrote the failing notebook
        error = f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1] if str(exc).strip() else ''}"
    html_path = executed.with_suffix(".html")
    if executed.exists():
        render_html(executed, html_path)
        if report:
            render_html(executed, report_path(html_path), exclude_input=True, banner=REPORT_BANNER)
    return {
        "notebook": notebook.name,
        "executed": executed,
        "html": html_path,
        "report": report_path(html_path) if report and executed.exists() else None,
        "seconds": round(time.perf_counter() - t0, 1),
        "error": error,
    }
