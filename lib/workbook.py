"""Run the numbered notebooks with papermill and render each executed copy to HTML.

Executed notebooks are build artifacts: they go to ``runs/<profile>/`` (ignored by git),
never back into ``notebooks/``.
"""

from __future__ import annotations

import html
import re
import time
from pathlib import Path

from lib.config import resolve_profile_name
from lib.fileio import write_text

REPO_ROOT = Path(__file__).resolve().parent.parent
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


def render_html(executed: Path, html_path: Path) -> Path:
    """Executed notebook -> standalone HTML (no network needed to write it)."""
    import nbformat
    from nbconvert import HTMLExporter

    nb = nbformat.read(str(executed), as_version=4)
    body, _ = HTMLExporter().from_notebook_node(nb)
    return write_text(html_path, body)


def run_notebook(notebook: Path, out_dir: Path, parameters: dict, kernel: str = "python3") -> dict:
    """Execute one notebook; always keep the executed copy and its HTML, even when it fails."""
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
    return {
        "notebook": notebook.name,
        "executed": executed,
        "html": html_path,
        "seconds": round(time.perf_counter() - t0, 1),
        "error": error,
    }


def write_index(out_dir: Path, results: list[dict], title: str) -> Path:
    rows = "\n".join(
        f"<tr><td><a href='{html.escape(r['html'].name)}'>{html.escape(r['notebook'])}</a></td>"
        f"<td>{r['seconds']}</td><td>{'ok' if not r['error'] else html.escape(r['error'])}</td></tr>"
        for r in results
    )
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head>"
        f"<body><h1>{html.escape(title)}</h1><table border='1' cellpadding='4'>"
        f"<tr><th>notebook</th><th>seconds</th><th>status</th></tr>{rows}</table></body></html>\n"
    )
    return write_text(out_dir / "index.html", page)


def run_workbook(
    profile: str = "auto",
    data_root: str | Path | None = None,
    runs_dir: str | Path | None = None,
    only: list[str] | None = None,
    seed: int | None = None,
    notebook_dir: Path = NOTEBOOK_DIR,
) -> list[dict]:
    """Run the notebooks in order on one profile; stop at the first failure (later stages need it)."""
    name = resolve_profile_name(profile)
    runs = Path(runs_dir) if runs_dir else REPO_ROOT / "runs" / name
    data = Path(data_root) if data_root else REPO_ROOT / "data" / name
    params = {"profile": name, "data_root": str(data.resolve())}
    if seed is not None:
        params["seed"] = int(seed)
    results = []
    books = list_notebooks(notebook_dir, only)
    for k, nb in enumerate(books, 1):
        print(f"[{k}/{len(books)}] {nb.name} (profile={name}) ...", flush=True)
        res = run_notebook(nb, runs, params)
        results.append(res)
        status = "ok" if not res["error"] else f"FAILED: {res['error']}"
        print(f"      {status} in {res['seconds']} s -> {res['html']}", flush=True)
        if res["error"]:
            break
    write_index(runs, results, f"Sealant ADL workbook - profile {name}")
    return results
