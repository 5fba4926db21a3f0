"""The Grain loader: epochs, per-process shards, exact resume, static and dynamic masks."""

from pathlib import Path

import numpy as np
import pytest
from data_fixtures import TRAINED_IDS, check_whole_words, read_split, tiny_data_config

from jaxlm.data import KEYS, DataError, Prepared, loader_throughput, make_loader, prepare
from jaxlm.data.loader import reshard_state

T, P = 8, 2


def synthetic(tmp_path: Path, n: int) -> Prepared:
    """A prepared train split of n static instances; instance i carries token id 10 + i."""
    directory = tmp_path / "synthetic"
    (directory / "train").mkdir(parents=True)
    ids = 10 + np.arange(n)
    arrays = {
        "input_ids": np.zeros((n, T), np.uint16),
        "token_type_ids": np.tile(np.array([0, 0, 0, 1, 1, 0, 0, 0], np.uint8), (n, 1)),
        "attention_mask": np.tile(np.array([1, 1, 1, 1, 1, 0, 0, 0], np.uint8), (n, 1)),
        "masked_positions": np.tile(np.array([1, 0], np.int32), (n, 1)),
        "masked_ids": np.stack([ids, 0 * ids], 1).astype(np.uint16),
        "masked_weights": np.tile(np.array([1.0, 0.0], np.float32), (n, 1)),
        "next_sentence_label": (ids % 2).astype(np.uint8),
    }
    arrays["input_ids"][:, :5] = np.stack([0 * ids + 2, ids, 0 * ids + 3, ids, 0 * ids + 3], 1)
    for key, value in arrays.items():
        np.save(directory / "train" / f"{key}.npy", value)
    return Prepared(directory=directory, recipe="bert",
                    tokenizer_path=directory / "tokenizer.json", vocab_size=10 + n,
                    num_train=n, num_eval=0, max_seq_length=T,
                    max_predictions=P, special_ids=TRAINED_IDS, dynamic_masking=False,
                    whole_word_masking=False, masked_lm_prob=0.15, num_train_documents=1,
                    num_eval_documents=0)


def loader(prepared, batch_size, seed=0, shuffle=True, num_epochs=1, index=0, count=1,
           split="train"):
    return make_loader(prepared, split, batch_size, seed=seed, shuffle=shuffle,
                       num_epochs=num_epochs, process_index=index, process_count=count)


def instance_ids(batches) -> list[int]:
    """The synthetic instance index of every row, in the order read."""
    return [int(i) - 10 for b in batches for i in b["input_ids"][:, 1]]


def assert_same(batches, expected):
    assert len(batches) == len(expected)
    for got, want in zip(batches, expected, strict=True):
        assert got.keys() == want.keys()
        for key in got:
            np.testing.assert_array_equal(got[key], want[key], err_msg=key)


def test_batch_keys_shapes_and_dtypes(tmp_path):
    prepared = synthetic(tmp_path, 16)
    batch = next(iter(loader(prepared, 4, shuffle=False)))
    assert {k: (v.shape, v.dtype.name) for k, v in batch.items()} == {
        "input_ids": ((4, T), "int32"), "token_type_ids": ((4, T), "int32"),
        "attention_mask": ((4, T), "int32"), "masked_positions": ((4, P), "int32"),
        "masked_ids": ((4, P), "int32"), "masked_weights": ((4, P), "float32"),
        "next_sentence_label": ((4,), "int32")}
    assert set(batch) == set(KEYS)
    np.testing.assert_array_equal(batch["input_ids"][:, :5], [[2, 10 + i, 3, 10 + i, 3]
                                                              for i in range(4)])
    np.testing.assert_array_equal(batch["next_sentence_label"], [0, 1, 0, 1])


def test_epochs_shuffle_every_instance_once(tmp_path):
    prepared = synthetic(tmp_path, 48)
    batches = list(loader(prepared, 8, seed=1, num_epochs=2))
    assert len(batches) == 12
    first, second = instance_ids(batches[:6]), instance_ids(batches[6:])
    assert sorted(first) == list(range(48)) and sorted(second) == list(range(48))
    assert first != list(range(48)) and second != first  # a fresh order each epoch
    assert instance_ids(loader(prepared, 8, seed=1)) == first  # same seed, same order
    assert instance_ids(loader(prepared, 8, seed=2)) != first


def test_remainder_is_dropped_each_epoch(tmp_path):
    prepared = synthetic(tmp_path, 50)
    batches = list(loader(prepared, 8, num_epochs=2))
    assert len(batches) == 12  # 50 // 8 = 6 full batches per epoch
    for epoch in (batches[:6], batches[6:]):
        ids = instance_ids(epoch)
        assert len(set(ids)) == 48 and set(ids) <= set(range(50))


