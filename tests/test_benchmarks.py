"""Dataset presets aime25, amc23, olympiadbench, gpqa_diamond: each loaded through its
preset (hub id, config, split, field mapping) from a local repository laid out and typed
as the hub's, so the mapping is exercised without a download; and the letter grader."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from hydra.utils import instantiate

from ets.config import register_configs
from ets.datasets.grading import LetterGrader, answer_letter
from ets.datasets.multiple_choice import shuffled_choices
from tests.conftest import ROOT

# Rows as the hub's (field names and types from each dataset card; the texts are made up).
AIME25 = [{"problem": "Find the remainder when $2^{10}$ is divided by $1000$.", "answer": "24", "id": "0"},
          {"problem": "How many positive divisors does $360$ have?", "answer": "24", "id": "1"}]
AMC23 = [{"id": 0, "question": "What is $1+2+\\cdots+10$?", "answer": 55.0, "url": "https://x/1"},
         {"id": 1, "question": "What is $\\sqrt{2}\\cdot\\sqrt{8}$?", "answer": 4.0, "url": "https://x/2"}]
OLYMPIAD = [
    {"id": 1606, "question": "Compute $\\sin^2 30^\\circ$.", "solution": ["..."],
     "final_answer": ["$\\frac{1}{4}$"], "context": None, "image_1": None, "modality": "Text-only",
     "difficulty": "Competition", "is_multiple_answer": False, "unit": None,
     "answer_type": "Numerical", "error": None, "question_type": "Open-ended",
     "subfield": "Algebra", "subject": "Math", "language": "English"},
    {"id": 1607, "question": "Solve $x^2=4$.", "solution": ["..."], "final_answer": ["$2$", "$-2$"],
     "context": None, "image_1": None, "modality": "Text-only", "difficulty": "Competition",
     "is_multiple_answer": True, "unit": None, "answer_type": "Numerical", "error": None,
     "question_type": "Open-ended", "subfield": "Algebra", "subject": "Math", "language": "English"},
]
GPQA = [{"Pre-Revision Question": "q", "Question": f"Which particle has charge {q}?",
         "Correct Answer": right, "Incorrect Answer 1": "photon", "Incorrect Answer 2": "neutrino",
         "Incorrect Answer 3": "Z boson", "Explanation": "...", "Record ID": rid,
         "Subdomain": "Physics (general)", "High-level domain": "Physics"}
        for q, right, rid in (("-1", "electron", "rec0001"), ("+1", "positron", "rec0002"),
                              ("+2/3", "up quark", "rec0003"))]


def hub_repo(root: Path, config: str | None, split: str, rows: list[dict]) -> Path:
    """A dataset repository as on the hub: README metadata naming the config's data files."""
    sub = config or "default"
    (root / sub).mkdir(parents=True)
    (root / sub / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "README.md").write_text(
        f"---\nconfigs:\n- config_name: {sub}\n  data_files:\n  - split: {split}\n"
        f"    path: {sub}/{split}.jsonl\n---\n")
    return root


def preset(name: str, **over: object):
    from hydra import compose, initialize_config_dir

    register_configs()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[f"dataset={name}"] + [f"dataset.{k}={v}" for k, v in over.items()])
    return cfg.dataset


@pytest.mark.parametrize("name,hub,config,split,rows", [
    ("aime25", "math-ai/aime25", None, "test", AIME25),
    ("amc23", "math-ai/amc23", None, "test", AMC23),
    ("olympiadbench", "Hothan/OlympiadBench", "OE_TO_maths_en_COMP", "train", OLYMPIAD),
    ("gpqa_diamond", "Idavidrein/gpqa", "gpqa_diamond", "train", GPQA),
])
def test_preset_loads_hub_layout(tmp_path, name, hub, config, split, rows):
    cfg = preset(name)
    assert (cfg.hub_id, cfg.hub_config, cfg.split) == (hub, config, split)
    # a unique folder name: the datasets cache keys local repositories by their name
    repo = hub_repo(tmp_path / f"{name}-{tmp_path.name}", config, split, rows)
    ds = instantiate(preset(name, hub_id=str(repo)), _convert_="partial")
    probs = ds.load()
    assert len(probs) == len(rows) and ds.skipped == 0
    grader = ds.grader
    if name == "aime25":
        assert [(p.id, p.gold) for p in probs] == [("0", "24"), ("1", "24")]
        assert probs[0].question == AIME25[0]["problem"]
    elif name == "amc23":
        assert [(p.id, p.gold) for p in probs] == [("0", "55.0"), ("1", "4.0")]
        assert grader.equivalent(probs[0].gold, "55") and not grader.equivalent(probs[1].gold, "5")
    elif name == "olympiadbench":
        assert [(p.id, p.gold) for p in probs] == [("1606", "$\\frac{1}{4}$"), ("1607", "$2$, $-2$")]
        assert grader.equivalent(probs[0].gold, "0.25")
    else:
        for p, row in zip(probs, rows):
            assert p.id == row["Record ID"] and p.question.startswith(row["Question"] + "\n\nA) ")
            letter = p.gold
            assert f"\n{letter}) {row['Correct Answer']}\n" in p.question + "\n"
            assert "\\boxed{LETTER}" in p.question
            for wrong in ("photon", "neutrino", "Z boson"):
                assert wrong in p.question
            assert grader.equivalent(letter, f"\\text{{({letter})}}")
            assert not grader.equivalent(letter, "ABCD".replace(letter, "")[0])
        # the same order again: fixed by the seed and the id, not by the load
        again = instantiate(preset(name, hub_id=str(repo)), _convert_="partial").load()
        assert [p.question for p in again] == [p.question for p in probs]


def test_choice_order_is_a_seeded_uniform_shuffle():
    wrong = ["w1", "w2", "w3"]
    letters = Counter(shuffled_choices("right", wrong, 0, f"id{i}")[1] for i in range(4000))
    assert set(letters) == set("ABCD")
    assert all(850 < n < 1150 for n in letters.values())  # ~1000 each
    choices, letter = shuffled_choices("right", wrong, 3, "x")
    assert sorted(choices) == sorted(["right", *wrong]) and choices["ABCD".index(letter)] == "right"
    assert shuffled_choices("right", wrong, 3, "x") == (choices, letter)


@pytest.mark.parametrize("text,letter", [
    ("B", "B"), ("(C)", "C"), ("D) 42 eV", "D"), ("\\text{A}", "A"), ("$\\textbf{(B)}$", "B"),
    ("\\boxed{C}", "C"), ("The answer is (D)", "D"), ("Answer: A", "A"), (" b ", None),
    ("42", None), ("All of them", None), ("", None),
])
def test_answer_letter(text, letter):
    assert answer_letter(text) == letter


def test_letter_grader():
    g = LetterGrader()
    assert g.equivalent("B", "(B)") and g.equivalent("B", "B) positron")
    assert not g.equivalent("B", "C") and not g.equivalent("B", "positron") and not g.equivalent("B", "")
