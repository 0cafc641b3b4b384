"""Run the numbered notebooks with papermill and render each executed copy to HTML.

Executed notebooks are build artifacts: they go to ``runs/<profile>/`` (ignored by git),
never back into ``notebooks/``.
"""

from __future__ import annotations

import html
import re
import time
from pathlib import Path

from lib.config import VIEWPOINTS, resolve_profile_name
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


def headline_table(data_root: Path):
    """Test split, threshold-free numbers: image AUROC and pixel AUPRO, mean ± std over seeds."""
    import pandas as pd

    from lib.evaluate.metrics import mean_std

    path = Path(data_root) / "tables" / "metrics.csv"
    if not path.is_file():
        return None
    m = pd.read_csv(path)
    m = m[(m.subset == "test") & (m.policy == "oracle")]
    if m.empty:
        return None
    img = m[m.level == "image"].groupby(["label", "viewpoint"]).auroc.agg(mean_std).unstack("viewpoint")
    pix = m[m.level == "pixel"].groupby(["label", "viewpoint"]).aupro.agg(mean_std).unstack("viewpoint")
    t = img.add_prefix("image AUROC ").join(pix.add_prefix("pixel AUPRO ")).fillna("not run")
    return t.reset_index().rename(columns={"label": "model († = masked)"})


def markdown_table(df) -> str:
    cols = [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


README_START, README_END = "<!-- results:start -->", "<!-- results:end -->"


def update_readme(results_md: Path, readme: Path = REPO_ROOT / "README.md", note: str = "") -> Path:
    """Replace the README's generated results block with a run's ``results.md`` (never typed by hand)."""
    if not results_md.is_file():
        raise FileNotFoundError(f"no results table at {results_md}: run the workbook first")
    text = readme.read_text()
    if README_START not in text or README_END not in text:
        raise ValueError(f"{readme} has no {README_START} ... {README_END} block")
    head, rest = text.split(README_START, 1)
    _, tail = rest.split(README_END, 1)
    body = results_md.read_text().strip() + ("\n\n" + note.strip() if note else "")
    return write_text(readme, f"{head}{README_START}\n{body}\n{README_END}{tail}")


def run_summary(results: list[dict], seconds: float, executor: str, skipped: int = 0) -> str:
    """One line saying how long this invocation took, on what, and what it ran."""
    import os
    import platform

    failed = sum(1 for r in results if r["error"])
    return (
        f"Wall time of this run: {seconds / 60:.1f} min on {os.cpu_count()} CPU core(s) "
        f"({platform.processor() or platform.machine()}), executor `{executor}`; "
        f"{len(results)} notebooks/cells executed, {skipped} grid cells already done and skipped, "
        f"{failed} failed."
    )


def write_index(
    out_dir: Path, results: list[dict], title: str, data_root: Path | None = None, summary: str = ""
) -> Path:
    def link(path, text):
        if not path:
            return html.escape(text)
        try:
            rel = Path(path).relative_to(out_dir)
        except ValueError:
            rel = Path(path)
        return f"<a href='{html.escape(str(rel))}'>{html.escape(text)}</a>"

    rows = "\n".join(
        f"<tr><td>{link(r.get('html'), r.get('notebook') or r.get('cell', ''))}</td>"
        f"<td>{r['seconds']}</td><td>{'ok' if not r['error'] else html.escape(str(r['error']))}"
        f"{' (' + link(r.get('log'), 'log') + ')' if r.get('error') and r.get('log') else ''}</td>"
        f"<td>{html.escape(str(r.get('reason') or ''))}</td></tr>"
        for r in results
    )
    table = headline_table(data_root) if data_root is not None else None
    head = (
        "<h2>Headline results (test split, threshold-free; mean ± std over seeds)</h2>"
        + table.to_html(index=False, border=1)
        if table is not None
        else ""
    )
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head>"
        f"<body><h1>{html.escape(title)}</h1><p>{html.escape(summary)}</p>{head}<h2>Executed notebooks</h2><table border='1' cellpadding='4'>"
        f"<tr><th>notebook / cell</th><th>seconds</th><th>status</th><th>why it ran</th></tr>{rows}</table></body></html>\n"
    )
    if table is not None:
        write_text(
            out_dir / "results.md",
            f"Results of the `{title}` run (test split, threshold-free):\n\n"
            + markdown_table(table)
            + (f"\n\n{summary}" if summary else "")
            + "\n",
        )
    return write_text(out_dir / "index.html", page)


