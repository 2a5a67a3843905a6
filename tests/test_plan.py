"""`repro plan`: images and training FLOPs checked by hand, by an independent FLOP counter and against what the
trainer records; the bench cache round trip; the published fallback and its label; every recipe planned; --jobs."""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from digits_recipes import digits_recipe, write_recipe
from fixtures_tui import write_recipes
from helpers import run_recipe
from torch.utils.flop_counter import FlopCounterMode

from engine.data.folders import make_synthetic_folders
from engine.data.memory import _load_digits, make_synthetic
from engine.methods import METHODS
from engine.models import create_model
from engine.plan import TRAIN_IMAGES, dataset_facts, run_cost
from engine.plan import _gradual_factors as gradual_factors
from engine.throughput import BenchEntry, read_entries, record
from repro.cli import cli
from repro.plan import makespan, plan
from repro.recipe import load, recipe_names

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty bench cache of this test's own."""
    monkeypatch.setenv("REPRO_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "bench.json"


def test_fge_vgg16_images_and_flops_by_hand() -> None:
    """train.py 200 epochs + fge.py 40 epochs on CIFAR-100's 50,000 training images; each image costs 3 forward
    passes of VGG16, counted here by torch's own FLOP counter on a real (CPU) model."""
    cost = run_cost(load("fge_vgg16")[0].recipe)
    assert [(s.name, s.epochs, s.images) for s in cost.stages] == [("train", 200, 10_000_000), ("fge", 40, 2_000_000)]
    assert cost.images == 240 * 50_000
    model = create_model("vgg16", 100).eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, 3, 32, 32))
    forward = counter.get_total_flops()  # convolutions and matmuls only, a multiply-add as 2: the runs' convention
    assert forward == pytest.approx(0.6276e9, rel=1e-3)
    assert cost.train_flops == pytest.approx(3 * forward * 12_000_000, rel=1e-12)


def test_plan_matches_what_the_trainer_records(tmp_path: Path) -> None:
    """A dense, a RigL (gradient growth), a GraNet and a GMP stage trained for real on digits: the plan's images equal
    the run's, the dense stage's FLOPs exactly, RigL's to the mask rounding (expected vs drawn ERK densities), and
    the gradual schedule's overall density epoch by epoch is the one the run logs. GraNet/GMP's FLOPs assume the
    layers keep their shares while global magnitude pruning shifts them (so here they come out 10-30% low)."""
    raw = digits_recipe(train={"epochs": 2, "optimizer": {"lr": 0.05}, "schedule": {"name": "cosine"}}, stage=[
        {"name": "dense", "method": "train"},
        {"name": "rigl", "method": "dst", "sparse": {"density": 0.2, "init": "ERK", "growth": "gradient",
                                                     "update_frequency": 3}},
        {"name": "granet", "method": "granet", "epochs": 3, "params": {"init_density": 0.5, "final_prune_epoch": 2},
         "sparse": {"density": 0.1, "init": "ERK", "update_frequency": 2}},
        {"name": "gmp", "method": "gmp", "epochs": 3, "params": {"final_prune_epoch": 2},
         "sparse": {"density": 0.1, "update_frequency": 2}}])
    out = run_recipe(raw, tmp_path, tmp_path / "run", root=tmp_path / "root")
    assert out.state == "done", out.error
    recipe = load(str(tmp_path / "r.toml"))[0].recipe
    cost = run_cost(recipe)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    flops = {r["stage"]: r["train_flops"] for r in records if "train_flops" in r}  # the last epoch's running total
    assert [s.images for s in cost.stages] == [2 * 384, 2 * 384, 3 * 384, 3 * 384]
    by = {s.name: s.flops for s in cost.stages}
    assert by["dense"] == flops["dense"]
    assert by["rigl"] == pytest.approx(flops["rigl"], rel=2e-3)
    for name in ("granet", "gmp"):
        assert 0.7 < by[name] / flops[name] < 1.0
        st = next(s for s in recipe.stage if s.name == name)
        start = 1.0 if name == "gmp" else 0.5
        logged = [r["density"] for r in records if r.get("stage") == name and "density" in r]
        planned = [start * f for f in gradual_factors(st, METHODS[st.method], st.epochs, math.ceil(384 / 64))]
        assert planned == pytest.approx(logged, abs=1e-3)
    assert cost.train_flops == pytest.approx(out.summary["train_flops"], rel=0.1)