def test_without_shuffle_reads_in_stored_order(tmp_path):
    prepared = synthetic(tmp_path, 20)
    assert instance_ids(loader(prepared, 5, shuffle=False)) == list(range(20))


def test_two_processes_split_each_global_batch(tmp_path):
    prepared = synthetic(tmp_path, 48)
    single = list(loader(prepared, 8, seed=3))
    shards = [list(loader(prepared, 8, seed=3, index=p, count=2)) for p in (0, 1)]
    assert [len(s) for s in shards] == [6, 6]
    assert all(b["input_ids"].shape == (4, T) for s in shards for b in s)
    ids = [instance_ids(s) for s in shards]
    assert not set(ids[0]) & set(ids[1])
    assert sorted(ids[0] + ids[1]) == list(range(48))  # every instance exactly once
    for step, batch in enumerate(single):  # process 0's rows, then process 1's: the batch
        assert instance_ids([shards[0][step], shards[1][step]]) == instance_ids([batch])


@pytest.mark.parametrize("count", [1, 2])
def test_resume_gives_the_uninterrupted_batches(tmp_path, count):
    prepared = synthetic(tmp_path, 48)
    for index in range(count):
        iterator = iter(loader(prepared, 8, seed=4, num_epochs=None, index=index, count=count))
        for _ in range(5):
            next(iterator)
        state = iterator.get_state()
        expected = [next(iterator) for _ in range(7)]  # runs into the second epoch
        resumed = iter(loader(prepared, 8, seed=4, num_epochs=None, index=index, count=count))
        resumed.set_state(state)
        assert_same([next(resumed) for _ in range(7)], expected)


@pytest.mark.parametrize("count", [1, 4])
def test_a_position_saved_by_two_processes_continues_on_another_number(tmp_path, count):
    prepared = synthetic(tmp_path, 48)
    before = [iter(loader(prepared, 8, seed=4, num_epochs=None, index=i, count=2)) for i in (0, 1)]
    for iterator in before:
        for _ in range(3):
            next(iterator)
    saved = before[1].get_state()
    expected = [instance_ids([next(it) for it in before]) for _ in range(8)]  # into epoch 2
    after = [iter(loader(prepared, 8, seed=4, num_epochs=None, index=i, count=count))
             for i in range(count)]
    for index, iterator in enumerate(after):
        iterator.set_state(reshard_state(saved, 1, 2, iterator.get_state(), index, count))
    assert [instance_ids([next(it) for it in after]) for _ in range(8)] == expected
    other = iter(loader(prepared, 8, seed=5, num_epochs=None))
    with pytest.raises(DataError, match="seed=4.* is not this run's .*seed=5"):
        reshard_state(saved, 1, 2, other.get_state(), 0, 1)


def test_restore_refuses_another_loader(tmp_path):
    prepared = synthetic(tmp_path, 48)
    iterator = iter(loader(prepared, 8, seed=4))
    next(iterator)
    other = iter(loader(prepared, 8, seed=5))
    with pytest.raises(ValueError, match="seed=4"):
        other.set_state(iterator.get_state())


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Prepared]:
    root = tmp_path_factory.mktemp("tiny")
    return {mode: prepare(tiny_data_config(root, dynamic_masking=mode == "dynamic"), seed=0)
            for mode in ("static", "dynamic")}


def test_static_masks_repeat_every_epoch(tiny):
    prepared = tiny["static"]
    n = prepared.num_train // 4
    batches = list(loader(prepared, 4, shuffle=False, num_epochs=2))
    assert_same(batches[n:], batches[:n])
    stored = read_split(prepared, "train")
    for key in KEYS:
        np.testing.assert_array_equal(np.concatenate([b[key] for b in batches[:n]]),
                                      stored[key][:4 * n], err_msg=key)


