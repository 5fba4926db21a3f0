"""Preparation: corpus -> tokenizer -> tokenized documents -> instances on disk, cached.

    prepared = prepare(cfg.data, seed=cfg.train.seed)   # builds once, then reuses
    loader = make_loader(prepared, "train", batch_size=32, seed=0, shuffle=True, num_epochs=None)

Everything a run needs lands in one directory, `<output_dir>/<corpus>-<key>/`, where `key`
hashes every setting that changes the bytes (the data config except paths and worker count,
the seed, the input files' sizes and mtimes, the tokenizer file's content):

    manifest.json                 settings, counts, vocab size, timing; written last
    tokenizer.json                the trained or given tokenizer
    is_continuation.npy           Bool[V], "##" pieces (whole-word masking)
    corpus/tokens.npy ...         the tokenized documents, flat (see `instances.Documents`)
    train/<key>.npy, eval/<key>.npy   one array per batch key, leading dim N, memory-mapped

`objective` picks the instances: "bert" builds sentence pairs with masks (`instances`),
"causal_lm" packs the documents into next-token windows (`packing`), "span_corruption"
turns such windows into T5 encoder-decoder pairs (`span_corruption`).

Another config gets another directory, so prepared data is never mixed or overwritten; a
build goes to a temporary directory that is renamed into place only when complete.
Instances are built by `num_workers` processes over shards of documents; each (pass,
document) draws from its own generator, so the bytes do not depend on the worker count.
Eval instances use one pass and a fixed seed, so that eval loss is comparable across runs.
"""

from __future__ import annotations

import array
import dataclasses
import hashlib
import json
import logging
import multiprocessing
import os
import shutil
import struct
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from jaxlm.config import ConfigError, DataConfig
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

OBJECTIVES = ("bert", "causal_lm", "span_corruption")
VERSION = 2  # bump when the tokenizer training, instance algorithm or on-disk layout change
EVAL_SEED = 0  # eval instances do not depend on the run's seed
SPLITS = ("train", "eval")
# Settings that change where files go or how fast they are made, not what is in them.
_NOT_HASHED = ("cache_dir", "output_dir", "num_workers")
_SHARD_TOKENS = 1 << 18  # tokens per work item: small enough to balance workers


@dataclasses.dataclass(frozen=True)
class Prepared:
    """A prepared data directory, as its manifest describes it."""

    directory: Path  # holds manifest.json, tokenizer.json and the train/ eval/ arrays
    objective: str  # "bert", "causal_lm", "span_corruption" or "pairs" (see `prepare`)
    tokenizer_path: Path  # the tokenizer that produced the ids
    vocab_size: int  # V; the model's embedding table must have exactly this many rows
    num_train: int  # training instances (all dupe passes)
    num_eval: int  # held-out instances
    max_seq_length: int  # T
    max_predictions: int  # P
    special_ids: SpecialIds  # [PAD] [UNK] [CLS] [SEP] [MASK]
    dynamic_masking: bool  # train masks are drawn by the loader each epoch
    whole_word_masking: bool  # masks cover whole words
    masked_lm_prob: float  # share of tokens masked
    num_train_documents: int  # documents behind the train split
    num_eval_documents: int  # documents held out

    @classmethod
    def load(cls, directory: str | Path) -> Prepared:
        """Reads `<directory>/manifest.json`."""
        directory = Path(directory)
        try:
            m = json.loads((directory / "manifest.json").read_text())
        except FileNotFoundError:
            raise DataError(f"{directory} is not prepared data: no manifest.json") from None
        cfg = m["config"]
        return cls(
            directory=directory,
            objective=m.get("objective", "bert"),
            tokenizer_path=directory / m["tokenizer"],
            vocab_size=m["vocab_size"],
            num_train=m["splits"]["train"]["num_instances"],
            num_eval=m["splits"]["eval"]["num_instances"],
            max_seq_length=cfg["max_seq_length"],
            max_predictions=cfg["max_predictions_per_seq"],
            special_ids=SpecialIds(**m["special_ids"]),
            dynamic_masking=cfg["dynamic_masking"],
            whole_word_masking=cfg["whole_word_masking"],
            masked_lm_prob=cfg["masked_lm_prob"],
            num_train_documents=m["splits"]["train"]["num_documents"],
            num_eval_documents=m["splits"]["eval"]["num_documents"],
        )

    def row_shapes(self, split: str = "train") -> dict[str, tuple[int, ...]]:
        """The shape of one instance of each stored array, e.g. {"input_ids": (T,), ...}."""
        return {p.stem: np.load(p, mmap_mode="r").shape[1:]
                for p in sorted((self.directory / split).glob("*.npy"))}

    def masking_spec(self) -> MaskingSpec:
        """The recipe the loader uses to draw dynamic masks."""
        wwm = np.load(self.directory / "is_continuation.npy") if self.whole_word_masking else None
        return MaskingSpec(self.masked_lm_prob, self.max_predictions, self.vocab_size,
                           self.special_ids, wwm)


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


