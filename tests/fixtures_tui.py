"""Fixture recipes and run directories for the TUI tests (and for trying the app by hand:
`python tests/fixtures_tui.py DIR [N]` writes DIR/recipes and DIR/root, plus N extra finished runs)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
from digits_recipes import digits_recipe, write_recipe

TINY = digits_recipe(description="a tiny ResNet on 384 digits images, three epochs",
                     command="python train.py --dataset digits --epochs 3")
SWEEP = dict(TINY, name="tiny_sweep", description="three seeds of tiny", sweep={"run.seed": [1, 2, 3]})
BROKEN = dict(TINY, name="broken", model={"arch": "cifar_resnet_8", "widht": 0.5})
T0 = time.mktime((2026, 1, 1, 10, 0, 0, 0, 0, -1))  # fixture times are local, as status.json's


def iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(t))


def write_recipes(d: Path) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    for raw in (TINY, SWEEP, BROKEN):
        write_recipe(d, raw, f"{raw['name']}.toml")
    return d


def metrics(n: int, stage: str = "train", density: float | None = 0.2) -> list[dict]:
    out = []
    for e in range(1, n + 1):
        rec = {"stage": stage, "epoch": e, "step": 6 * e, "lr": 0.1 * (1 - (e - 1) / n), "train_loss": 2.3 / e,
               "train_acc": 100 - 80 / e, "test_loss": 2.4 / e, "test_acc": 95 - 70 / e, "img_s": 500.0}
        if density is not None:
            rec["density"] = density
        out.append(rec)
    return out


def write_run(root: Path, recipe: str, run_id: str, status: dict | str | None, recs: list[dict] = (),
              log: str = "", toml: bool = True) -> Path:
    d = root / recipe / run_id
    d.mkdir(parents=True, exist_ok=True)
    if toml:
        write_recipe(d, dict(TINY, name=recipe), "recipe.toml")
    if status is not None:
        (d / "status.json").write_text(status if isinstance(status, str) else json.dumps(status))
    if recs:
        (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    if log:
        (d / "log.txt").write_text(log)
    return d


def write_analysis(run: Path) -> None:
    from engine.store import write_group

    h5 = run / "analysis.h5"
    meta = {"recipe": run.parent.name, "run_id": run.name}
    rng = np.random.default_rng(0)
    names = ["ticket1", "ticket2", "ticket3"]
    probs = rng.dirichlet(np.ones(10), size=(3, 40))
    labels = rng.integers(0, 10, 40)
    write_group(h5, "predict", {"labels": labels, "member_probs": probs, "member_names": names,
                                "member_acc": np.array([91.5, 92.25, 90.75]),
                                "member_nll": np.array([0.31, 0.29, 0.33]), "ensemble_acc": 93.5,
                                "ensemble_nll": 0.25}, meta=meta)
    dis = np.array([[0.0, 0.08, 0.11], [0.08, 0.0, 0.09], [0.11, 0.09, 0.0]])
    write_group(h5, "disagreement", {"matrix": dis, "mean": 0.0933, "member_names": names}, meta=meta)
    write_group(h5, "kd", {"kl": dis * 2.5, "mean": 0.233, "member_names": names}, meta=meta)
    edges = np.linspace(0, 1, 11)
    write_group(h5, "calibration", {"ece": np.array([0.031, 0.028, 0.035, 0.019]), "bin_edges": edges,
                                    "bin_confidence": edges[:-1] + 0.05,
                                    "bin_accuracy": np.clip(edges[:-1] + 0.02, 0, 1),
                                    "bin_count": np.array([0, 0, 1, 2, 3, 4, 5, 6, 9, 10]), "member_names": names},
                attrs={"n_bins": 10}, meta=meta)
    emb = np.concatenate([np.stack([np.arange(4) + 3 * m, np.sin(np.arange(4)) + m], 1) for m in range(3)])
    write_group(h5, "tsne", {"embedding": emb, "member": np.repeat(np.arange(3), 4), "step": np.tile(np.arange(4), 3),
                             "labels": names}, meta=meta)
    write_group(h5, "mask_overlap", {"distance": dis * 3, "labels": names}, attrs={"kind": "weight"}, meta=meta)
    t = np.linspace(0, 1, 11)
    write_group(h5, "curve", {"t": t, "train_loss": 0.1 + np.sin(np.pi * t), "train_error": 1 + 20 * np.sin(np.pi * t),
                              "test_loss": 0.3 + np.sin(np.pi * t), "test_error": 7 + 25 * np.sin(np.pi * t),
                              "test_nll": 0.3 + np.sin(np.pi * t)}, meta=meta)
    write_group(h5, "earlybird", {"ratios": np.array([0.3, 0.5, 0.7]), "eb_epoch": np.array([12, 15, 21]),
                                  "distance": np.exp(-np.arange(20)[None, :] / np.array([[4.0], [6.0], [8.0]]))},
                meta=meta)


def write_more_analyses(run: Path) -> None:
    """The groups write_analysis leaves out, in the layouts engine.analyses writes them: /plane (a 5 x 5 grid),
    /bn_eval (two networks) and an Early-Bird /mask_overlap (channel masks over 6 epochs at two ratios)."""
    from engine.store import write_group

    h5 = run / "analysis.h5"
    meta = {"recipe": run.parent.name, "run_id": run.name}
    series = ("train_loss", "train_nll", "train_error", "test_loss", "test_nll", "test_error")
    ab = np.linspace(-0.2, 1.2, 5)
    grid = np.stack(np.meshgrid(ab * 3.0, ab * 2.0, indexing="ij"), -1)
    bowl = 0.05 + (grid[..., 0] - 1.5) ** 2 + grid[..., 1] ** 2
    write_group(h5, "plane", {"alphas": ab, "betas": ab, "grid": grid,
                              "bend_coordinates": np.array([[0.0, 0.0], [1.4, 2.0], [3.0, 0.0]]),
                              "curve_coordinates": np.stack([np.linspace(0, 3, 7), np.sin(np.linspace(0, np.pi, 7))],
                                                            1), "t": np.linspace(0, 1, 7),
                              **{k: bowl * (10 if "error" in k else 1) for k in series}},
                attrs={"middle_bend": 1, "grid_points": 5}, meta=meta)
    write_group(h5, "bn_eval", {"member_names": ["endpoint1", "endpoint2"],
                                **{k: np.array([0.5, 0.7]) * (10 if "error" in k else 1) for k in series}},
                attrs={"weight_decay": 3e-4, "train_data": "the training split as stored"}, meta=meta)
    k = 6
    scale = np.abs(np.arange(k)[:, None] - np.arange(k)[None, :]) / k
    write_group(h5, "mask_overlap", {"distance": scale, "labels": [str(e) for e in range(k)],
                                     "ratios": np.array([0.3, 0.5]), "distance_by_ratio": np.stack([scale, scale / 2]),
                                     "eb_epoch": np.array([3, -1])},
                attrs={"kind": "channel", "ratio": 0.5, "positions": 64, "threshold": 0.1}, meta=meta)


def write_fixture_runs(root: Path) -> dict[str, Path]:
    """A finished run with every analysis, a running one, a failed one, a corrupt status.json, a half-written
    directory (no status.json), and one from an older version (status.json that is not an object)."""
    runs = {}
    runs["done"] = write_run(root, "tiny", "20260101-100000", {
        "state": "done", "pid": 1, "stage": "analysis:ood", "epoch": 6, "epochs": 6, "progress": 1.0,
        "started": iso(T0), "updated": iso(T0 + 754), "finished": iso(T0 + 754), "device": "cpu", "error": None,
        "smoke": True}, metrics(6), "".join(f"{iso(T0 + 60 * i)} train epoch {i}/6 loss {2.3 / i:.4f}\n"
                                            for i in range(1, 7)) + f"{iso(T0 + 754)} analysis predict ...\n")
    write_analysis(runs["done"])
    runs["running"] = write_run(root, "tiny", "20260102-100000", {
        "state": "running", "pid": 999999, "stage": "train", "epoch": 4, "epochs": 10, "progress": 0.4,
        "started": iso(T0 + 86400), "updated": iso(T0 + 86400 + 300), "device": "cpu", "error": None},
        metrics(4), "".join(f"{iso(T0 + 86400 + 60 * i)} train epoch {i}/10 loss {2.3 / i:.4f}\n" for i in range(1, 5)))
    runs["failed"] = write_run(root, "tiny_sweep", "20260103-100000-seed1", {
        "state": "failed", "pid": 2, "stage": "train", "epoch": 2, "epochs": 3, "progress": 0.66,
        "started": iso(T0 + 2 * 86400), "updated": iso(T0 + 2 * 86400 + 90), "tag": "seed1", "device": "cpu",
        "error": "loss became nan in stage 'train' epoch 3; last good checkpoint kept: train/last.pt"},
        metrics(2, density=None), f"{iso(T0 + 2 * 86400)} run ... on cpu (new)\n")
    runs["corrupt"] = write_run(root, "tiny", "20260104-100000", '{"state": "runn', metrics(1))
    runs["half"] = write_run(root, "tiny", "20260105-100000", None)
    runs["old"] = write_run(root, "tiny_sweep", "20260106-100000", '["running", 0.5]', toml=False)
    return runs


def write_many(root: Path, n: int, recipes: int = 20) -> None:
    """n finished runs spread over `recipes` recipe directories (the 2,000-run test)."""
    recs = "".join(json.dumps(r) + "\n" for r in metrics(5))
    for i in range(n):
        d = root / f"bulk_{i % recipes:02d}" / f"20250101-{i:06d}"
        d.mkdir(parents=True)
        (d / "status.json").write_text(json.dumps({
            "state": "done", "stage": "train", "epoch": 5, "epochs": 5, "progress": 1.0, "started": iso(T0),
            "updated": iso(T0 + 100 + i), "error": None}))
        (d / "metrics.jsonl").write_text(recs)


if __name__ == "__main__":
    base = Path(sys.argv[1])
    write_recipes(base / "recipes")
    write_fixture_runs(base / "root")
    if len(sys.argv) > 2:
        write_many(base / "root", int(sys.argv[2]))
    print(f"REPRO_RECIPES={base / 'recipes'} REPRO_ROOT={base / 'root'}", file=sys.stderr)
