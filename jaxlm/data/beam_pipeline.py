"""Preparation as an Apache Beam pipeline: the instances of `prepare`, on any runner.

    python -m jaxlm.prepare --config configs/bert_base.yaml \
        data.train_files='gs://BUCKET/text/*.txt' data.output_dir=gs://BUCKET/prepared \
        data.tokenizer_sample_lines=10000000 \
        --runner DataflowRunner --project PROJECT --region REGION \
        --temp_location gs://BUCKET/tmp

Stages (`pip install 'jaxlm[beam]'`):

1. On the launching machine (`builders.plan_corpus`): a streaming pass whose text hashes
   pick the held-out documents, then the tokenizer, given or trained (for a large corpus on
   `data.tokenizer_sample_lines` lines, the ones with the smallest hashes, drawn in a
   second pass).
2. One work item per input file: its documents tokenized into `corpus/<file>.array_record`,
   one record per document (`records.encode_document`).
3. One work item per (split, pass, run), the local path's items (`Job.work_items`,
   `WindowJob.work_items`), written to `<split>/<pass>-<run>.array_record`, reading
   documents from the corpus shards (`records.RecordDocuments`):
   - BERT: a run of documents, each drawing from its own generator keyed by (seed, pass,
     corpus index); random next sentences come from any document of the split;
   - causal LM and span corruption: a run of windows of the split's token stream, cut from
     the documents that overlap it; span corruption draws from a generator per window.
4. On the launching machine: manifest.json, listing each split's shards in (pass, run)
   order, written last (a directory without it is an unfinished build, redone).

Instances are ordered by their shard's name, then within the shard: pass-major, documents
(or windows) in corpus order, as `prepare` orders them. So the instances are
the same as the local path's, byte for byte, however many workers run. Each work item holds
one file's batch of sentences or one run of documents, never the corpus.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import os
import tempfile
import time
from pathlib import Path

import apache_beam as beam
import numpy as np
from apache_beam.options.pipeline_options import PipelineOptions
from tokenizers import Tokenizer

from jaxlm import storage
from jaxlm.config import ConfigError, DataConfig
from jaxlm.data import builders, packing, records, span_corruption
from jaxlm.data import corpus as corpus_lib
from jaxlm.data.corpus import DataError
from jaxlm.data.preparation import SPLITS, Prepared, locate

log = logging.getLogger(__name__)

_BATCH_SENTENCES = 8192  # sentences tokenized per call in a work item


def prepare_on_beam(cfg: DataConfig, *, seed: int, recipe: str,
                    pipeline_args: list[str]) -> Prepared:
    """Builds (or finds) what `preparation.prepare` would, as ArrayRecord shards, with the
    Beam runner and options of `pipeline_args` (e.g. ["--runner", "DirectRunner"]).

    Raises:
      ConfigError: `data.format=pairs` (a file of pairs is prepared locally).
      DataError: as `prepare`.
    """
    _, files, settings, directory = locate(cfg, seed, recipe)
    if settings["recipe"] == "pairs":
        raise ConfigError("data.format=pairs: the Beam pipeline builds instances of text "
                          "corpora; prepare pairs without --runner")
    if (directory / "manifest.json").is_file():
        log.info("using prepared data in %s", directory)
        return Prepared.load(directory)
    storage.make_dir(directory)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        plan = builders.plan_corpus(cfg, files, Path(tmp))
        for file in ("tokenizer.json", "is_continuation.npy"):
            storage.copy_file(Path(tmp) / file, directory / file)
    planned = time.perf_counter()
    jobs, vocab_size = _jobs(cfg, seed, settings["recipe"], plan)
    _run_pipeline(pipeline_args, files, str(directory), plan, jobs, cfg.encoding_errors)
    index = json.loads((directory / "shards.json").read_text())
    if not index["train"]["num_documents"]:
        raise DataError(f"no training document has any token in {builders.names(files)}")
    seconds = time.perf_counter() - planned
    manifest = {
        **settings, "format": "array_record", "tokenizer": "tokenizer.json",
        "vocab_size": vocab_size, "special_ids": dataclasses.asdict(plan.ids),
        "splits": index,
        "timing": {"total_s": round(time.perf_counter() - start, 2),
                   "plan_s": round(planned - start, 2), "pipeline_s": round(seconds, 2)},
    }
    storage.write_whole(directory / "manifest.json", json.dumps(manifest, indent=2) + "\n")
    return Prepared.load(directory)


def _jobs(cfg: DataConfig, seed: int, recipe: str, plan: builders.CorpusPlan
          ) -> tuple[dict, int]:
    """Each split's job (`builders.Job` or `WindowJob`) and the model's vocabulary size."""
    vocab_size = plan.tokenizer.get_vocab_size()
    if recipe == "bert":
        spec = builders.masking_spec(cfg, plan)
        # No corpus directory or document list: workers read both from the shards.
        return {split: builders.bert_job(cfg, seed, split, "", [], spec, plan.ids_dtype)
                for split in SPLITS}, vocab_size
    job = builders.WindowJob(recipe, seed, cfg.max_seq_length, vocab_size, plan.ids)
    if recipe == "span_corruption":
        vocab_size += span_corruption.NUM_SENTINELS
    return dict.fromkeys(SPLITS, job), vocab_size


def _run_pipeline(pipeline_args: list[str], files: list, directory: str,
                  plan: builders.CorpusPlan, jobs: dict, errors: str) -> None:
    """Stages 2 and 3 (module docstring), then shards.json (`write_index`)."""
    with beam.Pipeline(options=PipelineOptions(pipeline_args)) as p:
        tokenized = (p | "Files" >> beam.Create([(i, str(f)) for i, f in enumerate(files)])
                     | "Tokenize" >> beam.ParDo(TokenizeFile(
                         plan.tokenizer.to_str(), directory, plan.ids_dtype, errors)))
        corpus = beam.pvalue.AsList(tokenized)  # a side input: waits for every file
        shards = (p | "Start" >> beam.Create([None])
                  | "Plan" >> beam.FlatMap(work_items, corpus, jobs, plan.held_out)
                  | "Spread" >> beam.Reshuffle()
                  | "Instances" >> beam.ParDo(WriteInstances(
                      directory, jobs, plan.held_out, plan.ids_dtype), corpus))
        (p | "End" >> beam.Create([None])
         | "Index" >> beam.Map(write_index, beam.pvalue.AsList(shards), corpus, jobs,
                               plan.held_out, directory))


class TokenizeFile(beam.DoFn):
    """(file index, path) -> its documents tokenized into corpus/<index>.array_record;
    emits (file index, shard name, tokens per document)."""

    def __init__(self, tokenizer_json: str, directory: str, ids_dtype, errors: str):
        self._tokenizer_json, self._directory = tokenizer_json, directory
        self._ids_dtype, self._errors = np.dtype(ids_dtype), errors

    def setup(self):
        # One thread per worker: the runner runs a worker per core, and the tokenizers
        # library's own threads would compete with the other workers for them.
        os.environ["TOKENIZERS_PARALLELISM"] = "false"
        self._tokenizer = Tokenizer.from_str(self._tokenizer_json)

    def process(self, element):
        index, path = element
        name = f"corpus/{index:05d}{records.SUFFIX}"
        num_tokens: list[int] = []
        documents = corpus_lib.read_documents([path], self._errors)
        records.write_shard(storage.path(self._directory) / name,
                            self._encoded(documents, num_tokens))
        yield index, name, np.asarray(num_tokens, np.int64)

    def _encoded(self, documents, num_tokens: list[int]):
        """Tokenizes batches of documents as `builders.tokenize_corpus` does (sentences
        without tokens dropped) and yields each as a record."""
        batch: list[list[str]] = []
        for document in itertools.chain(documents, [None]):  # None: the end
            if document is not None:
                batch.append(document)
            if batch and (document is None or sum(map(len, batch)) >= _BATCH_SENTENCES):
                encodings = iter(self._tokenizer.encode_batch(
                    [s for d in batch for s in d], add_special_tokens=False))
                for d in batch:
                    sentences = [e.ids for e in (next(encodings) for _ in d) if e.ids]
                    num_tokens.append(sum(map(len, sentences)))
                    yield records.encode_document(sentences, self._ids_dtype)
                batch = []


def split_documents(corpus: list, held_out: set[int]) -> tuple[list, dict]:
    """The corpus shards in order (name, documents) and each split's (corpus indices, tokens
    per document): documents with tokens, held out or not, as in `builders.build_corpus`."""
    corpus = sorted(corpus, key=lambda c: c[0])
    shards = [(name, len(num_tokens)) for _, name, num_tokens in corpus]
    tokens = np.concatenate([num_tokens for _, _, num_tokens in corpus])
    kept = np.flatnonzero(tokens)
    is_eval = np.isin(kept, np.fromiter(held_out, np.int64, len(held_out)))
    splits = {split: (kept[mask].tolist(), tokens[kept[mask]].tolist())
              for split, mask in (("train", ~is_eval), ("eval", is_eval))}
    return shards, splits


def work_items(_, corpus: list, jobs: dict, held_out: set[int]):
    """(split, pass, run index, first, last) for every work item of both splits: runs of
    documents (BERT) or of windows (the others), as the local path has them."""
    _, splits = split_documents(corpus, held_out)
    for split, (_, num_tokens) in splits.items():
        for run, (dupe, first, last) in enumerate(jobs[split].work_items(num_tokens)):
            yield split, dupe, run, first, last


class WriteInstances(beam.DoFn):
    """A work item -> its instances in <split>/<pass>-<run>.array_record; emits (split,
    pass, run, shard name, count, record layout)."""

    def __init__(self, directory: str, jobs: dict, held_out: set[int], ids_dtype):
        self._directory, self._jobs, self._held_out = directory, jobs, held_out
        self._ids_dtype = np.dtype(ids_dtype)
        self._splits: dict[str, tuple[records.RecordDocuments, list[int]]] = {}

    def process(self, element, corpus):
        split, dupe, run, first, last = element
        if split not in self._splits:
            shards, splits = split_documents(corpus, self._held_out)
            shards = [(str(storage.path(self._directory) / name), n) for name, n in shards]
            doc_ids, num_tokens = splits[split]
            self._splits[split] = (
                records.RecordDocuments(shards, doc_ids, self._ids_dtype), num_tokens)
        documents, num_tokens = self._splits[split]
        job = self._jobs[split]
        if isinstance(job, builders.WindowJob):
            windows = packing.pack(self._stream(documents, num_tokens, job, first, last),
                                   job.length)
            arrays = job.instances(split, windows, first)
        else:
            parts = [builders.document_instances(job, documents, dupe, d)
                     for d in range(first, last)]
            arrays = {k: np.concatenate([part[k] for part in parts]) for k in parts[0]}
        name = f"{split}/{dupe:04d}-{run:06d}{records.SUFFIX}"
        count = records.write_shard(
            storage.path(self._directory) / name,
            (records.encode(arrays, row) for row in range(len(next(iter(arrays.values()))))))
        yield split, dupe, run, name, count, records.features(arrays)

    def _stream(self, documents, num_tokens: list[int], job, first: int, last: int):
        """The split's token stream (`packing.token_stream`) from window `first` to the
        target of window `last - 1`, read from the documents that overlap it."""
        starts = np.cumsum([0, *(n + 1 for n in num_tokens)])  # each document's offset
        begin, end = first * job.length, last * job.length + 1
        a = int(np.searchsorted(starts, begin, side="right")) - 1
        b = int(np.searchsorted(starts, end, side="left"))
        stream = np.fromiter((t for d in range(a, b) for t in [
            *(t for sentence in documents[d] for t in sentence), job.ids.sep]),
            self._ids_dtype)
        return stream[begin - starts[a]:end - starts[a]]


def write_index(_, shards: list, corpus: list, jobs: dict, held_out: set[int],
                directory: str) -> None:
    """Writes shards.json: per split, its documents, instances, layout and ordered shards."""
    _, splits = split_documents(corpus, held_out)
    index = {}
    for split in SPLITS:
        mine = sorted((s for s in shards if s[0] == split), key=lambda s: s[1:3])
        index[split] = {
            "num_instances": sum(s[4] for s in mine),
            "num_documents": len(splits[split][0]),
            **({"masked": jobs[split].masked} if isinstance(jobs[split], builders.Job) else
               {"num_tokens": int(sum(splits[split][1]) + len(splits[split][1]))}),
            "shards": [[s[3], s[4]] for s in mine],
            "features": mine[0][5] if mine else {},
        }
    storage.write_whole(storage.path(directory) / "shards.json", json.dumps(index, indent=1))
