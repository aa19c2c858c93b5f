"""Compute accounting: policy and PRM forward FLOPs per problem and per run, from the
dumped search tree (``problems.jsonl``: node ids, parents, step token counts).

The FLOPs model (forward pass only; a multiply-add is 2 FLOPs):

* **Dense part**: ``2·N`` per token processed, ``N`` = the matmul parameters of the model
  read from its ``config.json``: per layer the q/o projections (``h·h`` each), the k/v
  projections (``h·kv_heads·head_dim`` each) and the gated MLP (``3·h·intermediate``),
  plus the LM head (``h·vocab``); embeddings are a lookup, not a matmul.
* **Attention term**: a token at (0-based) position ``i`` attends to ``i + 1`` keys: ``QKᵀ``
  and ``A·V`` cost ``2·d_attn·(i+1)`` FLOPs each per layer, ``d_attn = heads·head_dim``,
  so ``4·L·d_attn·(i+1)`` per token. A block of ``n`` tokens after ``s`` earlier ones
  costs ``4·L·d_attn·(n·s + n(n+1)/2)``. That is the causal half a flash-style kernel
  computes; an eager kernel also computes the masked half of a prefill's square (torch's
  flop counter agrees with both: ``tests/test_compute.py``).

What is processed where (depth-synchronous search, :mod:`ets.core.search`):

* **Rollouts** (``record["rollouts"]``, look-ahead steps outside the tree) are counted as
  tree steps: generated, prefilled and read by the PRM alike.
* **Policy decode**: every generated step token is one forward token, at its position
  after the prompt and the parent path (the same with or without prefix reuse).
* **Policy prefill**, *without* prefix reuse: every child sequence re-reads its whole
  context (prompt + parent path) from position 0, as a sampler without a prefix cache
  does. *With* reuse (an ideal prefix cache that never evicts): a token is never
  computed twice: the prompt is prefilled once per problem, and a generated step's KV
  was built while it was decoded, so later expansions prefill nothing more.
* **PRM**: the PRM reads each scored child's prompt + path (token counts are the
  policy's: the record has no PRM tokenisation, and PRMs share the policy's tokenizer
  family in practice). Without reuse every scoring call reads the whole path from
  position 0; with reuse the prompt is read once per problem and each node's step once.
  All of it is prefill (a PRM does not decode). ``prm=logprob`` reads the policy's own
  log-probabilities: 0 FLOPs.

Model shapes come from the config of the model each component loads (a local folder, the
Hugging Face cache, or the embedded SmolLM2); the synthetic policy and PRM use
``compute.synthetic_shape`` (``conf/config.yaml``), ``compute.policy_shape`` /
``compute.prm_shape`` override either. A shape that cannot be found leaves that side's
FLOPs ``None`` with the reason in ``compute.shapes``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

SHAPE_KEYS = ("num_hidden_layers", "hidden_size", "num_attention_heads", "num_key_value_heads",
              "intermediate_size", "vocab_size")


@dataclass(frozen=True)
class ModelShape:
    """The transformer dimensions the FLOPs model needs (Hugging Face ``config.json`` names)."""

    num_hidden_layers: int
    hidden_size: int
    num_attention_heads: int
    num_key_value_heads: int
    intermediate_size: int
    vocab_size: int
    head_dim: int | None = None

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> ModelShape:
        """From a ``config.json`` dict (a multimodal/nested ``text_config`` is read if present).

        Raises:
            ValueError: A required key is missing (named).
        """
        cfg = dict(cfg.get("text_config") or cfg)
        cfg.setdefault("num_key_value_heads", cfg.get("num_attention_heads"))
        missing = [k for k in SHAPE_KEYS if cfg.get(k) is None]
        if missing:
            raise ValueError(f"model config lacks {', '.join(missing)} (needed: {', '.join(SHAPE_KEYS)})")
        return cls(**{k: int(cfg[k]) for k in SHAPE_KEYS},
                   head_dim=int(cfg["head_dim"]) if cfg.get("head_dim") else None)

    @property
    def d_head(self) -> int:
        return self.head_dim or self.hidden_size // self.num_attention_heads

    @property
    def matmul_params(self) -> int:
        """N: q, k, v, o, gated MLP per layer, plus the LM head."""
        h, d = self.hidden_size, self.d_head
        attn = h * self.num_attention_heads * d * 2 + h * self.num_key_value_heads * d * 2
        mlp = 3 * h * self.intermediate_size
        return self.num_hidden_layers * (attn + mlp) + h * self.vocab_size

    def flops(self, n: int, start: int = 0) -> float:
        """Forward FLOPs of ``n`` tokens at positions ``start .. start+n-1``."""
        if n <= 0:
            return 0.0
        keys = n * start + n * (n + 1) // 2  # sum over the block of (position + 1)
        d_attn = self.num_attention_heads * self.d_head
        return float(2 * self.matmul_params * n + 4 * self.num_hidden_layers * d_attn * keys)


def _zero() -> dict[str, float]:
    return {"prefill": 0.0, "prefill_no_reuse": 0.0, "decode": 0.0}


def _tokens() -> dict[str, int]:
    return {"policy_prefill": 0, "policy_prefill_no_reuse": 0, "policy_decode": 0,
            "prm_read": 0, "prm_read_no_reuse": 0}


def problem_compute(tree: list[dict[str, Any]], policy: ModelShape | None,
                    prm: ModelShape | None, prm_reads: bool = True,
                    rollouts: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """FLOPs and token counts of one problem's tree (``record["tree"]``, root first).

    Args:
        tree: Rows with ``id``, ``parent``, ``tokens`` (the root's are the prompt's).
        policy, prm: Shapes; ``None`` leaves that side's FLOPs ``None`` (tokens still counted).
        prm_reads: False for a PRM that reads nothing (``prm=logprob``).
        rollouts: ``record["rollouts"]`` (look-ahead steps: ids < 0, parent a tree node or
            another rollout). They were generated and scored like tree steps, so they are
            counted exactly as tree steps would be.

    Returns:
        ``policy_flops`` and ``prm_flops`` (``prefill``, ``prefill_no_reuse``, ``decode``,
        ``total``, ``total_no_reuse``) and ``tokens``.
    """
    by_id = {row["id"]: row for row in [*tree, *(rollouts or [])]}
    ctx: dict[int, int] = {}  # tokens of prompt + path up to and including the node

    def context(node_id: int) -> int:
        if node_id not in ctx:
            row = by_id[node_id]
            ctx[node_id] = int(row["tokens"]) + (0 if row["parent"] is None else context(row["parent"]))
        return ctx[node_id]

    pol, rm, tok = _zero(), _zero(), _tokens()
    root = next(row for row in tree if row["parent"] is None)
    prompt = int(root["tokens"])
    tok["policy_prefill"] = prompt
    if policy is not None:
        pol["prefill"] = policy.flops(prompt)
    if prm_reads:
        tok["prm_read"] = prompt
        if prm is not None:
            rm["prefill"] = prm.flops(prompt)
    for row in [*tree, *(rollouts or [])]:
        if row["parent"] is None:
            continue
        before, n = context(row["parent"]), int(row["tokens"])
        tok["policy_prefill_no_reuse"] += before
        tok["policy_decode"] += n
        if policy is not None:
            pol["prefill_no_reuse"] += policy.flops(before)
            pol["decode"] += policy.flops(n, before)
        if prm_reads:
            tok["prm_read"] += n
            tok["prm_read_no_reuse"] += before + n
            if prm is not None:
                rm["prefill"] += prm.flops(n, before)
                rm["prefill_no_reuse"] += prm.flops(before + n)
    out: dict[str, Any] = {"tokens": tok}
    for name, part, shape, reads in (("policy_flops", pol, policy, True), ("prm_flops", rm, prm, prm_reads)):
        if shape is None and reads:
            out[name] = None
            continue
        out[name] = {**part, "total": part["prefill"] + part["decode"],
                     "total_no_reuse": part["prefill_no_reuse"] + part["decode"]}
    out["total_flops"] = _add(out["policy_flops"], out["prm_flops"], "total")
    out["total_flops_no_reuse"] = _add(out["policy_flops"], out["prm_flops"], "total_no_reuse")
    return out


def _add(a: dict[str, float] | None, b: dict[str, float] | None, key: str) -> float | None:
    return None if a is None or b is None else a[key] + b[key]


def run_compute(records: Iterable[dict[str, Any]], config: Mapping[str, Any]) -> dict[str, Any]:
    """Run totals (summed over problems), per-problem means and per-problem totals
    (``per_problem[id]``: policy, PRM, total, total without reuse); ``shapes`` says where
    each shape came from. ``config`` is the run's resolved config (a dict)."""
    records = list(records)
    (policy, psrc), (prm, rsrc) = resolve_shapes(config)
    reads = not is_free_prm(config)
    with_tree = [r for r in records if r.get("tree")]
    per = [problem_compute(r["tree"], policy, prm, reads, r.get("rollouts")) for r in with_tree]
    out: dict[str, Any] = {"shapes": {"policy": psrc, "prm": rsrc}, "problems": len(per),
                           "tokens": {k: sum(p["tokens"][k] for p in per) for k in _tokens()}}
    for name in ("policy_flops", "prm_flops"):
        parts = [p[name] for p in per]
        out[name] = None if any(x is None for x in parts) else {
            k: sum(x[k] for x in parts) for k in (*_zero(), "total", "total_no_reuse")}
    for key in ("total_flops", "total_flops_no_reuse"):
        vals = [p[key] for p in per]
        out[key] = None if any(v is None for v in vals) else float(sum(vals))
    n = len(per) or 1
    out["per_problem_mean"] = {k: (None if out[k] is None else out[k] / n)
                               for k in ("total_flops", "total_flops_no_reuse")}
    out["per_problem"] = {
        str(r.get("id", i)): {"policy": _get(p["policy_flops"], "total"),
                              "prm": _get(p["prm_flops"], "total"),
                              "total": p["total_flops"], "total_no_reuse": p["total_flops_no_reuse"]}
        for i, (r, p) in enumerate(zip(with_tree, per))}
    return out


