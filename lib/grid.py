"""The experiment grid: one training-notebook run per cell, resumable, through a pluggable executor.

A cell is (model, viewpoint, raw|masked, seed). Its completion marker is the results store's
``DONE`` file (written last by ``run_cell``), so a finished cell is skipped on re-run and an
interrupted run resumes. A failing cell is reported with its notebook and error; the others go on.

Executors: ``sequential`` (default), ``process`` (a local process pool), ``ray`` (one Ray task per
cell, GPU resources declared per task; a local Ray instance, or ``address=`` to join a cluster).
"""

from __future__ import annotations

import time
from pathlib import Path

from tqdm.auto import tqdm

from lib.evaluate.store import Cell, is_done

#: model name -> (training notebook, extra papermill parameters)
TRAINING_NOTEBOOKS = {
    "baseline": ("04_train_baseline.ipynb", {}),
    "patchcore": ("04_train_patchcore.ipynb", {}),
    "memseg": ("05_train_memseg.ipynb", {}),
    "efficientad_s": ("06_train_efficientad.ipynb", {"models": ["efficientad_s"]}),
    "efficientad_m": ("06_train_efficientad.ipynb", {"models": ["efficientad_m"]}),
    "simplenet": ("07_train_simplenet.ipynb", {}),
}
ALL_MODELS = tuple(TRAINING_NOTEBOOKS)
#: rough relative cost of one cell on a CPU; the grid starts the longest cells first so that parallel
#: workers finish together (longest-processing-time-first scheduling)
RELATIVE_COST = {"efficientad_m": 6, "efficientad_s": 5, "memseg": 4, "simplenet": 2, "patchcore": 2}


def plan_grid(models, viewpoints, variants, seeds) -> list[Cell]:
    unknown = set(models) - set(TRAINING_NOTEBOOKS)
    if unknown:
        raise ValueError(f"unknown model(s) {sorted(unknown)}; choose from {list(TRAINING_NOTEBOOKS)}")
    bad = set(variants) - {"raw", "masked"}
    if bad:
        raise ValueError(f"variants must be 'raw' and/or 'masked', got {sorted(bad)}")
    return [
        Cell(m, v, variant == "masked", int(s))
        for m in models
        for v in viewpoints
        for variant in variants
        for s in seeds
    ]


def cell_name(cell: Cell) -> str:
    return f"{cell.model}_{cell.viewpoint}_{'masked' if cell.masked else 'raw'}_seed{cell.seed}"


def run_grid_cell(cell: Cell, profile: str, data_root: str, runs_dir: str, notebook_dir: str) -> dict:
    """Execute one cell's training notebook (papermill) into ``runs_dir/cells/``; never raises."""
    from lib.workbook import run_notebook

    notebook, extra = TRAINING_NOTEBOOKS[cell.model]
    params = {
        "profile": profile,
        "data_root": data_root,
        "viewpoints": [cell.viewpoint],
        "variants": ["masked" if cell.masked else "raw"],
        "seeds": [cell.seed],
        **extra,
    }
    out_dir = Path(runs_dir) / "cells" / cell_name(cell)
    try:
        res = run_notebook(Path(notebook_dir) / notebook, out_dir, params)
    except Exception as exc:  # a broken environment, not a notebook error: still report, never raise
        return {"cell": cell.key, "error": f"{type(exc).__name__}: {exc}", "html": None, "seconds": 0.0}
    if res["error"] is None and not is_done(Path(data_root) / "results", cell):
        res["error"] = "the notebook finished but wrote no DONE marker for this cell"
    return {"cell": cell.key, "error": res["error"], "html": str(res["html"]), "seconds": res["seconds"]}


def dry_run_cell(cell: Cell, profile: str, data_root: str, runs_dir: str, notebook_dir: str) -> dict:
    """A no-op cell that only writes its results and DONE marker: checks executor wiring cheaply."""
    import numpy as np
    import pandas as pd

    from lib.evaluate.store import write_results

    if cell.model == "fail":
        return {
            "cell": cell.key,
            "error": "RuntimeError: this cell fails on purpose",
            "html": None,
            "seconds": 0.0,
        }
    table = pd.DataFrame(
        {"image_id": ["x"], "split": ["test"], "label": ["normal"], "score": [0.0], "time_ms": [0.0]}
    )
    write_results(
        Path(data_root) / "results", cell, table, np.zeros((1, 2, 2), np.float32), {"dry_run": True}
    )
    return {"cell": cell.key, "error": None, "html": None, "seconds": 0.0}


