"""Mirrors of a run's metrics.jsonl, written as each record is: TensorBoard event files in `<run>/tb/` (on by
default), and Weights & Biases or MLflow when a recipe (`[run] loggers`) or `repro run --logger` asks for them.

What a record becomes (the same for every logger):
  - a scalar per numeric field, named `<stage>/<key>` (`edst/val_acc`, `dense/train_loss`); the final record of a
    stage (the test score of the weights it keeps) as `<stage>/final/<key>`; text, flags and `stage`/`epoch`
    themselves are not mirrored;
  - at the global step `run epoch` = the epochs of the stages before this one (as configured) + the record's epoch:
    it rises across a multi-stage run, so every tag is monotone and one step means one point in the run.
A resumed run drops the records after its checkpoint from metrics.jsonl (RunLog.truncate_metrics) and trains those
epochs again; the loggers are told the first dropped step (`rewind`): TensorBoard writes a restart marker there, so
its Python reader hides what the killed process wrote at and after it (its fast reader drops a point whenever its
step is written again), W&B ignores steps below the ones it holds and MLflow keeps both values of a re-logged step.
A logger that is not installed, or that raises at any point, is dropped with one warning line in log.txt and never
stops the run. Only rank 0 mirrors (RunLog.enabled).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from engine.config import Recipe
from engine.io import write_text

NOT_MIRRORED = ("stage", "epoch", "final")  # the record's place, not a measurement


class NotInstalled(Exception):
    """The logger's package is missing (wandb and mlflow are optional and never dependencies)."""


class MetricLogger(Protocol):
    """One destination: scalars at a step, a restart marker, and the end (state: done, failed or killed)."""

    def log(self, scalars: dict[str, float], step: int) -> None: ...
    def rewind(self, step: int) -> None: ...
    def close(self, state: str) -> None: ...


@dataclass(frozen=True)
class RunContext:
    """What a logger may know of the run it mirrors."""

    run_dir: Path
    recipe: str  # its name
    resolved: Recipe | None = None

    def config(self) -> dict[str, Any]:
        """The resolved recipe as plain data (a tracker's run config)."""
        return {} if self.resolved is None else self.resolved.model_dump(mode="json", exclude_none=True)

    @property
    def name(self) -> str:
        """`<recipe>/<run-id>`, the run's name in a tracker."""
        return f"{self.recipe}/{self.run_dir.name}"

    @property
    def uid(self) -> str:
        """A stable id of this run directory (a resumed run continues the same tracker run)."""
        return hashlib.sha1(str(self.run_dir.resolve()).encode()).hexdigest()[:16]


def _require(module: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise NotInstalled(module) from None


class TensorBoardLogger:
    """Event files in `<run>/tb/` through torch.utils.tensorboard, flushed after every record (live runs show)."""

    def __init__(self, ctx: RunContext) -> None:
        _require("tensorboard")
        from torch.utils.tensorboard import SummaryWriter  # deferred: after _require (missing = a warning)

        self.writer = SummaryWriter(log_dir=str(ctx.run_dir / "tb"))

    def log(self, scalars: dict[str, float], step: int) -> None:
        for tag, value in scalars.items():
            self.writer.add_scalar(tag, value, step)
        self.writer.flush()

    def rewind(self, step: int) -> None:
        """A SessionLog START at `step`: TensorBoard's readers drop the points at `step` and after that earlier
        event files hold (the torch writer's `purge_step`, written at any time)."""
        from tensorboard.compat.proto.event_pb2 import Event, SessionLog  # deferred: only a resume needs it

        self.writer.file_writer.add_event(Event(session_log=SessionLog(status=SessionLog.START)), step=step)
        self.writer.flush()

    def close(self, state: str) -> None:
        self.writer.close()


class WandbLogger:
    """A W&B run named `<recipe>/<run-id>` (project $WANDB_PROJECT or `repro`, grouped by recipe), resumed by id."""

    def __init__(self, ctx: RunContext) -> None:
        wandb = _require("wandb")
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT") or "repro", name=ctx.name, group=ctx.recipe,
                              id=ctx.uid, resume="allow", dir=str(ctx.run_dir), config=ctx.config())

    def log(self, scalars: dict[str, float], step: int) -> None:
        self.run.log(scalars, step=step)

    def rewind(self, step: int) -> None:
        pass  # W&B keeps its steps monotone: the redone epochs below its last step are ignored

    def close(self, state: str) -> None:
        self.run.finish(exit_code=0 if state == "done" else 1)


