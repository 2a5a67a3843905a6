"""Batched evaluation with one host sync per pass: loss/accuracy and softmax probabilities."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F


@torch.no_grad()
def evaluate(forward: Callable[[torch.Tensor], torch.Tensor], loader: Iterable, amp: Callable) -> dict[str, float]:
    """Mean cross-entropy and accuracy (percent) of `forward` over the loader."""
    loss_sum, correct, n = None, None, 0
    for x, y in loader:
        with amp():
            out = forward(x)
        loss = F.cross_entropy(out.float(), y, reduction="sum")
        hit = (out.argmax(1) == y).sum()
        loss_sum = loss if loss_sum is None else loss_sum + loss
        correct = hit if correct is None else correct + hit
        n += y.numel()
    if n == 0:
        return {"loss": float("nan"), "acc": float("nan")}
    stats = torch.stack([loss_sum.float(), correct.float()]).cpu()
    return {"loss": float(stats[0]) / n, "acc": 100.0 * float(stats[1]) / n}


@torch.no_grad()
def predict_probs(forward: Callable[[torch.Tensor], torch.Tensor], loader: Iterable, amp: Callable) -> torch.Tensor:
    """Softmax probabilities [N, C] (float32, CPU) in the loader's order."""
    outs = []
    for x, _ in loader:
        with amp():
            out = forward(x)
        outs.append(torch.softmax(out.float(), dim=1))
    return torch.cat(outs).cpu()
