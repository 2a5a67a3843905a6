"""Loaders: a whole batch augmented in a few tensor ops on the device, and :func:`make_loader`.

The original code bases feed CIFAR through torchvision transforms, one PIL image at a time in worker
processes. Here an in-memory split is one uint8 tensor ``[N, C, H, W]``; :class:`DeviceLoader` moves it to the
training device once, shuffles with a device generator seeded from ``(seed, epoch)``, and does the pad-crop,
horizontal flip and normalisation for a whole batch in a few tensor ops (the airbench way), with no host
synchronisation inside the loop. The batch functions (:func:`plan_epoch`, :func:`crop_flip`) are pure and
kept apart from the loader class. Image folders get :class:`engine.data.folders.FolderLoader`;
:func:`make_loader` picks the loader a split needs.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from engine.data.base import BatchLoader, DataError, Split
from engine.data.folders import FolderLoader, FolderSplit

__all__ = ["Augment", "DeviceLoader", "EpochPlan", "crop_flip", "make_loader", "plan_epoch"]

# ----------------------------------------------------------------------------------------------------------
# Augmentation: pure functions of a batch and of an epoch's random choices


@dataclass
class Augment:
    """Training augmentation: random crop with ``crop_pad`` pixels of padding (0: none), ``pad_mode`` "zeros"
    (torchvision ``RandomCrop(32, padding=4)``) or "reflect" (FreeTickets / Sup-tickets CIFAR-10), and a
    horizontal flip of each image with probability 0.5."""

    crop_pad: int = 4
    pad_mode: str = "zeros"
    flip: bool = True

    def __post_init__(self) -> None:
        if self.pad_mode not in ("zeros", "reflect"):
            raise DataError(f"unknown pad_mode {self.pad_mode!r}; choose from zeros, reflect")
        if self.crop_pad < 0:
            raise DataError(f"crop_pad must be >= 0, got {self.crop_pad}")


def crop_flip(
    x: torch.Tensor,
    dy: torch.Tensor | None,
    dx: torch.Tensor | None,
    flip: torch.Tensor | None,
    pad: int,
    pad_mode: str = "zeros",
) -> torch.Tensor:
    """Crop each image of a batch from its padded version, then flip the chosen ones, in a few tensor ops.

    ``x`` is ``[B, C, H, W]`` (any dtype). Image ``i`` becomes ``padded[i, :, dy[i]:dy[i]+H, dx[i]:dx[i]+W]``
    where ``padded`` adds ``pad`` pixels per side (zeros, or a reflection without the edge as
    ``F.pad(mode="reflect")``), then is mirrored left-right where ``flip[i]``. Offsets lie in
    ``[0, 2*pad]``; ``dy``/``dx`` may be None when ``pad == 0``, ``flip`` None for no flip. The padded batch
    is never built: source rows and columns are computed and gathered directly.
    """
    if pad_mode not in ("zeros", "reflect"):
        raise DataError(f"unknown pad_mode {pad_mode!r}; choose from zeros, reflect")
    b, c, h, w = x.shape
    if pad > 0 and pad_mode == "reflect" and pad >= min(h, w):
        raise DataError(f"reflect padding needs crop_pad < image size, got {pad} for {h}x{w}")
    if pad == 0 and flip is None:
        return x
    dev = x.device
    cols = torch.arange(w, device=dev).unsqueeze(0).expand(b, w)
    if flip is not None:
        cols = torch.where(flip.to(dev).unsqueeze(1), (w - 1) - cols, cols)
    row_ok = col_ok = None
    if pad > 0:
        assert dy is not None and dx is not None, "crop offsets are needed when pad > 0"
        rows = torch.arange(h, device=dev).unsqueeze(0) + (dy.to(dev, torch.int64).unsqueeze(1) - pad)
        cols = cols + (dx.to(dev, torch.int64).unsqueeze(1) - pad)
        if pad_mode == "reflect":  # -k -> k and (n-1)+k -> (n-1)-k, as F.pad(mode="reflect")
            rows = rows.abs()
            rows = torch.where(rows > h - 1, 2 * (h - 1) - rows, rows)
            cols = cols.abs()
            cols = torch.where(cols > w - 1, 2 * (w - 1) - cols, cols)
        else:  # gather from a clamped position, then zero what fell in the padding
            row_ok = (rows >= 0) & (rows < h)
            col_ok = (cols >= 0) & (cols < w)
            rows = rows.clamp(0, h - 1)
            cols = cols.clamp(0, w - 1)
        x = x.gather(2, rows[:, None, :, None].expand(b, c, h, w))
    out = x.gather(3, cols[:, None, None, :].expand(b, c, h, w))
    if row_ok is not None and col_ok is not None:
        out = out.masked_fill(~(row_ok[:, None, :, None] & col_ok[:, None, None, :]), 0)
    return out


@dataclass
class EpochPlan:
    """The random choices of one training epoch, all on the device: the sample order and, per position in
    that order, the crop offsets and the flip flag (None where that augmentation is off)."""

    order: torch.Tensor
    dy: torch.Tensor | None
    dx: torch.Tensor | None
    flip: torch.Tensor | None


def _epoch_seed(seed: int, epoch: int) -> int:
    state = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(epoch) & 0xFFFFFFFF]).generate_state(2)
    return (int(state[0]) << 31 | int(state[1])) & ((1 << 63) - 1)


def plan_epoch(n: int, augment: Augment | None, seed: int, epoch: int, device: torch.device) -> EpochPlan:
    """The order and augmentation choices of a training epoch over ``n`` samples, drawn on ``device`` from a
    generator seeded from ``(seed, epoch)`` only: order first, then row offsets, column offsets, flips."""
    gen = torch.Generator(device=device)
    gen.manual_seed(_epoch_seed(seed, epoch))
    order = torch.randperm(n, generator=gen, device=device)
    dy = dx = flip = None
    if augment is not None and augment.crop_pad > 0:
        span = 2 * augment.crop_pad + 1
        dy = torch.randint(0, span, (n,), generator=gen, device=device)
        dx = torch.randint(0, span, (n,), generator=gen, device=device)
    if augment is not None and augment.flip:
        flip = torch.rand(n, generator=gen, device=device) < 0.5
    return EpochPlan(order, dy, dx, flip)


# ----------------------------------------------------------------------------------------------------------
# The loaders


def make_loader(split: Split | FolderSplit, batch_size: int, *, train: bool, augment: Augment | None = None,
                **kwargs: object) -> DeviceLoader | FolderLoader:
    """The loader a split needs: :class:`DeviceLoader` for in-memory tensors, a DataLoader-backed
    :class:`engine.data.folders.FolderLoader` for image folders (crop and flip are then its own; ``augment``
    only says whether to flip)."""
    if isinstance(split, FolderSplit):
        flip = augment.flip if augment is not None else False
        return FolderLoader(split, batch_size, train=train, flip=flip, **kwargs)  # type: ignore[arg-type]
    return DeviceLoader(split, batch_size, train=train, augment=augment, **kwargs)  # type: ignore[arg-type]


class DeviceLoader(BatchLoader):
    """Batches of a :class:`Split` that lives on the device: shuffled, augmented and normalised there.

    The uint8 images move to ``device`` once, here. A training loader (``train=True``) draws, per epoch, a
    permutation and the augmentation choices from a generator on the device seeded from ``(seed, epoch)``
    only, so an epoch can be replayed exactly (``--resume``) and every sample appears once per epoch. An
    evaluation loader keeps the order and never augments. Batches are float32 ``[B, C, H, W]``
    normalised with ``normalize`` (a :data:`NORMALIZE` name or ``(mean, std)``), and int64 labels.
    ``augment=None`` means no augmentation. The last partial batch is kept unless ``drop_last``.

    ``rank``/``world_size`` shard the data for DDP: every rank draws the same permutation and takes every
    ``world_size``-th sample from position ``rank`` (training drops the remainder so that all ranks run the
    same number of steps; evaluation keeps every sample exactly once across ranks).

    Iterating without :meth:`set_epoch` runs the epoch after the previous iteration's (starting at 0).
    """

    def __init__(
        self,
        split: Split,
        batch_size: int,
        *,
        device: torch.device | str = "cpu",
        train: bool,
        augment: Augment | None = None,
        normalize: str | tuple = "cifar10",
        seed: int = 0,
        drop_last: bool = False,
        channels_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if not isinstance(split, Split):
            raise DataError(f"DeviceLoader takes an in-memory Split, not {type(split).__name__}: "
                            "use engine.data.make_loader")
        if batch_size <= 0:
            raise DataError(f"batch_size must be positive, got {batch_size}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise DataError(f"bad shard: rank {rank} of world_size {world_size}")
        self.device = torch.device(device)
        self.batch_size = int(batch_size)
        self.train = bool(train)
        self.augment = augment if self.train else None
        self.seed = int(seed)
        self.drop_last = bool(drop_last)
        self.channels_last = bool(channels_last)
        self.rank, self.world_size = int(rank), int(world_size)
        self._epoch = 0

        x, y = split.x, split.y
        if not self.train and self.world_size > 1:
            x, y = x[self.rank :: self.world_size], y[self.rank :: self.world_size]
        self.x = x.to(self.device, non_blocking=False).contiguous()
        self.y = y.to(self.device, non_blocking=False)
        n = int(self.x.shape[0])
        self.num_samples = (n - n % self.world_size) // self.world_size if self.train else n
        channels, height, width = self.x.shape[1:]
        aug = self.augment
        if aug is not None and aug.pad_mode == "reflect" and aug.crop_pad >= min(height, width):
            raise DataError(f"reflect padding needs crop_pad < {min(height, width)}, got {aug.crop_pad}")
        self._set_normalize(normalize, channels)

    def plan(self, epoch: int) -> EpochPlan:
        """The order and augmentation choices of a training epoch (this rank's share), drawn on the device."""
        plan = plan_epoch(int(self.x.shape[0]), self.augment, self.seed, epoch, self.device)
        if self.world_size == 1:
            return plan
        keep = slice(self.rank, self.num_samples * self.world_size, self.world_size)
        return EpochPlan(*(None if t is None else t[keep] for t in (plan.order, plan.dy, plan.dx, plan.flip)))

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        epoch = self._epoch
        self._epoch += 1
        plan = self.plan(epoch) if self.train else None
        return self._batches(plan)

    def _batches(self, plan: EpochPlan | None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        bs = self.batch_size
        for i in range(len(self)):
            lo, hi = i * bs, min((i + 1) * bs, self.num_samples)
            if plan is None:
                xb, yb = self.x[lo:hi], self.y[lo:hi]
            else:
                idx = plan.order[lo:hi]
                xb, yb = self.x.index_select(0, idx), self.y.index_select(0, idx)
                aug = self.augment
                if aug is not None:
                    pad = aug.crop_pad
                    xb = crop_flip(
                        xb,
                        None if plan.dy is None else plan.dy[lo:hi],
                        None if plan.dx is None else plan.dx[lo:hi],
                        None if plan.flip is None else plan.flip[lo:hi],
                        pad,
                        aug.pad_mode,
                    )
            yield self._to_float(xb), yb
