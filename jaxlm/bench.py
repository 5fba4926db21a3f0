"""Benchmarks: `python -m jaxlm.bench pretrain|memory|loop|data ...`, references in the same run.

    python -m jaxlm.bench pretrain --config configs/bert_mini.yaml --batch-size 32 \\
        --seq-len 128 --steps 20 --compare torch,flax,keras_hub [--keras-python PY]
    XLA_FLAGS=--xla_force_host_platform_device_count=8 python -m jaxlm.bench memory \\
        --config configs/bert_large.yaml --batch-size 8 --seq-len 512 --meshes data=8 fsdp=8
    python -m jaxlm.bench loop --config configs/bert_tiny.yaml
    python -m jaxlm.bench data --config configs/bert_tiny.yaml

`pretrain` times one optimizer step of BERT pretraining (MLM + NSP, AdamW, clipping,
dropout as configured) on the same synthetic batch for every library, in interleaved rounds
(each library's median over the rounds counts): jaxlm's real train
step (`jaxlm.trainer.make_train_step`) and, when installed, Hugging Face's PyTorch
`BertForPreTraining` (with torch's AdamW), Flax `FlaxBertForPreTraining` (transformers < 5,
with an optax step under `jax.jit`) and KerasHub's `BertMaskedLM` on the JAX backend (MLM
only; `jaxlm/bench_keras.py`, under `--keras-python` when KerasHub lives in another venv).
Each reference runs in a process of its own (heap and threads apart from jaxlm's), idle
while another library is timed. A missing reference is skipped with a note.

FLOPs are the model's matmul FLOPs as configured (`tasks.bert_train_flops`: forward
x 3 for forward + backward), for jaxlm with the MLM head on the P gathered positions, and
with `--full-vocab` on all T positions as Hugging Face computes it. MFU divides FLOP/s by
the float32 matmul peak measured in the same process (`metrics.measure_cpu_peak`) on a
CPU, or by the datasheet peak on an accelerator. The matmul floor (`matmul_floor`) times
the step's matmul shapes alone: how close the step comes to what these shapes allow. The last
line printed is one JSON object with every figure and the ratios jaxlm/<reference>.

`memory` compiles the train step on each mesh and reports XLA's bytes per device (nothing
is allocated); `loop` runs `train.py`'s loop and compares its tokens/s with the bare step's.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import typing
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxlm import data, hf, host, metrics, optim, sharding, tasks, trainer
from jaxlm.config import MeshConfig, ModelConfig, TrainConfig, load
from jaxlm.pretrain import resolve_model
from jaxlm.pretrain import run as run_pretraining


@dataclasses.dataclass(frozen=True)
class Batch:
    """One synthetic BERT batch in numpy: B sequences of T tokens, P masked positions."""

    arrays: dict  # the trainer's batch keys
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


# Steps run before timing, for every library. Not only compilation: with the malloc settings
# of `host.keep_freed_memory` the heap still grows over the first steps (BERT-mini with
# logits at every position faulted in 0.4-0.65M pages in each of steps 1, 2 and 4, taking up
# to 5.6 s against 2.5 s once the heap held the step).
WARMUP_STEPS = 5

Measure = typing.Callable[[int], float]  # steps -> seconds per step, the library warmed up


def _timer(step, warmup: int = WARMUP_STEPS, wait=jax.block_until_ready) -> Measure:
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


def train_step(cfg: ModelConfig, mesh) -> tuple[trainer.StateSetup, typing.Callable]:
    """The trainer's state set-up and jitted step for `cfg` on `mesh`."""
    tx = optim.make_optimizer(BENCH_TRAIN)
    setup = trainer.setup_state(cfg, 0, tx, mesh)
    return setup, trainer.make_train_step(setup, tx, optim.learning_rate_schedule(BENCH_TRAIN),
                                          mesh)


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
    """A call of the trainer's jitted step on one device with the state donated, as
    `train.py` runs it (returning its metrics, not waiting for them), and the compiled
    step's memory analysis."""
    mesh = sharding.make_mesh(MeshConfig(data=1), devices=jax.devices()[:1])
    setup, step = train_step(cfg, mesh)
    device_batch = sharding.global_batch(batch, mesh)
    holder = {"state": setup.init()}
    memory = device_bytes(step.lower(holder["state"], setup.fixed, device_batch).compile())

    def one():
        holder["state"], out = step(holder["state"], setup.fixed, device_batch)
        return out

    return one, memory


