"""Knowledge distillation (Hinton et al. 2015, "Distilling the Knowledge in a Neural
Network"), in fine-tuning and in BERT pretraining, with the student initialised from the
teacher's layers as in DistilBERT (Sanh et al. 2019, 3).

A teacher's output distributions, softened by a temperature T, become soft targets for a
smaller student trained on the same data:

    loss = (1 - alpha) CE(student, labels)
           + alpha T^2 KL(softmax(teacher / T) || softmax(student / T))

Fine-tuning distills the head's outputs (class, tags, answer span) of a fine-tuned teacher;
pretraining distills a pretrained BERT's masked-LM distributions at the masked positions
(DistilBERT's soft-target loss beside the hard MLM loss; next-sentence prediction keeps its
labels). The teacher rides inside the student's module as a frozen submodule `teacher`: its
logits are computed in the same jitted step, sharded by the same logical axes, and never get
a gradient, while the student's own parameters keep the names of a plain model, so a
distilled run loads, serves and exports as any other.

Layer transfer adds, for each student layer and the teacher layer mapped to it, the MSE
between their outputs (TinyBERT; through a learned projection `distill_projection` when the
widths differ, trained with the student and left out when it is loaded for use) and the KL
between their attention distributions (MiniLM).
"""

from __future__ import annotations

import dataclasses
import functools
import typing
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from tokenizers import Tokenizer

from jaxlm.config import ConfigError, DistillOptions, ModelConfig
from jaxlm.data import load_tokenizer
from jaxlm.hf.bert import merged_params
from jaxlm.nn.attention import padding_mask
from jaxlm.nn.layers import Linear
from jaxlm.objectives import losses
from jaxlm.objectives.registry import finetuning_task, pretraining_task
from jaxlm.objectives.tasks import HEAD_LOSSES, Task, bert_inputs, encoder_inputs
from jaxlm.training.integrity import weights_fingerprint
from jaxlm.training.state import Fixed, StateSetup, load_weights

MASKED_LM = "masked_lm"  # the task of a pretrained BERT teacher (its masked-LM head)


@dataclasses.dataclass(frozen=True)
class Teacher:
    """A model to distill, as arrays: what the step rebuilds inside the student."""

    config: ModelConfig  # without LoRA: adapters are merged into `weights`
    task: str  # finetune.task it was trained for, or MASKED_LM for a pretrained BERT
    labels: tuple[str, ...]  # its classes or tags in output order; () for question answering
    weights: dict[str, np.ndarray]  # by parameter path ("bert.layers.0...", "classifier.kernel")
    tokenizer_path: Path
    source: Path  # the run or Hugging Face directory

    @classmethod
    def from_module(cls, module: nnx.Module, task: str, labels, tokenizer_path: Path,
                    source: Path) -> Teacher:
        return cls(dataclasses.replace(module.config, lora_rank=0), task, tuple(labels or ()),
                   merged_params(module), Path(tokenizer_path), Path(source))

    @functools.cached_property
    def fingerprint(self) -> str:
        return weights_fingerprint(self.weights)

    def record(self) -> dict:
        """What a distilled run saves of its teacher, to check it on a resume."""
        return {"path": str(self.source), "fingerprint": self.fingerprint}

    def frozen_weights(self) -> dict[str, np.ndarray]:
        """The weights by their path in the student's module (under `teacher.`)."""
        return {f"teacher.{name}": value for name, value in self.weights.items()}


def check_compatible(teacher: Teacher, task: str, labels: tuple[str, ...],
                     tokenizer: Tokenizer) -> None:
    """Raises ConfigError unless the teacher answers the student's task with the same labels
    in the same order, from the same token ids."""
    where = f"distill.teacher={teacher.source}"
    if teacher.task != task:
        raise ConfigError(f"{where} was fine-tuned for {teacher.task}, not finetune.task={task}")
    if teacher.labels and teacher.labels != tuple(labels):
        raise ConfigError(f"{where}: its labels {list(teacher.labels)[:8]} are not the training "
                          f"data's {list(labels)[:8]} (same names, same order)")
    if load_tokenizer(teacher.tokenizer_path).get_vocab() != tokenizer.get_vocab():
        raise ConfigError(f"{where}: its tokenizer ({teacher.tokenizer_path}) differs from the "
                          f"student's; both read the same token ids")


