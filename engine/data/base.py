"""What every data set and loader shares: the split and data-set types, the dataset registry, normalisation.

A data set is registered by name beside its loader (``@register_dataset("digits", normalize="digits")``), and
the names are those of the recipe schema, :data:`engine.config.DATASETS`: registering any other name is an
error, and a test checks that every schema name has a loader. :func:`load_dataset` dispatches on the name.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from engine.config import DATASETS
from engine.errors import DataError
from engine.registry import Registry

__all__ = [
    "DATASETS",
    "DATASET_LOADERS",
    "NORMALIZE",
    "BatchLoader",
    "DataError",
    "Dataset",
    "DatasetEntry",
    "LoadOptions",
    "Split",
    "data_root",
    "default_normalize",
    "load_dataset",
    "normalize_stats",
    "register_dataset",
    "with_eval_split",
]

NORMALIZE: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    # FreeTickets / Sup-tickets / Random pruning CIFAR-10, FGE "ResNet" transform, Early-Bird.
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    # FreeTickets sparselearning/utils.py (the full-precision constants of the code).
    "cifar100": (
        (0.5070751592371323, 0.48654887331495095, 0.4409178433670343),
        (0.2673342858792401, 0.2564384629170883, 0.27615047132568404),
    ),
    # FGE "VGG" transform (CIFAR images normalised with the ImageNet statistics), and ImageNet itself.
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    # Per-channel mean / std of the digits training split (uint8 / 255); see tests/test_data.py.
    "digits": ((0.305354, 0.305354, 0.305354), (0.323664, 0.323664, 0.323664)),
    "none": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
}
"""Per-channel (mean, std) in [0, 1] units, by name; a loader's ``normalize`` picks one."""


# ----------------------------------------------------------------------------------------------------------
# Splits and data sets


@dataclass
class Split:
    """One split of a dataset, in memory: ``x`` uint8 ``[N, C, H, W]`` on the CPU, ``y`` int64 ``[N]``."""

    x: torch.Tensor
    y: torch.Tensor

    def __post_init__(self) -> None:
        if self.x.dtype != torch.uint8 or self.x.dim() != 4:
            got = f"{self.x.dtype} {tuple(self.x.shape)}"
            raise DataError(f"a split needs uint8 images [N, C, H, W], got {got}")
        if self.y.dtype != torch.int64 or self.y.dim() != 1 or self.y.shape[0] != self.x.shape[0]:
            raise DataError(
                f"a split needs int64 labels [N] matching {self.x.shape[0]} images, "
                f"got {self.y.dtype} {tuple(self.y.shape)}"
            )

    def __len__(self) -> int:
        return int(self.y.shape[0])

    @property
    def image_shape(self) -> tuple[int, ...]:
        """The shape of one image, ``(C, H, W)``."""
        return tuple(self.x.shape[1:])

    def subset(self, k: int) -> Split:
        """The first ``k`` images."""
        return Split(self.x[:k], self.y[:k])


@dataclass
class Dataset:
    """A classification dataset: training split, official test split, and an optional validation split.

    ``val`` holds the last ``val_split`` training images when a paper holds them out (the originals'
    ``--valid_split`` / no ``--use_test``); training then evaluates on it each epoch (``eval_name`` "val"),
    while analyses always use the official ``test`` split.
    """

    name: str
    train: Split  # or an engine.data.folders.FolderSplit: same y / image_shape / subset / len
    test: Split
    num_classes: int
    val: Split | None = None

    @property
    def eval_name(self) -> str:
        """"val" when a validation split is held out, else "test"."""
        return "test" if self.val is None else "val"

    @property
    def eval(self) -> Split:
        """The split evaluated during training."""
        return self.test if self.val is None else self.val


def data_root(root: str | Path | None = None) -> Path:
    """Where datasets live: ``root`` if given, else ``$REPRO_DATA``, else ``~/.cache/repro/data``."""
    if root is None or str(root) == "":
        root = os.environ.get("REPRO_DATA") or Path.home() / ".cache" / "repro" / "data"
    return Path(root).expanduser().resolve()


def with_eval_split(name: str, train: Split, test: Split, num_classes: int, val_split: int) -> Dataset:
    """An in-memory data set, holding out the last ``val_split`` training images as its ``val`` split."""
    if isinstance(val_split, bool) or not isinstance(val_split, (int, np.integer)) or val_split < 0:
        raise DataError(f"val_split must be a whole number of images >= 0, got {val_split!r}")
    if val_split == 0:
        return Dataset(name, train, test, num_classes)
    n = len(train)
    if val_split >= n:
        raise DataError(
            f"val_split={val_split} leaves no training images: {name} has {n} (use 0 <= val_split < {n})"
        )
    cut = n - int(val_split)
    held_out = Split(train.x[cut:], train.y[cut:])
    return Dataset(name, Split(train.x[:cut], train.y[:cut]), test, num_classes, val=held_out)


# ----------------------------------------------------------------------------------------------------------
# The dataset registry


@dataclass(frozen=True)
class LoadOptions:
    """What :func:`load_dataset` was asked for besides the name; each loader reads the fields it needs."""

    root: str | Path | None = None
    val_split: int = 0
    download: bool = True
    image_size: int = 224
    resize: int = 256
    workers: int = 8
    decoder: str = "turbo"


LoadFn = Callable[[str, LoadOptions], Dataset]
"""A registered loader: ``fn(key, options)``, ``key`` the lower-case name asked for (``synthetic-5``)."""


