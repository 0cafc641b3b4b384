"""Papermill smoke run of the whole notebook chain on the smoke profile."""

import nbformat

from lib.workbook import list_notebooks, run_workbook


def test_notebook_chain_runs_under_papermill(tmp_path):
    runs = tmp_path / "runs"
    results = run_workbook("smoke", data_root=tmp_path / "data", runs_dir=runs)
    assert [r["error"] for r in results] == [None] * len(results), results
    names = [r["notebook"] for r in results]
    assert names[:4] == [
        "00_acquire.ipynb",
        "01_extract.ipynb",
        "02_synthetic_defects.ipynb",
        "03_masking.ipynb",
    ]
    for r in results:
        assert r["html"].stat().st_size > 10_000
    index = (runs / "index.html").read_text()
    assert all(n in index for n in names)
    assert (tmp_path / "data" / "data_manifest.csv").is_file()


def test_notebooks_are_committed_without_outputs():
    for path in list_notebooks():
        nb = nbformat.read(str(path), as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert not cell.outputs and cell.execution_count is None, path.name
        tags = [c.metadata.get("tags", []) for c in nb.cells]
        assert any("parameters" in t for t in tags), f"{path.name} has no papermill parameters cell"


def test_only_filter_names_missing_notebook():
    import pytest

    with pytest.raises(ValueError, match=r"no notebook numbered \['42'\]"):
        list_notebooks(only=["42"])
