"""Extractive question answering (SQuAD): JSON files -> examples -> token windows -> answers.

BERT's SQuAD recipe (Devlin et al. 2019, 4.2): the question and a passage are packed into one
input, and two vectors pick the answer span's first and last token.

    train = read_squad(path, training=True).examples      # [QAExample]
    arrays, windows = make_windows(tokenizer, train, 384, 64, 128)
    answers = best_answers(start_logits_NT, end_logits_NT, windows, dev)   # {id: Answer}

A passage longer than a window is split into windows that start every `doc_stride` tokens,
so an example gives one or more rows (N windows in all). Keys and shapes:

    input_ids        [N, T]  [CLS] question [SEP] context window [SEP] [PAD]...
    token_type_ids   [N, T]  0 for [CLS] question [SEP], 1 for the window and its [SEP]
    attention_mask   [N, T]  1 for real tokens
    start_positions  [N]     the answer's first token, 0 ([CLS]) when it is not all inside
    end_positions    [N]     the answer's last token, 0 likewise
    example_index    [N]     the row's example (an index into the examples given)
    example_weights  [N]     float32, 1.0

The evaluation sets are SQuAD v1.1 dev and the four SQuADShifts sets (Miller et al. 2020,
"The effect of natural distribution shift on question answering models"), the copies that
ship in the PyPI sdist `bigbench==1.0.0`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import tarfile
import tempfile
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from jaxlm.data.corpus import DataError
from jaxlm.data.tokenizer import special_ids

log = logging.getLogger(__name__)

# pip cannot fetch this sdist: pip >= 26 rejects any PyPI distribution whose metadata declares
# a direct URL dependency, and bigbench's setup.py declares `bleurt @ file://...` (no pip flag
# skips that check), so we download the file itself and check its sha256.
SHIFTS_PACKAGE = "bigbench-1.0.0"
SHIFTS_URL = ("https://files.pythonhosted.org/packages/95/f8/c019b3579df548a04cac12342cfcb878e5"
              "0ddf6cfcd7fddba8cfc721c157/bigbench-1.0.0.tar.gz")
SHIFTS_SHA256 = "1bb398a5512c6d798cdebe0dfa0ac03f67f6033fa6b39c6ef71df978c7cbc5c2"
SHIFTS_DIR = "bigbench/benchmark_tasks/squad_shifts/"
# name -> file in SHIFTS_DIR; the *_removed.json beside each list the answers BIG-bench took
# out and are not SQuAD JSON.
SHIFTS_FILES = {
    "squad_dev": "squaddev_v1.1.json",
    "new_wiki": "new_wiki_v1.0.json",
    "nyt": "nyt_v1.0.json",
    "reddit": "reddit_v1.0.json",
    "amazon": "amazon_reviews_v1.0.json",
}
_SHOWN = 5  # ids quoted in a warning
_JSON_TYPES = {str: "a string", int: "an integer", list: "a list"}


@dataclasses.dataclass(frozen=True)
class QAExample:
    id: str
    question: str
    context: str
    answers: tuple[tuple[str, int], ...]  # (text, start character in context)
    title: str  # the article's


@dataclasses.dataclass(frozen=True)
class SquadFile:
    """A file's examples and what reading it had to repair."""

    examples: list[QAExample]
    moved: int  # answers whose text was not at answer_start but found nearby
    dropped: int  # answers whose text is not in the context at all
    dropped_questions: int  # training questions left without an answer, hence left out


@dataclasses.dataclass(frozen=True)
class Windows:
    """Where each row's tokens came from, to map predicted positions back to the context."""

    example_index_N: np.ndarray  # int32: the row's example, as in arrays["example_index"]
    char_start_NT: np.ndarray  # int32: a context token's first character, -1 for other tokens
    char_end_NT: np.ndarray  # int32: one past its last character, -1 for other tokens
    no_answer: int  # rows of answered examples whose first answer is not all inside


@dataclasses.dataclass(frozen=True)
class Answer:
    text: str  # the original context between start_char and end_char
    score: float  # start logit + end logit; -inf when no span was valid
    start_char: int
    end_char: int  # one past the last character


def _download(url: str, sha256: str, target: Path, hint: str) -> Path:
    """Streams `url` into `target` and checks its sha256.

    Raises:
      DataError: a network error or a different file, with `hint`.
    """
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(target, "wb") as f:
            while chunk := response.read(1 << 20):
                digest.update(chunk)
                f.write(chunk)
    except OSError as e:
        raise DataError(f"could not download {url}: {e}\n{hint}") from None
    if digest.hexdigest() != sha256:
        raise DataError(f"{url}: sha256 is {digest.hexdigest()}, expected {sha256}\n{hint}")
    return target


