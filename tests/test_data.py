"""Tests of engine.data: datasets, the CIFAR reader and its errors, the device loader and its augmentation."""

from __future__ import annotations

import math
import pickle
import socket
import subprocess
import sys
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import tomli_w
import torch
import torch.nn.functional as F

from engine import config
from engine import data as D
from engine.data import (
    NORMALIZE,
    Augment,
    DataError,
    DeviceLoader,
    Split,
    crop_flip,
    data_root,
    default_normalize,
    load_dataset,
    make_synthetic,
)

# ---- helpers ---------------------------------------------------------------------------------------------


def _ids_split(n: int, c: int = 3, h: int = 8, w: int = 8) -> Split:
    """Images whose every pixel is distinct within an image (mod 256), labels = sample index."""
    base = torch.arange(c * h * w, dtype=torch.int64).view(c, h, w)
    x = ((base.unsqueeze(0) * 7 + torch.arange(n).view(n, 1, 1, 1) * 13) % 256).to(torch.uint8)
    return Split(x, torch.arange(n, dtype=torch.int64))


def _reference_crop_flip(x: torch.Tensor, dy, dx, flip, pad: int, mode: str) -> torch.Tensor:
    """Independent construction: F.pad each image, slice its window, flip; one image at a time."""
    outs = []
    h, w = x.shape[-2:]
    for i in range(x.shape[0]):
        img = x[i : i + 1].float()
        if pad:
            img = F.pad(img, (pad, pad, pad, pad), mode="constant" if mode == "zeros" else "reflect")
            img = img[:, :, int(dy[i]) : int(dy[i]) + h, int(dx[i]) : int(dx[i]) + w]
        if flip is not None and bool(flip[i]):
            img = img.flip(-1)
        outs.append(img)
    return torch.cat(outs).to(x.dtype)


def _write_pickle(path: Path, obj: dict) -> None:
    with open(path, "wb") as fh:
        pickle.dump(obj, fh, protocol=2)


def _fake_cifar10(root: Path, per_batch: int = 3, n_test: int = 4, seed: int = 0) -> tuple[np.ndarray, ...]:
    """A cifar-10-batches-py tree in the real format (bytes keys, as the Python 2 originals)."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    xs, ys = [], []
    for b in range(1, 6):
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, per_batch)]
        _write_pickle(folder / f"data_batch_{b}", {b"batch_label": b"x", b"labels": labels, b"data": data})
        xs.append(data)
        ys.extend(labels)
    tdata = rng.integers(0, 256, (n_test, 3072), dtype=np.uint8)
    tlabels = [int(v) for v in rng.integers(0, 10, n_test)]
    _write_pickle(folder / "test_batch", {b"batch_label": b"t", b"labels": tlabels, b"data": tdata})
    _write_pickle(folder / "batches.meta", {b"label_names": [b"c%d" % i for i in range(10)]})
    return np.concatenate(xs), np.array(ys), tdata, np.array(tlabels)


def _fake_cifar100(root: Path, n_train: int = 6, n_test: int = 3, seed: int = 1) -> tuple[np.ndarray, ...]:
    """A cifar-100-python tree (str keys, fine and coarse labels)."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    out = []
    for fname, n in (("train", n_train), ("test", n_test)):
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        fine = [int(v) for v in rng.integers(0, 100, n)]
        _write_pickle(folder / fname, {"data": data, "fine_labels": fine, "coarse_labels": [0] * n})
        out += [data, np.array(fine)]
    _write_pickle(folder / "meta", {"fine_label_names": [f"c{i}" for i in range(100)]})
    return tuple(out)


@pytest.fixture
def no_download(monkeypatch):
    """Make torchvision's download fail as it does with no network, and record the attempts."""
    calls = []

    def fail(url, download_root, **kwargs):
        calls.append((url, download_root, socket.getdefaulttimeout()))
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr("torchvision.datasets.utils.download_and_extract_archive", fail)
    return calls


# ---- datasets --------------------------------------------------------------------------------------------


