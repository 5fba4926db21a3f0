"""BERT's WordPiece tokenizer (BERT 3, "Input/Output Representations"), via `tokenizers`.

We either train one on the corpus or load an existing `tokenizer.json` (a Hugging Face fast
tokenizer) or `vocab.txt` (one WordPiece per line, as google-research/bert ships). Either
way the pipeline needs the five special tokens below and the WordPiece continuation prefix
("##"), which whole-word masking uses to find the pieces of a word.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
from tokenizers import (  # the pieces of a BERT tokenizer
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
    trainers,
)

from jaxlm.data.corpus import DataError

PAD, UNK, CLS, SEP, MASK = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"
SPECIAL_TOKENS = (PAD, UNK, CLS, SEP, MASK)  # a trained vocabulary gives them ids 0..4


@dataclasses.dataclass(frozen=True)
class SpecialIds:
    """Ids of the special tokens in one vocabulary."""

    pad: int
    unk: int
    cls: int
    sep: int
    mask: int


def _bert_pipeline(tokenizer: Tokenizer, lowercase: bool) -> Tokenizer:
    """Adds BERT's normalizer, pre-tokenizer and decoder (`_add_template` adds [CLS]/[SEP])."""
    tokenizer.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=lowercase, lowercase=lowercase
    )
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece(prefix="##")
    return tokenizer


def _add_template(tokenizer: Tokenizer, ids: SpecialIds) -> Tokenizer:
    """`encode(a, b)` gives [CLS] a [SEP] b [SEP], as a Hugging Face BERT tokenizer does."""
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{CLS} $A {SEP}",
        pair=f"{CLS} $A {SEP} $B:1 {SEP}:1",
        special_tokens=[(CLS, ids.cls), (SEP, ids.sep)],
    )
    return tokenizer


def _train(sentences: Iterable[str], vocab_size: int, lowercase: bool,
           specials: list[str]) -> Tokenizer:
    """One run of the `tokenizers` WordPiece trainer; `specials` take the first ids in order."""
    tokenizer = _bert_pipeline(Tokenizer(models.WordPiece(unk_token=UNK)), lowercase)
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        continuing_subword_prefix="##",
        show_progress=False,
    )
    tokenizer.train_from_iterator(sentences, trainer=trainer)
    return tokenizer


def train_tokenizer(sentences: Callable[[], Iterable[str]], vocab_size: int,
                    lowercase: bool) -> Tokenizer:
    """Trains a WordPiece vocabulary of at most `vocab_size` entries, the same on every run.

    The `tokenizers` trainer numbers the "##" piece of each character in hash-map order,
    and equal pair counts are then merged in id order, so the vocabulary changes from run
    to run (huggingface/tokenizers#1794). We therefore read the corpus twice: a first run
    without merges finds the "##" pieces, and the real run receives them, sorted, right
    after the special tokens. The result is rebuilt as a plain WordPiece vocabulary, like a
    loaded `vocab.txt`, with only the five BERT special tokens marked special.

    A small corpus may yield fewer entries than asked for; the model's vocabulary size is
    whatever `get_vocab_size()` reports.

    Args:
      sentences: returns a fresh iterator over the training sentences on each call.
      vocab_size: the largest vocabulary, special tokens included.
      lowercase: lowercase and strip accents (uncased BERT).
    """
    alphabet = _train(sentences(), 0, lowercase, list(SPECIAL_TOKENS))
    pieces = sorted(t for t in alphabet.get_vocab(with_added_tokens=False) if t.startswith("##"))
    trained = _train(sentences(), vocab_size, lowercase, [*SPECIAL_TOKENS, *pieces])
    vocab = trained.get_vocab(with_added_tokens=False)
    tokenizer = _bert_pipeline(Tokenizer(models.WordPiece(vocab, unk_token=UNK)), lowercase)
    tokenizer.add_special_tokens(list(SPECIAL_TOKENS))
    return _add_template(tokenizer, special_ids(tokenizer))


