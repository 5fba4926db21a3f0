"""How each recipe's instances are built and written, for `preparation.prepare`.

A text corpus is tokenized once into flat arrays (`tokenize_corpus`), split into train and
held-out documents, then turned into instances by its recipe: BERT sentence pairs with
masks (`write_bert_instances`, over worker processes), next-token windows or T5 span
corruption of them (`write_windows`). `data.format=pairs` files hold their own
(source, target) pairs (`build_source_target`).
"""

from __future__ import annotations

import array
import dataclasses
import functools
import logging
import multiprocessing
import os
import struct
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from jaxlm import storage
from jaxlm.config import DataConfig
from jaxlm.data import corpus as corpus_lib
from jaxlm.data import packing, span_corruption
from jaxlm.data import pairs as pairs_lib
from jaxlm.data.corpus import DataError
from jaxlm.data.instances import Documents, MaskingSpec, create_instances
from jaxlm.data.tokenizer import (
    SpecialIds,
    continuation_mask,
    load_tokenizer,
    special_ids,
    train_tokenizer,
)

log = logging.getLogger(__name__)

EVAL_SEED = 0  # eval instances do not depend on the run's seed
_SHARD_TOKENS = 1 << 18  # tokens per work item: small enough to balance workers


class NpyWriter:
    """Appends rows to a `.npy` file whose length is only known at the end.

    The header is written with a fixed size first and rewritten with the final shape by
    `close`, so arrays larger than memory stream to disk in one pass.
    """

    _HEADER_BYTES = 128

    def __init__(self, path: Path, dtype, row_shape: tuple[int, ...]):
        self.path, self.dtype, self.row_shape, self.rows = path, np.dtype(dtype), row_shape, 0
        self._file = open(path, "wb")
        self._file.write(b"\0" * self._HEADER_BYTES)

    def append(self, rows: np.ndarray) -> None:
        if rows.shape[1:] != self.row_shape or rows.dtype != self.dtype:
            raise ValueError(f"{self.path}: got {rows.dtype}{rows.shape}, expected "
                             f"{self.dtype}[N, {self.row_shape}]")
        self._file.write(np.ascontiguousarray(rows).tobytes())
        self.rows += len(rows)

    def close(self) -> None:
        descr = np.lib.format.dtype_to_descr(self.dtype)
        header = repr({"descr": descr, "fortran_order": False,
                       "shape": (self.rows, *self.row_shape)})
        header = header.ljust(self._HEADER_BYTES - 11) + "\n"
        self._file.seek(0)
        self._file.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode())
        self._file.close()


@dataclasses.dataclass(frozen=True)
class CorpusPlan:
    """What must be known about the whole corpus before its documents are tokenized."""

    held_out: set[int]  # corpus indices of the eval documents
    tokenizer: object  # tokenizers.Tokenizer
    ids: SpecialIds
    is_continuation: np.ndarray  # Bool[V]
    ids_dtype: type  # uint16 when the vocabulary fits, else int32


def plan_corpus(cfg: DataConfig, files: list[Path], out: Path) -> CorpusPlan:
    """Held-out documents by text hash (a streaming pass over the corpus), then the given or
    trained tokenizer (saved as out/tokenizer.json, with out/is_continuation.npy); training
    reads the training lines again, or once to draw `tokenizer_sample_lines` of them."""
    hashes = [corpus_lib.document_hash(d) for d in _documents(files, cfg)]
    if not hashes:
        raise DataError(f"the corpus is empty: no non-blank line in {names(files)}")
    held_out = corpus_lib.eval_documents(hashes, cfg.eval_fraction)
    log.info("%d documents in %s, %d held out", len(hashes), names(files), len(held_out))

    def train_lines() -> Iterator[str]:
        return (s for i, d in enumerate(_documents(files, cfg)) if i not in held_out for s in d)

    sample = train_lines
    if cfg.tokenizer_sample_lines and not cfg.tokenizer:
        chosen = corpus_lib.line_sample(train_lines(), cfg.tokenizer_sample_lines)
        sample = functools.partial(iter, chosen)
    tokenizer, ids = tokenizer_for(cfg, sample, out)
    is_continuation = continuation_mask(tokenizer)
    np.save(out / "is_continuation.npy", is_continuation)
    ids_dtype = np.uint16 if tokenizer.get_vocab_size() <= 1 << 16 else np.int32
    return CorpusPlan(held_out, tokenizer, ids, is_continuation, ids_dtype)


