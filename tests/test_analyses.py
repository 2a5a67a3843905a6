"""The ensemble analyses: each metric on a hand-computed case, against independent references, then every
analysis end to end over a fake run directory (random members, no training) checked against a recomputation
from the stored /predict."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.manifold import TSNE

from engine.analyses import calibration, disagreement, kd, mask_overlap, ood, predict, tsne
from engine.analyses.context import AnalysisContext
from engine.analyses.ensemble import (
    calibration_bins,
    confidence_bin,
    disagreement_matrix,
    ece,
    kl_matrix,
    max_softmax,
    mean_off_diagonal,
    nll,
    ood_metrics,
    tsne_perplexity,
)
from engine.analyses.mask_overlap import ticket_mask
from engine.config import Recipe
from engine.data import NORMALIZE, load_dataset
from engine.io import save_checkpoint
from engine.models import create_model
from engine.sparse.masks import hamming_matrix
from engine.store import groups, read_group
from repro.plots import PLOTS, plot

# ---- pure functions, by hand -------------------------------------------------------------------------------


def _probs_from_preds(preds: list[list[int]], c: int = 2) -> torch.Tensor:
    """Members' probabilities whose argmax is `preds` (0.7 on the predicted class, the rest shared)."""
    p = torch.full((len(preds), len(preds[0]), c), 0.3 / (c - 1), dtype=torch.float64)
    for i, row in enumerate(preds):
        for n, k in enumerate(row):
            p[i, n, k] = 0.7
    return p


def test_disagreement_by_hand() -> None:
    # three members, four points, two classes; top-1 predictions:
    #   m0 = 0 1 1 0,  m1 = 0 0 1 1,  m2 = 1 1 1 0
    # d01: differ at points 1, 3 -> 2/4;  d02: point 0 -> 1/4;  d12: points 0, 1, 3 -> 3/4
    p = _probs_from_preds([[0, 1, 1, 0], [0, 0, 1, 1], [1, 1, 1, 0]])
    d = disagreement_matrix(p)
    expected = [[0.0, 0.5, 0.25], [0.5, 0.0, 0.75], [0.25, 0.75, 0.0]]
    assert d.tolist() == expected
    # mean over the 6 off-diagonal entries: 2 * (0.5 + 0.25 + 0.75) / 6 = 0.5 (no +0.001)
    assert mean_off_diagonal(d) == pytest.approx(0.5, abs=1e-15)
    assert math.isnan(mean_off_diagonal(torch.zeros(1, 1)))


def test_kl_by_hand_and_against_torch_kl_div() -> None:
    # p0 = [.5 .5], [.9 .1];  p1 = [.25 .75], [.5 .5]
    p = torch.tensor([[[0.5, 0.5], [0.9, 0.1]], [[0.25, 0.75], [0.5, 0.5]]], dtype=torch.float64)
    kl = kl_matrix(p)
    # KL(p0||p1): point 0: .5 ln(.5/.25) + .5 ln(.5/.75) = .5 ln(4/3) = 0.143841
    #             point 1: .9 ln(.9/.5) + .1 ln(.1/.5) = 0.529008 - 0.160944 = 0.368064 -> mean 0.255953
    kl01 = (0.5 * math.log(4 / 3) + 0.9 * math.log(1.8) + 0.1 * math.log(0.2)) / 2
    # KL(p1||p0): point 0: .25 ln(.25/.5) + .75 ln(.75/.5) = -0.173287 + 0.304099 = 0.130812
    #             point 1: .5 ln(.5/.9) + .5 ln(.5/.1) = -0.293893 + 0.804719 = 0.510826 -> mean 0.320819
    kl10 = (0.25 * math.log(0.5) + 0.75 * math.log(1.5) + 0.5 * math.log(5 / 9) + 0.5 * math.log(5)) / 2
    assert kl01 == pytest.approx(0.255953, abs=1e-6) and kl10 == pytest.approx(0.320819, abs=1e-6)
    assert kl.reshape(-1).tolist() == pytest.approx([0.0, kl01, kl10, 0.0], abs=1e-12)
    assert mean_off_diagonal(kl) == pytest.approx((kl01 + kl10) / 2, abs=1e-12)  # 0.288386

    # five members on random data: every ordered pair against F.kl_div(log q, p, batchmean) = KL(p || q)
    g = torch.Generator().manual_seed(0)
    probs = torch.softmax(3 * torch.randn(5, 40, 7, generator=g, dtype=torch.float64), -1)
    kl = kl_matrix(probs)
    for i in range(5):
        for j in range(5):
            ref = F.kl_div(probs[j].log(), probs[i], reduction="batchmean")
            assert kl[i, j].item() == pytest.approx(ref.item(), abs=1e-12)
    assert (kl.diagonal() == 0).all()
    off = [kl[i, j].item() for i in range(5) for j in range(5) if i != j]
    assert mean_off_diagonal(kl) == pytest.approx(sum(off) / 20, abs=1e-12)  # all 20 ordered pairs