def test_digits_split_sizes_classes_and_determinism():
    a = load_dataset("digits")
    b = load_dataset("digits")
    assert (a.name, a.num_classes, a.eval_name) == ("digits", 10, "test")
    assert a.train.x.shape == (1437, 3, 32, 32) and a.test.x.shape == (360, 3, 32, 32)
    assert a.train.x.dtype == torch.uint8 and a.train.y.dtype == torch.int64
    assert a.train.x.device.type == "cpu"
    # stratified: every class in both splits, in the proportions of the whole
    assert torch.bincount(a.train.y, minlength=10).min() >= 139
    assert torch.bincount(a.test.y, minlength=10).tolist() == [36, 36, 35, 37, 36, 37, 36, 36, 35, 36]
    assert torch.equal(a.train.x, b.train.x) and torch.equal(a.test.y, b.test.y)
    # three identical channels, the full 0..255 range (16 -> 255), blank corners stay 0
    assert torch.equal(a.train.x[:, 0], a.train.x[:, 1]) and torch.equal(a.train.x[:, 0], a.train.x[:, 2])
    assert int(a.train.x.max()) == 255 and int(a.train.x[:, :, 0, 0].max()) == 0


def test_digits_normalisation_constants_match_the_train_split():
    x = load_dataset("digits").train.x.double() / 255.0
    mean = x.mean(dim=(0, 2, 3))
    std = x.std(dim=(0, 2, 3), unbiased=False)
    m, s = NORMALIZE["digits"]
    assert torch.allclose(mean, torch.tensor(m, dtype=torch.float64), atol=1e-6)
    assert torch.allclose(std, torch.tensor(s, dtype=torch.float64), atol=1e-6)


def test_reference_normalisation_constants():
    assert NORMALIZE["cifar10"] == ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010))
    assert NORMALIZE["imagenet"] == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    m, s = NORMALIZE["cifar100"]
    assert [round(v, 5) for v in m] == [0.50708, 0.48655, 0.44092]
    assert [round(v, 5) for v in s] == [0.26733, 0.25644, 0.27615]
    assert NORMALIZE["none"] == ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))


def test_synthetic_is_deterministic_and_sized():
    a, b = load_dataset("synthetic"), load_dataset("synthetic")
    assert a.train.x.shape == (1024, 3, 32, 32) and a.test.x.shape == (256, 3, 32, 32)
    assert a.num_classes == 10 and a.train.x.dtype == torch.uint8
    assert torch.equal(a.train.x, b.train.x) and torch.equal(a.test.y, b.test.y)
    c = load_dataset("synthetic-100")
    assert c.num_classes == 100 and int(c.train.y.max()) < 100 and int(c.train.y.max()) > 10
    small = make_synthetic(num_train=5, num_test=2, num_classes=3, shape=(1, 4, 6))
    assert small.train.x.shape == (5, 1, 4, 6) and small.test.y.shape == (2,)
    with pytest.raises(DataError, match="synthetic-K"):
        load_dataset("synthetic-x")


def test_unknown_dataset_message():
    with pytest.raises(DataError) as err:
        load_dataset("mnist")
    assert str(err.value) == ("unknown dataset 'mnist'; choose from cifar10, cifar100, digits, synthetic, imagenet, "
                              "synthetic-imagenet")


def test_registered_loaders_are_the_schema_names():
    """One list of names: the data package loads exactly the datasets the recipe schema accepts."""
    assert set(D.DATASET_LOADERS) == set(config.DATASETS)
    assert D.DATASETS is config.DATASETS
    with pytest.raises(ValueError, match="not in engine.config.DATASETS"):
        D.register_dataset("mnist")
    with pytest.raises(ValueError, match="registered twice"):
        D.register_dataset("digits", normalize="digits")(lambda key, options: None)


def test_default_normalisation_by_name():
    got = {n: default_normalize(n) for n in (*config.DATASETS, "synthetic-5", "Cifar10", "mnist")}
    assert got == {"cifar10": "cifar10", "cifar100": "cifar100", "digits": "digits", "synthetic": "none",
                   "imagenet": "imagenet", "synthetic-imagenet": "none", "synthetic-5": "none", "Cifar10": "cifar10",
                   "mnist": "none"}


def test_val_split_holds_out_the_last_training_images():
    full = load_dataset("digits")
    ds = load_dataset("digits", val_split=100)
    assert ds.eval_name == "val"
    assert torch.equal(ds.train.x, full.train.x[:-100]) and torch.equal(ds.train.y, full.train.y[:-100])
    assert torch.equal(ds.val.x, full.train.x[-100:]) and torch.equal(ds.val.y, full.train.y[-100:])
    assert ds.eval is ds.val and torch.equal(ds.test.x, full.test.x)  # the official test split stays
    with pytest.raises(DataError, match="val_split=1437 leaves no training images"):
        load_dataset("digits", val_split=1437)
    with pytest.raises(DataError, match="val_split"):
        load_dataset("digits", val_split=-1)


