"""Per-cell expectations and the papers' tables (issue 16): sweep variant axes, cells matched to sweep points,
tolerances, a fake finished sweep rendered in the paper's layout with its claim line, and the plan of cells not run."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from digits_recipes import digits_recipe, write_recipe
from helpers import cli

from engine.config.expect import ExpectConfig, lookup, matches
from repro.recipe import RecipeError, load, recipe_names, to_toml
from repro.report import report_rows
from repro.rundir import list_runs
from repro.tables import paper_tables, plan, tables_index, tables_json, tables_markdown

C10 = {"tag": "c10", "data.dataset": "digits", "data.normalize": "digits"}
C100 = {"tag": "c100", "data.dataset": "digits", "data.normalize": "cifar10"}


def sweep_recipe(**expect: Any) -> dict[str, Any]:
    """A sweep in the shape of Sup-tickets' tables: dataset variants x density x method variants, and one table."""
    raw = digits_recipe(name="tbl", paper="suptickets", analyses=[],
                        train={"sparse": {"init": "ERK", "density": 0.05}},
                        stage=[{"name": "main", "method": "fix"}])
    raw["sweep"] = {
        "dataset": [C10, C100],
        "train.sparse.density": [0.05, 0.1],
        "method": [{"tag": "erk", "train.sparse.init": "ERK"},
                   {"tag": "uni", "train.sparse.init": "uniform", "smoke": {"train.epochs": 1}}],
    }
    cols = [{"label": f"{d} {s}%", "match": {"dataset": d, "train.sparse.density": round(1 - s / 100, 2)}}
            for d in ("c10", "c100") for s in (95, 90)]
    raw["expect"] = {"source": "test", "tolerance": 0.3, "table": [{
        "id": "t2", "title": "Table 2", "metric": "test_acc", "columns": cols,
        "rows": [{"label": "ERK", "match": {"method": "erk"}, "values": [94.0, 94.5, 70.0, math.nan],
                  "std": [0.1, 0.2, 0.5, 0.0]},
                 {"label": "Uniform", "match": {"method": "uni"}, "values": [93.0, 94.6, 69.0, 72.0], "std": 0.05}],
        "claims": [{"says": "ERK beats uniform", "better": ["ERK"], "worse": ["Uniform"]}]}], **expect}
    return raw


