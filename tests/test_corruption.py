"""The `corruption` analysis (FreeTickets' cAcc / cNLL / cECE): the generated corruptions on hand-made images, the
scores on hand-computed probabilities, the pooled ECE, the whole analysis over a fake run (generated sets and a
fake release) against a recomputation straight from the models, the missing-release error, the report metrics."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from digits_recipes import digits_recipe, write_recipe

from engine.analyses import corruption
from engine.analyses.context import AnalysisContext
from engine.analyses.corruption import (
    GENERATED,
    brightness,
    contrast,
    gaussian_noise,
    pooled_ece,
    score_set,
)
from engine.config import Recipe
from engine.data import NORMALIZE, DataError, Dataset, Split, load_dataset
from engine.io import save_checkpoint
from engine.models import create_model
from engine.store import read_group
from repro.launch import execute
from repro.plots import plot
from repro.recipe import load
from repro.report import run_metrics

# ---- the generated corruptions, by hand --------------------------------------------------------------------


def _img(values: list[list[list[int]]]) -> torch.Tensor:
    """One uint8 image [1, C, H, W] from nested lists [C][H][W]."""
    return torch.tensor([values], dtype=torch.uint8)


def test_contrast_pulls_each_channel_to_its_own_mean() -> None:
    x = _img([[[0, 100], [200, 100]], [[10, 10], [30, 30]]])  # channel means 100 and 20
    out = contrast(x, 0.5)
    assert out.dtype == torch.uint8
    assert out.tolist() == [[[[50, 100], [150, 100]], [[15, 15], [25, 25]]]]
    assert contrast(x, 1.0).tolist() == x.tolist()


def test_brightness_adds_and_clips() -> None:
    x = _img([[[0, 100], [250, 204]]])
    assert brightness(x, 0.2).tolist() == [[[[51, 151], [255, 255]]]]  # + 51, clipped at 255


def test_gaussian_noise_is_seeded_noise_of_the_asked_scale() -> None:
    x = torch.full((2, 3, 32, 32), 128, dtype=torch.uint8)
    a, b = gaussian_noise(x, 0.04, seed=5), gaussian_noise(x, 0.04, seed=5)
    assert torch.equal(a, b) and not torch.equal(a, gaussian_noise(x, 0.04, seed=6))
    g = torch.Generator().manual_seed(5)
    expected = (128 + torch.randn(x.shape, generator=g) * 10.2).round().clamp(0, 255).to(torch.uint8)
    assert torch.equal(a, expected)
    d = a.float() - 128
    assert abs(float(d.mean())) < 0.3 and float(d.std()) == pytest.approx(10.2, rel=0.05)
    assert torch.equal(gaussian_noise(x, 0.0, seed=1), x)
    assert gaussian_noise(torch.full((1, 1, 8, 8), 255, dtype=torch.uint8), 0.5, seed=0).max() == 255  # clipped


def test_generated_severities_grow() -> None:
    assert set(GENERATED) == {"gaussian_noise", "contrast", "brightness"}
    x = load_dataset("digits").test.x[:20]
    for name, (fn, levels) in GENERATED.items():
        assert len(levels) == 3
        moved = [float((fn(x, v, 0).float() - x.float()).abs().mean()) for v in levels]
        assert 0 < moved[0] < moved[1] < moved[2], name


def test_generated_sets_cut_the_test_split_and_keep_its_labels() -> None:
    test = load_dataset("digits").test.subset(100)
    names, severities, _, sets = corruption.generated_sets(test, seed=3)
    got = list(sets())
    assert names == list(GENERATED) and severities == [1, 2, 3] and len(got) == 9
    assert all(len(s) == 64 and torch.equal(s.y, test.y[:64]) for s in got)
    assert torch.equal(got[5].x, contrast(test.x[:64], GENERATED["contrast"][1][2]))  # corruption 1, severity 3


# ---- scores on hand-computed probabilities -----------------------------------------------------------------

P0 = [[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]]
P1 = [[0.7, 0.3], [0.4, 0.6], [0.1, 0.9], [0.25, 0.75]]
LABELS = torch.tensor([0, 0, 1, 1])


def test_score_set_by_hand() -> None:
    probs = torch.tensor([P0, P1], dtype=torch.float64)
    r = score_set(probs, LABELS, 10, "equal")
    # member 0 predicts 0, 0, 1, 0 (3 right); member 1: 0, 1, 1, 1 (3 right); the mean
    # [.8 .2] [.6 .4] [.2 .8] [.425 .575] gets all 4
    np.testing.assert_allclose(r["acc"], [75.0, 75.0, 100.0], atol=1e-12)
    nll0 = -(math.log(0.9) + math.log(0.8) + math.log(0.7) + math.log(0.4)) / 4
    nll1 = -(math.log(0.7) + math.log(0.4) + math.log(0.9) + math.log(0.75)) / 4
    nll_e = -(math.log(0.8) + math.log(0.6) + math.log(0.8) + math.log(0.575)) / 4
    np.testing.assert_allclose(r["nll"], [nll0, nll1, nll_e], atol=1e-12)
    # every point alone in its bin but the ensemble's 0.6 and 0.575 (both in (0.5, 0.6], both right)
    ece0 = (0.1 + 0.2 + 0.3 + 0.6) / 4
    ece1 = (0.3 + 0.6 + 0.1 + 0.25) / 4
    ece_e = (0.2 + 0.4 + 0.2 + 0.425) / 4
    np.testing.assert_allclose(r["ece"], [ece0, ece1, ece_e], atol=1e-12)
    assert int(r["n"]) == 4
    np.testing.assert_allclose(pooled_ece(r["bin_sums"], 4), r["ece"], atol=1e-12)  # one set: pooled = its own


def test_pooled_ece_differs_from_the_mean_as_the_original_computes_it() -> None:
    """One point at 0.9 right (ECE 0.1), one at 0.9 wrong (ECE 0.9): mean 0.5, pooled |0.1 - 0.9| / 2 = 0.4."""
    right = score_set(torch.tensor([[[0.9, 0.1]]], dtype=torch.float64), torch.tensor([0]), 15, "original")
    wrong = score_set(torch.tensor([[[0.9, 0.1]]], dtype=torch.float64), torch.tensor([1]), 15, "original")
    assert right["ece"][-1] == pytest.approx(0.1) and wrong["ece"][-1] == pytest.approx(0.9)
    assert pooled_ece(right["bin_sums"] + wrong["bin_sums"], 2)[-1] == pytest.approx(0.4, abs=1e-12)


def test_pooled_ece_is_the_ece_of_the_concatenation() -> None:
    g = torch.Generator().manual_seed(0)
    a, b = (torch.softmax(3 * torch.randn(2, 50, 10, generator=g, dtype=torch.float64), -1) for _ in range(2))
    ya, yb = (torch.randint(0, 10, (50,), generator=g) for _ in range(2))
    for binning in ("equal", "original"):
        sa, sb = score_set(a, ya, 15, binning), score_set(b, yb, 15, binning)
        both = score_set(torch.cat([a, b], 1), torch.cat([ya, yb]), 15, binning)
        np.testing.assert_allclose(pooled_ece(sa["bin_sums"] + sb["bin_sums"], 100), both["ece"], atol=1e-12)


# ---- the analysis over a fake run --------------------------------------------------------------------------

N_TEST = 40  # under GENERATED_IMAGES: every test image is corrupted


def _fake_run(run_dir: Path) -> list[torch.nn.Module]:
    """Two random tiny ResNets saved as the members of stage s (no training)."""
    (run_dir / "s").mkdir(parents=True)
    members, models = [], []
    for i in range(2):
        torch.manual_seed(40 + i)
        model = create_model("cifar_resnet_8", 10, 0.25).eval()
        save_checkpoint(run_dir / "s" / f"m{i}.pt", {"model": model.state_dict(), "method": {}})
        members.append({"name": f"m{i}", "path": f"s/m{i}.pt"})
        models.append(model)
    (run_dir / "s" / "tickets.json").write_text(json.dumps({"members": members}))
    return models


def _recipe(dataset: str, normalize: str, root: str = "", test_subset: int = N_TEST) -> Recipe:
    return Recipe.model_validate({
        "name": "fake", "paper": "freetickets", "model": {"arch": "cifar_resnet_8", "width": 0.25},
        "data": {"dataset": dataset, "normalize": normalize, "test_subset": test_subset, "root": root,
                 "eval_batch_size": 16},
        "stage": [{"name": "s", "method": "train", "epochs": 1}], "analysis": {"bins": 10},
        "analyses": ["corruption"]})


def _expected(models: list[torch.nn.Module], x: torch.Tensor, y: torch.Tensor, normalize: str) -> np.ndarray:
    """[3 rows: members then ensemble, acc %, nll, ece] straight from the models, with a plain numpy ECE."""
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in NORMALIZE[normalize])
    with torch.no_grad():
        probs = [torch.softmax(m((x.float() / 255 - mean) / std), 1).double().numpy() for m in models]
    out = []
    yy = y.numpy()
    for p in [*probs, np.mean(probs, 0)]:
        conf, pred = p.max(1), p.argmax(1)
        b = np.clip(np.ceil(conf * 10).astype(int) - 1, 0, 9)
        ece = sum(abs(np.sum((pred == yy)[b == k] - conf[b == k])) for k in range(10)) / len(yy)
        out.append([np.mean(pred == yy) * 100, -np.mean(np.log(p[np.arange(len(yy)), yy])), ece])
    return np.array(out)


def test_generated_sets_end_to_end(tmp_path: Path) -> None:
    models = _fake_run(tmp_path / "run")
    ctx = AnalysisContext(recipe=_recipe("digits", "digits"), run_dir=tmp_path / "run", device=torch.device("cpu"))
    out = corruption.run(ctx)
    g = read_group(ctx.h5, "corruption")
    assert g["corruptions"] == list(GENERATED) and g["severities"].tolist() == [1, 2, 3]
    assert g["acc"].shape == (3, 3) and g["member_acc"].shape == (2, 3, 3) and g["member_names"] == ["m0", "m1"]
    assert g["_attrs"]["images"] == 9 * N_TEST and g["_attrs"]["recipe"] == "fake"
    test = load_dataset("digits").test.subset(N_TEST)
    for k, (fn, levels) in enumerate(GENERATED.values()):
        for s, level in enumerate(levels):
            x = fn(test.x, level, 1000 * ctx.recipe.run.seed + 10 * k + s)
            want = _expected(models, x, test.y, "digits")
            np.testing.assert_allclose(g["member_acc"][:, k, s], want[:2, 0], atol=1e-9)
            np.testing.assert_allclose([g["acc"][k, s], g["nll"][k, s], g["ece"][k, s]], want[2], atol=1e-5)
            np.testing.assert_allclose(g["member_nll"][:, k, s], want[:2, 1], atol=1e-5)
            np.testing.assert_allclose(g["member_ece"][:, k, s], want[:2, 2], atol=1e-5)
    assert float(g["acc_mean"]) == pytest.approx(g["acc"].mean()) and out["acc"] == pytest.approx(g["acc"].mean())
    assert float(g["nll_mean"]) == pytest.approx(g["nll"].mean())
    assert float(g["ece_mean"]) == pytest.approx(g["ece"].mean())
    np.testing.assert_allclose(g["member_acc_mean"], g["member_acc"].mean((1, 2)))
    assert 0 < float(g["ece_pooled"]) <= 1
    got = run_metrics(ctx.run_dir)
    assert got["corruption_acc"] == pytest.approx(float(g["acc_mean"]))
    assert got["corruption_nll"] == pytest.approx(float(g["nll_mean"]))
    assert got["corruption_ece"] == pytest.approx(100 * float(g["ece_mean"]))
    assert got["corruption_ece_pooled"] == pytest.approx(100 * float(g["ece_pooled"]))
    assert plot(ctx.run_dir, "corruption", tmp_path / "c.png").stat().st_size > 5000


def _release(folder: Path, n: int, names: list[str]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """A fake release: random images [5 n, 32, 32, 3] per corruption and labels.npy, as the real one lays them."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    labels = np.tile(rng.integers(0, 10, n), 5).astype(np.int64)
    np.save(folder / "labels.npy", labels)
    arrays = {}
    for name in names:
        arrays[name] = rng.integers(0, 256, (5 * n, 32, 32, 3), dtype=np.uint8)
        np.save(folder / f"{name}.npy", arrays[name])
    return arrays, labels


