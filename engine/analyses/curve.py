"""`curve` (dnn-mode-connectivity `eval_curve.py`): loss, NLL and error along a trained curve, and along the
straight segment between its endpoints for comparison.

For each of `eval_points` values t in linspace(0, 1) (the curve stage's params; 61 as --num_points):
    w = w(t);  BatchNorm statistics re-estimated at w (update_bn over one pass of the training split)
    nll = mean cross-entropy, error = 100 - accuracy (%), loss = nll + 0.5 * wd * ||w||^2 (wd of the curve stage)
on the training split and on the test split. dl_i = ||w(t_i) - w(t_{i-1})|| gives the curve's length and the
length-weighted average ("int") of each series, sum_i 0.5 (v_{i-1} + v_i) dl_i / sum_i dl_i.

The training split is used without augmentation, for the BatchNorm pass and for the "train" numbers alike (the
original used its augmented training loader for both), so the numbers are deterministic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engine.analyses.context import AnalysisContext
from engine.config import StageConfig
from engine.curves import CurveNet, build_curve, line_coefficients, update_bn
from engine.data import make_loader
from engine.evaluate import evaluate
from engine.io import load_checkpoint
from engine.store import groups, read_group, write_group

SERIES = ("train_loss", "train_nll", "train_error", "test_loss", "test_nll", "test_error")


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
    net = build_curve(m.arch, ctx.data.num_classes, m.width, p.get("curve", "bezier"), p.get("num_bends", 3),
                      p.get("fix_start", True), p.get("fix_end", True))
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
        d, data = self.ctx.recipe.data, self.ctx.data
        self.bn_loader = make_loader(data.train, d.batch_size, device=self.ctx.device, train=False,
                                     normalize=d.normalize)
        self.train_loader = make_loader(data.train, d.eval_batch_size, device=self.ctx.device, train=False,
                                        normalize=d.normalize)
        self.test_loader = self.ctx.eval_loader()

    @torch.no_grad()
    def __call__(self, flat: torch.Tensor) -> dict[str, float]:
        def fwd(x: torch.Tensor) -> torch.Tensor:
            return self.net.run(x, flat)

        update_bn(self.net, self.bn_loader, fwd, self.ctx.amp)
        self.net.eval()
        reg = 0.5 * self.wd * float((flat.double() ** 2).sum())
        out = {}
        for split, loader in (("train", self.train_loader), ("test", self.test_loader)):
            ev = evaluate(fwd, loader, self.ctx.amp)
            out[f"{split}_nll"] = ev["loss"]
            out[f"{split}_loss"] = ev["loss"] + reg
            out[f"{split}_error"] = 100.0 - ev["acc"]
        return out


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


def run(ctx: AnalysisContext) -> dict[str, Any]:
    """Write /curve: t, the series along the curve and (with eval_line) along the segment as line_*."""
    net, stage = load_curve(ctx)
    p = stage.params
    num_points = int(p.get("eval_points", 61))
    ev = PointEval(net, ctx, stage.optimizer.weight_decay)
    ts = np.linspace(0.0, 1.0, num_points)
    with torch.no_grad():
        curve_pts = [net.weights(float(t)) for t in ts]
    data: dict[str, Any] = {"t": ts}
    attrs: dict[str, Any] = {"curve": net.curve, "num_bends": net.num_bends, "stage": stage.name,
                             "weight_decay": stage.optimizer.weight_decay,
                             "train_data": "training split, no augmentation (BN statistics and train metrics)",
                             "units": "loss and nll in nats (loss = nll + 0.5*wd*||w||^2), error in percent"}
    res = evaluate_path(ev, curve_pts)
    data.update(res)
    attrs["length"] = float(res["dl"].sum())
    for k in SERIES:
        for stat, v in summary_stats(res[k], res["dl"]).items():
            attrs[f"{k}_{stat}"] = v
    if p.get("eval_line", True):
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


def report_metrics(h5: Path) -> dict[str, float]:
    """The README-table numbers of a run's /curve for `repro report`: min / max train loss and test error."""
    if "curve" not in groups(h5):
        return {}
    a = read_group(h5, "curve")["_attrs"]
    out = {}
    for k, name in (("train_loss", "train_loss"), ("test_error", "test_error")):
        for stat in ("min", "max"):
            v = a.get(f"{k}_{stat}")
            if v is not None and math.isfinite(float(v)):
                out[f"curve_{stat}_{name}"] = float(v)
    return out
