"""The `repro` command line (a contract: see SPEC.md). Exit codes: 0 ok, 1 a run failed, 2 bad usage or recipe."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from engine.config import LOGGERS, Recipe, SparseConfig, UnknownArch, canonical_arch, suggest
from engine.errors import DataError, DeviceError, Terminated, UnsafePathError
from engine.fidelity import DIFFERENCES, by_id, differences_for, markdown_table, toml_value
from engine.io import CheckpointError
from engine.runlog import NullProgress
from repro.progress import RichProgress
from repro.recipe import RecipeError, load, load_resolved, recipe_names, to_toml
from repro.rundir import RunDirError, RunLock, latest_done, list_runs, read_run, run_root

# The engine (torch), analysis.h5 (h5py), figures (matplotlib) and the app (textual) are imported inside the
# commands that need them, so `list`, `show`, `validate`, `differences`, `runs` and `--help` start in a fraction
# of a second (tests/test_torch_free.py).

out_console = Console(width=None if sys.stdout.isatty() else 200)


class UsageProblem(click.ClickException):
    """A one-line error with exit code 2."""

    exit_code = 2

    def show(self, file=None) -> None:  # noqa: ANN001 - click's signature
        click.echo(f"error: {self.message}", err=True)


def _root_option(f):  # noqa: ANN001, ANN202
    return click.option("--root", default=None, help="Run root (default $REPRO_ROOT or ./checkpoints).")(f)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks.")
def cli(debug: bool) -> None:
    """repro: rerun sparse-training and cheap-ensemble papers from TOML recipes."""
    if debug:
        os.environ["REPRO_DEBUG"] = "1"


# ---- recipes ----------------------------------------------------------------------------------------
@cli.command("list")
@click.option("--json", "as_json", is_flag=True)
def list_cmd(as_json: bool) -> None:
    """Every recipe: name, paper, method, dataset, model."""
    rows = []
    for name in recipe_names():
        try:
            resolved = load(name)
            r = resolved[0].recipe
            rows.append({"name": name, "paper": r.paper, "method": "+".join(s.method for s in r.stage),
                         "dataset": r.data.dataset, "model": r.model.arch, "runs": len(resolved)})
        except RecipeError as e:
            rows.append({"name": name, "paper": "?", "method": "?", "dataset": "?", "model": "?",
                         "error": e.lines[0]})
    if as_json:
        click.echo(json.dumps(rows, indent=1))
        return
    t = Table("paper", "method", "dataset", "model")
    t.columns.insert(0, Table("name").columns[0])
    t.columns[0].no_wrap = True
    for row in rows:
        t.add_row(row["name"], row["paper"], row["method"], row["dataset"], row["model"])
    out_console.print(t)


@cli.command()
@click.argument("recipe")
@click.option("--set", "sets", multiple=True, metavar="K=V", help="Override a dotted key.")
@click.option("--smoke", is_flag=True, help="The tiny profile.")
@click.option("--faithful", is_flag=True, help="Do what the original code did (see `repro differences`).")
def show(recipe: str, sets: tuple[str, ...], smoke: bool, faithful: bool) -> None:
    """The fully resolved recipe as TOML (one document per sweep point)."""
    resolved = load(recipe, sets, smoke, faithful)
    for i, res in enumerate(resolved):
        if len(resolved) > 1:
            click.echo(f"{'' if i == 0 else chr(10)}# sweep point {i + 1}/{len(resolved)}: {res.tag}")
        if faithful and i == 0:
            click.echo(_faithful_header(res.recipe), nl=False)
        click.echo(to_toml(res.recipe), nl=False)


def _faithful_header(recipe) -> str:  # noqa: ANN001 - a Recipe
    """TOML comments saying what --faithful changed."""
    applied = [by_id(i) for i in recipe.run.faithful_applied]
    if not applied:
        return "# --faithful: no switchable difference applies to this recipe\n"
    return "".join(f"# --faithful: {d.key} = {toml_value(d.faithful)} ({d.id})\n" for d in applied)


@cli.command()
@click.argument("recipe", required=False)
@click.option("--json", "as_json", is_flag=True, help="A list of {id, ours, original, source, effect, key, faithful}.")
@click.option("--markdown", is_flag=True, help="Every entry as the README's table (no RECIPE).")
def differences(recipe: str | None, as_json: bool, markdown: bool) -> None:
    """Where a recipe's run differs from the original code on purpose, and the key that switches each back."""
    if markdown:
        click.echo(markdown_table(), nl=False)
        return
    if recipe is None:
        entries = list(DIFFERENCES)
    else:
        name = load(recipe)[0].recipe.name
        entries = differences_for(name)
    if as_json:
        click.echo(json.dumps([d.as_dict() for d in entries], indent=1))
        return
    t = Table("id", "ours", "the original", "source", "switch", title=f"{recipe or 'all recipes'}: "
              f"{len(entries)} difference(s); --faithful sets every switch", show_lines=True)
    for d in entries:
        t.add_row(d.id, d.ours, d.original, d.source, "-" if d.key is None else f"{d.key} = {toml_value(d.faithful)}")
    out_console.print(t)


@cli.command()
@click.argument("recipes", nargs=-1, required=True)
def validate(recipes: tuple[str, ...]) -> None:
    """Exit 0 when every recipe is valid; else one line per problem and exit 2."""
    problems: list[str] = []
    for ref in recipes:
        try:
            load(ref)
        except RecipeError as e:
            problems += e.lines
    if problems:
        raise RecipeError(problems)
    click.echo(f"{len(recipes)} recipe(s) valid")


# ---- running ----------------------------------------------------------------------------------------
@cli.command()
@click.argument("recipe")
@click.option("--set", "sets", multiple=True, metavar="K=V", help="Override a dotted key (type-checked).")
@click.option("--smoke", is_flag=True, help="Tiny profile: digits, narrow model, two epochs a stage.")
@click.option("--faithful", is_flag=True, help="Do what the original code did (see `repro differences`).")
@click.option("--out", default=None, help="Run directory (default <root>/<recipe>/<run-id>).")
@click.option("--resume", is_flag=True, help="Continue an unfinished run (--out or the latest one).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto")
@click.option("--nproc", type=click.IntRange(min=1), default=1, help="Processes (GPUs) for DDP.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--logger", "loggers", multiple=True, type=click.Choice([*LOGGERS, "none"]),
              help="Mirror the metrics to this logger (repeatable; replaces the recipe's run.loggers; none: nowhere).")
