"""Data-loader benchmark: batches/s of the Grain loader on the prepared data.

    python -m benchmarks.data --config configs/bert_tiny.yaml

To set against the train step's rate: the loader must never be the bottleneck. The last
line printed is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import sys

from jaxlm import data
from jaxlm.config import Config, load
from jaxlm.pretrain import prepare_data
from jaxlm.training import host


def data_throughput(cfg: Config, batch_size: int, batches: int) -> dict:
    """Batches per second the Grain loader reads from the prepared data in one process."""
    prepared = prepare_data(cfg)
    rate = data.loader_throughput(prepared, batch_size, batches)
    return {"batches_per_s": rate, "tokens_per_s": rate * batch_size * prepared.max_seq_length,
            "batch_size": batch_size, "seq_len": prepared.max_seq_length}


def main(argv: list[str] | None = None) -> int:
    host.keep_freed_memory()  # before JAX starts its CPU client
    parser = argparse.ArgumentParser(prog="python -m benchmarks.data",
                                     description="loader batches/s on one core")
    parser.add_argument("--config", default="configs/bert_tiny.yaml")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("overrides", nargs="*", metavar="key.sub=value")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    report = data_throughput(load(args.config, args.overrides), args.batch_size, args.batches)
    print(f"loader: {report['batches_per_s']:.0f} batches/s of {args.batch_size} "
          f"({report['tokens_per_s']:.0f} tokens/s) on one process")
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
