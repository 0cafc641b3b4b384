"""Command line: ``python -m lib run --profile quick`` runs the workbook end to end.

One function per subcommand (``cmd_<name>``, chosen with ``set_defaults(func=...)``); the data root is
resolved in one place (``lib.config.data_root_for``) and every expected failure leaves through one
path (``main``): a message naming the file or setting on stderr, exit code 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path


def _data_root(args) -> Path:
    from lib.config import data_root_for

    return data_root_for(args.profile, getattr(args, "data_root", None))


def cmd_run(args) -> int:
    from lib.workbook import run_workbook

    if args.precision:  # reaches the grid workers and the notebook kernels, which read the profile anew
        from lib.config import PRECISION_ENV

        os.environ[PRECISION_ENV] = args.precision
    only = [s.strip() for s in args.only.split(",")] if args.only else None
    models = [s.strip() for s in args.models.split(",")] if args.models else None
    profile = dry_run_profile(args.profile) if args.dry_run else args.profile
    extra = {}
    if args.views:
        extra["viewpoints"] = _views(args.views)
    if args.variants:
        extra["variants"] = _variants(args.variants)
    if args.skip:
        extra["skip"] = [k.strip() for k in args.skip.split(",") if k.strip()]
    if args.executor in ("process", "auto") and args.workers:
        extra["workers"] = args.workers
    if args.executor == "ray":
        extra.update(address=args.ray_address, gpus_per_cell=args.gpus_per_cell)
    results = run_workbook(
        profile,
        args.data_root,
        args.runs_dir,
        only,
        args.seed,
        executor=args.executor,
        models=models,
        **extra,
    )
    failed = [r for r in results if r["error"]]
    if args.dry_run and not only and not args.no_resource_plan:
        from lib.config import load_profile
        from lib.models import run_models

        print(resource_plan(run_models(load_profile(profile), models), args.runs_dir))
    if failed:
        print(f"{len(failed)} notebook(s)/cell(s) FAILED:", file=sys.stderr)
        for r in failed:
            print(f"  {r.get('notebook') or r.get('cell')}: {r['error']}", file=sys.stderr)
    return 1 if failed else 0


def dry_run_profile(profile: str) -> str:
    """``run --profile paper --dry-run`` -> ``paper-dry``: the paper's geometry at token counts and budgets."""
    if profile not in ("paper", "paper-dry", "auto"):
        raise ValueError(f"--dry-run is a dry run of the paper profile; got --profile {profile}")
    return "paper-dry"


def _views(text: str) -> tuple:
    from lib.config import VIEWPOINTS

    views = tuple(v.strip() for v in text.split(",") if v.strip())
    bad = [v for v in views if v not in VIEWPOINTS]
    if bad or not views:
        raise ValueError(
            f"--views: unknown viewpoint(s) {bad or text!r}; choose from {', '.join(VIEWPOINTS)}"
        )
    return views


def resource_plan(models, runs_dir=None, profile: str = "paper") -> str:
    """Probe each model at the paper profile's sizes in a fresh process, and write and return the plan
    (``runs/paper-dry/resource_plan.md`` and ``.json``; ``lib.models.resources``)."""
    from lib.config import REPO_ROOT, cpu_description
    from lib.fileio import write_json, write_text
    from lib.models import resources as R

    table, totals = R.plan(R.probe_models(models, profile), profile)
    text = R.plan_markdown(table, totals, cpu_description())
    out = Path(runs_dir) if runs_dir else REPO_ROOT / "runs" / "paper-dry"
    write_text(out / "resource_plan.md", text + "\n")
    write_json(out / "resource_plan.json", {"models": table.to_dict("records"), **totals})
    return text


def cmd_resource_plan(args) -> int:
    from lib.models import GRID_MODELS

    models = [m.strip() for m in args.models.split(",")] if args.models else list(GRID_MODELS)
    print(resource_plan(models, args.runs_dir))
    return 0


def cmd_table8(args) -> int:
    from lib.config import REPO_ROOT
    from lib.report import markdown_table, table8_comparison

    csv = Path(args.csv) if args.csv else REPO_ROOT / "runs" / "paper" / "gpu_check.csv"
    print(markdown_table(table8_comparison(csv)))
    return 0


def _variants(text: str) -> tuple:
    variants = tuple(v.strip() for v in text.split(",") if v.strip())
    if not variants or set(variants) - {"raw", "masked"}:
        raise ValueError(f"--variants: choose from raw, masked; got {text!r}")
    return tuple(v for v in ("raw", "masked") if v in variants)


def cmd_readme_results(args) -> int:
    from lib.config import REPO_ROOT, resolve_profile_name
    from lib.report import update_readme

    print(
        update_readme(REPO_ROOT / "runs" / resolve_profile_name(args.profile) / "results.md", note=args.note)
    )
    return 0


