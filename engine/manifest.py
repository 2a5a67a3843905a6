"""manifest.json: a SHA-256 and size for every checkpoint, analysis.h5 (the file and each of its groups) and
metrics.jsonl of a run, so that anyone holding a copy of the run directory can tell whether a file changed.

Layout: {"version": 1, "files": {"<path relative to the run dir>": {"sha256": hex, "size": bytes}}}; a group of
analysis.h5 is the key "analysis.h5#/<group>" with the hash of `group_digest` (no size). The manifest is replaced
atomically (read, modify, temp file, rename) after the file it describes has been renamed into place, and only by
the process that writes the run (rank 0, holding the run lock), so a kill never leaves it naming bytes that are not
on disk. This module stays torch-free (h5py and numpy)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from engine.io import write_json

NAME = "manifest.json"
VERSION = 1
H5 = "analysis.h5"
_CHUNK = 1 << 20


def file_digest(path: Path) -> dict[str, Any]:
    """{"sha256", "size"} of the bytes of the file at `path`."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
            size += len(chunk)
    return {"sha256": h.hexdigest(), "size": size}


def _attr_bytes(value: Any) -> bytes:
    """A stable byte form of one HDF5 attribute value (its type and value)."""
    if isinstance(value, bytes):
        return b"bytes:" + value
    if isinstance(value, str):
        return b"str:" + value.encode()
    arr = np.asarray(value)
    return f"{arr.dtype.str}{arr.shape}:".encode() + (repr(arr.tolist()).encode() if arr.dtype.kind == "O"
                                                       else arr.tobytes())


def group_digest(group: Any) -> str:
    """SHA-256 over an h5py group's datasets (sorted by name: name, dtype, shape, bytes) and attributes (sorted
    by name: name and value with its type), so a changed value, dtype, shape or attribute changes it."""
    h = hashlib.sha256()
    for name in sorted(group.keys()):
        ds = group[name]
        if not isinstance(ds, h5py.Dataset):  # analyses write flat groups; a subgroup is hashed in place
            h.update(f"group {name}\n".encode() + group_digest(ds).encode())
            continue
        value = ds[()]
        h.update(f"dataset {name} {ds.dtype.str if ds.dtype.kind != 'O' else 'string'} {ds.shape}\n".encode())
        arr = np.asarray(value)
        if arr.dtype.kind == "O" or h5py.check_string_dtype(ds.dtype):
            items = [s.decode() if isinstance(s, bytes) else str(s) for s in np.atleast_1d(arr).ravel()]
            h.update(json.dumps(items).encode())
        else:
            h.update(np.ascontiguousarray(arr).tobytes())
    for name in sorted(group.attrs.keys()):
        h.update(f"attr {name}\n".encode() + _attr_bytes(group.attrs[name]))
    return h.hexdigest()


def h5_group_digests(path: Path) -> dict[str, str]:
    """{"/<group>": group_digest} of every top-level group of an HDF5 file."""
    with h5py.File(path, "r") as f:
        return {f"/{name}": group_digest(f[name]) for name in sorted(f.keys())}


def read(run_dir: Path) -> dict[str, Any] | None:
    """The run's manifest, or None when it has none (a run of an older version); ValueError when unreadable."""
    path = Path(run_dir) / NAME
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: cannot read ({' '.join(str(e).split())})") from None
    if not isinstance(data, dict) or not isinstance(data.get("files"), dict):
        raise ValueError(f"{path}: not a manifest (no 'files' object)")
    return data


def _update(run_dir: Path, entries: dict[str, dict[str, Any]], drop: tuple[str, ...] = ()) -> None:
    """Read, change and atomically replace manifest.json: keys starting with any of `drop` removed, `entries` set."""
    run_dir = Path(run_dir)
    try:
        current = read(run_dir) or {}
    except ValueError:  # a damaged manifest is rewritten from what is known now
        current = {}
    files = {k: v for k, v in dict(current.get("files", {})).items() if not any(k.startswith(d) for d in drop)}
    files.update(entries)
    write_json(run_dir / NAME, {"version": VERSION, "files": dict(sorted(files.items()))})


def run_dir_of(path: Path) -> Path | None:
    """The run directory a written file belongs to: the nearest of its parent and grandparent holding recipe.toml
    (checkpoints live in <run>/<stage>/, analysis.h5 and metrics.jsonl in <run>/); None outside any run."""
    path = Path(path).absolute()
    for parent in (path.parent, path.parent.parent):
        if (parent / "recipe.toml").is_file():
            return parent
    return None


