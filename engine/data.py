"""Datasets held in memory as uint8 tensors, and a loader that augments whole batches on the device.

The original code bases feed CIFAR through torchvision transforms, one PIL image at a time in worker
processes. Here a dataset is one uint8 tensor ``[N, C, H, W]``; :class:`DeviceLoader` moves it to the
training device once, shuffles with a device generator seeded from ``(seed, epoch)``, and does the
pad-crop, horizontal flip and normalisation for a whole batch in a few tensor ops (the airbench way), with
no host synchronisation inside the loop.

Datasets: ``cifar10`` and ``cifar100`` (torchvision's download, read straight from its pickle batches),
``digits`` (scikit-learn's bundled handwritten digits, resized to 32x32x3; no download) and
``synthetic`` (deterministic random images, for benchmarks and tests). ``imagenet`` and ``synthetic-imagenet``
are image folders on disk, read by :mod:`engine.imagefolder`; :func:`make_loader` picks the loader a split needs.
"""

from __future__ import annotations

import _compat_pickle
import math
import os
import pickle
import socket
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "DATASETS",
    "NORMALIZE",
    "Augment",
    "DataError",
    "Dataset",
    "DeviceLoader",
    "EpochPlan",
    "Split",
    "crop_flip",
    "data_root",
    "default_normalize",
    "load_dataset",
    "make_loader",
    "make_synthetic",
    "normalize_stats",
]

DATASETS: tuple[str, ...] = ("cifar10", "cifar100", "digits", "synthetic", "imagenet", "synthetic-imagenet")
"""Names :func:`load_dataset` accepts (``synthetic-K`` gives K classes)."""

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

_DEFAULT_NORMALIZE = {"cifar10": "cifar10", "cifar100": "cifar100", "digits": "digits", "synthetic": "none",
                      "imagenet": "imagenet"}
_FOLDER_DATASETS = ("imagenet", "synthetic-imagenet")

_CIFAR_CLASSES = {"cifar10": ("CIFAR10", 10, "labels"), "cifar100": ("CIFAR100", 100, "fine_labels")}

_DOWNLOAD_SOCKET_TIMEOUT_S = 60.0


from engine.errors import DataError  # noqa: E402 - re-exported: engine.data.DataError is the public name

# ----------------------------------------------------------------------------------------------------------
# Datasets


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
    train: Split  # or an engine.imagefolder.FolderSplit: same y / image_shape / subset / len
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


def default_normalize(name: str) -> str:
    """The :data:`NORMALIZE` key that suits a dataset name (``none`` for synthetic data)."""
    base = name.strip().lower().split("-")[0]
    return _DEFAULT_NORMALIZE.get(base, "none")


def load_dataset(
    name: str, root: str | Path | None = None, *, val_split: int = 0, download: bool = True,
    image_size: int = 224, resize: int = 256, workers: int = 8,
) -> Dataset:
    """Load a dataset by name into uint8 CPU tensors (image folders: file lists, read batch by batch).

    ``val_split=N > 0`` holds out the LAST N training images (no shuffle first, as the originals do) as the
    evaluation split, named ``"val"``; otherwise the official test set is used. CIFAR is downloaded into
    :func:`data_root` on first use when ``download`` is true; when it is missing and cannot be fetched, a
    one-line :class:`DataError` names the folder to fill.
    """
    key = name.strip().lower()
    if key in _FOLDER_DATASETS:
        from engine.imagefolder import load_folder_dataset

        if val_split:
            raise DataError(f"val_split is not supported for {key} (its val/ folder is the evaluation split)")
        base = data_root(root)
        if key == "imagenet" and (root is None or str(root) == ""):
            base = base / "imagenet"
        train, test, num_classes = load_folder_dataset(key, base, image_size=image_size, resize=resize,
                                                       workers=workers)
        return Dataset(key, train, test, num_classes)  # type: ignore[arg-type]
    if key in _CIFAR_CLASSES:
        train, test, num_classes = _load_cifar(key, data_root(root), download)
    elif key == "digits":
        train, test, num_classes = _load_digits()
    elif key == "synthetic" or key.startswith("synthetic-"):
        num_classes = _synthetic_classes(key)
        ds = make_synthetic(num_classes=num_classes)
        train, test = ds.train, ds.test
    else:
        raise DataError(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}")
    return _with_eval_split(key, train, test, num_classes, val_split)


def _with_eval_split(name: str, train: Split, test: Split, num_classes: int, val_split: int) -> Dataset:
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


# ---- CIFAR -----------------------------------------------------------------------------------------------


