"""`curve` (dnn-mode-connectivity `eval_curve.py`): loss, NLL and error along a trained curve, and along the
straight segment between its endpoints for comparison.

For each of `eval_points` values t in linspace(0, 1) (the curve stage's params; 61 as --num_points):
    w = w(t);  BatchNorm statistics re-estimated at w (update_bn over one pass of the training split)
    nll = mean cross-entropy, error = 100 - accuracy (%), loss = nll + 0.5 * wd * ||w||^2 (wd of the curve stage)
on the training split and on the test split. dl_i = ||w(t_i) - w(t_{i-1})|| gives the curve's length and the
length-weighted average ("int") of each series, sum_i 0.5 (v_{i-1} + v_i) dl_i / sum_i dl_i.

The training data of the BatchNorm pass and of the "train" numbers is `[analysis] curve_train_data`:
"augmented" (the default) is what eval_curve.py and plane.py used, their training loader with its crop + flip
and shuffling off; the README's curve train losses were measured that way. Here the augmentation is one fixed
draw seeded by run.seed (draw 0 for the BN pass, draw 1 for the train numbers, as the original's two passes saw
two different draws), the same at every point, so a point's numbers depend on its weights alone and a rerun gives
the same numbers. "plain" uses the training split as stored.

`bn_eval` scores the networks a run leaves (its last stage's members) the same way, as eval_curve.py scores the
endpoints at t = 0 and 1: BN statistics re-estimated on the training data, then train loss and test error. The
README's "Endpoints" rows were made so; the trainer's own final numbers use the running statistics instead.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engine.analyses.context import AnalysisContext, register_analysis
from engine.config import StageConfig
from engine.curves import CurveNet, build_curve, line_coefficients, update_bn
from engine.data import Augment, DeviceLoader, Split, make_loader
from engine.evaluate import evaluate
from engine.io import load_checkpoint
from engine.store import groups, read_group, write_group

SERIES = ("train_loss", "train_nll", "train_error", "test_loss", "test_nll", "test_error")


class FixedDrawLoader(DeviceLoader):
    """The training split augmented as in training but in stored order, with the same draw on every pass.

    The original's evaluation loaders are its training loader with `shuffle_train=False`: the training transform
    (random crop and flip) on every image in order. Here image i gets the crop offsets and flip flag at position i
    of the training loader's draw number `draw` (seeded by `seed`), so every pass sees the same images.
    """

    def __init__(self, split: Split, batch_size: int, *, draw: int, **kwargs: Any) -> None:
        super().__init__(split, batch_size, train=True, **kwargs)
        plan = self.plan(draw)
        plan.order = torch.arange(self.num_samples, device=self.device)
        self._fixed = plan

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self._batches(self._fixed)


@dataclass
class TrainData:
    """The training data of a point's evaluation: the BN-pass loader, the "train" numbers' loader, a description."""

    bn: Iterable
    metrics: Iterable
    note: str


def train_data(ctx: AnalysisContext) -> TrainData:
    """The loaders `[analysis] curve_train_data` asks for (image folders have no fixed draw: always plain)."""
    d, split, seed = ctx.recipe.data, ctx.data.train, ctx.recipe.run.seed
    if ctx.recipe.analysis.curve_train_data == "augmented" and isinstance(split, Split):
        aug = Augment(crop_pad=d.crop_pad, pad_mode=d.pad_mode, flip=d.flip)
        common: dict[str, Any] = {"device": ctx.device, "augment": aug, "normalize": d.normalize, "seed": seed}
        return TrainData(FixedDrawLoader(split, d.batch_size, draw=0, **common),
                         FixedDrawLoader(split, d.eval_batch_size, draw=1, **common),
                         f"training split augmented as in training (crop_pad {d.crop_pad} {d.pad_mode}, flip "
                         f"{d.flip}), stored order, fixed draws of seed {seed}: 0 for BN statistics, 1 for train "
                         "numbers")
    return TrainData(make_loader(split, d.batch_size, device=ctx.device, train=False, normalize=d.normalize),
                     make_loader(split, d.eval_batch_size, device=ctx.device, train=False, normalize=d.normalize),
                     "training split as stored, no augmentation (BN statistics and train numbers)")


@torch.no_grad()
def score(model: torch.nn.Module, forward: Callable[[torch.Tensor], torch.Tensor], train: TrainData,
          test_loader: Iterable, amp: Callable, reg: float) -> dict[str, float]:
    """One network as eval_curve.py scores a point: BN statistics re-estimated over `train.bn`, then NLL, loss
    (NLL + `reg`, the weight-decay term) and error (%) on the training data and the test split."""
    update_bn(model, train.bn, forward, amp)
    model.eval()
    out = {}
    for split, loader in (("train", train.metrics), ("test", test_loader)):
        ev = evaluate(forward, loader, amp)
        out[f"{split}_nll"] = ev["loss"]
        out[f"{split}_loss"] = ev["loss"] + reg
        out[f"{split}_error"] = 100.0 - ev["acc"]
    return out


def curve_stage(ctx: AnalysisContext) -> StageConfig:
    """The recipe's (last) curve stage."""
    stages = [s for s in ctx.recipe.stage if s.method == "curve"]
    if not stages:
        raise FileNotFoundError(f"{ctx.run_dir}: recipe '{ctx.recipe.name}' has no curve stage")
    return stages[-1]


