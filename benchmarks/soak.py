"""The longer soak of the inspection loop (CI runs a smoke-sized one in tests/test_inspection.py).

    .venv/bin/python benchmarks/soak.py --bundle data/quick/bundle --cars 40

Renders a fresh stream (seed 5, no drift) of ``--cars`` cars at the bundle's profile into
``--work`` and runs ``lib.inspection.soak.run_soak`` on it: the broker killed and restarted, a zeroed
region in a chunk, a truncated extra chunk, a camera pause and ``inspect`` killed twice. Prints the
report (passed, failures, counts, wall time) with the CPU named; exit status 1 if it failed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lib.acquire.stream import render_stream  # noqa: E402
from lib.config import cpu_description, load_profile  # noqa: E402
from lib.inspection.bundle import verify_bundle  # noqa: E402
from lib.inspection.soak import run_soak  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", required=True)
    ap.add_argument("--cars", type=int, default=40)
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--chunk-frames", type=int, default=200)
    ap.add_argument("--work", default="/tmp/sealant-soak")
    args = ap.parse_args(argv)
    prof = load_profile(verify_bundle(args.bundle)["profile"])
    stream = Path(args.work) / "stream"
    render_stream(prof, stream, args.cars, seed=args.seed, drift=None, chunk_frames=args.chunk_frames)
    report = run_soak(args.bundle, stream, Path(args.work) / "soak", feed_s=1.0)
    print(f"CPU: {cpu_description()}\n{json.dumps(report, indent=1)}")
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