@_root_option
def run(recipe: str, sets: tuple[str, ...], smoke: bool, faithful: bool, out: str | None, resume: bool, device: str,
        nproc: int, quiet: bool, loggers: tuple[str, ...], root: str | None) -> None:
    """Run every stage of a recipe, then its analyses."""
    from repro.launch import execute  # deferred: torch

    if resume and (sets or faithful or loggers):
        flag = "--set" if sets else "--faithful" if faithful else "--logger"
        raise UsageProblem(f"{flag} cannot change a run being resumed; it continues with its own recipe.toml")
    if "none" in loggers and len(loggers) > 1:
        raise UsageProblem("--logger none means no logger; it cannot be given with another --logger")
    resolved = load(recipe, sets, smoke, faithful)
    for res in resolved if loggers else []:
        res.recipe.run.loggers = [name for name in dict.fromkeys(loggers) if name != "none"]
    if out and resume:
        resolved = resolved[:1]  # the run directory's own recipe.toml says which sweep point it is
    elif out and len(resolved) > 1:
        raise UsageProblem(f"--out names one run directory but {recipe} sweeps into {len(resolved)} runs")
    failed = 0
    for res in resolved:
        outcome = execute(res, root=run_root(root), out=out, resume=resume, device=device, smoke=smoke,
                          progress=NullProgress() if quiet else RichProgress(), nproc=nproc, sets=sets)
        _print_outcome(outcome)
        if outcome.state != "done":
            failed += 1
            if os.environ.get("REPRO_DEBUG") and getattr(outcome, "exc", None) is not None:
                raise outcome.exc  # type: ignore[misc]
    if failed:
        sys.exit(1)


def _print_outcome(outcome) -> None:  # noqa: ANN001
    from repro.report import report_rows  # deferred: h5py

    if outcome.state != "done":
        click.echo(f"error: run failed: {outcome.error}", err=True)
        click.echo(f"run directory: {outcome.run_dir}", err=True)
        return
    info = read_run(outcome.run_dir)
    rows = report_rows([info])
    t = Table("metric", "reproduced", "paper", "delta", title=f"{info.recipe} / {info.run_id}")
    for row in rows:
        t.add_row(row["metric"], _fmt(row["reproduced"]), _fmt(row["paper"]), _fmt(row["delta"], signed=True))
    for k, v in sorted(outcome.summary.items()):
        if isinstance(v, float) and not any(k.endswith(r["metric"]) for r in rows):
            t.add_row(k, _fmt(v), "", "")
    out_console.print(t)
    ens = _ensemble_table(outcome.run_dir)
    if ens is not None:
        out_console.print(ens)
    click.echo(f"run directory: {outcome.run_dir}")


def _ensemble_table(run_dir: Path) -> Table | None:
    """Members beside their ensemble: accuracy, NLL and (when calibrated) ECE, from analysis.h5; None, with a
    warning naming the file, when it cannot be read (the run's other results still print)."""
    from engine.store import DamagedFile, groups, read_group  # deferred: h5py

    h5 = Path(run_dir) / "analysis.h5"
    try:
        have = groups(h5)
        if "predict" not in have:
            return None
        p = read_group(h5, "predict")
        ece = read_group(h5, "calibration")["ece"] if "calibration" in have else None
    except DamagedFile as e:
        click.echo(f"warning: no ensemble table: {e}", err=True)
        return None
    t = Table("member", "accuracy (%)", "NLL", *(["ECE"] if ece is not None else []), title="ensemble")
    for i, name in enumerate(p["member_names"]):
        t.add_row(name, f"{p['member_acc'][i]:.2f}", f"{p['member_nll'][i]:.4f}",
                  *([f"{ece[i]:.4f}"] if ece is not None else []))
    t.add_row("[bold]ensemble[/bold]", f"{float(p['ensemble_acc']):.2f}", f"{float(p['ensemble_nll']):.4f}",
              *([f"{ece[-1]:.4f}"] if ece is not None else []))
    return t


def _fmt(v: float | None, signed: bool = False) -> str:
    if v is None:
        return "-"
    if abs(v) >= 1e5:
        return f"{v:.3e}"
    return f"{v:+.2f}" if signed else f"{v:.2f}" if abs(v) >= 0.1 or v == 0 else f"{v:.4f}"


@cli.command()
@click.option("--json", "as_json", is_flag=True)
@_root_option
def runs(as_json: bool, root: str | None) -> None:
    """Run directories under the root: state, stage, progress, best accuracy."""
    infos = list_runs(run_root(root))
    if as_json:
        click.echo(json.dumps([i.as_dict() for i in infos], indent=1))
        return
    t = Table("recipe", "run", "state", "stage", "progress", "best acc", "error")
    for i in infos:
        t.add_row(i.recipe, i.run_id, i.state, i.stage, f"{100 * i.progress:.0f}%", _fmt(i.best), i.error[:60])
    out_console.print(t)


# ---- analyses ---------------------------------------------------------------------------------------
def _run_dir(path: str) -> Path:
    p = Path(path)
    if not (p / "recipe.toml").is_file():
        raise UsageProblem(f"{path}: not a run directory (no recipe.toml)")
    return p


