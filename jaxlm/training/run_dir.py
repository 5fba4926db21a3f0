"""One run at a time per run directory.

`exclusive(run_dir)` holds an advisory lock (`flock`) on `run_dir/.lock` for as long as the
run lives. The kernel drops the lock when the process ends, however it ends (kill -9
included), so a crashed run never leaves the directory locked. The file records who holds it,
for the message a second run gets. Only process 0 of a multi-host job locks: the others write
nothing that a second run could overwrite. `flock` needs a local or NFS filesystem: on a
bucket mounted with gcsfuse it does not exclude other hosts, and a run_dir in a bucket
(gs://) has no lock at all: there, one run per directory is the user's to keep (docs/tpu_vm.md).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import jax

from jaxlm import storage

LOCK_FILE = ".lock"


class RunDirInUse(RuntimeError):
    """Another live run holds the run directory."""


@contextlib.contextmanager
def exclusive(run_dir: str | Path) -> Iterator[None]:
    """Holds `run_dir` for this run (creating it), or raises RunDirInUse naming the holder.

    Raises:
      RunDirInUse: another process holds the lock; nothing in `run_dir` was changed.
      StorageError: `run_dir` is in a bucket that does not exist or cannot be reached.
    """
    if jax.process_index() != 0:
        yield
        return
    if storage.is_url(run_dir):
        storage.make_dir(run_dir)
        yield
        return
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(run_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "unknown"
            raise RunDirInUse(f"{run_dir} is in use by another run ({holder}); wait for it "
                              f"to end or use another run_dir. Nothing was changed.") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}, since "
                      f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock
