"""Benchmarks: `python -m jaxlm.bench pretrain|data ...`, references measured in the same run.

    python -m jaxlm.bench pretrain --config configs/bert_mini.yaml --batch-size 32 \\
        --seq-len 128 --steps 20 --compare torch,flax
    python -m jaxlm.bench data --config configs/bert_tiny.yaml

`pretrain` times one optimizer step of BERT pretraining (MLM + NSP, AdamW, clipping,
dropout as configured) on the same synthetic batch for every library: jaxlm's real train
step (`jaxlm.trainer.make_train_step`) and, when installed, Hugging Face's PyTorch
`BertForPreTraining` (with torch's AdamW) and Flax `FlaxBertForPreTraining` (transformers < 5,
with an optax step under `jax.jit`). A missing reference is skipped with a note.

FLOPs are the model's matmul FLOPs as configured (`tasks.bert_train_flops`: forward
x 3 for forward + backward), for jaxlm with the MLM head on the P gathered positions, and
with `--full-vocab` on all T positions as Hugging Face computes it. MFU divides FLOP/s by
the float32 matmul peak measured in the same process (`metrics.measure_cpu_peak`) on a
CPU, or by the datasheet peak on an accelerator. The last line printed is one JSON object
with every figure and the ratios jaxlm/torch and jaxlm/flax.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time

import jax
import numpy as np

from jaxlm import hf, metrics, optim, sharding, tasks, trainer
from jaxlm.config import MeshConfig, ModelConfig, TrainConfig, load


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


def _time(step, steps: int, warmup: int = 2) -> float:
    """Seconds per call of `step()` (which blocks until its result is ready)."""
    for _ in range(warmup):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - start) / steps


def time_jaxlm(cfg: ModelConfig, batch: dict, steps: int) -> dict:
    """The trainer's jitted step on one device, state donated, no host sync inside the loop."""
    mesh = sharding.make_mesh(MeshConfig(data=1), devices=jax.devices()[:1])
    train_cfg = TrainConfig(steps=1000, warmup_steps=10)
    tx = optim.make_optimizer(train_cfg)
    setup = trainer.setup_state(cfg, 0, tx, mesh)
    step = trainer.make_train_step(setup, tx, optim.learning_rate_schedule(train_cfg), mesh)
    device_batch = sharding.global_batch(batch, mesh)
    holder = {"state": setup.init()}
    compiled = step.lower(holder["state"], setup.fixed, device_batch).compile()
    memory = compiled.memory_analysis()

    def one():
        holder["state"], out = step(holder["state"], setup.fixed, device_batch)
        jax.block_until_ready(out["loss"])

    seconds = _time(one, steps)
    peak_bytes = None
    if memory is not None:
        peak_bytes = int(memory.temp_size_in_bytes + memory.argument_size_in_bytes
                         + memory.output_size_in_bytes - memory.alias_size_in_bytes)
    return {"step_s": seconds, "peak_bytes": peak_bytes}


def _hf_config(cfg: ModelConfig):
    import transformers

    return transformers.BertConfig(**hf.config_to_hf(cfg))


def time_torch(cfg: ModelConfig, batch: Batch, steps: int) -> dict:
    """Hugging Face PyTorch BertForPreTraining + torch AdamW, train mode, eager."""
    import torch
    import transformers

    torch.manual_seed(0)
    model = transformers.BertForPreTraining(_hf_config(cfg))
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.999), eps=1e-6,
                            weight_decay=0.01)
    a = batch.arrays
    inputs = dict(input_ids=torch.from_numpy(a["input_ids"]).long(),
                  token_type_ids=torch.from_numpy(a["token_type_ids"]).long(),
                  attention_mask=torch.from_numpy(a["attention_mask"]).long(),
                  labels=torch.from_numpy(batch.labels_BT),
                  next_sentence_label=torch.from_numpy(a["next_sentence_label"]).long())

    def one():
        opt.zero_grad(set_to_none=True)
        loss = model(**inputs).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    return {"step_s": _time(one, steps), "threads": torch.get_num_threads()}


def time_flax(cfg: ModelConfig, batch: Batch, steps: int) -> dict:
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

    return {"step_s": _time(one, steps)}


REFERENCES = {"torch": time_torch, "flax": time_flax}


