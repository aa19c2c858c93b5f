"""The step vocabulary: semantically distinct "moves", each in several paraphrases.

Every template has one ``{v}`` slot for a small number (``VALUE_MIN`` ..
``VALUE_MIN + N_VALUES - 1``), so the world has ``11 moves x 4 paraphrases x 6
values = 264`` distinct step texts (plus one answer text per problem answer):
few enough that an embedding cache makes embedding free after warm-up.

Measured with all-MiniLM-L6-v2 (cosine distance, texts with the ``"\\n\\n"``
delimiter): same template with a different number 0.05-0.28 (5th-95th pct),
paraphrases of one move 0.06-0.40, different moves >= 0.43 (minimum over all
pairs). Average-linkage clustering cut at 0.05 leaves ~180 clusters, at 0.3 ~19
and at 0.4 recovers exactly the 11 moves: the clustering has real work to do.
"""

from __future__ import annotations

MOVES: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "simplify",
        (
            "Next, we simplify the algebraic expression by combining like terms, which leaves {v} terms.",
            "We combine like terms to simplify the algebraic expression, leaving {v} terms.",
            "Simplifying the algebraic expression by collecting like terms leaves {v} terms.",
            "Collecting like terms simplifies the algebraic expression down to {v} terms.",
        ),
    ),
    (
        "substitute",
        (
            "Now we substitute the known value x = {v} back into the original equation.",
            "Plugging the value x = {v} back into the original equation, we evaluate it.",
            "We substitute x = {v} into the original equation and evaluate.",
            "Substituting the known value x = {v} into the original equation.",
        ),
    ),
    (
        "factor",
        (
            "We factor the polynomial completely, pulling out the linear factor (x - {v}).",
            "Factoring the polynomial, we pull out the linear factor (x - {v}).",
            "The polynomial factors completely, with (x - {v}) as a linear factor.",
            "We factor out the linear factor (x - {v}) from the polynomial.",
        ),
    ),
    (
        "equation",
        (
            "Let n be the unknown quantity; the word problem translates into the equation n + {v} = 2n.",
            "Translating the word problem into an equation for the unknown quantity n gives n + {v} = 2n.",
            "We set up an equation for the unknown quantity n from the word problem: n + {v} = 2n.",
            "Writing the conditions of the word problem as an equation in the unknown n, we get n + {v} = 2n.",
        ),
    ),
    (
        "pythagoras",
        (
            "By the Pythagorean theorem, the hypotenuse of the right triangle has length {v}.",
            "Applying the Pythagorean theorem to the right triangle, the hypotenuse has length {v}.",
            "Using the Pythagorean theorem on the right triangle gives a hypotenuse of length {v}.",
            "The Pythagorean theorem tells us the right triangle's hypotenuse has length {v}.",
        ),
    ),
    (
        "count",
        (
            "We count the arrangements case by case and find {v} cases in total.",
            "Counting the possible arrangements by cases, there are {v} cases in total.",
            "Doing casework on the arrangements, we count {v} cases in total.",
            "Casework on the possible arrangements gives a count of {v} cases in total.",
        ),
    ),
    (
        "series",
        (
            "The arithmetic sequence has common difference {v}, so we add up its terms with the series formula.",
            "With common difference {v}, the arithmetic sequence sums by the series formula.",
            "We add up the arithmetic sequence with common difference {v} using the series formula.",
            "Using the series formula for an arithmetic sequence with common difference {v}, we sum the terms.",
        ),
    ),
    (
        "modular",
        (
            "Working modulo {v}, we reduce each number to its remainder.",
            "We reduce every number modulo {v} and look at the remainders.",
            "Taking remainders modulo {v}, each number reduces to a smaller residue.",
            "Reducing the numbers modulo {v}, we keep only their remainders.",
        ),
    ),
    (
        "probability",
        (
            "The probability equals the number of favorable outcomes divided by the {v} equally likely outcomes.",
            "Dividing the favorable outcomes by all {v} equally likely outcomes gives the probability.",
            "With {v} equally likely outcomes, the probability is favorable outcomes over total outcomes.",
            "We compute the probability as favorable outcomes out of {v} equally likely outcomes.",
        ),
    ),
    (
        "inequality",
        (
            "Solving the inequality, the solution set is the interval of all reals above {v}.",
            "The inequality is satisfied on the interval of all reals greater than {v}.",
            "We solve the inequality: its solution set is the interval of reals above {v}.",
            "Solving the inequality gives the interval of all real numbers above {v}.",
        ),
    ),
    (
        "hesitate",
        (
            "Wait, let me go back and recheck step {v} of my previous work.",
            "Hmm, wait, I should go back and double-check step {v} of my work.",
            "Wait, let me recheck my previous work, going back to step {v}.",
            "Hold on, let me go back and verify step {v} of the earlier work.",
        ),
    ),
)

#: Moves a solution plan is made of (every move but ``hesitate``).
PLAN_MOVES: tuple[int, ...] = tuple(range(len(MOVES) - 1))
#: The move a trajectory stuck in a repetition loop keeps writing.
HESITATE: int = len(MOVES) - 1
#: Paraphrases available per move.
MAX_PARAPHRASES: int = 4
#: Numbers that fill the ``{v}`` slot.
VALUE_MIN: int = 2
N_VALUES: int = 6

#: Final-step lead-ins: no digits and no "answer is", so truncating the answer
#: sentence away never leaves a partial, extractable answer behind.
ANSWER_PREFIXES: tuple[str, ...] = (
    "Putting the pieces together gives the final value.",
    "Combining the previous results, we reach the final value.",
    "This completes the computation.",
)


#: Wording variants: a short lead-in that changes the string but not the move (variant 0
#: has none). Profiles fitted to real traces use several so that exact-duplicate
#: siblings are as rare as in real samples (identical texts are one and the same step).
VARIANT_LEADS: tuple[str, ...] = ("", "So ", "Then ", "Now ", "Next, ", "Here ", "Thus ", "Also, ")
MAX_VARIANTS: int = len(VARIANT_LEADS)


def step_text(move: int, paraphrase: int, value: int, variant: int = 0) -> str:
    """The text of one reasoning step (without the delimiter)."""
    text = MOVES[move][1][paraphrase].format(v=value)
    if variant == 0:
        return text
    return VARIANT_LEADS[variant] + text[0].lower() + text[1:]


def answer_text(prefix: int, answer: str) -> str:
    """The final answer step: ``"<lead-in> The answer is <answer>."``."""
    return f"{ANSWER_PREFIXES[prefix]} The answer is {answer}."


def all_step_texts(n_variants: int = 1) -> list[str]:
    """Every distinct reasoning-step text with ``n_variants`` wordings, in text-id order.

    Text id = ``((move * MAX_PARAPHRASES + paraphrase) * N_VALUES + value) * n_variants
    + variant`` (``value`` counted from ``VALUE_MIN``).
    """
    return [
        step_text(m, p, VALUE_MIN + v, w)
        for m in range(len(MOVES))
        for p in range(MAX_PARAPHRASES)
        for v in range(N_VALUES)
        for w in range(n_variants)
    ]
