"""`tsne` (ensemble_freetickets.py --mode tsne): the members' training trajectories in function space.

Stages with `record_predictions = true` write `<stage>/trajectory.pt` = {"epoch": [T], "member": [T],
"outputs": [T, K, C], "output": "log_softmax" | "softmax"}: the outputs on the first K test images at some epochs,
and which ensemble member each point belongs to. Every (stage, member) pair is one trajectory; each point, flattened
to K*C numbers, is embedded in 2-D by one t-SNE over all points of all trajectories. (The original needed
per-epoch checkpoints that nothing wrote, and assumed exactly three trajectories.)

`[analysis].tsne_protocol` chooses what is recorded and how it is embedded:
- "original", as ensemble_freetickets.py: the model's raw output, log-softmax for FreeTickets' models
  (sparselearning/models.py:515), on the first test batch only, 128 images (`evaluate_tsne`, :93-113, with
  --test-batch-size 128, :498); of the per-epoch checkpoint files i = 0, 2, 4, ... only those with i >= 145
  (:765-767), i.e. epochs 147, 149, ..., 249 of a 250-epoch run; `TSNE(n_components=2)` with the defaults of the
  sklearn of its time (:790; 0.24: init "random", learning_rate 200, perplexity 30). Shorter runs scale the cut
  to ceil(145 E / 250) (`engine.trajectory.original_epochs`, which the trainer records by): the later 42% of
  training, every second epoch; runs of 250 epochs or more keep the fixed 145 as the original did. When that
  leaves fewer than 3 points (some runs of 14 epochs or fewer) the last 3 epochs are recorded instead, so a smoke
  or digits run still has a t-SNE. random_state is fixed at 0 (the original's was unseeded).
- "ours": softmax of the first 500 test images after every epoch, PCA-initialised t-SNE (random_state 0).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from engine.analyses.context import AnalysisContext, register_analysis
from engine.analyses.ensemble import tsne_embed, tsne_perplexity
from engine.io import load_checkpoint
from engine.store import write_group


def embed(points: np.ndarray, protocol: str, perplexity: float) -> np.ndarray:
    """The 2-D t-SNE [P, 2] of points [P, D]: the original's TSNE defaults (sklearn 0.24: random init, learning
    rate 200) or ours (PCA init); perplexity capped for few points, random_state 0 either way."""
    if protocol != "original":
        return tsne_embed(points, perplexity)
    from sklearn.manifold import TSNE  # deferred: sklearn is slow to import

    x = np.asarray(points, dtype=np.float64)
    tsne = TSNE(n_components=2, perplexity=tsne_perplexity(perplexity, len(x)), init="random", learning_rate=200.0,
                random_state=0)
    return tsne.fit_transform(x).astype(np.float64)


def gather_trajectories(ctx: AnalysisContext) -> dict[str, Any]:
    """All recorded points in recipe stage order, then member, then epoch: {points [P, K*C], member [P]
    (trajectory id), step [P] (epoch), labels (one "stage/memberI" per id), stages (those that had a file),
    output (what the points are: "log_softmax" or "softmax"; files without the key hold softmax)}."""
    points: list[np.ndarray] = []
    ids: list[np.ndarray] = []
    steps: list[np.ndarray] = []
    labels: list[str] = []
    stages: list[str] = []
    kinds: set[str] = set()
    for stage in ctx.recipe.stage:
        path = ctx.run_dir / stage.name / "trajectory.pt"
        if not path.exists():
            continue
        t = load_checkpoint(path, "cpu")
        probs = torch.as_tensor(t["outputs"] if "outputs" in t else t["probs"]).to(torch.float64)
        kinds.add(str(t.get("output", "softmax")))
        if len(kinds) > 1:
            raise ValueError(f"{path}: holds {t.get('output', 'softmax')} points, earlier stages {sorted(kinds)}; "
                             "record every stage with one tsne_protocol")
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
                "labels": [], "stages": [], "output": ""}
    return {"points": np.concatenate(points), "member": np.concatenate(ids), "step": np.concatenate(steps),
            "labels": labels, "stages": stages, "output": kinds.pop()}


@register_analysis("tsne")
def run(ctx: AnalysisContext) -> dict[str, Any]:
    """Write /tsne from every stage's trajectory.pt."""
    traj = gather_trajectories(ctx)
    n = len(traj["points"])
    if n < 3:
        raise FileNotFoundError(f"{ctx.run_dir}: {n} recorded prediction points (t-SNE needs at least 3); "
                                "the recipe must set record_predictions = true on its stages")
    requested, protocol = ctx.recipe.analysis.tsne_perplexity, ctx.recipe.analysis.tsne_protocol
    emb = embed(traj["points"], protocol, requested)
    write_group(ctx.h5, "tsne", {
        "embedding": emb,
        "member": traj["member"],
        "step": traj["step"],
        "labels": traj["labels"],
    }, attrs={"perplexity": tsne_perplexity(requested, n), "stages": ",".join(traj["stages"]),
              "point_dim": int(traj["points"].shape[1]), "member_is": "trajectory id, an index into labels",
              "step_is": "epoch", "protocol": protocol, "output": traj["output"]}, meta=ctx.meta)
    return {"points": n, "trajectories": len(traj["labels"])}