def _load_cifar(name: str, root: Path, download: bool) -> tuple[Split, Split, int]:
    import torchvision.datasets as tvd

    class_name, num_classes, label_key = _CIFAR_CLASSES[name]
    cls = getattr(tvd, class_name)
    folder = root / cls.base_folder
    train_files = [folder / f for f, _md5 in cls.train_list]
    test_files = [folder / f for f, _md5 in cls.test_list]
    if not all(p.is_file() for p in train_files + test_files):
        how = "could not be downloaded" if download else "downloading is turned off"
        missing = (
            f"{name} not found in {root} and {how}: put the extracted '{cls.base_folder}' folder there "
            "(or set REPRO_DATA)"
        )
        if not download:
            raise DataError(missing)
        try:
            _download_cifar(cls, root)
        except Exception as exc:  # no network, proxy, disk full, bad checksum: all the same to the user
            raise DataError(missing) from exc
        if not all(p.is_file() for p in train_files + test_files):
            raise DataError(missing)
    try:
        train = _read_cifar_batches(train_files, label_key, num_classes)
        test = _read_cifar_batches(test_files, label_key, num_classes)
    except (OSError, ValueError, KeyError, EOFError, pickle.UnpicklingError) as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise DataError(
            f"{name} in {folder} is unreadable ({reason}): delete that folder to download it again"
        ) from exc
    return train, test, num_classes


def _download_cifar(cls: type, root: Path) -> None:
    """Fetch and extract torchvision's CIFAR archive into ``root`` (with a socket timeout, so no hang)."""
    from torchvision.datasets import utils as tv_utils

    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(_DOWNLOAD_SOCKET_TIMEOUT_S)
    try:
        tv_utils.download_and_extract_archive(cls.url, str(root), filename=cls.filename, md5=cls.tgz_md5)
    finally:
        socket.setdefaulttimeout(previous)


def _numpy_reconstruct() -> object:
    """numpy's array-unpickling helper, from wherever this numpy keeps it (numpy._core from 2.0 on)."""
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy 1.x
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """`_codecs.encode` as protocol-2 pickles written by Python 3 use it for bytes, latin-1 only."""
    if encoding.lower().replace("-", "").replace("_", "") != "latin1":
        raise pickle.UnpicklingError(f"refused to decode bytes as {encoding!r}: not a CIFAR batch")
    return text.encode("latin1")


class _CifarUnpickler(pickle.Unpickler):
    """An unpickler that rebuilds dicts, lists, strings, numbers and numpy arrays and nothing else.

    A CIFAR batch needs no other global; refusing the rest means a planted file cannot run code."""

    def find_class(self, module: str, name: str) -> object:
        """Only numpy's array reconstruction (and latin-1 bytes); anything else is an UnpicklingError."""
        if (module, name) in (("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct")):
            return _numpy_reconstruct()
        if module == "numpy" and name in ("ndarray", "dtype"):
            return getattr(np, name)
        if (module, name) == ("_codecs", "encode"):
            return _latin1_encode
        # name it as Python 3 does: protocol-2 files say __builtin__ for builtins, as Python 2 did
        module, name = _compat_pickle.NAME_MAPPING.get((module, name),
                                                       (_compat_pickle.IMPORT_MAPPING.get(module, module), name))
        raise pickle.UnpicklingError(f"refused to unpickle '{module}.{name}': not a CIFAR batch")


def _load_cifar_pickle(path: Path) -> object:
    """One CIFAR batch file through the restricted unpickler; any failure names the file."""
    try:
        with open(path, "rb") as fh:
            return _CifarUnpickler(fh, encoding="latin1").load()  # the originals are Python 2 pickles
    except OSError:
        raise
    except Exception as exc:  # noqa: BLE001 - whatever a malformed pickle raises, the file is unusable
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise pickle.UnpicklingError(f"{path.name}: {reason}") from exc


def _read_cifar_batches(files: Sequence[Path], label_key: str, num_classes: int) -> Split:
    """Read CIFAR pickle batches (``data`` uint8 [n, 3072] in CHW order, labels) into one Split."""
    images, labels = [], []
    for path in files:
        entry = _load_cifar_pickle(path)
        if not isinstance(entry, dict):
            raise ValueError(f"{path.name} is not a CIFAR batch")
        entry = {k.decode() if isinstance(k, bytes) else k: v for k, v in entry.items()}
        data = np.asarray(entry["data"])
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
            raise ValueError(f"{path.name} holds {data.dtype} {data.shape}, not uint8 [n, 3072]")
        lab = np.asarray(entry[label_key], dtype=np.int64)
        if lab.shape != (data.shape[0],):
            raise ValueError(f"{path.name} has {lab.shape[0]} labels for {data.shape[0]} images")
        images.append(data)
        labels.append(lab)
    x = torch.from_numpy(np.ascontiguousarray(np.concatenate(images))).view(-1, 3, 32, 32)
    y = torch.from_numpy(np.concatenate(labels))
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise ValueError(f"labels outside 0..{num_classes - 1}")
    return Split(x, y)


