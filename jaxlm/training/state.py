"""The train state of every model kind, its shardings and its initializer.

The state is a plain pytree (`TrainState`) so that `jax.jit` sees a pure function of it:
the Flax module graph is split once (`nnx.split`) into a static `graphdef`, the trained
float32 parameters (in the state), and what the steps read but never update (`Fixed`):
frozen parameters (the base weights under LoRA; none otherwise) and the dropout RNG
streams, reseeded every step. Dropout keys are a function of (seed, step) alone, which
makes resuming exact.
"""

from __future__ import annotations

import dataclasses
import math
import typing

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh

from jaxlm.config import ModelConfig
from jaxlm.objectives.registry import pretraining_task
from jaxlm.objectives.tasks import Task
from jaxlm.training import sharding


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class TrainState:
    """Everything a checkpoint must hold to continue training bit for bit."""

    params: dict  # float32 master weights, a pure dict mirroring the module tree
    opt_state: typing.Any  # AdamW moments and the schedule's count
    step: jax.Array  # int32 []: updates taken, including skipped ones
    rng: jax.Array  # uint32 [2]: raw key data of the base PRNG key
    skipped: jax.Array  # int32 []: updates skipped because loss or gradient was not finite
    bad_streak: jax.Array  # int32 []: consecutive skipped updates up to now


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class Fixed:
    """What the steps read but never update."""

    frozen: dict  # parameters left out of training (LoRA's base weights), sharded
    rngs: dict  # the dropout RNG streams (reseeded each step), replicated


@dataclasses.dataclass(frozen=True)
class Model:
    """The static half of the split module plus what the steps need to rebuild it."""

    graphdef: typing.Any  # nnx.GraphDef of the task's module
    abstract_params: typing.Any  # trained nnx.Params as ShapeDtypeStructs with logical_axes
    abstract_frozen: typing.Any  # the same for the frozen ones (empty unless a filter says)
    task: Task  # what the model kind computes and how its loss is made
    trainable: typing.Any  # nnx filter of the parameters that are trained


def abstract_model(model_cfg: ModelConfig, task: Task | None = None,
                   trainable=nnx.Param) -> Model:
    """Shapes, logical axes and the graph of the model, without allocating any parameter.

    Args:
      model_cfg: the network; `task` defaults to the one of `model_cfg.kind`.
      trainable: an nnx filter; parameters it leaves out are frozen.
    """
    task = task or pretraining_task(model_cfg.kind)
    module = nnx.eval_shape(lambda: task.build(model_cfg, nnx.Rngs(0)))
    graphdef, abstract_params, abstract_frozen, _ = nnx.split(module, trainable, nnx.Param, ...)
    return Model(graphdef, abstract_params, abstract_frozen, task, trainable)


def count_params(abstract) -> int:
    """Number of scalars in an (abstract) parameter state."""
    return sum(math.prod(x.shape) for x in jax.tree.leaves(abstract))


def state_shardings(model: Model, abstract_state: TrainState, mesh: Mesh) -> TrainState:
    """NamedShardings for every leaf: params and their optimizer moments by the rules table,
    scalars (step, counters, key) replicated."""
    param_sh = sharding.named(mesh, sharding.param_specs(model.abstract_params, mesh))
    params_def = jax.tree.structure(abstract_state.params)

    def is_params_like(x):
        return isinstance(x, dict) and jax.tree.structure(x) == params_def

    opt_sh = jax.tree.map(lambda x: param_sh if is_params_like(x) else sharding.replicated(mesh),
                          abstract_state.opt_state, is_leaf=is_params_like)
    rep = sharding.replicated(mesh)
    return TrainState(params=param_sh, opt_state=opt_sh, step=rep, rng=rep, skipped=rep,
                      bad_streak=rep)


@dataclasses.dataclass(frozen=True)
class StateSetup:
    """How to build the train state on a mesh, before building it."""

    model: Model
    shardings: TrainState  # NamedSharding per leaf
    abstract: TrainState  # ShapeDtypeStructs with shardings: the target of a restore
    fixed: Fixed  # frozen parameters (freshly initialized) and dropout streams, sharded
    fixed_shardings: Fixed  # where `fixed` lives, for loading pretrained frozen weights
    init: typing.Callable[[], TrainState]  # fresh params and optimizer state, sharded


