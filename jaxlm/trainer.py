"""The train state and the jitted train and eval steps for BERT pretraining.

The state is a plain pytree (`TrainState`) so that `jax.jit` sees a pure function of it:
the Flax module graph is split once (`nnx.split`) into a static `graphdef`, the float32
parameters (in the state) and the dropout RNG streams (`rngs`, reseeded every step).
Dropout keys are a function of (seed, step) alone, which makes resuming exact.
"""

from __future__ import annotations

import dataclasses
import functools
import typing

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxlm import losses, sharding
from jaxlm.bert import BertForPreTraining
from jaxlm.config import ModelConfig

BATCH_KEYS = ("input_ids", "token_type_ids", "attention_mask", "masked_positions",
              "masked_ids", "masked_weights", "next_sentence_label")


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


@dataclasses.dataclass(frozen=True)
class Model:
    """The static half of the split module plus what the steps need to rebuild it."""

    graphdef: typing.Any  # nnx.GraphDef of BertForPreTraining
    abstract_params: typing.Any  # nnx.State of ShapeDtypeStructs with logical_axes metadata


def abstract_model(model_cfg: ModelConfig) -> Model:
    """Shapes, logical axes and the graph of the model, without allocating any parameter."""
    module = nnx.eval_shape(lambda: BertForPreTraining(model_cfg, rngs=nnx.Rngs(0)))
    graphdef, abstract_params, _ = nnx.split(module, nnx.Param, ...)
    return Model(graphdef, abstract_params)


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
    rngs: typing.Any  # the dropout RNG streams (reseeded each step), replicated
    init: typing.Callable[[], TrainState]  # fresh params and optimizer state, sharded


def setup_state(model_cfg: ModelConfig, seed: int, tx: optax.GradientTransformation,
                mesh: Mesh) -> StateSetup:
    """Shapes and shardings of the train state, and a jitted initializer for it.

    `init()` runs `jax.jit(..., out_shardings=...)`, so every device computes only its own
    shards: the whole model is never materialized on one device. Nothing is allocated until
    `init()` is called, so a resumed run goes straight to the checkpoint.
    """
    model = abstract_model(model_cfg)

    def init():
        module = BertForPreTraining(model_cfg, rngs=nnx.Rngs(params=seed, dropout=seed))
        _, params, rngs = nnx.split(module, nnx.Param, ...)
        # Pure dicts: `nnx.merge` then builds fresh variables inside each trace.
        params, rngs = nnx.to_pure_dict(params), nnx.to_pure_dict(rngs)
        state = TrainState(params=params, opt_state=tx.init(params),
                           step=jnp.zeros((), jnp.int32),
                           rng=jax.random.key_data(jax.random.key(seed)),
                           skipped=jnp.zeros((), jnp.int32), bad_streak=jnp.zeros((), jnp.int32))
        return state, rngs

    abstract_state, abstract_rngs = jax.eval_shape(init)
    shardings = state_shardings(model, abstract_state, mesh)
    rngs_sh = jax.tree.map(lambda _: sharding.replicated(mesh), abstract_rngs)
    # XLA drops the unused parameter initializers from this one.
    rngs = jax.jit(lambda: init()[1], out_shardings=rngs_sh)()
    abstract = jax.tree.map(lambda a, sh: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sh),
                            abstract_state, shardings)
    init_state = jax.jit(lambda: init()[0], out_shardings=shardings)
    return StateSetup(model, shardings, abstract, rngs, init_state)


def forward_sums(module: BertForPreTraining, batch: dict) -> dict:
    """Summed (not averaged) losses and hit counts of one batch, float32.

    Sums let micro-batches add up to exactly the big batch's numbers.
    """
    mlm_logits_BPV, nsp_logits_B2 = module(batch["input_ids"], batch["token_type_ids"],
                                           batch["attention_mask"], batch["masked_positions"])
    w_BP = batch["masked_weights"].astype(jnp.float32)
    labels_BP, nsp_B = batch["masked_ids"], batch["next_sentence_label"]
    mlm_xent_BP = losses.cross_entropy(mlm_logits_BPV, labels_BP)
    nsp_xent_B = losses.cross_entropy(nsp_logits_B2[:, None], nsp_B[:, None])[:, 0]
    return {
        "mlm_loss": jnp.sum(mlm_xent_BP * w_BP),
        "nsp_loss": jnp.sum(nsp_xent_B),
        "mlm_correct": jnp.sum((jnp.argmax(mlm_logits_BPV, -1) == labels_BP) * w_BP),
        "nsp_correct": jnp.sum(jnp.argmax(nsp_logits_B2, -1) == nsp_B).astype(jnp.float32),
        "mlm_count": jnp.sum(w_BP),
        "nsp_count": jnp.asarray(nsp_B.shape[0], jnp.float32),
    }


def _merge(model: Model, params: dict, rngs) -> BertForPreTraining:
    return nnx.merge(model.graphdef, params, rngs)


