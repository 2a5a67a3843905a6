"""Issue 14: every deliberate difference from the original code is a named entry with a source and a switch;
`--faithful` applies the switches; the README's table is generated from the same entries."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from digits_recipes import write_recipe
from helpers import cli

from engine.fidelity import DIFFERENCES, differences_for, markdown_table
from repro.launch import execute
from repro.recipe import load, recipe_names

README = Path(__file__).resolve().parent.parent / "README.md"
SOURCE = re.compile(r"(VITA-Group/FreeTickets|luuyin/Sup-tickets|GATECH-EIC/Early-Bird-Tickets|"
                    r"VITA-Group/Random_Pruning|timgaripov/dnn-mode-connectivity) \S+\.(py|md|sh)(:\d+(-\d+)?)?")


def resolved_values(recipe, key: str) -> list:  # noqa: ANN001 - a Recipe
    """The value(s) a dotted entry key has in a resolved recipe (`stage.*.sparse.x`: each sparse stage's)."""
    segs = key.split(".")
    if segs[0] != "stage":
        node = recipe
        for s in segs:
            node = getattr(node, s)
        return [node]
    out = []
    for st in recipe.stage:
        if segs[1] not in ("*", st.name) and st.group != segs[1]:
            continue
        node = st
        for s in segs[2:]:
            node = node.get(s) if isinstance(node, dict) else getattr(node, s, None)
            if node is None:
                break
        else:
            out.append(node)
    return out


def test_every_entry_is_complete_and_ids_are_unique() -> None:
    ids = [d.id for d in DIFFERENCES]
    assert len(ids) == len(set(ids))
    for d in DIFFERENCES:
        assert re.fullmatch(r"[a-z0-9_]+", d.id), d.id
        assert d.ours and d.original and d.effect, d.id
        assert SOURCE.search(d.source), f"{d.id}: source must name an original file (and line): {d.source}"
        assert (d.key is None) == (d.faithful is None), d.id


def test_differences_json_for_the_edst_recipe() -> None:
    res = cli("differences", "freetickets_edst_wrn28x10_cifar10", "--json")
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout)
    assert [e["id"] for e in got] == [d.id for d in differences_for("freetickets_edst_wrn28x10_cifar10")]
    assert all(set(e) == {"id", "ours", "original", "source", "effect", "key", "faithful"} for e in got)
    by = {e["id"]: e for e in got}
    assert by["bf16_autocast"]["key"] == "run.precision" and by["bf16_autocast"]["faithful"] == "fp32"
    assert "VITA-Group/FreeTickets main_DST.py:168" in by["bf16_autocast"]["source"]
    assert {"disagreement_offset", "kd_all_pairs", "member_nll_full_test_set", "edst_best_per_phase"} <= set(by)
    assert not any(e["id"] == "grasp_num_classes" for e in got)  # a random-pruning entry


def test_faithful_sets_every_switch_and_records_it() -> None:
    for name in recipe_names():
        for res in load(name, faithful=True):
            r = res.recipe
            assert r.run.faithful
            applies = {d.id: d for d in differences_for(r.name) if d.key is not None}
            assert set(r.run.faithful_applied) <= set(applies), name
            for ident in r.run.faithful_applied:
                d = applies[ident]
                values = resolved_values(r, d.key)
                assert values and all(v == d.faithful for v in values), (name, ident, values)


def test_show_faithful_names_what_it_changed() -> None:
    res = cli("show", "freetickets_edst_wrn28x10_cifar10", "--faithful")
    assert res.returncode == 0, res.stderr
    assert '# --faithful: run.precision = "fp32" (bf16_autocast)' in res.stdout.splitlines()
    assert 'precision = "fp32"' in res.stdout and "faithful = true" in res.stdout
    plain = cli("show", "freetickets_edst_wrn28x10_cifar10")
    assert 'precision = "auto"' in plain.stdout and "faithful" not in plain.stdout


def test_set_wins_over_faithful_and_smoke_composes(tmp_path: Path) -> None:
    r = load("freetickets_edst_wrn28x10_cifar10", ("run.precision=bf16",), smoke=True, faithful=True)[0].recipe
    assert r.run.precision == "bf16" and r.run.faithful and r.run.smoke and r.data.dataset == "digits"


def test_readme_table_is_generated_from_the_entries() -> None:
    text = README.read_text()
    start, end = "<!-- differences:start -->\n", "<!-- differences:end -->"
    assert start in text and end in text
    assert text[text.index(start) + len(start):text.index(end)] == markdown_table()
    res = cli("differences", "--markdown")
    assert res.returncode == 0 and res.stdout == markdown_table()


