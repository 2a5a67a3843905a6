"""analysis.h5: groups replaced atomically, attributes present, ensemble metrics against a hand computation."""

from __future__ import annotations

import math
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from engine.analyses.predict import ensemble_metrics
from engine.store import groups, read_group, write_group


def test_write_group_replaces_one_group_and_keeps_others(tmp_path: Path) -> None:
    f = tmp_path / "analysis.h5"
    write_group(f, "predict", {"labels": np.arange(3), "member_names": ["a", "b"], "ensemble_acc": 50.0},
                meta={"recipe": "r", "run_id": "x"})
    write_group(f, "sparsity", {"overall_density": 0.2}, attrs={"note": "n"}, meta={"recipe": "r", "run_id": "x"})
    write_group(f, "predict", {"labels": np.arange(4), "member_names": ["c"], "ensemble_acc": 75.0})
    assert groups(f) == ["predict", "sparsity"]
    g = read_group(f, "predict")
    assert g["labels"].tolist() == [0, 1, 2, 3] and g["member_names"] == ["c"] and float(g["ensemble_acc"]) == 75.0
    s = read_group(f, "sparsity")
    assert s["_attrs"]["recipe"] == "r" and s["_attrs"]["note"] == "n" and s["_attrs"]["version"] == "1"
    assert set(s["_attrs"]) >= {"recipe", "run_id", "created", "version"}
    assert not list(tmp_path.glob(".*.tmp"))  # no temp files left behind


def test_failed_write_leaves_the_old_file_intact(tmp_path: Path) -> None:
    f = tmp_path / "analysis.h5"
    write_group(f, "predict", {"x": np.ones(2)})
    before = f.read_bytes()
    with pytest.raises(TypeError):
        write_group(f, "predict", {"x": object()})
    assert f.read_bytes() == before
    with h5py.File(f) as h:
        assert h["predict/x"][()].tolist() == [1.0, 1.0]


def test_ensemble_metrics_by_hand() -> None:
    # two members, three points, two classes
    p = torch.tensor([[[0.9, 0.1], [0.4, 0.6], [0.2, 0.8]],
                      [[0.6, 0.4], [0.7, 0.3], [0.3, 0.7]]])
    y = torch.tensor([0, 0, 1])
    m = ensemble_metrics(p, y)
    assert m["member_acc"].tolist() == pytest.approx([100 * 2 / 3, 100.0])
    assert m["member_nll"][0].item() == pytest.approx(-(math.log(0.9) + math.log(0.4) + math.log(0.8)) / 3)
    # mean probs: [0.75, 0.25], [0.55, 0.45], [0.25, 0.75] -> all correct
    assert m["ensemble_acc"] == pytest.approx(100.0)
    assert m["ensemble_nll"] == pytest.approx(-(math.log(0.75) + math.log(0.55) + math.log(0.75)) / 3)
