"""The paper tables of the random-pruning depth figure and of FGE / mode connectivity (issue 16): a few cells
checked by hand against paper_numbers.md (6a and 5), every cell selecting exactly one sweep point of its recipe,
the merged layout, and a fake finished run filling the cells it should."""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path

import pytest

from engine.config.expect import Cell, matches
from engine.store import write_group
from repro.recipe import load, to_toml
from repro.rundir import list_runs
from repro.tables import paper_tables, tables_json

DEPTH = ["randompruning_depthfigure_cifar10", "randompruning_depthfigure_dense_cifar10"]
FGE = [f"fge_{m}{s}" for m in ("vgg16", "preresnet164", "wrn28x10") for s in ("", "_ind_ensemble")]
CURVES = [f"curve_{c}_{m}_{d}" for c in ("bezier", "polychain") for m in ("vgg16", "preresnet164", "wrn28x10")
          for d in ("cifar10", "cifar100")]


@functools.cache
def points_of(name: str) -> list:
    """A shipped recipe's sweep points (loaded once: the depth figure's 180 points take seconds)."""
    return load(name)


def cells_of(name: str) -> list[Cell]:
    return points_of(name)[0].recipe.expect.cells()


def cell(name: str, table: str, row: str, column: str) -> Cell:
    (hit,) = [c for c in cells_of(name) if (c.table, c.row, c.column) == (table, row, column)]
    return hit


@pytest.mark.parametrize("name", DEPTH + FGE + CURVES)
def test_every_cell_selects_exactly_one_sweep_point(name: str) -> None:
    points = [(p.recipe.model_dump(), p.recipe.run.point) for p in points_of(name)]
    counts = {(c.table, c.row, c.column, c.metric): sum(matches(c.match, d, pt) for d, pt in points)
              for c in cells_of(name)}
    assert counts and set(counts.values()) == {1}, {k: v for k, v in counts.items() if v != 1}


def test_depth_figure_cells_hold_the_pixel_reads() -> None:
    """paper_numbers.md 6a, by hand: R20 ERK s=0.9 87.79, R110 ERK s=0.5 93.46, R56 SNIP s=0.4 93.31, R20
    Uniform s=0.1 hidden, R32 Uniform+ s=0.7 91.23; the dense line R44 93.31 in every column."""
    sparse, dense = DEPTH
    got = {(t, r, c): cell(sparse, t, r, c) for t, r, c in [
        ("depth_resnet20", "ERK", "s=0.9"), ("depth_resnet110", "ERK", "s=0.5"),
        ("depth_resnet56", "SNIP ratio", "s=0.4"), ("depth_resnet20", "Uniform", "s=0.1"),
        ("depth_resnet32", "Uniform+", "s=0.7")]}
    assert [c.paper for c in got.values()] == [87.79, 93.46, 93.31, None, 91.23]
    c = got[("depth_resnet20", "ERK", "s=0.9")]
    assert c.match == {"model.arch": "cifar_resnet_20", "train.sparse.init": "ERK", "train.sparse.density": 0.1}
    assert c.metric == "test_acc" and c.tolerance == 0.5 and c.approximate
    assert len(cells_of(sparse)) == 5 * 4 * 9
    r44 = [c for c in cells_of(dense) if c.table == "depth_resnet44"]
    assert [c.paper for c in r44] == [93.31] * 9 and {c.row for c in r44} == {"Dense"}
    assert len(cells_of(dense)) == 5 * 9


