"""Tag the words of texts with a fine-tuned tagger (NER, part-of-speech).

Texts are split into words as BERT's basic tokenizer splits them (whitespace, then each
punctuation mark on its own), each word tagged at its first sub-word; BIO tags are then
grouped into entity spans.
"""

from __future__ import annotations

import functools
import logging

import jax
import numpy as np
from flax import nnx

from jaxlm.data.tagging import TaggedSentence, encode, word_predictions
from jaxlm.inference.fill_mask import bucket
from jaxlm.models.bert import BertForTokenClassification
from jaxlm.objectives.entities import entity_groups

log = logging.getLogger(__name__)


@functools.cache
def _forward(graphdef):
    @jax.jit
    def forward(state, ids_BT, types_BT, mask_BT):
        return nnx.merge(graphdef, state)(ids_BT, types_BT, mask_BT).argmax(-1)

    return forward


def split_words(tokenizer, text: str) -> list[tuple[str, tuple[int, int]]]:
    """The words of `text` with their character offsets, by the tokenizer's pre-tokenizer."""
    return tokenizer.pre_tokenizer.pre_tokenize_str(text)


def tag(model: BertForTokenClassification, tokenizer, tags: tuple[str, ...], texts: list[str],
        max_seq_length: int, batch_size: int = 64) -> list[dict]:
    """For each text: {"words": [(word, tag, start, end)], "entities": [(type, text, start,
    end)]}, offsets in characters of the text. Words past `max_seq_length` tokens are
    tagged as outside any entity, with a warning that counts the texts.

    Raises:
      ValueError: an empty text.
    """
    split = []
    for i, text in enumerate(texts):
        split.append(split_words(tokenizer, text))
        if not split[-1]:
            raise ValueError(f"text {i + 1} is empty")
    sentences = [TaggedSentence(tuple(w for w, _ in words), (tags[0],) * len(words), i + 1)
                 for i, words in enumerate(split)]
    arrays, truncated = encode(tokenizer, sentences, tags, max_seq_length)
    if truncated:
        log.warning("%d of %d texts cut to %d tokens; their last words are tagged as outside "
                    "any entity", truncated, len(texts), max_seq_length)
    graphdef, state = nnx.split(model)
    predicted_NT = np.zeros_like(arrays["input_ids"])
    for start in range(0, len(texts), batch_size):
        rows = slice(start, start + batch_size)
        T = bucket(int(arrays["attention_mask"][rows].sum(1).max()), max_seq_length)
        predicted_NT[rows, :T] = np.asarray(_forward(graphdef)(
            state, arrays["input_ids"][rows, :T], arrays["token_type_ids"][rows, :T],
            arrays["attention_mask"][rows, :T]))
    results = []
    for text, words, sentence, word_tags in zip(
            texts, split, sentences,
            word_predictions(predicted_NT, arrays["word_index"], sentences, tags), strict=True):
        spans = [(kind, words[first][1][0], words[end - 1][1][1])
                 for kind, first, end, _ in entity_groups(sentence.words, word_tags)]
        results.append({
            "words": [(w, t, a, b) for (w, (a, b)), t in zip(words, word_tags, strict=True)],
            "entities": [(kind, text[a:b], a, b) for kind, a, b in spans]})
    return results