def test_confidence_bins_at_the_edges() -> None:
    # B = 4: bin i holds i/4 < c <= (i+1)/4; c = 0 in bin 0, an edge in the bin below it, 1.0 in the last bin
    c = torch.tensor([0.0, 0.25, 0.2500001, 0.5, 0.75, 0.99, 1.0], dtype=torch.float64)
    assert confidence_bin(c, 4).tolist() == [0, 0, 1, 1, 2, 3, 3]
    assert confidence_bin(c.float(), 4).tolist() == [0, 0, 1, 1, 2, 3, 3]
    # B = 15: c = k/15 exactly lands in bin k-1 for every k; 1/15 in bin 0, 1.0 in bin 14
    k = torch.arange(1, 16, dtype=torch.float64)
    assert confidence_bin(k / 15, 15).tolist() == list(range(15))
    assert confidence_bin(torch.tensor([0.0, 1 / 15, 1.0], dtype=torch.float64), 15).tolist() == [0, 0, 14]
    assert confidence_bin(torch.tensor([0.1], dtype=torch.float32), 10).tolist() == [0]  # 0.1f is the edge 1/10


def test_ece_by_hand() -> None:
    # B = 4 bins of width 0.25; (confidence, correct) per point:
    #   a .4 right (bin 1)   b .5 wrong (bin 1, on its upper edge)   c .7 right (bin 2)
    #   d .9 right (bin 3)   e 1.0 wrong (bin 3)
    p = torch.tensor([[0.4, 0.3, 0.3], [0.5, 0.25, 0.25], [0.7, 0.2, 0.1], [0.1, 0.9, 0.0], [0.0, 0.0, 1.0]],
                     dtype=torch.float64)
    y = torch.tensor([0, 1, 0, 1, 0])
    b = calibration_bins(p, y, 4)
    assert b["count"].tolist() == [0, 2, 1, 2]
    assert b["confidence"].tolist() == pytest.approx([0.0, 0.45, 0.7, 0.95])
    assert b["accuracy"].tolist() == pytest.approx([0.0, 0.5, 1.0, 0.5])
    assert b["edges"].tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
    # ECE = 2/5 |.5 - .45| + 1/5 |1 - .7| + 2/5 |.5 - .95| = .02 + .06 + .18 = .26
    assert b["ece"] == pytest.approx(0.26, abs=1e-12)
    # NLL = -(ln .4 + ln .25 + ln .7 + ln .9 + ln 1e-12 (clamped 0)) / 5
    assert nll(p, y) == pytest.approx(-(math.log(0.4) + math.log(0.25) + math.log(0.7) + math.log(0.9)
                                        + math.log(1e-12)) / 5)


