"""Theoretical training-cost accounting: per-layer forward FLOPs, sparse step costs and a run's running total.

None of the seed code bases counts FLOPs (FreeTickets notes, 2.6), yet the papers report training FLOPs relative
to one dense model. This follows the RigL convention (Evci et al. 2020, appendix H):

* FLOPs are those of the Conv / Linear layers only (the maskable weights, `engine.sparse.inits.maskable`), a
  multiply-add counted as 2 FLOPs: conv 2·k_h·k_w·(c_in/groups)·c_out·H_out·W_out, linear 2·in·out. Biases,
  BatchNorm, activations, pooling and residual adds are IGNORED, in the dense and the sparse count alike, so a
  ratio sparse/dense is a ratio of conv/linear work (these layers are > 99% of the FLOPs of the CIFAR models).
* Sparse forward: f_S = Σ_l f_l·d_l (d_l the density of layer l's weight; a layer without a density is dense).
* One training step per example: dense 3·f_D (forward, backward w.r.t. inputs, backward w.r.t. weights);
  sparse 3·f_S. Static sparse, SET (`random` growth) and gradual magnitude pruning add nothing (pruning itself
  and random growth are negligible).
* `gradient` growth (RigL, FreeTickets' README setting) needs the dense weight gradient on each update step, which
  costs 2·f_S + f_D instead of 3·f_S; averaged over an update interval ΔT this is RigL's
  (3·f_S·ΔT + 2·f_S + f_D) / (ΔT + 1) per step.
* `momentum` / `momentum_neuron` growth (SNFS, Dettmers & Zettlemoyer 2019) scores inactive weights by their
  momentum, and that momentum is only meaningful if the dense gradient is folded into it at EVERY step (in
  FreeTickets the momentum of inactive weights "keeps accumulating from their dense gradients", notes 2.1). So it
  is charged as RigL charges SNFS: 2·f_S + f_D on every step, whatever the update interval (RigL's table gives
  SNFS 0.61x vs RigL 0.42x training FLOPs for ResNet-50 ERK at 80% sparsity).

All numbers are per training example; `CostMeter` multiplies by steps × batch.
"""

from __future__ import annotations

import copy
import math
import numbers
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from engine.sparse.inits import maskable

__all__ = [
    "GROWTHS",
    "CostMeter",
    "dense_forward_flops",
    "layer_flops",
    "param_counts",
    "sparse_forward_flops",
    "step_flops",
]

# growth rule -> how it is charged: "free" (no extra cost), "update" (dense gradient on update steps, RigL),
# "every" (dense gradient on every step, SNFS momentum growth)
GROWTHS: dict[str | None, str] = {
    None: "free", "none": "free", "random": "free",
    "gradient": "update",
    "momentum": "every", "momentum_neuron": "every",
}

_CONV = nn.modules.conv._ConvNd


# ---------------------------------------------------------------------------------------------------------
# per-layer FLOPs
# ---------------------------------------------------------------------------------------------------------


def _first_tensor(value: Any) -> torch.Tensor | None:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (tuple, list)):
        for v in value:
            t = _first_tensor(v)
            if t is not None:
                return t
    return None


