"""Image-folder data (ImageNet): files on disk decoded by DataLoader workers, normalised on the device.

ImageNet does not fit in memory as one tensor, so it keeps the originals' shape of pipeline, made exact and
cheap: workers decode each JPEG (libjpeg-turbo at the smallest scale that holds the crop, or Pillow in full:
:mod:`engine.data.decode`) and crop it as uint8 (``RandomResizedCrop(image_size)`` + flip for training,
``Resize(resize)`` + ``CenterCrop(image_size)`` for evaluation), a collate stacks uint8 batches (4x less to copy
than float), and the device converts and normalises the whole batch. Training shards with a
``DistributedSampler`` (drop_last, as the originals); evaluation gives every rank a disjoint strided share.

Every random choice of a training image is drawn from a generator seeded by ``(seed, epoch, index)``, so an
epoch is the same whatever the number of workers and can be replayed exactly on resume.

``synthetic-imagenet`` is a tiny generated JPEG tree (10 classes) that the smoke profile and the tests run
through this same path. Both names are registered here (:func:`engine.data.base.register_dataset`).
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler, Sampler

from engine.data.base import BatchLoader, DataError, Dataset, LoadOptions, data_root, register_dataset
from engine.data.decode import DECODERS, crop_full, pillow_rgb, turbo_crop

__all__ = [
    "IMAGE_EXTENSIONS",
    "FolderImages",
    "FolderLoader",
    "FolderSplit",
    "load_folder_dataset",
    "make_synthetic_folders",
    "random_resized_crop_box",
]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
SYNTHETIC_CLASSES = 10
SYNTHETIC_TRAIN_PER_CLASS = 16
SYNTHETIC_VAL_PER_CLASS = 4


@dataclass
class FolderSplit:
    """One split of an image-folder data set: file paths and labels, plus how its images are cut.

    ``image_size`` is the side of the square the network sees; ``resize`` the shorter side evaluation
    images are scaled to before the centre crop; ``scale`` the area range of the training crop; ``decoder``
    ``turbo`` (libjpeg-turbo at reduced scale) or ``pillow`` (full decode, as the originals): see
    :mod:`engine.data.decode`.
    """

    root: Path
    files: list[str]
    labels: list[int]
    classes: list[str]
    image_size: int = 224
    resize: int = 256
    scale: tuple[float, float] = (0.08, 1.0)
    workers: int = 8
    decoder: str = "turbo"
    _y: torch.Tensor | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.files)

    @property
    def y(self) -> torch.Tensor:
        """All labels, int64 ``[N]``, in file order."""
        if self._y is None:
            self._y = torch.tensor(self.labels, dtype=torch.int64)
        return self._y

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """The shape of one image as the network receives it."""
        return (3, self.image_size, self.image_size)

    def subset(self, k: int) -> FolderSplit:
        """``k`` images spread evenly over the split (files are sorted by class, so the first k would be one
        class): indices ``floor(i * N / k)``."""
        n = len(self.files)
        if k >= n:
            return self
        idx = [i * n // k for i in range(k)]
        return FolderSplit(self.root, [self.files[i] for i in idx], [self.labels[i] for i in idx], self.classes,
                           self.image_size, self.resize, self.scale, self.workers, self.decoder)


def _scan(folder: Path, classes: list[str] | None) -> tuple[list[str], list[int], list[str]]:
    """Files under ``folder/<class>/`` in sorted order with their class indices (ImageFolder's layout)."""
    if not folder.is_dir():
        raise DataError(f"{folder} is missing: an image-folder data set needs train/ and val/ with one "
                        f"sub-folder of images per class")
    found = sorted(e.name for e in os.scandir(folder) if e.is_dir())
    if not found:
        raise DataError(f"{folder} has no class folders: arrange it as {folder.name}/<class>/<image>.JPEG")
    if classes is None:
        classes = found
    elif found != classes:
        extra = sorted(set(found) - set(classes))[:3]
        raise DataError(f"{folder} has {len(found)} class folders but train/ has {len(classes)}"
                        + (f" (e.g. {', '.join(extra)} only here)" if extra else ""))
    files: list[str] = []
    labels: list[int] = []
    for k, name in enumerate(classes):
        names = sorted(e.name for e in os.scandir(folder / name)
                       if e.is_file() and e.name.lower().endswith(IMAGE_EXTENSIONS))
        files.extend(str(folder / name / f) for f in names)
        labels.extend([k] * len(names))
    if not files:
        raise DataError(f"{folder} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    return files, labels, classes


def load_folder_dataset(name: str, root: Path, *, image_size: int = 224, resize: int = 256, workers: int = 8,
                        decoder: str = "turbo") -> tuple[FolderSplit, FolderSplit, int]:
    """The train and val splits of an ImageFolder tree at ``root`` (``synthetic-imagenet``: generated once)."""
    if decoder not in DECODERS:
        raise DataError(f"unknown decoder {decoder!r}; choose from {', '.join(DECODERS)}")
    if name == "synthetic-imagenet":
        root = make_synthetic_folders(root / "synthetic-imagenet")
    elif not root.is_dir():
        raise DataError(f"imagenet not found at {root}: put the ImageFolder tree (train/, val/) there, or set "
                        f"[data].root or REPRO_DATA")
    tr_files, tr_labels, classes = _scan(root / "train", None)
    va_files, va_labels, _ = _scan(root / "val", classes)
    opts = {"image_size": image_size, "resize": resize, "workers": workers, "decoder": decoder}
    train = FolderSplit(root, tr_files, tr_labels, classes, **opts)
    val = FolderSplit(root, va_files, va_labels, classes, **opts)
    return train, val, len(classes)


@register_dataset("synthetic-imagenet")
@register_dataset("imagenet", normalize="imagenet")
def _folder_dataset(key: str, options: LoadOptions) -> Dataset:
    """An image-folder data set: ``imagenet`` under :func:`data_root` (its ``imagenet/`` sub-folder when no root
    is given), ``synthetic-imagenet`` generated there; its val/ folder is the evaluation split."""
    if options.val_split:
        raise DataError(f"val_split is not supported for {key} (its val/ folder is the evaluation split)")
    root = options.root
    base = data_root(root)
    if key == "imagenet" and (root is None or str(root) == ""):
        base = base / "imagenet"
    train, test, num_classes = load_folder_dataset(key, base, image_size=options.image_size, resize=options.resize,
                                                   workers=options.workers, decoder=options.decoder)
    return Dataset(key, train, test, num_classes)  # type: ignore[arg-type]


def make_synthetic_folders(dest: Path, seed: int = 0) -> Path:
    """Write a tiny ImageFolder tree of JPEGs at ``dest`` unless it is there: 10 classes, 16 training and 4
    validation images each, sizes 56..96 px (non-square, so crops and resizes do real work). Each class has
    its own colour gradient, so a net can learn it. Written to a temporary sibling and renamed (atomic)."""
    if (dest / "val").is_dir() and (dest / "train").is_dir():
        return dest
    from PIL import Image  # deferred: Pillow is needed only to write the synthetic tree

    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
    g = torch.Generator().manual_seed(seed)
    try:
        colours = torch.randint(0, 256, (SYNTHETIC_CLASSES, 2, 3), generator=g).float()
        for split, per_class in (("train", SYNTHETIC_TRAIN_PER_CLASS), ("val", SYNTHETIC_VAL_PER_CLASS)):
            for c in range(SYNTHETIC_CLASSES):
                d = tmp / split / f"n{c:08d}"
                d.mkdir(parents=True)
                for i in range(per_class):
                    h, w = (int(v) for v in torch.randint(56, 97, (2,), generator=g))
                    t = torch.linspace(0, 1, w).view(1, 1, w).expand(3, h, w)
                    a, b = colours[c, 0].view(3, 1, 1), colours[c, 1].view(3, 1, 1)
                    img = a * (1 - t) + b * t + torch.randn(3, h, w, generator=g) * 24
                    arr = img.clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
                    Image.fromarray(arr).save(d / f"img{i:03d}.jpeg", quality=90)
        try:
            os.rename(tmp, dest)
        except OSError:  # another process made it first
            if not (dest / "val").is_dir():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


# ----------------------------------------------------------------------------------------------------------
# decoding and cropping (in the workers)


def _image_seed(seed: int, epoch: int, index: int) -> int:
    state = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(epoch) & 0xFFFFFFFF, int(index)]).generate_state(2)
    return (int(state[0]) << 31 | int(state[1])) & ((1 << 63) - 1)


