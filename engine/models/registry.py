"""`create_model`: build any architecture by name. Each model module registers its builder beside the model
(`@register_model(family id)`); the names and their grammar are engine.config.archs (torch-free)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from engine.config.archs import ArchParams, resolve_arch
from engine.registry import Registry

from .common import check_width

Builder = Callable[..., nn.Module]  # builder(params, num_classes, width, **options)
BUILDERS: Registry[Builder] = Registry("arch family")  # family id (engine.config.archs) -> its builder
register_model = BUILDERS.register  # @register_model("family id") beside each model


def create_model(arch: str, num_classes: int, width: float = 1.0, **kwargs: Any) -> nn.Module:
    """Build `arch` (any spelling `canonical_arch` accepts) with `num_classes` outputs, returning raw logits.

    `width` multiplies every internal channel count; `kwargs` are the family's options (e.g. `cfg=` for eb-* and
    the ImageNet ResNets, `dropout=` for WRNs and FGE VGGs, `conv_init=` for the ImageNet ResNets).
    """
    family, params, canonical = resolve_arch(arch)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    width = check_width(width)
    unknown = sorted(set(kwargs) - set(family.options))
    if unknown:
        takes = ", ".join(family.options) if family.options else "none"
        raise ValueError(f"arch '{canonical}' has no option {unknown[0]!r} (its options: {takes})")
    build: Callable[[ArchParams, int, float], nn.Module] = BUILDERS[family.id]
    return build(params, num_classes, width, **kwargs)
