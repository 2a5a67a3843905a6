"""Issue 19: the libjpeg-turbo decoder (DCT-domain downscaling) against the Pillow full decode it replaces: the same
crop boxes, pixels within resampling differences, the scale it picks, its fall-backs, its error, the faithful switch."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import simplejpeg
import torch
from PIL import Image

from engine.bench_decode import measure_decode
from engine.data import DataError, load_dataset
from engine.data import folders as folders_mod
from engine.data.decode import center_box, eighths_for, turbo_crop
from engine.data.folders import FolderImages, FolderSplit
from repro.recipe import load

pytestmark = pytest.mark.usefixtures("one_thread")


def wavy(height: int, width: int) -> np.ndarray:
    """A smooth but not flat image: waves of 60-90 px period over gradients, different in each channel and not
    symmetric, so a box that moved by one output pixel or a wrong flip would change many levels."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    r = 128 + 60 * np.sin(2 * np.pi * (x / 60 + y / 90))
    g = 30 + 190 * x / width + 20 * np.cos(2 * np.pi * y / 75)
    b = 40 + 170 * y / height
    return np.stack([r, g, b], -1).clip(0, 255).astype(np.uint8)


def write(path: Path, arr: np.ndarray, mode: str = "RGB", **kw: object) -> str:
    Image.fromarray(arr).convert(mode).save(path, **kw)
    return str(path)


def images(files: list[str], decoder: str, train: bool, resize: int = 256) -> FolderImages:
    split = FolderSplit(Path(files[0]).parent, files, [0] * len(files), ["c"], image_size=224, resize=resize,
                        workers=0, decoder=decoder)
    return FolderImages(split, train, seed=3, flip=True)


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> str:
    return write(tmp_path_factory.mktemp("dec") / "big.jpg", wavy(1500, 2000), quality=95)


@pytest.fixture(scope="module")
def photo(tmp_path_factory: pytest.TempPathFactory) -> str:
    return write(tmp_path_factory.mktemp("dec") / "photo.jpg", wavy(375, 500), quality=90)


def test_scale_is_the_smallest_that_keeps_the_crop_at_image_size() -> None:
    # a 1000-px crop: 1/8 would give 125 px, 1/4 gives 250 >= 224
    assert eighths_for(1000, 1000, 224) == 2
    assert eighths_for(448, 500, 224) == 4  # exactly 224 at 1/2
    assert eighths_for(447, 2000, 224) == 8  # 223.5 at 1/2: full size (3/8..7/8 are never used)
    assert eighths_for(1792, 1800, 224) == 1  # exactly 224 at 1/8
    assert eighths_for(100, 100, 224) == 8  # smaller than the output: full size, the resize enlarges


def test_a_1000_px_crop_of_2000x1500_is_decoded_at_a_quarter(big: str, monkeypatch: pytest.MonkeyPatch) -> None:
    shapes = []
    real = simplejpeg.decode_jpeg

    def spy(*args: object, **kwargs: object) -> np.ndarray:
        arr = real(*args, **kwargs)
        shapes.append(arr.shape)
        return arr

    monkeypatch.setattr(simplejpeg, "decode_jpeg", spy)
    out = turbo_crop(big, 224, 256, lambda h, w: (200, 300, 1000, 1000))
    assert out is not None and out.shape == (3, 224, 224) and out.dtype == torch.uint8
    assert shapes == [(375, 500, 3)]  # 1500/4 x 2000/4
    turbo_crop(big, 224, 256, None)  # evaluation: shorter side 1500 -> 375 at 1/4 holds 256, 187.5 at 1/8 does not
    assert shapes[1] == (375, 500, 3)


def test_turbo_draws_the_same_boxes_as_pillow(big: str, monkeypatch: pytest.MonkeyPatch) -> None:
    drawn: list[tuple] = []
    real = folders_mod.random_resized_crop_box

    def spy(h: int, w: int, scale: tuple, gen: torch.Generator) -> tuple:
        box = real(h, w, scale, gen)
        drawn.append((h, w, box))
        return box

    monkeypatch.setattr(folders_mod, "random_resized_crop_box", spy)
    keys = [(e, 0) for e in range(3)]
    for decoder in ("pillow", "turbo"):
        ds = images([big], decoder, train=True)
        for k in keys:
            ds[k]
    assert len(drawn) == 6 and drawn[:3] == drawn[3:]  # same original size, same box for every (seed, epoch, index)
    assert all(d[:2] == (1500, 2000) for d in drawn)


def test_turbo_training_crops_match_the_full_decode(big: str) -> None:
    """A crop of 448+ px each way is decoded at 1/2 or 1/4 scale, then resampled to 224: the only differences from
    full decode + resize are the DCT-domain reduction and the JPEG's discarded detail. Measured: 0.24-0.47 levels
    (of 255) on average; the same box moved by half a pixel of the reduced image gives 1.3-2.6, 1% taller 3-8."""
    pil, tur = images([big], "pillow", True), images([big], "turbo", True)
    scaled = 0
    for epoch in range(8):
        a, b = pil[(epoch, 0)][0].float(), tur[(epoch, 0)][0].float()
        _, _, h, w = folders_mod.random_resized_crop_box(
            1500, 2000, (0.08, 1.0), torch.Generator().manual_seed(folders_mod._image_seed(3, epoch, 0)))
        scaled += eighths_for(h, w, 224) < 8
        assert float((a - b).abs().mean()) < 1.0, epoch
    assert scaled >= 6  # most of these crops did go through the reduced decode


