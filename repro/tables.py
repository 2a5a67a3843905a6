"""The papers' tables in their own layout: every `[[expect.table]]` of a paper's recipes (tables of one id merged),
each cell "ours / paper" from the finished runs its match selects, the table's claims checked on our numbers, and
the commands that would fill the cells not run yet."""

from __future__ import annotations

import math
import shlex
from dataclasses import dataclass, field
from typing import Any

from engine.config import names
from engine.config.base import suggest
from engine.config.expect import Cell, ExpectClaim, matches
from repro.recipe import RecipeError, load, load_resolved, parse_value, read_toml, recipe_names, recipes_dir
from repro.report import run_metrics
from repro.rundir import RunInfo

_UNREADABLE = (OSError, ValueError, KeyError, TypeError, RecipeError)


@dataclass
class CellResult:
    """One cell of a paper table with our number beside the paper's."""

    recipe: str
    cell: Cell
    ours: float | None = None
    runs: list[str] = field(default_factory=list)

    @property
    def state(self) -> str:
        """'within', 'outside' (of tolerance), 'ours only' (the paper prints no number) or 'not run'."""
        if self.ours is None:
            return "not run"
        if self.cell.paper is None:
            return "ours only"
        return "within" if abs(self.ours - self.cell.paper) <= self.cell.tolerance else "outside"


@dataclass
class PaperTable:
    """One of a paper's tables: rows and columns in the paper's order, cells keyed (row, column)."""

    id: str
    title: str
    source: str
    approximate: bool
    rows: list[str] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)
    cells: dict[tuple[str, str], CellResult] = field(default_factory=dict)
    claims: list[ExpectClaim] = field(default_factory=list)


def paper_recipes(paper: str) -> list[str]:
    """The shipped recipes of one paper, by name."""
    known_papers = [p for p in names.PAPERS if p != "demo"]
    if paper not in known_papers:
        raise RecipeError([f"--paper: unknown paper '{paper}'{suggest(paper, known_papers)}"])
    out = []
    for name in recipe_names():
        raw = read_toml(recipes_dir() / f"{name}.toml")
        if raw.get("paper") == paper:
            out.append(name)
    return out


def _run_data(runs: list[RunInfo], wanted: set[str]) -> list[tuple[str, str, dict[str, Any], dict[str, Any],
                                                                  dict[str, float]]]:
    """(recipe, run id, resolved recipe dump, sweep point, metrics) of each finished full-size run of `wanted`."""
    out = []
    for info in runs:
        if info.recipe not in wanted or info.state != "done" or info.smoke:
            continue
        try:
            recipe = load_resolved(info.path / "recipe.toml")
            got = run_metrics(info.path)
        except _UNREADABLE:  # `repro report` names damaged runs; here they simply fill no cell
            continue
        out.append((info.recipe, info.run_id, recipe.model_dump(), recipe.run.point, got))
    return out


def paper_tables(paper: str, runs: list[RunInfo]) -> tuple[list[PaperTable], list[CellResult]]:
    """The paper's tables (merged across its recipes by id) and its free cells, each filled from `runs`: a cell's
    number is the mean over the finished full-size runs it selects."""
    names_ = paper_recipes(paper)
    data = _run_data(runs, set(names_))
    tables: dict[str, PaperTable] = {}
    free: list[CellResult] = []
    for name in names_:
        expect = load(name)[0].recipe.expect
        for t in expect.table:
            pt = tables.setdefault(t.id, PaperTable(t.id, t.title, t.source or expect.source, t.approximate))
            pt.rows += [r.label for r in t.rows if r.label not in pt.rows]
            pt.columns += [c.label for c in t.columns if c.label not in pt.columns]
            pt.claims += [c for c in t.claims if c not in pt.claims]
        for cell in expect.cells():
            res = CellResult(name, cell)
            hits = [(run_id, got[cell.metric]) for rec, run_id, dump, point, got in data
                    if rec == name and cell.metric in got and matches(cell.match, dump, point)]
            if hits:
                res.runs = [h[0] for h in hits]
                res.ours = sum(h[1] for h in hits) / len(hits)
            if cell.table:
                tables[cell.table].cells.setdefault((cell.row, cell.column), res)
            else:
                free.append(res)
    return list(tables.values()), free


