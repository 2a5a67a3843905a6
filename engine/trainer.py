"""The one training loop: every method runs inside it.

The trainer owns the epoch/step loop, precision, the device, evaluation, metrics and checkpoints. A method
(engine/methods/) supplies the paper's algorithm through hooks, and the learning rate (a rule of
engine/schedules.py). A measure-only method (`trains = False`, Early-Bird's prune stage) is only evaluated:
no training pass, no steps, no training FLOPs.
Nothing in the step syncs with the host; loss and accuracy are summed on the device and read once an epoch.
"""

from __future__ import annotations

import functools
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from engine import dist, manifest
from engine.config import StageConfig
from engine.data import Dataset, make_loader, make_loaders
from engine.device import amp_dtype, autocast
from engine.evaluate import evaluate, predict_probs
from engine.flops import CostMeter, layer_flops
from engine.io import CheckpointError, load_checkpoint, save_checkpoint, write_json
from engine.runinfo import RunInfo
from engine.runlog import RunLog
from engine.trajectory import ORIGINAL_IMAGES, OURS_IMAGES, original_epochs

if TYPE_CHECKING:
    from engine.methods.base import Method


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the run stops as failed and the last good checkpoint stays."""


@dataclass
class StageContext:
    """Everything a stage needs from the run around it: its config, what it may read of the run (RunInfo, which its
    method is handed too), the device, the loaded data set and the run's log."""

    stage: StageConfig
    info: RunInfo
    device: torch.device
    data: Dataset
    log: RunLog
    steps_before: int = 0  # optimizer steps of earlier stages, for overall progress
    steps_total: int = 1

    @property
    def stage_dir(self) -> Path:
        return self.info.run_dir / self.stage.name


