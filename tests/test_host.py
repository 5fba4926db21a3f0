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


# A fresh process compiles one program with the cache on and reports whether it was loaded.
CACHE_SCRIPT = """
import jax, jax.numpy as jnp
from jaxlm.training import host
print(host.cache_compilations())
jax.jit(lambda x: jnp.sin(x) @ x.T)(jnp.ones((64, 64))).block_until_ready()
"""


@pytest.mark.parametrize("where", ["default", "environment"])
def test_compiled_programs_are_kept_on_disk_and_loaded_again(where, tmp_path):
    import os

    env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
    env.update(HOME=str(tmp_path), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
               JAX_PLATFORMS="cpu", JAX_LOG_COMPILES="1")
    expected = tmp_path / ".cache" / "jaxlm" / "xla"
    if where == "environment":
        expected = tmp_path / "elsewhere"
        env["JAX_COMPILATION_CACHE_DIR"] = str(expected)
    runs = [subprocess.run([sys.executable, "-c", CACHE_SCRIPT], capture_output=True,
                           text=True, env=env, timeout=120) for _ in range(2)]
    assert [r.stdout.strip() for r in runs] == [str(expected)] * 2, runs[0].stderr
    assert any(expected.iterdir())
    assert "Persistent compilation cache hit" not in runs[0].stderr
    assert "Persistent compilation cache hit" in runs[1].stderr
