"""Classify texts with a fine-tuned model: labels and probabilities.

    python -m jaxlm.classify --checkpoint runs/classify "a gorgeous , witty film" "dull ."
    python -m jaxlm.classify --checkpoint runs/classify --file reviews.txt

A file holds one text per line ("text_a<TAB>text_b" for sentence-pair models). Texts are
batched and padded to a bucket of lengths (16, 32, 64, ...), so that many inputs compile
the model once per bucket.
"""

from __future__ import annotations

import functools
import logging

import jax
import numpy as np
from flax import nnx

from jaxlm.data.tokenizer import special_ids
from jaxlm.inference.fill_mask import bucket
from jaxlm.models.bert import BertForSequenceClassification

log = logging.getLogger(__name__)


@functools.cache
def _forward(graphdef):
    @jax.jit
    def forward(state, ids_BT, types_BT, mask_BT):
        return jax.nn.softmax(nnx.merge(graphdef, state)(ids_BT, types_BT, mask_BT), axis=-1)

    return forward


def classify(model: BertForSequenceClassification, tokenizer, labels: tuple[str, ...],
             texts: list[str], max_seq_length: int,
             batch_size: int = 64) -> list[list[tuple[str, float]]]:
    """For each text ("a" or "a\\tb"), every label with its probability, most likely first.

    Texts longer than `max_seq_length` tokens are truncated, with a warning that counts them.

    Raises:
      ValueError: an empty text.
    """
    for i, text in enumerate(texts):
        if not text.strip():
            raise ValueError(f"text {i + 1} is empty")
    pad = special_ids(tokenizer).pad
    tokenizer.enable_truncation(max_seq_length, strategy="longest_first")
    try:
        encodings = tokenizer.encode_batch([tuple(t.split("\t", 1)) if "\t" in t else t
                                            for t in texts])
    finally:
        tokenizer.no_truncation()
    truncated = sum(bool(e.overflowing) for e in encodings)
    if truncated:
        log.warning("%d of %d texts truncated to %d tokens", truncated, len(texts),
                    max_seq_length)
    graphdef, state = nnx.split(model)
    results = []
    for start in range(0, len(encodings), batch_size):
        chunk = encodings[start:start + batch_size]
        T = bucket(max(len(e.ids) for e in chunk), max_seq_length)
        ids_BT = np.full((len(chunk), T), pad, np.int32)
        types_BT = np.zeros((len(chunk), T), np.int32)
        mask_BT = np.zeros((len(chunk), T), np.int32)
        for b, e in enumerate(chunk):
            ids_BT[b, :len(e.ids)], types_BT[b, :len(e.ids)] = e.ids, e.type_ids
            mask_BT[b, :len(e.ids)] = 1
        probs_BK = np.asarray(_forward(graphdef)(state, ids_BT, types_BT, mask_BT))
        for p_K in probs_BK:
            results.append([(labels[k], float(p_K[k])) for k in np.argsort(-p_K)])
    return results