def write(folder: Path, raw: dict[str, Any]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return write_recipe(folder, raw, f"{raw['name']}.toml")


def test_variant_axes_expand_record_their_point_and_pin(tmp_path: Path) -> None:
    path = write(tmp_path, sweep_recipe())
    points = load(str(path))
    assert len(points) == 2 * 2 * 2
    first = points[0].recipe
    assert first.run.point == {"dataset": "c10", "train.sparse.density": 0.05, "method": "erk"}
    assert points[0].tag == "c10-density0.05-erk"
    assert {p.recipe.train.sparse.init for p in points} == {"ERK", "uniform"}
    assert {p.recipe.data.normalize for p in points} == {"digits", "cifar10"}
    (tmp_path / "back.toml").write_text(to_toml(first))
    back = load(str(tmp_path / "back.toml"))[0].recipe
    assert back.run.point == first.run.point  # recipe.toml keeps the point (what the report matches runs by)
    pinned = load(str(path), sets=["method=uni", "train.sparse.density=0.1"])
    assert [(p.recipe.run.point, p.recipe.train.sparse.init) for p in pinned] == [
        ({"dataset": "c10", "method": "uni"}, "uniform"), ({"dataset": "c100", "method": "uni"}, "uniform")]
    # --smoke: as many points as the longest axis, each value once; a variant's smoke overrides apply
    smoke = load(str(path), smoke=True)
    assert [p.recipe.run.point["method"] for p in smoke] == ["erk", "uni"]
    assert [p.recipe.stage[0].epochs for p in smoke] == [2, 1]
    with pytest.raises(RecipeError) as e:
        load(str(path), sets=["method=unif"])
    assert e.value.lines == ["--set method=unif: no variant 'unif' in sweep.method; did you mean 'uni'?"]


def test_bad_variants_and_unmatched_cells_are_one_line_each(tmp_path: Path) -> None:
    raw = sweep_recipe()
    raw["sweep"]["method"][1] = {"train.sparse.init": "uniform"}
    with pytest.raises(RecipeError) as e:
        load(str(write(tmp_path, raw)))
    assert e.value.lines == [f"{tmp_path}/tbl.toml: sweep.method.1.tag: every variant needs a tag (a non-empty "
                             "string)"]
    raw = sweep_recipe()
    raw["expect"]["table"][0]["rows"][1]["match"] = {"method": "uniform"}
    raw["expect"]["table"][0]["columns"][0]["match"]["train.sparse.densty"] = 0.05
    with pytest.raises(RecipeError) as e:
        load(str(write(tmp_path, raw)))
    assert e.value.lines == [
        f"{tmp_path}/tbl.toml: expect.table.0.rows.0: ERK / c10 95%: 'train.sparse.densty' is neither a sweep axis "
        "nor a recipe key",
        f"{tmp_path}/tbl.toml: expect.table.0.rows.1: Uniform / c10 95%: 'train.sparse.densty' is neither a sweep "
        "axis nor a recipe key",
        f"{tmp_path}/tbl.toml: expect.table.0.rows.1: Uniform / c10 90%: { '{' } method = 'uniform', dataset = "
        "'c10', train.sparse.density = 0.1 } selects no sweep point",
        f"{tmp_path}/tbl.toml: expect.table.0.rows.1: Uniform / c100 95%: { '{' } method = 'uniform', dataset = "
        "'c100', train.sparse.density = 0.05 } selects no sweep point",
        f"{tmp_path}/tbl.toml: expect.table.0.rows.1: Uniform / c100 90%: { '{' } method = 'uniform', dataset = "
        "'c100', train.sparse.density = 0.1 } selects no sweep point",
    ]
    raw = sweep_recipe()
    raw["expect"]["table"][0]["rows"][0]["values"] = [1.0]
    with pytest.raises(RecipeError) as e:
        load(str(write(tmp_path, raw)))
    assert e.value.lines == [f"{tmp_path}/tbl.toml: expect.table.0: row 'ERK' has 1 values for 4 columns"]


def test_cells_tolerance_and_matching() -> None:
    exp = ExpectConfig.model_validate({
        "tolerance": {"test_acc": 0.3, "test_acc@train": 1.0},
        "cell": [{"match": {"train.sparse.density": 0.05, "stage.main.method": "granet"},
                  "metrics": {"test_acc": 77.47, "test_acc@train": 70.0}, "std": 0.22}]})
    cells = exp.cells()
    # max(2 x std, the metric's tolerance): 0.44 beats 0.3; 1.0 beats 0.44
    assert [(c.metric, c.paper, c.tolerance) for c in cells] == [("test_acc", 77.47, 0.44),
                                                                 ("test_acc@train", 70.0, 1.0)]
    recipe = {"train": {"sparse": {"density": 0.05000000000001}},
              "stage": [{"name": "pre", "method": "train"}, {"name": "main", "method": "granet"}]}
    assert lookup(recipe, "stage.main.method") == "granet" and lookup(recipe, "stage.1.method") == "granet"
    assert matches(cells[0].match, recipe, {})
    assert not matches(cells[0].match, {**recipe, "stage": [{"name": "main", "method": "dst"}]}, {})
    assert not matches({"run.seed": True}, {"run": {"seed": 1}}, {})  # a boolean is not the number 1
    assert matches({"method": "g"}, recipe, {"method": "g"})  # a sweep axis compares with the run's point
    with pytest.raises(ValueError, match="unknown stage metric 'ensemble_acc'"):
        ExpectConfig.model_validate({"metrics": {"ensemble_acc@main": 1.0}})


def fake_run(root: Path, recipe_path: Path, point_sets: list[str], acc: float, run_id: str,
             state: str = "done") -> None:
    """A finished full-size run directory of one sweep point whose last test evaluation is `acc`."""
    res = load(str(recipe_path), sets=point_sets)
    assert len(res) == 1
    run = root / res[0].recipe.name / run_id
    run.mkdir(parents=True)
    (run / "recipe.toml").write_text(to_toml(res[0].recipe))
    (run / "status.json").write_text(json.dumps({"state": state, "stage": "main", "progress": 1.0,
                                                 "tag": res[0].tag}))
    (run / "metrics.jsonl").write_text(json.dumps({"stage": "main", "epoch": 3, "test_acc": acc,
                                                   "test_loss": 0.5}) + "\n")


def test_a_fake_finished_sweep_renders_in_the_papers_layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    recipes, root = tmp_path / "recipes", tmp_path / "runs"
    path = write(recipes, sweep_recipe())
    env = {"REPRO_RECIPES": str(recipes), "REPRO_ROOT": str(root)}
    fake_run(root, path, ["dataset=c10", "train.sparse.density=0.05", "method=erk"], 94.2, "r1")
    fake_run(root, path, ["dataset=c10", "train.sparse.density=0.05", "method=uni"], 93.5, "r2")
    fake_run(root, path, ["dataset=c10", "train.sparse.density=0.1", "method=erk"], 95.0, "r3")
    fake_run(root, path, ["dataset=c10", "train.sparse.density=0.1", "method=erk"], 95.4, "r3b")  # a second seed
    fake_run(root, path, ["dataset=c10", "train.sparse.density=0.1", "method=uni"], 94.0, "r4")
    fake_run(root, path, ["dataset=c100", "train.sparse.density=0.1", "method=erk"], 71.0, "r5")
    fake_run(root, path, ["dataset=c100", "train.sparse.density=0.1", "method=uni"], 73.0, "r6", state="failed")
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    t = tables_json("suptickets", *paper_tables("suptickets", list_runs(root)))["tables"][0]
    assert t["columns"] == ["c10 95%", "c10 90%", "c100 95%", "c100 90%"] and t["cells"] == 8
    cells = {(r["label"], c["column"]): c for r in t["rows"] for c in r["cells"]}
    # 94.2 vs 94.0 +- max(2 x 0.1, 0.3): within; 93.5 vs 93.0 +- max(2 x 0.05, 0.3): outside
    assert cells[("ERK", "c10 95%")]["state"] == "within" and cells[("ERK", "c10 95%")]["tolerance"] == 0.3
    assert cells[("Uniform", "c10 95%")]["state"] == "outside"
    assert cells[("Uniform", "c10 95%")]["delta"] == pytest.approx(0.5)
    # two runs of one point: their mean, 95.2, is 0.7 off 94.5, outside max(2 x 0.2, 0.3) = 0.4
    assert cells[("ERK", "c10 90%")]["ours"] == pytest.approx(95.2)
    assert cells[("ERK", "c10 90%")]["runs"] == ["r3", "r3b"]
    assert cells[("ERK", "c10 90%")]["tolerance"] == pytest.approx(0.4)
    assert cells[("ERK", "c10 90%")]["state"] == "outside"
    assert cells[("ERK", "c100 90%")]["paper"] is None and cells[("ERK", "c100 90%")]["state"] == "ours only"
    assert cells[("Uniform", "c100 90%")]["state"] == "not run"  # its run failed
    assert cells[("ERK", "c100 95%")]["state"] == "not run"
    # ERK > uniform: ours in c10 95% (94.2 > 93.5) and c10 90% (95.2 > 94.0): 2 of 2; the paper's in 2 of 3 columns
    # (c10 95% and c100 95%; not c10 90%, 94.5 < 94.6; c100 90% has no ERK number)
    assert t["claims"] == [{"says": "ERK beats uniform", "better": ["ERK"], "worse": ["Uniform"],
                            "ours_holds": 2, "ours_of": 2, "paper_holds": 2, "paper_of": 3}]
    md = tables_markdown("suptickets", *paper_tables("suptickets", list_runs(root)))
    assert "| ERK | 94.20 / 94.00 ok | 95.20 / 94.50 off | - / 70.00 | 71.00 / - |" in md.splitlines()
    assert "- ERK beats uniform: ours 2 of 2 cells (paper 2 of 3)" in md.splitlines()
    text = cli("report", "--paper", "suptickets", env={**env, "COLUMNS": "200"})
    assert text.returncode == 0, text.stderr
    assert "94.20 / 94.00 ok" in text.stdout and "93.50 / 93.00 off" in text.stdout
    assert "71.00 / - " in text.stdout and "- / 70.00" in text.stdout
    assert "ERK beats uniform: ours 2 of 2 cells (paper 2 of 3)" in text.stdout
    commands = plan("suptickets", *paper_tables("suptickets", list_runs(root)))
    todo = {"not_run": sum(len(c["cells"]) for c in commands), "commands": commands}
    assert todo["not_run"] == 3
    assert [c["command"] for c in todo["commands"]] == [
        "repro run tbl --set method=erk --set dataset=c100 --set train.sparse.density=0.05",
        "repro run tbl --set method=uni --set dataset=c100 --set train.sparse.density=0.05",
        "repro run tbl --set method=uni --set dataset=c100 --set train.sparse.density=0.1"]
    # the per-run report names the cell each run fills
    rows = report_rows(list_runs(root))
    r1 = [r for r in rows if r["run_id"] == "r1"]
    assert [(r["metric"], r["paper"], r["reproduced"]) for r in r1] == [("test_acc", 94.0, 94.2)]
    assert r1[0]["source"] == "t2 ERK / c10 95%: test"


def test_unknown_paper_is_one_line() -> None:
    res = cli("report", "--paper", "suptickets_")
    assert res.returncode == 2
    assert res.stderr.strip().splitlines()[-1] == "--paper: unknown paper 'suptickets_'; did you mean 'suptickets'?"


def test_readme_lists_every_table_the_recipes_carry() -> None:
    text = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    start, end = "<!-- tables:start -->\n", "<!-- tables:end -->"
    assert text[text.index(start) + len(start):text.index(end)] == tables_index(), (
        "regenerate the README's list with `repro report --index`")


@pytest.mark.parametrize("name", [n for n in recipe_names() if load(n)[0].recipe.expect.cells()])
def test_every_shipped_cell_selects_exactly_one_sweep_point(name: str) -> None:
    """Load time refuses a cell that selects nothing; two points under one cell would average different settings."""
    points = [(p.recipe.model_dump(), p.recipe.run.point) for p in load(name)]
    for c in load(name)[0].recipe.expect.cells():
        hits = sum(matches(c.match, d, pt) for d, pt in points)
        assert hits == 1, f"{c.index} {c.row} / {c.column}: selects {hits} points"