def test_data_root_resolution(monkeypatch, tmp_path):
    monkeypatch.setenv("REPRO_DATA", str(tmp_path / "env"))
    assert data_root(tmp_path / "explicit") == (tmp_path / "explicit").resolve()
    assert data_root() == (tmp_path / "env").resolve()
    monkeypatch.delenv("REPRO_DATA")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert data_root() == (tmp_path / "home" / ".cache" / "repro" / "data").resolve()


# ---- CIFAR -----------------------------------------------------------------------------------------------


def test_missing_cifar10_with_failed_download_is_one_clear_line(tmp_path, no_download):
    with pytest.raises(DataError) as err:
        load_dataset("cifar10", tmp_path)
    root = tmp_path.resolve()
    assert str(err.value) == (
        f"cifar10 not found in {root} and could not be downloaded: put the extracted 'cifar-10-batches-py' "
        "folder there (or set REPRO_DATA)"
    )
    assert "\n" not in str(err.value)
    assert isinstance(err.value.__cause__, urllib.error.URLError)
    assert len(no_download) == 1 and no_download[0][1] == str(root)
    assert no_download[0][2] is not None and socket.getdefaulttimeout() is None  # a timeout, then restored


def test_missing_cifar100_names_its_folder(tmp_path, no_download, monkeypatch):
    monkeypatch.setenv("REPRO_DATA", str(tmp_path))
    with pytest.raises(DataError) as err:
        load_dataset("cifar100")
    assert str(err.value) == (
        f"cifar100 not found in {tmp_path.resolve()} and could not be downloaded: put the extracted "
        "'cifar-100-python' folder there (or set REPRO_DATA)"
    )
    with pytest.raises(DataError, match="downloading is turned off: put the extracted 'cifar-100-python'"):
        load_dataset("cifar100", download=False)
    assert len(no_download) == 1  # download=False never tried


def test_fake_cifar10_tree_is_read_in_nchw_uint8(tmp_path, no_download):
    xtr, ytr, xte, yte = _fake_cifar10(tmp_path)
    ds = load_dataset("cifar10", tmp_path)
    assert not no_download  # the files were there: no download attempted
    assert (ds.name, ds.num_classes, ds.eval_name) == ("cifar10", 10, "test")
    assert ds.train.x.shape == (15, 3, 32, 32) and ds.test.x.shape == (4, 3, 32, 32)
    assert ds.train.x.dtype == torch.uint8 and ds.train.y.dtype == torch.int64
    # row i of the file is 1024 red, then green, then blue values, each row-major 32x32
    i, c, r, k = 7, 2, 5, 30
    assert int(ds.train.x[i, c, r, k]) == int(xtr[i, c * 1024 + r * 32 + k])
    assert np.array_equal(ds.train.x.numpy().reshape(15, -1), xtr)
    assert np.array_equal(ds.test.x.numpy().reshape(4, -1), xte)
    assert ds.train.y.tolist() == ytr.tolist() and ds.test.y.tolist() == yte.tolist()
    val = load_dataset("cifar10", tmp_path, val_split=5)
    assert val.eval_name == "val" and len(val.train) == 10
    assert np.array_equal(val.val.x.numpy().reshape(5, -1), xtr[-5:])


def test_fake_cifar100_tree_uses_fine_labels(tmp_path, no_download):
    xtr, ytr, xte, yte = _fake_cifar100(tmp_path)
    ds = load_dataset("cifar100", tmp_path)
    assert ds.num_classes == 100 and ds.train.x.shape == (6, 3, 32, 32) and ds.test.x.shape == (3, 3, 32, 32)
    assert np.array_equal(ds.train.x.numpy().reshape(6, -1), xtr)
    assert ds.train.y.tolist() == ytr.tolist() and ds.test.y.tolist() == yte.tolist()


def test_download_then_read(tmp_path, monkeypatch):
    def fake_download(url, download_root, **kwargs):
        assert url.endswith("cifar-10-python.tar.gz") and kwargs["filename"] == "cifar-10-python.tar.gz"
        _fake_cifar10(Path(download_root), per_batch=2, n_test=1)

    monkeypatch.setattr("torchvision.datasets.utils.download_and_extract_archive", fake_download)
    ds = load_dataset("cifar10", tmp_path / "new")
    assert ds.train.x.shape == (10, 3, 32, 32) and len(ds.test) == 1


