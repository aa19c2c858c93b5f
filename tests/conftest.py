"""Shared fixtures: compose configs with tiny settings into a tmp output dir."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from ets.config import register_configs
from ets.core.tree import Node, Tree

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
SHARED_DATA = ROOT.parent / "shared" / "data"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
register_configs()


@pytest.fixture
def compose_cfg():
    """``compose_cfg(*overrides)`` → composed DictConfig (primary config)."""

    def _compose(*overrides: str):
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            return compose("config", overrides=list(overrides))

    return _compose


def random_tree(rng: random.Random, depth: int = 3, max_children: int = 3,
                n_candidates: int | None = None) -> tuple[Tree, list[Node]]:
    """A random tree whose deepest level are the candidates (scored, with texts)."""
    tree = Tree("prompt", tuple(range(rng.randint(1, 5))))
    level = [tree.root]
    for _ in range(depth):
        nxt = []
        for parent in level:
            for _ in range(rng.randint(1, max_children)):
                toks = tuple(rng.randrange(50) for _ in range(rng.randint(1, 6)))
                nxt.append(tree.add_child(parent, f"step {rng.randrange(4)}", toks,
                                          score=rng.random()))
        level = nxt
    if n_candidates is not None:
        level = level[:n_candidates]
    return tree, level


def crash_policy_at(monkeypatch, call: int, exc: BaseException):
    """Make the policy of the next ``ets.rundir.run.run`` raise ``exc`` at its ``call``-th
    ``generate`` (a kill mid-run); returns the real ``build_search`` to restore it."""
    import ets.rundir.run as ets_run

    real_build = ets_run.build_search
    calls = {"n": 0}

    def crashing_build(cfg):
        search, dataset = real_build(cfg)
        generate = search.policy.generate

        def gen(requests):
            calls["n"] += 1
            if calls["n"] == call:
                raise exc
            return generate(requests)

        search.policy.generate = gen
        return search, dataset

    monkeypatch.setattr(ets_run, "build_search", crashing_build)
    return real_build
