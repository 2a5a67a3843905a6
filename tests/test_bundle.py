"""`repro bundle`: a finished run as a .tar.gz (exact members with and without weights, no links followed, atomic
and never overwriting), readable again where it is unpacked."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest
from digits_recipes import digits_recipe
from helpers import cli, run_recipe

from repro.bundle import BundleError, bundle
from repro.report import report_rows
from repro.rundir import list_runs, read_run

TWO = digits_recipe(train={"epochs": 1}, stage=[{"name": "a", "method": "train"}, {"name": "b", "method": "train"}])
BASE = {"recipe.toml", "provenance.json", "status.json", "metrics.jsonl", "log.txt", "analysis.h5",
        "a/tickets.json", "b/tickets.json", "figures/predict.png", "manifest.json"}
WEIGHTS = {"a/final.pt", "b/final.pt", "a/last.pt"}  # each stage's final.pt; a/last.pt because the manifest lists it


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished two-stage run with a figure, a manifest listing a/last.pt, and links that must stay out."""
    folder = tmp_path_factory.mktemp("bundle")
    out = run_recipe(TWO, folder, folder / "root" / "tiny" / "r1", root=folder / "root", name="two.toml")
    assert out.state == "done", out.error
    r = out.run_dir
    (r / "figures").mkdir()
    (r / "figures" / "predict.png").write_bytes(b"\x89PNG fake")
    secret = folder / "secret.txt"
    secret.write_text("not part of the run")
    (r / "figures" / "leak.png").symlink_to(secret)  # a link out of the run: never followed
    (r / "b" / "extra.pt").symlink_to(r / "a" / "final.pt")  # a link inside it: never taken either
    files = {rel: {"sha256": "0" * 64, "size": 1} for rel in ("a/last.pt", "metrics.jsonl", "b/extra.pt",
                                                                 "../secret.txt", "analysis.h5")}
    files["analysis.h5#/predict"] = {"sha256": "0" * 64}
    (r / "manifest.json").write_text(json.dumps({"version": 1, "files": files}))
    return r


def members(path: Path) -> set[str]:
    with tarfile.open(path) as tar:
        assert all(m.isfile() for m in tar.getmembers())
        return set(tar.getnames())


def test_bundle_holds_exactly_the_runs_files(run: Path, tmp_path: Path) -> None:
    full, light = tmp_path / "full.tar.gz", tmp_path / "light.tar.gz"
    res = cli("bundle", str(run), "-o", str(full))
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith(f"{full}: 1 run(s), {len(BASE) + len(WEIGHTS) + 1} files, ")
    assert members(full) == {"report.json", *(f"tiny/r1/{f}" for f in BASE | WEIGHTS)}
    bundle([run], light, weights=False)
    assert members(light) == {"report.json", *(f"tiny/r1/{f}" for f in BASE)}
    with tarfile.open(full) as tar:
        assert tar.extractfile("tiny/r1/b/final.pt").read() == (run / "b" / "final.pt").read_bytes()
        assert json.load(tar.extractfile("report.json")) == json.loads(json.dumps(report_rows([read_run(run)])))


def test_an_unpacked_bundle_reads_as_a_run(run: Path, tmp_path: Path) -> None:
    path = tmp_path / "b.tar.gz"
    bundle([run], path)
    dest = tmp_path / "elsewhere"
    with tarfile.open(path) as tar:
        tar.extractall(dest, filter="data")
    copy = read_run(dest / "tiny" / "r1")
    orig = read_run(run)
    assert (copy.state, copy.best, copy.provenance) == ("done", orig.best, orig.provenance)
    assert [r["reproduced"] for r in report_rows(list_runs(dest))] == [r["reproduced"] for r in
                                                                        report_rows([orig])]
    res = cli("report", "--json", env={"REPRO_ROOT": str(dest)})
    assert res.returncode == 0, res.stderr
    rows = json.loads(res.stdout)
    assert rows == json.loads((dest / "report.json").read_text()) and rows[0]["reproduced"] is not None


def test_bundle_refuses_what_it_cannot_do(run: Path, tmp_path: Path) -> None:
    out = tmp_path / "b.tar.gz"
    out.write_bytes(b"keep me")
    res = cli("bundle", str(run), "-o", str(out))
    assert (res.returncode, res.stderr) == (2, f"error: {out}: already exists; use --force to replace it\n")
    assert out.read_bytes() == b"keep me"
    assert cli("bundle", str(run), "-o", str(out), "--force").returncode == 0
    assert "tiny/r1/recipe.toml" in members(out)
    res = cli("bundle", str(run), str(run.parent), "-o", str(tmp_path / "c.tar.gz"))
    assert (res.returncode, res.stderr) == (2, f"error: {run.parent}: not a run directory (no recipe.toml)\n")
    assert not (tmp_path / "c.tar.gz").exists()
    with pytest.raises(BundleError, match="a second run named tiny/r1"):
        bundle([run, run], tmp_path / "d.tar.gz")
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp file left behind
