"""BERT pretraining instances: sentence pairs for NSP and masked tokens for MLM.

This follows google-research/bert `create_pretraining_data.py` (`create_instances_from_document`,
`truncate_seq_pair`, `create_masked_lm_predictions`) step by step, on token ids instead of
strings and with numpy's Generator in place of Python's `random`. The one deliberate change
is where the randomness comes from: every (dupe pass, document) pair gets its own generator
seeded from (seed, pass, document), so the result does not depend on how the documents are
split among worker processes.

Shapes: T = max_seq_length, P = max_predictions_per_seq, N = number of instances.

Label convention (BERT 3.1, Task #2, and Hugging Face's `next_sentence_label`):
    next_sentence_label = 0  segment B is the actual continuation of A ("IsNext")
    next_sentence_label = 1  segment B comes from a random other document ("NotNext")
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from jaxlm.data.tokenizer import SpecialIds

KEYS = ("input_ids", "token_type_ids", "attention_mask", "masked_positions", "masked_ids",
        "masked_weights", "next_sentence_label")


@dataclasses.dataclass(frozen=True)
class MaskingSpec:
    """What `mask_tokens` needs to know about the vocabulary and the masking recipe."""

    masked_lm_prob: float  # share of tokens to predict (BERT: 0.15)
    max_predictions: int  # P, the cap on predictions per instance
    vocab_size: int  # V; random replacements are drawn from [0, V)
    ids: SpecialIds  # [CLS]/[SEP] are never masked, [MASK] replaces 80%
    is_continuation: np.ndarray | None = None  # Bool[V] "##" pieces; None = no whole-word masking


class Documents:
    """Tokenized documents stored flat: tokens, sentence boundaries, document boundaries.

    Document d is sentences `doc_offsets[d]:doc_offsets[d + 1]`; sentence s is tokens
    `sentence_offsets[s]:sentence_offsets[s + 1]`. The arrays may be memory-mapped, so a
    worker process opens a corpus of any size without copying it.
    """

    def __init__(self, tokens: np.ndarray, sentence_offsets: np.ndarray, doc_offsets: np.ndarray,
                 doc_ids: Sequence[int] | None = None):
        self.tokens = tokens
        self.sentence_offsets = sentence_offsets
        self.doc_offsets = doc_offsets
        # The documents of one split, as indices into the whole corpus.
        self.doc_ids = list(range(len(doc_offsets) - 1)) if doc_ids is None else list(doc_ids)

    def __len__(self) -> int:
        return len(self.doc_ids)

    def __getitem__(self, d: int) -> list[list[int]]:
        """Document d of this split as a list of sentences of token ids."""
        doc = self.doc_ids[d]
        first, last = self.doc_offsets[doc], self.doc_offsets[doc + 1]
        bounds = self.sentence_offsets[first:last + 1].tolist()
        flat = self.tokens[bounds[0]:bounds[-1]].tolist()
        base = bounds[0]
        return [flat[a - base:b - base] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]

    def num_sentences(self, d: int) -> int:
        doc = self.doc_ids[d]
        return int(self.doc_offsets[doc + 1] - self.doc_offsets[doc])

    def sentence(self, d: int, j: int) -> list[int]:
        """Sentence j of document d, without converting the rest of the document."""
        s = self.doc_offsets[self.doc_ids[d]] + j
        return self.tokens[self.sentence_offsets[s]:self.sentence_offsets[s + 1]].tolist()

    def num_tokens(self, d: int) -> int:
        doc = self.doc_ids[d]
        return int(self.sentence_offsets[self.doc_offsets[doc + 1]]
                   - self.sentence_offsets[self.doc_offsets[doc]])


def truncate_seq_pair(tokens_a: list[int], tokens_b: list[int], max_num_tokens: int,
                      rng: np.random.Generator) -> None:
    """Trims the longer segment, one token at a time from its front or back at random.

    Removing from both ends (instead of always the back) adds noise so that the model does
    not learn that segments always end at a sentence boundary (google-research/bert).
    Modifies both lists in place.
    """
    while len(tokens_a) + len(tokens_b) > max_num_tokens:
        trunc = tokens_a if len(tokens_a) > len(tokens_b) else tokens_b
        if rng.random() < 0.5:
            del trunc[0]
        else:
            trunc.pop()


def create_pairs(documents: Documents, d: int, max_seq_length: int, short_seq_prob: float,
                 rng: np.random.Generator) -> list[tuple[list[int], list[int], bool]]:
    """Segment pairs (A, B, is_random_next) from document d (BERT 3.1, Task #2; A.2).

    Sentences are packed into a chunk until it reaches the target length; A is the first
    1..k-1 sentences of the chunk (a random split), B is either the rest of the chunk or,
    with probability 1/2 (always when the chunk is one sentence), text from a random other
    document, in which case the chunk's unused sentences go back to be used next. With
    probability `short_seq_prob` the whole document uses a random shorter target length, to
    close the gap between pretraining and short fine-tuning inputs.
    """
    document = documents[d]
    max_num_tokens = max_seq_length - 3  # room for [CLS] A [SEP] B [SEP]
    target_seq_length = max_num_tokens
    if rng.random() < short_seq_prob:
        target_seq_length = int(rng.integers(2, max_num_tokens, endpoint=True))
    pairs = []
    chunk: list[list[int]] = []
    chunk_length = 0
    i = 0
    while i < len(document):
        chunk.append(document[i])
        chunk_length += len(document[i])
        if i == len(document) - 1 or chunk_length >= target_seq_length:
            a_end = 1
            if len(chunk) >= 2:
                a_end = int(rng.integers(1, len(chunk) - 1, endpoint=True))
            tokens_a = [t for sentence in chunk[:a_end] for t in sentence]
            tokens_b: list[int] = []
            if len(chunk) == 1 or rng.random() < 0.5:
                is_random_next = True
                target_b_length = target_seq_length - len(tokens_a)
                # Ten tries at a different document; a one-document corpus falls back to itself.
                for _ in range(10):
                    other = int(rng.integers(0, len(documents)))
                    if other != d:
                        break
                other_length = documents.num_sentences(other)
                for j in range(int(rng.integers(0, other_length)), other_length):
                    tokens_b.extend(documents.sentence(other, j))
                    if len(tokens_b) >= target_b_length:
                        break
                i -= len(chunk) - a_end  # the unused sentences are read again
            else:
                is_random_next = False
                tokens_b = [t for sentence in chunk[a_end:] for t in sentence]
            truncate_seq_pair(tokens_a, tokens_b, max_num_tokens, rng)
            pairs.append((tokens_a, tokens_b, is_random_next))
            chunk, chunk_length = [], 0
        i += 1
    return pairs


def mask_tokens(tokens: Sequence[int], spec: MaskingSpec, rng: np.random.Generator
                ) -> tuple[list[int], list[int], list[int]]:
    """Chooses the masked-LM targets of one instance (BERT 3.1, Task #1; A.1).

    `round(len(tokens) * masked_lm_prob)` positions (at least 1, at most P), never [CLS] or
    [SEP], are chosen in random order. Each chosen token becomes [MASK] 80% of the time, a
    random vocabulary id 10% and stays unchanged 10%. With whole-word masking the candidates
    are whole words (a piece and the "##" pieces after it) and a word is taken only if it
    fits under the cap. As in google-research/bert, the 80/10/10 draw is per piece, and a
    "##" piece at the start of segment B joins the last word of A (the specials between
    them are skipped, not word boundaries).

    Args:
      tokens: Int[n], the unpadded instance, [CLS] A [SEP] B [SEP].
      spec: the masking recipe and vocabulary facts.
      rng: the generator to draw from.

    Returns:
      (output tokens Int[n], sorted masked positions, the original ids at those positions).
    """
    ids = spec.ids
    candidates: list[list[int]] = []
    for i, token in enumerate(tokens):
        if token == ids.cls or token == ids.sep:
            continue
        if spec.is_continuation is not None and candidates and spec.is_continuation[token]:
            candidates[-1].append(i)
        else:
            candidates.append([i])
    order = rng.permutation(len(candidates))
    num_to_predict = min(spec.max_predictions,
                         max(1, int(round(len(tokens) * spec.masked_lm_prob))))
    output = list(tokens)
    positions: list[int] = []
    for c in order:
        if len(positions) >= num_to_predict:
            break
        word = candidates[c]
        if len(positions) + len(word) > num_to_predict:
            continue
        for i in word:
            if rng.random() < 0.8:
                output[i] = ids.mask
            elif rng.random() < 0.5:
                output[i] = tokens[i]
            else:
                output[i] = int(rng.integers(0, spec.vocab_size))
            positions.append(i)
    positions.sort()
    return output, positions, [int(tokens[i]) for i in positions]


def pack(tokens_a: Sequence[int], tokens_b: Sequence[int], ids: SpecialIds,
         max_seq_length: int) -> tuple[list[int], list[int]]:
    """[CLS] A [SEP] B [SEP] and its token types (0 for [CLS] A [SEP], 1 for B [SEP])."""
    tokens = [ids.cls, *tokens_a, ids.sep, *tokens_b, ids.sep]
    types = [0] * (len(tokens_a) + 2) + [1] * (len(tokens_b) + 1)
    assert len(tokens) <= max_seq_length, (len(tokens), max_seq_length)
    return tokens, types


def empty_arrays(n: int, max_seq_length: int, max_predictions: int, ids_dtype, pad_id: int,
                 masked: bool = True) -> dict:
    """Padding-only instance arrays: [N, T] per token key, [N, P] per prediction key, [N] labels.

    `input_ids` is filled with `pad_id` (a given vocabulary need not put [PAD] at 0), every
    other key with zeros. Without `masked` the prediction keys are left out (the loader draws
    them per epoch).
    """
    T, P = max_seq_length, max_predictions
    arrays = {
        "input_ids": np.full((n, T), pad_id, ids_dtype),
        "token_type_ids": np.zeros((n, T), np.uint8),
        "attention_mask": np.zeros((n, T), np.uint8),
        "next_sentence_label": np.zeros((n,), np.uint8),
    }
    if masked:
        arrays["masked_positions"] = np.zeros((n, P), np.int32)
        arrays["masked_ids"] = np.zeros((n, P), ids_dtype)
        arrays["masked_weights"] = np.zeros((n, P), np.float32)
    return arrays


def write_masks(arrays: dict, row: int, tokens: Sequence[int], positions: Sequence[int],
                labels: Sequence[int]) -> None:
    """Writes one instance's masked tokens and its padded [P] prediction arrays into row."""
    n, k = len(tokens), len(positions)
    arrays["input_ids"][row, :n] = tokens
    arrays["masked_positions"][row, :k] = positions
    arrays["masked_ids"][row, :k] = labels
    arrays["masked_weights"][row, :k] = 1.0


def create_instances(documents: Documents, d: int, rng: np.random.Generator, *,
                     max_seq_length: int, short_seq_prob: float, spec: MaskingSpec,
                     masked: bool = True, ids_dtype=np.int32) -> dict:
    """All instances of document d for one dupe pass, as padded arrays.

    Args:
      documents: the split's tokenized documents.
      d: the document index within the split.
      rng: this (pass, document)'s generator; pairs and masks both draw from it.
      max_seq_length: T.
      short_seq_prob: chance of a shorter target length for this document.
      spec: the masking recipe and special ids.
      masked: False leaves the instances unmasked and without prediction keys; the loader
        masks them each epoch (`dynamic_masking`).
      ids_dtype: storage dtype of token ids (uint16 when V <= 65536 halves the disk size).

    Returns:
      A dict of the `KEYS` (the token keys only, without `masked`) with leading dim N.
    """
    pairs = create_pairs(documents, d, max_seq_length, short_seq_prob, rng)
    arrays = empty_arrays(len(pairs), max_seq_length, spec.max_predictions, ids_dtype,
                          spec.ids.pad, masked)
    for row, (tokens_a, tokens_b, is_random_next) in enumerate(pairs):
        tokens, types = pack(tokens_a, tokens_b, spec.ids, max_seq_length)
        n = len(tokens)
        arrays["input_ids"][row, :n] = tokens
        arrays["token_type_ids"][row, :n] = types
        arrays["attention_mask"][row, :n] = 1
        arrays["next_sentence_label"][row] = int(is_random_next)
        if masked:
            write_masks(arrays, row, *mask_tokens(tokens, spec, rng))
    return arrays
