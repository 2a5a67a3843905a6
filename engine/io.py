"""Atomic file writes (temp file, fsync, rename) and safe checkpoint loading."""

from __future__ import annotations

import json
import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine.errors import UnsafePathError

TMP_SUFFIX = ".tmp"
"""Temp files of atomic writes are `.<name>.<random>.tmp` beside their target (see clean_temp_files)."""


class CheckpointError(RuntimeError):
    """A checkpoint that is missing or cannot be read; the message is one line naming the file."""


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call `write(tmp)` on a temp file beside `path`, fsync it, then rename it over `path`.

    Under data parallelism only rank 0 writes: every file of a run directory goes through here.
    """
    from engine.dist import is_main  # deferred: torch.distributed, and this module is read by the torch-free CLI

    if not is_main():
        return
    path = Path(path)
    if path.is_symlink():
        raise UnsafePathError(f"{path}: is a symbolic link; repro never writes through links (remove it)")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
            os.fchmod(f.fileno(), 0o666 & ~current_umask())  # mkstemp makes 0600; results are shared like the rest
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


def current_umask() -> int:
    """The process umask (reading it means setting it, so it is put back at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def open_append(path: Path) -> int:
    """An O_APPEND descriptor on a run-directory file that is refused if it is a symbolic link or a hard link
    to some other file (so a run directory received from someone else cannot make us append to their target)."""
    path = Path(path)
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o666)
    except OSError:
        if path.is_symlink():
            raise UnsafePathError(f"{path}: is a symbolic link; repro never writes through links (remove it)") from None
        raise
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_nlink > 1:
        os.close(fd)
        what = "not a regular file" if not stat.S_ISREG(st.st_mode) else "a hard link to another file"
        raise UnsafePathError(f"{path}: is {what}; repro never writes through links (remove it)")
    return fd


def append_text(path: Path, text: str) -> None:
    """Append text to a run-directory file (log.txt, metrics.jsonl) without following links."""
    fd = open_append(path)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def clean_temp_files(folder: Path) -> list[Path]:
    """Remove the `.*.tmp` files that killed atomic writes left anywhere under `folder` (links are left alone:
    they are refused elsewhere); returns what was removed."""
    removed = []
    for dirpath, _dirs, files in os.walk(folder):
        for name in files:
            p = Path(dirpath) / name
            if name.startswith(".") and name.endswith(TMP_SUFFIX) and not p.is_symlink() and p.is_file():
                p.unlink()
                removed.append(p)
    return removed


def write_text(path: Path, text: str) -> None:
    """Atomically replace a text file."""
    atomic_write(path, lambda p: p.write_text(text))


def write_json(path: Path, obj: Any) -> None:
    """Atomically replace a JSON file."""
    write_text(path, json.dumps(obj, indent=1, sort_keys=True) + "\n")


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """torch.save through a temp file, so a kill mid-write never leaves a torn checkpoint; its SHA-256 then goes
    into the run's manifest.json (engine.manifest)."""
    import torch  # imported here so that the CLI and the TUI start without loading torch

    from engine import manifest  # deferred: engine.manifest imports this module

    digest: dict[str, Any] = {}

    def write(p: Path) -> None:
        torch.save(state, p)
        digest.update(manifest.file_digest(p))  # the bytes written, recorded once renamed into place

    atomic_write(path, write)
    if digest:
        manifest.written(path, digest)


def load_checkpoint(path: Path, map_location: Any = "cpu") -> dict[str, Any]:
    """torch.load with weights_only=True; a missing or corrupt file is a one-line CheckpointError."""
    import torch  # deferred, as in save_checkpoint

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means the file is unusable
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: cannot read checkpoint ({first})") from None
