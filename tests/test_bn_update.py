"""engine.bn.update_bn checked against each BN's input captured by forward pre-hooks on an independent copy."""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from engine.bn import batchnorms, update_bn
from engine.curves import update_bn as curve_update_bn

SIZES = (7, 5, 3)  # unequal batch sizes: the two weightings differ


def _net() -> nn.Module:
    """Conv-BN-ReLU twice, then Linear-BN1d (BN inputs depend on the BNs before them); stale statistics."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4, momentum=0.3), nn.ReLU(),
        nn.Conv2d(4, 6, 3, stride=2), nn.BatchNorm2d(6), nn.ReLU(),
        nn.Flatten(), nn.Linear(6 * 3 * 3, 5), nn.BatchNorm1d(5, momentum=None),
    )
    for m in batchnorms(net):  # what a reset must discard
        m.running_mean.uniform_(-1, 1)
        m.running_var.uniform_(2, 3)
        m.num_batches_tracked.fill_(9)
    return net


def _batches(sizes: tuple[int, ...] = SIZES) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Known batches with different means and scales per batch (so per-batch and pooled statistics differ)."""
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(b, 3, 8, 8, generator=g) * (1 + i) + i, torch.zeros(b, dtype=torch.long))
            for i, b in enumerate(sizes)]


def _captured_inputs(model: nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> list[list[torch.Tensor]]:
    """Per BN, the input of every batch, as [channels, values]: an untouched copy run in train mode with hooks."""
    ref = copy.deepcopy(model).train()
    seen: list[list[torch.Tensor]] = [[] for _ in batchnorms(ref)]
    for i, m in enumerate(batchnorms(ref)):
        m.register_forward_pre_hook(lambda mod, args, i=i: seen[i].append(args[0].detach().transpose(0, 1)
                                                                          .reshape(args[0].shape[1], -1).clone()))
    with torch.no_grad():
        for x, _ in batches:
            ref(x)
    return seen


def _momenta(model: nn.Module) -> list[float | None]:
    return [m.momentum for m in batchnorms(model)]


def _loader(kind: str, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> Iterable:
    """The same batches as a list, a torch DataLoader over CPU tensors (no Split), or a one-shot generator."""
    if kind == "dataloader":
        sizes = {len(x) for x, _ in batches[:-1]}
        assert len(sizes) == 1  # a DataLoader only cuts equal batches and a partial last one
        ds = TensorDataset(torch.cat([x for x, _ in batches]), torch.cat([y for _, y in batches]))
        return DataLoader(ds, batch_size=sizes.pop(), shuffle=False)
    if kind == "generator":
        return (b for b in batches)
    return batches


@pytest.mark.parametrize("kind", ["list", "dataloader", "generator"])
def test_samples_weighting_gives_the_pooled_mean_and_the_size_weighted_batch_variance(kind: str) -> None:
    model = _net().eval()
    batches = _batches((6, 6, 3) if kind == "dataloader" else SIZES)
    seen = _captured_inputs(model, batches)
    momenta = _momenta(model)
    update_bn(model, _loader(kind, batches), weighting="samples", device="cpu")
    w = torch.tensor([float(len(x)) for x, _ in batches])
    w /= w.sum()
    for bn, inputs in zip(batchnorms(model), seen):
        assert torch.allclose(bn.running_mean, torch.mean(torch.cat(inputs, 1), 1), atol=1e-5, rtol=1e-5)
        per_batch_var = torch.stack([torch.var(v, 1, unbiased=True) for v in inputs])
        assert torch.allclose(bn.running_var, (w[:, None] * per_batch_var).sum(0), atol=1e-5, rtol=1e-5)
        assert int(bn.num_batches_tracked) == len(batches)
    assert _momenta(model) == momenta and not model.training


def test_one_batch_gives_the_mean_and_unbiased_variance_of_the_whole_data() -> None:
    model = _net().train()
    batches = _batches((12,))
    seen = _captured_inputs(model, batches)
    for weighting in ("batches", "samples"):
        update_bn(model, batches, weighting=weighting)
        for bn, inputs in zip(batchnorms(model), seen):
            assert torch.allclose(bn.running_mean, torch.mean(inputs[0], 1), atol=1e-5, rtol=1e-5)
            assert torch.allclose(bn.running_var, torch.var(inputs[0], 1, unbiased=True), atol=1e-5, rtol=1e-5)
    assert model.training  # a model in train mode stays there


def test_batches_weighting_is_torch_swa_utils_update_bn() -> None:
    model = _net().eval()
    batches = _batches()
    seen = _captured_inputs(model, batches)
    reference = copy.deepcopy(model)
    update_bn(model, batches)  # default: every batch alike (momentum None), as Sup-tickets' --update_bn
    torch.optim.swa_utils.update_bn([x for x, _ in batches], reference)
    for bn, ref, inputs in zip(batchnorms(model), batchnorms(reference), seen):
        assert torch.allclose(bn.running_mean, torch.stack([v.mean(1) for v in inputs]).mean(0), atol=1e-5)
        assert torch.allclose(bn.running_var, torch.stack([v.var(1) for v in inputs]).mean(0), atol=1e-5)
        assert torch.allclose(bn.running_mean, ref.running_mean, atol=1e-6)
        assert torch.allclose(bn.running_var, ref.running_var, atol=1e-6)
    assert _momenta(model) == [0.3, 0.1, None]


def test_forward_callable_and_max_batches() -> None:
    """A forward other than the model (a curve at t) and an early stop use exactly the batches run."""
    model = _net().eval()
    batches = _batches()
    seen = _captured_inputs(model, batches[:2])
    calls: list[int] = []

    def fwd(x: torch.Tensor) -> torch.Tensor:
        calls.append(len(x))
        return model(x)

    curve_update_bn(model, batches, fwd, max_batches=2)  # the curves' spelling: samples weighting
    assert calls == list(SIZES[:2])
    w = torch.tensor(SIZES[:2], dtype=torch.float32) / sum(SIZES[:2])
    for bn, inputs in zip(batchnorms(model), seen):
        assert torch.allclose(bn.running_mean, torch.cat(inputs, 1).mean(1), atol=1e-5, rtol=1e-5)
        var = (w[:, None] * torch.stack([v.var(1) for v in inputs])).sum(0)
        assert torch.allclose(bn.running_var, var, atol=1e-5, rtol=1e-5)


def test_momenta_and_mode_restored_when_the_pass_raises() -> None:
    model = _net().eval()

    def broken() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        yield _batches()[0]
        raise RuntimeError("loader died")

    with pytest.raises(RuntimeError, match="loader died"):
        update_bn(model, broken(), weighting="samples")
    assert _momenta(model) == [0.3, 0.1, None] and not model.training


def test_no_batchnorm_and_bad_weighting() -> None:
    lin = nn.Linear(3, 2)
    update_bn(lin, [(torch.ones(2, 3), None)])  # nothing to do, nothing raised
    with pytest.raises(ValueError, match="weighting"):
        update_bn(_net(), [], weighting="mean")  # type: ignore[arg-type]
