"""`repro plan`: what reproducing recipes will cost before anything runs: per run the images, the training FLOPs and
the GPU-hours (engine.plan), the total, and the wall time with N runs at once. Also the one-line estimate the
terminal app shows before a full launch."""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from typing import Any

from rich.table import Table

from engine.throughput import PUBLISHED_DEVICE
from repro.recipe import Resolved, load, recipe_names

FOOTNOTE = ("GPU-hours = images / dense training img/s (masked sparse training runs at the dense speed); "
            "evaluation and analyses are not counted. ~ marks an upper bound (Early-Bird: the pruned network and "
            "its retraining length depend on the ticket found).")


def makespan(hours: Sequence[float], jobs: int) -> float:
    """Wall time of running these jobs `jobs` at a time: longest first, each onto the slot that frees up first."""
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    slots = [0.0] * min(jobs, max(len(hours), 1))
    for h in sorted(hours, reverse=True):
        heapq.heapreplace(slots, slots[0] + h)
    return max(slots)


def _device_label(device: str, sources: list[tuple[str, str]]) -> str:
    """What the throughputs rest on, for the JSON's "device": this machine's device, the published H100 figures,
    or both, with the command that would measure the rest."""
    here = [s for s, d in sources if d == device]
    if sources and len(here) == len(sources):
        return f"{device} (repro bench measurements here{', some scaled by FLOPs' if 'scaled' in here else ''})"
    hint = "run `repro bench --arch A` here to measure"
    if not here:
        return f"{PUBLISHED_DEVICE} (published figures; {hint})"
    return f"{device} (measured where repro bench ran here; the rest {PUBLISHED_DEVICE} published figures; {hint})"


def plan(resolved: Sequence[Resolved], jobs: int = 1, device: str | None = None,
         entries: list | None = None) -> dict[str, Any]:
    """The plan of these runs as the JSON `repro plan --json` prints (SPEC.md's keys, plus extras)."""
    from engine.plan import Rates, run_cost  # deferred: torch
    from engine.throughput import device_name, read_entries

    device = device or device_name()
    rates = Rates(device, read_entries() if entries is None else entries)
    runs, sources = [], []
    for r in resolved:
        cost = run_cost(r.recipe, r.tag)
        rate = rates.rate(cost)
        sources.append((rate.source, rate.device))
        runs.append({"recipe": cost.recipe, "tag": cost.tag, "gpu_hours": cost.images / rate.img_s / 3600,
                     "train_pflops": cost.train_flops / 1e15, "images": cost.images, "arch": cost.arch,
                     "img_s": round(rate.img_s, 1), "throughput_source": rate.source, "throughput_basis": rate.basis,
                     "upper_bound": cost.upper_bound,
                     "stages": [{"name": s.name, "method": s.method, "epochs": s.epochs, "images": s.images,
                                 "train_pflops": s.flops / 1e15, "densities": s.densities} for s in cost.stages]})
    hours = [r["gpu_hours"] for r in runs]
    return {"runs": runs, "total_gpu_hours": sum(hours), "device": _device_label(device, sources),
            "device_name": device, "total_train_pflops": sum(r["train_pflops"] for r in runs),
            "total_images": sum(r["images"] for r in runs), "jobs": jobs,
            "wall_hours": makespan(hours, jobs) if runs else 0.0, "note": FOOTNOTE}


def resolve_all(names: Sequence[str]) -> list[Resolved]:
    """Every run of these recipes (every recipe when none is named), sweeps expanded."""
    return [r for name in (names or recipe_names()) for r in load(name)]


def _hours(h: float) -> str:
    return f"{h:,.2f}" if h < 100 else f"{h:,.0f}"


def plan_table(result: dict[str, Any]) -> Table:
    """One row a run: recipe, tag, images, PFLOPs, GPU-h, where the throughput comes from; the total last."""
    t = Table("recipe", "tag", "images", "PFLOPs", "GPU-h", "img/s", "source", title=f"device: {result['device']}",
              caption=result["note"], caption_justify="left")
    for r in result["runs"]:
        mark = "~" if r["upper_bound"] else ""
        t.add_row(r["recipe"], r["tag"], f"{r['images']:,}", f"{mark}{r['train_pflops']:,.1f}",
                  f"{mark}{_hours(r['gpu_hours'])}", f"{r['img_s']:,.0f}", r["throughput_source"])
    t.add_section()
    t.add_row(f"total: {len(result['runs'])} runs", "", f"{result['total_images']:,}",
              f"{result['total_train_pflops']:,.0f}", _hours(result["total_gpu_hours"]), "", "")
    return t


def launch_estimate(resolved: Sequence[Resolved]) -> str:
    """One line for the app's launch dialog: the GPU-hours of these full-size runs one after another."""
    result = plan(resolved)
    n = len(result["runs"])
    bound = "at most " if any(r["upper_bound"] for r in result["runs"]) else ""
    srcs = sorted({r["throughput_source"] for r in result["runs"]})
    return (f"estimate: {bound}{_hours(result['total_gpu_hours'])} GPU-hours for {n} run{'s' if n > 1 else ''}, "
            f"{result['total_train_pflops']:,.1f} PFLOPs ({'/'.join(srcs)} throughput, {result['device']})")
