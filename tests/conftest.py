"""Fixtures the test files share (plain helpers that take arguments: helpers.py, digits_recipes.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """Tiny models on small inputs: one thread is faster and does not stall a busy 2-core machine. A module asks for
    it with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _bench_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """`repro bench` files its throughput for `repro plan` in $REPRO_CACHE: tests keep theirs out of ~/.cache."""
    monkeypatch.setenv("REPRO_CACHE", str(tmp_path_factory.getbasetemp() / "repro-cache"))