@cli.command()
@click.argument("run_dir")
@click.option("--mode", required=True, help="Analysis name (e.g. predict).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto")
def analyze(run_dir: str, mode: str, device: str) -> None:
    """(Re)compute one analysis into the run's analysis.h5."""
    from engine.analyses import ANALYSES, AnalysisContext  # deferred: torch
    from engine.device import resolve_device
    from engine.runner import run_analysis
    from engine.store import set_aside_if_damaged

    path = _run_dir(run_dir)
    if mode not in ANALYSES:
        raise UsageProblem(f"unknown analysis mode '{mode}'{suggest(mode, sorted(ANALYSES))}")
    recipe = load_resolved(path / "recipe.toml")
    with RunLock(path):
        h5 = path / "analysis.h5"
        moved = set_aside_if_damaged(h5)  # else every analysis would fail on it for ever
        if moved is not None:
            click.echo(f"warning: {h5} was damaged; moved aside to {moved}; recomputing", err=True)
        ctx = AnalysisContext(recipe=recipe, run_dir=path, device=resolve_device(device))
        try:
            res = run_analysis(mode, ctx)
        except FileNotFoundError as e:
            raise UsageProblem(str(e)) from None
    click.echo(json.dumps(res, default=float))


@cli.command()
@click.argument("run_dir")
@click.option("--deep", is_flag=True, help="Also reload each member checkpoint and recompute its predictions.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="cpu", help="For --deep.")
@click.option("--json", "as_json", is_flag=True)
def verify(run_dir: str, deep: bool, device: str, as_json: bool) -> None:
    """Check a run directory against its manifest.json and recompute its analyses (exit 1 when anything differs)."""
    from repro.verify import render  # deferred: torch, h5py
    from repro.verify import verify as check_run

    path = _run_dir(run_dir)
    res = check_run(path, deep=deep, device=device)
    if as_json:
        click.echo(json.dumps(res.to_json(), indent=1))
    else:
        render(res, click.echo)
    if not res.ok:
        sys.exit(1)


@cli.command()
@click.argument("run_dir")
@click.option("--mode", required=True)
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False))
def plot(run_dir: str, mode: str, output: str) -> None:
    """Draw an analysis as a figure (png, pdf or svg by the file's suffix)."""
    from repro.plots import PLOTS  # deferred: matplotlib
    from repro.plots import plot as draw

    path = _run_dir(run_dir)
    if mode not in PLOTS:
        raise UsageProblem(f"no figure for mode '{mode}'{suggest(mode, sorted(PLOTS))}")
    suffix = Path(output).suffix.lower()
    if suffix not in (".png", ".pdf", ".svg"):
        raise UsageProblem(f"{output}: the figure must end in .png, .pdf or .svg")
    try:
        draw(path, mode, Path(output))
    except (KeyError, FileNotFoundError, OSError) as e:
        raise UsageProblem(str(e.args[0]) if e.args else str(e)) from None
    click.echo(output)


@cli.command()
@click.argument("run_dirs", nargs=-1, required=True)
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="The .tar.gz to write.")
@click.option("--no-weights", is_flag=True, help="Leave the checkpoints (.pt) out.")
@click.option("--force", is_flag=True, help="Replace an existing output file.")
def bundle(run_dirs: tuple[str, ...], output: str, no_weights: bool, force: bool) -> None:
    """One .tar.gz of runs for someone else to check: recipe, provenance, manifest, metrics, analysis.h5, the
    member checkpoints, figures and the report rows, under <recipe>/<run-id>/."""
    from repro.bundle import BundleError
    from repro.bundle import bundle as make_bundle  # deferred: h5py (the report rows)

    if not output.endswith((".tar.gz", ".tgz")):
        raise UsageProblem(f"{output}: the bundle must end in .tar.gz or .tgz")
    try:
        names = make_bundle([Path(d) for d in run_dirs], Path(output), weights=not no_weights, force=force)
    except BundleError as e:
        raise UsageProblem(str(e)) from None
    size = Path(output).stat().st_size
    click.echo(f"{output}: {len(run_dirs)} run(s), {len(names)} files, {size / 1e6:.1f} MB")


@cli.command()
@click.option("--json", "as_json", is_flag=True)
@click.option("--recipe", "only", default=None, help="Only runs of this recipe.")
@click.option("--all", "show_all", is_flag=True, help="Include smoke runs.")
@click.option("--paper", default=None, help="The paper's tables in its own layout (freetickets, suptickets, "
              "earlybird, randompruning, modeconnectivity).")
@click.option("--plan", "show_plan", is_flag=True, help="With --paper: the cells not run yet and the commands that "
              "fill them.")
@click.option("--index", "show_index", is_flag=True, help="The list of every paper's tables and their cell counts "
              "(markdown, the README's).")
@_root_option
def report(as_json: bool, only: str | None, show_all: bool, paper: str | None, show_plan: bool, show_index: bool,
           root: str | None) -> None:
    """Reproduced numbers beside the paper's, one row per run and expected metric (a run whose files cannot be read
    shows as damaged, with a warning saying which file and why); with --paper, the paper's tables cell by cell."""
    if show_index:
        from repro.tables import tables_index  # deferred: h5py

        click.echo(tables_index(), nl=False)
        return
    if show_plan and paper is None:
        raise UsageProblem("--plan needs --paper NAME")
    if paper is not None:
        _paper_report(paper, as_json, show_plan, root)
        return
    from repro.report import damaged_runs, flops_cell, report_rows  # deferred: h5py

    infos = [i for i in list_runs(run_root(root)) if only is None or i.recipe == only]
    rows = [r for r in report_rows(infos) if show_all or not r["smoke"]]
    if as_json:
        click.echo(json.dumps(rows, indent=1))
        return
    grouped = any(r.get("provenance") for r in rows)  # a recipe whose runs differ in torch version or GPU
    t = Table("recipe", "run", "state", "metric", "reproduced", "paper", "delta", "ok", "train FLOPs (x dense)",
              "nonzero params", *(["provenance"] if grouped else []))
    for r in rows:
        ok = "" if r["within"] is None else ("yes" if r["within"] else "no")
        cost = flops_cell(r)  # "0.610 (vs 250 ep)": x the FLOPs of one dense model trained that many epochs
        nz = "-" if r["params_nonzero"] is None else f"{r['params_nonzero']:,}"
        t.add_row(r["recipe"], r["run_id"], r["state"], r["metric"], _fmt(r["reproduced"]), _fmt(r["paper"]),
                  _fmt(r["delta"], signed=True), ok, cost, nz, *([r.get("provenance") or ""] if grouped else []))
    out_console.print(t)
    for run, error in damaged_runs(rows).items():
        click.echo(f"warning: {run}: {error}", err=True)


