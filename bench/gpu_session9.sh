#!/usr/bin/env bash
# One device call of session 9 (issue 9/11): bench/engine.py with every problem in flight,
# lockstep (offline engine, with the raw bound) then async (AsyncLLM), ETS and REBASE.
# Run on the GPU node from the repo root with PYTHONPATH set; tables go to $OUT.
set -uo pipefail
: "${OUT:?}"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false VLLM_USE_FLASHINFER_SAMPLER=0
export VLLM_WORKER_MULTIPROC_METHOD=spawn
G="policy.dtype=bfloat16 policy.enforce_eager=false policy.cpu_kv_space_gb=null policy.block_size=16"
C=${CONC:-64}
for sch in ${SCHEDULERS:-lockstep async}; do
  timeout ${T:-280} python3 bench/engine.py --problems ${PROBLEMS:-64} --width ${W:-16} --concurrency $C \
    --max-tokens 192 --max-step-tokens 48 --data .gpudata/gsm8k_test.jsonl --scheduler $sch \
    --out $OUT/engine_${sch}_c$C --override $G ${EXTRA:-} 2>&1 | grep -v -i "warn\|INFO\|it/s\]" \
    | tail -${TAILN:-8} | tee $OUT/engine_${sch}_c$C.md
done
