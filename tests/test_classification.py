"""Labelled text files for fine-tuning: formats, columns, labels, splits, encoding."""

import json
import logging

import pytest

from jaxlm.config import FinetuneDataConfig
from jaxlm.data import DataError
from jaxlm.data import classification as cd
from jaxlm.data.tokenizer import train_tokenizer

TEXTS = ["a gorgeous , witty film", "dull and tedious", "the best film of the year",
         "the worst script ever", "a quiet , moving story"]


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(lambda: TEXTS * 10, 80, True)


def test_csv_with_header_and_a_byte_order_mark(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text('\ufefflabel,text\npos,"a gorgeous , witty film"\nneg,dull and tedious\n',
                    encoding="utf-8")
    examples = cd.read_examples(path, FinetuneDataConfig())
    assert [(e.text, e.label) for e in examples] == [("a gorgeous , witty film", "pos"),
                                                      ("dull and tedious", "neg")]


def test_headerless_tsv_and_jsonl_with_integer_labels(tmp_path):
    tsv = tmp_path / "train.tsv"
    tsv.write_text("1\tgreat fun\n0\tdull\n")
    cfg = FinetuneDataConfig(column_names=("label", "text"))
    assert [e.label for e in cd.read_examples(tsv, cfg)] == ["1", "0"]
    jsonl = tmp_path / "train.jsonl"
    jsonl.write_text(json.dumps({"sentence": "great fun", "y": 1, "other": 5}) + "\n\n"
                     + json.dumps({"sentence": "dull", "y": 0}) + "\n")
    cfg = FinetuneDataConfig(text_column="sentence", label_column="y")
    examples = cd.read_examples(jsonl, cfg)
    assert [(e.text, e.label) for e in examples] == [("great fun", "1"), ("dull", "0")]
    assert cd.label_set(examples) == ("0", "1")
    assert cd.label_set([cd.Example("x", "", label, 1) for label in ("10", "-1", "2")]) == (
        "-1", "2", "10")  # numeric order when every label is an integer


def test_unknown_column_names_the_columns_there_are(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text("sentiment,text\n1,good\n")
    with pytest.raises(DataError, match=r"no column 'label'; the columns are sentiment, text"):
        cd.read_examples(path, FinetuneDataConfig())


def test_bad_files_are_named(tmp_path):
    with pytest.raises(DataError, match="data file not found"):
        cd.read_examples(tmp_path / "missing.csv", FinetuneDataConfig())
    (tmp_path / "data.txt").write_text("x")
    with pytest.raises(DataError, match="cannot tell the format"):
        cd.read_examples(tmp_path / "data.txt", FinetuneDataConfig())
    (tmp_path / "bad.jsonl").write_text('{"text": "a", "label": 1}\nnot json\n')
    with pytest.raises(DataError, match=r"bad.jsonl:2: not a JSON object"):
        cd.read_examples(tmp_path / "bad.jsonl", FinetuneDataConfig())
    (tmp_path / "ragged.csv").write_text("label,text\n1,a,b\n")
    with pytest.raises(DataError, match=r"ragged.csv:2: 3 fields"):
        cd.read_examples(tmp_path / "ragged.csv", FinetuneDataConfig())
    (tmp_path / "empty.csv").write_text("label,text\n")
    with pytest.raises(DataError, match="no examples"):
        cd.read_examples(tmp_path / "empty.csv", FinetuneDataConfig())


def test_empty_texts_are_skipped_and_counted(tmp_path, caplog):
    path = tmp_path / "train.csv"
    path.write_text("label,text\n1,good\n0,\n0,  \n1,fine\n")
    with caplog.at_level(logging.WARNING):
        examples = cd.read_examples(path, FinetuneDataConfig())
    assert [e.text for e in examples] == ["good", "fine"]
    assert "skipped 2 records with an empty text (lines 3, 4)" in caplog.text


def test_split_is_seeded_disjoint_and_sized():
    examples = [cd.Example(str(i), "", "a", i) for i in range(100)]
    train, val, test = cd.split(examples, 0.1, 0.1, seed=3)
    assert (len(train), len(val), len(test)) == (80, 10, 10)
    assert sorted(e.text for e in train + val + test) == sorted(e.text for e in examples)
    assert cd.split(examples, 0.1, 0.1, seed=3)[1] == val
    assert cd.split(examples, 0.1, 0.1, seed=4)[1] != val
    with pytest.raises(DataError, match="too few"):
        cd.split(examples[:2], 0.5, 0.4, seed=0)


def test_encode_pairs_truncation_and_unknown_labels(tokenizer):
    examples = [cd.Example("a gorgeous , witty film", "the best film of the year", "1", 2),
                cd.Example("dull", "tedious", "0", 3)]
    arrays, truncated = cd.encode(tokenizer, examples, ("0", "1"), max_seq_length=8)
    assert truncated == 1
    assert arrays["label"].tolist() == [1, 0]
    pair = tokenizer.encode("dull", "tedious")
    a = len(tokenizer.encode("dull").ids)  # [CLS] dull [SEP]
    n = len(pair.ids)
    assert arrays["input_ids"][1, :n].tolist() == pair.ids
    assert arrays["token_type_ids"][1].tolist() == [0] * a + [1] * (n - a) + [0] * (8 - n)
    assert arrays["attention_mask"].sum(1).tolist() == [8, n]
    assert tokenizer.truncation is None  # left as it was found
    with pytest.raises(DataError, match=r"validation:3: label '0' is not among the training "
                                        r"labels \['1'\]"):
        cd.encode(tokenizer, examples, ("1",), 8, source="validation")