def _paper_report(paper: str, as_json: bool, show_plan: bool, root: str | None) -> None:
    """`repro report --paper NAME [--json] [--plan]`."""
    from repro.tables import cell_text, claim_counts, claim_line, paper_tables, plan, tables_json  # deferred: h5py

    tables, free = paper_tables(paper, list_runs(run_root(root)))
    if show_plan:
        todo = plan(paper, tables, free)
        if as_json:
            click.echo(json.dumps({"paper": paper, "not_run": sum(len(c["cells"]) for c in todo), "commands": todo},
                                  indent=1))
            return
        for c in todo:
            click.echo(f"{c['command']}    # {len(c['cells'])} cell(s): {'; '.join(c['cells'][:3])}"
                       + (" ..." if len(c["cells"]) > 3 else ""))
        click.echo(f"{sum(len(c['cells']) for c in todo)} cell(s) not run yet, {len(todo)} command(s)")
        return
    if as_json:
        click.echo(json.dumps(tables_json(paper, tables, free), indent=1))
        return
    if not tables and not free:
        click.echo(f"{paper}: no table of this paper is in a recipe")
    for t in tables:
        approx = " (approximate)" if t.approximate and "plot-read" not in t.title else ""
        out = Table("", *t.columns, title=f"{t.title or t.id}{approx}", caption=f"{t.source}; ours / paper, ok = "
                    "within tolerance, off = outside", title_justify="left")
        for r in t.rows:
            out.add_row(r, *(cell_text(t.cells.get((r, c))) for c in t.columns))
        out_console.print(out)
        for cl in t.claims:
            click.echo(claim_line(cl, claim_counts(t, cl)))
    if free:
        out = Table("recipe", "cell", "metric", "ours / paper", title="Other cells", title_justify="left")
        for r in free:
            out.add_row(r.recipe, r.cell.row or "-", r.cell.metric, cell_text(r))
        out_console.print(out)


@cli.command()
@click.option("--arch", default="wrn-28-10", show_default=True)
@click.option("--sparse", is_flag=True, help="Also time the sparse (masked) step.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto")
@click.option("--batch-size", type=click.IntRange(min=1), default=None, help="Default 128 (32 on the CPU).")
@click.option("--precision", type=click.Choice(["auto", "bf16", "fp32"]), default="auto")
@click.option("--steps", type=click.IntRange(min=1), default=None, help="Timed steps (default 20, 3 on the CPU).")
@click.option("--warmup", type=click.IntRange(min=0), default=None)
@click.option("--width", type=float, default=1.0, help="Channel multiplier.")
@click.option("--repeats", type=click.IntRange(min=1), default=3, show_default=True,
              help="Timed windows per variant, alternating; the best is reported.")
@click.option("--compile", "use_compile", is_flag=True)
@click.option("--compile-mode", type=click.Choice(["default", "reduce-overhead", "max-autotune",
                                                   "max-autotune-no-cudagraphs"]), default="default",
              show_default=True, help="torch.compile's mode (implies --compile unless default); reduce-overhead "
              "captures CUDA graphs, the lever for launch-bound nets such as preresnet164.")
@click.option("--topology", is_flag=True,
              help="Also time a topology update: magnitude prune + gradient regrowth over every masked layer (DST).")
@click.option("--topology-density", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.2,
              show_default=True, help="ERK density of the masks the topology update works on.")
@click.option("--topology-updates", type=click.IntRange(min=1), default=None,
              help="Timed topology updates (default 20, 5 on the CPU), after 2 (1) untimed ones.")
@click.option("--baseline", is_flag=True,
              help="Also step the same model the original scripts' way (fp32, eager, host syncs every step, masks by a "
                   "Python loop; with --topology their topology update too) and report the speedup over it.")
@click.option("--image-size", type=click.IntRange(min=8, max=1024), default=None,
              help="Side of the square synthetic images (default 32, CIFAR shape); for the ImageNet archs, e.g. 224.")
@click.option("--decode", is_flag=True, help="Instead: ImageNet JPEG decoding, images/s per CPU core of the Pillow "
              "and the libjpeg-turbo decoder (training and evaluation crops of generated 500x375 JPEGs).")
@click.option("--decode-images", type=click.IntRange(min=1), default=200, show_default=True)
@click.option("--decode-size", default="500x375", show_default=True, help="WIDTHxHEIGHT of the generated JPEGs.")
@click.option("--decode-workers", type=click.IntRange(min=0), default=0, show_default=True,
              help="Also time the real FolderLoader with this many worker processes (0: skip).")