def random_resized_crop_box(height: int, width: int, scale: tuple[float, float], gen: torch.Generator,
                            ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> tuple[int, int, int, int]:
    """(top, left, h, w) of a random crop covering ``scale`` of the area with log-uniform aspect ``ratio``
    (up to 10 tries), else the largest centred crop whose aspect lies in ``ratio`` (Inception-style)."""
    area = height * width
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(10):
        u = torch.rand(4, generator=gen).tolist()
        target = area * (scale[0] + (scale[1] - scale[0]) * u[0])
        aspect = math.exp(log_lo + (log_hi - log_lo) * u[1])
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = min(int(u[2] * (height - h + 1)), height - h)
            left = min(int(u[3] * (width - w + 1)), width - w)
            return top, left, h, w
    aspect = width / height
    if aspect < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif aspect > ratio[1]:
        h, w = height, int(round(height * ratio[1]))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


class FolderImages(torch.utils.data.Dataset):
    """Decodes and crops one image per index; training indices arrive as (epoch, index) pairs.

    Paths and labels are held as two numpy arrays, not Python lists: forked workers then share them without
    copy-on-write growth (a list of 1.28M str objects would be copied page by page into every worker).
    """

    def __init__(self, split: FolderSplit, train: bool, seed: int, flip: bool) -> None:
        self.train, self.seed, self.flip = train, seed, flip
        self.image_size, self.resize, self.scale = split.image_size, split.resize, split.scale
        self.turbo = split.decoder == "turbo"
        self.paths = np.array([os.fsencode(f) for f in split.files])
        self.labels = np.asarray(split.labels, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, int]:
        epoch, index = key if isinstance(key, tuple) else (0, key)
        path = os.fsdecode(self.paths[index])
        gen = torch.Generator().manual_seed(_image_seed(self.seed, epoch, index)) if self.train else None
        img = self._turbo(path, gen) if self.turbo else None
        if img is None:
            if gen is not None:  # the turbo path may have drawn the box before it gave up: draw it afresh
                gen.manual_seed(_image_seed(self.seed, epoch, index))
            img = self._pillow(path, gen)
        if gen is not None and self.flip and bool(torch.rand(1, generator=gen) < 0.5):  # drawn after the box
            img = img.flip(-1)
        return img.contiguous(), int(self.labels[index])

    def _turbo(self, path: str, gen: torch.Generator | None) -> torch.Tensor | None:
        """The crop by libjpeg-turbo at reduced scale, its box drawn in original pixels as :meth:`_pillow` draws
        it; None for files it does not take."""
        box_of = None if gen is None else (lambda h, w: random_resized_crop_box(h, w, self.scale, gen))
        return turbo_crop(path, self.image_size, self.resize, box_of)

    def _pillow(self, path: str, gen: torch.Generator | None) -> torch.Tensor:
        """The crop from a full Pillow decode, resized by torchvision (the originals' pipeline on tensors)."""
        img = pillow_rgb(path)
        box = None if gen is None else random_resized_crop_box(img.shape[-2], img.shape[-1], self.scale, gen)
        return crop_full(img, self.image_size, box, self.resize)


class _EpochSampler(DistributedSampler):
    """DistributedSampler that yields (epoch, index), so workers know which epoch's crops to draw."""

    def __iter__(self) -> Iterator[tuple[int, int]]:  # type: ignore[override]
        epoch = self.epoch
        return ((epoch, int(i)) for i in super().__iter__())


class _Strided(Sampler[int]):
    """Evaluation share of one rank: indices rank, rank + world, ... (every image once over all ranks)."""

    def __init__(self, n: int, rank: int, world: int) -> None:
        self.indices = list(range(rank, n, world))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def _collate(batch: list[tuple[torch.Tensor, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.stack([b[0] for b in batch]), torch.tensor([b[1] for b in batch], dtype=torch.int64)


class FolderLoader(BatchLoader):
    """Batches of a :class:`FolderSplit`: decoded by ``split.workers`` processes, normalised on ``device``.

    The same interface as :class:`engine.data.DeviceLoader` (``set_epoch``, ``epoch``, ``len``, iteration
    yielding float32 normalised images and int64 labels). Training drops the last partial batch.
    """

    def __init__(self, split: FolderSplit, batch_size: int, *, device: torch.device | str = "cpu", train: bool,
                 flip: bool = True, normalize: str | tuple = "imagenet", seed: int = 0, drop_last: bool = True,
                 channels_last: bool = False, rank: int = 0, world_size: int = 1) -> None:
        if batch_size <= 0:
            raise DataError(f"batch_size must be positive, got {batch_size}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise DataError(f"bad shard: rank {rank} of world_size {world_size}")
        self.device = torch.device(device)
        self.split, self.batch_size, self.train = split, int(batch_size), bool(train)
        self.seed, self.channels_last = int(seed), bool(channels_last)
        self.drop_last = bool(drop_last) if self.train else False
        self._epoch = 0
        self.images = FolderImages(split, self.train, self.seed, flip)
        if self.train:
            self.sampler: Sampler = _EpochSampler(self.images, num_replicas=world_size, rank=rank, shuffle=True,
                                                  seed=self.seed, drop_last=True)
        else:
            self.sampler = _Strided(len(split), rank, world_size)
        self.num_samples = len(self.sampler)
        workers = int(split.workers)
        self._loader = DataLoader(
            self.images, batch_size=self.batch_size, sampler=self.sampler, drop_last=self.drop_last,
            num_workers=workers, collate_fn=_collate, pin_memory=self.device.type == "cuda",
            persistent_workers=workers > 0, prefetch_factor=4 if workers > 0 else None)
        self._set_normalize(normalize, 3)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        epoch = self._epoch
        self._epoch += 1
        if isinstance(self.sampler, DistributedSampler):
            self.sampler.set_epoch(epoch)
        try:
            for xb, yb in self._loader:
                yield self._to_float(xb.to(self.device, non_blocking=True)), yb.to(self.device, non_blocking=True)
        except DataError as exc:  # from a worker, DataLoader wraps the message in its traceback: keep one line
            last = str(exc).strip().splitlines()[-1]
            raise DataError(last.split("DataError: ", 1)[-1]) from None
