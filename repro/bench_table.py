"""`repro bench --json` lines (as scripts/gpu_bench.sh collects them) to the README's performance table in markdown.

    python -m repro.bench_table bench.jsonl > bench.md

One row per measurement: ours beside the original scripts' way, the speedup, the sparse step and its overhead, the
topology update, and achieved TFLOP/s with its fraction of the GPU's dense bf16 peak. Lines that are not bench
results (a step that failed or was skipped, another kind of measurement) are listed under the table, never dropped.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

# dense bf16 tensor-core peaks in TFLOP/s (vendor datasheets, without sparsity), matched on the device name
BF16_PEAK_TFLOPS = (("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.0), ("H200", 989.0), ("A100", 312.0))

COLUMNS = ("step", "arch", "batch", "input", "precision", "compile", "ours img/s", "original img/s", "speedup",
           "sparse img/s (vs dense)", "sparse speedup", "topology ms (original)", "TFLOP/s (bf16 peak)")


def bf16_peak(gpu: str) -> float | None:
    """The dense bf16 peak of a GPU by its name, None for one not in the table (or a CPU)."""
    return next((peak for key, peak in BF16_PEAK_TFLOPS if key in gpu), None)


def _num(x: float | None, digits: int = 0) -> str:
    return "–" if x is None else f"{x:,.{digits}f}"


def row(d: dict[str, Any]) -> str:
    """One markdown table row of a bench result."""
    dense, sparse, base = d.get("dense_img_s"), d.get("sparse_img_s"), d.get("baseline_img_s")
    speedup = d.get("speedup")
    sparse_cell = "–" if sparse is None or not dense else f"{sparse:,.0f} ({sparse / dense - 1:+.1%})"
    sparse_speedup = d.get("sparse_speedup")
    topo, topo_base = d.get("topology_update_ms"), d.get("baseline_topology_update_ms")
    topo_cell = "–" if topo is None else f"{topo:,.1f}" + ("" if topo_base is None else f" ({topo_base:,.1f})")
    tflops = d.get("dense_tflop_s")
    peak = bf16_peak(str(d.get("gpu", ""))) if d.get("precision") == "bf16" else None
    flop_cell = "–" if tflops is None else f"{tflops:,.0f}" + ("" if peak is None else f" ({tflops / peak:.0%})")
    side = d.get("image_size", 32)
    mode = d.get("compile_mode") or "default"
    compiled = ("yes" if mode == "default" else mode) if d.get("compile") else "no"
    cells = (d.get("step", "–"), d["arch"] + ("" if d.get("width", 1.0) == 1.0 else f" (width {d['width']:g})"),
             str(d["batch_size"]), f"{side}x{side}", d["precision"], compiled,
             _num(dense), _num(base), "–" if speedup is None else f"{speedup:.2f}x", sparse_cell,
             "–" if sparse_speedup is None else f"{sparse_speedup:.2f}x", topo_cell, flop_cell)
    return "| " + " | ".join(cells) + " |"


def decode_line(d: dict[str, Any]) -> str:
    """A `repro bench --decode` result in one sentence: images/s per CPU core of each decoder, train / eval crops."""
    per = d["per_core_img_s"]
    cells = "; ".join(f"{name} {v['train']:,.0f} / {v['eval']:,.0f}" for name, v in per.items())
    out = (f"JPEG decoding ({d.get('images', '?')} generated {d.get('image', '?')} JPEGs to {d.get('image_size', 224)} "
           f"px, on {d.get('cpu') or 'the CPU'}), images/s per core, training / evaluation crops: {cells}")
    if d.get("loader_img_s"):
        loader = ", ".join(f"{name} {v:,.0f}" for name, v in d["loader_img_s"].items())
        out += f"; through the loader with {d.get('workers')} workers: {loader}"
    return out + "."


def table(lines: list[str]) -> str:
    """The markdown for a list of JSON lines: a caption naming the hardware, the table, then every other line."""
    results, decodes, other = [], [], []
    for line in (x.strip() for x in lines):
        if not line:
            continue
        try:
            d = json.loads(line)
        except json.JSONDecodeError:
            other.append(f"- not JSON: `{line[:120]}`")
            continue
        if isinstance(d, dict) and "dense_img_s" in d and "arch" in d:
            results.append(d)
        elif isinstance(d, dict) and isinstance(d.get("per_core_img_s"), dict):
            decodes.append(decode_line(d))
        else:
            other.append("- " + (", ".join(f"{k}: {v}" for k, v in d.items()) if isinstance(d, dict) else line))
    out = []
    if results:
        gpus = sorted({str(d.get("gpu", d.get("device", "?"))) for d in results})
        torches = sorted({str(d.get("torch", "?")) for d in results})
        out.append(f"Measured by `repro bench` on {', '.join(gpus)}, torch {', '.join(torches)}. Original: the "
                   "original scripts' step (fp32, eager, host syncs every step, masks by a Python loop); topology: "
                   "one prune-and-regrow over all layers, median ms.")
        out.append("")
        out.append("| " + " | ".join(COLUMNS) + " |")
        out.append("|" + "---|" * len(COLUMNS))
        out.extend(row(d) for d in results)
    if decodes:
        if out:
            out.append("")
        out.extend(decodes)
    if other:
        if out:
            out.append("")
        out.append("Other lines:")
        out.extend(other)
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Print the table of the JSON lines in the files named (or on stdin)."""
    args = sys.argv[1:] if argv is None else argv
    lines = [x for a in args for x in Path(a).read_text().splitlines()] if args else sys.stdin.read().splitlines()
    sys.stdout.write(table(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
