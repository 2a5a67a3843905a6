"""Every recipe, every stage and every analysis end to end under --smoke (the CLI as a user runs it)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import cli

from engine.store import groups
from repro.recipe import load, load_resolved, recipe_names


@pytest.mark.slow
@pytest.mark.parametrize("name", recipe_names())
def test_recipe_smoke(name: str, tmp_path: Path) -> None:
    resolved = load(name, smoke=True)
    # a sweep's smoke runs one point per value of its longest axis: a minute each on 2 busy cores, two at most
    res = cli("run", name, "--smoke", "--quiet", "--device", "cpu", env={"REPRO_ROOT": str(tmp_path)},
              timeout=max(300, 120 + 60 * len(resolved)))
    assert res.returncode == 0, res.stderr[-2000:]
    runs = sorted(p for p in (tmp_path / name).iterdir() if p.is_dir())
    assert len(runs) == len(resolved)
    for run, res_ in zip(runs, resolved):
        status = json.loads((run / "status.json").read_text())
        assert status["state"] == "done" and status["smoke"] is True
        # the default profile, recorded as such (the faithful one: test_fidelity)
        assert status["profile"] == "default"
        saved = load_resolved(run / "recipe.toml")
        assert saved.run.faithful is False and saved.run.faithful_applied == res_.recipe.run.faithful_applied
        for stage in res_.recipe.stage:
            assert (run / stage.name / "final.pt").exists() and (run / stage.name / "tickets.json").exists()
        assert set(res_.recipe.analyses) <= set(groups(run / "analysis.h5"))


def test_bench_json_contract() -> None:
    res = cli("bench", "--arch", "cifar_resnet_8", "--device", "cpu", "--batch-size", "16", "--steps", "2", "--warmup",
              "1", "--repeats", "1", "--sparse", "--json", timeout=120)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert {"arch", "device", "batch_size", "precision", "dense_img_s", "sparse_img_s"} <= set(out)
    assert out["arch"] == "cifar_resnet_8" and out["device"] == "cpu" and out["batch_size"] == 16
    assert out["precision"] == "fp32" and out["dense_img_s"] > 0 and out["sparse_img_s"] > 0
    assert out["sparse_overhead"] == pytest.approx(out["dense_img_s"] / out["sparse_img_s"] - 1, abs=1e-3)