def load_curve(ctx: AnalysisContext, stage: StageConfig | None = None) -> tuple[CurveNet, StageConfig]:
    """The trained CurveNet of the run's curve stage, on the device, in eval mode."""
    stage = stage or curve_stage(ctx)
    p = stage.params
    m = ctx.recipe.model
    torch.manual_seed(0)
    net = build_curve(m.arch, ctx.data.num_classes, m.width, p.curve, p.num_bends, p.fix_start,
                      p.fix_end)
    path = ctx.run_dir / stage.name / "final.pt"
    if not path.exists():
        raise FileNotFoundError(f"{ctx.run_dir}: stage '{stage.name}' has not finished (no final.pt)")
    net.load_state_dict(load_checkpoint(path)["model"])
    return net.to(ctx.device).eval(), stage


@dataclass
class PointEval:
    """Evaluates networks at points of weight space: BN re-estimated, then train and test loss / NLL / error."""

    net: CurveNet
    ctx: AnalysisContext
    wd: float

    def __post_init__(self) -> None:
        self.train = train_data(self.ctx)
        self.test_loader = self.ctx.eval_loader()

    def __call__(self, flat: torch.Tensor) -> dict[str, float]:
        def fwd(x: torch.Tensor) -> torch.Tensor:
            return self.net.run(x, flat)

        reg = 0.5 * self.wd * float((flat.double() ** 2).sum())
        return score(self.net, fwd, self.train, self.test_loader, self.ctx.amp, reg)


def summary_stats(values: np.ndarray, dl: np.ndarray) -> dict[str, float]:
    """min, max, mean and the length-weighted trapezoid average ("int") of a series along a path."""
    length = float(dl.sum())
    trapz = float((0.5 * (values[:-1] + values[1:]) * dl[1:]).sum())
    return {"min": float(values.min()), "max": float(values.max()), "avg": float(values.mean()),
            "int": trapz / length if length > 0 else float("nan")}


def evaluate_path(ev: PointEval, points: list[torch.Tensor]) -> dict[str, np.ndarray]:
    """Every series at every point, plus dl (distance from the previous point)."""
    rows = [ev(w) for w in points]
    out = {k: np.array([r[k] for r in rows], dtype=np.float64) for k in SERIES}
    dl = [0.0] + [float((points[i] - points[i - 1]).double().norm()) for i in range(1, len(points))]
    out["dl"] = np.array(dl, dtype=np.float64)
    return out


