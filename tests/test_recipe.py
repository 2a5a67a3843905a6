"""Recipe loading and validation: exact error lines, --set typing, smoke, sweeps."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from digits_recipes import write_recipe
from helpers import cli

from repro.recipe import (
    RecipeError,
    apply_smoke,
    expand_sweep,
    load,
    load_resolved,
    parse_value,
    recipe_names,
    set_dotted,
    to_toml,
)

BASE = {
    "name": "t_recipe",
    "paper": "demo",
    "data": {"dataset": "digits"},
    "model": {"arch": "cifar_resnet_20"},
    "train": {"epochs": 3, "optimizer": {"lr": 0.1}},
    "stage": [{"name": "pre", "method": "train", "save_every": 1},
              {"name": "post", "method": "train", "epochs": 2, "init_from": "pre@2"}],
}


def errors(path: Path, sets: tuple[str, ...] = ()) -> list[str]:
    with pytest.raises(RecipeError) as e:
        load(str(path), sets)
    return e.value.lines


def test_train_defaults_merge_into_stages(tmp_path: Path) -> None:
    r = load(str(write_recipe(tmp_path, BASE)))[0].recipe
    assert [s.epochs for s in r.stage] == [3, 2]
    assert r.stage[1].optimizer.lr == 0.1 and r.stage[0].save_every == 1
    assert r.stage[1].init_ref() == ("pre", 2)


def test_unknown_key_with_suggestion(tmp_path: Path) -> None:
    raw = {**BASE, "data": {"dataset": "digits", "batch_sise": 3}}
    p = write_recipe(tmp_path, raw)
    assert errors(p) == [f"{p}: data.batch_sise: unknown key; did you mean 'batch_size'?"]


def test_wrong_type_and_range(tmp_path: Path) -> None:
    raw = {**BASE, "train": {"epochs": 3, "optimizer": {"lr": -0.1}}}
    p = write_recipe(tmp_path, raw)
    assert errors(p) == [f"{p}: train.optimizer.lr: input should be greater than 0 (got -0.1)"]
    p2 = write_recipe(tmp_path, {**BASE, "run": {"seed": "one"}}, "r2.toml")
    assert errors(p2) == [f"{p2}: run.seed: input should be a valid integer (got 'one')"]


def test_unknown_arch_dataset_method(tmp_path: Path) -> None:
    raw = {**BASE, "model": {"arch": "cifar_resnet_2O"}}
    p = write_recipe(tmp_path, raw)
    (line,) = errors(p)
    assert line.startswith(f"{p}: model.arch: unknown arch 'cifar_resnet_2O'")
    p = write_recipe(tmp_path, {**BASE, "data": {"dataset": "cifar11"}})
    assert errors(p) == [f"{p}: data.dataset: unknown dataset 'cifar11'; did you mean 'cifar10'?"]
    stages = [{"name": "a", "method": "trian", "epochs": 1}]
    p = write_recipe(tmp_path, {**BASE, "stage": stages})
    assert errors(p) == [f"{p}: stage.0.method: unknown method 'trian'; did you mean 'train'?"]


def test_init_from_checks(tmp_path: Path) -> None:
    stages = [{"name": "pre", "method": "train", "save_every": 2},
              {"name": "post", "method": "train", "init_from": "pre@1"}]
    p = write_recipe(tmp_path, {**BASE, "stage": stages})
    msg = "stage 'pre' saves no checkpoint at epoch 1 (epochs=3, save_every=2)"
    assert errors(p) == [f"{p}: stage.1.init_from: {msg}"]
    stages = [{"name": "pre", "method": "train"}, {"name": "post", "method": "train", "init_from": "prr"}]
    p = write_recipe(tmp_path, {**BASE, "stage": stages})
    assert errors(p) == [f"{p}: stage.1.init_from: 'prr' is not an earlier stage; did you mean 'pre'?"]


def test_malformed_toml_and_missing_file(tmp_path: Path) -> None:
    p = tmp_path / "bad.toml"
    p.write_text("name = 'x'\nmodel = {arch = \n")
    (line,) = errors(p)
    assert line.startswith(f"{p}: (toml): ") and "line 2" in line
    with pytest.raises(RecipeError) as e:
        load(str(tmp_path / "nope.toml"))
    assert e.value.lines == [f"{tmp_path / 'nope.toml'}: file not found"]


def test_set_overrides_are_type_checked(tmp_path: Path) -> None:
    p = write_recipe(tmp_path, BASE)
    r = load(str(p), ("train.epochs=5", "model.arch=wrn-16-8", "stage.post.optimizer.lr=0.01"))[0].recipe
    assert [s.epochs for s in r.stage] == [5, 2] and r.model.arch == "wrn-16-8"
    assert r.stage[1].optimizer.lr == 0.01 and r.stage[0].optimizer.lr == 0.1
    assert errors(p, ("run.seed=abc",)) == ["--set: run.seed: input should be a valid integer (got 'abc')"]
    assert errors(p, ("stage.nostage.epochs=1",)) == [
        "--set: stage.nostage.epochs: no stage named 'nostage'; choose from pre, post"]
    assert parse_value("[1, 2]") == [1, 2] and parse_value("true") is True and parse_value("x-y") == "x-y"


def test_set_dotted_by_index_and_name() -> None:
    raw = {"stage": [{"name": "a"}, {"name": "b"}]}
    set_dotted(raw, "stage.1.epochs", 4)
    set_dotted(raw, "stage.a.params.x", 1)
    assert raw["stage"] == [{"name": "a", "params": {"x": 1}}, {"name": "b", "epochs": 4}]


def test_smoke_profile_caps_and_rewrites_refs() -> None:
    raw = {"model": {"arch": "wrn-28-10"}, "data": {"dataset": "cifar100", "val_split": 5000},
           "train": {"epochs": 200}, "stage": [{"name": "pre", "save_every": 40}, {"name": "fge", "epochs": 40,
                                                                                   "init_from": "pre@160"}]}
    apply_smoke(raw)
    assert raw["data"]["dataset"] == "digits" and raw["data"]["val_split"] == 0
    assert raw["model"]["width"] == 0.125 and raw["train"]["epochs"] == 2
    assert raw["stage"][1]["epochs"] == 2 and raw["stage"][1]["init_from"] == "pre@2"


def test_sweep_expands_cartesian() -> None:
    raw = {"sweep": {"run.seed": [1, 2], "model.arch": ["cifar_resnet_20", "cifar_resnet_32"]}, "run": {}}
    out = expand_sweep(raw, "x.toml")
    assert [t for t, _ in out] == ["seed1-archcifar_resnet_20", "seed1-archcifar_resnet_32",
                                   "seed2-archcifar_resnet_20", "seed2-archcifar_resnet_32"]
    assert out[3][1]["run"]["seed"] == 2 and out[3][1]["model"]["arch"] == "cifar_resnet_32"


def test_resolved_toml_round_trips(tmp_path: Path) -> None:
    r = load(str(write_recipe(tmp_path, BASE)), ("run.seed=7",))[0].recipe
    path = tmp_path / "resolved.toml"
    path.write_text(to_toml(r))
    again = load_resolved(path)
    assert again == r


def test_every_shipped_recipe_validates() -> None:
    names = recipe_names()
    assert "demo_digits" in names
    for name in names:
        for res in load(name) + load(name, smoke=True):
            assert res.recipe.name == name


def _mutate(raw: dict, rng: random.Random) -> dict:
    """Replace a random leaf (or table) anywhere in the recipe with a random wrong value."""
    import copy

    raw = copy.deepcopy(raw)
    node, path = raw, []
    while isinstance(node, (dict, list)) and node and rng.random() < 0.7:
        key = rng.choice(list(node)) if isinstance(node, dict) else rng.randrange(len(node))
        path.append((node, key))
        node = node[key]
    if not path:
        return {"oops": 1}
    parent, key = path[-1]
    choice = rng.random()
    values = [0, -1, 1.5e9, -0.5, "", "nonsense", [1, "a"], {"k": "v"}, True, 3, 0.0]
    if choice < 0.6:
        parent[key] = rng.choice(values)
    elif choice < 0.8 and isinstance(parent, dict):
        del parent[key]
    elif isinstance(parent, dict):
        parent[f"{key}x"] = parent.pop(key)
    return raw


def test_fuzzed_recipes_never_traceback(tmp_path: Path) -> None:
    """Random mutations of a valid recipe either load or give `FILE: ...` lines; never another exception."""
    rng = random.Random(0)
    for _ in range(300):
        p = write_recipe(tmp_path, _mutate(BASE, rng), "fuzz.toml")
        try:
            load(str(p))
        except RecipeError as e:
            assert e.lines and all(line.startswith(f"{p}: ") for line in e.lines), e.lines


def test_cli_validate_exit_codes(tmp_path: Path) -> None:
    good = write_recipe(tmp_path, BASE, "good.toml")
    bad = write_recipe(tmp_path, {**BASE, "model": {"arch": "wrn-28-10", "depth": 3}}, "bad.toml")
    ok = cli("validate", str(good))
    assert ok.returncode == 0, ok.stderr
    res = cli("validate", str(good), str(bad))
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [f"{bad}: model.depth: unknown key; choose from arch, width, conv_init"]
    assert "Traceback" not in res.stderr
