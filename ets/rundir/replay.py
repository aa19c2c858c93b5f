"""Replay the generation workload of a recorded search on a vLLM engine.

    python -m ets.replay RUN_DIR [hydra overrides] [--out FILE] [--concurrency N]
                         [--kv-blocks N] [--kv-gb X] [--batch | --chains] [--limit N]
                         [--outputs plain|search]

The trees in ``RUN_DIR/problems.jsonl`` say which node was expanded into how many
children at every depth of every problem, and how many tokens each child has. The replay
sends the same expansions in the same order and grouping as the search did (one engine
call per depth iteration, the same problems in flight: the schedule of the depth-
synchronous loop in :mod:`ets.core.search`, simulated from each problem's start order and
number of depths), each child a request of exactly its recorded number of tokens
(``min_tokens = max_tokens``, EOS ignored, no stop strings). Each later request is the
root prompt followed by the tokens *the replay* generated along that path, so the prefix
cache sees the sharing the search had. The model is any vLLM model (its tokenizer
re-encodes the recorded prompt text, cut or cycled to the recorded prompt length), also
vLLM's random weights from a bare ``config.json`` (``policy.engine_kwargs.load_format=dummy``).

``--batch`` instead sends every request of the run at once, as one plain batch job: the
same prompts lengths, output lengths and prefix sharing (ancestors' tokens are fixed
random ids per node), without the search's depth barriers: the raw engine bound.

``--outputs search`` asks for what the search asked of the engine besides the tokens: the
detokenized text and, where the search read them, the step log-probabilities (vLLM's
``logprobs=0``, summed in the front end as :class:`~ets.policies.vllm.VLLMPolicy` does).
The default, ``plain``, asks for token ids only. The difference is the front end's work
per generated token for those outputs, in this process (``bench/frontend.py``).

``--chains`` (the asynchronous vLLM policy only) sends each problem's depths one after
another, each as soon as that problem's previous depth is back, with up to
``concurrency`` problems in flight (the next one starts as one finishes): the
dependencies of the asynchronous search without any search work between its steps
(scoring, selection, embedding), i.e. the bound of a search that selects in no time.

Prints generated tokens/s, wall time, KV in use (mean/peak over engine steps),
preemptions and prefix-cache hits; writes them to ``RUN_DIR/replay.json`` (``--out``
elsewhere). Only the vLLM policy module imports vLLM.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ets.core.search import request_seed

ROOT = Path(__file__).resolve().parents[2]
#: What a replay's requests ask for besides the tokens (module docstring, ``--outputs``).
OUTPUTS = ("plain", "search")
log = logging.getLogger("ets.rundir.replay")


@dataclass
class Expansion:
    """One parent node expanded in one engine call: its children's ids and token counts."""

    problem: str
    parent: int
    children: list[tuple[int, int]]


@dataclass
class ReplayTree:
    """What the replay needs of one recorded problem."""

    id: str
    prompt_text: str
    prompt_tokens: int
    parent: dict[int, int | None]
    tokens: dict[int, int]
    levels: list[list[Expansion]] = field(default_factory=list)  # one per depth iteration
    start_index: int | None = None

    @classmethod
    def from_record(cls, rec: dict[str, Any]) -> ReplayTree:
        nodes = rec["tree"]
        root = nodes[0]
        tree = cls(str(rec["id"]), root["text"], int(root["tokens"]),
                   {n["id"]: n["parent"] for n in nodes}, {n["id"]: int(n["tokens"]) for n in nodes},
                   start_index=rec.get("start_index"))
        by_parent: dict[int, list[tuple[int, int]]] = {}
        depth = {n["id"]: n["depth"] for n in nodes}
        for n in nodes[1:]:  # creation order: children of one parent in the order generated
            by_parent.setdefault(n["parent"], []).append((n["id"], int(n["tokens"])))
        n_levels = max(depth.values())
        tree.levels = [[] for _ in range(n_levels)]
        for parent in sorted(by_parent):  # the search expands parents in creation order
            tree.levels[depth[parent]].append(Expansion(tree.id, parent, by_parent[parent]))
        return tree


