#!/usr/bin/env bash
# Issue 8 §5, real model: ETS vs REBASE with the embedded SmolLM2 (vLLM, bf16) and its own
# step log-probabilities as the PRM, on GSM8K and MATH500 at W = 16 and 64, on one GPU.
# The eight runs go in parallel, one engine each (SmolLM2 needs little memory; the search,
# not the GPU, is the bottleneck of one process), so the whole study fits one device call.
#
#   OUT=/tmp/out PROBLEMS=100 bash bench/gpu_real_study.sh      # data under .gpudata/
#
# SHARDS=n splits every run over n processes (dataset.shard=i/n, merged with python -m ets.merge).
# TIMEOUT=SECONDS stops each run cleanly (SIGINT; finished problems kept, reported as
# partial). Writes $OUT/real_study.md (one row per run) and $OUT/real_runs.tar.gz (every run dir:
# config, summary, problems.jsonl with the full trees — also the real traces the clustering
# threshold and the synthetic world are calibrated on).
set -uo pipefail
: "${OUT:?set OUT}"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false VLLM_USE_FLASHINFER_SAMPLER=0
PY=${PYTHON:-python3}
N=${PROBLEMS:-100}
RUNS=${RUNS:-.gpudata/real}
MEM=${MEM:-0.1}
GPU=(policy=smollm2_vllm policy.dtype=bfloat16 policy.enforce_eager=false policy.cpu_kv_space_gb=null
     policy.block_size=16 policy.gpu_memory_utilization=$MEM prm=logprob search.concurrency=${CONC:-32}
     search.max_tokens=${MAXTOK:-512} search.max_step_tokens=${STEPTOK:-128})
declare -A DATA=([gsm8k]=.gpudata/gsm8k_test.jsonl [math500]=.gpudata/math500.jsonl)
declare -A LAMBDA=([16]=1.5 [64]=1.4)
mkdir -p "$RUNS"
pids=()
for ds in ${DATASETS:-gsm8k math500}; do
  for w in ${WIDTHS:-16 64}; do
    for sel in ${SELECTORS:-ets rebase}; do
      extra=()
      [ "$sel" = ets ] && extra=(selector.coverage_weight=${LAMBDA[$w]})
      name=${ds}_${sel}_w$w
      for ((i = 0; i < ${SHARDS:-1}; i++)); do
        # SHARDS=n: n processes per run (dataset.shard=i/n), merged below into $RUNS/$name
        # (shard, then slice: shard i/n with limit N/n is every n-th of the first N problems)
        shard=(dataset.limit=$N); dir=$RUNS/$name
        [ "${SHARDS:-1}" -gt 1 ] && shard=(dataset.shard=$i/$SHARDS dataset.limit=$((N / SHARDS))) && dir=$RUNS/shards/$name/shard$i
        timeout -s INT ${TIMEOUT:-3000} $PY -m ets "${GPU[@]}" dataset=$ds dataset.path=${DATA[$ds]} selector=$sel \
          search.width=$w "${extra[@]}" "${shard[@]}" hydra.run.dir=$dir > $RUNS/$name.$i.log 2>&1 &
        pids+=($!)
        sleep ${STAGGER:-25}  # engines profile memory at start-up: concurrent starts misread it
      done
    done
  done
done
for p in "${pids[@]}"; do wait $p; done
if [ -d "$RUNS/shards" ]; then
  for d in "$RUNS"/shards/*; do  # a shard stopped by TIMEOUT leaves the merged run partial
    $PY -m ets.merge "$d" --out "$RUNS/$(basename "$d")" --allow-incomplete >> "$RUNS/merge.log" 2>&1
  done
fi
$PY - "$RUNS" <<'PY' | tee "$OUT/real_study.md"
import json, sys
from pathlib import Path
runs = Path(sys.argv[1])
print("| run | problems | acc wmaj | acc maj | coverage | tokens/problem | KV paper mean | KV paper total | KV radix total | after-pruning paper total | newest share | depths | K/N | kept/call | wall s | engine start s |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
rows = {}
for d in sorted(p for p in runs.iterdir() if p.is_dir() and p.name != "shards"):
    f = d / "summary.json"
    recs = [json.loads(l) for l in open(d / "problems.jsonl")] if (d / "problems.jsonl").exists() else []
    if not recs:
        print(f"| {d.name} | FAILED (see {d.name}.log) |"); continue
    if f.exists():
        s = json.loads(f.read_text())
    else:  # stopped by the time limit (SIGINT: finished problems kept): partial summary
        from ets.rundir.results import summarize
        s = summarize(recs, wall_time_s=float("nan"))
        d = d.with_name(d.name + " (partial)")
    rows[d.name] = s
    kv = s["kv"]; st = s.get("selector_stats", {})
    depths = sum(r["depths"] for r in recs) / len(recs)
    print(f"| {d.name} | {s['problems']} | {s['accuracy']['weighted_majority']:.3f} | {s['accuracy']['majority']:.3f} "
          f"| {s['accuracy']['coverage']:.3f} | {s['tokens_generated'] / s['problems']:.0f} | {kv['paper']['mean']:.0f} "
          f"| {kv['paper']['total']:.0f} | {kv['radix']['total']:.0f} | {kv['paper']['after_pruning']['total']:.0f} "
          f"| {kv['paper'].get('newest_step', {}).get('share', 0):.2f} | {depths:.2f} "
          f"| {st.get('clusters_per_candidate', float('nan')):.2f} | {st.get('kept_per_call', float('nan')):.2f} "
          f"| {s['wall_time_s']:.0f} | {s.get('engine_start_s', 0):.0f} |")
print()
for name, s in rows.items():
    if "_ets_" in name and name.replace("_ets_", "_rebase_") in rows:
        b = rows[name.replace("_ets_", "_rebase_")]
        print(f"{name}: REBASE/ETS KV paper mean {b['kv']['paper']['mean'] / s['kv']['paper']['mean']:.2f}x, "
              f"total {b['kv']['paper']['total'] / s['kv']['paper']['total']:.2f}x, radix total "
              f"{b['kv']['radix']['total'] / s['kv']['radix']['total']:.2f}x; accuracy ETS "
              f"{s['accuracy']['weighted_majority']:.3f} vs REBASE {b['accuracy']['weighted_majority']:.3f}")
PY
tail -n 3 $RUNS/*.log > "$OUT/real_logs.txt" 2>&1
tar czf "$OUT/real_runs.tar.gz" -C "$RUNS" . 2>/dev/null
ls -la "$OUT"
