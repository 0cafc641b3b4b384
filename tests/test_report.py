"""The report reviewers read: index with claims and headline tables and inline figures; no-code renders."""

from html.parser import HTMLParser

import matplotlib

matplotlib.use("Agg")
import nbformat
import pandas as pd
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from lib import plots
from lib.notebooks import render_html, report_path
from lib.report import write_index


class Tables(HTMLParser):
    """Every <table> as a list of rows (cell texts), every <h2>, every <img src>."""

    def __init__(self):
        super().__init__()
        self.tables, self.h2, self.imgs, self._cell, self._tag = [], [], [], None, None

    def handle_starttag(self, tag, attrs):
        self._tag = tag
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = ""
        elif tag == "img":
            self.imgs.append(dict(attrs)["src"])

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self.tables[-1][-1].append(self._cell)
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data
        elif self._tag == "h2":
            self.h2.append(data)


def _data_root(tmp_path):
    root = tmp_path / "data"
    (root / "tables").mkdir(parents=True)
    pd.DataFrame(
        {
            "label": ["patchcore", "patchcore†"],
            "image AUROC front": ["0.800 [0.700, 0.900]", "0.950 [0.900, 0.990]"],
        }
    ).to_csv(root / "tables" / "headline.csv", index=False)
    pd.DataFrame(
        {
            "id": ["T4-masking", "T8-speed"],
            "section": ["7.1", "7.3"],
            "claim": ["every masked variant outperforms its raw counterpart", "EfficientAD-S is fastest"],
            "paper": ["Table 4", "0.09 s"],
            "ours": ["1 of 1 pairs higher", "5 ms"],
            "evidence": ["95% CI [0.1, 0.2]", "order as the paper's"],
            "verdict": ["reproduced", "not decidable here"],
            "reason": ["", "timed on a CPU"],
            "models": ["PatchCore 212×120 (Table 3: 848×480), no gradient training", ""],
            "paper_consistent": ["no", "yes"],
            "paper_check": ["Table 4: MemSeg auroc 92.7 -> 90.1", "Table 8"],
        }
    ).to_csv(root / "tables" / "claims.csv", index=False)
    pd.DataFrame({"text": ["Of the paper's 2 checkable claims, this run finds: 1 reproduced."]}).to_csv(
        root / "tables" / "findings.csv", index=False
    )
    pd.DataFrame({"model": ["PatchCore†"], "AUROC": ["91.0 [85.0, 95.0] (paper 95.6 ± 0.6)"]}).to_csv(
        root / "tables" / "paper_table4.csv", index=False
    )
    fig = plots.interval_plot(
        pd.DataFrame(
            {
                "label": ["patchcore"],
                "viewpoint": ["front"],
                "level": ["image"],
                "metric": ["auroc"],
                "mean": [0.8],
                "ci_low": [0.7],
                "ci_high": [0.9],
            }
        ),
        "image",
        "auroc",
    )
    plots.save_figure(fig, root / "figures" / "image_auroc_intervals.png")
    return root


def test_index_holds_claims_headline_figures_and_links(tmp_path):
    root = _data_root(tmp_path)
    runs = tmp_path / "runs"
    runs.mkdir()
    results = [
        {
            "notebook": "08_evaluate.ipynb",
            "html": runs / "08_evaluate.html",
            "report": runs / "08_evaluate.report.html",
            "seconds": 3.0,
            "error": None,
        },
        {
            "cell": "patchcore/front/raw/seed0",
            "html": None,
            "seconds": 5.0,
            "error": "boom",
            "log": runs / "w.log",
            "reason": "new (no results yet)",
        },
    ]
    page = write_index(runs, results, "T", root, "Wall time of this run: 1.0 min").read_text()
    p = Tables()
    p.feed(page)
    assert "Claims of the paper, tested on this run" in p.h2 and "Headline results per viewpoint" in p.h2
    assert p.h2[:2] == ["Summary of findings", "Our numbers in the paper's layout"]
    assert "this run finds: 1 reproduced" in page and "<dt>p_BH</dt>" in page  # summary and glossary
    assert "91.0 [85.0, 95.0] (paper 95.6 ± 0.6)" in page
    claims = next(t for t in p.tables if t[0][:3] == ["id", "section", "claim"])
    assert claims[1][6] == "reproduced" and "class='reproduced'" in page
    assert "class='not-decidable-here'" in page and "class='no'" in page  # one CSS class per verdict
    assert "Verdicts: 1 reproduced, 1 not decidable here." in page
    head = next(t for t in p.tables if t[0][0] == "model († = masked)")
    assert head[2] == ["patchcore†", "0.950 [0.900, 0.990]"]
    assert len(p.imgs) == 1 and p.imgs[0].startswith(
        "data:image/png;base64,"
    )  # inline: the page stands alone
    assert "href='08_evaluate.report.html'" in page and "href='08_evaluate.html'" in page
    assert "boom" in page and "href='w.log'" in page
    md = (runs / "results.md").read_text()
    assert "| patchcore† | 0.950 [0.900, 0.990] |" in md
    assert "| 7.1 | every masked variant outperforms its raw counterpart | Table 4 | reproduced | no |" in md
    assert "timed on a CPU" not in md  # the README gets the short table; the index has every column


