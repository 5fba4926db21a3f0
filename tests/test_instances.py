"""BERT instance rules (google-research/bert create_pretraining_data.py) on hand-made documents.

Token ids here are chosen so that each one names where it came from, e.g. 8 * d + j + 10 is
sentence j of document d; a test can then read a pair's provenance off its ids.
"""

import numpy as np
import pytest
from data_fixtures import TRAINED_IDS, make_documents

from jaxlm.data.instances import (
    MaskingSpec,
    create_instances,
    create_pairs,
    mask_tokens,
    pack,
    truncate_seq_pair,
)
from jaxlm.data.tokenizer import SpecialIds

CLS, SEP, MASK = TRAINED_IDS.cls, TRAINED_IDS.sep, TRAINED_IDS.mask


class ScriptedRng:
    """Stands in for np.random.Generator: returns pre-decided draws, in order.

    A draw is ("random", value) for `random()`, or ((low, high), value) for `integers`, where
    (low, high) is the inclusive range the code must ask for.
    """

    def __init__(self, draws):
        self.draws = list(draws)

    def _next(self, kind):
        assert self.draws, f"unexpected extra draw {kind}"
        expected, value = self.draws.pop(0)
        assert expected == kind, f"asked for {kind}, the script has {expected}"
        return value

    def random(self):
        return self._next("random")

    def integers(self, low, high, endpoint=False):
        return self._next((low, high if endpoint else high - 1))


def sentence(first: int, n: int) -> list[int]:
    return list(range(first, first + n))


# doc 0: five 2-token sentences; doc 1: one 3-token sentence; doc 2: three 4-token sentences.
DOCS = [[sentence(100 + 10 * j, 2) for j in range(5)],
        [sentence(200, 3)],
        [sentence(300 + 10 * j, 4) for j in range(3)]]


def test_pairs_random_next_puts_unused_sentences_back():
    # max_seq_length 11 -> max_num_tokens = target = 8, so the first chunk is sentences 0..3.
    rng = ScriptedRng([
        ("random", 0.5),  # >= short_seq_prob: full target length 8
        ((1, 3), 1),  # A = sentence 0 of the 4-sentence chunk
        ("random", 0.2),  # < 0.5: B is random; target_b_length = 8 - 2 = 6
        ((0, 2), 0),  # document 0 is this one: try again
        ((0, 2), 2),  # document 2
        ((0, 2), 1),  # from its sentence 1: 4 tokens < 6, sentence 2: 8 tokens >= 6, stop
        ("random", 0.3),  # 2 + 8 > 8: trim the longer (B) at the front
        ("random", 0.7),  # 2 + 7 > 8: trim B at the back
        # Sentences 1..3 were not used and are read again: chunk 1..4 (8 tokens, doc end).
        ((1, 3), 2),  # A = sentences 1, 2
        ("random", 0.9),  # >= 0.5: B is the actual continuation, sentences 3, 4
    ])
    pairs = create_pairs(make_documents(DOCS), 0, 11, 0.1, rng)
    assert not rng.draws
    assert pairs == [
        ([100, 101], [311, 312, 313, 320, 321, 322], True),
        ([110, 111, 120, 121], [130, 131, 140, 141], False),
    ]


def test_pairs_short_target_and_one_sentence_chunk():
    rng = ScriptedRng([
        ("random", 0.05),  # < short_seq_prob 0.1: a random shorter target
        ((2, 8), 5),  # target 5: sentences 0, 1 (8 tokens) make the first chunk
        ((1, 1), 1),  # a 2-sentence chunk splits after sentence 0
        ("random", 0.6),  # actual next
        # Sentence 2 alone (end of document): B must be random, with no coin flip.
        ((0, 2), 1),  # document 1, target_b_length = 5 - 4 = 1
        ((0, 0), 0),  # its only sentence
    ])
    pairs = create_pairs(make_documents(DOCS), 2, 11, 0.1, rng)
    assert not rng.draws
    assert pairs == [
        ([300, 301, 302, 303], [310, 311, 312, 313], False),
        ([320, 321, 322, 323], [200, 201, 202], True),
    ]


