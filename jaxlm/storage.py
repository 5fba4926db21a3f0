"""Where a run's files live: a local path or a bucket URL, behind one `epath.Path`.

`run_dir`, `init_from`, `--checkpoint` and `data.tokenizer` may name a Cloud Storage bucket
(`gs://bucket/dir`, or any URL that etils.epath and fsspec understand), as on a TPU VM whose
disk goes away with it. Checkpoints go through Orbax, whose arrays TensorStore writes; the
other files through these helpers, which hide the two ways a bucket differs from a disk:

- an object is written whole: there is no append (gcsfs turns `open("a")` into an
  overwrite), so a growing file such as metrics.jsonl is rewritten whole (`write_whole`);
- there are no directories to create and no locks: `make_dir` checks that the bucket exists
  instead of creating anything (creating a bucket is an administrator's decision).

Readers that need a local file (the tokenizers library, safetensors) get a cached copy
(`local_copy`). gs:// needs gcsfs: `pip install 'jaxlm[gcs]'`.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from etils import epath

CACHE = Path(os.environ.get("JAXLM_CACHE", "~/.cache/jaxlm")).expanduser() / "remote"


class StorageError(OSError):
    """A bucket that cannot be used: missing, unreachable, or no client for its scheme."""


def is_url(location: str | os.PathLike) -> bool:
    """True for `scheme://...` (a bucket), False for a local path."""
    return "://" in os.fspath(location)


def path(location: str | os.PathLike) -> epath.Path:
    """`location` as an epath.Path, local or remote.

    Raises:
      StorageError: a gs:// location without gcsfs installed.
    """
    text = os.fspath(location)
    if text.startswith("gs://"):
        try:
            import gcsfs  # noqa: F401
        except ImportError:
            raise StorageError(f"{text}: reading and writing gs:// needs gcsfs; install it with "
                               f"pip install 'jaxlm[gcs]'") from None
    return epath.Path(text)


def bucket_of(location: epath.Path) -> epath.Path:
    """The bucket root of a URL (`gs://bucket`)."""
    scheme, _, rest = os.fspath(location).partition("://")
    return epath.Path(f"{scheme}://{rest.split('/')[0]}")


def make_dir(location: str | os.PathLike) -> epath.Path:
    """Creates a local directory (with its parents); for a URL, checks its bucket exists.

    Raises:
      StorageError: the bucket does not exist or cannot be reached.
    """
    directory = path(location)
    if not is_url(directory):
        directory.mkdir(parents=True, exist_ok=True)
        return directory
    bucket = bucket_of(directory)
    try:
        found = bucket.exists()
    except Exception as e:  # noqa: BLE001 - whatever the client raised (auth, network)
        raise StorageError(f"{bucket} cannot be reached ({type(e).__name__}: {e})") from e
    if not found:
        raise StorageError(f"{bucket} does not exist or this machine's credentials cannot see "
                           f"it; create the bucket (gcloud storage buckets create {bucket}) "
                           f"or fix the path {directory}")
    return directory


def fingerprint(location: str | os.PathLike) -> list:
    """[absolute name, size, modification time]: what tells a changed input file."""
    if not is_url(location):
        stat = Path(location).stat()
        return [str(Path(location).resolve()), stat.st_size, stat.st_mtime_ns]
    stat = path(location).stat()
    return [os.fspath(location), stat.length, stat.mtime]


def glob(pattern: str) -> list[epath.Path]:
    """The files a URL glob matches (`**` included), sorted."""
    import fsspec

    path(pattern)  # names a missing client
    fs, _ = fsspec.core.url_to_fs(pattern)
    scheme = pattern.split("://")[0]
    return [epath.Path(f"{scheme}://{name}") for name in sorted(fs.glob(pattern))
            if fs.isfile(name)]


def write_whole(target: epath.Path, data: str | bytes) -> None:
    """Writes `target` whole or not at all: a local file through a partial file renamed over
    it (a kill mid-write leaves the old one); an object by one upload, which replaces it
    atomically."""
    write = "write_text" if isinstance(data, str) else "write_bytes"
    if is_url(target):
        getattr(target, write)(data)
        return
    partial = target.with_name(f".{target.name}.partial")
    getattr(partial, write)(data)
    os.replace(partial, target)


def move_dir(source: epath.Path, target: epath.Path) -> None:
    """Moves a directory with everything in it; in a bucket, where a directory is only a
    name prefix, object by object (fsspec's recursive move: copy, then delete)."""
    if not is_url(source):
        shutil.move(source, target)
        return
    import fsspec

    fs, source_path = fsspec.core.url_to_fs(os.fspath(source))
    fs.mv(source_path, fsspec.core.url_to_fs(os.fspath(target))[1], recursive=True)


def copy_file(source: str | os.PathLike, target: str | os.PathLike) -> None:
    """Copies one file between any two locations, local or remote."""
    write_whole(path(target), path(source).read_bytes())


def local_copy(location: str | os.PathLike) -> Path:
    """A local path with the contents of `location`: the path itself when local, else a copy
    of the file, or of the directory's files (not recursive), cached by URL and size.

    Raises:
      FileNotFoundError: nothing at `location`.
    """
    source = path(location)
    if not is_url(source):
        return Path(source)
    if not source.exists():
        raise FileNotFoundError(f"{location} does not exist")
    files = [source] if source.is_file() else [p for p in source.iterdir() if p.is_file()]
    key = hashlib.sha256(os.fspath(source).encode()).hexdigest()[:16]
    local = CACHE / key / source.name
    for file in files:
        copy = local if file == source else local / file.name
        if not copy.exists() or copy.stat().st_size != file.stat().length:
            copy.parent.mkdir(parents=True, exist_ok=True)
            write_whole(epath.Path(copy), file.read_bytes())
    return local


def upload_dir(local: Path, target: epath.Path) -> None:
    """Copies each file of the local directory `local` whose size differs from its copy
    under `target` (TensorBoard's event files, which only grow)."""
    for file in local.iterdir():
        copy = target / file.name
        if file.is_file() and (not copy.exists() or copy.stat().length != file.stat().st_size):
            write_whole(copy, file.read_bytes())


def upload_tree(local: Path, target: epath.Path) -> None:
    """Copies the local directory `local`, subdirectories included, under `target`."""
    for file in sorted(local.rglob("*")):
        if file.is_file():
            write_whole(target / file.relative_to(local).as_posix(), file.read_bytes())
