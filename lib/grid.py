"""The experiment grid: one training-notebook run per cell, resumable, through a pluggable executor.

A cell is (model, viewpoint, raw|masked, seed). Its completion marker is the results store's
``DONE`` file (removed first and written last by ``run_cell``); a cell is skipped only if its
``DONE`` records the identity the cell would have now (``lib.identity``: manifest rows, ROI masks,
resolved config, package version), else it re-runs and the index says why. An interrupted run
resumes. A failing cell, or one whose worker process dies, is recorded as failed with its error
and log (``runs/<profile>/cells/<cell>/FAILED.json``); the others go on.

Executors: ``sequential`` (default), ``process`` (a local process pool), ``ray`` (one Ray task per
cell, GPU resources declared per task; a local Ray instance, or ``address=`` to join a cluster).
"""

from __future__ import annotations

import dataclasses
import functools
import time
from pathlib import Path

from tqdm.auto import tqdm

from lib.identity import NEW
from lib.store import Cell, is_done


def training_notebook(model: str) -> tuple[str, dict]:
    """The notebook that trains ``model``'s cells and the extra papermill parameters it takes (model hooks)."""
    cls = model_class(model)
    return cls.training_notebook, dict(cls.notebook_parameters)


def model_class(model: str):
    from lib.models import REGISTRY

    if model not in REGISTRY:
        raise ValueError(f"unknown model(s) [{model!r}]; choose from {list(grid_models())}")
    return REGISTRY[model]


def grid_models() -> tuple[str, ...]:
    from lib.models import GRID_MODELS

    return GRID_MODELS


def _cost(model: str) -> float:
    try:
        return model_class(model).relative_cost
    except ValueError:  # test doubles ("fail") are cheap
        return 1


def plan_grid(models, viewpoints, variants, seeds) -> list[Cell]:
    unknown = set(models) - set(grid_models())
    if unknown:
        raise ValueError(f"unknown model(s) {sorted(unknown)}; choose from {list(grid_models())}")
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


def expected_identities(cells, profile, data_root, manifest) -> dict:
    """The identity each cell would record if run now (what ``train_grid`` in the notebooks builds)."""
    from lib.identity import cell_identity
    from lib.models import model_config

    out = {}
    for cell in cells:
        overrides = model_class(cell.model).cell_overrides(profile, data_root, cell.seed)
        config = model_config(cell.model, profile, **overrides)
        out[cell] = cell_identity(cell, config, data_root, manifest)
    return out


@dataclasses.dataclass(frozen=True)
class SharedTask:
    """What several cells of ``model`` share and is prepared once before them (its ``shared_resource``,
    e.g. EfficientAD's teacher)."""

    model: str

    @property
    def key(self) -> str:
        return f"{model_class(self.model).shared_resource} for {self.model}"

    @property
    def log_name(self) -> str:
        return f"{model_class(self.model).shared_resource}_{self.model}"


def shared_tasks(cells) -> list[SharedTask]:
    return [SharedTask(m) for m in sorted({c.model for c in cells if model_class(c.model).shared_resource})]


def run_shared_task(task: SharedTask, profile: str, data_root: str, runs_dir: str, notebook_dir: str) -> dict:
    """Prepare (or find) what the task's cells share; never raises (a cell that needs it retries and reports)."""
    from lib.config import load_profile
    from lib.dataset.manifest import read_manifest

    t0 = time.perf_counter()
    try:
        manifest = read_manifest(Path(data_root) / "data_manifest.csv")
        path = model_class(task.model).prepare_shared(
            load_profile(profile), data_root, manifest, progress=False
        )
        error = None
    except Exception as exc:  # noqa: BLE001
        path, error = None, f"{type(exc).__name__}: {exc}"
    return {
        "cell": task.key,
        "error": error,
        "html": None,
        "path": str(path),
        "seconds": time.perf_counter() - t0,
    }


def run_grid_cell(cell: Cell, profile: str, data_root: str, runs_dir: str, notebook_dir: str) -> dict:
    """Execute one cell's training notebook (papermill) into ``runs_dir/cells/``; never raises."""
    from lib.notebooks import run_notebook

    notebook, extra = training_notebook(cell.model)
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
        res = run_notebook(Path(notebook_dir) / notebook, out_dir, params, report=False)
    except Exception as exc:  # a broken environment, not a notebook error: still report, never raise
        return {"cell": cell.key, "error": f"{type(exc).__name__}: {exc}", "html": None, "seconds": 0.0}
    if res["error"] is None and not is_done(Path(data_root) / "results", cell):
        res["error"] = "the notebook finished but wrote no DONE marker for this cell"
    return {"cell": cell.key, "error": res["error"], "html": str(res["html"]), "seconds": res["seconds"]}


def dry_run_cell(cell: Cell, profile: str, data_root: str, runs_dir: str, notebook_dir: str) -> dict:
    """A no-op cell that only writes its results and DONE marker: checks executor wiring cheaply."""
    import numpy as np
    import pandas as pd

    from lib.store import write_results

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

    def map_unordered(self, fn, items, log_for=None):
        for item in items:
            try:
                res = fn(*item)
            except Exception as exc:  # noqa: BLE001 - fails this cell only
                res = {"crashed": f"{type(exc).__name__}: {exc}"}
            yield item, res


