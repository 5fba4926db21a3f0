"""The whole pretraining run: meshes agree, accumulation, exact resume, preemption, bad input."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from jaxlm import prepare as prepare_cli
from jaxlm import pretrain
from jaxlm.config import ConfigError, load
from jaxlm.training.loop import NonFiniteError

REPO = Path(__file__).resolve().parent.parent


def _run(overrides, run_dir, *extra):
    """A run in this process, from the same config file `train.py` starts from."""
    return pretrain.run(load(pretrain.DEFAULT_CONFIG, [*overrides, f"run_dir={run_dir}", *extra]))


def _train_losses(run_dir) -> dict[int, float]:
    lines = [json.loads(s) for s in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
    return {d["step"]: d["loss"] for d in lines if "loss" in d}


def _train_py(run_dir, overrides, *extra, env=None, launcher=(), **popen):
    """Starts `python train.py` on 8 fake CPU devices (through `launcher`, a command prefix)."""
    env = {**os.environ, **(env or {})}
    env["XLA_FLAGS"] = env.get("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
    return subprocess.Popen(
        [*launcher, sys.executable, str(REPO / "train.py"), *overrides, f"run_dir={run_dir}",
         *extra],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)


def _wait_for_step(run_dir, step, proc, timeout=180):
    path = Path(run_dir) / "metrics.jsonl"
    deadline = time.time() + timeout
    while time.time() < deadline:
        if path.exists() and max(_train_losses(run_dir), default=0) >= step:
            return
        if proc.poll() is not None:
            raise AssertionError(f"train.py exited early:\n{proc.stdout.read()}")
        time.sleep(0.05)
    raise AssertionError(f"no step {step} after {timeout}s")


@pytest.fixture(scope="module")
def one_device_losses(run_overrides, tmp_path_factory):
    """The first 5 losses of the tiny run on the first device alone."""
    run_dir = tmp_path_factory.mktemp("one_device")
    env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
    proc = _train_py(run_dir, run_overrides, "mesh.data=1", env=env)
    assert proc.wait(300) == 0, proc.stdout.read()
    losses = [_train_losses(run_dir)[s] for s in range(1, 6)]
    assert losses[-1] < losses[0]
    return losses


# 2x2x2 splits over all three axes at once; the single-axis meshes are slow (45 s each).
@pytest.mark.parametrize("mesh", [
    ["mesh.data=2", "mesh.fsdp=2", "mesh.tensor=2"],
    pytest.param(["mesh.data=8"], marks=pytest.mark.slow),
    pytest.param(["mesh.data=1", "mesh.fsdp=8"], marks=pytest.mark.slow)])
def test_meshes_agree_with_one_device(mesh, one_device_losses, run_overrides, tmp_path):
    """Data parallel, FSDP and tensor parallel: the same first 5 losses as one device."""
    _run(run_overrides, tmp_path, *mesh)
    losses = [_train_losses(tmp_path)[s] for s in range(1, 6)]
    np.testing.assert_allclose(losses, one_device_losses, atol=1e-5)


KINDS = {"gpt": ["model.kind=gpt", "model.activation=gelu_tanh", "model.layer_norm_eps=1e-5"],
         "encoder_decoder": ["model.kind=encoder_decoder", "model.position_embedding=sinusoidal"]}


# The encoder-decoder variant takes 90 s: slow; GPT covers the shared path by default.
@pytest.mark.parametrize("kind", [
    "gpt", pytest.param("encoder_decoder", marks=pytest.mark.slow)])
def test_gpt_and_encoder_decoder_train_through_the_same_run_on_any_mesh(run_overrides, tmp_path,
                                                                        kind):
    """model.kind=gpt (packed next-token windows) and encoder_decoder (T5 span corruption):
    the same loop, the same loss on one device as on a 2x2x2 mesh."""
    env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
    proc = _train_py(tmp_path / "one", run_overrides, *KINDS[kind], "mesh.data=1", env=env)
    assert proc.wait(300) == 0, proc.stdout.read()
    summary = _run(run_overrides, tmp_path / "2x2x2", *KINDS[kind], "mesh.data=2",
                   "mesh.fsdp=2", "mesh.tensor=2", "train.eval_every=5")
    one, sharded = _train_losses(tmp_path / "one"), _train_losses(tmp_path / "2x2x2")
    np.testing.assert_allclose([sharded[s] for s in range(1, 6)], [one[s] for s in range(1, 6)],
                               atol=1e-5)
    assert one[5] < one[1]
    assert set(summary["eval"]) == {"eval_loss", "eval_lm_loss", "eval_lm_accuracy",
                                    "eval_perplexity"}
    assert np.isclose(summary["eval"]["eval_perplexity"], np.exp(summary["eval"]["eval_lm_loss"]),
                      rtol=1e-5)


def test_grad_accumulation_equals_big_batch(run_overrides, tmp_path):
    no_dropout = ["model.hidden_dropout=0", "model.attention_dropout=0", "train.batch_size=32",
                  "train.steps=3"]
    _run(run_overrides, tmp_path / "big", *no_dropout)
    _run(run_overrides, tmp_path / "accum", *no_dropout, "train.grad_accum_steps=4")
    big, accum = _train_losses(tmp_path / "big"), _train_losses(tmp_path / "accum")
    np.testing.assert_allclose([accum[s] for s in (1, 2, 3)], [big[s] for s in (1, 2, 3)],
                               atol=1e-5)


@pytest.mark.slow  # tests/test_faults.py kills at random points, mid-save included
def test_kill_and_rerun_resumes_bitwise(run_overrides, tmp_path):
    """kill -9 between checkpoints, re-run the same command: the losses of an unbroken run."""
    args = ["train.steps=12", "train.checkpoint_every=4"]
    whole = _train_py(tmp_path / "whole", run_overrides, *args)
    assert whole.wait(300) == 0, whole.stdout.read()

    cut = _train_py(tmp_path / "cut", run_overrides, *args)
    _wait_for_step(tmp_path / "cut", 6, cut)
    cut.send_signal(signal.SIGKILL)
    cut.wait()
    assert (tmp_path / "cut" / "checkpoints" / "4").is_dir()
    again = _train_py(tmp_path / "cut", run_overrides, *args)
    out = again.communicate(timeout=300)[0]
    assert again.returncode == 0, out
    assert "resuming at step" in out
    assert _train_losses(tmp_path / "cut") == _train_losses(tmp_path / "whole")


def test_sigterm_saves_and_exits_cleanly(run_overrides, tmp_path):
    proc = _train_py(tmp_path, run_overrides, "train.steps=100000")
    _wait_for_step(tmp_path, 3, proc)
    proc.send_signal(signal.SIGTERM)
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode == 0, out
    last = max(_train_losses(tmp_path))
    saved = [int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit()]
    assert saved == [last], out


def test_nonfinite_steps_stop_the_run_and_keep_the_checkpoint(run_overrides, tmp_path):
    """A learning rate of 1e30 blows the weights up after the first update: every later
    step is skipped, and after 3 in a row the run stops without writing a checkpoint."""
    _run(run_overrides, tmp_path, "train.steps=2", "train.checkpoint_every=2")
    before = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    with pytest.raises(NonFiniteError, match="3 consecutive steps"):
        _run(run_overrides, tmp_path, "train.steps=20", "train.learning_rate=1e30",
             "train.warmup_steps=0", "train.max_nonfinite_steps=3")
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == before
    lines = [json.loads(s) for s in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert lines[-1]["skipped_steps"] == 3


def test_bad_input_is_named_and_deletes_nothing(run_overrides, tmp_path):
    _run(run_overrides, tmp_path, "train.steps=2", "train.checkpoint_every=2")
    checkpoint = tmp_path / "checkpoints" / "2"
    files = sorted(checkpoint.rglob("*"))
    with pytest.raises(ConfigError, match="holds a different model.*model.hidden_size: "
                                          "saved 32, now 64"):
        _run(run_overrides, tmp_path, "train.steps=4", "model.hidden_size=64")
    with pytest.raises(ConfigError, match="not divisible by the data-parallel size"):
        _run(run_overrides, tmp_path, "train.steps=4", "train.batch_size=12",
             "mesh.data=8")
    with pytest.raises(ConfigError, match="data=3 x fsdp=1 x tensor=1 = 3 devices, but 8"):
        _run(run_overrides, tmp_path, "train.steps=4", "mesh.data=3")
    with pytest.raises(ConfigError, match="train.stpes"):
        _run(run_overrides, tmp_path, "train.stpes=4")
    assert sorted(checkpoint.rglob("*")) == files


def test_train_py_reports_errors_without_a_traceback(run_overrides, tmp_path):
    proc = _train_py(tmp_path, run_overrides, "model.num_heads=5")
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode == 1
    assert "model.hidden_size: 32 is not divisible by model.num_heads=5" in out, out
    assert "Traceback" not in out


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _two_hosts(run_dir, overrides, *extra):
    """Two `train.py` processes with 4 CPU devices each, joined by jax.distributed (gloo)."""
    port = _free_port()
    return [
        _train_py(run_dir, overrides, "mesh.distributed=true", *extra, env={
            "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
            "JAX_COORDINATOR_ADDRESS": f"localhost:{port}", "JAX_NUM_PROCESSES": "2",
            "JAX_PROCESS_ID": str(i)})
        for i in range(2)
    ]


def _stop_after(run_dir, step, hosts) -> int:
    """SIGTERM to every process once `step` is logged; the step they saved and stopped at."""
    _wait_for_step(run_dir, step, hosts[0])
    for proc in hosts:
        proc.send_signal(signal.SIGTERM)
    for proc in hosts:
        out = proc.communicate(timeout=120)[0]
        assert proc.returncode == 0, out
    return max(int(p.name) for p in (run_dir / "checkpoints").iterdir() if p.name.isdigit())


@pytest.mark.slow  # about 4 minutes on 2 cores: four runs, two of them with two processes
def test_two_processes_on_bucket_shards_resume_together_and_on_one(run_overrides, bucket,
                                                                    tmp_path):
    """Two processes read their halves of every batch from ArrayRecord shards in a bucket
    (the Beam preparation); preempted (SIGTERM to both), the run continues on one process,
    preempted again, then on two: every loss equals one 8-device process's on the local
    path's data."""
    args = ["train.steps=120", "train.checkpoint_every=1000"]
    _run(run_overrides, tmp_path / "single", *args)
    in_bucket = [*run_overrides, f"data.output_dir={bucket}/prepared"]
    prepare_cli.main([*in_bucket, "--runner", "DirectRunner"])

    run_dir = tmp_path / "multi"
    first = _stop_after(run_dir, 4, _two_hosts(run_dir, in_bucket, *args))
    second = _stop_after(run_dir, first + 4, [_train_py(run_dir, in_bucket, *args)])
    assert first < second < 120
    hosts = _two_hosts(run_dir, in_bucket, *args)
    outs = [proc.communicate(timeout=300)[0] for proc in hosts]
    assert all(proc.returncode == 0 for proc in hosts), outs
    assert f"resuming at step {second}" in outs[0]
    assert "was saved by 1 processes; 2 continue its data order" in outs[0]
    single, multi = _train_losses(tmp_path / "single"), _train_losses(run_dir)
    assert sorted(multi) == sorted(single) == list(range(1, 121))
    np.testing.assert_allclose([multi[s] for s in single], list(single.values()), atol=1e-5)


@pytest.mark.slow  # a minute; tests/test_bert.py checks bf16 numerics of the model itself
def test_bfloat16_compute_trains_close_to_float32(run_overrides, tmp_path):
    _run(run_overrides, tmp_path / "f32", "train.steps=3")
    _run(run_overrides, tmp_path / "bf16", "train.steps=3", "model.dtype=bfloat16")
    f32, bf16 = _train_losses(tmp_path / "f32"), _train_losses(tmp_path / "bf16")
    np.testing.assert_allclose([bf16[s] for s in (1, 2, 3)], [f32[s] for s in (1, 2, 3)],
                               rtol=2e-2)
