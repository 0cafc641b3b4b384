"""Papermill smoke runs of the notebooks on the smoke profile."""

from lib.workbook import list_notebooks, run_workbook


def test_notebook_00_runs_under_papermill(tmp_path, tiny_line):
    root, _ = tiny_line
    results = run_workbook("smoke", data_root=root, runs_dir=tmp_path / "runs", only=["00"])
    assert [r["error"] for r in results] == [None]
    assert (tmp_path / "runs" / "00_acquire.html").stat().st_size > 10_000
    assert (tmp_path / "runs" / "index.html").is_file()


def test_notebooks_are_committed_without_outputs():
    import nbformat

    for path in list_notebooks():
        nb = nbformat.read(str(path), as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert not cell.outputs and cell.execution_count is None, path.name
        tags = [c.metadata.get("tags", []) for c in nb.cells]
        assert any("parameters" in t for t in tags), f"{path.name} has no papermill parameters cell"
