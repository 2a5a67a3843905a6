"""Fidelity switches of issue 14 for Sup-tickets, Early-Bird and the ensemble metrics: resume at a Sup-tickets
cycle start is bitwise, the original's ImageNet swap of the superposed model, the original's 14-bin ECE and
Early-Bird's mean-of-batch accuracy, each checked against values worked out by hand or an independent route."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from digits_recipes import sup_recipe
from helpers import run_recipe, stopped_at

from engine.io import load_checkpoint

# P = 4 pre-training epochs, then 2 cycles of 2 epochs: re-explorations at the starts of epochs 4 and 6
SUP = sup_recipe(epochs=8, update_frequency=4, final_prune_epoch=2, cycle=2, cycle_rate=0.5, run={"seed": 5})


def _run(tmp_path: Path, out: Path, raw: dict[str, Any], resume: bool = False) -> Any:
    return run_recipe(raw, tmp_path, out, root=tmp_path / "root", name="sup.toml", resume=resume)


def _stage_files(stage: Path) -> dict[str, dict[str, torch.Tensor]]:
    names = ["final.pt", "ticket-0.pt", "ticket-1.pt", "ticket-2.pt", "superposed-1.pt", "superposed-2.pt"]
    return {n: load_checkpoint(stage / n)["model"] for n in names}


def test_suptickets_resumed_at_a_cycle_start_is_bitwise(tmp_path: Path) -> None:
    """Killed just before the second cycle's re-exploration (epoch 6), the resumed run regrows the same positions
    from the same last gradients and ends with the same tickets, superposed network and final weights."""
    ref = _run(tmp_path, tmp_path / "ref", SUP)
    assert ref.state == "done", ref.error
    with stopped_at(6), pytest.raises(KeyboardInterrupt):  # as Ctrl-C would, before epoch 7's first step
        _run(tmp_path, tmp_path / "cut", SUP)
    assert load_checkpoint(tmp_path / "cut" / "sup" / "last.pt")["epoch"] == 6
    out = _run(tmp_path, tmp_path / "cut", SUP, resume=True)
    assert out.state == "done", out.error
    a, b = _stage_files(ref.run_dir / "sup"), _stage_files(out.run_dir / "sup")
    for f in a:
        differ = [k for k in a[f] if not torch.equal(a[f][k], b[f][k])]
        assert not differ, f"{f}: {differ[:3]} differ after resuming at a cycle start"


def _params_of(state: dict[str, torch.Tensor]) -> list[str]:
    """The trainable entries of a cifar_resnet_8 state dict (weights and biases, no BN running statistics)."""
    return [k for k in state if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))]


def test_swap_superposed_freezes_the_swapped_in_model_as_the_original_imagenet_code(tmp_path: Path) -> None:
    """ImageNet/main.py replaces the trained model by the superposed one while the optimizer and the masks stay
    bound to the old weights: from the second cycle on the weights in use never change, only their BN statistics
    move in training-mode forwards, and every later ticket is the previous superposed network with drifted BN."""
    raw = {**SUP, "stage": [{**SUP["stage"][0], "params": {**SUP["stage"][0]["params"], "swap_superposed": True}}]}
    run = _run(tmp_path, tmp_path / "swap", raw)
    assert run.state == "done", run.error
    f = _stage_files(run.run_dir / "sup")
    s1, t2, s2 = f["superposed-1.pt"], f["ticket-2.pt"], f["superposed-2.pt"]
    assert all(torch.equal(t2[k], s1[k]) for k in _params_of(s1))  # cycle 2 trained nothing
    assert not torch.equal(t2["bn.running_mean"], s1["bn.running_mean"])  # but its forwards moved the BN statistics
    assert int(t2["bn.num_batches_tracked"]) == int(s1["bn.num_batches_tracked"]) + 2 * 6  # 2 epochs of 6 batches
    assert all(torch.equal(f["final.pt"][k], s2[k]) for k in s2)  # the last superposed network is the model in use
    # S_2 = (2/3)·S_1 + (1/3)·T_2 has S_1's weights again (up to rounding): the same support, the same values
    for k in _params_of(s1):
        assert torch.allclose(s2[k], s1[k], rtol=1e-6, atol=1e-7), k
    live = load_checkpoint(run.run_dir / "sup" / "final.pt")["method"]["masking"]["masks"]
    sup_masks = load_checkpoint(run.run_dir / "sup" / "superposed-2.pt")["method"]["masking"]["masks"]
    assert all(torch.equal(live[n], sup_masks[n]) for n in sup_masks)  # the masks in use are the superposed ones
    # the default keeps training its own trajectory: cycle 2 changes the weights (test above ran the default)
    ref = _run(tmp_path, tmp_path / "keep", SUP)
    g = _stage_files(ref.run_dir / "sup")
    assert not torch.equal(g["ticket-2.pt"]["conv.weight"], g["superposed-1.pt"]["conv.weight"])


# ---- ECE: the original's 14 effective bins -----------------------------------------------------------------
# six points of three classes, (top probability, right?): .41 yes, .45 no, .62 yes, .65 no, .95 yes, 1.0 yes
ECE_P = torch.tensor([[0.41, 0.30, 0.29], [0.45, 0.30, 0.25], [0.62, 0.20, 0.18], [0.15, 0.65, 0.20],
                      [0.95, 0.03, 0.02], [0.0, 1.0, 0.0]], dtype=torch.float64)
ECE_Y = torch.tensor([0, 1, 0, 2, 0, 1])
# equal (15 bins of 1/15): (.4, .4667] holds .41 and .45, (.6, .6667] holds .62 and .65, (.9333, 1] .95 and 1.0:
#   (|.59 - .45| + |.38 - .65| + |.05 + 0|) / 6 = (.14 + .27 + .05) / 6
ECE_EQUAL = 0.46 / 6
# original (edges k/14): .41 in (5/14, 6/14], .45 in (6/14, 7/14], .62 in (8/14, 9/14], .65 in (9/14, 10/14],
#   .95 and 1.0 in (13/14, 1]: every point but the last two alone: (.59 + .45 + .38 + .65 + .05) / 6
ECE_ORIGINAL = 2.12 / 6


def test_ece_original_binning_by_hand() -> None:
    from engine.analyses.calibration import reliability

    eq = reliability(ECE_P, ECE_Y, 15, "equal")
    assert eq["ece"] == pytest.approx(ECE_EQUAL, abs=1e-12)
    assert eq["count"].tolist() == [0, 0, 0, 0, 0, 0, 2, 0, 0, 2, 0, 0, 0, 0, 2]
    orig = reliability(ECE_P, ECE_Y, 15, "original")
    assert orig["ece"] == pytest.approx(ECE_ORIGINAL, abs=1e-12)
    assert orig["edges"].tolist() == pytest.approx([k / 14 for k in range(15)], abs=1e-15)
    assert orig["count"].tolist() == [0, 0, 0, 0, 0, 1, 1, 0, 1, 1, 0, 0, 0, 2]
    assert orig["confidence"].tolist()[5:10] == pytest.approx([0.41, 0.45, 0.0, 0.62, 0.65])
    assert orig["accuracy"].tolist()[13] == 1.0
    # np.digitize(right=True) over edges ending at 1.0 leaves a confidence above 1 in no bin: it only counts in N
    over = torch.tensor([[1.0 + 1e-9, 0.0], [0.8, 0.2]], dtype=torch.float64)
    assert reliability(over, torch.tensor([0, 1]), 15, "original")["ece"] == pytest.approx(0.8 / 2, abs=1e-12)


def test_calibration_analysis_honours_ece_binning(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from engine.analyses import calibration
    from engine.config import AnalysisOptions
    from engine.store import read_group, write_group

    h5 = tmp_path / "analysis.h5"
    meta = {"recipe": "fake", "run_id": "r"}
    write_group(h5, "predict", {"member_probs": ECE_P[None].float().numpy(), "labels": ECE_Y.numpy(),
                                "member_names": ["m"]}, meta=meta)
    for binning, expected, n in (("equal", ECE_EQUAL, 15), ("original", ECE_ORIGINAL, 14)):
        ctx = SimpleNamespace(recipe=SimpleNamespace(analysis=AnalysisOptions(ece_binning=binning)), h5=h5, meta=meta)
        out = calibration.run(ctx)  # type: ignore[arg-type]
        g = read_group(h5, "calibration")
        assert out["ece"] == pytest.approx(expected, abs=1e-6) and g["ece"].tolist() == pytest.approx([expected] * 2,
                                                                                                      abs=1e-6)
        assert g["_attrs"]["n_bins"] == n and g["_attrs"]["ece_binning"] == binning and g["bin_count"].shape == (n,)


# ---- Early-Bird's test accuracy: the mean of per-batch accuracies ------------------------------------------


def test_eval_accuracy_batch_mean_by_hand() -> None:
    """Five images in batches of 2, 2 and 1 (the eval batch does not divide the set): 2/2, 1/2 and 0/1 right.
    Per image 3/5 = 60%; Early-Bird's test() averages the batches' accuracies: (100 + 50 + 0) / 3 = 50%."""
    import contextlib
    import math

    from engine.config import DataConfig
    from engine.evaluate import evaluate

    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0], [2.0, 0.0], [2.0, 0.0], [2.0, 0.0]])
    y = torch.tensor([0, 1, 0, 1, 1])
    batches = [(logits[:2], y[:2]), (logits[2:4], y[2:4]), (logits[4:], y[4:])]
    per_image = evaluate(lambda x: x, batches, contextlib.nullcontext)
    batch_mean = evaluate(lambda x: x, batches, contextlib.nullcontext, accuracy="batch_mean")
    assert per_image["acc"] == pytest.approx(60.0, abs=1e-12)
    assert batch_mean["acc"] == pytest.approx(50.0, abs=1e-12)
    lse = math.log(1 + math.exp(2.0))  # the loss stays the per-image mean, as the original's sum / len(dataset)
    assert batch_mean["loss"] == per_image["loss"] == pytest.approx((3 * (lse - 2) + 2 * lse) / 5, abs=1e-6)
    assert DataConfig().eval_accuracy == "per_image"
    assert DataConfig(eval_accuracy="batch_mean").eval_accuracy == "batch_mean"