def _settings(cfg: DataConfig, seed: int, objective: str) -> tuple[str, list[Path], dict]:
    """The corpus name, its files and every setting that determines the prepared bytes."""
    if cfg.train_files:
        name, files = "corpus", corpus_lib.expand_files(cfg.train_files)
    else:
        name, files = "shakespeare", [corpus_lib.fetch_shakespeare(cfg.cache_dir)]
    stats = [f.stat() for f in files]
    settings = {
        "version": VERSION,
        "seed": seed,
        "objective": objective,
        "config": {k: v for k, v in dataclasses.asdict(cfg).items() if k not in _NOT_HASHED},
        "files": [[str(f.resolve()), s.st_size, s.st_mtime_ns] for f, s in zip(files, stats,
                                                                              strict=True)],
    }
    if cfg.tokenizer:
        path = Path(cfg.tokenizer).expanduser()
        if not path.is_file():
            raise DataError(f"data.tokenizer: file not found: {cfg.tokenizer}")
        settings["tokenizer_sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    return name, files, settings


def prepare(cfg: DataConfig, *, seed: int, objective: str = "bert") -> Prepared:
    """Builds (or finds) the tokenizer and the train/eval instances for `cfg` and `seed`:
    BERT pairs, windows for a causal LM ("causal_lm"), T5 span corruption
    ("span_corruption"), or, with `data.format=pairs`, the file's own source/target pairs.

    Raises:
      DataError: missing files, an empty corpus, bad bytes, a tokenizer without the special
        tokens, or a download that failed; each message says what to change.
    """
    if not 0 <= seed < 2**32:
        raise ConfigError(f"train.seed: must be in [0, 2**32), got {seed}")
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    if cfg.format == "pairs":  # the file already says what to predict
        objective = "pairs"
    name, files, settings = _settings(cfg, seed, objective)
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
    root = Path(cfg.output_dir or Path(cfg.cache_dir) / "prepared").expanduser()
    directory = root / f"{name}-{key}"
    if (directory / "manifest.json").is_file():
        log.info("using prepared data in %s", directory)
        return Prepared.load(directory)
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".{directory.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        manifest = _build(cfg, seed, files, settings, tmp)
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        try:
            tmp.rename(directory)
        except OSError:  # another process finished the same build first
            if not (directory / "manifest.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return Prepared.load(directory)


def _build(cfg: DataConfig, seed: int, files: list[Path], settings: dict, out: Path) -> dict:
    """Writes tokenizer, tokenized corpus and instances into `out`; returns the manifest."""
    if cfg.format == "pairs":
        return _build_pairs(cfg, files, settings, out)
    start = time.perf_counter()
    hashes = [corpus_lib.document_hash(d) for d in _documents(files, cfg)]
    if not hashes:
        raise DataError(f"the corpus is empty: no non-blank line in {_names(files)}")
    held_out = corpus_lib.eval_documents(hashes, cfg.eval_fraction)
    log.info("%d documents in %s, %d held out", len(hashes), _names(files), len(held_out))

    def train_text() -> Iterator[str]:
        return (s for i, d in enumerate(_documents(files, cfg)) if i not in held_out for s in d)

    tokenizer, ids = _tokenizer_for(cfg, train_text, out)
    vocab_size = tokenizer.get_vocab_size()
    is_continuation = continuation_mask(tokenizer)
    np.save(out / "is_continuation.npy", is_continuation)
    ids_dtype = np.uint16 if vocab_size <= 1 << 16 else np.int32

    kept = _tokenize(tokenizer, _documents(files, cfg), out / "corpus", ids_dtype)
    splits = {"train": [d for d in kept if d not in held_out],
              "eval": [d for d in kept if d in held_out]}
    if not splits["train"]:
        raise DataError(f"no training document has any token in {_names(files)}")
    spec = MaskingSpec(cfg.masked_lm_prob, cfg.max_predictions_per_seq, vocab_size, ids,
                       is_continuation if cfg.whole_word_masking else None)
    tokenized = time.perf_counter()

    workers = 1
    if settings["objective"] == "causal_lm":
        counts = _write_windows(out, splits, ids, cfg.max_seq_length, ids_dtype,
                                lambda split, windows: windows)
    elif settings["objective"] == "span_corruption":
        def corrupted(split, windows):
            rng = np.random.default_rng([seed if split == "train" else EVAL_SEED, 1])
            return span_corruption.build(windows["input_ids"], vocab_size, ids.cls, ids.sep,
                                         rng)

        counts = _write_windows(out, splits, ids, cfg.max_seq_length, ids_dtype, corrupted)
        vocab_size += span_corruption.NUM_SENTINELS
    else:
        workers = cfg.num_workers or os.cpu_count() or 1
        counts = _write_pairs(cfg, seed, out, splits, spec, ids_dtype, workers)
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


def _tokenizer_for(cfg: DataConfig, train_text, out: Path):
    """The given or trained tokenizer, saved as out/tokenizer.json, and its special ids."""
    if cfg.tokenizer:
        tokenizer = load_tokenizer(cfg.tokenizer, lowercase=cfg.lowercase)
    else:
        tokenizer = train_tokenizer(train_text, cfg.vocab_size, cfg.lowercase)
    tokenizer.save(str(out / "tokenizer.json"))
    return tokenizer, special_ids(tokenizer, source=cfg.tokenizer or "the trained tokenizer")


def _build_pairs(cfg: DataConfig, files: list[Path], settings: dict, out: Path) -> dict:
    """`data.format=pairs`: tab-separated (source, target) lines into encoder-decoder
    arrays; the tokenizer learns from both sides of the training pairs."""
    start = time.perf_counter()
    all_pairs = pairs_lib.read_pairs(files, cfg.encoding_errors)
    if not all_pairs:
        raise DataError(f"no pair in {_names(files)}: expected 'source<TAB>target' lines")
    splits = {"train": [], "eval": []}
    for pair in all_pairs:
        splits["eval" if pairs_lib.is_held_out(pair, cfg.eval_fraction) else "train"].append(pair)
    if not splits["train"]:
        raise DataError(f"every pair of {_names(files)} was held out; lower data.eval_fraction")
    tokenizer, ids = _tokenizer_for(
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


def _write_windows(out: Path, splits: dict, ids: SpecialIds, length: int, ids_dtype,
                   instances) -> dict:
    """Each split's documents packed into windows of `length` next-token pairs (see
    `packing`, [SEP] between documents), turned into stored arrays by
    `instances(split, windows)`: the windows themselves for a causal LM, T5 span corruption
    of them for the encoder-decoder ([CLS] starts the decoder, [SEP] ends each target)."""
    counts = {}
    for split, doc_ids in splits.items():
        (out / split).mkdir()
        stream = packing.token_stream(open_documents(out / "corpus", doc_ids), ids.sep,
                                      ids_dtype)
        windows = packing.pack(stream, length)
        for key, rows in instances(split, windows).items():
            np.save(out / split / f"{key}.npy", rows)
        counts[split] = {"num_instances": len(windows["input_ids"]),
                         "num_documents": len(doc_ids), "num_tokens": len(stream)}
    return counts


def _write_pairs(cfg: DataConfig, seed: int, out: Path, splits: dict, spec: MaskingSpec,
                 ids_dtype, workers: int) -> dict:
    """BERT sentence-pair instances of each split over `workers` processes."""
    counts = {}
    for split, doc_ids in splits.items():
        (out / split).mkdir()
        job = _Job(corpus=str(out / "corpus"), doc_ids=doc_ids, spec=spec,
                   max_seq_length=cfg.max_seq_length, short_seq_prob=cfg.short_seq_prob,
                   masked=split == "eval" or not cfg.dynamic_masking,
                   seed=seed if split == "train" else EVAL_SEED, ids_dtype=ids_dtype)
        dupes = cfg.dupe_factor if split == "train" else 1
        counts[split] = _write_split(job, dupes, workers, out / split)
        counts[split]["num_documents"] = len(doc_ids)
    return counts


def _names(files: Sequence[Path]) -> str:
    return ", ".join(str(f) for f in files[:3]) + (f" (+{len(files) - 3} more)"
                                                   if len(files) > 3 else "")


def _documents(files: Sequence[Path], cfg: DataConfig) -> Iterator[list[str]]:
    return corpus_lib.read_documents(files, cfg.encoding_errors)


def _tokenize(tokenizer, documents: Iterator[list[str]], out: Path, ids_dtype,
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
class _Job:
    """What a worker needs to build instances for one split (pickled once per worker)."""

    corpus: str
    doc_ids: list[int]
    spec: MaskingSpec
    max_seq_length: int
    short_seq_prob: float
    masked: bool
    seed: int
    ids_dtype: type


_worker: tuple[_Job, Documents] | None = None


def _init_worker(job: _Job) -> None:
    global _worker
    _worker = (job, open_documents(job.corpus, job.doc_ids))


def _build_shard(task: tuple[int, int, int]) -> dict:
    """Instances of documents [first, last) for dupe pass `dupe`, concatenated."""
    dupe, first, last = task
    job, documents = _worker
    parts = []
    for d in range(first, last):
        # One generator per (pass, document), named by the document's corpus index.
        rng = np.random.default_rng([job.seed, dupe, documents.doc_ids[d]])
        parts.append(create_instances(
            documents, d, rng, max_seq_length=job.max_seq_length,
            short_seq_prob=job.short_seq_prob, spec=job.spec, masked=job.masked,
            ids_dtype=job.ids_dtype))
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _write_split(job: _Job, dupes: int, workers: int, out: Path) -> dict:
    """Builds a split's instances over `workers` processes and streams them to `out`."""
    if not job.doc_ids:
        return {"num_instances": 0, "masked": job.masked}
    _init_worker(job)
    documents = _worker[1]
    shards, first, size = [], 0, 0
    for d in range(len(documents)):
        size += documents.num_tokens(d)
        if size >= _SHARD_TOKENS or d == len(documents) - 1:
            shards.append((first, d + 1))
            first, size = d + 1, 0
    tasks = [(dupe, a, b) for dupe in range(dupes) for (a, b) in shards]
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


def main(argv: Sequence[str] | None = None) -> Prepared:
    """`python -m jaxlm.data.prepare --config configs/bert_tiny.yaml data.key=value ...`."""
    import argparse

    from jaxlm.config import load

    parser = argparse.ArgumentParser(prog="python -m jaxlm.data.prepare", description=(
        "Builds the WordPiece tokenizer and BERT pretraining instances for a config."))
    parser.add_argument("--config", help="YAML config (default: built-in defaults)")
    parser.add_argument("overrides", nargs="*", help="key.sub=value, e.g. data.dupe_factor=5")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    try:
        cfg = load(args.config, args.overrides)
        prepared = prepare(cfg.data, seed=cfg.train.seed)
    except (ConfigError, DataError) as e:
        raise SystemExit(f"error: {e}") from None
    manifest = json.loads((prepared.directory / "manifest.json").read_text())
    print(json.dumps({"directory": str(prepared.directory), "vocab_size": prepared.vocab_size,
                      "splits": manifest["splits"], "timing": manifest["timing"]}, indent=2))
    return prepared
