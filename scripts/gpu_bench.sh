#!/usr/bin/env bash
# Every figure issue 19 asks for, in ONE call on a lent GPU (about 8 minutes on an H100/H200), most important first:
# each step is one `repro bench --json` under its own time limit and all of them under a total budget, so one slow
# compile cannot eat the rest. Writes $OUT/bench.jsonl (one JSON line per step, with "step" and "wall_s"; a failed,
# timed-out or skipped step is a line with "error"), $OUT/bench.md (the README's performance table, by
# repro.bench_table) and $OUT/bench.log (every step's stderr).
#
#   scripts/gpu_bench.sh                 # or: make bench-gpu
#   BENCH_SMOKE=1 scripts/gpu_bench.sh   # the same steps on the CPU with tiny models, to check the script runs
#
# Environment: OUT (default ./bench-out), PYTHON (default .venv/bin/python, else python3), BENCH_BUDGET_S (total
# seconds, default 470; a step gets what is left of it, at most its own limit, and is skipped under 20 s left).
# Besides torch, `repro bench` imports click, rich, h5py, numpy, pydantic (with pydantic-core, annotated-types,
# typing-inspection), tomli-w and simplejpeg: on a GPU box without network, run scripts/gpu_wheels.sh here first
# and carry .whl/ along; this script installs what it finds there into /tmp/site.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-bench-out}
mkdir -p "$OUT"
JSONL=$OUT/bench.jsonl LOG=$OUT/bench.log
: >"$JSONL"
: >"$LOG"
if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
# wheels from scripts/gpu_wheels.sh, carried to a bare machine: installed only where the packages are missing
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1 && ! "$PYTHON" -c "import pydantic, tomli_w, simplejpeg" 2>/dev/null; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        .whl/*.whl >>"$LOG" 2>&1 || { echo "gpu_bench: installing .whl/ failed (see $LOG)" >&2; exit 2; }
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
if ! "$PYTHON" -c "import repro.cli" 2>>"$LOG"; then
    echo "gpu_bench: $PYTHON cannot import repro.cli (a missing package? see $LOG; carry it as a wheel)" >&2
    exit 2
fi
BUDGET=${BENCH_BUDGET_S:-470}
START=$SECONDS

if [ "${BENCH_SMOKE:-0}" = 1 ]; then  # tiny nets on the CPU: checks the steps, the JSON and the table, not speed
    WRN=cifar_resnet_8 FGE=preresnet20 DEV=cpu PREC=fp32 B=4 BIG=8
    TINY=(--width 0.25 --steps 1 --warmup 0 --repeats 1 --topology-updates 1)
    DECODE=(--decode-images 4 --decode-size 96x64 --repeats 1)
else
    WRN=wrn-28-10 FGE=preresnet164 DEV=cuda PREC=bf16 B=128 BIG=512
    TINY=()
    DECODE=(--decode-workers 8)
    nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,power.limit --format=csv >>"$LOG" 2>&1
fi

# step NAME LIMIT_S ARGS...: one `repro bench --json ARGS` under min(LIMIT_S, budget left), its line into $JSONL
step() {
    local name=$1 limit=$2 left t0 rc line
    shift 2
    left=$((BUDGET - (SECONDS - START)))
    if [ "$left" -lt 20 ]; then
        echo "{\"step\": \"$name\", \"error\": \"skipped: the ${BUDGET} s budget was spent\"}" >>"$JSONL"
        return
    fi
    [ "$limit" -gt "$left" ] && limit=$left
    echo "== $name (limit ${limit} s): repro bench $*" | tee -a "$LOG" >&2
    t0=$SECONDS
    line=$(set -o pipefail; timeout --kill-after=10 "$limit" "$PYTHON" -m repro.cli bench --json "$@" 2>>"$LOG" |
           tail -n 1)
    rc=$?
    if [ "$rc" -eq 0 ] && [ "${line:0:1}" = "{" ]; then
        echo "{\"step\": \"$name\", \"wall_s\": $((SECONDS - t0)), ${line:1}" >>"$JSONL"
    else
        [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ] && rc="$rc (over its ${limit} s limit)"
        echo "{\"step\": \"$name\", \"wall_s\": $((SECONDS - t0)), \"error\": \"exit $rc, see bench.log\"}" >>"$JSONL"
    fi
    echo "   $name: $((SECONDS - t0)) s" >&2
}

common=(--device "$DEV" --precision "$PREC" "${TINY[@]}")
# 1. WRN-28-10 at the paper's batch, eager: dense, sparse, the original way beside both, one topology update each way
step wrn_b128 150 --arch "$WRN" --batch-size "$B" --sparse --baseline --topology "${common[@]}"
# 2. FGE's PreResNet-164 (launch-bound), eager, against the original way
step fge_preresnet164 90 --arch "$FGE" --batch-size "$B" --baseline "${common[@]}"
# 3. ImageNet decoding: images/s per CPU core of Pillow and libjpeg-turbo, and through the loader with 8 workers
step decode 60 --decode "${DECODE[@]}"
# 4. WRN-28-10 at batch 512 compiled: the fraction of the bf16 peak (31.46 GFLOP per training image)
step wrn_b512_compile 150 --arch "$WRN" --batch-size "$BIG" --compile "${common[@]}"
# 5. WRN-28-10 at batch 128 compiled: dense and sparse against the original way
step wrn_b128_compile 180 --arch "$WRN" --batch-size "$B" --sparse --baseline --compile "${common[@]}"
# 6. PreResNet-164 compiled with CUDA graphs (launch-bound: reduce-overhead is the lever, target 4x the original way)
step fge_preresnet164_compile 180 --arch "$FGE" --batch-size "$B" --baseline --compile-mode reduce-overhead \
    "${common[@]}"

"$PYTHON" -m repro.bench_table "$JSONL" >"$OUT/bench.md"
cat "$OUT/bench.md"
echo "gpu_bench: $((SECONDS - START)) s; $JSONL, $OUT/bench.md, $LOG" >&2