def cmd_simulate(args) -> int:
    from lib.acquire.sealant_line import simulate_line
    from lib.config import load_profile

    summary = simulate_line(load_profile(args.profile), args.data_root, args.seed, args.workers)
    print(json.dumps({k: v for k, v in summary.items() if k != "templates"}, indent=2))
    return 0


def cmd_check_data(args) -> int:
    from lib.dataset.manifest import read_manifest

    root = _data_root(args)
    t0 = time.perf_counter()
    df = read_manifest(
        root / "data_manifest.csv", data_root=root, check_files=True, verify=not args.no_verify
    )
    what = "files, sizes and SHA-256" if not args.no_verify else "files and sizes"
    print(
        f"check-data: {root / 'data_manifest.csv'}: {len(df)} rows, {df.viewpoint.nunique()} viewpoint(s); "
        f"{what} OK in {time.perf_counter() - t0:.1f} s"
    )
    return 0


def cmd_bundle(args) -> int:
    from lib.inspection.bundle import make_bundle

    out = make_bundle(
        args.profile,
        args.model,
        args.out,
        args.seed,
        args.variant == "masked",
        args.data_root,
        args.alerts,
        allow_random_backbone=args.allow_random_backbone,
        size_budget=args.size_budget,
        diagnose=args.diagnose,
    )
    print(f"bundle written to {out}")
    return 0


def cmd_inspect(args) -> int:
    from lib.inspection.inspector import run_inspection

    summary = run_inspection(
        args.bundle,
        args.source,
        args.out,
        follow=args.follow,
        idle_timeout=args.idle_timeout,
        mqtt=args.mqtt,
        alerts_config=args.alerts,
        overlays=args.overlays,
        backend=args.backend,
        precision=args.precision,
        threads=args.threads,
        no_car_s=args.no_car_timeout,
        heartbeat_s=args.heartbeat,
    )
    print(json.dumps(summary))
    return 130 if summary["interrupted"] else 0


def cmd_export(args) -> int:
    from lib.fileio import sha256_file
    from lib.models import export as E
    from lib.models.base import AnomalyModel
    from lib.store import Cell, cell_dir

    if args.cell:
        if args.out is None:
            raise ValueError("export --cell needs --out FILE.onnx")
        ckpt = cell_dir(_data_root(args) / "results", Cell.from_key(args.cell)) / "checkpoint"
        jobs = [(ckpt, Path(args.out), {})]
    else:
        from lib.inspection.bundle import BundleError, register_files, verify_bundle

        bundle = Path(args.bundle)
        info = verify_bundle(bundle)
        if (
            args.out is None
        ):  # into the bundle, listed in its manifest (inspect --backend onnxruntime uses them)
            target = bundle / "onnx"
        else:
            target = Path(args.out)
            if target.resolve().is_relative_to(bundle.resolve()):
                raise BundleError(
                    f"--out {target} lies inside the bundle {bundle}, which would then fail its integrity "
                    "check; omit --out to write the exports into the bundle's onnx/ folder, listed in its "
                    "manifest"
                )
        jobs = [
            (
                bundle / v / "model",
                target / f"{v}.onnx",
                {f: str(bundle / r) for f, r in m.get("weights", {}).items()},
            )
            for v, m in info["views"].items()
        ]
    records = {}
    for ckpt, out, overrides in jobs:
        model = AnomalyModel.load(ckpt, overrides=overrides)
        E.export_onnx(model, out)
        probe = _probe(model)
        check = E.parity(model.predict(probe), E.OnnxPredictor(out).predict(probe))
        print(
            f"{out}: {model.name} {model.input_size[0]}x{model.input_size[1]}; parity on a probe image {check}"
        )
        records[ckpt.parent.name] = {
            "file": f"onnx/{out.name}",
            "model_sha256": sha256_file(ckpt / "weights.safetensors"),
            "parity": check,
        }
    if args.bundle and args.out is None:
        register_files(bundle, "onnx", records)
        print(
            f"{bundle / 'onnx'}: listed in {bundle / 'MANIFEST.json'}; inspect --backend onnxruntime uses it"
        )
    return 0


def cmd_check_weights(args) -> int:
    from lib.models.backbones import weights_report

    rows = weights_report(args.backbone or None)
    for r in rows:
        state = f"FOUND ({r['source']}: {r['location']})" if r["found"] else "MISSING"
        print(f"{r['backbone']}  [{r['used_by']}]  {state}")
        for place in r["looked_in"]:
            print(f"    looked in: {place}")
        if not r["found"]:
            print(f"    put torchvision's ImageNet weights at: {r['put']}")
            print(f"    or set {r['or']}")
    missing = [r["backbone"] for r in rows if not r["found"]]
    print(
        f"{len(rows) - len(missing)} of {len(rows)} paper backbone(s) here"
        + (
            f"; missing: {', '.join(missing)} (the paper profile refuses to run without them)"
            if missing
            else ""
        )
    )
    return 1 if missing and args.strict else 0


