"""The helpers the restructuring added: the data-root rule, the table registry, defect panels, the
batched predict, and the model hooks the grid relies on instead of naming models."""

import numpy as np
import pandas as pd
import pytest
import torch

from lib.config import REPO_ROOT, data_root_for, open_profile
from lib.evaluate import evaluate as ev
from lib.evaluate import tables
from lib.models import GRID_MODELS, REGISTRY, GaussianBaseline, model_config
from lib.models.base import batched_forward
from lib.models.train import run_cell
from lib.store import Cell


def test_data_root_rule():
    # wrong: ignoring the given root, or using the unresolved name "auto"
    assert data_root_for("smoke") == REPO_ROOT / "data" / "smoke"
    assert data_root_for("smoke", "/x/y") == REPO_ROOT.__class__("/x/y")
    prof, root = open_profile("smoke", None)
    assert prof.name == "smoke" and root == REPO_ROOT / "data" / "smoke"
    assert data_root_for("auto").name in ("paper", "quick")
    with pytest.raises(ValueError, match="unknown profile"):
        data_root_for("nope")


def test_tables_round_trip_with_their_read_options(tmp_path):
    # wrong: reading "" back as NaN in text tables, or a missing table silently empty
    df = pd.DataFrame({"claim": ["a", "b"], "verdict": ["", "reproduced"], "x": [0.1234567891, 2.0]})
    tables.write(tmp_path, "claims", df)
    back = tables.read(tmp_path, "claims")
    assert back.verdict.tolist() == ["", "reproduced"] and back.x.iloc[0] == pytest.approx(0.123457)
    assert tables.path(tmp_path, "claims") == tmp_path / "tables" / "claims.csv"
    assert tables.read(tmp_path, "headline", missing_ok=True) is None
    with pytest.raises(FileNotFoundError, match="'metrics'"):
        tables.read(tmp_path, "metrics")
    with pytest.raises(KeyError, match="unknown results table"):
        tables.path(tmp_path, "nope")
    tables.write(tmp_path, "inspection_summary", pd.DataFrame({"x": [0.1234567891]}))  # full precision
    assert tables.read(tmp_path, "inspection_summary").x.iloc[0] == 0.1234567891


def test_defect_panel_rows_show_test_defects_of_one_view(built, tmp_path):
    # wrong: normal or validation images in the panels, maps of another cell, several views mixed
    root, *_, manifest = built
    store = tmp_path / "results"
    cells = [Cell("baseline", "front", m, 0) for m in (False, True)]
    for c in cells:
        run_cell(GaussianBaseline(input_size=(106, 60)), root, manifest, c, store, False)
    rows = ev.defect_panel_rows(root, manifest, cells, n=2, store_root=store)
    out = ev.load_outputs(root, store, cells[1], manifest)
    t = out["table"]
    idx = [i for i in range(len(t)) if t.label.iloc[i] == "anomalous" and t.split.iloc[i] == "test"][:2]
    assert len(rows) == len(idx) == 2
    for (img, mask, maps), i in zip(rows, idx, strict=True):
        assert mask.any() and img.shape[:2] == mask.shape
        assert set(maps) == {"baseline", "baseline†"}
        assert np.array_equal(maps["baseline†"], out["maps"][i])
    with pytest.raises(ValueError, match="one viewpoint"):
        ev.defect_panel_rows(root, manifest, [cells[0], Cell("baseline", "back", False, 0)], store_root=store)


class _Scorer(torch.nn.Module):
    def forward(self, images):
        x = images.float()
        return x.flatten(1).mean(1), x.mean(-1)


def test_batched_forward_covers_every_image_in_order():
    # wrong: a batch dropped at the end, images reordered, maps left as float64
    images = np.random.default_rng(0).integers(0, 256, (11, 4, 5, 3), dtype=np.uint8)
    scores, maps = batched_forward(_Scorer(), images, "cpu", batch_size=4)
    assert scores.shape == (11,) and maps.shape == (11, 4, 5) and maps.dtype == np.float32
    assert np.allclose(scores, images.reshape(11, -1).mean(1))


def test_model_hooks_the_grid_relies_on(smoke_profile, tmp_path):
    # wrong: a model without a notebook, a seed passed to a seedless config, EfficientAD cells without
    # the profile's stored teacher (their identity would never match what notebook 06 trains)
    from lib.models.efficientad.teacher import teacher_path

    for name in GRID_MODELS:
        cls = REGISTRY[name]
        assert (REPO_ROOT / "notebooks" / cls.training_notebook).is_file(), name
    assert REGISTRY["baseline"].seed_overrides(3) == {}
    assert REGISTRY["patchcore"].seed_overrides(3) == {"seed": 3}
    over = REGISTRY["efficientad_s"].cell_overrides(smoke_profile, tmp_path, 1)
    want = teacher_path(tmp_path, model_config("efficientad_s", smoke_profile), smoke_profile.seed)
    assert over == {"seed": 1, "teacher_weights": str(want)}
    shared = {n for n in GRID_MODELS if REGISTRY[n].shared_resource}
    assert shared == {"efficientad_s", "efficientad_m"}
    assert not REGISTRY["baseline"].exportable and REGISTRY["memseg"].exportable
