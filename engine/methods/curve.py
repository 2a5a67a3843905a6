"""Curve finding (dnn-mode-connectivity `train.py --curve=Bezier|PolyChain`): a low-loss path between two
trained networks.

    theta_0 <- endpoint `start`,  theta_{n-1} <- endpoint `end`   (fixed unless fix_start / fix_end are off)
    interior bends theta_1 .. theta_{n-2} <- on the segment between them (init_linear)
    for each mini-batch:  t ~ U(0, 1);  w(t) = sum_k c_k(t) theta_k   (Bezier or PolyChain coefficients)
        loss = CE(f(x; w(t)), y) + 0.5 * wd * ||w(t)||^2       (SGD itself without weight decay)
        step on the trainable bends
    evaluation along the curve (`curve` analysis) re-estimates BatchNorm statistics at every t

`eval_points`, `plane_grid` and `plane_margin` are read by the `curve` and `plane` analyses of the run. With
init_linear off, every interior bend starts at the stage's fresh initialisation of the model (the original drew an
independent initialisation per bend).
"""

from __future__ import annotations

from typing import Any

import torch

from engine.curves import CurveNet, coefficients, update_bn
from engine.data import make_loader
from engine.flops import CostMeter, layer_flops
from engine.io import load_checkpoint
from engine.methods.base import Method, register_method
from engine.optim import build_optimizer


@register_method("curve")
class Curve(Method):
    """Train the bends of a Bezier / PolyChain curve between two earlier stages' weights."""

    MONITOR_BN_IMAGES = 2048  # training images the per-epoch monitor re-estimates BN statistics on

    def prepare_model(self, model: torch.nn.Module) -> CurveNet:
        p = self.params
        self._flops = layer_flops(model, tuple(self.trainer.data.train.x.shape[1:]))
        curve = CurveNet(model, p.curve, p.num_bends, p.fix_start, p.fix_end)
        for k, ref in ((0, p.start), (p.num_bends - 1, p.end)):
            curve.import_base(load_checkpoint(self.info.checkpoint(ref))["model"], k)
        if p.init_linear:
            curve.init_linear()
        self.log(f"stage {self.stage.name}: {p.curve} curve, {p.num_bends} bends, from '{p.start}' to '{p.end}'"
                 f" (fixed: start {p.fix_start}, end {p.fix_end})")
        return curve

    def build_optimizer(self) -> torch.optim.Optimizer:
        """SGD/Adam over the trainable bends with weight_decay 0: the L2 is on w(t), in extra_loss."""
        cfg = self.stage.optimizer.model_copy(update={"weight_decay": 0.0})
        return build_optimizer(cfg, self.model)

    def setup(self) -> None:
        # training cost: one forward/backward of the base network per example (the weight mixing is negligible)
        self.trainer.cost = CostMeter(self._flops)
        t = self.trainer
        self._eval_coeffs = coefficients(self.params.curve, self.params.eval_t, self.params.num_bends).to(t.device)
        d = self.info.data
        self._bn_loader = make_loader(t.data.train, d.batch_size, device=t.device, train=False,
                                      normalize=d.normalize)
        self._bn_step = -1

    def extra_loss(self) -> torch.Tensor:
        """0.5 * wd * ||w(t)||^2 at the t of this mini-batch (curves.l2_regularizer of the original)."""
        return 0.5 * self.stage.optimizer.weight_decay * self.model.l2

    def eval_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The per-epoch monitor: the curve at eval_t, its BN statistics first re-estimated there on the first
        MONITOR_BN_IMAGES training images (the original printed no test numbers for BN curves; the exact numbers
        along the curve, over the whole training split, are the `curve` analysis)."""
        net = self.model
        if self._bn_step != self.trainer.step:  # once per training step (a no-op without BatchNorm)
            self._bn_step = self.trainer.step
            n = -(-self.MONITOR_BN_IMAGES // self._bn_loader.batch_size)
            update_bn(net, self._bn_loader, lambda z: net(z, coeffs=self._eval_coeffs), self.trainer.amp,
                      max_batches=n)
        return net(x, coeffs=self._eval_coeffs)

    def members(self) -> list[dict[str, Any]]:
        """A curve is not an ensemble member of the base architecture; its numbers are in /curve and /plane."""
        return []
