"""Fixtures the test files share (plain helpers that take arguments: helpers.py, digits_recipes.py), and what
`make test` needs to run the suite on two xdist workers: one thread each, the longest tests handed out first."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import torch

# Under pytest-xdist (`make test` runs `pytest -n 2`) each worker is one of the CI's two cores: torch in the worker
# and every CLI subprocess it starts (they inherit the environment) use one thread, so two workers do not fight.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"
    torch.set_num_threads(1)

# The tests that take longest (seconds on the 2-core CI, serially; `--durations`), longest first. xdist hands tests
# out in collection order, so these go to the front: a long test started last would leave one worker idle at the end.
LONGEST = (
    "tests/test_sparse_methods.py::test_erk_beats_uniform_on_digits_at_density_005",  # 86 s
    "tests/test_freetickets.py::test_demo_is_a_freetickets_ensemble_with_every_analysis",  # 74
    "tests/test_smoke.py::test_recipe_smoke[freetickets_pf_wrn28x10_cifar100]",  # 48
    "tests/test_smoke.py::test_recipe_smoke[freetickets_pf_wrn28x10_cifar10]",  # 47
    "tests/test_farm.py::test_launcher_local_requeues_a_preempted_run_and_ends_as_an_uninterrupted_one",  # 39
    "tests/test_smoke.py::test_recipe_smoke[suptickets_table2_resnet50]",  # 38
    "tests/test_run.py::test_sigkill_at_any_point_resumes_to_the_same_numbers",  # 37
    "tests/test_smoke.py::test_recipe_smoke[suptickets_table9_wrn28x10]",  # 32
    "tests/test_smoke.py::test_recipe_smoke[freetickets_dst_wrn28x10_cifar10]",  # 30
    "tests/test_smoke.py::test_recipe_smoke[freetickets_dst_wrn28x10_cifar100]",  # 29
    "tests/test_farm.py::test_jobs_2_runs_two_at_a_time_and_reports_all",  # 28
    "tests/test_smoke.py::test_recipe_smoke[freetickets_edst_wrn28x10_cifar10]",  # 28
    "tests/test_curves.py::test_trained_curve_beats_the_straight_line_on_digits",  # 27
    "tests/test_smoke.py::test_recipe_smoke[freetickets_edst_wrn28x10_cifar100]",  # 27
    "tests/test_smoke.py::test_recipe_smoke[curve_bezier_preresnet164_cifar100]",  # 26
    # unit tests that took 20-47 s in a `-n 2` run on a busy machine (their serial times were under 26 s)
    "tests/test_fge.py::test_fge_collects_members_and_the_ensemble_beats_its_first_member",
    "tests/test_suptickets.py::test_superposed_network_is_the_pruned_running_average_at_exact_density",
    "tests/test_sparse_methods.py::test_repro_sparsity_of_a_recipe_shows_the_masks_its_training_starts_from[grasp]",
    "tests/test_run.py::test_cli_run_report_plot_runs",
    "tests/test_loggers.py::test_logger_none_writes_no_tensorboard_files",
    "tests/test_run.py::test_reproduce_skips_finished_runs_and_resumes_unfinished_ones",
    "tests/test_sparse_methods.py::test_repro_sparsity_of_a_recipe_shows_the_masks_its_training_starts_from[snip]",
    "tests/test_damaged.py::test_cli_report_shows_good_and_damaged_runs",
)


# Module-scoped fixtures that train or write a run once for their module's tests (file, fixture). xdist hands tests
# out one at a time, so without a group each worker would make its own copy; the tests that use one such fixture
# form an xdist_group and run on one worker, the fixture made once.
SHARED_RUNS = (
    ("test_analyses.py", "fake_run"),
    ("test_bundle.py", "run"),
    ("test_hardening.py", "finished"),
    ("test_imagefolder.py", "folders"),
    ("test_provenance.py", "two_stage_run"),
    ("test_verify.py", "smoke_run"),
)


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook, which reads the xdist_group marks into the node ids
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Longest first: the LONGEST tests in their order, then the other `slow` ones (end-to-end runs of seconds to a
    minute), then the unit tests, which fill the end evenly; and the xdist_group of each SHARED_RUNS fixture. Serial
    runs get the same order (no test depends on the order)."""
    rank = {nodeid: i for i, nodeid in enumerate(LONGEST)}
    for item in items:
        for module, fixture in SHARED_RUNS:
            if item.path.name == module and fixture in getattr(item, "fixturenames", ()):
                item.add_marker(pytest.mark.xdist_group(f"{module}::{fixture}"))

    def key(item: pytest.Item) -> tuple[int, int]:
        if item.nodeid in rank:
            return 0, rank[item.nodeid]
        return (1 if item.get_closest_marker("slow") else 2), 0

    items.sort(key=key)  # stable: collection order within each class


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
