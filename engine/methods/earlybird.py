"""Early-Bird tickets (You et al., ICLR 2020): search, real channel pruning, retraining (main.py, vggprune.py /
resprune.py, main_c.py / main_scratch.py, and their low-precision *_lp.py versions).

    eb_search:   train with  grad(gamma) += s * sign(gamma)  on every BatchNorm2d (network slimming, -sr)
                 after k epochs (k = 0 at initialisation): mask_p <- |gamma| > global threshold at ratio p
                 EB(p) <- the last W masks all lie within `threshold` of the newest  ->  save <stage>/eb-<100p>.pt
                 (stop_when_found: stop_requested() turns true once every ratio has its ticket; the trainer
                 ends the stage when it reads that)
    eb_prune:    load the search's ticket, build the smaller network of the kept channels, copy the surviving
                 weights and set the trainer's model_kwargs = {"cfg": cfg}; a measure-only stage (trains =
                 False): its epoch is one evaluation of the pruned network before retraining, as vggprune.py's
                 test(), with no training pass, so no weight or BN statistic moves and it costs no training FLOPs
    eb_retrain:  train the pruned network: "inherit" the EB weights (EB Train, fine-tuning) or "reinit" them
                 (EB Train re-init); `start_epoch` runs the schedule from that absolute epoch (main_c.py's
                 --start-epoch), until the absolute `end_epoch` when set (--epochs); sparsity regularisation
                 kept, as the scripts keep -sr

Low precision (EB Train LL): any of wl_weight / wl_activate / wl_grad / wl_error / wl_momentum > 0 trains with
8-bit block floating point through engine.lowprec (qtorch's arithmetic, written with hooks); swa = true averages
the weights from epoch `swa_start` on (SWALP), re-estimates the BN statistics of that average, and records
`swa_test_acc` / `swa_test_loss` each epoch, saving <stage>/swa.pt (not an ensemble member).

The prune stage records cfg, parameters and FLOPs before and after in its method state (final.pt) and its
metrics; the retrain stage's model is built from that cfg automatically (`init_from` = the prune stage).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from engine.bn import update_bn
from engine.config.params import EBTrainParams, ratio_tag
from engine.evaluate import evaluate
from engine.io import CheckpointError, load_checkpoint, save_checkpoint
from engine.lowprec import LowPrecision
from engine.methods.base import Method, register_method
from engine.models import create_model
from engine.schedules import lr_at
from engine.sparse.channel_prune import model_cost, prune_channels
from engine.sparse.channels import EarlyBird, bn_layers, bn_scales, channel_mask

__all__ = ["EBPrune", "EBRetrain", "EBSearch"]


class _EBBase(Method):
    """Shared hooks: low-precision attachment, the L1 subgradient on BN scales, SWA."""

    Params = EBTrainParams

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        p = self.params
        self.lowprec: LowPrecision | None = None
        if p.low_precision:
            self.lowprec = LowPrecision(model, wl_weight=p.wl_weight, wl_activate=p.wl_activate,
                                        wl_grad=p.wl_grad, wl_error=p.wl_error, wl_momentum=p.wl_momentum,
                                        rounding=p.rounding)
        return model

    def setup(self) -> None:
        self.gammas = [bn.weight for bn in bn_layers(self.model)]
        self.swa_state: dict[str, torch.Tensor] = {}
        self.swa_n = 0

    # ---- the step ------------------------------------------------------------------------------------
    @torch.no_grad()
    def before_step(self) -> None:
        p = self.params
        if getattr(p, "sr", False) and p.s > 0:
            ws = [w for w in self.gammas if w.grad is not None]
            if ws:
                torch._foreach_add_([w.grad for w in ws], torch._foreach_sign(ws), alpha=p.s)
        if self.lowprec is not None:
            self.lowprec.quantize_grads(self._opt_params())

    def after_step(self) -> None:
        if self.lowprec is not None:
            self.lowprec.quantize_weights(self._opt_params())
            self.lowprec.quantize_momentum(self.trainer.optimizer)

    def _opt_params(self) -> list[torch.Tensor]:
        return [q for g in self.trainer.optimizer.param_groups for q in g["params"]]

    # ---- SWA (SWALP) ---------------------------------------------------------------------------------
    def end_epoch(self, epoch: int, record: dict[str, Any]) -> None:
        # swa_start counts absolute epochs, like the schedule (a retrain from --start-epoch 32 averages from 140)
        if getattr(self.params, "swa", False) and epoch + getattr(self, "offset", 0) >= self.params.swa_start:
            self._swa_update(epoch, record)

    @torch.no_grad()
    def _swa_update(self, epoch: int, record: dict[str, Any]) -> None:
        """Running mean of the weights (1/(n+1)), then a full-precision copy with re-estimated BN statistics
        is scored on the evaluation split and saved as <stage>/swa.pt."""
        t = self.trainer
        named = dict(self.model.named_parameters())
        if self.swa_n == 0:
            self.swa_state = {n: q.detach().float().clone() for n, q in named.items()}
        else:
            for n, q in named.items():
                self.swa_state[n].add_((q.detach().float() - self.swa_state[n]) / (self.swa_n + 1))
        self.swa_n += 1
        swa_model = self._build(t.model_kwargs).to(t.device)
        state = {k: v.clone() for k, v in self.model.state_dict().items()}
        state.update({n: v.to(state[n].dtype) for n, v in self.swa_state.items()})
        swa_model.load_state_dict(state)
        update_bn(swa_model, t.train_loader, weighting="samples")  # SWALP: momentum b/(n+b) per batch
        swa_model.eval()
        ev = evaluate(swa_model, t.eval_loader, t.amp, accuracy=self.info.data.eval_accuracy)
        split = t.data.eval_name
        record.update({f"swa_{split}_loss": ev["loss"], f"swa_{split}_acc": ev["acc"], "swa_n": self.swa_n})
        save_checkpoint(t.stage_dir / "swa.pt", {"model": swa_model.state_dict(), "epoch": epoch + 1,
                                                 "swa_n": self.swa_n, "model_kwargs": t.model_kwargs})

    # ---- helpers -------------------------------------------------------------------------------------
    def _build(self, model_kwargs: dict[str, Any] | None = None) -> torch.nn.Module:
        m = self.info.model
        return create_model(m.arch, self.trainer.data.num_classes, m.width, **{**m.options(), **(model_kwargs or {})})

    def _input_shape(self) -> tuple[int, ...]:
        return tuple(self.trainer.data.train.image_shape)

    def state_dict(self) -> dict[str, Any]:
        return {"swa": dict(self.swa_state), "swa_n": self.swa_n}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.swa_state = {k: v.to(self.trainer.device) for k, v in state.get("swa", {}).items()}
        self.swa_n = int(state.get("swa_n", 0))


# -------------------------------------------------------------------------------------------------------------
# search
# -------------------------------------------------------------------------------------------------------------


@register_method("eb_search")
class EBSearch(_EBBase):
    """main.py / main_lp.py: sparsity-regularised training with one EB detector per pruning ratio."""

    def setup(self) -> None:
        super().setup()
        p = self.params
        self.detectors = [EarlyBird(r, p.window, p.threshold) for r in p.ratios]
        self.scales: list[torch.Tensor] = []  # |gamma| after k epochs, k = 0, 1, ...
        self.found: dict[str, int] = {}  # ratio tag -> epochs trained when the ticket was drawn
        self.stop = False

    def start_epoch(self, epoch: int) -> None:
        if epoch == 0 and not self.scales:
            self.observe(0, None)  # the mask at initialisation (all gammas 0.5: empty), as the original's first

    def end_epoch(self, epoch: int, record: dict[str, Any]) -> None:
        super().end_epoch(epoch, record)
        self.observe(epoch + 1, record)

    def observe(self, epoch: int, record: dict[str, Any] | None) -> None:
        """Masks after `epoch` training epochs: feed every detector, save the tickets that appear."""
        scales = bn_scales(self.model)
        self.scales.append(scales)
        t = self.trainer
        for det in self.detectors:
            det.observe(channel_mask(scales, det.ratio))
            tag = ratio_tag(det.ratio)
            if record is not None and not math.isnan(det.trace[-1]):
                record[f"eb_distance_{tag}"] = det.trace[-1]
            if det.found is not None and tag not in self.found:
                self.found[tag] = epoch
                save_checkpoint(t.stage_dir / f"eb-{tag}.pt", {
                    "model": self.model.state_dict(), "epoch": epoch, "ratio": det.ratio,
                    "model_kwargs": t.model_kwargs, "scales": scales})
                if record is not None:
                    record[f"eb_epoch_{tag}"] = epoch
                self.log(f"{self.stage.name}: early-bird ticket at p={det.ratio:g} after {epoch} epochs "
                         f"(largest distance in the window {det.trace[-1]:.4f} <= {det.threshold:g})")
        if self.params.stop_when_found and len(self.found) == len(self.detectors) and not self.stop:
            self.stop = True
            self.log(f"{self.stage.name}: every ratio has its early-bird ticket; stopping the search")

    def stop_requested(self) -> bool:
        """True once every ratio has its ticket and `stop_when_found` is set (read by the trainer's loop)."""
        return self.stop

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(),
                "earlybird": {
                    "ratios": [float(d.ratio) for d in self.detectors],
                    "window": self.params.window, "threshold": self.params.threshold,
                    "scales": torch.stack(self.scales) if self.scales else torch.zeros(0),
                    "detectors": [d.state_dict() for d in self.detectors],
                    "found": dict(self.found), "stop": self.stop}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        eb = state["earlybird"]
        self.scales = list(eb["scales"].unbind(0)) if eb["scales"].numel() else []
        for d, s in zip(self.detectors, eb["detectors"]):
            d.load_state_dict(s)
        self.found = {str(k): int(v) for k, v in eb["found"].items()}
        self.stop = bool(eb["stop"])


# -------------------------------------------------------------------------------------------------------------
# prune
# -------------------------------------------------------------------------------------------------------------


@register_method("eb_prune")
class EBPrune(_EBBase):
    """vggprune.py / resprune.py: the EB ticket made physically smaller. Its epoch measures, never trains."""

    trains = False

    def _ticket_file(self) -> tuple[Any, str]:
        p = self.params
        src = self.info.run_dir / p.source
        if not src.is_dir():
            raise FileNotFoundError(f"eb_prune: no stage directory '{p.source}' in {self.info.run_dir} "
                                    f"(params.source must name the eb_search stage)")
        if p.ticket == "final":
            return self.info.checkpoint(p.source), "final weights"
        if p.ticket == "best":
            if not (src / "best.pt").exists():
                raise FileNotFoundError(f"eb_prune: stage '{p.source}' kept no best.pt (set its keep = \"best\")")
            return src / "best.pt", "best-accuracy weights"
        if isinstance(p.ticket, int):
            try:
                return self.info.checkpoint(f"{p.source}@{p.ticket}"), f"epoch {p.ticket}"
            except CheckpointError:
                raise FileNotFoundError(f"eb_prune: stage '{p.source}' saved no checkpoint at epoch {p.ticket} "
                                        f"(set its save_every)") from None
        tag = ratio_tag(p.ticket_from)
        path = src / f"eb-{tag}.pt"
        if path.exists():
            return path, f"EB ticket p={tag}%"
        if p.missing == "final":
            self.log(f"{self.stage.name}: no early-bird ticket at p={tag}% in '{p.source}'; pruning its final weights")
            return src / "final.pt", "final weights (no EB ticket)"
        raise FileNotFoundError(f"eb_prune: stage '{p.source}' drew no early-bird ticket at p={tag}% "
                                f"(train longer, raise params.threshold, or set params.missing = \"final\")")

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        p, t = self.params, self.trainer
        path, what = self._ticket_file()
        state = load_checkpoint(path)
        src = self._build(state.get("model_kwargs") or {})
        src.load_state_dict(state["model"])
        src.eval()
        shape = self._input_shape()
        before = model_cost(src, shape)
        res = prune_channels(src, p.ratio, self._build_cfg, p.min_channels)
        after = model_cost(res.model, shape)
        t.model_kwargs = {"cfg": list(res.cfg)}
        self.pruned = {
            "ratio": p.ratio, "ticket": what, "ticket_epoch": int(state.get("epoch", -1)), "cfg": list(res.cfg),
            "threshold": res.threshold, "channels_kept": res.kept, "channels_total": res.total,
            "params_before": before["params"], "params_after": after["params"],
            "flops_before": before["flops"], "flops_after": after["flops"],
        }
        self.log(
            f"{self.stage.name}: pruned {what} (after {self.pruned['ticket_epoch']} epochs) at p={p.ratio:g}: "
            f"channels {res.kept}/{res.total}, params {before['params']} -> {after['params']} "
            f"({after['params'] / before['params']:.3f}), FLOPs {before['flops']} -> {after['flops']} "
            f"({after['flops'] / before['flops']:.3f}); cfg {res.cfg}")
        res.model.train()
        return super().prepare_model(res.model)

    def _build_cfg(self, cfg: list[int | str]) -> torch.nn.Module:
        return self._build({"cfg": cfg})

    def end_epoch(self, epoch: int, record: dict[str, Any]) -> None:
        record.update({k: v for k, v in self.pruned.items() if isinstance(v, (int, float))})

    def state_dict(self) -> dict[str, Any]:
        return {"prune": dict(self.pruned)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass  # the pruning is rebuilt by prepare_model; its info is the same


# -------------------------------------------------------------------------------------------------------------
# retrain
# -------------------------------------------------------------------------------------------------------------


@register_method("eb_retrain")
class EBRetrain(_EBBase):
    """main_c.py / main_scratch.py (and *_lp.py): train the pruned network, with EB weights or re-initialised."""

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        self.offset = self._offset()
        end = self.params.end_epoch
        if end and self.offset >= end:
            raise ValueError(f"eb_retrain: the schedule starts at epoch {self.offset}, at or after end_epoch {end}: "
                             f"nothing to train")
        if self.params.weights == "reinit":
            self._reinit(model)
        return super().prepare_model(model)

    def _offset(self) -> int:
        p = self.params
        if p.start_epoch != "eb":
            return int(p.start_epoch)
        name = self.stage.init_ref()[0]
        info = load_checkpoint(self.info.run_dir / name / "final.pt").get("method", {}).get("prune")
        if not info or int(info.get("ticket_epoch", -1)) < 0:
            raise ValueError(f"eb_retrain: start_epoch = \"eb\" needs init_from to name an eb_prune stage of an "
                             f"EB ticket; '{name}' has none")
        return int(info["ticket_epoch"])

    @torch.no_grad()
    def _reinit(self, model: torch.nn.Module) -> None:
        """Fresh weights for the pruned architecture (same cfg); the channel selections are architecture and stay."""
        seed = self.info.seeds.reinit
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            fresh = self._build(self.trainer.model_kwargs)
        state = fresh.state_dict()
        for k, v in model.state_dict().items():
            if k.endswith("select.indexes"):
                state[k] = v
        model.load_state_dict(state)
        self.log(f"{self.stage.name}: re-initialised the pruned network (seed {seed})")

    def stop_requested(self) -> bool:
        """True once the schedule reached the absolute `end_epoch` (main_c.py's --epochs); never when it is 0."""
        end = self.params.end_epoch
        return bool(end) and self.offset + self.trainer.epoch >= end

    def lr(self, epoch: int, frac: float) -> float:
        """The stage's schedule run from absolute epoch `offset` (main_c.py's --start-epoch)."""
        st = self.stage
        return lr_at(st.schedule, st.optimizer.lr, epoch, frac, st.epochs, start=self.offset)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "offset": self.offset}