def test_fge_cells_hold_the_readme_and_table1_numbers() -> None:
    """paper_numbers.md 5 by hand: README PreResNet164 Ind 78.4 (one network: the train stage) and FGE 80.3; VGG16
    Ind at 3 budgets 75.6; Table 1 WRN-28-10 Ind C10 3B error 3.31; ResNet-164 FGE C100 1B error 20.2; the
    disagreement quotes 19.97% (2 independent) and 14.57% (FGE)."""
    ind = cell("fge_preresnet164", "readme_fge", "PreResNet164 (Ind, 200)", "1 budget")
    assert (ind.metric, ind.paper, ind.std) == ("test_acc@train", 78.4, 0.1)
    fge = cell("fge_preresnet164", "readme_fge", "PreResNet164 (FGE, 200)", "1 budget")
    assert (fge.metric, fge.paper, fge.tolerance) == ("ensemble_acc", 80.3, 0.5)
    vgg3 = cell("fge_vgg16_ind_ensemble", "readme_fge", "VGG16 (Ind, 200)", "3 budgets")
    assert (vgg3.metric, vgg3.paper, vgg3.match) == ("ensemble_acc", 75.6, {"dataset": "c100", "ensemble": "ind3"})
    wrn = cell("fge_wrn28x10_ind_ensemble", "table1", "WRN-28-10 (200) Ind", "C10 3B")
    assert (wrn.metric, wrn.paper) == ("ensemble_error", 3.31)
    assert cell("fge_preresnet164", "table1", "ResNet-164 (150) FGE", "C100 1B").paper == 20.2
    free = {(c.metric, c.paper) for name in FGE for c in cells_of(name) if not c.table}
    assert {("disagreement_mean", 19.97), ("disagreement_mean", 14.57), ("test_error@train1", 6.75)} <= free


def test_curve_cells_hold_the_readme_rows() -> None:
    """README curve tables: C100 PreResNet164 Endpoints max test error 21.7 (over the curve's two ends), C10
    WRN28x10 Poly max test error 4.29, C100 VGG16 Bezier min train loss 0.48; the Segment has no README number."""
    ends = cell("curve_bezier_preresnet164_cifar100", "curves_c100_max_test_error", "Endpoints", "PreResNet164")
    assert (ends.metric, ends.paper) == ("curve_ends_max_test_error", 21.7)
    poly = cell("curve_polychain_wrn28x10_cifar10", "curves_c10_max_test_error", "Poly", "WideResNet28x10")
    assert (poly.metric, poly.paper) == ("curve_max_test_error", 4.29)
    bez = cell("curve_bezier_vgg16_cifar100", "curves_c100_min_train_loss", "Bezier", "VGG16")
    assert (bez.metric, bez.paper, bez.tolerance) == ("curve_min_train_loss", 0.48, 0.05)
    seg = cell("curve_bezier_vgg16_cifar100", "curves_c100_max_test_error", "Segment", "VGG16")
    assert (seg.metric, seg.paper) == ("curve_line_max_test_error", None)


def test_the_merged_tables_keep_the_papers_layout() -> None:
    tables = {t["id"]: t for t in tables_json("modeconnectivity", *paper_tables("modeconnectivity", []))["tables"]}
    readme = tables["readme_fge"]
    assert readme["columns"] == ["1 budget", "2 budgets", "3 budgets"]
    rows = {r["label"]: [c["column"] for c in r["cells"]] for r in readme["rows"]}
    assert rows["WideResNet28x10 (Ind, 200)"] == ["1 budget", "2 budgets", "3 budgets"]
    assert rows["WideResNet28x10 (FGE, 200)"] == ["1 budget"]  # FGE at 2 and 3 budgets: no command to run
    assert tables["table1"]["columns"] == ["C100 1B", "C100 2B", "C100 3B", "C10 2B", "C10 3B"]
    c100 = tables["curves_c100_max_train_loss"]
    assert c100["columns"] == ["PreResNet164", "VGG16", "WideResNet28x10"]
    assert [r["label"] for r in c100["rows"]] == ["Endpoints", "Bezier", "Segment", "Poly"]
    assert c100["cells"] == 3 * 4


def test_pinning_only_variant_axes_runs_one_point() -> None:
    """`repro run fge_vgg16_ind_ensemble --set dataset=c10 --set ensemble=ind3` (the README's one-cell command):
    the other points' cells are not checked against the one point left."""
    (res,) = load("fge_vgg16_ind_ensemble", sets=["dataset=c10", "ensemble=ind3"])
    assert res.recipe.run.point == {"dataset": "c10", "ensemble": "ind3"}
    assert res.recipe.data.dataset == "cifar10" and [s.name for s in res.recipe.stage] == ["train1", "train2", "train3"]


def _fake(root: Path, name: str, sets: list[str], records: list[dict], run_id: str) -> Path:
    """A finished full-size run of one sweep point with the given metrics.jsonl records."""
    (res,) = load(name, sets=sets)
    run = root / res.recipe.name / run_id
    run.mkdir(parents=True)
    (run / "recipe.toml").write_text(to_toml(res.recipe))
    (run / "status.json").write_text(json.dumps({"state": "done", "progress": 1.0, "tag": res.tag}))
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return run


