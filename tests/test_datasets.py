import json

import pytest

from ets.datasets import select
from ets.datasets.jsonl import DatasetError, JsonlDataset
from ets.datasets.synthetic import SyntheticDataset
from tests.conftest import SHARED_DATA


def test_shards_partition_the_items():
    items = list(range(23))
    shards = [list(select(items, f"{i}/4", 0, None)) for i in range(4)]
    assert sorted(x for s in shards for x in s) == items
    assert list(select(items, "1/4", 1, 2)) == [5, 9]
    with pytest.raises(ValueError, match="0 <= i < n"):
        select(items, "4/4", 0, None)
    with pytest.raises(ValueError, match="expected 'i/n'"):
        select(items, "half", 0, None)


def test_gsm8k_gold_is_the_number_after_hashes():
    ds = JsonlDataset(path=str(SHARED_DATA / "gsm8k_test.jsonl"), question_field="question",
                      answer_format="gsm8k", limit=2)
    probs = ds.load()
    assert [p.gold for p in probs] == ["18", "3"]
    assert probs[0].question.startswith("Janet")


def test_math500_ids_and_answers():
    ds = JsonlDataset(path=str(SHARED_DATA / "math500.jsonl"), id_field="unique_id", limit=1)
    (p,) = ds.load()
    assert p.id == "test/precalculus/807.json"
    assert p.gold == "\\left( 3, \\frac{\\pi}{2} \\right)"


def test_malformed_rows_are_counted_not_fatal(tmp_path):
    path = tmp_path / "d.jsonl"
    rows = [{"problem": "1+1?", "answer": "2"}, {"problem": "", "answer": "3"}, {"problem": "x?"}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    ds = JsonlDataset(path=str(path))
    assert [p.gold for p in ds.load()] == ["2"] and ds.skipped == 2


def test_missing_file_and_offline_hub_say_what_to_do(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        JsonlDataset(path=str(tmp_path / "nope.jsonl")).load()
    with pytest.raises(DatasetError, match="dataset.path="):
        JsonlDataset(hub_id="HuggingFaceH4/MATH-500").load()


def test_synthetic_problem_i_does_not_depend_on_the_slice():
    full = SyntheticDataset(n=30).load()
    part = SyntheticDataset(n=30, shard="2/3", offset=1, limit=3).load()
    assert [p.id for p in part] == [full[i].id for i in (5, 8, 11)]
    assert [p.gold for p in part] == [full[i].gold for i in (5, 8, 11)]


def test_hub_config_selects_the_subset(tmp_path):
    # A dataset repository laid out as on the hub (README metadata declaring two
    # configs, as openai/gsm8k has main and socratic), loaded by `datasets` from disk.
    rows = [json.loads(line) for line in
            (SHARED_DATA / "gsm8k_test.jsonl").read_text().splitlines()[:3]]
    for config, mark in (("main", ""), ("socratic", "Socratic: ")):
        (tmp_path / config).mkdir()
        (tmp_path / config / "test.jsonl").write_text("".join(
            json.dumps({"question": mark + r["question"], "answer": r["answer"]}) + "\n"
            for r in rows))
    (tmp_path / "README.md").write_text(
        "---\nconfigs:\n"
        "- config_name: main\n  data_files:\n  - split: test\n    path: main/test.jsonl\n"
        "- config_name: socratic\n  data_files:\n  - split: test\n    path: socratic/test.jsonl\n"
        "---\n")

    def load(config):
        return JsonlDataset(hub_id=str(tmp_path), hub_config=config, split="test",
                            question_field="question", answer_format="gsm8k").load()

    main, socratic = load("main"), load("socratic")
    assert [p.question for p in main] == [r["question"] for r in rows]
    assert all(p.question.startswith("Socratic: ") for p in socratic)
    assert [p.gold for p in main] == ["18", "3", "70000"]
    with pytest.raises(DatasetError, match="nope"):
        load("nope")


def test_gsm8k_preset_names_the_main_config():
    from hydra import compose, initialize_config_dir

    from ets.config import register_configs
    from tests.conftest import ROOT

    register_configs()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["dataset=gsm8k"])
    assert (cfg.dataset.hub_id, cfg.dataset.hub_config, cfg.dataset.split) == ("openai/gsm8k", "main", "test")


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_duplicate_ids_fail_naming_both_rows(tmp_path):
    rows = [{"id": "a", "problem": "1+1?", "answer": "2"}, {"id": "b", "problem": "2+2?", "answer": "4"},
            {"id": "a", "problem": "3+3?", "answer": "6"}]
    with pytest.raises(DatasetError, match=r"rows 0 and 2 share the id 'a'"):
        JsonlDataset(path=_write(tmp_path / "d.jsonl", rows), id_field="id").load()


def test_dropped_rows_are_logged_with_count_and_rows(tmp_path, caplog):
    rows = [{"problem": "1+1?", "answer": "2"}, {"problem": "   \n", "answer": "3"}, {"problem": "x?"},
            {"problem": "", "answer": "1"}, {"problem": "2+2?", "answer": "4"}]
    ds = JsonlDataset(path=_write(tmp_path / "d.jsonl", rows))
    with caplog.at_level("WARNING", logger="ets.datasets"):
        problems = ds.load()
    assert [p.gold for p in problems] == ["2", "4"] and ds.skipped == 3  # the blank question too
    (msg,) = [r.getMessage() for r in caplog.records]
    assert "dropped 3 of 5 rows" in msg and msg.endswith("rows 1, 2, 3")


def test_unreadable_rows_name_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b'{"problem": "a", "answer": "1"}\n\n{"problem": "b", "answer": \n')
    with pytest.raises(DatasetError, match=r"bad\.jsonl, line 3: not valid JSON"):
        JsonlDataset(path=str(path)).load()
    path.write_bytes(b'{"problem": "a", "answer": "1"}\n{"problem": "caf\xe9", "answer": "2"}\n')
    with pytest.raises(DatasetError, match=r"bad\.jsonl, line 2: not UTF-8"):
        JsonlDataset(path=str(path)).load()
    path.write_bytes(b'[1, 2]\n')
    with pytest.raises(DatasetError, match=r"bad\.jsonl, line 1: expected a JSON object, got list"):
        JsonlDataset(path=str(path)).load()


def test_empty_selections_fail_naming_the_key(tmp_path):
    path = _write(tmp_path / "d.jsonl", [{"problem": f"{i}+1?", "answer": str(i + 1)} for i in range(5)])
    with pytest.raises(DatasetError, match=r"dataset\.limit=0 selects no problems"):
        JsonlDataset(path=path, limit=0).load()
    with pytest.raises(DatasetError, match=r"dataset\.offset=5 is past the end: .* has 5 problems"):
        JsonlDataset(path=path, offset=5).load()
    with pytest.raises(DatasetError, match=r"dataset\.offset=3 is past the end: .* has 2 problems in shard 1/2"):
        JsonlDataset(path=path, offset=3, shard="1/2").load()
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(DatasetError, match=r"empty\.jsonl holds no usable problems"):
        JsonlDataset(path=str(tmp_path / "empty.jsonl")).load()
    with pytest.raises(DatasetError, match=r"dataset\.offset=30 is past the end: the synthetic world"):
        SyntheticDataset(n=30, offset=30).load()
    assert len(JsonlDataset(path=path, offset=4).load()) == 1
