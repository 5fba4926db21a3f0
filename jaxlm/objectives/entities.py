"""Entity-level precision, recall and F1 for tagged sequences (NER), as conlleval scores them.

A chunk (entity) is a run of tags that the chunk rules of `conlleval`, the scoring script of
the CoNLL-2000 and CoNLL-2003 shared tasks, join (Tjong Kim Sang & De Meulder 2003,
"Introduction to the CoNLL-2003 Shared Task"). A predicted entity counts as correct only
when its type, first and last token all equal those of a gold entity (an exact match, as
the shared task defines it), so precision = correct / predicted entities, recall =
correct / gold entities and F1 = 2PR / (P + R), each 0 when its denominator is 0. The
figures equal those of the `seqeval` library in its default mode (`f1_score`,
`precision_score`, `recall_score`, micro average, and the rows of `classification_report`);
tests/test_entities.py checks it.

Tags are BIO / IOB2 ("B-PER", "I-PER", "O"); the E- and S- tags of IOBES follow the same
rules. A tag is read as seqeval reads it: its first character is the prefix and the type is
what follows the first "-" after it (or the rest of the tag when there is none; "_" when
that is empty), so a tag without a prefix such as "PER" reads as prefix "P", type "ER",
and "O" as prefix "O", type "_".
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

Chunk = tuple[str, int, int]  # (type, first token, last token + 1)


def _prefix_and_type(tag: str) -> tuple[str, str]:
    """("B", "PER") for "B-PER"; the seqeval reading described in the module docstring."""
    rest = tag[1:]
    _, dash, after = rest.partition("-")
    return tag[:1], (after if dash else rest) or "_"


def _ends(prev: str, prev_type: str, prefix: str, type_: str) -> bool:
    """Whether the chunk holding the previous token ends before this one (conlleval)."""
    return (prev in {"E", "S"} or (prev in {"B", "I"} and prefix in {"B", "S", "O"})
            or (prev not in {"O", "."} and prev_type != type_))


def _starts(prev: str, prev_type: str, prefix: str, type_: str) -> bool:
    """Whether a chunk starts at this token (conlleval): an I- after O or after another
    type starts one, as does every B-."""
    return (prefix in {"B", "S"} or (prev in {"O", "E", "S"} and prefix in {"I", "E"})
            or (prefix not in {"O", "."} and prev_type != type_))


def chunks(tags: Sequence[str]) -> list[Chunk]:
    """The entities of one tag sequence as (type, start, end) token spans, end exclusive.

    The sequence is read as if an "O" came before and after it. Tags outside the scheme
    (e.g. "." followed by "I") can close a chunk that no rule opened; its start is then
    that of the chunk opened last (0 if none), as in seqeval.
    """
    found: list[Chunk] = []
    prev, prev_type, begin = "O", "_", 0
    for i, tag in enumerate([*tags, "O"]):
        prefix, type_ = _prefix_and_type(tag)
        if _ends(prev, prev_type, prefix, type_):
            found.append((prev_type, begin, i))
        if _starts(prev, prev_type, prefix, type_):
            begin = i
        prev, prev_type = prefix, type_
    return found


def _check_lengths(true_sequences: Sequence[Sequence[str]],
                   predicted_sequences: Sequence[Sequence[str]]) -> None:
    """Raises ValueError unless both hold as many sequences, of the same lengths."""
    if len(true_sequences) != len(predicted_sequences):
        raise ValueError(f"{len(true_sequences)} true sequences but {len(predicted_sequences)} "
                         "predicted")
    for i, (t, p) in enumerate(zip(true_sequences, predicted_sequences, strict=True)):
        if len(t) != len(p):
            raise ValueError(f"sequence {i}: {len(t)} true tags but {len(p)} predicted")


def _joined(sequences: Sequence[Sequence[str]]) -> list[str]:
    """The sequences as one, each followed by an "O", as conlleval reads sentences between
    blank lines; a tag outside the scheme can then carry a chunk's start across sentences,
    which is why the sentences are not chunked one by one."""
    return [tag for tags in sequences for tag in [*tags, "O"]]


def _ratio(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else 0.0


def _scores(correct: int, predicted: int, gold: int) -> dict[str, float]:
    precision, recall = _ratio(correct, predicted), _ratio(correct, gold)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def entity_scores(true_sequences: Sequence[Sequence[str]],
                  predicted_sequences: Sequence[Sequence[str]]) -> dict:
    """Micro-averaged entity precision/recall/F1 over all sentences, and the same per type.

    Returns:
      {"precision", "recall", "f1", "per_type": {type: {"precision", "recall", "f1",
      "support"}}}, where support is the number of gold entities of the type; the types
      are those of gold or predicted entities, sorted.

    Raises:
      ValueError: sequences of different counts or lengths.
    """
    _check_lengths(true_sequences, predicted_sequences)
    gold = set(chunks(_joined(true_sequences)))
    predicted = set(chunks(_joined(predicted_sequences)))
    correct = gold & predicted

    def by_type(entities: set[Chunk]) -> Counter:
        return Counter(type_ for type_, _, _ in entities)

    gold_n, predicted_n, correct_n = by_type(gold), by_type(predicted), by_type(correct)
    per_type = {t: {**_scores(correct_n[t], predicted_n[t], gold_n[t]), "support": gold_n[t]}
                for t in sorted(gold_n | predicted_n)}
    return {**_scores(len(correct), len(predicted), len(gold)), "per_type": per_type}


def token_accuracy(true_sequences: Sequence[Sequence[str]],
                   predicted_sequences: Sequence[Sequence[str]]) -> float:
    """Fraction of tokens whose predicted tag equals the gold tag (0 for no tokens).

    Raises:
      ValueError: sequences of different counts or lengths.
    """
    _check_lengths(true_sequences, predicted_sequences)
    pairs = [(t, p) for ts, ps in zip(true_sequences, predicted_sequences, strict=True)
             for t, p in zip(ts, ps, strict=True)]
    return _ratio(sum(t == p for t, p in pairs), len(pairs))


def entity_groups(words: Sequence[str], tags: Sequence[str]) -> list[tuple[str, int, int, str]]:
    """(type, first word, last word + 1, the words joined by spaces) for each entity of one
    tagged sentence, to print predictions as spans."""
    return [(type_, start, end, " ".join(words[start:end])) for type_, start, end in chunks(tags)]
