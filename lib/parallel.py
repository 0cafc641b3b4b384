"""One ordered process map for the CPU-bound data stages (rendering the line, template matching)."""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor

from tqdm.auto import tqdm


def default_workers() -> int:
    """Up to 2 processes: the data stages are light enough that more cores add little."""
    from lib.config import available_cores

    return max(1, min(2, available_cores()))


def ordered_map(
    fn, jobs, workers: int | None = None, desc: str = "", unit: str = "it", progress=True, chunksize=1
):
    """``[fn(job) for job in jobs]`` on ``workers`` spawned processes, results in job order (so the
    output does not depend on the number of workers), with a progress bar. ``fn`` and the jobs must
    pickle. One worker or one job: in this process."""
    jobs = list(jobs)
    workers = workers or default_workers()
    results = []
    with tqdm(total=len(jobs), desc=desc, unit=unit, disable=not progress) as bar:
        if workers == 1 or len(jobs) <= 1:
            for job in jobs:
                results.append(fn(job))
                bar.update()
        else:
            # spawn, not fork: a forked OpenCV thread pool can deadlock the children
            ctx = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
                for res in pool.map(fn, jobs, chunksize=chunksize):
                    results.append(res)
                    bar.update()
    return results
