import pytest

from ets.core.answers import aggregate, extract_answer, vote
from ets.core.tree import Tree
from ets.datasets.grading import MathVerifyGrader, NumericGrader


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


@pytest.mark.parametrize(("text", "want"), [
    # the phrase mid-sentence is not an answer (before: "going to look like")
    ("Let's first let us see what the answer is going to look like.", None),
    ("let us see what the answer is going to look like", None),
    ("We don't know yet what the answer is, so let's compute.", None),
    ("The answer is not obvious, so we compute step by step.", None),
    ("I wonder whether the answer is 5 or 6, let us check.", None),
    # statements of the answer: line or sentence start, after a connective, Markdown
    ("2 + 3 = 5. The answer is 5.", "5"),
    ("Step 3: Add them up.\nThe answer is: 18", "18"),
    ("We add them, so the answer is 5, since 2 + 3 = 5.", "5"),
    ("Therefore, the answer is $\\frac{1}{2}$.", "\\frac{1}{2}"),
    ("**The answer is 72.**", "72"),
    ("- The answer is $12.50 per hour.", "$12.50 per hour"),
    ("The answer is $12.50. Then we go home.", "$12.50"),
    ("The final answer is $\\boxed{7}$. I hope it is correct.", "7"),
    ("The answer is (1, 2).", "(1, 2)"),
    ("The answer is B.", "B"),
])
def test_answer_is_is_anchored_and_answer_shaped(text, want):
    assert extract_answer(text, ["The answer is"]) == want


def test_the_last_statement_wins_and_a_non_answer_after_it_is_skipped():
    text = "The answer is 4.\nWait, let us check what the answer is going to be.\nThe answer is 5."
    assert extract_answer(text, ["The answer is"]) == "5"
    assert extract_answer("The answer is 4. Now see what the answer is going to look like.",
                          ["The answer is"]) == "4"


# Lines containing "answer is" from real SmolLM2-135M-Instruct outputs (transformers policy,
# the smollm2_vllm system prompt, temperature 1, 160 tokens, seeds 100-103, demo problems 0-3),
# verbatim, with what a reader takes as the stated answer (None: no answer stated).
SMOLLM2_LINES = [
    ('So 38 muffins are made by the baker with each tray. Therefore, the answer is 38.', '38'),
    ('* The answer is A Syrian Muslim.', None),  # several words, no math: not answer-shaped (by design)
    ('* The answer is Bethany.', 'Bethany'),
    ('The answer is 23.', '23'),
    ("The answer is There are 14 (Sam's sister's age) -7 = 14 marbles left.", None),
    ('The answer is 6.', '6'),
    ('There are 17 pencils from 7 pencils. Therefore, the answer is 17.', '17'),
    ('So the answer is 17.', '17'),
    ('I got her to add 7 to the setup of trees. 3 plus 7 is six. The answer is 6. 7 pencils from hers is more than 7 pencils. Barely excels is supplementary and it must not be 2, but 2 cannot exist if you did 3 + 7.', '6'),
    ('The answer is 2. 7 pencils from hers is over and considering there were two, it is essential to half to it to the three plus 7 and half to the six. So to simplify the problem we divide 44.', '2'),
    ('The answer is 9.', '9'),
    ('In 7 pencils, there are 7 pencils out of every 4 pencils means that the process of 7 + 1 = 8 adds to the total. The answer is 8 pencils minus 1. So the total we are after is 8 - 1 = 7 cents.', '8 pencils minus 1'),
]


@pytest.mark.parametrize(("line", "want"), SMOLLM2_LINES)
def test_real_smollm2_lines(line, want):
    assert extract_answer(line, ["The answer is"]) == want