def test_set_of_a_swept_key_wins_over_the_sweep(tmp_path: Path) -> None:
    raw = {"name": "tiny_sweep", "paper": "demo", "model": {"arch": "cifar_resnet_8"},
           "train": {"epochs": 1}, "stage": [{"name": "train", "method": "train"}],
           "sweep": {"run.seed": [1, 2, 3], "model.width": [0.25, 0.5]}}
    p = write_recipe(tmp_path, raw, "tiny_sweep.toml")
    assert len(load(str(p))) == 6
    got = load(str(p), ("run.seed=9",))
    assert [r.recipe.run.seed for r in got] == [9, 9] and [r.tag for r in got] == ["width0.25", "width0.5"]
    one = load(str(p), ("run.seed=9", "model.width=1.0"))
    assert len(one) == 1 and one[0].tag == "" and one[0].recipe.model.width == 1.0
    res = cli("show", str(p), "--set", "run.seed=9", "--set", "model.width=1.0")
    assert res.returncode == 0 and "sweep point" not in res.stdout and "seed = 9" in res.stdout


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["demo_digits", "suptickets_set_resnet50_cifar10", "earlybird_vgg16_cifar10"])
def test_faithful_runs_finish_and_say_so(tmp_path: Path, recipe: str) -> None:
    """--faithful under --smoke; the default profile's run and record are checked for every recipe in test_smoke."""
    res = load(recipe, smoke=True, faithful=True)[0]
    out = execute(res, root=tmp_path, device="cpu", smoke=True)
    assert out.state == "done", out.error
    status = json.loads((out.run_dir / "status.json").read_text())
    assert status["profile"] == "faithful"
    saved = load(str(out.run_dir / "recipe.toml"))[0].recipe
    assert saved.run.faithful is True
    assert saved.run.faithful_applied == res.recipe.run.faithful_applied
    assert saved.run.faithful_applied == [d.id for d in differences_for(recipe) if d.key is not None]


def test_val_augment_scores_the_held_out_split_through_the_train_transform() -> None:
    import torch

    from engine.data import Augment, DeviceLoader, make_loaders, recipe_data

    raw = {"name": "tiny", "paper": "demo", "run": {"seed": 3},
           "data": {"dataset": "digits", "normalize": "digits", "val_split": 100, "eval_batch_size": 64,
                    "crop_pad": 4, "flip": True},
           "model": {"arch": "cifar_resnet_8"}, "train": {"epochs": 1},
           "stage": [{"name": "train", "method": "train"}]}
    from repro.recipe import validate

    plain, aug = validate(raw, "x"), validate({**raw, "data": {**raw["data"], "val_augment": True}}, "x")
    data = recipe_data(plain)
    cpu = torch.device("cpu")
    _, ev_plain = make_loaders(plain.data, data, cpu, plain.run.seed)
    _, ev_aug = make_loaders(aug.data, data, cpu, aug.run.seed)
    ref = DeviceLoader(data.val, 100, train=False, normalize="digits")
    x_ref, y_ref = next(iter(ref))
    xs, ys = zip(*ev_plain)
    assert torch.equal(torch.cat(xs), x_ref) and torch.equal(torch.cat(ys), y_ref)
    # augmented: every held-out image exactly once (shuffled), each one a crop/flip of its original
    expected = DeviceLoader(data.val, 64, train=True, augment=Augment(crop_pad=4, flip=True), normalize="digits",
                            seed=3, rank=0, world_size=1)
    got = list(ev_aug)
    assert sum(len(y) for _, y in got) == 100 and sorted(torch.cat([y for _, y in got]).tolist()) == sorted(
        y_ref.tolist())
    for (xa, ya), (xb, yb) in zip(got, expected):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert not torch.equal(torch.cat([x for x, _ in got]).sort(0)[0], x_ref.sort(0)[0])


def test_eval_accuracy_batch_mean_reaches_the_trainer(tmp_path: Path) -> None:
    """data.eval_accuracy = "batch_mean" (Early-Bird's test()): the recorded test_acc is the mean of per-batch
    accuracies of the final weights, recomputed here batch by batch (200 images in batches of 64, 64, 64, 8)."""
    import torch

    from engine.data import DeviceLoader
    from engine.io import load_checkpoint
    from engine.models import create_model
    from engine.runlog import read_metrics
    from repro.recipe import validate

    raw = {"name": "tiny", "paper": "demo", "run": {"seed": 3},
           "data": {"dataset": "digits", "normalize": "digits", "batch_size": 64, "eval_batch_size": 64,
                    "train_subset": 256, "test_subset": 200, "eval_accuracy": "batch_mean"},
           "model": {"arch": "cifar_resnet_8", "width": 0.25}, "train": {"epochs": 1},
           "stage": [{"name": "train", "method": "train"}]}
    from repro.recipe import Resolved

    res = Resolved(validate(raw, "x"), "", tmp_path / "x.toml")
    out = execute(res, root=tmp_path, out=str(tmp_path / "run"), device="cpu")
    assert out.state == "done", out.error
    model = create_model("cifar_resnet_8", 10, 0.25)
    model.load_state_dict(load_checkpoint(out.run_dir / "train" / "final.pt")["model"])
    model.eval()
    from engine.data import recipe_data

    data = recipe_data(res.recipe)
    accs, hits, n = [], 0, 0
    with torch.no_grad():
        for x, y in DeviceLoader(data.test, 64, train=False, normalize="digits"):
            right = (model(x).argmax(1) == y).sum().item()
            accs.append(100.0 * right / len(y))
            hits, n = hits + right, n + len(y)
    assert [len(a) for a in [accs]] == [4]
    got = read_metrics(out.run_dir)[-1]["test_acc"]
    assert abs(got - sum(accs) / len(accs)) < 1e-4
    assert abs(sum(accs) / len(accs) - 100.0 * hits / n) > 1e-6  # the two averages differ here