def test_training_set_sizes_are_the_loaders() -> None:
    """The sizes the plan uses without loading anything are what the loaders give."""
    assert TRAIN_IMAGES["digits"] == len(_load_digits()[0])
    assert TRAIN_IMAGES["synthetic"] == len(make_synthetic().train)
    assert TRAIN_IMAGES["cifar10"] == TRAIN_IMAGES["cifar100"] == 50_000
    assert TRAIN_IMAGES["imagenet"] == 1_281_167
    r = load("demo_digits")[0].recipe
    assert dataset_facts(r) == (1437 - r.data.val_split, 10, (3, 32, 32))
    imagenet = load("freetickets_dst_resnet50_imagenet")[0].recipe
    assert dataset_facts(imagenet) == (1_281_167, 1000, (3, 224, 224))


def test_synthetic_imagenet_size(tmp_path: Path) -> None:
    from engine.data.folders import load_folder_dataset

    make_synthetic_folders(tmp_path / "synthetic-imagenet")
    train, _, classes = load_folder_dataset("synthetic-imagenet", tmp_path)
    assert (len(train), classes) == (TRAIN_IMAGES["synthetic-imagenet"], 10)


def test_bench_writes_the_cache_and_plan_reads_it_as_measured(cache: Path) -> None:
    res = CliRunner().invoke(cli, ["bench", "--arch", "cifar_resnet_20_8", "--device", "cpu", "--batch-size", "16",
                                   "--steps", "1", "--warmup", "0", "--repeats", "1", "--json"])
    assert res.exit_code == 0, res.output
    img_s = json.loads(res.output)["dense_img_s"]
    [entry] = read_entries(cache)
    assert (entry.device, entry.arch, entry.batch_size, entry.precision, entry.image_shape, entry.dense_img_s) == \
        ("cpu", "cifar_resnet_20_8", 16, "fp32", (3, 32, 32), img_s)
    runs = load("demo_sparse_digits")  # cifar_resnet_20_8 on 32x32 digits
    result = plan(runs, device="cpu")
    for run in result["runs"]:
        assert run["throughput_source"] == "measured" and run["img_s"] == pytest.approx(img_s, abs=0.05)
        assert run["gpu_hours"] == pytest.approx(run["images"] / img_s / 3600, rel=1e-3)
    assert result["device"].startswith("cpu (repro bench measurements here")
    # a second measurement of the same key replaces the first; another batch size is kept beside it
    record(BenchEntry("cpu", "cifar_resnet_20_8", "fp32", 16, 1.0, False, (3, 32, 32), 123.0))
    record(BenchEntry("cpu", "cifar_resnet_20_8", "fp32", 64, 1.0, False, (3, 32, 32), 456.0))
    assert sorted(e.dense_img_s for e in read_entries(cache)) == [123.0, 456.0]
    assert plan(runs[:1], device="cpu")["runs"][0]["img_s"] == 456.0  # the recipe's own batch size (64) first


def test_fallback_is_the_published_h100_figures_labelled() -> None:
    runs = load("freetickets_individual_wrn28x10_cifar10") + load("curve_endpoint_preresnet110_cifar10")
    result = plan(runs, device="NVIDIA Test GPU")  # nothing measured on this device
    assert result["device"] == "H100 (published figures; run `repro bench --arch A` here to measure)"
    wrn, pre110 = result["runs"][0], result["runs"][-1]
    assert (wrn["img_s"], wrn["throughput_source"]) == (8470.0, "published")
    assert wrn["gpu_hours"] == pytest.approx(wrn["images"] / 8470 / 3600)
    # PreResNet-110 is nearest in FLOPs to PreResNet-164 (2,392 img/s): scaled by their FLOPs ratio
    f110, f164 = (run_cost(load(n)[0].recipe).dense_step_flops for n in ("curve_endpoint_preresnet110_cifar10",
                                                                           "curve_endpoint_preresnet164_cifar10"))
    assert pre110["throughput_source"] == "scaled" and "preresnet164" in pre110["throughput_basis"]
    assert pre110["img_s"] == pytest.approx(2392 * f164 / f110, abs=0.05)
    # one arch measured here: the others scale from it, on this device
    record(BenchEntry("NVIDIA Test GPU", "wrn-28-10", "bf16", 128, 1.0, False, (3, 32, 32), 10_000.0))
    again = plan(runs, device="NVIDIA Test GPU")
    assert again["runs"][0]["throughput_source"] == "measured" and again["runs"][0]["img_s"] == 10_000.0
    assert again["runs"][-1]["throughput_source"] == "scaled"
    assert again["device"] == "NVIDIA Test GPU (repro bench measurements here, some scaled by FLOPs)"


