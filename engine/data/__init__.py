"""Data: named data sets (in memory or image folders) and the loaders that batch them onto the device.

- :mod:`engine.data.base`: :class:`Split`, :class:`Dataset`, normalisation, the dataset registry and
  :func:`load_dataset` (names are :data:`engine.config.DATASETS`);
- :mod:`engine.data.memory`: CIFAR-10/100, digits and synthetic images, loaded whole as uint8 tensors;
- :mod:`engine.data.folders`: image folders (ImageNet, ``synthetic-imagenet``) decoded by DataLoader workers;
- :mod:`engine.data.decode`: one image file to a cropped uint8 square (libjpeg-turbo at reduced scale, or Pillow);
- :mod:`engine.data.loaders`: pure batch functions, :class:`DeviceLoader` and :func:`make_loader`;
- :mod:`engine.data.recipe`: a recipe's data set (:func:`recipe_data`) and a stage's loaders (:func:`make_loaders`).

Importing the package imports every module, so every data set is registered.
"""

from engine.data.base import (
    DATASET_LOADERS,
    DATASETS,
    NORMALIZE,
    BatchLoader,
    DataError,
    Dataset,
    Split,
    data_root,
    default_normalize,
    load_dataset,
    normalize_stats,
    register_dataset,
)
from engine.data.folders import FolderLoader, FolderSplit, make_synthetic_folders, random_resized_crop_box
from engine.data.loaders import Augment, DeviceLoader, EpochPlan, crop_flip, make_loader, plan_epoch
from engine.data.memory import make_synthetic
from engine.data.recipe import make_loaders, recipe_data

__all__ = [
    "DATASETS",
    "DATASET_LOADERS",
    "NORMALIZE",
    "Augment",
    "BatchLoader",
    "DataError",
    "Dataset",
    "DeviceLoader",
    "EpochPlan",
    "FolderLoader",
    "FolderSplit",
    "Split",
    "crop_flip",
    "data_root",
    "default_normalize",
    "load_dataset",
    "make_loader",
    "make_loaders",
    "make_synthetic",
    "make_synthetic_folders",
    "normalize_stats",
    "plan_epoch",
    "random_resized_crop_box",
    "recipe_data",
    "register_dataset",
]