def test_fake_runs_fill_their_cells(tmp_path: Path) -> None:
    """One dense run fills the Dense row in every column; one sparse run its one cell; an FGE run fills the Ind
    cell from its train stage and the FGE cell from /predict; an independent-ensemble run its 2-budget cells."""
    _fake(tmp_path, "randompruning_depthfigure_dense_cifar10", ["model.arch=cifar_resnet_20"],
          [{"stage": "sparse", "epoch": 160, "test_acc": 92.0, "test_loss": 0.3}], "d20")
    _fake(tmp_path, "randompruning_depthfigure_cifar10",
          ["model.arch=cifar_resnet_20", "train.sparse.init=uniform", "train.sparse.density=0.1"],
          [{"stage": "sparse", "epoch": 160, "test_acc": 86.0, "test_loss": 0.5}], "u20")
    t = {x["id"]: x for x in tables_json("randompruning", *paper_tables("randompruning", list_runs(tmp_path)))[
        "tables"]}["depth_resnet20"]
    got = {(r["label"], c["column"]): c for r in t["rows"] for c in r["cells"]}
    assert [got[("Dense", f"s=0.{i}")]["ours"] for i in range(1, 10)] == [92.0] * 9
    assert got[("Dense", "s=0.1")]["state"] == "within"  # 92.0 vs 92.36 +- 0.5
    assert got[("Uniform", "s=0.9")]["ours"] == 86.0 and got[("Uniform", "s=0.9")]["state"] == "within"  # 86.30
    assert got[("ERK", "s=0.9")]["state"] == "not run"
    assert sum(c["state"] != "not run" for c in got.values()) == 10

    fge = _fake(tmp_path, "fge_vgg16", [], [{"stage": "train", "epoch": 200, "test_acc": 72.0, "test_loss": 1.2},
                                            {"stage": "fge", "epoch": 240, "test_acc": 73.0, "test_loss": 1.1}], "f")
    write_group(fge / "analysis.h5", "predict", {"ensemble_acc": 74.4, "ensemble_nll": 1.0,
                                                 "member_acc": [73.0, 72.5], "member_names": ["fge1", "fge3"]})
    ind = _fake(tmp_path, "fge_vgg16_ind_ensemble", ["dataset=c100", "ensemble=ind2"],
                [{"stage": "train1", "epoch": 200, "test_acc": 72.6, "test_loss": 1.2},
                 {"stage": "train2", "epoch": 200, "test_acc": 72.2, "test_loss": 1.2}], "i")
    write_group(ind / "analysis.h5", "predict", {"ensemble_acc": 75.0, "ensemble_nll": 1.0,
                                                 "member_acc": [72.6, 72.2], "member_names": ["train1", "train2"]})
    tables = {x["id"]: x for x in tables_json("modeconnectivity",
                                              *paper_tables("modeconnectivity", list_runs(tmp_path)))["tables"]}
    got = {(r["label"], c["column"]): c for r in tables["readme_fge"]["rows"] for c in r["cells"]}
    assert got[("VGG16 (Ind, 200)", "1 budget")]["ours"] == 72.0  # the train stage, not the fge stage's 73.0
    assert got[("VGG16 (FGE, 200)", "1 budget")]["ours"] == 74.4
    assert got[("VGG16 (Ind, 200)", "2 budgets")]["ours"] == 75.0
    assert got[("VGG16 (Ind, 200)", "3 budgets")]["state"] == "not run"
    t1 = {(r["label"], c["column"]): c for r in tables["table1"]["rows"] for c in r["cells"]}
    assert t1[("VGG-16 (200) Ind", "C100 1B")]["ours"] == pytest.approx(28.0)  # 100 - 72.0 vs 27.4
    assert t1[("VGG-16 (200) FGE", "C100 1B")]["ours"] == pytest.approx(100 - 74.4)
    assert t1[("VGG-16 (200) Ind", "C100 2B")]["ours"] == pytest.approx(25.0)
    assert math.isclose(t1[("VGG-16 (200) Ind", "C100 2B")]["paper"], 25.28)
