"""The workbook: stages 00-03 once, the training grid cell by cell, then 08-11, and the index.

``run_workbook`` is what ``make run`` and ``python -m lib run`` call; notebooks run through
``lib.notebooks``, the grid through ``lib.grid``, and the index is written by ``lib.report``.
"""

from __future__ import annotations

import time
from pathlib import Path

from lib.config import REPO_ROOT, VIEWPOINTS, data_root_for, resolve_profile_name
from lib.notebooks import NOTEBOOK_DIR, list_notebooks, run_notebook
from lib.report import run_summary, time_breakdown, write_index


def prepare_shared(profile, data_root: Path, models) -> None:
    """Prepare what grid cells share before the grid starts (each model's ``prepare_shared`` hook, e.g.
    EfficientAD's teachers), once per profile; a failure is printed and left to the cells to report."""
    from lib.dataset.manifest import read_manifest
    from lib.grid import model_class

    wanted = sorted(m for m in models if model_class(m).shared_resource)
    if not wanted:
        return
    manifest = read_manifest(Path(data_root) / "data_manifest.csv")
    for name in wanted:
        what = f"{model_class(name).shared_resource} for {name}"
        t0 = time.perf_counter()
        try:
            path = model_class(name).prepare_shared(profile, data_root, manifest)
        except Exception as exc:  # the cells will retry and report it as their own failure
            print(f"{what} FAILED: {type(exc).__name__}: {exc}", flush=True)
            continue
        print(f"{what}: {path} ({time.perf_counter() - t0:.0f} s)", flush=True)


class _NotebookRun:
    """Runs numbered notebooks in order into ``runs``, collecting result rows; stops at the first failure."""

    def __init__(self, runs: Path, params: dict, results: list):
        self.runs, self.params, self.results = runs, params, results

    def __call__(self, books) -> bool:
        for k, nb in enumerate(books, 1):
            print(f"[{k}/{len(books)}] {nb.name} (profile={self.params['profile']}) ...", flush=True)
            res = run_notebook(nb, self.runs, self.params)
            self.results.append(res)
            status = "ok" if not res["error"] else f"FAILED: {res['error']}"
            print(f"      {status} in {res['seconds']} s -> {res['html']}", flush=True)
            if res["error"]:
                return False
        return True


def _run_training_grid(
    name, data, runs, notebook_dir, models, viewpoints, variants, executor, progress, **kw
):
    """Plan the grid, prepare what cells share, run every cell that is not current; returns
    (grid result dict, executor)."""
    from lib.config import load_profile
    from lib.dataset.manifest import read_manifest
    from lib.grid import expected_identities, make_executor, plan_grid, run_grid
    from lib.models import run_models

    prof = load_profile(name)
    cells = plan_grid(run_models(prof, models), viewpoints, variants, prof.grid_seeds)
    ex = make_executor(executor, **kw)
    if ex.name != "process":  # a process pool prepares them as tasks of the grid
        prepare_shared(prof, data, {c.model for c in cells})
    manifest = read_manifest(data / "data_manifest.csv")
    identities = expected_identities(cells, prof, data, manifest)
    grid = run_grid(cells, name, data, runs, notebook_dir, ex, progress, identities=identities)
    print(f"grid: {len(grid['results'])} cells run, {len(grid['skipped'])} already done, {grid['seconds']} s")
    return grid, ex


def _print_breakdown(breakdown) -> None:
    print("where the time went (wall_min of grid rows = worker seconds / workers):")
    for row in breakdown:
        print(
            f"  {row['part']:<32} {row['items']:>3} item(s) {row['worker_s']:>8.1f} s  ~{row['wall_min']:.2f} min"
        )


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
    skip: list[str] | None = None,
    **executor_kwargs,
) -> list[dict]:
    """Run the workbook on one profile: stages 00-03 once, the training grid cell by cell, then 08-11.

    ``only`` runs just those notebooks, in order (no grid); ``skip`` leaves out the post-grid notebooks with
    those numbers (e.g. ['10'], whose bundle needs all three views, in a one-view run). Finished grid cells are skipped, so an
    interrupted run resumes; a failed cell does not stop the others. Returns every result row
    (a row with ``error`` set is a failure).
    """
    from lib.fileio import data_root_lock
    from lib.grid import grid_models, training_notebook

    started = time.perf_counter()
    name = resolve_profile_name(profile)
    runs = Path(runs_dir) if runs_dir else REPO_ROOT / "runs" / name
    data = data_root_for(name, data_root).resolve()
    params = {"profile": name, "data_root": str(data)}
    if seed is not None:
        params["seed"] = int(seed)
    title = f"Sealant ADL workbook - profile {name}"
    results: list[dict] = []
    run_list = _NotebookRun(runs, params, results)
    books = list_notebooks(notebook_dir, only)
    # one run per data root at a time; the lock is released when this process exits, even if killed
    with data_root_lock(data, f"workbook run, profile {name}"):
        if only:
            run_list(books)
            summary = run_summary(results, time.perf_counter() - started, "none (--only)")
            write_index(runs, results, title, data, summary, profile=name)
            return results
        training = {training_notebook(m)[0] for m in grid_models()}
        pre = [b for b in books if b.name[:2] < "04"]
        post = [b for b in books if b.name[:2] >= "08" and b.name not in training]
        if skip:
            bad = {str(k).zfill(2) for k in skip} - {b.name[:2] for b in post}
            if bad:
                raise ValueError(f"--skip: {sorted(bad)} is not a notebook run after the grid (08-11)")
            post = [b for b in post if b.name[:2] not in {str(k).zfill(2) for k in skip}]
        skipped, shared, ex, ex_name = 0, [], None, executor
        if run_list(pre):
            grid, ex = _run_training_grid(
                name,
                data,
                runs,
                notebook_dir,
                models,
                viewpoints,
                variants,
                executor,
                progress,
                **executor_kwargs,
            )
            ex_name = ex.name + (f" ({ex.workers} workers)" if hasattr(ex, "workers") else "")
            results += grid["results"]
            shared, skipped = grid.get("shared", []), len(grid["skipped"])
            run_list(post)
        summary = run_summary(results, time.perf_counter() - started, ex_name, skipped)
        breakdown = time_breakdown(results, shared, getattr(ex, "workers", 1) if ex is not None else 1, data)
        print(summary, flush=True)
        _print_breakdown(breakdown)
        write_index(runs, results, title, data, summary, breakdown, profile=name)
        return results