def test_plan_json_covers_every_recipe() -> None:
    res = CliRunner().invoke(cli, ["plan", "--json", "--jobs", "4"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert {r["recipe"] for r in out["runs"]} == set(recipe_names())
    assert all(r["gpu_hours"] > 0 and r["images"] > 0 and r["train_pflops"] > 0 for r in out["runs"])
    assert out["total_gpu_hours"] == pytest.approx(sum(r["gpu_hours"] for r in out["runs"]), rel=1e-12)
    assert out["device"].startswith("H100 (published figures")
    assert out["wall_hours"] == makespan([r["gpu_hours"] for r in out["runs"]], 4)
    assert out["total_gpu_hours"] / 4 <= out["wall_hours"] < out["total_gpu_hours"]
    keys = {"recipe", "tag", "gpu_hours", "train_pflops", "images"}
    assert all(keys <= set(r) for r in out["runs"]) and {"runs", "total_gpu_hours", "device"} <= set(out)
    # the CLI's sweep expansion: one row a run
    assert len(out["runs"]) == sum(len(load(n)) for n in recipe_names())


def test_makespan_longest_first() -> None:
    hours = [3, 5, 3, 4, 3]
    # 5 -> A, 4 -> B, 3 -> B (7), 3 -> A (8), 3 -> B (10): greedy gives 10 (the best split, 5+4 | 3+3+3, is 9)
    assert makespan(hours, 2) == 10
    assert makespan(hours, 1) == 18
    assert makespan(hours, 8) == 5
    with pytest.raises(ValueError, match="jobs must be >= 1"):
        makespan(hours, 0)


def test_plan_text_and_root(tmp_path: Path) -> None:
    """The table's rows and total line; with --root a finished run is marked and the rest totalled."""
    res = CliRunner().invoke(cli, ["plan", "demo_sparse_digits", "--jobs", "2"])
    assert res.exit_code == 0, res.output
    assert res.output.count("demo_sparse_digits") == 4 and "total: 4 runs" in res.output
    assert "wall time with --jobs 2" in res.output and "analyses are not counted" in res.output
    run = tmp_path / "root" / "demo_sparse_digits" / "20260101-000000-initERK"
    run.mkdir(parents=True)
    (run / "status.json").write_text(json.dumps({"state": "done", "tag": "initERK"}))
    write_recipe(run, digits_recipe(name="demo_sparse_digits"), "recipe.toml")
    res = CliRunner().invoke(cli, ["plan", "demo_sparse_digits", "--root", str(tmp_path / "root"), "--json"])
    out = json.loads(res.output)
    assert [r["done"] for r in out["runs"]] == [True, False, False, False]
    assert out["remaining_runs"] == 3
    assert out["remaining_gpu_hours"] == pytest.approx(sum(r["gpu_hours"] for r in out["runs"][1:]))


def test_launch_dialog_shows_the_estimate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from textual.widgets import Static

    from repro.tui import procs
    from repro.tui.app import ReproApp
    from repro.tui.dialogs import ConfirmDialog

    monkeypatch.chdir(tmp_path)
    write_recipes(tmp_path / "recipes")
    monkeypatch.setenv("REPRO_RECIPES", "recipes")
    monkeypatch.setattr(procs, "spawn", lambda *a: pytest.fail("nothing is launched"))
    expected = plan(load("tiny"))["total_gpu_hours"]

    async def go() -> tuple[str, str]:
        app = ReproApp(Path("root"), refresh_interval=None)
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.pause()
            while app.screen.current != "tiny":
                await pilot.press("down")
            await pilot.press("s")  # a smoke launch: no estimate line
            smoke = app.screen
            assert isinstance(smoke, ConfirmDialog) and not smoke.query("#dialog-note")
            await pilot.press("n", "f")
            dialog = app.screen
            assert isinstance(dialog, ConfirmDialog)
            for _ in range(200):
                await pilot.pause(0.05)
                if "computing" not in str(dialog.query_one("#dialog-note", Static).render()):
                    break
            note = str(dialog.query_one("#dialog-note", Static).render())
            await pilot.press("n")
            return note, app.screen.__class__.__name__

    note, back = asyncio.run(go())
    assert back == "RecipesScreen"
    assert note.startswith(f"estimate: {expected:,.2f} GPU-hours for 1 run, ")
    assert "H100 (published figures" in note
