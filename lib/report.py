"""The report a reviewer reads: ``runs/<profile>/index.html``, ``results.md`` and the README's results block.

Reads only the tables that notebooks 08-09 wrote (``lib.evaluate.tables``) and the run's result rows.
"""

from __future__ import annotations

import html
from pathlib import Path

from lib.config import REPO_ROOT, VIEWPOINTS
from lib.evaluate import tables
from lib.fileio import write_text


def headline_table(data_root: Path):
    """The headline table written by notebook 08: models as rows, one column per metric and
    viewpoint, each 'value [95% bootstrap interval]' (mean ± std over seeds first when several)."""
    t = tables.read(data_root, "headline", missing_ok=True)
    return None if t is None else t.rename(columns={"label": "model († = masked)"})


def claims_table(data_root: Path):
    """The claims table written by notebook 09."""
    return tables.read(data_root, "claims", missing_ok=True)


def _no_local_paths(text: str, data_root) -> str:
    """``text`` with the data root (absolute, as cells record it) written as '<data root>'."""
    for root in {str(Path(data_root).resolve()), str(data_root)}:
        text = text.replace(root, "<data root>")
    return text


def differences_table(data_root: Path, profile):
    """How this run differs from the paper, per model it trained: input size and training budget
    against Table 3 (``lib.models.budget_line``), backbone and where its weights came from (the cells'
    ``meta.json``) against Table 3's, training images per cell, seeds and precision."""
    import json

    import pandas as pd

    from lib.evaluate.claims.paper import PAPER_NAMES
    from lib.models import REGISTRY, budget_line
    from lib.store import cell_dir, list_cells

    store = Path(data_root) / "results"
    cells = list_cells(store) if store.is_dir() else []
    rows = []
    for name in [m for m in PAPER_NAMES if any(c.model == m for c in cells)]:
        cell = next(c for c in cells if c.model == name)
        meta = json.loads((cell_dir(store, cell) / "meta.json").read_text())
        size, _, budget = budget_line(name, profile).partition(", ")
        seeds = len({c.seed for c in cells if c.model == name})
        rows.append(
            {
                "model": PAPER_NAMES[name],
                "input size (Table 3)": size,
                "training budget (ours / Table 3)": budget,
                "backbone and weights": _no_local_paths(str(meta.get("backbone") or "—"), data_root),
                "Table 3 backbone": REGISTRY[name].table3_backbone,
                "training images per cell": meta.get("n_train", "—"),
                "seeds (paper: 3)": seeds,
                "precision": meta.get("precision", "fp32"),
            }
        )
    run = {c.model for c in cells}
    for name in [m for m in PAPER_NAMES if m not in run and m != "baseline"] if rows else []:
        rows.append(
            {
                **dict.fromkeys(rows[0], "—"),
                "model": PAPER_NAMES[name],
                "input size (Table 3)": "not run in this profile",
                "training budget (ours / Table 3)": f"python -m lib run --models +{name} adds it",
                "Table 3 backbone": REGISTRY[name].table3_backbone,
            }
        )
    return pd.DataFrame(rows) if rows else None


GLOSSARY = (
    ("†", "the model sees the ROI-masked image (sealant region plus a margin, paper section 4.4)"),
    ("oracle threshold", "the paper's operating point: chosen on the test set itself (max F1 / max IoU)"),
    ("val-calibrated", "the same rule applied on the validation split, then fixed for the test split"),
    ("95% interval", "percentile bootstrap over test underbodies, drawn jointly in all viewpoints"),
    ("DeLong", "test of two AUROCs on the same test images (valid with one training seed)"),
    ("p_BH", "p-value after Benjamini-Hochberg correction within a family of tests"),
    ("not decidable here", "the verdict would rest on a model at chance, other hardware, or no interval"),
    ("baseline", "our per-pixel Gaussian floor; not a paper model, in no claim"),
    ("simulated line", "the rendered conveyor video this workbook builds, not the paper's NDA data"),
)


