"""MCTS (OpenR PUCT, llm-reasoners UCT): hand-computed selections and backups, dedup,
priors, the loop with ScriptedPolicy/ScriptedPRM, config validation."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import pytest
from hydra.utils import instantiate

from ets.config import ConfigError, validate
from ets.core.tree import Node, Tree
from ets.protocols import Budget
from ets.selectors.mcts_puct import MCTSPUCTStrategies, PUCTStrategy, legal_children, priors, puct_score
from ets.selectors.mcts_uct import MCTSUCTStrategies, UCTStrategy
from tests.core.helpers import ScriptedPolicy, ScriptedPRM, make_search, problems, run_all

BUDGET = Budget(width=4, max_depth=40, max_tokens=1000, max_nodes=1000)


@dataclass
class Kid:
    """A scripted child: text, PRM score, finished (with answer), tokens, exp(mean logprob)."""

    text: str
    score: float
    answer: str | None = None
    tokens: int = 2
    prob: float = 0.5
    stop_reason: str = "stop"

    def add(self, tree: Tree, parent: Node) -> Node:
        ids = tuple(hash((parent.id, self.text, k)) % 50000 for k in range(self.tokens))
        node = tree.add_child(parent, self.text, ids, logprob=self.tokens * math.log(self.prob),
                              stop_reason=self.stop_reason)
        node.score = self.score
        if self.answer is not None:  # finished iff it carries an answer
            node.finished, node.finish_reason, node.answer = True, "answer", self.answer
        return node


def drive(strategy, script: dict[str, list[Kid]]) -> list[str]:
    """Run ``strategy`` with children from ``script`` (keyed by the parent's text, root:
    ""); returns the texts of the expanded nodes in order."""
    expanded = []
    for _ in range(100):
        if strategy.done():
            return expanded
        (e,) = strategy.propose()
        key = "" if e.node.parent is None else e.node.text
        expanded.append(key)
        kids = [k.add(strategy.tree, e.node) for k in script[key]]
        assert len(kids) <= e.n
        strategy.observe([(e, kids)])
    raise AssertionError("did not finish")


def puct(num_path: int, width: int = 2, **kw) -> PUCTStrategy:
    factory = MCTSPUCTStrategies(num_path=num_path, tree_max_width=width, **kw)
    return factory(problems()[0], Tree("Q\n", (1, 2)), random.Random(0), BUDGET)


# ---- PUCT (OpenR) -------------------------------------------------------------------------
def test_puct_score_by_hand():
    # c = ln((N + 19652 + 1) / 19652) + 1.25; score = Q + c * sqrt(N) / (n + 1) * P
    c1 = math.log(19654 / 19652) + 1.25  # 1.2501017...
    assert puct_score(1, 1, 0.9, 0.1) == pytest.approx(0.9 + c1 * 1 / 2 * 0.1)
    assert puct_score(1, 0, 0.5, 0.9) == pytest.approx(1.625091, abs=1e-6)
    # the log term matters once N is comparable to the base: N = 19652 -> ln(39305/19652)
    c_big = math.log(39305 / 19652) + 1.25
    assert puct_score(19652, 3, 0.0, 1.0) == pytest.approx(c_big * math.sqrt(19652) / 4)
    assert puct_score(0, 0, 0.3, 1.0) == 0.3  # an unvisited parent: value only


def test_priors_are_normalised_exp_mean_logprob():
    tree = Tree("Q", (1,))
    a = tree.add_child(tree.root, "a", (1, 2, 3), logprob=-0.6)  # mean -0.2 -> 0.818731
    b = tree.add_child(tree.root, "b", (4, 5), logprob=-2.0)  # mean -1.0 -> 0.367879
    c = tree.add_child(tree.root, "c", (), logprob=0.0)  # 0 tokens: mean over max(1, 0) -> 1
    got = priors([a, b, c])
    total = 0.818731 + 0.367879 + 1.0
    assert got == pytest.approx([0.818731 / total, 0.367879 / total, 1.0 / total], abs=1e-6)
    assert priors([a, b]) == pytest.approx([0.818731 / 1.18661, 0.367879 / 1.18661], abs=1e-5)


def test_dedup_of_identical_siblings_and_truncated_steps():
    s = puct(num_path=1, width=5)
    script = {"": [Kid("x", 0.2, prob=0.8), Kid("x", 0.9, prob=0.1), Kid("y", 0.4, prob=0.2),
                   Kid("z", 0.99, stop_reason="length"), Kid("", 0.99)],
              "y": [Kid("y1", 0.5, answer="1")], "x": [Kid("x1", 0.5, answer="2")]}
    drive(s, script)
    kept = [m.node.text for m in s.root.children]
    assert kept == ["x", "y"]  # the second "x", the truncated "z" and the empty step dropped
    # the first "x" was kept (score 0.2, prior 0.8): priors renormalised over x and y only
    assert [m.initial_value for m in s.root.children] == [0.2, 0.4]
    assert [m.prior for m in s.root.children] == pytest.approx([0.8, 0.2])
    assert s.stats()["dropped"] == 3
    # without dedup the duplicate stays; without drop_truncated so does "z"
    s2 = puct(num_path=1, width=5, dedup=False, drop_truncated=False)
    drive(s2, {**script, "z": [Kid("z1", 0.5, answer="3")]})
    assert [m.node.text for m in s2.root.children] == ["x", "x", "y", "z"]


def test_puct_three_paths_by_hand():
    """A 2-level tree; every number below is computed by hand in the comments.

    Root children A (score 0.6, prior 0.1) and B (0.5, prior 0.9).
    Path 1: root unvisited -> by value: A; expand A -> A1 (0.9, answer), A2 (0.2); A
      unvisited -> A1; A1 is terminal: value 0.9 backed up to A1, A, root.
    Path 2: root N=1, c = ln(19654/19652) + 1.25 = 1.2501; A: 0.9 + c*1/2*0.1 = 0.9625,
      B: 0.5 + c*1/1*0.9 = 1.6251 -> B; expand B -> B1 (0.3, answer, prior .5),
      B2 (0.7, prior .5); B unvisited -> B2 (0.7 > 0.3); expand B2 -> B2a (0.4, answer);
      -> B2a terminal: 0.4 backed up to B2a, B2, B, root.
    Path 3: root N=2, c = ln(19655/19652) + 1.25 = 1.25015; A: 0.9 + c*sqrt2/2*0.1
      = 0.9884, B: 0.4 + c*sqrt2/2*0.9 = 1.1956 -> B; B N=1: B1: 0.3 + 1.2501*1*0.5 =
      0.9251, B2: 0.4 + 1.2501/2*0.5 = 0.7125 -> B1, terminal and unvisited: its initial
      value 0.3 is backed up.
    """
    s = puct(num_path=3)
    script = {
        "": [Kid("A", 0.6, prob=0.1), Kid("B", 0.5, prob=0.9)],
        "A": [Kid("A1", 0.9, answer="1"), Kid("A2", 0.2)],
        "B": [Kid("B1", 0.3, answer="2"), Kid("B2", 0.7)],
        "B2": [Kid("B2a", 0.4, answer="3"), Kid("B2b", 0.1, stop_reason="length")],
    }
    assert drive(s, script) == ["", "A", "B", "B2"]
    assert [m.node.text for m in s.path_ends] == ["A1", "B2a", "B1"]
    assert s.path_values == pytest.approx([0.9, 0.4, 0.3])
    by = {m.node.text: m for m in s.nodes[1:]}
    assert (s.root.visits, s.root.value_sum) == (3, pytest.approx(1.6))
    assert (by["A"].visits, by["A"].value_sum) == (1, pytest.approx(0.9))
    assert (by["B"].visits, by["B"].value_sum) == (2, pytest.approx(0.7))
    assert (by["B2"].visits, by["B2"].value) == (1, pytest.approx(0.4))
    assert (by["B1"].visits, by["B1"].value) == (1, pytest.approx(0.3))
    assert by["A2"].visits == 0 and by["A2"].value == 0.2  # unvisited: initial value
    assert [n.text for n in s.finalists()] == ["A1", "B2a", "B1"]
    # KV: the open nodes with no open child: A2, and B2 (its kept child B2a is finished,
    # B2b was dropped); A and B are on their paths
    assert [n.text for n in s.kv_nodes()] == ["A2", "B2"]


def test_puct_ties_go_to_the_first_child():
    # OpenR's strict ">": equal PUCT scores keep the first child in generation order
    s = puct(num_path=1, width=3)
    drive(s, {"": [Kid("c0", 0.5, answer="0"), Kid("c1", 0.5, answer="1"), Kid("c2", 0.4, answer="2")]})
    assert [m.node.text for m in s.path_ends] == ["c0"]


def test_puct_terminal_reached_twice_adds_its_mean_value():
    # root has one child X; X -> X1 (answer, 0.8). Both paths end at X1; the second adds
    # X1's mean value (0.8) again: root value sum 1.6 over 2 visits, and X1 counts twice.
    s = puct(num_path=2, width=1)
    drive(s, {"": [Kid("X", 0.5)], "X": [Kid("X1", 0.8, answer="4")]})
    assert s.root.visits == 2 and s.root.value_sum == pytest.approx(1.6)
    assert [n.text for n in s.finalists()] == ["X1", "X1"]


def test_puct_dead_end_and_depth_cap():
    # every child of Y is dropped: Y is a dead end, its path ends there with Y's value
    s = puct(num_path=2)
    drive(s, {"": [Kid("Y", 0.9), Kid("Z", 0.1)], "Y": [Kid("q", 0.5, stop_reason="length"),
                                                      Kid("r", 0.5, stop_reason="length")],
              "Z": [Kid("Z1", 0.2, answer="1"), Kid("Z2", 0.1)]})
    ends = [m.node.text for m in s.path_ends]
    # path 2: root N=1, Y: 0.9 + 1.2501/2*0.5 = 1.2125 vs Z: 0.1 + 1.2501*0.5 = 0.725 -> Y
    assert ends == ["Y", "Y"] and s.finalists() == [] and s.stats()["dead_ends"] == 1
    # tree_max_depth=1: a path ends at depth 1 without expanding
    s = puct(num_path=2, tree_max_depth=1)
    assert drive(s, {"": [Kid("Y", 0.9), Kid("Z", 0.1)]}) == [""]
    assert [m.node.text for m in s.path_ends] == ["Y", "Y"]


def test_puct_select_by_prior_uses_the_problem_rng():
    script = {"": [Kid(f"c{i}", 0.5, prob=0.1 + 0.2 * i, answer=str(i)) for i in range(4)]}
    picks = []
    for seed in range(40):
        factory = MCTSPUCTStrategies(num_path=1, tree_max_width=4, select_by_prior=True)
        s = factory(problems()[0], Tree("Q\n", (1, 2)), random.Random(seed), BUDGET)
        drive(s, script)
        picks.append(s.path_ends[0].node.text)
        again = factory(problems()[0], Tree("Q\n", (1, 2)), random.Random(seed), BUDGET)
        drive(again, script)
        assert again.path_ends[0].node.text == picks[-1]  # same seed, same draw
    assert len(set(picks)) >= 3  # by value alone it would always be c0 (all tie, first wins)


def test_puct_stops_at_max_nodes():
    factory = MCTSPUCTStrategies(num_path=5, tree_max_width=2)
    s = factory(problems()[0], Tree("Q\n", (1,)), random.Random(0), Budget(4, 40, 1000, max_nodes=4))
    exp = drive(s, {"": [Kid("A", 0.6), Kid("B", 0.5)], "A": [Kid("A1", 0.9), Kid("A2", 0.2)]})
    assert exp == ["", "A"] and s.stats()["stopped_by_max_nodes"] == 1 and s.path_ends == []


# ---- UCT (llm-reasoners) ------------------------------------------------------------------
def uct(n_iters: int, **kw) -> UCTStrategy:
    kw = {"n_actions": 2, "depth_limit": 3, **kw}
    factory = MCTSUCTStrategies(n_iters=n_iters, **kw)
    return factory(problems()[0], Tree("Q\n", (1, 2)), random.Random(0), BUDGET)


UCT_SCRIPT = {
    "": [Kid("A", 0.6), Kid("B", 0.5)],
    "A": [Kid("A1", 0.1, answer="1"), Kid("A2", 0.05)],
    "B": [Kid("B1", 0.8), Kid("B2", 0.3, answer="2")],
    "B1": [Kid("B1a", 0.7, answer="3"), Kid("B1b", 0.75)],
    "B1b": [Kid("X", 0.1), Kid("Y", 0.2)],
}


def test_uct_three_iterations_by_hand():
    """Iteration 1: root expanded; simulation by best fast reward root -> A (0.6) ->
      expand A -> A1 (0.1 > 0.05), terminal. Backup (sum of the suffix rewards; the root's
      reward is 0): A1 0.1, A 0.7, root 0.7.
    Iteration 2: root N=1 -> ln 1 = 0: A: Q 0.7, B: fast reward 0.5 -> A; A N=1: A1 0.1 vs
      A2 0.05 -> A1, terminal: no expansion. A1 [0.1, 0.1], A [0.7, 0.7], root [0.7, 0.7].
    Iteration 3: root N=2: A: 0.7 + sqrt(ln2/2) = 1.2887, B: 0.5 + sqrt(ln2/1) = 1.3326 -> B;
      expand B; simulate: B1 (0.8), expand B1; B1b (0.75 > 0.7), expand B1b (at the depth
      limit 3: the reference expands it before checking the limit), stop. Backup over
      root, B, B1, B1b: B1b 0.75, B1 1.55, B 2.05, root 2.05.
    """
    s = uct(3)
    assert drive(s, UCT_SCRIPT) == ["", "A", "B", "B1", "B1b"]
    by = {m.node.text: m for m in s.nodes[1:]}
    assert s.root.cum_rewards == pytest.approx([0.7, 0.7, 2.05])
    assert by["A"].cum_rewards == pytest.approx([0.7, 0.7])
    assert by["A1"].cum_rewards == pytest.approx([0.1, 0.1])
    assert by["B"].cum_rewards == pytest.approx([2.05])
    assert by["B1"].cum_rewards == pytest.approx([1.55])
    assert by["B1b"].cum_rewards == pytest.approx([0.75])
    assert by["A2"].cum_rewards == [] and not by["A2"].expanded
    assert [[m.node.text for m in p[1:]] for p in s.iter_paths] == [
        ["A", "A1"], ["A", "A1"], ["B", "B1", "B1b"]]
    assert s.iter_returns == pytest.approx([0.7, 0.7, 2.05])
    # UCT values of iteration 3 as the strategy computes them (root N = 2 by then: 3)
    assert s.uct(by["B"]) == pytest.approx(2.05 + math.sqrt(math.log(3) / 1))
    # max_reward: the only terminal path over expanded nodes is A -> A1 (0.6 + 0.1)
    assert s.dfs_max_reward([s.root])[0] == pytest.approx(0.7)
    assert [n.text for n in s.finalists()] == ["A1"]


def test_uct_without_expansion_at_the_depth_limit():
    s = uct(3, expand_at_depth_limit=False)
    assert drive(s, UCT_SCRIPT) == ["", "A", "B", "B1"]
    assert s.root.cum_rewards == pytest.approx([0.7, 0.7, 2.05])


def test_uct_mean_cum_reward_counts_the_root():
    # RAP's GSM8k setting cum_reward=mean: the root's reward 0 is in its own mean
    s = uct(1, cum_reward="mean")
    drive(s, UCT_SCRIPT)
    by = {m.node.text: m for m in s.nodes[1:]}
    assert by["A1"].cum_rewards == pytest.approx([0.1])
    assert by["A"].cum_rewards == pytest.approx([0.35])
    assert s.root.cum_rewards == pytest.approx([0.7 / 3])


def test_uct_unexpanded_children_first_without_fast_reward_uct():
    # uct_with_fast_reward=False: at iteration 2 the root's unexpanded child B goes first
    s = uct(2, uct_with_fast_reward=False)
    assert drive(s, UCT_SCRIPT) == ["", "A", "B", "B1", "B1b"]
    assert [m.node.text for m in s.iter_paths[1][1:]] == ["B", "B1", "B1b"]


def test_uct_output_strategies():
    script = {**UCT_SCRIPT, "B1b": [Kid("X", 0.1, answer="3"), Kid("Y", 0.2, answer="2")]}
    ends = {}
    for rule in ("max_reward", "max_iter", "last_terminal_iter", "aggregate", "vote"):
        s = uct(4, output_strategy=rule, expand_at_depth_limit=True, depth_limit=4)
        drive(s, script)
        ends[rule] = [n.text for n in s.finalists()]
    # iterations: [A, A1] 0.7, [A, A1] 0.7, [B, B1, B1b, Y] 0.5+0.8+0.75+0.2 = 2.25, then
    # root N=3: A 0.7 + sqrt(ln3/2) = 1.4412, B 2.25 + sqrt(ln3) = 3.2982 -> B (N=1, ln 1 = 0):
    # B1 Q 1.75 vs B2 fast 0.3 -> B1 -> B1b Q 0.95 vs B1a 0.7 -> B1b -> Y (0.2 vs X 0.1 at
    # ln 1 = 0) terminal: return 2.25 again.
    assert ends["max_reward"] == ["Y"] and ends["max_iter"] == ["Y"]
    assert ends["last_terminal_iter"] == ["Y"]
    assert ends["vote"] == ["A1", "A1", "Y", "Y"]
    # aggregate (edge): answer "1": A1 0.1 + A 0.6 + root 0 = 0.7; "2": Y 0.2 + B1b 0.75
    # + B1 0.8 + B 0.5 = 2.25 -> "2" (its first terminal node in depth-first order: Y)
    assert ends["aggregate"] == ["Y"]


def test_uct_random_simulation_uses_the_problem_rng():
    seen = set()
    script = {**UCT_SCRIPT, "A2": [Kid("A2x", 0.1, answer="9"), Kid("A2y", 0.1, answer="8")]}
    for seed in range(20):
        factory = MCTSUCTStrategies(n_iters=1, n_actions=2, depth_limit=3, simulate_strategy="random")
        s = factory(problems()[0], Tree("Q\n", (1, 2)), random.Random(seed), BUDGET)
        seen.add(tuple(drive(s, script)))
    assert len(seen) >= 2  # by fast reward alone it would always be ["", "A"]


# ---- through the loop, ScriptedPolicy / ScriptedPRM ---------------------------------------
def test_puct_through_the_loop_with_scripted_policy():
    """Step texts are "s<depth><child>"; the PRM scores a path by its last step: child 1
    scores 0.9, child 0 0.4; depth-2 steps carry an answer. Priors are equal (same
    length, same logprob per token). Path 1: root unvisited -> s11 (0.9); expand s11 ->
    s21 (0.9, answer). Path 2: root N=1: s11 0.9 + 1.2501/2*0.5 = 1.2125 vs s10
    0.4 + 1.2501*0.5 = 1.0250 -> s11; s11 N=1: s21 1.2125 vs s20 1.0250 -> s21 again."""

    def script(ctx, j, req):
        depth = ctx.count("|")
        text = f"s{depth + 1}{j}|" + (f"\nThe answer is {j}.\n\n" if depth == 1 else "\n\n")
        return text, 4, "stop"

    def prm(text):
        return 0.9 if text.split("|")[-2].endswith("1") else 0.4

    policy = ScriptedPolicy(script)
    factory = MCTSPUCTStrategies(num_path=2, tree_max_width=2, temperature=0.7)
    search = make_search(policy, factory, prm=ScriptedPRM(prm), width=2, scheduler="lockstep")
    (rec,) = run_all(search, problems(1))
    assert [r.temperature for r in policy.requests] == [0.7, 0.7]
    assert [r.context_text.count("|") for r in policy.requests] == [0, 1]
    assert rec["predictions"]["majority"] == "1" and rec["strategy"]["paths"] == 2
    assert rec["strategy"]["root_visits"] == 2 and rec["strategy"]["expansions"] == 2


# ---- config ---------------------------------------------------------------------------------
def test_configs_compose_and_instantiate(compose_cfg):
    cfg = compose_cfg("selector=mcts_puct", "selector.num_path=3")
    validate(cfg)
    f = instantiate(cfg.selector)
    assert isinstance(f, MCTSPUCTStrategies) and f.num_path == 3
    assert f.kw["tree_max_width"] == 4 and f.kw["temperature"] == 0.7 and f.kw["pb_c_base"] == 19652
    cfg = compose_cfg("selector=mcts_uct", "selector.output_strategy=vote")
    validate(cfg)
    f = instantiate(cfg.selector)
    assert isinstance(f, MCTSUCTStrategies) and f.n_iters is None
    assert f.kw["depth_limit"] == 5 and f.kw["w_exp"] == 1.0 and f.kw["output_strategy"] == "vote"


@pytest.mark.parametrize(("selector", "override", "fragment"), [
    ("mcts_puct", "selector.tree_max_width=0", "selector.tree_max_width=0 is invalid: must be >= 1"),
    ("mcts_puct", "selector.num_path=0", "selector.num_path=0 is invalid: must be >= 1"),
    ("mcts_puct", "selector.pb_c_base=0", "selector.pb_c_base=0.0 is invalid: must be > 0"),
    ("mcts_puct", "selector.temperature=-1", "selector.temperature=-1.0 is invalid: must be >= 0"),
    ("mcts_puct", "selector.finalists=all", "selector.finalists=all is invalid; allowed: paths, tree"),
    ("mcts_uct", "selector.w_exp=-1", "selector.w_exp=-1.0 is invalid: must be >= 0"),
    ("mcts_uct", "selector.depth_limit=0", "selector.depth_limit=0 is invalid: must be >= 1"),
    ("mcts_uct", "selector.output_strategy=best", "selector.output_strategy=best is invalid; allowed"),
    ("mcts_uct", "selector.cum_reward=prod", "selector.cum_reward=prod is invalid; allowed: sum, mean, max"),
])
def test_bad_config_values_name_the_key(compose_cfg, selector, override, fragment):
    cfg = compose_cfg(f"selector={selector}", override)
    with pytest.raises(ConfigError, match=fragment.replace(".", r"\.")):
        validate(cfg)


@pytest.mark.parametrize(("cls", "kwargs", "key"), [
    (MCTSPUCTStrategies, {"tree_max_width": 0}, "tree_max_width"),
    (MCTSPUCTStrategies, {"finalists": "x"}, "finalists"),
    (MCTSUCTStrategies, {"simulate_strategy": "sample"}, "simulate_strategy"),
    (MCTSUCTStrategies, {"n_iters": 0}, "n_iters"),
])
def test_direct_construction_rejects_bad_values(cls, kwargs, key):
    with pytest.raises(ValueError, match=key):
        cls(**kwargs)


def test_legal_children_keeps_generation_order():
    tree = Tree("Q", (1,))
    a, b, c = (tree.add_child(tree.root, t, (1,), stop_reason=r)
               for t, r in (("b", "eos"), ("a", "stop"), ("b", "stop")))
    assert legal_children([a, b, c]) == [a, b]


# ---- end to end ---------------------------------------------------------------------------
def _cli(tmp_path, *overrides: str) -> tuple[dict, list[dict]]:
    import json
    import os
    import subprocess
    import sys

    from tests.conftest import ROOT

    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "ets", *overrides, "tracker=local", f"hydra.run.dir={out}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in (out / "problems.jsonl").read_text().splitlines()]
    return json.loads((out / "summary.json").read_text()), rows


SYNTHETIC = ["+experiment=synthetic", "dataset.limit=6", "search.width=8", "search.concurrency=4"]


def _check_tree(rec: dict, per_expansion: int) -> None:
    """Every expansion adds exactly ``per_expansion`` children to the record's tree (the
    dropped ones stay in the tree, out of the MCTS) and the stats count them."""
    kids: dict[int, int] = {}
    for row in rec["tree"][1:]:
        kids[row["parent"]] = kids.get(row["parent"], 0) + 1
    assert set(kids.values()) == {per_expansion}
    assert len(kids) == rec["strategy"]["expansions"]
    assert rec["tokens"] == sum(row["tokens"] for row in rec["tree"][1:])


def test_cli_synthetic_mcts_puct(tmp_path):
    summary, rows = _cli(tmp_path, *SYNTHETIC, "selector=mcts_puct")
    assert summary["problems"] == 6 and len(rows) == 6
    for rec in rows:
        st = rec["strategy"]
        _check_tree(rec, 4)  # tree_max_width
        assert st["stopped_by_max_nodes"] == 0 and st["paths"] == 8 == st["root_visits"]  # W paths
        # the vote runs over the path ends (repeats kept): at most one vote per path
        assert sum(v["count"] for v in rec["votes"]) <= 8
        assert st["tree_nodes"] + st["dropped"] == len(rec["tree"]) - 1
    assert summary["accuracy"]["weighted_majority"] > 0


def test_cli_synthetic_mcts_uct(tmp_path):
    summary, rows = _cli(tmp_path, *SYNTHETIC, "selector=mcts_uct", "selector.n_iters=6",
                         "selector.depth_limit=8")
    assert summary["problems"] == 6
    for rec in rows:
        st = rec["strategy"]
        _check_tree(rec, 4)  # n_actions
        assert st["iterations"] == 6
        # max_reward hands the vote one trajectory (or none if no iteration ended)
        assert sum(v["count"] for v in rec["votes"]) == (1 if st["terminal_iterations"] else 0)
        assert max(row["depth"] for row in rec["tree"]) <= 9  # children of depth-limit nodes at most


@pytest.mark.slow  # SmolLM2-135M on CPU (transformers), in process: both methods
def test_smollm2_both_mcts(tmp_path):
    from ets.rundir.results import ResultsFile
    from ets.rundir.run import run
    from tests.core.golden import compose

    common = ["dataset=demo", "dataset.limit=1", "search.width=2", "search.max_step_tokens=32",
              "search.max_tokens=64", "search.max_depth=3", "search.concurrency=1", "tracker=local"]
    recs = {}
    for name, extra in (("mcts_puct", "selector.tree_max_width=2"), ("mcts_uct", "selector.n_actions=2")):
        run(compose(*common, f"selector={name}", extra), tmp_path / name)
        (recs[name],) = ResultsFile(tmp_path / name / "problems.jsonl").load()
    puct_rec, uct_rec = recs["mcts_puct"], recs["mcts_uct"]
    _check_tree(puct_rec, 2)
    st = puct_rec["strategy"]
    # two paths (max_depth 3 ends every path), unless every root continuation was cut
    assert st["paths"] == 2 or (st["dead_ends"] == 1 and st["tree_nodes"] == 0)
    assert st["tree_nodes"] + st["dropped"] == len(puct_rec["tree"]) - 1
    _check_tree(uct_rec, 2)
    assert uct_rec["strategy"]["iterations"] == 2