def setup_state(model_cfg: ModelConfig, seed: int, tx: optax.GradientTransformation,
                mesh: Mesh, task: Task | None = None, trainable=nnx.Param) -> StateSetup:
    """Shapes and shardings of the train state, and a jitted initializer for it.

    `init()` runs `jax.jit(..., out_shardings=...)`, so every device computes only its own
    shards: the whole model is never materialized on one device. Nothing is allocated until
    `init()` is called, so a resumed run goes straight to the checkpoint.

    Args:
      task: what the model computes; default the one of `model_cfg.kind`.
      trainable: an nnx filter of the parameters to train; the others go to `fixed.frozen`.
    """
    model = abstract_model(model_cfg, task, trainable)

    def init():
        module = model.task.build(model_cfg, nnx.Rngs(params=seed, dropout=seed))
        _, params, frozen, rngs = nnx.split(module, trainable, nnx.Param, ...)
        # Pure dicts: `nnx.merge` then builds fresh variables inside each trace.
        params = nnx.to_pure_dict(params)
        fixed = Fixed(nnx.to_pure_dict(frozen), nnx.to_pure_dict(rngs))
        state = TrainState(params=params, opt_state=tx.init(params),
                           step=jnp.zeros((), jnp.int32),
                           rng=jax.random.key_data(jax.random.key(seed)),
                           skipped=jnp.zeros((), jnp.int32), bad_streak=jnp.zeros((), jnp.int32))
        return state, fixed

    abstract_state, abstract_fixed = jax.eval_shape(init)
    shardings = state_shardings(model, abstract_state, mesh)
    fixed_sh = Fixed(
        frozen=sharding.named(mesh, sharding.param_specs(model.abstract_frozen, mesh)),
        rngs=jax.tree.map(lambda _: sharding.replicated(mesh), abstract_fixed.rngs))
    # XLA drops the unused parameter initializers from this one.
    fixed = jax.jit(lambda: init()[1], out_shardings=fixed_sh)()
    abstract = jax.tree.map(lambda a, sh: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sh),
                            abstract_state, shardings)
    init_state = jax.jit(lambda: init()[0], out_shardings=shardings)
    return StateSetup(model, shardings, abstract, fixed, fixed_sh, init_state)


def merge(model: Model, params: dict, fixed: Fixed) -> nnx.Module:
    """The module with these trained parameters, frozen parameters and dropout streams."""
    return nnx.merge(model.graphdef, params, fixed.frozen, fixed.rngs)


def param_name(path) -> str:
    """A parameter's dotted name ("bert.layers.0.attention.query.kernel") from its pytree path."""
    return ".".join(str(getattr(k, "key", k)) for k in path)


def load_weights(tree: dict, shardings: dict, values: dict[str, np.ndarray]) -> tuple[dict, set]:
    """`tree` with the leaves named in `values` ("bert.layers.0.attention.query.kernel")
    replaced by those arrays, placed with the leaves' shardings.

    Returns:
      (new tree, the names that were used).

    Raises:
      ValueError: an array whose shape differs from the leaf it replaces.
    """
    used = set()

    def replace(path, leaf, leaf_sharding):
        name = param_name(path)
        if name not in values:
            return leaf
        value = values[name]
        if value.shape != leaf.shape:
            raise ValueError(f"{name}: pretrained shape {value.shape}, model shape {leaf.shape}")
        used.add(name)
        return jax.device_put(value.astype(leaf.dtype), leaf_sharding)

    return jax.tree_util.tree_map_with_path(replace, tree, shardings), used


# Under LoRA these are trained, the adapters and the task head (classifier or tagger,
# qa_outputs); every other parameter is frozen.
LORA_TRAINABLE = nnx.All(nnx.Param, nnx.Any(nnx.PathContains("lora"),
                                            nnx.PathContains("classifier"),
                                            nnx.PathContains("qa_outputs")))
