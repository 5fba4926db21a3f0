"""Pruning a BERT: whole attention heads and MLP neurons by their importance, and single
weights by magnitude on a gradual schedule.

Structured (Michel et al. 2019, "Are Sixteen Heads Really Better than One?", 4.1): put a
gate xi_h on the output of head h; its importance is |dL/dxi_h| at xi_h = 1, summed over the
validation batches. The gate multiplies the head's slice of the attention output, which
only the head's rows of the output projection read, so the gradient needs no gate in the
model: dL/dxi_h = sum(W_o[h] * dL/dW_o[h]). MLP neuron j is gated the same way through row j
of the MLP's output projection. Scores are normalized per layer by their l2 norm and the
least important heads (neurons) of the whole model are removed, 10% of them at a time with
the scores recomputed in between; a layer keeps at least one of each. Removing means
slicing: the model that results has fewer heads and a smaller F in those layers
(`ModelConfig.layer_heads`, `layer_intermediate`), and computes what the full model computed
with those gates at zero.

Unstructured (Zhu & Gupta 2017, "To prune, or not to prune", 3): every weight matrix of the
encoder layers is pruned to the sparsity s_t = s_f (1 - (1 - (t - t_0) / (n dt))^3) by
zeroing its smallest-magnitude weights, every dt steps from step t_0 to t_0 + n dt, while
fine-tuning goes on; pruned weights stay zero. The masks are optimizer state
(`magnitude_pruning`, an optax transformation), so they are sharded like the parameters and
saved in every checkpoint.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import typing

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jaxlm.compression.quantize import load_arrays
from jaxlm.config import ModelConfig
from jaxlm.models.bert import HEAD_AXES, NEURON_AXES
from jaxlm.objectives.tasks import Task
from jaxlm.training.state import param_name

ROUND = 0.1  # the fraction of all heads (neurons) removed between two scorings


def gate_importance(kernel_XYD: jax.Array, grad_XYD: jax.Array) -> jax.Array:
    """|dL/dxi_x| for a gate xi_x on each input slice x of a projection, from its kernel
    and the kernel's gradient: |sum over the slice's rows of W * dL/dW|."""
    return jnp.abs(jnp.sum(kernel_XYD * grad_XYD, axis=tuple(range(1, kernel_XYD.ndim))))


@functools.partial(jax.jit, static_argnums=(0, 1))
def _gate_scores(graphdef, task: Task, params, rest, batch: dict):
    """`gate_importance` of every head and neuron of each layer on one batch."""

    def loss(params):
        sums = task.sums(nnx.merge(graphdef, params, rest), batch)
        counts = task.counts(batch)
        return task.total_loss({o: sums[f"{o}_loss"] / jnp.maximum(counts[o], 1.0)
                                for o in task.objectives})

    grads = jax.grad(loss)(params)
    layers = zip(params["bert"]["layers"].values(), grads["bert"]["layers"].values(),
                 strict=True)
    return [(gate_importance(w["attention"]["output"]["kernel"],
                             g["attention"]["output"]["kernel"]),
             gate_importance(w["mlp"]["output"]["kernel"], g["mlp"]["output"]["kernel"]))
            for w, g in layers]


def importance(module: nnx.Module, task: Task, batches: typing.Iterable[dict]
               ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The importance of every head [N_l] and MLP neuron [F_l] of each encoder layer l:
    `gate_importance` of the task's loss on each batch (mean over its examples), summed
    over the batches as Michel et al. do, dropout off."""
    module.eval()
    graphdef, params, rest = nnx.split(module, nnx.Param, ...)
    params, rest = nnx.to_pure_dict(params), nnx.to_pure_dict(rest)
    total = None
    for batch in batches:
        part = jax.device_get(_gate_scores(graphdef, task, params, rest, batch))
        total = part if total is None else jax.tree.map(np.add, total, part)
    return [h for h, _ in total], [f for _, f in total]


