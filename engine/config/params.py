"""Each method's `[stage.params]`: typed, strict and torch-free, so a recipe validates without the engine.

`PARAMS` maps a recipe's `method` to its params class, filled by `@params_for(...)` beside each class; the
engine's method classes (engine/methods) take the same class as their `Params`. `check` holds the rules that
involve more of the stage than its params (epochs, schedule, init_from); `chooses_members` says the method
picks its own ensemble members (so a stage's `keep` cannot apply).
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, field_validator

from engine.config.base import Strict
from engine.registry import Registry


class MethodParams(Strict):
    """A method without parameters of its own (plain training, fixed masks, DST)."""

    chooses_members: ClassVar[bool] = False
    sparse: ClassVar[bool] = False  # the method trains masked weights: its stage takes a `sparse` table

    def check(self, stage: Any) -> list[tuple[str, str]]:
        """Problems of the stage around these params, as (key under the stage, message)."""
        return []


Density = Annotated[float, Field(gt=0, le=1)]

PARAMS: Registry[type[MethodParams]] = Registry("method params")


params_for = PARAMS.register  # @params_for("fix", "dst"): the params class of the methods of those recipe names


params_for("train")(MethodParams)


@params_for("fix", "dst")
class SparseParams(MethodParams):
    """A sparse method without parameters of its own (fixed masks; DST's prune-and-regrow)."""

    sparse: ClassVar[bool] = True


def sparse_methods() -> set[str]:
    """Names of the methods whose stages take a `sparse` table."""
    return {name for name, cls in PARAMS.items() if cls.sparse}


def ratio_tag(ratio: float) -> str:
    """'30' for 0.3, '12.5' for 0.125: the percent in file names (eb-30.pt) and metric keys."""
    return f"{round(float(ratio) * 100, 6):g}"


def cycle_split(epochs: int, cycle_rate: float, cycle: int) -> tuple[int, int]:
    """(pre-train epochs, number of cheap tickets): C = epochs·cycle_rate floored to a multiple of `cycle`."""
    c = epochs * cycle_rate
    if c < cycle:
        return epochs, 0
    c = int(c // cycle * cycle)
    return epochs - c, c // cycle


# ---- FreeTickets: EDST --------------------------------------------------------------------------------------
@params_for("edst")
class EDSTParams(SparseParams):
    """Exploration, then `model_num` refinement phases each ending in a ticket (main_EDST.py)."""

    chooses_members: ClassVar[bool] = True

    epochs_explo: int = Field(150, ge=0)
    model_num: int = Field(3, ge=1)
    large_death_rate: float = Field(0.8, ge=0, lt=1)
    refine_lr: float = Field(0.01, gt=0)
    low_lr: float = Field(0.001, gt=0)
    jump: bool = True  # the large prune-and-regrow between phases (off with --fix)
    # [[offset, lr], ...] within every phase (offsets in epochs from its start; empty: refine_lr, then low_lr)
    phase_schedule: list[list[float]] = Field(default_factory=list)
    # restart the prune-rate decay ([sparse].prune_rate_schedule) at every jump, over one phase; the first
    # period spans exploration + phase 1 (ImageNet main.py: CosineDecay over 100 epochs, then 70 per phase)
    prune_rate_restart: bool = False

    @field_validator("phase_schedule")
    @classmethod
    def _table(cls, v: list[list[float]]) -> list[list[float]]:
        if any(len(row) != 2 for row in v):
            raise ValueError("phase_schedule must be a list of [offset, lr] pairs")
        offsets = [row[0] for row in v]
        if offsets and offsets[0] != 0 or any(b <= a for a, b in zip(offsets, offsets[1:])):
            raise ValueError("phase_schedule offsets must start at 0 and increase")
        if any(o != int(o) for o in offsets) or any(row[1] <= 0 for row in v):
            raise ValueError("phase_schedule offsets must be whole epochs and its rates positive")
        return [[int(o), float(lr)] for o, lr in v]

    def check(self, stage: Any) -> list[tuple[str, str]]:
        if stage.epochs - self.epochs_explo < self.model_num:
            return [("params.epochs_explo", f"epochs ({stage.epochs}) - epochs_explo ({self.epochs_explo}) must leave "
                     f"at least one epoch for each of the {self.model_num} refinement phases")]
        return []


# ---- Sup-tickets: GraNet, GMP, cheap tickets ------------------------------------------------------------------
@params_for("granet")
class GraNetParams(SparseParams):
    """Gradual magnitude pruning from init_density to final_density with zero-cost regrowth (GraNet)."""

    # "final": start at the final density (RigL / SET / static training through GraNet's code, as the original's
    # --init-density equal to --final-density)
    init_density: Density | Literal["final"] = 0.5
    # None: the stage's [sparse].density (0.05 by default, the original's --final-density default), so a sweep of
    # train.sparse.density moves GraNet's target too
    final_density: Density | None = None
    init_prune_epoch: float = Field(0, ge=0)
    final_prune_epoch: float = Field(110, ge=0)

    def densities(self, sparse_density: float) -> tuple[float, float]:
        """(initial, final) density of a stage whose [sparse].density is `sparse_density`."""
        final = sparse_density if self.final_density is None else self.final_density
        return (final if self.init_density == "final" else self.init_density), final


@params_for("gmp")
class GMPParams(GraNetParams):
    """Gradual magnitude pruning from a dense start (no regrowth)."""

    init_density: float = Field(1.0, gt=0, le=1)


@params_for("suptickets")
class SupTicketsParams(GraNetParams):
    """GraNet pre-training, then cyclic cheap tickets superposed into one model (Sup-tickets)."""

    chooses_members: ClassVar[bool] = True

    cycle_rate: float = Field(0.1, gt=0, lt=1)
    cycle: int = Field(8, gt=0)
    lr_1: float = Field(0.001, gt=0)  # at the cycle's ends, where tickets are taken (the README's value)
    lr_2: float = Field(0.005, gt=0)  # at the cycle's middle
    no_maskupdates: bool = True
    re_explore: bool = True
    large_death_rate: float = Field(0.5, ge=0, lt=1)
    superposing: Literal["caa", "cima"] = "caa"
    cima_factor: float = Field(0.5, gt=0, le=1)
    include_pretrained: bool = True  # the pre-trained model counts as member 0 of the average (the code's way)
    update_bn: bool = True
    # --fix: no periodic topology updates in either phase (static ERK / SNIP pre-training); the re-explorations at
    # the cycles' starts still run (main_suptickets.py calls truncate_weights directly)
    fix: bool = False
    # pre-training epochs given outright (ImageNet --pretrain_epoch; the remaining epochs are the cycles);
    # 0: derived from cycle_rate as the CIFAR script does
    pretrain_epochs: int = Field(0, ge=0)
    # x0.1 from these 0-based epochs of pre-training (ImageNet --first_m/--second_m/--third_m);
    # empty: int(P/2) and int(3P/4) (the CIFAR MultiStepLR)
    milestones: list[int] = Field(default_factory=list)
    # the ImageNet main.py's swap after each superposition (see engine/methods/suptickets.py); false: the CIFAR
    # script's way, training continues on its own trajectory
    swap_superposed: bool = False

    def budget(self, epochs: int) -> tuple[int, int]:
        """(pre-train epochs, number of cheap tickets) of a stage of `epochs` epochs."""
        if self.pretrain_epochs:
            return self.pretrain_epochs, max(epochs - self.pretrain_epochs, 0) // self.cycle
        return cycle_split(epochs, self.cycle_rate, self.cycle)

    def check(self, stage: Any) -> list[tuple[str, str]]:
        if self.pretrain_epochs:
            cyclic = stage.epochs - self.pretrain_epochs
            if cyclic <= 0 or cyclic % self.cycle:
                return [("params.pretrain_epochs", f"epochs ({stage.epochs}) - pretrain_epochs "
                         f"({self.pretrain_epochs}) = {cyclic} must be a positive multiple of the cycle "
                         f"({self.cycle} epochs)")]
        elif cycle_split(stage.epochs, self.cycle_rate, self.cycle)[1] == 0:
            return [("params.cycle_rate", f"epochs·cycle_rate = {stage.epochs * self.cycle_rate:g} is shorter than "
                     f"one cycle ({self.cycle} epochs): no cheap tickets would be taken")]
        return []


# ---- Early-Bird tickets -------------------------------------------------------------------------------------
class QuantParams(MethodParams):
    """Word lengths of the simulated block floating point (0 = full precision) and the rounding."""

    wl_weight: int = Field(0, ge=0, le=24)
    wl_activate: int = Field(0, ge=0, le=24)
    wl_grad: int = Field(0, ge=0, le=24)
    wl_error: int = Field(0, ge=0, le=24)
    wl_momentum: int = Field(0, ge=0, le=24)
    rounding: Literal["stochastic", "nearest"] = "stochastic"

    @property
    def low_precision(self) -> bool:
        return any(w > 0 for w in (self.wl_weight, self.wl_activate, self.wl_grad, self.wl_error, self.wl_momentum))


class EBTrainParams(QuantParams):
    """Sparsity regularisation (-sr, --s) and SWALP averaging (--swa, --swa_start)."""

    sr: bool = True
    s: float = Field(1e-4, ge=0, le=1)
    swa: bool = False
    swa_start: int = Field(140, ge=0)


def _check_ratios(v: list[float]) -> list[float]:
    if not v:
        raise ValueError("give at least one pruning ratio")
    bad = [r for r in v if not 0 < r < 1]
    if bad:
        raise ValueError(f"pruning ratios must lie in (0, 1), got {bad[0]}")
    if len({ratio_tag(r) for r in v}) != len(v):
        raise ValueError("pruning ratios must be distinct")
    return v


@params_for("eb_search")
class EBSearchParams(EBTrainParams):
    """main.py: one Early-Bird detector per pruning ratio over a FIFO of channel masks."""

    ratios: list[float] = Field(default_factory=lambda: [0.3, 0.5, 0.7])
    window: int = Field(5, ge=2, le=100)  # epoch_keep: masks in the FIFO
    threshold: float = Field(0.1, ge=0, le=1)
    stop_when_found: bool = False  # end the stage once every ratio has its ticket (needs the trainer's stop hook)

    @field_validator("ratios")
    @classmethod
    def _ratios(cls, v: list[float]) -> list[float]:
        return _check_ratios(v)


@params_for("eb_prune")
class EBPruneParams(QuantParams):
    """vggprune.py / resprune.py: which ticket to prune, at what ratio."""

    ratio: float = Field(0.3, gt=0, lt=1)  # --percent
    source: str = Field("search", pattern=r"^[A-Za-z0-9_\-]+$")  # the eb_search stage
    # the EB checkpoint, the search's final weights, its best-accuracy weights (best.pt: the search needs
    # keep = "best"; Figure 1's hollow stars), or its weights after epoch E (checkpoint-E.pt: needs save_every)
    ticket: Literal["eb", "final", "best"] | int = "eb"
    ticket_ratio: float = Field(0.0, ge=0, lt=1)  # whose EB ticket (0: `ratio`'s own)
    min_channels: int = Field(1, ge=1)
    missing: Literal["error", "final"] = "error"  # no EB ticket at that ratio: fail, or prune the final weights

    @property
    def ticket_from(self) -> float:
        """The ratio whose EB ticket this stage prunes (`ticket_ratio`, else its own `ratio`)."""
        return self.ticket_ratio or self.ratio

    @field_validator("ticket")
    @classmethod
    def _ticket(cls, v: Any) -> Any:
        if isinstance(v, int) and v < 0:
            raise ValueError("ticket epoch must be >= 0")
        return v

    def check(self, stage: Any) -> list[tuple[str, str]]:
        if stage.epochs != 1:
            return [("epochs", "eb_prune changes no weights (its epoch only measures the pruned network): "
                               "set epochs = 1")]
        return []


@params_for("eb_retrain")
class EBRetrainParams(EBTrainParams):
    """main_c.py / main_scratch.py: fine-tune or re-initialise the pruned network."""

    weights: Literal["inherit", "reinit"] = "inherit"  # inherit: fine-tune the EB ticket (paper; main_c_lp.py)
    start_epoch: Literal["eb"] | int = 0  # schedule offset: run epochs start..start+E-1 of the schedule
    # the absolute epoch the retraining ends at (main_c.py's --epochs after --start-epoch): the stage stops once
    # start + epochs trained reaches it, so a ticket drawn at epoch e retrains end_epoch - e epochs; 0: run
    # the stage's `epochs` (which must then cover end_epoch - start)
    end_epoch: int = Field(0, ge=0)

    @field_validator("start_epoch")
    @classmethod
    def _start(cls, v: Any) -> Any:
        if isinstance(v, int) and v < 0:
            raise ValueError("start_epoch must be >= 0 or \"eb\"")
        return v

    def check(self, stage: Any) -> list[tuple[str, str]]:
        if not stage.init_from:
            return [("init_from", "eb_retrain trains a pruned network: set init_from to the eb_prune stage")]
        if self.end_epoch and isinstance(self.start_epoch, int):
            if self.end_epoch <= self.start_epoch:
                return [("params.end_epoch", f"end_epoch {self.end_epoch} must lie after start_epoch "
                                             f"{self.start_epoch}")]
            if self.start_epoch + stage.epochs < self.end_epoch:
                return [("epochs", f"{stage.epochs} epochs from start_epoch {self.start_epoch} never reach "
                                   f"end_epoch {self.end_epoch}: set epochs >= {self.end_epoch - self.start_epoch}")]
        return []


# ---- Mode connectivity and FGE ---------------------------------------------------------------------------------
@params_for("curve")
class CurveParams(MethodParams):
    """A Bezier curve or polygonal chain between two trained networks (dnn-mode-connectivity train.py)."""

    chooses_members: ClassVar[bool] = True

    curve: Literal["bezier", "polychain"] = "bezier"
    num_bends: int = Field(3, ge=2, le=64)
    start: str = "endpoint1"  # the stages (or STAGE@EPOCH checkpoints) whose weights are the endpoints
    end: str = "endpoint2"
    fix_start: bool = True
    fix_end: bool = True
    init_linear: bool = True
    eval_t: float = Field(0.5, ge=0, le=1)  # where the per-epoch monitor evaluates
    eval_points: int = Field(61, ge=2)  # `curve` analysis: points along the curve (eval_curve --num_points)
    eval_line: bool = True  # `curve` analysis: also the straight segment between the endpoints
    plane_grid: int = Field(21, ge=2)  # `plane` analysis: grid points per axis (plane.py --grid_points)
    plane_margin: float = Field(0.2, ge=0)  # `plane` analysis: margin on each side, in units of the basis

    def check(self, stage: Any) -> list[tuple[str, str]]:
        problems = []
        if self.start == self.end:
            problems.append(("params.end", f"start and end are the same stage '{self.start}'"))
        if stage.init_from:
            problems.append(("init_from", "a curve stage takes its endpoints from params.start / params.end"))
        return problems


@params_for("fge")
class FGEParams(MethodParams):
    """Fast Geometric Ensembling from a pretrained checkpoint (fge.py)."""

    chooses_members: ClassVar[bool] = True

    # fge.py loads the checkpoint's optimizer state too: its momentum buffers, and its param groups'
    # momentum / weight decay, which then override the FGE command's --momentum / --wd
    load_optimizer: bool = True

    def check(self, stage: Any) -> list[tuple[str, str]]:
        problems = []
        if stage.schedule.name != "cyclic":
            problems.append(("schedule.name", f"fge runs the cyclic schedule (got '{stage.schedule.name}')"))
        if not stage.init_from:
            problems.append(("init_from", "fge starts from a pretrained checkpoint, e.g. init_from = \"train@160\""))
        return problems
