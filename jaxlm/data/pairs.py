"""Plain seq2seq data: a source and a target per line, tab-separated, for training the
encoder-decoder on your own pairs (a translator, a summarizer, ...).

    to be or not to be<TAB>be to not or be to

`data.format=pairs` reads `data.train_files` this way. Held-out pairs are chosen by a hash
of the line (`data.eval_fraction`). The source is cut to `data.max_seq_length` tokens and
padded; the target, followed by [SEP], to `data.max_target_length`. The decoder reads
[CLS] + target[:-1]. `python -m jaxlm.make_pairs reverse OUT.tsv` writes the synthetic
word-reversal task the README reports on.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from jaxlm.data.corpus import DataError
from jaxlm.data.tokenizer import SpecialIds


def read_pairs(files: Sequence[Path], errors: str = "strict") -> list[tuple[str, str]]:
    """Every non-blank line of `files` as (source, target).

    Raises:
      DataError: a line without exactly one tab, or with an empty side, naming file:line.
    """
    pairs = []
    for path in files:
        with open(path, encoding="utf-8", errors=errors) as f:
            for number, line in enumerate(f, 1):
                line = line.rstrip("\n")
                if not line.strip():
                    continue
                fields = line.split("\t")
                if len(fields) != 2 or not fields[0].strip() or not fields[1].strip():
                    raise DataError(f"{path}:{number}: expected 'source<TAB>target', got "
                                    f"{line[:80]!r}")
                pairs.append((fields[0].strip(), fields[1].strip()))
    return pairs


def is_held_out(pair: tuple[str, str], eval_fraction: float) -> bool:
    """A stable choice per pair: its hash's position in [0, 1) below `eval_fraction`."""
    digest = hashlib.sha256("\t".join(pair).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < eval_fraction


def encode(tokenizer, pairs: Sequence[tuple[str, str]], source_length: int,
           target_length: int, ids: SpecialIds) -> dict[str, np.ndarray]:
    """The encoder-decoder arrays (see `span_corruption.KEYS`) of tokenized, cut and
    padded pairs."""
    n = len(pairs)
    arrays = {
        "source_ids": np.full((n, source_length), ids.pad, np.int32),
        "source_mask": np.zeros((n, source_length), np.int32),
        "decoder_input_ids": np.full((n, target_length), ids.pad, np.int32),
        "target_ids": np.full((n, target_length), ids.pad, np.int32),
        "target_weights": np.zeros((n, target_length), np.float32),
    }
    sources = tokenizer.encode_batch([s for s, _ in pairs], add_special_tokens=False)
    targets = tokenizer.encode_batch([t for _, t in pairs], add_special_tokens=False)
    for i, (source, target) in enumerate(zip(sources, targets, strict=True)):
        s = source.ids[:source_length]
        t = (target.ids + [ids.sep])[:target_length]
        arrays["source_ids"][i, :len(s)] = s
        arrays["source_mask"][i, :len(s)] = 1
        arrays["target_ids"][i, :len(t)] = t
        arrays["decoder_input_ids"][i, :len(t)] = [ids.cls, *t[:-1]]
        arrays["target_weights"][i, :len(t)] = 1.0
    return arrays


def reversal_pairs(words: Sequence[str], n: int, seed: int,
                   lengths: tuple[int, int] = (3, 8)) -> list[tuple[str, str]]:
    """n pairs (random words, the same words in reverse order): a synthetic task whose
    answer is fully determined by the source, so exact match can reach 1."""
    rng = np.random.default_rng(seed)
    pairs = []
    for _ in range(n):
        chosen = rng.choice(words, rng.integers(lengths[0], lengths[1] + 1)).tolist()
        pairs.append((" ".join(chosen), " ".join(reversed(chosen))))
    return pairs
