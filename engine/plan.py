"""The bill in advance: the images a resolved recipe trains on, its theoretical training FLOPs (engine.flops, the
accounting the runs record) and its GPU-hours at a throughput (engine.throughput), without data, training or a GPU.

How it mirrors the trainer (engine/trainer.py, engine/runner.py):
* images: every trained epoch passes the whole training split once (the loader keeps the last partial batch):
  epochs x training images, the training images being the data set's size less `val_split`, cut to `train_subset`
  (sizes are constants checked against the loaders by tests/test_plan.py: nothing is loaded or downloaded).
  A measure-only stage (eb_prune) trains nothing.
* FLOPs: per image, `step_flops` of the stage's model (layer FLOPs counted once per arch and input shape on an
  uninitialised build; shapes and densities from a meta-device build: no weights, no memory) at
  the stage's starting layer densities, the same per-layer rule its method draws its masks from
  (`layer_densities`: ERK, uniform, ...; data- or weight-dependent inits, SNIP/GraSP/magnitude, are charged at
  the uniform density, their overall density) and growth rule; gradual pruning (GraNet, GMP, Sup-tickets'
  pre-training) follows the cubic schedule's overall density epoch by epoch, each layer scaled alike.
* Bounds: Early-Bird's pruned network is smaller than the model charged here and its retraining may be shorter (both
  depend on the ticket found), and a search with `stop_when_found` may stop early, so those runs are upper bounds.
* GPU-hours: masked (dense-shaped) sparse training runs at the dense speed, so hours = images / dense img/s / 3600;
  analyses and evaluation are not counted.
"""

from __future__ import annotations

import functools
import inspect
import math
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from engine.config import Recipe, SparseConfig, StageConfig, canonical_arch
from engine.data.folders import SYNTHETIC_CLASSES, SYNTHETIC_TRAIN_PER_CLASS
from engine.data.memory import make_synthetic
from engine.flops import layer_flops, step_flops
from engine.methods import METHODS
from engine.methods.gmp import GMP
from engine.methods.granet import GraNet
from engine.methods.suptickets import SupTickets
from engine.models import create_model
from engine.sparse.inits import INITS, classifier_name, layer_densities, maskable
from engine.sparse.topology import gradual_density
from engine.throughput import PUBLISHED, PUBLISHED_DEVICE, PUBLISHED_SHAPE, BenchEntry

__all__ = ["TRAIN_IMAGES", "Rate", "Rates", "RunCost", "StageCost", "dataset_facts", "run_cost"]

_SYNTHETIC_TRAIN = inspect.signature(make_synthetic).parameters["num_train"].default
# training images of each data set as its loader gives them (before val_split / train_subset), and its classes
TRAIN_IMAGES: dict[str, int] = {
    "cifar10": 50_000, "cifar100": 50_000,
    "imagenet": 1_281_167,  # ILSVRC-2012's training split
    "digits": 1437,  # scikit-learn's 1797 digits less the fixed 20% test split (engine.data.memory._load_digits)
    "synthetic": _SYNTHETIC_TRAIN,
    "synthetic-imagenet": SYNTHETIC_CLASSES * SYNTHETIC_TRAIN_PER_CLASS,
}
_CLASSES = {"cifar10": 10, "cifar100": 100, "imagenet": 1000, "digits": 10, "synthetic": 10,
            "synthetic-imagenet": SYNTHETIC_CLASSES}
_SHAPE_INITS = {i.lower() for i in INITS} - {"snip", "grasp"}  # rules that need only the layer shapes


def dataset_facts(recipe: Recipe) -> tuple[int, int, tuple[int, int, int]]:
    """(training images, classes, input shape) of the recipe's `[data]`, without loading it."""
    d = recipe.data
    key = d.dataset.lower()
    base = "synthetic" if key.startswith("synthetic-") and key != "synthetic-imagenet" else key
    n = TRAIN_IMAGES[base] - d.val_split
    if d.train_subset:
        n = min(n, d.train_subset)
    classes = int(key.split("-", 1)[1]) if base == "synthetic" and key != "synthetic" else _CLASSES[base]
    folder = base in ("imagenet", "synthetic-imagenet")
    return n, classes, ((3, d.image_size, d.image_size) if folder else (3, 32, 32))


# in-place operations that only write values (torch.nn.init's and the tensor methods they use): never a shape
_VALUE_WRITES = frozenset({
    "normal_", "uniform_", "fill_", "zero_", "copy_", "mul_", "add_", "sub_", "div_", "clamp_", "bernoulli_",
    "random_", "exponential_", "log_normal_", "geometric_", "cauchy_", "erfinv_", "fill_diagonal_",
    "kaiming_normal_", "kaiming_uniform_", "xavier_normal_", "xavier_uniform_", "trunc_normal_", "constant_",
    "ones_", "zeros_", "orthogonal_", "eye_", "dirac_", "sparse_",
})


