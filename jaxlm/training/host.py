"""Host-process settings: XLA's persistent compilation cache, and malloc for XLA's CPU backend.

`cache_compilations` keeps compiled programs on disk, so that a rerun, a resumed run or
another seed loads its steps instead of compiling them again (a MiniLM fine-tuning step takes
5-7 s to compile on a 2-core CPU, once per padded batch length).

XLA gets every buffer of a step, its temporary arena included, from the C library's
malloc and frees it when the step ends. glibc serves blocks above 32 MB (a BERT-mini step
has a 78 MB [P, V] block of MLM logits and hundreds of MB of temporaries) with fresh mmaps
and unmaps them on free, so each step page-faults the same memory in again (a quarter of a
BERT-mini step's time on a 2-core CPU, docs/benchmarks.md). Threads
other than the main one allocate from heaps of at most 64 MB, which fall back to mmap too.

`keep_freed_memory` makes glibc keep what it frees and hand it out again. The cost is that
the process never gives memory back to the system: it stays at its peak.
"""

from __future__ import annotations

import ctypes
import importlib.metadata
import importlib.util
import os
import sys

# Where `cache_compilations` keeps compiled programs unless JAX_COMPILATION_CACHE_DIR says.
XLA_CACHE = "~/.cache/jaxlm/xla"
# mallopt parameters from glibc's <malloc.h>.
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8


def cpu_backend_expected() -> bool:
    """True when JAX will compute on the CPU: JAX_PLATFORMS names "cpu" first, or it is
    unset and no accelerator plugin (CUDA, ROCm, TPU) is installed for JAX to find."""
    platforms = os.environ.get("JAX_PLATFORMS", "")
    if platforms:
        return platforms.split(",")[0] == "cpu"
    plugins = list(importlib.metadata.entry_points(group="jax_plugins"))
    return (not plugins and importlib.util.find_spec("jax_plugins") is None
            and importlib.util.find_spec("libtpu") is None)


def cache_compilations() -> str:
    """Turns on JAX's persistent compilation cache in `XLA_CACHE`, or in the directory the
    JAX_COMPILATION_CACHE_DIR environment variable names (a bucket path on a TPU slice).
    Returns the directory in use."""
    import jax

    directory = os.environ.get("JAX_COMPILATION_CACHE_DIR") or os.path.expanduser(XLA_CACHE)
    jax.config.update("jax_compilation_cache_dir", directory)
    return directory


def keep_freed_memory() -> bool:
    """On Linux with glibc, when JAX will run on the CPU: one malloc heap for all threads,
    no mmap for large blocks, and no returning freed memory to the system.

    Call it first thing in a program, before JAX starts its CPU client (the first
    `jax.devices()` or computation): XLA's worker threads choose their heap at their first
    allocation. Returns whether the settings were applied.
    """
    if not sys.platform.startswith("linux") or not cpu_backend_expected():
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    # glibc reads the int as a size_t, so -1 means "never trim".
    settings = ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, -1))
    return all(mallopt(param, value) == 1 for param, value in settings)


# The same settings as glibc reads them from the environment, for a child process.
ENVIRONMENT = {"MALLOC_ARENA_MAX": "1", "MALLOC_MMAP_MAX_": "0",
               "MALLOC_TRIM_THRESHOLD_": str(2**62)}
