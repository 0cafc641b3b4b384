"""What the ``paper`` profile's models need, before anyone rents a GPU for them (issue 28).

Each model is built at Table 3's sizes and trained for one and then two units of its budget (MemSeg and
EfficientAD: iterations; EfficientAD's teacher: distillation iterations; SimpleNet: one batch of one
epoch; PatchCore and the baseline: training images). The difference of the two fits is one unit, so the
fixed costs (backbone load, teacher normalisation, the coreset) cancel. Per unit and per inferred image
this module measures on the CPU:

- FLOPs (``torch.utils.flop_counter``: matmuls and convolutions, forward and backward);
- the bytes autograd saves for the backward pass, and the largest single module's input + output (the
  transient peak of a no-grad forward);
- peak resident memory of a fresh process that does all this (``ru_maxrss``).

From tensor sizes it then estimates the GPU memory of training and inference, checks the estimate
against the memory the CPU process actually grew by, and projects times onto a stated GPU
(``GPUSpec``: spec-sheet peak x an assumed utilisation, both printed). The projection is an estimate
from FLOPs, not a measurement: ``benchmarks/gpu_check.py`` measures it where CUDA exists.
"""

from __future__ import annotations

import dataclasses
import math
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pandas as pd

GIB = 2**30


@dataclasses.dataclass(frozen=True)
class GPUSpec:
    """The GPU a plan is made for. Peak figures are the maker's spec sheet; utilisation is an assumption."""

    name: str = "RTX 3090 (24 GB, the paper's card)"
    memory_gib: float = 24.0
    fp32_tflops: float = 35.6  # dense FP32, NVIDIA's Ampere GA102 sheet
    bandwidth_gbs: float = 936.0
    #: share of peak a PyTorch training loop reaches at batch 1-8 (assumed, not measured: gpu_check does)
    utilisation: float = 0.3
    #: CUDA context, cuDNN workspace and allocator slack, added to every estimate (assumed)
    overhead_gib: float = 1.0

    @property
    def flops_per_s(self) -> float:
        return self.fp32_tflops * 1e12 * self.utilisation


