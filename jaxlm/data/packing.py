"""Causal-LM instances: the documents of a split joined into one token stream and cut into
windows, with no padding anywhere (GPT-2 trains on such contiguous chunks).

    stream = doc_0 [SEP] doc_1 [SEP] ... doc_n [SEP]
    window i: input_ids = stream[i*T : (i+1)*T], target_ids = stream[i*T+1 : (i+1)*T+1]

[SEP] plays GPT-2's end-of-text token: it tells the model a new document starts, and
attention is allowed across it. The last, partial window is dropped.
"""

from __future__ import annotations

import numpy as np

from jaxlm.data.instances import Documents

KEYS = ("input_ids", "target_ids")


def token_stream(documents: Documents, end_of_text: int, dtype) -> np.ndarray:
    """All tokens of the split's documents in order, each document followed by
    `end_of_text`."""
    parts = []
    for d in range(len(documents)):
        doc = documents.doc_ids[d]
        first = documents.sentence_offsets[documents.doc_offsets[doc]]
        last = documents.sentence_offsets[documents.doc_offsets[doc + 1]]
        parts.append(np.asarray(documents.tokens[first:last], dtype))
        parts.append(np.asarray([end_of_text], dtype))
    return np.concatenate(parts) if parts else np.zeros((0,), dtype)


def pack(stream: np.ndarray, length: int) -> dict[str, np.ndarray]:
    """Non-overlapping windows of `length` next-token pairs: {input_ids, target_ids} [N, T]."""
    n = max((len(stream) - 1) // length, 0)
    return {"input_ids": stream[:n * length].reshape(n, length),
            "target_ids": stream[1:n * length + 1].reshape(n, length)}
