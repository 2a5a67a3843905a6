"""`corruption`: accuracy, NLL and ECE of the ensemble (and of each member) on corrupted test images, the
FreeTickets paper's cAcc / cNLL / cECE.

The original scores CIFAR-10-C / CIFAR-100-C in `ensemble_calibration_corruption` (ensemble_freetickets.py:399-450,
its call commented out at :722): every `<corruption>.npy` of the release folder but labels.npy, sorted, at
severities 1-5 (10,000 images each, datasets.py:167-176), normalised as the training data; the ensemble is the
mean of the members' softmax. Its c-ECE and c-NLL are over all corruptions and severities pooled into one set
(:437-450). Here every (corruption, severity) set is scored on its own, and the headline numbers are both the
mean over the sets (as uncertainty-baselines averages its corrupted metrics) and, for ECE, the original's pooled
value; for accuracy and NLL the two agree, as every set has the same size. ECE bins as `calibration`
(`[analysis].bins`, `ece_binning`).

Data: a `cifar10` / `cifar100` recipe reads the Hendrycks & Dietterich release from the data root (`REPRO_DATA`
or `[data].root`): `CIFAR-10-C/` (or `CIFAR-100-C/`) holding `<corruption>.npy` uint8 [50000, 32, 32, 3] (five
severities of 10,000 in order) and `labels.npy`; `[data].test_subset` cuts each set to its first images. Digits
and synthetic data (the smoke profile, the tests) get GENERATED: three simple seeded corruptions of the first 64
images of the run's own test split at three severities, so the analysis runs end to end without the release.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engine.analyses.calibration import reliability
from engine.analyses.context import PREFLIGHT, AnalysisContext, register_analysis
from engine.analyses.ensemble import nll
from engine.config import Recipe
from engine.data import DataError, Split, data_root, make_loader
from engine.evaluate import predict_probs
from engine.store import groups, read_group, write_group

RELEASES: dict[str, tuple[str, str]] = {
    "cifar10": ("CIFAR-10-C", "https://zenodo.org/records/2535967"),
    "cifar100": ("CIFAR-100-C", "https://zenodo.org/records/3555552"),
}
"""Training dataset -> (release folder under the data root, where to download it)."""
RELEASE_SEVERITIES = 5


# ---- generated corruptions (smoke and tests) --------------------------------------------------------------


def _to_uint8(x: torch.Tensor) -> torch.Tensor:
    return x.round().clamp(0, 255).to(torch.uint8)


def gaussian_noise(x: torch.Tensor, sigma: float, seed: int) -> torch.Tensor:
    """uint8 images plus N(0, (255 sigma)^2) noise drawn from torch.Generator(seed) in x's shape, rounded, clipped."""
    g = torch.Generator().manual_seed(seed)
    return _to_uint8(x.to(torch.float32) + torch.randn(x.shape, generator=g) * (255.0 * sigma))


def contrast(x: torch.Tensor, c: float, seed: int = 0) -> torch.Tensor:
    """Each image's channels pulled towards their own mean: (x - mean) * c + mean (Hendrycks' contrast)."""
    xf = x.to(torch.float32)
    mean = xf.mean(dim=(-2, -1), keepdim=True)
    return _to_uint8((xf - mean) * c + mean)


def brightness(x: torch.Tensor, c: float, seed: int = 0) -> torch.Tensor:
    """255 c added to every pixel, clipped (Hendrycks adds c to HSV value; the same on grey images)."""
    return _to_uint8(x.to(torch.float32) + 255.0 * c)


Corrupt = Callable[[torch.Tensor, float, int], torch.Tensor]
GENERATED: dict[str, tuple[Corrupt, tuple[float, ...]]] = {
    "gaussian_noise": (gaussian_noise, (0.04, 0.08, 0.16)),
    "contrast": (contrast, (0.5, 0.3, 0.15)),
    "brightness": (brightness, (0.1, 0.3, 0.5)),
}
"""The smoke stand-in: name -> (function, its parameter at severities 1, 2, 3)."""
GENERATED_IMAGES = 64
"""The generated sets corrupt the first 64 test images only: 9 sets of them cost a smoke run about 3 predict passes."""


# ---- the corrupted sets -----------------------------------------------------------------------------------


def release_folder(recipe: Recipe) -> Path:
    """The release folder of the recipe's dataset under the data root, checked to be there (one-line DataError)."""
    d = recipe.data
    name, url = RELEASES[d.dataset]
    folder = data_root(d.root or None) / name
    if not (folder / "labels.npy").is_file():
        raise DataError(f"corruption: {name} not found in {folder} (no labels.npy): download {name} from {url} "
                        f"(Hendrycks & Dietterich) and extract it so that {folder}/<corruption>.npy and "
                        f"{folder}/labels.npy exist, or set REPRO_DATA / [data].root to the folder above it")
    return folder


