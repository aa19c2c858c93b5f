"""Lockstep vs asynchronous scheduler on one streaming vLLM engine (AsyncLLM), one table.

Both runs use the same :class:`ets.policies.vllm_async.AsyncVLLMPolicy` (started, and
warmed up, before any timing; prefix cache reset between runs), so only the scheduler
differs: ``lockstep`` sends every round of every problem in flight as one group and
waits for all of it; ``async`` sends each problem's next group as soon as its own
children are scored and selected. Prints wall time, generated tokens, tokens/s, the
share of wall time the search spent blocked on the engine, and whether the two runs
wrote identical records.

    python bench/scheduler.py                                   # 8 demo problems, W=4, REBASE
    python bench/scheduler.py --override dataset=gsm8k dataset.path=... dataset.limit=32
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.utils import instantiate

from ets.config import register_configs
from ets.rundir.run import build_search
from ets.types import GenRequest

ROOT = Path(__file__).resolve().parents[1]

BASE = ["policy=smollm2_vllm", "policy._target_=ets.policies.vllm_async.AsyncVLLMPolicy",
        "prm=logprob", "dataset=demo", "tracker=local"]


def compose(*overrides: str) -> Any:
    register_configs()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return hydra_compose("config", overrides=list(overrides))


def run_search(search: Any, dataset: Any) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    search.run(dataset.load(), rows.append)
    return [{k: v for k, v in r.items() if k != "wall_time_s"} for r in rows]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--problems", type=int, default=8)
    ap.add_argument("--width", type=int, default=4)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--selector", default="rebase")
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--max-step-tokens", type=int, default=32)
    ap.add_argument("--override", nargs="*", default=[])
    args = ap.parse_args()
    overrides = [*BASE, f"selector={args.selector}", f"dataset.limit={args.problems}",
                 f"search.width={args.width}", f"search.concurrency={args.concurrency}",
                 f"search.max_tokens={args.max_tokens}", f"search.max_step_tokens={args.max_step_tokens}",
                 *args.override]
    policy = instantiate(compose(*overrides).policy, _convert_="partial")
    start = time.perf_counter()
    search, dataset = build_search(compose(*overrides))
    problem = dataset.load()[0]
    prompt = policy.format_prompt(problem)
    policy.generate([GenRequest(problem, prompt.text, prompt.token_ids, 2, 8, ["\n\n"], 0)])
    print(f"engine start + warm-up: {time.perf_counter() - start:.1f}s")
    rows, records = [], {}
    for scheduler in ("lockstep", "async"):
        search, dataset = build_search(compose(*overrides, f"search.scheduler={scheduler}"))
        search.policy = policy
        policy.reset_engine_state()
        t0 = time.perf_counter()
        out = run_search(search, dataset)
        wall = time.perf_counter() - t0
        records[scheduler] = {r["id"]: r for r in out}
        tokens = search.counters.tokens_generated
        rows.append((scheduler, wall, tokens, tokens / wall, policy.stats["generate_s"] / wall,
                     search.counters.policy_calls))
    print("| scheduler | wall s | tokens | tokens/s | blocked on engine | waits |")
    print("|---|---|---|---|---|---|")
    for name, wall, tokens, tps, share, calls in rows:
        print(f"| {name} | {wall:.1f} | {tokens} | {tps:.1f} | {share:.0%} | {calls} |")
    print("identical records:", records["lockstep"] == records["async"])
    policy.close()


if __name__ == "__main__":
    main()
