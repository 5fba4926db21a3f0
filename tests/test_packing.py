"""Causal-LM instances: documents joined by [SEP] and cut into next-token windows."""

import json

import numpy as np

from jaxlm.data import builders, packing, prepare
from jaxlm.data.instances import Documents
from tests.data_fixtures import TRAINED_IDS, tiny_data_config


def _documents():
    # Three documents: [[1, 2], [3]], [[4, 5, 6]], [[7], [8, 9]].
    tokens = np.arange(1, 10, dtype=np.uint16)
    sentence_offsets = np.array([0, 2, 3, 6, 7, 9])
    doc_offsets = np.array([0, 2, 3, 5])
    return tokens, sentence_offsets, doc_offsets


def test_token_stream_ends_every_document_with_the_separator():
    docs = Documents(*_documents(), doc_ids=[0, 2])
    np.testing.assert_array_equal(packing.token_stream(docs, 99, np.int32),
                                  [1, 2, 3, 99, 7, 8, 9, 99])


def test_windows_are_inputs_and_the_next_tokens():
    stream = np.arange(20)
    out = packing.pack(stream, 6)
    np.testing.assert_array_equal(out["input_ids"], [[0, 1, 2, 3, 4, 5], [6, 7, 8, 9, 10, 11],
                                                     [12, 13, 14, 15, 16, 17]])
    np.testing.assert_array_equal(out["target_ids"], out["input_ids"] + 1)
    assert packing.pack(np.arange(5), 6)["input_ids"].shape == (0, 6)


def test_split_windows_are_exactly_the_split_documents(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for name, array in zip(("tokens", "sentence_offsets", "doc_offsets"), _documents(),
                           strict=True):
        np.save(corpus / f"{name}.npy", array)
    job = builders.WindowJob("causal_lm", 0, 3, 20, TRAINED_IDS)
    counts = builders.write_windows(tmp_path, {"train": [0, 2], "eval": [1]}, job, np.uint16)
    train = {k: np.load(tmp_path / "train" / f"{k}.npy") for k in packing.KEYS}
    np.testing.assert_array_equal(train["input_ids"], [[1, 2, 3], [3, 7, 8]])
    np.testing.assert_array_equal(train["target_ids"], [[2, 3, 3], [7, 8, 9]])
    assert counts["train"] == {"num_instances": 2, "num_documents": 2, "num_tokens": 8}
    np.testing.assert_array_equal(np.load(tmp_path / "eval" / "input_ids.npy"), [[4, 5, 6]])


def test_prepare_builds_causal_lm_data_under_its_own_key(tmp_path):
    prepared = prepare(tiny_data_config(tmp_path), seed=0, recipe="causal_lm")
    bert = prepare(tiny_data_config(tmp_path), seed=0)
    assert prepared.recipe == "causal_lm" and bert.recipe == "bert"
    assert bert.directory != prepared.directory
    manifest = json.loads((prepared.directory / "manifest.json").read_text())
    T = prepared.max_seq_length
    for split in ("train", "eval"):
        arrays = {k: np.load(prepared.directory / split / f"{k}.npy") for k in packing.KEYS}
        n = (manifest["splits"][split]["num_tokens"] - 1) // T
        assert arrays["input_ids"].shape == arrays["target_ids"].shape == (n, T)
        np.testing.assert_array_equal(arrays["input_ids"][:, 1:], arrays["target_ids"][:, :-1])
        assert not (arrays["input_ids"] == prepared.special_ids.pad).any()
        if split == "train":  # five documents: at least four separators in full windows
            assert (arrays["input_ids"] == prepared.special_ids.sep).sum() >= 4
