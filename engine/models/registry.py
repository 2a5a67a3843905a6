"""The model registry: one name per architecture (the seeds' spellings, case-insensitive) and `create_model`.

Parametric families (`wrn-D-K`, `preresnetD`, `cifar_resnet_A_B`, ...) are matched by pattern, so any valid
depth or width works; `list_archs()` shows them by example. Two seed spellings collide once lower-cased:
Sup-tickets' CIFAR `ResNet50` is `cifar-resnet50` (`resnet50` is the torchvision-compatible ImageNet net), and the
random-pruning / Sup-tickets `vgg19` (slimming VGG, single Linear head) is `cifar-vgg19` (`vgg19` is FGE's).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from .cifar_resnet import CifarResNet
from .common import check_width
from .earlybird import EB_VGG_CFG, EBPreResNet, SlimmingVGG
from .imagenet import ARCHS as IMAGENET_ARCHS
from .imagenet import imagenet_resnet
from .preresnet import PreResNet, preresnet_blocks
from .suptickets_resnet import STAGES as CIFAR_STEM_STAGES
from .suptickets_resnet import CifarStemResNet
from .vgg import FGE_BLOCKS, FGEVGG, VGGLike
from .wrn import FGEWideResNet, WideResNet


class UnknownArch(ValueError):
    """An architecture name that is not in the registry; the message is one line, with a suggestion."""


Params = tuple[Any, ...]


@dataclass(frozen=True)
class _Family:
    """A pattern of names, how to spell one canonically, what makes one invalid, and how to build it."""

    pattern: str
    examples: tuple[str, ...]
    canonical: Callable[[Params], str]
    build: Callable[..., nn.Module]  # build(params, num_classes, width, **options)
    problem: Callable[[Params], str | None] = lambda p: None
    options: tuple[str, ...] = ()


def _wrn_problem(p: Params) -> str | None:
    d, k = p
    if (d - 4) % 6 != 0 or d < 10 or k < 1:
        return "wrn-D-K needs (D-4) % 6 == 0, D >= 10 and K >= 1, e.g. 'wrn-28-10'"
    return None


def _preresnet_problem(p: Params) -> str | None:
    try:
        preresnet_blocks(p[0])
    except ValueError:
        return ("preresnetD needs (D-2) % 9 == 0 for D >= 44 (bottleneck) or (D-2) % 6 == 0 for D < 44, "
                "e.g. 'preresnet164', 'preresnet20'")
    return None


def _eb_preresnet_problem(p: Params) -> str | None:
    d = p[0]
    if d < 11 or (d - 2) % 9 != 0:
        return "eb-preresnetD needs (D-2) % 9 == 0 and D >= 11, e.g. 'eb-preresnet164'"
    return None


def _cifar_resnet_problem(p: Params) -> str | None:
    d, b = p
    if d < 8 or (d - 2) % 6 != 0 or (b is not None and b < 1):
        return "cifar_resnet_A[_B] needs (A-2) % 6 == 0, A >= 8 and B >= 1, e.g. 'cifar_resnet_20'"
    return None


def _one_of(values: Any, spelling: str) -> Callable[[Params], str | None]:
    allowed = sorted(values)
    return lambda p: None if p[0] in allowed else f"{spelling} takes depth {', '.join(map(str, allowed))}"


_FAMILIES: tuple[_Family, ...] = (
    _Family(
        pattern=r"wrn-(\d+)-(\d+)",
        examples=("wrn-28-10", "wrn-16-8", "wrn-22-8", "wrn-28-2", "wrn-16-10", "wrn-10-1"),
        canonical=lambda p: f"wrn-{p[0]}-{p[1]}",
        problem=_wrn_problem,
        build=lambda p, c, w, **o: WideResNet(p[0], p[1], c, w, **o),
        options=("dropout",),
    ),
    _Family(
        pattern=r"wideresnet28x10",
        examples=("wideresnet28x10",),
        canonical=lambda p: "wideresnet28x10",
        build=lambda p, c, w, **o: FGEWideResNet(c, w, **o),
        options=("dropout",),
    ),
    _Family(
        pattern=r"vgg(\d+)(bn)?",
        examples=("vgg16", "vgg16bn", "vgg19", "vgg19bn"),
        canonical=lambda p: f"vgg{p[0]}{p[1] or ''}",
        problem=_one_of(FGE_BLOCKS, "vggD[bn]"),
        build=lambda p, c, w, **o: FGEVGG(p[0], c, w, batch_norm=p[1] is not None, **o),
        options=("dropout",),
    ),
    _Family(
        pattern=r"vgg-like",
        examples=("vgg-like",),
        canonical=lambda p: "vgg-like",
        build=lambda p, c, w: VGGLike(c, w),
    ),
    _Family(
        pattern=r"preresnet(\d+)",
        examples=("preresnet20", "preresnet110", "preresnet164"),
        canonical=lambda p: f"preresnet{p[0]}",
        problem=_preresnet_problem,
        build=lambda p, c, w: PreResNet(p[0], c, w),
    ),
    _Family(
        pattern=r"eb-vgg(\d+)",
        examples=("eb-vgg11", "eb-vgg13", "eb-vgg16", "eb-vgg19"),
        canonical=lambda p: f"eb-vgg{p[0]}",
        problem=_one_of(EB_VGG_CFG, "eb-vggD"),
        build=lambda p, c, w, **o: SlimmingVGG(p[0], c, w, **o),
        options=("cfg",),
    ),
    _Family(
        pattern=r"eb-preresnet(\d+)",
        examples=("eb-preresnet101", "eb-preresnet164"),
        canonical=lambda p: f"eb-preresnet{p[0]}",
        problem=_eb_preresnet_problem,
        build=lambda p, c, w, **o: EBPreResNet(p[0], c, w, **o),
        options=("cfg",),
    ),
    _Family(
        pattern=r"cifar-vgg(\d+)",
        examples=("cifar-vgg11", "cifar-vgg13", "cifar-vgg16", "cifar-vgg19"),
        canonical=lambda p: f"cifar-vgg{p[0]}",
        problem=_one_of(EB_VGG_CFG, "cifar-vggD"),
        build=lambda p, c, w, **o: SlimmingVGG(p[0], c, w, bn_gamma=1.0, **o),
        options=("cfg",),
    ),
    _Family(
        pattern=r"cifar_resnet_(\d+)(?:_(\d+))?",
        examples=("cifar_resnet_20", "cifar_resnet_32", "cifar_resnet_44", "cifar_resnet_56",
                  "cifar_resnet_110", "cifar_resnet_20_8", "cifar_resnet_20_24"),
        canonical=lambda p: f"cifar_resnet_{p[0]}" + ("" if p[1] is None else f"_{p[1]}"),
        problem=_cifar_resnet_problem,
        build=lambda p, c, w, **o: CifarResNet(p[0], c, w, base_width=16 if p[1] is None else p[1], **o),
        options=("scaled_density",),
    ),
    _Family(
        pattern=r"cifar-resnet(\d+)",
        examples=("cifar-resnet18", "cifar-resnet34", "cifar-resnet50"),
        canonical=lambda p: f"cifar-resnet{p[0]}",
        problem=_one_of(CIFAR_STEM_STAGES, "cifar-resnetD"),
        build=lambda p, c, w: CifarStemResNet(p[0], c, w),
    ),
    _Family(
        pattern="(" + "|".join(IMAGENET_ARCHS) + ")",
        examples=tuple(IMAGENET_ARCHS),
        canonical=lambda p: p[0],
        build=lambda p, c, w, **o: imagenet_resnet(p[0], c, w, **o),
        options=("conv_init", "cfg"),
    ),
)

# other spellings of the same model (lower case)
_ALIASES = {
    "wideresnet50_2": "wide_resnet50_2",
    "wideresnet101_2": "wide_resnet101_2",
}


def list_archs() -> list[str]:
    """Canonical names, parametric families listed by example (e.g. 'wrn-28-10')."""
    return [name for family in _FAMILIES for name in family.examples]


def _resolve(name: str) -> tuple[_Family, Params, str]:
    if not isinstance(name, str):
        raise UnknownArch(f"unknown arch {name!r}; an arch is a name such as 'wrn-28-10'")
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    for family in _FAMILIES:
        match = re.fullmatch(family.pattern, key)
        if match is None:
            continue
        params = tuple(int(g) if g is not None and g.isdigit() else g for g in match.groups())
        problem = family.problem(params)
        if problem is not None:
            raise UnknownArch(f"unknown arch '{name}'; {problem}")
        return family, params, family.canonical(params)
    known = list_archs() + sorted(_ALIASES)
    close = difflib.get_close_matches(key, known, n=1)
    if close:
        raise UnknownArch(f"unknown arch '{name}'; did you mean '{_ALIASES.get(close[0], close[0])}'?")
    few = ", ".join(f"'{n}'" for n in ("wrn-28-10", "vgg16", "preresnet164", "eb-vgg16", "cifar_resnet_20",
                                        "cifar-resnet50", "resnet50"))
    raise UnknownArch(f"unknown arch '{name}'; known archs include {few} (see list_archs())")


def canonical_arch(name: str) -> str:
    """The registry name for `name` (any case, or an alias); raises UnknownArch."""
    return _resolve(name)[2]


def create_model(arch: str, num_classes: int, width: float = 1.0, **kwargs: Any) -> nn.Module:
    """Build `arch` (any spelling `canonical_arch` accepts) with `num_classes` outputs, returning raw logits.

    `width` multiplies every internal channel count; `kwargs` are the family's options (e.g. `cfg=` for eb-* and
    the ImageNet ResNets, `dropout=` for WRNs and FGE VGGs, `conv_init=` for the ImageNet ResNets).
    """
    family, params, canonical = _resolve(arch)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    width = check_width(width)
    unknown = sorted(set(kwargs) - set(family.options))
    if unknown:
        takes = ", ".join(family.options) if family.options else "none"
        raise ValueError(f"arch '{canonical}' has no option {unknown[0]!r} (its options: {takes})")
    return family.build(params, num_classes, width, **kwargs)
