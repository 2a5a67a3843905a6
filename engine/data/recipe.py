"""A recipe's data: its data set (cut to the recipe's subsets) and the loaders a stage trains and evaluates with."""

from __future__ import annotations

import torch

from engine import dist
from engine.config import DataConfig, Recipe
from engine.data.base import Dataset, load_dataset
from engine.data.loaders import Augment, DeviceLoader, make_loader


def recipe_data(recipe: Recipe) -> Dataset:
    """The recipe's data set, cut to the first `train_subset`/`test_subset` images when those are set."""
    d = recipe.data
    data = load_dataset(d.dataset, d.root or None, val_split=d.val_split, image_size=d.image_size,
                        resize=d.resize, workers=d.workers, decoder=d.decoder)
    if d.train_subset:
        data.train = data.train.subset(d.train_subset)
    if d.test_subset:
        data.test = data.test.subset(d.test_subset)
        if data.val is not None:
            data.val = data.val.subset(d.test_subset)
    return data


def make_loaders(cfg: DataConfig, data: Dataset, device: torch.device, seed: int, *, channels_last: bool = False,
                 batch_size: int | None = None) -> tuple[DeviceLoader, DeviceLoader]:
    """The training loader (shuffled and augmented with draws from `seed`) and the evaluation loader of `[data]`.

    `cfg.batch_size` is the global batch: under DDP each of N ranks draws batch_size / N images a step, so a
    recipe optimises the same way on any number of GPUs (`batch_size`, a stage's own, replaces it). Every rank
    evaluates the whole evaluation split. `channels_last` applies on CUDA only.
    """
    world = dist.world()
    batch = batch_size or cfg.batch_size
    if batch % world:
        raise ValueError(f"the batch size ({batch}) is the global batch and must divide evenly over {world} processes")
    aug = Augment(crop_pad=cfg.crop_pad, pad_mode=cfg.pad_mode, flip=cfg.flip)
    cl = channels_last and device.type == "cuda"
    train = make_loader(data.train, batch // world, device=device, train=True, augment=aug,
                        normalize=cfg.normalize, seed=seed, channels_last=cl, rank=dist.rank(), world_size=world)
    if cfg.val_augment and data.val is not None:  # the originals score the held-out split through the train transform
        test = make_loader(data.eval, cfg.eval_batch_size, device=device, train=True, augment=aug,
                           normalize=cfg.normalize, seed=seed, channels_last=cl, rank=0, world_size=1)
    else:
        test = make_loader(data.eval, cfg.eval_batch_size, device=device, train=False,
                           normalize=cfg.normalize, channels_last=cl)
    return train, test
