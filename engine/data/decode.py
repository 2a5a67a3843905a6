"""Decoding one image-folder file into a cropped uint8 square: libjpeg-turbo at reduced scale, or Pillow in full.

A training crop of a large photo is often a small part of it, and evaluation shrinks the shorter side to 256, so a
full decode computes many pixels only to throw them away. libjpeg-turbo (through simplejpeg) can decode a JPEG at
1/2, 1/4 or 1/8 of its size inside the inverse DCT, for less work than a full decode. ``turbo`` therefore:

1. reads the header for the original height and width;
2. asks the caller for the crop box in ORIGINAL pixels (the same draws as a full decode: crops are reproducible
   per (seed, epoch, index) and identical in geometry whatever the decoder);
3. decodes at the smallest of those scales that keeps the box at least ``size`` pixels each way
   (:func:`eighths_for`);
4. at full scale, crops and resizes with the very torchvision calls of the Pillow path (:func:`crop_full`: the
   same pixels out, libjpeg-turbo decodes for Pillow too); at a reduced scale it maps the box to the scaled image
   (pixel ``x`` of the original is ``x * M / 8`` there, as libjpeg scales whole 8x8 blocks) and resamples it to
   ``size`` x ``size`` with antialiased bilinear (Pillow's resize, which takes the fractional box).

Pixels differ from a full decode + resize by resampling only. ``pillow`` (:func:`pillow_rgb`) is the full decode that
torchvision's ImageFolder does; files ``turbo`` does not take (PNG, CMYK JPEGs, anything simplejpeg refuses) go there
too, and an unreadable file is a one-line :class:`DataError`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from engine.errors import DataError

__all__ = ["DECODERS", "Box", "center_box", "crop_full", "eighths_for", "pillow_rgb", "turbo_crop"]

DECODERS = ("turbo", "pillow")
JPEG_MAGIC = b"\xff\xd8\xff"
# JPEG colour spaces libjpeg-turbo turns into RGB as Pillow does; CMYK and YCCK go to Pillow
TURBO_COLOURS = ("YCbCr", "Gray", "RGB")

Box = tuple[float, float, float, float]
"""(top, left, height, width) of a crop, in pixels of the original image (fractions allowed)."""


def eighths_for(box_h: float, box_w: float, size: int) -> int:
    """M of the smallest scale M/8 (1/8, 1/4, 1/2, else 1) whose decode still holds the box at ``size`` pixels or
    more each way. Only powers of two: libjpeg-turbo's 3/8..7/8 inverse DCTs are plain C and measured slower than a
    full decode (500x375: 3/4 scale 1.5 ms, full 1.2 ms, 1/2 1.0 ms)."""
    for m in (1, 2, 4):
        if min(box_h, box_w) * m >= 8 * size * (1 - 1e-9):
            return m
    return 8


def center_box(height: int, width: int, resize: int, size: int) -> Box:
    """The part of an image that ``Resize(resize)`` + ``CenterCrop(size)`` keeps, in original pixels: the resized
    sides and the crop offsets exactly as torchvision computes them (int() of the long side, round() of the offsets)."""
    if width <= height:
        rw, rh = resize, int(resize * height / width)
    else:
        rh, rw = resize, int(resize * width / height)
    top, left = int(round((rh - size) / 2.0)), int(round((rw - size) / 2.0))
    sy, sx = height / rh, width / rw
    return top * sy, left * sx, size * sy, size * sx


def pillow_rgb(path: str) -> torch.Tensor:
    """uint8 [3, H, W], the full image decoded by Pillow (torchvision ImageFolder's default loader; torchvision.io's
    decoders are deprecated from 0.29)."""
    from PIL import Image, UnidentifiedImageError  # deferred: Pillow is needed only to decode image folders

    try:
        with Image.open(path) as im:
            arr = np.asarray(im.convert("RGB"))
        return torch.from_numpy(arr.copy()).permute(2, 0, 1)
    except (OSError, ValueError, UnidentifiedImageError) as exc:
        raise DataError(f"cannot read image {path}: {' '.join(str(exc).split())[:200]}") from exc


def crop_full(img: torch.Tensor, size: int, box: tuple[int, int, int, int] | None, resize: int) -> torch.Tensor:
    """uint8 [3, size, size] from a whole decoded image by torchvision: ``resized_crop`` of ``box`` (training) or
    ``Resize(resize)`` + ``CenterCrop(size)`` when ``box`` is None (evaluation), antialiased as the originals' PIL."""
    import torchvision.transforms.v2.functional as TF  # deferred: torchvision is slow to import, folders only

    if box is not None:
        return TF.resized_crop(img, *box, [size, size], antialias=True)
    return TF.center_crop(TF.resize(img, [resize], antialias=True), [size, size])