def start_jaxlm(cfg: ModelConfig, batch: dict) -> tuple[Measure, dict]:
    one, memory = jaxlm_step(cfg, batch)
    return _timer(one), {"peak_bytes": memory and memory["total"]}


def _hf_config(cfg: ModelConfig):
    import transformers

    return transformers.BertConfig(**hf.config_to_hf(cfg))


def start_torch(cfg: ModelConfig, batch: Batch) -> tuple[Measure, dict]:
    """Hugging Face PyTorch BertForPreTraining + torch AdamW, train mode, eager, on the GPU
    when there is one; under bfloat16 autocast (AMP) when model.dtype is bfloat16."""
    import torch
    import transformers

    device = "cuda" if torch.cuda.is_available() else "cpu"
    amp = cfg.dtype == "bfloat16"
    torch.manual_seed(0)
    model = transformers.BertForPreTraining(_hf_config(cfg)).to(device)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.999), eps=1e-6,
                            weight_decay=0.01)
    a = batch.arrays
    inputs = dict(input_ids=a["input_ids"], token_type_ids=a["token_type_ids"],
                  attention_mask=a["attention_mask"], labels=batch.labels_BT,
                  next_sentence_label=a["next_sentence_label"])
    inputs = {k: torch.from_numpy(v).long().to(device) for k, v in inputs.items()}

    def one():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device, dtype=torch.bfloat16, enabled=amp):
            loss = model(**inputs).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    def wait(_):
        if device == "cuda":
            torch.cuda.synchronize()

    return _timer(one, wait=wait), {"threads": torch.get_num_threads(), "device": device,
                                    "amp": amp}


def start_flax(cfg: ModelConfig, batch: Batch) -> tuple[Measure, dict]:
    """Hugging Face FlaxBertForPreTraining (transformers < 5) with an optax AdamW step."""
    import optax
    import transformers

    model = transformers.FlaxBertForPreTraining(_hf_config(cfg), seed=0)
    tx = optax.chain(optax.clip_by_global_norm(1.0),
                     optax.adamw(1e-4, b1=0.9, b2=0.999, eps=1e-6, weight_decay=0.01))
    a = batch.arrays
    labels = batch.labels_BT

    def loss_fn(params, key):
        out = model(a["input_ids"], a["attention_mask"], a["token_type_ids"], params=params,
                    dropout_rng=key, train=True)
        logits = out.prediction_logits.astype(np.float32)
        valid = labels >= 0
        xent = optax.softmax_cross_entropy_with_integer_labels(logits, np.maximum(labels, 0))
        mlm = (xent * valid).sum() / valid.sum()
        nsp = optax.softmax_cross_entropy_with_integer_labels(
            out.seq_relationship_logits, a["next_sentence_label"]).mean()
        return mlm + nsp

    @jax.jit
    def step(params, opt_state, key):
        grads = jax.grad(loss_fn)(params, key)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    holder = {"params": model.params, "opt": tx.init(model.params)}
    key = jax.random.key(0)

    def one():
        holder["params"], holder["opt"] = step(holder["params"], holder["opt"], key)
        jax.block_until_ready(holder["params"])

    return _timer(one), {}


IN_PROCESS = {"torch": start_torch, "flax": start_flax}  # run by a `peer` child process
REFERENCES = (*IN_PROCESS, "keras_hub")


def start_child(command: list[str], stack: contextlib.ExitStack, env: dict | None,
                what: str) -> tuple[Measure, dict]:
    """Starts a peer process that warms its library up, answers one JSON line when ready,
    then for each number N written to it times N steps and answers {"step_s": ...}. It
    stays up until `stack` closes (the end of its input).

    Raises:
      ImportError: the peer answered that its library is not installed.
      RuntimeError: the peer died; its stderr is in the message.
    """
    stderr = stack.enter_context(tempfile.TemporaryFile("w+"))
    child_env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # one CPU device
    child = stack.enter_context(subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, text=True,
        env={**child_env, **(env or {})}))
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
    """The reference `name` of IN_PROCESS in a child process of this Python (its own heap
    and threads, as the KerasHub peer has), serving `python -m jaxlm.bench peer`."""
    tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
    np.savez(tmp / "batch.npz", labels_BT=batch.labels_BT, **batch.arrays)
    settings = json.dumps(dataclasses.asdict(cfg))
    return start_child([sys.executable, "-m", "jaxlm.bench", "peer", name,
                        str(tmp / "batch.npz"), settings], stack, env, f"the {name} peer")


