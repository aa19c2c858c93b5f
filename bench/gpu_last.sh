#!/usr/bin/env bash
# One device call: lockstep vs async scheduler on AsyncLLM (GSM8K, W=16), then the
# Llemma-34B-shaped replay at the H100 budget of small synthetic ETS/REBASE runs.
set -uo pipefail
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false VLLM_USE_FLASHINFER_SAMPLER=0
G="policy.dtype=bfloat16 policy.enforce_eager=false policy.cpu_kv_space_gb=null policy.block_size=16"
timeout ${T1:-200} python3 bench/scheduler.py --problems 64 --width 16 --concurrency 16 --max-tokens 192 \
  --max-step-tokens 48 --selector ${SEL:-ets} --override dataset=gsm8k dataset.path=.gpudata/gsm8k_test.jsonl $G \
  2>&1 | grep -v -i "warn\|INFO\|it/s\]" | tail -8 | tee $OUT/scheduler.md
for w in 16 64; do for s in ets rebase; do
  python3 -m ets +experiment=synthetic selector=$s search.width=$w dataset.limit=${RP:-8} search.concurrency=8 \
    hydra.run.dir=.gpudata/runs/synthetic_${s}_w$w > /dev/null 2>&1
done; done
timeout ${T2:-270} bash bench/gpu_study.sh replay34b h100 2>&1 | grep -v -i "warn\|INFO\|it/s\]" | tail -14
