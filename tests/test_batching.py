"""Fine-tuning batches: every example once in order for evaluation, length-grouped and
resumable for training, the same for every task's arrays."""

import concurrent.futures

import numpy as np

from jaxlm.data import batching


def test_eval_batches_cover_every_example_once_longest_first():
    lengths = np.array([3, 9, 17, 5, 40])
    arrays = {"input_ids": np.ones((5, 64), np.int32),
              "attention_mask": (np.arange(64)[None] < lengths[:, None]).astype(np.int32),
              "label": np.arange(5, dtype=np.int32), "example_weights": np.ones(5, np.float32)}
    batches = list(batching.eval_loader(arrays, batch_size=2, process_index=0,
                                        process_count=1))
    assert batching.eval_order(arrays).tolist() == [4, 2, 1, 3, 0]
    assert [b["label"].tolist() for b in batches] == [[4, 2], [1, 3], [0, 0]]
    assert [b["input_ids"].shape[1] for b in batches] == [48, 16, 16]
    assert np.concatenate([b["example_weights"] for b in batches]).tolist() == [1] * 5 + [0]
    # Two processes take the two halves of each batch, cut to the same length.
    halves = [list(batching.eval_loader(arrays, 2, process_index=p, process_count=2))
              for p in (0, 1)]
    assert [h["label"].tolist() for h in halves[1]] == [[2], [3], [0]]
    assert [h["input_ids"].shape for h in halves[1]] == [(1, 48), (1, 16), (1, 16)]


def test_length_grouped_batches_cover_an_epoch_with_little_padding():
    rng = np.random.default_rng(0)
    N, B, T = 200, 8, 64
    lengths = rng.integers(3, T + 1, N)
    arrays = {"input_ids": np.arange(N)[:, None] * np.ones((1, T), np.int32),
              "attention_mask": (np.arange(T)[None] < lengths[:, None]).astype(np.int32),
              "label": np.arange(N, dtype=np.int32), "example_weights": np.ones(N, np.float32)}
    source = batching.GroupedBatches(arrays, B, epochs=2, seed=5, pad_to=16)
    assert len(source) == 2 * (N // B)
    epoch0 = [source[k] for k in range(N // B)]
    assert sorted(np.concatenate([b["label"] for b in epoch0]).tolist()) == list(range(N))
    for b in epoch0:
        T_b = b["input_ids"].shape[1]
        assert T_b % 16 == 0 and T_b - 16 < lengths[b["label"]].max() <= T_b
    padded = sum(b["input_ids"].size for b in epoch0)
    assert padded < 0.75 * N * T  # vs padding every batch to 64
    epoch1 = np.concatenate([source[N // B + k]["label"] for k in range(N // B)])
    assert epoch1.tolist() != np.concatenate([b["label"] for b in epoch0]).tolist()
    # Two processes take the two halves of the same batches.
    halves = [batching.GroupedBatches(arrays, B, 2, 5, 16, p, 2)[3] for p in (0, 1)]
    np.testing.assert_array_equal(np.concatenate([h["label"] for h in halves]),
                                  source[3]["label"])
    assert halves[0]["input_ids"].shape == halves[1]["input_ids"].shape


def test_grouped_batches_are_safe_to_read_from_many_threads():
    """Grain reads records from several threads at once, across epoch boundaries."""
    N, B, epochs = 4096, 4, 12
    arrays = {"input_ids": np.ones((N, 16), np.int32), "attention_mask": np.ones((N, 16), np.int32),
              "label": np.arange(N, dtype=np.int32), "example_weights": np.ones(N, np.float32)}
    expected = [batching.GroupedBatches(arrays, B, epochs, 0, 16)[r]["label"]
                for r in range(0, epochs * N // B, 97)]
    shared = batching.GroupedBatches(arrays, B, epochs, 0, 16)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda r: shared[r]["label"], range(0, epochs * N // B, 97)))
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_array_equal(a, b)