def turbo_crop(path: str, size: int, resize: int,
               box_of: Callable[[int, int], tuple[int, int, int, int]] | None) -> torch.Tensor | None:
    """uint8 [3, size, size] of a JPEG decoded by libjpeg-turbo at the smallest scale that holds the crop: the box
    ``box_of(height, width)`` (training; called once, after the header was read) or, when None, what
    ``Resize(resize)`` + ``CenterCrop(size)`` keeps. None when the file is not a JPEG it takes: the caller then
    decodes with Pillow, which also words any error."""
    import simplejpeg  # deferred: libjpeg-turbo is needed only to decode image folders

    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return None
    if not data.startswith(JPEG_MAGIC):
        return None
    try:
        height, width, colour, _ = simplejpeg.decode_jpeg_header(data)
    except ValueError:
        return None
    if colour not in TURBO_COLOURS:
        return None
    box = box_of(height, width) if box_of is not None else None
    top, left, box_h, box_w = box if box is not None else center_box(height, width, resize, size)
    m = eighths_for(box_h, box_w, size)
    want = (math.ceil(height * m / 8), math.ceil(width * m / 8))
    try:
        arr = simplejpeg.decode_jpeg(data, colorspace="RGB", min_height=want[0], min_width=want[1])
    except ValueError:
        return None
    if m == 8:  # full size: the Pillow path's own crop and resize
        return crop_full(torch.from_numpy(arr).permute(2, 0, 1), size, box, resize)
    if arr.shape[:2] == want:
        sy = sx = m / 8
    else:  # a libjpeg-turbo that picked another scale: map by the sizes it gave
        sy, sx = arr.shape[0] / height, arr.shape[1] / width
    return _resample(arr, (top * sy, left * sx, box_h * sy, box_w * sx), size, inside=box is not None)


def _resample(arr: np.ndarray, box: Box, size: int, inside: bool) -> torch.Tensor:
    """uint8 [3, size, size] from an HWC RGB array: the box resized by Pillow's antialiased bilinear (a fractional
    box, which torchvision's resized_crop cannot take). ``inside``: the filter reads only the box's whole pixels
    (crop then resize, as training), else also those around it (resize then crop, as evaluation)."""
    from PIL import Image  # deferred: Pillow is needed only to decode image folders

    top, left, h, w = box
    if inside:
        y0, x0 = int(math.floor(top + 1e-6)), int(math.floor(left + 1e-6))
        y1 = min(arr.shape[0], int(math.ceil(top + h - 1e-6)))
        x1 = min(arr.shape[1], int(math.ceil(left + w - 1e-6)))
        arr, top, left = arr[y0:y1, x0:x1], top - y0, left - x0
    h, w = min(h, arr.shape[0] - top), min(w, arr.shape[1] - left)  # float round-off must not leave the image
    img = Image.fromarray(np.ascontiguousarray(arr)).resize((size, size), Image.Resampling.BILINEAR,
                                                            box=(left, top, left + w, top + h))
    return torch.from_numpy(np.array(img)).permute(2, 0, 1)
