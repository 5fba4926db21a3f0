"""Device mesh, logical-axis rules and the shardings of the train state and batches.

The model only names the logical axes of its parameters ("vocab", "embed", "heads", "kv",
"mlp"); this module decides where they live on a mesh with three axes:

    data    replicas of the whole model, each fed a slice of the batch (data parallel)
    fsdp    parameters and optimizer state split across devices and gathered per layer
            (ZeRO-3 / FSDP); these devices also split the batch
    tensor  attention heads and the MLP width split across devices (Megatron-LM,
            Shoeybi et al. 2019), activations of one example spread over them

`jax.jit` with explicit in/out shardings (what `pjit` became) lets XLA insert the
collectives. Training and inference call this module; models never do.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxlm.config import ConfigError, MeshConfig
from jaxlm.nn import layers

DATA, FSDP, TENSOR = "data", "fsdp", "tensor"
MESH_AXES = (DATA, FSDP, TENSOR)

# The batch dimension is split over every axis that holds distinct examples.
BATCH_AXES = (DATA, FSDP)

# Logical parameter axis -> mesh axis (None: replicated), MaxText style.
# Embedding width goes to fsdp (each device stores 1/fsdp of every matrix); heads, MLP width
# and vocabulary go to tensor, which is the Megatron split of attention and MLP.
RULES: dict[str | None, str | None] = {
    "vocab": TENSOR,
    "embed": FSDP,
    "heads": TENSOR,
    "kv": None,
    "mlp": TENSOR,
    None: None,
}

# Logical activation axis -> mesh axes: the activations between blocks are split over the
# batch only, since XLA's sharding propagation can otherwise carry the fsdp split of the
# weights ("embed") into the activations and give every device the whole batch (twice the
# memory per device for BERT-large on fsdp=8, docs/benchmarks.md).
ACTIVATION_RULES: dict[str | None, tuple | str | None] = {
    "batch": BATCH_AXES,
    "length": None,
    "embed": None,
}

log = logging.getLogger(__name__)


def initialize_distributed(cfg: MeshConfig) -> None:
    """Joins a multi-host job before any device is touched.

    On Cloud TPU, SLURM, Open MPI or Kubernetes, `jax.distributed.initialize()` finds its
    peers by itself. Elsewhere (e.g. several processes on one machine) set
    JAX_COORDINATOR_ADDRESS=host:port, JAX_NUM_PROCESSES and JAX_PROCESS_ID. On CPU the
    cross-process collectives run over gloo.
    """
    if not cfg.distributed:
        return
    num, pid = os.environ.get("JAX_NUM_PROCESSES"), os.environ.get("JAX_PROCESS_ID")
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        num_processes=int(num) if num is not None else None,
        process_id=int(pid) if pid is not None else None,
    )


def mesh_shape(cfg: MeshConfig, num_devices: int) -> dict[str, int]:
    """Resolves the -1 entry of the mesh config so the axes multiply to `num_devices`."""
    sizes = {DATA: cfg.data, FSDP: cfg.fsdp, TENSOR: cfg.tensor}
    known = math.prod(s for s in sizes.values() if s != -1)
    for axis, size in sizes.items():
        if size == -1:
            if num_devices % known:
                raise ConfigError(
                    f"mesh.{axis}=-1: the other axes ({known} devices) do not divide the "
                    f"{num_devices} available devices"
                )
            sizes[axis] = num_devices // known
    if math.prod(sizes.values()) != num_devices:
        raise ConfigError(
            f"mesh: data={sizes[DATA]} x fsdp={sizes[FSDP]} x tensor={sizes[TENSOR]} = "
            f"{math.prod(sizes.values())} devices, but {num_devices} are available; "
            f"set one of mesh.data/mesh.fsdp/mesh.tensor to -1 to fill them"
        )
    return sizes


def make_mesh(cfg: MeshConfig, devices=None) -> Mesh:
    """The (data, fsdp, tensor) mesh over all devices of all processes.

    `jax.make_mesh` orders devices so that the innermost axis (tensor) stays within a host
    and on the fastest links. The axes are `Auto`: the model carries no sharding annotations
    and XLA propagates the parameter and batch shardings through it.
    """
    devices = jax.devices() if devices is None else devices
    sizes = mesh_shape(cfg, len(devices))
    shape = tuple(sizes[a] for a in MESH_AXES)
    return jax.make_mesh(shape, MESH_AXES, devices=devices,
                         axis_types=(jax.sharding.AxisType.Auto,) * len(MESH_AXES))


def data_parallel_size(mesh: Mesh) -> int:
    """How many slices the batch dimension is split into."""
    return math.prod(mesh.shape[a] for a in BATCH_AXES)


def logical_to_spec(logical_axes: tuple, shape: tuple[int, ...], mesh: Mesh,
                    rules: dict = RULES) -> PartitionSpec:
    """The PartitionSpec of one parameter from its logical axes.

    A dimension stays replicated when its size is not a multiple of the mesh axis (e.g. an
    odd vocabulary on tensor=2) or when an earlier dimension already took that mesh axis.
    """
    if len(logical_axes) != len(shape):
        raise ValueError(f"logical axes {logical_axes} do not match shape {shape}")
    spec, used = [], set()
    for name, size in zip(logical_axes, shape, strict=True):
        if name not in rules:
            raise ValueError(f"logical axis {name!r} has no rule; known: {sorted(map(str, rules))}")
        axis = rules[name]
        if axis is None or axis in used or size % mesh.shape[axis] or mesh.shape[axis] == 1:
            spec.append(None)
        else:
            spec.append(axis)
            used.add(axis)
    return PartitionSpec(*spec)


def param_specs(abstract_params, mesh: Mesh, rules: dict = RULES) -> dict:
    """PartitionSpecs for an `nnx.State` of `nnx.Param`s, as a pure dict of the same shape.

    Args:
      abstract_params: `nnx.state(nnx.eval_shape(...), nnx.Param)`; each variable carries
        the `logical_axes` metadata the model declared.
    """
    def spec(var):
        axes = var.get_metadata().get("logical_axes")
        if axes is None:
            raise ValueError(f"parameter of shape {var.get_value().shape} declares no logical_axes")
        return logical_to_spec(tuple(axes), var.get_value().shape, mesh, rules)

    return nnx.to_pure_dict(jax.tree.map(spec, abstract_params,
                                         is_leaf=lambda x: hasattr(x, "get_metadata")))


def named(mesh: Mesh, specs):
    """NamedShardings for a pytree of PartitionSpecs."""
    return jax.tree.map(lambda s: NamedSharding(mesh, s), specs,
                        is_leaf=lambda x: isinstance(x, PartitionSpec))


def replicated(mesh: Mesh) -> NamedSharding:
    """The same value on every device (scalars: step, counters, RNG key)."""
    return NamedSharding(mesh, PartitionSpec())


@contextlib.contextmanager
def activation_layout(mesh: Mesh):
    """While active (around the model call that `jax.jit` traces), activations tagged by
    `layers.with_logical_axes` are constrained to `ACTIVATION_RULES` on `mesh`."""
    def layout(x: jax.Array, axes: tuple[str | None, ...]) -> jax.Array:
        spec = PartitionSpec(*(ACTIVATION_RULES[name] for name in axes))
        return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec))

    token = layers.ACTIVATION_LAYOUT.set(layout)
    try:
        yield
    finally:
        layers.ACTIVATION_LAYOUT.reset(token)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Batch arrays [B, ...]: split over (data, fsdp), replicated over tensor."""
    return NamedSharding(mesh, PartitionSpec(BATCH_AXES))


