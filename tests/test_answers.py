import pytest

from ets.answers import aggregate, extract_answer, vote
from ets.grading import MathVerifyGrader, NumericGrader
from ets.tree import Tree


@pytest.mark.parametrize(("text", "markers", "want"), [
    ("so $x = \\boxed{\\frac{1}{2}}$.", ["boxed"], "\\frac{1}{2}"),
    ("\\boxed{1} then \\boxed{\\sqrt{2}}", ["boxed"], "\\sqrt{2}"),
    ("\\boxed{\\frac{1}{2", ["boxed"], None),  # not closed yet: not an answer
    ("The answer is 42.", ["The answer is"], "42"),
    ("Thus the final answer is: $7$", ["The answer is"], "7"),
    ("... #### 1,234", ["####"], "1,234"),
    ("no marker here", ["boxed", "The answer is"], None),
])
def test_extract(text, markers, want):
    assert extract_answer(text, markers) == want


def test_unknown_marker_is_a_clear_error():
    with pytest.raises(ValueError, match="allowed"):
        extract_answer("x", ["boxd"])


def test_aggregations():
    s = [0.5, 0.8, 0.4]
    assert aggregate(s, "last") == 0.4
    assert aggregate(s, "min") == 0.4
    assert aggregate(s, "prod") == pytest.approx(0.16)
    assert aggregate(s, "mean") == pytest.approx(1.7 / 3)


def test_numeric_grader():
    g = NumericGrader()
    assert g.equivalent("1,234", "1234")
    assert g.equivalent("$12.50", "12.5")
    assert g.equivalent("3/4", "0.75")
    assert not g.equivalent("18", "19")


def test_math_verify_grader_real():
    g = MathVerifyGrader(timeout_s=20)
    assert g.equivalent("\\frac{1}{2}", "0.5")
    assert g.equivalent("\\left( 3, \\frac{\\pi}{2} \\right)", "(3, \\frac{\\pi}{2})")
    assert not g.equivalent("\\frac{1}{3}", "0.5")


def _finished(tree, answer, scores):
    node = tree.root
    for s in scores:
        node = tree.add_child(node, "s", (1,), score=s)
    node.finished, node.answer = True, answer
    return node


def test_votes_hand_computed():
    tree = Tree("p", (0,))
    # three "5" paths with last scores .2 each (weight .6, count 3),
    # two "7" paths with last scores .9 (weight 1.8, count 2), one "7.0" equivalent
    nodes = [_finished(tree, "5", [0.9, 0.2]) for _ in range(3)]
    nodes += [_finished(tree, "7", [0.1, 0.9]) for _ in range(2)]
    nodes.append(_finished(tree, "7.0", [0.95, 0.05]))
    v = vote(nodes, "7", NumericGrader(), "last")
    assert v["majority"] == {"answer": "5", "correct": False}  # 3 vs 3: first group wins ties
    assert v["weighted_majority"] == {"answer": "7", "correct": True}  # .6 vs 1.85
    assert v["best_of_n"] == {"answer": "7", "correct": True}
    assert v["coverage"]["correct"]
    # with min-aggregation the "5" paths weigh .2 each = .6, "7" paths .1,.1,.05 = .25
    assert vote(nodes, "7", NumericGrader(), "min")["weighted_majority"]["answer"] == "5"


def test_vote_with_no_answers():
    assert vote([], "1", NumericGrader())["weighted_majority"] == {"answer": None, "correct": False}