def build_corpus(cfg: DataConfig, seed: int, files: list[Path], settings: dict, out: Path) -> dict:
    """Writes tokenizer, tokenized corpus and the instances of `settings["recipe"]` into
    `out`; returns the manifest."""
    start = time.perf_counter()
    plan = plan_corpus(cfg, files, out)
    tokenizer, ids, held_out, ids_dtype = plan.tokenizer, plan.ids, plan.held_out, plan.ids_dtype
    vocab_size = tokenizer.get_vocab_size()
    kept = tokenize_corpus(tokenizer, _documents(files, cfg), out / "corpus", ids_dtype)
    splits = {"train": [d for d in kept if d not in held_out],
              "eval": [d for d in kept if d in held_out]}
    if not splits["train"]:
        raise DataError(f"no training document has any token in {names(files)}")
    spec = masking_spec(cfg, plan)
    tokenized = time.perf_counter()

    workers = 1
    if settings["recipe"] in WINDOW_RECIPES:
        job = WindowJob(settings["recipe"], seed, cfg.max_seq_length, vocab_size, ids)
        counts = write_windows(out, splits, job, ids_dtype)
        if job.recipe == "span_corruption":
            vocab_size += span_corruption.NUM_SENTINELS
    else:
        workers = cfg.num_workers or os.cpu_count() or 1
        counts = write_bert_instances(cfg, seed, out, splits, spec, ids_dtype, workers)
    seconds = time.perf_counter() - tokenized
    total = counts["train"]["num_instances"] + counts["eval"]["num_instances"]
    log.info("%d instances in %.1fs (%.0f instances/s, %d workers)", total, seconds,
             total / seconds, workers)
    return {
        **settings,
        "tokenizer": "tokenizer.json",
        "vocab_size": vocab_size,
        "special_ids": dataclasses.asdict(ids),
        "splits": counts,
        "timing": {"total_s": round(time.perf_counter() - start, 2),
                   "instances_s": round(seconds, 2),
                   "instances_per_s": round(total / seconds, 1), "workers": workers},
    }


def masking_spec(cfg: DataConfig, plan: CorpusPlan) -> MaskingSpec:
    return MaskingSpec(cfg.masked_lm_prob, cfg.max_predictions_per_seq,
                       plan.tokenizer.get_vocab_size(), plan.ids,
                       plan.is_continuation if cfg.whole_word_masking else None)


def tokenizer_for(cfg: DataConfig, train_text, out: Path):
    """The given or trained tokenizer, saved as out/tokenizer.json, and its special ids."""
    if cfg.tokenizer:
        tokenizer = load_tokenizer(storage.local_copy(cfg.tokenizer), lowercase=cfg.lowercase)
    else:
        tokenizer = train_tokenizer(train_text, cfg.vocab_size, cfg.lowercase)
    tokenizer.save(str(out / "tokenizer.json"))
    return tokenizer, special_ids(tokenizer, source=cfg.tokenizer or "the trained tokenizer")


def build_source_target(cfg: DataConfig, files: list[Path], settings: dict, out: Path) -> dict:
    """`data.format=pairs`: tab-separated (source, target) lines into encoder-decoder
    arrays; the tokenizer learns from both sides of the training pairs."""
    start = time.perf_counter()
    all_pairs = pairs_lib.read_pairs(files, cfg.encoding_errors)
    if not all_pairs:
        raise DataError(f"no pair in {names(files)}: expected 'source<TAB>target' lines")
    splits = {"train": [], "eval": []}
    for pair in all_pairs:
        splits["eval" if pairs_lib.is_held_out(pair, cfg.eval_fraction) else "train"].append(pair)
    if not splits["train"]:
        raise DataError(f"every pair of {names(files)} was held out; lower data.eval_fraction")
    tokenizer, ids = tokenizer_for(
        cfg, lambda: (side for pair in splits["train"] for side in pair), out)
    counts = {}
    for split, pairs in splits.items():
        (out / split).mkdir()
        if pairs:
            arrays = pairs_lib.encode(tokenizer, pairs, cfg.max_seq_length,
                                      cfg.max_target_length, ids)
            for key, rows in arrays.items():
                np.save(out / split / f"{key}.npy", rows)
        counts[split] = {"num_instances": len(pairs), "num_documents": len(pairs)}
    np.save(out / "is_continuation.npy", continuation_mask(tokenizer))
    return {**settings, "tokenizer": "tokenizer.json", "vocab_size": tokenizer.get_vocab_size(),
            "special_ids": dataclasses.asdict(ids), "splits": counts,
            "timing": {"total_s": round(time.perf_counter() - start, 2)}}


WINDOW_RECIPES = ("causal_lm", "span_corruption")