class _NoFill(TorchFunctionMode):
    """A meta tensor holds no values, so in-place initialisation (normal_, uniform_, fill_, ...) is skipped: it is
    most of the time a model takes to build on the meta device, and it changes no shape."""

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204 - torch's protocol
        kwargs = kwargs or {}
        if getattr(func, "__name__", "") in _VALUE_WRITES:
            first = next((a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)), None)
            if first is not None and first.is_meta:
                return first
        return func(*args, **kwargs)


ModelKey = tuple[str, int, float, tuple, tuple[int, ...]]


def _meta_model(key: ModelKey) -> nn.Module:
    arch, classes, width, options, _ = key
    with torch.device("meta"), _NoFill():
        return create_model(arch, classes, width, **dict(options))


@functools.cache
def _model(key: ModelKey) -> tuple[nn.Module, dict[str, int]]:
    """The meta-device model of `key` (arch, classes, width, options, input shape: shapes only, no memory) and its
    per-layer dense forward FLOPs. Only the classifier depends on the classes, linearly, so the count (a forward
    pass, the slow part) is made once at 10 classes and the classifier's entry rescaled; an arch where that does not
    hold is counted."""
    model = _meta_model(key)
    try:
        fc = classifier_name(model)
    except ValueError:  # no Linear layer: nothing to rescale
        fc = ""
    if key[1] != 10 and fc:
        ref_model, ref = _model((key[0], 10, *key[2:]))
        ref_fc = dict(ref_model.named_parameters()).get(fc)
        if ref_fc is not None and ref_fc.shape[0] == 10 and fc in ref:
            return model, {**ref, fc: ref[fc] // 10 * key[1]}
    return model, _count(key)


def _count(key: ModelKey) -> dict[str, int]:
    """layer_flops of one image through a CPU build of `key` with uninitialised storage, zeroed (non-trainable
    parameters, e.g. Early-Bird's channel selections, set to 1: keep every channel). Faster than the meta device,
    whose kernels run elementwise ops through Python decompositions (slow on the deep thin CIFAR nets) and whose
    first use imports torch._dynamo (seconds); and no initialisation, which is most of the cost of a real build."""
    twin = _meta_model(key).to_empty(device="cpu")
    with torch.no_grad():
        for p in twin.parameters():
            p.fill_(0.0 if p.requires_grad else 1.0)
        for b in twin.buffers():
            b.zero_()
    return layer_flops(twin, key[4], copy_model=False)


def model_key(recipe: Recipe) -> ModelKey:
    """What the recipe's model and its FLOPs depend on: (arch, classes, width, options, input shape)."""
    _, classes, shape = dataset_facts(recipe)
    m = recipe.model
    return canonical_arch(m.arch), classes, m.width, tuple(sorted(m.options().items())), shape


@functools.cache
def _densities(key: ModelKey, init: str, density: float, dense: tuple[str, ...], erk_power_scale: float,
               fc_density: float) -> dict[str, float]:
    return layer_densities(_model(key)[0], init, density, dense=dense, erk_power_scale=erk_power_scale,
                           fc_density=fc_density)


@functools.cache
def _maskable_names(key: ModelKey, dense: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(maskable(_model(key)[0], dense))


@dataclass
class StageCost:
    """One stage's share: epochs trained, images, FLOPs, how its densities were taken, and whether it is a bound."""

    name: str
    method: str
    epochs: int
    images: int
    flops: float
    densities: str  # "dense", "ERK 0.2", "uniform 0.05 (snip_masks: depends on data or weights)", ...
    upper_bound: bool = False


@dataclass
class RunCost:
    """One run's bill before the throughput: images, training FLOPs, and what its speed depends on."""

    recipe: str
    tag: str
    arch: str
    input_shape: tuple[int, int, int]
    width: float
    batch_size: int
    precision: str
    compile: bool
    images: int
    train_flops: float
    dense_step_flops: float  # 3 f_D: dense training FLOPs per image of the recipe's model
    stages: list[StageCost] = field(default_factory=list)

    @property
    def upper_bound(self) -> bool:
        return any(s.upper_bound for s in self.stages)


def _epochs(stage: StageConfig) -> tuple[int, bool]:
    """(epochs the stage trains, whether its charge is only an upper bound: Early-Bird's retraining is charged the
    unpruned network, for at most its epochs; a search that stops when it finds its tickets, for all of them)."""
    p = stage.params
    if stage.method == "eb_retrain":
        if p.end_epoch and isinstance(p.start_epoch, int):
            return min(stage.epochs, p.end_epoch - p.start_epoch), True
        return (min(stage.epochs, p.end_epoch) if p.end_epoch else stage.epochs), True
    return stage.epochs, stage.method == "eb_search" and bool(p.stop_when_found)


def _start_densities(key: ModelKey, stage: StageConfig, cls: type) -> tuple[dict[str, float] | None, str]:
    """The layer densities a sparse stage starts from (None for a dense stage) and how they were taken."""
    if not stage.params.sparse:
        return None, "dense"
    c = stage.sparse or SparseConfig()
    names = _maskable_names(key, tuple(c.dense_layers))
    if issubclass(cls, GMP):
        return dict.fromkeys(names, 1.0), "dense start"
    d0 = stage.params.densities(c.density)[0] if issubclass(cls, GraNet) else c.density
    if c.init.lower() in _SHAPE_INITS:
        return dict(_densities(key, c.init, d0, tuple(c.dense_layers), c.erk_power_scale, c.fc_density)), \
            f"{c.init} {d0:g}"
    return dict.fromkeys(names, d0), f"uniform {d0:g} ({c.init}: depends on data or weights)"


def _growth(stage: StageConfig, cls: type) -> tuple[str | None, int | None]:
    """The growth rule and interval the trainer charges (SparseMethod.growth_cost)."""
    c = stage.sparse or SparseConfig()
    if not getattr(cls, "topology_updates", False) or (issubclass(cls, SupTickets) and stage.params.fix):
        return None, None
    return c.growth, c.update_frequency


def _gradual_factors(stage: StageConfig, cls: type, epochs: int, steps_per_epoch: int) -> list[float]:
    """Each epoch's overall density at its end relative to the start, under GraNet/GMP's cubic schedule (1.0
    throughout for a method without gradual pruning). Mirrors GraNet.update_topology's pruning events."""
    if not issubclass(cls, GraNet):
        return [1.0] * epochs
    c, p = stage.sparse or SparseConfig(), stage.params
    init, final = p.densities(c.density)
    f, L = c.update_frequency, steps_per_epoch
    pretrain = p.budget(epochs)[0] if issubclass(cls, SupTickets) else epochs
    i0, i1 = math.floor(p.init_prune_epoch * L / f), math.floor(p.final_prune_epoch * L / f)
    density, at_end = init, [init] * epochs
    for k in range(max(i0, 1), i1):
        s = k * f
        e = (s - 1) // L  # the 0-based epoch this step falls in
        if e >= epochs:
            break
        if (c.stop_updates_epoch and e >= c.stop_updates_epoch) or s < p.init_prune_epoch * L:
            continue
        if issubclass(cls, SupTickets) and (p.fix or (e >= pretrain and p.no_maskupdates)):
            continue
        target = gradual_density(s, f, L, init, final, p.init_prune_epoch, p.final_prune_epoch)
        if target is not None and target < density:
            density = target
            for j in range(e, epochs):
                at_end[j] = density
    start = 1.0 if issubclass(cls, GMP) else init  # GMP's masks start full whatever its schedule's start
    return [d / start for d in at_end]


def run_cost(recipe: Recipe, tag: str = "") -> RunCost:
    """The images and training FLOPs of one resolved recipe (a sweep point), stage by stage."""
    n, _, shape = dataset_facts(recipe)
    key = model_key(recipe)
    flops = _model(key)[1]
    stages = []
    for st in recipe.stage:
        cls = METHODS[st.method]
        epochs, bound = _epochs(st)
        if not getattr(cls, "trains", True):
            stages.append(StageCost(st.name, st.method, 0, 0, 0.0, "not trained (measures only)"))
            continue
        dens, how = _start_densities(key, st, cls)
        growth, interval = _growth(st, cls)
        total = 0.0
        if dens is None:
            total = epochs * n * step_flops(flops, None)
        else:
            steps = math.ceil(n / (st.batch_size or recipe.data.batch_size))
            factors = _gradual_factors(st, cls, epochs, steps)
            for factor in sorted(set(factors)):
                scaled = {k: min(1.0, d * factor) for k, d in dens.items()}
                cost = step_flops(flops, scaled, growth=growth, update_interval=interval)
                total += factors.count(factor) * n * cost
            if any(f != 1.0 for f in factors):
                how += ", gradual pruning"
        stages.append(StageCost(st.name, st.method, epochs, epochs * n, total, how, bound))
    run = recipe.run
    return RunCost(recipe=recipe.name, tag=tag, arch=canonical_arch(recipe.model.arch), input_shape=shape,
                   width=recipe.model.width, batch_size=recipe.data.batch_size, precision=run.precision,
                   compile=run.compile, images=sum(s.images for s in stages),
                   train_flops=sum(s.flops for s in stages), dense_step_flops=step_flops(flops, None), stages=stages)


# ---- throughput -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Rate:
    """Dense training images/s for a run, where the figure comes from ("measured", "published", "scaled") and
    on what it rests (a sentence)."""

    img_s: float
    source: str
    basis: str
    device: str


def _reference_step_flops(arch: str, shape: tuple[int, ...], width: float = 1.0) -> float:
    """3 f_D of `arch` as `repro bench` builds it (10 classes) at `shape`."""
    return step_flops(_model((canonical_arch(arch), 10, width, (), tuple(shape)))[1], None)


class Rates:
    """Throughput per run on `device`: its `repro bench` measurement of the arch; else, scaled by dense FLOPs per
    image, the arch measured on this device nearest in FLOPs; else the published H100 figure (WRN-28-10,
    PreResNet-164, VGG16 at CIFAR shape); else the published figure nearest in FLOPs, scaled. The nearest reference
    rather than always WRN-28-10: speed is far from proportional to FLOPs across shapes (PreResNet-164 has 1/21 of
    WRN-28-10's FLOPs and trains at 0.28x its speed), so a deep thin net scaled from a wide one would be ~10x off.
    A scaled figure is held at the fastest figure of its references (small networks are launch-bound)."""

    def __init__(self, device: str, entries: list[BenchEntry]) -> None:
        self.device = device
        self.entries = [e for e in entries if e.device == device and _canonical(e.arch) is not None]

    def _precision(self, run: RunCost) -> str:
        return "fp32" if run.precision == "fp32" or self.device == "cpu" else "bf16"

    def _rank(self, e: BenchEntry, run: RunCost) -> tuple:
        return (e.compile == run.compile, e.batch_size == run.batch_size, e.precision == self._precision(run),
                e.measured)

    def rate(self, run: RunCost) -> Rate:
        same = [e for e in self.entries if _canonical(e.arch) == run.arch and e.image_shape == run.input_shape
                and e.width == run.width]
        if same:
            e = max(same, key=lambda e: self._rank(e, run))
            return Rate(e.dense_img_s, "measured", f"repro bench: {e.arch}, batch {e.batch_size}, {e.precision}"
                        f"{', compiled' if e.compile else ''}", self.device)
        if self.entries:
            best: dict[tuple, BenchEntry] = {}
            for e in sorted(self.entries, key=lambda e: self._rank(e, run)):
                best[(e.arch, e.image_shape, e.width)] = e  # the best-matching measurement of each reference
            refs = [(f"{e.arch} measured here", e.dense_img_s, _reference_step_flops(e.arch, e.image_shape, e.width))
                    for e in best.values()]
            return _scaled(run, refs, self.device)
        if run.arch in PUBLISHED and run.input_shape == PUBLISHED_SHAPE and run.width == 1.0:
            return Rate(PUBLISHED[run.arch], "published", f"SPEC.md: {PUBLISHED_DEVICE}, batch 128, bf16, "
                        "channels_last", PUBLISHED_DEVICE)
        refs = [(f"{PUBLISHED_DEVICE} {a} published", v, _reference_step_flops(a, PUBLISHED_SHAPE))
                for a, v in PUBLISHED.items()]
        return _scaled(run, refs, PUBLISHED_DEVICE)


def _scaled(run: RunCost, refs: list[tuple[str, float, float]], device: str) -> Rate:
    """The reference (basis, img/s, dense step FLOPs) nearest to the run in FLOPs, its speed scaled by the FLOPs
    ratio and held at the fastest reference."""
    basis, img_s, flops = min(refs, key=lambda r: abs(math.log(r[2] / run.dense_step_flops)))
    cap = max(r[1] for r in refs)
    scaled = img_s * flops / run.dense_step_flops
    if scaled > cap:
        return Rate(cap, "scaled", f"{basis}, scaled by dense FLOPs per image, held at the fastest reference "
                    f"({cap:,.0f} img/s)", device)
    return Rate(scaled, "scaled", f"{basis}, scaled by dense FLOPs per image", device)


def _canonical(arch: str) -> str | None:
    try:
        return canonical_arch(arch)
    except ValueError:
        return None
