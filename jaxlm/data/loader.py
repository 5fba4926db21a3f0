"""Batches of prepared instances through Grain: sharded per JAX process, resumable.

    loader = make_loader(prepared, "train", batch_size=256, seed=0, shuffle=True,
                         num_epochs=None)
    it = iter(loader)
    batch = next(it)            # {"input_ids": Int32[B, T], ..., "masked_weights": Float32[B, P]}
    state = it.get_state()      # bytes; `it.set_state(state)` resumes exactly there
    # In an Orbax checkpoint: grain.checkpoint.CheckpointSave(it) / CheckpointRestore(it)

Order. Epoch e is a permutation of the first M = N - N % B_global instances of a global
shuffle (Grain's `index_shuffle` with seed + e); global batch b is stream positions
[b * B_global, (b + 1) * B_global) and process p takes the p-th contiguous block of
B_global / process_count of them. Grain hands process p every `process_count`-th sampler
index, so the sampler maps those indices onto the blocks: concatenating the processes'
batches in process order gives exactly the one-process batch, row for row (what
`jax.make_array_from_process_local_data` builds), each process reads only its own
records, and within an epoch every instance is seen at most once. Every
batch is full (the remainder, fewer than B_global instances, is skipped each epoch, so
all processes yield the same number of same-shaped batches; it differs between epochs).

Masks. With static masking (the default, as in BERT) the masks were drawn by `prepare`.
With `dynamic_masking` (RoBERTa 4.1) the train split is stored unmasked and masked here,
per record, with a generator keyed by (seed, stream position), so instance i gets a new
mask every epoch and the same mask on every rerun or resume. Eval is always static.
"""

from __future__ import annotations

import json
import re
import sys
import time

import grain
import numpy as np

from jaxlm import storage
from jaxlm.data import packing, span_corruption
from jaxlm.data.corpus import DataError
from jaxlm.data.instances import KEYS, MaskingSpec, mask_tokens
from jaxlm.data.preparation import SPLITS, Prepared
from jaxlm.data.records import RecordSource

BUCKET_READ_THREADS = 16  # Grain's default


class ArraySource:
    """Grain random-access source over arrays (in memory or memory-mapped) with a common
    first dimension of `length` rows (default: all of them)."""

    def __init__(self, arrays: dict[str, np.ndarray], name: str, length: int | None = None):
        self._arrays, self._name = arrays, name
        self._len = len(next(iter(arrays.values()))) if length is None else length

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        return {key: a[index] for key, a in self._arrays.items()}

    def __repr__(self) -> str:
        # Grain compares reprs on restore.
        return f"{type(self).__name__}({self._name}, n={self._len})"


class Named:
    """A source under a name of the caller's choosing (its repr, which Grain checks)."""

    def __init__(self, source, name: str):
        self._source, self._name = source, name

    def __len__(self) -> int:
        return len(self._source)

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        return self._source[index]

    def __repr__(self) -> str:
        return self._name