def load_trees(run_dir: Path, limit: int | None = None) -> list[ReplayTree]:
    """The recorded problems in the order the search started them.

    ``start_index`` (written by the search loop) gives that order; records without it
    are taken in file order (finish order), which changes which problems share a call.
    """
    path = run_dir / "problems.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: RUN_DIR must be a run directory of `python -m ets`")
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    trees = [ReplayTree.from_record(r) for r in records if r.get("tree")]
    index = [t.start_index for t in trees]
    if trees and None not in index and len(set(index)) == len(index):
        trees.sort(key=lambda t: t.start_index)
    elif trees:  # older records, or a resumed run (each session counts from 0)
        log.warning("%s: no unique start_index per problem; problems are replayed in file order", path)
    return trees[:limit] if limit else trees


def schedule(trees: Sequence[ReplayTree], concurrency: int) -> list[list[Expansion]]:
    """The engine calls of the depth-synchronous search: up to ``concurrency`` problems in
    flight, each one depth per call; a problem that has done its last depth leaves after
    that call and the next one joins (and expands its root) in the following call."""
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency}")
    queue, live, calls = list(trees), [], []
    rounds: dict[str, int] = {}
    while queue or live:
        while len(live) < concurrency and queue:
            tree = queue.pop(0)
            rounds[tree.id] = 0
            live.append(tree)
        calls.append([e for t in live for e in t.levels[rounds[t.id]]])
        for t in live:
            rounds[t.id] += 1
        live = [t for t in live if rounds[t.id] < len(t.levels)]
    return calls


def fit(ids: Sequence[int], n: int) -> list[int]:
    """``ids`` cut or cycled to length ``n``."""
    ids = list(ids) or [0]
    return [ids[i % len(ids)] for i in range(n)]


@dataclass
class ReplayResult:
    """Numbers of one replay (``summary()`` is what replay.json holds)."""

    tokens_generated: int = 0
    tokens_expected: int = 0
    wall_time_s: float = 0.0
    engine_s: float = 0.0
    calls: int = 0
    requests: int = 0
    mismatched: int = 0
    kv_samples: list[float] = field(default_factory=list)
    counters: dict[str, float] = field(default_factory=dict)
    generated: dict[tuple[str, int], tuple[int, ...]] = field(default_factory=dict)
    contexts: dict[tuple[str, int], tuple[int, ...]] = field(default_factory=dict)
    call_sizes: list[int] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        kv = self.kv_samples or [0.0]
        queries = self.counters.get("prefix_cache_queries", 0.0)
        return {
            "tokens_generated": self.tokens_generated, "tokens_expected": self.tokens_expected,
            "wall_time_s": self.wall_time_s, "engine_s": self.engine_s,
            "tokens_per_s": self.tokens_generated / self.wall_time_s if self.wall_time_s else 0.0,
            "calls": self.calls, "requests": self.requests, "requests_wrong_length": self.mismatched,
            "kv_tokens_mean": sum(kv) / len(kv), "kv_tokens_peak": max(kv),
            "preemptions": self.counters.get("num_preemptions", 0.0),
            "prefix_cache_queries": queries, "prefix_cache_hits": self.counters.get("prefix_cache_hits", 0.0),
            "prefix_cache_hit_rate": self.counters.get("prefix_cache_hits", 0.0) / queries if queries else 0.0,
        }