def load_tokenizer(path: str | Path, lowercase: bool = True) -> Tokenizer:
    """Loads a `tokenizer.json` or a WordPiece `vocab.txt`.

    Truncation and padding stored in a `tokenizer.json` are switched off: instances are
    packed and padded by the pipeline itself.

    Args:
      path: a `tokenizer.json`, or any other file read as `vocab.txt` (one token per line).
      lowercase: only for a `vocab.txt`: lowercase and strip accents (uncased BERT). A
        `tokenizer.json` brings its own normalizer.

    Raises:
      DataError: a missing or unreadable file, or a vocabulary without the special tokens.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"tokenizer file not found: {path}")
    if path.suffix == ".json":
        try:
            tokenizer = Tokenizer.from_file(str(path))
        except Exception as e:  # tokenizers raises a bare Exception on malformed JSON
            raise DataError(f"{path}: not a tokenizers JSON file ({e})") from None
        tokenizer.no_truncation()
        tokenizer.no_padding()
        special_ids(tokenizer, source=path)
    else:
        tokenizer = Tokenizer(models.WordPiece(_read_vocab(path), unk_token=UNK))
        _add_template(_bert_pipeline(tokenizer, lowercase), special_ids(tokenizer, source=path))
    return tokenizer


def _read_vocab(path: Path) -> dict[str, int]:
    """Token -> id from a `vocab.txt`, where a token's id is its line number (0-based).

    Lines are split at "\\n" only, as Hugging Face's `load_vocab` does, because a vocabulary
    may hold tokens such as U+2028 that `str.splitlines` would treat as line breaks.

    Raises:
      DataError: bytes that are not UTF-8, or a blank or repeated line: either would give
        a token an id other than the one a model trained with this file expects.
    """
    try:
        lines = path.read_bytes().decode("utf-8").split("\n")
    except UnicodeDecodeError:
        raise DataError(f"{path}: a vocab.txt must be UTF-8 text, one token per line") from None
    if lines[-1] == "":
        lines.pop()
    vocab: dict[str, int] = {}
    for i, line in enumerate(lines):
        token = line.removesuffix("\r")
        if not token.strip():
            raise DataError(f"{path}:{i + 1}: blank line; a vocab.txt holds one token per "
                            "line and a token's id is its line number")
        if token in vocab:
            raise DataError(f"{path}:{i + 1}: {token!r} repeats line {vocab[token] + 1}; a "
                            "token's id is its line number, so each token must appear once")
        vocab[token] = i
    return vocab


def special_ids(tokenizer: Tokenizer, source: str | Path = "tokenizer") -> SpecialIds:
    """The ids of [PAD] [UNK] [CLS] [SEP] [MASK].

    Raises:
      DataError: naming every special token the vocabulary lacks.
    """
    ids = {token: tokenizer.token_to_id(token) for token in SPECIAL_TOKENS}
    missing = [token for token, i in ids.items() if i is None]
    if missing:
        raise DataError(
            f"{source}: the vocabulary lacks the special token(s) {' '.join(missing)}; BERT "
            f"pretraining needs all of {' '.join(SPECIAL_TOKENS)}"
        )
    return SpecialIds(pad=ids[PAD], unk=ids[UNK], cls=ids[CLS], sep=ids[SEP], mask=ids[MASK])


def continuation_mask(tokenizer: Tokenizer) -> np.ndarray:
    """Bool[V]: True for WordPiece pieces that continue a word (those starting with "##")."""
    model = json.loads(tokenizer.to_str()).get("model", {})
    prefix = model.get("continuing_subword_prefix") or "##"
    size = tokenizer.get_vocab_size()
    tokens = [tokenizer.id_to_token(i) or "" for i in range(size)]
    return np.array([t.startswith(prefix) and t != prefix for t in tokens], dtype=bool)


def encode_padded(tokenizer: Tokenizer, inputs: list, max_seq_length: int, **encode_options
                  ) -> tuple[list, dict[str, np.ndarray], int]:
    """Encodes `inputs` (texts, text pairs, or with `is_pretokenized=True` word lists), each
    cut to `max_seq_length` tokens (the longest text of a pair first), and pads them into
    arrays: input_ids (padded with [PAD]), token_type_ids and attention_mask [N, T] int32
    and example_weights [N] float32 ones. The tokenizer's truncation is left as it was.

    Returns:
      (the encodings, the arrays, how many inputs were cut).
    """
    pad = special_ids(tokenizer).pad
    tokenizer.enable_truncation(max_seq_length, strategy="longest_first")
    try:
        encodings = tokenizer.encode_batch(inputs, **encode_options)
    finally:
        tokenizer.no_truncation()
    N, T = len(inputs), max_seq_length
    arrays = {"input_ids": np.full((N, T), pad, np.int32),
              "token_type_ids": np.zeros((N, T), np.int32),
              "attention_mask": np.zeros((N, T), np.int32),
              "example_weights": np.ones((N,), np.float32)}
    for i, enc in enumerate(encodings):
        n = len(enc.ids)
        arrays["input_ids"][i, :n] = enc.ids
        arrays["token_type_ids"][i, :n] = enc.type_ids
        arrays["attention_mask"][i, :n] = 1
    return encodings, arrays, sum(bool(enc.overflowing) for enc in encodings)
