"""Per-image latency at batch 1 (paper Table 8): every model, torch vs ONNX Runtime, with a stage profile.

    .venv/bin/python benchmarks/latency.py --data-root data/quick            # the default run's cells
    .venv/bin/python benchmarks/latency.py --data-root data/quick --paper-sizes

For each model it loads the trained cell ``<model>/<view>/masked/seed0`` of the data root, takes the
view's test crops as the line gives them (crop size, uint8 BGR) and times, image by image with the
backends interleaved (warm-up excluded): ``torch`` fp32 and bf16 (``model.predict`` with the net's
precision set, ``lib.precision``) and ``onnxruntime`` (the exported fp32 graph, ``lib.models.export``),
all with the same thread count; each row states its GFLOP/s and the fraction of the CPU's peak in its
precision (printed first, with the rule that gives it). Prints median and p95
ms/image and, for torch, what share goes to pre-processing (ROI mask + resize + tensor), the network,
the nearest-neighbour search (PatchCore) and post-processing (upsampling, blur, image score); checks
that the two backends agree (largest relative difference of scores and maps). ``--paper-sizes`` also
times each model at Table 3's input size, fitted on 16 training crops (the backbone is the offline
EfficientNet-Lite0 when WideResNet50/ResNeXt101 weights are not on disk). Writes the table to
``<data root>/tables/latency.csv`` (notebook 08 shows it). The GPU column says "not measured" unless
a GPU was lent for a run of this script.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lib import precision as P  # noqa: E402
from lib.config import cpu_description  # noqa: E402
from lib.dataset.manifest import read_manifest  # noqa: E402
from lib.fileio import read_image, write_csv  # noqa: E402
from lib.inspection import DEFAULT_THREADS  # noqa: E402
from lib.masking import apply_roi  # noqa: E402
from lib.models import REGISTRY, make_model  # noqa: E402
from lib.models import export as E  # noqa: E402
from lib.models.base import AnomalyModel  # noqa: E402
from lib.models.data import load_images, resize_image, select  # noqa: E402
from lib.store import Cell, cell_dir, is_done  # noqa: E402


def stages(model, x: torch.Tensor) -> dict:
    """One image's inference (the model's own ``forward``, what ``predict`` runs) split by the torch
    module's top-level parts, in ms; whatever runs outside them (nearest neighbours, resizing, blur,
    normalisation) is "rest". Generic: forward hooks, no model named here."""
    net, out, starts = model.net, {}, {}

    def before(name):
        return lambda *_: starts.__setitem__(name, time.perf_counter())

    def after(name):
        return lambda *_: out.__setitem__(
            name, out.get(name, 0.0) + 1e3 * (time.perf_counter() - starts[name])
        )

    hooks = []
    for name, child in net.named_children():
        hooks += [child.register_forward_pre_hook(before(name)), child.register_forward_hook(after(name))]
    try:
        t0 = time.perf_counter()
        with torch.inference_mode():
            net.eval()(x)
        total = 1e3 * (time.perf_counter() - t0)
    finally:
        for h in hooks:
            h.remove()
    out["rest"] = total - sum(out.values())
    return out


def preprocess(crop, roi, size):
    return torch.from_numpy(np.ascontiguousarray(resize_image(apply_roi(crop, roi), size))[None])


def conv_gflop(model, x: torch.Tensor) -> float:
    """FLOPs (2 x multiply-accumulates) of every Conv2d and Linear in one forward pass, in GFLOP: the
    work that bounds CPU latency here, against which the peak fraction is stated."""
    total = [0]

    def hook(m, inp, out):
        if isinstance(m, torch.nn.Conv2d):
            total[0] += out.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]
        else:
            total[0] += out.numel() * m.in_features

    hooks = [
        m.register_forward_hook(hook)
        for m in model.net.modules()
        if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)
    ]
    try:
        with torch.inference_mode():
            model.net.eval()(x)
    finally:
        for h in hooks:
            h.remove()
    return 2 * total[0] / 1e9


def measure(model, crops, roi, onnx_path, threads, warmup=3) -> list[dict]:
    """Median and p95 ms/image of torch fp32, torch bf16 and ONNX Runtime (fp32), interleaved image by
    image; the torch fp32 stage split; each backend's largest difference from torch fp32; GFLOP/s and
    the fraction of the CPU's peak (``lib.precision.peak_gflops``, all ``threads`` cores)."""
    ort = E.OnnxPredictor(E.export_onnx(model, onnx_path), threads)
    net = model.net
    backends = {
        ("torch", "fp32"): lambda x: _at(net, "fp32", model.predict, x),
        ("torch", "bf16"): lambda x: _at(net, "bf16", model.predict, x),
        ("onnxruntime", "fp32"): ort.predict,
    }
    times = {k: [] for k in backends}
    diffs = {k: [] for k in backends}
    prof, pre = [], []
    for i, crop in enumerate(crops):
        t0 = time.perf_counter()
        x = preprocess(crop, roi, model.input_size)
        t_pre = 1e3 * (time.perf_counter() - t0)
        outs = {}
        for key, fn in backends.items():
            t0 = time.perf_counter()
            with torch.inference_mode():
                outs[key] = fn(x.numpy())
            if i >= warmup:
                times[key].append(t_pre + 1e3 * (time.perf_counter() - t0))
        if i >= warmup:
            pre.append(t_pre)
            with P.module_precision(net, "fp32"):
                prof.append(stages(model, x))
            for key in backends:
                diffs[key].append(E.parity(outs[("torch", "fp32")], outs[key]))
    with P.module_precision(net, "fp32"):
        gflop = conv_gflop(model, preprocess(crops[0], roi, model.input_size))
    peak = P.peak_gflops()
    rows = []
    p = pd.DataFrame(prof).median()
    total = float(np.median(pre)) + float(p.sum())
    for (backend, prec), ts in times.items():
        med = float(np.median(ts))
        cores_peak = peak[f"{prec}_gflops"] * threads
        achieved = gflop / (med / 1e3)
        row = {
            "model": model.name,
            "input": f"{model.input_size[0]}x{model.input_size[1]}",
            "backend": backend,
            "precision": prec,
            "threads": threads,
            "median_ms": round(med, 2),
            "p95_ms": round(float(np.percentile(ts, 95)), 2),
            "images": len(ts),
            "conv+linear GFLOP": round(gflop, 2),
            "GFLOP/s": round(achieved, 1),
            "% of peak": round(100 * achieved / cores_peak, 1) if cores_peak > 0 else "no native unit",
        }
        if (backend, prec) == ("torch", "fp32"):
            row["pre-processing %"] = round(100 * float(np.median(pre)) / total, 1)
            parts = ", ".join(f"{k} {100 * float(v) / total:.0f}%" for k, v in p.items() if v > 0)
            row["stages (share of median)"] = parts
        else:
            row["max rel. diff vs torch fp32"] = f"{max(max(d.values()) for d in diffs[(backend, prec)]):.1e}"
        rows.append(row)
    return rows