def test_corrupt_cifar_file_is_one_line(tmp_path, no_download):
    _fake_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(DataError) as err:
        load_dataset("cifar10", tmp_path)
    msg = str(err.value)
    assert msg.startswith("cifar10 in ") and "unreadable" in msg and "\n" not in msg
    assert not no_download


class _Hostile:
    """Unpickling this runs `exec`, which writes a marker file: what a planted batch file could do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",)


def _plant_hostile_batch(root: Path, marker: Path) -> Path:
    """A fake cifar-10 tree whose data_batch_1 runs code when pickle.load reads it."""
    _fake_cifar10(root)
    bad = root / "cifar-10-batches-py" / "data_batch_1"
    with open(bad, "wb") as fh:
        pickle.dump({b"data": _Hostile(marker), b"labels": [0]}, fh, protocol=2)
    return bad


def test_hostile_cifar_pickle_is_refused_without_running_it(tmp_path, no_download):
    marker = tmp_path / "pwned"
    bad = _plant_hostile_batch(tmp_path / "data", marker)
    with pytest.raises(DataError) as err:
        load_dataset("cifar10", tmp_path / "data")
    assert str(err.value) == (
        f"cifar10 in {bad.parent} is unreadable (data_batch_1: refused to unpickle 'builtins.exec': not a CIFAR "
        "batch): delete that folder to download it again"
    )
    assert not marker.exists()
    assert not no_download


def test_repro_run_on_a_hostile_cifar_tree_fails_with_one_line(tmp_path):
    marker = tmp_path / "pwned"
    bad = _plant_hostile_batch(tmp_path / "data", marker)
    recipe = tmp_path / "hostile.toml"
    recipe.write_text(tomli_w.dumps({
        "name": "hostile", "paper": "demo",
        "data": {"dataset": "cifar10", "root": str(tmp_path / "data"), "train_subset": 8, "test_subset": 4},
        "model": {"arch": "cifar_resnet_8", "width": 0.25}, "train": {"epochs": 1},
        "stage": [{"name": "train", "method": "train"}],
    }))
    res = subprocess.run([sys.executable, "-m", "repro.cli", "run", str(recipe), "--device", "cpu", "--quiet",
                          "--root", str(tmp_path / "runs")], capture_output=True, text=True, timeout=300)
    assert res.returncode == 1
    naming = [line for line in res.stderr.splitlines() if "data_batch_1" in line]
    assert naming == [
        f"error: run failed: cifar10 in {bad.parent} is unreadable (data_batch_1: refused to unpickle "
        "'builtins.exec': not a CIFAR batch): delete that folder to download it again"
    ]
    assert "Traceback" not in res.stderr
    assert not marker.exists()


# ---- augmentation ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["zeros", "reflect"])
def test_crop_flip_matches_pad_and_slice(mode):
    x = _ids_split(24).x
    g = torch.Generator().manual_seed(3)
    dy = torch.randint(0, 9, (24,), generator=g)
    dx = torch.randint(0, 9, (24,), generator=g)
    dy[:4] = torch.tensor([0, 8, 0, 8])  # the four extreme windows
    dx[:4] = torch.tensor([0, 0, 8, 8])
    flip = torch.rand(24, generator=g) < 0.5
    got = crop_flip(x, dy, dx, flip, 4, mode)
    assert got.dtype == torch.uint8 and got.shape == x.shape
    assert torch.equal(got, _reference_crop_flip(x, dy, dx, flip, 4, mode))
    assert torch.equal(crop_flip(x, dy, dx, None, 4, mode), _reference_crop_flip(x, dy, dx, None, 4, mode))


def test_reflect_and_zero_borders():
    x = torch.arange(64, dtype=torch.uint8).view(1, 1, 8, 8) + 1  # no zero pixel in the image
    top_left = torch.zeros(1, dtype=torch.int64)
    z = crop_flip(x, top_left, top_left, None, 2, "zeros")[0, 0]
    r = crop_flip(x, top_left, top_left, None, 2, "reflect")[0, 0]
    assert (z[:2] == 0).all() and (z[:, :2] == 0).all()
    assert torch.equal(z[2:, 2:], x[0, 0, :6, :6])
    # reflection without the edge: padded row -2 is source row 2, row -1 is row 1
    assert torch.equal(r[0, 2:], x[0, 0, 2, :6]) and torch.equal(r[1, 2:], x[0, 0, 1, :6])
    assert int(r[0, 0]) == int(x[0, 0, 2, 2]) and int(r[1, 0]) == int(x[0, 0, 1, 2])
    assert torch.equal(r[2:, 2:], x[0, 0, :6, :6])
    centre = torch.full((1,), 2, dtype=torch.int64)
    for mode in ("zeros", "reflect"):
        assert torch.equal(crop_flip(x, centre, centre, None, 2, mode), x)


def test_flip_flips_exactly_the_chosen_images():
    x = _ids_split(6).x
    flip = torch.tensor([True, False, False, True, True, False])
    out = crop_flip(x, None, None, flip, 0)
    for i in range(6):
        assert torch.equal(out[i], x[i].flip(-1) if flip[i] else x[i])
    assert crop_flip(x, None, None, None, 0) is x


def test_augment_validation():
    with pytest.raises(DataError, match="pad_mode"):
        Augment(pad_mode="edge")
    with pytest.raises(DataError, match="crop_pad"):
        DeviceLoader(_ids_split(4), 2, train=True, augment=Augment(crop_pad=8, pad_mode="reflect"))
    with pytest.raises(DataError, match="unknown normalisation"):
        DeviceLoader(_ids_split(4), 2, train=False, normalize="cifar")


# ---- the loader ------------------------------------------------------------------------------------------


def test_normalisation_of_a_constant_image():
    split = Split(torch.full((3, 3, 4, 4), 128, dtype=torch.uint8), torch.zeros(3, dtype=torch.int64))
    x, y = next(iter(DeviceLoader(split, 3, train=False, normalize="cifar10")))
    assert x.dtype == torch.float32 and y.dtype == torch.int64 and x.shape == (3, 3, 4, 4)
    expected = [(128 / 255 - 0.4914) / 0.2023, (128 / 255 - 0.4822) / 0.1994, (128 / 255 - 0.4465) / 0.2010]
    for c in range(3):
        assert torch.allclose(x[:, c], torch.full_like(x[:, c], expected[c]), atol=1e-5)
    x2, _ = next(iter(DeviceLoader(split, 3, train=False, normalize=((0.5, 0.5, 0.5), (0.25, 0.25, 0.25)))))
    assert torch.allclose(x2, torch.full_like(x2, (128 / 255 - 0.5) / 0.25), atol=1e-5)
    x3, _ = next(iter(DeviceLoader(split, 3, train=False, normalize="none")))
    assert torch.allclose(x3, torch.full_like(x3, 128 / 255), atol=1e-6)


def _epoch(loader: DeviceLoader, epoch: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    loader.set_epoch(epoch)
    return list(loader)


def test_same_seed_and_epoch_replay_exactly_other_epochs_differ():
    split = _ids_split(50)
    aug = Augment(crop_pad=2, pad_mode="reflect")
    a = DeviceLoader(split, 16, train=True, augment=aug, seed=5, normalize="none")
    b = DeviceLoader(split, 16, train=True, augment=aug, seed=5, normalize="none")
    ea, eb = _epoch(a, 3), _epoch(b, 3)
    assert all(torch.equal(xa, xb) and torch.equal(ya, yb) for (xa, ya), (xb, yb) in zip(ea, eb, strict=True))
    order3 = torch.cat([y for _, y in ea])
    order4 = torch.cat([y for _, y in _epoch(a, 4)])
    assert not torch.equal(order3, order4)
    other_seed = DeviceLoader(split, 16, train=True, augment=aug, seed=6, normalize="none")
    assert not torch.equal(order3, torch.cat([y for _, y in _epoch(other_seed, 3)]))
    # without set_epoch, iteration runs the following epoch
    a.set_epoch(3)
    first, second = list(a), list(a)
    assert torch.equal(torch.cat([y for _, y in first]), order3)
    assert torch.equal(torch.cat([y for _, y in second]), order4) and a.epoch == 5


def test_every_sample_once_per_epoch_and_partial_batches():
    split = _ids_split(37)
    loader = DeviceLoader(split, 8, train=True, augment=Augment(), normalize="none")
    assert len(loader) == 5
    batches = _epoch(loader, 0)
    assert [len(y) for _, y in batches] == [8, 8, 8, 8, 5]
    assert torch.equal(torch.cat([y for _, y in batches]).sort().values, torch.arange(37))
    dropping = DeviceLoader(split, 8, train=True, augment=Augment(), drop_last=True, normalize="none")
    assert len(dropping) == 4 and [len(y) for _, y in dropping] == [8, 8, 8, 8]
    ev = DeviceLoader(split, 8, train=False, normalize="none")
    assert torch.equal(torch.cat([y for _, y in ev]), torch.arange(37))


def test_training_batches_are_the_planned_crops_and_flips():
    split = _ids_split(20)
    loader = DeviceLoader(split, 7, train=True, augment=Augment(crop_pad=3), seed=1, normalize="none")
    plan = loader.plan(2)
    assert plan.dy is not None and plan.dx is not None and plan.flip is not None
    assert int(plan.dy.min()) >= 0 and int(plan.dy.max()) <= 6 and plan.flip.dtype == torch.bool
    xs, ys = zip(*_epoch(loader, 2), strict=True)
    x, y = torch.cat(xs), torch.cat(ys)
    assert torch.equal(y, plan.order)
    expected = _reference_crop_flip(split.x[plan.order], plan.dy, plan.dx, plan.flip, 3, "zeros")
    assert torch.equal((x * 255).round().to(torch.uint8), expected)
    # flips are per image, about half of them
    big = DeviceLoader(_ids_split(2000), 100, train=True, augment=Augment(), normalize="none")
    assert 0.45 < big.plan(0).flip.float().mean().item() < 0.55


def test_eval_loader_keeps_order_and_never_augments():
    split = _ids_split(10)
    ev = DeviceLoader(split, 4, train=False, augment=Augment(), normalize="none")
    x = torch.cat([xb for xb, _ in ev])
    assert torch.equal((x * 255).round().to(torch.uint8), split.x)
    assert torch.equal(torch.cat([xb for xb, _ in ev]), x)


def test_channels_last_gives_the_same_values():
    split = _ids_split(9)
    kw = dict(train=True, augment=Augment(), seed=2, normalize="cifar10")
    plain = _epoch(DeviceLoader(split, 4, **kw), 1)
    cl = _epoch(DeviceLoader(split, 4, channels_last=True, **kw), 1)
    for (xa, _), (xb, _) in zip(plain, cl, strict=True):
        assert xb.is_contiguous(memory_format=torch.channels_last)
        assert torch.equal(xa, xb)


def test_rank_shards_cover_the_epoch_once():
    split = _ids_split(23)
    seen = []
    lengths = set()
    for rank in range(3):
        ld = DeviceLoader(split, 4, train=True, augment=Augment(), rank=rank, world_size=3, normalize="none")
        ys = torch.cat([y for _, y in _epoch(ld, 7)])
        lengths.add((len(ld), len(ys)))
        seen.append(ys)
    assert lengths == {(2, 7)}  # 23 -> 21 usable, 7 per rank, equal step counts
    allseen = torch.cat(seen)
    assert len(set(allseen.tolist())) == 21
    ev = [DeviceLoader(split, 4, train=False, rank=r, world_size=3, normalize="none") for r in range(3)]
    got = torch.cat([torch.cat([y for _, y in ld]) for ld in ev])
    assert torch.equal(got.sort().values, torch.arange(23))


def test_loader_length_matches_ceil():
    split = _ids_split(10)
    for bs in (1, 3, 10, 11):
        ld = DeviceLoader(split, bs, train=False, normalize="none")
        assert len(ld) == math.ceil(10 / bs) == len(list(ld))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_cuda_iteration_has_no_host_sync():
    split = _ids_split(300, h=32, w=32)
    loader = DeviceLoader(
        split, 64, device="cuda", train=True, augment=Augment(pad_mode="reflect"), channels_last=True
    )
    ev = DeviceLoader(split, 64, device="cuda", train=False)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(2):
            for x, y in loader:
                assert x.is_cuda and y.is_cuda
            for xe, _ in ev:
                assert xe.is_cuda
    finally:
        torch.cuda.set_sync_debug_mode("default")
    cpu = DeviceLoader(split, 64, train=True, augment=Augment(pad_mode="reflect"))
    gpu_plan = loader.plan(0)
    assert gpu_plan.order.is_cuda
    # the same crop on both devices for the same choices
    p = cpu.plan(0)
    out_cpu = crop_flip(split.x[p.order], p.dy, p.dx, p.flip, 4, "reflect")
    out_gpu = crop_flip(split.x.cuda()[p.order.cuda()], p.dy.cuda(), p.dx.cuda(), p.flip.cuda(), 4, "reflect")
    assert torch.equal(out_cpu, out_gpu.cpu())
    assert D.DeviceLoader is DeviceLoader
