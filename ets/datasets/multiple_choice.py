"""Multiple-choice datasets (GPQA): the choices are shuffled per problem and lettered, the
gold answer is the letter of the correct one (graded by :class:`ets.datasets.grading.LetterGrader`)."""

from __future__ import annotations

import random
import zlib
from collections.abc import Sequence

from ets.datasets import select
from ets.datasets.jsonl import DatasetError, JsonlDataset, JsonlDatasetKeys
from ets.schema import schema
from ets.types import Problem

LETTERS = "ABCDEFGHIJ"


def shuffled_choices(correct: str, incorrect: Sequence[str], seed: int, key: str) -> tuple[list[str], str]:
    """The choices in a random order fixed by ``(seed, key)``, and the correct one's letter.

    GPQA's rows list the correct answer first; every evaluation shuffles them (simple-evals
    draws a permutation per question from a seeded RNG). Here the permutation depends only
    on the seed and the problem's id, so it is the same in every shard and on resume.
    """
    choices = [correct, *incorrect]
    order = list(range(len(choices)))
    random.Random(zlib.crc32(f"{seed}:{key}".encode())).shuffle(order)
    return [choices[i] for i in order], LETTERS[order.index(0)]


class MultipleChoiceDataset(JsonlDataset):
    """Rows with a question, one correct and several incorrect answers (GPQA's layout).

    Args:
        correct_field: Field of the correct answer text.
        incorrect_fields: Fields of the incorrect answers.
        choice_seed: Seed of the per-problem choice order.
        template: The problem text, with ``{question}`` and ``{choices}`` (lines ``A) ...``).
        **kwargs: :class:`~ets.datasets.jsonl.JsonlDataset`'s (path, hub_id, hub_config,
            split, question_field, id_field, limit, offset, shard, shuffle_seed, grader).
    """

    def __init__(self, correct_field: str = "Correct Answer",
                 incorrect_fields: Sequence[str] = ("Incorrect Answer 1", "Incorrect Answer 2",
                                                    "Incorrect Answer 3"),
                 choice_seed: int = 0, template: str = "{question}\n\n{choices}", **kwargs) -> None:
        kwargs.pop("answer_field", None)
        kwargs.pop("answer_format", None)
        super().__init__(answer_field=correct_field, **kwargs)
        if len(incorrect_fields) + 1 > len(LETTERS):
            raise DatasetError(f"dataset.incorrect_fields: at most {len(LETTERS) - 1} allowed")
        self.correct_field, self.incorrect_fields = correct_field, list(incorrect_fields)
        self.choice_seed, self.template = choice_seed, template

    def load(self) -> list[Problem]:
        stem, rows = self._rows()
        problems, self.skipped = [], 0
        for i, row in enumerate(rows):
            question = row.get(self.question_field)
            answers = [row.get(f) for f in (self.correct_field, *self.incorrect_fields)]
            if not question or any(a is None or not str(a).strip() for a in answers):
                self.skipped += 1
                continue
            pid = str(row[self.id_field]) if self.id_field and self.id_field in row else f"{stem}-{i:05d}"
            choices, gold = shuffled_choices(str(answers[0]).strip(),
                                             [str(a).strip() for a in answers[1:]], self.choice_seed, pid)
            lines = "\n".join(f"{LETTERS[k]}) {c}" for k, c in enumerate(choices))
            text = self.template.format(question=str(question).strip(), choices=lines)
            problems.append(Problem(pid, text, gold, {"row": i, "choices": choices}))
        if self.shuffle_seed is not None:
            random.Random(self.shuffle_seed).shuffle(problems)
        try:
            return list(select(problems, self.shard, self.offset, self.limit))
        except ValueError as exc:
            raise DatasetError(str(exc)) from exc


@schema("dataset", "multiple_choice", MultipleChoiceDataset)
class MultipleChoiceDatasetConf(JsonlDatasetKeys):
    """:class:`MultipleChoiceDataset` (GPQA): gold = a letter."""

    correct_field: str
    incorrect_fields: list[str]
    choice_seed: int
    template: str
