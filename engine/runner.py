"""Runs a resolved recipe in a run directory: its stages in order, then its analyses."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from engine import dist, manifest
from engine.analyses import ANALYSES, PREFLIGHT, AnalysisContext
from engine.config import Recipe
from engine.data import Dataset, recipe_data
from engine.flops import param_counts
from engine.io import load_checkpoint
from engine.loggers import RunContext, open_mirror
from engine.methods import METHODS
from engine.models import create_model
from engine.provenance import record_stage
from engine.runinfo import RunInfo
from engine.runlog import RunLog
from engine.store import set_aside_if_damaged
from engine.trainer import StageContext, Trainer


def build_stage_model(recipe: Recipe, index: int, num_classes: int, run_dir: Path) -> torch.nn.Module:
    """Stage `index`'s starting model: seeded fresh init, then an earlier stage's weights if `init_from` says so."""
    stage, info = recipe.stage[index], RunInfo.of(recipe, index, run_dir)
    torch.manual_seed(info.seeds.model)
    if not stage.init_from:
        return create_model(recipe.model.arch, num_classes, recipe.model.width, **recipe.model.options())
    state = load_checkpoint(info.checkpoint(stage.init_from))
    # a checkpoint of a physically pruned network says how to build it (e.g. Early-Bird's channel cfg)
    kwargs = {**recipe.model.options(), **state.get("model_kwargs", {})}
    model = create_model(recipe.model.arch, num_classes, recipe.model.width, **kwargs)
    model.load_state_dict(state["model"])
    model.model_kwargs = dict(state.get("model_kwargs", {}))  # type: ignore[assignment]
    return model


def stage_trainer(recipe: Recipe, index: int, run_dir: Path, data: Dataset, log: RunLog, device: torch.device,
                  steps_before: int = 0, steps_total: int = 1) -> Trainer:
    """The trainer of stage `index` with its starting model and its method, as a run builds it (`repro sparsity
    --recipe` builds the same to show the masks a sparse stage starts from)."""
    stage = recipe.stage[index]
    model = build_stage_model(recipe, index, data.num_classes, run_dir)
    ctx = StageContext(stage=stage, info=RunInfo.of(recipe, index, run_dir), device=device, data=data, log=log,
                       steps_before=steps_before, steps_total=steps_total)
    return Trainer(ctx, model, METHODS[stage.method])


def starting_masks(recipe: Recipe, index: int, device: torch.device) -> dict[str, torch.Tensor]:
    """The masks sparse stage `index` starts from, drawn exactly as its training draws them (the same seeded model,
    training loader, mask seed and rule: the stage's own method sets them up), without training or writing."""
    stage = recipe.stage[index]
    if not stage.params.sparse:
        raise ValueError(f"stage '{stage.name}' ({stage.method}) is not a sparse stage: it has no masks")
    if stage.init_from:
        raise ValueError(f"stage '{stage.name}' starts from the weights of '{stage.init_from}' (init_from): its masks "
                         "depend on that stage's training")
    nowhere = Path("/nonexistent")  # a fresh sparse stage reads no file of its run and this writes none
    trainer = stage_trainer(recipe, index, nowhere, recipe_data(recipe), RunLog(nowhere, enabled=False), device)
    trainer.method.setup()
    return trainer.method.masking.state_dict()["masks"]


def run_recipe(
    recipe: Recipe, run_dir: Path, log: RunLog, *, device: torch.device, resume: bool = False
) -> dict[str, Any]:
    """Every stage (skipping finished ones on resume), then every analysis; returns the summary numbers. Meanwhile
    the metrics are mirrored to the recipe's `run.loggers` (rank 0), closed however the run ends."""
    if log.enabled and recipe.run.loggers:
        ctx = RunContext(run_dir, recipe.name, recipe)
        log.mirror = open_mirror(recipe.run.loggers, ctx, [(s.name, s.epochs) for s in recipe.stage], log.log)
    state = "failed"
    try:
        summary = _stages_and_analyses(recipe, run_dir, log, device=device, resume=resume)
        state = "done"
        return summary
    except KeyboardInterrupt:
        state = "killed"
        raise
    finally:
        if log.mirror is not None:
            log.mirror.close(state)
            log.mirror = None
        record_metrics(run_dir, log)


def record_metrics(run_dir: Path, log: RunLog) -> None:
    """metrics.jsonl's SHA-256 into manifest.json (it is appended continuously: recorded when a stage ends and when
    the run ends, however it ends)."""
    if log.enabled and dist.is_main() and (run_dir / "metrics.jsonl").is_file():
        manifest.record(run_dir, "metrics.jsonl")


def _stages_and_analyses(
    recipe: Recipe, run_dir: Path, log: RunLog, *, device: torch.device, resume: bool = False
) -> dict[str, Any]:
    for mode in recipe.analyses:  # an analysis's outside data (CIFAR-10-C) is checked before any training
        if mode in PREFLIGHT:
            PREFLIGHT[mode](recipe)
    d = recipe.data
    data = recipe_data(recipe)
    steps = [s.epochs * math.ceil(len(data.train.y) / (s.batch_size or d.batch_size)) for s in recipe.stage]
    total = sum(steps)
    before = 0
    summary: dict[str, Any] = {}
    flops, dense_step = 0.0, 0.0
    for index, stage in enumerate(recipe.stage):
        stage_dir = run_dir / stage.name
        if (stage_dir / "final.pt").exists() and (stage_dir / "tickets.json").exists():
            log.log(f"stage {stage.name}: already finished")
            before += steps[index]
            cost = load_checkpoint(stage_dir / "final.pt").get("cost", {})
            flops += float(cost.get("total", 0.0))
            continue
        log.status(stage=stage.name, stage_index=index, epoch=0, epochs=stage.epochs)
        if dist.is_main():  # provenance.json: the seeds this stage is seeded with, in this session
            record_stage(run_dir, stage.name, RunInfo.of(recipe, index, run_dir).seeds, dist.world())
        trainer = stage_trainer(recipe, index, run_dir, data, log, device, steps_before=before, steps_total=total)
        trainer.fit(resume=resume)
        record_metrics(run_dir, log)
        dist.barrier()  # later stages read this stage's files, written by rank 0
        before += steps[index]
        summary.update({f"{stage.name}.{data.eval_name}_{k}": v for k, v in trainer.last_eval.items()})
        flops += trainer.cost.total
        dense_step = trainer.cost.dense_step
        summary.update({f"params.{k}": v for k, v in param_counts(trainer.model, trainer.method.densities()).items()})
    ref_epochs = recipe.run.dense_reference_epochs or max(s.epochs for s in recipe.stage)
    summary["train_flops"] = flops
    summary["train_flops_dense_epochs"] = ref_epochs  # the dense model's epochs that train_flops_vs_dense divides by
    if dense_step:
        summary["train_flops_vs_dense"] = flops / (dense_step * ref_epochs * len(data.train.y))
    log.progress.stop()
    if not dist.is_main():
        return summary
    if recipe.analyses:
        h5 = run_dir / "analysis.h5"
        moved = set_aside_if_damaged(h5)  # a damaged file would fail every analysis, now and on every resume
        if moved is not None:
            log.log(f"warning: {h5} was damaged; moved aside to {moved}; recomputing")
    actx = AnalysisContext(recipe=recipe, run_dir=run_dir, device=device, _data=data)
    for mode in recipe.analyses:
        log.status(stage=f"analysis:{mode}")
        log.log(f"analysis {mode} ...")
        out = run_analysis(mode, actx)
        summary.update({f"{mode}.{k}": v for k, v in out.items()})
    return summary


def run_analysis(mode: str, ctx: AnalysisContext) -> dict[str, Any]:
    """(Re)compute one analysis into the run's analysis.h5."""
    return ANALYSES[mode](ctx)
