"""T5 span corruption: the source/target layout, the noise statistics, recoverability."""

import json

import numpy as np
import pytest

from jaxlm.data import prepare, span_corruption
from tests.data_fixtures import tiny_data_config


def test_hand_made_window():
    tokens = np.arange(1, 10)  # the quick brown fox jumps over the lazy dog
    mask = np.array([0, 0, 1, 1, 0, 0, 1, 1, 0], bool)
    source, target = span_corruption.corrupt(tokens, mask, sentinel_base=100, end_id=3)
    np.testing.assert_array_equal(source, [1, 2, 100, 5, 6, 101, 9])
    np.testing.assert_array_equal(target, [100, 3, 4, 101, 7, 8, 3])


@pytest.mark.parametrize("n", [8, 31, 64, 128])
def test_every_token_is_recoverable_and_noise_is_15_percent_in_spans_of_3(n):
    rng = np.random.default_rng(n)
    noise, spans = span_corruption.span_counts(n, 0.15, 3.0)
    assert noise == max(round(0.15 * n), 1)
    lengths = []
    for _ in range(200):
        window = rng.integers(0, 50, n)
        mask = span_corruption.noise_mask(n, 0.15, 3.0, rng)
        assert mask.sum() == noise and not mask[0]
        starts = np.flatnonzero(mask & ~np.concatenate([[False], mask[:-1]]))
        assert len(starts) == spans
        lengths.append(noise / spans)
        source, target = span_corruption.corrupt(window, mask, 1000, end_id=999)
        assert len(source) == n - noise + spans and len(target) == noise + spans + 1
        np.testing.assert_array_equal(span_corruption.uncorrupt(source, target, 1000), window)
    if n >= 64:
        assert 2.5 <= np.mean(lengths) <= 3.5


def test_random_partition_is_positive_and_sums_up():
    rng = np.random.default_rng(0)
    for total, parts in [(10, 3), (5, 5), (7, 1)]:
        p = span_corruption.random_partition(total, parts, rng)
        assert len(p) == parts and p.sum() == total and (p > 0).all()


def test_prepare_builds_fixed_shape_pairs_with_sentinels_after_the_vocabulary(tmp_path):
    prepared = prepare(tiny_data_config(tmp_path), seed=0, recipe="span_corruption")
    manifest = json.loads((prepared.directory / "manifest.json").read_text())
    tokenizer_vocab = prepared.vocab_size - span_corruption.NUM_SENTINELS
    assert manifest["vocab_size"] == prepared.vocab_size
    arrays = {k: np.load(prepared.directory / "train" / f"{k}.npy")
              for k in span_corruption.KEYS}
    T = prepared.max_seq_length
    noise, spans = span_corruption.span_counts(T, 0.15, 3.0)
    assert arrays["source_ids"].shape == (prepared.num_train, T - noise + spans)
    assert arrays["target_ids"].shape == (prepared.num_train, noise + spans + 1)
    np.testing.assert_array_equal(arrays["decoder_input_ids"][:, 0], prepared.special_ids.cls)
    np.testing.assert_array_equal(arrays["decoder_input_ids"][:, 1:], arrays["target_ids"][:, :-1])
    np.testing.assert_array_equal(arrays["target_ids"][:, -1], prepared.special_ids.sep)
    assert arrays["source_ids"].max() < tokenizer_vocab + spans
    assert (arrays["target_ids"][:, 0] == tokenizer_vocab).all()  # the first sentinel
    assert arrays["target_weights"].dtype == np.float32 and arrays["target_weights"].all()
