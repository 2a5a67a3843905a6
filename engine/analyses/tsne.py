"""`tsne` (ensemble_freetickets.py --mode tsne): the members' training trajectories in function space.

Stages with `record_predictions = true` write `<stage>/trajectory.pt` = {"epoch": [T], "member": [T],
"probs": [T, K, C]}: the softmax of the first K test images after each epoch, and which ensemble member the
point belongs to. Every (stage, member) pair is one trajectory; each point, flattened to K*C numbers, is
embedded in 2-D by one t-SNE over all points of all trajectories. (The original needed per-epoch checkpoints
that nothing wrote, and assumed exactly three trajectories.)"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from engine.analyses.context import AnalysisContext
from engine.analyses.ensemble import tsne_embed, tsne_perplexity
from engine.io import load_checkpoint
from engine.store import write_group


def gather_trajectories(ctx: AnalysisContext) -> dict[str, Any]:
    """All recorded points in recipe stage order, then member, then epoch: {points [P, K*C], member [P]
    (trajectory id), step [P] (epoch), labels (one "stage/memberI" per id), stages (those that had a file)}."""
    points: list[np.ndarray] = []
    ids: list[np.ndarray] = []
    steps: list[np.ndarray] = []
    labels: list[str] = []
    stages: list[str] = []
    for stage in ctx.recipe.stage:
        path = ctx.run_dir / stage.name / "trajectory.pt"
        if not path.exists():
            continue
        t = load_checkpoint(path, "cpu")
        probs = torch.as_tensor(t["probs"]).to(torch.float64)
        epoch = torch.as_tensor(t["epoch"]).reshape(-1).to(torch.int64)
        member = torch.as_tensor(t["member"]).reshape(-1).to(torch.int64)
        if probs.dim() != 3 or not (probs.shape[0] == epoch.numel() == member.numel()):
            raise ValueError(f"{path}: expected probs [T, K, C] with T epochs and members, got "
                             f"{tuple(probs.shape)}, {epoch.numel()}, {member.numel()}")
        flat = probs.reshape(probs.shape[0], -1).numpy()
        if points and flat.shape[1] != points[0].shape[1]:
            raise ValueError(f"{path}: points of {flat.shape[1]} numbers, earlier stages have {points[0].shape[1]}")
        stages.append(stage.name)
        for m in sorted(set(member.tolist())):
            rows = torch.nonzero(member == m).reshape(-1)
            rows = rows[torch.argsort(epoch[rows], stable=True)]
            points.append(flat[rows.numpy()])
            ids.append(np.full(len(rows), len(labels), dtype=np.int64))
            steps.append(epoch[rows].numpy())
            labels.append(f"{stage.name}/" + ("exploration" if m < 0 else f"member{m}"))
    if not points:
        return {"points": np.zeros((0, 0)), "member": np.zeros(0, np.int64), "step": np.zeros(0, np.int64),
                "labels": [], "stages": []}
    return {"points": np.concatenate(points), "member": np.concatenate(ids), "step": np.concatenate(steps),
            "labels": labels, "stages": stages}


def run(ctx: AnalysisContext) -> dict[str, Any]:
    """Write /tsne from every stage's trajectory.pt."""
    traj = gather_trajectories(ctx)
    n = len(traj["points"])
    if n < 3:
        raise FileNotFoundError(f"{ctx.run_dir}: {n} recorded prediction points (t-SNE needs at least 3); "
                                "the recipe must set record_predictions = true on its stages")
    requested = ctx.recipe.analysis.tsne_perplexity
    emb = tsne_embed(traj["points"], requested)
    write_group(ctx.h5, "tsne", {
        "embedding": emb,
        "member": traj["member"],
        "step": traj["step"],
        "labels": traj["labels"],
    }, attrs={"perplexity": tsne_perplexity(requested, n), "stages": ",".join(traj["stages"]),
              "point_dim": int(traj["points"].shape[1]), "member_is": "trajectory id, an index into labels",
              "step_is": "epoch"}, meta=ctx.meta)
    return {"points": n, "trajectories": len(traj["labels"])}
