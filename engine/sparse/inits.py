"""Sparse initialisation: which weights are masked, each layer's density, and the masks themselves.

Written from the reference notes on Random_Pruning / Sup-tickets (`suptickets_and_random_pruning.md`, B.3,
A.5.6) and FreeTickets (`freetickets.md`, 2.2). Conventions (N_l = numel of layer l, d = target density):

* The maskable set is every Conv (any dim, transposed included) and Linear weight; `dense` fnmatch patterns
  take layers out of it (they stay dense and are never masked).
* The rules whose reference formula has a dense set or a fixed-density layer (ER, ERK, ERK_plus,
  uniform_plus) target `d` over *all* Conv/Linear weights, charging the `dense`-pattern layers at 1.0
  against that budget, so the whole model comes out at `d`. `uniform`, `snip` and `grasp` have no such term
  in the reference: they apply `d` to the masked layers only (dense-pattern layers come on top).
* Densities are per-layer *expected* densities; `draw_masks` turns them into masks, either with an exact
  count per layer (default, recommended by the notes) or i.i.d. Bernoulli as the original code.
* `snip_masks` keeps the SNIP top-k weights themselves (`score_masks`), where `snip` re-draws positions at SNIP's
  ratios.
* `initial_masks` is the one dispatch from a `[sparse]` table to the masks training starts from (sparse training
  and `repro sparsity` both call it).
"""

from __future__ import annotations

import copy
import fnmatch
import math
import numbers
from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from engine.config import SparseConfig
from engine.data import BatchLoader

INITS = ("dense", "uniform", "uniform_plus", "ER", "ERK", "ERK_plus", "snip", "grasp")
MAGNITUDE_INITS = {"pruning": "global", "prune_global": "global", "prune_uniform": "uniform"}  # init -> scope
# inits whose masks are the top scores themselves (positions included), init -> the ratio rule scoring them:
# `snip_masks` is SNIP proper (Lee et al. 2019; Sup-tickets ImageNet/snip.py), `snip` only takes its ratios
SCORE_INITS = {"snip_masks": "snip"}
_INIT_KEYS = {name.lower(): name for name in INITS}
_CONV = nn.modules.conv._ConvNd


# ---------------------------------------------------------------------------------------------------------
# which weights
# ---------------------------------------------------------------------------------------------------------


def _weight_params(model: nn.Module, kinds: tuple[type, ...]) -> dict[str, nn.Parameter]:
    """`weight` parameters of modules of `kinds`, keyed by parameter name, in `named_parameters` order."""
    wanted = {id(m.weight) for m in model.modules()
              if isinstance(m, kinds) and isinstance(getattr(m, "weight", None), nn.Parameter)}
    return {name: p for name, p in model.named_parameters() if id(p) in wanted}


def maskable(model: nn.Module, dense: Sequence[str] = ()) -> dict[str, nn.Parameter]:
    """Every Conv / Linear weight of `model` in registration order, minus names matching a `dense` pattern.

    These are the tensors the sparse-training masks cover (biases, BatchNorm and everything else are never
    masked, as in all the seed code bases). `dense` holds fnmatch patterns, e.g. "fc.weight", "*shortcut*".
    """
    if isinstance(dense, str):
        dense = (dense,)
    params = _weight_params(model, (_CONV, nn.Linear))
    return {n: p for n, p in params.items() if not any(fnmatch.fnmatchcase(n, pat) for pat in dense)}


def classifier_name(model: nn.Module) -> str:
    """Name of the last Linear weight (the classifier: `fc`, `classifier`, `linear`, ...).

    uniform_plus and ERK_plus treat this layer specially; the original code looked it up by a hard-coded
    name, which broke on other architectures.
    """
    names = list(_weight_params(model, (nn.Linear,)))
    if not names:
        raise ValueError(f"{type(model).__name__} has no Linear layer, so no classifier")
    return names[-1]


def first_conv_name(model: nn.Module) -> str:
    """Name of the first Conv weight (the stem), which uniform_plus keeps dense."""
    names = list(_weight_params(model, (_CONV,)))
    if not names:
        raise ValueError(f"{type(model).__name__} has no Conv layer, so no stem")
    return names[0]


# ---------------------------------------------------------------------------------------------------------
# layer-wise densities
# ---------------------------------------------------------------------------------------------------------


def _erk_raw(shape: Sequence[int], power: float) -> float:
    """ERK score: (sum of all dims / product of all dims) ** power (kernel dims included)."""
    return (sum(shape) / math.prod(shape)) ** power


