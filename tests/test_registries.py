"""The four registries keyed by analysis name agree: every analysis the engine runs has a figure (`repro plot`)
and a view in the TUI's analysis screen, and nothing is drawn that the engine does not write."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
from fixtures_tui import write_more_analyses

from engine.analyses import ANALYSES
from engine.config import ANALYSES as SCHEMA_ANALYSES
from engine.config import NORMALIZATIONS, PARAMS, SPARSE_INITS
from engine.data import NORMALIZE
from engine.methods import METHODS, Method
from engine.methods.sparse_base import SparseMethod
from engine.sparse.inits import INITS, MAGNITUDE_INITS, SCORE_INITS
from engine.store import read_group
from repro.plots import PLOTS, plot
from repro.tui.analysis import TITLES, VIEWS


def test_analyses_figures_and_views_are_one_set() -> None:
    assert set(PLOTS) == set(ANALYSES)
    assert set(VIEWS) == set(ANALYSES)
    assert set(TITLES) == set(VIEWS)


def test_plane_bn_eval_and_channel_overlap_draw(tmp_path: Path) -> None:
    run = tmp_path / "r" / "x"
    run.mkdir(parents=True)
    write_more_analyses(run)
    for mode in ("plane", "bn_eval", "mask_overlap"):
        out = plot(run, mode, tmp_path / f"{mode}.png")
        assert out.stat().st_size > 5000
    h5 = run / "analysis.h5"
    fig = PLOTS["mask_overlap"](read_group(h5, "mask_overlap"), "t")
    assert len(fig.axes) == 3  # one heat map per ratio and the colour bar
    plt.close(fig)
    plane = read_group(h5, "plane")
    fig = PLOTS["plane"](plane, "t")  # train loss and test error over the plane, each titled with its minimum
    assert [a.get_title() for a in fig.axes[:2]] == [f"train loss, min {plane['train_loss'].min():.2g}",
                                                      f"test error (%), min {plane['test_error'].min():.2g}"]
    plt.close(fig)
    bn = read_group(h5, "bn_eval")
    fig = PLOTS["bn_eval"](bn, "t")  # one bar per network in each panel
    assert [len(a.patches) for a in fig.axes] == [len(bn["member_names"])] * 2
    plt.close(fig)


def test_methods_match_their_torch_free_params() -> None:
    """Every method the engine registers has its params class in engine.config.params under the same name, and
    the schema's flags (sparse table, own ensemble members) say what the class does."""
    assert set(METHODS) == set(PARAMS)
    for name, cls in METHODS.items():
        assert PARAMS[name].sparse == issubclass(cls, SparseMethod), name
        assert PARAMS[name].chooses_members == (cls.members is not Method.members), name


def test_schema_names_are_the_engines() -> None:
    """The names a recipe may use are the ones the engine implements: analyses, normalisations, sparse inits."""
    assert set(SCHEMA_ANALYSES) == set(ANALYSES)
    assert set(NORMALIZATIONS) == set(NORMALIZE)
    assert set(SPARSE_INITS) == set(INITS) | set(MAGNITUDE_INITS) | set(SCORE_INITS)
