"""The experiment grid: resume, failure isolation, executors (sequential, process, Ray), index page."""

import pytest

from lib import grid
from lib.report import write_index
from lib.store import Cell, is_done, list_cells


def _run(tmp_path, cells, executor=None):
    return grid.run_grid(
        cells, "smoke", tmp_path / "data", tmp_path / "runs", tmp_path, executor, False, grid.dry_run_cell
    )


def test_plan_grid_covers_every_combination():
    cells = grid.plan_grid(["baseline", "patchcore"], ["front", "back"], ["raw", "masked"], [0, 1])
    assert len(cells) == 16 and len(set(cells)) == 16
    with pytest.raises(ValueError, match="unknown model"):
        grid.plan_grid(["nope"], ["front"], ["raw"], [0])
    with pytest.raises(ValueError, match="variants"):
        grid.plan_grid(["baseline"], ["front"], ["dagger"], [0])


def test_finished_cells_are_skipped_on_rerun(tmp_path):
    cells = grid.plan_grid(["baseline"], ["front", "back"], ["raw"], [0])
    first = _run(tmp_path, cells)
    assert len(first["results"]) == 2 and not first["skipped"]
    again = _run(tmp_path, cells + [Cell("baseline", "center", False, 0)])
    assert again["skipped"] == [c.key for c in cells]  # resumed: the finished cells did not run again
    assert [r["cell"] for r in again["results"]] == ["baseline/center/raw/seed0"]


def test_a_failed_cell_does_not_stop_the_others(tmp_path):
    cells = [
        Cell("baseline", "front", False, 0),
        Cell("fail", "front", False, 0),
        Cell("baseline", "back", False, 0),
    ]
    out = _run(tmp_path, cells)
    errors = {r["cell"]: r["error"] for r in out["results"]}
    assert errors["fail/front/raw/seed0"] and errors["baseline/back/raw/seed0"] is None
    assert is_done(tmp_path / "data" / "results", cells[2]) and not is_done(
        tmp_path / "data" / "results", cells[1]
    )


def test_process_executor(tmp_path):
    cells = grid.plan_grid(["baseline"], ["front", "center", "back"], ["raw"], [0])
    out = _run(tmp_path, cells, grid.make_executor("process", workers=2))
    assert sorted(r["cell"] for r in out["results"]) == sorted(c.key for c in cells)
    assert list_cells(tmp_path / "data" / "results") == sorted(cells)


def test_ray_executor_local_instance(tmp_path):
    pytest.importorskip("ray")
    cells = grid.plan_grid(["baseline"], ["front", "back"], ["raw", "masked"], [0])
    ex = grid.make_executor("ray", num_cpus=2, object_store_memory=80 * 1024 * 1024)
    out = _run(tmp_path, cells, ex)
    assert sorted(r["cell"] for r in out["results"]) == sorted(c.key for c in cells)
    assert all(r["error"] is None for r in out["results"])
    assert list_cells(tmp_path / "data" / "results") == sorted(cells)


def test_index_lists_every_cell(tmp_path):
    cells = grid.plan_grid(["baseline"], ["front", "back"], ["raw", "masked"], [0])
    out = _run(tmp_path, cells)
    page = write_index(
        tmp_path / "runs", out["results"], "t", summary="Wall time of this run: 1.0 min"
    ).read_text()
    assert all(c.key in page for c in cells) and "Wall time of this run" in page
    with pytest.raises(ValueError, match="unknown executor"):
        grid.make_executor("slurm")


def _report_threads(cell, *_):
    import os

    return {
        "cell": cell.key,
        "error": None,
        "html": None,
        "seconds": 0.0,
        "omp": os.environ["OMP_NUM_THREADS"],
    }


def test_longest_cells_start_first_and_workers_share_the_cores(tmp_path):
    cells = grid.plan_grid(["baseline", "patchcore", "efficientad_m"], ["front"], ["raw"], [0])
    order = [r["cell"].split("/")[0] for r in _run(tmp_path, cells)["results"]]
    assert order == ["efficientad_m", "patchcore", "baseline"]
    ex = grid.make_executor("process", workers=2, threads=1)
    out = grid.run_grid(
        cells, "smoke", tmp_path / "d2", tmp_path / "r2", tmp_path, ex, False, _report_threads
    )
    assert {r["omp"] for r in out["results"]} == {"1"}  # each worker's kernels get their share only


