"""analysis.h5: one group per analysis, each write replacing the whole file atomically."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from engine.io import atomic_write

VERSION = "1"


def write_group(path: Path, group: str, data: dict[str, Any], attrs: dict[str, Any] | None = None,
                meta: dict[str, str] | None = None) -> None:
    """Replace `/group` in the file at `path` with `data` (arrays, scalars or lists of str).

    Every group carries attributes recipe, run_id, created, version (from `meta`) plus `attrs`.
    The file is copied to a temp file, modified there and renamed over the original, so a reader
    never sees a half-written file and a kill never corrupts it.
    """
    path = Path(path)

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

    atomic_write(path, write)


def read_group(path: Path, group: str) -> dict[str, Any]:
    """A group's datasets as numpy arrays (strings decoded) plus its attributes under '_attrs'."""
    with h5py.File(path, "r") as f:
        if group not in f:
            raise KeyError(f"{path}: no /{group} group (run `repro analyze {Path(path).parent} --mode {group}`)")
        g = f[group]
        out: dict[str, Any] = {}
        for k, ds in g.items():
            v = ds[()]
            if ds.dtype.kind == "O" or h5py.check_string_dtype(ds.dtype):
                v = [s.decode() if isinstance(s, bytes) else str(s) for s in np.atleast_1d(v)]
            out[k] = v
        out["_attrs"] = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in g.attrs.items()}
    return out


def groups(path: Path) -> list[str]:
    """The analysis groups present in a file (empty when it does not exist)."""
    if not Path(path).exists():
        return []
    with h5py.File(path, "r") as f:
        return sorted(f.keys())
