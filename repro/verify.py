"""`repro verify RUN_DIR`: is a run directory (one's own, or an unpacked bundle from someone else) what its manifest
says, do its stored analyses follow from its stored predictions, and (--deep) do its member checkpoints still
produce those predictions. Reads only the run directory it is given."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from engine import manifest
from engine.analyses import AnalysisContext
from engine.device import resolve_device
from engine.evaluate import predict_probs
from engine.store import groups, read_group
from repro.recipe import load_resolved
from repro.recompute import Check, compare, recompute

DEEP_TOL_FP32 = 1e-4
"""--deep: largest |stored - recomputed| of a member probability for a run trained on the CPU (fp32)."""
DEEP_TOL_GPU = 2e-2
"""--deep: the same for a run on a GPU, whose bf16 autocast (or TF32 convolutions) moves probabilities by ~1e-2."""
NO_MANIFEST = "no manifest.json (written by an older version): content not checked"


@dataclass
class Result:
    """Everything `repro verify` found; ok only when every part agrees."""

    run_dir: str
    manifest: list[str] = field(default_factory=list)
    manifest_note: str = ""
    notes: list[str] = field(default_factory=list)
    weights_absent: bool = False
    checks: list[Check] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    deep: list[Check] = field(default_factory=list)
    deep_tolerance: float | None = None

    @property
    def ok(self) -> bool:
        return not self.manifest and all(c.ok for c in self.checks) and all(c.ok for c in self.deep)

    def to_json(self) -> dict[str, Any]:
        clean = [asdict(c) for c in [*self.checks, *self.deep]]
        for c in clean:  # JSON has no NaN or Infinity
            for k in ("stored", "recomputed", "diff"):
                c[k] = c[k] if np.isfinite(c[k]) else None
        n = len(self.checks)
        return {"run_dir": self.run_dir, "ok": self.ok, "manifest": {"checked": not self.manifest_note,
                "note": self.manifest_note or None, "mismatches": self.manifest, "notes": self.notes},
                "checks": clean[:n], "not_recomputed": self.skipped, "deep": clean[n:] if self.deep else None,
                "deep_tolerance": self.deep_tolerance, "tolerance": {"relative": 1e-5, "absolute": 1e-7}}


def context(run_dir: Path, device: str = "cpu") -> Any:
    """The engine's view of the run (its resolved recipe, members and data), on `device`."""
    return AnalysisContext(recipe=load_resolved(run_dir / "recipe.toml"), run_dir=run_dir,
                           device=resolve_device(device))


def ran_on_gpu(run_dir: Path) -> bool:
    """Whether the run trained on a GPU (status.json's gpu), where bf16 autocast or TF32 change the last digits."""
    try:
        status = json.loads((run_dir / "status.json").read_text())
    except (OSError, ValueError):
        return True  # unknown: the looser tolerance
    return str(status.get("gpu", "none")) != "none" or str(status.get("device", "")) == "cuda"


def without_weights(run_dir: Path, problems: list[str]) -> list[str]:
    """The manifest's "missing" lines of checkpoints when every checkpoint it lists is missing (a copy bundled with
    --no-weights): then they are a note, not a failure. A copy missing only some checkpoints fails."""
    data = manifest.read(run_dir) or {"files": {}}
    listed = [k for k in data["files"] if k.endswith(".pt")]
    missing = [f"{k}: missing" for k in listed]
    return missing if listed and all(line in problems for line in missing) else []


def uncovered(run_dir: Path) -> list[str]:
    """Checkpoints, analysis.h5 and metrics.jsonl present in the run directory that manifest.json does not list
    (written before manifests existed, e.g. an older run later re-analysed): a note each."""
    listed = set((manifest.read(run_dir) or {"files": {}})["files"])
    present = sorted(p.relative_to(run_dir).as_posix() for p in run_dir.glob("*/*.pt") if p.is_file())
    present += [n for n in (manifest.H5, "metrics.jsonl") if (run_dir / n).is_file()]
    return [f"{rel}: not in manifest.json (its content is not checked)" for rel in present if rel not in listed]


