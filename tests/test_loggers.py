"""Metrics mirrored to TensorBoard / W&B / MLflow (engine/loggers.py): what the event files hold, switching it off,
a missing or failing logger never stopping a run, resumes, and the recipe key."""

from __future__ import annotations

import io
import json
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from digits_recipes import digits_recipe, write_recipe
from helpers import cli
from rich.console import Console
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from engine import loggers as lg
from engine import trainer as tr
from engine.config import names
from engine.runlog import RunLog, read_metrics
from engine.runner import run_recipe
from repro.launch import execute
from repro.progress import RichProgress
from repro.recipe import RecipeError, load, load_resolved, to_toml

pytestmark = pytest.mark.usefixtures("one_thread")

# one stage of two epochs, no analyses: a run in about two seconds
QUICK = digits_recipe(train={"epochs": 2}, analyses=[])


def scalars(tb: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar series of the event files in `tb`, as TensorBoard's own reader loads them."""
    ea = EventAccumulator(str(tb))
    ea.Reload()
    return {tag: [(e.step, e.value) for e in ea.Scalars(tag)] for tag in ea.Tags()["scalars"]}


def expected(run: Path, offsets: dict[str, int]) -> dict[str, list[tuple[int, float]]]:
    """The series metrics.jsonl says the event files must hold, computed from the records by hand: numeric fields
    as float32 (TensorBoard's scalar type), at step = the epochs of earlier stages + the record's epoch."""
    out: dict[str, list[tuple[int, float]]] = {}
    for rec in read_metrics(run):
        prefix = f"{rec['stage']}/final/" if rec.get("final") else f"{rec['stage']}/"
        for k, v in rec.items():
            if k not in ("stage", "epoch", "final") and type(v) in (int, float):
                out.setdefault(prefix + k, []).append((offsets[rec["stage"]] + rec["epoch"], float(np.float32(v))))
    return out


def run(tmp_path: Path, raw: dict[str, Any], out: str = "run", resume: bool = False, **kw: Any):
    res = load(str(write_recipe(tmp_path, raw, "r.toml")))[0]
    return execute(res, root=tmp_path / "root", out=str(tmp_path / out), resume=resume, device="cpu", **kw)


def warnings(run_dir: Path) -> list[str]:
    return [line.split(" ", 1)[1] for line in (run_dir / "log.txt").read_text().splitlines() if " warning: " in line]


def test_demo_smoke_mirrors_metrics_jsonl_to_tensorboard(tmp_path: Path) -> None:
    res = load("demo_digits", smoke=True)[0]
    out = execute(res, root=tmp_path, out=str(tmp_path / "run"), device="cpu")
    assert out.state == "done", out.error
    tb = out.run_dir / "tb"
    assert len(list(tb.glob("events.out.tfevents.*"))) == 1  # one writer per run
    got, want = scalars(tb), expected(out.run_dir, {"edst": 0})
    epochs = [r["epoch"] for r in read_metrics(out.run_dir)]
    assert epochs == [1, 2, 3, 4]
    assert [step for step, _ in got["edst/test_acc"]] == epochs
    assert got["edst/test_acc"] == want["edst/test_acc"]
    assert got == want  # every numeric field of every record, nothing else
    assert {"edst/train_loss", "edst/lr", "edst/density"} <= set(got) and "edst/jump" not in got  # flags are not
    assert warnings(out.run_dir) == []


def test_logger_none_writes_no_tensorboard_files(tmp_path: Path) -> None:
    rec = write_recipe(tmp_path, QUICK, "q.toml")
    res = cli("run", str(rec), "--logger", "none", "--out", str(tmp_path / "run"), "--device", "cpu", "--quiet",
              env={"REPRO_ROOT": str(tmp_path / "root")})
    assert res.returncode == 0, res.stderr
    run_dir = tmp_path / "run"
    assert json.loads((run_dir / "status.json").read_text())["state"] == "done"
    assert not (run_dir / "tb").exists() and len(read_metrics(run_dir)) == 2
    assert load_resolved(run_dir / "recipe.toml").run.loggers == []  # a resume keeps mirroring nowhere
    again = cli("run", str(rec), "--logger", "tensorboard", "--resume", "--out", str(run_dir))
    assert again.returncode == 2
    assert again.stderr.strip() == ("error: --logger cannot change a run being resumed; it continues with its own "
                                    "recipe.toml")
    both = cli("run", str(rec), "--logger", "none", "--logger", "wandb", "--out", str(tmp_path / "other"))
    assert both.returncode == 2 and not (tmp_path / "other").exists()
    assert both.stderr.strip() == "error: --logger none means no logger; it cannot be given with another --logger"


def test_missing_wandb_is_one_warning_and_the_run_finishes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "wandb", None)  # not installed, even where it is
    terminal = io.StringIO()  # what `repro run` shows on stderr, on a narrow terminal
    out = run(tmp_path, digits_recipe(train={"epochs": 2}, analyses=[], run={"loggers": ["wandb", "tensorboard"]}),
              progress=RichProgress(Console(file=terminal, width=40)))
    assert out.state == "done", out.error
    line = "warning: logger 'wandb' is not installed (pip install wandb); the run goes on without it"
    assert warnings(out.run_dir) == [line]
    assert [x for x in terminal.getvalue().splitlines() if "warning" in x] == [line]  # one line, not wrapped
    assert [s for s, _ in scalars(out.run_dir / "tb")["train/train_loss"]] == [1, 2]  # the others still mirror


