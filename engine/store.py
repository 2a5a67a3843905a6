"""analysis.h5: one group per analysis, each write replacing the whole file atomically."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from engine import manifest
from engine.io import atomic_write

VERSION = "1"


class DamagedFile(OSError):
    """An analysis file that exists but h5py cannot read (truncated, overwritten, foreign); one line naming it."""

    def __init__(self, path: Path, reason: str, note: str = "") -> None:
        self.path = Path(path)
        self.reason = " ".join(reason.split()) or "unreadable"
        self.note = note
        super().__init__(f"{self.path}: cannot read analysis file ({self.reason})" + (f"; {note}" if note else ""))

    def __reduce__(self) -> tuple[type, tuple[Path, str, str]]:
        """Pickle by the constructor's own arguments (OSError's default would pass the message as the path)."""
        return type(self), (self.path, self.reason, self.note)


# what h5py raises for a file it cannot make sense of (a corrupt object header comes up as a KeyError)
_H5_ERRORS = (OSError, RuntimeError, KeyError, ValueError, TypeError)


@contextmanager
def _reading(path: Path) -> Iterator[h5py.File]:
    """The file open for reading; any h5py failure opening or reading it becomes a DamagedFile naming it (a
    missing file stays FileNotFoundError)."""
    try:
        f = h5py.File(path, "r")
    except FileNotFoundError:
        raise
    except _H5_ERRORS as e:
        raise DamagedFile(path, str(e) or type(e).__name__) from None
    with f:
        try:
            yield f
        except _H5_ERRORS as e:
            raise DamagedFile(path, str(e) or type(e).__name__) from None


def _touch(name: str, obj: Any) -> None:
    """Read one object's header and attribute names (h5py visititems stops at a callback returning non-None)."""
    list(obj.attrs.keys())


def why_damaged(path: Path) -> str | None:
    """Why h5py cannot read the file at `path` (one line); None when it can, or when the system refuses it (absent,
    no permission, locked by a process writing it), which renaming would not fix. Reads headers, not data."""
    try:
        with open(path, "rb"):
            pass
    except OSError:
        return None
    try:
        with h5py.File(path, "r") as f:
            f.visititems(_touch)
    except OSError as e:
        if e.errno is not None:  # h5py sets errno for what the system refused (e.g. EAGAIN: another's write lock)
            return None
        return " ".join((str(e) or type(e).__name__).split())
    except _H5_ERRORS as e:
        return " ".join((str(e) or type(e).__name__).split())
    return None


def set_aside_if_damaged(path: Path) -> Path | None:
    """Rename a damaged file to `<name>.damaged-<YYYYmmdd-HHMMSS>` (never over an existing file) so that it can
    be recomputed while its bytes stay for inspection; the new path, or None when nothing was moved."""
    path = Path(path)
    if why_damaged(path) is None:
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for n in range(1, 1000):
        target = path.with_name(f"{path.name}.damaged-{stamp}" + ("" if n == 1 else f"-{n}"))
        try:
            os.link(path, target)  # refuses an existing target, so two callers cannot overwrite each other
        except FileExistsError:
            continue
        except OSError:  # a file system without hard links
            if target.exists():
                continue
            os.rename(path, target)
            return target
        os.unlink(path)
        return target
    raise DamagedFile(path, "damaged", f"no free name to move it aside as {path.name}.damaged-{stamp}")


def write_group(path: Path, group: str, data: dict[str, Any], attrs: dict[str, Any] | None = None,
                meta: dict[str, str] | None = None) -> None:
    """Replace `/group` in the file at `path` with `data` (arrays, scalars or lists of str).

    Every group carries attributes recipe, run_id, created, version (from `meta`) plus `attrs`.
    The file is copied to a temp file, modified there and renamed over the original, so a reader
    never sees a half-written file and a kill never corrupts it. The file's and its groups' SHA-256 then go into
    the run's manifest.json.
    """
    path = Path(path)
    why = why_damaged(path) if path.exists() else None
    if why is not None:  # copying it would only carry the damage into the new file
        raise DamagedFile(path, why, f"/{group} not written: move it aside (`repro analyze` does) to start afresh")

    def write(tmp: Path) -> None:
        if path.exists():
            shutil.copyfile(path, tmp)
        with h5py.File(tmp, "a") as f:
            if group in f:
                del f[group]
            g = f.create_group(group)
            for key, value in data.items():
                if isinstance(value, (list, tuple)) and value and isinstance(value[0], str):
                    g.create_dataset(key, data=np.array(value, dtype=object), dtype=h5py.string_dtype())
                else:
                    g.create_dataset(key, data=np.asarray(value))
            base = {"recipe": "", "run_id": "", "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "version": VERSION}
            base.update(meta or {})
            base.update(attrs or {})
            for k, v in base.items():
                g.attrs[k] = v
        digest.update(manifest.file_digest(tmp))  # the bytes and groups written, recorded once renamed
        hashes.update(manifest.h5_group_digests(tmp))

    digest: dict[str, Any] = {}
    hashes: dict[str, str] = {}
    atomic_write(path, write)
    if digest:
        manifest.written(path, digest, hashes)


def read_group(path: Path, group: str) -> dict[str, Any]:
    """A group's datasets as numpy arrays (strings decoded) plus its attributes under '_attrs'; a missing group is
    a KeyError, a file h5py cannot read a DamagedFile."""
    out: dict[str, Any] = {}
    with _reading(path) as f:
        present = group in f
        if present:
            g = f[group]
            for k, ds in g.items():
                v = ds[()]
                if ds.dtype.kind == "O" or h5py.check_string_dtype(ds.dtype):
                    v = [s.decode() if isinstance(s, bytes) else str(s) for s in np.atleast_1d(v)]
                out[k] = v
            out["_attrs"] = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in g.attrs.items()}
    if not present:
        raise KeyError(f"{path}: no /{group} group (run `repro analyze {Path(path).parent} --mode {group}`)")
    return out


def groups(path: Path) -> list[str]:
    """The analysis groups present in a file (empty when it does not exist; DamagedFile when h5py cannot read it)."""
    if not Path(path).exists():
        return []
    with _reading(path) as f:
        return sorted(f.keys())
