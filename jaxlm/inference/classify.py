"""Classify texts with a fine-tuned model: labels and probabilities.

    python -m jaxlm.classify --checkpoint runs/classify "a gorgeous , witty film" "dull ."
    python -m jaxlm.classify --checkpoint runs/classify --file reviews.txt

A file holds one text per line ("text_a<TAB>text_b" for sentence-pair models). Texts run
longest first in batches, each padded to its longest text rounded up to a multiple of 8 and
to a power-of-two number of rows: sorted, a batch holds texts of similar lengths, so little
of it is padding, and the model compiles once per (rows, length) pair.
"""

from __future__ import annotations

import functools
import logging

import jax
import numpy as np
from flax import nnx

from jaxlm.data.batching import padded_length
from jaxlm.data.tokenizer import special_ids
from jaxlm.inference.fill_mask import bucket
from jaxlm.models.bert import BertForSequenceClassification

log = logging.getLogger(__name__)


LENGTH_MULTIPLE = 8  # finer than powers of two: a short text pads 1.15x, not 1.35x (polarity)


@functools.cache
def _forward(graphdef):
    @jax.jit
    def forward(state, ids_BT, types_BT, mask_BT):
        logits_BK = nnx.merge(graphdef, state)(ids_BT, types_BT, mask_BT, cls_only=True)
        return jax.nn.softmax(logits_BK, axis=-1)

    return forward


def padded_batch(encodings: list, rows: int, length: int, pad: int) -> tuple[np.ndarray, ...]:
    """(ids_BT, types_BT, mask_BT) of `encodings` padded to [rows, length]."""
    ids_BT = np.full((rows, length), pad, np.int32)
    types_BT = np.zeros((rows, length), np.int32)
    mask_BT = np.zeros((rows, length), np.int32)
    for b, e in enumerate(encodings):
        ids_BT[b, :len(e.ids)], types_BT[b, :len(e.ids)] = e.ids, e.type_ids
        mask_BT[b, :len(e.ids)] = 1
    return ids_BT, types_BT, mask_BT


class Classifier:
    """A classifier ready to take texts: `Classifier(model, tokenizer, labels, T)(texts)`.

    The model is split into its graph and arrays once (a split costs about as much as a
    forward pass of one short text), so reuse the instance across calls.
    """

    def __init__(self, model: BertForSequenceClassification, tokenizer,
                 labels: tuple[str, ...], max_seq_length: int):
        self.forward = _forward(nnx.graphdef(model))
        self.state = nnx.state(model)
        self.tokenizer, self.labels, self.max_seq_length = tokenizer, labels, max_seq_length
        self.pad = special_ids(tokenizer).pad

    def __call__(self, texts: list[str], batch_size: int = 16) -> list[list[tuple[str, float]]]:
        """For each text ("a" or "a\\tb"), every label with its probability, most likely
        first. Texts longer than `max_seq_length` tokens are truncated, with a warning that
        counts them. `batch_size` texts run at once (the module docstring says how they are
        padded).

        Raises:
          ValueError: an empty text.
        """
        for i, text in enumerate(texts):
            if not text.strip():
                raise ValueError(f"text {i + 1} is empty")
        encodings = self.encode(texts)
        longest_first = np.argsort([-len(e.ids) for e in encodings], kind="stable")
        probs_NK = np.zeros((len(texts), len(self.labels)), np.float32)
        for start in range(0, len(texts), batch_size):
            rows = longest_first[start:start + batch_size]
            chunk = [encodings[r] for r in rows]
            T = padded_length(len(chunk[0].ids), LENGTH_MULTIPLE, self.max_seq_length)
            arrays = padded_batch(chunk, bucket(len(rows), batch_size, smallest=1), T, self.pad)
            probs_NK[rows] = np.asarray(self.forward(self.state, *arrays))[:len(rows)]
        return [[(self.labels[k], float(p_K[k])) for k in np.argsort(-p_K)] for p_K in probs_NK]

    def encode(self, texts: list[str]) -> list:
        """The texts' encodings, truncated to `max_seq_length` (with a warning)."""
        T = self.max_seq_length
        self.tokenizer.enable_truncation(T, strategy="longest_first")
        try:
            encodings = self.tokenizer.encode_batch(
                [tuple(t.split("\t", 1)) if "\t" in t else t for t in texts])
        finally:
            self.tokenizer.no_truncation()
        truncated = sum(bool(e.overflowing) for e in encodings)
        if truncated:
            log.warning("%d of %d texts truncated to %d tokens", truncated, len(texts), T)
        return encodings


def classify(model: BertForSequenceClassification, tokenizer, labels: tuple[str, ...],
             texts: list[str], max_seq_length: int) -> list[list[tuple[str, float]]]:
    """`Classifier(model, tokenizer, labels, max_seq_length)(texts)`, for one call."""
    return Classifier(model, tokenizer, labels, max_seq_length)(texts)