def test_pairs_nsp_is_fifty_fifty_and_chunks_cover_each_document():
    # 400 documents of eight 1-token sentences; target 4 tokens, so no pair is ever truncated.
    # A chunk of 2+ sentences flips a fair coin; only a lone last sentence is forced random.
    num_docs, num_sentences = 400, 8
    docs = [[[8 * d + j + 10] for j in range(num_sentences)] for d in range(num_docs)]
    documents = make_documents(docs)
    rng = np.random.default_rng(0)
    coin, forced = [], 0
    for d in range(num_docs):
        covered = []
        for a, b, is_random in create_pairs(documents, d, 7, 0.0, rng):
            doc_of = {(t - 10) // 8 for t in a}
            assert doc_of == {d}
            if is_random:
                (other,) = {(t - 10) // 8 for t in b}
                assert other != d
                assert b == list(range(b[0], b[0] + len(b)))  # consecutive sentences
                covered += a
            else:
                assert a + b == list(range(a[0], a[0] + len(a) + len(b)))  # B follows A
                covered += a + b
            if a[-1] == 8 * d + num_sentences - 1 + 10:
                assert is_random
                forced += 1
            else:
                coin.append(is_random)
        # Unused sentences go back: the chunks tile the document in order.
        assert covered == [t for s in docs[d] for t in s]
    assert forced > 0
    n = len(coin)
    assert abs(np.mean(coin) - 0.5) < 4 * np.sqrt(0.25 / n), (np.mean(coin), n)


def test_pairs_one_document_corpus_falls_back_to_itself():
    documents = make_documents([[[10, 11], [12], [13, 14, 15]]])
    pairs = create_pairs(documents, 0, 8, 0.0, np.random.default_rng(1))
    assert pairs
    for a, b, _ in pairs:
        assert set(a + b) <= {10, 11, 12, 13, 14, 15}


@pytest.mark.parametrize("max_seq_length", [5, 16, 40])
def test_pairs_truncate_to_max_length_keeping_contiguous_text(max_seq_length):
    rng = np.random.default_rng(2)
    # Token t of the whole corpus has id t, so contiguous text has consecutive ids.
    docs, t = [], 0
    for _ in range(30):
        doc = []
        for _ in range(int(rng.integers(1, 6))):
            n = int(rng.integers(1, 30))
            doc.append(list(range(t, t + n)))
            t += n
        docs.append(doc)
    documents = make_documents(docs)
    for d in range(len(docs)):
        for a, b, is_random in create_pairs(documents, d, max_seq_length, 0.1, rng):
            assert len(a) >= 1 and len(b) >= 1
            assert len(a) + len(b) <= max_seq_length - 3
            assert a == list(range(a[0], a[0] + len(a)))
            if not is_random:  # B is the text right after A (A may lose its back tokens)
                assert b == list(range(b[0], b[0] + len(b)))
                assert b[0] > a[-1]


def test_truncate_seq_pair_trims_the_longer_segment_from_either_end():
    fronts, backs = set(), set()
    for seed in range(50):
        a, b = list(range(10)), [100, 101, 102]
        truncate_seq_pair(a, b, 8, np.random.default_rng(seed))
        assert b == [100, 101, 102]  # A is longer until 5 + 3 = 8
        assert len(a) == 5 and a == list(range(a[0], a[0] + 5))
        fronts.add(a[0])
        backs.add(a[-1])
    assert len(fronts) > 1 and len(backs) > 1  # both ends were trimmed in some draws
    a, b = [1, 2, 3, 4], [5, 6, 7, 8]
    truncate_seq_pair(a, b, 6, np.random.default_rng(0))  # ties trim B first, then A
    assert (len(a), len(b)) == (3, 3)


def test_pack_cls_a_sep_b_sep_with_token_types():
    tokens, types = pack([7, 8], [9], TRAINED_IDS, 6)
    assert tokens == [CLS, 7, 8, SEP, 9, SEP]
    assert types == [0, 0, 0, 0, 1, 1]


def spec(max_predictions=20, vocab_size=1000, is_continuation=None, prob=0.15):
    return MaskingSpec(prob, max_predictions, vocab_size, TRAINED_IDS, is_continuation)


@pytest.mark.parametrize("n, max_predictions, expected", [
    (3, 20, 1),  # round(0.45) = 0, but at least one prediction
    (7, 20, 1),
    (20, 20, 3),
    (40, 20, 6),
    (83, 20, 12),  # round(12.45)
    (128, 20, 19),  # round(19.2)
    (200, 20, 20),  # 30 capped at max_predictions_per_seq
    (200, 5, 5),
])
def test_mask_count(n, max_predictions, expected):
    tokens = [CLS] + list(range(10, 10 + n - 2)) + [SEP]
    _, positions, _ = mask_tokens(tokens, spec(max_predictions), np.random.default_rng(n))
    assert len(positions) == expected


def test_mask_rate_and_80_10_10_split():
    vocab_size = 1000
    tokens = [CLS] + list(range(10, 50)) + [SEP] + list(range(60, 100)) + [SEP]  # n = 83
    specials = {0, 41, 82}
    rng = np.random.default_rng(3)
    draws = 3000
    chosen = np.zeros(len(tokens))
    kinds = {"mask": 0, "same": 0, "random": 0}
    for _ in range(draws):
        output, positions, labels = mask_tokens(tokens, spec(vocab_size=vocab_size), rng)
        assert len(positions) == 12  # round(83 * 0.15)
        assert positions == sorted(set(positions))
        assert not specials & set(positions)
        assert labels == [tokens[i] for i in positions]
        unmasked = set(range(len(tokens))) - set(positions)
        assert all(output[i] == tokens[i] for i in unmasked)
        for i in positions:
            assert 0 <= output[i] < vocab_size
            kinds["mask" if output[i] == MASK else "same" if output[i] == tokens[i]
                  else "random"] += 1
        chosen[positions] += 1
    total = 12 * draws
    # A random replacement equals the original with chance 1 / V.
    expected = {"mask": 0.8, "same": 0.1 + 0.1 / vocab_size, "random": 0.1 - 0.1 / vocab_size}
    for kind, p in expected.items():
        assert abs(kinds[kind] / total - p) < 5 * np.sqrt(p * (1 - p) / total), (kind, kinds)
    # Every ordinary position is chosen with chance 12 / 80; specials never.
    rate = chosen / draws
    assert rate[sorted(specials)].sum() == 0
    ordinary = np.delete(rate, sorted(specials))
    assert np.all(np.abs(ordinary - 0.15) < 5 * np.sqrt(0.15 * 0.85 / draws)), ordinary


def continuation(vocab_size: int, pieces: list[int]) -> np.ndarray:
    is_continuation = np.zeros(vocab_size, bool)
    is_continuation[pieces] = True
    return is_continuation


def test_whole_word_masking_masks_all_pieces_of_a_word():
    # Ids 500.. are "##" pieces. Segment A holds 4 words, B 3 words; n = 17 tokens.
    is_continuation = continuation(1000, list(range(500, 1000)))
    a = [10, 500, 501, 11, 12, 502, 13]
    b = [14, 503, 504, 505, 15, 16, 506]
    tokens = [CLS, *a, SEP, *b, SEP]
    spans = [range(1, 4), range(4, 5), range(5, 7), range(7, 8),  # [SEP] at 8
             range(9, 13), range(13, 14), range(14, 16)]
    rng = np.random.default_rng(4)
    for _ in range(500):
        _, positions, _ = mask_tokens(tokens, spec(is_continuation=is_continuation), rng)
        # round(17 * 0.15) = 3; three 1-piece words mean the cap can always be filled.
        assert len(positions) == 3
        for span in spans:
            hit = set(span) & set(positions)
            assert not hit or hit == set(span), (positions, span)


def test_whole_word_masking_skips_words_over_the_cap():
    is_continuation = continuation(1000, [500, 501])
    # n = 9: round(1.35) = 1 prediction, so only the 1-piece word 13 (position 7) fits.
    tokens = [CLS, 10, 500, 501, 11, 500, SEP, 13, SEP]
    for seed in range(20):
        _, positions, _ = mask_tokens(tokens, spec(is_continuation=is_continuation),
                                      np.random.default_rng(seed))
        assert positions == [7]


def test_create_instances_layout_and_padding():
    ids = SpecialIds(pad=9, unk=1, cls=2, sep=3, mask=4)  # [PAD] is not id 0 here
    masking = MaskingSpec(0.15, 4, 1000, ids)
    docs = [[sentence(100 + 10 * j, 3) for j in range(6)],
            [sentence(200 + 10 * j, 5) for j in range(4)]]
    documents = make_documents(docs)
    T = 16
    arrays = create_instances(documents, 0, np.random.default_rng(5), max_seq_length=T,
                              short_seq_prob=0.0, spec=masking)
    # The same generator state gives the same pairs: create_pairs draws before any mask.
    pairs = create_pairs(documents, 0, T, 0.0, np.random.default_rng(5))
    N = len(pairs)
    assert {k: v.shape for k, v in arrays.items()} == {
        "input_ids": (N, T), "token_type_ids": (N, T), "attention_mask": (N, T),
        "masked_positions": (N, 4), "masked_ids": (N, 4), "masked_weights": (N, 4),
        "next_sentence_label": (N,)}
    for row, (a, b, is_random) in enumerate(pairs):
        n = len(a) + len(b) + 3
        packed = [ids.cls, *a, ids.sep, *b, ids.sep]
        assert arrays["next_sentence_label"][row] == (1 if is_random else 0)
        assert arrays["attention_mask"][row].tolist() == [1] * n + [0] * (T - n)
        assert arrays["token_type_ids"][row].tolist() == ([0] * (len(a) + 2) + [1] * (len(b) + 1)
                                                          + [0] * (T - n))
        assert arrays["input_ids"][row, n:].tolist() == [ids.pad] * (T - n)
        k = int(arrays["masked_weights"][row].sum())
        positions = arrays["masked_positions"][row, :k].tolist()
        assert 1 <= k <= 4
        assert arrays["masked_weights"][row].tolist() == [1.0] * k + [0.0] * (4 - k)
        assert arrays["masked_positions"][row, k:].tolist() == [0] * (4 - k)
        assert arrays["masked_ids"][row, :k].tolist() == [packed[i] for i in positions]
        assert all(0 < i < n and packed[i] != ids.sep for i in positions)
        kept = [i for i in range(n) if i not in positions]
        assert arrays["input_ids"][row, kept].tolist() == [packed[i] for i in kept]


def test_create_instances_unmasked_for_dynamic_masking():
    documents = make_documents(DOCS)
    arrays = create_instances(documents, 0, np.random.default_rng(6), max_seq_length=11,
                              short_seq_prob=0.1, spec=spec(max_predictions=4), masked=False)
    assert set(arrays) == {"input_ids", "token_type_ids", "attention_mask",
                           "next_sentence_label"}
    assert MASK not in arrays["input_ids"]