def _ece_numpy_loop(p: np.ndarray, y: np.ndarray, n_bins: int) -> float:
    """ECE the slow way: each point into its bin by the explicit inequalities, then sum_b n_b/N |acc - conf|."""
    conf_sum, acc_sum, count = np.zeros(n_bins), np.zeros(n_bins), np.zeros(n_bins)
    for row, label in zip(p, y):
        c = float(row.max())
        b = 0
        for i in range(n_bins):
            if i / n_bins < c <= (i + 1) / n_bins:
                b = i
        conf_sum[b] += c
        acc_sum[b] += float(int(row.argmax()) == int(label))
        count[b] += 1
    total = 0.0
    for i in range(n_bins):
        if count[i]:
            total += count[i] / len(y) * abs(acc_sum[i] / count[i] - conf_sum[i] / count[i])
    return total


@pytest.mark.parametrize("n_bins", [2, 10, 15])
def test_ece_against_a_numpy_loop(n_bins: int) -> None:
    g = torch.Generator().manual_seed(n_bins)
    p = torch.softmax(2.5 * torch.randn(300, 10, generator=g, dtype=torch.float64), -1)
    y = torch.randint(0, 10, (300,), generator=g)
    assert ece(p, y, n_bins) == pytest.approx(_ece_numpy_loop(p.numpy(), y.numpy(), n_bins), abs=1e-12)


def test_auroc_and_aupr_by_hand() -> None:
    # in = .9 .6 .5, out = .7 .5: pairs (in, out) with in > out: (.9,.7) (.9,.5) (.6,.5) = 3, one tie (.5,.5)
    # counts 1/2 -> AUROC = 3.5 / 6
    r = ood_metrics(np.array([0.9, 0.6, 0.5]), np.array([0.7, 0.5]))
    assert r["auroc"] == pytest.approx(3.5 / 6)
    # AP = sum over thresholds of (recall step) x precision: >=.9: R 1/3 P 1; >=.7: R 1/3 P 1/2 (no step);
    # >=.6: R 2/3 P 2/3; >=.5: R 1 P 3/5  ->  1/3 + 1/3 * 2/3 + 1/3 * 3/5 = 34/45
    assert r["aupr"] == pytest.approx(34 / 45)
    assert max_softmax(torch.tensor([[0.2, 0.8], [0.6, 0.4]])).tolist() == pytest.approx([0.8, 0.6])
    with pytest.raises(ValueError, match="both sides"):
        ood_metrics(np.array([0.5]), np.array([]))


def test_hamming_and_ticket_masks() -> None:
    # a = 1100, b = 1010, c = 1100: d(a,b) = 2/4, d(a,c) = 0, d(b,c) = 2/4
    a, b, c = (torch.tensor(v, dtype=torch.bool) for v in ([1, 1, 0, 0], [1, 0, 1, 0], [1, 1, 0, 0]))
    assert hamming_matrix([a, b, c]).tolist() == [[0.0, 0.5, 0.0], [0.5, 0.0, 0.5], [0.0, 0.5, 0.0]]
    with pytest.raises(ValueError, match="different sizes"):
        hamming_matrix([a, torch.ones(3, dtype=torch.bool)])
    # stored masks, concatenated in `names` order (not the dict's)
    masks = {"l1.weight": torch.tensor([[True, False]]), "l2.weight": torch.tensor([False, False, True])}
    ck = {"model": {}, "method": {"masking": {"names": ["l2.weight", "l1.weight"], "masks": masks}}}
    assert ticket_mask(ck).tolist() == [False, False, True, True, False]
    # no masks: nonzero conv (4-D) and linear (2-D) weights; biases and norm weights (1-D) ignored
    sd = {"conv.weight": torch.tensor([0.0, 1.0, -2.0, 0.0]).view(1, 1, 2, 2), "conv.bias": torch.zeros(1),
          "bn.weight": torch.zeros(1), "fc.weight": torch.tensor([[0.5, 0.0]]), "fc.bias": torch.ones(1)}
    assert ticket_mask({"model": sd, "method": {}}).tolist() == [False, True, True, False, True, False]


