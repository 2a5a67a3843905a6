"""`plane` (dnn-mode-connectivity `plane.py`): loss and error over the plane through the curve's two endpoints
and its middle bend.

    w0, w1, w2 = first, middle and last control points (flat weight vectors)
    u = (w2 - w0) / dx, dx = ||w2 - w0||;  v = the part of w1 - w0 orthogonal to u, / dy, dy its norm
    grid: alpha in linspace(-m, 1 + m, G), beta in linspace(-m, 1 + m, G)   (G = plane_grid, m = plane_margin)
    at p = w0 + alpha dx u + beta dy v:  BN re-estimated, then train / test loss, NLL and error
The control points and the curve (61 points) are stored in the plane's coordinates for the figure.

Differences from the original: any num_bends works (the middle bend is index n // 2; the original assumed 3
bends), and `loss` adds 0.5 * wd * ||p||^2, the curve-training objective (plane.py added 0.5 * wd * the sum of the
parameters' unsquared norms). NLL and error are unaffected. The BN pass and the train numbers use the training data
of `[analysis] curve_train_data`, by default augmented in stored order as plane.py's loader (a fixed seeded draw;
see engine.analyses.curve).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from engine.analyses.context import AnalysisContext, register_analysis
from engine.analyses.curve import SERIES, PointEval, load_curve
from engine.store import write_group


def plane_basis(w0: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float,
                                                                                 float]:
    """(u, v, dx, dy): the orthonormal basis of the plane through w0, w1, w2 by Gram-Schmidt, with the scales."""
    u = (w2 - w0).double()
    dx = float(u.norm())
    u = u / dx
    v = (w1 - w0).double()
    v = v - (v @ u) * u
    dy = float(v.norm())
    v = v / dy
    return u, v, dx, dy


@register_analysis("plane")
def run(ctx: AnalysisContext) -> dict[str, Any]:
    """Write /plane: alphas, betas, grid [G, G, 2], the series [G, G], bend and curve coordinates."""
    net, stage = load_curve(ctx)
    p = stage.params
    g, m = p.plane_grid, float(p.plane_margin)
    n = net.num_bends
    bends = net.bends().double()
    w0, w1, w2 = bends[0], bends[n // 2], bends[n - 1]
    u, v, dx, dy = plane_basis(w0, w1, w2)
    if dy == 0.0:
        raise ValueError("the middle bend lies on the segment between the endpoints; the plane is undefined")

    def coords(w: torch.Tensor) -> list[float]:
        d = w.double() - w0
        return [float(d @ u), float(d @ v)]

    with torch.no_grad():
        ts = np.linspace(0.0, 1.0, 61)
        curve_xy = np.array([coords(net.weights(float(t))) for t in ts])
    bend_xy = np.array([coords(bends[k]) for k in range(n)])
    alphas = np.linspace(-m, 1 + m, g)
    betas = np.linspace(-m, 1 + m, g)
    ev = PointEval(net, ctx, stage.optimizer.weight_decay)
    series = {k: np.zeros((g, g)) for k in SERIES}
    grid = np.zeros((g, g, 2))
    for i, a in enumerate(alphas):
        for j, b in enumerate(betas):
            point = (w0 + a * dx * u + b * dy * v).float()
            res = ev(point)
            for k in SERIES:
                series[k][i, j] = res[k]
            grid[i, j] = (a * dx, b * dy)
    write_group(ctx.h5, "plane", {"alphas": alphas, "betas": betas, "grid": grid, "bend_coordinates": bend_xy,
                                  "curve_coordinates": curve_xy, "t": ts, **series},
                attrs={"stage": stage.name, "dx": dx, "dy": dy, "margin": m, "grid_points": g,
                       "middle_bend": n // 2, "weight_decay": stage.optimizer.weight_decay,
                       "layout": "series[i, j] at alpha_i (along the endpoints' segment), beta_j",
                       "units": "loss and nll in nats (loss = nll + 0.5*wd*||w||^2), error in percent"},
                meta=ctx.meta)
    return {"grid_points": g, "dx": dx, "dy": dy, "train_loss_min": float(series["train_loss"].min()),
            "test_error_min": float(series["test_error"].min())}
