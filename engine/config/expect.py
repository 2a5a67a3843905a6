"""`[expect]`: the paper's numbers a recipe should reproduce — headline metrics, cells keyed by sweep point, and
whole tables in the paper's layout (rows = methods, columns = settings), each cell matched to the runs it covers.

A `match` maps keys to values: a key that is a sweep axis compares with the run's sweep point (`run.point`, a
variant axis by its tag); any other key is a dotted path into the resolved recipe (`stage.NAME.x` or `stage.0.x`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import AfterValidator, Field, PlainValidator, field_validator, model_validator

from engine.config import names
from engine.config.base import Strict, known

STAGE_METRICS = ("test_acc", "test_error", "test_nll", "best_test_acc", "test_acc5")  # the ones `@STAGE` may qualify


def check_metric(name: str) -> str:
    """A metric [expect] may name: one of names.METRICS, or `M@STAGE` (M's value in stage STAGE)."""
    base, at, stage = name.partition("@")
    if at:
        known(base, STAGE_METRICS, "stage metric")
        if not stage:
            raise ValueError(f"metric '{name}' names no stage after '@'")
        return name
    return known(name, names.METRICS, "metric")


def _number(x: Any, what: str) -> float:
    if isinstance(x, bool) or not isinstance(x, (int, float)) or x < 0:
        raise ValueError(f"{what} must be a number >= 0 (got {x!r})")
    return float(x)


def _per_metric(v: Any, what: str) -> float | dict[str, float]:
    """One number >= 0, or a table metric -> number (tolerances, stds)."""
    if isinstance(v, dict):
        for k in v:
            check_metric(k)
        return {k: _number(x, f"{what} of '{k}'") for k, x in v.items()}
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return _number(v, what)
    raise ValueError(f"must be a number (for every metric) or a table of metric = {what} (got {v!r})")


def _metric_table(v: dict[str, float]) -> dict[str, float]:
    for k in v:
        check_metric(k)
    return v


# metric name -> number, every name checked; one number or a table per metric (a std, a tolerance)
Metrics = Annotated[dict[str, float], AfterValidator(_metric_table)]
Std = Annotated[float | dict[str, float], PlainValidator(lambda v: _per_metric(v, "std"))]
Tolerance = Annotated[float | dict[str, float], PlainValidator(lambda v: _per_metric(v, "tolerance"))]


def _is_nan(x: float) -> bool:
    return isinstance(x, float) and math.isnan(x)


# ---- matching ---------------------------------------------------------------------------------------------
MISSING = object()


def lookup(recipe: dict[str, Any], key: str) -> Any:
    """The value at dotted `key` in a recipe dump (list items by index or by their `name`); MISSING if absent."""
    node: Any = recipe
    for seg in key.split("."):
        if isinstance(node, dict):
            node = node.get(seg, MISSING)
        elif isinstance(node, list):
            if seg.isdigit() and int(seg) < len(node):
                node = node[int(seg)]
            else:
                node = next((it for it in node if isinstance(it, dict) and it.get("name") == seg), MISSING)
        else:
            return MISSING
        if node is MISSING:
            return MISSING
    return node


def same(a: Any, b: Any) -> bool:
    """Equal values; numbers (not booleans) to a relative 1e-9."""
    num = (int, float)
    if isinstance(a, num) and isinstance(b, num) and not isinstance(a, bool) and not isinstance(b, bool):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return type(a) is type(b) and a == b


def matches(match: dict[str, Any], recipe: dict[str, Any], point: dict[str, Any]) -> bool:
    """Whether a run (its resolved recipe as a dict, its sweep point) is one `match` selects."""
    for key, want in match.items():
        got = point[key] if key in point else lookup(recipe, key)
        if got is MISSING or not same(got, want):
            return False
    return True


# ---- the tables -------------------------------------------------------------------------------------------
class ExpectCell(Strict):
    """`[[expect.cell]]`: the paper's numbers at the sweep points `match` selects."""

    match: dict[str, Any] = Field(default_factory=dict)
    metrics: Metrics = Field(min_length=1)
    std: Std = 0.0
    label: str = ""
    source: str = ""


class ExpectColumn(Strict):
    """One column of a paper table: its label and the settings it selects."""

    label: str = Field(min_length=1)
    match: dict[str, Any] = Field(default_factory=dict)


class ExpectRow(Strict):
    """One row of a paper table: a method, the runs it selects, the paper's value (nan: none) and std per column."""

    label: str = Field(min_length=1)
    match: dict[str, Any] = Field(default_factory=dict)
    metric: str = ""
    values: list[float]
    std: float | list[float] = 0.0

    @field_validator("metric")
    @classmethod
    def _metric(cls, v: str) -> str:
        return check_metric(v) if v else v


class ExpectClaim(Strict):
    """What a table supports, checked cell by cell: ours(better[i]) > ours(worse[i]) in each column."""

    says: str = Field(min_length=1)
    better: list[str] = Field(min_length=1)
    worse: list[str] = Field(min_length=1)

    @model_validator(mode="after")
    def _pairs(self) -> ExpectClaim:
        if len(self.better) != len(self.worse):
            raise ValueError(f"better ({len(self.better)} rows) and worse ({len(self.worse)} rows) must pair up")
        return self


class ExpectTable(Strict):
    """`[[expect.table]]`: one of the paper's tables in its own layout; tables of one `id` across a paper's
    recipes are one table."""

    id: str = Field(pattern=r"^[A-Za-z0-9_.\-]+$")
    title: str = ""
    source: str = ""
    metric: str = "test_acc"
    approximate: bool = False  # plot-read values
    columns: list[ExpectColumn] = Field(min_length=1)
    rows: list[ExpectRow] = Field(min_length=1)
    claims: list[ExpectClaim] = Field(default_factory=list)

    @field_validator("metric")
    @classmethod
    def _metric(cls, v: str) -> str:
        return check_metric(v)

    @model_validator(mode="after")
    def _shape(self) -> ExpectTable:
        n = len(self.columns)
        for r in self.rows:
            if len(r.values) != n:
                raise ValueError(f"row '{r.label}' has {len(r.values)} values for {n} columns")
            if isinstance(r.std, list) and len(r.std) != n:
                raise ValueError(f"row '{r.label}' has {len(r.std)} stds for {n} columns")
            if isinstance(r.std, list) and any(s < 0 for s in r.std if not _is_nan(s)):
                raise ValueError(f"row '{r.label}': a std must be >= 0")
        labels = [r.label for r in self.rows]
        for what, seq in (("row", labels), ("column", [c.label for c in self.columns])):
            dup = next((x for x in seq if seq.count(x) > 1), None)
            if dup is not None:
                raise ValueError(f"{what} label '{dup}' is used twice")
        for c in self.claims:
            for lab in (*c.better, *c.worse):
                known(lab, labels, f"row in claim '{c.says}'")
        return self


@dataclass
class Cell:
    """One expected number: where it sits (table, row, column; empty for a free cell) and what it selects."""

    table: str
    row: str
    column: str
    match: dict[str, Any]
    metric: str
    paper: float | None  # None: the paper prints no number there
    std: float
    tolerance: float
    source: str
    approximate: bool = False
    index: str = ""  # the cell's place in the recipe, for error lines (expect.table.0.rows.2)


class ExpectConfig(Strict):
    """`[expect]`: the paper's headline numbers for this recipe (percent for accuracies and errors, nats for
    losses). `tolerance` is one number for every metric, or a table `{ test_error = 0.5, train_loss = 0.05 }`
    with one entry per metric, since a loss in nats and an error in percent need different margins. `cell` and
    `table` key numbers by sweep point; a cell's tolerance is max(2 x the paper's std, the metric's tolerance)."""

    source: str = ""
    tolerance: Tolerance = 1.0
    metrics: Metrics = Field(default_factory=dict)
    cell: list[ExpectCell] = Field(default_factory=list)
    table: list[ExpectTable] = Field(default_factory=list)

    @model_validator(mode="after")
    def _every_metric_has_a_tolerance(self) -> ExpectConfig:
        if isinstance(self.tolerance, dict):
            wanted = [*self.metrics, *(c.metric for c in self.cells())]
            missing = [m for m in wanted if m not in self.tolerance]
            if missing:
                raise ValueError(f"tolerance has no entry for metric '{missing[0]}' (a tolerance table needs one "
                                 "per metric)")
        ids = [t.id for t in self.table]
        dup = next((i for i in ids if ids.count(i) > 1), None)
        if dup is not None:
            raise ValueError(f"table id '{dup}' is used twice")
        return self

    def tolerance_for(self, metric: str) -> float:
        """The tolerance of one expected metric: its own entry in a table, else the single number."""
        if isinstance(self.tolerance, dict):
            return self.tolerance.get(metric, 0.0)
        return self.tolerance

    def cells(self) -> list[Cell]:
        """Every keyed expectation, tables flattened row by column, then the free cells."""
        out = []
        for ti, t in enumerate(self.table):
            for ri, r in enumerate(t.rows):
                metric = r.metric or t.metric
                for ci, (col, value) in enumerate(zip(t.columns, r.values)):
                    std = r.std[ci] if isinstance(r.std, list) else r.std
                    std = 0.0 if _is_nan(std) else float(std)
                    out.append(Cell(t.id, r.label, col.label, {**r.match, **col.match}, metric,
                                    None if _is_nan(value) else float(value), std,
                                    max(2 * std, self.tolerance_for(metric)), t.source or self.source,
                                    t.approximate, f"expect.table.{ti}.rows.{ri}"))
        for i, c in enumerate(self.cell):
            for metric, value in c.metrics.items():
                std = c.std.get(metric, 0.0) if isinstance(c.std, dict) else c.std
                out.append(Cell("", c.label, "", dict(c.match), metric, None if _is_nan(value) else float(value),
                                std, max(2 * std, self.tolerance_for(metric)), c.source or self.source,
                                index=f"expect.cell.{i}"))
        return out

    def for_run(self, recipe: dict[str, Any], point: dict[str, Any]) -> list[Cell]:
        """What one run should reproduce: the headline metrics, then every cell whose match selects it."""
        out = [Cell("", "", "", {}, m, v, 0.0, self.tolerance_for(m), self.source) for m, v in self.metrics.items()]
        return out + [c for c in self.cells() if c.paper is not None and matches(c.match, recipe, point)]