def test_tsne_perplexity_cap() -> None:
    assert tsne_perplexity(30.0, 10) == 3.0  # (10 - 1) / 3
    assert tsne_perplexity(30.0, 3) == 1.0  # (3 - 1) / 3 floored at 1
    assert tsne_perplexity(2.0, 100) == 2.0


# ---- end to end over a fake run directory ------------------------------------------------------------------

N_TEST = 100
K_IMAGES, C = 4, 10


def _recipe(stages: list[str], **analysis: object) -> Recipe:
    return Recipe.model_validate({
        "name": "fake", "paper": "demo", "model": {"arch": "cifar_resnet_8", "width": 0.25},
        "data": {"dataset": "digits", "test_subset": N_TEST, "normalize": "digits"},
        "stage": [{"name": s, "method": "train", "epochs": 3} for s in stages],
        "analysis": {"bins": 10, "ood_dataset": "synthetic", **analysis},
    })


def _trajectory(epoch: list[int], member: list[int], seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    probs = torch.softmax(torch.randn(len(epoch), K_IMAGES, C, generator=g), -1)
    return {"epoch": torch.tensor(epoch), "member": torch.tensor(member), "probs": probs}


@pytest.fixture(scope="module")
def fake_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    run_dir = tmp_path_factory.mktemp("runs") / "fake-run"
    stage = run_dir / "s"
    stage.mkdir(parents=True)
    digits = load_dataset("digits")
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in NORMALIZE["digits"])
    x_train = (digits.train.x.float() / 255 - mean) / std
    y_train = F.one_hot(digits.train.y, 10).double() * 2 - 1
    members, models, keeps = [], [], []
    for i in range(3):
        torch.manual_seed(100 + i)
        model = create_model("cifar_resnet_8", 10, 0.25).eval()
        sd = model.state_dict()
        g = torch.Generator().manual_seed(7 + i)
        keep = []
        for k, v in sd.items():  # prune half of every conv weight at random: distinct tickets
            if k.endswith("weight") and v.dim() == 4:
                assert (v != 0).all()
                m = torch.rand(v.shape, generator=g) < 0.5
                v.mul_(m)
                keep.append(m.reshape(-1))
        # a ridge-regression read-out on the random features (a linear probe), so that the members predict
        # varied classes with some skill instead of one class each; its weights stay dense
        fc, model.fc = model.fc, torch.nn.Identity()
        with torch.no_grad():
            feats = model(x_train)
        model.fc = fc
        f = torch.cat([feats, torch.ones(len(x_train), 1)], 1).double()
        w = torch.linalg.solve(f.T @ f + 1e-3 * torch.eye(f.shape[1], dtype=torch.float64), f.T @ y_train)
        with torch.no_grad():
            model.fc.weight.copy_(3 * w[:-1].T)
            model.fc.bias.copy_(3 * w[-1])
        assert (sd["fc.weight"] != 0).all()
        keep.append(torch.ones(sd["fc.weight"].numel(), dtype=torch.bool))
        keeps.append(torch.cat(keep))
        models.append(model)
        save_checkpoint(stage / f"ticket{i}.pt", {"model": sd, "method": {}})
        members.append({"name": f"ticket{i}", "path": f"s/ticket{i}.pt"})
    (stage / "tickets.json").write_text(json.dumps({"members": members}))
    # file order mixed on purpose: member 0 at epochs 2, 1, 3; member 1 at 1, 2, 3
    torch.save(_trajectory([2, 1, 3, 1, 2, 3], [0, 0, 0, 1, 1, 1], seed=3), stage / "trajectory.pt")
    recipe = _recipe(["s"])
    ctx = AnalysisContext(recipe=recipe, run_dir=run_dir, device=torch.device("cpu"))
    return {"ctx": ctx, "models": models, "keeps": keeps, "names": [m["name"] for m in members]}


def _assert_meta(g: dict) -> None:
    assert g["_attrs"]["recipe"] == "fake" and g["_attrs"]["run_id"] == "fake-run"
    assert set(g["_attrs"]) >= {"recipe", "run_id", "created", "version"}