@click.option("--json", "as_json", is_flag=True)
def bench(arch: str, sparse: bool, device: str, batch_size: int | None, precision: str, steps: int | None,
          warmup: int | None, width: float, repeats: int, use_compile: bool, compile_mode: str, topology: bool,
          topology_density: float, topology_updates: int | None, baseline: bool, image_size: int | None,
          as_json: bool, decode: bool = False, decode_images: int = 200, decode_size: str = "500x375",
          decode_workers: int = 0) -> None:
    """Training-step throughput (images/s), dense and sparse, of the real trainer loop on synthetic data; with
    --baseline also the original scripts' step beside it; with --topology the wall time of one prune-and-regrow
    update (median and min, ms); with --decode instead the JPEG decoders' images/s per CPU core."""
    if decode:
        _bench_decode(decode_images, decode_size, decode_workers, repeats, as_json)
        return
    import torch  # deferred: torch, like the rest of bench

    from engine.bench import (  # deferred: torch
        baseline_recipe,
        bench_recipe,
        device_label,
        measure,
        time_topology,
        train_flops_per_image,
    )
    from engine.device import resolve_device

    try:
        canonical_arch(arch)
    except UnknownArch as e:
        raise UsageProblem(f"--arch: {e}") from None
    dev = resolve_device(device)
    cpu = dev.type == "cpu"
    bs = batch_size or (32 if cpu else 128)
    steps = steps or (3 if cpu else 20)
    warmup = warmup if warmup is not None else (1 if cpu else 5)
    side = image_size or 32
    use_compile = use_compile or compile_mode != "default"
    kw_compile = {"compile": use_compile, "compile_mode": compile_mode, "image_size": side}
    recipes = {"dense": bench_recipe(arch, bs, precision, **kw_compile)}
    if sparse:
        recipes["sparse"] = bench_recipe(arch, bs, precision, method="fix", **kw_compile)
    baselines = {}
    if baseline:
        baselines["baseline"] = baseline_recipe(arch, bs, image_size=side)
        if sparse:
            baselines["baseline_sparse"] = baseline_recipe(arch, bs, sparse=True, image_size=side)
    for r in (*recipes.values(), *baselines.values()):
        r.model.width = width
    speed = measure(recipes, dev, steps, warmup, repeats, baselines=baselines)
    result: dict = {"arch": arch, "device": str(dev), "gpu": device_label(dev), "torch": torch.__version__,
                    "batch_size": bs, "image_size": side, "width": width, "compile": use_compile,
                    "compile_mode": compile_mode if use_compile else None,
                    "precision": "bf16" if (precision != "fp32" and not cpu) else "fp32",
                    "dense_img_s": round(speed["dense"], 2),
                    "sparse_img_s": round(speed["sparse"], 2) if sparse else None}
    if sparse:
        result["sparse_overhead"] = round(speed["dense"] / speed["sparse"] - 1, 4)
    gflop = train_flops_per_image(recipes["dense"]) / 1e9
    result["train_gflop_per_image"] = round(gflop, 3)
    result["dense_tflop_s"] = round(speed["dense"] * gflop / 1e3, 3)
    if baseline:
        result["baseline_img_s"] = round(speed["baseline"], 2)
        result["speedup"] = round(speed["dense"] / speed["baseline"], 3)
        if sparse:
            result["baseline_sparse_img_s"] = round(speed["baseline_sparse"], 2)
            result["sparse_speedup"] = round(speed["sparse"] / speed["baseline_sparse"], 3)
    cache = _record_bench(dev, arch, result, width, use_compile)
    if topology:
        n = topology_updates or (5 if cpu else 20)
        kw = {"width": width, "density": topology_density, "updates": n, "warmup": 1 if cpu else 2,
              "precision": precision}
        timing = time_topology(arch, dev, **kw)
        result["topology_update_ms"] = round(timing.median_ms, 3)
        result["topology_update_min_ms"] = round(timing.min_ms, 3)
        if baseline:
            base = time_topology(arch, dev, baseline=True, **kw)
            result["baseline_topology_update_ms"] = round(base.median_ms, 3)
            result["baseline_topology_update_min_ms"] = round(base.min_ms, 3)
            result["topology_speedup"] = round(base.median_ms / timing.median_ms, 3)
        result["topology"] = {"init": "ERK", "density": topology_density, "prune": "magnitude",
                              "growth": "gradient", "prune_rate": timing.method.scfg.prune_rate,
                              "layers": len(timing.initial), "updates": n}
    if as_json:
        click.echo(json.dumps(result))
        return
    t = Table("", "", show_header=False)
    for k, v in result.items():
        t.add_row(k, ", ".join(f"{a} {x}" for a, x in v.items()) if isinstance(v, dict) else str(v))
    out_console.print(t)
    if cache is not None:
        click.echo(f"recorded in {cache} (what `repro plan` reads for this device)")


def _bench_decode(images: int, size: str, workers: int, repeats: int, as_json: bool) -> None:
    """`repro bench --decode`: per-core decode speed of both decoders (and through the loader with workers)."""
    from engine.bench_decode import measure_decode  # deferred: torch, like the rest of bench
    from engine.provenance import cpu_model

    w, _, h = size.lower().partition("x")
    if not (w.isdigit() and h.isdigit() and 16 <= int(w) <= 8192 and 16 <= int(h) <= 8192):
        raise UsageProblem(f"--decode-size: expected WIDTHxHEIGHT between 16 and 8192 px, got {size!r}")
    result = measure_decode(images, repeats, workers, (int(w), int(h))).as_dict() | {"cpu": cpu_model()}
    if as_json:
        click.echo(json.dumps(result))
        return
    t = Table("decoder", "train img/s per core", "eval img/s per core",
              *([f"loader img/s ({workers} workers)"] if workers else []),
              title=f"decoding {images} generated {result['image']} JPEGs (quality {result['quality']}, "
                    f"{result['mean_kb']} KB) to 224 px on {result['cpu'] or 'this CPU'}", title_justify="left")
    for d, v in result["per_core_img_s"].items():
        t.add_row(d, str(v["train"]), str(v["eval"]), *([str(result["loader_img_s"][d])] if workers else []))
    out_console.print(t)


def _record_bench(dev, arch: str, result: dict, width: float, compiled: bool) -> Path | None:  # noqa: ANN001
    """File the dense throughput in the bench cache for `repro plan`; a cache that cannot be written only warns."""
    from engine.throughput import BenchEntry, device_name, record  # deferred: torch, like the rest of bench

    side = result["image_size"]
    entry = BenchEntry(device_name(dev), canonical_arch(arch), result["precision"], result["batch_size"], width,
                       compiled, (3, side, side), result["dense_img_s"])
    try:
        return record(entry)
    except (OSError, UnsafePathError) as e:
        click.echo(f"warning: the throughput was not recorded for `repro plan`: {e}", err=True)
        return None


@cli.command()
@click.argument("recipes", nargs=-1)
@click.option("--jobs", type=click.IntRange(min=1), default=1, show_default=True,
              help="Runs at once: the wall time is for this many (longest first onto the first free slot).")
@click.option("--root", default=None, help="Mark the runs already finished under this run root and give what "
              "remains (what `repro reproduce` would still run).")
