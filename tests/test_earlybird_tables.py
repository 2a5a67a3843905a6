"""Early-Bird's paper tables as recipes: every cell selects exactly one sweep point, a few cells hold the numbers of
paper_numbers.md (section 3: Table 2, Table 3, the scripts' EB epochs; section 6b: Figure 1), and the point a cell
selects runs the setting its row and column name."""

from __future__ import annotations

from typing import Any

import pytest

from engine.config.expect import Cell, matches
from repro.recipe import Resolved, load
from repro.tables import paper_tables

TABLE_RECIPES = ("earlybird_table2_vgg16_cifar10", "earlybird_table2_vgg16_lowprec_cifar10",
                 "earlybird_table2_vgg16_cifar100", "earlybird_table3_resnet18_imagenet",
                 "earlybird_fig1_preresnet101_cifar10", "earlybird_fig1_preresnet101_cifar100")


def _selected(points: list[Resolved], cell: Cell) -> list[Resolved]:
    return [p for p in points if matches(cell.match, p.recipe.model_dump(), p.recipe.run.point)]


def cell(name: str, table: str, row: str, column: str) -> tuple[Cell, Any]:
    """The cell at (table, row, column) of a recipe and the resolved recipe of the one sweep point it selects."""
    points = load(name)
    found = [c for c in points[0].recipe.expect.cells() if (c.table, c.row, c.column) == (table, row, column)]
    assert len(found) == 1, (table, row, column)
    hits = _selected(points, found[0])
    assert len(hits) == 1
    return found[0], hits[0].recipe


@pytest.mark.parametrize("name", TABLE_RECIPES)
def test_every_cell_selects_exactly_one_sweep_point(name: str) -> None:
    points = load(name)
    cells = points[0].recipe.expect.cells()
    assert cells and not points[0].recipe.expect.metrics  # a sweep keys its numbers by cell, never headline
    for c in cells:
        assert len(_selected(points, c)) == 1, (c.table, c.row, c.column)


def test_table2_cifar10_cells() -> None:
    c, r = cell("earlybird_table2_vgg16_cifar10", "table2-cifar10", "EB Train", "p = 30%")
    assert (c.paper, c.metric, c.tolerance, c.approximate) == (93.39, "test_acc", 1.0, False)
    prune, retrain = r.stage[1].params, r.stage[2].params
    assert (prune.ratio, prune.ticket) == (0.3, "eb")
    assert (retrain.weights, retrain.start_epoch, retrain.end_epoch) == ("inherit", "eb", 160)
    c, r = cell("earlybird_table2_vgg16_cifar10", "table2-cifar10", "NS", "p = 70%")
    assert c.paper == 92.70
    prune, retrain = r.stage[1].params, r.stage[2].params
    assert (prune.ratio, prune.ticket) == (0.7, "final")
    assert (retrain.weights, retrain.start_epoch, retrain.end_epoch, r.stage[2].epochs) == ("inherit", 0, 0, 160)
    c, r = cell("earlybird_table2_vgg16_lowprec_cifar10", "table2-cifar10", "EB Train (LL)", "p = 50%")
    assert c.paper == 93.13 and r.stage[1].params.ratio == 0.5
    assert r.stage[0].params.wl_weight == 8 and r.stage[2].params.wl_weight == 8 and r.stage[2].params.swa
    c, _ = cell("earlybird_table2_vgg16_cifar10", "table2-cifar10-eb-epoch", "EB Train", "p = 50%")
    assert c.paper is None and c.metric == "eb_epoch"  # no FP32 CIFAR-10 epoch in the scripts: ours only
    c, _ = cell("earlybird_table2_vgg16_lowprec_cifar10", "table2-cifar10-eb-epoch", "EB Train (LL)", "p = 30%")
    assert (c.paper, c.tolerance, c.approximate) == (32.0, 10.0, True)  # EB-30-32.pth.tar