def test_release_sets_end_to_end(tmp_path: Path) -> None:
    models = _fake_run(tmp_path / "run")
    n, k = 12, 8  # 12 images a severity in the files, test_subset keeps the first 8 of each
    arrays, labels = _release(tmp_path / "data" / "CIFAR-10-C", n, ["zoom_blur", "fog"])
    fake = Dataset("cifar10", Split(torch.zeros(4, 3, 32, 32, dtype=torch.uint8), torch.zeros(4, dtype=torch.int64)),
                   Split(torch.zeros(4, 3, 32, 32, dtype=torch.uint8), torch.zeros(4, dtype=torch.int64)), 10)
    ctx = AnalysisContext(recipe=_recipe("cifar10", "cifar10", root=str(tmp_path / "data"), test_subset=k),
                          run_dir=tmp_path / "run", device=torch.device("cpu"), _data=fake)
    corruption.run(ctx)
    g = read_group(ctx.h5, "corruption")
    assert g["corruptions"] == ["fog", "zoom_blur"]  # sorted, labels.npy left out
    assert g["severities"].tolist() == [1, 2, 3, 4, 5] and g["acc"].shape == (2, 5)
    assert g["_attrs"]["images"] == 2 * 5 * k and str(tmp_path / "data" / "CIFAR-10-C") in g["_attrs"]["source"]
    for c, name in enumerate(["fog", "zoom_blur"]):
        for s in range(5):
            x = torch.from_numpy(arrays[name][s * n:s * n + k]).permute(0, 3, 1, 2)
            y = torch.from_numpy(labels[s * n:s * n + k])
            want = _expected(models, x, y, "cifar10")
            np.testing.assert_allclose(g["member_acc"][:, c, s], want[:2, 0], atol=1e-9)
            np.testing.assert_allclose([g["acc"][c, s], g["nll"][c, s], g["ece"][c, s]], want[2], atol=1e-5)


