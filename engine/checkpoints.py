"""Which file a stage reference (`init_from`, a curve's endpoints, FGE's optimizer state) names in a run."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from engine.io import CheckpointError


def checkpoint_path(run_dir: Path, ref: str, stage_epochs: Mapping[str, int] | None = None) -> Path:
    """The file an `init_from` reference names: STAGE -> final.pt, STAGE@E -> checkpoint-E.pt, or final.pt when E
    is the stage's last epoch (`stage_epochs`: each stage's epochs by name). A missing epoch checkpoint is an error,
    never a silent fall-back to final.pt."""
    name, _, epoch = ref.partition("@")
    stage_dir = run_dir / name
    if not epoch:
        return stage_dir / "final.pt"
    path = stage_dir / f"checkpoint-{epoch}.pt"
    if path.exists():
        return path
    if stage_epochs and name in stage_epochs and int(epoch) == stage_epochs[name]:
        return stage_dir / "final.pt"
    raise CheckpointError(f"{path}: checkpoint not found (init_from = '{ref}' needs stage '{name}' saved at epoch "
                          f"{epoch}; rerun that stage, e.g. in a new run directory)")