def instance_source(prepared: Prepared, split: str):
    """One split's instances: memory-mapped `.npy` arrays, or ArrayRecord shards (local or
    in a bucket) from the Beam preparation."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    n = prepared.num_train if split == "train" else prepared.num_eval
    if n == 0:
        raise DataError(f"{prepared.directory}: the {split} split has no instances"
                        + (" (data.eval_fraction=0)" if split == "eval" else ""))
    # Grain checks the repr on restore: the directory name hashes the settings, and both
    # formats hold the same instances, so a run may resume on data prepared either way.
    name = f"InstanceSource({prepared.directory.name}/{split}, n={n})"
    if prepared.storage_format == "array_record":
        source = RecordSource(prepared.shards[split], prepared.layouts[split])
    else:
        arrays = {}
        for key in dict.fromkeys(KEYS + packing.KEYS + span_corruption.KEYS):
            path = prepared.directory / split / f"{key}.npy"
            if path.is_file():
                arrays[key] = np.load(path, mmap_mode="r")
        source = ArraySource(arrays, split, length=n)
    return Named(source, name)


class GlobalShuffleSampler:
    """Grain sampler: per-epoch global shuffle of whole global batches (see module doc)."""

    def __init__(self, num_records: int, global_batch: int, *, shuffle: bool, seed: int,
                 num_epochs: int | None, with_rng: bool, process_count: int = 1):
        self._num_records, self._global_batch = num_records, global_batch
        self._process_count = process_count
        self._epoch_length = num_records - num_records % global_batch
        self._shuffle, self._seed, self._num_epochs = shuffle, seed, num_epochs
        self._with_rng = with_rng
        self._order = grain.MapDataset.range(num_records)
        if shuffle:
            self._order = self._order.shuffle(seed=seed)

    def __len__(self) -> int:
        return sys.maxsize if self._num_epochs is None else self._num_epochs * self._epoch_length

    def __getitem__(self, index: int) -> grain.RecordMetadata:
        if index < 0 or index >= len(self):
            raise IndexError(f"index {index} outside the sampler's {len(self)} positions")
        epoch, position = divmod(index, self._epoch_length)
        position = self._row_position(position)
        key = self._order[epoch * self._num_records + position] if self._shuffle else position
        rng = None
        if self._with_rng:
            stream_position = epoch * self._epoch_length + position
            rng = np.random.Generator(np.random.Philox(key=(self._seed << 64) + stream_position))
        return grain.RecordMetadata(index=index, record_key=key, rng=rng)

    def _row_position(self, position: int) -> int:
        """Grain gives process p positions p, p + count, ... of each global batch; map the
        k-th of them to row p * (B_global / count) + k of that batch."""
        batch, i = divmod(position, self._global_batch)
        process, row = i % self._process_count, i // self._process_count
        return batch * self._global_batch + process * (self._global_batch //
                                                       self._process_count) + row

    def __repr__(self) -> str:
        return (f"GlobalShuffleSampler(num_records={self._num_records}, "
                f"global_batch={self._global_batch}, shuffle={self._shuffle}, "
                f"seed={self._seed}, num_epochs={self._num_epochs}, with_rng={self._with_rng}, "
                f"process_count={self._process_count})")


class DynamicMasking(grain.transforms.RandomMap):
    """Draws fresh MLM masks for an unmasked instance (RoBERTa's dynamic masking)."""

    def __init__(self, spec: MaskingSpec):
        self.spec = spec

    def random_map(self, element: dict, rng: np.random.Generator) -> dict:
        n = int(element["attention_mask"].sum())
        tokens, positions, labels = mask_tokens(element["input_ids"][:n].tolist(), self.spec, rng)
        k, P = len(positions), self.spec.max_predictions
        out = dict(element, input_ids=element["input_ids"].copy(),
                   masked_positions=np.zeros((P,), np.int32),
                   masked_ids=np.zeros((P,), element["input_ids"].dtype),
                   masked_weights=np.zeros((P,), np.float32))
        out["input_ids"][:n] = tokens
        out["masked_positions"][:k] = positions
        out["masked_ids"][:k] = labels
        out["masked_weights"][:k] = 1.0
        return out


def stack_batch(records: list[dict]) -> dict[str, np.ndarray]:
    """Stacks records into a batch: Int32 arrays, except Float32 `*_weights`."""
    return {key: np.stack([r[key] for r in records]).astype(
        np.float32 if key.endswith("_weights") else np.int32) for key in records[0]}


def make_loader(prepared: Prepared, split: str, batch_size: int, *, seed: int, shuffle: bool,
                num_epochs: int | None, process_index: int | None = None,
                process_count: int | None = None, worker_count: int = 0,
                read_threads: int | None = None) -> grain.DataLoader:
    """A Grain DataLoader whose iterator yields this process's share of each global batch.

    Args:
      prepared: the output of `prepare`.
      split: "train" or "eval".
      batch_size: the GLOBAL batch size B_global; each process gets B_global / process_count.
      seed: shuffle order and dynamic masks; must be in [0, 2**32).
      shuffle: reshuffle globally each epoch (train); False reads in stored order (eval).
      num_epochs: None repeats forever (train); 1 is one pass (eval).
      process_index: this process, default `jax.process_index()`.
      process_count: number of processes, default `jax.process_count()`.
      worker_count: Grain worker processes; 0 reads in this process (measured fastest for
        memory-mapped arrays, see `loader_throughput`).
      read_threads: Grain read threads per process; 0 reads inline. Default: inline for
        local data, `BUCKET_READ_THREADS` for data in a bucket, each read there being a
        request whose latency threads overlap (measured in docs/benchmarks.md).

    Returns:
      The loader; `iter(loader)` gives a `grain.DataLoaderIterator` with `get_state()` /
      `set_state()`, batches being dicts of numpy arrays [B_global / process_count, ...].

    Raises:
      DataError: an empty split or one smaller than a global batch.
      ValueError: a batch size that the processes cannot share evenly.
    """
    source = instance_source(prepared, split)
    if read_threads is None:
        read_threads = BUCKET_READ_THREADS if storage.is_url(prepared.directory) else 0
    dynamic = prepared.dynamic_masking and split == "train"
    operations = [DynamicMasking(prepared.masking_spec())] if dynamic else []
    hint = ("add text, raise data.dupe_factor" + (" or data.eval_fraction" if split == "eval"
                                                  else ""))
    return batch_loader(source, batch_size, seed=seed, shuffle=shuffle, num_epochs=num_epochs,
                        operations=operations, with_rng=dynamic, what=f"the {split} split",
                        hint=hint, process_index=process_index, process_count=process_count,
                        worker_count=worker_count, read_threads=read_threads)


def batch_loader(source, batch_size: int, *, seed: int, shuffle: bool, num_epochs: int | None,
                 operations: list = (), with_rng: bool = False, what: str = "the data",
                 hint: str = "add data", process_index: int | None = None,
                 process_count: int | None = None, worker_count: int = 0,
                 read_threads: int = 0) -> grain.DataLoader:
    """`make_loader` for any random-access `source` of records (e.g. an `ArraySource`):
    global batches in the order the module docstring describes, each process its share.

    `operations` run per record before batching; `with_rng` gives them a generator keyed
    by (seed, stream position). `what` and `hint` go into the error for a source smaller
    than a global batch.
    """
    if process_index is None or process_count is None:
        import jax

        process_index = jax.process_index() if process_index is None else process_index
        process_count = jax.process_count() if process_count is None else process_count
    if batch_size <= 0 or batch_size % process_count:
        raise ValueError(f"batch size {batch_size} is not a positive multiple of the "
                         f"{process_count} processes")
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index {process_index} outside [0, {process_count})")
    if len(source) < batch_size:
        raise DataError(f"{what} has {len(source)} instances, fewer than one global batch of "
                        f"{batch_size}: {hint}, or lower the batch size")
    sampler = GlobalShuffleSampler(len(source), batch_size, shuffle=shuffle, seed=seed,
                                   num_epochs=num_epochs, with_rng=with_rng,
                                   process_count=process_count)
    operations = [*operations, grain.transforms.Batch(batch_size // process_count,
                                                      drop_remainder=True, batch_fn=stack_batch)]
    return grain.DataLoader(
        data_source=source,
        sampler=sampler,
        operations=operations,
        shard_options=grain.sharding.ShardOptions(process_index, process_count,
                                                  drop_remainder=True),
        worker_count=worker_count,
        read_options=grain.ReadOptions(num_threads=read_threads, prefetch_buffer_size=256),
    )


def reshard_state(saved: bytes, saved_index: int, saved_count: int, fresh: bytes,
                  index: int, count: int) -> bytes:
    """The position saved by process `saved_index` of `saved_count`, as the state of process
    `index` of `count` whose fresh loader state is `fresh`.

    All processes read the same number of global batches, so one process's position gives
    the global one: loading in the main process, process p of n has last read sampler index
    `r * n - n + p` after r records of its own (see the module doc).

    Raises:
      DataError: the two loaders differ in more than their process count (another seed,
        batch size or data), or load in worker processes.
    """
    old, new = json.loads(saved), json.loads(fresh)
    unsharded = [re.sub(r", process_count=\d+\)$", ")", state["sampler"]) for state in (old, new)]
    if unsharded[0] != unsharded[1] or old["data_source"] != new["data_source"]:
        raise DataError(f"the saved data order ({unsharded[0]}, {old['data_source']}) is not "
                        f"this run's ({unsharded[1]}, {new['data_source']})")
    if old["worker_count"] or new["worker_count"]:
        raise DataError("resuming on another number of processes needs the data loaded in "
                        "the main process (worker_count=0)")
    records = (old["last_seen_indices"]["0"] - saved_index) // saved_count + 1
    if records:
        new["last_seen_indices"]["0"] = records * saved_count - count + index
    return json.dumps(new, indent=4).encode()


def loader_throughput(prepared: Prepared, batch_size: int = 32, num_batches: int = 200, *,
                      split: str = "train", seed: int = 0, worker_count: int = 0,
                      read_threads: int | None = None) -> float:
    """Batches per second one process reads (after a first, untimed batch)."""
    loader = make_loader(prepared, split, batch_size, seed=seed, shuffle=True,
                         num_epochs=None, process_index=0, process_count=1,
                         worker_count=worker_count, read_threads=read_threads)
    it = iter(loader)
    next(it)
    start = time.perf_counter()
    for _ in range(num_batches):
        next(it)
    return num_batches / (time.perf_counter() - start)