def markdown_table(df) -> str:
    cols = [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def deviations_markdown(profile_name: str, rows: list[dict]) -> str:
    """``table3_deviations`` as a markdown table (tuples as 212×120)."""
    import pandas as pd

    if not rows:
        return f"The `{profile_name}` profile uses Table 3's settings unchanged."

    def fmt(v):
        return "×".join(map(str, v)) if isinstance(v, tuple) else str(v)

    df = pd.DataFrame(rows)
    for col in ("Table 3", profile_name):
        df[col] = df[col].map(fmt)
    return markdown_table(df)


README_START, README_END = "<!-- results:start -->", "<!-- results:end -->"


STUDIES_START, STUDIES_END = "<!-- studies:start -->", "<!-- studies:end -->"


def _replace_block(text: str, start: str, end: str, body: str, where) -> str:
    if start not in text or end not in text:
        raise ValueError(f"{where} has no {start} ... {end} block")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{start}\n{body}\n{end}{tail}"


def update_readme(results_md: Path, readme: Path = REPO_ROOT / "README.md", note: str = "") -> Path:
    """Replace the README's generated results block with a run's ``results.md``, and its studies block
    with the run's ``studies.md`` when there is one (never typed by hand)."""
    if not results_md.is_file():
        raise FileNotFoundError(f"no results table at {results_md}: run the workbook first")
    body = results_md.read_text().strip() + ("\n\n" + note.strip() if note else "")
    text = _replace_block(readme.read_text(), README_START, README_END, body, readme)
    studies = results_md.with_name("studies.md")
    if studies.is_file():
        text = _replace_block(text, STUDIES_START, STUDIES_END, studies.read_text().strip(), readme)
    return write_text(readme, text)


def studies_markdown(data_root, dry: bool = False) -> str | None:
    """The README's studies block: the headline of each study beyond the paper (test split, this run)
    for the model notebook 09 diagnosed in detail (its ``diagnosis_model``, the bundled one), from the
    tables notebooks 09 and 11 wrote; None before they ran."""
    if data_root is None:
        return None
    read = {
        n: _study_table(data_root, n)
        for n in ("size_policy", "diagnosis_summary", "photometric_shift", "photometric_mitigation")
    }
    if all(v is None for v in read.values()):
        return None
    detail = _study_table(data_root, "diagnosis_per_type")
    found = [t for t in read.values() if t is not None and "model" in t and len(t)]
    if detail is not None and len(detail):
        model = str(detail.model.iloc[0])
    elif found:
        model = sorted(found[0].model.astype(str))[0]
    else:
        return None
    rows = []
    sp = read["size_policy"]
    if sp is not None and len(sp[(sp.model == model) & sp.masked]):
        t = sp[(sp.model == model) & sp.masked].set_index("metric")
        fn = "; ".join(
            f"{c} {t.loc[f'fn_rate_{c}', 'size_aware']:.2f} vs {t.loc[f'fn_rate_{c}', 'single']:.2f} "
            f"(diff. {t.loc[f'fn_rate_{c}', 'difference_ci']})"
            for c in ("small", "medium", "large")
        )
        fa = t.loc["false_alarms_per_1000"]
        rows.append(
            f"| size-aware vs one threshold, budget {sp.budget_per_1000.iloc[0]:g} / 1,000 (val) | FN rate {fn}; "
            f"false alarms {fa.size_aware:.0f} vs {fa.single:.0f} per 1,000 |"
        )
    ds = read["diagnosis_summary"]
    if ds is not None and "accuracy" in ds and len(ds[ds.model == model].dropna(subset=["accuracy"])):
        d = ds[ds.model == model].dropna(subset=["accuracy"]).iloc[0]
        rows.append(
            f"| defect type of detected regions ({int(d.n_test)} test defects, {int(d.undetected_test)} not detected) | "
            f"accuracy {d.accuracy:.2f} [{d.accuracy_ci}] vs majority ({d.baseline}) {d.baseline_accuracy:.2f}; "
            f"shuffled-feature control {d.shuffled_accuracy:.2f} |"
        )
    ps = read["photometric_shift"]
    if ps is not None and len(ps[(ps.model == model) & ps.masked]):
        g = ps[(ps.model == model) & ps.masked].groupby(["kind", "level"]).auroc.mean()
        strongest = {k: g[k].index.max() for k in g.index.get_level_values(0).unique() if k != "none"}
        text = ", ".join(
            f"{k.replace('_', ' ')} {lv:g}: {g[(k, lv)]:.2f}" for k, lv in sorted(strongest.items())
        )
        pm = read["photometric_mitigation"]
        gain = ""
        if pm is not None and "auroc_gain" in pm:
            m = pm[(pm.model == model) & pm.masked & (pm.kind != "none")].dropna(subset=["auroc_gain"])
            if len(m):
                best = m.loc[m.auroc_gain.idxmax()]
                gain = (
                    f"; normalisation: {best.auroc_gain:+.2f} at {best.kind.replace('_', ' ')} {best.level:g}"
                )
        rows.append(f"| image AUROC under lighting shifts (none: {g[('none', 0.0)]:.2f}) | {text}{gain} |")
    if not rows:
        return None
    banner = f"{DRY_RUN_BANNER}\n\n" if dry else ""
    return banner + f"| {model}†, test split of this run | measured |\n|---|---|\n" + "\n".join(rows)


def time_breakdown(
    results: list[dict], shared: list[dict] = (), workers: int = 1, data_root=None
) -> list[dict]:
    """Where a run's time went: each numbered notebook, the shared teachers and each model's grid cells
    (seconds each item took in its worker, kernel start and HTML included; ``workers`` ran the grid in
    parallel, so the grid's wall time is about the grid rows' sum / workers)."""
    rows = []
    for r in results:
        if r.get("notebook"):
            rows.append({"part": r["notebook"], "items": 1, "worker_s": float(r["seconds"])})
    if shared:
        rows.append(
            {
                "part": "grid: teachers",
                "items": len(shared),
                "worker_s": float(sum(r["seconds"] for r in shared)),
            }
        )
    per_model: dict[str, list[float]] = {}
    for r in results:
        if not r.get("notebook") and r.get("cell"):
            per_model.setdefault(r["cell"].split("/")[0], []).append(float(r["seconds"]))
    for model, secs in sorted(per_model.items(), key=lambda kv: -sum(kv[1])):
        rows.append({"part": f"grid: {model} cells", "items": len(secs), "worker_s": float(sum(secs))})
    studies = tables.read(data_root, "study_times", missing_ok=True) if data_root is not None else None
    if studies is not None:  # parts of notebooks 09 and 11 (their time is inside the notebook's row)
        for r in studies.itertuples(index=False):
            rows.append({"part": f"  of which {r.part}", "items": 1, "worker_s": float(r.seconds)})
    for r in rows:
        r["worker_s"] = round(r["worker_s"], 1)
        r["wall_min"] = round(r["worker_s"] / (workers if r["part"].startswith("grid") else 1) / 60, 2)
    return rows


def run_summary(results: list[dict], seconds: float, executor: str, skipped: int = 0) -> str:
    """One line saying how long this invocation took, on what, and what it ran."""
    from lib.config import cpu_description

    failed = sum(1 for r in results if r["error"])
    return (
        f"Wall time of this run: {seconds / 60:.1f} min on {cpu_description()}, executor `{executor}`; "
        f"{len(results)} notebooks/cells executed, {skipped} grid cells already done and skipped, "
        f"{failed} failed."
    )


REPORT_FIGURES = (
    ("image_auroc_intervals.png", "Image AUROC per model and viewpoint, 95% bootstrap intervals"),
    ("pixel_aupro_intervals.png", "Pixel AUPRO per model and viewpoint, 95% bootstrap intervals"),
    *(
        (
            f"qualitative_{v}.png",
            f"lower {v}: each model's map and its thresholded map at tau* (Figures 9-11)",
        )
        for v in VIEWPOINTS
    ),
    *(
        (f"misclassified_{v}.png", f"lower {v}: one misclassified test image per model (Figures 12-14)")
        for v in VIEWPOINTS
    ),
)


_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1400px;
padding:0 1rem;color:#1d232a;line-height:1.45}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{font-size:1.25rem;margin-top:2rem;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.85rem;margin:.6rem 0}
th,td{border:1px solid #d0d7de;padding:.3rem .5rem;text-align:left;vertical-align:top}
th{background:#f3f5f7}tr:nth-child(even) td{background:#fafbfc}
.summary{background:#f3f5f7;padding:.6rem .8rem;border-radius:6px}
.reproduced{background:#dff5e1!important}.contradicted{background:#fde2e1!important}
.inconclusive{background:#fff6d6!important}.not-decidable-here{background:#eceff3!important;color:#555}
.not-run-in-this-profile{background:#f7f7f7!important;color:#888}.no{background:#fde2e1!important}
.doubtful{background:#fff6d6!important}
figure{margin:1rem 0}figure img{max-width:100%;border:1px solid #ddd}figcaption{font-size:.85rem;color:#555}
.failed{color:#b00020}dt{font-weight:600}dd{margin:0 0 .3rem 1rem}h3{font-size:1.05rem}
"""


def _html_table(df, verdict_col: str | tuple | None = None) -> str:
    """A plain table; the cells of ``verdict_col`` (a column or several) carry their value as a CSS class."""
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    marked = (verdict_col,) if isinstance(verdict_col, str) else tuple(verdict_col or ())
    body = []
    for row in df.itertuples(index=False):
        cells = []
        for col, v in zip(df.columns, row, strict=True):
            cls = f" class='{html.escape(str(v).replace(' ', '-'))}'" if col in marked else ""
            cells.append(f"<td{cls}>{html.escape(str(v))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _inline_png(path: Path) -> str:
    import base64

    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _link(out_dir: Path, path, text: str) -> str:
    """An anchor relative to the index's folder (plain text when there is no file)."""
    if not path:
        return html.escape(text)
    try:
        rel = Path(path).relative_to(out_dir)
    except ValueError:
        rel = Path(path)
    return f"<a href='{html.escape(str(rel))}'>{html.escape(text)}</a>"


def _status(out_dir: Path, r: dict) -> str:
    if not r["error"]:
        return "ok"
    log = f" ({_link(out_dir, r.get('log'), 'log')})" if r.get("log") else ""
    return f"<span class='failed'>{html.escape(str(r['error']))}</span>{log}"


def _paper_layout_sections(data_root) -> list[str]:
    parts = []
    for number in (4, 5, 6, 7):
        t = tables.read(data_root, f"paper_table{number}", missing_ok=True)
        if t is not None:
            parts.append(f"<h3>Table {number}</h3>" + _html_table(t))
    if parts:
        parts.insert(
            0,
            "<h2 id='paper-tables'>Our numbers in the paper's layout</h2><p>Averaged over the three "
            "viewpoints as the paper does, in percent: ours (mean over seeds, ± std when several) with its "
            "95% interval, then the paper's mean ± std over 3 runs. Real-defect tables (5, 7) use the full "
            "test set's operating point.</p>",
        )
    return parts


def _results_sections(data_root, claims, table) -> list[str]:
    """Paper-layout tables, claims, headline table and key figures (what notebooks 08-09 wrote)."""
    parts = _paper_layout_sections(data_root) if data_root is not None else []
    if claims is not None:
        parts.append(
            "<h2>Claims of the paper, tested on this run</h2><p>Verdict rules and the tests behind each "
            "p-value: notebook 09. Numbers are this profile's (simulated line), not the paper's; "
            "<i>models</i> gives each model's input size and training budget against Table 3, "
            "<i>paper_consistent</i> whether the paper's own tables support the sentence.</p>"
            + (f"<p>{html.escape(claims_counts(claims))}</p>" if "paper_consistent" in claims else "")
            + _html_table(claims, verdict_col=("verdict", "paper_consistent"))
        )
    if table is not None:
        parts.append(
            "<h2>Headline results per viewpoint</h2><p>Test split, threshold-free; value [95% bootstrap interval over test "
            "underbodies]; mean ± std over seeds first when there are several; † = ROI-masked.</p>"
            + _html_table(table)
        )
    figs = Path(data_root) / "figures" if data_root is not None else None
    shown = [(figs / f, cap) for f, cap in REPORT_FIGURES if figs is not None and (figs / f).is_file()]
    if shown:
        parts.append("<h2>Key figures</h2>")
        parts += [
            f"<figure><img alt='{html.escape(cap)}' src='{_inline_png(p)}'><figcaption>{html.escape(cap)}"
            "</figcaption></figure>"
            for p, cap in shown
        ]
    return parts


def _study_table(data_root, name: str):
    """A study table of this run, or None when it was not written or is empty (a run with no cell of
    the kind the study needs, e.g. a raw-only dry run has no masked cell to diagnose)."""
    import pandas as pd

    try:
        t = tables.read(data_root, name, missing_ok=True)
    except pd.errors.EmptyDataError:
        return None
    return t if t is not None and len(t) else None


STUDY_FIGURES = (
    (
        "size_policy_curves.png",
        "Validation: FN rate per size class against false alarms per 1,000 normals (masked cells)",
    ),
    ("diagnosis_confusion.png", "Defect-type diagnosis on test: confusion matrix (rows true type)"),
    (
        "photometric_auroc.png",
        "Image AUROC of every trained model under graded lighting shifts (no retraining)",
    ),
    (
        "photometric_mitigation.png",
        "The mitigation (illumination normalisation) against the model without it",
    ),
)


def _studies_sections(data_root) -> list[str]:
    """Beyond the paper (8.4): size-aware operating points, defect-type diagnosis, photometric shifts."""
    if data_root is None:
        return []
    found = {
        n: _study_table(data_root, n)
        for n in ("size_policy", "diagnosis_summary", "photometric_mitigation", "photometric_cost")
    }
    shift = _study_table(data_root, "photometric_shift")
    if all(v is None for v in found.values()) and shift is None:
        return []
    parts = [
        "<h2 id='beyond'>Beyond the paper (section 8.4's future work)</h2><p>Three studies on the run's own "
        "trained cells (notebooks 09 and 11; docs/studies.md). Every rule and threshold is fitted on "
        "validation; the numbers are on test.</p>"
    ]
    if found["size_policy"] is not None:
        b = found["size_policy"].budget_per_1000.iloc[0]
        parts.append(
            f"<h3>Size-aware operating points</h3><p>A threshold per region-area class against the single "
            f"threshold, both fitted on validation at {b:g} false alarms per 1,000 normal underbodies per view; "
            "FN rate per size class and false alarms on test with 95% bootstrap intervals; difference = "
            "size-aware − single.</p>"
            + _html_table(found["size_policy"].drop(columns="budget_per_1000").round(3))
        )
    if found["diagnosis_summary"] is not None:
        parts.append(
            "<h3>Defect-type diagnosis</h3><p>Type of each detected defect region, trained on validation "
            "defects, tested on test defects (masked cells); accuracy with Wilson 95% intervals, the majority "
            "baseline, and a control trained on shuffled features.</p>"
            + _html_table(found["diagnosis_summary"].round(3))
        )
    if shift is not None:
        import pandas as pd

        t = shift.groupby(["model", "masked", "kind", "level"])["auroc"].mean().reset_index()
        wide = t.pivot_table(index=["model", "masked"], columns=["kind", "level"], values="auroc").round(3)
        wide.columns = [f"{k} {lv:g}" if k != "none" else "none" for k, lv in wide.columns]
        parts.append(
            "<h3>Photometric robustness</h3><p>Image AUROC on test (mean over views) of every trained model "
            "under graded lighting shifts, without retraining.</p>"
            + _html_table(pd.DataFrame(wide).reset_index())
        )
    if found["photometric_mitigation"] is not None:
        parts.append(
            "<p>The mitigation (per-image illumination normalisation, the model retrained on normalised crops): "
            "gain in AUROC per shift, and its cost.</p>"
            + _html_table(found["photometric_mitigation"].round(3))
            + (
                _html_table(found["photometric_cost"].round(3))
                if found["photometric_cost"] is not None
                else ""
            )
        )
    figs = Path(data_root) / "figures"
    parts += [
        f"<figure><img alt='{html.escape(cap)}' src='{_inline_png(figs / f)}'><figcaption>{html.escape(cap)}"
        "</figcaption></figure>"
        for f, cap in STUDY_FIGURES
        if (figs / f).is_file()
    ]
    return parts


def _summary_sections(data_root, profile: str | None) -> list[str]:
    """Summary of findings (notebook 09's ``findings``), a glossary, and how this run differs."""
    parts = []
    found = tables.read(data_root, "findings", missing_ok=True) if data_root is not None else None
    if found is not None:
        items = "".join(f"<li>{html.escape(str(t))}</li>" for t in found.text)
        parts.append(f"<h2 id='summary'>Summary of findings</h2><ul>{items}</ul>")
    gloss = "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>" for k, v in GLOSSARY)
    parts.append(f"<details><summary>Glossary</summary><dl>{gloss}</dl></details>")
    if profile is not None and data_root is not None:
        from lib.config import cpu_description, load_profile
        from lib.precision import describe as describe_precision

        diff = differences_table(data_root, load_profile(profile))
        if diff is not None:
            parts.append(
                "<h2 id='differences'>How this run differs from the paper</h2><p>Profile "
                f"<code>{html.escape(profile)}</code> on {html.escape(cpu_description())}; the paper: an RTX "
                "3090 at Table 3's settings, 3 seeds. Precision: "
                + html.escape(describe_precision())
                + " (per model below; bf16 only for models whose parity held, README 'Precision'). "
                "Every setting that departs from Table 3: "
                "<code>python -m lib deviations --profile "
                + html.escape(profile)
                + "</code>.</p>"
                + _html_table(diff)
            )
    return parts


def _run_sections(out_dir: Path, results: list[dict], breakdown) -> list[str]:
    """Where the time went, the notebooks and the grid cells of this run."""
    parts = []
    books = [r for r in results if r.get("notebook")]
    cells = [r for r in results if not r.get("notebook")]
    if breakdown:
        import pandas as pd

        parts.append(
            "<h2>Where the time went</h2><p>Seconds each part took in its worker (kernel start and HTML "
            "included); grid rows ran on parallel workers, so their wall time is about worker_s / workers.</p>"
            + _html_table(pd.DataFrame(breakdown))
        )
    if books:
        rows = "".join(
            f"<tr><td>{html.escape(r['notebook'])}</td><td>{_link(out_dir, r.get('report'), 'report')}</td>"
            f"<td>{_link(out_dir, r.get('html'), 'with code')}</td><td>{r['seconds']}</td>"
            f"<td>{_status(out_dir, r)}</td></tr>"
            for r in books
        )
        parts.append(
            "<h2>Notebooks</h2><table><thead><tr><th>notebook</th><th>report (no code)</th><th>with code</th>"
            f"<th>seconds</th><th>status</th></tr></thead><tbody>{rows}</tbody></table>"
        )
    if cells:
        rows = "".join(
            f"<tr><td>{_link(out_dir, r.get('html'), r.get('cell', ''))}</td><td>{r['seconds']}</td>"
            f"<td>{_status(out_dir, r)}</td><td>{html.escape(str(r.get('reason') or ''))}</td></tr>"
            for r in cells
        )
        parts.append(
            "<h2>Grid cells</h2><table><thead><tr><th>cell</th><th>seconds</th><th>status</th>"
            f"<th>why it ran</th></tr></thead><tbody>{rows}</tbody></table>"
        )
    return parts


#: the claims table's columns in the README (the index has them all)
CLAIM_SUMMARY_COLUMNS = ["section", "claim", "paper", "verdict", "paper_consistent"]


def claims_counts(claims) -> str:
    """'Verdicts: 3 reproduced, 20 not decidable here, ...; the paper's own tables: 22 yes, 5 no, ...'."""

    def counts(col):
        return ", ".join(f"{n} {k}" for k, n in claims[col].value_counts().items())

    return f"Verdicts: {counts('verdict')}. The paper's own tables support the sentence: {counts('paper_consistent')}."


def _results_markdown(title: str, table, claims, summary: str) -> str:
    md = [f"Results of the `{title}` run (test split, threshold-free, value [95% bootstrap interval]):"]
    md.append(markdown_table(table))
    if claims is not None:
        cols = [c for c in CLAIM_SUMMARY_COLUMNS if c in claims.columns]
        md += [
            "Claims of the paper tested on this run (notebook 09; the index adds our numbers, evidence and "
            f"reasons). {claims_counts(claims) if 'paper_consistent' in claims.columns else ''}",
            markdown_table(claims[cols]),
        ]
    if summary:
        md.append(summary)
    return "\n\n".join(md) + "\n"


#: what a dry run's index and results.md say first
DRY_RUN_BANNER = (
    "DRY RUN (profile paper-dry): the paper's geometry and model sizes with 2-3 underbodies per split and "
    "view, 2 training iterations and random backbones. It proves shapes, memory and files; its numbers "
    "mean nothing, so no claim of the paper is tested on them."
)


def is_dry_run(profile: str | None) -> bool:
    """Whether ``profile`` names a dry-run profile (``Profile.dry_run``)."""
    from lib.config import PROFILE_NAMES, load_profile

    return bool(profile in PROFILE_NAMES and load_profile(profile).dry_run)


def write_index(
    out_dir: Path,
    results: list[dict],
    title: str,
    data_root: Path | None = None,
    summary: str = "",
    breakdown: list[dict] | None = None,
    profile: str | None = None,
) -> Path:
    """``runs/<profile>/index.html``: the report a reviewer reads first (claims, headline table with
    intervals, key figures inline, run summary, every notebook as a report and with code) and
    ``results.md`` (the same tables for the README)."""
    dry = is_dry_run(profile)
    # a dry run's numbers come from 2 training iterations and random backbones: no claim is tested on them
    claims = claims_table(data_root) if data_root is not None and not dry else None
    table = headline_table(data_root) if data_root is not None else None
    parts = [f"<h1>{html.escape(title)}</h1>"]
    if dry:
        parts.append(f"<p class='summary'><b>{html.escape(DRY_RUN_BANNER)}</b></p>")
        summary = f"{DRY_RUN_BANNER} {summary}".strip()
    if summary:
        parts.append(f"<p class='summary'>{html.escape(summary)}</p>")
    parts += _summary_sections(data_root, profile)
    parts += _results_sections(data_root, claims, table)
    parts += _studies_sections(data_root)
    parts += _run_sections(out_dir, results, breakdown)
    page = (
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><meta name='viewport' "
        f"content='width=device-width, initial-scale=1'><title>{html.escape(title)}</title>"
        f"<style>{_STYLE}</style></head><body>{''.join(parts)}</body></html>\n"
    )
    if table is not None:
        write_text(out_dir / "results.md", _results_markdown(title, table, claims, summary))
    studies = studies_markdown(data_root, dry)
    if studies:
        write_text(out_dir / "studies.md", studies)
    return write_text(out_dir / "index.html", page)


def table8_comparison(csv_path=None):
    """The paper's Table 8 (seconds per image, RTX 3090) beside our GPU median from ``gpu_check``'s CSV;
    "not measured" where no GPU run exists, and a tiny (CPU) run is never shown as a GPU figure."""
    import pandas as pd

    from lib.evaluate.claims.paper import read_paper_tables

    paper = read_paper_tables()
    t8 = paper[paper.source == "Table 8"][["model", "mean"]].rename(columns={"mean": "paper_s"})
    measured = None
    if csv_path is not None and Path(csv_path).is_file():
        measured = pd.read_csv(csv_path)
        measured = measured[~measured.tiny.astype(bool) & measured.device.str.startswith("cuda")]
    rows = []
    for r in t8.itertuples():
        hit = None if measured is None else measured[measured.model == r.model]
        if hit is not None and len(hit):
            h = hit.iloc[-1]
            ours = f"{h.median_ms / 1e3:.3f} (p95 {h.p95_ms / 1e3:.3f}) on {h.gpu}"
        else:
            ours = "not measured (no GPU run of benchmarks/gpu_check.py)"
        rows.append({"model": r.model, "paper_s_per_image": r.paper_s, "ours_s_per_image": ours})
    return pd.DataFrame(rows)