def _probe_images(n: int, size: tuple[int, int], seed: int) -> np.ndarray:
    """Smooth random uint8 'crops' (W, H = ``size``): content does not change FLOPs or tensor sizes."""
    rng = np.random.default_rng(seed)
    w, h = size
    small = rng.integers(0, 256, (n, max(2, h // 16), max(2, w // 16), 3), dtype=np.uint8)
    return np.repeat(np.repeat(small, 16, axis=1), 16, axis=2)[:, :h, :w].copy()


class _Meter:
    """Counts FLOPs, autograd-saved bytes and the largest module in+out of whatever runs inside it."""

    def __init__(self):
        self.flops = 0
        self.saved_bytes = 0
        self.transient_bytes = 0

    def run(self, fn):
        import torch
        from torch.utils.flop_counter import FlopCounterMode

        def pack(t):
            if not (isinstance(t, torch.nn.Parameter) or (t.is_leaf and t.requires_grad)):
                self.saved_bytes += t.numel() * t.element_size()
            return t

        def size(x):
            if isinstance(x, torch.Tensor):
                return x.numel() * x.element_size()
            if isinstance(x, (tuple, list)):
                return sum(size(v) for v in x)
            return 0

        def hook(module, inputs, output):
            if not list(module.children()):  # leaf modules: their in + out coexist
                self.transient_bytes = max(self.transient_bytes, size(inputs) + size(output))

        handle = torch.nn.modules.module.register_module_forward_hook(hook)
        counter = FlopCounterMode(display=False)
        try:
            with counter, torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                t0 = time.perf_counter()
                out = fn()
                seconds = time.perf_counter() - t0
        finally:
            handle.remove()
        self.flops = int(counter.get_total_flops())
        return out, seconds


def _rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        import os

        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def probe_model(name: str, profile_name: str = "paper", n_images: int | None = None, seed: int = 0) -> dict:
    """One model at the profile's sizes: per-unit training and per-image inference FLOPs, bytes, CPU
    seconds, and this process's peak memory. Run it in a fresh process (``probe_models``)."""
    import resource

    import torch

    from lib.config import load_profile
    from lib.models import REGISTRY, make_model, model_config

    torch.manual_seed(seed)
    profile = load_profile(profile_name)
    fields = REGISTRY[name].budget_fields
    base = {f: 1 for f in fields}
    extra = {"device": "cpu", "precision": "fp32", **REGISTRY[name].probe_overrides}
    cfg_fields = {f.name for f in dataclasses.fields(model_config(name, profile).__class__)}
    if "allow_random_backbone" in cfg_fields:
        extra["allow_random_backbone"] = True
    extra = {k: v for k, v in extra.items() if k in cfg_fields}
    cfg = model_config(name, profile, **base, **extra)
    batch = int(getattr(cfg, "batch_size", 4))
    n = n_images or max(batch, int(getattr(cfg, "memory_samples", 0)) + 1)
    size = tuple(cfg.input_size)
    rss0 = _rss_bytes()

    def fit(images, **over):
        model = make_model(name, profile, **{**base, **extra, **over})
        meter = _Meter()
        _, seconds = meter.run(lambda: model.fit(images))
        return model, meter, seconds

    train = _probe_images(2 * n, size, seed)
    one, m1, s1 = fit(train[:n])
    units = {}
    if not fields:  # a unit is one training image
        _, m2, s2 = fit(train)
        units["image"] = (m2.flops - m1.flops) / n, (m2.saved_bytes - m1.saved_bytes) / n, (s2 - s1) / n
    for f in fields:
        _, m2, s2 = fit(train[:n], **{f: 2})
        units[f] = m2.flops - m1.flops, m2.saved_bytes - m1.saved_bytes, s2 - s1
    infer = _Meter()
    with torch.no_grad():
        one.predict(train[:1])  # warm-up
        infer.run(lambda: one.predict(train[:1]))
        t0 = time.perf_counter()  # timed apart from the meter, whose hooks cost time
        one.predict(train[:1])
        infer_s = time.perf_counter() - t0
    params = trainable = 0
    nets = [v for v in vars(one).values() if isinstance(v, torch.nn.Module)]
    seen = set()
    for net in nets:
        for p in net.parameters():
            if id(p) not in seen:
                seen.add(id(p))
                params += p.numel() * p.element_size()
    for net in nets:
        trainable += sum(p.numel() * p.element_size() for p in net.parameters() if p.requires_grad)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {
        "model": name,
        "input": f"{size[0]}x{size[1]}",
        "batch": batch,
        "units": {k: {"flops": v[0], "saved_bytes": v[1], "cpu_s": v[2]} for k, v in units.items()},
        "fit_transient_bytes": m1.transient_bytes,
        "infer_flops": infer.flops,
        "infer_transient_bytes": infer.transient_bytes,
        "infer_cpu_s": infer_s,
        "param_bytes": params,
        "trainable_bytes": trainable,
        "bank_bytes": int(getattr(getattr(one, "net", None), "memory_bank", torch.empty(0)).numel() * 4),
        "cpu_peak_bytes": peak,
        "cpu_growth_bytes": peak - rss0,
    }


def probe_models(names, profile_name: str = "paper", progress: bool = True) -> list[dict]:
    """``probe_model`` for each model, each in a fresh process (so ``ru_maxrss`` is that model's peak)."""
    import multiprocessing as mp

    from tqdm.auto import tqdm

    out = []
    for name in tqdm(list(names), desc="resource probe", disable=not progress):
        with ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as pool:
            out.append(pool.submit(probe_model, name, profile_name).result())
    return out


def paper_workload(profile_name: str = "paper") -> dict:
    """Images per viewpoint and split of a profile (Table 2 counts, Table 1 synthetics), without rendering."""
    from lib.config import VIEWPOINTS, load_profile
    from lib.dataset.splits import TRAIN_FRAMES_PER_UNDERBODY, normal_counts
    from lib.defects.synthetic import table1_counts

    prof = load_profile(profile_name)
    normals = (
        {v: dict(prof.normals_per_view) for v in VIEWPOINTS}
        if prof.normals_per_view
        else normal_counts(prof.normal_underbodies)
    )
    synth = table1_counts(prof.synthetic_fraction)
    out = {}
    for v in VIEWPOINTS:
        n_syn = sum(synth[v].values())
        out[v] = {
            "train": normals[v]["train"] * TRAIN_FRAMES_PER_UNDERBODY,
            "val": normals[v]["val"] + (n_syn + 1) // 2,
            "test": normals[v]["test"] + n_syn // 2 + int(prof.defective_underbodies.get(v, 0)),
        }
    return out


def plan(probes: list[dict], profile_name: str = "paper", gpu: GPUSpec = GPUSpec(), gpus=(1, 2, 4)):
    """Per model: memory (measured CPU peak; estimated GPU training and inference peaks against the card),
    GPU seconds per training unit and per image, and one grid cell's time; then the whole grid's wall time
    on 1..n GPUs (cells are independent: longest-first onto the least-loaded GPU, as Ray would)."""
    from lib.config import load_profile
    from lib.models import REGISTRY, model_config

    prof = load_profile(profile_name)
    work = paper_workload(profile_name)
    n_train = max(w["train"] for w in work.values())
    n_eval = max(w["val"] + w["test"] for w in work.values())
    rows, cells, once_s = [], [], 0.0
    for p in probes:
        name = p["model"]
        cfg = model_config(name, prof)
        units = REGISTRY[name].budget_units(cfg, n_train)
        # trained once per profile (the EfficientAD teacher), then read from the store
        shared = set(REGISTRY[name].shared_budget_fields)
        per_cell = sum(p["units"][u]["flops"] * k for u, k in units.items() if u not in shared)
        once = sum(p["units"][u]["flops"] * k for u, k in units.items() if u in shared)
        step_saved = max((v["saved_bytes"] for v in p["units"].values()), default=0)
        adam = 3 * p["trainable_bytes"]  # gradient + two Adam moments
        batch_in = p["batch"] * 3 * math.prod(int(x) for x in p["input"].split("x")) * 4
        train_gib = (p["param_bytes"] + adam + step_saved + p["fit_transient_bytes"] + batch_in) / GIB
        more = REGISTRY[name].plan_extras(cfg, n_train, p)  # e.g. PatchCore's bank at the paper's size
        train_gib += more.get("train_bytes", 0) / GIB
        infer_extra = more.get("infer_bytes", 0)
        infer_flops = p["infer_flops"] + more.get("infer_flops", 0)
        coreset_s = more.get("streamed_bytes", 0) / (gpu.bandwidth_gbs * 1e9 * gpu.utilisation)
        extra = more.get("note", "")
        infer_gib = (p["param_bytes"] + p["infer_transient_bytes"] + p["bank_bytes"] + infer_extra) / GIB
        train_gib += gpu.overhead_gib
        infer_gib += gpu.overhead_gib
        train_s = per_cell / gpu.flops_per_s + coreset_s
        image_s = infer_flops / gpu.flops_per_s
        cell_s = train_s + n_eval * image_s
        estimate_cpu = (p["param_bytes"] + adam + step_saved + p["fit_transient_bytes"] + batch_in) / GIB
        rows.append(
            {
                "model": name,
                "input": p["input"],
                "batch": p["batch"],
                "cpu_peak_gib": round(p["cpu_peak_bytes"] / GIB, 2),
                "cpu_growth_gib": round(p["cpu_growth_bytes"] / GIB, 2),
                "estimate_cpu_gib": round(estimate_cpu, 2),
                "gpu_train_gib": round(train_gib, 2),
                "gpu_infer_gib": round(infer_gib, 2),
                "fits_card": bool(max(train_gib, infer_gib) <= gpu.memory_gib),
                "gflop_per_unit": {u: round(v["flops"] / 1e9, 2) for u, v in p["units"].items()},
                "units_per_cell": units,
                "gflop_per_image": round(infer_flops / 1e9, 2),
                "gpu_ms_per_unit": {
                    u: round(v["flops"] / gpu.flops_per_s * 1e3, 2) for u, v in p["units"].items()
                },
                "gpu_ms_per_image": round(image_s * 1e3, 2),
                "cpu_ms_per_image": round(p["infer_cpu_s"] * 1e3, 1),
                "once_per_profile_s": round(once / gpu.flops_per_s, 3),
                "cell_s": round(cell_s, 3),
                "note": extra,
            }
        )
        once_s += once / gpu.flops_per_s
        for v in prof.grid_seeds:
            for view in work:
                for variant in ("raw", "masked"):
                    cells.append((cell_s, f"{name}/{view}/{variant}/seed{v}"))
    table = pd.DataFrame(rows)
    wall = {g: round(_makespan([c[0] for c in cells], g) + once_s, 3) for g in gpus}
    return table, {
        "gpu": dataclasses.asdict(gpu),
        "cells": len(cells),
        "train_images_per_view": n_train,
        "eval_images_per_view": n_eval,
        "wall_s_by_gpus": wall,
    }


def _makespan(durations, workers: int) -> float:
    """Longest-processing-time-first onto the least-loaded worker: the wall time of independent cells."""
    loads = [0.0] * max(1, workers)
    for d in sorted(durations, reverse=True):
        i = int(np.argmin(loads))
        loads[i] += d
    return max(loads)


def plan_markdown(table: pd.DataFrame, totals: dict, cpu: str) -> str:
    """The plan as the dry run prints it and docs/paper-run.md keeps it."""
    g = totals["gpu"]
    lines = [
        f"Resource plan for the `paper` grid ({totals['cells']} cells; {totals['train_images_per_view']} "
        f"training and {totals['eval_images_per_view']} evaluation images per view). CPU figures measured "
        f"on {cpu}; GPU figures ESTIMATED for {g['name']}: {g['fp32_tflops']} TFLOP/s FP32 x "
        f"{g['utilisation']} assumed utilisation, {g['bandwidth_gbs']} GB/s, +{g['overhead_gib']} GiB "
        "context (assumed).",
        "",
        "| model | input x batch | CPU peak GiB (grew / estimated) | GPU train GiB | GPU infer GiB | "
        "fits 24 GB | GFLOP per unit | GPU ms per unit | GFLOP / image | GPU ms / image | "
        "CPU ms / image | one cell, GPU s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in table.itertuples():
        per = ", ".join(f"{k} {v}" for k, v in r.gflop_per_unit.items())
        ms = ", ".join(f"{k} {v}" for k, v in r.gpu_ms_per_unit.items())
        lines.append(
            f"| {r.model} | {r.input} x {r.batch} | {r.cpu_peak_gib} ({r.cpu_growth_gib} / "
            f"{r.estimate_cpu_gib}) | {r.gpu_train_gib} | {r.gpu_infer_gib} | "
            f"{'yes' if r.fits_card else 'NO'} | {per} | {ms} | {r.gflop_per_image} | "
            f"{r.gpu_ms_per_image} | {r.cpu_ms_per_image} | {r.cell_s:.1f} |"
        )
    notes = [f"- {r.model}: {r.note}" for r in table.itertuples() if r.note]
    walls = ", ".join(
        f"{k} GPU{'s' if k != 1 else ''}: {v / 3600:.1f} h" for k, v in totals["wall_s_by_gpus"].items()
    )
    lines += ["", *notes, f"- whole grid, estimated wall time (Ray, longest cells first): {walls}"]
    return "\n".join(lines)
