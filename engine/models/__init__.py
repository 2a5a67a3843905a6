"""Model zoo: every architecture of the five seed code bases, built by name through one `create_model`.

Each model is plain Conv2d / Linear / BatchNorm modules returning raw logits, so masks and Bezier curves
(torch.func.functional_call) work on any of them. Each family module registers its builder beside its
definition; importing them here fills the registry.
"""

from engine.config.archs import UnknownArch, canonical_arch, list_archs

from . import (  # noqa: F401  (each module registers its builders)
    cifar_resnet,
    cifar_stem_resnet,
    imagenet_resnet,
    preresnet,
    slimming_preresnet,
    slimming_vgg,
    vgg,
    wrn,
)
from .registry import BUILDERS, create_model, register_model

__all__ = ["BUILDERS", "create_model", "canonical_arch", "list_archs", "register_model", "UnknownArch"]
