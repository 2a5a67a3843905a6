"""The analysis screen draws each analysis whole: every test writes a small analysis.h5 with known numbers (with
engine.store's writer, in the layout engine/analyses writes), opens its tab, and reads back what was drawn (the
plotext calls a Chart recorded, a HeatMap's matrix, a table's cells) against the stored numbers; and the screen
follows a file that is still being written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_tui import make_app, settle, sync, text, wait_for
from textual.widgets import DataTable, Static, TabbedContent, Tabs

from engine.store import write_group
from repro.tui.analysis import TICKET, AnalysisScreen
from repro.tui.widgets import Chart, HeatMap

SIZE = (120, 40)
META = {"recipe": "r", "run_id": "20260101-000000"}


@pytest.fixture
def run(tmp_path: Path) -> Path:
    d = tmp_path / "root" / "r" / "20260101-000000"
    d.mkdir(parents=True)
    return d


async def open_tab(pilot, run: Path, tab: str, poll: float | None = None) -> AnalysisScreen:  # noqa: ANN001
    """The analysis screen of `run` with `tab` selected."""
    await pilot.app.push_screen(AnalysisScreen(run, "r/20260101-000000", poll=poll))
    await settle(pilot)
    screen = pilot.app.screen
    screen.query_one("#an-tabs", TabbedContent).active = f"tab-{tab}"
    await pilot.pause()
    return screen


def charts(screen: AnalysisScreen, tab: str) -> list[Chart]:
    return list(screen.query(f"#tab-{tab} Chart").results(Chart))


def notes(screen: AnalysisScreen, tab: str) -> str:
    return " ".join(text(w) for w in screen.query(f"#tab-{tab} .note").results(Static))


@sync
async def test_curve_is_drawn_beside_the_straight_line(run: Path) -> None:
    t = np.linspace(0.0, 1.0, 5)
    curve = {"train_loss": np.array([0.1, 0.3, 0.4, 0.2, 0.1]), "test_error": np.array([5.0, 7.0, 9.0, 6.0, 5.5]),
             "test_nll": np.array([0.3, 0.35, 0.5, 0.4, 0.31])}
    line = {"line_train_loss": np.array([0.1, 1.5, 2.5, 1.4, 0.1]),
            "line_test_error": np.array([5.0, 40.0, 80.0, 45.0, 5.5]),
            "line_test_nll": np.array([0.3, 1.2, 2.0, 1.1, 0.31])}
    write_group(run / "analysis.h5", "curve", {"t": t, **curve, **line}, attrs={"curve": "Bezier"}, meta=META)
    async with make_app(run.parents[1]).run_test(size=SIZE) as pilot:
        screen = await open_tab(pilot, run, "curve")
        drawn = charts(screen, "curve")
        assert len(drawn) == 3  # train loss, test error, test NLL
        for chart, key in zip(drawn, ("train_loss", "test_error", "test_nll")):
            (c_args, c_kw), (l_args, l_kw) = chart.drawn("plot")
            assert (c_kw["label"], l_kw["label"]) == ("Bezier", "straight line")
            assert c_args[0] == l_args[0] == [0.0, 0.25, 0.5, 0.75, 1.0]
            assert c_args[1] == curve[key].tolist() and l_args[1] == line[f"line_{key}"].tolist()
        (title,), _ = drawn[1].drawn("title")[0]
        assert title == "test error (%): max 9 along the curve, 80 along the straight line"
        assert "test error at the ends 5.00 / 5.50, max 9.00 at t = 0.50" in notes(screen, "curve")
    # without eval_line: the curve alone, and the note says why
    write_group(run / "analysis.h5", "curve", {"t": t, **curve}, meta=META)
    async with make_app(run.parents[1]).run_test(size=SIZE) as pilot:
        screen = await open_tab(pilot, run, "curve")
        assert [len(c.drawn("plot")) for c in charts(screen, "curve")] == [1, 1, 1]
        assert "no straight line stored (the curve stage's eval_line is off)" in notes(screen, "curve")


@sync
async def test_plane_is_a_heat_map_of_the_stored_grid(run: Path) -> None:
    alphas, betas = np.array([-0.5, 0.5, 1.5]), np.array([0.0, 0.4, 0.8, 1.2])
    err = 10.0 * np.arange(3)[:, None] + np.arange(4)[None, :]  # [alpha, beta]: 10 i + j
    series = {k: err / 10 if "loss" in k or "nll" in k else err
              for k in ("train_loss", "train_nll", "train_error", "test_loss", "test_nll", "test_error")}
    write_group(run / "analysis.h5", "plane", {"alphas": alphas, "betas": betas, "grid": np.zeros((3, 4, 2)),
                                               "bend_coordinates": np.zeros((3, 2)),
                                               "curve_coordinates": np.zeros((5, 2)), "t": np.linspace(0, 1, 5),
                                               **series}, meta=META)
    async with make_app(run.parents[1]).run_test(size=SIZE) as pilot:
        screen = await open_tab(pilot, run, "plane")
        loss, error = screen.query("#tab-plane HeatMap").results(HeatMap)
        # rows: beta from the top (1.2) down, columns: alpha left to right
        assert error.matrix.tolist() == [[3.0, 13.0, 23.0], [2.0, 12.0, 22.0], [1.0, 11.0, 21.0], [0.0, 10.0, 20.0]]
        assert loss.matrix.tolist() == (error.matrix / 10).tolist()
        assert "test error (%): min 0 at alpha -0.50, beta 0.00" in notes(screen, "plane")


@sync
async def test_earlybird_draws_the_windowed_distance_threshold_tickets_and_pruned_counts(run: Path) -> None:
    nan = float("nan")
    win = np.array([[nan, nan, 0.4, 0.2, 0.08, 0.05], [nan, nan, 0.5, 0.3, 0.25, 0.2]])
    write_group(run / "analysis.h5", "earlybird", {
        "ratios": np.array([0.3, 0.5]), "eb_epoch": np.array([4, -1]), "epoch": np.arange(6),
        "window_distance": win, "consecutive_distance": win / 2, "kept_fraction": np.full((2, 6), 0.6),
        "params_dense": 1000, "flops_dense": 50000, "params_pruned": np.array([700, -1]),
        "flops_pruned": np.array([30000, -1]),
    }, attrs={"stage": "search", "window": 3, "threshold": 0.1, "channels": 64, "prune_ratio": 0.3}, meta=META)
    async with make_app(run.parents[1]).run_test(size=SIZE) as pilot:
        screen = await open_tab(pilot, run, "earlybird")
        table = screen.query_one("#eb-table", DataTable)
        assert [[str(c) for c in table.get_row_at(i)] for i in range(3)] == [
            ["dense", "-", "1,000", "100.0%", "50,000", "100.0%"],
            ["0.30", "4", "700", "70.0%", "30,000", "60.0%"],
            ["0.50", "no ticket", "-", "-", "-", "-"]]
        (chart,) = charts(screen, "earlybird")
        lines = {kw["label"]: (a[0], a[1]) for a, kw in chart.drawn("plot")}
        assert lines == {"p=0.30": ([2.0, 3.0, 4.0, 5.0], [0.4, 0.2, 0.08, 0.05]),
                         "p=0.50": ([2.0, 3.0, 4.0, 5.0], [0.5, 0.3, 0.25, 0.2]),
                         "threshold 0.1": ([0.0, 5.0], [0.1, 0.1])}
        assert [(a, kw["marker"]) for a, kw in chart.drawn("scatter")] == [(([4.0], [0.08]), TICKET)]
        (xlabel,), _ = chart.drawn("xlabel")[0]
        assert xlabel == "epochs trained"
        assert "within 0.1 of the 2 masks before it (window 3)" in notes(screen, "earlybird")


@sync
async def test_tsne_trajectories_are_joined_in_order_with_tickets_marked(run: Path) -> None:
    # stored out of step order on purpose; trajectory 0 is an exploration phase (no ticket)
    emb = np.array([[0.0, 0.0], [1.0, 1.0], [2.0, 4.0], [10.0, 0.0], [11.0, 1.0], [12.0, 2.0], [20.0, 5.0]])
    member = np.array([0, 0, 0, 1, 1, 1, 2])
    step = np.array([3, 1, 2, 6, 4, 5, 4])
    write_group(run / "analysis.h5", "tsne", {"embedding": emb, "member": member, "step": step,
                                              "labels": ["s/exploration", "s/member0", "s/member1"]},
                attrs={"step_is": "epoch"}, meta=META)
    async with make_app(run.parents[1]).run_test(size=SIZE) as pilot:
        screen = await open_tab(pilot, run, "tsne")
        (chart,) = charts(screen, "tsne")
        lines = {kw["label"]: (a[0], a[1]) for a, kw in chart.drawn("plot")}
        assert lines == {"s/exploration": ([1.0, 2.0, 0.0], [1.0, 4.0, 0.0]),  # steps 1, 2, 3
                         "s/member0": ([11.0, 12.0, 10.0], [1.0, 2.0, 0.0]),  # steps 4, 5, 6
                         "s/member1": ([20.0], [5.0])}
        assert [(a, kw["marker"]) for a, kw in chart.drawn("scatter")] == [(([10.0], [0.0]), TICKET),
                                                                           (([20.0], [5.0]), TICKET)]


@sync
async def test_ood_histograms_are_outlines_on_shared_bins(run: Path) -> None:
    # bins: 30 from 0.5 to 1 (width 1/60); densities by hand: all four in-scores in the last bin (4/4 * 60 = 60),
    # the two out-scores in bins 0 and 15 (1/2 * 60 = 30 each)
    write_group(run / "analysis.h5", "ood", {"auroc": 1.0, "aupr": 1.0,
                                             "scores_in": np.array([0.995, 0.999, 1.0, 1.0], dtype=np.float32),
                                             "scores_out": np.array([0.5, 0.76], dtype=np.float32)},
                attrs={"ood_dataset": "svhn"}, meta=META)
    async with make_app(run.parents[1]).run_test(size=SIZE) as pilot:
        screen = await open_tab(pilot, run, "ood")
        (chart,) = charts(screen, "ood")
        drawn = {kw["label"]: (a[0], a[1]) for a, kw in chart.drawn("plot")}
        assert list(drawn) == ["in-distribution (4)", "svhn (2)"]
        want = {"in-distribution (4)": {29: 60.0}, "svhn (2)": {0: 30.0, 15: 30.0}}
        for label, (x, y) in drawn.items():
            assert len(x) == len(y) == 62 and (x[0], x[-1], y[0], y[-1]) == (0.5, 1.0, 0.0, 0.0)
            heights = y[1:-1:2]
            assert y[2:-1:2] == heights  # each bar's top is flat: an outline, nothing filled over the other
            assert heights == pytest.approx([want[label].get(i, 0.0) for i in range(30)])
        assert "AUROC 1.0000   AUPR 1.0000   (svhn)" in notes(screen, "ood")


@sync
async def test_screen_follows_a_file_that_is_still_being_written(run: Path) -> None:
    h5 = run / "analysis.h5"

    def ood(out: list[float]) -> None:
        write_group(h5, "ood", {"auroc": 0.9, "aupr": 0.8, "scores_in": np.array([0.9, 1.0]),
                                "scores_out": np.array(out)}, meta=META)

    ood([0.6, 0.7])
    async with make_app(run.parents[1]).run_test(size=SIZE) as pilot:
        screen = await open_tab(pilot, run, "ood", poll=0.1)
        built = screen.query_one("#an-tabs", TabbedContent)
        assert screen.tabs == ["ood"]
        # a second group, ordered before the shown one: a new tab in registration order, the shown tab kept
        write_group(h5, "tsne", {"embedding": np.array([[0.0, 0.0], [1.0, 1.0], [2.0, 0.0]]),
                                 "member": np.array([0, 0, 0]), "step": np.array([1, 2, 3]), "labels": ["a"]},
                    meta=META)
        await wait_for(pilot, lambda: screen.tabs == ["tsne", "ood"])
        await settle(pilot)
        assert [t.id for t in screen.query_one(Tabs).query("Tab")] == ["--content-tab-tab-tsne",
                                                                       "--content-tab-tab-ood"]
        assert screen.query_one("#an-tabs", TabbedContent).active == "tab-ood"
        assert screen.query_one("#an-tabs", TabbedContent) is built  # updated in place, not rebuilt
        # the shown group rewritten: its chart is redrawn from the new numbers, still selected
        ood([0.55, 0.6, 0.65])
        await wait_for(pilot, lambda: [kw["label"] for c in charts(screen, "ood") for _, kw in c.drawn("plot")]
                       == ["in-distribution (2)", "OOD (3)"])
        await settle(pilot)
        assert screen.query_one("#an-tabs", TabbedContent).active == "tab-ood"
        assert len(charts(screen, "tsne")) == 1


@sync
async def test_screen_opened_before_any_analysis_shows_the_first_group_when_written(run: Path) -> None:
    async with make_app(run.parents[1]).run_test(size=SIZE) as pilot:
        await pilot.app.push_screen(AnalysisScreen(run, "r/20260101-000000", poll=0.1))
        await settle(pilot)
        screen = pilot.app.screen
        assert "no analysis.h5 yet" in text(screen.query_one(".message", Static))
        write_group(run / "analysis.h5", "ood", {"auroc": 0.9, "aupr": 0.8, "scores_in": np.array([0.9, 1.0]),
                                                 "scores_out": np.array([0.6])}, meta=META)
        await wait_for(pilot, lambda: "analysis.h5: 1 group " in text(screen.query_one("#an-title", Static)))
        await settle(pilot)
        assert screen.tabs == ["ood"] and len(charts(screen, "ood")) == 1
        assert not screen.query(".message")
