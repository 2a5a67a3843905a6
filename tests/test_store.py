"""analysis.h5: groups replaced atomically, attributes present, ensemble metrics against a hand computation."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from engine import store
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


# ---- damaged files -------------------------------------------------------------------------------------------


def _damaged(tmp_path: Path, name: str = "analysis.h5") -> tuple[Path, bytes, int]:
    """A real analysis.h5 with two groups, then truncated to half its bytes (as a full disk or a kill leaves it)."""
    f = tmp_path / name
    write_group(f, "predict", {"labels": np.arange(500), "ensemble_acc": 50.0})
    write_group(f, "sparsity", {"overall_density": 0.2})
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 2])
    return f, f.read_bytes(), len(data)


def test_reading_a_damaged_file_is_one_error_naming_it(tmp_path: Path) -> None:
    f, _, full = _damaged(tmp_path)
    want = (f"{f}: cannot read analysis file (Unable to synchronously open file (truncated file: eof = "
            f"{full // 2}, sblock->base_addr = 0, stored_eof = {full}))")
    for read in (lambda: groups(f), lambda: read_group(f, "predict")):
        with pytest.raises(store.DamagedFile) as e:
            read()
        assert str(e.value) == want
        assert isinstance(e.value, OSError)
    garbage = tmp_path / "garbage.h5"
    garbage.write_bytes(b"not hdf5 at all")
    with pytest.raises(store.DamagedFile, match=r"garbage\.h5: cannot read analysis file \(.*file signature not found"):
        groups(garbage)
    assert groups(tmp_path / "missing.h5") == []
    with pytest.raises(FileNotFoundError):  # a missing file is not a damaged one (`repro plot` says so)
        read_group(tmp_path / "missing.h5", "predict")


def test_set_aside_moves_only_a_damaged_file_and_never_overwrites(tmp_path: Path, monkeypatch) -> None:
    assert store.set_aside_if_damaged(tmp_path / "analysis.h5") is None  # nothing there
    good = tmp_path / "good" / "analysis.h5"
    write_group(good, "predict", {"x": np.ones(2)})
    before = good.read_bytes()
    assert store.set_aside_if_damaged(good) is None and good.read_bytes() == before
    f, damaged, _ = _damaged(tmp_path)
    monkeypatch.setattr(store.time, "strftime", lambda fmt, *a: "20260102-030405")
    (tmp_path / "analysis.h5.damaged-20260102-030405").write_bytes(b"an earlier one")
    moved = store.set_aside_if_damaged(f)
    assert moved == tmp_path / "analysis.h5.damaged-20260102-030405-2"
    assert moved.read_bytes() == damaged and not f.exists()
    assert (tmp_path / "analysis.h5.damaged-20260102-030405").read_bytes() == b"an earlier one"
    f2, _, _ = _damaged(tmp_path)
    assert store.set_aside_if_damaged(f2) == tmp_path / "analysis.h5.damaged-20260102-030405-3"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "analysis.h5.damaged-20260102-030405", "analysis.h5.damaged-20260102-030405-2",
        "analysis.h5.damaged-20260102-030405-3", "good"]


def test_write_group_refuses_to_build_on_a_damaged_file(tmp_path: Path) -> None:
    f, damaged, _ = _damaged(tmp_path)
    with pytest.raises(store.DamagedFile) as e:
        write_group(f, "predict", {"x": np.ones(2)})
    assert str(e.value).startswith(f"{f}: cannot read analysis file (Unable to synchronously open file (truncated")
    assert str(e.value).endswith("); /predict not written: move it aside (`repro analyze` does) to start afresh")
    assert f.read_bytes() == damaged and not list(tmp_path.glob(".*.tmp"))


def test_set_aside_leaves_a_good_file_that_another_process_holds_open(tmp_path: Path) -> None:
    f = tmp_path / "analysis.h5"
    write_group(f, "predict", {"x": np.ones(2)})
    holder = subprocess.Popen([sys.executable, "-c", "import sys, h5py; f = h5py.File(sys.argv[1], 'r+'); "
                               "print('open', flush=True); sys.stdin.read()", str(f)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "open\n"  # HDF5 now holds its write lock on the file
        assert store.why_damaged(f) is None
        assert store.set_aside_if_damaged(f) is None
        assert sorted(p.name for p in tmp_path.iterdir()) == ["analysis.h5"]
    finally:
        holder.communicate("")
    assert read_group(f, "predict")["x"].tolist() == [1.0, 1.0]