def normalized(scores: list[np.ndarray]) -> list[np.ndarray]:
    """Each layer's scores divided by their l2 norm (Michel et al. 4.1), so that layers with
    larger gradients do not keep all their heads."""
    return [s / max(np.linalg.norm(s), 1e-20) for s in scores]


def least_important(scores: list[np.ndarray], removed: list[set], count: int) -> list[set]:
    """`removed` grown to `count` (layer, index) pairs in all, adding the lowest scores first,
    never a layer's last one."""
    removed = [set(r) for r in removed]
    order = sorted((s, layer, j) for layer, layer_scores in enumerate(scores)
                   for j, s in enumerate(layer_scores) if j not in removed[layer])
    for _, layer, j in order:
        if sum(map(len, removed)) >= count:
            break
        if len(removed[layer]) < len(scores[layer]) - 1:
            removed[layer].add(j)
    return removed


def _zero_rows(module: nnx.Module, removed_heads: list[set], removed_neurons: list[set]):
    """Sets the gates of the removed heads and neurons to zero: their rows of the output
    projections."""
    for layer, heads, neurons in zip(module.bert.layers, removed_heads, removed_neurons,
                                     strict=True):
        for kernel, rows in ((layer.attention.output.kernel, heads),
                             (layer.mlp.output.kernel, neurons)):
            if rows:
                kernel.set_value(kernel.get_value().at[np.array(sorted(rows))].set(0.0))


