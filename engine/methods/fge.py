"""Fast Geometric Ensembling (dnn-mode-connectivity `fge.py`): an ensemble from one cyclic-LR run.

    weights <- a pretrained checkpoint (init_from, e.g. "train@160"); optimizer state too (load_optimizer)
    for epoch e = 0 .. E-1, batch i of N:  s = ((e mod c) + i/N) / c
        lr = (1 - 2s) lr_1 + 2s lr_2   if s < 1/2   else   (2s - 1) lr_1 + (2 - 2s) lr_2
        SGD step
        at the end of epoch e, if (e mod c) + 1 == c/2 (the lr has just reached lr_2, mid-cycle):
            collect the model as an ensemble member
    ensemble <- mean of the members' softmax probabilities

The triangle is the recipe's `[stage.schedule] name = "cyclic"` (`lr_1` at the cycle edges, `lr_2` mid-cycle;
the original README calls lr_1/lr_2 "minimum and maximum", the wrong way round) and c is its `cycle`.
"""

from __future__ import annotations

from typing import Any

import torch

from engine.io import load_checkpoint, save_checkpoint
from engine.methods.base import Method, register_method
from engine.optim import build_optimizer


@register_method("fge")
class FGE(Method):
    """Cyclic-LR SGD from a pretrained model, collecting a member at every cycle's low point."""

    @property
    def cycle(self) -> int:
        return self.stage.schedule.cycle

    def collects(self, epoch: int) -> bool:
        """Whether the model after 0-based `epoch` is a member: (e mod c) + 1 == c / 2."""
        return (epoch % self.cycle) + 1 == self.cycle // 2

    def build_optimizer(self) -> torch.optim.Optimizer:
        """The stage's optimizer, with the momentum buffers of the checkpoint it starts from (`load_optimizer`)."""
        opt = build_optimizer(self.stage.optimizer, self.model)
        if self.params.load_optimizer:
            path = self.info.checkpoint(self.stage.init_from)
            state = load_checkpoint(path)
            if "optimizer" not in state:  # a stage's final.pt keeps only weights; last.pt is the same epoch
                path = path.parent / "last.pt"
                state = load_checkpoint(path)
            opt.load_state_dict(state["optimizer"])
            g = opt.param_groups[0]
            self.log(f"stage {self.stage.name}: optimizer state from {path.relative_to(self.info.run_dir)} "
                     f"(momentum {g.get('momentum')}, weight_decay {g.get('weight_decay')})")
        return opt

    def setup(self) -> None:
        self.saved: list[int] = []  # 1-based epochs of the collected members
        self.probs_sum: torch.Tensor | None = None

    def end_epoch(self, epoch: int, record: dict[str, Any]) -> None:
        if not self.collects(epoch):
            return
        t = self.trainer
        save_checkpoint(t.stage_dir / f"fge-{epoch + 1}.pt", {"model": t.model.state_dict(), "epoch": epoch + 1})
        self.saved.append(epoch + 1)
        probs = t.predict()
        self.probs_sum = probs if self.probs_sum is None else self.probs_sum + probs
        ens = self.probs_sum / len(self.saved)
        y = t.eval_loader.y.cpu()
        split = t.data.eval_name
        record["fge_members"] = len(self.saved)
        record[f"ensemble_{split}_acc"] = 100.0 * float((ens.argmax(1) == y).float().mean())
        record[f"ensemble_{split}_nll"] = float(-ens.gather(1, y.view(-1, 1)).clamp_min(1e-12).log().mean())

    def members(self) -> list[dict[str, Any]]:
        name, kw = self.stage.name, self.trainer.model_kwargs
        return [{"name": f"fge{e}", "path": f"{name}/fge-{e}.pt", **({"model_kwargs": kw} if kw else {})}
                for e in self.saved]

    def state_dict(self) -> dict[str, Any]:
        return {"saved": list(self.saved), "probs_sum": self.probs_sum}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.saved, self.probs_sum = list(state["saved"]), state["probs_sum"]
