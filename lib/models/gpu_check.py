"""The ten-minute GPU check of the ``paper`` profile (``benchmarks/gpu_check.py``, issue 28).

For every grid model at Table 3's sizes: a short training run (a few units of its budget, timed per
unit, so the resource plan's estimate meets a measurement) and Table 8's latency at batch 1 (warm-up,
then CUDA-synchronised repeats: median and p95). Writes one CSV row per model with the device, driver
and torch versions; ``table8_comparison`` puts it beside the paper's Table 8 for the README.
``tiny=True`` runs the same logic on the CPU at toy sizes (its tests), and says so in every row.
"""

from __future__ import annotations

import dataclasses
import platform
import statistics
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd

from lib.models.resources import _probe_images

#: the columns of the CSV, in order
COLUMNS = (
    "model",
    "input",
    "device",
    "tiny",
    "train_units",
    "train_unit",
    "train_s_per_unit",
    "median_ms",
    "p95_ms",
    "repeats",
    "gpu",
    "driver",
    "torch",
    "cuda",
    "measured_at",
)
#: toy sizes of ``tiny`` (CPU tests of this module's logic)
TINY = {"input_size": (64, 48), "quick": True}


class NoCudaError(RuntimeError):
    """gpu_check was asked for GPU figures on a machine without CUDA."""


def environment(device: str) -> dict:
    """The device, driver and versions a row carries."""
    import torch

    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(torch.device(device))
        gpu = f"{props.name} ({props.total_memory / 2**30:.0f} GiB)"
        try:
            driver = subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=20,
                check=True,
            ).stdout.split("\n")[0]
        except (OSError, subprocess.SubprocessError):
            driver = "unknown (no nvidia-smi)"
    else:
        from lib.config import cpu_description

        gpu, driver = f"none: CPU {cpu_description()}", "n/a"
    return {
        "gpu": gpu,
        "driver": driver,
        "torch": torch.__version__,
        "cuda": str(torch.version.cuda),
        "python": platform.python_version(),
    }


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def latency_ms(fn, device: str, warmup: int, repeats: int) -> list[float]:
    """Wall milliseconds of ``fn()`` per call after ``warmup`` calls, synchronised before and after."""
    if warmup < 0 or repeats < 1:
        raise ValueError(f"latency_ms: need warmup >= 0 and repeats >= 1, got {warmup}, {repeats}")
    for _ in range(warmup):
        fn()
    _sync(device)
    out = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def p95(values) -> float:
    """The 95th percentile, linear interpolation (numpy's default)."""
    return float(np.percentile(np.asarray(values, float), 95))


def check_model(
    name: str, device: str, units: int = 5, warmup: int = 10, repeats: int = 50, tiny: bool = False
) -> dict:
    """Train ``name`` at the paper profile's config for ``units`` budget units (after a one-unit run that
    absorbs the set-up), time it per unit, then time batch-1 inference."""
    import torch

    from lib.config import load_profile
    from lib.models import REGISTRY, make_model, model_config

    profile = load_profile("paper")
    fields = REGISTRY[name].budget_fields
    over = {"device": device, "precision": "fp32"}
    cfg_fields = {f.name for f in dataclasses.fields(REGISTRY[name].config_class)}
    if "allow_random_backbone" in cfg_fields:
        over["allow_random_backbone"] = True  # a GPU machine may lack the weights; the timing is the same
    if tiny:
        over.update({k: v for k, v in REGISTRY[name].quick_fit.items() if k in cfg_fields})
        over["input_size"] = TINY["input_size"]
    over.update(REGISTRY[name].probe_overrides)
    if "teacher_iterations" in cfg_fields:
        over["teacher_iterations"] = 1 if tiny else 200
    over = {k: v for k, v in over.items() if k in cfg_fields}
    cfg = model_config(name, profile, **over)
    n = max(int(getattr(cfg, "batch_size", 4)), int(getattr(cfg, "memory_samples", 0)) + 1)
    images = _probe_images(n if fields else n * (units + 1), tuple(cfg.input_size), seed=0)

    def fit(k: int):
        if fields:  # budget units: iterations (or epochs of one batch)
            model = make_model(name, profile, **{**over, fields[0]: k})
            data = images
        else:  # units are training images
            model = make_model(name, profile, **over)
            data = images[: k * n]
        _sync(device)
        t0 = time.perf_counter()
        model.fit(data)
        _sync(device)
        return model, time.perf_counter() - t0

    _, base_s = fit(1)
    model, full_s = fit(1 + units)
    per_unit = (full_s - base_s) / (units * (1 if fields else n))
    x = images[:1]
    with torch.no_grad():
        ms = latency_ms(lambda: model.predict(x), device, warmup, repeats)
    return {
        "model": name,
        "input": "x".join(str(v) for v in cfg.input_size),
        "device": device,
        "tiny": tiny,
        "train_units": units * (1 if fields else n),
        "train_unit": fields[0] if fields else "image",
        "train_s_per_unit": round(per_unit, 5),
        "median_ms": round(statistics.median(ms), 3),
        "p95_ms": round(p95(ms), 3),
        "repeats": repeats,
    }


def run_check(models, out: Path, tiny: bool = False, units: int = 5, warmup: int = 10, repeats: int = 50):
    """Every model's row, written to ``out`` (CSV, atomically) and returned. Without CUDA only ``tiny``
    runs (on the CPU); otherwise ``NoCudaError`` says what is missing."""
    import torch

    from lib.fileio import write_csv
    from lib.models import REGISTRY

    if not tiny and not torch.cuda.is_available():
        raise NoCudaError(
            f"gpu_check measures the paper profile on a GPU, and this machine has none "
            f"(torch {torch.__version__}, built for CUDA {torch.version.cuda}; "
            "torch.cuda.is_available() is False). Run it where CUDA works, or add --tiny to test its logic "
            "on the CPU."
        )
    device = "cpu" if tiny else "cuda"
    env = environment(device)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    rows = []
    for name in models:
        if name not in REGISTRY:
            raise ValueError(f"gpu_check: unknown model {name!r}; choose from {sorted(REGISTRY)}")
        row = check_model(name, device, units, warmup, repeats, tiny)
        rows.append({**row, **{k: env[k] for k in ("gpu", "driver", "torch", "cuda")}, "measured_at": stamp})
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    write_csv(out, table)
    return table, env