def test_dynamic_masks_change_every_epoch_and_follow_the_rules(tiny):
    prepared = tiny["dynamic"]
    stored = read_split(prepared, "train")
    n = prepared.num_train // 4
    epochs = 10
    batches = list(loader(prepared, 4, shuffle=False, num_epochs=epochs))
    assert len(batches) == epochs * n
    kinds = {"mask": 0, "same": 0, "random": 0}
    changed = 0
    for e in range(epochs):
        epoch = {k: np.concatenate([b[k] for b in batches[e * n:(e + 1) * n]]) for k in KEYS}
        for key in ("token_type_ids", "attention_mask", "next_sentence_label"):
            np.testing.assert_array_equal(epoch[key], stored[key][:4 * n])
        for row in range(4 * n):
            original = stored["input_ids"][row]
            length = int(epoch["attention_mask"][row].sum())
            k = int(epoch["masked_weights"][row].sum())
            positions = epoch["masked_positions"][row, :k]
            assert k == min(5, max(1, round(0.15 * length)))
            assert np.all(np.isin(original[positions], [2, 3], invert=True))
            np.testing.assert_array_equal(epoch["masked_ids"][row, :k], original[positions])
            keep = np.setdiff1d(np.arange(32), positions)
            np.testing.assert_array_equal(epoch["input_ids"][row, keep], original[keep])
            for p in positions:
                token = epoch["input_ids"][row, p]
                kinds["mask" if token == 4 else "same" if token == original[p]
                      else "random"] += 1
            if e > 0:
                changed += not np.array_equal(positions, batches[row // 4]["masked_positions"][
                    row % 4, :k])
    total = sum(kinds.values())
    assert abs(kinds["mask"] / total - 0.8) < 5 * np.sqrt(0.16 / total), kinds
    same = 0.1 + 0.1 / prepared.vocab_size  # a random id can be the original one
    assert abs(kinds["same"] / total - same) < 5 * np.sqrt(same * (1 - same) / total), kinds
    assert changed > 0.8 * (epochs - 1) * 4 * n  # new positions in (almost) every epoch


def test_dynamic_masks_are_reproducible(tiny):
    prepared = tiny["dynamic"]
    first = list(loader(prepared, 4, seed=0, num_epochs=1))
    assert_same(list(loader(prepared, 4, seed=0, num_epochs=1)), first)
    other = list(loader(prepared, 4, seed=1, shuffle=False, num_epochs=1))
    ordered = list(loader(prepared, 4, seed=0, shuffle=False, num_epochs=1))
    assert not all(np.array_equal(a["masked_positions"], b["masked_positions"])
                   for a, b in zip(other, ordered, strict=True))


def test_dynamic_masks_do_not_depend_on_the_process_count(tiny):
    single = list(loader(tiny["dynamic"], 4, seed=0, num_epochs=1))
    halves = [list(loader(tiny["dynamic"], 4, seed=0, num_epochs=1, index=p, count=2))
              for p in (0, 1)]
    joined = [{k: np.concatenate([a[k], b[k]]) for k in a} for a, b in zip(*halves, strict=True)]
    assert_same(joined, single)


def test_dynamic_resume(tiny):
    def make():
        return loader(tiny["dynamic"], 4, seed=2, num_epochs=None)

    iterator = iter(make())
    for _ in range(9):
        next(iterator)
    state = iterator.get_state()
    expected = [next(iterator) for _ in range(12)]
    resumed = iter(make())
    resumed.set_state(state)
    assert_same([next(resumed) for _ in range(12)], expected)


def test_dynamic_whole_word_masking(tmp_path):
    cfg = tiny_data_config(tmp_path, dynamic_masking=True, whole_word_masking=True,
                           vocab_size=120)
    prepared = prepare(cfg, seed=0)
    is_continuation = prepared.masking_spec().is_continuation
    np.testing.assert_array_equal(is_continuation,
                                  np.load(prepared.directory / "is_continuation.npy"))
    pieces = sum(check_whole_words(b, is_continuation)
                 for b in loader(prepared, 4, num_epochs=3))
    assert pieces > 0


def test_eval_split_reads_static_masks(tiny):
    prepared = tiny["dynamic"]
    batch = next(iter(loader(prepared, prepared.num_eval, shuffle=False, split="eval")))
    np.testing.assert_array_equal(batch["masked_ids"], read_split(prepared, "eval")["masked_ids"])


def test_bad_arguments(tmp_path):
    prepared = synthetic(tmp_path, 10)
    with pytest.raises(ValueError, match="batch size 3 is not a positive multiple of the 2"):
        loader(prepared, 3, count=2)
    with pytest.raises(ValueError, match=r"process_index 2 outside \[0, 2\)"):
        loader(prepared, 4, index=2, count=2)
    with pytest.raises(ValueError, match="split must be one of"):
        loader(prepared, 4, split="test")
    with pytest.raises(DataError, match="10 instances, fewer than one global batch of 16"):
        loader(prepared, 16)
    with pytest.raises(DataError, match="the eval split has no instances"):
        loader(prepared, 4, split="eval")


def test_loader_throughput(tmp_path):
    assert loader_throughput(synthetic(tmp_path, 64), batch_size=8, num_batches=20) > 0