class Replayer:
    """Sends a recorded workload to the engine of a :class:`~ets.policies.vllm.VLLMPolicy`."""

    def __init__(self, policy: Any, seed: int = 0, outputs: str = "plain") -> None:
        if outputs not in OUTPUTS:
            raise ValueError(f"outputs={outputs!r} is invalid; allowed: {', '.join(OUTPUTS)}")
        self.policy, self.seed, self.outputs = policy, seed, outputs
        self.tokenizer = policy.formatter.tokenizer
        self._prompts: dict[str, list[int]] = {}
        self._vocab: int | None = None

    @property
    def vocab(self) -> int:
        """Token ids the model accepts: the tokenizer's, capped by the model's vocabulary
        (a dummy 32k-vocab model may be replayed with a larger tokenizer)."""
        if self._vocab is None:
            vocab = len(self.tokenizer)
            engine = self.policy.engine.llm.llm_engine
            config = getattr(engine, "model_config", None) or engine.vllm_config.model_config
            self._vocab = min(vocab, int(config.get_vocab_size()))
        return self._vocab

    def prompt_ids(self, tree: ReplayTree) -> list[int]:
        if tree.id not in self._prompts:
            ids = self.tokenizer(tree.prompt_text, add_special_tokens=False).input_ids
            self._prompts[tree.id] = [i % self.vocab for i in fit(ids, tree.prompt_tokens)]
        return self._prompts[tree.id]

    def filler(self, tree: ReplayTree, node: int) -> tuple[int, ...]:
        """Fixed random ids standing for a node's step in ``--batch`` mode."""
        rng = random.Random(request_seed(self.seed, tree.id, node))
        return tuple(rng.randrange(self.vocab) for _ in range(tree.tokens[node]))

    def context(self, tree: ReplayTree, node: int, steps: dict[tuple[str, int], tuple[int, ...]]) -> list[int]:
        path = []
        while tree.parent[node] is not None:
            path.append(node)
            node = tree.parent[node]
        ids = list(self.prompt_ids(tree))
        for n in reversed(path):
            ids.extend(steps[(tree.id, n)])
        return ids

    def run(self, trees: Sequence[ReplayTree], calls: list[list[Expansion]], batch: bool = False) -> ReplayResult:
        """Replay ``calls`` (from :func:`schedule`); ``batch``: all of them in one call."""
        engine = self.policy.engine
        by_id = {t.id: t for t in trees}
        if batch:
            calls = [[e for call in calls for e in call]]
        res = ReplayResult()
        steps = res.generated
        if batch:
            for t in trees:
                for node in t.tokens:
                    if t.parent[node] is not None:
                        steps[(t.id, node)] = self.filler(t, node)
        before = engine.metrics()
        start = time.perf_counter()
        for call in calls:
            prompts, params, keys = self._requests(by_id, call, steps, res)
            t0 = time.perf_counter()
            outs = self._generate(engine, prompts, params) if prompts else []
            res.engine_s += time.perf_counter() - t0
            res.kv_samples.extend(self._kv_tokens(engine))
            self._record(res, keys, params, outs, None if batch else steps)
        res.wall_time_s = time.perf_counter() - start
        after = engine.metrics()
        res.counters = {k: after.get(k, 0.0) - before.get(k, 0.0)
                        for k in ("num_preemptions", "prefix_cache_queries", "prefix_cache_hits")}
        return res

    def run_chains(self, trees: Sequence[ReplayTree], concurrency: int) -> ReplayResult:
        """Each problem's depths in turn, each sent as soon as that problem's previous
        depth is back, ``concurrency`` problems at a time in start order (module
        docstring, ``--chains``). Needs an engine with ``run_chains``/``agenerate``
        (:class:`ets.policies.vllm_async.AsyncBatchEngine`)."""
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        engine = self.policy.engine
        if not callable(getattr(engine, "run_chains", None)):
            raise ValueError("the chains replay needs the asynchronous vLLM policy: "
                             "policy._target_=ets.policies.vllm_async.AsyncVLLMPolicy")
        by_id = {t.id: t for t in trees}
        res = ReplayResult()
        steps = res.generated

        def chain(tree: ReplayTree):
            async def depths() -> None:
                for level in tree.levels:
                    prompts, params, keys = self._requests(by_id, level, steps, res)
                    outs = await engine.agenerate(*self._prompts_and_sampling(prompts, params)) if prompts else []
                    self._record(res, keys, params, self._token_ids(outs), steps)
            return depths

        start = time.perf_counter()
        engine.run_chains([chain(t) for t in trees], concurrency)
        res.wall_time_s = res.engine_s = time.perf_counter() - start
        return res

    def _requests(self, by_id: dict[str, ReplayTree], call: list[Expansion],
                  steps: dict[tuple[str, int], tuple[int, ...]], res: ReplayResult
                  ) -> tuple[list[list[int]], list[dict[str, Any]], list[tuple[str, int]]]:
        """The prompts, sampling settings and (problem, child) keys of one call's
        expansions; counts the expected tokens and keeps each child's context in ``res``."""
        prompts, params, keys = [], [], []
        for exp in call:
            tree = by_id[exp.problem]
            ctx = self.context(tree, exp.parent, steps)
            for child, n in exp.children:
                res.tokens_expected += n
                res.contexts[(tree.id, child)] = tuple(ctx)
                if n == 0:  # an empty step: nothing to generate
                    steps.setdefault((tree.id, child), ())
                    continue
                prompts.append(ctx)
                params.append(dict(max_tokens=n, min_tokens=n, seed=request_seed(self.seed, tree.id, child)))
                keys.append((tree.id, child))
        res.call_sizes.append(len(prompts))
        return prompts, params, keys

    @staticmethod
    def _record(res: ReplayResult, keys: list[tuple[str, int]], params: list[dict[str, Any]],
                outs: list[tuple[int, ...]], steps: dict[tuple[str, int], tuple[int, ...]] | None) -> None:
        """Count one call's outputs; with ``steps``, later contexts use these tokens."""
        res.calls += 1
        for key, p, ids in zip(keys, params, outs):
            res.requests += 1
            res.tokens_generated += len(ids)
            res.mismatched += len(ids) != p["max_tokens"]
            if steps is not None:
                steps[key] = ids

    def output_options(self) -> dict[str, Any]:
        """The ``SamplingParams`` keys of ``self.outputs``: token ids only (``plain``), or
        the text and, where the policy asks for them now, the step log-probabilities the
        way the policy asks (``search``)."""
        if self.outputs == "plain":
            return {"detokenize": False}
        step_logprob = getattr(self.policy, "step_logprob_options", None)  # VLLMPolicy's
        return {"detokenize": True, **(step_logprob() if step_logprob is not None else {})}

    def _prompts_and_sampling(self, prompts: list[list[int]], params: list[dict[str, Any]]) -> tuple[list[Any], list[Any]]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        options = self.output_options()
        return ([TokensPrompt(prompt_token_ids=p) for p in prompts],
                [SamplingParams(n=1, temperature=1.0, ignore_eos=True, **options, **p) for p in params])

    def _generate(self, engine: Any, prompts: list[list[int]], params: list[dict[str, Any]]) -> list[tuple[int, ...]]:
        return self._token_ids(engine.generate(*self._prompts_and_sampling(prompts, params)))

    @staticmethod
    def _token_ids(results: list[Any]) -> list[tuple[int, ...]]:
        """The generated ids of each request's one completion."""
        return [tuple(r.outputs[0].token_ids) for r in results]

    @staticmethod
    def _kv_tokens(engine: Any) -> list[float]:
        usable = max(engine.blocks - 1, 1)  # vLLM's usage leaves out its null block
        return [float(round(u * usable) * engine.block_size) for u in engine.samples]


