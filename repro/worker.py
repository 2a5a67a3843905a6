"""One data-parallel process of a run (`torchrun ... -m repro.worker RUN_DIR`): what `repro run --nproc N` starts.

Multi-node: run the same command on every node with torchrun's own flags (--nnodes, --node_rank,
--rdzv_endpoint); the run directory must be on a shared file system. Rank 0 writes it; the others only train.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch.distributed as tdist

from engine import dist
from engine.runlog import NullProgress, RunLog
from repro.launch import run_and_record, terminate_as_interrupt
from repro.progress import RichProgress
from repro.recipe import load_resolved


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="repro.worker")
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--resume", action="store_true")
    args = ap.parse_args(argv)
    device = dist.init_from_env(args.device)
    recipe = load_resolved(args.run_dir / "recipe.toml")
    progress = RichProgress() if dist.is_main() else NullProgress()
    log = RunLog(args.run_dir, progress, enabled=dist.is_main())
    try:
        with terminate_as_interrupt():
            outcome = run_and_record(recipe, args.run_dir, log, args.device, args.resume, dev=device)
    finally:
        if tdist.is_initialized():
            # leave together: a rank that tears its gloo pairs down while rank 0 still runs the analyses was seen
            # to abort (SIGABRT) at exit; a failed barrier (a rank already gone) must not fail a finished run
            try:
                tdist.barrier()
            except RuntimeError:
                pass
            tdist.destroy_process_group()
    return 0 if outcome.state == "done" else 1


if __name__ == "__main__":
    sys.exit(main())
