"""The optimizer a stage steps: SGD or Adam as the recipe's `[stage.optimizer]` says."""

from __future__ import annotations

import torch

from engine.config import OptimizerConfig


def build_optimizer(cfg: OptimizerConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    """SGD or Adam over the trainable parameters, weight decay on all of them as the originals do."""
    params: list = [p for p in model.parameters() if p.requires_grad]
    if not cfg.bn_weight_decay:
        bn = {id(p) for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
              for p in m.parameters()}
        params = [{"params": [p for p in params if id(p) not in bn]},
                  {"params": [p for p in params if id(p) in bn], "weight_decay": 0.0}]
    if cfg.name == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                           nesterov=cfg.nesterov)