def teacher_layers(teacher_layers: int, student_layers: int) -> list[int]:
    """The teacher layer that initialises each student layer: evenly spaced from the first,
    every k-th for k = L_teacher / L_student (DistilBERT takes one layer in two)."""
    if not 0 < student_layers <= teacher_layers:
        raise ValueError(f"distill.student_layers={student_layers}: must be between 1 and the "
                         f"teacher's {teacher_layers} layers")
    return [i * teacher_layers // student_layers for i in range(student_layers)]


def student_from_teacher(teacher: Teacher, num_layers: int
                         ) -> tuple[ModelConfig, dict[str, np.ndarray]]:
    """A student with `num_layers` of the teacher's layers (`teacher_layers`), its
    embeddings, pooler and head: (config, weights by parameter path)."""
    picks = teacher_layers(teacher.config.num_layers, num_layers)
    weights = {}
    for name, value in teacher.weights.items():
        parts = name.split(".")
        if parts[:2] != ["bert", "layers"]:
            weights[name] = value
        elif int(parts[2]) in picks:
            parts[2] = str(picks.index(int(parts[2])))
            weights[".".join(parts)] = value
    config = teacher.config
    return dataclasses.replace(
        config, num_layers=num_layers,
        layer_heads=tuple(config.layer_heads[i] for i in picks) if config.layer_heads else (),
        layer_intermediate=(tuple(config.layer_intermediate[i] for i in picks)
                            if config.layer_intermediate else ())), weights


def place_teacher(setup: StateSetup, teacher: Teacher) -> Fixed:
    """`setup.fixed` with the teacher's weights in the student module's frozen `teacher`.

    Raises:
      ValueError: a teacher weight with no place in its model.
    """
    values = teacher.frozen_weights()
    frozen, used = load_weights(setup.fixed.frozen, setup.fixed_shardings.frozen, values)
    unplaced = sorted(set(values) - used)
    if unplaced:
        raise ValueError(f"{teacher.source}: teacher weights with no place in its "
                         f"{teacher.task} model: {', '.join(unplaced[:5])}")
    return dataclasses.replace(setup.fixed, frozen=frozen)


def student_only(trainable):
    """The nnx filter `trainable` without the teacher's parameters."""
    return nnx.All(trainable, nnx.Not(nnx.PathContains("teacher")))


def _soft_targets(objective: str, outputs, batch: dict) -> list[tuple[jax.Array, jax.Array]]:
    """The head's distributions that distillation matches, each as (logits_BXK, weights_BX):
    the word at each masked position (DistilBERT's soft-target MLM loss); the class; the tag
    at each word's first sub-word; the answer's start and its end."""
    if objective == "mlm":
        return [(outputs[0], batch["masked_weights"])]
    if objective == "cls":
        return [(outputs[:, None], batch["example_weights"][:, None])]
    if objective == "tag":
        return [(outputs, batch["tag_weights"])]
    w_B1 = batch["example_weights"][:, None]
    return [(outputs[0][:, None], w_B1), (outputs[1][:, None], w_B1)]


def distillation_sums(objective: str, student_outputs, teacher_outputs, batch: dict,
                      temperature: float) -> dict:
    """T^2 KL of the student's soft distributions from the teacher's, and the predictions
    where the student's top class is the teacher's, summed with the head's weights (QA
    averages its start and end terms)."""
    pairs = list(zip(_soft_targets(objective, student_outputs, batch),
                     _soft_targets(objective, teacher_outputs, batch), strict=True))
    loss, agree = 0.0, 0.0
    for (student_BXK, w_BX), (teacher_BXK, _) in pairs:
        w_BX = w_BX.astype(jnp.float32)
        loss += jnp.sum(losses.distillation_kl(student_BXK, teacher_BXK, temperature) * w_BX)
        agree += jnp.sum(losses.top1_correct(student_BXK, jnp.argmax(teacher_BXK, -1)) * w_BX)
    return {"kd_loss": loss / len(pairs), "kd_correct": agree / len(pairs)}


def transfer_layers(teacher_layers: int, student_layers: int) -> list[int]:
    """TinyBERT's uniform mapping (Jiao et al. 2020, 3.1): student layer i learns from teacher
    layer (i + 1) L_t / L_s - 1, so that the last learns from the last."""
    return [(i + 1) * teacher_layers // student_layers - 1 for i in range(student_layers)]


def captured(module: nnx.Module, *inputs) -> tuple[typing.Any, list[jax.Array]]:
    """The module's outputs and the hidden states of its encoder: the embeddings' output
    and each layer's, [L + 1] x [B, T, D] (every method's output captured by
    `nnx.capture`; XLA drops the ones nothing reads)."""
    outputs, states = nnx.capture(module, nnx.Intermediate,
                                  method_outputs=nnx.Intermediate)(*inputs)
    bert = nnx.to_pure_dict(states)["bert"]
    layers = bert["layers"]
    return outputs, [bert["embeddings"]["__call__"][0],
                     *(layers[i]["__call__"][0] for i in sorted(layers))]


def hidden_mse(student_BTE: jax.Array, teacher_BTE: jax.Array, w_BT: jax.Array) -> jax.Array:
    """TinyBERT's hidden-state loss (Jiao et al. 2020, 3.1): the squared error of each
    position, averaged over the width, summed with the positions' weights."""
    error_BT = jnp.mean(jnp.square(student_BTE.astype(jnp.float32)
                                   - teacher_BTE.astype(jnp.float32)), axis=-1)
    return jnp.sum(error_BT * w_BT)


def attention_kl(student_BNTS: jax.Array, teacher_BNTS: jax.Array, w_BT: jax.Array
                 ) -> jax.Array:
    """MiniLM's attention transfer (Wang et al. 2020, 3.1): KL(teacher || student) of each
    query's distribution over the keys, averaged over the heads, summed with the queries'
    weights. Masked keys hold probability 0 on both sides and add nothing."""
    log_s, log_t = (jnp.log(jnp.maximum(p, 1e-30)) for p in (student_BNTS, teacher_BNTS))
    kl_BNT = jnp.sum(teacher_BNTS * (log_t - log_s), axis=-1)
    return jnp.sum(jnp.mean(kl_BNT, axis=1) * w_BT)


def transfer_sums(module: nnx.Module, student_BTD: list[jax.Array],
                  teacher_BTD: list[jax.Array], batch: dict, layer_map: list[int],
                  terms: typing.Collection[str]) -> dict:
    """The layer-transfer losses `terms`, summed over the mapped layers, from both models'
    hidden states (`captured`): "hidden" between each student layer's output (projected to
    the teacher's width by `module.distill_projection` when it has one) and its teacher
    layer's, "attention" between their attention distributions (recomputed from the
    layers' inputs, without dropout)."""
    w_BT = batch["attention_mask"].astype(jnp.float32)
    mask = padding_mask(batch["attention_mask"])
    project = getattr(module, "distill_projection", None) or (lambda x: x)
    sums = dict.fromkeys((f"{term}_loss" for term in terms), 0.0)
    for i, j in enumerate(layer_map):
        if "hidden" in terms:
            sums["hidden_loss"] += hidden_mse(project(student_BTD[i + 1]), teacher_BTD[j + 1],
                                              w_BT)
        if "attention" in terms:
            student_BNTS = module.bert.layers[i].attention.probabilities(student_BTD[i], mask)
            teacher_BNTS = module.teacher.bert.layers[j].attention.probabilities(
                teacher_BTD[j], mask)
            sums["attention_loss"] += attention_kl(student_BNTS,
                                                   jax.lax.stop_gradient(teacher_BNTS), w_BT)
    return sums


def check_transfer(student: ModelConfig, teacher: ModelConfig, options: DistillOptions
                   ) -> list[int]:
    """The teacher layer of each student layer (`options.layer_map`, or `transfer_layers`).

    Raises:
      ConfigError: a map of the wrong length or out of range, or attention transfer between
        layers with different numbers of heads.
    """
    layer_map = list(options.layer_map) or transfer_layers(teacher.num_layers,
                                                           student.num_layers)
    if len(layer_map) != student.num_layers or not all(
            0 <= j < teacher.num_layers for j in layer_map):
        raise ConfigError(f"distill.layer_map={list(options.layer_map)}: needs one teacher "
                          f"layer (0 to {teacher.num_layers - 1}) for each of the student's "
                          f"{student.num_layers} layers")
    if options.attention_weight:
        for i, j in enumerate(layer_map):
            if student.heads(i) != teacher.heads(j):
                raise ConfigError(f"distill.attention_weight: student layer {i} has "
                                  f"{student.heads(i)} heads, its teacher layer {j} "
                                  f"{teacher.heads(j)}; attention transfer compares them "
                                  f"head by head")
    return layer_map


def distillation_task(head: Task, teacher: Teacher, options: DistillOptions,
                      student: ModelConfig) -> Task:
    """`head`'s task trained on its labels and the teacher's soft targets: objectives
    (head's..., "kd"), the first weighted 1 - alpha, "kd" alpha, the others (BERT's next
    sentence) 1; "kd_accuracy" is the agreement with the teacher. With layer transfer
    (`options.hidden_weight`, `attention_weight`) also "hidden" and "attention"
    (`transfer_sums`), weighted so. The teacher runs without dropout: its targets are its
    predictions.

    Raises:
      ConfigError: layer transfer that cannot map the student's layers (`check_transfer`).
    """
    objective = head.objectives[0]
    teacher_cfg = dataclasses.replace(teacher.config, hidden_dropout=0.0, attention_dropout=0.0)
    teacher_head = (pretraining_task("bert") if teacher.task == MASKED_LM
                    else finetuning_task(teacher.task, len(teacher.labels), 0.0))
    inputs = bert_inputs if objective == "mlm" else encoder_inputs
    transfer = {name: weight for name, weight in (("hidden", options.hidden_weight),
                                                  ("attention", options.attention_weight))
                if weight}
    layer_map = check_transfer(student, teacher_cfg, options) if transfer else []

    def build(cfg: ModelConfig, rngs: nnx.Rngs) -> nnx.Module:
        student = head.build(cfg, rngs)
        student.teacher = teacher_head.build(teacher_cfg, rngs)
        if "hidden" in transfer and cfg.hidden_size != teacher_cfg.hidden_size:
            # Trained with the student, left out when the student is loaded for use.
            student.distill_projection = Linear(
                "BTD,DE->BTE", (cfg.hidden_size, teacher_cfg.hidden_size), ("embed", None),
                init_std=cfg.initializer_range, dtype=jnp.dtype(cfg.dtype),
                param_dtype=jnp.dtype(cfg.param_dtype), rngs=rngs)
        return student

    def sums(module: nnx.Module, batch: dict) -> dict:
        student_outputs, student_BTD = captured(module, *inputs(batch))
        teacher_outputs, teacher_BTD = jax.lax.stop_gradient(
            captured(module.teacher, *inputs(batch)))
        out = {**HEAD_LOSSES[objective](student_outputs, batch),
               **distillation_sums(objective, student_outputs, teacher_outputs, batch,
                                   options.temperature)}
        if transfer:
            out.update(transfer_sums(module, student_BTD, teacher_BTD, batch, layer_map,
                                     transfer))
        return out

    def counts(batch: dict) -> dict:
        head_counts = head.counts(batch)
        tokens = jnp.sum(batch["attention_mask"].astype(jnp.float32))
        return {**head_counts, "kd": head_counts[objective], **dict.fromkeys(transfer, tokens)}

    def flops(cfg: ModelConfig, shapes: dict) -> float:
        # The teacher's forward pass is a third of its training FLOPs (no backward).
        return head.flops(cfg, shapes) + teacher_head.flops(teacher_cfg, shapes) / 3

    alpha = options.alpha
    weights = (1.0 - alpha, *(1.0 for _ in head.objectives[1:]), alpha, *transfer.values())
    return dataclasses.replace(head, objectives=(*head.objectives, "kd", *transfer),
                               build=build, counts=counts, sums=sums, flops=flops,
                               loss_weights=weights, unscored=tuple(transfer))