def _er_raw(shape: Sequence[int]) -> float:
    """ER score: (c_out + c_in) / (c_out * c_in) from the first two dims only (kernel ignored)."""
    c_out, c_in = shape[0], shape[1]
    return (c_out + c_in) / (c_out * c_in)


def _solve_eps(numels: dict[str, int], raw: dict[str, float], budget: float) -> dict[str, float]:
    """The ER/ERK loop: densities eps*raw_l over `raw`'s layers holding `budget` weights in total.

    eps solves sum_{l not dense} eps*raw_l*N_l = budget - sum_{l dense} N_l; while some eps*raw_l exceeds 1,
    every layer attaining the largest raw score joins the dense set and eps is solved again. Stops early
    (everything dense) if the budget is larger than the layers can hold.
    """
    dense: set[str] = set()
    eps = 0.0
    while True:
        free = [n for n in raw if n not in dense]
        if not free:
            break
        rest = budget - sum(numels[n] for n in dense)
        eps = rest / sum(raw[n] * numels[n] for n in free)
        if eps <= 0:
            raise ValueError("the target density is too low: the dense/fixed layers already take the whole "
                             "budget, nothing is left for the other layers")
        top = max(raw[n] for n in free)
        if eps * top <= 1.0:
            break
        dense.update(n for n in free if raw[n] == top)
    return {n: 1.0 if n in dense else eps * raw[n] for n in raw}


def _fixed_budget(model: nn.Module, masked: dict[str, nn.Parameter], density: float,
                  fixed: dict[str, float]) -> float:
    """Weights left for the free masked layers: d * (all Conv/Linear weights) - dense-pattern layers
    (at 1.0) - `fixed` layers (at their given density)."""
    everything = maskable(model)
    n_total = sum(p.numel() for p in everything.values())
    n_dense = sum(p.numel() for n, p in everything.items() if n not in masked)
    return density * n_total - n_dense - sum(d * masked[n].numel() for n, d in fixed.items())


def _ratio_from_scores(masked: dict[str, nn.Parameter], scores: dict[str, torch.Tensor] | None, keep: int,
                       largest: bool) -> dict[str, float]:
    """Per-layer fraction kept when exactly `keep` weights are kept globally by score.

    `largest=True` keeps the top `keep` scores (SNIP); `largest=False` keeps the `keep` smallest ones (GraSP,
    whose rule removes the top scores). Ties are broken by position (earlier layer / index first), so the
    total is exact.
    """
    if scores is None:
        raise ValueError("this sparse init needs `scores` (from snip_scores / grasp_scores)")
    missing = [n for n in masked if n not in scores]
    if missing:
        raise ValueError(f"scores are missing for {missing[:3]}{' ...' if len(missing) > 3 else ''}")
    for n, p in masked.items():
        if tuple(scores[n].shape) != tuple(p.shape):
            raise ValueError(f"score for {n!r} has shape {tuple(scores[n].shape)}, weight {tuple(p.shape)}")
    flat = torch.cat([scores[n].detach().reshape(-1).float().cpu() for n in masked])
    keep_flags = _top_count(flat if largest else -flat, keep)
    out, start = {}, 0
    for n, p in masked.items():
        out[n] = int(keep_flags[start:start + p.numel()].sum()) / p.numel()
        start += p.numel()
    return out