def test_turbo_eval_crop_matches_the_full_decode(big: str) -> None:
    a, b = images([big], "pillow", False)[0][0].float(), images([big], "turbo", False)[0][0].float()
    assert float((a - b).abs().mean()) < 1.0  # decoded at 1/4 (375x500) and resampled once; measured 0.35


def test_at_full_scale_turbo_gives_the_pillow_path_s_pixels(photo: str) -> None:
    # a 500x375 photo: evaluation needs the shorter side at 256 (1/2 gives 187.5), so it is decoded whole, and the
    # same torchvision calls run on the same libjpeg-turbo pixels
    for train in (True, False):
        pil, tur = images([photo], "pillow", train), images([photo], "turbo", train)
        for k in range(4):
            assert torch.equal(pil[(k, 0)][0], tur[(k, 0)][0])


def test_center_box_is_torchvision_s_resize_and_centre_crop() -> None:
    # 500 wide x 375 tall -> Resize(256): 256 x int(256 * 500 / 375) = 341; CenterCrop(224): top round(16) = 16,
    # left round(58.5) = 58 (round half to even, as torchvision)
    top, left, h, w = center_box(375, 500, 256, 224)
    assert (top, left, h, w) == pytest.approx((16 * 375 / 256, 58 * 500 / 341, 224 * 375 / 256, 224 * 500 / 341))
    assert center_box(500, 375, 256, 224) == pytest.approx((58 * 500 / 341, 16 * 375 / 256, 224 * 500 / 341,
                                                            224 * 375 / 256))


def test_png_cmyk_and_grey_files(tmp_path: Path) -> None:
    arr = wavy(300, 400)
    png = write(tmp_path / "a.png", arr)
    cmyk = write(tmp_path / "b.jpg", arr, "CMYK", quality=90)
    grey = write(tmp_path / "c.jpg", arr, "L", quality=90)
    assert turbo_crop(png, 224, 256, None) is None and turbo_crop(cmyk, 224, 256, None) is None  # Pillow's
    assert turbo_crop(grey, 224, 256, None) is not None  # libjpeg-turbo turns grey into RGB as Pillow does
    for f in (png, cmyk, grey):
        for train in (True, False):
            pil, tur = images([f], "pillow", train), images([f], "turbo", train)
            assert torch.equal(pil[(1, 0)][0], tur[(1, 0)][0]), (f, train)


@pytest.mark.parametrize(("content", "pillow_says"), [
    (b"not a jpeg", "cannot identify image file '{}'"),
    (b"\xff\xd8\xff\xe0 broken after the marker", "Truncated File Read"),  # simplejpeg refuses it first
])
def test_an_unreadable_file_is_the_same_one_line_error(tmp_path: Path, content: bytes, pillow_says: str) -> None:
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(content)
    messages = []
    for decoder in ("turbo", "pillow"):
        with pytest.raises(DataError) as err:
            images([str(bad)], decoder, train=False)[0]
        messages.append(str(err.value))
    assert messages[0] == messages[1] == f"cannot read image {bad}: {pillow_says.format(bad)}"


def test_faithful_decodes_with_pillow(tmp_path: Path) -> None:
    plain = load("earlybird_resnet18_imagenet")[0].recipe
    faithful = load("earlybird_resnet18_imagenet", faithful=True)[0].recipe
    assert plain.data.decoder == "turbo" and faithful.data.decoder == "pillow"
    assert "jpeg_dct_downscale" in faithful.run.faithful_applied
    assert load("demo_digits", faithful=True)[0].recipe.data.decoder == "turbo"  # no image folders there
    ds = load_dataset("synthetic-imagenet", tmp_path, image_size=32, resize=36, workers=0, decoder="pillow")
    assert ds.train.decoder == ds.test.decoder == ds.train.subset(4).decoder == "pillow"
    with pytest.raises(DataError, match="unknown decoder 'cv2'; choose from turbo, pillow"):
        load_dataset("synthetic-imagenet", tmp_path, decoder="cv2")


def test_decode_bench_reports_both_decoders(tmp_path: Path) -> None:
    res = measure_decode(3, repeats=1, size=(120, 90), folder=tmp_path).as_dict()
    files = sorted(p.name for p in (tmp_path / "repro-decode-bench-3-120x90-q90").iterdir())
    assert files == ["img00000.jpg", "img00001.jpg", "img00002.jpg"]
    assert Image.open(tmp_path / "repro-decode-bench-3-120x90-q90" / files[0]).size == (120, 90)
    pc = res["per_core_img_s"]
    assert set(pc) == {"pillow", "turbo"} and all(v > 0 for d in pc.values() for v in d.values())
    assert res["turbo_speedup"]["train"] == round(pc["turbo"]["train"] / pc["pillow"]["train"], 2)
    assert res["image"] == "120x90" and res["images"] == 3 and "loader_img_s" not in res
    assert math.isfinite(res["mean_kb"]) and res["mean_kb"] > 0