def _stored_predict(ctx: AnalysisContext) -> tuple[np.ndarray, np.ndarray]:
    g = read_group(ctx.h5, "predict")
    return np.asarray(g["member_probs"], dtype=np.float64), np.asarray(g["labels"])


def test_disagreement_runs_predict_first_and_matches(fake_run: dict) -> None:
    ctx = fake_run["ctx"]
    assert "predict" not in groups(ctx.h5)
    out = disagreement.run(ctx)
    assert "predict" in groups(ctx.h5)  # computed on the way
    probs, labels = _stored_predict(ctx)
    assert probs.shape == (3, N_TEST, 10) and labels.shape == (N_TEST,)
    g = read_group(ctx.h5, "disagreement")
    _assert_meta(g)
    pred = probs.argmax(2)
    expected = np.array([[np.mean(pred[i] != pred[j]) for j in range(3)] for i in range(3)])
    assert g["matrix"].shape == (3, 3)
    np.testing.assert_allclose(g["matrix"], expected, atol=1e-12)
    mean = (expected.sum() - np.trace(expected)) / 6
    assert float(g["mean"]) == pytest.approx(mean, abs=1e-12) and out["disagreement"] == pytest.approx(mean)
    assert g["member_names"] == fake_run["names"]
    assert 0.2 < mean < 0.8  # the probes disagree on some points, not all
    acc = (pred == labels).mean(1)
    assert (acc > 0.3).all()  # and are right on many


def test_kd_matches_a_recomputation(fake_run: dict) -> None:
    ctx = fake_run["ctx"]
    out = kd.run(ctx)
    probs, _ = _stored_predict(ctx)
    logp = np.log(np.clip(probs, 1e-12, None))
    expected = np.array([[np.mean(np.sum(probs[i] * (logp[i] - logp[j]), axis=1)) for j in range(3)]
                         for i in range(3)])
    g = read_group(ctx.h5, "kd")
    _assert_meta(g)
    assert g["kl"].shape == (3, 3)
    np.testing.assert_allclose(g["kl"], expected, atol=1e-9)
    mean = (expected.sum() - np.trace(expected)) / 6
    assert float(g["mean"]) == pytest.approx(mean, abs=1e-9) and out["kl"] == pytest.approx(mean, abs=1e-9)


def test_calibration_matches_a_recomputation(fake_run: dict) -> None:
    ctx = fake_run["ctx"]
    out = calibration.run(ctx)
    probs, labels = _stored_predict(ctx)
    probs32 = probs.astype(np.float32)
    ens = probs32.mean(0)
    B = 10
    expected_ece = [_ece_numpy_loop(p, labels, B) for p in [*probs32, ens]]
    expected_nll = [float(np.mean(-np.log(np.clip(p[np.arange(N_TEST), labels], 1e-12, None))))
                    for p in [*probs, ens.astype(np.float64)]]
    g = read_group(ctx.h5, "calibration")
    _assert_meta(g)
    assert g["_attrs"]["n_bins"] == B
    assert g["ece"].shape == (4,) and g["nll"].shape == (4,)
    np.testing.assert_allclose(g["ece"], expected_ece, atol=1e-6)
    np.testing.assert_allclose(g["nll"], expected_nll, atol=1e-6)
    assert g["bin_edges"].shape == (B + 1,) and g["bin_edges"].tolist() == pytest.approx([i / B for i in range(11)])
    conf, correct = ens.max(1).astype(np.float64), ens.argmax(1) == labels
    b = np.clip(np.ceil(conf * B).astype(int) - 1, 0, B - 1)  # no confidence here sits on an edge
    count = np.bincount(b, minlength=B)
    for key, shape in (("bin_confidence", (B,)), ("bin_accuracy", (B,)), ("bin_count", (B,))):
        assert g[key].shape == shape and np.isfinite(g[key]).all()
    assert g["bin_count"].tolist() == count.tolist() and count.sum() == N_TEST
    conf_b = np.array([conf[b == i].mean() if count[i] else 0.0 for i in range(B)])
    acc_b = np.array([correct[b == i].mean() if count[i] else 0.0 for i in range(B)])
    np.testing.assert_allclose(g["bin_confidence"], conf_b, atol=1e-6)
    np.testing.assert_allclose(g["bin_accuracy"], acc_b, atol=1e-12)
    assert out["ece"] == pytest.approx(expected_ece[-1], abs=1e-6)
    assert out["member_ece_mean"] == pytest.approx(np.mean(expected_ece[:3]), abs=1e-6)


