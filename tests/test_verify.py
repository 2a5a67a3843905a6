"""manifest.json and `repro verify` (issue 20): a smoke run of the demo verifies; a value changed inside analysis.h5
and a byte changed in a checkpoint are each named; a value changed with the manifest rewritten to match is caught
by the recomputation; --deep reproduces the members' predictions; the group hash sees attributes and dtypes."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from engine import manifest
from engine.analyses.calibration import reliability
from engine.io import save_checkpoint
from engine.store import read_group, write_group
from repro.cli import cli
from repro.launch import execute
from repro.recipe import load
from repro.recompute import _ece

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory: pytest.TempPathFactory, one_thread: None) -> Path:
    """The demo under --smoke, run once for the module (about 10 s on the CPU)."""
    root = tmp_path_factory.mktemp("verify-root")
    res = load("demo_digits", smoke=True)[0]
    out = execute(res, root=root, out=str(root / "demo_digits" / "smoke"), device="cpu", smoke=True)
    assert out.state == "done", out
    return out.run_dir


@pytest.fixture()
def run(smoke_run: Path, tmp_path: Path) -> Path:
    """A copy of the smoke run, elsewhere (no run root), for a test to change."""
    dst = tmp_path / "copy" / "demo_digits" / "smoke"
    shutil.copytree(smoke_run, dst)
    return dst


def verify(*args: str) -> tuple[int, list[str]]:
    res = CliRunner().invoke(cli, ["verify", *args])
    return res.exit_code, res.output.splitlines()


def table_row(lines: list[str], analysis: str, quantity: str) -> list[str]:
    """The cells of the table row of one quantity."""
    for line in lines:
        cells = [c.strip() for c in line.strip("│ ").split("│")]
        if cells[:2] == [analysis, quantity]:
            return cells
    raise AssertionError(f"no row {analysis} {quantity} in:\n" + "\n".join(lines))


def test_manifest_covers_checkpoints_analysis_and_metrics(smoke_run: Path) -> None:
    files = json.loads((smoke_run / "manifest.json").read_text())["files"]
    for rel in ["edst/ticket-1.pt", "edst/ticket-2.pt", "edst/ticket-3.pt", "edst/final.pt", "edst/last.pt",
                "analysis.h5", "metrics.jsonl"]:
        data = (smoke_run / rel).read_bytes()
        assert files[rel] == {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}, rel
    assert {k for k in files if "#" in k} == {f"analysis.h5#/{g}" for g in [
        "predict", "disagreement", "kd", "calibration", "tsne", "mask_overlap", "ood", "sparsity"]}
    assert manifest.verify_manifest(smoke_run) == []


def test_smoke_run_verifies_and_prints_the_stored_ensemble_accuracy(run: Path) -> None:
    code, lines = verify(str(run))
    assert code == 0, "\n".join(lines)
    assert lines[0] == "manifest.json: every file matches"
    assert lines[-1] == "verified: all agree"
    stored = float(read_group(run / "analysis.h5", "predict")["ensemble_acc"])
    cells = table_row(lines, "predict", "ensemble_acc")
    assert cells[2:] == [f"{stored:.6g}", f"{stored:.6g}", "0", "ok"]
    assert "tsne: not recomputed (covered by its hash only)" in lines


def test_changed_value_and_checkpoint_byte_are_named(run: Path) -> None:
    acc = float(read_group(run / "analysis.h5", "predict")["ensemble_acc"])
    with h5py.File(run / "analysis.h5", "r+") as f:  # in place, as someone editing the file would
        f["predict/ensemble_acc"][()] = 99.5
    ck = run / "edst" / "ticket-2.pt"
    data = bytearray(ck.read_bytes())
    data[len(data) // 2] ^= 0x01
    ck.write_bytes(bytes(data))
    code, lines = verify(str(run))
    assert code == 1
    assert lines[:4] == ["manifest.json: 3 file(s) do not match",
                         "analysis.h5: sha256 differs from manifest.json",
                         "analysis.h5#/predict: sha256 differs from manifest.json",
                         "edst/ticket-2.pt: sha256 differs from manifest.json"]
    assert lines[-2:] == [f"predict ensemble_acc: stored 99.5, recomputed {acc:.6g}", "NOT verified"]


def test_value_changed_with_a_matching_manifest_is_caught_by_recomputation(run: Path) -> None:
    h5 = run / "analysis.h5"
    g = read_group(h5, "predict")
    attrs = g.pop("_attrs")
    true_acc = float(g["ensemble_acc"])
    g["ensemble_acc"] = true_acc + 2.5
    write_group(h5, "predict", g, attrs=attrs)  # the writer's hook records the new hashes: the manifest agrees
    code, lines = verify(str(run))
    assert code == 1
    assert lines[0] == "manifest.json: every file matches"
    assert f"predict ensemble_acc: stored {true_acc + 2.5:.6g}, recomputed {true_acc:.6g}" in lines
    assert table_row(lines, "predict", "ensemble_acc")[-1] == "DIFFERS"


def test_missing_file_and_older_run(run: Path) -> None:
    (run / "edst" / "trajectory.pt").unlink()
    code, lines = verify(str(run))
    assert (code, lines[:2]) == (1, ["manifest.json: 1 file(s) do not match", "edst/trajectory.pt: missing"])
    (run / "manifest.json").unlink()
    code, lines = verify(str(run))
    assert code == 0
    assert lines[0] == "no manifest.json (written by an older version): content not checked"


def test_copy_without_weights_verifies_what_it_holds(run: Path) -> None:
    for ck in run.glob("*/*.pt"):  # as `repro bundle --no-weights` leaves it
        ck.unlink()
    code, lines = verify(str(run))
    assert code == 0, "\n".join(lines)
    assert lines[:2] == ["manifest.json: every file in this copy matches",
                         "no checkpoint of manifest.json is in this copy (bundled with --no-weights?): 6 not checked"]
    assert "sparsity: not recomputed (no edst/final.pt in this copy: bundled without weights?)" in lines
    assert "mask_overlap: not recomputed (no edst/ticket-1.pt in this copy: bundled without weights?)" in lines
    code, lines = verify(str(run), "--deep")
    assert code == 1
    assert "deep edst/ticket-1.pt: not in this copy: stored nan, recomputed nan" in lines


def test_json_and_not_a_run_directory(run: Path, tmp_path: Path) -> None:
    res = CliRunner().invoke(cli, ["verify", str(run), "--json"])
    out = json.loads(res.output)
    assert (res.exit_code, out["ok"], out["manifest"]["mismatches"]) == (0, True, [])
    acc = next(c for c in out["checks"] if c["quantity"] == "ensemble_acc")
    assert acc["stored"] == acc["recomputed"] == float(read_group(run / "analysis.h5", "predict")["ensemble_acc"])
    res = CliRunner().invoke(cli, ["verify", str(tmp_path)])
    assert res.exit_code == 2
    assert res.output.splitlines() == [f"error: {tmp_path}: not a run directory (no recipe.toml)"]


def test_deep_recomputes_the_members_predictions(run: Path) -> None:
    code, lines = verify(str(run), "--deep")
    assert code == 0, "\n".join(lines)
    rows = [[c.strip() for c in ln.strip("│ ").split("│")] for ln in lines if ln.startswith("│ deep")]
    assert [r[1].split(" probs")[0] for r in rows] == [f"ticket{k} (edst/ticket-{k}.pt)" for k in (1, 2, 3)]
    assert all(r[-1] == "ok" and float(r[-2]) <= 1e-4 for r in rows)
    assert "deep: <= 0.0001" in "\n".join(lines)


# ---- units ---------------------------------------------------------------------------------------------------


def _group_hash(path: Path, dtype: str = "float32", attr: str = "a") -> str:
    with h5py.File(path, "w") as f:
        g = f.create_group("g")
        g.create_dataset("x", data=np.arange(6, dtype=dtype).reshape(2, 3))
        g.create_dataset("names", data=np.array(["a", "b"], dtype=object), dtype=h5py.string_dtype())
        g.attrs["split"] = attr
    with h5py.File(path, "r") as f:
        return manifest.group_digest(f["g"])


def test_group_hash_sees_values_dtypes_and_attributes(tmp_path: Path) -> None:
    base = _group_hash(tmp_path / "a.h5")
    assert _group_hash(tmp_path / "b.h5") == base  # the same content in another file: the same hash
    assert _group_hash(tmp_path / "c.h5", dtype="float64") != base  # equal values, another dtype
    assert _group_hash(tmp_path / "d.h5", attr="b") != base
    with h5py.File(tmp_path / "b.h5", "r+") as f:
        f["g/x"][0, 0] = 7.0
        assert manifest.group_digest(f["g"]) != base


def test_checkpoint_writes_record_their_bytes_only_inside_a_run(tmp_path: Path) -> None:
    run = tmp_path / "run"
    (run / "s").mkdir(parents=True)
    (run / "recipe.toml").write_text("")
    save_checkpoint(run / "s" / "best-pending.pt", {"w": torch.arange(3)})
    data = (run / "s" / "best-pending.pt").read_bytes()
    entry = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    assert json.loads((run / "manifest.json").read_text()) == {"version": 1, "files": {"s/best-pending.pt": entry}}
    (run / "s" / "best-pending.pt").rename(run / "s" / "best.pt")
    manifest.moved(run / "s" / "best-pending.pt", run / "s" / "best.pt")
    assert manifest.read(run)["files"] == {"s/best.pt": entry}
    assert manifest.verify_manifest(run) == []
    manifest.forget(run / "s" / "best.pt")
    assert manifest.read(run)["files"] == {}
    save_checkpoint(tmp_path / "loose" / "x.pt", {"w": torch.arange(3)})  # no recipe.toml above: no manifest
    assert not (tmp_path / "loose" / "manifest.json").exists() and not (tmp_path / "manifest.json").exists()


@pytest.mark.parametrize("binning", ["equal", "original"])
def test_recomputed_ece_agrees_with_the_engine_in_both_binnings(binning: str) -> None:
    g = torch.Generator().manual_seed(0)
    p = torch.softmax(3 * torch.randn(500, 10, generator=g), 1)
    p[:5] = torch.eye(10)[:5]  # confidences of exactly 1: the last bin's edge
    y = torch.randint(0, 10, (500,), generator=g)
    eng = reliability(p, y, 15, binning)  # type: ignore[arg-type]
    shown = len(eng["count"])  # what /calibration stores as n_bins: 15, or 14 for the original's edges
    ece, counts = _ece(p.numpy(), y.numpy(), shown, binning)
    assert ece == pytest.approx(eng["ece"], rel=1e-12) and eng["ece"] > 0.01
    assert counts.tolist() == eng["count"].tolist()


@pytest.mark.parametrize("weights", [True, False])
def test_a_bundle_unpacked_elsewhere_verifies(smoke_run: Path, tmp_path: Path, weights: bool) -> None:
    """The issue's round trip: `repro bundle` the demo run, unpack it with no run root, `repro verify` it (and with
    the weights, --deep reproduces the members' predictions from the bundled checkpoints)."""
    import tarfile

    out = tmp_path / "run.tar.gz"
    res = CliRunner().invoke(cli, ["bundle", str(smoke_run), "-o", str(out)] + ([] if weights else ["--no-weights"]))
    assert res.exit_code == 0, res.output
    with tarfile.open(out) as tar:
        tar.extractall(tmp_path / "unpacked", filter="data")
    unpacked = tmp_path / "unpacked" / "demo_digits" / "smoke"
    code, lines = verify(str(unpacked), *(["--deep"] if weights else []))
    assert code == 0, "\n".join(lines)
    ens = table_row(lines, "predict", "ensemble_acc")
    assert float(ens[2]) == pytest.approx(float(read_group(smoke_run / "analysis.h5", "predict")["ensemble_acc"]),
                                          abs=1e-3)
