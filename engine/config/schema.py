"""The recipe schema: typed, strict pydantic models for every table a recipe may hold.

Loading, `--set`, `--smoke` and `[sweep]` live in `repro.recipe`; this module only says what a valid
recipe is, so the engine can take a typed object and the CLI can report `key.path: what is wrong`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, SerializeAsAny, ValidationInfo, field_validator, model_validator

from engine.config import names
from engine.config.archs import UnknownArch, resolve_arch
from engine.config.base import Strict, known, suggest
from engine.config.expect import ExpectConfig
from engine.config.params import PARAMS, MethodParams


class RunConfig(Strict):
    """Settings that hold for the whole run."""

    seed: int = 1
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    compile: bool = False
    # torch.compile's mode when compile is on: "reduce-overhead" captures the step in CUDA graphs (launch-bound deep
    # thin networks such as PreResNet-164); "default" compiles without them
    compile_mode: Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] = "default"
    channels_last: bool = True
    dense_reference_epochs: int = Field(0, ge=0)  # training cost is reported relative to one dense model trained
    # this long (0: the longest stage)
    smoke: bool = False  # set by --smoke: the run directory's recipe.toml says it is a smoke run
    faithful: bool = False  # set by --faithful: every switchable difference from the original code switched off
    faithful_applied: list[str] = Field(default_factory=list)  # the engine.fidelity entries --faithful set
    # the sweep point this run is ({axis: value}, a variant axis by its tag; empty without a sweep): what
    # [expect] cells match on
    point: dict[str, Any] = Field(default_factory=dict)
    # experiment trackers the metrics are mirrored to as they are written (engine/loggers.py): TensorBoard event
    # files in <run>/tb/ unless a recipe says otherwise; [] mirrors nowhere
    loggers: list[str] = Field(default_factory=lambda: list(names.DEFAULT_LOGGERS))

    @field_validator("loggers")
    @classmethod
    def _loggers(cls, v: list[str]) -> list[str]:
        for name in v:
            known(name, names.LOGGERS, "logger")
        twice = sorted({n for n in v if v.count(n) > 1})
        if twice:
            raise ValueError(f"logger '{twice[0]}' is listed twice")
        return v


class DataConfig(Strict):
    """Which data set, how it is split, augmented and batched."""

    dataset: str = "digits"
    root: str = ""
    val_split: int = Field(0, ge=0)
    train_subset: int = Field(0, ge=0)
    test_subset: int = Field(0, ge=0)
    crop_pad: int = Field(4, ge=0, le=16)
    pad_mode: Literal["zeros", "reflect"] = "zeros"
    flip: bool = True
    normalize: str = "cifar10"
    batch_size: int = Field(128, gt=0)
    eval_batch_size: int = Field(500, gt=0)
    # the trainer's evaluation accuracy: over all images, or the mean of per-batch accuracies (Early-Bird's test(),
    # where a short last batch weighs as much as a full one)
    eval_accuracy: Literal["per_image", "batch_mean"] = "per_image"
    val_augment: bool = False  # true: the held-out split is scored with the training augmentation, as the originals
    # image-folder data (imagenet, synthetic-imagenet): RandomResizedCrop(image_size) + flip for training,
    # Resize(resize) + CenterCrop(image_size) for evaluation, decoded by `workers` DataLoader processes with
    # `decoder`: "turbo" (libjpeg-turbo at the smallest DCT scale that holds the crop) or "pillow" (full decode, as
    # torchvision's ImageFolder in the originals)
    image_size: int = Field(224, ge=8, le=1024)
    resize: int = Field(256, ge=8, le=2048)
    workers: int = Field(8, ge=0, le=128)
    decoder: Literal["turbo", "pillow"] = "turbo"

    @model_validator(mode="after")
    def _sizes(self) -> DataConfig:
        if self.resize < self.image_size:
            raise ValueError(f"resize ({self.resize}) must be >= image_size ({self.image_size})")
        return self

    @field_validator("dataset")
    @classmethod
    def _dataset(cls, v: str) -> str:
        return known(v, names.DATASETS, "dataset")

    @field_validator("normalize")
    @classmethod
    def _normalize(cls, v: str) -> str:
        return known(v, names.NORMALIZATIONS, "normalization")


class ModelConfig(Strict):
    """The architecture by its registry name; `width` scales every channel count (smoke uses narrow nets)."""

    arch: str
    width: float = Field(1.0, gt=0, le=16)
    conv_init: Literal["fan_out", "fan_in"] | None = None  # ImageNet ResNets: the seeds' `-c classic|fanin`

    @field_validator("arch")
    @classmethod
    def _arch(cls, v: str) -> str:
        try:
            resolve_arch(v)
        except UnknownArch as e:
            raise ValueError(str(e)) from None
        return v

    @model_validator(mode="after")
    def _options(self) -> ModelConfig:
        if self.conv_init is not None and "conv_init" not in resolve_arch(self.arch)[0].options:
            raise ValueError(f"conv_init applies to the ImageNet ResNets only, not to arch '{self.arch}'")
        return self

    def options(self) -> dict[str, Any]:
        """The family options set here, as create_model keyword arguments (only what the recipe sets)."""
        return {} if self.conv_init is None else {"conv_init": self.conv_init}


class OptimizerConfig(Strict):
    """SGD (the papers' default) or Adam; weight decay applies to every parameter as in the originals."""

    name: Literal["sgd", "adam"] = "sgd"
    lr: float = Field(0.1, gt=0, le=10)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0, le=1)
    nesterov: bool = False
    bn_weight_decay: bool = True  # false: no weight decay on BatchNorm parameters (the ImageNet scripts' default)


