"""`repro bundle`: what another researcher needs to check a result, as one .tar.gz.

Per run, under <recipe>/<run-id>/: recipe.toml, provenance.json, manifest.json, status.json, metrics.jsonl,
log.txt, analysis.h5, each stage's tickets.json, figures/, and (unless --no-weights) the checkpoints the analyses
load — each stage's final.pt and every ensemble member a tickets.json names — plus every other file manifest.json
lists, so that `repro verify` passes on the unpacked copy. At the top, report.json: the report rows of the runs.
Only regular files inside the run directory are taken; a symbolic link (or a path through one) never is.
"""

from __future__ import annotations

import io
import json
import os
import stat
import sys
import tarfile
from pathlib import Path, PurePosixPath
from typing import Any

from engine.io import atomic_write

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

RUN_FILES = ("recipe.toml", "provenance.json", "manifest.json", "status.json", "metrics.jsonl", "log.txt",
             "analysis.h5")
REPORT = "report.json"


class BundleError(Exception):
    """A bundle that cannot be made as asked (not a run directory, the output exists); one line."""


def _inside(run_dir: Path, rel: str) -> Path | None:
    """run_dir/rel when it is a regular file reached without any symbolic link and without leaving the run
    directory; None otherwise."""
    parts = PurePosixPath(rel).parts
    if not parts or PurePosixPath(rel).is_absolute() or ".." in parts:
        return None
    path = run_dir
    for part in parts:
        path = path / part
        try:
            st = os.lstat(path)
        except OSError:
            return None
        if stat.S_ISLNK(st.st_mode):
            return None
    return path if stat.S_ISREG(st.st_mode) else None


def _stages(run_dir: Path) -> list[str]:
    """The stage names of the run's recipe.toml (in order); [] when it cannot be read."""
    try:
        with open(run_dir / "recipe.toml", "rb") as f:
            stages = tomllib.load(f).get("stage", [])
    except (OSError, ValueError):
        return []
    return [s["name"] for s in stages if isinstance(s, dict) and isinstance(s.get("name"), str)]


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def run_files(run_dir: Path, weights: bool = True) -> list[str]:
    """The paths (relative to the run directory, sorted) that a bundle of the run holds."""
    names = set(RUN_FILES)
    checkpoints: set[str] = set()
    for stage in _stages(run_dir):
        names.add(f"{stage}/tickets.json")
        checkpoints.add(f"{stage}/final.pt")
        tickets = _json(run_dir / stage / "tickets.json")
        members = tickets.get("members") if isinstance(tickets, dict) else None
        for m in members if isinstance(members, list) else []:
            if isinstance(m, dict) and isinstance(m.get("path"), str):
                checkpoints.add(m["path"])
    manifest = _json(run_dir / "manifest.json")
    listed = manifest.get("files") if isinstance(manifest, dict) else None
    for key in listed if isinstance(listed, dict) else []:
        rel = key.split("#", 1)[0]  # "analysis.h5#/group": a group of a file
        (checkpoints if rel.endswith(".pt") else names).add(rel)
    if weights:
        names |= checkpoints
    figures = run_dir / "figures"
    if figures.is_dir() and not figures.is_symlink():
        for dirpath, _dirs, files in os.walk(figures):  # os.walk does not descend into linked folders
            names.update(Path(dirpath, f).relative_to(run_dir).as_posix() for f in files)
    return sorted(rel for rel in names if _inside(run_dir, rel) is not None)


def _recipe_name(run_dir: Path) -> str:
    """The recipe's name from recipe.toml (a run written with --out may live in any folder), else the folder's."""
    try:
        with open(run_dir / "recipe.toml", "rb") as f:
            name = tomllib.load(f).get("name")
    except (OSError, ValueError):
        name = None
    return name if isinstance(name, str) and name and "/" not in name and name not in (".", "..") \
        else run_dir.resolve().parent.name


def bundle(run_dirs: list[Path], output: Path, *, weights: bool = True, force: bool = False) -> list[str]:
    """Write the runs into the .tar.gz `output` atomically; returns the archive's member names. Refuses a path that
    is not a run directory, two runs with one <recipe>/<run-id>, and an existing `output` unless `force`."""
    output = Path(output)
    runs: list[tuple[Path, str]] = []
    for d in run_dirs:
        d = Path(d)
        if not (d / "recipe.toml").is_file() or (d / "recipe.toml").is_symlink():
            raise BundleError(f"{d}: not a run directory (no recipe.toml)")
        d = d.resolve()
        prefix = f"{_recipe_name(d)}/{d.name}"
        if any(prefix == p for _, p in runs):
            raise BundleError(f"{d}: a second run named {prefix}; bundle runs with distinct ids")
        runs.append((d, prefix))
    if (output.exists() or output.is_symlink()) and not force:
        raise BundleError(f"{output}: already exists; use --force to replace it")
    if output.is_dir():
        raise BundleError(f"{output}: is a directory")
    from repro.report import report_rows  # deferred (h5py, torch): refusals above answer at once
    from repro.rundir import read_run

    rows = report_rows([read_run(d) for d, _ in runs])
    report = (json.dumps(rows, indent=1, default=str) + "\n").encode()
    members: list[tuple[str, Path | None]] = [(REPORT, None)]
    for d, prefix in runs:
        members += [(f"{prefix}/{rel}", d / rel) for rel in run_files(d, weights)]

    def write(tmp: Path) -> None:
        with tarfile.open(tmp, "w:gz") as tar:
            for name, path in members:
                if path is None:
                    info = tarfile.TarInfo(name)
                    info.size, info.mode = len(report), 0o644
                    tar.addfile(info, io.BytesIO(report))
                    continue
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)  # a file swapped for a link: refused
                with os.fdopen(fd, "rb") as f:
                    st = os.fstat(f.fileno())
                    info = tarfile.TarInfo(name)
                    info.size, info.mtime, info.mode = st.st_size, int(st.st_mtime), 0o644
                    tar.addfile(info, f)

    atomic_write(output, write)
    return [name for name, _ in members]
