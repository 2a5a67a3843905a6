"""Data-parallel plumbing in a few functions (nanoGPT-style): who am I, wait for the others, agree on tensors.

Everything here is a no-op in a single process, so the rest of the engine calls it unconditionally.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def active() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if active() else 0


def world() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """Rank 0 (or the only process): the one that writes the run directory."""
    return rank() == 0


def init_from_env(device: str = "auto") -> torch.device:
    """Join the process group torchrun describes (RANK, WORLD_SIZE, LOCAL_RANK); NCCL on CUDA, gloo on the CPU."""
    local = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device != "cpu" and torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(local)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not active():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return torch.device("cuda", local) if use_cuda else torch.device("cpu")


def barrier() -> None:
    if active():
        dist.barrier()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum over ranks, in place (gloo needs CPU tensors for some dtypes; floats are fine on both)."""
    if active():
        dist.all_reduce(t)
    return t


def broadcast_(t: torch.Tensor, src: int = 0) -> torch.Tensor:
    """Overwrite `t` on every rank with rank `src`'s value (bool tensors travel as uint8)."""
    if not active():
        return t
    if t.dtype == torch.bool:
        u = t.to(torch.uint8)
        dist.broadcast(u, src)
        t.copy_(u.bool())
    else:
        dist.broadcast(t, src)
    return t


def broadcast_many_(tensors: list[torch.Tensor], src: int = 0) -> list[torch.Tensor]:
    """`broadcast_` for a list in one collective: flattened into one buffer per dtype, sent once, copied back."""
    if not active() or not tensors:
        return tensors
    by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
    for t in tensors:
        by_dtype.setdefault(t.dtype, []).append(t)
    for dtype, group in by_dtype.items():
        wire = torch.uint8 if dtype == torch.bool else dtype
        flat = torch.cat([t.reshape(-1).to(wire) for t in group])
        dist.broadcast(flat, src)
        for t, part in zip(group, flat.split([t.numel() for t in group])):
            t.copy_(part.view(t.shape).to(dtype))
    return tensors


@torch.no_grad()
def check_identical(module: torch.nn.Module, what: str) -> None:
    """Raise if the ranks' copies of `module` differ (one checksum per rank, compared on every rank)."""
    if not active():
        return
    gen = torch.Generator().manual_seed(0)
    total = torch.zeros((), dtype=torch.float64)
    for p in module.state_dict().values():
        if p.is_floating_point():
            w = torch.rand(p.numel(), generator=gen, dtype=torch.float64)
            total += (p.detach().double().cpu().flatten() * w).sum()
    dev = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    total = total.to(dev)
    sums = [torch.zeros((), dtype=torch.float64, device=dev) for _ in range(world())]
    dist.all_gather(sums, total)
    if any(not torch.equal(s, sums[0]) for s in sums):
        raise RuntimeError(f"{what}: the ranks' replicas differ ({[float(s) for s in sums]})")
