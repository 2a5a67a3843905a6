"""How fast image-folder decoding is (`repro bench --decode`): images/s per CPU core of the Pillow and the
libjpeg-turbo decoder, for training crops and evaluation crops, on generated ImageNet-like JPEGs.

The images are 500x375 by default (ImageNet's commonest size) at JPEG quality 90, textured (waves, blobs and grain)
so that they compress about as poorly as photographs (about 100 KB); they are written once into a temporary folder
and reused. Only crops at least twice 224 px (evaluation: a shorter side of 512 or more) are decoded at a reduced
scale, so larger ``size`` shows what the DCT-domain downscaling adds to the faster decode. One process with
one torch thread decodes them through :class:`engine.data.folders.FolderImages`, the workers' own code, decoders
alternating round by round so that other load hits both alike; the best round of each is kept. With ``workers`` the
real :class:`FolderLoader` is timed too (batches of 32, normalised on the CPU).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from engine.data.decode import DECODERS
from engine.data.folders import FolderImages, FolderLoader, FolderSplit

__all__ = ["DecodeBench", "bench_jpegs", "measure_decode"]

SIZE, QUALITY = (500, 375), 90


@dataclass
class DecodeBench:
    """What `repro bench --decode` reports: images/s per core by decoder and mode, and through the loader."""

    images: int
    size: tuple[int, int]  # width, height
    mean_kb: float
    per_core: dict[str, dict[str, float]]  # decoder -> {"train": img/s, "eval": img/s}
    workers: int = 0
    loader: dict[str, float] | None = None  # decoder -> img/s through FolderLoader with `workers` processes

    def as_dict(self) -> dict:
        """The JSON form (`repro bench --decode --json`)."""
        out = {"images": self.images, "image": f"{self.size[0]}x{self.size[1]}", "quality": QUALITY,
               "mean_kb": self.mean_kb, "image_size": 224, "resize": 256, "per_core_img_s": self.per_core,
               "turbo_speedup": {m: round(self.per_core["turbo"][m] / self.per_core["pillow"][m], 2)
                                 for m in ("train", "eval")}}
        if self.loader is not None:
            out["workers"], out["loader_img_s"] = self.workers, self.loader
        return out


def _texture(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """One HWC uint8 image: a few random waves, soft blobs and per-pixel grain (photograph-like entropy)."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.zeros((height, width, 3), np.float32) + rng.uniform(60, 190, 3)
    for _ in range(4):
        fy, fx = rng.uniform(0.005, 0.12, 2)
        img += rng.uniform(10, 40, 3) * np.sin(fx * x + fy * y + rng.uniform(0, 6.3))[..., None]
    for _ in range(6):
        cy, cx, r = rng.uniform(0, height), rng.uniform(0, width), rng.uniform(0.05, 0.25) * min(width, height)
        img += rng.uniform(-60, 60, 3) * np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * r * r))[..., None]
    img += rng.normal(0, 20, img.shape)
    return img.clip(0, 255).astype(np.uint8)


def bench_jpegs(n: int, size: tuple[int, int] = SIZE, folder: Path | None = None) -> list[str]:
    """Paths of ``n`` generated JPEGs under ``folder`` (default: the temporary directory), written once: a
    temporary sibling renamed into place, so a half-written set is never reused."""
    from PIL import Image  # deferred: Pillow is needed only to write the images

    dest = Path(folder or tempfile.gettempdir()) / f"repro-decode-bench-{n}-{size[0]}x{size[1]}-q{QUALITY}"
    if not dest.is_dir():
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
        try:
            rng = np.random.default_rng(0)
            for i in range(n):
                Image.fromarray(_texture(rng, *size)).save(tmp / f"img{i:05d}.jpg", quality=QUALITY)
            try:
                os.rename(tmp, dest)
            except OSError:  # another process made it first
                if not dest.is_dir():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return sorted(str(p) for p in dest.glob("img*.jpg"))


def _split(files: list[str], decoder: str, workers: int = 0) -> FolderSplit:
    return FolderSplit(Path(files[0]).parent, files, [0] * len(files), ["bench"], workers=workers, decoder=decoder)


def measure_decode(n: int = 200, repeats: int = 3, workers: int = 0, size: tuple[int, int] = SIZE,
                   folder: Path | None = None) -> DecodeBench:
    """Images/s of each decoder on one core (training and evaluation crops, best of ``repeats`` alternating
    rounds), and through the loader when ``workers`` > 0."""
    files = bench_jpegs(n, size, folder)
    mean_kb = round(sum(os.path.getsize(f) for f in files) / len(files) / 1024, 1)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        sets = {(d, m): FolderImages(_split(files, d), m == "train", 0, True)
                for d in DECODERS for m in ("train", "eval")}
        best = dict.fromkeys(sets, 0.0)
        for ds in sets.values():  # warm-up: imports, caches
            for i in range(min(8, n)):
                ds[(0, i)]
        for r in range(repeats):
            for key, ds in sets.items():
                t0 = time.perf_counter()
                for i in range(n):
                    ds[(r, i)]
                best[key] = max(best[key], n / (time.perf_counter() - t0))
    finally:
        torch.set_num_threads(threads)
    per_core = {d: {m: round(best[(d, m)], 1) for m in ("train", "eval")} for d in DECODERS}
    loader = None
    if workers > 0:
        loader = {d: round(_loader_speed(_split(files, d, workers), repeats), 1) for d in DECODERS}
    return DecodeBench(n, size, mean_kb, per_core, workers, loader)


def _loader_speed(split: FolderSplit, repeats: int) -> float:
    """Training images/s through FolderLoader (its persistent workers started by one untimed epoch)."""
    loader = FolderLoader(split, 32, train=True, seed=0)
    for _ in loader:
        pass
    best = 0.0
    for _ in range(repeats):
        t0 = time.perf_counter()
        count = sum(len(y) for _, y in loader)
        best = max(best, count / (time.perf_counter() - t0))
    return best
