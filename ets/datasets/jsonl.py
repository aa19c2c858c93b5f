"""Datasets from JSONL files (MATH-500, GSM8K, any file with a field mapping)."""

from __future__ import annotations

import importlib.resources
import json
import random
from pathlib import Path

from ets.answers import extract_answer
from ets.datasets import select
from ets.types import Problem


class DatasetError(RuntimeError):
    """A dataset that cannot be loaded; the message says what to do."""


def resolve_path(path: str) -> Path:
    """``pkg://<package>/<file>`` → the file inside an installed package (works from any
    cwd); anything else is a normal path (``~`` expanded, relative to the cwd)."""
    if path.startswith("pkg://"):
        package, _, rest = path[len("pkg://"):].partition("/")
        return Path(str(importlib.resources.files(package))) / rest
    return Path(path).expanduser()


class JsonlDataset:
    """Problems from a local JSONL file (or, where reachable, the Hugging Face hub).

    Args:
        path: Local ``.jsonl`` file. Relative paths resolve against the launch directory;
            ``pkg://ets/data/demo.jsonl`` names a file shipped inside a package.
        hub_id: Hub dataset used when ``path`` is not given (needs the ``datasets``
            package and network access).
        hub_config: Hub configuration (subset) name, e.g. ``main`` for ``openai/gsm8k``.
        split: Hub split.
        question_field, answer_field, id_field: Field mapping.
        answer_format: ``plain`` (the field is the answer) or ``gsm8k`` (the number after
            ``####`` in a worked solution).
        limit, offset: Slice of the problems (after shuffling and sharding).
        shard: ``"i/n"`` keeps every n-th problem starting at i (for SLURM arrays).
        shuffle_seed: Shuffle the problems with this seed before sharding and slicing
            (``None``: file order), so ``limit`` takes a random subset that is the same
            on every machine and for every shard.
        grader: Answer-equivalence component for this dataset.
    """

    def __init__(
        self, path: str | None = None, hub_id: str | None = None, split: str = "test",
        question_field: str = "problem", answer_field: str = "answer",
        id_field: str | None = None, answer_format: str = "plain",
        limit: int | None = None, offset: int = 0, shard: str | None = None, grader=None,
        shuffle_seed: int | None = None, hub_config: str | None = None,
    ) -> None:
        self.path, self.hub_id, self.hub_config, self.split = path, hub_id, hub_config, split
        self.question_field, self.answer_field, self.id_field = question_field, answer_field, id_field
        self.answer_format, self.limit, self.offset, self.shard = answer_format, limit, offset, shard
        self.grader, self.shuffle_seed = grader, shuffle_seed
        self.skipped = 0

    def _rows(self) -> tuple[str, list[dict]]:
        if self.path:
            path = resolve_path(self.path)
            if not path.exists():
                raise DatasetError(f"dataset.path={self.path} does not exist (cwd: {Path.cwd()})")
            rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
            return path.stem, rows
        if not self.hub_id:
            raise DatasetError("The dataset has neither dataset.path nor dataset.hub_id: set one.")
        name = self.hub_id + (f" ({self.hub_config})" if self.hub_config else "")
        try:
            import datasets
            rows = list(datasets.load_dataset(self.hub_id, self.hub_config, split=self.split))
        except Exception as exc:
            raise DatasetError(
                f"Could not load {name!r}, split {self.split!r}, from the hub "
                f"({type(exc).__name__}: {exc}). Offline? Pass a local file: "
                "dataset.path=../shared/data/<file>.jsonl"
            ) from exc
        return str(self.hub_id).split("/")[-1], rows

    def _answer(self, raw: object) -> str | None:
        if isinstance(raw, list | tuple):  # e.g. OlympiadBench's final_answer: ["$x$", ...]
            raw = ", ".join(str(a).strip() for a in raw if str(a).strip()) or None
        text = str(raw) if raw is not None else ""
        if self.answer_format == "gsm8k":
            return extract_answer(text, ["####"])
        return text.strip() or None

    def load(self) -> list[Problem]:
        stem, rows = self._rows()
        problems, self.skipped = [], 0
        for i, row in enumerate(rows):
            question, gold = row.get(self.question_field), self._answer(row.get(self.answer_field))
            if not question or gold is None:
                self.skipped += 1
                continue
            pid = str(row[self.id_field]) if self.id_field and self.id_field in row else f"{stem}-{i:05d}"
            problems.append(Problem(pid, str(question), gold, {"row": i}))
        if self.shuffle_seed is not None:
            random.Random(self.shuffle_seed).shuffle(problems)
        try:
            return list(select(problems, self.shard, self.offset, self.limit))
        except ValueError as exc:
            raise DatasetError(str(exc)) from exc