def cmd_deviations(args) -> int:
    from lib.config import load_profile
    from lib.models import table3_deviations
    from lib.report import deviations_markdown

    prof = load_profile(args.profile)
    print(deviations_markdown(prof.name, table3_deviations(prof)))
    return 0


def _probe(model):
    """A deterministic textured probe image at the model's input size (export's parity check)."""
    import numpy as np

    w, h = model.input_size
    return np.random.default_rng(0).integers(0, 256, (1, h, w, 3), dtype=np.uint8)


def _expected_errors() -> tuple[type, ...]:
    """Failures a user can fix (bad input, missing file, busy data root): a message, never a traceback."""
    from lib.dataset.manifest import ManifestError
    from lib.fileio import DataRootBusy
    from lib.inspection.bundle import BundleError
    from lib.inspection.inspector import StreamError
    from lib.models.base import CheckpointError

    return (
        BundleError,
        CheckpointError,
        ConnectionError,
        DataRootBusy,
        FileNotFoundError,
        ManifestError,
        StreamError,
        ValueError,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lib", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="execute the numbered notebooks with papermill and render HTML")
    run.add_argument("--profile", default="auto", help="paper | quick | smoke | paper-dry | auto (default)")
    run.add_argument(
        "--dry-run",
        action="store_true",
        help="the paper profile's geometry and model sizes at token counts and 2 iterations, on a CPU "
        "(profile paper-dry): proves shapes, memory and files, and prints the full run's resource plan",
    )
    run.add_argument(
        "--views", default=None, help="comma-separated viewpoints of the training grid (default: all three)"
    )
    run.add_argument("--variants", default=None, help="raw, masked or both (default: both)")
    run.add_argument(
        "--skip", default=None, help="comma-separated notebooks after the grid to leave out, e.g. 10"
    )
    run.add_argument(
        "--no-resource-plan",
        action="store_true",
        help="--dry-run: skip the resource probe (the plan: python -m lib resource-plan)",
    )
    run.add_argument("--data-root", default=None, help="where data is written (default data/<profile>)")
    run.add_argument("--runs-dir", default=None, help="where executed notebooks go (default runs/<profile>)")
    run.add_argument("--only", default=None, help="comma-separated notebook numbers, e.g. 00,01")
    run.add_argument("--seed", type=int, default=None, help="override the profile's data seed")
    run.add_argument(
        "--executor",
        default="sequential",
        choices=["sequential", "process", "ray", "auto"],
        help="how grid cells run; auto = a process pool (one worker per core) without a GPU, else sequential",
    )
    run.add_argument(
        "--workers", type=int, default=None, help="process executor: parallel cells (default: cores)"
    )
    run.add_argument("--ray-address", default=None, help="ray executor: join this cluster (default: local)")
    run.add_argument("--gpus-per-cell", type=float, default=0.0, help="ray executor: GPUs declared per cell")
    run.add_argument(
        "--models",
        default=None,
        help="comma-separated grid models (default: the profile's grid_models); '+name' adds to them, "
        "e.g. --models +efficientad_m",
    )
    run.add_argument(
        "--precision",
        default=None,
        choices=["fp32", "bf16", "auto"],
        help="the models' precision for this run (default: the profile's, auto; lib/precision.py)",
    )
    rp = sub.add_parser(
        "resource-plan",
        help="measure each paper model at Table 3's sizes on this CPU and print the full run's resource plan",
    )
    rp.add_argument("--models", default=None, help="comma-separated (default: every grid model)")
    rp.add_argument("--runs-dir", default=None, help="where the plan is written (default runs/paper-dry)")
    t8 = sub.add_parser("table8", help="the paper's Table 8 beside benchmarks/gpu_check.py's GPU latencies")
    t8.add_argument("--csv", default=None, help="gpu_check's CSV (default runs/paper/gpu_check.csv)")
    rd = sub.add_parser(
        "readme-results", help="copy runs/<profile>/results.md into the README's results block"
    )
    rd.add_argument("--profile", default="quick")
    rd.add_argument("--note", default="")
    sim = sub.add_parser("simulate", help="render the simulated sealant line only")
    sim.add_argument("--profile", default="auto")
    sim.add_argument("--data-root", required=True)
    sim.add_argument("--seed", type=int, default=None)
    sim.add_argument("--workers", type=int, default=None)
    chk = sub.add_parser(
        "check-data", help="validate a data root's manifest: files, sizes, paths and every image's SHA-256"
    )
    chk.add_argument("--profile", default="auto", help="the data root is data/<profile> unless --data-root")
    chk.add_argument("--data-root", default=None)
    chk.add_argument("--no-verify", action="store_true", help="skip the SHA-256 check (files and sizes only)")
    bun = sub.add_parser("bundle", help="pack a trained model (three viewpoints) for the inspection loop")
    bun.add_argument("--profile", default="auto")
    bun.add_argument("--model", required=True, help="grid model name, e.g. patchcore")
    bun.add_argument("--seed", type=int, default=0)
    bun.add_argument("--variant", default="masked", choices=["masked", "raw"])
    bun.add_argument("--data-root", default=None, help="default data/<profile>")
    bun.add_argument("--alerts", default=None, help="alert rules (TOML); default lib/inspection/alerts.toml")
    bun.add_argument("--out", required=True)
    bun.add_argument(
        "--allow-random-backbone",
        action="store_true",
        help="pack a model whose backbone has no pretrained weights here (every verdict says so)",
    )
    bun.add_argument(
        "--size-budget",
        type=float,
        default=None,
        metavar="PER_1000",
        help="carry a size-aware policy fitted on validation at this false-alarm budget per 1,000 normal "
        "underbodies per view; inspect then decides with it (lib/studies/operating_points.py)",
    )
    bun.add_argument(
        "--diagnose",
        action="store_true",
        help="carry a defect-type classifier trained on validation defects; inspect names each region's type",
    )
    from lib.inspection import DEFAULT_THREADS

    ins = sub.add_parser("inspect", help="inspect a video, a folder of videos or a stream with a bundle")
    ins.add_argument("source", help="video file | folder of videos | anything cv2.VideoCapture opens")
    ins.add_argument("--bundle", required=True)
    ins.add_argument("--out", default="inspection", help="verdicts.jsonl, alerts.jsonl, overlays/")
    ins.add_argument("--follow", action="store_true", help="folder: wait for new videos")
    ins.add_argument("--idle-timeout", type=float, default=None, help="--follow: stop after N s without one")
    ins.add_argument("--mqtt", default=None, help="HOST:PORT: publish verdicts and alerts")
    ins.add_argument("--alerts", default=None, help="alert rules (TOML); default the bundle's")
    ins.add_argument("--overlays", default="all", choices=["all", "anomalous", "none"])
    ins.add_argument(
        "--threads",
        type=int,
        default=DEFAULT_THREADS,
        help=f"torch/OpenCV/ONNX Runtime threads (default {DEFAULT_THREADS}: measured to hold up when "
        "other processes share the CPU; docs/inspection.md)",
    )
    ins.add_argument(
        "--no-car-timeout",
        type=float,
        default=60.0,
        help="seconds (of video, or of waiting with --follow) without a car before a 'no cars seen' "
        "health event (default 60)",
    )
    ins.add_argument("--heartbeat", type=float, default=30.0, help="--mqtt: heartbeat period, s (default 30)")
    ins.add_argument(
        "--precision",
        default=None,
        choices=["fp32", "bf16", "auto"],
        help="torch backend: inference precision (default: each model's own, as trained and calibrated)",
    )
    ins.add_argument(
        "--backend",
        default="torch",
        choices=["torch", "onnxruntime"],
        help="onnxruntime: export, then run ONNX",
    )
    exp = sub.add_parser("export", help="export a trained model to ONNX (graph up to image score and map)")
    src = exp.add_mutually_exclusive_group(required=True)
    src.add_argument("--cell", help="a grid cell, e.g. patchcore/front/masked/seed0")
    src.add_argument("--bundle", help="a deployment bundle: exports each viewpoint's model")
    exp.add_argument("--profile", default="auto")
    exp.add_argument("--data-root", default=None, help="--cell: default data/<profile>")
    exp.add_argument(
        "--out",
        default=None,
        help="--cell: the .onnx file; --bundle: a folder outside the bundle (default: the bundle's own "
        "onnx/, listed in its manifest)",
    )
    cw = sub.add_parser(
        "check-weights", help="which of the paper's backbones are here offline, where each was looked for"
    )
    cw.add_argument("--backbone", action="append", help="a backbone name (repeatable); default the paper's")
    cw.add_argument("--strict", action="store_true", help="exit 1 when one is missing")
    dev = sub.add_parser("deviations", help="print every setting in which a profile departs from Table 3")
    dev.add_argument("--profile", default="quick")
    for sp, fn in (
        (dev, cmd_deviations),
        (run, cmd_run),
        (rd, cmd_readme_results),
        (sim, cmd_simulate),
        (chk, cmd_check_data),
        (bun, cmd_bundle),
        (ins, cmd_inspect),
        (exp, cmd_export),
        (cw, cmd_check_weights),
        (rp, cmd_resource_plan),
        (t8, cmd_table8),
    ):
        sp.set_defaults(func=fn)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except _expected_errors() as exc:
        print(f"python -m lib {args.command}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
