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
