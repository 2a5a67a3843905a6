"""The run directory's live record: status.json, metrics.jsonl and log.txt, plus a progress hook."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Protocol

from engine.io import append_text, write_json, write_text


def now() -> str:
    """Local time as an ISO string with seconds."""
    return time.strftime("%Y-%m-%dT%H:%M:%S")


class Progress(Protocol):
    """What the trainer tells a progress display; repro implements it with rich."""

    def start(self, label: str, total: int, completed: int = 0) -> None: ...
    def advance(self, n: int = 1) -> None: ...
    def note(self, text: str) -> None: ...
    def stop(self) -> None: ...


class NullProgress:
    """A progress display that shows nothing (tests, workers)."""

    def start(self, label: str, total: int, completed: int = 0) -> None:
        pass

    def advance(self, n: int = 1) -> None:
        pass

    def note(self, text: str) -> None:
        pass

    def stop(self) -> None:
        pass


class MetricMirror(Protocol):
    """Where metric records are mirrored as they are written (engine.loggers.Mirror: TensorBoard, W&B, MLflow)."""

    def record(self, record: dict[str, Any]) -> None: ...
    def rewind(self, dropped: list[dict[str, Any]]) -> None: ...
    def close(self, state: str) -> None: ...


class RunLog:
    """Writes status.json atomically, appends metrics.jsonl (and mirrors it) and log.txt; rank 0 only under DDP."""

    def __init__(self, run_dir: Path, progress: Progress | None = None, enabled: bool = True) -> None:
        self.dir = Path(run_dir)
        self.progress = progress or NullProgress()
        self.enabled = enabled
        self._status: dict[str, Any] = {}
        self.mirror: MetricMirror | None = None  # attached by the run (engine.runner.run_recipe)
        if enabled and (self.dir / "status.json").exists():
            try:
                loaded = json.loads((self.dir / "status.json").read_text())
            except (OSError, ValueError):
                loaded = {}
            self._status = loaded if isinstance(loaded, dict) else {}

    def status(self, **fields: Any) -> dict[str, Any]:
        """Merge fields into status.json (pid and updated always refreshed)."""
        self._status.update(fields, pid=os.getpid(), updated=now())
        if self.enabled:
            write_json(self.dir / "status.json", self._status)
        return self._status

    def metric(self, record: dict[str, Any]) -> None:
        """Append one JSON object to metrics.jsonl, then mirror it to the attached loggers."""
        if self.enabled:
            append_text(self.dir / "metrics.jsonl", json.dumps(record, sort_keys=True) + "\n")
            if self.mirror is not None:
                self.mirror.record(record)

    def log(self, text: str) -> None:
        """A timestamped line in log.txt, also shown beside the progress bar."""
        if self.enabled:
            append_text(self.dir / "log.txt", f"{now()} {text}\n")
        self.progress.note(text)

    def truncate_metrics(self, keep: Any) -> None:
        """Drop metrics.jsonl records for which keep(record) is False (epochs after the resumed checkpoint); the
        mirror is told, as those epochs are written again."""
        path = self.dir / "metrics.jsonl"
        if not (self.enabled and path.exists()):
            return
        records = read_metrics(self.dir)
        kept = [json.dumps(rec, sort_keys=True) for rec in records if keep(rec)]
        write_text(path, "".join(k + "\n" for k in kept))
        if self.mirror is not None and len(kept) < len(records):
            self.mirror.rewind([rec for rec in records if not keep(rec)])


def parse_metrics(text: str) -> list[dict[str, Any]]:
    """The records of metrics.jsonl text: a torn line, or a line that is JSON but not an object (`5`, `null`), is
    skipped (the run directory readers of the CLI and the app use this too)."""
    out = []
    for line in text.splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict):
            out.append(rec)
    return out


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """All readable records of a run's metrics.jsonl (see parse_metrics)."""
    path = Path(run_dir) / "metrics.jsonl"
    return parse_metrics(path.read_text(errors="replace")) if path.exists() else []
