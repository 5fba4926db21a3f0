import subprocess
import sys

import pytest

from jaxlm.training import host

# A fresh process mallocs, writes and frees 200 MB twice, as XLA does a step's buffers;
# the second time page-faults the memory in again unless the first block was kept.
SCRIPT = """
import ctypes, resource, sys
from jaxlm.training import host
applied = host.keep_freed_memory() if sys.argv[1] == "keep" else False
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_void_p]
def touch_and_free(size):
    block = libc.malloc(size)
    ctypes.memset(block, 1, size)
    libc.free(block)
touch_and_free(200_000_000)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
touch_and_free(200_000_000)
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc settings")
@pytest.mark.parametrize("mode", ["keep", "default"])
def test_freed_memory_is_reused_instead_of_faulted_in_again(mode):
    out = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True,
                         check=True, env={"JAX_PLATFORMS": "cpu", "PATH": ""}).stdout.split()
    applied, faults = out[0] == "True", int(out[1])
    pages = 200e6 / 4096
    if mode == "keep":
        assert applied and faults < 0.02 * pages
    else:
        assert faults > 0.5 * pages  # glibc's default: a fresh mmap every time


def test_settings_only_apply_when_jax_will_run_on_the_cpu(monkeypatch):
    monkeypatch.setenv("JAX_PLATFORMS", "cuda,cpu")
    assert not host.cpu_backend_expected() and not host.keep_freed_memory()
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    assert host.cpu_backend_expected()