@PREFLIGHT.register("corruption")
def check(recipe: Recipe) -> None:
    """Before training: a CIFAR recipe's release folder is there (the generated sets need nothing)."""
    if recipe.data.dataset in RELEASES:
        release_files(release_folder(recipe))


def release_files(folder: Path) -> list[Path]:
    """Every <corruption>.npy of the folder but labels.npy, sorted by name (the original's file_list.sort())."""
    files = sorted(p for p in folder.glob("*.npy") if p.name != "labels.npy")
    if not files:
        raise DataError(f"corruption: {folder} holds labels.npy but no <corruption>.npy file")
    return files


def _load_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DataError(f"corruption: cannot read {path} ({' '.join(str(exc).split())})") from exc


CorruptedSets = tuple[list[str], list[int], str, Callable[[], Iterator[Split]]]


def release_sets(recipe: Recipe, num_classes: int, image_shape: tuple[int, ...]) -> CorruptedSets:
    """(corruptions, severities, description, a generator of the sets in corruption-major order) of the release;
    every file's shape is checked before any image is scored."""
    folder = release_folder(recipe)
    files = release_files(folder)
    labels = np.asarray(_load_npy(folder / "labels.npy"))
    total = len(labels)
    if labels.ndim != 1 or total == 0 or total % RELEASE_SEVERITIES:
        raise DataError(f"corruption: {folder}/labels.npy has shape {labels.shape}, not [{RELEASE_SEVERITIES} x n]")
    if labels.min() < 0 or labels.max() >= num_classes:
        raise DataError(f"corruption: {folder}/labels.npy has labels outside 0..{num_classes - 1}")
    h, w = image_shape[1], image_shape[2]
    for f in files:
        a = _load_npy(f)
        if a.shape != (total, h, w, 3) or a.dtype != np.uint8:
            raise DataError(f"corruption: {f} holds {a.dtype} {list(a.shape)}, not uint8 [{total}, {h}, {w}, 3]")
    n = total // RELEASE_SEVERITIES
    k = min(recipe.data.test_subset or n, n)

    def sets() -> Iterator[Split]:
        for f in files:
            a = _load_npy(f)
            for s in range(RELEASE_SEVERITIES):
                x = torch.from_numpy(np.array(a[s * n:s * n + k])).permute(0, 3, 1, 2).contiguous()  # read, copied
                y = torch.from_numpy(labels[s * n:s * n + k].astype(np.int64))
                yield Split(x, y)

    return [f.stem for f in files], list(range(1, RELEASE_SEVERITIES + 1)), f"{folder} ({k} images a set)", sets


def generated_sets(test: Split, seed: int) -> CorruptedSets:
    """GENERATED applied to the first GENERATED_IMAGES of a test split (the smoke stand-in for the release)."""
    test = test.subset(GENERATED_IMAGES)
    names = list(GENERATED)
    severities = len(next(iter(GENERATED.values()))[1])

    def sets() -> Iterator[Split]:
        for k, name in enumerate(names):
            fn, levels = GENERATED[name]
            for s, level in enumerate(levels):
                yield Split(fn(test.x, level, 1000 * seed + 10 * k + s), test.y)

    return names, list(range(1, severities + 1)), f"generated from the test split ({len(test)} images a set)", sets


def corrupted_sets(ctx: AnalysisContext) -> CorruptedSets:
    """The release for CIFAR-10/100, generated corruptions for digits and synthetic data, else an error."""
    d = ctx.recipe.data
    test = ctx.data.test
    if d.dataset in RELEASES:
        return release_sets(ctx.recipe, ctx.data.num_classes, tuple(test.image_shape))
    if (d.dataset in ("digits", "synthetic") or d.dataset.startswith("synthetic-")) and isinstance(test, Split):
        return generated_sets(test, ctx.recipe.run.seed)
    raise DataError(f"corruption: no corrupted release for dataset '{d.dataset}' (CIFAR-10-C and CIFAR-100-C only)")


# ---- scores -----------------------------------------------------------------------------------------------


def bin_sums(r: dict[str, Any]) -> np.ndarray:
    """[3, B]: per-bin count, summed confidence and summed correctness of one `reliability` result; sums over
    several sets give the pooled ECE = sum_b |conf_b - correct_b| / N."""
    count = r["count"].numpy().astype(np.float64)
    return np.stack([count, r["confidence"].numpy() * count, r["accuracy"].numpy() * count])


