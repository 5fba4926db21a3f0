"""Data-loader benchmark: batches/s of the Grain loader against the train step's rate.

    python -m benchmarks.data --config configs/bert_tiny.yaml [--bucket]

The config's data in each storage format: the local path's memory-mapped `.npy` arrays, the
Beam pipeline's ArrayRecord shards on local disk, and (`--bucket`, the test extra's Cloud
Storage emulator on 127.0.0.1) the same shards read from gs://. Each is read by one process
in interleaved rounds; the train step (the config's model on one of its batches) says how
many batches per second training consumes. The loader must never be the bottleneck. The
last line printed is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import statistics
import sys
import tempfile

from benchmarks.common import jaxlm_step, timer
from benchmarks.gcs_emulator import emulator
from jaxlm import data
from jaxlm.config import Config, load
from jaxlm.data.beam_pipeline import prepare_on_beam
from jaxlm.objectives.registry import pretraining_task
from jaxlm.pretrain import prepare_data, resolve_model
from jaxlm.training import host

DIRECT_RUNNER = ["--runner", "DirectRunner", "--direct_num_workers=1"]


def prepared_formats(cfg: Config, directory: str, bucket: str | None) -> dict:
    """The config's data as `.npy` arrays, as local ArrayRecord shards and, given a bucket,
    as shards in it."""
    recipe = pretraining_task(cfg.model.kind).recipe
    formats = {"npy": prepare_data(cfg)}
    for name, root in (("array_record", directory), ("array_record_gcs", bucket)):
        if root is not None:
            beam_cfg = dataclasses.replace(cfg.data, output_dir=f"{root}/prepared")
            formats[name] = prepare_on_beam(beam_cfg, seed=cfg.train.seed, recipe=recipe,
                                            pipeline_args=DIRECT_RUNNER)
    return formats


def data_throughput(cfg: Config, batch_size: int, batches: int, rounds: int,
                    bucket: str | None) -> dict:
    """Batches per second of each format (median of `rounds` interleaved rounds) and of the
    train step on the config's batch."""
    with tempfile.TemporaryDirectory() as directory:
        formats = prepared_formats(cfg, directory, bucket)
        rates = {name: [] for name in formats}
        for _ in range(rounds):
            for name, prepared in formats.items():
                rates[name].append(data.loader_throughput(prepared, batch_size, batches))
    prepared = formats["npy"]
    batch = next(iter(data.make_loader(prepared, "train", cfg.train.batch_size,
                                       seed=cfg.train.seed, shuffle=True, num_epochs=None)))
    step_s = timer(jaxlm_step(resolve_model(cfg, prepared).model, batch)[0])(50)
    step_rate = 1 / step_s * cfg.train.batch_size / batch_size  # loader-sized batches/s
    report = {"batch_size": batch_size, "seq_len": prepared.max_seq_length,
              "train_step_batches_per_s": step_rate}
    for name, values in rates.items():
        rate = statistics.median(values)
        report[name] = {"batches_per_s": rate,
                        "tokens_per_s": rate * batch_size * prepared.max_seq_length,
                        "loader/step": rate / step_rate, "rounds": values}
    return report


def main(argv: list[str] | None = None) -> int:
    host.keep_freed_memory()  # before JAX starts its CPU client
    parser = argparse.ArgumentParser(prog="python -m benchmarks.data",
                                     description="loader batches/s on one core, per format")
    parser.add_argument("--config", default="configs/bert_tiny.yaml")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--bucket", action="store_true",
                        help="also read the shards from the Cloud Storage emulator")
    parser.add_argument("overrides", nargs="*", metavar="key.sub=value")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    cfg = load(args.config, args.overrides)
    with contextlib.ExitStack() as stack:
        bucket = None
        if args.bucket:
            bucket = stack.enter_context(emulator())
        report = data_throughput(cfg, args.batch_size, args.batches, args.rounds, bucket)
    print(f"train step: {report['train_step_batches_per_s']:.0f} batches/s of "
          f"{args.batch_size}")
    for name in ("npy", "array_record", "array_record_gcs"):
        if name in report:
            print(f"loader, {name}: {report[name]['batches_per_s']:.0f} batches/s "
                  f"({report[name]['loader/step']:.1f}x the step's rate)")
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