class SequentialExecutor:
    name = "sequential"

    def map_unordered(self, fn, items):
        for item in items:
            yield item, fn(*item)


def limit_threads(threads: int) -> None:
    """Cap BLAS/OpenMP/torch threads in this process and the kernels it starts (they inherit the env)."""
    import os

    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)


class ProcessExecutor:
    """A local process pool (spawned processes; each cell is its own papermill kernel anyway).

    Each worker's cells get ``cores // workers`` threads, so parallel cells do not oversubscribe the CPU.
    """

    name = "process"

    def __init__(self, workers: int | None = None, threads: int | None = None):
        import os

        workers = workers or os.cpu_count() or 1
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.workers = workers
        self.threads = threads or max(1, (os.cpu_count() or 1) // workers)

    def map_unordered(self, fn, items):
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        with ProcessPoolExecutor(
            self.workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=limit_threads,
            initargs=(self.threads,),
        ) as pool:
            futures = {pool.submit(fn, *item): item for item in items}
            for f in as_completed(futures):
                yield futures[f], f.result()


class RayExecutor:
    """One Ray task per cell; ``gpus_per_cell`` is declared per task so Ray places cells on GPUs."""

    name = "ray"

    def __init__(
        self, address: str | None = None, gpus_per_cell: float = 0.0, cpus_per_cell: float = 1.0, **init
    ):
        self.address, self.gpus, self.cpus, self.init = address, gpus_per_cell, cpus_per_cell, init

    def map_unordered(self, fn, items):
        import ray

        started = False
        if not ray.is_initialized():
            kwargs = {"address": self.address} if self.address else {"include_dashboard": False, **self.init}
            ray.init(ignore_reinit_error=True, log_to_driver=False, **kwargs)
            started = True
        try:
            remote = ray.remote(num_cpus=self.cpus, num_gpus=self.gpus)(fn)
            refs = {remote.remote(*item): item for item in items}
            pending = list(refs)
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                yield refs[done[0]], ray.get(done[0])
        finally:
            if started:
                ray.shutdown()


def make_executor(kind: str = "sequential", **kwargs):
    """``auto``: one process per CPU core when there is no GPU (cells are small), else sequential."""
    if kind == "auto":
        import os

        import torch

        if torch.cuda.is_available():
            kind = "sequential"
        else:
            kind = "process"
            kwargs.setdefault("workers", os.cpu_count() or 1)
    if kind == "sequential":
        return SequentialExecutor()
    if kind == "process":
        return ProcessExecutor(**kwargs)
    if kind == "ray":
        return RayExecutor(**kwargs)
    raise ValueError(f"unknown executor {kind!r}; choose sequential, process or ray")


def run_grid(cells, profile, data_root, runs_dir, notebook_dir, executor=None, progress=True, cell_fn=None):
    """Run every unfinished cell; returns (results per cell, skipped cells). Failures are collected."""
    executor = executor or SequentialExecutor()
    fn = cell_fn or run_grid_cell
    store = Path(data_root) / "results"
    todo = sorted((c for c in cells if not is_done(store, c)), key=lambda c: -RELATIVE_COST.get(c.model, 1))
    skipped = [c for c in cells if is_done(store, c)]
    items = [(c, profile, str(data_root), str(runs_dir), str(notebook_dir)) for c in todo]
    results = []
    t0 = time.perf_counter()
    with tqdm(
        total=len(cells),
        initial=len(skipped),
        desc=f"grid ({executor.name})",
        unit="cell",
        disable=not progress,
    ) as bar:
        for _item, res in executor.map_unordered(fn, items):
            results.append(res)
            bar.update()
            if res["error"]:
                bar.write(f"FAILED {res['cell']}: {res['error']} ({res['html']})")
    return {
        "results": results,
        "skipped": [c.key for c in skipped],
        "seconds": round(time.perf_counter() - t0, 1),
    }
