"""Train-step memory benchmark: XLA's bytes per device of the compiled step on each mesh.

    XLA_FLAGS=--xla_force_host_platform_device_count=8 python -m benchmarks.memory \\
        --config configs/bert_large.yaml --batch-size 8 --seq-len 512 --meshes data=8 fsdp=8

The step is compiled for the abstract train state and batch, nothing is allocated, so a
model far too large for this machine can be measured (fake CPU devices stand in for the
mesh). The last line printed is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

import jax

from benchmarks.common import device_bytes, predictions_per_sequence, synthetic_batch, train_step
from jaxlm.config import MeshConfig, ModelConfig, load
from jaxlm.training import host, sharding


def parse_mesh(spec: str) -> MeshConfig:
    """"data=8" or "data=2,fsdp=2,tensor=2" -> MeshConfig (axes not named keep defaults)."""
    try:
        sizes = {k: int(v) for k, v in (part.split("=") for part in spec.split(","))}
        return MeshConfig(**sizes)
    except (ValueError, TypeError) as e:
        raise ValueError(f"--meshes: cannot read {spec!r} as axis=size[,axis=size]: {e}") from e


def memory(cfg: ModelConfig, *, batch_size: int, seq_len: int, meshes: list[str]) -> dict:
    """Bytes per device of the compiled train step (AdamW state, batch, activations) on each
    mesh, from XLA's memory analysis (`common.device_bytes`)."""
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
    host.keep_freed_memory()  # before JAX starts its CPU client
    parser = argparse.ArgumentParser(prog="python -m benchmarks.memory",
                                     description="compiled train-step bytes per device on "
                                     "each mesh")
    parser.add_argument("--config", default="configs/bert_large.yaml")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--meshes", nargs="+", default=["data=8", "fsdp=8"],
                        metavar="AXIS=N,...")
    parser.add_argument("overrides", nargs="*", metavar="key.sub=value")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    report = memory(load(args.config, args.overrides).model, batch_size=args.batch_size,
                    seq_len=args.seq_len, meshes=args.meshes)
    print(memory_table(report))
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