def limit_threads(threads: int) -> None:
    """Cap BLAS/OpenMP/torch threads in this process and the kernels it starts (they inherit the env)."""
    import os

    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)


def _worker_main(conn, threads, fn, item, log_path):
    """Run one cell in its own process, output to its log; send the result back through ``conn``."""
    import os
    import sys

    if log_path:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115
        sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
    limit_threads(threads)
    try:
        res = fn(*item)
    except BaseException as exc:  # noqa: BLE001 - reported as the cell's failure
        import traceback

        traceback.print_exc()
        res = {"crashed": f"{type(exc).__name__}: {exc}"}
    conn.send(res)
    conn.close()


def _exit_description(code: int | None) -> str:
    import signal

    if code is None:
        return "did not exit"
    if code < 0:
        try:
            return f"was killed by signal {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


#: what every cell's worker imports before its notebook starts (papermill's kernel client and nbconvert's
#: HTML exporter: ~2 s of a cell's ~10 s overhead on our 2-core machine, docs/timings.md); no numpy,
#: torch or OpenCV, whose thread pools must not be forked
WORKER_PRELOAD = ("papermill", "nbconvert", "nbformat")


def worker_context():
    """Cells' processes come from a fork server that has imported ``WORKER_PRELOAD`` once, so each cell
    starts without paying for those imports; still one fresh process per cell (a crash fails that cell
    only). Where there is no fork server (Windows): spawned processes."""
    import multiprocessing

    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(list(WORKER_PRELOAD))
    return ctx


