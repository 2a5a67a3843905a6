"""`repro report`'s test_acc5 and eb_epoch: read from hand-written metrics.jsonl records and a hand-made /earlybird
group, so every expected number is the one written in."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from engine.analyses import earlybird as eb_analysis
from engine.store import write_group
from repro.recipe import load
from repro.report import run_metrics


def _records(run: Path, records: list[dict]) -> None:
    run.mkdir(parents=True, exist_ok=True)
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def _eb_group(run: Path, ratios: list[float], eb_epoch: list[int], prune_ratio: float | None) -> Path:
    h5 = run / "analysis.h5"
    attrs = {"stage": "search", "window": 5, "threshold": 0.1}
    if prune_ratio is not None:  # None: a group written before the attribute existed
        attrs["prune_ratio"] = prune_ratio
    write_group(h5, "earlybird", {"ratios": np.array(ratios), "eb_epoch": np.array(eb_epoch, dtype=np.int64)},
                attrs=attrs)
    return h5


def test_test_acc5_is_the_last_evaluation_of_the_last_stage(tmp_path: Path) -> None:
    _records(tmp_path, [
        {"stage": "search", "epoch": 1, "test_acc": 50.0, "test_loss": 2.0, "test_acc5": 80.0},
        {"stage": "retrain", "epoch": 1, "train_loss": 1.5, "test_acc": 60.0, "test_loss": 1.2, "test_acc5": 85.5},
        {"stage": "retrain", "epoch": 2, "train_loss": 1.4, "test_acc": 58.0, "test_loss": 1.3, "test_acc5": 86.25},
    ])
    got = run_metrics(tmp_path)
    assert got["test_acc5"] == 86.25  # the last, not the best (85.5 at the best top-1) nor the search's
    assert got["test_acc5@search"] == 80.0 and got["test_acc5@retrain"] == 86.25  # Table 3's unpruned row
    assert got["test_acc"] == 58.0 and got["best_test_acc"] == 60.0


def test_no_test_acc5_when_the_evaluation_has_none(tmp_path: Path) -> None:
    # fewer than 100 classes: the trainer records no top-5; the metric is absent, not 0
    _records(tmp_path, [{"stage": "train", "epoch": 1, "test_acc": 91.0, "test_loss": 0.3}])
    got = run_metrics(tmp_path)
    assert "test_acc5" not in got and got["test_acc"] == 91.0


@pytest.mark.parametrize(("prune_ratio", "expected"), [
    (0.5, 20.0),   # the prune stage's ratio picks its own column
    (0.1, 12.0),
    (0.3, None),   # -1: that detector never fired
    (0.7, None),   # a ratio the search did not watch
    (None, None),  # an old group without prune_ratio and several ratios: ambiguous
    (math.nan, None),
])
def test_eb_epoch_of_the_prune_ratio(tmp_path: Path, prune_ratio: float | None, expected: float | None) -> None:
    h5 = _eb_group(tmp_path, [0.1, 0.3, 0.5], [12, -1, 20], prune_ratio)
    got = eb_analysis.report_metrics(h5)
    assert got == ({} if expected is None else {"eb_epoch": expected})


def test_eb_epoch_of_a_single_ratio_search_without_prune_stage(tmp_path: Path) -> None:
    h5 = _eb_group(tmp_path, [0.3], [34], math.nan)
    assert eb_analysis.report_metrics(h5) == {"eb_epoch": 34.0}
    assert eb_analysis.report_metrics(tmp_path / "none.h5") == {}


def test_run_metrics_reports_eb_epoch_beside_the_accuracies(tmp_path: Path) -> None:
    _records(tmp_path, [{"stage": "retrain", "epoch": 1, "test_acc": 71.0, "test_loss": 1.1, "test_acc5": 90.0}])
    _eb_group(tmp_path, [0.1, 0.3, 0.5, 0.7], [35, 34, 30, 28], 0.3)
    got = run_metrics(tmp_path)
    assert got["eb_epoch"] == 34.0 and got["test_acc5"] == 90.0


def test_prune_ratio_is_the_last_eb_prune_stages_ticket_ratio_else_ratio() -> None:
    recipe = load("earlybird_vgg16_cifar100")[0].recipe
    assert eb_analysis.prune_ratio(SimpleNamespace(recipe=recipe)) == 0.3
    recipe = load("earlybird_vgg16_cifar100", sets=["stage.prune.params.ratio=0.1"])[0].recipe
    assert eb_analysis.prune_ratio(SimpleNamespace(recipe=recipe)) == 0.1
    recipe = load("earlybird_vgg16_cifar100", sets=["stage.prune.params.ticket_ratio=0.5"])[0].recipe
    assert eb_analysis.prune_ratio(SimpleNamespace(recipe=recipe)) == 0.5
