"""ArrayRecord shards: instances and tokenized documents as records, local or in a bucket.

ArrayRecord (github.com/google/array_record) is a file of records with an index, read at
random by position, which is what Grain's global shuffle needs; its reader opens gs:// paths
itself. The Beam preparation (`jaxlm.data.beam_pipeline`) writes two kinds of shard:

- instances (`train/*.array_record`, `eval/*.array_record`): one record per instance, the
  arrays of its keys back to back in a fixed order, as the manifest's `features` say
  ({"input_ids": ["<u2", [T]], ...}); decoding is a view per key, no parsing.
- tokenized documents (`corpus/*.array_record`): one record per document, uint32
  [number of sentences, length of each sentence] then the tokens, for `RecordDocuments`.

A shard is written locally and uploaded whole when its directory is a bucket, since the
writer only writes local files.
"""

from __future__ import annotations

import functools
import itertools
import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from array_record.python.array_record_data_source import ArrayRecordDataSource
from array_record.python.array_record_module import ArrayRecordReader, ArrayRecordWriter

from jaxlm import storage
from jaxlm.data.instances import Documents

# One record per chunk: a random read decodes only its own record.
WRITER_OPTIONS = "group_size:1"
SUFFIX = ".array_record"


def features(arrays: dict[str, np.ndarray]) -> dict[str, list]:
    """The record layout of instances stacked in `arrays`: key -> [dtype, row shape]."""
    return {k: [a.dtype.str, list(a.shape[1:])] for k, a in arrays.items()}


def encode(arrays: dict[str, np.ndarray], row: int) -> bytes:
    """Row `row` of each array, back to back in the arrays' order."""
    return b"".join(np.ascontiguousarray(a[row]).tobytes() for a in arrays.values())


def decode(record: bytes, layout: dict[str, list]) -> dict[str, np.ndarray]:
    """The arrays of one record (read-only views into it)."""
    out, offset = {}, 0
    for key, (dtype, shape) in layout.items():
        dtype = np.dtype(dtype)
        count = int(np.prod(shape, dtype=np.int64))
        out[key] = np.frombuffer(record, dtype, count, offset).reshape(shape)
        offset += count * dtype.itemsize
    if offset != len(record):
        raise ValueError(f"a record of {len(record)} bytes does not match the layout {layout}")
    return out


def write_shard(target: str | os.PathLike, records: Iterable[bytes]) -> int:
    """Writes `records` to the ArrayRecord file `target` (local or URL); returns the count."""
    target = storage.path(target)
    if not storage.is_url(target):
        return _write_local(Path(target), records)
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / target.name
        count = _write_local(local, records)
        storage.write_whole(target, local.read_bytes())
    return count


def _write_local(path: Path, records: Iterable[bytes]) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = ArrayRecordWriter(str(path), WRITER_OPTIONS)
    count = 0
    try:
        for record in records:
            writer.write(record)
            count += 1
    finally:
        writer.close()
    return count


class RecordSource:
    """Grain random-access source over instance shards: global index -> dict of arrays.

    `shards` are (path, number of records) in order; the counts come from the manifest, so
    opening the source reads no file.
    """

    def __init__(self, shards: Sequence[tuple[str, int]], layout: dict[str, list]):
        self._layout = layout
        # "path[start:end]" names the records to read without opening the file; the source
        # reads without read-ahead, as random access wants.
        self._source = ArrayRecordDataSource([f"{path}[0:{count}]" for path, count in shards
                                              if count])

    def __len__(self) -> int:
        return len(self._source)

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        return decode(self._source[index], self._layout)


def encode_document(sentences: Sequence[Sequence[int]], ids_dtype) -> bytes:
    """A tokenized document: uint32 [n, len_1..len_n], then its tokens in `ids_dtype`."""
    header = np.asarray([len(sentences), *map(len, sentences)], np.uint32)
    tokens = np.fromiter((t for s in sentences for t in s), ids_dtype)
    return header.tobytes() + tokens.tobytes()


def decode_document(record: bytes, ids_dtype) -> tuple[np.ndarray, list[int]]:
    """A tokenized document as (its tokens, sentence bounds into them: [0, ..., len])."""
    n = int(np.frombuffer(record, np.uint32, 1)[0])
    lengths = np.frombuffer(record, np.uint32, n, 4)
    tokens = np.frombuffer(record, ids_dtype, offset=4 * (n + 1))
    return tokens, [0, *itertools.accumulate(lengths.tolist())]


class RecordDocuments(Documents):
    """`Documents` read from tokenized-document shards instead of flat arrays, for workers
    that share no disk: document g of the corpus is record g - offset of its shard.

    Args:
      shards: the corpus shards in corpus order, with their number of documents.
      doc_ids: the split's documents, as corpus indices.
      ids_dtype: the tokens' storage dtype.
    """

    def __init__(self, shards: Sequence[tuple[str, int]], doc_ids: Sequence[int], ids_dtype):
        self._paths = [path for path, _ in shards]
        self._starts = np.cumsum([0, *(count for _, count in shards)])
        self._readers: dict[int, ArrayRecordReader] = {}
        self._ids_dtype = np.dtype(ids_dtype)
        self.doc_ids = list(doc_ids)

    # A few documents: a pair reads its own document, then sentences of one other in a row.
    @functools.lru_cache(maxsize=16)  # noqa: B019 - one instance per worker and split
    def _document(self, doc: int) -> tuple[np.ndarray, list[int]]:
        shard = int(np.searchsorted(self._starts, doc, side="right")) - 1
        if shard not in self._readers:
            self._readers[shard] = ArrayRecordReader(self._paths[shard], "readahead_buffer_size:0")
        record = self._readers[shard].read([doc - int(self._starts[shard])])[0]
        return decode_document(record, self._ids_dtype)

    def __getitem__(self, d: int) -> list[list[int]]:
        tokens, bounds = self._document(self.doc_ids[d])
        flat = tokens.tolist()
        return [flat[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]

    def num_sentences(self, d: int) -> int:
        return len(self._document(self.doc_ids[d])[1]) - 1

    def sentence(self, d: int, j: int) -> list[int]:
        tokens, bounds = self._document(self.doc_ids[d])
        return tokens[bounds[j]:bounds[j + 1]].tolist()

    def num_tokens(self, d: int) -> int:
        return self._document(self.doc_ids[d])[1][-1]
