"""Papermill smoke run of the whole notebook chain on the smoke profile."""

import shutil
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from lib.evaluate import claims as C
from lib.models import GRID_MODELS as ALL_MODELS
from lib.notebooks import list_notebooks
from lib.workbook import run_workbook


def test_notebook_chain_runs_under_papermill(tmp_path):
    """00-03, one grid cell per model (so every training notebook runs), then 08-10."""
    runs = tmp_path / "runs"
    results = run_workbook(
        "smoke", tmp_path / "data", runs, viewpoints=["front"], variants=["masked"], progress=False
    )
    assert [r["error"] for r in results] == [None] * len(results), results
    names = [r.get("notebook") or r["cell"] for r in results]
    assert names[:4] == [
        "00_acquire.ipynb",
        "01_extract.ipynb",
        "02_synthetic_defects.ipynb",
        "03_masking.ipynb",
    ]
    assert names[-4:] == [
        "08_evaluate.ipynb",
        "09_error_analysis.ipynb",
        "10_inspection.ipynb",
        "11_photometric_shift.ipynb",
    ]
    assert sorted(names[4:-4]) == sorted(f"{m}/front/masked/seed0" for m in ALL_MODELS)
    for r in results:
        assert Path(r["html"]).stat().st_size > 10_000
    index = (runs / "index.html").read_text()
    assert all(n in index for n in names) and "Headline results" in index
    assert "Claims of the paper, tested on this run" in index
    md = (runs / "results.md").read_text()
    assert all(f"| {m}† | " in md for m in ALL_MODELS) and "Claims of the paper" in md
    for r in results[:4] + results[-4:]:  # numbered notebooks: also a report without code
        report = Path(r["report"]).read_text()
        assert "# Parameters (papermill overrides these)" not in report, r["report"]
        _assert_clean_report(report, r["report"], tmp_path)
    assert (
        str(tmp_path) not in index
    )  # the teacher files of the differences table: '<data root>/teachers/...'
    for section in ("summary", "differences", "paper-tables"):  # the index opens with what a reviewer needs
        assert f"id='{section}'" in index, section
    assert index.index("id='summary'") < index.index("id='differences'") < index.index("id='paper-tables'")
    data = tmp_path / "data"
    (records,) = data.glob("inspection/seed*/verdicts.jsonl")  # smoke: one fresh stream
    assert len(records.read_text().splitlines()) >= 10  # notebook 10 inspected the fresh stream
    streams = pd.read_csv(data / "tables" / "inspection_streams.csv")
    assert len(streams) == 1 and streams.cars.iloc[0] == streams.verdicts.iloc[0]
    for table in ("headline", "claims", "intervals", "bootstrap", "tests_delong", "inspection_accuracy"):
        assert (data / "tables" / f"{table}.csv").is_file(), table
    assert (tmp_path / "data" / "data_manifest.csv").is_file()
    claims = pd.read_csv(data / "tables" / "claims.csv", keep_default_na=False)
    assert set(claims.verdict) <= set(C.VERDICTS) and len(claims) == len(C.CLAIMS)
    # a run restricted to one model (`--models patchcore`) runs 08-10 to the end; claims naming others say so
    one = tmp_path / "one_model"
    shutil.copytree(data, one)
    for d in (one / "results").iterdir():
        if d.name != "patchcore":
            shutil.rmtree(d)
    books = run_workbook("smoke", one, tmp_path / "runs_one", only=["08", "09", "10"], progress=False)
    assert [r["error"] for r in books] == [None] * 3, books
    one_claims = pd.read_csv(one / "tables" / "claims.csv", keep_default_na=False).set_index("id")
    assert one_claims.verdict["T6-memseg"] == C.NOT_RUN and one_claims.verdict["T4-equivalence"] == C.NOT_RUN
    # a second run re-runs the stages but no grid cell: every cell's DONE matches its identity
    # (manifest rows, ROI masks, resolved config incl. EfficientAD's stored teacher, version)
    again = run_workbook(
        "smoke", tmp_path / "data", runs, viewpoints=["front"], variants=["masked"], progress=False
    )
    assert [r["error"] for r in again] == [None] * len(again), again
    assert [r["cell"] for r in again if "cell" in r] == []


def test_notebooks_are_committed_without_outputs():
    for path in list_notebooks():
        nb = nbformat.read(str(path), as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert not cell.outputs and cell.execution_count is None, path.name
        tags = [c.metadata.get("tags", []) for c in nb.cells]
        assert any("parameters" in t for t in tags), f"{path.name} has no papermill parameters cell"


def test_only_filter_names_missing_notebook():
    with pytest.raises(ValueError, match=r"no notebook numbered \['42'\]"):
        list_notebooks(only=["42"])


def _assert_clean_report(page: str, name, tmp_path) -> None:
    """What a reviewer must not meet on a report page: local absolute paths, Out[N] prompts, tables
    whose every cell is NaN, and the banner missing."""
    import re
    from html import unescape

    from lib.config import REPO_ROOT

    for local in (str(tmp_path), str(REPO_ROOT), "/tmp/", "/home/"):
        assert local not in page, (name, local)
    assert not re.search(r"Out\[\d+\]:", page), name
    assert "how this run differs from the paper" in page, name
    for table in re.findall(r"<table.*?</table>", page, re.S):
        cells = [unescape(re.sub("<[^>]+>", "", c)).strip() for c in re.findall(r"<td.*?</td>", table, re.S)]
        assert not cells or any(c not in ("NaN", "nan", "") for c in cells), (name, table[:200])