def _get(part: dict[str, float] | None, key: str) -> float | None:
    return None if part is None else part[key]


def is_free_prm(config: Mapping[str, Any]) -> bool:
    target = str((config.get("prm") or {}).get("_target_", ""))
    return target.endswith("LogprobPRM")


def _is_synthetic(node: Mapping[str, Any]) -> bool:
    return ".synthetic." in str(node.get("_target_", ""))


def resolve_shapes(config: Mapping[str, Any]) -> tuple[tuple[ModelShape | None, dict[str, Any]], ...]:
    """(shape, provenance) of the policy and of the PRM."""
    comp = dict(config.get("compute") or {})
    out = []
    for side in ("policy", "prm"):
        node = dict(config.get(side) or {})
        if comp.get(f"{side}_shape"):
            shape, src = _from(comp[f"{side}_shape"], f"compute.{side}_shape")
        elif side == "prm" and is_free_prm(config):
            shape, src = None, {"source": "none: the policy's own log-probabilities (0 FLOPs)"}
        elif _is_synthetic(node):
            if comp.get("synthetic_shape"):
                shape, src = _from(comp["synthetic_shape"], "compute.synthetic_shape")
            else:
                shape, src = None, {"source": None, "error": "compute.synthetic_shape is not set"}
        else:
            shape, src = _model_shape(node, side)
        out.append((shape, src))
    return tuple(out)


