"""Recipe loading: find, parse, apply `--smoke` / `--set`, expand `[sweep]`, validate, and say what is wrong.

Every problem becomes one line `FILE: key.path: what is wrong`; nothing here raises a traceback for
bad input. The schema itself is engine.config.
"""

from __future__ import annotations

import copy
import itertools
import os
import sys
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w
from pydantic import BaseModel, ValidationError

from engine.config import DEFAULT_LOGGERS, Recipe, TrainDefaults, cross_check, suggest
from engine.config.expect import MISSING, lookup, matches
from engine.config.params import sparse_methods
from engine.fidelity import apply_faithful

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

SMOKE_EPOCHS = 2
SMOKE_DATA = {"dataset": "digits", "root": "", "val_split": 0, "train_subset": 128, "test_subset": 100,
              "batch_size": 64, "eval_batch_size": 200}
SMOKE_IMAGE_DATA = {"dataset": "synthetic-imagenet", "root": "", "val_split": 0, "train_subset": 0, "test_subset": 0,
                    "batch_size": 16, "eval_batch_size": 32, "image_size": 64, "resize": 72, "workers": 0}
"""Image-folder recipes (ImageNet) smoke on tiny generated JPEG folders, through the same DataLoader path."""
SMOKE_WIDTH = 0.125


class RecipeError(Exception):
    """Bad recipe or bad override: one line per problem, exit code 2."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines


def recipes_dir() -> Path:
    """The recipes shipped with the project (or $REPRO_RECIPES)."""
    env = os.environ.get("REPRO_RECIPES")
    return Path(env) if env else Path(__file__).resolve().parent.parent / "recipes"


def recipe_names() -> list[str]:
    return sorted(p.stem for p in recipes_dir().glob("*.toml"))


def find_recipe(ref: str) -> Path:
    """A recipe by path or by name (the file stem in recipes/)."""
    p = Path(ref)
    if p.suffix == ".toml" or os.sep in ref:
        if not p.is_file():
            raise RecipeError([f"{ref}: file not found"])
        return p
    cand = recipes_dir() / f"{ref}.toml"
    if cand.is_file():
        return cand
    raise RecipeError([f"{ref}: unknown recipe{suggest(ref, recipe_names())}"])


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise RecipeError([f"{path}: (toml): {e}"]) from None
    except UnicodeDecodeError:
        raise RecipeError([f"{path}: not a TOML text file (it is not UTF-8)"]) from None
    except OSError as e:
        raise RecipeError([f"{path}: cannot read ({e.strerror})"]) from None


# ---- dotted keys ------------------------------------------------------------------------------------
def parse_value(text: str) -> Any:
    """A `--set` value as TOML (3, 0.1, true, [1, 2], "s"); anything that is not TOML is a plain string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _index(container: list, seg: str, key: str) -> int:
    if seg.lstrip("-").isdigit():
        i = int(seg)
        if not -len(container) <= i < len(container):
            raise KeyError(f"{key}: index {i} out of range (there are {len(container)})")
        return i
    for i, item in enumerate(container):
        if isinstance(item, dict) and item.get("name") == seg:
            return i
    names = [str(it.get("name")) for it in container if isinstance(it, dict)]
    raise KeyError(f"{key}: no stage named '{seg}'{suggest(seg, names)}")


def set_dotted(raw: dict[str, Any], key: str, value: Any) -> None:
    """Set `a.b.c` (list items by index or by their `name`), creating tables as needed."""
    segs = key.split(".")
    if not key or any(not s for s in segs):
        raise KeyError(f"{key}: malformed key")
    node: Any = raw
    for i, seg in enumerate(segs[:-1]):
        if isinstance(node, list):
            node = node[_index(node, seg, key)]
        elif isinstance(node, dict):
            if seg not in node:
                nxt = segs[i + 1]
                node[seg] = [] if nxt.isdigit() else {}
            node = node[seg]
        else:
            raise KeyError(f"{key}: '{seg}' is not a table")
    last = segs[-1]
    if isinstance(node, list):
        node[_index(node, last, key)] = value
    elif isinstance(node, dict):
        node[last] = value
    else:
        raise KeyError(f"{key}: cannot set inside a value")


