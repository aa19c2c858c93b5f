#!/usr/bin/env bash
# The GPU study of issue 11, one stage per command (each fits in ~10 minutes on an H200).
# Run from the repo root on the GPU node, with vLLM installed (ENVIRONMENT.md, "GPU nodes"),
# PYTHONPATH set, GSM8K at .gpudata/gsm8k_test.jsonl; every table and JSON goes to $OUT.
#
#   bash bench/gpu_study.sh selector      # CPU side: CP-SAT per call by worker count, cProfile vs
#                                         # wall clock, vLLM's per-token logprob cost (bench/logprobs.py)
#   bash bench/gpu_study.sh engine        # bench/engine.py: ETS vs REBASE, SmolLM2 bf16, 64 problems, W=16
#                                         # (CONC=64 SCHEDULERS="lockstep async": all in flight, both)
#   bash bench/gpu_study.sh frontend      # bench/frontend.py: front-end CPU per token, search's vs replay's requests
#   bash bench/gpu_study.sh record        # synthetic ETS/REBASE runs at W=16/64/256 (CPU, for the replays)
#   bash bench/gpu_study.sh replay34b h100 [GLOB]  # replay them on a Llemma-34B-shaped dummy, H100 80 GB
#                                         # KV budget (GLOB: which runs, default synthetic_*)
#   bash bench/gpu_study.sh replay34b h200 [GLOB]  # ... with the H200's own KV budget
#   bash bench/gpu_study.sh live BLOCKS W   # real SmolLM2, ETS vs REBASE side by side at a fixed KV
#                                         # budget (blocks of 16; none: unconstrained, MEM=0.4 to see
#                                         # the peak), GSM8K, 16 in flight, 192 tokens
#
# Knobs (environment): PROBLEMS (engine: 64), REPLAY_PROBLEMS (16), RUNS (.gpudata/runs),
# LIMIT (replay34b: the first N problems of each run; default all).
set -euo pipefail
: "${OUT:?set OUT to the folder the results go to}"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false VLLM_USE_FLASHINFER_SAMPLER=0
# The stages feed Python from stdin (heredocs): a spawned engine process could not re-import
# "<stdin>", and nothing here touches CUDA before the engine starts, so fork is safe.
export VLLM_WORKER_MULTIPROC_METHOD=${VLLM_WORKER_MULTIPROC_METHOD:-fork}
PY=${PYTHON:-python3}
DATA=${DATA:-.gpudata/gsm8k_test.jsonl}
RUNS=${RUNS:-.gpudata/runs}
GPU=(policy.dtype=bfloat16 policy.enforce_eager=false policy.cpu_kv_space_gb=null policy.block_size=16)
stage=${1:?stage: selector | engine | frontend | record | replay34b | live}
shift
mkdir -p "$RUNS"

case "$stage" in
selector)
  # Per-call wall time of solve_cpsat by CP-SAT worker count on this many-core host
  # (the selector uses 1), then the same solves under cProfile while another thread sits
  # in a blocking C call, as vLLM's output-queue thread does: on Python >= 3.12 cProfile
  # hears every thread (sys.monitoring), so its solve_cpsat time can include that wait.
  $PY bench/selector.py --source random --instances 200 --workers 1 2 16 0 --no-cbc 2>&1 | tee "$OUT/selector.md"
  $PY - <<'EOF' 2>&1 | tee -a "$OUT/selector.md"
import cProfile, pstats, sys, threading, time
from bench.selector import record_random
from ets.selectors.ets_ilp import solve_cpsat
insts = record_random(64, 200, 0)
stop = threading.Event()
def blocked():
    while not stop.is_set():
        time.sleep(0.07)  # a blocking C call, GIL released
threading.Thread(target=blocked, daemon=True).start()
prof, wall = cProfile.Profile(), 0.0
prof.enable()
for inst in insts:
    t0 = time.perf_counter(); solve_cpsat(inst); wall += time.perf_counter() - t0
prof.disable(); stop.set()
st = pstats.Stats(prof)
cum = next(v[3] for k, v in st.stats.items() if k[2] == "solve_cpsat")
print(f"\nPython {sys.version.split()[0]}: {len(insts)} solve_cpsat calls, wall clock {1e3 * wall:.1f} ms "
      f"in all; cProfile says {1e3 * cum:.1f} ms (a second thread blocked in time.sleep meanwhile)")
EOF
  $PY bench/logprobs.py 2>&1 | grep -v -i warn | tee -a "$OUT/selector.md"
  ;;