class ProcessExecutor:
    """One fresh process per cell (``worker_context``), at most ``workers`` at a time.

    A process per cell (not a pool) isolates crashes: a worker killed mid-cell (out of memory, a
    segfault, ``kill -9``) fails that cell only, reported as ``{"crashed": ...}``, and the other
    cells go on. Each cell gets ``cores // workers`` threads so parallel cells do not oversubscribe
    the CPU; its output goes to ``log_for(item)`` when given.
    """

    name = "process"

    def __init__(self, workers: int | None = None, threads: int | None = None):

        from lib.config import available_cores

        workers = workers or available_cores()
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.workers = workers
        self.threads = threads or max(1, available_cores() // workers)

    def map_unordered(self, fn, items, log_for=None, after=None):
        """``after[i]``: indices of items that must finish before item ``i`` starts (in any state)."""
        from multiprocessing.connection import wait

        ctx = worker_context()
        items = list(items)
        after = after or [set() for _ in items]
        pending, running, finished = list(range(len(items))), {}, set()
        try:
            while pending or running:
                while len(running) < self.workers:
                    ready = [i for i in pending if after[i] <= finished]
                    if not ready:
                        break
                    index = ready[0]
                    pending.remove(index)
                    item = items[index]
                    recv, send = ctx.Pipe(duplex=False)
                    log = str(log_for(item)) if log_for else None
                    proc = ctx.Process(target=_worker_main, args=(send, self.threads, fn, item, log))
                    proc.start()
                    send.close()
                    running[recv] = (proc, item, log, index)
                for conn in wait(list(running)):
                    proc, item, log, index = running.pop(conn)
                    finished.add(index)
                    try:
                        res = conn.recv()
                    except (EOFError, OSError):  # the process died before sending a result
                        res = None
                    conn.close()
                    proc.join()
                    if res is None:
                        res = {"crashed": f"the worker process {_exit_description(proc.exitcode)} mid-cell"}
                    yield item, res
        finally:
            for proc, *_ in running.values():
                proc.kill()
                proc.join()


class RayExecutor:
    """One Ray task per cell; ``gpus_per_cell`` is declared per task so Ray places cells on GPUs."""

    name = "ray"

    def __init__(
        self, address: str | None = None, gpus_per_cell: float = 0.0, cpus_per_cell: float = 1.0, **init
    ):
        self.address, self.gpus, self.cpus, self.init = address, gpus_per_cell, cpus_per_cell, init

    def map_unordered(self, fn, items, log_for=None):
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
                try:
                    res = ray.get(done[0])
                except Exception as exc:  # noqa: BLE001 - a crashed task or dead worker fails its cell only
                    res = {"crashed": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"}
                yield refs[done[0]], res
        finally:
            if started:
                ray.shutdown()


def make_executor(kind: str = "sequential", **kwargs):
    """``auto``: one process per CPU core when there is no GPU (cells are small), else sequential."""
    if kind == "auto":
        import torch

        from lib.config import available_cores

        if torch.cuda.is_available():
            kind = "sequential"
        else:
            kind = "process"
            kwargs.setdefault("workers", available_cores())
    if kind == "sequential":
        return SequentialExecutor()
    if kind == "process":
        return ProcessExecutor(**kwargs)
    if kind == "ray":
        return RayExecutor(**kwargs)
    raise ValueError(f"unknown executor {kind!r}; choose sequential, process or ray")


def _dispatch(cell_fn, shared_fn, task, *args):
    """A grid item in a worker: a shared task (teacher) or a cell (module level: spawn pickles it)."""
    return (shared_fn if isinstance(task, SharedTask) else cell_fn)(task, *args)


def _stale_reasons(cells, store: Path, identities) -> dict:
    """Why each cell must run (None: done and current)."""
    from lib.identity import stale_reason

    if identities is not None:
        return {c: stale_reason(store, c, identities[c]) for c in cells}
    return {c: None if is_done(store, c) else NEW for c in cells}


def _work_items(todo, shared, args):
    """The executor's items (shared tasks first, then cells) and, per item, what must finish before it."""
    items = [(t, *args) for t in shared] + [(c, *args) for c in todo]
    index_of = {t.model: i for i, t in enumerate(shared)}
    after = [set() for _ in shared] + [{index_of[c.model]} if c.model in index_of else set() for c in todo]
    return items, after


def _finish_cell(cell: Cell, res: dict, cells_dir: Path, reason, bar) -> dict:
    """A cell's result row: crash turned into an error, its log, why it ran; FAILED.json kept or cleared."""
    from lib.fileio import write_json

    if "crashed" in res:
        res = {"cell": cell.key, "error": res["crashed"], "html": None, "seconds": 0.0}
    log = cells_dir / cell_name(cell) / "worker.log"
    res["log"] = str(log) if log.is_file() else None
    res["reason"] = reason
    failed = cells_dir / cell_name(cell) / "FAILED.json"
    if res["error"]:
        write_json(failed, {"cell": cell.key, "error": res["error"], "log": res["log"], "html": res["html"]})
        bar.write(f"FAILED {res['cell']}: {res['error']} (log: {res['log']})")
    else:
        failed.unlink(missing_ok=True)
    return res


def _finish_shared(task: SharedTask, res: dict, bar) -> dict:
    if "crashed" in res:
        res = {"cell": task.key, "error": res["crashed"], "seconds": 0.0}
    state = f"FAILED: {res['error']}" if res["error"] else f"ready ({res['seconds']:.0f} s)"
    bar.write(f"{task.key}: {state}")
    return res


def run_grid(
    cells,
    profile,
    data_root,
    runs_dir,
    notebook_dir,
    executor=None,
    progress=True,
    cell_fn=None,
    identities: dict | None = None,
    shared_fn=None,
):
    """Run every cell that is not done and current; returns results, skipped and re-run cells.

    ``identities`` (cell -> expected identity, see ``expected_identities``) decides "current";
    without it a cell with any DONE counts as done. Crashes are collected, never raised. With a
    process executor, what cells share (e.g. EfficientAD's teachers; ``shared_fn``, default
    ``run_shared_task``) runs as tasks of the pool that the cells needing them wait for.
    """
    executor = executor or SequentialExecutor()
    fn = cell_fn or run_grid_cell
    reasons = _stale_reasons(cells, Path(data_root) / "results", identities)
    todo = sorted((c for c in cells if reasons[c]), key=lambda c: -_cost(c.model))
    skipped = [c for c in cells if not reasons[c]]
    rerun = [{"cell": c.key, "reason": reasons[c]} for c in todo if reasons[c] != NEW]
    # a process pool prepares the shared resources as tasks of its own: the cells that need one start
    # when it is ready, the others fill the workers meanwhile (other executors: before the grid)
    shared = shared_tasks(todo) if isinstance(executor, ProcessExecutor) else []
    items, after = _work_items(todo, shared, (profile, str(data_root), str(runs_dir), str(notebook_dir)))
    cells_dir = Path(runs_dir) / "cells"
    results, shared_results = [], []
    t0 = time.perf_counter()

    def log_for(it):
        name = it[0].log_name if isinstance(it[0], SharedTask) else cell_name(it[0])
        return cells_dir / name / "worker.log"

    kwargs = {"after": after} if shared else {}
    work = functools.partial(_dispatch, fn, shared_fn or run_shared_task) if shared else fn
    with tqdm(
        total=len(cells),
        initial=len(skipped),
        desc=f"grid ({executor.name})",
        unit="cell",
        disable=not progress,
    ) as bar:
        for item, res in executor.map_unordered(work, items, log_for=log_for, **kwargs):
            if isinstance(item[0], SharedTask):
                shared_results.append(_finish_shared(item[0], res, bar))
                continue
            results.append(_finish_cell(item[0], res, cells_dir, reasons[item[0]], bar))
            bar.update()
    if rerun:
        print(f"re-ran {len(rerun)} finished cell(s) that were no longer current:")
        for r in rerun:
            print(f"  {r['cell']}: {r['reason']}")
    return {
        "results": results,
        "shared": shared_results,
        "skipped": [c.key for c in skipped],
        "rerun": rerun,
        "seconds": round(time.perf_counter() - t0, 1),
    }
