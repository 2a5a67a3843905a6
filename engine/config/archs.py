"""Architecture names: which spellings exist, their canonical form and options; torch-free, so a recipe's `arch`
is checked without building anything. The builders register beside each model (engine/models, `register_model`).

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


class UnknownArch(ValueError):
    """An architecture name that is not in the registry; the message is one line, with a suggestion."""


ArchParams = tuple[Any, ...]

# the depths each fixed-table family defines (its model module holds the table itself, checked against these
# by engine.models.common.fixed_table)
FGE_VGG_DEPTHS = (16, 19)
SLIMMING_VGG_DEPTHS = (11, 13, 16, 19)
CIFAR_STEM_RESNET_DEPTHS = (18, 34, 50)
IMAGENET_RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "wide_resnet50_2",
                    "wide_resnet101_2")


def preresnet_blocks(depth: int) -> tuple[str, int]:
    """('bottleneck' | 'basic', blocks per stage) for a PreResNet depth; ValueError for an impossible one."""
    if depth >= 44:
        if (depth - 2) % 9 != 0:
            raise ValueError(f"PreResNet depth >= 44 must satisfy (depth-2) % 9 == 0, got {depth}")
        return "bottleneck", (depth - 2) // 9
    if depth < 8 or (depth - 2) % 6 != 0:
        raise ValueError(f"PreResNet depth < 44 must satisfy (depth-2) % 6 == 0 and depth >= 8, got {depth}")
    return "basic", (depth - 2) // 6


@dataclass(frozen=True)
class Family:
    """A pattern of names, how to spell one canonically, what makes one invalid, and the options it takes.
    `id` is the key its builder registers under."""

    id: str
    pattern: str
    examples: tuple[str, ...]
    canonical: Callable[[ArchParams], str]
    problem: Callable[[ArchParams], str | None] = lambda p: None
    options: tuple[str, ...] = ()


def _wrn_problem(p: ArchParams) -> str | None:
    d, k = p
    if (d - 4) % 6 != 0 or d < 10 or k < 1:
        return "wrn-D-K needs (D-4) % 6 == 0, D >= 10 and K >= 1, e.g. 'wrn-28-10'"
    return None


def _preresnet_problem(p: ArchParams) -> str | None:
    try:
        preresnet_blocks(p[0])
    except ValueError:
        return ("preresnetD needs (D-2) % 9 == 0 for D >= 44 (bottleneck) or (D-2) % 6 == 0 for D < 44, "
                "e.g. 'preresnet164', 'preresnet20'")
    return None


def _eb_preresnet_problem(p: ArchParams) -> str | None:
    d = p[0]
    if d < 11 or (d - 2) % 9 != 0:
        return "eb-preresnetD needs (D-2) % 9 == 0 and D >= 11, e.g. 'eb-preresnet164'"
    return None


def _cifar_resnet_problem(p: ArchParams) -> str | None:
    d, b = p
    if d < 8 or (d - 2) % 6 != 0 or (b is not None and b < 1):
        return "cifar_resnet_A[_B] needs (A-2) % 6 == 0, A >= 8 and B >= 1, e.g. 'cifar_resnet_20'"
    return None


def _one_of(values: Any, spelling: str) -> Callable[[ArchParams], str | None]:
    allowed = sorted(values)
    return lambda p: None if p[0] in allowed else f"{spelling} takes depth {', '.join(map(str, allowed))}"


FAMILIES: tuple[Family, ...] = (
    Family(
        id="wrn",
        pattern=r"wrn-(\d+)-(\d+)",
        examples=("wrn-28-10", "wrn-16-8", "wrn-22-8", "wrn-28-2", "wrn-16-10", "wrn-10-1"),
        canonical=lambda p: f"wrn-{p[0]}-{p[1]}",
        problem=_wrn_problem,
        options=("dropout",),
    ),
    Family(
        id="fge_wrn",
        pattern=r"wideresnet28x10",
        examples=("wideresnet28x10",),
        canonical=lambda p: "wideresnet28x10",
        options=("dropout",),
    ),
    Family(
        id="fge_vgg",
        pattern=r"vgg(\d+)(bn)?",
        examples=("vgg16", "vgg16bn", "vgg19", "vgg19bn"),
        canonical=lambda p: f"vgg{p[0]}{p[1] or ''}",
        problem=_one_of(FGE_VGG_DEPTHS, "vggD[bn]"),
        options=("dropout",),
    ),
    Family(
        id="vgg_like",
        pattern=r"vgg-like",
        examples=("vgg-like",),
        canonical=lambda p: "vgg-like",
    ),
    Family(
        id="preresnet",
        pattern=r"preresnet(\d+)",
        examples=("preresnet20", "preresnet110", "preresnet164"),
        canonical=lambda p: f"preresnet{p[0]}",
        problem=_preresnet_problem,
    ),
    Family(
        id="eb_vgg",
        pattern=r"eb-vgg(\d+)",
        examples=("eb-vgg11", "eb-vgg13", "eb-vgg16", "eb-vgg19"),
        canonical=lambda p: f"eb-vgg{p[0]}",
        problem=_one_of(SLIMMING_VGG_DEPTHS, "eb-vggD"),
        options=("cfg",),
    ),
    Family(
        id="eb_preresnet",
        pattern=r"eb-preresnet(\d+)",
        examples=("eb-preresnet101", "eb-preresnet164"),
        canonical=lambda p: f"eb-preresnet{p[0]}",
        problem=_eb_preresnet_problem,
        options=("cfg",),
    ),
    Family(
        id="cifar_vgg",
        pattern=r"cifar-vgg(\d+)",
        examples=("cifar-vgg11", "cifar-vgg13", "cifar-vgg16", "cifar-vgg19"),
        canonical=lambda p: f"cifar-vgg{p[0]}",
        problem=_one_of(SLIMMING_VGG_DEPTHS, "cifar-vggD"),
        options=("cfg",),
    ),
    Family(
        id="cifar_resnet",
        pattern=r"cifar_resnet_(\d+)(?:_(\d+))?",
        examples=("cifar_resnet_20", "cifar_resnet_32", "cifar_resnet_44", "cifar_resnet_56",
                  "cifar_resnet_110", "cifar_resnet_20_8", "cifar_resnet_20_24"),
        canonical=lambda p: f"cifar_resnet_{p[0]}" + ("" if p[1] is None else f"_{p[1]}"),
        problem=_cifar_resnet_problem,
        options=("scaled_density",),
    ),
    Family(
        id="cifar_stem_resnet",
        pattern=r"cifar-resnet(\d+)",
        examples=("cifar-resnet18", "cifar-resnet34", "cifar-resnet50"),
        canonical=lambda p: f"cifar-resnet{p[0]}",
        problem=_one_of(CIFAR_STEM_RESNET_DEPTHS, "cifar-resnetD"),
    ),
    Family(
        id="imagenet_resnet",
        pattern="(" + "|".join(IMAGENET_RESNETS) + ")",
        examples=IMAGENET_RESNETS,
        canonical=lambda p: p[0],
        options=("conv_init", "cfg"),
    ),
)

# other spellings of the same model (lower case)
ALIASES = {
    "wideresnet50_2": "wide_resnet50_2",
    "wideresnet101_2": "wide_resnet101_2",
}


def list_archs() -> list[str]:
    """Canonical names, parametric families listed by example (e.g. 'wrn-28-10')."""
    return [name for family in FAMILIES for name in family.examples]


def resolve_arch(name: str) -> tuple[Family, ArchParams, str]:
    """(family, parsed parameters, canonical name) of an arch name in any case or alias; raises UnknownArch."""
    if not isinstance(name, str):
        raise UnknownArch(f"unknown arch {name!r}; an arch is a name such as 'wrn-28-10'")
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    for family in FAMILIES:
        match = re.fullmatch(family.pattern, key)
        if match is None:
            continue
        params = tuple(int(g) if g is not None and g.isdigit() else g for g in match.groups())
        problem = family.problem(params)
        if problem is not None:
            raise UnknownArch(f"unknown arch '{name}'; {problem}")
        return family, params, family.canonical(params)
    known = list_archs() + sorted(ALIASES)
    close = difflib.get_close_matches(key, known, n=1)
    if close:
        raise UnknownArch(f"unknown arch '{name}'; did you mean '{ALIASES.get(close[0], close[0])}'?")
    few = ", ".join(f"'{n}'" for n in ("wrn-28-10", "vgg16", "preresnet164", "eb-vgg16", "cifar_resnet_20",
                                        "cifar-resnet50", "resnet50"))
    raise UnknownArch(f"unknown arch '{name}'; known archs include {few} (see list_archs())")


def canonical_arch(name: str) -> str:
    """The registry name for `name` (any case, or an alias); raises UnknownArch."""
    return resolve_arch(name)[2]
