"""Inspection throughput idle and beside a busy neighbour, per thread count (docs/inspection.md).

    .venv/bin/python benchmarks/inspect_load.py --bundle data/quick/bundle --stream data/quick/streams/seed2

For each thread count (``--threads``, default 1,2) it runs ``inspect`` on the first ``--frames``
frames of the stream twice, interleaved: idle, and with a neighbour -- one CPU-bound process this
script starts before and kills after (a pure-Python busy loop, as another job on the line PC would
be). Each run is a fresh process (torch's thread pool is set once per process). Prints frames/s, the
median model time per underbody and the ratio busy / idle, with the CPU named; writes a CSV beside
the stream (``inspect_load.csv``). The default ``--threads`` of ``inspect``
(``lib.inspection.DEFAULT_THREADS``) is the count whose throughput holds up best under load.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from lib.config import cpu_description  # noqa: E402

CHILD = """
import json, sys, numpy as np
from lib.inspection.inspector import run_inspection
from lib.inspection.evaluate import read_jsonl
bundle, stream, out, threads, frames = sys.argv[1:6]
s = run_inspection(bundle, stream, out, progress=False, overlays="none", threads=int(threads), max_frames=int(frames))
rec = read_jsonl(out + "/verdicts.jsonl")
model = [r["latency_ms"]["model"] for r in rec]
print(json.dumps({"frames_per_s": s["frames_per_s"], "underbodies": s["underbodies"],
                  "model_ms_median": float(np.median(model)) if model else None}))
"""


def busy_neighbour() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def one_run(bundle, stream, threads: int, frames: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="inspect-load-") as tmp:
        r = subprocess.run(
            [sys.executable, "-c", CHILD, str(bundle), str(stream), tmp, str(threads), str(frames)],
            capture_output=True,
            text=True,
            cwd=REPO,
        )
    if r.returncode != 0:
        raise RuntimeError(f"inspect run failed:\n{r.stderr[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", required=True)
    ap.add_argument("--stream", required=True, help="a rendered stream folder (chunks)")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--frames", type=int, default=1500)
    args = ap.parse_args(argv)
    rows = []
    print(f"CPU: {cpu_description()}")
    for t in [int(x) for x in args.threads.split(",")]:
        for load in ("idle", "busy neighbour"):
            nb = busy_neighbour() if load != "idle" else None
            try:
                time.sleep(0.5 if nb else 0)
                r = one_run(args.bundle, args.stream, t, args.frames)
            finally:
                if nb:
                    nb.kill()
                    nb.wait()
            rows.append({"threads": t, "load": load, **r})
            print(rows[-1], flush=True)
    df = pd.DataFrame(rows)
    idle = df[df.load == "idle"].set_index("threads").frames_per_s
    df["busy_over_idle"] = [
        round(r.frames_per_s / idle[r.threads], 3) if r.load != "idle" else 1.0 for r in df.itertuples()
    ]
    out = Path(args.stream) / "inspect_load.csv"
    df.to_csv(out, index=False)
    print(df.to_string(index=False))
    best = df[df.load != "idle"].sort_values("frames_per_s").iloc[-1]
    print(
        f"under load the best is {int(best.threads)} thread(s): {best.frames_per_s} frames/s; written {out}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
