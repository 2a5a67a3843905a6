"""The momentum that momentum growth scores: the optimizer's own, or a never-masked copy of it.

`growth = "momentum"` regrows the inactive positions of largest |momentum|. The original code (FreeTickets and
Sup-tickets CIFAR `momentum_growth`, `get_momentum_for_weight`) reads the optimizer's buffer, which for an inactive
weight holds the momentum of its dense gradients. With `mask_momentum = true` our buffers are zeroed with the masks,
so every inactive position would score 0 and top-k would return an arbitrary block of indices. `ShadowMomentum`
keeps, beside the optimizer, the buffer the original's unmasked optimizer would hold, updated from the same
gradients with the same hyperparameters, and momentum growth scores that instead.
"""

from __future__ import annotations

from typing import Any

import torch

ADAM_EPS = 1e-8  # get_momentum_for_weight: exp_avg / (sqrt(exp_avg_sq) + 1e-8)


def optimizer_momentum(optimizer: torch.optim.Optimizer, param: torch.Tensor) -> torch.Tensor | None:
    """The optimizer's momentum of `param` as the original scores it: SGD's buffer, Adam's m / (sqrt(v) + 1e-8)."""
    st = optimizer.state.get(param, {})
    if isinstance(st.get("exp_avg"), torch.Tensor) and isinstance(st.get("exp_avg_sq"), torch.Tensor):
        return st["exp_avg"] / (st["exp_avg_sq"].sqrt() + ADAM_EPS)
    buf = st.get("momentum_buffer")
    return buf if isinstance(buf, torch.Tensor) else None


class ShadowMomentum:
    """Unmasked momentum buffers of some parameters, stepped like the optimizer's (SGD or Adam) but never masked.

    Call `update()` after backward and before the optimizer step (it needs the gradient and the weight the step
    starts from). SGD: buf <- g + wd·w on the first step, then momentum·buf + (1 - dampening)·(g + wd·w); Adam:
    m <- b1·m + (1 - b1)·(g + wd·w), v <- b2·v + (1 - b2)·(g + wd·w)^2. The same arithmetic, in the same order,
    as torch.optim, so an inactive position holds exactly what the original's buffer would.
    """

    def __init__(self, params: list[torch.Tensor], optimizer: torch.optim.Optimizer) -> None:
        self.params = list(params)
        self.optimizer = optimizer
        group_of = {id(p): g for g in optimizer.param_groups for p in g["params"]}
        self.groups = [group_of[id(p)] for p in self.params]
        self.adam = ["betas" in g for g in self.groups]
        self.m: list[torch.Tensor] = [torch.zeros_like(p, dtype=torch.float32) for p in self.params]
        self.v: list[torch.Tensor | None] = [torch.zeros_like(p, dtype=torch.float32) if a else None
                                             for p, a in zip(self.params, self.adam)]
        self.steps = [0] * len(self.params)

    @torch.no_grad()
    def update(self) -> None:
        """One step of every buffer from the parameters' current gradients (parameters without one are skipped)."""
        for i, (p, g) in enumerate(zip(self.params, self.groups)):
            if p.grad is None:
                continue
            d = p.grad.float()
            wd = g.get("weight_decay", 0.0)
            if wd:
                d = d.add(p.detach().float(), alpha=wd)
            if self.adam[i]:
                b1, b2 = g["betas"]
                self.m[i].lerp_(d, 1 - b1)
                v = self.v[i]
                assert v is not None
                v.mul_(b2).addcmul_(d, d, value=1 - b2)
            elif self.steps[i] == 0:
                self.m[i].copy_(d)
            else:
                self.m[i].mul_(g.get("momentum", 0.0)).add_(d, alpha=1 - g.get("dampening", 0.0))
            self.steps[i] += 1

    def score(self, index: int) -> torch.Tensor:
        """The momentum of parameter `index` as growth scores it (Adam: m / (sqrt(v) + 1e-8))."""
        v = self.v[index]
        return self.m[index] if v is None else self.m[index] / (v.sqrt() + ADAM_EPS)

    def state_dict(self) -> dict[str, Any]:
        return {"m": [m.clone() for m in self.m], "v": [v.clone() if v is not None else None for v in self.v],
                "steps": list(self.steps)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for dst, src in zip(self.m, state["m"]):
            dst.copy_(src)
        for dst_v, src_v in zip(self.v, state["v"]):
            if dst_v is not None and src_v is not None:
                dst_v.copy_(src_v)
        self.steps = [int(s) for s in state["steps"]]