@click.option("--json", "as_json", is_flag=True)
def plan(recipes: tuple[str, ...], jobs: int, root: str | None, as_json: bool) -> None:
    """The bill in advance: per run the images, training FLOPs and GPU-hours (at the throughput `repro bench`
    measured on this device, else the published H100 figures), the total, and the wall time with --jobs N."""
    from repro.plan import plan as make_plan  # deferred: torch
    from repro.plan import plan_table, resolve_all

    result = make_plan(resolve_all(recipes), jobs)
    if root is not None:
        _mark_done(result, run_root(root))
    if as_json:
        click.echo(json.dumps(result))
        return
    out_console.print(plan_table(result))
    total = result["total_gpu_hours"]
    n = len(result["runs"])
    line = f"total {total:,.1f} GPU-hours for {n} run{'' if n == 1 else 's'}; wall time with --jobs {jobs}: " \
           f"{result['wall_hours']:,.1f} h"
    if root is not None:
        line += f" (for the {result['remaining_runs']} runs not finished under {root}: " \
                f"{result['remaining_gpu_hours']:,.1f} GPU-hours)"
    click.echo(line)


def _mark_done(result: dict, root: Path) -> None:
    """Flag the runs finished under `root` and total what is left; the wall time becomes the remaining runs'."""
    from repro.plan import makespan  # deferred: only `plan --root` needs it

    left = []
    for r in result["runs"]:
        r["done"] = latest_done(root, r["recipe"], r["tag"]) is not None
        if not r["done"]:
            left.append(r["gpu_hours"])
    result["remaining_runs"] = len(left)
    result["remaining_gpu_hours"] = sum(left)
    result["wall_hours"] = makespan(left, result["jobs"]) if left else 0.0


@cli.command()
@click.option("--arch", help="Registry name, e.g. wrn-28-10.")
@click.option("--init", "init", help="uniform, uniform_plus, ER, ERK, ERK_plus, pruning, prune_uniform, ...")
@click.option("--density", type=float)
@click.option("--num-classes", type=click.IntRange(min=2), default=10, show_default=True)
@click.option("--width", type=float, default=1.0, show_default=True)
@click.option("--erk-power-scale", type=float, default=1.0, show_default=True)
@click.option("--fc-density", type=float, default=1.0, show_default=True, help="ERK_plus: the classifier's density.")
@click.option("--dense", "dense", multiple=True, metavar="PATTERN", help="Weights left dense (fnmatch on names).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--recipe", "recipe_ref", metavar="RECIPE",
              help="Instead of --arch/--init/--density: the masks this recipe's sparse stage starts from "
                   "(snip and grasp score its training data).")
@click.option("--stage", "stage_name", metavar="NAME", help="With --recipe: the stage (default: the first sparse one).")
@click.option("--set", "sets", multiple=True, metavar="K=V", help="With --recipe: override a dotted key.")
@click.option("--smoke", is_flag=True, help="With --recipe: the tiny profile.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
              help="With --recipe: where the masks are drawn (as training would draw them there).")
@click.option("--json", "as_json", is_flag=True)
def sparsity(arch: str | None, init: str | None, density: float | None, num_classes: int, width: float,
             erk_power_scale: float, fc_density: float, dense: tuple[str, ...], seed: int, recipe_ref: str | None,
             stage_name: str | None, sets: tuple[str, ...], smoke: bool, device: str, as_json: bool) -> None:
    """Per-layer densities a sparse init gives, without training: an architecture's expected densities (every conv
    and linear weight masked), or with --recipe the masks that recipe's sparse stage starts from."""
    if recipe_ref:
        if arch or init or density is not None:
            raise UsageProblem("--recipe takes the model and the sparse init from the recipe; drop --arch, --init "
                               "and --density")
        result, title = _recipe_sparsity(recipe_ref, stage_name, sets, smoke, device)
    else:
        missing = [f"--{k}" for k, v in (("arch", arch), ("init", init), ("density", density)) if v is None]
        if missing:
            raise UsageProblem(f"give {', '.join(missing)} (or --recipe)")
        result, title = _arch_sparsity(arch, init, density, num_classes, width, erk_power_scale, fc_density, dense,
                                       seed)
    if as_json:
        click.echo(json.dumps(result))
        return
    t = Table("layer", "shape", "numel", "density", title=f"{title}: overall {result['overall_density']:.6f}")
    for row in result["layers"]:
        t.add_row(row["name"], "x".join(map(str, row["shape"])), str(row["numel"]), f"{row['density']:.6f}")
    out_console.print(t)


def _layer_rows(params: dict, dens: dict[str, float]) -> dict:  # noqa: ANN001 - name -> tensor
    """`repro sparsity`'s result: every masked layer's shape, size and density, and the overall density."""
    from engine.sparse.inits import overall_density  # deferred with the rest of torch: the CLI starts without it

    layers = [{"name": n, "shape": list(p.shape), "numel": p.numel(), "density": dens[n]} for n, p in params.items()]
    return {"overall_density": overall_density(params, dens), "layers": layers}