class ScheduleConfig(Strict):
    """The learning-rate schedule of a stage (see engine.schedules for each formula)."""

    name: Literal["constant", "multistep", "cosine", "fge", "cyclic"] = "constant"
    milestones: list[int] = Field(default_factory=list)
    milestone_fractions: list[float] = Field(default_factory=list)
    gamma: float = Field(0.1, gt=0, le=1)
    min_lr: float = Field(0.0, ge=0)
    lr_1: float = Field(0.05, gt=0, le=10)
    lr_2: float = Field(1e-4, gt=0, le=10)
    cycle: int = Field(4, gt=0)
    warmup_epochs: int = Field(0, ge=0)
    # "step": lr·(e + frac)/W, rising every step; "epoch": lr·(e + 1)/(W + 1) for the whole epoch e
    # (the ImageNet scripts of FreeTickets, Sup-tickets and random pruning)
    warmup_style: Literal["step", "epoch"] = "step"

    @model_validator(mode="after")
    def _check(self) -> ScheduleConfig:
        if self.name == "multistep" and not (self.milestones or self.milestone_fractions):
            raise ValueError("multistep needs milestones or milestone_fractions")
        if any(m <= 0 for m in self.milestones):
            raise ValueError("milestones must be positive epochs")
        if any(not 0 < f < 1 for f in self.milestone_fractions):
            raise ValueError("milestone_fractions must lie in (0, 1)")
        if self.name == "cyclic" and self.cycle % 2:
            raise ValueError(f"cyclic needs an even cycle length (got {self.cycle})")
        return self