def serve_peer(name: str, batch_path: str, settings: str) -> None:
    """The child side of `start_peer`: JSON lines on stdout, anything else to stderr."""
    answers, sys.stdout = sys.stdout, sys.stderr

    def say(message: dict) -> None:
        print(json.dumps(message), file=answers, flush=True)

    loaded = np.load(batch_path)
    batch = Batch({k: loaded[k] for k in loaded.files if k != "labels_BT"}, loaded["labels_BT"])
    try:
        measure, info = IN_PROCESS[name](ModelConfig(**json.loads(settings)), batch)
    except (ImportError, AttributeError) as e:
        say({"error": f"{type(e).__name__}: {e}"})
        return
    say(info)
    for line in sys.stdin:
        say({"step_s": measure(int(line))})


def start_keras_hub(cfg: ModelConfig, batch: Batch, stack: contextlib.ExitStack,
                    python: str = sys.executable, env: dict | None = None
                    ) -> tuple[Measure, dict]:
    """KerasHub's BertMaskedLM (JAX backend), MLM only, run by `jaxlm/bench_keras.py` in a
    child process under `python` on the same batch; `env` adds to its environment.

    Raises:
      ImportError: `python` has no keras-hub.
    """
    tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
    np.savez(tmp / "batch.npz", **batch.arrays)
    settings = json.dumps({**dataclasses.asdict(cfg), "warmup": WARMUP_STEPS})
    return start_child([python, str(Path(__file__).with_name("bench_keras.py")),
                        str(tmp / "batch.npz"), settings], stack, env,
                       f"the KerasHub peer ({python})")


def predictions_per_sequence(seq_len: int) -> int:
    """BERT's max predictions per sequence: 20 at T=128, 80 at 512 (15% of T, rounded)."""
    return max(1, round(20 * seq_len / 128))


def pretrain(cfg: ModelConfig, *, batch_size: int, seq_len: int, steps: int, rounds: int = 3,
             compare: tuple[str, ...] = (), full_vocab_logits: bool = False,
             keras_python: str = sys.executable, peer_env: dict | None = None) -> dict:
    """Times jaxlm and the references on one batch; returns every figure and the ratios.

    Every library is compiled and warmed up first; then each round times `steps` steps of
    each library in turn, so that all of them see the same stretch of a shared machine.
    A library's step time is its median over `rounds` rounds, after one more that settles
    the shared heap.

    Args:
      keras_python: the Python that runs the KerasHub peer.
      peer_env: environment for the peer (the malloc settings this process runs under).
    """
    if seq_len > cfg.max_position_embeddings:
        raise ValueError(f"--seq-len {seq_len} exceeds model.max_position_embeddings="
                         f"{cfg.max_position_embeddings}")
    if cfg.qk_norm and compare:
        raise ValueError("model.qk_norm=true: the references have no QK-norm, so they would "
                         "not run the same model; pass model.qk_norm=false to compare")
    P = predictions_per_sequence(seq_len)
    batch = synthetic_batch(cfg, batch_size, seq_len, P)
    arrays = full_vocab(batch) if full_vocab_logits else batch.arrays
    predictions = seq_len if full_vocab_logits else P
    flops = tasks.bert_train_flops(cfg, batch_size, seq_len, predictions)
    on_cpu = jax.devices()[0].platform == "cpu"  # fake CPU devices share one host's cores
    tokens = batch_size * seq_len
    references = {name: functools.partial(start_peer, name, env=peer_env) for name in IN_PROCESS}
    references["keras_hub"] = functools.partial(start_keras_hub, python=keras_python,
                                                env=peer_env)
    notes, peaks = {}, []
    with contextlib.ExitStack() as stack:
        started = {"jaxlm": start_jaxlm(cfg, arrays)}
        for name in compare:
            try:
                started[name] = references[name](cfg, batch, stack)
            except (ImportError, AttributeError) as e:
                notes[name] = f"skipped: {type(e).__name__}: {e}"
        rounds_s = {name: [] for name in started}
        for _ in range(rounds + 1):
            for name, (measure, _) in started.items():
                rounds_s[name].append(measure(steps))
                if name == "jaxlm":
                    # The matmul peak, right after jaxlm's steps, the best round's: on a shared
                    # machine the best of repeated short matmuls is what the cores can do.
                    peaks.append(metrics.measure_cpu_peak() if on_cpu
                                 else metrics.peak_flops() / jax.device_count())
    peak = max(peaks)
    results = {}
    # Round 0 is not counted, more warm-up: with logits at every position jaxlm's heap still
    # grew after its warm-up steps (BERT-mini --full-vocab, measured while PyTorch still ran
    # in this process: rounds of 3.8, 3.1, 2.1, 2.2 s; PyTorch steady at 2.1 s).
    rounds_s = {name: times[1:] for name, times in rounds_s.items()}
    for name, (_, info) in started.items():
        step_s = statistics.median(rounds_s[name])
        results[name] = {**info, "step_s": step_s, "rounds_s": rounds_s[name],
                         "tokens_per_s": tokens / step_s}
    jaxlm = results["jaxlm"]
    jaxlm["mfu"] = flops / jaxlm["step_s"] / peak
    floor_s = matmul_floor(cfg, batch_size, seq_len, predictions)["seconds"]
    jaxlm["matmul_floor_s"], jaxlm["step/floor"] = floor_s, jaxlm["step_s"] / floor_s
    jaxlm["floor_mfu"] = flops / floor_s / peak
    return {
        "config": dataclasses.asdict(cfg), "batch_size": batch_size, "seq_len": seq_len,
        "masked_positions": P, "full_vocab": full_vocab_logits, "steps": steps,
        "rounds": rounds, "device": jax.devices()[0].device_kind, "peak_flops": peak,
        "train_flops": flops, "results": results, "notes": notes,
        "ratios": {f"jaxlm/{k}": jaxlm["tokens_per_s"] / v["tokens_per_s"]
                   for k, v in results.items() if k != "jaxlm"},
    }


def matmul_floor(cfg: ModelConfig, batch_size: int, seq_len: int, predictions: int,
                 repeats: int = 3) -> dict:
    """The step's matmuls alone: each matmul shape of BertForPreTraining (the forward product
    and the two of its backward) timed on its own, best of `repeats`, times how often a step
    runs it. A step doing nothing else would take `seconds`: FLOPs / seconds / peak is the
    best MFU these shapes allow on this machine. `flops` re-derives
    `tasks.bert_train_flops` from the shapes."""
    B, T, D, F, L = (batch_size, seq_len, cfg.hidden_size, cfg.intermediate_size,
                     cfg.num_layers)
    N, M, heads = B * T, B * predictions, cfg.num_heads
    shapes = [  # (batch, m, k, n, products of this shape per forward)
        (1, N, D, D, 4 * L), (1, N, D, F, L), (1, N, F, D, L),  # Q, K, V, output; MLP
        (B * heads, T, D // heads, T, L), (B * heads, T, T, D // heads, L),  # scores, mix
        (1, M, D, D, 1), (1, M, D, cfg.vocab_size, 1),  # MLM transform, tied output
        (1, B, D, D, 1), (1, B, D, 2, 1)]  # pooler, NSP
    forward = jax.jit(lambda x, w: x @ w)
    grad_x = jax.jit(lambda g, w: g @ jnp.swapaxes(w, -1, -2))
    grad_w = jax.jit(lambda x, g: jnp.swapaxes(x, -1, -2) @ g)
    seconds = flops = 0.0
    for b, m, k, n, count in shapes:
        lead = (b,) if b > 1 else ()
        x, w, g = (jnp.ones((*lead, *s), cfg.dtype) for s in ((m, k), (k, n), (m, n)))
        for fn, args in ((forward, (x, w)), (grad_x, (g, w)), (grad_w, (x, g))):
            best = _timer(lambda fn=fn, args=args: fn(*args), warmup=1)
            seconds += count * min(best(1) for _ in range(repeats))
        flops += count * 3 * 2 * b * m * k * n
    return {"seconds": seconds, "flops": flops}


def parse_mesh(spec: str) -> MeshConfig:
    """"data=8" or "data=2,fsdp=2,tensor=2" -> MeshConfig (axes not named keep defaults)."""
    try:
        sizes = {k: int(v) for k, v in (part.split("=") for part in spec.split(","))}
        return MeshConfig(**sizes)
    except (ValueError, TypeError) as e:
        raise ValueError(f"--meshes: cannot read {spec!r} as axis=size[,axis=size]: {e}") from e


def memory(cfg: ModelConfig, *, batch_size: int, seq_len: int, meshes: list[str]) -> dict:
    """Bytes per device of the compiled train step (AdamW state, batch, activations) on each
    mesh, from XLA's memory analysis: the step is compiled for the abstract state, nothing
    is allocated, so a model far too large for this machine can be measured."""
    batch = synthetic_batch(cfg, batch_size, seq_len, predictions_per_sequence(seq_len)).arrays
    report = {"config": dataclasses.asdict(cfg), "batch_size": batch_size, "seq_len": seq_len,
              "devices": jax.device_count(), "meshes": {}}
    parsed = {spec: parse_mesh(spec) for spec in meshes}  # every typo before any compile
    for spec, mesh_cfg in parsed.items():
        mesh = sharding.make_mesh(mesh_cfg)
        sharding.check_batch_size(batch_size, 1, mesh)
        setup, step = train_step(cfg, mesh)
        on_mesh = sharding.batch_sharding(mesh)
        abstract_batch = {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=on_mesh)
                          for k, v in batch.items()}
        compiled = step.lower(setup.abstract, setup.fixed, abstract_batch).compile()
        report["meshes"][spec] = device_bytes(compiled)
    return report


