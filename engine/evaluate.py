"""Batched evaluation with one host sync per pass: loss/accuracy and softmax probabilities.

Accuracy is per image by default; `accuracy="batch_mean"` is the mean of the batches' own accuracies, as the
Early-Bird scripts' test() computes it (main.py:286-304: prec1 summed over batches, divided by len(test_loader)),
where a short last batch weighs as much as a full one (`[data].eval_accuracy`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Literal

import torch
import torch.nn.functional as F


@torch.no_grad()
def evaluate(forward: Callable[[torch.Tensor], torch.Tensor], loader: Iterable, amp: Callable,
             accuracy: Literal["per_image", "batch_mean"] = "per_image") -> dict[str, float]:
    """Mean cross-entropy, accuracy and top-5 accuracy (percent; "acc5" only with more than 5 classes) of
    `forward` over the loader. `accuracy`: hits over all images, or the mean over batches of each batch's
    accuracy (top-1 and top-5 alike; the loss stays the per-image mean, as in the original)."""
    if accuracy not in ("per_image", "batch_mean"):
        raise ValueError(f"unknown accuracy '{accuracy}'; choose 'per_image' or 'batch_mean'")
    per_batch = accuracy == "batch_mean"
    loss_sum, correct, correct5, n, batches = None, None, None, 0, 0
    for x, y in loader:
        with amp():
            out = forward(x)
        loss = F.cross_entropy(out.float(), y, reduction="sum")
        hit = (out.argmax(1) == y).sum()
        if per_batch:
            hit = hit.double() / y.numel()
        loss_sum = loss if loss_sum is None else loss_sum + loss
        correct = hit if correct is None else correct + hit
        if out.shape[1] > 5:
            hit5 = (out.topk(5, dim=1).indices == y[:, None]).any(1).sum()
            if per_batch:
                hit5 = hit5.double() / y.numel()
            correct5 = hit5 if correct5 is None else correct5 + hit5
        n += y.numel()
        batches += 1
    if n == 0:
        return {"loss": float("nan"), "acc": float("nan")}
    dt = torch.float64 if per_batch else torch.float32  # batch fractions summed in double; counts exact either way
    stats = torch.stack([t.to(dt) for t in (loss_sum, correct, correct5) if t is not None]).cpu()
    hits_over = batches if per_batch else n
    res = {"loss": float(stats[0]) / n, "acc": 100.0 * float(stats[1]) / hits_over}
    if correct5 is not None:
        res["acc5"] = 100.0 * float(stats[2]) / hits_over
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
