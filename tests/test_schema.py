"""The structured-config pattern (issue 9 §3): each schema lives in its component's module,
takes its defaults from the component's ``__init__``, is discovered from the YAMLs'
``_target_`` and registered with no list to edit; YAMLs repeat no default."""

from __future__ import annotations

import dataclasses
import inspect
import os
import shutil
import subprocess
import sys
import textwrap
from collections import Counter

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.errors import ConfigCompositionException
from hydra.utils import instantiate
from omegaconf import OmegaConf

from ets import config, schema
from ets.config import ConfigError, register_configs, validate
from ets.schema import FROM_INIT, MISSING, REGISTRY, Component, SchemaError, num
from tests.conftest import CONF, ROOT

GROUPS = ["selector", "expander", "kv", "policy", "prm", "dataset", "tracker"]

TOY_MODULE = '''
"""A toy selector: the width split evenly over the ``keep`` best candidates."""
from __future__ import annotations

from enum import Enum

from ets.schema import Component, num, schema


class Order(str, Enum):
    best = "best"
    worst = "worst"


class ToySelector:
    def __init__(self, keep: int = 2, order: str = "best") -> None:
        self.keep, self.order = keep, str(getattr(order, "value", order))

    def select(self, candidates, width, tree):
        sign = -1 if self.order == "best" else 1
        ranked = sorted(range(len(candidates)), key=lambda i: (sign * (candidates[i].score or 0.0), i))
        chosen = ranked[: self.keep]
        counts = [0] * len(candidates)
        for j in range(width):
            if chosen:
                counts[chosen[j % len(chosen)]] += 1
        return counts


@schema("selector", "toy", ToySelector)
class ToyConf(Component):
    keep: int = num(ge=1)
    order: Order
'''

TOY_YAML = """\
defaults:
  - /schema/selector@_here_: toy
  - _self_
_target_: toy_selector_pkg.toy.ToySelector
"""


@pytest.fixture
def toy(tmp_path, monkeypatch):
    """A config dir = the shipped one + selector/toy.yaml, and the toy module on sys.path."""
    pkg = tmp_path / "src" / "toy_selector_pkg"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "toy.py").write_text(TOY_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path / "src"))
    conf = tmp_path / "conf"
    shutil.copytree(CONF, conf)
    (conf / "selector" / "toy.yaml").write_text(TOY_YAML)
    yield conf
    REGISTRY["selector"].pop("toy", None)
    for name in [m for m in sys.modules if m.startswith("toy_selector_pkg")]:
        del sys.modules[name]


def _compose(conf, *overrides):
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def test_a_new_selector_is_one_module_and_one_yaml(toy):
    from ets.rundir.run import build_search

    register_configs(toy)
    cfg = _compose(toy, "+experiment=synthetic", "selector=toy", "dataset.limit=3", "search.width=4")
    validate(cfg)
    assert OmegaConf.to_container(cfg.selector) == {
        "_target_": "toy_selector_pkg.toy.ToySelector", "keep": 2, "order": "best"}  # __init__'s defaults
    sel = instantiate(cfg.selector)
    assert type(sel).__name__ == "ToySelector" and sel.keep == 2
    # the search runs with it: after the first depth, at most `keep` parents get children
    search, dataset = build_search(cfg)
    rows: list[dict] = []
    search.run(dataset.load(), rows.append)
    assert len(rows) == 3
    for r in rows:
        by_depth = Counter()
        parents: dict[int, set] = {}
        for n in r["tree"][1:]:
            by_depth[n["depth"]] += 1
            parents.setdefault(n["depth"], set()).add(n["parent"])
        assert by_depth[1] == 4
        assert all(len(p) <= 2 for d, p in parents.items() if d > 1)
        assert any(d > 1 for d in parents)
    # bounds, unknown keys and enums are checked, naming the key
    with pytest.raises(ConfigError, match=r"selector\.keep=0 is invalid: must be >= 1"):
        validate(_compose(toy, "selector=toy", "selector.keep=0"))
    with pytest.raises(ConfigCompositionException, match=r"selector\.kepe"):
        _compose(toy, "selector=toy", "selector.kepe=3")
    with pytest.raises(ConfigCompositionException) as err:
        _compose(toy, "selector=toy", "selector.order=middle")
    assert "best" in str(err.value.__cause__) and "worst" in str(err.value.__cause__)


def test_a_target_module_that_does_not_import_is_named(tmp_path):
    conf = tmp_path / "conf"
    (conf / "selector").mkdir(parents=True)
    (conf / "selector" / "gone.yaml").write_text("_target_: no_such_pkg.mod.Cls\n")
    with pytest.raises(ConfigError, match=r"gone\.yaml: _target_ module no_such_pkg\.mod cannot be imported"):
        register_configs(conf)


def _schemas():
    return [(g, n, s) for g, names in sorted(REGISTRY.items()) for n, s in sorted(names.items())]


def test_every_schema_lives_in_its_component_module_and_none_in_config():
    register_configs()
    assert config.SCHEMAS == {}
    seen = {(g, n) for g, n, _ in _schemas()}
    for group in GROUPS:
        for path in (CONF / group).glob("*.yaml"):
            text = yaml.safe_load(path.read_text())
            for entry in text.get("defaults", []):
                if isinstance(entry, dict) and next(iter(entry)).startswith(f"/schema/{group}"):
                    assert (group, next(iter(entry.values()))) in seen, path
    for group, name, cls in _schemas():
        target = cls.__schema_target__
        if target is not None:
            assert cls.__module__ == target.__module__, (group, name)
        assert cls.__module__ != "ets.config"