def apply_overrides(raw: dict[str, Any], items: dict[str, Any] | list[tuple[str, Any]], origin: str) -> list[str]:
    """Apply dotted-key overrides; returns problem lines instead of raising."""
    problems = []
    pairs = items.items() if isinstance(items, dict) else items
    for key, value in pairs:
        try:
            set_dotted(raw, key, value)
        except KeyError as e:
            problems.append(f"{origin}: {e.args[0]}")
    return problems


def parse_sets(sets: list[str] | tuple[str, ...]) -> list[tuple[str, Any]]:
    out = []
    for item in sets:
        key, eq, val = item.partition("=")
        if not eq or not key.strip():
            raise RecipeError([f"--set {item}: expected KEY=VALUE"])
        out.append((key.strip(), parse_value(val.strip())))
    return out


# ---- smoke and sweep --------------------------------------------------------------------------------
def apply_smoke(raw: dict[str, Any]) -> None:
    """The tiny profile: digits data cut to a few batches (ImageNet recipes: tiny synthetic image folders), a
    narrow model, at most two epochs a stage."""
    data = raw.setdefault("data", {})
    folders = isinstance(data, dict) and data.get("dataset") == "imagenet"
    smoke_data = SMOKE_IMAGE_DATA if folders else SMOKE_DATA
    data.update(smoke_data)
    model = raw.setdefault("model", {})
    model["width"] = min(float(model.get("width", 1.0)), SMOKE_WIDTH)
    raw.setdefault("run", {}).update(compile=False, smoke=True)
    analysis = raw.setdefault("analysis", {})
    if isinstance(analysis, dict):
        analysis.update(ood_dataset="synthetic", tsne_images=64)
    train = raw.setdefault("train", {})
    default_epochs = train.get("epochs")
    if isinstance(default_epochs, int):
        train["epochs"] = min(default_epochs, SMOKE_EPOCHS)
    capped: dict[str, int] = {}
    for st in raw.get("stage", []) if isinstance(raw.get("stage"), list) else []:
        if not isinstance(st, dict):
            continue
        if isinstance(st.get("epochs"), int):
            st["epochs"] = min(st["epochs"], SMOKE_EPOCHS)
        if isinstance(st.get("batch_size"), int):
            st["batch_size"] = min(st["batch_size"], int(smoke_data["batch_size"]))
        e = st.get("epochs", train.get("epochs"))
        if isinstance(e, int):
            capped[str(st.get("name"))] = e
        ref = st.get("init_from")
        if isinstance(ref, str) and "@" in ref:
            name, _, ep = ref.partition("@")
            if ep.isdigit() and name in capped:
                st["init_from"] = f"{name}@{min(int(ep), capped[name])}"


Overrides = list[tuple[str, Any]]


def _axes(sweep: dict[str, Any], origin: str) -> dict[str, list[tuple[Any, Overrides, Overrides]]]:
    """Each sweep axis as its values: (what the run's point records, the overrides, the smoke-only overrides). A
    plain axis (`"a.b" = [1, 2]`) sets one key; a variant axis (`name = [{ tag = "x", "a.b" = 1, ... }, ...]`)
    sets several, is recorded by its tag, and may carry `smoke = { ... }` overrides for --smoke."""
    axes, bad = {}, []
    for k, vals in sweep.items():
        if not isinstance(vals, list) or not vals:
            bad.append(f"{origin}: sweep.{k}: must be a non-empty list")
            continue
        tables = [isinstance(v, dict) for v in vals]
        if not any(tables):
            axes[k] = [(v, [(k, v)], []) for v in vals]
            continue
        if not all(tables) or "." in k:
            bad.append(f"{origin}: sweep.{k}: a variant axis is a name without dots whose values are all tables "
                       "({ tag = ..., \"key.path\" = value, ... })")
            continue
        out, tags = [], []
        for i, v in enumerate(vals):
            v = dict(v)
            tag, smoke = v.pop("tag", None), v.pop("smoke", {})
            if not isinstance(tag, str) or not tag:
                bad.append(f"{origin}: sweep.{k}.{i}.tag: every variant needs a tag (a non-empty string)")
            elif tag in tags:
                bad.append(f"{origin}: sweep.{k}.{i}.tag: tag '{tag}' is used twice")
            if not isinstance(smoke, dict):
                bad.append(f"{origin}: sweep.{k}.{i}.smoke: must be a table of KEY = value")
                smoke = {}
            tags.append(tag)
            out.append((tag, list(v.items()), list(smoke.items())))
        axes[k] = out
    if bad:
        raise RecipeError(bad)
    return axes


