"""provenance.json: the facts of every start and resume (versions, commit, hardware, command line, seeds per
stage, determinism), its short form in `repro runs --json` and the TUI, and `repro report`'s grouping by it."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import platform
import shutil
import socket
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from digits_recipes import digits_recipe, write_recipe
from helpers import cli, run_recipe, stopped_at

from engine import provenance
from repro.report import report_markdown, report_rows
from repro.rundir import list_runs, read_run

REPO = Path(__file__).resolve().parents[1]
TWO = digits_recipe(train={"epochs": 1}, stage=[{"name": "a", "method": "train"},
                                                {"name": "b", "method": "train", "seed": 11}])
ARGS = ["run", "two.toml", "--set", "run.seed=5", "--device", "cpu", "--quiet"]


def git(*args: str) -> bytes:
    return subprocess.run(["git", *args], cwd=REPO, capture_output=True, check=True).stdout


@pytest.fixture(scope="module")
def two_stage_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished two-stage run made by `repro run --set run.seed=5` (stage b sets its own seed 11)."""
    folder = tmp_path_factory.mktemp("prov")
    write_recipe(folder, TWO, "two.toml")
    run = folder / "root" / "tiny" / "r1"
    res = cli(*ARGS, "--out", str(run), cwd=folder, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    return run


def test_a_run_records_its_provenance(two_stage_run: Path) -> None:
    data = json.loads((two_stage_run / "provenance.json").read_text())
    assert data["version"] == 1 and len(data["sessions"]) == 1
    s = data["sessions"][0]
    assert s["kind"] == "start" and s["device"] == "cpu" and s["world_size"] == 1
    assert s["torch"] == torch.__version__ and s["python"] == platform.python_version()
    assert s["numpy"] == np.__version__ and s["torchvision"] == importlib.metadata.version("torchvision")
    assert s["repro"] == importlib.metadata.version("repro")
    assert s["cuda"] == torch.version.cuda
    assert s["gpu_count"] == (torch.cuda.device_count() if torch.cuda.is_available() else 0)
    assert s["host"] == hashlib.sha256(socket.gethostname().encode()).hexdigest()[:12]
    cpu = [ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
           if ln.startswith("model name")]
    assert s["cpu"] == (cpu[0] if cpu else platform.processor() or None)
    assert s["argv"][1:] == [*ARGS[:2], "--set", "run.seed=5", *ARGS[4:], "--out", str(two_stage_run)]
    assert s["sets"] == ["run.seed=5"] and s["faithful"] is False and s["smoke"] is False
    # run.seed 5: stage i's model seed 5 + 1000 i (b's own seed 11: 11 + 1000), loader its base seed, reinit
    # model + 17, masks 5 * 7919 + i (run seed only)
    assert s["seeds"] == {"a": {"model": 5, "loader": 5, "reinit": 22, "masks": 39595},
                          "b": {"model": 1011, "loader": 11, "reinit": 1028, "masks": 39596}}
    assert s["deterministic"] == {"algorithms": False, "warn_only": False, "cudnn_deterministic": False,
                                  "cudnn_benchmark": False, "cublas_workspace_config": None}
    diff = git("diff", "HEAD", "--no-ext-diff", "--binary")
    assert s["git"] == {"commit": git("rev-parse", "HEAD").decode().strip(), "dirty": bool(diff),
                        "diff_sha256": hashlib.sha256(diff).hexdigest() if diff else None}


def test_runs_json_carries_the_short_form(two_stage_run: Path) -> None:
    res = cli("runs", "--json", "--root", str(two_stage_run.parent.parent))
    assert res.returncode == 0, res.stderr
    [run] = json.loads(res.stdout)
    head = git("rev-parse", "HEAD").decode().strip()[:10]
    dirty = "-dirty" if git("diff", "HEAD", "--no-ext-diff", "--binary") else ""
    assert run["provenance"] == {"commit": head + dirty, "torch": torch.__version__, "gpu": "cpu"}


def test_a_resumed_run_lists_both_sessions_and_git_missing_fails_nothing(tmp_path: Path, monkeypatch) -> None:
    raw = digits_recipe()
    run = tmp_path / "run"
    with stopped_at(2), pytest.raises(KeyboardInterrupt):
        run_recipe(raw, tmp_path, run, root=tmp_path, name="tiny.toml")
    head = git("rev-parse", "HEAD").decode().strip()
    monkeypatch.setenv("PATH", "")  # no git for the resume: its commit is unknown, and the run still finishes
    out = run_recipe(raw, tmp_path, run, root=tmp_path, name="tiny.toml", resume=True)
    assert out.state == "done", out.error
    sessions = json.loads((run / "provenance.json").read_text())["sessions"]
    assert [s["kind"] for s in sessions] == ["start", "resume"]
    assert [s["torch"] for s in sessions] == [torch.__version__] * 2
    seeds = {"train": {"model": 3, "loader": 3, "reinit": 20, "masks": 3 * 7919}}  # run.seed 3, one stage
    assert [s["seeds"] for s in sessions] == [seeds, seeds]  # the resume seeds the unfinished stage again
    assert sessions[0]["git"]["commit"] == head
    assert sessions[1]["git"] == {"commit": None, "dirty": None, "diff_sha256": None}
    assert read_run(run).provenance == {"commit": None, "torch": torch.__version__, "gpu": "cpu"}


def test_git_info_is_null_outside_the_top_of_a_checkout(tmp_path: Path) -> None:
    none = {"commit": None, "dirty": None, "diff_sha256": None}
    assert provenance.git_info(tmp_path) == none  # not a checkout
    assert provenance.git_info(REPO / "engine") == none  # inside one, but not the code's own top (an install)
    assert provenance.git_info(REPO)["commit"] == git("rev-parse", "HEAD").decode().strip()


def _fake_provenance(run: Path, torch_version: str, gpu: str) -> None:
    session = {"kind": "start", "torch": torch_version, "device": "cuda", "gpu": gpu,
               "git": {"commit": "0123456789abcdef", "dirty": False, "diff_sha256": None}}
    (run / "provenance.json").write_text(json.dumps({"version": 1, "sessions": [session]}))


def test_report_groups_a_recipes_runs_by_provenance_when_they_differ(two_stage_run: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    r1, r2, other = root / "tiny" / "r1", root / "tiny" / "r2", root / "other" / "r3"
    for dest in (r1, r2, other):
        shutil.copytree(two_stage_run, dest, ignore=shutil.ignore_patterns(".lock"))
    _fake_provenance(r2, "1.13.1", "NVIDIA A100-SXM4-40GB")
    rows = report_rows(list_runs(root))
    mine = f"torch {torch.__version__}, cpu"
    assert [(r["recipe"], r["run_id"], r["provenance"]) for r in rows] == [
        ("other", "r3", None),  # one run: nothing to tell apart
        ("tiny", "r2", "torch 1.13.1, NVIDIA A100-SXM4-40GB"), ("tiny", "r1", mine)]
    assert "| tiny | r2 (torch 1.13.1, NVIDIA A100-SXM4-40GB) | done |" in report_markdown(rows)
    assert read_run(r2).provenance == {"commit": "0123456789", "torch": "1.13.1", "gpu": "NVIDIA A100-SXM4-40GB"}
    table = cli("report", "--root", str(root), env={"COLUMNS": "400"})
    assert table.returncode == 0, table.stderr
    header = next(ln for ln in table.stdout.splitlines() if "recipe" in ln)
    assert header.split("┃")[-2].strip() == "provenance"
    assert "torch 1.13.1, NVIDIA A100-SXM4-40GB" in table.stdout
    (r2 / "provenance.json").write_text((r1 / "provenance.json").read_text())  # alike again: no column
    assert {r["provenance"] for r in report_rows(list_runs(root))} == {None}


def test_the_apps_run_rows_carry_the_short_form(two_stage_run: Path, tmp_path: Path) -> None:
    from repro.tui.rundata import RunScanner, provenance_text

    run = tmp_path / "root" / "tiny" / "r1"
    shutil.copytree(two_stage_run, run, ignore=shutil.ignore_patterns(".lock"))
    _fake_provenance(run, "1.13.1", "NVIDIA A100-SXM4-40GB")
    scanner = RunScanner(tmp_path / "root")
    [row] = scanner.scan()
    assert provenance_text(row.provenance) == "commit 0123456789  torch 1.13.1  NVIDIA A100-SXM4-40GB"
    (run / "provenance.json").unlink()
    assert scanner.scan()[0].provenance is not None  # cached with status.json, read again when that changes
    (run / "status.json").write_text((run / "status.json").read_text() + " ")
    [row] = scanner.scan()
    assert row.provenance is None and provenance_text(row.provenance) == ""


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", '{"sessions": 5}', '{"sessions": []}',
                                  '{"sessions": ["x"]}', '{"sessions": [{"git": 5, "torch": null}]}'])
def test_a_damaged_provenance_file_reads_as_none_or_unknowns(tmp_path: Path, text: str) -> None:
    (tmp_path / "provenance.json").write_text(text)
    short = provenance.short_form(provenance.read_provenance(tmp_path))
    assert short in (None, {"commit": None, "torch": None, "gpu": "cpu"})
    provenance.start_session(tmp_path, {"kind": "resume"})  # a damaged file is started afresh, never fatal
    sessions = provenance.read_provenance(tmp_path)["sessions"]
    assert sessions[-1] == {"kind": "resume"}
