"""Training throughput per device and architecture: what `repro bench` measured here (a small JSON cache), and the
published H100 figures of SPEC.md's Performance section as the fallback. `repro plan` turns these into GPU-hours.

The cache is `$REPRO_CACHE/bench.json` (default `~/.cache/repro/bench.json`): one entry per (device name, arch,
precision, batch size, width, compile), the latest measurement winning, written atomically. Torch-free: the device
name is passed in (`device_name()` imports torch only when called).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.io import write_json

__all__ = [
    "PUBLISHED",
    "PUBLISHED_DEVICE",
    "BenchEntry",
    "cache_path",
    "device_name",
    "read_entries",
    "record",
]

PUBLISHED_DEVICE = "H100"
# SPEC.md, Performance: one H100, bf16 autocast + channels_last, batch 128, CIFAR shape (3x32x32), not compiled
PUBLISHED: dict[str, float] = {"wrn-28-10": 8470.0, "preresnet164": 2392.0, "vgg16": 24144.0}
PUBLISHED_SHAPE = (3, 32, 32)

_KEY = ("device", "arch", "precision", "batch_size", "width", "compile")


def cache_path() -> Path:
    """Where `repro bench` keeps its measurements: `$REPRO_CACHE/bench.json`, else `~/.cache/repro/bench.json`."""
    root = os.environ.get("REPRO_CACHE") or Path.home() / ".cache" / "repro"
    return Path(root).expanduser() / "bench.json"


def device_name(device: Any = None) -> str:
    """The name measurements are filed under: the CUDA device's name (torch.cuda.get_device_name) or "cpu"."""
    import torch  # deferred: this module is read by torch-free code

    dev = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"


@dataclass(frozen=True)
class BenchEntry:
    """One measurement: dense training images/s of `arch` on `device` at this precision, batch and input shape."""

    device: str
    arch: str
    precision: str
    batch_size: int
    width: float
    compile: bool
    image_shape: tuple[int, ...]
    dense_img_s: float
    measured: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"device": self.device, "arch": self.arch, "precision": self.precision, "batch_size": self.batch_size,
                "width": self.width, "compile": self.compile, "image_shape": list(self.image_shape),
                "dense_img_s": self.dense_img_s, "measured": self.measured}


def _entry(raw: Any) -> BenchEntry | None:
    try:
        e = BenchEntry(str(raw["device"]), str(raw["arch"]), str(raw["precision"]), int(raw["batch_size"]),
                       float(raw["width"]), bool(raw["compile"]), tuple(int(v) for v in raw["image_shape"]),
                       float(raw["dense_img_s"]), str(raw.get("measured", "")))
    except (KeyError, TypeError, ValueError):
        return None
    return e if e.dense_img_s > 0 else None


def read_entries(path: Path | None = None) -> list[BenchEntry]:
    """Every well-formed entry of the cache; a missing or unreadable file is an empty cache (the plan falls back)."""
    path = path or cache_path()
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    entries = raw.get("entries", []) if isinstance(raw, dict) else []
    return [e for e in map(_entry, entries if isinstance(entries, list) else []) if e is not None]


def record(entry: BenchEntry, path: Path | None = None) -> Path:
    """Add `entry` to the cache (replacing the one with the same device, arch, precision, batch, width, compile)."""
    path = path or cache_path()
    stamped = entry if entry.measured else BenchEntry(**{**entry.__dict__,
                                                          "measured": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                                    time.gmtime())})
    key = tuple(getattr(stamped, k) for k in _KEY)
    kept = [e for e in read_entries(path) if tuple(getattr(e, k) for k in _KEY) != key]
    write_json(path, {"version": 1, "entries": [e.as_dict() for e in [*kept, stamped]]})
    return path
