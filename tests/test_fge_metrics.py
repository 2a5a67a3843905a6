"""The report metrics of the FGE / mode-connectivity tables: the curve's straight segment and ends, and the
members' disagreement, each from a hand-made analysis.h5 group with the value computed by hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from engine.analyses.ensemble import disagreement_matrix, mean_off_diagonal
from engine.config.names import METRICS
from engine.store import write_group
from repro.report import run_metrics

NEW = ("curve_line_min_train_loss", "curve_line_max_train_loss", "curve_line_min_test_error",
       "curve_line_max_test_error", "curve_ends_min_train_loss", "curve_ends_max_train_loss",
       "curve_ends_min_test_error", "curve_ends_max_test_error", "disagreement_mean")


def test_the_new_metrics_are_names_a_recipe_may_use() -> None:
    assert set(NEW) <= set(METRICS)


def test_curve_segment_and_ends_metrics(tmp_path: Path) -> None:
    """/curve with 3 points: the curve's own series, the segment's stats as the analysis writes them (line_*)."""
    train_loss = np.array([0.30, 0.20, 0.25])   # ends 0.30 (t=0) and 0.25 (t=1)
    test_error = np.array([21.0, 20.0, 22.5])   # ends 21.0 and 22.5
    attrs = {"train_loss_min": 0.20, "train_loss_max": 0.30, "test_error_min": 20.0, "test_error_max": 22.5,
             "line_train_loss_min": 0.25, "line_train_loss_max": 2.5,
             "line_test_error_min": 21.0, "line_test_error_max": 90.0}
    write_group(tmp_path / "analysis.h5", "curve", {"t": np.array([0.0, 0.5, 1.0]), "train_loss": train_loss,
                                                     "test_error": test_error}, attrs=attrs)
    got = run_metrics(tmp_path)
    assert got["curve_min_train_loss"] == 0.20 and got["curve_max_test_error"] == 22.5
    assert [got[f"curve_line_{s}_train_loss"] for s in ("min", "max")] == [0.25, 2.5]
    assert [got[f"curve_line_{s}_test_error"] for s in ("min", "max")] == [21.0, 90.0]
    assert [got[f"curve_ends_{s}_train_loss"] for s in ("min", "max")] == [0.25, 0.30]
    assert [got[f"curve_ends_{s}_test_error"] for s in ("min", "max")] == [21.0, 22.5]
    assert "disagreement_mean" not in got


def test_curve_without_the_segment_has_no_line_metrics(tmp_path: Path) -> None:
    write_group(tmp_path / "analysis.h5", "curve", {"train_loss": np.array([0.5, 0.4]),
                                                     "test_error": np.array([30.0, 31.0])},
                attrs={"train_loss_min": 0.4, "train_loss_max": 0.5, "test_error_min": 30.0,
                       "test_error_max": 31.0})
    got = run_metrics(tmp_path)
    assert not any(k.startswith("curve_line_") for k in got)
    assert got["curve_ends_max_test_error"] == 31.0


def test_disagreement_mean_is_the_mean_pairwise_disagreement_in_percent(tmp_path: Path) -> None:
    """3 members on 4 test points, top-1 predictions a = [0,1,2,0], b = [0,1,1,1], c = [2,1,2,0]:
    d(a,b) = 2/4, d(a,c) = 1/4, d(b,c) = 3/4, mean over the pairs = 0.5 -> 50%."""
    preds = [[0, 1, 2, 0], [0, 1, 1, 1], [2, 1, 2, 0]]
    probs = torch.nn.functional.one_hot(torch.tensor(preds), 3).double() * 0.8 + 0.2 / 3
    matrix = disagreement_matrix(probs)
    assert matrix[0, 1] == 0.5 and matrix[0, 2] == 0.25 and matrix[1, 2] == 0.75
    mean = mean_off_diagonal(matrix)
    write_group(tmp_path / "analysis.h5", "disagreement", {"matrix": matrix.numpy(), "mean": mean,
                                                           "member_names": ["a", "b", "c"]})
    assert run_metrics(tmp_path)["disagreement_mean"] == pytest.approx(50.0, abs=1e-12)


def test_two_members_disagreement_is_the_one_pair(tmp_path: Path) -> None:
    """Two members disagreeing on 1 of 5 points: 20% (the paper's 19.97% is such a pair)."""
    write_group(tmp_path / "analysis.h5", "disagreement", {"matrix": np.array([[0.0, 0.2], [0.2, 0.0]]),
                                                           "mean": 0.2, "member_names": ["train1", "train2"]})
    assert run_metrics(tmp_path)["disagreement_mean"] == pytest.approx(20.0, abs=1e-12)
