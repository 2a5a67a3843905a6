"""Issue 19 on the CPU: a topology update reads (at most) one thing back from the device, the masked optimizer step
equals step-then-mask, and the batched top-k picks what a per-layer top-k picks."""

from __future__ import annotations

import contextlib
import math
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from helpers import digits_trainer, sparse_digits_recipe
from torch import nn

import engine.trainer as trainer_module
from engine.data import recipe_data
from engine.methods import METHODS
from engine.methods.sparse_base import _growth_seed
from engine.models import create_model
from engine.runinfo import RunInfo
from engine.runlog import RunLog
from engine.sparse.masks import Masking
from engine.sparse.topology import grow_many, prune_magnitude_many

# The tensor methods that copy a value to the host (on a GPU each waits for the device): the int()/float()/bool()
# conversions, item/tolist/numpy/cpu, and nonzero, whose output size the host must learn.
_SYNCING = ("item", "tolist", "numpy", "cpu", "nonzero", "__int__", "__float__", "__bool__", "__index__")


@contextlib.contextmanager
def host_syncs(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Record every call of a host-syncing tensor method inside the block (the name, in call order)."""
    calls: list[str] = []
    with monkeypatch.context() as m:
        for name in _SYNCING:
            original = getattr(torch.Tensor, name)

            def wrapper(self, *a, _name=name, _orig=original, **k):  # noqa: ANN001, ANN002, ANN003, ANN202
                calls.append(_name)
                return _orig(self, *a, **k)

            m.setattr(torch.Tensor, name, wrapper)
        m.setattr(torch, "nonzero", lambda *a, **k: (calls.append("torch.nonzero"), torch.Tensor.nonzero(*a, **k))[1])
        yield calls


def test_the_sync_counter_sees_what_it_must(monkeypatch: pytest.MonkeyPatch) -> None:
    t = torch.arange(4.0)
    with host_syncs(monkeypatch) as calls:
        int(t.sum()), float(t[0]), t.tolist(), t.max().item(), bool(t.any()), t.nonzero()
        _ = (t * 2 + 1).topk(2)  # device-side work: not counted
    assert calls == ["__int__", "__float__", "tolist", "item", "__bool__", "nonzero"]


def _dst(tmp_path: Path, **sparse: object):  # noqa: ANN202 - a Trainer whose DST method is set up, with gradients
    conf = {"density": 0.2, "init": "ERK", "update_frequency": 1000, "prune_rate": 0.3, **sparse}
    trainer = digits_trainer(tmp_path, "dst", conf, epochs=1, train_subset=64, test_subset=32)
    trainer.method.setup()
    x, y = next(iter(trainer.train_loader))
    nn.functional.cross_entropy(trainer.model(x), y).backward()
    return trainer


@pytest.mark.parametrize("sparse,expected", [
    ({}, 0),  # RigL, the recipes' rule: magnitude prune, gradient growth, no redistribution
    ({"growth": "random"}, 0),  # SET growth, drawn on the device
    ({"growth": "gradient", "redistribution": "nonzeros"}, 0),
    ({"prune": "set", "growth": "random"}, 1),  # the positive/negative counts of every layer
    ({"redistribution": "magnitude"}, 1),  # every layer's mean |w|
])
def test_a_topology_update_reads_back_at_most_once(sparse, expected, tmp_path, monkeypatch) -> None:  # noqa: ANN001
    trainer = _dst(tmp_path, **sparse)
    method = trainer.method
    method.masking.counts()  # the counts of the initial masks, read once per run
    before = [int(m.sum()) for m in method.masking.masks.values()]
    with host_syncs(monkeypatch) as calls:
        method.update_topology(0.3)
        method.update_topology(0.3)
    assert len(calls) == 2 * expected, calls
    after = [int(m.sum()) for m in method.masking.masks.values()]
    assert method.masking.counts()[0] == after  # the host's record is the masks' true count
    if sparse.get("redistribution") is None:
        assert after == before  # exact per layer
    assert sum(after) == sum(before)


def test_a_granet_update_reads_the_new_layer_counts_once(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    """GraNet's global prune moves counts between layers, so they are read back: once, for all layers, and the
    regrowth after it needs nothing more."""
    trainer = digits_trainer(tmp_path, "granet", {"density": 0.2, "init": "ERK", "update_frequency": 2,
                                                   "prune_rate": 0.3},
                             {"init_density": 0.5, "init_prune_epoch": 0, "final_prune_epoch": 2},
                             epochs=1, train_subset=64, test_subset=32)
    method = trainer.method
    method.setup()
    x, y = next(iter(trainer.train_loader))
    nn.functional.cross_entropy(trainer.model(x), y).backward()
    before, sizes = method.masking.counts()
    trainer.step = 2  # 2 steps an epoch, f = 2: i = 1 of i0 = 0, i1 = 2 -> 0.2 + 0.3 * 0.5 ** 3
    with host_syncs(monkeypatch) as calls:
        method.update_topology()
    assert calls == ["tolist"]
    after = [int(m.sum()) for m in method.masking.masks.values()]
    assert method.masking.counts()[0] == after
    assert sum(after) == int(sum(sizes) * (0.2 + 0.3 * 0.5 ** 3)) < sum(before)


def test_initial_counts_are_read_in_one_sync(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    trainer = _dst(tmp_path)
    with host_syncs(monkeypatch) as calls:
        trainer.method.update_topology(0.3)
    assert calls == ["tolist"]  # the initial masks' counts, all layers at once


@pytest.mark.parametrize("opt_name", ["sgd", "nesterov", "adam", "adamw"])
def test_masked_gradients_step_equals_step_then_mask(opt_name: str) -> None:
    """The fused step (grads *= masks, then the optimizer's own step) against step-then-mask, five steps with
    momentum and weight decay: the weights and buffers agree to 1e-6 (exactly, in fact)."""
    def build() -> tuple[nn.Module, torch.optim.Optimizer, Masking]:
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3))
        opt = {"sgd": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=5e-4),
               "nesterov": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=5e-4, nesterov=True,
                                                     dampening=0.0),
               "adam": lambda p: torch.optim.Adam(p, lr=0.01, weight_decay=1e-3),
               "adamw": lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=1e-2)}[opt_name](model.parameters())
        masking = Masking(model, ["0.weight", "2.weight"], opt)
        g = torch.Generator().manual_seed(3)
        masking.set_masks({n: torch.rand(p.shape, generator=g) < 0.4 for n, p in
                           zip(masking.names, masking.params)})
        return model, opt, masking

    x, y = torch.randn(8, 6, generator=torch.Generator().manual_seed(1)), torch.tensor([0, 1, 2] * 2 + [0, 1])
    runs = []
    for fused in (False, True):
        model, opt, masking = build()
        for _ in range(5):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            if fused:
                assert masking.mask_grads()
            opt.step()
            if not fused:
                masking.apply()
        runs.append((model, opt, masking))
    (m0, o0, k0), (m1, o1, k1) = runs
    for (n, a), b in zip(m0.named_parameters(), m1.parameters()):
        torch.testing.assert_close(b, a, atol=1e-6, rtol=0, msg=n)
        for key, buf in o0.state[a].items():
            torch.testing.assert_close(o1.state[b][key], buf, atol=1e-6, rtol=0)
    for n, p in zip(k1.names, k1.params):
        assert (p[~k1.masks[n]] == 0).all()  # still exactly zero where pruned
        assert (p[k1.masks[n]] != 0).any()


def test_training_with_the_fused_step_equals_the_unfused_one(tmp_path: Path) -> None:
    """A RigL epoch on digits (an update every 3 steps) with the fused masked step and with step-then-mask: same
    masks, weights within 1e-6; and the fused run masked the gradients on every step that no update followed."""
    sparse = {"density": 0.2, "init": "ERK", "update_frequency": 3, "prune_rate": 0.3}
    out = []
    for fuse in (True, False):
        trainer = digits_trainer(tmp_path / str(fuse), "dst", sparse, epochs=1, train_subset=256, test_subset=32)
        trainer.method.fuse_mask_step = fuse
        trainer.method.setup()
        fused_steps = []
        mask_grads = trainer.method.masking.mask_grads

        def counting(_m=mask_grads, _log=fused_steps, _t=trainer) -> bool:  # noqa: ANN001
            _log.append(_t.step + 1)
            return _m()

        trainer.method.masking.mask_grads = counting
        trainer.train_epoch(0)
        out.append((trainer, fused_steps))
    (fused, steps), (plain, none) = out
    nb = len(fused.train_loader)
    assert none == [] and steps == [s for s in range(1, nb + 1) if s % 3 and s != nb]
    assert fused.method.updates == plain.method.updates == nb // 3
    for n in fused.method.masking.names:
        assert torch.equal(fused.method.masking.masks[n], plain.method.masking.masks[n])
    for (n, a), b in zip(plain.model.named_parameters(), fused.model.parameters()):
        torch.testing.assert_close(b, a, atol=1e-6, rtol=0, msg=n)


def test_batched_topk_picks_what_one_layer_at_a_time_picks() -> None:
    """Three same-shaped layers and one other, pruned and grown together and one at a time (distinct scores, so
    the top-k is unique): identical masks, exact counts, and the picks a sort by hand makes."""
    g = torch.Generator().manual_seed(0)
    shapes = [(4, 6), (4, 6), (4, 6), (10,)]
    ws = [torch.randn(s, generator=g) for s in shapes]
    ms = [torch.rand(s, generator=g) < 0.5 for s in shapes]
    grads = [torch.randn(s, generator=g) for s in shapes]
    actives = [int(m.sum()) for m in ms]
    ks = [math.ceil(0.3 * a) for a in actives]
    pruned = prune_magnitude_many(ws, ms, ks, actives)
    grown = grow_many(pruned, ks, "gradient", grads=grads)
    for w, m, gr, k, n, p, new in zip(ws, ms, grads, ks, actives, pruned, grown):
        assert torch.equal(p, prune_magnitude_many([w], [m], [k], [n])[0])
        assert torch.equal(new, grow_many([p], [k], "gradient", grads=[gr])[0])
        by_size = sorted(range(w.numel()), key=lambda i: -abs(float(w.flatten()[i])))
        keep = [i for i in by_size if bool(m.flatten()[i])][:n - k]  # the n - k largest active |w|
        assert sorted(p.flatten().nonzero().flatten().tolist()) == sorted(keep)
        by_grad = sorted(range(w.numel()), key=lambda i: -abs(float(gr.flatten()[i])))
        chosen = [i for i in by_grad if not bool(p.flatten()[i])][:k]  # the k largest |grad| among the free
        assert sorted((new & ~p).flatten().nonzero().flatten().tolist()) == sorted(chosen)
        assert int(new.sum()) == n


def test_random_growth_is_drawn_from_the_update_seed(tmp_path: Path) -> None:
    """Random growth needs no generator state: the same update of the same run regrows the same positions, and
    the next update draws other ones."""
    picks = []
    for _ in range(2):
        method = _dst(tmp_path, growth="random").method
        before = {n: m.clone() for n, m in method.masking.masks.items()}
        method.update_topology(0.3)
        picks.append({n: m & ~before[n] for n, m in method.masking.masks.items()})
    assert all(torch.equal(picks[0][n], picks[1][n]) for n in picks[0])
    seed = method.info.seeds.masks
    assert method.updates == 1 and method.growth_generator().initial_seed() == _growth_seed(seed, 1)
    assert len({_growth_seed(seed, u) for u in range(100)}) == 100  # every update its own stream


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None,
                    reason="torch.compile's CPU backend needs a C compiler")
def test_a_compiled_step_equals_the_eager_step(tmp_path: Path) -> None:
    """`[run] compile = true` changes the numerics only by rounding: one fp32 training step of a sparse run, compiled
    (inductor) and eager, from the same weights and batch, agrees to 1e-5 in every weight."""
    sparse = {"density": 0.3, "init": "ERK", "update_frequency": 1000}
    out = []
    for compiled in (False, True):
        trainer = digits_trainer(tmp_path / str(compiled), "dst", sparse, epochs=1, train_subset=32, test_subset=32)
        if compiled:
            trainer.forward_model = torch.compile(trainer.model)  # what Trainer does when [run] compile is set
        trainer.method.setup()
        trainer.train_epoch(0)  # one batch of 32: one step
        assert trainer.step == 1
        out.append(trainer.model)
    eager, compiled_model = out
    for (n, a), b in zip(eager.named_parameters(), compiled_model.parameters()):
        torch.testing.assert_close(b, a, atol=1e-5, rtol=0, msg=n)


@pytest.mark.parametrize("mode,expected", [("default", None), ("reduce-overhead", "reduce-overhead")])
def test_compile_mode_reaches_torch_compile(mode: str, expected: str | None, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """`[run] compile_mode = "reduce-overhead"` (CUDA graphs for launch-bound nets) is the mode torch.compile gets."""
    seen: list[dict] = []
    monkeypatch.setattr(trainer_module.torch, "compile", lambda model, **kw: (seen.append(kw), model)[1])
    recipe = sparse_digits_recipe("dst", {"density": 0.3}, None, 1, train_subset=32, test_subset=32)
    recipe.run.compile, recipe.run.compile_mode = True, mode
    ctx = trainer_module.StageContext(stage=recipe.stage[0], info=RunInfo.of(recipe, 0, tmp_path),
                                      device=torch.device("cpu"), data=recipe_data(recipe),
                                      log=RunLog(tmp_path, enabled=False))
    trainer_module.Trainer(ctx, create_model("cifar_resnet_8", 10, 0.5), METHODS["dst"])
    assert seen == [{"mode": expected}]
