"""Batches of encoded examples for fine-tuning, for every task (classification, tagging,
question answering): length-grouped training batches and length-sorted evaluation batches.

The arrays are any task's, keyed by name, one row per example (or QA window); they must
hold `input_ids` and `attention_mask` [N, T] and `example_weights` [N]. Every batch is cut to
its longest row (rounded up to 16), every [N, T] array alike.
"""

from __future__ import annotations

import grain
import jax
import numpy as np

from jaxlm.data.corpus import DataError


def pad_rows(arrays: dict[str, np.ndarray], multiple: int) -> dict[str, np.ndarray]:
    """Appends rows of weight 0 so that the row count is a multiple of `multiple`."""
    n = len(arrays["example_weights"])
    extra = -n % multiple
    return {k: np.concatenate([a, np.zeros((extra, *a.shape[1:]), a.dtype)])
            for k, a in arrays.items()}


def padded_length(longest: int, pad_to: int, limit: int) -> int:
    """A batch's length: its longest row (at least 1) rounded up to a multiple of `pad_to`,
    at most `limit`; a few such lengths mean a few compilations."""
    return min(-(-max(longest, 1) // pad_to) * pad_to, limit)


def length_grouped_batches(lengths: np.ndarray, batch_size: int, seed: int,
                           group: int = 50) -> list[np.ndarray]:
    """Rows of each full batch of one epoch, sentences of similar length together.

    A seeded shuffle is cut into groups of `group` batches, each group is sorted by length
    and cut into batches, and the batches are shuffled (as Hugging Face's
    `group_by_length`): padding each batch to its longest sentence then wastes little.
    """
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(lengths))[:len(lengths) - len(lengths) % batch_size]
    size = group * batch_size
    for start in range(0, len(order), size):
        chunk = order[start:start + size]
        order[start:start + size] = chunk[np.argsort(-lengths[chunk], kind="stable")]
    batches = order.reshape(-1, batch_size)
    return list(batches[rng.permutation(len(batches))])


class GroupedBatches:
    """Grain source whose record r is batch r % n of epoch r // n (n batches per epoch):
    this process's rows of it, padded only to a multiple of `pad_to` covering its longest
    sentence. Every process computes the same batches, so shapes agree across hosts."""

    def __init__(self, arrays: dict[str, np.ndarray], batch_size: int, epochs: int, seed: int,
                 pad_to: int = 16, process_index: int = 0, process_count: int = 1):
        self.arrays, self.batch_size, self.seed, self.pad_to = arrays, batch_size, seed, pad_to
        self.lengths = arrays["attention_mask"].sum(1)
        self.per_epoch = len(self.lengths) // batch_size
        self.epochs = epochs
        self.rows = slice(process_index * batch_size // process_count,
                          (process_index + 1) * batch_size // process_count)
        self._epoch_batches = (None, None)  # (epoch, its batches), replaced as one

    def __len__(self) -> int:
        return self.epochs * self.per_epoch

    def __getitem__(self, record: int) -> dict[str, np.ndarray]:
        epoch, k = divmod(record, self.per_epoch)
        # Grain's reader threads call this concurrently: read and replace the pair in one
        # step, so no thread sees a new epoch with the old (or no) batches.
        cached_epoch, batches = self._epoch_batches
        if epoch != cached_epoch:
            batches = length_grouped_batches(self.lengths, self.batch_size, self.seed + epoch)
            self._epoch_batches = (epoch, batches)
        rows = batches[k]
        T = self.padded_length(rows)
        return {key: a[rows[self.rows]][:, :T] if a.ndim == 2 else a[rows[self.rows]]
                for key, a in self.arrays.items()}

    def padded_length(self, rows: np.ndarray) -> int:
        """T of the batch of these rows: its longest sentence rounded up to `pad_to`."""
        return padded_length(int(self.lengths[rows].max()), self.pad_to,
                             self.arrays["input_ids"].shape[1])

    def mean_length(self) -> float:
        """The padded length T of the first epoch's batches, averaged (no rows copied)."""
        batches = length_grouped_batches(self.lengths, self.batch_size, self.seed)
        return float(np.mean([self.padded_length(rows) for rows in batches]))

    def __repr__(self) -> str:
        return (f"GroupedBatches(n={len(self.lengths)}, batch_size={self.batch_size}, "
                f"epochs={self.epochs}, seed={self.seed}, pad_to={self.pad_to})")


def train_loader(arrays: dict[str, np.ndarray], batch_size: int, epochs: int, seed: int):
    """`epochs` epochs of length-grouped batches (`GroupedBatches`), this process's rows,
    resumable through Grain; and their mean padded length."""
    if len(arrays["example_weights"]) < batch_size:
        raise DataError(f"the training split has {len(arrays['example_weights'])} examples, "
                        f"fewer than one batch of {batch_size}")
    source = GroupedBatches(arrays, batch_size, epochs, seed,
                            process_index=jax.process_index(),
                            process_count=jax.process_count())
    loader = grain.DataLoader(
        data_source=source,
        sampler=grain.samplers.SequentialSampler(len(source), grain.sharding.NoSharding()),
        worker_count=0)
    return loader, source.mean_length()


def eval_order(arrays: dict[str, np.ndarray]) -> np.ndarray:
    """The rows longest first (ties in order): the order `eval_loader` reads them in."""
    return np.argsort(-arrays["attention_mask"].sum(1), kind="stable")


def eval_loader(arrays: dict[str, np.ndarray], batch_size: int, pad_to: int = 16,
                process_index: int | None = None, process_count: int | None = None):
    """Every example once in `eval_order`, in batches cut to `padded_length` (sorted, a
    batch's rows have similar lengths, so little of it is padding), the last one filled with
    weight-0 rows; this process's rows of each batch."""
    if process_index is None or process_count is None:
        process_index, process_count = jax.process_index(), jax.process_count()
    padded = pad_rows({k: a[eval_order(arrays)] for k, a in arrays.items()}, batch_size)
    lengths = padded["attention_mask"].sum(1)
    T = padded["input_ids"].shape[1]
    mine = slice(process_index * batch_size // process_count,
                 (process_index + 1) * batch_size // process_count)
    for first in range(0, len(lengths), batch_size):
        rows = np.arange(first, first + batch_size)
        t = padded_length(int(lengths[rows].max()), pad_to, T)
        yield {k: a[rows[mine]][:, :t] if a.ndim == 2 else a[rows[mine]]
               for k, a in padded.items()}
