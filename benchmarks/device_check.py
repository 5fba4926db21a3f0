"""The accelerator check: one command on a machine with a GPU, about 6 minutes on an H200.

    python3 -m benchmarks.device_check --out DIR
    python -m benchmarks.device_check --quick --out DIR   # tiny shapes, any machine (tests)

1. BERT-base, T = 128, B = 64, bf16 compute: jaxlm's training step against Hugging Face
   PyTorch with AMP (bf16 autocast) on the same GPU (`benchmarks.pretrain --compare torch`):
   tokens/s, MFU against the datasheet peak (`jaxlm.training.metrics.PEAK_FLOPS`), ratio.
2. BERT-base, T = 512, B = 16, bf16, no attention dropout (the kernels have none): jaxlm's
   step with each attention implementation that runs on a GPU.
3. GPT-2 small greedy decoding against Hugging Face `generate` (`benchmarks.generate`).

Each part is its own process; each part's JSON report goes to DIR, and the markdown table
(for docs/benchmarks.md) to DIR/device_check.md and stdout. The GPU image needs jaxlm's
dependencies besides JAX, Flax, Optax, Orbax and torch: grain and array-record (carry their
wheels) and tokenizers.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.common import ROOT

FULL = {"bert": ["--config", "configs/bert_base.yaml", "--batch-size", "64", "--seq-len",
                 "128", "--steps", "20", "--rounds", "2"],
        "attention": ["--config", "configs/bert_base.yaml", "--batch-size", "16", "--seq-len",
                      "512", "--steps", "10", "--rounds", "2"],
        "generate": ["--rounds", "2"]}
QUICK = {"bert": ["--config", "configs/bert_tiny.yaml", "--batch-size", "4", "--seq-len", "16",
                  "--steps", "1", "--rounds", "1"],
         "attention": ["--config", "configs/bert_tiny.yaml", "--batch-size", "2", "--seq-len",
                       "32", "--steps", "1", "--rounds", "1"],
         "generate": ["--layers", "1", "--hidden", "32", "--heads", "2", "--vocab", "100",
                      "--prompt-lengths", "4", "--batch-sizes", "1", "--new-tokens", "3",
                      "--rounds", "1", "--bandwidth-gib", "0.01"]}
IMPLS = ("xla", "dot_product_attention")  # the Pallas kernel is for TPUs


def run_part(name: str, module: str, args: list[str], out: Path) -> dict:
    """Runs `python -m module args`, keeps its output in out/name.log and returns its last
    line, a JSON report, also written to out/name.json."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT,
                          capture_output=True, text=True)
    (out / f"{name}.log").write_text(done.stdout + done.stderr)
    if done.returncode:
        raise RuntimeError(f"{module} {' '.join(args)} failed; see {out / f'{name}.log'}:\n"
                           f"{done.stderr[-2000:]}")
    report = json.loads(done.stdout.strip().splitlines()[-1])
    report["wall_s"] = time.perf_counter() - started
    (out / f"{name}.json").write_text(json.dumps(report, indent=1) + "\n")
    return report


def markdown(bert: dict, attention: dict[str, dict], generation: dict) -> str:
    """The three tables of the check."""
    j, t = bert["results"]["jaxlm"], bert["results"].get("torch", {})
    lines = [f"Device: {bert['device']}; peak {bert['peak_flops'] / 1e12:.0f} TFLOP/s.", "",
             "| BERT training step (bf16) | jaxlm tokens/s | MFU | HF PyTorch AMP tokens/s "
             "| jaxlm / PyTorch |", "|---|---|---|---|---|",
             f"| B={bert['batch_size']} T={bert['seq_len']} | {j['tokens_per_s']:.0f} | "
             f"{j['mfu']:.2f} | {t.get('tokens_per_s', float('nan')):.0f} | "
             f"{bert['ratios'].get('jaxlm/torch', float('nan')):.2f}x |", "",
             "| attention_impl | step ms | tokens/s | MFU |", "|---|---|---|---|"]
    for impl, report in attention.items():
        r = report["results"]["jaxlm"]
        lines.append(f"| {impl} (B={report['batch_size']} T={report['seq_len']}) | "
                     f"{1e3 * r['step_s']:.1f} | {r['tokens_per_s']:.0f} | {r['mfu']:.2f} |")
    lines += ["", f"GPT decoding: memory bandwidth {generation['bandwidth_gb_s']:.0f} GB/s, "
              f"weights {generation['weights_mb']:.0f} MB, bound "
              f"{1e3 * generation['decode_bound_s']:.2f} ms per step.", "",
              "| prompt | batch | jaxlm tokens/s | first token ms | ms / token | PyTorch "
              "tokens/s | first token ms | ms / token | same tokens |",
              "|---|---|---|---|---|---|---|---|---|"]
    for c in generation["cells"]:
        jx, th = c["jaxlm"], c["torch"]
        lines.append(f"| {c['prompt']} | {c['batch']} | {jx['tokens_per_s']:.0f} | "
                     f"{1e3 * jx['first_token_s']:.1f} | {1e3 * jx['per_token_s']:.2f} | "
                     f"{th['tokens_per_s']:.0f} | {1e3 * th['first_token_s']:.1f} | "
                     f"{1e3 * th['per_token_s']:.2f} | {c['same_leading_tokens']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.device_check")
    parser.add_argument("--out", default=".", help="where the reports and the table go")
    parser.add_argument("--quick", action="store_true", help="tiny shapes, for any machine")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    shapes = QUICK if args.quick else FULL
    bert = run_part("bert", "benchmarks.pretrain",
                    [*shapes["bert"], "--compare", "torch", "model.dtype=bfloat16"], out)
    attention = {impl: run_part(f"attention_{impl}", "benchmarks.pretrain",
                                [*shapes["attention"], "--compare", "", "model.dtype=bfloat16",
                                 "model.attention_dropout=0.0",
                                 f"model.attention_impl={impl}"], out)
                 for impl in IMPLS}
    generation = run_part("generate", "benchmarks.generate", shapes["generate"], out)
    table = markdown(bert, attention, generation)
    (out / "device_check.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