def _rel(run_dir: Path, path: Path) -> str:
    return Path(path).absolute().relative_to(Path(run_dir).absolute()).as_posix()


def record(run_dir: Path, rel_path: str, digest: dict[str, Any] | None = None) -> None:
    """Set the entry of `rel_path` to `digest` ({"sha256", "size"} of the bytes written), or to the file's present
    bytes when None. Call it after the file has been renamed into place."""
    run_dir = Path(run_dir)
    _update(run_dir, {rel_path: digest or file_digest(run_dir / rel_path)})


def record_group(run_dir: Path, digest: dict[str, Any] | None = None, groups: dict[str, str] | None = None) -> None:
    """Set analysis.h5's file entry and one entry per group ("analysis.h5#/<group>"), dropping groups no longer in
    the file; `digest` and `groups` are computed from the file on disk when not given."""
    run_dir = Path(run_dir)
    path = run_dir / H5
    digest = digest or file_digest(path)
    groups = h5_group_digests(path) if groups is None else groups
    entries = {H5: digest, **{f"{H5}#{g}": {"sha256": d} for g, d in groups.items()}}
    _update(run_dir, entries, drop=(f"{H5}#",))


def written(path: Path, digest: dict[str, Any], groups: dict[str, str] | None = None) -> None:
    """Hook of the writers (engine.io.save_checkpoint, engine.store.write_group): record the file just renamed to
    `path` when it lies in a run directory (and this process writes it: rank 0)."""
    from engine.dist import is_main  # deferred, as in engine.io.atomic_write

    run_dir = run_dir_of(path)
    if run_dir is None or not is_main():
        return
    if groups is not None:
        record_group(run_dir, digest, groups)
    else:
        record(run_dir, _rel(run_dir, path), digest)


def moved(src: Path, dst: Path) -> None:
    """Hook for a covered file renamed inside its run (best-pending.pt -> best.pt): its entry moves with it."""
    from engine.dist import is_main  # deferred: torch.distributed

    run_dir = run_dir_of(dst)
    if run_dir is None or not is_main():
        return
    entries = (read(run_dir) or {}).get("files", {})
    old = entries.get(_rel(run_dir, src))
    _update(run_dir, {_rel(run_dir, dst): old or file_digest(dst)}, drop=(_rel(run_dir, src),))


def forget(path: Path) -> None:
    """Hook for a covered file deleted by the run (a best-pending.pt dropped): its entry goes too."""
    from engine.dist import is_main  # deferred: torch.distributed

    run_dir = run_dir_of(path)
    if run_dir is None or not is_main() or not (run_dir / NAME).exists():
        return
    rel = _rel(run_dir, path)
    if rel in (read(run_dir) or {}).get("files", {}):
        _update(run_dir, {}, drop=(rel,))


def verify_manifest(run_dir: Path) -> list[str]:
    """One line per file that does not match manifest.json ("<path>: sha256 differs from manifest.json", "<path>:
    missing"), in the manifest's order; [] when all match. FileNotFoundError when the run has no manifest."""
    run_dir = Path(run_dir)
    data = read(run_dir)
    if data is None:
        raise FileNotFoundError(f"{run_dir / NAME}: no manifest")
    files: dict[str, Any] = data["files"]
    problems: list[str] = []
    h5_groups: dict[str, str] | None = None
    for rel, entry in files.items():
        want = entry.get("sha256") if isinstance(entry, dict) else None
        if "#" in rel:
            name, group = rel.split("#", 1)
            if not (run_dir / name).is_file():
                continue  # the file's own entry says it is missing
            if h5_groups is None:
                try:
                    h5_groups = h5_group_digests(run_dir / name)
                except (OSError, RuntimeError, KeyError, ValueError) as e:
                    problems.append(f"{name}: cannot read ({' '.join(str(e).split())})")
                    h5_groups = {}
            got = h5_groups.get(group)
            if got is None:
                problems.append(f"{rel}: missing")
            elif got != want:
                problems.append(f"{rel}: sha256 differs from manifest.json")
            continue
        path = run_dir / rel
        if not path.is_file():
            problems.append(f"{rel}: missing")
        elif file_digest(path)["sha256"] != want:
            problems.append(f"{rel}: sha256 differs from manifest.json")
    return problems
