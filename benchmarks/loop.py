"""Training-loop benchmark: tokens/s of `train.py`'s loop against the bare train step.

    python -m benchmarks.loop --config configs/bert_tiny.yaml --steps 1000

What the loop costs beyond the step (Grain loader, host-to-device copies, metrics, progress
bar; no evaluation, one checkpoint at the end). The last line printed is one JSON object
with every figure.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

from benchmarks.common import jaxlm_step, timer
from jaxlm import data
from jaxlm.config import load
from jaxlm.pretrain import prepare_data, resolve_model
from jaxlm.pretrain import run as run_pretraining
from jaxlm.training import host


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
        prepared = prepare_data(cfg)  # the run finds it prepared
        batch = next(iter(data.make_loader(prepared, "train", cfg.train.batch_size,
                                           seed=cfg.train.seed, shuffle=True, num_epochs=None)))
        bare = timer(jaxlm_step(resolve_model(cfg, prepared).model, batch)[0])
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


def main(argv: list[str] | None = None) -> int:
    host.keep_freed_memory()  # before JAX starts its CPU client
    parser = argparse.ArgumentParser(prog="python -m benchmarks.loop",
                                     description="train.py's loop tokens/s vs the bare step")
    parser.add_argument("--config", default="configs/bert_tiny.yaml")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("overrides", nargs="*", metavar="key.sub=value")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    report = loop(args.config, args.overrides, args.steps)
    print(f"train.py loop: {report['loop_tokens_per_s']:.0f} tokens/s, bare step: "
          f"{report['bare_step_tokens_per_s']:.0f} tokens/s, "
          f"loop/bare {report['loop/bare']:.2f}")
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