def loop(config: str, overrides: list[str], steps: int, chunks: int = 5) -> dict:
    """tokens/s of `train.py`'s loop (Grain loader, host-to-device copies, metrics, progress
    bar; no evaluation, one checkpoint at the end) against the bare step on one of its
    batches, both after compilation, in this process.

    The loop's figure is the median of its logged `tokens_per_s`, each over `log_every`
    steps. The bare step's is the median over `chunks` runs of `log_every` steps before the
    loop and `chunks` after it, so that both see the same (shared, noisy) machine. The bare
    step runs on one device, as the loop does on a single-CPU machine.
    """
    with tempfile.TemporaryDirectory() as run_dir:
        cfg = load(config, [*overrides, f"run_dir={run_dir}", f"train.steps={steps}",
                            "train.eval_every=0", f"train.checkpoint_every={steps}"])
        prepared = data.prepare(cfg.data, seed=cfg.train.seed)  # the run finds it prepared
        batch = next(iter(data.make_loader(prepared, "train", cfg.train.batch_size,
                                           seed=cfg.train.seed, shuffle=True, num_epochs=None)))
        bare = _timer(jaxlm_step(resolve_model(cfg, prepared).model, batch)[0])
        per_chunk = cfg.train.log_every
        bare_s = [bare(per_chunk) for _ in range(chunks)]
        run_pretraining(cfg)
        bare_s += [bare(per_chunk) for _ in range(chunks)]
        lines = [json.loads(line) for line in open(Path(run_dir) / "metrics.jsonl")]
    loop_tokens_s = statistics.median(line["tokens_per_s"] for line in lines
                                      if "tokens_per_s" in line)
    bare_tokens_s = cfg.train.batch_size * prepared.max_seq_length / statistics.median(bare_s)
    return {"config": config, "overrides": overrides, "steps": steps,
            "loop_tokens_per_s": loop_tokens_s, "bare_step_tokens_per_s": bare_tokens_s,
            "loop/bare": loop_tokens_s / bare_tokens_s}


def data_throughput(cfg, batch_size: int, batches: int) -> dict:
    """Batches per second the Grain loader reads from the prepared data in one process,
    to set against the train step rate: the loader must never be the bottleneck."""
    prepared = data.prepare(cfg.data, seed=cfg.train.seed)
    rate = data.loader_throughput(prepared, batch_size, batches)
    return {"batches_per_s": rate, "tokens_per_s": rate * batch_size * prepared.max_seq_length,
            "batch_size": batch_size, "seq_len": prepared.max_seq_length}


def table(report: dict) -> str:
    rows = [f"{'library':<9} {'step ms':>9} {'rounds ms':>13} {'tokens/s':>10} {'MFU':>6}"]
    for name, r in report["results"].items():
        mfu = f"{r['mfu']:.2f}" if "mfu" in r else ""
        spread = f"{1e3 * min(r['rounds_s']):.0f}-{1e3 * max(r['rounds_s']):.0f}"
        rows.append(f"{name:<9} {1e3 * r['step_s']:>9.1f} {spread:>13} "
                    f"{r['tokens_per_s']:>10.0f} {mfu:>6}")
    j = report["results"]["jaxlm"]
    rows.append(f"matmul floor {1e3 * j['matmul_floor_s']:.0f} ms (the step's matmul shapes "
                f"alone, MFU {j['floor_mfu']:.2f}); jaxlm step / floor {j['step/floor']:.2f}")
    rows += [f"{k}: {v:.2f}x" for k, v in report["ratios"].items()]
    rows += [f"{k}: {v}" for k, v in report["notes"].items()]
    return "\n".join(rows)