@register_analysis("curve")
def run(ctx: AnalysisContext) -> dict[str, Any]:
    """Write /curve: t, the series along the curve and (with eval_line) along the segment as line_*."""
    net, stage = load_curve(ctx)
    p = stage.params
    num_points = p.eval_points
    ev = PointEval(net, ctx, stage.optimizer.weight_decay)
    ts = np.linspace(0.0, 1.0, num_points)
    with torch.no_grad():
        curve_pts = [net.weights(float(t)) for t in ts]
    data: dict[str, Any] = {"t": ts}
    attrs: dict[str, Any] = {"curve": net.curve, "num_bends": net.num_bends, "stage": stage.name,
                             "weight_decay": stage.optimizer.weight_decay, "train_data": ev.train.note,
                             "units": "loss and nll in nats (loss = nll + 0.5*wd*||w||^2), error in percent"}
    res = evaluate_path(ev, curve_pts)
    data.update(res)
    attrs["length"] = float(res["dl"].sum())
    for k in SERIES:
        for stat, v in summary_stats(res[k], res["dl"]).items():
            attrs[f"{k}_{stat}"] = v
    if p.eval_line:
        with torch.no_grad():
            line_pts = [net.point(line_coefficients(float(t), net.num_bends)) for t in ts]
        line = evaluate_path(ev, line_pts)
        data.update({f"line_{k}": v for k, v in line.items()})
        attrs["line_length"] = float(line["dl"].sum())
        for k in SERIES:
            for stat, v in summary_stats(line[k], line["dl"]).items():
                attrs[f"line_{k}_{stat}"] = v
    write_group(ctx.h5, "curve", data, attrs=attrs, meta=ctx.meta)
    out = {"points": num_points, "length": attrs["length"]}
    for k in ("train_loss", "test_loss", "test_nll", "test_error"):
        out[f"{k}_min"], out[f"{k}_max"] = attrs[f"{k}_min"], attrs[f"{k}_max"]
        if f"line_{k}_max" in attrs:
            out[f"line_{k}_max"] = attrs[f"line_{k}_max"]
    return out


@register_analysis("bn_eval")
def run_bn_eval(ctx: AnalysisContext) -> dict[str, Any]:
    """Write /bn_eval: each member of the last stage scored after BN re-estimation (`score`), with the last
    stage's weight decay in the loss, as eval_curve.py scores a curve's endpoints."""
    members = ctx.members()
    if not members:
        raise FileNotFoundError(f"{ctx.run_dir}: the last stage leaves no network for bn_eval to score")
    wd = ctx.recipe.stage[-1].optimizer.weight_decay
    train, test_loader = train_data(ctx), ctx.eval_loader()
    rows = []
    for member in members:
        model = ctx.load_member(member)
        reg = 0.5 * wd * sum(float((p.detach().double() ** 2).sum()) for p in model.parameters())
        rows.append(score(model, model, train, test_loader, ctx.amp, reg))
    data: dict[str, Any] = {"member_names": [m["name"] for m in members]}
    data.update({k: np.array([r[k] for r in rows], dtype=np.float64) for k in SERIES})
    write_group(ctx.h5, "bn_eval", data, meta=ctx.meta,
                attrs={"weight_decay": wd, "train_data": train.note,
                       "units": "loss and nll in nats (loss = nll + 0.5*wd*||w||^2), error in percent"})
    return {"members": len(members), "train_loss": float(data["train_loss"].mean()),
            "test_error": float(data["test_error"].mean())}


def report_metrics(h5: Path) -> dict[str, float]:
    """The README-table numbers for `repro report`: a run's /curve min / max train loss and test error along the
    curve (curve_*), along the straight segment (curve_line_*, with eval_line) and over its two ends (curve_ends_*:
    t = 0 and 1, the "Endpoints" rows), and its /bn_eval train loss and test error (the mean over the networks)."""
    names = groups(h5)
    out: dict[str, float] = {}
    if "curve" in names:
        g = read_group(h5, "curve")
        a = g["_attrs"]
        for k in ("train_loss", "test_error"):
            ends = [float(g[k][0]), float(g[k][-1])]
            for stat, pick in (("min", min), ("max", max)):
                for prefix, v in (("curve", a.get(f"{k}_{stat}")), ("curve_line", a.get(f"line_{k}_{stat}")),
                                  ("curve_ends", pick(ends))):
                    if v is not None and math.isfinite(float(v)):
                        out[f"{prefix}_{stat}_{k}"] = float(v)
    if "bn_eval" in names:
        g = read_group(h5, "bn_eval")
        for k in ("train_loss", "test_error"):
            v = float(np.mean(g[k]))
            if math.isfinite(v):
                out[f"bn_{k}"] = v
    return out
