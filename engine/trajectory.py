"""What the trainer records for the t-SNE trajectory analysis (engine/analyses/tsne.py): how many test images and,
under the original protocol (ensemble_freetickets.py), at which epochs."""

from __future__ import annotations

import math

ORIGINAL_IMAGES = 128  # ensemble_freetickets.py: the first test batch, --test-batch-size 128
OURS_IMAGES = 500
ORIGINAL_CUT, ORIGINAL_LENGTH = 145, 250  # `if model_file < 145: continue` over the files of a 250-epoch run


def original_epochs(epochs: int) -> list[int]:
    """The 1-based epochs the original protocol records in a stage of `epochs` epochs.

    Checkpoint index i (epoch i + 1) is kept when i is even and i >= ceil(145 * min(E, 250) / 250); fewer than
    3 such epochs: the last min(3, E) epochs.
    """
    cut = math.ceil(ORIGINAL_CUT * min(epochs, ORIGINAL_LENGTH) / ORIGINAL_LENGTH)
    picked = [i + 1 for i in range(cut, epochs) if i % 2 == 0]
    return picked if len(picked) >= 3 else list(range(max(1, epochs - 2), epochs + 1))
