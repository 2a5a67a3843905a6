"""Sup-tickets' paper tables (issue 16): SNIP's own masks, GraNet's densities following [sparse].density, static
(--fix) pre-training inside Sup-tickets, and the tickets' prediction ensemble (Table 17)."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import digits_trainer

from engine.analyses.predict import report_metrics
from engine.config.expect import matches
from engine.config.params import GraNetParams
from engine.sparse.inits import score_batch, score_masks, snip_scores
from engine.store import write_group
from repro.recipe import load

pytestmark = pytest.mark.usefixtures("one_thread")


# ---- SNIP's own masks ---------------------------------------------------------------------------------------
def test_score_masks_keep_the_global_top_scores_by_hand() -> None:
    scores = {"a": torch.tensor([[0.9, 0.1], [0.5, 0.2]]), "b": torch.tensor([0.3, 0.8, 0.05, 0.7])}
    masks = score_masks(scores, 0.5)  # int(8 * 0.5) = 4 kept: 0.9, 0.8, 0.7, 0.5
    assert masks["a"].tolist() == [[True, False], [True, False]]
    assert masks["b"].tolist() == [False, True, False, True]
    ties = score_masks({"a": torch.ones(4)}, 0.5)  # exactly int(N d) even when every score ties
    assert ties["a"].tolist() == [True, True, False, False]
    with pytest.raises(ValueError, match="density must be in"):
        score_masks(scores, 0.0)


def test_snip_masks_are_the_top_snip_scores_and_share_snip_ratios(tmp_path: Path) -> None:
    """`snip_masks` keeps exactly the int(N d) highest SNIP scores of the training batch (recomputed here from the
    model's starting weights with the masks generator's seed); `snip` keeps the same count per layer at random
    positions, so the two agree layer by layer in density but not in positions."""
    t = digits_trainer(tmp_path, "fix", {"init": "snip_masks", "density": 0.2, "score_batch": 64})
    start = copy.deepcopy(t.model)
    t.method.setup()
    masks = {n: m.cpu() for n, m in t.method.masking.masks.items()}
    names = list(masks)
    x, y = score_batch(t.train_loader, 64)
    gen = torch.Generator().manual_seed(t.info.seeds.masks)
    scores = snip_scores(start, x, y, names, generator=gen)
    flat = torch.cat([scores[n].reshape(-1) for n in names])
    total = flat.numel()
    assert sum(int(m.sum()) for m in masks.values()) == int(total * 0.2)
    cut = torch.topk(flat, int(total * 0.2)).values.min()
    for n in names:
        assert torch.equal(masks[n], scores[n] >= cut), n  # no ties at the cut among float scores
    r = digits_trainer(tmp_path, "fix", {"init": "snip", "density": 0.2, "score_batch": 64})
    r.method.setup()
    ratio = {n: m.cpu() for n, m in r.method.masking.masks.items()}
    for n in names:
        assert int(ratio[n].sum()) == int(masks[n].sum()), n
    assert any(not torch.equal(ratio[n], masks[n]) for n in names if 0 < int(masks[n].sum()) < masks[n].numel())


# ---- GraNet / Sup-tickets densities -------------------------------------------------------------------------
def test_granet_densities_follow_the_sparse_density() -> None:
    assert GraNetParams().densities(0.1) == (0.5, 0.1)  # final_density unset: [sparse].density
    assert GraNetParams(init_density="final").densities(0.2) == (0.2, 0.2)  # RigL / SET / static through GraNet
    assert GraNetParams(init_density=0.5, final_density=0.05).densities(0.2) == (0.5, 0.05)  # explicit wins


def test_constant_density_sup_tickets_starts_and_superposes_at_the_sparse_density(tmp_path: Path) -> None:
    t = digits_trainer(tmp_path, "suptickets", {"init": "ERK", "density": 0.2, "update_frequency": 2},
                       {"init_density": "final", "cycle": 1, "cycle_rate": 0.5}, epochs=2)
    t.method.setup()
    active, sizes = t.method.masking.counts()
    assert t.method.target_densities == (0.2, 0.2)
    assert sum(active) / sum(sizes) == pytest.approx(0.2, abs=2e-3)  # ERK at 0.2, exact per-layer counts


def _masks(t) -> dict[str, torch.Tensor]:  # noqa: ANN001 - a Trainer
    return {n: m.clone() for n, m in t.method.masking.masks.items()}


@pytest.mark.parametrize("fix", [False, True])
def test_fix_freezes_the_topology_but_keeps_the_re_explorations(tmp_path: Path, fix: bool) -> None:
    """4 epochs of 10 steps, an update every 3 steps, cycle 1 with cycle_rate 0.5: 2 pre-training epochs, then 2
    cycles. With `fix` the masks never change while pre-training nor inside a cycle, and each cycle's start (the
    re-exploration at rate 0.5) changes them; without it pre-training updates them every 3 steps."""
    t = digits_trainer(tmp_path, "suptickets", {"init": "ERK", "density": 0.2, "update_frequency": 3},
                       {"init_density": "final", "cycle": 1, "cycle_rate": 0.5, "fix": fix}, epochs=4)
    t.method.setup()
    t.method.pretrain, t.method.n_tickets = t.method.split
    assert t.method.split == (2, 2)
    first = _masks(t)
    for e in range(2):
        t.train_epoch(e)
        t.epoch = e + 1
    moved = any(not torch.equal(first[n], m) for n, m in _masks(t).items())
    assert moved is (not fix)
    assert t.method.updates == (0 if fix else 6)  # steps 3, 6, ..., 18
    before = _masks(t)
    t.method.start_epoch(2)  # the first cycle opens with one large prune-and-regrow
    assert t.method.updates == (1 if fix else 7)
    explored = _masks(t)
    assert any(not torch.equal(before[n], m) for n, m in explored.items())
    t.train_epoch(2)  # no_maskupdates: nothing changes inside the cycle, fix or not
    assert all(torch.equal(explored[n], m) for n, m in _masks(t).items())


# ---- the tickets' prediction ensemble (Table 17) --------------------------------------------------------------
def test_ticket_ensemble_acc_by_hand(tmp_path: Path) -> None:
    """3 test points, 2 classes; members ticket1, ticket2 and superposed. Mean of the tickets' softmax:
    point 0 (0.9+0.2)/2 = 0.55 on class 0 -> 0 (right); point 1 (0.4+0.4)/2 = 0.4 on class 0 -> 1 (right);
    point 2 (0.7+0.2)/2 = 0.45 on class 0 -> 1 (wrong, label 0). 2 of 3 = 66.67%. The superposed member, which
    would make every point right, is left out."""
    probs = np.array([
        [[0.9, 0.1], [0.4, 0.6], [0.7, 0.3]],  # ticket1
        [[0.2, 0.8], [0.4, 0.6], [0.2, 0.8]],  # ticket2
        [[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]],  # superposed
    ], dtype=np.float32)
    h5 = tmp_path / "analysis.h5"
    write_group(h5, "predict", {"labels": np.array([0, 1, 0]), "member_probs": probs,
                                "member_names": ["ticket1", "ticket2", "superposed"], "member_acc": np.zeros(3),
                                "member_nll": np.zeros(3), "ensemble_acc": 0.0, "ensemble_nll": 0.0},
                meta={"recipe": "t", "run_id": "r"})
    assert report_metrics(h5) == {"ticket_ensemble_acc": pytest.approx(200 / 3)}
    other = tmp_path / "other.h5"  # an ensemble without tickets (e.g. FreeTickets' members) has no such metric
    write_group(other, "predict", {"labels": np.array([0]), "member_probs": probs[:2, :1],
                                   "member_names": ["member1", "member2"], "member_acc": np.zeros(2),
                                   "member_nll": np.zeros(2), "ensemble_acc": 0.0, "ensemble_nll": 0.0},
                meta={"recipe": "t", "run_id": "r"})
    assert report_metrics(other) == {}
    edst = tmp_path / "edst.h5"  # EDST's members are ticket1..K too, with no superposed network: not Table 17's
    write_group(edst, "predict", {"labels": np.array([0, 1, 0]), "member_probs": probs[:2],
                                  "member_names": ["ticket1", "ticket2"], "member_acc": np.zeros(2),
                                  "member_nll": np.zeros(2), "ensemble_acc": 0.0, "ensemble_nll": 0.0},
                meta={"recipe": "t", "run_id": "r"})
    assert report_metrics(edst) == {}
    assert report_metrics(tmp_path / "missing.h5") == {}


# ---- the table recipes -----------------------------------------------------------------------------------------
TABLE_RECIPES = {"suptickets_table1_vgg16": 2 * 3 * 6, "suptickets_table2_resnet50": 2 * 3 * 10,
                 "suptickets_table9_wrn28x10": 2 * 3 * 6, "suptickets_table3_resnet50_imagenet": 2 * 7,
                 "suptickets_table5_cycle_cifar100": 2 * 4}


@pytest.fixture(scope="module")
def table_points() -> dict[str, list]:
    return {name: load(name) for name in TABLE_RECIPES}


def _cell(points: list, table: str, row: str, column: str):  # noqa: ANN202 - an engine.config.expect.Cell
    (cell,) = [c for c in points[0].recipe.expect.cells() if (c.table, c.row, c.column) == (table, row, column)]
    return cell


def _point(points: list, cell):  # noqa: ANN001, ANN202 - the one Resolved sweep point a cell selects
    chosen = [p for p in points if matches(cell.match, p.recipe.model_dump(), p.recipe.run.point)]
    assert len(chosen) == 1, (cell.table, cell.row, cell.column, [p.tag for p in chosen])
    return chosen[0]


def test_every_table_cell_selects_exactly_one_sweep_point(table_points: dict[str, list]) -> None:
    for name, points in table_points.items():
        assert len(points) == TABLE_RECIPES[name], name
        cells = points[0].recipe.expect.cells()
        assert cells, name
        for c in cells:
            _point(points, c)
        # and every sweep point is some cell of the recipe's own first table (nothing runs that no cell shows)
        first = points[0].recipe.expect.table[0].id
        shown = {_point(points, c).tag for c in cells if c.table == first}
        assert shown == {p.tag for p in points}, name


@pytest.mark.parametrize("recipe, table, row, column, metric, paper, std", [
    ("suptickets_table2_resnet50", "table2", "RigL", "C100 90%", "test_acc", 77.95, 0.36),
    ("suptickets_table2_resnet50", "table2", "SNIP+Sup-tickets", "C100 95%", "superposed_acc", 65.56, 1.15),
    ("suptickets_table2_resnet50", "table2", "ERK (static)", "C10 80%", "test_acc", 94.85, 0.21),
    ("suptickets_table2_resnet50", "table17", "ResNet-50: RigL + Prediction Ensemble", "C100 95%",
     "ticket_ensemble_acc", 77.66, 0.4),
    ("suptickets_table1_vgg16", "table1", "GraNet+Sup-tickets", "C10 80%", "superposed_acc", 94.24, 0.05),
    ("suptickets_table1_vgg16", "table17", "VGG-16: RigL + Prediction Ensemble", "C10 80%", "ticket_ensemble_acc",
     93.97, 0.18),
    ("suptickets_table9_wrn28x10", "table9", "SET", "C100 80%", "test_acc", 80.60, 0.07),
    ("suptickets_table3_resnet50_imagenet", "table3", "RigL", "top-1 @90%", "test_acc", 73.0, 0.04),
    ("suptickets_table3_resnet50_imagenet", "table3", "GraNet+Sup-tickets", "top-1 @80%", "superposed_acc", 76.2,
     0.0),
    ("suptickets_table3_resnet50_imagenet", "table18", "GraNet + Prediction Ensemble", "top-1 @90%",
     "ticket_ensemble_acc", 74.614, 0.0),
    ("suptickets_table5_cycle_cifar100", "table5", "ResNet-50", "C = 12", "superposed_acc", 77.17, 0.0),
    ("suptickets_table5_cycle_cifar100", "table5", "VGG-16", "C = 4", "superposed_acc", 71.42, 0.0),
])
def test_cells_hold_the_papers_values(table_points: dict[str, list], recipe: str, table: str, row: str, column: str,
                                      metric: str, paper: float, std: float) -> None:
    """Cells checked by hand against paper_numbers.md section 2; tolerance max(2 x std, [expect].tolerance 0.5)."""
    c = _cell(table_points[recipe], table, row, column)
    assert (c.metric, c.paper, c.std) == (metric, paper, std)
    assert c.tolerance == pytest.approx(max(2 * std, 0.5))


def test_cells_select_the_runs_the_original_code_would_make(table_points: dict[str, list]) -> None:
    """The point behind a cell is that row's procedure at that column's dataset and density."""
    pts = table_points["suptickets_table2_resnet50"]
    rigl = _point(pts, _cell(pts, "table2", "RigL", "C100 90%")).recipe
    st = rigl.stage[0]
    assert (rigl.data.dataset, st.method, st.sparse.density, st.sparse.growth) == ("cifar100", "dst", 0.1, "gradient")
    assert (st.schedule.name, st.schedule.milestone_fractions, st.epochs) == ("multistep", [0.5, 0.75], 250)
    snip = _point(pts, _cell(pts, "table2", "SNIP+Sup-tickets", "C10 95%")).recipe
    st = snip.stage[0]
    assert (snip.data.dataset, snip.data.val_split, st.method, st.sparse.init) == ("cifar10", 5000, "suptickets",
                                                                                    "snip_masks")
    assert st.params.fix and st.params.densities(st.sparse.density) == (0.05, 0.05)
    assert st.params.budget(st.epochs) == (226, 3)
    granet = _point(pts, _cell(pts, "table2", "GraNet", "C100 80%")).recipe.stage[0]
    assert (granet.method, granet.params.densities(granet.sparse.density)) == ("granet", (0.5, 0.2))
    set_sup = _point(pts, _cell(pts, "table2", "SET+Sup-tickets", "C100 95%")).recipe.stage[0]
    assert (set_sup.sparse.growth, set_sup.params.fix, set_sup.params.re_explore) == ("random", False, True)
    imagenet = table_points["suptickets_table3_resnet50_imagenet"]
    sup = _point(imagenet, _cell(imagenet, "table3", "RigL+Sup-tickets", "top-1 @80%")).recipe.stage[0]
    assert sup.params.budget(sup.epochs) == (92, 4) and sup.params.densities(sup.sparse.density) == (0.2, 0.2)
    cyc = table_points["suptickets_table5_cycle_cifar100"]
    c2 = _point(cyc, _cell(cyc, "table5", "VGG-16", "C = 2")).recipe.stage[0]
    assert c2.params.budget(c2.epochs) == (226, 12)


def test_one_cell_runs_alone_with_set() -> None:
    """The README's way to run one cell: pin the variant axes by tag and the density by value."""
    (one,) = load("suptickets_table2_resnet50", ("method=rigl_sup", "dataset=c100", "train.sparse.density=0.1"))
    assert one.recipe.run.point == {"dataset": "c100", "method": "rigl_sup"}  # a pinned plain axis leaves the point
    assert one.recipe.stage[0].method == "suptickets" and one.recipe.data.dataset == "cifar100"
    dump, point = one.recipe.model_dump(), one.recipe.run.point
    got = [(c.table, c.row, c.column) for c in one.recipe.expect.cells() if matches(c.match, dump, point)]
    assert got == [("table2", "RigL+Sup-tickets", "C100 90%"),
                   ("table17", "ResNet-50: RigL + Prediction Ensemble", "C100 90%")]
