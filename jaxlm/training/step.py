"""The jitted train and eval steps, for every model kind (pure functions of `TrainState`).

The loss is the task's (`objectives.tasks.Task`); parameters are updated by AdamW unless the
loss or the gradient is not finite, in which case the step is counted and skipped.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxlm.training import sharding
from jaxlm.training.state import Fixed, StateSetup, TrainState, merge


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


def make_train_step(setup: StateSetup, tx: optax.GradientTransformation,
                    schedule: optax.Schedule, mesh: Mesh, grad_accum_steps: int = 1):
    """Builds `step(state, fixed, batch) -> (state, metrics)`, jitted with the state donated.

    Gradients are taken with respect to `state.params` only: frozen parameters in `fixed`
    get none computed.

    The loss is the task's: each objective's summed loss over the whole batch's count of
    its predictions, added up (for BERT: masked-LM cross entropy per real prediction plus
    next-sentence cross entropy per sequence, BERT 3.1). With accumulation the batch is cut
    into `grad_accum_steps` micro-batches whose gradients are summed, each normalized by the
    whole batch's counts, so the update equals one big batch's.
    """
    rep = sharding.replicated(mesh)
    model, task = setup.model, setup.model.task

    def loss_fn(params, fixed, micro, key, totals):
        module = merge(model, params, fixed)
        nnx.reseed(module, dropout=key)
        module.train()
        with sharding.activation_layout(mesh):
            sums = task.sums(module, micro)
        loss = task.total_loss({o: sums[f"{o}_loss"] / totals[o] for o in task.objectives})
        return loss, sums

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def step(state: TrainState, fixed: Fixed, batch: dict):
        key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
        totals = {o: jnp.maximum(n, 1.0) for o, n in task.counts(batch).items()}
        if grad_accum_steps == 1:
            (loss, sums), grads = grad_fn(state.params, fixed, batch, key, totals)
        else:
            def body(carry, inputs):
                i, micro = inputs
                (loss, sums), grads = grad_fn(state.params, fixed, micro,
                                              jax.random.fold_in(key, i), totals)
                return jax.tree.map(jnp.add, carry, (loss, sums, grads)), None

            micro = _micro_batches(batch, grad_accum_steps, mesh)
            first = jax.tree.map(lambda x: x[0], micro)
            zero_sums = jax.tree.map(
                lambda a: jnp.zeros(a.shape, a.dtype),
                jax.eval_shape(lambda: grad_fn(state.params, fixed, first, key, totals)[0][1]))
            init = (jnp.zeros((), jnp.float32), zero_sums,
                    jax.tree.map(jnp.zeros_like, state.params))
            (loss, sums, grads), _ = jax.lax.scan(
                body, init, (jnp.arange(grad_accum_steps), micro))

        grad_norm = optax.tree.norm(grads)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)

        def update(_):
            updates, opt_state = tx.update(grads, state.opt_state, state.params)
            return optax.apply_updates(state.params, updates), opt_state

        # A branch, not a select over every parameter: a skipped step costs nothing.
        params, opt_state = jax.lax.cond(finite, update,
                                         lambda _: (state.params, state.opt_state), None)
        applied = state.step - state.skipped  # the schedule counts applied updates only
        new_state = TrainState(
            params=params,
            opt_state=opt_state,
            step=state.step + 1,
            rng=state.rng,
            skipped=state.skipped + (~finite).astype(jnp.int32),
            bad_streak=jnp.where(finite, 0, state.bad_streak + 1),
        )
        metrics = {
            "loss": loss,
            **{f"{o}_loss": sums[f"{o}_loss"] / totals[o] for o in task.objectives},
            **{f"{o}_accuracy": sums[f"{o}_correct"] / totals[o] for o in task.scored},
            "learning_rate": schedule(applied),
            "grad_norm": grad_norm,
            "skipped_steps": new_state.skipped,
            "bad_streak": new_state.bad_streak,
        }
        return new_state, metrics

    return jax.jit(step, in_shardings=(setup.shardings, setup.fixed_shardings,
                                       sharding.batch_sharding(mesh)),
                   out_shardings=(setup.shardings, rep), donate_argnums=0)


def make_eval_step(setup: StateSetup, mesh: Mesh, outputs: bool = False):
    """Builds `eval_step(params, fixed, batch) -> sums` (dropout off), with each objective's
    `<obj>_count`; add the sums over the held-out batches and finish with
    `tasks.eval_metrics`.

    With `outputs` (fine-tuning heads) it returns `(sums, outputs)`: also the module's outputs
    for every row (logits; start and end logits), for the scores that need each prediction
    (entity F1, answer spans). The module runs once: XLA merges the two identical calls.
    """
    rep = sharding.replicated(mesh)
    task = setup.model.task

    def step(params, fixed, batch):
        module = merge(setup.model, params, fixed)
        module.eval()
        counts = {f"{o}_count": n for o, n in task.counts(batch).items()}
        with sharding.activation_layout(mesh):
            sums = {**task.sums(module, batch), **counts}
            if not outputs:
                return sums
            return sums, module(batch["input_ids"], batch["token_type_ids"],
                                batch["attention_mask"])

    return jax.jit(step, in_shardings=(setup.shardings.params, setup.fixed_shardings,
                                       sharding.batch_sharding(mesh)),
                   out_shardings=rep)
