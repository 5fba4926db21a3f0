"""Pretraining step benchmark, jaxlm against the references in the same run.

    python -m benchmarks.pretrain --config configs/bert_mini.yaml --batch-size 32 \\
        --seq-len 128 --steps 20 --compare torch,flax,keras_hub [--keras-python PY]

Times one optimizer step of BERT pretraining (MLM + NSP, AdamW, clipping, dropout as
configured) on the same synthetic batch for every library, in interleaved rounds (each
library's median over the rounds counts): jaxlm's real train step
(`jaxlm.training.step.make_train_step`) and, when installed, Hugging Face's PyTorch
`BertForPreTraining` (with torch's AdamW; `benchmarks.peers.torch`), Flax
`FlaxBertForPreTraining` (transformers < 5, with an optax step under `jax.jit`;
`benchmarks.peers.flax`) and KerasHub's `BertMaskedLM` on the JAX backend (MLM only;
`benchmarks/peers/keras_hub.py`, under `--keras-python` when KerasHub lives in another
venv). Each reference runs in a process of its own (heap and threads apart from jaxlm's),
idle while another library is timed. A missing reference is skipped with a note.

FLOPs are the model's matmul FLOPs as configured (`jaxlm.objectives.flops.bert_train_flops`:
forward x 3 for forward + backward), for jaxlm with the MLM head on the P gathered positions,
and with `--full-vocab` on all T positions as Hugging Face computes it. MFU divides FLOP/s by the
float32 matmul peak measured in the same process (`metrics.measure_cpu_peak`) on a CPU, or
by the datasheet peak on an accelerator. The matmul floor (`matmul_floor`) times the step's
matmul shapes alone: how close the step comes to what these shapes allow. The last line
printed is one JSON object with every figure and the ratios jaxlm/<reference>.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import json
import statistics
import sys
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import common
from benchmarks.common import Batch, Measure
from jaxlm.config import ModelConfig, load
from jaxlm.objectives.flops import bert_train_flops
from jaxlm.training import host, metrics


def start_jaxlm(cfg: ModelConfig, batch: dict) -> tuple[Measure, dict]:
    """jaxlm's train step on one device, and its compiled bytes live at once (`peak_bytes`)."""
    one, memory = common.jaxlm_step(cfg, batch)
    return common.timer(one), {"peak_bytes": memory and memory["total"]}


def start_keras_hub(cfg: ModelConfig, batch: Batch, stack: contextlib.ExitStack,
                    python: str = sys.executable, env: dict | None = None
                    ) -> tuple[Measure, dict]:
    """KerasHub's BertMaskedLM (JAX backend), MLM only, run by `benchmarks/peers/keras_hub.py`
    in a child process under `python` on the same batch; `env` adds to its environment.

    Raises:
      ImportError: `python` has no keras-hub.
    """
    tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
    np.savez(tmp / "batch.npz", **batch.arrays)
    settings = json.dumps({**dataclasses.asdict(cfg), "warmup": common.WARMUP_STEPS})
    script = Path(__file__).resolve().parent / "peers" / "keras_hub.py"
    return common.start_child([python, str(script), str(tmp / "batch.npz"), settings], stack,
                              env, f"the KerasHub peer ({python})")


PEERS = ("torch", "flax")  # run by `python -m benchmarks.peers.<name>` (`start_peer`)
REFERENCES = (*PEERS, "keras_hub")


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
    P = common.predictions_per_sequence(seq_len)
    batch = common.synthetic_batch(cfg, batch_size, seq_len, P)
    arrays = common.full_vocab(batch) if full_vocab_logits else batch.arrays
    predictions = seq_len if full_vocab_logits else P
    flops = bert_train_flops(cfg, batch_size, seq_len, predictions)
    on_cpu = jax.devices()[0].platform == "cpu"  # fake CPU devices share one host's cores
    tokens = batch_size * seq_len
    references = {name: functools.partial(common.start_peer, name, env=peer_env)
                  for name in PEERS}
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
    # grew after its warm-up steps (docs/benchmarks.md).
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
    best MFU these shapes allow on this machine. `flops` re-derives `bert_train_flops`
    from the shapes."""
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
            best = common.timer(lambda fn=fn, args=args: fn(*args), warmup=1)
            seconds += count * min(best(1) for _ in range(repeats))
        flops += count * 3 * 2 * b * m * k * n
    return {"seconds": seconds, "flops": flops}


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


def main(argv: list[str] | None = None) -> int:
    applied = host.keep_freed_memory()  # before JAX starts its CPU client
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.pretrain",
        description="train-step throughput vs Hugging Face and KerasHub")
    parser.add_argument("--config", default="configs/bert_mini.yaml")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20,
                        help="timed steps per library and round")
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds of every library in turn; each library's median counts")
    parser.add_argument("--compare", default="torch,flax",
                        help=f"comma-separated, from: {', '.join(REFERENCES)}")
    parser.add_argument("--keras-python", default=sys.executable,
                        help="the Python of a venv with keras-hub (default: this one)")
    parser.add_argument("--full-vocab", action="store_true",
                        help="MLM logits at every position, as Hugging Face computes them")
    parser.add_argument("overrides", nargs="*", metavar="key.sub=value")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    compare = tuple(c for c in args.compare.split(",") if c)
    unknown = set(compare) - set(REFERENCES)
    if unknown:
        parser.error(f"--compare: unknown {sorted(unknown)}; choose from {sorted(REFERENCES)}")
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