def test_missing_release_is_one_line_naming_the_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REPRO_DATA", str(tmp_path))
    for dataset, name, url in (("cifar10", "CIFAR-10-C", "https://zenodo.org/records/2535967"),
                               ("cifar100", "CIFAR-100-C", "https://zenodo.org/records/3555552")):
        folder = tmp_path.resolve() / name
        with pytest.raises(DataError) as e:
            corruption.release_folder(_recipe(dataset, dataset))
        assert str(e.value) == (
            f"corruption: {name} not found in {folder} (no labels.npy): download {name} from {url} "
            f"(Hendrycks & Dietterich) and extract it so that {folder}/<corruption>.npy and {folder}/labels.npy "
            f"exist, or set REPRO_DATA / [data].root to the folder above it")
    (tmp_path / "CIFAR-10-C").mkdir()
    np.save(tmp_path / "CIFAR-10-C" / "labels.npy", np.zeros(10, dtype=np.int64))
    with pytest.raises(DataError, match="holds labels.npy but no <corruption>.npy"):
        corruption.release_sets(_recipe("cifar10", "cifar10"), 10, (3, 32, 32))
    np.save(tmp_path / "CIFAR-10-C" / "fog.npy", np.zeros((10, 32, 32, 1), dtype=np.uint8))
    with pytest.raises(DataError, match=r"fog.npy holds uint8 \[10, 32, 32, 1\], not uint8 \[10, 32, 32, 3\]"):
        corruption.release_sets(_recipe("cifar10", "cifar10"), 10, (3, 32, 32))