def memory_table(report: dict) -> str:
    rows = [f"{'mesh':<24} {'arguments':>10} {'temporaries':>12} {'total':>10}  (MiB/device)"]
    for spec, m in report["meshes"].items():
        if m is None:
            rows.append(f"{spec:<24} (no memory analysis on this backend)")
            continue
        rows.append(f"{spec:<24} {m['arguments'] / 2**20:>10.0f} {m['temporaries'] / 2**20:>12.0f}"
                    f" {m['total'] / 2**20:>10.0f}")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    applied = host.keep_freed_memory()  # before JAX starts its CPU client
    parser = argparse.ArgumentParser(prog="python -m jaxlm.bench")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pretrain", help="train-step throughput vs Hugging Face and KerasHub")
    p.add_argument("--config", default="configs/bert_mini.yaml")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--steps", type=int, default=20, help="timed steps per library and round")
    p.add_argument("--rounds", type=int, default=3,
                   help="rounds of every library in turn; each library's median counts")
    p.add_argument("--compare", default="torch,flax",
                   help=f"comma-separated, from: {', '.join(REFERENCES)}")
    p.add_argument("--keras-python", default=sys.executable,
                   help="the Python of a venv with keras-hub (default: this one)")
    p.add_argument("--full-vocab", action="store_true",
                   help="MLM logits at every position, as Hugging Face computes them")
    m = sub.add_parser("memory", help="compiled train-step bytes per device on each mesh")
    m.add_argument("--config", default="configs/bert_large.yaml")
    m.add_argument("--batch-size", type=int, default=8)
    m.add_argument("--seq-len", type=int, default=512)
    m.add_argument("--meshes", nargs="+", default=["data=8", "fsdp=8"], metavar="AXIS=N,...")
    lp = sub.add_parser("loop", help="train.py's loop tokens/s vs the bare step")
    lp.add_argument("--config", default="configs/bert_tiny.yaml")
    lp.add_argument("--steps", type=int, default=1000)
    d = sub.add_parser("data", help="loader batches/s on one core")
    d.add_argument("--config", default="configs/bert_tiny.yaml")
    d.add_argument("--batch-size", type=int, default=32)
    d.add_argument("--batches", type=int, default=200)
    for command in (p, m, lp, d):
        command.add_argument("overrides", nargs="*", metavar="key.sub=value")
    peer = sub.add_parser("peer", help="a reference's process, started by `pretrain`")
    peer.add_argument("name", choices=sorted(IN_PROCESS))
    peer.add_argument("batch")
    peer.add_argument("settings")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.command == "peer":
        serve_peer(args.name, args.batch, args.settings)
        return 0
    if args.command == "data":
        report = data_throughput(load(args.config, args.overrides), args.batch_size,
                                 args.batches)
        print(f"loader: {report['batches_per_s']:.0f} batches/s of {args.batch_size} "
              f"({report['tokens_per_s']:.0f} tokens/s) on one process")
    elif args.command == "loop":
        report = loop(args.config, args.overrides, args.steps)
        print(f"train.py loop: {report['loop_tokens_per_s']:.0f} tokens/s, bare step: "
              f"{report['bare_step_tokens_per_s']:.0f} tokens/s, "
              f"loop/bare {report['loop/bare']:.2f}")
    elif args.command == "memory":
        report = memory(load(args.config, args.overrides).model, batch_size=args.batch_size,
                        seq_len=args.seq_len, meshes=args.meshes)
        print(memory_table(report))
    else:
        compare = tuple(c for c in args.compare.split(",") if c)
        unknown = set(compare) - set(REFERENCES)
        if unknown:
            parser.error(f"--compare: unknown {sorted(unknown)}; choose from "
                         f"{sorted(REFERENCES)}")
        report = pretrain(load(args.config, args.overrides).model, batch_size=args.batch_size,
                          seq_len=args.seq_len, steps=args.steps, rounds=args.rounds,
                          compare=compare, full_vocab_logits=args.full_vocab,
                          keras_python=args.keras_python,
                          peer_env=host.ENVIRONMENT if applied else None)
        print(table(report))
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
