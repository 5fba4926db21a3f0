"""Compression benchmark: what distillation and int8 quantization buy on a fine-tuned task.

    python -m benchmarks.compression --run runs/classify --run runs/distill

For each fine-tuned run (a teacher, a distilled student, ...) and each of float32, int8
weights (`python -m jaxlm.quantize`) and w8a8: the parameters, the bytes of the weights
(float32 for the run, the quantized file otherwise), the test scores on the run's own test
split (read as `jaxlm.finetune` read it: same file, split and seed), and the test split's
examples per second through the jitted forward pass at `--batch-size` (tokenization
excluded; rounds alternate between the variants; medians). The last line printed is one
JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import jax
import numpy as np
from flax import nnx

from jaxlm.data import load_tokenizer
from jaxlm.finetuning import TASK_MODULES
from jaxlm.inference.load import load_finetuned
from jaxlm.quantize import quantize_run
from jaxlm.training import host
from jaxlm.training.state import count_params


def forward(module: nnx.Module):
    """`run(input_ids, token_type_ids, attention_mask) -> outputs`, jitted."""
    graphdef, state = nnx.split(module)
    jitted = jax.jit(lambda state, *inputs: nnx.merge(graphdef, state)(*inputs))
    return lambda *inputs: jitted(state, *inputs)


def predict(run, arrays: dict, batch_size: int):
    """The outputs of every row of a split, in batches padded to `batch_size` rows."""
    n, outputs = len(arrays["input_ids"]), []
    for first in range(0, n, batch_size):
        rows = np.arange(first, first + batch_size) % n  # the last batch repeats rows
        out = run(*(arrays[k][rows] for k in ("input_ids", "token_type_ids",
                                               "attention_mask")))
        outputs.append(jax.device_get(out))
    return jax.tree.map(lambda *parts: np.concatenate(parts)[:n], *outputs)


def compare(runs: list[str], batch_size: int, rounds: int) -> list[dict]:
    rows, timed = [], []
    with tempfile.TemporaryDirectory() as scratch:
        for run_dir in runs:
            module, _, tokenizer_path, cfg = load_finetuned(run_dir)
            data = TASK_MODULES[cfg.finetune.task].read(cfg, load_tokenizer(tokenizer_path))
            params = count_params(nnx.state(module, nnx.Param))
            for mode in ("float32", "int8", "w8a8"):
                if mode == "float32":
                    variant, size = module, 4 * params
                else:
                    out = Path(scratch) / f"{len(rows)}_{mode}"
                    size = quantize_run(run_dir, out, activations=mode == "w8a8")[
                        "quantized_bytes"]
                    variant = load_finetuned(out)[0]
                run = forward(variant)
                outputs = predict(run, data.arrays["test"], batch_size)  # compiles
                scores = {k: v for k, v in data.score("test", outputs).items()
                          if isinstance(v, float)}
                rows.append({"run": run_dir, "weights": mode, "parameters": params,
                             "megabytes": size / 1e6, "test": scores, "seconds": []})
                timed.append((run, data.arrays["test"]))
        for _ in range(rounds):
            for row, (run, arrays) in zip(rows, timed, strict=True):
                started = time.perf_counter()
                predict(run, arrays, batch_size)
                row["seconds"].append(time.perf_counter() - started)
    for row, (_, arrays) in zip(rows, timed, strict=True):
        row["examples_per_s"] = len(arrays["input_ids"]) / statistics.median(row.pop("seconds"))
    return rows


def main(argv: list[str] | None = None) -> int:
    host.keep_freed_memory()  # before JAX starts its CPU client
    parser = argparse.ArgumentParser(prog="python -m benchmarks.compression",
                                     description="fine-tuned runs: float32, int8, w8a8")
    parser.add_argument("--run", action="append", required=True,
                        help="a fine-tuned jaxlm run directory (repeat for several)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    rows = compare(args.run, args.batch_size, args.rounds)
    for row in rows:
        scores = " ".join(f"{k}={v:.4f}" for k, v in row["test"].items())
        print(f"{row['run']} {row['weights']}: {row['parameters']:,} parameters, "
              f"{row['megabytes']:.1f} MB, {scores}, {row['examples_per_s']:.1f} examples/s")
    print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
