"""Data: text corpora -> tokenizer -> instances on disk -> Grain batches, for every model kind.

    from jaxlm import data
    prepared = data.prepare(cfg.data, seed=cfg.train.seed, recipe="bert")   # cached
    loader = data.make_loader(prepared, "train", cfg.train.batch_size, seed=cfg.train.seed,
                              shuffle=True, num_epochs=None)
    for batch in loader: ...   # per-process dicts of numpy arrays

The recipe says what a corpus becomes ("bert": sentence pairs with masks; "causal_lm":
next-token windows; "span_corruption": T5 encoder-decoder pairs; `data.format=pairs`: a
file's own source/target pairs); `jaxlm.objectives.registry` names each model kind's.
BERT batch keys and shapes (B = global batch / process count, T = max_seq_length,
P = max_predictions_per_seq), all int32 except `masked_weights`:

    input_ids            [B, T]  [CLS] A [SEP] B [SEP] [PAD]..., masked tokens replaced
    token_type_ids       [B, T]  0 for [CLS] A [SEP], 1 for B [SEP], 0 for padding
    attention_mask       [B, T]  1 for real tokens, 0 for padding
    masked_positions     [B, P]  positions of the MLM targets, 0 for unused slots
    masked_ids           [B, P]  original token ids at those positions
    masked_weights       [B, P]  float32, 1.0 for real targets, 0.0 for unused slots
    next_sentence_label  [B]     0 = B follows A in the text, 1 = B is random (as in BERT / HF)

Modules: `corpus` (files, Shakespeare), `tokenizer` (WordPiece), `instances` (the
google-research/bert algorithm), `packing` and `span_corruption` (LM windows, T5 pairs),
`pairs` (source/target files), `preparation` (`prepare`, cache, manifest), `builders` (each
recipe's arrays, over worker processes), `beam_pipeline` (the same instances on Apache Beam,
into ArrayRecord shards: `records`), `loader` (Grain over either); for fine-tuning `classification`
(labelled text), `tagging` (tagged words), `squad` (questions on passages) and `batching`
(their batches). Command line: `python -m jaxlm.prepare --config configs/bert_tiny.yaml`.
"""

from jaxlm.data.corpus import DataError
from jaxlm.data.instances import KEYS
from jaxlm.data.loader import loader_throughput, make_loader
from jaxlm.data.preparation import Prepared, prepare
from jaxlm.data.tokenizer import SpecialIds, load_tokenizer

__all__ = ["KEYS", "DataError", "Prepared", "SpecialIds", "load_tokenizer", "loader_throughput",
           "make_loader", "prepare"]