def test_ood_matches_a_recomputation(fake_run: dict) -> None:
    ctx = fake_run["ctx"]
    out = ood.run(ctx)
    probs, _ = _stored_predict(ctx)
    g = read_group(ctx.h5, "ood")
    _assert_meta(g)
    assert g["_attrs"]["ood_dataset"] == "synthetic"
    assert g["scores_in"].shape == (N_TEST,) and g["scores_out"].shape == (N_TEST,)  # both cut to test_subset
    np.testing.assert_allclose(g["scores_in"], probs.mean(0).max(1), atol=1e-5)
    # the OOD side straight from the models: digits statistics on synthetic images
    x = load_dataset("synthetic").test.x[:N_TEST].float() / 255
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in NORMALIZE["digits"])
    with torch.no_grad():
        p_out = torch.stack([torch.softmax(m((x - mean) / std), 1) for m in fake_run["models"]]).mean(0)
    s_out = p_out.max(1).values.numpy()
    np.testing.assert_allclose(g["scores_out"], s_out, atol=1e-5)
    # AUROC as the share of (in, out) pairs ranked right, ties half
    s_in = g["scores_in"].astype(np.float64)[:, None]
    so = g["scores_out"].astype(np.float64)[None, :]
    auroc = float(np.mean((s_in > so) + 0.5 * (s_in == so)))
    assert float(g["auroc"]) == pytest.approx(auroc, abs=1e-9) and out["auroc"] == pytest.approx(auroc, abs=1e-9)
    assert 0 < float(g["aupr"]) <= 1


def test_ood_refuses_the_training_dataset(fake_run: dict, tmp_path: Path) -> None:
    ctx = AnalysisContext(recipe=_recipe(["s"], ood_dataset="digits"), run_dir=fake_run["ctx"].run_dir,
                          device=torch.device("cpu"))
    with pytest.raises(ValueError, match="training dataset") as e:
        ood.run(ctx)
    assert "\n" not in str(e.value)


def test_mask_overlap_matches_the_drawn_masks(fake_run: dict) -> None:
    ctx = fake_run["ctx"]
    out = mask_overlap.run(ctx)
    keeps = fake_run["keeps"]
    expected = np.array([[float((keeps[i] != keeps[j]).double().mean()) for j in range(3)] for i in range(3)])
    g = read_group(ctx.h5, "mask_overlap")
    _assert_meta(g)
    assert g["_attrs"]["kind"] == "weight"
    assert g["distance"].shape == (3, 3) and g["labels"] == fake_run["names"]
    np.testing.assert_allclose(g["distance"], expected, atol=1e-12)
    assert out["mean_distance"] == pytest.approx(expected.sum() / 6, abs=1e-12)
    assert 0.4 < out["mean_distance"] < 0.6  # two independent 50% masks differ on about half the positions


