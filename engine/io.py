"""Atomic file writes (temp file, fsync, rename) and safe checkpoint loading."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


class CheckpointError(RuntimeError):
    """A checkpoint that is missing or cannot be read; the message is one line naming the file."""


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call `write(tmp)` on a temp file beside `path`, fsync it, then rename it over `path`.

    Under data parallelism only rank 0 writes: every file of a run directory goes through here.
    """
    from engine.dist import is_main

    if not is_main():
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    try:  # make the rename itself durable
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def write_text(path: Path, text: str) -> None:
    """Atomically replace a text file."""
    atomic_write(path, lambda p: p.write_text(text))


def write_json(path: Path, obj: Any) -> None:
    """Atomically replace a JSON file."""
    write_text(path, json.dumps(obj, indent=1, sort_keys=True) + "\n")


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """torch.save through a temp file, so a kill mid-write never leaves a torn checkpoint."""
    import torch  # imported here so that the CLI and the TUI start without loading torch

    atomic_write(path, lambda p: torch.save(state, p))


def load_checkpoint(path: Path, map_location: Any = "cpu") -> dict[str, Any]:
    """torch.load with weights_only=True; a missing or corrupt file is a one-line CheckpointError."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means the file is unusable
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: cannot read checkpoint ({first})") from None