@dataclass(frozen=True)
class DatasetEntry:
    """One registered data set: its loader, the :data:`NORMALIZE` key that suits it, and whether
    ``name-K`` variants (``synthetic-K``) go to the same loader."""

    name: str
    load: LoadFn
    normalize: str = "none"
    family: bool = False


DATASET_LOADERS: Registry[DatasetEntry] = Registry("dataset")
"""Registered data sets by name, filled by :func:`register_dataset` as ``engine.data`` imports its modules."""


def register_dataset(name: str, *, normalize: str = "none", family: bool = False) -> Callable[[LoadFn], LoadFn]:
    """Decorator: register ``fn(key, options) -> Dataset`` as the loader of ``name`` (a schema name)."""
    if name not in DATASETS:
        raise ValueError(f"dataset {name!r} is not in engine.config.DATASETS; add it to the schema first")
    if normalize not in NORMALIZE:
        raise ValueError(f"dataset {name!r}: unknown normalisation {normalize!r}")

    def register(fn: LoadFn) -> LoadFn:
        DATASET_LOADERS.add(name, DatasetEntry(name, fn, normalize, family))
        return fn

    return register


def _entry(key: str) -> DatasetEntry | None:
    """The registered entry of a lower-case name: itself, or the family ``name-K`` belongs to."""
    if key in DATASET_LOADERS:
        return DATASET_LOADERS[key]
    family = DATASET_LOADERS.get(key.split("-", 1)[0]) if "-" in key else None
    return family if family is not None and family.family else None


def default_normalize(name: str) -> str:
    """The :data:`NORMALIZE` key that suits a dataset name (``none`` for synthetic data)."""
    key = name.strip().lower()
    entry = DATASET_LOADERS.get(key) or DATASET_LOADERS.get(key.split("-")[0])
    return entry.normalize if entry is not None else "none"


def load_dataset(
    name: str, root: str | Path | None = None, *, val_split: int = 0, download: bool = True,
    image_size: int = 224, resize: int = 256, workers: int = 8, decoder: str = "turbo",
) -> Dataset:
    """Load a dataset by name into uint8 CPU tensors (image folders: file lists, read batch by batch).

    ``val_split=N > 0`` holds out the LAST N training images (no shuffle first, as the originals do) as the
    evaluation split, named ``"val"``; otherwise the official test set is used. CIFAR is downloaded into
    :func:`data_root` on first use when ``download`` is true; when it is missing and cannot be fetched, a
    one-line :class:`DataError` names the folder to fill.
    """
    key = name.strip().lower()
    entry = _entry(key)
    if entry is None:
        raise DataError(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}")
    options = LoadOptions(root, val_split, download, image_size, resize, workers, decoder)
    return entry.load(key, options)


# ----------------------------------------------------------------------------------------------------------
# Normalisation and what every loader shares


def normalize_stats(normalize: str | tuple) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Resolve a :data:`NORMALIZE` name or an explicit ``(mean, std)`` pair to two tuples of floats."""
    if isinstance(normalize, str):
        if normalize not in NORMALIZE:
            raise DataError(f"unknown normalisation {normalize!r}; choose from {', '.join(NORMALIZE)}")
        return NORMALIZE[normalize]
    try:
        mean, std = normalize
        mean_t, std_t = tuple(float(v) for v in mean), tuple(float(v) for v in std)
    except (TypeError, ValueError) as exc:
        raise DataError(f"normalize must be a name or a (mean, std) pair, got {normalize!r}") from exc
    if not mean_t or len(mean_t) != len(std_t) or any(s <= 0 for s in std_t):
        raise DataError(f"normalize needs as many means as positive stds, got {normalize!r}")
    return mean_t, std_t


class BatchLoader:
    """What every loader shares: the epoch cursor, the batch count, and uint8 -> normalised float32 on the device.

    Subclasses set ``device``, ``batch_size``, ``drop_last``, ``num_samples``, ``channels_last`` and call
    :meth:`_set_normalize` once.
    """

    device: torch.device
    batch_size: int
    drop_last: bool
    num_samples: int
    channels_last: bool
    _epoch: int = 0

    def _set_normalize(self, normalize: str | tuple, channels: int) -> None:
        mean, std = normalize_stats(normalize)
        if len(mean) != channels:
            if len(set(mean)) == 1 and len(set(std)) == 1:  # one value for every channel ("none", grey data)
                mean, std = (mean[0],) * channels, (std[0],) * channels
            else:
                raise DataError(f"normalize has {len(mean)} channels but the images have {channels}")
        mean_t = torch.tensor(mean, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        std_t = torch.tensor(std, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        # (x / 255 - mean) / std  ==  x * scale + bias, one fused pass per batch
        self._scale = 1.0 / (255.0 * std_t)
        self._bias = -mean_t / std_t

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch the next iteration runs; its order and augmentation depend only on it and seed."""
        self._epoch = int(epoch)

    @property
    def epoch(self) -> int:
        """The epoch the next iteration will run."""
        return self._epoch

    def __len__(self) -> int:
        if self.drop_last:
            return self.num_samples // self.batch_size
        return math.ceil(self.num_samples / self.batch_size)

    def _to_float(self, xb: torch.Tensor) -> torch.Tensor:
        """A uint8 batch already on the device as normalised float32 (channels_last when asked)."""
        if self.channels_last:
            xb = xb.contiguous(memory_format=torch.channels_last)  # the uint8 copy is the cheap one
        return xb.to(torch.float32).mul_(self._scale).add_(self._bias)
