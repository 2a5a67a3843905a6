"""Data sets loaded whole into memory as uint8 tensors: CIFAR-10/100, digits and synthetic images.

``cifar10`` and ``cifar100`` are torchvision's download, read straight from its pickle batches through an
unpickler that rebuilds arrays and nothing else; ``digits`` is scikit-learn's bundled handwritten digits,
resized to 32x32x3 (no download); ``synthetic`` / ``synthetic-K`` are deterministic random images with K
classes, for benchmarks and tests. Each registers its loader beside its definition.
"""

from __future__ import annotations

import _compat_pickle
import pickle
import socket
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from engine.data.base import (
    DataError,
    Dataset,
    LoadOptions,
    Split,
    data_root,
    register_dataset,
    with_eval_split,
)

try:  # numpy's array-unpickling helper, from wherever this numpy keeps it (numpy._core from 2.0 on)
    from numpy._core.multiarray import _reconstruct as _numpy_reconstruct
except ImportError:  # numpy 1.x
    from numpy.core.multiarray import _reconstruct as _numpy_reconstruct

__all__ = ["make_synthetic"]

_CIFAR_CLASSES = {"cifar10": ("CIFAR10", 10, "labels"), "cifar100": ("CIFAR100", 100, "fine_labels")}

_DOWNLOAD_SOCKET_TIMEOUT_S = 60.0


# ---- CIFAR -----------------------------------------------------------------------------------------------


@register_dataset("cifar100", normalize="cifar100")
@register_dataset("cifar10", normalize="cifar10")
def _cifar(key: str, options: LoadOptions) -> Dataset:
    """CIFAR-10/100 from :func:`data_root` (downloaded on first use when ``options.download``)."""
    train, test, num_classes = _load_cifar(key, data_root(options.root), options.download)
    return with_eval_split(key, train, test, num_classes, options.val_split)


def _load_cifar(name: str, root: Path, download: bool) -> tuple[Split, Split, int]:
    import torchvision.datasets as tvd  # deferred: torchvision's datasets are slow to import, CIFAR only

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
    from torchvision.datasets import utils as tv_utils  # deferred: needed only to download

    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(_DOWNLOAD_SOCKET_TIMEOUT_S)
    try:
        tv_utils.download_and_extract_archive(cls.url, str(root), filename=cls.filename, md5=cls.tgz_md5)
    finally:
        socket.setdefaulttimeout(previous)


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
            return _numpy_reconstruct
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


@register_dataset("digits", normalize="digits")
def _digits(key: str, options: LoadOptions) -> Dataset:
    """scikit-learn's digits, 32x32x3 (see :func:`_load_digits`)."""
    train, test, num_classes = _load_digits()
    return with_eval_split(key, train, test, num_classes, options.val_split)


def _load_digits() -> tuple[Split, Split, int]:
    """scikit-learn's 1797 8x8 digits (0..16), bilinear to 32x32, uint8 0..255, three equal channels.

    A fixed stratified 80/20 split (``train_test_split(test_size=0.2, random_state=0, stratify=y)``):
    1437 training and 360 test images, 10 classes.
    """
    from sklearn.datasets import load_digits  # deferred: sklearn is slow to import, digits only
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


@register_dataset("synthetic", family=True)
def _synthetic(key: str, options: LoadOptions) -> Dataset:
    """``synthetic`` (10 classes) or ``synthetic-K`` (K classes): :func:`make_synthetic`'s default sizes."""
    num_classes = _synthetic_classes(key)
    ds = make_synthetic(num_classes=num_classes)
    return with_eval_split(key, ds.train, ds.test, num_classes, options.val_split)


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