def _micro_batches(batch: dict, n: int, mesh: Mesh) -> dict:
    """[B, ...] -> [n, B/n, ...] taking rows i, i+n, i+2n, ... into micro-batch i.

    Strided rows keep each micro-batch spread over all data-parallel devices, so the split
    moves no data between devices.
    """
    spec = NamedSharding(mesh, PartitionSpec(None, sharding.BATCH_AXES))

    def split(x):
        x = x.reshape(x.shape[0] // n, n, *x.shape[1:]).swapaxes(0, 1)
        return jax.lax.with_sharding_constraint(x, spec)

    return jax.tree.map(split, batch)


def make_train_step(model: Model, tx: optax.GradientTransformation,
                    schedule: optax.Schedule, mesh: Mesh, shardings: TrainState,
                    grad_accum_steps: int = 1):
    """Builds `step(state, rngs, batch) -> (state, metrics)`, jitted with the state donated.

    The loss is BERT's: masked-LM cross entropy averaged over the real predictions plus
    next-sentence cross entropy averaged over sequences (BERT 3.1). With accumulation the
    batch is cut into `grad_accum_steps` micro-batches whose gradients are summed, each
    normalized by the whole batch's counts, so the update equals one big batch's.
    """
    rep = sharding.replicated(mesh)

    def loss_fn(params, rngs, micro, key, mlm_total, nsp_total):
        module = _merge(model, params, rngs)
        nnx.reseed(module, dropout=key)
        module.train()
        sums = forward_sums(module, micro)
        loss = sums["mlm_loss"] / mlm_total + sums["nsp_loss"] / nsp_total
        return loss, sums

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def step(state: TrainState, rngs, batch: dict):
        key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
        mlm_total = jnp.maximum(jnp.sum(batch["masked_weights"].astype(jnp.float32)), 1.0)
        nsp_total = jnp.asarray(batch["next_sentence_label"].shape[0], jnp.float32)
        if grad_accum_steps == 1:
            (loss, sums), grads = grad_fn(state.params, rngs, batch, key, mlm_total, nsp_total)
        else:
            def body(carry, inputs):
                i, micro = inputs
                (loss, sums), grads = grad_fn(state.params, rngs, micro,
                                              jax.random.fold_in(key, i), mlm_total, nsp_total)
                return jax.tree.map(jnp.add, carry, (loss, sums, grads)), None

            zero_sums = {k: jnp.zeros((), jnp.float32) for k in
                         ("mlm_loss", "nsp_loss", "mlm_correct", "nsp_correct", "mlm_count",
                          "nsp_count")}
            init = (jnp.zeros((), jnp.float32), zero_sums,
                    jax.tree.map(jnp.zeros_like, state.params))
            micro = _micro_batches(batch, grad_accum_steps, mesh)
            (loss, sums, grads), _ = jax.lax.scan(
                body, init, (jnp.arange(grad_accum_steps), micro))

        grad_norm = optax.tree.norm(grads)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        keep = functools.partial(jax.tree.map, lambda new, old: jnp.where(finite, new, old))
        applied = state.step - state.skipped  # the schedule counts applied updates only
        new_state = TrainState(
            params=keep(params, state.params),
            opt_state=keep(opt_state, state.opt_state),
            step=state.step + 1,
            rng=state.rng,
            skipped=state.skipped + (~finite).astype(jnp.int32),
            bad_streak=jnp.where(finite, 0, state.bad_streak + 1),
        )
        metrics = {
            "loss": loss,
            "mlm_loss": sums["mlm_loss"] / mlm_total,
            "nsp_loss": sums["nsp_loss"] / nsp_total,
            "mlm_accuracy": sums["mlm_correct"] / mlm_total,
            "nsp_accuracy": sums["nsp_correct"] / nsp_total,
            "learning_rate": schedule(applied),
            "grad_norm": grad_norm,
            "skipped_steps": new_state.skipped,
            "bad_streak": new_state.bad_streak,
        }
        return new_state, metrics

    return jax.jit(step, in_shardings=(shardings, rep, sharding.batch_sharding(mesh)),
                   out_shardings=(shardings, rep), donate_argnums=0)


def make_eval_step(model: Model, mesh: Mesh, shardings: TrainState):
    """Builds `eval_step(params, rngs, batch) -> sums` (dropout off); add the sums over the
    held-out batches and finish with `eval_metrics`."""
    rep = sharding.replicated(mesh)

    def step(params, rngs, batch):
        module = _merge(model, params, rngs)
        module.eval()
        return forward_sums(module, batch)

    return jax.jit(step, in_shardings=(shardings.params, rep, sharding.batch_sharding(mesh)),
                   out_shardings=rep)


def eval_metrics(sums: dict) -> dict:
    """Held-out MLM/NSP accuracy and MLM perplexity from summed counts."""
    mlm = max(float(sums["mlm_count"]), 1.0)
    nsp = max(float(sums["nsp_count"]), 1.0)
    mlm_loss = float(sums["mlm_loss"]) / mlm
    return {
        "eval_loss": mlm_loss + float(sums["nsp_loss"]) / nsp,
        "eval_mlm_loss": mlm_loss,
        "eval_nsp_loss": float(sums["nsp_loss"]) / nsp,
        "eval_mlm_accuracy": float(sums["mlm_correct"]) / mlm,
        "eval_nsp_accuracy": float(sums["nsp_correct"]) / nsp,
        "eval_perplexity": float(jnp.exp(mlm_loss)),
    }