class SparseConfig(Strict):
    """`[train.sparse]` / `[stage.sparse]`: the masks and their topology updates (engine/sparse)."""

    density: float = Field(0.05, gt=0, le=1)
    init: str = "ERK"
    erk_power_scale: float = Field(1.0, gt=0)
    fc_density: float = Field(1.0, gt=0, le=1)
    dense_layers: list[str] = Field(default_factory=list)
    draw: Literal["exact", "bernoulli"] = "exact"
    mask_momentum: bool = True
    # layers at density 1.0 (ERK-dense): false leaves them alone at topology updates; true prunes and regrows them
    # like the others (their smallest weights restart at zero), as FreeTickets' CIFAR Masking does
    update_full_layers: bool = False
    update_frequency: int = Field(1000, gt=0)
    prune: Literal["magnitude", "set", "threshold"] = "magnitude"
    growth: Literal["random", "gradient", "momentum"] = "gradient"
    redistribution: Literal["none", "magnitude", "nonzeros"] = "none"
    prune_rate: float = Field(0.5, ge=0, lt=1)
    prune_rate_schedule: Literal["constant", "cosine", "linear"] = "constant"
    prune_rate_min: float = Field(0.005, ge=0, lt=1)
    threshold: float = Field(1e-3, gt=0)
    stop_updates_epoch: int = Field(0, ge=0)
    score_batch: int = Field(128, gt=0)

    @field_validator("init")
    @classmethod
    def _init(cls, v: str) -> str:
        return known(v, names.SPARSE_INITS, "sparse init")


class TrainDefaults(Strict):
    """`[train]`: settings every stage inherits unless it sets its own."""

    epochs: int | None = Field(None, gt=0)
    optimizer: OptimizerConfig | None = None
    schedule: ScheduleConfig | None = None
    save_every: int | None = Field(None, ge=0)
    eval_every: int | None = Field(None, gt=0)
    label_smoothing: float | None = Field(None, ge=0, lt=1)
    sparse: SparseConfig | None = None
    keep: Literal["final", "best"] | None = None


class StageConfig(Strict):
    """One `[[stage]]`: a method run for some epochs, optionally starting from an earlier stage's checkpoint."""

    name: str = Field(pattern=r"^[A-Za-z0-9_\-]+$")
    method: str
    epochs: int = Field(gt=0)
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    save_every: int = Field(0, ge=0)
    eval_every: int = Field(1, gt=0)
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    init_from: str = ""
    seed: int | None = None
    group: str = ""
    record_predictions: bool = False
    batch_size: int | None = Field(None, gt=0)  # this stage's global training batch (default: [data].batch_size)
    sparse: SparseConfig | None = None
    # the method's own settings, typed by its class in engine.config.params (validated once `method` is known)
    params: SerializeAsAny[MethodParams] = Field(default_factory=dict)
    # the ensemble member this stage contributes: its final weights, or `<stage>/best.pt`, the checkpoint with the
    # best accuracy on the evaluation split (the held-out split when there is one, else the test split)
    keep: Literal["final", "best"] = "final"

    @field_validator("method")
    @classmethod
    def _method(cls, v: str) -> str:
        return known(v, sorted(PARAMS), "method")

    @field_validator("params", mode="before")
    @classmethod
    def _params(cls, v: Any, info: ValidationInfo) -> Any:
        method = info.data.get("method")
        if method not in PARAMS:  # the unknown method is the error to report, not its params
            return MethodParams()
        return PARAMS[method].model_validate(v)

    @model_validator(mode="after")
    def _keep(self) -> StageConfig:
        """`keep` chooses between the stage's own weights; a method that picks its members itself (EDST's
        tickets, FGE's snapshots, ...) would silently ignore it, so that is an error."""
        if self.keep == "best" and self.params.chooses_members:
            raise ValueError(f"keep = 'best' does not apply to method '{self.method}': it chooses its own ensemble "
                             "members")
        return self

    def init_ref(self) -> tuple[str, int | None]:
        """`init_from` as (stage name, epoch or None for the stage's final weights)."""
        name, _, epoch = self.init_from.partition("@")
        return name, (int(epoch) if epoch else None)