class Trainer:
    """Trains `model` for one stage with the stage's method; resumable from `<stage>/last.pt`."""

    def __init__(self, ctx: StageContext, model: torch.nn.Module, method_cls: type[Method]) -> None:
        self.ctx = ctx
        self.cfg, self.info, self.data, self.log, self.device = ctx.stage, ctx.info, ctx.data, ctx.log, ctx.device
        run = ctx.info.run
        self.amp_dtype = amp_dtype(ctx.device, run.precision)
        self.amp = functools.partial(autocast, ctx.device, self.amp_dtype)
        self.model_kwargs: dict[str, Any] = dict(getattr(model, "model_kwargs", {}))  # how to rebuild the model
        self.model = model.to(ctx.device)
        self.train_loader, self.eval_loader = make_loaders(ctx.info.data, ctx.data, ctx.device, ctx.info.seeds.loader,
                                                           channels_last=run.channels_last,
                                                           batch_size=self.cfg.batch_size)
        self.method = method_cls(self, ctx.stage, ctx.info)
        self.model = self.method.prepare_model(self.model).to(ctx.device)
        if run.channels_last and ctx.device.type == "cuda":  # after prepare_model, which may build a new model
            self.model = self.model.to(memory_format=torch.channels_last)
        fwd: torch.nn.Module = self.model
        if dist.world() > 1:  # gradients averaged across ranks; the loop is otherwise unchanged
            fwd = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)
        mode = None if run.compile_mode == "default" else run.compile_mode
        self.forward_model = torch.compile(fwd, mode=mode) if run.compile else fwd
        self.optimizer = self.method.build_optimizer()
        self.epoch = 0  # epochs completed
        self.step = 0  # optimizer steps taken in this stage
        self.best_acc = -math.inf
        self.best_epoch = 0  # the epoch that scored best_acc (0: none evaluated yet)
        self.last_eval: dict[str, float] = {}
        self.cost = CostMeter(layer_flops(self.model, self.data.train.image_shape))

    # ---- paths -------------------------------------------------------------------------------------
    @property
    def stage_dir(self) -> Path:
        return self.ctx.stage_dir

    # ---- state -------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "method": self.method.state_dict(),
            "epoch": self.epoch,
            "step": self.step,
            "best_acc": self.best_acc,
            "best_epoch": self.best_epoch,
            "model_kwargs": self.model_kwargs,
            "cost": self.cost.state_dict(),
            "rng_cpu": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.method.load_state_dict(state["method"])
        self.epoch, self.step, self.best_acc = state["epoch"], state["step"], state["best_acc"]
        self.best_epoch = int(state.get("best_epoch", 0))  # absent from last.pt files of older versions
        self.cost.load_state_dict(state["cost"])
        torch.set_rng_state(state["rng_cpu"])
        if state["rng_cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng_cuda"])

    # ---- the loop ----------------------------------------------------------------------------------
    def fit(self, resume: bool = False) -> None:
        """Run the stage's epochs (continuing from last.pt when resuming), then save final.pt and tickets."""
        last = self.stage_dir / "last.pt"
        self.stage_dir.mkdir(parents=True, exist_ok=True)
        self.method.setup()
        if resume and last.exists():
            self.load_state_dict(load_checkpoint(last, self.device))
            self.log.log(f"stage {self.cfg.name}: resumed after epoch {self.epoch}")
            self.save_epoch_checkpoint(only_missing=True)  # written by an older version after last.pt, maybe lost
        self.settle_best()  # a best-pending.pt of a killed epoch: promoted if last.pt recorded it, else dropped
        log, nb = self.log, len(self.train_loader)
        log.truncate_metrics(lambda r: r.get("stage") != self.cfg.name
                             or (r.get("epoch", 0) <= self.epoch and not r.get("final")))
        log.progress.start(f"{self.cfg.name} ({self.cfg.method})", self.cfg.epochs * nb, self.epoch * nb)
        for epoch in range(self.epoch, self.cfg.epochs):
            if self.method.stop_requested():
                log.log(f"stage {self.cfg.name}: {self.cfg.method} ended the stage after epoch {self.epoch}")
                break
            trains = self.method.trains
            record: dict[str, Any] = {"stage": self.cfg.name, "epoch": epoch + 1}
            if trains:
                record.update(self.train_record(epoch, last))
            else:  # a measure-only stage (eb_prune) takes no step: its numbers are the evaluation's alone
                log.progress.advance(nb)
                record["train_flops"] = self.cost.total
            self.epoch = epoch + 1
            if self.epoch % self.cfg.eval_every == 0 or self.epoch == self.cfg.epochs:
                ev = self.evaluate()
                split = self.data.eval_name
                record.update({f"{split}_loss": ev["loss"], f"{split}_acc": ev["acc"]})
                if "acc5" in ev:
                    record[f"{split}_acc5"] = ev["acc5"]
                if ev["acc"] > self.best_acc:  # strictly better: of equal bests the first stays, as the originals
                    self.best_epoch = self.epoch
                    if self.cfg.keep == "best":
                        self.save_best(ev["acc"])  # the weights just evaluated, before end_epoch may change them
                self.best_acc = max(self.best_acc, ev["acc"])
            if self.cfg.record_predictions:  # before end_epoch, which may change the weights (EDST's jump)
                self.record_trajectory()
            self.method.end_epoch(epoch, record)
            log.metric(record)
            self.save_epoch_checkpoint()  # before last.pt: a kill between the two must not lose epoch E for good
            save_checkpoint(last, self.state_dict())
            self.settle_best(self.epoch)
            done = self.ctx.steps_before + (self.step if trains else self.epoch * nb)
            log.status(stage=self.cfg.name, epoch=self.epoch, epochs=self.cfg.epochs,
                       progress=round(done / max(self.ctx.steps_total, 1), 4), last=_short(record))
            acc = record.get(f"{self.data.eval_name}_acc")
            log.log(f"{self.cfg.name} epoch {self.epoch}/{self.cfg.epochs} "
                    + (f"lr {record['lr']:.4g} loss {record['train_loss']:.4f} train {record['train_acc']:.2f}%"
                       if trains else "measured:")
                    + (f" {self.data.eval_name} {acc:.2f}%" if acc is not None else "")
                    + (f" ({record['img_s']:.0f} img/s)" if trains else ""))
        self.finish()

    def train_record(self, epoch: int, last: Path) -> dict[str, Any]:
        """Train one epoch and return its metrics: the epoch's one host sync reads the device-side sums (all ranks
        agree on a NaN, which stops the run as diverged)."""
        t0 = time.perf_counter()
        loss_sum, correct, seen = self.train_epoch(epoch)
        sums = torch.stack([loss_sum.float(), correct.float(), torch.tensor(float(seen), device=self.device)])
        sums = dist.all_reduce_sum(sums).cpu()
        seen = int(sums[2])
        train_loss, train_acc = float(sums[0]) / seen, 100.0 * float(sums[1]) / seen
        elapsed = time.perf_counter() - t0
        if not math.isfinite(train_loss):
            raise TrainingDiverged(
                f"loss became {train_loss} in stage '{self.cfg.name}' epoch {epoch + 1}; "
                f"last good checkpoint kept: {last if last.exists() else 'none yet'}"
            )
        growth, interval = self.method.growth_cost()
        self.cost.add(1, seen, self.method.densities(), growth=growth, update_interval=interval)
        return {"step": self.step, "lr": self.optimizer.param_groups[0]["lr"], "train_loss": train_loss,
                "train_acc": train_acc, "time": elapsed, "img_s": seen / max(elapsed, 1e-9),
                "train_flops": self.cost.total}

    def save_epoch_checkpoint(self, only_missing: bool = False) -> None:
        """checkpoint-E.pt (weights and optimizer, what `init_from = "STAGE@E"` and FGE start from) when the
        stage's `save_every` asks for epoch E; the last epoch's is final.pt."""
        every = self.cfg.save_every
        if not (every and self.epoch and self.epoch % every == 0 and self.epoch < self.cfg.epochs):
            return
        path = self.stage_dir / f"checkpoint-{self.epoch}.pt"
        if only_missing and path.exists():
            return
        save_checkpoint(path, {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                               "epoch": self.epoch, "model_kwargs": self.model_kwargs})

    def save_best(self, acc: float) -> None:
        """best-pending.pt: the weights that just scored the best evaluation accuracy so far, with the method state
        (masks) and `acc`. It becomes best.pt (settle_best) only once last.pt has recorded this epoch as the best,
        so a kill between the two can never leave best.pt holding an epoch that the resumed run redoes."""
        save_checkpoint(self.stage_dir / "best-pending.pt", {
            "model": self.model.state_dict(), "method": self.method.state_dict(), "epoch": self.epoch, "acc": acc,
            "model_kwargs": self.model_kwargs})

    def settle_best(self, pending_epoch: int | None = None) -> None:
        """Promote best-pending.pt to best.pt when the state (last.pt) says its epoch is the best one reached,
        else delete it: it was written by an epoch that a kill cut short before last.pt, which will be redone.

        `pending_epoch` is the pending file's epoch when known (the loop's own, just written); None reads it.
        """
        pending = self.stage_dir / "best-pending.pt"
        if not dist.is_main() or not pending.exists():
            return
        if pending_epoch is None:
            pending_epoch = int(load_checkpoint(pending).get("epoch", -1))
        if pending_epoch == self.best_epoch and pending_epoch <= self.epoch:
            os.replace(pending, self.stage_dir / "best.pt")
            manifest.moved(pending, self.stage_dir / "best.pt")
        else:
            pending.unlink()
            manifest.forget(pending)

    def train_epoch(self, epoch: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        """One pass over the training data; returns device-side loss and hit sums and the sample count."""
        model, opt, method = self.model, self.optimizer, self.method
        model.train()
        loader = self.train_loader
        loader.set_epoch(epoch)
        method.start_epoch(epoch)
        nb = len(loader)
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device, dtype=torch.long)
        seen = 0
        for i, (x, y) in enumerate(loader):
            lr = method.lr(epoch, i / nb)
            for g in opt.param_groups:
                g["lr"] = lr
            with self.amp():
                out = method.forward(x)
                loss = F.cross_entropy(out, y, label_smoothing=self.cfg.label_smoothing)
                extra = method.extra_loss()
                total = loss if extra is None else loss + extra
            opt.zero_grad(set_to_none=True)
            total.backward()
            method.before_step()
            opt.step()
            self.step += 1
            method.after_step()
            loss_sum += total.detach().float() * y.numel()
            correct += (out.detach().argmax(1) == y).sum()
            seen += y.numel()
            self.log.progress.advance()
        return loss_sum, correct, seen

    def evaluate(self) -> dict[str, float]:
        """Loss and accuracy on the evaluation split with the method's forward (eval mode)."""
        self.model.eval()
        if self.eval_loader.train:  # `val_augment`: fresh crops and flips at every evaluation, as the originals draw
            self.eval_loader.set_epoch(self.epoch)
        out = evaluate(self.method.eval_forward, self.eval_loader, self.amp,
                       accuracy=self.info.data.eval_accuracy)
        if self.data.num_classes < 100:
            out.pop("acc5", None)  # top-5 is reported for ImageNet / CIFAR-100 only
        self.model.train()
        self.last_eval = out
        return out

    def predict(self) -> torch.Tensor:
        """Softmax probabilities of the current model on the evaluation split."""
        self.model.eval()
        probs = predict_probs(self.method.eval_forward, self.eval_loader, self.amp)
        self.model.train()
        return probs

    def record_trajectory(self) -> None:
        """Append this epoch's outputs on the first test images to <stage>/trajectory.pt, for the t-SNE analysis.

        `[analysis].tsne_protocol = "original"` (ensemble_freetickets.py): log-softmax of the first 128 images, at
        the epochs `original_epochs` picks (every second from the original's cut at epoch 145 of 250, scaled to the
        stage's length); "ours": softmax of the first 500 images after every epoch. `tsne_images` overrides the
        count. The trainer calls this before `method.end_epoch`, so an EDST phase's last point is its ticket, not
        the network after the prune-and-regrow jump that end_epoch then makes.
        """
        opts = self.info.analysis
        original = opts.tsne_protocol == "original"
        if original and self.epoch not in original_epochs(self.cfg.epochs):
            return
        path = self.stage_dir / "trajectory.pt"
        if not hasattr(self, "_trajectory"):
            k = opts.tsne_images or (ORIGINAL_IMAGES if original else OURS_IMAGES)
            test = self.data.test
            self._traj_loader = make_loader(test.subset(k), self.info.data.eval_batch_size,
                                            device=self.device, train=False, normalize=self.info.data.normalize)
            self._trajectory: dict[str, list[Any]] = {"epoch": [], "member": [], "outputs": []}
            if path.exists():  # resumed: keep the points up to the restored epoch
                old = load_checkpoint(path)
                outs = old["outputs"] if "outputs" in old else old["probs"]
                for i, e in enumerate(old["epoch"].tolist()):
                    if e < self.epoch:
                        self._trajectory["epoch"].append(e)
                        self._trajectory["member"].append(int(old["member"][i]))
                        self._trajectory["outputs"].append(outs[i])
        self.model.eval()
        outs = []
        with torch.no_grad():
            for x, _ in self._traj_loader:
                with self.amp():
                    out = self.method.eval_forward(x).float()
                outs.append(torch.log_softmax(out, dim=1) if original else torch.softmax(out, dim=1))
        self.model.train()
        tr = self._trajectory
        tr["epoch"].append(self.epoch)
        tr["member"].append(self.method.current_member())
        tr["outputs"].append(torch.cat(outs).cpu())
        save_checkpoint(path, {"epoch": torch.tensor(tr["epoch"]), "member": torch.tensor(tr["member"]),
                               "outputs": torch.stack(tr["outputs"]),
                               "output": "log_softmax" if original else "softmax"})

    def finish(self) -> None:
        """final.pt (weights and method state) and tickets.json (the members this stage contributes).

        When training evaluated on a held-out validation split, the final weights are also scored once on
        the official test split, so every run reports a test number. With `keep = "best"` the member is best.pt,
        so that is what gets scored (and logged with its epoch), whichever split chose it.
        """
        dist.check_identical(self.model, f"stage '{self.cfg.name}'")
        final: dict[str, Any] = {"stage": self.cfg.name, "epoch": self.epoch, "final": True}
        if self.cfg.keep == "best":
            dist.barrier()  # rank 0 wrote best.pt
            best_path = self.stage_dir / "best.pt"
            if not best_path.exists():
                raise CheckpointError(f"{best_path}: checkpoint not found (keep = 'best', but stage "
                                      f"'{self.cfg.name}' has no evaluated epoch with a finite accuracy)")
            best = load_checkpoint(best_path, self.device)
            weights = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
            self.model.load_state_dict(best["model"])
            ev = self.test_scores()
            self.model.load_state_dict(weights)  # final.pt below holds the final weights, as for every stage
            final.update(keep="best", best_epoch=int(best["epoch"]), test_loss=ev["loss"], test_acc=ev["acc"])
            self.log.metric(final)
        elif self.data.val is not None:
            ev = self.test_scores()
            self.log.metric({**final, "test_loss": ev["loss"], "test_acc": ev["acc"]})
        save_checkpoint(self.stage_dir / "final.pt", {"model": self.model.state_dict(),
                        "method": self.method.state_dict(), "epoch": self.epoch, "cost": self.cost.state_dict(),
                        "model_kwargs": self.model_kwargs})
        write_json(self.stage_dir / "tickets.json", {"members": self.method.members()})

    def test_scores(self) -> dict[str, float]:
        """Loss and accuracy of the current weights on the official test split (eval mode)."""
        self.model.eval()
        loader = make_loader(self.data.test, self.info.data.eval_batch_size, device=self.device,
                             train=False, normalize=self.info.data.normalize)
        ev = evaluate(self.method.eval_forward, loader, self.amp, accuracy=self.info.data.eval_accuracy)
        self.model.train()
        return ev


def _short(record: dict[str, Any]) -> dict[str, Any]:
    return {k: (round(v, 5) if isinstance(v, float) else v) for k, v in record.items()}