def fetch_squad_shifts(cache_dir: str | Path) -> dict[str, Path]:
    """SQuAD v1.1 dev and the four SQuADShifts test sets, downloaded once.

    The 358 MB sdist is streamed into a temporary file, the five JSON files are taken out
    into `<cache_dir>/bigbench-1.0.0/squad_shifts/`, and the archive is deleted. Measured
    with `read_squad` (questions, articles, answers moved to where their text is; none is
    dropped):

        squad_dev  squaddev_v1.1.json        10,565  48    15   (the official file: 10,570)
        new_wiki   new_wiki_v1.0.json         7,936  48     8
        nyt        nyt_v1.0.json             10,056  797   10
        reddit     reddit_v1.0.json           9,767  1     22
        amazon     amazon_reviews_v1.0.json   9,877  413  947   (most given 4-16 characters late)

    Returns:
      {name: path} for the names above.

    Raises:
      DataError: the download failed, or the archive lacks one of the files.
    """
    root = Path(cache_dir).expanduser() / SHIFTS_PACKAGE / "squad_shifts"
    paths = {name: root / file for name, file in SHIFTS_FILES.items()}
    if all(p.is_file() for p in paths.values()):
        return paths
    root.mkdir(parents=True, exist_ok=True)
    hint = (f"Evaluate on local files instead, or place {', '.join(SHIFTS_FILES.values())} "
            f"in {root}.")
    with tempfile.TemporaryDirectory(dir=root.parent) as tmp:
        archive = _download(SHIFTS_URL, SHIFTS_SHA256, Path(tmp) / f"{SHIFTS_PACKAGE}.tar.gz",
                            hint)
        with tarfile.open(archive) as tar:
            members = {m.name.split("/", 1)[-1]: m for m in tar if m.isfile()}
            for path in paths.values():
                member = members.get(SHIFTS_DIR + path.name)
                if member is None:
                    raise DataError(f"{archive.name} holds no {SHIFTS_DIR}{path.name}")
                partial = path.with_suffix(".partial")
                partial.write_bytes(tar.extractfile(member).read())
                partial.replace(path)
    return paths


def _get(record: Any, key: str, kind: type, where: str) -> Any:
    """`record[key]`, checked to be a `kind` (a JSON string, number, list or object)."""
    if not isinstance(record, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(record).__name__}")
    if key not in record:
        raise DataError(f"{where}: no key {key!r}")
    value = record[key]
    if not isinstance(value, kind) or isinstance(value, bool):  # JSON true is no number
        raise DataError(f"{where}: {key!r} should be {_JSON_TYPES[kind]}, got "
                        f"{json.dumps(value)[:40]}")
    return value


def _align(context: str, text: str, start: int) -> int | None:
    """Where `text` occurs in `context`: at `start`, else the occurrence nearest to it."""
    if not text:
        return None
    if start >= 0 and context.startswith(text, start):
        return start
    found, i = None, context.find(text)
    while i != -1:
        if found is None or abs(i - start) < abs(found - start):
            found = i
        i = context.find(text, i + 1)
    return found


def _first_ids(ids: list[str]) -> str:
    """The first few distinct ids, for a warning."""
    shown = list(dict.fromkeys(ids))
    return ", ".join(shown[:_SHOWN]) + (", ..." if len(shown) > _SHOWN else "") or "-"


