"""`repro reproduce` over many runs: the list of runs, one run claimed and trained, N at a time on one box.

Every way of working through the list ends in `run_item`: the in-process loop (`--jobs 1`), the worker processes of
the local pool (`--jobs N`, one `python -m repro.farm` per run, pinned to its GPUs by CUDA_VISIBLE_DEVICES), and the
submitit jobs (repro.slurm). `run_item` skips a finished run, claims the run (repro.claims) so that no two workers
train it, and resumes an interrupted one, as `repro run --resume` would.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from engine.io import write_json
from engine.runlog import NullProgress, Progress
from repro.claims import Claim, claim_path
from repro.recipe import Resolved, load
from repro.rundir import RunDirError, latest_done, latest_unfinished, parse_time, read_run


@dataclass(frozen=True)
class Item:
    """One run of the list: a recipe (as the user named it) and its sweep point."""

    ref: str
    name: str
    tag: str = ""
    smoke: bool = False
    dataset: str = ""

    @property
    def label(self) -> str:
        return self.name + (f" [{self.tag}]" if self.tag else "")

    @property
    def slug(self) -> str:
        return "-".join(x for x in (self.name, self.tag, "smoke" if self.smoke else "") if x)


@dataclass
class Result:
    """How one item ended: done, skipped (done already), elsewhere (another worker holds it), failed or killed."""

    item: Item
    state: str
    run_dir: str | None = None
    error: str = ""
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)


def items_for(refs: Sequence[str], smoke: bool = False) -> list[Item]:
    """Every run of the named recipes (sweeps expanded), in order; a bad recipe raises RecipeError before any run."""
    out: list[Item] = []
    for ref in refs:
        for res in load(ref, smoke=smoke):
            out.append(Item(str(ref), res.recipe.name, res.tag, smoke, res.recipe.data.dataset))
    return out


def resolve(item: Item) -> Resolved:
    """The resolved recipe of one item (the sweep point with its tag)."""
    for res in load(item.ref, smoke=item.smoke):
        if res.tag == item.tag:
            return res
    raise RunDirError(f"{item.ref}: no sweep point tagged {item.tag!r} (the recipe changed since the list was made)")


def done_already(root: Path, item: Item, since: float | None = None) -> Path | None:
    """The finished run this item would skip. A smoke run checks the pipeline, so only one that finished after `since`
    (when this reproduce started: another worker's) counts."""
    if not item.smoke:
        return latest_done(root, item.name, item.tag)
    parent = root / item.name
    if since is None or not parent.is_dir():
        return None
    for run in sorted((p for p in parent.iterdir() if p.is_dir()), reverse=True):
        info = read_run(run)
        finished = parse_time(info.status.get("finished"))
        if info.smoke and info.state == "done" and info.status.get("tag", "") == item.tag and (finished or 0) >= since:
            return run
    return None


def run_item(item: Item, root: Path, *, device: str = "auto", nproc: int = 1, progress: Progress | None = None,
             owner: str | None = None, since: float | None = None) -> Result:
    """Skip, claim, then start or resume one run; a failure is a Result, never an exception (only an interrupt
    propagates, after the run recorded itself as killed and the claim was released)."""
    from repro.launch import execute  # deferred: torch

    t0 = time.monotonic()
    done = done_already(root, item, since)
    if done is not None:
        return Result(item, "skipped", str(done))
    claim = Claim(claim_path(root, item.name, item.tag, item.smoke), owner)
    if not claim.acquire():
        return Result(item, "elsewhere", error=f"claimed by {claim.holder}")
    try:
        done = done_already(root, item, since)  # finished by another worker between our look and our claim
        if done is not None:
            return Result(item, "skipped", str(done))
        unfinished = latest_unfinished(root, item.name, item.tag, smoke=item.smoke)
        outcome = execute(resolve(item), root=root, out=str(unfinished) if unfinished else None,
                          resume=unfinished is not None, device=device, smoke=item.smoke,
                          progress=progress or NullProgress(), nproc=nproc)
        return Result(item, outcome.state, str(outcome.run_dir), outcome.error, time.monotonic() - t0,
                      {"took_over": str(claim.took_over)} if claim.took_over else {})
    except Exception as e:  # noqa: BLE001 - one run's failure (a bad data path, a damaged run directory) is its own
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return Result(item, "failed", error=msg, seconds=time.monotonic() - t0)
    finally:
        claim.release()


# ---------------------------------------------------------------------------------------------------------------
# the local pool: N runs at once, each in its own process, pinned to its own GPUs
# ---------------------------------------------------------------------------------------------------------------


def gpu_groups(gpus: Sequence[str], nproc: int) -> list[str]:
    """GPUs in groups of nproc, as CUDA_VISIBLE_DEVICES values ('0,1', '2,3'); leftover GPUs stay idle."""
    if nproc < 1:
        raise ValueError("nproc must be at least 1")
    return [",".join(gpus[i:i + nproc]) for i in range(0, len(gpus) - nproc + 1, nproc)]


def slots_for(jobs: int | None, gpus: Sequence[str] | None, nproc: int, device: str) -> list[str | None]:
    """One CUDA_VISIBLE_DEVICES value per concurrent run (None: leave the environment as it is; '' hides the GPUs)."""
    if device == "cpu":
        return [""] * (jobs or 1)
    if gpus is None and device in ("auto", "cuda"):
        import torch  # deferred: only the GPU path needs it

        gpus = [str(i) for i in range(torch.cuda.device_count())]
        if not gpus:
            if device == "cuda":
                raise RunDirError("--device cuda: no GPU is visible (torch.cuda.device_count() is 0)")
            return [None] * (jobs or 1)  # a box without GPUs: auto means the CPU
    groups = gpu_groups(list(gpus or []), nproc)
    if not groups:
        raise RunDirError(f"--nproc {nproc} needs {nproc} GPUs per run; --gpus gives {len(gpus or [])}")
    return groups[: jobs or len(groups)]


class Pool:
    """Runs items in worker processes, one per slot; what the user sees is `on_event(kind, item, result)`."""

    def __init__(self, root: Path, slots: Sequence[str | None], *, device: str, nproc: int,
                 on_event: Callable[[str, Item, Result | None, str | None], None], since: float | None = None) -> None:
        self.root = Path(root)
        self.slots = list(slots)
        self.device, self.nproc = device, nproc
        self.on_event = on_event
        self.since = since
        self.logs = self.root / ".reproduce"

    def command(self, item: Item, result_file: Path) -> list[str]:
        return [sys.executable, "-m", "repro.farm", item.ref, "--tag", item.tag, "--root", str(self.root),
                "--device", self.device, "--nproc", str(self.nproc), "--result", str(result_file)] + (
                    ["--smoke"] if item.smoke else []) + (["--since", str(self.since)] if self.since else [])

    def env(self, slot: str | None) -> dict[str, str]:
        env = dict(os.environ)
        if slot is not None:
            env["CUDA_VISIBLE_DEVICES"] = slot
        if not slot and "OMP_NUM_THREADS" not in env:  # CPU runs side by side: share the cores, do not fight
            env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // len(self.slots)))
        return env

    def run(self, items: Sequence[Item]) -> list[Result]:
        """Every item, len(slots) at a time; a failed run does not stop the others. On an interrupt every worker
        gets SIGTERM (its run records itself as killed, resumable) before the interrupt goes on."""
        self.logs.mkdir(parents=True, exist_ok=True)
        queue = list(items)
        free = list(range(len(self.slots)))
        running: dict[int, tuple[subprocess.Popen, Item, Path, float, object]] = {}
        results: list[Result] = []
        try:
            while queue or running:
                while queue and free:
                    slot = free.pop(0)
                    item = queue.pop(0)
                    result_file = self.logs / f"{item.slug}.{os.getpid()}.result.json"
                    result_file.unlink(missing_ok=True)
                    log = open(self.logs / f"{item.slug}.log", "ab")  # noqa: SIM115 - closed when the worker ends
                    proc = subprocess.Popen(self.command(item, result_file), env=self.env(self.slots[slot]),
                                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
                    running[slot] = (proc, item, result_file, time.monotonic(), log)
                    self.on_event("start", item, None, self.slots[slot])
                for slot, (proc, item, result_file, t0, log) in list(running.items()):
                    if proc.poll() is None:
                        continue
                    log.close()  # type: ignore[attr-defined]
                    del running[slot]
                    free.append(slot)
                    result = self._result(proc.returncode, item, result_file, time.monotonic() - t0)
                    results.append(result)
                    self.on_event("end", item, result, self.slots[slot])
                time.sleep(0.2)
        except KeyboardInterrupt:
            for proc, *_ in running.values():
                proc.send_signal(signal.SIGTERM)
            for proc, *_ in running.values():
                try:
                    proc.wait(timeout=120)
                except subprocess.TimeoutExpired:
                    proc.kill()
            raise
        return results

    def _result(self, rc: int, item: Item, result_file: Path, seconds: float) -> Result:
        try:
            data = json.loads(result_file.read_text())
            result_file.unlink()
            return Result(item, data["state"], data.get("run_dir"), data.get("error", ""), seconds,
                          data.get("extra") or {})
        except (OSError, ValueError, KeyError):
            return Result(item, "failed", error=f"the worker process exited with code {rc} before it reported; "
                          f"see {self.logs / (item.slug + '.log')}", seconds=seconds)


def main(argv: list[str] | None = None) -> int:
    """One worker of the local pool: run one item and write its Result as JSON."""
    from repro.launch import terminate_as_interrupt  # deferred: torch

    ap = argparse.ArgumentParser(prog="repro.farm")
    ap.add_argument("ref")
    ap.add_argument("--tag", default="")
    ap.add_argument("--root", type=Path, required=True)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--nproc", type=int, default=1)
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--result", type=Path, required=True)
    ap.add_argument("--since", type=float, default=None)
    args = ap.parse_args(argv)
    res = next((r for r in load(args.ref, smoke=args.smoke) if r.tag == args.tag), None)
    if res is None:
        write_json(args.result, {"state": "failed", "error": f"{args.ref}: no sweep point tagged {args.tag!r}"})
        return 1
    item = Item(args.ref, res.recipe.name, args.tag, args.smoke, res.recipe.data.dataset)
    try:
        with terminate_as_interrupt():
            result = run_item(item, args.root, device=args.device, nproc=args.nproc, since=args.since)
    except KeyboardInterrupt:
        write_json(args.result, {"state": "killed", "error": "terminated (SIGTERM); continue with repro reproduce"})
        return 128 + signal.SIGTERM
    data = asdict(result)
    data.pop("item")
    write_json(args.result, data)
    print(f"{item.label}: {result.state}" + (f" ({result.run_dir})" if result.run_dir else "")
          + (f": {result.error}" if result.error else ""), flush=True)
    return 1 if result.state == "failed" else 0


if __name__ == "__main__":
    sys.exit(main())