def _arch_sparsity(arch: str, init: str, density: float, num_classes: int, width: float, erk_power_scale: float,
                   fc_density: float, dense: tuple[str, ...], seed: int) -> tuple[dict, str]:
    """The expected per-layer densities of an init on a freshly seeded `arch` (magnitude pruning: the realised masks
    of its weights). SNIP and GraSP score the training data of a recipe with the default `[data]` (digits) and
    `run.seed` = `seed`, as its training would; `--recipe` shows a real recipe's."""
    # deferred: torch and the engine load only for this command, so the CLI starts fast
    import torch

    from engine.data import make_loaders, recipe_data
    from engine.models import create_model
    from engine.seeds import stage_seeds
    from engine.sparse.inits import MAGNITUDE_INITS, initial_densities, initial_masks, maskable

    try:
        cfg = SparseConfig(density=density, init=init, erk_power_scale=erk_power_scale, fc_density=fc_density,
                           dense_layers=list(dense))
    except ValidationError as e:
        err = e.errors()[0]
        key = str(err["loc"][0]).replace("_", "-")
        raise UsageProblem(f"--{key}: {err['msg'].removeprefix('Value error, ')}") from None
    torch.manual_seed(seed)
    try:
        model = create_model(arch, num_classes, width)
    except (UnknownArch, ValueError) as e:
        raise UsageProblem(str(e)) from None
    params = maskable(model, cfg.dense_layers)
    seeds = stage_seeds(seed, None, 0)
    generator = torch.Generator().manual_seed(seeds.masks)
    if cfg.init in MAGNITUDE_INITS:
        masks = initial_masks(model, list(params), cfg, cfg.density, generator)
        return _layer_rows(params, {n: float(m.float().mean()) for n, m in masks.items()}), f"{arch} {init} d={density}"
    loader, classes = None, num_classes
    if cfg.init in ("snip", "snip_masks", "grasp"):
        recipe = Recipe.model_validate({"name": "sparsity", "paper": "demo", "run": {"seed": seed},
                                        "model": {"arch": arch, "width": width},
                                        "stage": [{"name": "sparse", "method": "fix", "epochs": 1}]})
        data = recipe_data(recipe)
        if data.num_classes != num_classes:
            raise UsageProblem(f"--init {cfg.init} scores the default training data ({recipe.data.dataset}, "
                               f"{data.num_classes} classes): use --num-classes {data.num_classes}, or --recipe")
        loader = make_loaders(recipe.data, data, torch.device("cpu"), seeds.loader)[0]
    dens = initial_densities(model, list(params), cfg, cfg.density, generator, loader, classes)
    return _layer_rows(params, dens), f"{arch} {init} d={density}"


def _recipe_sparsity(ref: str, stage_name: str | None, sets: tuple[str, ...], smoke: bool,
                     device: str) -> tuple[dict, str]:
    """The realised per-layer densities of the masks a recipe's sparse stage starts from (engine.runner
    .starting_masks: the stage's own method draws them, as training does)."""
    # deferred: torch and the engine load only for this command, so the CLI starts fast
    from engine.device import resolve_device
    from engine.runner import starting_masks

    resolved = load(ref, sets, smoke)
    if len(resolved) > 1:
        raise UsageProblem(f"{ref} sweeps into {len(resolved)} runs ({', '.join(r.tag for r in resolved)}); pick one "
                           "with --set KEY=VALUE")
    recipe = resolved[0].recipe
    names = [s.name for s in recipe.stage]
    if stage_name is None:
        sparse = [i for i, s in enumerate(recipe.stage) if s.params.sparse]
        if not sparse:
            raise UsageProblem(f"{recipe.name} has no sparse stage")
        index = sparse[0]
    elif stage_name in names:
        index = names.index(stage_name)
    else:
        raise UsageProblem(f"--stage: {recipe.name} has no stage '{stage_name}'{suggest(stage_name, names)}")
    try:
        masks = starting_masks(recipe, index, resolve_device(device))
    except ValueError as e:
        raise UsageProblem(str(e)) from None
    dens = {n: float(m.float().mean()) for n, m in masks.items()}
    stage = recipe.stage[index]
    scfg = stage.sparse
    what = f"{scfg.init} d={scfg.density}" if scfg is not None else "default sparse init"
    return _layer_rows(masks, dens), f"{recipe.name} stage {stage.name} ({stage.method}, {what}), the starting masks"


@cli.command()
@click.argument("recipes", nargs=-1)
@click.option("--smoke", is_flag=True, help="The tiny profile (a check of the whole pipeline).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto")
@click.option("--nproc", type=click.IntRange(min=1), default=1, help="GPUs (DDP processes) per run.")
@click.option("--jobs", type=click.IntRange(min=1), default=None,
              help="Runs at once on this box, each in its own process on its own --nproc GPUs (default 1; with "
                   "--gpus, one per GPU group).")
@click.option("--gpus", default=None, metavar="LIST", help="The GPUs to use, e.g. 0,1,2,3 (default: all).")
@click.option("--launcher", type=click.Choice(["local", "slurm"]), default=None,
              help="Submit the runs as submitit jobs instead (slurm: a job array; local: submitit's local executor).")
@click.option("--partition", default=None, help="SLURM partition.")
@click.option("--gpus-per-node", type=click.IntRange(min=1), default=None,
              help="SLURM: GPUs per node of a multi-node (ImageNet) run (default --nproc).")
@click.option("--nodes", type=click.IntRange(min=1), default=1, show_default=True,
              help="SLURM: nodes per ImageNet run (torchrun's c10d rendezvous).")
@click.option("--time", "hours", type=click.FloatRange(min=0, min_open=True), default=24.0, show_default=True,
              help="SLURM: the time limit per job, hours (a run that needs longer is requeued and resumes).")
@click.option("--account", default=None, help="SLURM account.")
@click.option("--wait", is_flag=True, help="With --launcher: wait for the jobs, then write the report.")
@click.option("--report", "report_path", default="REPORT.md", show_default=True, help="Where to write the report.")
@_root_option
def reproduce(recipes: tuple[str, ...], smoke: bool, device: str, nproc: int, jobs: int | None, gpus: str | None,
              launcher: str | None, partition: str | None, gpus_per_node: int | None, nodes: int, hours: float,
              account: str | None, wait: bool, report_path: str, root: str | None) -> None:
    """Every recipe (or those named): skip finished runs, resume interrupted ones, start the rest, --jobs at a
    time (or as SLURM jobs); a failed run does not stop the others. Then REPORT.md and each run's figures.
    Several `repro reproduce` processes may share one list (and one file system): each run is claimed first."""
    from repro.farm import items_for, slots_for  # deferred: the launch path imports torch
    from repro.reproduce import finished_dirs, run_local

    slurm_only = {"--partition": partition, "--gpus-per-node": gpus_per_node, "--account": account,
                  "--nodes": nodes if nodes != 1 else None}
    if launcher != "slurm":
        for flag, value in slurm_only.items():
            if value is not None:
                raise UsageProblem(f"{flag} is a SLURM setting: add --launcher slurm")
    if launcher and (jobs or gpus):
        raise UsageProblem("--jobs and --gpus are for one box; with --launcher the scheduler places the runs")
    if wait and not launcher:
        raise UsageProblem("--wait is for --launcher jobs (without it reproduce always waits)")
    base = run_root(root)
    items = items_for(list(recipes) or recipe_names(), smoke=smoke)
    if launcher:
        _submit(items, base, launcher, device, nproc, wait,
                dict(partition=partition, gpus_per_node=gpus_per_node or nproc, nodes=nodes, hours=hours,
                     account=account), report_path)
        return
    gpu_list = [g.strip() for g in gpus.split(",") if g.strip()] if gpus else None
    parallel = (jobs or 1) > 1 or gpu_list is not None
    try:
        slots = slots_for(jobs, gpu_list, nproc, device) if parallel else None
    except RunDirError as e:
        raise UsageProblem(str(e)) from None
    results = run_local(items, base, device=device, nproc=nproc, slots=slots)
    _write_report(finished_dirs(results, base), base, report_path)
    if any(r.state in ("failed", "killed") for r in results):
        sys.exit(1)


