"""Reproduced numbers beside the paper's: a run's final metrics against its recipe's `[expect]`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine.runlog import read_metrics
from engine.store import DamagedFile, groups, read_group
from repro.recipe import RecipeError, load_resolved
from repro.rundir import RunInfo, Status

# what reading a run's metrics.jsonl and analysis.h5 raises when they are damaged or foreign (DamagedFile is an
# OSError; a group written by another version may lack a dataset: KeyError; a bad number: ValueError or TypeError)
_UNREADABLE = (OSError, ValueError, KeyError, TypeError)


def _one_line(e: BaseException, run_dir: Path) -> str:
    """An error as one line that names the file: DamagedFile's own message, else the run directory and the reason."""
    if isinstance(e, DamagedFile):
        return str(e)
    reason = " ".join(str(e).split()) or type(e).__name__
    return f"{run_dir}: cannot read its metrics ({type(e).__name__}: {reason})"


def run_metrics(run_dir: Path) -> dict[str, float]:
    """The metric names `[expect]` may use, computed from metrics.jsonl and analysis.h5 (percent units); raises
    DamagedFile (or another OSError, ValueError, KeyError, TypeError) for files that cannot be read."""
    out: dict[str, float] = {}
    records = read_metrics(run_dir)
    stages = list(dict.fromkeys(r.get("stage") for r in records))
    for stage in stages:  # every stage's as M@STAGE; the last stage's also plain
        stage_recs = [r for r in records if r.get("stage") == stage]
        evals = [r for r in stage_recs if "test_acc" in r]
        got: dict[str, float] = {}
        if evals:
            got["test_acc"] = float(evals[-1]["test_acc"])
            got["test_error"] = 100.0 - got["test_acc"]
            got["test_nll"] = float(evals[-1]["test_loss"])
            got["best_test_acc"] = max(float(r["test_acc"]) for r in evals)
            if "test_acc5" in evals[-1]:  # top-5, recorded for 100 classes or more
                got["test_acc5"] = float(evals[-1]["test_acc5"])
        out.update({f"{k}@{stage}": v for k, v in got.items()})
        if stage == stages[-1]:
            out.update(got)
            trained = [r for r in stage_recs if "train_loss" in r]
            if trained:
                out["train_loss"] = float(trained[-1]["train_loss"])
    h5 = Path(run_dir) / "analysis.h5"
    if "predict" in groups(h5):
        g = read_group(h5, "predict")
        out["ensemble_acc"] = float(g["ensemble_acc"])
        out["ensemble_error"] = 100.0 - out["ensemble_acc"]
        out["ensemble_nll"] = float(g["ensemble_nll"])
        out["member_acc_mean"] = float(g["member_acc"].mean())
        names = list(g["member_names"])
        if "superposed" in names:
            out["superposed_acc"] = float(g["member_acc"][names.index("superposed")])
    # deferred: engine.analyses imports torch, which the CLI's torch-free commands importing this module must not load
    from engine.analyses import calibration, corruption, curve, disagreement, earlybird, predict

    for analysis in (curve, calibration, corruption, disagreement, earlybird, predict):
        out.update(analysis.report_metrics(h5))
    return out


def wall_time(status: dict[str, Any]) -> float | None:
    """Seconds from started to finished (or to the last update), from status.json's timestamps."""
    s = Status(status)
    return None if s.started is None or s.ended is None else s.ended - s.started


def flops_cell(row: dict[str, Any]) -> str:
    """A row's training FLOPs as a multiple of the dense reference, with the reference's length when the run
    recorded it ("0.610 (vs 250 ep)": the run cost 0.61 of one dense model trained 250 epochs); "-" without FLOPs."""
    ratio = row.get("train_flops_vs_dense")
    if ratio is None:
        return "-"
    epochs = row.get("train_flops_dense_epochs")
    if isinstance(epochs, (int, float)) and not isinstance(epochs, bool):
        return f"{ratio:.3f} (vs {epochs:g} ep)"
    return f"{ratio:.3f}"


