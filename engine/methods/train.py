"""Dense training: FGE's `train.py` (endpoints) and FreeTickets' `main_individual.py`.

    for epoch in 1..E:  lr <- schedule(epoch);  for each batch: SGD step on cross-entropy
    keep the final weights (and every `save_every` epochs a checkpoint, as train.py --save_freq)
"""

from __future__ import annotations

from engine.methods.base import Method, register_method


@register_method("train")
class Train(Method):
    """Plain supervised training; all behaviour is the trainer's default loop."""