def _submit(items, base: Path, launcher: str, device: str, nproc: int, wait: bool,  # noqa: ANN001 - Items
            slurm_kw: dict, report_path: str) -> None:
    """--launcher: submit what is not done yet as submitit jobs; with --wait, wait and write the report."""
    from repro.farm import done_already  # deferred: submitit and torch
    from repro.reproduce import result_line
    from repro.slurm import Slurm, submit

    todo = []
    for item in items:
        done = done_already(base, item)
        if done is not None:
            click.echo(f"{item.label}: done already ({done})")
        else:
            todo.append(item)
    try:
        jobs = submit(todo, base, launcher, Slurm(**slurm_kw), device=device, nproc=nproc) if todo else []
    except RuntimeError as e:  # submitit: no sbatch/srun here, or sbatch refused the job
        raise UsageProblem(f"--launcher {launcher}: {str(e).strip().splitlines()[0]}") from None
    for item, job in jobs:
        click.echo(f"{item.label}: submitted ({launcher} job {job.job_id})")
    click.echo(f"{len(jobs)} job(s) submitted; logs under {base / '.submitit'}; watch them with `repro runs` "
               "or `repro tui`")
    if not wait:
        return
    from repro.farm import Result  # deferred, as above

    failed = False
    results = []
    for item, job in jobs:
        try:
            out = job.result()
            r = Result(item, out["state"], out.get("run_dir"), out.get("error", ""), out.get("seconds", 0.0))
        except Exception as e:  # noqa: BLE001 - submitit re-raises the job's error; one line
            failed = True
            r = Result(item, "failed", error=str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__)
        results.append(r)
        click.echo(result_line(r))
    from repro.reproduce import finished_dirs  # deferred, as above

    _write_report(finished_dirs(results, base) + [d for d in (done_already(base, i) for i in items
                                                                if i not in todo) if d], base, report_path)
    if failed:
        sys.exit(1)


def _write_report(done_dirs: list[Path], base: Path, report_path: str) -> None:
    """Each finished run's figures, then REPORT.md: every run's row and every paper's tables."""
    from repro.report import report_markdown, report_rows
    from repro.tables import paper_names_with_tables, paper_tables, tables_markdown  # deferred: h5py

    done_dirs = list(dict.fromkeys(done_dirs))
    for run_dir in done_dirs:
        _figures(run_dir)
    rows = report_rows([read_run(d) for d in done_dirs])
    sections = [tables_markdown(p, *paper_tables(p, list_runs(base))) for p in paper_names_with_tables()]
    Path(report_path).write_text("\n".join([report_markdown(rows), *sections]))
    click.echo(f"report: {report_path} ({len(rows)} rows)")


def _figures(run_dir: Path) -> None:
    """Every analysis of a run that has a figure, as <run>/figures/<mode>.png."""
    from engine.store import DamagedFile, groups  # deferred: h5py, matplotlib
    from repro.plots import PLOTS
    from repro.plots import plot as draw

    try:
        modes = groups(run_dir / "analysis.h5")
    except DamagedFile as e:
        click.echo(f"warning: no figures: {e}", err=True)
        return
    for mode in modes:
        if mode in PLOTS:
            try:
                draw(run_dir, mode, run_dir / "figures" / f"{mode}.png")
            except Exception as e:  # noqa: BLE001 - a figure that cannot be drawn must not stop the report
                click.echo(f"{run_dir}: no figure for {mode} ({e})", err=True)


@cli.command()
@_root_option
def tui(root: str | None) -> None:
    """The terminal app: recipes, live runs, analyses."""
    from repro.tui.app import run_app  # deferred: textual

    run_app(run_root(root))


def main() -> None:
    """Entry point: one clear line per error, exit 2 for bad usage or recipes, 1 for failed runs."""
    debug = "--debug" in sys.argv or bool(os.environ.get("REPRO_DEBUG"))
    try:
        cli.main(standalone_mode=False)
    except RecipeError as e:
        for line in e.lines:
            click.echo(line, err=True)
        sys.exit(2)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except click.exceptions.Abort as e:  # click turns KeyboardInterrupt (and so SIGTERM's Terminated) into Abort
        if isinstance(e.__context__, Terminated):
            click.echo("terminated (SIGTERM); continue with --resume", err=True)
            sys.exit(128 + Terminated.signum)
        click.echo("aborted", err=True)
        sys.exit(130)
    except (RunDirError, DataError, CheckpointError, DeviceError, UnsafePathError) as e:
        if debug:
            raise
        click.echo(f"error: {e}", err=True)
        sys.exit(2 if isinstance(e, (RunDirError, DeviceError, UnsafePathError)) else 1)
    except Terminated:
        click.echo("terminated (SIGTERM); continue with --resume", err=True)
        sys.exit(128 + Terminated.signum)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except Exception as e:  # noqa: BLE001
        if debug:
            raise
        msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
        click.echo(f"error: {type(e).__name__}: {msg} (rerun with --debug for the traceback)", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