def layer_densities(model: nn.Module, init: str, density: float, *, dense: Sequence[str] = (),
                    erk_power_scale: float = 1.0, fc_density: float = 1.0,
                    scores: dict[str, torch.Tensor] | None = None) -> dict[str, float]:
    """Per-layer density of every maskable weight (`maskable(model, dense)`) under the rule `init`.

    Rules (names case-insensitive):
      dense         1.0 everywhere.
      uniform       d on every masked layer (stem and classifier included).
      uniform_plus  stem dense; budget B = N*d - N_stem; if d < 0.2 the classifier is held at 0.2 and every
                    other layer gets (B - 0.2*N_fc) / N with N the FULL count (stem and fc included): the
                    reference's quirk, kept because it is what the paper ran, so the model ends slightly below d
                    (ResNet-20 at 0.05: others 0.04793, overall ~0.0498). If d >= 0.2 every other layer is at d
                    (uncompensated, overall slightly above d).
      ER / ERK      Erdos-Renyi(-Kernel) with the dense-capping loop; ERK scores are raised to
                    `erk_power_scale` (ER ignores it, as the original).
      ERK_plus      classifier at `fc_density`, ERK over the other layers with d' = (N*d - F*fc_density)/(N-F),
                    so the whole model is at d.
      snip / grasp  ratios from `scores`: SNIP keeps the top int(N*d) scores globally; GraSP removes the top
                    int(N*(1-d)) (so it keeps N - int(N*(1-d)), which can be one more than int(N*d)). The
                    original GraSP kept `score <= the rm-th largest`, i.e. one extra weight; here exactly
                    the top int(N*(1-d)) are removed. The density of each layer is the fraction it keeps.
    Only the ratios are returned; positions are drawn by `draw_masks` ("random pruning with SNIP/GraSP ratios").
    """
    key = _INIT_KEYS.get(str(init).lower()) if isinstance(init, str) else None
    if key is None:
        raise ValueError(f"unknown sparse init {init!r}; choose from {', '.join(INITS)}")
    if isinstance(density, bool) or not isinstance(density, numbers.Real) or not 0 < density <= 1:
        raise ValueError(f"density must be in (0, 1], got {density!r}")
    density = float(density)
    masked = maskable(model, dense)
    if not masked:
        return {}
    numels = {n: p.numel() for n, p in masked.items()}

    if key == "dense":
        return dict.fromkeys(masked, 1.0)
    if key == "uniform":
        return dict.fromkeys(masked, density)
    if key == "uniform_plus":
        return _uniform_plus(model, masked, density)
    if key in ("ER", "ERK", "ERK_plus"):
        fixed: dict[str, float] = {}
        if key == "ERK_plus":
            if not 0 <= fc_density <= 1:
                raise ValueError(f"fc_density must be in [0, 1], got {fc_density!r}")
            fc = classifier_name(model)
            if fc in masked:  # a classifier matched by `dense` is simply dense
                fixed[fc] = float(fc_density)
        if key == "ER":
            raw = {n: _er_raw(p.shape) for n, p in masked.items() if n not in fixed}
        else:
            raw = {n: _erk_raw(p.shape, erk_power_scale) for n, p in masked.items() if n not in fixed}
        budget = _fixed_budget(model, masked, density, fixed)
        out = _solve_eps(numels, raw, budget) if raw else {}
        out.update(fixed)
        return {n: out[n] for n in masked}
    n_masked = sum(numels.values())
    if key == "snip":
        return _ratio_from_scores(masked, scores, int(n_masked * density), largest=True)
    # grasp: remove the top int(N*(1-d)) scores, keep the rest
    return _ratio_from_scores(masked, scores, n_masked - int(n_masked * (1 - density)), largest=False)


def _uniform_plus(model: nn.Module, masked: dict[str, nn.Parameter], density: float) -> dict[str, float]:
    """Random_Pruning's uniform_plus (see `layer_densities`); `dense`-pattern layers are charged like the stem."""
    stem, fc = first_conv_name(model), classifier_name(model)
    out = {n: 1.0 for n in masked if n == stem}
    if density >= 0.2:
        out.update({n: density for n in masked if n != stem})
        return {n: out[n] for n in masked}
    n_full = sum(p.numel() for p in maskable(model).values())
    fixed = {fc: 0.2} if fc in masked else {}
    budget = _fixed_budget(model, masked, density, {**fixed, **{n: 1.0 for n in out}})
    p = budget / n_full  # the reference's divisor: the full count, not the remaining one
    if p <= 0:
        raise ValueError(f"density {density} is too low for uniform_plus: the dense stem and the 0.2 classifier "
                         "already take the whole budget")
    out.update(fixed)
    out.update({n: p for n in masked if n not in out})
    return {n: out[n] for n in masked}


def overall_density(params: dict[str, torch.Tensor], densities: dict[str, float]) -> float:
    """Expected density over `params`: sum(d_l * N_l) / sum(N_l)."""
    total = sum(p.numel() for p in params.values())
    return sum(densities[n] * p.numel() for n, p in params.items()) / total


# ---------------------------------------------------------------------------------------------------------
# saliency scores (SNIP, GraSP) for the ratio rules
# ---------------------------------------------------------------------------------------------------------