def expand_sweep(raw: dict[str, Any], origin: str, cover: bool = False) -> list[tuple[str, dict[str, Any]]]:
    """The cartesian product of `[sweep]` axes, each point as (tag, raw recipe); a tag names its values and the
    recipe's `run.point` records them (what [expect] cells match on).

    cover=True (for --smoke) gives only as many points as the longest axis, point i taking value i (cycling) of
    every axis, so each value still runs once without the whole product; variants' smoke overrides then apply.
    """
    sweep = raw.pop("sweep", {}) or {}
    if not isinstance(sweep, dict):
        raise RecipeError([f"{origin}: sweep: must be a table of KEY = [values]"])
    if not sweep:
        return [("", raw)]
    axes = _axes(sweep, origin)
    keys = list(axes)
    out = []
    if cover:
        longest = max(len(v) for v in axes.values())
        points = [tuple(axes[k][i % len(axes[k])] for k in keys) for i in range(longest)]
    else:
        points = list(itertools.product(*(axes[k] for k in keys)))
    for values in points:
        r = copy.deepcopy(raw)
        problems = []
        for k, (value, sets, smoke_sets) in zip(keys, values):
            where = f"{origin}: sweep.{k}.{value}" if isinstance(sweep[k][0], dict) else origin
            problems += apply_overrides(r, sets, where)
            if cover:
                problems += apply_overrides(r, smoke_sets, f"{origin}: sweep.{k} smoke")
        if problems:
            raise RecipeError(problems)
        run = r.setdefault("run", {})
        if isinstance(run, dict):
            run["point"] = {k: v[0] for k, v in zip(keys, values)}
        tag = "-".join(_slug(v[0]) if isinstance(sweep[k][0], dict) else f"{k.split('.')[-1]}{_slug(v[0])}"
                       for k, v in zip(keys, values))
        out.append((tag, r))
    return out