def check_batch_size(global_batch: int, grad_accum_steps: int, mesh: Mesh) -> None:
    """Each micro-batch must split evenly over the data-parallel devices and the hosts."""
    dp = data_parallel_size(mesh)
    micro = global_batch // grad_accum_steps
    if micro % dp:
        raise ConfigError(
            f"train.batch_size: {global_batch} (/ train.grad_accum_steps={grad_accum_steps} = "
            f"{micro} per micro-batch) is not divisible by the data-parallel size "
            f"mesh.data x mesh.fsdp = {dp}"
        )
    if global_batch % jax.process_count():
        raise ConfigError(
            f"train.batch_size: {global_batch} is not divisible by the "
            f"{jax.process_count()} processes"
        )


def global_batch(local_batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """Assembles each process's slice of the batch into global arrays sharded over the mesh.

    Every process passes only the rows it read ([B / process_count, ...]); the result is
    a [B, ...] array laid out by `batch_sharding`, no data crossing hosts.
    """
    sharding = batch_sharding(mesh)
    count = jax.process_count()
    if count == 1:  # the local rows are the batch: one transfer call for every array
        return jax.device_put(local_batch, sharding)
    return {
        k: jax.make_array_from_process_local_data(sharding, v, (v.shape[0] * count, *v.shape[1:]))
        for k, v in local_batch.items()
    }
