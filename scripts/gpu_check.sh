#!/usr/bin/env bash
# One GPU check (about 8 minutes on one H200; timed parts below), everything it measures under one folder:
#   bash scripts/gpu_check.sh [OUT_DIR]          # default: gpu-check/
# 1. library versions and the device; 2. pytest -m gpu (merged vs low-rank in bf16, the shape
# benchmark on CUDA, the embedded checkpoints in every mode through Pipeline.from_pretrained on
# CUDA: the Studio's code path without gradio); 3. 20 generator-training steps at Qwen3-0.6B's
# shape in bf16, without and with gradient checkpointing (seconds per step, peak memory, the
# estimate); 4. the shape benchmark at Qwen3-0.6B and Qwen3-4B shapes, M = 256 (M = 1024 blocks were
# cut by these limits in both recorded runs: run them by hand, `-M 1024`, ~40-50 s per query); 5. TFlow over its
# limit at answer lengths 4, 32 and 128, three runs each (never run yet: no GPU since it was added).
#
# It installs nothing from the network. A machine without transformers 5.24 / peft 0.21.2
# (e.g. one with torch 2.11 + transformers 5.17 and no registry) gets them as wheel files in
# .whl/ next to this repository's root, made where pip works (Python 3.12 machine shown):
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#     -d .whl transformers==5.24.0 peft==0.21.2 tokenizers==0.23.3 regex==2026.5.9
# and this script installs them into /tmp/tflow-site (PYTHONPATH) with --no-index.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR=${1:-gpu-check}
mkdir -p "$OUT_DIR"
LOG="$OUT_DIR/gpu_check.log"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 TOKENIZERS_PARALLELISM=false
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/tflow-site .whl/*.whl \
    && export PYTHONPATH=/tmp/tflow-site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
step() {  # step NAME SECONDS COMMAND...: run with a time limit, log it, never stop the script
  local name=$1 limit=$2; shift 2
  echo "=== $name (limit ${limit}s): $*" | tee -a "$LOG"
  local t0=$SECONDS
  timeout "$limit" "$@" 2>&1 | tr '\r' '\n' | grep -v -E '^\s*$|Loading weights|it/s\]$|query/s' | tee -a "$LOG"
  echo "=== $name: exit ${PIPESTATUS[0]} after $((SECONDS - t0)) s" | tee -a "$LOG"
}
step versions 30 python3 -c "
import torch, transformers, peft, accelerate, safetensors, tokenizers, sys
print('python', sys.version.split()[0], '| torch', torch.__version__, '| cuda', torch.version.cuda, '| transformers', transformers.__version__,
      '| peft', peft.__version__, '| accelerate', accelerate.__version__, '| safetensors', safetensors.__version__, '| tokenizers', tokenizers.__version__)
print('device:', torch.cuda.get_device_name() if torch.cuda.is_available() else 'NO CUDA DEVICE')
"
step pytest-gpu 75 python3 -m pytest -q -m gpu tests/method/test_gpu.py -p no:cacheprovider
for ckpt in "" "--gradient-checkpointing"; do
  step "train qwen3-0.6b bf16 ${ckpt:-no checkpointing}" 45 python3 -m tflow.tools.train --shape qwen3-0.6b --device cuda --task relay \
    --steps 20 --batch-size 8 --eval-every 1000 --eval-size 16 --d-model 512 --n-heads 4 --chunk-size 512 --out /tmp/tflow-train $ckpt
done
# The cost per shape and message length, one process per shape (a first query in a process paid a
# one-off ~25 s on an H200 in both shapes; the warm-up query takes it). Each JSON is rewritten after
# every block. Measured there: 0.6B ~18 s per counted query at M = 256 (the whole step 95 s, its first
# query 53 s); 4B ~25 s (the whole step 70 s).
step "bench qwen3-0.6b M=256" 160 python3 -m tflow.tools.bench --workload shape --shape qwen3-0.6b --device cuda --dtype bf16 \
  -M 256 --queries 2 --warmup 1 --json "$OUT_DIR/bench-qwen3-0.6b.json"
step "bench qwen3-4b M=256" 160 python3 -m tflow.tools.bench --workload shape --shape qwen3-4b --device cuda --dtype bf16 \
  -M 256 --queries 2 --warmup 1 --json "$OUT_DIR/bench-qwen3-4b.json"
# TFlow over its limit by answer length, 3 runs each (min / median / max), and the decoding steps' fraction of a
# device copy per mode (the JSON's bandwidth.*.decode_fraction_of_copy_bandwidth); TextMAS left out (not needed)
step "bench qwen3-0.6b R=4,32,128 x3" 150 python3 -m tflow.tools.bench --workload shape --shape qwen3-0.6b --device cuda \
  --dtype bf16 -M 64 -R 4,32,128 --repeats 3 --modes single,tflow --queries 2 --warmup 1 \
  --json "$OUT_DIR/bench-qwen3-0.6b-R4-32-128.json"
echo "gpu check done: $OUT_DIR" | tee -a "$LOG"
