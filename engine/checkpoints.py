"""Which file a stage reference (`init_from`, a curve's endpoints, FGE's optimizer state) names in a run."""

from __future__ import annotations

from pathlib import Path

from engine.io import CheckpointError, load_checkpoint


def checkpoint_path(run_dir: Path, ref: str) -> Path:
    """The file a stage reference names: STAGE -> final.pt, STAGE@E -> checkpoint-E.pt, or final.pt when that is
    epoch E's (the stage's last epoch, or the one it stopped early at: the epoch final.pt records). A missing epoch
    checkpoint is an error, never a silent fall-back to another epoch's weights."""
    name, _, epoch = ref.partition("@")
    stage_dir = run_dir / name
    if not epoch:
        return stage_dir / "final.pt"
    path = stage_dir / f"checkpoint-{epoch}.pt"
    if path.exists():
        return path
    final = stage_dir / "final.pt"
    if final.exists() and int(load_checkpoint(final).get("epoch", -1)) == int(epoch):
        return final
    raise CheckpointError(f"{path}: checkpoint not found (init_from = '{ref}' needs stage '{name}' saved at epoch "
                          f"{epoch}; rerun that stage, e.g. in a new run directory)")