def pretrain(cfg: ModelConfig, *, batch_size: int, seq_len: int, steps: int,
             compare: tuple[str, ...] = (), full_vocab_logits: bool = False) -> dict:
    """Times jaxlm and the references on one batch; returns every figure and the ratios."""
    if seq_len > cfg.max_position_embeddings:
        raise ValueError(f"--seq-len {seq_len} exceeds model.max_position_embeddings="
                         f"{cfg.max_position_embeddings}")
    P = max(1, round(20 * seq_len / 128))  # BERT's max predictions: 20 at T=128, 80 at 512
    batch = synthetic_batch(cfg, batch_size, seq_len, P)
    arrays = full_vocab(batch) if full_vocab_logits else batch.arrays
    predictions = seq_len if full_vocab_logits else P
    flops = tasks.bert_train_flops(cfg, batch_size, seq_len, predictions)
    on_cpu = jax.devices()[0].platform == "cpu"  # fake CPU devices share one host's cores
    peak = metrics.measure_cpu_peak() if on_cpu else metrics.peak_flops() / jax.device_count()
    tokens = batch_size * seq_len
    results = {"jaxlm": time_jaxlm(cfg, arrays, steps)}
    notes = {}
    for name in compare:
        try:
            results[name] = REFERENCES[name](cfg, batch, steps)
        except (ImportError, AttributeError) as e:
            notes[name] = f"skipped: {type(e).__name__}: {e}"
    for r in results.values():
        r["tokens_per_s"] = tokens / r["step_s"]
    jaxlm = results["jaxlm"]
    jaxlm["mfu"] = flops / jaxlm["step_s"] / peak
    return {
        "config": dataclasses.asdict(cfg), "batch_size": batch_size, "seq_len": seq_len,
        "masked_positions": P, "full_vocab": full_vocab_logits, "steps": steps,
        "device": jax.devices()[0].device_kind, "peak_flops": peak, "train_flops": flops,
        "results": results, "notes": notes,
        "ratios": {f"jaxlm/{k}": jaxlm["tokens_per_s"] / v["tokens_per_s"]
                   for k, v in results.items() if k != "jaxlm"},
    }


def data_throughput(cfg, batch_size: int, batches: int) -> dict:
    """Batches per second the Grain loader reads from the prepared data in one process,
    to set against the train step rate: the loader must never be the bottleneck."""
    from jaxlm import data

    prepared = data.prepare(cfg.data, seed=cfg.train.seed)
    rate = data.loader_throughput(prepared, batch_size, batches)
    return {"batches_per_s": rate, "tokens_per_s": rate * batch_size * prepared.max_seq_length,
            "batch_size": batch_size, "seq_len": prepared.max_seq_length}


def table(report: dict) -> str:
    rows = [f"{'library':<8} {'step ms':>9} {'tokens/s':>10} {'MFU':>6}"]
    for name, r in report["results"].items():
        mfu = f"{r['mfu']:.2f}" if "mfu" in r else ""
        rows.append(f"{name:<8} {1e3 * r['step_s']:>9.1f} {r['tokens_per_s']:>10.0f} {mfu:>6}")
    rows += [f"{k}: {v:.2f}x" for k, v in report["ratios"].items()]
    rows += [f"{k}: {v}" for k, v in report["notes"].items()]
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jaxlm.bench")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pretrain", help="train-step throughput vs Hugging Face")
    p.add_argument("--config", default="configs/bert_mini.yaml")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--compare", default="torch,flax", help="comma-separated: torch, flax")
    p.add_argument("--full-vocab", action="store_true",
                   help="MLM logits at every position, as Hugging Face computes them")
    p.add_argument("overrides", nargs="*", metavar="key.sub=value")
    d = sub.add_parser("data", help="loader batches/s on one core")
    d.add_argument("--config", default="configs/bert_tiny.yaml")
    d.add_argument("--batch-size", type=int, default=32)
    d.add_argument("--batches", type=int, default=200)
    d.add_argument("overrides", nargs="*", metavar="key.sub=value")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.command == "data":
        report = data_throughput(load(args.config, args.overrides), args.batch_size,
                                 args.batches)
        print(f"loader: {report['batches_per_s']:.0f} batches/s of {args.batch_size} "
              f"({report['tokens_per_s']:.0f} tokens/s) on one process")
        print(json.dumps(report))
        return 0
    cfg = load(args.config, args.overrides).model
    compare = tuple(c for c in args.compare.split(",") if c)
    unknown = set(compare) - set(REFERENCES)
    if unknown:
        parser.error(f"--compare: unknown {sorted(unknown)}; choose from {sorted(REFERENCES)}")
    report = pretrain(cfg, batch_size=args.batch_size, seq_len=args.seq_len, steps=args.steps,
                      compare=compare, full_vocab_logits=args.full_vocab)
    print(table(report))
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