def choose(module: nnx.Module, task: Task, batches: typing.Callable[[], typing.Iterable[dict]],
           heads: float, neurons: float) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The heads and neurons each layer keeps when the fractions `heads` and `neurons` of all
    of them are removed by importance (module docstring). `module` (a fine-tuned model) gets
    the removed ones' rows of its output projections zeroed.

    Returns:
      (kept head indices per layer, kept neuron indices per layer), ascending.
    """
    config = module.config
    L = config.num_layers
    sizes_h = [config.heads(i) for i in range(L)]
    sizes_f = [config.intermediate(i) for i in range(L)]
    goal_h, goal_f = round(heads * sum(sizes_h)), round(neurons * sum(sizes_f))
    removed_h, removed_f = [set() for _ in range(L)], [set() for _ in range(L)]
    rounds = max(1, math.ceil(max(heads, neurons) / ROUND - 1e-9))
    for r in range(1, rounds + 1):
        head_scores, neuron_scores = importance(module, task, batches())
        removed_h = least_important(normalized(head_scores), removed_h, goal_h * r // rounds)
        removed_f = least_important(normalized(neuron_scores), removed_f, goal_f * r // rounds)
        _zero_rows(module, removed_h, removed_f)
    keep = [[np.array(sorted(set(range(n)) - r)) for n, r in zip(sizes, removed, strict=True)]
            for sizes, removed in ((sizes_h, removed_h), (sizes_f, removed_f))]
    return keep[0], keep[1]


def slice_layers(config: ModelConfig, weights: dict[str, np.ndarray],
                 kept_heads: list[np.ndarray], kept_neurons: list[np.ndarray]
                 ) -> tuple[ModelConfig, dict[str, np.ndarray]]:
    """The smaller model holding only the kept heads and neurons of each encoder layer:
    (config with `layer_heads` and `layer_intermediate`, weights by parameter path)."""
    weights = dict(weights)
    for i in range(config.num_layers):
        for axes, kept in ((HEAD_AXES, kept_heads[i]), (NEURON_AXES, kept_neurons[i])):
            for name, axis in axes.items():
                key = f"bert.layers.{i}.{name}"
                weights[key] = np.take(weights[key], kept, axis=axis)
    config = dataclasses.replace(config, layer_heads=tuple(len(k) for k in kept_heads),
                                 layer_intermediate=tuple(len(k) for k in kept_neurons))
    return config, weights


def prune_model(task: Task, config: ModelConfig, weights: dict[str, np.ndarray],
                batches: typing.Callable[[], typing.Iterable[dict]], heads: float,
                neurons: float) -> tuple[ModelConfig, dict[str, np.ndarray]]:
    """A model fine-tuned for `task` (its config and weights by parameter path) without the
    fractions `heads` and `neurons` of its heads and MLP neurons that matter least to its
    loss on `batches()` (`choose`, `slice_layers`)."""
    module = task.build(config, nnx.Rngs(0))
    load_arrays(module, weights, "the model to prune")
    kept_heads, kept_neurons = choose(module, task, batches, heads, neurons)
    return slice_layers(config, weights, kept_heads, kept_neurons)


def sparsity_at(step: jax.Array, final: float, begin: int, end: int) -> jax.Array:
    """Zhu & Gupta's eq. 1 with s_i = 0: the sparsity due at `step`, rising from 0 at `begin`
    to `final` at `end` and flat after, fast at first while the network can recover."""
    progress = jnp.clip((step - begin) / max(end - begin, 1), 0.0, 1.0)
    return final * (1.0 - (1.0 - progress) ** 3)


def magnitude_mask(w: jax.Array, sparsity: jax.Array) -> jax.Array:
    """bool, w's shape: False for the floor(sparsity * size) smallest |w| (ties broken by
    position, so already-zero weights go first)."""
    order = jnp.argsort(jnp.abs(w).ravel(), stable=True)
    rank = jnp.zeros(w.size, jnp.int32).at[order].set(jnp.arange(w.size, dtype=jnp.int32))
    return (rank >= jnp.floor(sparsity * w.size)).reshape(w.shape)


def prunable(path) -> bool:
    """The weight matrices of the encoder layers (attention projections and MLP); embeddings,
    layer norms, biases, pooler and head are kept whole, as Zhu & Gupta and Sanh et al. 2020
    keep them."""
    names = param_name(path).split(".")
    return "layers" in names and names[-1] == "kernel"


class PruningState(typing.NamedTuple):
    masks: dict  # bool, like the parameters: False where a weight is pruned
    count: jax.Array  # int32 []: updates seen


def magnitude_pruning(final: float, begin: int, end: int, every: int
                      ) -> optax.GradientTransformation:
    """An optax transformation, chained after the optimizer, that keeps pruned weights at
    zero: at steps begin, begin + every, ..., end the masks of the `prunable` matrices are
    recomputed from the updated weights' magnitudes at `sparsity_at` (never un-pruning a
    weight), and every update sends a masked weight to exactly 0."""

    def init(params):
        return PruningState(jax.tree.map(lambda p: jnp.ones(p.shape, bool), params),
                            jnp.zeros((), jnp.int32))

    def update(updates, state, params):
        t = state.count
        due = (t >= begin) & (t <= end) & (((t - begin) % every == 0) | (t == end))
        sparsity = sparsity_at(t, final, begin, end)

        def remask(masks):
            return jax.tree_util.tree_map_with_path(
                lambda path, m, p, u: m & magnitude_mask(p + u, sparsity) if prunable(path)
                else m, masks, params, updates)

        masks = jax.lax.cond(due, remask, lambda masks: masks, state.masks)
        updates = jax.tree.map(lambda m, p, u: jnp.where(m, u, -p), masks, params, updates)
        return updates, PruningState(masks, t + 1)

    return optax.GradientTransformation(init, update)


def sparsity_report(params: dict) -> dict[str, float]:
    """The fraction of zeros in each `prunable` matrix, by parameter path, and over all of
    them ("encoder")."""
    report, zeros, size = {}, 0, 0
    for path, w in jax.tree_util.tree_flatten_with_path(params)[0]:
        if prunable(path):
            z = int(np.sum(np.asarray(w) == 0))
            report[param_name(path)] = z / w.size
            zeros, size = zeros + z, size + w.size
    report["encoder"] = zeros / max(size, 1)
    return report