def test_a_digits_recipe_runs_corruption_after_training(tmp_path: Path) -> None:
    raw = digits_recipe(name="c", analyses=["predict", "calibration", "corruption"], train={"epochs": 1},
                        data={"train_subset": 128, "test_subset": 60})
    res = load(str(write_recipe(tmp_path, raw)))[0]
    out = execute(res, root=tmp_path, out=str(tmp_path / "run"), device="cpu")
    assert out.state == "done", out.error
    got = run_metrics(out.run_dir)
    g = read_group(out.run_dir / "analysis.h5", "corruption")
    assert g["_attrs"]["images"] == 9 * 60  # all 60 test images: fewer than GENERATED_IMAGES
    assert g["member_acc"].shape == (1, 3, 3) and got["corruption_acc"] == pytest.approx(float(g["acc_mean"]))
    # one member: the ensemble is that member
    np.testing.assert_allclose(g["member_acc"][0], g["acc"])
    # the individual recipes' stand-in ECE: the ensemble's (here the one model's) /calibration ECE, in percent
    assert got["ensemble_ece"] == pytest.approx(100 * float(read_group(out.run_dir / "analysis.h5", "calibration")
                                                            ["ece"][-1]))


def test_a_cifar_run_without_the_release_fails_before_training(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REPRO_DATA", str(tmp_path / "data"))
    raw = digits_recipe(name="c", analyses=["predict", "corruption"],
                        data={"dataset": "cifar10", "normalize": "cifar10"})
    res = load(str(write_recipe(tmp_path, raw)))[0]
    out = execute(res, root=tmp_path, out=str(tmp_path / "run"), device="cpu")
    folder = (tmp_path / "data").resolve() / "CIFAR-10-C"
    assert out.state == "failed" and out.error.startswith(f"corruption: CIFAR-10-C not found in {folder} ")
    assert not (out.run_dir / "train").exists()  # no stage started (nor CIFAR-10 itself looked for)