def claim_counts(table: PaperTable, claim: ExpectClaim) -> dict[str, int]:
    """Columns where better > worse, on our numbers and on the paper's, each out of the columns both have."""
    out = {"ours_holds": 0, "ours_of": 0, "paper_holds": 0, "paper_of": 0}
    for better, worse in zip(claim.better, claim.worse):
        for col in table.columns:
            b, w = table.cells.get((better, col)), table.cells.get((worse, col))
            if b is None or w is None:
                continue
            if b.ours is not None and w.ours is not None:
                out["ours_of"] += 1
                out["ours_holds"] += b.ours > w.ours
            if b.cell.paper is not None and w.cell.paper is not None:
                out["paper_of"] += 1
                out["paper_holds"] += b.cell.paper > w.cell.paper
    return out


def claim_line(claim: ExpectClaim, counts: dict[str, int]) -> str:
    """'Sup-tickets improves its base method: ours 17 of 18 cells (paper 17 of 18)'."""
    ours = (f"ours {counts['ours_holds']} of {counts['ours_of']} cells" if counts["ours_of"]
            else "ours: not run yet")
    return f"{claim.says}: {ours} (paper {counts['paper_holds']} of {counts['paper_of']})"


def _num(v: float | None) -> str:
    return "-" if v is None or math.isnan(v) else f"{v:.2f}"


MARKS = {"within": "ok", "outside": "off", "ours only": "", "not run": ""}


def cell_text(res: CellResult | None) -> str:
    """'94.62 / 94.59 ok': ours / paper and the tolerance mark ('off' outside it); '' where the table has no cell."""
    if res is None:
        return ""
    mark = MARKS[res.state]
    return f"{_num(res.ours)} / {_num(res.cell.paper)}" + (f" {mark}" if mark else "")


def tables_json(paper: str, tables: list[PaperTable], free: list[CellResult]) -> dict[str, Any]:
    """`repro report --paper NAME --json`: every table, row and cell, the claims, and the free cells."""
    def cell_json(res: CellResult) -> dict[str, Any]:
        c = res.cell
        return {"column": c.column, "row": c.row, "recipe": res.recipe, "match": c.match, "metric": c.metric,
                "paper": c.paper, "std": c.std, "tolerance": c.tolerance, "ours": res.ours,
                "delta": None if res.ours is None or c.paper is None else res.ours - c.paper,
                "runs": res.runs, "state": res.state}

    out = []
    for t in tables:
        rows = [{"label": r, "cells": [cell_json(t.cells[(r, c)]) for c in t.columns if (r, c) in t.cells]}
                for r in t.rows]
        claims = [{"says": cl.says, "better": cl.better, "worse": cl.worse, **claim_counts(t, cl)}
                  for cl in t.claims]
        states = [res.state for res in t.cells.values()]
        out.append({"id": t.id, "title": t.title, "source": t.source, "approximate": t.approximate,
                    "columns": t.columns, "rows": rows, "claims": claims, "cells": len(states),
                    "run": sum(s != "not run" for s in states), "within": states.count("within"),
                    "outside": states.count("outside")})
    return {"paper": paper, "tables": out, "cells": [cell_json(r) for r in free]}


