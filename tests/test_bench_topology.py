"""`repro bench --topology`: the JSON it prints, and the masks the timed prune-and-regrow updates leave behind."""

from __future__ import annotations

import json

import torch
from click.testing import CliRunner

from engine.bench import time_topology
from engine.models import create_model
from engine.sparse.inits import layer_densities, maskable
from repro.cli import cli

ARCH, WIDTH = "cifar_resnet_20", 0.25


def test_bench_topology_json_keeps_the_spec_keys_and_adds_the_update_time() -> None:
    res = CliRunner().invoke(cli, ["bench", "--arch", ARCH, "--width", str(WIDTH), "--device", "cpu",
                                   "--batch-size", "4", "--steps", "1", "--warmup", "0", "--repeats", "1",
                                   "--topology", "--topology-updates", "2", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert {"arch", "device", "batch_size", "precision", "dense_img_s", "sparse_img_s"} <= out.keys()
    assert (out["arch"], out["device"], out["batch_size"], out["sparse_img_s"]) == (ARCH, "cpu", 4, None)
    assert 0 < out["topology_update_min_ms"] <= out["topology_update_ms"]  # the median, a number in ms
    n_layers = len(maskable(create_model(ARCH, 10, WIDTH)))  # every conv and the classifier
    assert out["topology"] == {"init": "ERK", "density": 0.2, "prune": "magnitude", "growth": "gradient",
                               "prune_rate": 0.5, "layers": n_layers, "updates": 2}


def test_timed_updates_keep_each_layers_erk_count_exactly_and_move_the_masks() -> None:
    timing = time_topology(ARCH, torch.device("cpu"), width=WIDTH, density=0.2, updates=3, warmup=1)
    masking = timing.method.masking
    # the target per layer from the ERK rule itself (an exact draw holds round(d * numel) ones)
    model = create_model(ARCH, 10, WIDTH)
    sizes = {n: p.numel() for n, p in model.named_parameters()}
    targets = {n: round(d * sizes[n]) for n, d in layer_densities(model, "ERK", 0.2).items()}
    assert list(targets) == masking.names
    moved = 0
    for name, p in zip(masking.names, masking.params):
        mask = masking.masks[name]
        assert int(timing.initial[name].sum()) == targets[name]
        assert int(mask.sum()) == targets[name], name  # 4 updates later, the same count in every layer
        assert not p[~mask].any(), name  # weights outside the mask are exactly zero
        moved += int((mask != timing.initial[name]).sum())
    assert moved > 0  # the updates changed the topology (a no-op would keep the counts too)
    total = sum(targets.values()) / sum(p.numel() for p in masking.params)
    assert abs(total - 0.2) < 1e-3
    assert len(timing.times_ms) == 3