def _scoring_copy(model: nn.Module, names: Sequence[str]) -> tuple[nn.Module, list[nn.Parameter]]:
    """A train-mode deep copy of `model` without grads, and its parameters called `names`."""
    clone = copy.deepcopy(model)
    clone.train()
    params = dict(clone.named_parameters())
    missing = [n for n in names if n not in params]
    if missing:
        raise ValueError(f"no parameter named {missing[0]!r} in the model")
    for p in clone.parameters():
        p.grad = None
    chosen = [params[n] for n in names]
    for p in chosen:
        p.requires_grad_(True)
    return clone, chosen


def _on_device(clone: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    device = next(clone.parameters()).device
    return x.to(device), y.to(device)


def snip_scores(model: nn.Module, x: torch.Tensor, y: torch.Tensor, names: Sequence[str], *,
                reinit: bool = True, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """SNIP saliency |w * dL/dw| of each weight in `names`, from one batch (cross-entropy on the logits).

    Computed on a deep copy in train mode (batch-statistics BN, as the original), so the live model's weights,
    grads, BN running stats and mode are untouched. `reinit=True` follows Random_Pruning CIFAR (what the paper
    ran): every Conv/Linear weight of the copy is Xavier-normal re-initialised before scoring (with
    `generator`, else the global RNG), and the scores are taken at those weights. The notes flag this as an
    inconsistency with the ImageNet code (which scores the real init), not as a crash, so it is kept as the
    default; `reinit=False` scores the model's own weights. The original's normalisation by the sum is
    omitted (it does not change any ranking).
    """
    clone, params = _scoring_copy(model, names)
    if reinit:
        with torch.no_grad():
            for p in _weight_params(clone, (_CONV, nn.Linear)).values():
                nn.init.xavier_normal_(p, generator=generator)
    x, y = _on_device(clone, x, y)
    loss = F.cross_entropy(clone(x), y)
    grads = torch.autograd.grad(loss, params)
    return {n: (p.detach() * g).abs() for n, p, g in zip(names, params, grads)}


def grasp_scores(model: nn.Module, x: torch.Tensor, y: torch.Tensor, names: Sequence[str],
                 T: float = 200.0) -> dict[str, torch.Tensor]:
    """GraSP score -w * (H g) of each weight in `names` (Wang et al. 2020, as Random_Pruning CIFAR runs it).

    On a train-mode deep copy with the model's own weights: the batch is split into two halves (first N//2,
    rest); g = sum over halves of the gradient of CE(logits / T, y); then H g = sum over halves of
    d(g . grad_half)/dw with create_graph (g held constant). The Hessian is over the `names` weights only.
    The live model is untouched. The original's hard-coded 10 classes is gone: the class count is that of the
    logits (labels outside it raise ValueError). `grasp_batch` builds the class-balanced batch the original
    fetched (25 per class). The normalisation by |sum| + 1e-10 is omitted (a positive factor, same ranking).
    """
    clone, params = _scoring_copy(model, names)
    x, y = _on_device(clone, x, y)
    if x.shape[0] < 2:
        raise ValueError("grasp_scores needs a batch of at least 2 samples (it is split into two halves)")
    halves = [(x[: x.shape[0] // 2], y[: x.shape[0] // 2]), (x[x.shape[0] // 2:], y[x.shape[0] // 2:])]

    def half_loss(xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        logits = clone(xb)
        if yb.numel() and (int(yb.min()) < 0 or int(yb.max()) >= logits.shape[1]):
            raise ValueError(f"labels must be in [0, {logits.shape[1]}) for a {logits.shape[1]}-class model")
        return F.cross_entropy(logits / T, yb)

    g = [torch.zeros_like(p) for p in params]
    for xb, yb in halves:
        for acc, gr in zip(g, torch.autograd.grad(half_loss(xb, yb), params)):
            acc.add_(gr)
    hg = [torch.zeros_like(p) for p in params]
    for xb, yb in halves:
        grad_f = torch.autograd.grad(half_loss(xb, yb), params, create_graph=True)
        z = sum((gi * fi).sum() for gi, fi in zip(g, grad_f))
        for acc, h in zip(hg, torch.autograd.grad(z, params)):
            acc.add_(h)
    return {n: -(p.detach() * h) for n, p, h in zip(names, params, hg)}


def grasp_batch(batches: Iterable[tuple[torch.Tensor, torch.Tensor]], num_classes: int,
                samples_per_class: int = 25) -> tuple[torch.Tensor, torch.Tensor]:
    """The GraSP scoring batch: the first `samples_per_class` samples of each class from `batches`, concatenated
    class by class (as the original, so the two halves hold different classes).

    `num_classes` is the model's class count: the original hard-coded 10, which broke CIFAR-100 and ImageNet.
    Stops reading once every class is full; classes that never fill keep what was found.
    """
    xs: list[list[torch.Tensor]] = [[] for _ in range(num_classes)]
    for xb, yb in batches:
        for xi, yi in zip(xb, yb):
            c = int(yi)
            if not 0 <= c < num_classes:
                raise ValueError(f"label {c} outside [0, {num_classes})")
            if len(xs[c]) < samples_per_class:
                xs[c].append(xi)
        if all(len(v) == samples_per_class for v in xs):
            break
    x = torch.stack([xi for per_class in xs for xi in per_class])
    y = torch.tensor([c for c, per_class in enumerate(xs) for _ in per_class], dtype=torch.long)
    return x, y


# ---------------------------------------------------------------------------------------------------------
# masks
# ---------------------------------------------------------------------------------------------------------


def _top_count(values: torch.Tensor, k: int) -> torch.Tensor:
    """Bool flags of exactly `k` largest entries of 1-D `values`; ties at the cut go to the earliest positions."""
    n = values.numel()
    k = max(0, min(int(k), n))
    if k == 0:
        return torch.zeros(n, dtype=torch.bool, device=values.device)
    if k == n:
        return torch.ones(n, dtype=torch.bool, device=values.device)
    cut = torch.topk(values, k, sorted=False).values.min()
    keep = values > cut
    at_cut = torch.nonzero(values == cut).flatten()
    keep[at_cut[: k - int(keep.sum())]] = True
    return keep


def draw_masks(params: dict[str, torch.Tensor], densities: dict[str, float], generator: torch.Generator,
               exact: bool = True) -> dict[str, torch.Tensor]:
    """Random masks (bool, shape and device of each weight) at each layer's density, in `params` order.

    `exact=True`: exactly round(d * numel) ones at uniformly random positions (a randperm), so realised
    densities equal the targets, which the notes recommend. `exact=False`: i.i.d. Bernoulli(d) (rand < d) as
    the original code, so counts hold only in expectation. Draws use `generator` (on its own device, then moved
    to the weight's), so the same seed gives the same masks. Density 1.0 gives all ones and draws nothing.
    """
    masks = {}
    for name, w in params.items():
        if name not in densities:
            raise KeyError(f"no density for {name!r}")
        d = float(densities[name])
        if not 0 <= d <= 1:
            raise ValueError(f"density of {name!r} must be in [0, 1], got {d}")
        n = w.numel()
        if d >= 1:
            masks[name] = torch.ones(w.shape, dtype=torch.bool, device=w.device)
            continue
        if exact:
            flat = torch.zeros(n, dtype=torch.bool, device=generator.device)
            flat[torch.randperm(n, generator=generator, device=generator.device)[: round(d * n)]] = True
            mask = flat.view(w.shape)
        else:
            mask = torch.rand(w.shape, generator=generator, device=generator.device) < d
        masks[name] = mask.to(w.device)
    return masks


def magnitude_masks(params: dict[str, torch.Tensor], density: float, scope: str = "global") -> dict[str, torch.Tensor]:
    """Keep the largest |w|: `global` keeps exactly int(N * density) over all layers with one threshold
    (FreeTickets `pruning` init, Sup-tickets prune_global / superposition pruning); `uniform` keeps
    int(numel * density) in every layer (Sup-tickets prune_uniform).

    Ties at the threshold go to the earliest positions (layer order, then flat index) so the count is exact;
    the originals kept every |w| >= threshold, which can keep extra weights (or all zeros).
    """
    if not 0 <= density <= 1:
        raise ValueError(f"density must be in [0, 1], got {density!r}")
    if scope not in ("global", "uniform"):
        raise ValueError(f"unknown magnitude scope {scope!r}; choose from global, uniform")
    if not params:
        return {}
    if scope == "uniform":
        return {n: _top_count(w.detach().abs().reshape(-1), int(w.numel() * density)).view(w.shape)
                for n, w in params.items()}
    device = next(iter(params.values())).device
    flat = torch.cat([w.detach().abs().reshape(-1).to(device) for w in params.values()])
    keep = _top_count(flat, int(flat.numel() * density))
    masks, start = {}, 0
    for n, w in params.items():
        masks[n] = keep[start:start + w.numel()].view(w.shape).to(w.device)
        start += w.numel()
    return masks


# ---------------------------------------------------------------------------------------------------------
# the starting masks of sparse training
# ---------------------------------------------------------------------------------------------------------


def initial_masks(model: nn.Module, names: Sequence[str], cfg: SparseConfig, density: float,
                  generator: torch.Generator, loader: BatchLoader | None = None,
                  num_classes: int = 0) -> dict[str, torch.Tensor]:
    """The masks sparse training starts from (bool, on the CPU) over the weights `names`, by `cfg.init`: magnitude
    pruning of the weights (pruning / prune_global / prune_uniform), SNIP's own top scores (snip_masks), or a
    layer-wise density rule drawn at random with `generator` (`cfg.draw`); SNIP and GraSP score a batch of
    `loader`'s epoch 0 (see `initial_densities`)."""
    params = dict(model.named_parameters())
    cpu = {n: params[n].detach().float().cpu() for n in names}
    if cfg.init in MAGNITUDE_INITS:
        return magnitude_masks(cpu, density, MAGNITUDE_INITS[cfg.init])
    if cfg.init in SCORE_INITS:
        return score_masks(_snip_scores(model, names, cfg, generator, loader), density)
    dens = initial_densities(model, names, cfg, density, generator, loader, num_classes)
    return draw_masks(cpu, dens, generator, exact=cfg.draw == "exact")


def initial_densities(model: nn.Module, names: Sequence[str], cfg: SparseConfig, density: float,
                      generator: torch.Generator | None = None, loader: BatchLoader | None = None,
                      num_classes: int = 0) -> dict[str, float]:
    """Each masked layer's expected density under a layer-wise rule at `density`. SNIP scores one augmented batch
    of `cfg.score_batch` training images (`score_batch`), re-initialising its copy with `generator` (a copy of it on
    the batch's device when that is not the CPU); GraSP scores 25 images of every class (`grasp_batch`, without
    the original's 10-class limit)."""
    scores = None
    init = SCORE_INITS.get(cfg.init, cfg.init)  # snip_masks: the same layer-wise densities as SNIP's ratios
    if init == "snip":
        scores = _snip_scores(model, names, cfg, generator, loader)
    elif init == "grasp":
        if loader is None:
            raise ValueError("init 'grasp' scores a batch of training data: it needs the training loader")
        loader.set_epoch(0)
        x, y = grasp_batch(loader, num_classes)
        scores = {n: s.cpu() for n, s in grasp_scores(model, x, y, names).items()}
    return layer_densities(model, init, density, dense=cfg.dense_layers, erk_power_scale=cfg.erk_power_scale,
                           fc_density=cfg.fc_density, scores=scores)


def _snip_scores(model: nn.Module, names: Sequence[str], cfg: SparseConfig, generator: torch.Generator | None,
                 loader: BatchLoader | None) -> dict[str, torch.Tensor]:
    """SNIP scores (on the CPU) of one augmented batch of `cfg.score_batch` training images, the scoring copy
    re-initialised with `generator` (a copy of it on the batch's device when that is not the CPU)."""
    if loader is None:
        raise ValueError(f"init '{cfg.init}' scores a batch of training data: it needs the training loader")
    x, y = score_batch(loader, cfg.score_batch)
    gen = generator
    if x.device.type != "cpu" and generator is not None:
        gen = torch.Generator(x.device).manual_seed(generator.initial_seed())
    return {n: s.cpu() for n, s in snip_scores(model, x, y, names, generator=gen).items()}


def score_masks(scores: dict[str, torch.Tensor], density: float) -> dict[str, torch.Tensor]:
    """SNIP's own masks: exactly int(N * density) of the largest scores over all layers jointly, positions
    included (ties to the earliest positions); SNIP keeps every score >= the cut, which can keep a few more."""
    if not 0 < density <= 1:
        raise ValueError(f"density must be in (0, 1], got {density!r}")
    flat = torch.cat([s.detach().reshape(-1).float() for s in scores.values()])
    keep = _top_count(flat, int(flat.numel() * density))
    masks, start = {}, 0
    for n, s in scores.items():
        masks[n] = keep[start:start + s.numel()].view(s.shape)
        start += s.numel()
    return masks


def score_batch(loader: BatchLoader, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first `size` images of `loader`'s epoch 0 (augmented as training sees them), for SNIP scores."""
    loader.set_epoch(0)
    xs, ys, n = [], [], 0
    for x, y in loader:
        xs.append(x)
        ys.append(y)
        n += y.numel()
        if n >= size:
            break
    return torch.cat(xs)[:size], torch.cat(ys)[:size]
