"""Command line: ``python -m lib run --profile quick`` runs the workbook end to end."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lib", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="execute the numbered notebooks with papermill and render HTML")
    run.add_argument("--profile", default="auto", help="paper | quick | smoke | auto (default)")
    run.add_argument("--data-root", default=None, help="where data is written (default data/<profile>)")
    run.add_argument("--runs-dir", default=None, help="where executed notebooks go (default runs/<profile>)")
    run.add_argument("--only", default=None, help="comma-separated notebook numbers, e.g. 00,01")
    run.add_argument("--seed", type=int, default=None, help="override the profile's seed")
    sim = sub.add_parser("simulate", help="render the simulated sealant line only")
    sim.add_argument("--profile", default="auto")
    sim.add_argument("--data-root", required=True)
    sim.add_argument("--seed", type=int, default=None)
    sim.add_argument("--workers", type=int, default=None)
    args = parser.parse_args(argv)

    if args.command == "run":
        from lib.workbook import run_workbook

        only = [s.strip() for s in args.only.split(",")] if args.only else None
        results = run_workbook(args.profile, args.data_root, args.runs_dir, only, args.seed)
        failed = [r for r in results if r["error"]]
        return 1 if failed else 0
    if args.command == "simulate":
        import json

        from lib.acquire.sealant_line import simulate_line
        from lib.config import load_profile

        summary = simulate_line(load_profile(args.profile), args.data_root, args.seed, args.workers)
        print(json.dumps({k: v for k, v in summary.items() if k != "templates"}, indent=2))
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
