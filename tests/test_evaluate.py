"""engine.evaluate: loss, top-1 and top-5 over a loader, checked against hand-made logits."""

from __future__ import annotations

import contextlib
import math

import torch

from engine.evaluate import evaluate


def test_top1_top5_and_loss_by_hand() -> None:
    # 7 classes; logits are the class scores themselves, so the ranking is readable
    logits = torch.tensor([
        [7.0, 6, 5, 4, 3, 2, 1],  # label 0: top-1 hit
        [7.0, 6, 5, 4, 3, 2, 1],  # label 4: 5th best, top-5 hit only
        [7.0, 6, 5, 4, 3, 2, 1],  # label 6: worst, a miss
    ])
    y = torch.tensor([0, 4, 6])
    batches = [(logits[:2], y[:2]), (logits[2:], y[2:])]
    res = evaluate(lambda x: x, batches, contextlib.nullcontext)
    assert res["acc"] == 100.0 / 3
    assert res["acc5"] == 200.0 / 3
    lse = math.log(sum(math.exp(v) for v in range(1, 8)))
    assert abs(res["loss"] - ((lse - 7) + (lse - 3) + (lse - 1)) / 3) < 1e-5


def test_no_top5_with_five_classes_or_fewer() -> None:
    res = evaluate(lambda x: x, [(torch.eye(5), torch.arange(5))], contextlib.nullcontext)
    assert res["acc"] == 100.0 and "acc5" not in res
