#!/usr/bin/env bash
# Issue 11 on a lent GPU: bench.py with the paper-size nets, fp32 and bf16, eager-prepared and torch.compile.
# Every figure is still a ratio against the original network + sampler in plain fp32, timed in the same process.
# Budget: under 9 minutes on an H200 (each run has its own timeout; bench.py saves after every section, so a
# timeout loses only the unfinished sections).
#
#   bash benchmarks/gpu_bench.sh                                  # on the GPU machine
#   DEVICE=cpu NET=tiny SIZES=64 STEPS=2 QUICK=--quick LIMITS="300 300 900 300" bash benchmarks/gpu_bench.sh  # CPU check
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
DEVICE=${DEVICE:-cuda}
NET=${NET:-paper}
SIZES=${SIZES:-256 512}   # sampling sizes; the latent-vs-pixel section runs 1024
STEPS=${STEPS:-20}
QUICK=${QUICK:-}
OUT=${OUT:-benchmarks/results}
TAG=${TAG:-gpu}
LIMITS=${LIMITS:-150 120 180 90}   # seconds for the fp32, bf16, bf16+compile and large-photo runs
read -r LIMIT_FP32 LIMIT_BF16 LIMIT_COMPILE LIMIT_LARGE <<< "$LIMITS"
status=0

run() {  # run NAME SECONDS ARGS...: one bench.py run under its own time limit
    local name=$1 limit=$2
    shift 2
    echo "== $name (limit ${limit}s): $*"
    timeout "$limit" "$PY" benchmarks/bench.py --device "$DEVICE" --net "$NET" --steps "$STEPS" $QUICK \
        --output "$OUT/bench_${TAG}_${name}" "$@" || { echo "!! $name failed or timed out"; status=1; }
}

"$PY" -c "import torch; print(torch.__version__, torch.cuda.is_available() and torch.cuda.get_device_name(0))"
# shellcheck disable=SC2086
run fp32 "$LIMIT_FP32" --sizes $SIZES --repeats 2 --train-optims adamw --skip large
# shellcheck disable=SC2086
run bf16 "$LIMIT_BF16" --sizes $SIZES --repeats 2 --precision bf16 --skip large --train-optims adamw
# Compiling the paper net takes about a minute per shape on a GPU host: one size, no training section.
run bf16_compile "$LIMIT_COMPILE" --sizes "${SIZES%% *}" --repeats 2 --precision bf16 --compile --skip training large compare
# 3000x2000 and 6000x4000 through the real restore command (paper nets, 20 steps; QUICK: one small photo).
run large "$LIMIT_LARGE" --skip sampling training autoencoder compare
exit $status
