"""`python -m repro.tui [--root DIR]`: the app without the CLI's imports (starts faster)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from repro.tui.app import run_app


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m repro.tui", description="The repro terminal app.")
    p.add_argument("--root", default=None, help="Run root (default $REPRO_ROOT or ./checkpoints).")
    args = p.parse_args()
    run_app(Path(args.root or os.environ.get("REPRO_ROOT") or "checkpoints"))


if __name__ == "__main__":
    main()
