"""A damaged analysis.h5 (truncated by a full disk or a kill) next to good runs: listings go on, analyses recompute."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from digits_recipes import with_overrides
from fixtures_tui import T0, TINY, iso, metrics, write_analysis, write_run
from helpers import cli, run_recipe

from engine.store import groups, read_group
from repro.launch import Outcome, execute
from repro.recipe import load
from repro.rundir import list_runs, read_run

DONE = {"state": "done", "progress": 1.0, "recipe": "tiny", "started": iso(T0), "updated": iso(T0 + 90),
        "finished": iso(T0 + 90), "summary": {"train_flops_vs_dense": 1.0, "params.nonzero": 1234}}


def truncate(path: Path) -> tuple[bytes, int]:
    """Cut a file to half its bytes; the bytes left and the original size."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path.read_bytes(), len(data)


def truncated_reason(path: Path, full: int) -> str:
    """What h5py says of a file cut to half of `full` bytes, as the one-line errors quote it."""
    return (f"{path}: cannot read analysis file (Unable to synchronously open file (truncated file: eof = {full // 2}, "
            f"sblock->base_addr = 0, stored_eof = {full}))")


def good_and_damaged(root: Path) -> tuple[Path, Path, str]:
    """Two finished runs of `tiny` with analysis.h5; the second one's cut in half. Returns both and the error."""
    good = write_run(root, "tiny", "20260101-100000", DONE, metrics(3))
    bad = write_run(root, "tiny", "20260101-110000", DONE, metrics(3))
    write_analysis(good)
    write_analysis(bad)
    _, full = truncate(bad / "analysis.h5")
    return good, bad, truncated_reason(bad / "analysis.h5", full)


def test_report_rows_mark_the_damaged_run_and_keep_the_others(tmp_path: Path) -> None:
    from repro.report import report_rows

    good, bad, reason = good_and_damaged(tmp_path / "root")
    alone = report_rows([read_run(good)])
    rows = report_rows(list_runs(tmp_path / "root"))
    assert rows[0] == alone[0]
    assert (rows[0]["run_id"], rows[0]["state"], rows[0]["metric"], rows[0]["reproduced"], rows[0]["error"]) == (
        "20260101-100000", "done", "ensemble_acc", 93.5, None)
    assert len(rows) == 2
    assert {k: rows[1][k] for k in ("recipe", "run_id", "state", "metric", "reproduced", "delta", "error")} == {
        "recipe": "tiny", "run_id": "20260101-110000", "state": "damaged", "metric": "ensemble_acc",
        "reproduced": None, "delta": None, "error": reason}
    assert rows[1]["train_flops_vs_dense"] == 1.0 and rows[1]["wall_time"] == 90.0


def test_report_markdown_lists_the_damaged_run_and_why(tmp_path: Path) -> None:
    from repro.report import report_markdown, report_rows

    _, bad, reason = good_and_damaged(tmp_path / "root")
    md = report_markdown(report_rows(list_runs(tmp_path / "root")))
    assert "| tiny | 20260101-100000 | done | ensemble_acc | - | 93.50 | - |" in md
    assert "| tiny | 20260101-110000 | damaged | ensemble_acc | - | - | - |" in md
    assert md.endswith(f"\n## Damaged runs\n\n- tiny / 20260101-110000: {reason}\n")


def test_cli_report_shows_good_and_damaged_runs(tmp_path: Path) -> None:
    _, bad, reason = good_and_damaged(tmp_path / "root")
    res = cli("report", "--json", "--root", str(tmp_path / "root"))
    assert res.returncode == 0, res.stderr
    rows = json.loads(res.stdout)
    assert [(r["run_id"], r["state"], r["reproduced"], r["error"]) for r in rows] == [
        ("20260101-100000", "done", 93.5, None), ("20260101-110000", "damaged", None, reason)]
    res = cli("report", "--root", str(tmp_path / "root"))
    assert res.returncode == 0, res.stderr
    assert "93.50" in res.stdout and "damaged" in res.stdout
    assert res.stderr.splitlines() == [f"warning: tiny / 20260101-110000: {reason}"]


def test_run_summary_skips_the_ensemble_table_of_a_damaged_file(tmp_path: Path, capsys) -> None:
    from repro.cli import _print_outcome

    _, bad, reason = good_and_damaged(tmp_path / "root")
    _print_outcome(Outcome(bad, "done", {"train_flops": 1e9}))
    out, err = capsys.readouterr()
    assert err.splitlines() == [f"warning: no ensemble table: {reason}"]
    assert out.splitlines()[-1] == f"run directory: {bad}"
    assert "member" not in out  # the ensemble table's header


# ---- recomputing over a damaged file ---------------------------------------------------------------------------

QUICK = with_overrides(TINY, data={"train_subset": 128, "test_subset": 100}, train={"epochs": 1})


@pytest.fixture
def finished_run(tmp_path: Path) -> Path:
    """A real one-epoch run of the tiny recipe on digits, with its /predict."""
    out = run_recipe(QUICK, tmp_path, tmp_path / "run", root=tmp_path / "root", name="tiny.toml")
    assert out.state == "done", out.error
    assert groups(out.run_dir / "analysis.h5") == ["predict"]
    return out.run_dir


def test_analyze_moves_a_damaged_file_aside_and_recomputes(finished_run: Path) -> None:
    h5 = finished_run / "analysis.h5"
    damaged, _ = truncate(h5)
    res = cli("analyze", str(finished_run), "--mode", "predict", "--device", "cpu")
    assert res.returncode == 0, res.stderr
    (moved,) = finished_run.glob("analysis.h5.damaged-*")
    assert res.stderr.splitlines() == [f"warning: {h5} was damaged; moved aside to {moved}; recomputing"]
    assert moved.read_bytes() == damaged
    assert groups(h5) == ["predict"] and read_group(h5, "predict")["member_names"] == ["train"]
    assert json.loads(res.stdout)["members"] == 1


def test_resumed_run_moves_a_damaged_file_aside_before_its_analyses(tmp_path: Path, finished_run: Path) -> None:
    h5 = finished_run / "analysis.h5"
    damaged, _ = truncate(h5)
    out = execute(load(str(tmp_path / "tiny.toml"))[0], root=tmp_path / "root", out=str(finished_run), resume=True,
                  device="cpu")
    assert out.state == "done", out.error
    (moved,) = finished_run.glob("analysis.h5.damaged-*")
    assert moved.read_bytes() == damaged and groups(h5) == ["predict"]
    log = (finished_run / "log.txt").read_text()
    assert f"warning: {h5} was damaged; moved aside to {moved}; recomputing\n" in log


def test_reproduce_figures_skip_a_damaged_file(tmp_path: Path, capsys) -> None:
    from repro.cli import _figures

    good, bad, reason = good_and_damaged(tmp_path / "root")
    _figures(bad)  # `repro reproduce` draws every finished run's figures before writing REPORT.md
    assert capsys.readouterr().err == f"warning: no figures: {reason}\n"
    assert not (bad / "figures").exists()
