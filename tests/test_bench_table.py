"""repro.bench_table: `repro bench --json` lines to the README's performance table, and scripts/gpu_bench.sh end to end
on the CPU (BENCH_SMOKE=1)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from repro.bench_table import bf16_peak, main, table

ROOT = Path(__file__).resolve().parents[1]

WRN = {"step": "wrn_b128", "wall_s": 41, "arch": "wrn-28-10", "device": "cuda", "gpu": "NVIDIA H100 80GB HBM3",
       "torch": "2.11.0", "batch_size": 128, "image_size": 32, "width": 1.0, "compile": False, "precision": "bf16",
       "dense_img_s": 10400.0, "sparse_img_s": 10192.0, "sparse_overhead": 0.0204, "train_gflop_per_image": 31.46,
       "dense_tflop_s": 327.184, "baseline_img_s": 3470.0, "speedup": 2.997, "baseline_sparse_img_s": 3465.0,
       "sparse_speedup": 2.941, "topology_update_ms": 18.25, "topology_update_min_ms": 17.9,
       "baseline_topology_update_ms": 137.0, "baseline_topology_update_min_ms": 130.0, "topology_speedup": 7.507}
FGE = {"step": "fge_preresnet164_compile", "arch": "preresnet164", "device": "cuda", "gpu": "NVIDIA H100 80GB HBM3",
       "torch": "2.11.0", "batch_size": 128, "image_size": 32, "width": 1.0, "compile": True, "precision": "fp32",
       "dense_img_s": 8424.4, "sparse_img_s": None, "dense_tflop_s": 12.0, "baseline_img_s": 2018.0, "speedup": 4.175}


def test_the_table_of_hand_made_lines() -> None:
    lines = [json.dumps(WRN), "", json.dumps(FGE), '{"step": "wrn_b512_compile", "error": "exit 124"}', "Traceback"]
    assert table(lines) == (
        "Measured by `repro bench` on NVIDIA H100 80GB HBM3, torch 2.11.0. Original: the original scripts' step "
        "(fp32, eager, host syncs every step, masks by a Python loop); topology: one prune-and-regrow over all "
        "layers, median ms.\n"
        "\n"
        "| step | arch | batch | input | precision | compile | ours img/s | original img/s | speedup "
        "| sparse img/s (vs dense) | sparse speedup | topology ms (original) | TFLOP/s (bf16 peak) |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
        "| wrn_b128 | wrn-28-10 | 128 | 32x32 | bf16 | no | 10,400 | 3,470 | 3.00x | 10,192 (-2.0%) | 2.94x "
        "| 18.2 (137.0) | 327 (33%) |\n"
        "| fge_preresnet164_compile | preresnet164 | 128 | 32x32 | fp32 | yes | 8,424 | 2,018 | 4.17x | – | – | – "
        "| 12 |\n"
        "\n"
        "Other lines:\n"
        "- step: wrn_b512_compile, error: exit 124\n"
        "- not JSON: `Traceback`\n")


def test_peaks_by_name_and_a_width_in_the_arch_cell() -> None:
    assert [bf16_peak(g) for g in ("NVIDIA H200", "NVIDIA H100 PCIe", "NVIDIA H100 80GB HBM3", "Intel Xeon")] == \
           [989.0, 756.0, 989.0, None]
    narrow = dict(WRN, width=0.25, image_size=224, sparse_img_s=None, topology_update_ms=None)
    assert "| wrn-28-10 (width 0.25) | 128 | 224x224 |" in table([json.dumps(narrow)])


def test_the_compile_cell_names_a_mode_other_than_default() -> None:
    graphs = dict(FGE, compile_mode="reduce-overhead")
    assert "| 32x32 | fp32 | reduce-overhead | 8,424 |" in table([json.dumps(graphs)])
    assert "| 32x32 | fp32 | yes | 8,424 |" in table([json.dumps(dict(FGE, compile_mode="default"))])


def test_a_decode_line_is_a_sentence_under_the_table() -> None:
    decode = {"step": "decode", "images": 200, "image": "500x375", "quality": 90, "mean_kb": 97.1, "image_size": 224,
              "resize": 256, "per_core_img_s": {"pillow": {"train": 291.2, "eval": 298.0},
                                                "turbo": {"train": 407.4, "eval": 400.1}},
              "turbo_speedup": {"train": 1.4, "eval": 1.34}, "workers": 8,
              "loader_img_s": {"pillow": 1811.6, "turbo": 2500.4}, "cpu": "Intel Xeon"}
    assert table([json.dumps(FGE), json.dumps(decode)]).endswith(
        "| 12 |\n\nJPEG decoding (200 generated 500x375 JPEGs to 224 px, on Intel Xeon), images/s per core, training "
        "/ evaluation crops: pillow 291 / 298; turbo 407 / 400; through the loader with 8 workers: pillow 1,812, "
        "turbo 2,500.\n")


def test_main_reads_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "bench.jsonl"
    f.write_text(json.dumps(FGE) + "\n")
    assert main([str(f)]) == 0
    assert capsys.readouterr().out == table([json.dumps(FGE)])


@pytest.mark.slow
def test_gpu_bench_script_runs_on_the_cpu_with_tiny_models(tmp_path: Path) -> None:
    """The prepared GPU script under BENCH_SMOKE=1 and a 45 s budget: every step leaves one line (a result, a step
    stopped at its limit, or one skipped for the budget), the first a result, and the table is written."""
    env = dict(os.environ, BENCH_SMOKE="1", OUT=str(tmp_path), PYTHON=sys.executable, BENCH_BUDGET_S="45",
               REPRO_CACHE=str(tmp_path / "cache"), OMP_NUM_THREADS="1")
    res = subprocess.run([str(ROOT / "scripts" / "gpu_bench.sh")], env=env, capture_output=True, text=True,
                         timeout=240)
    assert res.returncode == 0, res.stderr
    lines = [json.loads(x) for x in (tmp_path / "bench.jsonl").read_text().splitlines()]
    assert [d["step"] for d in lines] == ["wrn_b128", "fge_preresnet164", "decode", "wrn_b512_compile",
                                          "wrn_b128_compile", "fge_preresnet164_compile"]
    first = lines[0]
    assert first["dense_img_s"] > 0 and first["baseline_img_s"] > 0 and first["baseline_topology_update_ms"] > 0
    assert all((("dense_img_s" in d) or ("per_core_img_s" in d)) != ("error" in d) for d in lines)
    assert (tmp_path / "bench.md").read_text() == table((tmp_path / "bench.jsonl").read_text().splitlines())