class Raising:
    """A logger that raises in one of its methods and counts its calls."""

    calls: list[str] = []

    def __init__(self, ctx: lg.RunContext, where: str = "log") -> None:
        self.where = where
        self._act("init")

    def _act(self, what: str) -> None:
        Raising.calls.append(what)
        if what == self.where:
            raise RuntimeError(f"disk on fire\nin {what}")

    def log(self, scalars: dict[str, float], step: int) -> None:
        self._act("log")

    def rewind(self, step: int) -> None:
        self._act("rewind")

    def close(self, state: str) -> None:
        self._act(f"close:{state}" if self.where != "close" else "close")


def test_a_logger_that_raises_in_log_is_dropped_and_the_run_is_done(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    Raising.calls = []
    monkeypatch.setitem(lg.LOGGERS, "tensorboard", Raising)
    out = run(tmp_path, QUICK)
    assert out.state == "done", out.error
    assert Raising.calls == ["init", "log", "close:failed"]  # dropped at the first record, closed once
    assert warnings(out.run_dir) == ["warning: logger 'tensorboard' failed in log (RuntimeError: disk on fire); "
                                     "the run goes on without it"]
    assert [r["epoch"] for r in read_metrics(out.run_dir)] == [1, 2]


@pytest.mark.parametrize("where", ["init", "log", "rewind", "close"])
def test_a_failing_logger_never_takes_the_others_down(where: str, monkeypatch: pytest.MonkeyPatch) -> None:
    Raising.calls, seen, said = [], [], []

    class Good:
        def __init__(self, ctx: lg.RunContext) -> None:
            pass

        def log(self, scalars: dict[str, float], step: int) -> None:
            seen.append(("log", step, scalars))

        def rewind(self, step: int) -> None:
            seen.append(("rewind", step))

        def close(self, state: str) -> None:
            seen.append(("close", state))

    monkeypatch.setitem(lg.LOGGERS, "wandb", lambda ctx: Raising(ctx, where))
    monkeypatch.setitem(lg.LOGGERS, "mlflow", Good)
    mirror = lg.open_mirror(["wandb", "mlflow"], lg.RunContext(Path("/nowhere/run"), "r"), [("a", 3), ("b", 2)],
                            said.append)
    mirror.record({"stage": "b", "epoch": 1, "train_loss": 0.5, "jump": True, "note": "x"})
    mirror.rewind([{"stage": "b", "epoch": 2, "final": True}, {"stage": "a", "epoch": 3}])
    mirror.close("killed")
    assert seen == [("log", 4, {"b/train_loss": 0.5}), ("rewind", 3), ("close", "killed")]
    assert said == [f"warning: logger 'wandb' failed in {where} (RuntimeError: disk on fire); the run goes on "
                    "without it"]
    assert Raising.calls[-1] == {"init": "init", "log": "close:failed", "rewind": "close:failed",
                                 "close": "close"}[where]  # closed once, and not again after a failed close


def test_disabled_runlog_mirrors_nothing(tmp_path: Path) -> None:
    """Under DDP only rank 0 (RunLog.enabled) mirrors: a disabled log starts no logger."""
    recipe = load(str(write_recipe(tmp_path, QUICK, "q.toml")))[0].recipe
    run_recipe(recipe, tmp_path / "run", RunLog(tmp_path / "run", enabled=False), device=torch.device("cpu"))
    assert (tmp_path / "run" / "train" / "final.pt").exists() and not (tmp_path / "run" / "tb").exists()


def test_resume_rewinds_the_epochs_it_trains_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Killed after stage b's first epoch reached metrics.jsonl and the event file but before its last.pt: the
    resume trains that epoch again, and TensorBoard's reader shows each step once (stage a's untouched)."""
    raw = digits_recipe(train={"epochs": 2}, analyses=[], stage=[
        {"name": "a", "method": "train"}, {"name": "b", "method": "train", "init_from": "a"}])
    orig = tr.save_checkpoint

    def dying(path: Path, state: Any) -> None:
        if path.name == "last.pt" and path.parent.name == "b":
            raise KeyboardInterrupt
        orig(path, state)

    monkeypatch.setattr(tr, "save_checkpoint", dying)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, raw)
    run_dir = tmp_path / "run"
    first = scalars(run_dir / "tb")
    assert first["b/train_loss"][0][0] == 3  # written (and flushed) by the killed run: stage a has 2 epochs
    monkeypatch.setattr(tr, "save_checkpoint", orig)
    out = run(tmp_path, raw, resume=True)
    assert out.state == "done", out.error
    assert len(list((run_dir / "tb").glob("events.out.tfevents.*"))) == 2  # appended as a second file
    got = scalars(run_dir / "tb")
    assert [s for s, _ in got["a/train_loss"]] == [1, 2] and [s for s, _ in got["b/train_loss"]] == [3, 4]
    assert got == expected(run_dir, {"a": 0, "b": 2})
    assert got["b/train_loss"][0] == first["b/train_loss"][0]  # the exact resume redoes the same numbers


def test_recipe_loggers_are_checked(tmp_path: Path) -> None:
    for loggers, why in ((["foo"], "unknown logger 'foo'; choose from tensorboard, wandb, mlflow"),
                         (["wandb", "tensorbord"], "unknown logger 'tensorbord'; did you mean 'tensorboard'?"),
                         (["mlflow", "mlflow"], "logger 'mlflow' is listed twice")):
        path = write_recipe(tmp_path, digits_recipe(run={"loggers": loggers}), "bad.toml")
        with pytest.raises(RecipeError) as e:
            load(str(path))
        assert e.value.lines == [f"{path}: run.loggers: {why}"]
    res = cli("validate", str(write_recipe(tmp_path, digits_recipe(run={"loggers": ["foo"]}), "foo.toml")))
    assert res.returncode == 2
    assert res.stdout.strip().splitlines() + res.stderr.strip().splitlines() == [
        f"{tmp_path / 'foo.toml'}: run.loggers: unknown logger 'foo'; choose from tensorboard, wandb, mlflow"]


def test_resolved_recipe_says_loggers_only_when_changed(tmp_path: Path) -> None:
    path = write_recipe(tmp_path, QUICK, "q.toml")
    plain = load(str(path))[0].recipe
    assert plain.run.loggers == ["tensorboard"] and "loggers" not in to_toml(plain)
    for value, line in (("[]", "loggers = []"), ('["mlflow","tensorboard"]', 'loggers = [\n    "mlflow",')):
        changed = load(str(path), sets=(f"run.loggers={value}",))[0].recipe
        text = to_toml(changed)
        assert line in text
        (tmp_path / "back.toml").write_text(text)
        assert load_resolved(tmp_path / "back.toml").run.loggers == changed.run.loggers


def test_registry_matches_the_recipe_names() -> None:
    assert tuple(lg.LOGGERS) == names.LOGGERS and set(names.DEFAULT_LOGGERS) <= set(names.LOGGERS)


def test_wandb_and_mlflow_adapters(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The W&B and MLflow adapters against stand-in modules (neither package is a dependency): the run's name and
    id, the scalars at the run-epoch step, and the end state."""
    calls: list[tuple[Any, ...]] = []

    class WRun:
        def log(self, data: dict[str, float], step: int) -> None:
            calls.append(("wandb.log", data, step))

        def finish(self, exit_code: int) -> None:
            calls.append(("wandb.finish", exit_code))

    def init(**kw: Any) -> WRun:
        calls.append(("wandb.init", kw["project"], kw["name"], kw["group"], kw["resume"], kw["dir"],
                      kw["config"]["model"]["arch"], kw["id"] == ctx.uid))
        return WRun()

    monkeypatch.setitem(sys.modules, "wandb", types.SimpleNamespace(init=init))

    class Client:
        def get_experiment_by_name(self, name: str) -> None:
            return None

        def create_experiment(self, name: str) -> str:
            calls.append(("mlflow.create_experiment", name))
            return "7"

        def create_run(self, exp_id: str, run_name: str, tags: dict[str, str]) -> Any:
            calls.append(("mlflow.create_run", exp_id, run_name))
            return types.SimpleNamespace(info=types.SimpleNamespace(run_id="r42"))

        def update_run(self, run_id: str, status: str) -> None:
            calls.append(("mlflow.update_run", run_id, status))

        def log_batch(self, run_id: str, metrics: list[Any]) -> None:
            calls.append(("mlflow.log_batch", run_id, [tuple(m) for m in metrics]))

        def set_terminated(self, run_id: str, status: str) -> None:
            calls.append(("mlflow.set_terminated", run_id, status))

    mlflow = types.SimpleNamespace(tracking=types.SimpleNamespace(MlflowClient=Client))
    entities = types.SimpleNamespace(Metric=lambda key, value, ts, step: (key, value, step))
    monkeypatch.setitem(sys.modules, "mlflow", mlflow)
    monkeypatch.setitem(sys.modules, "mlflow.entities", entities)
    monkeypatch.delenv("WANDB_PROJECT", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    run_dir = tmp_path / "demo" / "20260101-000000"
    run_dir.mkdir(parents=True)
    ctx = lg.RunContext(run_dir, "demo", load(str(write_recipe(tmp_path, QUICK, "q.toml")))[0].recipe)
    for state in ("killed", "done"):  # the second start is the resume: the same MLflow run, marked running again
        said: list[str] = []
        mirror = lg.open_mirror(["wandb", "mlflow"], ctx, [("s", 5)], said.append)
        mirror.record({"stage": "s", "epoch": 2, "test_acc": 91.5})
        mirror.close(state)
        assert said == []
    assert calls == [
        ("wandb.init", "repro", "demo/20260101-000000", "demo", "allow", str(run_dir), "cifar_resnet_8", True),
        ("mlflow.create_experiment", "repro"), ("mlflow.create_run", "7", "demo/20260101-000000"),
        ("wandb.log", {"s/test_acc": 91.5}, 2), ("mlflow.log_batch", "r42", [("s/test_acc", 91.5, 2)]),
        ("wandb.finish", 1), ("mlflow.set_terminated", "r42", "KILLED"),
        ("wandb.init", "repro", "demo/20260101-000000", "demo", "allow", str(run_dir), "cifar_resnet_8", True),
        ("mlflow.update_run", "r42", "RUNNING"),
        ("wandb.log", {"s/test_acc": 91.5}, 2), ("mlflow.log_batch", "r42", [("s/test_acc", 91.5, 2)]),
        ("wandb.finish", 0), ("mlflow.set_terminated", "r42", "FINISHED"),
    ]
    assert (run_dir / "mlflow_run_id").read_text() == "r42\n"
