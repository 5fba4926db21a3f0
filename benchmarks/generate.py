"""Generation benchmark: greedy decoding with a KV cache, jaxlm against Hugging Face PyTorch's
`generate` and against this machine's memory-bandwidth bound.

    python -m benchmarks.generate                       # GPT-2 small's shape (124M)
    python -m benchmarks.generate --layers 2 --hidden 64 --new-tokens 4 --rounds 1  # a check

1. A random-init `transformers.GPT2LMHeadModel` of the shape is saved to a temporary
   directory: jaxlm loads it with `jaxlm.hf.gpt2.from_pretrained`, the PyTorch peer (its own
   process, `benchmarks.peers.torch generate`) with `from_pretrained`.
2. Every cell (prompt length x batch) decodes the same seeded random prompts, in rounds
   that alternate jaxlm and PyTorch: time to first token (a generation of one token:
   the prompt's forward pass and the first sampling), the whole generation of
   `--new-tokens`, and from the two the time per output token after the first. Figures are
   medians over the rounds, after one untimed warm-up generation per cell and library.
3. The bound: at batch 1 each new token reads every weight once, so a decode step cannot
   take less than weights bytes / memory bandwidth. The bandwidth is measured in the same
   run as the best of several reductions over a 1 GiB array (XLA, all cores).
4. The greedy ids of the two libraries are compared: "same" is the number of leading new
   tokens equal in every row (float rounding may flip a near-tie, after which they differ).

The last line printed is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.common import ROOT
from jaxlm.hf import gpt2 as hf_gpt2
from jaxlm.inference.generate import generate
from jaxlm.training import host


def save_random_gpt2(directory: Path, layers: int, hidden: int, heads: int, vocab: int,
                     context: int) -> None:
    """A random-init GPT2LMHeadModel (seed 0) of this shape, in the Hugging Face format."""
    import torch
    import transformers

    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=layers, n_embd=hidden, n_head=heads,
                                     vocab_size=vocab, n_positions=context,
                                     bos_token_id=vocab - 1, eos_token_id=vocab - 1)
    transformers.GPT2LMHeadModel(config).save_pretrained(directory)


def memory_bandwidth(gib: float = 1.0, repeats: int = 5) -> float:
    """Bytes per second of the best of `repeats` sums over a float32 array of `gib` GiB."""
    x = jnp.ones(int(gib * 2**30) // 4, jnp.float32)
    total = jax.jit(jnp.sum)
    total(x).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        total(x).block_until_ready()
        best = min(best, time.perf_counter() - started)
    return x.nbytes / best


def leading_agreement(ours: list[list[int]], theirs: list[list[int]]) -> int:
    """The number of leading tokens on which every row of the two agrees."""
    same = 0
    for column in zip(*ours, strict=False):
        if len(theirs[0]) <= same or any(row[same] != t for row, t in zip(theirs, column,
                                                                             strict=True)):
            break
        same += 1
    return same


class TorchPeer:
    """`python -m benchmarks.peers.torch generate DIRECTORY`: a JSON line per request."""

    def __init__(self, directory: Path, stack: contextlib.ExitStack):
        self.child = stack.enter_context(subprocess.Popen(
            [sys.executable, "-m", "benchmarks.peers.torch", "generate", str(directory)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT))
        stack.callback(self.child.stdin.close)
        self.info = self._answer()

    def _answer(self) -> dict:
        line = self.child.stdout.readline()
        if not line:
            raise RuntimeError(f"the PyTorch generation peer exited ({self.child.wait()})")
        return json.loads(line)

    def __call__(self, prompts: list[list[int]], new_tokens: int) -> tuple[float, list]:
        self.child.stdin.write(json.dumps({"prompts": prompts, "new": new_tokens}) + "\n")
        self.child.stdin.flush()
        answer = self._answer()
        return answer["seconds"], answer["ids"]


def timed_jaxlm(model, prompts: list[list[int]], new_tokens: int) -> tuple[float, list]:
    started = time.perf_counter()
    ids = generate(model, prompts, new_tokens)
    return time.perf_counter() - started, ids


def cell(run_jaxlm, run_torch, prompts: list[list[int]], new_tokens: int,
         rounds: int) -> dict:
    """The figures of one prompt length and batch for both libraries (module docstring)."""
    times: dict = {side: {"first": [], "total": []} for side in ("jaxlm", "torch")}
    ids = {}
    for side, run in (("jaxlm", run_jaxlm), ("torch", run_torch)):  # warm-up
        run(prompts, 1)
        ids[side] = run(prompts, new_tokens)[1]
    for _ in range(rounds):
        for side, run in (("jaxlm", run_jaxlm), ("torch", run_torch)):
            times[side]["first"].append(run(prompts, 1)[0])
            times[side]["total"].append(run(prompts, new_tokens)[0])
    B = len(prompts)
    out: dict = {"same_leading_tokens": leading_agreement(ids["jaxlm"], ids["torch"])}
    for side, t in times.items():
        first, total = statistics.median(t["first"]), statistics.median(t["total"])
        out[side] = {"first_token_s": first, "total_s": total,
                     "per_token_s": (total - first) / max(new_tokens - 1, 1),
                     "tokens_per_s": B * new_tokens / total}
    out["torch_over_jaxlm_time"] = out["torch"]["total_s"] / out["jaxlm"]["total_s"]
    return out


def main(argv: list[str] | None = None) -> int:
    host.keep_freed_memory()  # before JAX starts its CPU client
    parser = argparse.ArgumentParser(prog="python -m benchmarks.generate")
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--hidden", type=int, default=768)
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--vocab", type=int, default=50257)
    parser.add_argument("--prompt-lengths", default="32,128")
    parser.add_argument("--batch-sizes", default="1,8")
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--bandwidth-gib", type=float, default=1.0,
                        help="the size of the array read to measure memory bandwidth")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    lengths = [int(p) for p in args.prompt_lengths.split(",")]
    report: dict = {"settings": vars(args), "cells": []}
    with tempfile.TemporaryDirectory() as directory, contextlib.ExitStack() as stack:
        save_random_gpt2(Path(directory), args.layers, args.hidden, args.heads, args.vocab,
                         max(lengths) + args.new_tokens)
        model, config = hf_gpt2.from_pretrained(directory)
        model.eval()
        torch_peer = TorchPeer(Path(directory), stack)
        weight_bytes = sum(x.nbytes for x in jax.tree.leaves(model))
        report["bandwidth_gb_s"] = memory_bandwidth(args.bandwidth_gib) / 1e9
        report["weights_mb"] = weight_bytes / 1e6
        report["decode_bound_s"] = weight_bytes / (report["bandwidth_gb_s"] * 1e9)
        report["torch"] = torch_peer.info
        rng = np.random.default_rng(0)
        for P in lengths:
            for B in (int(b) for b in args.batch_sizes.split(",")):
                prompts = rng.integers(0, config.vocab_size, (B, P)).tolist()
                figures = cell(lambda p, n: timed_jaxlm(model, p, n), torch_peer, prompts,
                               args.new_tokens, args.rounds)
                report["cells"].append({"prompt": P, "batch": B, **figures})
                jx, th = figures["jaxlm"], figures["torch"]
                print(f"P={P} B={B}: jaxlm {jx['tokens_per_s']:.1f} tokens/s, first "
                      f"{1e3 * jx['first_token_s']:.0f} ms, {1e3 * jx['per_token_s']:.1f} "
                      f"ms/token; torch {th['tokens_per_s']:.1f} tokens/s, first "
                      f"{1e3 * th['first_token_s']:.0f} ms, {1e3 * th['per_token_s']:.1f} "
                      f"ms/token; same ids for {figures['same_leading_tokens']} tokens")
    bound = report["decode_bound_s"]
    for c in report["cells"]:
        if c["batch"] == 1:
            c["jaxlm_per_token_over_bound"] = c["jaxlm"]["per_token_s"] / bound
    print(f"bandwidth {report['bandwidth_gb_s']:.1f} GB/s, weights {report['weights_mb']:.0f} "
          f"MB: a decode step takes at least {1e3 * bound:.1f} ms")
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