@dataclasses.dataclass(frozen=True)
class WindowJob:
    """What turning a split's packed windows (see `packing`) into stored arrays takes: the
    windows themselves for a causal LM, T5 span corruption of them for the encoder-decoder
    ([CLS] starts the decoder, [SEP] ends each target)."""

    recipe: str  # one of WINDOW_RECIPES
    seed: int
    length: int  # T
    vocab_size: int  # the tokenizer's; span corruption's sentinels come after it
    ids: SpecialIds

    def instances(self, split: str, windows: dict, first: int = 0) -> dict:
        """The stored arrays of windows `first`, `first + 1`, ... of `split`."""
        if self.recipe == "causal_lm":
            return windows
        return span_corruption.build(windows["input_ids"], self.vocab_size, self.ids.cls,
                                     self.ids.sep, self.seed if split == "train" else EVAL_SEED,
                                     first)

    def work_items(self, num_tokens: Sequence[int]) -> list[tuple[int, int, int]]:
        """(0, first, last) runs of about `_SHARD_TOKENS` tokens of windows, for a split
        whose documents have `num_tokens` tokens (each followed by [SEP] in the stream)."""
        windows = max((sum(num_tokens) + len(num_tokens) - 1) // self.length, 0)
        step = max(_SHARD_TOKENS // self.length, 1)
        return [(0, a, min(a + step, windows)) for a in range(0, windows, step)]


def write_windows(out: Path, splits: dict, job: WindowJob, ids_dtype) -> dict:
    """Each split's documents packed into windows of `job.length` next-token pairs ([SEP]
    between documents) and stored as `job.instances` makes them."""
    counts = {}
    for split, doc_ids in splits.items():
        (out / split).mkdir()
        stream = packing.token_stream(open_documents(out / "corpus", doc_ids), job.ids.sep,
                                      ids_dtype)
        windows = packing.pack(stream, job.length)
        for key, rows in job.instances(split, windows).items():
            np.save(out / split / f"{key}.npy", rows)
        counts[split] = {"num_instances": len(windows["input_ids"]),
                         "num_documents": len(doc_ids), "num_tokens": len(stream)}
    return counts


def write_bert_instances(cfg: DataConfig, seed: int, out: Path, splits: dict, spec: MaskingSpec,
                 ids_dtype, workers: int) -> dict:
    """BERT sentence-pair instances of each split over `workers` processes."""
    counts = {}
    for split, doc_ids in splits.items():
        (out / split).mkdir()
        job = bert_job(cfg, seed, split, str(out / "corpus"), doc_ids, spec, ids_dtype)
        counts[split] = _write_instances(job, workers, out / split)
        counts[split]["num_documents"] = len(doc_ids)
    return counts


def bert_job(cfg: DataConfig, seed: int, split: str, corpus: str, doc_ids: list[int],
             spec: MaskingSpec, ids_dtype) -> Job:
    """What building a split's BERT instances takes: eval is one masked pass with a fixed
    seed; train is `dupe_factor` passes, unmasked under dynamic masking."""
    return Job(corpus=corpus, doc_ids=doc_ids, spec=spec, max_seq_length=cfg.max_seq_length,
               short_seq_prob=cfg.short_seq_prob,
               masked=split == "eval" or not cfg.dynamic_masking,
               seed=seed if split == "train" else EVAL_SEED, ids_dtype=ids_dtype,
               dupes=cfg.dupe_factor if split == "train" else 1)


def names(files: Sequence[Path]) -> str:
    return ", ".join(str(f) for f in files[:3]) + (f" (+{len(files) - 3} more)"
                                                   if len(files) > 3 else "")


def _documents(files: Sequence[Path], cfg: DataConfig) -> Iterator[list[str]]:
    return corpus_lib.read_documents(files, cfg.encoding_errors)


def tokenize_corpus(tokenizer, documents: Iterator[list[str]], out: Path, ids_dtype,
              batch_sentences: int = 8192) -> list[int]:
    """Tokenizes documents into `out/{tokens,sentence_offsets,doc_offsets}.npy`.

    Sentences without tokens are dropped, as google-research/bert does; so are documents
    left with no sentence, which keep their index (for the eval split) but no sentences.

    Returns:
      The indices of the documents that kept at least one sentence.
    """
    out.mkdir()
    tokens = NpyWriter(out / "tokens.npy", ids_dtype, ())
    sentence_offsets = array.array("q", [0])
    doc_offsets = array.array("q", [0])
    pending: list[str] = []
    pending_docs: list[int] = []  # sentences per pending document

    def flush():
        encodings = tokenizer.encode_batch(pending, add_special_tokens=False)
        lengths = iter([len(e.ids) for e in encodings])
        if encodings:
            tokens.append(np.concatenate([np.asarray(e.ids, ids_dtype) for e in encodings]))
        for count in pending_docs:
            for _ in range(count):
                n = next(lengths)
                if n:
                    sentence_offsets.append(sentence_offsets[-1] + n)
            doc_offsets.append(len(sentence_offsets) - 1)
        pending.clear()
        pending_docs.clear()

    for document in documents:
        pending.extend(document)
        pending_docs.append(len(document))
        if len(pending) >= batch_sentences:
            flush()
    flush()
    tokens.close()
    np.save(out / "sentence_offsets.npy", np.frombuffer(sentence_offsets, np.int64))
    doc_offsets = np.frombuffer(doc_offsets, np.int64)
    np.save(out / "doc_offsets.npy", doc_offsets)
    return np.flatnonzero(np.diff(doc_offsets) > 0).tolist()


def open_documents(directory: str | Path, doc_ids: Sequence[int] | None = None) -> Documents:
    """The tokenized corpus in `directory`, memory-mapped."""
    directory = Path(directory)
    return Documents(np.load(directory / "tokens.npy", mmap_mode="r"),
                     np.load(directory / "sentence_offsets.npy"),
                     np.load(directory / "doc_offsets.npy"), doc_ids)


@dataclasses.dataclass(frozen=True)
class Job:
    """What a worker needs to build instances for one split (pickled once per worker)."""

    corpus: str
    doc_ids: list[int]
    spec: MaskingSpec
    max_seq_length: int
    short_seq_prob: float
    masked: bool
    seed: int
    ids_dtype: type
    dupes: int  # passes over the documents

    def work_items(self, num_tokens: Sequence[int]) -> list[tuple[int, int, int]]:
        """The work items of a split, in output order: (dupe, first, last) for each pass and
        each run of consecutive documents of about `_SHARD_TOKENS` tokens (`num_tokens`
        per document)."""
        ranges, first, size = [], 0, 0
        for d, n in enumerate(num_tokens):
            size += n
            if size >= _SHARD_TOKENS or d == len(num_tokens) - 1:
                ranges.append((first, d + 1))
                first, size = d + 1, 0
        return [(dupe, a, b) for dupe in range(self.dupes) for (a, b) in ranges]


_worker: tuple[Job, Documents] | None = None


def _init_worker(job: Job) -> None:
    global _worker
    _worker = (job, open_documents(job.corpus, job.doc_ids))


def _build_shard(task: tuple[int, int, int]) -> dict:
    """Instances of documents [first, last) for dupe pass `dupe`, concatenated."""
    dupe, first, last = task
    job, documents = _worker
    parts = [document_instances(job, documents, dupe, d) for d in range(first, last)]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def document_instances(job: Job, documents: Documents, dupe: int, d: int) -> dict:
    """The instances of the split's document d in dupe pass `dupe`, from a generator of its
    own, named by the document's corpus index."""
    rng = np.random.default_rng([job.seed, dupe, documents.doc_ids[d]])
    return create_instances(documents, d, rng, max_seq_length=job.max_seq_length,
                            short_seq_prob=job.short_seq_prob, spec=job.spec,
                            masked=job.masked, ids_dtype=job.ids_dtype)


def _write_instances(job: Job, workers: int, out: Path) -> dict:
    """Builds a split's instances over `workers` processes and streams them to `out`."""
    if not job.doc_ids:
        return {"num_instances": 0, "masked": job.masked}
    _init_worker(job)
    documents = _worker[1]
    tasks = job.work_items([documents.num_tokens(d) for d in range(len(documents))])
    writers: dict[str, NpyWriter] = {}
    if workers > 1 and len(tasks) > 1:
        # spawn, not fork: the caller may already run JAX's threads.
        pool = multiprocessing.get_context("spawn").Pool(
            min(workers, len(tasks)), initializer=_init_worker, initargs=(job,))
        results = pool.imap(_build_shard, tasks)
    else:
        pool, results = None, map(_build_shard, tasks)
    try:
        for arrays in results:
            for k, v in arrays.items():
                if k not in writers:
                    writers[k] = NpyWriter(out / f"{k}.npy", v.dtype, v.shape[1:])
                writers[k].append(v)
    finally:
        if pool is not None:
            pool.terminate()
        for w in writers.values():
            w.close()
    return {"num_instances": writers["input_ids"].rows, "masked": job.masked}