def test_schema_defaults_are_the_constructors_and_never_restated():
    """A key without a written default takes the target's; a written one must differ from
    it (otherwise it is a second copy of the same default)."""
    for group, name, cls in _schemas():
        target = cls.__schema_target__
        if target is None:
            continue
        struct = OmegaConf.to_container(OmegaConf.structured(cls), enum_to_str=True)
        for key, (_, declared) in cls.__schema_spec__.items():
            if key == "_target_":
                continue
            init = schema._init_default(target, key)
            init = list(init) if isinstance(init, tuple) else init
            written = declared
            if isinstance(declared, dataclasses.Field):
                factory = declared.default_factory
                written = factory() if factory is not dataclasses.MISSING else declared.default
            if written is FROM_INIT:
                assert struct[key] == getattr(init, "value", init), (group, name, key)
            elif init is not FROM_INIT and init is not MISSING:
                assert written != init, f"{group}/{name}.{key}: restates {target.__name__}.__init__'s default"
            # every key is a parameter of the target (or taken through **kwargs)
            params = {k for c in target.__mro__ if "__init__" in c.__dict__
                      for k in inspect.signature(c.__dict__["__init__"]).parameters}
            assert key in params or "options" in params or "kwargs" in params, (group, name, key)


def _raw(group, name):
    return yaml.safe_load((CONF / group / f"{name}.yaml").read_text()) or {}


def _inherited(group, name):
    out: dict = {}
    for entry in _raw(group, name).get("defaults", []):
        if entry == "_self_":
            continue
        if isinstance(entry, dict):
            (key, value), = entry.items()
            g, _, package = key[len("/schema/"):].partition("@")
            node = OmegaConf.to_container(OmegaConf.structured(REGISTRY[g][value]), enum_to_str=True)
            out.update(node) if package == "_here_" else out.__setitem__(package, node)
        else:
            out.update(_composed(group, entry))
    return out


def _composed(group, name):
    out = _inherited(group, name)
    for key, value in _raw(group, name).items():
        if key != "defaults":
            out[key] = {**out[key], **value} if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


@pytest.mark.parametrize("group", GROUPS)
def test_yamls_repeat_no_default(group):
    """A preset sets only what differs from its schema (and the preset it extends)."""
    register_configs()
    for path in sorted((CONF / group).glob("*.yaml")):
        inherited, own = _inherited(group, path.stem), _raw(group, path.stem)
        for key, value in own.items():
            if key in ("defaults", "_target_") or value == MISSING:  # `???` marks a required key
                continue
            if isinstance(value, dict) and isinstance(inherited.get(key), dict):
                same = [k for k, v in value.items() if k != "_target_" and inherited[key].get(k, object()) == v]
                assert not same, f"{path.name}: {key}.{same} repeat the default"
            else:
                assert inherited.get(key, object()) != value, f"{path.name}: {key}={value!r} is the default"


def test_registering_imports_no_heavy_library():
    code = textwrap.dedent("""
        import sys
        from ets.config import register_configs
        register_configs()
        heavy = ("torch", "transformers", "vllm", "sentence_transformers", "ortools", "numpy", "scipy", "wandb")
        print(sorted(m for m in heavy if m in sys.modules))
    """)
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "[]"


def test_keyword_keys_defaults_and_errors_of_the_decorator():
    class Target:
        def __init__(self, a: int = 3, b: tuple = ("x",), *, req: str, **options: float) -> None: ...

    @schema.schema("test_group", "kw", Target)
    class KwConf(Component):
        a: int = num(ge=1)
        b: list[str]
        req: str
        lambda_: float = num(0.5, ge=0)

    try:
        node = OmegaConf.structured(KwConf)
        assert OmegaConf.to_container(node) == {"_target_": MISSING, "a": 3, "b": ["x"], "req": MISSING,
                                                "lambda": 0.5}
        assert [f.metadata for f in schema.dataclasses.fields(KwConf) if f.name in ("a", "lambda")] == [
            {"ge": 1}, {"ge": 0}]
        with pytest.raises(SchemaError, match=r"NoDefault\.c: no default written and none in Target\.__init__"):
            @schema.schema("test_group", "nodefault", Target)
            class NoDefault(Component):
                c: int
        with pytest.raises(SchemaError, match="declared twice"):
            @schema.schema("test_group", "kw", Target)
            class Other(Component):
                a: int
    finally:
        REGISTRY.pop("test_group", None)


def test_an_old_style_schema_still_registers_and_a_duplicate_is_refused(monkeypatch):
    from dataclasses import dataclass

    @dataclass
    class LegacyConf(config.Component):
        x: int = config._num(1, ge=0)

    monkeypatch.setattr(config, "SCHEMAS", {"selector": {"legacy_test": LegacyConf}})
    register_configs()
    stored = ConfigStore.instance().load("schema/selector/legacy_test.yaml")
    assert OmegaConf.get_type(stored.node) is LegacyConf and stored.node.x == 1
    monkeypatch.setattr(config, "SCHEMAS", {"selector": {"rebase": LegacyConf}})
    with pytest.raises(ConfigError, match="schema/selector/rebase is declared in its module and in ets.config.SCHEMAS"):
        register_configs()