def read_squad(path: str | Path, training: bool = False) -> SquadFile:
    """The questions of a SQuAD v1.1 JSON file, in file order.

    An answer whose text is not at its `answer_start` (SQuAD has a few) moves to the
    occurrence nearest that offset, or is dropped when its text is not in the context; one
    warning per file counts both. In a training file a question left without answers is
    dropped too, because it has no span to learn; elsewhere it stays (with `answers=()`).

    Args:
      path: a JSON file {"data": [{"title", "paragraphs": [{"context", "qas": [{"id",
        "question", "answers": [{"text", "answer_start"}]}]}]}]}; other keys are ignored.
      training: drop questions left without an answer.

    Raises:
      DataError: naming the file and the article or question id: a missing file, bad JSON
        (with line and column), a missing key or a wrong type, a repeated question id, or a
        file without questions.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"data file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8-sig")  # -sig: drop a byte-order mark
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 ({e})") from None
    if not text.strip():
        raise DataError(f"{path}: the file is empty")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{e.lineno}:{e.colno}: not valid JSON ({e.msg})") from None
    examples: list[QAExample] = []
    seen: set[str] = set()
    moved, dropped, dropped_questions = [], [], []
    for a, article in enumerate(_get(data, "data", list, str(path)), 1):
        title = _get(article, "title", str, f"{path}: article {a}")
        for p, paragraph in enumerate(_get(article, "paragraphs", list, f"{path}: article "
                                           f"{title!r}"), 1):
            where = f"{path}: article {title!r}, paragraph {p}"
            context = _get(paragraph, "context", str, where)
            for q, qa in enumerate(_get(paragraph, "qas", list, where), 1):
                qid = _get(qa, "id", str, f"{where}, question {q}")
                where_q = f"{path}: question {qid!r} (article {title!r})"
                if qid in seen:
                    raise DataError(f"{where_q}: the id repeats an earlier question's")
                seen.add(qid)
                question = _get(qa, "question", str, where_q)
                answers = []
                for k, answer in enumerate(_get(qa, "answers", list, where_q), 1):
                    answer_text = _get(answer, "text", str, f"{where_q}, answer {k}")
                    given = _get(answer, "answer_start", int, f"{where_q}, answer {k}")
                    start = _align(context, answer_text, given)
                    if start is None:
                        dropped.append(qid)
                        continue
                    if start != given:
                        moved.append(qid)
                    answers.append((answer_text, start))
                if training and not answers:
                    dropped_questions.append(qid)
                    continue
                examples.append(QAExample(qid, question, context, tuple(answers), title))
    if moved or dropped:
        log.warning("%s: %d answers were not at their answer_start: %d moved to the nearest "
                    "occurrence (questions %s), %d dropped as not in the context (questions "
                    "%s); %d training questions left without an answer were dropped", path,
                    len(moved) + len(dropped), len(moved), _first_ids(moved), len(dropped),
                    _first_ids(dropped), len(dropped_questions))
    if not examples:
        raise DataError(f"{path}: no questions" + (" with an answer" if training else ""))
    return SquadFile(examples, len(moved), len(dropped), len(dropped_questions))


def _token_span(offsets: list[tuple[int, int]],
                answer: tuple[str, int]) -> tuple[int, int] | None:
    """The first and last token that overlap the answer's characters (None: no token does,
    e.g. an answer of characters the normalizer removes)."""
    text, start = answer
    inside = [i for i, (a, b) in enumerate(offsets) if a < start + len(text) and b > start]
    return (inside[0], inside[-1]) if inside else None


def _window_starts(length: int, room: int, doc_stride: int) -> range:
    """The first context token of each window: every `doc_stride` tokens until one reaches the
    end (a window holds `room` tokens)."""
    return range(0, max(length - room, 0) + doc_stride, doc_stride)


def make_windows(tokenizer: Tokenizer, examples: Sequence[QAExample], max_seq_length: int,
                 max_query_length: int, doc_stride: int) -> tuple[dict[str, np.ndarray],
                                                                  Windows]:
    """Token windows of the examples, labelled with their first answer (BERT 4.2).

    Question and context are tokenized apart, as the jaxlm template would lay them out
    ([CLS] q [SEP] c [SEP], types 0 then 1): the context is cut into windows and the question
    truncated before they are joined. A window holds `max_seq_length - len(question) - 3`
    context tokens and windows start every `doc_stride` (at most that many) tokens, so every
    context token is in some window; a row whose window does not hold the whole answer is
    labelled 0 ([CLS]) and counted in `no_answer`.

    Returns:
      (arrays as in the module docstring, their Windows).

    Raises:
      DataError: settings that leave no room for the context or leave gaps between windows.
    """
    room = max_seq_length - max_query_length - 3  # the least room: [CLS] q [SEP] ... [SEP]
    settings = (f"max_seq_length={max_seq_length}, max_query_length={max_query_length}, "
                f"doc_stride={doc_stride}")
    if room < 1:
        raise DataError(f"{settings}: no room for the context; [CLS] question [SEP] ... [SEP] "
                        "needs max_query_length + 3 < max_seq_length")
    if not 1 <= doc_stride <= room:
        raise DataError(f"{settings}: doc_stride must be between 1 and max_seq_length - "
                        f"max_query_length - 3 = {room}, or windows would skip context tokens")
    ids = special_ids(tokenizer)
    questions = tokenizer.encode_batch([e.question for e in examples], add_special_tokens=False)
    unique = list(dict.fromkeys(e.context for e in examples))  # questions share passages
    contexts = dict(zip(unique, tokenizer.encode_batch(unique, add_special_tokens=False),
                        strict=True))
    rows = []  # (example index, question ids, first and last + 1 context token)
    spans = []  # the first answer's first and last context token, per example
    for i, (example, question) in enumerate(zip(examples, questions, strict=True)):
        q, context = question.ids[:max_query_length], contexts[example.context]
        length, room_i = len(context.ids), max_seq_length - len(q) - 3
        rows += [(i, q, first, min(first + room_i, length))
                 for first in _window_starts(length, room_i, doc_stride)]
        spans.append(_token_span(context.offsets, example.answers[0]) if example.answers
                     else None)
    N, T = len(rows), max_seq_length
    arrays = {"input_ids": np.full((N, T), ids.pad, np.int32),
              "token_type_ids": np.zeros((N, T), np.int32),
              "attention_mask": np.zeros((N, T), np.int32),
              "start_positions": np.zeros((N,), np.int32),
              "end_positions": np.zeros((N,), np.int32),
              "example_index": np.array([r[0] for r in rows], np.int32),
              "example_weights": np.ones((N,), np.float32)}
    char_start_NT = np.full((N, T), -1, np.int32)
    char_end_NT = np.full((N, T), -1, np.int32)
    no_answer = 0
    for n, (i, q, first, last) in enumerate(rows):
        context = contexts[examples[i].context]
        offset = len(q) + 2  # the window's first token follows [CLS] q [SEP]
        end = offset + last - first
        arrays["input_ids"][n, :end + 1] = [ids.cls, *q, ids.sep, *context.ids[first:last],
                                            ids.sep]
        arrays["token_type_ids"][n, offset:end + 1] = 1
        arrays["attention_mask"][n, :end + 1] = 1
        char_start_NT[n, offset:end], char_end_NT[n, offset:end] = np.array(
            context.offsets[first:last], np.int32).reshape(-1, 2).T
        if spans[i] and first <= spans[i][0] and spans[i][1] < last:
            arrays["start_positions"][n] = offset + spans[i][0] - first
            arrays["end_positions"][n] = offset + spans[i][1] - first
        elif examples[i].answers:
            no_answer += 1
    log.info("%d examples -> %d windows; %d windows of answered examples hold no whole answer",
             len(examples), N, no_answer)
    return arrays, Windows(arrays["example_index"], char_start_NT, char_end_NT, no_answer)


def best_answers(start_logits_NT: np.ndarray, end_logits_NT: np.ndarray, windows: Windows,
                 examples: Sequence[QAExample], n_best: int = 20,
                 max_answer_length: int = 30) -> dict[str, Answer]:
    """Each example's highest-scoring span over its windows (BERT 4.2: score S.T_i + E.T_j).

    In each window the `n_best` highest start and end logits among the context tokens are
    paired; a pair counts when start <= end and it spans at most `max_answer_length` tokens.
    Only context tokens compete, so a window whose top logits sit on the question still
    offers its best span. The text is cut from the original context, so case and accents
    survive a lowercasing tokenizer.

    Args:
      start_logits_NT, end_logits_NT: [N, T] logits for the rows of `make_windows`.
      windows: what `make_windows` returned with those rows.
      examples: the examples given to `make_windows`.

    Returns:
      {example id: Answer}; the empty answer ("", -inf, 0, 0) where no span was valid.

    Raises:
      ValueError: logits whose shape is not that of the windows.
    """
    start_NT = np.asarray(start_logits_NT, np.float32)
    end_NT = np.asarray(end_logits_NT, np.float32)
    if not start_NT.shape == end_NT.shape == windows.char_start_NT.shape:
        raise ValueError(f"start logits {start_NT.shape} and end logits {end_NT.shape} do not "
                         f"match the windows {windows.char_start_NT.shape}")
    best = {e.id: Answer("", float("-inf"), 0, 0) for e in examples}
    for n, i in enumerate(windows.example_index_N):
        context = np.flatnonzero(windows.char_start_NT[n] >= 0)
        if not context.size:
            continue
        starts = context[np.argsort(-start_NT[n, context], kind="stable")[:n_best]]
        ends = context[np.argsort(-end_NT[n, context], kind="stable")[:n_best]]
        length = ends[None, :] - starts[:, None] + 1  # [starts, ends]
        scores = np.where((length >= 1) & (length <= max_answer_length),
                          start_NT[n, starts][:, None] + end_NT[n, ends][None, :], -np.inf)
        s, e = np.unravel_index(np.argmax(scores), scores.shape)
        example = examples[i]
        if scores[s, e] > best[example.id].score:
            a, b = windows.char_start_NT[n, starts[s]], windows.char_end_NT[n, ends[e]]
            best[example.id] = Answer(example.context[a:b], float(scores[s, e]), int(a), int(b))
    return best