def report_markdown(rows: list[dict[str, Any]]) -> str:
    """REPORT.md: one row per run and expected metric — paper number, ours, difference, wall time, GPU."""
    lines = ["# Reproduced numbers", "",
             "| recipe | run | state | metric | paper | ours | difference | within tolerance | train FLOPs (x dense) "
             "| wall time | GPU | source |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]

    def f(v: Any, fmt: str = ".2f") -> str:
        return "-" if v is None else format(v, fmt)

    for r in rows:
        wt = r.get("wall_time")
        wt_s = "-" if wt is None else (f"{wt / 3600:.1f} h" if wt >= 3600 else f"{wt / 60:.1f} min")
        ok = "" if r["within"] is None else ("yes" if r["within"] else "no")
        run = r["run_id"] + (f" ({r['provenance']})" if r.get("provenance") else "")  # its recipe's runs differ
        lines.append(f"| {r['recipe']} | {run} | {r['state']} | {r['metric']} | {f(r['paper'])} | "
                     f"{f(r['reproduced'])} | {f(r['delta'], '+.2f')} | {ok} | {flops_cell(r)} "
                     f"| {wt_s} | {r.get('gpu') or '-'} | {r['source']} |")
    errors = damaged_runs(rows)
    if errors:
        lines += ["", "## Damaged runs", "", *(f"- {run}: {error}" for run, error in errors.items())]
    return "\n".join(lines) + "\n"


def damaged_runs(rows: list[dict[str, Any]]) -> dict[str, str]:
    """'recipe / run' -> why its files could not be read, once per damaged run (for warnings and REPORT.md)."""
    return {f"{r['recipe']} / {r['run_id']}": r["error"] for r in rows if r.get("error")}


def report_rows(runs: list[RunInfo]) -> list[dict[str, Any]]:
    """One row per (run, expected metric); a run without `[expect]` gives one row with its main metric. A run whose
    files cannot be read keeps its rows, with state `damaged`, no numbers and `error` saying which file and why."""
    rows = []
    for info in runs:
        try:
            recipe = load_resolved(info.path / "recipe.toml")
        except (RecipeError, OSError):
            continue
        error = None
        try:
            got = run_metrics(info.path)
        except _UNREADABLE as e:  # one damaged run must not hide the others: its rows say why instead
            got, error = {}, _one_line(e, info.path)
        exp = recipe.expect
        summary = info.status.get("summary") or {}
        base = {"recipe": info.recipe, "run_id": info.run_id, "state": "damaged" if error else info.state,
                "smoke": info.smoke, "source": exp.source,
                "train_flops": summary.get("train_flops"), "train_flops_vs_dense": summary.get("train_flops_vs_dense"),
                "train_flops_dense_epochs": summary.get("train_flops_dense_epochs"),
                "params": summary.get("params.params"), "params_nonzero": summary.get("params.nonzero"),
                "wall_time": wall_time(info.status), "gpu": info.status.get("gpu"), "error": error}
        expected = exp.for_run(recipe.model_dump(), recipe.run.point)
        if not expected:
            if error:  # the metric it would report had its analyses been readable
                main = "ensemble_acc" if "predict" in recipe.analyses else "test_acc"
            else:
                main = "ensemble_acc" if "ensemble_acc" in got else "test_acc"
            rows.append({**base, "metric": main, "paper": None, "reproduced": got.get(main), "delta": None,
                         "tolerance": None, "within": None})
            continue
        for cell in expected:
            val = got.get(cell.metric)
            delta = None if val is None or cell.paper is None else val - cell.paper
            where = f"{cell.table} {cell.row} / {cell.column}: " if cell.table else ""
            rows.append({**base, "metric": cell.metric, "paper": cell.paper, "reproduced": val, "delta": delta,
                         "tolerance": cell.tolerance, "within": None if delta is None else abs(delta) <= cell.tolerance,
                         "source": where + cell.source if where else cell.source})
    return group_by_provenance(rows, {(i.recipe, i.run_id): i.provenance for i in runs})


def provenance_label(short: dict[str, Any] | None) -> str:
    """A run's torch version and GPU as one cell ("torch 2.5.1, NVIDIA H100 80GB HBM3"); "unknown" without
    provenance.json (a run from before it was recorded)."""
    if not short:
        return "unknown"
    return f"torch {short.get('torch') or '?'}, {short.get('gpu') or '?'}"


def group_by_provenance(rows: list[dict[str, Any]], shorts: dict[tuple[str, str], dict[str, Any] | None]
                        ) -> list[dict[str, Any]]:
    """Fill each row's `provenance` (torch version and GPU) only where the runs of its recipe differ in them,
    and put a recipe's rows of one provenance together (recipes keep their order); None elsewhere."""
    labels: dict[str, set[str]] = {}
    for r in rows:
        labels.setdefault(r["recipe"], set()).add(provenance_label(shorts.get((r["recipe"], r["run_id"]))))
    order = {recipe: i for i, recipe in enumerate(labels)}
    for r in rows:
        differ = len(labels[r["recipe"]]) > 1
        r["provenance"] = provenance_label(shorts.get((r["recipe"], r["run_id"]))) if differ else None
    return sorted(rows, key=lambda r: (order[r["recipe"]], r["provenance"] or ""))