def _at(net, precision, fn, x):
    with P.module_precision(net, precision):
        return fn(x)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-root", required=True)
    ap.add_argument("--view", default="center")
    ap.add_argument("--images", type=int, default=30)
    ap.add_argument(
        "--threads",
        type=int,
        default=DEFAULT_THREADS,
        help=f"torch / ONNX Runtime threads (default {DEFAULT_THREADS}: inspect's, see benchmarks/inspect_load.py)",
    )
    ap.add_argument("--models", default=",".join(E.exportable()))
    ap.add_argument("--paper-sizes", action="store_true")
    ap.add_argument("--out", default=None, help="CSV (default <data root>/tables/latency.csv)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    peak = P.peak_gflops()
    print(
        f"{cpu_description()}\n{P.describe()}\npeak per core at {peak['ghz']:.2f} GHz: fp32 "
        f"{peak['fp32_gflops']:.0f} GFLOP/s, bf16 {peak['bf16_gflops']:.0f} GFLOP/s ({peak['rule']})",
        flush=True,
    )
    root = Path(args.data_root)
    manifest = read_manifest(root / "data_manifest.csv")
    test = select(manifest, args.view, "test").iloc[: args.images + 3]
    crops = [read_image(root / p) for p in test.image_path]
    roi = read_image(root / "roi" / f"{args.view}.png")
    rows = []
    tmp = Path(tempfile.mkdtemp(prefix="latency-"))
    for name in args.models.split(","):
        cell = Cell(name, args.view, True, 0)
        if not is_done(root / "results", cell):
            print(f"{cell.key}: not trained under {root}; skipped", flush=True)
            continue
        model = AnomalyModel.load(cell_dir(root / "results", cell) / "checkpoint")
        rows += measure(model, crops, roi, tmp / f"{name}.onnx", args.threads)
        print(pd.DataFrame(rows[-3:]).to_string(index=False), flush=True)
        if args.paper_sizes:  # Table 3's input size; tiny training budgets (latency only)
            paper = make_model(name, None, **REGISTRY[name].quick_fit)
            train = load_images(
                root, select(manifest, args.view, "train", "normal").iloc[:16], paper.input_size, True
            )
            paper.fit(train, train[:2])
            rows += measure(paper, crops[:13], roi, tmp / f"{name}-paper.onnx", args.threads)
            print(pd.DataFrame(rows[-3:]).to_string(index=False), flush=True)
    table = pd.DataFrame(rows)
    table["GPU median ms"] = "not measured (no GPU lent)"
    out = Path(args.out) if args.out else root / "tables" / "latency.csv"
    write_csv(out, table)
    print(f"\n{table.to_string(index=False)}\nwritten to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