# ---- digits ----------------------------------------------------------------------------------------------


def make_loader(split: Split, batch_size: int, *, train: bool, augment: Augment | None = None,
                **kwargs: object) -> DeviceLoader:
    """The loader a split needs: :class:`DeviceLoader` for in-memory tensors, a DataLoader-backed
    :class:`engine.imagefolder.FolderLoader` for image folders (crop and flip are then its own; ``augment``
    only says whether to flip)."""
    from engine.imagefolder import FolderLoader, FolderSplit

    if isinstance(split, FolderSplit):
        flip = augment.flip if augment is not None else False
        return FolderLoader(split, batch_size, train=train, flip=flip, **kwargs)  # type: ignore[return-value,arg-type]
    return DeviceLoader(split, batch_size, train=train, augment=augment, **kwargs)  # type: ignore[arg-type]


def _load_digits() -> tuple[Split, Split, int]:
    """scikit-learn's 1797 8x8 digits (0..16), bilinear to 32x32, uint8 0..255, three equal channels.

    A fixed stratified 80/20 split (``train_test_split(test_size=0.2, random_state=0, stratify=y)``):
    1437 training and 360 test images, 10 classes.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    img = torch.from_numpy(np.asarray(bunch.images, dtype=np.float32)).unsqueeze(1) / 16.0
    img = F.interpolate(img, size=(32, 32), mode="bilinear", align_corners=False)
    x = (img * 255.0).round_().clamp_(0, 255).to(torch.uint8).expand(-1, 3, -1, -1).contiguous()
    y = torch.from_numpy(np.asarray(bunch.target, dtype=np.int64))
    index = np.arange(len(y))
    train_idx, test_idx = train_test_split(index, test_size=0.2, random_state=0, stratify=bunch.target)
    tr, te = torch.from_numpy(train_idx), torch.from_numpy(test_idx)
    return Split(x[tr], y[tr]), Split(x[te], y[te]), 10


# ---- synthetic -------------------------------------------------------------------------------------------


def _synthetic_classes(key: str) -> int:
    if key == "synthetic":
        return 10
    suffix = key.split("-", 1)[1]
    if not suffix.isdigit() or int(suffix) < 2:
        raise DataError(f"bad synthetic dataset {key!r}: use 'synthetic' or 'synthetic-K' (K >= 2 classes)")
    return int(suffix)


def make_synthetic(
    num_train: int = 1024,
    num_test: int = 256,
    num_classes: int = 10,
    shape: tuple[int, int, int] = (3, 32, 32),
    seed: int = 0,
) -> Dataset:
    """Deterministic random uint8 images of any shape, for benchmarks and tests.

    Each class has a random template; an image is the mean of its class template and uniform noise, so the
    labels are learnable (a smoke run can show the loss falling) while the data stays cheap to make.
    """
    g = torch.Generator().manual_seed(seed)
    templates = torch.randint(0, 256, (num_classes, *shape), generator=g, dtype=torch.int16)

    def draw(n: int) -> Split:
        y = torch.randint(0, num_classes, (n,), generator=g, dtype=torch.int64)
        noise = torch.randint(0, 256, (n, *shape), generator=g, dtype=torch.int16)
        return Split(((templates[y] + noise) // 2).to(torch.uint8), y)

    train = draw(num_train)
    test = draw(num_test)
    name = "synthetic" if num_classes == 10 else f"synthetic-{num_classes}"
    return Dataset(name, train, test, num_classes)


# ----------------------------------------------------------------------------------------------------------
# Augmentation and the device-resident loader


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
        n = int(self.x.shape[0])
        gen = torch.Generator(device=self.device)
        gen.manual_seed(_epoch_seed(self.seed, epoch))
        order = torch.randperm(n, generator=gen, device=self.device)
        dy = dx = flip = None
        aug = self.augment
        if aug is not None and aug.crop_pad > 0:
            span = 2 * aug.crop_pad + 1
            dy = torch.randint(0, span, (n,), generator=gen, device=self.device)
            dx = torch.randint(0, span, (n,), generator=gen, device=self.device)
        if aug is not None and aug.flip:
            flip = torch.rand(n, generator=gen, device=self.device) < 0.5
        if self.world_size > 1:
            keep = slice(self.rank, self.num_samples * self.world_size, self.world_size)
            order = order[keep]
            dy, dx = (None if dy is None else dy[keep]), (None if dx is None else dx[keep])
            flip = None if flip is None else flip[keep]
        return EpochPlan(order, dy, dx, flip)

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