@pytest.mark.parametrize("protocol,init", [
    ("ours", {"init": "pca"}),
    # the original's TSNE(n_components=2) under the sklearn of its time (0.24): random init, learning rate 200
    ("original", {"init": "random", "learning_rate": 200.0}),
])
def test_tsne_matches_a_direct_embedding(fake_run: dict, protocol: str, init: dict) -> None:
    ctx = AnalysisContext(recipe=_recipe(["s"], tsne_protocol=protocol), run_dir=fake_run["ctx"].run_dir,
                          device=torch.device("cpu"))
    out = tsne.run(ctx)
    g = read_group(ctx.h5, "tsne")
    _assert_meta(g)
    traj = torch.load(ctx.run_dir / "s" / "trajectory.pt")
    # trajectory 0 = member 0 in epoch order (file rows 1, 0, 2); trajectory 1 = member 1 (rows 3, 4, 5)
    rows = [1, 0, 2, 3, 4, 5]
    assert g["member"].tolist() == [0, 0, 0, 1, 1, 1] and g["step"].tolist() == [1, 2, 3, 1, 2, 3]
    assert g["labels"] == ["s/member0", "s/member1"]
    points = traj["probs"][rows].reshape(6, -1).double().numpy()
    ref = TSNE(n_components=2, perplexity=5 / 3, random_state=0, **init).fit_transform(points)
    assert g["embedding"].shape == (6, 2)
    np.testing.assert_allclose(g["embedding"], ref, rtol=1e-5, atol=1e-5)
    assert out == {"points": 6, "trajectories": 2}


def test_tsne_gathers_stages_in_recipe_order_and_needs_points(tmp_path: Path) -> None:
    run_dir = tmp_path / "r"
    for s in ("a", "b", "c"):
        (run_dir / s).mkdir(parents=True)
    ctx = AnalysisContext(recipe=_recipe(["a", "b", "c"], tsne_perplexity=2.0), run_dir=run_dir,
                          device=torch.device("cpu"))
    with pytest.raises(FileNotFoundError, match="record_predictions = true"):
        tsne.run(ctx)
    torch.save(_trajectory([1, 2], [0, 0], seed=1), run_dir / "c" / "trajectory.pt")
    torch.save(_trajectory([1, 1, 2, 2], [0, 1, 0, 1], seed=2), run_dir / "a" / "trajectory.pt")  # b records none
    tsne.run(ctx)
    g = read_group(ctx.h5, "tsne")
    assert g["labels"] == ["a/member0", "a/member1", "c/member0"]
    assert g["member"].tolist() == [0, 0, 1, 1, 2, 2] and g["step"].tolist() == [1, 2, 1, 2, 1, 2]
    assert g["embedding"].shape == (6, 2) and g["_attrs"]["perplexity"] == pytest.approx(5 / 3)


def test_single_member_runs_are_refused(tmp_path: Path, fake_run: dict) -> None:
    run_dir = tmp_path / "one"
    (run_dir / "s").mkdir(parents=True)
    src = fake_run["ctx"].run_dir / "s" / "ticket0.pt"
    (run_dir / "s" / "ticket0.pt").write_bytes(src.read_bytes())
    (run_dir / "s" / "tickets.json").write_text(json.dumps({"members": [{"name": "t", "path": "s/ticket0.pt"}]}))
    ctx = AnalysisContext(recipe=_recipe(["s"]), run_dir=run_dir, device=torch.device("cpu"))
    predict.run(ctx)
    for mod in (disagreement, kd, mask_overlap):
        with pytest.raises(ValueError, match="at least 2"):
            mod.run(ctx)
    calibration.run(ctx)  # one member is fine: ece [2]
    assert read_group(ctx.h5, "calibration")["ece"].shape == (2,)


def test_every_analysis_plots(fake_run: dict, tmp_path: Path) -> None:
    ctx = fake_run["ctx"]
    for mode in ("disagreement", "kd", "calibration", "ood", "mask_overlap", "tsne"):
        if mode not in groups(ctx.h5):
            {"disagreement": disagreement, "kd": kd, "calibration": calibration, "ood": ood,
             "mask_overlap": mask_overlap, "tsne": tsne}[mode].run(ctx)
        assert mode in PLOTS
        out = plot(ctx.run_dir, mode, tmp_path / f"{mode}.png")
        assert out.stat().st_size > 5000
