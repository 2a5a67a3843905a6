"""Image-folder data (ImageNet path): folder scan, crops, the DataLoader-backed loader, sharding, errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from engine.data import NORMALIZE, Augment, DataError, DeviceLoader, load_dataset, make_loader
from engine.data.folders import FolderLoader, make_synthetic_folders, random_resized_crop_box


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data")
    make_synthetic_folders(root / "synthetic-imagenet")
    return root


def test_synthetic_tree_is_scanned_like_imagefolder(folders: Path) -> None:
    ds = load_dataset("synthetic-imagenet", folders, image_size=64, resize=72, workers=0)
    assert ds.num_classes == 10 and len(ds.train) == 160 and len(ds.test) == 40
    assert ds.train.y.tolist() == [c for c in range(10) for _ in range(16)]  # sorted class folders, sorted files
    assert ds.train.image_shape == (3, 64, 64)
    assert Path(ds.test.files[5]).parent.name == "n00000001"
    sub = ds.train.subset(8)  # spread over the classes, not the first class only
    assert sub.y.tolist() == [0, 1, 2, 3, 5, 6, 7, 8]  # indices floor(i * 160 / 8) = 0, 20, ..., 140


def test_second_call_reuses_the_tree(folders: Path) -> None:
    before = sorted(p.stat().st_mtime_ns for p in (folders / "synthetic-imagenet" / "val").rglob("*.jpeg"))
    make_synthetic_folders(folders / "synthetic-imagenet")
    after = sorted(p.stat().st_mtime_ns for p in (folders / "synthetic-imagenet" / "val").rglob("*.jpeg"))
    assert before == after


def test_crop_box_within_bounds_and_scale() -> None:
    g = torch.Generator().manual_seed(0)
    for _ in range(200):
        top, left, h, w = random_resized_crop_box(60, 90, (0.08, 1.0), g)
        assert 0 <= top and top + h <= 60 and 0 <= left and left + w <= 90
        # rounding each side moves the area by at most about one row plus one column
        assert 0.08 * 5400 - (h + w) <= h * w <= 5400
        assert 3 / 4 - 0.1 < w / h < 4 / 3 + 0.1


def test_crop_box_fallback_is_the_centred_largest_allowed_crop() -> None:
    g = torch.Generator().manual_seed(0)
    # a 10x100 strip cannot hold a full-area crop of aspect <= 4/3: fall back to h=10, w=round(10*4/3)=13, centred
    assert random_resized_crop_box(10, 100, (1.0, 1.0), g) == (0, (100 - 13) // 2, 10, 13)
    # 100 tall x 10 wide: w=10, h=round(10/(3/4))=13
    assert random_resized_crop_box(100, 10, (1.0, 1.0), g) == ((100 - 13) // 2, 0, 13, 10)


def test_eval_batches_match_torchvision_pil_transforms(folders: Path) -> None:
    """The originals' validation transform, run on PIL images by torchvision, as the independent route."""
    import torchvision.transforms as T
    from PIL import Image

    ds = load_dataset("synthetic-imagenet", folders, image_size=64, resize=72, workers=0)
    x, y = next(iter(make_loader(ds.test, 8, train=False, normalize="imagenet")))
    tf = T.Compose([T.Resize(72), T.CenterCrop(64), T.PILToTensor()])
    ref = torch.stack([tf(Image.open(f).convert("RGB")) for f in ds.test.files[:8]]).float()
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in NORMALIZE["imagenet"])
    pixels = (x * std + mean) * 255
    assert y.tolist() == ds.test.labels[:8]
    diff = (pixels - ref).abs()
    assert float(diff.max()) <= 1.01 and float(diff.mean()) < 0.05  # resampling rounds differently by <= 1 level


def test_training_epochs_replay_exactly_whatever_the_workers(folders: Path) -> None:
    ds = load_dataset("synthetic-imagenet", folders, image_size=32, resize=40, workers=0)

    def epoch(workers: int, e: int) -> list[torch.Tensor]:
        ds.train.workers = workers
        loader = make_loader(ds.train, 16, train=True, augment=Augment(), normalize="imagenet", seed=5)
        loader.set_epoch(e)
        return [torch.cat([x.flatten(), y.float()]) for x, y in loader]

    a, b, c = epoch(0, 1), epoch(2, 1), epoch(0, 2)
    assert len(a) == 10  # 160 images, batch 16, drop_last
    assert all(torch.equal(p, q) for p, q in zip(a, b))
    assert not torch.equal(a[0], c[0])


def test_ranks_split_training_and_evaluation_disjointly(folders: Path) -> None:
    ds = load_dataset("synthetic-imagenet", folders, image_size=32, resize=40, workers=0)
    train = [FolderLoader(ds.train, 8, train=True, seed=1, rank=r, world_size=3) for r in range(3)]
    idx = [[i for _, i in t.sampler] for t in train]
    assert [len(i) for i in idx] == [53, 53, 53]  # floor(160 / 3) each, the remainder dropped
    assert len(set(idx[0]) | set(idx[1]) | set(idx[2])) == 159
    ev = [FolderLoader(ds.test, 8, train=False, rank=r, world_size=3) for r in range(3)]
    assert sorted(i for e in ev for i in e.sampler) == list(range(40))
    assert sum(len(y) for e in ev for _, y in e) == 40


def test_missing_imagenet_names_the_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError) as err:
        load_dataset("imagenet", tmp_path / "nowhere")
    assert str(err.value) == (f"imagenet not found at {(tmp_path / 'nowhere').resolve()}: put the ImageFolder tree "
                              "(train/, val/) there, or set [data].root or REPRO_DATA")


def test_val_classes_must_match_train(tmp_path: Path) -> None:
    for split, classes in (("train", ["a", "b"]), ("val", ["a", "c"])):
        for c in classes:
            (tmp_path / split / c).mkdir(parents=True)
            (tmp_path / split / c / "x.jpg").write_bytes(b"")
    with pytest.raises(DataError, match=r"val has 2 class folders but train/ has 2 \(e\.g\. c only here\)"):
        load_dataset("imagenet", tmp_path)


@pytest.mark.parametrize("workers", [0, 1])
def test_unreadable_image_is_a_one_line_error(tmp_path: Path, workers: int) -> None:
    for split in ("train", "val"):
        (tmp_path / split / "a").mkdir(parents=True)
        (tmp_path / split / "a" / "broken.jpg").write_bytes(b"not a jpeg")
    ds = load_dataset("imagenet", tmp_path, image_size=32, resize=32, workers=workers)
    with pytest.raises(DataError) as err:
        next(iter(make_loader(ds.test, 1, train=False)))
    assert str(err.value).startswith(f"cannot read image {tmp_path / 'val' / 'a' / 'broken.jpg'}: ")
    assert "\n" not in str(err.value)


def test_device_loader_refuses_a_folder_split(folders: Path) -> None:
    ds = load_dataset("synthetic-imagenet", folders, workers=0)
    with pytest.raises(DataError, match="DeviceLoader takes an in-memory Split, not FolderSplit"):
        DeviceLoader(ds.train, 8, train=False)  # type: ignore[arg-type]
