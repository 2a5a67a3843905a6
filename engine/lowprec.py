"""Simulated low-precision training (SWALP-style block floating point), without qtorch.

Early-Bird's "EB Train LL" runs its search and retraining with qtorch 0.1.1 (an abandoned CUDA/C++ extension):
8-bit block floating point (BFP, one shared exponent per slice along dim 0) for weights, activations, gradients,
errors and momentum, with stochastic rounding. This module does the same arithmetic in plain PyTorch ops:

    block_quantize(x, wl):  E = floor(log2(max |x| of the block)),  step = 2^(E + 2 - wl)
                            q = round(x / step) (stochastic: floor(x/step + u), u ~ U[0,1); nearest: floor(+0.5))
                            clipped to +-(2^(wl-1) - 1) steps, returned as float (fake quantisation)

which is qtorch's `block_quantize(x, wl, dim=0)` (its bit trick adds 1.5 * 2^(E+2) and keeps wl mantissa
bits, i.e. the same step; its clip keeps the result below 2^(E+1)). A block whose maximum is 0 stays 0.

`LowPrecision` attaches it to a model the way qtorch's `sequential_lower` + `OptimLP` do, but with hooks,
so the module structure and the state-dict keys stay those of the plain model (checkpoints load anywhere):
- activations/errors: a forward hook on every Conv2d and Linear except the last Linear (the original removes
  the classifier's quantizer) quantises the output (wl_activate) and, in backward, its gradient (wl_error);
  BatchNorm and ReLU outputs are not quantised, as in the original;
- gradients: `quantize_grads()` before the optimizer step (after any L1 term was added), every parameter;
- weights and momentum: `quantize_weights()` / `quantize_momentum()` after the step, every optimised parameter
  and SGD momentum buffer (OptimLP quantises all of them, BatchNorm's gamma and beta included).
A word length of 0 leaves that quantity in full precision. Everything is tensor ops: no host sync.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

__all__ = ["LowPrecision", "block_quantize"]


def block_quantize(x: torch.Tensor, wl: int, stochastic: bool = True, dim: int = 0) -> torch.Tensor:
    """Fake-quantise `x` to `wl`-bit block floating point with one exponent per slice along `dim` (-1: one
    exponent for the whole tensor). Returns a tensor of x's dtype and shape; wl <= 0 returns x unchanged."""
    if wl <= 0 or x.numel() == 0:
        return x
    xf = x.float()
    if dim == -1 or xf.dim() == 0:
        amax = xf.abs().amax().reshape([1] * xf.dim())
    else:
        moved = xf.movedim(dim, 0)
        amax = moved.abs().reshape(moved.shape[0], -1).amax(1)
        amax = amax.reshape([-1] + [1] * (xf.dim() - 1)).movedim(0, dim)
    # frexp: amax = m * 2^e with m in [0.5, 1), so floor(log2(amax)) = e - 1 exactly (no log rounding issues)
    _, e = torch.frexp(amax)
    step = torch.ldexp(torch.ones_like(amax), (e - 1) + 2 - wl)
    q = xf / step
    if stochastic:
        q = torch.floor(q + torch.rand_like(q))
    else:
        q = torch.floor(q + 0.5)
    lim = float(2 ** (wl - 1) - 1)
    q = q.clamp_(-lim, lim) * step
    q = torch.where(amax > 0, q, torch.zeros_like(q))
    return q.to(x.dtype)


class _ActErrQuant(torch.autograd.Function):
    """Quantise a tensor in forward (activation word length) and its gradient in backward (error word length)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, wl_act: int, wl_err: int, stochastic: bool) -> torch.Tensor:
        ctx.wl_err, ctx.stochastic = wl_err, stochastic
        return block_quantize(x, wl_act, stochastic)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None, None]:
        return block_quantize(grad, ctx.wl_err, ctx.stochastic), None, None, None


class LowPrecision:
    """SWALP-style low-precision training attached to a model by hooks (see the module docstring)."""

    def __init__(self, model: nn.Module, *, wl_weight: int = 8, wl_activate: int = 8, wl_grad: int = 8,
                 wl_error: int = 8, wl_momentum: int = 8, rounding: str = "stochastic") -> None:
        if rounding not in ("stochastic", "nearest"):
            raise ValueError(f"rounding must be 'stochastic' or 'nearest', got {rounding!r}")
        self.wl_weight, self.wl_activate, self.wl_grad = int(wl_weight), int(wl_activate), int(wl_grad)
        self.wl_error, self.wl_momentum = int(wl_error), int(wl_momentum)
        self.stochastic = rounding == "stochastic"
        layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
        last_linear = next((m for m in reversed(layers) if isinstance(m, nn.Linear)), None)
        self.layers = [m for m in layers if m is not last_linear]
        self.handles: list[Any] = []
        if self.wl_activate > 0 or self.wl_error > 0:
            self.handles = [m.register_forward_hook(self._hook) for m in self.layers]

    def _hook(self, module: nn.Module, inputs: Any, output: torch.Tensor) -> torch.Tensor:
        return _ActErrQuant.apply(output, self.wl_activate, self.wl_error, self.stochastic)

    def remove(self) -> None:
        """Detach the activation/error hooks (the model is full precision again)."""
        for h in self.handles:
            h.remove()
        self.handles = []

    @torch.no_grad()
    def quantize_grads(self, params: Iterable[torch.Tensor]) -> None:
        if self.wl_grad <= 0:
            return
        for p in params:
            if p.grad is not None:
                p.grad.copy_(block_quantize(p.grad, self.wl_grad, self.stochastic))

    @torch.no_grad()
    def quantize_weights(self, params: Iterable[torch.Tensor]) -> None:
        if self.wl_weight <= 0:
            return
        for p in params:
            p.copy_(block_quantize(p, self.wl_weight, self.stochastic))

    @torch.no_grad()
    def quantize_momentum(self, optimizer: torch.optim.Optimizer) -> None:
        if self.wl_momentum <= 0:
            return
        for group in optimizer.param_groups:
            if not group.get("momentum", 0):
                continue
            for p in group["params"]:
                buf = optimizer.state.get(p, {}).get("momentum_buffer")
                if buf is not None:
                    buf.copy_(block_quantize(buf, self.wl_momentum, self.stochastic))