class MlflowLogger:
    """An MLflow run (experiment $MLFLOW_EXPERIMENT_NAME or `repro`, tracking URI from MLflow's own settings);
    its id is kept in `<run>/mlflow_run_id` so a resumed run continues it."""

    STATUS = {"done": "FINISHED", "failed": "FAILED", "killed": "KILLED"}

    def __init__(self, ctx: RunContext) -> None:
        mlflow = _require("mlflow")
        from mlflow.entities import Metric  # deferred: mlflow is optional, never a dependency

        self._metric = Metric
        self.client = mlflow.tracking.MlflowClient()
        id_file = ctx.run_dir / "mlflow_run_id"
        run_id = id_file.read_text().strip() if id_file.exists() else ""
        if run_id:
            self.client.update_run(run_id, status="RUNNING")
        else:
            name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or "repro"
            exp = self.client.get_experiment_by_name(name)
            exp_id = exp.experiment_id if exp is not None else self.client.create_experiment(name)
            run_id = self.client.create_run(exp_id, run_name=ctx.name, tags={"recipe": ctx.recipe}).info.run_id
            write_text(id_file, run_id + "\n")
        self.run_id = run_id

    def log(self, scalars: dict[str, float], step: int) -> None:
        ms = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[self._metric(k, v, ms, step) for k, v in scalars.items()])

    def rewind(self, step: int) -> None:
        pass  # MLflow keeps every value: a redone epoch has two (equal, as resumes are exact) at its step

    def close(self, state: str) -> None:
        self.client.set_terminated(self.run_id, status=self.STATUS.get(state, "FAILED"))


# name -> constructor; the names are engine.config.names.LOGGERS (tests/test_loggers.py checks they agree)
LOGGERS: dict[str, Callable[[RunContext], MetricLogger]] = {
    "tensorboard": TensorBoardLogger,
    "wandb": WandbLogger,
    "mlflow": MlflowLogger,
}


def scalars(record: dict[str, Any]) -> dict[str, float]:
    """A metrics.jsonl record as `<stage>/<key>` scalars (`<stage>/final/<key>` for a stage's final record)."""
    stage = str(record.get("stage", "run"))
    prefix = f"{stage}/final/" if record.get("final") else f"{stage}/"
    return {prefix + k: float(v) for k, v in record.items()
            if k not in NOT_MIRRORED and isinstance(v, (int, float)) and not isinstance(v, bool)}


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0]}" if text else type(e).__name__


class Mirror:
    """The loggers of one run: records in, scalars at the run-epoch step out; a logger that fails is dropped with
    one warning (`warn`) and the others go on."""

    def __init__(self, loggers: dict[str, MetricLogger], stage_epochs: Iterable[tuple[str, int]],
                 warn: Callable[[str], None]) -> None:
        self.loggers = dict(loggers)
        self.warn = warn
        self.offsets: dict[str, int] = {}
        before = 0
        for stage, epochs in stage_epochs:
            self.offsets[stage] = before
            before += epochs

    def step(self, record: dict[str, Any]) -> int:
        """The record's run epoch: the configured epochs of the stages before its stage, plus its epoch."""
        return self.offsets.get(str(record.get("stage")), 0) + int(record.get("epoch", 0))

    def record(self, record: dict[str, Any]) -> None:
        """Mirror one metrics.jsonl record."""
        values = scalars(record)
        if values:
            self._each("log", lambda lg: lg.log(values, self.step(record)))

    def rewind(self, dropped: list[dict[str, Any]]) -> None:
        """Records were dropped from metrics.jsonl (a resume): their steps will be written again."""
        if dropped:
            first = min(self.step(r) for r in dropped)
            self._each("rewind", lambda lg: lg.rewind(first))

    def close(self, state: str) -> None:
        """Close every logger (state: done, failed or killed)."""
        self._each("close", lambda lg: lg.close(state))
        self.loggers.clear()

    def _each(self, what: str, call: Callable[[MetricLogger], None]) -> None:
        for name, lg in list(self.loggers.items()):
            try:
                call(lg)
            except Exception as e:  # noqa: BLE001 - a logger never stops a run
                del self.loggers[name]
                self.warn(f"warning: logger '{name}' failed in {what} ({_first_line(e)}); the run goes on without it")
                if what != "close":
                    with contextlib.suppress(Exception):
                        lg.close("failed")


def open_mirror(names: Iterable[str], ctx: RunContext, stage_epochs: Iterable[tuple[str, int]],
                warn: Callable[[str], None]) -> Mirror:
    """Start the named loggers; one that is not installed or fails to start is left out with one warning."""
    started: dict[str, MetricLogger] = {}
    for name in names:
        try:
            started[name] = LOGGERS[name](ctx)
        except NotInstalled as e:
            warn(f"warning: logger '{name}' is not installed (pip install {e}); the run goes on without it")
        except Exception as e:  # noqa: BLE001 - a logger never stops a run
            warn(f"warning: logger '{name}' failed in init ({_first_line(e)}); the run goes on without it")
    return Mirror(started, stage_epochs, warn)