def test_auto_executor_without_gpu_is_a_process_pool():
    import os

    import torch

    ex = grid.make_executor("auto")
    if torch.cuda.is_available():
        assert ex.name == "sequential"
    else:
        assert ex.name == "process" and ex.workers == len(os.sched_getaffinity(0))


def _already_imported(name, *_):
    import sys

    return {"preloaded": [m for m in grid.WORKER_PRELOAD if m in sys.modules], "name": name}


def test_cell_workers_start_with_papermill_and_nbconvert_imported():
    """The fork server imports them once; every cell's fresh process starts with them (~2 s a cell)."""
    ex = grid.ProcessExecutor(workers=2, threads=1)
    got = [res for _, res in ex.map_unordered(_already_imported, [("a",), ("b",), ("c",)])]
    assert sorted(r["name"] for r in got) == ["a", "b", "c"]
    assert all(r["preloaded"] == list(grid.WORKER_PRELOAD) for r in got)
    assert grid.worker_context().get_start_method() == "forkserver"  # never plain fork (thread pools)


def _stamp(name, seconds, *_):
    import time

    start = time.time()
    time.sleep(seconds)
    return {"name": name, "start": start, "end": time.time()}


def test_process_executor_starts_a_task_only_after_what_it_depends_on():
    """Teachers before the cells that need them; other cells fill the workers meanwhile."""
    items = [("teacher", 6.0), ("needs_teacher", 0.0), ("free_a", 0.1), ("free_b", 0.1)]
    after = [set(), {0}, set(), set()]
    ex = grid.ProcessExecutor(workers=2, threads=1)
    got = {it[0]: res for it, res in ex.map_unordered(_stamp, items, after=after)}
    assert got["needs_teacher"]["start"] >= got["teacher"]["end"]
    assert got["free_a"]["end"] <= got["teacher"]["end"]  # ran beside the teacher, not after it
    assert got["free_b"]["end"] <= got["teacher"]["end"]


def test_shared_teacher_tasks_precede_efficientad_cells():
    cells = grid.plan_grid(["efficientad_s", "patchcore", "efficientad_m"], ["front"], ["raw"], [0])
    assert [t.model for t in grid.shared_tasks(cells)] == ["efficientad_m", "efficientad_s"]
    assert grid.shared_tasks(cells[1:2]) == []


def _fake_teacher(task, *_):
    import time

    start = time.time()
    time.sleep(6.0)
    return {"cell": task.key, "error": None, "html": None, "seconds": 6.0, "start": start, "end": time.time()}


def _stamped_cell(cell, *_):
    import time

    start = time.time()
    time.sleep(0.1)
    return {"cell": cell.key, "error": None, "html": None, "seconds": 0.1, "start": start, "end": time.time()}


def test_grid_trains_teachers_as_pool_tasks_before_the_cells_that_need_them(tmp_path):
    """The real path of `make run`: spawned workers (everything pickled), teacher first, other cells beside it."""
    cells = grid.plan_grid(["efficientad_s", "patchcore", "baseline"], ["front"], ["raw"], [0])
    ex = grid.make_executor("process", workers=2, threads=1)
    out = grid.run_grid(
        cells,
        "smoke",
        tmp_path / "d",
        tmp_path / "r",
        tmp_path,
        ex,
        False,
        _stamped_cell,
        shared_fn=_fake_teacher,
    )
    (teacher,) = out["shared"]
    assert teacher["cell"] == "teacher for efficientad_s" and teacher["error"] is None
    got = {r["cell"].split("/")[0]: r for r in out["results"]}
    assert set(got) == {"efficientad_s", "patchcore", "baseline"}
    assert got["efficientad_s"]["start"] >= teacher["end"]
    assert got["patchcore"]["end"] <= teacher["end"] and got["baseline"]["end"] <= teacher["end"]
