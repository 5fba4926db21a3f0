"""What the benchmarks share: the synthetic BERT batch, the timer, jaxlm's train step and its
memory analysis, and the protocol of the reference libraries' child processes (peers)."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
import typing
from pathlib import Path

import jax
import numpy as np

from jaxlm.config import MeshConfig, ModelConfig, TrainConfig
from jaxlm.hf.bert import config_to_hf
from jaxlm.training import host, optim, sharding
from jaxlm.training.state import StateSetup, setup_state
from jaxlm.training.step import make_train_step

ROOT = Path(__file__).resolve().parent.parent  # the repo root, where `benchmarks` imports


@dataclasses.dataclass(frozen=True)
class Batch:
    """One synthetic BERT batch in numpy: B sequences of T tokens, P masked positions."""

    arrays: dict  # the train step's batch keys
    labels_BT: np.ndarray  # Hugging Face's MLM labels: the token at masked positions, else -100


def synthetic_batch(cfg: ModelConfig, B: int, T: int, P: int, seed: int = 0) -> Batch:
    """Random tokens with the last sequence padded by a quarter, P distinct masked positions
    per sequence (never [CLS] at 0), segment B on the second half, random NSP labels."""
    rng = np.random.default_rng(seed)
    ids_BT = rng.integers(5, cfg.vocab_size, (B, T)).astype(np.int32)
    mask_BT = np.ones((B, T), np.int32)
    mask_BT[-1, T - T // 4:] = 0
    types_BT = np.zeros((B, T), np.int32)
    types_BT[:, T // 2:] = 1
    positions_BP = np.sort(np.stack([rng.choice(np.arange(1, T - T // 4), P, replace=False)
                                     for _ in range(B)]), axis=1).astype(np.int32)
    masked_ids_BP = np.take_along_axis(ids_BT, positions_BP, 1)
    labels_BT = np.full((B, T), -100, np.int64)
    np.put_along_axis(labels_BT, positions_BP, masked_ids_BP, 1)
    arrays = dict(input_ids=ids_BT, token_type_ids=types_BT, attention_mask=mask_BT,
                  masked_positions=positions_BP, masked_ids=masked_ids_BP,
                  masked_weights=np.ones((B, P), np.float32),
                  next_sentence_label=rng.integers(0, 2, B).astype(np.int32))
    return Batch(arrays, labels_BT)


def full_vocab(batch: Batch) -> dict:
    """The same loss with MLM logits at all T positions: every position "gathered", weight 1
    at the masked ones and 0 elsewhere."""
    B, T = batch.labels_BT.shape
    masked = batch.labels_BT >= 0
    return {**batch.arrays,
            "masked_positions": np.broadcast_to(np.arange(T, dtype=np.int32), (B, T)).copy(),
            "masked_ids": np.where(masked, batch.labels_BT, 0).astype(np.int32),
            "masked_weights": masked.astype(np.float32)}


def predictions_per_sequence(seq_len: int) -> int:
    """BERT's max predictions per sequence: 20 at T=128, 80 at 512 (15% of T, rounded)."""
    return max(1, round(20 * seq_len / 128))


# Steps run before timing, for every library: not only compilation, since with the malloc
# settings of `host.keep_freed_memory` the heap still grows over the first steps
# (docs/benchmarks.md).
WARMUP_STEPS = 5

Measure = typing.Callable[[int], float]  # steps -> seconds per step, the library warmed up


def timer(step, warmup: int = WARMUP_STEPS, wait=jax.block_until_ready) -> Measure:
    """Warms `step()` up and returns `measure(steps)`: seconds per call, waiting (`wait(out)`)
    for the last call's result only: steps queue up asynchronously, as in train.py's loop
    (JAX's anywhere, PyTorch's on a GPU)."""
    for _ in range(warmup):
        wait(step())

    def measure(steps: int) -> float:
        start = time.perf_counter()
        for _ in range(steps):
            out = step()
        wait(out)
        return (time.perf_counter() - start) / steps

    return measure


BENCH_TRAIN = TrainConfig(steps=1000, warmup_steps=10)  # the optimizer every library gets


def train_step(cfg: ModelConfig, mesh) -> tuple[StateSetup, typing.Callable]:
    """The train state's set-up and the jitted train step for `cfg` on `mesh`."""
    tx = optim.make_optimizer(BENCH_TRAIN)
    setup = setup_state(cfg, 0, tx, mesh)
    return setup, make_train_step(setup, tx, optim.learning_rate_schedule(BENCH_TRAIN), mesh)


def device_bytes(compiled) -> dict | None:
    """XLA's memory analysis of a compiled step, in bytes per device: arguments (state and
    batch), outputs, the outputs that reuse donated arguments, temporaries, and the total
    live at once (arguments + outputs - aliased + temporaries). None where not reported."""
    m = compiled.memory_analysis()
    if m is None:
        return None
    parts = {"arguments": m.argument_size_in_bytes, "outputs": m.output_size_in_bytes,
             "aliased": m.alias_size_in_bytes, "temporaries": m.temp_size_in_bytes}
    parts = {k: int(v) for k, v in parts.items()}
    return {**parts, "total": parts["arguments"] + parts["outputs"] - parts["aliased"]
            + parts["temporaries"]}