def recorded_config(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "config.yaml"
    if not path.exists():
        return {}
    from omegaconf import OmegaConf

    return OmegaConf.to_container(OmegaConf.load(path), resolve=False)  # type: ignore[return-value]


def recorded_step_logprobs(run_dir: Path) -> bool | None:
    """Whether the recorded search asked vLLM for step log-probabilities: its explicit
    ``policy.step_logprobs``, else whether its PRM or selector class reads them
    (``uses_step_logprobs``, what the search's auto setting follows); ``None`` without a
    recorded config."""
    cfg = recorded_config(run_dir)
    if not cfg:
        return None
    explicit = cfg.get("policy", {}).get("step_logprobs")
    if explicit is not None:
        return bool(explicit)
    from hydra.utils import get_class

    for group in ("prm", "selector"):
        target = cfg.get(group, {}).get("_target_")
        if target and getattr(get_class(target), "uses_step_logprobs", False):
            return True
    return False


def build_policy(run_dir: Path, overrides: Sequence[str], kv_blocks: int | None = None,
                 kv_gb: float | None = None) -> Any:
    """The replay's vLLM policy: ``policy=...`` overrides, else the recorded run's policy
    if it was a vLLM one; a KV budget as blocks (``num_gpu_blocks_override``) or GiB."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from ets.config import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=list(overrides))
    node = cfg.policy
    recorded = recorded_config(run_dir).get("policy", {})
    if not any(o.startswith("policy=") for o in overrides) and "vllm" in str(recorded.get("_target_", "")):
        node = OmegaConf.merge(OmegaConf.create(recorded), OmegaConf.from_dotlist(
            [o.removeprefix("policy.") for o in overrides if o.startswith("policy.")]))
    if "vllm" not in str(node.get("_target_", "")):
        raise ValueError(f"replay needs a vLLM policy, got policy._target_={node.get('_target_')}: "
                         "pass policy=smollm2_vllm or policy=vllm policy.model=...")
    kwargs = dict(node.get("engine_kwargs") or {})
    if kv_blocks is not None:
        kwargs["num_gpu_blocks_override"] = int(kv_blocks)
    if kv_gb is not None:
        kwargs["kv_cache_memory_bytes"] = int(kv_gb * 2**30)
        if node.get("cpu_kv_space_gb") is not None:
            node.cpu_kv_space_gb = kv_gb
    node.engine_kwargs = kwargs
    return instantiate(node, _convert_="partial")


def format_result(s: dict[str, Any]) -> str:
    return "\n".join([
        f"engine start: {s.get('engine_start_s', 0.0):.1f}s",
        f"generated {s['tokens_generated']} tokens (recorded {s['tokens_expected']}) in "
        f"{s['wall_time_s']:.2f}s: {s['tokens_per_s']:.1f} tokens/s "
        f"({s['calls']} engine calls, {s['requests']} requests, {s['requests_wrong_length']} of wrong length)",
        f"KV tokens in use: mean {s['kv_tokens_mean']:.0f}, peak {s['kv_tokens_peak']:.0f} "
        f"(capacity {s.get('kv_capacity_tokens', 0):.0f})",
        f"preemptions: {s['preemptions']:.0f}   prefix cache: {s['prefix_cache_hits']:.0f} hits of "
        f"{s['prefix_cache_queries']:.0f} queried tokens ({100 * s['prefix_cache_hit_rate']:.1f}%)",
    ])


def replay(run_dir: Path, policy: Any, concurrency: int | None = None, batch: bool = False,
           limit: int | None = None, seed: int = 0, chains: bool = False,
           outputs: str = "plain") -> tuple[dict[str, Any], ReplayResult]:
    """Replay ``run_dir`` on ``policy``'s engine; returns (summary, details)."""
    if batch and chains:
        raise ValueError("--batch and --chains exclude each other")
    trees = load_trees(run_dir, limit)
    if concurrency is None:
        concurrency = int(recorded_config(run_dir).get("search", {}).get("concurrency", 8))
    start_s = policy.start_engine()
    if outputs == "search" and callable(getattr(policy, "need_step_logprobs", None)):
        recorded = recorded_step_logprobs(run_dir)
        if recorded is not None:  # ask for the step log-probabilities where the search did
            policy.need_step_logprobs(recorded)
    replayer = Replayer(policy, seed, outputs)
    if chains:
        res = replayer.run_chains(trees, concurrency)
    else:
        res = replayer.run(trees, schedule(trees, concurrency), batch=batch)
    out = {"run_dir": str(run_dir), "problems": len(trees), "concurrency": concurrency,
           "mode": "batch" if batch else "chains" if chains else "search", "outputs": outputs,
           "model": str(policy.model),
           "engine_start_s": start_s, "kv_capacity_tokens": float(policy.engine.kv_capacity),
           **res.summary()}
    return out, res


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(prog="python -m ets.replay", description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("overrides", nargs="*", help="Hydra overrides for the policy, e.g. policy=smollm2_vllm")
    ap.add_argument("--out", type=Path, help="where replay.json goes (default: RUN_DIR/replay.json)")
    ap.add_argument("--concurrency", type=int, help="problems in flight (default: the recorded run's)")
    ap.add_argument("--kv-blocks", type=int, help="KV budget in blocks (vLLM num_gpu_blocks_override)")
    ap.add_argument("--kv-gb", type=float, help="KV budget in GiB (kv_cache_memory_bytes; CPU: KV space)")
    ap.add_argument("--batch", action="store_true", help="all requests as one plain batch (engine bound)")
    ap.add_argument("--chains", action="store_true",
                    help="each problem's depths back to back, no search work between them "
                         "(async vLLM policy only: policy._target_=ets.policies.vllm_async.AsyncVLLMPolicy)")
    ap.add_argument("--outputs", choices=OUTPUTS, default="plain",
                    help="plain: token ids only; search: also the text and (where the recorded "
                         "search read them) the step log-probabilities, as the search asked")
    ap.add_argument("--limit", type=int, help="replay only the first N problems")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    policy = build_policy(args.run_dir, args.overrides, args.kv_blocks, args.kv_gb)
    summary, _ = replay(args.run_dir, policy, args.concurrency, args.batch, args.limit, args.seed, args.chains,
                        args.outputs)
    out = args.out or args.run_dir / "replay.json"
    out.write_text(json.dumps(summary, indent=2) + "\n")
    print(format_result(summary))
    print(f"written: {out}")
    from ets.policies.vllm import release_engines

    release_engines()
    return summary


if __name__ == "__main__":  # vLLM may start its engine processes with spawn
    main(sys.argv[1:])