def tables_markdown(paper: str, tables: list[PaperTable], free: list[CellResult]) -> str:
    """One paper's section of REPORT.md: each table as the paper prints it, each cell 'ours / paper' and its mark."""
    lines = [f"## {paper}", ""]
    if not tables and not free:
        return "\n".join(lines + ["No table of this paper is in a recipe.", ""])
    for t in tables:
        n = len(t.cells)
        run = sum(r.state != "not run" for r in t.cells.values())
        within = sum(r.state == "within" for r in t.cells.values())
        approx = " Approximate values (read off a plot or a script)." if t.approximate else ""
        lines += [f"### {t.title or t.id}", "", f"{t.source}.{approx} {run} of {n} cells run, {within} within "
                  "tolerance. Each cell: ours / paper; ok = within tolerance, off = outside, - = not run yet.", "",
                  "| | " + " | ".join(t.columns) + " |", "|---" * (len(t.columns) + 1) + "|"]
        for r in t.rows:
            lines.append(f"| {r} | " + " | ".join(cell_text(t.cells.get((r, c))) for c in t.columns) + " |")
        lines.append("")
        lines += [f"- {claim_line(cl, claim_counts(t, cl))}" for cl in t.claims]
        lines += [""] if t.claims else []
    if free:
        lines += ["### Other cells", "", "| recipe | cell | metric | ours / paper |", "|---|---|---|---|"]
        lines += [f"| {r.recipe} | {r.cell.row or '-'} | {r.cell.metric} | {cell_text(r)} |" for r in free]
        lines.append("")
    return "\n".join(lines)


def _set_arg(key: str, value: Any) -> str:
    """`--set key=value`, quoted so that the shell and parse_value give back exactly `value`."""
    text = str(value).lower() if isinstance(value, bool) else str(value)
    if isinstance(value, str) and parse_value(text) != value:
        text = '"' + value + '"'
    return "--set " + shlex.quote(f"{key}={text}")


def plan(paper: str, tables: list[PaperTable], free: list[CellResult]) -> list[dict[str, Any]]:
    """The cells not run yet, grouped by the command that fills them: `repro run RECIPE --set AXIS=VALUE ...` for
    the sweep axes a cell's match pins (the other axes run whole)."""
    axes = {}
    commands: dict[str, dict[str, Any]] = {}
    pending = [(t.id, res) for t in tables for res in t.cells.values()] + [("", r) for r in free]
    for where, res in pending:
        if res.state != "not run":
            continue
        if res.recipe not in axes:
            axes[res.recipe] = list(load(res.recipe)[0].recipe.run.point)
        sets = [_set_arg(k, v) for k, v in res.cell.match.items() if k in axes[res.recipe]]
        cmd = " ".join(["repro run", res.recipe, *sets])
        entry = commands.setdefault(cmd, {"command": cmd, "recipe": res.recipe, "cells": []})
        entry["cells"].append(" / ".join(x for x in (where, res.cell.row, res.cell.column) if x) or res.cell.metric)
    return list(commands.values())


def paper_names_with_tables() -> list[str]:
    """Papers whose recipes hold at least one table or cell (the sections of REPORT.md)."""
    out = []
    for paper in names.PAPERS:
        if paper == "demo":
            continue
        for name in paper_recipes(paper):
            expect = read_toml(recipes_dir() / f"{name}.toml").get("expect", {})
            if isinstance(expect, dict) and (expect.get("table") or expect.get("cell")):
                out.append(paper)
                break
    return out


def tables_index() -> str:
    """The README's list of the papers' tables: per table its cells, how many carry a paper number, its recipes."""
    lines = ["| paper | table | cells | with a paper number | recipes |", "|---|---|---|---|---|"]
    for paper in paper_names_with_tables():
        found: dict[str, dict[str, Any]] = {}
        for name in paper_recipes(paper):
            expect = load(name)[0].recipe.expect
            titles = {t.id: t.title or t.id for t in expect.table}
            for cell in expect.cells():
                key = cell.table or "(cells)"
                entry = found.setdefault(key, {"title": titles.get(cell.table, "other cells"), "cells": set(),
                                               "numbers": set(), "recipes": []})
                where = (cell.row, cell.column, cell.metric, cell.index)
                entry["cells"].add(where)
                if cell.paper is not None:
                    entry["numbers"].add(where)
                if name not in entry["recipes"]:
                    entry["recipes"].append(name)
        for entry in found.values():
            shown = ", ".join(f"`{r}`" for r in entry["recipes"][:3]) + (
                f" and {len(entry['recipes']) - 3} more" if len(entry["recipes"]) > 3 else "")
            lines.append(f"| {paper} | {entry['title']} | {len(entry['cells'])} | {len(entry['numbers'])} | {shown} |")
    return "\n".join(lines) + "\n"