def layer_flops(model: nn.Module, input_shape: tuple[int, ...] = (3, 32, 32), *,
                copy_model: bool = True) -> dict[str, int]:
    """Dense forward FLOPs per example of every Conv/Linear layer, keyed by its weight name ("conv1.weight").

    A multiply-add is 2 FLOPs and biases are not counted: conv 2·numel(W)·H_out·W_out (= 2·k_h·k_w·c_in/groups·
    c_out·H_out·W_out), transposed conv 2·numel(W)·H_in·W_in, linear 2·in·out per output position. Measured by
    one forward pass of a zero tensor of shape (1, *input_shape) through a deep copy of `model` in eval mode with
    forward hooks, so the live model (its mode, BN statistics, hooks) is untouched. A layer called twice counts
    twice; a layer never called counts 0. Keys and order are those of `maskable(model)`. `copy_model=False` runs
    `model` itself (left in eval mode): for a caller's throwaway model, whose copy would cost more than the count.
    """
    clone = (copy.deepcopy(model) if copy_model else model).eval()
    names = {id(p): n for n, p in maskable(clone).items()}
    flops = dict.fromkeys(names.values(), 0)

    def hook(module: nn.Module, inputs: Any, output: Any) -> None:
        weight = module.weight
        out = _first_tensor(output)
        if out is None:
            return
        if isinstance(module, _CONV) and module.transposed:
            x = _first_tensor(inputs)
            positions = x.numel() // module.in_channels  # per example: the batch is 1
        elif isinstance(module, _CONV):
            positions = out.numel() // module.out_channels
        else:
            positions = out.numel() // module.out_features
        flops[names[id(weight)]] += 2 * weight.numel() * positions

    handles = [m.register_forward_hook(hook) for m in clone.modules()
               if isinstance(m, (_CONV, nn.Linear)) and id(getattr(m, "weight", None)) in names]
    ref = next(iter(clone.parameters()), None)
    if ref is None:
        ref = next(iter(clone.buffers()), torch.zeros(()))
    dtype = ref.dtype if ref.is_floating_point() else torch.get_default_dtype()
    try:
        with torch.no_grad():
            clone(torch.zeros((1, *input_shape), dtype=dtype, device=ref.device))
    finally:
        for h in handles:
            h.remove()
    return flops


def dense_forward_flops(model: nn.Module, input_shape: tuple[int, ...] = (3, 32, 32)) -> int:
    """Dense forward FLOPs per example of `model`: the sum of `layer_flops` (Conv/Linear only)."""
    return sum(layer_flops(model, input_shape).values())


def _check_densities(flops: Mapping[str, int], densities: Mapping[str, Any]) -> dict[str, float]:
    unknown = [n for n in densities if n not in flops]
    if unknown:
        raise ValueError(f"density given for '{unknown[0]}', which is not a Conv/Linear weight of the model "
                         f"(known: {', '.join(list(flops)[:4])}{', ...' if len(flops) > 4 else ''})")
    out = {}
    for n, d in densities.items():
        d = float(d)
        if not 0.0 <= d <= 1.0 or math.isnan(d):
            raise ValueError(f"density of '{n}' must be in [0, 1], got {d}")
        out[n] = d
    return out


def sparse_forward_flops(flops: Mapping[str, int], densities: Mapping[str, float]) -> float:
    """Sparse forward FLOPs per example f_S = Σ_l f_l·d_l; layers missing from `densities` count dense.

    A density for a name that is not in `flops` raises ValueError (usually a 'module.' prefix mismatch).
    """
    d = _check_densities(flops, densities)
    return float(sum(f * d.get(n, 1.0) for n, f in flops.items()))


def step_flops(flops: Mapping[str, int], densities: Mapping[str, float] | None, *, growth: str | None = None,
               update_interval: int | None = None) -> float:
    """Training FLOPs per example of one step (averaged over the mask-update cycle).

    `densities` None: dense training, 3·f_D (`growth` is then irrelevant). Otherwise 3·f_S for static sparse,
    SET (`random`) and `none`; `gradient` (RigL) gives (3·f_S·ΔT + 2·f_S + f_D)/(ΔT + 1) with ΔT =
    `update_interval` (required); `momentum`/`momentum_neuron` (SNFS) need the dense gradient every step:
    2·f_S + f_D. See the module docstring for why.
    """
    key = growth.lower() if isinstance(growth, str) else growth
    if key not in GROWTHS:
        raise ValueError(f"unknown growth '{growth}'; one of {sorted(k for k in GROWTHS if k)} or None")
    f_dense = float(sum(flops.values()))
    if densities is None:
        return 3.0 * f_dense
    f_sparse = sparse_forward_flops(flops, densities)
    kind = GROWTHS[key]
    if kind == "free":
        return 3.0 * f_sparse
    if kind == "every":
        return 2.0 * f_sparse + f_dense
    if isinstance(update_interval, bool) or not isinstance(update_interval, numbers.Integral) or update_interval < 1:
        raise ValueError(f"growth '{growth}' needs update_interval, a positive int of steps; got {update_interval!r}")
    dt = int(update_interval)
    return (3.0 * f_sparse * dt + 2.0 * f_sparse + f_dense) / (dt + 1)