engine)
  # The settings of the first H200 run (ENVIRONMENT.md: config defaults, W = 16, 16 in flight).
  # CONC: problems in flight; SCHEDULERS: lockstep (offline engine, with the raw bound) and/or
  # async (AsyncLLM), one engine start each; EXTRA: more overrides; T: seconds per scheduler;
  # ROWS: the searches, side by side on one engine (default "ets rebase"; a row may carry its
  # own overrides: ets:selector.embedder.device=cpu,selector.embedder.num_threads=8);
  # PROBE=1: first time embedding calls with the engine idle and busy (bench/engine.py --embed-probe);
  # BENCH: more bench/engine.py flags (e.g. --search-outputs, --no-bound).
  # On CUDA the async policy runs AsyncLLM's front end in a child process by default
  # (policy.frontend_process); EXTRA="policy.frontend_process=false" keeps it in this one.
  c=${CONC:-16}
  for sch in ${SCHEDULERS:-lockstep}; do
    # shellcheck disable=SC2086
    # spawn: as measured (bench/engine.py is a file with a main guard, unlike the heredocs)
    VLLM_WORKER_MULTIPROC_METHOD=spawn timeout "${T:-100000}" $PY bench/engine.py --problems "${PROBLEMS:-64}" --width 16 --concurrency "$c" \
      --max-tokens 192 --max-step-tokens 48 --data "$DATA" --scheduler "$sch" --out "$OUT/engine_${sch}_c$c" \
      --selectors ${ROWS:-ets rebase} ${PROBE:+--embed-probe} ${BENCH:-} \
      --override "${GPU[@]}" ${EXTRA:-} 2>&1 | tee "$OUT/engine_${sch}_c$c.md"
  done
  ;;
frontend)
  # The AsyncLLM front end's CPU per generated token for the search's requests vs the replay's.
  VLLM_WORKER_MULTIPROC_METHOD=spawn $PY bench/frontend.py --prompts "${PROMPTS:-64}" --n 16 --max-tokens 48 \
    --repeats 3 --data "$DATA" --out "$OUT/frontend.json" --override "${GPU[@]}" 2>&1 | tee "$OUT/frontend.md"
  ;;
record)
  # The synthetic ETS-vs-REBASE runs (CPU, seconds to minutes) whose trees the replays send.
  for w in 16 64 256; do
    for sel in ets rebase; do
      $PY -m ets +experiment=synthetic selector=$sel search.width=$w dataset.limit="${REPLAY_PROBLEMS:-16}" \
        search.concurrency=8 hydra.run.dir="$RUNS/synthetic_${sel}_w$w" > /dev/null
    done
  done
  ls "$RUNS" | tee "$OUT/record.txt"
  ;;
replay34b)
  budget=${1:?budget: h100 | h200}
  # CodeLlama-34B's architecture (Llemma-34B), random weights (load_format=dummy), SmolLM2's
  # tokenizer (ids above 32000 are folded into the vocabulary by the replay).
  model=.gpudata/llemma34b_dummy
  $PY - "$model" <<'EOF'
import json, shutil, sys
from pathlib import Path
from ets.models import resolve_model
out = Path(sys.argv[1]); out.mkdir(parents=True, exist_ok=True)
json.dump({"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 8192,
           "intermediate_size": 22016, "num_hidden_layers": 48, "num_attention_heads": 64,
           "num_key_value_heads": 8, "vocab_size": 32000, "max_position_embeddings": 16384,
           "rms_norm_eps": 1e-5, "rope_theta": 1000000.0, "hidden_act": "silu", "torch_dtype": "bfloat16",
           "bos_token_id": 1, "eos_token_id": 2, "tie_word_embeddings": False}, open(out / "config.json", "w"))
tok = Path(resolve_model("smollm2"))
for f in tok.iterdir():
    if f.name.startswith(("tokenizer", "special_tokens", "vocab", "merges")):
        shutil.copy(f, out / f.name)
EOF
  kv=()
  if [ "$budget" = h100 ]; then
    # KV an 80 GB H100 leaves after the weights, at vLLM's gpu_memory_utilization 0.9:
    # 0.9 x 81559 MiB (what an H100 80GB reports) - 64354 MiB of bf16 weights (33.74e9
    # parameters) - 2048 MiB for activations and CUDA graphs = 6999 MiB; a 16-token block
    # holds 2 x 48 layers x 8 KV heads x 128 x 2 bytes x 16 = 3 MiB: 2333 blocks.
    kv=(--kv-blocks 2333)
  fi
  pattern=${2:-*_w*}  # e.g. 'synthetic_*_w256' to split the replays over commands
  # TIMEOUT=SECONDS: stop (SIGINT) after that long and report the runs replayed by then
  timeout -s INT -k 20 ${TIMEOUT:-100000} $PY - "$model" "$budget" "$RUNS" "$pattern" "${kv[@]}" <<'EOF' 2>&1 | tee "$OUT/replay34b_$budget.md"
import json, os, sys
from pathlib import Path
from ets.rundir.replay import build_policy, format_result, replay
model, budget, runs, pattern = sys.argv[1:5]
blocks = int(sys.argv[6]) if len(sys.argv) > 6 else None
from ets.models import resolve_model
policy = build_policy(Path(runs), ["policy=vllm", f"policy.model={model}", f"policy.tokenizer={resolve_model('smollm2')}",
                      "policy.dtype=bfloat16", "policy.block_size=16", "policy.max_model_len=4096",
                      "+policy.engine_kwargs.load_format=dummy"], kv_blocks=blocks)