def prepare_shared(profile, data_root: Path, models) -> None:
    """Train what grid cells share before the grid starts: EfficientAD's teachers (once per profile)."""
    from lib.dataset.manifest import read_manifest
    from lib.models.efficientad.teacher import prepare_teacher

    wanted = sorted(m for m in models if m.startswith("efficientad"))
    if not wanted:
        return
    manifest = read_manifest(Path(data_root) / "data_manifest.csv")
    for name in wanted:
        t0 = time.perf_counter()
        try:
            path = prepare_teacher(name, profile, data_root, manifest)
        except Exception as exc:  # the cells will retry and report it as their own failure
            print(f"teacher for {name} FAILED: {type(exc).__name__}: {exc}", flush=True)
            continue
        print(f"teacher for {name}: {path} ({time.perf_counter() - t0:.0f} s)", flush=True)


def run_workbook(
    profile: str = "auto",
    data_root: str | Path | None = None,
    runs_dir: str | Path | None = None,
    only: list[str] | None = None,
    seed: int | None = None,
    notebook_dir: Path = NOTEBOOK_DIR,
    executor: str = "sequential",
    models: list[str] | None = None,
    progress: bool = True,
    viewpoints=VIEWPOINTS,
    variants=("raw", "masked"),
    **executor_kwargs,
) -> list[dict]:
    """Run the workbook on one profile: stages 00-03 once, the training grid cell by cell, then 08-09.

    ``only`` runs just those notebooks, in order (no grid). Finished grid cells are skipped, so an
    interrupted run resumes; a failed cell does not stop the others. Returns every result row
    (a row with ``error`` set is a failure).
    """
    started = time.perf_counter()
    name = resolve_profile_name(profile)
    runs = Path(runs_dir) if runs_dir else REPO_ROOT / "runs" / name
    data = (Path(data_root) if data_root else REPO_ROOT / "data" / name).resolve()
    params = {"profile": name, "data_root": str(data)}
    if seed is not None:
        params["seed"] = int(seed)
    title = f"Sealant ADL workbook - profile {name}"

    from lib.fileio import data_root_lock

    # one run per data root at a time; the lock is released when this process exits, even if killed
    with data_root_lock(data, f"workbook run, profile {name}"):
        from lib.config import load_profile
        from lib.grid import (
            ALL_MODELS,
            TRAINING_NOTEBOOKS,
            expected_identities,
            make_executor,
            plan_grid,
            run_grid,
        )

        results = []

        def run_list(books):
            for k, nb in enumerate(books, 1):
                print(f"[{k}/{len(books)}] {nb.name} (profile={name}) ...", flush=True)
                res = run_notebook(nb, runs, params)
                results.append(res)
                status = "ok" if not res["error"] else f"FAILED: {res['error']}"
                print(f"      {status} in {res['seconds']} s -> {res['html']}", flush=True)
                if res["error"]:
                    return False
            return True

        books = list_notebooks(notebook_dir, only)
        skipped = 0
        if only:
            run_list(books)
            summary = run_summary(results, time.perf_counter() - started, "none (--only)")
            write_index(runs, results, title, data, summary)
            return results
        training = {nb for nb, _ in TRAINING_NOTEBOOKS.values()}
        pre = [b for b in books if b.name[:2] < "04"]
        post = [b for b in books if b.name[:2] >= "08" and b.name not in training]
        if run_list(pre):
            prof = load_profile(name)
            cells = plan_grid(models or ALL_MODELS, viewpoints, variants, prof.grid_seeds)
            prepare_shared(prof, data, {c.model for c in cells})
            ex = make_executor(executor, **executor_kwargs)
            executor = ex.name + (f" ({ex.workers} workers)" if hasattr(ex, "workers") else "")
            from lib.dataset.manifest import read_manifest

            manifest = read_manifest(data / "data_manifest.csv")
            identities = expected_identities(cells, prof, data, manifest)
            grid = run_grid(cells, name, data, runs, notebook_dir, ex, progress, identities=identities)
            print(
                f"grid: {len(grid['results'])} cells run, {len(grid['skipped'])} already done, {grid['seconds']} s"
            )
            results += grid["results"]
            skipped = len(grid["skipped"])
            run_list(post)
        summary = run_summary(results, time.perf_counter() - started, executor, skipped)
        print(summary, flush=True)
        write_index(runs, results, title, data, summary)
        return results
