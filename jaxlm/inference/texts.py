"""The texts a command-line tool is asked about: its arguments, then a file's lines."""

from __future__ import annotations

from pathlib import Path


def read_texts(texts: list[str], file: str | None) -> list[str]:
    """The texts given as arguments, then the non-empty lines of `file`.

    Raises:
      FileNotFoundError: `file` does not exist.
      ValueError: no text at all.
    """
    texts = list(texts)
    if file:
        path = Path(file)
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found")
        texts += [line for line in path.read_text(encoding="utf-8").splitlines()
                  if line.strip()]
    if not texts:
        raise ValueError("no texts given: pass them as arguments or with --file")
    return texts
