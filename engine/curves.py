"""Curves in weight space between two trained networks (Garipov et al. 2018), for any registry model.

With n = `num_bends` control points theta_0 .. theta_{n-1} (theta_0 and theta_{n-1} are the endpoints):

    w(t) = sum_k c_k(t) theta_k,  t in [0, 1]
    Bezier:    c_k(t) = C(n-1, k) t^k (1-t)^(n-1-k)      (the Bernstein basis; n = 3 is the quadratic Bezier)
    PolyChain: c_k(t) = max(0, 1 - |t (n-1) - k|)       (hat functions: the polygonal chain through the bends)

`CurveNet` is a curve version of a model built from the model's own definition, not a copy of it: it keeps the
base model (its modules, and its BatchNorm running statistics, which are shared by every t as in the original)
with the base's parameters taken out, holds the n control points of all parameters as the rows of one [n, P]
matrix (fixed endpoints in a buffer, the trainable bends in a parameter), and runs the base's forward with the
weights w(t) through torch.func.functional_call. The point w(t) is one small matrix product, and ||w(t)||^2 for
the regulariser 0.5 * wd * ||w(t)||^2 falls out of it.

`update_bn` re-estimates BatchNorm statistics at a fixed point (engine.bn.update_bn, sample-weighted as the
original), which every evaluation at a new t needs because the statistics are shared along the curve.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractContextManager
from typing import Any

import torch
from torch import nn
from torch.func import functional_call

from engine import bn
from engine.models import create_model

CURVES = ("bezier", "polychain")


def coefficients(curve: str, t: torch.Tensor | float, num_bends: int) -> torch.Tensor:
    """The n coefficients c_k(t) of the curve at `t` (a float or a 0-dim tensor; the result follows its device)."""
    t = torch.as_tensor(t, dtype=torch.float32)
    k = torch.arange(num_bends, dtype=torch.float32, device=t.device)
    return _coefficients(curve, t, k, _binomials(num_bends).to(t.device))


def _binomials(num_bends: int) -> torch.Tensor:
    return torch.tensor([math.comb(num_bends - 1, j) for j in range(num_bends)], dtype=torch.float32)


def _coefficients(curve: str, t: torch.Tensor, k: torch.Tensor, binom: torch.Tensor) -> torch.Tensor:
    n = k.numel()
    if curve == "bezier":
        return binom * t.pow(k) * (1 - t).pow(n - 1 - k)
    if curve == "polychain":
        return (1 - (t * (n - 1) - k).abs()).clamp_min(0)
    raise ValueError(f"unknown curve '{curve}'; choose from {', '.join(CURVES)}")


def line_coefficients(t: float, num_bends: int) -> torch.Tensor:
    """Coefficients of the straight segment between the endpoints, (1-t) theta_0 + t theta_{n-1}."""
    c = torch.zeros(num_bends)
    c[0], c[-1] = 1 - t, t
    return c


class CurveNet(nn.Module):
    """A Bezier or PolyChain curve of `base`'s weights. forward(x) draws t ~ U(0, 1) (once per call, i.e. per
    mini-batch); forward(x, t) evaluates the network at t. After a forward, `self.l2` holds ||w(t)||^2 over every
    parameter of the base (biases and BatchNorm affine included)."""

    def __init__(self, base: nn.Module, curve: str = "bezier", num_bends: int = 3, fix_start: bool = True,
                 fix_end: bool = True) -> None:
        super().__init__()
        if curve not in CURVES:
            raise ValueError(f"unknown curve '{curve}'; choose from {', '.join(CURVES)}")
        if num_bends < 2:
            raise ValueError(f"a curve needs at least 2 bends (its endpoints), got {num_bends}")
        self.curve, self.num_bends = curve, num_bends
        self.fixed = [fix_start] + [False] * (num_bends - 2) + [fix_end]
        named = list(base.named_parameters())
        self.names = [n for n, _ in named]
        self.shapes = [p.shape for _, p in named]
        self.sizes = [p.numel() for _, p in named]
        self.index = {n: i for i, n in enumerate(self.names)}
        flat = torch.cat([p.detach().reshape(-1) for _, p in named]).float()
        # every bend starts at the base's own initialisation; the endpoints are then imported, the interior
        # bends usually put on the segment between them (init_linear)
        free = [k for k in range(num_bends) if not self.fixed[k]]
        fixed = [k for k in range(num_bends) if self.fixed[k]]
        self.row = {k: ("free", i) for i, k in enumerate(free)} | {k: ("fixed", i) for i, k in enumerate(fixed)}
        self.free = nn.Parameter(flat.repeat(len(free), 1))
        self.register_buffer("fixed_points", flat.repeat(len(fixed), 1))
        self.register_buffer("free_idx", torch.tensor(free, dtype=torch.long), persistent=False)
        self.register_buffer("fixed_idx", torch.tensor(fixed, dtype=torch.long), persistent=False)
        # kept on the device, so that drawing t and its coefficients in the training step never syncs with the host
        self.register_buffer("_k", torch.arange(num_bends, dtype=torch.float32), persistent=False)
        self.register_buffer("_binom", _binomials(num_bends), persistent=False)
        for name in self.names:  # the base keeps its modules and buffers; its parameters come from the curve
            owner, _, attr = name.rpartition(".")
            base.get_submodule(owner)._parameters[attr] = None
        self.net = base
        self.l2: torch.Tensor | None = None

    # ---- control points -----------------------------------------------------------------------------------
    def bend(self, k: int) -> torch.Tensor:
        """Control point k as a flat vector [P] (a view: writing into it changes the curve)."""
        kind, i = self.row[k]
        return (self.free if kind == "free" else self.fixed_points)[i]

    def bends(self) -> torch.Tensor:
        """All control points as [n, P] (a copy)."""
        return torch.stack([self.bend(k).detach() for k in range(self.num_bends)])

    @torch.no_grad()
    def import_base(self, state: Mapping[str, torch.Tensor] | nn.Module, k: int) -> None:
        """Set control point k to a base model's parameters (a module or its state_dict), matched by name."""
        if isinstance(state, nn.Module):
            state = dict(state.named_parameters())
        missing = [n for n in self.names if n not in state]
        if missing:
            raise KeyError(f"the base weights lack '{missing[0]}' (and {len(missing) - 1} more)")
        self.bend(k).copy_(torch.cat([state[n].detach().reshape(-1).float().to(self.free.device)
                                      for n in self.names]))

    @torch.no_grad()
    def import_buffers(self, state: Mapping[str, torch.Tensor] | nn.Module) -> None:
        """Copy a base model's buffers (BatchNorm statistics) into the shared buffers of the curve."""
        if isinstance(state, nn.Module):
            state = dict(state.named_buffers())
        for name, buf in self.net.named_buffers():
            if name in state:
                buf.copy_(state[name])

    @torch.no_grad()
    def init_linear(self) -> None:
        """Put every interior bend on the segment between the endpoints: theta_k = (1 - k/(n-1)) theta_0 +
        k/(n-1) theta_{n-1} (train.py's default, `--init_linear_off` to skip)."""
        n = self.num_bends
        start, end = self.bend(0).clone(), self.bend(n - 1).clone()
        for k in range(1, n - 1):
            a = k / (n - 1)
            self.bend(k).copy_((1 - a) * start + a * end)

    # ---- points on the curve ------------------------------------------------------------------------------
    def coefficients(self, t: torch.Tensor | float) -> torch.Tensor:
        """c_k(t) on the curve's device (a device tensor t stays there: no host sync)."""
        t = torch.as_tensor(t, dtype=torch.float32, device=self._k.device)
        return _coefficients(self.curve, t, self._k, self._binom)

    def point(self, coeffs: torch.Tensor) -> torch.Tensor:
        """sum_k c_k theta_k as a flat vector [P], in float32 whatever autocast is active."""
        coeffs = coeffs.to(self.free.device, torch.float32)
        with torch.autocast(self.free.device.type, enabled=False):
            w = coeffs[self.free_idx] @ self.free if len(self.free) else None
            if len(self.fixed_points):
                wf = coeffs[self.fixed_idx] @ self.fixed_points
                w = wf if w is None else w + wf
        return w

    def weights(self, t: torch.Tensor | float) -> torch.Tensor:
        """w(t) as a flat vector [P] (the original's `weights(t)`)."""
        return self.point(self.coefficients(t))

    def unflatten(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """A flat weight vector as the base's parameters, by name (views, no copy)."""
        return {n: chunk.view(shape) for n, chunk, shape in zip(self.names, flat.split(self.sizes), self.shapes)}

    def base_state(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """A state_dict for the base architecture at a point (parameters from `flat`, the shared buffers)."""
        state = {n: v.detach().clone() for n, v in self.unflatten(flat).items()}
        state.update({n: b.detach().clone() for n, b in self.net.named_buffers()})
        return state

    def run(self, x: torch.Tensor, flat: torch.Tensor) -> torch.Tensor:
        """The base network's forward with the weights `flat`."""
        return functional_call(self.net, self.unflatten(flat), (x,))

    def forward(self, x: torch.Tensor, t: torch.Tensor | float | None = None,
                coeffs: torch.Tensor | None = None) -> torch.Tensor:
        if coeffs is None:
            if t is None:  # one t per mini-batch, drawn on the device (no host sync)
                t = torch.rand((), device=self._k.device)
            coeffs = self.coefficients(t)
        w = self.point(coeffs)
        self.l2 = (w * w).sum()
        return self.run(x, w)


def update_bn(model: nn.Module, loader: Iterable, forward: Callable[[torch.Tensor], Any] | None = None,
              amp: Callable[[], AbstractContextManager[Any]] | None = None, max_batches: int | None = None) -> None:
    """BN statistics re-estimated at a fixed point: engine.bn.update_bn weighted by samples, as utils.update_bn of
    the original (momentum b / (N_seen + b), so partial batches count by their size)."""
    bn.update_bn(model, loader, forward, amp, weighting="samples", max_batches=max_batches)


def build_curve(arch: str, num_classes: int, width: float, curve: str, num_bends: int, fix_start: bool = True,
                fix_end: bool = True, **model_kwargs: Any) -> CurveNet:
    """A CurveNet around a fresh registry model (the analyses rebuild a trained curve this way)."""
    return CurveNet(create_model(arch, num_classes, width, **model_kwargs), curve, num_bends, fix_start, fix_end)
