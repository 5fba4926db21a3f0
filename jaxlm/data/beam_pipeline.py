"""BERT preparation as an Apache Beam pipeline: the instances of `prepare`, on any runner.

    python -m jaxlm.prepare --config configs/bert_base.yaml \
        data.train_files='gs://BUCKET/text/*.txt' data.output_dir=gs://BUCKET/prepared \
        data.tokenizer_sample_lines=10000000 \
        --runner DataflowRunner --project PROJECT --region REGION \
        --temp_location gs://BUCKET/tmp

Stages (`pip install 'jaxlm[beam]'`):

1. On the launching machine, one streaming pass (`builders.plan_corpus`): text hashes pick
   the held-out documents, and the tokenizer is given or trained (for a large corpus on
   `data.tokenizer_sample_lines` lines, the ones with the smallest hashes).
2. One work item per input file: its documents tokenized into `corpus/<file>.array_record`,
   one record per document (`records.encode_document`).
3. One work item per (split, pass, run of documents), the local path's items
   (`builders.work_items`): BERT instances, each document drawing from its own generator
   keyed by (seed, pass, corpus index), written to `<split>/<pass>-<run>.array_record`;
   random next sentences are read from the corpus shards (`records.RecordDocuments`).
4. On the launching machine: manifest.json, listing each split's shards in (pass, run)
   order, written last (a directory without it is an unfinished build, redone).

Instances are ordered by their shard's name, then by document and by instance within the
shard: pass-major, documents in corpus order, as `prepare` orders them. So the instances are
the same as the local path's, byte for byte, however many workers run. Each work item holds
one file's batch of sentences or one run of documents, never the corpus.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import tempfile
import time
from pathlib import Path

import apache_beam as beam
import numpy as np
from apache_beam.options.pipeline_options import PipelineOptions
from tokenizers import Tokenizer

from jaxlm import storage
from jaxlm.config import ConfigError, DataConfig
from jaxlm.data import builders, records
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
      ConfigError: a recipe other than BERT's, or a pairs file.
      DataError: as `prepare`.
    """
    name, files, settings, directory = locate(cfg, seed, recipe)
    if settings["recipe"] != "bert":
        raise ConfigError(f"the Beam pipeline builds BERT instances; {settings['recipe']!r} "
                          f"data is prepared without --runner")
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
    spec = builders.masking_spec(cfg, plan)
    jobs = {split: builders.bert_job(cfg, seed, split, "", [], spec, plan.ids_dtype)
            for split in SPLITS}
    with beam.Pipeline(options=PipelineOptions(pipeline_args)) as p:
        tokenized = (p | "Files" >> beam.Create([(i, str(f)) for i, f in enumerate(files)])
                     | "Tokenize" >> beam.ParDo(TokenizeFile(
                         plan.tokenizer.to_str(), str(directory), plan.ids_dtype,
                         cfg.encoding_errors)))
        corpus = beam.pvalue.AsList(tokenized)
        shards = (p | "Start" >> beam.Create([None])
                  | "Plan" >> beam.FlatMap(work_items, corpus, jobs, plan.held_out)
                  | "Spread" >> beam.Reshuffle()
                  | "Instances" >> beam.ParDo(WriteInstances(str(directory), jobs,
                                                             plan.held_out), corpus))
        (p | "End" >> beam.Create([None])
         | "Index" >> beam.Map(write_index, beam.pvalue.AsList(shards), corpus, jobs,
                               plan.held_out, str(directory)))
    index = json.loads((directory / "shards.json").read_text())
    if not index["train"]["num_documents"]:
        raise DataError(f"no training document has any token in {builders.names(files)}")
    seconds = time.perf_counter() - planned
    manifest = {
        **settings, "format": "array_record", "tokenizer": "tokenizer.json",
        "vocab_size": plan.tokenizer.get_vocab_size(), "special_ids": dataclasses.asdict(plan.ids),
        "splits": index,
        "timing": {"total_s": round(time.perf_counter() - start, 2),
                   "plan_s": round(planned - start, 2), "pipeline_s": round(seconds, 2)},
    }
    storage.write_whole(directory / "manifest.json", json.dumps(manifest, indent=2) + "\n")
    return Prepared.load(directory)


class TokenizeFile(beam.DoFn):
    """(file index, path) -> its documents tokenized into corpus/<index>.array_record;
    emits (file index, shard name, tokens per document)."""

    def __init__(self, tokenizer_json: str, directory: str, ids_dtype, errors: str):
        self._tokenizer_json, self._directory = tokenizer_json, directory
        self._ids_dtype, self._errors = np.dtype(ids_dtype), errors

    def setup(self):
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
        for document in [*documents, None]:
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
    """(split, pass, run index, first, last) for every work item of both splits."""
    _, splits = split_documents(corpus, held_out)
    for split, (_, num_tokens) in splits.items():
        for run, (dupe, first, last) in enumerate(builders.work_items(jobs[split], num_tokens)):
            yield split, dupe, run, first, last


class WriteInstances(beam.DoFn):
    """A work item -> its BERT instances in <split>/<pass>-<run>.array_record; emits
    (split, pass, run, shard name, count, record layout)."""

    def __init__(self, directory: str, jobs: dict, held_out: set[int]):
        self._directory, self._jobs, self._held_out = directory, jobs, held_out
        self._documents: dict[str, records.RecordDocuments] = {}

    def process(self, element, corpus):
        split, dupe, run, first, last = element
        if split not in self._documents:
            shards, splits = split_documents(corpus, self._held_out)
            shards = [(str(storage.path(self._directory) / name), n) for name, n in shards]
            self._documents[split] = records.RecordDocuments(
                shards, splits[split][0], self._jobs[split].ids_dtype)
        documents = self._documents[split]
        parts = [builders.document_instances(self._jobs[split], documents, dupe, d)
                 for d in range(first, last)]
        arrays = {k: np.concatenate([part[k] for part in parts]) for k in parts[0]}
        name = f"{split}/{dupe:04d}-{run:06d}{records.SUFFIX}"
        count = records.write_shard(
            storage.path(self._directory) / name,
            (records.encode(arrays, row) for row in range(len(arrays["input_ids"]))))
        yield split, dupe, run, name, count, records.features(arrays)


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
            "masked": jobs[split].masked,
            "shards": [[s[3], s[4]] for s in mine],
            "features": mine[0][5] if mine else {},
        }
    storage.write_whole(storage.path(directory) / "shards.json", json.dumps(index, indent=1))