rows = []
limit = int(os.environ["LIMIT"]) if os.environ.get("LIMIT") else None  # the first N problems only
# Start the engine first: the loop's prefix-cache reset would start it, and every replay
# summary would then say 0 s.
print(f"engine start: {policy.start_engine():.1f}s (not in any wall time below)", flush=True)
def width(run):  # the runs of one width next to each other, ETS before REBASE
    return int(run.name.rsplit("_w", 1)[-1]) if "_w" in run.name else 0
try:
    for run in sorted(Path(runs).glob(pattern), key=lambda r: (width(r), r.name)):
        if not (run / "problems.jsonl").exists():
            continue
        policy.engine.llm.reset_prefix_cache()
        summary, _ = replay(run, policy, concurrency=8, limit=limit)
        summary["run"] = run.name
        rows.append(summary)
        print(f"## {run.name}\n{format_result(summary)}\n", flush=True)
except KeyboardInterrupt:
    print("stopped by TIMEOUT: the runs below are those replayed by then", flush=True)
print("| run | tokens | wall s | tok/s | KV mean | KV peak | preemptions | prefix hit rate |")
print("|---|---:|---:|---:|---:|---:|---:|---:|")
for r in rows:
    print(f"| {r['run']} | {r['tokens_generated']} | {r['wall_time_s']:.1f} | {r['tokens_per_s']:.0f} "
          f"| {r['kv_tokens_mean']:.0f} | {r['kv_tokens_peak']:.0f} | {r['preemptions']:.0f} "
          f"| {r['prefix_cache_hit_rate']:.3f} |")
by = {r["run"]: r for r in rows}
for name, e in by.items():
    b = by.get(name.replace("_ets_", "_rebase_"))
    if "_ets_" in name and b:
        print(f"{name}: ETS/REBASE throughput {e['tokens_per_s'] / b['tokens_per_s']:.2f}x, "
              f"KV mean REBASE/ETS {b['kv_tokens_mean'] / max(e['kv_tokens_mean'], 1):.2f}x, "
              f"KV peak REBASE/ETS {b['kv_tokens_peak'] / max(e['kv_tokens_peak'], 1):.2f}x "
              "(paper: 1.4x throughput, 1.8x KV)")
json.dump(rows, open(os.path.join(os.environ["OUT"], f"replay34b_{budget}.json"), "w"), indent=2)
EOF
  ;;
live)
  blocks=${1:?KV blocks (of 16 tokens), e.g. 1.5 x the REBASE peak engine KV / 16; none: no cap, MEM sets the engine memory}
  w=${2:-16}
  budget=(+policy.engine_kwargs.num_gpu_blocks_override="$blocks")
  [ "$blocks" = none ] && budget=()  # unconstrained: measure the peak a budget is derived from
  # ETS and REBASE run side by side (one engine each, the same block budget), so whatever
  # else the GPU does in the meantime weighs on both alike.
  for sel in ets rebase; do
    name=live_${sel}_w${w}_b${blocks}
    # spawn: the ETS embedder initialises CUDA before the engine starts (fork would fail)
    VLLM_WORKER_MULTIPROC_METHOD=spawn $PY -m ets policy=smollm2_vllm "${GPU[@]}" policy.gpu_memory_utilization=${MEM:-0.1} prm=logprob \
      dataset=gsm8k dataset.path="$DATA" dataset.limit="${PROBLEMS:-64}" selector=$sel search.width="$w" \
      search.concurrency=16 search.max_tokens=192 search.max_step_tokens=48 \
      "${budget[@]}" hydra.run.dir="$RUNS/$name" > "$RUNS/$name.log" 2>&1 &
    sleep ${STAGGER:-20}  # engines profile memory at start-up: concurrent starts misread it
  done
  wait
  for sel in ets rebase; do
    name=live_${sel}_w${w}_b${blocks}
    cp "$RUNS/$name/summary.json" "$OUT/$name.json" || { tail -30 "$RUNS/$name.log"; continue; }
    $PY - "$OUT/$name.json" <<'EOF' 2>&1 | tee -a "$OUT/live.md"
import json, sys
s = json.load(open(sys.argv[1])); e = s["kv"]["engine"]
print(f"{sys.argv[1]}: acc {s['accuracy']['weighted_majority']:.3f} coverage {s['accuracy']['coverage']:.3f} "
      f"tokens {s['tokens_generated']} wall {s['wall_time_s']:.1f}s {s['tokens_generated'] / s['wall_time_s']:.0f} tok/s "
      f"engine start {s.get('engine_start_s', 0):.0f}s engine KV mean {e['mean']:.0f} peak {e['peak']:.0f} "
      f"preemptions {e.get('preemptions', 'n/a')} paper KV total {s['kv']['paper']['total']:.0f}")
EOF
  done
  ;;
*)
  echo "unknown stage $stage" >&2; exit 2 ;;
esac