def test_table2_cifar100_cells() -> None:
    c, r = cell("earlybird_table2_vgg16_cifar100", "table2-cifar100", "EB Train (re-init)", "p = 10%")
    assert c.paper == 71.65 and r.data.dataset == "cifar100"
    assert (r.stage[1].params.ratio, r.stage[2].params.weights, r.stage[2].params.start_epoch) == (0.1, "reinit", 0)
    assert 0.1 in r.stage[0].params.ratios  # the search watches the ratio it is pruned at
    c, _ = cell("earlybird_table2_vgg16_cifar100", "table2-cifar100", "NS", "p = 50%")
    assert c.paper == 69.74
    c, r = cell("earlybird_table2_vgg16_cifar100", "table2-cifar100-eb-epoch", "EB Train", "p = 30%")
    assert (c.paper, c.metric, c.approximate, r.run.point["method"]) == (35.0, "eb_epoch", True, "eb")


def test_table3_cells_top1_top5_and_unpruned() -> None:
    name = "earlybird_table3_resnet18_imagenet"
    c, r = cell(name, "table3", "EB Train, top-5", "p = 30%")
    assert (c.paper, c.metric) == (88.28, "test_acc5") and r.stage[1].params.ratio == 0.3
    assert (r.stage[2].params.start_epoch, r.stage[2].params.end_epoch, r.stage[2].batch_size) == ("eb", 90, 128)
    c, r = cell(name, "table3", "Network Slimming, top-1", "p = 10%")
    assert c.paper == 69.65 and r.stage[1].params.ticket == "final"
    c, r = cell(name, "table3", "Unpruned, top-1", "p = 10%")
    assert (c.paper, c.metric, r.run.point["method"]) == (69.57, "test_acc@search", "ns")
    c, _ = cell(name, "table3", "Unpruned, top-5", "p = 30%")
    assert c.paper is None and c.metric == "test_acc5@search"


def test_figure1_cells_and_their_smoke_tickets() -> None:
    c, r = cell("earlybird_fig1_preresnet101_cifar100", "fig1-preresnet101-cifar100", "p = 50%", "X = 20")
    assert (c.paper, c.approximate) == (72.58, True)
    assert (r.stage[1].params.ratio, r.stage[1].params.ticket, r.stage[0].save_every) == (0.5, 20, 10)
    assert (r.stage[2].params.weights, r.stage[2].epochs) == ("reinit", 160)
    c, r = cell("earlybird_fig1_preresnet101_cifar10", "fig1-preresnet101-cifar10", "p = 70%", "best ckpt (star)")
    assert c.paper == 92.78 and r.stage[1].params.ticket == "best" and r.stage[0].keep == "best"
    c, _ = cell("earlybird_fig1_preresnet101_cifar100", "fig1-preresnet101-cifar100", "p = 70%", "X = 80")
    assert c.paper is None  # behind the figure's legend
    smoke = {p.recipe.run.point["ticket"]: p.recipe for p in load("earlybird_fig1_preresnet101_cifar10", smoke=True)}
    assert {k: v.stage[1].params.ticket for k, v in smoke.items()} == {
        "ep10": 1, "ep20": 2, "ep40": 3, "ep80": 4, "best": "best"}
    assert all(v.stage[0].save_every == 1 and v.stage[0].epochs == 6 for v in smoke.values())


def test_low_precision_rows_join_the_cifar10_table() -> None:
    tables = {t.id: t for t in paper_tables("earlybird", [])[0]}
    t = tables["table2-cifar10"]
    assert t.rows == ["NS", "EB Train (re-init)", "EB Train", "EB Train (LL)"]  # the paper's order
    assert t.columns == ["p = 30%", "p = 50%", "p = 70%"]
    assert t.cells[("EB Train (LL)", "p = 70%")].cell.paper == 92.60
    assert t.cells[("EB Train", "p = 70%")].cell.paper == 92.71 and t.cells[("EB Train", "p = 70%")].ours is None
    assert tables["table2-cifar10-eb-epoch"].rows == ["EB Train", "EB Train (LL)"]
