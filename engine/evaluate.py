"""Batched evaluation with one host sync per pass: loss/accuracy and softmax probabilities."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F


@torch.no_grad()
def evaluate(forward: Callable[[torch.Tensor], torch.Tensor], loader: Iterable, amp: Callable) -> dict[str, float]:
    """Mean cross-entropy, accuracy and top-5 accuracy (percent; "acc5" only with more than 5 classes) of
    `forward` over the loader."""
    loss_sum, correct, correct5, n = None, None, None, 0
    for x, y in loader:
        with amp():
            out = forward(x)
        loss = F.cross_entropy(out.float(), y, reduction="sum")
        hit = (out.argmax(1) == y).sum()
        loss_sum = loss if loss_sum is None else loss_sum + loss
        correct = hit if correct is None else correct + hit
        if out.shape[1] > 5:
            hit5 = (out.topk(5, dim=1).indices == y[:, None]).any(1).sum()
            correct5 = hit5 if correct5 is None else correct5 + hit5
        n += y.numel()
    if n == 0:
        return {"loss": float("nan"), "acc": float("nan")}
    sums = [loss_sum.float(), correct.float()] + ([] if correct5 is None else [correct5.float()])
    stats = torch.stack(sums).cpu()
    res = {"loss": float(stats[0]) / n, "acc": 100.0 * float(stats[1]) / n}
    if correct5 is not None:
        res["acc5"] = 100.0 * float(stats[2]) / n
    return res


@torch.no_grad()
def predict_probs(forward: Callable[[torch.Tensor], torch.Tensor], loader: Iterable, amp: Callable) -> torch.Tensor:
    """Softmax probabilities [N, C] (float32, CPU) in the loader's order."""
    outs = []
    for x, _ in loader:
        with amp():
            out = forward(x)
        outs.append(torch.softmax(out.float(), dim=1))
    return torch.cat(outs).cpu()
