"""The paper profile's ten-minute GPU check (issue 28): Table 8 latency and one short training run per model.

    .venv/bin/python benchmarks/gpu_check.py                 # on a machine with CUDA: the paper's sizes
    .venv/bin/python benchmarks/gpu_check.py --tiny          # anywhere: the same logic on the CPU, toy sizes

Prints the device, driver and torch versions, then per model: the training time per budget unit (after a
one-unit run that absorbs the set-up) and batch-1 inference latency at Table 3's input size (10 warm-up
calls, then 50 CUDA-synchronised repeats: median and p95). Writes ``runs/paper/gpu_check.csv`` (``--out``),
which the README's Table 8 comparison reads (``python -m lib table8``). Without CUDA (and without
``--tiny``) it exits with status 2 and says so. Backbones without local weights are random: the timing is
the same, and the CSV is about time only.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lib.config import REPO_ROOT  # noqa: E402
from lib.models import GRID_MODELS  # noqa: E402
from lib.models import gpu_check as G  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--tiny", action="store_true", help="toy sizes on the CPU: tests the logic, measures nothing"
    )
    ap.add_argument(
        "--models", default=",".join(GRID_MODELS), help="comma-separated (default: every grid model)"
    )
    ap.add_argument("--units", type=int, default=5, help="timed training units per model (default 5)")
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=50)
    ap.add_argument(
        "--out", default=None, help="CSV (default runs/paper/gpu_check.csv; --tiny: gpu_check_tiny.csv)"
    )
    args = ap.parse_args(argv)
    out = (
        Path(args.out)
        if args.out
        else REPO_ROOT / "runs" / "paper" / ("gpu_check_tiny.csv" if args.tiny else "gpu_check.csv")
    )
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    t0 = time.perf_counter()
    try:
        table, env = G.run_check(models, out, args.tiny, args.units, args.warmup, args.repeats)
    except G.NoCudaError as err:
        print(f"gpu_check: {err}", file=sys.stderr)
        return 2
    except ValueError as err:
        print(f"gpu_check: {err}", file=sys.stderr)
        return 1
    print(f"device {env['gpu']}; driver {env['driver']}; torch {env['torch']}, CUDA {env['cuda']}")
    print(table.drop(columns=["gpu", "driver", "torch", "cuda", "measured_at"]).to_string(index=False))
    print(f"written to {out} in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