class AnalysisOptions(Strict):
    """`[analysis]`: settings of the analyses (and of what training records for them)."""

    bins: int = Field(15, gt=1, le=100)
    # ECE bins: "equal" is `bins` equal-width bins over [0, 1]; "original" is FreeTickets' np.digitize over
    # linspace(0, 1, bins) edges (right=True): bins - 1 bins of width 1/(bins - 1), 14 for the default 15
    ece_binning: Literal["equal", "original"] = "equal"
    ood_dataset: str = "cifar100"
    # t-SNE trajectories: "original" = ensemble_freetickets.py's protocol (log-softmax of the first 128 test images,
    # every second epoch from checkpoint index 145, scaled to ceil(145 E / 250) for runs under 250 epochs, sklearn
    # 0.24's TSNE defaults); "ours" = softmax of the first 500 test images after every epoch, PCA-initialised
    # t-SNE. Details in engine/analyses/tsne.py
    tsne_protocol: Literal["original", "ours"] = "original"
    tsne_images: int | None = Field(None, gt=0)  # the protocol's own when unset: 128 original, 500 ours
    tsne_perplexity: float = Field(30.0, gt=0)
    # the training data of the curve / plane / bn_eval "train" numbers and BN passes: "augmented" (crop + flip,
    # in stored order, a fixed seeded draw) as eval_curve.py / plane.py; "plain" is the split as stored
    curve_train_data: Literal["augmented", "plain"] = "augmented"

    @field_validator("ood_dataset")
    @classmethod
    def _ood(cls, v: str) -> str:
        return known(v, names.DATASETS, "dataset")


class Recipe(Strict):
    """A whole recipe: one original command line (or a short pipeline of them) made reproducible."""

    name: str = Field(pattern=r"^[a-z0-9_]+$")
    paper: str
    description: str = ""
    command: str = ""
    notes: str = ""
    analyses: list[str] = Field(default_factory=lambda: ["predict"])
    run: RunConfig = Field(default_factory=RunConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig
    train: TrainDefaults = Field(default_factory=TrainDefaults)
    stage: list[StageConfig] = Field(min_length=1)
    expect: ExpectConfig = Field(default_factory=ExpectConfig)
    analysis: AnalysisOptions = Field(default_factory=AnalysisOptions)
    smoke: dict[str, Any] = Field(default_factory=dict)
    sweep: dict[str, list[Any]] = Field(default_factory=dict)

    @field_validator("paper")
    @classmethod
    def _paper(cls, v: str) -> str:
        return known(v, names.PAPERS, "paper")

    @field_validator("analyses")
    @classmethod
    def _analyses(cls, v: list[str]) -> list[str]:
        for a in v:
            known(a, sorted(names.ANALYSES), "analysis")
        return v


def cross_check(recipe: Recipe) -> list[tuple[str, str]]:
    """Checks beyond one table, as (key.path, what is wrong) pairs: each method's rules about its stage, unique
    stage names, init_from naming an earlier stage and an epoch it saves."""
    problems: list[tuple[str, str]] = []
    seen: dict[str, StageConfig] = {}
    for i, st in enumerate(recipe.stage):
        problems += [(f"stage.{i}.{key}", msg) for key, msg in st.params.check(st)]
        if st.name in seen:
            problems.append((f"stage.{i}.name", f"stage name '{st.name}' is used twice"))
        if st.init_from:
            ref, sep, epoch_s = st.init_from.partition("@")
            if sep and not epoch_s.isdigit():
                problems.append((f"stage.{i}.init_from", f"'{st.init_from}' must be 'STAGE' or 'STAGE@EPOCH'"))
            elif ref not in seen:
                hint = suggest(ref, list(seen)) if seen else " (there is no earlier stage)"
                problems.append((f"stage.{i}.init_from", f"'{ref}' is not an earlier stage{hint}"))
            elif sep:
                src, epoch = seen[ref], int(epoch_s)
                saved = epoch == src.epochs or (src.save_every and epoch % src.save_every == 0 and epoch < src.epochs)
                if not saved:
                    problems.append((
                        f"stage.{i}.init_from",
                        f"stage '{ref}' saves no checkpoint at epoch {epoch} "
                        f"(epochs={src.epochs}, save_every={src.save_every})",
                    ))
        seen.setdefault(st.name, st)
    return problems
