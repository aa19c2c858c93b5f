"""Datasets from JSONL files (MATH-500, GSM8K, any file with a field mapping)."""

from __future__ import annotations

import importlib.resources
import json
import logging
import random
from pathlib import Path

from ets.core.answers import extract_answer
from ets.datasets import DatasetConf, DatasetError, check_selection, select
from ets.schema import schema
from ets.types import Problem

log = logging.getLogger("ets.datasets")
_SHOW_ROWS = 5  # row numbers named in a message about dropped rows

__all__ = ["DatasetError", "JsonlDataset", "read_jsonl", "resolve_path"]


def read_jsonl(path: Path) -> list[dict]:
    """The rows of a JSONL file (blank lines skipped).

    Raises:
        DatasetError: naming the file and the 1-based line of a row that is not UTF-8,
            not JSON, or not a JSON object.
    """
    rows = []
    for n, raw in enumerate(Path(path).read_bytes().splitlines(), start=1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DatasetError(f"{path}, line {n}: not UTF-8 ({exc.reason} at byte {exc.start})") from exc
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{path}, line {n}: not valid JSON ({exc.msg}, column {exc.colno})") from exc
        if not isinstance(row, dict):
            raise DatasetError(f"{path}, line {n}: expected a JSON object, got {type(row).__name__}")
        rows.append(row)
    return rows


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
            return path.stem, read_jsonl(path)
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
        """The selected problems.

        Rows without an answer or with an empty (or whitespace-only) question are dropped
        and logged (count and first row numbers; ``row`` is the 0-based index among the
        file's non-blank rows, as in the generated ids).

        Raises:
            DatasetError: two rows with the same id (both named), an unreadable row, or
                an empty selection.
        """
        stem, rows = self._rows()
        source = self.path or self.hub_id or stem
        problems, dropped, seen = [], [], {}
        for i, row in enumerate(rows):
            question, gold = row.get(self.question_field), self._answer(row.get(self.answer_field))
            if question is None or not str(question).strip() or gold is None:
                dropped.append(i)
                continue
            pid = str(row[self.id_field]) if self.id_field and self.id_field in row else f"{stem}-{i:05d}"
            if pid in seen:
                raise DatasetError(
                    f"{source}: rows {seen[pid]} and {i} share the id {pid!r} (dataset.id_field="
                    f"{self.id_field}); ids must be unique: results are stored and resumed by id")
            seen[pid] = i
            problems.append(Problem(pid, str(question), gold, {"row": i}))
        self.skipped = len(dropped)
        if dropped:
            head = ", ".join(map(str, dropped[:_SHOW_ROWS])) + (", ..." if len(dropped) > _SHOW_ROWS else "")
            log.warning("%s: dropped %d of %d rows with no answer (dataset.answer_field=%s) or an empty "
                        "question (dataset.question_field=%s); rows %s", source, len(dropped), len(rows),
                        self.answer_field, self.question_field, head)
        if self.shuffle_seed is not None:
            random.Random(self.shuffle_seed).shuffle(problems)
        try:
            selected = list(select(problems, self.shard, self.offset, self.limit))
        except ValueError as exc:
            raise DatasetError(str(exc)) from exc
        check_selection(len(selected), len(problems), str(source), self.shard, self.offset, self.limit)
        return selected


class JsonlDatasetKeys(DatasetConf):
    """Keys of :class:`JsonlDataset` (extended by ``multiple_choice``)."""

    path: str | None
    hub_id: str | None
    hub_config: str | None
    split: str
    question_field: str
    answer_field: str
    id_field: str | None
    answer_format: str
    shuffle_seed: int | None


@schema("dataset", "jsonl", JsonlDataset)
class JsonlDatasetConf(JsonlDatasetKeys):
    pass