# ---------------------------------------------------------------------------------------------------------
# a run's running total
# ---------------------------------------------------------------------------------------------------------


class CostMeter:
    """Accumulates a run's theoretical training FLOPs (see the module docstring for the convention).

    meter = CostMeter(layer_flops(model)); per epoch (or any stretch at fixed densities and growth rule)
    meter.add(steps, batch, densities, growth=..., update_interval=...); then meter.total, or
    meter.total / meter.dense_equivalent() for the cost relative to ONE dense model trained on as many examples.
    """

    def __init__(self, flops: Mapping[str, int]) -> None:
        self.flops: dict[str, int] = {str(n): int(f) for n, f in flops.items()}
        self.total: float = 0.0
        self.steps: int = 0
        self.examples: int = 0

    @property
    def dense_step(self) -> float:
        """FLOPs of one dense training step per example, 3·f_D."""
        return 3.0 * float(sum(self.flops.values()))

    def add(self, steps: int, batch: int, densities: Mapping[str, float] | None = None, *,
            growth: str | None = None, update_interval: int | None = None) -> float:
        """Charge `steps` steps of `batch` examples at `densities` (None: dense); returns the FLOPs added."""
        for label, v in (("steps", steps), ("batch", batch)):
            if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 0:
                raise ValueError(f"{label} must be a non-negative int, got {v!r}")
        added = step_flops(self.flops, densities, growth=growth, update_interval=update_interval) * steps * batch
        self.total += added
        self.steps += int(steps)
        self.examples += int(steps) * int(batch)
        return added

    def dense_equivalent(self, steps_total: int | None = None, batch: int | None = None) -> float:
        """Cost of training ONE dense model for `steps_total` steps of `batch` examples: 3·f_D·steps·batch.

        With neither given, for the examples charged so far.
        """
        if steps_total is None and batch is None:
            return self.dense_step * self.examples
        if steps_total is None or batch is None:
            raise ValueError("give both steps_total and batch, or neither")
        return self.dense_step * int(steps_total) * int(batch)

    def relative(self, steps_total: int | None = None, batch: int | None = None) -> float:
        """total / dense_equivalent(steps_total, batch): the training cost in units of one dense run."""
        dense = self.dense_equivalent(steps_total, batch)
        return self.total / dense if dense else float("nan")

    def state_dict(self) -> dict[str, Any]:
        """Plain python ints/floats/strs only, so it loads with torch.load(weights_only=True)."""
        return {"flops": dict(self.flops), "total": float(self.total), "steps": int(self.steps),
                "examples": int(self.examples)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the totals; raises ValueError if the state was recorded for other layer FLOPs (another model)."""
        flops = {str(n): int(f) for n, f in state["flops"].items()}
        if flops != self.flops:
            raise ValueError("CostMeter state was recorded for a model with different layer FLOPs")
        self.total = float(state["total"])
        self.steps = int(state["steps"])
        self.examples = int(state["examples"])

    def __repr__(self) -> str:
        return f"CostMeter(total={self.total:.4g}, steps={self.steps}, examples={self.examples})"


# ---------------------------------------------------------------------------------------------------------
# parameter counts
# ---------------------------------------------------------------------------------------------------------


def param_counts(model: nn.Module, densities: Mapping[str, float] | None = None) -> dict[str, int]:
    """{"params": all parameters, "maskable": Conv/Linear weights, "nonzero": parameters not pruned}.

    "nonzero" = Σ round(numel·d) over the maskable weights (d = 1 for one missing from `densities`, the same
    round() as exact mask drawing) + every other parameter (biases, BatchNorm, ...), which is never masked.
    Shared parameters count once; non-trainable parameters (e.g. Early-Bird channel selections) are included.
    """
    params = dict(model.named_parameters())
    masked = maskable(model)
    d = _check_densities({n: 0 for n in masked}, densities or {})
    total = sum(p.numel() for p in params.values())
    n_mask = sum(p.numel() for p in masked.values())
    kept = sum(round(p.numel() * d.get(n, 1.0)) for n, p in masked.items())
    return {"params": total, "maskable": n_mask, "nonzero": kept + total - n_mask}