def pin_variants(raw: dict[str, Any], pairs: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
    """`--set AXIS=TAG` for a variant axis keeps only that variant; returns the pairs left to apply as overrides."""
    sweep = raw.get("sweep")
    if not isinstance(sweep, dict):
        return pairs
    rest = []
    for key, value in pairs:
        vals = sweep.get(key)
        if isinstance(vals, list) and vals and all(isinstance(v, dict) for v in vals):
            chosen = [v for v in vals if v.get("tag") == str(value)]
            if not chosen:
                tags = [str(v.get("tag")) for v in vals]
                hint = suggest(str(value), tags)
                raise RecipeError([f"--set {key}={value}: no variant '{value}' in sweep.{key}{hint}"])
            sweep[key] = chosen
        else:
            rest.append((key, value))
    return rest


def _slug(v: Any) -> str:
    return "".join(c if c.isalnum() or c in "._" else "_" for c in str(v))


# ---- validation -------------------------------------------------------------------------------------
def _model_at(loc: tuple) -> type[BaseModel] | None:
    """The schema model that holds the key at `loc` (for suggesting a misspelt key)."""
    model: Any = Recipe
    for seg in loc[:-1]:
        if isinstance(seg, int):
            continue
        field = model.model_fields.get(seg) if isinstance(model, type) and issubclass(model, BaseModel) else None
        if field is None:
            return None
        ann = field.annotation
        for cand in (ann, *typing.get_args(ann), *(a for t in typing.get_args(ann) for a in typing.get_args(t))):
            if isinstance(cand, type) and issubclass(cand, BaseModel):
                model = cand
                break
        else:
            return None
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _explain(err: dict[str, Any]) -> str:
    kind, loc = err["type"], err["loc"]
    if kind == "extra_forbidden":
        model = _model_at(loc)
        hint = suggest(str(loc[-1]), list(model.model_fields), cutoff=0.75) if model else ""
        return f"unknown key{hint}"
    if kind == "missing":
        return "required key is missing"
    msg = err["msg"].removeprefix("Value error, ")
    if kind in ("value_error", "assertion_error"):
        return msg
    got = err.get("input")
    if isinstance(got, (dict, list)):
        return msg[0].lower() + msg[1:]
    return f"{msg[0].lower() + msg[1:]} (got {got!r})"


def _errors(e: ValidationError, origin: str, prefix: str = "") -> list[str]:
    lines = []
    for err in e.errors():
        path = ".".join(str(x) for x in err["loc"])
        path = f"{prefix}.{path}" if prefix and path else (prefix or path or "(top)")
        lines.append(f"{origin}: {path}: {_explain(err)}")
    return lines


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def expand_repeats(stages: list[Any], run_seed: int, origin: str) -> tuple[list[Any], list[str]]:
    """`repeat = M` on a stage makes M independent copies `<name>1..M` (group `<name>`, seeds run.seed + i);
    a repeated stage whose init_from names a group repeated as often starts from the copy with its index."""
    out, problems, sizes = [], [], {}
    for i, st in enumerate(stages):
        if not isinstance(st, dict) or "repeat" not in st:
            out.append(st)
            continue
        st = dict(st)
        rep = st.pop("repeat")
        if isinstance(rep, bool) or not isinstance(rep, int) or rep < 1:
            problems.append(f"{origin}: stage.{i}.repeat: must be a whole number >= 1 (got {rep!r})")
            continue
        name = str(st.get("name", f"stage{i}"))
        if rep == 1:
            out.append(st)
            continue
        sizes[name] = rep
        ref = st.get("init_from", "")
        ref_name, sep, ref_epoch = ref.partition("@") if isinstance(ref, str) else ("", "", "")
        for k in range(1, rep + 1):
            copy_ = copy.deepcopy(st)
            copy_.update(name=f"{name}{k}", group=name)
            copy_.setdefault("seed", run_seed + k - 1)
            if sizes.get(ref_name) == rep:
                copy_["init_from"] = f"{ref_name}{k}{sep}{ref_epoch}"
            out.append(copy_)
    return out, problems


def validate(raw: dict[str, Any], origin: str) -> Recipe:
    """Merge `[train]` into each stage, validate against the schema, run the cross-stage checks."""
    raw = copy.deepcopy(raw)
    train = raw.get("train", {})
    problems: list[str] = []
    if not isinstance(train, dict):
        raise RecipeError([f"{origin}: train: must be a table"])
    try:
        TrainDefaults.model_validate(train)
    except ValidationError as e:
        problems += _errors(e, origin, "train")
    stages = raw.get("stage")
    if isinstance(stages, list):
        defaults = {k: v for k, v in train.items() if v is not None}
        raw["stage"] = [_merge(defaults, s) if isinstance(s, dict) else s for s in stages]
        run_seed = raw.get("run", {}).get("seed", 1) if isinstance(raw.get("run"), dict) else 1
        raw["stage"], repeat_problems = expand_repeats(raw["stage"], run_seed if isinstance(run_seed, int) else 1,
                                                       origin)
        problems += repeat_problems
    if problems:
        raise RecipeError(problems)
    try:
        recipe = Recipe.model_validate(raw)
    except ValidationError as e:
        raise RecipeError(_errors(e, origin)) from None
    problems = [f"{origin}: {path}: {msg}" for path, msg in cross_check(recipe)]
    if problems:
        raise RecipeError(problems)
    return recipe


@dataclass
class Resolved:
    """One runnable recipe: validated, with its sweep tag ('' when there is no sweep) and source file."""

    recipe: Recipe
    tag: str
    source: Path


def load(ref: str | Path, sets: list[str] | tuple[str, ...] = (), smoke: bool = False,
         faithful: bool = False) -> list[Resolved]:
    """Load a recipe by path or name and resolve it into one Resolved per sweep point.

    Under --smoke the full-size recipe is validated first, so smoke and full runs accept exactly the same
    recipes and the smoke profile only ever rewrites a valid one. --faithful sets every switchable difference from
    the original code (engine.fidelity) to the original's behaviour; --smoke and --set are applied after it and win.
    """
    path = find_recipe(str(ref))
    origin = str(path)
    raw = read_toml(path)
    pairs = parse_sets(sets)
    if smoke:
        _resolve(copy.deepcopy(raw), pairs, origin, cover=False)
    if faithful:
        applied = apply_faithful(raw, str(raw.get("name", path.stem)), sparse_methods())
        raw.setdefault("run", {})["faithful"] = True
        raw["run"]["faithful_applied"] = applied
    if smoke:
        apply_smoke(raw)
        smoke_tbl = raw.get("smoke", {})
        if isinstance(smoke_tbl, dict):
            problems = apply_overrides(raw, smoke_tbl, f"{origin}: smoke")
            if problems:
                raise RecipeError(problems)
    return _resolve(raw, pairs, origin, cover=smoke, source=path)


def _resolve(raw: dict[str, Any], pairs: list[tuple[str, Any]], origin: str, cover: bool,
             source: Path | None = None) -> list[Resolved]:
    """Apply --set, expand the sweep, validate each point; a problem that only the --set values cause is
    attributed to `--set`, not to the recipe file."""
    pinned = bool(pairs)  # a --set (of a variant axis too) leaves cells of the other points unselected
    pairs = pin_variants(raw, pairs)
    plain = copy.deepcopy(raw) if pairs else None
    sweep = raw.get("sweep")
    if isinstance(sweep, dict):  # a --set of a swept key wins: that key is no longer swept
        for key, _ in pairs:
            sweep.pop(key, None)
    problems = apply_overrides(raw, pairs, "--set")
    if problems:
        raise RecipeError(problems)
    try:
        run = raw.get("run")
        resolved_point = isinstance(run, dict) and bool(run.get("point"))  # a run's recipe.toml: one point of many
        out = [Resolved(validate(r, origin), tag, source or Path(origin))
               for tag, r in expand_sweep(raw, origin, cover=cover)]
        if not cover and not pinned and not resolved_point:
            check_cells(out, origin)
        return out
    except RecipeError as e:
        if plain is None:
            raise
        try:
            own = {line for tag_r in expand_sweep(plain, origin, cover=cover) for line in _problems(tag_r[1], origin)}
        except RecipeError as e2:
            own = set(e2.lines)
        lines = [line if line in own else "--set" + line[len(origin):] if line.startswith(origin + ":") else line
                 for line in e.lines]
        raise RecipeError(lines) from None


def check_cells(points: list[Resolved], origin: str) -> None:
    """Every [expect] cell and table row/column must select at least one sweep point: a misspelt key or value
    would otherwise leave a cell that no run can ever fill."""
    dumps = [(p.recipe.model_dump(), p.recipe.run.point) for p in points]
    problems = []
    for c in points[0].recipe.expect.cells():
        if not any(matches(c.match, d, pt) for d, pt in dumps):
            where = f"{c.row} / {c.column}" if c.table else (c.row or "cell")
            unknown = [k for k in c.match if k not in dumps[0][1] and lookup(dumps[0][0], k) is MISSING]
            why = (f"'{unknown[0]}' is neither a sweep axis nor a recipe key" if unknown
                   else f"{_show(c.match)} selects no sweep point")
            line = f"{origin}: {c.index}: {where}: {why}"
            if line not in problems:
                problems.append(line)
    if problems:
        raise RecipeError(problems)


def _show(match: dict[str, Any]) -> str:
    return "{ " + ", ".join(f"{k} = {v!r}" for k, v in match.items()) + " }"


def _problems(raw: dict[str, Any], origin: str) -> list[str]:
    """The problem lines of one raw recipe (empty when valid)."""
    try:
        validate(raw, origin)
    except RecipeError as e:
        return e.lines
    return []


def to_toml(recipe: Recipe) -> str:
    """The fully resolved recipe as TOML (no [sweep]: it is already expanded)."""
    data = recipe.model_dump(exclude_none=True)
    data.pop("sweep", None)
    data["train"] = {k: v for k, v in data.get("train", {}).items() if v is not None}
    for flag in ("smoke", "faithful"):  # only smoke and faithful runs say so
        if not data.get("run", {}).get(flag, True):
            del data["run"][flag]
    for key in ("faithful_applied", "point"):  # empty unless --faithful / a sweep
        if not data.get("run", {}).get(key, [1]):
            del data["run"][key]
    if data.get("run", {}).get("loggers") == list(DEFAULT_LOGGERS):  # how a run is watched: said when changed
        del data["run"]["loggers"]
    return tomli_w.dumps(data, multiline_strings=True)


def load_resolved(path: Path) -> Recipe:
    """A run directory's recipe.toml (already resolved) back as a Recipe."""
    return validate(read_toml(path), str(path))