def score_set(probs: torch.Tensor, labels: torch.Tensor, n_bins: int, binning: str) -> dict[str, np.ndarray]:
    """Accuracy (%), NLL and ECE (fraction) of each member of probs [M, N, C] and then of their mean (rows
    M + 1), with the bin sums [M + 1, 3, B] for pooling."""
    models = [*probs.unbind(0), probs.mean(0)]
    acc = np.array([float((p.argmax(-1) == labels).to(torch.float64).mean()) * 100 for p in models])
    nlls = np.array([nll(p, labels) for p in models])
    rel = [reliability(p, labels, n_bins, binning) for p in models]  # type: ignore[arg-type]
    eces = np.array([r["ece"] for r in rel])
    sums = np.stack([bin_sums(r) for r in rel])
    return {"acc": acc, "nll": nlls, "ece": eces, "bin_sums": sums, "n": np.array(len(labels))}


def pooled_ece(sums: np.ndarray, n: int) -> np.ndarray:
    """ECE of the pooled sets from summed bin sums [..., 3, B] over n points in all."""
    return np.abs(sums[..., 1, :] - sums[..., 2, :]).sum(-1) / max(n, 1)


@register_analysis("corruption")
def run(ctx: AnalysisContext) -> dict[str, Any]:
    """Write /corruption: each member's and the ensemble's accuracy, NLL and ECE on every (corruption, severity)."""
    names, severities, source, sets = corrupted_sets(ctx)
    opts, d = ctx.recipe.analysis, ctx.recipe.data
    members = ctx.members()
    models = [ctx.load_member(m) for m in members]
    rows = len(models) + 1
    acc, nlls, eces = (np.zeros((rows, len(names), len(severities))) for _ in range(3))
    sums, total = 0.0, 0
    for i, split in enumerate(sets()):
        k, s = divmod(i, len(severities))
        loader = make_loader(split, d.eval_batch_size, device=ctx.device, train=False, normalize=d.normalize)
        probs = torch.stack([predict_probs(m, loader, ctx.amp) for m in models])
        r = score_set(probs, split.y, opts.bins, opts.ece_binning)
        acc[:, k, s], nlls[:, k, s], eces[:, k, s] = r["acc"], r["nll"], r["ece"]
        sums, total = sums + r["bin_sums"], total + int(r["n"])
    pooled = pooled_ece(np.asarray(sums), total)
    mean = {key: v.mean(axis=(1, 2)) for key, v in (("acc", acc), ("nll", nlls), ("ece", eces))}
    write_group(ctx.h5, "corruption", {
        "corruptions": names,
        "severities": np.asarray(severities, dtype=np.int64),
        "acc": acc[-1], "nll": nlls[-1], "ece": eces[-1],
        "acc_mean": mean["acc"][-1], "nll_mean": mean["nll"][-1], "ece_mean": mean["ece"][-1],
        "ece_pooled": pooled[-1],
        "member_names": [m["name"] for m in members],
        "member_acc": acc[:-1], "member_nll": nlls[:-1], "member_ece": eces[:-1],
        "member_acc_mean": mean["acc"][:-1], "member_nll_mean": mean["nll"][:-1], "member_ece_mean": mean["ece"][:-1],
        "member_ece_pooled": pooled[:-1],
    }, attrs={"source": source, "images": total, "n_bins": opts.bins, "ece_binning": opts.ece_binning,
              "units": "accuracy in percent, ECE as a fraction, NLL in nats",
              "means": "over corruptions and severities; ece_pooled: one ECE over all sets together (the original's)",
              "ensemble": "mean of the members' softmax"}, meta=ctx.meta)
    return {"corruptions": len(names), "severities": len(severities), "acc": float(mean["acc"][-1]),
            "nll": float(mean["nll"][-1]), "ece": float(mean["ece"][-1]), "ece_pooled": float(pooled[-1])}


def report_metrics(h5: Path) -> dict[str, float]:
    """`repro report`'s numbers from /corruption, of the ensemble: corruption_acc (%), corruption_nll (nats),
    corruption_ece and corruption_ece_pooled (%), each a mean over corruptions and severities but the pooled ECE."""
    if "corruption" not in groups(h5):
        return {}
    g = read_group(h5, "corruption")
    out = {"corruption_acc": float(g["acc_mean"]), "corruption_nll": float(g["nll_mean"]),
           "corruption_ece": 100.0 * float(g["ece_mean"]), "corruption_ece_pooled": 100.0 * float(g["ece_pooled"])}
    return {k: v for k, v in out.items() if math.isfinite(v)}