def _from(cfg: Mapping[str, Any], source: str) -> tuple[ModelShape | None, dict[str, Any]]:
    try:
        shape = ModelShape.from_config(cfg)
    except ValueError as err:
        return None, {"source": source, "error": str(err)}
    return shape, {"source": source, **asdict(shape), "matmul_params": shape.matmul_params}


def _model_shape(node: Mapping[str, Any], side: str) -> tuple[ModelShape | None, dict[str, Any]]:
    """The ``config.json`` of ``node.model`` (embedded name, folder, or cached hub id); never
    downloads."""
    name = node.get("model")
    if not name:
        return None, {"source": None, "error": f"{side} has no model key"}
    path = config_json(str(name), node.get("revision"))
    if path is None:
        return None, {"source": None, "error": f"{side}.model={name!r}: no config.json in a folder "
                      f"or the local Hugging Face cache (set compute.{side}_shape)"}
    return _from(json.loads(Path(path).read_text()), str(path))


def config_json(name: str, revision: str | None = None) -> Path | None:
    """Where ``name``'s ``config.json`` is on this machine, or None."""
    from ets.models import EMBEDDED

    if name in EMBEDDED:
        try:
            return Path(EMBEDDED[name]()) / "config.json"
        except Exception:  # noqa: BLE001 - the embedded model may be absent: no shape then
            return None
    path = Path(name).expanduser()
    if path.is_dir():
        return path / "config.json" if (path / "config.json").exists() else None
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(name, "config.json", revision=revision)
    except Exception:  # noqa: BLE001 - an invalid repo id: no shape
        return None
    return Path(found) if isinstance(found, str) else None


def flat_metrics(compute: Mapping[str, Any] | None) -> dict[str, float]:
    """``compute/...`` scalars for trackers (None values left out)."""
    if not compute:
        return {}
    out: dict[str, float] = {}
    for name in ("policy_flops", "prm_flops"):
        for k, v in (compute.get(name) or {}).items():
            out[f"compute/{name}/{k}"] = v
    for k in ("total_flops", "total_flops_no_reuse"):
        if compute.get(k) is not None:
            out[f"compute/{k}"] = compute[k]
    for k, v in (compute.get("per_problem_mean") or {}).items():
        if v is not None:
            out[f"compute/per_problem_mean/{k}"] = v
    for k, v in (compute.get("tokens") or {}).items():
        out[f"compute/tokens/{k}"] = v
    return out