def jaxlm_step(cfg: ModelConfig, batch: dict) -> tuple[typing.Callable, dict | None]:
    """A call of the jitted train step on one device with the state donated, as `train.py`
    runs it (returning its metrics, not waiting for them), and the compiled step's memory
    analysis."""
    mesh = sharding.make_mesh(MeshConfig(data=1), devices=jax.devices()[:1])
    setup, step = train_step(cfg, mesh)
    device_batch = sharding.global_batch(batch, mesh)
    holder = {"state": setup.init()}
    memory = device_bytes(step.lower(holder["state"], setup.fixed, device_batch).compile())

    def one():
        holder["state"], out = step(holder["state"], setup.fixed, device_batch)
        return out

    return one, memory


def hf_bert_config(cfg: ModelConfig):
    """`cfg` as a Hugging Face `BertConfig`, for the references."""
    import transformers

    return transformers.BertConfig(**config_to_hf(cfg))


# The peer protocol. A peer is a reference library's process (its heap and threads apart
# from jaxlm's): it warms its library up, answers one JSON line when ready, then for each
# number N written to it times N steps and answers {"step_s": ...}; it exits at the end of
# its input. The torch and flax peers run `serve_peer`; the KerasHub one speaks the same
# lines on its own (benchmarks/peers/keras_hub.py).

StartPeer = typing.Callable[[ModelConfig, Batch], tuple[Measure, dict]]


def start_child(command: list[str], stack: contextlib.ExitStack, env: dict | None,
                what: str, cwd: Path | None = None) -> tuple[Measure, dict]:
    """Starts the peer `command` (in `cwd`) and waits until it is ready; it stays up until
    `stack` closes (the end of its input). `env` adds to its environment.

    Raises:
      ImportError: the peer answered that its library is not installed.
      RuntimeError: the peer died; its stderr is in the message.
    """
    stderr = stack.enter_context(tempfile.TemporaryFile("w+"))
    child_env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # one CPU device
    child = stack.enter_context(subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, text=True,
        env={**child_env, **(env or {})}, cwd=cwd))
    stack.callback(child.stdin.close)  # the child exits at the end of its input

    def answer() -> dict:
        line = child.stdout.readline()
        if not line:
            child.wait()
            stderr.seek(0)
            raise RuntimeError(f"{what} failed:\n{stderr.read()[-3000:]}")
        return json.loads(line)

    ready = answer()
    if "error" in ready:
        raise ImportError(f"{what}: {ready['error']}")

    def measure(steps: int) -> float:
        child.stdin.write(f"{steps}\n")
        child.stdin.flush()
        return answer()["step_s"]

    return measure, ready


def start_peer(name: str, cfg: ModelConfig, batch: Batch, stack: contextlib.ExitStack,
               env: dict | None = None) -> tuple[Measure, dict]:
    """The peer `python -m benchmarks.peers.<name> BATCH.npz SETTINGS` under this Python,
    run as a module from the repo root (never as a script, whose directory would shadow the
    real `torch` and `flax` packages with the peers of those names)."""
    tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
    np.savez(tmp / "batch.npz", labels_BT=batch.labels_BT, **batch.arrays)
    settings = json.dumps(dataclasses.asdict(cfg))
    return start_child([sys.executable, "-m", f"benchmarks.peers.{name}",
                        str(tmp / "batch.npz"), settings], stack, env, f"the {name} peer",
                       cwd=ROOT)


def serve_peer(start: StartPeer, prog: str, argv: list[str] | None = None) -> None:
    """The child side of `start_peer`: JSON lines on stdout, anything else to stderr."""
    host.keep_freed_memory()  # before JAX starts its CPU client, as in the parent
    parser = argparse.ArgumentParser(prog=prog, description="a reference's process, started "
                                     "by `python -m benchmarks.pretrain`")
    parser.add_argument("batch", help="the .npz written by start_peer")
    parser.add_argument("settings", help="the model config as JSON")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    answers, sys.stdout = sys.stdout, sys.stderr

    def say(message: dict) -> None:
        print(json.dumps(message), file=answers, flush=True)

    loaded = np.load(args.batch)
    batch = Batch({k: loaded[k] for k in loaded.files if k != "labels_BT"}, loaded["labels_BT"])
    try:
        measure, info = start(ModelConfig(**json.loads(args.settings)), batch)
    except (ImportError, AttributeError) as e:
        say({"error": f"{type(e).__name__}: {e}"})
        return
    say(info)
    for line in sys.stdin:
        say({"step_s": measure(int(line))})