def deep_checks(ctx: Any, tol: float) -> list[Check]:
    """Each member checkpoint reloaded and run over the evaluation split again, against /predict's member_probs."""
    g = read_group(ctx.h5, "predict")
    stored = np.asarray(g["member_probs"])
    names = list(g["member_names"])
    out = []
    loader = ctx.eval_loader()
    for m in ctx.members():
        if not (ctx.run_dir / m["path"]).is_file():
            out.append(Check("deep", f"{m['path']}: not in this copy", float("nan"), float("nan"), float("inf"),
                             False))
            continue
        if m["name"] not in names:
            out.append(Check("deep", f"{m['name']}: not in /predict", float("nan"), float("nan"), float("inf"), False))
            continue
        probs = predict_probs(ctx.load_member(m), loader, ctx.amp).numpy()
        out.append(compare("deep", f"{m['name']} ({m['path']}) probs", stored[names.index(m["name"])], probs,
                           rtol=0.0, atol=tol))
    return out


def verify(run_dir: Path, deep: bool = False, device: str = "cpu") -> Result:
    """Check the manifest, recompute the analyses and (deep) the members' predictions of one run directory."""
    run_dir = Path(run_dir)
    res = Result(str(run_dir))
    try:
        res.manifest = manifest.verify_manifest(run_dir)
        res.notes = uncovered(run_dir)
    except FileNotFoundError:
        res.manifest_note = NO_MANIFEST
    except ValueError as e:
        res.manifest = [str(e)]
    weightless = without_weights(run_dir, res.manifest)
    if weightless:
        res.manifest = [line for line in res.manifest if line not in weightless]
        res.weights_absent = True
        res.notes.insert(0, f"no checkpoint of manifest.json is in this copy (bundled with --no-weights?): "
                            f"{len(weightless)} not checked")
    ctx = context(run_dir, device)
    if (run_dir / "analysis.h5").exists():
        res.checks, res.skipped = recompute(run_dir, ctx)
    else:
        res.skipped = ["analysis.h5: none in this run directory (nothing to recompute)"]
    if deep:
        if "predict" not in groups(ctx.h5):
            res.deep = [Check("deep", "no /predict to compare with", float("nan"), float("nan"), float("inf"), False)]
        else:
            res.deep_tolerance = DEEP_TOL_GPU if ran_on_gpu(run_dir) else DEEP_TOL_FP32
            res.deep = deep_checks(ctx, res.deep_tolerance)
    return res


def _num(v: float) -> str:
    return "nan" if np.isnan(v) else f"{v:.6g}"


def render(res: Result, echo: Any) -> None:
    """The human-readable report: manifest lines first (first mismatch first), then the table, then the verdict."""
    if res.manifest_note:
        echo(res.manifest_note)
    elif res.manifest:
        echo(f"manifest.json: {len(res.manifest)} file(s) do not match")
        for line in res.manifest:
            echo(line)
    else:
        echo("manifest.json: every file " + ("in this copy " if res.weights_absent else "") + "matches")
    for line in res.notes:
        echo(line)
    rows = [*res.checks, *res.deep]
    if rows:
        t = Table(title="stored vs recomputed (ok: |diff| <= 1e-5 x |value| + 1e-7"
                  + (f"; deep: <= {res.deep_tolerance:g}" if res.deep else "") + ")")
        for col in ("analysis", "quantity", "stored", "recomputed", "max |diff|", "ok"):
            t.add_column(col, justify="right" if col in ("stored", "recomputed", "max |diff|") else "left")
        for c in rows:
            t.add_row(c.analysis, c.quantity, _num(c.stored), _num(c.recomputed), _num(c.diff),
                      "ok" if c.ok else "DIFFERS")
        Console(width=160, soft_wrap=False).print(t)
    for line in res.skipped:
        echo(line)
    bad = [c for c in rows if not c.ok]
    for c in bad:
        echo(f"{c.analysis} {c.quantity}: stored {_num(c.stored)}, recomputed {_num(c.recomputed)}")
    echo("verified: all agree" if res.ok else "NOT verified")