def test_report_render_has_no_code(tmp_path):
    nb = new_notebook(
        cells=[
            new_markdown_cell("# Title"),
            new_code_cell(
                "secret_variable_name = 41 + 1\nsecret_variable_name",
                outputs=[new_output("execute_result", data={"text/plain": "42"}, execution_count=1)],
            ),
        ]
    )
    path = tmp_path / "nb.ipynb"
    nbformat.write(nb, str(path))
    full = render_html(path, tmp_path / "nb.html").read_text()
    report = render_html(path, report_path(tmp_path / "nb.html"), exclude_input=True).read_text()
    assert "secret_variable_name" in full and "secret_variable_name" not in report
    assert "42" in report and "Title" in report
    assert report_path(tmp_path / "nb.html").name == "nb.report.html"


def test_time_breakdown_groups_cells_by_model_and_divides_the_grid_by_workers():
    from lib.report import time_breakdown

    results = [
        {"notebook": "00_acquire.ipynb", "seconds": 60.0, "error": None},
        {"cell": "patchcore/front/raw/seed0", "seconds": 30.0, "error": None},
        {"cell": "patchcore/back/raw/seed0", "seconds": 30.0, "error": None},
        {"cell": "efficientad_m/front/raw/seed0", "seconds": 150.0, "error": None},
    ]
    rows = {r["part"]: r for r in time_breakdown(results, [{"seconds": 120.0}], workers=2)}
    assert rows["00_acquire.ipynb"]["wall_min"] == 1.0
    assert rows["grid: teachers"]["worker_s"] == 120.0 and rows["grid: teachers"]["wall_min"] == 1.0
    assert rows["grid: patchcore cells"]["items"] == 2 and rows["grid: patchcore cells"]["worker_s"] == 60.0
    assert list(rows)[2] == "grid: efficientad_m cells"  # the costliest model first


def test_differences_table_says_which_paper_models_this_run_left_out(tmp_path):
    import json

    from lib.config import load_profile
    from lib.report import differences_table
    from lib.store import Cell, cell_dir

    store = tmp_path / "results"
    for model in ("patchcore", "efficientad_s"):
        d = cell_dir(store, Cell(model, "front", True, 0))
        d.mkdir(parents=True)
        (d / "DONE").write_text("{}")
        (d / "meta.json").write_text(json.dumps({"backbone": "x", "n_train": 54, "precision": "fp32"}))
    table = differences_table(tmp_path, load_profile("quick")).set_index("model")
    assert table.loc["EfficientAD-S", "input size (Table 3)"] == "113×65 (Table 3: 256×256)"
    assert table.loc["EfficientAD-M", "input size (Table 3)"] == "not run in this profile"
    assert "--models +efficientad_m" in table.loc["EfficientAD-M", "training budget (ours / Table 3)"]
    assert list(table.index) == ["PatchCore", "EfficientAD-S", "MemSeg", "EfficientAD-M", "SimpleNet"]
    assert table.loc["EfficientAD-M", "seeds (paper: 3)"] == "—"


def test_study_times_join_the_breakdown_and_the_studies_block_comes_from_the_tables(tmp_path):
    import pandas as pd

    from lib.evaluate import tables as T
    from lib.report import STUDIES_END, STUDIES_START, studies_markdown, time_breakdown, update_readme
    from lib.studies import timed

    root = tmp_path / "data"
    with timed(root, "11 · shifts"):
        pass
    with timed(root, "11 · shifts"):  # timed again: replaces its row
        pass
    rows = time_breakdown(
        [{"notebook": "11_photometric_shift.ipynb", "seconds": 9.0, "error": None}], data_root=root
    )
    assert [r["part"] for r in rows] == ["11_photometric_shift.ipynb", "  of which 11 · shifts"]
    assert studies_markdown(root) is None
    T.write(root, "diagnosis_summary", pd.DataFrame())  # a raw-only run: nothing to diagnose, an empty file
    assert studies_markdown(root) is None
    T.write(
        root,
        "diagnosis_summary",
        pd.DataFrame(
            [
                {
                    "model": "patchcore",
                    "masked": True,
                    "n_test": 10,
                    "undetected_test": 2,
                    "accuracy": 0.7,
                    "accuracy_ci": "0.40-0.89",
                    "baseline": "missing",
                    "baseline_accuracy": 0.3,
                    "shuffled_accuracy": 0.31,
                }
            ]
        ),
    )
    md = studies_markdown(root)
    assert "accuracy 0.70 [0.40-0.89] vs majority (missing) 0.30; shuffled-feature control 0.31" in md
    runs = tmp_path / "runs"
    (runs).mkdir()
    (runs / "results.md").write_text("R")
    (runs / "studies.md").write_text(md)
    readme = tmp_path / "README.md"
    readme.write_text(
        f"a\n<!-- results:start -->\nold\n<!-- results:end -->\nb\n{STUDIES_START}\nold\n{STUDIES_END}\nc\n"
    )
    text = update_readme(runs / "results.md", readme).read_text()
    assert "old" not in text and md in text and text.endswith("c\n")
